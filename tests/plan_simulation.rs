//! Deterministic, seeded simulation of failover plans under leader changes: three witness
//! nodes, a replicated log, the leader's plan runner and the executors of the plan's steps, in
//! simulated time. The shipped code decides: `State::apply_logged` applies every entry on every
//! node, and each node that believes it leads hands the `Leader` of its term a tick, whose
//! effects (start an attempt, abort one, propose) are carried out as `node::leading` does;
//! `StepContext` makes the idempotency key. What is modelled is Raft, the processes, the
//! attempts' tasks (`node::planning::run_attempt`) and the external systems the steps act on.
//!
//! Raft is modelled by its contract. The log is one ordered sequence: the committed entries,
//! then the leader's uncommitted tail. A follower holds a prefix of it (replication may stop
//! part way); an entry commits once a follower holds it too (a majority of three) and an entry
//! of the leader's own term is committed with it. A new leader is elected once a follower's
//! election timeout has run out and a voter's leader lease (no vote within
//! `election_timeout_max` of hearing from a leader) has too; voters only vote for a log at least
//! as long as their own. The winner's log decides what becomes of a deposed leader's
//! uncommitted tail: what it holds commits later (with the new leader's blank entry), the rest
//! is lost. A leader that crashes loses its attempts under way with it; one cut off from the
//! others abandons them once a quorum has not acknowledged it for two thirds of the shortest
//! election timeout (the `Leader` says so), and learns it was deposed when it hears from
//! anyone again.
//!
//! An attempt commits `StepStarted`, then acts (the external system records the effect at a
//! random moment within the attempt's random duration, or not at all for some failures), then
//! commits `StepFinished`. A leader crash in between gives both "the action happened but its
//! result was never committed" and "the action never happened". An attempt that dies with its
//! leader (crashed, or cut off and abandoning it) while its request is on the wire still acts,
//! up to 500 ms later, with nobody left to record it (asserted to happen in some runs).
//!
//! Systematic part: seed `s` crashes the leader at point `s % (steps * 3)` of its plan: step
//! `point / 3`, the first time that step reaches moment `point % 3`, which is `StepStarted`
//! just committed (the leader dies before acting, or while acting before the effect lands),
//! the action over (its result not proposed, or proposed and not yet committed), or
//! `StepFinished` just committed. The default seeds cover every moment of every step of plans
//! of 2, 3 and 4 steps (checked). Random crashes and cut-off nodes come on top (the leader for
//! less than a lease; long enough to be replaced in the last test); a stuck plan is answered by
//! the test as an operator would (retry, or skip).
//!
//! Invariants: (1) the plan completes, and is stuck only on a step whose failure was permanent
//! or out of retries; (2) every effect carries `GROUP:EPOCH:STEP` of its own attempt, happens
//! only after its attempt's `StepStarted` committed, and never after that step's committed
//! `done`, and a `done` step had an effect; (3) a step's effects come only after every earlier
//! step of its plan has committed a final status; (4) no effect of an epoch after one of a
//! newer epoch; (5) every node's state is the replay of the committed log, and no committed
//! entry is lost; (6) epochs never go back.
//!
//! `WITNESS_SIM_SEEDS=N` runs seeds 0..N (default 500), `WITNESS_SIM_SEED=S` replays one, and
//! `WITNESS_SIM_TRACE=1` prints what happens (with `--nocapture`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use support::sim::{run, seeds};
use witness::actions::StepContext;
use witness::engine::plan::Attempt;
use witness::engine::GroupTiming;
use witness::leader::{Contact, Effect as Do, Leader, LeaderConfig, Tick};
use witness::rng::SplitMix64;
use witness::state::plan::{Phase, Plan, StepOutcome, StepSpec, StepStatus};
use witness::state::{Command, DecisionFacts, Epoch, Logged, NodeId, Response, State};

const NODES: [u64; 3] = [1, 2, 3];
const GROUP: &str = "app";
const TICK_MS: u64 = 10;
/// witness's default Raft timing: a follower campaigns after a random timeout in this range,
/// and grants no vote within the leader lease (openraft's is `election_timeout_max`) of
/// hearing from a leader. The runner plans only while a quorum acknowledged it within the
/// lease (`Node::readiness`).
const ELECTION_MIN_MS: u64 = 1500;
const ELECTION_MAX_MS: u64 = 3000;
const LEASE_MS: u64 = ELECTION_MAX_MS;
/// An action already sent when its attempt died lands within this long. A successor cannot act
/// sooner: the others elect one only a leader lease (`ELECTION_MAX_MS`) after the last word from
/// the old leader, which abandons its attempts two thirds of `ELECTION_MIN_MS` after it, or dies.
const ON_THE_WIRE_MS: u64 = 500;
/// A plan not done by then fails invariant 1.
const GIVE_UP_MS: u64 = 600_000;
/// The operator answers a stuck plan after this long, and repeats an order not yet committed.
const OPERATOR_MS: u64 = 500;
const KINDS: [&str; 5] = ["rfc2136", "route53", "webhook", "command", "openstorage"];

/// The moment of a step at which the systematic crash hits the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moment {
    /// `StepStarted` committed; the action has not begun.
    Started,
    /// The action is over; its result is not committed.
    Acted,
    /// `StepFinished` committed.
    Finished,
}

const MOMENTS: [Moment; 3] = [Moment::Started, Moment::Acted, Moment::Finished];

/// How the sprung systematic crash hits the leader.
#[derive(Debug, Clone, PartialEq)]
enum Armed {
    /// At once.
    Now,
    /// After the next replication, before the commit: what a follower got of the tail stays.
    BeforeCommit,
    /// Right after the next commit, before the leader applies it.
    AfterCommit,
    /// While this attempt acts, before its effect lands.
    MidAction(Attempt),
    At {
        node: u64,
        at: u64,
    },
}

