//! The Kubernetes path, as far as it can be verified without a cluster (no Kubernetes API
//! server runs here): each site's overlay of `deploy/kubernetes`, with certificates from
//! `witness gen-certs`, renders with `kubectl kustomize` and every manifest validates strictly
//! against Kubernetes 1.32's schema (`kubernetes-validate`); the agent config in each
//! ConfigMap passes the agent's own validation; the Deployment, PodDisruptionBudget and Secret
//! fit together. The readers and hooks of `deploy/kubernetes/bin` run against `kubectl` output
//! recorded in `deploy/kubernetes/fixtures` (written from Stork's published types), and what
//! the readers print is what the agent takes.
//!
//! `scripts/test` installs kubernetes-validate (with PyYAML) into its venv and names it in
//! `WITNESS_KUBERNETES_VALIDATE`; kubectl is the machine's. Without them the manifest test
//! skips loudly, and fails under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kube() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// kubernetes-validate and the venv's python3 beside it, and kubectl; `None` (a loud skip)
/// when missing outside CI.
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let validate = std::env::var_os("WITNESS_KUBERNETES_VALIDATE").map(PathBuf::from);
    let kubectl = Command::new("kubectl").arg("version").arg("--client").output().is_ok_and(|o| o.status.success());
    match validate {
        Some(v) if kubectl && v.exists() => {
            let python = v.parent().expect("a bin directory").join("python3");
            Some((v, python))
        }
        _ => {
            let why = "kubectl or kubernetes-validate (WITNESS_KUBERNETES_VALIDATE) is missing: run scripts/test";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {why}");
            eprintln!("=== SKIPPED {test}: {why} ===");
            None
        }
    }
}

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn each_sites_overlay_renders_validates_and_carries_an_agent_config_the_agent_accepts() {
    const TEST: &str = "each_sites_overlay_renders_validates_and_carries_an_agent_config_the_agent_accepts";
    let Some((validate, python)) = tools(TEST) else { return };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("kubernetes");
    copy_dir(&kube(), &tree);
    // The certificates as the README has the operator make them.
    let certs = dir.path().join("certs");
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_witness")).args([
        "gen-certs",
        "--out",
        certs.to_str().unwrap(),
        "--nodes",
        "3",
        "--sites",
        "main-campus,cloud-dr",
        "--site-hosts",
        "main-campus=witness-agent.main-campus.uni.example",
        "--site-hosts",
        "cloud-dr=witness-agent.cloud-dr.uni.example",
    ]));
    assert!(ok, "{out}");
    for site in ["main-campus", "cloud-dr"] {
        let overlay = tree.join("overlays").join(site);
        // Rendering needs the TLS files: missing, kustomize names the one it lacks.
        let (ok, out) = run(Command::new("kubectl").arg("kustomize").arg(&overlay));
        assert!(!ok && out.contains(&format!("site-{site}.crt")), "{out}");
        let tls = overlay.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        for file in ["ca.crt".to_string(), format!("site-{site}.crt"), format!("site-{site}.key")] {
            std::fs::copy(certs.join(&file), tls.join(&file)).unwrap();
        }
        let (ok, rendered) = run(Command::new("kubectl").arg("kustomize").arg(&overlay));
        assert!(ok, "{rendered}");
        let file = dir.path().join(format!("{site}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let (ok, out) = run(Command::new(&validate).args(["--strict", "-k", "1.32.0"]).arg(&file));
        assert!(ok && !out.contains("ERROR") && !out.contains("WARN"), "{site}: {out}");
        let docs = yaml_docs(&python, &file);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Secret",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
        ] {
            assert!(kinds.contains(&kind), "{site}: no {kind} in {kinds:?}");
        }
        assert_eq!(out.matches("passed").count(), docs.len(), "{site}: every manifest validated: {out}");
        let one = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap();
        let (deployment, pdb, config, secret) =
            (one("Deployment"), one("PodDisruptionBudget"), one("ConfigMap"), one("Secret"));
        assert_eq!(deployment["spec"]["replicas"], 1, "one agent per site");
        assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
        let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
        for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().expect("the budget selects") {
            assert_eq!(pod_labels.get(k), Some(v), "the budget selects the agent's pod");
        }
        // The Deployment mounts the generated (hashed) names; the Secret holds the three files.
        let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().any(|v| v["configMap"]["name"] == config["metadata"]["name"]));
        assert!(volumes.iter().any(|v| v["secret"]["secretName"] == secret["metadata"]["name"]));
        let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["ca.crt", "site.crt", "site.key"]);
        // The agent's own validation of the config it will run with.
        let text = config["data"]["agent.toml"].as_str().unwrap();
        let agent = witness::config::agent::AgentConfig::from_toml(text, Path::new("agent.toml"))
            .unwrap_or_else(|e| panic!("{site}'s agent.toml: {e}"));
        assert_eq!(agent.site, site);
        let groups: Vec<&str> = agent.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(groups, ["patient-app", "schedule"]);
    }
    // The fencing pattern's example validates, and its probe asks the agent's writable route
    // for a group the agents know, on the port and at the address the agent's Service has.
    let example = kube().join("examples/application-readiness.yaml");
    let (ok, out) = run(Command::new(&validate).args(["--strict", "-k", "1.32.0"]).arg(&example));
    assert!(ok && out.matches("passed").count() == 2, "{out}");
    let docs = yaml_docs(&python, &example);
    let probe = &docs[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!((probe["host"].clone(), probe["port"].clone()), (docs[1]["spec"]["clusterIP"].clone(), 7450.into()));
    assert_eq!(probe["path"], "/v1/groups/schedule/writable");
    // The per-namespace grant of the promotion rights renders and validates too.
    let (ok, rendered) = run(Command::new("kubectl").arg("kustomize").arg(tree.join("app-namespace")));
    assert!(ok, "{rendered}");
    let file = dir.path().join("app-namespace.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let (ok, out) = run(Command::new(&validate).args(["--strict", "-k", "1.32.0"]).arg(&file));
    assert!(ok && out.contains("passed"), "{out}");
}

/// The documents of a YAML stream, through PyYAML (kubernetes-validate's own dependency).
fn yaml_docs(python: &Path, file: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let (ok, out) = run(Command::new(python).args(["-c", script]).arg(file));
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Runs one of the shipped scripts with `args` and `WITNESS_ROLE`: its exit status, standard
/// output and standard error.
fn script(name: &str, args: &[&str], role: &str) -> (bool, String, String) {
    let out = Command::new("python3")
        .arg(kube().join("bin").join(name))
        .args(args)
        .env("WITNESS_ROLE", role)
        .env("WITNESS_EPOCH", "7")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn fixture(name: &str) -> String {
    kube().join("fixtures").join(name).to_string_lossy().into()
}

#[test]
fn the_metro_reader_reports_in_sync_only_for_an_active_domain_in_sync_and_names_what_it_cannot_read() {
    let read = |file: &str, extra: &[&str]| {
        let f = fixture(file);
        let mut args = vec!["--from-file", f.as_str()];
        args.extend_from_slice(extra);
        script("witness-px-metro-in-sync", &args, "standby")
    };
    let (ok, out, err) = read("clusterdomainsstatus-in-sync.json", &[]);
    assert!(ok, "{err}");
    let r = witness::agent::parse_replication(&out).expect("what the agent takes");
    assert_eq!((r.in_sync, r.recovery_point_age_ms), (Some(true), None));
    let (ok, out, err) = read("clusterdomainsstatus-resyncing.json", &[]);
    assert!(ok, "{err}");
    assert_eq!(witness::agent::parse_replication(&out).unwrap().in_sync, Some(false));
    assert!(err.contains("dc-west is Active, SyncInProgress"), "{err}");
    // Another domain named: in sync there.
    let (_, out, _) = read("clusterdomainsstatus-resyncing.json", &["--domain", "dc-east"]);
    assert_eq!(witness::agent::parse_replication(&out).unwrap().in_sync, Some(true));
    // Errors name the cause and print nothing the agent could take for a reading.
    for (file, extra, cause) in [
        ("clusterdomainsstatus-old-format.json", &[][..], "no status.clusterDomainInfos"),
        (
            "clusterdomainsstatus-in-sync.json",
            &["--domain", "dc-north"][..],
            "'dc-north' is not in the ClusterDomainsStatus",
        ),
        ("applications.json", &[][..], "expected one ClusterDomainsStatus, found 4"),
    ] {
        let (ok, out, err) = read(file, extra);
        assert!(!ok && out.is_empty() && err.contains(cause), "{file}: {out} {err}");
    }
}

#[test]
fn the_async_reader_reports_the_age_of_the_last_successful_migration() {
    let read = |file: &str, now: &str| {
        let f = fixture(file);
        let args = ["--schedule", "timetable-every-6h", "--namespace", "timetable", "--from-file", &f, "--now", now];
        script("witness-stork-recovery-point", &args, "standby")
    };
    // The newest successful one began at 00:00 (the 06:00 one failed): 7 h 30 m before 07:30.
    let (ok, out, err) = read("migrationschedule.json", "2026-12-06T07:30:00Z");
    assert!(ok, "{err}");
    let r = witness::agent::parse_replication(&out).expect("what the agent takes");
    assert_eq!((r.in_sync, r.recovery_point_age_ms), (None, Some(27_000_000)));
    let (ok, out, err) = read("migrationschedule-never-succeeded.json", "2026-12-06T07:30:00Z");
    assert!(!ok && out.is_empty() && err.contains("no successful migration yet"), "{out} {err}");
    let (ok, _, err) = read("migrationschedule.json", "half past seven");
    assert!(!ok && err.contains("--now 'half past seven' is not an RFC 3339 time"), "{err}");
}

#[test]
fn the_promotion_hooks_act_only_for_an_active_site_and_scale_up_what_stork_stashed() {
    let apps = fixture("applications.json");
    let (ok, out, err) =
        script("witness-scale-up", &["--namespace", "timetable", "--from-file", &apps, "--dry-run"], "active");
    assert!(ok, "{err}");
    let commands: Vec<&str> = out.lines().filter(|l| l.starts_with("kubectl scale")).collect();
    assert_eq!(
        commands,
        [
            "kubectl scale deployment/timetable-web --replicas=3 -n timetable",
            "kubectl scale statefulset/timetable-db --replicas=1 -n timetable"
        ],
        "{out}"
    );
    assert!(out.contains("deployment/timetable-worker: 2 replicas, as stashed (2)"), "{out}");
    assert!(!out.contains("local-only"), "no annotation, not Stork's: left alone");
    for role in ["standby", "fenced", ""] {
        let (ok, out, err) =
            script("witness-scale-up", &["--namespace", "timetable", "--from-file", &apps, "--dry-run"], role);
        assert!(!ok && out.is_empty() && err.contains("not 'active': nothing done"), "{role}: {out} {err}");
    }
    let args = ["--schedule", "timetable-every-6h", "--namespace", "timetable", "--dry-run"];
    let (ok, out, err) = script("witness-stork-failover", &args, "active");
    assert!(ok, "{err}");
    assert!(out.contains("epoch 7: storkctl perform failover -m timetable-every-6h -n timetable --force"), "{out}");
    let (ok, _, err) = script("witness-stork-failover", &args, "standby");
    assert!(!ok && err.contains("not 'active': nothing done"), "{err}");
}
