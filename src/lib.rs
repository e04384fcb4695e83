//! witness: a quorum arbiter for two-site disaster recovery. See ARCHITECTURE.md for the map.

pub mod config;
pub mod raft;
pub mod state;
