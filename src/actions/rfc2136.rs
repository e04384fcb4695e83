//! The `rfc2136` step: points one record at the survivor with a TSIG-signed dynamic update
//! (RFC 2136) sent to the zone's primary over TCP. The update is a compare-and-swap from the
//! failed site's values, so it never overwrites a record someone else has changed since, and a
//! repeat finds the record already done. Updates of one zone that arrive together (a whole site
//! failing over) go as one message, each keeping its own compare-and-swap (`batch`). Also owns
//! reading BIND key files (`tsig-keygen`).

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use hickory_proto::op::{update_message, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, RecordSet, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{StepContext, StepError, StepResult};
use crate::config::Rfc2136Step;

/// How far the server's clock may be from ours, in seconds (BIND's own default).
const FUDGE: u16 = 300;
/// Bounds each exchange on its own, so a server that accepts and never answers is named as
/// such well inside the step's timeout.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(step: &Rfc2136Step, ctx: &StepContext) -> StepResult {
    let key = read_key(step)?;
    let target = Target::new(step)?;
    let site_values = |site: &str| match step.values.get(site) {
        Some(values) => Ok((values.join(", "), target.rdata(values)?)),
        None => Err(StepError::permanent(format!("no values for site {site:?} in the step"))),
    };
    let (failed, failed_rdata) = site_values(&ctx.from)?;
    let (survivor, survivor_rdata) = site_values(&ctx.to)?;
    let wanted: BTreeSet<String> = survivor_rdata.iter().map(canonical).collect();
    let update = update_message::compare_and_swap(
        target.rrset(failed_rdata, 0),
        target.rrset(survivor_rdata, step.ttl),
        target.zone.clone(),
        false,
    );
    let what = format!("update of {}", step.record);
    let (rcode, together) = batch::update(step, update, &what).await?;
    let record = &step.record;
    match rcode {
        ResponseCode::NoError => {
            let now = current(step, &key, &target).await?;
            if now != wanted {
                return Err(StepError::retryable(format!(
                    "{} accepted the update, but {record} holds {}",
                    step.server,
                    describe(&now)
                )));
            }
            let with = match together {
                1 => String::new(),
                n => format!("; one update of {n} records"),
            };
            Ok(format!("{record} {} -> {survivor} (was {failed}{with})", step.record_type))
        }
        // The prerequisite failed: either an earlier attempt already did it, or someone else
        // changed the record, which is theirs to sort out.
        ResponseCode::NXRRSet | ResponseCode::YXRRSet => {
            let now = current(step, &key, &target).await?;
            if now == wanted {
                return Ok(format!("{record} already {survivor}"));
            }
            Err(StepError::permanent(format!(
                "{record} holds {}, neither {} ({failed}) nor {} ({survivor}): not changed; check the zone, then \
                 `witness plan retry` or `skip`",
                describe(&now),
                ctx.from,
                ctx.to
            )))
        }
        rcode => Err(unexpected(&step.server, rcode, &what)),
    }
}

pub async fn check(step: &Rfc2136Step) -> StepResult {
    let key = read_key(step)?;
    let zone = dns_name("zone", &step.zone)?;
    let mut query = Message::query();
    query.add_query(Query::query(zone.clone(), RecordType::SOA));
    let what = format!("SOA query for {}", step.zone);
    let answer = exchange(step, &key, query, &what).await?;
    let serial = answer.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) if r.name == zone => Some(soa.serial),
        _ => None,
    });
    match (answer.metadata.response_code, serial) {
        (ResponseCode::NoError, Some(serial)) => {
            Ok(format!("SOA serial {serial} from {}, key {} accepted", step.server, key.name))
        }
        (ResponseCode::NoError, None) => Err(StepError::permanent(format!(
            "{} has no SOA for {}: is it the zone's primary?",
            step.server, step.zone
        ))),
        (rcode, _) => Err(unexpected(&step.server, rcode, &what)),
    }
}

/// Whether the record holds `ctx.to`'s values (a signed query; changes nothing).
pub async fn observe(step: &Rfc2136Step, ctx: &StepContext) -> Result<super::Observed, StepError> {
    let target = Target::new(step)?;
    let values = step
        .values
        .get(&ctx.to)
        .ok_or_else(|| StepError::permanent(format!("no values for site {:?} in the step", ctx.to)))?;
    let wanted: BTreeSet<String> = target.rdata(values)?.iter().map(canonical).collect();
    let now = current(step, &read_key(step)?, &target).await?;
    Ok(if now == wanted {
        super::Observed::InPlace
    } else {
        super::Observed::Drifted(format!(
            "{} holds {}, not {}'s {}",
            step.record,
            describe(&now),
            ctx.to,
            values.join(", ")
        ))
    })
}

