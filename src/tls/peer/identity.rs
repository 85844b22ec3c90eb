//! The identity rule (see [`super`]): which member a certificate names,
//! and the verifiers that apply it inside the handshake after rustls'
//! WebPKI checks, on both sides and to the own certificate at load.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, DnsName, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::RejectReason;

/// The node ids a certificate may name, and those we accept as peers.
#[derive(Debug, Clone)]
pub(super) struct Ids {
    pub me: String,
    /// The peers we talk to.
    pub accepted: Arc<[String]>,
    /// `me` and every member: a certificate naming two of them is refused.
    all: Arc<[String]>,
}

impl Ids {
    pub fn new(me: &str, members: &[String]) -> Result<Self, String> {
        let mut all: Vec<String> = members.to_vec();
        all.push(me.to_owned());
        all.sort();
        all.dedup();
        for id in &all {
            if id.ends_with('.') || DnsName::try_from(id.as_str()).is_err() {
                return Err(format!(
                    "node id {id:?} cannot be a DNS name in a certificate, \
                     and peers identify each other by their DNS SAN"
                ));
            }
        }
        Ok(Self {
            me: me.to_owned(),
            accepted: members.into(),
            all: all.into(),
        })
    }

    /// The one id among `me` and the members that the certificate names.
    pub fn named(&self, der: &[u8]) -> Result<&str, RejectReason> {
        let names = dns_sans(der).ok_or(RejectReason::BadCertificate)?;
        let mut found = self
            .all
            .iter()
            .filter(|id| names.iter().any(|n| n.eq_ignore_ascii_case(id)));
        match (found.next(), found.next()) {
            (Some(id), None) => Ok(id),
            (None, _) => Err(RejectReason::UnknownPeer),
            (Some(_), Some(_)) => Err(RejectReason::AmbiguousPeer),
        }
    }

    /// The accepted peer the certificate names.
    pub fn peer(&self, der: &[u8]) -> Result<String, RejectReason> {
        let id = self.named(der)?;
        if self.accepted.iter().any(|a| a == id) {
            Ok(id.to_owned())
        } else {
            Err(RejectReason::UnknownPeer)
        }
    }
}

/// The DNS SANs of a certificate, as written; None if it does not parse.
fn dns_sans(der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                out.push((*dns).to_owned());
            }
        }
    }
    Some(out)
}

/// An identity refusal, carried through rustls inside
/// `CertificateError::Other` so that [`PeerRejected::of_io`] recovers it.
#[derive(Debug)]
pub(super) struct IdentityError(pub RejectReason);

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer identity refused: {}", self.0.as_str())
    }
}

impl std::error::Error for IdentityError {}

fn identity_error(reason: RejectReason) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityError(reason),
    ))))
}

/// Verifies a dialled peer: the full WebPKI chain and name check, then the
/// identity rule, which must give the member we meant to reach.
#[derive(Debug)]
pub(super) struct ServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    ids: Ids,
}

impl ServerVerifier {
    pub fn new(
        roots: &Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
        ids: Ids,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let inner =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        Ok(Self { inner, ids })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let expected = match server_name {
            ServerName::DnsName(name) => name.as_ref(),
            _ => return Err(identity_error(RejectReason::WrongPeer)),
        };
        match self.ids.named(end_entity.as_ref()) {
            Ok(id) if id.eq_ignore_ascii_case(expected) => Ok(verified),
            Ok(_) => Err(identity_error(RejectReason::WrongPeer)),
            Err(reason) => Err(identity_error(reason)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a peer that dialled us: a certificate is required, the full
/// WebPKI chain check, then the identity rule.
#[derive(Debug)]
pub(super) struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    ids: Ids,
}

impl ClientVerifier {
    pub fn new(
        roots: &Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
        ids: Ids,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        Ok(Self { inner, ids })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.ids.peer(end_entity.as_ref()).map_err(identity_error)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks the own certificate as the others will: chained to the CA, valid
/// as server (for the name `me`) and as client, naming `me` alone.
pub(super) fn check_own(
    chain: &[CertificateDer<'static>],
    ids: &Ids,
    server: &ServerVerifier,
    client: &ClientVerifier,
) -> Result<(), String> {
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err("no certificate in it".into());
    };
    let me = ids.me.as_str();
    let name = DnsName::try_from(me.to_owned())
        .map(ServerName::DnsName)
        .map_err(|_| format!("node id {me:?} cannot be a DNS name"))?;
    let now = UnixTime::now();
    server
        .inner
        .verify_server_cert(end_entity, intermediates, &name, &[], now)
        .map_err(|e| {
            format!("the other peers would refuse it as a server certificate for {me:?}: {e}")
        })?;
    client
        .inner
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(|e| format!("the other peers would refuse it as a client certificate: {e}"))?;
    match ids.named(end_entity.as_ref()) {
        Ok(id) if id == me => Ok(()),
        Ok(other) => Err(format!(
            "it names node {other:?} as a DNS SAN; it must name {me:?}"
        )),
        Err(RejectReason::AmbiguousPeer) => Err(format!(
            "it names several node ids as DNS SANs; it must name {me:?} alone"
        )),
        Err(_) => Err(format!("it has no DNS SAN equal to the node id {me:?}")),
    }
}
