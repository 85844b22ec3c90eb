//! The route timeout: bounds the exchange up to the response head, counted
//! from when the request body finished arriving (time queued for a permit
//! included). An incoming `grpc-timeout` is a deadline from the request's
//! arrival; the earlier of the two wins, and gRPC upstreams are told what
//! is left. On
//! expiry the inner future — the upstream request — is dropped, so its
//! connection is reset or its stream cancelled and the work is released
//! (not left running, as hystrix-go does).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use pin_project_lite::pin_project;
use prometheus::IntCounter;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::{Exchange, Outcome, Upload};
use crate::proxy::error::{ProxyError, Style};

/// Wraps a service in a [`Timeout`].
#[derive(Clone)]
pub struct TimeoutLayer {
    limit: Option<Duration>,
    timeouts: IntCounter,
}

impl TimeoutLayer {
    /// `limit` None: only an incoming `grpc-timeout` bounds the exchange.
    pub fn new(limit: Option<Duration>, timeouts: IntCounter) -> Self {
        Self { limit, timeouts }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.limit, self.timeouts.clone())
    }
}

/// The timeout layer's service.
#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Option<Duration>,
    timeouts: IntCounter,
}

impl<S> Timeout<S> {
    /// `limit` None: only an incoming `grpc-timeout` bounds the exchange.
    pub fn new(inner: S, limit: Option<Duration>, timeouts: IntCounter) -> Self {
        Self {
            inner,
            limit,
            timeouts,
        }
    }
}

impl<S, B> Service<Exchange<B>> for Timeout<S>
where
    S: Service<Exchange<B>, Response = super::Served, Error = ProxyError>,
{
    type Response = super::Served;
    type Error = ProxyError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut ex: Exchange<B>) -> Self::Future {
        let grpc = if ex.style == Style::Grpc {
            let asked = ex
                .req
                .headers()
                .get("grpc-timeout")
                .and_then(parse_grpc_timeout);
            asked.map(|a| ex.received + a)
        } else {
            None
        };
        let clock = Clock {
            route: self.limit,
            grpc,
            received: ex.received,
            upload: ex.upload.clone(),
        };
        let first = clock.next_check();
        if let (Some(deadline), Style::Grpc) = (first, ex.style) {
            // What is left of the budget as the request leaves.
            let left = deadline.saturating_duration_since(Instant::now());
            ex.req
                .headers_mut()
                .insert("grpc-timeout", format_grpc_timeout(left));
        }
        TimeoutFuture {
            inner: self.inner.call(ex),
            sleep: first.map(tokio::time::sleep_until),
            clock,
            timeouts: self.timeouts.clone(),
        }
    }
}

/// The two deadlines of an exchange: the caller's gRPC deadline, counted
/// from the request's arrival, and the route timeout, counted from when the
/// request body finished arriving (a slow upload is the client's time, not
/// the upstream's).
struct Clock {
    route: Option<Duration>,
    grpc: Option<Instant>,
    received: Instant,
    upload: Option<Arc<Upload>>,
}

impl Clock {
    /// The route deadline if it is known yet; while the body is still
    /// arriving, the earliest it could be.
    fn route_deadline(&self, now: Instant) -> Option<(Instant, bool)> {
        let limit = self.route?;
        Some(match &self.upload {
            None => (self.received + limit, true),
            Some(u) => match u.done_at() {
                Some(done) => (done + limit, true),
                None => (now + limit, false),
            },
        })
    }

    /// When to look again.
    fn next_check(&self) -> Option<Instant> {
        let route = self.route_deadline(Instant::now()).map(|(d, _)| d);
        match (route, self.grpc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a deadline has passed at `now`.
    fn expired(&self, now: Instant) -> bool {
        let grpc = self.grpc.is_some_and(|d| now >= d);
        let route = self
            .route_deadline(now)
            .is_some_and(|(d, known)| known && now >= d);
        grpc || route
    }
}

pin_project! {
    /// Resolves to the inner outcome, or to [`ProxyError::Timeout`] at the
    /// deadline (dropping the inner future with it).
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        clock: Clock,
        timeouts: IntCounter,
    }
}

impl<F: Future<Output = Outcome>> Future for TimeoutFuture<F> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out);
        }
        loop {
            let Some(mut sleep) = this.sleep.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            std::task::ready!(sleep.as_mut().poll(cx));
            let now = Instant::now();
            if this.clock.expired(now) {
                this.timeouts.inc();
                return Poll::Ready(Err(ProxyError::Timeout));
            }
            // The body was still arriving: the route deadline moved on.
            match this.clock.next_check() {
                Some(next) => sleep.reset(next.max(now)),
                None => return Poll::Pending,
            }
        }
    }
}

/// Parses a gRPC `TimeoutValue TimeoutUnit`: up to 8 digits and one of
/// `H M S m u n`. Anything else is ignored, as the gRPC spec allows.
pub fn parse_grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a budget in the finest unit that fits gRPC's 8 digits.
pub fn format_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let (n, unit) = if d.as_micros() <= MAX {
        (d.as_micros(), 'u')
    } else if d.as_millis() <= MAX {
        (d.as_millis(), 'm')
    } else {
        (u128::from(d.as_secs()).min(MAX), 'S')
    };
    HeaderValue::try_from(format!("{n}{unit}")).unwrap_or(HeaderValue::from_static("99999999S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let p = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(p("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(p("2M"), Some(Duration::from_secs(120)));
        assert_eq!(p("3S"), Some(Duration::from_secs(3)));
        assert_eq!(p("250m"), Some(Duration::from_millis(250)));
        assert_eq!(p("7u"), Some(Duration::from_micros(7)));
        assert_eq!(p("9n"), Some(Duration::from_nanos(9)));
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        let p = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(p(""), None);
        assert_eq!(p("m"), None);
        assert_eq!(p("123456789m"), None);
        assert_eq!(p("12x"), None);
        assert_eq!(p("-1S"), None);
    }

    #[test]
    fn budgets_format_in_the_finest_unit_that_fits() {
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(1000)), "1000000m");
        assert_eq!(format_grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }
}
