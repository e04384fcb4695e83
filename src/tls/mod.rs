//! TLS for the API and between nodes: the process's one rustls crypto provider (ring: pure
//! Rust and assembly, no C toolchain beyond what `cc` needs, no cmake), through which every
//! TLS user in the binary goes; this node's certificate, key and cluster CA loaded into
//! server and client configurations that can be swapped at run time (SIGHUP); the identity a
//! verified client certificate carries; certificates made for humans (`certs`); expiry dates
//! read from certificates (`expiry`); why a connection failed, a certificate told apart from
//! the network (`failure`).

pub mod certs;
pub mod expiry;
pub mod failure;

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsFiles;

/// Installs the provider; safe to call any number of times from any thread.
pub fn init() {
    // Err only means a provider is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One loaded set of files: a node's, or a site agent's.
pub struct Material {
    /// For the listener: this node's (site's) certificate; client certificates are asked for
    /// and, when presented, must chain to the cluster CA (API clients with tokens present none).
    pub server: Arc<ServerConfig>,
    /// For requests to peers: trusts only the cluster CA and presents this node's (site's)
    /// certificate.
    pub client: ClientConfig,
    /// Unix seconds at which this node's (site's) certificate and the CA stop being valid.
    pub node_expires: i64,
    pub ca_expires: i64,
}

impl Material {
    /// `section` names the config section the files came from in errors (`transport`, `agent`).
    pub fn load(files: &TlsFiles, section: &str) -> anyhow::Result<Material> {
        init();
        let chain = cert_file(files, section)?;
        let key = key_file(files, section)?;
        let roots = Arc::new(ca_file(files, section)?);
        let verifier = WebPkiClientVerifier::builder(roots.clone())
            .allow_unauthenticated()
            .build()
            .with_context(|| format!("{section}.ca: {} cannot verify client certificates", files.ca.display()))?;
        let mut server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .with_context(|| {
                format!(
                    "{section}.cert/key: {} and {} do not make a usable pair",
                    files.cert.display(),
                    files.key.display()
                )
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain.clone(), key)
            .with_context(|| format!("{section}.cert/key: cannot be used as a client certificate"))?;
        let node_expires = expiry::not_after_unix(&chain[0]).map_err(|e| anyhow::anyhow!("{section}.cert: {e}"))?;
        let ca_expires = expiry::not_after_pem_file(&files.ca).map_err(|e| anyhow::anyhow!("{section}.ca: {e}"))?;
        Ok(Material { server: Arc::new(server), client, node_expires, ca_expires })
    }
}

/// The current material, replaced whole on reload: connections already open keep theirs.
pub struct Reloadable {
    current: RwLock<Arc<Material>>,
}

impl Reloadable {
    pub fn new(material: Material) -> Reloadable {
        Reloadable { current: RwLock::new(Arc::new(material)) }
    }

    pub fn current(&self) -> Arc<Material> {
        self.current.read().expect("TLS lock poisoned").clone()
    }

    pub fn replace(&self, material: Material) {
        *self.current.write().expect("TLS lock poisoned") = Arc::new(material);
    }
}

/// A client configuration trusting only the CA in `ca` (PEM), presenting no certificate, or
/// the one in `cert_and_key`: for the CLI and site agents.
pub fn client_config(ca: &Path, cert_and_key: Option<(&Path, &Path)>) -> anyhow::Result<ClientConfig> {
    init();
    let builder = ClientConfig::builder().with_root_certificates(roots(ca)?);
    let mut config = match cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("the certificate and key do not make a usable pair")?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The files of a `section`, each read on its own, its errors naming its field and file.
fn cert_file(files: &TlsFiles, section: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    read_certs(&files.cert).with_context(|| format!("{section}.cert"))
}

fn key_file(files: &TlsFiles, section: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{section}.key: cannot read a PEM private key from {}", files.key.display()))
}

fn ca_file(files: &TlsFiles, section: &str) -> anyhow::Result<RootCertStore> {
    roots(&files.ca).with_context(|| format!("{section}.ca"))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read PEM certificates from {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
    Ok(certs)
}

fn roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for cert in read_certs(ca)? {
        store.add(cert).with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    Ok(store)
}

/// Who a client certificate names, once rustls has verified it against the cluster CA: a
/// node (`node-<id>`) or a site (`site-<name>`), from its DNS subject alternative names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    Node(u64),
    Site(String),
    /// Signed by the cluster CA but naming neither: no role.
    Other(String),
}

impl CertIdentity {
    /// The first node or site name among the certificate's DNS names.
    pub fn of(cert: &CertificateDer<'_>) -> Option<CertIdentity> {
        let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
        let names: Vec<&str> = parsed.valid_dns_names().collect();
        let node = names.iter().find_map(|n| n.strip_prefix("node-")?.parse::<u64>().ok().filter(|id| *id > 0));
        let site = names.iter().find_map(|n| n.strip_prefix("site-")).filter(|s| crate::config::check_name(s).is_ok());
        match (node, site) {
            (Some(id), _) => Some(CertIdentity::Node(id)),
            (None, Some(site)) => Some(CertIdentity::Site(site.to_string())),
            (None, None) => names.first().map(|n| CertIdentity::Other(n.to_string())),
        }
    }
}

impl std::fmt::Display for CertIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertIdentity::Node(id) => write!(f, "node-{id}"),
            CertIdentity::Site(site) => write!(f, "site-{site}"),
            CertIdentity::Other(name) => f.write_str(name),
        }
    }
}

/// What `serve` (or `agent`) would find wrong with its TLS files, every problem at once: each
/// file readable, the key the certificate's, the certificate signed by the CA, naming `who`,
/// and covering `dialled`, the address others reach this process by (the config field that
/// gives it, and its value), when known. `section` names the config section of the files.
/// Empty: all is well.
pub fn audit(files: &TlsFiles, section: &str, who: &CertIdentity, dialled: Option<(&str, &str)>) -> Vec<String> {
    init();
    let (chain, key, roots) = (cert_file(files, section), key_file(files, section), ca_file(files, section));
    let mut problems: Vec<String> = [chain.as_ref().err(), key.as_ref().err(), roots.as_ref().err()]
        .into_iter()
        .flatten()
        .map(|e| format!("{e:#}"))
        .collect();
    // With every file read, what is left is how they go together (the key the certificate's).
    if problems.is_empty() {
        if let Err(e) = Material::load(files, section) {
            problems.push(format!("{e:#}"));
        }
    }
    let Ok(chain) = chain else { return problems };
    let named = CertIdentity::of(&chain[0]);
    if named.as_ref() != Some(who) {
        let refusal = match who {
            CertIdentity::Node(_) => "peers would refuse this node's Raft requests",
            CertIdentity::Site(_) => "the witness and the other site would not take it for this site",
            CertIdentity::Other(_) => "it would not be recognised",
        };
        problems.push(format!(
            "{section}.cert: {} names {}, not {who}: {refusal}",
            files.cert.display(),
            named.map_or("nothing".to_string(), |o| o.to_string())
        ));
    }
    let (Some((field, address)), Ok(roots)) = (dialled, roots) else { return problems };
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    let verifier = match rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build() {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{section}.ca: {} cannot verify certificates: {e}", files.ca.display()));
            return problems;
        }
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.to_string()) else { return problems };
    let now = rustls::pki_types::UnixTime::now();
    if let Err(e) = rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        &chain[0],
        &chain[1..],
        &name,
        &[],
        now,
    ) {
        let why = failure::describe(&e, "the certificate");
        problems.push(format!("{section}.cert: for {field} {address:?}: {why}"));
    }
    problems
}
