//! What the seeded simulations share: their seeds (`WITNESS_SIM_SEEDS=N` runs seeds 0..N,
//! default 500; `WITNESS_SIM_SEED=S` replays one; a failing seed is printed with the command
//! that replays it) and the topology they run, two sites and one group.

use witness::config::{FailoverMode, ReplicationMode};
use witness::state::plan::StepSpec;
use witness::state::{GroupSpec, LeaseTerms, Topology};

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
    Topology { sites: ["east".into(), "west".into()].into(), groups: [("app".to_string(), spec)].into() }
}

pub fn seeds() -> std::ops::Range<u64> {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    match env("WITNESS_SIM_SEED") {
        Some(one) => one..one + 1,
        None => 0..env("WITNESS_SIM_SEEDS").unwrap_or(500),
    }
}

/// Runs `each` for every seed; `name` is the test's name, for the replay command.
pub fn run(name: &str, each: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds() {
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
