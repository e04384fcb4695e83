//! Request bodies as the API takes them: one JSON object, sent as `application/json`, holding
//! no array (no request takes one, and serde would take an array for an object), whose integers
//! fit the 64-bit signed range the OpenAPI document gives them (`int64`; as in JSON Schema,
//! `2.0` is the integer 2), and whose fields deserialize into the request type (unknown fields
//! refused by the types). A refusal
//! is a 400 naming the field, e.g. `request body: groups.app.epoch: invalid type: ...`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// A required body.
pub struct Body<T>(pub T);

/// A body that may be left out: no `Content-Type`, nothing, or `null`.
pub struct OptionalBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req.headers().contains_key(header::CONTENT_TYPE);
        match OptionalBody::from_request(req, state).await?.0 {
            Some(body) => Ok(Body(body)),
            None if !json => Err(bad("missing: send a JSON object with `Content-Type: application/json`")),
            None => Err(bad("missing: a JSON object is required")),
        }
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or_default().to_string());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| bad(&e.body_text()))?;
        let Some(content_type) = content_type else { return Ok(OptionalBody(None)) };
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(bad(&format!("Content-Type {content_type:?}: send `application/json`")));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(None));
        }
        let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&format!("not JSON: {e}")))?;
        match &value {
            Value::Null => return Ok(OptionalBody(None)),
            Value::Object(_) => {}
            other => return Err(bad(&format!("must be a JSON object, not {}", kind(other)))),
        }
        integers(&mut value, String::new()).map_err(|(path, problem)| bad(&format!("{path}: {problem}")))?;
        serde_path_to_error::deserialize(value).map(|t| OptionalBody(Some(t))).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            bad(&if path == "." { inner.to_string() } else { format!("{path}: {inner}") })
        })
    }
}

fn bad(problem: &str) -> ApiError {
    ApiError::BadRequest(format!("request body: {problem}"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Makes every integral number an integer (`2.0` becomes `2`), or names the first (by its
/// path) beyond `i64::MAX`, or the first array.
fn integers(value: &mut Value, path: String) -> Result<(), (String, String)> {
    let beyond = |n: &serde_json::Number| format!("{n} is larger than the largest integer taken, 2^63 - 1");
    let join = |key: &dyn std::fmt::Display| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::Number(n) => {
            let too_large = n.as_u64().is_some_and(|n| n > i64::MAX as u64);
            let integral = n.as_f64().filter(|f| !n.is_i64() && !n.is_u64() && f.fract() == 0.0);
            match integral {
                _ if too_large => Err((path, beyond(n))),
                Some(f) if f.abs() >= 2f64.powi(63) => Err((path, beyond(n))),
                Some(f) => {
                    *n = serde_json::Number::from(f as i64);
                    Ok(())
                }
                None => Ok(()),
            }
        }
        Value::Array(_) => Err((path, "an array, where no request takes one".into())),
        Value::Object(fields) => fields.iter_mut().try_for_each(|(k, v)| integers(v, join(k))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        epoch: u64,
        inner: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u64,
    }

    async fn parse(content_type: Option<&str>, body: &str) -> Result<Option<Order>, String> {
        let mut req = Request::builder().method("POST").uri("/");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = req.body(axum::body::Body::from(body.to_string())).unwrap();
        OptionalBody::<Order>::from_request(req, &()).await.map(|b| b.0).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn only_a_json_object_within_int64_is_taken_and_refusals_name_the_field() {
        let json = Some("application/json; charset=utf-8");
        assert_eq!(parse(json, r#"{"epoch": 9223372036854775807}"#).await.unwrap().unwrap().epoch, i64::MAX as u64);
        assert_eq!(parse(json, r#"{"epoch": 90.0}"#).await.unwrap().unwrap().epoch, 90);
        for none in ["", "  ", "null"] {
            assert!(parse(json, none).await.unwrap().is_none(), "{none:?}");
        }
        assert!(parse(None, r#"{"epoch": 1}"#).await.unwrap().is_none(), "no Content-Type: no body");
        let refused = [
            (json, "[1]", "request body: must be a JSON object, not an array"),
            (json, "{", "request body: not JSON"),
            (Some("text/plain"), "{}", "request body: Content-Type \"text/plain\": send `application/json`"),
            (json, r#"{"epoch": 9223372036854775808}"#, "request body: epoch: 9223372036854775808 is larger"),
            (json, r#"{"epoch": 1e19}"#, "request body: epoch: 1e+19 is larger"),
            (json, r#"{"epoch": 1.5}"#, "request body: epoch: invalid type: floating point"),
            (
                json,
                r#"{"epoch": 1, "inner": {"n": 18446744073709551615}}"#,
                "request body: inner.n: 18446744073709551615",
            ),
            (json, r#"{"epoch": 1, "inner": {"n": "1"}}"#, "request body: inner.n: invalid type: string"),
            (json, r#"{"epoch": 1, "inner": [1]}"#, "request body: inner: an array, where no request takes one"),
            (json, r#"{"epoch": 1, "x": 1}"#, "request body: x: unknown field `x`"),
            (json, r#"{}"#, "request body: missing field `epoch`"),
        ];
        for (ct, body, want) in refused {
            let got = parse(ct, body).await.unwrap_err();
            assert!(got.starts_with(want), "{body}: {got}");
        }
    }
}