/// The systematic crash: the first time `step` (of any epoch) reaches `moment`.
struct Trap {
    step: String,
    moment: Moment,
    fired: bool,
}

/// What a seed's world does besides the plan.
#[derive(Clone, Copy)]
struct Options {
    /// About one random fault per this many ticks, until `faults_until_ms` (0: none).
    fault_every: u64,
    faults_until_ms: u64,
    /// A random fault cuts the leader off for less than a lease, so it stays leader.
    leader_cut_max_ms: u64,
    /// How long one attempt takes (ms).
    duration: fn(&mut SplitMix64) -> u64,
}

/// Mostly quick attempts, some slow ones (a DNS change waiting to be in sync, a slow webhook).
fn usual_duration(rng: &mut SplitMix64) -> u64 {
    if rng.below(100) < 15 {
        1000 + rng.below(5000)
    } else {
        20 + rng.below(400)
    }
}

fn slow_duration(rng: &mut SplitMix64) -> u64 {
    1000 + rng.below(7000)
}

const WITH_FAULTS: Options =
    Options { fault_every: 100, faults_until_ms: 30_000, leader_cut_max_ms: 2000, duration: usual_duration };

/// One entry of the log.
#[derive(Clone)]
struct Entry {
    term: u64,
    /// `None`: the blank entry a new leader commits first, as openraft does.
    logged: Option<Logged>,
    /// The attempt of the leadership that proposed it, which waits for it to apply there.
    waiter: Option<Waiter>,
}

#[derive(Clone)]
struct Waiter {
    node: u64,
    term: u64,
    attempt: Attempt,
}

struct Node {
    up: bool,
    down_until: u64,
    /// Cut off from the other nodes until then.
    cut_until: u64,
    /// How much of the log (committed entries, then the leader's tail) this node holds.
    holds: usize,
    /// The commit index it has learned, and how many committed entries it has applied.
    commit_known: usize,
    applied: usize,
    state: State,
    last_epoch: Epoch,
    /// When it last heard from a leader (it grants no vote within a lease of that), and when
    /// its election timer last started.
    heard_ms: u64,
    timer_ms: u64,
    timeout_ms: u64,
    /// Present while this node believes it leads: that leadership's plan runner.
    runner: Option<Runner>,
}

/// One leadership: its `Leader`, and the runtime's attempts under way (`node::leading`).
struct Runner {
    leader: Leader,
    tasks: BTreeMap<Attempt, Task>,
    /// When a quorum last acknowledged this leader (the votes count, as in openraft).
    quorum_acked_ms: u64,
}

/// One attempt under way (`node::planning::run_attempt`).
struct Task {
    ctx: StepContext,
    stage: Stage,
}

impl Task {
    /// `run_attempt` has returned: its result applied, or its start refused (another
    /// leadership's, or planned from a stale view), in which case nothing was done.
    fn finished(&self) -> bool {
        match &self.stage {
            Stage::Starting(Some(response)) => !matches!(response, Response::Plan(_)),
            Stage::Finishing(answered) => *answered,
            _ => false,
        }
    }
}

enum Stage {
    /// `StepStarted` proposed; the response once applied here.
    Starting(Option<Response>),
    /// The executor runs: its effect lands at `effect_at` (if ever), its result at `ends_at`.
    Acting { effect_at: Option<u64>, ends_at: u64, outcome: StepOutcome },
    /// `StepFinished` proposed; set once applied here.
    Finishing(bool),
}

/// What the external systems recorded: one action of one attempt.
#[derive(Debug, Clone)]
struct Effect {
    epoch: Epoch,
    step: String,
    index: usize,
    key: String,
    to: String,
    attempt: u32,
    node: u64,
    at_ms: u64,
}

/// What the committed log says, as the checks need it.
struct Committed {
    /// Accepted `StepStarted`: (epoch, step, attempt).
    started: BTreeSet<(Epoch, String, u32)>,
    /// Steps (epoch, index) with a final status, and with `done`.
    finished: BTreeSet<(Epoch, usize)>,
    done: BTreeSet<(Epoch, usize)>,
    /// The site each epoch's plan makes active.
    to: BTreeMap<Epoch, String>,
    epoch: Epoch,
}

struct World {
    seed: u64,
    rng: SplitMix64,
    options: Options,
    now: u64,
    term: u64,
    leader: Option<u64>,
    committed: Vec<Entry>,
    pending: Vec<Entry>,
    /// The replay of `committed`.
    truth: State,
    facts: Committed,
    nodes: BTreeMap<u64, Node>,
    effects: Vec<Effect>,
    steps: Vec<StepSpec>,
    /// Per thousand attempts: retryable and permanent failures.
    retryable: u64,
    permanent: u64,
    trap: Option<Trap>,
    /// The systematic crash, sprung and about to hit the leader.
    armed: Option<Armed>,
    /// Failovers the operator has ordered: repeated until the epoch moves past `expected_epoch`.
    orders: Vec<(Command, u64)>,
    /// Operator answers given to stuck steps (epoch, index), to skip after two retries.
    answers: BTreeMap<(Epoch, usize), u32>,
    stuck_since: Option<u64>,
    trace: bool,
    /// Attempts a leader abandoned because it was cut off from its quorum.
    cut_off_aborts: usize,
    /// Effects of attempts whose leader crashed or was cut off, already on the wire: they land
    /// anyway (at, node, attempt, context). Counted once landed.
    on_the_wire: Vec<(u64, u64, Attempt, StepContext)>,
    late_effects: usize,
}

fn random_steps(rng: &mut SplitMix64) -> Vec<StepSpec> {
    let n = 2 + rng.below(3) as usize;
    (0..n)
        .map(|i| {
            let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
            StepSpec {
                name: format!("{kind}-{i}"),
                kind: kind.into(),
                retries: rng.below(4) as u32,
                continue_on_failure: rng.below(3) == 0,
                ttl: None,
            }
        })
        .collect()
}

