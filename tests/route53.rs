//! The `route53` step against moto's Route 53 API: each test starts its own `moto_server` on a
//! free loopback port and creates hosted zone `example.test.` through the AWS SDK. moto accepts
//! any credentials, so the tests use both paths to them: environment variables and a
//! `credentials_file` with a profile.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use support::dns::Moto;
use witness::actions::{route53, StepContext, StepResult};
use witness::config::Route53Step;

const EAST: &str = "192.0.2.1";
const WEST: &str = "198.51.100.7";

/// The step for `record` in moto's zone `example.test.`, east's value EAST, west's WEST.
fn record_step(moto: &Moto, record: &str) -> Route53Step {
    let per_site = |east: &str, west: &str| {
        BTreeMap::from([("east".to_string(), vec![east.to_string()]), ("west".to_string(), vec![west.to_string()])])
    };
    Route53Step {
        zone_id: moto.zone_id.clone(),
        record: record.to_string(),
        record_type: "A".into(),
        ttl: 60,
        values: per_site(EAST, WEST),
        set_identifiers: BTreeMap::new(),
        weight: 100,
        endpoint: Some(moto.url().parse().unwrap()),
        region: "us-east-1".into(),
        profile: None,
        credentials_file: None,
    }
}

/// A credentials file in moto's directory with one profile.
fn credentials_file(moto: &Moto, profile: &str) -> PathBuf {
    let path = moto.dir().join("credentials");
    std::fs::write(
        &path,
        format!("[{profile}]\naws_access_key_id = AKIDWITNESSTEST\naws_secret_access_key = witness-test-secret\n"),
    )
    .unwrap();
    path
}

/// The default chain's first source; set once, before any test reads it, and the same for all.
fn env_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    });
}

fn ctx(group: &str, epoch: u64, from: &str, to: &str) -> StepContext {
    StepContext {
        group: group.into(),
        epoch,
        from: from.into(),
        to: to.into(),
        reason: "test".into(),
        decided_at_ms: 0,
        step: "dns".into(),
    }
}

async fn bounded(f: impl std::future::Future<Output = StepResult>) -> StepResult {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("route53 step hung")
}

fn key(name: &str, rtype: &str, id: Option<&str>) -> (String, String, Option<String>) {
    (name.to_string(), rtype.to_string(), id.map(String::from))
}

fn txt(group: &str, epoch: u64, active: &str) -> (Vec<String>, Option<i64>) {
    (vec![format!("\"group={group} epoch={epoch} active={active}\"")], None)
}

#[tokio::test]
async fn plain_record_moves_once_and_never_back() {
    env_credentials();
    let Some(moto) = Moto::start("plain_record_moves_once_and_never_back").await else { return };
    let (record, epoch_record) = ("app.example.test.", "_witness-epoch.app.example.test.");
    moto.seed(&moto.zone_id, record, &[(None, None, EAST)]).await;
    let step = record_step(&moto, record);

    let done = bounded(route53::run(&step, &ctx("app", 2, "east", "west"))).await.unwrap();
    assert!(done.starts_with(&format!("{record} A -> {WEST}, epoch TXT 2, change ")), "{done}");
    assert!(done.contains(" INSYNC in "), "{done}");
    let after = moto.records(&moto.zone_id).await;
    assert_eq!(after[&key(record, "A", None)], (vec![WEST.to_string()], None), "{after:?}");
    assert_eq!(after[&key(epoch_record, "TXT", None)], txt("app", 2, "west"), "{after:?}");

    // The same decision again (a retry, or a new leader): fine, and nothing changes.
    bounded(route53::run(&step, &ctx("app", 2, "east", "west"))).await.unwrap();
    assert_eq!(moto.records(&moto.zone_id).await, after);

    // An older decision arriving late must not move DNS back.
    let err = bounded(route53::run(&step, &ctx("app", 1, "west", "east"))).await.unwrap_err();
    assert!(!err.retryable && err.message.starts_with("superseded: Route 53 already carries epoch 2"), "{err}");
    assert_eq!(moto.records(&moto.zone_id).await, after);

    // A newer one moves it: the TXT goes by DELETE of the value read plus CREATE.
    bounded(route53::run(&step, &ctx("app", 3, "west", "east"))).await.unwrap();
    let back = moto.records(&moto.zone_id).await;
    assert_eq!(back[&key(record, "A", None)], (vec![EAST.to_string()], None), "{back:?}");
    assert_eq!(back[&key(epoch_record, "TXT", None)], txt("app", 3, "east"), "{back:?}");
}

#[tokio::test]
async fn weighted_records_flip_weights_with_a_credentials_file() {
    let Some(moto) = Moto::start("weighted_records_flip_weights_with_a_credentials_file").await else { return };
    let record = "www.example.test.";
    moto.seed(&moto.zone_id, record, &[(Some("east-dc"), Some(100), EAST), (Some("west-dc"), Some(0), WEST)]).await;
    let mut step = record_step(&moto, record);
    step.set_identifiers = BTreeMap::from([("east".into(), "east-dc".into()), ("west".into(), "west-dc".into())]);
    step.credentials_file = Some(credentials_file(&moto, "witness"));
    step.profile = Some("witness".into());

    let done = bounded(route53::run(&step, &ctx("web", 5, "east", "west"))).await.unwrap();
    assert!(done.contains("epoch TXT 5"), "{done}");
    let after = moto.records(&moto.zone_id).await;
    assert_eq!(after[&key(record, "A", Some("west-dc"))], (vec![WEST.to_string()], Some(100)), "{after:?}");
    assert_eq!(after[&key(record, "A", Some("east-dc"))], (vec![EAST.to_string()], Some(0)), "{after:?}");
    assert_eq!(after[&key("_witness-epoch.www.example.test.", "TXT", None)], txt("web", 5, "west"), "{after:?}");
}

#[tokio::test]
async fn check_reaches_the_zone_and_names_what_is_wrong() {
    let Some(moto) = Moto::start("check_reaches_the_zone_and_names_what_is_wrong").await else { return };
    let mut step = record_step(&moto, "app.example.test.");
    step.credentials_file = Some(credentials_file(&moto, "default"));

    let ok = bounded(route53::check(&step)).await.unwrap();
    assert!(ok.starts_with("hosted zone example.test. (") && ok.contains(" reachable, "), "{ok}");

    let unknown = Route53Step { zone_id: "Z0000000NOSUCHZONE".into(), ..step.clone() };
    let err = bounded(route53::check(&unknown)).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("NoSuchHostedZone"), "{err}");
    assert!(err.message.contains("Z0000000NOSUCHZONE") && err.message.contains("app.example.test."), "{err}");

    // The named file and profile, not the environment: a profile it lacks is an error even when
    // the environment has credentials.
    env_credentials();
    let absent = Route53Step { profile: Some("absent".into()), ..step.clone() };
    let err = bounded(route53::check(&absent)).await.unwrap_err();
    assert!(err.message.contains("absent"), "{err}");

    let missing = Route53Step { credentials_file: Some(moto.dir().join("nope")), ..step };
    let err = bounded(route53::check(&missing)).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("credentials_file") && err.message.contains("nope"), "{err}");
}
