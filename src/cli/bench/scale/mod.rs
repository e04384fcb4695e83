//! `witness bench scale`: one witness cluster of three `witness serve` processes (this binary,
//! over TLS from a development CA) with many groups and their agents, in steady state and
//! through failures, in one of two shapes (`--shape`):
//!
//! * `sites` ([`sites`]): two sites host every group, one real agent process per site;
//! * `pairs` ([`pairs`]): many site pairs, two groups per pair, one agent per site, the agents
//!   simulated by this process with the product's own agent code.
//!
//! Both measure the same steady state ([`steady_state`]): the agents' heartbeat round trip
//! (p50/p99 from their own histograms, read as each bucket's upper bound), each node's CPU
//! (share of one core, from /proc) and RSS, the CPU of whatever else runs the agents, the Raft
//! log's growth (entries and bytes of its directory, per hour), the snapshot file's size, and
//! `/v1/status`'s size and latency; then one group's primary dies while every other group stays
//! ([`one_failover`], failure → decided, from the journal). Each group's plan is a webhook to a
//! receiver in this process, and the agents read replication (always in sync) from a URL this
//! process serves ([`Fixtures`]). The journal dates each event by the leader's wall clock, on
//! this machine.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::plan::Dns;
use super::{summary, Samples};
use crate::cli::local::{free_addr, Local, HOLD_DOWN, SITE};
use crate::clock::{unix_ms, Stopwatch};

mod pairs;
mod procs;
mod prom;
mod route53;
mod sites;

use procs::{dir_size, spawn, usage, Proc};
use prom::{bucket_quantile, metric};

/// Every shape's Raft settings: snapshots often, so that one is on disk to measure.
const RAFT: &str = "[cluster.raft]\nsnapshot_interval = \"5s\"\n";

/// How the groups sit on sites, and what runs their agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Sites east and west host every group, one agent process per site (plus `solo`).
    Sites,
    /// N sites in N/2 pairs, two groups per pair (one each way), one agent per site, all
    /// agents run by this process.
    Pairs,
}

/// What each group's plan changes beside its webhook, in the sites shape's mass failover.
pub struct Targets {
    /// A nameserver taking RFC 2136 updates of each group's record.
    pub dns: Option<Dns>,
    /// A Route 53 API on which the benchmark makes a zone with each group's record.
    pub route53: Option<String>,
}

pub async fn bench(
    dir: &Path,
    shape: Shape,
    groups: usize,
    steady: Duration,
    mass_failover: bool,
    targets: Targets,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    samples.set("shape", shape);
    samples.set("groups", groups);
    samples.set("steady_s", steady.as_secs_f64());
    samples.set("dns_server", targets.dns.as_ref().map(|d| d.server.clone()));
    samples.set("route53_endpoint", &targets.route53);
    std::fs::create_dir_all(dir)?;
    match shape {
        Shape::Sites => sites::bench(dir, groups, steady, mass_failover, targets, samples).await,
        Shape::Pairs => {
            anyhow::ensure!(
                !mass_failover,
                "--mass-failover is for --shape sites (a whole site hosting every group); the pairs shape \
                 measures steady state and one group's failover"
            );
            anyhow::ensure!(
                targets.dns.is_none() && targets.route53.is_none(),
                "--dns-server and --route53-endpoint are for --shape sites: the pairs shape's plans are webhooks \
                 only (run it without scripts/bench-scale)"
            );
            pairs::bench(dir, groups, steady, samples).await
        }
    }
}

/// What the agents and the plans of every shape talk to in this process: each group's
/// replication reading (always in sync), and a webhook receiver answering 204.
struct Fixtures {
    replication_url: String,
    hook: String,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Fixtures {
    async fn start() -> anyhow::Result<Fixtures> {
        let replication = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let replication_url = format!("http://{}/r", replication.local_addr()?);
        let app = axum::Router::new().route("/r", axum::routing::get(|| async { r#"{"in_sync": true}"# }));
        let replication = tokio::spawn(async move { axum::serve(replication, app).await });
        let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hook = format!("http://{}/hook", receiver.local_addr()?);
        let app =
            axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }));
        let receiver = tokio::spawn(async move { axum::serve(receiver, app).await });
        Ok(Fixtures { replication_url, hook, servers: vec![replication, receiver] })
    }

    /// A `[[site]]` table with the metro timings, probed at `health_url`.
    fn site(name: &str, health_url: &str) -> String {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{health_url}\"\n")
    }

