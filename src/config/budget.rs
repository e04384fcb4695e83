//! A group's worst-case RTO budget, from its config alone: how long, at most, from a site's
//! failure until clients reach the survivor, if every stage takes its longest. `witness config
//! check` prints it and fails when it exceeds the group's `rto` objective.

use std::time::Duration;

use super::duration::format;
use super::{Config, GroupConfig, StepKind};

/// The budget's stages, in the order they happen, and their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtoBudget {
    pub stages: Vec<(&'static str, Duration, String)>,
    pub total: Duration,
}

impl RtoBudget {
    pub fn within(&self, objective: Duration) -> bool {
        self.total <= objective
    }
}

/// The worst case over both directions (the group may fail over either way).
pub fn rto_budget(config: &Config, group: &GroupConfig) -> RtoBudget {
    let detection = [&group.primary, &group.secondary]
        .iter()
        .filter_map(|name| config.site(name))
        .map(|s| (s.probe_interval * s.failure_threshold + s.probe_timeout, s))
        .max_by_key(|(d, _)| *d);
    let mut stages = Vec::new();
    if let Some((d, s)) = detection {
        let how = format!(
            "{} × {} + {} probe timeout, site {}",
            s.failure_threshold,
            format(s.probe_interval),
            format(s.probe_timeout),
            s.name
        );
        stages.push(("detection", d, how));
    }
    stages.push(("hold-down", group.hold_down, String::new()));
    if let Some(a) = group.agents {
        stages.push((
            "lease wait",
            a.lease + a.lease_margin,
            format!("{} lease + {} margin", format(a.lease), format(a.lease_margin)),
        ));
    }
    let election = config.cluster.raft.election_timeout_max;
    stages.push(("Raft commit", election, "one leader election (election_timeout_max)".into()));
    let steps: Duration = group.steps.iter().map(|s| s.timeout).sum();
    let names: Vec<String> = group.steps.iter().map(|s| format!("{} {}", s.name, format(s.timeout))).collect();
    stages.push((
        "plan steps",
        steps,
        if names.is_empty() { "no steps".into() } else { format!("one attempt each: {}", names.join(", ")) },
    ));
    let ttl = group
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Route53(r) => Some(r.ttl),
            StepKind::Rfc2136(r) => Some(r.ttl),
            _ => None,
        })
        .max();
    if let Some(ttl) = ttl {
        stages.push(("DNS TTL", Duration::from_secs(ttl.into()), "clients' caches expire".into()));
    }
    let total = stages.iter().map(|(_, d, _)| *d).sum();
    RtoBudget { stages, total }
}
