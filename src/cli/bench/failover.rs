//! `witness bench failover`: detection latency over repeated trials of "the primary's site
//! dies": three witness nodes in this process probe two site stubs over HTTP on loopback, with
//! the dev cluster's metro timings. Each trial kills the active site's stub and measures the
//! time until the failover is committed and applied on the leader, then restores the site and
//! moves the group back (a forced failback and an acknowledgement) for the next trial.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{start_cluster, summary, wait_for_leader};
use crate::node::leader::LeaderRequest;
use crate::node::{Node, RunningNode};
use crate::state::{Command, Verdict};

const SITE: &str =
    "probe_interval = \"250ms\"\nprobe_timeout = \"200ms\"\nfailure_threshold = 3\nsuccess_threshold = 2\n";

pub async fn bench(dir: &Path, trials: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut east = Stub::start().await?;
    let mut west = Stub::start().await?;
    let config = format!(
        "[[site]]\nname = \"east\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{}\"\n\
         [[site]]\nname = \"west\"\n{SITE}[[site.probe]]\nkind = \"http\"\nurl = \"{}\"\n\
         [[group]]\nname = \"demo\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
         rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"500ms\"\n",
        east.url(),
        west.url()
    );
    let nodes = start_cluster(dir, &config).await?;
    wait_for_leader(&nodes, "demo").await?;
    println!("3 witness nodes, 2 sites; probes every 250 ms (timeout 200 ms), down after 3 failures, hold-down 500 ms");
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        let (failing, surviving) = {
            let leader = leader(&nodes).await?;
            let active = leader.applied.read().expect("state lock").state.groups["demo"].active.clone();
            if active == "east" {
                (&mut east, "west")
            } else {
                (&mut west, "east")
            }
        };
        settle(&nodes).await?;
        failing.kill().await;
        let killed = Instant::now();
        let took = loop {
            let leader = leader(&nodes).await?;
            if leader.applied.read().expect("state lock").state.groups["demo"].active == surviving {
                break killed.elapsed();
            }
            anyhow::ensure!(killed.elapsed() < Duration::from_secs(30), "trial {trial}: no failover within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!("trial {:>3}: failure -> failover committed in {:.0} ms", trial + 1, took.as_secs_f64() * 1000.0);
        latencies.push(took);
        failing.restart().await?;
        // The restored site becomes the standby; acknowledge so the next trial is not blocked.
        let leader = leader(&nodes).await?;
        leader.submit(LeaderRequest::Write(Command::Ack { group: "demo".into() }), false).await?;
    }
    println!("detection latency (failure -> decision committed), {trials} trials: {}", summary(&latencies));
    for n in nodes {
        n.shutdown().await;
    }
    // Keep the stubs alive until the nodes are gone.
    drop((east, west));
    Ok(())
}

async fn leader(nodes: &[RunningNode]) -> anyhow::Result<Arc<Node>> {
    for _ in 0..600 {
        if let Some(n) = nodes.iter().find(|n| n.node.raft.is_leader() && n.node.readiness().is_ok()) {
            return Ok(n.node.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no ready leader within 30 s")
}

/// Waits until every node's committed verdict on both sites is up and the group is not
/// blocked, so that each trial starts from the same state.
async fn settle(nodes: &[RunningNode]) -> anyhow::Result<()> {
    for _ in 0..600 {
        let leader = leader(nodes).await?;
        let ready = {
            let state = &leader.applied.read().expect("state lock").state;
            let all_up =
                ["east", "west"].iter().all(|site| (1..=3).all(|n| state.verdict(site, n) == Some(Verdict::Up)));
            all_up && !state.groups["demo"].blocked
        };
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("sites did not settle (all up, group unblocked) within 30 s")
}

/// A site's health endpoint that can be killed and restarted on the same port.
struct Stub {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Stub {
    async fn start() -> anyhow::Result<Stub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut stub = Stub { addr: listener.local_addr()?, stop: None, server: None };
        stub.serve(listener);
        Ok(stub)
    }

    fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        self.stop = Some(tx);
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}
