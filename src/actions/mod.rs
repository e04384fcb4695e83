//! The failover plan's executors: one module per step kind (`route53`, `rfc2136`,
//! `openstorage`, `webhook`, `command`), each with a `run` that makes the step's effect
//! (idempotently: it may run again for the same group, epoch and step) and a `check` that only
//! tests reachability and credentials. Timeouts and the step's context are applied here; which
//! step runs when, and what a failure means for the plan, is decided elsewhere (the pure
//! `engine::plan` and the replicated `state`).

pub mod command;
mod gather;
pub mod openstorage;
pub mod rfc2136;
pub mod route53;
pub mod secrets;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use crate::config::{Config, StepConfig, StepKind};

/// What a step is run for: decided by the leader (`engine::plan`), carried out here.
pub use crate::engine::plan::StepContext;

/// A step that did not succeed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> StepError {
        StepError { message: message.into(), retryable: true }
    }

    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError { message: message.into(), retryable: false }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.retryable { "retryable" } else { "permanent" };
        write!(f, "{} ({kind})", self.message)
    }
}

/// `Ok` carries a one-line account of what was done, for the journal.
pub type StepResult = Result<String, StepError>;

/// What a config's plans would run into, found before they run: errors (a secret file missing
/// or unreadable) and warnings (a secret file readable by anyone; readiness checks that would
/// take too much of Route 53's request rate). `serve` and `config check` report the same.
pub fn audit(config: &Config) -> (Vec<String>, Vec<String>) {
    let (errors, mut warnings) = secrets::audit(config);
    let route53 = config.groups.iter().flat_map(|g| {
        g.steps.iter().filter_map(move |s| match &s.kind {
            StepKind::Route53(r) => Some((r, g.readiness_interval)),
            _ => None,
        })
    });
    warnings.extend(route53::readiness_load(route53));
    (errors, warnings)
}

/// Clients shared by every step a node runs.
#[derive(Clone)]
pub struct Executors {
    http: reqwest::Client,
}

impl Executors {
    pub fn new() -> anyhow::Result<Executors> {
        crate::tls::init();
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("witness/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Executors { http })
    }

    /// Runs one attempt of `step`, bounded by its timeout (a timeout is retryable: the
    /// effect may or may not have happened, and running again is harmless).
    pub async fn run(&self, step: &StepConfig, ctx: &StepContext) -> StepResult {
        let t = step.timeout;
        match &step.kind {
            StepKind::Route53(s) => bounded(t, route53::run(s, ctx)).await,
            StepKind::Rfc2136(s) => bounded(t, rfc2136::run(s, ctx)).await,
            StepKind::OpenStorage(s) => bounded(t, openstorage::run(&self.http, s, ctx)).await,
            StepKind::Webhook(s) => bounded(t, webhook::run(&self.http, s, ctx)).await,
            // Bounds itself, so that the output of a program it kills still reaches the journal.
            StepKind::Command(s) => command::run(s, ctx, t).await,
        }
    }

    /// Tests reachability and credentials of `step` without changing anything.
    pub async fn check(&self, step: &StepConfig) -> StepResult {
        let attempt = async {
            match &step.kind {
                StepKind::Route53(s) => route53::check(s).await,
                StepKind::Rfc2136(s) => rfc2136::check(s).await,
                StepKind::OpenStorage(s) => openstorage::check(&self.http, s).await,
                StepKind::Webhook(s) => webhook::check(&self.http, s).await,
                StepKind::Command(s) => command::check(s),
            }
        };
        bounded(step.timeout, attempt).await
    }
}

/// What a step's target holds, against the decision a context carries (`to` active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// It holds what the decision says.
    InPlace,
    /// It holds something else: what, in words.
    Drifted(String),
    /// This kind of step has no state to read back (a webhook, a command).
    Unreadable,
}

impl Executors {
    /// Reads what `step`'s target holds and compares it with `ctx`'s decision, changing
    /// nothing: a DNS record holding the active site's values, storage with the active site's
    /// domain active and the other's not. Bounded by the step's timeout.
    pub async fn observe(&self, step: &StepConfig, ctx: &StepContext) -> Result<Observed, StepError> {
        let attempt = async {
            match &step.kind {
                StepKind::Route53(s) => route53::observe(s, ctx).await,
                StepKind::Rfc2136(s) => rfc2136::observe(s, ctx).await,
                StepKind::OpenStorage(s) => openstorage::observe(&self.http, s, ctx).await,
                StepKind::Webhook(_) | StepKind::Command(_) => Ok(Observed::Unreadable),
            }
        };
        match tokio::time::timeout(step.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(StepError::retryable(format!(
                "reading the target timed out after {}",
                crate::config::duration::format(step.timeout)
            ))),
        }
    }
}

async fn bounded(timeout: Duration, attempt: impl std::future::Future<Output = StepResult>) -> StepResult {
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(StepError::retryable(format!("timed out after {}", crate::config::duration::format(timeout)))),
    }
}
