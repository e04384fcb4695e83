//! The site agent (`witness agent`): runs at a site, heartbeats the witness cluster (following
//! its leader), exchanges peer leases with the other site's agent, reads its site's replication
//! state, and runs the site's hooks on every role change. The decisions are [`core::AgentCore`]'s;
//! this module only carries messages, keeps time and runs commands.
//!
//! Applications (or their storage) must treat the agent's word as the only permission to
//! write: `GET /v1/groups/{group}/writable` answers 200 only while the site holds a lease, and
//! an agent that is not running answers nothing.
//!
//! With its site certificate (`agent.cert`, `key`, `ca`) the agent serves HTTPS with it, and
//! the peer-lease link is mutual TLS: a grant goes only to a request presenting the other
//! site's certificate from the same CA, and counts only when it comes from another site's
//! certificate, so nobody else can extend a site's permission to write.
//! Without one (a token-only or plain-HTTP agent) both are plain HTTP, and it says so at start.

pub mod check;
pub mod core;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use prometheus::{Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};

use self::core::{AgentCore, GroupView, Hook, PeerGrant, PeerRequest, Replication};
use crate::clock::{Clock, Stopwatch};
use crate::config::agent::{AgentConfig, AgentCredentials, ReplicationSource};
use crate::config::TlsFiles;
use crate::metrics::register;
use crate::protocol::{HeartbeatAnswer, NotLeader, Role};
use crate::server::Connection;
use crate::telemetry::{Causes, Lasting};
use crate::tls::{CertIdentity, Material, Reloadable};

pub struct Agent {
    config: AgentConfig,
    core: Mutex<AgentCore>,
    /// The agent's monotonic clock: the core's `now`.
    clock: Clock,
    /// For replication URLs.
    http: reqwest::Client,
    /// The clients toward the witness and the peer, replaced whole on reload.
    clients: RwLock<Clients>,
    /// This site's certificate for the listener, when it has one: the agent then serves TLS
    /// and demands the peer's certificate for peer leases.
    server_tls: Option<Arc<Reloadable>>,
    peer_url: String,
    witness_scheme: &'static str,
    hooks: mpsc::UnboundedSender<Hook>,
    /// Wakes the heartbeat loop early (a drain completed: say so at once).
    wake: Notify,
    /// Index into `config.witness` of the node believed to lead.
    leader: Mutex<usize>,
    /// When the witness last answered a heartbeat.
    last_answer: Mutex<Option<Stopwatch>>,
    /// While no witness node answers: why, node by node.
    witness_problem: Mutex<Option<String>>,
    /// Peer-lease requests refused lately, for the log: once per cause, then once a minute.
    refusals: Mutex<Causes>,
    /// `agent.writable_log`, open for appending (a testing aid).
    writable_log: Option<Mutex<std::fs::File>>,
    metrics: AgentMetrics,
}

/// `witness agent status`: the agent's own view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub site: String,
    pub peer: String,
    pub peer_reachable: bool,
    /// Why the latest peer-lease exchange left this site without a lease it asked for.
    #[serde(default)]
    pub peer_problem: Option<String>,
    /// The witness node heartbeats go to.
    pub witness: String,
    /// Since the witness last answered a heartbeat; absent: never.
    pub witness_answered_ms_ago: Option<u64>,
    /// While no witness node answers: each node's reason, from the latest round.
    #[serde(default)]
    pub witness_problem: Option<String>,
    pub groups: BTreeMap<crate::ids::GroupId, GroupView>,
}

impl Agent {
    fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Runs `f` on the core and queues the hooks it returns, in order.
    fn with_core<T>(&self, f: impl FnOnce(&mut AgentCore, Duration) -> (T, Vec<Hook>)) -> T {
        let mut core = self.core.lock().expect("agent core lock poisoned");
        let (result, hooks) = f(&mut core, self.now());
        for hook in hooks {
            tracing::warn!(group = %hook.group, role = %hook.role, epoch = %hook.epoch, "role changed");
            let _ = self.hooks.send(hook);
        }
        result
    }

