//! The site agents' protocol, in one place for both sides: what an agent sends the witness
//! leader (`POST /v1/sites/{site}/heartbeat`: [`Heartbeat`]) and gets back ([`HeartbeatAnswer`],
//! or [`NotLeader`] from a node that does not lead), and what the two sites' agents exchange
//! for peer leases ([`PeerRequest`], [`PeerGrant`]). Data only; the rules are the leader's
//! (`crate::leader`) and the agent core's (`crate::agent::core`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{GroupId, NodeId, SiteId};
use crate::state::Epoch;

/// A site's role for one group, as the witness assigns it and as the agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The group's active site: it may write while it holds a valid lease.
    Active,
    /// The other site: it grants the active site peer leases.
    Standby,
    /// Being promoted: it grants no peer lease, and reports drained once every peer lease it
    /// granted has certainly expired.
    Draining,
    /// It must not write: the witness moved the group away from it, or its leases ran out.
    Fenced,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Active, Role::Standby, Role::Draining, Role::Fenced];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Draining => "draining",
            Role::Fenced => "fenced",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/sites/{site}/heartbeat`: what a site's agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent has exchanged peer-lease messages with the other site's agent recently.
    pub peer_reachable: bool,
    /// Why the agent's latest peer-lease requests failed, while they keep failing (a TLS
    /// certificate refused, the peer refusing this site's certificate, a connection refused):
    /// what the witness shows beside a site whose peer link is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_problem: Option<String>,
    /// Per group of this site that has agents.
    #[serde(default)]
    pub groups: BTreeMap<GroupId, GroupReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupReport {
    /// The epoch the agent knows for the group (absent before its first answer).
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// The role the agent is in by its own rule.
    #[serde(default)]
    pub role: Option<Role>,
    /// Synchronous groups: the site's replica is in sync (absent: unknown).
    #[serde(default)]
    pub in_sync: Option<bool>,
    /// Asynchronous groups: age of the site's last recovery point, measured at the site.
    #[serde(default)]
    pub recovery_point_age_ms: Option<u64>,
    /// The agent, told to drain at `epoch`, has waited out every peer lease it granted.
    #[serde(default)]
    pub drained: bool,
    /// The peer lease this site holds for the group from the other site, remaining: zero on an
    /// active site means losing the witness would stop it.
    #[serde(default)]
    pub peer_lease_ms: u64,
}

/// The answer to a heartbeat: per group the site belongs to that has agents.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAnswer {
    pub groups: BTreeMap<GroupId, Assignment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    pub role: Role,
    pub epoch: Epoch,
    /// Only for the active site: a lease of this length, counted from when the heartbeat was
    /// sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// The group's lease length and margin: the agent grants and waits out peer leases with
    /// these.
    pub peer_lease_ms: u64,
    pub margin_ms: u64,
}

/// The peer-lease request one agent sends the other: the groups it is active for, with the
/// epoch it holds them at. Sent on every round, even with no group, as a reachability check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerRequest {
    pub site: SiteId,
    #[serde(default)]
    pub groups: BTreeMap<GroupId, Epoch>,
}

/// The answer: per requested group, a lease of `lease_ms` counted from when the request was
/// sent, or none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerGrant {
    pub site: SiteId,
    #[serde(default)]
    pub granted: BTreeMap<GroupId, u64>,
}

/// `421 Misdirected Request` to a heartbeat sent to a node that does not lead: where to go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotLeader {
    pub error: String,
    /// Always `not_leader`.
    pub code: String,
    pub leader_id: NodeId,
    pub leader_addr: String,
}
