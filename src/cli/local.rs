//! A witness cluster in this process, for `witness bench` and `witness demo`: three nodes with
//! real Raft on disk and real HTTPS on loopback (a development CA made under the data
//! directory, as the dev cluster does; plain HTTP only to measure what TLS costs), credentials
//! for its clients and agents, site health endpoints that can be killed and restarted, and the
//! helpers both use to wait for a leader.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Stopwatch;

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

/// How the in-process cluster is reached, and with what credentials: its CA (made by the first
/// node), an admin token, and one token per site for agents on plain HTTP.
pub struct Local {
    dir: PathBuf,
    pub tls: bool,
    /// Requests per second each credential may send (`[auth] heartbeat_rate` and
    /// `operator_rate`): the defaults, lifted by benchmarks that measure throughput.
    pub rate: Option<u32>,
    site_tokens: Vec<(String, String)>,
}

impl Local {
    pub fn new(dir: &Path, tls: bool, sites: &[&str]) -> Local {
        let site_tokens = sites.iter().map(|s| (s.to_string(), crate::config::auth::new_token())).collect();
        Local { dir: dir.to_path_buf(), tls, rate: None, site_tokens }
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    fn admin_token_file(&self) -> PathBuf {
        self.dir.join("operator-token")
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The tables every node's config carries.
    fn node_tables(&self) -> String {
        use crate::config::auth::{format_hash, hash_token};
        let mut text = format!(
            "[dev]\noperator_token = \"{}\"\n{}[auth]\nanonymous = \"viewer\"\nmetrics = \"open\"\n{}",
            self.admin_token_file().display(),
            if self.tls { format!("tls_dir = \"{}\"\n", self.tls_dir().display()) } else { String::new() },
            self.rate.map_or(String::new(), |r| format!("heartbeat_rate = {r}\noperator_rate = {r}\n")),
        );
        if !self.tls {
            text += "[transport]\nplain_http = true\n";
        }
        for (site, token) in &self.site_tokens {
            let hash = format_hash(&hash_token(token));
            text += &format!("[[token]]\nname = \"{site}-agent\"\nrole = \"site:{site}\"\nhash = \"{hash}\"\n");
        }
        text
    }

    /// Node `id`'s config (1-based) in a cluster of the nodes at `addrs`, all with
    /// `sites_and_groups`.
    pub fn node_config(&self, id: usize, addrs: &[String], sites_and_groups: &str) -> String {
        let members: Vec<String> =
            addrs.iter().enumerate().map(|(i, a)| format!("{{ id = {}, addr = \"{a}\" }}", i + 1)).collect();
        format!(
            "[node]\nid = {id}\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\n\
             [cluster]\nname = \"bench\"\ninitial_members = [{members}]\n{tables}{sites_and_groups}",
            addr = addrs[id - 1],
            data = self.dir.join(format!("node{id}")).display(),
            members = members.join(", "),
            tables = self.node_tables(),
        )
    }

    /// The config of `site`'s agent serving at `addr`, with `groups` (its `[[group]]` tables).
    pub fn agent_config(
        &self,
        site: &str,
        addr: std::net::SocketAddr,
        peer: &str,
        witness: &[String],
        groups: &str,
    ) -> anyhow::Result<String> {
        Ok(format!(
            "[agent]\nsite = \"{site}\"\nlisten = \"{addr}\"\npeer = \"{peer}\"\nwitness = [{}]\n\
             heartbeat_interval = \"250ms\"\n{}{groups}",
            witness.iter().map(|w| format!("\"{w}\"")).collect::<Vec<_>>().join(", "),
            self.agent_lines(site)?,
        ))
    }

    /// The credential lines of `site`'s agent config: its certificate over TLS, else its token.
    fn agent_lines(&self, site: &str) -> anyhow::Result<String> {
        if self.tls {
            let d = self.tls_dir();
            let d = d.display();
            return Ok(format!("ca = \"{d}/ca.crt\"\ncert = \"{d}/site-{site}.crt\"\nkey = \"{d}/site-{site}.key\"\n"));
        }
        let file = self.dir.join(format!("{site}.token"));
        std::fs::write(&file, self.site_token(site)?)?;
        Ok(format!("plain_http = true\ntoken_file = \"{}\"\n", file.display()))
    }

    pub fn site_token(&self, site: &str) -> anyhow::Result<&str> {
        let found = self.site_tokens.iter().find(|(s, _)| s == site);
        Ok(&found.ok_or_else(|| anyhow::anyhow!("no token for site {site}"))?.1)
    }

    /// A client of the cluster's API: trusts its CA, sends `token` (the admin token if `None`).
    /// Only once a node has started (the first one makes the CA and the token).
    pub fn client(&self, token: Option<&str>) -> anyhow::Result<reqwest::Client> {
        let admin;
        let token = match token {
            Some(t) => t,
            None => {
                admin = std::fs::read_to_string(self.admin_token_file())?;
                admin.trim()
            }
        };
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        let headers = [(reqwest::header::AUTHORIZATION, value)].into_iter().collect();
        let mut builder = reqwest::Client::builder().no_proxy().tcp_nodelay(true).default_headers(headers);
        if self.tls {
            let ca = self.tls_dir().join("ca.crt");
            builder = builder.tls_backend_preconfigured(crate::tls::client_config(&ca, None)?);
        }
        Ok(builder.build()?)
    }

    /// What the CLI needs to reach this cluster, as environment assignments.
    pub fn cli_env(&self) -> String {
        let ca =
            if self.tls { format!("WITNESS_CA={} ", self.tls_dir().join("ca.crt").display()) } else { String::new() };
        format!("{ca}WITNESS_TOKEN_FILE={}", self.admin_token_file().display())
    }
}

/// Three nodes of one cluster with data under `dir`, each serving on a fresh loopback port,
/// all configured with `sites_and_groups`.
pub async fn start_cluster(local: &Local, sites_and_groups: &str) -> anyhow::Result<Vec<RunningNode>> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> =
        listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let config = Config::from_toml(&local.node_config(i + 1, &addrs, sites_and_groups), Path::new("<bench>"))?;
        nodes.push(Node::start(config, listener).await?);
    }
    Ok(nodes)
}

