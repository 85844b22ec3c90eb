//! One CA and a certificate per member (DNS SAN = its id), in a temp
//! dir; made once per test function (key generation is the slow part).

use breakwater::config::PeerTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::IDS;

/// One CA and a certificate per node (DNS SAN = its id), in a temp dir;
/// made once per test function (key generation is the slow part).
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "sim-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), pem).expect("write ca.crt");
        let issuer = Issuer::new(params, key);
        for id in IDS {
            let mut params = CertificateParams::new(vec![id.to_owned()]).expect("valid SAN");
            params.distinguished_name.push(DnType::CommonName, id);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("sign");
            std::fs::write(dir.path().join(format!("{id}.crt")), cert.pem()).expect("cert");
            std::fs::write(dir.path().join(format!("{id}.key")), key.serialize_pem()).expect("key");
        }
        Self { dir }
    }

    pub fn tls(&self, id: &str) -> PeerTls {
        PeerTls {
            cert: self.dir.path().join(format!("{id}.crt")),
            key: self.dir.path().join(format!("{id}.key")),
            ca: self.dir.path().join("ca.crt"),
        }
    }
}
