//! TLS for the hub (HTTPS/WSS server) and for an edge's uplink to it (WSS client): rustls with
//! the ring provider, chosen explicitly as for MQTT (no process-wide default provider).
//!
//! - Server: a PEM certificate chain and key from `[hub] tls_cert_file` / `tls_key_file`, or a
//!   self-signed certificate generated once and kept in the state directory
//!   ([`self_signed`]: `hub-cert.pem`, `hub-key.pem` mode 0600).
//! - Client: the hub must chain to a CA file (name checked as usual), or its certificate must
//!   have a pinned SHA-256 fingerprint ([`Pinned`]: any name, signatures still checked).
//!
//! Errors name the config key and the file, never key material.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// File names of the generated certificate and key in the state directory.
pub const SELF_SIGNED_CERT: &str = "hub-cert.pem";
pub const SELF_SIGNED_KEY: &str = "hub-key.pem";

/// Largest certificate or key file read (a chain is a few KB).
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// A TLS setting that cannot be used: which config key, which file, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TlsError {
    /// The config key, e.g. `hub.tls_cert_file`.
    pub key: String,
    pub path: String,
    pub message: String,
}

fn err(key: &str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError { key: key.into(), path: path.display().to_string(), message: message.into() }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::config::secret::read_limited(path, MAX_PEM_BYTES).map_err(|e| err(key, path, format!("cannot read: {e}")))
}

/// SHA-256 of a DER certificate as `AB:CD:…` (what `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut s = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// A configured fingerprint as 32 bytes: hex pairs, with or without `:`, any case.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || format!("`{text}` is not a SHA-256 fingerprint (32 hex bytes, e.g. \"AB:CD:…\")");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A certificate chain from a PEM file (at least one certificate).
fn read_chain(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| err(key, path, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(err(key, path, "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"));
    }
    Ok(chain)
}

/// The hub's server side: its rustls config and its certificate's fingerprint.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the end-entity certificate, `AB:CD:…`.
    pub fingerprint: String,
    pub cert_file: PathBuf,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// Where the hub's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// `[hub] tls_cert_file` / `tls_key_file`.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated on first start in this directory, for these names (DNS names or IPs).
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

impl CertSource {
    /// The certificate and key files, and the config keys they are reported under.
    fn files(&self) -> (PathBuf, &'static str, PathBuf, &'static str) {
        match self {
            CertSource::Files { cert, key } => (cert.clone(), "hub.tls_cert_file", key.clone(), "hub.tls_key_file"),
            CertSource::SelfSigned { dir, .. } => {
                (dir.join(SELF_SIGNED_CERT), "hub.state_dir", dir.join(SELF_SIGNED_KEY), "hub.state_dir")
            }
        }
    }
}

/// Load (and for a self-signed certificate, first create) the hub's certificate and key.
pub fn server(source: &CertSource) -> Result<ServerTls, TlsError> {
    if let CertSource::SelfSigned { dir, names } = source {
        if self_signed(dir, names)? {
            tracing::info!(dir = %dir.display(), ?names, "generated a self-signed hub certificate");
        }
    }
    let (cert_path, cert_key, key_path, key_key) = source.files();
    let chain = read_chain(cert_key, &cert_path)?;
    let fingerprint = fingerprint(&chain[0]);
    let key_pem = read(key_key, &key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| err(key_key, &key_path, "no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert_key, &cert_path, format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => {
                    format!("the key in {} does not match this certificate", key_path.display())
                }
                other => format!("certificate/key unusable: {other}"),
            };
            err(cert_key, &cert_path, why)
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls { config: Arc::new(config), fingerprint, cert_file: cert_path })
}

/// The fingerprint of the certificate the hub will use, without starting it (`roipd check`):
/// None when a self-signed certificate is not generated yet.
pub fn current_fingerprint(source: &CertSource) -> Result<Option<String>, TlsError> {
    let (cert_path, cert_key, _, _) = source.files();
    if matches!(source, CertSource::SelfSigned { .. }) && !cert_path.exists() {
        return Ok(None);
    }
    Ok(Some(fingerprint(&read_chain(cert_key, &cert_path)?[0])))
}

/// What `roipd check` can say about a certificate without making one: files are loaded as the
/// hub will load them; a self-signed one already made is loaded too, and one still to be made
/// needs a state directory the daemon can create or write.
pub fn check(source: &CertSource) -> Result<(), TlsError> {
    let CertSource::SelfSigned { dir, .. } = source else {
        return server(source).map(|_| ());
    };
    if dir.join(SELF_SIGNED_CERT).exists() || dir.join(SELF_SIGNED_KEY).exists() {
        return server(source).map(|_| ());
    }
    let mut existing = dir.as_path();
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|_| err("hub.state_dir", dir, "not a path"))?;
    // SAFETY: a valid NUL-terminated path; access() only reads it.
    let writable = existing.is_dir() && unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    if writable {
        Ok(())
    } else {
        Err(err(
            "hub.state_dir",
            dir,
            format!(
                "the self-signed certificate is made here on the first start, but {} is not a writable directory",
                existing.display()
            ),
        ))
    }
}

