//! What the seeded simulations share: their seeds (`WITNESS_SIM_SEEDS=N` runs seeds 0..N,
//! default 500; `WITNESS_SIM_SEED=S` replays one; a failing seed is printed with the command
//! that replays it) and the topology they run, two sites and one group.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use witness::config::{FailoverMode, ReplicationMode};
use witness::engine::detector::{Observer, Watch};
use witness::leader::contact::{readiness, Health};
use witness::leader::Contact;
use witness::state::plan::StepSpec;
use witness::state::{GroupSpec, LeaseTerms, NodeId, Topology};

/// Sites `east` (primary) and `west` and the synchronous, automatic group `app` between them.
pub fn topology(leases: Option<LeaseTerms>, steps: Vec<StepSpec>) -> Topology {
    let spec = GroupSpec {
        primary: "east".into(),
        secondary: "west".into(),
        replication: ReplicationMode::Sync,
        failover: FailoverMode::Automatic,
        rto_ms: 300_000,
        rpo_ms: 0,
        leases,
        steps,
    };
    let (sites, groups) = (["east".into(), "west".into()].into(), [("app".into(), spec)].into());
    Topology { sites, groups, tuning: Default::default() }
}

/// A node's observer of `sites`, as `Node::start` makes it.
pub fn observer(
    node: u64,
    sites: &[&str],
    failures: u32,
    successes: u32,
    stale_after: Duration,
    now_ms: u64,
) -> Observer {
    let watch = Watch { failure_threshold: failures, success_threshold: successes, stale_after };
    Observer::new(NodeId(node), sites.iter().map(|s| ((*s).into(), watch)), Duration::from_millis(now_ms))
}

/// What `Node::contact` reads from Raft, from when each other voter last acknowledged `me`
/// (ms of simulated time): the quorum's acknowledgement is the newest that makes a majority
/// with `me`.
pub fn contact(me: u64, voters: &BTreeSet<u64>, acked_at: &BTreeMap<u64, u64>, now_ms: u64) -> Contact {
    let ago = |at: u64| Duration::from_millis(now_ms.saturating_sub(at));
    let acked_ago: BTreeMap<NodeId, Duration> = acked_at.iter().map(|(id, at)| (NodeId(*id), ago(*at))).collect();
    let mut ages: Vec<Duration> =
        voters.iter().filter(|v| **v != me).filter_map(|v| acked_ago.get(&NodeId(*v)).copied()).collect();
    ages.sort();
    let others_needed = witness::state::quorum(voters.len()) - usize::from(voters.contains(&me));
    let quorum_acked_ago = if others_needed == 0 { Some(Duration::ZERO) } else { ages.get(others_needed - 1).copied() };
    // Every node runs this version: its leaders batch.
    let formats = voters.iter().map(|v| (NodeId(*v), witness::state::LOG_FORMAT)).collect();
    Contact { voters: voters.iter().map(|v| NodeId(*v)).collect(), acked_ago, quorum_acked_ago, formats }
}

/// Whether a leader with this contact is ready (`Node::readiness`, with its state applied).
pub fn ready(me: u64, contact: &Contact, election_timeout_max_ms: u64) -> bool {
    let health = Health {
        raft_stopped: None,
        me: NodeId(me),
        leader: Some(NodeId(me)),
        quorum_acked_ago: contact.quorum_acked_ago,
        leader_heard_ago: None,
        recovered: true,
        applied: None,
        committed: None,
        removed: false,
    };
    readiness(&health, Duration::from_millis(election_timeout_max_ms)).is_ok()
}

/// The seeds to run (`default` of them unless told). A knob that is set must select something:
/// a value that is not a number, or zero seeds, is an error rather than an empty pass.
pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|s| s.trim().parse::<u64>().unwrap_or_else(|e| panic!("{name}={s:?} is not a number of seeds: {e}")))
    };
    match env("WITNESS_SIM_SEED") {
        Some(one) => one..one + 1,
        None => {
            let count = env("WITNESS_SIM_SEEDS").unwrap_or(default);
            assert!(count > 0, "WITNESS_SIM_SEEDS=0 selects no seed: run at least one");
            0..count
        }
    }
}

/// Runs `each` for every seed (500 unless told); `name` is the test's name, for the replay
/// command.
pub fn run(name: &str, each: impl Fn(u64) + std::panic::RefUnwindSafe) {
    run_with_default(name, 500, each)
}

/// [`run`], with `default` seeds unless told.
pub fn run_with_default(name: &str, default: u64, each: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(default) {
        if let Err(panic) = std::panic::catch_unwind(|| each(seed)) {
            // This file is compiled into each test crate: the crate name is the test target.
            let target = env!("CARGO_CRATE_NAME");
            eprintln!(
                "{name}: seed {seed} failed; replay with WITNESS_SIM_SEED={seed} cargo test --test {target} {name}"
            );
            std::panic::resume_unwind(panic);
        }
    }
}
