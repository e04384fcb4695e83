//! The Raft transport's client side: openraft RPCs as HTTP POSTs with JSON bodies to
//! `/raft/*` on the peer.
//!
//! Three independent HTTP clients (connection pools): one for log replication, one for
//! heartbeats, one for snapshots, so a large append or a snapshot transfer never delays a
//! heartbeat behind it on the same connection (a fourth carries requests forwarded to the
//! leader). Over TLS each presents this node's certificate and trusts only the cluster CA;
//! all four are rebuilt when certificates are reloaded, and connections already open finish
//! with the old ones. Every request carries the cluster name and the target's id; a node of
//! another cluster, or another node, refuses it.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::links::Links;
use super::state_machine::Snapshot;
use super::{Node, NodeId, TypeConfig, Vote};

pub const CLUSTER_HEADER: &str = "witness-cluster";
/// The id of the node an RPC is meant for: a node refuses RPCs meant for another (an address
/// that leads to the wrong node, or back to the sender, must fail as exactly that).
pub const TARGET_HEADER: &str = "witness-target";
/// The log format (`state::LOG_FORMAT`) a node reads, on every answer of its Raft routes: a
/// leader writes batches only when every voter's answers carry 2 or more.
pub const FORMAT_HEADER: &str = "witness-log-format";

/// The clients toward peers, built from one TLS configuration (or none: plain HTTP).
pub struct PeerClients {
    pub scheme: &'static str,
    replication: reqwest::Client,
    heartbeat: reqwest::Client,
    snapshot: reqwest::Client,
    pub forward: reqwest::Client,
}

impl PeerClients {
    pub fn new(tls: Option<&rustls::ClientConfig>) -> anyhow::Result<PeerClients> {
        let build = || {
            let builder = reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60));
            match tls {
                Some(config) => builder.tls_backend_preconfigured(config.clone()).https_only(true).build(),
                None => builder.build(),
            }
        };
        Ok(PeerClients {
            scheme: if tls.is_some() { "https" } else { "http" },
            replication: build()?,
            heartbeat: build()?,
            snapshot: build()?,
            forward: build()?,
        })
    }
}

/// The node's current [`PeerClients`], shared by Raft and the node, replaced on reload.
#[derive(Clone)]
pub struct SharedPeers(Arc<RwLock<Arc<PeerClients>>>);

impl SharedPeers {
    pub fn new(clients: PeerClients) -> SharedPeers {
        SharedPeers(Arc::new(RwLock::new(Arc::new(clients))))
    }

    pub fn current(&self) -> Arc<PeerClients> {
        self.0.read().expect("peer clients lock poisoned").clone()
    }

    pub fn replace(&self, clients: PeerClients) {
        *self.0.write().expect("peer clients lock poisoned") = Arc::new(clients);
    }
}

pub struct Network {
    cluster: String,
    peers: SharedPeers,
    links: Arc<Links>,
}

#[derive(Clone, Copy)]
enum Pool {
    Replication,
    Heartbeat,
    Snapshot,
}

impl Network {
    pub fn new(cluster: &str, peers: SharedPeers, links: Arc<Links>) -> Network {
        Network { cluster: cluster.to_string(), peers, links }
    }

    fn client(&self, pool: Pool, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            cluster: self.cluster.clone(),
            peers: self.peers.clone(),
            links: self.links.clone(),
            pool,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(Pool::Replication, target, node)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(Pool::Heartbeat, target, node)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(Pool::Snapshot, target, node)
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    cluster: String,
    peers: SharedPeers,
    links: Arc<Links>,
    pool: Pool,
}

impl PeerClient {
    /// One RPC, its outcome recorded in the node's [`Links`].
    async fn call<Req, Resp>(&self, path: &str, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let (result, cause) = self.send(path, req, option).await;
        self.links.record(self.target, &self.addr, cause.map_or(Ok(()), Err));
        result
    }

    /// The RPC, and why it failed in words (`None`: answered).
    async fn send<Req, Resp>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> (Result<Resp, RPCError<TypeConfig>>, Option<String>)
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let peers = self.peers.current();
        let http = match self.pool {
            Pool::Replication => &peers.replication,
            Pool::Heartbeat => &peers.heartbeat,
            Pool::Snapshot => &peers.snapshot,
        };
        let url = format!("{}://{}/raft/{path}", peers.scheme, self.addr);
        let sent = http
            .post(&url)
            .header(CLUSTER_HEADER, &self.cluster)
            .header(TARGET_HEADER, self.target.to_string())
            .json(req)
            // The soft TTL leaves openraft room to act on the answer before its hard deadline.
            .timeout(option.soft_ttl())
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => {
                let format = resp.headers().get(FORMAT_HEADER).and_then(|v| v.to_str().ok()?.parse().ok());
                self.links.format(self.target, format.unwrap_or(1));
                resp
            }
            Err(e) => {
                let cause = crate::tls::failure::classify(&e).to_string();
                let error = if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                };
                return (Err(error), Some(cause));
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let cause = format!("node {} answered HTTP {status} to {path}: {}", self.target, body.trim());
            return (Err(RPCError::Network(NetworkError::from_string(cause.clone()))), Some(cause));
        }
        let result: Result<Resp, RaftError<TypeConfig>> = match resp.json().await {
            Ok(r) => r,
            Err(e) => {
                let cause = format!("node {}'s answer to {path} could not be read: {e}", self.target);
                return (Err(RPCError::Network(NetworkError::new(&e))), Some(cause));
            }
        };
        // The only error a peer's Raft returns here is Fatal (it is shutting down or its
        // storage failed): to this node that peer is unreachable until it comes back.
        match result {
            Ok(resp) => (Ok(resp), None),
            Err(e) => {
                let cause = format!("node {}'s Raft has stopped: {e}", self.target);
                (Err(RPCError::Unreachable(Unreachable::new(&e))), Some(cause))
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("append", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("vote", &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("pre-vote", &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.call("snapshot", &req, &option) => Ok(res?),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call("transfer-leader", &req, &option).await
    }
}
