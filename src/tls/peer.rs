//! Mutual TLS between lease peers (LEASES.md §3.8): the server and client
//! configs built from `cluster.tls`, and the rule that turns a verified
//! certificate into a node id.
//!
//! **Identity rule.** A peer is the member whose node id appears verbatim
//! (ASCII case aside) as a DNS subject alternative name of its end-entity
//! certificate, and that certificate must chain to `cluster.tls.ca`.
//! Wildcards, the common name and URI SANs never name a peer. A certificate
//! that names no member, or more than one, is refused: one certificate per
//! node, so no node can speak as another. Other DNS SANs (a host name, say)
//! are allowed and ignored.
//!
//! Each node both accepts and dials with the same certificate, so it must
//! allow both `serverAuth` and `clientAuth` (or carry no extended key usage);
//! [`PeerTlsConfig::load`] checks the own certificate against the CA in both
//! roles, so a certificate the others would refuse fails at start.
//!
//! The checks run inside the handshake (verifiers wrapping rustls' WebPKI
//! ones, which do the full chain validation), so a refused peer gets a TLS
//! alert rather than a silent close. TLS 1.3 only and no session resumption:
//! peer connections are few and long-lived, and each one is verified in full.
//! Generic over the byte stream, so a simulated network can carry it too.

mod identity;

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{CertificateError, ClientConfig, OtherError, ServerConfig};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use self::identity::{check_own, ClientVerifier, IdentityError, Ids, ServerVerifier};
use super::certs::{self, CertError, Which};
use crate::config::PeerTls;

/// Peers speak TLS 1.3 only: both ends are ours.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The ALPN protocol of the peer port, so that neither an HTTPS client nor a
/// peer of another protocol generation gets past the handshake by accident.
const ALPN: &[u8] = b"breakwater-peer/1";

/// Mutual TLS for the peer protocol: accepts members, dials members.
pub struct PeerTlsConfig {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    ids: Ids,
}

impl fmt::Debug for PeerTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTlsConfig")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

impl PeerTlsConfig {
    /// Loads `cluster.tls` for node `me`, accepting the peers `members`
    /// (the other nodes; list `me` too only to talk to yourself, as a test
    /// may). Fails when a file cannot be used, when an id cannot be a DNS
    /// name, and when the own certificate does not chain to the CA, is not
    /// usable as both server and client certificate, or does not name `me`
    /// alone among the members: the others would refuse it.
    pub fn load(tls: &PeerTls, me: &str, members: &[String]) -> Result<Self, CertError> {
        let provider = super::crypto();
        let cert_pem = certs::read(Which::Cert, &tls.cert)?;
        let key_pem = certs::read(Which::Key, &tls.key)?;
        let now = certs::unix_now();
        let loaded =
            certs::certified_key(&provider, &tls.cert, &cert_pem, &tls.key, &key_pem, now)?;
        let chain = loaded.key.cert.clone();
        let key = certs::parse_key(&tls.key, &key_pem)?;
        let ca_pem = certs::read(Which::Ca, &tls.ca)?;
        let roots = Arc::new(certs::roots(Which::Ca, &tls.ca, &ca_pem)?);
        let cert_error = |problem: String| CertError {
            which: Which::Cert,
            path: tls.cert.clone(),
            problem,
        };
        let ca_error = |problem: String| CertError {
            which: Which::Ca,
            path: tls.ca.clone(),
            problem,
        };
        let ids = Ids::new(me, members).map_err(cert_error)?;
        let server_verifier = ServerVerifier::new(&roots, &provider, ids.clone())
            .map_err(|e| ca_error(e.to_string()))?;
        let client_verifier = ClientVerifier::new(&roots, &provider, ids.clone())
            .map_err(|e| ca_error(e.to_string()))?;
        check_own(&chain, &ids, &server_verifier, &client_verifier).map_err(cert_error)?;
        let server = server_config(&provider, client_verifier, chain.clone(), key.clone_key())
            .map_err(|e| cert_error(e.to_string()))?;
        let client = client_config(&provider, server_verifier, chain, key)
            .map_err(|e| cert_error(e.to_string()))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            ids,
        })
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.ids.me
    }

    /// Runs the server side of the handshake on an accepted connection and
    /// returns the stream with the peer's authenticated id. Not bounded in
    /// time here: the caller puts a timeout around it.
    pub async fn accept<S>(&self, io: S) -> Result<(PeerStream<S>, String), PeerRejected>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let tls = self
            .acceptor
            .accept(io)
            .await
            .map_err(|e| PeerRejected::of_io(&e))?;
        let (_, conn) = tls.get_ref();
        // The verifier vetted the certificate; read the id off it again.
        let der = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or(PeerRejected::new(RejectReason::NoCertificate))?;
        let id = self.ids.peer(der.as_ref()).map_err(PeerRejected::new)?;
        let stream = PeerStream {
            inner: TlsStream::Server(tls),
            peer: id.clone(),
        };
        Ok((stream, id))
    }

    /// Runs the client side of the handshake to the peer `expected`, whose
    /// certificate must name it (it is also the SNI). Not bounded in time.
    ///
    /// In TLS 1.3 the client finishes before the server has judged the
    /// client's certificate, so a refusal by the server shows on the first
    /// read ([`RejectReason::RefusedByPeer`]).
    pub async fn connect<S>(&self, io: S, expected: &str) -> Result<PeerStream<S>, PeerRejected>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        if !self.ids.accepted.iter().any(|id| id == expected) {
            return Err(PeerRejected::new(RejectReason::UnknownPeer));
        }
        let name = DnsName::try_from(expected.to_owned())
            .map_err(|_| PeerRejected::new(RejectReason::UnknownPeer))?;
        let tls = self
            .connector
            .connect(ServerName::DnsName(name), io)
            .await
            .map_err(|e| PeerRejected::of_io(&e))?;
        Ok(PeerStream {
            inner: TlsStream::Client(tls),
            peer: expected.to_owned(),
        })
    }
}

