//! The concurrency limit: at most `max` requests of a route in flight, a
//! bounded `queue` waiting up to `queue_timeout`, the rest shed at once with
//! 503 — a shed request never reaches the upstream. A permit is held until
//! the response body ends, so a stream counts as in flight until it is done,
//! and is released on every path (error, timeout, client gone) because it
//! lives in a value that is dropped there.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

use super::{attach, EndHook, Ending, Exchange, Outcome, Served};
use crate::config::Concurrency;
use crate::metrics::ResilienceMetrics;
use crate::proxy::error::ProxyError;

/// One route's limit; shared by the route's stack across reloads when its
/// configuration is unchanged.
pub struct Limiter {
    pub config: Concurrency,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    metrics: ResilienceMetrics,
}

impl Limiter {
    pub fn new(config: Concurrency, metrics: ResilienceMetrics) -> Arc<Self> {
        Arc::new(Self {
            config,
            permits: Arc::new(Semaphore::new(config.max)),
            waiting: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Permits held now.
    pub fn in_use(&self) -> usize {
        self.config.max - self.permits.available_permits().min(self.config.max)
    }

    /// Requests queued now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn held(&self, permit: OwnedSemaphorePermit) -> Held {
        self.metrics.in_use.inc();
        Held {
            _permit: permit,
            gauge: self.metrics.in_use.clone(),
        }
    }

    fn shed(&self) -> ProxyError {
        self.metrics.shed.inc();
        ProxyError::Overloaded
    }

    /// Waits in the queue, if there is room in it, for a permit.
    async fn wait(self: Arc<Self>) -> Result<Held, ProxyError> {
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.config.queue).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return Err(self.shed());
        }
        self.metrics.queued.inc();
        let _slot = QueueSlot(&self);
        let waited = tokio::time::timeout(
            self.config.queue_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await;
        match waited {
            Ok(Ok(permit)) => Ok(self.held(permit)),
            // Timed out in the queue (or the semaphore closed, which we never do).
            _ => Err(self.shed()),
        }
    }
}

/// A place in the queue, given back when the wait ends — or when the
/// waiting request is dropped (its client went away).
struct QueueSlot<'a>(&'a Limiter);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queued.dec();
    }
}

/// A permit and the gauge that counts it; both released on drop.
pub struct Held {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl EndHook for Held {
    fn on_end(self: Box<Self>, _: &Ending) {}
}

/// Wraps a service in a [`Limit`].
#[derive(Clone)]
pub struct LimitLayer(Option<Arc<Limiter>>);

impl LimitLayer {
    /// `limiter` None: no limit on this route.
    pub fn new(limiter: Option<Arc<Limiter>>) -> Self {
        Self(limiter)
    }
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit::new(inner, self.0.clone())
    }
}

/// The limit layer's service.
#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    limiter: Option<Arc<Limiter>>,
}

impl<S> Limit<S> {
    /// `limiter` None: no limit on this route.
    pub fn new(inner: S, limiter: Option<Arc<Limiter>>) -> Self {
        Self { inner, limiter }
    }
}

type BoxOutcome = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl<S, B> Service<Exchange<B>> for Limit<S>
where
    B: Send + 'static,
    S: Service<Exchange<B>, Response = Served, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Served;
    type Error = ProxyError;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange<B>) -> Self::Future {
        let Some(limiter) = self.limiter.clone() else {
            return LimitFuture::Running {
                inner: self.inner.call(ex),
                held: None,
            };
        };
        // Fast path: a free permit, or no queue to wait in — no waiting, no box.
        match limiter.permits.clone().try_acquire_owned() {
            Ok(permit) => LimitFuture::Running {
                inner: self.inner.call(ex),
                held: Some(limiter.held(permit)),
            },
            Err(_) if limiter.config.queue == 0 => LimitFuture::Shed {
                error: Some(limiter.shed()),
            },
            Err(_) => {
                let mut inner = self.inner.clone();
                LimitFuture::Queued {
                    fut: Box::pin(async move {
                        let held = limiter.wait().await?;
                        let mut res = inner.ready().await?.call(ex).await?;
                        attach(&mut res, Box::new(held));
                        Ok(res)
                    }),
                }
            }
        }
    }
}

pin_project! {
    /// The limit's response future: running with a permit (or no limit),
    /// shed, or waiting in the queue (boxed: the rare path).
    #[project = LimitProj]
    pub enum LimitFuture<F> {
        Running { #[pin] inner: F, held: Option<Held> },
        Shed { error: Option<ProxyError> },
        Queued { fut: BoxOutcome },
    }
}

impl<F: Future<Output = Outcome>> Future for LimitFuture<F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match self.project() {
            LimitProj::Running { inner, held } => {
                let mut res = std::task::ready!(inner.poll(cx))?;
                if let Some(held) = held.take() {
                    attach(&mut res, Box::new(held));
                }
                Poll::Ready(Ok(res))
            }
            LimitProj::Shed { error } => {
                Poll::Ready(Err(error.take().unwrap_or(ProxyError::Overloaded)))
            }
            LimitProj::Queued { fut } => fut.as_mut().poll(cx),
        }
    }
}
