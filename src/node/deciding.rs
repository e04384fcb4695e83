//! The leader's decision loop: runs the pure engine over the committed state, proposes what it
//! calls for, journals its assessments with their evidence, and measures detection latency.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::task::JoinSet;

use super::leader::{LeaderReply, LeaderRequest};
use super::Node;
use crate::config::ReplicationMode;
use crate::engine::{Assessment, Effect, Engine, GroupTiming, Inputs};
use crate::state::{Command, DecisionFacts, Response, State};

/// On the leader, runs the decision engine over the committed state on every commit and every
/// 50 ms, and proposes what it calls for. Off the leader, or while not ready, the engine is
/// dropped, so a new leadership always starts with fresh memory.
pub(super) async fn decide(node: Arc<Node>) {
    let timing: BTreeMap<String, GroupTiming> = node
        .config
        .groups
        .iter()
        .map(|g| {
            let t = GroupTiming {
                hold_down: g.hold_down,
                block_after_failover: g.block_after_failover,
                in_sync_within: g.agents.map_or(Duration::ZERO, |a| a.in_sync_within),
            };
            (g.name.clone(), t)
        })
        .collect();
    let mut engine: Option<(u64, Engine)> = None;
    let mut proposals = JoinSet::new();
    let mut updates = node.raft.metrics();
    let mut tick = tokio::time::interval(ENGINE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Step on every committed change (a verdict arrives) and on the tick (timers expire).
        tokio::select! {
            _ = tick.tick() => {}
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                // Coalesce a burst of commits into one step: verdicts are rare, writes are not.
                tokio::time::sleep(COALESCE).await;
            }
        }
        while proposals.try_join_next().is_some() {}
        let (leader, term) = {
            let metrics = node.raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        // The engine's memory belongs to one leadership: a new term starts afresh.
        if leader != Some(node.id) || engine.as_ref().is_some_and(|(t, _)| *t != term) {
            engine = None;
        }
        if leader != Some(node.id) {
            continue;
        }
        // Not ready (no quorum acknowledgement, or a commit not yet applied): skip this step
        // but keep the timers; they must not restart on every commit.
        if node.readiness().is_err() {
            continue;
        }
        let (_, engine) = engine.get_or_insert_with(|| (term, Engine::new()));
        let (voters, live) = node.voters_and_live();
        // The state machine applies under the write lock: copy what the engine reads (not the
        // journal) and step outside it, so a step never holds up a commit.
        let state = node.applied.read().expect("state lock poisoned").state.without_journal();
        let state = &state;
        // After the state copy: a grant recorded later saw at least this state (heartbeats.rs).
        let ledger = node.ledger(term).as_ref().expect("just ensured").1.clone();
        let mut writes = Vec::new();
        {
            let now = node.started.elapsed();
            let inputs = Inputs { now, state, voters: &voters, live: &live, timing: &timing, ledger: &ledger };
            for effect in engine.step(&inputs) {
                match effect {
                    Effect::Journal { group, assessment } => {
                        node.metrics.decisions.with_label_values(&[&group, assessment.kind()]).inc();
                        // A site in trouble is a degraded state: warn. Recovery and suspicion: info.
                        match assessment {
                            Assessment::FailingOver { .. }
                            | Assessment::NeedsApproval { .. }
                            | Assessment::SurvivorNotUp { .. } => tracing::warn!(%group, %assessment, "assessment"),
                            _ => tracing::info!(%group, %assessment, "assessment"),
                        }
                        writes.push(Command::Journal {
                            evidence: evidence(state, &group, &voters, &live),
                            kind: assessment.kind().to_string(),
                            message: assessment.to_string(),
                            group,
                        });
                    }
                    Effect::Propose(mut command) => {
                        if let Command::Failover { group, facts, .. } = &mut command {
                            facts.detected_after_ms = node.detected_after_ms(state, group);
                        }
                        tracing::info!(%command, "proposing");
                        writes.push(command);
                    }
                }
            }
        }
        for command in writes {
            let node = node.clone();
            proposals.spawn(async move {
                match node.submit(LeaderRequest::Write(command.clone()), true).await {
                    Ok(reply) => {
                        if !matches!(command, Command::Journal { .. }) {
                            tracing::info!(%command, ?reply, "committed");
                        }
                        node.observe_detection(&command, &reply);
                    }
                    Err(e) => tracing::warn!(%command, error = %e, "proposal not committed"),
                }
            });
        }
    }
}

