//! The `openstorage` step: moves a Portworx/OpenStorage stretched cluster to the survivor's
//! cluster domain over the SDK's REST gateway: deactivate the failed domain (an unreachable one
//! is tolerated when configured), activate the survivor's, then inspect until it is active.
//! Every call is idempotent, so a repeated attempt is harmless.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{secrets, StepContext, StepError, StepResult};
use crate::config::OpenStorageStep;

/// How often the survivor's domain is inspected until it reports active.
const INSPECT_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
struct Inspect {
    #[serde(default)]
    is_active: bool,
}

#[derive(Debug, Deserialize)]
struct Enumerate {
    #[serde(default)]
    cluster_domain_names: Vec<String>,
}

pub async fn run(http: &reqwest::Client, step: &OpenStorageStep, ctx: &StepContext) -> StepResult {
    let domain = |site: &str| {
        step.domains.get(site).ok_or_else(|| StepError::permanent(format!("no cluster domain for site {site:?}")))
    };
    let (failed, survivor) = (domain(&ctx.from)?, domain(&ctx.to)?);
    let api = Api { http, step, token: token(step)? };
    let deactivated = match api.call(Method::POST, &format!("clusterdomains/deactivate/{failed}")).await {
        Ok(_) => format!("{failed} deactivated"),
        Err(e) if step.tolerate_unreachable_failed && e.retryable => {
            format!("{failed} not deactivated ({}; tolerated)", e.message)
        }
        Err(e) => return Err(e),
    };
    api.call(Method::POST, &format!("clusterdomains/activate/{survivor}")).await?;
    // The caller bounds the whole attempt with the step's timeout.
    loop {
        let body = api.call(Method::GET, &format!("clusterdomains/inspect/{survivor}")).await?;
        let inspect: Inspect = serde_json::from_slice(&body)
            .map_err(|e| StepError::retryable(format!("inspect {survivor}: unexpected answer: {e}")))?;
        if inspect.is_active {
            return Ok(format!("{deactivated}; {survivor} activated and inspected active"));
        }
        tokio::time::sleep(INSPECT_EVERY).await;
    }
}

/// Enumerates the cluster domains: the endpoint answers, the token is accepted, and every
/// configured domain exists.
pub async fn check(http: &reqwest::Client, step: &OpenStorageStep) -> StepResult {
    let api = Api { http, step, token: token(step)? };
    let body = api.call(Method::GET, "clusterdomains").await?;
    let list: Enumerate = serde_json::from_slice(&body)
        .map_err(|e| StepError::permanent(format!("enumerate cluster domains: unexpected answer: {e}")))?;
    let missing: Vec<&String> = step.domains.values().filter(|d| !list.cluster_domain_names.contains(d)).collect();
    if !missing.is_empty() {
        return Err(StepError::permanent(format!(
            "cluster domains {missing:?} not found at {} (it has {:?})",
            step.endpoint, list.cluster_domain_names
        )));
    }
    Ok(format!("{} lists domains {:?}", step.endpoint, list.cluster_domain_names))
}

/// Whether `ctx.to`'s cluster domain is active and the other's is not (inspections; changes
/// nothing).
pub async fn observe(
    http: &reqwest::Client,
    step: &OpenStorageStep,
    ctx: &StepContext,
) -> Result<super::Observed, StepError> {
    let api = Api { http, step, token: token(step)? };
    let mut wrong = Vec::new();
    for (site, want) in [(&ctx.to, true), (&ctx.from, false)] {
        let domain = step
            .domains
            .get(site)
            .ok_or_else(|| StepError::permanent(format!("no cluster domain for site {site:?}")))?;
        let body = api.call(Method::GET, &format!("clusterdomains/inspect/{domain}")).await?;
        let inspect: Inspect = serde_json::from_slice(&body)
            .map_err(|e| StepError::retryable(format!("inspect {domain}: unexpected answer: {e}")))?;
        if inspect.is_active != want {
            let state = if inspect.is_active { "active" } else { "not active" };
            wrong.push(format!("{site}'s domain {domain} is {state}"));
        }
    }
    Ok(if wrong.is_empty() {
        super::Observed::InPlace
    } else {
        super::Observed::Drifted(format!("{} (the active site is {})", wrong.join(", "), ctx.to))
    })
}

fn token(step: &OpenStorageStep) -> Result<Option<String>, StepError> {
    let Some(file) = &step.token_file else { return Ok(None) };
    let bytes = secrets::read("token_file", file)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| StepError::permanent(format!("token_file {} is not text", file.display())))
}

struct Api<'a> {
    http: &'a reqwest::Client,
    step: &'a OpenStorageStep,
    token: Option<String>,
}

impl Api<'_> {
    async fn call(&self, method: Method, path: &str) -> Result<Vec<u8>, StepError> {
        let url = self
            .step
            .endpoint
            .join(&format!("v1/{path}"))
            .map_err(|e| StepError::permanent(format!("endpoint {}: {e}", self.step.endpoint)))?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let what = format!("{method} {url}");
        let response = request.send().await.map_err(|e| StepError::retryable(format!("{what}: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| StepError::retryable(format!("{what}: {e}")))?;
        match status {
            s if s.is_success() => Ok(body.to_vec()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(StepError::permanent(format!(
                "{what} -> {status}: the token is refused (activate/deactivate need an admin token)"
            ))),
            StatusCode::NOT_FOUND => Err(StepError::permanent(format!("{what} -> {status}: no such cluster domain"))),
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                Err(StepError::retryable(format!("{what} -> {status}")))
            }
            s if s.is_client_error() => {
                Err(StepError::permanent(format!("{what} -> {status}: {}", String::from_utf8_lossy(&body))))
            }
            _ => Err(StepError::retryable(format!("{what} -> {status}"))),
        }
    }
}
