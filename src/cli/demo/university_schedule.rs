//! The University Schedule scenario: a timetable service backed up every 6 hours to a cloud DR
//! site (asynchronous, RPO 6 h, RTO 1 h), whose failover loses data and so is a human's
//! decision. The RPO's clock is compressed, and the demo says so: one second stands for two
//! hours, a backup lands every 3 s (6 h) and the objective is 3.5 s (7 h: the interval and an
//! hour for a backup to land). The RTO is not compressed: the failover runs in real time against
//! the real 1 h objective.
//!
//! The DR agent reads the age of its last restored backup with a command, as a real reader
//! would (here, from a file the demo writes at each backup). The live RPO exposure climbs and
//! resets with each backup; one backup is skipped, and `rpo_at_risk` appears in the journal and
//! the metrics; the next one brings it back within the objective. Then the main campus dies.
//! The group is manual, so the witness journals *needs approval* with the exposure; the demo
//! approves it through the API as an operator would, and the plan runs: a restore command and
//! DNS. The summary reports the achieved RTO and RPO (the recovery point's age at the failure)
//! against the objectives, and the demo fails unless every target followed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{follow_journal, role, stop, wait_for, wait_for_plan};
use crate::agent::RunningAgent;
use crate::cli::local::{
    leader, loopback, start_agent_with, start_cluster, wait_for_leader, Local, Stub, HOLD_DOWN, SITE, TIMINGS,
};
use crate::clock::unix_ms;
use crate::demo::dns::DnsServer;
use crate::node::RunningNode;
use crate::protocol::Role;
use crate::state::drill::LegReport;
use crate::state::plan::Plan;

const GROUP: &str = "schedule";
const MAIN: &str = "main-campus";
const DR: &str = "cloud-dr";
const RECORD: &str = "timetable.demo.test.";
const ADDRESSES: [(&str, [u8; 4]); 2] = [(MAIN, [192, 0, 2, 20]), (DR, [198, 51, 100, 20])];
/// Hours of the schedule one second of the demo stands for.
const HOURS_PER_SECOND: f64 = 2.0;
const BACKUP_EVERY: Duration = Duration::from_secs(3);
const RPO_MS: u64 = 3500;
/// The backup the job misses (the third).
const SKIPPED: u32 = 3;

/// Everything the scenario started, stopped in order at the end.
struct World {
    local: Local,
    nodes: Vec<RunningNode>,
    agents: BTreeMap<&'static str, RunningAgent>,
    sites: BTreeMap<&'static str, Stub>,
    dns: DnsServer,
}

/// A duration of the demo as the schedule's hours.
fn hours(ms: u64) -> String {
    format!("{:.1} s ({:.1} h)", ms as f64 / 1000.0, ms as f64 / 1000.0 * HOURS_PER_SECOND)
}

