//! Plan readiness, kept by the leader: when each group's plan is checked next, the last result,
//! and what to journal when a step turns not ready or ready again, or its target drifts from
//! the committed decision or is back in place (never on every check).
//!
//! A group with plan steps is checked every `readiness_interval` (jittered, so that a thousand
//! groups do not call their providers in the same second), soon after a leadership starts,
//! and at once when its epoch or its steps change (a failover, a config change). A check
//! changes nothing at its targets (`actions::Executors::check`); when the group's plan for its
//! epoch is done (or none has run), it also reads what each target holds
//! (`actions::Executors::observe`): a DNS record someone edited by hand, a storage domain
//! switched outside the plan, is *drift*. The runtime runs the check and reports the result
//! with [`Readiness::checked`]. Pure: `now` and the jitter are passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keyed::{align, Cursor};
use crate::state::plan::{Phase, StepSpec};
use crate::state::{Epoch, GroupId, State};

/// One step's check: whether its target is reachable with the configured credentials and
/// would accept the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepCheck {
    pub step: String,
    pub kind: String,
    pub ok: bool,
    pub retryable: bool,
    pub detail: String,
    /// What the step's target holds against the committed decision; absent when not read (a
    /// webhook or command, a plan under way, or the read failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetState>,
}

/// A target read back against the group's committed decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum TargetState {
    InPlace,
    /// It holds something else: what.
    Drifted(String),
}

/// A group's last scheduled check, as status, metrics and `witness plan check` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlanReadiness {
    /// When the check finished (Unix ms), for its age.
    pub checked_at_ms: u64,
    /// The epoch the check was for: a failover away from the group's active site then.
    pub epoch: Epoch,
    pub steps: Vec<StepCheck>,
}

impl PlanReadiness {
    pub fn ready(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

/// A step that turned: what the leader journals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turned {
    pub group: GroupId,
    pub step: String,
    pub turn: Turn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Its check fails, and why.
    NotReady(String),
    Ready,
    /// Its target holds something else than the decision, and what.
    Drifted(String),
    InPlace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Schedule {
    next_at: Duration,
    /// A check was handed to the runtime and has not been reported yet.
    checking: bool,
    /// What the last check was for: a change makes the next one due at once.
    checked_for: Option<(Epoch, Vec<StepSpec>)>,
    last: Option<PlanReadiness>,
}

/// Every group's readiness schedule and last result, for one leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Every group of the state, and the schedule of each with plan steps and an interval.
    groups: BTreeMap<GroupId, Option<Schedule>>,
}

/// The first check of a leadership comes within this long (or the interval, if shorter), spread
/// over it by the jitter.
const FIRST_WITHIN: Duration = Duration::from_secs(10);

impl Readiness {
    /// The groups whose check is due at `now`: each is then marked as being checked, at its
    /// epoch, and whether its targets are to be read (its plan for that epoch done, or none
    /// run). `unit()` gives jitter in [0, 1).
    pub fn due(
        &mut self,
        state: &State,
        intervals: &BTreeMap<GroupId, Duration>,
        now: Duration,
        mut unit: impl FnMut() -> f64,
    ) -> Vec<(GroupId, Epoch, bool)> {
        let mut due = Vec::new();
        // Walked together in key order, not looked up per group: linear in the groups.
        let mut intervals = Cursor::new(intervals.iter());
        for (name, group, schedule) in align(&mut self.groups, &state.groups, |_| None) {
            let Some(interval) = intervals.seek(name) else { continue };
            if group.spec.steps.is_empty() {
                continue;
            }
            let schedule = schedule.get_or_insert_with(|| Schedule {
                next_at: now + (*interval).min(FIRST_WITHIN).mul_f64(unit()),
                checking: false,
                checked_for: None,
                last: None,
            });
            let changed =
                schedule.checked_for.as_ref().is_some_and(|(e, s)| *e != group.epoch || *s != group.spec.steps);
            if !schedule.checking && (now >= schedule.next_at || changed) {
                schedule.checking = true;
                schedule.checked_for = Some((group.epoch, group.spec.steps.clone()));
                let settled = group.plan.as_ref().is_none_or(|p| p.epoch == group.epoch && p.phase() == Phase::Done);
                due.push((name.clone(), group.epoch, settled && !group.draining));
            }
        }
        due
    }

