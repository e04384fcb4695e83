//! Requests only the leader can carry out (log writes and membership changes), and how any
//! node gets them there: run locally when this node leads, otherwise forward once to the
//! leader it knows over `/raft/leader`.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::time::Duration;

use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use super::Node;
use crate::clock::Stopwatch;
use crate::engine::OperatorPlan;
use crate::leader::{Order, Tick};
use crate::raft::network::CLUSTER_HEADER;
use crate::raft::{NodeId, TypeConfig};
use crate::state::{Command, Epoch, Logged, Rejection, Response};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderRequest {
    Write(Command),
    AddMember {
        id: NodeId,
        addr: String,
    },
    RemoveMember {
        id: NodeId,
    },
    /// An operator's failover: checked against the evidence on the leader, then committed.
    Failover(FailoverOrder),
    /// What only the leader knows (the agents' reports, plan readiness). A read: it changes
    /// nothing.
    View,
}

/// What a follower sends its leader: the request, and who asked for it (for the journal).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded {
    pub request: LeaderRequest,
    #[serde(default)]
    pub by: Option<String>,
}

pub use crate::leader::FailoverOrder;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FailoverOutcome {
    /// Nothing changed; `allowed` says whether the order would proceed.
    DryRun { allowed: bool },
    /// A check failed and the order was not forced: nothing changed.
    Refused,
    /// Committed: `to` is active under `epoch`.
    FailedOver { epoch: Epoch, log_index: u64 },
    /// A drill's first leg committed: `to` is active under `epoch`, and the leader drives the
    /// drill from here.
    DrillStarted { epoch: Epoch, log_index: u64 },
    /// The compare-and-set lost (the group moved meanwhile): nothing changed by this order.
    Rejected { rejection: Rejection },
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaderReply {
    Written {
        response: Response,
        log_index: u64,
    },
    Membership {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        /// Node id (written as a string, as JSON object keys are) → address.
        #[schema(value_type = BTreeMap<String, String>)]
        nodes: BTreeMap<NodeId, String>,
    },
    Failover(FailoverReply),
    View(super::heartbeats::LeaderView),
}

/// An operator's failover: the checks it was held to, and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailoverReply {
    pub plan: OperatorPlan,
    pub outcome: FailoverOutcome,
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "code", content = "detail")]
pub enum NodeError {
    #[error("no leader is known right now (election in progress or quorum lost); retry shortly")]
    NoLeader,
    #[error("node {id} at {addr} is no longer the leader; retry shortly")]
    LeaderMoved { id: NodeId, addr: String },
    /// The request never reached the leader: nothing happened.
    #[error("cannot reach the leader, node {id} at {addr}: {message}")]
    LeaderUnreachable { id: NodeId, addr: String, message: String },
    /// The request may or may not have taken effect.
    #[error(
        "outcome unknown ({reason}): the request may or may not have taken effect; read the state before retrying"
    )]
    OutcomeUnknown { reason: String },
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Raft has stopped on this node ({0}); the outcome of the request is unknown")]
    Fatal(String),
}

/// Longest a write may wait on the leader for its commit before the caller is told the outcome
/// is unknown (a leader that lost its quorum refuses at once; this bounds everything else).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a follower waits for the leader's view (agents, readiness), for its status: a
/// status must answer promptly, with or without it.
const VIEW_TIMEOUT: Duration = Duration::from_secs(2);

impl Node {
    /// Carries out `req` on the leader, wherever it is. `forwarded` is set on requests that
    /// another node already forwarded, so they are never passed along a second time.
    pub async fn submit(&self, req: LeaderRequest, forwarded: bool) -> Result<LeaderReply, NodeError> {
        self.submit_by(req, None, forwarded).await
    }

