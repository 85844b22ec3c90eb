//! The request path, top to bottom: refuse what is ambiguous, route, answer
//! directly or forward, and account for the exchange (metrics, access log).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST};
use http::{Method, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use super::body::Tracked;
use super::error::{self, ProxyError, Style, REASON_HEADER};
use super::forward::Forward;
use super::lease_gate::Admitted;
use super::router::{self, RequestView};
use super::upgrade::{self, PendingTunnel};
use super::{Generation, Route, Target};
use crate::config::AccessLogFormat;
use crate::metrics::RouteMetrics;
use crate::resilience::{self, BodyEnd, Ending, Exchange, Hooks, Served, Upload};
use crate::Response;

/// The request id header: kept when the client sends one, generated otherwise.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the request path knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub proto: &'static str,
    /// The listener's total budget for a request body.
    pub body_timeout: Duration,
    /// `limits.max_headers`; hyper enforces it for HTTP/1, this for HTTP/2.
    pub max_headers: usize,
    /// The verified client certificate's identity (mTLS listeners).
    pub client: Option<Arc<crate::tls::PeerIdentity>>,
    /// `x-forwarded-client-cert` for this connection, on mTLS listeners
    /// that forward it.
    pub client_cert: Option<HeaderValue>,
}

/// Serves one request with one configuration generation. `framing_ok` is
/// false when the connection's framing inspector found this request's
/// HTTP/1 framing ambiguous. Never fails: every error becomes a response here.
pub async fn handle(
    gen: Arc<Generation>,
    conn: ConnInfo,
    framing_ok: bool,
    mut req: http::Request<Incoming>,
    drain: watch::Sender<bool>,
) -> Response {
    let start = Instant::now();
    // Only a holder's lease gate sets these; a client's never get through.
    crate::lease::gate::strip_lease_headers(req.headers_mut());
    let request_id = request_id(req.headers());
    let style = Style::of(req.headers());
    let found = check(&req, framing_ok, conn.max_headers).and_then(|()| {
        let view = RequestView {
            host: router::request_host(req.uri(), req.headers()),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        router::first_match(&gen.matchers, &view).ok_or(ProxyError::NoRoute)
    });
    let route = found.ok().map(|i| &gen.routes[i]);
    let metrics = route.map_or(&gen.no_route, |r| &r.metrics);
    // Counted until the response body ends, or until this request is dropped
    // (client reset or gone) before it has a response.
    let in_flight = InFlight::new(metrics.clone());
    let log =
        (gen.access_log != AccessLogFormat::Off).then(|| AccessLog::of(&req, &request_id, &conn));
    let upload = (!req.body().is_end_stream()).then(|| Upload::new(start));
    let result = match route {
        Some(route) => serve(route, conn, req, &request_id, style, start, upload.clone()).await,
        None => Err(found.err().unwrap_or(ProxyError::NoRoute)),
    };
    // A refusal counts by the status it stands for, also when a gRPC caller
    // receives it as HTTP 200 with a grpc-status.
    let (mut res, counted_as) = match result {
        Ok(res) => {
            let status = res.status();
            (res, status)
        }
        Err(e) => {
            metrics.proxy_error(e.reason());
            (e.to_response(style).map(Either::Right), e.status())
        }
    };
    res.headers_mut().insert(REQUEST_ID, request_id);
    metrics.response(counted_as);
    if let Some(log) = log {
        log.emit(route, &res, start.elapsed());
    }
    if let Some(tunnel) = res.extensions_mut().remove::<PendingTunnel>() {
        // The exchange lives on as a tunnel: its permit, in-flight count and
        // drain registration go with it, and its hooks run when it closes.
        let hooks = res.extensions_mut().remove::<Hooks>();
        let keep = (in_flight, drain.subscribe());
        upgrade::spawn_tunnel(tunnel, keep, move || {
            let ending = Ending {
                status: StatusCode::SWITCHING_PROTOCOLS,
                grpc_status: None,
                body: BodyEnd::Complete,
                elapsed: start.elapsed(),
            };
            for hook in hooks.map(|h| h.0).unwrap_or_default() {
                hook.on_end(&ending);
            }
        });
        return res.map(|body| body.map_err(Into::into).boxed_unsync());
    }
    finish(
        res,
        route.and_then(|r| r.idle_timeout),
        in_flight,
        start,
        upload,
    )
}

/// One request in a route's in-flight gauge, until dropped.
struct InFlight(Arc<RouteMetrics>);

impl InFlight {
    fn new(metrics: Arc<RouteMetrics>) -> Self {
        metrics.in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Boxes the response body once, wrapped so that in-flight counts,
/// durations and the layers' end hooks cover the whole stream.
fn finish(
    mut res: Served,
    idle: Option<Duration>,
    in_flight: InFlight,
    start: Instant,
    upload: Option<Arc<Upload>>,
) -> Response {
    let hooks = res.extensions_mut().remove::<Hooks>();
    let status = res.status();
    let head_grpc = resilience::grpc_status(res.headers());
    res.map(|body| {
        Tracked::new(body, idle, move |how, trailer_grpc| {
            let elapsed = start.elapsed();
            in_flight.0.duration.observe(elapsed.as_secs_f64());
            drop(in_flight);
            if let Some(hooks) = hooks {
                // A response broken off while the request body never
                // completed: the client's side failed, not the upstream.
                let upload_failed = upload.is_some_and(|u| u.done_at().is_none());
                let body = match how {
                    BodyEnd::UpstreamError if upload_failed => BodyEnd::ClientGone,
                    other => other,
                };
                let ending = Ending {
                    status,
                    grpc_status: head_grpc.or(trailer_grpc),
                    body,
                    elapsed,
                };
                for hook in hooks.0 {
                    hook.on_end(&ending);
                }
            }
        })
        .boxed_unsync()
    })
}

/// Refuses what no route may see: tunnels and ambiguous HTTP/1 framing that
/// the HTTP parser let through.
fn check(
    req: &http::Request<Incoming>,
    framing_ok: bool,
    max_headers: usize,
) -> Result<(), ProxyError> {
    if !framing_ok {
        return Err(ProxyError::BadRequest);
    }
    if req.headers().len() > max_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let headers = req.headers();
    if headers.get_all(CONTENT_LENGTH).iter().nth(1).is_some() {
        return Err(ProxyError::BadRequest);
    }
    if req.version() == Version::HTTP_11 {
        let hosts = headers.get_all(HOST).iter().count();
        if hosts > 1 || (hosts == 0 && req.uri().authority().is_none()) {
            return Err(ProxyError::BadRequest);
        }
    }
    Ok(())
}

async fn serve(
    route: &Route,
    conn: ConnInfo,
    req: http::Request<Incoming>,
    request_id: &HeaderValue,
    style: Style,
    start: Instant,
    upload: Option<Arc<Upload>>,
) -> Result<Served, ProxyError> {
    match &route.target {
        Target::Respond(r) => {
            let mut res = http::Response::new(Either::Right(error::full(r.body.clone())));
            *res.status_mut() = r.status;
            *res.headers_mut() = r.headers.clone();
            Ok(res)
        }
        Target::Upstream(stack) => {
            let mut req = req;
            let mut holder = None;
            if let Some(gate) = &route.lease {
                match gate.admit(&mut req).await {
                    Admitted::Local => {}
                    Admitted::Forward(up) => holder = Some((gate, up)),
                    Admitted::Answer(outcome) => return outcome,
                }
            }
            let ex = Exchange {
                req,
                conn,
                request_id: request_id.clone(),
                style,
                received: start,
                upload,
            };
            if let Some((gate, up)) = holder {
                // To the holder's sidecar, whose own gate stamps it; this
                // node's limit and breaker guard the local service only.
                let outcome = Forward::new(up).call(ex).await;
                gate.forwarded(outcome.is_ok());
                // A holder that cannot be reached never saw the request: for
                // the client that is no usable holder, not a broken upstream.
                return match outcome {
                    Err(ProxyError::UpstreamUnreachable) => Err(gate.unreachable()),
                    other => other,
                };
            }
            let mut stack = stack.clone();
            std::future::poll_fn(|cx| stack.poll_ready(cx)).await?;
            stack.call(ex).await
        }
    }
}

/// The client's `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        if !v.is_empty() && v.len() <= 200 {
            return v.clone();
        }
    }
    new_request_id()
}

