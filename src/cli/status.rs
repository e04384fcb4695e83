//! `witness status`: a node's view of the cluster as a table, or JSON with `--json`.

use std::time::Duration;

use super::client::{Client, Endpoint};
use super::Exit;
use crate::ids::NodeId;
use crate::node::status::{GroupStatus, Status};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Print the raw JSON document instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    filter: Filter,
}

/// Which groups to show: all by default, or those matching every filter given. The counts of
/// every group by state come first either way.
#[derive(clap::Args, Default, Debug, Clone)]
pub struct Filter {
    /// Only groups whose name matches (`*` matches any run of characters, e.g. `billing-*`).
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// Only groups with this site as primary or secondary.
    #[arg(long)]
    site: Option<String>,
    /// Only groups in this state: on-primary, failed-over, draining, paused, blocked, drilling.
    #[arg(long, value_parser = ["on-primary", "failed-over", "draining", "paused", "blocked", "drilling"])]
    state: Option<String>,
}

impl Filter {
    fn selects(&self, g: &GroupStatus) -> bool {
        self.group.as_deref().is_none_or(|p| matches(p, g.name.as_str()))
            && self.site.as_deref().is_none_or(|s| g.primary.as_str() == s || g.secondary.as_str() == s)
            && self.state.as_deref().is_none_or(|s| states(g).contains(&s))
    }

    fn any(&self) -> bool {
        self.group.is_some() || self.site.is_some() || self.state.is_some()
    }
}

/// The states a group is in, as `--state` names them.
fn states(g: &GroupStatus) -> Vec<&'static str> {
    let home = if g.active == g.primary { "on-primary" } else { "failed-over" };
    let flags = [
        (g.draining, "draining"),
        (g.paused, "paused"),
        (g.blocked, "blocked"),
        (g.drill.as_ref().is_some_and(|d| d.status == "running"), "drilling"),
    ];
    std::iter::once(home).chain(flags.into_iter().filter(|(on, _)| *on).map(|(_, name)| name)).collect()
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| matches(rest, &tail[i..]))
        }
    }
}

