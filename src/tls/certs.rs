//! Reading PEM files: certificate chains, private keys and CA bundles, and
//! what the proxy needs to know about a certificate (its names, its expiry).
//!
//! Every failure names the file and says what is wrong with it; nothing here
//! panics on any file content.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Which file of a certificate entry a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
    Ca,
}

impl Which {
    /// The config key of the file: `cert`, `key` or `ca`.
    pub fn key(self) -> &'static str {
        match self {
            Which::Cert => "cert",
            Which::Key => "key",
            Which::Ca => "ca",
        }
    }
}

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    pub which: Which,
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for CertError {}

fn error(which: Which, path: &Path, problem: impl fmt::Display) -> CertError {
    CertError {
        which,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// A certificate chain with its key, ready to serve, and what it says.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names it is valid for (subject alternative names, else the
    /// common name), lowercase; wildcards as `*.example.com`.
    pub names: Vec<String>,
    /// A name for metrics and logs: the first DNS name, else the subject.
    pub label: String,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads a file whole; files are small (certificates, keys).
pub fn read(which: Which, path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| error(which, path, format_args!("cannot read: {e}")))
}

/// The certificates of a PEM file, in order; at least one.
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        out.push(cert.map_err(|e| error(Which::Cert, path, format_args!("bad PEM: {e}")))?);
    }
    if out.is_empty() {
        return Err(error(
            Which::Cert,
            path,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(out)
}

/// The private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => error(
            Which::Key,
            path,
            "no private key in it (expected -----BEGIN PRIVATE KEY-----)",
        ),
        e => error(Which::Key, path, format_args!("bad PEM: {e}")),
    })
}

/// Builds a servable certificate from the contents of its two files, and
/// refuses a key that does not match, an unsupported key type, and a
/// certificate that has expired (`now_unix` is passed in for tests).
pub fn certified_key(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    now_unix: i64,
) -> Result<Loaded, CertError> {
    let chain = parse_certs(cert_path, cert_pem)?;
    let key = parse_key(key_path, key_pem)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| error(Which::Key, key_path, format_args!("unusable key: {e}")))?;
    let info = describe(cert_path, &chain[0])?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        error(
            Which::Key,
            key_path,
            format_args!("does not match the certificate in {}", cert_path.display()),
        )
    })?;
    if info.not_after <= now_unix {
        return Err(error(
            Which::Cert,
            cert_path,
            format_args!("expired at {} (Unix time)", info.not_after),
        ));
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names: info.names,
        label: info.label,
        not_after: info.not_after,
    })
}

/// Reads and checks a certificate and its key from disk.
pub fn load(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
    now_unix: i64,
) -> Result<Loaded, CertError> {
    let cert = read(Which::Cert, cert_path)?;
    let key = read(Which::Key, key_path)?;
    certified_key(provider, cert_path, &cert, key_path, &key, now_unix)
}

/// A trust store from a PEM CA bundle; at least one usable CA.
pub fn roots(which: Which, path: &Path, pem: &[u8]) -> Result<RootCertStore, CertError> {
    let certs = parse_certs(path, pem).map_err(|e| CertError { which, ..e })?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(error(which, path, "no usable CA certificate in it"));
    }
    Ok(store)
}

/// What a certificate says about itself.
struct Described {
    names: Vec<String>,
    label: String,
    not_after: i64,
}

fn describe(path: &Path, der: &CertificateDer<'_>) -> Result<Described, CertError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
        error(
            Which::Cert,
            path,
            format_args!("not an X.509 certificate: {e}"),
        )
    })?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let subject = cert.subject().to_string();
    if names.is_empty() {
        // No DNS SANs: fall back to the common name, as older clients do.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let label = names.first().cloned().unwrap_or(subject);
    Ok(Described {
        names,
        label,
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The identity of a verified client certificate, for the request path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject distinguished name, e.g. `CN=client, O=Acme`.
    pub subject: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub hash: String,
}

/// What the end-entity certificate a client presented says; None when it
/// cannot be parsed (rustls verified it, so that does not happen in practice).
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut id = PeerIdentity {
        subject: cert.subject().to_string(),
        hash: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
        ..PeerIdentity::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => id.uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => id.dns.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    Some(id)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Now, in seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