/// 32 hex digits: a per-process random prefix and a mixed counter, unique
/// within the process and unlikely to collide across processes.
fn new_request_id() -> HeaderValue {
    use std::hash::{BuildHasher, RandomState};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = splitmix64(n ^ prefix);
    let id = format!("{prefix:016x}{mixed:016x}");
    HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("0"))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The parts of a request the access log line needs, taken before the
/// request is consumed.
struct AccessLog {
    method: Method,
    path: String,
    request_id: HeaderValue,
    /// The mTLS client's certificate subject.
    client: Option<Arc<crate::tls::PeerIdentity>>,
}

impl AccessLog {
    fn of(req: &http::Request<Incoming>, request_id: &HeaderValue, conn: &ConnInfo) -> Self {
        Self {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            request_id: request_id.clone(),
            client: conn.client.clone(),
        }
    }

    fn emit<B>(self, r: Option<&Route>, res: &http::Response<B>, took: Duration) {
        let route = r.map_or("-", |r| &*r.name);
        let upstream = r
            .and_then(|r| r.upstream.as_deref())
            .map_or("-", |u| &*u.name);
        let reason = res
            .headers()
            .get(REASON_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            target: "breakwater::access",
            route,
            method = %self.method,
            path = %self.path,
            status = res.status().as_u16(),
            duration_ms = took.as_micros() as f64 / 1e3,
            upstream,
            reason,
            request_id = self.request_id.to_str().unwrap_or("-"),
            client = self.client.as_deref().map_or("-", |c| c.subject.as_str()),
        );
    }
}
