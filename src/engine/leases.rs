//! Site agents as the leader sees them: the [`Ledger`] in which
//! the leader records what each agent last reported and when it last granted a group's active
//! site a lease. Pure, like the rest of the engine: `now` is passed in (the leader's own
//! monotonic clock), and the ledger belongs to one leadership, so a new leader starts from an
//! empty one whose `since` is its own start.
//!
//! The lease rule (docs/safety.md, "Rule 1"): the leader grants the committed active site of a
//! group a lease of length L on each heartbeat, after confirming it still leads, never while
//! the group drains. An agent counts L from when it sent the heartbeat; the leader counts from
//! when it answered. A promotion waits until L plus the margin has passed since the later of
//! the last grant and the leader's start.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::ReplicationMode;
use crate::keyed::Cursor;
pub use crate::protocol::{Assignment, GroupReport, Heartbeat, HeartbeatAnswer, Role};
use crate::state::{Epoch, GroupId, GroupState, SiteId, State};

/// What the leader last heard from one site's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub heard_at: Duration,
    pub peer_reachable: bool,
    /// Why the agent's peer-lease exchange is failing, in its words.
    pub peer_problem: Option<String>,
    pub groups: BTreeMap<GroupId, GroupRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRecord {
    pub report: GroupReport,
    /// When this site last reported `in_sync: true` for the group.
    pub last_in_sync_at: Option<Duration>,
}

/// The leader's memory of agents and grants, for one leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// When this leadership started (or later): nothing granted before it is known here.
    pub since: Duration,
    sites: BTreeMap<SiteId, SiteRecord>,
    /// Per group: the last lease granted to its active site.
    grants: BTreeMap<GroupId, Duration>,
    /// Per group, the sites whose agent's last report named an epoch past the group's
    /// committed one when it came: [`Ledger::agents_ahead`] reads only these, so a tick need
    /// not search every group's reports for the rare case. (Within a leadership committed
    /// epochs only grow, so a report not ahead when it came is not ahead later.)
    ahead: BTreeMap<GroupId, BTreeMap<SiteId, Epoch>>,
}

impl Ledger {
    pub fn new(since: Duration) -> Ledger {
        Ledger { since, sites: BTreeMap::new(), grants: BTreeMap::new(), ahead: BTreeMap::new() }
    }

    /// Records `site`'s heartbeat and answers it from the committed `state`. Call only after
    /// confirming leadership (a linearizable read) that began after the heartbeat arrived,
    /// and read `state` under the same lock as this ledger, so that no grant is recorded after
    /// the engine has looked at the grants of a group it saw draining.
    pub fn heartbeat(&mut self, now: Duration, site: &str, heartbeat: &Heartbeat, state: &State) -> HeartbeatAnswer {
        let record = self.sites.entry(site.into()).or_insert_with(|| SiteRecord {
            heard_at: now,
            peer_reachable: false,
            peer_problem: None,
            groups: BTreeMap::new(),
        });
        record.heard_at = now;
        record.peer_reachable = heartbeat.peer_reachable;
        record.peer_problem = heartbeat.peer_problem.clone();
        // Every map here is keyed by group and walked in key order with the state's groups,
        // not searched per group: a heartbeat stays linear in the groups. Records and grants
        // of groups seen for the first time are added after the walk.
        let mut reports = Cursor::new(heartbeat.groups.iter());
        let mut records = Cursor::new(record.groups.iter_mut());
        let mut grants = Cursor::new(self.grants.iter_mut());
        let (mut new_records, mut new_grants) = (Vec::new(), Vec::new());
        let mut answer = Vec::new();
        for (name, group) in &state.groups {
            let Some(terms) = group.spec.leases else { continue };
            if group.spec.primary != site && group.spec.secondary != site {
                continue;
            }
            let report = reports.seek(name).cloned().unwrap_or_default();
            match report.epoch.filter(|e| *e > group.epoch) {
                Some(epoch) => {
                    self.ahead.entry(name.clone()).or_default().insert(site.into(), epoch);
                }
                None if !self.ahead.is_empty() => {
                    if let Some(sites) = self.ahead.get_mut(name) {
                        sites.remove(site);
                        if sites.is_empty() {
                            self.ahead.remove(name);
                        }
                    }
                }
                None => {}
            }
            let in_sync = (report.in_sync == Some(true)).then_some(now);
            match records.seek(name) {
                Some(r) => *r = GroupRecord { report, last_in_sync_at: in_sync.or(r.last_in_sync_at) },
                None => new_records.push((name.clone(), GroupRecord { report, last_in_sync_at: in_sync })),
            }

            let role = assigned_role(group, site);
            let lease_ms = (role == Role::Active).then(|| {
                match grants.seek(name) {
                    Some(at) => *at = now,
                    None => new_grants.push((name.clone(), now)),
                }
                terms.lease_ms
            });
            let assignment = Assignment {
                role,
                epoch: group.epoch,
                lease_ms,
                peer_lease_ms: terms.lease_ms,
                margin_ms: terms.margin_ms,
            };
            answer.push((name.clone(), assignment));
        }
        record.groups.extend(new_records);
        self.grants.extend(new_grants);
        // In key order already: the map is built from the sorted run without a search each.
        HeartbeatAnswer { groups: answer.into_iter().collect() }
    }

