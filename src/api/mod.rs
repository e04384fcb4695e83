//! The HTTP API (axum): health and readiness, Prometheus metrics, status; operator controls
//! (failover, failback, pause, resume, ack, plan retry/skip/check, the automation switch); the
//! active-site health
//! endpoint; the decision journal (paged and as Server-Sent Events); membership; plus the
//! node-to-node routes that are not Raft RPCs (`/raft/leader` for forwarded requests,
//! `/raft/bootstrap`). Who may call what is decided in [`auth`], per group of routes here.
//! Errors map to HTTP statuses in one place, [`error`].

pub mod auth;
mod body;
mod document;
mod error;

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use document::document;
pub use error::ApiError;

use crate::config::auth::Role;
use crate::config::check_name;
use auth::{Caller, Needs};
use body::{Body, OptionalBody};

use crate::node::leader::{FailoverOrder, FailoverReply, Forwarded, LeaderReply, LeaderRequest, NodeError};
use crate::node::planning::PlanCheck;
use crate::node::Node;
use crate::protocol::{Heartbeat, HeartbeatAnswer, NotLeader};
use crate::raft::network::CLUSTER_HEADER;
use crate::state::journal::Event;
use crate::state::{Command, Epoch, Response as StateResponse, SiteId};
use document::{LeaderErrors, OrderAnswers, WriteAnswers};
use error::ErrorBody;

type AppState = State<Arc<Node>>;

/// The API's routes in groups, each with what its callers need: the router puts each group
/// behind its guard (none: credentials are not even read), and the OpenAPI document
/// ([`document`]) states the same on each operation. Routes added with `route` rather than
/// `routes!` are node-to-node and left out of the document.
fn routes() -> Vec<(Option<Needs>, OpenApiRouter<Arc<Node>>)> {
    // Liveness, readiness and the active-site check reveal only up/down and must work for
    // DNS health checkers and load balancers, which carry no credentials.
    let open = OpenApiRouter::new()
        .routes(routes!(dashboard))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi))
        .routes(routes!(site_active));
    let whoami = OpenApiRouter::new().routes(routes!(whoami));
    let metrics = OpenApiRouter::new().routes(routes!(metrics));
    let viewer = OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(events))
        .routes(routes!(events_stream))
        .routes(routes!(members))
        .routes(routes!(drills));
    let operator = OpenApiRouter::new()
        .routes(routes!(failover))
        .routes(routes!(failback))
        .routes(routes!(drill))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(ack))
        .routes(routes!(plan_retry))
        .routes(routes!(plan_skip))
        .routes(routes!(plan_reconcile))
        .routes(routes!(plan_check))
        .routes(routes!(automation));
    let admin = OpenApiRouter::new().routes(routes!(add_member)).routes(routes!(remove_member));
    let site = OpenApiRouter::new().routes(routes!(heartbeat));
    let peer = OpenApiRouter::new().route("/raft/leader", post(leader)).route("/raft/bootstrap", get(bootstrap));
    vec![
        (None, open),
        (Some(Needs::Open), whoami),
        (Some(Needs::Metrics), metrics),
        (Some(Needs::Role(Role::Viewer)), viewer),
        (Some(Needs::Role(Role::Operator)), operator),
        (Some(Needs::Role(Role::Admin)), admin),
        (Some(Needs::SiteInPath), site),
        (Some(Needs::Peer), peer),
    ]
}

pub fn router(node: Arc<Node>) -> Router {
    let mut app = OpenApiRouter::new();
    for (needs, routes) in routes() {
        app = app.merge(match needs {
            None => routes,
            Some(needs) => routes.route_layer(middleware::from_fn_with_state((node.clone(), needs), auth::guard)),
        });
    }
    let (app, _) = app.split_for_parts();
    app.route_layer(middleware::from_fn(check_path_names)).layer(middleware::from_fn(read_body)).with_state(node)
}

/// No API request but a heartbeat needs more; anything bigger is refused with 413. The Raft
/// routes (snapshots) have their own router.
const BODY_LIMIT: usize = 64 * 1024;

