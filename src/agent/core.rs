//! The site agent's decisions, pure: what it was told by the witness and by the other site's
//! agent go in with the agent's own monotonic `now`; roles, hooks to run and the messages to
//! send come out. The shell (`agent/mod.rs`) does the talking; the simulation drives this
//! directly.
//!
//! The rule it keeps (docs/safety.md, "Rule 1"): a site the witness made active for a group may
//! write while it holds a valid witness lease **or** a valid peer lease, and fences itself
//! otherwise. A standby grants the active site peer leases, never once told to drain; told to
//! drain, it reports drained only when every peer lease it granted has certainly expired
//! (counting its own start as a grant: it cannot know what it granted before).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{Assignment, GroupReport, Heartbeat, HeartbeatAnswer, Role};
pub use crate::protocol::{PeerGrant, PeerRequest};
use crate::state::{Epoch, GroupId, SiteId};

/// A hook to run: the role `group` entered at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub group: GroupId,
    pub role: Role,
    pub epoch: Epoch,
}

/// What the site knows about its copy of a group's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct GroupMind {
    /// The witness's last word on this group.
    assignment: Option<Assignment>,
    witness_lease_until: Option<Duration>,
    peer_lease_until: Option<Duration>,
    /// When this agent last granted the other site a peer lease for this group, and until
    /// when that lease (plus the margin) may run.
    peer_grant_until: Duration,
    /// The role hooks were last run for.
    role: Option<Role>,
    /// The replication reading and when it was taken (for async ages).
    replication: Option<(Replication, Duration)>,
}

#[derive(Debug, Clone)]
pub struct AgentCore {
    site: SiteId,
    started: Duration,
    /// After this long without a peer-lease exchange in either direction, the peer counts as
    /// unreachable.
    peer_timeout: Duration,
    last_peer_contact: Option<Duration>,
    /// Why the latest peer-lease exchange left this site without a lease it asked for: the
    /// request failed, or the peer granted none for a group. Reported to the witness.
    peer_problem: Option<String>,
    groups: BTreeMap<GroupId, GroupMind>,
}

/// One group as `witness agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub role: Option<Role>,
    pub epoch: Option<Epoch>,
    pub writable: bool,
    pub witness_lease_ms: u64,
    pub peer_lease_ms: u64,
    /// Draining: until every peer lease this agent granted has certainly expired.
    pub drained_in_ms: Option<u64>,
    pub replication: Option<Replication>,
}