    /// [`Node::submit`] for a request someone asked for: `by` names them in the journal.
    pub async fn submit_by(
        &self,
        req: LeaderRequest,
        by: Option<String>,
        forwarded: bool,
    ) -> Result<LeaderReply, NodeError> {
        let (route, result) = match self.run_on_leader(req.clone(), by.clone()).await {
            Ok(reply) => ("local", Ok(reply)),
            Err(Failure::Final(e)) => ("local", Err(e)),
            Err(Failure::Redirect(Some((id, addr)))) if !forwarded && id != self.id => {
                ("forwarded", self.forward(id, addr, Forwarded { request: req, by }).await)
            }
            Err(Failure::Redirect(Some((id, addr)))) => return Err(NodeError::LeaderMoved { id, addr }),
            Err(Failure::Redirect(None)) => return Err(NodeError::NoLeader),
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.leader_requests.with_label_values(&[route, outcome]).inc();
        result
    }

    fn catch_up_timeout(&self) -> Duration {
        self.config.cluster.raft.election_timeout_max * 10
    }

    async fn forward(&self, id: NodeId, addr: String, req: Forwarded) -> Result<LeaderReply, NodeError> {
        // Outlast the leader's own bound, so that it answers before this node gives up.
        let timeout = match req.request {
            LeaderRequest::AddMember { .. } => self.catch_up_timeout() + WRITE_TIMEOUT * 2,
            LeaderRequest::View => VIEW_TIMEOUT,
            _ => WRITE_TIMEOUT + Duration::from_secs(5),
        };
        let unknown = |reason: String| NodeError::OutcomeUnknown { reason };
        let (scheme, http) = self.peer_client();
        let resp = http
            .post(format!("{scheme}://{addr}/raft/leader"))
            .header(CLUSTER_HEADER, &self.config.cluster.name)
            .timeout(timeout)
            .json(&req)
            .send()
            .await
            .map_err(|e| {
                // Only a failed connection proves the leader never saw the request.
                if e.is_connect() {
                    NodeError::LeaderUnreachable { id, addr: addr.clone(), message: e.to_string() }
                } else {
                    unknown(format!("forwarding to leader {id} at {addr}: {e}"))
                }
            })?;
        let status = resp.status();
        if status.is_client_error() {
            let body = resp.text().await.unwrap_or_default();
            return Err(NodeError::Rejected(format!(
                "leader {id} refused the forwarded request: HTTP {status}: {body}"
            )));
        }
        if !status.is_success() {
            return Err(unknown(format!("leader {id} answered HTTP {status}")));
        }
        resp.json().await.map_err(|e| unknown(format!("reading leader {id}'s answer: {e}")))?
    }

    async fn run_on_leader(&self, req: LeaderRequest, by: Option<String>) -> Result<LeaderReply, Failure> {
        match req {
            LeaderRequest::Write(Command::ReportVerdict { node, .. })
                if self.raft.metrics().borrow_watched().membership_config.get_node(&node).is_none() =>
            {
                // Verdicts only ever count for voters; keep the state free of anyone else's.
                Err(Failure::Final(NodeError::Rejected(format!(
                    "node {node} is not a member: its verdicts are not recorded"
                ))))
            }
            LeaderRequest::Write(command) => self.write(command, by).await,
            LeaderRequest::AddMember { id, addr } => {
                let reply = self.add_member(id, addr.clone()).await?;
                self.record_membership(by, format!("node {id} at {addr} added as a voter")).await;
                Ok(reply)
            }
            // Its `RetireNode` entry carries who removed it.
            LeaderRequest::RemoveMember { id } => self.remove_member(id, by).await,
            LeaderRequest::Failover(order) => self.operator_failover(order, by).await,
            LeaderRequest::View => match self.leader_view() {
                Some(view) => Ok(LeaderReply::View(view)),
                None => {
                    let m = self.raft.metrics().borrow_watched().clone();
                    let addr = |id| m.membership_config.get_node(&id).map(|n| n.addr.clone());
                    Err(Failure::Redirect(m.current_leader.and_then(|id| Some((id, addr(id)?)))))
                }
            },
        }
    }

    /// Puts a membership change on the journal with who made it. The change itself is
    /// already done; failing to record it is logged, not reported as the change failing.
    async fn record_membership(&self, by: Option<String>, message: String) {
        let record = Command::Record { kind: "membership".into(), message };
        if self.write(record, by).await.is_err() {
            tracing::warn!("membership change done but not recorded in the journal (leadership moved?)");
        }
    }

    async fn operator_failover(&self, mut order: FailoverOrder, by: Option<String>) -> Result<LeaderReply, Failure> {
        if let Some(drill) = order.drill.as_mut() {
            drill.by = by.clone();
            drill.requested_at_ms = crate::clock::unix_ms();
        }
        // The checks need the leader's view (who is live, the latest state): confirm this node
        // leads with a quorum and has applied everything committed, or send the order on.
        self.raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex).await.map_err(|e| match e {
            RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => Failure::Redirect(leader_of(&f)),
            RaftError::APIError(LinearizableReadError::QuorumNotEnough(_)) => Failure::Redirect(None),
            RaftError::Fatal(f) => Failure::Final(NodeError::Fatal(f.to_string())),
        })?;
        let m = self.raft.metrics().borrow_watched().clone();
        let contact = self.contact(&m);
        let state = self.applied.read().expect("state lock poisoned").state.without_journal();
        let failing_since = self.failing_since();
        let decided = {
            let slot = self.leader_of(m.current_term);
            let now = self.clock.now();
            let ready = self.readiness_from(&m, &contact).is_ok();
            let t = Tick { now, state: &state, contact: &contact, ready, failing_since: &failing_since };
            slot.as_ref().expect("just made").order(&order, &t)
        };
        let (plan, command) = match decided.map_err(|r| {
            Failure::Final(match r {
                Rejection::UnknownGroup { .. } => NodeError::NotFound(r.to_string()),
                other => NodeError::Rejected(other.to_string()),
            })
        })? {
            Order::DryRun { plan, allowed } => {
                return Ok(LeaderReply::Failover(FailoverReply { plan, outcome: FailoverOutcome::DryRun { allowed } }))
            }
            Order::Refused { plan } => {
                return Ok(LeaderReply::Failover(FailoverReply { plan, outcome: FailoverOutcome::Refused }))
            }
            Order::Commit { plan, command } => (plan, command),
        };
        let outcome = match self.write(command, by).await? {
            LeaderReply::Written { response: Response::Activated { epoch, .. }, log_index }
                if order.drill.is_some() =>
            {
                FailoverOutcome::DrillStarted { epoch, log_index }
            }
            LeaderReply::Written { response: Response::Activated { epoch, .. }, log_index } => {
                FailoverOutcome::FailedOver { epoch, log_index }
            }
            LeaderReply::Written { response: Response::Rejected(rejection), .. } => {
                FailoverOutcome::Rejected { rejection }
            }
            other => {
                return Err(Failure::Final(NodeError::OutcomeUnknown {
                    reason: format!("unexpected reply to a failover: {other:?}"),
                }))
            }
        };
        let logged = crate::telemetry::json(&outcome);
        let what = if order.drill.is_some() { "drill" } else { "operator failover" };
        tracing::warn!(group = %plan.group, from = %plan.from, to = %plan.to, outcome = %logged, "{what}");
        Ok(LeaderReply::Failover(FailoverReply { plan, outcome }))
    }

