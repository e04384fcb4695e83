//! The `route53` step against moto's Route 53 API: each test starts its own `moto_server` on a
//! free loopback port and creates hosted zone `example.test.` through the AWS SDK. moto accepts
//! any credentials, so the tests use both paths to them: environment variables and a
//! `credentials_file` with a profile.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use witness::actions::{route53, StepContext, StepResult};
use witness::config::Route53Step;

const EAST: &str = "192.0.2.1";
const WEST: &str = "198.51.100.7";

/// A `moto_server` of the test's own, killed when dropped.
struct Moto {
    dir: tempfile::TempDir,
    url: String,
    zone_id: String,
    sdk: aws_sdk_route53::Client,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record set as the tests compare them: (name, type, set identifier) -> (values, weight).
type Records = BTreeMap<(String, String, Option<String>), (Vec<String>, Option<i64>)>;

impl Moto {
    /// `None` (after saying so) when moto is not installed and skipping is allowed.
    async fn start(test: &str) -> Option<Moto> {
        let Some(program) = find_moto() else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "moto is required in CI: scripts/test installs it");
            eprintln!(
                "SKIPPED {test}: no moto_server (run scripts/test, which installs it, or set WITNESS_MOTO_SERVER)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let url = format!("http://127.0.0.1:{port}");
        let sdk = sdk_client(&url);
        let mut moto = Moto { dir, url, zone_id: String::new(), sdk, child };
        moto.wait_ready(port).await;
        let zone = moto
            .sdk
            .create_hosted_zone()
            .name("example.test.")
            .caller_reference(test)
            .send()
            .await
            .expect("create hosted zone");
        moto.zone_id = zone.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string();
        Some(moto)
    }

    async fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if answers_http(port).await {
                return;
            }
            let log = || std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default();
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", log());
            }
            assert!(Instant::now() < deadline, "moto_server did not answer on port {port} in 60 s:\n{}", log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn step(&self, record: &str) -> Route53Step {
        let per_site = |east: &str, west: &str| {
            BTreeMap::from([("east".to_string(), vec![east.to_string()]), ("west".to_string(), vec![west.to_string()])])
        };
        Route53Step {
            zone_id: self.zone_id.clone(),
            record: record.to_string(),
            record_type: "A".into(),
            ttl: 60,
            values: per_site(EAST, WEST),
            set_identifiers: BTreeMap::new(),
            weight: 100,
            endpoint: Some(self.url.parse().unwrap()),
            region: "us-east-1".into(),
            profile: None,
            credentials_file: None,
        }
    }

    /// A credentials file in the test's directory with one profile.
    fn credentials_file(&self, profile: &str) -> PathBuf {
        let path = self.dir.path().join("credentials");
        std::fs::write(
            &path,
            format!("[{profile}]\naws_access_key_id = AKIDWITNESSTEST\naws_secret_access_key = witness-test-secret\n"),
        )
        .unwrap();
        path
    }

    async fn seed(&self, record: &str, sets: &[(Option<&str>, Option<i64>, &str)]) {
        let mut batch = ChangeBatch::builder();
        for &(id, weight, value) in sets {
            let set = ResourceRecordSet::builder()
                .name(record)
                .r#type(RrType::A)
                .ttl(60)
                .set_set_identifier(id.map(String::from))
                .set_weight(weight)
                .resource_records(ResourceRecord::builder().value(value).build().unwrap())
                .build()
                .unwrap();
            batch =
                batch.changes(Change::builder().action(ChangeAction::Create).resource_record_set(set).build().unwrap());
        }
        self.sdk
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch.build().unwrap())
            .send()
            .await
            .expect("seed records");
    }

    async fn records(&self) -> Records {
        let out = self.sdk.list_resource_record_sets().hosted_zone_id(&self.zone_id).send().await.unwrap();
        assert!(!out.is_truncated());
        out.resource_record_sets()
            .iter()
            .map(|s| {
                let key = (s.name().to_string(), s.r#type().as_str().to_string(), s.set_identifier().map(String::from));
                (key, (s.resource_records().iter().map(|r| r.value().to_string()).collect(), s.weight()))
            })
            .collect()
    }
}

fn find_moto() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WITNESS_MOTO_SERVER") {
        return Some(path.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("moto_server")).find(|p| p.is_file())
}

