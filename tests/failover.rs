//! Automatic failover end to end, with real processes: three witness nodes probe two site
//! stubs over HTTP; kill the primary's stub and the witness fails over; kill a witness node
//! instead and nothing moves.

mod support;

use std::time::{Duration, Instant};

use support::{cli, eventually, Cluster, Setup, SiteStub};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_site_dies_and_the_witness_fails_over_once() {
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, leader) = Cluster::watching(&east, &west, Setup::default()).await;
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 1)));

    east.kill().await;
    let killed = Instant::now();
    let (_, epoch) = eventually(Duration::from_secs(15), "failover to west", || async {
        c.group(leader).await.filter(|(active, _)| active == "west")
    })
    .await;
    let took = killed.elapsed();
    // Budget: detection 2 x 200 ms + 150 ms timeout, hold-down 500 ms, reporting and commit.
    eprintln!("failover committed {took:?} after the primary's site stub died");
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    assert_eq!(epoch, 2, "exactly one failover");
    let s = c.status(leader).await.unwrap();
    let openapi: serde_json::Value =
        c.http.get(c.nodes[0].url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(openapi["paths"]["/v1/groups/{group}/failover"]["post"].is_object(), "/openapi.json is served");
    let group = &s["groups"][0];
    assert_eq!(group["blocked"], true, "a failover blocks the group: {s}");

    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (name, labels, value) in [
        ("witness_detection_seconds_count", vec![], "1"),
        ("witness_group_active", vec!["group=\"app\"", "site=\"west\""], "1"),
        ("witness_group_epoch", vec!["group=\"app\""], "2"),
    ] {
        let found = metrics.lines().any(|l| {
            l.starts_with(&format!("{name}{{"))
                && labels.iter().all(|x| l.contains(x))
                && l.ends_with(&format!(" {value}"))
        });
        assert!(found, "metrics lack {name}{labels:?} = {value}:\n{metrics}");
    }

    // The journal tells the story, the same on every node.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (code, journal) = cli(&["events", "--endpoint", &format!("https://{}", c.nodes[follower as usize - 1].addr)]);
    assert_eq!(code, 0, "{journal}");
    for expected in [
        "sees east down",
        "holding_down",
        "failing_over",
        "failover east -> west at epoch 2",
        "node1=",
        "failover_complete",
        "achieved RTO",
    ] {
        assert!(journal.contains(expected), "journal lacks {expected:?}:\n{journal}");
    }

    // The old primary comes back: it stays standby (no automatic failback), on every node.
    east.restart().await;
    eventually(Duration::from_secs(10), "east seen up again", || c.all_see("east", "up", &[1, 2, 3])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in 1..=3 {
        assert_eq!(c.group(id).await, Some(("west".to_string(), 2)), "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_witness_node_moves_nothing() {
    let east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (mut c, leader) = Cluster::watching(&east, &west, Setup::default()).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.node(victim).kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in (1..=3).filter(|id| *id != victim) {
        assert_eq!(c.group(id).await, Some(("east".to_string(), 1)), "node {id}");
    }
}

async fn health(c: &Cluster, node: u64, site: &str) -> (u16, Option<String>) {
    let resp = c
        .http
        .get(c.nodes[node as usize - 1].url(&format!("/v1/groups/app/sites/{site}/active")))
        .send()
        .await
        .unwrap();
    let current = resp.headers().get("witness-current").map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), current)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_fail_over_by_hand_and_fail_back() {
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, leader) = Cluster::watching(&east, &west, Setup::default()).await;
    let endpoint = format!("https://{}", c.nodes[leader as usize - 1].addr);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let via_follower = format!("https://{}", c.nodes[follower as usize - 1].addr);
    assert_eq!(health(&c, follower, "east").await, (200, Some("true".into())));
    assert_eq!(health(&c, follower, "west").await.0, 503);

    // Paused: the primary dies and nothing moves on its own. The live journal stream shows it.
    let mut stream = c.http.get(c.nodes[follower as usize - 1].url("/v1/events/stream")).send().await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let (code, out) = cli(&["pause", "--endpoint", &via_follower, "app"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("group updated: ") && out.contains("paused true"), "said in words, not JSON: {out}");
    let mut seen = String::new();
    while !seen.contains("paused true") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await.expect("stream stalled");
        seen += &String::from_utf8_lossy(&chunk.unwrap().expect("stream ended"));
    }
    assert!(seen.contains("event: journal") && seen.contains("id: "), "{seen}");
    drop(stream);
    east.kill().await;
    eventually(Duration::from_secs(10), "east seen down", || c.all_see("east", "down", &[1, 2, 3])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 1)), "paused: no automatic failover");

    // A dry run changes nothing and says the checks pass; then the operator fails over.
    let (code, out) = cli(&["failover", "--endpoint", &via_follower, "app", "--to", "west", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would proceed") && out.contains("[pass] active_site_down"), "{out}");
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 1)));
    let (code, out) = cli(&["failover", "--endpoint", &endpoint, "app", "--to", "west", "--reason", "east is gone"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("epoch 2"), "{out}");
    eventually(Duration::from_secs(5), "health endpoint follows the decision", || async {
        (health(&c, follower, "west").await.0 == 200 && health(&c, follower, "east").await.0 == 503).then_some(())
    })
    .await;

    // Status with many groups stays readable: counts by state first, then only what is asked.
    let (code, out) = cli(&["status", "--endpoint", &endpoint, "--state", "failed-over"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 groups: 1 blocked, 1 failed-over") && out.contains("1 of 1 groups selected"), "{out}");
    let (_, out) = cli(&["status", "--endpoint", &endpoint, "--group", "a*", "--site", "west"]);
    assert!(out.contains("1 of 1 groups selected") && out.contains("\napp "), "{out}");
    let (_, out) = cli(&["status", "--endpoint", &endpoint, "--state", "on-primary"]);
    assert!(out.contains("0 of 1 groups selected\n(none)"), "{out}");
    let (code, out) = cli(&["status", "--endpoint", &endpoint, "--state", "gone"]);
    assert_eq!(code, 2, "an unknown state is a usage error: {out}");

    // East returns; failing back is refused while west is healthy and the group is blocked...
    east.restart().await;
    eventually(Duration::from_secs(10), "east up again", || c.all_see("east", "up", &[1, 2, 3])).await;
    let (code, out) = cli(&["failback", "--endpoint", &endpoint, "app"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[FAIL] active_site_down") && out.contains("[FAIL] not_blocked"), "{out}");
    // ...and done when the operator forces a planned switchover.
    let (code, out) = cli(&["failback", "--endpoint", &endpoint, "app", "--force", "--reason", "planned"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 3)));

    let (code, out) = cli(&["ack", "--endpoint", &endpoint, "app"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["resume", "--endpoint", &endpoint, "app"]);
    assert_eq!(code, 0, "{out}");
    let s = c.status(leader).await.unwrap();
    assert_eq!((s["groups"][0]["paused"].clone(), s["groups"][0]["blocked"].clone()), (false.into(), false.into()));
    let (code, out) = cli(&["failover", "--endpoint", &endpoint, "nope", "--to", "west"]);
    assert_eq!(code, 2, "unknown group is a usage error: {out}");
}