    /// A synchronous, automatic `[[group]]` table; with `agents`, leases from its sites' agents
    /// and a plan of one webhook step to this process.
    fn group(&self, name: &str, primary: &str, secondary: &str, agents: bool) -> String {
        let mut text = format!(
            "[[group]]\nname = \"{name}\"\nprimary = \"{primary}\"\nsecondary = \"{secondary}\"\nreplication = \"sync\"\n\
             rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n"
        );
        if agents {
            text += "agents = true\nlease = \"1s\"\nlease_margin = \"100ms\"\n";
            text += &format!("[[group.step]]\nname = \"notify\"\nkind = \"webhook\"\nurl = \"{}\"\n", self.hook);
        }
        text
    }

    /// An agent's `[[group]]` table for `group`, reading its replication from this process.
    fn agent_group(&self, group: &str) -> String {
        format!("[[group]]\nname = \"{group}\"\nreplication_url = \"{}\"\n", self.replication_url)
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

struct Cluster {
    local: Local,
    http: reqwest::Client,
    addrs: Vec<String>,
    nodes: Vec<Proc>,
}

impl Cluster {
    /// Three `witness serve` processes with `sites_and_groups`, once one leads, is ready and
    /// has registered `groups` groups: the cluster and its leader's address.
    async fn start(
        dir: &Path,
        local: Local,
        sites_and_groups: &str,
        groups: usize,
    ) -> anyhow::Result<(Cluster, String)> {
        let mut addrs = Vec::new();
        for _ in 0..3 {
            addrs.push(free_addr().await?.to_string());
        }
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let path = dir.join(format!("node{id}.toml"));
            std::fs::write(&path, local.node_config(id, &addrs, sites_and_groups))?;
            nodes.push(spawn(dir, &format!("node{id}"), &["serve", "--config", &path.display().to_string()])?);
        }
        let started = Stopwatch::start();
        // The first node to start makes the development CA and the admin token the client needs.
        let http = loop {
            match local.client(None) {
                Ok(http) => break http,
                Err(e) if started.elapsed() > Duration::from_secs(30) => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let cluster = Cluster { local, http, addrs, nodes };
        let (leader, _) = cluster.leader(groups).await?;
        Ok((cluster, leader))
    }

    async fn get(&self, addr: &str, path: &str) -> anyhow::Result<String> {
        let url = format!("https://{addr}{path}");
        let resp = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(resp.status().is_success(), "GET {url}: HTTP {}", resp.status());
        Ok(resp.text().await?)
    }

    /// The ready leader's address and its status, once it has registered `groups` groups.
    async fn leader(&self, groups: usize) -> anyhow::Result<(String, serde_json::Value)> {
        let waited = Stopwatch::start();
        let mut last = String::from("no node answered");
        while waited.elapsed() < Duration::from_secs(180) {
            for addr in &self.addrs {
                let Ok(text) = self.get(addr, "/v1/status").await else { continue };
                let s: serde_json::Value = serde_json::from_str(&text)?;
                let registered = s["groups"].as_array().map_or(0, Vec::len);
                if s["role"] == "leader" && s["ready"] == true && registered == groups {
                    return Ok((addr.clone(), s));
                }
                if s["role"] == "leader" {
                    last = format!("leader {addr}: ready {}, {registered} of {groups} groups", s["ready"]);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("no ready leader with every group registered within 180 s: {last}")
    }

    /// Every journal event after `events`' last, appended to it. Read as they come: a node keeps
    /// the last 10,000 events, fewer than a mass failover of 1,000 groups writes.
    async fn journal(&self, addr: &str, events: &mut Vec<serde_json::Value>) -> anyhow::Result<()> {
        let mut since = events.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        loop {
            let page: serde_json::Value =
                serde_json::from_str(&self.get(addr, &format!("/v1/events?since={since}&limit=1000")).await?)?;
            let batch = page["events"].as_array().cloned().unwrap_or_default();
            let Some(last) = batch.last().and_then(|e| e["seq"].as_u64()) else { return Ok(()) };
            since = last;
            events.extend(batch);
        }
    }

    /// The leader's last log index, from its metrics.
    async fn log_index(&self, leader: &str) -> anyhow::Result<f64> {
        Ok(metric(&self.get(leader, "/metrics").await?, "witness_raft_last_log_index", &[]).unwrap_or(0.0))
    }

    fn node_usage(&self) -> Vec<(Duration, u64)> {
        self.nodes.iter().map(|p| usage(p.child.id()).unwrap_or_default()).collect()
    }
}

/// The time of the first event of `kind` for each group, in ms after `t0` (Unix ms).
fn first_events(events: &[serde_json::Value], kind: &str, t0: u64) -> BTreeMap<String, Duration> {
    let mut firsts = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == kind) {
        let (Some(group), Some(at)) = (e["group"].as_str(), e["at_ms"].as_u64()) else { continue };
        if at >= t0 {
            firsts.entry(group.to_string()).or_insert(Duration::from_millis(at - t0));
        }
    }
    firsts
}

/// Where a shape's heartbeats are timed, and what else runs its agents on this machine.
struct Agents<F> {
    /// The agents' heartbeat histogram (`witness_agent_heartbeat_seconds` buckets), as of now.
    heartbeats: F,
    /// Whose heartbeats those are, for the printed line.
    heartbeats_of: String,
    /// The processes running the agents (name, pid, what they do), their CPU measured too:
    /// their load is part of what the witness's answers wait on.
    processes: Vec<(String, u32, String)>,
}

/// The steady state, once the log is quiet: heartbeats, each node's CPU and RSS, the agents'
/// processes' CPU, the log's growth, the snapshot, `/v1/status`; printed and into `samples`.
async fn steady_state<F, Fut>(
    cluster: &Cluster,
    dir: &Path,
    leader: &str,
    steady: Duration,
    agents: &Agents<F>,
    samples: &mut Samples,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<(f64, f64)>>>,
{
    // What starting commits settles first (each group's plan checked soon after the election,
    // its steps' readiness journaled): the steady state is what follows.
    let (mut last, mut quiet, warming) = (cluster.log_index(leader).await?, Stopwatch::start(), Stopwatch::start());
    while quiet.elapsed() < Duration::from_secs(5) && warming.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cluster.log_index(leader).await?;
        if now != last {
            (last, quiet) = (now, Stopwatch::start());
        }
    }
    println!("the log quiet (5 s without an entry) {:.1} s later", warming.elapsed().as_secs_f64());
    let leader_id = cluster.addrs.iter().position(|a| a == leader).expect("a node") + 1;
    let log_dir = dir.join(format!("node{leader_id}")).join("raft-log");
    let agents_usage = || -> Vec<Duration> {
        agents.processes.iter().map(|(_, pid, _)| usage(*pid).map(|u| u.0).unwrap_or_default()).collect()
    };
    let agents_before = agents_usage();
    let before = (cluster.log_index(leader).await?, dir_size(&log_dir), cluster.node_usage());
    let beats_before = (agents.heartbeats)().await?;
    let mut status_lat = Vec::new();
    let mut status_bytes = 0;
    let mut rss_max = [0u64; 3];
    let clock = Stopwatch::start();
    while clock.elapsed() < steady {
        let t = Stopwatch::start();
        let text = cluster.get(leader, "/v1/status").await?;
        status_lat.push(t.elapsed());
        status_bytes = text.len();
        for (i, (_, rss)) in cluster.node_usage().into_iter().enumerate() {
            rss_max[i] = rss_max[i].max(rss);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = clock.elapsed().as_secs_f64();
    let after = (cluster.log_index(leader).await?, dir_size(&log_dir), cluster.node_usage());
    let agents_after = agents_usage();
    let beats_after = (agents.heartbeats)().await?;
    let (p50, p99) =
        (bucket_quantile(&beats_before, &beats_after, 0.5), bucket_quantile(&beats_before, &beats_after, 0.99));
    let beats = beats_after.last().map_or(0.0, |b| b.1) - beats_before.last().map_or(0.0, |b| b.1);
    let ms = |s: Option<f64>| s.map_or("-".into(), |s| format!("≤ {:.0} ms", s * 1000.0));
    println!("steady state, {secs:.0} s:");
    println!(
        "  heartbeat round trip ({}): {beats:.0} answered, {:.0}/s, p50 {}, p99 {}",
        agents.heartbeats_of,
        beats / secs,
        ms(p50),
        ms(p99)
    );
    samples.set("heartbeats_answered", beats);
    samples.set("heartbeats_per_s", beats / secs);
    samples.set("heartbeat_p50_ms", p50.map(|s| s * 1000.0));
    samples.set("heartbeat_p99_ms", p99.map(|s| s * 1000.0));
    for (i, p) in cluster.nodes.iter().enumerate() {
        let cpu = (after.2[i].0.saturating_sub(before.2[i].0)).as_secs_f64() / secs;
        let role = if i + 1 == leader_id { "leader" } else { "follower" };
        println!("  {} ({role}): CPU {:.2} of a core, RSS up to {:.1} MB", p.name, cpu, rss_max[i] as f64 / 1e6);
        samples.set(&format!("{role}_{}_cpu_cores", p.name), cpu);
        samples.set(&format!("{role}_{}_rss_mb", p.name), rss_max[i] as f64 / 1e6);
    }
    for (((name, _, what), was), now) in agents.processes.iter().zip(agents_before).zip(agents_after) {
        let cpu = now.saturating_sub(was).as_secs_f64() / secs;
        println!("  {name}: CPU {cpu:.2} of a core ({what})");
        samples.set(&format!("{name}_cpu_cores"), cpu);
    }
    let entries_per_hour = (after.0 - before.0) / secs * 3600.0;
    let bytes_per_hour = after.1.saturating_sub(before.1) as f64 / secs * 3600.0;
    println!(
        "  Raft log: {entries_per_hour:.0} entries/h, {:.1} MB/h on disk (before compaction)",
        bytes_per_hour / 1e6
    );
    samples.set("log_entries_per_hour", entries_per_hour);
    samples.set("log_mb_per_hour", bytes_per_hour / 1e6);
    let snapshot = dir.join(format!("node{leader_id}")).join("snapshot").join("current.snap");
    let snapshot_bytes = std::fs::metadata(&snapshot).map(|m| m.len()).unwrap_or(0);
    println!("  snapshot: {:.1} KB", snapshot_bytes as f64 / 1e3);
    samples.set("snapshot_kb", snapshot_bytes as f64 / 1e3);
    println!("  /v1/status: {:.1} KB, {}", status_bytes as f64 / 1e3, summary(&status_lat));
    samples.extend("/v1/status", &status_lat);
    samples.set("status_kb", status_bytes as f64 / 1e3);
    Ok(())
}

/// Failure → decided for `group`, whose primary failed at `t0` (Unix ms), from the leader's
/// journal: its first `failover` event. Printed and into `samples` as `label`.
async fn one_failover(
    cluster: &Cluster,
    leader: &str,
    group: &str,
    t0: u64,
    others: usize,
    label: &str,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let mut events = Vec::new();
    let decided = loop {
        cluster.journal(leader, &mut events).await?;
        if let Some(d) = first_events(&events, "failover", t0).get(group) {
            break *d;
        }
        anyhow::ensure!(unix_ms() - t0 < 30_000, "{group} did not fail over within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("  one group's failure -> decided ({group}), {others} others steady: {} ms", decided.as_millis());
    samples.push(label, decided);
    Ok(())
}
