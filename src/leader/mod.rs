//! The leader, in one place. A [`Leader`] is made when this node becomes leader of a Raft term
//! and dropped when it is not (a new term makes a new one), so everything it remembers belongs
//! to one leadership: the decision engine's timers ([`Engine`]), the agents' reports and lease
//! grants ([`Ledger`]), the plan steps under way and their retry timers ([`Planner`]), and
//! whether this leadership has registered the config's topology.
//!
//! Pure, like openraft's `Engine`: events go in with `now` (the process's monotonic clock,
//! read by the runtime), effects come out, and the runtime (`node::leading`) carries them out
//! without a rule of its own. No tokio, no locks, no clock, no logging.
//!
//! Events: [`Leader::tick`] (the committed state, who acknowledges this leader, this node's
//! probe facts), [`Leader::heartbeat`] (answered at once), [`Leader::attempt_ended`],
//! [`Leader::proposal_settled`]. Effects: [`Effect`].

pub mod contact;
pub mod drills;
pub mod readiness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use contact::Contact;
use readiness::{PlanReadiness, Readiness, Turn, Turned};

use crate::config::Config;
use crate::engine::drill::{plan_drill, DrillFacts};
use crate::engine::leases::Ledger;
use crate::engine::plan::{Attempt, Planner, StepContext};
use crate::engine::{
    detected_after, plan_operator_failover, rpo_objective, Assessment, Engine, GroupTiming, Inputs, OperatorPlan,
};
use crate::protocol::{Heartbeat, HeartbeatAnswer, Role};
use crate::rng::SplitMix64;
use crate::state::drill::{DrillBudget, DrillSpec};
use crate::state::plan::Phase;
use crate::state::{Command, DecisionFacts, Epoch, GroupId, NodeId, Rejection, SiteId, State, Topology, BATCH_FORMAT};
use drills::Returns;

/// What a leader needs from this node's config; the same for every term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// This node.
    pub node: NodeId,
    /// Per group: hold-down, block and in-sync timing.
    pub timing: BTreeMap<GroupId, GroupTiming>,
    /// The sites and groups this node's config declares: a leadership registers them once.
    pub topology: Topology,
    /// A voter's verdicts count while it acknowledged this leader within this long (Raft's
    /// `election_timeout_max`).
    pub live_within: Duration,
    /// A leader a quorum has not acknowledged for this long abandons its plan steps: two thirds
    /// of `election_timeout_min`, since the others may elect a successor once that much has
    /// passed since the heartbeat a quorum last acknowledged (a third is left for the tick and
    /// the abort).
    pub cut_off_after: Duration,
    /// Per group with plan steps: how often its plan is checked ([`readiness`]).
    pub readiness_interval: BTreeMap<GroupId, Duration>,
    /// Per group: the RTO terms a drill is measured against.
    pub drill_budget: BTreeMap<GroupId, DrillBudget>,
    /// The groups whose drifted targets the leader repairs by itself (`repair_drift`).
    pub repair_drift: BTreeSet<GroupId>,
}

impl LeaderConfig {
    pub fn from_config(config: &Config) -> LeaderConfig {
        let timing = config
            .groups
            .iter()
            .map(|g| {
                let t = GroupTiming {
                    hold_down: g.hold_down,
                    block_after_failover: g.block_after_failover,
                    in_sync_within: g.agents.map_or(Duration::ZERO, |a| a.in_sync_within),
                };
                (GroupId::from(&g.name), t)
            })
            .collect();
        LeaderConfig {
            node: config.node.id,
            timing,
            topology: Topology::from_config(config),
            live_within: config.cluster.raft.election_timeout_max,
            cut_off_after: config.cluster.raft.election_timeout_min * 2 / 3,
            readiness_interval: config.groups.iter().map(|g| (GroupId::from(&g.name), g.readiness_interval)).collect(),
            drill_budget: config
                .groups
                .iter()
                .map(|g| (GroupId::from(&g.name), DrillBudget::of(&crate::config::budget::rto_budget(config, g))))
                .collect(),
            repair_drift: config.groups.iter().filter(|g| g.repair_drift).map(|g| GroupId::from(&g.name)).collect(),
        }
    }
}

