//! A throwaway PKI for the `peers` backend's mutual TLS: one CA, and for
//! each node a certificate with DNS SAN = its id, usable as server and
//! client (LEASES.md §3.8), all written to the CA's own temporary
//! directory. Shared by the transport, peers and soak tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use breakwater::config::PeerTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the directory its files go to (removed on drop).
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
    issued: AtomicUsize,
}

impl Pki {
    /// A new CA with common name `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let ca_pem = params.self_signed(&key).expect("self-sign the CA").pem();
        let dir = tempfile::Builder::new()
            .prefix("breakwater-pki-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).expect("write ca.crt");
        Self {
            issuer: Issuer::new(params, key),
            ca_pem,
            dir,
            issued: AtomicUsize::new(0),
        }
    }

    /// `cluster.tls` for a node whose certificate has DNS SAN `id`; each
    /// call issues a new key and certificate, in files of their own.
    pub fn node(&self, id: &str) -> PeerTls {
        let mut params = CertificateParams::new(vec![id.to_owned()]).expect("a valid SAN");
        params.distinguished_name.push(DnType::CommonName, id);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let cert_path = self.dir.path().join(format!("{n}-{id}.crt"));
        let key_path = self.dir.path().join(format!("{n}-{id}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write the node certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the node key");
        PeerTls {
            cert: cert_path,
            key: key_path,
            ca: self.dir.path().join("ca.crt"),
        }
    }

    /// A CA file trusting this CA and `other`.
    pub fn bundle_with(&self, other: &Pki) -> PathBuf {
        let path = self.dir.path().join("bundle.crt");
        std::fs::write(&path, format!("{}{}", self.ca_pem, other.ca_pem)).expect("bundle");
        path
    }
}