/// A heartbeat carries a report per group of its site: about 70 bytes each, so 1 MiB holds a
/// site of some 15,000 groups.
const HEARTBEAT_BODY_LIMIT: usize = 1 << 20;

/// How large the body of a request to `path` (as sent, or as the API document writes it) may be.
fn body_limit(path: &str) -> usize {
    if path.starts_with("/v1/sites/") && path.ends_with("/heartbeat") {
        HEARTBEAT_BODY_LIMIT
    } else {
        BODY_LIMIT
    }
}

/// A body declared larger than its limit is still read (and dropped) up to this size, so that
/// the client sees the 413 rather than a reset while it is still sending.
const DRAIN_LIMIT: u64 = 2 << 20;

/// How long a client may take to send its request body once the headers are in.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the whole body before any handler runs, within [`body_limit`] and [`BODY_TIMEOUT`]:
/// a client trickling its body holds only its own connection, never a handler (or a lock a
/// handler takes), and a declared oversize body is refused before any handler sees it.
async fn read_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let limit = body_limit(parts.uri.path());
    let too_large = || ApiError::TooLarge(format!("request body: larger than the {} KiB limit", limit / 1024));
    if let Some(declared) = declared.filter(|n| *n > limit as u64) {
        // A client still sending when the answer comes sees a broken pipe, not the 413: a
        // body up to DRAIN_LIMIT is read and dropped first; a larger one is refused unread.
        if declared <= DRAIN_LIMIT {
            let _ = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, DRAIN_LIMIT as usize)).await;
        }
        return too_large().into_response();
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        // Over the limit, or the client went away (then nobody reads this answer).
        Ok(Err(_)) => return too_large().into_response(),
        Err(_) => {
            let secs = BODY_TIMEOUT.as_secs();
            return ApiError::Timeout(format!("request body: not received within {secs} s")).into_response();
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Group and site names in a path are names from the config (see [`check_name`]): anything
/// else cannot name one, and is refused before authorization, a handler or a log line sees it.
async fn check_path_names(req: Request, next: Next) -> Response {
    use axum::extract::{FromRequestParts, RawPathParams};
    let (mut parts, body) = req.into_parts();
    match RawPathParams::from_request_parts(&mut parts, &()).await {
        Err(_) => return ApiError::BadRequest("path: not valid UTF-8 once percent-decoded".into()).into_response(),
        Ok(params) => {
            for (key, value) in params.iter() {
                if matches!(key, "group" | "site") && check_name(value).is_err() {
                    return ApiError::from(NodeError::NotFound(format!("no {key} is named {value:?}"))).into_response();
                }
            }
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses a write that names a group the committed state does not have, before it reaches the
/// log: only real names are ever journaled.
fn check_known(node: &Node, command: &Command) -> Result<(), ApiError> {
    let group = match command {
        Command::SetPaused { group, .. } | Command::Ack { group, .. } | Command::ResolvePlan { group, .. } => group,
        _ => return Ok(()),
    };
    let applied = node.applied.read().expect("state lock poisoned");
    match applied.state.groups.contains_key(group) {
        true => Ok(()),
        false => Err(NodeError::NotFound(format!("unknown group {group:?}")).into()),
    }
}

/// A group named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct GroupPath {
    /// A group's name, as configured (`[[group]] name`).
    group: String,
}

/// A site of a group, named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct GroupSitePath {
    /// A group's name, as configured (`[[group]] name`).
    group: String,
    /// One of the group's two sites.
    site: String,
}

/// A site named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct SitePath {
    /// A site's name, as configured (`[[site]] name`).
    site: String,
}

/// A member named in the path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct MemberPath {
    /// The node's id (`node.id`).
    #[param(value_type = u64)]
    id: String,
}

