//! `witness agent check --config FILE`: what would keep an agent from holding its site's
//! leases, found before it runs. Its TLS files as the agent loads them (readable, the key the
//! certificate's, signed by its CA, naming `site-NAME`, covering `agent.listen` when that is
//! one address); the other site's agent answering a peer-lease request over the link the
//! agent uses, with another site's certificate; every witness node answering over TLS and
//! taking the agent for its site (`GET /v1/whoami`), so heartbeats will be accepted.
//!
//! It changes nothing: the peer-lease request asks for no lease (the other agent counts it as
//! contact, which it is), and `whoami` is a read.

use std::time::Duration;

use super::Clients;
use crate::config::agent::AgentConfig;
use crate::config::TlsFiles;
use crate::protocol::{PeerGrant, PeerRequest};
use crate::tls::{failure, CertIdentity};

/// One thing checked: what, and what is wrong with it (`None`: nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub problem: Option<String>,
}

impl Finding {
    fn new(what: impl Into<String>, problem: Option<String>) -> Finding {
        Finding { what: what.into(), problem }
    }
}

/// How long each request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn check(config: &AgentConfig) -> Vec<Finding> {
    crate::tls::init();
    let mut findings = files(config);
    let clients = match Clients::load(&config.credentials) {
        Ok((clients, _)) => clients,
        // The files' findings already say why.
        Err(_) => return findings,
    };
    findings.push(peer(config, &clients).await);
    for node in &config.witness {
        findings.push(witness(config, &clients, node).await);
    }
    findings
}

fn files(config: &AgentConfig) -> Vec<Finding> {
    let creds = &config.credentials;
    let mut findings = Vec::new();
    if let (Some(ca), Some((cert, key))) = (&creds.ca, &creds.cert_and_key) {
        let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() };
        let listen = config.listen.to_string();
        let dialled = (!config.listen.ip().is_unspecified()).then_some(("agent.listen", listen.as_str()));
        let me = CertIdentity::Site(config.site.clone());
        let problems = crate::tls::audit(&files, "agent", &me, dialled);
        let what = format!("site certificate {} (site-{})", cert.display(), config.site);
        findings.push(Finding::new(what, (!problems.is_empty()).then(|| problems.join("; "))));
    }
    if let Some(path) = &creds.token_file {
        let problem = match std::fs::read_to_string(path) {
            Ok(t) if t.trim().is_empty() => Some("agent.token_file: the file is empty".to_string()),
            Ok(_) => None,
            Err(e) => Some(format!("agent.token_file: cannot read it: {e}")),
        };
        findings.push(Finding::new(format!("token file {}", path.display()), problem));
    }
    findings
}

async fn peer(config: &AgentConfig, clients: &Clients) -> Finding {
    let tls = config.credentials.cert_and_key.is_some();
    let scheme = if tls { "https" } else { "http" };
    let what = format!("peer-lease link to {scheme}://{} (agent.peer)", config.peer);
    let request = PeerRequest { site: config.site.as_str().into(), groups: Default::default() };
    let url = format!("{scheme}://{}/v1/peer/lease", config.peer);
    let sent = clients.peer.post(url).json(&request).timeout(TIMEOUT).send().await;
    let problem = match sent {
        Err(e) => Some(failure::classify(&e).to_string()),
        Ok(resp) if !resp.status().is_success() => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Some(format!("the peer refused the request, HTTP {status}: {}", body.trim()))
        }
        Ok(resp) => match super::peer_identity_problem(tls, &config.site, &resp) {
            Some(problem) => Some(problem),
            None => match resp.json::<PeerGrant>().await {
                Ok(grant) if grant.site.as_str() == config.site => {
                    Some(format!("agent.peer leads back to site {}'s own agent", config.site))
                }
                Ok(_) => None,
                Err(e) => Some(format!("the answer is not a peer grant: {e}")),
            },
        },
    };
    Finding::new(what, problem)
}

async fn witness(config: &AgentConfig, clients: &Clients, node: &str) -> Finding {
    let scheme = if config.plain_http { "http" } else { "https" };
    let what = format!("witness node {scheme}://{node} (agent.witness)");
    let url = format!("{scheme}://{node}/v1/whoami");
    let problem = match clients.witness.get(url).timeout(TIMEOUT).send().await {
        Err(e) => Some(failure::classify(&e).to_string()),
        Ok(resp) if !resp.status().is_success() => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Some(format!("refused, HTTP {status}: {}", body.trim()))
        }
        Ok(resp) => match resp.json::<serde_json::Value>().await {
            Err(e) => Some(format!("the answer to /v1/whoami is not JSON: {e}")),
            Ok(who) => {
                let expected = format!("site:{}", config.site);
                let role = who["role"].as_str();
                let has = role.map_or("no role".to_string(), |r| format!("role {r}"));
                (role != Some(expected.as_str())).then(|| {
                    format!(
                        "it takes this agent for {} with {has}, not role {expected}: it would refuse its heartbeats \
                         (a site-{} certificate, or a token with role {expected}, is what it accepts)",
                        who["caller"].as_str().unwrap_or("?"),
                        config.site
                    )
                })
            }
        },
    };
    Finding::new(what, problem)
}
