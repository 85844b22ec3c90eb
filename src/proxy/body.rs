//! Body wrappers on the data path: a total deadline for request bodies, an
//! idle timeout for response bodies, and a guard that runs when a response
//! body ends (or is dropped), so in-flight counts and durations cover streams.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// The request body did not arrive within the listener's `body_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body not received within the body timeout")]
pub struct BodyTimeout;

/// The response body stopped moving for longer than the route's `idle_timeout`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("response body idle for longer than the idle timeout")]
pub struct IdleTimeout;

pin_project! {
    /// A body that fails with [`BodyTimeout`] once `deadline` has passed.
    pub struct Deadline<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
    }
}

impl<B> Deadline<B> {
    pub fn new(inner: B, deadline: Instant) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline),
        }
    }
}

impl<B> HttpBody for Deadline<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        ready!(this.sleep.poll(cx));
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Runs its closure once, when dropped.
pub struct OnDone<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDone<F> {
    pub fn new(f: F) -> Self {
        Self(Some(f))
    }
}

impl<F: FnOnce()> Drop for OnDone<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

pin_project! {
    /// A response body with an optional idle timeout and a guard released at
    /// its end: the end of the stream, an error, or the client going away.
    pub struct Tracked<B, G> {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        #[pin]
        sleep: Option<Sleep>,
        guard: Option<G>,
    }
}

impl<B, G> Tracked<B, G> {
    pub fn new(inner: B, idle: Option<Duration>, guard: G) -> Self {
        Self {
            inner,
            idle,
            sleep: idle.map(tokio::time::sleep),
            guard: Some(guard),
        }
    }
}

impl<B, G> HttpBody for Tracked<B, G>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(idle), Some(sleep)) = (*this.idle, this.sleep.as_mut().as_pin_mut()) {
                    sleep.reset(Instant::now() + idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                this.guard.take();
                Poll::Ready(other.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(sleep) = this.sleep.as_pin_mut() {
                    ready!(sleep.poll(cx));
                    this.guard.take();
                    return Poll::Ready(Some(Err(IdleTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn pending_body() -> impl HttpBody<Data = Bytes, Error = BoxError> {
        StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >())
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_fails_a_body_that_is_still_arriving() {
        let start = Instant::now();
        let body = Deadline::new(pending_body(), start + Duration::from_secs(5));
        let err = body.collect().await.expect_err("times out");
        assert!(err.is::<BodyTimeout>());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_and_releases_the_guard() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let body = Tracked::new(
            pending_body(),
            Some(Duration::from_secs(2)),
            OnDone::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let mut body = std::pin::pin!(body);
        let err = body.frame().await.expect("a frame").expect_err("idle");
        assert!(err.is::<IdleTimeout>());
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn guard_runs_when_the_body_ends() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let body = Tracked::new(
            http_body_util::Full::new(Bytes::from_static(b"hi")),
            None,
            OnDone::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let mut body = std::pin::pin!(body);
        assert!(body.frame().await.is_some());
        assert!(!done.load(Ordering::SeqCst));
        assert!(body.frame().await.is_none());
        assert!(done.load(Ordering::SeqCst));
    }
}
