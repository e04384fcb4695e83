//! Read-only views of a node: the `/v1/status` document and the readiness verdict.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::heartbeats::LeaderView;
use super::leader::{Forwarded, LeaderReply, LeaderRequest, NodeError};
use super::Node;
use crate::config::{FailoverMode, ReplicationMode};
use crate::leader::contact::{readiness, Health};
use crate::leader::Contact;
use crate::raft::network::CLUSTER_HEADER;
use crate::raft::NodeId;
use crate::state::plan::{Phase, Plan};
use crate::state::{Epoch, GroupId, SiteId, Verdict};

/// How long a node knowing no leader spends asking the members for the leader's view: as long
/// as a follower waits for it from a leader it knows, so a status answers promptly either way.
const ASK_MEMBERS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub node_id: NodeId,
    pub cluster: String,
    pub role: String,
    pub leader: Option<LeaderRef>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Entries up to here are removed from the log (covered by the snapshot).
    pub purged_index: Option<u64>,
    pub members: Vec<Member>,
    pub sites: Vec<SiteId>,
    /// Every node's committed verdict per site (site → node id → up/down; absent: unknown).
    /// JSON object keys are strings: the node id is written as one.
    #[schema(value_type = BTreeMap<String, BTreeMap<String, Verdict>>)]
    pub verdicts: BTreeMap<SiteId, BTreeMap<NodeId, Verdict>>,
    pub groups: Vec<GroupStatus>,
    /// The cluster-wide switch (`witness automation on|off`): off, no group fails over by itself.
    #[serde(default = "on")]
    pub automation: bool,
    /// False when this node's config declares other sites, groups or timings than the
    /// replicated state (the leader's config wins).
    pub config_matches_cluster: bool,
    /// Each timing where this node's config differs from what the cluster registered: it
    /// would decide on it once it leads.
    #[serde(default)]
    pub config_differences: Vec<String>,
    /// Why the groups' agents, plan readiness and the members' `leader_link` are missing: only
    /// the leader knows them, and this node could not ask it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_view_unavailable: Option<String>,
    pub ready: bool,
    pub not_ready_reason: Option<String>,
    pub uptime_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaderRef {
    pub id: NodeId,
    pub addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
    /// Only on the leader: time since this member last acknowledged the leader.
    pub last_ack_ms: Option<u64>,
    /// How the Raft requests of the node answering to this member fare; absent when it has
    /// sent none lately (a follower sends them only in elections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::raft::links::LinkView>,
    /// How the leader's Raft requests to this member fare, as the leader has them (a follower
    /// asks it): a member the leader cannot reach shows so on every node. Absent when the
    /// leader sent it none lately (itself) or could not be asked (`leader_view_unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_link: Option<crate::raft::links::LinkView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupStatus {
    pub name: GroupId,
    pub primary: SiteId,
    pub secondary: SiteId,
    pub active: SiteId,
    pub epoch: Epoch,
    pub replication: ReplicationMode,
    pub failover: FailoverMode,
    pub paused: bool,
    pub blocked: bool,
    /// A failover is committed and `active` waits to be promoted (groups with agents).
    pub draining: bool,
    /// For groups with agents: their reports and leases, as the leader has them (a follower
    /// asks it).
    pub agents: Option<crate::leader::GroupAgents>,
    /// The names of the group's plan steps, in order (empty: no plan).
    #[serde(default)]
    pub steps: Vec<String>,
    /// For groups with plan steps: the leader's last scheduled check of each step (a follower
    /// asks it); absent until the first check of a leadership.
    #[serde(default)]
    pub readiness: Option<crate::leader::readiness::PlanReadiness>,
    /// The plan of the latest failover, step by step.
    #[serde(default)]
    pub plan: Option<PlanView>,
    /// The objectives, and the worst-case RTO this node's config adds up to.
    #[serde(default)]
    pub rto_ms: u64,
    #[serde(default)]
    pub rpo_ms: u64,
    #[serde(default)]
    pub rto_budget_ms: Option<u64>,
    /// The drill under way, or else the last one (`witness drill show` has its report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<crate::state::drill::DrillBrief>,
    /// When the group's last drill that passed ended (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill_passed_at_ms: Option<u64>,
}