/// What the server holds for the step's record now (a signed query; changes nothing).
pub async fn query(step: &Rfc2136Step) -> Result<BTreeSet<String>, StepError> {
    current(step, &read_key(step)?, &Target::new(step)?).await
}

/// The record the step changes, parsed once.
struct Target {
    zone: Name,
    name: Name,
    rtype: RecordType,
}

impl Target {
    fn new(step: &Rfc2136Step) -> Result<Target, StepError> {
        let (zone, name) = (dns_name("zone", &step.zone)?, dns_name("record", &step.record)?);
        // compare_and_swap asserts this: checked here so that a bad step fails instead.
        if !zone.zone_of(&name) {
            return Err(StepError::permanent(format!("record {} is not inside zone {}", step.record, step.zone)));
        }
        let rtype = match step.record_type.as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::AAAA,
            "CNAME" => RecordType::CNAME,
            other => {
                return Err(StepError::permanent(format!(
                    "unsupported record type {other:?}: expected A, AAAA or CNAME"
                )))
            }
        };
        Ok(Target { zone, name, rtype })
    }

    fn rdata(&self, values: &[String]) -> Result<Vec<RData>, StepError> {
        if values.is_empty() {
            return Err(StepError::permanent(format!("no {} values given for {}", self.rtype, self.name)));
        }
        let parse = |v: &str| match self.rtype {
            RecordType::A => v.parse().ok().map(|a| RData::A(A(a))),
            RecordType::AAAA => v.parse().ok().map(|a| RData::AAAA(AAAA(a))),
            _ => dns_name("CNAME value", v).ok().map(|n| RData::CNAME(CNAME(n))),
        };
        let invalid = |v: &str| StepError::permanent(format!("{v:?} is not a valid {} value", self.rtype));
        values.iter().map(|v| parse(v).ok_or_else(|| invalid(v))).collect()
    }

    fn rrset(&self, rdata: Vec<RData>, ttl: u32) -> RecordSet {
        let mut set = RecordSet::with_ttl(self.name.clone(), self.rtype, ttl);
        for r in rdata {
            set.add_rdata(r);
        }
        set
    }
}

/// An absolute name: names in steps are fully qualified, with or without their trailing dot.
fn dns_name(what: &str, s: &str) -> Result<Name, StepError> {
    let mut name =
        Name::from_ascii(s).map_err(|e| StepError::permanent(format!("{what} {s:?} is not a valid DNS name: {e}")))?;
    name.set_fqdn(true);
    Ok(name)
}

/// What the server holds for the step's record now, read back through the same signed channel.
async fn current(step: &Rfc2136Step, key: &Key, target: &Target) -> Result<BTreeSet<String>, StepError> {
    let mut query = Message::query();
    query.add_query(Query::query(target.name.clone(), target.rtype));
    let what = format!("query for {} {}", step.record, step.record_type);
    let answer = exchange(step, key, query, &what).await?;
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer
            .answers
            .iter()
            .filter(|r| r.name == target.name && r.record_type() == target.rtype)
            .map(|r| canonical(&r.data))
            .collect()),
        rcode => Err(unexpected(&step.server, rcode, &what)),
    }
}

/// Compared as sets of these: addresses print canonically, names in lower case.
fn canonical(rdata: &RData) -> String {
    rdata.to_string().to_ascii_lowercase()
}

