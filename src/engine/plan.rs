//! When the leader starts the next attempt of a plan step (pure: the committed state, the
//! attempts this leadership has under way and `now` in; attempts to start out). A step that is
//! pending starts at once; one whose last attempt failed retryably starts after an
//! exponential backoff with jitter; one recorded as running that this leadership did not start
//! was cut short by a leader change and starts again (steps are idempotent). Stuck plans and
//! plans waiting for a promotion start nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::state::plan::{Phase, StepOutcome, StepStatus};
use crate::state::{Command, Epoch, GroupId, State};

/// One attempt of one step: what the leader proposes as `StepStarted`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attempt {
    pub group: GroupId,
    pub epoch: Epoch,
    pub step: String,
    pub attempt: u32,
}

impl Attempt {
    /// The command that records this attempt as started.
    pub fn started(&self) -> Command {
        Command::StepStarted {
            group: self.group.clone(),
            epoch: self.epoch,
            step: self.step.clone(),
            attempt: self.attempt,
        }
    }

    /// The command that records this attempt's outcome.
    pub fn finished(&self, outcome: StepOutcome) -> Command {
        let (group, step) = (self.group.clone(), self.step.clone());
        Command::StepFinished { group, epoch: self.epoch, step, attempt: self.attempt, outcome }
    }
}

/// What the executor of an attempt is told: the decision it carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    pub group: String,
    pub epoch: u64,
    /// The failed site (the one being left).
    pub from: String,
    /// The survivor (the one being made active).
    pub to: String,
    pub reason: String,
    /// When the decision was committed (leader's wall clock, Unix ms): for receivers only.
    pub decided_at_ms: u64,
    pub step: String,
}

impl StepContext {
    /// What attempt `a` is told, from the committed state (`None` once the group or its plan
    /// is gone).
    pub fn of(state: &State, a: &Attempt) -> Option<StepContext> {
        let plan = state.groups.get(&a.group)?.plan.as_ref()?;
        Some(StepContext {
            group: a.group.to_string(),
            epoch: a.epoch.0,
            from: plan.from.to_string(),
            to: plan.to.to_string(),
            reason: plan.reason.clone(),
            decided_at_ms: plan.decided_at_ms,
            step: a.step.clone(),
        })
    }

    /// The same for every attempt of one step of one failover, on every leader: receivers
    /// use it to recognise a repeat.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.group, self.epoch, self.step)
    }
}

/// The first retry waits about this long; each further one twice as long, up to the cap.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The wait before attempt `attempt` (2 and up): half of the exponential delay is fixed, the
/// other half random ("equal jitter"), so that retries never stampede yet never come early.
/// `unit` is uniform in [0, 1).
pub fn backoff(attempt: u32, unit: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(2).min(16)).min(BACKOFF_CAP);
    exp / 2 + exp.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
}

/// The leader's memory of retry timers, for one leadership.
#[derive(Debug, Default)]
pub struct Planner {
    /// When the next attempt of a retrying step may start (leader's monotonic clock).
    retry_at: BTreeMap<Attempt, Duration>,
}

