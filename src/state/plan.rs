//! A failover plan's progress in the replicated state: which step runs, how many attempts it
//! had, what each returned, and whether the plan waits for an operator. Every start and
//! result is a committed command, so a new leader resumes at the first unfinished step; what
//! the steps do is `crate::actions`, and when the next one starts is `crate::engine::plan`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, SiteId};

use super::{DecisionFacts, Epoch};

/// A step as the log knows it: enough to decide what a result means for the plan. How to
/// carry it out stays in the leader's config, looked up by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepSpec {
    pub name: String,
    pub kind: String,
    /// Further attempts after a retryable failure, before the plan is stuck.
    pub retries: u32,
    /// A failure is journaled and the plan goes on (e.g. a notification).
    #[serde(default)]
    pub continue_on_failure: bool,
    /// DNS steps: the TTL of the record they set (clients see the change this much later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// An attempt has started (and, on a new leader, may have been cut short: it runs again).
    Running,
    /// The last attempt failed in a way worth retrying; another will start after a backoff.
    Retrying,
    Done,
    /// Failed for good, and the step said `on_failure = "continue"`.
    Failed,
    /// Failed for good: the plan waits for `witness plan retry` or `skip`.
    Stuck,
    Skipped,
}

impl StepStatus {
    /// The plan has moved past a step in this state.
    pub fn finished(self) -> bool {
        matches!(self, StepStatus::Done | StepStatus::Failed | StepStatus::Skipped)
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        f.write_str(&text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepProgress {
    pub spec: StepSpec,
    pub status: StepStatus,
    /// Attempts in the current round (an operator's retry starts a new round).
    pub attempts: u32,
    /// Leader's wall clock (Unix ms) of the first attempt and of the final result: for reports.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub finished_at_ms: Option<u64>,
    /// The last result: what was done, or the error.
    #[serde(default)]
    pub detail: String,
}

/// The plan of one failover: the group's steps, run in order for this epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub epoch: Epoch,
    pub from: SiteId,
    pub to: SiteId,
    pub reason: String,
    pub decided_at_ms: u64,
    /// The group drains first: the plan runs once the survivor is promoted.
    pub waiting: bool,
    pub steps: Vec<StepProgress>,
    #[serde(default)]
    pub done_at_ms: Option<u64>,
    /// What the leader measured when it decided.
    #[serde(default)]
    pub facts: DecisionFacts,
    /// When the survivor was promoted (at the decision for a group that does not drain).
    #[serde(default)]
    pub promoted_at_ms: Option<u64>,
    /// A drill's planned switchover while both sites were up, not a failover.
    #[serde(default)]
    pub planned: bool,
}

/// The failover a plan carries out.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub epoch: Epoch,
    pub from: &'a str,
    pub to: &'a str,
    pub reason: &'a str,
    pub at_ms: u64,
    pub facts: DecisionFacts,
    /// A drill's switchover.
    pub planned: bool,
}

/// Where a plan stands, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Waiting,
    Running,
    Stuck,
    Done,
}

/// What a step's attempt came to, as the leader reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Done { detail: String },
    Failed { error: String, retryable: bool },
}

/// The journal's account of a change to a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanChange {
    pub group: GroupId,
    pub epoch: Epoch,
    pub step: String,
    pub status: StepStatus,
    pub attempt: u32,
    pub detail: String,
    /// Set when this change finished the plan.
    #[serde(default)]
    pub plan_done: bool,
}

