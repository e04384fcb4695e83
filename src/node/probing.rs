//! This node's probing loop: runs every site's prober, feeds the rounds to a failure detector
//! per site, and keeps this node's committed verdicts equal to what the detectors say.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::leader::LeaderRequest;
use super::Node;
use crate::engine::detector::Detector;
use crate::probe::SiteProber;
use crate::rng::SplitMix64;
use crate::state::Command;

/// Probes every site and keeps this node's committed verdicts equal to what its detectors say.
/// Reports go through the leader in their own tasks, so a slow commit never holds up a probe.
pub(super) async fn probe_and_report(node: Arc<Node>, probers: Vec<SiteProber>) {
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
        last_round.insert(site.name.clone(), Instant::now());
        stale_after.insert(site.name.clone(), (site.probe_interval + site.probe_timeout) * 3);
        let mut rng = SplitMix64::new(node.id.rotate_left(32) ^ i as u64);
        let (node, tx) = (node.clone(), tx.clone());
        tasks.spawn(async move { prober.run(&node.metrics.probes, tx, move || rng.unit()).await });
    }
    drop(tx);
    let mut last_sent: BTreeMap<String, Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            round = rounds.recv() => {
                let Some(round) = round else { return };
                last_round.insert(round.site.clone(), Instant::now());
                {
                    let mut failing = node.failing_since.lock().expect("failing_since lock poisoned");
                    if round.ok {
                        failing.remove(&round.site);
                    } else {
                        failing.entry(round.site.clone()).or_insert_with(Instant::now);
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
            last_sent.insert(site.clone(), Instant::now());
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
