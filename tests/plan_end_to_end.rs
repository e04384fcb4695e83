//! A failover plan end to end, everything real but the sites: three witness node processes
//! probe two site stubs; when the primary's stub dies, the leader runs group `app`'s plan
//! against an OpenStorage fake, a real BIND 9 (RFC 2136), a real moto (Route 53) and a
//! signature-checking webhook receiver, and each target ends up pointing at the survivor.
//! Also measures how long after the failure BIND answers with the survivor's address.

mod support;

use std::time::{Duration, Instant};

use support::dns::{Moto, Named};
use support::targets::{write_secret, OpenStorage, Receiver};
use support::{cli, eventually, plan_when, statuses, Cluster, Setup, SiteStub};

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
        r#"readiness_interval = "1s"

[[group.step]]
name = "storage"
kind = "openstorage"
endpoint = "{storage}"
token_file = "{token}"
domains = {{ east = "dc-east", west = "dc-west" }}
{dns}
[[group.step]]
name = "notify"
kind = "webhook"
url = "{hooks}/notify"
secret_file = "{hook_secret}"
"#,
        storage = storage.url,
        dns = dns_steps(&named, &named.key_file(), &moto, &aws),
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
    let storage_calls = storage.calls().len();

    // The notification: once, signed, about this decision.
    let notify = hooks.deliveries("notify");
    assert_eq!((notify.len(), hooks.effects("notify")), (1, 1), "{notify:?}");
    assert_eq!(notify[0].id, "app:2:notify");
    let body = &notify[0].body;
    assert_eq!((body["group"].as_str(), body["epoch"].as_u64()), (Some("app"), Some(2)), "{body}");
    assert_eq!((body["from"].as_str(), body["to"].as_str()), (Some("east"), Some("west")), "{body}");
    assert_eq!(hooks.bad_signatures(), 0);

    // Someone puts the record back to east by hand: the scheduled check reports drift from the
    // decision of epoch 2; `witness plan reconcile app --step dns` runs the step again, fenced
    // by that epoch, and BIND answers west again; the drift is gone and the failover's record
    // stays.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let rto_before = plan["achieved_rto_ms"].clone();
    change_by_hand(&named, "west", "east").await;
    let dns_target = |want: &'static str| {
        let c = &c;
        async move {
            support::eventually(Duration::from_secs(15), want, || async {
                let s = c.status(leader).await?;
                let steps = s["groups"][0]["readiness"]["steps"].as_array()?.clone();
                let dns = steps.iter().find(|st| st["step"] == "dns")?.clone();
                (dns["target"]["state"] == want).then_some(dns)
            })
            .await
        }
    };
    let drifted = dns_target("drifted").await;
    assert!(drifted["target"]["detail"].as_str().unwrap().contains(EAST), "{drifted}");
    let endpoint = format!("https://{}", c.nodes[leader as usize - 1].addr);
    let (code, out) = cli(&["plan", "reconcile", "app", "--step", "dns", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    dns_target("in_place").await;
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [WEST], "{}", named.log());
    let plan = plan_when(&c, "the plan done again", Duration::from_secs(30), |p| p["phase"] == "done").await;
    assert_eq!(plan["achieved_rto_ms"], rto_before, "the failover's record stays");
    assert_eq!((storage.calls().len(), hooks.effects("notify")), (storage_calls, 1), "only the dns step ran again");
    c.journaled_exactly(leader, &[("target_drift", 1), ("plan_reconcile", 1), ("target_in_place", 1)]).await;
    // A plan that never ran has nothing to reconcile; a step the plan lacks is named.
    let (code, out) = cli(&["plan", "reconcile", "app", "--step", "nope", "--endpoint", &endpoint]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no step \"nope\""), "{out}");
}