fn describe(values: &BTreeSet<String>) -> String {
    if values.is_empty() {
        "nothing".into()
    } else {
        values.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn rcode_name(rcode: ResponseCode) -> String {
    format!("{rcode:?}").to_ascii_uppercase()
}

/// A server failure may pass; any other refusal needs an operator.
fn unexpected(server: &str, rcode: ResponseCode, what: &str) -> StepError {
    let message = format!("{server} answered {} to the {what}", rcode_name(rcode));
    if rcode == ResponseCode::ServFail {
        StepError::retryable(message)
    } else {
        StepError::permanent(message)
    }
}

/// Signs `request`, sends it, and returns the answer once its signature checks out. Refusals of
/// the key or the request come back unsigned, so they are recognised before the check; anything
/// else unsigned may be forged and is not believed.
async fn exchange(step: &Rfc2136Step, key: &Key, mut request: Message, what: &str) -> Result<Message, StepError> {
    let server = &step.server;
    let broken = |e: &dyn std::fmt::Display| StepError::permanent(format!("cannot build the {what}: {e}"));
    let mut verifier = request
        .finalize(&key.signer, crate::clock::unix_ms() / 1000)
        .map_err(|e| broken(&e))?
        .ok_or_else(|| broken(&"no TSIG verifier"))?;
    let bytes = request.to_vec().map_err(|e| broken(&e))?;
    let reply = match tokio::time::timeout(EXCHANGE_TIMEOUT, send(server, &bytes)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return Err(StepError::retryable(format!("{what}: cannot reach {server}: {e}"))),
        Err(_) => {
            let secs = EXCHANGE_TIMEOUT.as_secs();
            return Err(StepError::retryable(format!("{what}: no answer from {server} within {secs}s")));
        }
    };
    let answer = Message::from_vec(&reply)
        .map_err(|e| StepError::retryable(format!("{what}: unreadable answer from {server}: {e}")))?;
    if answer.metadata.id != request.metadata.id || answer.metadata.message_type != MessageType::Response {
        return Err(StepError::retryable(format!("{what}: {server} answered something else")));
    }
    let rcode = answer.metadata.response_code;
    let tsig_error = answer.signature.as_ref().and_then(|s| s.data.error);
    if tsig_error == Some(TsigError::BadTime) {
        return Err(StepError::permanent(format!(
            "{server} refused the key named {} (BADTIME): this machine's clock and the server's differ by more \
             than {FUDGE}s",
            key.name
        )));
    }
    if rcode == ResponseCode::NotAuth || tsig_error.is_some() {
        let detail = tsig_error.map_or(String::new(), |e| format!(", TSIG error {}", format!("{e:?}").to_uppercase()));
        return Err(StepError::permanent(format!(
            "{server} refused the key named {} ({}{detail}) for the {what}: check that key_file {} holds the \
             key the server has for zone {}",
            key.name,
            rcode_name(rcode),
            step.key_file.display(),
            step.zone
        )));
    }
    if rcode == ResponseCode::Refused {
        return Err(StepError::permanent(format!(
            "{server} refused the {what} (REFUSED): check that it serves zone {} and that the zone's \
             update-policy grants key {}",
            step.zone, key.name
        )));
    }
    verifier.verify(&reply).map_err(|e| {
        StepError::retryable(format!("{what}: response from {server} not signed by the key {}: {e}", key.name))
    })?;
    Ok(answer)
}

/// At most this many connections to one server at a time: a whole site failing over reads back
/// hundreds of records at once, and a burst of connections overflows a nameserver's listen
/// queue (BIND's `tcp-listen-queue` is 10), which answers the rest with resets.
const CONNECTIONS_PER_SERVER: usize = 8;

/// One DNS message over TCP, each way prefixed by its length (RFC 1035 §4.2.2), on one of the
/// server's [`CONNECTIONS_PER_SERVER`].
async fn send(server: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static SERVERS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>> = OnceLock::new();
    let turns = SERVERS
        .get_or_init(Default::default)
        .lock()
        .expect("servers lock poisoned")
        .entry(server.into())
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_PER_SERVER)))
        .clone();
    let _turn = turns.acquire().await.map_err(std::io::Error::other)?;
    let len = u16::try_from(request.len()).map_err(|_| std::io::Error::other("message longer than 65535 bytes"))?;
    let mut stream = TcpStream::connect(server).await?;
    stream.write_all(&[&len.to_be_bytes()[..], request].concat()).await?;
    let mut len = [0; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// A TSIG key. Deliberately not `Debug`: it holds the secret.
struct Key {
    name: String,
    signer: TSigner,
}

fn read_key(step: &Rfc2136Step) -> Result<Key, StepError> {
    let text = super::secrets::read("key_file", &step.key_file)?;
    parse_key(&text).map_err(|what| StepError::permanent(format!("key_file {}: {what}", step.key_file.display())))
}

#[derive(Clone, Copy, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Punct(char),
}

