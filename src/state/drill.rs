//! A DR drill in the replicated state: a planned switchover of a group to its other site while
//! both are up, and with `back`, a return after a hold, each leg under the normal lease
//! protocol and plan. The state records each leg's plan as it finishes and ends the drill when
//! the last leg is done, when a real failover takes the group (the drill gives way), or when
//! the leader cannot bring it back; the report is derived from that record, so every node
//! serves the same one. When the legs start is the leader's business (`leader::drills`).

use serde::{Deserialize, Serialize};

use super::plan::{Plan, StepStatus};
use super::{Epoch, SiteId};

/// The most finished drills kept per group; older ones live on in the journal only.
pub const KEPT: usize = 10;

/// What an operator asked for, and what the leader's config said the group should achieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillSpec {
    /// How long to stay on the other site before returning (with `back`).
    pub hold_ms: u64,
    /// Return to the site the drill started from.
    pub back: bool,
    pub reason: String,
    /// Who asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When the order reached the leader (its wall clock, Unix ms): the decision phase
    /// starts here.
    pub requested_at_ms: u64,
    pub budget: DrillBudget,
}

/// The group's RTO terms from the leader's config (`config::budget`), to compare each leg
/// with: a switchover has no detection nor hold-down, so a leg's time plus those stages of the
/// worst-case budget and the DNS TTL is what a real failure would have taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillBudget {
    /// The worst-case RTO budget of the group, all stages.
    pub budget_ms: u64,
    /// Its detection and hold-down stages: what a real failure adds before the decision.
    pub unplanned_ms: u64,
    /// The longest TTL of the plan's DNS records: clients follow this much later.
    pub ttl_ms: u64,
    /// The group's worst-case budget for the stages a switchover goes through (lease wait,
    /// Raft commit, plan steps).
    pub switchover_ms: u64,
}

impl DrillBudget {
    /// The terms of a group's worst-case budget (`config::budget::rto_budget`).
    pub fn of(budget: &crate::config::budget::RtoBudget) -> DrillBudget {
        let stage = |names: &[&str]| -> u64 {
            budget.stages.iter().filter(|(s, _, _)| names.contains(s)).map(|(_, d, _)| d.as_millis() as u64).sum()
        };
        DrillBudget {
            budget_ms: budget.total.as_millis() as u64,
            unplanned_ms: stage(&["detection", "hold-down"]),
            ttl_ms: stage(&["DNS TTL"]),
            switchover_ms: stage(&["lease wait", "Raft commit", "plan steps"]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "why")]
pub enum DrillOutcome {
    /// Every leg done, every step done, each within the objective.
    Passed,
    /// It ended, but something did not go as planned: what.
    Failed(Vec<String>),
    /// A real failover (or an operator's) took the group: the drill gave way.
    Interrupted(String),
}

/// One drill of a group, open or finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drill {
    /// The group's epoch when the drill started: unique per group.
    pub id: Epoch,
    pub from: SiteId,
    pub to: SiteId,
    pub spec: DrillSpec,
    /// The group's RTO objective.
    pub objective_ms: u64,
    /// The epoch each leg moved the group to, in order.
    pub epochs: Vec<Epoch>,
    /// Each finished leg's plan (its decision, promotion, steps and completion), in order.
    pub legs: Vec<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DrillOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
}

impl Drill {
    /// How many legs the drill has: out, and back if asked.
    pub fn planned_legs(&self) -> usize {
        if self.spec.back {
            2
        } else {
            1
        }
    }

    /// Out and done, waiting to return: the leader's hold runs.
    pub fn holding(&self) -> bool {
        self.outcome.is_none() && self.spec.back && self.epochs.len() == 1 && self.legs.len() == 1
    }

