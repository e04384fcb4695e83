//! Deterministic, seeded simulation of the lease protocol with the site agents as hosts. Three
//! witness nodes share a modelled Raft log (terms, quorum commits, elections, deposed leaders that
//! still believe they lead), each runs the shipped `Observer` (failure detectors, staleness,
//! report resends) against both sites, and each node that believes it leads runs the shipped
//! `Leader` made for its term (engine, lease ledger, readiness). The two sites, east (the
//! primary) and west, run the real `AgentCore` for one synchronous, automatic group "app" with
//! 1000 ms leases and a 100 ms margin: each heartbeats the node it believes leads every 250 ms
//! (every 50 ms while draining), following redirects and moving on after timeouts, and asks the
//! other for a peer lease every 250 ms. A heartbeat is answered only by the leader of the current
//! term while it reaches a quorum (the linearizable read, whose outcome the `Leader` is handed as
//! proof): a deposed or partitioned leader refuses. Every message takes 0–50 ms one way, one in
//! 50 is late (up to just under the heartbeat timeout) and one in 100 is duplicated; every
//! process keeps its own monotonic clock, started with the process and drifting by up to ±4 %
//! (two clocks 88 ms apart over a lease and its margin, inside the margin), so no rule can get
//! away with comparing two machines' timestamps. Each agent reports its replica in sync while
//! both sites are alive and their agents see each other. Everything comes from one SplitMix64
//! seed.
//!
//! Faults, injected and healed at random or scripted per scenario: site death (site and agent
//! together) and return with a fresh agent, the east↔west link cut, witness→site probe paths and
//! witness↔agent links cut for one node or all, witness nodes crashed, paused or partitioned, the
//! whole witness cluster down, agent restarts (also mid-drain), an agent frozen (it handles what
//! queued up when it resumes; its clock runs on), a leader change while the group drains, the
//! old leader partitioned together with the primary (the bridge), an operator ordering or forcing
//! failovers at any moment, and a forced failover right after a grant at the clock limits.
//!
//! Invariants, from the agents' own view (`AgentCore::writable("app", now)`) after every step:
//! 1. never are east and west writable at the same instant;
//! 2. while east and west see each other, no automatic failover is committed, even with the whole
//!    witness down, when east stays writable on its peer lease and west stays standby;
//! 3. cutting only the witness's paths to east while west still sees it fails nothing over;
//! 4. after a real death of east (west and a witness quorum healthy), west is writable within
//!    [`PROMOTION_BOUND_MS`] = 4200 ms;
//! 5. epochs never go backwards, on any witness node or agent.
//!
//! One more test, [`a_restarted_survivor_agent_alone_never_fails_over`], is a regression for
//! invariant 3 that this simulation found. How often each kind of event happened over the seeds
//! is asserted, not printed: a run of many seeds that exercised nothing fails.
//!
//! `WITNESS_SIM_SEEDS=N` runs seeds 0..N (default 500); `WITNESS_SIM_SEED=S` replays one. A
//! failure prints the seed, the replay command and the last events of the run.

mod support;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::sim::run;
use witness::agent::core::{AgentCore, Hook, Replication};
use witness::engine::detector::Observer;
use witness::engine::{Assessment, GroupTiming};
use witness::leader::{Confirmed, DrillRequest, Effect, FailoverOrder, Leader, LeaderConfig, Order, Tick};
use witness::protocol::{Heartbeat, HeartbeatAnswer, PeerGrant, PeerRequest};
use witness::rng::SplitMix64;
use witness::state::{Command, Epoch, GroupId, GroupState, LeaseTerms, Logged, NodeId, Response, State};

// The world's timing, in ms. One tick is the resolution of every event.
const TICK_MS: u64 = 10;
const MAX_DELAY_MS: u64 = 50;
/// Every process's clock runs up to this fast or slow (±4 %): two of them drift apart by up to
/// 8 %, 88 ms over a lease and its margin, within the 100 ms margin.
const MAX_DRIFT_PPM: u64 = 40_000;
/// Messages are late now and then (up to just under the heartbeat timeout, so an agent still
/// takes a late answer) and duplicated now and then: one in this many each.
const LATE_ONE_IN: u64 = 50;
const DUPLICATE_ONE_IN: u64 = 100;
const PROBE_EVERY_MS: u64 = 250;
const FAILURE_THRESHOLD: u32 = 3;
const SUCCESS_THRESHOLD: u32 = 2;
const ELECTION_TIMEOUT_MS: u64 = 1000;
/// The leader's decision loop steps this often (and the real one also on every commit).
const ENGINE_EVERY_MS: u64 = 50;
const HOLD_DOWN_MS: u64 = 1000;
const BLOCK_AFTER_FAILOVER_MS: u64 = 4000;
const IN_SYNC_WITHIN_MS: u64 = 2000;
const LEASE_MS: u64 = 1000;
const MARGIN_MS: u64 = 100;
const HEARTBEAT_MS: u64 = 250;
const HEARTBEAT_TIMEOUT_MS: u64 = 250;
const PEER_EVERY_MS: u64 = 250;
const PEER_TIMEOUT_MS: u64 = 750;

/// Invariant 4: how long after east dies west must be writable, as the design adds it up:
/// detection (three failed probes 250 ms apart), the hold-down, the lease and its margin, three
/// heartbeat rounds (west learns it drains, reports drained, learns it is active; each an
/// interval and a round trip), two engine steps, and 200 ms of slack for the tick. The lease
/// wait overlaps detection in practice (the last grant precedes the failure), so the measured
/// worst case is lower: 2680 ms over seeds 0..500.
const PROMOTION_BOUND_MS: u64 = FAILURE_THRESHOLD as u64 * PROBE_EVERY_MS
    + HOLD_DOWN_MS
    + LEASE_MS
    + MARGIN_MS
    + 3 * (HEARTBEAT_MS + 2 * MAX_DELAY_MS)
    + 2 * ENGINE_EVERY_MS
    + 200;
const _: () = assert!(PROMOTION_BOUND_MS == 4200, "keep the module doc in step");

/// The leader-change scenario deposes the leader up to this long after the failover commits.
const DEPOSE_WITHIN_MS: u64 = 1200;
/// There, west must be writable this long after east failed: the promotion bound, the wait
/// before the leader change, an election, the new leader's own lease wait from its start, and
/// the agents' timeouts while they look for the new leader.
const LEADER_CHANGE_BOUND_MS: u64 = PROMOTION_BOUND_MS
    + DEPOSE_WITHIN_MS
    + ELECTION_TIMEOUT_MS
    + LEASE_MS
    + MARGIN_MS
    + NODES.len() as u64 * HEARTBEAT_TIMEOUT_MS;

/// An automatic failover committed after the sites have seen each other this long breaches
/// invariant 2. It needs the survivor's report, heard within a lease, saying the peer is
/// unreachable, which an agent says after a peer timeout without contact, while contact is made
/// every peer round. (With a hold-down shorter than the lease, a freshly started agent breaks
/// this: see [`a_restarted_survivor_agent_alone_never_fails_over`].)
const SEE_EACH_OTHER_WINDOW_MS: u64 = LEASE_MS + PEER_TIMEOUT_MS + PEER_EVERY_MS + 4 * MAX_DELAY_MS + 300;

const NODES: [u64; 3] = [1, 2, 3];
const QUORUM: usize = 2;
const EAST: usize = 0;
const WEST: usize = 1;
const SITES: [&str; 2] = ["east", "west"];
const GROUP: &str = "app";

/// A process's monotonic clock: zero when the process starts, running `ppm` fast (or slow).
#[derive(Debug, Clone, Copy)]
struct Clock {
    boot_ms: u64,
    ppm: i64,
}

