//! The HTTP API (axum): health and readiness, Prometheus metrics, status; operator controls
//! (failover, failback, pause, resume, ack, plan retry/skip/check, the automation switch); the
//! active-site health
//! endpoint; the decision journal (paged and as Server-Sent Events); membership; plus the
//! node-to-node routes that are not Raft RPCs (`/raft/leader` for forwarded requests,
//! `/raft/bootstrap`). Who may call what is decided in [`auth`], per group of routes here.
//! Errors map to HTTP statuses in one place, [`error`].

pub mod auth;
mod error;

use openraft::async_runtime::WatchReceiver;
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub use error::ApiError;

use crate::config::auth::Role;
use crate::config::check_name;
use auth::{Caller, Needs};

use crate::node::leader::{FailoverOrder, Forwarded, LeaderReply, LeaderRequest, NodeError};
use crate::node::Node;
use crate::protocol::Heartbeat;
use crate::raft::network::CLUSTER_HEADER;
use crate::state::journal::Event;
use crate::state::{Command, Epoch, Response as StateResponse, SiteId};

type AppState = State<Arc<Node>>;

pub fn router(node: Arc<Node>) -> Router {
    // Liveness, readiness and the active-site check reveal only up/down and must work for
    // DNS health checkers and load balancers, which carry no credentials.
    let open = Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/groups/{group}/sites/{site}/active", get(site_active));
    let whoami = Router::new().route("/v1/whoami", get(whoami));
    let metrics = Router::new().route("/metrics", get(metrics));
    let viewer = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/v1/events/stream", get(events_stream))
        .route("/v1/members", get(members));
    let operator = Router::new()
        .route("/v1/groups/{group}/activate", post(activate))
        .route("/v1/groups/{group}/failover", post(failover))
        .route("/v1/groups/{group}/failback", post(failback))
        .route("/v1/groups/{group}/pause", post(pause))
        .route("/v1/groups/{group}/resume", post(resume))
        .route("/v1/groups/{group}/ack", post(ack))
        .route("/v1/groups/{group}/plan/retry", post(plan_retry))
        .route("/v1/groups/{group}/plan/skip", post(plan_skip))
        .route("/v1/groups/{group}/plan/check", post(plan_check))
        .route("/v1/automation", post(automation));
    let admin = Router::new().route("/v1/members", post(add_member)).route("/v1/members/{id}", delete(remove_member));
    let site = Router::new().route("/v1/sites/{site}/heartbeat", post(heartbeat));
    let peer = Router::new().route("/raft/leader", post(leader)).route("/raft/bootstrap", get(bootstrap));
    let guarded = |needs: Needs, routes: Router<Arc<Node>>| {
        routes.route_layer(middleware::from_fn_with_state((node.clone(), needs), auth::guard))
    };
    open.merge(guarded(Needs::Open, whoami))
        .merge(guarded(Needs::Metrics, metrics))
        .merge(guarded(Needs::Role(Role::Viewer), viewer))
        .merge(guarded(Needs::Role(Role::Operator), operator))
        .merge(guarded(Needs::Role(Role::Admin), admin))
        .merge(guarded(Needs::SiteInPath, site))
        .merge(guarded(Needs::Peer, peer))
        .route_layer(middleware::from_fn(check_path_names))
        .layer(middleware::from_fn(read_body))
        .with_state(node)
}

/// No API request needs more (the largest, a heartbeat of a site with many groups, is a few
/// KiB); anything bigger is refused with 413. The Raft routes (snapshots) have their own
/// router.
const BODY_LIMIT: usize = 64 * 1024;

const DRAIN_LIMIT: u64 = 1 << 20;

/// How long a client may take to send its request body once the headers are in.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the whole body before any handler runs, within [`BODY_LIMIT`] and [`BODY_TIMEOUT`]:
/// a client trickling its body holds only its own connection, never a handler (or a lock a
/// handler takes), and a declared oversize body is refused before any handler sees it.
async fn read_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || ApiError::TooLarge(format!("request body: larger than the {} KiB limit", BODY_LIMIT / 1024));
    if let Some(declared) = declared.filter(|n| *n > BODY_LIMIT as u64) {
        // A client still sending when the answer comes sees a broken pipe, not the 413: a
        // body up to 1 MiB is read and dropped first; a larger one is refused unread.
        if declared <= DRAIN_LIMIT {
            let _ = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, DRAIN_LIMIT as usize)).await;
        }
        return too_large().into_response();
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
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

/// Refuses a write that names a group (or a group's site) the committed state does not have,
/// before it reaches the log: only real names are ever journaled.
fn check_known(node: &Node, command: &Command) -> Result<(), ApiError> {
    let (group, site) = match command {
        Command::Activate { group, site, .. } => (group, Some(site)),
        Command::SetPaused { group, .. } | Command::Ack { group, .. } | Command::ResolvePlan { group, .. } => {
            (group, None)
        }
        _ => return Ok(()),
    };
    let applied = node.applied.read().expect("state lock poisoned");
    let g = applied.state.groups.get(group).ok_or_else(|| NodeError::NotFound(format!("unknown group {group:?}")))?;
    match site {
        Some(site) if *site != g.spec.primary && *site != g.spec.secondary => {
            Err(NodeError::NotFound(format!("site {site:?} is not a site of group {group:?}")).into())
        }
        _ => Ok(()),
    }
}

