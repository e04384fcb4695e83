//! Certificates for the development cluster, the tests and small deployments: a CA and node and site certificates.
//!
//! Every leaf is both a server and a client certificate because nodes talk mutual TLS to each
//! other and site agents present theirs to the nodes. The CA is made here and rebuilt from its
//! key (`issue`) without parsing its certificate: its subject and extensions are the constants
//! below, and anything issued is checked against `ca.crt` before it replaces a file.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SigningKey, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SecureRandom;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, ServerName, UnixTime};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
const CA_COMMON_NAME: &str = "witness CA";
const CA_DAYS: u64 = 3650;
/// The longest validity browsers and Apple's TLS stack still accept for a leaf.
const LEAF_DAYS: u64 = 825;
/// Certificates start an hour in the past: a node whose clock runs a little behind the machine
/// that made them would otherwise reject them as not yet valid.
const BACKDATE: Duration = Duration::from_secs(3600);
const DAY: u64 = 86_400;
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// Writes a new CA and a certificate and key for every node (`node-N`) and site (`site-NAME`)
/// into `out`, created when missing. Every certificate covers `hosts`; a site's also covers
/// `site_hosts[NAME]`, the addresses its agent is reached by. Refuses, before writing
/// anything, when any of the files already exists. Returns the paths written, the CA's first.
pub fn generate(
    out: &Path,
    nodes: &[u64],
    sites: &[String],
    hosts: &[String],
    site_hosts: &BTreeMap<String, Vec<String>>,
) -> anyhow::Result<Vec<PathBuf>> {
    let names: Vec<String> =
        nodes.iter().map(|n| format!("node-{n}")).chain(sites.iter().map(|s| format!("site-{s}"))).collect();
    for (i, name) in names.iter().enumerate() {
        check_name(name)?;
        if names[..i].contains(name) {
            bail!("{name} is asked for twice");
        }
    }
    if let Some(unknown) = site_hosts.keys().find(|site| !sites.contains(site)) {
        bail!("hosts are given for site {unknown:?}, which is not among the sites");
    }
    let extra = host_sans(hosts)?;

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = vec![out.join(CA_CERT), out.join(CA_KEY)];
    for name in &names {
        files.push(out.join(format!("{name}.crt")));
        files.push(out.join(format!("{name}.key")));
    }
    // Checked up front so that a refusal leaves no half-written set behind; `create_new` below
    // still guards against a file appearing in between.
    if let Some(existing) = files.iter().find(|f| fs::symlink_metadata(f).is_ok()) {
        bail!("{} already exists; refusing to overwrite it", existing.display());
    }

    let mut ca_params = ca_params();
    set_validity(&mut ca_params, CA_DAYS);
    ca_params.serial_number = Some(random_serial()?);
    let ca = CertifiedIssuer::self_signed(ca_params, new_key()?).context("signing the CA certificate")?;
    write_new(&files[0], &ca.pem(), CERT_MODE)?;
    write_new(&files[1], &ca.key().serialize_pem(), KEY_MODE)?;
    for (name, pair) in names.iter().zip(files[2..].chunks(2)) {
        let own = name.strip_prefix("site-").and_then(|site| site_hosts.get(site)).map_or(&[][..], Vec::as_slice);
        let sans = [extra.clone(), host_sans(own)?].concat();
        let (cert, key) = leaf(name, &sans, &ca)?;
        write_new(&pair[0], &cert, CERT_MODE)?;
        write_new(&pair[1], &key, KEY_MODE)?;
    }
    sync_dir(out)?;
    Ok(files)
}

