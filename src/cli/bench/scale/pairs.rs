//! The `pairs` shape of `witness bench scale`: many site pairs. `--groups N` groups on N sites
//! in N/2 pairs (p0001a and p0001b, ...), each pair hosting two groups, one with primary a and
//! one with primary b, so that every site is the primary of one group and the secondary of
//! another. Every site has a health endpoint of its own and an agent of its own.
//!
//! The agents are simulated by this process, and say so: N instances of the product's own
//! agent code (`crate::agent::start`), each with its own config, listener, site certificate and
//! key (made by the development CA of the cluster, `site-p0001a.crt`, ...), heartbeating the
//! three node processes every 250 ms over mutual TLS, exchanging peer leases with its pair's
//! other agent over mutual TLS, and reading the replication of the group it is standby of
//! every 250 ms. So the wire protocol, the credentials and the per-site rate limits are the
//! real ones; what differs from N machines is that the agents share this process's CPU
//! (measured and printed). That is also why an agent does not read the replication of the
//! group it is active for: the witness weighs only the standby's reading (its copy is what a
//! failover promotes), and those N readings every 250 ms, which no node sees, would take CPU
//! from the nodes on the same machine.
//! The heartbeat round trip is read from the agents' own histograms (each agent's `/metrics`,
//! summed over all of them): every agent has its registry, no process-wide one.
//!
//! Each site's health endpoint is a [`Stub`] on a port of its own rather than one server
//! answering for every site: the nodes' probers share one HTTP client whose pool keeps one
//! idle connection per host and port, so one address for all sites would turn most probes into
//! new connections, which no deployment of distinct sites sees. A thousand small servers cost
//! a task and a socket each.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

use super::prom::{buckets, sum_buckets};
use super::{one_failover, steady_state, Agents, Cluster, Fixtures, RAFT};
use crate::agent::RunningAgent;
use crate::cli::bench::Samples;
use crate::cli::local::{loopback, start_agent_for, Local, Stub};
use crate::clock::{unix_ms, Stopwatch};

/// The names of pair `i` (1-based)'s sites, a then b, and of its groups, primary a then b.
fn pair(i: usize) -> ([String; 2], [String; 2]) {
    ([format!("p{i:04}a"), format!("p{i:04}b")], [format!("g{:04}", 2 * i - 1), format!("g{:04}", 2 * i)])
}