/// Exit 0 when the node is ready, 1 when it answered but is not ready, 3 when unreachable.
pub async fn run(args: Args) -> Exit {
    let client = match Client::new(&args.endpoint, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let mut status: Status = match client.get("/v1/status").await {
        Ok(s) => s,
        Err(e) => return e.report(),
    };
    if args.json {
        status.groups.retain(|g| args.filter.selects(g));
        println!("{}", serde_json::to_string_pretty(&status).expect("status serializes"));
    } else {
        print!("{}", render(&status, &args.filter));
    }
    if status.ready {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// A link's cell: unused lately, ok, or failing for how long.
fn link(l: Option<&crate::raft::links::LinkView>) -> String {
    match l {
        None => "-".into(),
        Some(l) if l.up => "ok".into(),
        Some(l) => format!("FAILING {} s", l.failing_for_ms.unwrap_or(0) / 1000),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// The status with only the groups `filter` selects, after the counts of all of them by state.
fn render(s: &Status, filter: &Filter) -> String {
    let mut out = String::new();
    let leader = match &s.leader {
        Some(l) => format!("node {} ({})", l.id, l.addr),
        None => "none".into(),
    };
    let ready = match &s.not_ready_reason {
        None => "ready".to_string(),
        Some(r) => format!("NOT READY: {r}"),
    };
    out += &format!("cluster {}   node {} ({})   term {}   leader {}\n", s.cluster, s.node_id, s.role, s.term, leader);
    out += &format!("{ready}\n");
    if !s.automation {
        out += "AUTOMATION OFF: no group fails over by itself (`witness automation on` turns it back on)\n";
    }
    out += &format!(
        "log: last {}  committed {}  applied {}  snapshot {}  purged {}\n",
        opt(s.last_log_index),
        opt(s.committed_index),
        opt(s.applied_index),
        opt(s.snapshot_index),
        opt(s.purged_index)
    );
    if !s.config_matches_cluster {
        out += "warning: this node's config differs from what the cluster registered (the leader's config wins)\n";
        for difference in &s.config_differences {
            out += &format!("  {difference}\n");
        }
    }
    out += "\nMEMBERS\n";
    // On the leader its links are the LINK column; elsewhere the leader's are shown beside them
    // (a node that knows no leader may still have asked the members for them).
    let leader =
        (s.role != "leader").then(|| s.leader.as_ref().map_or("the leader".into(), |l| format!("leader {}", l.id)));
    let mut head = vec!["ID".to_string(), "ADDRESS".into(), "ROLE".into(), "LAST ACK".into(), "LINK".into()];
    if leader.is_some() {
        head.push("LEADER'S LINK".into());
    }
    let mut rows = vec![head];
    for m in &s.members {
        let role = if Some(m.id) == s.leader.as_ref().map(|l| l.id) {
            "leader"
        } else if m.voter {
            "voter"
        } else {
            "learner"
        };
        let mut row = vec![
            m.id.to_string(),
            m.addr.clone(),
            role.into(),
            m.last_ack_ms.map_or("-".into(), |ms| format!("{ms} ms")),
            link(m.link.as_ref()),
        ];
        if leader.is_some() {
            row.push(link(m.leader_link.as_ref()));
        }
        rows.push(row);
    }
    out += &table(&rows);
    for m in &s.members {
        if let Some(error) = m.link.as_ref().and_then(|l| l.error.as_ref()) {
            out += &format!("node {} cannot reach node {} at {}: {error}\n", s.node_id, m.id, m.addr);
        }
        if let (Some(leader), Some(error)) = (&leader, m.leader_link.as_ref().and_then(|l| l.error.as_ref())) {
            out += &format!("{leader} cannot reach node {} at {}: {error}\n", m.id, m.addr);
        }
    }
    if let Some(why) = &s.leader_view_unavailable {
        out += &format!("LEADER'S VIEW UNKNOWN HERE: {why}\n");
    }
    out += "\nSITES (verdict of each node)\n";
    if s.sites.is_empty() {
        out += "(none)\n";
    } else {
        let nodes: Vec<NodeId> = s.members.iter().map(|m| m.id).collect();
        let mut rows = vec![std::iter::once("SITE".to_string())
            .chain(nodes.iter().map(|id| format!("NODE {id}")))
            .collect::<Vec<_>>()];
        for site in &s.sites {
            let by_node = s.verdicts.get(site);
            let cells =
                nodes.iter().map(|id| by_node.and_then(|v| v.get(id)).map_or("unknown".to_string(), |v| v.to_string()));
            rows.push(std::iter::once(site.to_string()).chain(cells).collect());
        }
        out += &table(&rows);
    }
    out += "\nGROUPS\n";
    if !s.groups.is_empty() {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for state in s.groups.iter().flat_map(states) {
            *counts.entry(state).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(state, n)| format!("{n} {state}")).collect();
        out += &format!("{} groups: {}\n", s.groups.len(), counts.join(", "));
    }
    let all = s.groups.len();
    let groups: Vec<GroupStatus> = s.groups.iter().filter(|g| filter.selects(g)).cloned().collect();
    let s = &Status { groups, ..s.clone() };
    if filter.any() {
        out += &format!("{} of {all} groups selected\n", s.groups.len());
    }
    if s.groups.is_empty() {
        out += "(none)\n";
    } else {
        let mut rows = vec![vec![
            "NAME".to_string(),
            "ACTIVE".into(),
            "EPOCH".into(),
            "PRIMARY".into(),
            "SECONDARY".into(),
            "REPLICATION".into(),
            "FAILOVER".into(),
            "FLAGS".into(),
        ]];
        for g in &s.groups {
            rows.push(vec![
                g.name.to_string(),
                g.active.to_string(),
                g.epoch.to_string(),
                g.primary.to_string(),
                g.secondary.to_string(),
                format!("{:?}", g.replication).to_lowercase(),
                format!("{:?}", g.failover).to_lowercase(),
                [(g.paused, "paused"), (g.blocked, "blocked"), (g.draining, "draining")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, name)| *name)
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        out += &table(&rows);
        let drilled: Vec<_> = s.groups.iter().filter(|g| g.drill.is_some()).collect();
        if !drilled.is_empty() {
            out += "\nDRILLS\n";
            for g in drilled {
                out += &drill(g);
            }
        }
        let checked: Vec<_> = s.groups.iter().filter(|g| g.readiness.is_some()).collect();
        if !checked.is_empty() {
            out += "\nPLAN READINESS\n";
            for g in checked {
                out += &super::plan::readiness(g);
            }
        }
        let with_plans: Vec<_> = s.groups.iter().filter(|g| g.plan.is_some()).collect();
        if !with_plans.is_empty() {
            out += "\nPLANS\n";
            for g in with_plans {
                out += &super::plan::show(g);
            }
        }
        let with_agents: Vec<_> = s.groups.iter().filter_map(|g| Some((g, g.agents.as_ref()?))).collect();
        if !with_agents.is_empty() {
            out += "\nAGENTS (as reported to the leader)\n";
            let mut rows = vec![[
                "GROUP",
                "SITE",
                "ROLE",
                "EPOCH",
                "HEARD",
                "PEER",
                "REPLICATION",
                "LEASE",
                "PEER LEASE",
                "RPO EXPOSURE",
            ]
            .map(String::from)
            .to_vec()];
            for (g, agents) in with_agents {
                for (site, a) in &agents.sites {
                    let replication = match (a.in_sync, a.recovery_point_age_ms) {
                        (Some(true), _) => "in sync".to_string(),
                        (Some(false), _) => "NOT in sync".to_string(),
                        (None, Some(age)) => format!("recovery point {age} ms old"),
                        (None, None) => "unknown".to_string(),
                    };
                    rows.push(vec![
                        g.name.to_string(),
                        site.to_string(),
                        match (a.role, a.silent) {
                            (None, _) => "-".into(),
                            (Some(r), false) => r.to_string(),
                            (Some(r), true) => format!("(was {r})"),
                        },
                        a.epoch.map_or("-".into(), |e| e.to_string()),
                        match (a.heard_ms_ago, a.silent) {
                            (None, _) => "NEVER".into(),
                            (Some(ms), true) => format!("SILENT, {ms} ms ago"),
                            (Some(ms), false) => format!("{ms} ms ago"),
                        },
                        match a.peer_reachable {
                            Some(true) => "reachable".into(),
                            Some(false) => "UNREACHABLE".into(),
                            None => "-".into(),
                        },
                        replication,
                        format!("{} ms", a.lease_remaining_ms),
                        format!("{} ms", a.peer_lease_ms),
                        agents.rpo_exposure_ms.map_or("unknown".into(), |ms| format!("{ms} ms")),
                    ]);
                }
            }
            out += &table(&rows);
            for (g, agents) in s.groups.iter().filter_map(|g| Some((g, g.agents.as_ref()?))) {
                if let Some(why) = &agents.without_peer_lease {
                    out += &format!(
                        "\nNO PEER LEASE: group {}'s active site {} is writable by the witness's lease alone; losing \
                         the witness would stop it. Why: {why}\n",
                        g.name, g.active
                    );
                }
                for (site, problem) in agents.sites.iter().filter_map(|(s, a)| Some((s, a.peer_problem.as_ref()?))) {
                    out += &format!("PEER LINK of site {site} (group {}): {problem}\n", g.name);
                }
                if let Some(ahead) = agents.agents_ahead {
                    out += &format!(
                        "\nEPOCH BEHIND THE AGENTS: group {} is at epoch {} here, an agent holds {ahead} (was this \
                         witness restored from an older backup?). Nothing moves {} until `witness failover {} --to SITE \
                         --force` names the site that is really active (see `witness agent status` at each site); \
                         its epoch then goes past {ahead}.\n",
                        g.name, g.epoch, g.name, g.name
                    );
                }
            }
        }
    }
    out
}

/// A group's drill under way, or its last one, in a line.
fn drill(g: &crate::node::status::GroupStatus) -> String {
    let Some(d) = &g.drill else { return String::new() };
    let route = format!("{} -> {}{}", d.from, d.to, if d.back { " and back" } else { "" });
    let ago = |ms: u64| {
        crate::config::duration::format(std::time::Duration::from_secs(
            crate::clock::unix_ms().saturating_sub(ms) / 1000,
        ))
    };
    let line = match (d.status.as_str(), d.finished_at_ms) {
        ("running", _) => format!("DRILL UNDER WAY ({route}, {} leg(s) done)", d.legs_done),
        (status, Some(at)) => format!(
            "last drill {} {} ago ({route}{})",
            status.to_uppercase(),
            ago(at),
            d.total_ms.map_or(String::new(), |t| format!(", {:.1} s", t as f64 / 1000.0))
        ),
        (status, None) => format!("last drill {}", status.to_uppercase()),
    };
    let passed = match (d.status.as_str(), g.drill_passed_at_ms) {
        ("passed", _) | (_, None) => String::new(),
        (_, Some(at)) => format!("; last passed {} ago", ago(at)),
    };
    format!("{}: {line}{passed}; `witness drill show {}`\n", g.name, g.name)
}

pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| v.len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().enumerate().map(|(i, v)| format!("{v:<w$}", w = widths[i])).collect();
        out += line.join("  ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_names_with_stars_for_any_run() {
        for (pattern, name, want) in [
            ("app", "app", true),
            ("app", "apps", false),
            ("billing-*", "billing-eu", true),
            ("billing-*", "billing-", true),
            ("*-eu", "billing-eu", true),
            ("*-eu", "billing-us", false),
            ("b*g*u", "billing-eu", true),
            ("*", "", true),
            ("a*b", "ab", true),
            ("a*b", "a", false),
        ] {
            assert_eq!(matches(pattern, name), want, "{pattern} vs {name}");
        }
    }
}
