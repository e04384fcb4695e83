//! A node's background duties: bootstrap a new cluster, keep metrics and leader logs current,
//! make the replicated topology match the leader's config, and snapshot on a timer.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::leader::{LeaderReply, LeaderRequest};
use super::Node;
use crate::engine::detector::Detector;
use crate::engine::{Assessment, Effect, Engine, GroupTiming, Inputs};
use crate::probe::SiteProber;
use crate::rng::SplitMix64;
use crate::state::{Command, Response, State};

pub(super) fn spawn_all(
    node: &Arc<Node>,
    probers: Vec<SiteProber>,
    stopped: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(until_stopped(stopped.clone(), probe_and_report(node.clone(), probers)));
    tasks.spawn(until_stopped(stopped.clone(), decide(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), bootstrap(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), recover(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), follow_raft(node.clone())));
    tasks.spawn(until_stopped(stopped.clone(), snapshot_timer(node.clone())));
}

async fn until_stopped(mut stopped: watch::Receiver<bool>, duty: impl Future<Output = ()>) {
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => {}
        _ = duty => {}
    }
}

/// What a node tells a peer that is about to bootstrap, so that nodes whose configs disagree
/// on the initial members refuse to form a cluster instead of forming two.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapInfo {
    pub cluster: String,
    pub initial_members: BTreeMap<u64, String>,
}

impl Node {
    pub fn bootstrap_info(&self) -> BootstrapInfo {
        BootstrapInfo {
            cluster: self.config.cluster.name.clone(),
            initial_members: self.config.cluster.initial_members.clone(),
        }
    }
}

/// Initializes a brand-new cluster from `cluster.initial_members`. Every initial member does
/// this with the same member list, whichever starts first; Raft then elects one leader and
/// the identical first entries never conflict. A node with existing state skips it.
async fn bootstrap(node: Arc<Node>) {
    match node.raft.is_initialized().await {
        Ok(true) => {
            tracing::info!("existing Raft state found: rejoining the cluster");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read Raft state");
            return;
        }
    }
    let members = &node.config.cluster.initial_members;
    if !members.contains_key(&node.id) {
        tracing::info!(
            "this node is not in cluster.initial_members: waiting to be added with `witness members add {} {}`",
            node.id,
            node.config.node.advertise
        );
        return;
    }
    let mine = node.bootstrap_info();
    for (id, addr) in members.iter().filter(|(id, _)| **id != node.id) {
        let url = format!("http://{addr}/raft/bootstrap");
        let Ok(resp) = node.peer_http.get(&url).timeout(Duration::from_secs(1)).send().await else {
            continue; // not started yet: fine, whichever node starts first proceeds
        };
        let Ok(theirs) = resp.json::<BootstrapInfo>().await else {
            continue;
        };
        if theirs != mine {
            tracing::error!(
                peer = id,
                ours = ?mine,
                theirs = ?theirs,
                "refusing to bootstrap: node {id} has a different cluster name or initial member list; \
                 make cluster.name and cluster.initial_members identical on every node, then restart"
            );
            return;
        }
    }
    let nodes: BTreeMap<u64, BasicNode> =
        members.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
    match node.raft.initialize(nodes).await {
        Ok(()) => {
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initialized a new cluster")
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::info!("cluster already initialized by a peer: joining it")
        }
        Err(e) => tracing::error!(error = %e, "cannot initialize the cluster"),
    }
}

/// Marks the node recovered once its state machine has re-applied what the cluster committed
/// of its log (this needs a leader, so it runs beside serving, not before it).
async fn recover(node: Arc<Node>) {
    match node.raft.wait_for_recovery(None).await {
        Ok(m) => {
            node.recovered.store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(applied = ?m.last_applied.map(|l| l.index), "committed state recovered");
        }
        Err(e) => tracing::warn!(error = %e, "recovery wait ended without recovering"),
    }
}

