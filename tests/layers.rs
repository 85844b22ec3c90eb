//! The resilience layers as tower services under paused time, in front of a
//! scripted upstream: the timeout, the concurrency limit and the circuit
//! breaker, one behaviour per test. (The breaker's pure state machine has its
//! own exhaustive unit tests; these check the async shell around it: what is
//! counted, when, and that every path gives back what it holds.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use breakwater::config::{self, Concurrency, ErrorsSpec, Respond, SlowCall};
use breakwater::metrics::{Metrics, ResilienceMetrics};
use breakwater::proxy::error::{full, ProxyError, Style};
use breakwater::proxy::handler::ConnInfo;
use breakwater::resilience::breaker::state::{Forced, StateName};
use breakwater::resilience::breaker::{Breaker, BreakerCell};
use breakwater::resilience::limit::{Limit, Limiter};
use breakwater::resilience::timeout::{format_grpc_timeout, Timeout};
use breakwater::resilience::{BodyEnd, Ending, Exchange, Hooks, Outcome, Served};
use bytes::Bytes;
use futures_util::{poll, FutureExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Either, Empty};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

type Ex = Exchange<Empty<Bytes>>;

// ---------------------------------------------------------------------------
// The scripted upstream
// ---------------------------------------------------------------------------

/// What the scripted upstream does with the next call.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Answers at once with this status.
    Answer(StatusCode),
    /// Answers with this status after a delay.
    AnswerAfter(Duration, StatusCode),
    /// Never answers.
    Never,
    /// Fails before a response head.
    Fail(ProxyError),
}