    /// The plan of the leg under way finished (`plan` is the group's plan): it is recorded,
    /// and when it was the last leg the drill ends. True when the drill ended.
    pub fn leg_done(&mut self, plan: &Plan, at_ms: u64) -> bool {
        let open = self.legs.len() < self.epochs.len();
        if !open || self.epochs.last() != Some(&plan.epoch) || plan.done_at_ms.is_none() {
            return false;
        }
        self.legs.push(plan.clone());
        if self.legs.len() < self.planned_legs() {
            return false;
        }
        let report = self.report();
        let problems: Vec<String> = report.legs.iter().flat_map(|l| l.problems.clone()).collect();
        self.end(if problems.is_empty() { DrillOutcome::Passed } else { DrillOutcome::Failed(problems) }, at_ms);
        true
    }

    /// Ends the drill; `current` is the group's plan, recorded if it was a leg's and
    /// unfinished.
    pub fn end_with(&mut self, outcome: DrillOutcome, current: Option<&Plan>, at_ms: u64) {
        if let Some(plan) =
            current.filter(|p| self.legs.len() < self.epochs.len() && self.epochs.last() == Some(&p.epoch))
        {
            self.legs.push(plan.clone());
        }
        self.end(outcome, at_ms);
    }

    fn end(&mut self, outcome: DrillOutcome, at_ms: u64) {
        self.outcome = Some(outcome);
        self.finished_at_ms = Some(at_ms);
    }

    pub fn passed(&self) -> bool {
        self.outcome == Some(DrillOutcome::Passed)
    }

    /// A line's worth, for status and the dashboard.
    pub fn brief(&self) -> DrillBrief {
        let report = self.report();
        DrillBrief {
            id: self.id,
            status: report.status,
            from: self.from.clone(),
            to: self.to.clone(),
            back: self.spec.back,
            legs_done: self.legs.len(),
            requested_at_ms: self.spec.requested_at_ms,
            finished_at_ms: self.finished_at_ms,
            total_ms: report.total_ms,
        }
    }

    /// The report: every phase of every leg timed, against the budget and the objective.
    pub fn report(&self) -> DrillReport {
        let mut legs = Vec::new();
        let mut after_ms = self.spec.requested_at_ms;
        let b = &self.spec.budget;
        for (i, plan) in self.legs.iter().enumerate() {
            let name = if i == 0 { "out" } else { "back" };
            legs.push(LegReport::of(name, plan, after_ms, Some(b.unplanned_ms), b.ttl_ms, self.objective_ms));
            after_ms = plan.done_at_ms.unwrap_or(plan.decided_at_ms) + self.spec.hold_ms;
        }
        let status = match &self.outcome {
            None => "running",
            Some(DrillOutcome::Passed) => "passed",
            Some(DrillOutcome::Failed(_)) => "failed",
            Some(DrillOutcome::Interrupted(_)) => "interrupted",
        };
        let problems = match &self.outcome {
            Some(DrillOutcome::Failed(why)) => why.clone(),
            Some(DrillOutcome::Interrupted(why)) => vec![why.clone()],
            _ => Vec::new(),
        };
        DrillReport {
            id: self.id,
            from: self.from.clone(),
            to: self.to.clone(),
            back: self.spec.back,
            hold_ms: self.spec.hold_ms,
            reason: self.spec.reason.clone(),
            by: self.spec.by.clone(),
            requested_at_ms: self.spec.requested_at_ms,
            finished_at_ms: self.finished_at_ms,
            total_ms: self.finished_at_ms.map(|f| f.saturating_sub(self.spec.requested_at_ms)),
            status: status.into(),
            problems,
            objective_ms: self.objective_ms,
            budget: self.spec.budget,
            legs,
        }
    }
}

/// A drill in a line: the one under way, or the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillBrief {
    pub id: Epoch,
    /// `running`, `passed`, `failed` or `interrupted`.
    pub status: String,
    pub from: SiteId,
    pub to: SiteId,
    pub back: bool,
    pub legs_done: usize,
    pub requested_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

/// A drill as operators, change tickets and the dashboard read it. Times are the leader's
/// wall clock (Unix ms) and differences of it: records, never decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrillReport {
    pub id: Epoch,
    pub from: SiteId,
    pub to: SiteId,
    pub back: bool,
    pub hold_ms: u64,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub requested_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// From the order to the drill's end, hold included.
    pub total_ms: Option<u64>,
    /// `running`, `passed`, `failed` or `interrupted`.
    pub status: String,
    /// What failed, or what interrupted it.
    pub problems: Vec<String>,
    pub objective_ms: u64,
    pub budget: DrillBudget,
    pub legs: Vec<LegReport>,
}

