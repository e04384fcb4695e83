//! Configuration: TOML text → raw structs → `validate` → [`Config`].
//!
//! Everything a node reads from its config file is checked here and nowhere else. The raw
//! structs accept strings for durations, addresses and modes so that a bad value becomes one
//! named [`FieldError`] among all the others instead of stopping the parse at the first one.
//! Only TOML syntax errors, wrong types and unknown fields are reported one at a time (by the
//! TOML parser, with line and column).

pub mod agent;
pub mod auth;
pub mod budget;
pub mod duration;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

pub use crate::ids::NodeId;

pub use steps::{CommandStep, OnFailure, OpenStorageStep, Rfc2136Step, Route53Step, StepConfig, StepKind, WebhookStep};

/// A validated configuration. Constructed only by [`Config::from_toml`] / [`Config::load`].
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub cluster: ClusterConfig,
    pub transport: Transport,
    pub auth: auth::Auth,
    /// Development conveniences, each logged as a warning at start.
    pub dev: Option<DevConfig>,
    pub sites: Vec<SiteConfig>,
    pub groups: Vec<GroupConfig>,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    /// `host:port` that the other nodes and clients use to reach this node.
    pub advertise: String,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    /// Voters of a brand-new cluster: node id → advertised `host:port`. Read only at bootstrap.
    pub initial_members: BTreeMap<NodeId, String>,
    pub raft: RaftTiming,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RaftTiming {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub pre_vote: bool,
    pub quorum_loss_probe_interval: Duration,
    pub snapshot_interval: Duration,
    pub snapshot_max_entries: u64,
    /// Entries kept in the log behind a snapshot, so that a briefly lagging follower catches
    /// up by replication instead of a full snapshot transfer.
    pub log_keep_after_snapshot: u64,
}

impl Default for RaftTiming {
    /// Tuned for links between sites (tens of ms RTT, occasional loss): see REFERENCE timings.
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1500),
            election_timeout_max: Duration::from_millis(3000),
            pre_vote: true,
            quorum_loss_probe_interval: Duration::from_millis(6000),
            snapshot_interval: Duration::from_secs(600),
            snapshot_max_entries: 10_000,
            log_keep_after_snapshot: 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transport {
    /// Plain HTTP between nodes and for the API. Development only: logged as a warning.
    pub plain_http: bool,
    /// HTTPS for the API and mutual TLS between nodes; `None` exactly when `plain_http`.
    pub tls: Option<TlsFiles>,
}

