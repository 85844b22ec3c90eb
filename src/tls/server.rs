//! TLS termination for one listener: the live rustls server config (swapped
//! whole when the certificate files change), the handshake with its timeout,
//! and the accounting of handshakes and their failures.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::certs::{self, CertError, Loaded, PeerIdentity, Which};
use crate::config::ListenerTls;
use crate::metrics::TlsMetrics;

/// How often the certificate files are read back to see if they changed.
/// Reading a few small files once a second costs nothing measurable, and
/// unlike change notifications it follows every way a file can be replaced
/// (rename, symlink swap as Kubernetes does with `..data`, bind mounts).
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// At most one handshake-failure log line per listener this often; the
/// failures in between are counted and summed into the next line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// TLS termination for one listener.
pub struct TlsListener {
    name: Arc<str>,
    config: ListenerTls,
    forward_client_cert: bool,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<ServerConfig>,
    /// Kept across reloads, so session tickets and cached sessions stay
    /// valid when the certificate changes.
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions + Send + Sync>,
    watch: Mutex<Watched>,
    metrics: TlsMetrics,
    log: LogBudget,
}

/// What the watcher last saw.
struct Watched {
    /// Fingerprint of the file contents last loaded or tried.
    seen: u64,
    /// Certificate labels whose expiry gauge is exported.
    labels: Vec<String>,
}

/// A connection whose handshake completed.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The client's verified certificate (mTLS listeners only).
    pub identity: Option<Arc<PeerIdentity>>,
    /// `x-forwarded-client-cert` for this connection's requests, when the
    /// listener forwards it and the client presented a certificate.
    pub xfcc: Option<HeaderValue>,
}

/// Why a handshake did not complete; the label of the failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    Timeout,
    /// The client offered only protocol versions we refuse (TLS 1.1 and older).
    ProtocolVersion,
    /// No cipher suite, key exchange group or signature scheme in common.
    NoSharedCipher,
    /// No ALPN protocol in common.
    NoApplicationProtocol,
    /// mTLS: the client sent no certificate.
    NoClientCertificate,
    /// mTLS: the client's certificate is not signed by the CA, expired, …
    BadClientCertificate,
    /// The client aborted with an alert (e.g. it does not trust our certificate).
    AlertReceived,
    /// The bytes were not TLS (plain HTTP to a TLS port, say).
    NotTls,
    /// A protocol violation.
    Protocol,
    /// The connection closed or failed mid-handshake.
    Closed,
}

impl HandshakeError {
    pub fn reason(self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::ProtocolVersion => "protocol_version",
            HandshakeError::NoSharedCipher => "no_shared_cipher",
            HandshakeError::NoApplicationProtocol => "no_application_protocol",
            HandshakeError::NoClientCertificate => "no_client_certificate",
            HandshakeError::BadClientCertificate => "bad_client_certificate",
            HandshakeError::AlertReceived => "alert_received",
            HandshakeError::NotTls => "not_tls",
            HandshakeError::Protocol => "protocol_error",
            HandshakeError::Closed => "connection_closed",
        }
    }

    fn of(e: &std::io::Error) -> Self {
        use rustls::{Error as E, InvalidMessage, PeerIncompatible as P};
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
            return HandshakeError::Closed;
        };
        match tls {
            E::PeerIncompatible(
                P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
                | P::Tls13RequiredForQuic
                | P::SupportedVersionsExtensionRequired
                // Sent by every TLS 1.2+ client; its absence marks TLS 1.1
                // and older, which rustls notices before the version.
                | P::SignatureAlgorithmsExtensionRequired,
            ) => HandshakeError::ProtocolVersion,
            E::PeerIncompatible(_) => HandshakeError::NoSharedCipher,
            E::NoApplicationProtocol => HandshakeError::NoApplicationProtocol,
            E::NoCertificatesPresented => HandshakeError::NoClientCertificate,
            E::InvalidCertificate(_) => HandshakeError::BadClientCertificate,
            E::AlertReceived(_) => HandshakeError::AlertReceived,
            E::InvalidMessage(InvalidMessage::InvalidContentType) => HandshakeError::NotTls,
            _ => HandshakeError::Protocol,
        }
    }
}

