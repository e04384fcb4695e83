//! Site agents end to end, with real processes: three witness nodes probe two site stubs, and
//! one `witness agent` per site heartbeats them and exchanges peer leases with the other. Kill
//! east's site and agent: west's agent becomes writable after the lease-safe drain. Stop the
//! whole witness cluster instead: east stays writable on its peer lease, west stays standby.
//! An agent grants peer leases only to the other site's certificate, loads its certificate
//! again on SIGHUP, and trusts both CAs of a bundle while the CA is replaced.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{cluster_with_agents, eventually, Cluster, Setup, SiteStub};

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
    // A heartbeat may hold 1 MiB (a report per group of its site); more is refused unread.
    let huge = json!({ "peer_reachable": true, "padding": "x".repeat(1_100_000) });
    let (status, _) = post(&c, c.nodes[leader as usize - 1].url("/v1/sites/west/heartbeat"), huge).await;
    assert_eq!(status, 413, "a body over the heartbeat's limit is refused");

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
    // A follower's status has them too: it asks the leader, which alone hears the agents.
    let s = c.status(follower).await.unwrap();
    assert_eq!(s["groups"][0]["agents"]["sites"]["east"]["role"], "active", "{s}");
    assert!(s.get("leader_view_unavailable").is_none(), "{s}");
    let (_, out) = support::cli(&["status", "--endpoint", &format!("https://{}", c.nodes[follower as usize - 1].addr)]);
    assert!(out.contains("AGENTS (as reported to the leader)"), "{out}");

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
    // East's dead agent is shown silent (status, and the metric WitnessAgentSilent reads), with
    // the role it last reported as history; west's agent is heard.
    let s = c.status(leader).await.unwrap();
    let sites = &s["groups"][0]["agents"]["sites"];
    assert_eq!(
        (sites["east"]["silent"].as_bool(), sites["east"]["role"].as_str()),
        (Some(true), Some("active")),
        "{s}"
    );
    assert_eq!(sites["west"]["silent"].as_bool(), Some(false), "{s}");
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    for (site, silent) in [("east", 1), ("west", 0)] {
        let series = format!("witness_agent_silent{{group=\"app\",site=\"{site}\",node_id=\"{leader}\"}} {silent}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    let (_, out) = support::cli(&["status", "--endpoint", &format!("https://{}", c.nodes[leader as usize - 1].addr)]);
    assert!(out.contains("(was active)") && out.contains("SILENT"), "{out}");

    // The roles each site's hooks saw, in order, and the journal's phases.
    eventually(Duration::from_secs(5), "west's promote hook", || async {
        c.agents[1].roles().contains(&"role=active epoch=2".to_string()).then_some(())
    })
    .await;
    assert_eq!(c.agents[0].roles(), vec!["role=active epoch=1"]);
    // (Draining runs no hook: the site was not writable and is not yet.)
    assert_eq!(c.agents[1].roles(), vec!["role=standby epoch=1", "role=active epoch=2"]);
    eventually(Duration::from_secs(5), "the failover's phases in the journal", || async {
        let kinds = c.journal_kinds(leader).await?;
        ["failover", "draining", "promoting", "promoted", "failover_complete"]
            .iter()
            .all(|k| kinds.iter().any(|x| x == k))
            .then_some(())
    })
    .await;
    let events: Value =
        c.http.get(c.nodes[leader as usize - 1].url("/v1/events")).send().await.unwrap().json().await.unwrap();
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
    let east_status = format!("https://{}/v1/status", c.agents[0].addr);
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
    // Each agent says the witness is gone, with every node's reason, and says it once for the
    // six seconds (not once per heartbeat).
    let log = std::fs::read_to_string(&c.agents[0].log).unwrap();
    let said = log.matches("no witness node answers heartbeats").count();
    assert_eq!(said, 1, "{log}");
    // (The test keeps the killed nodes' sockets open: connections are accepted and never answered.)
    assert!(log.contains("timed out"), "{log}");

    // Losing the peer too leaves east with no lease at all: it fences itself.
    c.agent("west").kill9();
    eventually(Duration::from_secs(5), "east fenced", || async { (!c.writable("east").await?).then_some(()) }).await;
    eventually(Duration::from_secs(5), "east's fence hook", || async {
        c.agents[0].roles().contains(&"role=fenced epoch=1".to_string()).then_some(())
    })
    .await;
}

/// With its site certificate the agent serves HTTPS, and grants peer leases only to a request
/// that presents the other site's certificate for the site it names: not this site's own, not
/// a witness node's, not a client without one, and nothing at all over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_leases_answer_only_the_other_sites_certificate() {
    let creds = support::creds();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = local_agent("east", &creds.ca, &creds.dir.join("site-east"), listener, "127.0.0.1:9").await;
    let addr = running.addr;
    let ask = |client: reqwest::Client, scheme: &'static str, site: &'static str| async move {
        let body = json!({ "site": site, "groups": { "app": 1 } });
        let resp = client.post(format!("{scheme}://{addr}/v1/peer/lease")).json(&body).send().await.ok()?;
        Some((resp.status().as_u16(), resp.text().await.unwrap_or_default()))
    };

    let (status, body) = ask(creds.cert_client("site-west"), "https", "west").await.expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["site"], "east", "{body}");

    for (who, client, site) in [
        ("west's certificate naming another site", creds.cert_client("site-west"), "north"),
        ("east's own certificate", creds.cert_client("site-east"), "west"),
        ("a witness node's certificate", creds.cert_client("node-1"), "west"),
        ("no certificate", creds.client(None), "west"),
        ("no certificate, with the admin token", creds.client(Some("admin")), "west"),
    ] {
        let (status, body) = ask(client, "https", site).await.unwrap_or_else(|| panic!("{who}: no answer"));
        assert_eq!(status, 403, "{who}: {body}");
        assert!(body.contains(&format!("site-{site}")), "{who}: the refusal names the certificate needed: {body}");
    }
    let plain = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    assert_eq!(ask(plain, "http", "west").await, None, "plain HTTP must get no answer");

    // What applications and probes ask stays open to any client trusting the CA.
    let healthz = creds.client(None).get(format!("https://{addr}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    running.shutdown().await;
}

/// SIGHUP: the agent loads its certificate again, and new connections get the new one; a broken
/// certificate file is refused and the agent keeps what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_agents_certificate() {
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let setup = Setup { site_urls: Some((east.url(), west.url())), agents: true, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    // East's own copy of the credentials, so the rotation touches nothing shared.
    let dir = c.dir.path().join("tls-east");
    c.agent("east").own_credentials(&dir);
    c.agent("east").start();
    let url = format!("https://{}/healthz", c.agent("east").addr);
    let served = || async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_info(true)
            .tls_backend_preconfigured(witness::tls::client_config(&support::creds().ca, None).unwrap())
            .build()
            .unwrap();
        let resp = client.get(&url).send().await.ok()?;
        Some(resp.extensions().get::<reqwest::tls::TlsInfo>()?.peer_certificate()?.to_vec())
    };
    let pem = |name: &str| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(dir.join(name)).unwrap().to_vec()
    };
    let first = eventually(Duration::from_secs(10), "the agent serves", served).await;
    assert_eq!(first, pem("site-east.crt"));

    witness::tls::certs::issue(&dir, "site-east", &[]).unwrap();
    let rotated = pem("site-east.crt");
    assert_ne!(rotated, first);
    let log = c.agent("east").log.clone();
    let logged = |what: &'static str| {
        let log = log.clone();
        async move {
            eventually(Duration::from_secs(10), what, || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                async move { text.contains(what).then_some(()) }
            })
            .await
        }
    };
    c.agent("east").signal(libc::SIGHUP);
    logged("certificate and token reloaded").await;
    assert_eq!(served().await, Some(rotated.clone()), "new connections get the new certificate");

    std::fs::write(dir.join("site-east.crt"), "not a certificate\n").unwrap();
    c.agent("east").signal(libc::SIGHUP);
    logged("reload refused").await;
    assert_eq!(served().await, Some(rotated), "a broken file changes nothing");
}

