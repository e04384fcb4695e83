//! This node's credentials: the tokens it accepts (the config's, plus the development
//! cluster's generated operator token) and its TLS material (generated first for a
//! development cluster). Both are loaded again on reload (SIGHUP) without a restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

use crate::config::auth::{hash_token, new_token, Auth, Role, TokenSpec};
use crate::config::Config;
use crate::tls::{certs, Material};

/// The name the development cluster's generated token acts under in the journal.
pub const DEV_TOKEN_NAME: &str = "dev-operator";

pub fn load(config: &Config) -> anyhow::Result<(Auth, Option<Material>)> {
    let mut auth = config.auth.clone();
    if let Some(dev) = &config.dev {
        if let Some(dir) = &dev.tls_dir {
            dev_certificates(config, dir)?;
        }
        if let Some(path) = &dev.operator_token {
            let token = read_or_create_token(path)?;
            // Admin rather than operator: the development cluster's only credential, so that
            // membership can be tried too.
            auth.tokens.push(TokenSpec { name: DEV_TOKEN_NAME.into(), role: Role::Admin, hash: hash_token(&token) });
        }
    }
    let tls = config.transport.tls.as_ref().map(|files| Material::load(files, "transport")).transpose()?;
    // What `config check` refuses, said at start and on reload too: a certificate that does not
    // name this node, or does not cover the address others dial, leaves a node that runs, and
    // even leads, but that peers and agents cannot reach.
    for problem in audit(config) {
        tracing::warn!("{problem}");
    }
    Ok((auth, tls))
}

/// What is wrong with this node's `[transport]` TLS files (`tls::audit`), for a certificate
/// naming `node-<id>` and covering `node.advertise`. Empty without TLS.
pub fn audit(config: &Config) -> Vec<String> {
    let Some(files) = &config.transport.tls else { return Vec::new() };
    let me = crate::tls::CertIdentity::Node(config.node.id.0);
    crate::tls::audit(files, "transport", &me, Some(("node.advertise", &config.node.advertise)))
}

/// A CA with certificates for every initial member and site, made once by whichever node of
/// the development cluster starts first; a node added later issues its own from that CA.
fn dev_certificates(config: &Config, dir: &Path) -> anyhow::Result<()> {
    let mut nodes: Vec<u64> = config.cluster.initial_members.keys().map(|id| id.0).collect();
    if !nodes.contains(&config.node.id.0) {
        nodes.push(config.node.id.0);
    }
    let sites: Vec<String> = config.sites.iter().map(|s| s.name.clone()).collect();
    // Every node's certificate names every member's host, so peers reach each other by the
    // addresses the config gives (a container's service name, say).
    let mut hosts: Vec<String> = config
        .cluster
        .initial_members
        .values()
        .filter_map(|addr| Some(addr.rsplit_once(':')?.0.trim_start_matches('[').trim_end_matches(']').to_string()))
        .filter(|h| !["localhost", "127.0.0.1", "::1"].contains(&h.as_str()))
        .collect();
    hosts.sort();
    hosts.dedup();
    if certs::generate_once(dir, &nodes, &sites, &hosts)? {
        tracing::warn!(dir = %dir.display(), "development: generated a CA and node and site certificates");
    }
    let mine = format!("node-{}", config.node.id);
    if !dir.join(format!("{mine}.crt")).exists() {
        certs::issue(dir, &mine, &hosts).with_context(|| format!("development: cannot issue {mine}'s certificate"))?;
    }
    Ok(())
}

/// The token in `path`, made there (mode 0600) when the file does not exist. Nodes starting
/// together race here: the file appears whole through a hard link, so each either creates it
/// or reads the winner's.
fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    if !path.exists() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        writeln!(file, "{}", new_token()).and_then(|()| file.sync_all())?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => tracing::warn!(file = %path.display(), "development: wrote an operator token (role admin)"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("dev.operator_token: cannot read {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "dev.operator_token: {} is empty", path.display());
    Ok(token.to_string())
}
