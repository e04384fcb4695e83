//! Test harness: real `witness` processes on loopback, each serving on a port-0 socket that
//! the test binds and passes in as the child's stdin (`--listen-fd 0`). The test keeps its
//! copy of every socket, so a killed node can be restarted on the same address with no race.
//! Every cluster speaks HTTPS with mutual TLS between nodes, from one CA per test process
//! ([`creds`]), and requires tokens: the harness's own client and [`cli`] act as `admin`.

#![allow(dead_code)]

pub mod dns;
pub mod lazyfs;
pub mod netns;
pub mod relay;
pub mod sim;
pub mod targets;

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub const ELECTION_MAX: Duration = Duration::from_millis(1000);

/// Credentials shared by every cluster of this test process: a CA with certificates for
/// nodes 1..=9 and sites east and west, and one token per role.
pub struct Creds {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// Token name → (role, token); the name is also the token file's name in `dir`.
    pub tokens: Vec<(&'static str, &'static str, String)>,
}

impl Creds {
    pub fn token(&self, name: &str) -> &str {
        &self.tokens.iter().find(|t| t.0 == name).expect("known token").2
    }

    pub fn token_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.token"))
    }

    /// The `[transport]`, `[auth]` (with `auth_extra`) and `[[token]]` tables of node `id`'s
    /// config.
    pub fn node_tables(&self, id: u64, auth_extra: &str) -> String {
        let d = self.dir.display();
        let mut text = format!(
            "[transport]\ncert = \"{d}/node-{id}.crt\"\nkey = \"{d}/node-{id}.key\"\nca = \"{d}/ca.crt\"\n\n[auth]\nanonymous = \"none\"\n{auth_extra}\n"
        );
        for (name, role, token) in &self.tokens {
            let hash = witness::config::auth::format_hash(&witness::config::auth::hash_token(token));
            text += &format!("\n[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nhash = \"{hash}\"\n");
        }
        text
    }

    /// A client presenting the certificate `name` (`node-2`, `site-east`), as a peer or an
    /// agent does.
    pub fn cert_client(&self, name: &str) -> reqwest::Client {
        cert_client(&self.dir, name, &self.ca)
    }

    /// A client trusting the CA and sending `token`'s bearer (none: no credentials).
    pub fn client(&self, token: Option<&str>) -> reqwest::Client {
        witness::tls::init();
        let tls = witness::tls::client_config(&self.ca, None).expect("client TLS config");
        let mut builder =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).tls_backend_preconfigured(tls);
        if let Some(name) = token {
            let value = format!("Bearer {}", self.token(name));
            builder = builder
                .default_headers([(reqwest::header::AUTHORIZATION, value.parse().unwrap())].into_iter().collect());
        }
        builder.build().unwrap()
    }
}

/// A client presenting the certificate `name` from `dir`, trusting only the CA in `ca`.
pub fn cert_client(dir: &Path, name: &str, ca: &Path) -> reqwest::Client {
    witness::tls::init();
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let tls = witness::tls::client_config(ca, Some((&cert, &key))).expect("client TLS config");
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

pub fn creds() -> &'static Creds {
    static CREDS: OnceLock<Creds> = OnceLock::new();
    CREDS.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("witness-test-tls").tempdir().expect("tempdir").keep();
        let sites = ["east".to_string(), "west".to_string()];
        witness::tls::certs::generate(&dir, &(1..=9).collect::<Vec<u64>>(), &sites, &[], &Default::default())
            .expect("test certificates");
        let tokens: Vec<(&'static str, &'static str, String)> = [
            ("admin", "admin"),
            ("operator", "operator"),
            ("viewer", "viewer"),
            ("east", "site:east"),
            ("west", "site:west"),
        ]
        .into_iter()
        .map(|(name, role)| (name, role, witness::config::auth::new_token()))
        .collect();
        for (name, _, token) in &tokens {
            std::fs::write(dir.join(format!("{name}.token")), token).expect("token file");
        }
        Creds { ca: dir.join("ca.crt"), dir, tokens }
    })
}

pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    listener: TcpListener,
    child: Option<Child>,
}

impl TestNode {
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        self.child = Some(spawn("serve", &self.config, &self.listener, &self.log));
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("node running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// SIGTERM and wait: returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node running");
        // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node {} did not stop within 20 s of SIGTERM", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's exit status if it has exited (it is then no longer running), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("wait")?;
        self.child = None;
        Some(status)
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the running node.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.child.as_ref().expect("node running"), signal);
    }
}

