//! The HTTP client side of the CLI: which node to talk to and how its answers become exit
//! codes.

use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Exit;
use crate::tls::failure::Failure;

#[derive(clap::Args, Clone, Default)]
pub struct Endpoint {
    /// Base URL of any witness node; several, separated by commas, are tried in order until
    /// one can be reached.
    #[arg(long, env = "WITNESS_ENDPOINT", default_value = "https://127.0.0.1:7401")]
    pub endpoint: String,
    /// PEM file of the CA that signed the nodes' certificates (default: the system's roots).
    #[arg(long, env = "WITNESS_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// File holding an API token (the environment variable WITNESS_TOKEN may hold the token
    /// itself instead; a token is never taken on the command line, where `ps` would show it).
    #[arg(long, env = "WITNESS_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

pub fn block_on(fut: impl std::future::Future<Output = Exit>) -> Exit {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Failed
        }
    }
}

/// A failed call, already mapped to what the user sees and the exit code.
pub struct CallError {
    pub message: String,
    pub exit: Exit,
}

impl CallError {
    pub fn report(self) -> Exit {
        eprintln!("error: {}", self.message);
        self.exit
    }
}

pub struct Client {
    /// The nodes to try, in order.
    bases: Vec<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(endpoint: &Endpoint, timeout: Duration) -> Result<Client, CallError> {
        crate::tls::init();
        let usage = |message: String| CallError { message, exit: Exit::Usage };
        let mut builder = reqwest::Client::builder().no_proxy().timeout(timeout);
        if let Some(ca) = &endpoint.ca {
            let config = crate::tls::client_config(ca, None).map_err(|e| usage(format!("--ca: {e:#}")))?;
            builder = builder.tls_backend_preconfigured(config);
        }
        let token = match (&endpoint.token_file, std::env::var("WITNESS_TOKEN")) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("--token-file {}: {e}", path.display())))?
                    .trim()
                    .to_string(),
            ),
            (None, Ok(token)) => Some(token.trim().to_string()),
            (None, Err(_)) => None,
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| usage("the token holds characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            builder = builder.default_headers([(reqwest::header::AUTHORIZATION, value)].into_iter().collect());
        }
        let http = builder
            .build()
            .map_err(|e| CallError { message: format!("cannot build HTTP client: {e}"), exit: Exit::Failed })?;
        let bases: Vec<String> = endpoint
            .endpoint
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(usage("--endpoint: no URL given".into()));
        }
        Ok(Client { bases, http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(true, |base| self.http.get(format!("{base}{path}"))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, CallError> {
        self.send(false, |base| self.http.post(format!("{base}{path}")).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(false, |base| self.http.delete(format!("{base}{path}"))).await
    }

    /// Sends to the first node that answers. A write goes on to the next node only when it
    /// certainly never reached the one before (no connection, or its TLS handshake failed): a
    /// write that may have taken effect is never sent twice. A `read` always may.
    async fn reach(
        &self,
        read: bool,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<(&str, reqwest::Response), CallError> {
        let mut failures = Vec::new();
        let mut all_tls = true;
        for base in &self.bases {
            let e = match request(base).send().await {
                Ok(resp) => return Ok((base, resp)),
                Err(e) => e,
            };
            let failure = crate::tls::failure::classify(&e);
            let tls = matches!(failure, Failure::Tls(_));
            all_tls &= tls;
            failures.push(match failure {
                Failure::Tls(why) => format!("{base}: TLS handshake failed: {why}"),
                Failure::Network(why) => format!("cannot reach {base}: {why}"),
            });
            if !read && !e.is_connect() && !tls {
                let message = format!("{}; the request may or may not have taken effect", failures.join("; "));
                return Err(CallError { message, exit: Exit::Unavailable });
            }
        }
        // A certificate problem at every node is a configuration to fix, not a reason to retry.
        Err(CallError { message: failures.join("; "), exit: if all_tls { Exit::Usage } else { Exit::Unavailable } })
    }

    /// POSTs and returns the status with the parsed JSON body for any answer below 500, for
    /// calls whose refusals carry a structured body.
    pub async fn post_answer(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), CallError> {
        let (base, resp) = self.reach(false, |base| self.http.post(format!("{base}{path}")).json(body)).await?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| CallError {
            message: format!("reading the answer from {base}: {e}"),
            exit: Exit::Unavailable,
        })?;
        match serde_json::from_str(&text) {
            Ok(value) if status < 500 && (status < 400 || has_no_error_field(&value)) => Ok((status, value)),
            _ => Err(failure(status, text)),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        read: bool,
        request: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let (base, resp) = self.reach(read, request).await?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| CallError {
            message: format!("reading the answer from {base}: {e}"),
            exit: Exit::Unavailable,
        })?;
        if status.is_success() {
            return serde_json::from_str(&body)
                .map_err(|e| CallError { message: format!("unexpected answer from {base}: {e}"), exit: Exit::Failed });
        }
        Err(failure(status.as_u16(), body))
    }
}

fn has_no_error_field(value: &serde_json::Value) -> bool {
    value.get("error").is_none()
}

/// An error answer as the user sees it, with its exit code.
fn failure(status: u16, body: String) -> CallError {
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or(body);
    let exit = match status {
        401 => {
            return CallError {
                message: format!(
                "HTTP 401: {message} (give a token with --token-file FILE or the WITNESS_TOKEN environment variable)"
            ),
                exit: Exit::Usage,
            }
        }
        502..=504 => Exit::Unavailable,
        400 | 404 | 405 | 422 => Exit::Usage,
        _ => Exit::Failed,
    };
    CallError { message: format!("HTTP {status}: {message}"), exit }
}