/// An agent in this process for `site`, trusting `ca`, presenting `cert` (`.crt` and `.key`
/// after this path), asking `peer` for peer leases every 100 ms; no witness answers it.
async fn local_agent(
    site: &str,
    ca: &std::path::Path,
    cert: &std::path::Path,
    listener: tokio::net::TcpListener,
    peer: &str,
) -> witness::agent::RunningAgent {
    let (ca, cert) = (ca.display(), cert.display());
    let text = format!(
        "[agent]\nsite = \"{site}\"\nlisten = \"127.0.0.1:0\"\npeer = \"{peer}\"\nwitness = [\"127.0.0.1:9\"]\n\
         heartbeat_interval = \"100ms\"\nca = \"{ca}\"\ncert = \"{cert}.crt\"\nkey = \"{cert}.key\"\n\
         [[group]]\nname = \"app\"\n"
    );
    let config = witness::config::agent::AgentConfig::from_toml(&text, std::path::Path::new("agent.toml")).unwrap();
    witness::agent::start(config, listener).await.unwrap()
}

/// The asking side checks too: east counts a peer reachable only when the peer's certificate
/// names another site. Answered by an agent presenting west's certificate, it is; answered by
/// one presenting a witness node's certificate (from the same CA), it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_counts_only_from_another_sites_certificate() {
    for (peer_cert, reachable) in [("site-west", true), ("node-1", false)] {
        let east_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (east_addr, peer_addr) = (east_listener.local_addr().unwrap(), peer_listener.local_addr().unwrap());
        let (ca, dir) = (&support::creds().ca, &support::creds().dir);
        let east = local_agent("east", ca, &dir.join("site-east"), east_listener, &peer_addr.to_string()).await;
        let peer = local_agent("west", ca, &dir.join(peer_cert), peer_listener, &east_addr.to_string()).await;
        // Past the peer timeout (3 x 100 ms) after start, when only exchanges count.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if reachable {
            eventually(Duration::from_secs(10), "east counts west reachable", || async {
                east.agent.status().peer_reachable.then_some(())
            })
            .await;
        } else {
            for _ in 0..10 {
                assert!(!east.agent.status().peer_reachable, "a grant counted from {peer_cert}'s certificate");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        east.shutdown().await;
        peer.shutdown().await;
    }
}

