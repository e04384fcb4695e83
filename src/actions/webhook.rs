//! The `webhook` step: POSTs the decision as JSON, signed the Standard Webhooks way
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`). The id is
//! the step's idempotency key, the same on every attempt and every leader, so a receiver can
//! drop repeats. 2xx is done; 4xx other than 408 and 429 is permanent; the rest is retried.

use base64::Engine as _;
use reqwest::StatusCode;
use serde::Serialize;

use super::{secrets, StepContext, StepError, StepResult};
use crate::config::WebhookStep;

#[derive(Debug, Serialize)]
struct Payload<'a> {
    group: &'a str,
    epoch: u64,
    from: &'a str,
    to: &'a str,
    step: &'a str,
    reason: &'a str,
    decided_at: String,
}

pub async fn run(http: &reqwest::Client, step: &WebhookStep, ctx: &StepContext) -> StepResult {
    let body = serde_json::to_vec(&Payload {
        group: &ctx.group,
        epoch: ctx.epoch,
        from: &ctx.from,
        to: &ctx.to,
        step: &ctx.step,
        reason: &ctx.reason,
        decided_at: crate::clock::rfc3339(ctx.decided_at_ms),
    })
    .expect("a payload of strings serializes");
    let id = ctx.idempotency_key();
    let timestamp = (crate::clock::unix_ms() / 1000).to_string();
    let mut request = http
        .post(step.url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", &timestamp);
    if let Some(file) = &step.secret_file {
        let key = signing_key(&secrets::read("secret_file", file)?)?;
        request = request.header("webhook-signature", sign(&key, &id, &timestamp, &body));
    }
    let response = request.body(body).send().await.map_err(|e| StepError::retryable(describe(&step.url, &e)))?;
    let status = response.status();
    match status {
        s if s.is_success() => Ok(format!("POST {} -> {status} (webhook-id {id})", step.url)),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            Err(StepError::retryable(format!("POST {} -> {status}", step.url)))
        }
        s if s.is_client_error() => Err(StepError::permanent(format!(
            "POST {} -> {status}: the receiver refused the request; fix it, then `witness plan retry`",
            step.url
        ))),
        _ => Err(StepError::retryable(format!("POST {} -> {status}", step.url))),
    }
}

/// Reachability only: any HTTP answer (even 404 or 405 to a HEAD) shows the endpoint is there,
/// and the secret file, when configured, must be a usable key.
pub async fn check(http: &reqwest::Client, step: &WebhookStep) -> StepResult {
    if let Some(file) = &step.secret_file {
        signing_key(&secrets::read("secret_file", file)?)?;
    }
    let response =
        http.head(step.url.clone()).send().await.map_err(|e| StepError::retryable(describe(&step.url, &e)))?;
    Ok(format!("{} answered {} (nothing sent)", step.url, response.status()))
}

/// A secret written as `whsec_<base64>` (the Standard Webhooks form) is the decoded bytes;
/// anything else is used as it is.
pub fn signing_key(secret: &[u8]) -> Result<Vec<u8>, StepError> {
    match secret.strip_prefix(b"whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| StepError::permanent("secret_file starts with whsec_ but the rest is not base64")),
        None if secret.is_empty() => Err(StepError::permanent("secret_file is empty")),
        None => Ok(secret.to_vec()),
    }
}

/// `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        ctx.update(part);
    }
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref()))
}

fn describe(url: &reqwest::Url, e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = format!("POST {url}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification's reference implementations.
        let key = signing_key(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signing_key(b"whsec_%%%").is_err());
        assert_eq!(signing_key(b"plain").unwrap(), b"plain");
    }
}
