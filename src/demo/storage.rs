//! An OpenStorage cluster-domains REST API that keeps real domain state and demands its bearer
//! token: the storage target of `witness demo` (and of the tests). Activation takes a moment,
//! as on a real cluster: a domain just activated inspects active from the second look on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Domains {
    token: String,
    active: BTreeMap<String, bool>,
    activating: BTreeSet<String>,
    calls: Vec<String>,
    /// Deactivation answers 503, as when the failed domain cannot be reached.
    deactivate_fails: bool,
}

/// The API, serving on its own task until dropped.
pub struct StorageApi {
    pub url: String,
    state: Arc<Mutex<Domains>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StorageApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StorageApi {
    pub async fn start(token: &str, domains: &[(&str, bool)]) -> std::io::Result<StorageApi> {
        let state = Arc::new(Mutex::new(Domains {
            token: token.into(),
            active: domains.iter().map(|(d, a)| (d.to_string(), *a)).collect(),
            ..Domains::default()
        }));
        let app = Router::new()
            .route("/v1/clusterdomains", get(enumerate))
            .route("/v1/clusterdomains/inspect/{name}", get(inspect))
            .route("/v1/clusterdomains/activate/{name}", post(activate))
            .route("/v1/clusterdomains/deactivate/{name}", post(deactivate))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StorageApi { url, state, server })
    }

    pub fn active(&self, domain: &str) -> Option<bool> {
        self.lock().active.get(domain).copied()
    }

    pub fn fail_deactivation(&self, fail: bool) {
        self.lock().deactivate_fails = fail;
    }

    /// Every authorized change, as `activate NAME` / `deactivate NAME`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Domains> {
        self.state.lock().expect("storage state lock poisoned")
    }
}

type Shared = State<Arc<Mutex<Domains>>>;
type Answer = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn refuse(status: StatusCode, error: &str) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": error })))
}

fn authorized(s: &Domains, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let expected = format!("bearer {}", s.token);
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v.eq_ignore_ascii_case(&expected) => Ok(()),
        _ => Err(refuse(StatusCode::UNAUTHORIZED, "access denied")),
    }
}

async fn enumerate(State(state): Shared, headers: HeaderMap) -> Answer {
    let s = state.lock().expect("storage state lock poisoned");
    authorized(&s, &headers)?;
    Ok(Json(json!({ "cluster_domain_names": s.active.keys().collect::<Vec<_>>() })))
}

async fn inspect(State(state): Shared, Path(name): Path<String>, headers: HeaderMap) -> Answer {
    let mut s = state.lock().expect("storage state lock poisoned");
    authorized(&s, &headers)?;
    let active = *s.active.get(&name).ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such domain"))?;
    // `is_active` is omitted when false, as the real gateway does; still activating at first.
    if active && !s.activating.remove(&name) {
        return Ok(Json(json!({ "cluster_domain_name": name, "is_active": true })));
    }
    Ok(Json(json!({ "cluster_domain_name": name })))
}

async fn activate(State(state): Shared, Path(name): Path<String>, headers: HeaderMap) -> Answer {
    set(&state, name, &headers, true)
}

async fn deactivate(State(state): Shared, Path(name): Path<String>, headers: HeaderMap) -> Answer {
    set(&state, name, &headers, false)
}

fn set(state: &Mutex<Domains>, name: String, headers: &HeaderMap, active: bool) -> Answer {
    let mut s = state.lock().expect("storage state lock poisoned");
    authorized(&s, headers)?;
    if !active && s.deactivate_fails {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "domain unreachable"));
    }
    let current = s.active.get_mut(&name).ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such domain"))?;
    let was = std::mem::replace(current, active);
    if active && !was {
        s.activating.insert(name.clone());
    }
    s.calls.push(format!("{} {name}", if active { "activate" } else { "deactivate" }));
    Ok(Json(json!({})))
}
