//! Site-agent benchmarks, everything in this process on loopback:
//!
//! * `witness bench promotion`: N trials of "the active site dies with its agent" against three
//!   witness nodes (metro timings of `config/dev/`) and two agents; each measures the time from
//!   the failure to the surviving agent's own verdict that it may write (the lease-safe drain
//!   included). The failed site then comes back with a fresh agent, as standby, and the
//!   failover is acknowledged for the next trial.
//! * `witness bench heartbeats`: concurrent clients post agent heartbeats to the leader over
//!   HTTP for a while; heartbeats answered per second and their latency.

use std::path::Path;
use std::time::Duration;

use crate::clock::Stopwatch;

use super::{summary, Samples};
use crate::agent::RunningAgent;
use crate::cli::local::{
    acknowledge, loopback, start_agent, start_cluster, wait_for_leader, Local, Stub, HOLD_DOWN, SITE, TIMINGS,
};
use crate::protocol::Role;

const GROUP: &str = "demo-agents";
const LEASE: &str = r#"agents = true
lease = "1s"
lease_margin = "100ms"
"#;

fn sites_and_group(east: &str, west: &str) -> String {
    let site = |name: &str, url: &str| {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{url}\"\n")
    };
    format!(
        "{}{}[[group]]\nname = \"{GROUP}\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
         rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n{LEASE}",
        site("east", east),
        site("west", west),
    )
}

fn role(agent: &RunningAgent) -> Option<Role> {
    agent.agent.status().groups.get(GROUP).and_then(|g| g.role)
}

pub async fn promotion(dir: &Path, trials: usize, samples: &mut Samples) -> anyhow::Result<()> {
    samples.set("trials", trials);
    samples.set("timings", format!("{TIMINGS}; agents' heartbeats every 250 ms, lease 1 s + 100 ms margin"));
    let mut stubs = [Stub::start(0.0, 1).await?, Stub::start(0.0, 2).await?];
    let local = Local::new(dir, true, &[]);
    let nodes = start_cluster(&local, &sites_and_group(&stubs[0].url(), &stubs[1].url())).await?;
    wait_for_leader(&nodes, GROUP).await?;
    let witness: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let listeners = [loopback().await?, loopback().await?];
    let addrs = [listeners[0].local_addr()?, listeners[1].local_addr()?];
    let names = ["east", "west"];
    let mut agents = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        agents.push(Some(start_agent(&local, names[i], GROUP, listener, &addrs[1 - i].to_string(), &witness).await?));
    }
    println!("3 witness nodes, 2 sites with agents (heartbeats every 250 ms, lease 1 s + 100 ms margin), {TIMINGS}");
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        // Each trial starts with one site writable and the other standby.
        let active = wait_until(Duration::from_secs(30), || {
            let roles: Vec<Option<Role>> = agents.iter().map(|a| a.as_ref().and_then(role)).collect();
            match roles[..] {
                [Some(Role::Active), Some(Role::Standby)] => Some(0),
                [Some(Role::Standby), Some(Role::Active)] => Some(1),
                _ => None,
            }
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("trial {trial}: the agents did not settle as active and standby"))?;
        let survivor = 1 - active;
        stubs[active].kill().await;
        agents[active].take().expect("running").shutdown().await;
        let killed = Stopwatch::start();
        let writable = agents[survivor].as_ref().expect("running").agent.clone();
        let took = wait_until(Duration::from_secs(30), || {
            writable.status().groups.get(GROUP).is_some_and(|g| g.writable).then(|| killed.elapsed())
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("trial {trial}: the survivor was not writable within 30 s"))?;
        println!(
            "trial {:>3}: failure -> {} writable in {:.0} ms",
            trial + 1,
            names[survivor],
            took.as_secs_f64() * 1000.0
        );
        latencies.push(took);
        samples.push("failure -> survivor writable", took);
        stubs[active].restart().await?;
        // The agent comes back on its own address: its peer knows it by that.
        let listener = tokio::net::TcpListener::bind(addrs[active]).await?;
        agents[active] =
            Some(start_agent(&local, names[active], GROUP, listener, &addrs[survivor].to_string(), &witness).await?);
        acknowledge(&nodes, GROUP).await?;
    }
    println!("failure -> survivor writable (lease-safe promotion), {trials} trials: {}", summary(&latencies));
    for a in agents.into_iter().flatten() {
        a.shutdown().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
    drop(stubs);
    Ok(())
}

/// Heartbeats as the two sites' agents would send them (east's and west's tokens), as fast as
/// `clients` connections allow: the per-credential rate limit is lifted for the measurement.
pub async fn heartbeats(
    dir: &Path,
    clients: usize,
    duration: Duration,
    tls: bool,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    samples.set("clients", clients);
    samples.set("duration_s", duration.as_secs_f64());
    samples.set("tls", tls);
    let config = sites_and_group("http://127.0.0.1:9/healthz", "http://127.0.0.1:9/healthz");
    let mut local = Local::new(dir, tls, &["east", "west"]);
    local.rate = Some(10_000_000);
    let nodes = start_cluster(&local, &config).await?;
    let leader = wait_for_leader(&nodes, GROUP).await?;
    let addr = nodes.iter().find(|n| n.node.id == leader.id).expect("leader is a node").addr;
    let transport = if tls { "HTTPS" } else { "plain HTTP" };
    println!(
        "3-node cluster, leader node {}; {clients} clients posting heartbeats over {transport} for {duration:?}",
        leader.id
    );
    let http = [local.client(Some(local.site_token("east")?))?, local.client(Some(local.site_token("west")?))?];
    let body = serde_json::json!({"peer_reachable": true, "groups": {GROUP: {"in_sync": true, "role": "standby"}}});
    let started = Stopwatch::start();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (http, body) = (http[c % 2].clone(), body.clone());
        let url =
            format!("{}://{addr}/v1/sites/{}/heartbeat", local.scheme(), if c % 2 == 0 { "east" } else { "west" });
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while started.elapsed() < duration {
                let t = Stopwatch::start();
                let resp = http.post(&url).json(&body).send().await?;
                anyhow::ensure!(resp.status().is_success(), "heartbeat answered HTTP {}", resp.status());
                resp.bytes().await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{} heartbeats answered in {secs:.1} s: {:.0}/s, {}", all.len(), all.len() as f64 / secs, summary(&all));
    let label = "heartbeat answered";
    samples.extend(label, &all);
    samples.set_in(label, "seconds", secs);
    samples.set_in(label, "per_s", all.len() as f64 / secs);
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// Polls `probe` every 2 ms until it returns `Some` or `timeout` passes.
async fn wait_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let waited = Stopwatch::start();
    while waited.elapsed() < timeout {
        if let Some(v) = probe() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}
