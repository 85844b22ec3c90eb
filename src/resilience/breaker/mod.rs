//! The circuit breaker layer: a thin async shell around the pure state
//! machine in [`state`] (Hystrix's error-percentage rule over the rolling
//! [`window`], plus a slow-call rule and operator-forced states).
//!
//! What counts as an error is the route's `errors` config, judged when the
//! exchange *ends*: listed statuses, timeouts, connect/reset errors, and gRPC
//! codes from the response head or its trailers (so a gRPC failure sent with
//! HTTP 200 counts). Requests the breaker itself rejects, requests shed by
//! the concurrency limit (which sits outside this layer), and clients that
//! hang up early are never held against the upstream.

pub mod state;
pub mod window;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Either;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

use self::state::{Admission, Forced, Kind, Settings, Snapshot, StateName, Ticket, Transition};
use super::{attach, BodyEnd, EndHook, Ending, Exchange, Outcome, Served};
use crate::config;
use crate::metrics::ResilienceMetrics;
use crate::proxy::error::{full, ProxyError};

/// Every state a breaker can report, for the state gauge.
const STATES: [&str; 5] = [
    StateName::ALL[0].as_str(),
    StateName::ALL[1].as_str(),
    StateName::ALL[2].as_str(),
    StateName::ALL[3].as_str(),
    StateName::ALL[4].as_str(),
];

/// One route's breaker: the state machine behind a mutex held for
/// microseconds, what counts as an error, and its metrics. Shared across
/// reloads while the route's breaker config is unchanged.
pub struct BreakerCell {
    pub route: Arc<str>,
    pub config: config::Breaker,
    machine: Mutex<state::Breaker>,
    metrics: ResilienceMetrics,
}

impl BreakerCell {
    pub fn new(route: Arc<str>, config: config::Breaker, metrics: ResilienceMetrics) -> Arc<Self> {
        let machine = state::Breaker::new(Settings::from_config(&config), Instant::now());
        Arc::new(Self {
            route,
            config,
            machine: Mutex::new(machine),
            metrics,
        })
    }

    /// Sets the state gauge to the current state; called when the route
    /// goes live (a breaker built for a refused reload never shows).
    pub fn publish(&self) {
        let state = self.lock().state_name();
        self.metrics.breaker_state(&STATES, state.as_str());
    }

    fn lock(&self) -> MutexGuard<'_, state::Breaker> {
        // The state machine never panics while borrowed; a poisoned lock
        // still holds a consistent machine.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(&self) -> Option<Ticket> {
        let (admission, transition) = self.lock().try_acquire_with_transition(Instant::now());
        if let Some(t) = transition {
            self.announce(&t);
        }
        match admission {
            Admission::Admitted(ticket) => Some(ticket),
            Admission::Rejected => {
                self.metrics.breaker_rejected.inc();
                None
            }
        }
    }

    fn record(&self, ticket: Ticket, kind: Kind, slow: bool) {
        let now = Instant::now();
        let transition = self
            .lock()
            .record(ticket, now, state::Outcome { kind, slow });
        if let Some(t) = transition {
            self.announce(&t);
        }
    }

    fn cancel(&self, ticket: Ticket) {
        self.lock().cancel(ticket, Instant::now());
    }

    /// Forces the breaker open or closed until [`BreakerCell::reset`].
    pub fn force(&self, forced: Forced) {
        let transition = self.lock().force(forced, Instant::now());
        if let Some(t) = transition {
            self.announce(&t);
        }
    }

    /// Clears any forced state and starts closed with a fresh window.
    pub fn reset(&self) {
        let transition = self.lock().reset(Instant::now());
        if let Some(t) = transition {
            self.announce(&t);
        }
    }

    /// The state, window counts and last transition, now.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot(Instant::now())
    }

    fn announce(&self, t: &Transition) {
        let (from, to) = (t.from.as_str(), t.to.as_str());
        self.metrics.breaker_transition(from, to);
        self.metrics.breaker_state(&STATES, to);
        let c = &t.counts;
        tracing::warn!(
            route = %self.route,
            from = %from,
            to = %to,
            requests = c.total(),
            errors = c.errors(),
            timeouts = c.timeouts,
            slow = c.slow,
            error_percent = c.error_percent(),
            "circuit breaker state changed"
        );
    }

    /// What the caller gets while the breaker rejects: the route's fallback,
    /// or 503 `breaker-open`.
    fn rejection(&self) -> Outcome {
        match &self.config.fallback {
            Some(f) => {
                let mut res = http::Response::new(Either::Right(full(f.body.clone())));
                *res.status_mut() = f.status;
                *res.headers_mut() = f.headers.clone();
                res.headers_mut().insert(
                    crate::proxy::error::REASON_HEADER,
                    http::HeaderValue::from_static("breaker-open"),
                );
                Ok(res)
            }
            None => Err(ProxyError::BreakerOpen),
        }
    }

    /// How an exchange that failed before a response head counts. None: not
    /// the upstream's doing (the client's request was bad or too slow).
    fn judge_error(&self, e: ProxyError) -> Option<Kind> {
        let errors = &self.config.errors;
        match e {
            ProxyError::Timeout => Some(if errors.timeouts {
                Kind::Timeout
            } else {
                Kind::Success
            }),
            ProxyError::UpstreamUnreachable | ProxyError::UpstreamReset => {
                Some(if errors.connect_errors {
                    Kind::Failure
                } else {
                    Kind::Success
                })
            }
            ProxyError::UpstreamProtocol => Some(Kind::Failure),
            _ => None,
        }
    }

    /// How a finished exchange counts. None: the client went away first.
    fn judge_end(&self, ending: &Ending) -> Option<Kind> {
        let errors = &self.config.errors;
        if errors.statuses.contains(&ending.status) {
            return Some(Kind::Failure);
        }
        if ending
            .grpc_status
            .is_some_and(|code| errors.grpc_codes.contains(&code))
        {
            return Some(Kind::Failure);
        }
        match ending.body {
            BodyEnd::Complete => Some(Kind::Success),
            BodyEnd::IdleTimeout if errors.timeouts => Some(Kind::Timeout),
            BodyEnd::UpstreamError if errors.connect_errors => Some(Kind::Failure),
            BodyEnd::IdleTimeout | BodyEnd::UpstreamError => Some(Kind::Success),
            BodyEnd::ClientGone => None,
        }
    }

    fn slow(&self, latency: Duration) -> bool {
        self.config
            .slow_call
            .is_some_and(|s| latency >= s.threshold)
    }
}

