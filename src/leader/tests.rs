//! The leader's rules, each with the exact effects it must produce. The engine's own rules are
//! tested in `engine::tests`; here, what the leader adds around them: readiness and cut-off
//! gating, topology registration once per term, the journal entry and detection facts of a
//! decision, plan attempts started, kept and aborted in order, lease grants and operator orders.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{FailoverMode, ReplicationMode};
use crate::protocol::{GroupReport, Heartbeat, Role};
use crate::state::plan::{StepOutcome, StepSpec};
use crate::state::{Epoch, GroupSpec, LeaseTerms, NodeId, Response, Verdict, LOG_FORMAT};

const HOLD: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec(leases: Option<LeaseTerms>, steps: &[&str]) -> GroupSpec {
    GroupSpec {
        primary: "east".into(),
        secondary: "west".into(),
        replication: ReplicationMode::Sync,
        failover: FailoverMode::Automatic,
        rto_ms: 300_000,
        rpo_ms: 0,
        leases,
        steps: steps
            .iter()
            .map(|n| StepSpec {
                name: n.to_string(),
                kind: "command".into(),
                retries: 0,
                continue_on_failure: false,
                ttl: None,
            })
            .collect(),
    }
}

struct World {
    state: State,
    contact: Contact,
    failing_since: BTreeMap<SiteId, Duration>,
    leader: Leader,
    now: Duration,
}

impl World {
    fn new(leases: Option<LeaseTerms>, steps: &[&str]) -> World {
        World::of(&["app".into()], leases, steps)
    }

    /// `groups`, each on east (primary) and west.
    fn of(groups: &[GroupId], leases: Option<LeaseTerms>, steps: &[&str]) -> World {
        let topology = Topology {
            sites: ["east".into(), "west".into()].into(),
            groups: groups.iter().map(|g| (g.clone(), spec(leases, steps))).collect(),
            tuning: Default::default(),
        };
        let timing =
            GroupTiming { hold_down: HOLD, block_after_failover: Duration::from_secs(60), in_sync_within: ms(500) };
        let config = LeaderConfig {
            node: NodeId(1),
            timing: groups.iter().map(|g| (g.clone(), timing)).collect(),
            topology: topology.clone(),
            live_within: ms(1000),
            cut_off_after: ms(666),
            readiness_interval: BTreeMap::new(),
            drill_budget: BTreeMap::new(),
            repair_drift: BTreeSet::new(),
        };
        let mut state = State::default();
        state.apply(Command::SyncTopology(topology));
        World {
            state,
            contact: Contact {
                voters: [1, 2, 3].map(NodeId).into(),
                acked_ago: [(NodeId(2), ms(10)), (NodeId(3), ms(10))].into(),
                quorum_acked_ago: Some(ms(10)),
                formats: [(NodeId(2), LOG_FORMAT), (NodeId(3), LOG_FORMAT)].into(),
            },
            failing_since: BTreeMap::new(),
            leader: Leader::new(Arc::new(config), 7, Duration::ZERO, 1),
            now: Duration::ZERO,
        }
    }

    fn tick_at(&mut self, now: Duration, ready: bool) -> Vec<Effect> {
        self.now = now;
        let t = Tick { now, state: &self.state, contact: &self.contact, ready, failing_since: &self.failing_since };
        self.leader.tick(&t)
    }

    fn tick(&mut self, now: Duration) -> Vec<Effect> {
        self.tick_at(now, true)
    }

    fn see(&mut self, site: &str, verdicts: [Option<Verdict>; 3]) {
        for (i, verdict) in verdicts.into_iter().enumerate() {
            self.state.apply(Command::ReportVerdict { node: NodeId(i as u64 + 1), site: site.into(), verdict });
        }
    }

    fn apply(&mut self, command: Command) -> Response {
        self.state.apply(command)
    }
}

/// The commands proposed, batches opened, journal entries left out.
fn proposals(effects: &[Effect]) -> Vec<Command> {
    proposed(effects).into_iter().filter(|c| !matches!(c, Command::Journal { .. })).collect()
}

