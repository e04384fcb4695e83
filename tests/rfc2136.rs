//! The `rfc2136` step against a real BIND 9: each test starts its own `named` on a free
//! loopback port with a zone `example.test.` that key `witness-key` may update.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use witness::actions::{rfc2136, StepContext, StepResult};
use witness::config::Rfc2136Step;

const EAST: &str = "192.0.2.1";
const WEST: &str = "198.51.100.7";
const OTHER: &str = "203.0.113.9";

/// A `named` of the test's own, killed when dropped.
struct Named {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Named {
    /// `None` (after saying so) when BIND is not installed and skipping is allowed.
    async fn start(test: &str) -> Option<Named> {
        let (Some(named), Some(keygen)) = (find("named"), find("tsig-keygen")) else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "bind9 is required in CI: scripts/test installs it");
            eprintln!("SKIPPED {test}: no named/tsig-keygen (install Debian's bind9, bind9-utils and bind9-dnsutils)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("witness.key"), keygen_output(&keygen)).unwrap();
        std::fs::write(dir.path().join("wrong.key"), keygen_output(&keygen)).unwrap();
        std::fs::write(
            dir.path().join("example.test.zone"),
            format!(
                "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 300\n\
                 @ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\napp IN A {EAST}\n"
            ),
        )
        .unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                "include \"{d}/witness.key\";\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; session-keyfile \"{d}/session.key\";\n\
                 listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; }};\n\
                 controls {{ }};\n\
                 zone \"example.test.\" {{ type primary; file \"{d}/example.test.zone\";\n\
                 update-policy {{ grant witness-key zonesub ANY; }}; }};\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(named);
        cmd.args(["-g", "-c"]).arg(dir.path().join("named.conf"));
        if unsafe { libc::getuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let named = Named { dir, port, child };
        named.wait_ready().await;
        Some(named)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = bounded(rfc2136::check(&self.step(EAST, WEST, "witness.key"))).await;
            if result.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "named did not answer within 20s: {result:?}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// `app.example.test. A`: east's value `east`, west's `west`.
    fn step(&self, east: &str, west: &str, key: &str) -> Rfc2136Step {
        step(&format!("127.0.0.1:{}", self.port), self.dir.path().join(key), east, west)
    }

    /// What the server holds for `app.example.test. A`, as dig sees it.
    fn dig(&self) -> Vec<String> {
        let out = Command::new(find("dig").expect("dig (Debian's bind9-dnsutils)"))
            .args(["@127.0.0.1", "-p", &self.port.to_string(), "app.example.test", "A", "+short", "+tcp"])
            .args(["+time=2", "+tries=1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "dig failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut values: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
        values.sort();
        values
    }
}

fn step(server: &str, key_file: PathBuf, east: &str, west: &str) -> Rfc2136Step {
    Rfc2136Step {
        server: server.to_string(),
        zone: "example.test.".into(),
        record: "app.example.test.".into(),
        record_type: "A".into(),
        ttl: 60,
        key_file,
        values: BTreeMap::from([
            ("east".to_string(), vec![east.to_string()]),
            ("west".to_string(), vec![west.to_string()]),
        ]),
    }
}

fn east_to_west() -> StepContext {
    StepContext {
        group: "app".into(),
        epoch: 2,
        from: "east".into(),
        to: "west".into(),
        reason: "east is down".into(),
        decided_at_ms: 0,
        step: "dns".into(),
    }
}

async fn bounded(attempt: impl std::future::Future<Output = StepResult>) -> StepResult {
    tokio::time::timeout(Duration::from_secs(30), attempt).await.expect("the step did not finish within 30s")
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from));
    dirs.find_map(|dir| Some(dir.join(program)).filter(|p| p.is_file()))
}

fn keygen_output(keygen: &Path) -> Vec<u8> {
    let out = Command::new(keygen).args(["-a", "hmac-sha256", "witness-key"]).output().unwrap();
    assert!(out.status.success(), "tsig-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A loopback port free for both TCP and UDP just now (named listens on both).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if port != 5353 && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn flips_the_record_and_a_rerun_changes_nothing() {
    let Some(named) = Named::start("flips_the_record_and_a_rerun_changes_nothing").await else { return };
    let step = named.step(EAST, WEST, "witness.key");
    let done = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}\n{}", named.log()));
    assert_eq!(done, format!("app.example.test. A -> {WEST} (was {EAST})"));
    assert_eq!(named.dig(), [WEST]);

    let again = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, format!("app.example.test. already {WEST}"));
    assert_eq!(named.dig(), [WEST]);
}

#[tokio::test]
async fn a_key_with_another_secret_is_refused() {
    let Some(named) = Named::start("a_key_with_another_secret_is_refused").await else { return };
    let step = named.step(EAST, WEST, "wrong.key");
    let err = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("refused the key named witness-key"), "{err}");
    assert_eq!(named.dig(), [EAST]);

    let err = bounded(rfc2136::check(&step)).await.unwrap_err();
    assert!(!err.retryable && err.message.contains("refused the key named witness-key"), "{err}");
}

#[tokio::test]
async fn a_record_changed_by_someone_else_is_left_alone() {
    let Some(named) = Named::start("a_record_changed_by_someone_else_is_left_alone").await else { return };
    let elsewhere = named.step(EAST, OTHER, "witness.key");
    bounded(rfc2136::run(&elsewhere, &east_to_west())).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(named.dig(), [OTHER]);

    let err = bounded(rfc2136::run(&named.step(EAST, WEST, "witness.key"), &east_to_west())).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains(&format!("app.example.test. holds {OTHER}, neither east ({EAST})")), "{err}");
    assert!(err.message.contains(&format!("nor west ({WEST})")), "{err}");
    assert_eq!(named.dig(), [OTHER]);
}

#[tokio::test]
async fn check_accepts_the_key_without_changing_anything() {
    let Some(named) = Named::start("check_accepts_the_key_without_changing_anything").await else { return };
    let ok = bounded(rfc2136::check(&named.step(EAST, WEST, "witness.key"))).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok, format!("SOA serial 1 from 127.0.0.1:{}, key witness-key accepted", named.port));
    assert_eq!(named.dig(), [EAST]);
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and closed again: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let step = step(&format!("127.0.0.1:{port}"), made_up_key(dir.path()), EAST, WEST);
    let err = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_err();
    assert!(err.retryable && err.message.contains("cannot reach"), "{err}");
    let err = bounded(rfc2136::check(&step)).await.unwrap_err();
    assert!(err.retryable && err.message.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn an_unsigned_answer_is_not_believed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut len = [0; 2];
            let _ = stream.read_exact(&mut len).await;
            let mut request = vec![0; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut request).await.is_err() || request.len() < 12 {
                continue;
            }
            // NOERROR to the request's id and opcode, with no TSIG record.
            let header = [request[0], request[1], 0x80 | (request[2] & 0x78), 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let _ = stream.write_all(&[&[0, 12], &header[..]].concat()).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let step = step(&server, made_up_key(dir.path()), EAST, WEST);
    let err = bounded(rfc2136::run(&step, &east_to_west())).await.unwrap_err();
    assert!(err.retryable && err.message.contains("not signed by the key witness-key"), "{err}");
    let err = bounded(rfc2136::check(&step)).await.unwrap_err();
    assert!(err.retryable && err.message.contains("not signed by the key witness-key"), "{err}");
}

fn made_up_key(dir: &Path) -> PathBuf {
    let key = dir.join("witness.key");
    std::fs::write(&key, "key \"witness-key\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };\n").unwrap();
    key
}