/// The plan's two DNS steps, both for `RECORD`: BIND with the key at `key`, and Route 53 (moto)
/// with the credentials at `aws`.
fn dns_steps(named: &Named, key: &std::path::Path, moto: &Moto, aws: &str) -> String {
    format!(
        r#"
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
"#,
        server = named.server(),
        key = key.display(),
        moto_url = moto.url(),
        zone = moto.zone_id,
    )
}

/// Someone else moves the record from `from`'s address to `to`'s, with the zone's key: a change
/// outside the plan.
async fn change_by_hand(named: &Named, from: &str, to: &str) {
    let step = witness::config::Rfc2136Step {
        server: named.server(),
        zone: "example.test.".into(),
        record: RECORD.into(),
        record_type: "A".into(),
        ttl: 60,
        key_file: named.key_file(),
        values: [("east".to_string(), vec![EAST.to_string()]), ("west".to_string(), vec![WEST.to_string()])].into(),
    };
    let ctx = witness::actions::StepContext {
        group: "someone".into(),
        epoch: 0,
        from: from.into(),
        to: to.into(),
        reason: "by hand".into(),
        decided_at_ms: 0,
        step: "by-hand".into(),
    };
    witness::actions::rfc2136::run(&step, &ctx).await.expect("the change by hand");
}

fn key(name: &str, rtype: &str) -> (String, String, Option<String>) {
    (name.to_string(), rtype.to_string(), None)
}

/// Plan readiness on schedule (every second here): a TSIG key that no longer matches BIND's
/// (the copy the step names replaced by another key of the same name, as when BIND's key was
/// rotated and this copy was not) and a Route 53 credentials file gone each turn their step not
/// ready within an interval, in status, `/metrics` and the journal (once); restored, they turn
/// ready again. Then the record is changed by hand in BIND: drift from the committed decision,
/// said once, and in place again once put back. The checks change nothing at the targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_credentials_turn_steps_not_ready_and_a_record_changed_by_hand_drifts() {
    const TEST: &str = "broken_credentials_turn_steps_not_ready_and_a_record_changed_by_hand_drifts";
    let Some(named) = Named::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: BIND 9 is not installed ===");
        return;
    };
    let Some(moto) = Moto::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: moto_server is not installed ===");
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("tsig.key");
    std::fs::copy(named.key_file(), &key).unwrap();
    let aws_text = "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n";
    let aws = write_secret(secrets.path(), "aws-credentials", aws_text);
    moto.seed(&moto.zone_id, RECORD, &[(None, None, EAST)]).await;
    let plan = format!("readiness_interval = \"1s\"\n{}", dns_steps(&named, &key, &moto, &aws));
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let (c, leader) = Cluster::watching(&east, &west, Setup { plan, ..Setup::default() }).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let steps = |s: &serde_json::Value| -> Option<Vec<(String, bool)>> {
        let steps = s["groups"][0]["readiness"]["steps"].as_array()?;
        Some(steps.iter().map(|st| (st["step"].as_str().unwrap().to_string(), st["ok"] == true)).collect())
    };
    let ready = |want: [(&str, bool); 2]| {
        let want: Vec<(String, bool)> = want.iter().map(|(n, ok)| (n.to_string(), *ok)).collect();
        let c = &c;
        async move {
            eventually(Duration::from_secs(15), "the readiness wanted", || {
                let want = want.clone();
                async move { (steps(&c.status(follower).await?)? == want).then_some(()) }
            })
            .await
        }
    };
    ready([("dns", true), ("route53", true)]).await;

    std::fs::copy(named.wrong_key_file(), &key).unwrap();
    std::fs::remove_file(&aws).unwrap();
    let broke = Instant::now();
    ready([("dns", false), ("route53", false)]).await;
    eprintln!("broken -> both steps not ready in status: {} ms", broke.elapsed().as_millis());
    let s = c.status(follower).await.unwrap();
    let detail = |i: usize| s["groups"][0]["readiness"]["steps"][i]["detail"].as_str().unwrap().to_string();
    assert!(detail(0).contains("BADSIG") || detail(0).contains("TSIG") || detail(0).contains("key"), "{}", detail(0));
    assert!(detail(1).contains("aws-credentials"), "{}", detail(1));
    let endpoint = format!("https://{}", c.nodes[follower as usize - 1].addr);
    let (code, out) = cli(&["status", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("app: plan NOT READY") && out.contains("[FAIL] dns (rfc2136)"), "{out}");
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    for step in ["dns", "route53"] {
        let line = format!("witness_plan_step_ready{{group=\"app\",step=\"{step}\",node_id=\"{leader}\"}} 0");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }

    std::fs::copy(named.key_file(), &key).unwrap();
    write_secret(secrets.path(), "aws-credentials", aws_text);
    ready([("dns", true), ("route53", true)]).await;
    // Each turn journaled once, though checked every second.
    c.journaled_exactly(leader, &[("step_not_ready", 2), ("step_ready", 2)]).await;
    // Checks change nothing.
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [EAST]);
    let (code, out) = cli(&["plan", "check", "app", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("app: plan ready (every step checked"), "{out}");

    // Someone points the record at west by hand, east still active: drift, said once; put
    // back, in place again.
    let target = |want: &'static str| {
        let c = &c;
        async move {
            eventually(Duration::from_secs(15), want, || async {
                let s = c.status(follower).await?;
                let t = &s["groups"][0]["readiness"]["steps"][0]["target"];
                (t["state"] == want).then(|| t.clone())
            })
            .await
        }
    };
    target("in_place").await;
    change_by_hand(&named, "east", "west").await;
    let drift = target("drifted").await;
    let what = drift["detail"].as_str().unwrap();
    assert!(what.contains(WEST) && what.contains("not east's"), "{what}");
    let (_, out) = cli(&["status", "--endpoint", &endpoint]);
    assert!(out.contains("app: TARGET DRIFT") && out.contains("[DRIFT] dns (rfc2136)"), "{out}");
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = format!("witness_target_drift{{group=\"app\",step=\"dns\",node_id=\"{leader}\"}} 1");
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    change_by_hand(&named, "west", "east").await;
    target("in_place").await;
    c.journaled_exactly(leader, &[("target_drift", 1), ("target_in_place", 1)]).await;
}

