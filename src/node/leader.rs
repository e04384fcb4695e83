//! Requests only the leader can carry out (log writes and membership changes), and how any
//! node gets them there: run locally when this node leads, otherwise forward once to the
//! leader it knows over `/raft/leader`.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};

use super::Node;
use crate::raft::network::CLUSTER_HEADER;
use crate::raft::{NodeId, TypeConfig};
use crate::state::{Command, Response};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderRequest {
    Write(Command),
    AddMember { id: NodeId, addr: String },
    RemoveMember { id: NodeId },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderReply {
    Written {
        response: Response,
        log_index: u64,
    },
    Membership {
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
        nodes: BTreeMap<NodeId, String>,
    },
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "code", content = "detail")]
pub enum NodeError {
    #[error("no leader is known right now (election in progress or quorum lost); retry shortly")]
    NoLeader,
    #[error("node {id} at {addr} is no longer the leader; retry shortly")]
    LeaderMoved { id: NodeId, addr: String },
    #[error("cannot reach the leader, node {id} at {addr}: {message}")]
    LeaderUnreachable { id: NodeId, addr: String, message: String },
    #[error("the leader changed before the entry committed; it may or may not have been applied: read the state before retrying")]
    OutcomeUnknown,
    #[error("{0}")]
    Rejected(String),
    #[error("Raft has stopped on this node: {0}")]
    Fatal(String),
}

impl Node {
    /// Carries out `req` on the leader, wherever it is. `forwarded` is set on requests that
    /// another node already forwarded, so they are never passed along a second time.
    pub async fn submit(&self, req: LeaderRequest, forwarded: bool) -> Result<LeaderReply, NodeError> {
        let result = self.run_on_leader(req.clone()).await;
        let outcome = |ok: bool| if ok { "ok" } else { "error" };
        match result {
            Ok(reply) => {
                self.metrics
                    .leader_requests
                    .with_label_values(&["local", outcome(true)])
                    .inc();
                Ok(reply)
            }
            Err(Failure::Final(e)) => {
                self.metrics
                    .leader_requests
                    .with_label_values(&["local", outcome(false)])
                    .inc();
                Err(e)
            }
            Err(Failure::Redirect(Some((id, addr)))) if !forwarded && id != self.id => {
                let result = self.forward(id, addr, req).await;
                self.metrics
                    .leader_requests
                    .with_label_values(&["forwarded", outcome(result.is_ok())])
                    .inc();
                result
            }
            Err(Failure::Redirect(Some((id, addr)))) => Err(NodeError::LeaderMoved { id, addr }),
            Err(Failure::Redirect(None)) => Err(NodeError::NoLeader),
        }
    }

    async fn forward(&self, id: NodeId, addr: String, req: LeaderRequest) -> Result<LeaderReply, NodeError> {
        let unreachable = |message: String| NodeError::LeaderUnreachable {
            id,
            addr: addr.clone(),
            message,
        };
        let timeout = match req {
            // A new member first catches up as a learner, which may take a while.
            LeaderRequest::AddMember { .. } => Duration::from_secs(120),
            _ => Duration::from_secs(15),
        };
        let resp = self
            .peer_http
            .post(format!("http://{addr}/raft/leader"))
            .header(CLUSTER_HEADER, &self.config.cluster.name)
            .timeout(timeout)
            .json(&req)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(unreachable(format!(
                "HTTP {status}: {}",
                resp.text().await.unwrap_or_default()
            )));
        }
        resp.json().await.map_err(|e| unreachable(e.to_string()))?
    }

    async fn run_on_leader(&self, req: LeaderRequest) -> Result<LeaderReply, Failure> {
        match req {
            LeaderRequest::Write(command) => self.write(command).await,
            LeaderRequest::AddMember { id, addr } => self.add_member(id, addr).await,
            LeaderRequest::RemoveMember { id } => self.remove_member(id).await,
        }
    }

    async fn write(&self, command: Command) -> Result<LeaderReply, Failure> {
        let start = Instant::now();
        let resp = self.raft.client_write(command).await?;
        self.metrics.commit_seconds.observe(start.elapsed().as_secs_f64());
        Ok(LeaderReply::Written {
            response: resp.data,
            log_index: resp.log_id.index,
        })
    }

    async fn add_member(&self, id: NodeId, addr: String) -> Result<LeaderReply, Failure> {
        let reject = |msg: String| Err(Failure::Final(NodeError::Rejected(msg)));
        if id == 0 {
            return reject("node ids start at 1".into());
        }
        if let Err(msg) = crate::config::check_host_port(&addr) {
            return reject(msg);
        }
        if self
            .applied
            .read()
            .expect("state lock poisoned")
            .state
            .retired_nodes
            .contains(&id)
        {
            return reject(format!(
                "node id {id} was removed from this cluster before; ids are never reused, pick a new one"
            ));
        }
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        if membership.voter_ids().any(|v| v == id) {
            return reject(format!("node {id} is already a voter"));
        }
        tracing::info!(id, %addr, "adding member: as learner first, until it has caught up");
        self.raft.add_learner(id, BasicNode { addr }, true).await?;
        tracing::info!(id, "learner caught up: promoting to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
            .await?;
        Ok(self.membership_reply())
    }

    async fn remove_member(&self, id: NodeId) -> Result<LeaderReply, Failure> {
        let membership = self.raft.metrics().borrow_watched().membership_config.clone();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if membership.get_node(&id).is_none() {
            return Err(Failure::Final(NodeError::Rejected(format!(
                "node {id} is not a member of this cluster"
            ))));
        }
        if is_voter && membership.voter_ids().count() == 1 {
            return Err(Failure::Final(NodeError::Rejected(format!(
                "node {id} is the last voter; a cluster cannot remove it"
            ))));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        self.raft.change_membership(change, false).await?;
        // Recorded after the change: a retry of a half-done removal finds the id still known.
        self.raft.client_write(Command::RetireNode { id }).await?;
        tracing::info!(id, "member removed");
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
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => Failure::Final(NodeError::OutcomeUnknown),
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
