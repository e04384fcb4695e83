//! Tests for config parsing and validation: one valid base config, then many single-fault
//! mutations of it, each expected to be reported under one exact field path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The initial members of the base config, kept separate so that cases can replace them whole.
const BASE_MEMBERS: &str = r#"initial_members = [
  { id = 1, addr = "127.0.0.1:7401" },
  { id = 2, addr = "127.0.0.1:7402" },
  { id = 3, addr = "127.0.0.1:7403" },
]"#;

/// A valid config: node 1 of 3, plain HTTP, sites `east` (http probe) and `west` (tcp probe),
/// one group `app` with a `webhook` step and a `command` step. Every line a case edits is
/// unique in this text (`replace` checks that).
fn base_toml() -> String {
    format!(
        r#"
[node]
id = 1
listen = "127.0.0.1:7401"

[cluster]
name = "test"
{BASE_MEMBERS}

[transport]
plain_http = true

[[site]]
name = "east"
[[site.probe]]
kind = "http"
url = "http://127.0.0.1:8081/healthz"

[[site]]
name = "west"
[[site.probe]]
kind = "tcp"
addr = "127.0.0.1:8082"

[[group]]
name = "app"
primary = "east"
secondary = "west"
replication = "sync"
rto = "5m"
rpo = "0s"
failover = "automatic"

[[group.step]]
name = "notify"
kind = "webhook"
url = "http://127.0.0.1:9000/hook"
on_failure = "continue"

[[group.step]]
name = "promote"
kind = "command"
program = "/usr/local/bin/promote"
args = ["--site", "west"]
"#
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("x.toml"))
}

/// The field errors of an invalid config; panics (showing the input) on success or on a
/// parse error, since every caller expects validation to be what fails.
fn field_errors(text: &str) -> Vec<FieldError> {
    match parse(text) {
        Err(ConfigError::Invalid { errors, .. }) => errors,
        Err(other) => panic!("expected validation errors, got: {other}\n--- config ---\n{text}"),
        Ok(_) => {
            panic!("expected validation errors, but the config is valid\n--- config ---\n{text}")
        }
    }
}

fn show(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

const HASH: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HASH2: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn leak(text: String) -> &'static str {
    text.leak()
}

/// A `[[token]]` table.
fn token(name: &str, role: &str, hash: &str) -> &'static str {
    leak(format!("[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nhash = \"{hash}\""))
}