/// An operator's failover order (`witness failover --force`): no evidence check, no gates.
fn failover(to: &str, expected: u64) -> Command {
    Command::Failover {
        group: GROUP.into(),
        to: to.into(),
        expected_epoch: Epoch(expected),
        reason: "operator".into(),
        quorum_of: None,
        automatic: false,
        facts: DecisionFacts::default(),
        past: None,
    }
}

/// The status a result must give a step, from the step's definition alone.
fn expected_status(spec: &StepSpec, attempt: u32, outcome: &StepOutcome) -> StepStatus {
    match outcome {
        StepOutcome::Done { .. } => StepStatus::Done,
        StepOutcome::Failed { retryable: true, .. } if attempt <= spec.retries => StepStatus::Retrying,
        StepOutcome::Failed { .. } if spec.continue_on_failure => StepStatus::Failed,
        StepOutcome::Failed { .. } => StepStatus::Stuck,
    }
}

impl World {
    fn new(seed: u64, options: Options, trap: bool) -> World {
        let mut rng = SplitMix64::new(seed);
        let steps = random_steps(&mut rng);
        let retryable = rng.below(350);
        let permanent = rng.below(100);
        // The systematic crash point, from the seed itself so that consecutive seeds cover them all.
        let point = (seed % (steps.len() as u64 * 3)) as usize;
        let trap = trap.then(|| Trap { step: steps[point / 3].name.clone(), moment: MOMENTS[point % 3], fired: false });
        // No agents: a failover does not drain, its plan runs at once.
        let topology = support::sim::topology(None, steps.clone());
        let sync = Logged { at_ms: 0, command: Command::SyncTopology(topology), by: None };
        let mut truth = State::default();
        truth.apply_logged(sync.clone());
        let nodes = NODES
            .iter()
            .map(|id| {
                let node = Node {
                    up: true,
                    down_until: 0,
                    cut_until: 0,
                    holds: 1,
                    commit_known: 1,
                    applied: 0,
                    state: State::default(),
                    last_epoch: Epoch(0),
                    heard_ms: 0,
                    timer_ms: 0,
                    timeout_ms: ELECTION_MIN_MS,
                    runner: None,
                };
                (*id, node)
            })
            .collect();
        let mut w = World {
            seed,
            rng,
            options,
            now: 0,
            term: 1,
            leader: Some(1),
            committed: vec![Entry { term: 1, logged: Some(sync), waiter: None }],
            pending: Vec::new(),
            truth,
            facts: Committed {
                started: BTreeSet::new(),
                finished: BTreeSet::new(),
                done: BTreeSet::new(),
                to: BTreeMap::new(),
                epoch: Epoch(1),
            },
            nodes,
            effects: Vec::new(),
            steps,
            retryable,
            permanent,
            trap,
            armed: None,
            orders: Vec::new(),
            answers: BTreeMap::new(),
            stuck_since: None,
            trace: std::env::var_os("WITNESS_SIM_TRACE").is_some(),
            cut_off_aborts: 0,
            on_the_wire: Vec::new(),
            late_effects: 0,
        };
        let runner = w.runner(1);
        w.node(1).runner = Some(runner);
        w.log(format!("steps {:?}, trap {:?}", w.steps, w.trap.as_ref().map(|t| (&t.step, t.moment))));
        w
    }

    fn log(&self, what: impl std::fmt::Display) {
        if self.trace {
            eprintln!("seed {} t={:>6} term {}: {what}", self.seed, self.now, self.term);
        }
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("a node")
    }

    fn runner(&mut self, id: u64) -> Runner {
        let seed = self.rng.next_u64() ^ id;
        let timing = GroupTiming {
            hold_down: Duration::from_secs(1),
            block_after_failover: Duration::from_secs(3600),
            in_sync_within: Duration::ZERO,
        };
        let config = LeaderConfig {
            node: NodeId(id),
            timing: [(GROUP.into(), timing)].into(),
            topology: support::sim::topology(None, self.steps.clone()),
            live_within: Duration::from_millis(ELECTION_MAX_MS),
            cut_off_after: Duration::from_millis(ELECTION_MIN_MS * 2 / 3),
            // Readiness checks change nothing at the targets: not modelled.
            readiness_interval: Default::default(),
            drill_budget: Default::default(),
            repair_drift: Default::default(),
        };
        let leader = Leader::new(std::sync::Arc::new(config), self.term, Duration::from_millis(self.now), seed);
        Runner { leader, tasks: BTreeMap::new(), quorum_acked_ms: self.now }
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        let ok = |n: &Node| n.up && n.cut_until <= self.now;
        a != b && ok(&self.nodes[&a]) && ok(&self.nodes[&b])
    }

    fn election_timeout(&mut self) -> u64 {
        ELECTION_MIN_MS + self.rng.below(ELECTION_MAX_MS - ELECTION_MIN_MS + 1)
    }

    /// One tick of simulated time.
    fn step(&mut self) {
        self.now += TICK_MS;
        if let Some(Armed::At { node, at }) = self.armed {
            if at <= self.now {
                self.armed = None;
                self.crash(node);
            }
        }
        self.random_fault();
        self.land_late_effects();
        self.restarts();
        self.learn_terms();
        self.elect();
        self.replicate();
        for id in NODES {
            self.apply(id);
        }
        for id in NODES {
            self.run_plans(id);
        }
        for id in NODES {
            check_epoch_grows(id, self.nodes.get_mut(&id).expect("a node"));
        }
    }