/// Why a peer connection was refused or failed during the handshake; the
/// `reason` label of the rejection counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No handshake within the caller's bound.
    Timeout,
    /// The bytes were not TLS.
    NotTls,
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to the CA, has expired, or may not be
    /// used for this role.
    BadCertificate,
    /// The certificate names no member id (or only our own).
    UnknownPeer,
    /// The certificate names several member ids.
    AmbiguousPeer,
    /// The server we dialled is another member than the one we meant.
    WrongPeer,
    /// The other side aborted with an alert: it refused us.
    RefusedByPeer,
    /// Any other TLS failure (no common version, cipher or ALPN, ...).
    Protocol,
    /// The connection closed or failed mid-handshake.
    Closed,
}

impl RejectReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Timeout => "timeout",
            RejectReason::NotTls => "not_tls",
            RejectReason::NoCertificate => "no_certificate",
            RejectReason::BadCertificate => "bad_certificate",
            RejectReason::UnknownPeer => "unknown_peer",
            RejectReason::AmbiguousPeer => "ambiguous_peer",
            RejectReason::WrongPeer => "wrong_peer",
            RejectReason::RefusedByPeer => "refused_by_peer",
            RejectReason::Protocol => "protocol_error",
            RejectReason::Closed => "connection_closed",
        }
    }
}

/// A peer connection that did not get through the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRejected {
    pub reason: RejectReason,
}

impl PeerRejected {
    /// A rejection for `reason`.
    pub fn new(reason: RejectReason) -> Self {
        Self { reason }
    }

    /// Classifies an I/O error of a peer TLS stream, in the handshake or on
    /// the first read after it.
    pub fn of_io(e: &io::Error) -> Self {
        use rustls::{Error as E, InvalidMessage};
        let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
            return Self::new(RejectReason::Closed);
        };
        Self::new(match tls {
            E::InvalidCertificate(CertificateError::Other(OtherError(other))) => other
                .downcast_ref::<IdentityError>()
                .map_or(RejectReason::BadCertificate, |e| e.0),
            E::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => RejectReason::WrongPeer,
            E::InvalidCertificate(_) => RejectReason::BadCertificate,
            E::NoCertificatesPresented => RejectReason::NoCertificate,
            E::AlertReceived(_) => RejectReason::RefusedByPeer,
            E::InvalidMessage(InvalidMessage::InvalidContentType) => RejectReason::NotTls,
            _ => RejectReason::Protocol,
        })
    }
}

impl fmt::Display for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer refused: {}", self.reason.as_str())
    }
}

impl std::error::Error for PeerRejected {}

/// A peer connection after the handshake, tagged with the authenticated id.
pub struct PeerStream<S> {
    inner: TlsStream<S>,
    peer: String,
}

impl<S> PeerStream<S> {
    /// The authenticated id of the other end.
    pub fn peer_id(&self) -> &str {
        &self.peer
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PeerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PeerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    verifier: ClientVerifier,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    verifier: ServerVerifier,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests;
