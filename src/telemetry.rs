//! Logging set-up: human-readable lines on a terminal, or one JSON object per line.
//!
//! Levels: `error` needs a human now (storage failure, cannot serve); `warn` is degraded but
//! working (no leader, peer unreachable, development-only settings); `info` is a state change
//! worth keeping (leader elected, member added, topology registered, start and stop);
//! `debug` is per-request detail; `trace` is everything.
//!
//! A condition that repeats (a peer failing, a request refused) is logged by [`Lasting`] and
//! [`Causes`]: when it starts or its cause changes, then once a minute while it lasts, so a
//! client retrying several times a second never floods the log.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// How often a condition that lasts is logged again.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// One condition that lasts, on the caller's monotonic clock (`now` from its `clock::Clock`):
/// says when to log it. Logged when it starts or its cause changes, then once every
/// [`LOG_EVERY`] while it lasts, and once when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lasting {
    holding: Option<Holding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    since: Duration,
    cause: String,
    logged: Duration,
    held_back: u64,
}

/// A line to log about a condition that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Seconds since the condition began (with any cause).
    pub for_s: u64,
    /// Occurrences not logged since the last line.
    pub held_back: u64,
}

impl Lasting {
    /// The condition holds at `now`, for `cause`: `Some` when that is to be logged.
    pub fn holds(&mut self, now: Duration, cause: &str) -> Option<Due> {
        match &mut self.holding {
            Some(h) if h.cause == cause && now.saturating_sub(h.logged) < LOG_EVERY => {
                h.held_back += 1;
                None
            }
            Some(h) => {
                let due = Due { for_s: now.saturating_sub(h.since).as_secs(), held_back: h.held_back };
                (h.cause, h.logged, h.held_back) = (cause.to_string(), now, 0);
                Some(due)
            }
            None => {
                self.holding = Some(Holding { since: now, cause: cause.to_string(), logged: now, held_back: 0 });
                Some(Due { for_s: 0, held_back: 0 })
            }
        }
    }

    /// The condition no longer holds at `now`: `Some(seconds it lasted)` if it held.
    pub fn ended(&mut self, now: Duration) -> Option<u64> {
        self.holding.take().map(|h| now.saturating_sub(h.since).as_secs())
    }

    /// While it holds: since when, and its latest cause.
    pub fn holding(&self) -> Option<(Duration, &str)> {
        self.holding.as_ref().map(|h| (h.since, h.cause.as_str()))
    }
}

/// Conditions that come and go unseen (a request refused: nothing says when the client stops),
/// each logged by its own [`Lasting`] under its cause: once, then once a minute while it recurs.
/// A cause not seen for [`LOG_EVERY`] is forgotten; at most [`Causes::MAX`] are remembered, and
/// while that many recur within a minute a new one is not logged (`due` says `None`), so a
/// client sending endless distinct causes cannot grow memory or the log without bound.
#[derive(Debug, Default)]
pub struct Causes {
    causes: BTreeMap<String, (Lasting, Duration)>,
}

impl Causes {
    pub const MAX: usize = 64;

    /// `cause` occurred at `now`: `Some` when it is to be logged.
    pub fn due(&mut self, now: Duration, cause: &str) -> Option<Due> {
        if !self.causes.contains_key(cause) && self.causes.len() >= Self::MAX {
            self.causes.retain(|_, (_, seen)| now.saturating_sub(*seen) < LOG_EVERY);
            if self.causes.len() >= Self::MAX {
                return None;
            }
        }
        let (lasting, seen) = self.causes.entry(cause.to_string()).or_default();
        if now.saturating_sub(*seen) >= LOG_EVERY {
            // Gone for a minute: it recurs as new.
            lasting.ended(now);
        }
        *seen = now;
        lasting.holds(now, "")
    }
}

