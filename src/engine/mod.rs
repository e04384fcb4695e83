//! The decision engine. Pure: the committed state, which voters are live, the groups' timing
//! and `now` go in; proposals and journal entries come out. No I/O, no clock, no randomness,
//! so every rule is tested by feeding inputs and asserting the exact effects.
//!
//! The engine runs on the leader only. Its memory (when a majority first saw a site down,
//! when a block began) is measured on the leader's own monotonic clock and starts afresh on
//! every new leader, which can only make it wait longer, never shorter.

pub mod detector;
pub mod drill;
pub mod leases;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::keyed::{align, Cursor};
pub use crate::state::Gate;
use crate::state::{Command, DecisionFacts, Epoch, GroupId, GroupState, NodeId, SiteId, State};
use leases::{GroupRecord, Ledger, SiteRecord};

/// Per-group timing the engine needs, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTiming {
    /// How long a majority must see the active site down before a failover.
    pub hold_down: Duration,
    /// How long after a failover the group stays blocked unless acknowledged sooner.
    pub block_after_failover: Duration,
    /// Groups with agents, synchronous: how long before the failure the survivor must last
    /// have reported in sync.
    pub in_sync_within: Duration,
}

pub struct Inputs<'a> {
    /// Leader-local monotonic time.
    pub now: Duration,
    pub state: &'a State,
    /// The voters of the witness cluster: a majority of these is a quorum.
    pub voters: &'a BTreeSet<NodeId>,
    /// Voters heard from recently; the verdicts of the others count as unknown.
    pub live: &'a BTreeSet<NodeId>,
    pub timing: &'a BTreeMap<GroupId, GroupTiming>,
    /// What the sites' agents reported to this leader, and its lease grants.
    pub ledger: &'a Ledger,
    /// Per site, when this node's current streak of failed probes began (leader-local time):
    /// a failover records its detection time from it.
    pub failing_since: &'a BTreeMap<SiteId, Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Propose(Command),
    /// The engine's view of a group changed: worth a journal entry.
    Journal {
        group: GroupId,
        assessment: Assessment,
    },
}

/// What the engine makes of one group right now. Journaled whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "assessment")]
pub enum Assessment {
    /// No live voter sees the active site down.
    Healthy { active: SiteId },
    /// Some voters see the active site down, fewer than a quorum.
    BelowQuorum { site: SiteId, down: usize, voters: usize, quorum: usize },
    /// A quorum sees the active site down but not a quorum sees the other site up (both in
    /// trouble, or the witness cannot see either): nothing moves.
    SurvivorNotUp { failed: SiteId, survivor: SiteId, up: usize, voters: usize, quorum: usize },
    /// A quorum sees the active site down and the other up; waiting out the hold-down.
    HoldingDown { failed: SiteId, survivor: SiteId, down: usize, voters: usize },
    /// A quorum sees the active site down, but the survivor's agent still reaches it: the
    /// witness's own paths to it are what broke. No failover.
    PathBroken { failed: SiteId, survivor: SiteId },
    /// Every rule for a failover holds but a gate stops it: an operator must decide.
    /// `rpo_exposure_ms`: how far the survivor's copy is behind, when known (not compared when
    /// deciding whether the assessment changed).
    NeedsApproval { failed: SiteId, survivor: SiteId, gates: Vec<Gate>, rpo_exposure_ms: Option<u64> },
    /// A failover was proposed.
    FailingOver { from: SiteId, to: SiteId, epoch: Epoch },
    /// The block after a failover has run its course.
    BlockExpired { epoch: Epoch },
    /// A failover is committed and the group drains: waiting for what `waiting_for` names.
    Draining { from: SiteId, to: SiteId, epoch: Epoch, waiting_for: DrainWait },
    /// Every lease is out and the survivor has drained: its promotion was proposed.
    Promoting { site: SiteId, epoch: Epoch },
    /// A failover now would lose more than the group's `rpo` allows (sync: not in sync for
    /// longer than `in_sync_within`; async: its recovery point is older than `rpo`, e.g. a
    /// scheduled run was missed). Journaled apart from the group's other assessments.
    RpoAtRisk { standby: SiteId, exposure_ms: u64, objective_ms: u64 },
    /// The standby's copy is back within the objective.
    RpoWithin { standby: SiteId, exposure_ms: u64, objective_ms: u64 },
    /// An agent holds a later epoch than this witness has committed (the witness was restored
    /// from an older backup): nothing moves until an operator's forced failover takes the
    /// epoch past the agents'.
    AgentsAhead { agents: Epoch, epoch: Epoch },
    /// A plan step's scheduled check failed where the last one passed (or this is the first):
    /// the plan would fail at this step if the group failed over now.
    StepNotReady { step: String, why: String },
    /// A plan step's check passes again.
    StepReady { step: String },
    /// A plan step's target holds something else than the committed decision (a record edited
    /// by hand, storage switched outside the plan): `witness plan reconcile` or a hand repairs it.
    TargetDrift { step: String, what: String },
    /// The step's target holds the decision again.
    TargetInPlace { step: String },
}