    fn random_fault(&mut self) {
        let o = self.options;
        if o.fault_every == 0 || self.now >= o.faults_until_ms || self.rng.below(o.fault_every) != 0 {
            return;
        }
        let victim = NODES[self.rng.below(3) as usize];
        let r = self.rng.below(100);
        if r < 40 {
            self.crash(victim);
        } else if self.leader == Some(victim) {
            // Shorter than the lease: the followers cannot elect anyone meanwhile.
            let until = self.now + 100 + self.rng.below(o.leader_cut_max_ms - 100);
            self.log(format!("leader {victim} cut off until {until}"));
            self.node(victim).cut_until = until;
        } else if r < 80 {
            let until = self.now + 100 + self.rng.below(6000);
            self.log(format!("follower {victim} cut off until {until}"));
            self.node(victim).cut_until = until;
        }
    }

    /// The process dies: its attempts under way die with it.
    fn crash(&mut self, id: u64) {
        if !self.nodes[&id].up {
            return;
        }
        let until = self.now + 300 + self.rng.below(3000);
        self.log(format!("node {id} crashes until {until}"));
        if let Some(r) = self.node(id).runner.take() {
            for (a, task) in r.tasks {
                self.maybe_on_the_wire(id, a, task);
            }
        }
        let node = self.node(id);
        node.up = false;
        node.down_until = until;
        if self.leader == Some(id) {
            self.leader = None;
        }
    }

    /// A crashed node restarts from its durable log: its state is the replay of what it had applied.
    fn restarts(&mut self) {
        for id in NODES {
            let (up, until) = (self.nodes[&id].up, self.nodes[&id].down_until);
            if up || self.now < until {
                continue;
            }
            let replayed = replay(&self.committed[..self.nodes[&id].applied]);
            check_replica(id, &self.nodes[&id].state, &replayed);
            let timeout = self.election_timeout();
            let now = self.now;
            let node = self.node(id);
            node.up = true;
            node.state = replayed;
            node.commit_known = node.applied;
            node.heard_ms = now;
            node.timer_ms = now;
            node.timeout_ms = timeout;
            self.log(format!("node {id} restarts"));
        }
    }

    /// A leader that was deposed while cut off learns the newer term as soon as it hears from
    /// anyone, and its runner abandons every attempt (`run_plans`: not the leader any more).
    fn learn_terms(&mut self) {
        for id in NODES {
            let deposed = self.nodes[&id]
                .runner
                .as_ref()
                .is_some_and(|r| r.leader.term() != self.term || self.leader != Some(id));
            if deposed && NODES.iter().any(|o| self.connected(id, *o)) {
                self.log(format!("node {id} learns it was deposed"));
                self.node(id).runner = None;
            }
        }
    }

    fn elect(&mut self) {
        let first = self.rng.below(3) as usize;
        for c in (0..3).map(|i| NODES[(first + i) % 3]) {
            let cand = &self.nodes[&c];
            if !cand.up || cand.runner.is_some() || self.now - cand.heard_ms.max(cand.timer_ms) < cand.timeout_ms {
                continue;
            }
            let holds = cand.holds;
            let voters: Vec<u64> = NODES
                .iter()
                .copied()
                .filter(|v| {
                    let n = &self.nodes[v];
                    self.connected(c, *v) && n.runner.is_none() && self.now - n.heard_ms >= LEASE_MS && n.holds <= holds
                })
                .collect();
            if voters.is_empty() {
                let timeout = self.election_timeout();
                let now = self.now;
                let cand = self.node(c);
                cand.timer_ms = now;
                cand.timeout_ms = timeout;
                continue;
            }
            self.win(c, &voters);
            return;
        }
    }

    /// `c` leads a new term. What it holds of the old leader's tail stays, to commit with its
    /// blank entry; the rest is lost.
    fn win(&mut self, c: u64, voters: &[u64]) {
        let holds = self.nodes[&c].holds;
        check_leader_complete(c, holds, self.committed.len());
        self.term += 1;
        let keep = holds - self.committed.len();
        let lost = self.pending.len() - keep;
        self.pending.truncate(keep);
        for e in &mut self.pending {
            e.waiter = None;
        }
        self.pending.push(Entry { term: self.term, logged: None, waiter: None });
        let end = self.committed.len() + keep;
        for n in self.nodes.values_mut() {
            n.holds = n.holds.min(end);
        }
        self.node(c).holds = end + 1;
        let now = self.now;
        for v in voters {
            self.node(*v).heard_ms = now;
        }
        self.leader = Some(c);
        let runner = self.runner(c);
        self.node(c).runner = Some(runner);
        self.log(format!("node {c} elected; {keep} entries of the old tail kept, {lost} lost"));
    }

    /// Appends to the leader's log; anyone else's proposal never commits (a deposed leader).
    fn propose(&mut self, id: u64, command: Command, by: Option<&str>, waiter: Option<Waiter>) -> bool {
        if self.leader != Some(id) || !self.nodes[&id].up {
            return false;
        }
        self.log(format!("node {id} proposes {command}"));
        let logged = Logged { at_ms: self.now, command, by: by.map(str::to_string) };
        self.pending.push(Entry { term: self.term, logged: Some(logged), waiter });
        self.node(id).holds += 1;
        true
    }

    /// The leader sends its log to the followers it reaches (not every tick, sometimes only a
    /// part), then commits what a follower holds up to its last entry of its own term.
    fn replicate(&mut self) {
        let Some(l) = self.leader else { return };
        let total = self.committed.len() + self.pending.len();
        for f in NODES {
            if !self.connected(l, f) || self.rng.below(2) == 0 {
                continue;
            }
            let have = self.nodes[&f].holds;
            let upto =
                if self.rng.below(4) == 0 { have + self.rng.below((total - have) as u64 + 1) as usize } else { total };
            let (now, commit) = (self.now, self.committed.len());
            let node = self.node(f);
            node.holds = upto;
            node.commit_known = commit.min(upto).max(node.commit_known);
            node.heard_ms = now;
            if let Some(r) = self.node(l).runner.as_mut() {
                r.quorum_acked_ms = now;
            }
        }
        if self.armed == Some(Armed::BeforeCommit) {
            self.armed = None;
            self.crash(l);
            return;
        }
        let held = NODES.iter().filter(|f| **f != l).map(|f| self.nodes[f].holds).max().unwrap_or(0);
        let mut upto = held.min(total);
        while upto > self.committed.len() && self.pending[upto - 1 - self.committed.len()].term != self.term {
            upto -= 1;
        }
        let newly: Vec<Entry> = self.pending.drain(..upto - self.committed.len()).collect();
        for entry in newly {
            self.commit(entry);
        }
        self.node(l).commit_known = self.committed.len();
        if self.armed == Some(Armed::AfterCommit) {
            self.armed = None;
            self.crash(l);
        }
    }

