//! The identity rule and the refusals, over in-memory streams with
//! certificates made here with rcgen.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

/// A throwaway CA that writes what it issues to its own directory.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    dir: tempfile::TempDir,
    issued: AtomicUsize,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem,
            dir,
            issued: AtomicUsize::new(0),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A peer certificate (server and client use) with these DNS SANs.
    fn peer(&self, sans: &[&str]) -> PeerTls {
        self.issue(
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn issue(&self, sans: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> PeerTls {
        let names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "peer");
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let (cert_path, key_path) = (
            self.dir.path().join(format!("{n}.crt")),
            self.dir.path().join(format!("{n}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        PeerTls {
            cert: cert_path,
            key: key_path,
            ca: self.ca(),
        }
    }

    /// A CA file trusting this CA and `other`.
    fn bundle_with(&self, other: &Pki) -> PathBuf {
        let path = self.dir.path().join("bundle.crt");
        std::fs::write(&path, format!("{}{}", self.ca_pem, other.ca_pem)).unwrap();
        path
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn load(tls: &PeerTls, me: &str, members: &[&str]) -> Result<PeerTlsConfig, CertError> {
    PeerTlsConfig::load(tls, me, &ids(members))
}

/// Node `a` (members b, c) accepting a connection from `client` dialling `a`.
/// Returns what each side saw; the client's result includes its first read,
/// where a refusal by the server shows in TLS 1.3.
async fn handshake(
    server: &PeerTlsConfig,
    client: &PeerTlsConfig,
    dial: &str,
) -> (Result<String, RejectReason>, Result<(), RejectReason>) {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server_side = async {
        match server.accept(s).await {
            Ok((mut stream, id)) => {
                assert_eq!(stream.peer_id(), id);
                stream.write_all(b"x").await.unwrap();
                stream.flush().await.unwrap();
                Ok(id)
            }
            Err(e) => Err(e.reason),
        }
    };
    let client_side = async {
        let mut stream = client.connect(c, dial).await.map_err(|e| e.reason)?;
        let mut byte = [0u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map(|_| ())
            .map_err(|e| PeerRejected::of_io(&e).reason)
    };
    tokio::join!(server_side, client_side)
}

#[tokio::test]
async fn members_authenticate_each_other_by_dns_san() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a", "a.example.internal"]), "a", &["b", "c"]).unwrap();
    let b = load(&pki.peer(&["b"]), "b", &["a", "c"]).unwrap();
    assert_eq!(a.me(), "a");
    let (server, client) = handshake(&a, &b, "a").await;
    assert_eq!(server, Ok("b".to_owned()));
    assert_eq!(client, Ok(()));
}

#[tokio::test]
async fn san_matching_ignores_ascii_case_and_yields_the_configured_id() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a"]), "a", &["orders-1"]).unwrap();
    let b = load(&pki.peer(&["Orders-1"]), "orders-1", &["a"]).unwrap();
    let (server, client) = handshake(&a, &b, "a").await;
    assert_eq!(server, Ok("orders-1".to_owned()));
    assert_eq!(client, Ok(()));
}

#[tokio::test]
async fn a_client_naming_no_member_is_refused() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a"]), "a", &["b", "c"]).unwrap();
    // Mallory is certified by the same CA but is not a member of a's cluster.
    let mallory = load(&pki.peer(&["mallory"]), "mallory", &["a"]).unwrap();
    let (server, client) = handshake(&a, &mallory, "a").await;
    assert_eq!(server, Err(RejectReason::UnknownPeer));
    assert_eq!(client, Err(RejectReason::RefusedByPeer));
}

#[tokio::test]
async fn a_client_claiming_our_own_id_is_refused() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a"]), "a", &["b"]).unwrap();
    let impostor = load(&pki.peer(&["a"]), "a", &["a"]).unwrap();
    let (server, _) = handshake(&a, &impostor, "a").await;
    assert_eq!(server, Err(RejectReason::UnknownPeer));
}

#[tokio::test]
async fn a_client_certified_by_another_ca_is_refused() {
    let (pki, rogue) = (Pki::new("peers"), Pki::new("rogue"));
    let a = load(&pki.peer(&["a"]), "a", &["b"]).unwrap();
    // It trusts our CA, so only our side can refuse it.
    let mut tls = rogue.peer(&["b"]);
    tls.ca = rogue.bundle_with(&pki);
    let b = load(&tls, "b", &["a"]).unwrap();
    let (server, client) = handshake(&a, &b, "a").await;
    assert_eq!(server, Err(RejectReason::BadCertificate));
    assert_eq!(client, Err(RejectReason::RefusedByPeer));
}

#[tokio::test]
async fn a_server_that_is_another_member_is_refused() {
    let pki = Pki::new("peers");
    let b = load(&pki.peer(&["b"]), "b", &["a", "c"]).unwrap();
    let a = load(&pki.peer(&["a"]), "a", &["b", "c"]).unwrap();
    // a means to reach c, but b answers at that address.
    let (server, client) = handshake(&b, &a, "c").await;
    assert_eq!(client, Err(RejectReason::WrongPeer));
    assert_eq!(server, Err(RejectReason::RefusedByPeer));
}

#[tokio::test]
async fn dialling_a_non_member_is_refused_before_any_byte() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a"]), "a", &["b"]).unwrap();
    let (c, _s) = tokio::io::duplex(1024);
    let err = a.connect(c, "z").await.err().unwrap();
    assert_eq!(err.reason, RejectReason::UnknownPeer);
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a"]), "a", &["b"]).unwrap();
    let roots = certs::roots(Which::Ca, &pki.ca(), &std::fs::read(pki.ca()).unwrap()).unwrap();
    let mut config = ClientConfig::builder_with_provider(super::super::crypto())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let (c, s) = tokio::io::duplex(64 * 1024);
    let server = async { a.accept(s).await.err().map(|e| e.reason) };
    let client = async {
        let connector = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("a").unwrap();
        if let Ok(mut stream) = connector.connect(name, c).await {
            let _ = stream.read(&mut [0u8; 1]).await;
        }
    };
    let (server, ()) = tokio::join!(server, client);
    assert_eq!(server, Some(RejectReason::NoCertificate));
}

#[tokio::test]
async fn garbage_instead_of_tls_is_refused() {
    let pki = Pki::new("peers");
    let a = load(&pki.peer(&["a"]), "a", &["b"]).unwrap();
    let (mut c, s): (DuplexStream, DuplexStream) = tokio::io::duplex(1024);
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let err = a.accept(s).await.err().unwrap();
    assert_eq!(err.reason, RejectReason::NotTls);
}

#[test]
fn load_refuses_a_certificate_that_does_not_name_the_node() {
    let pki = Pki::new("peers");
    let err = load(&pki.peer(&["a.example.internal"]), "a", &["b"]).unwrap_err();
    assert_eq!(err.which, Which::Cert);
    assert!(err.problem.contains("\"a\""), "{err}");
}

#[test]
fn load_refuses_a_wildcard_in_place_of_the_node_id() {
    let pki = Pki::new("peers");
    // WebPKI alone would take the wildcard for this name; our rule does not.
    let tls = pki.peer(&["*.orders.internal"]);
    let err = load(&tls, "a.orders.internal", &["b.orders.internal"]).unwrap_err();
    assert!(err.problem.contains("no DNS SAN equal"), "{err}");
}

#[test]
fn load_refuses_a_certificate_naming_another_member_too() {
    let pki = Pki::new("peers");
    let err = load(&pki.peer(&["a", "b"]), "a", &["b", "c"]).unwrap_err();
    assert!(err.problem.contains("several node ids"), "{err}");
}

#[test]
fn load_refuses_a_certificate_the_ca_did_not_sign() {
    let (pki, rogue) = (Pki::new("peers"), Pki::new("rogue"));
    let mut tls = rogue.peer(&["a"]);
    tls.ca = pki.ca();
    let err = load(&tls, "a", &["b"]).unwrap_err();
    assert!(err.problem.contains("would refuse it"), "{err}");
}

#[test]
fn load_refuses_a_certificate_not_allowed_for_client_use() {
    let pki = Pki::new("peers");
    let tls = pki.issue(&["a"], vec![ExtendedKeyUsagePurpose::ServerAuth]);
    let err = load(&tls, "a", &["b"]).unwrap_err();
    assert!(err.problem.contains("client certificate"), "{err}");
}

#[test]
fn load_refuses_ids_that_cannot_be_dns_names() {
    let pki = Pki::new("peers");
    let tls = pki.peer(&["a"]);
    for bad in ["10.0.0.5", "node one", "b.", ""] {
        let err = load(&tls, "a", &[bad]).unwrap_err();
        assert!(
            err.problem.contains("cannot be a DNS name"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn load_names_a_missing_file() {
    let pki = Pki::new("peers");
    let mut tls = pki.peer(&["a"]);
    tls.ca = pki.dir.path().join("missing.crt");
    let err = load(&tls, "a", &["b"]).unwrap_err();
    assert_eq!((err.which, err.path), (Which::Ca, tls.ca));
}

#[test]
fn rejection_labels_are_distinct() {
    use RejectReason::*;
    let all = [
        Timeout,
        NotTls,
        NoCertificate,
        BadCertificate,
        UnknownPeer,
        AmbiguousPeer,
        WrongPeer,
        RefusedByPeer,
        Protocol,
        Closed,
    ];
    let mut labels: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), all.len());
}