/// A tower service standing in for the upstream. Counts its calls, keeps the
/// headers it saw, and counts the futures dropped before they finished.
#[derive(Clone)]
struct Upstream {
    behaviour: Arc<Mutex<Behaviour>>,
    calls: Arc<AtomicUsize>,
    abandoned: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Upstream {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour: Arc::new(Mutex::new(behaviour)),
            calls: Arc::new(AtomicUsize::new(0)),
            abandoned: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("lock") = behaviour;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Futures dropped before they resolved: upstream work released.
    fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// The `grpc-timeout` header of the last request seen.
    fn last_grpc_timeout(&self) -> Option<HeaderValue> {
        let seen = self.seen.lock().expect("lock");
        seen.last()
            .expect("the upstream saw a request")
            .get("grpc-timeout")
            .cloned()
    }
}

/// Counts its future as abandoned if dropped before `finished` is set.
struct DropGuard {
    abandoned: Arc<AtomicUsize>,
    finished: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn response(status: StatusCode) -> Served {
    let mut res = http::Response::new(Either::Right(full(Bytes::from_static(b"ok"))));
    *res.status_mut() = status;
    res
}

impl Service<Ex> for Upstream {
    type Response = Served;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Outcome> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Ex) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .expect("lock")
            .push(ex.req.headers().clone());
        let behaviour = *self.behaviour.lock().expect("lock");
        let guard = DropGuard {
            abandoned: self.abandoned.clone(),
            finished: false,
        };
        Box::pin(async move {
            // Moved in whole, so it lives and dies with this future.
            let mut guard = guard;
            let out = match behaviour {
                Behaviour::Answer(status) => Ok(response(status)),
                Behaviour::AnswerAfter(delay, status) => {
                    tokio::time::sleep(delay).await;
                    Ok(response(status))
                }
                Behaviour::Never => std::future::pending().await,
                Behaviour::Fail(e) => Err(e),
            };
            guard.finished = true;
            out
        })
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn request(style: Style, headers: &[(&'static str, &'static str)]) -> Ex {
    let mut req = http::Request::new(Empty::new());
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    Exchange {
        req,
        conn: ConnInfo {
            peer: "127.0.0.1:1".parse().expect("addr"),
            proto: "http",
            body_timeout: Duration::from_secs(30),
            max_headers: 100,
            client: None,
            client_cert: None,
        },
        request_id: HeaderValue::from_static("t"),
        style,
        received: tokio::time::Instant::now(),
        upload: None,
    }
}

fn plain() -> Ex {
    request(Style::Text, &[])
}

fn grpc(timeout: Option<&'static str>) -> Ex {
    let mut headers = vec![("content-type", "application/grpc")];
    headers.extend(timeout.map(|t| ("grpc-timeout", t)));
    request(Style::Grpc, &headers)
}

/// Calls the service without polling the response future: what the layer
/// decides in `call` has happened when this returns.
fn start<S>(svc: &mut S, ex: Ex) -> S::Future
where
    S: Service<Ex, Response = Served, Error = ProxyError>,
{
    svc.ready()
        .now_or_never()
        .expect("ready at once")
        .expect("ready")
        .call(ex)
}

async fn send<S>(svc: &mut S, ex: Ex) -> Outcome
where
    S: Service<Ex, Response = Served, Error = ProxyError>,
{
    svc.ready().await?.call(ex).await
}

fn ok(out: Outcome) -> Served {
    match out {
        Ok(res) => res,
        Err(e) => panic!("expected a response, got {e:?}"),
    }
}

fn err(out: Outcome) -> ProxyError {
    match out {
        Ok(res) => panic!("expected an error, got a {} response", res.status()),
        Err(e) => e,
    }
}

/// Ends the response's body as the handler does: every hook told how.
fn end_with(mut res: Served, grpc_status: Option<u32>, body: BodyEnd, elapsed: Duration) {
    let hooks = res
        .extensions_mut()
        .remove::<Hooks>()
        .expect("the response carries hooks");
    let ending = Ending {
        status: res.status(),
        grpc_status,
        body,
        elapsed,
    };
    for hook in hooks.0 {
        hook.on_end(&ending);
    }
}

/// The body reached the client, no gRPC status.
fn end(res: Served) {
    end_with(res, None, BodyEnd::Complete, Duration::ZERO);
}

/// The exchange was abandoned: hooks dropped without a verdict.
fn abandon(mut res: Served) {
    let hooks = res.extensions_mut().remove::<Hooks>();
    assert!(hooks.is_some_and(|h| !h.0.is_empty()), "hooks to drop");
}

fn metrics() -> (Metrics, ResilienceMetrics) {
    let all = Metrics::new();
    let route = all.resilience("r");
    (all, route)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------
// Timeout
// ---------------------------------------------------------------------------

fn timeout(up: &Upstream, limit: Option<Duration>, m: &ResilienceMetrics) -> Timeout<Upstream> {
    Timeout::new(up.clone(), limit, m.timeouts.clone())
}

#[tokio::test(start_paused = true)]
async fn timeout_fires_exactly_at_the_deadline_and_drops_the_upstream_request() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);

    let t0 = Instant::now();
    let out = send(&mut svc, plain()).await;

    assert_eq!(err(out), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(m.timeouts.get(), 1);
    assert_eq!(up.calls(), 1);
    assert_eq!(up.abandoned(), 1, "the upstream future was dropped");
}

#[tokio::test(start_paused = true)]
async fn timeout_does_not_fire_when_the_upstream_answers_first() {
    let up = Upstream::new(Behaviour::AnswerAfter(ms(999), StatusCode::OK));
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);

