//! `witness demo`: a complete failover on this machine with nothing to install or configure,
//! in one of the two reference scenarios: the Patient App (synchronous metro replication,
//! automatic failover; the default) or the University Schedule (asynchronous backups, a manual
//! failover approved by an operator). Each runs three witness nodes, two sites with real agents
//! and targets that keep real state, prints the witness's own journal as it unfolds and a
//! summary shaped as a drill report, and fails unless every target followed the failover.
//! What is shared between the scenarios lives here.

mod patient_app;
mod university_schedule;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;

use super::Exit;
use crate::agent::RunningAgent;
use crate::clock::Stopwatch;
use crate::protocol::Role;
use crate::state::plan::{Phase, Plan};

#[derive(clap::Args)]
pub struct Args {
    /// Which reference scenario to play.
    #[arg(long, value_enum, default_value_t = Scenario::PatientApp)]
    scenario: Scenario,
    /// Keep running after the failover (the failed site comes back as standby), so that you can
    /// look around and fail back with the CLI; Ctrl-C stops.
    #[arg(long)]
    interactive: bool,
    /// How long both sites run before the primary is killed (patient-app).
    #[arg(long, default_value = "3s", value_parser = crate::config::duration::parse)]
    kill_after: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    /// Synchronous metro replication, RPO 0, RTO under 5 minutes, automatic failover.
    PatientApp,
    /// Asynchronous backups every 6 hours to a cloud DR site, RPO 6 h, RTO 1 h, failover
    /// approved by an operator; time compressed for the RPO.
    UniversitySchedule,
}

pub fn run(args: Args) -> Exit {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let dir = std::env::temp_dir().join(format!("witness-demo-{}", std::process::id()));
    let result = runtime.block_on(async {
        std::fs::create_dir_all(&dir)?;
        match args.scenario {
            Scenario::PatientApp => patient_app::run(&dir, args.interactive, args.kill_after).await,
            Scenario::UniversitySchedule => university_schedule::run(&dir, args.interactive).await,
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            Exit::Failed
        }
    }
}

/// Writes a secret file, readable by its owner only.
fn secret(dir: &Path, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

async fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let waited = Stopwatch::start();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        anyhow::ensure!(waited.elapsed() < timeout, "not reached within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The role `site`'s agent gives itself for `group`.
fn role(agents: &BTreeMap<&'static str, RunningAgent>, group: &str, site: &str) -> Option<Role> {
    agents.get(site)?.agent.status().groups.get(group).and_then(|g| g.role)
}

/// Stops the agents, then the witness nodes.
async fn stop(agents: BTreeMap<&'static str, RunningAgent>, nodes: Vec<crate::node::RunningNode>) {
    for (_, agent) in agents {
        agent.shutdown().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// The plan of `group`'s failover, once done (within 30 s).
async fn wait_for_plan(nodes: &[crate::node::RunningNode], group: &str) -> anyhow::Result<Plan> {
    let waited = Stopwatch::start();
    loop {
        let leader = crate::cli::local::leader(nodes).await?;
        let plan = leader.applied.read().expect("state lock").state.groups[group].plan.clone();
        match plan {
            Some(p) if p.phase() == Phase::Done => return Ok(p),
            Some(p) if p.phase() == Phase::Stuck => anyhow::bail!("the failover plan is stuck: {:?}", p.steps),
            other => anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(30),
                "the failover did not complete within 30 s (plan: {other:?})"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The journal kinds every scenario's timeline shows.
const TIMELINE: [&str; 12] = [
    "verdict",
    "holding_down",
    "failing_over",
    "failover",
    "draining",
    "promoting",
    "promoted",
    "step_done",
    "step_failed",
    "plan_stuck",
    "failover_complete",
    "healthy",
];

/// Prints the journal as it grows, the events of `kinds` (and [`TIMELINE`]): the witness's own
/// account of each phase.
async fn follow_journal(nodes: Vec<Arc<crate::node::Node>>, shown: Arc<Mutex<u64>>, kinds: &'static [&'static str]) {
    loop {
        let leader = nodes.iter().find(|n| n.raft.is_leader()).cloned();
        if let Some(leader) = leader {
            let since = *shown.lock().expect("lock");
            let events = leader.applied.read().expect("state lock").state.journal.since(since, 100);
            for e in &events {
                let shown_kind = TIMELINE.contains(&e.kind.as_str()) || kinds.contains(&e.kind.as_str());
                if shown_kind && !(e.kind == "verdict" && e.message.contains("up")) {
                    println!("  {}  {:<17} {}", crate::clock::rfc3339(e.at_ms), e.kind, e.message);
                }
            }
            if let Some(last) = events.last() {
                *shown.lock().expect("lock") = last.seq;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
