//! The one place that reads clocks. Two kinds:
//!
//! - The process's **monotonic clock** ([`Clock`]): time since the process started, as a
//!   `Duration`. Every timer and lease of the pure cores (the leader, the agent's core, the
//!   probe observer) is measured on it, and those cores are handed `now` instead of reading
//!   it, so they stay deterministic under test. [`Stopwatch`] times operations for metrics.
//! - **Wall-clock time** ([`unix_ms`], [`rfc3339`]), for dating records and messages only: no
//!   decision ever compares two machines' wall clocks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A process's monotonic clock, zero when it was made (at process start, by the node or agent).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock { origin: Instant::now() }
    }

    /// Time since the clock started: the `now` every pure core is given.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// This clock's reading at `instant` (zero for an instant before the clock started).
    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.origin)
    }
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
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_795_230_245_678), "2026-11-21T03:04:05.678Z");
    }
}