/// A value as one line of JSON, for a log field: what operators and log pipelines read, where
/// Rust's debug form would print type names.
pub fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("(not serializable: {e})"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `level` is a level (`info`) or a full filter (`info,witness=debug`). openraft and the log
/// store (`raft_log`, `chunked_wal`) log their internals at info, so they are held at warn
/// unless the filter names openraft (or asks for less). openraft's warnings about each failed
/// request to a peer (several a second, in Rust's debug form) are held back to errors, since
/// `raft::links` logs a failing peer once, with its cause, and again once a minute.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let quieter_than_warn = matches!(level, "error" | "off");
    let directives = if level.contains("openraft") || quieter_than_warn {
        level.to_string()
    } else {
        format!("{level},openraft=warn,openraft::core::heartbeat=error,openraft::replication=error,raft_log=warn,chunked_wal=warn")
    };
    let filter = EnvFilter::try_new(&directives).map_err(|e| format!("--log-level {level:?}: {e}"))?;
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    result.map_err(|e| e.to_string())?;
    log_panics();
    Ok(())
}

/// Panics go to the log like everything else, at error, as one line with the thread and the
/// message. Where in the source it happened (a build machine's path) is logged only at debug:
/// operators act on the message, a developer can ask for the place.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        // Debug formatting: one line, whatever the message holds.
        tracing::error!(thread, panic = ?message, "panicked");
        if let Some(at) = info.location() {
            tracing::debug!(thread, %at, "where it panicked");
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_lasting_condition_is_logged_when_it_starts_changes_and_once_a_minute_and_its_end_once() {
        let mut l = Lasting::default();
        assert_eq!(l.ended(s(0)), None, "nothing held: nothing ends");
        assert_eq!(l.holds(s(1), "tls"), Some(Due { for_s: 0, held_back: 0 }));
        for t in 2..61 {
            assert_eq!(l.holds(s(t), "tls"), None, "repeated at {t} s");
        }
        assert_eq!(l.holds(s(61), "tls"), Some(Due { for_s: 60, held_back: 59 }));
        assert_eq!(l.holds(s(62), "refused"), Some(Due { for_s: 61, held_back: 0 }), "a new cause at once");
        assert_eq!(l.holding(), Some((s(1), "refused")));
        assert_eq!(l.ended(s(64)), Some(63));
        assert_eq!(l.holding(), None);
        assert_eq!(l.holds(s(65), "tls"), Some(Due { for_s: 0, held_back: 0 }), "it starts anew");
    }

    /// Runs this test's body in a child process (this test binary again, with `CHILD` set) and
    /// returns what it wrote to stderr: a panic hook is the process's, not one test's.
    fn in_child(test: &str) -> String {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    const CHILD: &str = "WITNESS_TELEMETRY_TEST_CHILD";

    #[test]
    fn a_panic_is_logged_at_error_without_the_source_path() {
        if std::env::var_os(CHILD).is_some() {
            init(LogFormat::Text, "info").unwrap();
            let _ =
                std::thread::Builder::new().name("worker".into()).spawn(|| panic!("lost the\nplot")).unwrap().join();
            return;
        }
        let log = in_child("telemetry::tests::a_panic_is_logged_at_error_without_the_source_path");
        let line = log.lines().find(|l| l.contains("panicked")).unwrap_or_else(|| panic!("{log}"));
        assert!(line.contains(r#"ERROR panicked thread="worker" panic="lost the\nplot""#), "{log}");
        assert!(!log.contains("telemetry.rs") && !log.contains("src/"), "no source path at info: {log}");
    }

    #[test]
    fn causes_are_each_logged_once_then_once_a_minute_and_memory_stays_bounded() {
        let mut c = Causes::default();
        let tenth = |n: u64| Duration::from_millis(100 * n);
        let logged = (0..600).filter(|n| c.due(tenth(*n), "a").is_some()).count();
        assert_eq!(logged, 1, "four a second for a minute: one line");
        assert_eq!(c.due(tenth(600), "a"), Some(Due { for_s: 60, held_back: 599 }));
        assert_eq!(c.due(tenth(601), "b"), Some(Due { for_s: 0, held_back: 0 }), "another cause: its own line");
        assert_eq!(c.due(s(200), "a"), Some(Due { for_s: 0, held_back: 0 }), "gone a minute: new again");

        let mut c = Causes::default();
        for i in 0..Causes::MAX {
            assert!(c.due(s(0), &i.to_string()).is_some());
        }
        assert_eq!(c.due(s(1), "one more"), None, "full of causes recurring within the minute");
        assert!(c.due(s(61), "one more").is_some(), "the old ones forgotten after a minute");
        assert!(c.causes.len() <= Causes::MAX);
    }
}
