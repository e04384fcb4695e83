//! Failure-detection benchmarks: three witness nodes in this process probe two site stubs over
//! HTTP on loopback with the dev cluster's metro timings.
//!
//! * `witness bench failover`: detection latency over repeated trials of "the active site
//!   dies": each trial kills the active site's stub and measures the time until the failover is
//!   committed and applied on the leader, then restores the site and acknowledges the failover
//!   (the next trial then kills the new active site).
//! * `witness bench soak`: both sites stay up while each stub drops a share of probe requests
//!   (it holds them past the probe timeout, as lost packets would look); counts the failovers,
//!   which must be zero, and what the loss provoked in the journal.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::clock::Stopwatch;

use super::{summary, Samples};
use crate::node::RunningNode;
use crate::state::Verdict;

use crate::cli::local::{acknowledge, leader, start_cluster, wait_for_leader, Local, Stub, HOLD_DOWN, SITE, TIMINGS};

async fn start(dir: &Path, east: &Stub, west: &Stub) -> anyhow::Result<Vec<RunningNode>> {
    std::fs::create_dir_all(dir)?;
    let site = |name: &str, url: String| {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{url}\"\n")
    };
    let config = format!(
        "{}{}[[group]]\nname = \"demo\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
         rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n",
        site("east", east.url()),
        site("west", west.url()),
    );
    let nodes = start_cluster(&Local::new(dir, true, &[]), &config).await?;
    wait_for_leader(&nodes, "demo").await?;
    settle(&nodes).await?;
    Ok(nodes)
}

/// The one series of `bench failover`.
const DETECTION: &str = "failure -> decision committed";

pub async fn bench(dir: &Path, trials: usize, samples: &mut Samples) -> anyhow::Result<()> {
    samples.set("trials", trials);
    samples.set("timings", TIMINGS);
    let mut stubs = [Stub::start(0.0, 1).await?, Stub::start(0.0, 2).await?];
    let nodes = start(dir, &stubs[0], &stubs[1]).await?;
    println!("3 witness nodes, 2 sites, {TIMINGS}");
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        settle(&nodes).await?;
        let active = leader(&nodes).await?.applied.read().expect("state lock").state.groups["demo"].active.clone();
        let (failing, surviving) = if active == "east" { (0, "west") } else { (1, "east") };
        stubs[failing].kill().await;
        let killed = Stopwatch::start();
        let took = loop {
            let leader = leader(&nodes).await?;
            if leader.applied.read().expect("state lock").state.groups["demo"].active == surviving {
                break killed.elapsed();
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(30), "trial {trial}: no failover within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!("trial {:>3}: failure -> failover committed in {:.0} ms", trial + 1, took.as_secs_f64() * 1000.0);
        latencies.push(took);
        samples.push(DETECTION, took);
        stubs[failing].restart().await?;
        // The restored site becomes the standby; acknowledge so the next trial is not blocked.
        acknowledge(&nodes, "demo").await?;
    }
    println!("detection latency (failure -> decision committed), {trials} trials: {}", summary(&latencies));
    for n in nodes {
        n.shutdown().await;
    }
    // The stubs outlive the nodes.
    drop(stubs);
    Ok(())
}

pub async fn soak(dir: &Path, loss: f64, duration: Duration, samples: &mut Samples) -> anyhow::Result<()> {
    samples.set("loss", loss);
    samples.set("duration_s", duration.as_secs_f64());
    samples.set("timings", TIMINGS);
    let stubs = [Stub::start(loss, 1).await?, Stub::start(loss, 2).await?];
    let nodes = start(dir, &stubs[0], &stubs[1]).await?;
    println!("3 witness nodes, 2 sites, {TIMINGS}; each site drops {:.0}% of probes, for {duration:?}", loss * 100.0);
    let first_seq = leader(&nodes).await?.applied.read().expect("state lock").state.journal.last_seq();
    tokio::time::sleep(duration).await;
    let leader = leader(&nodes).await?;
    let (failovers, kinds) = {
        let state = &leader.applied.read().expect("state lock").state;
        let mut kinds = BTreeMap::<String, usize>::new();
        for e in state.journal.since(first_seq, usize::MAX) {
            *kinds.entry(e.kind.clone()).or_default() += 1;
        }
        (state.groups["demo"].epoch.0 - 1, kinds)
    };
    println!("journal entries during the soak by kind: {kinds:?}");
    println!("false failovers at {:.0}% probe loss over {duration:?}: {failovers}", loss * 100.0);
    samples.set("false_failovers", failovers);
    samples.set("journal_by_kind", &kinds);
    for n in nodes {
        n.shutdown().await;
    }
    drop(stubs);
    anyhow::ensure!(failovers == 0, "{failovers} false failover(s): target missed");
    Ok(())
}

/// Waits until every node's committed verdict on both sites is up and the group is not
/// blocked, so that each trial starts from the same state.
pub(super) async fn settle(nodes: &[RunningNode]) -> anyhow::Result<()> {
    for _ in 0..600 {
        let leader = leader(nodes).await?;
        let ready = {
            let state = &leader.applied.read().expect("state lock").state;
            let all_up =
                ["east", "west"].iter().all(|site| (1..=3).all(|n| state.verdict(site, n.into()) == Some(Verdict::Up)));
            all_up && !state.groups["demo"].blocked
        };
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("sites did not settle (all up, group unblocked) within 30 s")
}