    let t0 = Instant::now();
    let res = ok(send(&mut svc, plain()).await);

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(t0.elapsed(), ms(999));
    assert_eq!(m.timeouts.get(), 0);
    assert_eq!(up.abandoned(), 0);
}

#[tokio::test(start_paused = true)]
async fn timeout_without_a_limit_passes_everything_through() {
    let up = Upstream::new(Behaviour::AnswerAfter(secs(3600), StatusCode::OK));
    let (_all, m) = metrics();
    let mut svc = timeout(&up, None, &m);

    let res = ok(send(&mut svc, plain()).await);

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(m.timeouts.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn shorter_grpc_timeout_wins_and_the_upstream_is_told_the_budget() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);

    let t0 = Instant::now();
    let out = send(&mut svc, grpc(Some("100m"))).await;

    assert_eq!(err(out), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), ms(100));
    assert_eq!(
        up.last_grpc_timeout(),
        Some(format_grpc_timeout(ms(100))),
        "grpc-timeout rewritten to the budget"
    );
    assert_eq!(
        up.last_grpc_timeout(),
        Some(HeaderValue::from_static("100000u"))
    );
    assert_eq!(m.timeouts.get(), 1);
    assert_eq!(up.abandoned(), 1);
}

#[tokio::test(start_paused = true)]
async fn longer_grpc_timeout_does_not_extend_the_route_timeout() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);

    let t0 = Instant::now();
    let out = send(&mut svc, grpc(Some("5S"))).await;

    assert_eq!(err(out), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(up.last_grpc_timeout(), Some(format_grpc_timeout(secs(1))));
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_alone_bounds_a_route_without_a_timeout() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, None, &m);

    let t0 = Instant::now();
    let out = send(&mut svc, grpc(Some("100m"))).await;

    assert_eq!(err(out), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), ms(100));
    assert_eq!(up.last_grpc_timeout(), Some(format_grpc_timeout(ms(100))));
    assert_eq!(m.timeouts.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn route_timeout_is_passed_on_to_grpc_upstreams_that_sent_none() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);

    ok(send(&mut svc, grpc(None)).await);

    assert_eq!(up.last_grpc_timeout(), Some(format_grpc_timeout(secs(1))));
}

#[tokio::test(start_paused = true)]
async fn malformed_grpc_timeout_is_ignored() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();

    // With a route timeout, the route's budget applies and is passed on.
    let mut svc = timeout(&up, Some(secs(1)), &m);
    let t0 = Instant::now();
    let out = send(&mut svc, grpc(Some("soon"))).await;
    assert_eq!(err(out), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(up.last_grpc_timeout(), Some(format_grpc_timeout(secs(1))));

    // Without one, nothing bounds the exchange.
    let mut svc = timeout(&up, None, &m);
    let waited = tokio::time::timeout(secs(3600), send(&mut svc, grpc(Some("123456789m")))).await;
    assert!(waited.is_err(), "still waiting after an hour");
    assert_eq!(m.timeouts.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_on_a_non_grpc_request_is_ignored() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);

    let t0 = Instant::now();
    let out = send(&mut svc, request(Style::Text, &[("grpc-timeout", "100m")])).await;

    assert_eq!(err(out), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), secs(1));
    assert_eq!(
        up.last_grpc_timeout(),
        Some(HeaderValue::from_static("100m")),
        "left as it came"
    );
}

// ---------------------------------------------------------------------------
// Limit
// ---------------------------------------------------------------------------

fn limit(
    up: &Upstream,
    max: usize,
    queue: usize,
    queue_timeout: Duration,
    m: &ResilienceMetrics,
) -> (Limit<Upstream>, Arc<Limiter>) {
    let limiter = Limiter::new(
        Concurrency {
            max,
            queue,
            queue_timeout,
        },
        m.clone(),
    );
    (Limit::new(up.clone(), Some(limiter.clone())), limiter)
}

