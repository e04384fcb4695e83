//! witness: a quorum arbiter for two-site disaster recovery. See ARCHITECTURE.md for the map.

pub mod actions;
pub mod agent;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod engine;
pub mod ids;
pub mod keyed;
pub mod leader;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod protocol;
pub mod raft;
pub mod rng;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
