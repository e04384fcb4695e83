//! A failover plan end to end, everything real but the sites: three witness node processes
//! probe two site stubs; when the primary's stub dies, the leader runs group `app`'s plan
//! against an OpenStorage fake, a real BIND 9 (RFC 2136), a real moto (Route 53) and a
//! signature-checking webhook receiver, and each target ends up pointing at the survivor.
//! Also measures how long after the failure BIND answers with the survivor's address.

mod support;

use std::time::{Duration, Instant};

use support::dns::{Moto, Named};
use support::targets::{write_secret, OpenStorage, Receiver};
use support::{cli, plan_when, statuses, Cluster, Setup, SiteStub};

const SECRET: &[u8] = b"the webhook secret of the end-to-end test";
const EAST: &str = support::dns::APP_ADDRESS;
const WEST: &str = "198.51.100.7";
const RECORD: &str = "app.example.test.";
/// How long after the failure BIND may still answer the failed site's address.
const DNS_BOUND: Duration = Duration::from_secs(10);

/// Polls BIND every 20 ms with a cheap UDP query until `app.example.test. A` is the survivor's
/// address alone; returns how long after `since` that was first seen.
async fn until_bind_answers_west(named: &Named, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(30);
    let mut last = None;
    loop {
        let answer = named.query_a(RECORD, Duration::from_millis(500)).await;
        if answer.as_deref() == Some(&[WEST.to_string()][..]) {
            return since.elapsed();
        }
        last = answer.or(last);
        assert!(Instant::now() < deadline, "BIND still answers {last:?} 30 s after the failure:\n{}", named.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_moves_storage_both_dns_servers_and_notifies_once() {
    const TEST: &str = "a_failover_moves_storage_both_dns_servers_and_notifies_once";
    // Without CI=true a missing BIND or moto skips (loudly); with it, `start` fails the test.
    let Some(named) = Named::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: BIND 9 is not installed ===");
        return;
    };
    let Some(moto) = Moto::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: moto_server is not installed ===");
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let hooks = Receiver::start(SECRET).await;
    let storage = OpenStorage::start("px-admin-token", &[("dc-east", true), ("dc-west", false)]).await.unwrap();
    let hook_secret = write_secret(secrets.path(), "hook.secret", &Receiver::secret_file_contents(SECRET));
    let token = write_secret(secrets.path(), "px.token", "px-admin-token\n");
    // The nodes' only AWS credentials: no environment variables.
    let aws = write_secret(
        secrets.path(),
        "aws-credentials",
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    // Route 53 starts where BIND does: at the primary.
    moto.seed(&moto.zone_id, RECORD, &[(None, None, EAST)]).await;
    let plan = format!(
        r#"
[[group.step]]
name = "storage"
kind = "openstorage"
endpoint = "{storage}"
token_file = "{token}"
domains = {{ east = "dc-east", west = "dc-west" }}

[[group.step]]
name = "dns"
kind = "rfc2136"
server = "{server}"
zone = "example.test."
record = "{RECORD}"
type = "A"
values = {{ east = ["{EAST}"], west = ["{WEST}"] }}
key_file = "{key}"

[[group.step]]
name = "route53"
kind = "route53"
endpoint = "{moto_url}"
zone_id = "{zone}"
record = "{RECORD}"
type = "A"
values = {{ east = ["{EAST}"], west = ["{WEST}"] }}
credentials_file = "{aws}"

[[group.step]]
name = "notify"
kind = "webhook"
url = "{hooks}/notify"
secret_file = "{hook_secret}"
"#,
        storage = storage.url,
        server = named.server(),
        key = named.key_file().display(),
        moto_url = moto.url(),
        zone = moto.zone_id,
        hooks = hooks.url,
    );

    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, _) = Cluster::watching(&east, &west, Setup { plan, ..Setup::default() }).await;

    // Every target reachable with its secret, and nothing changed by looking.
    let (code, out) = cli(&["plan", "check", "app", "--endpoint", &format!("https://{}", c.nodes[0].addr)]);
    assert_eq!(code, 0, "{out}");
    for step in ["storage (openstorage)", "dns (rfc2136)", "route53 (route53)", "notify (webhook)"] {
        assert!(out.contains(&format!("[pass] {step}")), "{out}");
    }
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [EAST]);
    let before = moto.records(&moto.zone_id).await;
    assert_eq!(before[&key(RECORD, "A")], (vec![EAST.to_string()], None), "{before:?}");
    assert!(storage.calls().is_empty() && hooks.requests("notify") == 0, "a check changes nothing");

    // The primary dies; BIND is watched from that moment on.
    let killed = Instant::now();
    let ((), dns) = tokio::join!(east.kill(), until_bind_answers_west(&named, killed));
    eprintln!("failure -> DNS updated in BIND: {} ms", dns.as_millis());
    let plan = plan_when(&c, "the plan done", Duration::from_secs(30), |p| p["phase"] == "done").await;
    eprintln!("failure -> plan done: {} ms", killed.elapsed().as_millis());
    assert_eq!(statuses(&plan), ["done", "done", "done", "done"], "{plan:#}");
    assert_eq!(plan["epoch"], 2, "{plan:#}");
    assert!(dns < DNS_BOUND, "BIND answered the survivor's address only {dns:?} after the failure");

    // BIND: the survivor's address alone, as a resolver sees it.
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [WEST], "{}", named.log());

    // Route 53: the record moved, and the epoch TXT beside it says by which decision.
    let after = moto.records(&moto.zone_id).await;
    assert_eq!(after[&key(RECORD, "A")], (vec![WEST.to_string()], None), "{after:?}");
    let epoch = &after[&key(&format!("_witness-epoch.{RECORD}"), "TXT")];
    assert_eq!(epoch, &(vec!["\"group=app epoch=2 active=west\"".to_string()], None), "{after:?}");

    // Storage: west's domain active, east's not.
    assert_eq!((storage.active("dc-east"), storage.active("dc-west")), (Some(false), Some(true)));

    // The notification: once, signed, about this decision.
    let notify = hooks.deliveries("notify");
    assert_eq!((notify.len(), hooks.effects("notify")), (1, 1), "{notify:?}");
    assert_eq!(notify[0].id, "app:2:notify");
    let body = &notify[0].body;
    assert_eq!((body["group"].as_str(), body["epoch"].as_u64()), (Some("app"), Some(2)), "{body}");
    assert_eq!((body["from"].as_str(), body["to"].as_str()), (Some("east"), Some("west")), "{body}");
    assert_eq!(hooks.bad_signatures(), 0);
}

fn key(name: &str, rtype: &str) -> (String, String, Option<String>) {
    (name.to_string(), rtype.to_string(), None)
}