impl Clock {
    fn read(&self, now_ms: u64) -> Duration {
        let us = (now_ms - self.boot_ms) as i64 * 1000;
        Duration::from_micros((us + us * self.ppm / 1_000_000) as u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proc {
    Running,
    Paused,
    Crashed,
}

struct Node {
    proc: Proc,
    ppm: i64,
    clock: Clock,
    observer: Observer,
    probe_phase: u64,
    applied: usize,
    state: State,
    last_epoch: Epoch,
    /// This node's leadership while it believes it leads (a paused or partitioned leader keeps
    /// believing).
    leader: Option<Leader>,
    /// When each other node last acknowledged it as leader.
    acked_at: BTreeMap<u64, u64>,
}

impl Node {
    fn leads(&self) -> Option<u64> {
        self.leader.as_ref().map(Leader::term)
    }
}

/// A node's observer, as a process started at `now_ms` makes it (its clock reads zero then).
fn new_observer(id: u64) -> Observer {
    let stale_after = Duration::from_millis(PROBE_EVERY_MS * 3);
    support::sim::observer(id, &SITES, FAILURE_THRESHOLD, SUCCESS_THRESHOLD, stale_after, 0)
}

/// A heartbeat awaiting its answer.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    id: u64,
    sent_at: Duration,
    deadline_ms: u64,
}

/// The shell around an `AgentCore`, as `agent/mod.rs` drives it: heartbeat rounds that try each
/// node once, starting with the one believed to lead; peer-lease requests on their own timer.
struct Agent {
    core: AgentCore,
    clock: Clock,
    /// Replies to an earlier process of this site are lost with its connections.
    incarnation: u64,
    /// Index into `NODES` of the node believed to lead.
    guess: usize,
    tries: usize,
    attempt: Option<Attempt>,
    next_round_ms: u64,
    next_peer_ms: u64,
    /// Whether the agent reported drained last time we looked: a change wakes the heartbeats.
    drained: bool,
    epoch: Option<Epoch>,
    /// Frozen (SIGSTOP) until then: it sends and handles nothing, its clock runs on.
    paused_until: Option<u64>,
    paused_at: u64,
}

struct Site {
    alive: bool,
    ppm: i64,
    /// Present exactly while the site is alive.
    agent: Option<Agent>,
}

#[derive(Clone)]
enum Reply {
    Answer(HeartbeatAnswer),
    Redirect(u64),
    Refused,
}

#[derive(Clone)]
enum Msg {
    Heartbeat { site: usize, node: u64, incarnation: u64, attempt: u64, body: Heartbeat },
    Reply { site: usize, node: u64, incarnation: u64, attempt: u64, reply: Reply },
    PeerRequest { from: usize, incarnation: u64, sent_at: Duration, body: PeerRequest },
    PeerGrant { to: usize, incarnation: u64, sent_at: Duration, body: PeerGrant },
}

/// What happened in a run, for the scenario assertions.
#[derive(Debug, Default)]
struct History {
    failovers: usize,
    automatic_failovers: usize,
    promotions: usize,
    operator_orders: usize,
    /// Drill switchovers committed, out and back.
    drill_legs: usize,
    /// The leader assessed the group as "witness path broken" at least once.
    path_broken: bool,
    agent_pauses: usize,
    duplicates: usize,
    /// When each site's agent last took an answer from the witness.
    received: BTreeMap<usize, u64>,
    /// When a node last refused / answered a site's heartbeat, per (node, site).
    refused: BTreeMap<(u64, usize), u64>,
    answered: BTreeMap<(u64, usize), u64>,
}

struct World {
    seed: u64,
    rng: SplitMix64,
    now_ms: u64,
    // Raft's contract: an entry commits only if its leader's term is current and a quorum
    // acknowledges it; `committed` is the state the whole log makes.
    term: u64,
    leader: Option<u64>,
    leaderless_since: u64,
    log: Vec<Logged>,
    committed: State,
    nodes: BTreeMap<u64, Node>,
    sites: [Site; 2],
    // The network: what is cut drops everything, both ways, at delivery.
    probe_cut: BTreeSet<(u64, usize)>,
    agent_cut: BTreeSet<(u64, usize)>,
    /// Directed node links: (from, to).
    net_cut: BTreeSet<(u64, u64)>,
    sites_cut: bool,
    queue: BTreeMap<(u64, u64), Msg>,
    seq: u64,
    incarnations: u64,
    timing: BTreeMap<GroupId, GroupTiming>,
    voters: BTreeSet<u64>,
    /// Who may write, as of the end of the last step.
    writable: [bool; 2],
    /// The last moment the sites did not see each other (a site dead, or their link cut).
    apart_at: u64,
    history: History,
    trace: VecDeque<String>,
    /// Every heartbeat and answer of this site's agent is late.
    slow_agent: Option<usize>,
}

const TRACE_LEN: usize = 150;

fn drift(rng: &mut SplitMix64) -> i64 {
    rng.below(2 * MAX_DRIFT_PPM + 1) as i64 - MAX_DRIFT_PPM as i64
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = SplitMix64::new(seed);
        let nodes = NODES
            .iter()
            .map(|id| {
                let ppm = drift(&mut rng);
                let node = Node {
                    proc: Proc::Running,
                    ppm,
                    clock: Clock { boot_ms: 0, ppm },
                    observer: new_observer(*id),
                    probe_phase: rng.below(PROBE_EVERY_MS / TICK_MS) * TICK_MS,
                    applied: 0,
                    state: State::default(),
                    last_epoch: Epoch(0),
                    leader: None,
                    acked_at: BTreeMap::new(),
                };
                (*id, node)
            })
            .collect();
        let sites = [(); 2].map(|_| Site { alive: true, ppm: drift(&mut rng), agent: None });
        let timing = [(
            GROUP.into(),
            GroupTiming {
                hold_down: Duration::from_millis(HOLD_DOWN_MS),
                block_after_failover: Duration::from_millis(BLOCK_AFTER_FAILOVER_MS),
                in_sync_within: Duration::from_millis(IN_SYNC_WITHIN_MS),
            },
        )]
        .into();
        let mut w = World {
            seed,
            rng,
            now_ms: 0,
            term: 0,
            leader: None,
            leaderless_since: 0,
            log: Vec::new(),
            committed: State::default(),
            nodes,
            sites,
            probe_cut: BTreeSet::new(),
            agent_cut: BTreeSet::new(),
            net_cut: BTreeSet::new(),
            sites_cut: false,
            queue: BTreeMap::new(),
            seq: 0,
            incarnations: 0,
            timing,
            voters: NODES.into_iter().collect(),
            writable: [false, false],
            apart_at: 0,
            history: History::default(),
            trace: VecDeque::new(),
            slow_agent: None,
        };
        let leases = LeaseTerms { lease_ms: LEASE_MS, margin_ms: MARGIN_MS };
        let first = Command::SyncTopology(support::sim::topology(Some(leases), Vec::new()));
        w.committed.apply(first.clone());
        w.log.push(Logged { at_ms: 0, command: first, by: None });
        w.start_agent(EAST);
        w.start_agent(WEST);
        w
    }

    // ----- Reporting -----

    fn note(&mut self, what: String) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{:>6} ms  {what}", self.now_ms));
    }

    fn fail(&self, what: &str) -> ! {
        let events: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!("seed {}, at {} ms: {what}\n--- last events ---\n{}", self.seed, self.now_ms, events.join("\n"));
    }

    fn trace_hooks(&mut self, site: usize, hooks: Vec<Hook>) {
        for hook in hooks {
            self.note(format!("{} agent: {} at epoch {}", SITES[site], hook.role, hook.epoch));
        }
    }

    fn group(&self) -> &GroupState {
        &self.committed.groups[GROUP]
    }

    // ----- Raft, modelled -----

    fn running(&self, id: u64) -> bool {
        self.nodes[&id].proc == Proc::Running
    }

    /// A message from node `a` reaches node `b`.
    fn reaches(&self, a: u64, b: u64) -> bool {
        a == b || (self.running(a) && self.running(b) && !self.net_cut.contains(&(a, b)))
    }

    /// Nodes that acknowledge `leader`: the round trip works both ways.
    fn acks(&self, leader: u64) -> usize {
        NODES.iter().filter(|n| self.reaches(leader, **n) && self.reaches(**n, leader)).count()
    }

    /// True while `id` leads the current term and reaches a quorum: what a read-index
    /// confirmation would establish at this instant.
    fn confirmed_leader(&self, id: u64) -> bool {
        self.leader == Some(id)
            && self.nodes[&id].leads() == Some(self.term)
            && self.running(id)
            && self.acks(id) >= QUORUM
    }

    fn propose(&mut self, by: u64, term: u64, command: Command) -> bool {
        if self.term != term || !self.confirmed_leader(by) {
            return false;
        }
        let response = self.committed.apply(command.clone());
        for (command, response) in command.commands().iter().zip(response.responses()) {
            self.committed_one(by, term, command, response);
        }
        self.log.push(Logged { at_ms: self.now_ms, command, by: None });
        true
    }

