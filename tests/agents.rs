//! Site agents end to end, with real processes: three witness nodes probe two site stubs, and
//! one `witness agent` per site heartbeats them and exchanges peer leases with the other. Kill
//! east's site and agent: west's agent becomes writable after the lease-safe drain. Stop the
//! whole witness cluster instead: east stays writable on its peer lease, west stays standby.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, Cluster, Setup, SiteStub};

async fn cluster_with_agents(east: &SiteStub, west: &SiteStub) -> (Cluster, u64) {
    let setup = Setup { site_urls: Some((east.url(), west.url())), agents: true, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    let leader = c.start_voters(3).await;
    c.agent("east").start();
    c.agent("west").start();
    eventually(Duration::from_secs(15), "east writable, west standby", || async {
        (c.writable("east").await? && !c.writable("west").await?).then_some(())
    })
    .await;
    (c, leader)
}

/// POSTs as site west's agent (its token).
async fn post(_c: &Cluster, url: String, body: Value) -> (u16, Value) {
    let resp = support::creds().client(Some("west")).post(url).json(&body).send().await.expect("request");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_dies_and_the_survivors_agent_becomes_writable_after_the_drain() {
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (mut c, leader) = cluster_with_agents(&east, &west).await;

    // The heartbeat API: the leader answers roles; a follower names the leader; bad input is
    // named.
    let (status, answer) = post(
        &c,
        c.nodes[leader as usize - 1].url("/v1/sites/west/heartbeat"),
        json!({
            "peer_reachable": true, "groups": { "app": { "in_sync": true } }
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["groups"]["app"]["role"].as_str(), answer["groups"]["app"].get("lease_ms")),
        (Some("standby"), None)
    );
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (status, body) =
        post(&c, c.nodes[follower as usize - 1].url("/v1/sites/west/heartbeat"), json!({"peer_reachable": true})).await;
    assert_eq!((status, body["code"].as_str()), (421, Some("not_leader")), "{body}");
    assert_eq!(body["leader_addr"].as_str(), Some(c.nodes[leader as usize - 1].addr.as_str()));
    let (status, body) =
        post(&c, c.nodes[leader as usize - 1].url("/v1/sites/north/heartbeat"), json!({"peer_reachable": true})).await;
    assert_eq!(status, 403, "west's token speaks for west only: {body}");
    let (status, body) =
        post(&c, c.nodes[leader as usize - 1].url("/v1/sites/west/heartbeat"), json!({"peer_reachble": true})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("peer_reachble"), "{body}");
    let huge = json!({ "peer_reachable": true, "padding": "x".repeat(100_000) });
    let (status, _) = post(&c, c.nodes[leader as usize - 1].url("/v1/sites/west/heartbeat"), huge).await;
    assert_eq!(status, 413, "a body over the API's limit is refused");

    // The leader's status shows the agents' reports and the lease east holds.
    eventually(Duration::from_secs(5), "agents in the leader's status", || async {
        let s = c.status(leader).await?;
        let sites = &s["groups"][0]["agents"]["sites"];
        let ok = sites["east"]["lease_remaining_ms"].as_u64()? > 0
            && sites["east"]["role"] == "active"
            && sites["west"]["role"] == "standby"
            && sites["west"]["in_sync"] == true;
        ok.then_some(())
    })
    .await;

    east.kill().await;
    c.agent("east").kill9();
    let killed = Instant::now();
    eventually(Duration::from_secs(15), "west writable", || async { c.writable("west").await?.then_some(()) }).await;
    let took = killed.elapsed();
    // Budget: detection 2 x 200 ms + 150 ms, hold-down 500 ms, then the lease (1 s + 100 ms
    // from east's last grant, overlapping detection) and west's drain, and heartbeat rounds.
    eprintln!("west writable {took:?} after east's site and agent died");
    assert!(took < Duration::from_secs(8), "promotion took {took:?}");
    assert_eq!(c.group(leader).await, Some(("west".to_string(), 2)));

    // The roles each site's hooks saw, in order, and the journal's phases.
    eventually(Duration::from_secs(5), "west's promote hook", || async {
        c.agents[1].roles().contains(&"role=active epoch=2".to_string()).then_some(())
    })
    .await;
    assert_eq!(c.agents[0].roles(), vec!["role=active epoch=1"]);
    // (Draining runs no hook: the site was not writable and is not yet.)
    assert_eq!(c.agents[1].roles(), vec!["role=standby epoch=1", "role=active epoch=2"]);
    let events: Value =
        c.http.get(c.nodes[leader as usize - 1].url("/v1/events")).send().await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["failover", "draining", "promoting", "promoted", "failover_complete"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    // A synchronous copy in sync: nothing lost; the RTO from the first failed probe on record.
    let complete = events["events"].as_array().unwrap().iter().find(|e| e["kind"] == "failover_complete").unwrap();
    let message = complete["message"].as_str().unwrap();
    assert!(message.contains("achieved RTO") && message.contains("RPO 0.0 s"), "{message}");
    let at = |kind: &str| {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .and_then(|e| e["at_ms"].as_u64())
            .unwrap()
    };
    assert!(at("failover") <= at("promoted"), "phases out of order: {events}");

    // East's agent comes back: west is active, so east stays standby (after fencing nothing:
    // it starts knowing no role).
    c.agent("east").start();
    eventually(Duration::from_secs(10), "east's agent back as standby", || async {
        c.agents[0].roles().last().is_some_and(|r| r == "role=standby epoch=2").then_some(())
    })
    .await;
    assert_eq!(c.writable("east").await, Some(false));
    assert_eq!(c.writable("west").await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_whole_witness_down_east_keeps_writing_on_its_peer_lease() {
    let east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (mut c, _) = cluster_with_agents(&east, &west).await;
    // West grants only once the witness has told it it is standby: wait for east to hold the
    // peer lease (what this test is about) before the witness goes.
    let east_status = format!("http://{}/v1/status", c.agents[0].addr);
    eventually(Duration::from_secs(10), "east holds a peer lease", || async {
        let s: Value = c.http.get(&east_status).send().await.ok()?.json().await.ok()?;
        (s["groups"]["app"]["peer_lease_ms"].as_u64()? > 0).then_some(())
    })
    .await;
    for id in 1..=3 {
        c.node(id).kill9();
    }
    // Five lease lengths and more: the peer lease alone carries east; west never writes.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert_eq!(c.writable("east").await, Some(true), "east lost its write permission with the witness down");
        assert_eq!(c.writable("west").await, Some(false), "west became writable with the witness down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.agents[0].roles(), vec!["role=active epoch=1"]);
    assert_eq!(c.agents[1].roles(), vec!["role=standby epoch=1"]);

    // Losing the peer too leaves east with no lease at all: it fences itself.
    c.agent("west").kill9();
    eventually(Duration::from_secs(5), "east fenced", || async { (!c.writable("east").await?).then_some(()) }).await;
    eventually(Duration::from_secs(5), "east's fence hook", || async {
        c.agents[0].roles().contains(&"role=fenced epoch=1".to_string()).then_some(())
    })
    .await;
}
