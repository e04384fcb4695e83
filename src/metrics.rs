//! Prometheus metrics of one node, in an explicit registry (no process-wide globals, so tests
//! and the benchmark can run several nodes in one process).

use std::collections::BTreeMap;

use openraft::ServerState;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::probe::ProbeMetrics;
use crate::raft::{NodeId, TypeConfig};
use crate::state::{State, Verdict};

pub struct Metrics {
    registry: Registry,
    term: IntGauge,
    leader_id: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    committed_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    pub commit_seconds: Histogram,
    pub leader_requests: IntCounterVec,
    pub probes: ProbeMetrics,
    /// This node's verdict per site: 1 up, 0 down, -1 unknown.
    pub site_verdict: IntGaugeVec,
    /// 1 while the automation switch is on (`witness automation on|off`).
    pub automation: IntGauge,
    /// Per group: epoch, and 1 on the active site's series.
    pub group_epoch: IntGaugeVec,
    pub group_active: IntGaugeVec,
    /// Engine assessments and proposals by group and kind (on the leader).
    pub decisions: IntCounterVec,
    /// On the leader: its own first failed probe of a site to the failover committed.
    pub detection_seconds: Histogram,
    /// On the leader: how long heartbeats waited for the leadership confirmation.
    pub heartbeat_confirm_seconds: Histogram,
    /// On the leader: the lease the active site holds by its grants, per group and site.
    pub lease_remaining_seconds: prometheus::GaugeVec,
    /// On the leader: the role each site's agent last reported, 1 on that role's series.
    pub agent_role: IntGaugeVec,
    /// On the leader: 1 while it has not heard a site's agent within the group's lease.
    pub agent_silent: IntGaugeVec,
    /// On the leader: the epoch an agent holds past the group's (0: none ahead).
    pub agents_ahead: IntGaugeVec,
    pub peer_lease_held: IntGaugeVec,
    pub plan_step_ready: IntGaugeVec,
    pub target_drift: IntGaugeVec,
    pub plan_checked_timestamp: prometheus::GaugeVec,
    peer_link_up: IntGaugeVec,
    pub config_matches_cluster: IntGauge,
    /// On the leader: how far the standby copy is behind, per group (-1 unknown).
    pub rpo_exposure_seconds: prometheus::GaugeVec,
    /// How far behind the objective lets it be: at risk when the exposure exceeds this.
    pub rpo_objective_seconds: prometheus::GaugeVec,
    /// On the leader: each plan step attempt's duration, by group, step and result.
    pub plan_step_seconds: prometheus::HistogramVec,
    /// 1 while a group's plan is stuck waiting for an operator.
    pub plan_stuck: IntGaugeVec,
    /// The achieved RTO and RPO of each group's latest completed failover.
    pub achieved_rto_seconds: prometheus::GaugeVec,
    pub achieved_rpo_seconds: prometheus::GaugeVec,
    /// When this node's certificate and the cluster CA expire (Unix seconds), by `certificate`.
    pub tls_expiry: IntGaugeVec,
    /// Per group: when its last drill passed (Unix seconds; 0: none on record), whether one
    /// is under way, and how often one should pass (this node's config).
    drill_last_passed: prometheus::GaugeVec,
    drill_running: IntGaugeVec,
    pub drill_every_seconds: prometheus::GaugeVec,
}

