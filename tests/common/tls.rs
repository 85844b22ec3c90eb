//! TLS test kit: a throwaway PKI made with rcgen at test time (nothing that
//! can expire is checked in), rustls clients and servers, and HTTP/1.1 or
//! HTTP/2 over a TLS stream with hyper's connection API.
//!
//! Every certificate is valid from yesterday for ten years unless a test asks
//! for an expired one. The one checked-in key, `tests/fixtures/test-only-rsa2048.key`,
//! exists because rcgen's ring backend cannot generate RSA keys.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{within, TestBody};

/// The only checked-in private key: RSA, which rcgen (ring) cannot generate.
const RSA_KEY_PEM: &str = include_str!("../fixtures/test-only-rsa2048.key");

/// The kind of key a certificate is issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A fresh ECDSA P-256 key.
    Ecdsa,
    /// The RSA 2048 test fixture key.
    Rsa,
}

impl KeyKind {
    fn key_pair(self) -> KeyPair {
        match self {
            KeyKind::Ecdsa => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate P-256 key")
            }
            KeyKind::Rsa => KeyPair::from_pem(RSA_KEY_PEM).expect("load the RSA fixture key"),
        }
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for ten years.
    Current,
    /// From 30 days ago until yesterday: expired.
    Expired,
}

/// A certificate authority (ECDSA P-256) with its own temporary directory,
/// where it writes its certificate and everything it issues.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    /// `ca.crt` in [`Ca::dir`].
    pub cert: PathBuf,
    dir: tempfile::TempDir,
    issued: AtomicUsize,
}

/// An issued certificate and its key, as PEM text and as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::Current);
        let key = KeyKind::Ecdsa.key_pair();
        let cert_pem = params.self_signed(&key).expect("self-sign the CA").pem();
        let dir = tempfile::Builder::new()
            .prefix("breakwater-pki-")
            .tempdir()
            .expect("tempdir");
        let cert = dir.path().join("ca.crt");
        std::fs::write(&cert, &cert_pem).expect("write ca.crt");
        Self {
            issuer: Issuer::new(params, key),
            cert_pem,
            cert,
            dir,
            issued: AtomicUsize::new(0),
        }
    }

    /// The directory the CA writes its files to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `names` (DNS names, `*.wildcards` or IPs),
    /// valid from yesterday for ten years.
    pub fn issue(&self, names: &[&str], key: KeyKind) -> Issued {
        self.issue_with(names, key, Validity::Current)
    }

    /// A server certificate for `names` with the given validity.
    pub fn issue_with(&self, names: &[&str], key: KeyKind, validity: Validity) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid names");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, key, validity, names.first().map_or("cert", |n| n))
    }

    /// A client certificate with subject `CN=cn` and a URI SAN (SPIFFE style).
    pub fn client(&self, cn: &str, uri: &str) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("URI SAN"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, KeyKind::Ecdsa, Validity::Current, cn)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        key: KeyKind,
        validity: Validity,
        label: &str,
    ) -> Issued {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if key == KeyKind::Rsa {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        set_validity(&mut params, validity);
        let not_after = params.not_after.unix_timestamp();
        let key = key.key_pair();
        let cert_pem = params
            .signed_by(&key, &self.issuer)
            .expect("sign certificate")
            .pem();
        let key_pem = key.serialize_pem();
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let stem: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let cert = self.dir().join(format!("{n}-{stem}.crt"));
        let key_path = self.dir().join(format!("{n}-{stem}.key"));
        std::fs::write(&cert, &cert_pem).expect("write certificate");
        std::fs::write(&key_path, &key_pem).expect("write key");
        Issued {
            cert,
            key: key_path,
            cert_pem,
            key_pem,
            not_after,
        }
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("CA PEM");
        roots.add(der).expect("add CA to roots");
        roots
    }
}

/// Today (UTC) as days since the Unix epoch.
fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs / 86_400).expect("days fit")
}

