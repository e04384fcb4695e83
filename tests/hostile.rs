//! Hostile input (issue "hostile input"): seeded, bounded fuzzing of every JSON body, path
//! parameter, query string and credential the API accepts, against a real three-node TLS
//! cluster (group `app`, both sites probed at a closed port, so nothing fails over by itself).
//!
//! Every request sent is refused by construction: each body carries at least one corruption,
//! every path names a group, site or member that does not exist, every query has a bad
//! parameter, every credential is garbage or lacks the role. So the properties are simple:
//!
//! * no node panics: each keeps answering `/healthz`, and no log says "panicked"; nor does a
//!   request write a log line of its own (a line break in a name it sends);
//! * every answer is a 4xx (401/403 exactly where credentials are at fault) whose body is JSON
//!   with an `error` string; axum's own 404 and 405 for unmatched routes and methods answer
//!   with an empty body, which is accepted and counted;
//! * nothing changes: no journal event appears (checked on the leader after every request, so
//!   a write is pinned to the request that made it), and the groups and members are the same
//!   after the campaign as before.
//!
//! Deterministic (fixed seeds, one request at a time) and bounded: a campaign is about 1500
//! requests (15 s in a debug build); each of the two tests runs one, with its own seed, on its
//! own cluster. The first checks every property above; the second then checks that the
//! cluster still does what an operator asks, with the journal naming who asked.
//! Operator and admin actions are rate-limited per credential and node (by default bursts of
//! 60, then 10/s), so those requests rotate over the three nodes and the two tokens that may send them,
//! and a 429 is waited out and the same request sent again.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde_json::Value;
use support::{creds, eventually, Cluster};
use witness::rng::SplitMix64;

/// The campaigns' seeds: every generator draws from `SplitMix64::new(seed ^ section)`.
const SEEDS: [u64; 2] = [0x5EED_0000_4057_1101, 0x5EED_0000_4057_1102];

/// Corrupted bodies per body-taking endpoint.
const BODY_CASES: usize = 72;

/// The API's limit on request bodies (src/api/mod.rs, `body_limit`): a heartbeat's is 1 MiB.
const BODY_LIMIT: usize = 64 * 1024;

fn body_limit(path: &str) -> usize {
    if path.ends_with("/heartbeat") {
        1 << 20
    } else {
        BODY_LIMIT
    }
}

/// The statuses a refused request may get (401 and 403 only where a test expects them).
const REFUSED: [u16; 7] = [400, 404, 405, 409, 413, 415, 422];

/// A 5xx is allowed only with one of these codes (none is expected with a healthy cluster).
const UNAVAILABLE: [&str; 4] = ["no_leader", "leader_moved", "leader_unreachable", "outcome_unknown"];

/// Problems that mean a node failed, not just that it answered wrongly.
const NO_ANSWER: &str = "no answer (transport error)";
const SERVER_ERROR: &str = "5xx";
const DOWN: &str = "node not answering /healthz";

/// Starts a name with a line break in it: a log line starting with this was forged by a
/// request.
const FORGED: &str = "FORGED-BY-HOSTILE-INPUT";

/// The tokens that may send operator actions: requests rotate over them (and the nodes) to
/// stay within the rate limits.
const OPERATORS: &[&str] = &["admin", "operator"];

// ---------------------------------------------------------------------------------------------
// The request bodies the API takes (src/api/mod.rs, src/engine/leases.rs), all with
// `deny_unknown_fields`.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    Str,
    U64,
    OptU64,
    Bool,
    /// A heartbeat's `groups`: group name → report.
    Reports,
}

struct Field {
    name: &'static str,
    ty: Ty,
    /// A valid value, as JSON text.
    valid: &'static str,
    /// Leaving it out makes the body invalid (by serde or by the handler).
    required: bool,
}

const fn field(name: &'static str, ty: Ty, valid: &'static str, required: bool) -> Field {
    Field { name, ty, valid, required }
}

struct BodyEndpoint {
    path: &'static str,
    tokens: &'static [&'static str],
    fields: &'static [Field],
    /// `Option<Json<_>>`: without a Content-Type the body is ignored and the request is
    /// valid, so every case here must carry a Content-Type.
    optional: bool,
    /// Well-typed bodies the handler refuses (field → JSON text, applied to the valid body).
    semantic: &'static [&'static [(&'static str, &'static str)]],
}

const ORDER: &[Field] = &[
    field("to", Ty::Str, "\"west\"", true),
    field("reason", Ty::Str, "\"hostile\"", false),
    field("dry_run", Ty::Bool, "true", false),
    field("force", Ty::Bool, "false", false),
    field("check", Ty::Bool, "false", false),
];
const EPOCH: &[Field] = &[field("epoch", Ty::OptU64, "1", false)];
const REPORT: &str = r#"{"app":{"epoch":1,"role":"standby","in_sync":true,"recovery_point_age_ms":0,"drained":false}}"#;

const BODIES: &[BodyEndpoint] = &[
    BodyEndpoint { path: "/v1/groups/app/failover", tokens: OPERATORS, fields: ORDER, optional: false, semantic: &[] },
    BodyEndpoint {
        path: "/v1/groups/app/failback",
        tokens: OPERATORS,
        fields: &[
            field("reason", Ty::Str, "\"hostile\"", false),
            field("dry_run", Ty::Bool, "true", false),
            field("force", Ty::Bool, "false", false),
            field("check", Ty::Bool, "false", false),
        ],
        optional: false,
        // A failback goes to the primary: `to` is refused.
        semantic: &[&[("to", "\"east\"")], &[("to", "\"west\"")]],
    },
    BodyEndpoint { path: "/v1/groups/app/ack", tokens: OPERATORS, fields: EPOCH, optional: true, semantic: &[] },
    BodyEndpoint { path: "/v1/groups/app/plan/retry", tokens: OPERATORS, fields: EPOCH, optional: true, semantic: &[] },
    BodyEndpoint { path: "/v1/groups/app/plan/skip", tokens: OPERATORS, fields: EPOCH, optional: true, semantic: &[] },
    BodyEndpoint {
        path: "/v1/automation",
        tokens: OPERATORS,
        fields: &[field("enabled", Ty::Bool, "true", true)],
        optional: false,
        semantic: &[],
    },
    BodyEndpoint {
        path: "/v1/sites/west/heartbeat",
        tokens: &["west"],
        fields: &[field("peer_reachable", Ty::Bool, "false", true), field("groups", Ty::Reports, REPORT, false)],
        optional: false,
        semantic: &[],
    },
    BodyEndpoint {
        path: "/v1/members",
        tokens: &["admin"],
        fields: &[field("id", Ty::U64, "7", true), field("addr", Ty::Str, "\"127.0.0.1:1\"", true)],
        optional: false,
        semantic: &[],
    },
];

