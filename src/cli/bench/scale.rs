//! `witness bench scale`: one witness cluster with many groups and their agents, as processes
//! of their own (three `witness serve` and two `witness agent`, this binary, over TLS from a
//! development CA), in steady state and through a mass failover.
//!
//! The shape: sites east and west host `--groups` groups (east their primary), each site with
//! one real agent process serving all of them (heartbeats every 250 ms, each group's replication
//! read every 250 ms from a URL this process serves); one more pair of sites, a and b, holds
//! one group without agents (`solo`). Measured in steady state: the agents' heartbeat round
//! trip (p50/p99 from their histogram, read as each bucket's upper bound), each node's CPU
//! (share of one core, from /proc) and RSS, the Raft log's growth (entries and bytes of its
//! directory, per hour), the snapshot file's size, and `/v1/status`'s size and latency; then
//! `solo`'s primary dies while every other group stays (failure → decided). With
//! `--mass-failover`, east dies whole (its health endpoint, and its agent with kill -9): per
//! group, failure → decided, → promoted and → complete, read from the journal (each event
//! dated by the leader's wall clock, on this machine), and the log entries it took. Each
//! group's plan is a webhook (to a receiver in this process) and, with `--dns-server`, an
//! RFC 2136 update of its own record in one zone of a real nameserver (`scripts/bench-scale`
//! starts a BIND for it); the time until the nameserver answers the survivor's address for
//! every group's record is observed by querying it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::plan::Dns;
use super::{summary, Samples};
use crate::cli::local::{free_addr, Local, Stub, HOLD_DOWN, SITE};
use crate::clock::{unix_ms, Stopwatch};

/// A child process of the benchmark, killed when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Proc> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    // SAFETY: prctl(2) is async-signal-safe and touches only the child's own settings. The
    // child is killed with the benchmark, even when the benchmark is killed itself.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Proc { name: name.into(), child })
}

/// CPU time (user + system) and resident memory of a process, from /proc.
fn usage(pid: u32) -> anyhow::Result<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) start after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the name; 100 Hz ticks.
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 10);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((cpu, rss_kb * 1024))
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The value of a sample line `name{...}` (first match with all `labels`) in a Prometheus text.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A histogram's cumulative bucket counts (upper bound in seconds → count).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of what was observed between two reads.
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|b| b.0 == *le).map_or(0.0, |b| b.1))).collect();
    let total = delta.last()?.1;
    (total > 0.0).then(|| delta.iter().find(|(_, n)| *n >= q * total).map_or(f64::INFINITY, |b| b.0))
}

struct Cluster {
    local: Local,
    http: reqwest::Client,
    addrs: Vec<String>,
    nodes: Vec<Proc>,
}

