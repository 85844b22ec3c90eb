//! The innermost service of a route's stack: sends the request to the
//! upstream — hop-by-hop headers out, `x-forwarded-*` and `x-request-id` in,
//! the body streamed under the listener's body deadline — and names what
//! went wrong when it fails.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Either};
use tokio::time::Instant;
use tower::Service;

use super::body::{BodyTimeout, Deadline};
use super::error::{self, ProxyError};
use super::handler::REQUEST_ID;
use super::upgrade;
use super::upstream::{self, Forwarded, Upstream};
use crate::config::Protocol;
use crate::resilience::{Exchange, Outcome, Served};

/// Envoy's header for the client certificate's identity.
const XFCC: http::header::HeaderName =
    http::header::HeaderName::from_static("x-forwarded-client-cert");

/// Forwards exchanges to one upstream.
#[derive(Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
}

impl Forward {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }
}

impl Service<Exchange> for Forward {
    type Response = Served;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Outcome> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The pooled client queues internally; readiness is per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        Box::pin(forward(self.upstream.clone(), ex))
    }
}

async fn forward(up: Arc<Upstream>, ex: Exchange) -> Outcome {
    let Exchange {
        mut req,
        conn,
        request_id,
        upload,
        ..
    } = ex;
    let tunnel = upgrade::is_websocket(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    if let Some(host) = absolute_form_host(&parts.uri) {
        // RFC 9112 §3.2.2: an absolute-form target replaces the received Host.
        parts.headers.insert(HOST, host);
    }
    let host = parts.headers.get(HOST).cloned();
    let client_authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| host.as_ref().and_then(|h| h.to_str().ok()?.parse().ok()));
    let fwd_host = host.or_else(|| {
        let a = client_authority.as_ref()?;
        HeaderValue::from_str(a.as_str()).ok()
    });
    // The pool is keyed by the URI's authority. HTTP/1 requests carry the
    // client's Host header unchanged, so their URI names the upstream: one
    // pool per upstream, whatever Host clients send. HTTP/2 has no Host
    // header; `:authority` comes from the URI, so it keeps the client's.
    let authority = match (up.protocol, client_authority) {
        (Protocol::Http2, Some(a)) => a,
        _ => up.authority.clone(),
    };
    upstream::strip_hop_by_hop(&mut parts.headers, tunnel.is_some());
    upstream::add_forwarded(
        &mut parts.headers,
        &Forwarded {
            client_ip: conn.peer.ip(),
            proto: conn.proto,
            host: fwd_host.as_ref(),
        },
    );
    // Only the proxy vouches for a client certificate; a client-sent copy
    // is never passed on.
    parts.headers.remove(XFCC);
    if let Some(cert) = &conn.client_cert {
        parts.headers.insert(XFCC, cert.clone());
    }
    parts.headers.insert(REQUEST_ID, request_id);
    let mut uri = Uri::builder()
        .scheme(up.scheme.clone())
        .authority(authority);
    if let Some(pq) = parts.uri.path_and_query() {
        uri = uri.path_and_query(pq.clone());
    }
    parts.uri = uri.build().map_err(|_| ProxyError::BadRequest)?;
    parts.version = up.version();
    upstream::fit_host_to_version(&mut parts.headers, parts.version);
    let body = if body.is_end_stream() {
        error::empty()
    } else {
        Deadline::new(body, Instant::now() + conn.body_timeout, upload).boxed_unsync()
    };
    let res = up
        .client
        .request(http::Request::from_parts(parts, body))
        .await
        .map_err(|e| classify(&e))?;
    let (mut parts, body) = res.into_parts();
    if parts.headers.contains_key(TRANSFER_ENCODING) && parts.headers.contains_key(CONTENT_LENGTH) {
        // Conflicting framing (RFC 9112 §6.3): never forwarded as if clean.
        return Err(ProxyError::UpstreamProtocol);
    }
    let upgraded = tunnel.is_some() && parts.status == StatusCode::SWITCHING_PROTOCOLS;
    upstream::strip_hop_by_hop(&mut parts.headers, upgraded);
    let mut res = http::Response::from_parts(parts, Either::Left(body));
    if let (true, Some(client)) = (upgraded, tunnel) {
        let upstream = hyper::upgrade::on(&mut res);
        res.extensions_mut()
            .insert(upgrade::PendingTunnel::new(client, upstream));
    }
    Ok(res)
}

/// The `Host` an absolute-form target implies: host and port, never userinfo.
fn absolute_form_host(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) => HeaderValue::try_from(format!("{host}:{port}")),
        None => HeaderValue::from_str(host),
    };
    value.ok()
}

/// Names what went wrong with an upstream exchange.
fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    if err.is_connect() {
        return ProxyError::UpstreamUnreachable;
    }
    let chain = || std::iter::successors(err.source(), |e| (*e).source());
    if chain().any(|e| e.is::<BodyTimeout>()) {
        return ProxyError::BodyTimeout;
    }
    let first_hyper = chain().find_map(|e| e.downcast_ref::<hyper::Error>());
    match first_hyper {
        // The request body failed on the client's side (bad chunk framing
        // found late, or the client stopped mid-body): not the upstream's fault.
        // (A user error carrying the client body's own error; hyper's other
        // user errors, such as a dispatch task gone at shutdown, are not.)
        Some(h) if h.is_user() && h.source().is_some_and(|s| s.is::<hyper::Error>()) => {
            ProxyError::BadRequest
        }
        Some(h) if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() => {
            ProxyError::UpstreamProtocol
        }
        _ => ProxyError::UpstreamReset,
    }
}
