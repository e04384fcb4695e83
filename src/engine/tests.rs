//! Engine rules, one table row or scenario each, asserting the exact effects; then a seeded
//! random walk that checks the safety rules after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::leases::{GroupReport, Heartbeat, Ledger, Role};
use super::*;
use crate::config::{FailoverMode, ReplicationMode};
use crate::state::{Command, Epoch, GroupSpec, NodeId, Response, State, Topology, Verdict};

const HOLD: Duration = Duration::from_secs(2);
const BLOCK: Duration = Duration::from_secs(60);
const IN_SYNC_WITHIN: Duration = Duration::from_secs(2);

struct World {
    state: State,
    voters: BTreeSet<NodeId>,
    live: BTreeSet<NodeId>,
    timing: BTreeMap<GroupId, GroupTiming>,
    engine: Engine,
    now: Duration,
    ledger: Ledger,
}

impl World {
    fn new(failover: FailoverMode) -> World {
        let mut state = State::default();
        let spec = GroupSpec {
            primary: "east".into(),
            secondary: "west".into(),
            replication: ReplicationMode::Sync,
            failover,
            rto_ms: 300_000,
            rpo_ms: 0,
            leases: None,
            steps: Vec::new(),
        };
        state.apply(Command::SyncTopology(Topology {
            sites: ["east".into(), "west".into()].into(),
            groups: [("app".into(), spec)].into(),
            tuning: Default::default(),
        }));
        World {
            state,
            voters: [1, 2, 3].map(NodeId).into(),
            live: [1, 2, 3].map(NodeId).into(),
            timing: [(
                "app".into(),
                GroupTiming { hold_down: HOLD, block_after_failover: BLOCK, in_sync_within: IN_SYNC_WITHIN },
            )]
            .into(),
            engine: Engine::new(),
            now: Duration::ZERO,
            ledger: Ledger::new(Duration::ZERO),
        }
    }

    /// Sets every voter's verdict on `site` from a string like "DDU" (node 1, 2, 3; '?' unknown).
    fn see(&mut self, site: &str, verdicts: &str) {
        for (i, c) in verdicts.chars().enumerate() {
            let verdict = match c {
                'U' => Some(Verdict::Up),
                'D' => Some(Verdict::Down),
                _ => None,
            };
            self.state.apply(Command::ReportVerdict { node: NodeId(i as u64 + 1), site: site.into(), verdict });
        }
    }

    fn step(&mut self) -> Vec<Effect> {
        self.engine.step(&Inputs {
            now: self.now,
            state: &self.state,
            voters: &self.voters,
            live: &self.live,
            timing: &self.timing,
            ledger: &self.ledger,
            failing_since: &BTreeMap::new(),
        })
    }

    fn at(&mut self, t: Duration) -> Vec<Effect> {
        self.now = t;
        self.step()
    }