/// What a draining group waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainWait {
    /// The old active site's witness leases to expire.
    WitnessLeases,
    /// The new site's agent to report that every peer lease it granted has expired.
    AgentDrained,
}

impl Assessment {
    /// Equal for journaling purposes: the same assessment, whatever its changing figures.
    fn same(&self, other: &Assessment) -> bool {
        match (self, other) {
            (
                Assessment::NeedsApproval { failed, survivor, gates, .. },
                Assessment::NeedsApproval { failed: f2, survivor: s2, gates: g2, .. },
            ) => failed == f2 && survivor == s2 && gates == g2,
            (a, b) => a == b,
        }
    }
}

impl Assessment {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Assessment::Healthy { .. } => "healthy",
            Assessment::BelowQuorum { .. } => "below_quorum",
            Assessment::SurvivorNotUp { .. } => "survivor_not_up",
            Assessment::HoldingDown { .. } => "holding_down",
            Assessment::PathBroken { .. } => "witness_path_broken",
            Assessment::NeedsApproval { .. } => "needs_approval",
            Assessment::Draining { .. } => "draining",
            Assessment::Promoting { .. } => "promoting",
            Assessment::FailingOver { .. } => "failing_over",
            Assessment::BlockExpired { .. } => "block_expired",
            Assessment::RpoAtRisk { .. } => "rpo_at_risk",
            Assessment::RpoWithin { .. } => "rpo_within",
            Assessment::AgentsAhead { .. } => "agents_ahead",
            Assessment::StepNotReady { .. } => "step_not_ready",
            Assessment::StepReady { .. } => "step_ready",
            Assessment::TargetDrift { .. } => "target_drift",
            Assessment::TargetInPlace { .. } => "target_in_place",
        }
    }
}