/// `generate`, for processes that may start together and each find no certificates yet: the
/// set appears at `out` complete or not at all, and exactly one set wins. True when this call
/// made the files at `out`; false when `out` already existed or another process got there first.
pub fn generate_once(out: &Path, nodes: &[u64], sites: &[String], hosts: &[String]) -> anyhow::Result<bool> {
    if fs::symlink_metadata(out).is_ok() {
        return Ok(false);
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let base = out.file_name().ok_or_else(|| anyhow!("{} does not name a directory", out.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // A sibling, so that the rename stays within one file system and is atomic.
    let tmp = parent.join(format!(".{}.tmp-{}-{:016x}", base.to_string_lossy(), std::process::id(), random_u64()?));
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = generate(&tmp, nodes, sites, hosts, &BTreeMap::new()) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, out) {
        Ok(()) => {
            sync_dir(parent)?;
            Ok(true)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            // The winner's directory is full, so the rename fails (ENOTEMPTY or EEXIST) rather
            // than replacing it; whatever the error, an `out` that now exists means we lost.
            if fs::symlink_metadata(out).is_ok() {
                Ok(false)
            } else {
                Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
            }
        }
    }
}

/// Issues `dir/NAME.crt` and `dir/NAME.key` with the CA in `dir` (`ca.crt`, `ca.key`),
/// replacing existing ones: to rotate a certificate, or to add a node or a site. Each file is
/// replaced atomically, the key first; a reader that loads between the two renames sees the
/// new key with the old certificate and should retry. Returns the two paths.
pub fn issue(dir: &Path, name: &str, hosts: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    let extra = host_sans(hosts)?;
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let ca_der = CertificateDer::from_pem_file(&ca_cert_path)
        .with_context(|| format!("reading the CA certificate {}", ca_cert_path.display()))?;
    let ca_key_pem =
        fs::read_to_string(&ca_key_path).with_context(|| format!("reading the CA key {}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).with_context(|| format!("parsing {}", ca_key_path.display()))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let (cert, key) = leaf(name, &extra, &issuer)?;

    // The rebuilt issuer is only right if ca.key belongs to ca.crt and ca.crt has the subject
    // `generate` gives it; a certificate that would not verify must not replace a working one.
    let leaf_der = CertificateDer::from_pem_slice(cert.as_bytes()).context("re-reading the certificate just made")?;
    verifies_as_server(&ca_der, &leaf_der, name).map_err(|e| {
        anyhow!(
            "the new {name} certificate does not verify against {} ({e}): {} is not the key of that CA, or \
             the CA was not made by `witness gen-certs`",
            ca_cert_path.display(),
            ca_key_path.display()
        )
    })?;

    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    let suffix = format!("tmp-{}-{:016x}", std::process::id(), random_u64()?);
    let key_tmp = dir.join(format!(".{name}.key.{suffix}"));
    let cert_tmp = dir.join(format!(".{name}.crt.{suffix}"));
    let replaced = write_new(&key_tmp, &key, KEY_MODE)
        .and_then(|()| write_new(&cert_tmp, &cert, CERT_MODE))
        .and_then(|()| fs::rename(&key_tmp, &key_path).with_context(|| format!("replacing {}", key_path.display())))
        .and_then(|()| fs::rename(&cert_tmp, &cert_path).with_context(|| format!("replacing {}", cert_path.display())));
    if let Err(e) = replaced {
        let _ = fs::remove_file(&key_tmp);
        let _ = fs::remove_file(&cert_tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(vec![cert_path, key_path])
}

/// A certificate name: it becomes a file name in the CA's directory and a DNS name in the
/// certificate, so it is held to a single DNS label.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let label = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        bail!(
            "invalid certificate name {name:?}: use node-<id>, site-<name> or another DNS label \
             (1-63 lowercase letters, digits and '-', not starting or ending with '-')"
        );
    }
    if name == "ca" {
        bail!("invalid certificate name \"ca\": those are the CA's own files");
    }
    Ok(())
}

/// An extra name a certificate is valid for: an IP address, or else a DNS name.
pub fn check_host(host: &str) -> anyhow::Result<()> {
    host_san(host).map(|_| ())
}

fn host_san(host: &str) -> anyhow::Result<SanType> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    // rcgen only checks for ASCII; webpki would later refuse to match a malformed name, so
    // catch it while the user is still at the keyboard.
    DnsName::try_from_str(host)
        .ok()
        .and_then(|_| Ia5String::try_from(host).ok())
        .map(SanType::DnsName)
        .ok_or_else(|| anyhow!("invalid host {host:?}: neither an IP address nor a DNS name"))
}

fn host_sans(hosts: &[String]) -> anyhow::Result<Vec<SanType>> {
    hosts.iter().map(|h| host_san(h)).collect()
}

/// The CA's subject and extensions. `issue` depends on these being exactly what `generate`
/// used: the subject becomes each leaf's issuer name, which must match the CA's.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    // Path length 0: this CA signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A leaf certificate and its new key, both PEM.
fn leaf(name: &str, extra: &[SanType], issuer: &Issuer<'_, impl SigningKey>) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let mut sans = vec![
        SanType::DnsName(Ia5String::try_from(name)?),
        SanType::DnsName(Ia5String::try_from("localhost")?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    for san in extra {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    // Lets openssl and other chain builders find the CA by key rather than by name alone.
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, LEAF_DAYS);
    let key = new_key()?;
    let cert = params.signed_by(&key, issuer).with_context(|| format!("signing the {name} certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_key() -> anyhow::Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating an ECDSA P-256 key")
}

fn set_validity(params: &mut CertificateParams, days: u64) {
    // rcgen's dates are `time` values; reaching them through rcgen's own constructor and
    // std durations spares a dependency on `time`.
    let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(crate::clock::unix_ms() / 1000);
    params.not_before = now - BACKDATE;
    params.not_after = params.not_before + Duration::from_secs(days * DAY);
}

/// 127 random bits: unique per certificate, positive, within RFC 5280's 20 octets.
fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow!("the system's random source failed"))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn random_u64() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow!("the system's random source failed"))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Creates `path` with `mode` from the start: a key must never exist, even for a moment,
/// with the umask's wider permissions.
fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            anyhow!("{} already exists; refusing to overwrite it", path.display())
        } else {
            anyhow!(e).context(format!("creating {}", path.display()))
        }
    })?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all().with_context(|| format!("writing {}", path.display()))
}

