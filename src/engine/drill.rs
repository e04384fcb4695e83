//! The preconditions of a DR drill's switchover, out or back: both sites up by a quorum of
//! live voters, nothing under way, the group neither blocked nor paused, the survivor's copy
//! within the RPO objective, the plan ready (out only: the leader's last scheduled check),
//! and no agent ahead of the witness's epoch. A drill refused says which failed and changes
//! nothing; [`crate::state::State`] checks both sites up and nothing under way again where the
//! switchover lands in the log.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{not_blocked, rpo_objective, GateCheck, OperatorPlan};
use crate::state::{quorum, Epoch, NodeId, Rejection, SiteId, State, Verdict};

/// What only the leader knows about a group, for its drill's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillFacts {
    /// The data the other site's copy lacks now (`Ledger::rpo_exposure`); `None` when its
    /// agent never reported.
    pub exposure: Option<Duration>,
    /// The plan's last scheduled check: what it found ready, or why not. `None` on the way
    /// back (the check after the first leg may not have run yet; the leg's own plan just ran).
    pub plan: Option<Result<String, String>>,
    /// An agent holds a later epoch than the group's.
    pub agents_ahead: Option<(SiteId, Epoch)>,
}

/// Checks a drill's switchover of `group` to its other site (`back`: to where its open drill
/// started) against `facts` and the committed state.
pub fn plan_drill(
    state: &State,
    group: &str,
    back: bool,
    voters: &BTreeSet<NodeId>,
    live: &BTreeSet<NodeId>,
    facts: &DrillFacts,
) -> Result<OperatorPlan, Rejection> {
    let g = state.groups.get(group).ok_or_else(|| Rejection::UnknownGroup { group: group.into() })?;
    let to = match (&g.drill, back) {
        (Some(d), true) => d.from.clone(),
        _ => g.other().clone(),
    };
    let n = voters.len();
    let needed = quorum(n);
    let up = |site: &SiteId| {
        let seen = state.agreeing(site, Verdict::Up, voters, live);
        GateCheck {
            gate: if *site == g.active { "active_site_up" } else { "target_site_up" }.into(),
            passed: seen >= needed,
            detail: format!("{site} seen up by {seen} of {n} witness nodes (quorum {needed})"),
        }
    };
    let under_way = g.drill_blocked(back);
    let objective = rpo_objective(g);
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let data = match (objective, facts.exposure) {
        (None, _) => (true, "no agents: the storage's own replication state is not reported here".to_string()),
        (Some(_), None) => (false, format!("{to}'s agent has not reported its copy")),
        (Some(rpo), Some(lacks)) => {
            (lacks <= rpo, format!("{to}'s copy lacks {} of data (RPO objective {})", secs(lacks), secs(rpo)))
        }
    };
    let mut checks = vec![
        up(&g.active),
        up(&to),
        GateCheck {
            gate: "nothing_under_way".into(),
            passed: under_way.is_none(),
            detail: under_way.unwrap_or_else(|| "no failover, switchover or other drill under way".into()),
        },
        not_blocked(g),
        GateCheck {
            gate: "not_paused".into(),
            passed: !g.paused,
            detail: if g.paused { "paused by an operator" } else { "not paused" }.into(),
        },
        GateCheck { gate: "survivor_in_sync".into(), passed: data.0, detail: data.1 },
    ];
    if let Some(plan) = &facts.plan {
        checks.push(GateCheck {
            gate: "plan_ready".into(),
            passed: plan.is_ok(),
            detail: plan.clone().unwrap_or_else(|why| why),
        });
    }
    checks.push(GateCheck {
        gate: "agents_not_ahead".into(),
        passed: facts.agents_ahead.is_none(),
        detail: match &facts.agents_ahead {
            None => "no agent holds a later epoch than this witness".into(),
            Some((site, epoch)) => format!("{site}'s agent holds epoch {epoch}, past this witness's {}", g.epoch),
        },
    });
    Ok(OperatorPlan { group: group.into(), from: g.active.clone(), to, expected_epoch: g.epoch, checks, past: None })
}