impl fmt::Display for Assessment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Assessment::Healthy { active } => write!(f, "{active} healthy"),
            Assessment::BelowQuorum { site, down, voters, quorum } => {
                write!(f, "{site} down in {down} of {voters} nodes: below quorum ({quorum})")
            }
            Assessment::SurvivorNotUp { failed, survivor, up, voters, quorum } => write!(
                f,
                "{failed} down, but {survivor} up in only {up} of {voters} nodes (quorum {quorum}): no failover"
            ),
            Assessment::HoldingDown { failed, survivor, down, voters } => {
                write!(f, "{failed} down in {down} of {voters} nodes, {survivor} up: holding down")
            }
            Assessment::PathBroken { failed, survivor } => write!(
                f,
                "{failed} down as the witness sees it, but {survivor}'s agent still reaches it: the witness's own \
                 paths to {failed} are broken, no failover"
            ),
            Assessment::NeedsApproval { failed, survivor, gates, rpo_exposure_ms } => {
                let names: Vec<String> = gates.iter().map(Gate::to_string).collect();
                write!(f, "failover {failed} -> {survivor} needs approval: {}", names.join(", "))?;
                match rpo_exposure_ms {
                    Some(ms) => write!(f, "; RPO exposure {ms} ms"),
                    None if gates.contains(&Gate::Rpo) => write!(f, "; RPO exposure unknown (no replication report)"),
                    None => Ok(()),
                }
            }
            Assessment::Draining { from, to, epoch, waiting_for } => {
                let what = match waiting_for {
                    DrainWait::WitnessLeases => format!("{from}'s witness leases to expire"),
                    DrainWait::AgentDrained => format!("{to}'s agent to wait out its peer leases and report drained"),
                };
                write!(f, "draining {from} -> {to} at epoch {epoch}: waiting for {what}")
            }
            Assessment::Promoting { site, epoch } => write!(f, "promoting {site} at epoch {epoch}"),
            Assessment::FailingOver { from, to, epoch } => write!(f, "failing over {from} -> {to} at epoch {epoch}"),
            Assessment::BlockExpired { epoch } => write!(f, "block after the failover to epoch {epoch} expired"),
            Assessment::RpoAtRisk { standby, exposure_ms, objective_ms } => write!(
                f,
                "RPO at risk: {standby}'s copy is {exposure_ms} ms behind, the objective allows {objective_ms} ms \
                 (a failover now would need approval)"
            ),
            Assessment::StepNotReady { step, why } => {
                write!(f, "plan step {step} not ready (a failover now would fail there): {why}")
            }
            Assessment::StepReady { step } => write!(f, "plan step {step} ready again"),
            Assessment::TargetDrift { step, what } => {
                write!(f, "plan step {step}'s target drifted from the committed decision: {what}")
            }
            Assessment::TargetInPlace { step } => write!(f, "plan step {step}'s target holds the decision again"),
            Assessment::AgentsAhead { agents, epoch } => write!(
                f,
                "the agents hold epoch {agents}, past this witness's {epoch} (restored from an older backup?): \
                 nothing moves until an operator fails over with --force to the site that is really active, which \
                 takes the epoch past {agents}"
            ),
            Assessment::RpoWithin { standby, exposure_ms, objective_ms } => {
                write!(f, "RPO within its objective again: {standby}'s copy {exposure_ms} ms behind (objective {objective_ms} ms)")
            }
        }
    }
}

/// Leader-local memory about one group.
#[derive(Debug, Default)]
struct Memory {
    /// Epoch the rest of this memory is about; any change of epoch starts afresh.
    epoch: Option<Epoch>,
    /// When a quorum was first seen agreeing the active site is down (and the survivor up).
    down_since: Option<Duration>,
    /// When this leader first saw the group blocked.
    blocked_since: Option<Duration>,
    /// When this leader last proposed a failover / an acknowledgement for this epoch. Repeated
    /// at most every [`PROPOSAL_RETRY`] while still called for: a lost proposal is retried,
    /// and a duplicate is harmless (the compare-and-set rejects it).
    failover_proposed_at: Option<Duration>,
    ack_proposed_at: Option<Duration>,
    promote_proposed_at: Option<Duration>,
    last: Option<Assessment>,
    /// Whether the standby's copy was last seen beyond the RPO objective.
    rpo_at_risk: Option<bool>,
}

pub const PROPOSAL_RETRY: Duration = Duration::from_secs(1);

fn due(last: &mut Option<Duration>, now: Duration) -> bool {
    let due = last.is_none_or(|at| now.saturating_sub(at) >= PROPOSAL_RETRY);
    if due {
        *last = Some(now);
    }
    due
}