impl Metrics {
    pub fn new(node_id: u64) -> Metrics {
        let labels = [("node_id".to_string(), node_id.to_string())].into();
        let registry = Registry::new_custom(None, Some(labels)).expect("static registry settings");
        let reg = &registry;
        let gauge = |name: &str, help: &str| register(reg, IntGauge::new(name, help).expect("static metric"));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(reg, IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(reg, IntCounterVec::new(Opts::new(name, help), labels).expect("static metric"))
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(reg, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("static metric"))
        };
        let term = gauge("witness_raft_term", "Current Raft term of this node.");
        let leader_id = gauge("witness_raft_leader_id", "Id of the leader this node knows, 0 when none.");
        let is_leader = gauge("witness_raft_is_leader", "1 when this node is the leader.");
        let automation = gauge(
            "witness_automation_enabled",
            "1 while automatic failover may run (the cluster-wide switch, `witness automation on|off`); 0: no group \
             fails over by itself.",
        );
        let last_log_index = gauge("witness_raft_last_log_index", "Index of the last entry in this node's log.");
        let committed_index = gauge("witness_raft_committed_index", "Index of the last entry known committed.");
        let applied_index =
            gauge("witness_raft_applied_index", "Index of the last entry applied to the state machine.");
        let snapshot_index = gauge("witness_raft_snapshot_index", "Last log index included in the newest snapshot.");
        let commit_seconds = histogram(
            "witness_raft_commit_seconds",
            "Time from proposing an entry on the leader until it is committed and applied.",
            vec![0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        );
        let leader_requests = counter_vec(
            "witness_leader_requests_total",
            "Writes and membership changes by where they ran and how they ended.",
            &["route", "outcome"],
        );
        let site_verdict =
            gauge_vec("witness_site_verdict", "This node's verdict on a site: 1 up, 0 down, -1 unknown.", &["site"]);
        let group_epoch = gauge_vec("witness_group_epoch", "Committed epoch of a group.", &["group"]);
        let group_active = gauge_vec(
            "witness_group_active",
            "1 for the committed active site of a group, 0 for the other.",
            &["group", "site"],
        );
        let decisions = counter_vec(
            "witness_decisions_total",
            "Decision-engine assessments on the leader (each one a journal entry), by group and kind.",
            &["group", "kind"],
        );
        let detection_seconds = histogram(
            "witness_detection_seconds",
            "From the leader's first failed probe of a site to the automatic failover away from it committed.",
            vec![0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0],
        );
        let heartbeat_confirm_seconds = histogram(
            "witness_heartbeat_confirm_seconds",
            "Time a site agent's heartbeat waited on the leader for its leadership confirmation.",
            vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
        );
        let float_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(reg, prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("static metric"))
        };
        let lease_remaining_seconds = float_gauge_vec(
            "witness_lease_remaining_seconds",
            "On the leader: the witness lease a site holds for a group by this leader's grants (0: none).",
            &["group", "site"],
        );
        let agent_role = gauge_vec(
            "witness_agent_role",
            "On the leader: 1 for the role a site's agent last reported for a group.",
            &["group", "site", "role"],
        );
        let agent_silent = gauge_vec(
            "witness_agent_silent",
            "On the leader: 1 while it has not heard a site's agent for a group within the group's lease (the active \
             site's agent gets no lease; the standby's cannot confirm a failure nor drain, so a failover needs \
             approval), 0 while it hears it.",
            &["group", "site"],
        );
        let agents_ahead = gauge_vec(
            "witness_group_agents_epoch_ahead",
            "On the leader: the epoch a group's agent holds past the witness's own (restored from an older backup?), \
             0 when none is ahead. Nothing moves the group until a forced failover takes the epoch past it.",
            &["group"],
        );
        let config_matches_cluster = gauge(
            "witness_config_matches_cluster",
            "1 when this node's config declares the sites, groups and timings the cluster registered; 0 when it \
             differs (`witness status` on this node says how): it would decide on its own once it leads.",
        );
        let peer_link_up = gauge_vec(
            "witness_peer_link_up",
            "1 when this node's last Raft request to a peer was answered, 0 while they fail (`witness status` says \
             why); absent for a peer not asked lately (followers ask peers only in elections).",
            &["peer"],
        );
        let peer_lease_held = gauge_vec(
            "witness_group_peer_lease_held",
            "On the leader: 0 when a group's active site says it holds no peer lease from the other site (writable by \
             the witness's lease alone: losing the witness would stop it), 1 otherwise. `witness status` says why.",
            &["group"],
        );
        let plan_step_ready = gauge_vec(
            "witness_plan_step_ready",
            "On the leader: 1 when a plan step's last scheduled check passed (its target reachable with the \
             configured credentials and accepting the change), 0 when it failed: a failover now would fail there.",
            &["group", "step"],
        );
        let target_drift = gauge_vec(
            "witness_target_drift",
            "On the leader: 1 when a plan step's target (a DNS record, a storage domain) holds something else than \
             the committed decision, 0 when it holds the decision; absent when not readable (webhook, command).",
            &["group", "step"],
        );
        let drill_last_passed = float_gauge_vec(
            "witness_drill_last_passed_timestamp_seconds",
            "When a group's last DR drill passed (Unix time); 0 when none is on record.",
            &["group"],
        );
        let drill_running =
            gauge_vec("witness_drill_running", "1 while a DR drill of a group is under way.", &["group"]);
        let drill_every_seconds = float_gauge_vec(
            "witness_drill_every_seconds",
            "How often a group's drill should pass (its drill_every in this node's config); absent without one.",
            &["group"],
        );
        let plan_checked_timestamp = float_gauge_vec(
            "witness_plan_readiness_checked_timestamp_seconds",
            "On the leader: when a group's plan was last checked (Unix time).",
            &["group"],
        );
        let rpo_exposure_seconds = float_gauge_vec(
            "witness_rpo_exposure_seconds",
            "On the leader: the data a failover of a group now would lose (0 for a synchronous copy in sync; \
             otherwise since its last in-sync report, or its recovery point's age); -1 when not reported.",
            &["group"],
        );
        let plan_step_seconds = register(
            reg,
            prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "witness_plan_step_seconds",
                    "On the leader: duration of each attempt of a plan step, by result (done, retry, failed).",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]),
                &["group", "step", "result"],
            )
            .expect("static metric"),
        );
        let plan_stuck = gauge_vec(
            "witness_plan_stuck",
            "1 while a group's failover plan is stuck at a step, waiting for `witness plan retry` or `skip`.",
            &["group"],
        );
        let achieved_rto_seconds = float_gauge_vec(
            "witness_achieved_rto_seconds",
            "A group's latest completed failover: from the first failed probe to its plan done (add the DNS TTL \
             for what clients see).",
            &["group"],
        );
        let achieved_rpo_seconds = float_gauge_vec(
            "witness_achieved_rpo_seconds",
            "A group's latest completed failover: the data its survivor's copy may have lacked (0: in sync).",
            &["group"],
        );
        let rpo_objective_seconds = float_gauge_vec(
            "witness_rpo_objective_seconds",
            "A group's RPO objective, its rpo: how much data a failover may lose; the RPO is at risk while \
             witness_rpo_exposure_seconds exceeds it.",
            &["group"],
        );
        let tls_expiry = gauge_vec(
            "witness_tls_certificate_expiry_timestamp_seconds",
            "When a certificate this node uses stops being valid (Unix seconds): certificate=\"node\" or \"ca\".",
            &["certificate"],
        );
        let probes = ProbeMetrics::register(reg);
        let process = Box::new(prometheus::process_collector::ProcessCollector::for_self());
        registry.register(process).expect("unique metric");
        Metrics {
            registry,
            term,
            leader_id,
            is_leader,
            automation,
            last_log_index,
            committed_index,
            applied_index,
            snapshot_index,
            commit_seconds,
            leader_requests,
            probes,
            site_verdict,
            group_epoch,
            group_active,
            decisions,
            detection_seconds,
            heartbeat_confirm_seconds,
            lease_remaining_seconds,
            agent_role,
            agent_silent,
            agents_ahead,
            peer_lease_held,
            plan_step_ready,
            target_drift,
            plan_checked_timestamp,
            peer_link_up,
            config_matches_cluster,
            rpo_exposure_seconds,
            rpo_objective_seconds,
            plan_step_seconds,
            plan_stuck,
            achieved_rto_seconds,
            achieved_rpo_seconds,
            tls_expiry,
            drill_last_passed,
            drill_running,
            drill_every_seconds,
        }
    }

    pub fn observe_raft(&self, m: &openraft::RaftMetrics<TypeConfig>) {
        let index = |id: &Option<crate::raft::LogId>| id.as_ref().map_or(0, |l| l.index as i64);
        self.term.set(m.current_term as i64);
        self.leader_id.set(m.current_leader.map_or(0, |l| l.0) as i64);
        self.is_leader.set(i64::from(m.state == ServerState::Leader));
        self.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
        self.committed_index.set(index(&m.local_committed));
        self.applied_index.set(index(&m.last_applied));
        self.snapshot_index.set(index(&m.snapshot));
    }

    /// Link gauges from this node's links, used lately: a peer not asked lately has none.
    pub fn observe_links(&self, links: &BTreeMap<NodeId, crate::raft::links::LinkView>) {
        self.peer_link_up.reset();
        for (peer, link) in links {
            self.peer_link_up.with_label_values(&[&peer.to_string()]).set(i64::from(link.up));
        }
    }

    /// Group gauges from the committed state.
    pub fn observe_state(&self, state: &State) {
        self.automation.set(i64::from(!state.automation_off));
        for (name, g) in &state.groups {
            self.group_epoch.with_label_values(&[name]).set(g.epoch.0 as i64);
            let stuck = g.plan.as_ref().is_some_and(|p| p.phase() == crate::state::plan::Phase::Stuck);
            self.plan_stuck.with_label_values(&[name]).set(i64::from(stuck));
            let passed = state.drills.get(name).and_then(|d| d.iter().rev().find(|d| d.passed()));
            let passed_at = passed.and_then(|d| d.finished_at_ms).map_or(0.0, |ms| ms as f64 / 1000.0);
            self.drill_last_passed.with_label_values(&[name]).set(passed_at);
            self.drill_running.with_label_values(&[name]).set(i64::from(g.drill.is_some()));
            // A drill's switchover is no failover: the gauges keep the last failover's figures.
            if let Some(plan) = g.plan.as_ref().filter(|p| !p.planned) {
                if let Some(rto) = plan.achieved_rto_ms() {
                    self.achieved_rto_seconds.with_label_values(&[name]).set(rto as f64 / 1000.0);
                }
                if let (Some(rpo), Some(_)) = (plan.facts.rpo_ms, plan.done_at_ms) {
                    self.achieved_rpo_seconds.with_label_values(&[name]).set(rpo as f64 / 1000.0);
                }
            }
            for site in [&g.spec.primary, &g.spec.secondary] {
                self.group_active.with_label_values(&[name.as_str(), site.as_str()]).set(i64::from(*site == g.active));
            }
        }
    }

    pub fn observe_verdict(&self, site: &str, verdict: Option<Verdict>) {
        let value = match verdict {
            Some(Verdict::Up) => 1,
            Some(Verdict::Down) => 0,
            None => -1,
        };
        self.site_verdict.with_label_values(&[site]).set(value);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

/// Registers `metric` with `registry` and hands it back.
pub(crate) fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry.register(Box::new(metric.clone())).expect("unique metric");
    metric
}
