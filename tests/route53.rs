//! The `route53` step against moto's Route 53 API: each test starts its own `moto_server` on a
//! free loopback port and creates hosted zone `example.test.` through the AWS SDK. moto accepts
//! any credentials, so the tests use both paths to them: environment variables and a
//! `credentials_file` with a profile. Where Route 53 would answer what moto does not (it
//! neither throttles nor refuses a whole batch for one stale compare-and-set), a front in
//! this process stands before moto, counts the requests by operation and answers the first
//! few of an operation with the error Route 53 would send.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};

use support::dns::Moto;
use witness::actions::{route53, Observed, StepContext, StepResult};
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

/// Requests by operation, and the errors still to answer per operation (first come first).
#[derive(Default)]
struct Ledger {
    counts: BTreeMap<&'static str, u32>,
    faults: BTreeMap<&'static str, Vec<&'static str>>,
}

/// moto behind a counting front that answers with Route 53's errors on cue.
struct Front {
    url: String,
    ledger: Arc<Mutex<Ledger>>,
}

impl Front {
    async fn start(moto: &Moto) -> Front {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let (upstream, shared) = (moto.url().trim_end_matches('/').to_string(), ledger.clone());
        witness::tls::init();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (upstream, ledger, http) = (upstream.clone(), shared.clone(), http.clone());
            async move {
                let op = operation(&method, uri.path());
                let fault = {
                    let mut ledger = ledger.lock().unwrap();
                    *ledger.counts.entry(op).or_default() += 1;
                    let queue = ledger.faults.entry(op).or_default();
                    (!queue.is_empty()).then(|| queue.remove(0))
                };
                if let Some(code) = fault {
                    let xml = format!(
                        "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
                         <Error><Type>Sender</Type><Code>{code}</Code><Message>{code} (from the test's front)</Message>\
                         </Error><RequestId>front</RequestId></ErrorResponse>"
                    );
                    return (StatusCode::BAD_REQUEST, [("content-type", "text/xml".to_string())], xml.into_bytes());
                }
                let url = format!("{upstream}{}", uri.path_and_query().map_or("", |p| p.as_str()));
                let mut request = http.request(method, url).body(body);
                for (name, value) in headers.iter().filter(|(n, _)| *n != "host" && *n != "content-length") {
                    request = request.header(name, value);
                }
                let answer = request.send().await.expect("moto answers the front");
                let status = answer.status();
                let kind = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("text/xml");
                let kind = kind.to_string();
                (status, [("content-type", kind)], answer.bytes().await.unwrap().to_vec())
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Front { url, ledger }
    }

    /// The next requests of `op` are answered with `codes`, one each.
    fn fail(&self, op: &'static str, codes: &[&'static str]) {
        self.ledger.lock().unwrap().faults.entry(op).or_default().extend(codes);
    }

    fn counts(&self) -> BTreeMap<&'static str, u32> {
        self.ledger.lock().unwrap().counts.clone()
    }

    /// `step` through the front.
    fn step(&self, mut step: Route53Step) -> Route53Step {
        step.endpoint = Some(self.url.parse().unwrap());
        step
    }
}

/// The Route 53 operation a request is, from its method and path.
fn operation(method: &Method, path: &str) -> &'static str {
    match (method, path.trim_end_matches('/')) {
        (&Method::POST, p) if p.ends_with("/rrset") => "ChangeResourceRecordSets",
        (&Method::GET, p) if p.ends_with("/rrset") => "ListResourceRecordSets",
        (&Method::GET, p) if p.contains("/change/") => "GetChange",
        (&Method::GET, p) if p.contains("/hostedzone/") => "GetHostedZone",
        _ => "other",
    }
}

/// `n` groups' records g01.example.test. to gNN, east's value.
async fn seed_groups(moto: &Moto, n: usize) -> Vec<String> {
    let records: Vec<String> = (1..=n).map(|i| format!("g{i:02}.example.test.")).collect();
    for record in &records {
        moto.seed(&moto.zone_id, record, &[(None, None, EAST)]).await;
    }
    records
}

/// Runs each group's step (group `gNN` for record `gNN.example.test.`) at once, as a site
/// failing over does.
async fn fail_over_together(front: &Front, moto: &Moto, records: &[String], epoch: u64) -> Vec<StepResult> {
    let steps: Vec<Route53Step> = records.iter().map(|r| front.step(record_step(moto, r))).collect();
    let runs = steps.iter().zip(records).map(|(step, record)| {
        let group = record.split('.').next().unwrap().to_string();
        async move { bounded(route53::run(step, &ctx(&group, epoch, "east", "west"))).await }
    });
    futures::future::join_all(runs).await
}