#[derive(Serialize, ToSchema)]
struct WhoAmI {
    /// `token:NAME`, `cert:NAME` or `anonymous`.
    caller: String,
    /// The role the caller acts with; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// Who this node takes the caller for, and with what role: the dashboard shows operator
/// buttons only when the role allows them.
#[utoipa::path(get, path = "/v1/whoami", tag = "status", responses((status = 200, body = WhoAmI)))]
async fn whoami(State(node): AppState, Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    let role = caller.role(&node.auth()).map(|r| r.to_string());
    Json(WhoAmI { caller: caller.audit_name(), role })
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "Serving.", body = String, content_type = "text/plain", example = "ok\n"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Readiness: this node has a leader with a quorum and has applied what is committed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "Not ready, and why.", body = Readiness),
    )
)]
async fn readyz(State(node): AppState) -> Response {
    match node.readiness() {
        Ok(()) => Json(Readiness { ready: true, reason: None }).into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { ready: false, reason: Some(reason) })).into_response()
        }
    }
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"))
)]
async fn metrics(State(node): AppState) -> Response {
    // Gauges are brought up to date when scraped, not on every commit.
    node.metrics.observe_raft(&node.raft.metrics().borrow_watched());
    {
        let state = &node.applied.read().expect("state lock poisoned").state;
        node.metrics.observe_state(state);
        node.metrics.config_matches_cluster.set(i64::from(state.matches_topology(&node.topology)));
    }
    node.observe_leader_view();
    node.metrics.observe_links(&node.links.view());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics.render()).into_response()
}

/// The cluster as this node has it: Raft, members, sites, verdicts, groups (with agents and
/// leases on the leader).
#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, body = crate::node::status::Status)))]
async fn status(State(node): AppState) -> Json<crate::node::status::Status> {
    Json(node.status_with_leader_view().await)
}

/// A committed write's answer: the state's response (`outcome`) and the log index.
#[derive(Serialize, ToSchema)]
pub struct Written {
    #[serde(flatten)]
    response: StateResponse,
    log_index: u64,
}

fn written(response: StateResponse, log_index: u64) -> Response {
    (error::written_status(&response), Json(Written { response, log_index })).into_response()
}

/// The witness nodes, voters and learners.
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "members",
    responses((status = 200, body = Vec<crate::node::status::Member>))
)]
async fn members(State(node): AppState) -> Json<Vec<crate::node::status::Member>> {
    Json(node.status().members)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AddMemberBody {
    /// A new node id (ids are never reused).
    id: u64,
    /// Where the other nodes reach it, `HOST:PORT`.
    addr: String,
}

/// Adds a node: as a learner until it has caught up, then as a voter. A node that does not
/// catch up is taken out again (409).
#[utoipa::path(
    post,
    path = "/v1/members",
    tag = "members",
    request_body = AddMemberBody,
    responses(
        (status = 200, description = "The membership now.", body = LeaderReply),
        (status = 409, description = "Refused: the message says why (`rejected`).", body = ErrorBody),
        LeaderErrors,
    )
)]
async fn add_member(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Body(body): Body<AddMemberBody>,
) -> Result<Json<LeaderReply>, ApiError> {
    let request = LeaderRequest::AddMember { id: body.id.into(), addr: body.addr };
    Ok(Json(node.submit_by(request, Some(caller.audit_name()), false).await?))
}

/// Removes a node for good: its id is retired and never reused.
#[utoipa::path(
    delete,
    path = "/v1/members/{id}",
    tag = "members",
    params(MemberPath),
    responses(
        (status = 200, description = "The membership now.", body = LeaderReply),
        (status = 409, description = "Refused: not a member, or the last voter (`rejected`).", body = ErrorBody),
        LeaderErrors,
    )
)]
async fn remove_member(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(MemberPath { id }): Path<MemberPath>,
) -> Result<Json<LeaderReply>, ApiError> {
    let id = int64_text(&id).ok_or_else(|| {
        ApiError::BadRequest(format!("path parameter id: {id:?} is not a node id (an integer from 0 to 2^63 - 1)"))
    })?;
    Ok(Json(node.submit_by(LeaderRequest::RemoveMember { id: id.into() }, Some(caller.audit_name()), false).await?))
}

