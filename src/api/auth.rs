//! Who is asking and whether they may: credentials (a bearer token, checked against the
//! configured hashes in constant time, or a client certificate the TLS layer has verified
//! against the cluster CA) become a [`Caller`]; each route states what it [`Needs`]; operator
//! actions and heartbeats are rate-limited per credential. The decisions are pure functions of
//! the credentials, the current [`Auth`] and `now`; the middleware around them is thin.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::auth::{hash_token, Auth, Role};
use crate::node::Node;
use crate::server::Connection;
use crate::telemetry::Causes;
use crate::tls::CertIdentity;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Token { name: String, role: Role },
    Cert(CertIdentity),
    Anonymous,
}

impl Caller {
    /// How the journal names who acted: the token's name or the certificate's name, never a
    /// secret.
    pub fn audit_name(&self) -> String {
        match self {
            Caller::Token { name, .. } => format!("token:{name}"),
            Caller::Cert(identity) => format!("cert:{identity}"),
            Caller::Anonymous => "anonymous".to_string(),
        }
    }

    /// The role this caller acts with, if any. A node's certificate has none: it may only
    /// speak Raft.
    pub fn role(&self, auth: &Auth) -> Option<Role> {
        match self {
            Caller::Token { role, .. } => Some(role.clone()),
            Caller::Cert(CertIdentity::Site(site)) => Some(Role::Site(site.clone())),
            Caller::Cert(_) => None,
            Caller::Anonymous => auth.anonymous_viewer.then_some(Role::Viewer),
        }
    }
}

/// What a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// Anyone: liveness, readiness, the active-site health check, the page and API document.
    Open,
    /// `/metrics`: open or `viewer`, as configured.
    Metrics,
    Role(Role),
    /// The site named in the path (`site:NAME`).
    SiteInPath,
    /// Another node of this cluster: a client certificate naming a node (over plain HTTP,
    /// which is development only, anyone).
    Peer,
}

impl Needs {
    /// The rate limit a request counts against: heartbeats, and every operator or admin
    /// request but a read.
    pub fn limit(&self, method: &Method) -> Option<Kind> {
        match self {
            Needs::SiteInPath => Some(Kind::Heartbeat),
            Needs::Role(Role::Operator | Role::Admin) if method != Method::GET => Some(Kind::Operator),
            _ => None,
        }
    }
}

/// The caller behind `authorization` (the header's value) and the connection.
pub fn identify(auth: &Auth, authorization: Option<&[u8]>, conn: Option<&Connection>) -> Result<Caller, ApiError> {
    if let Some(value) = authorization {
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("Authorization header: expected `Bearer <token>`".into()))?;
        let presented = hash_token(token);
        // Every configured hash is compared in full, so the time taken says nothing about
        // which token, or how much of one, matched.
        let mut found = None;
        for spec in &auth.tokens {
            if constant_time_eq(&spec.hash, &presented) {
                found = Some(spec);
            }
        }
        return match found {
            Some(spec) => Ok(Caller::Token { name: spec.name.clone(), role: spec.role.clone() }),
            None => Err(ApiError::Unauthorized("unknown or revoked token".into())),
        };
    }
    Ok(match conn.and_then(|c| c.cert.clone()) {
        Some(identity) => Caller::Cert(identity),
        None => Caller::Anonymous,
    })
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `caller` may make a request that `needs` this; `site` is the path's site, if any.
pub fn authorize(auth: &Auth, caller: &Caller, needs: &Needs, site: Option<&str>, tls: bool) -> Result<(), ApiError> {
    let needed = match needs {
        Needs::Open => return Ok(()),
        Needs::Metrics if auth.open_metrics => return Ok(()),
        Needs::Metrics => Role::Viewer,
        Needs::Role(role) => role.clone(),
        Needs::SiteInPath => Role::Site(site.unwrap_or_default().to_string()),
        Needs::Peer => {
            return match caller {
                _ if !tls => Ok(()),
                Caller::Cert(CertIdentity::Node(_)) => Ok(()),
                _ => Err(ApiError::Forbidden(
                    "node-to-node route: needs a client certificate naming a node (node-<id>) signed by the cluster CA"
                        .into(),
                )),
            };
        }
    };
    match caller.role(auth) {
        Some(role) if role.covers(&needed) => Ok(()),
        None if *caller == Caller::Anonymous => Err(ApiError::Unauthorized(format!(
            "this request needs credentials with role {needed}: send `Authorization: Bearer <token>` \
             (tokens are made with `witness token new`)"
        ))),
        role => Err(ApiError::Forbidden(format!(
            "{} has {}; this request needs role {needed}",
            caller.audit_name(),
            role.map_or("no role".to_string(), |r| format!("role {r}"))
        ))),
    }
}

