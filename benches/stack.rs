//! Per-request cost of a route's resilience stack (limit → breaker →
//! timeout) over a mock upstream that answers at once, against calling the
//! mock directly. Each iteration does what the handler and the response body
//! do per request: clone the stack, `poll_ready`, `call`, then take the
//! end hooks out of the response and run them as a completed body would.

use std::future::{poll_fn, Ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Bencher, Criterion};
use http::HeaderValue;
use http_body_util::{Either, Empty};
use tokio::runtime::Runtime;
use tower::Service;

use breakwater::config::Concurrency;
use breakwater::metrics::Metrics;
use breakwater::proxy::error::{full, ProxyError, Style};
use breakwater::proxy::handler::ConnInfo;
use breakwater::resilience::breaker::{Breaker, BreakerCell};
use breakwater::resilience::limit::{Limit, Limiter};
use breakwater::resilience::timeout::Timeout;
use breakwater::resilience::{BodyEnd, Ending, Exchange, Hooks, Outcome, Served};

type Req = Empty<Bytes>;

/// The upstream: answers `200 ok` without waiting.
#[derive(Clone, Copy)]
struct Mock;

impl Service<Exchange<Req>> for Mock {
    type Response = Served;
    type Error = ProxyError;
    type Future = Ready<Outcome>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Exchange<Req>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(Either::Right(full(
            Bytes::from_static(b"ok"),
        )))))
    }
}

fn exchange(conn: ConnInfo) -> Exchange<Req> {
    Exchange {
        req: http::Request::new(Empty::<Bytes>::new()),
        conn,
        request_id: HeaderValue::from_static("x"),
        style: Style::Text,
        received: tokio::time::Instant::now(),
        upload: None,
    }
}

/// What the proxy does when the response body has been sent in full: runs
/// the layers' hooks, releasing permits and recording breaker verdicts.
fn end(out: Outcome) {
    let Ok(mut res) = out else {
        panic!("the mock always answers");
    };
    if let Some(hooks) = res.extensions_mut().remove::<Hooks>() {
        let ending = Ending {
            status: res.status(),
            grpc_status: None,
            body: BodyEnd::Complete,
            // The handler measures this whether or not layers are configured;
            // a constant keeps clock reads out of the comparison.
            elapsed: Duration::from_micros(1),
        };
        for hook in hooks.0 {
            hook.on_end(&ending);
        }
    }
    black_box(res);
}

fn run<S>(b: &mut Bencher<'_>, rt: &Runtime, stack: &S, conn: ConnInfo)
where
    S: Service<Exchange<Req>, Response = Served, Error = ProxyError> + Clone,
{
    b.to_async(rt).iter(|| {
        let conn = conn.clone();
        async move {
            let mut stack = black_box(stack).clone();
            let ready = poll_fn(|cx| stack.poll_ready(cx)).await;
            debug_assert!(ready.is_ok());
            end(stack.call(black_box(exchange(conn))).await);
        }
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Layers read the clock and create `Sleep`s: they need the runtime's context.
    let _guard = rt.enter();

    let conn = ConnInfo {
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        proto: "http",
        body_timeout: Duration::from_secs(30),
        max_headers: 100,
        client: None,
        client_cert: None,
    };
    let metrics = Metrics::new();
    let res = metrics.resilience("bench");

    let limiter = Limiter::new(
        Concurrency {
            max: 100,
            queue: 0,
            queue_timeout: Duration::from_secs(1),
        },
        res.clone(),
    );
    let cell = BreakerCell::new(
        Arc::from("bench"),
        breakwater::config::Breaker::default(),
        res.clone(),
    );
    let on = Limit::new(
        Breaker::new(
            Timeout::new(Mock, Some(Duration::from_secs(1)), res.timeouts.clone()),
            Some(cell.clone()),
        ),
        Some(limiter.clone()),
    );
    let off = Limit::new(
        Breaker::new(Timeout::new(Mock, None, res.timeouts.clone()), None),
        None,
    );

    let mut group = c.benchmark_group("stack");
    group.bench_function("passthrough", |b| run(b, &rt, &Mock, conn.clone()));
    group.bench_function("layers_on", |b| run(b, &rt, &on, conn.clone()));
    group.bench_function("layers_present_but_unconfigured", |b| {
        run(b, &rt, &off, conn.clone())
    });
    group.finish();

    // Every permit came back and no call was held against the upstream.
    assert_eq!(limiter.in_use(), 0, "permits leaked");
    assert_eq!(res.in_use.get(), 0, "in-use gauge drifted");
    assert_eq!(res.shed.get(), 0, "requests were shed");
    assert_eq!(res.timeouts.get(), 0, "requests timed out");
    assert_eq!(res.breaker_rejected.get(), 0, "breaker rejected requests");
    assert_eq!(
        cell.snapshot().counts.errors(),
        0,
        "breaker recorded errors"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