/// A DR drill there and back, on real processes: three witness nodes, both sites' agents, and a
/// plan moving storage (the OpenStorage fake), BIND (RFC 2136) and Route 53 (moto). Refused
/// while paused, naming the precondition and changing nothing; then it runs under the lease
/// protocol, holds a second on west, and returns. The report's phase times add up and stay
/// within the group's budget, every target followed both ways, the group is not blocked, and
/// `witness drill show` gives it as Markdown and JSON; the metric the overdue alert reads has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_there_and_back_reports_every_phase_within_the_budget() {
    const TEST: &str = "a_drill_there_and_back_reports_every_phase_within_the_budget";
    let Some(named) = Named::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: BIND 9 is not installed ===");
        return;
    };
    let Some(moto) = Moto::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: moto_server is not installed ===");
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let storage = OpenStorage::start("px-admin-token", &[("dc-east", true), ("dc-west", false)]).await.unwrap();
    let token = write_secret(secrets.path(), "px.token", "px-admin-token\n");
    let aws = write_secret(
        secrets.path(),
        "aws-credentials",
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    moto.seed(&moto.zone_id, RECORD, &[(None, None, EAST)]).await;
    let plan = format!(
        r#"readiness_interval = "1s"
drill_every = "90d"

[[group.step]]
name = "storage"
kind = "openstorage"
endpoint = "{storage}"
token_file = "{token}"
domains = {{ east = "dc-east", west = "dc-west" }}
{dns}"#,
        storage = storage.url,
        dns = dns_steps(&named, &named.key_file(), &moto, &aws),
    );
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let setup = Setup { site_urls: Some((east.url(), west.url())), agents: true, plan, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    let leader = c.start_voters(3).await;
    c.agent("east").start();
    c.agent("west").start();
    let endpoint = format!("https://{}", c.nodes[leader as usize - 1].addr);
    eventually(Duration::from_secs(20), "east writable, both up, the plan checked ready", || async {
        c.all_see("east", "up", &[1, 2, 3]).await?;
        c.all_see("west", "up", &[1, 2, 3]).await?;
        let s = c.status(leader).await?;
        let ready = s["groups"][0]["readiness"]["steps"].as_array()?.iter().all(|st| st["ok"] == true);
        let west_in_sync = s["groups"][0]["agents"]["sites"]["west"]["in_sync"] == true;
        (ready && west_in_sync && c.writable("east").await? && !c.writable("west").await?).then_some(())
    })
    .await;

    // Paused: refused, the precondition named, nothing changed.
    assert_eq!(c.post(leader, "/v1/groups/app/pause", &serde_json::json!({})).await.0, 200);
    let (code, out) = cli(&["drill", "app", "--back", "--endpoint", &endpoint]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] not_paused") && out.contains("refused"), "{out}");
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 1)), "nothing moved");
    assert_eq!(c.post(leader, "/v1/groups/app/resume", &serde_json::json!({})).await.0, 200);
    let (code, out) = cli(&["drill", "app", "--back", "--dry-run", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[pass] plan_ready") && out.contains("[pass] survivor_in_sync"), "{out}");
    // Bad input is named.
    let (code, out) = cli(&["drill", "app", "--back", "--hold", "soon", "--endpoint", &endpoint]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--hold: invalid duration \"soon\""), "{out}");

    let started = Instant::now();
    let (code, out) = tokio::task::block_in_place(|| {
        cli(&["drill", "app", "--back", "--hold", "1s", "--reason", "CHG-42", "--endpoint", &endpoint])
    });
    eprintln!("drill there and back: {} ms\n{out}", started.elapsed().as_millis());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("# Drill 1 of app: PASSED") && out.contains("| out | east -> west | 2 |"), "{out}");
    assert!(out.contains("| back | west -> east | 3 |"), "{out}");

    let (code, json) = cli(&["drill", "show", "app", "--format", "json", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{json}");
    let r: serde_json::Value = serde_json::from_str(&json).expect("the report as JSON");
    assert_eq!((r["status"].as_str(), r["reason"].as_str()), (Some("passed"), Some("CHG-42")), "{r:#}");
    assert_eq!(r["by"], "token:admin");
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("a number: {v} in {r:#}"));
    let switchover_budget = n(&r["budget"]["switchover_ms"]);
    for leg in r["legs"].as_array().unwrap() {
        let (decision, drain, steps, total) =
            (n(&leg["decision_ms"]), n(&leg["drain_ms"]), n(&leg["steps_ms"]), n(&leg["total_ms"]));
        assert_eq!(decision + drain + steps, total, "the phases add up: {leg:#}");
        // The drain is the lease wait: the old site's lease (1 s + 100 ms) runs out first.
        assert!(drain >= 900, "{leg:#}");
        assert!(drain + steps <= switchover_budget, "within the budget of {switchover_budget} ms: {leg:#}");
        let took: u64 = leg["steps"].as_array().unwrap().iter().map(|s| n(&s["took_ms"])).sum();
        assert!(took <= steps, "{leg:#}");
        let statuses: Vec<&str> =
            leg["steps"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["done", "done", "done"], "{leg:#}");
        assert!(n(&leg["projected_rto_ms"]) <= n(&r["objective_ms"]), "{leg:#}");
        assert_eq!(leg["rpo_ms"], 0, "a synchronous copy in sync: {leg:#}");
    }
    let legs: Vec<u64> = r["legs"].as_array().unwrap().iter().map(|l| n(&l["total_ms"])).collect();
    assert!(n(&r["total_ms"]) >= legs.iter().sum::<u64>() + 1000, "both legs and the hold: {r:#}");

    // Every target followed there and back; the agents too; nothing blocked.
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [EAST], "{}", named.log());
    assert_eq!(moto.records(&moto.zone_id).await[&key(RECORD, "A")], (vec![EAST.to_string()], None));
    assert_eq!((storage.active("dc-east"), storage.active("dc-west")), (Some(true), Some(false)));
    assert!(storage.calls().len() >= 2, "storage moved twice: {:?}", storage.calls());
    assert!(c.agents[1].roles().contains(&"role=active epoch=2".to_string()), "{:?}", c.agents[1].roles());
    eventually(Duration::from_secs(5), "east writable again, west not", || async {
        (c.writable("east").await? && !c.writable("west").await?).then_some(())
    })
    .await;
    let s = c.status(leader).await.unwrap();
    assert_eq!((s["groups"][0]["epoch"].as_u64(), s["groups"][0]["blocked"].as_bool()), (Some(3), Some(false)), "{s}");
    let (_, out) = cli(&["status", "--endpoint", &endpoint]);
    assert!(out.contains("app: last drill PASSED") && out.contains("(east -> west and back, "), "{out}");
    c.journaled_exactly(leader, &[("switchover", 2), ("switchover_complete", 2), ("drill_passed", 1), ("failover", 0)])
        .await;
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    let passed = metrics
        .lines()
        .find(|l| l.starts_with("witness_drill_last_passed_timestamp_seconds{group=\"app\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no last passed drill in:\n{metrics}"));
    assert!(passed > 1.7e9, "{passed}");
    assert!(metrics.contains("witness_drill_every_seconds{group=\"app\""), "{metrics}");
}