#[tokio::test(start_paused = true)]
async fn limit_sheds_at_once_when_full_and_there_is_no_queue() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 2, 0, secs(1), &m);

    let first = start(&mut svc, plain());
    let second = start(&mut svc, plain());
    let third = start(&mut svc, plain())
        .now_or_never()
        .expect("shed without waiting");

    assert_eq!(err(third), ProxyError::Overloaded);
    assert_eq!(up.calls(), 2, "a shed request never reaches the upstream");
    assert_eq!(m.shed.get(), 1);
    assert_eq!((limiter.in_use(), m.in_use.get()), (2, 2));

    drop((first, second));
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn queued_request_is_admitted_when_a_permit_is_released() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 1, ms(250), &m);

    let first = ok(send(&mut svc, plain()).await);
    let mut second = start(&mut svc, plain());
    assert!(poll!(&mut second).is_pending(), "second waits in the queue");
    assert_eq!((limiter.queued(), m.queued.get()), (1, 1));

    let third = start(&mut svc, plain())
        .now_or_never()
        .expect("shed without waiting: the queue is full");
    assert_eq!(err(third), ProxyError::Overloaded);
    assert_eq!(m.shed.get(), 1);
    assert_eq!(up.calls(), 1);

    let t0 = Instant::now();
    end(first);
    let second = ok(second.await);
    assert_eq!(t0.elapsed(), Duration::ZERO, "admitted as soon as released");
    assert_eq!(up.calls(), 2);
    assert_eq!((limiter.queued(), m.queued.get()), (0, 0));
    assert_eq!((limiter.in_use(), m.in_use.get()), (1, 1));

    end(second);
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn queued_request_is_shed_after_exactly_the_queue_timeout() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 1, ms(250), &m);
    let _first = start(&mut svc, plain());

    let t0 = Instant::now();
    let out = send(&mut svc, plain()).await;

    assert_eq!(err(out), ProxyError::Overloaded);
    assert_eq!(t0.elapsed(), ms(250));
    assert_eq!((limiter.queued(), m.queued.get()), (0, 0));
    assert_eq!(m.shed.get(), 1);
    assert_eq!(up.calls(), 1);

    // The slot is free again: the next request queues (and waits) too.
    let t1 = Instant::now();
    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::Overloaded);
    assert_eq!(t1.elapsed(), ms(250));
}

#[tokio::test(start_paused = true)]
async fn limit_releases_the_permit_at_once_when_the_upstream_fails() {
    let up = Upstream::new(Behaviour::Fail(ProxyError::UpstreamUnreachable));
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 0, secs(1), &m);

    let out = send(&mut svc, plain()).await;

    assert_eq!(err(out), ProxyError::UpstreamUnreachable);
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
    up.set(Behaviour::Answer(StatusCode::OK));
    end(ok(send(&mut svc, plain()).await));
    assert_eq!(m.shed.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn limit_holds_the_permit_until_the_response_body_ends() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 0, secs(1), &m);

    let res = ok(send(&mut svc, plain()).await);
    assert_eq!((limiter.in_use(), m.in_use.get()), (1, 1));
    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::Overloaded);

    end(res);
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
    end(ok(send(&mut svc, plain()).await));
}

