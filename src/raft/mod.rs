//! openraft glue: the type configuration, the durable log store, the state-machine adapter
//! with its snapshot files, and the HTTP transport between nodes (client and routes).
//!
//! This layer knows Raft and storage; it knows nothing of sites, probes or failover rules
//! beyond carrying [`crate::state::Command`]s to [`crate::state::State::apply`].

pub mod links;
pub mod log_store;
pub mod network;
pub mod rpc;
pub mod snapshot_file;
pub mod state_machine;

use std::sync::Arc;

use crate::config::RaftTiming;
use crate::state::{Logged, Response};

openraft::declare_raft_types!(
    /// Raft types of the witness cluster: node ids are [`NodeId`]s (a `u64` on the wire),
    /// nodes are addressed by `host:port`, and log entries carry [`Logged`] commands.
    pub TypeConfig:
        D = Logged,
        R = Response,
        NodeId = NodeId,
);

pub use crate::ids::NodeId;
pub type Node = openraft::BasicNode;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type Payload = openraft::alias::PayloadOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// openraft's configuration from the witness's timing settings.
pub fn openraft_config(cluster_name: &str, t: &RaftTiming) -> anyhow::Result<Arc<openraft::Config>> {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let config = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: ms(t.heartbeat_interval),
        election_timeout_min: ms(t.election_timeout_min),
        election_timeout_max: ms(t.election_timeout_max),
        enable_pre_vote: Some(t.pre_vote),
        quorum_loss_probe_interval: Some(ms(t.quorum_loss_probe_interval)),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_max_entries),
        max_in_snapshot_log_to_keep: t.log_keep_after_snapshot,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}
