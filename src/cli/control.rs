//! Operator controls: `witness failover`, `failback`, `pause`, `resume`, `ack`, `automation`.
//! Exit 0 when done (or when a dry run would proceed), 1 when refused or rejected.

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::client::{Client, Endpoint};
use super::Exit;
use crate::node::planning::PlanCheck;

#[derive(clap::Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    group: String,
    /// The site to make active.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    order: OrderArgs,
}

#[derive(clap::Args)]
pub struct FailbackArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    group: String,
    #[command(flatten)]
    order: OrderArgs,
}

#[derive(clap::Args)]
pub struct OrderArgs {
    /// Why: recorded with the decision.
    #[arg(long, default_value = "")]
    reason: String,
    /// Show what would happen and which checks pass; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Proceed even if checks fail (the epoch compare-and-set still applies).
    #[arg(long)]
    force: bool,
    /// With --dry-run: also test every plan step's reachability and credentials.
    #[arg(long, requires = "dry_run")]
    check: bool,
}

#[derive(clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    group: String,
}

#[derive(clap::Args)]
pub struct AutomationArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[arg(value_enum)]
    state: OnOff,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
pub enum Control {
    /// Make SITE active for GROUP, checked against the witness's evidence.
    Failover(FailoverArgs),
    /// Return GROUP to its primary site (never automatic).
    Failback(FailbackArgs),
    /// Stop automatic decisions for GROUP.
    Pause(GroupArgs),
    /// Resume automatic decisions for GROUP.
    Resume(GroupArgs),
    /// Acknowledge GROUP's last failover, lifting its block on automatic failover.
    Ack(GroupArgs),
    /// Turn automatic decisions on or off for every group.
    Automation(AutomationArgs),
}

pub async fn run(control: Control) -> Exit {
    let (endpoint, path, body) = match control {
        Control::Failover(a) => {
            let body = order_body(&a.order, Some(&a.to));
            (a.endpoint, format!("/v1/groups/{}/failover", a.group), body)
        }
        Control::Failback(a) => (a.endpoint, format!("/v1/groups/{}/failback", a.group), order_body(&a.order, None)),
        Control::Pause(a) => (a.endpoint, format!("/v1/groups/{}/pause", a.group), json!({})),
        Control::Resume(a) => (a.endpoint, format!("/v1/groups/{}/resume", a.group), json!({})),
        Control::Ack(a) => (a.endpoint, format!("/v1/groups/{}/ack", a.group), json!({})),
        Control::Automation(a) => {
            (a.endpoint, "/v1/automation".to_string(), json!({ "enabled": matches!(a.state, OnOff::On) }))
        }
    };
    let client = match Client::new(&endpoint, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    match client.post_answer(&path, &body).await {
        Ok((status, answer)) => report(status, &answer),
        Err(e) => e.report(),
    }
}

fn order_body(order: &OrderArgs, to: Option<&str>) -> Value {
    let mut body =
        json!({ "reason": order.reason, "dry_run": order.dry_run, "force": order.force, "check": order.check });
    if let Some(to) = to {
        body["to"] = json!(to);
    }
    body
}

fn report(status: u16, answer: &Value) -> Exit {
    let Some(failover) = answer.get("failover") else {
        // pause / resume / ack / automation: the state's answer.
        println!("{}", written(answer));
        return if status == 200 { Exit::Ok } else { Exit::Failed };
    };
    let plan = &failover["plan"];
    println!("{}: {} -> {} (epoch {})", plan["group"], plan["from"], plan["to"], plan["expected_epoch"]);
    for check in plan["checks"].as_array().into_iter().flatten() {
        let mark = if check["passed"] == true { "pass" } else { "FAIL" };
        println!("  [{mark}] {}: {}", check["gate"].as_str().unwrap_or(""), check["detail"].as_str().unwrap_or(""));
    }
    let mut plan_ok = true;
    if let Some(check) = answer.get("plan_check").and_then(|c| serde_json::from_value::<PlanCheck>(c.clone()).ok()) {
        println!("plan steps, checked from node {}:", check.node);
        for s in &check.steps {
            println!("  [{}] {} ({}): {}", if s.ok { "pass" } else { "FAIL" }, s.step, s.kind, s.detail);
        }
        plan_ok = check.ok();
    }
    let outcome = &failover["outcome"];
    match outcome["outcome"].as_str() {
        Some("dry_run") if outcome["allowed"] == true && !plan_ok => {
            println!("dry run: the decision would proceed but a plan step check failed; nothing changed");
            Exit::Failed
        }
        Some("dry_run") if outcome["allowed"] == true => {
            println!("dry run: would proceed; nothing changed");
            Exit::Ok
        }
        Some("dry_run") => {
            println!("dry run: would be refused (use --force to override the failed checks); nothing changed");
            Exit::Failed
        }
        Some("failed_over") => {
            println!("done: {} is active at epoch {}", plan["to"], outcome["epoch"]);
            Exit::Ok
        }
        Some("refused") => {
            println!("refused: a check failed; nothing changed (use --force to override)");
            Exit::Failed
        }
        _ => {
            println!("rejected: {}", outcome["rejection"]);
            Exit::Failed
        }
    }
}

/// A committed write's answer for people: its outcome and fields, e.g. `group updated: blocked
/// false, group app, paused true (log index 12)`, or `refused (stale_epoch): ...`.
pub fn written(answer: &Value) -> String {
    let Some(fields) = answer.as_object() else { return answer.to_string() };
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let rest: Vec<String> = fields
        .iter()
        .filter(|(k, _)| !["outcome", "reason", "log_index"].contains(&k.as_str()))
        .map(|(k, v)| format!("{} {}", k.replace('_', " "), text(v)))
        .collect();
    let head = match (fields.get("outcome").map(text).as_deref(), fields.get("reason")) {
        (Some("rejected"), Some(reason)) => format!("refused ({})", text(reason)),
        (Some(outcome), _) => outcome.replace('_', " "),
        (None, _) => "answer".into(),
    };
    let index = fields.get("log_index").map_or(String::new(), |i| format!(" (log index {i})"));
    format!("{head}: {}{index}", rest.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_write_reads_as_words() {
        let paused = serde_json::json!({"outcome": "group_updated", "group": "app", "paused": true, "blocked": false, "log_index": 12});
        assert_eq!(super::written(&paused), "group updated: blocked false, group app, paused true (log index 12)");
        let stale = serde_json::json!({"outcome": "rejected", "reason": "stale_epoch", "group": "app", "expected": 3, "current": 4, "log_index": 13});
        assert_eq!(super::written(&stale), "refused (stale_epoch): current 4, expected 3, group app (log index 13)");
    }
}