    /// Appends every lease this site now holds while writable to `agent.writable_log`: the
    /// span from now to when its last lease runs out, on the machine's boot-time clock.
    fn record_writable(&self) {
        let Some(log) = &self.writable_log else { return };
        let now = self.now();
        let view = self.core.lock().expect("agent core lock poisoned").view(now);
        let mut lines = String::new();
        for (group, v) in view.iter().filter(|(_, v)| v.writable) {
            let until = now + Duration::from_millis(v.witness_lease_ms.max(v.peer_lease_ms));
            let ns = |d: Duration| self.clock.since_boot(d).as_nanos();
            lines += &format!("{group} {} {}\n", ns(now), ns(until));
        }
        if !lines.is_empty() {
            use std::io::Write;
            if let Err(e) = log.lock().expect("writable log lock poisoned").write_all(lines.as_bytes()) {
                tracing::warn!(error = %e, "cannot append to agent.writable_log");
            }
        }
    }

    pub fn status(&self) -> AgentStatus {
        let now = self.now();
        let core = self.core.lock().expect("agent core lock poisoned");
        let leader = *self.leader.lock().expect("leader lock poisoned");
        AgentStatus {
            site: self.config.site.clone(),
            peer: self.config.peer.clone(),
            peer_reachable: core.peer_reachable(now),
            peer_problem: core.peer_problem().map(String::from),
            witness: self.config.witness[leader].clone(),
            witness_answered_ms_ago: self
                .last_answer
                .lock()
                .expect("answer lock poisoned")
                .map(|at| at.elapsed().as_millis() as u64),
            witness_problem: self.witness_problem.lock().expect("witness problem lock poisoned").clone(),
            groups: core.view(now),
        }
    }
}

/// A running agent, stopped through [`RunningAgent::shutdown`].
pub struct RunningAgent {
    pub agent: Arc<Agent>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl RunningAgent {
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.tasks.shutdown().await;
    }
}

/// What the agent presents and trusts, loaded from its credential files at start and on reload.
#[derive(Clone)]
struct Clients {
    /// Toward the witness: its CA, this site's certificate or token.
    witness: reqwest::Client,
    /// Toward the other site's agent: over TLS, trusts only the CA and presents this site's
    /// certificate.
    peer: reqwest::Client,
}

impl Clients {
    fn load(creds: &AgentCredentials) -> anyhow::Result<(Clients, Option<Material>)> {
        let material = match creds {
            AgentCredentials { ca: Some(ca), cert_and_key: Some((cert, key)), .. } => {
                let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() };
                Some(Material::load(&files, "agent")?)
            }
            _ => None,
        };
        let mut peer = reqwest::Client::builder().no_proxy().tcp_nodelay(true);
        if let Some(m) = &material {
            peer = peer.tls_backend_preconfigured(m.client.clone()).https_only(true).tls_info(true);
        }
        let peer = peer.build().context("cannot build the peer HTTP client")?;
        Ok((Clients { witness: witness_client(creds, material.as_ref())?, peer }, material))
    }
}

impl Agent {
    /// Loads the credential files `config` names (certificate, key, CA, token) again: new
    /// connections use them, open ones finish with the old. Anything wrong, or a change between
    /// TLS and plain HTTP on the agent's own listener (that needs a restart), changes nothing.
    pub fn reload(&self, config: &AgentConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            config.site == self.config.site,
            "the config now names site {:?}; this agent speaks for {:?} (a restart changes that)",
            config.site,
            self.config.site
        );
        let (clients, material) = Clients::load(&config.credentials)?;
        match (&self.server_tls, material) {
            (Some(server), Some(material)) => server.replace(material),
            (None, None) => {}
            (Some(_), None) => anyhow::bail!("the agent serves TLS; the new config has no site certificate"),
            (None, Some(_)) => anyhow::bail!("the agent serves plain HTTP; serving TLS needs a restart"),
        }
        *self.clients.write().expect("agent clients lock poisoned") = clients;
        Ok(())
    }

    fn clients(&self) -> Clients {
        self.clients.read().expect("agent clients lock poisoned").clone()
    }
}