/// One move of a group, phase by phase: `decision_ms + drain_ms + steps_ms` is `total_ms`,
/// from what set it off (a drill's order or the hold's end; a failure) to the plan done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegReport {
    /// `out` or `back` (a drill's), `failover`.
    pub leg: String,
    pub from: SiteId,
    pub to: SiteId,
    pub epoch: Epoch,
    /// From the order (the hold's end, for the way back; the failure, for a failover) to the
    /// move committed.
    pub decision_ms: u64,
    /// From the decision to the promotion: the old site's leases expiring and the new site's
    /// agent draining (zero for a group without agents).
    pub drain_ms: u64,
    /// From the promotion to the plan done.
    pub steps_ms: Option<u64>,
    pub total_ms: Option<u64>,
    pub steps: Vec<StepTiming>,
    /// What clients would wait in a real failure, DNS TTL included: for a drill's leg, its
    /// time from the decision plus the budget's detection and hold-down; for a failover, its
    /// time from the failure.
    pub projected_rto_ms: Option<u64>,
    /// The data the survivor's copy lacked at the decision, as its agent reported (`None`
    /// without agents).
    pub rpo_ms: Option<u64>,
    /// What went wrong in this leg: a step not done, a leg unfinished, the objective missed.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepTiming {
    pub step: String,
    pub kind: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub took_ms: Option<u64>,
    pub detail: String,
}

