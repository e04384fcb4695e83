//! The site agent's config file (`witness agent --config FILE`): TOML → raw structs →
//! validation, every problem named by its field and reported together, like the node's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::{check_host_port, check_name, duration, ConfigError, Errors};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The site this agent speaks for.
    pub site: String,
    pub listen: SocketAddr,
    /// `host:port` of the other site's agent.
    pub peer: String,
    /// `host:port` of every witness node; heartbeats go to the leader among them.
    pub witness: Vec<String>,
    pub heartbeat_interval: Duration,
    /// The peer counts as unreachable after this long without a peer-lease exchange.
    pub peer_timeout: Duration,
    /// Longest a hook or a replication command may run.
    pub hook_timeout: Duration,
    /// Heartbeats to the witness over plain HTTP: development only.
    pub plain_http: bool,
    /// How the agent proves its site to the witness and checks the witness's certificate.
    pub credentials: AgentCredentials,
    pub groups: Vec<AgentGroup>,
    /// A testing aid: every lease this site holds while writable, appended to this file as
    /// `GROUP FROM_NS UNTIL_NS` on the machine's boot-time clock (`clock::Clock::since_boot`),
    /// so that a test can compare two sites' permissions to write exactly.
    pub writable_log: Option<PathBuf>,
}

/// `ca` (required over TLS) and a token file, a client certificate, or both.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentCredentials {
    pub ca: Option<PathBuf>,
    /// This site's certificate (`site-NAME`) and key, presented to the witness.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// A file holding a token with role `site:NAME`.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct AgentGroup {
    pub name: String,
    pub replication: Option<ReplicationSource>,
    pub on_promote: Option<String>,
    pub on_standby: Option<String>,
    pub on_fence: Option<String>,
}

/// Where the agent reads its site's replication state: JSON `{"in_sync": true}` or
/// `{"recovery_point_age_ms": 1234}` from a command's standard output or an HTTP GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationSource {
    Command(String),
    Url(Url),
}

#[derive(Deserialize)]
struct RawAgentConfig {
    agent: RawAgent,
    #[serde(default, rename = "group")]
    groups: Vec<RawAgentGroup>,
}

#[derive(Deserialize)]
struct RawAgent {
    site: Option<String>,
    listen: Option<String>,
    peer: Option<String>,
    #[serde(default)]
    witness: Vec<String>,
    #[serde(default, deserialize_with = "duration::text")]
    heartbeat_interval: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    peer_timeout: Option<String>,
    #[serde(default, deserialize_with = "duration::text")]
    hook_timeout: Option<String>,
    plain_http: Option<bool>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    token_file: Option<String>,
    writable_log: Option<String>,
}

#[derive(Deserialize)]
struct RawAgentGroup {
    name: Option<String>,
    replication_command: Option<String>,
    replication_url: Option<String>,
    on_promote: Option<String>,
    on_standby: Option<String>,
    on_fence: Option<String>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml(&super::read(path)?, path)
    }

    /// `origin` only names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<AgentConfig, ConfigError> {
        super::parse(text, origin, RawAgentConfig::validate)
    }
}