    fn committed_one(&mut self, by: u64, term: u64, command: &Command, response: &Response) {
        match (command, response) {
            (Command::Failover { to, automatic, .. }, Response::Activated { epoch, .. }) => {
                self.history.failovers += 1;
                let how = if *automatic { "automatic" } else { "operator" };
                self.note(format!("COMMIT {how} failover to {to} at epoch {epoch} (node {by}, term {term})"));
                if *automatic {
                    self.history.automatic_failovers += 1;
                    if self.now_ms.saturating_sub(self.apart_at) > SEE_EACH_OTHER_WINDOW_MS {
                        self.fail(&format!(
                            "invariant 2: automatic failover to {to} while the sites have seen each other since {} ms",
                            self.apart_at
                        ));
                    }
                }
            }
            (Command::Drill { to, start, .. }, Response::Activated { epoch, .. }) => {
                self.history.drill_legs += 1;
                let leg = if start.is_some() { "out" } else { "back" };
                self.note(format!("COMMIT drill leg {leg} to {to} at epoch {epoch} (node {by}, term {term})"));
            }
            (Command::Promote { .. }, Response::Promoted { active, epoch, .. }) => {
                self.history.promotions += 1;
                self.note(format!("COMMIT promote {active} at epoch {epoch} (node {by}, term {term})"));
            }
            (Command::Ack { expected_epoch, .. }, Response::GroupUpdated { .. }) => {
                self.note(format!("commit ack of epoch {expected_epoch}"));
            }
            (Command::ReportVerdict { node, site, verdict }, _) => {
                let v = verdict.map_or("unknown".to_string(), |v| v.to_string());
                self.note(format!("commit verdict: node {node} sees {site} {v}"));
            }
            (_, Response::Rejected(r)) => self.note(format!("commit rejected: {r}")),
            _ => {}
        }
    }

    fn elect(&mut self) {
        let stale = match self.leader {
            // A leader that restarted has forgotten its leadership.
            Some(l) => !self.running(l) || self.acks(l) < QUORUM || self.nodes[&l].leads() != Some(self.term),
            None => true,
        };
        if !stale {
            self.leaderless_since = self.now_ms;
            return;
        }
        if let Some(old) = self.leader.take() {
            self.leaderless_since = self.now_ms;
            self.note(format!("node {old} lost its quorum (term {})", self.term));
        }
        if self.now_ms - self.leaderless_since < ELECTION_TIMEOUT_MS {
            return;
        }
        let candidates: Vec<u64> =
            NODES.iter().copied().filter(|n| self.running(*n) && self.acks(*n) >= QUORUM).collect();
        if candidates.is_empty() {
            return;
        }
        let chosen = candidates[self.rng.below(candidates.len() as u64) as usize];
        self.term += 1;
        self.leader = Some(chosen);
        let now = self.now_ms;
        let config = Arc::new(self.leader_config(chosen));
        let seed = self.rng.next_u64();
        let node = self.nodes.get_mut(&chosen).unwrap();
        node.leader = Some(Leader::new(config, self.term, node.clock.read(now), seed));
        node.acked_at.clear();
        self.note(format!("node {chosen} elected for term {}", self.term));
    }

    /// A node that believes it leads an old term learns better as soon as it hears anyone.
    fn step_down_deposed(&mut self) {
        for id in NODES {
            let Some(term) = self.nodes[&id].leads() else { continue };
            if !self.running(id) || (self.leader == Some(id) && self.term == term) {
                continue;
            }
            if NODES.iter().any(|n| *n != id && self.reaches(*n, id)) {
                let node = self.nodes.get_mut(&id).unwrap();
                node.leader = None;
                self.note(format!("node {id} learns it no longer leads term {term}"));
            }
        }
    }

    /// `id` applies the committed log, checking every entry and invariant 5.
    fn apply_committed(&mut self, id: u64) {
        let mut problem = None;
        let node = self.nodes.get_mut(&id).unwrap();
        while node.applied < self.log.len() {
            let logged = self.log[node.applied].clone();
            let before = node.state.groups.get(GROUP).cloned();
            node.state.apply_logged(logged.clone());
            node.applied += 1;
            if let (Some(b), Some(a)) = (before, node.state.groups.get(GROUP)) {
                if let Some(p) = entry_problem(&b, a, &logged.command) {
                    problem = Some(format!("node {id}: {p}"));
                    break;
                }
            }
        }
        if let Some(g) = node.state.groups.get(GROUP) {
            if g.epoch < node.last_epoch {
                problem =
                    Some(format!("invariant 5: node {id}'s epoch went back from {} to {}", node.last_epoch, g.epoch));
            }
            node.last_epoch = g.epoch;
        }
        if let Some(p) = problem {
            self.fail(&p);
        }
    }

    fn replicate(&mut self) {
        let Some(leader) = self.leader else { return };
        for id in NODES {
            if self.running(id) && self.reaches(leader, id) {
                self.apply_committed(id);
            }
        }
    }

    // ----- The witness nodes' work -----

    fn probe(&mut self) {
        let now = self.now_ms;
        for id in NODES {
            if !self.running(id) {
                continue;
            }
            let alive = [self.sites[EAST].alive, self.sites[WEST].alive];
            let node = self.nodes.get_mut(&id).unwrap();
            let local = node.clock.read(now);
            if (now + node.probe_phase).is_multiple_of(PROBE_EVERY_MS) {
                for s in [EAST, WEST] {
                    node.observer.round(SITES[s], alive[s] && !self.probe_cut.contains(&(id, s)), local);
                }
            }
            let reports = node.observer.reports(&node.state, local);
            if let Some(leader) = self.leader.filter(|l| self.reaches(id, *l)) {
                for r in reports {
                    self.propose(leader, self.term, r);
                }
            }
        }
    }

    /// What a leader is configured with, here.
    fn leader_config(&self, node: u64) -> LeaderConfig {
        let leases = LeaseTerms { lease_ms: LEASE_MS, margin_ms: MARGIN_MS };
        LeaderConfig {
            node: NodeId(node),
            timing: self.timing.clone(),
            topology: support::sim::topology(Some(leases), Vec::new()),
            live_within: Duration::from_millis(ELECTION_TIMEOUT_MS),
            cut_off_after: Duration::from_millis(ELECTION_TIMEOUT_MS * 2 / 3),
            // Readiness checks change nothing at the targets: not modelled.
            readiness_interval: Default::default(),
            drill_budget: Default::default(),
            repair_drift: Default::default(),
        }
    }

    /// Hands `id`'s leader (it must lead) what `id`'s runtime would read now: its contact with
    /// the others (acknowledgements refreshed), readiness, its failing streaks, its clock.
    fn with_leader<T>(&mut self, id: u64, f: impl FnOnce(&mut Leader, &Tick) -> T) -> T {
        let now = self.now_ms;
        let acks: Vec<u64> =
            NODES.iter().copied().filter(|n| *n != id && self.reaches(id, *n) && self.reaches(*n, id)).collect();
        let node = self.nodes.get_mut(&id).unwrap();
        node.acked_at.extend(acks.iter().map(|n| (*n, now)));
        let contact = support::sim::contact(id, &self.voters, &node.acked_at, now);
        let ready = support::sim::ready(id, &contact, ELECTION_TIMEOUT_MS);
        let failing_since = node.observer.failing_since();
        let t = Tick {
            now: node.clock.read(now),
            state: &node.state,
            contact: &contact,
            ready,
            failing_since: &failing_since,
        };
        f(node.leader.as_mut().expect("it leads"), &t)
    }

    /// Every node that believes it leads ticks its leader; only the real leader's proposals
    /// can commit.
    fn decide(&mut self) {
        for id in NODES {
            let Some(term) = self.nodes[&id].leads() else { continue };
            if !self.running(id) {
                continue;
            }
            for effect in self.with_leader(id, |leader, t| leader.tick(t)) {
                match effect {
                    Effect::Propose(command) => {
                        self.propose(id, term, command);
                    }
                    Effect::Journal { assessment, .. } => {
                        if self.leader == Some(id) {
                            self.history.path_broken |= matches!(assessment, Assessment::PathBroken { .. });
                            self.note(format!("node {id} assesses: {assessment}"));
                        }
                    }
                    other => self.fail(&format!("no plan steps here, yet {other:?}")),
                }
            }
        }
    }

