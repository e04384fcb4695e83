//! One witness node, wired: opens storage under the data directory (holding a lock so two
//! processes can never share it), starts Raft, serves the HTTP API and the Raft routes on one
//! listener, runs the node's background duties, and shuts everything down in order.

pub mod credentials;
mod duties;
mod heartbeats;
mod leading;
pub mod planning;
mod probing;
pub use credentials::DEV_TOKEN_NAME;
pub use duties::BootstrapInfo;
pub mod leader;
pub mod status;

use openraft::async_runtime::WatchReceiver;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::auth::RateLimits;
use crate::clock::Clock;
use crate::config::auth::Auth;
use crate::config::Config;
use crate::engine::detector::{Observer, Watch};
use crate::leader::{Contact, Leader, LeaderConfig};
use crate::metrics::Metrics;
use crate::probe::SiteProber;
use crate::raft::links::Links;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, PeerClients, SharedPeers};
use crate::raft::rpc::LeaderContact;
use crate::raft::state_machine::{SharedApplied, StateMachine};
use crate::raft::{self, NodeId, Raft};
use crate::state::Topology;
use crate::tls::{Material, Reloadable};

pub struct Node {
    pub id: NodeId,
    pub config: Arc<Config>,
    pub raft: Raft,
    pub applied: SharedApplied,
    pub contact: LeaderContact,
    pub metrics: Metrics,
    /// The sites and groups this node's config declares; the leader makes the replicated
    /// state match it.
    pub topology: Topology,
    /// This process's monotonic clock: every `now` the leader and the observer are given.
    pub clock: Clock,
    /// Set once the state machine has applied everything the cluster had committed for this
    /// node's log when it started; until then reads may show an older state.
    pub recovered: AtomicBool,
    /// Turns true when the node begins to shut down: long-lived responses (event streams) end.
    pub stopping: watch::Receiver<bool>,
    /// What this node makes of its probes: verdicts, the reports it owes the log, and when each
    /// site's current streak of failures began.
    observer: Mutex<Observer>,
    /// Batches the leadership confirmations of heartbeats.
    confirmer: heartbeats::Confirmer,
    /// What every leadership of this node is configured with.
    leader_config: Arc<LeaderConfig>,
    /// This node's leadership, while it leads: one lock, so a heartbeat's grant and the
    /// leader's look at the state never interleave.
    leader: Mutex<Option<Leader>>,
    /// Clients toward the other nodes (Raft, forwarding, bootstrap checks).
    peers: SharedPeers,
    /// How this node's Raft requests to each peer fare.
    pub links: Arc<Links>,
    /// This node's certificate, key and cluster CA; `None` on plain HTTP.
    tls: Option<Arc<Reloadable>>,
    /// The tokens accepted and the anonymous/metrics switches, replaced on reload.
    auth: RwLock<Arc<Auth>>,
    pub rate_limits: Mutex<RateLimits>,
    _data_dir_lock: File,
}

/// How long shutdown waits for in-flight requests (writes are bounded well below this).
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(15);