/// Create `hub-cert.pem` and `hub-key.pem` (0600) in `dir` unless both exist. ECDSA P-256,
/// valid from 2024-01-01 for 100 years (a box in a hut has no one to renew it, and its clock may
/// start at 1970 or 2024 after a power cut; the pin is the trust).
pub fn self_signed(dir: &Path, names: &[String]) -> Result<bool, TlsError> {
    let cert_path = dir.join(SELF_SIGNED_CERT);
    let key_path = dir.join(SELF_SIGNED_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let e = |m: String| err("hub.state_dir", dir, m);
    std::fs::create_dir_all(dir).map_err(|x| e(format!("cannot create: {x}")))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|x| e(format!("certificate names: {x}")))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, names.first().map_or("roipd hub", |n| n.as_str()));
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = params.not_before + std::time::Duration::from_secs(100 * 365 * 86_400);
    let key = rcgen::KeyPair::generate().map_err(|x| e(format!("generating a key: {x}")))?;
    let cert = params.self_signed(&key).map_err(|x| e(format!("signing the certificate: {x}")))?;
    // Key first, each written beside and renamed: a crash leaves no half file, and a certificate
    // never exists without its key.
    write_new(&key_path, &pem("PRIVATE KEY", &key.serialize_der()), 0o600).map_err(&e)?;
    write_new(&cert_path, &pem("CERTIFICATE", cert.der()), 0o644).map_err(&e)?;
    Ok(true)
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|x| format!("cannot write {}: {x}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|x| format!("cannot write {}: {x}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|x| format!("cannot rename to {}: {x}", path.display()))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    let _ = writeln!(s, "-----END {label}-----");
    s
}

/// How an edge trusts its hub over `wss://`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubTrust {
    /// The hub chains to a CA in this PEM file (the system bundle when none is configured) and
    /// its certificate names the URL's host.
    Ca(PathBuf),
    /// The hub's certificate has this SHA-256 fingerprint (any name, any issuer).
    Pin([u8; 32]),
}

/// The system CA bundle (Debian), used for `wss://` with neither `ca_file` nor `fingerprint`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The message a wrong pin fails with; the uplink recognises it to report `hub_untrusted`.
pub const PIN_MISMATCH: &str = "hub certificate fingerprint does not match the pinned fingerprint";

/// The edge's rustls client config for `trust`.
pub fn client(trust: &HubTrust) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError { key: "uplink".into(), path: String::new(), message: format!("TLS: {e}") })?;
    let mut config = match trust {
        HubTrust::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(read_chain("uplink.ca_file", path)?);
            if added == 0 {
                return Err(err("uplink.ca_file", path, "no usable CA certificate in the file"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        HubTrust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin: *pin, provider: provider() }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts exactly the certificate whose SHA-256 is `pin` (a self-signed hub's), whatever its
/// name, issuer or dates: the pin is the trust. Handshake signatures are still verified, so
/// only the holder of that certificate's key passes.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        // Public values: no need for constant time.
        if got.as_ref() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("{PIN_MISMATCH} (hub presented {})", fingerprint(end_entity))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_and_print_alike() {
        let fp = fingerprint(b"x");
        assert_eq!(fp.len(), 95);
        assert_eq!(
            parse_fingerprint(&fp).unwrap().to_vec(),
            ring::digest::digest(&ring::digest::SHA256, b"x").as_ref()
        );
        assert_eq!(parse_fingerprint(&fp.replace(':', "").to_lowercase()).unwrap(), parse_fingerprint(&fp).unwrap());
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&"é".repeat(32)).is_err());
    }

    #[test]
    fn self_signed_is_made_once_with_a_private_key_and_loads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let source =
            CertSource::SelfSigned { dir: dir.path().into(), names: vec!["localhost".into(), "127.0.0.1".into()] };
        assert_eq!(current_fingerprint(&source).unwrap(), None);
        let first = server(&source).unwrap();
        let mode = std::fs::metadata(dir.path().join(SELF_SIGNED_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = server(&source).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint, "kept, not regenerated");
        assert_eq!(current_fingerprint(&source).unwrap(), Some(first.fingerprint));
    }

    #[test]
    fn bad_files_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        self_signed(a.path(), &["a".into()]).unwrap();
        self_signed(b.path(), &["b".into()]).unwrap();
        let missing = CertSource::Files { cert: dir.path().join("nope.pem"), key: dir.path().join("k.pem") };
        let e = server(&missing).unwrap_err();
        assert_eq!(e.key, "hub.tls_cert_file");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        std::fs::write(dir.path().join("junk.pem"), "hello\n").unwrap();
        let junk = CertSource::Files { cert: dir.path().join("junk.pem"), key: a.path().join(SELF_SIGNED_KEY) };
        assert!(server(&junk).unwrap_err().message.contains("no PEM certificate"));
        let nokey = CertSource::Files { cert: a.path().join(SELF_SIGNED_CERT), key: dir.path().join("junk.pem") };
        let e = server(&nokey).unwrap_err();
        assert_eq!(e.key, "hub.tls_key_file");
        assert!(e.message.contains("no PEM private key"), "{e}");
        let mixed = CertSource::Files { cert: a.path().join(SELF_SIGNED_CERT), key: b.path().join(SELF_SIGNED_KEY) };
        let e = server(&mixed).unwrap_err();
        assert!(e.message.contains("does not match"), "{e}");
    }
}