async fn answers_http(port: u16) -> bool {
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if conn.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    matches!(tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head)).await, Ok(Ok(_)))
        && &head == b"HTTP/"
}

/// The test's own view of Route 53, with static credentials (moto checks none).
fn sdk_client(url: &str) -> aws_sdk_route53::Client {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .http_client(http)
        .build();
    aws_sdk_route53::Client::from_conf(conf)
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
    moto.seed(record, &[(None, None, EAST)]).await;
    let step = moto.step(record);

    let done = bounded(route53::run(&step, &ctx("app", 2, "east", "west"))).await.unwrap();
    assert!(done.starts_with(&format!("{record} A -> {WEST}, epoch TXT 2, change ")), "{done}");
    assert!(done.contains(" INSYNC in "), "{done}");
    let after = moto.records().await;
    assert_eq!(after[&key(record, "A", None)], (vec![WEST.to_string()], None), "{after:?}");
    assert_eq!(after[&key(epoch_record, "TXT", None)], txt("app", 2, "west"), "{after:?}");

    // The same decision again (a retry, or a new leader): fine, and nothing changes.
    bounded(route53::run(&step, &ctx("app", 2, "east", "west"))).await.unwrap();
    assert_eq!(moto.records().await, after);

    // An older decision arriving late must not move DNS back.
    let err = bounded(route53::run(&step, &ctx("app", 1, "west", "east"))).await.unwrap_err();
    assert!(!err.retryable && err.message.starts_with("superseded: Route 53 already carries epoch 2"), "{err}");
    assert_eq!(moto.records().await, after);

    // A newer one moves it: the TXT goes by DELETE of the value read plus CREATE.
    bounded(route53::run(&step, &ctx("app", 3, "west", "east"))).await.unwrap();
    let back = moto.records().await;
    assert_eq!(back[&key(record, "A", None)], (vec![EAST.to_string()], None), "{back:?}");
    assert_eq!(back[&key(epoch_record, "TXT", None)], txt("app", 3, "east"), "{back:?}");
}

#[tokio::test]
async fn weighted_records_flip_weights_with_a_credentials_file() {
    let Some(moto) = Moto::start("weighted_records_flip_weights_with_a_credentials_file").await else { return };
    let record = "www.example.test.";
    moto.seed(record, &[(Some("east-dc"), Some(100), EAST), (Some("west-dc"), Some(0), WEST)]).await;
    let mut step = moto.step(record);
    step.set_identifiers = BTreeMap::from([("east".into(), "east-dc".into()), ("west".into(), "west-dc".into())]);
    step.credentials_file = Some(moto.credentials_file("witness"));
    step.profile = Some("witness".into());

    let done = bounded(route53::run(&step, &ctx("web", 5, "east", "west"))).await.unwrap();
    assert!(done.contains("epoch TXT 5"), "{done}");
    let after = moto.records().await;
    assert_eq!(after[&key(record, "A", Some("west-dc"))], (vec![WEST.to_string()], Some(100)), "{after:?}");
    assert_eq!(after[&key(record, "A", Some("east-dc"))], (vec![EAST.to_string()], Some(0)), "{after:?}");
    assert_eq!(after[&key("_witness-epoch.www.example.test.", "TXT", None)], txt("web", 5, "west"), "{after:?}");
}

#[tokio::test]
async fn check_reaches_the_zone_and_names_what_is_wrong() {
    let Some(moto) = Moto::start("check_reaches_the_zone_and_names_what_is_wrong").await else { return };
    let mut step = moto.step("app.example.test.");
    step.credentials_file = Some(moto.credentials_file("default"));

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

    let missing = Route53Step { credentials_file: Some(moto.dir.path().join("nope")), ..step };
    let err = bounded(route53::check(&missing)).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("credentials_file") && err.message.contains("nope"), "{err}");
}