/// Over TLS, a grant counts only from another site's certificate: the CA also signs the
/// witness nodes' certificates, and this site's own.
fn peer_identity_problem(tls: bool, own_site: &str, resp: &reqwest::Response) -> Option<String> {
    if !tls {
        return None;
    }
    let cert = resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate());
    match cert.and_then(|der| CertIdentity::of(&der.into())) {
        Some(CertIdentity::Site(site)) if site != own_site => None,
        other => Some(format!(
            "the peer presented {}, not another site's certificate",
            other.map_or("no certificate".to_string(), |id| id.to_string())
        )),
    }
}

pub async fn start(config: AgentConfig, listener: tokio::net::TcpListener) -> anyhow::Result<RunningAgent> {
    crate::tls::init();
    let addr = listener.local_addr()?;
    let http = reqwest::Client::builder().no_proxy().tcp_nodelay(true).build().context("cannot build HTTP client")?;
    let (clients, material) = Clients::load(&config.credentials).context("agent credentials")?;
    if material.is_none() {
        tracing::warn!(
            "agent has no site certificate (agent.cert, agent.key): its listener and the peer-lease link \
             are plain HTTP, unauthenticated; keep them on a private network"
        );
    }
    let server_tls = material.map(|m| Arc::new(Reloadable::new(m)));
    let scheme = if server_tls.is_some() { "https" } else { "http" };
    let peer_url = format!("{scheme}://{}/v1/peer/lease", config.peer);
    let witness_scheme = if config.plain_http { "http" } else { "https" };
    let (hook_tx, hook_rx) = mpsc::unbounded_channel();
    let clock = Clock::start();
    let writable_log = match &config.writable_log {
        None => None,
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("agent.writable_log {}", path.display()))?,
        )),
    };
    let core = AgentCore::new(
        &config.site,
        config.groups.iter().map(|g| g.name.as_str().into()),
        config.peer_timeout,
        Duration::ZERO,
    );
    let agent = Arc::new(Agent {
        core: Mutex::new(core),
        clock,
        http,
        clients: RwLock::new(clients),
        server_tls: server_tls.clone(),
        peer_url,
        witness_scheme,
        hooks: hook_tx,
        wake: Notify::new(),
        leader: Mutex::new(0),
        last_answer: Mutex::new(None),
        witness_problem: Mutex::new(None),
        refusals: Mutex::default(),
        writable_log,
        metrics: AgentMetrics::new(&config.site),
        config,
    });
    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::server::serve(listener, router(agent.clone()), server_tls, stopped.clone()));
    tasks.spawn(heartbeats(agent.clone()));
    tasks.spawn(peer_leases(agent.clone()));
    tasks.spawn(deadlines(agent.clone()));
    tasks.spawn(run_hooks(agent.clone(), hook_rx));
    for group in agent.config.groups.clone() {
        if let Some(source) = group.replication {
            tasks.spawn(read_replication(agent.clone(), group.name, source));
        }
    }
    tracing::info!(site = %agent.config.site, %addr, peer = %agent.config.peer, "agent started");
    Ok(RunningAgent { agent, addr, stop, tasks })
}

/// The client for heartbeats: trusts only the configured CA, presents the site's certificate
/// (`site`, already loaded) and sends its token when configured.
fn witness_client(creds: &AgentCredentials, site: Option<&Material>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().no_proxy().tcp_nodelay(true);
    let tls = match (site, &creds.ca) {
        (Some(m), _) => Some(m.client.clone()),
        (None, Some(ca)) => Some(crate::tls::client_config(ca, None)?),
        (None, None) => None,
    };
    if let Some(tls) = tls {
        builder = builder.tls_backend_preconfigured(tls).https_only(true);
    }
    if let Some(path) = &creds.token_file {
        let token = std::fs::read_to_string(path).with_context(|| format!("agent.token_file {}", path.display()))?;
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .with_context(|| format!("agent.token_file {}: not a token", path.display()))?;
        value.set_sensitive(true);
        builder = builder.default_headers([(reqwest::header::AUTHORIZATION, value)].into_iter().collect());
    }
    Ok(builder.build()?)
}

