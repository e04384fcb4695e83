//! The Raft transport's server side: axum routes under `/raft/` that hand each RPC to the
//! local Raft and answer its `Result` as JSON.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::errors::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};

use super::network::CLUSTER_HEADER;
use super::state_machine::Snapshot;
use super::{Raft, SnapshotMeta, TypeConfig, Vote};

/// When this node last accepted entries or a heartbeat from a leader: a follower's evidence
/// that a leader with a quorum exists.
#[derive(Clone, Default)]
pub struct LeaderContact(Arc<Mutex<Option<Instant>>>);

impl LeaderContact {
    pub fn last(&self) -> Option<Instant> {
        *self.0.lock().expect("leader contact lock poisoned")
    }

    fn touch(&self) {
        *self.0.lock().expect("leader contact lock poisoned") = Some(Instant::now());
    }
}

#[derive(Clone)]
struct Rpc {
    raft: Raft,
    cluster: Arc<str>,
    contact: LeaderContact,
}

/// Snapshots can outgrow axum's 2 MiB default body limit on large deployments.
const MAX_RPC_BODY: usize = 64 << 20;

pub fn router(raft: Raft, cluster: &str, contact: LeaderContact) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/transfer-leader", post(transfer_leader))
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .with_state(Rpc {
            raft,
            cluster: cluster.into(),
            contact,
        })
}

/// Refuses RPCs from a node configured for another cluster: wiring two clusters together by
/// a wrong address must fail loudly, not merge their logs.
fn check_cluster(rpc: &Rpc, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    match headers.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) {
        Some(name) if name == &*rpc.cluster => Ok(()),
        other => Err((
            StatusCode::CONFLICT,
            format!(
                "this node belongs to cluster {:?}, the request to {:?}",
                rpc.cluster,
                other.unwrap_or("")
            ),
        )),
    }
}

async fn append(
    State(rpc): State<Rpc>,
    headers: HeaderMap,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Response {
    if let Err(refused) = check_cluster(&rpc, &headers) {
        return refused.into_response();
    }
    let res = rpc.raft.append_entries(req).await;
    if res.as_ref().is_ok_and(|r| r.is_success()) {
        rpc.contact.touch();
    }
    Json(res).into_response()
}

async fn vote(
    State(rpc): State<Rpc>,
    headers: HeaderMap,
    Json(req): Json<VoteRequest<TypeConfig>>,
) -> Response {
    if let Err(refused) = check_cluster(&rpc, &headers) {
        return refused.into_response();
    }
    Json(rpc.raft.vote(req).await).into_response()
}

async fn pre_vote(
    State(rpc): State<Rpc>,
    headers: HeaderMap,
    Json(req): Json<VoteRequest<TypeConfig>>,
) -> Response {
    if let Err(refused) = check_cluster(&rpc, &headers) {
        return refused.into_response();
    }
    Json(rpc.raft.pre_vote(req).await).into_response()
}

async fn snapshot(
    State(rpc): State<Rpc>,
    headers: HeaderMap,
    Json((vote, meta, data)): Json<(Vote, SnapshotMeta, Vec<u8>)>,
) -> Response {
    if let Err(refused) = check_cluster(&rpc, &headers) {
        return refused.into_response();
    }
    let res = rpc
        .raft
        .install_full_snapshot(
            vote,
            Snapshot {
                meta,
                snapshot: data,
            },
        )
        .await
        .map_err(RaftError::<TypeConfig>::Fatal);
    Json(res).into_response()
}

async fn transfer_leader(
    State(rpc): State<Rpc>,
    headers: HeaderMap,
    Json(req): Json<TransferLeaderRequest<TypeConfig>>,
) -> Response {
    if let Err(refused) = check_cluster(&rpc, &headers) {
        return refused.into_response();
    }
    let res = rpc
        .raft
        .handle_transfer_leader(req)
        .await
        .map_err(RaftError::<TypeConfig>::Fatal);
    Json(res).into_response()
}
