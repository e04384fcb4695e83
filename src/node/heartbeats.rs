//! Site agents' heartbeats on the leader: leadership confirmed by a linearizable read that many
//! heartbeats share, then the answer (roles, epochs, the active site's lease) from the
//! committed state and this leadership's `Leader`; and what only the leader knows, the agents'
//! reports, the plans' readiness and how its links to the members fare (`LeaderView`), for
//! status and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{LinearizableReadError, RaftError};
use tokio::sync::{watch, Notify};

use super::leader::NodeError;
use super::Node;
use crate::clock::Stopwatch;
use crate::ids::GroupId;
use crate::leader::readiness::PlanReadiness;
use crate::leader::{Confirmed, GroupAgents};
use crate::protocol::{Heartbeat, HeartbeatAnswer, Role};
use crate::raft::links::LinkView;
use crate::raft::NodeId;

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

/// Confirmations start at most this often. Each is a Raft heartbeat round to every member:
/// back to back, a thousand heartbeats a second kept one running at all times, a fair part of
/// every node's CPU; spaced, they share one round per few milliseconds instead, and an
/// agent's answer is at most this much later (its lease counts from its sending anyway).
const CONFIRM_SPACING: Duration = Duration::from_millis(5);

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
        let next = tokio::time::Instant::now() + CONFIRM_SPACING;
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
        tokio::time::sleep_until(next).await;
    }
}

/// What only the leader knows, for status and metrics (a follower asks the leader for it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LeaderView {
    /// Per group with agents. JSON object keys: group names.
    #[schema(value_type = BTreeMap<String, GroupAgents>)]
    pub agents: BTreeMap<GroupId, GroupAgents>,
    /// Per group with plan steps, its last readiness check this leadership.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, PlanReadiness>)]
    pub readiness: BTreeMap<GroupId, PlanReadiness>,
    /// The leader's links to the members it sent Raft requests to lately: a member it cannot
    /// reach is then seen from every node, the member itself included. JSON object keys: node
    /// ids. Absent from an older leader.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, LinkView>)]
    pub links: BTreeMap<NodeId, LinkView>,
}

impl Node {
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
        let timer = Stopwatch::start();
        self.confirmer.confirm().await?;
        self.metrics.heartbeat_confirm_seconds.observe(timer.seconds());
        // The state is read under the leader's lock, after the confirmation (`Leader::heartbeat`).
        let mut slot = self.leader_of(term);
        let leader = slot.as_mut().expect("just made");
        let applied = self.applied.read().expect("state lock poisoned");
        let confirmed = Some(Confirmed { term });
        leader.heartbeat(self.clock.now(), site, heartbeat, &applied.state, confirmed).ok_or(NodeError::NoLeader)
    }

    /// On the leader, what only it knows: per group with agents, what they reported and the
    /// leases they hold; per group with a plan, its last readiness check; its links to the
    /// members. `None` elsewhere.
    pub fn leader_view(&self) -> Option<LeaderView> {
        let (leader, term) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader != Some(self.id) {
            return None;
        }
        let slot = self.leader_of(term);
        let leader = slot.as_ref().expect("just made");
        let applied = self.applied.read().expect("state lock poisoned");
        Some(LeaderView {
            agents: leader.agents(&applied.state, self.clock.now()),
            readiness: leader.readiness(),
            links: self.links.view(),
        })
    }

    /// Brings the gauges of what only the leader knows up to date (on the leader; elsewhere
    /// they keep their last values but `witness_raft_is_leader` says which node's to read).
    pub fn observe_leader_view(&self) {
        let Some(LeaderView { agents: view, readiness, .. }) = self.leader_view() else { return };
        let m = &self.metrics;
        // Rebuilt whole: a step or group gone from the config leaves no stale series.
        m.plan_step_ready.reset();
        m.target_drift.reset();
        for (group, r) in &readiness {
            m.plan_checked_timestamp.with_label_values(&[group]).set(r.checked_at_ms as f64 / 1000.0);
            for s in &r.steps {
                let labels = [group.as_str(), s.step.as_str()];
                m.plan_step_ready.with_label_values(&labels).set(i64::from(s.ok));
                if let Some(target) = &s.target {
                    let drifted = matches!(target, crate::leader::readiness::TargetState::Drifted(_));
                    m.target_drift.with_label_values(&labels).set(i64::from(drifted));
                }
            }
        }
        for (group, agents) in &view {
            let exposure = agents.rpo_exposure_ms.map_or(-1.0, |ms| ms as f64 / 1000.0);
            m.rpo_exposure_seconds.with_label_values(&[group]).set(exposure);
            m.agents_ahead.with_label_values(&[group]).set(agents.agents_ahead.map_or(0, |e| e.0 as i64));
            m.peer_lease_held.with_label_values(&[group]).set(i64::from(agents.without_peer_lease.is_none()));
            if let Some(objective) = agents.rpo_objective_ms {
                m.rpo_objective_seconds.with_label_values(&[group]).set(objective as f64 / 1000.0);
            }
            for (site, a) in &agents.sites {
                m.lease_remaining_seconds
                    .with_label_values(&[group.as_str(), site.as_str()])
                    .set(a.lease_remaining_ms as f64 / 1000.0);
                m.agent_silent.with_label_values(&[group.as_str(), site.as_str()]).set(i64::from(a.silent));
                for role in Role::ALL {
                    m.agent_role
                        .with_label_values(&[group.as_str(), site.as_str(), role.as_str()])
                        .set(i64::from(a.role == Some(role)));
                }
            }
        }
    }
}