/// Heartbeats the witness every interval (five times faster while a group drains here), trying
/// each node once per round, starting with the one believed to lead. When no node answers,
/// that is logged with each node's reason: at once, then once a minute while it lasts; the
/// first answer after is logged too.
async fn heartbeats(agent: Arc<Agent>) {
    let members = agent.config.witness.len();
    let mut unanswered = Lasting::default();
    // Leaders named by a node that `agent.witness` does not list (the cluster's members
    // changed): each logged once, then once a minute, not at every try.
    let mut unlisted = Causes::default();
    loop {
        let mut tries = 0;
        let mut reasons = Vec::new();
        let mut answered = false;
        while tries < members {
            let index = *agent.leader.lock().expect("leader lock poisoned");
            let target = agent.config.witness[index].clone();
            match heartbeat_once(&agent, &target).await {
                Ok(()) => {
                    answered = true;
                    break;
                }
                Err(Redirect::To(addr)) => {
                    if let Some(i) = agent.config.witness.iter().position(|w| *w == addr) {
                        *agent.leader.lock().expect("leader lock poisoned") = i;
                    } else {
                        if unlisted.due(agent.now(), &addr).is_some() {
                            tracing::warn!(%addr, "the witness leader is not in agent.witness: add it there (and \
                                           drop removed members); trying the next node");
                        }
                        reasons.push(format!("{target}: names leader {addr}, which agent.witness does not list"));
                        *agent.leader.lock().expect("leader lock poisoned") = (index + 1) % members;
                    }
                }
                Err(Redirect::Next(reason)) => {
                    tracing::debug!(node = %target, %reason, "heartbeat failed; trying the next witness node");
                    reasons.push(format!("{target}: {reason}"));
                    *agent.leader.lock().expect("leader lock poisoned") = (index + 1) % members;
                }
            }
            tries += 1;
        }
        let now = agent.now();
        let problem =
            (!answered).then(|| if reasons.is_empty() { "no node answered".to_string() } else { reasons.join("; ") });
        match &problem {
            None => {
                if let Some(after_s) = unanswered.ended(now) {
                    tracing::info!(after_s, "the witness answers heartbeats again");
                }
            }
            // One condition, whatever each node's reason this round: logged once a minute.
            Some(nodes) => {
                if let Some(due) = unanswered.holds(now, "") {
                    tracing::warn!(for_s = due.for_s, %nodes, "no witness node answers heartbeats: its leases \
                                   run out, and only the peer lease keeps this site writable");
                }
            }
        }
        *agent.witness_problem.lock().expect("witness problem lock poisoned") = problem;
        let draining = agent.core.lock().expect("agent core lock poisoned").draining();
        let interval = if draining { agent.config.heartbeat_interval / 5 } else { agent.config.heartbeat_interval };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = agent.wake.notified() => {}
        }
    }
}

enum Redirect {
    To(String),
    Next(String),
}

async fn heartbeat_once(agent: &Agent, target: &str) -> Result<(), Redirect> {
    let sent_at = agent.now();
    let heartbeat = agent.core.lock().expect("agent core lock poisoned").heartbeat(sent_at);
    let url = format!("{}://{target}/v1/sites/{}/heartbeat", agent.witness_scheme, agent.config.site);
    let timeout = agent.config.heartbeat_interval.max(Duration::from_millis(250));
    let outcome = |o: &str| agent.metrics.heartbeats.with_label_values(&[o]).inc();
    let resp = agent.clients().witness.post(url).json(&heartbeat).timeout(timeout).send().await.map_err(|e| {
        outcome("unreachable");
        Redirect::Next(crate::tls::failure::classify(&e).to_string())
    })?;
    let status = resp.status();
    if status == StatusCode::MISDIRECTED_REQUEST {
        outcome("not_leader");
        let body: Result<NotLeader, _> = resp.json().await;
        return Err(body.map_or_else(|e| Redirect::Next(e.to_string()), |b| Redirect::To(b.leader_addr)));
    }
    if !status.is_success() {
        outcome("refused");
        // Logged with the round's other reasons, not once per attempt.
        let body = resp.text().await.unwrap_or_default();
        return Err(Redirect::Next(format!("refused, HTTP {status}: {}", body.trim())));
    }
    let answer: HeartbeatAnswer = resp.json().await.map_err(|e| {
        outcome("bad_answer");
        Redirect::Next(e.to_string())
    })?;
    outcome("ok");
    agent.metrics.heartbeat_seconds.observe((agent.now() - sent_at).as_secs_f64());
    *agent.last_answer.lock().expect("answer lock poisoned") = Some(Stopwatch::start());
    for group in agent.config.groups.iter().filter(|g| !answer.groups.contains_key(&g.name)) {
        tracing::debug!(group = %group.name, "the witness has no group of this name with agents for this site");
    }
    agent.with_core(|core, now| ((), core.on_answer(sent_at, now, &answer)));
    agent.record_writable();
    Ok(())
}