#[derive(Debug, Default)]
pub struct Engine {
    groups: BTreeMap<GroupId, Memory>,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    pub fn step(&mut self, inputs: &Inputs) -> Vec<Effect> {
        let mut effects = Vec::new();
        // Walked together in key order, not looked up per group: linear in the groups. Each
        // site's agent records too (the RPO watch reads the standby's): a cursor per site, each
        // given the groups it is standby of, in order.
        let mut timings = Cursor::new(inputs.timing.iter());
        let mut records: BTreeMap<&SiteId, (&SiteRecord, _)> =
            inputs.ledger.sites().map(|(site, r)| (site, (r, Cursor::new(r.groups.iter())))).collect();
        for (name, group, memory) in align(&mut self.groups, &inputs.state.groups, |_| Memory::default()) {
            let Some(timing) = timings.seek(name) else {
                continue;
            };
            if memory.epoch != Some(group.epoch) {
                *memory = Memory { epoch: Some(group.epoch), last: memory.last.take(), ..Memory::default() };
            }
            let (assessment, proposal) = assess(name, group, timing, memory, inputs);
            if let Some(command) = proposal {
                effects.push(Effect::Propose(command));
            }
            if !memory.last.as_ref().is_some_and(|last| last.same(&assessment)) {
                memory.last = Some(assessment.clone());
                effects.push(Effect::Journal { group: name.clone(), assessment });
            }
            let standby = records.get_mut(group.other()).and_then(|(site, groups)| Some((*site, groups.seek(name)?)));
            if let Some(assessment) = watch_rpo(group, timing, memory, standby, inputs.now) {
                effects.push(Effect::Journal { group: name.clone(), assessment });
            }
        }
        effects
    }
}

fn assess(
    name: &str,
    group: &GroupState,
    timing: &GroupTiming,
    memory: &mut Memory,
    inputs: &Inputs,
) -> (Assessment, Option<Command>) {
    let voters = inputs.voters.len();
    let failed = group.active.clone();
    let survivor = group.other().clone();
    if let Some((_, agents)) = inputs.ledger.agents_ahead(name, group) {
        return (Assessment::AgentsAhead { agents, epoch: group.epoch }, None);
    }
    if group.draining {
        return drain(name, group, memory, inputs);
    }

    // The block after a failover ends by acknowledgement or, measured here, by time.
    let mut blocked = group.blocked;
    if group.blocked {
        let since = *memory.blocked_since.get_or_insert(inputs.now);
        if inputs.now.saturating_sub(since) >= timing.block_after_failover {
            blocked = false;
            if due(&mut memory.ack_proposed_at, inputs.now) {
                return (
                    Assessment::BlockExpired { epoch: group.epoch },
                    Some(Command::Ack { group: name.into(), expected_epoch: group.epoch }),
                );
            }
        }
    }

    // Only live voters' verdicts count; anything else is unknown.
    let evidence = inputs.state.evidence(&failed, &survivor, inputs.voters, inputs.live);
    let (down, up, quorum) = (evidence.down, evidence.up, evidence.quorum);
    if down == 0 {
        memory.down_since = None;
        return (Assessment::Healthy { active: failed }, None);
    }
    if down < quorum {
        memory.down_since = None;
        return (Assessment::BelowQuorum { site: failed, down, voters, quorum }, None);
    }
    if up < quorum {
        memory.down_since = None;
        return (Assessment::SurvivorNotUp { failed, survivor, up, voters, quorum }, None);
    }
    // The survivor's agent, heard within a lease, is a witness of its own: if it still reaches
    // the failed site, the site is alive and only the witness's paths to it broke.
    let survivor_agent = inputs.ledger.heard_within_lease(&survivor, group, inputs.now);
    if survivor_agent.is_some_and(|r| r.peer_reachable) {
        memory.down_since = None;
        return (Assessment::PathBroken { failed, survivor }, None);
    }
    let since = *memory.down_since.get_or_insert(inputs.now);
    if inputs.now.saturating_sub(since) < timing.hold_down {
        return (Assessment::HoldingDown { failed, survivor, down, voters }, None);
    }

    let mut gates = inputs.state.closed_gates(group);
    if !blocked {
        // Expired by time: the acknowledgement proposed above lifts it in the log.
        gates.retain(|g| *g != Gate::Blocked);
    }
    let mut rpo_exposure_ms = None;
    let mut rpo_ms = None;
    if group.spec.leases.is_some() {
        if survivor_agent.is_none() {
            gates.push(Gate::SurvivorAgentSilent);
        }
        let at_risk = inputs.ledger.data_at_risk(name, group, timing.in_sync_within, since, inputs.now);
        rpo_exposure_ms = at_risk.map(|d| d.as_millis() as u64);
        if at_risk.is_none_or(|lost| Some(lost) > rpo_objective(group)) {
            gates.push(Gate::Rpo);
        }
        rpo_ms = at_risk.map(|d| d.as_millis() as u64);
    }
    if !gates.is_empty() {
        return (Assessment::NeedsApproval { failed, survivor, gates, rpo_exposure_ms }, None);
    }
    let epoch = group.epoch.next();
    let proposal = due(&mut memory.failover_proposed_at, inputs.now).then(|| Command::Failover {
        group: name.into(),
        to: survivor.clone(),
        expected_epoch: group.epoch,
        reason: format!(
            "{failed} down in {down} of {voters} witness nodes for {} ms; {survivor} up in {up} of {voters}",
            inputs.now.saturating_sub(since).as_millis()
        ),
        quorum_of: Some(inputs.voters.clone()),
        automatic: true,
        facts: DecisionFacts { detected_after_ms: detected_after(inputs.failing_since, &failed, inputs.now), rpo_ms },
        past: None,
    });
    (Assessment::FailingOver { from: failed, to: survivor, epoch }, proposal)
}