/// A group with `repair_drift = true`: after a failover to west, the record changed back to
/// east by hand in BIND is put back by the leader itself within a readiness interval or two
/// (journal: `target_drift`, `plan_reconcile` saying it was automatic, `target_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_repairs_drift_puts_a_record_changed_by_hand_back_by_itself() {
    const TEST: &str = "a_group_that_repairs_drift_puts_a_record_changed_by_hand_back_by_itself";
    let Some(named) = Named::start(TEST).await else {
        eprintln!("=== SKIPPED {TEST}: BIND 9 is not installed ===");
        return;
    };
    let plan = format!(
        r#"readiness_interval = "1s"
repair_drift = true

[[group.step]]
name = "dns"
kind = "rfc2136"
server = "{server}"
zone = "example.test."
record = "{RECORD}"
type = "A"
values = {{ east = ["{EAST}"], west = ["{WEST}"] }}
key_file = "{key}"
"#,
        server = named.server(),
        key = named.key_file().display(),
    );
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, _) = Cluster::watching(&east, &west, Setup { plan, ..Setup::default() }).await;
    east.kill().await;
    plan_when(&c, "the plan done", Duration::from_secs(30), |p| p["phase"] == "done").await;
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [WEST], "{}", named.log());

    change_by_hand(&named, "west", "east").await;
    assert_eq!(tokio::task::block_in_place(|| named.dig(RECORD, "A")), [EAST]);
    let changed = Instant::now();
    eventually(Duration::from_secs(15), "BIND answering west again", || async {
        (tokio::task::block_in_place(|| named.dig(RECORD, "A")) == [WEST]).then_some(())
    })
    .await;
    eprintln!("changed by hand -> repaired by the leader: {} ms", changed.elapsed().as_millis());
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    c.journaled_exactly(leader, &[("target_drift", 1), ("plan_reconcile", 1), ("target_in_place", 1)]).await;
    let events: serde_json::Value =
        c.http.get(c.nodes[leader as usize - 1].url("/v1/events")).send().await.unwrap().json().await.unwrap();
    let reconcile = events["events"].as_array().unwrap().iter().find(|e| e["kind"] == "plan_reconcile").unwrap();
    assert!(reconcile["message"].as_str().unwrap().contains("automatic: the group repairs drift"), "{reconcile}");
}
