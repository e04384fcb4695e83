//! In-process targets for plan steps, each keeping real state: a webhook receiver that
//! verifies Standard Webhooks signatures and counts effects by idempotency key (with injected
//! failures), and (the demo's) OpenStorage cluster-domains API that demands its bearer token.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::Value;

async fn serve(app: Router, ip: &str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (url, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
}

/// One POST the receiver accepted as authentic.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub id: String,
    pub body: Value,
}

#[derive(Default)]
struct HookState {
    secret: Vec<u8>,
    /// Per path: how many more requests get 503 before one is accepted.
    fail_next: BTreeMap<String, u32>,
    /// Paths that answer 400.
    reject: BTreeSet<String>,
    /// Every request, authentic or not, per path.
    requests: BTreeMap<String, u32>,
    deliveries: Vec<Delivery>,
    bad_signatures: u32,
}

/// A webhook receiver at `url()/<path>`.
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<HookState>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// `secret` is the raw key (the witness's secret file holds `whsec_<base64 of it>`).
    pub async fn start(secret: &[u8]) -> Receiver {
        Receiver::start_on(secret, "127.0.0.1").await
    }

    /// Listening on `ip` (a port chosen by the system).
    pub async fn start_on(secret: &[u8], ip: &str) -> Receiver {
        let state = Arc::new(Mutex::new(HookState { secret: secret.to_vec(), ..HookState::default() }));
        let app =
            Router::new().route("/{path}", post(receive).head(|| async { StatusCode::OK })).with_state(state.clone());
        let (url, server) = serve(app, ip).await;
        Receiver { url, state, _server: server }
    }

    pub fn secret_file_contents(secret: &[u8]) -> String {
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret))
    }

    pub fn fail_next(&self, path: &str, times: u32) {
        self.state.lock().unwrap().fail_next.insert(path.into(), times);
    }

    pub fn reject(&self, path: &str, reject: bool) {
        let mut s = self.state.lock().unwrap();
        if reject {
            s.reject.insert(path.into());
        } else {
            s.reject.remove(path);
        }
    }

    pub fn requests(&self, path: &str) -> u32 {
        self.state.lock().unwrap().requests.get(path).copied().unwrap_or(0)
    }

    pub fn deliveries(&self, path: &str) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.iter().filter(|d| d.path == path).cloned().collect()
    }

    /// Distinct idempotency keys accepted at `path`: the effects a receiver that drops repeats
    /// would have made.
    pub fn effects(&self, path: &str) -> usize {
        self.deliveries(path).iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>().len()
    }

    pub fn bad_signatures(&self) -> u32 {
        self.state.lock().unwrap().bad_signatures
    }
}

async fn receive(
    State(state): State<Arc<Mutex<HookState>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut s = state.lock().unwrap();
    *s.requests.entry(path.clone()).or_default() += 1;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let fresh = timestamp.parse::<u64>().is_ok_and(|t| t.abs_diff(now) <= 300);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s.secret);
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", &body].concat();
    let authentic = signature.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|sig| {
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .is_ok_and(|mac| ring::hmac::verify(&key, &signed, &mac).is_ok())
    });
    if !fresh || !authentic || id.is_empty() {
        s.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(n) = s.fail_next.get_mut(&path).filter(|n| **n > 0) {
        *n -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if s.reject.contains(&path) {
        return StatusCode::BAD_REQUEST;
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.deliveries.push(Delivery { path, id, body });
    StatusCode::NO_CONTENT
}

/// The OpenStorage cluster-domains API with real state: the one `witness demo` uses.
#[allow(unused_imports)] // not every test binary that includes the support module uses it
pub use witness::demo::storage::StorageApi as OpenStorage;

/// Writes a secret file readable by its owner only (the node warns about any other); returns
/// its path.
pub fn write_secret(dir: &std::path::Path, name: &str, contents: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}