    /// The highest epoch an agent of `group` reports, and whose, when it is past the group's
    /// committed epoch. Agents learn epochs only from the witness, so this means the witness
    /// lost committed state (restored from an older backup): agents ignore assignments of an
    /// older epoch, so nothing this witness decides for the group can take effect.
    pub fn agents_ahead(&self, name: &str, group: &GroupState) -> Option<(SiteId, crate::state::Epoch)> {
        let ahead = self.ahead.get(name)?;
        [&group.spec.primary, &group.spec.secondary]
            .into_iter()
            .filter_map(|site| Some((site, *ahead.get(site)?)))
            .filter(|(_, epoch)| *epoch > group.epoch)
            .max_by_key(|(_, epoch)| *epoch)
            .map(|(site, epoch)| (site.clone(), epoch))
    }

    /// Why `group`'s active site holds no peer lease, when its agent, heard within a lease,
    /// says it is active at the group's epoch with none: it then stays writable by the
    /// witness's lease alone, and losing the witness would stop it. `None` while it holds one,
    /// while the group drains (no lease is granted then), and when its agent is not heard.
    pub fn without_peer_lease(&self, name: &str, group: &GroupState, now: Duration) -> Option<String> {
        let record = self.heard_within_lease(&group.active, group, now)?;
        let report = &record.groups.get(name)?.report;
        let holds_none = report.role == Some(Role::Active) && report.epoch == Some(group.epoch);
        if group.draining || !holds_none || report.peer_lease_ms > 0 {
            return None;
        }
        Some(
            record.peer_problem.clone().unwrap_or_else(|| {
                format!("site {}'s agent reports no peer lease and no failed request", group.active)
            }),
        )
    }

    /// The agent of `site`, if heard from within one of `group`'s leases: what it said longer
    /// ago than that is history (its leases have run out since).
    pub fn heard_within_lease(&self, site: &str, group: &GroupState, now: Duration) -> Option<&SiteRecord> {
        let within = Duration::from_millis(group.spec.leases?.lease_ms);
        self.sites.get(site).filter(|r| now.saturating_sub(r.heard_at) <= within)
    }

    pub fn site(&self, site: &str) -> Option<&SiteRecord> {
        self.sites.get(site)
    }

    /// What each site's agent last reported, by site.
    pub fn sites(&self) -> impl Iterator<Item = (&SiteId, &SiteRecord)> {
        self.sites.iter()
    }

    /// When every witness lease of `group` granted by any leader has certainly expired: the
    /// group's lease wait after the later of this leader's start and its last grant. (The
    /// start is measured with the longest lease the group ever had: an earlier leader may
    /// have granted under it.)
    pub fn leases_expire_at(&self, name: &str, group: &GroupState) -> Duration {
        let wait = group.spec.leases.map_or(0, |t| t.wait_ms());
        let from_start = self.since + Duration::from_millis(wait.max(group.lease_wait_ms));
        let from_grant = self.grants.get(name).map_or(Duration::ZERO, |at| *at + Duration::from_millis(wait));
        from_start.max(from_grant)
    }

