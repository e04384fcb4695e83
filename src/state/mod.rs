//! Replicated state: the [`Command`]s that go through the Raft log and the deterministic
//! [`State::apply`] that every node runs on them in log order.
//!
//! Nothing here does I/O or reads a clock: given the same log, every node computes the same
//! state. Collections are ordered (`BTreeMap`) so that snapshots are byte-identical across
//! nodes. A command that cannot take effect returns a [`Rejection`] value; it is still a
//! committed entry, and never an error.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod drill;
pub mod journal;
pub mod plan;
pub mod tuning;

use crate::config::{Config, FailoverMode, ReplicationMode};
pub use crate::ids::{GroupId, NodeId, SiteId};
use drill::{Drill, DrillOutcome, DrillSpec};
use journal::{Journal, Note};
use plan::{Plan, PlanChange, StepOutcome, StepSpec};

/// The log entries this version writes and reads: 1, the first; 2 adds [`Command::Batch`]. A
/// node's Raft routes advertise it (`raft::rpc`), and a leader batches only when every voter
/// advertised at least 2: an older node cannot read a batch, and a cluster in the middle of an
/// upgrade would stop committing.
pub const LOG_FORMAT: u32 = 2;
/// The first format that reads [`Command::Batch`].
pub const BATCH_FORMAT: u32 = 2;

/// Per-group fencing token. Every change of a group's active site increments it; receivers of
/// actions compare it to reject stale orders. Unrelated to the Raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A group's definition as registered from config (its behaviour-defining fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub primary: SiteId,
    pub secondary: SiteId,
    pub replication: ReplicationMode,
    pub failover: FailoverMode,
    pub rto_ms: u64,
    pub rpo_ms: u64,
    /// Set for groups whose sites run agents: they hold leases, and a failover drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<LeaseTerms>,
    /// The failover plan, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
}

/// A group's lease length and the margin added to every wait for one to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTerms {
    pub lease_ms: u64,
    pub margin_ms: u64,
}

impl LeaseTerms {
    /// How long after a grant (or a leadership start) a lease has certainly expired.
    pub fn wait_ms(&self) -> u64 {
        self.lease_ms + self.margin_ms
    }
}

/// The sites and groups a config declares, in the form the log carries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Topology {
    pub sites: BTreeSet<SiteId>,
    pub groups: BTreeMap<GroupId, GroupSpec>,
    /// The timings that decide when (`tuning`); absent from entries written before they were
    /// registered.
    #[serde(default)]
    pub tuning: tuning::Tuning,
}

impl Topology {
    pub fn from_config(config: &Config) -> Topology {
        Topology {
            sites: config.sites.iter().map(|s| SiteId::from(&s.name)).collect(),
            groups: config
                .groups
                .iter()
                .map(|g| {
                    let spec = GroupSpec {
                        primary: g.primary.as_str().into(),
                        secondary: g.secondary.as_str().into(),
                        replication: g.replication,
                        failover: g.failover,
                        rto_ms: g.rto.as_millis() as u64,
                        rpo_ms: g.rpo.as_millis() as u64,
                        leases: g.agents.map(|a| LeaseTerms {
                            lease_ms: a.lease.as_millis() as u64,
                            margin_ms: a.lease_margin.as_millis() as u64,
                        }),
                        steps: g
                            .steps
                            .iter()
                            .map(|s| StepSpec {
                                name: s.name.clone(),
                                kind: s.kind.name().to_string(),
                                retries: s.retries,
                                continue_on_failure: s.on_failure == crate::config::OnFailure::Continue,
                                ttl: match &s.kind {
                                    crate::config::StepKind::Route53(r) => Some(r.ttl),
                                    crate::config::StepKind::Rfc2136(r) => Some(r.ttl),
                                    _ => None,
                                },
                            })
                            .collect(),
                    };
                    (GroupId::from(&g.name), spec)
                })
                .collect(),
            tuning: tuning::Tuning::from_config(config),
        }
    }
}

/// Where a group removed from the config stood, to resume from if it comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub active: SiteId,
    pub epoch: Epoch,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub lease_wait_ms: u64,
}

impl Placement {
    /// A group defined by `spec` coming back from `previous`: where it stood, when its active
    /// site is still one of its sites. Otherwise it is a new definition: the primary under a
    /// new epoch, paused and blocked, so that nothing automatic happens until an operator has
    /// looked (the move itself was made by a config change, not on evidence).
    fn returning(spec: &GroupSpec, previous: Option<Placement>) -> Placement {
        match previous {
            None => Placement {
                active: spec.primary.clone(),
                epoch: Epoch(1),
                paused: false,
                blocked: false,
                draining: false,
                lease_wait_ms: 0,
            },
            Some(p) if p.active == spec.primary || p.active == spec.secondary => p,
            // Still draining: whoever held a lease must be waited out before anyone is active.
            Some(p) => {
                Placement { active: spec.primary.clone(), epoch: p.epoch.next(), paused: true, blocked: true, ..p }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub spec: GroupSpec,
    pub active: SiteId,
    pub epoch: Epoch,
    /// An operator paused automatic decisions for this group.
    #[serde(default)]
    pub paused: bool,
    /// Set by every failover, cleared by an operator's acknowledgement (or, on the leader, once
    /// `block_after_failover` has passed): no automatic failover while set, against flapping.
    #[serde(default)]
    pub blocked: bool,
    /// A failover of a group with agents is committed but not complete: `active` is the site
    /// being promoted, which may not write until the old active site's leases have certainly
    /// expired and its own agent has reported drained ([`Command::Promote`]). No site of the
    /// group gets a lease meanwhile.
    #[serde(default)]
    pub draining: bool,
    /// The longest lease wait (lease + margin) this group has ever been configured with. A
    /// new leader waits this long from its start before promoting, since a lease granted by an
    /// earlier leader under an earlier, longer lease may still run; it never shrinks.
    #[serde(default)]
    pub lease_wait_ms: u64,
    /// The plan of the latest failover (a newer failover replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// The drill under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<Drill>,
}

impl GroupState {
    /// Why a drill's switchover (`back`: the way back of the open drill) cannot start now: a
    /// move still under way, another drill, or none waiting to return. The leader checks it
    /// before proposing (`engine::drill`) and [`State::apply`] where the switchover lands.
    pub fn drill_blocked(&self, back: bool) -> Option<String> {
        if self.draining || self.plan.as_ref().is_some_and(|p| p.epoch == self.epoch && p.done_at_ms.is_none()) {
            return Some(format!("the move to epoch {} is still under way", self.epoch));
        }
        match (&self.drill, back) {
            (Some(d), false) => Some(format!("drill {} is under way", d.id)),
            (Some(d), true) if !d.holding() => Some(format!("drill {} is not waiting to return", d.id)),
            (None, true) => Some("no drill is under way to return".into()),
            _ => None,
        }
    }

    /// The site that is not `active`.
    pub fn other(&self) -> &SiteId {
        if self.active == self.spec.primary {
            &self.spec.secondary
        } else {
            &self.spec.primary
        }
    }
}

/// One witness node's opinion of one site. No entry means unknown (never reported, or
/// withdrawn because the node cannot probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Up,
    Down,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Up => "up",
            Verdict::Down => "down",
        })
    }
}

/// A majority of `voters`: how many agreeing verdicts a decision needs.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// What the voters' committed verdicts say about moving a group: how many see the site left
/// down and the site taken up, and how many make a quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    pub down: usize,
    pub up: usize,
    pub quorum: usize,
}