/// Replacing the CA without a gap (README, "Replace the CA"): while `ca` holds both CAs, a
/// certificate from either is accepted both ways; once the old CA is dropped, its certificates
/// fail the handshake. Agents and nodes load certificates the same way (`tls::Material`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_trusts_both_cas_during_a_rotation() {
    let old = support::creds();
    let new = tempfile::tempdir().unwrap();
    witness::tls::certs::generate(new.path(), &[], &["east".into(), "west".into()], &[], &Default::default()).unwrap();
    let bundle = new.path().join("bundle.crt");
    let pems = [std::fs::read_to_string(&old.ca).unwrap(), std::fs::read_to_string(new.path().join("ca.crt")).unwrap()];
    std::fs::write(&bundle, pems.concat()).unwrap();
    let ask = |client: reqwest::Client, addr: std::net::SocketAddr| async move {
        let body = json!({ "site": "west", "groups": {} });
        let resp = client.post(format!("https://{addr}/v1/peer/lease")).json(&body).send().await.ok()?;
        Some(resp.status().as_u16())
    };
    let west = |dir: &std::path::Path, ca: &std::path::Path| support::cert_client(dir, "site-west", ca);

    // Mid-rotation: east already has the new CA's certificate; both sides trust both CAs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let east = local_agent("east", &bundle, &new.path().join("site-east"), listener, "127.0.0.1:9").await;
    assert_eq!(ask(west(&old.dir, &bundle), east.addr).await, Some(200), "old certificate, bundle");
    assert_eq!(ask(west(new.path(), &bundle), east.addr).await, Some(200), "new certificate, bundle");
    assert_eq!(ask(west(&old.dir, &old.ca), east.addr).await, None, "a client trusting only the old CA");
    east.shutdown().await;

    // The old CA dropped: its certificates no longer get through the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ca = new.path().join("ca.crt");
    let east = local_agent("east", &ca, &new.path().join("site-east"), listener, "127.0.0.1:9").await;
    assert_eq!(ask(west(new.path(), &ca), east.addr).await, Some(200));
    assert_eq!(ask(west(&old.dir, &bundle), east.addr).await, None, "the old CA's certificate after the rotation");
    east.shutdown().await;
}

