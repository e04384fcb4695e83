//! `witness bench raft`: commit latency and throughput of a real 3-node cluster (three Raft
//! nodes in this process, each with its own data directory on local disk with fsync, talking
//! HTTP over loopback), next to the disk's own fdatasync latency for scale. Every benchmark
//! also takes `--samples FILE` for its raw latencies as JSON (`Samples`), which
//! `scripts/bench` turns into the report.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Stopwatch;

mod agents;
mod engine;
mod failover;
mod plan;
mod scale;

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
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
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
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// Lease-safe promotion: N trials of "the active site dies with its agent", each from the
    /// failure to the surviving agent's own verdict that it may write.
    Promotion {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// Heartbeat throughput: concurrent clients post agent heartbeats to the leader.
    Heartbeats {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value = "10s", value_parser = crate::config::duration::parse)]
        duration: Duration,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
        /// Plain HTTP instead of TLS, to measure what TLS costs.
        #[arg(long)]
        plain_http: bool,
    },
    /// The failover plan: N trials of "the active site dies", each timing the decision, every
    /// plan step done, and (with --dns-server) the nameserver answering the survivor's address.
    Plan {
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Its record must hold 192.0.2.1 at the start.
        #[command(flatten)]
        dns: Nameserver,
        #[arg(long, default_value = "app.example.test.")]
        dns_record: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// Many groups: a cluster of processes with `--groups` groups and their agents, in steady
    /// state (heartbeats, CPU, memory, log growth, snapshot, status) and through one group's
    /// failover; with `--shape sites` and `--mass-failover`, through the failure of the site
    /// hosting them all.
    Scale {
        /// sites: every group on sites east and west, one agent process per site. pairs: N
        /// sites in N/2 pairs, two groups per pair, one agent per site (all run by this process).
        #[arg(long, value_enum, default_value = "sites")]
        shape: scale::Shape,
        #[arg(long, default_value_t = 500)]
        groups: usize,
        /// How long the steady state is measured.
        #[arg(long, default_value = "30s", value_parser = crate::config::duration::parse)]
        steady: Duration,
        /// Then kill the site hosting every group and time each group's failover (sites shape).
        #[arg(long)]
        mass_failover: bool,
        /// Each group's plan then updates its own record (g0001, ...) in the zone.
        #[command(flatten)]
        dns: Nameserver,
        /// A Route 53 API (moto: `scripts/bench-scale` starts one): the benchmark makes hosted
        /// zone scale.test. there, and each group's plan also moves its own record in it.
        #[arg(long)]
        route53_endpoint: Option<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
    /// The pure cores' cost against the number of groups, in this process without I/O: a
    /// steady-state tick of the leader, an agent heartbeat carrying every group, the tick that
    /// decides a whole site's failover and applying its proposals, a snapshot encoded and
    /// decoded.
    Engine {
        /// The counts of groups to measure, e.g. 100,1000.
        #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000,2000")]
        groups: Vec<usize>,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Also write the costs and the parameters to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
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
        /// Also write the raw latencies (ms), the parameters and the summary to this file as JSON.
        #[arg(long)]
        samples: Option<PathBuf>,
    },
}

/// A real nameserver for the plans' RFC 2136 steps (`scripts/with-bind` starts a BIND for it).
#[derive(clap::Args)]
pub struct Nameserver {
    /// A primary nameserver (host:port) taking RFC 2136 updates of `--dns-zone`.
    #[arg(long, requires = "dns_key_file")]
    dns_server: Option<String>,
    /// The TSIG key (tsig-keygen format) the nameserver accepts updates with.
    #[arg(long, requires = "dns_server")]
    dns_key_file: Option<PathBuf>,
    #[arg(long, default_value = "example.test.")]
    dns_zone: String,
}

impl Nameserver {
    /// The nameserver, if one was given, for `record`.
    fn with(self, record: String) -> Option<plan::Dns> {
        let (server, key_file) = (self.dns_server?, self.dns_key_file?);
        Some(plan::Dns { server, key_file, zone: self.dns_zone, record })
    }
}

pub fn run(command: Command) -> Exit {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let (dir, samples, name) = match &command {
        Command::Raft { dir, samples, .. } => (dir, samples, "raft"),
        Command::Failover { dir, samples, .. } => (dir, samples, "failover"),
        Command::Promotion { dir, samples, .. } => (dir, samples, "promotion"),
        Command::Heartbeats { dir, samples, .. } => (dir, samples, "heartbeats"),
        Command::Plan { dir, samples, .. } => (dir, samples, "plan"),
        Command::Soak { dir, samples, .. } => (dir, samples, "soak"),
        Command::Scale { dir, samples, .. } => (dir, samples, "scale"),
        Command::Engine { dir, samples, .. } => (dir, samples, "engine"),
    };
    let mut samples = Samples::new(name, samples.clone());
    let dir = dir.clone().unwrap_or_else(std::env::temp_dir).join(format!("witness-bench-{}", std::process::id()));
    let s = &mut samples;
    let result = match command {
        Command::Raft { writes, concurrency, plain_http, .. } => {
            rt.block_on(bench_raft(&dir, writes.max(1), concurrency.max(1), !plain_http, s))
        }
        Command::Failover { trials, .. } => rt.block_on(failover::bench(&dir, trials.max(1), s)),
        Command::Promotion { trials, .. } => rt.block_on(agents::promotion(&dir, trials.max(1), s)),
        Command::Heartbeats { clients, duration, plain_http, .. } => {
            rt.block_on(agents::heartbeats(&dir, clients.max(1), duration, !plain_http, s))
        }
        Command::Plan { trials, dns, dns_record, .. } => {
            rt.block_on(plan::bench(&dir, trials.max(1), dns.with(dns_record), s))
        }
        Command::Soak { loss, duration, .. } => rt.block_on(failover::soak(&dir, loss.clamp(0.0, 1.0), duration, s)),
        Command::Engine { groups, .. } => {
            let mut groups: Vec<usize> = groups.into_iter().filter(|&n| n > 0).collect();
            groups.sort_unstable();
            engine::bench(&dir, &groups, s)
        }
        Command::Scale { shape, groups, steady, mass_failover, dns, route53_endpoint, .. } => {
            // Each group's record is named after it: this one is not used.
            let targets = scale::Targets { dns: dns.with(String::new()), route53: route53_endpoint };
            rt.block_on(scale::bench(&dir, shape, groups.max(1), steady, mass_failover, targets, s))
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = &result {
        samples.set("error", format!("{e:#}"));
    }
    if let Err(e) = samples.write() {
        eprintln!("error: writing the samples: {e:#}");
        return Exit::Failed;
    }
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failed
        }
    }
}

async fn bench_raft(
    dir: &Path,
    writes: usize,
    concurrency: usize,
    tls: bool,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    samples.set("writes", writes);
    samples.set("concurrency", concurrency);
    samples.set("tls", tls);
    std::fs::create_dir_all(dir)?;
    let fsync = fdatasync_latency(&dir.join("fsync-probe"), 500)?;
    println!("disk fdatasync (4 KiB append, {} samples): {}", fsync.len(), summary(&fsync));
    samples.extend("disk fdatasync (4 KiB append)", &fsync);

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
        let label = format!("{label} ({clients})");
        samples.extend(&label, &lat);
        samples.set_in(&label, "clients", clients);
        samples.set_in(&label, "seconds", secs);
        samples.set_in(&label, "writes_per_s", lat.len() as f64 / secs);
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
    let started = Stopwatch::start();
    let mut handles = Vec::new();
    for c in 0..clients {
        let group = format!("bench-{c}");
        let (leader, via) = (leader.clone(), via.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Stopwatch::start();
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
        let t = Stopwatch::start();
        f.sync_data()?;
        out.push(t.elapsed());
    }
    drop(f);
    std::fs::remove_file(path)?;
    Ok(out)
}

/// The `p` quantile of sorted, non-empty `v`: the smallest sample with at least that share of
/// the samples at or below it.
fn quantile(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(samples: &[Duration]) -> String {
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(quantile(&v, 0.50)),
        ms(quantile(&v, 0.99)),
        ms(*v.last().expect("at least one sample"))
    )
}

/// What `--samples FILE` writes: the benchmark's name and parameters, its results, and each
/// series of latencies in milliseconds (rounded to the microsecond, in the order measured)
/// with the same quantiles the printed summary gives. Written also when the benchmark fails,
/// with what it measured until then and the error.
pub(super) struct Samples {
    path: Option<PathBuf>,
    fields: serde_json::Map<String, serde_json::Value>,
    series: Vec<(String, Vec<Duration>, serde_json::Map<String, serde_json::Value>)>,
}

impl Samples {
    fn new(bench: &str, path: Option<PathBuf>) -> Samples {
        let mut fields = serde_json::Map::new();
        fields.insert("bench".into(), bench.into());
        fields.insert("started".into(), crate::clock::rfc3339(crate::clock::unix_ms()).into());
        Samples { path, fields, series: Vec::new() }
    }

    /// A parameter or a result of the whole benchmark.
    pub(super) fn set(&mut self, key: &str, value: impl serde::Serialize) {
        self.fields.insert(key.into(), serde_json::to_value(value).expect("a JSON value"));
    }

    fn entry(&mut self, label: &str) -> &mut (String, Vec<Duration>, serde_json::Map<String, serde_json::Value>) {
        match self.series.iter().position(|(l, ..)| l == label) {
            Some(i) => &mut self.series[i],
            None => {
                self.series.push((label.into(), Vec::new(), serde_json::Map::new()));
                self.series.last_mut().expect("just pushed")
            }
        }
    }

    /// One more latency of the series `label`.
    pub(super) fn push(&mut self, label: &str, took: Duration) {
        self.entry(label).1.push(took);
    }

    pub(super) fn extend(&mut self, label: &str, lat: &[Duration]) {
        self.entry(label).1.extend_from_slice(lat);
    }

    /// A number or note about the series `label` (clients, throughput).
    pub(super) fn set_in(&mut self, label: &str, key: &str, value: impl serde::Serialize) {
        self.entry(label).2.insert(key.into(), serde_json::to_value(value).expect("a JSON value"));
    }

    fn write(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let round = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let series: Vec<serde_json::Value> = self
            .series
            .iter()
            .map(|(label, lat, extra)| {
                let mut o = serde_json::Map::new();
                o.insert("label".into(), label.clone().into());
                o.insert("n".into(), lat.len().into());
                if !lat.is_empty() {
                    let mut v = lat.clone();
                    v.sort();
                    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
                    for (key, value) in [
                        ("min_ms", round(v[0])),
                        ("p50_ms", round(quantile(&v, 0.50))),
                        ("p90_ms", round(quantile(&v, 0.90))),
                        ("p99_ms", round(quantile(&v, 0.99))),
                        ("max_ms", round(v[v.len() - 1])),
                        ("mean_ms", (mean * 1e3).round() / 1e3),
                    ] {
                        o.insert(key.into(), value.into());
                    }
                }
                o.extend(extra.clone());
                o.insert("ms".into(), lat.iter().map(|d| round(*d)).collect::<Vec<f64>>().into());
                serde_json::Value::Object(o)
            })
            .collect();
        let mut doc = self.fields.clone();
        doc.insert("series".into(), series.into());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension("tmp");
        let mut text = serde_json::to_vec(&serde_json::Value::Object(doc))?;
        text.push(b'\n');
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