/// A request forwarded by another node: run it here only, never forward again.
async fn leader(State(node): AppState, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(e) = check_cluster(&node, &headers) {
        return e.into_response();
    }
    let Forwarded { request, by } = match serde_json::from_slice(&body) {
        Ok(forwarded) => forwarded,
        Err(e) => return ApiError::BadRequest(format!("forwarded request: {e}")).into_response(),
    };
    let result: Result<LeaderReply, NodeError> = node.submit_by(request, by, true).await;
    Json(result).into_response()
}

/// The dashboard: one page with its script and style inline (no CDN), reading the API.
#[utoipa::path(
    get,
    path = "/",
    tag = "status",
    responses((status = 200, description = "The dashboard page.", body = String, content_type = "text/html"))
)]
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// This document: the API as OpenAPI 3.1, generated from the handlers and types.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "status",
    responses((status = 200, description = "The OpenAPI document.", body = Object))
)]
async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
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

/// An operator's failover.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    /// The site to make active.
    to: String,
    /// Why, for the journal.
    #[serde(default)]
    reason: String,
    /// Check only: change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Fail over even when a check fails (the active site not seen down, the target not seen
    /// up, a recent failover not acknowledged).
    #[serde(default)]
    force: bool,
    /// A dry run that also checks every plan step's reachability and credentials.
    #[serde(default)]
    check: bool,
}

/// An operator's failback: a failover to the group's primary.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FailbackBody {
    /// Why, for the journal.
    #[serde(default)]
    reason: String,
    /// Check only: change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Fail back even when a check fails.
    #[serde(default)]
    force: bool,
    /// A dry run that also checks every plan step's reachability and credentials.
    #[serde(default)]
    check: bool,
}

/// An operator failover's answer: its checks and outcome, and with `check` the plan's check.
#[derive(Serialize, ToSchema)]
pub struct FailoverAnswer {
    failover: FailoverReply,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_check: Option<PlanCheck>,
}

/// Makes `to` the group's active site, checked against the evidence on the leader: done, or
/// for a dry run what would happen (200); refused by a check unless forced, or beaten by a
/// concurrent change (409). A forced failover blocks automatic failover until acknowledged.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/failover",
    tag = "control",
    params(GroupPath),
    request_body = FailoverBody,
    responses(OrderAnswers)
)]
async fn failover(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(GroupPath { group }): Path<GroupPath>,
    Body(b): Body<FailoverBody>,
) -> ApiResult {
    let dry_run = b.dry_run || b.check;
    let order = FailoverOrder {
        group: group.into(),
        to: Some(b.to.into()),
        reason: b.reason,
        dry_run,
        force: b.force,
        drill: None,
    };
    order_failover(&node, &caller, order, b.check).await
}

/// A failover back to the group's primary. The engine never does this on its own while the
/// secondary is healthy: a returning primary stays standby until an operator fails back.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/failback",
    tag = "control",
    params(GroupPath),
    request_body = FailbackBody,
    responses(OrderAnswers)
)]
async fn failback(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(GroupPath { group }): Path<GroupPath>,
    Body(b): Body<FailbackBody>,
) -> ApiResult {
    let dry_run = b.dry_run || b.check;
    let order = FailoverOrder { group: group.into(), to: None, reason: b.reason, dry_run, force: b.force, drill: None };
    order_failover(&node, &caller, order, b.check).await
}

/// A DR drill: a switchover to the group's other site while both are up.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DrillBody {
    /// Return to the site the drill started from, this long (ms, at most 30 days) after the
    /// first leg is done; leave it out for a one-way drill.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2_592_000_000_u64)]
    back_after_ms: Option<u64>,
    /// Why, for the journal and the report (a change ticket, say).
    #[serde(default)]
    reason: String,
    /// Check the preconditions only: change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Starts a DR drill: after its preconditions (both sites up, the survivor within its RPO
