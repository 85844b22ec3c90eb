//! Body wrappers on the data path: a total deadline for request bodies, an
//! idle timeout for response bodies that also reports how the body ended
//! (so in-flight counts, permits and the breaker cover whole streams).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::resilience::{BodyEnd, Upload};
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
    /// A request body that fails with [`BodyTimeout`] once `deadline` has
    /// passed, and marks `upload` finished when it ends cleanly.
    pub struct Deadline<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        upload: Option<Arc<Upload>>,
    }
}

impl<B> Deadline<B> {
    pub fn new(inner: B, deadline: Instant, upload: Option<Arc<Upload>>) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep_until(deadline),
            upload,
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
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.as_mut().poll_frame(cx) {
            let clean_end = match &frame {
                None => true,
                Some(Ok(_)) => this.inner.is_end_stream(),
                Some(Err(_)) => false,
            };
            if let (true, Some(upload)) = (clean_end, this.upload.as_ref()) {
                upload.finish();
            }
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

pin_project! {
    /// A response body with an optional idle timeout that tells `on_end`
    /// once how it ended: complete (with the `grpc-status` of its trailers,
    /// if any), cut by the idle timeout, broken by the upstream, or dropped
    /// because the client went away.
    pub struct Tracked<B, F>
    where
        B: HttpBody,
        F: FnOnce(BodyEnd, Option<u32>),
    {
        #[pin]
        inner: B,
        idle: Option<Duration>,
        #[pin]
        sleep: Option<Sleep>,
        on_end: Option<F>,
        trailer_grpc: Option<u32>,
        last_frame: Instant,
    }

    impl<B, F> PinnedDrop for Tracked<B, F>
    where
        B: HttpBody,
        F: FnOnce(BodyEnd, Option<u32>),
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                // hyper never polls a body that says it is empty.
                let how = if this.inner.is_end_stream() {
                    BodyEnd::Complete
                } else {
                    BodyEnd::ClientGone
                };
                f(how, *this.trailer_grpc);
            }
        }
    }
}

impl<B: HttpBody, F: FnOnce(BodyEnd, Option<u32>)> Tracked<B, F> {
    pub fn new(inner: B, idle: Option<Duration>, on_end: F) -> Self {
        Self {
            inner,
            idle,
            sleep: idle.map(tokio::time::sleep),
            on_end: Some(on_end),
            trailer_grpc: None,
            last_frame: Instant::now(),
        }
    }
}

impl<B, F> HttpBody for Tracked<B, F>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(BodyEnd, Option<u32>),
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    *this.trailer_grpc = crate::resilience::grpc_status(trailers);
                }
                if this.idle.is_some() {
                    // Re-arming the timer on every frame is costly; the timer
                    // checks this when it fires instead.
                    *this.last_frame = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                if let Some(f) = this.on_end.take() {
                    f(BodyEnd::Complete, *this.trailer_grpc);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = this.on_end.take() {
                    f(BodyEnd::UpstreamError, *this.trailer_grpc);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let (Some(idle), Some(mut sleep)) = (*this.idle, this.sleep.as_pin_mut()) else {
                    return Poll::Pending;
                };
                loop {
                    ready!(sleep.as_mut().poll(cx));
                    let quiet_until = *this.last_frame + idle;
                    if Instant::now() < quiet_until {
                        // A frame came since the timer was set: wait on.
                        sleep.as_mut().reset(quiet_until);
                        continue;
                    }
                    if let Some(f) = this.on_end.take() {
                        f(BodyEnd::IdleTimeout, *this.trailer_grpc);
                    }
                    return Poll::Ready(Some(Err(IdleTimeout.into())));
                }
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
    use std::sync::{Arc, Mutex};

    fn pending_body() -> impl HttpBody<Data = Bytes, Error = BoxError> {
        StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >())
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_fails_a_body_that_is_still_arriving() {
        let start = Instant::now();
        let body = Deadline::new(pending_body(), start + Duration::from_secs(5), None);
        let err = body.collect().await.expect_err("times out");
        assert!(err.is::<BodyTimeout>());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_and_releases_the_guard() {
        let ended = Arc::new(Mutex::new(None));
        let seen = ended.clone();
        let body = Tracked::new(
            pending_body(),
            Some(Duration::from_secs(2)),
            move |how, _| *seen.lock().expect("lock") = Some(how),
        );
        let mut body = std::pin::pin!(body);
        let err = body.frame().await.expect("a frame").expect_err("idle");
        assert!(err.is::<IdleTimeout>());
        assert_eq!(*ended.lock().expect("lock"), Some(BodyEnd::IdleTimeout));
    }

    type Seen = Arc<Mutex<Option<(BodyEnd, Option<u32>)>>>;

    fn recorder() -> (Seen, impl FnOnce(BodyEnd, Option<u32>)) {
        let ended = Arc::new(Mutex::new(None));
        let seen = ended.clone();
        (ended, move |how, grpc| {
            *seen.lock().expect("lock") = Some((how, grpc))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_counts_from_the_last_frame() {
        let frames = futures_util::stream::unfold(0u32, |n| async move {
            if n == 3 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))),
                n + 1,
            ))
        });
        let (ended, on_end) = recorder();
        let start = Instant::now();
        let body = Tracked::new(
            StreamBody::new(frames),
            Some(Duration::from_secs(2)),
            on_end,
        );
        let err = body
            .collect()
            .await
            .expect_err("idle after the third frame");
        assert!(err.is::<IdleTimeout>());
        assert_eq!(start.elapsed(), Duration::from_millis(4500 + 2000));
        assert_eq!(
            *ended.lock().expect("lock"),
            Some((BodyEnd::IdleTimeout, None))
        );
    }

    #[tokio::test]
    async fn end_is_reported_once_the_body_is_complete() {
        let (ended, on_end) = recorder();
        let body = Tracked::new(
            http_body_util::Full::new(Bytes::from_static(b"hi")),
            None,
            on_end,
        );
        let mut body = std::pin::pin!(body);
        assert!(body.frame().await.is_some());
        assert!(ended.lock().expect("lock").is_none());
        assert!(body.frame().await.is_none());
        assert_eq!(
            *ended.lock().expect("lock"),
            Some((BodyEnd::Complete, None))
        );
    }

    #[tokio::test]
    async fn grpc_status_is_read_from_trailers() {
        let (ended, on_end) = recorder();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = Tracked::new(
            StreamBody::new(futures_util::stream::iter(frames)),
            None,
            on_end,
        );
        body.collect().await.expect("body");
        assert_eq!(
            *ended.lock().expect("lock"),
            Some((BodyEnd::Complete, Some(14)))
        );
    }

    #[tokio::test]
    async fn a_body_dropped_midway_reports_the_client_gone() {
        let (ended, on_end) = recorder();
        drop(Tracked::new(pending_body(), None, on_end));
        assert_eq!(
            *ended.lock().expect("lock"),
            Some((BodyEnd::ClientGone, None))
        );
    }

    #[tokio::test]
    async fn an_empty_body_dropped_unpolled_is_complete() {
        let (ended, on_end) = recorder();
        drop(Tracked::new(
            http_body_util::Empty::<Bytes>::new(),
            None,
            on_end,
        ));
        assert_eq!(
            *ended.lock().expect("lock"),
            Some((BodyEnd::Complete, None))
        );
    }
}