/// A witness restored from a backup older than the epoch its agents hold: the leader sees the
/// agents ahead in their heartbeats and says so (status, metric, journal), moves nothing and
/// refuses an unforced order; a forced failover to the site really active takes the epoch past
/// the agents', and they follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_restored_behind_its_agents_says_so_until_a_forced_failover_takes_the_epoch_past_them() {
    let east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (mut c, _) = cluster_with_agents(&east, &west).await;
    let data = |c: &Cluster, id: u64| c.dir.path().join(format!("node{id}"));
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let _ = std::fs::remove_dir_all(to);
        let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().expect("cp");
        assert!(status.success(), "cp -a {} {}", from.display(), to.display());
    };
    // The backup: every node's data directory at epoch 1, taken while stopped.
    for id in 1..=3 {
        assert!(c.node(id).stop().success());
        copy(&data(&c, id), &c.dir.path().join(format!("backup{id}")));
    }
    for id in 1..=3 {
        c.node(id).start();
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    // Life goes on: west becomes active at epoch 2.
    let (status, body) = c.failover(leader, "west").await;
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "west writable at epoch 2", || async {
        (c.writable("west").await? && !c.writable("east").await?).then_some(())
    })
    .await;
    // The witness is restored from the backup: it is back at epoch 1 with east active.
    for id in 1..=3 {
        assert!(c.node(id).stop().success());
        copy(&c.dir.path().join(format!("backup{id}")), &data(&c, id));
    }
    for id in 1..=3 {
        c.node(id).start();
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 1)), "restored");
    let status = eventually(Duration::from_secs(15), "the leader sees the agents ahead", || async {
        let s = c.status(leader).await?;
        (s["groups"][0]["agents"]["agents_ahead"] == 2).then_some(s)
    })
    .await;
    assert_eq!(status["groups"][0]["active"], "east", "nothing moved");
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    let ahead = format!("witness_group_agents_epoch_ahead{{group=\"app\",node_id=\"{leader}\"}} 2");
    assert!(metrics.contains(&ahead), "{metrics}");
    c.journaled_exactly(leader, &[("agents_ahead", 1)]).await;
    let (code, out) =
        support::cli(&["status", "--endpoint", &format!("https://{}", c.nodes[leader as usize - 1].addr)]);
    assert!(out.contains("EPOCH BEHIND THE AGENTS"), "{code}: {out}");
    // East still writes nothing: its agent ignores the restored witness's epoch-1 lease.
    assert_eq!(c.writable("east").await, Some(false));

    // An unforced order is refused by its check; the forced one goes past epoch 2.
    let order = json!({ "to": "west", "reason": "restored" });
    let (status, body) = c.post(leader, "/v1/groups/app/failover", &order).await;
    assert_eq!(status, 409, "{body}");
    let checks = body["failover"]["plan"]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|k| k["gate"] == "agents_not_ahead" && k["passed"] == false), "{body}");
    let (status, body) = c.failover(leader, "west").await;
    assert_eq!((status, body["epoch"].as_u64()), (200, Some(3)), "{body}");
    eventually(Duration::from_secs(20), "west writable at epoch 3, the agents caught up", || async {
        let s = c.status(leader).await?;
        let settled = s["groups"][0]["agents"].get("agents_ahead").is_none()
            && s["groups"][0]["agents"]["sites"]["west"]["epoch"] == 3;
        (settled && c.writable("west").await? && !c.writable("east").await?).then_some(())
    })
    .await;
}