    /// The RPO exposure: the data the group's standby copy would lack if it took over now
    /// ([`Ledger::data_at_risk`] for a failure now), what status and metrics show beside the
    /// objective, the group's `rpo`.
    pub fn rpo_exposure(
        &self,
        name: &str,
        group: &GroupState,
        in_sync_within: Duration,
        now: Duration,
    ) -> Option<Duration> {
        self.data_at_risk(name, group, in_sync_within, now, now)
    }

    /// How far the group's standby copy is behind the active site at `at`, as last reported
    /// by its agent: for a synchronous group, the time from its last report in sync to `at`
    /// (zero while it says so); for an asynchronous one, from its last recovery point to `at`
    /// (a report heard after `at` counts back from when it was heard), from the standby's
    /// `site` record and its record `g` of the group. `None`: nothing reported to count from.
    fn behind(site: &SiteRecord, g: &GroupRecord, group: &GroupState, at: Duration) -> Option<Duration> {
        match group.spec.replication {
            ReplicationMode::Sync => {
                if g.report.in_sync == Some(true) {
                    return Some(at.saturating_sub(site.heard_at));
                }
                g.last_in_sync_at.map(|last| at.saturating_sub(last))
            }
            ReplicationMode::Async => g
                .report
                .recovery_point_age_ms
                .map(|age| (Duration::from_millis(age) + at).saturating_sub(site.heard_at)),
        }
    }

    /// The data `group`'s standby copy would lack if it took over for a failure at
    /// `failed_at`: none for a synchronous copy last reported in sync at most `in_sync_within`
    /// before the failure, otherwise how far behind it was at the failure (the failed site
    /// wrote nothing after it, however long the decision then took: an approval an hour later
    /// loses no more).
    /// `None`: never reported to this leader. The one rule for the RPO gate and for the RPO a
    /// failover records.
    pub fn data_at_risk(
        &self,
        name: &str,
        group: &GroupState,
        in_sync_within: Duration,
        failed_at: Duration,
        now: Duration,
    ) -> Option<Duration> {
        let site = self.sites.get(group.other())?;
        Ledger::at_risk(site, site.groups.get(name)?, group, in_sync_within, failed_at, now)
    }

    /// [`Ledger::data_at_risk`] from the standby's `site` record and its `record` of the group,
    /// found by the caller (the engine's tick walks them in the groups' order).
    pub fn at_risk(
        site: &SiteRecord,
        record: &GroupRecord,
        group: &GroupState,
        in_sync_within: Duration,
        failed_at: Duration,
        now: Duration,
    ) -> Option<Duration> {
        let in_sync_at_failure = record.last_in_sync_at.is_some_and(|at| at + in_sync_within >= failed_at);
        if group.spec.replication == ReplicationMode::Sync && in_sync_at_failure {
            return Some(Duration::ZERO);
        }
        Ledger::behind(site, record, group, failed_at.min(now))
    }

    /// The lease the active site of `group` holds by this leader's grants, remaining at `now`.
    pub fn lease_remaining(&self, name: &str, group: &GroupState, now: Duration) -> Duration {
        let (Some(terms), Some(at)) = (group.spec.leases, self.grants.get(name)) else {
            return Duration::ZERO;
        };
        if group.draining {
            return Duration::ZERO;
        }
        (*at + Duration::from_millis(terms.lease_ms)).saturating_sub(now)
    }
}

/// The role the committed state gives `site` in `group`.
pub fn assigned_role(group: &GroupState, site: &str) -> Role {
    match (group.active == site, group.draining) {
        (true, false) => Role::Active,
        (true, true) => Role::Draining,
        (false, false) => Role::Standby,
        (false, true) => Role::Fenced,
    }
}