/// One edit of the base text.
#[derive(Clone, Copy)]
enum Edit {
    /// Replace the one occurrence of the first string by the second.
    Replace(&'static str, &'static str),
    /// Append text (new sections) at the end.
    Append(&'static str),
}
use Edit::{Append, Replace};

fn apply(base: &str, edits: &[Edit]) -> String {
    let mut text = base.to_string();
    for edit in edits {
        match *edit {
            Replace(from, to) => {
                let n = text.matches(from).count();
                assert_eq!(n, 1, "edit target {from:?} occurs {n} times, expected exactly once");
                text = text.replacen(from, to, 1);
            }
            Append(more) => {
                text.push('\n');
                text.push_str(more);
            }
        }
    }
    text
}

#[test]
fn base_config_is_valid() {
    let config = match parse(&base_toml()) {
        Ok(c) => c,
        Err(e) => panic!("base config should be valid: {e}"),
    };

    assert_eq!(config.node.id, 1);
    assert_eq!(config.node.listen, "127.0.0.1:7401".parse().unwrap());
    assert_eq!(config.node.advertise, "127.0.0.1:7401", "advertise defaults to listen");
    assert_eq!(config.node.data_dir, PathBuf::from("data/node1"));

    assert_eq!(config.cluster.name, "test");
    assert_eq!(config.cluster.initial_members.len(), 3);
    assert_eq!(config.cluster.initial_members[&NodeId(1)], "127.0.0.1:7401");
    assert_eq!(config.cluster.raft, RaftTiming::default());
    assert_eq!(config.cluster.raft.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(config.cluster.raft.quorum_loss_probe_interval, Duration::from_secs(6));
    assert!(config.transport.plain_http);

    assert_eq!(config.sites.len(), 2);
    let east = config.site("east").expect("site east");
    assert_eq!(east.probe_interval, Duration::from_secs(1));
    assert_eq!(east.probe_timeout, Duration::from_millis(500));
    assert_eq!(east.failure_threshold, 3);
    assert_eq!(east.success_threshold, 2);
    assert!(matches!(&east.probes[..], [ProbeTarget::Http { expect_status: 200, .. }]));
    let west = config.site("west").expect("site west");
    assert_eq!(west.probes, vec![ProbeTarget::Tcp { addr: "127.0.0.1:8082".into() }]);

    let group = &config.groups[0];
    assert_eq!(group.name, "app");
    assert_eq!((group.primary.as_str(), group.secondary.as_str()), ("east", "west"));
    assert_eq!(group.replication, ReplicationMode::Sync);
    assert_eq!(group.failover, FailoverMode::Automatic);
    assert_eq!(group.rto, Duration::from_secs(300));
    assert_eq!(group.rpo, Duration::ZERO);
    assert_eq!(group.hold_down, Duration::from_secs(2));
    assert_eq!(group.drill_every, None, "no drill cadence unless asked");
    assert_eq!(group.block_after_failover, Duration::from_secs(3600));

    let [notify, promote] = &group.steps[..] else {
        panic!("expected two steps, got {:?}", group.steps);
    };
    assert_eq!(notify.name, "notify");
    assert_eq!(notify.on_failure, OnFailure::Continue);
    assert_eq!(notify.timeout, Duration::from_secs(30));
    assert_eq!(notify.retries, 3);
    assert!(matches!(&notify.kind, StepKind::Webhook(WebhookStep { url, secret_file: None })
        if url.as_str() == "http://127.0.0.1:9000/hook"));
    assert_eq!(promote.on_failure, OnFailure::Stop);
    assert_eq!(
        promote.kind,
        StepKind::Command(CommandStep {
            program: "/usr/local/bin/promote".into(),
            args: vec!["--site".into(), "west".into()],
            env: Default::default(),
        })
    );
}

#[test]
fn explicit_advertise_and_data_dir_are_kept() {
    let text = apply(
        &base_toml(),
        &[Replace(
            r#"listen = "127.0.0.1:7401""#,
            "listen = \"0.0.0.0:7401\"\nadvertise = \"127.0.0.1:7401\"\ndata_dir = \"/var/lib/witness\"",
        )],
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("should be valid: {e}"));
    assert_eq!(config.node.listen, "0.0.0.0:7401".parse().unwrap());
    assert_eq!(config.node.advertise, "127.0.0.1:7401");
    assert_eq!(config.node.data_dir, PathBuf::from("/var/lib/witness"));
}

/// A valid third step, appended to group `app`, for the route53 cases.
const ROUTE53_STEP: &str = r#"
[[group.step]]
name = "dns"
kind = "route53"
zone_id = "Z123"
record = "app.example.com."
"#;

#[test]
fn each_bad_config_is_reported_under_its_field() {
    // (what is wrong, edits of the base config, expected field, substring of the message)
    let cases: &[(&str, &[Edit], &str, &str)] = &[
        // ---- node
        ("node.id = 0", &[Replace("[node]\nid = 1", "[node]\nid = 0")], "node.id", "node ids start at 1"),
        ("node.id missing", &[Replace("[node]\nid = 1\n", "[node]\n")], "node.id", "missing"),
        ("node.listen missing", &[Replace("listen = \"127.0.0.1:7401\"\n", "")], "node.listen", "missing"),
        (
            "node.listen is host:port, not ip:port",
            &[Replace(r#"listen = "127.0.0.1:7401""#, r#"listen = "localhost:7401""#)],
            "node.listen",
            "expected ip:port",
        ),
        (
            "node.listen without a port",
            &[Replace(r#"listen = "127.0.0.1:7401""#, r#"listen = "127.0.0.1""#)],
            "node.listen",
            "invalid socket address",
        ),
        (
            "wildcard listen without advertise",
            &[Replace(r#"listen = "127.0.0.1:7401""#, r#"listen = "0.0.0.0:7401""#)],
            "node.advertise",
            "wildcard",
        ),
        (
            "IPv6 wildcard listen without advertise",
            &[Replace(r#"listen = "127.0.0.1:7401""#, r#"listen = "[::]:7401""#)],
            "node.advertise",
            "wildcard",
        ),
        (
            "advertise without a port",
            &[Replace(r#"listen = "127.0.0.1:7401""#, "listen = \"127.0.0.1:7401\"\nadvertise = \"node1.example\"")],
            "node.advertise",
            "expected host:port",
        ),
        (
            "empty data_dir",
            &[Replace(r#"listen = "127.0.0.1:7401""#, "listen = \"127.0.0.1:7401\"\ndata_dir = \"  \"")],
            "node.data_dir",
            "empty path",
        ),
        // ---- cluster
        (
            "bad cluster name",
            &[Replace(r#"name = "test""#, r#"name = "Test Cluster""#)],
            "cluster.name",
            "invalid name",
        ),
        ("empty initial_members", &[Replace(BASE_MEMBERS, "initial_members = []")], "cluster.initial_members", "empty"),
        ("initial_members absent", &[Replace(BASE_MEMBERS, "")], "cluster.initial_members", "empty"),
        (
            "duplicate member id",
            &[Replace("{ id = 3, addr", "{ id = 2, addr")],
            "cluster.initial_members[2].id",
            "duplicate member id 2",
        ),
        (
            "member id 0",
            &[Replace("{ id = 3, addr", "{ id = 0, addr")],
            "cluster.initial_members[2].id",
            "node ids start at 1",
        ),
        (
            "duplicate member addr",
            &[Replace(r#"addr = "127.0.0.1:7403""#, r#"addr = "127.0.0.1:7402""#)],
            "cluster.initial_members[2].addr",
            "duplicate member address",
        ),
        (
            "member addr with port 0",
            &[Replace(r#"addr = "127.0.0.1:7403""#, r#"addr = "127.0.0.1:0""#)],
            "cluster.initial_members[2].addr",
            "port must be 1-65535",
        ),
        (
            "member addr missing",
            &[Replace(r#"{ id = 3, addr = "127.0.0.1:7403" }"#, "{ id = 3 }")],
            "cluster.initial_members[2].addr",
            "missing",
        ),
        (
            "own member addr differs from (defaulted) advertise",
            &[Replace(r#"{ id = 1, addr = "127.0.0.1:7401" }"#, r#"{ id = 1, addr = "10.0.0.1:7401" }"#)],
            "cluster.initial_members[0].addr",
            "they must match",
        ),
        (
            "own member addr differs from explicit advertise",
            &[Replace(
                r#"listen = "127.0.0.1:7401""#,
                "listen = \"127.0.0.1:7401\"\nadvertise = \"node1.example:7401\"",
            )],
            "cluster.initial_members[0].addr",
            "node.advertise is \"node1.example:7401\"",
        ),
        // ---- cluster.raft
        (
            "duration without unit",
            &[Append("[cluster.raft]\nheartbeat_interval = \"5\"")],
            "cluster.raft.heartbeat_interval",
            "missing unit",
        ),
        (
            "duration with a spaced, unknown unit",
            &[Append("[cluster.raft]\nsnapshot_interval = \"5 sec\"")],
            "cluster.raft.snapshot_interval",
            "unknown unit",
        ),
        (
            "heartbeat equal to election_timeout_min",
            &[Append("[cluster.raft]\nheartbeat_interval = \"1500ms\"")],
            "cluster.raft.election_timeout_min",
            "must be greater than heartbeat_interval 1500ms",
        ),
        (
            "heartbeat above election_timeout_min",
            &[Append("[cluster.raft]\nheartbeat_interval = \"2s\"")],
            "cluster.raft.election_timeout_min",
            "must be greater than heartbeat_interval 2s",
        ),
        (
            "heartbeat 0s",
            &[Append("[cluster.raft]\nheartbeat_interval = \"0s\"")],
            "cluster.raft.heartbeat_interval",
            "greater than 0s",
        ),
        (
            "election_timeout_max equal to min",
            &[Append("[cluster.raft]\nelection_timeout_max = \"1500ms\"")],
            "cluster.raft.election_timeout_max",
            "must be greater than election_timeout_min",
        ),
        (
            "election_timeout_max below min",
            &[Append("[cluster.raft]\nelection_timeout_min = \"2s\"\nelection_timeout_max = \"1s\"")],
            "cluster.raft.election_timeout_max",
            "must be greater than election_timeout_min",
        ),
        (
            "quorum_loss_probe_interval just under 2x election max",
            &[Append("[cluster.raft]\nquorum_loss_probe_interval = \"5999ms\"")],
            "cluster.raft.quorum_loss_probe_interval",
            "at least 2 x election_timeout_max (6s)",
        ),
        (
            "election max raised without raising quorum_loss_probe_interval",
            &[Append("[cluster.raft]\nelection_timeout_max = \"4s\"")],
            "cluster.raft.quorum_loss_probe_interval",
            "at least 2 x election_timeout_max (8s)",
        ),
        (
            "snapshot_interval under 1s",
            &[Append("[cluster.raft]\nsnapshot_interval = \"500ms\"")],
            "cluster.raft.snapshot_interval",
            "too short",
        ),
        (
            "snapshot_max_entries 0",
            &[Append("[cluster.raft]\nsnapshot_max_entries = 0")],
            "cluster.raft.snapshot_max_entries",
            "at least 1",
        ),
        // ---- transport
        (
            "no TLS and no plain_http (no [transport])",
            &[Replace("[transport]\nplain_http = true\n", "")],
            "transport",
            "or plain_http = true for development only",
        ),
        (
            "plain_http = false and no certificates",
            &[Replace("plain_http = true", "plain_http = false")],
            "transport",
            "give cert, key and ca",
        ),
        (
            "plain_http with certificates",
            &[Replace("plain_http = true", "plain_http = true\ncert = \"n.crt\"")],
            "transport.plain_http",
            "choose one",
        ),
        (
            "cert without key and ca",
            &[Replace("plain_http = true", "cert = \"n.crt\"")],
            "transport.key",
            "go together",
        ),
        // ---- auth
        (
            "anonymous operator",
            &[Append("[auth]\nanonymous = \"operator\"")],
            "auth.anonymous",
            "only \"viewer\"",
        ),
        ("metrics switch", &[Append("[auth]\nmetrics = \"public\"")], "auth.metrics", "\"open\" or \"viewer\""),
        (
            "token role for an unknown site",
            &[Append(token("t", "site:north", HASH))],
            "token[0].role",
            "unknown site \"north\"",
        ),
        ("token role misspelt", &[Append(token("t", "root", HASH))], "token[0].role", "invalid role"),
        ("token hash malformed", &[Append(token("t", "viewer", "sha256:abc"))], "token[0].hash", "64 hex digits"),
        ("token hash missing", &[Append("[[token]]\nname = \"t\"\nrole = \"viewer\"")], "token[0].hash", "missing"),
        (
            "two names for one token",
            &[Append(leak(format!("{}\n{}", token("a", "viewer", HASH), token("b", "admin", HASH))))],
            "token[1].hash",
            "listed twice",
        ),
        (
            "duplicate token name",
            &[Append(leak(format!("{}\n{}", token("a", "viewer", HASH), token("a", "admin", HASH2))))],
            "token[1].name",
            "duplicate token name",
        ),
        // ---- sites
        (
            "duplicate site name",
            &[Append("[[site]]\nname = \"east\"\n[[site.probe]]\nkind = \"tcp\"\naddr = \"127.0.0.1:9999\"")],
            "site[2].name",
            "duplicate site name \"east\"",
        ),
        (
            "site name with uppercase and underscore",
            &[Replace(r#"name = "east""#, r#"name = "East_1""#)],
            "site[0].name",
            "invalid name \"East_1\"",
        ),
        (
            "site name ending with '-'",
            &[Replace(r#"name = "west""#, r#"name = "west-""#)],
            "site[1].name",
            "invalid name",
        ),
        (
            "site name missing",
            &[Append("[[site]]\n[[site.probe]]\nkind = \"tcp\"\naddr = \"127.0.0.1:9999\"")],
            "site[2].name",
            "missing",
        ),
        ("site without probes", &[Append("[[site]]\nname = \"north\"")], "site[2].probe", "no probe targets"),
        (
            "probe_interval with unknown unit",
            &[Replace(r#"name = "east""#, "name = \"east\"\nprobe_interval = \"5 sec\"")],
            "site[0].probe_interval",
            "unknown unit",
        ),
        (
            "probe_timeout greater than probe_interval",
            &[Replace(r#"name = "east""#, "name = \"east\"\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"")],
            "site[0].probe_timeout",
            "at most probe_interval 1s",
        ),
        (
            "probe_timeout 0s",
            &[Replace(r#"name = "east""#, "name = \"east\"\nprobe_timeout = \"0s\"")],
            "site[0].probe_timeout",
            "greater than 0s",
        ),
        (
            "failure_threshold 0",
            &[Replace(r#"name = "east""#, "name = \"east\"\nfailure_threshold = 0")],
            "site[0].failure_threshold",
            "at least 1",
        ),
        (
            "success_threshold 0",
            &[Replace(r#"name = "west""#, "name = \"west\"\nsuccess_threshold = 0")],
            "site[1].success_threshold",
            "at least 1",
        ),
        // ---- probes
        (
            "unknown probe kind",
            &[Replace(r#"kind = "http""#, r#"kind = "icmp""#)],
            "site[0].probe[0].kind",
            "unknown probe kind \"icmp\"",
        ),
        ("probe kind missing", &[Replace("kind = \"http\"\n", "")], "site[0].probe[0].kind", "missing"),
        (
            "http probe with an ftp URL",
            &[Replace(r#"url = "http://127.0.0.1:8081/healthz""#, r#"url = "ftp://127.0.0.1/healthz""#)],
            "site[0].probe[0].url",
            "must be http:// or https://",
        ),
        (
            "http probe with an unparseable URL",
            &[Replace(r#"url = "http://127.0.0.1:8081/healthz""#, r#"url = "127.0.0.1:8081/healthz""#)],
            "site[0].probe[0].url",
            "invalid URL",
        ),
        (
            "http probe without url",
            &[Replace("url = \"http://127.0.0.1:8081/healthz\"\n", "")],
            "site[0].probe[0].url",
            "missing",
        ),
        (
            "http probe given an addr",
            &[Replace(
                r#"url = "http://127.0.0.1:8081/healthz""#,
                "url = \"http://127.0.0.1:8081/healthz\"\naddr = \"127.0.0.1:8081\"",
            )],
            "site[0].probe[0].addr",
            "not used by kind = \"http\"",
        ),
        (
            "http probe with an impossible expect_status",
            &[Replace(
                r#"url = "http://127.0.0.1:8081/healthz""#,
                "url = \"http://127.0.0.1:8081/healthz\"\nexpect_status = 700",
            )],
            "site[0].probe[0].expect_status",
            "invalid HTTP status 700",
        ),
        (
            "ca_file on a plain http probe",
            &[Replace(
                r#"url = "http://127.0.0.1:8081/healthz""#,
                "url = \"http://127.0.0.1:8081/healthz\"\nca_file = \"/etc/ca.pem\"",
            )],
            "site[0].probe[0].ca_file",
            "only meaningful with an https:// url",
        ),
        (
            "tcp probe addr without port",
            &[Replace(r#"addr = "127.0.0.1:8082""#, r#"addr = "127.0.0.1""#)],
            "site[1].probe[0].addr",
            "expected host:port",
        ),
        (
            "tcp probe addr with a non-numeric port",
            &[Replace(r#"addr = "127.0.0.1:8082""#, r#"addr = "db:postgres""#)],
            "site[1].probe[0].addr",
            "port must be 1-65535",
        ),
        (
            "tcp probe addr with an empty host",
            &[Replace(r#"addr = "127.0.0.1:8082""#, r#"addr = ":8082""#)],
            "site[1].probe[0].addr",
            "expected host:port with a DNS name",
        ),
        ("tcp probe without addr", &[Replace("addr = \"127.0.0.1:8082\"\n", "")], "site[1].probe[0].addr", "missing"),
        (
            "tcp probe given a url",
            &[Replace(r#"addr = "127.0.0.1:8082""#, "addr = \"127.0.0.1:8082\"\nurl = \"http://127.0.0.1:8082/\"")],
            "site[1].probe[0].url",
            "not used by kind = \"tcp\"",
        ),
        (
            "tcp probe given expect_status",
            &[Replace(r#"addr = "127.0.0.1:8082""#, "addr = \"127.0.0.1:8082\"\nexpect_status = 200")],
            "site[1].probe[0].expect_status",
            "not used by kind = \"tcp\"",
        ),
        // ---- groups
        (
            "unknown site as primary",
            &[Replace(r#"primary = "east""#, r#"primary = "north""#)],
            "group[0].primary",
            "unknown site \"north\" (configured sites: [east, west])",
        ),
        (
            "unknown site as secondary",
            &[Replace(r#"secondary = "west""#, r#"secondary = "south""#)],
            "group[0].secondary",
            "unknown site \"south\"",
        ),
        ("secondary missing", &[Replace("secondary = \"west\"\n", "")], "group[0].secondary", "missing"),
        (
            "primary equal to secondary",
            &[Replace(r#"secondary = "west""#, r#"secondary = "east""#)],
            "group[0].secondary",
            "is also the primary",
        ),
        (
            "duplicate group name",
            &[Append(
                "[[group]]\nname = \"app\"\nprimary = \"west\"\nsecondary = \"east\"\n\
                 replication = \"sync\"\nrto = \"1m\"\nrpo = \"0s\"\nfailover = \"manual\"",
            )],
            "group[1].name",
            "duplicate group name \"app\"",
        ),
        (
            "group name starting with '-'",
            &[Replace(r#"name = "app""#, r#"name = "-app""#)],
            "group[0].name",
            "invalid name \"-app\"",
        ),
        ("group name with a dot", &[Replace(r#"name = "app""#, r#"name = "my.app""#)], "group[0].name", "invalid name"),
        (
            "replication semi",
            &[Replace(r#"replication = "sync""#, r#"replication = "semi""#)],
            "group[0].replication",
            "invalid value \"semi\": expected \"sync\" or \"async\"",
        ),
        ("replication missing", &[Replace("replication = \"sync\"\n", "")], "group[0].replication", "missing"),
        (
            "failover missing",
            &[Replace("failover = \"automatic\"\n", "")],
            "group[0].failover",
            "missing: expected \"automatic\" or \"manual\"",
        ),
        (
            "failover invalid",
            &[Replace(r#"failover = "automatic""#, r#"failover = "auto""#)],
            "group[0].failover",
            "invalid value \"auto\"",
        ),
        ("rto missing", &[Replace("rto = \"5m\"\n", "")], "group[0].rto", "missing"),
        ("rto 0s", &[Replace(r#"rto = "5m""#, r#"rto = "0s""#)], "group[0].rto", "greater than 0s"),
        ("rpo without unit", &[Replace(r#"rpo = "0s""#, r#"rpo = "5""#)], "group[0].rpo", "missing unit"),
        (
            "rpo 0s with async replication",
            &[Replace(r#"replication = "sync""#, r#"replication = "async""#)],
            "group[0].rpo",
            "0s is impossible with replication = \"async\"",
        ),
        (
            "lease without agents",
            &[Replace(r#"rto = "5m""#, "rto = \"5m\"\nlease = \"1s\"")],
            "group[0].lease",
            "only used with agents = true",
        ),
        (
            "lease too short",
            &[Replace(r#"rto = "5m""#, "rto = \"5m\"\nagents = true\nlease = \"50ms\"")],
            "group[0].lease",
            "too short",
        ),
        (
            "lease margin longer than the lease",
            &[Replace(r#"rto = "5m""#, "rto = \"5m\"\nagents = true\nlease = \"1s\"\nlease_margin = \"2s\"")],
            "group[0].lease_margin",
            "longer than the lease",
        ),
        (
            "in_sync_within with async replication",
            &[
                Replace(r#"replication = "sync""#, r#"replication = "async""#),
                Replace(r#"rpo = "0s""#, "rpo = \"6h\"\nagents = true\nin_sync_within = \"2s\""),
            ],
            "group[0].in_sync_within",
            "only used with replication = \"sync\"",
        ),
        (
            "repair_drift without a plan",
            &[Append(
                "[[group]]\nname = \"db\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
                 rto = \"5m\"\nrpo = \"0s\"\nfailover = \"manual\"\nrepair_drift = true\n",
            )],
            "group[1].repair_drift",
            "no plan steps",
        ),
        (
            "drill_every shorter than an hour",
            &[Replace(r#"rto = "5m""#, "rto = \"5m\"\ndrill_every = \"30m\"")],
            "group[0].drill_every",
            "at least 1h",
        ),
        (
            "drill_every past 400 days",
            &[Replace(r#"rto = "5m""#, "rto = \"5m\"\ndrill_every = \"500d\"")],
            "group[0].drill_every",
            "longer than the maximum of 400d",
        ),
        (
            "hold_down with unknown unit",
            &[Replace(r#"rto = "5m""#, "rto = \"5m\"\nhold_down = \"2secs\"")],
            "group[0].hold_down",
            "unknown unit",
        ),
        // ---- steps
        (
            "unknown step kind",
            &[Replace(r#"kind = "webhook""#, r#"kind = "email""#)],
            "group[0].step[0].kind",
            "unknown step kind \"email\"",
        ),
        ("step kind missing", &[Replace("kind = \"command\"\n", "")], "group[0].step[1].kind", "missing"),
        ("step name missing", &[Replace("name = \"notify\"\n", "")], "group[0].step[0].name", "missing"),
        (
            "step name invalid",
            &[Replace(r#"name = "notify""#, r#"name = "Notify Ops""#)],
            "group[0].step[0].name",
            "invalid name",
        ),
        (
            "step name not a string",
            &[Replace(r#"name = "notify""#, "name = 7")],
            "group[0].step[0].name",
            "expected a string, found integer",
        ),
        (
            "duplicate step names",
            &[Replace(r#"name = "promote""#, r#"name = "notify""#)],
            "group[0].step[1].name",
            "duplicate step name \"notify\"",
        ),
        (
            "step unknown key",
            &[Replace(
                r#"program = "/usr/local/bin/promote""#,
                "program = \"/usr/local/bin/promote\"\ncolour = \"red\"",
            )],
            "group[0].step[1].colour",
            "unknown field",
        ),
        (
            "step key of another kind",
            &[Replace(
                r#"url = "http://127.0.0.1:9000/hook""#,
                "url = \"http://127.0.0.1:9000/hook\"\nprogram = \"/bin/true\"",
            )],
            "group[0].step[0].program",
            "unknown field",
        ),
        (
            "step timeout without unit",
            &[Replace(
                r#"program = "/usr/local/bin/promote""#,
                "program = \"/usr/local/bin/promote\"\ntimeout = \"5\"",
            )],
            "group[0].step[1].timeout",
            "missing unit",
        ),
        (
            "step timeout as a bare number",
            &[Replace(
                r#"program = "/usr/local/bin/promote""#,
                "program = \"/usr/local/bin/promote\"\ntimeout = 5",
            )],
            "group[0].step[1].timeout",
            "missing unit",
        ),
        (
            "step timeout 0s",
            &[Replace(
                r#"program = "/usr/local/bin/promote""#,
                "program = \"/usr/local/bin/promote\"\ntimeout = \"0s\"",
            )],
            "group[0].step[1].timeout",
            "greater than 0s",
        ),
        (
            "step retries negative",
            &[Replace(r#"program = "/usr/local/bin/promote""#, "program = \"/usr/local/bin/promote\"\nretries = -1")],
            "group[0].step[1].retries",
            "non-negative integer",
        ),
        (
            "on_failure invalid",
            &[Replace(r#"on_failure = "continue""#, r#"on_failure = "retry""#)],
            "group[0].step[0].on_failure",
            "invalid value \"retry\": expected \"stop\" or \"continue\"",
        ),
        (
            "webhook url not a URL",
            &[Replace(r#"url = "http://127.0.0.1:9000/hook""#, r#"url = "not a url""#)],
            "group[0].step[0].url",
            "invalid URL \"not a url\"",
        ),
        (
            "webhook url with a non-http scheme",
            &[Replace(r#"url = "http://127.0.0.1:9000/hook""#, r#"url = "mailto:ops@example.com""#)],
            "group[0].step[0].url",
            "must be http:// or https://",
        ),
        (
            "webhook url missing",
            &[Replace("url = \"http://127.0.0.1:9000/hook\"\n", "")],
            "group[0].step[0].url",
            "missing",
        ),
        (
            "command program missing",
            &[Replace("program = \"/usr/local/bin/promote\"\n", "")],
            "group[0].step[1].program",
            "missing",
        ),
        (
            "command args not an array",
            &[Replace(r#"args = ["--site", "west"]"#, r#"args = "--site west""#)],
            "group[0].step[1].args",
            "expected an array of strings",
        ),
        (
            "command args with a non-string item",
            &[Replace(r#"args = ["--site", "west"]"#, r#"args = ["--site", 2]"#)],
            "group[0].step[1].args[1]",
            "expected a string",
        ),
        (
            "command env value not a string",
            &[Replace(r#"args = ["--site", "west"]"#, "env = { RETRIES = 3 }")],
            "group[0].step[1].env.RETRIES",
            "expected a string",
        ),
        (
            "route53 values missing",
            &[Append(ROUTE53_STEP)],
            "group[0].step[2].values",
            "missing; give a value for each site of the group: east, west",
        ),
        (
            "route53 values missing a site of the group",
            &[Append(ROUTE53_STEP), Append(r#"values = { east = ["192.0.2.1"] }"#)],
            "group[0].step[2].values",
            "no value for site \"west\"",
        ),
        (
            "route53 values naming a site not in the group",
            &[
                Append(ROUTE53_STEP),
                Append(r#"values = { east = ["192.0.2.1"], west = ["198.51.100.1"], north = ["203.0.113.1"] }"#),
            ],
            "group[0].step[2].values.north",
            "\"north\" is not a site of this group (east, west)",
        ),
        (
            "route53 values for a site given as an empty list",
            &[Append(ROUTE53_STEP), Append(r#"values = { east = [], west = ["198.51.100.1"] }"#)],
            "group[0].step[2].values.east",
            "expected a non-empty array of strings",
        ),
        (
            "route53 values not a table",
            &[Append(ROUTE53_STEP), Append(r#"values = ["192.0.2.1"]"#)],
            "group[0].step[2].values",
            "expected a table keyed by site name",
        ),
        (
            "route53 unsupported record type",
            &[Append(ROUTE53_STEP), Append("type = \"MX\"\nvalues = { east = [\"a\"], west = [\"b\"] }")],
            "group[0].step[2].type",
            "unsupported record type \"MX\"",
        ),
        (
            "route53 zone_id missing",
            &[Append(
                "[[group.step]]\nname = \"dns\"\nkind = \"route53\"\nrecord = \"app.example.com.\"\n\
                 values = { east = [\"192.0.2.1\"], west = [\"198.51.100.1\"] }",
            )],
            "group[0].step[2].zone_id",
            "missing",
        ),
        (
            "rfc2136 server without port",
            &[Append(
                "[[group.step]]\nname = \"dns\"\nkind = \"rfc2136\"\nserver = \"ns1.example.com\"\n\
                 zone = \"example.com.\"\nrecord = \"app\"\nkey_file = \"/etc/tsig.key\"\n\
                 values = { east = [\"192.0.2.1\"], west = [\"198.51.100.1\"] }",
            )],
            "group[0].step[2].server",
            "expected host:port",
        ),
        (
            "an A record value that is not an IPv4 address",
            &[Append(ROUTE53_STEP), Append(r#"values = { east = ["192.0.2.1"], west = ["2001:db8::1"] }"#)],
            "group[0].step[2].values.west",
            "\"2001:db8::1\" is not a valid A value",
        ),
        (
            "a CNAME with two values",
            &[Append(ROUTE53_STEP), Append("type = \"CNAME\"\nvalues = { east = [\"a.\", \"b.\"], west = [\"c.\"] }")],
            "group[0].step[2].values.east",
            "a CNAME has exactly one value",
        ),
        (
            "route53 weighted records without a set identifier for each site",
            &[
                Append(ROUTE53_STEP),
                Append("values = { east = [\"192.0.2.1\"], west = [\"198.51.100.1\"] }\nset_identifiers = { east = \"e\" }"),
            ],
            "group[0].step[2].set_identifiers",
            "no value for site \"west\"",
        ),
        (
            "rfc2136 record outside its zone",
            &[Append(
                "[[group.step]]\nname = \"dns\"\nkind = \"rfc2136\"\nserver = \"ns1.example.com:53\"\n\
                 zone = \"example.com.\"\nrecord = \"app.example.org\"\nkey_file = \"/etc/tsig.key\"\n\
                 values = { east = [\"192.0.2.1\"], west = [\"198.51.100.1\"] }",
            )],
            "group[0].step[2].record",
            "\"app.example.org.\" is not inside zone \"example.com.\"",
        ),
        (
            "openstorage endpoint missing",
            &[Append(
                "[[group.step]]\nname = \"storage\"\nkind = \"openstorage\"\n\
                 domains = { east = \"dc-east\", west = \"dc-west\" }",
            )],
            "group[0].step[2].endpoint",
            "missing",
        ),
        (
            "openstorage domains missing a site",
            &[Append(
                "[[group.step]]\nname = \"storage\"\nkind = \"openstorage\"\n\
                 endpoint = \"https://px.example.com\"\ndomains = { west = \"dc-west\" }",
            )],
            "group[0].step[2].domains",
            "no value for site \"east\"",
        ),
    ];

    let base = base_toml();
    let mut failures = Vec::new();
    for &(what, edits, field, message) in cases {
        let text = apply(&base, edits);
        let errors = match parse(&text) {
            Err(ConfigError::Invalid { errors, .. }) => errors,
            Err(other) => {
                failures.push(format!("{what}: expected validation errors, got: {other}"));
                continue;
            }
            Ok(_) => {
                failures.push(format!("{what}: expected {field}: ...{message}..., but the config is valid"));
                continue;
            }
        };
        let found = errors.iter().any(|e| e.field == field && e.message.contains(message));
        if !found {
            failures
                .push(format!("{what}: expected an error on {field} containing {message:?}; got:\n{}", show(&errors)));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn all_problems_are_reported_together() {
    let text = apply(
        &base_toml(),
        &[
            Replace("[node]\nid = 1", "[node]\nid = 0"),
            Replace("plain_http = true", "plain_http = true\nca = \"ca.crt\""),
            Replace(r#"name = "east""#, "name = \"east\"\nfailure_threshold = 0"),
            Replace(r#"addr = "127.0.0.1:8082""#, r#"addr = "127.0.0.1""#),
            Replace(r#"primary = "east""#, r#"primary = "north""#),
            Replace(r#"replication = "sync""#, r#"replication = "semi""#),
            Replace(r#"on_failure = "continue""#, r#"on_failure = "retry""#),
            Append("[cluster.raft]\nheartbeat_interval = \"5\"\nelection_timeout_max = \"1s\""),
        ],
    );
    let errors = field_errors(&text);
    let expected = [
        "node.id",
        "transport.plain_http",
        "site[0].failure_threshold",
        "site[1].probe[0].addr",
        "group[0].primary",
        "group[0].replication",
        "group[0].step[0].on_failure",
        "cluster.raft.heartbeat_interval",
        "cluster.raft.election_timeout_max",
    ];
    let missing: Vec<_> = expected.iter().filter(|f| !errors.iter().any(|e| e.field == **f)).collect();
    assert!(missing.is_empty(), "fields not reported: {missing:?}\nall errors:\n{}", show(&errors));

    // The Display of the whole error lists every problem, one per line.
    let shown = parse(&text).unwrap_err().to_string();
    assert!(shown.contains(&format!("has {} problem(s)", errors.len())), "{shown}");
    for field in expected {
        assert!(shown.contains(&format!("  - {field}: ")), "{field} not in:\n{shown}");
    }
}

/// Every unknown field is named by its path, all at once and beside the other problems: a
/// typo in one section does not hide a typo in the next, nor a bad value.
#[test]
fn unknown_fields_are_all_named_with_the_other_problems() {
    let edits: &[Edit] = &[
        Replace("[node]\nid = 1", "[node]\nid = 1\ncolour = \"red\""),
        Append("[logging]\nlevel = \"debug\""),
        Append("[cluster.raft]\nheartbeat = \"250ms\""),
        Replace(r#"name = "east""#, "name = \"east\"\nregion = \"us-east-1\""),
        Replace(r#"kind = "http""#, "kind = \"http\"\nmethod = \"HEAD\""),
        // A bad value as well (a bare number for a duration): reported with the unknown fields.
        Replace(r#"rto = "5m""#, "rto = \"5m\"\npriority = 1\nhold_down = 2"),
        Replace("{ id = 3, addr", "{ id = 3, voter = true, addr"),
    ];
    let text = apply(&base_toml(), edits);
    let Err(ConfigError::Invalid { errors, .. }) = parse(&text) else { panic!("expected problems: {text}") };
    let named: Vec<(&str, &str)> = errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect();
    for field in [
        "node.colour",
        "logging",
        "cluster.raft.heartbeat",
        "site[0].region",
        "site[0].probe[0].method",
        "group[0].priority",
        "cluster.initial_members[2].voter",
    ] {
        assert!(
            named.iter().any(|(f, m)| *f == field && m.starts_with("unknown field")),
            "{field} not named unknown in {named:#?}"
        );
    }
    // A bare number for a duration is refused with the unit hint, like "2" would be.
    let hold_down = named.iter().find(|(f, _)| *f == "group[0].hold_down").expect("hold_down named");
    assert!(hold_down.1.contains("missing unit") && hold_down.1.contains("\"5s\""), "{hold_down:?}");
}

#[test]
fn wrong_types_and_bad_syntax_are_parse_errors() {
    for (what, edits) in [
        ("id as a string", &[Replace("[node]\nid = 1", "[node]\nid = \"1\"")][..]),
        ("plain_http as a string", &[Replace("plain_http = true", "plain_http = \"yes\"")][..]),
        ("unterminated string", &[Replace(r#"name = "app""#, r#"name = "app"#)][..]),
        ("[node] missing", &[Replace("[node]\nid = 1\nlisten = \"127.0.0.1:7401\"\n", "")][..]),
    ] {
        let text = apply(&base_toml(), edits);
        assert!(
            matches!(parse(&text), Err(ConfigError::Parse { .. })),
            "{what}: expected a parse error, got {:?}",
            parse(&text).map(|_| "valid config")
        );
    }
}

#[test]
fn every_shipped_config_file_is_valid() {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|x| x == "toml") {
                out.push(path);
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no *.toml files under {}", dir.display());

    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let result = if name.starts_with("agent") {
                agent::AgentConfig::load(f).map(|_| ())
            } else if name.ends_with("-steps.toml") {
                // A fragment of plan steps: it belongs to the node example's last group.
                let node = std::fs::read_to_string(dir.join("examples/node.toml")).expect("node example");
                let steps = std::fs::read_to_string(f).expect("readable");
                Config::from_toml(&format!("{node}\n{steps}"), f).map(|_| ())
            } else {
                Config::load(f).map(|_| ())
            };
            result.err().map(|e| e.to_string())
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} config files are invalid:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

// ---- Regressions: each of these was a defect once.

#[test]
fn bad_group_duration_is_reported_once() {
    let text = apply(
        &base_toml(),
        &[
            Replace(r#"replication = "sync""#, r#"replication = "async""#),
            Replace(r#"rto = "5m""#, r#"rto = "5""#),
            Replace(r#"rpo = "0s""#, r#"rpo = "30""#),
        ],
    );
    let errors = field_errors(&text);
    for field in ["group[0].rto", "group[0].rpo"] {
        let on_field: Vec<_> = errors.iter().filter(|e| e.field == field).collect();
        assert!(
            on_field.len() == 1 && on_field[0].message.contains("missing unit"),
            "expected one 'missing unit' error on {field}; got:\n{}",
            show(&errors)
        );
    }
}

#[test]
fn nameless_steps_are_not_reported_as_duplicates() {
    let text = apply(&base_toml(), &[Replace("name = \"notify\"\n", ""), Replace("name = \"promote\"\n", "")]);
    let errors = field_errors(&text);
    assert!(
        errors.iter().all(|e| !e.message.contains("duplicate step name")),
        "missing names should only be reported as missing; got:\n{}",
        show(&errors)
    );
}

#[test]
fn member_addr_with_a_scheme_is_rejected() {
    // The transport builds `http://{addr}/raft`, so a scheme here yields `http://http://...`.
    let text = apply(&base_toml(), &[Replace(r#"addr = "127.0.0.1:7402""#, r#"addr = "http://127.0.0.1:7402""#)]);
    let errors = field_errors(&text);
    assert!(
        errors.iter().any(|e| e.field == "cluster.initial_members[1].addr"),
        "expected an error on cluster.initial_members[1].addr; got:\n{}",
        show(&errors)
    );
}

#[test]
fn the_objectives_examples_have_budgets_within_their_objectives() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let patient = Config::load(&dir.join("patient-app.toml")).expect("patient-app example");
    let g = &patient.groups[0];
    assert_eq!(
        (g.replication, g.rpo, g.rto, g.failover),
        (ReplicationMode::Sync, Duration::ZERO, Duration::from_secs(300), FailoverMode::Automatic)
    );
    let budget = budget::rto_budget(&patient, g);
    let stages: Vec<(&str, u128)> = budget.stages.iter().map(|(s, d, _)| (*s, d.as_millis())).collect();
    assert_eq!(
        stages,
        [
            ("detection", 3500),
            ("hold-down", 2000),
            ("lease wait", 2200),
            ("Raft commit", 3000),
            ("plan steps", 90_000),
            ("DNS TTL", 30_000)
        ]
    );
    assert_eq!(budget.total, Duration::from_millis(130_700));
    assert!(budget.within(g.rto));

    let schedule = Config::load(&dir.join("university-schedule.toml")).expect("university-schedule example");
    let g = &schedule.groups[0];
    assert_eq!(
        (g.replication, g.rpo, g.rto, g.failover),
        (ReplicationMode::Async, Duration::from_secs(6 * 3600), Duration::from_secs(3600), FailoverMode::Manual)
    );
    let budget = budget::rto_budget(&schedule, g);
    assert!(budget.within(g.rto), "{budget:?}");
    // Tighten the objective below the budget: it no longer fits.
    assert!(!budget.within(Duration::from_secs(30 * 60)));

    // Both scenarios on Kubernetes (README "On Kubernetes with Portworx and Stork"): each group
    // within its objective, both with agents and a drill cadence.
    let both = Config::load(&dir.join("kubernetes.toml")).expect("kubernetes example");
    let names: Vec<&str> = both.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["patient-app", "schedule"]);
    for g in &both.groups {
        let budget = budget::rto_budget(&both, g);
        assert!(budget.within(g.rto), "{}: {budget:?}", g.name);
        assert!(g.agents.is_some() && g.drill_every.is_some(), "{}", g.name);
    }
}