impl Planner {
    /// The attempts to start now. `under_way` holds every attempt this leadership has started
    /// (or is starting) and not yet seen finished in the committed state.
    pub fn due(
        &mut self,
        state: &State,
        under_way: &BTreeSet<Attempt>,
        now: Duration,
        mut unit: impl FnMut() -> f64,
    ) -> Vec<Attempt> {
        let mut due = Vec::new();
        let mut timers = BTreeMap::new();
        for (group, g) in &state.groups {
            let Some(plan) = g.plan.as_ref().filter(|p| p.epoch == g.epoch && p.phase() == Phase::Running) else {
                continue;
            };
            let step = &plan.steps[plan.current().expect("a running plan has a current step")];
            let next = Attempt {
                group: group.clone(),
                epoch: plan.epoch,
                step: step.spec.name.clone(),
                attempt: step.attempts + 1,
            };
            let current = Attempt { attempt: step.attempts, ..next.clone() };
            if under_way.contains(&next) || under_way.contains(&current) {
                continue;
            }
            match step.status {
                StepStatus::Pending | StepStatus::Running => due.push(next),
                StepStatus::Retrying => {
                    let at = *self.retry_at.get(&next).unwrap_or(&(now + backoff(next.attempt, unit())));
                    if now >= at {
                        due.push(next);
                    } else {
                        timers.insert(next, at);
                    }
                }
                _ => {}
            }
        }
        // Timers of steps that moved on are forgotten.
        self.retry_at = timers;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::plan::StepSpec;
    use crate::state::{GroupSpec, Topology};

    fn state(retries: u32) -> State {
        let spec = GroupSpec {
            primary: "east".into(),
            secondary: "west".into(),
            replication: crate::config::ReplicationMode::Sync,
            failover: crate::config::FailoverMode::Automatic,
            rto_ms: 0,
            rpo_ms: 0,
            leases: None,
            steps: ["dns", "notify"]
                .iter()
                .map(|n| StepSpec {
                    name: n.to_string(),
                    kind: "command".into(),
                    retries,
                    continue_on_failure: false,
                    ttl: None,
                })
                .collect(),
        };
        let mut s = State::default();
        s.apply(Command::SyncTopology(Topology {
            sites: ["east".into(), "west".into()].into(),
            groups: [("app".into(), spec)].into(),
            tuning: Default::default(),
        }));
        s.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
        s
    }

    fn attempt(step: &str, attempt: u32) -> Attempt {
        Attempt { group: "app".into(), epoch: Epoch(2), step: step.into(), attempt }
    }

    fn apply(s: &mut State, c: Command) {
        let r = s.apply(c);
        assert!(matches!(r, crate::state::Response::Plan(_)), "{r:?}");
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        assert_eq!(backoff(2, 0.0), Duration::from_millis(250));
        assert!(backoff(2, 0.999_999) < Duration::from_millis(500));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(4, 0.5), Duration::from_millis(1500));
        assert_eq!(backoff(40, 0.0), BACKOFF_CAP / 2);
    }

    #[test]
    fn steps_start_in_order_retry_after_backoff_and_resume_after_a_leader_change() {
        let mut s = state(2);
        let mut p = Planner::default();
        let none = BTreeSet::new();
        let t = Duration::from_secs(100);
        assert_eq!(p.due(&s, &none, t, || 0.0), vec![attempt("dns", 1)]);
        apply(&mut s, attempt("dns", 1).started());
        let mine: BTreeSet<_> = [attempt("dns", 1)].into();
        assert!(p.due(&s, &mine, t, || 0.0).is_empty(), "under way here: nothing to start");
        // Another leadership finds it running and not its own: it runs again.
        assert_eq!(Planner::default().due(&s, &none, t, || 0.0), vec![attempt("dns", 2)]);

        apply(&mut s, attempt("dns", 1).finished(StepOutcome::Failed { error: "503".into(), retryable: true }));
        assert!(p.due(&s, &none, t, || 0.0).is_empty(), "backoff: 250 ms at the least");
        assert!(p.due(&s, &none, t + Duration::from_millis(249), || 0.9).is_empty(), "the timer is kept");
        assert_eq!(p.due(&s, &none, t + Duration::from_millis(250), || 0.9), vec![attempt("dns", 2)]);
        apply(&mut s, attempt("dns", 2).started());
        apply(&mut s, attempt("dns", 2).finished(StepOutcome::Done { detail: "ok".into() }));
        assert_eq!(p.due(&s, &none, t, || 0.0), vec![attempt("notify", 1)]);

        // A newer failover supersedes the plan: nothing of epoch 2 starts again.
        s.apply(Command::Activate { group: "app".into(), site: "east".into(), expected_epoch: Epoch(2) });
        let due = p.due(&s, &none, t, || 0.0);
        assert_eq!(due, vec![Attempt { epoch: Epoch(3), ..attempt("dns", 1) }]);
    }

    #[test]
    fn stuck_and_waiting_plans_start_nothing() {
        let mut s = state(0);
        apply(&mut s, attempt("dns", 1).started());
        apply(&mut s, attempt("dns", 1).finished(StepOutcome::Failed { error: "403".into(), retryable: false }));
        assert!(Planner::default().due(&s, &BTreeSet::new(), Duration::ZERO, || 0.0).is_empty());
        s.groups.get_mut("app").unwrap().plan.as_mut().unwrap().waiting = true;
        s.apply(Command::ResolvePlan { group: "app".into(), epoch: Epoch(2), skip: false });
        assert!(Planner::default().due(&s, &BTreeSet::new(), Duration::ZERO, || 0.0).is_empty());
    }
}