    /// The check of `group` handed out by [`Readiness::due`] finished with `result`: the next
    /// is due an interval (jittered ±20 %) from `now`. Returns the steps that turned: not
    /// ready where the last check (or, for the first, the assumption) had them ready, ready
    /// again, their target drifted, or in place again.
    pub fn checked(
        &mut self,
        group: &GroupId,
        result: PlanReadiness,
        interval: Duration,
        now: Duration,
        unit: f64,
    ) -> Vec<Turned> {
        let Some(Some(schedule)) = self.groups.get_mut(group) else { return Vec::new() };
        schedule.checking = false;
        schedule.next_at = now + interval.mul_f64(0.8 + 0.4 * unit);
        let before = |step: &str| schedule.last.as_ref().and_then(|l| l.steps.iter().find(|s| s.step == step));
        let mut result = result;
        let same_epoch = schedule.last.as_ref().is_some_and(|l| l.epoch == result.epoch);
        for s in result.steps.iter_mut().filter(|s| s.target.is_none() && same_epoch) {
            // A target not read this time (a read failed) keeps what was last read of it at
            // this epoch: a drift is said once, not again after every gap.
            s.target = before(&s.step).and_then(|b| b.target.clone());
        }
        let mut turned = Vec::new();
        for s in &result.steps {
            let was = before(&s.step);
            let turn = |turn| Turned { group: group.clone(), step: s.step.clone(), turn };
            if s.ok != was.is_none_or(|w| w.ok) {
                turned.push(turn(if s.ok { Turn::Ready } else { Turn::NotReady(s.detail.clone()) }));
            }
            let drifted = |t: Option<&TargetState>| matches!(t, Some(TargetState::Drifted(_)));
            let was_drifted = drifted(was.and_then(|w| w.target.as_ref()));
            match &s.target {
                Some(TargetState::Drifted(what)) if !was_drifted => turned.push(turn(Turn::Drifted(what.clone()))),
                Some(TargetState::InPlace) if was_drifted => turned.push(turn(Turn::InPlace)),
                _ => {}
            }
        }
        schedule.last = Some(result);
        turned
    }

    /// The last result of `group`, if checked this leadership.
    pub fn last(&self, group: &str) -> Option<&PlanReadiness> {
        self.groups.get(group)?.as_ref()?.last.as_ref()
    }

