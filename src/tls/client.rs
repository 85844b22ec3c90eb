//! TLS to `https://` upstreams: trust (a CA bundle, else the system's roots),
//! the name to verify and send as SNI, ALPN, an optional client certificate,
//! and the stream type the upstream connector hands to hyper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::certs::{self, CertError, Which};
use crate::config::{Protocol, Upstream};

/// How to speak TLS to one upstream.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// Builds the client side for an `https://` upstream; None for `http://`.
    pub fn new(up: &Upstream) -> Result<Option<Self>, CertError> {
        if up.url.scheme_str() != Some("https") {
            return Ok(None);
        }
        let provider = super::crypto();
        let tls = up.tls.clone().unwrap_or_default();
        let roots = match &tls.ca {
            Some(path) => certs::roots(Which::Ca, path, &certs::read(Which::Ca, path)?)?,
            None => system_roots(&up.name)?,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(super::VERSIONS)
            .map_err(|e| CertError {
                which: Which::Ca,
                path: Default::default(),
                problem: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => {
                let loaded = certs::load(&provider, cert, key, certs::unix_now())?;
                let chain = loaded.key.cert.clone();
                let key_der = certs::parse_key(key, &certs::read(Which::Key, key)?)?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| CertError {
                        which: Which::Key,
                        path: key.clone(),
                        problem: e.to_string(),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match up.protocol {
            Protocol::Http2 => vec![b"h2".to_vec()],
            Protocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        let host = match &tls.server_name {
            Some(name) => name.clone(),
            None => up
                .url
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        };
        let server_name = ServerName::try_from(host.clone()).map_err(|_| CertError {
            which: Which::Ca,
            path: Default::default(),
            problem: format!("{host:?} is not a valid TLS server name"),
        })?;
        Ok(Some(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        }))
    }

    /// Runs the handshake over a connected socket.
    pub async fn connect(&self, tcp: TcpStream) -> io::Result<UpstreamStream> {
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(UpstreamStream::Tls(Box::new(tls)))
    }
}

/// The platform's trusted CAs (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the
/// distribution's bundle), read once per upstream build.
fn system_roots(upstream: &str) -> Result<rustls::RootCertStore, CertError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(CertError {
            which: Which::Ca,
            path: Default::default(),
            problem: format!(
                "no trusted CA certificates found on this system for upstream {upstream}; \
                 set upstreams.{upstream}.tls.ca to a PEM bundle"
            ),
        });
    }
    Ok(store)
}

/// A connection to an upstream: plain TCP or TLS over it.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(tcp) => tcp.connected(),
            UpstreamStream::Tls(tls) => {
                let (tcp, conn) = tls.get_ref();
                let connected = tcp.connected();
                if conn.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