    fn commit(&mut self, entry: Entry) {
        if let Some(logged) = &entry.logged {
            let response = self.truth.apply_logged(logged.clone());
            self.log(format!("committed {} -> {}", logged.command, brief(&response)));
            for (command, response) in logged.command.commands().iter().zip(response.responses()) {
                self.note(command, response);
            }
        }
        self.committed.push(entry);
    }

    /// Keeps what the checks need from a newly committed entry, checks results against the
    /// steps' definitions, and springs the systematic crash.
    fn note(&mut self, command: &Command, response: &Response) {
        match (command, response) {
            (Command::StepStarted { epoch, step, attempt, .. }, Response::Plan(_)) => {
                self.facts.started.insert((*epoch, step.clone(), *attempt));
                // Either before the action begins, or during it, before its effect lands.
                let started = Attempt { group: GROUP.into(), epoch: *epoch, step: step.clone(), attempt: *attempt };
                self.spring(step, Moment::Started, |w| match w.rng.below(2) {
                    0 => Armed::AfterCommit,
                    _ => Armed::MidAction(started),
                });
            }
            (Command::StepFinished { step, attempt, outcome, .. }, Response::Plan(change)) => {
                let spec = self.steps.iter().find(|s| &s.name == step).expect("a step of the plan");
                check_result(spec, *attempt, outcome, change.status);
                self.spring(step, Moment::Finished, |_| Armed::AfterCommit);
            }
            _ => {}
        }
        let g = &self.truth.groups[GROUP];
        assert!(
            g.epoch >= self.facts.epoch,
            "invariant 6: the committed epoch went from {} to {}",
            self.facts.epoch,
            g.epoch
        );
        self.facts.epoch = g.epoch;
        if let Some(plan) = &g.plan {
            self.facts.to.entry(plan.epoch).or_insert_with(|| plan.to.to_string());
            for (i, s) in plan.steps.iter().enumerate() {
                if s.status.finished() {
                    self.facts.finished.insert((plan.epoch, i));
                }
                if s.status == StepStatus::Done {
                    self.facts.done.insert((plan.epoch, i));
                }
            }
        }
    }

    /// Arms the systematic crash if `step` reached its moment for the first time.
    fn spring(&mut self, step: &str, moment: Moment, how: impl FnOnce(&mut World) -> Armed) {
        let Some(trap) = self.trap.as_mut().filter(|t| !t.fired && t.step == step && t.moment == moment) else {
            return;
        };
        trap.fired = true;
        let armed = how(self);
        self.log(format!("systematic crash: {step} {moment:?}, {armed:?}"));
        self.armed = Some(armed);
    }

    /// A node applies the committed entries it knows of; the leadership that proposed one
    /// gets the response (`Node::submit` returns).
    fn apply(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("a node");
        if !node.up {
            return;
        }
        while node.applied < node.commit_known {
            let entry = &self.committed[node.applied];
            node.applied += 1;
            let Some(logged) = &entry.logged else { continue };
            let response = node.state.apply_logged(logged.clone());
            let (Some(w), Some(r)) = (&entry.waiter, node.runner.as_mut()) else { continue };
            if w.node != id || w.term != r.leader.term() {
                continue;
            }
            match r.tasks.get_mut(&w.attempt).map(|t| &mut t.stage) {
                Some(Stage::Starting(answer)) if matches!(logged.command, Command::StepStarted { .. }) => {
                    *answer = Some(response)
                }
                Some(Stage::Finishing(answered)) if matches!(logged.command, Command::StepFinished { .. }) => {
                    *answered = true
                }
                _ => {}
            }
        }
    }

    /// One look of `node::leading` on a node that believes it leads: ended attempts reported,
    /// a tick, its effects carried out in order; then the attempts under way move on.
    fn run_plans(&mut self, id: u64) {
        let Some(mut r) = self.node(id).runner.take() else { return };
        let ended: Vec<Attempt> = r.tasks.iter().filter(|(_, t)| t.finished()).map(|(a, _)| a.clone()).collect();
        for a in &ended {
            r.tasks.remove(a);
            r.leader.attempt_ended(a);
        }
        let voters = NODES.into_iter().map(NodeId).collect();
        let acked = Some(Duration::from_millis(self.now - r.quorum_acked_ms));
        let formats = NODES.into_iter().map(|n| (NodeId(n), witness::state::LOG_FORMAT)).collect();
        let contact = Contact { voters, acked_ago: BTreeMap::new(), quorum_acked_ago: acked, formats };
        let ready = support::sim::ready(id, &contact, ELECTION_MAX_MS);
        let no_probes = BTreeMap::new();
        let now = Duration::from_millis(self.now);
        let state = &self.nodes[&id].state;
        let tick = Tick { now, state, contact: &contact, ready, failing_since: &no_probes };
        let term = r.leader.term();
        for effect in r.leader.tick(&tick) {
            match effect {
                Do::Abort(a) => {
                    self.log(format!("node {id} abandons {a:?}"));
                    let task = r.tasks.remove(&a);
                    if contact.cut_off(Duration::from_millis(ELECTION_MIN_MS * 2 / 3)) {
                        self.cut_off_aborts += 1;
                        if let Some(task) = task {
                            self.maybe_on_the_wire(id, a, task);
                        }
                    }
                }
                Do::Start { attempt, context } => {
                    r.tasks.insert(attempt.clone(), Task { ctx: context, stage: Stage::Starting(None) });
                    let waiter = Waiter { node: id, term, attempt: attempt.clone() };
                    self.propose(id, attempt.started(), None, Some(waiter));
                }
                Do::Propose(command) => {
                    self.propose(id, command, None, None);
                }
                Do::Journal { .. } => {}
                Do::CheckPlan { .. } => unreachable!("no readiness interval is configured"),
            }
        }
        let attempts: Vec<Attempt> = r.tasks.keys().cloned().collect();
        for a in attempts {
            let task = r.tasks.get_mut(&a).expect("key just listed");
            self.advance(id, term, &a, task);
            if !self.nodes[&id].up {
                return; // crashed by the systematic trap: its runner is gone
            }
        }
        self.node(id).runner = Some(r);
    }

