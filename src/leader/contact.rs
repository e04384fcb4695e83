//! Who acknowledges whom, and the rules read from it: which voters' verdicts count (live),
//! whether a leader is cut off from its quorum, and whether a node is ready to serve. The
//! runtime reads Raft's metrics into a [`Contact`] once per look; every rule here is a pure
//! function of it, so the leader's decisions, its plan runner and the readiness endpoint can
//! never disagree about the same facts.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ids::NodeId;

/// What this node knows of its peers' acknowledgements, as read from Raft at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub voters: BTreeSet<NodeId>,
    /// On the leader: per other member, how long ago it last acknowledged this leader (absent:
    /// never).
    pub acked_ago: BTreeMap<NodeId, Duration>,
    /// On the leader: how long ago a quorum last acknowledged it (zero for a sole voter, which
    /// is its own quorum); `None` when none has yet.
    pub quorum_acked_ago: Option<Duration>,
    /// Per other member: the log format (`state::LOG_FORMAT`) its Raft routes advertised in
    /// their last answer to this node; absent: no answer yet, or a version that advertises
    /// none (format 1).
    pub formats: BTreeMap<NodeId, u32>,
}

impl Contact {
    /// The voters whose verdicts count: `me`, and every voter that acknowledged this leader
    /// within `within`. A voter not heard from recently counts as unknown, never as a stale
    /// up or down.
    pub fn live(&self, me: NodeId, within: Duration) -> BTreeSet<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|id| *id == me || self.acked_ago.get(id).is_some_and(|ago| *ago <= within))
            .collect()
    }

    /// A leader a quorum has not acknowledged for `after` may already have been replaced
    /// without knowing it: it starts no plan step and abandons those under way.
    pub fn cut_off(&self, after: Duration) -> bool {
        self.quorum_acked_ago.is_none_or(|ago| ago > after)
    }

    /// Whether every voter but `me` is known to read log entries of `format`: one that cannot
    /// would refuse the entry, and with too many such voters nothing would commit (a cluster
    /// halfway through an upgrade).
    pub fn all_read(&self, me: NodeId, format: u32) -> bool {
        self.voters.iter().all(|id| *id == me || self.formats.get(id).is_some_and(|f| *f >= format))
    }
}

/// The facts readiness is judged on.
#[derive(Debug, Clone)]
pub struct Health {
    /// Raft stopped with this error.
    pub raft_stopped: Option<String>,
    pub me: NodeId,
    pub leader: Option<NodeId>,
    /// On the leader: how long ago a quorum acknowledged it ([`Contact::quorum_acked_ago`]).
    pub quorum_acked_ago: Option<Duration>,
    /// On a follower: how long ago it last heard from the leader.
    pub leader_heard_ago: Option<Duration>,
    /// The node has re-applied what the cluster committed of its log since it started.
    pub recovered: bool,
    pub applied: Option<u64>,
    pub committed: Option<u64>,
    /// The cluster removed this node (its committed state retired its id, its membership no
    /// longer lists it, or a peer said so).
    pub removed: bool,
}

/// Ready means: a leader is known and demonstrably has a quorum (the leader has heard from one
/// within `bound`, a follower from the leader), the node has recovered its committed state after
/// start, and it has applied everything it knows to be committed. `Err` says what is missing.
pub fn readiness(h: &Health, bound: Duration) -> Result<(), String> {
    if let Some(e) = &h.raft_stopped {
        return Err(format!("Raft has stopped: {e}"));
    }
    if h.removed {
        return Err("the cluster removed this node (`witness members remove`): it takes no part in any decision; \
                    stop it"
            .into());
    }
    let ms = |d: Duration| d.as_millis();
    match h.leader {
        None => return Err("no leader known".into()),
        Some(leader) if leader == h.me => match h.quorum_acked_ago {
            None => return Err("this node leads but no quorum has acknowledged it yet".into()),
            Some(age) if age > bound => {
                return Err(format!("this node leads but no quorum has acknowledged it for {} ms", ms(age)))
            }
            Some(_) => {}
        },
        Some(leader) => match h.leader_heard_ago {
            None => return Err(format!("leader {leader} known but not heard from yet")),
            Some(age) if age > bound => return Err(format!("no word from leader {leader} for {} ms", ms(age))),
            Some(_) => {}
        },
    }
    if !h.recovered {
        return Err("recovering: re-applying the committed log after start".into());
    }
    if h.applied < h.committed {
        return Err(format!(
            "applying the log: applied {} of {} committed",
            h.applied.unwrap_or(0),
            h.committed.unwrap_or(0)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn live_voters_are_me_and_those_heard_within_the_bound() {
        let c = Contact {
            voters: [1, 2, 3, 4].map(NodeId).into(),
            acked_ago: [(NodeId(2), ms(100)), (NodeId(3), ms(1001)), (NodeId(5), ms(0))].into(),
            quorum_acked_ago: Some(ms(100)),
            formats: [(NodeId(2), 2), (NodeId(3), 1), (NodeId(4), 3)].into(),
        };
        assert!(c.all_read(NodeId(1), 1) && !c.all_read(NodeId(1), 2), "3 advertised format 1");
        assert!(!c.all_read(NodeId(3), 1), "1 never answered");
        let c = Contact { formats: [(NodeId(2), 2), (NodeId(3), 2), (NodeId(4), 3)].into(), ..c };
        assert!(c.all_read(NodeId(1), 2) && !c.all_read(NodeId(1), 3));
        assert_eq!(c.live(NodeId(1), ms(1000)), [1, 2].map(NodeId).into(), "3 too long ago, 4 never, 5 no voter");
        assert!(!c.cut_off(ms(100)));
        assert!(c.cut_off(ms(99)));
        assert!(Contact::default().cut_off(ms(1_000_000)), "never acknowledged: cut off");
    }

    #[test]
    fn readiness_names_what_is_missing() {
        let ok = Health {
            raft_stopped: None,
            me: NodeId(1),
            leader: Some(NodeId(1)),
            quorum_acked_ago: Some(ms(10)),
            leader_heard_ago: None,
            recovered: true,
            applied: Some(5),
            committed: Some(5),
            removed: false,
        };
        let bound = ms(1000);
        assert_eq!(readiness(&ok, bound), Ok(()));
        let cases: Vec<(Health, &str)> = vec![
            (Health { leader: None, ..ok.clone() }, "no leader known"),
            (Health { quorum_acked_ago: None, ..ok.clone() }, "no quorum has acknowledged it yet"),
            (Health { quorum_acked_ago: Some(ms(1001)), ..ok.clone() }, "for 1001 ms"),
            (Health { leader: Some(NodeId(2)), ..ok.clone() }, "leader 2 known but not heard from yet"),
            (
                Health { leader: Some(NodeId(2)), leader_heard_ago: Some(ms(2000)), ..ok.clone() },
                "no word from leader 2",
            ),
            (Health { recovered: false, ..ok.clone() }, "recovering"),
            (Health { applied: Some(4), ..ok.clone() }, "applied 4 of 5"),
            (Health { raft_stopped: Some("disk".into()), ..ok.clone() }, "Raft has stopped: disk"),
            (Health { removed: true, ..ok.clone() }, "the cluster removed this node"),
        ];
        for (h, want) in cases {
            let got = readiness(&h, bound).expect_err(want);
            assert!(got.contains(want), "{got:?} should say {want:?}");
        }
        assert_eq!(readiness(&Health { leader: Some(NodeId(2)), leader_heard_ago: Some(ms(5)), ..ok }, bound), Ok(()));
    }
}