    /// A heartbeat reaches node `id`: a node that believes it leads runs the read-index
    /// confirmation and hands its leader the outcome; the leader answers only if confirmed.
    fn answer(&mut self, id: u64, site: usize, body: &Heartbeat) -> Reply {
        if self.nodes[&id].leader.is_some() {
            let confirmed = self.confirmed_leader(id).then_some(Confirmed { term: self.term });
            if confirmed.is_some() {
                // The read index: the leader answers from a state that has applied every commit.
                self.apply_committed(id);
            }
            let now = self.now_ms;
            let node = self.nodes.get_mut(&id).unwrap();
            let local = node.clock.read(now);
            let leader = node.leader.as_mut().expect("checked above");
            if let Some(answer) = leader.heartbeat(local, SITES[site], body, &node.state, confirmed) {
                self.history.answered.insert((id, site), now);
                return Reply::Answer(answer);
            }
            // It believes it leads but cannot confirm it: no leader known.
            self.history.refused.insert((id, site), self.now_ms);
            return Reply::Refused;
        }
        self.history.refused.insert((id, site), self.now_ms);
        match self.leader {
            Some(l) if l != id && self.reaches(l, id) => Reply::Redirect(l),
            _ => Reply::Refused,
        }
    }

    // ----- Messages -----

    fn send(&mut self, msg: Msg) {
        let agent_side = match &msg {
            Msg::Heartbeat { site, .. } | Msg::Reply { site, .. } => Some(*site),
            _ => None,
        };
        let late = self.rng.below(LATE_ONE_IN) == 0 || (agent_side.is_some() && agent_side == self.slow_agent);
        let delay = if late {
            MAX_DELAY_MS + self.rng.below(HEARTBEAT_TIMEOUT_MS / 2 - 10 - MAX_DELAY_MS)
        } else {
            self.rng.below(MAX_DELAY_MS + 1)
        };
        if self.rng.below(DUPLICATE_ONE_IN) == 0 {
            self.history.duplicates += 1;
            let due = self.now_ms + self.rng.below(MAX_DELAY_MS + 1);
            self.enqueue(due, msg.clone());
        }
        self.enqueue(self.now_ms + delay, msg);
    }

    fn enqueue(&mut self, due: u64, msg: Msg) {
        self.seq += 1;
        self.queue.insert((due, self.seq), msg);
    }

    /// Whether site `s`'s agent is frozen now, and until when.
    fn paused(&self, s: usize) -> Option<u64> {
        self.sites[s].agent.as_ref().and_then(|a| a.paused_until)
    }