pub async fn run(dir: &Path, interactive: bool) -> anyhow::Result<()> {
    let last_backup = dir.join("last-backup-ms");
    // The agents read it from their start; the backups begin once the sites are up.
    std::fs::write(&last_backup, unix_ms().to_string())?;
    let restored = dir.join("restored");
    let world = start(dir, &last_backup, &restored).await?;
    let api = format!("{}://{}", world.local.scheme(), world.nodes[0].addr);
    println!("witness demo: the University Schedule: a timetable service on {MAIN}, backed up to {DR}");
    println!("  3 witness nodes (Raft on disk under {}), an agent at each site, DNS ({RECORD})", dir.display());
    println!(
        "  TIME IS COMPRESSED for the RPO: 1 s stands for {HOURS_PER_SECOND} h; a backup every {} s (6 h), RPO \
         objective {}; the RTO is not (real time, 1 h objective)",
        BACKUP_EVERY.as_secs(),
        hours(RPO_MS)
    );
    println!("  {TIMINGS}; failover = \"manual\": an operator approves it\n");
    let shown = Arc::new(Mutex::new(0u64));
    let kinds: &'static [&'static str] = &["rpo_at_risk", "rpo_within", "needs_approval", "group_updated"];
    let timeline =
        tokio::spawn(follow_journal(world.nodes.iter().map(|n| n.node.clone()).collect(), shown.clone(), kinds));
    wait_for(Duration::from_secs(30), "the main campus active, the DR site standby", || {
        (role(&world.agents, GROUP, MAIN) == Some(Role::Active)
            && role(&world.agents, GROUP, DR) == Some(Role::Standby))
        .then_some(())
    })
    .await?;

    // The backup job, one run skipped; the exposure as the leader sees it, every second.
    std::fs::write(&last_backup, unix_ms().to_string())?;
    println!("  backup 0: restored at {DR}");
    let started = tokio::time::Instant::now();
    let mut backups = 0u32;
    let mut next_backup = started + BACKUP_EVERY;
    let mut next_look = started + Duration::from_secs(1);
    let mut at_risk_seen = false;
    let mut risk_metrics = None;
    loop {
        let now = tokio::time::Instant::now();
        if now >= next_backup {
            backups += 1;
            next_backup += BACKUP_EVERY;
            if backups == SKIPPED {
                println!("  backup {backups}: SKIPPED (the job failed)");
            } else {
                std::fs::write(&last_backup, unix_ms().to_string())?;
                println!("  backup {backups}: restored at {DR}");
            }
        }
        if now >= next_look {
            next_look += Duration::from_secs(1);
            let (exposure, objective) = exposure(&world).await?;
            let at_risk = exposure > objective;
            println!(
                "  RPO exposure {} / objective {}{}",
                exposure.map_or("unknown".to_string(), hours),
                objective.map_or("-".to_string(), hours),
                if at_risk { "  AT RISK" } else { "" }
            );
            if at_risk && risk_metrics.is_none() {
                let text = metrics(&world).await?;
                let series = |name: &str| {
                    let prefix = format!("{name}{{group=\"{GROUP}\"");
                    text.lines().find(|l| l.starts_with(&prefix)).map(str::to_string).unwrap_or_default()
                };
                let both = [series("witness_rpo_exposure_seconds"), series("witness_rpo_objective_seconds")];
                println!("    the leader's /metrics: {}", both.join("; "));
                risk_metrics = Some(both);
            }
        }
        at_risk_seen = at_risk_seen || journaled(&world, "rpo_at_risk").await?;
        // Once the risk was journaled and the next backup landed, the main campus dies a
        // second after that backup.
        if at_risk_seen && backups > SKIPPED && now >= next_backup - BACKUP_EVERY + Duration::from_secs(1) {
            break;
        }
        anyhow::ensure!(backups <= SKIPPED + 2, "no rpo_at_risk in the journal after the skipped backup");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(risk_metrics.is_some(), "the exposure never showed at risk in the leader's view");

    let mut world = world;
    let killed_ms = unix_ms();
    world.sites.get_mut(MAIN).expect("main campus").kill().await;
    world.agents.remove(MAIN).expect("the main campus agent").shutdown().await;
    println!("  ---- {MAIN} killed ----");
    let approval = wait_for_journal(&world, "needs_approval", Duration::from_secs(30)).await?;
    println!("\n  the witness waits for an operator: {approval}");
    println!("  approving it through the API, as `witness failover {GROUP} --to {DR}` does");
    let answer = world
        .local
        .client(None)?
        .post(format!("{api}/v1/groups/{GROUP}/failover"))
        .json(
            &serde_json::json!({ "to": DR, "reason": "approved: the main campus is gone; restore the latest backup" }),
        )
        .send()
        .await?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await?;
    anyhow::ensure!(status.is_success(), "the approval was refused: HTTP {status}: {body}");
    println!("  approved: {DR} active at epoch {}", body["failover"]["outcome"]["epoch"]);

    let plan = wait_for_plan(&world.nodes, GROUP).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the timeline catch up
    timeline.abort();
    let plan = plan?;
    let objective_ms = leader(&world.nodes).await?.applied.read().expect("state lock").state.groups[GROUP].spec.rto_ms;
    summary(&world, &plan, killed_ms, objective_ms, &restored)?;
    println!("\ndashboard: {api}/   API: {api}/v1/status");
    if interactive {
        println!("\nTry, in another terminal:");
        println!("  export WITNESS_ENDPOINT={api} {}", world.local.cli_env());
        println!("  witness status; witness plan show {GROUP}; witness events");
        println!("Ctrl-C stops the demo.");
        let _ = tokio::signal::ctrl_c().await;
    }
    stop(world.agents, world.nodes).await;
    Ok(())
}

