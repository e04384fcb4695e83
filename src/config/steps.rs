//! Failover plan steps as configured under `[[group.step]]`.
//!
//! Steps are read from a TOML table by hand rather than through serde so that every unknown
//! key, missing field and bad value of every step is reported together, each named by its path.
//! The executors that carry these steps out come later; here they are only parsed and checked.

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
    Route53 {
        zone_id: String,
        record: String,
        record_type: String,
        ttl: u32,
        /// Record values per site of the group.
        values: BTreeMap<String, Vec<String>>,
        endpoint: Option<Url>,
    },
    Rfc2136 {
        server: String,
        zone: String,
        record: String,
        record_type: String,
        ttl: u32,
        key_file: PathBuf,
        values: BTreeMap<String, Vec<String>>,
    },
    OpenStorage {
        endpoint: Url,
        token_file: Option<PathBuf>,
        /// Cluster domain name per site of the group.
        domains: BTreeMap<String, String>,
        tolerate_unreachable_failed: bool,
    },
    Webhook {
        url: Url,
        secret_file: Option<PathBuf>,
    },
    Command {
        program: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
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
    let timeout = match f.string("timeout", e) {
        None => Duration::from_secs(30),
        Some(t) => duration::parse(&t).unwrap_or_else(|msg| {
            e.add(f.path("timeout"), msg);
            Duration::from_secs(30)
        }),
    };
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
        Some("route53") => StepKind::Route53 {
            zone_id: f.required_string("zone_id", "give the hosted zone id", e),
            record: f.required_string("record", "give the record name, e.g. \"app.example.com.\"", e),
            record_type: record_type(&mut f, e),
            ttl: f.integer("ttl", 60, e),
            values: f.per_site("values", sites, e, string_list),
            endpoint: f.url("endpoint", false, e),
        },
        Some("rfc2136") => {
            let server = f.required_string("server", "give the primary nameserver's host:port", e);
            if !server.is_empty() {
                if let Err(msg) = check_host_port(&server) {
                    e.add(f.path("server"), msg);
                }
            }
            StepKind::Rfc2136 {
                server,
                zone: f.required_string("zone", "give the zone, e.g. \"example.com.\"", e),
                record: f.required_string("record", "give the record name", e),
                record_type: record_type(&mut f, e),
                ttl: f.integer("ttl", 60, e),
                key_file: PathBuf::from(f.required_string("key_file", "give the TSIG key file", e)),
                values: f.per_site("values", sites, e, string_list),
            }
        }
        Some("openstorage") => StepKind::OpenStorage {
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
        },
        Some("webhook") => StepKind::Webhook {
            url: f.url("url", true, e).unwrap_or_else(|| Url::parse("http://invalid").expect("static URL")),
            secret_file: f.string("secret_file", e).map(PathBuf::from),
        },
        Some("command") => StepKind::Command {
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
        },
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