/// Proof of a leadership confirmation (a linearizable read: a quorum still acknowledged this
/// node as leader of `term`) that began after the heartbeat it answers arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    pub term: u64,
}

/// What one look at the world gives the leader.
#[derive(Debug, Clone, Copy)]
pub struct Tick<'a> {
    /// This process's monotonic clock.
    pub now: Duration,
    /// The committed state (its journal is not needed).
    pub state: &'a State,
    pub contact: &'a Contact,
    /// This node is ready ([`contact::readiness`]): it has applied everything committed it
    /// knows of and a quorum acknowledged it recently. Nothing is decided or started otherwise.
    pub ready: bool,
    /// Per site, when this node's current streak of failed probes began.
    pub failing_since: &'a BTreeMap<SiteId, Duration>,
}

/// What the leader asks the runtime to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Propose a command to the log.
    Propose(Command),
    /// The engine's assessment of a group changed: the runtime logs and counts it. Its
    /// journal entry (with the evidence seen) is among the tick's proposals.
    Journal { group: GroupId, assessment: Assessment },
    /// Start this attempt: commit its `StepStarted`, run it, commit its result, then report it
    /// with [`Leader::attempt_ended`].
    Start { attempt: Attempt, context: StepContext },
    /// Stop this attempt and wait until it has stopped before carrying out the next effect.
    Abort(Attempt),
    /// Check `group`'s plan (changing nothing), as for a failover away from its active site at
    /// `epoch`; with `observe`, also read what each target holds against the decision of
    /// `epoch` (drift). Report the result with [`Leader::plan_checked`].
    CheckPlan { group: GroupId, epoch: Epoch, observe: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologySync {
    /// Not yet known to match the config.
    Unsettled,
    /// Proposed; waiting for it to settle.
    Proposed,
    /// Committed or matching: not proposed again this term (a refused part would otherwise be
    /// proposed again and again; `State::sync_topology` says what it refuses).
    Settled,
}

/// One leadership's memory and rules.
#[derive(Debug)]
pub struct Leader {
    config: Arc<LeaderConfig>,
    term: u64,
    engine: Engine,
    ledger: Ledger,
    planner: Planner,
    rng: SplitMix64,
    /// Attempts started and not yet reported ended.
    under_way: BTreeSet<Attempt>,
    topology: TopologySync,
    readiness: Readiness,
    /// Steps whose readiness turned since the last tick: journaled by the next.
    turned: Vec<Turned>,
    /// Drills holding on the other site, and when this leadership brings each back.
    returns: Returns,
}

impl Leader {
    /// A leadership of `term` starting at `now`. `seed` makes the retry jitter.
    pub fn new(config: Arc<LeaderConfig>, term: u64, now: Duration, seed: u64) -> Leader {
        Leader {
            config,
            term,
            engine: Engine::new(),
            ledger: Ledger::new(now),
            planner: Planner::default(),
            rng: SplitMix64::new(seed),
            under_way: BTreeSet::new(),
            topology: TopologySync::Unsettled,
            readiness: Readiness::default(),
            turned: Vec::new(),
            returns: Returns::default(),
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// The attempts started and not yet ended.
    pub fn under_way(&self) -> &BTreeSet<Attempt> {
        &self.under_way
    }

    /// One look at the world: what to propose, journal, start and abort.
    pub fn tick(&mut self, t: &Tick) -> Vec<Effect> {
        let mut effects = Vec::new();
        let cut_off = t.contact.cut_off(self.config.cut_off_after);
        if cut_off {
            // It may have been replaced without knowing it: no action of its may follow one of
            // its successor's. Its retry timers go too (a successor starts afresh).
            effects.extend(std::mem::take(&mut self.under_way).into_iter().map(Effect::Abort));
            self.planner = Planner::default();
        }
        if !t.ready {
            return effects;
        }
        self.sync_topology(t.state, &mut effects);
        self.decide(t, &mut effects);
        self.bring_drills_back(t, &mut effects);
        if !cut_off {
            self.plan(t, &mut effects);
            self.check_readiness(t, &mut effects);
        }
        if t.contact.all_read(self.config.node, BATCH_FORMAT) {
            batch(&mut effects);
        }
        effects
    }

    /// Journals the readiness turns reported since the last tick (and, for a group that
    /// repairs drift, runs a drifted step of its current, done plan again), then hands out the
    /// checks that are due.
    fn check_readiness(&mut self, t: &Tick, effects: &mut Vec<Effect>) {
        for Turned { group, step, turn } in std::mem::take(&mut self.turned) {
            let repair = matches!(turn, Turn::Drifted(_)) && self.config.repair_drift.contains(&group);
            let current = t.state.groups.get(&group).and_then(|g| {
                g.plan.as_ref().filter(|p| p.epoch == g.epoch && p.phase() == Phase::Done && !g.draining)
            });
            let reconcile = match current {
                Some(plan) if repair => Some(Command::ReconcilePlan {
                    group: group.clone(),
                    epoch: plan.epoch,
                    step: Some(step.clone()),
                    automatic: true,
                }),
                _ => None,
            };
            let assessment = match turn {
                Turn::NotReady(why) => Assessment::StepNotReady { step, why },
                Turn::Ready => Assessment::StepReady { step },
                Turn::Drifted(what) => Assessment::TargetDrift { step, what },
                Turn::InPlace => Assessment::TargetInPlace { step },
            };
            journal(effects, group, assessment, BTreeMap::new());
            effects.extend(reconcile.map(Effect::Propose));
        }
        let rng = &mut self.rng;
        for (group, epoch, observe) in
            self.readiness.due(t.state, &self.config.readiness_interval, t.now, || rng.unit())
        {
            effects.push(Effect::CheckPlan { group, epoch, observe });
        }
    }

    /// A check handed out with [`Effect::CheckPlan`] finished at `now`: its result is kept for
    /// status, and the steps that turned are journaled by the next tick.
    pub fn plan_checked(&mut self, group: &GroupId, result: PlanReadiness, now: Duration) {
        let Some(interval) = self.config.readiness_interval.get(group).copied() else { return };
        let unit = self.rng.unit();
        self.turned.extend(self.readiness.checked(group, result, interval, now, unit));
    }

    /// Every group's last plan check this leadership.
    pub fn readiness(&self) -> BTreeMap<GroupId, PlanReadiness> {
        self.readiness.view()
    }

    fn sync_topology(&mut self, state: &State, effects: &mut Vec<Effect>) {
        if self.topology == TopologySync::Settled {
            return;
        }
        if state.matches_topology(&self.config.topology) {
            self.topology = TopologySync::Settled;
        } else if self.topology == TopologySync::Unsettled {
            self.topology = TopologySync::Proposed;
            effects.push(Effect::Propose(Command::SyncTopology(self.config.topology.clone())));
        }
    }

    fn decide(&mut self, t: &Tick, effects: &mut Vec<Effect>) {
        let live = t.contact.live(self.config.node, self.config.live_within);
        let inputs = Inputs {
            now: t.now,
            state: t.state,
            voters: &t.contact.voters,
            live: &live,
            timing: &self.config.timing,
            ledger: &self.ledger,
            failing_since: t.failing_since,
        };
        for effect in self.engine.step(&inputs) {
            match effect {
                crate::engine::Effect::Propose(command) => effects.push(Effect::Propose(command)),
                crate::engine::Effect::Journal { group, assessment } => {
                    let seen = evidence(t.state, &group, &t.contact.voters, &live);
                    journal(effects, group, assessment, seen);
                }
            }
        }
    }

    /// Each drill whose hold is over goes back once its checks pass, or ends failed when they
    /// have not passed for [`drills::RETURN_PATIENCE`] after its hold.
    fn bring_drills_back(&mut self, t: &Tick, effects: &mut Vec<Effect>) {
        let live = t.contact.live(self.config.node, self.config.live_within);
        for (name, hold_over, give_up) in self.returns.due(t.state, t.now) {
            let g = &t.state.groups[&name];
            let facts = self.drill_facts(&name, g, t.now, false);
            let Ok(plan) = plan_drill(t.state, &name, true, &t.contact.voters, &live, &facts) else { continue };
            let command = if plan.all_pass() {
                Command::Drill {
                    group: name.clone(),
                    to: plan.to.clone(),
                    expected_epoch: plan.expected_epoch,
                    voters: t.contact.voters.clone(),
                    facts: DecisionFacts {
                        detected_after_ms: None,
                        rpo_ms: facts.exposure.map(|d| d.as_millis() as u64),
                    },
                    start: None,
                }
            } else if give_up {
                let failed: Vec<String> = plan.checks.iter().filter(|c| !c.passed).map(|c| c.detail.clone()).collect();
                let problem = format!(
                    "could not return to {} within {} s of the hold's end: {}",
                    plan.to,
                    drills::RETURN_PATIENCE.as_secs(),
                    failed.join("; ")
                );
                Command::EndDrill { group: name.clone(), id: hold_over, problem }
            } else {
                continue;
            };
            self.returns.proposed(&name);
            effects.push(Effect::Propose(command));
        }
    }

    /// What only this leadership knows of `group` for a drill's checks; `plan` asks for the
    /// plan's last scheduled check.
    fn drill_facts(&self, name: &GroupId, g: &crate::state::GroupState, now: Duration, plan: bool) -> DrillFacts {
        let in_sync_within = self.config.timing.get(name).map_or(Duration::ZERO, |t| t.in_sync_within);
        let readiness = || match self.readiness.last(name) {
            _ if g.spec.steps.is_empty() => Ok("no plan steps".to_string()),
            None => Err("not checked yet by this leader (the first check comes within 10 s of its start)".to_string()),
            Some(r) if r.epoch != g.epoch => {
                Err(format!("last checked at epoch {}, the group is at {}: a check is due at once", r.epoch, g.epoch))
            }
            Some(r) => match r.steps.iter().find(|s| !s.ok) {
                Some(s) => Err(format!("step {} not ready at the last check: {}", s.step, s.detail)),
                None => Ok("every step ready at the last scheduled check".to_string()),
            },
        };
        DrillFacts {
            exposure: self.ledger.rpo_exposure(name, g, in_sync_within, now),
            plan: plan.then(readiness),
            agents_ahead: self.ledger.agents_ahead(name, g),
        }
    }

    fn plan(&mut self, t: &Tick, effects: &mut Vec<Effect>) {
        // Attempts of a superseded failover stop, and are awaited, before any of the newer
        // one starts: no action of an older epoch follows one of a newer.
        let superseded: Vec<Attempt> = self
            .under_way
            .iter()
            .filter(|a| t.state.groups.get(&a.group).is_none_or(|g| g.epoch != a.epoch))
            .cloned()
            .collect();
        for attempt in superseded {
            self.under_way.remove(&attempt);
            effects.push(Effect::Abort(attempt));
        }
        let rng = &mut self.rng;
        for attempt in self.planner.due(t.state, &self.under_way, t.now, || rng.unit()) {
            let Some(context) = StepContext::of(t.state, &attempt) else { continue };
            self.under_way.insert(attempt.clone());
            effects.push(Effect::Start { attempt, context });
        }
    }

    /// Answers `site`'s heartbeat from `state`, if `confirmed` proves that this leadership
    /// still led after the heartbeat arrived; `None` otherwise: a deposed leader that still
    /// believes it leads must grant nothing. `state` must be read after that confirmation, and
    /// never concurrently with [`Leader::tick`] (the runtime holds one lock around the leader):
    /// a grant then either precedes a tick, which sees it, or sees at least the state that
    /// tick saw, so no group the engine sees draining is granted a lease.
    pub fn heartbeat(
        &mut self,
        now: Duration,
        site: &str,
        heartbeat: &Heartbeat,
        state: &State,
        confirmed: Option<Confirmed>,
    ) -> Option<HeartbeatAnswer> {
        if confirmed != Some(Confirmed { term: self.term }) {
            return None;
        }
        Some(self.ledger.heartbeat(now, site, heartbeat, state))
    }

    /// An attempt this leader started has ended (its result committed, or its start refused).
    pub fn attempt_ended(&mut self, attempt: &Attempt) {
        self.under_way.remove(attempt);
    }

    /// A command this leader proposed was committed, or not (each of a batch's).
    pub fn proposal_settled(&mut self, command: &Command, committed: bool) {
        for command in command.commands() {
            self.settled(command, committed);
        }
    }

    fn settled(&mut self, command: &Command, committed: bool) {
        match command {
            Command::SyncTopology(_) => {
                self.topology = if committed { TopologySync::Settled } else { TopologySync::Unsettled };
            }
            // Taken effect, the drill no longer holds; refused or lost, the next tick looks again.
            Command::Drill { group, start: None, .. } | Command::EndDrill { group, .. } => self.returns.settled(group),
            _ => {}
        }
    }

    /// An operator's failover order, checked on the leader against the evidence (after a
    /// linearizable read, so `t` is the leader's latest view): what it would do, and the
    /// command to commit if it goes ahead. `Err` when the order makes no sense at all.
    pub fn order(&self, order: &FailoverOrder, t: &Tick) -> Result<Order, Rejection> {
        let g =
            t.state.groups.get(&order.group).ok_or_else(|| Rejection::UnknownGroup { group: order.group.clone() })?;
        if let Some(drill) = &order.drill {
            return self.order_drill(order, drill, g, t);
        }
        // No target: back to the primary (a failback), as the latest committed state has it.
        let to = order.to.clone().unwrap_or_else(|| g.spec.primary.clone());
        let live = t.contact.live(self.config.node, self.config.live_within);
        let ahead = self.ledger.agents_ahead(&order.group, g);
        let plan = plan_operator_failover(t.state, &order.group, &to, &t.contact.voters, &live, ahead)?;
        let allowed = plan.all_pass() || order.force;
        if order.dry_run {
            return Ok(Order::DryRun { plan, allowed });
        }
        if !allowed {
            return Ok(Order::Refused { plan });
        }
        let forced = if plan.all_pass() { "" } else { " (forced past failed checks)" };
        let command = Command::Failover {
            group: plan.group.clone(),
            to: plan.to.clone(),
            expected_epoch: plan.expected_epoch,
            reason: format!("operator: {}{forced}", order.reason),
            // Unforced orders keep their evidence checked at commit, like the engine's.
            quorum_of: (!order.force).then(|| t.contact.voters.clone()),
            automatic: false,
            facts: self.decision_facts(&plan.group, t.state, t.now, t.failing_since),
            past: plan.past,
        };
        Ok(Order::Commit { plan, command })
    }

    /// A drill: checked like its way back will be, plus the plan's readiness; never forced.
    fn order_drill(
        &self,
        order: &FailoverOrder,
        drill: &DrillRequest,
        g: &crate::state::GroupState,
        t: &Tick,
    ) -> Result<Order, Rejection> {
        let live = t.contact.live(self.config.node, self.config.live_within);
        let facts = self.drill_facts(&order.group, g, t.now, true);
        let plan = plan_drill(t.state, &order.group, false, &t.contact.voters, &live, &facts)?;
        if order.dry_run {
            let allowed = plan.all_pass();
            return Ok(Order::DryRun { plan, allowed });
        }
        if !plan.all_pass() {
            return Ok(Order::Refused { plan });
        }
        let spec = DrillSpec {
            hold_ms: drill.hold_ms,
            back: drill.back,
            reason: order.reason.clone(),
            by: drill.by.clone(),
            requested_at_ms: drill.requested_at_ms,
            budget: self.config.drill_budget.get(&order.group).copied().unwrap_or_default(),
        };
        let command = Command::Drill {
            group: plan.group.clone(),
            to: plan.to.clone(),
            expected_epoch: plan.expected_epoch,
            voters: t.contact.voters.clone(),
            facts: DecisionFacts { detected_after_ms: None, rpo_ms: facts.exposure.map(|d| d.as_millis() as u64) },
            start: Some(Box::new(spec)),
        };
        Ok(Order::Commit { plan, command })
    }

    /// What an operator's failover of `group` is recorded with: the detection time from this
    /// node's probes, and the data the survivor's copy lacks for a failure at the start of the
    /// active site's failing streak (now, if this node sees none).
    pub fn decision_facts(
        &self,
        group: &str,
        state: &State,
        now: Duration,
        failing_since: &BTreeMap<SiteId, Duration>,
    ) -> DecisionFacts {
        let (Some(g), Some(timing)) = (state.groups.get(group), self.config.timing.get(group)) else {
            return DecisionFacts::default();
        };
        let failed_at = failing_since.get(&g.active).copied().unwrap_or(now);
        let at_risk = g.spec.leases.and(self.ledger.data_at_risk(group, g, timing.in_sync_within, failed_at, now));
        DecisionFacts {
            detected_after_ms: detected_after(failing_since, &g.active, now),
            rpo_ms: at_risk.map(|d| d.as_millis() as u64),
        }
    }

    /// Per group with agents: what its agents reported to this leadership and the leases they
    /// hold.
    pub fn agents(&self, state: &State, now: Duration) -> BTreeMap<GroupId, GroupAgents> {
        let ledger = &self.ledger;
        let ms = |d: Duration| d.as_millis() as u64;
        state
            .groups
            .iter()
            .filter(|(_, g)| g.spec.leases.is_some())
            .map(|(name, g)| {
                let sites = [&g.spec.primary, &g.spec.secondary]
                    .into_iter()
                    .map(|site| {
                        let record = ledger.site(site);
                        let report = record.and_then(|r| r.groups.get(name)).map(|g| g.report.clone());
                        let agent = SiteAgent {
                            heard_ms_ago: record.map(|r| ms(now.saturating_sub(r.heard_at))),
                            silent: ledger.heard_within_lease(site, g, now).is_none(),
                            peer_reachable: record.map(|r| r.peer_reachable),
                            peer_problem: record.and_then(|r| r.peer_problem.clone()),
                            peer_lease_ms: report.as_ref().map_or(0, |r| r.peer_lease_ms),
                            role: report.as_ref().and_then(|r| r.role),
                            epoch: report.as_ref().and_then(|r| r.epoch),
                            in_sync: report.as_ref().and_then(|r| r.in_sync),
                            recovery_point_age_ms: report.as_ref().and_then(|r| r.recovery_point_age_ms),
                            drained: report.as_ref().is_some_and(|r| r.drained),
                            lease_remaining_ms: if *site == g.active {
                                ms(ledger.lease_remaining(name, g, now))
                            } else {
                                0
                            },
                        };
                        (site.clone(), agent)
                    })
                    .collect();
                let agents = GroupAgents {
                    agents_ahead: ledger.agents_ahead(name, g).map(|(_, epoch)| epoch),
                    without_peer_lease: ledger.without_peer_lease(name, g, now),
                    rpo_exposure_ms: self
                        .config
                        .timing
                        .get(name)
                        .and_then(|t| ledger.rpo_exposure(name, g, t.in_sync_within, now))
                        .map(ms),
                    rpo_objective_ms: rpo_objective(g).map(ms),
                    leases_expire_in_ms: g.draining.then(|| ms(ledger.leases_expire_at(name, g).saturating_sub(now))),
                    sites,
                };
                (name.clone(), agents)
            })
            .collect()
    }
}

/// An operator's order to make a site active for a group (`witness failover`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailoverOrder {
    pub group: GroupId,
    /// The site to make active; `None` for the group's primary (a failback), resolved on the
    /// leader from the latest committed state.
    pub to: Option<SiteId>,
    pub reason: String,
    /// Only say what would happen.
    pub dry_run: bool,
    /// Proceed even when checks fail (never past the epoch compare-and-set).
    pub force: bool,
    /// A drill: a switchover to the other site while both are up, under its own checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRequest>,
}

/// What a drill order adds to a failover order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRequest {
    pub hold_ms: u64,
    pub back: bool,
    /// Who asked, and when the order reached the leader (its wall clock, Unix ms): set by the
    /// runtime there, for the report.
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub requested_at_ms: u64,
}

/// What the leader makes of an operator's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// A dry run: nothing changes; `allowed` says whether the order would proceed.
    DryRun { plan: OperatorPlan, allowed: bool },
    /// A check failed and the order was not forced: nothing changes.
    Refused { plan: OperatorPlan },
    /// Commit `command` (the epoch compare-and-set still decides).
    Commit { plan: OperatorPlan, command: Command },
}

