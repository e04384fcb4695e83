//! The one table from API answers to HTTP statuses: errors (every error body is
//! `{"error": "<message>", "code": "<machine-readable code>"}`, the heartbeat's `not_leader`
//! adding where the leader is), and the statuses of writes and operator failovers that were
//! answered but did not take effect. (The health endpoints' 503 is their meaning, not an error.)

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::node::leader::{FailoverOutcome, NodeError};
use crate::protocol::NotLeader;
use crate::raft::NodeId;
use crate::state::{Rejection, Response as StateResponse};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// No valid credentials: 401, with a `WWW-Authenticate: Bearer` challenge.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials whose role does not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// This credential's rate limit is spent; retry after the given seconds.
    #[error("{0}")]
    RateLimited(String, u64),
    /// The client took too long to send its request.
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A heartbeat sent to a node that does not lead: 421, saying who does.
    #[error("{message}")]
    NotLeader { message: String, leader_id: NodeId, leader_addr: String },
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited(..) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::NotLeader { .. } => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
            ApiError::Node(e) => match e {
                NodeError::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
                NodeError::LeaderMoved { .. } => (StatusCode::SERVICE_UNAVAILABLE, "leader_moved"),
                NodeError::LeaderUnreachable { .. } => (StatusCode::BAD_GATEWAY, "leader_unreachable"),
                NodeError::OutcomeUnknown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
                NodeError::Rejected(_) => (StatusCode::CONFLICT, "rejected"),
                NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
                NodeError::Fatal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "fatal"),
            },
        }
    }
}

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, for people: it names the field, file or object at fault.
    error: String,
    /// What went wrong, for programs: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `rejected`, `timeout`, `too_large`, `rate_limited`, `no_leader`,
    /// `leader_moved`, `leader_unreachable`, `outcome_unknown`, `not_leader`, `fatal`, `internal`.
    #[schema(value_type = String)]
    code: &'static str,
}

/// A committed write that did not take effect (a `Rejection`) is a conflict, or not found.
pub fn written_status(response: &StateResponse) -> StatusCode {
    match response {
        StateResponse::Rejected(Rejection::UnknownGroup { .. }) => StatusCode::NOT_FOUND,
        StateResponse::Rejected(_) => StatusCode::CONFLICT,
        _ => StatusCode::OK,
    }
}

/// An operator's failover refused by its checks or beaten by the epoch compare-and-set is a
/// conflict.
pub fn failover_status(outcome: &FailoverOutcome) -> StatusCode {
    match outcome {
        FailoverOutcome::Refused | FailoverOutcome::Rejected { .. } => StatusCode::CONFLICT,
        FailoverOutcome::DryRun { .. } | FailoverOutcome::FailedOver { .. } | FailoverOutcome::DrillStarted { .. } => {
            StatusCode::OK
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::NotLeader { message, leader_id, leader_addr } = self {
            let body = NotLeader { error: message, code: code.to_string(), leader_id, leader_addr };
            return (status, Json(body)).into_response();
        }
        let mut response = (status, Json(ErrorBody { error: self.to_string(), code })).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited(_, seconds) => {
                headers.insert(axum::http::header::RETRY_AFTER, seconds.into());
            }
            _ => {}
        }
        response
    }
}
