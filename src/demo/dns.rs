//! A small authoritative DNS server for one zone, over TCP, that accepts RFC 2136 updates
//! signed with its TSIG key (HMAC-SHA256) and answers queries from what it holds: the DNS
//! target of `witness demo`. Prerequisites and updates follow RFC 2136 §3.2 and §3.4 for the
//! forms a record flip uses (RRset exists with values, delete RR / RRset, add RR); responses to
//! signed requests are signed. Not a general nameserver: no UDP, no zone transfer, no NOTIFY.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigResponseContext, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Record sets by name and type; each value keyed by its text form, so sets compare as sets.
type RrSets = BTreeMap<(Name, RecordType), BTreeMap<String, RData>>;

fn entry(rdata: &RData) -> (String, RData) {
    (rdata.to_string().to_ascii_lowercase(), rdata.clone())
}

struct Zone {
    origin: Name,
    records: RrSets,
    ttl: u32,
    /// The SOA serial: one more for every update applied.
    serial: u32,
}

impl Zone {
    fn soa(&self) -> RData {
        let host = |label: &str| Name::from_ascii(label).and_then(|n| n.append_domain(&self.origin));
        let (mname, rname) = (host("ns").unwrap_or_default(), host("hostmaster").unwrap_or_default());
        RData::SOA(hickory_proto::rr::rdata::SOA::new(mname, rname, self.serial, 3600, 600, 86400, 60))
    }
}

/// The server, serving on its own task until dropped.
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    /// The key file, as `tsig-keygen` writes it.
    pub key_file: std::path::PathBuf,
    zone: Arc<Mutex<Zone>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DnsServer {
    /// Serves `zone` holding `records` (name, A address); writes a fresh key named
    /// `key_name` to `key_file` (mode 0600).
    pub async fn start(
        zone: &str,
        records: &[(&str, std::net::Ipv4Addr)],
        key_name: &str,
        key_file: &std::path::Path,
    ) -> anyhow::Result<DnsServer> {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| anyhow::anyhow!("no randomness for the TSIG key"))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        std::fs::write(
            key_file,
            format!("key \"{key_name}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{encoded}\";\n}};\n"),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key_file, std::fs::Permissions::from_mode(0o600))?;
        let signer = TSigner::new(secret.to_vec(), TsigAlgorithm::HmacSha256, Name::from_ascii(key_name)?, 300)?;
        let origin = Name::from_ascii(zone)?;
        let mut sets = RrSets::new();
        for (name, addr) in records {
            let rdata = RData::A((*addr).into());
            let (text, rdata) = entry(&rdata);
            sets.entry((Name::from_ascii(name)?, RecordType::A)).or_default().insert(text, rdata);
        }
        let zone = Arc::new(Mutex::new(Zone { origin, records: sets, ttl: 60, serial: 1 }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = zone.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone(), signer.clone()));
            }
        });
        Ok(DnsServer { addr, key_file: key_file.to_path_buf(), zone, server })
    }

    /// The A records `name` holds now.
    pub fn a_records(&self, name: &str) -> Vec<String> {
        let Ok(name) = Name::from_ascii(name) else { return Vec::new() };
        let zone = self.zone.lock().expect("zone lock poisoned");
        zone.records.get(&(name, RecordType::A)).map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }
}

async fn serve(mut stream: tokio::net::TcpStream, zone: Arc<Mutex<Zone>>, signer: TSigner) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(response) = answer(&request, &zone, &signer) else { return };
        let Ok(size) = u16::try_from(response.len()) else { return };
        if stream.write_all(&size.to_be_bytes()).await.is_err() || stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn now() -> u64 {
    crate::clock::unix_ms() / 1000
}

/// The response to one request, or `None` for bytes that are not a DNS message.
fn answer(bytes: &[u8], zone: &Mutex<Zone>, signer: &TSigner) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    let (id, op) = (request.metadata.id, request.metadata.op_code);
    let mut request_mac = None;
    if request.signature.is_some() {
        match signer.verify_message_byte(bytes, None, true) {
            Ok((mac, _, range)) if range.contains(&now()) => request_mac = Some(mac),
            // A bad signature or key: NOTAUTH, unsigned (RFC 8945 §5.2).
            _ => return Message::error_msg(id, op, ResponseCode::NotAuth).to_vec().ok(),
        }
    }
    let mut response = Message::new(id, MessageType::Response, op);
    let mut zone = zone.lock().expect("zone lock poisoned");
    let code = match op {
        OpCode::Update if request_mac.is_none() => ResponseCode::Refused,
        OpCode::Update => update(&request, &mut zone),
        OpCode::Query => {
            for q in &request.queries {
                if q.query_type() == RecordType::SOA && q.name() == &zone.origin {
                    response.add_answer(Record::from_rdata(zone.origin.clone(), zone.ttl, zone.soa()));
                }
                let found = zone.records.get(&(q.name().clone(), q.query_type()));
                for rdata in found.into_iter().flat_map(BTreeMap::values) {
                    response.add_answer(Record::from_rdata(q.name().clone(), zone.ttl, rdata.clone()));
                }
            }
            response.queries = request.queries.clone();
            ResponseCode::NoError
        }
        _ => ResponseCode::NotImp,
    };
    response.metadata.response_code = code;
    response.metadata.authoritative = true;
    let unsigned = response.to_vec().ok()?;
    let Some(mac) = request_mac else { return Some(unsigned) };
    let tsig = TSigResponseContext::new(id, now(), signer.clone(), mac, None).sign(&unsigned).ok()?;
    response.set_signature(tsig);
    response.to_vec().ok()
}

