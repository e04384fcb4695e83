//! Security on real processes: nodes with another CA's certificate or speaking plain HTTP can
//! neither join nor speak Raft (and the refusal is named as the certificate it is), and a node's certificate speaks for no other node; every route against every kind of caller gives the status its
//! role allows; slow and silent clients do not hold up anyone else; a certificate and the
//! tokens are rotated with SIGHUP while the cluster keeps its leader.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::{cert_client, cli, creds, eventually, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_join_or_speak_raft() {
    let mut c = Cluster::new(3, 2);
    let leader = c.start_voters(3).await;
    let endpoint = c.nodes[leader as usize - 1].url("");

    // Node 4 holds a certificate named node-4 from another CA, and trusts only that CA.
    let other = tempfile::tempdir().unwrap();
    witness::tls::certs::generate(other.path(), &[4], &[], &[], &Default::default()).unwrap();
    let ours = creds().dir.display().to_string();
    let text = std::fs::read_to_string(&c.nodes[3].config).unwrap().replace(&ours, &other.path().display().to_string());
    std::fs::write(&c.nodes[3].config, text).unwrap();
    c.node(4).start();
    let (code, out) = cli(&["members", "--endpoint", &endpoint, "add", "4", &c.nodes[3].addr]);
    assert_eq!(code, 1, "a node the cluster CA did not sign must not join: {out}");
    // Its Raft RPCs never get past the TLS handshake.
    let stranger = cert_client(other.path(), "node-4", &creds().ca);
    let sent = stranger.post(c.nodes[0].url("/raft/vote")).header("witness-cluster", "test").json(&json!({})).send();
    let err = sent.await.expect_err("a certificate from another CA is refused in the handshake");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // A CLI trusting another CA is told so, not that the node is unreachable, and is not told
    // to retry (exit 2, not 3).
    let other_ca = other.path().join("ca.crt");
    let (code, out) = cli(&["status", "--endpoint", &endpoint, "--ca", other_ca.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("TLS handshake failed") && out.contains("not signed by the CA this side trusts"), "{out}");

    // Node 5 speaks plain HTTP: it cannot join, and plain HTTP to a node gets no answer.
    let text = std::fs::read_to_string(&c.nodes[4].config).unwrap();
    let start = text.find("[transport]").unwrap();
    let end = text.find("[auth]").unwrap();
    std::fs::write(&c.nodes[4].config, format!("{}[transport]\nplain_http = true\n\n{}", &text[..start], &text[end..]))
        .unwrap();
    c.node(5).start();
    let (code, out) = cli(&["members", "--endpoint", &endpoint, "add", "5", &c.nodes[4].addr]);
    assert_eq!(code, 1, "a plain-HTTP node must not join: {out}");
    let plain = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let url = format!("http://{}/raft/vote", c.nodes[0].addr);
    assert!(plain.post(url).json(&json!({})).send().await.is_err(), "plain HTTP must not be answered");

    // A site's certificate is not a node's: it is refused on the Raft routes.
    let site = creds().cert_client("site-east");
    let resp = site.post(c.nodes[0].url("/raft/vote")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 403);

    // A node's certificate speaks only for that node: node 2's key cannot campaign as node 3.
    // (A pre-vote with an empty log changes nothing on the receiver; refused RPCs never arrive.)
    let node2 = creds().cert_client("node-2");
    let rpc = |path: &'static str, candidate: u64| {
        let request = openraft::raft::VoteRequest::<witness::raft::TypeConfig>::new(
            witness::raft::Vote::new(99, witness::raft::NodeId(candidate)),
            None,
        );
        node2.post(c.nodes[0].url(path)).header("witness-cluster", "test").json(&request).send()
    };
    assert_eq!(rpc("/raft/pre-vote", 2).await.unwrap().status(), 200, "node 2 speaks for itself");
    for path in ["/raft/pre-vote", "/raft/vote"] {
        let resp = rpc(path, 3).await.unwrap();
        assert_eq!(resp.status(), 403, "{path} claiming node 3 with node 2's certificate");
        assert!(resp.text().await.unwrap().contains("node-2"), "the refusal names the certificate");
    }

    let (code, out) = cli(&["members", "--endpoint", &endpoint]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&c.nodes[3].addr) && !out.contains(&c.nodes[4].addr), "{out}");
    let (status, body) = c.failover(leader, "west").await;
    assert_eq!(status, 200, "the cluster keeps committing: {body}");
}

