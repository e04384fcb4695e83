//! The one place that reads clocks. Two kinds:
//!
//! - The process's **monotonic clock** ([`Clock`]): time since the process started, as a
//!   `Duration`, counting while the machine is suspended (Linux `CLOCK_BOOTTIME`). Every timer
//!   and lease of the pure cores (the leader, the agent's core, the probe observer) is
//!   measured on it, and those cores are handed `now` instead of reading it, so they stay
//!   deterministic under test. [`Stopwatch`] times operations for metrics and logs.
//! - **Wall-clock time** ([`unix_ms`], [`rfc3339`]), for dating records and messages only: no
//!   decision ever compares two machines' wall clocks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A process's monotonic clock, zero when it was made (at process start, by the node or agent).
///
/// It reads `CLOCK_BOOTTIME`, which keeps counting while the machine is suspended, where
/// `Instant` (`CLOCK_MONOTONIC`) stops: an agent on a VM suspended for a minute must find its
/// one-second lease long gone when it resumes, not still valid (docs/safety.md, "What it
/// assumes").
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Duration,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { origin: boottime() }
    }

    /// Time since the clock started: the `now` every pure core is given.
    pub fn now(&self) -> Duration {
        boottime().saturating_sub(self.origin)
    }

    /// The machine's boot-time reading at this clock's `now`: one clock for every process on
    /// the machine, for records that tests compare across processes.
    pub fn since_boot(&self, now: Duration) -> Duration {
        self.origin + now
    }
}

/// Time since the machine booted, suspended time included.
fn boottime() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec into the one we own; CLOCK_BOOTTIME exists
    // on every Linux since 2.6.39.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed: {}", std::io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times one operation, for metrics and logs.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(Instant);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }

    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `2026-11-21T03:04:05.678Z`.
pub fn rfc3339(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    /// The clock agrees with `/proc/uptime` (the kernel's boot time, which counts suspended
    /// time) and only moves forward. On a machine never suspended, `CLOCK_MONOTONIC` agrees
    /// too: this cannot tell the two apart, so the choice of clock rests on `boottime` itself.
    #[test]
    fn the_clock_counts_time_since_boot_suspend_included() {
        let uptime: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split(' ').next().unwrap().parse().unwrap();
        let boot = super::boottime().as_secs_f64();
        assert!((boot - uptime).abs() < 1.0, "CLOCK_BOOTTIME {boot} s, /proc/uptime {uptime} s");
        let clock = super::Clock::start();
        let (a, b) = (clock.now(), clock.now());
        assert!(b >= a && a < std::time::Duration::from_secs(1));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_795_230_245_678), "2026-11-21T03:04:05.678Z");
    }
}
