//! `witness bench raft`: commit latency and throughput of a real 3-node cluster (three Raft
//! nodes in this process, each with its own data directory on local disk with fsync, talking
//! HTTP over loopback), next to the disk's own fdatasync latency for scale.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::Exit;
use crate::config::Config;
use crate::node::leader::LeaderRequest;
use crate::node::{Node, RunningNode};
use crate::state::{Command as StateCommand, Epoch, Response};

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
        /// Where the nodes keep their data (default: a fresh directory under the system temp
        /// dir, removed afterwards). Put it on the disk you want to measure.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(command: Command) -> Exit {
    let Command::Raft {
        writes,
        concurrency,
        dir,
    } = command;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (dir, remove) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("witness-bench-{}", std::process::id())),
            true,
        ),
    };
    let result = rt.block_on(bench_raft(&dir, writes.max(1), concurrency.max(1)));
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failed
        }
    }
}

async fn bench_raft(dir: &Path, writes: usize, concurrency: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let fsync = fdatasync_latency(&dir.join("fsync-probe"), 500)?;
    println!(
        "disk fdatasync (4 KiB append, {} samples): {}",
        fsync.len(),
        summary(&fsync)
    );

    let nodes = start_cluster(dir, concurrency).await?;
    let leader = wait_for_leader(&nodes).await?;
    println!("3-node cluster up, leader node {}", leader.id);

    // Sequential: one client, each write waits for the previous one.
    let mut lat = Vec::with_capacity(writes);
    let started = Instant::now();
    let mut epoch = current_epoch(&leader, "bench-0");
    for _ in 0..writes {
        let site = other(&current_active(&leader, "bench-0"));
        let t = Instant::now();
        epoch = activate(&leader, "bench-0", site, epoch).await?;
        lat.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sequential, 1 client: {writes} writes, {}, {:.0} writes/s",
        summary(&lat),
        writes as f64 / secs
    );

    // Concurrent: each client works on its own group, so every write is a real state change.
    let per_client = writes.div_ceil(concurrency);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..concurrency {
        let leader = leader.clone();
        handles.push(tokio::spawn(async move {
            let group = format!("bench-{c}");
            let mut epoch = current_epoch(&leader, &group);
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let site = other(&current_active(&leader, &group));
                let t = Instant::now();
                epoch = activate(&leader, &group, site, epoch).await?;
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
    println!(
        "concurrent, {concurrency} clients: {} writes, {}, {:.0} writes/s",
        all.len(),
        summary(&all),
        all.len() as f64 / secs
    );
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

fn other(site: &str) -> &'static str {
    if site == "east" {
        "west"
    } else {
        "east"
    }
}

fn current_epoch(node: &Node, group: &str) -> Epoch {
    node.applied.read().expect("state lock").state.groups[group].epoch
}

fn current_active(node: &Node, group: &str) -> String {
    node.applied.read().expect("state lock").state.groups[group]
        .active
        .clone()
}

async fn activate(node: &Node, group: &str, site: &str, epoch: Epoch) -> anyhow::Result<Epoch> {
    let cmd = StateCommand::Activate {
        group: group.into(),
        site: site.into(),
        expected_epoch: epoch,
    };
    match node.submit(LeaderRequest::Write(cmd), false).await? {
        crate::node::leader::LeaderReply::Written {
            response: Response::Activated { epoch, .. },
            ..
        } => Ok(epoch),
        other => anyhow::bail!("benchmark write was not applied: {other:?}"),
    }
}

async fn start_cluster(dir: &Path, groups: usize) -> anyhow::Result<Vec<RunningNode>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let members: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ id = {}, addr = \"{a}\" }}", i + 1))
        .collect();
    let mut group_toml = String::new();
    for g in 0..groups {
        group_toml += &format!(
            "[[group]]\nname = \"bench-{g}\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
             rto = \"5m\"\nrpo = \"0s\"\nfailover = \"manual\"\n"
        );
    }
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i + 1;
        let text = format!(
            "[node]\nid = {id}\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\n\
             [cluster]\nname = \"bench\"\ninitial_members = [{members}]\n\
             [transport]\nplain_http = true\n\
             [[site]]\nname = \"east\"\n[[site.probe]]\nkind = \"tcp\"\naddr = \"127.0.0.1:9\"\n\
             [[site]]\nname = \"west\"\n[[site.probe]]\nkind = \"tcp\"\naddr = \"127.0.0.1:9\"\n{group_toml}",
            addr = addrs[i],
            data = dir.join(format!("node{id}")).display(),
            members = members.join(", "),
        );
        let config = Config::from_toml(&text, Path::new("<bench>"))?;
        nodes.push(Node::start(config, listener).await?);
    }
    Ok(nodes)
}

async fn wait_for_leader(nodes: &[RunningNode]) -> anyhow::Result<Arc<Node>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for n in nodes {
            let registered = n
                .node
                .applied
                .read()
                .expect("state lock")
                .state
                .groups
                .contains_key("bench-0");
            if n.node.raft.is_leader() && n.node.readiness().is_ok() && registered {
                return Ok(n.node.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no ready leader with registered groups within 30 s")
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
