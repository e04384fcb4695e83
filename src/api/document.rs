//! The API's OpenAPI document, generated: each handler's `#[utoipa::path]` gives its own
//! answers, the request and response types give their schemas, and what every route of a
//! guarded group may also answer (401, 403, 429; 400, 408 and 413 for a body; 404 for a name in
//! the path) is added here from the same [`Needs`] the router guards it with. Served at
//! `/openapi.json`; `tests/api_fuzz.rs` holds the server to it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::Method;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{IntoResponses, OpenApi as _, PartialSchema, ToSchema};

use super::auth::Needs;
use super::{body_limit, Written, BODY_TIMEOUT};
use crate::config::auth::Role;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "witness",
        description = "A quorum arbiter for two-site disaster recovery: its state, the decision journal, \
                       operator controls, membership, site agents' heartbeats and the active-site health \
                       check. Every error answers `{\"error\": MESSAGE, \"code\": CODE}` (schema `Error`).",
        license(name = "Apache-2.0")
    ),
    components(schemas(
        super::error::ErrorBody,
        WriteRefused,
        super::FailoverAnswer,
        super::FailoverRefused,
        crate::state::journal::Event
    )),
    tags(
        (name = "health", description = "Liveness, readiness and the active-site check: open to anyone."),
        (name = "status", description = "The cluster's state, as this node has it."),
        (name = "journal", description = "The decision journal, paged or as it commits."),
        (name = "control", description = "Operator orders: failover, failback, pause, resume, ack, automation."),
        (name = "plan", description = "The failover plan of a group: check, retry or skip a step."),
        (name = "members", description = "The witness nodes: list, add, remove."),
        (name = "agents", description = "Site agents' heartbeats and leases."),
    )
)]
struct ApiDoc;

/// The document, built once from the routes.
pub fn document() -> &'static OpenApi {
    static DOCUMENT: OnceLock<OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        for (needs, routes) in super::routes() {
            let mut part = routes.into_openapi();
            for (path, item) in part.paths.paths.iter_mut() {
                for (method, operation) in [
                    (Method::GET, &mut item.get),
                    (Method::POST, &mut item.post),
                    (Method::DELETE, &mut item.delete),
                    (Method::PUT, &mut item.put),
                    (Method::PATCH, &mut item.patch),
                ] {
                    if let Some(operation) = operation {
                        annotate(operation, needs.as_ref(), &method, path);
                    }
                }
            }
            doc.merge(part);
        }
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A token made with `witness token new`, listed in the node's `[auth]`."))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "client_certificate",
            SecurityScheme::MutualTls {
                description: Some("A certificate from the cluster CA naming a site (`site-NAME`).".into()),
                deprecated: None,
                extensions: None,
            },
        );
        doc
    })
}

/// Adds to `operation` what its guard states: who may call it, and what the guard and the
/// layers in front of every handler may answer instead of it.
fn annotate(operation: &mut Operation, needs: Option<&Needs>, method: &Method, path: &str) {
    let who = match needs {
        None => "Open to anyone; credentials are not read.".to_string(),
        Some(Needs::Open) => "Open to anyone; credentials, when sent, must be valid.".to_string(),
        Some(Needs::Metrics) => {
            "Needs role `viewer` or above, or nothing with `[auth] metrics = \"open\"`.".to_string()
        }
        Some(Needs::Role(Role::Viewer)) => {
            "Needs role `viewer` or above, or nothing with `[auth] anonymous = \"viewer\"`.".to_string()
        }
        Some(Needs::Role(role)) => format!("Needs role `{role}` or above."),
        Some(Needs::SiteInPath) => "Needs the site named in the path: a token with role `site:NAME`, or a \
                                   client certificate naming the site."
            .to_string(),
        Some(Needs::Peer) => "Witness nodes only.".to_string(),
    };
    // The same, for programs (the fuzzer's role checks read it).
    let role = match needs {
        None | Some(Needs::Open) => "none".to_string(),
        Some(Needs::Metrics) => "metrics".to_string(),
        Some(Needs::Role(role)) => role.to_string(),
        Some(Needs::SiteInPath) => "site".to_string(),
        Some(Needs::Peer) => "node".to_string(),
    };
    let extensions = ExtensionsBuilder::new().add("x-witness-needs", role).build();
    operation.extensions.get_or_insert_with(Default::default).merge(extensions);
    let description = operation.description.take().unwrap_or_default();
    operation.description = Some(if description.is_empty() { who } else { format!("{description}\n\n{who}") });

    let responses = &mut operation.responses.responses;
    let mut add = |status: u16, response: Response| {
        responses.entry(status.to_string()).or_insert_with(|| RefOr::T(response));
    };
    if let Some(needs) = needs {
        let bearer = || SecurityRequirement::new("bearer", Vec::<String>::new());
        operation.security = Some(match needs {
            // Anonymous callers may be allowed to read (`[auth] anonymous`, `metrics`).
            Needs::Open | Needs::Metrics | Needs::Role(Role::Viewer) => vec![bearer(), SecurityRequirement::default()],
            Needs::SiteInPath => vec![bearer(), SecurityRequirement::new("client_certificate", Vec::<String>::new())],
            _ => vec![bearer()],
        });
        let challenge = utoipa::openapi::header::Header::new(String::schema());
        add(401, error("No valid credentials (`unauthorized`).").header("WWW-Authenticate", challenge).build());
        if *needs != Needs::Open {
            add(403, error("The caller's role does not allow this request (`forbidden`).").build());
        }
        if needs.limit(method).is_some() {
            let retry = utoipa::openapi::header::Header::new(u64::schema());
            let limited = error("This credential's rate limit is spent (`rate_limited`); retry after `Retry-After` s.");
            add(429, limited.header("Retry-After", retry).build());
        }
    }
    // An optional body (`body::OptionalBody`) is left out, never sent as `null`: its schema is
    // the object's alone.
    if let Some(RefOr::T(body)) = operation.request_body.as_mut() {
        for content in body.content.values_mut() {
            let RefOr::T(Content { schema: Some(schema), .. }) = content else { continue };
            let RefOr::T(Schema::OneOf(one_of)) = schema else { continue };
            let null = |item: &RefOr<Schema>| matches!(item, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
            one_of.items.retain(|item| !null(item));
            if one_of.items.len() == 1 {
                let only = one_of.items.pop().expect("one item");
                *schema = only;
            }
        }
    }
    let params = operation.parameters.as_deref().unwrap_or_default();
    let named = params.iter().any(|p| {
        matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path && ["group", "site"].contains(&p.name.as_str()))
    });
    if operation.request_body.is_some() || !params.is_empty() {
        add(400, error("The request does not parse: the message names the field (`bad_request`).").build());
    }
    if named {
        add(404, error("No group or site has that name (`not_found`).").build());
    }
    if operation.request_body.is_some() {
        let late = format!("The request body did not arrive within {} s (`timeout`).", BODY_TIMEOUT.as_secs());
        add(408, error(&late).build());
        let limit = body_limit(path) / 1024;
        add(413, error(&format!("The request body is larger than {limit} KiB (`too_large`).")).build());
    }
}

