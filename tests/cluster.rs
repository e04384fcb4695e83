//! A witness cluster as real OS processes of the built binary on loopback: election, writes
//! through followers, kill -9 of the leader, catch-up after restart, full restart, the epoch
//! compare-and-set under contention, and membership changes through the CLI.

mod support;

use std::time::{Duration, Instant};

use support::{cli, eventually, Cluster, ELECTION_MAX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_elect_replicate_survive_kill9_and_restart() {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;

    // Writes sent to a follower commit (forwarded to the leader).
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut epoch = 1;
    for i in 0..10 {
        let site = if i % 2 == 0 { "west" } else { "east" };
        let (status, body) = c.failover(follower, site).await;
        assert_eq!(status, 200, "write via follower {follower}: {body}");
        epoch = body["epoch"].as_u64().unwrap();
    }
    assert_eq!(epoch, 11);

    // kill -9 the leader: a new one is elected within the election bound, with every
    // committed write still there.
    c.node(leader).kill9();
    let killed_at = Instant::now();
    let new_leader = eventually(Duration::from_secs(15), "a new leader", || async {
        c.agreed_leader().await.filter(|l| *l != leader)
    })
    .await;
    let took = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    let bound = ELECTION_MAX * 2 + Duration::from_millis(500);
    eprintln!("new leader {new_leader} elected {took:?} after kill -9 of {leader} (bound {bound:?})");
    assert!(took <= bound, "re-election took {took:?}, bound {bound:?}");
    // A follower may learn that the last write committed only from the new leader's first entry.
    for id in (1..=3).filter(|id| *id != leader) {
        eventually(Duration::from_secs(5), &format!("node {id} has every committed write"), || async {
            (c.group(id).await? == ("east".to_string(), 11)).then_some(())
        })
        .await;
    }

    // The cluster keeps committing with two of three.
    let (status, body) = c.failover(new_leader, "west").await;
    assert_eq!(status, 200, "{body}");

    // The killed node restarts with no flags and catches up.
    c.node(leader).start();
    eventually(Duration::from_secs(15), "restarted node catches up", || async {
        (c.group(leader).await? == ("west".to_string(), 12)).then_some(())
    })
    .await;
    c.wait_leader(Duration::from_secs(10)).await;

    // Stop all three cleanly (exit 0), start them again: state intact.
    for id in 1..=3 {
        let status = c.node(id).stop();
        assert!(status.success(), "node {id} exited with {status} on SIGTERM");
    }
    for id in 1..=3 {
        c.node(id).start();
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    for id in 1..=3 {
        let g = eventually(Duration::from_secs(10), "state after full restart", || c.group(id)).await;
        assert_eq!(g, ("west".to_string(), 12), "node {id} after full restart");
    }
    let (status, body) = c.failover(leader, "east").await;
    assert_eq!(status, 200, "write after full restart: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_epoch_cas_has_exactly_one_winner() {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;

    // Thirty forced failovers to the same site through every node at once: each is an epoch
    // compare-and-set on the leader, so exactly one moves the group.
    let attempts = 30;
    let mut tasks = Vec::new();
    for i in 0..attempts {
        let via = (i % 3) as u64 + 1;
        let http = c.http.clone();
        let url = c.nodes[via as usize - 1].url("/v1/groups/app/failover");
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&serde_json::json!({ "to": "west", "force": true, "reason": "race" }))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }));
    }
    let mut winners = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        let outcome = &body["failover"]["outcome"];
        match status {
            200 => {
                winners += 1;
                assert_eq!(outcome["epoch"], 2, "{body}");
            }
            // Planned against epoch 1 and beaten to the log, or planned once west was active.
            409 if outcome["rejection"]["reason"] == "stale_epoch" => {}
            409 => assert!(body["error"].as_str().unwrap_or_default().contains("already active"), "{body}"),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(winners, 1, "exactly one compare-and-set may win");

    // Raft RPCs from anyone but a node are refused (even an admin's token), and from a node
    // of another cluster name too.
    let refused = c.http.post(c.nodes[0].url("/raft/vote")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let peer = support::creds().cert_client("node-2");
    let refused = peer.post(c.nodes[0].url("/raft/vote")).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    // Every answer of the Raft routes says which log entries the node reads: a leader batches
    // its decisions only when every voter's say 2.
    assert_eq!(refused.headers()["witness-log-format"], witness::state::LOG_FORMAT.to_string().as_str());
    assert_eq!(witness::state::LOG_FORMAT, 2);

    // Verdicts are recorded only for members.
    let resp = peer
        .post(c.nodes[0].url("/raft/leader"))
        .header("witness-cluster", "test")
        .json(&serde_json::json!({ "request": { "write": { "ReportVerdict": { "node": 99, "site": "east", "verdict": "down" } } } }))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert!(answer["Err"]["detail"].as_str().is_some_and(|d| d.contains("not a member")), "{answer}");

    // A malformed snapshot from a "leader" is refused as a bad request; the node stays up.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let term = c.status(leader).await.unwrap()["term"].as_u64().unwrap();
    let bogus = serde_json::json!([
        { "leader_id": { "term": term + 5, "node_id": leader }, "committed": true },
        { "last_log_id": null, "last_membership": { "log_id": null, "membership": { "configs": [], "nodes": {} } } },
        [1, 2, 3, 4]
    ]);
    let as_leader = support::creds().cert_client(&format!("node-{leader}"));
    let resp = as_leader
        .post(c.nodes[follower as usize - 1].url("/raft/snapshot"))
        .header("witness-cluster", "test")
        .json(&bogus)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("snapshot refused"), "{text}");
    assert!(c.status(follower).await.is_some(), "node {follower} must survive a bad snapshot");

    // Far below the count-based threshold, the time-based trigger (2 s here) still snapshots.
    eventually(Duration::from_secs(10), "a time-based snapshot", || async {
        let s = c.status(leader).await?;
        (s["snapshot_index"].as_u64()? + 1 >= s["applied_index"].as_u64()?).then_some(())
    })
    .await;
    for id in 1..=3 {
        let g =
            eventually(Duration::from_secs(5), "replicated", || async { c.group(id).await.filter(|g| g.1 == 2) }).await;
        assert_eq!(g, ("west".to_string(), 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_add_and_remove_through_a_follower() {
    let mut c = Cluster::new(3, 1);
    let leader = c.start_voters(3).await;
    // Node 4 is configured but not an initial member: it waits to be added.
    c.node(4).start();
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let endpoint = format!("https://{}", c.nodes[follower as usize - 1].addr);
    let new_addr = c.nodes[3].addr.clone();

    let (code, out) = cli(&["members", "--endpoint", &endpoint, "add", "4", &new_addr]);
    assert_eq!(code, 0, "members add: {out}");
    assert!(out.contains("voters: [1, 2, 3, 4]"), "{out}");
    eventually(Duration::from_secs(10), "node 4 has the replicated state", || c.group(4)).await;
    c.wait_leader(Duration::from_secs(10)).await;

    // Holding the group is not yet having applied everything committed: until then its status
    // says NOT READY and exits 1.
    let out = eventually(Duration::from_secs(10), "node 4 ready", || async {
        let (code, out) = cli(&["status", "--endpoint", &format!("https://{new_addr}")]);
        (code == 0).then_some(out)
    })
    .await;
    assert!(out.contains("app"), "{out}");

    // Node 4 is down when it is removed, and comes back: the others tell it it was removed,
    // and it says so instead of waiting, not ready, for a leader.
    c.node(4).kill9();
    let (code, out) = cli(&["members", "--endpoint", &endpoint, "remove", "4"]);
    assert_eq!(code, 0, "members remove: {out}");
    assert!(out.contains("voters: [1, 2, 3]"), "{out}");
    c.node(4).start();
    let reason = eventually(Duration::from_secs(20), "node 4 knows it was removed", || async {
        let s = c.status(4).await?;
        s["not_ready_reason"].as_str().filter(|r| r.contains("removed this node")).map(String::from)
    })
    .await;
    assert!(reason.contains("stop it"), "{reason}");
    let (code, out) = cli(&["status", "--endpoint", &format!("https://{new_addr}")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT READY: the cluster removed this node"), "{out}");

    let (code, out) = cli(&["members", "--endpoint", &endpoint, "add", "4", &new_addr]);
    assert_eq!(code, 1, "re-adding a removed id must be refused: {out}");
    assert!(out.contains("never reused"), "{out}");

    let (code, out) = cli(&["members", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&new_addr), "{out}");
}

/// A member removed while it runs learns it was removed (from the log, the membership it
/// holds, or a peer's 410 Gone once it stops hearing from the leader) and says so: not ready,
/// "stop it", rather than waiting for a leader forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_running_learns_it_was_removed() {
    let mut c = Cluster::new(3, 1);
    let leader = c.start_voters(3).await;
    c.node(4).start();
    let endpoint = format!("https://{}", c.nodes[leader as usize - 1].addr);
    let addr = c.nodes[3].addr.clone();
    let (code, out) = cli(&["members", "--endpoint", &endpoint, "add", "4", &addr]);
    assert_eq!(code, 0, "members add: {out}");
    eventually(Duration::from_secs(10), "node 4 ready with the replicated state", || async {
        let s = c.status(4).await?;
        (s["ready"] == true && c.group(4).await.is_some()).then_some(())
    })
    .await;

    let (code, out) = cli(&["members", "--endpoint", &endpoint, "remove", "4"]);
    assert_eq!(code, 0, "members remove: {out}");
    let reason = eventually(Duration::from_secs(20), "node 4 knows it was removed", || async {
        let s = c.status(4).await?;
        s["not_ready_reason"].as_str().filter(|r| r.contains("removed this node")).map(String::from)
    })
    .await;
    assert!(reason.contains("stop it"), "{reason}");
    let (code, out) = cli(&["status", "--endpoint", &format!("https://{addr}")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT READY: the cluster removed this node"), "{out}");
    // It stays so: the others run on without it.
    tokio::time::sleep(ELECTION_MAX * 3).await;
    let s = c.status(4).await.expect("node 4 answers");
    assert!(s["not_ready_reason"].as_str().is_some_and(|r| r.contains("removed this node")), "{s}");
    for id in 1..=3 {
        let s = c.status(id).await.expect("a member answers");
        assert!(s["ready"] == true && s["leader"]["id"] == leader, "the removed node disturbed no one: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9_mid_stream() {
    let mut c = Cluster::new(1, 0);
    c.start_voters(1).await;

    // A writer acknowledges epochs as fast as it can; kill -9 lands mid-stream.
    let http = c.http.clone();
    let url = c.nodes[0].url("/v1/groups/app/failover");
    let writer = tokio::spawn(async move {
        let mut acked = 1u64;
        loop {
            let site = if acked % 2 == 1 { "west" } else { "east" };
            let order = serde_json::json!({ "to": site, "force": true, "reason": "writer" });
            match http.post(&url).json(&order).send().await {
                Ok(r) if r.status() == 200 => {
                    let answer = r.json::<serde_json::Value>().await.unwrap();
                    acked = answer["failover"]["outcome"]["epoch"].as_u64().unwrap()
                }
                _ => return acked,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.node(1).kill9();
    let acked = writer.await.unwrap();
    assert!(acked > 10, "the writer should have committed a good number of writes, got {acked}");

    c.node(1).start();
    c.wait_leader(Duration::from_secs(20)).await;
    let (_, epoch) = eventually(Duration::from_secs(10), "state after restart", || c.group(1)).await;
    // A sole voter stays ready beyond an election timeout (it is its own quorum).
    tokio::time::sleep(ELECTION_MAX * 2).await;
    let ready = c.http.get(c.nodes[0].url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    // Every acknowledged write is durable; at most the one in flight at the kill is extra.
    assert!(epoch == acked || epoch == acked + 1, "acknowledged epoch {acked}, recovered {epoch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_snapshot_after_log_compaction() {
    let mut c = Cluster::with_raft(3, 0, "snapshot_max_entries = 10\nlog_keep_after_snapshot = 0");
    let leader = c.start_voters(3).await;
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    assert!(c.node(lagging).stop().success());

    let mut epoch = 1;
    for i in 0..30 {
        let site = if i % 2 == 0 { "west" } else { "east" };
        let (status, body) = c.failover(leader, site).await;
        assert_eq!(status, 200, "{body}");
        epoch = body["epoch"].as_u64().unwrap();
    }
    // The leader snapshots and drops the entries the stopped follower is missing.
    eventually(Duration::from_secs(10), "leader log compacted", || async {
        let s = c.status(leader).await?;
        (s["purged_index"].as_u64()? >= 20).then_some(())
    })
    .await;

    c.node(lagging).start();
    eventually(Duration::from_secs(15), "lagging follower restored from the snapshot", || async {
        let s = c.status(lagging).await?;
        let restored = s["snapshot_index"].as_u64()? >= 20;
        (restored && c.group(lagging).await? == ("east".to_string(), epoch)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_from_its_quorum_stops_being_ready_and_refuses_writes() {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;
    for id in (1..=3).filter(|id| *id != leader) {
        c.node(id).kill9();
    }
    // Within about an election timeout the lone leader knows it has no quorum.
    let reason = eventually(Duration::from_secs(10), "the lone leader turns not-ready", || async {
        let resp = c.http.get(c.nodes[leader as usize - 1].url("/readyz")).send().await.ok()?;
        if resp.status() != 503 {
            return None;
        }
        let body: serde_json::Value = resp.json().await.ok()?;
        Some(body["reason"].as_str()?.to_string())
    })
    .await;
    assert!(reason.contains("quorum") || reason.contains("leader"), "{reason}");
    // A write is refused promptly as unavailable: it neither hangs nor commits.
    let started = Instant::now();
    let (status, body) = c.post(leader, "/v1/groups/app/pause", &serde_json::Value::Null).await;
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "refusal took {:?}", started.elapsed());
    let (code, out) = cli(&["status", "--endpoint", &format!("https://{}", c.nodes[leader as usize - 1].addr)]);
    assert_eq!(code, 1, "status of a node without quorum exits 1: {out}");
    assert!(out.contains("NOT READY"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_whose_member_list_disagrees_refuses_to_bootstrap() {
    let mut c = Cluster::new(3, 0);
    c.node(1).start();
    eventually(Duration::from_secs(10), "node 1 serving", || c.status(1)).await;
    // Node 2's config lists only nodes 1 and 2: bootstrapping with it could form a second
    // majority, so it must refuse once it sees node 1 disagree.
    let wrong = support::node_config(
        2,
        &c.nodes[1].addr,
        &[(1, c.nodes[0].addr.clone()), (2, c.nodes[1].addr.clone())],
        &c.dir.path().join("node2"),
        &support::Setup::default(),
    );
    std::fs::write(&c.nodes[1].config, wrong).unwrap();
    c.node(2).start();
    let log = c.nodes[1].log.clone();
    let line = eventually(Duration::from_secs(10), "refusal logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.lines().find(|l| l.contains("refusing to bootstrap")).map(String::from) }
    })
    .await;
    // Both member lists as JSON, as operators and log pipelines read them (not Rust's debug form).
    assert!(line.contains(r#"ours={"cluster":"test","initial_members":{"1":"#), "{line}");
    assert!(!line.contains("BootstrapInfo"), "{line}");
    // Node 2 may still join the real cluster when node 1 replicates to it, but it never holds
    // the two-member list of its own config.
    let s = c.status(2).await.expect("node 2 serves status");
    let ids: Vec<u64> = s["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert!(ids.is_empty() || ids == [1, 2, 3], "node 2 has members {ids:?}: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_answers_is_not_made_a_voter() {
    let mut c = Cluster::new(3, 1);
    let leader = c.start_voters(3).await;
    // Node 4's address is bound but nothing serves it: a black hole, like a wrong address.
    let endpoint = format!("https://{}", c.nodes[leader as usize - 1].addr);
    let dead = c.nodes[3].addr.clone();
    let (code, out) = cli(&["members", "--endpoint", &endpoint, "add", "4", &dead]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did not catch up"), "{out}");
    let (code, out) = cli(&["members", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&dead), "the unreachable node must be gone: {out}");

    // An address that leads to a member, as given or spelled another way, is never taken for
    // a new node: the first is refused at once, the second's RPCs by the node they reach (its
    // own id is not the one they are meant for). Raft once stopped on a node told to add
    // itself under a new id.
    let own = c.nodes[leader as usize - 1].addr.clone();
    let (status, body) = c.post(leader, "/v1/members", &serde_json::json!({ "id": 5, "addr": own })).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&format!("is the address of node {leader}")), "{body}");
    let alias = own.replace("127.0.0.1", "localhost");
    let (status, body) = c.post(leader, "/v1/members", &serde_json::json!({ "id": 5, "addr": alias })).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("did not catch up"), "{body}");
    let (status, body) = c.failover(leader, "west").await;
    assert_eq!(status, 200, "the cluster keeps committing: {body}");
    assert!(!c.logs().contains("panicked"), "{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_without_an_election_timeout() {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;
    let stopped_at = Instant::now();
    assert!(c.node(leader).stop().success());
    let new_leader = eventually(Duration::from_secs(10), "a new leader", || async {
        c.agreed_leader().await.filter(|l| *l != leader)
    })
    .await;
    let took = stopped_at.elapsed();
    eprintln!("leadership moved from {leader} to {new_leader} {took:?} after SIGTERM");
    assert!(took < ELECTION_MAX, "hand-off took {took:?}, an election timeout is {ELECTION_MAX:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_off_shows_in_status_and_metrics() {
    let mut c = Cluster::new(1, 0);
    c.start_voters(1).await;
    let endpoint = format!("https://{}", c.nodes[0].addr);
    let metric = |on: u8| format!("witness_automation_enabled{{node_id=\"1\"}} {on}");
    let metrics = || async { c.http.get(c.nodes[0].url("/metrics")).send().await.unwrap().text().await.unwrap() };
    assert!(metrics().await.contains(&metric(1)));
    let (code, out) = cli(&["automation", "off", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    let s = c.status(1).await.unwrap();
    assert_eq!(s["automation"], false, "{s}");
    let (_, out) = cli(&["status", "--endpoint", &endpoint]);
    assert!(out.contains("AUTOMATION OFF"), "{out}");
    assert!(metrics().await.contains(&metric(0)));
    let (code, out) = cli(&["automation", "on", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    let (_, out) = cli(&["status", "--endpoint", &endpoint]);
    assert!(!out.contains("AUTOMATION OFF"), "{out}");
}

/// A node whose config times failovers differently from what the leader registered (another
/// hold_down, another probe timeout) says so, setting by setting, in its status, its CLI
/// rendering and its metrics; the leader does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_timings_differ_from_the_registered_ones_says_which() {
    let mut c = Cluster::new(3, 0);
    let text = std::fs::read_to_string(&c.nodes[2].config).unwrap();
    let text = text.replacen("probe_timeout = \"150ms\"", "probe_timeout = \"100ms\"", 1);
    std::fs::write(&c.nodes[2].config, text.replace("hold_down = \"500ms\"", "hold_down = \"5s\"")).unwrap();
    c.node(1).start();
    c.node(2).start();
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "group registered", || c.group(leader)).await;
    c.node(3).start();
    let differences = eventually(Duration::from_secs(20), "node 3 reports its differences", || async {
        let s = c.status(3).await?;
        // (Until it has applied the registration, its state has no sites to compare.)
        let listed = s["config_differences"].as_array().is_some_and(|d| !d.is_empty());
        (s["config_matches_cluster"] == false && listed).then(|| s["config_differences"].clone())
    })
    .await;
    assert_eq!(
        differences,
        serde_json::json!([
            "site east: probe_timeout 100ms here, 150ms registered",
            "group app: hold_down 5s here, 500ms registered"
        ])
    );
    let s = c.status(leader).await.unwrap();
    assert_eq!(
        (s["config_matches_cluster"].as_bool(), s["config_differences"].as_array().map(Vec::len)),
        (Some(true), Some(0))
    );
    let (_, out) = cli(&["status", "--endpoint", &format!("https://{}", c.nodes[2].addr)]);
    assert!(
        out.contains("differs from what the cluster registered") && out.contains("  group app: hold_down 5s here"),
        "{out}"
    );
    let metrics = c.http.get(c.nodes[2].url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("witness_config_matches_cluster{node_id=\"3\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tries_the_next_endpoint_and_a_follow_outlives_a_node_restart() {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let url = |id: u64| format!("https://{}", c.nodes[id as usize - 1].addr);
    let (down, up) = (url(follower), url(leader));

    // `events --follow` on the follower, which is then killed and restarted.
    let log = c.dir.path().join("follow.log");
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_witness"))
        .args(["events", "--follow", "--endpoint", &down])
        .env("WITNESS_CA", &support::creds().ca)
        .env("WITNESS_TOKEN_FILE", support::creds().token_file("admin"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.node(follower).kill9();
    // One node down: a list of endpoints goes on to the next.
    let (code, out) = cli(&["status", "--endpoint", &format!("{down},{up}")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("node {leader} (leader)")), "answered by the leader: {out}");
    let (code, out) = cli(&["status", "--endpoint", &down]);
    assert_eq!(code, 3, "alone, the dead node is unreachable: {out}");

    c.node(follower).start();
    let (code, out) = cli(&["pause", "--endpoint", &up, "app"]);
    assert_eq!(code, 0, "{out}");
    eventually(Duration::from_secs(20), "the follow prints the pause after the restart", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("paused true").then_some(()) }
    })
    .await;
    assert!(follow.try_wait().unwrap().is_none(), "the follow is still running");
    follow.kill().unwrap();
    let out = follow.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("waiting for the witness") && said.contains("answers again"), "{said}");
}