    fn deliver(&mut self) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now_ms {
                break;
            }
            let msg = entry.remove();
            // A frozen agent handles what reaches it once it runs again.
            let to_agent = match &msg {
                Msg::Reply { site, .. } => Some(*site),
                Msg::PeerRequest { from, .. } => Some(1 - *from),
                Msg::PeerGrant { to, .. } => Some(*to),
                Msg::Heartbeat { .. } => None,
            };
            if let Some(until) = to_agent.and_then(|s| self.paused(s)) {
                self.enqueue(until, msg);
                continue;
            }
            match msg {
                Msg::Heartbeat { site, node, incarnation, attempt, body } => {
                    if self.running(node) && !self.agent_cut.contains(&(node, site)) {
                        let reply = self.answer(node, site, &body);
                        self.send(Msg::Reply { site, node, incarnation, attempt, reply });
                    }
                }
                Msg::Reply { site, node, incarnation, attempt, reply } => {
                    if !self.agent_cut.contains(&(node, site)) {
                        self.on_reply(site, incarnation, attempt, reply);
                    }
                }
                Msg::PeerRequest { from, incarnation, sent_at, body } => {
                    let now = self.now_ms;
                    let Some(peer) = self.sites[1 - from].agent.as_mut().filter(|_| !self.sites_cut) else {
                        continue;
                    };
                    let grant = peer.core.grant_peer(peer.clock.read(now), &body);
                    self.send(Msg::PeerGrant { to: from, incarnation, sent_at, body: grant });
                }
                Msg::PeerGrant { to, incarnation, sent_at, body } => {
                    let now = self.now_ms;
                    let cut = self.sites_cut;
                    let Some(agent) = self.sites[to].agent.as_mut().filter(|a| a.incarnation == incarnation && !cut)
                    else {
                        continue;
                    };
                    let hooks = agent.core.on_peer_grant(sent_at, agent.clock.read(now), &body);
                    self.trace_hooks(to, hooks);
                }
            }
        }
    }

    // ----- The agents' shells -----

    fn start_agent(&mut self, s: usize) {
        self.incarnations += 1;
        let now = self.now_ms;
        let clock = Clock { boot_ms: now, ppm: self.sites[s].ppm };
        let peer_timeout = Duration::from_millis(PEER_TIMEOUT_MS);
        let core = AgentCore::new(SITES[s], [GROUP.into()], peer_timeout, clock.read(now));
        let agent = Agent {
            core,
            clock,
            incarnation: self.incarnations,
            guess: 0,
            tries: 0,
            attempt: None,
            next_round_ms: now + self.rng.below(HEARTBEAT_MS / TICK_MS) * TICK_MS,
            next_peer_ms: now + self.rng.below(PEER_EVERY_MS / TICK_MS) * TICK_MS,
            drained: false,
            epoch: None,
            paused_until: None,
            paused_at: 0,
        };
        self.sites[s].agent = Some(agent);
    }

    fn agent(&mut self, s: usize) -> &mut Agent {
        self.sites[s].agent.as_mut().expect("a live site has an agent")
    }

    fn send_attempt(&mut self, s: usize) {
        self.seq += 1;
        let (id, now) = (self.seq, self.now_ms);
        let agent = self.agent(s);
        let node = NODES[agent.guess];
        let sent_at = agent.clock.read(now);
        let body = agent.core.heartbeat(sent_at);
        agent.attempt = Some(Attempt { id, sent_at, deadline_ms: now + HEARTBEAT_TIMEOUT_MS });
        let incarnation = agent.incarnation;
        self.send(Msg::Heartbeat { site: s, node, incarnation, attempt: id, body });
    }

    /// The attempt failed: the next node, or the end of the round once each was tried.
    fn next_attempt(&mut self, s: usize) {
        let agent = self.agent(s);
        agent.tries += 1;
        if agent.tries < NODES.len() {
            self.send_attempt(s);
        } else {
            self.end_round(s);
        }
    }

    fn end_round(&mut self, s: usize) {
        let now = self.now_ms;
        let agent = self.agent(s);
        agent.attempt = None;
        let interval = if agent.core.draining() { HEARTBEAT_MS / 5 } else { HEARTBEAT_MS };
        agent.next_round_ms = now + interval;
    }

    fn on_reply(&mut self, s: usize, incarnation: u64, attempt: u64, reply: Reply) {
        let now = self.now_ms;
        let Some(agent) = self.sites[s].agent.as_mut().filter(|a| a.incarnation == incarnation) else { return };
        let Some(a) = agent.attempt.filter(|a| a.id == attempt && now <= a.deadline_ms) else { return };
        agent.attempt = None;
        match reply {
            Reply::Answer(answer) => {
                self.history.received.insert(s, now);
                let local = agent.clock.read(now);
                let hooks = agent.core.on_answer(a.sent_at, local, &answer);
                let epoch = agent.core.heartbeat(local).groups.get(GROUP).and_then(|g| g.epoch);
                let before = agent.epoch;
                agent.epoch = epoch;
                self.trace_hooks(s, hooks);
                self.end_round(s);
                if epoch < before {
                    self.fail(&format!(
                        "invariant 5: {}'s agent went back from epoch {before:?} to {epoch:?}",
                        SITES[s]
                    ));
                }
            }
            Reply::Redirect(leader) => {
                agent.guess = NODES.iter().position(|n| *n == leader).expect("a member");
                self.next_attempt(s);
            }
            Reply::Refused => {
                agent.guess = (agent.guess + 1) % NODES.len();
                self.next_attempt(s);
            }
        }
    }

    /// Frozen agents whose time is up run again: a heartbeat in flight when the freeze began
    /// may still be answered (its timer had not fired), and its lease counts from its sending.
    fn resume_agents(&mut self) {
        let now = self.now_ms;
        for s in [EAST, WEST] {
            let Some(agent) = self.sites[s].agent.as_mut().filter(|a| a.paused_until.is_some_and(|u| u <= now)) else {
                continue;
            };
            agent.paused_until = None;
            let frozen = now - agent.paused_at;
            if let Some(a) = agent.attempt.as_mut() {
                a.deadline_ms += frozen;
            }
            self.note(format!("HEAL {}'s agent runs again after {frozen} ms", SITES[s]));
        }
    }

    fn agent_timers(&mut self, s: usize) {
        let now = self.now_ms;
        if self.paused(s).is_some() {
            return;
        }
        let in_sync = self.sites_see_each_other();
        let Some(agent) = self.sites[s].agent.as_mut() else { return };
        let local = agent.clock.read(now);
        // Replication is read as it is: in sync exactly while both sites run and see each other.
        let reading = Replication { in_sync: Some(in_sync), recovery_point_age_ms: None };
        agent.core.set_replication(GROUP, Some(reading), local);
        let hooks = agent.core.tick(local);
        // A drain completing wakes the heartbeats at once, to say so.
        let drained = agent.core.heartbeat(local).groups.get(GROUP).is_some_and(|g| g.drained);
        if drained != agent.drained {
            agent.drained = drained;
            if agent.attempt.is_none() {
                agent.next_round_ms = now;
            }
        }
        let timed_out = agent.attempt.is_some_and(|a| now > a.deadline_ms);
        let round_due = agent.attempt.is_none() && now >= agent.next_round_ms;
        let peer_due = now >= agent.next_peer_ms;
        self.trace_hooks(s, hooks);
        if timed_out {
            let agent = self.agent(s);
            agent.attempt = None;
            agent.guess = (agent.guess + 1) % NODES.len();
            self.next_attempt(s);
        } else if round_due {
            self.agent(s).tries = 0;
            self.send_attempt(s);
        }
        if peer_due {
            let agent = self.agent(s);
            agent.next_peer_ms = now + PEER_EVERY_MS;
            let (incarnation, sent_at, body) = (agent.incarnation, agent.clock.read(now), agent.core.peer_request());
            self.send(Msg::PeerRequest { from: s, incarnation, sent_at, body });
        }
    }

    /// Both sites run and their agents can talk (a frozen agent answers nobody).
    fn sites_see_each_other(&self) -> bool {
        self.sites[EAST].alive
            && self.sites[WEST].alive
            && !self.sites_cut
            && self.paused(EAST).is_none()
            && self.paused(WEST).is_none()
    }

    // ----- One step -----

    fn step(&mut self) {
        self.now_ms += TICK_MS;
        if !self.sites_see_each_other() {
            self.apart_at = self.now_ms;
        }
        self.elect();
        self.step_down_deposed();
        self.probe();
        self.replicate();
        if self.now_ms.is_multiple_of(ENGINE_EVERY_MS) {
            self.decide();
            self.replicate();
        }
        self.resume_agents();
        self.deliver();
        for s in [EAST, WEST] {
            self.agent_timers(s);
        }
        self.check();
    }

    /// Invariant 1. Messages are handled at tick instants and a site becomes writable only by
    /// handling one; between ticks writability can only lapse. So two sites writable at any
    /// moment are both writable at the tick before it, and checking at every tick is exact.
    fn check(&mut self) {
        let now = self.now_ms;
        let writable = [EAST, WEST]
            .map(|s| self.sites[s].agent.as_ref().is_some_and(|a| a.core.writable(GROUP, a.clock.read(now))));
        if writable != self.writable {
            self.note(format!("writable: east {}, west {}", writable[EAST], writable[WEST]));
        }
        self.writable = writable;
        if writable[EAST] && writable[WEST] {
            self.fail("invariant 1: east and west are both writable");
        }
    }

    fn run_for(&mut self, ms: u64) {
        let until = self.now_ms + ms;
        while self.now_ms < until {
            self.step();
        }
    }

    /// Runs `ms` and fails unless east alone is writable throughout.
    fn run_expecting_east(&mut self, ms: u64, why: &str) {
        let until = self.now_ms + ms;
        while self.now_ms < until {
            self.step();
            if self.writable != [true, false] {
                self.fail(&format!("{why}: expected east alone writable, got {:?}", self.writable));
            }
        }
    }

    /// Runs until west is writable or `deadline`; when it became writable.
    fn run_until_west_writable(&mut self, deadline: u64) -> Option<u64> {
        while self.now_ms < deadline && !self.writable[WEST] {
            self.step();
        }
        self.writable[WEST].then_some(self.now_ms)
    }

    /// Lets the cluster form and the agents take their roles, for a random while.
    fn warm_up(&mut self) {
        let ms = 3000 + self.rng.below(100) * TICK_MS;
        self.run_for(ms);
        if self.writable != [true, false] || self.group().epoch != Epoch(1) {
            self.fail(&format!("after warm-up: writable {:?}, epoch {}", self.writable, self.group().epoch));
        }
    }

    // ----- Faults -----

    fn kill_site(&mut self, s: usize) {
        if self.sites[s].alive {
            self.sites[s].alive = false;
            self.sites[s].agent = None;
            self.note(format!("FAULT {} dies", SITES[s]));
        }
    }

    fn revive_site(&mut self, s: usize) {
        if !self.sites[s].alive {
            self.sites[s].alive = true;
            self.start_agent(s);
            self.note(format!("HEAL {} is back, with a fresh agent", SITES[s]));
        }
    }

    fn pause_agent(&mut self, s: usize, ms: u64) {
        let now = self.now_ms;
        if let Some(agent) = self.sites[s].agent.as_mut().filter(|a| a.paused_until.is_none()) {
            agent.paused_until = Some(now + ms);
            agent.paused_at = now;
            self.history.agent_pauses += 1;
            self.note(format!("FAULT {}'s agent frozen for {ms} ms", SITES[s]));
        }
    }

    fn restart_agent(&mut self, s: usize) {
        if self.sites[s].alive {
            self.start_agent(s);
            self.note(format!("FAULT {}'s agent restarts", SITES[s]));
        }
    }

    fn cut_sites(&mut self, cut: bool) {
        if self.sites_cut != cut {
            self.sites_cut = cut;
            self.note(format!("{} east<->west link", if cut { "FAULT cut" } else { "HEAL" }));
        }
    }

    fn crash(&mut self, id: u64) {
        if self.nodes[&id].proc != Proc::Crashed {
            self.nodes.get_mut(&id).unwrap().proc = Proc::Crashed;
            self.note(format!("FAULT node {id} crashes"));
        }
    }

    fn pause(&mut self, id: u64) {
        if self.running(id) {
            self.nodes.get_mut(&id).unwrap().proc = Proc::Paused;
            self.note(format!("FAULT node {id} pauses"));
        }
    }

    /// A paused node carries on where it was (still believing it leads, if it did); a crashed
    /// one restarts from its durable state with a fresh clock, detectors and no leadership.
    fn resume(&mut self, id: u64) {
        let now = self.now_ms;
        let node = self.nodes.get_mut(&id).unwrap();
        match node.proc {
            Proc::Running => return,
            Proc::Paused => node.proc = Proc::Running,
            Proc::Crashed => {
                node.proc = Proc::Running;
                node.clock = Clock { boot_ms: now, ppm: node.ppm };
                node.observer = new_observer(id);
                node.leader = None;
            }
        }
        self.note(format!("HEAL node {id} runs again"));
    }

    /// Cuts (or heals) both directions between `id` and every other node.
    fn isolate_node(&mut self, id: u64, cut: bool) {
        for other in NODES.iter().copied().filter(|n| *n != id) {
            for link in [(id, other), (other, id)] {
                if cut {
                    self.net_cut.insert(link);
                } else {
                    self.net_cut.remove(&link);
                }
            }
        }
        self.note(format!("{} node {id} from the other nodes", if cut { "FAULT partition" } else { "HEAL rejoin" }));
    }

    /// An operator orders (or forces) a failover of the group through the current leader, which
    /// checks it as `Node::operator_failover` has it do (`Leader::order`).
    fn operator_order(&mut self, force: bool) -> bool {
        let Some(leader) = self.leader.filter(|l| self.confirmed_leader(*l)) else { return false };
        self.apply_committed(leader);
        let to = self.nodes[&leader].state.groups[GROUP].other().clone();
        let order = FailoverOrder {
            group: GROUP.into(),
            to: Some(to.clone()),
            reason: "forced".into(),
            dry_run: false,
            force,
            drill: None,
        };
        // The order reads the same view a tick would.
        let decided = self.with_leader(leader, |l, t| l.order(&order, t));
        let Ok(Order::Commit { command, .. }) = decided else {
            return false;
        };
        self.history.operator_orders += 1;
        self.note(format!("OPERATOR orders a failover to {to}{}", if force { " (forced)" } else { "" }));
        self.propose(leader, self.term, command)
    }

    /// An operator starts a drill (one way, or back after a random hold) through the current
    /// leader, checked by `Leader::order` as `Node::operator_failover` has it; the leader brings
    /// it back itself.
    fn operator_drill(&mut self) -> bool {
        let Some(leader) = self.leader.filter(|l| self.confirmed_leader(*l)) else { return false };
        self.apply_committed(leader);
        let back = self.rng.below(2) == 0;
        let hold_ms = self.rng.below(2000);
        let order = FailoverOrder {
            group: GROUP.into(),
            to: None,
            reason: "drill".into(),
            dry_run: false,
            force: false,
            drill: Some(DrillRequest { hold_ms, back, by: None, requested_at_ms: 0 }),
        };
        let decided = self.with_leader(leader, |l, t| l.order(&order, t));
        let Ok(Order::Commit { command, .. }) = decided else {
            return false;
        };
        self.note(format!(
            "OPERATOR starts a drill{}",
            if back { format!(", back after {hold_ms} ms") } else { String::new() }
        ));
        self.propose(leader, self.term, command)
    }

    fn random_fault(&mut self) {
        let r = self.rng.below(100);
        let node = NODES[self.rng.below(NODES.len() as u64) as usize];
        let site = if self.rng.below(4) == 0 { WEST } else { EAST };
        match r {
            0..=3 => self.kill_site(site),
            4..=11 => self.revive_site(site),
            12..=16 => self.cut_sites(true),
            17..=24 => self.cut_sites(false),
            25..=29 => {
                self.probe_cut.insert((node, site));
                self.note(format!("FAULT cut probes node {node} -> {}", SITES[site]));
            }
            30..=31 => {
                self.probe_cut.extend(NODES.map(|n| (n, site)));
                self.note(format!("FAULT cut every probe to {}", SITES[site]));
            }
            32..=38 => {
                self.probe_cut.clear();
                self.note("HEAL every probe path".into());
            }
            39..=43 => {
                self.agent_cut.insert((node, site));
                self.note(format!("FAULT cut node {node} <-> {} agent", SITES[site]));
            }
            44..=45 => {
                self.agent_cut.extend(NODES.map(|n| (n, site)));
                self.note(format!("FAULT cut every node from the {} agent", SITES[site]));
            }
            46..=52 => {
                self.agent_cut.clear();
                self.note("HEAL every agent link".into());
            }
            53..=55 => self.crash(node),
            56..=58 => self.pause(node),
            59..=67 => self.resume(node),
            68..=69 => {
                let crash = self.rng.below(2) == 0;
                for n in NODES {
                    if crash {
                        self.crash(n);
                    } else {
                        self.pause(n);
                    }
                }
            }
            70..=73 => NODES.into_iter().for_each(|n| self.resume(n)),
            74..=77 => self.restart_agent(site),
            78..=81 => {
                let other = NODES[self.rng.below(NODES.len() as u64) as usize];
                if other != node {
                    self.net_cut.insert((node, other));
                    self.note(format!("FAULT cut node {node} -> node {other}"));
                }
            }
            82..=87 => {
                self.net_cut.clear();
                self.note("HEAL every node link".into());
            }
            88..=89 => {
                self.operator_order(false);
            }
            90 => {
                self.operator_order(true);
            }
            91..=92 => {
                let ms = 300 + self.rng.below(300) * TICK_MS;
                self.pause_agent(site, ms);
            }
            93..=97 => {
                self.operator_drill();
            }
            _ => {}
        }
    }

    fn heal(&mut self) {
        for s in [EAST, WEST] {
            self.revive_site(s);
        }
        self.cut_sites(false);
        self.probe_cut.clear();
        self.agent_cut.clear();
        self.net_cut.clear();
        for id in NODES {
            self.resume(id);
        }
        self.note("HEAL everything".into());
    }

    /// After a heal: the committed active site alone writable, no drain left, nodes agreeing.
    fn settled(&self) -> Result<(), String> {
        let g = self.group();
        let active = SITES.iter().position(|s| *s == g.active).expect("a site of the group");
        let mut expected = [false, false];
        expected[active] = true;
        if g.draining || self.writable != expected {
            return Err(format!(
                "active {} at epoch {} (draining {}), writable {:?}",
                g.active, g.epoch, g.draining, self.writable
            ));
        }
        for id in NODES {
            let n = &self.nodes[&id].state.groups[GROUP];
            if (n.active.as_str(), n.epoch) != (g.active.as_str(), g.epoch) {
                return Err(format!(
                    "node {id} has {} at epoch {}, the log {} at {}",
                    n.active, n.epoch, g.active, g.epoch
                ));
            }
        }
        Ok(())
    }
}