#[derive(Serialize)]
struct WhoAmI {
    /// `token:NAME`, `cert:NAME` or `anonymous`.
    caller: String,
    /// The role the caller acts with; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// Who this node takes the caller for, and with what role: the dashboard shows operator
/// buttons only when the role allows them.
async fn whoami(State(node): AppState, Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    let role = caller.role(&node.auth()).map(|r| r.to_string());
    Json(WhoAmI { caller: caller.audit_name(), role })
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
    // Gauges are brought up to date when scraped, not on every commit.
    node.metrics.observe_raft(&node.raft.metrics().borrow_watched());
    node.metrics.observe_state(&node.applied.read().expect("state lock poisoned").state);
    node.observe_agents();
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
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    body: Result<Json<ActivateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(ApiError::from_json)?;
    let command =
        Command::Activate { group: group.into(), site: body.site.into(), expected_epoch: Epoch(body.expected_epoch) };
    check_known(&node, &command)?;
    match node.submit_by(LeaderRequest::Write(command), Some(caller.audit_name()), false).await? {
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
    (error::written_status(&response), Json(Written { response, log_index })).into_response()
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
    Extension(caller): Extension<Caller>,
    body: Result<Json<AddMemberBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<LeaderReply>, ApiError> {
    let Json(body) = body.map_err(ApiError::from_json)?;
    let request = LeaderRequest::AddMember { id: body.id.into(), addr: body.addr };
    Ok(Json(node.submit_by(request, Some(caller.audit_name()), false).await?))
}

async fn remove_member(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LeaderReply>, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::BadRequest(format!("path parameter id: {id:?} is not a node id (a positive integer)"))
    })?;
    Ok(Json(node.submit_by(LeaderRequest::RemoveMember { id: id.into() }, Some(caller.audit_name()), false).await?))
}

/// A request forwarded by another node: run it here only, never forward again.
async fn leader(State(node): AppState, headers: HeaderMap, body: JsonBody<Forwarded>) -> Response {
    if let Err(e) = check_cluster(&node, &headers) {
        return e.into_response();
    }
    let Json(Forwarded { request, by }) = match body {
        Ok(body) => body,
        Err(e) => return ApiError::from_json(e).into_response(),
    };
    let result: Result<LeaderReply, NodeError> = node.submit_by(request, by, true).await;
    Json(result).into_response()
}

/// The dashboard: one page with its script and style inline (no CDN), reading the API.
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// The API as an OpenAPI 3 document, kept in step with the router above by `tests/docs.rs`.
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
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

/// The body of `failover` (which requires `to`) and `failback` (which refuses it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    to: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
    /// With `dry_run`: also check every plan step's reachability and credentials.
    #[serde(default)]
    check: bool,
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// An operator's failover, checked against the evidence on the leader: 200 when done or for a
/// dry run, 409 when refused by a check (unless forced) or when the group moved meanwhile.
async fn failover(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    body: JsonBody<OrderBody>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(ApiError::from_json)?;
    if b.to.is_none() {
        return Err(ApiError::BadRequest("request body: missing field `to` (the site to make active)".into()));
    }
    let order = FailoverOrder {
        group: group.into(),
        to: b.to.map(SiteId::from),
        reason: b.reason,
        dry_run: b.dry_run,
        force: b.force,
    };
    order_failover(&node, &caller, order, b.check).await
}

/// A failover back to the group's primary. The engine never does this on its own while the
/// secondary is healthy: a returning primary stays standby until an operator fails back.
async fn failback(
    State(node): AppState,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    body: JsonBody<OrderBody>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(ApiError::from_json)?;
    if b.to.is_some() {
        return Err(ApiError::BadRequest("request body: `to` is not accepted: a failback goes to the primary".into()));
    }
    let order = FailoverOrder { group: group.into(), to: None, reason: b.reason, dry_run: b.dry_run, force: b.force };
    order_failover(&node, &caller, order, b.check).await
}

async fn order_failover(node: &Node, caller: &Caller, order: FailoverOrder, check: bool) -> ApiResult {
    if check && !order.dry_run {
        return Err(ApiError::BadRequest(
            "request body: `check` needs `dry_run`: a real failover runs the plan".into(),
        ));
    }
    let group = order.group.clone();
    let reply = node.submit_by(LeaderRequest::Failover(order), Some(caller.audit_name()), false).await?;
    let status = match &reply {
        LeaderReply::Failover { outcome, .. } => error::failover_status(outcome),
        _ => StatusCode::OK,
    };
    let mut body = serde_json::to_value(&reply).map_err(|e| ApiError::Internal(e.to_string()))?;
    if check {
        body["plan_check"] = serde_json::to_value(node.check_plan(&group).await?).expect("plain data");
    }
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    /// The epoch of the plan meant; by default the one this node has for the group.
    epoch: Option<u64>,
}

type Operator = Extension<Caller>;

async fn plan_retry(
    State(node): AppState,
    caller: Operator,
    Path(group): Path<String>,
    body: OptionalJson<PlanBody>,
) -> ApiResult {
    resolve_plan(&node, &caller, group, body, false).await
}

async fn plan_skip(
    State(node): AppState,
    caller: Operator,
    Path(group): Path<String>,
    body: OptionalJson<PlanBody>,
) -> ApiResult {
    resolve_plan(&node, &caller, group, body, true).await
}

/// Runs a stuck plan's step again, or moves past it: only for the plan the sender has seen.
async fn resolve_plan(
    node: &Node,
    caller: &Caller,
    group: String,
    body: OptionalJson<PlanBody>,
    skip: bool,
) -> ApiResult {
    let b = body.map_err(ApiError::from_json)?.map(|Json(b)| b).unwrap_or_default();
    let epoch = match b.epoch {
        Some(e) => Epoch(e),
        None => {
            let applied = node.applied.read().expect("state lock poisoned");
            let g = applied.state.groups.get(&group);
            let g = g.ok_or_else(|| NodeError::NotFound(format!("unknown group {group:?}")))?;
            g.plan.as_ref().map_or(g.epoch, |p| p.epoch)
        }
    };
    write(node, caller, Command::ResolvePlan { group: group.into(), epoch, skip }).await
}

/// Checks every step of the group's plan from this node, changing nothing.
async fn plan_check(State(node): AppState, Path(group): Path<String>) -> ApiResult {
    Ok(Json(node.check_plan(&group).await?).into_response())
}

async fn pause(State(node): AppState, caller: Operator, Path(group): Path<String>) -> ApiResult {
    write(&node, &caller, Command::SetPaused { group: group.into(), paused: true }).await
}

async fn resume(State(node): AppState, caller: Operator, Path(group): Path<String>) -> ApiResult {
    write(&node, &caller, Command::SetPaused { group: group.into(), paused: false }).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// The epoch of the failover being acknowledged; by default the group's current epoch as
    /// this node has it, so an acknowledgement never lifts the block of a failover its sender
    /// has not seen.
    epoch: Option<u64>,
}

type OptionalJson<T> = Result<Option<Json<T>>, axum::extract::rejection::JsonRejection>;
type ApiResult = Result<Response, ApiError>;

async fn ack(
    State(node): AppState,
    caller: Operator,
    Path(group): Path<String>,
    body: OptionalJson<AckBody>,
) -> ApiResult {
    let b = body.map_err(ApiError::from_json)?.map(|Json(b)| b).unwrap_or_default();
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutomationBody {
    enabled: bool,
}

async fn automation(State(node): AppState, caller: Operator, body: JsonBody<AutomationBody>) -> ApiResult {
    let Json(b) = body.map_err(ApiError::from_json)?;
    write(&node, &caller, Command::SetAutomation { enabled: b.enabled }).await
}

async fn write(node: &Node, caller: &Caller, command: Command) -> ApiResult {
    check_known(node, &command)?;
    match node.submit_by(LeaderRequest::Write(command), Some(caller.audit_name()), false).await? {
        LeaderReply::Written { response, log_index } => Ok(written(response, log_index)),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

/// A site agent's heartbeat. Only the leader answers: another node says who leads (421, with
/// `leader_id` and `leader_addr` when known) so the agent can go there directly.
async fn heartbeat(State(node): AppState, Path(site): Path<String>, body: JsonBody<Heartbeat>) -> Response {
    let Json(heartbeat) = match body {
        Ok(b) => b,
        Err(e) => return ApiError::from_json(e).into_response(),
    };
    match node.heartbeat(&site, &heartbeat).await {
        Ok(answer) => Json(answer).into_response(),
        Err(NodeError::LeaderMoved { id, addr }) => {
            let message = format!("node {} does not lead: node {id} at {addr} does; send heartbeats there", node.id);
            ApiError::NotLeader { message, leader_id: id, leader_addr: addr }.into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Serialize)]
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
/// latest committed state this node has (and, for a group with agents, promoted), 503 otherwise. It never flips without a committed
/// decision; a node that cannot vouch for being current says so (`witness-current: false`).
async fn site_active(State(node): AppState, Path((group, site)): Path<(String, String)>) -> Result<Response, ApiError> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct EventsPage {
    events: Vec<Event>,
    /// Pass as `since` to get what follows.
    last_seq: u64,
}

const MAX_PAGE: usize = 1000;

/// Journal events numbered above `since`, oldest first.
async fn events(
    State(node): AppState,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<EventsPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let journal = &node.applied.read().expect("state lock poisoned").state.journal;
    let events = journal.since(q.since, limit);
    let last_seq = events.last().map_or(q.since, |e| e.seq);
    Ok(Json(EventsPage { events, last_seq }))
}

/// The journal as Server-Sent Events: what is retained above `since` (or the `Last-Event-ID`
/// a reconnecting client sends), then every new event as it commits. Each event's SSE id is
/// its sequence number.
async fn events_stream(
    State(node): AppState,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(q.since);
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

fn event_id(event: &Event) -> String {
    event.seq.to_string()
}
