//! The README's config example is the file `config/examples/node.toml` (which the config
//! tests parse), so the documented schema cannot drift from the code.

#[test]
fn readme_config_example_is_the_checked_example_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let section = &readme[readme.find("## Configuration").expect("Configuration section")..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("block end")];
    let file = std::fs::read_to_string(format!("{root}/config/examples/node.toml")).unwrap();
    let body: String =
        file.lines().filter(|l| !l.starts_with("# A production-shaped")).map(|l| format!("{l}\n")).collect();
    assert_eq!(block, body, "README.md's config example and config/examples/node.toml differ");
    witness::config::Config::from_toml(&file, std::path::Path::new("config/examples/node.toml"))
        .expect("example validates");
}
