//! The lease gate of a lease-gated route (LEASES.md §5), in front of the
//! route's stack: on the holder the request is stamped with the fencing
//! token and goes on to the local service; on a follower it is forwarded to
//! the holder's sidecar, redirected, or refused, as `on_follower` says; with
//! no holder known it waits up to `wait` for one.
//!
//! The decision itself is [`crate::lease::gate::decide`], a pure function of
//! the published view and the instant read here, which is the stamping
//! instant.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::time::Instant;

use super::error::{self, ProxyError};
use super::upstream::Upstream;
use crate::config::{self, Protocol};
use crate::lease::gate::{self, Decision, FORWARDED_HEADER, NAME_HEADER, TOKEN_HEADER};
use crate::lease::Lease;
use crate::resilience::Outcome;

const TOKEN: HeaderName = HeaderName::from_static(TOKEN_HEADER);
const NAME: HeaderName = HeaderName::from_static(NAME_HEADER);
const FORWARDED: HeaderName = HeaderName::from_static(FORWARDED_HEADER);

/// The lease side of one route.
pub struct LeaseRoute {
    pub lease: Arc<Lease>,
    name: HeaderValue,
    /// This node's id, the value of the hop marker on forwarded requests.
    node: HeaderValue,
    /// Clients for the holders forwarded to, by URL and protocol; a new
    /// holder gets a new entry, the few old ones are kept (holders alternate).
    holders: Mutex<Vec<(Uri, Protocol, Arc<Upstream>)>>,
}

/// What the gate decided for one request.
pub enum Admitted {
    /// Stamped: on to the route's stack and the local service.
    Local,
    /// To the holder's sidecar, through this client (the request carries
    /// the hop marker).
    Forward(Arc<Upstream>),
    /// Answered here: a redirect, or 503 `lease-unavailable`.
    Answer(Outcome),
}

/// Kept holder clients per route; more than two holders in turn is rare.
const HOLDER_CLIENTS: usize = 4;

impl LeaseRoute {
    pub fn new(lease: Arc<Lease>, node_id: &str) -> Self {
        let header = |s: &str| HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("-"));
        Self {
            name: header(lease.name()),
            node: header(node_id),
            lease,
            holders: Mutex::new(Vec::new()),
        }
    }

    /// Decides for `req` (whose client-sent `x-lease-*` headers are already
    /// gone), stamping or marking it as the decision needs.
    pub async fn admit(&self, req: &mut http::Request<Incoming>) -> Admitted {
        let forwarded = req.headers().contains_key(&FORWARDED);
        let spec = self.lease.spec();
        let deadline = Instant::now() + spec.wait;
        let mut view = self.lease.view();
        loop {
            let now = Instant::now();
            match gate::decide(&view, now, forwarded, spec.on_follower) {
                Decision::Stamp { token } => {
                    let headers = req.headers_mut();
                    headers.remove(&FORWARDED);
                    headers.insert(TOKEN, HeaderValue::from(token));
                    headers.insert(NAME, self.name.clone());
                    #[cfg(feature = "test-hooks")]
                    headers.insert(
                        crate::lease::hooks::STAMP_HEADER,
                        // The instant the decision was taken on.
                        HeaderValue::from(crate::lease::hooks::instant_ns(now)),
                    );
                    return Admitted::Local;
                }
                Decision::Forward { to } => {
                    let protocol = match req.version() {
                        Version::HTTP_2 => Protocol::Http2,
                        _ => Protocol::Http1,
                    };
                    return match self.holder(&to, protocol) {
                        Some(up) => {
                            req.headers_mut().insert(FORWARDED, self.node.clone());
                            Admitted::Forward(up)
                        }
                        None => self.unavailable(),
                    };
                }
                Decision::Redirect { to } => {
                    let Some(location) = gate::target(&to, req.uri())
                        .and_then(|u| HeaderValue::try_from(u.to_string()).ok())
                    else {
                        return self.unavailable();
                    };
                    let mut res = http::Response::new(Either::Right(error::empty()));
                    *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                    res.headers_mut().insert(LOCATION, location);
                    return Admitted::Answer(Ok(res));
                }
                Decision::Reject => return self.unavailable(),
                Decision::Unavailable if now >= deadline => return self.unavailable(),
                Decision::Unavailable => {
                    view = self.lease.wait_for_change_since(&view, deadline).await;
                }
            }
        }
    }

    /// Counts a forwarded request's result: `ok` (the holder answered) or
    /// `error` (it could not be reached, or failed mid-way).
    pub fn forwarded(&self, ok: bool) {
        self.lease
            .metrics()
            .forwarded(if ok { "ok" } else { "error" });
    }

    /// The answer when the holder's sidecar could not be connected to.
    pub fn unreachable(&self) -> ProxyError {
        self.lease.metrics().unavailable.inc();
        ProxyError::LeaseUnavailable
    }

    fn unavailable(&self) -> Admitted {
        self.lease.metrics().unavailable.inc();
        Admitted::Answer(Err(ProxyError::LeaseUnavailable))
    }

    /// The pooled client for a holder's `forward_url`.
    fn holder(&self, url: &Uri, protocol: Protocol) -> Option<Arc<Upstream>> {
        let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, up)) = holders.iter().find(|(u, p, _)| u == url && *p == protocol) {
            return Some(up.clone());
        }
        let cfg = config::Upstream {
            name: format!("lease:{}", self.lease.name()),
            url: url.clone(),
            protocol,
            connect_timeout: Duration::from_secs(1),
            max_idle_per_host: 64,
            tls: None,
        };
        // Connect failures to a holder show in the forwarded counter; this
        // one is not exported.
        let errors = IntCounter::new("holder_connect_errors", "-").ok()?;
        let up = match Upstream::new(&cfg, errors) {
            Ok(up) => Arc::new(up),
            Err(e) => {
                tracing::warn!(lease = %self.lease.name(), holder = %url, error = %e, "cannot forward to the holder");
                return None;
            }
        };
        if holders.len() >= HOLDER_CLIENTS {
            holders.remove(0);
        }
        holders.push((url.clone(), protocol, up.clone()));
        Some(up)
    }
}