/// A response whose body is the one error shape.
fn error(description: &str) -> ResponseBuilder {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
    ResponseBuilder::new().description(description).content("application/json", content)
}

fn json(description: &str, schema: &str) -> RefOr<Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
    RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
}

/// A 409 of a write: refused when applied (the rejection, as `Written`), or by the leader
/// before it reached the log (the error shape). Documentation only: the server answers one
/// of the two types.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum WriteRefused {
    Rejected(Written),
    Error(super::error::ErrorBody),
}

/// One message of the journal's event stream, as Server-Sent Events frame it. Documentation
/// only: the stream writes these fields itself.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JournalMessage {
    /// Always `journal`.
    #[schema(pattern = "^journal$")]
    event: String,
    /// The event's sequence number (`seq`): a reconnecting client sends the last as
    /// `Last-Event-ID`.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// One journal event (schema `Event`) as JSON.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// What a request carried out on the leader may answer when the leader cannot be had.
pub struct LeaderErrors;

impl IntoResponses for LeaderErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            ("500".into(), RefOr::T(error("Raft stopped on this node (`fatal`), or a bug (`internal`).").build())),
            (
                "502".into(),
                RefOr::T(error("The leader could not be reached: nothing happened (`leader_unreachable`).").build()),
            ),
            (
                "503".into(),
                RefOr::T(
                    error(
                        "No leader right now (`no_leader`, `leader_moved`): retry shortly; or the outcome is \
                         unknown (`outcome_unknown`): read the state before retrying.",
                    )
                    .build(),
                ),
            ),
        ])
    }
}

/// A committed write's answers: done, refused, or not known.
pub struct WriteAnswers;

impl IntoResponses for WriteAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        on_the_leader(
            json("Committed and applied.", "Written"),
            json("Committed but refused by the state (`outcome: rejected`), or refused by the leader.", "WriteRefused"),
        )
    }
}

/// An operator's failover or failback: done or a dry run's verdict, or refused.
pub struct OrderAnswers;

impl IntoResponses for OrderAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        on_the_leader(
            json("Failed over, or the dry run's verdict.", "FailoverAnswer"),
            json(
                "Refused by a check (unless forced), already there, or the group moved meanwhile \
                 (`failover.outcome`); or refused by the leader.",
                "FailoverRefused",
            ),
        )
    }
}

/// The answers of a request carried out on the leader: `done` (200), `refused` (409), and
/// [`LeaderErrors`].
fn on_the_leader(done: RefOr<Response>, refused: RefOr<Response>) -> BTreeMap<String, RefOr<Response>> {
    let mut answers = BTreeMap::from([("200".into(), done), ("409".into(), refused)]);
    answers.append(&mut LeaderErrors::responses());
    answers
}

#[cfg(test)]
mod tests {
    /// `WITNESS_PRINT_OPENAPI=1 cargo test --lib print_the_document -- --nocapture` prints it.
    #[test]
    fn print_the_document() {
        let text = super::document().to_pretty_json().expect("serializable");
        if std::env::var_os("WITNESS_PRINT_OPENAPI").is_some() {
            println!("{text}");
        }
    }
}