/// How often the leader's engine looks again when nothing was committed (its timers).
const ENGINE_TICK: Duration = Duration::from_millis(50);
/// How long the engine lets commits accumulate before it steps on them.
const COALESCE: Duration = Duration::from_millis(10);

/// What the engine saw, for the journal: each of the group's sites with every voter's verdict
/// (`-` for a voter not heard from recently, whose verdict did not count).
fn evidence(state: &State, group: &str, voters: &BTreeSet<u64>, live: &BTreeSet<u64>) -> BTreeMap<String, String> {
    let Some(g) = state.groups.get(group) else { return BTreeMap::new() };
    [&g.spec.primary, &g.spec.secondary]
        .into_iter()
        .map(|site| {
            let seen: Vec<String> = voters
                .iter()
                .map(|id| {
                    let v = state.verdict(site, *id).map_or("unknown".to_string(), |v| v.to_string());
                    if live.contains(id) {
                        format!("node{id}={v}")
                    } else {
                        format!("node{id}=-")
                    }
                })
                .collect();
            (site.clone(), seen.join(" "))
        })
        .collect()
}

impl Node {
    /// How long ago this node's current streak of failed probes of `group`'s active site began.
    fn detected_after_ms(&self, state: &State, group: &str) -> Option<u64> {
        let active = &state.groups.get(group)?.active;
        let failing = self.failing_since.lock().expect("failing_since lock poisoned");
        failing.get(active).map(|since| since.elapsed().as_millis() as u64)
    }

    /// What an operator's failover of `group` is recorded with: the detection as above, and
    /// from this leadership's ledger the data the survivor's copy may lack (0 for a synchronous
    /// copy in sync within `in_sync_within`).
    pub(super) fn decision_facts(&self, group: &str) -> DecisionFacts {
        let state = self.applied.read().expect("state lock poisoned").state.without_journal();
        let Some(g) = state.groups.get(group) else { return DecisionFacts::default() };
        let term = self.raft.metrics().borrow_watched().current_term;
        let ledger = self.ledger(term).as_ref().expect("just ensured").1.clone();
        let exposure = ledger.rpo_exposure(group, g, self.started.elapsed()).map(|d| d.as_millis() as u64);
        let in_sync_within = self.config.groups.iter().find(|c| c.name == group).and_then(|c| c.agents);
        let rpo_ms = match (g.spec.replication, exposure, in_sync_within) {
            (ReplicationMode::Sync, Some(e), Some(a)) if e <= a.in_sync_within.as_millis() as u64 => Some(0),
            (_, exposure, _) => exposure,
        };
        DecisionFacts { detected_after_ms: self.detected_after_ms(&state, group), rpo_ms }
    }

    /// After a committed automatic failover: the time from this node's first failed probe of
    /// the failed site to now (leader-local: both ends on this node's clock).
    fn observe_detection(&self, command: &Command, reply: &LeaderReply) {
        let (Command::Failover { group, .. }, LeaderReply::Written { response: Response::Activated { .. }, .. }) =
            (command, reply)
        else {
            return;
        };
        let Some(failed) = self.applied.read().expect("state lock poisoned").state.groups.get(group).map(|g| {
            if g.active == g.spec.primary {
                g.spec.secondary.clone()
            } else {
                g.spec.primary.clone()
            }
        }) else {
            return;
        };
        if let Some(since) = self.failing_since.lock().expect("failing_since lock poisoned").get(&failed) {
            self.metrics.detection_seconds.observe(since.elapsed().as_secs_f64());
        }
    }
}
