//! A node's background duties: bootstrap a new cluster, recover after a restart, log leadership
//! changes, snapshot on a timer; and start the probing loop (`probing.rs`), the leader's
//! runtime (`leading.rs`) and the heartbeats' leadership confirmations (`heartbeats.rs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{InitializeError, RaftError};
use openraft::BasicNode;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::leading::lead;
use super::probing::probe_and_report;
use super::Node;
use crate::probe::SiteProber;
use crate::raft::NodeId;

pub(super) fn spawn_all(
    node: &Arc<Node>,
    probers: Vec<SiteProber>,
    stopped: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(until_stopped(stopped.clone(), probe_and_report(node.clone(), probers)));
    tasks.spawn(until_stopped(stopped.clone(), lead(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), bootstrap(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), recover(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), follow_raft(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), snapshot_timer(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), super::heartbeats::confirm_leadership(node.clone())));
}

async fn until_stopped(mut stopped: watch::Receiver<bool>, duty: impl Future<Output = ()>) {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => {}
        _ = duty => {}
    }
}

/// What a node tells a peer that is about to bootstrap, so that nodes whose configs disagree
/// on the initial members refuse to form a cluster instead of forming two.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapInfo {
    pub cluster: String,
    pub initial_members: BTreeMap<NodeId, String>,
}

impl Node {
    pub fn bootstrap_info(&self) -> BootstrapInfo {
        BootstrapInfo {
            cluster: self.config.cluster.name.clone(),
            initial_members: self.config.cluster.initial_members.clone(),
        }
    }
}

/// Initializes a brand-new cluster from `cluster.initial_members`. Every initial member does
/// this with the same member list, whichever starts first; Raft then elects one leader and
/// the identical first entries never conflict. A node with existing state skips it.
async fn bootstrap(node: Arc<Node>) {
    match node.raft.is_initialized().await {
        Ok(true) => {
            tracing::info!("existing Raft state found: rejoining the cluster");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read Raft state");
            return;
        }
    }
    let members = &node.config.cluster.initial_members;
    if !members.contains_key(&node.id) {
        tracing::info!(
            "this node is not in cluster.initial_members: waiting to be added with `witness members add {} {}`",
            node.id,
            node.config.node.advertise
        );
        return;
    }
    let mine = node.bootstrap_info();
    for (id, addr) in members.iter().filter(|(id, _)| **id != node.id) {
        let (scheme, http) = node.peer_client();
        let url = format!("{scheme}://{addr}/raft/bootstrap");
        let Ok(resp) = http.get(&url).timeout(Duration::from_secs(1)).send().await else {
            continue; // not started yet: fine, whichever node starts first proceeds
        };
        let Ok(theirs) = resp.json::<BootstrapInfo>().await else {
            continue;
        };
        if theirs != mine {
            tracing::error!(
                peer = %id,
                ours = %crate::telemetry::json(&mine),
                theirs = %crate::telemetry::json(&theirs),
                "refusing to bootstrap: node {id} has a different cluster name or initial member list; \
                 make cluster.name and cluster.initial_members identical on every node, then restart"
            );
            return;
        }
    }
    let nodes: BTreeMap<NodeId, BasicNode> =
        members.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
    match node.raft.initialize(nodes).await {
        Ok(()) => {
            let ids: Vec<String> = members.keys().map(|id| id.to_string()).collect();
            tracing::info!(members = %ids.join(","), "initialized a new cluster")
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("cluster already initialized by a peer: joining it")
        }
        Err(e) => tracing::error!(error = %e, "cannot initialize the cluster"),
    }
}

/// Marks the node recovered once its state machine has re-applied what the cluster committed
/// of its log (this needs a leader, so it runs beside serving, not before it).
async fn recover(node: Arc<Node>) {
    match node.raft.wait_for_recovery(None).await {
        Ok(m) => {
            node.recovered.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(applied = m.last_applied.map_or(0, |l| l.index), "committed state recovered");
        }
        Err(e) => tracing::warn!(error = %e, "recovery wait ended without recovering"),
    }
}

/// Follows leadership (server metrics change with the vote, role and membership, not with
/// every commit) and logs its changes.
async fn follow_raft(node: Arc<Node>) {
    let mut server = node.raft.server_metrics();
    let mut last_leader = None;
    loop {
        let (leader, term) = {
            let m = server.borrow_and_update();
            (m.current_leader, m.vote.leader_id().term)
        };
        if leader != last_leader {
            match leader {
                Some(id) if id == node.id => tracing::info!(term, "this node is now the leader"),
                Some(id) => tracing::info!(leader = %id, term, "following leader"),
                None => tracing::warn!(term, "no leader known"),
            }
            last_leader = leader;
        }
        if server.changed().await.is_err() {
            return;
        }
    }
}

/// The count-based snapshot policy may never fire at a witness's write rate, and then the log
/// would never compact: snapshot on a timer whenever something was applied since the last one.
async fn snapshot_timer(node: Arc<Node>) {
    let period = node.config.cluster.raft.snapshot_interval;
    let mut tick = tokio::time::interval(period);
    tick.tick().await; // the first tick is at once: the first snapshot comes a period later
    loop {
        tick.tick().await;
        let (applied, snapshot) = {
            let m = node.raft.metrics().borrow_watched().clone();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        if applied > snapshot {
            tracing::debug!(applied = applied.unwrap_or(0), snapshot = snapshot.unwrap_or(0), "time-based snapshot");
            if let Err(e) = node.raft.trigger().snapshot().await {
                tracing::error!(error = %e, "cannot trigger snapshot");
            }
        }
    }
}
