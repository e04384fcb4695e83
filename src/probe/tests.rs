//! Probes against real local servers: status, body, timeout, connect failure, and the rule
//! that one answering target is enough.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use reqwest::Url;

use super::*;
use crate::config::{ProbeTarget, SiteConfig};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn http(url: &str, status: u16, body: Option<&str>) -> ProbeTarget {
    ProbeTarget::Http {
        url: Url::parse(url).unwrap(),
        expect_status: status,
        body_contains: body.map(String::from),
        ca_file: None,
    }
}

fn site(probes: Vec<ProbeTarget>) -> SiteConfig {
    SiteConfig {
        name: "east".into(),
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(300),
        failure_threshold: 2,
        success_threshold: 1,
        probes,
    }
}

fn metrics() -> ProbeMetrics {
    ProbeMetrics::register(&Registry::new())
}

/// A port with nothing listening (bound, then released).
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn each_kind_of_probe_passes_and_fails_for_the_right_reason() {
    crate::tls::init();
    let base = serve(
        Router::new()
            .route("/ok", get(|| async { "all good" }))
            .route("/err", get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "late"
                }),
            ),
    )
    .await;
    let tcp_ok = base.trim_start_matches("http://").to_string();
    let cases: Vec<(&str, ProbeTarget, Result<(), Failure>)> = vec![
        ("http 200", http(&format!("{base}/ok"), 200, None), Ok(())),
        ("body matches", http(&format!("{base}/ok"), 200, Some("good")), Ok(())),
        ("body differs", http(&format!("{base}/ok"), 200, Some("bad")), Err(Failure::Body)),
        ("status differs", http(&format!("{base}/err"), 200, None), Err(Failure::Status)),
        ("expected 500", http(&format!("{base}/err"), 500, None), Ok(())),
        ("slow", http(&format!("{base}/slow"), 200, None), Err(Failure::Timeout)),
        ("http refused", http(&format!("http://{}/", closed_port()), 200, None), Err(Failure::Connect)),
        ("tcp ok", ProbeTarget::Tcp { addr: tcp_ok }, Ok(())),
        ("tcp refused", ProbeTarget::Tcp { addr: closed_port() }, Err(Failure::Connect)),
    ];
    for (label, target, expected) in cases {
        let prober = SiteProber::new(&site(vec![target.clone()])).unwrap();
        let (result, took) = prober.probe(&target).await;
        assert_eq!(result, expected, "{label}");
        assert!(took < Duration::from_millis(1000), "{label}: a probe is bounded by its timeout, took {took:?}");
    }
}

#[tokio::test]
async fn a_round_succeeds_when_any_target_answers_and_never_waits_past_the_timeout() {
    crate::tls::init();
    let base = serve(Router::new().route("/ok", get(|| async { "ok" }))).await;
    let m = metrics();
    let dead = http(&format!("http://{}/", closed_port()), 200, None);
    let blackhole = {
        // Accepts connections, never answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::mem::forget(l);
        http(&format!("http://{addr}/"), 200, None)
    };
    let alive = http(&format!("{base}/ok"), 200, None);

    let mixed = SiteProber::new(&site(vec![dead.clone(), blackhole.clone(), alive])).unwrap();
    let started = crate::clock::Stopwatch::start();
    assert!(mixed.round(&m).await, "one answering target keeps the site up");
    assert!(started.elapsed() < Duration::from_millis(1000), "targets run concurrently");

    let down = SiteProber::new(&site(vec![dead, blackhole])).unwrap();
    assert!(!down.round(&m).await);
    assert_eq!(m.failures.with_label_values(&["east", "timeout"]).get(), 2);
    assert_eq!(m.failures.with_label_values(&["east", "connect"]).get(), 2);
}

#[tokio::test]
async fn a_missing_ca_file_is_named_at_start() {
    let target = ProbeTarget::Http {
        url: Url::parse("https://east.example/healthz").unwrap(),
        expect_status: 200,
        body_contains: None,
        ca_file: Some("/nonexistent/ca.pem".into()),
    };
    let err = SiteProber::new(&site(vec![target])).err().expect("must fail");
    assert!(format!("{err:#}").contains("/nonexistent/ca.pem"), "{err:#}");
}

/// HTTPS probes against a real TLS server (`openssl s_server`) with a throwaway CA: trusted
/// through the site's `ca_file`, refused with another CA's file.
#[tokio::test]
async fn https_probe_trusts_exactly_its_ca_file() {
    crate::tls::init();
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "openssl is required in CI (scripts/test installs it)");
        eprintln!("SKIPPED https_probe_trusts_exactly_its_ca_file: no openssl binary (install Debian's openssl)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let key = format!("{ca}.key");
        let pem = format!("{ca}.pem");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-days", "1", "-subj", "/CN=witness test CA"]);
        openssl(&args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "site.key", "-out", "site.csr", "-subj", "/CN=localhost"]);
    openssl(&args);
    std::fs::write(d.join("san.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "site.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "site.pem",
        "-days",
        "1",
        "-extfile",
        "san.cnf",
    ]);

    // s_server cannot take a bound socket, so take a free port and hand it over.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-cert", "site.pem", "-key", "site.key", "-www"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = |ca: &str| ProbeTarget::Http {
        url: Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap(),
        expect_status: 200,
        body_contains: None,
        ca_file: Some(d.join(ca)),
    };
    let mut slow = site(vec![]);
    slow.probe_timeout = Duration::from_secs(3);
    for (ca, expected) in [("ca.pem", Ok(())), ("other-ca.pem", Err(Failure::Tls))] {
        let t = target(ca);
        let prober = SiteProber::new(&SiteConfig { probes: vec![t.clone()], ..slow.clone() }).unwrap();
        assert_eq!(prober.probe(&t).await.0, expected, "with {ca}");
    }
    let _ = server.kill();
    let _ = server.wait();
}