/// PEM files: this node's certificate chain and key (served to clients and presented to
/// peers), and the cluster CA that signed every node's and site's certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// `[dev]`: the development cluster's credentials, made on first start.
#[derive(Debug, Clone, PartialEq)]
pub struct DevConfig {
    /// A CA and certificates for every initial member and site are generated here when it
    /// does not exist; the transport's files default to this node's in it.
    pub tls_dir: Option<PathBuf>,
    /// An admin token is generated into this file when it does not exist, and accepted.
    pub operator_token: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub name: String,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub probes: Vec<ProbeTarget>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeTarget {
    Http { url: Url, expect_status: u16, body_contains: Option<String>, ca_file: Option<PathBuf> },
    Tcp { addr: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationMode {
    Sync,
    Async,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailoverMode {
    Automatic,
    Manual,
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub name: String,
    pub primary: String,
    pub secondary: String,
    pub replication: ReplicationMode,
    pub rto: Duration,
    pub rpo: Duration,
    pub failover: FailoverMode,
    pub hold_down: Duration,
    pub block_after_failover: Duration,
    /// Site agents take part: leases, peer leases, draining and the RPO gate.
    pub agents: Option<AgentTerms>,
    pub steps: Vec<StepConfig>,
    /// How often the leader checks the plan's steps (jittered), besides at once after a
    /// failover or a change to the steps.
    pub readiness_interval: Duration,
    /// A drill should pass at least this often: `witness_drill_every_seconds`, which the
    /// `WitnessDrillOverdue` alert compares with the last passed drill. Drills never start
    /// by themselves.
    pub drill_every: Option<Duration>,
    /// The leader runs a plan step again by itself when its target drifts from the committed
    /// decision (`witness plan reconcile` without the operator). Off by default: a record
    /// changed by hand may be someone's deliberate act.
    pub repair_drift: bool,
}

impl GroupConfig {
    pub const DEFAULT_READINESS_INTERVAL: Duration = Duration::from_secs(300);
}

/// How a group with site agents is leased and gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTerms {
    /// The witness lease and peer lease length.
    pub lease: Duration,
    /// Added to every lease wait: the bound on clock-rate drift between two machines (and on
    /// scheduling delays) over one lease.
    pub lease_margin: Duration,
    /// Synchronous groups: the survivor must have reported `in_sync` at most this long before
    /// the failure for an automatic failover.
    pub in_sync_within: Duration,
}

impl AgentTerms {
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(1);
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(100);
    pub const DEFAULT_IN_SYNC_WITHIN: Duration = Duration::from_secs(2);
}

/// One problem with one config field: `field` is the path as written in the file
/// (`group[1].primary`, `cluster.raft.heartbeat_interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", errors.len(), list(errors))]
    Invalid { path: PathBuf, errors: Vec<FieldError> },
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

/// Reads a config file, for [`parse`].
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// TOML text → raw struct `R` → `validate`; `origin` only names the source in errors. Unknown
/// fields are reported with the validation's problems, every one of them: the raw structs
/// accept any field, and `serde_ignored` names those nothing read.
pub(crate) fn parse<R: serde::de::DeserializeOwned, T>(
    text: &str,
    origin: &Path,
    validate: impl FnOnce(R) -> Result<T, Vec<FieldError>>,
) -> Result<T, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string().trim_end().to_string(),
    };
    let mut unknown = Vec::new();
    let raw: R = serde_ignored::deserialize(toml::Deserializer::parse(text).map_err(syntax)?, |path| {
        unknown.push(FieldError {
            field: field_path(&path),
            message: "unknown field (misspelt, or in the wrong section?)".into(),
        })
    })
    .map_err(syntax)?;
    match validate(raw) {
        Ok(config) if unknown.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::Invalid { path: origin.to_owned(), errors: unknown }),
        Err(errors) => Err(ConfigError::Invalid { path: origin.to_owned(), errors: [unknown, errors].concat() }),
    }
}