impl Cluster {
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

pub async fn bench(
    dir: &Path,
    groups: usize,
    steady: Duration,
    mass_failover: bool,
    dns: Option<Dns>,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    samples.set("groups", groups);
    samples.set("steady_s", steady.as_secs_f64());
    samples.set("dns_server", dns.as_ref().map(|d| d.server.clone()));
    anyhow::ensure!(dns.is_none() || groups <= 2000, "with --dns-server, at most 2000 groups (records g0001 to g2000)");
    std::fs::create_dir_all(dir)?;
    let names: Vec<String> = (1..=groups).map(|i| format!("g{i:04}")).collect();
    let mut stubs = BTreeMap::new();
    for (i, site) in ["east", "west", "a", "b"].into_iter().enumerate() {
        stubs.insert(site, Stub::start(0.0, i as u64).await?);
    }
    // Every group's replication, as the agents read it: in sync.
    let replication = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let replication_url = format!("http://{}/r", replication.local_addr()?);
    let app = axum::Router::new().route("/r", axum::routing::get(|| async { r#"{"in_sync": true}"# }));
    let replication_server = tokio::spawn(async move { axum::serve(replication, app).await });
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }));
    let receiver = tokio::spawn(async move { axum::serve(receiver, app).await });
    // Each group's own record in the zone.
    let records: Vec<Dns> = names
        .iter()
        .filter_map(|g| {
            let d = dns.as_ref()?;
            Some(Dns { record: format!("{g}.{}", d.zone), ..d.clone() })
        })
        .collect();

    let site = |name: &str| {
        format!("[[site]]\nname = \"{name}\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{}\"\n", stubs[name].url())
    };
    let mut config = String::from("[cluster.raft]\nsnapshot_interval = \"5s\"\n");
    for name in ["east", "west", "a", "b"] {
        config += &site(name);
    }
    let group = |name: &str, primary: &str, secondary: &str, agents: bool| {
        format!(
            "[[group]]\nname = \"{name}\"\nprimary = \"{primary}\"\nsecondary = \"{secondary}\"\nreplication = \"sync\"\n\
             rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"{HOLD_DOWN}\"\n{}",
            if agents { "agents = true\nlease = \"1s\"\nlease_margin = \"100ms\"\n" } else { "" }
        )
    };
    for (i, name) in names.iter().enumerate() {
        config += &group(name, "east", "west", true);
        config += &format!("[[group.step]]\nname = \"notify\"\nkind = \"webhook\"\nurl = \"{hook}\"\n");
        if let Some(dns) = records.get(i) {
            config += &dns.step_config("dns");
        }
    }
    config += &group("solo", "a", "b", false);

    let mut local = Local::new(dir, true, &[]);
    // Heartbeats of many groups come from two agents: the per-credential limit is not measured.
    local.rate = Some(1_000_000);
    let mut addrs = Vec::new();
    for _ in 0..3 {
        addrs.push(free_addr().await?.to_string());
    }
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let path = dir.join(format!("node{id}.toml"));
        std::fs::write(&path, local.node_config(id, &addrs, &config))?;
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
    let cluster = Cluster { local, http, addrs: addrs.clone(), nodes };
    let (leader, _) = cluster.leader(groups + 1).await?;
    println!(
        "3 witness nodes (processes), {groups} groups on east/west with agents and 1 (solo) without, \
         ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let agent_addrs = [free_addr().await?, free_addr().await?];
    let groups_text: String =
        names.iter().map(|g| format!("[[group]]\nname = \"{g}\"\nreplication_url = \"{replication_url}\"\n")).collect();
    let mut agents = Vec::new();
    for (i, site) in ["east", "west"].into_iter().enumerate() {
        let text =
            cluster.local.agent_config(site, agent_addrs[i], &agent_addrs[1 - i].to_string(), &addrs, &groups_text)?;
        let path = dir.join(format!("agent-{site}.toml"));
        std::fs::write(&path, text)?;
        agents.push(Some(spawn(dir, &format!("agent-{site}"), &["agent", "--config", &path.display().to_string()])?));
    }
    let agent_metrics = |i: usize| {
        let (http, addr) = (cluster.http.clone(), agent_addrs[i]);
        async move {
            let resp = http.get(format!("https://{addr}/metrics")).send().await?;
            anyhow::Ok(resp.text().await?)
        }
    };
    let settled = Stopwatch::start();
    loop {
        let text = agent_metrics(0).await.unwrap_or_default();
        let writable = text.lines().filter(|l| l.starts_with("witness_agent_writable{") && l.ends_with(" 1")).count();
        if writable == groups {
            break;
        }
        anyhow::ensure!(
            settled.elapsed() < Duration::from_secs(120),
            "east's agent writable for {writable} of {groups} groups after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("east's agent writable for all {groups} groups {:.1} s after it started", settled.elapsed().as_secs_f64());

    // Steady state.
    let leader_metrics = |addr: String| {
        let http = cluster.http.clone();
        async move { anyhow::Ok(http.get(format!("https://{addr}/metrics")).send().await?.text().await?) }
    };
    let index = |text: &str| metric(text, "witness_raft_last_log_index", &[]).unwrap_or(0.0);
    // What starting commits settles first (each group's plan checked soon after the election,
    // its steps' readiness journaled): the steady state is what follows.
    let (mut last, mut quiet, warming) =
        (index(&leader_metrics(leader.clone()).await?), Stopwatch::start(), Stopwatch::start());
    while quiet.elapsed() < Duration::from_secs(5) && warming.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = index(&leader_metrics(leader.clone()).await?);
        if now != last {
            (last, quiet) = (now, Stopwatch::start());
        }
    }
    println!("the log quiet (5 s without an entry) {:.1} s later", warming.elapsed().as_secs_f64());
    let leader_id = cluster.addrs.iter().position(|a| *a == leader).expect("a node") + 1;
    let log_dir = dir.join(format!("node{leader_id}")).join("raft-log");
    let agents_usage = || -> Vec<Duration> {
        agents.iter().flatten().map(|p| usage(p.child.id()).map(|u| u.0).unwrap_or_default()).collect()
    };
    let agents_before = agents_usage();
    let before = (index(&leader_metrics(leader.clone()).await?), dir_size(&log_dir), cluster.node_usage());
    let beats_before = buckets(&agent_metrics(0).await?, "witness_agent_heartbeat_seconds");
    let mut status_lat = Vec::new();
    let mut status_bytes = 0;
    let mut rss_max = [0u64; 3];
    let clock = Stopwatch::start();
    while clock.elapsed() < steady {
        let t = Stopwatch::start();
        let text = cluster.get(&leader, "/v1/status").await?;
        status_lat.push(t.elapsed());
        status_bytes = text.len();
        for (i, (_, rss)) in cluster.node_usage().into_iter().enumerate() {
            rss_max[i] = rss_max[i].max(rss);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = clock.elapsed().as_secs_f64();
    let after = (index(&leader_metrics(leader.clone()).await?), dir_size(&log_dir), cluster.node_usage());
    let beats_after = buckets(&agent_metrics(0).await?, "witness_agent_heartbeat_seconds");
    let (p50, p99) =
        (bucket_quantile(&beats_before, &beats_after, 0.5), bucket_quantile(&beats_before, &beats_after, 0.99));
    let ms = |s: Option<f64>| s.map_or("-".into(), |s| format!("≤ {:.0} ms", s * 1000.0));
    println!("steady state, {secs:.0} s:");
    println!("  heartbeat round trip (east's agent, {groups} groups each beat): p50 {}, p99 {}", ms(p50), ms(p99));
    samples.set("heartbeat_p50_ms", p50.map(|s| s * 1000.0));
    samples.set("heartbeat_p99_ms", p99.map(|s| s * 1000.0));
    for (i, p) in cluster.nodes.iter().enumerate() {
        let cpu = (after.2[i].0.saturating_sub(before.2[i].0)).as_secs_f64() / secs;
        let role = if i + 1 == leader_id { "leader" } else { "follower" };
        println!("  {} ({role}): CPU {:.2} of a core, RSS up to {:.1} MB", p.name, cpu, rss_max[i] as f64 / 1e6);
        samples.set(&format!("{role}_{}_cpu_cores", p.name), cpu);
        samples.set(&format!("{role}_{}_rss_mb", p.name), rss_max[i] as f64 / 1e6);
    }
    // The agents share the machine: their load is part of what the witness's answers wait on.
    for ((name, was), now) in ["agent-east", "agent-west"].iter().zip(agents_before).zip(agents_usage()) {
        let cpu = now.saturating_sub(was).as_secs_f64() / secs;
        println!("  {name}: CPU {cpu:.2} of a core ({groups} replication readings every 250 ms)");
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

    // One group's failover while the others stay.
    let t0 = unix_ms();
    if let Some(a) = stubs.get_mut("a") {
        a.kill().await;
    }
    let decided = loop {
        let mut events = Vec::new();
        cluster.journal(&leader, &mut events).await?;
        if let Some(d) = first_events(&events, "failover", t0).get("solo") {
            break *d;
        }
        anyhow::ensure!(unix_ms() - t0 < 30_000, "solo did not fail over within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("  one group's failure -> decided, {groups} others steady: {} ms", decided.as_millis());
    samples.push("solo failure -> decided", decided);

    if mass_failover {
        let (leader, _) = cluster.leader(groups + 1).await?;
        let entries_before = index(&leader_metrics(leader.clone()).await?);
        let t0 = unix_ms();
        if let Some(east) = stubs.get_mut("east") {
            east.kill().await;
        }
        drop(agents[0].take());
        let waited = Stopwatch::start();
        let mut events = Vec::new();
        cluster.journal(&leader, &mut events).await?;
        let events = loop {
            cluster.journal(&leader, &mut events).await?;
            let done = first_events(&events, "failover_complete", t0).keys().filter(|g| **g != "solo").count();
            if done == groups || waited.elapsed() > Duration::from_secs(120) {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let entries = index(&leader_metrics(leader.clone()).await?) - entries_before;
        println!("mass failover: east (its endpoint and its agent) dies with {groups} groups:");
        for (kind, label) in [("failover", "decided"), ("promoted", "promoted"), ("failover_complete", "plan complete")]
        {
            let times: Vec<Duration> =
                first_events(&events, kind, t0).into_iter().filter(|(g, _)| g != "solo").map(|(_, d)| d).collect();
            let last = times.iter().max().copied().unwrap_or_default();
            println!(
                "  failure -> {label}: {} of {groups} groups, {}, last {} ms",
                times.len(),
                summary(&times),
                last.as_millis()
            );
            samples.extend(&format!("mass failure -> {label}"), &times);
            samples.set_in(&format!("mass failure -> {label}"), "groups", times.len());
        }
        println!("  log entries from the failure to the last group complete: {entries:.0}");
        // What the plans went through: a retry or a failure shows here, with its first reason.
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["at_ms"].as_u64().is_some_and(|at| at >= t0)) {
            *kinds.entry(e["kind"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        println!("  journal events by kind: {kinds:?}");
        samples.set("mass_failover_journal_by_kind", &kinds);
        for kind in ["step_retrying", "step_failed"] {
            if let Some(e) = events.iter().find(|e| e["kind"] == kind && e["at_ms"].as_u64().is_some_and(|at| at >= t0))
            {
                println!("  first {kind}: {}", e["message"].as_str().unwrap_or_default());
            }
        }
        samples.set("mass_failover_log_entries", entries);
        if !records.is_empty() {
            // The journal says when each step was done; the nameserver says what it serves.
            let mut pending: Vec<&Dns> = records.iter().collect();
            while !pending.is_empty() && unix_ms() - t0 < 120_000 {
                let mut still = Vec::new();
                for d in pending {
                    if !d.answers_survivor().await {
                        still.push(d);
                    }
                }
                pending = still;
            }
            let all = Duration::from_millis(unix_ms() - t0);
            anyhow::ensure!(pending.is_empty(), "{} records still not on west 120 s after the failure", pending.len());
            println!(
                "  failure -> the nameserver answers west for all {} records: {} ms",
                records.len(),
                all.as_millis()
            );
            samples.push("mass failure -> DNS answers the survivor for every record", all);
        }
    }
    receiver.abort();
    replication_server.abort();
    drop(agents);
    drop(cluster);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_upper_bound_of_its_bucket_between_two_reads() {
        let text = "x_bucket{le=\"0.001\"} 10\nx_bucket{le=\"0.01\"} 60\nx_bucket{le=\"+Inf\"} 100\n";
        let before = buckets(text, "x");
        let after = buckets("x_bucket{le=\"0.001\"} 10\nx_bucket{le=\"0.01\"} 150\nx_bucket{le=\"+Inf\"} 200\n", "x");
        // Between the reads: 0 under 1 ms, 90 under 10 ms, 100 in all.
        assert_eq!(bucket_quantile(&before, &after, 0.5), Some(0.01));
        assert_eq!(bucket_quantile(&before, &after, 0.99), Some(f64::INFINITY));
        assert_eq!(bucket_quantile(&before, &before, 0.5), None);
        assert_eq!(metric("a_b 1\na{g=\"x\"} 2\na{g=\"y\"} 3\n", "a", &["g=\"y\""]), Some(3.0));
    }
}