/// objective, the plan ready at its last scheduled check, not blocked nor paused, nothing under
/// way), the group switches to its other site under the normal lease protocol and plan, and
/// with `back_after_ms` returns after that hold. The leader drives it to its end; the report
/// is at `GET /v1/groups/{group}/drills`. Started, or the dry run's verdict (200); refused by
/// a precondition, which `failover.plan.checks` names (409).
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/drill",
    tag = "control",
    params(GroupPath),
    request_body = DrillBody,
    responses(OrderAnswers)
)]
async fn drill(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(GroupPath { group }): Path<GroupPath>,
    Body(b): Body<DrillBody>,
) -> ApiResult {
    let hold_ms = b.back_after_ms.unwrap_or(0);
    if hold_ms > crate::config::duration::MAX.as_millis() as u64 {
        return Err(ApiError::BadRequest("back_after_ms: at most 30 days (2592000000)".into()));
    }
    let request =
        crate::leader::DrillRequest { hold_ms, back: b.back_after_ms.is_some(), by: None, requested_at_ms: 0 };
    let order = FailoverOrder {
        group: group.into(),
        to: None,
        reason: b.reason,
        dry_run: b.dry_run,
        force: false,
        drill: Some(request),
    };
    order_failover(&node, &caller, order, false).await
}

/// A group's drills: the one under way, if any, and the last ten finished, newest first.
#[derive(Serialize, ToSchema)]
pub struct Drills {
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<crate::state::drill::DrillReport>,
    finished: Vec<crate::state::drill::DrillReport>,
}

/// A group's drill reports: every phase of every leg timed, against the group's RTO budget
/// and objective, and what failed.
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/drills",
    tag = "status",
    params(GroupPath),
    responses((status = 200, body = Drills), (status = 404, description = "No such group.", body = ErrorBody))
)]
async fn drills(State(node): AppState, Path(GroupPath { group }): Path<GroupPath>) -> ApiResult {
    let applied = node.applied.read().expect("state lock poisoned");
    let state = &applied.state;
    let g = state.groups.get(group.as_str()).ok_or_else(|| NodeError::NotFound(format!("unknown group {group:?}")))?;
    let finished =
        state.drills.get(group.as_str()).map_or_else(Vec::new, |d| d.iter().rev().map(|d| d.report()).collect());
    Ok(Json(Drills { running: g.drill.as_ref().map(|d| d.report()), finished }).into_response())
}

/// A 409 of a failover: its checks and outcome, or the leader's refusal. Documentation only.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum FailoverRefused {
    Refused(Box<FailoverAnswer>),
    Error(ErrorBody),
}

async fn order_failover(node: &Node, caller: &Caller, order: FailoverOrder, check: bool) -> ApiResult {
    let group = order.group.clone();
    let failover = match node.submit_by(LeaderRequest::Failover(order), Some(caller.audit_name()), false).await? {
        LeaderReply::Failover(reply) => reply,
        other => return Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    };
    let plan_check = if check { Some(node.check_plan(&group).await?) } else { None };
    Ok((error::failover_status(&failover.outcome), Json(FailoverAnswer { failover, plan_check })).into_response())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    /// The epoch of the plan meant; by default the one this node has for the group.
    epoch: Option<u64>,
}

type Operator = Extension<Caller>;

/// Runs the stuck step of the group's plan again.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/plan/retry",
    tag = "plan",
    params(GroupPath),
    request_body(content = Option<PlanBody>, description = "Optional: leave the body out for the plan this node has."),
    responses(WriteAnswers)
)]
async fn plan_retry(
    State(node): AppState,
    caller: Operator,
    Path(GroupPath { group }): Path<GroupPath>,
    OptionalBody(body): OptionalBody<PlanBody>,
) -> ApiResult {
    resolve_plan(&node, &caller, group, body, false).await
}

/// Moves the group's plan past its stuck step, leaving it undone.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/plan/skip",
    tag = "plan",
    params(GroupPath),
    request_body(content = Option<PlanBody>, description = "Optional: leave the body out for the plan this node has."),
    responses(WriteAnswers)
)]
async fn plan_skip(
    State(node): AppState,
    caller: Operator,
    Path(GroupPath { group }): Path<GroupPath>,
    OptionalBody(body): OptionalBody<PlanBody>,
) -> ApiResult {
    resolve_plan(&node, &caller, group, body, true).await
}

/// Runs a stuck plan's step again, or moves past it: only for the plan the sender has seen.
async fn resolve_plan(node: &Node, caller: &Caller, group: String, body: Option<PlanBody>, skip: bool) -> ApiResult {
    let epoch = plan_epoch(node, &group, body.unwrap_or_default().epoch)?;
    write(node, caller, Command::ResolvePlan { group: group.into(), epoch, skip }).await
}