    fn proposals(effects: &[Effect]) -> Vec<Command> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Propose(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    fn assessment(effects: &[Effect]) -> Option<Assessment> {
        effects.iter().find_map(|e| match e {
            Effect::Journal { assessment, .. } => Some(assessment.clone()),
            _ => None,
        })
    }

    fn group(&self) -> &crate::state::GroupState {
        &self.state.groups["app"]
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn failover_to(to: &str, expected: u64) -> impl Fn(&Command) -> bool + '_ {
    move |c| matches!(c, Command::Failover { to: t, expected_epoch, group, .. } if t == to && *expected_epoch == Epoch(expected) && group == "app")
}

#[test]
fn assessments_without_a_failover() {
    // (east verdicts, west verdicts, live voters, expected assessment)
    let cases: Vec<(&str, &str, &[u64], Assessment)> = vec![
        ("UUU", "UUU", &[1, 2, 3], Assessment::Healthy { active: "east".into() }),
        ("???", "???", &[1, 2, 3], Assessment::Healthy { active: "east".into() }),
        ("DUU", "UUU", &[1, 2, 3], Assessment::BelowQuorum { site: "east".into(), down: 1, voters: 3, quorum: 2 }),
        (
            "DD?",
            "UUU",
            &[1, 3],
            // Node 2 is silent: its "down" counts as unknown.
            Assessment::BelowQuorum { site: "east".into(), down: 1, voters: 3, quorum: 2 },
        ),
        (
            "DDD",
            "U??",
            &[1, 2, 3],
            Assessment::SurvivorNotUp { failed: "east".into(), survivor: "west".into(), up: 1, voters: 3, quorum: 2 },
        ),
        (
            "DDD",
            "DDD",
            &[1, 2, 3],
            Assessment::SurvivorNotUp { failed: "east".into(), survivor: "west".into(), up: 0, voters: 3, quorum: 2 },
        ),
        (
            "DDU",
            "UUU",
            &[1, 2, 3],
            Assessment::HoldingDown { failed: "east".into(), survivor: "west".into(), down: 2, voters: 3 },
        ),
    ];
    for (east, west, live, expected) in cases {
        let mut w = World::new(FailoverMode::Automatic);
        w.live = live.iter().map(|n| NodeId(*n)).collect();
        w.see("east", east);
        w.see("west", west);
        // Long after any hold-down: only the first step starts the clock, so check both.
        let first = w.at(ms(0));
        assert_eq!(World::assessment(&first), Some(expected.clone()), "east {east} west {west} live {live:?}");
        let later = w.at(ms(0) + HOLD / 2);
        assert!(World::proposals(&later).is_empty(), "east {east} west {west}: no proposal expected");
    }
}

#[test]
fn quorum_down_for_the_hold_down_fails_over_once() {
    let mut w = World::new(FailoverMode::Automatic);
    w.see("east", "UUU");
    w.see("west", "UUU");
    assert!(World::proposals(&w.at(ms(0))).is_empty());
    w.see("east", "DDU");
    let e = w.at(ms(1000));
    assert!(World::proposals(&e).is_empty());
    assert!(matches!(World::assessment(&e), Some(Assessment::HoldingDown { down: 2, .. })));
    assert!(World::proposals(&w.at(ms(2999))).is_empty(), "hold-down not over yet");
    let e = w.at(ms(3000));
    let p = World::proposals(&e);
    assert_eq!(p.len(), 1, "{e:?}");
    assert!(failover_to("west", 1)(&p[0]), "{p:?}");
    assert_eq!(
        World::assessment(&e),
        Some(Assessment::FailingOver { from: "east".into(), to: "west".into(), epoch: Epoch(2) })
    );
    // Not repeated while in flight, retried after PROPOSAL_RETRY if still called for.
    assert!(World::proposals(&w.at(ms(3500))).is_empty());
    assert_eq!(World::proposals(&w.at(ms(4000))).len(), 1);
}

#[test]
fn hold_down_restarts_when_the_quorum_breaks() {
    let mut w = World::new(FailoverMode::Automatic);
    w.see("west", "UUU");
    w.see("east", "DDU");
    w.at(ms(0));
    w.see("east", "DUU");
    assert!(matches!(World::assessment(&w.at(ms(1500))), Some(Assessment::BelowQuorum { .. })));
    w.see("east", "DDU");
    assert!(World::proposals(&w.at(ms(2000))).is_empty());
    assert!(World::proposals(&w.at(ms(3999))).is_empty(), "the clock restarted at 2000 ms");
    assert_eq!(World::proposals(&w.at(ms(4000))).len(), 1);
}

#[test]
fn gates_turn_a_failover_into_needs_approval() {
    type Setup = fn(&mut World);
    let cases: Vec<(&str, FailoverMode, Setup, Vec<Gate>)> = vec![
        (
            "paused",
            FailoverMode::Automatic,
            |w| {
                w.state.apply(Command::SetPaused { group: "app".into(), paused: true });
            },
            vec![Gate::Paused],
        ),
        (
            "automation off",
            FailoverMode::Automatic,
            |w| {
                w.state.apply(Command::SetAutomation { enabled: false });
            },
            vec![Gate::AutomationOff],
        ),
        ("manual group", FailoverMode::Manual, |_| {}, vec![Gate::ManualFailover]),
        (
            "everything",
            FailoverMode::Manual,
            |w| {
                w.state.apply(Command::SetAutomation { enabled: false });
                w.state.apply(Command::SetPaused { group: "app".into(), paused: true });
            },
            vec![Gate::AutomationOff, Gate::Paused, Gate::ManualFailover],
        ),
    ];
    for (label, mode, setup, gates) in cases {
        let mut w = World::new(mode);
        setup(&mut w);
        w.see("east", "DDD");
        w.see("west", "UUU");
        w.at(ms(0));
        let e = w.at(HOLD);
        assert!(World::proposals(&e).is_empty(), "{label}: {e:?}");
        assert_eq!(
            World::assessment(&e),
            Some(Assessment::NeedsApproval {
                failed: "east".into(),
                survivor: "west".into(),
                gates,
                rpo_exposure_ms: None
            }),
            "{label}"
        );
    }
    let approval = Assessment::NeedsApproval {
        failed: "east".into(),
        survivor: "west".into(),
        gates: vec![Gate::Rpo, Gate::SurvivorAgentSilent],
        rpo_exposure_ms: None,
    };
    assert_eq!(
        approval.to_string(),
        "failover east -> west needs approval: rpo, survivor_agent_silent; RPO exposure unknown (no replication report)",
        "gates by the names the journal's JSON gives them"
    );
}

#[test]
fn after_a_failover_the_group_is_blocked_then_the_block_expires() {
    let mut w = World::new(FailoverMode::Automatic);
    w.see("east", "DDD");
    w.see("west", "UUU");
    w.at(ms(0));
    let p = World::proposals(&w.at(HOLD));
    assert_eq!(
        w.state.apply(p[0].clone()),
        Response::Activated { group: "app".into(), active: "west".into(), epoch: Epoch(2), draining: false }
    );
    assert!(w.group().blocked);

    // West fails too while blocked: an operator must decide.
    w.see("east", "UUU");
    w.see("west", "DDD");
    let t = HOLD + ms(100);
    w.at(t);
    let e = w.at(t + HOLD);
    assert!(World::proposals(&e).is_empty());
    assert!(
        matches!(World::assessment(&e), Some(Assessment::NeedsApproval { ref gates, .. }) if gates == &vec![Gate::Blocked])
    );

    // Once the block has run its course (from when this leader saw it), it is acknowledged.
    let e = w.at(t + BLOCK);
    assert_eq!(World::proposals(&e), vec![Command::Ack { group: "app".into(), expected_epoch: Epoch(2) }]);
    assert_eq!(World::assessment(&e), Some(Assessment::BlockExpired { epoch: Epoch(2) }));
    w.state.apply(Command::Ack { group: "app".into(), expected_epoch: Epoch(2) });
    let p = World::proposals(&w.at(t + BLOCK + ms(10)));
    assert!(p.iter().any(failover_to("east", 2)), "{p:?}");
}

#[test]
fn a_returning_site_stays_standby() {
    let mut w = World::new(FailoverMode::Automatic);
    w.see("east", "DDD");
    w.see("west", "UUU");
    w.at(ms(0));
    let p = World::proposals(&w.at(HOLD));
    w.state.apply(p[0].clone());
    w.state.apply(Command::Ack { group: "app".into(), expected_epoch: Epoch(2) });
    // East comes back and west stays healthy: nothing moves, ever.
    w.see("east", "UUU");
    for t in 0..100 {
        let e = w.at(HOLD + Duration::from_secs(t));
        assert!(World::proposals(&e).is_empty(), "automatic failback at {t}s: {e:?}");
    }
    assert_eq!(w.group().active, "west");
}

#[test]
fn a_new_leader_waits_a_full_hold_down() {
    let mut w = World::new(FailoverMode::Automatic);
    w.see("east", "DDD");
    w.see("west", "UUU");
    w.at(ms(0));
    w.at(ms(1900));
    w.engine = Engine::new(); // leadership moved: memory starts afresh
    assert!(World::proposals(&w.at(ms(2000))).is_empty());
    assert!(World::proposals(&w.at(ms(3999))).is_empty());
    assert_eq!(World::proposals(&w.at(ms(4000))).len(), 1);
}

#[test]
fn verdicts_of_non_voters_do_not_count() {
    let mut w = World::new(FailoverMode::Automatic);
    w.voters = [1, 2, 3].map(NodeId).into();
    w.live = [1, 2, 3, 4, 5].map(NodeId).into();
    w.see("east", "DUUDD"); // nodes 4 and 5 are not voters
    w.see("west", "UUU");
    let e = w.at(ms(0));
    assert!(matches!(World::assessment(&e), Some(Assessment::BelowQuorum { down: 1, .. })), "{e:?}");
}

/// Random verdicts, liveness, gates, time steps and leader changes; every proposal is applied
/// as if committed at once. After every step: the active site is one of the group's sites,
/// the epoch never goes down, and a failover is proposed only when, at that moment, a quorum
/// of live voters has seen the active site down for the whole hold-down and a quorum sees the
/// other site up, with no gate closed.
#[test]
fn random_walks_never_break_the_safety_rules() {
    // WITNESS_ENGINE_SEED=N replays one seed; WITNESS_ENGINE_SEEDS=N runs seeds 0..N.
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let seeds = match env("WITNESS_ENGINE_SEED") {
        Some(one) => one..one + 1,
        None => 0..env("WITNESS_ENGINE_SEEDS").unwrap_or(2000),
    };
    let mut failovers = 0;
    for seed in seeds.clone() {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let mode = if rng.below(4) == 0 { FailoverMode::Manual } else { FailoverMode::Automatic };
        let mut w = World::new(mode);
        // Reference model: since when (in this leader's memory) the failover condition held.
        let mut held_since: Option<Duration> = None;
        let mut last_epoch = w.group().epoch;
        for step in 0..300 {
            match rng.below(30) {
                // One node changes its mind about one site.
                0..=9 => {
                    let node = rng.below(3) + 1;
                    let site = if rng.below(2) == 0 { "east" } else { "west" };
                    let verdict = [Some(Verdict::Up), Some(Verdict::Down), None][rng.below(3) as usize];
                    w.state.apply(Command::ReportVerdict { node: NodeId(node), site: site.into(), verdict });
                }
                // A site fails or recovers, seen by most nodes at once.
                10..=15 => {
                    let site = if rng.below(2) == 0 { "east" } else { "west" };
                    let verdict = if rng.below(2) == 0 { Verdict::Up } else { Verdict::Down };
                    for node in 1..=3 {
                        let v = if rng.below(10) == 0 { None } else { Some(verdict) };
                        w.state.apply(Command::ReportVerdict { node: NodeId(node), site: site.into(), verdict: v });
                    }
                }
                16..=17 => {
                    let node = NodeId(rng.below(3) + 1);
                    if !w.live.remove(&node) {
                        w.live.insert(node);
                    }
                }
                18 => {
                    let cmd = match rng.below(4) {
                        0 => Command::SetPaused { group: "app".into(), paused: rng.below(2) == 0 },
                        1 => Command::SetAutomation { enabled: rng.below(3) != 0 },
                        2 => Command::Ack { group: "app".into(), expected_epoch: w.group().epoch },
                        _ => Command::SetPaused { group: "app".into(), paused: false },
                    };
                    w.state.apply(cmd);
                }
                19 => {
                    w.engine = Engine::new();
                    held_since = None;
                }
                _ => {}
            }
            w.now += ms(rng.below(1500));

            let g = w.group().clone();
            let survivor = if g.active == "east" { "west" } else { "east" };
            let live: Vec<NodeId> = w.live.intersection(&w.voters).copied().collect();
            let down = live.iter().filter(|n| w.state.verdict(&g.active, **n) == Some(Verdict::Down)).count();
            let up = live.iter().filter(|n| w.state.verdict(survivor, **n) == Some(Verdict::Up)).count();
            let condition = down >= 2 && up >= 2;
            if condition {
                held_since.get_or_insert(w.now);
            } else {
                held_since = None;
            }

            let effects = w.step();
            for c in World::proposals(&effects) {
                if let Command::Failover { ref to, expected_epoch, .. } = c {
                    let ctx = format!("seed {seed} step {step} (replay: WITNESS_ENGINE_SEED={seed})");
                    failovers += 1;
                    assert!(condition, "{ctx}: failover without quorum evidence (down {down}, up {up})");
                    assert!(w.now - held_since.unwrap() >= HOLD, "{ctx}: failover before the hold-down");
                    assert_eq!(to, survivor, "{ctx}");
                    assert_eq!(expected_epoch, g.epoch, "{ctx}");
                    assert!(
                        !w.state.automation_off && !g.paused && g.spec.failover == FailoverMode::Automatic,
                        "{ctx}: gate ignored"
                    );
                }
                w.state.apply(c);
            }
            let g = w.group();
            assert!(g.active == "east" || g.active == "west", "seed {seed}: active {}", g.active);
            assert!(g.epoch >= last_epoch, "seed {seed}: epoch went back");
            if g.epoch != last_epoch {
                held_since = None;
            }
            last_epoch = g.epoch;
        }
    }
    eprintln!("{failovers} failovers checked over seeds {seeds:?}");
    // The walk must really exercise the failover path, or it proves nothing.
    assert!(failovers as u64 >= (seeds.end - seeds.start) / 4, "only {failovers} failovers in {seeds:?}");
}

#[test]
fn operator_failover_is_checked_against_the_same_evidence() {
    let mut w = World::new(FailoverMode::Manual);
    w.see("east", "DDU");
    w.see("west", "UUU");
    let plan = plan_operator_failover(&w.state, "app", "west", &w.voters, &w.live, None).unwrap();
    assert!(plan.all_pass(), "{plan:?}");
    assert_eq!((plan.from.as_str(), plan.expected_epoch), ("east", Epoch(1)));

    w.see("east", "UUU");
    let plan = plan_operator_failover(&w.state, "app", "west", &w.voters, &w.live, None).unwrap();
    let failed: Vec<&str> = plan.checks.iter().filter(|c| !c.passed).map(|c| c.gate.as_str()).collect();
    assert_eq!(failed, vec!["active_site_down"]);

    w.state.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
    assert!(matches!(
        plan_operator_failover(&w.state, "app", "west", &w.voters, &w.live, None),
        Err(crate::state::Rejection::AlreadyActive { .. })
    ));
    assert!(matches!(
        plan_operator_failover(&w.state, "app", "south", &w.voters, &w.live, None),
        Err(crate::state::Rejection::SiteNotInGroup { .. })
    ));
    assert!(matches!(
        plan_operator_failover(&w.state, "nope", "west", &w.voters, &w.live, None),
        Err(crate::state::Rejection::UnknownGroup { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Groups with site agents: leases, draining, the survivor's view and the RPO gate.

const LEASE: Duration = Duration::from_millis(1000);
const MARGIN: Duration = Duration::from_millis(100);

impl World {
    fn with_agents(replication: ReplicationMode, rpo: Duration) -> World {
        let mut w = World::new(FailoverMode::Automatic);
        let mut spec = w.group().spec.clone();
        spec.replication = replication;
        spec.rpo_ms = rpo.as_millis() as u64;
        spec.leases = Some(crate::state::LeaseTerms { lease_ms: 1000, margin_ms: 100 });
        w.state.apply(Command::SyncTopology(Topology {
            sites: ["east".into(), "west".into()].into(),
            groups: [("app".into(), spec)].into(),
            tuning: Default::default(),
        }));
        w
    }

    /// `site`'s agent heartbeats at the current time.
    fn heartbeat(&mut self, site: &str, peer_reachable: bool, report: GroupReport) -> super::leases::Assignment {
        let hb = Heartbeat { peer_reachable, groups: [("app".into(), report)].into(), ..Heartbeat::default() };
        let answer = self.ledger.heartbeat(self.now, site, &hb, &self.state);
        answer.groups["app"]
    }
}

fn in_sync(yes: bool) -> GroupReport {
    GroupReport { in_sync: Some(yes), ..GroupReport::default() }
}

/// Agents past the committed epoch are named by their last reports (the higher epoch of the
/// two sites'), and a site no longer once it reports an epoch not past the committed one: the
/// ledger keeps only these, so that a tick need not search every group's reports.
#[test]
fn agents_ahead_are_those_whose_last_report_is_past_the_committed_epoch() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    let at = |epoch: u64| GroupReport { epoch: Some(Epoch(epoch)), ..GroupReport::default() };
    let ahead = |w: &World| w.ledger.agents_ahead("app", w.group());
    let committed = w.group().epoch.0;
    w.heartbeat("east", true, at(committed));
    assert_eq!(ahead(&w), None);
    w.heartbeat("east", true, at(committed + 2));
    w.heartbeat("west", true, at(committed + 5));
    assert_eq!(ahead(&w), Some(("west".into(), Epoch(committed + 5))));
    w.heartbeat("west", true, at(committed));
    assert_eq!(ahead(&w), Some(("east".into(), Epoch(committed + 2))), "west caught up: east is still ahead");
    w.heartbeat("east", true, GroupReport::default());
    assert_eq!(ahead(&w), None, "neither reports an epoch past the committed one");
}

/// The active site, active at the group's epoch by its own word, holding no peer lease: named
/// with the agent's reason; not while it holds one, not for another epoch, not once silent for
/// a lease, not while the group drains.
#[test]
fn an_active_site_without_a_peer_lease_is_named_with_its_agents_reason() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    let active = |peer_lease_ms: u64, epoch: u64| GroupReport {
        role: Some(Role::Active),
        epoch: Some(Epoch(epoch)),
        peer_lease_ms,
        ..GroupReport::default()
    };
    let without = |w: &World| w.ledger.without_peer_lease("app", w.group(), w.now);
    w.heartbeat("east", true, active(0, 1));
    assert_eq!(without(&w).as_deref(), Some("site east's agent reports no peer lease and no failed request"));
    let hb = Heartbeat {
        peer_reachable: true,
        peer_problem: Some("peer 10.2.0.5:7511: TLS handshake failed".into()),
        groups: [("app".into(), active(0, 1))].into(),
    };
    w.ledger.heartbeat(w.now, "east", &hb, &w.state);
    assert_eq!(without(&w).as_deref(), Some("peer 10.2.0.5:7511: TLS handshake failed"));
    w.heartbeat("east", true, active(800, 1));
    assert_eq!(without(&w), None, "it holds one");
    w.heartbeat("east", true, active(0, 2));
    assert_eq!(without(&w), None, "not the group's epoch: agents_ahead says what is wrong");
    w.heartbeat("east", true, active(0, 1));
    w.now += LEASE + Duration::from_millis(1);
    assert_eq!(without(&w), None, "silent for a lease: its word is history");
    w.heartbeat("east", true, active(0, 1));
    w.state.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
    assert!(w.group().draining);
    w.heartbeat(
        "west",
        true,
        GroupReport { role: Some(Role::Active), epoch: Some(Epoch(2)), ..GroupReport::default() },
    );
    assert_eq!(without(&w), None, "no peer lease is granted while the group drains");
}

#[test]
fn the_witness_answers_each_site_its_role_and_leases_only_the_promoted_active_site() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    let east = w.heartbeat("east", true, GroupReport::default());
    assert_eq!((east.role, east.epoch, east.lease_ms), (Role::Active, Epoch(1), Some(1000)));
    let west = w.heartbeat("west", true, GroupReport::default());
    assert_eq!((west.role, west.lease_ms, west.peer_lease_ms, west.margin_ms), (Role::Standby, None, 1000, 100));

    w.state.apply(Command::Failover {
        group: "app".into(),
        to: "west".into(),
        expected_epoch: Epoch(1),
        reason: "test".into(),
        quorum_of: None,
        automatic: false,
        facts: Default::default(),
        past: None,
    });
    assert!(w.group().draining);
    w.now = ms(300);
    let east = w.heartbeat("east", true, GroupReport::default());
    assert_eq!((east.role, east.epoch, east.lease_ms), (Role::Fenced, Epoch(2), None));
    let west = w.heartbeat("west", true, GroupReport::default());
    assert_eq!((west.role, west.epoch, west.lease_ms), (Role::Draining, Epoch(2), None));
    // The last grant was at 0: no lease is granted while draining.
    assert_eq!(w.ledger.leases_expire_at("app", w.group()), LEASE + MARGIN);

    w.state.apply(Command::Promote { group: "app".into(), expected_epoch: Epoch(2) });
    let west = w.heartbeat("west", true, GroupReport::default());
    assert_eq!((west.role, west.lease_ms), (Role::Active, Some(1000)));
    let east = w.heartbeat("east", true, GroupReport::default());
    assert_eq!(east.role, Role::Standby, "a returning site stays standby");
}

#[test]
fn no_failover_while_the_survivor_still_reaches_the_failed_site() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    w.see("east", "DDD");
    w.see("west", "UUU");
    for t in [0, 1000, 2000, 5000, 10_000] {
        w.now = ms(t);
        w.heartbeat("west", true, in_sync(true));
        let e = w.step();
        assert!(World::proposals(&e).is_empty(), "at {t} ms: {e:?}");
        if t == 0 {
            assert_eq!(
                World::assessment(&e),
                Some(Assessment::PathBroken { failed: "east".into(), survivor: "west".into() })
            );
        }
    }
    // West loses sight of east too: now the hold-down starts.
    w.now = ms(10_100);
    w.heartbeat("west", false, in_sync(false));
    assert!(matches!(World::assessment(&w.step()), Some(Assessment::HoldingDown { .. })));
    w.now = ms(10_100) + HOLD;
    w.heartbeat("west", false, in_sync(false));
    // In sync 100 ms before the failure: the RPO gate passes.
    assert!(World::proposals(&w.step()).iter().any(failover_to("west", 1)));
}

#[test]
fn the_rpo_gate_and_a_silent_survivor_need_approval() {
    const H: u64 = 3_600_000;
    // (label, replication, rpo, west's reports as (at ms, report), expected gates, exposure ms)
    type Case = (&'static str, ReplicationMode, u64, Vec<(u64, GroupReport)>, Vec<Gate>, Option<u64>);
    let age = |ms: u64| GroupReport { recovery_point_age_ms: Some(ms), ..GroupReport::default() };
    let cases: Vec<Case> = vec![
        (
            "sync, in sync up to the failure",
            ReplicationMode::Sync,
            0,
            vec![(4000, in_sync(true)), (4900, in_sync(false))],
            vec![],
            None,
        ),
        (
            "sync, never in sync",
            ReplicationMode::Sync,
            0,
            vec![(4000, in_sync(false)), (4900, in_sync(false))],
            vec![Gate::Rpo],
            None,
        ),
        (
            "sync, out of sync for long before the failure",
            ReplicationMode::Sync,
            0,
            vec![(0, in_sync(true)), (100, in_sync(false)), (4900, in_sync(false))],
            vec![Gate::Rpo],
            // What it lacked at the failure (5000 ms), not at the decision: nothing was written
            // after the failure.
            Some(5000),
        ),
        (
            // One meaning of rpo for every group: a sync group may lose what its rpo allows.
            "sync, out of sync for less than its rpo",
            ReplicationMode::Sync,
            10_000,
            vec![(0, in_sync(true)), (100, in_sync(false)), (4900, in_sync(false))],
            vec![],
            None,
        ),
        ("async, recovery point within the RPO", ReplicationMode::Async, 6 * H, vec![(4900, age(H))], vec![], None),
        (
            "async, recovery point older than the RPO",
            ReplicationMode::Async,
            6 * H,
            vec![(4900, age(7 * H))],
            vec![Gate::Rpo],
            // Its recovery point's age at the failure (5000 ms), 100 ms after the report.
            Some(7 * H + 100),
        ),
        (
            "async, never reported",
            ReplicationMode::Async,
            6 * H,
            vec![(4900, GroupReport::default())],
            vec![Gate::Rpo],
            None,
        ),
        (
            "survivor's agent silent for longer than a lease",
            ReplicationMode::Sync,
            0,
            vec![(4000, in_sync(true))],
            vec![Gate::SurvivorAgentSilent],
            None,
        ),
    ];
    for (label, replication, rpo, reports, gates, exposure) in cases {
        let mut w = World::with_agents(replication, ms(rpo));
        w.see("west", "UUU");
        let mut last = GroupReport::default();
        for (at, report) in reports {
            w.now = ms(at);
            w.heartbeat("west", false, report.clone());
            last = report;
        }
        // A quorum sees east down from 5000 ms; the hold-down ends at 7000 ms.
        w.see("east", "DDD");
        w.at(ms(5000));
        w.now = ms(5000) + HOLD;
        if !gates.contains(&Gate::SurvivorAgentSilent) {
            // The survivor's agent keeps reporting, no longer in sync, its recovery point
            // (if any) older by the time passed since its last report.
            let older = last.recovery_point_age_ms.map(|age| age + 2100);
            w.heartbeat("west", false, GroupReport { in_sync: None, recovery_point_age_ms: older, ..last });
        }
        let e = w.step();
        if gates.is_empty() {
            assert!(World::proposals(&e).iter().any(failover_to("west", 1)), "{label}: {e:?}");
            continue;
        }
        assert!(World::proposals(&e).is_empty(), "{label}: {e:?}");
        match World::assessment(&e) {
            Some(Assessment::NeedsApproval { gates: g, rpo_exposure_ms, .. }) => {
                assert_eq!((g, rpo_exposure_ms.filter(|_| exposure.is_some())), (gates, exposure), "{label}")
            }
            other => panic!("{label}: {other:?}"),
        }
    }
}

#[test]
fn a_failover_drains_then_promotes_once_leases_are_out_and_the_survivor_drained() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    w.see("west", "UUU");
    // East's last lease: granted at 900 ms. East dies; a quorum sees it from 1000 ms.
    w.now = ms(900);
    w.heartbeat("east", true, GroupReport::default());
    w.heartbeat("west", true, in_sync(true));
    w.see("east", "DDD");
    w.now = ms(1000);
    w.heartbeat("west", false, in_sync(false));
    w.step();
    w.now = ms(1000) + HOLD;
    w.heartbeat("west", false, in_sync(false));
    let p = World::proposals(&w.step());
    assert!(p.iter().any(failover_to("west", 1)), "{p:?}");
    let draining = w.state.apply(p[0].clone());
    assert_eq!(
        draining,
        Response::Activated { group: "app".into(), active: "west".into(), epoch: Epoch(2), draining: true }
    );
    let waiting = |for_: DrainWait| {
        Some(Assessment::Draining { from: "east".into(), to: "west".into(), epoch: Epoch(2), waiting_for: for_ })
    };
    // The last grant + lease + margin is 2000 ms, already past: now the survivor's agent.
    let e = w.at(ms(3000));
    assert_eq!(World::assessment(&e), waiting(DrainWait::AgentDrained));
    assert!(World::proposals(&e).is_empty());
    // A drained report for another epoch does not count.
    w.heartbeat("west", false, GroupReport { epoch: Some(Epoch(1)), drained: true, ..GroupReport::default() });
    assert!(World::proposals(&w.at(ms(3050))).is_empty());
    w.heartbeat("west", false, GroupReport { epoch: Some(Epoch(2)), drained: true, ..GroupReport::default() });
    let e = w.at(ms(3100));
    assert_eq!(World::proposals(&e), vec![Command::Promote { group: "app".into(), expected_epoch: Epoch(2) }]);
    assert_eq!(World::assessment(&e), Some(Assessment::Promoting { site: "west".into(), epoch: Epoch(2) }));
    assert!(matches!(w.state.apply(World::proposals(&e)[0].clone()), Response::Promoted { .. }));
    assert!(!w.group().draining);
}

#[test]
fn a_new_leader_waits_a_full_lease_from_its_start_before_promoting() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    w.state.apply(Command::Failover {
        group: "app".into(),
        to: "west".into(),
        expected_epoch: Epoch(1),
        reason: "operator".into(),
        quorum_of: None,
        automatic: false,
        facts: Default::default(),
        past: None,
    });
    // A leader that starts at 5000 ms knows nothing of earlier grants.
    w.engine = Engine::new();
    w.ledger = Ledger::new(ms(5000));
    w.now = ms(5000);
    w.heartbeat("west", false, GroupReport { epoch: Some(Epoch(2)), drained: true, ..GroupReport::default() });
    let e = w.at(ms(5000));
    assert!(matches!(World::assessment(&e), Some(Assessment::Draining { waiting_for: DrainWait::WitnessLeases, .. })));
    assert!(World::proposals(&w.at(ms(6099))).is_empty());
    assert_eq!(World::proposals(&w.at(ms(6100))).len(), 1, "lease + margin after the leader's start");
}

#[test]
fn a_shortened_lease_never_shortens_the_wait_of_a_new_leader() {
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    let mut spec = w.group().spec.clone();
    spec.leases = Some(crate::state::LeaseTerms { lease_ms: 200, margin_ms: 20 });
    w.state.apply(Command::SyncTopology(Topology {
        sites: ["east".into(), "west".into()].into(),
        groups: [("app".into(), spec)].into(),
        tuning: Default::default(),
    }));
    w.state.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
    let ledger = Ledger::new(ms(0));
    assert_eq!(ledger.leases_expire_at("app", w.group()), LEASE + MARGIN);
}

#[test]
fn the_standby_falling_behind_its_rpo_objective_is_journaled_once_each_way() {
    const H: u64 = 3_600_000;
    let mut w = World::with_agents(ReplicationMode::Async, Duration::from_millis(6 * H));
    let rpo = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Journal { assessment, .. } if assessment.kind().starts_with("rpo_") => {
                    Some(assessment.kind().to_string())
                }
                _ => None,
            })
            .collect()
    };
    let age = |ms: u64| GroupReport { recovery_point_age_ms: Some(ms), ..GroupReport::default() };
    w.see("east", "UUU");
    w.see("west", "UUU");
    assert!(rpo(&w.at(ms(0))).is_empty(), "no report yet: nothing said");
    w.heartbeat("west", true, age(5 * H));
    assert!(rpo(&w.at(ms(100))).is_empty(), "within the objective from the start: nothing to say");
    // The 6-hourly run is missed: the recovery point ages past 6 h.
    w.heartbeat("west", true, age(6 * H + 1000));
    assert_eq!(rpo(&w.at(ms(200))), ["rpo_at_risk"]);
    assert!(rpo(&w.at(ms(300))).is_empty(), "said once");
    w.heartbeat("west", true, age(60_000));
    assert_eq!(rpo(&w.at(ms(400))), ["rpo_within"]);

    // Synchronous: out of sync for longer than in_sync_within.
    let mut w = World::with_agents(ReplicationMode::Sync, Duration::ZERO);
    w.heartbeat("west", true, in_sync(true));
    assert!(rpo(&w.at(ms(0))).is_empty());
    w.now = ms(100);
    w.heartbeat("west", true, in_sync(false));
    assert!(rpo(&w.at(IN_SYNC_WITHIN)).is_empty(), "not yet beyond in_sync_within");
    assert_eq!(rpo(&w.at(IN_SYNC_WITHIN + ms(1))), ["rpo_at_risk"]);
    // One objective, the group's rpo (0s here), beside one exposure: what a failover now loses.
    assert_eq!(super::rpo_objective(w.group()), Some(Duration::ZERO));
    let exposure = w.ledger.rpo_exposure("app", w.group(), IN_SYNC_WITHIN, w.now);
    assert_eq!(exposure, Some(IN_SYNC_WITHIN + ms(1)), "out of sync since 0");
    w.heartbeat("west", true, in_sync(true));
    assert_eq!(w.ledger.rpo_exposure("app", w.group(), IN_SYNC_WITHIN, w.now), Some(Duration::ZERO), "in sync: none");
}
