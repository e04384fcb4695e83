//! The Patient App scenario (the default): a synchronous metro pair with automatic failover.
//! Three witness nodes (real Raft on disk in a temporary directory, real HTTP on loopback), two
//! sites with real agents, and targets that keep real state: an OpenStorage API, a DNS server
//! taking TSIG-signed RFC 2136 updates and a webhook receiver. Only the sites are simulated
//! (a health endpoint each). The primary is killed after a few seconds; the live timeline is
//! the witness's own journal; the summary checks every target and shows the achieved RTO/RPO.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{follow_journal, role, secret, stop, wait_for, wait_for_plan};
use crate::agent::RunningAgent;
use crate::cli::local::{
    leader, loopback, start_agent, start_cluster, wait_for_leader, Local, Stub, HOLD_DOWN, SITE, TIMINGS,
};
use crate::clock::unix_ms;
use crate::demo::dns::DnsServer;
use crate::demo::storage::StorageApi;
use crate::leader::readiness::TargetState;
use crate::node::RunningNode;
use crate::protocol::Role;
use crate::state::drill::LegReport;
use crate::state::journal::Event;
use crate::state::plan::Plan;

const GROUP: &str = "app";
const RECORD: &str = "app.demo.test.";
const ADDRESSES: [(&str, [u8; 4]); 2] = [("east", [192, 0, 2, 10]), ("west", [198, 51, 100, 10])];
const TOKEN: &str = "demo-admin-token";

/// Everything the demo started, stopped in order at the end.
struct World {
    local: Local,
    nodes: Vec<RunningNode>,
    agents: BTreeMap<&'static str, RunningAgent>,
    sites: BTreeMap<&'static str, Stub>,
    storage: StorageApi,
    dns: DnsServer,
    hooks: Arc<Mutex<Vec<String>>>,
}

pub async fn run(dir: &Path, interactive: bool, kill_after: Duration) -> anyhow::Result<()> {
    let mut world = start(dir).await?;
    let api = format!("{}://{}", world.local.scheme(), world.nodes[0].addr);
    println!("witness demo: 3 witness nodes (Raft on disk under {}), sites east and west with agents,", dir.display());
    println!(
        "storage (OpenStorage API {}), DNS ({} {RECORD}) and a webhook receiver",
        world.storage.url, world.dns.addr
    );
    println!("{TIMINGS}; lease 1 s + 100 ms margin\n");
    let shown = Arc::new(Mutex::new(0u64));
    let timeline =
        tokio::spawn(follow_journal(world.nodes.iter().map(|n| n.node.clone()).collect(), shown.clone(), &[]));

    wait_for(Duration::from_secs(30), "east active and writable, west standby", || {
        (role(&world.agents, GROUP, "east") == Some(Role::Active)
            && role(&world.agents, GROUP, "west") == Some(Role::Standby))
        .then_some(())
    })
    .await?;
    readiness(&world).await?;
    println!(
        "\n  east is active and writable, west standby; killing east (health endpoint and agent) in {:?}",
        kill_after
    );
    tokio::time::sleep(kill_after).await;
    let killed_ms = unix_ms();
    world.sites.get_mut("east").expect("east").kill().await;
    world.agents.remove("east").expect("east's agent").shutdown().await;
    println!("  ---- east killed ----");

    let plan = wait_for_plan(&world.nodes, GROUP).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // let the timeline catch up
    timeline.abort();
    let plan = plan?;
    let (events, objective_ms) = {
        let leader = leader(&world.nodes).await?;
        let applied = leader.applied.read().expect("state lock");
        (applied.state.journal.since(0, usize::MAX), applied.state.groups[GROUP].spec.rto_ms)
    };
    summary(&world, &plan, &events, killed_ms, objective_ms)?;
    println!("\ndashboard: {api}/   API: {api}/v1/status   OpenAPI: {api}/openapi.json");
    println!("(HTTPS from the demo's own CA under {}: a browser asks before trusting it)", dir.display());

    if interactive {
        world.sites.get_mut("east").expect("east").restart().await?;
        let witness: Vec<String> = world.nodes.iter().map(|n| n.addr.to_string()).collect();
        let west = world.agents["west"].addr.to_string();
        let east = start_agent(&world.local, "east", GROUP, loopback().await?, &west, &witness).await?;
        world.agents.insert("east", east);
        println!("\neast is back, as standby (no automatic failback). Try, in another terminal:");
        println!("  export WITNESS_ENDPOINT={api} {}", world.local.cli_env());
        println!("  witness status");
        println!("  witness plan show {GROUP}");
        println!("  witness ack {GROUP}                     (lifts the block the failover set)");
        println!("  witness failback {GROUP} --dry-run      (the checks; west is healthy, so:)");
        println!("  witness failback {GROUP} --force --reason switchover");
        println!("  witness events --follow");
        println!("Ctrl-C stops the demo.");
        let shown = Arc::new(Mutex::new(*shown.lock().expect("lock")));
        let timeline = tokio::spawn(follow_journal(world.nodes.iter().map(|n| n.node.clone()).collect(), shown, &[]));
        let _ = tokio::signal::ctrl_c().await;
        timeline.abort();
    }
    stop(world.agents, world.nodes).await;
    Ok(())
}