/// JSON values of the wrong type for `ty` (null only where the field is not optional).
fn wrong_values(ty: Ty) -> &'static [&'static str] {
    match ty {
        Ty::Str => &["1", "true", "null", "[]", "{}", "[\"west\"]", "{\"site\":\"west\"}", "1.5"],
        Ty::U64 | Ty::OptU64 => {
            let all: &'static [&'static str] =
                &["null", "\"1\"", "-1", "1.5", "true", "[]", "{}", "[1]", "\"18446744073709551615\""];
            if ty == Ty::OptU64 {
                &all[1..]
            } else {
                all
            }
        }
        Ty::Bool => &["\"true\"", "1", "0", "null", "[]", "{}", "\"false\"", "[true]"],
        Ty::Reports => &[
            "[]",
            "\"app\"",
            "1",
            "true",
            "null",
            r#"{"app":null}"#,
            r#"{"app":[]}"#,
            r#"{"app":{"role":"leader"}}"#,
            r#"{"app":{"role":"ACTIVE"}}"#,
            r#"{"app":{"epoch":-1}}"#,
            r#"{"app":{"epoch":"1"}}"#,
            r#"{"app":{"in_sync":"yes"}}"#,
            r#"{"app":{"drained":null}}"#,
            r#"{"app":{"recovery_point_age_ms":1e400}}"#,
            r#"{"app":{"bogus":1}}"#,
        ],
    }
}

/// Numbers no field takes: out of range for u64, negative, fractional, not JSON at all.
const BAD_NUMBERS: &[&str] = &[
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "-1",
    "-9223372036854775809",
    "1e400",
    "-1e400",
    "1.5",
    "9223372036854775808",
    "0x10",
    "NaN",
    "Infinity",
    "01",
    "+1",
];

/// Keys no body has.
const UNKNOWN_KEYS: &[&str] = &["zzz", "Site", "EPOCH", "enabled ", "", "__proto__", "constructor", "nul\0key", "épée"];

/// The ways a body is corrupted; each case uses one, and every one makes the body invalid.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    WrongType,
    UnknownField,
    MissingField,
    DuplicateField,
    Truncated,
    TrailingGarbage,
    DeepNesting,
    HugeNumber,
    LongString,
    Oversize,
    InvalidUtf8,
    NulByte,
    RandomBytes,
    NotAnObject,
    WrongContentType,
    NoContentType,
    EmptyBody,
    Semantic,
}

const CORRUPTIONS: [Corruption; 18] = [
    Corruption::WrongType,
    Corruption::UnknownField,
    Corruption::MissingField,
    Corruption::DuplicateField,
    Corruption::Truncated,
    Corruption::TrailingGarbage,
    Corruption::DeepNesting,
    Corruption::HugeNumber,
    Corruption::LongString,
    Corruption::Oversize,
    Corruption::InvalidUtf8,
    Corruption::NulByte,
    Corruption::RandomBytes,
    Corruption::NotAnObject,
    Corruption::WrongContentType,
    Corruption::NoContentType,
    Corruption::EmptyBody,
    Corruption::Semantic,
];

fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

/// A body as an ordered list of (key, JSON text), so that it can hold what `serde_json::Value`
/// cannot (duplicate keys, 1e400, invalid UTF-8).
type Pairs = Vec<(String, Vec<u8>)>;

fn render(pairs: &Pairs) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_string(key).unwrap().into_bytes());
        out.push(b':');
        out.extend(value);
    }
    out.push(b'}');
    out
}

fn valid_pairs(ep: &BodyEndpoint) -> Pairs {
    ep.fields.iter().map(|f| (f.name.to_string(), f.valid.as_bytes().to_vec())).collect()
}

fn unknown_field(rng: &mut SplitMix64, pairs: &mut Pairs, value: Vec<u8>) -> String {
    let key = pick(rng, UNKNOWN_KEYS).to_string();
    let at = rng.below(pairs.len() as u64 + 1) as usize;
    pairs.insert(at, (key.clone(), value));
    key
}

fn long_string(len: usize) -> Vec<u8> {
    let mut s = b"\"".to_vec();
    s.extend(std::iter::repeat_n(b'x', len));
    s.push(b'"');
    s
}

