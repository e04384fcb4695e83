//! Failover plan steps as configured under `[[group.step]]`.
//!
//! Steps are read from a TOML table by hand rather than through serde so that every unknown
//! key, missing field and bad value of every step is reported together, each named by its path.
//! The executors that carry these steps out live in `crate::actions`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::{check_host_port, duration, Errors};

#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    pub name: String,
    pub timeout: Duration,
    pub retries: u32,
    pub on_failure: OnFailure,
    pub kind: StepKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// The plan stops and waits for an operator.
    Stop,
    /// The failure is journaled and the plan goes on (e.g. a notification).
    Continue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Route53(Route53Step),
    Rfc2136(Rfc2136Step),
    OpenStorage(OpenStorageStep),
    Webhook(WebhookStep),
    Command(CommandStep),
}

impl StepKind {
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Route53(_) => "route53",
            StepKind::Rfc2136(_) => "rfc2136",
            StepKind::OpenStorage(_) => "openstorage",
            StepKind::Webhook(_) => "webhook",
            StepKind::Command(_) => "command",
        }
    }

    /// The secret files this step reads, with the config field each comes from.
    pub fn secret_files(&self) -> Vec<(&'static str, &std::path::Path)> {
        match self {
            StepKind::Route53(s) => s.credentials_file.iter().map(|f| ("credentials_file", f.as_path())).collect(),
            StepKind::Rfc2136(s) => vec![("key_file", s.key_file.as_path())],
            StepKind::OpenStorage(s) => s.token_file.iter().map(|f| ("token_file", f.as_path())).collect(),
            StepKind::Webhook(s) => s.secret_file.iter().map(|f| ("secret_file", f.as_path())).collect(),
            StepKind::Command(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route53Step {
    pub zone_id: String,
    /// Fully qualified, with the trailing dot.
    pub record: String,
    pub record_type: String,
    pub ttl: u32,
    /// Record values per site of the group.
    pub values: BTreeMap<String, Vec<String>>,
    /// Weighted records: the set identifier of each site's record. Empty for a plain record.
    pub set_identifiers: BTreeMap<String, String>,
    /// The weight the survivor's record gets (the failed site's gets 0).
    pub weight: u32,
    /// Endpoint override, for tests and Route 53-compatible APIs.
    pub endpoint: Option<Url>,
    pub region: String,
    /// A profile of the shared AWS config and credentials files.
    pub profile: Option<String>,
    /// A shared-credentials-format file; otherwise the AWS default chain.
    pub credentials_file: Option<PathBuf>,
}

impl Route53Step {
    /// The TXT record that carries the group's epoch: beside, not at, the record (a CNAME
    /// allows no other type at its name).
    pub fn epoch_record(&self) -> String {
        format!("_witness-epoch.{}", self.record)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rfc2136Step {
    pub server: String,
    /// Fully qualified, with the trailing dot.
    pub zone: String,
    /// Fully qualified, with the trailing dot, inside `zone`.
    pub record: String,
    pub record_type: String,
    pub ttl: u32,
    pub key_file: PathBuf,
    pub values: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenStorageStep {
    pub endpoint: Url,
    pub token_file: Option<PathBuf>,
    /// Cluster domain name per site of the group.
    pub domains: BTreeMap<String, String>,
    pub tolerate_unreachable_failed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookStep {
    pub url: Url,
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandStep {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Reads typed fields out of one step's table, remembering which keys were used so that the
/// rest can be reported as unknown.
struct Fields<'a> {
    prefix: &'a str,
    table: toml::Table,
    used: BTreeSet<String>,
}

impl<'a> Fields<'a> {
    fn take(&mut self, key: &str) -> Option<toml::Value> {
        self.used.insert(key.to_string());
        self.table.get(key).cloned()
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// A duration; a bare number is refused with the unit hint, like the node's own durations.
    fn duration(&mut self, key: &str, default: Duration, e: &mut Errors) -> Duration {
        let text = match self.take(key) {
            None => return default,
            Some(toml::Value::Integer(n)) => n.to_string(),
            Some(toml::Value::Float(n)) => n.to_string(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                e.add(self.path(key), format!("expected a duration such as \"30s\", found {}", other.type_str()));
                return default;
            }
        };
        duration::parse(&text).unwrap_or_else(|msg| {
            e.add(self.path(key), msg);
            default
        })
    }

    fn string(&mut self, key: &str, e: &mut Errors) -> Option<String> {
        match self.take(key)? {
            toml::Value::String(s) if !s.trim().is_empty() => Some(s),
            toml::Value::String(_) => {
                e.add(self.path(key), "empty string");
                None
            }
            other => {
                e.add(self.path(key), format!("expected a string, found {}", other.type_str()));
                None
            }
        }
    }

    fn required_string(&mut self, key: &str, hint: &str, e: &mut Errors) -> String {
        let present = self.table.contains_key(key);
        let v = self.string(key, e);
        if !present {
            e.add(self.path(key), format!("missing; {hint}"));
        }
        v.unwrap_or_default()
    }

    fn integer(&mut self, key: &str, default: u32, e: &mut Errors) -> u32 {
        match self.take(key) {
            None => default,
            Some(toml::Value::Integer(i)) if (0..=i64::from(u32::MAX)).contains(&i) => i as u32,
            Some(other) => {
                e.add(self.path(key), format!("expected a non-negative integer, found {other}"));
                default
            }
        }
    }

    fn boolean(&mut self, key: &str, default: bool, e: &mut Errors) -> bool {
        match self.take(key) {
            None => default,
            Some(toml::Value::Boolean(b)) => b,
            Some(other) => {
                e.add(self.path(key), format!("expected true or false, found {other}"));
                default
            }
        }
    }

    fn url(&mut self, key: &str, required: bool, e: &mut Errors) -> Option<Url> {
        let present = self.table.contains_key(key);
        let text = self.string(key, e);
        if required && !present {
            e.add(self.path(key), "missing; give an http:// or https:// URL");
        }
        let text = text?;
        match Url::parse(&text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                e.add(self.path(key), format!("invalid URL {text:?}: must be http:// or https:// with a host"));
                None
            }
            Err(err) => {
                e.add(self.path(key), format!("invalid URL {text:?}: {err}"));
                None
            }
        }
    }

    fn strings(&mut self, key: &str, e: &mut Errors) -> Vec<String> {
        match self.take(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    toml::Value::String(s) => Some(s),
                    other => {
                        e.add(format!("{}[{i}]", self.path(key)), format!("expected a string, found {other}"));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                e.add(self.path(key), format!("expected an array of strings, found {other}"));
                Vec::new()
            }
        }
    }

    /// A table keyed by the group's two sites, e.g. `values = { east = ["192.0.2.1"], west = [...] }`.
    fn per_site<T>(
        &mut self,
        key: &str,
        sites: &[&str],
        e: &mut Errors,
        mut convert: impl FnMut(&str, toml::Value, &mut Errors) -> Option<T>,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let table = match self.take(key) {
            None => {
                e.add(
                    self.path(key),
                    format!("missing; give a value for each site of the group: {}", sites.join(", ")),
                );
                return out;
            }
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                e.add(self.path(key), format!("expected a table keyed by site name, found {other}"));
                return out;
            }
        };
        for (site, value) in table {
            let field = format!("{}.{site}", self.path(key));
            if !sites.contains(&site.as_str()) {
                e.add(field, format!("{site:?} is not a site of this group ({})", sites.join(", ")));
                continue;
            }
            if let Some(v) = convert(&field, value, e) {
                out.insert(site, v);
            }
        }
        for site in sites.iter().filter(|s| !s.is_empty()) {
            if !out.contains_key(*site) {
                e.add(self.path(key), format!("no value for site {site:?}"));
            }
        }
        out
    }

    fn finish(self, e: &mut Errors) {
        for key in self.table.keys().filter(|k| !self.used.contains(*k)) {
            e.add(format!("{}.{key}", self.prefix), "unknown field");
        }
    }
}

fn string_list(field: &str, value: toml::Value, e: &mut Errors) -> Option<Vec<String>> {
    match value {
        toml::Value::Array(items) if !items.is_empty() => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    toml::Value::String(s) => out.push(s),
                    other => e.add(field, format!("expected strings, found {other}")),
                }
            }
            Some(out)
        }
        other => {
            e.add(field, format!("expected a non-empty array of strings, found {other}"));
            None
        }
    }
}

/// A DNS name with its trailing dot (names in the DNS APIs are absolute).
fn fqdn(name: String) -> String {
    if name.is_empty() || name.ends_with('.') {
        name
    } else {
        name + "."
    }
}

fn in_zone(record: &str, zone: &str) -> bool {
    let (record, zone) = (record.to_ascii_lowercase(), zone.to_ascii_lowercase());
    zone == "." || record == zone || record.ends_with(&format!(".{zone}"))
}

/// A site's values for a record of `record_type`: addresses of the right family, or (CNAME)
/// exactly one name.
fn record_values(record_type: &str, field: &str, value: toml::Value, e: &mut Errors) -> Option<Vec<String>> {
    let values = string_list(field, value, e)?;
    for v in &values {
        let ok = match record_type {
            "A" => v.parse::<std::net::Ipv4Addr>().is_ok(),
            "AAAA" => v.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => !v.is_empty() && !v.contains(char::is_whitespace),
        };
        if !ok {
            e.add(field, format!("{v:?} is not a valid {record_type} value"));
            return None;
        }
    }
    if record_type == "CNAME" && values.len() != 1 {
        e.add(field, "a CNAME has exactly one value");
        return None;
    }
    Some(values)
}

fn record_type(f: &mut Fields, e: &mut Errors) -> String {
    let t = f.string("type", e).unwrap_or_else(|| "A".into());
    if !matches!(t.as_str(), "A" | "AAAA" | "CNAME") {
        e.add(f.path("type"), format!("unsupported record type {t:?}: expected \"A\", \"AAAA\" or \"CNAME\""));
    }
    t
}

pub(super) fn validate(prefix: &str, table: toml::Table, sites: &[&str], e: &mut Errors) -> Option<StepConfig> {
    let mut f = Fields { prefix, table, used: BTreeSet::new() };
    let name = f.required_string("name", "give the step a name unique within the group", e);
    if !name.is_empty() {
        if let Err(msg) = super::check_name(&name) {
            e.add(f.path("name"), msg);
        }
    }
    let timeout = f.duration("timeout", Duration::from_secs(30), e);
    if timeout.is_zero() {
        e.add(f.path("timeout"), "must be greater than 0s");
    }
    let retries = f.integer("retries", 3, e);
    let on_failure = match f.string("on_failure", e).as_deref() {
        None | Some("stop") => OnFailure::Stop,
        Some("continue") => OnFailure::Continue,
        Some(other) => {
            e.add(f.path("on_failure"), format!("invalid value {other:?}: expected \"stop\" or \"continue\""));
            OnFailure::Stop
        }
    };
    let kind_name = f.string("kind", e);
    let kind = match kind_name.as_deref() {
        Some("route53") => {
            let record = fqdn(f.required_string("record", "give the record name, e.g. \"app.example.com.\"", e));
            let record_type = record_type(&mut f, e);
            let ttl = f.integer("ttl", 60, e);
            let values = f.per_site("values", sites, e, |field, v, e| record_values(&record_type, field, v, e));
            let set_identifiers = if f.table.contains_key("set_identifiers") {
                f.per_site("set_identifiers", sites, e, |field, v, e| match v {
                    toml::Value::String(s) if !s.is_empty() => Some(s),
                    other => {
                        e.add(field, format!("expected a set identifier, found {other}"));
                        None
                    }
                })
            } else {
                BTreeMap::new()
            };
            StepKind::Route53(Route53Step {
                zone_id: f.required_string("zone_id", "give the hosted zone id", e),
                record,
                record_type,
                ttl,
                values,
                set_identifiers,
                weight: f.integer("weight", 100, e),
                endpoint: f.url("endpoint", false, e),
                region: f.string("region", e).unwrap_or_else(|| "us-east-1".into()),
                profile: f.string("profile", e),
                credentials_file: f.string("credentials_file", e).map(PathBuf::from),
            })
        }
        Some("rfc2136") => {
            let server = f.required_string("server", "give the primary nameserver's host:port", e);
            if !server.is_empty() {
                if let Err(msg) = check_host_port(&server) {
                    e.add(f.path("server"), msg);
                }
            }
            let zone = fqdn(f.required_string("zone", "give the zone, e.g. \"example.com.\"", e));
            let record = fqdn(f.required_string("record", "give the record name", e));
            if zone.len() > 1 && record.len() > 1 && !in_zone(&record, &zone) {
                e.add(f.path("record"), format!("{record:?} is not inside zone {zone:?}"));
            }
            let record_type = record_type(&mut f, e);
            StepKind::Rfc2136(Rfc2136Step {
                server,
                zone,
                record,
                ttl: f.integer("ttl", 60, e),
                key_file: PathBuf::from(f.required_string("key_file", "give the TSIG key file", e)),
                values: f.per_site("values", sites, e, |field, v, e| record_values(&record_type, field, v, e)),
                record_type,
            })
        }
        Some("openstorage") => StepKind::OpenStorage(OpenStorageStep {
            endpoint: f.url("endpoint", true, e).unwrap_or_else(|| Url::parse("http://invalid").expect("static URL")),
            token_file: f.string("token_file", e).map(PathBuf::from),
            domains: f.per_site("domains", sites, e, |field, v, e| match v {
                toml::Value::String(s) if !s.is_empty() => Some(s),
                other => {
                    e.add(field, format!("expected a cluster domain name, found {other}"));
                    None
                }
            }),
            tolerate_unreachable_failed: f.boolean("tolerate_unreachable_failed", false, e),
        }),
        Some("webhook") => StepKind::Webhook(WebhookStep {
            url: f.url("url", true, e).unwrap_or_else(|| Url::parse("http://invalid").expect("static URL")),
            secret_file: f.string("secret_file", e).map(PathBuf::from),
        }),
        Some("command") => StepKind::Command(CommandStep {
            program: f.required_string("program", "give the program to run", e),
            args: f.strings("args", e),
            env: match f.take("env") {
                None => BTreeMap::new(),
                Some(toml::Value::Table(t)) => t
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        toml::Value::String(s) => Some((k, s)),
                        other => {
                            e.add(format!("{}.{k}", f.path("env")), format!("expected a string, found {other}"));
                            None
                        }
                    })
                    .collect(),
                Some(other) => {
                    e.add(f.path("env"), format!("expected a table of strings, found {other}"));
                    BTreeMap::new()
                }
            },
        }),
        other => {
            e.add(
                f.path("kind"),
                format!(
                    "{}: expected one of \"route53\", \"rfc2136\", \"openstorage\", \"webhook\", \"command\"",
                    match other {
                        None => "missing".to_string(),
                        Some(k) => format!("unknown step kind {k:?}"),
                    }
                ),
            );
            f.finish(e);
            return None;
        }
    };
    f.finish(e);
    Some(StepConfig { name, timeout, retries, on_failure, kind })
}
