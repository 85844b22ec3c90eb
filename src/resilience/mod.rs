//! Per-route resilience: tower layers stacked in front of the upstream, in
//! the order the route stack is built in [`crate::proxy::stack`]:
//! lease gate → concurrency [`limit`] → circuit [`breaker`] → [`timeout`] → upstream.
//!
//! Layers speak one request type ([`Exchange`]), one response type
//! ([`Served`]) and one error type ([`ProxyError`]), so the stack is a
//! concrete type (no boxing per layer). Some layers care about how an
//! exchange *ends* — a permit is held until the response body is done; the
//! breaker reads `grpc-status` from trailers — so they attach an [`EndHook`]
//! to the response, run when the body ends or is dropped.

pub mod breaker;
pub mod limit;
pub mod timeout;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::proxy::error::{ProxyError, Style};
use crate::proxy::handler::ConnInfo;

/// A request on its way through a route's stack, with what the layers and
/// the upstream need to know about it. (Generic over the body so layers can
/// be tested without sockets; the proxy uses hyper's `Incoming`.)
pub struct Exchange<B = Incoming> {
    pub req: http::Request<B>,
    pub conn: ConnInfo,
    pub request_id: HeaderValue,
    pub style: Style,
    /// When the request head arrived: deadlines count from here, so time
    /// spent queued for a permit is part of the budget.
    pub received: tokio::time::Instant,
    /// Present when the request has a body: tells when the client finished
    /// sending it (the route timeout starts then, as Envoy's does).
    pub upload: Option<Arc<Upload>>,
}

/// When a request body finished arriving, if it has.
#[derive(Debug)]
pub struct Upload {
    received: tokio::time::Instant,
    /// Nanoseconds after `received`, plus one; 0 while still arriving.
    done: AtomicU64,
}

impl Upload {
    pub fn new(received: tokio::time::Instant) -> Arc<Self> {
        Arc::new(Self {
            received,
            done: AtomicU64::new(0),
        })
    }

    /// Marks the body complete (first call wins).
    pub fn finish(&self) {
        let after = self.received.elapsed().as_nanos();
        let value = u64::try_from(after).unwrap_or(u64::MAX - 1) + 1;
        let _ = self
            .done
            .compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire);
    }

    /// When the body was complete; None while it is still arriving (or if
    /// it never completed).
    pub fn done_at(&self) -> Option<tokio::time::Instant> {
        match self.done.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.received + Duration::from_nanos(n - 1)),
        }
    }
}

/// A response on its way out: the upstream's body as hyper gave it, or one
/// the proxy made. Boxed once, when the response leaves the handler.
pub type Served = http::Response<Either<Incoming, crate::Body>>;

/// What every layer's future resolves to.
pub type Outcome = Result<Served, ProxyError>;

/// How an exchange ended, known when the response body is done.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub status: StatusCode,
    /// `grpc-status` from the response head or, if absent there, the trailers.
    pub grpc_status: Option<u32>,
    pub body: BodyEnd,
    /// From the start of the request to the end of the response body.
    pub elapsed: Duration,
}

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte (and the trailers) reached the client.
    Complete,
    /// The body stopped moving for longer than the route's `idle_timeout`.
    IdleTimeout,
    /// The upstream broke the body off.
    UpstreamError,
    /// The client went away first: not the upstream's doing.
    ClientGone,
}

/// Told once how an exchange ended. Dropping a hook without calling it must
/// release what it holds (the exchange was abandoned).
pub trait EndHook: Send + Sync + 'static {
    fn on_end(self: Box<Self>, ending: &Ending);
}

/// The hooks attached to one response, carried in its extensions.
#[derive(Default)]
pub struct Hooks(pub Vec<Box<dyn EndHook>>);

impl Clone for Hooks {
    /// Extensions must be `Clone`; hooks are owned by exactly one response,
    /// so a clone carries none.
    fn clone(&self) -> Self {
        Self(Vec::new())
    }
}

/// Attaches a hook to a response.
pub fn attach(res: &mut Served, hook: Box<dyn EndHook>) {
    match res.extensions_mut().get_mut::<Hooks>() {
        Some(hooks) => hooks.0.push(hook),
        None => {
            res.extensions_mut().insert(Hooks(vec![hook]));
        }
    }
}

/// Reads `grpc-status` from a header map.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
