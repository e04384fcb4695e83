//! What `deploy/` ships, checked by the tools that own each format: the systemd unit with
//! `systemd-analyze verify` (and the binary's own readiness notification, which the unit's
//! `Type=notify` relies on), the Prometheus alerting rules with `promtool check rules` and
//! their unit tests with `promtool test rules`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tool's path, or `None` after saying loudly that the test is skipped (never in CI).
fn tool(name: &str, package: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required in CI: scripts/test installs {package}"
        );
        eprintln!("SKIPPED {test}: no {name} (install Debian's {package})");
    }
    found
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = tool("systemd-analyze", "systemd", "the_systemd_unit_verifies") else { return };
    let dir = tempfile::tempdir().unwrap();
    // The unit names the installed binary; point it at the one just built.
    let unit = std::fs::read_to_string(root().join("deploy/systemd/witness.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("User=witness") && unit.contains("StateDirectory=witness"));
    let path = dir.path().join("witness.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/witness", env!("CARGO_BIN_EXE_witness"))).unwrap();
    let (ok, out) = run(Command::new(analyze).arg("verify").arg(&path));
    assert!(ok && !out.contains("witness.service:"), "systemd-analyze verify:\n{out}");
}

#[test]
fn serve_notifies_systemd_when_it_serves_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 1\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[cluster]\nname = \"t\"\n\
             initial_members = [{{ id = 1, addr = \"127.0.0.1:{port}\" }}]\n[transport]\nplain_http = true\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means serving: the API answers.
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(5), "not serving after READY");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: plain kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_alerting_rules_check_and_pass_their_unit_tests() {
    let Some(promtool) = tool("promtool", "prometheus", "the_alerting_rules_check_and_pass_their_unit_tests") else {
        return;
    };
    let dir: &Path = &root().join("deploy/prometheus");
    let (ok, out) = run(Command::new(&promtool).args(["check", "rules", "alerts.yml"]).current_dir(dir));
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(Command::new(&promtool).args(["test", "rules", "alerts_test.yml"]).current_dir(dir));
    assert!(ok, "promtool test rules:\n{out}");
    // Every alert the rules define has a unit test, or says here why not.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let untested = ["WitnessNodeDown", "WitnessFailoverNeedsApproval", "WitnessRPOUnknown"]; // plain thresholds
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(untested.contains(&alert) || tests.contains(alert), "alert {alert} has no promtool unit test");
    }
}

/// Every metric the alerting rules and the Grafana dashboard query is one a node or a site
/// agent exports (histograms by their `_bucket`/`_count`/`_sum` series), so neither can
/// silently go blank.
#[test]
fn the_alerts_and_the_grafana_dashboard_use_only_exported_metrics() {
    let mut exported = String::new();
    // The node's registry and its probes' metrics; then the agent's registry, which only the
    // README's agents scrape job collects.
    for file in ["src/metrics.rs", "src/probe/mod.rs"] {
        exported += &std::fs::read_to_string(root().join(file)).unwrap();
    }
    let by_nodes = exported.clone();
    exported += &std::fs::read_to_string(root().join("src/agent/mod.rs")).unwrap();
    let mut from_agents = Vec::new();
    let grafana = std::fs::read_to_string(root().join("deploy/grafana/witness.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&grafana).expect("the Grafana dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    for (file, text) in [("alerts.yml", &alerts), ("witness.json", &grafana)] {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("witness_") {
            let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[at + name.len()..];
            let base = ["_bucket", "_count", "_sum"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            let quoted = format!("\"{base}\"");
            assert!(exported.contains(&quoted), "{file} uses {name}, which no node or agent exports");
            if !by_nodes.contains(&quoted) {
                from_agents.push(name);
            }
        }
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        from_agents.is_empty() || readme.contains("job_name: witness-agents"),
        "{from_agents:?} come from the agents alone: the README's monitoring step must scrape them"
    );
}

/// No container engine runs here to build the image or a compose validator to parse the file,
/// so this holds them to what they promise: the image is multi-stage and runs as a non-root
/// user; the compose cluster's node configs validate and agree with its services.
#[test]
fn the_container_image_and_the_compose_cluster_hold_together() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/container/Dockerfile")).unwrap();
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage: {stages} FROM lines");
    let user = dockerfile.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as {user}");
    assert!(dockerfile.contains("COPY --from=build") && dockerfile.contains("--locked"));

    let compose = std::fs::read_to_string(root().join("deploy/compose/compose.yaml")).unwrap();
    let mut members = None;
    for i in 1..=3 {
        let path = root().join(format!("deploy/compose/node{i}.toml"));
        let config = witness::config::Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.node.id, i);
        assert!(
            compose.contains(&format!("./node{i}.toml:/etc/witness/witness.toml")),
            "service witness{i} mounts its config"
        );
        assert!(compose.contains(&format!("  witness{i}:")), "service witness{i}");
        let m = config.cluster.initial_members.clone();
        assert!(m.values().all(|addr| compose.contains(&format!("  {}:", addr.split(':').next().unwrap()))));
        assert!(members.replace(m.clone()).is_none_or(|previous| previous == m), "identical member lists");
        for site in &config.sites {
            assert!(compose.contains(&format!("  {}:", site.name)), "a service for site {}", site.name);
        }
    }
}

/// The cloud-init user-data for a witness VM is valid cloud-config, carries the systemd unit of
/// `deploy/systemd` unchanged, and a node config that validates.
#[test]
fn the_cloud_init_user_data_validates_and_carries_the_unit() {
    let path = root().join("deploy/cloud-init/witness-node.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let embedded = |file: &str| -> String {
        let start = text.find(&format!("  - path: {file}\n")).unwrap_or_else(|| panic!("{file} in write_files"));
        let body = &text[start..][text[start..].find("content: |\n").unwrap() + "content: |\n".len()..];
        body.lines()
            .take_while(|l| l.is_empty() || l.starts_with("      "))
            .map(|l| l.strip_prefix("      ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let unit = std::fs::read_to_string(root().join("deploy/systemd/witness.service")).unwrap();
    let unit: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(embedded("/etc/systemd/system/witness.service").trim(), unit.join("\n").trim());
    witness::config::Config::from_toml(&embedded("/etc/witness/witness.toml"), &path).expect("the embedded config");
    let Some(cloud_init) = tool("cloud-init", "cloud-init", "the_cloud_init_user_data_validates_and_carries_the_unit")
    else {
        return;
    };
    let (ok, out) = run(Command::new(cloud_init).args(["schema", "--config-file"]).arg(&path));
    assert!(ok, "cloud-init schema:\n{out}");
}
