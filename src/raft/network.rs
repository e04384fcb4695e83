//! The Raft transport's client side: openraft RPCs as HTTP POSTs with JSON bodies to
//! `/raft/*` on the peer.
//!
//! Three independent HTTP clients (connection pools): one for log replication, one for
//! heartbeats, one for snapshots, so a large append or a snapshot transfer never delays a
//! heartbeat behind it on the same connection. Every request carries the cluster name; a
//! node of another cluster refuses it.

use std::future::Future;
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

use super::state_machine::Snapshot;
use super::{Node, NodeId, TypeConfig, Vote};

pub const CLUSTER_HEADER: &str = "witness-cluster";

pub struct Network {
    cluster: String,
    replication: reqwest::Client,
    heartbeat: reqwest::Client,
    snapshot: reqwest::Client,
}

impl Network {
    pub fn new(cluster: &str) -> anyhow::Result<Network> {
        let build = || {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
        };
        Ok(Network { cluster: cluster.to_string(), replication: build()?, heartbeat: build()?, snapshot: build()? })
    }

    fn client(&self, http: &reqwest::Client, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            target,
            base: format!("http://{}/raft", node.addr),
            cluster: self.cluster.clone(),
            http: http.clone(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(&self.replication, target, node)
    }

    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(&self.heartbeat, target, node)
    }

    async fn new_snapshot_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        self.client(&self.snapshot, target, node)
    }
}

pub struct PeerClient {
    target: NodeId,
    base: String,
    cluster: String,
    http: reqwest::Client,
}

impl PeerClient {
    async fn call<Req, Resp>(&self, path: &str, req: &Req, option: &RPCOption) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let url = format!("{}/{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .header(CLUSTER_HEADER, &self.cluster)
            .json(req)
            // The soft TTL leaves openraft room to act on the answer before its hard deadline.
            .timeout(option.soft_ttl())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(RPCError::Network(NetworkError::from_string(format!(
                "node {} answered HTTP {status} to {path}: {body}",
                self.target
            ))));
        }
        let result: Result<Resp, RaftError<TypeConfig>> =
            resp.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The only error a peer's Raft returns here is Fatal (it is shutting down or its
        // storage failed): to this node that peer is unreachable until it comes back.
        result.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
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