/// Wraps a service in a [`Breaker`].
#[derive(Clone)]
pub struct BreakerLayer(Option<Arc<BreakerCell>>);

impl BreakerLayer {
    /// `cell` None: no breaker on this route.
    pub fn new(cell: Option<Arc<BreakerCell>>) -> Self {
        Self(cell)
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker::new(inner, self.0.clone())
    }
}

/// The breaker layer's service.
#[derive(Clone)]
pub struct Breaker<S> {
    inner: S,
    cell: Option<Arc<BreakerCell>>,
}

impl<S> Breaker<S> {
    /// `cell` None: no breaker on this route.
    pub fn new(inner: S, cell: Option<Arc<BreakerCell>>) -> Self {
        Self { inner, cell }
    }
}

impl<S, B> Service<Exchange<B>> for Breaker<S>
where
    S: Service<Exchange<B>, Response = Served, Error = ProxyError>,
{
    type Response = Served;
    type Error = ProxyError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange<B>) -> Self::Future {
        let Some(cell) = self.cell.clone() else {
            return BreakerFuture::Passthrough {
                inner: self.inner.call(ex),
            };
        };
        match cell.acquire() {
            None => BreakerFuture::Rejected {
                outcome: Some(cell.rejection()),
            },
            Some(ticket) => BreakerFuture::Admitted {
                inner: self.inner.call(ex),
                call: Some(Call {
                    cell,
                    ticket: Some(ticket),
                    start: Instant::now(),
                    latency: Duration::ZERO,
                }),
            },
        }
    }
}

pin_project! {
    /// The breaker's response future.
    #[project = BreakerProj]
    pub enum BreakerFuture<F> {
        Passthrough { #[pin] inner: F },
        Rejected { outcome: Option<Outcome> },
        Admitted { #[pin] inner: F, call: Option<Call> },
    }
}

impl<F: Future<Output = Outcome>> Future for BreakerFuture<F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            BreakerProj::Passthrough { inner } => inner.poll(cx),
            BreakerProj::Rejected { outcome } => {
                Poll::Ready(outcome.take().unwrap_or(Err(ProxyError::BreakerOpen)))
            }
            BreakerProj::Admitted { inner, call } => {
                let out = std::task::ready!(inner.poll(cx));
                let Some(mut call) = call.take() else {
                    return Poll::Ready(out);
                };
                call.latency = call.start.elapsed();
                match out {
                    Ok(mut res) => {
                        attach(&mut res, Box::new(call));
                        Poll::Ready(Ok(res))
                    }
                    Err(e) => {
                        call.finish(call.cell.judge_error(e));
                        Poll::Ready(Err(e))
                    }
                }
            }
        }
    }
}

/// One admitted call, until its verdict is in. Dropped without one (the
/// request was abandoned), it gives its slot back without a verdict.
pub struct Call {
    cell: Arc<BreakerCell>,
    ticket: Option<Ticket>,
    start: Instant,
    /// Time to the response head: what the slow-call rule judges.
    latency: Duration,
}

impl Call {
    fn finish(&mut self, kind: Option<Kind>) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        match kind {
            Some(kind) => self.cell.record(ticket, kind, self.cell.slow(self.latency)),
            None => self.cell.cancel(ticket),
        }
    }
}

impl EndHook for Call {
    fn on_end(mut self: Box<Self>, ending: &Ending) {
        let kind = self.cell.judge_end(ending);
        self.finish(kind);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.cell.cancel(ticket);
        }
    }
}