#[tokio::test(start_paused = true)]
async fn limit_releases_the_permit_when_the_response_is_abandoned() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 0, secs(1), &m);

    let res = ok(send(&mut svc, plain()).await);
    assert_eq!(limiter.in_use(), 1);

    abandon(res);
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn limit_releases_the_permit_when_the_request_is_dropped_in_flight() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 0, secs(1), &m);

    let mut fut = start(&mut svc, plain());
    assert!(poll!(&mut fut).is_pending());
    assert_eq!(limiter.in_use(), 1);

    drop(fut);
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
    assert_eq!(up.abandoned(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_request_frees_its_queue_slot_and_never_calls_upstream() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let (mut svc, limiter) = limit(&up, 1, 1, secs(1), &m);
    let first = start(&mut svc, plain());

    let mut queued = start(&mut svc, plain());
    assert!(poll!(&mut queued).is_pending());
    assert_eq!((limiter.queued(), m.queued.get()), (1, 1));

    drop(queued);
    assert_eq!(
        (limiter.queued(), m.queued.get()),
        (0, 0),
        "queue slot and gauge released"
    );
    assert_eq!(up.calls(), 1);

    // The slot can be used again: this one queues instead of being shed.
    let mut next = start(&mut svc, plain());
    assert!(poll!(&mut next).is_pending(), "queued, not shed");
    up.set(Behaviour::Answer(StatusCode::OK));
    drop(first);
    drop(ok(next.await));
    assert_eq!(up.calls(), 2);
    assert_eq!(m.shed.get(), 0);
}

// ---------------------------------------------------------------------------
// Breaker
// ---------------------------------------------------------------------------

/// Two calls at least, tripping when half are slower than 100 ms.
fn slow_call_config() -> config::Breaker {
    config::Breaker {
        slow_call: Some(SlowCall {
            threshold: ms(100),
            percent: 50.0,
        }),
        ..breaker_config(2)
    }
}

fn breaker_config(min_requests: u32) -> config::Breaker {
    config::Breaker {
        window: secs(10),
        buckets: 10,
        min_requests,
        error_percent: 50.0,
        open_for: secs(5),
        half_open_probes: 1,
        errors: ErrorsSpec::default(),
        slow_call: None,
        fallback: None,
    }
}

fn breaker(
    up: &Upstream,
    cfg: config::Breaker,
    m: &ResilienceMetrics,
) -> (Breaker<Upstream>, Arc<BreakerCell>) {
    let cell = BreakerCell::new("r".into(), cfg, m.clone());
    (Breaker::new(up.clone(), Some(cell.clone())), cell)
}

/// Two successes, a 500 and a connect error: 50 % of 4 requests.
async fn trip<S>(svc: &mut S, up: &Upstream)
where
    S: Service<Ex, Response = Served, Error = ProxyError>,
{
    up.set(Behaviour::Answer(StatusCode::OK));
    end(ok(send(svc, plain()).await));
    end(ok(send(svc, plain()).await));
    up.set(Behaviour::Answer(StatusCode::INTERNAL_SERVER_ERROR));
    end(ok(send(svc, plain()).await));
    up.set(Behaviour::Fail(ProxyError::UpstreamUnreachable));
    assert_eq!(
        err(send(svc, plain()).await),
        ProxyError::UpstreamUnreachable
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_at_the_error_percentage_and_fails_fast_without_calling_upstream() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(4), &m);

    trip(&mut svc, &up).await;
    let counts = cell.snapshot().counts;
    assert_eq!((counts.successes, counts.failures), (2, 2));
    assert_eq!(cell.snapshot().state, StateName::Open);
    assert_eq!(up.calls(), 4);

    let rejected = start(&mut svc, plain()).now_or_never().expect("fails fast");
    assert_eq!(err(rejected), ProxyError::BreakerOpen);
    assert_eq!(up.calls(), 4, "the upstream is not called");
    assert_eq!(m.breaker_rejected.get(), 1);

    let text = String::from_utf8(all.render()).expect("utf-8");
    assert!(
        text.contains(r#"breakwater_breaker_state{route="r",state="open"} 1"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_below_min_requests_never_opens() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::INTERNAL_SERVER_ERROR));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(4), &m);

    for _ in 0..3 {
        end(ok(send(&mut svc, plain()).await));
    }

    assert_eq!(cell.snapshot().counts.failures, 3);
    assert_eq!(cell.snapshot().state, StateName::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_breaker_answers_with_the_fallback_response() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    let cfg = config::Breaker {
        fallback: Some(Respond {
            status: StatusCode::ACCEPTED,
            body: Bytes::from_static(b"cached"),
            headers,
        }),
        ..breaker_config(4)
    };
    let (mut svc, _cell) = breaker(&up, cfg, &m);
    trip(&mut svc, &up).await;

    let res = ok(start(&mut svc, plain())
        .now_or_never()
        .expect("answers at once"));

    assert_eq!(up.calls(), 4, "the upstream is not called");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.headers()["x-breakwater-reason"], "breaker-open");
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert!(
        res.extensions().get::<Hooks>().is_none(),
        "nothing to judge"
    );
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, Bytes::from_static(b"cached"));
    assert_eq!(m.breaker_rejected.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn breaker_lets_one_probe_through_after_open_for_and_closes_on_its_success() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(4), &m);
    trip(&mut svc, &up).await;

    tokio::time::advance(secs(5) - ms(1)).await;
    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::BreakerOpen);
    tokio::time::advance(ms(1)).await;

    up.set(Behaviour::Answer(StatusCode::OK));
    let probe = ok(send(&mut svc, plain()).await);
    assert_eq!(up.calls(), 5, "the probe reached the upstream");
    assert_eq!(cell.snapshot().state, StateName::HalfOpen);
    assert_eq!(
        err(send(&mut svc, plain()).await),
        ProxyError::BreakerOpen,
        "one probe at a time"
    );
    assert_eq!(up.calls(), 5);

    end(probe);
    assert_eq!(cell.snapshot().state, StateName::Closed);
    end(ok(send(&mut svc, plain()).await));
    assert_eq!(up.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn failed_probe_opens_the_breaker_again() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(4), &m);
    trip(&mut svc, &up).await;
    tokio::time::advance(secs(5)).await;

    up.set(Behaviour::Answer(StatusCode::BAD_GATEWAY));
    end(ok(send(&mut svc, plain()).await));

    assert_eq!(cell.snapshot().state, StateName::Open);
    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::BreakerOpen);
}

