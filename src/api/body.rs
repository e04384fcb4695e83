//! Request bodies as the API takes them: one JSON object, sent as `application/json`, holding
//! no array (no request takes one, and serde would take an array for an object), whose integers
//! fit the 64-bit signed range the OpenAPI document gives them (`int64`; as in JSON Schema,
//! `2.0` is the integer 2), and whose fields deserialize into the request type (unknown fields
//! refused by the types, a field given twice refused here). A refusal
//! is a 400 naming the field, e.g. `request body: groups.app.epoch: invalid type: ...`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// A required body.
pub struct Body<T>(pub T);

/// A body that may be left out (sent without a `Content-Type`); one sent is a JSON object.
pub struct OptionalBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match OptionalBody::from_request(req, state).await?.0 {
            Some(body) => Ok(Body(body)),
            None => Err(bad("missing: send a JSON object with `Content-Type: application/json`")),
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
        let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&format!("not JSON: {e}")))?;
        // A `Value` keeps the last of fields given twice: they are looked for in the text.
        serde_path_to_error::deserialize::<_, Once>(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(|e| bad(&at(&e.path().to_string(), e.inner())))?;
        match &value {
            Value::Object(_) => {}
            other => return Err(bad(&format!("must be a JSON object, not {}", kind(other)))),
        }
        integers(&mut value, String::new()).map_err(|(path, problem)| bad(&format!("{path}: {problem}")))?;
        serde_path_to_error::deserialize(value)
            .map(|t| OptionalBody(Some(t)))
            .map_err(|e| bad(&at(&e.path().to_string(), e.inner())))
    }
}

/// A JSON value read only to find an object field given twice.
struct Once;

impl<'de> serde::Deserialize<'de> for Once {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Once, D::Error> {
        d.deserialize_any(Once)
    }
}

impl<'de> serde::de::Visitor<'de> for Once {
    type Value = Once;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Once, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
            }
            map.next_value::<Once>()?;
        }
        Ok(Once)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Once, A::Error> {
        while seq.next_element::<Once>()?.is_some() {}
        Ok(Once)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Once, E> {
        Ok(Once)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Once, E> {
        Ok(Once)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Once, E> {
        Ok(Once)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Once, E> {
        Ok(Once)
    }
    fn visit_str<E>(self, _: &str) -> Result<Once, E> {
        Ok(Once)
    }
    fn visit_unit<E>(self) -> Result<Once, E> {
        Ok(Once)
    }
}

/// `problem` at `path` (`.` is the body itself).
fn at(path: &str, problem: impl std::fmt::Display) -> String {
    if path == "." {
        problem.to_string()
    } else {
        format!("{path}: {problem}")
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
        assert!(parse(None, r#"{"epoch": 1}"#).await.unwrap().is_none(), "no Content-Type: no body");
        let refused = [
            (json, "[1]", "request body: must be a JSON object, not an array"),
            (json, "null", "request body: must be a JSON object, not null"),
            (json, r#"{"epoch": 1, "inner": {"n": 1, "n": 1}}"#, "request body: inner: duplicate field `n`"),
            (json, r#"{"epoch": 1, "epoch": 1}"#, "request body: duplicate field `epoch`"),
            (json, "{", "request body: not JSON"),
            (json, "", "request body: not JSON"),
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
