//! Site agents' heartbeats on the leader: leadership confirmed by a linearizable read that many
//! heartbeats share, then the answer (roles, epochs, the active site's lease) from the
//! committed state and this leadership's [`Ledger`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::leader::NodeError;
use super::Node;
use crate::engine::leases::{Heartbeat, HeartbeatAnswer, Ledger, Role};
use crate::state::Epoch;

/// Confirms leadership for many callers at once: a caller takes a ticket, and is answered by
/// the first confirmation that *began* after its ticket was taken, so its answer is as good as
/// a linearizable read of its own. One confirmation runs at a time.
pub struct Confirmer {
    requested: AtomicU64,
    wake: Notify,
    done: watch::Sender<(u64, Result<(), NodeError>)>,
}

impl Default for Confirmer {
    fn default() -> Confirmer {
        Confirmer { requested: AtomicU64::new(0), wake: Notify::new(), done: watch::channel((0, Ok(()))).0 }
    }
}

impl Confirmer {
    async fn confirm(&self) -> Result<(), NodeError> {
        let mut done = self.done.subscribe();
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let answered = done.wait_for(|(completed, _)| *completed >= ticket).await;
        match answered {
            Ok(r) => r.1.clone(),
            Err(_) => Err(NodeError::NoLeader),
        }
    }
}

/// The confirmation loop: runs a read-index confirmation whenever tickets are waiting.
pub(super) async fn confirm_leadership(node: Arc<Node>) {
    let confirmer = &node.confirmer;
    let mut completed = 0;
    loop {
        let target = confirmer.requested.load(Ordering::SeqCst);
        if target <= completed {
            confirmer.wake.notified().await;
            continue;
        }
        let result = node.raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex).await.map(|_| ()).map_err(
            |e| match e {
                RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                    match (f.leader_id, f.leader_node.map(|n| n.addr)) {
                        (Some(id), Some(addr)) => NodeError::LeaderMoved { id, addr },
                        _ => NodeError::NoLeader,
                    }
                }
                RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => NodeError::NoLeader,
                RaftError::Fatal(f) => NodeError::Fatal(f.to_string()),
            },
        );
        completed = target;
        let _previous = confirmer.done.send_replace((completed, result));
    }
}

/// This leadership's ledger, started afresh (its `since` now) when the term changed.
pub(super) type LedgerSlot = Mutex<Option<(u64, Ledger)>>;

