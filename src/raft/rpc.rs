//! The Raft transport's server side: axum routes under `/raft/` that hand each RPC to the
//! local Raft and answer its `Result` as JSON. Over TLS, an RPC is refused unless the client
//! certificate names the node the RPC says it comes from (the leader or candidate in its vote):
//! one node's key cannot speak for another.

use crate::clock::Stopwatch;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use openraft::errors::RaftError;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::de::DeserializeOwned;

use super::network::{CLUSTER_HEADER, FORMAT_HEADER, TARGET_HEADER};
use super::state_machine::{SharedApplied, Snapshot};
use super::{NodeId, Raft, SnapshotMeta, TypeConfig, Vote};
use crate::server::Connection;
use crate::tls::CertIdentity;

/// When this node last accepted entries or a heartbeat from a leader: a follower's evidence
/// that a leader with a quorum exists.
#[derive(Clone, Default)]
pub struct LeaderContact(Arc<Mutex<Option<Stopwatch>>>);

impl LeaderContact {
    /// How long ago, if ever.
    pub fn heard_ago(&self) -> Option<std::time::Duration> {
        self.0.lock().expect("leader contact lock poisoned").map(|at| at.elapsed())
    }

    fn touch(&self) {
        *self.0.lock().expect("leader contact lock poisoned") = Some(Stopwatch::start());
    }
}

#[derive(Clone)]
struct Rpc {
    raft: Raft,
    id: NodeId,
    cluster: Arc<str>,
    contact: LeaderContact,
    /// For the ids removed from the cluster, whose RPCs are answered 410 Gone.
    applied: SharedApplied,
}

/// Snapshots can outgrow axum's 2 MiB default body limit on large deployments.
const MAX_RPC_BODY: usize = 64 << 20;

pub fn router(raft: Raft, id: NodeId, cluster: &str, contact: LeaderContact, applied: SharedApplied) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/pre-vote", post(pre_vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/transfer-leader", post(transfer_leader))
        .layer(DefaultBodyLimit::max(MAX_RPC_BODY))
        .layer(axum::middleware::map_response(advertise_format))
        .with_state(Rpc { raft, id, cluster: cluster.into(), contact, applied })
}

type Conn = Option<Extension<Connection>>;

/// Every answer says which log entries this node reads ([`FORMAT_HEADER`]).
async fn advertise_format(mut response: Response) -> Response {
    response.headers_mut().insert(FORMAT_HEADER, crate::state::LOG_FORMAT.into());
    response
}

/// Checks the cluster name, decodes the body, then, over TLS, that the certificate names the
/// node `sender` finds in the request. The name comes first: wiring two clusters together by a
/// wrong address must fail loudly as exactly that, not merge their logs.
fn admit<T: DeserializeOwned>(
    rpc: &Rpc,
    conn: Conn,
    headers: &HeaderMap,
    body: &[u8],
    sender: impl Fn(&T) -> NodeId,
) -> Result<T, (StatusCode, String)> {
    let req = decode(rpc, headers, body)?;
    let claimed = sender(&req);
    if rpc.applied.read().expect("state lock poisoned").state.retired_nodes.contains(&claimed) {
        // Ids are never reused: whoever speaks as this one is the removed node, still running.
        let told = format!("{} {claimed} (`witness members remove`): stop it", super::links::REMOVED);
        return Err((StatusCode::GONE, told));
    }
    let Some(Extension(conn)) = conn.filter(|Extension(c)| c.tls) else { return Ok(req) };
    match conn.cert {
        Some(CertIdentity::Node(id)) if claimed == id => Ok(req),
        other => {
            let presented = other.map_or("no certificate".to_string(), |c| c.to_string());
            tracing::warn!(%claimed, %presented, remote = %conn.remote, "Raft RPC refused: sender and certificate differ");
            Err((
                StatusCode::FORBIDDEN,
                format!("this RPC comes from node {claimed}, the certificate names {presented}"),
            ))
        }
    }
}

fn decode<T: DeserializeOwned>(rpc: &Rpc, headers: &HeaderMap, body: &[u8]) -> Result<T, (StatusCode, String)> {
    match headers.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) {
        Some(name) if name == &*rpc.cluster => {}
        other => {
            return Err((
                StatusCode::CONFLICT,
                format!("this node belongs to cluster {:?}, the request to {:?}", rpc.cluster, other.unwrap_or("")),
            ))
        }
    }
    // Absent from nodes that predate it: they are checked by cluster name and certificate only.
    if let Some(target) = headers.get(TARGET_HEADER) {
        if target.to_str().ok().and_then(|t| t.parse::<u64>().ok()) != Some(rpc.id.0) {
            let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "this is node {}, not node {target}: the address the sender has for node {target} is wrong",
                    rpc.id
                ),
            ));
        }
    }
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed Raft RPC body: {e}")))
}

fn voter(vote: &Vote) -> NodeId {
    vote.leader_id().node_id
}

async fn append(State(rpc): State<Rpc>, conn: Conn, headers: HeaderMap, body: Bytes) -> Response {
    let sender = |r: &AppendEntriesRequest<TypeConfig>| voter(&r.vote);
    let req = match admit(&rpc, conn, &headers, &body, sender) {
        Ok(req) => req,
        Err(refused) => return refused.into_response(),
    };
    let res = rpc.raft.append_entries(req).await;
    if res.as_ref().is_ok_and(|r| r.is_success()) {
        rpc.contact.touch();
    }
    Json(res).into_response()
}

async fn vote(State(rpc): State<Rpc>, conn: Conn, headers: HeaderMap, body: Bytes) -> Response {
    match admit(&rpc, conn, &headers, &body, |r: &VoteRequest<TypeConfig>| voter(&r.vote)) {
        Ok(req) => Json(rpc.raft.vote(req).await).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn pre_vote(State(rpc): State<Rpc>, conn: Conn, headers: HeaderMap, body: Bytes) -> Response {
    match admit(&rpc, conn, &headers, &body, |r: &VoteRequest<TypeConfig>| voter(&r.vote)) {
        Ok(req) => Json(rpc.raft.pre_vote(req).await).into_response(),
        Err(refused) => refused.into_response(),
    }
}

async fn snapshot(State(rpc): State<Rpc>, conn: Conn, headers: HeaderMap, body: Bytes) -> Response {
    match admit(&rpc, conn, &headers, &body, |r: &(Vote, SnapshotMeta, Vec<u8>)| voter(&r.0)) {
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

async fn transfer_leader(State(rpc): State<Rpc>, conn: Conn, headers: HeaderMap, body: Bytes) -> Response {
    match admit(&rpc, conn, &headers, &body, |r: &TransferLeaderRequest<TypeConfig>| voter(r.from_leader())) {
        Ok(req) => {
            let res = rpc.raft.handle_transfer_leader(req).await;
            Json(res.map_err(RaftError::<TypeConfig>::Fatal)).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}