impl TlsListener {
    /// Loads the listener's certificates (and client CA) and starts watching
    /// the files. Fails when any file cannot be used.
    pub fn new(
        name: &str,
        config: &ListenerTls,
        metrics: TlsMetrics,
    ) -> Result<Arc<Self>, CertError> {
        let provider = super::crypto();
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| CertError {
            which: Which::Cert,
            path: config.certificates[0].cert.clone(),
            problem: format!("cannot set up session tickets: {e}"),
        })?;
        let (seen, files) = read_files(config);
        let material = parse(config, files)?;
        let sessions: Arc<dyn StoresServerSessions + Send + Sync> =
            ServerSessionMemoryCache::new(4096);
        let server = build(&provider, &material, ticketer.clone(), sessions.clone())?;
        let listener = Arc::new(Self {
            name: name.into(),
            config: config.clone(),
            forward_client_cert: config.forward_client_cert,
            provider,
            current: ArcSwap::from_pointee(server),
            ticketer,
            sessions,
            watch: Mutex::new(Watched {
                seen,
                labels: Vec::new(),
            }),
            metrics,
            log: LogBudget::new(),
        });
        listener.publish_expiry(&material.certs);
        tokio::spawn(watch(Arc::downgrade(&listener)));
        Ok(listener)
    }

    /// The configuration it was built from (reloads keep an unchanged one).
    pub fn config(&self) -> &ListenerTls {
        &self.config
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    /// Re-reads the files now (SIGHUP) whether or not they changed.
    pub fn reload(&self) {
        self.check_files(true);
    }

    /// Reads the files; when they changed since last time (or `force`),
    /// builds a new server config and swaps it in. New handshakes use it;
    /// established connections keep theirs. A file that cannot be used keeps
    /// the previous config, and says why once per change.
    fn check_files(&self, force: bool) {
        let (seen, files) = read_files(&self.config);
        let mut watched = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        if seen == watched.seen && !force {
            return;
        }
        watched.seen = seen;
        drop(watched);
        let built = parse(&self.config, files).and_then(|m| {
            build(
                &self.provider,
                &m,
                self.ticketer.clone(),
                self.sessions.clone(),
            )
            .map(|server| (server, m))
        });
        match built {
            Ok((server, material)) => {
                self.current.store(Arc::new(server));
                self.publish_expiry(&material.certs);
                self.metrics.reload(&self.name, true);
                let names: Vec<&str> = material.certs.iter().map(|c| c.label.as_str()).collect();
                tracing::info!(listener = %self.name, certificates = ?names, "TLS certificates reloaded");
            }
            Err(e) => {
                self.metrics.reload(&self.name, false);
                tracing::error!(
                    listener = %self.name,
                    file = %e.path.display(),
                    error = %e.problem,
                    "TLS reload refused; the previous certificates keep serving"
                );
            }
        }
    }

    fn publish_expiry(&self, certs: &[Loaded]) {
        let mut watched = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        for old in watched.labels.drain(..) {
            self.metrics.forget_expiry(&self.name, &old);
        }
        for c in certs {
            self.metrics.expiry(&self.name, &c.label, c.not_after);
            watched.labels.push(c.label.clone());
        }
    }

    /// Runs the handshake within the handshake timeout. Failures are counted
    /// by reason and logged at a bounded rate.
    pub async fn accept(&self, stream: TcpStream, peer: SocketAddr) -> Option<Accepted> {
        let acceptor = TlsAcceptor::from(self.current.load_full());
        let outcome = tokio::time::timeout(self.config.handshake_timeout, acceptor.accept(stream))
            .await
            .map_err(|_| (HandshakeError::Timeout, None))
            .and_then(|r| r.map_err(|e| (HandshakeError::of(&e), Some(e))));
        match outcome {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                let version = match conn.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "other",
                };
                self.metrics.handshake(&self.name, version);
                let identity = conn
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|der| certs::peer_identity(der.as_ref()))
                    .map(Arc::new);
                let xfcc = identity
                    .as_deref()
                    .filter(|_| self.forward_client_cert)
                    .and_then(|id| HeaderValue::try_from(xfcc(id)).ok());
                Some(Accepted {
                    stream,
                    identity,
                    xfcc,
                })
            }
            Err((reason, error)) => {
                self.metrics.handshake_error(&self.name, reason.reason());
                if let Some(suppressed) = self.log.allow() {
                    let error = error.map_or_else(
                        || format!("no handshake within {:?}", self.config.handshake_timeout),
                        |e| e.to_string(),
                    );
                    tracing::warn!(
                        listener = %self.name,
                        %peer,
                        reason = reason.reason(),
                        %error,
                        suppressed,
                        "TLS handshake failed"
                    );
                }
                None
            }
        }
    }
}