/// The epoch of the plan a request means: the one it gives, or the one this node has. An
/// unknown group is a 404 with the error shape either way.
fn plan_epoch(node: &Node, group: &str, given: Option<u64>) -> Result<Epoch, ApiError> {
    let applied = node.applied.read().expect("state lock poisoned");
    let g = applied.state.groups.get(group).ok_or_else(|| NodeError::NotFound(format!("unknown group {group:?}")))?;
    Ok(given.map_or_else(|| g.plan.as_ref().map_or(g.epoch, |p| p.epoch), Epoch))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    /// The epoch of the plan meant; by default the one this node has for the group.
    epoch: Option<u64>,
    /// The one step to run again; by default every step.
    step: Option<String>,
}

/// Runs the steps of the group's done plan again, for the same epoch: repairs drift (a target
/// changed outside the plan). Fenced by the epoch like the plan's first run.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/plan/reconcile",
    tag = "plan",
    params(GroupPath),
    request_body(content = Option<ReconcileBody>, description = "Optional: the step, and the plan's epoch."),
    responses(WriteAnswers)
)]
async fn plan_reconcile(
    State(node): AppState,
    caller: Operator,
    Path(GroupPath { group }): Path<GroupPath>,
    OptionalBody(body): OptionalBody<ReconcileBody>,
) -> ApiResult {
    let ReconcileBody { epoch, step } = body.unwrap_or_default();
    let epoch = plan_epoch(&node, &group, epoch)?;
    write(&node, &caller, Command::ReconcilePlan { group: group.into(), epoch, step, automatic: false }).await
}

/// Checks every step of the group's plan from this node (reachability, credentials), changing
/// nothing.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/plan/check",
    tag = "plan",
    params(GroupPath),
    responses((status = 200, description = "Each step's check.", body = PlanCheck))
)]
async fn plan_check(State(node): AppState, Path(GroupPath { group }): Path<GroupPath>) -> ApiResult {
    Ok(Json(node.check_plan(&group).await?).into_response())
}

/// Stops automatic failover of the group (operator orders still work).
#[utoipa::path(post, path = "/v1/groups/{group}/pause", tag = "control", params(GroupPath), responses(WriteAnswers))]
async fn pause(State(node): AppState, caller: Operator, Path(GroupPath { group }): Path<GroupPath>) -> ApiResult {
    write(&node, &caller, Command::SetPaused { group: group.into(), paused: true }).await
}

/// Lets automatic failover of the group run again.
#[utoipa::path(post, path = "/v1/groups/{group}/resume", tag = "control", params(GroupPath), responses(WriteAnswers))]
async fn resume(State(node): AppState, caller: Operator, Path(GroupPath { group }): Path<GroupPath>) -> ApiResult {
    write(&node, &caller, Command::SetPaused { group: group.into(), paused: false }).await
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// The epoch of the failover being acknowledged; by default the group's current epoch as
    /// this node has it, so an acknowledgement never lifts the block of a failover its sender
    /// has not seen.
    epoch: Option<u64>,
}

type ApiResult = Result<Response, ApiError>;

/// Acknowledges the group's latest failover, lifting the block it put on automatic failover.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/ack",
    tag = "control",
    params(GroupPath),
    request_body(content = Option<AckBody>, description = "Optional: leave the body out for the epoch this node has."),
    responses(WriteAnswers)
)]
async fn ack(
    State(node): AppState,
    caller: Operator,
    Path(GroupPath { group }): Path<GroupPath>,
    OptionalBody(body): OptionalBody<AckBody>,
) -> ApiResult {
    let b = body.unwrap_or_default();
    let expected_epoch = match b.epoch {
        Some(e) => Epoch(e),
        None => {
            let applied = node.applied.read().expect("state lock poisoned");
            let g = applied
                .state
                .groups
                .get(&group)
                .ok_or_else(|| NodeError::NotFound(format!("unknown group {group:?}")))?;
            g.epoch
        }
    };
    write(&node, &caller, Command::Ack { group: group.into(), expected_epoch }).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AutomationBody {
    /// False: no automatic failover of any group; operator orders still work.
    enabled: bool,
}

/// The cluster-wide switch for automatic failover.
#[utoipa::path(
    post,
    path = "/v1/automation",
    tag = "control",
    request_body = AutomationBody,
    responses(WriteAnswers)
)]
async fn automation(State(node): AppState, caller: Operator, Body(b): Body<AutomationBody>) -> ApiResult {
    write(&node, &caller, Command::SetAutomation { enabled: b.enabled }).await
}

