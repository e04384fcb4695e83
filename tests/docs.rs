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