impl AgentCore {
    /// `now` is the agent's start: the moment it must assume it last granted a peer lease.
    pub fn new(site: &str, groups: impl IntoIterator<Item = GroupId>, peer_timeout: Duration, now: Duration) -> Self {
        let groups = groups.into_iter().map(|g| (g, GroupMind::default())).collect();
        AgentCore { site: site.into(), started: now, peer_timeout, last_peer_contact: None, peer_problem: None, groups }
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    /// Whether the peer counts as reachable. Until a first exchange or `peer_timeout` after
    /// start, it does: "unreachable" is what lets the witness fail the peer over, so a fresh
    /// agent that has not tried yet must not claim it.
    pub fn peer_reachable(&self, now: Duration) -> bool {
        let since = self.last_peer_contact.unwrap_or(self.started);
        now.saturating_sub(since) <= self.peer_timeout
    }

    /// The heartbeat to send to the witness at `now`.
    pub fn heartbeat(&self, now: Duration) -> Heartbeat {
        let groups = self
            .groups
            .iter()
            .map(|(name, g)| {
                let replication = g.replication.map(|(r, at)| Replication {
                    in_sync: r.in_sync,
                    recovery_point_age_ms: r
                        .recovery_point_age_ms
                        .map(|age| age + now.saturating_sub(at).as_millis() as u64),
                });
                let report = GroupReport {
                    epoch: g.assignment.map(|a| a.epoch),
                    role: g.role,
                    in_sync: replication.and_then(|r| r.in_sync),
                    recovery_point_age_ms: replication.and_then(|r| r.recovery_point_age_ms),
                    drained: self.drained(g, now),
                    peer_lease_ms: left(g.peer_lease_until, now),
                };
                (name.clone(), report)
            })
            .collect();
        Heartbeat { peer_reachable: self.peer_reachable(now), peer_problem: self.peer_problem.clone(), groups }
    }

    /// The witness answered a heartbeat sent at `sent_at`. Leases count from `sent_at`.
    pub fn on_answer(&mut self, sent_at: Duration, now: Duration, answer: &HeartbeatAnswer) -> Vec<Hook> {
        for (name, assignment) in &answer.groups {
            let Some(g) = self.groups.get_mut(name) else { continue };
            if g.assignment.is_some_and(|a| a.epoch > assignment.epoch) {
                // An answer older than what this agent already knows (a deposed leader's).
                continue;
            }
            if g.assignment.is_none_or(|a| a.epoch != assignment.epoch) {
                // A lease, witness or peer, is for one epoch only.
                g.witness_lease_until = None;
                g.peer_lease_until = None;
            }
            g.assignment = Some(*assignment);
            if let (Role::Active, Some(ms)) = (assignment.role, assignment.lease_ms) {
                let until = sent_at + Duration::from_millis(ms);
                g.witness_lease_until = Some(g.witness_lease_until.map_or(until, |u| u.max(until)));
            }
        }
        self.tick(now)
    }

    /// The peer-lease request to send at `now`.
    pub fn peer_request(&self) -> PeerRequest {
        let groups = self
            .groups
            .iter()
            .filter_map(|(name, g)| {
                let a = g.assignment?;
                (a.role == Role::Active).then(|| (name.clone(), a.epoch))
            })
            .collect();
        PeerRequest { site: self.site.clone(), groups }
    }

    /// Why the peer-lease request sent last failed (`None`: it did not): reported to the
    /// witness until an exchange succeeds.
    pub fn peer_problem(&self) -> Option<&str> {
        self.peer_problem.as_deref()
    }

    /// A peer-lease request failed on the way: `why` names the cause.
    pub fn on_peer_failure(&mut self, why: String) {
        self.peer_problem = Some(why);
    }

    /// The peer answered a request sent at `sent_at`.
    pub fn on_peer_grant(&mut self, sent_at: Duration, now: Duration, grant: &PeerGrant) -> Vec<Hook> {
        self.last_peer_contact = Some(now);
        let refused: Vec<String> = self
            .peer_request()
            .groups
            .into_iter()
            .filter(|(name, _)| !grant.granted.contains_key(name))
            .map(|(name, epoch)| format!("{name} at epoch {epoch}"))
            .collect();
        self.peer_problem = (!refused.is_empty()).then(|| {
            format!(
                "site {} granted no peer lease for {}: it grants only as standby at the same epoch \
                 (see `witness agent status` there)",
                grant.site,
                refused.join(", ")
            )
        });
        for (name, ms) in &grant.granted {
            let Some(g) = self.groups.get_mut(name) else { continue };
            if g.assignment.is_some_and(|a| a.role == Role::Active) {
                let until = sent_at + Duration::from_millis(*ms);
                g.peer_lease_until = Some(g.peer_lease_until.map_or(until, |u| u.max(until)));
            }
        }
        self.tick(now)
    }

    /// The other site asks for peer leases. Granted for a group only while the witness's last
    /// word makes this site standby at the same epoch as the requester's (so the requester is
    /// the active site this site knows), and never once told to drain.
    pub fn grant_peer(&mut self, now: Duration, request: &PeerRequest) -> PeerGrant {
        self.last_peer_contact = Some(now);
        let mut granted = BTreeMap::new();
        for (name, epoch) in &request.groups {
            let Some(g) = self.groups.get_mut(name) else { continue };
            let Some(a) = g.assignment else { continue };
            if a.role == Role::Standby && a.epoch == *epoch {
                let until = now + Duration::from_millis(a.peer_lease_ms + a.margin_ms);
                g.peer_grant_until = g.peer_grant_until.max(until);
                granted.insert(name.clone(), a.peer_lease_ms);
            }
        }
        PeerGrant { site: self.site.clone(), granted }
    }

    pub fn set_replication(&mut self, group: &str, reading: Option<Replication>, now: Duration) {
        if let Some(g) = self.groups.get_mut(group) {
            g.replication = reading.map(|r| (r, now));
        }
    }

    /// Re-evaluates every group's role at `now`; the hooks of the roles that changed, in order
    /// (leaving `active` for anything else runs the fence hook first).
    pub fn tick(&mut self, now: Duration) -> Vec<Hook> {
        let mut hooks = Vec::new();
        for (name, g) in &mut self.groups {
            let Some(role) = role(g, now) else { continue };
            if g.role == Some(role) {
                continue;
            }
            let epoch = g.assignment.map_or(Epoch(0), |a| a.epoch);
            if g.role == Some(Role::Active) && role != Role::Fenced {
                hooks.push(Hook { group: name.clone(), role: Role::Fenced, epoch });
            }
            g.role = Some(role);
            hooks.push(Hook { group: name.clone(), role, epoch });
        }
        hooks
    }

    /// The next moment a role or report may change with no message: a lease expiring, a drain
    /// completing.
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let mut deadlines = Vec::new();
        for g in self.groups.values() {
            let drain = self.drain_done_at(g).filter(|_| g.assignment.is_some_and(|a| a.role == Role::Draining));
            deadlines.extend([g.witness_lease_until, g.peer_lease_until, drain].into_iter().flatten());
        }
        deadlines.into_iter().filter(|d| *d > now).min()
    }