async fn start(dir: &Path, last_backup: &Path, restored: &Path) -> anyhow::Result<World> {
    let main_address = ADDRESSES[0].1.into();
    let dns = DnsServer::start("demo.test.", &[(RECORD, main_address)], "witness-demo", &dir.join("tsig.key")).await?;
    let sites = BTreeMap::from([(MAIN, Stub::start(0.0, 1).await?), (DR, Stub::start(0.0, 2).await?)]);
    let site = |name: &str| {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{}\"\n", sites[name].url())
    };
    let values = ADDRESSES
        .iter()
        .map(|(s, a)| format!("\"{s}\" = [\"{}\"]", std::net::Ipv4Addr::from(*a)))
        .collect::<Vec<_>>()
        .join(", ");
    // The restore step: what `timetable-restore --latest --promote` would do, leaving a mark.
    let restore = format!("echo \"restored the latest backup for epoch $WITNESS_EPOCH\" > '{}'", restored.display());
    let config = format!(
        "{}{}[[group]]\nname = \"{GROUP}\"\nprimary = \"{MAIN}\"\nsecondary = \"{DR}\"\nreplication = \"async\"\n\
         rto = \"1h\"\nrpo = \"{RPO_MS}ms\"\nfailover = \"manual\"\nhold_down = \"{HOLD_DOWN}\"\n\
         agents = true\nlease = \"1s\"\nlease_margin = \"100ms\"\n\
         [[group.step]]\nname = \"restore\"\nkind = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", {restore:?}]\n\
         timeout = \"30s\"\n\
         [[group.step]]\nname = \"dns\"\nkind = \"rfc2136\"\nserver = \"{}\"\nzone = \"demo.test.\"\n\
         record = \"{RECORD}\"\nttl = 30\nkey_file = \"{}\"\nvalues = {{ {values} }}\ntimeout = \"10s\"\n",
        site(MAIN),
        site(DR),
        dns.addr,
        dns.key_file.display(),
    );
    let local = Local::new(dir, true, &[]);
    let nodes = start_cluster(&local, &config).await?;
    wait_for_leader(&nodes, GROUP).await?;
    let witness: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    // The DR agent's reader: the age of the last restored backup, as the agent expects it.
    let reader = format!(
        "replication_command = \"last=$(cat '{}'); now=$(date +%s%3N); \
         echo \\\"{{\\\\\\\"recovery_point_age_ms\\\\\\\": $((now - last))}}\\\"\"\n",
        last_backup.display()
    );
    let (main, dr) = (loopback().await?, loopback().await?);
    let (main_addr, dr_addr) = (main.local_addr()?.to_string(), dr.local_addr()?.to_string());
    let mut agents = BTreeMap::new();
    let main = start_agent_with(&local, MAIN, GROUP, main, &dr_addr, &witness, &reader).await?;
    agents.insert(MAIN, main);
    let dr = start_agent_with(&local, DR, GROUP, dr, &main_addr, &witness, &reader).await?;
    agents.insert(DR, dr);
    Ok(World { local, nodes, agents, sites, dns })
}

/// The data the DR site's copy lacks now, and the objective, as the leader has them.
async fn exposure(world: &World) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let status = leader(&world.nodes).await?.status();
    let agents = status.groups.iter().find(|g| g.name == GROUP).and_then(|g| g.agents.clone());
    Ok(agents.map_or((None, None), |a| (a.rpo_exposure_ms, a.rpo_objective_ms)))
}

