//! Who may do what: roles, API tokens (kept in config only as SHA-256 hashes), the switches
//! for anonymous read access and open metrics, and the raw `[auth]` / `[[token]]` tables.
//!
//! Tokens are 256 random bits, so a plain SHA-256 is the right hash: a slow password hash
//! protects guessable secrets, and nobody guesses 2^256.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use super::Errors;

/// What a credential allows. `admin` includes `operator`, which includes `viewer`; a site's
/// role only sends that site's heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Site(String),
}

impl Role {
    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => match text.strip_prefix("site:") {
                Some(site) if !site.is_empty() => Ok(Role::Site(site.to_string())),
                _ => Err(format!("invalid role {text:?}: use \"viewer\", \"operator\", \"admin\" or \"site:NAME\"")),
            },
        }
    }

    /// Whether this role covers `needed` (never true for a site role and a human one, or for
    /// two different sites).
    pub fn covers(&self, needed: &Role) -> bool {
        let rank = |r: &Role| match r {
            Role::Viewer => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
            Role::Site(_) => None,
        };
        match (rank(self), rank(needed)) {
            (Some(have), Some(need)) => have >= need,
            _ => self == needed,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Viewer => f.write_str("viewer"),
            Role::Operator => f.write_str("operator"),
            Role::Admin => f.write_str("admin"),
            Role::Site(site) => write!(f, "site:{site}"),
        }
    }
}

/// The validated `[auth]` section and `[[token]]` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// Requests without credentials are served as `viewer` (status, events, dashboard).
    pub anonymous_viewer: bool,
    /// `/metrics` needs no credentials.
    pub open_metrics: bool,
    /// Heartbeats each site credential may send per second (twice that in a burst). An agent
    /// sends 4/s by default and five times as many while draining.
    pub heartbeat_rate: u32,
    /// Operator and admin actions each credential may take per second (six times that in a
    /// burst: pausing every group before maintenance, say).
    pub operator_rate: u32,
    pub tokens: Vec<TokenSpec>,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            anonymous_viewer: false,
            open_metrics: false,
            heartbeat_rate: 200,
            operator_rate: 10,
            tokens: Vec::new(),
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct TokenSpec {
    /// Recorded in the journal for every action taken with the token.
    pub name: String,
    pub role: Role,
    pub hash: [u8; 32],
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSpec").field("name", &self.name).field("role", &self.role).finish_non_exhaustive()
    }
}

const HASH_PREFIX: &str = "sha256:";

pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The form a hash takes in config: `sha256:` and 64 lowercase hex digits.
pub fn format_hash(hash: &[u8; 32]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HASH_PREFIX}{hex}")
}

pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hint = "expected \"sha256:\" and 64 hex digits, as `witness token hash` prints";
    let hex = text.strip_prefix(HASH_PREFIX).ok_or_else(|| format!("invalid token hash: {hint}"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid token hash: {hint}"));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// A new random token: `wt_` and 43 URL-safe base64 characters (256 bits).
pub fn new_token() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system's random source works");
    format!("wt_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Deserialize, Default)]
pub(super) struct RawAuth {
    anonymous: Option<String>,
    metrics: Option<String>,
    heartbeat_rate: Option<u32>,
    operator_rate: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct RawToken {
    name: Option<String>,
    role: Option<String>,
    hash: Option<String>,
}

impl RawAuth {
    pub(super) fn validate(self, tokens: Vec<RawToken>, sites: &BTreeSet<String>, e: &mut Errors) -> Auth {
        let anonymous_viewer = match self.anonymous.as_deref() {
            None | Some("none") => false,
            Some("viewer") => true,
            Some(other) => {
                e.add(
                    "auth.anonymous",
                    format!(
                        "invalid value {other:?}: only \"viewer\" (read-only) or \"none\" may be given to requests \
                         without credentials"
                    ),
                );
                false
            }
        };
        let open_metrics = match self.metrics.as_deref() {
            None | Some("viewer") => false,
            Some("open") => true,
            Some(other) => {
                e.add("auth.metrics", format!("invalid value {other:?}: use \"open\" or \"viewer\""));
                false
            }
        };
        let mut names = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        let mut specs = Vec::new();
        for (i, raw) in tokens.into_iter().enumerate() {
            let at = |field: &str| format!("token[{i}].{field}");
            let name = e.name(&at("name"), raw.name.as_deref());
            if !name.is_empty() && !names.insert(name.clone()) {
                e.add(at("name"), format!("duplicate token name {name:?}"));
            }
            let role =
                match e.required(&at("role"), raw.role, "give \"viewer\", \"operator\", \"admin\" or \"site:NAME\"") {
                    None => Role::Viewer,
                    Some(text) => match Role::parse(&text) {
                        Ok(Role::Site(site)) if !sites.contains(&site) => {
                            e.add(at("role"), format!("unknown site {site:?} (configured: {sites:?})"));
                            Role::Site(site)
                        }
                        Ok(role) => role,
                        Err(msg) => {
                            e.add(at("role"), msg);
                            Role::Viewer
                        }
                    },
                };
            let hash = match e.required(&at("hash"), raw.hash, "give the token's hash from `witness token hash`") {
                None => [0; 32],
                Some(text) => parse_hash(&text).unwrap_or_else(|msg| {
                    e.add(at("hash"), msg);
                    [0; 32]
                }),
            };
            if hash != [0; 32] && !hashes.insert(hash) {
                e.add(at("hash"), "the same token is listed twice: the journal could not tell who acted");
            }
            specs.push(TokenSpec { name, role, hash });
        }
        let heartbeat_rate = self.heartbeat_rate.unwrap_or(Auth::default().heartbeat_rate);
        if heartbeat_rate == 0 {
            e.add("auth.heartbeat_rate", "must be at least 1 (heartbeats per second per site credential)");
        }
        let operator_rate = self.operator_rate.unwrap_or(Auth::default().operator_rate);
        if operator_rate == 0 {
            e.add("auth.operator_rate", "must be at least 1 (operator actions per second per credential)");
        }
        Auth { anonymous_viewer, open_metrics, heartbeat_rate, operator_rate, tokens: specs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_cover_what_they_should() {
        let site = |s: &str| Role::Site(s.into());
        let all = [Role::Viewer, Role::Operator, Role::Admin, site("east"), site("west")];
        let expected = |have: &Role, need: &Role| match (have, need) {
            (Role::Site(a), Role::Site(b)) => a == b,
            (Role::Site(_), _) | (_, Role::Site(_)) => false,
            (Role::Admin, _) => true,
            (Role::Operator, n) => *n != Role::Admin,
            (Role::Viewer, n) => *n == Role::Viewer,
        };
        for have in &all {
            for need in &all {
                assert_eq!(have.covers(need), expected(have, need), "{have} covers {need}");
            }
        }
        for text in ["viewer", "operator", "admin", "site:east"] {
            assert_eq!(Role::parse(text).unwrap().to_string(), text);
        }
        for bad in ["", "site:", "root", "Viewer"] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_round_trip_and_refuse_bad_text() {
        let token = new_token();
        assert!(token.starts_with("wt_") && token.len() == 46, "{token}");
        assert_ne!(token, new_token());
        let hash = hash_token(&token);
        assert_eq!(parse_hash(&format_hash(&hash)).unwrap(), hash);
        // The SHA-256 of "abc" (FIPS 180-2 test vector).
        assert_eq!(
            format_hash(&hash_token("abc")),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        for bad in
            ["", "sha256:", "md5:00", &format!("sha256:{}", "g".repeat(64)), &format!("sha256:{}", "a".repeat(63))]
        {
            assert!(parse_hash(bad).is_err(), "{bad:?}");
        }
    }
}
