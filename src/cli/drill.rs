//! `witness drill GROUP [--back [--hold D]]`: a DR drill, a planned switchover to the group's
//! other site while both are up, checked first, driven by the leader, and reported phase by
//! phase; `witness drill show GROUP`: the last report. Reports print as Markdown (for a change
//! ticket, readable in a terminal) or JSON. Exit 0 when the drill passed (or a dry run would
//! start it), 1 when refused, failed or interrupted, 3 when the cluster stopped answering
//! while waiting (the drill goes on without the command).

use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::json;

use super::client::{Client, Endpoint};
use super::Exit;
use crate::clock::rfc3339;
use crate::config::duration::format as duration;
use crate::state::drill::{DrillReport, LegReport};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The group to drill.
    group: Option<String>,
    /// Return to the site the drill started from, after --hold.
    #[arg(long)]
    back: bool,
    /// How long to stay on the other site before returning (e.g. 30s, 2h).
    #[arg(long, requires = "back", value_name = "DURATION")]
    hold: Option<String>,
    /// Why (a change ticket, say): in the journal and the report.
    #[arg(long, default_value = "")]
    reason: String,
    /// Check the preconditions only; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Start it and return: the leader drives it to its end either way.
    #[arg(long)]
    no_wait: bool,
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    format: Format,
}

#[derive(Subcommand)]
enum Sub {
    /// The report of GROUP's drill under way, or else of its last one.
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    group: String,
    #[arg(long, value_enum, default_value_t = Format::Markdown)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Markdown,
    Json,
}

/// `GET /v1/groups/{group}/drills`.
#[derive(Deserialize)]
struct Drills {
    running: Option<DrillReport>,
    finished: Vec<DrillReport>,
}

/// How long the command keeps asking while no node answers, before it leaves the drill to run
/// on without it.
const PATIENCE: Duration = Duration::from_secs(60);

