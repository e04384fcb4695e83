//! The one table from API errors to HTTP statuses. Every error body is
//! `{"error": "<message>", "code": "<machine-readable code>"}`.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::node::leader::NodeError;

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
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn from_json(rejection: JsonRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::TooLarge(format!("request body: {}", rejection.body_text()));
        }
        ApiError::BadRequest(format!("request body: {}", rejection.body_text()))
    }

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

#[derive(Serialize)]
struct ErrorBody {
    error: String,
    code: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
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
