//! A route's stack, assembled in one place and read top to bottom as the
//! path a request takes to the upstream.

use std::sync::Arc;
use std::time::Duration;

use tower::ServiceBuilder;

use super::forward::Forward;
use super::upstream::Upstream;
use crate::metrics::ResilienceMetrics;
use crate::resilience::breaker::{Breaker, BreakerCell, BreakerLayer};
use crate::resilience::limit::{Limit, LimitLayer, Limiter};
use crate::resilience::timeout::{Timeout, TimeoutLayer};

/// The service every upstream route sends its requests through.
pub type Stack = Limit<Breaker<Timeout<Forward>>>;

/// Builds one route's stack. Layers that a route does not configure are
/// present but pass requests straight through.
pub fn build(
    upstream: Arc<Upstream>,
    limiter: Option<Arc<Limiter>>,
    breaker: Option<Arc<BreakerCell>>,
    timeout: Option<Duration>,
    metrics: &ResilienceMetrics,
) -> Stack {
    ServiceBuilder::new()
        // Lease gate (single-writer routes) goes first, with the leases work.
        // Concurrency limit: sheds or queues excess before anything else runs,
        // so a shed request costs microseconds and never counts as an error.
        .layer(LimitLayer::new(limiter))
        // Circuit breaker: fails fast while the upstream is failing, giving it
        // room to recover; judges each exchange when its body ends.
        .layer(BreakerLayer::new(breaker))
        // Timeout: bounds the wait for the response head and drops the
        // upstream request on expiry, so the breaker sees it as a timeout.
        .layer(TimeoutLayer::new(timeout, metrics.timeouts.clone()))
        // Upstream: the pooled client, header hygiene, streamed bodies.
        .service(Forward::new(upstream))
}