pub async fn run(args: Args) -> Exit {
    if let Some(Sub::Show(a)) = args.command {
        let client = match Client::new(&a.endpoint, Duration::from_secs(30)) {
            Ok(c) => c,
            Err(e) => return e.report(),
        };
        return match client.get::<Drills>(&format!("/v1/groups/{}/drills", a.group)).await {
            Err(e) => e.report(),
            Ok(d) => match d.running.or_else(|| d.finished.into_iter().next()) {
                None => {
                    eprintln!("{}: no drill has run (`witness drill {}` starts one)", a.group, a.group);
                    Exit::Failed
                }
                Some(report) => {
                    print!("{}", render(&a.group, &report, a.format));
                    if report.status == "failed" || report.status == "interrupted" {
                        Exit::Failed
                    } else {
                        Exit::Ok
                    }
                }
            },
        };
    }
    let a = args.run;
    let Some(group) = a.group else {
        eprintln!("error: name the group to drill: `witness drill GROUP`, or `witness drill show GROUP`");
        return Exit::Usage;
    };
    let client = match Client::new(&a.endpoint, Duration::from_secs(30)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let hold = match a.hold.as_deref().map(crate::config::duration::parse).transpose() {
        Ok(hold) => hold.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: --hold: {e}");
            return Exit::Usage;
        }
    };
    let mut body = json!({ "reason": a.reason, "dry_run": a.dry_run });
    if a.back {
        body["back_after_ms"] = json!(hold.as_millis() as u64);
    }
    let answer = match client.post_answer(&format!("/v1/groups/{group}/drill"), &body).await {
        Ok((_, answer)) => answer,
        Err(e) => return e.report(),
    };
    let Some(order) = answer.get("failover") else {
        println!("{}", super::control::written(&answer));
        return Exit::Failed;
    };
    let plan = &order["plan"];
    println!(
        "{group}: drill {} -> {}{}",
        text(&plan["from"]),
        text(&plan["to"]),
        if a.back { " and back" } else { "" }
    );
    for check in plan["checks"].as_array().into_iter().flatten() {
        let mark = if check["passed"] == true { "pass" } else { "FAIL" };
        println!("  [{mark}] {}: {}", text(&check["gate"]), text(&check["detail"]));
    }
    let outcome = &order["outcome"];
    match outcome["outcome"].as_str() {
        Some("dry_run") if outcome["allowed"] == true => {
            println!("dry run: the drill would start; nothing changed");
            return Exit::Ok;
        }
        Some("dry_run") => {
            println!("dry run: the drill would be refused; nothing changed");
            return Exit::Failed;
        }
        Some("refused") => {
            println!("refused: a precondition failed; nothing changed");
            return Exit::Failed;
        }
        Some("drill_started") => {}
        _ => {
            println!("rejected: {}", outcome["rejection"]);
            return Exit::Failed;
        }
    }
    let id = plan["expected_epoch"].as_u64().unwrap_or_default();
    println!("started: drill {id}, {} active at epoch {}", text(&plan["to"]), outcome["epoch"]);
    if a.no_wait {
        println!("the leader drives it to its end: `witness drill show {group}` for the report");
        return Exit::Ok;
    }
    let report = match wait(&client, &group, id).await {
        Some(report) => report,
        None => {
            eprintln!(
                "error: no node answered for {} s; the drill goes on without this command: \
                 `witness drill show {group}`",
                PATIENCE.as_secs()
            );
            return Exit::Unavailable;
        }
    };
    print!("{}", render(&group, &report, a.format));
    if report.status == "passed" {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// Follows drill `id` of `group` to its end, saying each leg as it finishes.
async fn wait(client: &Client, group: &str, id: u64) -> Option<DrillReport> {
    let mut said = 0;
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        match client.get::<Drills>(&format!("/v1/groups/{group}/drills")).await {
            Ok(d) => {
                failing_since = None;
                if let Some(done) = d.finished.into_iter().find(|r| r.id.0 == id) {
                    return Some(done);
                }
                if let Some(running) = d.running.filter(|r| r.id.0 == id) {
                    for leg in running.legs.iter().skip(said) {
                        let total = leg.total_ms.map_or("unfinished".into(), secs);
                        eprintln!("  {} leg done: {} -> {} in {total}", leg.leg, leg.from, leg.to);
                        if running.back && leg.leg == "out" {
                            eprintln!("  holding {} before returning", secs(running.hold_ms));
                        }
                    }
                    said = running.legs.len();
                }
            }
            Err(_) if failing_since.is_some_and(|t| t.elapsed() > PATIENCE) => return None,
            Err(_) => {
                failing_since.get_or_insert_with(std::time::Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn render(group: &str, report: &DrillReport, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Markdown => markdown(group, report),
    }
}

/// The report for a change ticket: what ran, each leg's phases, each step, what failed.
pub fn markdown(group: &str, r: &DrillReport) -> String {
    let b = &r.budget;
    let mut out = format!("# Drill {} of {group}: {}\n\n", r.id, r.status.to_uppercase());
    let route = if r.back {
        format!("{} -> {} and back after a hold of {}", r.from, r.to, duration(Duration::from_millis(r.hold_ms)))
    } else {
        format!("{} -> {}", r.from, r.to)
    };
    out += &format!("- Route: {route}\n");
    if !r.reason.is_empty() {
        out += &format!("- Reason: {}\n", r.reason);
    }
    if let Some(by) = &r.by {
        out += &format!("- Ordered by: {by}\n");
    }
    out += &format!("- Requested: {}\n", rfc3339(r.requested_at_ms));
    if let (Some(done), Some(total)) = (r.finished_at_ms, r.total_ms) {
        out += &format!("- Finished: {} ({} in all)\n", rfc3339(done), secs(total));
    }
    out += &format!(
        "- RTO objective {}; worst-case budget {}, of which {} for what a switchover goes through (lease \
         wait, Raft commit, plan steps); a real failure adds {} (detection, hold-down), clients the DNS TTL {}\n\n",
        secs(r.objective_ms),
        secs(b.budget_ms),
        secs(b.switchover_ms),
        secs(b.unplanned_ms),
        secs(b.ttl_ms)
    );
    out += &legs(&r.legs);
    if !r.problems.is_empty() {
        out += "\n## Problems\n\n";
        for p in &r.problems {
            out += &format!("- {p}\n");
        }
    }
    out
}

/// Legs as a table of phases, then each leg's steps: the body of a drill report, and the shape
/// of `witness demo`'s summary.
pub fn legs(legs: &[LegReport]) -> String {
    let mut out = String::from("| leg | route | epoch | decision | drain | steps | total | as a failure | RPO |\n");
    out += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    let opt = |v: Option<u64>| v.map_or("-".into(), secs);
    for leg in legs {
        out += &format!(
            "| {} | {} -> {} | {} | {} | {} | {} | {} | {} | {} |\n",
            leg.leg,
            leg.from,
            leg.to,
            leg.epoch,
            secs(leg.decision_ms),
            secs(leg.drain_ms),
            opt(leg.steps_ms),
            opt(leg.total_ms),
            opt(leg.projected_rto_ms),
            opt(leg.rpo_ms)
        );
    }
    for leg in legs.iter().filter(|l| !l.steps.is_empty()) {
        out += &format!("\n## {} {} -> {}: steps\n\n", leg.leg, leg.from, leg.to);
        out += "| step | kind | status | attempts | took | detail |\n| --- | --- | --- | --- | --- | --- |\n";
        for s in &leg.steps {
            let detail: String = s.detail.replace('|', "/").replace('\n', " ").chars().take(120).collect();
            let took = s.took_ms.map_or("-".into(), secs);
            out += &format!("| {} | {} | {} | {} | {took} | {detail} |\n", s.step, s.kind, s.status, s.attempts);
        }
    }
    out
}