/// A field's path as the config's errors name it: `group[0].hold_down`.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        P::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => field_path(parent),
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read(path)?, path)
    }

    /// `origin` only names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        parse(text, origin, RawConfig::validate)
    }

    pub fn site(&self, name: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw structs: what TOML deserializes into. Strings where a value needs checking.

#[derive(Deserialize)]
struct RawConfig {
    node: RawNode,
    cluster: RawCluster,
    #[serde(default)]
    transport: RawTransport,
    #[serde(default)]
    auth: auth::RawAuth,
    #[serde(default, rename = "token")]
    tokens: Vec<auth::RawToken>,
    dev: Option<RawDev>,
    #[serde(default, rename = "site")]
    sites: Vec<RawSite>,
    #[serde(default, rename = "group")]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
struct RawNode {
    id: Option<u64>,
    listen: Option<String>,
    advertise: Option<String>,
    data_dir: Option<String>,
}

#[derive(Deserialize)]
struct RawCluster {
    name: Option<String>,
    #[serde(default)]
    initial_members: Vec<RawMember>,
    #[serde(default)]
    raft: RawRaft,
}

#[derive(Deserialize)]
struct RawMember {
    id: Option<u64>,
    addr: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawRaft {
    #[serde(default, deserialize_with = "duration::text")]
    heartbeat_interval: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    election_timeout_min: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    election_timeout_max: Option<String>,
    pre_vote: Option<bool>,
    #[serde(default, deserialize_with = "duration::text")]
    quorum_loss_probe_interval: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    snapshot_interval: Option<String>,
    snapshot_max_entries: Option<u64>,
    log_keep_after_snapshot: Option<u64>,
}

#[derive(Deserialize, Default)]
struct RawTransport {
    plain_http: Option<bool>,
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
}

#[derive(Deserialize)]
struct RawDev {
    tls_dir: Option<String>,
    operator_token: Option<String>,
}

#[derive(Deserialize)]
struct RawSite {
    name: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    probe_interval: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    probe_timeout: Option<String>,
    failure_threshold: Option<u32>,
    success_threshold: Option<u32>,
    #[serde(default, rename = "probe")]
    probes: Vec<RawProbe>,
}

#[derive(Deserialize)]
struct RawProbe {
    kind: Option<String>,
    url: Option<String>,
    addr: Option<String>,
    expect_status: Option<u16>,
    body_contains: Option<String>,
    ca_file: Option<String>,
}

#[derive(Deserialize)]
struct RawGroup {
    name: Option<String>,
    primary: Option<String>,
    secondary: Option<String>,
    replication: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    rto: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    rpo: Option<String>,
    failover: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    hold_down: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    block_after_failover: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    readiness_interval: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    drill_every: Option<String>,
    repair_drift: Option<bool>,
    agents: Option<bool>,
    #[serde(default, deserialize_with = "duration::text")]
    lease: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    lease_margin: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    in_sync_within: Option<String>,
    #[serde(default, rename = "step")]
    steps: Vec<toml::Table>,
}

// ---------------------------------------------------------------------------------------------
// Validation: every check appends to one list, so the operator sees all problems at once.

/// Collects field errors while validation walks the raw config.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }

    pub(crate) fn required<T>(&mut self, field: &str, value: Option<T>, hint: &str) -> Option<T> {
        if value.is_none() {
            self.add(field, format!("missing; {hint}"));
        }
        value
    }

    pub(crate) fn duration(&mut self, field: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(text) => duration::parse(text).unwrap_or_else(|e| {
                self.add(field, e);
                default
            }),
        }
    }

    /// A required duration: `None` when missing or malformed (already reported), so callers
    /// check further constraints only on values that parsed.
    pub(crate) fn required_duration(&mut self, field: &str, value: Option<&str>) -> Option<Duration> {
        match value {
            None => {
                self.add(field, "missing; give a duration such as \"30s\" or \"5m\"");
                None
            }
            Some(text) => duration::parse(text).map_err(|e| self.add(field, e)).ok(),
        }
    }

    pub(crate) fn name(&mut self, field: &str, value: Option<&str>) -> String {
        let Some(value) = value else {
            self.add(field, "missing; give a name of lowercase letters, digits and '-'");
            return String::new();
        };
        if let Err(e) = check_name(value) {
            self.add(field, e);
        }
        value.to_string()
    }
}

/// Site and group names appear in URLs, metrics labels and DNS-adjacent places, so they are
/// kept to a conservative alphabet.
pub fn check_name(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {value:?}: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
        ))
    }
}