/// Who may call what, over HTTPS, against a live cluster. "allowed" means the request got
/// past authorization (whatever the handler then answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_it_should() {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;
    let node = &c.nodes[leader as usize - 1];
    let callers: Vec<(&str, reqwest::Client)> = vec![
        ("anonymous", creds().client(None)),
        ("viewer", creds().client(Some("viewer"))),
        ("operator", creds().client(Some("operator"))),
        ("admin", creds().client(Some("admin"))),
        ("east token", creds().client(Some("east"))),
        ("east cert", creds().cert_client("site-east")),
        ("node cert", creds().cert_client("node-2")),
    ];
    // Expected per caller, in the order above: A allowed, U 401, F 403.
    let heartbeat = json!({"peer_reachable": true});
    let routes: Vec<(Method, &str, serde_json::Value, &str)> = vec![
        (Method::GET, "/healthz", json!(null), "AAAAAAA"),
        (Method::GET, "/readyz", json!(null), "AAAAAAA"),
        (Method::GET, "/", json!(null), "AAAAAAA"),
        (Method::GET, "/openapi.json", json!(null), "AAAAAAA"),
        (Method::GET, "/v1/groups/app/sites/east/active", json!(null), "AAAAAAA"),
        (Method::GET, "/v1/whoami", json!(null), "AAAAAAA"),
        (Method::GET, "/metrics", json!(null), "UAAAFFF"),
        (Method::GET, "/v1/status", json!(null), "UAAAFFF"),
        (Method::GET, "/v1/events", json!(null), "UAAAFFF"),
        (Method::GET, "/v1/members", json!(null), "UAAAFFF"),
        (Method::POST, "/v1/groups/app/failover", json!({"to": "west", "dry_run": true}), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/failback", json!({"dry_run": true}), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/pause", json!(null), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/resume", json!(null), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/ack", json!({"epoch": 99}), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/plan/retry", json!({"epoch": 99}), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/plan/skip", json!({"epoch": 99}), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/plan/check", json!(null), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/plan/reconcile", json!({"epoch": 99}), "UFAAFFF"),
        (Method::POST, "/v1/groups/app/drill", json!({"dry_run": true}), "UFAAFFF"),
        (Method::GET, "/v1/groups/app/drills", json!(null), "UAAAFFF"),
        (Method::POST, "/v1/automation", json!({"enabled": true}), "UFAAFFF"),
        (Method::POST, "/v1/members", json!({"id": 0, "addr": "127.0.0.1:1"}), "UFFAFFF"),
        (Method::DELETE, "/v1/members/99", json!(null), "UFFAFFF"),
        (Method::POST, "/v1/sites/east/heartbeat", heartbeat.clone(), "UFFFAAF"),
        (Method::POST, "/v1/sites/west/heartbeat", heartbeat, "UFFFFFF"),
        (Method::POST, "/raft/vote", json!({}), "FFFFFFA"),
        (Method::GET, "/raft/bootstrap", json!(null), "FFFFFFA"),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, expected) in &routes {
        for ((who, client), want) in callers.iter().zip(expected.chars()) {
            let mut req = client.request(method.clone(), node.url(path));
            if !body.is_null() {
                req = req.json(body);
            }
            let status = req.send().await.unwrap_or_else(|e| panic!("{who} {method} {path}: {e}")).status().as_u16();
            let got = match status {
                401 => 'U',
                403 => 'F',
                _ => 'A',
            };
            if got != want {
                wrong.push(format!("{who} {method} {path}: HTTP {status}, expected {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "role matrix mismatches:\n{}", wrong.join("\n"));

    // The journal names who acted.
    let (code, out) = cli(&["events", "--endpoint", &node.url("")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(by token:operator)"), "{out}");
    let events: serde_json::Value = c.http.get(node.url("/v1/events")).send().await.unwrap().json().await.unwrap();
    let by: Vec<&str> = events["events"].as_array().unwrap().iter().filter_map(|e| e["by"].as_str()).collect();
    assert!(by.contains(&"token:operator") && by.contains(&"token:admin"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_hold_up_nobody() {
    let mut c = Cluster::new(3, 0);
    c.start_voters(3).await;
    let addr = c.nodes[0].addr.clone();
    // 40 connections that never start a TLS handshake, and 10 that send half a handshake.
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        if i % 5 == 0 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        }
        idle.push(s);
    }
    // A client that completes TLS and then trickles its request headers.
    let trickler = tokio::spawn({
        let addr = addr.clone();
        async move {
            let config = witness::tls::client_config(&creds().ca, None).unwrap();
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let mut tls = connector.connect(name, tcp).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            let started = Instant::now();
            let mut buf = Vec::new();
            // The node closes it once its headers have taken too long.
            let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut buf)).await;
            started.elapsed()
        }
    });
    let started = Instant::now();
    for _ in 0..20 {
        let resp = c.http.get(c.nodes[0].url("/v1/status")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let served = started.elapsed();
    assert!(served < Duration::from_secs(5), "20 requests took {served:?} beside the slow clients");
    let closed_after = trickler.await.unwrap();
    assert!(closed_after < Duration::from_secs(25), "the trickling client was never cut off");
    eprintln!("20 requests in {served:?} beside 51 slow clients; the trickler was cut off after {closed_after:?}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_a_certificate_and_the_tokens_without_dropping_the_cluster() {
    let mut c = Cluster::new(3, 0);
    c.start_voters(3).await;
    // Node 3's own copy of the credentials, so the rotation touches nothing shared.
    let dir = c.dir.path().join("tls-3");
    std::fs::create_dir(&dir).unwrap();
    for file in ["ca.crt", "ca.key", "node-3.crt", "node-3.key"] {
        std::fs::copy(creds().dir.join(file), dir.join(file)).unwrap();
    }
    let config = &c.nodes[2].config.clone();
    let text = std::fs::read_to_string(config)
        .unwrap()
        .replace(&creds().dir.display().to_string(), &dir.display().to_string());
    std::fs::write(config, &text).unwrap();
    c.node(3).stop();
    c.node(3).start();
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let term = c.status(leader).await.unwrap()["term"].as_u64().unwrap();

    let served = || async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_info(true)
            .tls_backend_preconfigured(witness::tls::client_config(&creds().ca, None).unwrap())
            .build()
            .unwrap();
        let resp = client.get(c.nodes[2].url("/healthz")).send().await.unwrap();
        resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec()
    };
    let pem = |path: &Path| {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(path).unwrap().to_vec()
    };
    assert_eq!(served().await, pem(&dir.join("node-3.crt")));

    // A new certificate for node 3, and a new token (viewer's replaced by "auditor").
    witness::tls::certs::issue(&dir, "node-3", &[]).unwrap();
    let auditor = witness::config::auth::new_token();
    let hash = witness::config::auth::format_hash(&witness::config::auth::hash_token(&auditor));
    let viewer_hash = witness::config::auth::format_hash(&witness::config::auth::hash_token(creds().token("viewer")));
    let rotated = text.replace("name = \"viewer\"", "name = \"auditor\"").replace(&viewer_hash, &hash);
    std::fs::write(config, rotated).unwrap();
    c.nodes[2].signal(libc::SIGHUP);
    let log = c.nodes[2].log.clone();
    eventually(Duration::from_secs(10), "the reload logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("tokens and certificates reloaded").then_some(()) }
    })
    .await;
    assert_eq!(served().await, pem(&dir.join("node-3.crt")), "new connections get the new certificate");
    let status = |token: String| {
        let url = c.nodes[2].url("/v1/status");
        async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .tls_backend_preconfigured(witness::tls::client_config(&creds().ca, None).unwrap())
                .build()
                .unwrap();
            client.get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(auditor).await, 200, "the new token works");
    assert_eq!(status(creds().token("viewer").to_string()).await, 401, "the replaced token no longer does");

    // A broken config is refused whole: nothing changes.
    std::fs::write(config, "[node]\nid = 0\n").unwrap();
    c.nodes[2].signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "the refusal logged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("reload refused").then_some(()) }
    })
    .await;
    assert_eq!(served().await, pem(&dir.join("node-3.crt")));

    // Node 3, with its new certificate, still replicates; nobody held an election.
    let (code, body) = c.failover(leader, "west").await;
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(10), "node 3 has the write", || async {
        (c.group(3).await? == ("west".to_string(), 2)).then_some(())
    })
    .await;
    let now = c.status(leader).await.unwrap();
    assert_eq!((now["leader"]["id"].as_u64(), now["term"].as_u64()), (Some(leader), Some(term)), "{now}");
}

/// A member the others cannot reach (node 3 presents a certificate from another CA) no longer
/// hides behind a ready cluster with three voters: the leader's status names the link and its
/// cause, its CLI rendering says so, `witness_peer_link_up` is 0, and the leader logs it once
/// (not for every request, as openraft's own warnings would). A follower's status shows the
/// leader's link too (`leader_link`), so asking any node tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_leader_cannot_reach_is_named_with_its_cause_once() {
    let mut c = Cluster::new(3, 0);
    let other = tempfile::tempdir().unwrap();
    witness::tls::certs::generate(other.path(), &[3], &[], &[], &Default::default()).unwrap();
    let ours = creds().dir.display().to_string();
    let text = std::fs::read_to_string(&c.nodes[2].config).unwrap().replace(&ours, &other.path().display().to_string());
    std::fs::write(&c.nodes[2].config, text).unwrap();
    for id in 1..=3 {
        c.node(id).start();
    }
    let failing = || async {
        for id in 1..=2 {
            let s = c.status(id).await?;
            if s["role"] == "leader" && s["ready"] == true {
                let link = &s["members"].as_array()?.iter().find(|m| m["id"] == 3)?["link"];
                if link["up"] == false {
                    return Some((id, s.clone()));
                }
            }
        }
        None
    };
    let (leader, status) = eventually(Duration::from_secs(20), "the leader names node 3's link", failing).await;
    let node3 = status["members"].as_array().unwrap().iter().find(|m| m["id"] == 3).unwrap();
    let error = node3["link"]["error"].as_str().unwrap();
    assert!(error.contains("TLS handshake failed") && error.contains("not signed by the CA"), "{status}");
    let endpoint = c.nodes[leader as usize - 1].url("");
    // Ready (exit 0) though a member is unreachable; a status read just as an entry commits
    // may say "applying the log" for that instant, so it is read until ready.
    let out = eventually(Duration::from_secs(5), "witness status saying ready", || async {
        let (code, out) = tokio::task::block_in_place(|| cli(&["status", "--endpoint", &endpoint]));
        (code == 0).then_some(out)
    })
    .await;
    assert!(out.contains(&format!("node {leader} cannot reach node 3 at {}: TLS handshake failed", c.nodes[2].addr)));
    let metrics = c.http.get(c.nodes[leader as usize - 1].url("/metrics")).send().await.unwrap().text().await.unwrap();
    let up = metrics.lines().find(|l| l.starts_with("witness_peer_link_up") && l.contains("peer=\"3\""));
    assert!(up.is_some_and(|l| l.ends_with(" 0")), "{metrics}");

    // The follower among nodes 1 and 2 sends node 3 nothing; it shows the leader's link.
    let follower = 3 - leader;
    let status = eventually(Duration::from_secs(10), "the follower shows the leader's link to node 3", || async {
        let s = c.status(follower).await?;
        let node3 = s["members"].as_array()?.iter().find(|m| m["id"] == 3)?.clone();
        (node3["leader_link"]["up"] == false).then_some(s)
    })
    .await;
    let node3 = status["members"].as_array().unwrap().iter().find(|m| m["id"] == 3).unwrap();
    let error = node3["leader_link"]["error"].as_str().unwrap();
    assert!(error.contains("TLS handshake failed") && error.contains("not signed by the CA"), "{status}");
    let endpoint = c.nodes[follower as usize - 1].url("");
    let (_, out) = tokio::task::block_in_place(|| cli(&["status", "--endpoint", &endpoint]));
    assert!(out.contains("LEADER'S LINK"), "{out}");
    assert!(out.contains(&format!("leader {leader} cannot reach node 3 at {}: TLS handshake failed", c.nodes[2].addr)));

    // Some seconds of heartbeats later, the leader has logged the failing link once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = std::fs::read_to_string(&c.nodes[leader as usize - 1].log).unwrap();
    let said: Vec<&str> = log.lines().filter(|l| l.contains("cannot reach peer") && l.contains("peer=3")).collect();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(!log.contains("failed to send a heartbeat"), "openraft's per-request warnings are held back");
}

/// Node 3 reaches the others but the leader cannot reach it: the address it advertises,
/// 127.0.0.2, is not in its certificate, as it warns when it starts. Its own status, with the leader's view it asks for
/// (standing for election again and again, it knows no leader: it asks the members), says why
/// it is not ready, not only that no leader is known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_the_leader_cannot_reach_says_why_in_its_own_status() {
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut c = Cluster::new(3, 0);
    // Node 3 listens on every address of a new port and advertises it as 127.0.0.2.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (old, advertised) = (c.nodes[2].addr.clone(), format!("127.0.0.2:{port}"));
    for n in &c.nodes {
        let text = std::fs::read_to_string(&n.config).unwrap().replace(&old, &advertised);
        std::fs::write(&n.config, text).unwrap();
    }
    // The test reads node 3 at 127.0.0.1, which its certificate covers.
    c.nodes[2].addr = format!("127.0.0.1:{port}");
    // Nodes 1 and 2 commit entries first, so node 3's log is behind and it cannot lead (a
    // node that can reach everyone but not be reached leads well enough).
    c.start_voters(2).await;
    let _node3 = Running(support::spawn("serve", &c.nodes[2].config, &listener, &c.nodes[2].log));

    let reason = eventually(Duration::from_secs(20), "node 3 says the leader cannot reach it", || async {
        let s = c.status(3).await?;
        let reason = s["not_ready_reason"].as_str()?.to_string();
        reason.contains("the leader cannot reach this node").then_some(reason)
    })
    .await;
    assert!(reason.contains("TLS handshake failed") && reason.contains("127.0.0.2"), "{reason}");
    // It said so itself when it started, naming the config field and the address.
    let log = std::fs::read_to_string(&c.nodes[2].log).unwrap();
    let said = log.lines().find(|l| l.contains("WARN") && l.contains("for node.advertise"));
    assert!(said.is_some_and(|l| l.contains(&advertised) && l.contains("127.0.0.2")), "{log}");
    let endpoint = c.nodes[2].url("");
    let (code, out) = tokio::task::block_in_place(|| cli(&["status", "--endpoint", &endpoint]));
    assert_eq!(code, 1, "not ready: {out}");
    assert!(out.contains("NOT READY: the leader cannot reach this node: TLS handshake failed"), "{out}");
    assert!(out.contains(&format!("the leader cannot reach node 3 at {advertised}")), "knowing none: {out}");
}