/// The leader once it is ready and has registered `group`.
pub async fn wait_for_leader(nodes: &[RunningNode], group: &str) -> anyhow::Result<Arc<Node>> {
    let waited = Stopwatch::start();
    let mut last = String::from("no leader elected");
    while waited.elapsed() < Duration::from_secs(30) {
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
    let ack = crate::state::Command::Ack { group: group.into(), expected_epoch: epoch };
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

/// A loopback address free a moment ago, for a server in another process (which must bind it
/// itself, so another process may take it first). In this process, use [`loopback`].
pub async fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(loopback().await?.local_addr()?)
}

/// A listener on a fresh loopback port. Its address is handed out only once it is bound, so
/// nothing else can take the port in between.
pub async fn loopback() -> anyhow::Result<tokio::net::TcpListener> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
}

/// The agent of `site` for `group` (always in sync) serving on `listener`, talking to
/// `witness` and to its peer at `peer`.
pub async fn start_agent(
    local: &Local,
    site: &str,
    group: &str,
    listener: tokio::net::TcpListener,
    peer: &str,
    witness: &[String],
) -> anyhow::Result<crate::agent::RunningAgent> {
    let in_sync = "replication_command = \"echo '{\\\"in_sync\\\": true}'\"\n";
    start_agent_with(local, site, group, listener, peer, witness, in_sync).await
}

/// [`start_agent`] with `group_lines` in the group's table: its replication reader and hooks.
pub async fn start_agent_with(
    local: &Local,
    site: &str,
    group: &str,
    listener: tokio::net::TcpListener,
    peer: &str,
    witness: &[String],
    group_lines: &str,
) -> anyhow::Result<crate::agent::RunningAgent> {
    start_agent_for(local, site, listener, peer, witness, &format!("[[group]]\nname = \"{group}\"\n{group_lines}"))
        .await
}

/// The agent of `site` for `groups` (its `[[group]]` tables) serving on `listener`, talking to
/// `witness` and to its peer at `peer`.
pub async fn start_agent_for(
    local: &Local,
    site: &str,
    listener: tokio::net::TcpListener,
    peer: &str,
    witness: &[String],
    groups: &str,
) -> anyhow::Result<crate::agent::RunningAgent> {
    let text = local.agent_config(site, listener.local_addr()?, peer, witness, groups)?;
    let config = crate::config::agent::AgentConfig::from_toml(&text, Path::new("<local agent>"))?;
    crate::agent::start(config, listener).await
}
