//! A witness cluster in this process, for `witness bench` and `witness demo`: three nodes with
//! real Raft on disk and real HTTP on loopback, site health endpoints that can be killed and
//! restarted, and the helpers both use to wait for a leader.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::node::{Node, RunningNode};
use crate::rng::SplitMix64;

/// The metro timings of `config/dev/`: keep the two in step.
pub const SITE: &str = r#"probe_interval = "150ms"
probe_timeout = "120ms"
failure_threshold = 5
success_threshold = 2
"#;
pub const HOLD_DOWN: &str = "400ms";
pub const TIMINGS: &str = "probes every 150 ms (timeout 120 ms), down after 5 failures, hold-down 400 ms";

/// Three nodes of one cluster with data under `dir`, each serving on a fresh loopback port,
/// all configured with `sites_and_groups`.
pub async fn start_cluster(dir: &Path, sites_and_groups: &str) -> anyhow::Result<Vec<RunningNode>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    let members: Vec<String> =
        addrs.iter().enumerate().map(|(i, a)| format!("{{ id = {}, addr = \"{a}\" }}", i + 1)).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i + 1;
        let text = format!(
            "[node]\nid = {id}\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\n\
             [cluster]\nname = \"bench\"\ninitial_members = [{members}]\n\
             [transport]\nplain_http = true\n{sites_and_groups}",
            addr = addrs[i],
            data = dir.join(format!("node{id}")).display(),
            members = members.join(", "),
        );
        let config = Config::from_toml(&text, Path::new("<bench>"))?;
        nodes.push(Node::start(config, listener).await?);
    }
    Ok(nodes)
}

/// The leader once it is ready and has registered `group`.
pub async fn wait_for_leader(nodes: &[RunningNode], group: &str) -> anyhow::Result<Arc<Node>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no leader elected");
    while Instant::now() < deadline {
        for n in nodes.iter().filter(|n| n.node.raft.is_leader()) {
            let registered = n.node.applied.read().expect("state lock").state.groups.contains_key(group);
            match n.node.readiness() {
                Ok(()) if registered => return Ok(n.node.clone()),
                Ok(()) => last = "groups not registered yet".into(),
                Err(reason) => last = reason,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no ready leader with registered groups within 30 s: {last}")
}

/// The ready leader, waiting up to 30 s for one.
pub async fn leader(nodes: &[RunningNode]) -> anyhow::Result<Arc<Node>> {
    for _ in 0..600 {
        if let Some(n) = nodes.iter().find(|n| n.node.raft.is_leader() && n.node.readiness().is_ok()) {
            return Ok(n.node.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no ready leader within 30 s")
}

/// Acknowledges `group`'s last failover on the leader, so the next trial is not blocked.
pub async fn acknowledge(nodes: &[RunningNode], group: &str) -> anyhow::Result<()> {
    let leader = leader(nodes).await?;
    let epoch = leader.applied.read().expect("state lock").state.groups[group].epoch;
    let ack = crate::state::Command::Ack { group: group.to_string(), expected_epoch: epoch };
    leader.submit(crate::node::leader::LeaderRequest::Write(ack), false).await?;
    Ok(())
}

/// A site's health endpoint that can be killed and restarted on the same port, and that drops
/// a share of requests (holding them past any probe timeout, as lost packets would look).
pub struct Stub {
    addr: std::net::SocketAddr,
    loss: f64,
    rng: Arc<Mutex<SplitMix64>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Stub {
    pub async fn start(loss: f64, seed: u64) -> anyhow::Result<Stub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let rng = Arc::new(Mutex::new(SplitMix64::new(seed)));
        let mut stub = Stub { addr: listener.local_addr()?, loss, rng, stop: None, server: None };
        stub.serve(listener);
        Ok(stub)
    }

    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (loss, rng) = (self.loss, self.rng.clone());
        let healthz = move || {
            let lost = rng.lock().expect("rng lock").unit() < loss;
            async move {
                if lost {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                "ok"
            }
        };
        let app = axum::Router::new().route("/healthz", axum::routing::get(healthz));
        self.stop = Some(tx);
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

/// A loopback address free a moment ago.
pub async fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

/// The agent of `site` for `group` (always in sync), talking to `witness` and to its peer at
/// `peer`.
pub async fn start_agent(
    site: &str,
    group: &str,
    addr: std::net::SocketAddr,
    peer: &str,
    witness: &[String],
) -> anyhow::Result<crate::agent::RunningAgent> {
    let text = format!(
        "[agent]\nsite = \"{site}\"\nlisten = \"{addr}\"\npeer = \"{peer}\"\nwitness = [{}]\n\
         heartbeat_interval = \"250ms\"\nplain_http = true\n[[group]]\nname = \"{group}\"\n\
         replication_command = \"echo '{{\\\"in_sync\\\": true}}'\"\n",
        witness.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", ")
    );
    let config = crate::config::agent::AgentConfig::from_toml(&text, Path::new("<local agent>"))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    crate::agent::start(config, listener).await
}
