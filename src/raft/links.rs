//! How this node's Raft requests to each peer fare: the last outcome per peer, and while a peer
//! fails, since when and why (a certificate refused, a connection refused, a timeout: the cause
//! `tls::failure` names, or the peer's refusal in its own words). Status, metrics and the
//! dashboard show it, so a member that looks present in the member list but cannot be
//! reached says so.
//!
//! It is also the one log of a failing link (`telemetry::Lasting`): a warning when a failure
//! starts or its cause changes, then once a minute while it lasts, and a line when the peer
//! answers again.
//! openraft's own per-request warnings (several a second, in Rust's debug form) are held back
//! in `telemetry`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::clock::Clock;
use crate::telemetry::Lasting;

/// How a peer tells a node it was removed from the cluster (`/raft/*` answers 410 Gone with it).
pub const REMOVED: &str = "this cluster removed node";

/// A link not used for this long is left out: followers talk to peers only in elections, and
/// what they learned then is history.
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// One peer's link, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkView {
    /// The last request to the peer was answered.
    pub up: bool,
    /// Since the last request to it, answered or not.
    pub used_ms_ago: u64,
    /// While it fails: since its first failure in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_for_ms: Option<u64>,
    /// While it fails: why, in words naming what to fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Link {
    used: Duration,
    failing: Lasting,
    /// The log format its last answer advertised.
    format: Option<u32>,
}

/// What a request's outcome asks to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Log {
    Failing { cause: String, for_s: u64 },
    Answers { after_s: u64 },
}

impl Link {
    /// Records an outcome at `now`: `Err(cause)` for a failure.
    fn record(&mut self, now: Duration, outcome: Result<(), String>) -> Option<Log> {
        self.used = now;
        match outcome {
            Ok(()) => self.failing.ended(now).map(|after_s| Log::Answers { after_s }),
            Err(cause) => self.failing.holds(now, &cause).map(|due| Log::Failing { cause, for_s: due.for_s }),
        }
    }

    fn view(&self, now: Duration) -> LinkView {
        let ms = |d: Duration| d.as_millis() as u64;
        let failing = self.failing.holding();
        LinkView {
            up: failing.is_none(),
            used_ms_ago: ms(now.saturating_sub(self.used)),
            failing_for_ms: failing.map(|(since, _)| ms(now.saturating_sub(since))),
            error: failing.map(|(_, cause)| cause.to_string()),
        }
    }
}

/// Every peer's link from this node.
pub struct Links {
    clock: Clock,
    peers: Mutex<BTreeMap<NodeId, Link>>,
}

impl Links {
    pub fn new(clock: Clock) -> Links {
        Links { clock, peers: Mutex::new(BTreeMap::new()) }
    }

    /// A request to `peer` at `addr` was answered (`Ok`) or failed, and why.
    pub fn record(&self, peer: NodeId, addr: &str, outcome: Result<(), String>) {
        let now = self.clock.now();
        let log = self.peers.lock().expect("links lock poisoned").entry(peer).or_default().record(now, outcome);
        match log {
            Some(Log::Failing { cause, for_s }) => {
                tracing::warn!(%peer, %addr, for_s, error = %cause, "cannot reach peer")
            }
            Some(Log::Answers { after_s }) => tracing::info!(%peer, %addr, after_s, "peer answers again"),
            None => {}
        }
    }

    /// `peer` answered, advertising log format `format` (1 when it said none).
    pub fn format(&self, peer: NodeId, format: u32) {
        self.peers.lock().expect("links lock poisoned").entry(peer).or_default().format = Some(format);
    }

    /// The log format each peer that answered advertised (`leader::Contact::formats`).
    pub fn formats(&self) -> BTreeMap<NodeId, u32> {
        let peers = self.peers.lock().expect("links lock poisoned");
        peers.iter().filter_map(|(id, l)| Some((*id, l.format?))).collect()
    }

    /// A peer answered that this cluster removed this node.
    pub fn told_removed(&self) -> bool {
        let peers = self.peers.lock().expect("links lock poisoned");
        peers.values().any(|l| l.failing.holding().is_some_and(|(_, cause)| cause.contains(REMOVED)))
    }

    /// The links used lately, by peer.
    pub fn view(&self) -> BTreeMap<NodeId, LinkView> {
        let now = self.clock.now();
        let peers = self.peers.lock().expect("links lock poisoned");
        peers
            .iter()
            .filter(|(_, l)| now.saturating_sub(l.used) <= FORGET_AFTER)
            .map(|(id, l)| (*id, l.view(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_failure_is_logged_when_it_starts_changes_and_once_a_minute_and_its_end_once() {
        let mut link = Link::default();
        assert_eq!(link.record(s(0), Ok(())), None, "an answer after answers says nothing");
        let tls = || Err("TLS handshake failed".to_string());
        assert_eq!(link.record(s(1), tls()), Some(Log::Failing { cause: "TLS handshake failed".into(), for_s: 0 }));
        for t in 2..61 {
            assert_eq!(link.record(s(t), tls()), None, "repeated at {t} s");
        }
        assert_eq!(link.record(s(61), tls()), Some(Log::Failing { cause: "TLS handshake failed".into(), for_s: 60 }));
        let refused = Err("connection refused".to_string());
        assert_eq!(link.record(s(62), refused), Some(Log::Failing { cause: "connection refused".into(), for_s: 61 }));
        let view = link.view(s(63));
        assert_eq!(
            (view.up, view.failing_for_ms, view.error.as_deref()),
            (false, Some(62_000), Some("connection refused"))
        );
        assert_eq!(link.record(s(64), Ok(())), Some(Log::Answers { after_s: 63 }));
        assert_eq!(link.view(s(65)), LinkView { up: true, used_ms_ago: 1000, failing_for_ms: None, error: None });
    }
}
