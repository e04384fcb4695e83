//! Real DNS servers for the tests, each a process of the test's own, killed when dropped: a
//! BIND 9 `named` serving zone `example.test.` that key `witness-key` may update, and a
//! `moto_server` whose Route 53 API holds hosted zone `example.test.`. Each `start` returns
//! `None` (after a loud SKIPPED line) when the program is not installed, unless `CI=true`, where
//! a missing program fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_route53::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The zone both servers hold.
pub const ZONE: &str = "example.test.";
/// What `app.example.test. A` holds in BIND's zone when it starts.
pub const APP_ADDRESS: &str = "192.0.2.1";
/// How many records `app1`, `app2`, ... the test zone holds besides `app`.
pub const MANY: usize = 40;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `program` on the PATH or in the system's sbin/bin directories.
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from));
    dirs.find_map(|dir| Some(dir.join(program)).filter(|p| p.is_file()))
}

/// Writes `contents` to `path`, readable by its owner only, as secret files should be.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A `named` on a free loopback port (TCP and UDP), serving zone `example.test.` with
/// `ns1 A 127.0.0.1` and `app A 192.0.2.1`, updatable by key `witness-key` (`key_file()`).
/// Another key of the same name and a different secret is at `wrong_key_file()`.
pub struct Named {
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
    /// Started and answering signed queries; `None` (after saying so) when BIND is not installed
    /// and skipping is allowed.
    /// The zone also holds `app1` to `app{MANY}` with `app`'s address.
    pub async fn start(test: &str) -> Option<Named> {
        let (Some(named), Some(keygen)) = (find("named"), find("tsig-keygen")) else {
            assert!(!in_ci(), "bind9 is required in CI: scripts/test installs it");
            eprintln!("SKIPPED {test}: no named/tsig-keygen (install Debian's bind9, bind9-utils and bind9-dnsutils)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        write_private(&dir.path().join("witness.key"), keygen_output(&keygen));
        write_private(&dir.path().join("wrong.key"), keygen_output(&keygen));
        std::fs::write(
            dir.path().join("example.test.zone"),
            format!(
                "$TTL 300\n@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 300\n\
                 @ IN NS ns1.example.test.\nns1 IN A 127.0.0.1\napp IN A {APP_ADDRESS}\n{}",
                // More records like app's, for updates of many groups at once.
                (1..=MANY).map(|i| format!("app{i} IN A {APP_ADDRESS}\n")).collect::<String>()
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
                 zone \"{ZONE}\" {{ type primary; file \"{d}/example.test.zone\";\n\
                 update-policy {{ grant witness-key zonesub ANY; }}; }};\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(named);
        cmd.args(["-g", "-c"]).arg(dir.path().join("named.conf"));
        // SAFETY: getuid(2) has no preconditions and cannot fail.
        if unsafe { libc::getuid() } == 0 {
            cmd.args(["-u", "root"]);
        }
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        let named = Named { dir, port, child };
        named.wait_ready().await;
        Some(named)
    }

    /// Until a query signed with `witness-key` is answered: the zone and the key are loaded.
    async fn wait_ready(&self) {
        let probe = witness::config::Rfc2136Step {
            server: self.server(),
            zone: ZONE.into(),
            record: format!("app.{ZONE}"),
            record_type: "A".into(),
            ttl: 60,
            key_file: self.key_file(),
            values: BTreeMap::from([
                ("east".to_string(), vec![APP_ADDRESS.to_string()]),
                ("west".to_string(), vec![APP_ADDRESS.to_string()]),
            ]),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = tokio::time::timeout(Duration::from_secs(30), witness::actions::rfc2136::check(&probe))
                .await
                .expect("the check did not finish within 30s");
            if result.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "named did not answer within 20s: {result:?}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as a step's `server`.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The key file (`tsig-keygen` output, mode 0600) of the key the zone grants updates to.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("witness.key")
    }

    /// A key named `witness-key` too, with another secret: the server refuses it.
    pub fn wrong_key_file(&self) -> PathBuf {
        self.dir.path().join("wrong.key")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// What the server holds for `name` `rtype`, as `dig` (over TCP) sees it, sorted.
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        let out = Command::new(find("dig").expect("dig (Debian's bind9-dnsutils)"))
            .args(["@127.0.0.1", "-p", &self.port.to_string(), name, rtype, "+short", "+tcp"])
            .args(["+time=2", "+tries=1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "dig failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut values: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
        values.sort();
        values
    }

    /// The A records of `name` (fully qualified) in one unsigned UDP query, sorted: much cheaper
    /// than `dig`, for polling. `None` when no answer came within `timeout`.
    pub async fn query_a(&self, name: &str, timeout: Duration) -> Option<Vec<String>> {
        use hickory_proto::op::{Message, Query};
        use hickory_proto::rr::{Name, RecordType};
        let name = Name::from_ascii(name).expect("a DNS name");
        let mut query = Message::query();
        query.add_query(Query::query(name.clone(), RecordType::A));
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
        socket.connect(("127.0.0.1", self.port)).await.ok()?;
        socket.send(&query.to_vec().unwrap()).await.ok()?;
        let mut buf = vec![0; 4096];
        let len = tokio::time::timeout(timeout, socket.recv(&mut buf)).await.ok()?.ok()?;
        let answer = Message::from_vec(&buf[..len]).ok()?;
        if answer.metadata.id != query.metadata.id {
            return None;
        }
        let mut values: Vec<String> = answer
            .answers
            .iter()
            .filter(|r| r.name == name && r.record_type() == RecordType::A)
            .map(|r| r.data.to_string())
            .collect();
        values.sort();
        Some(values)
    }
}

fn keygen_output(keygen: &Path) -> Vec<u8> {
    let out = Command::new(keygen).args(["-a", "hmac-sha256", "witness-key"]).output().unwrap();
    assert!(out.status.success(), "tsig-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A loopback port free for both TCP and UDP just now (named listens on both), and never
/// handed out before in this process. named binds with SO_REUSEPORT, so two tests starting at
/// once with the same port would both bind it and the kernel would share connections between
/// the two servers (one test's update reaching the other's named, refused as BADSIG).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if port != 5353 && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() && GIVEN.lock().unwrap().insert(port)
        {
            return port;
        }
    }
}

/// A record set as tests compare them: (name, type, set identifier) -> (values, weight).
pub type Records = BTreeMap<(String, String, Option<String>), (Vec<String>, Option<i64>)>;

/// A `moto_server` on a free loopback port with hosted zone `example.test.` (`zone_id`). moto
/// accepts any credentials.
pub struct Moto {
    dir: tempfile::TempDir,
    url: String,
    /// The id of zone `example.test.`, without `/hostedzone/`.
    pub zone_id: String,
    sdk: aws_sdk_route53::Client,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Started, answering, with zone `example.test.` created; `None` (after saying so) when moto
    /// is not installed and skipping is allowed.
    pub async fn start(test: &str) -> Option<Moto> {
        let Some(program) = find_moto() else {
            assert!(!in_ci(), "moto is required in CI: scripts/test installs it");
            eprintln!(
                "SKIPPED {test}: no moto_server (run scripts/test, which installs it, or set WITNESS_MOTO_SERVER)"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let url = format!("http://127.0.0.1:{port}");
        let sdk = sdk_client(&url);
        let mut moto = Moto { dir, url, zone_id: String::new(), sdk, child };
        moto.wait_ready(port).await;
        moto.zone_id = moto.create_zone(ZONE, test).await;
        Some(moto)
    }

    async fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if answers_http(port).await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "moto_server did not answer on port {port} in 60 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`, as a step's `endpoint`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A directory of this server's, for the test's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// The test's own client of this server, with static credentials.
    pub fn sdk(&self) -> &aws_sdk_route53::Client {
        &self.sdk
    }

    /// Creates hosted zone `name`; returns its id without `/hostedzone/`.
    pub async fn create_zone(&self, name: &str, caller_reference: &str) -> String {
        let zone = self
            .sdk
            .create_hosted_zone()
            .name(name)
            .caller_reference(caller_reference)
            .send()
            .await
            .expect("create hosted zone");
        zone.hosted_zone().unwrap().id().trim_start_matches("/hostedzone/").to_string()
    }

    /// Creates A record sets named `record` in `zone_id`: (set identifier, weight, value) each.
    pub async fn seed(&self, zone_id: &str, record: &str, sets: &[(Option<&str>, Option<i64>, &str)]) {
        let mut batch = ChangeBatch::builder();
        for &(id, weight, value) in sets {
            let set = ResourceRecordSet::builder()
                .name(record)
                .r#type(RrType::A)
                .ttl(60)
                .set_set_identifier(id.map(String::from))
                .set_weight(weight)
                .resource_records(ResourceRecord::builder().value(value).build().unwrap())
                .build()
                .unwrap();
            batch =
                batch.changes(Change::builder().action(ChangeAction::Create).resource_record_set(set).build().unwrap());
        }
        self.sdk
            .change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(batch.build().unwrap())
            .send()
            .await
            .expect("seed records");
    }

    /// Every record set of `zone_id` (ListResourceRecordSets, one page).
    pub async fn records(&self, zone_id: &str) -> Records {
        let out = self.sdk.list_resource_record_sets().hosted_zone_id(zone_id).send().await.unwrap();
        assert!(!out.is_truncated());
        out.resource_record_sets()
            .iter()
            .map(|s| {
                let key = (s.name().to_string(), s.r#type().as_str().to_string(), s.set_identifier().map(String::from));
                (key, (s.resource_records().iter().map(|r| r.value().to_string()).collect(), s.weight()))
            })
            .collect()
    }
}

/// `WITNESS_MOTO_SERVER`, or `moto_server` on the PATH.
pub fn find_moto() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WITNESS_MOTO_SERVER") {
        return Some(path.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("moto_server")).find(|p| p.is_file())
}

async fn answers_http(port: u16) -> bool {
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if conn.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    matches!(tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head)).await, Ok(Ok(_)))
        && &head == b"HTTP/"
}

/// A Route 53 client of `url` with static credentials (moto checks none).
pub fn sdk_client(url: &str) -> aws_sdk_route53::Client {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let conf = aws_sdk_route53::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .http_client(http)
        .build();
    aws_sdk_route53::Client::from_conf(conf)
}