/// Token buckets per credential: heartbeats and operator actions each get their own. With them,
/// the refusals logged lately: a client refused several times a second (an agent with a token
/// of the wrong role) is logged once per cause, then once a minute.
#[derive(Default)]
pub struct RateLimits {
    buckets: HashMap<(String, Kind), Bucket>,
    refusals: Causes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `[auth] heartbeat_rate` per second, twice that in a burst.
    Heartbeat,
    /// `[auth] operator_rate` per second, six times that in a burst.
    Operator,
}

impl Kind {
    fn rate_and_burst(self, auth: &Auth) -> (f64, f64) {
        match self {
            Kind::Heartbeat => (f64::from(auth.heartbeat_rate), 2.0 * f64::from(auth.heartbeat_rate)),
            Kind::Operator => (f64::from(auth.operator_rate), 6.0 * f64::from(auth.operator_rate)),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Duration,
}

impl RateLimits {
    /// Takes one request from `who`'s bucket at `now` (the node's clock), or says how long
    /// until one is available.
    pub fn take(&mut self, auth: &Auth, who: &str, kind: Kind, now: Duration) -> Result<(), Duration> {
        let (rate, burst) = kind.rate_and_burst(auth);
        let bucket = self.buckets.entry((who.to_string(), kind)).or_insert(Bucket { tokens: burst, at: now });
        let refill = now.saturating_sub(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// The middleware: identifies the caller, checks `needs`, applies the rate limit, and hands
/// the [`Caller`] to the handler.
pub async fn guard(State((node, needs)): State<(Arc<Node>, Needs)>, req: Request, next: Next) -> Response {
    match admit(&node, &needs, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn admit(node: &Node, needs: &Needs, req: Request) -> Result<Request, ApiError> {
    let (mut parts, body) = req.into_parts();
    let auth = node.auth();
    let conn = parts.extensions.get::<Connection>().cloned();
    let caller = identify(&auth, parts.headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()), conn.as_ref());
    let caller = caller.inspect_err(|e| refused(node, &conn, &parts.uri, e))?;
    let site = match needs {
        Needs::SiteInPath => RawPathParams::from_request_parts(&mut parts, &())
            .await
            .ok()
            .and_then(|p| p.iter().find(|(k, _)| *k == "site").map(|(_, v)| v.to_string())),
        _ => None,
    };
    let tls = conn.as_ref().is_some_and(|c| c.tls);
    authorize(&auth, &caller, needs, site.as_deref(), tls).inspect_err(|e| refused(node, &conn, &parts.uri, e))?;
    if let Some(kind) = needs.limit(&parts.method) {
        let taken = node.rate_limits.lock().expect("rate limit lock poisoned").take(
            &auth,
            &caller.audit_name(),
            kind,
            node.clock.now(),
        );
        if let Err(wait) = taken {
            let seconds = wait.as_secs().max(1);
            return Err(ApiError::RateLimited(
                format!("{}: too many requests; retry in {seconds} s", caller.audit_name()),
                seconds,
            ));
        }
    }
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, body))
}

fn refused(node: &Node, conn: &Option<Connection>, uri: &axum::http::Uri, e: &ApiError) {
    let remote = conn.as_ref().map(|c| c.remote.to_string()).unwrap_or_default();
    let ip = conn.as_ref().map(|c| c.remote.ip().to_string()).unwrap_or_default();
    let path = uri.path();
    let error = e.to_string();
    let due = node
        .rate_limits
        .lock()
        .expect("rate limit lock poisoned")
        .refusals
        .due(node.clock.now(), &format!("{ip} {path} {error}"));
    // Debug formatting of the message: it may quote names from the request, whose newlines and
    // escape codes must not reach the log as such.
    match due {
        Some(due) => {
            tracing::warn!(%remote, %path, error = ?error, for_s = due.for_s, held_back = due.held_back, "request refused")
        }
        None => tracing::debug!(%remote, %path, error = ?error, "request refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::TokenSpec;

    fn auth(anonymous_viewer: bool) -> Auth {
        let token = |name: &str, role: Role| TokenSpec { name: name.into(), role, hash: hash_token(name) };
        Auth {
            anonymous_viewer,
            tokens: vec![
                token("v", Role::Viewer),
                token("o", Role::Operator),
                token("a", Role::Admin),
                token("east", Role::Site("east".into())),
            ],
            ..Auth::default()
        }
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn tokens_are_matched_by_hash_and_bad_headers_refused() {
        let a = auth(false);
        assert_eq!(
            identify(&a, Some(&bearer("o")), None).unwrap(),
            Caller::Token { name: "o".into(), role: Role::Operator }
        );
        for bad in [&b"Bearer nope"[..], b"Basic bzpv", b"Bearer ", b"o", b"\xff\xfe"] {
            assert!(matches!(identify(&a, Some(bad), None), Err(ApiError::Unauthorized(_))), "{bad:?}");
        }
        let conn = Connection { remote: ([127, 0, 0, 1], 1).into(), cert: Some(CertIdentity::Node(2)), tls: true };
        assert_eq!(identify(&a, None, Some(&conn)).unwrap(), Caller::Cert(CertIdentity::Node(2)));
        assert_eq!(identify(&a, None, None).unwrap(), Caller::Anonymous);
    }

    #[test]
    fn the_role_matrix() {
        let a = auth(false);
        let token = |t: &str| identify(&a, Some(&bearer(t)), None).unwrap();
        let callers = [
            ("anonymous", Caller::Anonymous),
            ("viewer", token("v")),
            ("operator", token("o")),
            ("admin", token("a")),
            ("east", token("east")),
            ("node cert", Caller::Cert(CertIdentity::Node(1))),
            ("west cert", Caller::Cert(CertIdentity::Site("west".into()))),
        ];
        let needs = [
            ("open", Needs::Open, None),
            ("viewer", Needs::Role(Role::Viewer), None),
            ("operator", Needs::Role(Role::Operator), None),
            ("admin", Needs::Role(Role::Admin), None),
            ("heartbeat east", Needs::SiteInPath, Some("east")),
            ("heartbeat west", Needs::SiteInPath, Some("west")),
            ("peer", Needs::Peer, None),
        ];
        // Expected status per caller (rows) and need (columns): 0 allowed.
        let expected: [[u16; 7]; 7] = [
            [0, 401, 401, 401, 401, 401, 403],
            [0, 0, 403, 403, 403, 403, 403],
            [0, 0, 0, 403, 403, 403, 403],
            [0, 0, 0, 0, 403, 403, 403],
            [0, 403, 403, 403, 0, 403, 403],
            [0, 403, 403, 403, 403, 403, 0],
            [0, 403, 403, 403, 403, 0, 403],
        ];
        for (row, (who, caller)) in callers.iter().enumerate() {
            for (col, (what, need, site)) in needs.iter().enumerate() {
                let got = match authorize(&a, caller, need, *site, true) {
                    Ok(()) => 0,
                    Err(ApiError::Unauthorized(_)) => 401,
                    Err(ApiError::Forbidden(_)) => 403,
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(got, expected[row][col], "{who} → {what}");
            }
        }
        // Anonymous viewers, when allowed, read and do nothing else; plain HTTP opens peer routes.
        let open = auth(true);
        assert!(authorize(&open, &Caller::Anonymous, &Needs::Role(Role::Viewer), None, true).is_ok());
        assert!(authorize(&open, &Caller::Anonymous, &Needs::Role(Role::Operator), None, true).is_err());
        assert!(authorize(&a, &Caller::Anonymous, &Needs::Peer, None, false).is_ok());
    }

    #[test]
    fn rate_limits_refill_per_credential_and_kind() {
        let a = Auth { heartbeat_rate: 5, ..Auth::default() };
        let mut limits = RateLimits::default();
        let t0 = Duration::from_secs(5);
        for _ in 0..60 {
            limits.take(&a, "token:o", Kind::Operator, t0).unwrap();
        }
        let wait = limits.take(&a, "token:o", Kind::Operator, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(limits.take(&a, "token:other", Kind::Operator, t0).is_ok());
        assert!(limits.take(&a, "token:o", Kind::Operator, t0 + Duration::from_millis(100)).is_ok());
        assert!(limits.take(&a, "token:o", Kind::Operator, t0 + Duration::from_millis(100)).is_err());
        // Heartbeats: the configured rate, a burst of twice that, apart from operator requests.
        for _ in 0..10 {
            limits.take(&a, "token:o", Kind::Heartbeat, t0).unwrap();
        }
        assert_eq!(limits.take(&a, "token:o", Kind::Heartbeat, t0), Err(Duration::from_millis(200)));
    }
}
