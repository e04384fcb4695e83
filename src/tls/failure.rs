//! Why a connection failed, in words that name what to fix: a TLS handshake refused for a
//! certificate (a name it does not cover, a CA not trusted, expired, or this side's own
//! certificate refused) is told apart from a network failure (refused, timed out), which
//! `reqwest` reports alike as "error sending request".

use std::error::Error;

/// What went wrong on the way to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TLS handshake failed: a certificate problem that retrying will not fix.
    Tls(String),
    /// The network: refused, unreachable, timed out, reset.
    Network(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            Failure::Network(why) => f.write_str(why),
        }
    }
}

/// Classifies `err` by what it wraps.
pub fn classify(err: &(dyn Error + 'static)) -> Failure {
    if let Some(why) = tls_cause(err) {
        return Failure::Tls(why);
    }
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let what = match io.kind() {
                K::ConnectionRefused => "connection refused (nothing listens there: is it running, is the port right?)",
                K::TimedOut => "timed out (a firewall, or the host is down)",
                K::ConnectionReset | K::ConnectionAborted => "the connection was reset",
                K::HostUnreachable | K::NetworkUnreachable => "no route to the host",
                _ => break,
            };
            return Failure::Network(what.into());
        }
        if let Some(e) = e.downcast_ref::<reqwest::Error>().filter(|e| e.is_timeout()) {
            return Failure::Network(format!("timed out ({e})"));
        }
        next = e.source();
    }
    Failure::Network(causes(err))
}

/// An error and its sources on one line, outermost first, each said once (`reqwest` and the
/// AWS SDK put the cause below their own words).
pub fn causes(err: &(dyn Error + 'static)) -> String {
    let mut words = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let part = e.to_string();
        if !words.contains(&part) {
            words = format!("{words}: {part}");
        }
        next = e.source();
    }
    words
}

/// The TLS error `err` wraps, described; `None` when it wraps none.
fn tls_cause(err: &(dyn Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(tls, "the peer's certificate"));
        }
        // An `io::Error`'s `source` skips the error it carries: look inside.
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(why) = tls_cause(inner) {
                return Some(why);
            }
        }
        next = e.source();
    }
    None
}

/// A name rustls presents as `DnsName("site-west")` or `IpAddress(127.0.0.1)`, as the name.
fn plain_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, inner)| inner.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

/// `err` in words naming what to fix; `whose` is the certificate checked ("the peer's
/// certificate" on a connection, "the certificate" where a config's own is checked).
pub fn describe(err: &rustls::Error, whose: &str) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match err {
        E::InvalidCertificate(C::NotValidForName) => format!(
            "{whose} does not cover the name or address dialled: issue it with that name \
             (`witness gen-certs --add ... --hosts`), or dial a name it covers"
        ),
        E::InvalidCertificate(C::NotValidForNameContext { expected, presented }) => format!(
            "{whose} is not valid for {:?} (it covers {}): issue it with that name \
             (`witness gen-certs --add ... --hosts`), or dial a name it covers",
            expected.to_str(),
            presented.iter().map(|p| plain_name(p)).collect::<Vec<_>>().join(", ")
        ),
        // Every CA `witness gen-certs` makes has the same name: another one's certificate fails
        // its signature check rather than the issuer lookup.
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "{whose} is not signed by the CA this side trusts (check the CA file: `--ca`, `WITNESS_CA`, \
             `transport.ca`, the agent's `ca`)"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!("{whose} has expired"),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("{whose} is not valid yet (is a clock wrong?)")
        }
        E::InvalidCertificate(other) => format!("{whose} was refused: {other}"),
        // A peer that cannot verify this side's certificate may say so as a decrypt error.
        E::AlertReceived(
            A::BadCertificate | A::UnknownCA | A::CertificateRequired | A::CertificateUnknown | A::DecryptError,
        ) => "the peer refused this side's certificate (none sent, not signed by the CA it trusts, or a key that \
              does not match it)"
            .into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_problem_is_named_even_inside_an_io_error() {
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("127.0.0.53").unwrap().to_owned(),
            presented: vec!["DnsName(\"site-west\")".into(), "IpAddress(127.0.0.1)".into()],
        });
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, name);
        let Failure::Tls(why) = classify(&wrapped) else { panic!() };
        assert!(why.contains("\"127.0.0.53\" (it covers site-west, 127.0.0.1)"), "{why}");
        let ca = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(classify(&ca), Failure::Tls(why) if why.contains("not signed by the CA")));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(matches!(classify(&refused), Failure::Network(why) if why.starts_with("connection refused")));
    }
}
