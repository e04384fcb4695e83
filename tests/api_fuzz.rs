//! The API held to its OpenAPI document by a property-based fuzzer: schemathesis (from PyPI,
//! installed by `scripts/test` into its venv) generates requests for every operation, writes
//! included, from the document a real node serves, and checks every answer against it (status,
//! content type, headers, schema, that bad input is refused and good input accepted) and
//! against `tests/fuzz/witness_checks.py` (refused exactly as the caller's role says). It runs
//! as an operator (the rate limits lifted by the node's config), as an anonymous caller
//! (`anonymous = "none"`: every operation but the open ones answers 401) and as a viewer (every
//! write answers 403), and as site `west` (its own heartbeats only); membership changes run apart, as an admin against a throwaway cluster,
//! so that a removed member cannot end the other runs. Seeds are fixed and printed; each run
//! is bounded in examples and time. Without schemathesis the test says SKIPPED, unless
//! `CI=true`, where it fails.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{creds, Cluster, Setup};

/// The seed of every run, so a failure replays: `schemathesis run ... --seed SEED`.
const SEED: u64 = 20261206;

/// The operations that change the membership, run only against their own cluster.
const MEMBERSHIP: &str = "^/v1/members";

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WITNESS_SCHEMATHESIS") {
        return Some(path.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/schemathesis");
    if venv.is_file() {
        return Some(venv);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "schemathesis is required with CI=true (scripts/test installs it)"
    );
    eprintln!("SKIPPED: schemathesis is not installed (scripts/test installs it into target/test-venv)");
    None
}

/// One schemathesis run against node `url` as `caller` (a token's name, or `anonymous`), with
/// at most `examples` cases per operation and phase, for `seconds` (fuzzing and the stateful
/// phase repeat until then; the time also ends the journal stream, which never ends by
/// itself); `filter` chooses the operations (`--include-path-regex` or
/// `--exclude-path-regex`).
fn fuzz(program: &PathBuf, url: &str, caller: &str, filter: [&str; 2], examples: u32, seconds: u32) {
    let hooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    // schemathesis keeps a cache in its working directory: not in the repository.
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(program);
    cmd.current_dir(scratch.path())
        .arg("--config-file")
        .arg(hooks.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{url}/openapi.json"))
        .args(["--url", url])
        .arg("--tls-verify")
        .arg(&creds().ca)
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", &SEED.to_string()])
        .args(["--max-examples", &examples.to_string(), "--max-time", &seconds.to_string()])
        // One worker: schemathesis's generator is not safe across threads here (Python 3.11).
        .args(["--request-timeout", "20", "--workers", "1"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .args(filter)
        .env("SCHEMATHESIS_HOOKS", "witness_checks")
        .env("PYTHONPATH", &hooks)
        .env("WITNESS_FUZZ_CALLER", caller)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy");
    if caller != "anonymous" {
        cmd.args(["-H", &format!("Authorization: Bearer {}", creds().token(caller))]);
    }
    eprintln!("fuzzing as {caller}: {cmd:?}");
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("run schemathesis");
    let mut report = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut report, &mut text).map(|_| text)
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for schemathesis") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT + Duration::from_secs(seconds.into()) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis ran past {RUN_LIMIT:?} as {caller}: fewer examples, or a hanging request?");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{}", reader.join().expect("report reader").unwrap_or_default());
    eprintln!("fuzzing as {caller} took {:?}", started.elapsed());
    assert!(status.success(), "schemathesis found failures as {caller} (seed {SEED}); its report is above");
}

/// No run may take this much longer than its time.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A one-node cluster to fuzz, started, and its URL. A fuzzer sends thousands of writes a
/// minute: the rate limits, which would answer most with 429, are lifted.
async fn node() -> (Cluster, String) {
    let lifted = Setup { auth_extra: "operator_rate = 100000\nheartbeat_rate = 100000".into(), ..Setup::default() };
    let mut c = Cluster::with(1, 0, lifted);
    c.start_voters(1).await;
    let url = format!("https://{}", c.nodes[0].addr);
    (c, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_document_says_for_every_role() {
    let Some(program) = schemathesis() else { return };
    let (c, url) = node().await;
    tokio::task::spawn_blocking(move || {
        for (caller, examples, seconds) in
            [("operator", 30, 45), ("anonymous", 5, 15), ("viewer", 5, 15), ("west", 10, 15)]
        {
            fuzz(&program, &url, caller, ["--exclude-path-regex", MEMBERSHIP], examples, seconds);
        }
    })
    .await
    .unwrap();
    // Whatever it sent, the node still serves and its state still reads.
    assert!(c.status(1).await.is_some(), "the node answers after the fuzzing: {}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_answers_as_the_document_says() {
    let Some(program) = schemathesis() else { return };
    let (_c, url) = node().await;
    tokio::task::spawn_blocking(move || fuzz(&program, &url, "admin", ["--include-path-regex", MEMBERSHIP], 20, 30))
        .await
        .unwrap();
}