/// The leader's `/metrics`, as Prometheus scrapes it.
async fn metrics(world: &World) -> anyhow::Result<String> {
    let leader = world.nodes.iter().find(|n| n.node.raft.is_leader()).ok_or_else(|| anyhow::anyhow!("no leader"))?;
    let url = format!("{}://{}/metrics", world.local.scheme(), leader.addr);
    Ok(world.local.client(None)?.get(url).send().await?.text().await?)
}

async fn journaled(world: &World, kind: &str) -> anyhow::Result<bool> {
    let leader = leader(&world.nodes).await?;
    let state = &leader.applied.read().expect("state lock").state;
    Ok(state.journal.since(0, usize::MAX).iter().any(|e| e.kind == kind && e.group.as_deref() == Some(GROUP)))
}

/// The message of the first `kind` event of the group, once journaled.
async fn wait_for_journal(world: &World, kind: &str, timeout: Duration) -> anyhow::Result<String> {
    let waited = crate::clock::Stopwatch::start();
    loop {
        let leader = leader(&world.nodes).await?;
        let found = {
            let state = &leader.applied.read().expect("state lock").state;
            let events = state.journal.since(0, usize::MAX);
            events.iter().find(|e| e.kind == kind && e.group.as_deref() == Some(GROUP)).map(|e| e.message.clone())
        };
        if let Some(message) = found {
            return Ok(message);
        }
        anyhow::ensure!(waited.elapsed() < timeout, "no {kind} within {timeout:?} of the failure");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the failover took and lost, as a drill report has it, against the objectives; and a
/// check that every target followed it.
fn summary(world: &World, plan: &Plan, killed_ms: u64, objective_ms: u64, restored: &Path) -> anyhow::Result<()> {
    let ttl = plan.dns_ttl_s().unwrap_or(0);
    println!(
        "\nSUMMARY (shaped as a drill report, `witness drill show`; the decision phase runs from the failure and \
         includes the wait for the operator)\n"
    );
    let leg = LegReport::of("failover", plan, killed_ms, None, u64::from(ttl) * 1000, objective_ms);
    print!("{}", crate::cli::drill::legs(std::slice::from_ref(&leg)));
    let rto = plan.achieved_rto_ms().unwrap_or(0);
    let rpo = plan.facts.rpo_ms;
    println!(
        "\n  achieved RTO  {:.1} s ({:.1} s as clients see it, with the {ttl} s DNS TTL) against the 1 h objective \
         (real time)",
        rto as f64 / 1000.0,
        (rto + u64::from(ttl) * 1000) as f64 / 1000.0
    );
    println!(
        "  achieved RPO  {} lost (the recovery point's age at the failure) against the objective of {}",
        rpo.map_or("unknown".to_string(), hours),
        hours(RPO_MS)
    );
    let dns = world.dns.a_records(RECORD);
    let dr_address = std::net::Ipv4Addr::from(ADDRESSES[1].1).to_string();
    let mark = std::fs::read_to_string(restored).unwrap_or_default();
    println!("\nTARGETS");
    println!("  DNS {RECORD} A  {}", dns.join(", "));
    println!("  restore: {}", if mark.is_empty() { "not run" } else { mark.trim() });
    println!("  {DR} writable: {}", role(&world.agents, GROUP, DR) == Some(Role::Active));
    anyhow::ensure!(dns == [dr_address.clone()], "DNS holds {dns:?}, not {DR}'s {dr_address}");
    anyhow::ensure!(mark.contains(&format!("epoch {}", plan.epoch)), "the restore step left {mark:?}");
    anyhow::ensure!(role(&world.agents, GROUP, DR) == Some(Role::Active), "{DR}'s agent is not active");
    anyhow::ensure!(rpo.is_some_and(|r| r <= RPO_MS), "the achieved RPO {rpo:?} ms is not within {RPO_MS} ms");
    Ok(())
}
