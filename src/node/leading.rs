//! The leader's runtime: the only loop that drives [`Leader`]. On every commit or change of
//! leadership (a burst coalesced) and every 50 ms it reads the world once (Raft's metrics into
//! a `Contact`, the committed state, this node's probe facts), makes or drops the term's
//! `Leader`, hands it a tick, and carries out the effects in order: proposals go to the log in
//! their own tasks, plan step attempts run through the executors, aborts are awaited before the
//! next effect. No rule lives here; what the leader decides is in `crate::leader`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::task::{JoinHandle, JoinSet};

use super::leader::{LeaderReply, LeaderRequest};
use super::Node;
use crate::actions::Executors;
use crate::clock::Stopwatch;
use crate::config::StepConfig;
use crate::engine::plan::Attempt;
use crate::engine::Assessment;
use crate::leader::readiness::PlanReadiness;
use crate::leader::{Effect, Tick};
use crate::raft::LogId;
use crate::state::{Command, Response, State};

/// How often the leader looks again when nothing was committed (its timers).
const TICK: Duration = Duration::from_millis(50);
/// How long commits may accumulate before the leader looks at them.
const COALESCE: Duration = Duration::from_millis(10);

pub(super) async fn lead(node: Arc<Node>) {
    let executors = match Executors::new() {
        Ok(x) => Some(Arc::new(x)),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the plan executors: plans will not run on this node");
            None
        }
    };
    let steps: Arc<BTreeMap<(String, String), StepConfig>> = Arc::new(
        node.config
            .groups
            .iter()
            .flat_map(|g| g.steps.iter().map(|s| ((g.name.clone(), s.name.clone()), s.clone())))
            .collect(),
    );
    let mut runtime = Runtime {
        node: node.clone(),
        executors,
        steps,
        attempts: Attempts::default(),
        term: None,
        proposals: JoinSet::new(),
        checks: Arc::new(tokio::sync::Semaphore::new(CHECKS_AT_ONCE)),
        copy: None,
    };
    let mut updates = node.raft.metrics();
    let mut seen = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = updates.changed() => {
                if changed.is_err() {
                    break;
                }
                // Raft's metrics also change at every acknowledged heartbeat, and the agents'
                // read-index rounds make those hundreds a second at scale: only a commit or a
                // change of leadership is worth a look before the next tick.
                let now = {
                    let m = updates.borrow_watched();
                    Some((m.last_applied, m.current_term, m.current_leader))
                };
                if now == seen {
                    continue;
                }
                seen = now;
                // Coalesce a burst of commits into one look: verdicts are rare, writes are not.
                tokio::time::sleep(COALESCE).await;
            }
        }
        runtime.look().await;
    }
    runtime.abandon(|_| true).await;
}

struct Runtime {
    node: Arc<Node>,
    executors: Option<Arc<Executors>>,
    steps: Arc<BTreeMap<(String, String), StepConfig>>,
    attempts: Attempts,
    /// The term whose leader started `attempts`.
    term: Option<u64>,
    /// Proposals in flight (aborted if the node stops).
    proposals: JoinSet<()>,
    /// Turns for plan readiness checks, [`CHECKS_AT_ONCE`] of them.
    checks: Arc<tokio::sync::Semaphore>,
    /// The committed state as of the entry it was copied at, while this node leads.
    copy: Option<(Option<LogId>, State)>,
}

/// At most this many plan readiness checks run at once. A new leadership checks every group
/// within its first seconds (`leader::readiness`), and each check calls every step's provider:
/// a thousand groups at once would be a thousand Route 53 clients alive together, and a burst of
/// requests against an account that allows five a second.
const CHECKS_AT_ONCE: usize = 8;

impl Runtime {
    async fn look(&mut self) {
        while self.proposals.try_join_next().is_some() {}
        let node = self.node.clone();
        let m = node.raft.metrics().borrow_watched().clone();
        let leads = m.current_leader == Some(node.id);
        let ended: Vec<Attempt> =
            self.attempts.iter().filter(|(_, t)| t.is_finished()).map(|(a, _)| a.clone()).collect();
        for a in &ended {
            self.attempts.remove(a);
        }
        let contact = node.contact(&m);
        let ready = node.readiness_from(&m, &contact).is_ok();
        let failing_since = node.failing_since();
        // Copied out of the state machine's lock, so a look never holds up a commit, and only
        // when something was applied since the last copy: a copy at every look was 7 % of the
        // leader's CPU at 250 groups in steady state. Only a leader keeps one.
        if leads {
            let applied = node.applied.read().expect("state lock poisoned");
            if self.copy.as_ref().is_none_or(|(at, _)| *at != applied.last_applied) {
                self.copy = Some((applied.last_applied, applied.state.without_journal()));
            }
        } else {
            self.copy = None;
        }
        let state = self.copy.as_ref().map(|(_, state)| state);
        let effects = {
            let mut slot = if leads { node.leader_of(m.current_term) } else { node.leader.lock().expect("poisoned") };
            if !leads {
                *slot = None;
            }
            match (slot.as_mut(), state) {
                (Some(leader), Some(state)) => {
                    for a in &ended {
                        leader.attempt_ended(a);
                    }
                    let now = node.clock.now();
                    leader.tick(&Tick { now, state, contact: &contact, ready, failing_since: &failing_since })
                }
                _ => Vec::new(),
            }
        };
        // The attempts belong to the leadership that started them.
        let term = leads.then_some(m.current_term);
        if self.term != term {
            self.abandon(|_| true).await;
            self.term = term;
        }
        for effect in effects {
            self.carry_out(effect).await;
        }
    }