/// Asks the other site's agent for peer leases every interval (also how each side learns the
/// other is reachable).
async fn peer_leases(agent: Arc<Agent>) {
    // Each new kind of failure is a warning (a refused certificate, a peer gone), repeated once
    // a minute while it lasts; the others, four a second, are debug.
    let mut failing = Lasting::default();
    loop {
        let sent_at = agent.now();
        let request = agent.core.lock().expect("agent core lock poisoned").peer_request();
        let result = agent
            .clients()
            .peer
            .post(&agent.peer_url)
            .json(&request)
            .timeout(agent.config.heartbeat_interval)
            .send()
            .await;
        let grant = match result {
            Ok(resp) if resp.status().is_success() => {
                match peer_identity_problem(agent.server_tls.is_some(), &agent.config.site, &resp) {
                    Some(problem) => Err(problem),
                    None => resp.json::<PeerGrant>().await.map_err(|e| e.to_string()),
                }
            }
            Ok(resp) => Err(format!("HTTP {}", resp.status())),
            Err(e) => Err(crate::tls::failure::classify(&e).to_string()),
        };
        match grant {
            Ok(grant) => {
                if let Some(after_s) = failing.ended(sent_at) {
                    tracing::info!(peer = %agent.config.peer, after_s, "the peer grants leases again");
                }
                agent.with_core(|core, now| ((), core.on_peer_grant(sent_at, now, &grant)));
                agent.record_writable();
            }
            Err(e) => {
                let why = format!("peer {}: {e}", agent.config.peer);
                match failing.holds(sent_at, &e) {
                    Some(due) => {
                        tracing::warn!(peer = %agent.config.peer, for_s = due.for_s, error = %e, "peer lease request failed")
                    }
                    None => tracing::debug!(peer = %agent.config.peer, error = %e, "peer lease request failed"),
                }
                agent.with_core(|core, _| (core.on_peer_failure(why), Vec::new()));
            }
        }
        let elapsed = agent.now().saturating_sub(sent_at);
        tokio::time::sleep(agent.config.heartbeat_interval.saturating_sub(elapsed)).await;
    }
}

/// Re-evaluates roles at every lease expiry and drain completion, to the millisecond.
async fn deadlines(agent: Arc<Agent>) {
    loop {
        let (drained_before, next) = {
            let core = agent.core.lock().expect("agent core lock poisoned");
            let now = agent.now();
            (drained_groups(&core, now), core.next_deadline(now))
        };
        let wait =
            next.map_or(Duration::from_millis(100), |d| d.saturating_sub(agent.now())).min(Duration::from_millis(100));
        tokio::time::sleep(wait).await;
        let drained_now = agent.with_core(|core, now| {
            let hooks = core.tick(now);
            (drained_groups(core, now), hooks)
        });
        if drained_now != drained_before {
            agent.wake.notify_one();
        }
    }
}

fn drained_groups(core: &AgentCore, now: Duration) -> Vec<crate::ids::GroupId> {
    core.heartbeat(now).groups.into_iter().filter(|(_, r)| r.drained).map(|(g, _)| g).collect()
}

/// Brings the gauges up to date, when scraped.
fn refresh_gauges(agent: &Agent) {
    let status = agent.status();
    let view = status.groups;
    let m = &agent.metrics;
    let peer_up = status.peer_reachable && status.peer_problem.is_none();
    m.link_up.with_label_values(&["peer"]).set(i64::from(peer_up));
    m.link_up.with_label_values(&["witness"]).set(i64::from(status.witness_problem.is_none()));
    for (group, v) in &view {
        for role in Role::ALL {
            m.role.with_label_values(&[group, role.as_str()]).set(i64::from(v.role == Some(role)));
        }
        m.writable.with_label_values(&[group]).set(i64::from(v.writable));
        m.lease.with_label_values(&[group, "witness"]).set(v.witness_lease_ms as f64 / 1000.0);
        m.lease.with_label_values(&[group, "peer"]).set(v.peer_lease_ms as f64 / 1000.0);
    }
}