/// What is wrong with a committed entry's effect on the group, if anything.
fn entry_problem(before: &GroupState, after: &GroupState, command: &Command) -> Option<String> {
    if after.epoch < before.epoch {
        return Some(format!("invariant 5: {command} took the epoch back from {} to {}", before.epoch, after.epoch));
    }
    // A batch's commands apply as if alone (one group here): one of them moved it or ended it.
    let any = |is: fn(&Command) -> bool| command.commands().iter().any(is);
    if after.epoch != before.epoch {
        if !any(|c| matches!(c, Command::Failover { .. } | Command::Drill { .. })) {
            return Some(format!("{command} moved the group"));
        }
        if after.epoch != before.epoch.next() || !after.draining {
            return Some(format!("{command} moved the group to epoch {} without draining", after.epoch));
        }
    } else if before.draining && !after.draining && !any(|c| matches!(c, Command::Promote { .. })) {
        return Some(format!("{command} ended a drain"));
    }
    None
}

/// Keeps the largest value seen across seeds (the tests' seeds run in one thread each).
fn record_max(max: &AtomicU64, value: u64) {
    max.fetch_max(value, Ordering::Relaxed);
}

// ----- The tests -----

/// Random faults of every kind for 24 s, then everything heals: invariants 1, 2 (any automatic
/// failover while the sites have seen each other for a while) and 5 throughout, and the group
/// must settle with exactly its committed active site writable.
#[test]
fn random_faults_never_make_two_writers() {
    static RUNS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
    run("random_faults_never_make_two_writers", |seed| {
        let mut w = World::new(seed);
        while w.now_ms < 24_000 {
            if w.rng.below(30) == 0 {
                w.random_fault();
            }
            w.step();
        }
        w.heal();
        w.run_for(8_000);
        if let Err(e) = w.settled() {
            w.fail(&format!("not settled 8 s after healing: {e}"));
        }
        let h = &w.history;
        let happened = [
            true,
            h.failovers > 0,
            h.promotions > 0,
            h.operator_orders > 0,
            h.agent_pauses > 0,
            h.duplicates > 0,
            h.drill_legs > 0,
        ];
        for (counter, happened) in RUNS.iter().zip(happened) {
            counter.fetch_add(u64::from(happened), Ordering::Relaxed);
        }
    });
    let [runs, failovers, promotions, operator, pauses, duplicates, drills] =
        RUNS.each_ref().map(|c| c.load(Ordering::Relaxed));
    eprintln!(
        "{runs} runs: {failovers} with a failover, {promotions} with a promotion, {operator} with an operator order, \
         {pauses} with a frozen agent, {duplicates} with duplicated messages, {drills} with a drill's switchover"
    );
    // A run of many seeds that exercised none of these proves nothing: each must be common.
    if runs >= 100 {
        for (what, n) in [
            ("a failover", failovers),
            ("a promotion", promotions),
            ("an operator order", operator),
            ("a frozen agent", pauses),
            ("duplicated messages", duplicates),
            ("a drill's switchover", drills),
        ] {
            assert!(n * 5 >= runs, "only {n} of {runs} runs had {what}");
        }
    }
}