/// Every command proposed, batches opened.
fn proposed(effects: &[Effect]) -> Vec<Command> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Propose(c) => Some(c.commands().to_vec()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn attempt(step: &str, epoch: u64, n: u32) -> Attempt {
    Attempt { group: "app".into(), epoch: Epoch(epoch), step: step.into(), attempt: n }
}

const UP: Option<Verdict> = Some(Verdict::Up);
const DOWN: Option<Verdict> = Some(Verdict::Down);

#[test]
fn the_topology_is_proposed_once_per_term_until_it_settles() {
    let mut w = World::new(None, &[]);
    w.state = State::default();
    let sync = Command::SyncTopology(w.leader.config().topology.clone());
    assert_eq!(proposals(&w.tick(ms(0))), vec![sync.clone()]);
    assert!(proposals(&w.tick(ms(50))).is_empty(), "not again while in flight");
    w.leader.proposal_settled(&sync, false);
    assert_eq!(proposals(&w.tick(ms(100))), vec![sync.clone()], "lost: proposed again");
    w.leader.proposal_settled(&sync, true);
    assert!(proposals(&w.tick(ms(150))).is_empty(), "committed (even if part was refused): settled for the term");
    // A matching state settles it without a proposal.
    let mut w = World::new(None, &[]);
    assert!(!proposals(&w.tick(ms(0))).contains(&sync));
}

/// Plan readiness: a check is handed out soon after the leadership starts, one at a time; its
/// result is kept for status, and a step that turned not ready is journaled by the next tick
/// (once, not on every check).
#[test]
fn plan_checks_are_handed_out_and_a_step_turning_not_ready_is_journaled_once() {
    let mut w = World::new(None, &["dns"]);
    let mut config = w.leader.config().clone();
    config.readiness_interval = [("app".into(), Duration::from_secs(60))].into();
    w.leader = Leader::new(Arc::new(config), 7, Duration::ZERO, 1);
    let checks = |effects: &[Effect]| -> Vec<Effect> {
        effects.iter().filter(|e| matches!(e, Effect::CheckPlan { .. })).cloned().collect()
    };
    let first = (0..=200).map(|i| ms(i * 50)).find(|t| !checks(&w.tick(*t)).is_empty());
    let first = first.expect("a check within 10 s of the leadership's start");
    assert!(checks(&w.tick(first + ms(50))).is_empty(), "one check at a time");
    assert!(!w.tick_at(first + ms(100), false).iter().any(|e| matches!(e, Effect::CheckPlan { .. })));
    let failed = readiness::StepCheck {
        step: "dns".into(),
        kind: "command".into(),
        ok: false,
        retryable: false,
        detail: "TSIG key refused (BADKEY)".into(),
        target: None,
    };
    let result = readiness::PlanReadiness { checked_at_ms: 5, epoch: Epoch(1), steps: vec![failed.clone()] };
    w.leader.plan_checked(&"app".into(), result.clone(), first + ms(120));
    assert_eq!(w.leader.readiness()[&GroupId::from("app")], result);
    let journaled: Vec<(String, String)> = w
        .tick(first + ms(150))
        .into_iter()
        .filter_map(|e| match e {
            Effect::Journal { assessment, .. } => Some((assessment.kind().to_string(), assessment.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(journaled.len(), 1, "{journaled:?}");
    assert_eq!(journaled[0].0, "step_not_ready");
    assert!(journaled[0].1.contains("dns") && journaled[0].1.contains("BADKEY"), "{journaled:?}");
    assert!(!w.tick(first + ms(200)).iter().any(|e| matches!(e, Effect::Journal { .. })), "said once");
}

#[test]
fn decisions_for_many_groups_in_one_look_commit_in_a_few_batches_and_only_when_every_voter_reads_them() {
    let groups: Vec<GroupId> = (0..300).map(|i| GroupId::from(format!("g{i:03}"))).collect();
    let mass_failover = |formats: &[(u64, u32)]| {
        let mut w = World::of(&groups, None, &[]);
        w.contact.formats = formats.iter().map(|(id, f)| (NodeId(*id), *f)).collect();
        w.see("west", [UP, UP, UP]);
        w.see("east", [DOWN, DOWN, DOWN]);
        w.tick(ms(0));
        w.tick(HOLD + ms(1))
    };
    let effects = mass_failover(&[(2, LOG_FORMAT), (3, LOG_FORMAT)]);
    let entries: Vec<&Command> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Propose(c) => Some(c),
            _ => None,
        })
        .collect();
    // Each group's journal entry and failover: 600 commands in entries of at most BATCH_MOST.
    assert_eq!(entries.len(), 600usize.div_ceil(BATCH_MOST), "{entries:?}");
    assert!(entries.iter().all(|c| matches!(c, Command::Batch(b) if b.len() <= BATCH_MOST)));
    let failovers = proposals(&effects);
    assert_eq!(failovers.len(), 300);
    assert!(failovers.iter().all(|c| matches!(c, Command::Failover { .. })), "{failovers:?}");
    // The proposals come after every other effect of the look, in their order.
    assert!(effects.iter().skip_while(|e| !matches!(e, Effect::Propose(_))).all(|e| matches!(e, Effect::Propose(_))));
    // With a voter of an older version (format 1), or one not heard from yet: one command per
    // entry.
    for formats in [&[(2, LOG_FORMAT), (3, 1)][..], &[(2, LOG_FORMAT)]] {
        let effects = mass_failover(formats);
        assert!(!effects.iter().any(|e| matches!(e, Effect::Propose(Command::Batch(_)))), "{formats:?}");
        assert_eq!(proposals(&effects).len(), 300, "{formats:?}");
    }
}

#[test]
fn a_leader_that_is_not_ready_decides_and_starts_nothing() {
    let mut w = World::new(None, &["dns"]);
    w.see("east", [DOWN, DOWN, DOWN]);
    w.see("west", [UP, UP, UP]);
    assert_eq!(w.tick_at(ms(0), false), vec![]);
    assert_eq!(w.tick_at(HOLD * 5, false), vec![]);
}

#[test]
fn a_decision_carries_its_evidence_and_detection_time() {
    let mut w = World::new(None, &[]);
    w.see("east", [DOWN, DOWN, None]);
    w.see("west", [UP, UP, UP]);
    w.contact.acked_ago.remove(&NodeId(3));
    w.failing_since.insert("east".into(), ms(200));
    let first = w.tick(ms(1000));
    let journal = proposed(&first).into_iter().find_map(|c| match c {
        Command::Journal { kind, evidence, .. } if kind == "holding_down" => Some(evidence),
        _ => None,
    });
    let evidence = journal.expect("holding down is journaled");
    assert_eq!(evidence["east"], "node1=down node2=down node3=-", "node 3 is not live: its verdict does not count");
    assert_eq!(evidence["west"], "node1=up node2=up node3=-");
    let failover = proposals(&w.tick(ms(1000) + HOLD));
    let [Command::Failover { to, quorum_of, automatic: true, facts, expected_epoch, .. }] = failover.as_slice() else {
        panic!("one automatic failover, got {failover:?}");
    };
    assert_eq!((to.as_str(), *expected_epoch), ("west", Epoch(1)));
    assert_eq!(quorum_of, &Some(BTreeSet::from([1, 2, 3].map(NodeId))));
    assert_eq!(facts.detected_after_ms, Some(1800), "from the first failed probe at 200 ms to 2000 ms");
    assert_eq!(facts.rpo_ms, None, "no agents: unknown");
}

#[test]
fn steps_start_once_and_an_aborted_epoch_stops_before_the_newer_starts() {
    let mut w = World::new(None, &["dns", "notify"]);
    let moved = w.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
    assert!(matches!(moved, Response::Activated { .. }), "{moved:?}");
    let effects = w.tick(ms(0));
    let starts: Vec<&Effect> = effects.iter().filter(|e| matches!(e, Effect::Start { .. })).collect();
    let [Effect::Start { attempt: a, context }] = starts.as_slice() else { panic!("{effects:?}") };
    assert_eq!(a, &attempt("dns", 2, 1));
    assert_eq!((context.to.as_str(), context.from.as_str(), context.epoch), ("west", "east", 2));
    assert!(w.tick(ms(50)).iter().all(|e| !matches!(e, Effect::Start { .. })), "under way: not started twice");
    // A newer failover: the older attempt is aborted, then the newer plan's first step starts.
    w.apply(Command::Activate { group: "app".into(), site: "east".into(), expected_epoch: Epoch(2) });
    let journal = |e: &Effect| matches!(e, Effect::Journal { .. } | Effect::Propose(Command::Journal { .. }));
    let effects: Vec<Effect> = w.tick(ms(100)).into_iter().filter(|e| !journal(e)).collect();
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert_eq!(effects[0], Effect::Abort(attempt("dns", 2, 1)));
    assert!(matches!(&effects[1], Effect::Start { attempt: a, .. } if *a == attempt("dns", 3, 1)));
    // Once it ends and its result is committed, the next step starts.
    w.apply(attempt("dns", 3, 1).started());
    w.apply(attempt("dns", 3, 1).finished(StepOutcome::Done { detail: "ok".into() }));
    w.leader.attempt_ended(&attempt("dns", 3, 1));
    let starts: Vec<Attempt> = w
        .tick(ms(150))
        .into_iter()
        .filter_map(|e| match e {
            Effect::Start { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(starts, vec![attempt("notify", 3, 1)]);
}

#[test]
fn a_leader_cut_off_from_its_quorum_aborts_every_attempt_and_starts_none() {
    let mut w = World::new(None, &["dns"]);
    w.apply(Command::Activate { group: "app".into(), site: "west".into(), expected_epoch: Epoch(1) });
    assert!(w.tick(ms(0)).iter().any(|e| matches!(e, Effect::Start { .. })));
    w.contact.quorum_acked_ago = Some(ms(667));
    // Still ready (acknowledged within the election timeout), but cut off.
    let effects = w.tick(ms(700));
    assert_eq!(effects.iter().filter(|e| matches!(e, Effect::Start { .. })).count(), 0, "{effects:?}");
    assert_eq!(
        effects.iter().filter(|e| matches!(e, Effect::Abort(_))).collect::<Vec<_>>(),
        vec![&Effect::Abort(attempt("dns", 2, 1))]
    );
    assert!(w.leader.under_way().is_empty());
    // Back in touch: the step runs again (it is recorded as started by nobody living).
    w.contact.quorum_acked_ago = Some(ms(10));
    assert!(w
        .tick(ms(750))
        .iter()
        .any(|e| matches!(e, Effect::Start { attempt: a, .. } if *a == attempt("dns", 2, 1))));
}

#[test]
fn leases_go_to_the_active_site_and_a_promotion_waits_a_lease_from_the_leaders_start() {
    let leases = LeaseTerms { lease_ms: 1000, margin_ms: 100 };
    let mut w = World::new(Some(leases), &[]);
    let hb = |role: Role, drained: bool, epoch: u64| Heartbeat {
        peer_reachable: false,
        groups: [(
            "app".into(),
            GroupReport {
                role: Some(role),
                epoch: Some(Epoch(epoch)),
                in_sync: Some(true),
                drained,
                ..GroupReport::default()
            },
        )]
        .into(),
        ..Heartbeat::default()
    };
    let ok = Some(Confirmed { term: 7 });
    for unconfirmed in [None, Some(Confirmed { term: 6 })] {
        let refused = w.leader.heartbeat(ms(100), "east", &hb(Role::Active, false, 1), &w.state, unconfirmed);
        assert_eq!(refused, None, "without a confirmation of its own term, a leader answers nothing");
    }
    let east = w.leader.heartbeat(ms(100), "east", &hb(Role::Active, false, 1), &w.state, ok).unwrap();
    assert_eq!(east.groups["app"].lease_ms, Some(1000));
    assert_eq!(east.groups["app"].role, Role::Active);
    let west = w.leader.heartbeat(ms(100), "west", &hb(Role::Standby, false, 1), &w.state, ok).unwrap();
    assert_eq!((west.groups["app"].role, west.groups["app"].lease_ms), (Role::Standby, None));
    // An operator's forced failover: west drains; no one gets a lease meanwhile.
    w.apply(Command::Failover {
        group: "app".into(),
        to: "west".into(),
        expected_epoch: Epoch(1),
        reason: "drill".into(),
        quorum_of: None,
        automatic: false,
        facts: DecisionFacts::default(),
        past: None,
    });
    let east = w.leader.heartbeat(ms(200), "east", &hb(Role::Active, false, 1), &w.state, ok).unwrap();
    assert_eq!((east.groups["app"].role, east.groups["app"].lease_ms), (Role::Fenced, None));
    let west = w.leader.heartbeat(ms(200), "west", &hb(Role::Draining, true, 2), &w.state, ok).unwrap();
    assert_eq!(west.groups["app"].role, Role::Draining);
    let promote = Command::Promote { group: "app".into(), expected_epoch: Epoch(2) };
    assert!(!proposals(&w.tick(ms(1199))).contains(&promote), "east's lease from 100 ms runs to 1100 ms + margin");
    assert_eq!(proposals(&w.tick(ms(1200))), vec![promote]);
}

#[test]
fn operator_orders_are_checked_against_the_evidence() {
    let mut w = World::new(None, &[]);
    w.see("east", [DOWN, DOWN, UP]);
    w.see("west", [UP, UP, UP]);
    w.failing_since.insert("east".into(), ms(100));
    let order = |to: Option<&str>, dry_run: bool, force: bool| FailoverOrder {
        group: "app".into(),
        to: to.map(SiteId::from),
        reason: "drill".into(),
        dry_run,
        force,
        drill: None,
    };
    fn tick(w: &World) -> Tick<'_> {
        Tick { now: ms(600), state: &w.state, contact: &w.contact, ready: true, failing_since: &w.failing_since }
    }
    let t = tick(&w);
    assert!(matches!(w.leader.order(&order(Some("west"), true, false), &t), Ok(Order::DryRun { allowed: true, .. })));
    let Ok(Order::Commit { command, .. }) = w.leader.order(&order(Some("west"), false, false), &t) else { panic!() };
    let Command::Failover { quorum_of, automatic, facts, reason, .. } = command else { panic!() };
    assert_eq!((quorum_of, automatic, reason.as_str()), (Some([1, 2, 3].map(NodeId).into()), false, "operator: drill"));
    assert_eq!(facts.detected_after_ms, Some(500));
    // Without the evidence it is refused, unless forced (and then not checked at commit).
    w.see("east", [DOWN, UP, UP]);
    let t = tick(&w);
    assert!(matches!(w.leader.order(&order(Some("west"), false, false), &t), Ok(Order::Refused { .. })));
    let Ok(Order::Commit { command: Command::Failover { quorum_of: None, reason, .. }, .. }) =
        w.leader.order(&order(Some("west"), false, true), &t)
    else {
        panic!("a forced order commits without its evidence checked")
    };
    assert!(reason.ends_with("(forced past failed checks)"), "{reason}");
    assert!(
        matches!(w.leader.order(&order(None, false, false), &t), Err(Rejection::AlreadyActive { .. })),
        "a failback to the active primary"
    );
    let unknown = FailoverOrder { group: "nope".into(), ..order(None, false, false) };
    assert!(matches!(w.leader.order(&unknown, &t), Err(Rejection::UnknownGroup { .. })));
}

#[test]
fn agents_ahead_of_a_restored_witness_stop_the_group_until_a_forced_order_takes_the_epoch_past_them() {
    // The witness was restored to epoch 1; the agents went on to epoch 5 with west active.
    let leases = LeaseTerms { lease_ms: 1000, margin_ms: 100 };
    let mut w = World::new(Some(leases), &[]);
    let report = |role: Role| Heartbeat {
        peer_reachable: false,
        groups: [("app".into(), GroupReport { role: Some(role), epoch: Some(Epoch(5)), ..GroupReport::default() })]
            .into(),
        ..Heartbeat::default()
    };
    let ok = Some(Confirmed { term: 7 });
    w.leader.heartbeat(ms(100), "east", &report(Role::Fenced), &w.state, ok).unwrap();
    w.leader.heartbeat(ms(100), "west", &report(Role::Active), &w.state, ok).unwrap();
    assert_eq!(w.leader.agents(&w.state, ms(100))["app"].agents_ahead, Some(Epoch(5)));
    // Even with east down and west up, nothing moves; the journal says why, once.
    w.see("east", [DOWN, DOWN, DOWN]);
    w.see("west", [UP, UP, UP]);
    let journaled = |effects: &[Effect]| {
        effects.iter().any(|e| matches!(e, Effect::Journal { assessment: Assessment::AgentsAhead { .. }, .. }))
    };
    let first = w.tick(ms(200));
    assert!(journaled(&first) && proposals(&first).is_empty(), "{first:?}");
    let later = w.tick(ms(200) + HOLD * 5);
    assert!(!journaled(&later) && proposals(&later).is_empty(), "{later:?}");
    // An unforced order is refused by the check that names the agents' epoch; a forced one
    // re-asserts even the active site, past epoch 5.
    let order = |to: &str, force: bool| FailoverOrder {
        group: "app".into(),
        to: Some(to.into()),
        reason: "restore".into(),
        dry_run: false,
        force,
        drill: None,
    };
    let t = Tick { now: ms(300), state: &w.state, contact: &w.contact, ready: true, failing_since: &w.failing_since };
    let Ok(Order::Refused { plan }) = w.leader.order(&order("west", false), &t) else { panic!("refused") };
    let check = plan.checks.iter().find(|c| c.gate == "agents_not_ahead").expect("the check");
    assert!(!check.passed && check.detail.contains("holds epoch 5"), "{check:?}");
    let Ok(Order::Commit { command, .. }) = w.leader.order(&order("east", true), &t) else { panic!("forced") };
    assert!(matches!(command, Command::Failover { past: Some(Epoch(5)), .. }), "{command:?}");
    let applied = w.apply(command);
    assert!(
        matches!(applied, Response::Activated { epoch: Epoch(6), ref active, .. } if active == "east"),
        "{applied:?}"
    );
}

/// A drill order is checked (the survivor's copy unreported: refused, that check named), then
/// committed; after its leg and its hold on this leader's clock the way back is proposed once
/// (again if lost); when it cannot return (a site down) for the patience after the hold, the
/// drill ends failed.
#[test]
fn a_drill_is_checked_then_brought_back_after_its_hold_or_ended_when_it_cannot_return() {
    let mut w = World::new(Some(LeaseTerms { lease_ms: 1000, margin_ms: 100 }), &[]);
    w.see("east", [UP, UP, UP]);
    w.see("west", [UP, UP, UP]);
    let request = DrillRequest { hold_ms: 2000, back: true, by: None, requested_at_ms: 5 };
    let order = FailoverOrder {
        group: "app".into(),
        to: None,
        reason: "CHG-7".into(),
        dry_run: false,
        force: false,
        drill: Some(request),
    };
    let in_sync = |role: Role, epoch: u64| Heartbeat {
        groups: [(
            "app".into(),
            GroupReport { role: Some(role), epoch: Some(Epoch(epoch)), in_sync: Some(true), ..GroupReport::default() },
        )]
        .into(),
        ..Heartbeat::default()
    };
    let ok = Some(Confirmed { term: 7 });
    let tick = |w: &World, now| -> Result<Order, Rejection> {
        let t = Tick { now, state: &w.state, contact: &w.contact, ready: true, failing_since: &w.failing_since };
        w.leader.order(&order, &t)
    };
    let Ok(Order::Refused { plan }) = tick(&w, ms(100)) else { panic!("refused") };
    let failed: Vec<&str> = plan.checks.iter().filter(|c| !c.passed).map(|c| c.gate.as_str()).collect();
    assert_eq!(failed, ["survivor_in_sync"], "{plan:?}");
    w.leader.heartbeat(ms(150), "west", &in_sync(Role::Standby, 1), &w.state, ok).unwrap();
    let Ok(Order::Commit { command, .. }) = tick(&w, ms(200)) else { panic!("committed") };
    assert!(matches!(w.apply(command), Response::Activated { draining: true, .. }));
    w.apply(Command::Promote { group: "app".into(), expected_epoch: Epoch(2) });
    assert!(w.state.groups["app"].drill.as_ref().unwrap().holding());

    let back = |effects: &[Effect]| -> Vec<Command> {
        proposals(effects)
            .into_iter()
            .filter(|c| matches!(c, Command::Drill { .. } | Command::EndDrill { .. }))
            .collect()
    };
    assert!(back(&w.tick(ms(1000))).is_empty(), "the hold starts");
    w.leader.heartbeat(ms(2950), "east", &in_sync(Role::Standby, 2), &w.state, ok).unwrap();
    assert!(back(&w.tick(ms(2999))).is_empty(), "still holding");
    let way_back = back(&w.tick(ms(3000)));
    assert!(
        matches!(&way_back[..], [Command::Drill { to, expected_epoch: Epoch(2), start: None, .. }] if to == "east"),
        "{way_back:?}"
    );
    assert!(back(&w.tick(ms(3050))).is_empty(), "once while in flight");
    w.leader.proposal_settled(&way_back[0], false);
    assert_eq!(back(&w.tick(ms(3100))), way_back, "lost: proposed again");

    // East goes down before it lands: the way back waits, then the drill ends failed.
    w.leader.proposal_settled(&way_back[0], true);
    w.see("east", [DOWN, DOWN, DOWN]);
    assert!(back(&w.tick(ms(3200))).is_empty());
    assert!(back(&w.tick(ms(62_999))).is_empty(), "patience");
    let end = back(&w.tick(ms(63_000)));
    assert!(
        matches!(&end[..], [Command::EndDrill { problem, .. }] if problem.contains("could not return to east")
            && problem.contains("east seen up by 0 of 3")),
        "{end:?}"
    );
}

/// A target that drifts from the decision of a group with `repair_drift`: the leader runs that
/// step of the group's done plan again by itself, once per drift, for the current epoch only;
/// without `repair_drift` it only says so.
#[test]
fn a_group_that_repairs_drift_has_its_drifted_step_run_again_once() {
    for repair in [true, false] {
        let mut w = World::new(None, &["dns"]);
        let mut config = w.leader.config().clone();
        config.readiness_interval = [("app".into(), Duration::from_secs(60))].into();
        if repair {
            config.repair_drift.insert("app".into());
        }
        w.leader = Leader::new(Arc::new(config), 7, Duration::ZERO, 1);
        // East failed over to west at epoch 2 and the plan is done.
        w.see("east", [DOWN, DOWN, DOWN]);
        w.see("west", [UP, UP, UP]);
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
        w.apply(failover);
        w.apply(Command::StepStarted { group: "app".into(), epoch: Epoch(2), step: "dns".into(), attempt: 1 });
        let done = StepOutcome::Done { detail: "set".into() };
        let finished = Command::StepFinished {
            group: "app".into(),
            epoch: Epoch(2),
            step: "dns".into(),
            attempt: 1,
            outcome: done,
        };
        w.apply(finished);
        let drifted = |epoch: u64| readiness::PlanReadiness {
            checked_at_ms: 5,
            epoch: Epoch(epoch),
            steps: vec![readiness::StepCheck {
                step: "dns".into(),
                kind: "rfc2136".into(),
                ok: true,
                retryable: true,
                detail: "reachable".into(),
                target: Some(readiness::TargetState::Drifted("holds 192.0.2.1, east's".into())),
            }],
        };
        w.tick(ms(0));
        let reconciles = |effects: &[Effect]| -> Vec<Command> {
            proposals(effects).into_iter().filter(|c| matches!(c, Command::ReconcilePlan { .. })).collect()
        };
        w.leader.plan_checked(&"app".into(), drifted(2), ms(100));
        let first = reconciles(&w.tick(ms(150)));
        if repair {
            let want = Command::ReconcilePlan {
                group: "app".into(),
                epoch: Epoch(2),
                step: Some("dns".into()),
                automatic: true,
            };
            assert_eq!(first, vec![want]);
        } else {
            assert!(first.is_empty(), "{first:?}");
        }
        // The same drift seen again is no new turn: nothing more.
        w.leader.plan_checked(&"app".into(), drifted(2), ms(200));
        assert!(reconciles(&w.tick(ms(250))).is_empty());
    }
}
