//! The `rfc2136` step against a real BIND 9: each test starts its own `named` on a free
//! loopback port with a zone `example.test.` that key `witness-key` may update.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::dns::Named;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use witness::actions::{rfc2136, StepContext, StepResult};
use witness::config::Rfc2136Step;

const EAST: &str = support::dns::APP_ADDRESS;
const WEST: &str = "198.51.100.7";
const OTHER: &str = "203.0.113.9";
const RECORD: &str = "app.example.test";

/// `app.example.test. A` at `named`: east's value `east`, west's `west`, signed with `key`.
fn at(named: &Named, east: &str, west: &str, key: PathBuf) -> Rfc2136Step {
    step(&named.server(), key, east, west)
}

fn step(server: &str, key_file: PathBuf, east: &str, west: &str) -> Rfc2136Step {
    Rfc2136Step {
        server: server.to_string(),
        zone: "example.test.".into(),
        record: "app.example.test.".into(),
        record_type: "A".into(),
        ttl: 60,
        key_file,
        values: BTreeMap::from([
            ("east".to_string(), vec![east.to_string()]),
            ("west".to_string(), vec![west.to_string()]),
        ]),
    }
}

fn east_to_west() -> StepContext {
    StepContext {
        group: "app".into(),
        epoch: 2,
        from: "east".into(),
        to: "west".into(),
        reason: "east is down".into(),
        decided_at_ms: 0,
        step: "dns".into(),
    }
}

async fn bounded(attempt: impl std::future::Future<Output = StepResult>) -> StepResult {
    tokio::time::timeout(Duration::from_secs(30), attempt).await.expect("the step did not finish within 30s")
}

#[tokio::test]
async fn flips_the_record_and_a_rerun_changes_nothing() {
    let Some(named) = Named::start("flips_the_record_and_a_rerun_changes_nothing").await else { return };
    let step = at(&named, EAST, WEST, named.key_file());
    let done = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}\n{}", named.log()));
    assert_eq!(done, format!("app.example.test. A -> {WEST} (was {EAST})"));
    assert_eq!(named.dig(RECORD, "A"), [WEST]);

    let again = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, format!("app.example.test. already {WEST}"));
    assert_eq!(named.dig(RECORD, "A"), [WEST]);
}

#[tokio::test]
async fn a_key_with_another_secret_is_refused() {
    let Some(named) = Named::start("a_key_with_another_secret_is_refused").await else { return };
    let step = at(&named, EAST, WEST, named.wrong_key_file());
    let err = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("refused the key named witness-key"), "{err}");
    assert_eq!(named.dig(RECORD, "A"), [EAST]);

    let err = bounded(rfc2136::check(&step)).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("refused the key named witness-key"), "{err}");
}