    pub fn writable(&self, group: &str, now: Duration) -> bool {
        self.groups.get(group).is_some_and(|g| role(g, now) == Some(Role::Active))
    }

    /// True while the witness has any group draining at this site: worth heartbeating faster.
    pub fn draining(&self) -> bool {
        self.groups.values().any(|g| g.assignment.is_some_and(|a| a.role == Role::Draining))
    }

    pub fn view(&self, now: Duration) -> BTreeMap<GroupId, GroupView> {
        self.groups
            .iter()
            .map(|(name, g)| {
                let view = GroupView {
                    role: role(g, now),
                    epoch: g.assignment.map(|a| a.epoch),
                    writable: role(g, now) == Some(Role::Active),
                    witness_lease_ms: left(g.witness_lease_until, now),
                    peer_lease_ms: left(g.peer_lease_until, now),
                    drained_in_ms: g
                        .assignment
                        .filter(|a| a.role == Role::Draining)
                        .map(|_| left(self.drain_done_at(g), now)),
                    replication: g.replication.map(|(r, _)| r),
                };
                (name.clone(), view)
            })
            .collect()
    }

    /// When every peer lease granted for this group has certainly expired: the later of the
    /// last grant's and the agent's start's lease plus margin.
    fn drain_done_at(&self, g: &GroupMind) -> Option<Duration> {
        let a = g.assignment?;
        let from_start = self.started + Duration::from_millis(a.peer_lease_ms + a.margin_ms);
        Some(from_start.max(g.peer_grant_until))
    }

    fn drained(&self, g: &GroupMind, now: Duration) -> bool {
        g.assignment.is_some_and(|a| a.role == Role::Draining) && self.drain_done_at(g).is_some_and(|at| now >= at)
    }
}

/// The role by the agent's rule; `None` before the witness has said anything.
/// Milliseconds from `now` until `until` (zero when past or absent).
fn left(until: Option<Duration>, now: Duration) -> u64 {
    until.map_or(0, |u| u.saturating_sub(now).as_millis() as u64)
}