/// A site certificate that does not cover the address the other site dials (the README's step
/// 2 without `--site-hosts`): the active site gets no peer lease, so losing the witness would
/// stop it. `witness agent check` at the dialling site names the cause; the witness's status,
/// its CLI rendering and `/metrics` say so; a certificate issued with that address (SIGHUP)
/// ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_certificate_not_covering_its_agents_address_is_named_by_agent_check_and_by_status() {
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let setup = Setup { site_urls: Some((east.url(), west.url())), agents: true, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    // West's own copy of the credentials, issued again below.
    let dir = c.dir.path().join("tls-west");
    c.agent("west").own_credentials(&dir);
    let west_config = c.agent("west").config.clone();
    // East dials west as 127.0.0.2, which west's certificate does not cover.
    let old = c.agent("west").addr.clone();
    let port = c.agent("west").listen_on_every_address();
    let east_config = c.agent("east").config.clone();
    let text = std::fs::read_to_string(&east_config).unwrap();
    std::fs::write(&east_config, text.replace(&format!("peer = \"{old}\""), &format!("peer = \"127.0.0.2:{port}\"")))
        .unwrap();

    let leader = c.start_voters(3).await;
    c.agent("east").start();
    c.agent("west").start();
    eventually(Duration::from_secs(15), "east writable, west standby", || async {
        (c.writable("east").await? && !c.writable("west").await?).then_some(())
    })
    .await;
    let without = || async {
        let s = c.status(leader).await?;
        Some(s["groups"][0]["agents"]["without_peer_lease"].as_str().map(String::from))
    };
    let why =
        eventually(Duration::from_secs(10), "the leader says east holds no peer lease", || async { without().await? })
            .await;
    assert!(why.contains("127.0.0.2") && why.contains("TLS handshake failed"), "{why}");
    let endpoint = format!("https://{}", c.nodes[leader as usize - 1].addr);
    let (_, out) = support::cli(&["status", "--endpoint", &endpoint]);
    assert!(out.contains("NO PEER LEASE: group app's active site east"), "{out}");
    assert!(out.contains("PEER LINK of site east"), "{out}");
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    let held = metrics.lines().find(|l| l.starts_with("witness_group_peer_lease_held{group=\"app\""));
    assert!(held.is_some_and(|l| l.ends_with(" 0")), "{metrics}");

    let east_path = east_config.display().to_string();
    let (code, out) = support::cli(&["agent", "check", "--config", &east_path]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.contains("peer-lease link")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("PROBLEM") && line.contains("\"127.0.0.2\"") && line.contains("TLS"), "{out}");
    assert_eq!(out.matches("ok       witness node").count(), 3, "every node takes east for its site: {out}");
    let (code, out) = support::cli(&["agent", "check", "--config", &west_config.display().to_string()]);
    assert_eq!(code, 0, "west dials east as 127.0.0.1, which east's certificate covers: {out}");
    assert!(out.contains("note     agent.listen 0.0.0.0"), "{out}");

    // The fix: west's certificate issued with the address east dials.
    witness::tls::certs::issue(&dir, "site-west", &["127.0.0.2".into()]).unwrap();
    c.agents[1].signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "east holds a peer lease", || async {
        without().await?.is_none().then_some(())
    })
    .await;
    let (code, out) = support::cli(&["agent", "check", "--config", &east_path]);
    assert_eq!(code, 0, "{out}");
}

/// Agents refused or misdirected several times a second, each said once (then once a minute),
/// not at every try, with the reason where the operator looks:
/// - east's agent has a token of the wrong role (a viewer's, which the witness takes before its
///   certificate): every node refuses its heartbeats; east says once that no witness node
///   answers, naming the 403, and each node logs the refusal once;
/// - east presents a witness node's certificate on the peer link: west logs once that it
///   refused it;
/// - west's `agent.witness` lists only the followers (the members changed): each names a
///   leader west does not know; west says that once, and that no witness node answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_refused_or_misdirected_are_logged_once_not_at_every_try() {
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let setup = Setup { site_urls: Some((east.url(), west.url())), agents: true, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    let leader = c.start_voters(3).await;
    let edit = |path: &std::path::Path, from: &str, to: &str| {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    };
    let dir = support::creds().dir.display().to_string();
    let east_config = c.agent("east").config.clone();
    let viewer = format!("heartbeat_interval = \"100ms\"\ntoken_file = \"{dir}/viewer.token\"\n");
    edit(&east_config, "heartbeat_interval = \"100ms\"\n", &viewer);
    edit(&east_config, &format!("{dir}/site-east."), &format!("{dir}/node-1."));
    edit(&east_config, &format!("{dir}/site-east."), &format!("{dir}/node-1."));
    let leader_addr = c.nodes[leader as usize - 1].addr.clone();
    let west_config = c.agent("west").config.clone();
    let text = std::fs::read_to_string(&west_config).unwrap();
    std::fs::write(
        &west_config,
        text.replace(&format!("\"{leader_addr}\", "), "").replace(&format!(", \"{leader_addr}\""), ""),
    )
    .unwrap();
    c.agent("east").start();
    c.agent("west").start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.agreed_leader().await, Some(leader), "the leader stayed");

    // (The tests log at debug, where every try is: a warning is what operators see.)
    let warnings = |log: &std::path::Path, what: &str| -> Vec<String> {
        let text = std::fs::read_to_string(log).unwrap();
        text.lines().filter(|l| l.contains(" WARN ") && l.contains(what)).map(String::from).collect()
    };
    let (east_log, west_log) = (&c.agents[0].log, &c.agents[1].log);
    let said = warnings(east_log, "no witness node answers heartbeats");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("HTTP 403") && said[0].contains("role viewer"), "{said:?}");
    for node in &c.nodes {
        let refused = warnings(&node.log, "request refused");
        assert!((1..=2).contains(&refused.len()), "node {}: {refused:#?}", node.id);
    }
    let refused = warnings(west_log, "peer-lease request refused");
    assert!((1..=2).contains(&refused.len()) && refused[0].contains("node-1"), "{refused:#?}");
    let unlisted = warnings(west_log, "not in agent.witness");
    assert!((1..=2).contains(&unlisted.len()) && unlisted[0].contains(&leader_addr), "{unlisted:#?}");
    let said = warnings(west_log, "no witness node answers heartbeats");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("does not list"), "{said:?}");
}

