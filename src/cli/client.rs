//! The HTTP client side of the CLI: which node to talk to and how its answers become exit
//! codes.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Exit;

#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// Base URL of any witness node.
    #[arg(long, env = "WITNESS_ENDPOINT", default_value = "http://127.0.0.1:7401")]
    pub endpoint: String,
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
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(endpoint: &Endpoint, timeout: Duration) -> Result<Client, CallError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| CallError { message: format!("cannot build HTTP client: {e}"), exit: Exit::Failed })?;
        Ok(Client { base: endpoint.endpoint.trim_end_matches('/').to_string(), http })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, CallError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// POSTs and returns the status with the parsed JSON body for any answer below 500, for
    /// calls whose refusals carry a structured body.
    pub async fn post_answer(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), CallError> {
        let resp =
            self.http.post(format!("{}{path}", self.base)).json(body).send().await.map_err(|e| CallError {
                message: format!("cannot reach {}: {e}", self.base),
                exit: Exit::Unavailable,
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| CallError {
            message: format!("reading the answer from {}: {e}", self.base),
            exit: Exit::Unavailable,
        })?;
        match serde_json::from_str(&text) {
            Ok(value) if status < 500 && (status < 400 || has_no_error_field(&value)) => Ok((status, value)),
            _ => Err(failure(status, text)),
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CallError> {
        let resp = req
            .send()
            .await
            .map_err(|e| CallError { message: format!("cannot reach {}: {e}", self.base), exit: Exit::Unavailable })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| CallError {
            message: format!("reading the answer from {}: {e}", self.base),
            exit: Exit::Unavailable,
        })?;
        if status.is_success() {
            return serde_json::from_str(&body).map_err(|e| CallError {
                message: format!("unexpected answer from {}: {e}", self.base),
                exit: Exit::Failed,
            });
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
        502..=504 => Exit::Unavailable,
        400 | 404 | 405 | 422 => Exit::Usage,
        _ => Exit::Failed,
    };
    CallError { message: format!("HTTP {status}: {message}"), exit }
}