impl LegReport {
    /// `plan`'s move, named `leg`, set off at `start_ms`; `unplanned_ms` is what a real failure
    /// would add before the decision (`None` for a failover: its decision phase is that).
    pub fn of(
        leg: &str,
        plan: &Plan,
        start_ms: u64,
        unplanned_ms: Option<u64>,
        ttl_ms: u64,
        objective_ms: u64,
    ) -> LegReport {
        let decided = plan.decided_at_ms;
        let promoted = plan.promoted_at_ms.unwrap_or(decided);
        let steps: Vec<StepTiming> = plan
            .steps
            .iter()
            .map(|s| StepTiming {
                step: s.spec.name.clone(),
                kind: s.spec.kind.clone(),
                status: s.status,
                attempts: s.attempts,
                took_ms: s.started_at_ms.zip(s.finished_at_ms).map(|(a, b)| b.saturating_sub(a)),
                detail: s.detail.clone(),
            })
            .collect();
        let decision_ms = decided.saturating_sub(start_ms);
        let total_ms = plan.done_at_ms.map(|d| d.saturating_sub(start_ms));
        let projected_rto_ms =
            plan.done_at_ms.map(|d| d.saturating_sub(decided) + unplanned_ms.unwrap_or(decision_ms) + ttl_ms);
        let mut problems: Vec<String> = steps
            .iter()
            .filter(|s| s.status != StepStatus::Done)
            .map(|s| format!("{} -> {}: step {} {}: {}", plan.from, plan.to, s.step, s.status, s.detail))
            .collect();
        match projected_rto_ms {
            None => problems.push(format!("{} -> {}: not finished", plan.from, plan.to)),
            Some(rto) if rto > objective_ms => problems.push(format!(
                "{} -> {}: {} ms with detection, hold-down and TTL, over the RTO objective of {} ms",
                plan.from, plan.to, rto, objective_ms
            )),
            Some(_) => {}
        }
        LegReport {
            leg: leg.to_string(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            epoch: plan.epoch,
            decision_ms,
            drain_ms: promoted.saturating_sub(decided),
            steps_ms: plan.done_at_ms.map(|d| d.saturating_sub(promoted)),
            total_ms,
            steps,
            projected_rto_ms,
            rpo_ms: plan.facts.rpo_ms,
            problems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FailoverMode, ReplicationMode};
    use crate::state::plan::StepOutcome;
    use crate::state::{Command, GroupSpec, LeaseTerms, Logged, NodeId, Rejection, Response, State, Topology, Verdict};

    fn state() -> State {
        let spec = GroupSpec {
            primary: "east".into(),
            secondary: "west".into(),
            replication: ReplicationMode::Sync,
            failover: FailoverMode::Automatic,
            rto_ms: 10_000,
            rpo_ms: 0,
            leases: Some(LeaseTerms { lease_ms: 1000, margin_ms: 100 }),
            steps: vec![crate::state::plan::StepSpec {
                name: "dns".into(),
                kind: "rfc2136".into(),
                retries: 0,
                continue_on_failure: false,
                ttl: Some(5),
            }],
        };
        let mut s = State::default();
        s.apply(Command::SyncTopology(Topology {
            sites: ["east".into(), "west".into()].into(),
            groups: [("app".into(), spec)].into(),
            tuning: Default::default(),
        }));
        for site in ["east", "west"] {
            see(&mut s, site, Verdict::Up);
        }
        s
    }

    fn see(s: &mut State, site: &str, verdict: Verdict) {
        for node in 1..=3 {
            s.apply(Command::ReportVerdict { node: NodeId(node), site: site.into(), verdict: Some(verdict) });
        }
    }

    fn at(s: &mut State, at_ms: u64, command: Command) -> Response {
        s.apply_logged(Logged { at_ms, command, by: None })
    }

    fn leg(to: &str, epoch: u64, start: Option<DrillSpec>) -> Command {
        Command::Drill {
            group: "app".into(),
            to: to.into(),
            expected_epoch: Epoch(epoch),
            voters: [1, 2, 3].map(NodeId).into(),
            facts: crate::state::DecisionFacts { detected_after_ms: None, rpo_ms: Some(0) },
            start: start.map(Box::new),
        }
    }

    fn spec(back: bool) -> DrillSpec {
        DrillSpec {
            hold_ms: 500,
            back,
            reason: "CHG-1".into(),
            by: Some("token:admin".into()),
            requested_at_ms: 900,
            budget: DrillBudget { budget_ms: 9_000, unplanned_ms: 2_000, ttl_ms: 5_000, switchover_ms: 2_100 },
        }
    }

    /// Promotes the group at `promoted`, runs its one step from `promoted + 100` to `done`.
    fn finish_leg(s: &mut State, epoch: u64, promoted: u64, done: u64) {
        let epoch = Epoch(epoch);
        at(s, promoted, Command::Promote { group: "app".into(), expected_epoch: epoch });
        let step = || "dns".to_string();
        at(s, promoted + 100, Command::StepStarted { group: "app".into(), epoch, step: step(), attempt: 1 });
        let outcome = StepOutcome::Done { detail: "set".into() };
        at(s, done, Command::StepFinished { group: "app".into(), epoch, step: step(), attempt: 1, outcome });
    }

    fn kinds(s: &State) -> Vec<String> {
        s.journal.since(0, 1000).iter().map(|e| e.kind.clone()).collect()
    }

    #[test]
    fn a_drill_goes_out_and_back_and_every_phase_adds_up() {
        let mut s = state();
        assert!(matches!(
            at(&mut s, 1000, leg("west", 1, Some(spec(true)))),
            Response::Activated { draining: true, .. }
        ));
        let g = &s.groups["app"];
        assert_eq!((g.active.as_str(), g.epoch, g.blocked), ("west", Epoch(2), false), "a drill blocks nothing");
        finish_leg(&mut s, 2, 2200, 2500);
        assert!(s.groups["app"].drill.as_ref().unwrap().holding(), "out and done: holding");
        // The way back, by the leader after the hold; then it is over and filed.
        assert!(matches!(at(&mut s, 3100, leg("east", 2, None)), Response::Activated { .. }));
        finish_leg(&mut s, 3, 4300, 4700);
        assert!(s.groups["app"].drill.is_none());
        let drill = &s.drills["app"][0];
        assert!(drill.passed(), "{:?}", drill.outcome);
        let r = drill.report();
        assert_eq!((r.status.as_str(), r.total_ms, r.by.as_deref()), ("passed", Some(3800), Some("token:admin")));
        let phases: Vec<_> = r.legs.iter().map(|l| (l.decision_ms, l.drain_ms, l.steps_ms, l.total_ms)).collect();
        assert_eq!(phases, [(100, 1200, Some(300), Some(1600)), (100, 1200, Some(400), Some(1700))]);
        assert_eq!(r.legs[0].projected_rto_ms, Some(1500 + 2000 + 5000));
        assert_eq!(r.legs[1].steps[0].took_ms, Some(300));
        let k = kinds(&s);
        for kind in ["switchover", "switchover_complete", "drill_passed"] {
            assert!(k.contains(&kind.to_string()), "{kind} in {k:?}");
        }
        assert!(!k.iter().any(|k| k == "failover" || k == "failover_complete"), "a drill is no failover: {k:?}");
    }

    #[test]
    fn a_drill_lands_only_with_both_sites_up_and_nothing_under_way() {
        let mut s = state();
        see(&mut s, "east", Verdict::Down);
        let refused = at(&mut s, 1000, leg("west", 1, Some(spec(true))));
        assert!(
            matches!(&refused, Response::Rejected(Rejection::Drill { problem, .. }) if problem.contains("both sites must be up")),
            "{refused:?}"
        );
        assert_eq!(s.groups["app"].epoch, Epoch(1), "nothing changed");
        see(&mut s, "east", Verdict::Up);
        at(&mut s, 1000, leg("west", 1, Some(spec(true))));
        let again = at(&mut s, 1100, leg("east", 2, Some(spec(false))));
        assert!(
            matches!(&again, Response::Rejected(Rejection::Drill { problem, .. }) if problem.contains("under way"))
        );
        let early = at(&mut s, 1100, leg("east", 2, None));
        assert!(matches!(&early, Response::Rejected(Rejection::Drill { .. })), "not back while draining: {early:?}");
        assert_eq!(s.groups["app"].epoch, Epoch(2));
    }

    #[test]
    fn a_real_failover_interrupts_a_drill_and_a_drill_that_cannot_return_fails() {
        let mut s = state();
        at(&mut s, 1000, leg("west", 1, Some(spec(true))));
        finish_leg(&mut s, 2, 2200, 2500);
        let failover = Command::Failover {
            group: "app".into(),
            to: "east".into(),
            expected_epoch: Epoch(2),
            reason: "west down".into(),
            quorum_of: None,
            automatic: false,
            facts: Default::default(),
            past: None,
        };
        at(&mut s, 3000, failover);
        let r = s.drills["app"][0].report();
        assert_eq!(r.status, "interrupted");
        assert!(r.problems[0].contains("west down"), "{:?}", r.problems);
        assert!(kinds(&s).contains(&"drill_interrupted".to_string()));
        assert!(s.groups["app"].blocked, "the failover blocks as failovers do");

        let mut s = state();
        at(&mut s, 1000, leg("west", 1, Some(spec(true))));
        let wrong = Command::EndDrill { group: "app".into(), id: Epoch(1), problem: "east down".into() };
        assert!(matches!(at(&mut s, 1500, wrong.clone()), Response::Rejected(Rejection::Drill { .. })), "not holding");
        finish_leg(&mut s, 2, 2200, 2500);
        assert!(matches!(at(&mut s, 9000, wrong), Response::DrillEnded { .. }));
        let r = s.drills["app"][0].report();
        assert_eq!((r.status.as_str(), r.legs.len()), ("failed", 1));
        assert_eq!(s.groups["app"].active, "west", "it stays where the drill took it");
        assert!(kinds(&s).contains(&"drill_failed".to_string()));
    }
}
