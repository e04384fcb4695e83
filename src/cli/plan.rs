//! `witness plan show|check|retry|skip|reconcile GROUP`: a group's failover plan, step by step;
//! a check of every step's reachability and credentials (nothing changed); the operator's two
//! answers to a stuck plan; and running a done plan's steps again to repair drift. Exit 0 when
//! done (or all checks pass), 1 otherwise.

use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::client::{Client, Endpoint};
use super::status::table;
use super::Exit;
use crate::leader::readiness::TargetState;
use crate::node::planning::PlanCheck;
use crate::node::status::{GroupStatus, PlanView, Status};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    group: String,
}

#[derive(Subcommand)]
enum Sub {
    /// Show the plan of GROUP's latest failover, step by step.
    Show(GroupArgs),
    /// Test each step's reachability and credentials from the node asked; change nothing.
    Check(GroupArgs),
    /// Run the step a stuck plan stopped at again.
    Retry(GroupArgs),
    /// Move a stuck plan past the step it stopped at.
    Skip(GroupArgs),
    /// Run the steps of GROUP's done plan again for the same epoch: repairs a target that
    /// drifted from the decision (a record changed by hand).
    Reconcile(ReconcileArgs),
}

#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// Only this step (by default every step).
    #[arg(long, value_name = "NAME")]
    step: Option<String>,
}

pub async fn run(args: Args) -> Exit {
    let (a, action, body) = match args.command {
        Sub::Show(a) => (a, "show", json!({})),
        Sub::Check(a) => (a, "check", json!({})),
        Sub::Retry(a) => (a, "retry", json!({})),
        Sub::Skip(a) => (a, "skip", json!({})),
        Sub::Reconcile(r) => (r.group, "reconcile", r.step.map_or(json!({}), |step| json!({ "step": step }))),
    };
    let client = match Client::new(&a.endpoint, Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    match action {
        "show" => match client.get::<Status>("/v1/status").await {
            Err(e) => e.report(),
            Ok(status) => match status.groups.iter().find(|g| g.name == a.group) {
                None => {
                    eprintln!("error: unknown group {:?}", a.group);
                    Exit::Failed
                }
                Some(g) => {
                    print!("{}", show(g));
                    Exit::Ok
                }
            },
        },
        "check" => match client.post::<PlanCheck>(&format!("/v1/groups/{}/plan/check", a.group), &json!({})).await {
            Err(e) => e.report(),
            Ok(check) => {
                print!("{}", show_check(&check));
                // The leader's scheduled check, for comparison (and its age).
                if let Ok(status) = client.get::<Status>("/v1/status").await {
                    if let Some(g) = status.groups.iter().find(|g| g.name == a.group) {
                        print!("{}", readiness(g));
                    }
                }
                if check.ok() {
                    Exit::Ok
                } else {
                    Exit::Failed
                }
            }
        },
        _ => match client.post_answer(&format!("/v1/groups/{}/plan/{action}", a.group), &body).await {
            Err(e) => e.report(),
            Ok((status, answer)) => {
                println!("{}", super::control::written(&answer));
                if status == 200 {
                    Exit::Ok
                } else {
                    Exit::Failed
                }
            }
        },
    }
}

/// A group's plan as a table of steps.
pub fn show(g: &GroupStatus) -> String {
    let Some(PlanView { phase, plan, achieved_rto_ms, dns_ttl_s }) = &g.plan else {
        return format!("{}: no failover plan has run (epoch {})\n", g.name, g.epoch);
    };
    let phase = serde_json::to_value(phase).ok().and_then(|v| v.as_str().map(str::to_uppercase)).unwrap_or_default();
    let mut out = format!(
        "{}: plan for epoch {} ({} -> {}), {phase}{}\n",
        g.name,
        plan.epoch,
        plan.from,
        plan.to,
        plan.done_at_ms.map_or(String::new(), |done| format!(
            " in {} ms after the decision",
            done.saturating_sub(plan.decided_at_ms)
        )),
    );
    if let Some(rto) = achieved_rto_ms {
        let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        let clients =
            dns_ttl_s.map_or(String::new(), |t| format!(" ({} with the DNS TTL)", secs(rto + u64::from(t) * 1000)));
        let rpo = plan.facts.rpo_ms.map_or("unknown".to_string(), secs);
        out += &format!("achieved RTO {}{clients}, RPO {rpo}\n", secs(*rto));
    }
    let mut rows = vec![["STEP", "KIND", "STATUS", "ATTEMPTS", "AFTER DECISION", "DETAIL"].map(String::from).to_vec()];
    for s in &plan.steps {
        rows.push(vec![
            s.spec.name.clone(),
            s.spec.kind.clone(),
            s.status.to_string(),
            s.attempts.to_string(),
            s.finished_at_ms.map_or("-".into(), |t| format!("{} ms", t.saturating_sub(plan.decided_at_ms))),
            s.detail.chars().take(100).collect(),
        ]);
    }
    out += &table(&rows);
    out
}

/// The leader's last scheduled check of a group's plan, with its age.
pub fn readiness(g: &GroupStatus) -> String {
    let Some(r) = &g.readiness else {
        if g.steps.is_empty() {
            return format!("{}: no plan steps to check\n", g.name);
        }
        return format!(
            "{}: no scheduled check yet (the leader checks a plan soon after it is elected, then every \
             readiness_interval)\n",
            g.name
        );
    };
    let age = crate::clock::unix_ms().saturating_sub(r.checked_at_ms) / 1000;
    let not_ready: Vec<String> =
        r.steps.iter().filter(|s| !s.ok).map(|s| format!("  [FAIL] {} ({}): {}\n", s.step, s.kind, s.detail)).collect();
    let drifted: Vec<String> = r
        .steps
        .iter()
        .filter_map(|s| match &s.target {
            Some(TargetState::Drifted(what)) => Some(format!("  [DRIFT] {} ({}): {what}\n", s.step, s.kind)),
            _ => None,
        })
        .collect();
    let mut out = if not_ready.is_empty() {
        format!("{}: plan ready (every step checked {age} s ago by the leader)\n", g.name)
    } else {
        format!("{}: plan NOT READY (checked {age} s ago by the leader):\n{}", g.name, not_ready.concat())
    };
    if !drifted.is_empty() {
        out +=
            &format!("{}: TARGET DRIFT from the committed decision (epoch {}):\n{}", g.name, r.epoch, drifted.concat());
    }
    out
}

fn show_check(check: &PlanCheck) -> String {
    let mut out = format!(
        "{}: plan check from node {} for a failover {} -> {} (nothing changed)\n",
        check.group, check.node, check.from, check.to
    );
    if check.steps.is_empty() {
        out += "  (the group has no plan steps)\n";
    }
    for s in &check.steps {
        let mark = if s.ok { "pass" } else { "FAIL" };
        out += &format!("  [{mark}] {} ({}): {}\n", s.step, s.kind, s.detail);
    }
    out
}