async fn write(node: &Node, caller: &Caller, command: Command) -> ApiResult {
    check_known(node, &command)?;
    match node.submit_by(LeaderRequest::Write(command), Some(caller.audit_name()), false).await? {
        LeaderReply::Written { response, log_index } => Ok(written(response, log_index)),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

/// A site agent's heartbeat: its reports, answered with the leases it may hold. Only the
/// leader answers: another node says who leads (421, with `leader_id` and `leader_addr` when
/// known) so the agent can go there directly.
#[utoipa::path(
    post,
    path = "/v1/sites/{site}/heartbeat",
    tag = "agents",
    params(SitePath),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "The leases granted.", body = HeartbeatAnswer),
        (status = 421, description = "This node does not lead; the body says who does.", body = NotLeader),
        LeaderErrors,
    )
)]
async fn heartbeat(
    State(node): AppState,
    Path(SitePath { site }): Path<SitePath>,
    Body(heartbeat): Body<Heartbeat>,
) -> Response {
    match node.heartbeat(&site, &heartbeat).await {
        Ok(answer) => Json(answer).into_response(),
        Err(NodeError::LeaderMoved { id, addr }) => {
            let message = format!("node {} does not lead: node {id} at {addr} does; send heartbeats there", node.id);
            ApiError::NotLeader { message, leader_id: id, leader_addr: addr }.into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Serialize, ToSchema)]
struct SiteActive {
    group: String,
    site: String,
    active: bool,
    active_site: SiteId,
    epoch: Epoch,
    /// False when this node cannot vouch for being current (no leader with a quorum, or not
    /// caught up): the answer is then the last committed state it knows, unchanged.
    current: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// For DNS health checks and load balancers: 200 when `site` is the group's active site in the
/// latest committed state this node has (and, for a group with agents, promoted), 503
/// otherwise. It never flips without a committed decision; a node that cannot vouch for being
/// current says so (`witness-current: false`).
#[utoipa::path(
    get,
    path = "/v1/groups/{group}/sites/{site}/active",
    tag = "health",
    params(GroupSitePath),
    responses(
        (status = 200, description = "The site is active.", body = SiteActive,
         headers(("witness-current" = String, description = "`true`, or `false` when this node cannot vouch for being current."))),
        (status = 503, description = "The site is not active (or the group is draining).", body = SiteActive,
         headers(("witness-current" = String, description = "`true`, or `false` when this node cannot vouch for being current."))),
    )
)]
async fn site_active(
    State(node): AppState,
    Path(GroupSitePath { group, site }): Path<GroupSitePath>,
) -> Result<Response, ApiError> {
    let (active_site, epoch, draining) = {
        let applied = node.applied.read().expect("state lock poisoned");
        let g =
            applied.state.groups.get(&group).ok_or_else(|| NodeError::NotFound(format!("unknown group {group:?}")))?;
        if site != g.spec.primary && site != g.spec.secondary {
            return Err(NodeError::NotFound(format!("site {site:?} is not a site of group {group:?}")).into());
        }
        (g.active.clone(), g.epoch, g.draining)
    };
    let readiness = node.readiness();
    // A draining group has no writable site yet: neither is healthy until the promotion.
    let active = site == active_site && !draining;
    let body =
        SiteActive { group, active, active_site, epoch, current: readiness.is_ok(), reason: readiness.err(), site };
    let status = if active { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let current = if body.current { "true" } else { "false" };
    Ok((status, [("witness-current", current)], Json(body)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Events numbered above this.
    #[serde(default)]
    since: u64,
    /// At most this many (at most 1000 are sent, and at least 1).
    limit: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct EventsPage {
    events: Vec<Event>,
    /// Pass as `since` to get what follows.
    last_seq: u64,
}

const MAX_PAGE: usize = 1000;

/// Journal events numbered above `since`, oldest first.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "journal",
    params(EventsQuery),
    responses((status = 200, body = EventsPage))
)]
async fn events(State(node): AppState, query: QueryOf<EventsQuery>) -> Result<Json<EventsPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    int64("since", q.since)?;
    let limit = int64("limit", q.limit.unwrap_or(MAX_PAGE as u64))?.clamp(1, MAX_PAGE as u64) as usize;
    let journal = &node.applied.read().expect("state lock poisoned").state.journal;
    let events = journal.since(q.since, limit);
    let last_seq = events.last().map_or(q.since, |e| e.seq);
    Ok(Json(EventsPage { events, last_seq }))
}

type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// An integer from 0 to 2^63 - 1 (the document's `int64`, at least 0) written as text.
fn int64_text(text: &str) -> Option<u64> {
    text.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok())
}