/// Checks the prerequisites, then applies the updates, all or nothing.
fn update(request: &Message, zone: &mut Zone) -> ResponseCode {
    if request.queries.len() != 1 || request.queries[0].name() != &zone.origin {
        return ResponseCode::NotAuth;
    }
    // Prerequisites: "RRset exists (value dependent)" — class IN, TTL 0: the whole set as given.
    let mut wanted: RrSets = RrSets::new();
    for r in &request.answers {
        match r.dns_class {
            DNSClass::IN => {
                let (text, rdata) = entry(&r.data);
                wanted.entry((r.name.clone(), r.record_type())).or_default().insert(text, rdata);
            }
            DNSClass::ANY if !zone.records.contains_key(&(r.name.clone(), r.record_type())) => {
                return ResponseCode::NXRRSet
            }
            DNSClass::NONE if zone.records.contains_key(&(r.name.clone(), r.record_type())) => {
                return ResponseCode::YXRRSet
            }
            DNSClass::ANY | DNSClass::NONE => {}
            _ => return ResponseCode::FormErr,
        }
    }
    for (set, values) in &wanted {
        if zone.records.get(set) != Some(values) {
            return ResponseCode::NXRRSet;
        }
    }
    for r in &request.authorities {
        if !zone.origin.zone_of(&r.name) {
            return ResponseCode::NotZone;
        }
    }
    for r in &request.authorities {
        let set = (r.name.clone(), r.record_type());
        match r.dns_class {
            DNSClass::NONE => {
                if let Some(values) = zone.records.get_mut(&set) {
                    values.remove(&entry(&r.data).0);
                }
            }
            DNSClass::ANY => {
                zone.records.remove(&set);
            }
            _ => {
                let (text, rdata) = entry(&r.data);
                zone.records.entry(set.clone()).or_default().insert(text, rdata);
            }
        }
        if zone.records.get(&set).is_some_and(BTreeMap::is_empty) {
            zone.records.remove(&set);
        }
    }
    zone.serial += 1;
    ResponseCode::NoError
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::{rfc2136, StepContext};
    use crate::config::Rfc2136Step;

    fn step(server: &DnsServer, key_file: &std::path::Path) -> Rfc2136Step {
        Rfc2136Step {
            server: server.addr.to_string(),
            zone: "example.test.".into(),
            record: "app.example.test.".into(),
            record_type: "A".into(),
            ttl: 30,
            key_file: key_file.to_path_buf(),
            values: [("east", "192.0.2.1"), ("west", "198.51.100.7")]
                .iter()
                .map(|(s, v)| (s.to_string(), vec![v.to_string()]))
                .collect(),
        }
    }

    fn ctx() -> StepContext {
        StepContext {
            group: "app".into(),
            epoch: 2,
            from: "east".into(),
            to: "west".into(),
            reason: String::new(),
            decided_at_ms: 0,
            step: "dns".into(),
        }
    }

    #[tokio::test]
    async fn the_rfc2136_executor_flips_the_record_once_and_only_with_the_key() {
        let dir = std::env::temp_dir().join(format!("witness-dns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good, bad) = (dir.join("good.key"), dir.join("bad.key"));
        let server =
            DnsServer::start("example.test.", &[("app.example.test.", [192, 0, 2, 1].into())], "demo-key", &good)
                .await
                .unwrap();
        let _other = DnsServer::start("example.test.", &[], "demo-key", &bad).await.unwrap();

        assert!(rfc2136::check(&step(&server, &good)).await.unwrap().contains("key demo-key accepted"));
        let refused = rfc2136::run(&step(&server, &bad), &ctx()).await.unwrap_err();
        assert!(!refused.retryable && refused.message.contains("refused the key"), "{refused:?}");
        assert_eq!(server.a_records("app.example.test."), ["192.0.2.1"]);

        let done = rfc2136::run(&step(&server, &good), &ctx()).await.unwrap();
        assert!(done.contains("-> 198.51.100.7"), "{done}");
        assert_eq!(server.a_records("app.example.test."), ["198.51.100.7"]);
        let again = rfc2136::run(&step(&server, &good), &ctx()).await.unwrap();
        assert!(again.contains("already"), "{again}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