async fn start(dir: &Path) -> anyhow::Result<World> {
    let token_file = secret(dir, "px.token", TOKEN)?;
    let domains = [("dc-east", true), ("dc-west", false)];
    let storage = StorageApi::start(TOKEN, &domains).await?;
    let east_address = ADDRESSES[0].1.into();
    let dns = DnsServer::start("demo.test.", &[(RECORD, east_address)], "witness-demo", &dir.join("tsig.key")).await?;
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let hook_url = webhook_receiver(hooks.clone()).await?;
    let sites = BTreeMap::from([("east", Stub::start(0.0, 1).await?), ("west", Stub::start(0.0, 2).await?)]);

    let site = |name: &str| {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{}\"\n", sites[name].url())
    };
    let values = |f: &dyn Fn([u8; 4]) -> String| {
        ADDRESSES.iter().map(|(s, a)| format!("{s} = {}", f(*a))).collect::<Vec<_>>().join(", ")
    };
    let config = format!(
        "{}{}[[group]]\nname = \"{GROUP}\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
         rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n\
         agents = true\nlease = \"1s\"\nlease_margin = \"100ms\"\n\
         [[group.step]]\nname = \"storage\"\nkind = \"openstorage\"\nendpoint = \"{}\"\ntoken_file = \"{}\"\n\
         domains = {{ east = \"dc-east\", west = \"dc-west\" }}\ntimeout = \"10s\"\n\
         [[group.step]]\nname = \"dns\"\nkind = \"rfc2136\"\nserver = \"{}\"\nzone = \"demo.test.\"\n\
         record = \"{RECORD}\"\nttl = 30\nkey_file = \"{}\"\nvalues = {{ {} }}\ntimeout = \"10s\"\n\
         [[group.step]]\nname = \"notify\"\nkind = \"webhook\"\nurl = \"{hook_url}\"\non_failure = \"continue\"\n\
         timeout = \"5s\"\n",
        site("east"),
        site("west"),
        storage.url,
        token_file.display(),
        dns.addr,
        dns.key_file.display(),
        values(&|a| format!("[\"{}\"]", std::net::Ipv4Addr::from(a))),
    );
    let local = Local::new(dir, true, &[]);
    let nodes = start_cluster(&local, &config).await?;
    wait_for_leader(&nodes, GROUP).await?;
    let witness: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let (east, west) = (loopback().await?, loopback().await?);
    let (east_addr, west_addr) = (east.local_addr()?.to_string(), west.local_addr()?.to_string());
    let mut agents = BTreeMap::new();
    agents.insert("east", start_agent(&local, "east", GROUP, east, &west_addr, &witness).await?);
    agents.insert("west", start_agent(&local, "west", GROUP, west, &east_addr, &witness).await?);
    Ok(World { local, nodes, agents, sites, storage, dns, hooks })
}

