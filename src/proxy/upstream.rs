//! Upstreams: one pooled keep-alive client per configured upstream, and the
//! header hygiene applied on the way there and back (hop-by-hop headers out,
//! `x-forwarded-*` and `x-request-id` in).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, TE, UPGRADE};
use http::{HeaderMap, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::IntCounter;
use std::sync::Arc;

use crate::config::{self, Protocol};
use crate::tls::{UpstreamStream, UpstreamTls};
use crate::{Body, BoxError};

/// A configured upstream, ready to send requests to.
pub struct Upstream {
    /// The configuration it was built from (reloads reuse unchanged ones).
    pub config: config::Upstream,
    pub name: Box<str>,
    pub protocol: Protocol,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// The upstream's own authority, used when a request names no host.
    pub authority: http::uri::Authority,
    pub client: Client<FixedConnector, Body>,
}

impl Upstream {
    /// Builds the pooled client for one upstream.
    pub fn new(cfg: &config::Upstream, connect_errors: IntCounter) -> Result<Self, BoxError> {
        let authority = cfg
            .url
            .authority()
            .cloned()
            .ok_or("upstream url has no authority")?;
        let scheme = cfg.url.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP);
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(true);
        let tls = UpstreamTls::new(cfg)
            .map_err(|e| format!("upstreams.{}.tls: {e}", cfg.name))?
            .map(Arc::new);
        let connector = FixedConnector {
            inner: http,
            // The TCP dial is plain HTTP's; TLS, if any, runs over it.
            target: Uri::builder()
                .scheme(http::uri::Scheme::HTTP)
                .authority(authority.clone())
                .path_and_query("/")
                .build()?,
            tls,
            connect_errors,
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(cfg.max_idle_per_host)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            // Responses are parsed strictly: anything lenient parsing would
            // accept is exactly what must not be forwarded as if clean.
            .http1_max_headers(256)
            .http2_only(cfg.protocol == Protocol::Http2);
        Ok(Self {
            config: cfg.clone(),
            name: cfg.name.as_str().into(),
            protocol: cfg.protocol,
            scheme,
            authority,
            client: builder.build(connector),
        })
    }

    /// The HTTP version requests to this upstream are sent with.
    pub fn version(&self) -> Version {
        match self.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::Http2 => Version::HTTP_2,
        }
    }
}

/// Dials the upstream's address whatever authority the request's URI
/// carries, so HTTP/2 requests keep the client's `:authority`.
#[derive(Clone)]
pub struct FixedConnector {
    inner: HttpConnector,
    target: Uri,
    /// Some for `https://` upstreams.
    tls: Option<Arc<UpstreamTls>>,
    connect_errors: IntCounter,
}

impl tower::Service<Uri> for FixedConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let fut = self.inner.call(self.target.clone());
        let errors = self.connect_errors.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let connected = async {
                let tcp = fut.await?.into_inner();
                let stream = match tls {
                    None => UpstreamStream::Plain(tcp),
                    Some(tls) => tls.connect(tcp).await?,
                };
                Ok::<_, BoxError>(TokioIo::new(stream))
            };
            connected.await.inspect_err(|_| errors.inc())
        })
    }
}

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers: `Connection` and every name it lists, plus
/// the fixed set. `TE: trailers` survives (gRPC needs it end to end) unless
/// `keep_upgrade` asks to keep `Connection: upgrade` + `Upgrade` for a tunnel.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade = keep_upgrade.then(|| headers.remove(UPGRADE)).flatten();
    for name in listed {
        if name != TE {
            headers.remove(&name);
        }
    }
    headers.remove(CONNECTION);
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.contains_key(TE) {
        let trailers = headers.get_all(TE).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        });
        headers.remove(TE);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
    if let Some(upgrade) = upgrade {
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What the proxy adds to every request it forwards.
pub struct Forwarded<'a> {
    pub client_ip: IpAddr,
    pub proto: &'static str,
    pub host: Option<&'a HeaderValue>,
}

/// Appends the client to `x-forwarded-for`; sets `x-forwarded-proto` and
/// `x-forwarded-host`.
pub fn add_forwarded(headers: &mut HeaderMap, fwd: &Forwarded<'_>) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
    let mut xff = String::new();
    for prev in headers.get_all(&XFF).iter().filter_map(|v| v.to_str().ok()) {
        xff.push_str(prev);
        xff.push_str(", ");
    }
    xff.push_str(&fwd.client_ip.to_string());
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(XFF, v);
    }
    headers.insert(XFP, HeaderValue::from_static(fwd.proto));
    if let Some(host) = fwd.host {
        headers.insert(XFH, host.clone());
    }
}

/// Drops the `Host` header on requests to HTTP/2 upstreams: `:authority`
/// carries it there.
pub fn fit_host_to_version(headers: &mut HeaderMap, version: Version) {
    if version == Version::HTTP_2 {
        headers.remove(HOST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_listed_and_fixed_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[TE], "trailers");
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn te_without_trailers_is_removed() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    #[test]
    fn tunnel_keeps_upgrade_and_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h[CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let host = HeaderValue::from_static("api.local");
        add_forwarded(
            &mut h,
            &Forwarded {
                client_ip: "127.0.0.1".parse().expect("ip"),
                proto: "http",
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.local");
    }
}