    async fn carry_out(&mut self, effect: Effect) {
        let node = self.node.clone();
        match effect {
            Effect::Propose(command) => {
                tracing::info!(%command, "proposing");
                self.proposals.spawn(propose(node, command));
            }
            Effect::Journal { group, assessment } => {
                node.metrics.decisions.with_label_values(&[&group, assessment.kind()]).inc();
                // A site in trouble is a degraded state: warn. Recovery and suspicion: info.
                match assessment {
                    Assessment::FailingOver { .. }
                    | Assessment::NeedsApproval { .. }
                    | Assessment::SurvivorNotUp { .. } => tracing::warn!(%group, %assessment, "assessment"),
                    _ => tracing::info!(%group, %assessment, "assessment"),
                }
            }
            Effect::Start { attempt, context } => {
                let step = self.steps.get(&(attempt.group.to_string(), attempt.step.clone())).cloned();
                let Some(executors) = self.executors.clone() else { return };
                let task = tokio::spawn(super::planning::run_attempt(node, executors, step, attempt.clone(), context));
                self.attempts.insert(attempt, task);
            }
            Effect::Abort(attempt) => self.abandon(|a| *a == attempt).await,
            Effect::CheckPlan { group, epoch, observe } => {
                // Without executors no plan runs on this node either (said at start). Unchecked,
                // a group shows no result, or an ageing one (WitnessPlanReadinessStale), never
                // a fresh "ready".
                let Some(executors) = self.executors.clone() else { return };
                let (term, checks) = (self.term, self.checks.clone());
                self.proposals.spawn(async move {
                    let Ok(_turn) = checks.acquire().await else { return };
                    let steps = match node.check_plan_at(&group, observe.then_some(epoch), &executors).await {
                        Ok(check) => check.steps,
                        Err(e) => {
                            // Unreported: not a plan with nothing wrong (see above).
                            tracing::warn!(%group, error = %e, "plan readiness check failed");
                            return;
                        }
                    };
                    let result = PlanReadiness { checked_at_ms: crate::clock::unix_ms(), epoch, steps };
                    let mut slot = node.leader.lock().expect("leader lock poisoned");
                    // Reported only to the leadership that asked: a successor checks afresh.
                    if let Some(leader) = slot.as_mut().filter(|l| Some(l.term()) == term) {
                        leader.plan_checked(&group, result, node.clock.now());
                    }
                });
            }
        }
    }

    /// Aborts the attempts `which` selects and waits until each has stopped.
    async fn abandon(&mut self, which: impl Fn(&Attempt) -> bool) {
        let gone: Vec<Attempt> = self.attempts.keys().filter(|a| which(a)).cloned().collect();
        for attempt in gone {
            let task = self.attempts.remove(&attempt).expect("key just listed");
            task.abort();
            if task.await.is_err() {
                tracing::info!(group = %attempt.group, step = %attempt.step, attempt = attempt.attempt,
                    epoch = %attempt.epoch, "plan step attempt abandoned");
            }
        }
    }
}

/// Proposes `command` and tells the leader how it went; measures detection on a committed
/// automatic failover.
async fn propose(node: Arc<Node>, command: Command) {
    let timer = Stopwatch::start();
    let result = node.submit(LeaderRequest::Write(command.clone()), true).await;
    let committed = matches!(result, Ok(LeaderReply::Written { .. }));
    if let Some(leader) = node.leader.lock().expect("leader lock poisoned").as_mut() {
        leader.proposal_settled(&command, committed);
    }
    let response = match result {
        Ok(LeaderReply::Written { response, .. }) => response,
        Ok(other) => {
            tracing::warn!(%command, reply = %crate::telemetry::json(&other), "proposal not committed");
            return;
        }
        Err(e) => {
            tracing::warn!(%command, error = %e, "proposal not committed");
            return;
        }
    };
    for (command, response) in command.commands().iter().zip(response.responses()) {
        if !matches!(command, Command::Journal { .. }) {
            tracing::info!(%command, response = %crate::telemetry::json(response), "committed");
        }
        if let (Response::Activated { .. }, Command::Failover { facts, automatic: true, .. }) = (response, command) {
            if let Some(ms) = facts.detected_after_ms {
                let seconds = Duration::from_millis(ms) + timer.elapsed();
                node.metrics.detection_seconds.observe(seconds.as_secs_f64());
            }
        }
    }
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