/// Polls the files until the listener is gone.
async fn watch(listener: Weak<TlsListener>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(listener) = listener.upgrade() else {
            return;
        };
        // File reads block; a few small files are fine on the blocking pool.
        let _ = tokio::task::spawn_blocking(move || listener.check_files(false)).await;
    }
}

/// Everything a server config is built from.
struct Material {
    certs: Vec<Loaded>,
    client_ca: Option<rustls::RootCertStore>,
}

/// A file's bytes, or why it could not be read.
type Read = Result<Vec<u8>, CertError>;

/// The raw contents of a listener's files.
struct Files {
    /// (cert, key) per configured certificate.
    certificates: Vec<(Read, Read)>,
    client_ca: Option<Read>,
}

/// Reads every file of the listener, and a fingerprint of what was read
/// (read errors included), so unchanged files are not parsed again.
fn read_files(config: &ListenerTls) -> (u64, Files) {
    let mut hasher = DefaultHasher::new();
    let mut read = |which, path: &std::path::Path| {
        let bytes = certs::read(which, path);
        match &bytes {
            Ok(b) => b.hash(&mut hasher),
            Err(e) => e.problem.hash(&mut hasher),
        }
        bytes
    };
    let files = Files {
        certificates: config
            .certificates
            .iter()
            .map(|c| (read(Which::Cert, &c.cert), read(Which::Key, &c.key)))
            .collect(),
        client_ca: config.client_ca.as_ref().map(|path| read(Which::Ca, path)),
    };
    (hasher.finish(), files)
}

/// Parses and checks what [`read_files`] read.
fn parse(config: &ListenerTls, files: Files) -> Result<Material, CertError> {
    let provider = super::crypto();
    let now = certs::unix_now();
    let mut loaded = Vec::with_capacity(files.certificates.len());
    for (c, (cert, key)) in config.certificates.iter().zip(files.certificates) {
        let (cert, key) = (cert?, key?);
        loaded.push(certs::certified_key(
            &provider, &c.cert, &cert, &c.key, &key, now,
        )?);
    }
    let client_ca = match (&config.client_ca, files.client_ca) {
        (Some(path), Some(pem)) => Some(certs::roots(Which::Ca, path, &pem?)?),
        _ => None,
    };
    Ok(Material {
        certs: loaded,
        client_ca,
    })
}

