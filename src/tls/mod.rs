//! TLS: termination on listeners (certificates by SNI, ALPN, mTLS, reload
//! when the files change) and TLS to upstreams. This is the only module that
//! touches rustls types; the rest of the proxy sees [`TlsListener`],
//! [`Accepted`], [`UpstreamTls`], [`PeerTlsConfig`] (mutual TLS between lease
//! peers) and plain strings.
//!
//! The crypto provider is rustls' `ring` backend: it builds with nothing but
//! a C compiler (aws-lc-rs wants cmake and a much longer build, which the
//! README's first command on a fresh machine cannot assume), and it has every
//! primitive we allow: TLS 1.3 and 1.2, ECDHE + AEAD suites only, X25519,
//! P-256 and P-384.

pub mod certs;
mod client;
pub mod peer;
mod server;

use std::sync::Arc;

use rustls::crypto::{ring as provider, CryptoProvider};

pub use certs::{CertError, PeerIdentity, Which};
pub use client::{UpstreamStream, UpstreamTls};
pub use peer::{PeerRejected, PeerStream, PeerTlsConfig, RejectReason};
pub use server::{Accepted, HandshakeError, TlsListener};

/// Protocol versions we speak: TLS 1.3 and 1.2, nothing older.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider with exactly the suites and groups we allow.
pub fn crypto() -> Arc<CryptoProvider> {
    use provider::cipher_suite::*;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
            // TLS 1.2: forward secrecy (ECDHE) and AEAD only.
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            provider::kx_group::X25519,
            provider::kx_group::SECP256R1,
            provider::kx_group::SECP384R1,
        ],
        ..provider::default_provider()
    })
}

/// Checks a listener certificate entry as `validate` does: both files
/// readable, parsable, matching, not expired.
pub fn check_certificate(cert: &std::path::Path, key: &std::path::Path) -> Result<(), CertError> {
    certs::load(&crypto(), cert, key, certs::unix_now()).map(|_| ())
}

/// Checks a CA bundle as `validate` does.
pub fn check_ca(which: Which, path: &std::path::Path) -> Result<(), CertError> {
    let pem = certs::read(which, path)?;
    certs::roots(which, path, &pem).map(|_| ())
}

#[cfg(test)]
mod tests;