    /// `run_attempt`: act once the start is committed, then propose the result.
    fn advance(&mut self, id: u64, term: u64, a: &Attempt, task: &mut Task) {
        if let Stage::Starting(Some(Response::Plan(_))) = task.stage {
            let (duration, effect, outcome) = self.execute();
            let (now, effect_at) = (self.now, effect.map(|e| self.now + e));
            if self.armed == Some(Armed::MidAction(a.clone())) {
                // At the latest as the effect would land: the crash comes first then.
                let before = effect_at.unwrap_or(now + duration) - now;
                self.armed = Some(Armed::At { node: id, at: now + self.rng.below(before + 1) });
            }
            task.stage = Stage::Acting { effect_at, ends_at: now + duration, outcome };
        }
        let Stage::Acting { effect_at, ends_at, outcome } = &mut task.stage else { return };
        if effect_at.is_some_and(|at| at <= self.now) {
            *effect_at = None;
            self.effect(id, a, &task.ctx, false);
        }
        if *ends_at > self.now {
            return;
        }
        let finished = a.finished(outcome.clone());
        // Either the result is never proposed, or it is and the leader dies with it in flight.
        self.spring(&a.step, Moment::Acted, |w| match w.rng.below(2) {
            0 => Armed::Now,
            _ => Armed::BeforeCommit,
        });
        if self.armed == Some(Armed::Now) {
            self.armed = None;
            self.crash(id);
            return;
        }
        let waiter = Waiter { node: id, term, attempt: a.clone() };
        self.propose(id, finished, None, Some(waiter));
        task.stage = Stage::Finishing(false);
    }

    /// The executor's attempt as the external system will take it: its duration, when its
    /// effect lands (a retryable failure such as a timeout may have acted or not; a permanent
    /// one did not), and what it reports.
    fn execute(&mut self) -> (u64, Option<u64>, StepOutcome) {
        let duration = (self.options.duration)(&mut self.rng);
        let r = self.rng.below(1000);
        let at = self.rng.below(duration + 1);
        if r < self.permanent {
            (duration, None, StepOutcome::Failed { error: "refused".into(), retryable: false })
        } else if r < self.permanent + self.retryable {
            let acted = self.rng.below(2) == 0;
            (duration, acted.then_some(at), StepOutcome::Failed { error: "timed out".into(), retryable: true })
        } else {
            (duration, Some(at), StepOutcome::Done { detail: "ok".into() })
        }
    }

    /// An attempt dies with its leader (crashed, or cut off from its quorum) while acting: a
    /// request already sent (its effect due within [`ON_THE_WIRE_MS`]) still lands, with
    /// nobody left to record its result.
    fn maybe_on_the_wire(&mut self, node: u64, a: Attempt, task: Task) {
        let Stage::Acting { effect_at: Some(at), .. } = task.stage else { return };
        if at <= self.now + ON_THE_WIRE_MS {
            self.log(format!("effect of {a:?} is on the wire, lands at {at}"));
            self.on_the_wire.push((at.max(self.now), node, a, task.ctx));
        }
    }

