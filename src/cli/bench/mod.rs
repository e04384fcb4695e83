//! `witness bench raft`: commit latency and throughput of a real 3-node cluster (three Raft
//! nodes in this process, each with its own data directory on local disk with fsync, talking
//! HTTP over loopback), next to the disk's own fdatasync latency for scale.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod agents;
mod failover;
mod plan;

use clap::Subcommand;

use super::local::{start_cluster, wait_for_leader, Local};
use super::Exit;
use crate::node::leader::LeaderRequest;
use crate::node::Node;
use crate::state::{Command as StateCommand, Response};

#[derive(Subcommand)]
pub enum Command {
    /// Commit latency (p50/p99) and writes/s, sequential and with concurrent clients.
    Raft {
        /// Writes in the sequential run; the concurrent run does the same number.
        #[arg(long, default_value_t = 2000)]
        writes: usize,
        /// Concurrent clients in the second run.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Put the nodes' data on this disk (default: the system temp dir). The run uses a
        /// fresh subdirectory and removes it afterwards.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Plain HTTP instead of TLS, to measure what TLS costs.
        #[arg(long)]
        plain_http: bool,
    },
    /// Detection latency: N trials of "the primary site dies" against a 3-node cluster with
    /// the dev cluster's metro timings, each from the failure to the failover committed.
    Failover {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Lease-safe promotion: N trials of "the active site dies with its agent", each from the
    /// failure to the surviving agent's own verdict that it may write.
    Promotion {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Heartbeat throughput: concurrent clients post agent heartbeats to the leader.
    Heartbeats {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value = "10s", value_parser = crate::config::duration::parse)]
        duration: Duration,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Plain HTTP instead of TLS, to measure what TLS costs.
        #[arg(long)]
        plain_http: bool,
    },
    /// The failover plan: N trials of "the active site dies", each timing the decision, every
    /// plan step done, and (with --dns-server) the nameserver answering the survivor's address.
    Plan {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// A primary nameserver (host:port) whose zone the plan updates by RFC 2136; its
        /// record must hold 192.0.2.1 at the start. `scripts/bench-plan` starts a BIND for it.
        #[arg(long)]
        dns_server: Option<String>,
        /// The TSIG key (tsig-keygen format) the nameserver accepts updates with.
        #[arg(long, requires = "dns_server")]
        dns_key_file: Option<PathBuf>,
        #[arg(long, default_value = "example.test.")]
        dns_zone: String,
        #[arg(long, default_value = "app.example.test.")]
        dns_record: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// False failovers: both sites up while a share of probes is lost, for a while.
    Soak {
        /// Share of probe requests each site drops (0.1 = 10%).
        #[arg(long, default_value_t = 0.1)]
        loss: f64,
        /// How long, e.g. 60s or 30m.
        #[arg(long, default_value = "60s", value_parser = crate::config::duration::parse)]
        duration: Duration,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> Exit {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let dir = match &command {
        Command::Raft { dir, .. }
        | Command::Failover { dir, .. }
        | Command::Promotion { dir, .. }
        | Command::Heartbeats { dir, .. }
        | Command::Plan { dir, .. }
        | Command::Soak { dir, .. } => dir.clone(),
    };
    let dir = dir.unwrap_or_else(std::env::temp_dir).join(format!("witness-bench-{}", std::process::id()));
    let result = match command {
        Command::Raft { writes, concurrency, plain_http, .. } => {
            rt.block_on(bench_raft(&dir, writes.max(1), concurrency.max(1), !plain_http))
        }
        Command::Failover { trials, .. } => rt.block_on(failover::bench(&dir, trials.max(1))),
        Command::Promotion { trials, .. } => rt.block_on(agents::promotion(&dir, trials.max(1))),
        Command::Heartbeats { clients, duration, plain_http, .. } => {
            rt.block_on(agents::heartbeats(&dir, clients.max(1), duration, !plain_http))
        }
        Command::Plan { trials, dns_server, dns_key_file, dns_zone, dns_record, .. } => {
            let dns = match (dns_server, dns_key_file) {
                (Some(server), Some(key_file)) => {
                    Some(plan::Dns { server, key_file, zone: dns_zone, record: dns_record })
                }
                (Some(_), None) => {
                    eprintln!("error: --dns-server needs --dns-key-file");
                    return Exit::Usage;
                }
                _ => None,
            };
            rt.block_on(plan::bench(&dir, trials.max(1), dns))
        }
        Command::Soak { loss, duration, .. } => rt.block_on(failover::soak(&dir, loss.clamp(0.0, 1.0), duration)),
    };
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failed
        }
    }
}

async fn bench_raft(dir: &Path, writes: usize, concurrency: usize, tls: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let fsync = fdatasync_latency(&dir.join("fsync-probe"), 500)?;
    println!("disk fdatasync (4 KiB append, {} samples): {}", fsync.len(), summary(&fsync));

    let mut sites_and_groups = String::from(
        "[[site]]\nname = \"east\"\n[[site.probe]]\nkind = \"tcp\"\naddr = \"127.0.0.1:9\"\n\
         [[site]]\nname = \"west\"\n[[site.probe]]\nkind = \"tcp\"\naddr = \"127.0.0.1:9\"\n",
    );
    for g in 0..concurrency {
        sites_and_groups += &format!(
            "[[group]]\nname = \"bench-{g}\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
             rto = \"5m\"\nrpo = \"0s\"\nfailover = \"manual\"\n"
        );
    }
    let mut local = Local::new(dir, tls, &[]);
    local.rate = Some(10_000_000);
    let nodes = start_cluster(&local, &sites_and_groups).await?;
    let leader = wait_for_leader(&nodes, "bench-0").await?;
    let follower = nodes.iter().find(|n| n.node.id != leader.id).expect("3 nodes");
    let leader_addr = nodes.iter().find(|n| n.node.id == leader.id).expect("leader is a node").addr;
    println!(
        "3-node cluster up ({}), leader node {}",
        if tls { "HTTPS, mutual TLS between nodes" } else { "plain HTTP" },
        leader.id
    );

    let http = local.client(None)?;
    let api =
        |addr: std::net::SocketAddr| Via::Api { http: http.clone(), base: format!("{}://{addr}", local.scheme()) };
    let runs = [
        ("Raft on the leader, 1 client", Via::Raft, 1),
        ("Raft on the leader, concurrent", Via::Raft, concurrency),
        ("HTTP API to the leader, 1 client", api(leader_addr), 1),
        ("HTTP API to a follower (forwarded), 1 client", api(follower.addr), 1),
        ("HTTP API to the leader, concurrent", api(leader_addr), concurrency),
    ];
    for (label, via, clients) in runs {
        let (lat, secs) = run_clients(&leader, &via, clients, writes.div_ceil(clients)).await?;
        println!(
            "{label} ({clients}): {} writes, {}, {:.0} writes/s",
            lat.len(),
            summary(&lat),
            lat.len() as f64 / secs
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// How a benchmark client reaches the cluster.
#[derive(Clone)]
enum Via {
    /// Straight into the leader's Raft, as the node's own duties write.
    Raft,
    /// Through the public HTTP API of the node at `base`.
    Api { http: reqwest::Client, base: String },
}

/// `clients` concurrent clients, each pausing and resuming its own group `per_client` times
/// in turn: every write is a real, committed state change that moves no site (so the decision
/// engine, which runs throughout, has nothing to journal about it). Returns every latency and
/// the wall time.
async fn run_clients(
    leader: &Arc<Node>,
    via: &Via,
    clients: usize,
    per_client: usize,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let group = format!("bench-{c}");
        let (leader, via) = (leader.clone(), via.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                set_paused(&leader, &via, &group, i % 2 == 0).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

async fn set_paused(leader: &Node, via: &Via, group: &str, paused: bool) -> anyhow::Result<()> {
    let response = match via {
        Via::Raft => {
            let cmd = StateCommand::SetPaused { group: group.into(), paused };
            match leader.submit(LeaderRequest::Write(cmd), false).await? {
                crate::node::leader::LeaderReply::Written { response, .. } => response,
                other => anyhow::bail!("unexpected reply {other:?}"),
            }
        }
        Via::Api { http, base } => {
            let action = if paused { "pause" } else { "resume" };
            let resp = http.post(format!("{base}/v1/groups/{group}/{action}")).send().await?;
            resp.json::<Response>().await?
        }
    };
    match response {
        Response::GroupUpdated { paused: now, .. } if now == paused => Ok(()),
        other => anyhow::bail!("benchmark write was not applied: {other:?}"),
    }
}

fn fdatasync_latency(path: &Path, samples: usize) -> std::io::Result<Vec<Duration>> {
    let mut f = File::create(path)?;
    let block = [0u8; 4096];
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        f.write_all(&block)?;
        let t = Instant::now();
        f.sync_data()?;
        out.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok(out)
}

fn summary(samples: &[Duration]) -> String {
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    let pct = |p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*v.last().expect("at least one sample"))
    )
}
