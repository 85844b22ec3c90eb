//! Accepting connections: one task per listener, one per connection, each
//! connection served by hyper-util's auto builder (HTTP/1.1, or HTTP/2 by
//! prior knowledge) with limits set deliberately, and drained on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::framing::{Inspect, Verdict};
use super::handler::{self, ConnInfo};
use super::Generation;
use crate::config::{Limits, Listener};
use crate::tls::{PeerIdentity, TlsListener};

/// The connection settings of one listener, built once per config load.
pub struct ListenerSettings {
    pub builder: auto::Builder<TokioExecutor>,
    pub body_timeout: Duration,
    pub header_timeout: Duration,
    pub max_headers: usize,
    /// The largest request head hyper buffers; the framing inspector stops
    /// looking past it (hyper answers 431 there).
    pub max_head_bytes: usize,
    /// TLS termination, on listeners with `tls:`.
    pub tls: Option<Arc<TlsListener>>,
}

impl ListenerSettings {
    pub fn new(cfg: &Listener, limits: &Limits, tls: Option<Arc<TlsListener>>) -> Self {
        let max_head_bytes = limits.max_header_bytes.max(8192);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The request head must arrive within this (slowloris).
            .header_read_timeout(cfg.header_timeout)
            // Heads beyond these limits get 431 from hyper and the connection closes.
            .max_headers(limits.max_headers)
            .max_buf_size(max_head_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            // Bounded concurrent streams per connection.
            .max_concurrent_streams(256)
            // Rapid reset (CVE-2023-44487): streams reset by the client before
            // we accept them are capped; beyond that the connection is closed.
            .max_pending_accept_reset_streams(Some(20))
            // MadeYouReset (CVE-2025-8671): streams we must reset because the
            // client broke the protocol are capped the same way.
            .max_local_error_reset_streams(Some(256))
            // HPACK and CONTINUATION: a decoded header list beyond this is
            // refused; h2 also bounds the CONTINUATION frames it buffers.
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            // Per-stream send buffer: bounds memory when a client reads slowly.
            .max_send_buf_size(256 * 1024)
            // SETTINGS and PING floods are bounded inside h2 (pending ACKs are
            // capped and a flood closes the connection); keep-alive pings find
            // dead peers.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self {
            builder,
            body_timeout: cfg.body_timeout,
            header_timeout: cfg.header_timeout,
            max_headers: limits.max_headers,
            max_head_bytes,
            tls,
        }
    }
}

/// Shared state every connection needs.
pub struct Shared {
    pub current: ArcSwap<Generation>,
    /// Flips to `true` when the proxy drains; connections then finish their
    /// in-flight requests and close (h2: GOAWAY).
    pub drain: watch::Sender<bool>,
}

/// Accepts connections until `stop` flips, serving each with the settings
/// the current generation holds for this listener.
pub async fn accept_loop(
    shared: Arc<Shared>,
    name: Arc<str>,
    settings: Arc<ArcSwap<ListenerSettings>>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    open: IntGauge,
) {
    loop {
        let accepted = tokio::select! {
            () = until_set(&mut stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: not
                // fatal; back off briefly so a full table does not spin.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let settings = settings.load_full();
        let open = open.clone();
        // Subscribed before the task runs, so a drain that starts now waits
        // for this connection too.
        let drain = shared.drain.subscribe();
        tokio::spawn(async move {
            open.inc();
            match settings.tls.clone() {
                None => serve_connection(shared, settings, stream, peer, drain, None).await,
                Some(tls) => {
                    if let Some(accepted) = tls.accept(stream, peer).await {
                        let client = ClientTls {
                            identity: accepted.identity,
                            xfcc: accepted.xfcc,
                        };
                        let stream = accepted.stream;
                        serve_connection(shared, settings, stream, peer, drain, Some(client)).await;
                    }
                }
            }
            open.dec();
        });
    }
    tracing::info!(listener = %name, "listener closed");
}

/// What a TLS connection tells the request path about its client.
struct ClientTls {
    identity: Option<Arc<PeerIdentity>>,
    xfcc: Option<http::HeaderValue>,
}

/// Serves HTTP on an accepted connection; `tls` is Some on TLS listeners.
async fn serve_connection<S>(
    shared: Arc<Shared>,
    settings: Arc<ListenerSettings>,
    stream: S,
    peer: SocketAddr,
    mut drain: watch::Receiver<bool>,
    tls: Option<ClientTls>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = ConnInfo {
        peer,
        proto: if tls.is_some() { "https" } else { "http" },
        body_timeout: settings.body_timeout,
        max_headers: settings.max_headers,
        client: tls.as_ref().and_then(|t| t.identity.clone()),
        client_cert: tls.and_then(|t| t.xfcc),
    };
    // hyper normalises some ambiguous HTTP/1 framing (CL+TE, repeated
    // Content-Length) before the service sees it; the inspector reads the raw
    // bytes so such requests are refused instead of forwarded.
    let verdict = Verdict::new();
    let io = Inspect::new(
        stream,
        verdict.clone(),
        settings.max_head_bytes,
        settings.header_timeout,
    );
    let requests = Arc::new(AtomicU64::new(0));
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| {
            let gen = shared.current.load_full();
            let clean = !verdict.is_bad(requests.fetch_add(1, Ordering::Relaxed));
            // Boxed so an idle keep-alive connection does not keep room for
            // a whole request's state (hyper keeps the in-flight slot).
            let served = Box::pin(handler::handle(
                gen,
                info.clone(),
                clean,
                req,
                shared.drain.clone(),
            ));
            async move { Ok::<_, Infallible>(served.await) }
        })
    };
    let conn = settings
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            log_conn_end(peer, res);
            return;
        }
        () = until_set(&mut drain) => {}
    }
    conn.as_mut().graceful_shutdown();
    log_conn_end(peer, conn.await);
}

fn log_conn_end(peer: SocketAddr, res: Result<(), crate::BoxError>) {
    if let Err(e) = res {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once the flag is `true` (or its sender is gone).
pub async fn until_set(flag: &mut watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            return;
        }
    }
}