/// A query integer within the `int64` range the document gives it.
fn int64(name: &str, value: u64) -> Result<u64, ApiError> {
    match i64::try_from(value) {
        Ok(_) => Ok(value),
        Err(_) => {
            Err(ApiError::BadRequest(format!("query: {name}: {value} is larger than the largest taken, 2^63 - 1")))
        }
    }
}

/// The journal as Server-Sent Events: what is retained above `since` (or the `Last-Event-ID`
/// a reconnecting client sends), then every new event as it commits, without end. Each
/// event is named `journal`, its `id` is its sequence number, and its `data` one `Event`
/// (schema `Event`) as JSON; comments keep the connection alive.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "journal",
    params(
        ("since" = Option<u64>, Query, nullable = false, description = "Events numbered above this."),
        ("Last-Event-ID" = Option<u64>, Header, nullable = false,
         description = "Sent by a reconnecting client, the last event's `id`: takes the place of `since`."),
    ),
    responses((status = 200, description = "A stream of `journal` messages, each carrying one `Event` as JSON.",
               body = document::JournalMessage, content_type = "text/event-stream"))
)]
async fn events_stream(
    State(node): AppState,
    headers: HeaderMap,
    query: QueryOf<StreamQuery>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    int64("since", q.since)?;
    let since = match headers.get("last-event-id") {
        None => q.since,
        // What this stream sent as an event's id, so nothing else is taken.
        Some(v) => v.to_str().ok().and_then(int64_text).ok_or_else(|| {
            ApiError::BadRequest(format!("header Last-Event-ID: {v:?} is not an event's sequence number"))
        })?,
    };
    let updates = node.raft.metrics();
    let stopping = node.stopping.clone();
    let start = (node, since, updates, stopping, std::collections::VecDeque::new());
    let stream =
        futures::stream::unfold(start, |(node, mut since, mut updates, mut stopping, mut buffered)| async move {
            loop {
                if let Some(event) = buffered.pop_front() {
                    let sse = sse::Event::default().id(event_id(&event)).event("journal").json_data(&event);
                    let sse = sse.unwrap_or_else(|_| sse::Event::default().comment("unencodable event"));
                    return Some((Ok::<_, std::convert::Infallible>(sse), (node, since, updates, stopping, buffered)));
                }
                let batch = node.applied.read().expect("state lock poisoned").state.journal.since(since, MAX_PAGE);
                if let Some(last) = batch.last() {
                    since = last.seq;
                    buffered.extend(batch);
                    continue;
                }
                tokio::select! {
                    changed = updates.changed() => if changed.is_err() { return None },
                    _ = stopping.wait_for(|s| *s) => return None,
                }
            }
        });
    Ok(sse::Sse::new(stream).keep_alive(sse::KeepAlive::default()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    #[serde(default)]
    since: u64,
}

fn event_id(event: &Event) -> String {
    event.seq.to_string()
}
