//! Failover plans with real processes: three witness nodes probe two site stubs; when the
//! primary's stub dies, the leader runs the group's plan against in-process targets that keep
//! real state (a signature-checking webhook receiver, an OpenStorage fake) and real programs.
//! Retries, `on_failure = "continue"`, a stuck plan answered with `witness plan retry|skip`,
//! and a leader killed mid-plan whose successor finishes it with every effect made once.

mod support;

use std::time::{Duration, Instant};

use support::targets::{write_secret, OpenStorage, Receiver};
use support::{cli, plan_when, statuses, Cluster, Setup, SiteStub};

const SECRET: &[u8] = b"a webhook secret of the test";

fn webhook(name: &str, receiver: &Receiver, secret: &str, extra: &str) -> String {
    format!(
        "[[group.step]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{}/{name}\"\nsecret_file = \"{secret}\"\n{extra}\n",
        receiver.url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_runs_in_order_retries_what_may_succeed_and_goes_on_past_a_notification() {
    let secrets = tempfile::tempdir().unwrap();
    let hooks = Receiver::start(SECRET).await;
    let storage = OpenStorage::start("px-admin-token", &[("dc-east", true), ("dc-west", false)]).await.unwrap();
    let secret = write_secret(secrets.path(), "hook.secret", &Receiver::secret_file_contents(SECRET));
    let token = write_secret(secrets.path(), "px.token", "px-admin-token\n");
    let record = secrets.path().join("record.log");
    hooks.fail_next("notify", 2);
    hooks.reject("audit", true);
    let plan = [
        webhook("notify", &hooks, &secret, "retries = 3"),
        format!(
            "[[group.step]]\nname = \"storage\"\nkind = \"openstorage\"\nendpoint = \"{}\"\ntoken_file = \"{token}\"\n\
             domains = {{ east = \"dc-east\", west = \"dc-west\" }}\n",
            storage.url
        ),
        webhook("audit", &hooks, &secret, "on_failure = \"continue\""),
        format!(
            "[[group.step]]\nname = \"record\"\nkind = \"command\"\nprogram = \"sh\"\n\
             args = [\"-c\", \"echo epoch=$WITNESS_EPOCH from=$WITNESS_FROM to=$WITNESS_TO >> {}\"]\n",
            record.display()
        ),
    ]
    .concat();
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, leader) = Cluster::watching(&east, &west, Setup { plan, ..Setup::default() }).await;

    let (code, out) = cli(&["plan", "check", "app", "--endpoint", &format!("https://{}", c.nodes[0].addr)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("[pass] storage (openstorage)") && out.contains("[pass] notify (webhook)"), "{out}");
    assert!(storage.calls().is_empty() && hooks.requests("notify") == 0, "a check changes nothing");

    east.kill().await;
    let killed = Instant::now();
    let plan = plan_when(&c, "the plan done", Duration::from_secs(30), |p| p["phase"] == "done").await;
    eprintln!("plan done {:?} after the primary's stub died", killed.elapsed());
    assert_eq!(statuses(&plan), ["done", "done", "failed", "done"], "{plan:#}");
    assert_eq!(plan["epoch"], 2);

    // The notification: two 503s retried, then delivered; one effect; the payload and
    // signature as documented.
    assert_eq!(hooks.requests("notify"), 3, "two injected 503s, then success");
    let notify = hooks.deliveries("notify");
    assert_eq!((notify.len(), hooks.effects("notify")), (1, 1));
    assert_eq!(notify[0].id, "app:2:notify");
    let body = &notify[0].body;
    assert_eq!((body["group"].as_str(), body["epoch"].as_u64()), (Some("app"), Some(2)));
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str(), body["step"].as_str()),
        (Some("east"), Some("west"), Some("notify"))
    );
    assert!(body["decided_at"].as_str().unwrap().ends_with('Z') && body["reason"].as_str().is_some(), "{body}");
    assert_eq!(hooks.bad_signatures(), 0);
    assert_eq!(plan["steps"][0]["attempts"], 3);

    // Storage followed the decision.
    assert_eq!((storage.active("dc-east"), storage.active("dc-west")), (Some(false), Some(true)));
    assert_eq!(storage.calls(), ["deactivate dc-east", "activate dc-west"]);

    // A 400 is not retried; the plan went on because the step said so.
    assert_eq!(hooks.requests("audit"), 1, "a 400 is permanent");
    assert!(plan["steps"][2]["detail"].as_str().unwrap().contains("400"), "{plan:#}");

    assert_eq!(std::fs::read_to_string(&record).unwrap(), "epoch=2 from=east to=west\n");

    let (code, journal) = cli(&["events", "--endpoint", &format!("https://{}", c.nodes[leader as usize - 1].addr)]);
    assert_eq!(code, 0);
    for kind in ["step_started", "step_retrying", "step_done", "step_failed", "plan_done"] {
        assert!(journal.contains(kind), "journal lacks {kind}:\n{journal}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_plan_waits_for_an_operator_to_retry_or_skip() {
    let secrets = tempfile::tempdir().unwrap();
    let hooks = Receiver::start(SECRET).await;
    let secret = write_secret(secrets.path(), "hook.secret", &Receiver::secret_file_contents(SECRET));
    hooks.reject("gate", true);
    hooks.reject("never", true);
    let plan = [webhook("gate", &hooks, &secret, "retries = 1"), webhook("never", &hooks, &secret, "")].concat();
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, _) = Cluster::watching(&east, &west, Setup { plan, ..Setup::default() }).await;
    let endpoint = format!("https://{}", c.nodes[1].addr);

    east.kill().await;
    let plan = plan_when(&c, "the plan stuck", Duration::from_secs(20), |p| p["phase"] == "stuck").await;
    assert_eq!(statuses(&plan), ["stuck", "pending"]);
    assert_eq!(hooks.requests("gate"), 1, "a permanent failure is not retried");
    let (code, shown) = cli(&["plan", "show", "app", "--endpoint", &endpoint]);
    assert_eq!(code, 0);
    assert!(shown.contains("STUCK") && shown.contains("gate") && shown.contains("400"), "{shown}");
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("witness_plan_stuck{") && l.ends_with(" 1")), "{metrics}");

    // Fixed at the receiver: retry runs the step again, and the plan moves on to the next one.
    hooks.reject("gate", false);
    let (code, out) = cli(&["plan", "retry", "app", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    let plan =
        plan_when(&c, "stuck at the second step", Duration::from_secs(20), |p| statuses(p) == ["done", "stuck"]).await;
    assert_eq!(hooks.effects("gate"), 1);
    assert_eq!(plan["steps"][1]["attempts"], 1);

    // Skipped: the plan is done without it. Neither answer applies to a plan that is not stuck.
    let (code, out) = cli(&["plan", "skip", "app", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    plan_when(&c, "the plan done", Duration::from_secs(10), |p| statuses(p) == ["done", "skipped"]).await;
    let (code, out) = cli(&["plan", "retry", "app", "--endpoint", &endpoint]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("plan is done"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_the_plan_and_every_effect_happens_once() {
    let secrets = tempfile::tempdir().unwrap();
    let hooks = Receiver::start(SECRET).await;
    let secret = write_secret(secrets.path(), "hook.secret", &Receiver::secret_file_contents(SECRET));
    let runs = secrets.path().join("slow.log");
    let plan = [
        webhook("first", &hooks, &secret, ""),
        format!(
            "[[group.step]]\nname = \"slow\"\nkind = \"command\"\nprogram = \"sh\"\n\
             args = [\"-c\", \"echo $WITNESS_IDEMPOTENCY_KEY >> {}; sleep 2\"]\n",
            runs.display()
        ),
        webhook("last", &hooks, &secret, ""),
    ]
    .concat();
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (mut c, leader) = Cluster::watching(&east, &west, Setup { plan, ..Setup::default() }).await;

    east.kill().await;
    plan_when(&c, "step 2 running", Duration::from_secs(20), |p| statuses(p) == ["done", "running", "pending"]).await;
    let leader = c.agreed_leader().await.unwrap_or(leader);
    c.node(leader).kill9();
    let killed = Instant::now();

    let plan =
        plan_when(&c, "the plan done by the new leader", Duration::from_secs(30), |p| p["phase"] == "done").await;
    eprintln!("the new leader finished the plan {:?} after the old one was killed", killed.elapsed());
    assert_eq!(statuses(&plan), ["done", "done", "done"], "{plan:#}");
    assert_eq!(plan["steps"][1]["attempts"], 2, "the interrupted step ran again: {plan:#}");
    assert_eq!((hooks.requests("first"), hooks.effects("first")), (1, 1), "step 1 is not repeated");
    assert_eq!(hooks.effects("last"), 1);
    let keys = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(keys, "app:2:slow\napp:2:slow\n", "the re-run carries the same idempotency key");
}