/// A node that is serving; dropped only through [`RunningNode::shutdown`].
pub struct RunningNode {
    pub node: Arc<Node>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Node {
    /// Opens storage and starts Raft and the HTTP server on `listener`.
    pub async fn start(config: Config, listener: tokio::net::TcpListener) -> anyhow::Result<RunningNode> {
        crate::tls::init();
        let config = Arc::new(config);
        let data_dir = config.node.data_dir.clone();
        crate::raft::snapshot_file::create_dir_durably(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let lock = lock_data_dir(&data_dir)?;

        let probers = SiteProber::all(&config.sites)?;
        let (errors, warnings) = crate::actions::audit(&config);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        if !errors.is_empty() {
            anyhow::bail!("plan secret files: {}", errors.join("; "));
        }
        let (auth, tls) = credentials::load(&config)?;
        let metrics = Metrics::new(config.node.id.0);
        for g in &config.groups {
            if let Some(every) = g.drill_every {
                metrics.drill_every_seconds.with_label_values(&[&g.name]).set(every.as_secs_f64());
            }
        }
        if tls.is_none() {
            tracing::warn!(
                "transport.plain_http: no TLS: API tokens and Raft traffic cross the network in the clear and any \
                 host can speak Raft to this node; for development only"
            );
        }
        if let Some(m) = &tls {
            observe_expiry(&metrics, m);
        }
        let peers = SharedPeers::new(PeerClients::new(tls.as_ref().map(|m| &m.client))?);
        let tls = tls.map(|m| Arc::new(Reloadable::new(m)));
        let log_store = LogStore::open(&data_dir.join("raft-log"))?;
        let state_machine = StateMachine::open(&data_dir)?;
        let applied = state_machine.shared();
        let clock = Clock::start();
        let links = Arc::new(Links::new(clock));
        let network = Network::new(&config.cluster.name, peers.clone(), links.clone());
        let raft_config = raft::openraft_config(&config.cluster.name, &config.cluster.raft)?;
        let raft = Raft::new(config.node.id, raft_config, network, log_store, state_machine)
            .await
            .context("cannot start Raft")?;

        let (stop, stopped) = watch::channel(false);
        let watches = config.sites.iter().map(|s| {
            let watch = Watch {
                failure_threshold: s.failure_threshold,
                success_threshold: s.success_threshold,
                // A site whose rounds stop arriving (its prober died) gets an unknown verdict.
                stale_after: (s.probe_interval + s.probe_timeout) * 3,
            };
            (s.name.as_str().into(), watch)
        });
        let observer = Observer::new(config.node.id, watches, clock.now());
        let node = Arc::new(Node {
            id: config.node.id,
            topology: Topology::from_config(&config),
            config: config.clone(),
            raft: raft.clone(),
            applied,
            contact: LeaderContact::default(),
            metrics,
            clock,
            recovered: AtomicBool::new(false),
            stopping: stopped.clone(),
            observer: Mutex::new(observer),
            confirmer: Default::default(),
            leader_config: Arc::new(LeaderConfig::from_config(&config)),
            leader: Mutex::new(None),
            peers,
            links,
            tls: tls.clone(),
            auth: RwLock::new(Arc::new(auth)),
            rate_limits: Default::default(),
            _data_dir_lock: lock,
        });

        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        let raft_routes = raft::rpc::router(
            raft.clone(),
            config.node.id,
            &config.cluster.name,
            node.contact.clone(),
            node.applied.clone(),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            (node.clone(), crate::api::auth::Needs::Peer),
            crate::api::auth::guard,
        ));
        let app = crate::api::router(node.clone()).merge(raft_routes);
        tasks.spawn(crate::server::serve(listener, app, tls, stopped.clone()));
        duties::spawn_all(&node, probers, &stopped, &mut tasks);

        tracing::info!(
            node_id = %node.id,
            %addr,
            advertise = %config.node.advertise,
            data_dir = %data_dir.display(),
            cluster = %config.cluster.name,
            "node started"
        );
        Ok(RunningNode { node, addr, stop, tasks })
    }
}

impl RunningNode {
    /// Hands leadership to the most up-to-date voter (so the cluster need not wait out an
    /// election timeout), stops accepting requests, gives in-flight ones a bounded time to
    /// finish, stops Raft and waits for every task.
    pub async fn shutdown(mut self) {
        self.node.hand_off_leadership().await;
        let _ = self.stop.send(true);
        let drained =
            tokio::time::timeout(SHUTDOWN_DRAIN, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within {SHUTDOWN_DRAIN:?}: stopping anyway");
            self.tasks.shutdown().await;
        }
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::error!(error = %e, "Raft did not shut down cleanly");
        }
        tracing::info!(node_id = %self.node.id, "node stopped");
    }

    /// Resolves when Raft stops on its own (a fatal storage error): the process should exit
    /// and be restarted by its supervisor, never carry on.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.node.raft.metrics();
        loop {
            if let Err(e) = &metrics.borrow_watched().running_state {
                return e.to_string();
            }
            if metrics.changed().await.is_err() {
                return "Raft stopped".into();
            }
        }
    }
}

impl Node {
    pub fn auth(&self) -> Arc<Auth> {
        self.auth.read().expect("auth lock poisoned").clone()
    }