    /// The last result of every group checked this leadership.
    pub fn view(&self) -> BTreeMap<GroupId, PlanReadiness> {
        self.groups.iter().filter_map(|(name, s)| Some((name.clone(), s.as_ref()?.last.clone()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, GroupSpec, Topology};

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn state(steps: &[&str]) -> State {
        let spec = GroupSpec {
            primary: "east".into(),
            secondary: "west".into(),
            replication: crate::config::ReplicationMode::Sync,
            failover: crate::config::FailoverMode::Automatic,
            rto_ms: 300_000,
            rpo_ms: 0,
            leases: None,
            steps: steps
                .iter()
                .map(|n| StepSpec {
                    name: n.to_string(),
                    kind: "webhook".into(),
                    retries: 0,
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
        s
    }

    fn result(epoch: u64, steps: &[(&str, bool)]) -> PlanReadiness {
        PlanReadiness {
            checked_at_ms: 0,
            epoch: Epoch(epoch),
            steps: steps
                .iter()
                .map(|(n, ok)| StepCheck {
                    step: n.to_string(),
                    kind: "webhook".into(),
                    ok: *ok,
                    retryable: true,
                    detail: if *ok { "reachable".into() } else { "connection refused".into() },
                    target: None,
                })
                .collect(),
        }
    }

    #[test]
    fn checks_come_on_schedule_at_once_after_a_failover_and_turns_are_said_once() {
        let app = GroupId::from("app");
        let intervals: BTreeMap<GroupId, Duration> = [(app.clone(), ms(60_000))].into();
        let mut r = Readiness::default();
        let mut s = state(&["dns", "notify"]);
        // The first check of a leadership comes within 10 s, spread by the jitter.
        assert!(r.due(&s, &intervals, ms(0), || 0.5).is_empty());
        // No plan has run: the targets are read too (they should hold the primary).
        assert_eq!(r.due(&s, &intervals, ms(5_000), || 0.5), vec![(app.clone(), Epoch(1), true)]);
        assert!(r.due(&s, &intervals, ms(6_000), || 0.5).is_empty(), "one check at a time");
        // A step not ready is said; the ready one is not.
        let turned = r.checked(&app, result(1, &[("dns", true), ("notify", false)]), ms(60_000), ms(7_000), 0.5);
        assert_eq!(
            turned,
            vec![Turned {
                group: app.clone(),
                step: "notify".into(),
                turn: Turn::NotReady("connection refused".into())
            }]
        );
        assert_eq!(r.view()[&app].epoch, Epoch(1));
        // Next on schedule: an interval on (jitter 0.5: exactly), and the same result says nothing.
        assert!(r.due(&s, &intervals, ms(66_999), || 0.5).is_empty());
        assert_eq!(r.due(&s, &intervals, ms(67_000), || 0.5).len(), 1);
        assert!(r
            .checked(&app, result(1, &[("dns", true), ("notify", false)]), ms(60_000), ms(67_100), 0.5)
            .is_empty());
        // A failover makes the next check due at once; the step back is said once.
        s.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
        // A failover makes the next check due at once; its plan under way, targets are not read.
        assert_eq!(r.due(&s, &intervals, ms(68_000), || 0.5), vec![(app.clone(), Epoch(2), false)]);
        let turned = r.checked(&app, result(2, &[("dns", true), ("notify", true)]), ms(60_000), ms(68_100), 0.5);
        assert_eq!(turned, vec![Turned { group: app.clone(), step: "notify".into(), turn: Turn::Ready }]);
        // A group without steps, or without an interval, is not checked.
        assert!(r.due(&state(&[]), &intervals, ms(500_000), || 0.5).is_empty());
        assert!(Readiness::default().due(&s, &BTreeMap::new(), ms(500_000), || 0.5).is_empty());
    }

    #[test]
    fn a_target_drifting_and_back_is_said_once_each_way_and_an_unread_one_says_nothing() {
        let app = GroupId::from("app");
        let mut r = Readiness::default();
        let s = state(&["dns"]);
        let intervals: BTreeMap<GroupId, Duration> = [(app.clone(), ms(1_000))].into();
        let with = |target: Option<TargetState>| {
            let mut result = result(1, &[("dns", true)]);
            result.steps[0].target = target;
            result
        };
        let drifted = || Some(TargetState::Drifted("app.example.test. holds 203.0.113.9".into()));
        let mut check = |target, at| {
            assert_eq!(r.due(&s, &intervals, ms(at), || 0.0).len(), 1, "due at {at}");
            r.checked(&app, with(target), ms(1_000), ms(at), 0.5)
        };
        assert!(check(Some(TargetState::InPlace), 0).is_empty());
        let turned = check(drifted(), 1_000);
        assert_eq!(turned[0].turn, Turn::Drifted("app.example.test. holds 203.0.113.9".into()));
        assert!(check(drifted(), 2_000).is_empty(), "said once");
        assert!(check(None, 3_000).is_empty(), "not read: nothing said either way");
        assert!(check(drifted(), 4_000).is_empty(), "still the same drift");
        assert_eq!(check(Some(TargetState::InPlace), 5_000)[0].turn, Turn::InPlace);
    }
}