fn role(g: &GroupMind, now: Duration) -> Option<Role> {
    let a = g.assignment?;
    Some(match a.role {
        Role::Active => {
            let valid = |until: Option<Duration>| until.is_some_and(|u| now < u);
            if valid(g.witness_lease_until) || valid(g.peer_lease_until) {
                Role::Active
            } else {
                Role::Fenced
            }
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn answer(role: Role, epoch: u64, lease: bool) -> HeartbeatAnswer {
        let a = Assignment {
            role,
            epoch: Epoch(epoch),
            lease_ms: lease.then_some(1000),
            peer_lease_ms: 1000,
            margin_ms: 100,
        };
        HeartbeatAnswer { groups: [("app".into(), a)].into() }
    }

    fn agent(site: &str, now: u64) -> AgentCore {
        AgentCore::new(site, ["app".into()], ms(750), ms(now))
    }

    fn roles(hooks: &[Hook]) -> Vec<(Role, u64)> {
        hooks.iter().map(|h| (h.role, h.epoch.0)).collect()
    }

    #[test]
    fn the_active_site_writes_on_either_lease_and_fences_when_both_are_out() {
        let mut east = agent("east", 0);
        assert!(!east.writable("app", ms(0)), "no role before the witness speaks");
        // Heartbeat sent at 100, answered at 130: the lease counts from 100.
        assert_eq!(roles(&east.on_answer(ms(100), ms(130), &answer(Role::Active, 1, true))), vec![(Role::Active, 1)]);
        assert!(east.writable("app", ms(1099)));
        // A peer grant for a request sent at 900 carries it to 1900.
        east.on_peer_grant(
            ms(900),
            ms(910),
            &PeerGrant { site: "west".into(), granted: [("app".into(), 1000)].into() },
        );
        assert!(east.tick(ms(1500)).is_empty());
        assert!(east.writable("app", ms(1899)));
        assert_eq!(east.next_deadline(ms(1500)), Some(ms(1900)));
        assert_eq!(roles(&east.tick(ms(1900))), vec![(Role::Fenced, 1)]);
        assert!(!east.writable("app", ms(1900)));
        // The witness moved the group on: standby, after the fence it already ran.
        assert_eq!(
            roles(&east.on_answer(ms(2000), ms(2010), &answer(Role::Standby, 3, false))),
            vec![(Role::Standby, 3)]
        );
    }

    #[test]
    fn leaving_active_for_standby_fences_first() {
        let mut east = agent("east", 0);
        east.on_answer(ms(0), ms(1), &answer(Role::Active, 1, true));
        let hooks = east.on_answer(ms(10), ms(11), &answer(Role::Standby, 2, false));
        assert_eq!(roles(&hooks), vec![(Role::Fenced, 2), (Role::Standby, 2)]);
    }

    #[test]
    fn a_standby_grants_only_at_the_same_epoch_and_never_while_draining() {
        let mut west = agent("west", 0);
        let ask = |epoch: u64| PeerRequest { site: "east".into(), groups: [("app".into(), Epoch(epoch))].into() };
        assert!(west.grant_peer(ms(5), &ask(1)).granted.is_empty(), "no role known yet");
        west.on_answer(ms(10), ms(11), &answer(Role::Standby, 1, false));
        assert_eq!(west.grant_peer(ms(20), &ask(1)).granted, [("app".into(), 1000)].into());
        assert!(west.grant_peer(ms(20), &ask(2)).granted.is_empty(), "another epoch");
        west.on_answer(ms(300), ms(301), &answer(Role::Draining, 2, false));
        assert!(west.grant_peer(ms(310), &ask(2)).granted.is_empty(), "draining");
        // Drained once the last grant (20) plus lease and margin has passed: 1120.
        assert!(!west.heartbeat(ms(1119)).groups["app"].drained);
        assert!(west.heartbeat(ms(1120)).groups["app"].drained);
    }

    #[test]
    fn a_restarted_agent_counts_its_start_as_its_last_grant() {
        let mut west = agent("west", 5000);
        west.on_answer(ms(5010), ms(5011), &answer(Role::Draining, 2, false));
        assert!(!west.heartbeat(ms(6099)).groups["app"].drained);
        assert!(west.heartbeat(ms(6100)).groups["app"].drained);
    }
}