#[tokio::test]
async fn steps_for_one_zone_share_one_change_and_each_keeps_its_own_fencing() {
    env_credentials();
    let Some(moto) = Moto::start("steps_for_one_zone_share_one_change_and_each_keeps_its_own_fencing").await else {
        return;
    };
    let records = seed_groups(&moto, 24).await;
    // g24 already moved back to east at epoch 9: a newer decision than the one the others
    // carry, which must not undo it.
    bounded(route53::run(&record_step(&moto, &records[23]), &ctx("g24", 9, "west", "east"))).await.unwrap();
    let front = Front::start(&moto).await;

    let results = fail_over_together(&front, &moto, &records, 2).await;
    for (record, result) in records[..23].iter().zip(&results) {
        let done = result.as_ref().unwrap_or_else(|e| panic!("{record}: {e}"));
        assert!(done.starts_with(&format!("{record} A -> {WEST}, epoch TXT 2, change ")), "{done}");
        assert!(done.ends_with("; one change of 23 groups"), "{done}");
    }
    let stale = results[23].as_ref().unwrap_err();
    assert!(!stale.retryable && stale.message == "superseded: Route 53 already carries epoch 9", "{stale}");
    let after = moto.records(&moto.zone_id).await;
    for (i, record) in records.iter().enumerate() {
        let group = format!("g{:02}", i + 1);
        let (value, epoch, active) = if i == 23 { (EAST, 9, "east") } else { (WEST, 2, "west") };
        assert_eq!(after[&key(record, "A", None)], (vec![value.to_string()], None), "{record}");
        assert_eq!(after[&key(&format!("_witness-epoch.{record}"), "TXT", None)], txt(&group, epoch, active));
    }
    // One change for all; reads of the whole zone rather than of each name (24 groups would
    // otherwise take 24 reads of the epoch, 24 changes, 48 reads back and their polls).
    let counts = front.counts();
    assert_eq!(counts.get("ChangeResourceRecordSets"), Some(&1), "{counts:?}");
    assert!(counts.values().sum::<u32>() <= 8, "{counts:?}");
}

#[tokio::test]
async fn a_refused_batch_is_tried_group_by_group_and_throttling_is_waited_out() {
    env_credentials();
    let Some(moto) = Moto::start("a_refused_batch_is_tried_group_by_group_and_throttling_is_waited_out").await else {
        return;
    };
    let records = seed_groups(&moto, 5).await;
    let front = Front::start(&moto).await;
    // Route 53 refuses the shared batch (one group's compare-and-set lost, say), then
    // throttles: the account's five requests a second used up, a change of the zone still in
    // progress.
    front.fail("ChangeResourceRecordSets", &["InvalidChangeBatch", "PriorRequestNotComplete"]);
    front.fail("GetHostedZone", &["Throttling", "Throttling"]);
    front.fail("ListResourceRecordSets", &["Throttling"]);

    let results = fail_over_together(&front, &moto, &records, 4).await;
    for (record, result) in records.iter().zip(&results) {
        let done = result.as_ref().unwrap_or_else(|e| panic!("{record}: {e}"));
        assert!(done.starts_with(&format!("{record} A -> {WEST}, epoch TXT 4, change ")), "{done}");
        assert!(!done.contains("one change of"), "each alone after the refusal: {done}");
    }
    let after = moto.records(&moto.zone_id).await;
    for record in &records {
        assert_eq!(after[&key(record, "A", None)], (vec![WEST.to_string()], None), "{record}");
    }
    let counts = front.counts();
    // The refused batch, one throttled, and each group's own.
    assert_eq!(counts.get("ChangeResourceRecordSets"), Some(&7), "{counts:?}");
    assert!(front.ledger.lock().unwrap().faults.values().all(Vec::is_empty), "every fault was met");
}

/// The readiness checks of a zone's steps share one read of it: checked all at once (a new
/// leadership checks every group within seconds), thirty groups take one GetHostedZone and one
/// page of the zone between them, and each still gets its own record's answer. A failed read
/// is not kept; a change the plan makes is seen by the next check.
#[tokio::test]
async fn readiness_checks_of_one_zone_share_its_reads() {
    env_credentials();
    let Some(moto) = Moto::start("readiness_checks_of_one_zone_share_its_reads").await else { return };
    let records = seed_groups(&moto, 30).await;
    let front = Front::start(&moto).await;
    let steps: Vec<Route53Step> = records.iter().map(|r| front.step(record_step(&moto, r))).collect();
    front.fail("GetHostedZone", &["AccessDenied"]);
    let err = bounded(route53::check(&steps[0])).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("AccessDenied"), "{err}");
    assert!(err.message.contains(&format!("(zone {})", moto.zone_id)), "the zone's read, no one record's: {err}");

    // East active at epoch 1: every record holds east's value.
    let checks = steps.iter().map(|step| async move {
        let reached = bounded(route53::check(step)).await;
        let seen = route53::observe(step, &ctx("g", 1, "west", "east")).await;
        (reached, seen)
    });
    for (record, (reached, seen)) in records.iter().zip(futures::future::join_all(checks).await) {
        let reached = reached.unwrap_or_else(|e| panic!("{record}: {e}"));
        assert!(reached.starts_with("hosted zone example.test. (") && reached.contains(" reachable, "), "{reached}");
        assert_eq!(seen.unwrap_or_else(|e| panic!("{record}: {e}")), Observed::InPlace, "{record}");
    }
    let counts = front.counts();
    assert_eq!(counts.get("GetHostedZone"), Some(&2), "the failed read, then one for all: {counts:?}");
    assert_eq!(counts.get("ListResourceRecordSets"), Some(&1), "the zone's one page: {counts:?}");

    // g01 fails over to west: the check after it reads the zone again and finds west's value.
    bounded(route53::run(&steps[0], &ctx("g01", 2, "east", "west"))).await.unwrap();
    assert_eq!(route53::observe(&steps[0], &ctx("g01", 2, "east", "west")).await.unwrap(), Observed::InPlace);
    let seen = route53::observe(&steps[1], &ctx("g02", 1, "west", "east")).await.unwrap();
    assert_eq!(seen, Observed::InPlace, "the other records as they were");
}
