//! This node's probing loop: runs every site's prober and feeds the rounds to the node's
//! [`Observer`](crate::engine::detector::Observer), then proposes the verdict reports it owes
//! the log. The rules (thresholds, staleness, resends, which sites to look at when) are the
//! observer's; this loop wakes on each round and when the observer says something is due.

use std::sync::Arc;
use tokio::task::JoinSet;

use super::leader::LeaderRequest;
use super::Node;
use crate::probe::SiteProber;
use crate::rng::SplitMix64;

/// Probes every site and keeps this node's committed verdicts equal to what it observes.
/// Reports go through the leader in their own tasks, so a slow commit never holds up a probe.
pub(super) async fn probe_and_report(node: Arc<Node>, probers: Vec<SiteProber>) {
    let (tx, mut rounds) = tokio::sync::mpsc::channel(64);
    let mut tasks = JoinSet::new();
    for (i, prober) in probers.into_iter().enumerate() {
        let mut rng = SplitMix64::new(node.id.0.rotate_left(32) ^ i as u64);
        let (node, tx) = (node.clone(), tx.clone());
        tasks.spawn(async move { prober.run(&node.metrics.probes, tx, move || rng.unit()).await });
    }
    drop(tx);
    loop {
        let due = node.observer.lock().expect("observer lock poisoned").next_due();
        let wait = due.saturating_sub(node.clock.now());
        let round = tokio::select! {
            round = rounds.recv() => match round {
                Some(round) => Some(round),
                None => return,
            },
            _ = tokio::time::sleep(wait) => None,
        };
        while tasks.try_join_next().is_some() {}
        let now = node.clock.now();
        let reports = {
            let mut observer = node.observer.lock().expect("observer lock poisoned");
            match round {
                Some(round) => {
                    if let Some(changed) = observer.round(&round.site, round.ok, now) {
                        tracing::info!(site = %round.site, verdict = %changed, "this node's verdict changed");
                    }
                    node.metrics.observe_verdict(&round.site, observer.verdict(&round.site, now));
                }
                // Verdicts also change with time alone (stale when rounds stop).
                None => {
                    for site in observer.sites() {
                        node.metrics.observe_verdict(site, observer.verdict(site, now));
                    }
                }
            }
            let applied = node.applied.read().expect("state lock poisoned");
            observer.reports(&applied.state, now)
        };
        for command in reports {
            let node = node.clone();
            tasks.spawn(async move {
                if let Err(e) = node.submit(LeaderRequest::Write(command), false).await {
                    tracing::debug!(error = %e, "verdict report deferred");
                }
            });
        }
    }
}