    fn land_late_effects(&mut self) {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.on_the_wire).into_iter().partition(|(at, ..)| *at <= self.now);
        self.on_the_wire = later;
        for (_, node, a, ctx) in due {
            self.late_effects += 1;
            self.effect(node, &a, &ctx, true);
        }
    }

    /// The external system records an action, after the checks that concern it.
    fn effect(&mut self, node: u64, a: &Attempt, ctx: &StepContext, late: bool) {
        let index = self.steps.iter().position(|s| s.name == a.step).expect("a step of the plan");
        let e = Effect {
            epoch: a.epoch,
            step: a.step.clone(),
            index,
            key: ctx.idempotency_key(),
            to: ctx.to.clone(),
            attempt: a.attempt,
            node,
            at_ms: self.now,
        };
        self.log(format!("effect {e:?}"));
        check_effect(&e, &self.effects, &self.facts, late);
        self.effects.push(e);
    }

    /// The operator: repeats failover orders until committed, answers a stuck plan.
    fn operator(&mut self) {
        let Some(l) = self.leader.filter(|l| {
            let n = &self.nodes[l];
            n.up && n.runner.as_ref().is_some_and(|r| self.now - r.quorum_acked_ms <= LEASE_MS)
        }) else {
            return;
        };
        let epoch = self.truth.groups[GROUP].epoch;
        for i in 0..self.orders.len() {
            let (command, last) = self.orders[i].clone();
            let Command::Failover { expected_epoch, .. } = &command else { continue };
            if *expected_epoch == epoch && self.now >= last + OPERATOR_MS {
                self.orders[i].1 = self.now;
                self.propose(l, command, Some("token:operator"), None);
            }
        }
        let Some(plan) = self.truth.groups[GROUP].plan.as_ref().filter(|p| p.phase() == Phase::Stuck) else {
            self.stuck_since = None;
            return;
        };
        let since = *self.stuck_since.get_or_insert(self.now);
        if self.now < since + OPERATOR_MS {
            return;
        }
        let (epoch, index) = (plan.epoch, plan.current().expect("a stuck plan has a current step"));
        let answers = self.answers.entry((epoch, index)).or_default();
        let skip = *answers >= 2 || self.rng.below(2) == 0;
        *answers += 1;
        self.stuck_since = Some(self.now);
        self.propose(l, Command::ResolvePlan { group: GROUP.into(), epoch, skip }, Some("token:operator"), None);
    }

    fn order(&mut self, command: Command) {
        self.orders.push((command, 0));
    }

    fn plan(&self) -> Option<&Plan> {
        self.truth.groups[GROUP].plan.as_ref()
    }

    fn plan_done(&self, epoch: u64) -> bool {
        self.plan().is_some_and(|p| p.epoch == Epoch(epoch) && p.phase() == Phase::Done)
    }

    /// Runs, with the operator, until `done`; a plan that never gets there fails invariant 1.
    fn drive(&mut self, done: impl Fn(&World) -> bool) {
        while !done(self) {
            assert!(
                self.now < GIVE_UP_MS,
                "invariant 1: the plan never completed: {:?}",
                self.plan().map(|p| p.steps.iter().map(|s| (&s.spec.name, s.status)).collect::<Vec<_>>())
            );
            self.step();
            self.operator();
        }
    }

    /// Faults end and everything heals, until every node has applied the whole log; then the
    /// end-of-run checks.
    fn settle(&mut self) {
        self.options.fault_every = 0;
        let start = self.now;
        loop {
            for n in self.nodes.values_mut() {
                n.cut_until = 0;
                n.down_until = n.down_until.min(start);
            }
            let caught_up = self.pending.is_empty()
                && self.on_the_wire.is_empty()
                && self.nodes.values().all(|n| n.up && n.applied == self.committed.len())
                && self.nodes.values().all(|n| n.runner.as_ref().is_none_or(|r| r.tasks.is_empty()));
            if caught_up {
                break;
            }
            assert!(self.now < start + 60_000, "the cluster did not settle");
            self.step();
            self.operator();
        }
        for (id, n) in &self.nodes {
            check_replica(*id, &n.state, &self.truth);
        }
        check_done_steps_acted(&self.truth, &self.effects);
        if let Some(t) = &self.trap {
            assert!(t.fired, "the systematic crash at {} {:?} never happened", t.step, t.moment);
        }
    }
}

fn brief(r: &Response) -> String {
    match r {
        Response::Plan(c) => format!("{} {} attempt {}", c.step, c.status, c.attempt),
        Response::Rejected(why) => format!("rejected: {why}"),
        other => format!("{other:?}"),
    }
}

fn replay(entries: &[Entry]) -> State {
    let mut s = State::default();
    for logged in entries.iter().filter_map(|e| e.logged.as_ref()) {
        s.apply_logged(logged.clone());
    }
    s
}

/// Invariant 1 (what may leave a plan stuck): a result gives the status the step's definition calls for.
fn check_result(spec: &StepSpec, attempt: u32, outcome: &StepOutcome, got: StepStatus) {
    let want = expected_status(spec, attempt, outcome);
    assert_eq!(got, want, "invariant 1: {} attempt {attempt} {outcome:?} made it {got}, not {want}", spec.name);
}

/// Invariants 2, 3 and 4, at the moment an action happens.
/// A `late` effect was on the wire when its attempt died: it may land after a later attempt of
/// the same step committed done (the leader came back in touch and ran it again), which is the
/// idempotent repeat every executor is built for (same key, same target); everything else holds.
fn check_effect(e: &Effect, before: &[Effect], c: &Committed, late: bool) {
    let key = format!("{GROUP}:{}:{}", e.epoch, e.step);
    assert_eq!(e.key, key, "invariant 2: an effect of {} epoch {} carries key {}", e.step, e.epoch, e.key);
    if let Some(first) = before.iter().find(|x| x.epoch == e.epoch && x.step == e.step) {
        assert_eq!(first.key, e.key, "invariant 2: two keys for one step");
    }
    assert_eq!(Some(&e.to), c.to.get(&e.epoch), "invariant 2: {e:?} acts for another failover");
    assert!(
        c.started.contains(&(e.epoch, e.step.clone(), e.attempt)),
        "invariant 2: {e:?} acted without its StepStarted committed"
    );
    assert!(
        late || !c.done.contains(&(e.epoch, e.index)),
        "invariant 2: {e:?} ran again after its step was committed done"
    );
    for i in 0..e.index {
        assert!(
            c.finished.contains(&(e.epoch, i)),
            "invariant 3: {e:?} acted before step {i} of its plan had a committed final status"
        );
    }
    if let Some(newer) = before.iter().find(|x| x.epoch > e.epoch) {
        panic!(
            "invariant 4: {} of epoch {} acted at {} ms (node {}) after {} of epoch {} at {} ms (node {})",
            e.step, e.epoch, e.at_ms, e.node, newer.step, newer.epoch, newer.at_ms, newer.node
        );
    }
}

/// Invariant 2: at least once: every step committed done acted before.
fn check_done_steps_acted(truth: &State, effects: &[Effect]) {
    let plan = truth.groups[GROUP].plan.as_ref().expect("a plan");
    for (i, s) in plan.steps.iter().enumerate().filter(|(_, s)| s.status == StepStatus::Done) {
        assert!(
            effects.iter().any(|e| e.epoch == plan.epoch && e.index == i),
            "invariant 2: step {} is done without ever having acted",
            s.spec.name
        );
    }
}