/// The most commands one log entry carries: a mass failover's decisions commit in a few
/// entries of bounded size (each command of a few hundred bytes) rather than in one per group.
pub const BATCH_MOST: usize = 250;

/// A tick's proposals, in their order, become one proposal of a [`Command::Batch`] (or a few,
/// of [`BATCH_MOST`] each), after the tick's other effects: its decisions for many groups then
/// commit in one round trip and one log entry. A proposal alone stays as it is.
fn batch(effects: &mut Vec<Effect>) {
    let (proposals, others): (Vec<Effect>, Vec<Effect>) =
        std::mem::take(effects).into_iter().partition(|e| matches!(e, Effect::Propose(_)));
    *effects = others;
    let mut commands = proposals.into_iter().filter_map(|e| match e {
        Effect::Propose(command) => Some(command),
        _ => None,
    });
    loop {
        let mut chunk: Vec<Command> = commands.by_ref().take(BATCH_MOST).collect();
        let command = match chunk.len() {
            0 => return,
            1 => chunk.remove(0),
            _ => Command::Batch(chunk),
        };
        effects.push(Effect::Propose(command));
    }
}

/// An assessment for the runtime to log and count, and its journal entry to propose.
fn journal(effects: &mut Vec<Effect>, group: GroupId, assessment: Assessment, evidence: BTreeMap<SiteId, String>) {
    let entry = Command::Journal {
        evidence,
        kind: assessment.kind().to_string(),
        message: assessment.to_string(),
        group: group.clone(),
    };
    effects.push(Effect::Journal { group, assessment });
    effects.push(Effect::Propose(entry));
}