fn send_signal(child: &Child, signal: libc::c_int) {
    // SAFETY: plain kill(2) on our own child's pid, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0, "kill({signal}) failed");
}

/// `witness <command> --config CONFIG` serving on `listener` (passed as its stdin), logging to
/// `log`.
pub fn spawn(command: &str, config: &Path, listener: &TcpListener, log: &Path) -> Child {
    let socket: OwnedFd = listener.try_clone().expect("clone listener").into();
    let log = File::options().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_witness"))
        .args([command, "--config"])
        .arg(config)
        .args(["--listen-fd", "0", "--log-level", "info,witness=debug"])
        .stdin(Stdio::from(socket))
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn witness {command}: {e}"))
}

pub struct Cluster {
    pub dir: TempDir,
    pub nodes: Vec<TestNode>,
    pub http: reqwest::Client,
    pub agents: Vec<TestAgent>,
}

/// A `witness agent` process, on a port-0 socket passed as its stdin like the nodes'.
pub struct TestAgent {
    pub site: String,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Where its hooks append the roles it enters.
    pub roles: PathBuf,
    listener: TcpListener,
    child: Option<Child>,
}

impl TestAgent {
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "agent {} already running", self.site);
        self.child = Some(spawn("agent", &self.config, &self.listener, &self.log));
    }

    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.child.as_ref().expect("agent running"), signal);
    }

    /// Gives the agent its own copy of the CA (certificate and key) and of its site's
    /// certificate and key, in `dir`, and points its config there: certificates issued again
    /// in `dir` touch nothing shared.
    pub fn own_credentials(&self, dir: &Path) {
        std::fs::create_dir(dir).unwrap();
        let site = format!("site-{}", self.site);
        for file in ["ca.crt".to_string(), "ca.key".into(), format!("{site}.crt"), format!("{site}.key")] {
            std::fs::copy(creds().dir.join(&file), dir.join(&file)).unwrap();
        }
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, text.replace(&creds().dir.display().to_string(), &dir.display().to_string()))
            .unwrap();
    }

    /// Before its start: listens on every address (`0.0.0.0`) of a new port, so that it can be
    /// dialled as 127.0.0.2 as well as 127.0.0.1 (`addr`). Returns the port; the other agent's
    /// `peer` still names the old one.
    pub fn listen_on_every_address(&mut self) -> u16 {
        assert!(self.child.is_none(), "agent {} already running", self.site);
        self.listener = TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = self.listener.local_addr().unwrap().port();
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            text.replace(&format!("listen = \"{}\"", self.addr), &format!("listen = \"0.0.0.0:{port}\"")),
        )
        .unwrap();
        self.addr = format!("127.0.0.1:{port}");
        port
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("agent running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// The roles its hooks recorded, in order.
    pub fn roles(&self) -> Vec<String> {
        std::fs::read_to_string(&self.roles).unwrap_or_default().lines().map(String::from).collect()
    }
}

/// What differs between test clusters.
#[derive(Clone, Default)]
pub struct Setup {
    /// Extra `[cluster.raft]` settings.
    pub raft_extra: String,
    /// Extra `[auth]` settings.
    pub auth_extra: String,
    /// The probe URLs of `east` and `west`; by default both probe a closed port (always down).
    pub site_urls: Option<(String, String)>,
    /// Group `app` has site agents (lease 1 s, margin 100 ms).
    pub agents: bool,
    /// Appended to group `app`'s table: its `[[group.step]]` plan.
    pub plan: String,
}