/// Reads the key clause `tsig-keygen -a hmac-sha256 NAME` writes:
/// `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`. Errors say what is wrong without
/// quoting the file, which holds the secret.
fn parse_key(text: &[u8]) -> Result<Key, String> {
    use Token::{Punct, Word};
    let shape =
        || "expected one clause key \"NAME\" { algorithm hmac-sha256; secret \"BASE64\"; }; as tsig-keygen writes";
    let text = std::str::from_utf8(text).map_err(|_| "not a text file".to_string())?;
    let tokens = tokenize(text)?;
    let [Word("key"), Word(name), Punct('{'), body @ ..] = tokens.as_slice() else {
        return Err(shape().into());
    };
    let mut body = body;
    let (mut algorithm, mut secret) = (None, None);
    loop {
        match body {
            [Word("algorithm"), Word(value), Punct(';'), rest @ ..] => (algorithm, body) = (Some(*value), rest),
            [Word("secret"), Word(value), Punct(';'), rest @ ..] => (secret, body) = (Some(*value), rest),
            [Punct('}')] | [Punct('}'), Punct(';')] => break,
            _ => return Err(shape().into()),
        }
    }
    let algorithm = algorithm.ok_or("no algorithm in the key clause")?;
    if !algorithm.eq_ignore_ascii_case("hmac-sha256") {
        return Err(format!("algorithm {algorithm:?} is not supported: make the key with tsig-keygen -a hmac-sha256"));
    }
    let secret: String = secret.ok_or("no secret in the key clause")?.split_whitespace().collect();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .map_err(|_| "the secret is not valid base64".to_string())?;
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    let key_name = Name::from_ascii(name).map_err(|_| format!("key name {name:?} is not a valid DNS name"))?;
    let signer = TSigner::new(secret, TsigAlgorithm::HmacSha256, key_name, FUDGE).map_err(|e| e.to_string())?;
    Ok(Key { name: name.to_string(), signer })
}

/// Named's configuration syntax, as far as a key file needs it: words, quoted strings,
/// punctuation, and `#`, `//` and `/* */` comments.
fn tokenize(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while let Some(c) = rest.chars().next() {
        if c == '#' || rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.find("*/").map(|end| &comment[end + 2..]).ok_or("unterminated /* comment")?;
        } else if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or("unterminated quoted string")?;
            tokens.push(Token::Word(&quoted[..end]));
            rest = &quoted[end + 1..];
        } else if "{};".contains(c) {
            tokens.push(Token::Punct(c));
            rest = &rest[1..];
        } else {
            let end = rest.find(|c: char| c.is_whitespace() || "{};\"".contains(c)).unwrap_or(rest.len());
            tokens.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn at_most_a_few_connections_to_one_server_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap().to_string();
        let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (o, m) = (open.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                m.fetch_max(o.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                    drop(stream);
                });
            }
        });
        let sent = futures::future::join_all((0..40).map(|_| super::send(&server, b"query"))).await;
        assert!(sent.iter().all(|r| r.is_err()), "the server closes without answering");
        assert_eq!(most.load(Ordering::SeqCst), super::CONNECTIONS_PER_SERVER, "40 at once, a few at a time");
    }

    use super::*;

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=";

    fn error(text: &str) -> String {
        let err = parse_key(text.as_bytes()).err().expect("the key file should be refused");
        assert!(!err.contains(SECRET) && !err.contains("c2VjcmV0"), "the secret leaked: {err}");
        err
    }

    #[test]
    fn reads_what_tsig_keygen_writes() {
        let text = format!("key \"witness-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n");
        let key = parse_key(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.name, "witness-key");
        assert_eq!(key.signer.key(), b"secret-secret-secret-secret-secr");
        assert_eq!(key.signer.signer_name().to_string(), "witness-key.");
        let commented = format!(
            "# made by hand\nkey witness-key {{ /* old */ secret \"{SECRET}\"; // x\n algorithm HMAC-SHA256; }}"
        );
        assert_eq!(parse_key(commented.as_bytes()).unwrap_or_else(|e| panic!("{e}")).name, "witness-key");
    }

    #[test]
    fn refuses_other_algorithms() {
        let err = error(&format!("key \"k\" {{ algorithm hmac-md5; secret \"{SECRET}\"; }};"));
        assert!(err.contains("hmac-md5") && err.contains("hmac-sha256"), "{err}");
    }

    #[test]
    fn refuses_a_secret_that_is_not_base64() {
        let err = error(&format!("key \"k\" {{ algorithm hmac-sha256; secret \"{SECRET}!*\"; }};"));
        assert!(err.contains("base64"), "{err}");
        assert!(error("key \"k\" { algorithm hmac-sha256; secret \"\"; };").contains("empty"));
    }

    #[test]
    fn refuses_garbage() {
        for text in [
            String::new(),
            SECRET.to_string(),
            format!("{SECRET} {{"),
            format!("key \"k\" {{ algorithm hmac-sha256; secret \"{SECRET}\" }};"),
            format!("key \"k\" {{ algorithm hmac-sha256; secret \"{SECRET}; }};"),
            format!("key \"k\" {{ secret \"{SECRET}\"; }}; key \"k2\" {{ }};"),
            format!("/* key \"k\" {{ secret \"{SECRET}\"; }};"),
            "\u{0}\u{ff}".to_string(),
        ] {
            error(&text);
        }
        assert!(error(&format!("key \"k\" {{ secret \"{SECRET}\"; }};")).contains("no algorithm"));
        assert!(parse_key(b"\xff\xfe").err().unwrap().contains("text"));
    }
}