/// What the engine saw, for the journal: each of the group's sites with every voter's verdict
/// (`-` for a voter not heard from recently, whose verdict did not count).
fn evidence(
    state: &State,
    group: &str,
    voters: &BTreeSet<NodeId>,
    live: &BTreeSet<NodeId>,
) -> BTreeMap<SiteId, String> {
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

/// A group's agents as the leader knows them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupAgents {
    /// The epoch an agent holds past the group's: the witness lost committed state (restored
    /// from an older backup), and nothing moves the group until a forced failover takes the
    /// epoch past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_ahead: Option<Epoch>,
    /// Why the active site holds no peer lease from the other site (absent while it holds
    /// one): writable by the witness's lease alone, it would stop if the witness went away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_peer_lease: Option<String>,
    /// The data a failover now would lose: none for a synchronous copy reported in sync within
    /// `in_sync_within`, otherwise how far it is behind (sync: since its last in-sync report;
    /// async: its recovery point's age); absent when not reported.
    pub rpo_exposure_ms: Option<u64>,
    /// The group's `rpo`: how much a failover may lose.
    #[serde(default)]
    pub rpo_objective_ms: Option<u64>,
    /// While draining: until the old active site's witness leases have certainly expired.
    pub leases_expire_in_ms: Option<u64>,
    pub sites: BTreeMap<SiteId, SiteAgent>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteAgent {
    /// Absent: not heard from by this leader.
    pub heard_ms_ago: Option<u64>,
    /// Not heard from within a lease: what it last reported (its role above all) is history.
    #[serde(default)]
    pub silent: bool,
    pub peer_reachable: Option<bool>,
    /// Why its peer-lease exchange with the other site fails, as the agent says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_problem: Option<String>,
    /// The peer lease it holds from the other site, remaining when it last reported.
    #[serde(default)]
    pub peer_lease_ms: u64,
    pub role: Option<Role>,
    pub epoch: Option<Epoch>,
    pub in_sync: Option<bool>,
    pub recovery_point_age_ms: Option<u64>,
    pub drained: bool,
    pub lease_remaining_ms: u64,
}

#[cfg(test)]
mod tests;