impl Plan {
    pub fn new(d: Decision, waiting: bool, specs: &[StepSpec]) -> Plan {
        Plan {
            epoch: d.epoch,
            from: d.from.into(),
            to: d.to.into(),
            reason: d.reason.to_string(),
            decided_at_ms: d.at_ms,
            waiting,
            steps: specs
                .iter()
                .map(|spec| StepProgress {
                    spec: spec.clone(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    started_at_ms: None,
                    finished_at_ms: None,
                    detail: String::new(),
                })
                .collect(),
            done_at_ms: (specs.is_empty() && !waiting).then_some(d.at_ms),
            facts: d.facts,
            promoted_at_ms: (!waiting).then_some(d.at_ms),
            planned: d.planned,
        }
    }

    /// The survivor is promoted: the plan runs (an empty one is done).
    pub fn promoted(&mut self, at_ms: u64) {
        self.waiting = false;
        self.promoted_at_ms = Some(at_ms);
        if self.steps.is_empty() {
            self.done_at_ms = Some(at_ms);
        }
    }

    /// From the first failed probe to the plan done (the detection measured by the deciding
    /// leader, the rest between log entries); `None` until done.
    pub fn achieved_rto_ms(&self) -> Option<u64> {
        let done = self.done_at_ms?;
        Some(self.facts.detected_after_ms.unwrap_or(0) + done.saturating_sub(self.decided_at_ms))
    }

    /// The longest TTL of the records the plan set: clients see the change this much later.
    pub fn dns_ttl_s(&self) -> Option<u32> {
        self.steps.iter().filter(|s| s.status == StepStatus::Done).filter_map(|s| s.spec.ttl).max()
    }

    /// The first step the plan has not moved past.
    pub fn current(&self) -> Option<usize> {
        self.steps.iter().position(|s| !s.status.finished())
    }

    pub fn phase(&self) -> Phase {
        match self.current() {
            _ if self.waiting => Phase::Waiting,
            None => Phase::Done,
            Some(i) if self.steps[i].status == StepStatus::Stuck => Phase::Stuck,
            Some(_) => Phase::Running,
        }
    }

    /// The current step, if it is `name` and the plan runs.
    fn current_named(&mut self, name: &str) -> Result<&mut StepProgress, String> {
        if self.waiting {
            return Err("the plan waits for the promotion of the survivor".into());
        }
        let Some(i) = self.current() else { return Err("the plan is done".into()) };
        let step = &mut self.steps[i];
        if step.spec.name != name {
            return Err(format!("the current step is {:?}, not {name:?}", step.spec.name));
        }
        Ok(step)
    }

    /// An attempt of step `name` begins; it must be the next one (`attempts + 1`), so of two
    /// leaders racing, one start is refused.
    pub fn start(&mut self, name: &str, attempt: u32, at_ms: u64) -> Result<PlanChange, String> {
        let step = self.current_named(name)?;
        if step.status == StepStatus::Stuck {
            return Err(format!("step {name:?} is stuck: `witness plan retry` or `skip` first"));
        }
        if attempt != step.attempts + 1 {
            return Err(format!("attempt {attempt} of step {name:?}, expected {}", step.attempts + 1));
        }
        step.status = StepStatus::Running;
        step.attempts = attempt;
        step.started_at_ms.get_or_insert(at_ms);
        Ok(self.change(name, attempt, String::new()))
    }

    /// The result of attempt `attempt` of step `name`. A late result of an earlier attempt is
    /// refused: the attempt that superseded it decides (steps are idempotent).
    pub fn finish(&mut self, name: &str, attempt: u32, outcome: StepOutcome, at_ms: u64) -> Result<PlanChange, String> {
        let step = self.current_named(name)?;
        if step.status != StepStatus::Running || step.attempts != attempt {
            return Err(format!(
                "result of attempt {attempt} of step {name:?}, which is {} at attempt {}",
                step.status, step.attempts
            ));
        }
        let (status, detail) = match outcome {
            StepOutcome::Done { detail } => (StepStatus::Done, detail),
            StepOutcome::Failed { error, retryable } if retryable && attempt <= step.spec.retries => {
                (StepStatus::Retrying, error)
            }
            StepOutcome::Failed { error, .. } if step.spec.continue_on_failure => (StepStatus::Failed, error),
            StepOutcome::Failed { error, .. } => (StepStatus::Stuck, error),
        };
        step.status = status;
        step.detail = detail.clone();
        if status.finished() {
            step.finished_at_ms = Some(at_ms);
        }
        self.finished(at_ms);
        Ok(self.change(name, attempt, detail))
    }

    /// The plan has no step left: it is done, and when it was first done stays (a reconcile
    /// running steps again does not change the failover's achieved RTO).
    fn finished(&mut self, at_ms: u64) {
        if self.current().is_none() {
            self.done_at_ms.get_or_insert(at_ms);
        }
    }

    /// An operator's repair of drift: step `name` (every step, without one) of a finished plan
    /// runs again for the same epoch, a fresh round of attempts, fenced by the epoch like the
    /// first run. The plan's record of the failover (its decision, when it was first done)
    /// stays.
    pub fn reconcile(&mut self, name: Option<&str>, automatic: bool) -> Result<PlanChange, String> {
        if self.phase() != Phase::Done {
            return Err(format!(
                "the plan is {}, not done: it is still putting the decision in place",
                self.phase_name()
            ));
        }
        let mut chosen = self.steps.iter_mut().filter(|s| name.is_none_or(|n| s.spec.name == n)).peekable();
        if chosen.peek().is_none() {
            return Err(format!("the plan has no step {:?}", name.unwrap_or_default()));
        }
        for step in chosen {
            step.status = StepStatus::Pending;
            step.attempts = 0;
            step.finished_at_ms = None;
        }
        let first = self.current().map(|i| self.steps[i].spec.name.clone()).unwrap_or_default();
        let by = if automatic { "automatic: the group repairs drift" } else { "operator" };
        Ok(self.change(&first, 0, format!("reconcile: {} again ({by})", name.unwrap_or("every step"))))
    }

    fn phase_name(&self) -> String {
        serde_json::to_value(self.phase()).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    /// An operator's answer to a stuck plan: run the step again (a fresh round of attempts),
    /// or move past it.
    pub fn resolve_stuck(&mut self, skip: bool, at_ms: u64) -> Result<PlanChange, String> {
        let Some(i) = self.current() else { return Err("the plan is done".into()) };
        let step = &mut self.steps[i];
        if step.status != StepStatus::Stuck {
            return Err(format!("step {:?} is {}, not stuck", step.spec.name, step.status));
        }
        let (name, attempt) = (step.spec.name.clone(), step.attempts);
        if skip {
            step.status = StepStatus::Skipped;
            step.finished_at_ms = Some(at_ms);
        } else {
            step.status = StepStatus::Pending;
            step.attempts = 0;
        }
        self.finished(at_ms);
        Ok(self.change(&name, attempt, String::new()))
    }

    fn change(&self, name: &str, attempt: u32, detail: String) -> PlanChange {
        let status = self.steps.iter().find(|s| s.spec.name == name).map_or(StepStatus::Pending, |s| s.status);
        PlanChange {
            group: GroupId::default(),
            epoch: self.epoch,
            step: name.to_string(),
            status,
            attempt,
            detail,
            plan_done: !self.waiting && self.current().is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, retries: u32, continue_on_failure: bool) -> StepSpec {
        StepSpec { name: name.into(), kind: "command".into(), retries, continue_on_failure, ttl: None }
    }

    fn decision(at_ms: u64) -> Decision<'static> {
        Decision {
            epoch: Epoch(2),
            from: "east",
            to: "west",
            reason: "east down",
            at_ms,
            facts: DecisionFacts::default(),
            planned: false,
        }
    }

    fn failed(retryable: bool) -> StepOutcome {
        StepOutcome::Failed { error: "boom".into(), retryable }
    }

    #[test]
    fn steps_run_in_order_with_retries_continue_and_stuck() {
        let specs = [spec("notify", 0, true), spec("dns", 1, false)];
        let mut plan = Plan::new(decision(10), true, &specs);
        assert_eq!(plan.phase(), Phase::Waiting);
        assert!(plan.start("notify", 1, 11).is_err(), "waits for promotion");
        plan.waiting = false;
        assert!(plan.start("dns", 1, 11).is_err(), "not the current step");
        assert!(plan.start("notify", 2, 11).is_err(), "attempts count from 1");
        plan.start("notify", 1, 11).unwrap();
        assert_eq!(plan.finish("notify", 1, failed(true), 12).unwrap().status, StepStatus::Failed, "no retries left");
        plan.start("dns", 1, 13).unwrap();
        assert!(plan.start("dns", 1, 13).is_err(), "a second start of the same attempt is refused");
        assert_eq!(plan.finish("dns", 1, failed(true), 14).unwrap().status, StepStatus::Retrying);
        assert!(plan.finish("dns", 1, failed(true), 14).is_err(), "a result without an attempt is refused");
        plan.start("dns", 2, 15).unwrap();
        assert_eq!(plan.finish("dns", 2, failed(true), 16).unwrap().status, StepStatus::Stuck);
        assert_eq!(plan.phase(), Phase::Stuck);
        assert!(plan.start("dns", 3, 17).is_err(), "stuck waits for an operator");
        plan.resolve_stuck(false, 18).unwrap();
        plan.start("dns", 1, 19).unwrap();
        let change = plan.finish("dns", 1, StepOutcome::Done { detail: "ok".into() }, 20).unwrap();
        assert!(change.plan_done);
        assert_eq!((plan.phase(), plan.done_at_ms), (Phase::Done, Some(20)));
        assert!(plan.resolve_stuck(true, 21).is_err());
    }

    #[test]
    fn a_permanent_failure_sticks_at_once_and_skip_moves_on() {
        let mut plan = Plan::new(decision(0), false, &[spec("dns", 5, false)]);
        plan.start("dns", 1, 1).unwrap();
        assert_eq!(plan.finish("dns", 1, failed(false), 2).unwrap().status, StepStatus::Stuck);
        assert!(plan.resolve_stuck(true, 3).unwrap().plan_done);
        assert_eq!(plan.steps[0].status, StepStatus::Skipped);
    }

    /// `witness plan reconcile`: only a done plan; the step (or every step) runs again as a fresh
    /// round, for the same epoch; the failover's record (when it was first done) stays.
    #[test]
    fn a_reconcile_runs_a_done_plans_step_again_and_keeps_the_failovers_record() {
        let done = |detail: &str| StepOutcome::Done { detail: detail.into() };
        let mut plan = Plan::new(decision(0), false, &[spec("storage", 0, false), spec("dns", 0, false)]);
        assert!(plan.reconcile(None, false).is_err(), "not while the plan runs");
        plan.start("storage", 1, 1).unwrap();
        plan.finish("storage", 1, done("ok"), 2).unwrap();
        plan.start("dns", 1, 3).unwrap();
        plan.finish("dns", 1, done("ok"), 4).unwrap();
        assert!(plan.reconcile(Some("route53"), false).unwrap_err().contains("no step \"route53\""));
        let change = plan.reconcile(Some("dns"), false).unwrap();
        assert_eq!((change.step.as_str(), change.status, change.plan_done), ("dns", StepStatus::Pending, false));
        assert_eq!((plan.phase(), plan.steps[0].status), (Phase::Running, StepStatus::Done), "storage stays done");
        assert!(plan.start("storage", 1, 5).is_err(), "only the reconciled step runs");
        plan.start("dns", 1, 5).unwrap();
        assert!(plan.finish("dns", 1, done("again"), 6).unwrap().plan_done);
        assert_eq!((plan.phase(), plan.done_at_ms, plan.achieved_rto_ms()), (Phase::Done, Some(4), Some(4)));
        // Every step: the first runs first.
        assert_eq!(plan.reconcile(None, false).unwrap().step, "storage");
        assert_eq!(plan.steps.iter().filter(|s| s.status == StepStatus::Pending).count(), 2);
    }

    #[test]
    fn a_restarted_attempt_supersedes_the_running_one() {
        let mut plan = Plan::new(decision(0), false, &[spec("dns", 3, false)]);
        plan.start("dns", 1, 1).unwrap();
        // A new leader finds the step running and starts it again.
        plan.start("dns", 2, 2).unwrap();
        assert!(plan.finish("dns", 1, StepOutcome::Done { detail: "late".into() }, 3).is_err());
        assert_eq!(
            plan.finish("dns", 2, StepOutcome::Done { detail: "ok".into() }, 4).unwrap().status,
            StepStatus::Done
        );
    }
}

#[cfg(test)]
mod achieved {
    use super::*;

    #[test]
    fn rto_runs_from_the_first_failed_probe_to_the_plan_done_and_ttl_is_added_for_clients() {
        let facts = DecisionFacts { detected_after_ms: Some(1200), rpo_ms: Some(0) };
        let d =
            Decision { epoch: Epoch(2), from: "east", to: "west", reason: "", at_ms: 10_000, facts, planned: false };
        let dns = StepSpec {
            name: "dns".into(),
            kind: "rfc2136".into(),
            retries: 0,
            continue_on_failure: false,
            ttl: Some(60),
        };
        let mut plan = Plan::new(d, false, &[dns]);
        assert_eq!(plan.achieved_rto_ms(), None, "not done yet");
        plan.start("dns", 1, 10_010).unwrap();
        plan.finish("dns", 1, StepOutcome::Done { detail: String::new() }, 10_050).unwrap();
        assert_eq!((plan.achieved_rto_ms(), plan.dns_ttl_s()), (Some(1250), Some(60)));

        // An empty plan of a group with agents is done when the survivor is promoted.
        let mut empty = Plan::new(d, true, &[]);
        assert_eq!((empty.phase(), empty.achieved_rto_ms()), (Phase::Waiting, None));
        empty.promoted(11_500);
        assert_eq!((empty.phase(), empty.achieved_rto_ms()), (Phase::Done, Some(2700)));
    }
}
