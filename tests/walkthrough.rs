//! The README's production walk-through, followed as written, on loopback addresses of their
//! own: three witness nodes (127.0.0.11-13) and two site agents (127.0.0.21-22), with the
//! certificates `witness gen-certs` makes as step 2 says, tokens from `witness token new`,
//! `witness config check` and `witness agent check` passing, and the CLI as step 5 sets it up.
//! It must give a ready cluster whose active site holds a peer lease on the first try.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;
use support::{eventually, SiteStub};

/// Runs `witness ARGS` with the environment step 5 gives the CLI; its exit code and output.
fn witness(env: &[(&str, String)], args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(args)
        .env_remove("WITNESS_CA")
        .env_remove("WITNESS_TOKEN_FILE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run witness");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The processes the walk-through starts, killed when the test ends however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The README's production walk-through: where step 2 copies a node's `ca.crt`, and the
/// `WITNESS_CA` step 5 exports. The test stands its own directory in for the first and sets the
/// second from it, so the two must name the same file.
fn readme_ca_paths() -> (String, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let walk = &readme[readme.find("\n## Production\n").expect("a Production section")..];
    let step = |n: u32| {
        let start = walk.find(&format!("\n{n}. **")).unwrap_or_else(|| panic!("no step {n}"));
        let rest = &walk[start + 1..];
        rest[..rest.find(&format!("\n{}. **", n + 1)).unwrap_or(rest.len())]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (two, five) = (step(2), step(5));
    let copied = two.split("to node N's `").nth(1).and_then(|r| r.split('`').next()).unwrap_or_else(|| panic!("{two}"));
    let exported =
        five.split("WITNESS_CA=").nth(1).and_then(|r| r.split([' ', '`']).next()).unwrap_or_else(|| panic!("{five}"));
    (format!("{copied}ca.crt"), exported.to_string())
}

fn bind(host: &str) -> (TcpListener, String) {
    let listener = TcpListener::bind((host, 0)).unwrap_or_else(|e| panic!("bind {host}: {e}"));
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_walk_through_gives_working_peer_leases_on_the_first_try() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tls = dir.join("witness-tls");
    let tls_arg = tls.to_str().unwrap();
    let (east_site, west_site) = (SiteStub::start().await, SiteStub::start().await);
    let nodes: Vec<(TcpListener, String)> = ["127.0.0.11", "127.0.0.12", "127.0.0.13"].map(bind).into();
    let agents: Vec<(TcpListener, String)> = ["127.0.0.21", "127.0.0.22"].map(bind).into();

    // Step 5's WITNESS_CA is the ca.crt step 2 copied (the CA's key stays offline).
    let (copied, exported) = readme_ca_paths();
    assert_eq!(exported, copied, "step 5's WITNESS_CA is not where step 2 copies ca.crt");
    let ca_file = std::path::Path::new(&exported).file_name().unwrap();

    // Step 2: the certificates, with every node address and each site's agent address.
    let (code, out) = witness(
        &[],
        &[
            "gen-certs",
            "--out",
            tls_arg,
            "--nodes",
            "3",
            "--sites",
            "east,west",
            "--hosts",
            "127.0.0.11,127.0.0.12,127.0.0.13",
            "--site-hosts",
            "east=127.0.0.21",
            "--site-hosts",
            "west=127.0.0.22",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "step 2 as written draws no warning: {out}");

    // Step 3: a token for the person on call; its [[token]] block goes into every config.
    let token = dir.join("oncall.token");
    let (code, block) =
        witness(&[], &["token", "new", "--name", "oncall", "--role", "operator", "--out", token.to_str().unwrap()]);
    assert_eq!(code, 0, "{block}");

    // Step 4: one config per node, identical but for [node] and [transport]; checked.
    let members: Vec<String> =
        nodes.iter().enumerate().map(|(i, (_, addr))| format!("{{ id = {}, addr = \"{addr}\" }}", i + 1)).collect();
    let mut processes = Processes(Vec::new());
    for (i, (listener, addr)) in nodes.iter().enumerate() {
        let id = i + 1;
        let t = tls.display();
        let config = format!(
            r#"[node]
id = {id}
listen = "{addr}"
advertise = "{addr}"
data_dir = "{data}"

[cluster]
name = "walk-through"
initial_members = [{members}]

[transport]
cert = "{t}/node-{id}.crt"
key = "{t}/node-{id}.key"
ca = "{t}/ca.crt"

{block}

[[site]]
name = "east"
probe_interval = "200ms"
probe_timeout = "150ms"
[[site.probe]]
kind = "http"
url = "{east}"

[[site]]
name = "west"
probe_interval = "200ms"
probe_timeout = "150ms"
[[site.probe]]
kind = "http"
url = "{west}"

[[group]]
name = "app"
primary = "east"
secondary = "west"
replication = "sync"
rpo = "0s"
rto = "5m"
failover = "automatic"
agents = true
"#,
            data = dir.join(format!("data-{id}")).display(),
            members = members.join(", "),
            block = block.trim(),
            east = east_site.url(),
            west = west_site.url(),
        );
        let path = dir.join(format!("node-{id}.toml"));
        std::fs::write(&path, config).unwrap();
        let (code, out) = witness(&[], &["config", "check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "config check of node {id}: {out}");
        // Step 5: run it (here on the socket bound for it, as systemd's socket would be).
        processes.0.push(support::spawn("serve", &path, listener, &dir.join(format!("node-{id}.log"))));
    }
    let endpoints: Vec<String> = nodes.iter().map(|(_, addr)| format!("https://{addr}")).collect();
    let env = [
        ("WITNESS_ENDPOINT", endpoints.join(",")),
        ("WITNESS_CA", tls.join(ca_file).display().to_string()),
        ("WITNESS_TOKEN_FILE", token.display().to_string()),
    ];
    eventually(Duration::from_secs(30), "witness status: ready", || async {
        let (code, _) = witness(&env, &["status"]);
        (code == 0).then_some(())
    })
    .await;

    // Step 6: an agent at each site with its site certificate.
    let witness_list: Vec<String> = nodes.iter().map(|(_, addr)| format!("\"{addr}\"")).collect();
    let mut agent_configs = Vec::new();
    for (i, site) in ["east", "west"].into_iter().enumerate() {
        let t = tls.display();
        let config = format!(
            r#"[agent]
site = "{site}"
listen = "{listen}"
peer = "{peer}"
witness = [{witness}]
ca = "{t}/ca.crt"
cert = "{t}/site-{site}.crt"
key = "{t}/site-{site}.key"

[[group]]
name = "app"
replication_command = "echo '{{\"in_sync\": true}}'"
"#,
            listen = agents[i].1,
            peer = agents[1 - i].1,
            witness = witness_list.join(", "),
        );
        let path = dir.join(format!("agent-{site}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("agent-{site}.log"));
        processes.0.push(support::spawn("agent", &path, &agents[i].0, &log));
        agent_configs.push(path);
    }

    // The active site holds a peer lease, and `witness status` says nothing is missing.
    let status = eventually(Duration::from_secs(20), "east active with a peer lease", || async {
        let (_, out) = witness(&env, &["status", "--json"]);
        let s: Value = serde_json::from_str(&out).ok()?;
        let east = &s["groups"][0]["agents"]["sites"]["east"];
        (east["role"] == "active" && east["peer_lease_ms"].as_u64()? > 0).then_some(s)
    })
    .await;
    assert!(status["groups"][0]["agents"].get("without_peer_lease").is_none(), "{status}");
    for site in ["east", "west"] {
        assert!(status["groups"][0]["agents"]["sites"][site].get("peer_problem").is_none(), "{status}");
    }
    let (code, out) = witness(&env, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("NO PEER LEASE") && !out.contains("PEER LINK") && !out.contains("FAILING"), "{out}");
    assert!(!out.contains("differs from what the cluster registered"), "{out}");

    // Step 6's check at each site, once both run: everything passes.
    for path in &agent_configs {
        let (code, out) = witness(&[], &["agent", "check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {out}", path.display());
        assert_eq!(out.matches("ok       witness node").count(), 3, "{out}");
        assert!(out.contains("ok       peer-lease link"), "{out}");
    }
}
