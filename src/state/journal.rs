//! The decision journal: every decision, near-decision, verdict change and operator action as
//! a numbered event. It is part of the replicated state, so every node serves the same journal
//! and a new leader continues the numbering. The newest [`RETAINED`] events are kept.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, SiteId};

pub const RETAINED: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub seq: u64,
    /// The proposing leader's wall clock (Unix ms). For people reading the journal only:
    /// no decision ever compares it with another clock.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<SiteId, String>,
    /// Who asked for the action recorded (`token:NAME` or `cert:NAME`); absent for the
    /// witness's own decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What an event says, before the journal numbers and dates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub group: Option<GroupId>,
    pub kind: String,
    pub message: String,
    pub evidence: BTreeMap<SiteId, String>,
}

impl Note {
    pub fn new(group: Option<GroupId>, kind: &str, message: String) -> Note {
        Note { group, kind: kind.to_string(), message, evidence: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Journal {
    last_seq: u64,
    events: VecDeque<Event>,
}

impl Journal {
    pub fn record(&mut self, at_ms: u64, note: Note) {
        self.record_by(at_ms, note, None);
    }

    pub fn record_by(&mut self, at_ms: u64, note: Note, by: Option<String>) {
        self.last_seq += 1;
        let Note { group, kind, message, evidence } = note;
        self.events.push_back(Event { seq: self.last_seq, at_ms, group, kind, message, evidence, by });
        while self.events.len() > RETAINED {
            self.events.pop_front();
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Events numbered above `seq`, oldest first, at most `limit`.
    pub fn since(&self, seq: u64, limit: usize) -> Vec<Event> {
        let start = self.events.partition_point(|e| e.seq <= seq);
        self.events.iter().skip(start).take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_events_keeps_the_newest_and_pages_by_sequence() {
        let mut j = Journal::default();
        for i in 0..(RETAINED + 5) {
            j.record(i as u64, Note::new(None, "test", format!("event {i}")));
        }
        assert_eq!(j.last_seq(), RETAINED as u64 + 5);
        assert_eq!(j.since(0, 1)[0].seq, 6, "the oldest five were dropped");
        let page = j.since(100, 3);
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![101, 102, 103]);
        assert!(j.since(j.last_seq(), 10).is_empty());
    }
}
