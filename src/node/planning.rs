//! One plan step attempt, as the leader's runtime (`leading.rs`) starts it: committed as
//! `StepStarted` before anything is done, run through the executors (`crate::actions`), its
//! result committed. Which attempt starts and when, and which are abandoned, is the leader's
//! (`crate::leader`). Also `witness plan check`: every step's check, changing nothing.

use std::sync::Arc;

use super::leader::{LeaderReply, LeaderRequest};
use super::Node;
use crate::actions::{Executors, Observed, StepContext};
use crate::clock::Stopwatch;
use crate::config::StepConfig;
use crate::engine::plan::Attempt;
use crate::leader::readiness::TargetState;
use crate::state::plan::StepOutcome;
use crate::state::Response;

/// One attempt: committed as started, carried out, its result committed. Nothing is done
/// unless the start committed (only the leader can commit, and only the next attempt fits).
pub(super) async fn run_attempt(
    node: Arc<Node>,
    x: Arc<Executors>,
    step: Option<StepConfig>,
    a: Attempt,
    ctx: StepContext,
) {
    match node.submit(LeaderRequest::Write(a.started()), true).await {
        Ok(LeaderReply::Written { response: Response::Plan(_), .. }) => {}
        Ok(reply) => {
            tracing::info!(reply = %crate::telemetry::json(&reply), group = %a.group, step = %a.step, "plan step start refused");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, group = %a.group, step = %a.step, "plan step start not committed");
            return;
        }
    }
    tracing::info!(group = %a.group, step = %a.step, attempt = a.attempt, epoch = %a.epoch, "plan step started");
    let began = Stopwatch::start();
    let outcome = match &step {
        None => StepOutcome::Failed {
            error: format!("step {:?} is not in this node's config for group {:?}", a.step, a.group),
            retryable: false,
        },
        Some(step) => match x.run(step, &ctx).await {
            Ok(detail) => StepOutcome::Done { detail },
            Err(e) => StepOutcome::Failed { error: e.message, retryable: e.retryable },
        },
    };
    let result = match &outcome {
        StepOutcome::Done { .. } => "done",
        StepOutcome::Failed { retryable: true, .. } => "retry",
        StepOutcome::Failed { .. } => "failed",
    };
    node.metrics.plan_step_seconds.with_label_values(&[a.group.as_str(), &a.step, result]).observe(began.seconds());
    match &outcome {
        StepOutcome::Done { detail } => tracing::info!(group = %a.group, step = %a.step, %detail, "plan step done"),
        StepOutcome::Failed { error, retryable } => {
            tracing::warn!(group = %a.group, step = %a.step, %error, retryable, "plan step failed")
        }
    }
    if let Err(e) = node.submit(LeaderRequest::Write(a.finished(outcome)), true).await {
        // The step stays recorded as running: the next leadership runs it again.
        tracing::warn!(error = %e, group = %a.group, step = %a.step, "plan step result not committed");
    }
}

pub use crate::leader::readiness::StepCheck;

/// What checking a group's plan found, from one node (each node runs the plan when it leads,
/// so each may be checked).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PlanCheck {
    pub node: crate::ids::NodeId,
    pub group: crate::ids::GroupId,
    /// The failover the check is for: away from the active site.
    pub from: crate::ids::SiteId,
    pub to: crate::ids::SiteId,
    pub steps: Vec<StepCheck>,
}

impl PlanCheck {
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

impl Node {
    /// Tests every step of `group`'s plan for reachability and credentials, changing nothing.
    pub async fn check_plan(&self, group: &str) -> Result<PlanCheck, super::leader::NodeError> {
        let executors = Executors::new().map_err(|e| super::leader::NodeError::Fatal(e.to_string()))?;
        self.check_plan_at(group, None, &executors).await
    }

    /// [`Node::check_plan`]; with `observed`, also reads what each step's target holds against
    /// the decision of that epoch (the group's active site then), changing nothing.
    pub async fn check_plan_at(
        &self,
        group: &str,
        observed: Option<crate::state::Epoch>,
        executors: &Executors,
    ) -> Result<PlanCheck, super::leader::NodeError> {
        let config = self.config.groups.iter().find(|g| g.name == group);
        let config = config.ok_or_else(|| super::leader::NodeError::NotFound(format!("unknown group {group:?}")))?;
        let (from, to) = {
            let applied = self.applied.read().expect("state lock poisoned");
            match applied.state.groups.get(group) {
                Some(g) => (g.active.clone(), g.other().clone()),
                None => (config.primary.as_str().into(), config.secondary.as_str().into()),
            }
        };
        // The decision in place: `from` (the site a failover would leave) is active.
        let decision = |step: &str, epoch: crate::state::Epoch| StepContext {
            group: group.to_string(),
            epoch: epoch.0,
            from: to.to_string(),
            to: from.to_string(),
            reason: "readiness check".into(),
            decided_at_ms: 0,
            step: step.to_string(),
        };
        let checks = config.steps.iter().map(|step| {
            let ctx = observed.map(|epoch| decision(&step.name, epoch));
            async move {
                let result = executors.check(step).await;
                let target = match &ctx {
                    Some(ctx) => match executors.observe(step, ctx).await {
                        Ok(Observed::InPlace) => Some(TargetState::InPlace),
                        Ok(Observed::Drifted(what)) => Some(TargetState::Drifted(what)),
                        // Not readable, or the read failed (the check says why, if it fails too).
                        Ok(Observed::Unreadable) | Err(_) => None,
                    },
                    None => None,
                };
                StepCheck {
                    step: step.name.clone(),
                    kind: step.kind.name().to_string(),
                    ok: result.is_ok(),
                    retryable: result.as_ref().err().is_some_and(|e| e.retryable),
                    detail: result.unwrap_or_else(|e| e.message),
                    target,
                }
            }
        });
        let steps = futures::future::join_all(checks).await;
        Ok(PlanCheck { node: self.id, group: group.into(), from, to, steps })
    }
}