/// How long ago this node's current streak of failed probes of `site` began, if it is failing.
pub fn detected_after(failing_since: &BTreeMap<SiteId, Duration>, site: &str, now: Duration) -> Option<u64> {
    failing_since.get(site).map(|since| now.saturating_sub(*since).as_millis() as u64)
}

/// The one RPO objective, the group's `rpo`: how much data a failover may lose, for the gate,
/// the watch and what status shows beside the exposure. Only for groups with agents (the only
/// groups whose copy is reported). A synchronous copy reported in sync within
/// `in_sync_within` of the failure loses none (`Ledger::data_at_risk`).
pub fn rpo_objective(group: &GroupState) -> Option<Duration> {
    group.spec.leases.map(|_| Duration::from_millis(group.spec.rpo_ms))
}

/// An assessment when the standby's copy crosses its RPO objective, either way, from its
/// agent's `standby` site record and its record of the group (`Ledger::rpo_exposure`, with the
/// records found). Not while draining (the standby is changing) nor before its agent has
/// reported.
fn watch_rpo(
    group: &GroupState,
    timing: &GroupTiming,
    memory: &mut Memory,
    standby: Option<(&SiteRecord, &GroupRecord)>,
    now: Duration,
) -> Option<Assessment> {
    let objective = rpo_objective(group)?;
    if group.draining {
        return None;
    }
    let (site, record) = standby?;
    let exposure = Ledger::at_risk(site, record, group, timing.in_sync_within, now, now)?;
    let at_risk = exposure > objective;
    if memory.rpo_at_risk == Some(at_risk) || (memory.rpo_at_risk.is_none() && !at_risk) {
        memory.rpo_at_risk = Some(at_risk);
        return None;
    }
    memory.rpo_at_risk = Some(at_risk);
    let (standby, exposure_ms, objective_ms) =
        (group.other().clone(), exposure.as_millis() as u64, objective.as_millis() as u64);
    Some(if at_risk {
        Assessment::RpoAtRisk { standby, exposure_ms, objective_ms }
    } else {
        Assessment::RpoWithin { standby, exposure_ms, objective_ms }
    })
}

/// A draining group: promote its new active site once the old one's witness leases have
/// certainly expired and (with agents) the new one's agent reports drained at this epoch.
fn drain(name: &str, group: &GroupState, memory: &mut Memory, inputs: &Inputs) -> (Assessment, Option<Command>) {
    let (from, to, epoch) = (group.other().clone(), group.active.clone(), group.epoch);
    if inputs.now < inputs.ledger.leases_expire_at(name, group) {
        return (Assessment::Draining { from, to, epoch, waiting_for: DrainWait::WitnessLeases }, None);
    }
    let drained = inputs
        .ledger
        .site(&to)
        .and_then(|r| r.groups.get(name))
        .is_some_and(|g| g.report.drained && g.report.epoch == Some(epoch));
    if group.spec.leases.is_some() && !drained {
        return (Assessment::Draining { from, to, epoch, waiting_for: DrainWait::AgentDrained }, None);
    }
    let proposal = due(&mut memory.promote_proposed_at, inputs.now)
        .then(|| Command::Promote { group: name.into(), expected_epoch: epoch });
    (Assessment::Promoting { site: to, epoch }, proposal)
}