pub(super) async fn bench(dir: &Path, groups: usize, steady: Duration, samples: &mut Samples) -> anyhow::Result<()> {
    anyhow::ensure!(
        groups >= 2 && groups.is_multiple_of(2),
        "--shape pairs needs an even --groups (N groups on N sites in N/2 pairs), not {groups}"
    );
    let pairs = groups / 2;
    let fixtures = Fixtures::start().await?;
    let mut stubs = Vec::with_capacity(groups);
    let mut config = String::from(RAFT);
    for i in 1..=pairs {
        let (sites, _) = pair(i);
        for site in &sites {
            let stub = Stub::start(0.0, stubs.len() as u64).await?;
            config += &Fixtures::site(site, &stub.url());
            stubs.push(stub);
        }
    }
    for i in 1..=pairs {
        let ([a, b], [ga, gb]) = pair(i);
        config += &fixtures.group(&ga, &a, &b, true);
        config += &fixtures.group(&gb, &b, &a, true);
    }

    let mut local = Local::new(dir, true, &[]);
    // The benchmark's own reads (status, journal, metrics) are not what is measured; each
    // agent sends 4 heartbeats a second with its own certificate, far under any limit.
    local.rate = Some(1_000_000);
    let started = Stopwatch::start();
    let (cluster, leader) = Cluster::start(dir, local, &config, groups).await?;
    println!(
        "3 witness nodes (processes), {groups} sites in {pairs} pairs, {groups} groups (two per pair, one each way), \
         ready in {:.1} s (the first node made the CA and {groups} site certificates)",
        started.elapsed().as_secs_f64()
    );

    // Every listener is bound before any agent starts, so each can be handed its peer's address.
    let mut listeners = Vec::with_capacity(groups);
    for _ in 0..groups {
        listeners.push(loopback().await?);
    }
    let addrs: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    let started = Stopwatch::start();
    let mut agents: Vec<Option<RunningAgent>> = Vec::with_capacity(groups);
    for (k, listener) in listeners.into_iter().enumerate() {
        let (i, side) = (k / 2 + 1, k % 2);
        let (sites, names) = pair(i);
        // Site a is primary of the pair's first group and standby of its second; b the reverse.
        let (active, standby) = (&names[side], &names[1 - side]);
        let groups_text = format!("[[group]]\nname = \"{active}\"\n{}", fixtures.agent_group(standby));
        let peer = &addrs[k ^ 1];
        agents.push(Some(
            start_agent_for(&cluster.local, &sites[side], listener, peer, &cluster.addrs, &groups_text).await?,
        ));
    }
    println!(
        "{groups} agents simulated by this process: the product's agent code, one per site, each with its own config, \
         listener and site certificate, heartbeating every 250 ms over mutual TLS (started in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let settled = Stopwatch::start();
    loop {
        let writable: usize =
            agents.iter().flatten().map(|a| a.agent.status().groups.values().filter(|g| g.writable).count()).sum();
        if writable == groups {
            break;
        }
        if settled.elapsed() > Duration::from_secs(120) {
            // One agent's own account of why, as `witness agent status` would give it.
            let why = agents.iter().flatten().map(|a| a.agent.status()).find_map(|s| {
                let problem = s.witness_problem.or(s.peer_problem)?;
                Some(format!("{}'s agent: {problem}", s.site))
            });
            anyhow::bail!(
                "{writable} of {groups} groups writable at their primary's agent after 120 s ({})",
                why.unwrap_or_else(|| "no agent names a problem".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "every group writable at its primary's agent {:.1} s after the agents started",
        settled.elapsed().as_secs_f64()
    );

    let agent_addrs: Vec<std::net::SocketAddr> = agents.iter().flatten().map(|a| a.addr).collect();
    let http = cluster.http.clone();
    // Each agent's own histogram, from its /metrics (a few at a time), added up.
    let heartbeats = || {
        let (http, agent_addrs) = (http.clone(), agent_addrs.clone());
        async move {
            let texts: Vec<anyhow::Result<String>> = futures::stream::iter(agent_addrs)
                .map(|addr| {
                    let http = http.clone();
                    async move { anyhow::Ok(http.get(format!("https://{addr}/metrics")).send().await?.text().await?) }
                })
                .buffer_unordered(16)
                .collect()
                .await;
            let mut all = Vec::with_capacity(texts.len());
            for text in texts {
                all.push(buckets(&text?, "witness_agent_heartbeat_seconds"));
            }
            anyhow::Ok(sum_buckets(all))
        }
    };
    let what = format!(
        "{groups} agents (heartbeats, peer leases, {groups} standby replication readings every 250 ms), {groups} \
         health endpoints, the webhook receiver, and this benchmark's own reads"
    );
    let agents_view = Agents {
        heartbeats,
        heartbeats_of: format!("all {groups} agents' histograms summed, 2 groups each beat"),
        processes: vec![("bench-process".into(), std::process::id(), what)],
    };
    steady_state(&cluster, dir, &leader, steady, &agents_view, samples).await?;

    // One group's failover while the others stay: p0001a's endpoint and its agent die, so
    // g0001 (primary p0001a) fails over; g0002 merely loses its standby.
    let t0 = unix_ms();
    stubs[0].kill().await;
    if let Some(agent) = agents[0].take() {
        agent.shutdown().await;
    }
    let label = "one group failure -> decided";
    one_failover(&cluster, &leader, &pair(1).1[0], t0, groups - 1, label, samples).await?;
    for agent in agents.into_iter().flatten() {
        agent.shutdown().await;
    }
    drop(cluster);
    drop(fixtures);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_site_of_a_pair_is_primary_of_one_group() {
        assert_eq!(pair(1), (["p0001a".into(), "p0001b".into()], ["g0001".into(), "g0002".into()]));
        assert_eq!(pair(500).1, ["g0999".to_string(), "g1000".to_string()]);
    }
}
