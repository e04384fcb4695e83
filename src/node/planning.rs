//! The leader's plan runner: starts the attempts the pure planner (`engine::plan`) calls for,
//! each committed as `StepStarted` before anything is done, runs them through the executors
//! (`crate::actions`), and commits each result. Off the leader every attempt is abandoned
//! (aborted: a program is killed, a request dropped), and so is every attempt of a leader that
//! has not heard from a quorum for two thirds of the shortest election timeout; a new leader resumes
//! from the log. An
//! attempt for an epoch that has been superseded is aborted, and awaited, before any attempt
//! of the newer epoch starts, so no action of an older failover follows one of a newer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::task::JoinHandle;

use super::leader::{LeaderReply, LeaderRequest};
use super::Node;
use crate::actions::{Executors, StepContext};
use crate::config::StepConfig;
use crate::engine::plan::{Attempt, Planner};
use crate::rng::SplitMix64;
use crate::state::plan::StepOutcome;
use crate::state::{Response, State};

/// How often the runner looks again when nothing was committed (retry timers).
const TICK: Duration = Duration::from_millis(100);

pub(super) async fn run_plans(node: Arc<Node>) {
    let executors = match Executors::new() {
        Ok(x) => Arc::new(x),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the plan executors: plans will not run on this node");
            return;
        }
    };
    let steps: Arc<BTreeMap<(String, String), StepConfig>> = Arc::new(
        node.config
            .groups
            .iter()
            .flat_map(|g| g.steps.iter().map(|s| ((g.name.clone(), s.name.clone()), s.clone())))
            .collect(),
    );
    let mut rng = SplitMix64::new(node.id ^ crate::wallclock::unix_ms());
    let mut planner: Option<(u64, Planner)> = None;
    let mut tasks = Attempts::default();
    let mut updates = node.raft.metrics();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = updates.changed() => if changed.is_err() { break },
        }
        tasks.retain(|_, task| !task.is_finished());
        let (leader, term) = {
            let m = updates.borrow_watched();
            (m.current_leader, m.current_term)
        };
        // A leader cut off from its quorum sees no newer term, yet the others may elect a
        // successor once election_timeout_min has passed since the heartbeat a quorum last
        // acknowledged was sent: it stops every attempt a third of that earlier (room for this
        // loop's tick and the abort), so no action of its can follow one of theirs.
        let cut_off =
            node.quorum_ack_age().is_none_or(|age| age > node.config.cluster.raft.election_timeout_min * 2 / 3);
        if leader != Some(node.id) || cut_off || planner.as_ref().is_some_and(|(t, _)| *t != term) {
            planner = None;
            abandon(&mut tasks, |_| true).await;
        }
        if leader != Some(node.id) || node.readiness().is_err() {
            continue;
        }
        let (_, planner) = planner.get_or_insert_with(|| (term, Planner::default()));
        let state = node.applied.read().expect("state lock poisoned").state.without_journal();
        abandon(&mut tasks, |a| state.groups.get(&a.group).is_none_or(|g| g.epoch != a.epoch)).await;
        let under_way: BTreeSet<Attempt> = tasks.keys().cloned().collect();
        for attempt in planner.due(&state, &under_way, node.started.elapsed(), || rng.unit()) {
            let Some(ctx) = context(&state, &attempt) else { continue };
            let step = steps.get(&(attempt.group.clone(), attempt.step.clone())).cloned();
            let task = tokio::spawn(run_attempt(node.clone(), executors.clone(), step, attempt.clone(), ctx));
            tasks.insert(attempt, task);
        }
    }
    abandon(&mut tasks, |_| true).await;
}

/// The attempts under way; dropping it (the node stops) aborts them all.
#[derive(Default)]
struct Attempts(BTreeMap<Attempt, JoinHandle<()>>);

impl std::ops::Deref for Attempts {
    type Target = BTreeMap<Attempt, JoinHandle<()>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Attempts {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        self.0.values().for_each(JoinHandle::abort);
    }
}

/// Aborts the attempts `which` selects and waits until each has stopped.
async fn abandon(tasks: &mut Attempts, which: impl Fn(&Attempt) -> bool) {
    let gone: Vec<Attempt> = tasks.keys().filter(|a| which(a)).cloned().collect();
    for attempt in gone {
        let task = tasks.remove(&attempt).expect("key just listed");
        task.abort();
        if task.await.is_err() {
            tracing::info!(group = %attempt.group, step = %attempt.step, attempt = attempt.attempt, epoch = %attempt.epoch,
                "plan step attempt abandoned");
        }
    }
}

/// What the executor of attempt `a` is told, from the leader's applied state (`None` once the
/// group or its plan is gone).
pub fn context(state: &State, a: &Attempt) -> Option<StepContext> {
    let plan = state.groups.get(&a.group)?.plan.as_ref()?;
    Some(StepContext {
        group: a.group.clone(),
        epoch: a.epoch.0,
        from: plan.from.clone(),
        to: plan.to.clone(),
        reason: plan.reason.clone(),
        decided_at_ms: plan.decided_at_ms,
        step: a.step.clone(),
    })
}

/// One attempt: committed as started, carried out, its result committed. Nothing is done
/// unless the start committed (only the leader can commit, and only the next attempt fits).
async fn run_attempt(node: Arc<Node>, x: Arc<Executors>, step: Option<StepConfig>, a: Attempt, ctx: StepContext) {
    match node.submit(LeaderRequest::Write(a.started()), true).await {
        Ok(LeaderReply::Written { response: Response::Plan(_), .. }) => {}
        Ok(reply) => {
            tracing::info!(?reply, group = %a.group, step = %a.step, "plan step start refused");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, group = %a.group, step = %a.step, "plan step start not committed");
            return;
        }
    }
    tracing::info!(group = %a.group, step = %a.step, attempt = a.attempt, epoch = %a.epoch, "plan step started");
    let began = Instant::now();
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
    node.metrics
        .plan_step_seconds
        .with_label_values(&[&a.group, &a.step, result])
        .observe(began.elapsed().as_secs_f64());
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

/// One step's check, as `witness plan check` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepCheck {
    pub step: String,
    pub kind: String,
    pub ok: bool,
    pub retryable: bool,
    pub detail: String,
}

/// What checking a group's plan found, from one node (each node runs the plan when it leads,
/// so each may be checked).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlanCheck {
    pub node: u64,
    pub group: String,
    /// The failover the check is for: away from the active site.
    pub from: String,
    pub to: String,
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
        let config = self.config.groups.iter().find(|g| g.name == group);
        let config = config.ok_or_else(|| super::leader::NodeError::NotFound(format!("unknown group {group:?}")))?;
        let (from, to) = {
            let applied = self.applied.read().expect("state lock poisoned");
            match applied.state.groups.get(group) {
                Some(g) => (g.active.clone(), g.other().to_string()),
                None => (config.primary.clone(), config.secondary.clone()),
            }
        };
        let executors = Executors::new().map_err(|e| super::leader::NodeError::Fatal(e.to_string()))?;
        let checks = config.steps.iter().map(|step| {
            let executors = &executors;
            async move {
                let result = executors.check(step).await;
                StepCheck {
                    step: step.name.clone(),
                    kind: step.kind.name().to_string(),
                    ok: result.is_ok(),
                    retryable: result.as_ref().err().is_some_and(|e| e.retryable),
                    detail: result.unwrap_or_else(|e| e.message),
                }
            }
        });
        let steps = futures::future::join_all(checks).await;
        Ok(PlanCheck { node: self.id, group: group.to_string(), from, to, steps })
    }
}
