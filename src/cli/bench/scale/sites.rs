//! The `sites` shape of `witness bench scale`: sites east and west host `--groups` groups
//! (east their primary), each site with one real `witness agent` process serving all of them
//! (heartbeats every 250 ms, each group's replication read every 250 ms); one more pair of
//! sites, a and b, holds one group without agents (`solo`), whose primary dies after the
//! steady state while every other group stays.
//!
//! With `--mass-failover`, east dies whole (its health endpoint, and its agent with kill -9):
//! per group, failure → decided, → promoted and → complete, read from the journal, and the log
//! entries it took. Each group's plan is a webhook and, with `--dns-server`, an RFC 2136 update
//! of its own record in one zone of a real nameserver (`scripts/bench-scale` starts a BIND for
//! it); the time until the nameserver answers the survivor's address for every group's record
//! is observed by querying it. With `--route53-endpoint` (`scripts/bench-scale` starts moto),
//! each plan also moves the group's own record in a Route 53 hosted zone, and the time until
//! the zone holds the survivor's address for every record is observed by listing it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::procs::spawn;
use super::prom::buckets;
use super::route53::Zone;
use super::{first_events, one_failover, steady_state, Agents, Cluster, Fixtures, Targets, RAFT};
use crate::cli::bench::plan::Dns;
use crate::cli::bench::{summary, Samples};
use crate::cli::local::{free_addr, Local, Stub};
use crate::clock::{unix_ms, Stopwatch};

pub(super) async fn bench(
    dir: &Path,
    groups: usize,
    steady: Duration,
    mass_failover: bool,
    targets: Targets,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let Targets { dns, route53 } = targets;
    anyhow::ensure!(dns.is_none() || groups <= 2000, "with --dns-server, at most 2000 groups (records g0001 to g2000)");
    let names: Vec<String> = (1..=groups).map(|i| format!("g{i:04}")).collect();
    let mut stubs = BTreeMap::new();
    for (i, site) in ["east", "west", "a", "b"].into_iter().enumerate() {
        stubs.insert(site, Stub::start(0.0, i as u64).await?);
    }
    let fixtures = Fixtures::start().await?;
    // Each group's own record in the zone.
    let records: Vec<Dns> = names
        .iter()
        .filter_map(|g| {
            let d = dns.as_ref()?;
            Some(Dns { record: format!("{g}.{}", d.zone), ..d.clone() })
        })
        .collect();

    let zone = match &route53 {
        Some(endpoint) => Some(Zone::make(endpoint, dir, &names).await.context("making the Route 53 zone")?),
        None => None,
    };

    let mut config = String::from(RAFT);
    for name in ["east", "west", "a", "b"] {
        config += &Fixtures::site(name, &stubs[name].url());
    }
    for (i, name) in names.iter().enumerate() {
        config += &fixtures.group(name, "east", "west", true);
        if let Some(dns) = records.get(i) {
            config += &dns.step_config("dns");
        }
        if let Some(zone) = &zone {
            config += &zone.step_config(name);
        }
    }
    config += &fixtures.group("solo", "a", "b", false);

    let mut local = Local::new(dir, true, &[]);
    // Heartbeats of many groups come from two agents: the per-credential limit is not measured.
    local.rate = Some(1_000_000);
    let started = Stopwatch::start();
    let (cluster, leader) = Cluster::start(dir, local, &config, groups + 1).await?;
    println!(
        "3 witness nodes (processes), {groups} groups on east/west with agents and 1 (solo) without, \
         ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let agent_addrs = [free_addr().await?, free_addr().await?];
    let groups_text: String = names.iter().map(|g| fixtures.agent_group(g)).collect();
    let mut agents = Vec::new();
    for (i, site) in ["east", "west"].into_iter().enumerate() {
        let text = cluster.local.agent_config(
            site,
            agent_addrs[i],
            &agent_addrs[1 - i].to_string(),
            &cluster.addrs,
            &groups_text,
        )?;
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

    let processes = ["east", "west"]
        .iter()
        .zip(&agents)
        .filter_map(|(site, p)| {
            let what = format!("{groups} replication readings every 250 ms");
            Some((format!("agent-{site}"), p.as_ref()?.child.id(), what))
        })
        .collect();
    let agents_view = Agents {
        heartbeats: || async { Ok(buckets(&agent_metrics(0).await?, "witness_agent_heartbeat_seconds")) },
        heartbeats_of: format!("east's agent, {groups} groups each beat"),
        processes,
    };
    steady_state(&cluster, dir, &leader, steady, &agents_view, samples).await?;

    // One group's failover while the others stay.
    let t0 = unix_ms();
    if let Some(a) = stubs.get_mut("a") {
        a.kill().await;
    }
    one_failover(&cluster, &leader, "solo", t0, groups, "solo failure -> decided", samples).await?;

    if mass_failover {
        let (leader, _) = cluster.leader(groups + 1).await?;
        let entries_before = cluster.log_index(&leader).await?;
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
        let entries = cluster.log_index(&leader).await? - entries_before;
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
        if let Some(zone) = &zone {
            // The zone as listed, apart from what the steps say; and how many changes they shared.
            let mut moved = zone.on_west(&names).await?;
            while moved < groups && unix_ms() - t0 < 120_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                moved = zone.on_west(&names).await?;
            }
            let all = Duration::from_millis(unix_ms() - t0);
            anyhow::ensure!(
                moved == groups,
                "{} Route 53 records still not on west 120 s after the failure",
                groups - moved
            );
            let changes = route53_changes(&events, t0);
            println!(
                "  failure -> Route 53 holds west for all {groups} records: {} ms; the steps made {} change(s)",
                all.as_millis(),
                changes.len()
            );
            samples.push("mass failure -> Route 53 holds the survivor for every record", all);
            samples.set("mass_failover_route53_changes", changes.len());
        }
    }
    drop(agents);
    drop(cluster);
    drop(fixtures);
    Ok(())
}

/// The Route 53 changes the steps done since `t0` report (`change ID INSYNC`), each once (a
/// plan's last step done is journaled as `plan_done`).
fn route53_changes(events: &[serde_json::Value], t0: u64) -> std::collections::BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "step_done" || e["kind"] == "plan_done")
        .filter(|e| e["at_ms"].as_u64().is_some_and(|at| at >= t0))
        .filter_map(|e| {
            let message = e["message"].as_str()?;
            let (_, after) = message.split_once(", change ")?;
            Some(after.split_whitespace().next()?.to_string())
        })
        .collect()
}