    /// The scheme and client for a request to another node outside Raft.
    pub fn peer_client(&self) -> (&'static str, reqwest::Client) {
        let peers = self.peers.current();
        (peers.scheme, peers.forward.clone())
    }

    /// Loads tokens and certificates again from `config` (the config file read anew):
    /// new connections use them, open ones finish with the old. Nothing else in the config
    /// changes without a restart. On error nothing changes.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        let (auth, tls) = credentials::load(config)?;
        match (&self.tls, tls) {
            (Some(current), Some(material)) => {
                let peers = PeerClients::new(Some(&material.client))?;
                observe_expiry(&self.metrics, &material);
                current.replace(material);
                self.peers.replace(peers);
            }
            (None, None) => {}
            _ => anyhow::bail!("switching between TLS and plain HTTP needs a restart"),
        }
        *self.auth.write().expect("auth lock poisoned") = Arc::new(auth);
        Ok(())
    }

    /// Who acknowledges this node: [`contact`].
    pub fn contact(&self, m: &openraft::RaftMetrics<raft::TypeConfig>) -> Contact {
        Contact { formats: self.links.formats(), ..contact(self.id, m) }
    }

    /// This node's leadership of `term`, made now if this is its first use (the previous
    /// term's, if any, is dropped with everything it remembered).
    fn leader_of(&self, term: u64) -> MutexGuard<'_, Option<Leader>> {
        let mut slot = self.leader.lock().expect("leader lock poisoned");
        if slot.as_ref().is_none_or(|l| l.term() != term) {
            let seed = self.id.0 ^ crate::clock::unix_ms();
            *slot = Some(Leader::new(self.leader_config.clone(), term, self.clock.now(), seed));
        }
        slot
    }

    /// Per site, when this node's current streak of failed probes began.
    fn failing_since(&self) -> std::collections::BTreeMap<crate::ids::SiteId, std::time::Duration> {
        self.observer.lock().expect("observer lock poisoned").failing_since()
    }

    async fn hand_off_leadership(&self) {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.id) {
            return;
        }
        let voters: Vec<NodeId> = m.membership_config.voter_ids().filter(|v| *v != self.id).collect();
        let matched = |id: &NodeId| m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten());
        let Some(target) = voters.into_iter().max_by_key(|id| matched(id).map(|l| l.index)) else {
            return;
        };
        tracing::info!(to = %target, "handing leadership over before shutdown");
        if self.raft.trigger().transfer_leader(target).await.is_err() {
            return;
        }
        let moved = self
            .raft
            .wait(Some(self.config.cluster.raft.election_timeout_max))
            .metrics(|m| m.current_leader != Some(self.id), "leadership handed over")
            .await;
        if moved.is_err() {
            tracing::warn!(to = %target, "leadership did not move in time; stopping anyway");
        }
    }
}

/// Who acknowledges node `me`, read from its Raft's metrics: the one source of "live", "cut
/// off" and the leader's readiness (public for the simulation of real Raft instances).
pub fn contact(me: NodeId, m: &openraft::RaftMetrics<raft::TypeConfig>) -> Contact {
    let voters = m.membership_config.voter_ids().collect();
    let acked_ago = m
        .heartbeat
        .iter()
        .flatten()
        .filter_map(|(id, at)| Some((*id, openraft::Instant::elapsed(&**at.as_ref()?))))
        .collect();
    let quorum_acked_ago = if m.membership_config.voter_ids().eq([me]) {
        Some(std::time::Duration::ZERO)
    } else {
        m.last_quorum_acked.as_ref().map(|at| openraft::Instant::elapsed(&**at))
    };
    Contact { voters, acked_ago, quorum_acked_ago, formats: Default::default() }
}

fn observe_expiry(metrics: &Metrics, material: &Material) {
    metrics.tls_expiry.with_label_values(&["node"]).set(material.node_expires);
    metrics.tls_expiry.with_label_values(&["ca"]).set(material.ca_expires);
}

/// One process per data directory: two nodes writing the same log would corrupt it.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data directory {} is in use by another witness process (lock {} is held)",
            dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}