/// `witness agent check` before an agent runs: an agent listening on one address (127.0.0.9)
/// that its site certificate does not cover is told so, naming `agent.listen`; one whose token
/// has the wrong role (a viewer's, which the witness takes before its certificate) is told
/// that every witness node would refuse its heartbeats, and with which role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_check_names_a_listen_address_its_certificate_does_not_cover_and_a_token_of_the_wrong_role() {
    let setup = Setup { agents: true, ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    c.add_agents();
    c.start_voters(3).await;
    let config = c.agent("east").config.clone();
    let text = std::fs::read_to_string(&config).unwrap();
    let listen = format!("listen = \"{}\"", c.agent("east").addr);
    assert!(text.contains(&listen), "{text}");
    let viewer = support::creds().token_file("viewer");
    let text = text.replacen(&listen, "listen = \"127.0.0.9:7499\"", 1).replacen(
        "heartbeat_interval = \"100ms\"\n",
        &format!("heartbeat_interval = \"100ms\"\ntoken_file = \"{}\"\n", viewer.display()),
        1,
    );
    std::fs::write(&config, text).unwrap();

    let (code, out) = support::cli(&["agent", "check", "--config", &config.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.contains("site certificate")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("PROBLEM") && line.contains("agent.listen \"127.0.0.9:7499\""), "{out}");
    let refused: Vec<&str> = out.lines().filter(|l| l.contains("witness node")).collect();
    assert_eq!(refused.len(), 3, "{out}");
    for line in refused {
        assert!(
            line.starts_with("PROBLEM") && line.contains("token:viewer with role viewer, not role site:east"),
            "{out}"
        );
    }
}

/// A drill gives way to a real failure: east drills to west, to come back after a minute; west
/// dies (its endpoint and its agent) during the hold, and the group fails over back to east by
/// itself (a drill blocks nothing). The drill ends interrupted, its report naming the failover,
/// and east is writable again after the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_gives_way_to_a_real_failover_and_its_report_says_so() {
    let east = SiteStub::start().await;
    let mut west = SiteStub::start().await;
    let (mut c, leader) = cluster_with_agents(&east, &west).await;
    eventually(Duration::from_secs(10), "west reported in sync, both sites up everywhere", || async {
        c.all_see("east", "up", &[1, 2, 3]).await?;
        c.all_see("west", "up", &[1, 2, 3]).await?;
        let s = c.status(leader).await?;
        (s["groups"][0]["agents"]["sites"]["west"]["in_sync"] == true).then_some(())
    })
    .await;
    let (code, body) =
        c.post(leader, "/v1/groups/app/drill", &json!({ "back_after_ms": 60_000, "reason": "CHG-9" })).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["failover"]["outcome"]["outcome"], "drill_started", "{body}");
    eventually(Duration::from_secs(10), "west writable, east not", || async {
        (c.writable("west").await? && !c.writable("east").await?).then_some(())
    })
    .await;

    west.kill().await;
    c.agent("west").kill9();
    eventually(Duration::from_secs(20), "east writable again", || async { c.writable("east").await?.then_some(()) })
        .await;
    let drills: Value = c
        .http
        .get(c.nodes[leader as usize - 1].url("/v1/groups/app/drills"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = &drills["finished"][0];
    assert_eq!(report["status"], "interrupted", "{drills:#}");
    let why = report["problems"][0].as_str().unwrap();
    assert!(why.contains("a failover to east took the group"), "{why}");
    assert_eq!(report["legs"].as_array().unwrap().len(), 1, "the leg out, done: {report:#}");
    assert!(drills["running"].is_null(), "{drills:#}");
    let (_, out) = support::cli(&["drill", "show", "app", "--endpoint", &format!("https://{}", c.nodes[0].addr)]);
    assert!(out.contains("# Drill 1 of app: INTERRUPTED") && out.contains("## Problems"), "{out}");
    c.journaled_exactly(leader, &[("drill_interrupted", 1)]).await;
}