/// The civil date (year, month, day) of a day count since the Unix epoch
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).expect("year fits"),
        u8::try_from(month).expect("month fits"),
        u8::try_from(day).expect("day fits"),
    )
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let date = |days: i64, plus_years: i32| {
        let (y, m, d) = civil(days);
        // 28 at most, so "ten years later" exists even from 29 February.
        rcgen::date_time_ymd(y + plus_years, m, d.min(28))
    };
    let yesterday = today() - 1;
    match validity {
        Validity::Current => {
            params.not_before = date(yesterday, 0);
            params.not_after = date(yesterday, 10);
        }
        Validity::Expired => {
            params.not_before = date(yesterday - 30, 0);
            params.not_after = date(yesterday, 0);
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// Builds a rustls `ClientConfig`: trust, ALPN, an optional client
/// certificate and the protocol versions. Session resumption is off, so
/// every handshake shows the certificate the server serves now.
pub struct ClientTls {
    roots: RootCertStore,
    any_name: bool,
    alpn: Vec<Vec<u8>>,
    identity: Option<Issued>,
    versions: &'static [&'static SupportedProtocolVersion],
}

/// TLS 1.3 and 1.2.
pub static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
pub static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
pub static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

impl ClientTls {
    /// Trusts `ca` and checks the server's name (no ALPN, TLS 1.2 and 1.3).
    pub fn trusting(ca: &Ca) -> Self {
        Self {
            roots: ca.roots(),
            any_name: false,
            alpn: Vec::new(),
            identity: None,
            versions: BOTH,
        }
    }

    /// Still checks the chain, but accepts a certificate issued for another
    /// name: for looking at which certificate a fallback serves.
    pub fn any_name(mut self) -> Self {
        self.any_name = true;
        self
    }

    pub fn alpn(mut self, protocols: &[&str]) -> Self {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    /// Presents `cert` as the client certificate.
    pub fn identity(mut self, cert: &Issued) -> Self {
        self.identity = Some(cert.clone());
        self
    }

    pub fn versions(mut self, versions: &'static [&'static SupportedProtocolVersion]) -> Self {
        self.versions = versions;
        self
    }

    pub fn build(self) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.versions)
            .expect("protocol versions");
        let builder = if self.any_name {
            let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .expect("server verifier");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some(id) => {
                let (chain, key) = pem_pair(id);
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// The chain and key of an issued certificate, as rustls wants them.
pub fn pem_pair(id: &Issued) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key PEM");
    (chain, key)
}

/// WebPKI verification that forgives a name mismatch, nothing else.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Connects and runs the handshake (bounded). `sni` that parses as an IP
/// address sends no SNI at all, as RFC 6066 requires.
pub async fn try_tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_owned()).expect("a valid server name");
    within(&format!("TLS handshake with {addr} (SNI {sni})"), async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(name, tcp).await
    })
    .await
}

/// [`try_tls_connect`] that must succeed; also returns the subject
/// alternative names of the certificate the server presented.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> (TlsStream<TcpStream>, Vec<String>) {
    let stream = try_tls_connect(addr, sni, config)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} (SNI {sni}) failed: {e}"));
    let sans = peer_sans(&stream);
    (stream, sans)
}

/// The SANs (DNS names, URIs, IPs) of the server's end-entity certificate.
pub fn peer_sans(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let (_, conn) = stream.get_ref();
    let der = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate");
    sans_of(der.as_ref())
}