/// A plan with where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanView {
    pub phase: Phase,
    /// Once done: from the first failed probe to the plan done, and the DNS TTL clients add.
    #[serde(default)]
    pub achieved_rto_ms: Option<u64>,
    #[serde(default)]
    pub dns_ttl_s: Option<u32>,
    #[serde(flatten)]
    pub plan: Plan,
}

impl Node {
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let mut links = self.links.view();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                link: links.remove(id),
                leader_link: None,
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                last_ack_ms: m.heartbeat.as_ref().and_then(|hb| {
                    if *id == self.id {
                        return Some(0);
                    }
                    hb.get(id)?.as_ref().map(|at| openraft::Instant::elapsed(&**at).as_millis() as u64)
                }),
            })
            .collect();
        let leader = m
            .current_leader
            .map(|id| LeaderRef { id, addr: membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default() });
        let (sites, verdicts, groups, config_matches_cluster, automation, config_differences) = {
            let applied = self.applied.read().expect("state lock poisoned");
            let s = &applied.state;
            let groups = s
                .groups
                .iter()
                .map(|(name, g)| GroupStatus {
                    name: name.clone(),
                    primary: g.spec.primary.clone(),
                    secondary: g.spec.secondary.clone(),
                    active: g.active.clone(),
                    epoch: g.epoch,
                    replication: g.spec.replication,
                    failover: g.spec.failover,
                    paused: g.paused,
                    blocked: g.blocked,
                    draining: g.draining,
                    agents: None,
                    steps: g.spec.steps.iter().map(|s| s.name.clone()).collect(),
                    readiness: None,
                    plan: g.plan.as_ref().map(|p| PlanView {
                        phase: p.phase(),
                        achieved_rto_ms: p.achieved_rto_ms(),
                        dns_ttl_s: p.dns_ttl_s(),
                        plan: p.clone(),
                    }),
                    rto_ms: g.spec.rto_ms,
                    rpo_ms: g.spec.rpo_ms,
                    rto_budget_ms: self
                        .config
                        .groups
                        .iter()
                        .find(|c| &c.name == name)
                        .map(|c| crate::config::budget::rto_budget(&self.config, c).total.as_millis() as u64),
                    drill: g.drill.as_ref().or_else(|| s.drills.get(name)?.last()).map(|d| d.brief()),
                    drill_passed_at_ms: s
                        .drills
                        .get(name)
                        .and_then(|d| d.iter().rev().find(|d| d.passed()))
                        .and_then(|d| d.finished_at_ms),
                })
                .collect();
            let automation = !s.automation_off;
            (
                s.sites.iter().cloned().collect(),
                s.verdicts.clone(),
                groups,
                s.matches_topology(&self.topology),
                automation,
                self.topology.tuning.differences(&s.tuning, ("here", "registered")),
            )
        };
        let readiness = self.readiness();
        let mut status = Status {
            node_id: self.id,
            cluster: self.config.cluster.name.clone(),
            role: role(m.state).into(),
            leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            sites,
            verdicts,
            groups,
            automation,
            config_matches_cluster,
            config_differences,
            leader_view_unavailable: None,
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            uptime_seconds: self.clock.now().as_secs(),
        };
        if let Some(view) = self.leader_view() {
            fill(&mut status, view);
        }
        status
    }

    /// [`Node::status`], with what only the leader knows (agents, plan readiness, its links)
    /// asked of it when this node does not lead. A node the leader cannot reach learns why
    /// here, if it can reach the leader, and says so in its not-ready reason.
    pub async fn status_with_leader_view(&self) -> Status {
        let mut status = self.status();
        if status.role == "leader" {
            return status;
        }
        match self.ask_leader_view(status.leader.is_some()).await {
            Ok(view) => {
                let unreachable = view.links.get(&self.id).and_then(|l| l.error.clone());
                fill(&mut status, view);
                if let (Some(cause), Some(reason)) = (unreachable, &status.not_ready_reason) {
                    // A removed node is past the leader's reach by design: its reason says so.
                    if !self.removed(&self.raft.metrics().borrow_watched().clone()) {
                        status.not_ready_reason =
                            Some(format!("the leader cannot reach this node: {cause} ({reason})"));
                    }
                }
            }
            Err(e) => {
                status.leader_view_unavailable =
                    Some(format!("only the leader knows the agents, plan readiness and its links: {e}"))
            }
        }
        status
    }

    /// The leader's view, asked of the leader this node knows; knowing none, of the members
    /// its own requests reach, a follower naming its leader: a node the leader cannot reach
    /// stands for election again and again, so it never learns who leads from Raft.
    async fn ask_leader_view(&self, leader_known: bool) -> Result<LeaderView, String> {
        let asked = self.submit(LeaderRequest::View, false).await;
        let e = match asked {
            Ok(LeaderReply::View(view)) => return Ok(view),
            Ok(_) => return Err("the leader answered something else".into()),
            Err(e) if leader_known => return Err(e.to_string()),
            Err(e) => e.to_string(),
        };
        // Only members this node's own requests (its votes) reach: a node cut off from them all
        // answers its status at once rather than waiting on them.
        let links = self.links.view();
        let members: Vec<String> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let reached = |id: &NodeId| *id != self.id && links.get(id).is_some_and(|l| l.up);
            m.membership_config.nodes().filter(|(id, _)| reached(id)).map(|(_, n)| n.addr.clone()).collect()
        };
        // All at once: a member that does not answer holds up no other.
        let through_members = async {
            let mut asks: FuturesUnordered<_> = members.iter().map(|addr| self.view_through(addr)).collect();
            while let Some(found) = asks.next().await {
                if found.is_some() {
                    return found;
                }
            }
            None
        };
        match tokio::time::timeout(ASK_MEMBERS_TIMEOUT, through_members).await {
            Ok(Some(view)) => Ok(view),
            _ => Err(e),
        }
    }

    /// The leader's view from node `addr` if it leads, or else from the leader it names.
    async fn view_through(&self, addr: &str) -> Option<LeaderView> {
        match self.ask_view_of(addr).await? {
            Ok(view) => Some(view),
            Err(NodeError::LeaderMoved { addr, .. }) => self.ask_view_of(&addr).await?.ok(),
            Err(_) => None,
        }
    }

    /// Node `addr`'s answer to a request for the leader's view, as forwarded once (a
    /// follower names its leader rather than passing it on); `None` when it gave none.
    async fn ask_view_of(&self, addr: &str) -> Option<Result<LeaderView, NodeError>> {
        let (scheme, http) = self.peer_client();
        let forwarded = Forwarded { request: LeaderRequest::View, by: None };
        let resp = http
            .post(format!("{scheme}://{addr}/raft/leader"))
            .header(CLUSTER_HEADER, &self.config.cluster.name)
            .json(&forwarded)
            .send()
            .await
            .ok()?;
        match resp.json::<Result<LeaderReply, NodeError>>().await.ok()? {
            Ok(LeaderReply::View(view)) => Some(Ok(view)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Ready or not, and why not (`crate::leader::contact::readiness`).
    pub fn readiness(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow_watched().clone();
        self.readiness_from(&m, &self.contact(&m))
    }

    /// [`Node::readiness`] from metrics and a contact already read.
    pub(super) fn readiness_from(
        &self,
        m: &openraft::RaftMetrics<crate::raft::TypeConfig>,
        contact: &Contact,
    ) -> Result<(), String> {
        let health = Health {
            raft_stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
            me: self.id,
            leader: m.current_leader,
            quorum_acked_ago: contact.quorum_acked_ago,
            leader_heard_ago: self.contact.heard_ago(),
            recovered: self.recovered.load(std::sync::atomic::Ordering::Acquire),
            applied: m.last_applied.map(|l| l.index),
            committed: m.local_committed.map(|l| l.index),
            removed: self.removed(m),
        };
        readiness(&health, self.config.cluster.raft.election_timeout_max)
    }

    /// Whether the cluster removed this node: its committed state retired its id, the
    /// membership it holds lists others but not it, or a peer answered so.
    fn removed(&self, m: &openraft::RaftMetrics<crate::raft::TypeConfig>) -> bool {
        let retired = self.applied.read().expect("state lock poisoned").state.retired_nodes.contains(&self.id);
        let membership = &m.membership_config;
        let unlisted = membership.nodes().next().is_some() && membership.get_node(&self.id).is_none();
        retired || unlisted || self.links.told_removed()
    }
}

/// Puts what the leader knows into the groups and members it is about.
fn fill(status: &mut Status, mut view: LeaderView) {
    for g in &mut status.groups {
        g.agents = view.agents.remove(&g.name);
        g.readiness = view.readiness.remove(&g.name);
    }
    for m in &mut status.members {
        m.leader_link = view.links.remove(&m.id);
    }
}

fn on() -> bool {
    true
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}