/// Runs hooks one at a time in the order the roles changed, each with `WITNESS_GROUP`,
/// `WITNESS_EPOCH`, `WITNESS_ROLE` and `WITNESS_SITE` set.
async fn run_hooks(agent: Arc<Agent>, mut hooks: mpsc::UnboundedReceiver<Hook>) {
    while let Some(hook) = hooks.recv().await {
        let Some(group) = agent.config.groups.iter().find(|g| g.name == hook.group) else { continue };
        let (name, command) = match hook.role {
            Role::Active => ("on_promote", &group.on_promote),
            Role::Standby => ("on_standby", &group.on_standby),
            Role::Fenced => ("on_fence", &group.on_fence),
            Role::Draining => continue,
        };
        let Some(command) = command else { continue };
        let env = [
            ("WITNESS_GROUP", hook.group.to_string()),
            ("WITNESS_EPOCH", hook.epoch.to_string()),
            ("WITNESS_ROLE", hook.role.to_string()),
            ("WITNESS_SITE", agent.config.site.clone()),
        ];
        let outcome = match run_shell(command, &env, agent.config.hook_timeout).await {
            Ok(_) => "ok",
            Err(e) => {
                tracing::error!(group = %hook.group, hook = name, error = %e, "hook failed");
                "failed"
            }
        };
        agent.metrics.hooks.with_label_values(&[&hook.group, name, outcome]).inc();
    }
}

/// Runs `command` with `sh -c`, returning its standard output; an error names the exit status
/// and standard error, or the timeout.
async fn run_shell(command: &str, env: &[(&str, String)], timeout: Duration) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command).kill_on_drop(true).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| format!("{command:?} did not finish within {} ms", timeout.as_millis()))?
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Reads the group's replication state every heartbeat interval. A failed reading is reported
/// as unknown, which closes the witness's RPO gate: never a guess.
async fn read_replication(agent: Arc<Agent>, group: String, source: ReplicationSource) {
    let timeout = agent.config.hook_timeout.min(agent.config.heartbeat_interval * 4);
    loop {
        let reading = match &source {
            ReplicationSource::Command(cmd) => run_shell(cmd, &[("WITNESS_GROUP", group.clone())], timeout)
                .await
                .and_then(|out| parse_replication(&out)),
            ReplicationSource::Url(url) => match agent.http.get(url.clone()).timeout(timeout).send().await {
                Ok(resp) if resp.status().is_success() => {
                    resp.text().await.map_err(|e| e.to_string()).and_then(|t| parse_replication(&t))
                }
                Ok(resp) => Err(format!("{url} answered HTTP {}", resp.status())),
                Err(e) => Err(format!("{url}: {}", crate::tls::failure::classify(&e))),
            },
        };
        let reading = reading.map_err(|e| tracing::warn!(%group, error = %e, "cannot read replication state")).ok();
        agent.with_core(|core, now| {
            core.set_replication(&group, reading, now);
            ((), Vec::new())
        });
        tokio::time::sleep(agent.config.heartbeat_interval).await;
    }
}

/// What a replication reader printed, as the agent takes it (the shipped readers in
/// `deploy/kubernetes/bin` are tested against it).
pub fn parse_replication(text: &str) -> Result<Replication, String> {
    let r: Replication = serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "replication state {:?} is not JSON like {{\"in_sync\": true}} or {{\"recovery_point_age_ms\": 1234}}: {e}",
            text.trim()
        )
    })?;
    if r.in_sync.is_none() && r.recovery_point_age_ms.is_none() {
        return Err(format!("replication state {:?} has neither in_sync nor recovery_point_age_ms", text.trim()));
    }
    Ok(r)
}

fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/peer/lease", post(peer_lease))
        .route("/v1/groups/{group}/writable", get(writable))
        .with_state(agent)
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    refresh_gauges(&agent);
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&agent.metrics.registry.gather(), &mut buf).expect("text encoding");
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