impl Node {
    /// Locks the ledger of leadership term `term`, creating it if this is its first use.
    pub(super) fn ledger(&self, term: u64) -> MutexGuard<'_, Option<(u64, Ledger)>> {
        let mut slot = self.ledger.lock().expect("ledger lock poisoned");
        if slot.as_ref().is_none_or(|(t, _)| *t != term) {
            *slot = Some((term, Ledger::new(self.started.elapsed())));
        }
        slot
    }

    /// Answers `site`'s heartbeat: only on the leader, after confirming leadership.
    pub async fn heartbeat(&self, site: &str, heartbeat: &Heartbeat) -> Result<HeartbeatAnswer, NodeError> {
        if !self.applied.read().expect("state lock poisoned").state.sites.contains(site) {
            return Err(NodeError::NotFound(format!("unknown site {site:?}")));
        }
        let (leader, term, addr) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let addr = m.current_leader.and_then(|l| m.membership_config.get_node(&l).map(|n| n.addr.clone()));
            (m.current_leader, m.current_term, addr)
        };
        match leader {
            Some(id) if id == self.id => {}
            Some(id) => return Err(NodeError::LeaderMoved { id, addr: addr.unwrap_or_default() }),
            None => return Err(NodeError::NoLeader),
        }
        let started = std::time::Instant::now();
        self.confirmer.confirm().await?;
        self.metrics.heartbeat_confirm_seconds.observe(started.elapsed().as_secs_f64());
        // Grant under the ledger's lock with the state read inside it: the engine, which reads
        // the ledger after its copy of the state, never misses a grant of a group it saw
        // draining (that grant would have seen the group draining too, and not been made).
        let mut slot = self.ledger(term);
        let (_, ledger) = slot.as_mut().expect("just ensured");
        let applied = self.applied.read().expect("state lock poisoned");
        let now = self.started.elapsed();
        Ok(ledger.heartbeat(now, site, heartbeat, &applied.state))
    }

    /// On the leader: per group with agents, what its agents reported and the leases they
    /// hold. `None` elsewhere (agents talk to the leader only).
    pub fn agents_view(&self) -> Option<BTreeMap<String, GroupAgents>> {
        let (leader, term) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader != Some(self.id) {
            return None;
        }
        let ledger = self.ledger(term).as_ref().expect("just ensured").1.clone();
        let now = self.started.elapsed();
        let applied = self.applied.read().expect("state lock poisoned");
        let ms = |d: Duration| d.as_millis() as u64;
        let view = applied
            .state
            .groups
            .iter()
            .filter(|(_, g)| g.spec.leases.is_some())
            .map(|(name, g)| {
                let sites = [&g.spec.primary, &g.spec.secondary]
                    .into_iter()
                    .map(|site| {
                        let record = ledger.site(site);
                        let report = record.and_then(|r| r.groups.get(name)).map(|g| g.report.clone());
                        let agent = SiteAgent {
                            heard_ms_ago: record.map(|r| ms(now.saturating_sub(r.heard_at))),
                            peer_reachable: record.map(|r| r.peer_reachable),
                            role: report.as_ref().and_then(|r| r.role),
                            epoch: report.as_ref().and_then(|r| r.epoch),
                            in_sync: report.as_ref().and_then(|r| r.in_sync),
                            recovery_point_age_ms: report.as_ref().and_then(|r| r.recovery_point_age_ms),
                            drained: report.as_ref().is_some_and(|r| r.drained),
                            lease_remaining_ms: if *site == g.active {
                                ms(ledger.lease_remaining(name, g, now))
                            } else {
                                0
                            },
                        };
                        (site.clone(), agent)
                    })
                    .collect();
                let agents = GroupAgents {
                    rpo_exposure_ms: ledger.rpo_exposure(name, g, now).map(ms),
                    leases_expire_in_ms: g.draining.then(|| ms(ledger.leases_expire_at(name, g).saturating_sub(now))),
                    sites,
                };
                (name.clone(), agents)
            })
            .collect();
        Some(view)
    }
}

impl Node {
    /// Brings the agent gauges up to date (on the leader; elsewhere they keep their last values
    /// but `witness_raft_is_leader` says which node's to read).
    pub fn observe_agents(&self) {
        let Some(view) = self.agents_view() else { return };
        let m = &self.metrics;
        for (group, agents) in &view {
            let exposure = agents.rpo_exposure_ms.map_or(-1.0, |ms| ms as f64 / 1000.0);
            m.rpo_exposure_seconds.with_label_values(&[group]).set(exposure);
            if let Some(g) = self.config.groups.iter().find(|g| &g.name == group) {
                let objective = match (g.replication, g.agents) {
                    (crate::config::ReplicationMode::Sync, Some(a)) => a.in_sync_within,
                    _ => g.rpo,
                };
                m.rpo_objective_seconds.with_label_values(&[group]).set(objective.as_secs_f64());
            }
            for (site, a) in &agents.sites {
                m.lease_remaining_seconds.with_label_values(&[group, site]).set(a.lease_remaining_ms as f64 / 1000.0);
                for role in Role::ALL {
                    m.agent_role.with_label_values(&[group, site, role.as_str()]).set(i64::from(a.role == Some(role)));
                }
            }
        }
    }
}

/// A group's agents as the leader knows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupAgents {
    /// How far the standby copy is behind (sync: since its last in-sync report; async: its
    /// recovery point's age); absent when not reported.
    pub rpo_exposure_ms: Option<u64>,
    /// While draining: until the old active site's witness leases have certainly expired.
    pub leases_expire_in_ms: Option<u64>,
    pub sites: BTreeMap<String, SiteAgent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteAgent {
    /// Absent: not heard from by this leader.
    pub heard_ms_ago: Option<u64>,
    pub peer_reachable: Option<bool>,
    pub role: Option<Role>,
    pub epoch: Option<Epoch>,
    pub in_sync: Option<bool>,
    pub recovery_point_age_ms: Option<u64>,
    pub drained: bool,
    pub lease_remaining_ms: u64,
}