#[tokio::test(start_paused = true)]
async fn grpc_status_decides_even_when_the_http_status_is_200() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(10), &m);

    let res = ok(send(&mut svc, grpc(None)).await);
    end_with(res, Some(14), BodyEnd::Complete, ms(1));
    let counts = cell.snapshot().counts;
    assert_eq!((counts.successes, counts.failures), (0, 1), "UNAVAILABLE");

    let res = ok(send(&mut svc, grpc(None)).await);
    end_with(res, Some(0), BodyEnd::Complete, ms(1));
    let counts = cell.snapshot().counts;
    assert_eq!((counts.successes, counts.failures), (1, 1), "OK");

    // A caller's error (INVALID_ARGUMENT) is an answer, not a failure.
    let res = ok(send(&mut svc, grpc(None)).await);
    end_with(res, Some(3), BodyEnd::Complete, ms(1));
    let counts = cell.snapshot().counts;
    assert_eq!((counts.successes, counts.failures), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn grpc_failures_with_http_200_open_the_breaker() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(2), &m);

    for _ in 0..2 {
        let res = ok(send(&mut svc, grpc(None)).await);
        end_with(res, Some(14), BodyEnd::Complete, ms(1));
    }

    assert_eq!(cell.snapshot().state, StateName::Open);
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_the_upstreams_never_count() {
    let up = Upstream::new(Behaviour::Fail(ProxyError::Overloaded));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(1), &m);

    for e in [
        ProxyError::Overloaded,
        ProxyError::BadRequest,
        ProxyError::BodyTimeout,
        ProxyError::HeadersTooLarge,
    ] {
        up.set(Behaviour::Fail(e));
        assert_eq!(err(send(&mut svc, plain()).await), e);
    }

    assert_eq!(cell.snapshot().counts.total(), 0);
    assert_eq!(cell.snapshot().state, StateName::Closed);
}

#[tokio::test(start_paused = true)]
async fn abandoned_exchanges_never_count() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::INTERNAL_SERVER_ERROR));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(1), &m);

    // Hooks dropped without a verdict.
    abandon(ok(send(&mut svc, plain()).await));
    // The client went away before a 200's body was done.
    up.set(Behaviour::Answer(StatusCode::OK));
    let res = ok(send(&mut svc, plain()).await);
    end_with(res, None, BodyEnd::ClientGone, ms(1));
    // The breaker's future dropped before the upstream answered.
    up.set(Behaviour::Never);
    let mut fut = start(&mut svc, plain());
    assert!(poll!(&mut fut).is_pending());
    drop(fut);

    assert_eq!(up.abandoned(), 1);
    assert_eq!(cell.snapshot().counts.total(), 0);
    assert_eq!(cell.snapshot().state, StateName::Closed);
}