    async fn write(&self, command: Command, by: Option<String>) -> Result<LeaderReply, Failure> {
        let timer = Stopwatch::start();
        let resp = tokio::time::timeout(
            WRITE_TIMEOUT,
            self.raft.client_write(Logged { at_ms: crate::clock::unix_ms(), command, by }),
        )
        .await
        .map_err(|_| {
            Failure::Final(NodeError::OutcomeUnknown {
                reason: format!("not committed within {} s", WRITE_TIMEOUT.as_secs()),
            })
        })??;
        self.metrics.commit_seconds.observe(timer.seconds());
        Ok(LeaderReply::Written { response: resp.data, log_index: resp.log_id.index })
    }

    /// Adds `id` as a learner, waits until it has really replicated the entry that added it,
    /// and only then makes it a voter. A node that never answers (wrong address, not running,
    /// another cluster) is taken out again: counting it as a voter would cost the cluster a
    /// failure it could otherwise survive.
    async fn add_member(&self, id: NodeId, addr: String) -> Result<LeaderReply, Failure> {
        let reject = |msg: String| Err(Failure::Final(NodeError::Rejected(msg)));
        if id == 0 {
            return reject("node ids start at 1".into());
        }
        if let Err(msg) = crate::config::check_host_port(&addr) {
            return reject(msg);
        }
        if self.applied.read().expect("state lock poisoned").state.retired_nodes.contains(&id) {
            return reject(format!(
                "node id {id} was removed from this cluster before; ids are never reused, pick a new one"
            ));
        }
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        if membership.voter_ids().any(|v| v == id) {
            return reject(format!("node {id} is already a voter"));
        }
        if let Some((other, _)) = membership.nodes().find(|(other, n)| n.addr == addr && **other != id) {
            return reject(format!("{addr} is the address of node {other}: a new node needs an address of its own"));
        }
        tracing::info!(%id, %addr, "adding member: as learner first, until it has caught up");
        let added = self.raft.add_learner(id, BasicNode { addr: addr.clone() }, false).await?;
        let target = added.log_id.index;
        let timeout = self.catch_up_timeout();
        let caught_up = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
                    matched.is_some_and(|l| l.index >= target)
                },
                "learner caught up",
            )
            .await;
        if caught_up.is_err() {
            tracing::warn!(%id, %addr, "learner did not catch up: removing it again");
            if let Err(e) = self.raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false).await {
                tracing::error!(%id, error = %e, "cannot remove the learner that did not catch up");
            }
            return reject(format!(
                "node {id} at {addr} did not catch up within {} s (is it running, reachable at that address, and \
                 configured with cluster.name {:?}?); it was not added",
                timeout.as_secs(),
                self.config.cluster.name
            ));
        }
        tracing::info!(%id, "learner caught up: promoting to voter");
        self.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await?;
        Ok(self.membership_reply())
    }

    /// Retires the id first, then changes the membership: a removal interrupted between the
    /// two is retried to completion, and the id can never come back in between.
    async fn remove_member(&self, id: NodeId, by: Option<String>) -> Result<LeaderReply, Failure> {
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if membership.get_node(&id).is_none() {
            let retired = self.applied.read().expect("state lock poisoned").state.retired_nodes.contains(&id);
            if retired {
                return Ok(self.membership_reply());
            }
            return Err(Failure::Final(NodeError::Rejected(format!("node {id} is not a member of this cluster"))));
        }
        if is_voter && membership.voter_ids().count() == 1 {
            return Err(Failure::Final(NodeError::Rejected(format!(
                "node {id} is the last voter; a cluster cannot remove it"
            ))));
        }
        self.write(Command::RetireNode { id }, by).await?;
        let change =
            if is_voter { ChangeMembers::RemoveVoters([id].into()) } else { ChangeMembers::RemoveNodes([id].into()) };
        self.raft.change_membership(change, false).await?;
        tracing::info!(%id, "member removed");
        Ok(self.membership_reply())
    }

    fn membership_reply(&self) -> LeaderReply {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        LeaderReply::Membership {
            voters: m.voter_ids().collect(),
            learners: m.membership().learner_ids().collect(),
            nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        }
    }
}

/// Why a request did not complete here: it belongs on another node, or it has a final answer.
enum Failure {
    Redirect(Option<(NodeId, String)>),
    Final(NodeError),
}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for Failure {
    fn from(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Failure {
        match e {
            RaftError::Fatal(f) => Failure::Final(NodeError::Fatal(f.to_string())),
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Failure::Redirect(leader_of(&f)),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Failure::Final(NodeError::OutcomeUnknown {
                reason: "the leader changed before the entry committed".into(),
            }),
            RaftError::APIError(other) => Failure::Final(NodeError::Rejected(other.to_string())),
        }
    }
}

fn leader_of(f: &ForwardToLeader<TypeConfig>) -> Option<(NodeId, String)> {
    match (&f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Some((*id, node.addr.clone())),
        _ => None,
    }
}
