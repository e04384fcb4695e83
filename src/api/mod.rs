//! The HTTP API (axum): health and readiness, Prometheus metrics, status, group and
//! membership operations, plus the node-to-node routes that are not Raft RPCs
//! (`/raft/leader` for forwarded writes, `/raft/bootstrap`). Errors map to HTTP statuses in
//! one place, [`error`].

mod error;

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use error::ApiError;

use crate::node::leader::{LeaderReply, LeaderRequest, NodeError};
use crate::node::Node;
use crate::raft::network::CLUSTER_HEADER;
use crate::state::{Command, Epoch, Response as StateResponse};

type AppState = State<Arc<Node>>;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/groups/{group}/activate", post(activate))
        .route("/v1/members", get(members).post(add_member))
        .route("/v1/members/{id}", delete(remove_member))
        .route("/raft/leader", post(leader))
        .route("/raft/bootstrap", get(bootstrap))
        .with_state(node)
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

async fn readyz(State(node): AppState) -> Response {
    match node.readiness() {
        Ok(()) => Json(Readiness { ready: true, reason: None }).into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { ready: false, reason: Some(reason) })).into_response()
        }
    }
}

async fn metrics(State(node): AppState) -> Response {
    node.metrics.observe_raft(&node.raft.metrics().borrow_watched());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics.render()).into_response()
}

async fn status(State(node): AppState) -> Json<crate::node::status::Status> {
    Json(node.status())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    site: String,
    expected_epoch: u64,
}

/// The epoch compare-and-set. Rejections are answers (409/404), not failures.
async fn activate(
    State(node): AppState,
    Path(group): Path<String>,
    body: Result<Json<ActivateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(ApiError::from_json)?;
    let command = Command::Activate { group, site: body.site, expected_epoch: Epoch(body.expected_epoch) };
    match node.submit(LeaderRequest::Write(command), false).await? {
        LeaderReply::Written { response, log_index } => Ok(written(response, log_index)),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

fn written(response: StateResponse, log_index: u64) -> Response {
    #[derive(Serialize)]
    struct Written {
        #[serde(flatten)]
        response: StateResponse,
        log_index: u64,
    }
    let status = match &response {
        StateResponse::Rejected(crate::state::Rejection::UnknownGroup { .. }) => StatusCode::NOT_FOUND,
        StateResponse::Rejected(_) => StatusCode::CONFLICT,
        _ => StatusCode::OK,
    };
    (status, Json(Written { response, log_index })).into_response()
}

async fn members(State(node): AppState) -> Json<Vec<crate::node::status::Member>> {
    Json(node.status().members)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    id: u64,
    addr: String,
}

async fn add_member(
    State(node): AppState,
    body: Result<Json<AddMemberBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<LeaderReply>, ApiError> {
    let Json(body) = body.map_err(ApiError::from_json)?;
    Ok(Json(node.submit(LeaderRequest::AddMember { id: body.id, addr: body.addr }, false).await?))
}

async fn remove_member(State(node): AppState, Path(id): Path<String>) -> Result<Json<LeaderReply>, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::BadRequest(format!("path parameter id: {id:?} is not a node id (a positive integer)"))
    })?;
    Ok(Json(node.submit(LeaderRequest::RemoveMember { id }, false).await?))
}

/// A request forwarded by another node: run it here only, never forward again.
async fn leader(State(node): AppState, headers: HeaderMap, Json(req): Json<LeaderRequest>) -> Response {
    if let Err(e) = check_cluster(&node, &headers) {
        return e.into_response();
    }
    let result: Result<LeaderReply, NodeError> = node.submit(req, true).await;
    Json(result).into_response()
}

async fn bootstrap(State(node): AppState) -> Json<crate::node::BootstrapInfo> {
    Json(node.bootstrap_info())
}

fn check_cluster(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    let theirs = headers.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if theirs == node.config.cluster.name {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "this node belongs to cluster {:?}, the request to {theirs:?}",
            node.config.cluster.name
        )))
    }
}