/// Opens a `min_requests: 1` breaker with one 500 and waits out `open_for`.
async fn half_open(svc: &mut Breaker<Upstream>, up: &Upstream) {
    up.set(Behaviour::Answer(StatusCode::INTERNAL_SERVER_ERROR));
    end(ok(send(svc, plain()).await));
    assert_eq!(err(send(svc, plain()).await), ProxyError::BreakerOpen);
    tokio::time::advance(secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_gives_its_half_open_slot_back() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(1), &m);
    half_open(&mut svc, &up).await;

    up.set(Behaviour::Never);
    let mut probe = start(&mut svc, plain());
    assert!(poll!(&mut probe).is_pending());
    assert_eq!(cell.snapshot().state, StateName::HalfOpen);
    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::BreakerOpen);
    let calls = up.calls();

    drop(probe);
    let mut next = start(&mut svc, plain());
    assert!(poll!(&mut next).is_pending(), "admitted as the next probe");
    assert_eq!(up.calls(), calls + 1);
    assert_eq!(cell.snapshot().state, StateName::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn abandoned_probe_response_gives_its_half_open_slot_back() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(1), &m);
    half_open(&mut svc, &up).await;

    up.set(Behaviour::Answer(StatusCode::OK));
    abandon(ok(send(&mut svc, plain()).await));

    let probe = ok(send(&mut svc, plain()).await);
    assert_eq!(cell.snapshot().state, StateName::HalfOpen);
    end(probe);
    assert_eq!(cell.snapshot().state, StateName::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker_even_with_status_200() {
    let up = Upstream::new(Behaviour::AnswerAfter(ms(150), StatusCode::OK));
    let (_all, m) = metrics();
    let cfg = slow_call_config();
    let (mut svc, cell) = breaker(&up, cfg, &m);

    for _ in 0..2 {
        end(ok(send(&mut svc, plain()).await));
    }

    let snap = cell.snapshot();
    assert_eq!((snap.counts.successes, snap.counts.slow), (2, 2));
    assert_eq!(snap.state, StateName::Open);
    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::BreakerOpen);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rule_judges_the_time_to_the_response_head() {
    let up = Upstream::new(Behaviour::AnswerAfter(ms(50), StatusCode::OK));
    let (_all, m) = metrics();
    let cfg = slow_call_config();
    let (mut svc, cell) = breaker(&up, cfg, &m);

    for _ in 0..2 {
        let res = ok(send(&mut svc, plain()).await);
        // A long body (a stream) is not a slow upstream.
        tokio::time::advance(secs(1)).await;
        end_with(res, None, BodyEnd::Complete, secs(1));
    }

    let snap = cell.snapshot();
    assert_eq!((snap.counts.successes, snap.counts.slow), (2, 0));
    assert_eq!(snap.state, StateName::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_open_rejects_at_once_and_reset_closes() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::OK));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(4), &m);

    cell.force(Forced::Open);
    let rejected = start(&mut svc, plain()).now_or_never().expect("fails fast");
    assert_eq!(err(rejected), ProxyError::BreakerOpen);
    assert_eq!(cell.snapshot().state, StateName::ForcedOpen);
    assert_eq!(up.calls(), 0);

    cell.reset();
    assert_eq!(cell.snapshot().state, StateName::Closed);
    end(ok(send(&mut svc, plain()).await));
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn forced_closed_admits_whatever_the_window_says() {
    let up = Upstream::new(Behaviour::Answer(StatusCode::INTERNAL_SERVER_ERROR));
    let (_all, m) = metrics();
    let (mut svc, cell) = breaker(&up, breaker_config(1), &m);

    cell.force(Forced::Closed);
    for _ in 0..3 {
        end(ok(send(&mut svc, plain()).await));
    }

    assert_eq!(cell.snapshot().state, StateName::ForcedClosed);
    assert_eq!(cell.snapshot().counts.failures, 3, "still counted");
    assert_eq!(up.calls(), 3);
}