/// The config of node `id` for a cluster whose initial members are `members` (id, addr).
pub fn node_config(id: u64, addr: &str, members: &[(u64, String)], data_dir: &Path, setup: &Setup) -> String {
    let raft_extra = &setup.raft_extra;
    let site = |name: &str, url: Option<&String>| {
        let probe = match url {
            Some(url) => format!("kind = \"http\"\nurl = \"{url}\""),
            None => "kind = \"tcp\"\naddr = \"127.0.0.1:9\"".to_string(),
        };
        format!(
            "[[site]]\nname = \"{name}\"\nprobe_interval = \"200ms\"\nprobe_timeout = \"150ms\"\n\
             failure_threshold = 2\nsuccess_threshold = 1\n[[site.probe]]\n{probe}\n"
        )
    };
    let east = site("east", setup.site_urls.as_ref().map(|u| &u.0));
    let west = site("west", setup.site_urls.as_ref().map(|u| &u.1));
    let members: Vec<String> = members.iter().map(|(i, a)| format!("{{ id = {i}, addr = \"{a}\" }}")).collect();
    let agents = if setup.agents { "agents = true\nlease = \"1s\"\nlease_margin = \"100ms\"\n" } else { "" };
    format!(
        r#"
[node]
id = {id}
listen = "{addr}"
data_dir = "{data}"

[cluster]
name = "test"
initial_members = [{members}]

[cluster.raft]
heartbeat_interval = "100ms"
election_timeout_min = "500ms"
election_timeout_max = "{emax}ms"
quorum_loss_probe_interval = "2s"
snapshot_interval = "2s"
{raft_extra}

{tls}

{east}
{west}

[[group]]
name = "app"
primary = "east"
secondary = "west"
replication = "sync"
rto = "5m"
rpo = "0s"
failover = "automatic"
hold_down = "500ms"
{agents}
{plan}"#,
        data = data_dir.display(),
        members = members.join(", "),
        emax = ELECTION_MAX.as_millis(),
        plan = setup.plan,
        tls = creds().node_tables(id, &setup.auth_extra),
    )
}

impl Cluster {
    /// `voters` nodes that bootstrap together, plus `spares` that are configured but wait to
    /// be added. Nothing is started.
    pub fn new(voters: usize, spares: usize) -> Cluster {
        Cluster::with(voters, spares, Setup::default())
    }

    /// Three voters probing the stubs `east` and `west` (and `setup`'s other settings), started
    /// and settled: every node sees both sites up. Returns the cluster and its leader.
    pub async fn watching(east: &SiteStub, west: &SiteStub, setup: Setup) -> (Cluster, u64) {
        let mut c = Cluster::with(3, 0, Setup { site_urls: Some((east.url(), west.url())), ..setup });
        let leader = c.start_voters(3).await;
        eventually(Duration::from_secs(15), "every node sees both sites up", || async {
            c.all_see("east", "up", &[1, 2, 3]).await?;
            c.all_see("west", "up", &[1, 2, 3]).await
        })
        .await;
        (c, leader)
    }

    /// Like `new`, with extra `[cluster.raft]` settings for every node.
    pub fn with_raft(voters: usize, spares: usize, raft_extra: &str) -> Cluster {
        Cluster::with(voters, spares, Setup { raft_extra: raft_extra.to_string(), ..Setup::default() })
    }