/// Updates bound for one zone at one server with one key, arriving within [`batch::WINDOW`] of
/// each other, go as one UPDATE message: a nameserver applies a zone's updates one at a time
/// (BIND writes its journal for each), so 500 groups failing over at once took 12 s one by one.
/// Each update keeps its own compare-and-swap prerequisite; if any fails, the server refuses
/// the whole message, and each is then sent again alone, so that each step gets its own answer.
mod batch {
    use std::time::Duration;

    use hickory_proto::op::{Message, ResponseCode};
    use tokio::sync::oneshot;

    use super::{exchange, read_key};
    use crate::actions::gather::Gather;
    use crate::actions::StepError;
    use crate::config::Rfc2136Step;

    /// How long the first update of a batch waits for others.
    pub const WINDOW: Duration = Duration::from_millis(20);
    /// At most this many updates in one message (a DNS message over TCP holds at most 64 KiB;
    /// one record's compare-and-swap takes about 100 bytes).
    const MOST: usize = 200;

    static GATHER: Gather<Pending> = Gather::new(WINDOW, MOST);

    struct Pending {
        update: Message,
        what: String,
        /// The answer, and how many updates went in the message it answers.
        done: oneshot::Sender<Result<(ResponseCode, usize), StepError>>,
    }

    /// Sends `update` (a compare-and-swap for `step`'s zone) with whatever else arrives for the
    /// same zone within [`WINDOW`]; the server's answer to it, and how many updates went in the
    /// message it answers.
    pub async fn update(step: &Rfc2136Step, update: Message, what: &str) -> Result<(ResponseCode, usize), StepError> {
        // Server, zone and key file: updates that may share a message.
        let key = format!("{} {} {}", step.server, step.zone.to_ascii_lowercase(), step.key_file.display());
        let (done, answer) = oneshot::channel();
        let pending = Pending { update, what: what.to_string(), done };
        let sent = step.clone();
        let _withdraw = GATHER.join(&key, pending, move |batch| send(sent.clone(), batch));
        answer.await.unwrap_or_else(|_| Err(StepError::retryable(format!("{what}: the batch it was in was dropped"))))
    }

    /// Sends one update in a message of its own.
    async fn alone(step: &Rfc2136Step, key: &super::Key, p: Pending) {
        let answer = exchange(step, key, p.update, &p.what).await;
        let _ = p.done.send(answer.map(|a| (a.metadata.response_code, 1)));
    }

    /// Sends a batch as one message; if a prerequisite failed, each update alone.
    async fn send(step: Rfc2136Step, mut batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let key = match read_key(&step) {
            Ok(key) => key,
            Err(e) => return batch.into_iter().for_each(|p| drop(p.done.send(Err(e.clone())))),
        };
        if batch.len() == 1 {
            return alone(&step, &key, batch.pop().expect("one")).await;
        }
        let n = batch.len();
        let mut combined = batch[0].update.clone();
        for p in &batch[1..] {
            combined.answers.extend(p.update.answers.iter().cloned());
            combined.authorities.extend(p.update.authorities.iter().cloned());
        }
        let what = format!("update of {n} records in {}", step.zone);
        match exchange(&step, &key, combined, &what).await.map(|a| (a.metadata.response_code, n)) {
            Ok((ResponseCode::NXRRSet | ResponseCode::YXRRSet, _)) => {
                futures::future::join_all(batch.into_iter().map(|p| alone(&step, &key, p))).await;
            }
            answer => batch.into_iter().for_each(|p| drop(p.done.send(answer.clone()))),
        }
    }
}