/// Makes the directory's new entries durable: a node restarted after a crash finds either the
/// files or nothing, and then makes them again.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

fn verifies_as_server(ca: &CertificateDer<'_>, leaf: &CertificateDer<'_>, name: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    verifier.verify_server_cert(leaf, &[], &server_name, &[], UnixTime::now()).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls::server::danger::ClientCertVerifier;
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    struct Verifiers {
        server: Arc<rustls::client::WebPkiServerVerifier>,
        client: Arc<dyn ClientCertVerifier>,
    }

    impl Verifiers {
        fn trusting(ca: &Path) -> Verifiers {
            crate::tls::init();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert(ca)).unwrap();
            let roots = Arc::new(roots);
            Verifiers {
                server: rustls::client::WebPkiServerVerifier::builder(roots.clone()).build().unwrap(),
                client: WebPkiClientVerifier::builder(roots).build().unwrap(),
            }
        }

        fn server(&self, leaf: &Path, name: &str) -> Result<(), rustls::Error> {
            let name = ServerName::try_from(name.to_string()).unwrap();
            self.server.verify_server_cert(&cert(leaf), &[], &name, &[], UnixTime::now()).map(|_| ())
        }

        fn client(&self, leaf: &Path) -> Result<(), rustls::Error> {
            self.client.verify_client_cert(&cert(leaf), &[], UnixTime::now()).map(|_| ())
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The serial number, read from the DER just far enough: Certificate, TBSCertificate,
    /// the explicit version, then the INTEGER.
    fn serial(der: &[u8]) -> Vec<u8> {
        fn header(der: &[u8]) -> (u8, usize, usize) {
            let tag = der[0];
            let first = der[1] as usize;
            if first < 0x80 {
                return (tag, 2, first);
            }
            let n = first & 0x7f;
            let len = der[2..2 + n].iter().fold(0usize, |acc, b| acc << 8 | *b as usize);
            (tag, 2 + n, len)
        }
        let (_, h, _) = header(der); // Certificate
        let tbs = &der[h..];
        let (_, h, _) = header(tbs); // TBSCertificate
        let mut rest = &tbs[h..];
        let (tag, h, len) = header(rest);
        if tag == 0xa0 {
            rest = &rest[h + len..];
        }
        let (tag, h, len) = header(rest);
        assert_eq!(tag, 0x02, "serial is an INTEGER");
        rest[h..h + len].to_vec()
    }

    #[test]
    fn generated_certificates_verify_for_their_names_both_ways() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a/b/certs");
        let site_hosts = [("east".to_string(), strings(&["10.1.0.7"]))].into();
        let written =
            generate(&out, &[1, 2, 3], &strings(&["east"]), &strings(&["10.0.0.5", "witness.example"]), &site_hosts)
                .unwrap();
        assert_eq!(written.len(), 2 + 2 * 4);
        assert_eq!(written[0], out.join("ca.crt"));
        for path in &written {
            assert!(path.exists(), "{} missing", path.display());
            if path.extension().unwrap() == "key" {
                assert_eq!(mode(path), 0o600, "{}", path.display());
            } else {
                assert_eq!(mode(path) & !0o644, 0, "{} is wider than 0644", path.display());
                assert_eq!(mode(path) & 0o600, 0o600, "{}", path.display());
            }
        }
        let v = Verifiers::trusting(&out.join("ca.crt"));
        let node1 = out.join("node-1.crt");
        for name in ["node-1", "localhost", "127.0.0.1", "::1", "10.0.0.5", "witness.example"] {
            v.server(&node1, name).unwrap_or_else(|e| panic!("node-1 as {name}: {e}"));
        }
        assert!(v.server(&node1, "node-2").is_err(), "node-1's certificate must not pass for node-2");
        v.client(&node1).unwrap();
        v.server(&out.join("site-east.crt"), "site-east").unwrap();
        v.server(&out.join("site-east.crt"), "10.1.0.7").expect("a site's own hosts");
        assert!(v.server(&node1, "10.1.0.7").is_err(), "a site's hosts are its own");
        v.client(&out.join("site-east.crt")).unwrap();
        let err = generate(&tmp.path().join("c"), &[1], &[], &[], &site_hosts).unwrap_err().to_string();
        assert!(err.contains("\"east\", which is not among the sites"), "{err}");
        v.server(&out.join("node-3.crt"), "node-3").unwrap();
    }

    #[test]
    fn generate_refuses_to_overwrite_and_writes_nothing_then() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("certs");
        generate(&out, &[1], &[], &[], &BTreeMap::new()).unwrap();
        let ca_before = fs::read(out.join("ca.crt")).unwrap();
        let err = generate(&out, &[1], &[], &[], &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("ca.crt") && err.contains("already exists"), "{err}");
        assert_eq!(fs::read(out.join("ca.crt")).unwrap(), ca_before);

        // One leftover file is enough to refuse, and the refusal comes before any writing.
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("node-2.key"), "mine").unwrap();
        let err = generate(&other, &[1, 2], &[], &[], &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("node-2.key"), "{err}");
        assert!(!other.join("ca.crt").exists());
        assert_eq!(fs::read_to_string(other.join("node-2.key")).unwrap(), "mine");
    }

    #[test]
    fn bad_names_and_hosts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("certs");
        assert!(generate(&out, &[1], &strings(&["East"]), &[], &BTreeMap::new())
            .unwrap_err()
            .to_string()
            .contains("site-East"));
        assert!(generate(&out, &[1, 1], &[], &[], &BTreeMap::new()).unwrap_err().to_string().contains("node-1"));
        assert!(generate(&out, &[1], &[], &strings(&["bad host"]), &BTreeMap::new())
            .unwrap_err()
            .to_string()
            .contains("bad host"));
        assert!(!out.exists(), "nothing is created for a refused request");
        for name in ["ca", "", "../x", "Node-1", "-a", "a".repeat(64).as_str()] {
            assert!(check_name(name).is_err(), "{name:?} accepted");
        }
        for name in ["node-1", "site-east", "backup"] {
            check_name(name).unwrap();
        }
    }

    #[test]
    fn generate_once_makes_one_set_however_many_race() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("certs");
        assert!(generate_once(&out, &[1, 2], &strings(&["east"]), &[]).unwrap());
        let ca = fs::read(out.join("ca.crt")).unwrap();
        assert!(!generate_once(&out, &[1, 2], &strings(&["east"]), &[]).unwrap());
        assert_eq!(fs::read(out.join("ca.crt")).unwrap(), ca, "the first set stays");

        let raced = tmp.path().join("raced");
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> =
                (0..8).map(|_| s.spawn(|| generate_once(&raced, &[1, 2, 3], &[], &[]).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap() as usize).sum()
        });
        assert_eq!(winners, 1);
        let v = Verifiers::trusting(&raced.join("ca.crt"));
        v.server(&raced.join("node-3.crt"), "node-3").unwrap();
        let leftovers: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary directories left behind: {leftovers:?}");
    }

    #[test]
    fn issue_rotates_and_adds_under_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("certs");
        generate(&out, &[1], &[], &[], &BTreeMap::new()).unwrap();
        let old_cert = cert(&out.join("node-1.crt"));
        let old_key = fs::read(out.join("node-1.key")).unwrap();

        let written = issue(&out, "node-1", &strings(&["192.0.2.7"])).unwrap();
        assert_eq!(written, vec![out.join("node-1.crt"), out.join("node-1.key")]);
        let new_cert = cert(&out.join("node-1.crt"));
        assert_ne!(serial(&new_cert), serial(&old_cert));
        assert_ne!(fs::read(out.join("node-1.key")).unwrap(), old_key);
        assert_eq!(mode(&out.join("node-1.key")), 0o600);
        let v = Verifiers::trusting(&out.join("ca.crt"));
        v.server(&out.join("node-1.crt"), "node-1").unwrap();
        v.server(&out.join("node-1.crt"), "192.0.2.7").unwrap();
        v.client(&out.join("node-1.crt")).unwrap();

        issue(&out, "site-north", &[]).unwrap();
        v.server(&out.join("site-north.crt"), "site-north").unwrap();
        assert_eq!(mode(&out.join("site-north.key")), 0o600);
        let names: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 6, "no temporary files left: {names:?}");

        let err = issue(&out, "ca", &[]).unwrap_err().to_string();
        assert!(err.contains("\"ca\""), "{err}");
        assert!(issue(&out, "../node-1", &[]).is_err());
    }

    #[test]
    fn issue_refuses_a_key_that_is_not_the_cas() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        generate(&a, &[1], &[], &[], &BTreeMap::new()).unwrap();
        generate(&b, &[1], &[], &[], &BTreeMap::new()).unwrap();
        fs::remove_file(a.join("ca.key")).unwrap();
        fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
        let before = fs::read(a.join("node-1.crt")).unwrap();
        let err = issue(&a, "node-1", &[]).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        assert_eq!(fs::read(a.join("node-1.crt")).unwrap(), before, "a working certificate stays");
        let err = issue(&tmp.path().join("missing"), "node-1", &[]).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
    }

    #[test]
    fn another_cas_certificates_do_not_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        generate(&a, &[1], &[], &[], &BTreeMap::new()).unwrap();
        generate(&b, &[1], &[], &[], &BTreeMap::new()).unwrap();
        let v = Verifiers::trusting(&a.join("ca.crt"));
        assert!(v.server(&b.join("node-1.crt"), "node-1").is_err());
        assert!(v.client(&b.join("node-1.crt")).is_err());
        v.server(&a.join("node-1.crt"), "node-1").unwrap();
    }
}