/// Invariant 5: a node's state is the replay of the committed log it applied.
fn check_replica(id: u64, state: &State, replayed: &State) {
    assert!(state == replayed, "invariant 5: node {id}'s state differs from the replay of the committed log");
}

/// Invariant 5: Raft's election rule keeps every committed entry in the new leader's log.
fn check_leader_complete(id: u64, holds: usize, committed: usize) {
    assert!(holds >= committed, "invariant 5: node {id} elected holding {holds} of {committed} committed entries");
}

/// Invariant 6: a node's applied epoch never goes back, restarts included.
fn check_epoch_grows(id: u64, node: &mut Node) {
    let Some(g) = node.state.groups.get(GROUP) else { return };
    assert!(g.epoch >= node.last_epoch, "invariant 6: node {id}'s epoch went from {} to {}", node.last_epoch, g.epoch);
    node.last_epoch = g.epoch;
}

/// Which (plan length, step, moment) the systematic crash has hit, over the seeds run.
static COVERAGE: Mutex<BTreeSet<(usize, usize, Moment)>> = Mutex::new(BTreeSet::new());

fn covered(w: &World) {
    if let Some(t) = &w.trap {
        let index = w.steps.iter().position(|s| s.name == t.step).expect("a step");
        COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).insert((w.steps.len(), index, t.moment));
    }
}

/// With 200 seeds or more, every moment of every step of every plan length was hit.
fn check_coverage() {
    if seeds(500).count() < 200 {
        return;
    }
    let got = COVERAGE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for len in 2..=4 {
        for step in 0..len {
            for m in MOMENTS {
                assert!(got.contains(&(len, step, m)), "no seed crashed a {len}-step plan at step {step} {m:?}");
            }
        }
    }
}

/// One failover; the leader crashes at the seed's point of its plan, and at random.
#[test]
fn a_plan_completes_whatever_moment_of_whatever_step_the_leader_crashes_at() {
    static LATE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
    run("a_plan_completes_whatever_moment_of_whatever_step_the_leader_crashes_at", |seed| {
        let mut w = World::new(seed, WITH_FAULTS, true);
        w.order(failover("west", 1));
        w.drive(|w| w.plan_done(2));
        w.settle();
        covered(&w);
        LATE[0].fetch_add(1, Ordering::Relaxed);
        LATE[1].fetch_add(u64::from(w.late_effects > 0), Ordering::Relaxed);
    });
    check_coverage();
    let [runs, late] = LATE.each_ref().map(|c| c.load(Ordering::Relaxed));
    assert!(runs < 100 || late * 20 >= runs, "only {late} of {runs} runs had an effect land after its leader died");
}

/// A failover, then the operator's failback (a newer epoch) while its plan is under way: the
/// older plan's attempts stop before the newer plan acts, whichever leader runs either.
#[test]
fn a_failback_mid_plan_fences_the_older_epoch_across_leader_crashes() {
    run("a_failback_mid_plan_fences_the_older_epoch_across_leader_crashes", |seed| {
        let mut w = World::new(seed, WITH_FAULTS, true);
        let mut rng = SplitMix64::new(seed ^ 0xfa11_bac0);
        let (at_step, delay) = (rng.below(w.steps.len() as u64) as usize, rng.below(1000));
        let step = w.steps[at_step].name.clone();
        w.order(failover("west", 1));
        // The failback is ordered while the first plan runs: once step `at_step` started.
        w.drive(|w| w.facts.started.iter().any(|(e, s, _)| *e == Epoch(2) && *s == step) || w.plan_done(2));
        let until = w.now + delay;
        w.drive(|w| w.now >= until);
        w.order(failover("east", 2));
        w.drive(|w| w.plan_done(3));
        w.settle();
    });
}

/// A leader cut off from the others keeps believing it leads until it hears from one of them.
/// Its runner must abandon its attempts on its own, before a successor can be elected: this
/// test found that it once did so only on seeing another leader or term, and an attempt of the
/// older epoch then acted after the new leader had acted for the newer one (seed 31: an
/// rfc2136 update of epoch 2 landing after epoch 3's).
#[test]
fn a_leader_cut_off_mid_step_never_acts_after_its_successor() {
    static RUNS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
    run("a_leader_cut_off_mid_step_never_acts_after_its_successor", |seed| {
        let options = Options { fault_every: 0, faults_until_ms: 0, leader_cut_max_ms: 0, duration: slow_duration };
        let mut w = World::new(seed, options, false);
        w.order(failover("west", 1));
        // Once the leader has an attempt acting, cut it off for long enough to be replaced.
        w.drive(|w| {
            w.leader.is_some_and(|l| {
                let r = w.nodes[&l].runner.as_ref();
                r.is_some_and(|r| r.tasks.values().any(|t| matches!(t.stage, Stage::Acting { .. })))
            }) || w.plan_done(2)
        });
        if let Some(l) = w.leader {
            let until = w.now + 6000 + w.rng.below(10_000);
            w.node(l).cut_until = until;
            w.log(format!("leader {l} cut off until {until}"));
        }
        w.order(failover("east", 2));
        w.drive(|w| w.plan_done(3));
        w.settle();
        RUNS[0].fetch_add(1, Ordering::Relaxed);
        RUNS[1].fetch_add(u64::from(w.cut_off_aborts > 0), Ordering::Relaxed);
        RUNS[2].fetch_add(u64::from(w.late_effects > 0), Ordering::Relaxed);
    });
    let [runs, cut_off, late] = RUNS.each_ref().map(|c| c.load(Ordering::Relaxed));
    assert!(runs < 100 || cut_off * 2 >= runs, "only {cut_off} of {runs} runs cut a leader off mid-step");
    assert!(
        runs < 100 || late * 10 >= runs,
        "only {late} of {runs} runs had an effect land after its leader was cut off"
    );
}