impl RawAgentConfig {
    fn validate(self) -> Result<AgentConfig, Vec<super::FieldError>> {
        let mut e = Errors::default();
        let a = self.agent;
        let site = e.name("agent.site", a.site.as_deref());
        let listen = match a.listen {
            None => {
                e.add("agent.listen", "missing; give the address to serve on, e.g. \"0.0.0.0:7511\"");
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
            Some(text) => text.parse().unwrap_or_else(|_| {
                e.add("agent.listen", format!("invalid socket address {text:?}: expected ip:port"));
                SocketAddr::from(([127, 0, 0, 1], 0))
            }),
        };
        let peer = e.required("agent.peer", a.peer, "give the other site's agent as host:port").unwrap_or_default();
        if !peer.is_empty() {
            if let Err(msg) = check_host_port(&peer) {
                e.add("agent.peer", msg);
            }
        }
        if a.witness.is_empty() {
            e.add("agent.witness", "empty; list every witness node as host:port");
        }
        for (i, w) in a.witness.iter().enumerate() {
            if let Err(msg) = check_host_port(w) {
                e.add(format!("agent.witness[{i}]"), msg);
            }
        }
        let heartbeat_interval =
            e.duration("agent.heartbeat_interval", a.heartbeat_interval.as_deref(), Duration::from_millis(250));
        if heartbeat_interval < Duration::from_millis(10) {
            e.add("agent.heartbeat_interval", "too short: use 10ms or more");
        }
        let peer_timeout = e.duration("agent.peer_timeout", a.peer_timeout.as_deref(), heartbeat_interval * 3);
        if peer_timeout <= heartbeat_interval {
            e.add(
                "agent.peer_timeout",
                format!(
                    "{} must be longer than heartbeat_interval {} (the peer is asked once per interval)",
                    duration::format(peer_timeout),
                    duration::format(heartbeat_interval)
                ),
            );
        }
        let hook_timeout = e.duration("agent.hook_timeout", a.hook_timeout.as_deref(), Duration::from_secs(30));
        let plain_http = a.plain_http.unwrap_or(false);
        let path = |p: Option<String>| p.map(PathBuf::from);
        let cert_and_key = match (path(a.cert), path(a.key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (cert, _) => {
                let missing = if cert.is_none() { "agent.cert" } else { "agent.key" };
                e.add(missing, "missing; cert and key go together");
                None
            }
        };
        let credentials = AgentCredentials { ca: path(a.ca), cert_and_key, token_file: path(a.token_file) };
        if plain_http && (credentials.ca.is_some() || credentials.cert_and_key.is_some()) {
            e.add("agent.plain_http", "plain_http = true turns TLS off, yet ca/cert/key are configured: choose one");
        }
        if !plain_http && credentials.ca.is_none() {
            e.add(
                "agent.ca",
                "missing; give the PEM file of the CA that signed the witness nodes' certificates \
                 (or plain_http = true, development only)",
            );
        }
        if credentials.cert_and_key.is_none() && credentials.token_file.is_none() {
            e.add(
                "agent.token_file",
                format!(
                    "no credentials for the witness: give token_file (a token with role \"site:{site}\") \
                     or cert and key (this site's certificate)"
                ),
            );
        }
        if self.groups.is_empty() {
            e.add("group", "no groups; add a [[group]] for each group this site takes part in");
        }
        let mut names = std::collections::BTreeSet::new();
        let groups = self
            .groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let p = format!("group[{i}]");
                let name = e.name(&format!("{p}.name"), g.name.as_deref());
                if !name.is_empty() && check_name(&name).is_ok() && !names.insert(name.clone()) {
                    e.add(format!("{p}.name"), format!("duplicate group name {name:?}"));
                }
                let replication = match (g.replication_command, g.replication_url) {
                    (Some(_), Some(_)) => {
                        e.add(format!("{p}.replication_url"), "give replication_command or replication_url, not both");
                        None
                    }
                    (Some(cmd), None) => Some(ReplicationSource::Command(cmd)),
                    (None, Some(url)) => match Url::parse(&url) {
                        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(ReplicationSource::Url(u)),
                        _ => {
                            e.add(format!("{p}.replication_url"), format!("invalid URL {url:?}: must be http(s)://"));
                            None
                        }
                    },
                    (None, None) => None,
                };
                for (field, hook) in
                    [("on_promote", &g.on_promote), ("on_standby", &g.on_standby), ("on_fence", &g.on_fence)]
                {
                    if hook.as_deref().is_some_and(|h| h.trim().is_empty()) {
                        e.add(format!("{p}.{field}"), "empty command; leave the field out for no hook");
                    }
                }
                AgentGroup {
                    name,
                    replication,
                    on_promote: g.on_promote,
                    on_standby: g.on_standby,
                    on_fence: g.on_fence,
                }
            })
            .collect();
        if e.0.is_empty() {
            Ok(AgentConfig {
                site,
                listen,
                peer,
                witness: a.witness,
                heartbeat_interval,
                peer_timeout,
                hook_timeout,
                plain_http,
                credentials,
                groups,
                writable_log: a.writable_log.map(PathBuf::from),
            })
        } else {
            Err(e.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[agent]
site = "east"
listen = "127.0.0.1:7511"
peer = "127.0.0.1:7512"
witness = ["127.0.0.1:7401", "127.0.0.1:7402"]
plain_http = true
token_file = "/etc/witness/east.token"

[[group]]
name = "app"
replication_command = "echo '{\"in_sync\": true}'"
on_fence = "systemctl stop app"
"#;

    fn errors(text: &str) -> Vec<String> {
        match AgentConfig::from_toml(text, Path::new("agent.toml")) {
            Err(ConfigError::Invalid { errors, .. }) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => vec![other.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn base_agent_config_is_valid_with_defaults() {
        let c = AgentConfig::from_toml(BASE, Path::new("agent.toml")).expect("valid");
        assert_eq!((c.heartbeat_interval, c.peer_timeout), (Duration::from_millis(250), Duration::from_millis(750)));
        assert_eq!(c.groups[0].replication, Some(ReplicationSource::Command("echo '{\"in_sync\": true}'".into())));
    }

    #[test]
    fn each_bad_agent_config_is_reported_under_its_field() {
        let cases = [
            ("site = \"east\"", "site = \"East\"", "agent.site"),
            ("peer = \"127.0.0.1:7512\"", "peer = \"http://x:1\"", "agent.peer"),
            ("witness = [\"127.0.0.1:7401\", \"127.0.0.1:7402\"]", "witness = []", "agent.witness"),
            ("witness = [\"127.0.0.1:7401\", \"127.0.0.1:7402\"]", "witness = [\"x\"]", "agent.witness[0]"),
            ("listen = \"127.0.0.1:7511\"", "listen = \"localhost\"", "agent.listen"),
            ("plain_http = true", "plain_http = true\nheartbeat_interval = \"5\"", "agent.heartbeat_interval"),
            ("plain_http = true", "plain_http = true\npeer_timeout = \"100ms\"", "agent.peer_timeout"),
            ("plain_http = true", "plain_http = false", "agent.ca"),
            ("plain_http = true", "plain_http = true\nca = \"ca.crt\"", "agent.plain_http"),
            ("plain_http = true", "ca = \"ca.crt\"\ncert = \"site-east.crt\"", "agent.key"),
            ("token_file = \"/etc/witness/east.token\"", "", "agent.token_file"),
            ("on_fence = \"systemctl stop app\"", "on_fence = \" \"", "group[0].on_fence"),
            (
                "on_fence = \"systemctl stop app\"",
                "replication_url = \"http://127.0.0.1:1/r\"",
                "group[0].replication_url",
            ),
            ("name = \"app\"", "name = \"app\"\n[[group]]\nname = \"app\"", "group[1].name"),
        ];
        for (old, new, field) in cases {
            assert_eq!(BASE.matches(old).count(), 1, "{old}");
            assert_eq!(errors(&BASE.replace(old, new)), vec![field.to_string()], "{new}");
        }
    }
}