/// The SANs of a DER certificate, as text.
pub fn sans_of(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).expect("an X.509 certificate");
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Expects the server to refuse this client during the handshake: either the
/// handshake fails, or (TLS 1.3, where the client finishes first) the first
/// read after sending a request fails or sees the connection close, without
/// any HTTP response. Returns what the client saw, for messages.
pub async fn refused_in_handshake(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> String {
    let mut stream = match try_tls_connect(addr, sni, config).await {
        Err(e) => return format!("handshake failed: {e}"),
        Ok(stream) => stream,
    };
    within("the server refuses after the handshake", async {
        // The write may already fail when the alert came first.
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nhost: refused.test\r\n\r\n")
            .await;
        let mut got = vec![0u8; 4096];
        match stream.read(&mut got).await {
            Err(e) => format!("first read failed: {e}"),
            Ok(0) => "closed without a response".to_owned(),
            Ok(n) => panic!(
                "the refused client got a response: {:?}",
                String::from_utf8_lossy(&got[..n])
            ),
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// A raw legacy ClientHello.

/// A TLS 1.0/1.1 ClientHello as an old client writes it: record version
/// 0x0301, `client_version` as given, no `supported_versions` and no
/// `signature_algorithms` extension (both newer than TLS 1.1), a few
/// classic suites, SNI, EC point formats and groups.
pub fn legacy_client_hello(client_version: u16, sni: &str) -> Vec<u8> {
    fn u16be(v: usize) -> [u8; 2] {
        u16::try_from(v).expect("fits in u16").to_be_bytes()
    }
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut out = kind.to_be_bytes().to_vec();
        out.extend(u16be(body.len()));
        out.extend(body);
        out
    }
    let mut server_name = vec![0u8]; // host_name
    server_name.extend(u16be(sni.len()));
    server_name.extend(sni.as_bytes());
    let mut sni_ext = u16be(server_name.len()).to_vec();
    sni_ext.extend(server_name);

    let mut extensions = extension(0x0000, &sni_ext);
    extensions.extend(extension(0x000b, &[1, 0])); // ec_point_formats: uncompressed
    extensions.extend(extension(0x000a, &[0, 4, 0x00, 0x17, 0x00, 0x18])); // P-256, P-384

    let suites: [u16; 6] = [0xc013, 0xc014, 0x002f, 0x0035, 0x000a, 0x00ff];
    let mut hello = client_version.to_be_bytes().to_vec();
    hello.extend((0u8..32).map(|i| i.wrapping_mul(7))); // random
    hello.push(0); // session id
    hello.extend(u16be(suites.len() * 2));
    for s in suites {
        hello.extend(s.to_be_bytes());
    }
    hello.extend([1, 0]); // compression: null
    hello.extend(u16be(extensions.len()));
    hello.extend(extensions);

    let len = u32::try_from(hello.len()).expect("fits").to_be_bytes();
    let mut handshake = vec![1u8, len[1], len[2], len[3]]; // ClientHello
    handshake.extend(hello);
    let mut record = vec![22u8, 0x03, 0x01]; // handshake, TLS 1.0 record layer
    record.extend(u16be(handshake.len()));
    record.extend(handshake);
    record
}

/// Writes `bytes` on a fresh TCP connection and reads until the server
/// closes it (bounded); returns everything read.
pub async fn raw_tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    within("the server closes the connection", async {
        // A reset after the alert is as good as a close.
        let _ = stream.read_to_end(&mut out).await;
    })
    .await;
    out
}

// ---------------------------------------------------------------------------
// HTTP over a TLS stream.

/// One HTTP connection over TLS, HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
pub struct HttpConn {
    sender: Sender,
    authority: String,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

/// Starts HTTP on `stream`: HTTP/2 when ALPN negotiated `h2`, else
/// HTTP/1.1. `authority` is the `Host` / `:authority` of its requests.
pub async fn http_over(stream: TlsStream<TcpStream>, authority: &str) -> HttpConn {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let sender = if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    HttpConn {
        sender,
        authority: authority.to_owned(),
    }
}

impl HttpConn {
    /// A request for `path` in the form this connection's version needs:
    /// origin-form plus `Host` on HTTP/1.1, an absolute URI on HTTP/2.
    pub fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> http::Request<TestBody> {
        let mut req = match self.sender {
            Sender::H1(_) => http::Request::builder()
                .uri(path)
                .header(http::header::HOST, &self.authority),
            Sender::H2(_) => http::Request::builder()
                .uri(format!("https://{}{path}", self.authority))
                .version(http::Version::HTTP_2),
        }
        .method(method);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(body).expect("request")
    }

    /// Sends `req` once the connection is ready; bounded.
    pub async fn send(
        &mut self,
        req: http::Request<TestBody>,
    ) -> hyper::Result<http::Response<Incoming>> {
        within("the response head arrives", async {
            match &mut self.sender {
                Sender::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
                Sender::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await
                }
            }
        })
        .await
    }

    /// GETs `path` and reads the whole response (bounded).
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (http::response::Parts, String) {
        let req = self.request(http::Method::GET, path, headers, super::full(Bytes::new()));
        let res = self
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let (parts, body) = res.into_parts();
        let body = within("the response body arrives", body.collect())
            .await
            .expect("response body")
            .to_bytes();
        (parts, String::from_utf8_lossy(&body).into_owned())
    }
}

// ---------------------------------------------------------------------------
// Servers.

/// A rustls `ServerConfig` serving `cert`, offering `alpn`, and requiring a
/// client certificate signed by `client_ca` when given.
pub fn server_config(cert: &Issued, alpn: &[&str], client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(BOTH)
        .expect("protocol versions");
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = pem_pair(cert);
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("server certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// The ALPN protocol a [`serve_tls`] connection negotiated, in each request's
/// extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAlpn(pub Option<Vec<u8>>);

/// Serves `handler` over TLS on 127.0.0.1:0 (HTTP/1.1 and HTTP/2 by what the
/// client speaks, whatever ALPN said); each request carries the connection's
/// [`NegotiatedAlpn`]. Failed handshakes are skipped. Lives until the test's
/// runtime ends.
pub async fn serve_tls<F, Fut>(config: Arc<ServerConfig>, handler: F) -> SocketAddr
where
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = NegotiatedAlpn(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(alpn.clone());
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------
// Certificates delivered as a Kubernetes Secret volume.

/// A directory laid out as kubelet's atomic writer lays out a Secret volume:
/// `..2026_01/{tls.crt,tls.key}`, `..data` → `..2026_01`, and
/// `tls.crt` → `..data/tls.crt`, `tls.key` → `..data/tls.key`.
pub struct SecretDir {
    dir: PathBuf,
    generation: usize,
}

impl SecretDir {
    pub fn new(parent: &Path, cert_pem: &str, key_pem: &str) -> Self {
        let dir = parent.join("secret");
        std::fs::create_dir(&dir).expect("create the secret dir");
        let first = Self::timestamped(1);
        Self::write_generation(&dir, &first, cert_pem, key_pem);
        std::os::unix::fs::symlink(&first, dir.join("..data")).expect("symlink ..data");
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), dir.join(file))
                .expect("symlink a file to ..data");
        }
        Self { dir, generation: 1 }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// Publishes new contents the way kubelet does: a new timestamped
    /// directory, `..data_tmp` pointing at it, renamed over `..data` (one
    /// atomic step), then the old directory removed.
    pub fn swap(&mut self, cert_pem: &str, key_pem: &str) {
        let old = Self::timestamped(self.generation);
        self.generation += 1;
        let new = Self::timestamped(self.generation);
        Self::write_generation(&self.dir, &new, cert_pem, key_pem);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old generation");
    }

    fn timestamped(generation: usize) -> String {
        format!("..2026_{generation:02}")
    }

    fn write_generation(dir: &Path, name: &str, cert_pem: &str, key_pem: &str) {
        let path = dir.join(name);
        std::fs::create_dir(&path).expect("create a generation dir");
        std::fs::write(path.join("tls.crt"), cert_pem).expect("write tls.crt");
        std::fs::write(path.join("tls.key"), key_pem).expect("write tls.key");
    }
}