impl Evidence {
    /// A quorum sees the site left down and the site taken up.
    pub fn holds(&self) -> bool {
        self.down >= self.quorum && self.up >= self.quorum
    }
}

/// A reason an automatic failover may not proceed on its own. The first four are read from
/// the committed state ([`State::closed_gates`]); the last two from the leader's memory of the
/// agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    AutomationOff,
    Paused,
    Blocked,
    ManualFailover,
    /// The survivor's agent has not reported within a lease: it cannot confirm the failed site
    /// is unreachable from there, nor drain.
    SurvivorAgentSilent,
    /// The RPO gate: the survivor was not reported in sync shortly before the failure (sync),
    /// or its recovery point is older than the RPO objective (async), or never reported.
    Rpo,
}

impl Gate {
    pub const ALL: [Gate; 6] =
        [Gate::AutomationOff, Gate::Paused, Gate::Blocked, Gate::ManualFailover, Gate::SurvivorAgentSilent, Gate::Rpo];
}

/// Its serde name, for operators: the journal's messages name gates as its JSON does.
impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Gate::AutomationOff => "automation_off",
            Gate::Paused => "paused",
            Gate::Blocked => "blocked",
            Gate::ManualFailover => "manual_failover",
            Gate::SurvivorAgentSilent => "survivor_agent_silent",
            Gate::Rpo => "rpo",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Make the registered sites and groups match a config. Groups keep their active site and
    /// epoch across re-registration.
    SyncTopology(Topology),
    /// Epoch compare-and-set: make `site` active for `group` only if the group's epoch is still
    /// `expected_epoch`. On success the epoch becomes `expected_epoch + 1`. Nothing proposes it
    /// any more (its API route was retired for operator failover, `Failover` below); it stays
    /// so that logs and snapshots written before still apply.
    Activate { group: GroupId, site: SiteId, expected_epoch: Epoch },
    /// Remember that a node id left the cluster, so that it is never reused.
    RetireNode { id: NodeId },
    /// Node `node` now sees `site` as `verdict` (`None`: unknown). Sent only on change.
    ReportVerdict { node: NodeId, site: SiteId, verdict: Option<Verdict> },
    /// A failover decision: the epoch compare-and-set of `Activate`, and the group is then
    /// blocked against further automatic failovers until acknowledged.
    Failover {
        group: GroupId,
        to: SiteId,
        expected_epoch: Epoch,
        reason: String,
        /// When set, the failover takes effect only if, at its place in the log, a quorum of
        /// these voters still has the active site down and `to` up: the evidence is checked
        /// atomically with the decision, so verdicts that changed while the proposal was in
        /// flight cannot be outrun. `None` for an operator's forced order.
        quorum_of: Option<BTreeSet<NodeId>>,
        /// Decided by the engine: the automation switch, the group's pause, its block and its
        /// failover mode are checked again here, at its place in the log, so a pause committed
        /// while the proposal was in flight still stops it.
        automatic: bool,
        /// What the leader measured when it decided, for the achieved RTO and RPO.
        #[serde(default)]
        facts: DecisionFacts,
        /// An epoch an agent holds past the group's (the witness was restored from an older
        /// backup): the new epoch goes past it, and `to` may be the active site itself.
        #[serde(default)]
        past: Option<Epoch>,
    },
    /// A drill's switchover while both sites are up: with `start`, a new drill moving `group`
    /// to `to`; without, the way back of the group's open drill. It takes effect only if, at
    /// its place in the log, a quorum of `voters` sees both sites up, no failover or drill leg
    /// is under way, and the epoch is still `expected_epoch`. It drains and runs the plan like
    /// a failover, and does not block the group (nothing failed).
    Drill {
        group: GroupId,
        to: SiteId,
        expected_epoch: Epoch,
        voters: BTreeSet<NodeId>,
        facts: DecisionFacts,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<Box<DrillSpec>>,
    },
    /// The leader could not bring drill `id` of `group` back: it ends failed, and the group
    /// stays where the drill took it.
    EndDrill { group: GroupId, id: Epoch, problem: String },
    /// Ends the draining of `group` at `expected_epoch`: its active site may now write.
    Promote { group: GroupId, expected_epoch: Epoch },
    /// Pause or resume automatic decisions for one group.
    SetPaused { group: GroupId, paused: bool },
    /// Acknowledges the failover that brought `group` to `expected_epoch`: the group is no
    /// longer blocked. Stale when the group has moved since, so an old acknowledgement can never
    /// lift the block of a newer failover.
    Ack { group: GroupId, expected_epoch: Epoch },
    /// The global switch for automatic decisions.
    SetAutomation { enabled: bool },
    /// The leader begins attempt `attempt` of the plan step `step` of the failover to `epoch`.
    StepStarted { group: GroupId, epoch: Epoch, step: String, attempt: u32 },
    /// What that attempt came to.
    StepFinished { group: GroupId, epoch: Epoch, step: String, attempt: u32, outcome: StepOutcome },
    /// An operator's answer to a stuck plan: run the stuck step again, or skip it.
    ResolvePlan { group: GroupId, epoch: Epoch, skip: bool },
    /// A repair of drift: step `step` (every step, without one) of the done plan of the
    /// failover to `epoch` runs again; by an operator, or `automatic` by the leader for a group
    /// with `repair_drift`.
    ReconcilePlan {
        group: GroupId,
        epoch: Epoch,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        automatic: bool,
    },
    /// A journal entry by the decision engine: an assessment of a group changed.
    Journal { group: GroupId, kind: String, message: String, evidence: BTreeMap<SiteId, String> },
    /// A journal entry for an action outside this state (a membership change), so that who
    /// did it is on record.
    Record { kind: String, message: String },
    /// Several commands in one log entry, applied in order, each exactly as if it had an entry
    /// of its own (its own checks, its own journal event, its own response): the leader's
    /// decisions of one look at many groups commit together. Log format 2 ([`LOG_FORMAT`]).
    Batch(Vec<Command>),
}

impl Command {
    /// The group a command is about, if one.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            Command::Activate { group, .. }
            | Command::Failover { group, .. }
            | Command::Drill { group, .. }
            | Command::EndDrill { group, .. }
            | Command::Promote { group, .. }
            | Command::SetPaused { group, .. }
            | Command::Ack { group, .. }
            | Command::StepStarted { group, .. }
            | Command::StepFinished { group, .. }
            | Command::ResolvePlan { group, .. }
            | Command::ReconcilePlan { group, .. }
            | Command::Journal { group, .. } => Some(group),
            Command::SyncTopology(_)
            | Command::RetireNode { .. }
            | Command::ReportVerdict { .. }
            | Command::SetAutomation { .. }
            | Command::Record { .. }
            | Command::Batch(_) => None,
        }
    }

    /// The commands this one carries: a batch's, in order, or itself.
    pub fn commands(&self) -> &[Command] {
        match self {
            Command::Batch(commands) => commands,
            one => std::slice::from_ref(one),
        }
    }
}

/// What the leader measured when it decided a failover: recorded with the plan, for the
/// achieved RTO and RPO. Durations on the leader's own clock; nothing here decides anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionFacts {
    /// From the leader's first failed probe of the failed site to the proposal.
    #[serde(default)]
    pub detected_after_ms: Option<u64>,
    /// The data the survivor's copy may lack, as its agent last reported (0 for a synchronous
    /// group that was in sync); unknown for probe-only groups.
    #[serde(default)]
    pub rpo_ms: Option<u64>,
}