#[tokio::test]
async fn a_record_changed_by_someone_else_is_left_alone() {
    let Some(named) = Named::start("a_record_changed_by_someone_else_is_left_alone").await else { return };
    let elsewhere = at(&named, EAST, OTHER, named.key_file());
    bounded(rfc2136::run(&elsewhere, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(named.dig(RECORD, "A"), [OTHER]);

    let err = bounded(rfc2136::run(&at(&named, EAST, WEST, named.key_file()), &east_to_west())).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains(&format!("app.example.test. holds {OTHER}, neither east ({EAST})")), "{err}");
    assert!(err.message.contains(&format!("nor west ({WEST})")), "{err}");
    assert_eq!(named.dig(RECORD, "A"), [OTHER]);
}

/// A whole site failing over: updates of many records arriving together go as one message,
/// yet each keeps its own compare-and-swap. Twenty clean records flip in one update; of the
/// next twenty, one changed by hand fails alone (the server refuses the whole message, then
/// each update is sent again by itself) while the others flip.
#[tokio::test]
async fn updates_arriving_together_go_as_one_and_each_keeps_its_own_answer() {
    let Some(named) = Named::start("updates_arriving_together_go_as_one_and_each_keeps_its_own_answer").await else {
        return;
    };
    let record =
        |i: usize| Rfc2136Step { record: format!("app{i}.example.test."), ..at(&named, EAST, WEST, named.key_file()) };
    let flip = |range: std::ops::RangeInclusive<usize>| {
        futures::future::join_all(range.map(|i| {
            let step = record(i);
            async move { (i, bounded(rfc2136::run(&step, &east_to_west())).await) }
        }))
    };
    let started = std::time::Instant::now();
    let results = flip(1..=20).await;
    eprintln!("20 updates of one zone at once: {:?}", started.elapsed());
    let mut together = 0;
    for (i, result) in results {
        let name = format!("app{i}.example.test");
        let done = result.unwrap_or_else(|e| panic!("{name}: {e}\n{}", named.log()));
        assert!(done.starts_with(&format!("{name}. A -> {WEST} (was {EAST}")), "{done}");
        together += usize::from(done.contains("; one update of"));
        assert_eq!(named.dig(&name, "A"), [WEST], "{name}");
    }
    assert!(together >= 10, "only {together} of 20 updates arriving together went with others");

    let by_hand = Rfc2136Step {
        values: BTreeMap::from([("east".into(), vec![EAST.into()]), ("west".into(), vec![OTHER.into()])]),
        ..record(27)
    };
    bounded(rfc2136::run(&by_hand, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}"));
    for (i, result) in flip(21..=support::dns::MANY).await {
        let name = format!("app{i}.example.test");
        if i == 27 {
            let err = result.unwrap_err();
            assert!(!err.retryable && err.message.contains(&format!("holds {OTHER}")), "{err}");
            assert_eq!(named.dig(&name, "A"), [OTHER]);
        } else {
            let done = result.unwrap_or_else(|e| panic!("{name}: {e}\n{}", named.log()));
            assert_eq!(done, format!("{name}. A -> {WEST} (was {EAST})"), "sent again alone");
            assert_eq!(named.dig(&name, "A"), [WEST], "{name}");
        }
    }
}

#[tokio::test]
async fn check_accepts_the_key_without_changing_anything() {
    let Some(named) = Named::start("check_accepts_the_key_without_changing_anything").await else { return };
    let ok = bounded(rfc2136::check(&at(&named, EAST, WEST, named.key_file()))).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok, format!("SOA serial 1 from 127.0.0.1:{}, key witness-key accepted", named.port()));
    assert_eq!(named.dig(RECORD, "A"), [EAST]);
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and closed again: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let step = step(&format!("127.0.0.1:{port}"), made_up_key(dir.path()), EAST, WEST);
    let err = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_err();
    assert!(err.retryable && err.message.contains("cannot reach"), "{err}");
    let err = bounded(rfc2136::check(&step)).await.unwrap_err();
    assert!(err.retryable && err.message.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn an_unsigned_answer_is_not_believed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut len = [0; 2];
            let _ = stream.read_exact(&mut len).await;
            let mut request = vec![0; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut request).await.is_err() || request.len() < 12 {
                continue;
            }
            // NOERROR to the request's id and opcode, with no TSIG record.
            let header = [request[0], request[1], 0x80 | (request[2] & 0x78), 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let _ = stream.write_all(&[&[0, 12], &header[..]].concat()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let step = step(&server, made_up_key(dir.path()), EAST, WEST);
    let err = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_err();
    assert!(err.retryable && err.message.contains("not signed by the key witness-key"), "{err}");
    let err = bounded(rfc2136::check(&step)).await.unwrap_err();
    assert!(err.retryable && err.message.contains("not signed by the key witness-key"), "{err}");
}

fn made_up_key(dir: &Path) -> PathBuf {
    let key = dir.join("witness.key");
    std::fs::write(&key, "key \"witness-key\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };\n").unwrap();
    key
}