fn build(
    provider: &Arc<CryptoProvider>,
    material: &Material,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions + Send + Sync>,
) -> Result<ServerConfig, CertError> {
    let problem = |which, path: &std::path::Path, e: &dyn std::fmt::Display| CertError {
        which,
        path: path.to_owned(),
        problem: e.to_string(),
    };
    let first = material.certs.first().ok_or_else(|| CertError {
        which: Which::Cert,
        path: std::path::PathBuf::new(),
        problem: "no certificate configured".into(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| problem(Which::Cert, std::path::Path::new(&first.label), &e))?;
    let builder = match &material.client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots.clone()),
                provider.clone(),
            )
            .build()
            .map_err(|e| problem(Which::Ca, std::path::Path::new("client_ca"), &e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(&material.certs)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = ticketer;
    config.session_storage = sessions;
    // Our suite order (AEAD, strongest key exchange first) wins.
    config.ignore_client_order = true;
    Ok(config)
}

/// Picks the certificate for a client's SNI name: an exact name, else a
/// wildcard one level up, else the first configured certificate. Among
/// certificates for the same name, the first whose key the client can
/// verify (RSA vs ECDSA) wins.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    fallback: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(certs: &[Loaded]) -> Self {
        let mut exact: HashMap<String, Vec<_>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<_>> = HashMap::new();
        for c in certs {
            for name in &c.names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_default(),
                    None => exact.entry(name.clone()).or_default(),
                }
                .push(c.key.clone());
            }
        }
        Self {
            exact,
            wildcard,
            fallback: certs.iter().map(|c| c.key.clone()).collect(),
        }
    }

    fn candidates(&self, sni: Option<&str>) -> &[Arc<CertifiedKey>] {
        let Some(name) = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return &self.fallback;
        };
        if let Some(found) = self.exact.get(&name) {
            return found;
        }
        let parent = name.split_once('.').map(|(_, p)| p);
        parent
            .and_then(|p| self.wildcard.get(p))
            .map_or(&self.fallback, Vec::as_slice)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let candidates = self.candidates(hello.server_name());
        let schemes = hello.signature_schemes();
        candidates
            .iter()
            .find(|c| c.key.choose_scheme(schemes).is_some())
            .or_else(|| candidates.first())
            .cloned()
    }
}

/// Envoy's `x-forwarded-client-cert` with the fields we set: `Hash`,
/// `Subject`, `URI` and `DNS` (each SAN repeated).
pub fn xfcc(id: &PeerIdentity) -> String {
    let mut out = format!("Hash={};Subject=\"{}\"", id.hash, escape(&id.subject));
    for uri in &id.uris {
        out.push_str(";URI=");
        out.push_str(&quote_if_needed(uri));
    }
    for dns in &id.dns {
        out.push_str(";DNS=");
        out.push_str(&quote_if_needed(dns));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn quote_if_needed(s: &str) -> String {
    if s.contains([',', ';', '=', '"']) {
        format!("\"{}\"", escape(s))
    } else {
        s.to_owned()
    }
}

/// Allows one log line per [`LOG_EVERY`], counting what it held back.
struct LogBudget {
    start: Instant,
    /// Milliseconds since `start` of the last line, plus one (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogBudget {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Some(number held back since the last line) when a line may be written now.
    fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_quotes_subject_and_values_with_separators() {
        let id = PeerIdentity {
            subject: "CN=client \"x\", O=Acme".into(),
            uris: vec!["spiffe://acme/ns/a".into()],
            dns: vec!["a.example".into(), "b;c".into()],
            hash: "ab12".into(),
        };
        assert_eq!(
            xfcc(&id),
            "Hash=ab12;Subject=\"CN=client \\\"x\\\", O=Acme\";URI=spiffe://acme/ns/a;DNS=a.example;DNS=\"b;c\""
        );
    }

    #[tokio::test(start_paused = true)]
    async fn log_budget_allows_one_line_per_period_and_counts_the_rest() {
        let budget = LogBudget::new();
        assert_eq!(budget.allow(), Some(0));
        assert_eq!(budget.allow(), None);
        assert_eq!(budget.allow(), None);
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(budget.allow(), Some(2));
        assert_eq!(budget.allow(), None);
    }
}