    pub fn with(voters: usize, spares: usize, setup: Setup) -> Cluster {
        witness::tls::init();
        let dir = tempfile::tempdir().expect("tempdir");
        let listeners: Vec<TcpListener> =
            (0..voters + spares).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
        let members: Vec<(u64, String)> = (0..voters).map(|i| (i as u64 + 1, addrs[i].clone())).collect();
        let nodes = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let id = i as u64 + 1;
                let config = dir.path().join(format!("node{id}.toml"));
                let data = dir.path().join(format!("node{id}"));
                std::fs::write(&config, node_config(id, &addrs[i], &members, &data, &setup)).unwrap();
                TestNode {
                    id,
                    addr: addrs[i].clone(),
                    config,
                    log: dir.path().join(format!("node{id}.log")),
                    listener,
                    child: None,
                }
            })
            .collect();
        let http = creds().client(Some("admin"));
        Cluster { dir, nodes, http, agents: Vec::new() }
    }

    /// Configures agents for `east` and `west` (group `app`, heartbeats every 100 ms) whose
    /// hooks append `role=<role> epoch=<n>` to `roles-<site>.log` in the cluster's directory.
    /// Nothing is started.
    pub fn add_agents(&mut self) {
        let listeners: Vec<TcpListener> = (0..2).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
        let witness: Vec<String> = self.nodes.iter().map(|n| format!("\"{}\"", n.addr)).collect();
        for (i, (site, listener)) in ["east", "west"].into_iter().zip(listeners).enumerate() {
            let roles = self.dir.path().join(format!("roles-{site}.log"));
            let hook = format!("echo role=$WITNESS_ROLE epoch=$WITNESS_EPOCH >> {}", roles.display());
            let text = format!(
                r#"
[agent]
site = "{site}"
listen = "{addr}"
peer = "{peer}"
witness = [{witness}]
heartbeat_interval = "100ms"
ca = "{tls}/ca.crt"
cert = "{tls}/site-{site}.crt"
key = "{tls}/site-{site}.key"

[[group]]
name = "app"
replication_command = "echo '{{\"in_sync\": true}}'"
on_promote = "{hook}"
on_standby = "{hook}"
on_fence = "{hook}"
"#,
                addr = addrs[i],
                peer = addrs[1 - i],
                witness = witness.join(", "),
                tls = creds().dir.display(),
            );
            let config = self.dir.path().join(format!("agent-{site}.toml"));
            std::fs::write(&config, text).unwrap();
            self.agents.push(TestAgent {
                site: site.to_string(),
                addr: addrs[i].clone(),
                config,
                log: self.dir.path().join(format!("agent-{site}.log")),
                roles,
                listener,
                child: None,
            });
        }
    }

    pub fn agent(&mut self, site: &str) -> &mut TestAgent {
        self.agents.iter_mut().find(|a| a.site == site).expect("agent configured")
    }

    /// Whether `site`'s agent says it may write for `app` (None: it did not answer).
    pub async fn writable(&self, site: &str) -> Option<bool> {
        let agent = self.agents.iter().find(|a| a.site == site)?;
        let url = format!("https://{}/v1/groups/app/writable", agent.addr);
        let resp = self.http.get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
        Some(resp.status().as_u16() == 200)
    }

    /// Starts the first `voters` nodes and waits until they agree on a ready leader that has
    /// registered the configured group; returns the leader's id.
    pub async fn start_voters(&mut self, voters: u64) -> u64 {
        for id in 1..=voters {
            self.node(id).start();
        }
        let leader = self.wait_leader(Duration::from_secs(20)).await;
        eventually(Duration::from_secs(10), "group registered", || self.group(leader)).await;
        leader
    }

    /// Node `id`'s data directory, as its config names it (nothing there until it starts).
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    pub fn node(&mut self, id: u64) -> &mut TestNode {
        &mut self.nodes[id as usize - 1]
    }

    pub async fn status(&self, id: u64) -> Option<Value> {
        let resp = self
            .http
            .get(self.nodes[id as usize - 1].url("/v1/status"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// The leader id that every running node agrees on and that is ready.
    pub async fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for n in self.nodes.iter().filter(|n| n.running()) {
            let s = self.status(n.id).await?;
            if s["ready"] != true {
                return None;
            }
            let l = s["leader"]["id"].as_u64()?;
            if *leader.get_or_insert(l) != l {
                return None;
            }
        }
        leader
    }

    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        eventually(timeout, "a leader agreed by every running node", || self.agreed_leader()).await
    }

    /// An operator's forced failover of group `app` to `site`, sent to node `via` (the leader
    /// commits it as an epoch compare-and-set against the state it has); returns the HTTP
    /// status, and the body with the new epoch (when failed over) at `epoch`.
    pub async fn failover(&self, via: u64, site: &str) -> (u16, Value) {
        let body = serde_json::json!({ "to": site, "force": true, "reason": "test" });
        let (status, mut answer) = self.post(via, "/v1/groups/app/failover", &body).await;
        answer["epoch"] = answer["failover"]["outcome"]["epoch"].clone();
        (status, answer)
    }

    /// POSTs `body` (null: none) to `path` on node `via`; returns (HTTP status, body). It waits
    /// long enough for a member being added to catch up or be given up on.
    pub async fn post(&self, via: u64, path: &str, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(self.nodes[via as usize - 1].url(path)).timeout(Duration::from_secs(30));
        if !body.is_null() {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn group(&self, id: u64) -> Option<(String, u64)> {
        let s = self.status(id).await?;
        let g = s["groups"].as_array()?.iter().find(|g| g["name"] == "app")?.clone();
        Some((g["active"].as_str()?.to_string(), g["epoch"].as_u64()?))
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        let logs = self.nodes.iter().map(|n| (format!("node {}", n.id), &n.log));
        let logs = logs.chain(self.agents.iter().map(|a| (format!("agent {}", a.site), &a.log)));
        for (name, log) in logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("\n----- {name} ({}) last lines -----\n", log.display());
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self.nodes.iter_mut().map(|n| &mut n.child).chain(self.agents.iter_mut().map(|a| &mut a.child));
        for child in children {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three voters probing `east` and `west`, a group with agents and both sites' agents running,
/// once east is writable and west its standby; and the leader's id.
pub async fn cluster_with_agents(east: &SiteStub, west: &SiteStub) -> (Cluster, u64) {
    let setup = Setup { site_urls: Some((east.url(), west.url())), agents: true, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    let leader = c.start_voters(3).await;
    c.agent("east").start();
    c.agent("west").start();
    eventually(Duration::from_secs(15), "east writable, west standby", || async {
        (c.writable("east").await? && !c.writable("west").await?).then_some(())
    })
    .await;
    (c, leader)
}

/// A site's health endpoint: an HTTP server on a port-0 socket answering `GET /healthz` with
/// 200, that the test can kill (connections close, the port refuses) and restart on the same
/// address.
pub struct SiteStub {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl SiteStub {
    pub async fn start() -> SiteStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind site stub");
        let addr = listener.local_addr().unwrap();
        let mut stub = SiteStub { addr, stop: None, server: None };
        stub.serve(listener);
        stub
    }

    pub fn url(&self) -> String {
        format!("http://{}/healthz", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        self.stop = Some(tx);
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
    }

    /// The site dies: the listener closes and open connections are shut.
    pub async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }

    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.expect("rebind site stub");
        self.serve(listener);
    }
}

impl Cluster {
    /// Every event kind in node `id`'s journal, oldest first.
    pub async fn journal_kinds(&self, id: u64) -> Option<Vec<String>> {
        let url = self.nodes[id as usize - 1].url("/v1/events");
        let events: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        Some(events["events"].as_array()?.iter().filter_map(|e| e["kind"].as_str().map(String::from)).collect())
    }

    /// Waits until node `id`'s journal holds each kind `count` times, then, after a few more
    /// seconds (several scheduled checks or heartbeats), asserts it still holds exactly that
    /// many: each turn said once. A status shows what the leader knows at once; the journal
    /// event commits through Raft a moment later, so reading the journal right after a status
    /// changed races.
    pub async fn journaled_exactly(&self, id: u64, want: &[(&str, usize)]) {
        let counts = || async {
            let kinds = self.journal_kinds(id).await?;
            let counts: Vec<usize> = want.iter().map(|(k, _)| kinds.iter().filter(|x| x == k).count()).collect();
            Some((counts, kinds))
        };
        let expected: Vec<usize> = want.iter().map(|(_, n)| *n).collect();
        eventually(Duration::from_secs(10), "the journal events wanted", || async {
            counts().await.filter(|(n, _)| *n == expected).map(|_| ())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (n, kinds) = counts().await.expect("read the journal");
        assert_eq!(n, expected, "each turn journaled once: {want:?} in {kinds:?}");
    }

    /// True when every running node's committed verdicts say `site` is `verdict` for all of
    /// `nodes`.
    pub async fn all_see(&self, site: &str, verdict: &str, nodes: &[u64]) -> Option<()> {
        for n in self.nodes.iter().filter(|n| n.running()) {
            let s = self.status(n.id).await?;
            for id in nodes {
                if s["verdicts"][site][id.to_string()] != verdict {
                    return None;
                }
            }
        }
        Some(())
    }
}

/// Runs the `witness` binary: its exit code, and its stdout and stderr together.
pub fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(args)
        .env("WITNESS_CA", &creds().ca)
        .env("WITNESS_TOKEN_FILE", creds().token_file("admin"))
        .output()
        .expect("run witness");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Group `app`'s plan as some running node has it, once `done` holds for it.
pub async fn plan_when(c: &Cluster, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    eventually(timeout, what, || async {
        for n in c.nodes.iter().filter(|n| n.running()) {
            if let Some(s) = c.status(n.id).await {
                let plan = &s["groups"][0]["plan"];
                if !plan.is_null() && done(plan) {
                    return Some(plan.clone());
                }
            }
        }
        None
    })
    .await
}

/// Each step's status in a plan as `/v1/status` shows it.
pub fn statuses(plan: &Value) -> Vec<String> {
    plan["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap().to_string()).collect()
}
