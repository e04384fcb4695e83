//! The Raft transport's server side: axum routes under `/raft/` that hand each RPC to the
//! local Raft and answer its `Result` as JSON.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::errors::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::de::DeserializeOwned;

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
        .with_state(Rpc { raft, cluster: cluster.into(), contact })
}

/// Checks the cluster name, then decodes the body. The name comes first: wiring two clusters
/// together by a wrong address must fail loudly as exactly that, not merge their logs.
fn admit<T: DeserializeOwned>(rpc: &Rpc, headers: &HeaderMap, body: &[u8]) -> Result<T, (StatusCode, String)> {
    match headers.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) {
        Some(name) if name == &*rpc.cluster => {}
        other => {
            return Err((
                StatusCode::CONFLICT,
                format!("this node belongs to cluster {:?}, the request to {:?}", rpc.cluster, other.unwrap_or("")),
            ))
        }
    }
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed Raft RPC body: {e}")))
}

async fn append(State(rpc): State<Rpc>, headers: HeaderMap, body: Bytes) -> Response {
    let req: AppendEntriesRequest<TypeConfig> = match admit(&rpc, &headers, &body) {
        Ok(req) => req,
        Err(refused) => return refused.into_response(),
    };
    let res = rpc.raft.append_entries(req).await;
    if res.as_ref().is_ok_and(|r| r.is_success()) {
        rpc.contact.touch();
    }
    Json(res).into_response()
}

async fn vote(State(rpc): State<Rpc>, headers: HeaderMap, body: Bytes) -> Response {
    match admit::<VoteRequest<TypeConfig>>(&rpc, &headers, &body) {
        Ok(req) => Json(rpc.raft.vote(req).await).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn pre_vote(State(rpc): State<Rpc>, headers: HeaderMap, body: Bytes) -> Response {
    match admit::<VoteRequest<TypeConfig>>(&rpc, &headers, &body) {
        Ok(req) => Json(rpc.raft.pre_vote(req).await).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn snapshot(State(rpc): State<Rpc>, headers: HeaderMap, body: Bytes) -> Response {
    match admit::<(Vote, SnapshotMeta, Vec<u8>)>(&rpc, &headers, &body) {
        Ok((vote, meta, data)) => {
            // Refused here as a bad request (the leader retries) rather than failing the install,
            // which would stop this node: e.g. a newer snapshot format during a rolling upgrade.
            if let Err(e) = super::state_machine::verify_received(&meta, &data) {
                return (StatusCode::BAD_REQUEST, format!("snapshot refused: {e}")).into_response();
            }
            let res = rpc.raft.install_full_snapshot(vote, Snapshot { meta, snapshot: data }).await;
            Json(res.map_err(RaftError::<TypeConfig>::Fatal)).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

async fn transfer_leader(State(rpc): State<Rpc>, headers: HeaderMap, body: Bytes) -> Response {
    match admit::<TransferLeaderRequest<TypeConfig>>(&rpc, &headers, &body) {
        Ok(req) => {
            let res = rpc.raft.handle_transfer_leader(req).await;
            Json(res.map_err(RaftError::<TypeConfig>::Fatal)).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}