#[cfg(test)]
mod tests;

/// One rule an operator's failover is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateCheck {
    pub gate: String,
    pub passed: bool,
    pub detail: String,
}

/// What an operator's failover of a group to a site would do, and which rules it meets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperatorPlan {
    pub group: GroupId,
    pub from: SiteId,
    pub to: SiteId,
    pub expected_epoch: Epoch,
    pub checks: Vec<GateCheck>,
    /// The epoch an agent holds past this witness's (see [`Assessment::AgentsAhead`]): the
    /// failover, forced, takes the group's epoch past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub past: Option<Epoch>,
}

impl OperatorPlan {
    pub fn all_pass(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The check an operator's failover and a drill share: no recent failover left unacknowledged.
fn not_blocked(g: &GroupState) -> GateCheck {
    GateCheck {
        gate: "not_blocked".into(),
        passed: !g.blocked,
        detail: if g.blocked {
            "blocked by a recent failover: acknowledge it first".into()
        } else {
            "no unacknowledged recent failover".into()
        },
    }
}

/// Checks an operator's order to make `to` active for `group` against the same evidence the
/// engine uses: a quorum of live voters sees the active site down and `to` up, and the group
/// is not blocked by a recent failover; and that no agent holds a later epoch than the group's
/// (`agents_ahead`, from the leader's ledger), which only a forced order gets past, re-asserting
/// even the active site at an epoch past the agents'. (Pause and the automation switch stop
/// only automatic decisions: the operator is the approval.) `Err` names why the order makes no
/// sense at all.
pub fn plan_operator_failover(
    state: &State,
    group: &str,
    to: &str,
    voters: &BTreeSet<NodeId>,
    live: &BTreeSet<NodeId>,
    agents_ahead: Option<(SiteId, Epoch)>,
) -> Result<OperatorPlan, crate::state::Rejection> {
    use crate::state::Rejection;
    let g = state.groups.get(group).ok_or_else(|| Rejection::UnknownGroup { group: group.into() })?;
    if to != g.spec.primary && to != g.spec.secondary {
        return Err(Rejection::SiteNotInGroup { group: group.into(), site: to.into() });
    }
    if to == g.active && agents_ahead.is_none() {
        return Err(Rejection::AlreadyActive { group: group.into(), site: to.into(), epoch: g.epoch });
    }
    let crate::state::Evidence { down, up, quorum } = state.evidence(&g.active, to, voters, live);
    let n = voters.len();
    let checks = vec![
        GateCheck {
            gate: "active_site_down".into(),
            passed: down >= quorum,
            detail: format!("{} seen down by {down} of {n} witness nodes (quorum {quorum})", g.active),
        },
        GateCheck {
            gate: "target_site_up".into(),
            passed: up >= quorum,
            detail: format!("{to} seen up by {up} of {n} witness nodes (quorum {quorum})"),
        },
        not_blocked(g),
        GateCheck {
            gate: "agents_not_ahead".into(),
            passed: agents_ahead.is_none(),
            detail: match &agents_ahead {
                None => "no agent holds a later epoch than this witness".into(),
                Some((site, agents)) => format!(
                    "{site}'s agent holds epoch {agents}, past this witness's {} (restored from an older backup?): \
                     force the failover to the site that is really active to take the epoch past {agents}",
                    g.epoch
                ),
            },
        },
    ];
    let past = agents_ahead.map(|(_, epoch)| epoch);
    Ok(OperatorPlan {
        group: group.into(),
        from: g.active.clone(),
        to: to.into(),
        expected_epoch: g.epoch,
        checks,
        past,
    })
}