/// What a log entry carries: a command, and when the leader proposed it (wall clock, Unix
/// ms), which only dates journal events and never takes part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logged {
    pub at_ms: u64,
    pub command: Command,
    /// Who asked for it (a token's or a certificate's name), for the journal; `None` for the
    /// witness's own decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl fmt::Display for Logged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.command.fmt(f)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::SyncTopology(t) => write!(f, "sync-topology({} sites, {} groups)", t.sites.len(), t.groups.len()),
            Command::Activate { group, site, expected_epoch } => {
                write!(f, "activate({group} -> {site} if epoch {expected_epoch})")
            }
            Command::RetireNode { id } => write!(f, "retire-node({id})"),
            Command::ReportVerdict { node, site, verdict } => match verdict {
                Some(v) => write!(f, "verdict(node {node}: {site} {v})"),
                None => write!(f, "verdict(node {node}: {site} unknown)"),
            },
            Command::Failover { group, to, expected_epoch, .. } => {
                write!(f, "failover({group} -> {to} if epoch {expected_epoch})")
            }
            Command::Drill { group, to, expected_epoch, start, .. } => {
                let leg = if start.is_some() { "drill" } else { "drill-back" };
                write!(f, "{leg}({group} -> {to} if epoch {expected_epoch})")
            }
            Command::EndDrill { group, id, .. } => write!(f, "end-drill({group} drill {id})"),
            Command::Promote { group, expected_epoch } => write!(f, "promote({group} at epoch {expected_epoch})"),
            Command::SetPaused { group, paused } => write!(f, "set-paused({group}, {paused})"),
            Command::Ack { group, expected_epoch } => write!(f, "ack({group} at epoch {expected_epoch})"),
            Command::SetAutomation { enabled } => write!(f, "set-automation({enabled})"),
            Command::StepStarted { group, epoch, step, attempt } => {
                write!(f, "step-started({group} epoch {epoch}: {step} attempt {attempt})")
            }
            Command::StepFinished { group, epoch, step, attempt, outcome } => {
                let result = match outcome {
                    StepOutcome::Done { .. } => "done",
                    StepOutcome::Failed { retryable: true, .. } => "failed, retryable",
                    StepOutcome::Failed { .. } => "failed",
                };
                write!(f, "step-finished({group} epoch {epoch}: {step} attempt {attempt} {result})")
            }
            Command::ResolvePlan { group, epoch, skip } => {
                write!(f, "{}({group} epoch {epoch})", if *skip { "plan-skip" } else { "plan-retry" })
            }
            Command::ReconcilePlan { group, epoch, step, .. } => {
                write!(f, "plan-reconcile({group} epoch {epoch}: {})", step.as_deref().unwrap_or("every step"))
            }
            Command::Journal { group, kind, .. } => write!(f, "journal({group}: {kind})"),
            Command::Record { kind, .. } => write!(f, "record({kind})"),
            Command::Batch(commands) => write!(f, "batch({} commands)", commands.len()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Response {
    /// For log entries that carry no command (blank and membership entries).
    None,
    TopologySynced {
        changed: Vec<String>,
    },
    Activated {
        group: GroupId,
        active: SiteId,
        epoch: Epoch,
        /// The group drains first: `active` may write only once promoted.
        #[serde(default)]
        draining: bool,
    },
    NodeRetired {
        id: NodeId,
    },
    VerdictRecorded,
    GroupUpdated {
        group: GroupId,
        paused: bool,
        blocked: bool,
    },
    AutomationSet {
        enabled: bool,
    },
    Promoted {
        group: GroupId,
        active: SiteId,
        epoch: Epoch,
    },
    Plan(PlanChange),
    /// A drill ended: `status` is `passed`, `failed` or `interrupted`.
    DrillEnded {
        group: GroupId,
        id: Epoch,
        status: String,
    },
    Rejected(Rejection),
    /// A [`Command::Batch`]'s: each command's response, in order.
    Batch {
        #[schema(no_recursion)]
        responses: Vec<Response>,
    },
}

impl Response {
    /// The responses this one carries: a batch's, in order, or itself.
    pub fn responses(&self) -> &[Response] {
        match self {
            Response::Batch { responses } => responses,
            one => std::slice::from_ref(one),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Rejection {
    UnknownGroup {
        group: GroupId,
    },
    UnknownSite {
        site: SiteId,
    },
    SiteNotInGroup {
        group: GroupId,
        site: SiteId,
    },
    StaleEpoch {
        group: GroupId,
        expected: Epoch,
        current: Epoch,
        active: SiteId,
    },
    AlreadyActive {
        group: GroupId,
        site: SiteId,
        epoch: Epoch,
    },
    /// A promotion for a group that is not draining.
    NotDraining {
        group: GroupId,
        epoch: Epoch,
    },
    /// An automatic failover that reached the log after a gate closed.
    GateClosed {
        group: GroupId,
        gates: Vec<Gate>,
    },
    /// A plan command that does not fit the plan as it stands (another leader's, or late).
    Plan {
        group: GroupId,
        problem: String,
    },
    /// A drill's switchover, or its end, that does not fit the group as it stands.
    Drill {
        group: GroupId,
        problem: String,
    },
    /// A failover whose evidence no longer held when it reached its place in the log.
    EvidenceChanged {
        group: GroupId,
        from: SiteId,
        to: SiteId,
        down: usize,
        up: usize,
        quorum: usize,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::UnknownGroup { group } => write!(f, "unknown group {group:?}"),
            Rejection::UnknownSite { site } => write!(f, "unknown site {site:?}"),
            Rejection::GateClosed { group, gates } => {
                write!(f, "automatic failover of {group:?} stopped by a gate closed meanwhile: {gates:?}")
            }
            Rejection::EvidenceChanged { group, from, to, down, up, quorum } => write!(
                f,
                "failover of {group:?} from {from:?} to {to:?} no longer justified when committed: \
                 {from} down in {down}, {to} up in {up} (quorum {quorum})"
            ),
            Rejection::SiteNotInGroup { group, site } => write!(f, "site {site:?} is not a site of group {group:?}"),
            Rejection::StaleEpoch { group, expected, current, active } => write!(
                f,
                "stale epoch for group {group:?}: expected {expected}, current is {current} (active site {active:?})"
            ),
            Rejection::AlreadyActive { group, site, epoch } => {
                write!(f, "site {site:?} is already active for group {group:?} at epoch {epoch}")
            }
            Rejection::NotDraining { group, epoch } => write!(f, "group {group:?} is not draining at epoch {epoch}"),
            Rejection::Plan { group, problem } => write!(f, "plan of group {group:?}: {problem}"),
            Rejection::Drill { group, problem } => write!(f, "drill of group {group:?}: {problem}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub sites: BTreeSet<SiteId>,
    pub groups: BTreeMap<GroupId, GroupState>,
    /// Where groups removed from the config stood. A group that comes back resumes from here:
    /// a fencing token never goes backwards, and a group that had failed over must not drift
    /// back to its primary because a node with an older config led for a while.
    pub retired_groups: BTreeMap<GroupId, Placement>,
    pub retired_nodes: BTreeSet<NodeId>,
    /// Every node's verdict on every site: site → node → verdict.
    #[serde(default)]
    pub verdicts: BTreeMap<SiteId, BTreeMap<NodeId, Verdict>>,
    /// The global automation switch is off: no automatic decision for any group.
    #[serde(default)]
    pub automation_off: bool,
    /// The timings the leader's config registered with the topology.
    #[serde(default)]
    pub tuning: tuning::Tuning,
    #[serde(default)]
    pub journal: Journal,
    /// Each group's finished drills, oldest first, the last [`drill::KEPT`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drills: BTreeMap<GroupId, Vec<Drill>>,
}

impl State {
    pub fn apply(&mut self, command: Command) -> Response {
        self.apply_at(command, 0)
    }

    /// Applies `command`, logged at `at_ms` (the leader's wall clock: it dates plans and steps,
    /// and decides nothing). A drill whose leg this finished records it, and ends after its
    /// last.
    pub fn apply_at(&mut self, command: Command, at_ms: u64) -> Response {
        let group = command.group().cloned();
        let response = self.transition(command, at_ms);
        if let Some(name) = group {
            self.settle_drill(&name, at_ms);
        }
        response
    }

    fn transition(&mut self, command: Command, at_ms: u64) -> Response {
        match command {
            Command::SyncTopology(topology) => self.sync_topology(topology, at_ms),
            Command::Activate { group, site, expected_epoch } => self.activate(
                group,
                Move { site, expected: expected_epoch, past: None, planned: false },
                "operator activation",
                DecisionFacts::default(),
                at_ms,
            ),
            Command::RetireNode { id } => {
                self.retired_nodes.insert(id);
                for by_node in self.verdicts.values_mut() {
                    by_node.remove(&id);
                }
                Response::NodeRetired { id }
            }
            Command::ReportVerdict { node, site, verdict } => {
                if !self.sites.contains(&site) {
                    return Response::Rejected(Rejection::UnknownSite { site });
                }
                let by_node = self.verdicts.entry(site).or_default();
                match verdict {
                    Some(v) => by_node.insert(node, v),
                    None => by_node.remove(&node),
                };
                Response::VerdictRecorded
            }
            Command::Failover { group, to, expected_epoch, reason, quorum_of, automatic, facts, past } => {
                if let (true, Some(g)) = (automatic, self.groups.get(&group)) {
                    let gates = self.closed_gates(g);
                    if !gates.is_empty() {
                        return Response::Rejected(Rejection::GateClosed { group, gates });
                    }
                }
                if let (Some(voters), Some(g)) = (quorum_of, self.groups.get(&group)) {
                    let e = self.evidence(&g.active, &to, &voters, &voters);
                    if !e.holds() {
                        let from = g.active.clone();
                        let Evidence { down, up, quorum } = e;
                        return Response::Rejected(Rejection::EvidenceChanged { group, from, to, down, up, quorum });
                    }
                }
                let to = Move { site: to, expected: expected_epoch, past, planned: false };
                let response = self.activate(group, to, &reason, facts, at_ms);
                if let Response::Activated { group, .. } = &response {
                    self.groups.get_mut(group).expect("just activated").blocked = true;
                }
                response
            }
            Command::Drill { group, to, expected_epoch, voters, facts, start } => self.drill(
                group,
                Move { site: to, expected: expected_epoch, past: None, planned: true },
                &voters,
                facts,
                start,
                at_ms,
            ),
            Command::EndDrill { group, id, problem } => {
                let Some(g) = self.groups.get_mut(&group) else {
                    return Response::Rejected(Rejection::UnknownGroup { group });
                };
                match g.drill.as_ref() {
                    Some(d) if d.id == id && d.holding() => {}
                    _ => {
                        let problem = format!("no drill {id} waiting to return");
                        return Response::Rejected(Rejection::Drill { group, problem });
                    }
                }
                let mut drill = g.drill.take().expect("just matched");
                drill.end_with(DrillOutcome::Failed(vec![problem]), None, at_ms);
                keep_drill(&mut self.drills, &group, drill);
                Response::DrillEnded { group, id, status: "failed".into() }
            }
            Command::Promote { group, expected_epoch } => match self.groups.get_mut(&group) {
                None => Response::Rejected(Rejection::UnknownGroup { group }),
                Some(g) if g.epoch != expected_epoch => Response::Rejected(Rejection::StaleEpoch {
                    expected: expected_epoch,
                    current: g.epoch,
                    active: g.active.clone(),
                    group,
                }),
                Some(g) if !g.draining => Response::Rejected(Rejection::NotDraining { group, epoch: g.epoch }),
                Some(g) => {
                    g.draining = false;
                    if let Some(plan) = g.plan.as_mut().filter(|p| p.epoch == g.epoch) {
                        plan.promoted(at_ms);
                    }
                    Response::Promoted { active: g.active.clone(), epoch: g.epoch, group }
                }
            },
            Command::SetPaused { group, paused } => self.update_group(group, |g| g.paused = paused),
            Command::Ack { group, expected_epoch } => match self.groups.get(&group) {
                Some(g) if g.epoch != expected_epoch => Response::Rejected(Rejection::StaleEpoch {
                    expected: expected_epoch,
                    current: g.epoch,
                    active: g.active.clone(),
                    group,
                }),
                _ => self.update_group(group, |g| g.blocked = false),
            },
            Command::SetAutomation { enabled } => {
                self.automation_off = !enabled;
                Response::AutomationSet { enabled }
            }
            Command::Journal { .. } | Command::Record { .. } => Response::None,
            Command::StepStarted { group, epoch, step, attempt } => {
                self.change_plan(group, epoch, |plan| plan.start(&step, attempt, at_ms))
            }
            Command::StepFinished { group, epoch, step, attempt, outcome } => {
                self.change_plan(group, epoch, |plan| plan.finish(&step, attempt, outcome, at_ms))
            }
            Command::ResolvePlan { group, epoch, skip } => {
                self.change_plan(group, epoch, |plan| plan.resolve_stuck(skip, at_ms))
            }
            Command::ReconcilePlan { group, epoch, step, automatic } => {
                self.change_plan(group, epoch, |plan| plan.reconcile(step.as_deref(), automatic))
            }
            Command::Batch(commands) => {
                Response::Batch { responses: commands.into_iter().map(|c| self.apply_at(c, at_ms)).collect() }
            }
        }
    }

    /// A drill's switchover, checked where it lands in the log (see [`Command::Drill`]).
    fn drill(
        &mut self,
        name: GroupId,
        to: Move,
        voters: &BTreeSet<NodeId>,
        facts: DecisionFacts,
        start: Option<Box<DrillSpec>>,
        at_ms: u64,
    ) -> Response {
        let Some(g) = self.groups.get(&name) else {
            return Response::Rejected(Rejection::UnknownGroup { group: name });
        };
        let back = start.is_none();
        let problem = g.drill_blocked(back).or_else(|| {
            let home = g.drill.as_ref().map(|d| &d.from).filter(|from| back && to.site != **from);
            home.map(|from| format!("the way back is to {from}, not {}", to.site))
        });
        let (active_up, to_up) = (
            self.agreeing(&g.active, Verdict::Up, voters, voters),
            self.agreeing(&to.site, Verdict::Up, voters, voters),
        );
        let needed = quorum(voters.len());
        let problem = problem.or_else(|| {
            (active_up < needed || to_up < needed).then(|| {
                format!(
                    "both sites must be up: {} up in {active_up}, {} up in {to_up} (quorum {needed})",
                    g.active, to.site
                )
            })
        });
        if let Some(problem) = problem {
            return Response::Rejected(Rejection::Drill { group: name, problem });
        }
        let (from, id) = (g.active.clone(), g.epoch);
        let reason = match &start {
            Some(spec) if spec.back => format!("drill, back after a hold of {} ms: {}", spec.hold_ms, spec.reason),
            Some(spec) => format!("drill: {}", spec.reason),
            None => "drill: back".to_string(),
        };
        let response = self.activate(name.clone(), to, &reason, facts, at_ms);
        if let Response::Activated { epoch, active, .. } = &response {
            let g = self.groups.get_mut(&name).expect("just activated");
            match start {
                Some(spec) => {
                    g.drill = Some(Drill {
                        id,
                        from,
                        to: active.clone(),
                        spec: *spec,
                        objective_ms: g.spec.rto_ms,
                        epochs: vec![*epoch],
                        legs: Vec::new(),
                        outcome: None,
                        finished_at_ms: None,
                    })
                }
                None => g.drill.as_mut().expect("checked above").epochs.push(*epoch),
            }
        }
        response
    }

    /// Records the leg of `group`'s open drill whose plan is now done, and files the drill
    /// away when that was its last leg.
    fn settle_drill(&mut self, name: &GroupId, at_ms: u64) {
        let Some(g) = self.groups.get_mut(name) else { return };
        let (Some(drill), Some(plan)) = (g.drill.as_mut(), g.plan.as_ref()) else { return };
        if drill.leg_done(plan, at_ms) {
            let drill = g.drill.take().expect("just ended");
            keep_drill(&mut self.drills, name, drill);
        }
    }

    /// Changes the plan of `group` for the failover to `epoch`; a plan command for any other
    /// epoch is stale (its failover was superseded) and changes nothing.
    fn change_plan(
        &mut self,
        group: GroupId,
        epoch: Epoch,
        change: impl FnOnce(&mut Plan) -> Result<PlanChange, String>,
    ) -> Response {
        let Some(g) = self.groups.get_mut(&group) else {
            return Response::Rejected(Rejection::UnknownGroup { group });
        };
        let result = match g.plan.as_mut() {
            Some(plan) if plan.epoch == epoch => change(plan),
            Some(plan) => Err(format!("stale: the plan is for epoch {}, not {epoch}", plan.epoch)),
            None => Err(format!("no plan at epoch {epoch}")),
        };
        match result {
            Ok(change) => Response::Plan(PlanChange { group, ..change }),
            Err(problem) => Response::Rejected(Rejection::Plan { group, problem }),
        }
    }

    /// Applies a log entry and records what it did in the journal.
    pub fn apply_logged(&mut self, logged: Logged) -> Response {
        let at = logged.at_ms;
        let by = logged.by;
        let command = match logged.command {
            // Each as if logged alone, with the batch's date and author.
            Command::Batch(commands) => {
                let mut one = |command| self.apply_logged(Logged { at_ms: at, command, by: by.clone() });
                return Response::Batch { responses: commands.into_iter().map(&mut one).collect() };
            }
            command => command,
        };
        let previous_active = match &command {
            Command::Failover { group, .. } | Command::Activate { group, .. } | Command::Drill { group, .. } => {
                self.groups.get(group).map(|g| g.active.clone())
            }
            _ => None,
        };
        let entry = match &command {
            Command::Journal { group, kind, message, evidence } => Some(Note {
                group: Some(group.clone()),
                kind: kind.clone(),
                message: message.clone(),
                evidence: evidence.clone(),
            }),
            Command::ReportVerdict { node, site, verdict } => {
                let seen = verdict.map_or("unknown".into(), |v| v.to_string());
                Some(Note::new(None, "verdict", format!("node {node} sees {site} {seen}")))
            }
            Command::Record { kind, message } => Some(Note::new(None, kind, message.clone())),
            _ => None,
        };
        let reason = match &command {
            Command::Failover { reason, .. } => reason.clone(),
            _ => String::new(),
        };
        let group = command.group().cloned();
        let completed = |s: &State| {
            let plan = s.groups.get(group.as_deref()?)?.plan.as_ref()?;
            Some((plan.epoch, plan.done_at_ms.is_some()))
        };
        // Drills this entry may end: the group's, or any group's for a new topology (no other
        // command without a group touches one).
        let topology = matches!(command, Command::SyncTopology(_));
        // Looked up, not searched for: a batch applies hundreds of commands, each for one group.
        let drill = |(name, g): (&GroupId, &GroupState)| Some((name.clone(), g.drill.as_ref()?.id));
        let drills_before: Vec<(GroupId, Epoch)> = match &group {
            Some(name) => self.groups.get_key_value(name).and_then(drill).into_iter().collect(),
            None if topology => self.groups.iter().filter_map(drill).collect(),
            None => Vec::new(),
        };
        let before = completed(self);
        let response = self.apply_at(command, at);
        let entry = entry.or_else(|| describe(&response, previous_active, &reason, self));
        if let Some(note) = entry {
            self.journal.record_by(at, note, by);
        }
        // A failover is complete when its plan is done: its achieved RTO and RPO on record.
        if let (Some(name), Some((epoch, true))) = (&group, completed(self)) {
            if before != Some((epoch, true)) {
                let plan = self.groups[name].plan.as_ref().expect("just read");
                self.journal.record(at, achieved_note(name, plan));
            }
        }
        for (name, id) in drills_before {
            let ended = self.groups.get(&name).and_then(|g| g.drill.as_ref()).is_none_or(|d| d.id != id);
            if let Some(drill) = self.drills.get(&name).and_then(|kept| kept.last()).filter(|d| ended && d.id == id) {
                self.journal.record(at, drill_note(&name, drill));
            }
        }
        response
    }

    fn update_group(&mut self, name: GroupId, change: impl FnOnce(&mut GroupState)) -> Response {
        let Some(group) = self.groups.get_mut(&name) else {
            return Response::Rejected(Rejection::UnknownGroup { group: name });
        };
        change(group);
        Response::GroupUpdated { paused: group.paused, blocked: group.blocked, group: name }
    }

    /// The gates the committed state closes to an automatic failover of `group`: the
    /// automation switch, the group's pause, its block after a failover, and manual mode. The
    /// engine asks before proposing and [`State::apply`] again where the proposal lands.
    pub fn closed_gates(&self, group: &GroupState) -> Vec<Gate> {
        [
            (self.automation_off, Gate::AutomationOff),
            (group.paused, Gate::Paused),
            (group.blocked, Gate::Blocked),
            (group.spec.failover == FailoverMode::Manual, Gate::ManualFailover),
        ]
        .into_iter()
        .filter_map(|(closed, gate)| closed.then_some(gate))
        .collect()
    }

    /// What the verdicts of `counted` say about moving a group from `from` to `to`, against a
    /// quorum of `voters` (`counted` outside `voters` are not counted). The one rule for quorum
    /// evidence: the engine, an operator's order and [`State::apply`] all use it.
    pub fn evidence(&self, from: &str, to: &str, voters: &BTreeSet<NodeId>, counted: &BTreeSet<NodeId>) -> Evidence {
        Evidence {
            down: self.agreeing(from, Verdict::Down, voters, counted),
            up: self.agreeing(to, Verdict::Up, voters, counted),
            quorum: quorum(voters.len()),
        }
    }

    /// How many of `counted` that are `voters` see `site` as `verdict`.
    pub fn agreeing(
        &self,
        site: &str,
        verdict: Verdict,
        voters: &BTreeSet<NodeId>,
        counted: &BTreeSet<NodeId>,
    ) -> usize {
        counted.iter().filter(|n| voters.contains(n) && self.verdict(site, **n) == Some(verdict)).count()
    }

    /// A copy of everything but the journal: what decisions read, cheap to take.
    pub fn without_journal(&self) -> State {
        State {
            sites: self.sites.clone(),
            groups: self.groups.clone(),
            retired_groups: self.retired_groups.clone(),
            retired_nodes: self.retired_nodes.clone(),
            verdicts: self.verdicts.clone(),
            automation_off: self.automation_off,
            tuning: self.tuning.clone(),
            journal: Journal::default(),
            drills: self.drills.clone(),
        }
    }

    /// `node`'s verdict on `site`, `None` when unknown.
    pub fn verdict(&self, site: &str, node: NodeId) -> Option<Verdict> {
        self.verdicts.get(site)?.get(&node).copied()
    }

    /// True when applying `SyncTopology(topology)` would change nothing.
    pub fn matches_topology(&self, topology: &Topology) -> bool {
        self.sites == topology.sites
            && self.tuning == topology.tuning
            && self.groups.len() == topology.groups.len()
            && topology.groups.iter().all(|(name, spec)| self.groups.get(name).is_some_and(|g| &g.spec == spec))
    }

    fn sync_topology(&mut self, topology: Topology, at_ms: u64) -> Response {
        let mut changed = Vec::new();
        for site in topology.sites.difference(&self.sites) {
            changed.push(format!("site {site} added"));
        }
        for site in self.sites.difference(&topology.sites) {
            changed.push(format!("site {site} removed"));
        }
        self.sites = topology.sites;
        self.verdicts.retain(|site, _| self.sites.contains(site));
        let retuned = topology.tuning.differences(&self.tuning, ("now", "before"));
        if !retuned.is_empty() {
            changed.push(format!("timings registered: {}", retuned.join("; ")));
        }
        self.tuning = topology.tuning;

        let removed: Vec<GroupId> = self.groups.keys().filter(|g| !topology.groups.contains_key(*g)).cloned().collect();
        for name in removed {
            let mut old = self.groups.remove(&name).expect("key just listed");
            if let Some(mut drill) = old.drill.take() {
                drill.end_with(
                    DrillOutcome::Interrupted("the group was removed from the config".into()),
                    old.plan.as_ref(),
                    at_ms,
                );
                keep_drill(&mut self.drills, &name, drill);
            }
            changed.push(format!("group {name} removed at epoch {} (active {})", old.epoch, old.active));
            let placement = Placement {
                active: old.active,
                epoch: old.epoch,
                paused: old.paused,
                blocked: old.blocked,
                draining: old.draining,
                lease_wait_ms: old.lease_wait_ms,
            };
            self.retired_groups.insert(name, placement);
        }
        for (name, spec) in topology.groups {
            match self.groups.get_mut(&name) {
                Some(group) if group.spec == spec => {}
                Some(group) if group.active != spec.primary && group.active != spec.secondary => {
                    // Moving the active site is a decision for evidence or an operator, never
                    // for a config file (which may be a stale one on a node that leads now).
                    changed.push(format!(
                        "group {name} redefinition refused: it drops the active site {}; fail over first",
                        group.active
                    ));
                }
                Some(group) => {
                    group.lease_wait_ms = group.lease_wait_ms.max(spec.leases.map_or(0, |l| l.wait_ms()));
                    group.spec = spec;
                    changed.push(format!("group {name} redefined: active {} at epoch {}", group.active, group.epoch));
                }
                None => {
                    let Placement { active, epoch, paused, blocked, draining, lease_wait_ms } =
                        Placement::returning(&spec, self.retired_groups.remove(&name));
                    let lease_wait_ms = lease_wait_ms.max(spec.leases.map_or(0, |l| l.wait_ms()));
                    let flags =
                        if paused { " (paused and blocked: its active site changed with the config)" } else { "" };
                    changed.push(format!("group {name} added: active {active} at epoch {epoch}{flags}"));
                    let group = GroupState {
                        spec,
                        active,
                        epoch,
                        paused,
                        blocked,
                        draining,
                        lease_wait_ms,
                        plan: None,
                        drill: None,
                    };
                    self.groups.insert(name, group);
                }
            }
        }
        Response::TopologySynced { changed }
    }

    fn activate(&mut self, group_name: GroupId, to: Move, reason: &str, facts: DecisionFacts, at_ms: u64) -> Response {
        let Move { site, expected, past, planned } = to;
        let Some(group) = self.groups.get_mut(&group_name) else {
            return Response::Rejected(Rejection::UnknownGroup { group: group_name });
        };
        if site != group.spec.primary && site != group.spec.secondary {
            return Response::Rejected(Rejection::SiteNotInGroup { group: group_name, site });
        }
        if group.epoch != expected {
            return Response::Rejected(Rejection::StaleEpoch {
                group: group_name,
                expected,
                current: group.epoch,
                active: group.active.clone(),
            });
        }
        let past = past.filter(|past| *past > group.epoch);
        if group.active == site && past.is_none() {
            return Response::Rejected(Rejection::AlreadyActive { group: group_name, site, epoch: group.epoch });
        }
        if let Some(mut drill) = group.drill.take_if(|_| !planned) {
            // A real failover (or an operator's) takes the group: the drill gives way.
            let why = format!("a failover to {site} took the group: {reason}");
            drill.end_with(DrillOutcome::Interrupted(why), group.plan.as_ref(), at_ms);
            keep_drill(&mut self.drills, &group_name, drill);
        }
        let from = std::mem::replace(&mut group.active, site.clone());
        // Epochs only go forward: past every epoch an agent holds, if one is ahead.
        group.epoch = past.unwrap_or(group.epoch).max(group.epoch).next();
        group.draining = group.spec.leases.is_some();
        // A newer failover supersedes an unfinished plan: its steps are for the older epoch. A
        // group without steps gets an empty plan all the same: it records the achieved RTO.
        let decision = plan::Decision { epoch: group.epoch, from: &from, to: &site, reason, at_ms, facts, planned };
        group.plan = Some(Plan::new(decision, group.draining, &group.spec.steps));
        Response::Activated { group: group_name, active: site, epoch: group.epoch, draining: group.draining }
    }
}

/// Where a failover moves a group: to `site`, if the group is still at `expected`, and past
/// `past` when an agent holds that epoch; `planned` for a drill's switchover.
struct Move {
    site: SiteId,
    expected: Epoch,
    past: Option<Epoch>,
    planned: bool,
}

/// Files a finished drill away, keeping the last [`drill::KEPT`] of the group.
fn keep_drill(drills: &mut BTreeMap<GroupId, Vec<Drill>>, group: &GroupId, drill: Drill) {
    let kept = drills.entry(group.clone()).or_default();
    kept.push(drill);
    if kept.len() > drill::KEPT {
        kept.remove(0);
    }
}

/// The journal entry for a command's outcome, where it has one.
fn describe(response: &Response, previous_active: Option<SiteId>, reason: &str, state: &State) -> Option<Note> {
    Some(match response {
        Response::TopologySynced { changed } if !changed.is_empty() => Note::new(None, "topology", changed.join("; ")),
        Response::Activated { group, active, epoch, draining } => {
            let from = previous_active.unwrap_or_default();
            let plan = state.groups.get(group).and_then(|g| g.plan.as_ref());
            if let Some(plan) = plan.filter(|p| p.planned) {
                let message = format!(
                    "{group}: switchover {from} -> {active} at epoch {epoch} ({}), both sites up{}",
                    plan.reason,
                    if *draining { "; draining as for a failover" } else { "" }
                );
                return Some(Note::new(Some(group.clone()), "switchover", message));
            }
            let mut message = if reason.is_empty() {
                format!("{group}: {from} -> {active} at epoch {epoch}")
            } else {
                format!("{group}: failover {from} -> {active} at epoch {epoch}: {reason}")
            };
            if *draining {
                message.push_str(&format!(
                    "; draining: no leases for {from}, {active} promoted once they have expired and its agent has drained"
                ));
            }
            Note::new(Some(group.clone()), "failover", message)
        }
        Response::Promoted { group, active, epoch } => Note::new(
            Some(group.clone()),
            "promoted",
            format!("{group}: {active} promoted at epoch {epoch}: it may write"),
        ),
        Response::Plan(change) => plan_note(change),
        Response::GroupUpdated { group, paused, blocked } => {
            Note::new(Some(group.clone()), "group_updated", format!("{group}: paused {paused}, blocked {blocked}"))
        }
        Response::AutomationSet { enabled } => {
            Note::new(None, "automation", format!("automatic decisions {}", if *enabled { "on" } else { "off" }))
        }
        Response::NodeRetired { id } => Note::new(None, "member_retired", format!("node {id} retired")),
        Response::Rejected(rejection) => Note::new(None, "rejected", rejection.to_string()),
        // The drill's own record is journaled when it ends (`drill_note`).
        _ => return None,
    })
}

/// The journal's record of a drill that ended: its outcome and each leg's time.
fn drill_note(group: &str, drill: &Drill) -> Note {
    let report = drill.report();
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let legs: Vec<String> = report
        .legs
        .iter()
        .map(|l| format!("{} -> {} {}", l.from, l.to, l.total_ms.map_or("unfinished".into(), secs)))
        .collect();
    let what = if report.problems.is_empty() { String::new() } else { format!(": {}", report.problems.join("; ")) };
    Note::new(
        Some(group.into()),
        &format!("drill_{}", report.status),
        format!(
            "{group}: drill {} {}{what} ({}; RTO objective {}; `witness drill show {group}` for the report)",
            report.id,
            report.status,
            if legs.is_empty() { "no leg finished".into() } else { legs.join(", ") },
            secs(report.objective_ms)
        ),
    )
}

/// The record of a completed failover: what the objectives are measured against.
fn achieved_note(group: &str, plan: &Plan) -> Note {
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let rto = plan.achieved_rto_ms().unwrap_or(0);
    let clients = match plan.dns_ttl_s() {
        Some(ttl) => format!(" ({} as clients see it, with the {ttl} s DNS TTL)", secs(rto + u64::from(ttl) * 1000)),
        None => String::new(),
    };
    let rpo = plan.facts.rpo_ms.map_or("unknown (no agent reported)".to_string(), secs);
    let detection = plan.facts.detected_after_ms.map_or("not measured".to_string(), secs);
    if plan.planned {
        return Note::new(
            Some(group.into()),
            "switchover_complete",
            format!(
                "{group}: switchover {} -> {} at epoch {} complete in {}{clients}, RPO {rpo} (decision to plan done)",
                plan.from,
                plan.to,
                plan.epoch,
                secs(rto)
            ),
        );
    }
    Note::new(
        Some(group.into()),
        "failover_complete",
        format!(
            "{group}: failover {} -> {} at epoch {} complete: achieved RTO {}{clients}, RPO {rpo} \
             (detection {detection}, then decision to plan done)",
            plan.from,
            plan.to,
            plan.epoch,
            secs(rto)
        ),
    )
}

fn plan_note(c: &PlanChange) -> Note {
    use plan::StepStatus::*;
    let (g, step, n) = (&c.group, &c.step, c.attempt);
    let (kind, message) = match c.status {
        Running => ("step_started", format!("{g}: step {step} attempt {n} started (epoch {})", c.epoch)),
        Retrying => ("step_retrying", format!("{g}: step {step} attempt {n} failed, will retry: {}", c.detail)),
        Done => ("step_done", format!("{g}: step {step} done: {}", c.detail)),
        Failed => ("step_failed", format!("{g}: step {step} failed, the plan goes on: {}", c.detail)),
        Stuck => (
            "plan_stuck",
            format!(
                "{g}: plan stuck at step {step} after {n} attempt(s): {}; \
                 `witness plan retry {g}` runs it again, `witness plan skip {g}` moves past it",
                c.detail
            ),
        ),
        // A step put back by `witness plan reconcile` carries what it is for.
        Pending if !c.detail.is_empty() => ("plan_reconcile", format!("{g}: {}", c.detail)),
        Pending => ("plan_retry", format!("{g}: step {step} will run again (operator)")),
        Skipped => ("step_skipped", format!("{g}: step {step} skipped (operator)")),
    };
    if c.plan_done {
        Note::new(Some(g.clone()), "plan_done", format!("{message}; plan for epoch {} done", c.epoch))
    } else {
        Note::new(Some(g.clone()), kind, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_reads_as_its_json_name() {
        for gate in Gate::ALL {
            assert_eq!(serde_json::to_value(gate).unwrap(), gate.to_string(), "{gate:?}");
        }
    }

    fn spec(primary: &str, secondary: &str) -> GroupSpec {
        GroupSpec {
            primary: primary.into(),
            secondary: secondary.into(),
            replication: ReplicationMode::Sync,
            failover: FailoverMode::Automatic,
            rto_ms: 300_000,
            rpo_ms: 0,
            leases: None,
            steps: Vec::new(),
        }
    }

    fn topology(groups: &[(&str, GroupSpec)]) -> Topology {
        Topology {
            sites: ["east", "west", "south"].into_iter().map(SiteId::from).collect(),
            groups: groups.iter().map(|(n, s)| ((*n).into(), s.clone())).collect(),
            tuning: Default::default(),
        }
    }

    fn activate(group: &str, site: &str, epoch: u64) -> Command {
        Command::Activate { group: group.into(), site: site.into(), expected_epoch: Epoch(epoch) }
    }

    #[test]
    fn a_batch_applies_each_command_as_if_it_had_an_entry_of_its_own() {
        let failover = |group: &str, expected: u64| Command::Failover {
            group: group.into(),
            to: "west".into(),
            expected_epoch: Epoch(expected),
            reason: "east down".into(),
            quorum_of: None,
            automatic: false,
            facts: Default::default(),
            past: None,
        };
        let note = Command::Journal {
            group: "a".into(),
            kind: "failing_over".into(),
            message: "east down".into(),
            evidence: BTreeMap::new(),
        };
        let commands = vec![note, failover("a", 1), failover("b", 7), failover("nope", 1), failover("b", 1)];
        let mut batched = State::default();
        batched.apply(Command::SyncTopology(topology(&[("a", spec("east", "west")), ("b", spec("east", "west"))])));
        let mut alone = batched.clone();
        let by = Some("token:ops".to_string());
        let response =
            batched.apply_logged(Logged { at_ms: 9, command: Command::Batch(commands.clone()), by: by.clone() });
        let responses: Vec<Response> = commands
            .into_iter()
            .map(|command| alone.apply_logged(Logged { at_ms: 9, command, by: by.clone() }))
            .collect();
        assert_eq!(response, Response::Batch { responses: responses.clone() });
        assert_eq!(batched, alone, "the same state, journal included");
        // Each kept its own fencing: b's stale order refused, its current one taken.
        assert!(matches!(responses[2], Response::Rejected(Rejection::StaleEpoch { .. })), "{responses:?}");
        assert!(matches!(responses[3], Response::Rejected(Rejection::UnknownGroup { .. })), "{responses:?}");
        assert_eq!((batched.groups["a"].epoch, batched.groups["b"].epoch), (Epoch(2), Epoch(2)));
        let events = batched.journal.since(0, 100);
        let by_ops = events.iter().filter(|e| e.by.as_deref() == Some("token:ops")).count();
        assert_eq!(by_ops, 5, "one event for each command, by its author: {events:?}");
    }

    #[test]
    fn a_failover_starts_a_plan_which_waits_for_the_promotion_and_a_newer_one_replaces_it() {
        let step = plan::StepSpec {
            name: "dns".into(),
            kind: "rfc2136".into(),
            retries: 1,
            continue_on_failure: false,
            ttl: None,
        };
        let leases = Some(LeaseTerms { lease_ms: 1000, margin_ms: 100 });
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[(
            "app",
            GroupSpec { leases, steps: vec![step], ..spec("east", "west") },
        )])));
        assert_eq!(s.groups["app"].plan, None, "no failover yet");
        let failover = Command::Failover {
            group: "app".into(),
            to: "west".into(),
            expected_epoch: Epoch(1),
            reason: "east down".into(),
            quorum_of: None,
            automatic: false,
            facts: Default::default(),
            past: None,
        };
        s.apply_logged(Logged { at_ms: 5000, command: failover, by: None });
        let p = s.groups["app"].plan.clone().expect("a plan");
        assert_eq!(
            (p.epoch, p.from.as_str(), p.to.as_str(), p.reason.as_str()),
            (Epoch(2), "east", "west", "east down")
        );
        assert_eq!((p.decided_at_ms, p.phase()), (5000, plan::Phase::Waiting));
        let start =
            |epoch| Command::StepStarted { group: "app".into(), epoch: Epoch(epoch), step: "dns".into(), attempt: 1 };
        assert!(matches!(s.apply(start(2)), Response::Rejected(Rejection::Plan { .. })), "draining: not yet");
        s.apply(Command::Promote { group: "app".into(), expected_epoch: Epoch(2) });
        assert_eq!(s.groups["app"].plan.as_ref().unwrap().phase(), plan::Phase::Running);
        assert!(matches!(s.apply_logged(Logged { at_ms: 5100, command: start(2), by: None }), Response::Plan(_)));
        assert_eq!(s.journal.since(0, 100).last().unwrap().kind, "step_started");

        // A failback supersedes it: the old epoch's results are refused.
        s.apply(activate("app", "east", 2));
        assert_eq!(s.groups["app"].plan.as_ref().unwrap().epoch, Epoch(3));
        let late = Command::StepFinished {
            group: "app".into(),
            epoch: Epoch(2),
            step: "dns".into(),
            attempt: 1,
            outcome: plan::StepOutcome::Done { detail: "late".into() },
        };
        assert!(
            matches!(s.apply(late), Response::Rejected(Rejection::Plan { problem, .. }) if problem.contains("stale"))
        );
    }

    #[test]
    fn registered_group_starts_on_primary_at_epoch_1() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        assert_eq!(s.groups["app"].active, "east");
        assert_eq!(s.groups["app"].epoch, Epoch(1));
        assert!(s.matches_topology(&topology(&[("app", spec("east", "west"))])));
    }

    #[test]
    fn epoch_cas_accepts_once_then_rejects_as_value() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        assert_eq!(
            s.apply(activate("app", "west", 1)),
            Response::Activated { group: "app".into(), active: "west".into(), epoch: Epoch(2), draining: false }
        );
        assert_eq!(
            s.apply(activate("app", "east", 1)),
            Response::Rejected(Rejection::StaleEpoch {
                group: "app".into(),
                expected: Epoch(1),
                current: Epoch(2),
                active: "west".into()
            })
        );
        assert_eq!(s.groups["app"].active, "west");
    }

    #[test]
    fn cas_rejections_leave_state_untouched() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        let before = s.clone();
        for cmd in [activate("nope", "west", 1), activate("app", "south", 1), activate("app", "east", 1)] {
            assert!(matches!(s.apply(cmd), Response::Rejected(_)));
        }
        assert_eq!(s, before);
    }

    #[test]
    fn resync_keeps_active_and_epoch() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        s.apply(activate("app", "west", 1));
        let mut changed = spec("east", "west");
        changed.rto_ms = 60_000;
        s.apply(Command::SyncTopology(topology(&[("app", changed)])));
        assert_eq!((s.groups["app"].active.as_str(), s.groups["app"].epoch), ("west", Epoch(2)));
    }

    #[test]
    fn removed_then_readded_group_resumes_where_it_stood() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        s.apply(activate("app", "west", 1));
        s.apply(Command::SyncTopology(topology(&[])));
        assert!(s.groups.is_empty());
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        assert_eq!((s.groups["app"].active.as_str(), s.groups["app"].epoch), ("west", Epoch(2)));
    }

    #[test]
    fn readded_group_whose_active_site_left_it_moves_to_primary_under_a_new_epoch() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        s.apply(activate("app", "west", 1));
        s.apply(Command::SyncTopology(topology(&[])));
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "south"))])));
        let g = &s.groups["app"];
        assert_eq!((g.active.as_str(), g.epoch, g.paused, g.blocked), ("east", Epoch(3), true, true));
    }

    #[test]
    fn a_removed_group_keeps_its_pause_and_block_when_it_returns() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        s.apply(Command::SetPaused { group: "app".into(), paused: true });
        s.apply(Command::SyncTopology(topology(&[])));
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        assert!(s.groups["app"].paused);
    }

    #[test]
    fn redefinition_that_drops_the_active_site_is_refused() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        s.apply(activate("app", "west", 1));
        let response = s.apply(Command::SyncTopology(topology(&[("app", spec("east", "south"))])));
        assert!(
            matches!(&response, Response::TopologySynced { changed } if changed[0].contains("refused")),
            "{response:?}"
        );
        let g = &s.groups["app"];
        assert_eq!((g.active.as_str(), g.epoch, g.spec.secondary.as_str()), ("west", Epoch(2), "west"));
    }

    #[test]
    fn a_failover_whose_evidence_changed_in_flight_is_rejected_at_its_place_in_the_log() {
        let mut s = State::default();
        s.apply(Command::SyncTopology(topology(&[("app", spec("east", "west"))])));
        for (node, east, west) in
            [(1, Verdict::Down, Verdict::Up), (2, Verdict::Down, Verdict::Up), (3, Verdict::Up, Verdict::Up)]
        {
            s.apply(Command::ReportVerdict { node: NodeId(node), site: "east".into(), verdict: Some(east) });
            s.apply(Command::ReportVerdict { node: NodeId(node), site: "west".into(), verdict: Some(west) });
        }
        let failover = Command::Failover {
            group: "app".into(),
            to: "west".into(),
            expected_epoch: Epoch(1),
            reason: "test".into(),
            quorum_of: Some([1, 2, 3].map(NodeId).into()),
            automatic: true,
            facts: Default::default(),
            past: None,
        };
        // Node 2 saw east come back before the decision reached the log.
        let mut changed = s.clone();
        changed.apply(Command::ReportVerdict { node: NodeId(2), site: "east".into(), verdict: Some(Verdict::Up) });
        assert!(matches!(
            changed.apply(failover.clone()),
            Response::Rejected(Rejection::EvidenceChanged { down: 1, .. })
        ));
        assert_eq!(changed.groups["app"].epoch, Epoch(1));
        // A pause committed while it was in flight stops an automatic failover.
        let mut paused = s.clone();
        paused.apply(Command::SetPaused { group: "app".into(), paused: true });
        assert!(matches!(paused.apply(failover.clone()), Response::Rejected(Rejection::GateClosed { .. })));
        // Unchanged evidence: it goes through, and blocks the group.
        assert!(matches!(s.apply(failover), Response::Activated { .. }));
        assert!(s.groups["app"].blocked);
        // An acknowledgement of an older epoch cannot lift the block of this failover.
        let stale = s.apply(Command::Ack { group: "app".into(), expected_epoch: Epoch(1) });
        assert!(matches!(stale, Response::Rejected(Rejection::StaleEpoch { .. })), "{stale:?}");
        assert!(s.groups["app"].blocked);
        s.apply(Command::Ack { group: "app".into(), expected_epoch: Epoch(2) });
        assert!(!s.groups["app"].blocked);
    }
}