/// Records the `webhook-id` of every POST; answers 204.
async fn webhook_receiver(hooks: Arc<Mutex<Vec<String>>>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| async move {
            let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            hooks.lock().expect("hooks lock").push(id);
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// Each step's readiness and what its target holds, as the leader's scheduled check finds them
/// (the same check, run now rather than waited for): the demo refuses to go on with a plan that
/// would fail.
async fn readiness(world: &World) -> anyhow::Result<()> {
    let leader = leader(&world.nodes).await?;
    let epoch = leader.applied.read().expect("state lock").state.groups.get(GROUP).map(|g| g.epoch);
    let executors = crate::actions::Executors::new()?;
    let check =
        leader.check_plan_at(GROUP, epoch, &executors).await.map_err(|e| anyhow::anyhow!("plan readiness: {e}"))?;
    println!("\n  PLAN READINESS (checking changes nothing)");
    for s in &check.steps {
        let target = match &s.target {
            Some(TargetState::InPlace) => "target holds east".to_string(),
            Some(TargetState::Drifted(what)) => format!("TARGET DRIFT: {what}"),
            None => "target not readable".to_string(),
        };
        let ready = if s.ok { "ready" } else { "NOT READY" };
        println!("    {:<8} {:<12} {ready:<9} {target}", s.step, s.kind);
    }
    let problems: Vec<&str> = check
        .steps
        .iter()
        .filter(|s| !s.ok || matches!(s.target, Some(TargetState::Drifted(_))))
        .map(|s| s.step.as_str())
        .collect();
    anyhow::ensure!(problems.is_empty(), "the plan would not work: steps {problems:?}");
    Ok(())
}

/// Prints what the failover took, as a drill report has it (`witness drill show`), and checks
/// that every target followed it.
fn summary(world: &World, plan: &Plan, events: &[Event], killed_ms: u64, objective_ms: u64) -> anyhow::Result<()> {
    let after = |kind: &str, filter: &dyn Fn(&Event) -> bool| {
        events.iter().find(|e| e.at_ms >= killed_ms && e.kind == kind && filter(e)).map(|e| e.at_ms)
    };
    let seen_down = after("verdict", &|e| e.message.contains("east down"));
    let secs = |ms: u64| format!("{:>7.3} s", ms as f64 / 1000.0);
    let since = |at: Option<u64>, from: u64| at.map_or("      -".to_string(), |t| secs(t.saturating_sub(from)));
    let rto = plan.achieved_rto_ms().unwrap_or(0);
    let ttl = plan.dns_ttl_s().unwrap_or(0);
    println!("\nSUMMARY (shaped as a drill report, `witness drill show`; the decision phase runs from the failure)\n");
    let leg = LegReport::of("failover", plan, killed_ms, None, u64::from(ttl) * 1000, objective_ms);
    print!("{}", crate::cli::drill::legs(std::slice::from_ref(&leg)));
    println!();
    println!("  first node sees east down      {}", since(seen_down, killed_ms));
    println!(
        "  achieved RTO                   {}   ({} as clients see it, with the {ttl} s DNS TTL)",
        secs(rto),
        secs(rto + u64::from(ttl) * 1000).trim()
    );
    println!(
        "  achieved RPO                   {}   (synchronous copy in sync at the failure)",
        secs(plan.facts.rpo_ms.unwrap_or(0))
    );

    let dns = world.dns.a_records(RECORD);
    let west_address = std::net::Ipv4Addr::from(ADDRESSES[1].1).to_string();
    let hooks = world.hooks.lock().expect("hooks lock").clone();
    println!("\nTARGETS");
    println!("  DNS {RECORD} A  {}", dns.join(", "));
    let domain = |name: &str| match world.storage.active(name) {
        Some(true) => "active",
        Some(false) => "inactive",
        None => "unknown",
    };
    println!("  storage dc-west {}, dc-east {}", domain("dc-west"), domain("dc-east"));
    println!("  webhook deliveries: {}", hooks.join("; "));
    println!("  west writable: {}", role(&world.agents, GROUP, "west") == Some(Role::Active));
    anyhow::ensure!(dns == [west_address.clone()], "DNS holds {dns:?}, not west's {west_address}");
    anyhow::ensure!(world.storage.active("dc-west") == Some(true), "storage domain dc-west is not active");
    anyhow::ensure!(world.storage.active("dc-east") == Some(false), "storage domain dc-east is still active");
    anyhow::ensure!(hooks == [format!("{GROUP}:{}:notify", plan.epoch)], "webhook deliveries: {hooks:?}");
    anyhow::ensure!(role(&world.agents, GROUP, "west") == Some(Role::Active), "west's agent is not active");
    Ok(())
}