// ---------------------------------------------------------------------------
// The layers stacked as a route builds them
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn route_timeout_under_the_breaker_counts_as_a_timeout() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let cell = BreakerCell::new("r".into(), breaker_config(1), m.clone());
    let mut svc = Breaker::new(timeout(&up, Some(secs(1)), &m), Some(cell.clone()));

    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::Timeout);

    let snap = cell.snapshot();
    assert_eq!(snap.counts.timeouts, 1);
    assert_eq!(snap.state, StateName::Open);
    assert_eq!(up.abandoned(), 1);
}

#[tokio::test(start_paused = true)]
async fn full_stack_releases_the_permit_on_timeout_and_on_breaker_rejection() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let limiter = Limiter::new(
        Concurrency {
            max: 1,
            queue: 0,
            queue_timeout: secs(1),
        },
        m.clone(),
    );
    let cell = BreakerCell::new("r".into(), breaker_config(1), m.clone());
    let mut svc = Limit::new(
        Breaker::new(timeout(&up, Some(secs(1)), &m), Some(cell.clone())),
        Some(limiter.clone()),
    );

    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::Timeout);
    assert_eq!(limiter.in_use(), 0);

    assert_eq!(err(send(&mut svc, plain()).await), ProxyError::BreakerOpen);
    assert_eq!((limiter.in_use(), m.in_use.get()), (0, 0));
    assert_eq!(m.shed.get(), 0);
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn time_queued_for_a_permit_is_taken_off_the_grpc_budget() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let limiter = Limiter::new(
        Concurrency {
            max: 1,
            queue: 1,
            queue_timeout: secs(5),
        },
        m.clone(),
    );
    let mut svc = Limit::new(timeout(&up, Some(secs(1)), &m), Some(limiter));
    let first = start(&mut svc, plain());

    let t0 = Instant::now();
    let mut queued = Box::pin(start(&mut svc, grpc(Some("300m"))));
    assert!(poll!(&mut queued).is_pending());
    tokio::time::advance(ms(200)).await;
    drop(first);
    up.set(Behaviour::Never);

    assert_eq!(err(queued.await), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), ms(300), "the deadline counts from arrival");
    assert_eq!(
        up.last_grpc_timeout(),
        Some(format_grpc_timeout(ms(100))),
        "the upstream is told what is left after the queue"
    );
}

#[tokio::test(start_paused = true)]
async fn route_timeout_starts_when_the_request_body_has_arrived() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(1)), &m);
    let t0 = Instant::now();
    let upload = breakwater::resilience::Upload::new(t0);
    let mut ex = plain();
    ex.received = t0;
    ex.upload = Some(upload.clone());
    let mut fut = Box::pin(start(&mut svc, ex));

    // A slow upload: 1.5 s of it, longer than the route timeout.
    tokio::time::advance(ms(1500)).await;
    assert!(
        poll!(&mut fut).is_pending(),
        "the client's upload time is not the upstream's"
    );
    upload.finish();

    assert_eq!(err(fut.await), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), ms(2500), "1 s after the body was complete");
}

#[tokio::test(start_paused = true)]
async fn grpc_deadline_counts_from_arrival_even_during_an_upload() {
    let up = Upstream::new(Behaviour::Never);
    let (_all, m) = metrics();
    let mut svc = timeout(&up, Some(secs(5)), &m);
    let t0 = Instant::now();
    let mut ex = grpc(Some("300m"));
    ex.received = t0;
    ex.upload = Some(breakwater::resilience::Upload::new(t0));

    assert_eq!(err(send(&mut svc, ex).await), ProxyError::Timeout);
    assert_eq!(t0.elapsed(), ms(300));
}