/// `host:port` with a non-zero port; the host is a DNS name, an IPv4 address or a bracketed
/// IPv6 address. A URL is refused: peers build URLs from this, and `http://http://...` would
/// fail only at run time.
pub fn check_host_port(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!("invalid address {value:?}: expected host:port"));
    };
    let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let host_ok = if bracketed {
        host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if !host_ok {
        return Err(format!(
            "invalid address {value:?}: expected host:port with a DNS name, IPv4 address or [IPv6] address (no scheme or path)"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("invalid address {value:?}: port must be 1-65535")),
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, Vec<FieldError>> {
        let mut e = Errors::default();
        let node = self.node.validate(&mut e);
        let cluster = self.cluster.validate(&node, &mut e);
        let dev = self.dev.map(|d| DevConfig {
            tls_dir: d.tls_dir.map(PathBuf::from),
            operator_token: d.operator_token.map(PathBuf::from),
        });
        let transport = self.transport.validate(node.id.0, dev.as_ref(), &mut e);

        let mut sites = Vec::new();
        let mut site_names = BTreeSet::new();
        for (i, raw) in self.sites.into_iter().enumerate() {
            let site = raw.validate(&format!("site[{i}]"), &mut e);
            if !site.name.is_empty() && !site_names.insert(site.name.clone()) {
                e.add(format!("site[{i}].name"), format!("duplicate site name {:?}", site.name));
            }
            sites.push(site);
        }

        let mut groups = Vec::new();
        let mut group_names = BTreeSet::new();
        for (i, raw) in self.groups.into_iter().enumerate() {
            let group = raw.validate(&format!("group[{i}]"), &site_names, &mut e);
            if !group.name.is_empty() && !group_names.insert(group.name.clone()) {
                e.add(format!("group[{i}].name"), format!("duplicate group name {:?}", group.name));
            }
            groups.push(group);
        }

        let auth = self.auth.validate(self.tokens, &site_names, &mut e);

        if e.0.is_empty() {
            Ok(Config { node, cluster, transport, auth, dev, sites, groups })
        } else {
            Err(e.0)
        }
    }
}

impl RawTransport {
    fn validate(self, node_id: u64, dev: Option<&DevConfig>, e: &mut Errors) -> Transport {
        let plain_http = self.plain_http.unwrap_or(false);
        let dev_dir = dev.and_then(|d| d.tls_dir.as_ref());
        let given = [&self.cert, &self.key, &self.ca].iter().filter(|f| f.is_some()).count();
        if plain_http {
            if given > 0 || dev_dir.is_some() {
                e.add(
                    "transport.plain_http",
                    "plain_http = true turns TLS off, yet certificate files are configured: choose one",
                );
            }
            return Transport { plain_http, tls: None };
        }
        let file = |field: &str, value: Option<String>, dev_name: String, e: &mut Errors| match (value, dev_dir) {
            (Some(path), _) => PathBuf::from(path),
            (None, Some(dir)) => dir.join(dev_name),
            (None, None) => {
                if given > 0 {
                    e.add(format!("transport.{field}"), "missing; cert, key and ca go together");
                }
                PathBuf::new()
            }
        };
        if given == 0 && dev_dir.is_none() {
            e.add(
                "transport",
                "no TLS configured: give cert, key and ca (PEM files; `witness gen-certs` makes a set), \
                 or plain_http = true for development only (no encryption, no peer authentication)",
            );
        }
        let cert = file("cert", self.cert, format!("node-{node_id}.crt"), e);
        let key = file("key", self.key, format!("node-{node_id}.key"), e);
        let ca = file("ca", self.ca, "ca.crt".to_string(), e);
        Transport { plain_http, tls: Some(TlsFiles { cert, key, ca }) }
    }
}

impl RawNode {
    fn validate(self, e: &mut Errors) -> NodeConfig {
        let id = e.required("node.id", self.id, "give this node's numeric id (>= 1)").unwrap_or(0);
        if self.id == Some(0) {
            e.add("node.id", "invalid value 0: node ids start at 1");
        }
        let listen =
            match e.required("node.listen", self.listen, "give the address to listen on, e.g. \"0.0.0.0:7401\"") {
                None => SocketAddr::from(([127, 0, 0, 1], 0)),
                Some(text) => text.parse().unwrap_or_else(|_| {
                    e.add(
                        "node.listen",
                        format!("invalid socket address {text:?}: expected ip:port, e.g. \"127.0.0.1:7401\""),
                    );
                    SocketAddr::from(([127, 0, 0, 1], 0))
                }),
            };
        let advertise = match self.advertise {
            Some(a) => {
                if let Err(msg) = check_host_port(&a) {
                    e.add("node.advertise", msg);
                }
                a
            }
            None => {
                if listen.ip().is_unspecified() {
                    e.add(
                        "node.advertise",
                        format!(
                            "missing; node.listen {listen} is a wildcard, so give the host:port other nodes should use"
                        ),
                    );
                }
                listen.to_string()
            }
        };
        let data_dir = match self.data_dir {
            Some(d) if d.trim().is_empty() => {
                e.add("node.data_dir", "empty path");
                PathBuf::new()
            }
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(format!("data/node{id}")),
        };
        NodeConfig { id: NodeId(id), listen, advertise, data_dir }
    }
}

impl RawCluster {
    fn validate(self, node: &NodeConfig, e: &mut Errors) -> ClusterConfig {
        let name = self.name.unwrap_or_else(|| "witness".into());
        if let Err(msg) = check_name(&name) {
            e.add("cluster.name", msg);
        }
        let mut initial_members = BTreeMap::new();
        let mut addrs = BTreeSet::new();
        if self.initial_members.is_empty() {
            e.add(
                "cluster.initial_members",
                "empty; list the voters of a new cluster, e.g. [{ id = 1, addr = \"10.0.0.1:7401\" }]",
            );
        }
        for (i, m) in self.initial_members.into_iter().enumerate() {
            let field = format!("cluster.initial_members[{i}]");
            let id = e.required(&format!("{field}.id"), m.id, "give the member's node id").unwrap_or(0);
            if m.id == Some(0) {
                e.add(format!("{field}.id"), "invalid value 0: node ids start at 1");
            }
            let addr = e.required(&format!("{field}.addr"), m.addr, "give the member's host:port").unwrap_or_default();
            if !addr.is_empty() {
                if let Err(msg) = check_host_port(&addr) {
                    e.add(format!("{field}.addr"), msg);
                }
                if !addrs.insert(addr.clone()) {
                    e.add(format!("{field}.addr"), format!("duplicate member address {addr:?}"));
                }
            }
            if id != 0 && initial_members.insert(NodeId(id), addr.clone()).is_some() {
                e.add(format!("{field}.id"), format!("duplicate member id {id}"));
            }
            if node.id == id && !addr.is_empty() && addr != node.advertise {
                e.add(
                    format!("{field}.addr"),
                    format!(
                        "{addr:?} is this node (id {id}) but node.advertise is {:?}; they must match",
                        node.advertise
                    ),
                );
            }
        }
        ClusterConfig { name, initial_members, raft: self.raft.validate(e) }
    }
}

impl RawRaft {
    fn validate(self, e: &mut Errors) -> RaftTiming {
        let d = RaftTiming::default();
        let p = "cluster.raft";
        let t = RaftTiming {
            heartbeat_interval: e.duration(
                &format!("{p}.heartbeat_interval"),
                self.heartbeat_interval.as_deref(),
                d.heartbeat_interval,
            ),
            election_timeout_min: e.duration(
                &format!("{p}.election_timeout_min"),
                self.election_timeout_min.as_deref(),
                d.election_timeout_min,
            ),
            election_timeout_max: e.duration(
                &format!("{p}.election_timeout_max"),
                self.election_timeout_max.as_deref(),
                d.election_timeout_max,
            ),
            pre_vote: self.pre_vote.unwrap_or(d.pre_vote),
            quorum_loss_probe_interval: e.duration(
                &format!("{p}.quorum_loss_probe_interval"),
                self.quorum_loss_probe_interval.as_deref(),
                d.quorum_loss_probe_interval,
            ),
            snapshot_interval: e.duration(
                &format!("{p}.snapshot_interval"),
                self.snapshot_interval.as_deref(),
                d.snapshot_interval,
            ),
            snapshot_max_entries: self.snapshot_max_entries.unwrap_or(d.snapshot_max_entries),
            log_keep_after_snapshot: self.log_keep_after_snapshot.unwrap_or(d.log_keep_after_snapshot),
        };
        let fmt = duration::format;
        if t.heartbeat_interval.is_zero() {
            e.add(format!("{p}.heartbeat_interval"), "must be greater than 0s");
        }
        if t.election_timeout_min <= t.heartbeat_interval {
            e.add(
                format!("{p}.election_timeout_min"),
                format!(
                    "{} must be greater than heartbeat_interval {} (at least 3x is advisable)",
                    fmt(t.election_timeout_min),
                    fmt(t.heartbeat_interval)
                ),
            );
        }
        if t.election_timeout_max <= t.election_timeout_min {
            e.add(
                format!("{p}.election_timeout_max"),
                format!(
                    "{} must be greater than election_timeout_min {}",
                    fmt(t.election_timeout_max),
                    fmt(t.election_timeout_min)
                ),
            );
        }
        // openraft requires the probe period to outlast a leader lease plus an election.
        if t.quorum_loss_probe_interval < t.election_timeout_max * 2 {
            e.add(
                format!("{p}.quorum_loss_probe_interval"),
                format!(
                    "{} must be at least 2 x election_timeout_max ({})",
                    fmt(t.quorum_loss_probe_interval),
                    fmt(t.election_timeout_max * 2)
                ),
            );
        }
        if t.snapshot_interval < Duration::from_secs(1) {
            e.add(
                format!("{p}.snapshot_interval"),
                format!("{} is too short: use 1s or more", fmt(t.snapshot_interval)),
            );
        }
        if t.snapshot_max_entries == 0 {
            e.add(format!("{p}.snapshot_max_entries"), "must be at least 1");
        }
        t
    }
}

impl RawSite {
    fn validate(self, p: &str, e: &mut Errors) -> SiteConfig {
        let name = e.name(&format!("{p}.name"), self.name.as_deref());
        let probe_interval =
            e.duration(&format!("{p}.probe_interval"), self.probe_interval.as_deref(), Duration::from_secs(1));
        let probe_timeout =
            e.duration(&format!("{p}.probe_timeout"), self.probe_timeout.as_deref(), Duration::from_millis(500));
        if probe_interval.is_zero() {
            e.add(format!("{p}.probe_interval"), "must be greater than 0s");
        }
        if probe_timeout.is_zero() || probe_timeout > probe_interval {
            e.add(
                format!("{p}.probe_timeout"),
                format!(
                    "{} must be greater than 0s and at most probe_interval {}",
                    duration::format(probe_timeout),
                    duration::format(probe_interval)
                ),
            );
        }
        let failure_threshold = self.failure_threshold.unwrap_or(3);
        let success_threshold = self.success_threshold.unwrap_or(2);
        for (field, v) in [("failure_threshold", failure_threshold), ("success_threshold", success_threshold)] {
            if v == 0 {
                e.add(format!("{p}.{field}"), "must be at least 1");
            }
        }
        if self.probes.is_empty() {
            e.add(
                format!("{p}.probe"),
                "no probe targets; add at least one [[site.probe]] (kind = \"http\" or \"tcp\")",
            );
        }
        let probes = self
            .probes
            .into_iter()
            .enumerate()
            .filter_map(|(i, raw)| raw.validate(&format!("{p}.probe[{i}]"), e))
            .collect();
        SiteConfig { name, probe_interval, probe_timeout, failure_threshold, success_threshold, probes }
    }
}

impl RawProbe {
    fn validate(self, p: &str, e: &mut Errors) -> Option<ProbeTarget> {
        let unexpected = |e: &mut Errors, field: &str, present: bool, kind: &str| {
            if present {
                e.add(format!("{p}.{field}"), format!("not used by kind = {kind:?}"));
            }
        };
        match self.kind.as_deref() {
            Some("http") => {
                unexpected(e, "addr", self.addr.is_some(), "http");
                let url = e.required(&format!("{p}.url"), self.url, "give the URL to GET")?;
                let url = match Url::parse(&url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                    Ok(_) => {
                        e.add(
                            format!("{p}.url"),
                            format!("invalid URL {url:?}: must be http:// or https:// with a host"),
                        );
                        return None;
                    }
                    Err(err) => {
                        e.add(format!("{p}.url"), format!("invalid URL {url:?}: {err}"));
                        return None;
                    }
                };
                let expect_status = self.expect_status.unwrap_or(200);
                if !(100..=599).contains(&expect_status) {
                    e.add(format!("{p}.expect_status"), format!("invalid HTTP status {expect_status}"));
                }
                if self.ca_file.is_some() && url.scheme() != "https" {
                    e.add(format!("{p}.ca_file"), "only meaningful with an https:// url");
                }
                Some(ProbeTarget::Http {
                    url,
                    expect_status,
                    body_contains: self.body_contains,
                    ca_file: self.ca_file.map(PathBuf::from),
                })
            }
            Some("tcp") => {
                for (field, present) in [
                    ("url", self.url.is_some()),
                    ("expect_status", self.expect_status.is_some()),
                    ("body_contains", self.body_contains.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                ] {
                    unexpected(e, field, present, "tcp");
                }
                let addr = e.required(&format!("{p}.addr"), self.addr, "give the host:port to connect to")?;
                if let Err(msg) = check_host_port(&addr) {
                    e.add(format!("{p}.addr"), msg);
                }
                Some(ProbeTarget::Tcp { addr })
            }
            Some(other) => {
                e.add(format!("{p}.kind"), format!("unknown probe kind {other:?}: expected \"http\" or \"tcp\""));
                None
            }
            None => {
                e.add(format!("{p}.kind"), "missing; expected \"http\" or \"tcp\"");
                None
            }
        }
    }
}

impl RawGroup {
    fn validate(self, p: &str, sites: &BTreeSet<String>, e: &mut Errors) -> GroupConfig {
        let name = e.name(&format!("{p}.name"), self.name.as_deref());
        let mut site_ref = |field: &str, value: Option<String>| -> String {
            let f = format!("{p}.{field}");
            match value {
                None => {
                    e.add(f, "missing; give the name of a [[site]]");
                    String::new()
                }
                Some(v) => {
                    if !sites.contains(&v) {
                        let known = sites.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                        e.add(f, format!("unknown site {v:?} (configured sites: [{known}])"));
                    }
                    v
                }
            }
        };
        let primary = site_ref("primary", self.primary);
        let secondary = site_ref("secondary", self.secondary);
        if !primary.is_empty() && primary == secondary {
            e.add(
                format!("{p}.secondary"),
                format!("{secondary:?} is also the primary; a group needs two different sites"),
            );
        }
        let replication = match self.replication.as_deref() {
            Some("sync") => ReplicationMode::Sync,
            Some("async") => ReplicationMode::Async,
            other => {
                e.add(format!("{p}.replication"), format!("{}: expected \"sync\" or \"async\"", describe(other)));
                ReplicationMode::Sync
            }
        };
        let failover = match self.failover.as_deref() {
            Some("automatic") => FailoverMode::Automatic,
            Some("manual") => FailoverMode::Manual,
            other => {
                e.add(format!("{p}.failover"), format!("{}: expected \"automatic\" or \"manual\"", describe(other)));
                FailoverMode::Manual
            }
        };
        let rto = e.required_duration(&format!("{p}.rto"), self.rto.as_deref());
        let rpo = e.required_duration(&format!("{p}.rpo"), self.rpo.as_deref());
        if rto == Some(Duration::ZERO) {
            e.add(format!("{p}.rto"), "must be greater than 0s");
        }
        if replication == ReplicationMode::Async && rpo == Some(Duration::ZERO) {
            e.add(
                format!("{p}.rpo"),
                "0s is impossible with replication = \"async\"; use \"sync\" or the backup interval",
            );
        }
        let hold_down = e.duration(&format!("{p}.hold_down"), self.hold_down.as_deref(), Duration::from_secs(2));
        let block_after_failover = e.duration(
            &format!("{p}.block_after_failover"),
            self.block_after_failover.as_deref(),
            Duration::from_secs(3600),
        );
        let readiness_interval = e.duration(
            &format!("{p}.readiness_interval"),
            self.readiness_interval.as_deref(),
            GroupConfig::DEFAULT_READINESS_INTERVAL,
        );
        if readiness_interval < Duration::from_secs(1) {
            e.add(
                format!("{p}.readiness_interval"),
                "at least 1s: each check calls every step's provider (Route 53 allows a few requests a second)",
            );
        }
        let drill_every = self.drill_every.as_deref().and_then(|text| {
            let field = format!("{p}.drill_every");
            match duration::parse_cadence(text) {
                Ok(d) if d < Duration::from_secs(3600) => {
                    e.add(field, "at least 1h: a drill moves the group to its other site and back");
                    None
                }
                Ok(d) => Some(d),
                Err(why) => {
                    e.add(field, why);
                    None
                }
            }
        });
        let repair_drift = self.repair_drift.unwrap_or(false);
        if repair_drift && self.steps.is_empty() {
            e.add(format!("{p}.repair_drift"), "the group has no plan steps: there is nothing to repair");
        }
        let agents = agent_terms(
            p,
            self.agents,
            [self.lease.as_deref(), self.lease_margin.as_deref(), self.in_sync_within.as_deref()],
            replication,
            e,
        );
        let group_sites = [primary.as_str(), secondary.as_str()];
        let mut step_names = BTreeSet::new();
        let mut steps = Vec::new();
        for (i, table) in self.steps.into_iter().enumerate() {
            let field = format!("{p}.step[{i}]");
            if let Some(step) = steps::validate(&field, table, &group_sites, e) {
                if !step.name.is_empty() && !step_names.insert(step.name.clone()) {
                    e.add(format!("{field}.name"), format!("duplicate step name {:?}", step.name));
                }
                steps.push(step);
            }
        }
        GroupConfig {
            name,
            primary,
            secondary,
            replication,
            rto: rto.unwrap_or_default(),
            rpo: rpo.unwrap_or_default(),
            failover,
            hold_down,
            block_after_failover,
            agents,
            steps,
            readiness_interval,
            drill_every,
            repair_drift,
        }
    }
}

/// A group's `agents`, `lease`, `lease_margin` and `in_sync_within`.
fn agent_terms(
    p: &str,
    agents: Option<bool>,
    [lease, lease_margin, in_sync_within]: [Option<&str>; 3],
    replication: ReplicationMode,
    e: &mut Errors,
) -> Option<AgentTerms> {
    if agents != Some(true) {
        for (field, present) in [
            ("lease", lease.is_some()),
            ("lease_margin", lease_margin.is_some()),
            ("in_sync_within", in_sync_within.is_some()),
        ] {
            if present {
                e.add(format!("{p}.{field}"), "only used with agents = true");
            }
        }
        return None;
    }
    let lease = e.duration(&format!("{p}.lease"), lease, AgentTerms::DEFAULT_LEASE);
    if lease < Duration::from_millis(100) {
        e.add(format!("{p}.lease"), format!("{} is too short: use 100ms or more", duration::format(lease)));
    }
    let lease_margin = e.duration(&format!("{p}.lease_margin"), lease_margin, AgentTerms::DEFAULT_MARGIN);
    if lease_margin > lease {
        e.add(
            format!("{p}.lease_margin"),
            format!(
                "{} is longer than the lease {}: the margin bounds clock drift over one lease",
                duration::format(lease_margin),
                duration::format(lease)
            ),
        );
    }
    if replication == ReplicationMode::Async && in_sync_within.is_some() {
        e.add(format!("{p}.in_sync_within"), "only used with replication = \"sync\" (async groups are gated by rpo)");
    }
    let in_sync_within = e.duration(&format!("{p}.in_sync_within"), in_sync_within, AgentTerms::DEFAULT_IN_SYNC_WITHIN);
    Some(AgentTerms { lease, lease_margin, in_sync_within })
}

fn describe(value: Option<&str>) -> String {
    match value {
        None => "missing".into(),
        Some(v) => format!("invalid value {v:?}"),
    }
}

#[cfg(test)]
mod tests;