/// Follows Raft's metrics: updates gauges, logs leadership changes, and on the leader makes
/// the replicated sites and groups match this node's config.
async fn follow_raft(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    let mut last_leader = None;
    let mut synced_in_term = None;
    loop {
        let m = metrics.borrow_and_update().clone();
        node.metrics.observe_raft(&m);
        node.metrics.observe_state(&node.applied.read().expect("state lock poisoned").state);
        if m.current_leader != last_leader {
            match m.current_leader {
                Some(id) if id == node.id => {
                    tracing::info!(term = m.current_term, "this node is now the leader")
                }
                Some(id) => tracing::info!(leader = id, term = m.current_term, "following leader"),
                None => tracing::warn!(term = m.current_term, "no leader known"),
            }
            last_leader = m.current_leader;
        }
        if m.state == ServerState::Leader && synced_in_term != Some(m.current_term) && sync_topology(&node).await {
            synced_in_term = Some(m.current_term);
        }
        // Also wake periodically so a failed topology sync is retried.
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Proposes this node's topology when the replicated one differs; true once that is settled
/// for this leadership (committed, or nothing to do). A sync is not repeated within a term: a
/// refused part (see `State::sync_topology`) would otherwise be proposed again and again.
async fn sync_topology(node: &Node) -> bool {
    let matches = node.applied.read().expect("state lock poisoned").state.matches_topology(&node.topology);
    if matches {
        return true;
    }
    match node.submit(LeaderRequest::Write(Command::SyncTopology(node.topology.clone())), true).await {
        Ok(reply) => {
            tracing::info!(?reply, "registered sites and groups from config");
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "topology sync deferred");
            false
        }
    }
}

/// The count-based snapshot policy may never fire at a witness's write rate, and then the log
/// would never compact: snapshot on a timer whenever something was applied since the last one.
async fn snapshot_timer(node: Arc<Node>) {
    let period = node.config.cluster.raft.snapshot_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        let (applied, snapshot) = {
            let m = node.raft.metrics().borrow_watched().clone();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        if applied > snapshot {
            tracing::debug!(?applied, ?snapshot, "time-based snapshot");
            if let Err(e) = node.raft.trigger().snapshot().await {
                tracing::error!(error = %e, "cannot trigger snapshot");
            }
        }
    }
}

/// Probes every site and keeps this node's committed verdicts equal to what its detectors say.
/// Reports go through the leader in their own tasks, so a slow commit never holds up a probe.
async fn probe_and_report(node: Arc<Node>, probers: Vec<SiteProber>) {
    let (tx, mut rounds) = tokio::sync::mpsc::channel(64);
    let mut tasks = JoinSet::new();
    let mut detectors = BTreeMap::new();
    // A site whose rounds stop arriving (its prober died) gets an unknown verdict, never a
    // stale up or down.
    let mut last_round = BTreeMap::new();
    let mut stale_after = BTreeMap::new();
    for (i, prober) in probers.into_iter().enumerate() {
        let site = node.config.sites[i].clone();
        detectors.insert(site.name.clone(), Detector::new(site.failure_threshold, site.success_threshold));
        last_round.insert(site.name.clone(), std::time::Instant::now());
        stale_after.insert(site.name.clone(), (site.probe_interval + site.probe_timeout) * 3);
        let mut rng = SplitMix64::new(node.id.rotate_left(32) ^ i as u64);
        let (node, tx) = (node.clone(), tx.clone());
        tasks.spawn(async move { prober.run(&node.metrics.probes, tx, move || rng.unit()).await });
    }
    drop(tx);
    let mut last_sent: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            round = rounds.recv() => {
                let Some(round) = round else { return };
                last_round.insert(round.site.clone(), std::time::Instant::now());
                {
                    let mut failing = node.failing_since.lock().expect("failing_since lock poisoned");
                    if round.ok {
                        failing.remove(&round.site);
                    } else {
                        failing.entry(round.site.clone()).or_insert_with(std::time::Instant::now);
                    }
                }
                if let Some(changed) = detectors.get_mut(&round.site).and_then(|d| d.observe(round.ok)) {
                    tracing::info!(site = %round.site, verdict = %changed, "this node's verdict changed");
                }
            }
            _ = tick.tick() => {}
        }
        while tasks.try_join_next().is_some() {}
        for (site, detector) in &detectors {
            let stale = last_round[site].elapsed() > stale_after[site];
            let desired = if stale { None } else { detector.verdict() };
            node.metrics.observe_verdict(site, desired);
            let (registered, committed) = {
                let applied = node.applied.read().expect("state lock poisoned");
                (applied.state.sites.contains(site), applied.state.verdict(site, node.id))
            };
            let recently = last_sent.get(site).is_some_and(|at| at.elapsed() < Duration::from_secs(1));
            if !registered || committed == desired || recently {
                continue;
            }
            last_sent.insert(site.clone(), std::time::Instant::now());
            let command = Command::ReportVerdict { node: node.id, site: site.clone(), verdict: desired };
            let node = node.clone();
            tasks.spawn(async move {
                if let Err(e) = node.submit(LeaderRequest::Write(command), false).await {
                    tracing::debug!(error = %e, "verdict report deferred");
                }
            });
        }
    }
}