/// Invariant 2: the whole witness down (crashed, paused, cut off from both sites, or without a
/// quorum), twice, while the sites see each other: east stays writable on its peer lease, west
/// stays standby, and nothing fails over, then or after the witness returns.
#[test]
fn the_whole_witness_down_changes_nothing_while_the_sites_see_each_other() {
    run("the_whole_witness_down_changes_nothing_while_the_sites_see_each_other", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        for _ in 0..2 {
            let how = w.rng.below(4);
            match how {
                0 => NODES.into_iter().for_each(|n| w.crash(n)),
                1 => NODES.into_iter().for_each(|n| w.pause(n)),
                2 => {
                    for n in NODES {
                        for s in [EAST, WEST] {
                            w.probe_cut.insert((n, s));
                            w.agent_cut.insert((n, s));
                        }
                    }
                    w.note("FAULT the witness is cut off from both sites".into());
                }
                _ => NODES.into_iter().for_each(|n| w.isolate_node(n, true)),
            }
            let down = 1000 + w.rng.below(700) * TICK_MS;
            w.run_expecting_east(down, "witness down");
            match how {
                0 | 1 => NODES.into_iter().for_each(|n| w.resume(n)),
                2 => {
                    w.probe_cut.clear();
                    w.agent_cut.clear();
                    w.note("HEAL the witness reaches both sites".into());
                }
                _ => NODES.into_iter().for_each(|n| w.isolate_node(n, false)),
            }
            let up = 2000 + w.rng.below(300) * TICK_MS;
            w.run_expecting_east(up, "witness back");
        }
        assert_eq!(w.history.failovers, 0, "seed {seed}: a failover");
    });
}

/// Invariant 3: a quorum of witness nodes (or all) cannot probe east, and some also lose
/// east's agent, flapping; west still sees east and says so. The leader must judge the
/// witness's paths broken, fail nothing over, and east must stay writable throughout.
#[test]
fn cutting_the_witness_paths_to_east_fails_nothing_over() {
    run("cutting_the_witness_paths_to_east_fails_nothing_over", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        let mut victims: Vec<u64> = NODES.to_vec();
        if w.rng.below(2) == 0 {
            victims.remove(w.rng.below(3) as usize);
        }
        let agent_links_too = w.rng.below(2) == 0;
        for n in &victims {
            w.probe_cut.insert((*n, EAST));
            if agent_links_too {
                w.agent_cut.insert((*n, EAST));
            }
        }
        w.note(format!("FAULT nodes {victims:?} lose east's probes (and its agent: {agent_links_too})"));
        let until = w.now_ms + 12_000;
        while w.now_ms < until {
            if w.rng.below(50) == 0 {
                let link = (victims[w.rng.below(victims.len() as u64) as usize], EAST);
                if !w.agent_cut.remove(&link) {
                    w.agent_cut.insert(link);
                }
                w.note(format!("FLAP node {} <-> east agent: cut {}", link.0, w.agent_cut.contains(&link)));
            }
            w.run_expecting_east(TICK_MS, "witness paths to east cut");
        }
        assert!(w.history.path_broken, "seed {seed}: the leader never judged the witness's paths broken");
        assert_eq!(w.history.failovers, 0, "seed {seed}: a failover");
    });
}

/// Invariant 4: east dies (site and agent) with west and the whole witness healthy; west must
/// be writable within [`PROMOTION_BOUND_MS`] = 4200 ms (measured worst: 2680 ms over seeds
/// 0..500), after exactly one automatic failover.
#[test]
fn a_dead_primary_is_replaced_within_the_bound() {
    static WORST: AtomicU64 = AtomicU64::new(0);
    run("a_dead_primary_is_replaced_within_the_bound", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        let died = w.now_ms;
        w.kill_site(EAST);
        let Some(at) = w.run_until_west_writable(died + PROMOTION_BOUND_MS + 5_000) else {
            w.fail("west never became writable");
        };
        let took = at - died;
        if took > PROMOTION_BOUND_MS {
            w.fail(&format!("invariant 4: west writable {took} ms after east died (bound {PROMOTION_BOUND_MS} ms)"));
        }
        record_max(&WORST, took);
        w.run_for(2_000);
        let h = &w.history;
        assert_eq!((h.automatic_failovers, h.failovers, h.promotions), (1, 1, 1), "seed {seed}");
        assert_eq!(w.writable, [false, true], "seed {seed}");
    });
    eprintln!(
        "west writable at most {} ms after east died (bound {PROMOTION_BOUND_MS} ms)",
        WORST.load(Ordering::Relaxed)
    );
}

/// East dies, or is cut off from everyone (alive, so it must fence itself), or an operator
/// forces a failover while everything is healthy (so both sites hold fresh leases when the drain
/// begins). At a random point of the drain, the leader crashes, pauses (and comes back still
/// believing it leads) or is partitioned from the other nodes. The new leader starts a fresh
/// ledger and must wait out the leases from its own start: one writer throughout, west writable
/// within [`LEADER_CHANGE_BOUND_MS`], east standby once it is reachable again.
#[test]
fn a_leader_change_while_draining_keeps_one_writer() {
    static WORST: AtomicU64 = AtomicU64::new(0);
    static DEPOSED_WHILE_DRAINING: AtomicU64 = AtomicU64::new(0);
    static RUNS: AtomicU64 = AtomicU64::new(0);
    run("a_leader_change_while_draining_keeps_one_writer", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        let failed = w.now_ms;
        let kind = w.rng.below(3);
        match kind {
            0 => w.kill_site(EAST),
            1 => {
                w.cut_sites(true);
                for n in NODES {
                    w.probe_cut.insert((n, EAST));
                    w.agent_cut.insert((n, EAST));
                }
                w.note("FAULT east is cut off from west and from the witness".into());
            }
            _ => {
                if !w.operator_order(true) {
                    w.fail("the operator's order was not committed");
                }
            }
        }
        while !w.group().draining {
            if w.now_ms > failed + PROMOTION_BOUND_MS {
                w.fail("the failover never committed");
            }
            w.step();
        }
        // Depose the leader somewhere in the drain (or as it ends). After a failure the drain is
        // short (the leases ran out during detection); after a forced order it lasts a lease.
        let within = if kind == 2 { DEPOSE_WITHIN_MS } else { 300 };
        let depose_at = w.now_ms + w.rng.below(within / TICK_MS) * TICK_MS;
        while w.now_ms < depose_at && w.group().draining {
            w.step();
        }
        DEPOSED_WHILE_DRAINING.fetch_add(u64::from(w.group().draining), Ordering::Relaxed);
        RUNS.fetch_add(1, Ordering::Relaxed);
        let Some(old) = w.leader else { w.fail("no leader to depose") };
        let how = w.rng.below(3);
        match how {
            0 => w.crash(old),
            1 => w.pause(old),
            _ => w.isolate_node(old, true),
        }
        let back = w.now_ms + 300 + w.rng.below(270) * TICK_MS;
        let deadline = failed + LEADER_CHANGE_BOUND_MS;
        while w.now_ms < deadline && !w.writable[WEST] {
            if w.now_ms == back && how == 1 {
                w.resume(old);
            }
            w.step();
        }
        if !w.writable[WEST] {
            w.fail(&format!("west not writable {LEADER_CHANGE_BOUND_MS} ms after east failed"));
        }
        record_max(&WORST, w.now_ms - failed);
        // East comes back (with a fresh agent if it had died) and must stay standby.
        w.heal();
        w.run_for(4_000);
        if let Err(e) = w.settled() {
            w.fail(&format!("not settled after healing: {e}"));
        }
        assert_eq!(w.group().active, "west", "seed {seed}");
        assert_eq!(w.history.failovers, 1, "seed {seed}");
    });
    eprintln!(
        "leader change while draining ({} seeds deposed it mid-drain): west writable at most {} ms after east \
         failed (bound {LEADER_CHANGE_BOUND_MS} ms)",
        DEPOSED_WHILE_DRAINING.load(Ordering::Relaxed),
        WORST.load(Ordering::Relaxed)
    );
    let (runs, mid_drain) = (RUNS.load(Ordering::Relaxed), DEPOSED_WHILE_DRAINING.load(Ordering::Relaxed));
    assert!(runs < 100 || mid_drain * 4 >= runs, "only {mid_drain} of {runs} runs deposed the leader mid-drain");
}