/// One corrupted body for `ep`: (what was done, Content-Type, body).
fn corrupt(rng: &mut SplitMix64, ep: &BodyEndpoint, how: Corruption) -> (String, Option<&'static str>, Vec<u8>) {
    const JSON: Option<&str> = Some("application/json");
    let mut pairs = valid_pairs(ep);
    let i = rng.below(pairs.len() as u64) as usize;
    let name = ep.fields[i].name;
    let what = match how {
        Corruption::WrongType => {
            let v = pick(rng, wrong_values(ep.fields[i].ty));
            pairs[i].1 = v.as_bytes().to_vec();
            format!("wrong type: {name} = {v}")
        }
        Corruption::UnknownField => {
            let key = unknown_field(rng, &mut pairs, b"1".to_vec());
            format!("unknown field {key:?}")
        }
        Corruption::MissingField => match ep.fields.iter().position(|f| f.required) {
            Some(r) => {
                let gone = pairs.remove(r).0;
                format!("missing field {gone}")
            }
            // Nothing is required: a wrong type instead.
            None => return corrupt(rng, ep, Corruption::WrongType),
        },
        Corruption::DuplicateField => {
            let dup = pairs[i].clone();
            pairs.insert(rng.below(pairs.len() as u64 + 1) as usize, dup);
            format!("duplicate field {name}")
        }
        Corruption::Truncated => {
            // Cut before the closing brace at the latest: never complete JSON.
            let full = render(&pairs);
            let cut = rng.below(full.len() as u64) as usize;
            return (format!("truncated at {cut} of {}", full.len()), JSON, full[..cut].to_vec());
        }
        Corruption::TrailingGarbage => {
            let tail = pick(rng, &["}", "x", ",", "{}", "]", "\"", "null", "\u{0}"]);
            let mut body = render(&pairs);
            body.extend(tail.as_bytes());
            return (format!("trailing {tail:?}"), JSON, body);
        }
        Corruption::DeepNesting => {
            // serde_json stops at 128 levels: this must be refused, not overflow the stack.
            let depth = pick(rng, &[129, 1_000, 10_000]);
            let balanced = || [vec![b'['; depth], vec![b']'; depth]].concat();
            match rng.below(3) {
                0 => return (format!("{depth} unclosed ["), JSON, vec![b'['; depth]),
                1 => {
                    pairs[i].1 = balanced();
                    format!("{name} nested {depth} deep")
                }
                _ => {
                    let nested = [b"{\"a\":".repeat(depth), b"1".to_vec(), b"}".repeat(depth)].concat();
                    let key = unknown_field(rng, &mut pairs, nested);
                    format!("unknown field {key:?} with objects nested {depth} deep")
                }
            }
        }
        Corruption::HugeNumber => {
            let numeric = matches!(ep.fields[i].ty, Ty::U64 | Ty::OptU64);
            if numeric && rng.below(3) == 0 {
                // u64::MAX is a valid u64: it needs a second corruption.
                pairs[i].1 = u64::MAX.to_string().into_bytes();
                let key = unknown_field(rng, &mut pairs, b"0".to_vec());
                format!("{name} = u64::MAX and unknown field {key:?}")
            } else {
                let v = if numeric { pick(rng, BAD_NUMBERS) } else { pick(rng, &["18446744073709551615", "1e400"]) };
                pairs[i].1 = v.as_bytes().to_vec();
                format!("{name} = {v}")
            }
        }
        Corruption::LongString => {
            // 60 KiB, under the 64 KiB limit, where no string is taken (or as an unknown key).
            let long = long_string(60 * 1024);
            match ep.fields.iter().position(|f| f.ty != Ty::Str) {
                Some(n) if rng.below(2) == 0 => {
                    pairs[n].1 = long;
                    format!("60 KiB string as {}", ep.fields[n].name)
                }
                _ => {
                    let key = "k".repeat(60 * 1024);
                    pairs.insert(0, (key, b"1".to_vec()));
                    "unknown 60 KiB key".to_string()
                }
            }
        }
        Corruption::Oversize => {
            // Over the limit, and within what the server reads and drops before answering (it
            // refuses a larger one unread, which a client still sending may see as a reset).
            let limit = body_limit(ep.path);
            let len = limit + 1 + rng.below(limit as u64) as usize;
            let key = unknown_field(rng, &mut pairs, long_string(len));
            format!("over the limit: unknown field {key:?} of {len} bytes")
        }
        Corruption::InvalidUtf8 => {
            // Raw bytes anywhere: outside a string they are not JSON, inside one not UTF-8.
            let bad =
                pick(rng, &[&b"\xff"[..], b"\xfe\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]);
            let mut body = render(&pairs);
            let at = 1 + rng.below(body.len() as u64 - 1) as usize;
            body.splice(at..at, bad.iter().copied());
            return (format!("invalid UTF-8 {bad:x?} at {at}"), JSON, body);
        }
        Corruption::NulByte => {
            let mut body = render(&pairs);
            let at = rng.below(body.len() as u64 + 1) as usize;
            body.insert(at, 0);
            return (format!("NUL byte at {at}"), JSON, body);
        }
        Corruption::RandomBytes => {
            let len = 1 + rng.below(256) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            // A body is a JSON object (or array): make sure this is neither.
            if matches!(body[0], b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n') {
                body[0] = b'#';
            }
            return (format!("{len} random bytes"), JSON, body);
        }
        Corruption::NotAnObject => {
            let v = pick(rng, &["null", "true", "1", "\"west\"", "1.5", "\"{}\""]);
            return (format!("body {v}"), JSON, v.as_bytes().to_vec());
        }
        Corruption::WrongContentType => {
            let ct = pick(
                rng,
                &[
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "text/json",
                    "application/jsonx",
                    "application/xml",
                    "json",
                    "*/*",
                    "multipart/form-data; boundary=x",
                ],
            );
            return (format!("valid body as {ct}"), Some(ct), render(&pairs));
        }
        Corruption::NoContentType if !ep.optional => {
            return ("valid body without Content-Type".to_string(), None, render(&pairs));
        }
        // Without a Content-Type an optional body is no body: a valid request.
        Corruption::NoContentType | Corruption::EmptyBody => {
            return ("empty body".to_string(), JSON, Vec::new());
        }
        Corruption::Semantic => {
            if ep.semantic.is_empty() {
                return corrupt(rng, ep, Corruption::UnknownField);
            }
            let changes = pick(rng, ep.semantic);
            for (key, value) in changes {
                match pairs.iter_mut().find(|(k, _)| k == key) {
                    Some(pair) => pair.1 = value.as_bytes().to_vec(),
                    None => pairs.push((key.to_string(), value.as_bytes().to_vec())),
                }
            }
            format!("refused by the handler: {changes:?}")
        }
    };
    (what, JSON, render(&pairs))
}

// ---------------------------------------------------------------------------------------------
// Path segments and queries.

/// Percent-encodes everything but unreserved characters, so that the server decodes exactly
/// `text` (and the client's URL parser leaves it alone).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the server makes of a path segment: `%XX` decoded, anything else kept.
fn decode(segment: &str) -> Vec<u8> {
    let b = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Path segments (already encoded) naming no group, site or member: odd names, encoded
/// garbage (NUL, slashes, invalid UTF-8), a 10 KiB segment, unicode, and random ones.
fn bad_segments(rng: &mut SplitMix64, random: usize) -> Vec<String> {
    let names = [
        "nosuch",
        // An empty segment matches a route's parameter.
        "",
        "APP",
        "App",
        "app ",
        " app",
        "app\0",
        "\0",
        "app/x",
        "../app",
        "..\\app",
        "../../etc/passwd",
        "%",
        "app%00",
        "\u{430}pp",
        "app\u{200b}",
        "\u{1f4a5}",
        "\u{202e}ppa",
        "\u{ff41}pp",
        "'; DROP TABLE groups; --",
        "${jndi:ldap://x}",
        // A terminal escape.
        "x\r\u{1b}[2J",
        "east",
        "west",
    ];
    let mut out: Vec<String> = names.iter().map(|n| encode(n)).collect();
    out.push(encode(&"a".repeat(10 * 1024)));
    // A log line of its own, should the name be logged.
    out.push(encode(&format!("x\n{FORGED} level=INFO msg=\"all is well\"")));
    // Raw: invalid UTF-8 once decoded (a JSON 400, not axum's plain-text one), or escapes that
    // are not escapes.
    out.extend(["%FF", "%FE%FF", "%C0%80", "%ED%A0%80", "app%FF", "%zz", "%0", "%2e%2e%2fapp"].map(String::from));
    for _ in 0..random {
        let len = 1 + rng.below(24) as usize;
        let pool: Vec<char> =
            "abcXYZ019-_.~ !\"#$&'()*+,/:;<=>?@[\\]^`{|}\u{7f}\u{e9}\u{4e2d}\u{1f600}".chars().collect();
        let name: String = (0..len).map(|_| pick(rng, &pool)).collect();
        out.push(encode(&name));
    }
    // Never a real name, and never `.` or `..` (a client normalizes those away).
    out.retain(|s| !["app", "east", "west", ".", ".."].contains(&String::from_utf8_lossy(&decode(s)).as_ref()));
    out
}

/// Member ids that are not ids: non-numeric or overflowing. None may parse as a u64 once
/// decoded (`+1` and `01` would: they would remove node 1).
fn bad_member_ids() -> Vec<String> {
    let ids = [
        "abc",
        "1a",
        "a1",
        "-1",
        "1.0",
        "1e3",
        "0x1",
        " 1",
        "1 ",
        "18446744073709551616",
        "99999999999999999999999999",
        "-0",
        "\u{661}",
        "\u{2460}",
        "\u{ff11}",
        "1\0",
        "1/2",
        "null",
        "true",
        "[1]",
    ];
    let mut out: Vec<String> = ids.iter().map(|n| encode(n)).collect();
    out.push(encode(&"9".repeat(10 * 1024)));
    out.extend(["%FF", "%00", "1%FF", "%zz"].map(String::from));
    for id in &out {
        let decoded = String::from_utf8_lossy(&decode(id)).into_owned();
        assert!(decoded.parse::<u64>().is_err(), "{id} would name a member");
    }
    out
}

/// A query string for `/v1/events` with at least one bad parameter.
fn bad_events_query(rng: &mut SplitMix64) -> String {
    const BAD_NUMBER: &[&str] = &[
        "abc",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "18446744073709551616",
        "",
        "%FF",
        "0x10",
        "true",
        "1%00",
        "%201",
        "1%20",
        "null",
        "%EF%BC%91",
        "[1]",
    ];
    const UNKNOWN: &[&str] = &["foo=1", "Since=1", "LIMIT=1", "since[]=1", "since%00=1", "%FF=1", "=1", "limit.x=1"];
    let mut parts: Vec<String> = Vec::new();
    for _ in 0..1 + rng.below(2) {
        parts.push(match rng.below(4) {
            0 => format!("since={}", pick(rng, BAD_NUMBER)),
            1 => format!("limit={}", pick(rng, BAD_NUMBER)),
            2 => pick(rng, UNKNOWN).to_string(),
            _ => pick(rng, &["since=1&since=2", "limit=1&limit=1", "since=0&since=0"]).to_string(),
        });
    }
    // A good parameter next to the bad ones changes nothing.
    if rng.below(2) == 0 {
        parts.push(pick(rng, &["since=0", "limit=10"]).to_string());
    }
    let at = rng.below(parts.len() as u64) as usize;
    parts.swap(0, at);
    parts.join("&")
}

/// Garbage `Authorization` headers: (what, value). None is a valid credential.
fn garbage_authorization(rng: &mut SplitMix64, n: u64) -> (String, HeaderValue) {
    let admin = creds().token("admin");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let text = |what: &str, v: String| (what.to_string(), HeaderValue::from_str(&v).unwrap());
    match n % 14 {
        0 => {
            let len = 1 + rng.below(64) as usize;
            let token: String = (0..len).map(|_| pick(rng, ALPHABET) as char).collect();
            text("random bearer token", format!("Bearer {token}"))
        }
        1 => {
            // The admin token with one character changed.
            let mut token = admin.as_bytes().to_vec();
            let at = 3 + rng.below(token.len() as u64 - 3) as usize;
            let old = token[at];
            token[at] = ALPHABET.iter().copied().filter(|c| *c != old).nth(rng.below(63) as usize).unwrap();
            text("admin token, one character changed", format!("Bearer {}", String::from_utf8(token).unwrap()))
        }
        2 => text("Basic x", "Basic x".into()),
        3 => text("Basic credentials", "Basic YWRtaW46YWRtaW4=".into()),
        4 => text("the admin token without a scheme", admin.to_string()),
        5 => text("Bearer and nothing", pick(rng, &["Bearer", "Bearer ", "Bearer    "]).to_string()),
        6 => text("8 KiB bearer token", format!("Bearer {}", "A".repeat(8 * 1024))),
        7 => {
            let len = 1 + rng.below(32) as usize;
            let mut v = b"Bearer ".to_vec();
            v.extend((0..len).map(|_| 0x80 + rng.below(0x80) as u8));
            ("non-UTF-8 bearer token".into(), HeaderValue::from_bytes(&v).unwrap())
        }
        8 => {
            let v = [format!("Bearer {admin}").as_bytes(), b"\xff"].concat();
            ("admin token then a non-UTF-8 byte".into(), HeaderValue::from_bytes(&v).unwrap())
        }
        9 => text("admin token less its last character", format!("Bearer {}", &admin[..admin.len() - 1])),
        10 => text("admin token and one more character", format!("Bearer {admin}x")),
        11 => text("Bearer: admin token", format!("Bearer: {admin}")),
        12 => text("Token admin token", format!("Token {admin}")),
        _ => {
            // What the config stores is not a credential.
            let hash = witness::config::auth::format_hash(&witness::config::auth::hash_token(admin));
            text("the admin token's hash", format!("Bearer {hash}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sending, and checking every answer.

enum Auth {
    Token(&'static str),
    /// One of these tokens, in turn (with the nodes), to stay within the rate limits.
    Rotate(&'static [&'static str]),
    Header(HeaderValue),
    Anonymous,
}

enum Expect {
    /// Any status in [`REFUSED`].
    Refused,
    Status(u16),
    /// Any of these.
    AnyOf(&'static [u16]),
}

struct Req {
    what: String,
    /// The route as the report groups problems: `POST /v1/groups/{group}/pause`.
    route: String,
    method: Method,
    /// Already encoded.
    path: String,
    auth: Auth,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    expect: Expect,
}

impl Req {
    fn new(what: impl Into<String>, method: Method, path: impl Into<String>, auth: Auth, expect: Expect) -> Req {
        let path: String = path.into();
        let route = format!("{method} {}", path.split('?').next().unwrap());
        Req { what: what.into(), route, method, path, auth, content_type: None, body: None, expect }
    }

    fn route(mut self, template: &str) -> Req {
        self.route = format!("{} {template}", self.method);
        self
    }

    fn json(mut self, body: &str) -> Req {
        self.content_type = Some("application/json");
        self.body = Some(body.as_bytes().to_vec());
        self
    }

    fn describe(&self) -> String {
        let body = self.body.as_deref().unwrap_or_default();
        let mut shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        if body.len() > 120 {
            shown += &format!("… ({} bytes)", body.len());
        }
        let path = if self.path.len() > 160 {
            format!("{}… ({} bytes)", &self.path[..160], self.path.len())
        } else {
            self.path.clone()
        };
        format!("{} {path} [{}] content-type {:?} body {shown:?}", self.method, self.what, self.content_type)
    }
}

struct Campaign<'a> {
    c: &'a Cluster,
    seed: u64,
    leader: usize,
    clients: BTreeMap<&'static str, reqwest::Client>,
    anonymous: reqwest::Client,
    /// The journal's last sequence number as last seen on the leader.
    last_seq: u64,
    started: Instant,
    sent: usize,
    statuses: BTreeMap<u16, usize>,
    /// axum's own answers (unmatched route, method not allowed): empty bodies.
    empty_bodies: BTreeMap<u16, usize>,
    rate_limited: usize,
    /// 502/503 answers by code: allowed, though none is expected with a healthy cluster.
    unavailable: BTreeMap<String, usize>,
    /// What went wrong, by kind and route: request and answer.
    problems: BTreeMap<(&'static str, String), Vec<String>>,
}

impl<'a> Campaign<'a> {
    async fn new(c: &'a Cluster, leader: u64, seed: u64) -> Campaign<'a> {
        let clients = ["admin", "operator", "viewer", "east", "west"].map(|t| (t, creds().client(Some(t))));
        let mut campaign = Campaign {
            c,
            seed,
            leader: leader as usize - 1,
            clients: clients.into_iter().collect(),
            anonymous: creds().client(None),
            last_seq: 0,
            started: Instant::now(),
            sent: 0,
            statuses: BTreeMap::new(),
            empty_bodies: BTreeMap::new(),
            rate_limited: 0,
            unavailable: BTreeMap::new(),
            problems: BTreeMap::new(),
        };
        campaign.last_seq = journal(c, leader, 0).await.1;
        campaign
    }

    fn problem(&mut self, kind: &'static str, req: &Req, detail: String) {
        let case = format!("{}\n        → {detail}", req.describe());
        self.problems.entry((kind, req.route.clone())).or_default().push(case);
    }

    /// Sends `req` to a node chosen round-robin, waits out rate limits, and checks the answer
    /// and that the journal did not grow.
    async fn send(&mut self, req: Req) {
        let node = self.sent % 3;
        let client = match &req.auth {
            Auth::Token(t) => Some(*t),
            Auth::Rotate(tokens) => Some(tokens[(self.sent / 3) % tokens.len()]),
            Auth::Header(_) | Auth::Anonymous => None,
        };
        let client = client.map_or(&self.anonymous, |t| &self.clients[t]).clone();
        self.sent += 1;
        let url = format!("https://{}{}", self.c.nodes[node].addr, req.path);
        let mut waits = 0;
        let resp = loop {
            let mut builder = client.request(req.method.clone(), &url).timeout(Duration::from_secs(5));
            if let Auth::Header(value) = &req.auth {
                builder = builder.header(AUTHORIZATION, value.clone());
            }
            if let Some(ct) = req.content_type {
                builder = builder.header(CONTENT_TYPE, ct);
            }
            if let Some(body) = &req.body {
                builder = builder.body(body.clone());
            }
            match builder.send().await {
                // Operator actions are rate-limited: wait and send the same request again.
                Ok(resp) if resp.status().as_u16() == 429 && waits < 30 => {
                    waits += 1;
                    self.rate_limited += 1;
                    let secs = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()?.parse().ok());
                    tokio::time::sleep(Duration::from_secs(secs.unwrap_or(1))).await;
                }
                Ok(resp) => break resp,
                Err(e) => {
                    self.problem(NO_ANSWER, &req, format!("node {}: {e:?}", node + 1));
                    self.check_alive().await;
                    return;
                }
            }
        };
        let status = resp.status().as_u16();
        *self.statuses.entry(status).or_default() += 1;
        let body = resp.bytes().await.unwrap_or_default();
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let code = json.as_ref().and_then(|j| j["code"].as_str()).unwrap_or("");
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let expected = match req.expect {
            Expect::Refused => REFUSED.contains(&status),
            Expect::Status(s) => status == s,
            Expect::AnyOf(statuses) => statuses.contains(&status),
        };
        if matches!(status, 502 | 503) && UNAVAILABLE.contains(&code) {
            // Allowed (the cluster may briefly have no leader), and counted in the report.
            *self.unavailable.entry(code.to_string()).or_default() += 1;
        } else if status >= 500 {
            self.problem(SERVER_ERROR, &req, format!("{status} {shown}"));
        } else if !expected {
            self.problem("unexpected status", &req, format!("{status} {shown}"));
        } else if body.is_empty() && matches!(status, 404 | 405) {
            *self.empty_bodies.entry(status).or_default() += 1;
        } else if !json.as_ref().is_some_and(|j| j["error"].is_string()) {
            self.problem("error body is not JSON with an `error` string", &req, format!("{status} {shown:?}"));
        }
        // A refused request must not write: any new journal event is pinned on this request.
        let (events, last_seq) = journal(self.c, self.leader as u64 + 1, self.last_seq).await;
        if !events.is_empty() {
            let events: Vec<String> =
                events.iter().map(|e| format!("{} by {} {:.200}", e["kind"], e["by"], e["message"])).collect();
            self.problem("STATE CHANGE: a refused request wrote to the journal", &req, format!("{status}: {events:?}"));
        }
        self.last_seq = last_seq;
    }

    /// Every node answers `/healthz`.
    async fn check_alive(&mut self) {
        for n in &self.c.nodes {
            let resp = self.c.http.get(n.url("/healthz")).timeout(Duration::from_secs(5)).send().await;
            match resp {
                Ok(r) if r.status() == 200 => {}
                other => {
                    let detail = format!("node {} /healthz: {other:?}", n.id);
                    self.problems.entry((DOWN, String::new())).or_default().push(detail);
                }
            }
        }
    }

    fn report(&self) -> String {
        let mut out = format!(
            "seed {:#x}: {} requests in {:.1?} (429s waited out: {}); statuses {:?}; axum's empty-bodied \
             answers {:?}; unavailable {:?}\n",
            self.seed,
            self.sent,
            self.started.elapsed(),
            self.rate_limited,
            self.statuses,
            self.empty_bodies,
            self.unavailable,
        );
        let mut last_kind = "";
        for ((kind, route), cases) in &self.problems {
            if *kind != last_kind {
                out += &format!("\n{kind}:\n");
                last_kind = kind;
            }
            out += &format!("  {route}: {} requests, e.g.\n", cases.len());
            for case in cases.iter().take(2) {
                out += &format!("    - {case}\n");
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The campaign, section by section.

/// Corrupted bodies for every body-taking endpoint, on real paths (group `app`, site `west`).
async fn bodies(k: &mut Campaign<'_>) {
    let mut rng = SplitMix64::new(k.seed ^ 1);
    for ep in BODIES {
        for n in 0..BODY_CASES {
            let how = CORRUPTIONS[n % CORRUPTIONS.len()];
            let (what, content_type, body) = corrupt(&mut rng, ep, how);
            let oversize = matches!(how, Corruption::Oversize);
            let expect = if oversize { Expect::Status(413) } else { Expect::Refused };
            let mut req = Req::new(format!("{how:?}: {what}"), Method::POST, ep.path, Auth::Rotate(ep.tokens), expect);
            req.content_type = content_type;
            req.body = Some(body);
            k.send(req).await;
        }
        k.check_alive().await;
    }
}

/// The group-bearing routes, each with a body that would be valid for group `app`, so that
/// the unknown group is the only thing wrong.
///
/// Every one must be refused before its command reaches the log: an unknown group once went
/// through Raft and left a `rejected` journal event (text of the sender's choosing).
const GROUP_ROUTES: &[(&str, Option<&str>)] = &[
    ("failover", Some(r#"{"to":"west","dry_run":true}"#)),
    ("failback", Some(r#"{"dry_run":true}"#)),
    ("pause", None),
    ("resume", None),
    ("ack", None),
    ("ack", Some(r#"{"epoch":1}"#)),
    ("plan/retry", None),
    ("plan/retry", Some(r#"{"epoch":1}"#)),
    ("plan/skip", None),
    ("plan/skip", Some(r#"{"epoch":1}"#)),
    ("plan/check", None),
];

/// Unknown groups, sites and members in paths.
async fn paths(k: &mut Campaign<'_>) {
    let mut rng = SplitMix64::new(k.seed ^ 2);
    let segments = bad_segments(&mut rng, 8);
    for seg in &segments {
        for (route, body) in GROUP_ROUTES {
            let path = format!("/v1/groups/{seg}/{route}");
            let with = if body.is_some() { "with a body" } else { "without a body" };
            let req = Req::new("unknown group", Method::POST, path, Auth::Rotate(OPERATORS), Expect::Refused);
            let mut req = req.route(&format!("/v1/groups/{{group}}/{route} {with}"));
            if let Some(body) = body {
                req = req.json(body);
            }
            k.send(req).await;
        }
        // The open health check, for an unknown group and for an unknown site of `app`.
        let active = [
            (format!("/v1/groups/{seg}/sites/east/active"), "/v1/groups/{group}/sites/east/active"),
            (format!("/v1/groups/app/sites/{seg}/active"), "/v1/groups/app/sites/{site}/active"),
        ];
        for (path, route) in active {
            let req = Req::new("unknown group or site", Method::GET, path, Auth::Anonymous, Expect::Refused);
            k.send(req.route(route)).await;
        }
        // A site's token covers its own site only: 403, or 404 (400) for what cannot be a site name.
        let path = format!("/v1/sites/{seg}/heartbeat");
        let expect = Expect::AnyOf(&[400, 403, 404]);
        let req = Req::new("heartbeat for another site", Method::POST, path, Auth::Token("west"), expect);
        k.send(req.json(r#"{"peer_reachable":true}"#).route("/v1/sites/{site}/heartbeat")).await;
    }
    k.check_alive().await;
    for id in bad_member_ids() {
        let req = Req::new(
            "not a member id",
            Method::DELETE,
            format!("/v1/members/{id}"),
            Auth::Token("admin"),
            Expect::Refused,
        );
        k.send(req.route("/v1/members/{id}")).await;
    }
    k.check_alive().await;
}

/// Bad query strings, and routes and methods that do not exist.
async fn queries_and_routes(k: &mut Campaign<'_>) {
    let mut rng = SplitMix64::new(k.seed ^ 3);
    for n in 0..90 {
        let query = bad_events_query(&mut rng);
        // The stream answers a valid query with a never-ending body: only a few, all refused.
        let path = if n % 9 == 0 { "/v1/events/stream" } else { "/v1/events" };
        let req = Req::new("bad query", Method::GET, format!("{path}?{query}"), Auth::Token("viewer"), Expect::Refused);
        k.send(req).await;
    }
    let routes: &[(Method, &str, u16)] = &[
        (Method::GET, "/v1/groups/app/pause", 405),
        (Method::PUT, "/v1/groups/app/resume", 405),
        (Method::DELETE, "/v1/groups/app/failover", 405),
        (Method::PUT, "/v1/automation", 405),
        (Method::PATCH, "/v1/members", 405),
        (Method::DELETE, "/v1/members", 405),
        (Method::POST, "/v1/members/3", 405),
        // (Authorization comes first: only the site's own token gets as far as the method.)
        (Method::GET, "/v1/sites/west/heartbeat", 405),
        (Method::POST, "/v1/status", 405),
        (Method::POST, "/healthz", 405),
        (Method::DELETE, "/v1/events", 405),
        // Near misses of real routes: any of these taken as `pause` would pause `app`.
        (Method::POST, "/v1/groups/app/pause/", 404),
        (Method::POST, "/v1/groups/app/pause/x", 404),
        (Method::POST, "//v1/groups/app/pause", 404),
        (Method::POST, "/v1//groups/app/pause", 404),
        (Method::POST, "/v1/groups/app/%70ause", 404),
        (Method::POST, "/v1/groups/app/PAUSE", 404),
        (Method::POST, "/V1/groups/app/pause", 404),
        (Method::POST, "/v1/groups/app%2Fpause", 404),
        (Method::POST, "/v1/groups/app/plan", 404),
        (Method::POST, "/v1/groups/app/plan/nope", 404),
        (Method::GET, "/v1/groups/app", 404),
        (Method::GET, "/v1/groups", 404),
        (Method::GET, "/v1", 404),
        (Method::GET, "/v1/status/", 404),
        (Method::DELETE, "/v1/members/", 404),
        (Method::GET, "/%00", 404),
        (Method::GET, "/v1/%FF", 404),
        (Method::GET, "/v1/groups/app/sites/east", 404),
        (Method::GET, "/raft/nope", 404),
    ];
    for (method, path, status) in routes {
        let token = if path.starts_with("/v1/sites/") { "west" } else { "admin" };
        let req = Req::new("no such route", method.clone(), *path, Auth::Token(token), Expect::Status(*status));
        k.send(req).await;
    }
    for n in 0..30 {
        let len = 1 + rng.below(40) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| 1 + rng.below(255) as u8).collect();
        let path = format!("/{}", encode(&String::from_utf8_lossy(&garbage)));
        let method = [Method::GET, Method::POST, Method::DELETE][n % 3].clone();
        let req = Req::new(format!("random path {n}"), method, path, Auth::Token("admin"), Expect::Status(404));
        k.send(req.route("/{random}")).await;
    }
    k.check_alive().await;
}

/// The write routes, each with a body that would be valid: credentials are the only thing
/// wrong.
const WRITES: &[(Method, &str, Option<&str>, &str)] = &[
    (Method::POST, "/v1/groups/app/pause", None, "operator"),
    (Method::POST, "/v1/groups/app/resume", None, "operator"),
    (Method::POST, "/v1/groups/app/failover", Some(r#"{"to":"west","force":true,"reason":"hostile"}"#), "operator"),
    (Method::POST, "/v1/groups/app/failback", Some(r#"{"force":true}"#), "operator"),
    (Method::POST, "/v1/groups/app/ack", None, "operator"),
    (Method::POST, "/v1/groups/app/plan/retry", None, "operator"),
    (Method::POST, "/v1/groups/app/plan/skip", None, "operator"),
    (Method::POST, "/v1/groups/app/plan/check", None, "operator"),
    (Method::POST, "/v1/automation", Some(r#"{"enabled":false}"#), "operator"),
    (Method::POST, "/v1/members", Some(r#"{"id":7,"addr":"127.0.0.1:1"}"#), "admin"),
    (Method::DELETE, "/v1/members/3", None, "admin"),
    (Method::POST, "/v1/sites/west/heartbeat", Some(r#"{"peer_reachable":true}"#), "site:west"),
];

/// Garbage credentials (401) and credentials without the role (403) on every write route,
/// and on the node-to-node routes, which need a node's certificate.
async fn credentials(k: &mut Campaign<'_>) {
    let mut rng = SplitMix64::new(k.seed ^ 4);
    let with_body = |req: Req, body: &Option<&str>| match body {
        Some(b) => req.json(b),
        None => req,
    };
    for n in 0..84 {
        let (method, path, body, _) = &WRITES[n as usize % WRITES.len()];
        let (what, value) = garbage_authorization(&mut rng, n);
        let req = Req::new(what, method.clone(), *path, Auth::Header(value), Expect::Status(401));
        k.send(with_body(req, body)).await;
    }
    for (method, path, body, needs) in WRITES {
        let req = Req::new("no credentials", method.clone(), *path, Auth::Anonymous, Expect::Status(401));
        k.send(with_body(req, body)).await;
        // Every token whose role does not cover the route's.
        let lacking: &[&'static str] = match *needs {
            "operator" => &["viewer", "east", "west"],
            "admin" => &["viewer", "operator", "east", "west"],
            _ => &["viewer", "operator", "admin", "east"],
        };
        for token in lacking {
            let req = Req::new(
                format!("token {token} lacks {needs}"),
                method.clone(),
                *path,
                Auth::Token(token),
                Expect::Status(403),
            );
            k.send(with_body(req, body)).await;
        }
    }
    // Without any credentials, a site name that is not one (were it logged as it is, it would
    // forge a log line): refused as no site's name, as no path at all, or for the missing credentials.
    let site = encode(&format!("x\n{FORGED} anonymous"));
    let req = Req::new(
        "no credentials",
        Method::POST,
        format!("/v1/sites/{site}/heartbeat"),
        Auth::Anonymous,
        Expect::AnyOf(&[400, 401, 404]),
    );
    k.send(req.json(r#"{"peer_reachable":true}"#).route("/v1/sites/{site}/heartbeat")).await;
    // A forged forwarded request, and Raft RPCs, from clients without a node's certificate.
    let forged = r#"{"request":{"Write":{"SetPaused":{"group":"app","paused":true}}},"by":"token:nobody"}"#;
    let peer_routes: &[(Method, &str)] = &[
        (Method::POST, "/raft/leader"),
        (Method::POST, "/raft/append"),
        (Method::POST, "/raft/vote"),
        (Method::POST, "/raft/pre-vote"),
        (Method::POST, "/raft/snapshot"),
        (Method::POST, "/raft/transfer-leader"),
        (Method::GET, "/raft/bootstrap"),
    ];
    for (method, path) in peer_routes {
        for auth in [Auth::Token("admin"), Auth::Token("viewer"), Auth::Token("west"), Auth::Anonymous] {
            let req = Req::new("not a node", method.clone(), *path, auth, Expect::Status(403));
            let req = if *method == Method::POST { req.json(forged) } else { req };
            k.send(req).await;
        }
    }
    k.check_alive().await;
}

/// Node `id`'s journal events after `since`, and its last sequence number.
async fn journal(c: &Cluster, id: u64, since: u64) -> (Vec<Value>, u64) {
    let url = c.nodes[id as usize - 1].url(&format!("/v1/events?since={since}"));
    let page: Value = c.http.get(url).send().await.expect("events").json().await.expect("events JSON");
    (page["events"].as_array().cloned().unwrap_or_default(), page["last_seq"].as_u64().expect("last_seq"))
}

/// The projection of the leader's status that refused requests must not change.
async fn state(c: &Cluster, leader: u64) -> Value {
    let s = c.status(leader).await.expect("leader status");
    let groups: Vec<Value> = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let keep = ["name", "active", "epoch", "paused", "blocked", "draining", "plan"];
            keep.iter().map(|k| (k.to_string(), g[*k].clone())).collect::<serde_json::Map<_, _>>().into()
        })
        .collect();
    let members: Vec<Value> =
        s["members"].as_array().unwrap().iter().map(|m| serde_json::json!([m["id"], m["addr"], m["voter"]])).collect();
    serde_json::json!({ "groups": groups, "members": members })
}

/// Three voters, both sites seen down by all, and a journal that has stopped growing.
async fn quiet_cluster() -> (Cluster, u64) {
    let mut c = Cluster::new(3, 0);
    let leader = c.start_voters(3).await;
    eventually(Duration::from_secs(15), "every node sees both sites down", || async {
        c.all_see("east", "down", &[1, 2, 3]).await?;
        c.all_see("west", "down", &[1, 2, 3]).await
    })
    .await;
    let last_seq = || async {
        let url = c.nodes[leader as usize - 1].url("/v1/events?since=0");
        let page: Value = c.http.get(url).send().await.ok()?.json().await.ok()?;
        page["last_seq"].as_u64()
    };
    eventually(Duration::from_secs(10), "a quiet journal", || async {
        let before = last_seq().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        (last_seq().await? == before).then_some(())
    })
    .await;
    (c, leader)
}

/// The nodes' log lines that `matches`.
fn log_lines(c: &Cluster, matches: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        found.extend(log.lines().filter(|l| matches(l)).map(|l| format!("node {}: {l:?}", n.id)));
    }
    found
}

fn panics_in_logs(c: &Cluster) -> Vec<String> {
    log_lines(c, |l| l.contains("panicked") || l.contains("overflowed its stack"))
}

/// Runs every section, the seed's own way.
async fn campaign(c: &Cluster, leader: u64, seed: u64) -> Campaign<'_> {
    let mut k = Campaign::new(c, leader, seed).await;
    bodies(&mut k).await;
    paths(&mut k).await;
    queries_and_routes(&mut k).await;
    credentials(&mut k).await;
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_changes_nothing() {
    let (c, leader) = quiet_cluster().await;
    let before = state(&c, leader).await;
    let (_, seq_before) = journal(&c, leader, 0).await;

    let k = campaign(&c, leader, SEEDS[0]).await;

    // Anything a request set off would have shown by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = state(&c, leader).await;
    let (_, seq_after) = journal(&c, leader, 0).await;
    eprintln!("{}", k.report());

    // Every property is checked before any fails, so that one run shows them all.
    let mut failures = Vec::new();
    let panics = panics_in_logs(&c);
    if !panics.is_empty() {
        failures.push(format!("panics in the nodes' logs:\n{}", panics.join("\n")));
    }
    if !k.problems.is_empty() {
        failures.push("hostile input was not simply refused: see the report above".to_string());
    }
    let forged = log_lines(&c, |l| l.starts_with(FORGED));
    if !forged.is_empty() {
        failures.push(format!("requests wrote log lines of their own:\n{}", forged.join("\n")));
    }
    if before != after {
        failures.push(format!("the groups or members changed:\n  before {before}\n  after  {after}"));
    }
    if seq_before != seq_after {
        failures.push(format!("the journal grew: last_seq {seq_before} before, {seq_after} after"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// After a campaign (with another seed) the cluster still does what it is asked, and the
/// journal says who asked: a pause sent through a follower and a resume sent to the leader,
/// both as `operator`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hostile_input_the_cluster_still_works_and_audits_who_acted() {
    let (c, leader) = quiet_cluster().await;
    let k = campaign(&c, leader, SEEDS[1]).await;
    let report = k.report();
    eprintln!("{report}");
    let panics = panics_in_logs(&c);
    assert!(panics.is_empty(), "panics in the nodes' logs (report above):\n{}", panics.join("\n"));
    // Wrong answers are the first test's business; here only whether every node lived.
    let failed: Vec<_> = k.problems.keys().filter(|(kind, _)| [NO_ANSWER, SERVER_ERROR, DOWN].contains(kind)).collect();
    assert!(failed.is_empty(), "nodes failed under hostile input (report above): {failed:?}");

    let operator = creds().client(Some("operator"));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for (action, via, paused) in [("pause", follower, true), ("resume", leader, false)] {
        let (_, since) = journal(&c, leader, 0).await;
        let url = c.nodes[via as usize - 1].url(&format!("/v1/groups/app/{action}"));
        // The campaign may have spent the operator's rate limit: wait it out.
        let resp = eventually(Duration::from_secs(15), "the operator's rate limit", || async {
            let resp = operator.post(&url).send().await.expect(action);
            (resp.status().as_u16() != 429).then_some(resp)
        })
        .await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!((status, &body["paused"]), (200, &Value::Bool(paused)), "{action} via node {via}: {body}");
        let (events, _) = journal(&c, leader, since).await;
        assert_eq!(events.len(), 1, "{action}: one journal event: {events:?}");
        let event = &events[0];
        assert_eq!(
            (event["kind"].as_str(), event["group"].as_str(), event["by"].as_str()),
            (Some("group_updated"), Some("app"), Some("token:operator")),
            "{action}: who acted is on record: {event}"
        );
        let g = state(&c, leader).await["groups"][0].clone();
        assert_eq!((&g["name"], &g["paused"]), (&Value::from("app"), &Value::Bool(paused)), "{g}");
    }
}
