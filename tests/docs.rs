//! The README's config examples are the files `config/examples/node.toml` and
//! `config/examples/plan-steps.toml`, both validated here, so the documented schema cannot drift
//! from the code.

#[test]
fn readme_config_example_is_the_checked_example_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let block = toml_block(&readme, "## Configuration");
    let file = std::fs::read_to_string(format!("{root}/config/examples/node.toml")).unwrap();
    let body: String =
        file.lines().filter(|l| !l.starts_with("# A production-shaped")).map(|l| format!("{l}\n")).collect();
    assert_eq!(block, body, "README.md's config example and config/examples/node.toml differ");
    witness::config::Config::from_toml(&file, std::path::Path::new("config/examples/node.toml"))
        .expect("example validates");
}

#[test]
fn readme_plan_example_is_the_checked_example_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let steps = std::fs::read_to_string(format!("{root}/config/examples/plan-steps.toml")).unwrap();
    assert_eq!(toml_block(&readme, "### The failover plan"), steps, "README.md's plan example and the file differ");
    // The steps belong to the node example's last group.
    let node = std::fs::read_to_string(format!("{root}/config/examples/node.toml")).unwrap();
    let config =
        witness::config::Config::from_toml(&format!("{node}\n{steps}"), std::path::Path::new("plan-steps.toml"))
            .expect("example validates");
    let kinds: Vec<&str> = config.groups[0].steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(kinds, ["webhook", "openstorage", "rfc2136", "route53", "command"]);
}

/// The first TOML block after `heading`.
fn toml_block<'a>(readme: &'a str, heading: &str) -> &'a str {
    let section = &readme[readme.find(heading).unwrap_or_else(|| panic!("{heading} section"))..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    &section[start..start + section[start..].find("```").expect("block end")]
}

/// `witness config check` prints each group's worst-case RTO budget and fails (exit 1) when
/// one exceeds the group's objective; an invalid file exits 2.
#[test]
fn config_check_prints_the_rto_budget_and_fails_when_it_exceeds_the_objective() {
    let root = env!("CARGO_MANIFEST_DIR");
    let check = |path: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_witness"))
            .args(["config", "check", "--config"])
            .arg(path)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let dev = std::path::Path::new(root).join("config/dev/node1.toml");
    let (code, out) = check(&dev);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("group demo: worst-case RTO") && out.contains("within its objective 5m"), "{out}");
    assert!(out.contains("detection") && out.contains("hold-down") && out.contains("plan steps"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let tight = dir.path().join("tight.toml");
    let text = std::fs::read_to_string(&dev).unwrap();
    std::fs::write(&tight, text.replacen("rto = \"5m\"", "rto = \"2s\"", 1)).unwrap();
    let (code, out) = check(&tight);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("EXCEEDS its objective 2s"), "{out}");

    std::fs::write(&tight, "[node]\nid = 0\n").unwrap();
    assert_eq!(check(&tight).0, Some(2));
}

/// The OpenAPI document (served at `/openapi.json`) is generated from the router's own
/// routes: only the node-to-node `/raft/` routes are routed without it; every operation says
/// who may call it, declares its path parameters and lists the error shape for its errors.
#[test]
fn the_openapi_document_covers_the_router() {
    use std::collections::BTreeSet;
    let root = env!("CARGO_MANIFEST_DIR");
    let source = std::fs::read_to_string(format!("{root}/src/api/mod.rs")).unwrap();
    for route in source.split(".route(\"").skip(1) {
        let path = route.split('"').next().unwrap();
        assert!(
            path.starts_with("/raft/"),
            "{path} is routed without `routes!`: it would be missing from the document"
        );
    }
    let doc = serde_json::to_value(witness::api::document()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            let what = format!("{method} {path}");
            assert!(op["x-witness-needs"].is_string(), "{what}: who may call it");
            assert!(op["description"].as_str().is_some_and(|d| !d.is_empty()), "{what}: description");
            let declared: BTreeSet<&str> =
                op["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
            for param in path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
                assert!(declared.contains(param), "{what}: parameter {param} not declared");
            }
            for (status, answer) in op["responses"].as_object().unwrap() {
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                if status.starts_with('4') && !["409", "421"].contains(&status.as_str()) {
                    assert_eq!(schema, "#/components/schemas/Error", "{what}: {status} is an error");
                }
            }
        }
    }
    assert_eq!(operations, 26, "the API's operations");
    assert!(doc["paths"]["/v1/groups/{group}/activate"].is_null(), "retired: `failover --force` covers it");
}

/// Every `witness …` command the README shows (in shell blocks and inline code) names real
/// subcommands and only flags they take: the README's commands cannot drift from the CLI.
/// What each command does is exercised by the integration tests (cluster, failover, plan,
/// agents, security, demo, gen_certs) and `config check` above.
#[test]
fn every_witness_command_in_the_readme_exists_with_its_flags() {
    use std::process::Command;
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let mut commands: Vec<String> = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_shell = matches!(line.trim_start_matches('`'), "sh" | "bash" | "console");
            continue;
        }
        let candidates: Vec<&str> = if in_shell {
            vec![line.trim().trim_start_matches("$ ")]
        } else {
            line.split('`').skip(1).step_by(2).collect()
        };
        for text in candidates {
            let text = text.split(" #").next().unwrap().trim();
            for prefix in ["target/debug/witness ", "target/release/witness ", "cargo run --release -- ", "witness "] {
                if let Some(rest) = text.strip_prefix(prefix) {
                    commands.push(rest.to_string());
                    break;
                }
            }
        }
    }
    assert!(commands.len() > 30, "the README shows {} witness commands", commands.len());
    let help = |path: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_witness")).args(path).arg("--help").output().unwrap();
        assert!(out.status.success(), "witness {} --help failed", path.join(" "));
        String::from_utf8(out.stdout).unwrap()
    };
    let mut wrong = Vec::new();
    for command in &commands {
        let tokens: Vec<String> = command
            .split_whitespace()
            .map(|t| t.trim_matches(|c| c == '[' || c == ']').to_string())
            .filter(|t| !t.is_empty() && t != "&" && t != "|")
            .collect();
        // The subcommand path: words listed under the parent's "Commands:".
        let mut path: Vec<&str> = Vec::new();
        for token in &tokens {
            let text = help(&path);
            let listed = !token.starts_with('-')
                && text.split("Commands:").nth(1).is_some_and(|section| {
                    let mut lines = section.lines().skip(1).take_while(|l| !l.trim().is_empty());
                    lines.any(|l| l.split_whitespace().next() == Some(token.as_str()))
                });
            if !listed {
                break;
            }
            path.push(token);
        }
        if path.is_empty() {
            wrong.push(format!("`witness {command}`: no such subcommand"));
            continue;
        }
        let text = help(&path);
        for flag in tokens.iter().filter(|t| t.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            if !text.contains(&format!("{flag} ")) && !text.contains(&format!("{flag}\n")) {
                wrong.push(format!("`witness {command}`: `witness {}` takes no {flag}", path.join(" ")));
            }
        }
    }
    assert!(wrong.is_empty(), "README commands that do not match the CLI:\n{}", wrong.join("\n"));
}