/// The bridge: the leader is partitioned from the other nodes together with east (east's agent
/// and the old leader's probes still reach each other; the others reach neither), and a little
/// later east loses west. The old leader still believes it leads but cannot confirm it, so it
/// must refuse east's heartbeats; east fences itself once its leases run out, and west takes
/// over (automatically, or by an operator's order when the new leader cannot pass the RPO gate)
/// without ever overlapping east.
#[test]
fn a_leader_bridged_with_the_primary_answers_nothing() {
    run("a_leader_bridged_with_the_primary_answers_nothing", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        let Some(old) = w.leader else { w.fail("no leader after warm-up") };
        let bridged = w.now_ms;
        w.isolate_node(old, true);
        for n in NODES.iter().copied().filter(|n| *n != old) {
            w.probe_cut.insert((n, EAST));
            w.agent_cut.insert((n, EAST));
        }
        w.probe_cut.insert((old, WEST));
        w.agent_cut.insert((old, WEST));
        w.note(format!("FAULT node {old} is bridged with east"));
        let sites_cut_at = bridged + w.rng.below(300) * TICK_MS;
        let operator_from = sites_cut_at + HOLD_DOWN_MS + w.rng.below(400) * TICK_MS;
        let deadline = bridged + 20_000;
        while w.now_ms < deadline && !w.writable[WEST] {
            if w.now_ms == sites_cut_at {
                w.cut_sites(true);
            }
            if w.now_ms >= operator_from && w.history.failovers == 0 && (w.now_ms - operator_from).is_multiple_of(500) {
                w.operator_order(false);
            }
            w.step();
        }
        if !w.writable[WEST] {
            w.fail("west never became writable");
        }
        if w.nodes[&old].leader.is_none() {
            w.fail("the old leader no longer believes it leads: the bridge was not exercised");
        }
        if w.history.answered.get(&(old, EAST)).is_some_and(|at| *at > bridged) {
            w.fail("the bridged leader answered east's heartbeat");
        }
        if w.history.refused.get(&(old, EAST)).is_none_or(|at| *at <= bridged) {
            w.fail("east never asked the bridged leader");
        }
        w.run_for(2_000);
        w.heal();
        w.run_for(5_000);
        if let Err(e) = w.settled() {
            w.fail(&format!("not settled after healing: {e}"));
        }
        assert_eq!(w.group().active, "west", "seed {seed}");
    });
}

/// A regression (found by this simulation). With a hold-down shorter than the lease (valid
/// config: lease 1 s, hold_down 500 ms), the witness's probes of east are cut and west vouches
/// for east, as in invariant 3. West's agent restarts: its first heartbeat leaves with its first
/// peer request, and used to report the peer unreachable before any contact; its links to the
/// witness then fail, the engine counted that one report as fresh for a whole lease, held down
/// and failed a healthy, reachable east over. A fresh agent now counts its peer reachable until
/// `peer_timeout` has passed without an exchange.
#[test]
fn a_restarted_survivor_agent_alone_never_fails_over() {
    run("a_restarted_survivor_agent_alone_never_fails_over", |seed| {
        let mut w = World::new(seed);
        w.timing.get_mut(GROUP).expect("the group's timing").hold_down = Duration::from_millis(500);
        w.warm_up();
        for n in NODES {
            w.probe_cut.insert((n, EAST));
        }
        w.note("FAULT every probe to east is cut".into());
        w.run_for(2_000);
        assert!(w.history.path_broken, "seed {seed}: the leader never judged the witness's paths broken");
        let restarted = w.now_ms;
        w.restart_agent(WEST);
        let agent = w.agent(WEST);
        (agent.next_round_ms, agent.next_peer_ms) = (restarted, restarted);
        while !w.history.answered.iter().any(|((_, s), at)| *s == WEST && *at > restarted) {
            w.step();
        }
        w.agent_cut.extend(NODES.map(|n| (n, WEST)));
        w.note("FAULT west's agent loses every witness node".into());
        w.run_for(3_000);
        assert_eq!(w.history.failovers, 0, "seed {seed}: a failover");
    });
}

/// Only east's agent freezes (SIGSTOP) for 3 s, longer than its lease, while east's site stays
/// up and seen up by the witness: nothing fails over. East fences itself when its leases run out
/// (by its own clock, which runs on), handles what queued up when it resumes (late answers count
/// from when their heartbeat was sent, so they extend nothing), and is writable again soon after.
#[test]
fn an_agent_frozen_past_its_lease_fences_itself_and_nothing_fails_over() {
    run("an_agent_frozen_past_its_lease_fences_itself_and_nothing_fails_over", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        let frozen = w.now_ms;
        w.pause_agent(EAST, 3000);
        let mut fenced = false;
        while w.now_ms < frozen + 3000 {
            w.step();
            fenced |= w.writable == [false, false];
            if w.writable[WEST] {
                w.fail("west writable while east's agent is frozen");
            }
        }
        if !fenced {
            w.fail("east never fenced itself while its agent was frozen past its lease");
        }
        let resumed = w.now_ms;
        while w.writable != [true, false] {
            if w.now_ms > resumed + 2 * (HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS) + 500 {
                w.fail("east not writable again after its agent resumed");
            }
            w.step();
        }
        w.run_expecting_east(3000, "after the freeze");
        assert_eq!(w.history.failovers, 0, "seed {seed}: a failover");
    });
}

/// An operator forces a failover while everything is healthy (so west granted east peer leases
/// moments ago), and west's agent restarts in the middle of the drain. A restarted agent cannot
/// know what it granted before, so it counts its own start as its last grant: west must not be
/// writable before a lease and its margin (on west's clock) after the restart, and there is one
/// writer throughout.
#[test]
fn a_standby_agent_restarted_mid_drain_waits_a_lease_from_its_restart() {
    run("a_standby_agent_restarted_mid_drain_waits_a_lease_from_its_restart", |seed| {
        let mut w = World::new(seed);
        w.warm_up();
        if !w.operator_order(true) {
            w.fail("the operator's order was not committed");
        }
        let within = w.rng.below(60) * TICK_MS;
        w.run_for(within);
        let restarted = w.now_ms;
        w.restart_agent(WEST);
        let Some(at) = w.run_until_west_writable(restarted + 10_000) else { w.fail("west never became writable") };
        // West's clock may run 4 % fast: the real wait is at least (lease + margin) / 1.04.
        let least = (LEASE_MS + MARGIN_MS) * 1_000_000 / (1_000_000 + MAX_DRIFT_PPM);
        if at - restarted < least {
            w.fail(&format!(
                "west writable {} ms after its agent restarted mid-drain (at least {least})",
                at - restarted
            ));
        }
        w.run_for(2000);
        assert_eq!(w.writable, [false, true], "seed {seed}");
    });
}

/// The tightest case for the witness lease: the sites are cut apart (no peer leases), east
/// holds only the witness lease, and right after east's agent took an answer from the leader it
/// is cut off from the whole witness (so nothing tells it to fence: only its lease can) while an
/// operator forces a failover. Clocks are at their limits against safety: the witness nodes run
/// fast (their wait ends early) and east slow (its lease lasts long). In half the seeds every
/// heartbeat and answer of east's is late (up to just under the agent's timeout), so an agent
/// that counted its lease from the answer instead of the sending would hold it well past the
/// leader's wait. One writer throughout.
#[test]
fn a_forced_failover_right_after_a_grant_keeps_one_writer_at_the_clock_limits() {
    run("a_forced_failover_right_after_a_grant_keeps_one_writer_at_the_clock_limits", |seed| {
        let mut w = World::new(seed);
        let fast = MAX_DRIFT_PPM as i64;
        for node in w.nodes.values_mut() {
            node.ppm = fast;
            node.clock.ppm = fast;
        }
        w.sites[EAST].ppm = -fast;
        w.sites[EAST].agent.as_mut().expect("east runs").clock.ppm = -fast;
        if seed % 2 == 0 {
            w.slow_agent = Some(EAST);
        }
        w.warm_up();
        w.cut_sites(true);
        // East's peer leases run out; the witness lease alone keeps it writable.
        w.run_expecting_east(LEASE_MS + MARGIN_MS + PEER_TIMEOUT_MS + 500, "the sites apart");
        let asked = w.now_ms;
        while w.history.received.get(&EAST).is_none_or(|at| *at <= asked) {
            w.step();
        }
        w.agent_cut.extend(NODES.map(|n| (n, EAST)));
        w.note("FAULT east's agent is cut off from every witness node".into());
        if !w.operator_order(true) {
            w.fail("the operator's order was not committed");
        }
        if w.run_until_west_writable(w.now_ms + 10_000).is_none() {
            w.fail("west never became writable");
        }
        w.run_for(2000);
        assert_eq!(w.writable, [false, true], "seed {seed}");
    });
}