async fn status(State(agent): State<Arc<Agent>>) -> Json<AgentStatus> {
    Json(agent.status())
}

async fn peer_lease(
    State(agent): State<Arc<Agent>>,
    conn: Option<Extension<Connection>>,
    body: Result<Json<PeerRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("request body: {}\n", e.body_text())).into_response(),
    };
    if request.site == agent.config.site {
        let msg =
            format!("a peer-lease request from site {:?}, this agent's own site: check agent.peer\n", request.site);
        return (StatusCode::BAD_REQUEST, msg).into_response();
    }
    let presented = conn.and_then(|Extension(c)| c.cert);
    if agent.server_tls.is_some() && presented != Some(CertIdentity::Site(request.site.to_string())) {
        let presented = presented.map_or("none".to_string(), |c| c.to_string());
        let cause = format!("{} {presented}", request.site);
        let due = agent.refusals.lock().expect("refusals lock poisoned").due(agent.now(), &cause);
        match due {
            Some(due) => tracing::warn!(site = %request.site, %presented, held_back = due.held_back,
                                        "peer-lease request refused: not that site's certificate"),
            None => tracing::debug!(site = %request.site, %presented, "peer-lease request refused"),
        }
        let msg = format!(
            "peer leases for site {:?} need its certificate (site-{}) from this agent's CA; presented: {presented}\n",
            request.site, request.site
        );
        return (StatusCode::FORBIDDEN, msg).into_response();
    }
    Json(agent.with_core(|core, now| (core.grant_peer(now, &request), Vec::new()))).into_response()
}

/// 200 while this site may write for `group`, 503 otherwise: what an application asks before
/// (or while) it writes.
async fn writable(State(agent): State<Arc<Agent>>, Path(group): Path<String>) -> Response {
    let view = agent.status().groups.remove(&group);
    match view {
        None => (StatusCode::NOT_FOUND, format!("no group {group:?} in this agent's config\n")).into_response(),
        Some(v) if v.writable => (StatusCode::OK, Json(v)).into_response(),
        Some(v) => (StatusCode::SERVICE_UNAVAILABLE, Json(v)).into_response(),
    }
}

struct AgentMetrics {
    registry: Registry,
    role: IntGaugeVec,
    writable: IntGaugeVec,
    lease: GaugeVec,
    heartbeats: IntCounterVec,
    /// From sending a heartbeat to its answer read, for answered heartbeats.
    heartbeat_seconds: Histogram,
    hooks: IntCounterVec,
    link_up: IntGaugeVec,
}

impl AgentMetrics {
    fn new(site: &str) -> AgentMetrics {
        let labels = [("site".to_string(), site.to_string())].into();
        let registry = Registry::new_custom(None, Some(labels)).expect("static registry settings");
        let r = &registry;
        let ints = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric"))
        };
        let counts = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels).expect("static metric"))
        };
        let role = ints("witness_agent_role", "1 for the role this site is in for a group", &["group", "role"]);
        let writable = ints("witness_agent_writable", "1 while this site may write for a group", &["group"]);
        let lease = register(
            r,
            GaugeVec::new(
                Opts::new("witness_agent_lease_remaining_seconds", "Lease this site holds for a group, by kind"),
                &["group", "kind"],
            )
            .expect("static metric"),
        );
        let heartbeats =
            counts("witness_agent_heartbeats_total", "Heartbeats sent to witness nodes, by outcome", &["outcome"]);
        let hooks = counts(
            "witness_agent_hook_runs_total",
            "Hook runs by group, hook and outcome",
            &["group", "hook", "outcome"],
        );
        let link_up = ints(
            "witness_agent_link_up",
            "1 while the link works: peer (leases exchanged, every one asked for granted), witness (a node answers)",
            &["link"],
        );
        let heartbeat_seconds = register(
            r,
            Histogram::with_opts(
                HistogramOpts::new("witness_agent_heartbeat_seconds", "From a heartbeat sent to its answer read")
                    .buckets(vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]),
            )
            .expect("static metric"),
        );
        AgentMetrics { registry, role, writable, lease, heartbeats, heartbeat_seconds, hooks, link_up }
    }
}