/// On the leader, runs the decision engine over the committed state on every commit and every
/// 50 ms, and proposes what it calls for. Off the leader, or while not ready, the engine is
/// dropped, so a new leadership always starts with fresh memory.
async fn decide(node: Arc<Node>) {
    let timing: BTreeMap<String, GroupTiming> = node
        .config
        .groups
        .iter()
        .map(|g| {
            let t = GroupTiming { hold_down: g.hold_down, block_after_failover: g.block_after_failover };
            (g.name.clone(), t)
        })
        .collect();
    let mut engine: Option<(u64, Engine)> = None;
    let mut proposals = JoinSet::new();
    let mut updates = node.raft.metrics();
    let mut tick = tokio::time::interval(ENGINE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Step on every committed change (a verdict arrives) and on the tick (timers expire).
        tokio::select! {
            _ = tick.tick() => {}
            changed = updates.changed() => if changed.is_err() { return },
        }
        while proposals.try_join_next().is_some() {}
        let (leader, term) = {
            let metrics = node.raft.metrics();
            let m = metrics.borrow_watched();
            (m.current_leader, m.current_term)
        };
        // The engine's memory belongs to one leadership: a new term starts afresh.
        if leader != Some(node.id) || engine.as_ref().is_some_and(|(t, _)| *t != term) {
            engine = None;
        }
        if leader != Some(node.id) {
            continue;
        }
        // Not ready (no quorum acknowledgement, or a commit not yet applied): skip this step
        // but keep the timers; they must not restart on every commit.
        if node.readiness().is_err() {
            continue;
        }
        let (_, engine) = engine.get_or_insert_with(|| (term, Engine::new()));
        let (voters, live) = node.voters_and_live();
        // Step under the read lock rather than cloning the state (the journal is large).
        let mut writes = Vec::new();
        {
            let applied = node.applied.read().expect("state lock poisoned");
            let state = &applied.state;
            let inputs = Inputs { now: node.started.elapsed(), state, voters: &voters, live: &live, timing: &timing };
            for effect in engine.step(&inputs) {
                match effect {
                    Effect::Journal { group, assessment } => {
                        node.metrics.decisions.with_label_values(&[&group, assessment.kind()]).inc();
                        // A site in trouble is a degraded state: warn. Recovery and suspicion: info.
                        match assessment {
                            Assessment::FailingOver { .. }
                            | Assessment::NeedsApproval { .. }
                            | Assessment::SurvivorNotUp { .. } => tracing::warn!(%group, %assessment, "assessment"),
                            _ => tracing::info!(%group, %assessment, "assessment"),
                        }
                        writes.push(Command::Journal {
                            evidence: evidence(state, &group, &voters, &live),
                            kind: assessment.kind().to_string(),
                            message: assessment.to_string(),
                            group,
                        });
                    }
                    Effect::Propose(command) => {
                        tracing::info!(%command, "proposing");
                        writes.push(command);
                    }
                }
            }
        }
        for command in writes {
            let node = node.clone();
            proposals.spawn(async move {
                match node.submit(LeaderRequest::Write(command.clone()), true).await {
                    Ok(reply) => {
                        if !matches!(command, Command::Journal { .. }) {
                            tracing::info!(%command, ?reply, "committed");
                        }
                        node.observe_detection(&command, &reply);
                    }
                    Err(e) => tracing::warn!(%command, error = %e, "proposal not committed"),
                }
            });
        }
    }
}

/// How often the leader's engine looks again when nothing was committed (its timers).
const ENGINE_TICK: Duration = Duration::from_millis(50);

/// What the engine saw, for the journal: each of the group's sites with every voter's verdict
/// (`-` for a voter not heard from recently, whose verdict did not count).
fn evidence(state: &State, group: &str, voters: &BTreeSet<u64>, live: &BTreeSet<u64>) -> BTreeMap<String, String> {
    let Some(g) = state.groups.get(group) else { return BTreeMap::new() };
    [&g.spec.primary, &g.spec.secondary]
        .into_iter()
        .map(|site| {
            let seen: Vec<String> = voters
                .iter()
                .map(|id| {
                    let v = state.verdict(site, *id).map_or("unknown".to_string(), |v| v.to_string());
                    if live.contains(id) {
                        format!("node{id}={v}")
                    } else {
                        format!("node{id}=-")
                    }
                })
                .collect();
            (site.clone(), seen.join(" "))
        })
        .collect()
}

impl Node {
    /// After a committed automatic failover: the time from this node's first failed probe of
    /// the failed site to now (leader-local: both ends on this node's clock).
    fn observe_detection(&self, command: &Command, reply: &LeaderReply) {
        let (Command::Failover { group, .. }, LeaderReply::Written { response: Response::Activated { .. }, .. }) =
            (command, reply)
        else {
            return;
        };
        let Some(failed) = self.applied.read().expect("state lock poisoned").state.groups.get(group).map(|g| {
            if g.active == g.spec.primary {
                g.spec.secondary.clone()
            } else {
                g.spec.primary.clone()
            }
        }) else {
            return;
        };
        if let Some(since) = self.failing_since.lock().expect("failing_since lock poisoned").get(&failed) {
            self.metrics.detection_seconds.observe(since.elapsed().as_secs_f64());
        }
    }
}
