//! The resilience layers end to end, against real sockets: the circuit
//! breaker (opening, half-open recovery, gRPC failures sent as HTTP 200,
//! state across reloads), the route timeout (504, `grpc-status: 4`, the
//! upstream connection released, `grpc-timeout` propagation) and the
//! concurrency limit (shedding across HTTP/1.1 and h2c, the queue, permits
//! held until the response body ends).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{
    breaker_of, config_with, eventually, full, get_within, h1_client, h2_client, metric,
    post_within, reason_of, route_status, scrape, upstream, within, Proxy, TestBody,
};
use futures_util::stream;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER, TE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Barrier};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The breaker of tests 1 and 2: trips at 50 % errors once 10 requests are in
/// the window, stays open for 1 s.
const FLAKY_BREAKER: &str =
    "breaker: { window: 10s, buckets: 10, min_requests: 10, error_percent: 50, open_for: 1s }";

// ---------------------------------------------------------------------------
// Circuit breaker.

#[tokio::test]
async fn breaker_opens_on_errors_and_the_upstream_sees_nothing_while_open() {
    let flaky = Flaky::new(Mode::SixtyPercent);
    let up = flaky_upstream(flaky.clone()).await;
    let proxy = Proxy::start(&config_with(up, "", &catch_all(FLAKY_BREAKER))).await;

    let opened_at = send_until_open(&proxy.url("/x")).await;

    assert!(
        (10..=12).contains(&opened_at),
        "the breaker opened at request {opened_at}: expected at min_requests (10) or right after"
    );
    let reached = flaky.seen();
    assert_eq!(
        reached, opened_at,
        "every request before the refusal reached the upstream"
    );
    for i in 0..20 {
        let (status, headers, body) = get_within(&proxy.url("/x")).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {i} while open: {body}"
        );
        assert_eq!(
            reason_of(&headers),
            "breaker-open",
            "request {i} while open"
        );
    }
    assert_eq!(flaky.seen(), reached, "the upstream saw nothing while open");
}

#[tokio::test]
async fn breaker_half_opens_after_open_for_a_failing_probe_reopens_and_a_good_one_closes() {
    let flaky = Flaky::new(Mode::SixtyPercent);
    let up = flaky_upstream(flaky.clone()).await;
    let proxy = Proxy::start(&config_with(up, "", &catch_all(FLAKY_BREAKER))).await;
    let url = proxy.url("/x");
    send_until_open(&url).await;
    let opened = Instant::now();
    assert_eq!(breaker_of(&proxy, "app").await["state"], "open");

    // A failing probe: the one request let through after open_for reopens it.
    flaky.set(Mode::Failing);
    let before = flaky.seen();
    let (status, headers) = first_request_through(&url).await;
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "a probe went through {:?} after the breaker opened (open_for is 1s)",
        opened.elapsed()
    );
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::INTERNAL_SERVER_ERROR, ""),
        "the probe reached the failing upstream"
    );
    assert_eq!(flaky.seen(), before + 1, "exactly one probe");
    eventually("the failed probe reopens the breaker", || async {
        (breaker_of(&proxy, "app").await["state"] == "open").then_some(())
    })
    .await;
    let (status, headers, _) = get_within(&url).await;
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::SERVICE_UNAVAILABLE, "breaker-open")
    );

    // A good probe, another open_for later, closes it with a fresh window.
    flaky.set(Mode::Healthy);
    let (status, headers) = first_request_through(&url).await;
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::OK, ""),
        "the probe succeeded"
    );
    eventually("the good probe closes the breaker", || async {
        (breaker_of(&proxy, "app").await["state"] == "closed").then_some(())
    })
    .await;
    for i in 0..10 {
        let (status, headers, body) = get_within(&url).await;
        assert_eq!(
            (status, reason_of(&headers)),
            (StatusCode::OK, ""),
            "request {i} after closing: {body}"
        );
    }
    let b = breaker_of(&proxy, "app").await;
    assert_eq!(b["state"], "closed");
    assert_eq!(b["last_transition"]["from"], "half_open");
    assert_eq!(b["last_transition"]["to"], "closed");
}

#[tokio::test]
async fn grpc_failures_sent_with_http_200_trip_the_breaker() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let up = upstream(move |_req: Request<Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            grpc_response(vec![grpc_trailers("14")])
        }
    })
    .await;
    let breaker = "breaker: { min_requests: 5, error_percent: 50, open_for: 30s }";
    let proxy = Proxy::start(&config_with(up, "protocol: http2", &catch_all(breaker))).await;
    let client = h2_client();

    let mut opened_at = None;
    for i in 0..30 {
        let (parts, trailers) = grpc_call(&client, &proxy.url("/svc.Svc/Call"), &[]).await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "call {i}: gRPC errors travel as HTTP 200"
        );
        if reason_of(&parts.headers) == "breaker-open" {
            assert_eq!(parts.headers["grpc-status"], "14", "UNAVAILABLE while open");
            assert_eq!(parts.headers[CONTENT_TYPE], "application/grpc");
            assert_eq!(
                trailers, None,
                "trailers-only: the head is the whole response"
            );
            opened_at = Some(i);
            break;
        }
        let trailers = trailers.unwrap_or_else(|| panic!("call {i}: no trailers"));
        assert_eq!(
            trailers["grpc-status"], "14",
            "call {i}: the upstream's status passes through"
        );
    }
    let opened_at = opened_at.expect("the breaker opened within 30 calls");
    assert!(
        (5..=7).contains(&opened_at),
        "opened at call {opened_at}; min_requests is 5"
    );
    let reached = seen.load(Ordering::SeqCst);
    assert_eq!(reached, opened_at);
    for i in 0..10 {
        let (parts, _) = grpc_call(&client, &proxy.url("/svc.Svc/Call"), &[]).await;
        assert_eq!(
            reason_of(&parts.headers),
            "breaker-open",
            "call {i} while open"
        );
        assert_eq!(parts.headers["grpc-status"], "14", "call {i} while open");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        reached,
        "the upstream count stopped growing"
    );
}

#[tokio::test]
async fn breaker_state_survives_a_reload_only_while_its_config_is_unchanged() {
    let up = upstream(|req: Request<Incoming>| async move {
        let mut res = Response::new(full("answer"));
        if req.uri().path().starts_with("/tripped") {
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        res
    })
    .await;
    let yaml = |tripped_percent: u32, forced_open_for: &str, other_timeout: &str| {
        let routes = format!(
            "  - {{ name: tripped, match: {{ path_prefix: /tripped }}, upstream: app,
      breaker: {{ min_requests: 3, error_percent: {tripped_percent}, open_for: 60s }} }}
  - {{ name: forced, match: {{ path_prefix: /forced }}, upstream: app,
      breaker: {{ min_requests: 3, open_for: {forced_open_for} }} }}
  - {{ name: other, match: {{ path_prefix: / }}, upstream: app, timeout: {other_timeout} }}"
        );
        config_with(up, "", &routes)
    };
    let parse = |text: String| {
        breakwater::config::parse(Path::new("reload.yaml"), &text)
            .unwrap_or_else(|e| panic!("reload config is invalid:\n{e}"))
    };
    let proxy = Proxy::start(&yaml(50, "60s", "5s")).await;
    send_until_open(&proxy.url("/tripped")).await;
    let (status, _, body) = post_within(&proxy.admin_url("/breakers/forced/open")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An unrelated route changes: both breakers keep their state.
    let cfg = parse(yaml(50, "60s", "6s"));
    within("reload", proxy.app.apply(cfg))
        .await
        .expect("reload applies");
    assert_eq!(
        route_status(&proxy, "other").await["timeout_ms"],
        6000,
        "the reload took effect"
    );
    assert_eq!(breaker_of(&proxy, "tripped").await["state"], "open");
    assert_eq!(breaker_of(&proxy, "forced").await["state"], "forced_open");
    for path in ["/tripped", "/forced"] {
        let (status, headers, _) = get_within(&proxy.url(path)).await;
        assert_eq!(
            (status, reason_of(&headers)),
            (StatusCode::SERVICE_UNAVAILABLE, "breaker-open"),
            "{path}"
        );
    }

    // `tripped` changes its breaker: it starts fresh; `forced` keeps its state.
    let cfg = parse(yaml(60, "60s", "6s"));
    within("reload", proxy.app.apply(cfg))
        .await
        .expect("reload applies");
    let tripped = breaker_of(&proxy, "tripped").await;
    assert_eq!(tripped["state"], "closed", "{tripped}");
    assert_eq!(tripped["window"]["requests"], 0, "{tripped}");
    assert_eq!(
        tripped["last_transition"],
        serde_json::Value::Null,
        "{tripped}"
    );
    assert_eq!(breaker_of(&proxy, "forced").await["state"], "forced_open");
    let (status, headers, _) = get_within(&proxy.url("/tripped")).await;
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::INTERNAL_SERVER_ERROR, ""),
        "reaches the upstream again"
    );

    // `forced` changes its breaker too: the override is gone with the old one.
    let cfg = parse(yaml(60, "30s", "6s"));
    within("reload", proxy.app.apply(cfg))
        .await
        .expect("reload applies");
    assert_eq!(breaker_of(&proxy, "forced").await["state"], "closed");
    let (status, headers, _) = get_within(&proxy.url("/forced")).await;
    assert_eq!((status, reason_of(&headers)), (StatusCode::OK, ""));
}

// ---------------------------------------------------------------------------
// Timeout.

#[tokio::test]
async fn a_hanging_upstream_gets_504_at_the_timeout_and_its_connection_is_closed() {
    let (up, mut events) = silent_upstream().await;
    let proxy = Proxy::start(&config_with(up, "", &catch_all("timeout: 300ms"))).await;

    let start = Instant::now();
    let (status, headers, body) = get_within(&proxy.url("/hang")).await;
    let took = start.elapsed();

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(reason_of(&headers), "timeout");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(4),
        "answered after {took:?}; the timeout is 300ms"
    );
    let first = within("the upstream reads the request head", events.recv()).await;
    assert_eq!(first, Some(Silent::Head));
    let next = within("the upstream sees its connection closed", events.recv()).await;
    assert_eq!(
        next,
        Some(Silent::Closed),
        "the proxy released the upstream connection"
    );
}

#[tokio::test]
async fn a_hanging_grpc_upstream_gets_deadline_exceeded_and_its_stream_is_cancelled() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let up = upstream(move |_req: Request<Incoming>| {
        let guard = DropSignal(dropped_tx.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Response<TestBody>>().await
        }
    })
    .await;
    let proxy = Proxy::start(&config_with(
        up,
        "protocol: http2",
        &catch_all("timeout: 300ms"),
    ))
    .await;

    let start = Instant::now();
    let (parts, trailers) = grpc_call(&h2_client(), &proxy.url("/svc.Svc/Hang"), &[]).await;
    let took = start.elapsed();

    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers[CONTENT_TYPE], "application/grpc");
    assert_eq!(parts.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(reason_of(&parts.headers), "timeout");
    assert_eq!(trailers, None, "trailers-only");
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(4),
        "{took:?}"
    );
    within(
        "the upstream's handler is dropped (stream reset)",
        dropped.recv(),
    )
    .await
    .expect("drop signal");
}

#[tokio::test]
async fn a_shorter_grpc_timeout_wins_and_is_passed_to_the_upstream() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let up = upstream(move |req: Request<Incoming>| {
        let _ = seen_tx.send(req.headers().get("grpc-timeout").cloned());
        std::future::pending::<Response<TestBody>>()
    })
    .await;
    let proxy = Proxy::start(&config_with(
        up,
        "protocol: http2",
        &catch_all("timeout: 5s"),
    ))
    .await;

    let start = Instant::now();
    let (parts, _) = grpc_call(
        &h2_client(),
        &proxy.url("/svc.Svc/Hang"),
        &[("grpc-timeout", "200m")],
    )
    .await;
    let took = start.elapsed();

    let passed = within("the upstream gets the request", seen.recv())
        .await
        .expect("a request")
        .expect("the upstream sees a grpc-timeout header");
    let budget = parse_grpc_timeout(&passed);
    assert!(
        budget > Duration::ZERO && budget <= Duration::from_millis(200),
        "the upstream was told {passed:?} ({budget:?}); the caller allowed 200ms"
    );
    assert_eq!(parts.headers["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(reason_of(&parts.headers), "timeout");
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_secs(4),
        "answered after {took:?}: the caller's 200ms, not the route's 5s"
    );
}

// ---------------------------------------------------------------------------
// Concurrency limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_limit_sheds_the_excess_at_once_across_http1_and_h2c() {
    const MAX: usize = 10;
    const EACH: usize = 100;
    let (up, held) = held_upstream().await;
    let proxy = Proxy::start(&config_with(up, "", &catch_all("concurrency: { max: 10 }"))).await;
    let addr = proxy.addr();

    // One h2c connection carries all of its half as concurrent streams.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let barrier = Arc::new(Barrier::new(2 * EACH));
    let done = Arc::new(AtomicUsize::new(0));
    let mut shots = Vec::new();
    for _ in 0..EACH {
        shots.push(tokio::spawn(shoot_h1(addr, barrier.clone(), done.clone())));
        shots.push(tokio::spawn(shoot_h2(
            h2.clone(),
            addr,
            barrier.clone(),
            done.clone(),
        )));
    }

    let (answered, arrived) = eventually("every request is held upstream or answered", || async {
        let (d, a) = (done.load(Ordering::SeqCst), held.count("/hold/"));
        (d + a >= 2 * EACH || a > MAX).then_some((d, a))
    })
    .await;
    assert_eq!(
        arrived, MAX,
        "the upstream saw exactly max requests while they were held"
    );
    assert_eq!(
        answered,
        2 * EACH - MAX,
        "all the others were answered before the release"
    );
    // While the limit stays full: shed requests one at a time, each on a
    // warm connection, for the latency of a lone refusal.
    let (mut lone_h1, mut lone_h2) = lone_sheds(addr, h2.clone(), 50).await;
    let released = Instant::now();
    held.release(1);
    let mut results = Vec::new();
    for shot in shots {
        results.push(
            within("a request finishes after the release", shot)
                .await
                .expect("task"),
        );
    }

    assert_eq!(
        held.count("/hold/"),
        MAX,
        "nothing more reached the upstream"
    );
    let (served, shed): (Vec<Shot>, Vec<Shot>) = results
        .into_iter()
        .partition(|s| s.status == StatusCode::OK);
    assert_eq!(
        served.len(),
        MAX,
        "the held requests are served once released"
    );
    assert!(served.iter().all(|s| s.at >= released));
    for s in &shed {
        assert_eq!(
            (s.status, s.reason.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            "{s:?}"
        );
        assert!(s.retry_after, "a shed response carries retry-after: {s:?}");
        assert!(
            s.at < released,
            "shed without waiting for the release: {s:?}"
        );
    }
    let h1_shed = shed.iter().filter(|s| !s.h2).count();
    assert!(
        h1_shed >= EACH - MAX && shed.len() - h1_shed >= EACH - MAX,
        "both protocols share one limit"
    );
    let mut all: Vec<Duration> = shed.iter().map(|s| s.took).collect();
    let mut h1: Vec<Duration> = shed.iter().filter(|s| !s.h2).map(|s| s.took).collect();
    let mut h2: Vec<Duration> = shed.iter().filter(|s| s.h2).map(|s| s.took).collect();
    println!(
        "503 overloaded latency, send to end of body ({} shed of {}): all {}; h1 {}; h2c {}",
        shed.len(),
        2 * EACH,
        percentiles(&mut all),
        percentiles(&mut h1),
        percentiles(&mut h2),
    );
    println!(
        "503 overloaded latency, one at a time while the limit is full: h1 {}; h2c {}",
        percentiles(&mut lone_h1),
        percentiles(&mut lone_h2),
    );
    let max = all.last().copied().unwrap_or_default();
    assert!(max < Duration::from_secs(1), "a shed request took {max:?}");
}

#[tokio::test]
async fn a_queued_request_is_served_when_a_permit_frees_and_shed_after_queue_timeout() {
    let (up, held) = held_upstream().await;
    let limit = "concurrency: { max: 1, queue: 1, queue_timeout: 300ms }";
    let proxy = Proxy::start(&config_with(up, "", &catch_all(limit))).await;

    // Served: the second request waits for the first's permit.
    let first = spawn_get(proxy.url("/hold/1"));
    eventually("the first request reaches the upstream", || async {
        (held.count("/hold/1") == 1).then_some(())
    })
    .await;
    let second = spawn_get(proxy.url("/fast/1"));
    wait_queued(&proxy, 1).await;
    assert_eq!(
        held.count("/fast/1"),
        0,
        "the queued request has not reached the upstream"
    );
    let released = Instant::now();
    held.release(1);
    let (status, _, body) = within("the first request", first).await.expect("task");
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, headers, body) = within("the queued request", second).await.expect("task");
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::OK, ""),
        "served after waiting: {body}"
    );
    assert!(
        held.arrived_after("/fast/1", released),
        "it reached the upstream after the release"
    );

    // Shed: nothing frees the permit within queue_timeout.
    let first = spawn_get(proxy.url("/hold/2"));
    eventually("the holder reaches the upstream", || async {
        (held.count("/hold/2") == 1).then_some(())
    })
    .await;
    let start = Instant::now();
    let queued = spawn_get(proxy.url("/fast/2"));
    wait_queued(&proxy, 1).await;
    // The queue (length 1) is full: a third request is shed at once.
    let (status, headers, _) = get_within(&proxy.url("/fast/3")).await;
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
    assert!(
        !queued.is_finished(),
        "the third request was shed before the queued one timed out"
    );
    let (status, headers, body) = within("the queued request times out", queued)
        .await
        .expect("task");
    let took = start.elapsed();
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        "{body}"
    );
    assert!(headers.contains_key(RETRY_AFTER));
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(4),
        "shed after {took:?} in the queue; queue_timeout is 300ms"
    );
    assert_eq!(
        held.count("/fast/2") + held.count("/fast/3"),
        0,
        "shed requests never reach the upstream"
    );
    held.release(2);
    let (status, _, _) = within("the holder", first).await.expect("task");
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_permit_is_held_until_the_response_body_ends_or_the_client_leaves() {
    let (streams_tx, mut streams) = mpsc::unbounded_channel::<mpsc::Sender<Frame<Bytes>>>();
    let up = upstream(move |req: Request<Incoming>| {
        let streams_tx = streams_tx.clone();
        async move {
            if req.uri().path() != "/stream" {
                return Response::new(full("ok"));
            }
            let (tx, body) = channel_body();
            tx.try_send(Frame::data(Bytes::from_static(b"first\n")))
                .expect("room for the first chunk");
            let _ = streams_tx.send(tx);
            Response::new(body)
        }
    })
    .await;
    let proxy = Proxy::start(&config_with(up, "", &catch_all("concurrency: { max: 1 }"))).await;
    let metrics = proxy.admin_url("/metrics");
    let in_use = || async {
        metric(
            &scrape(&metrics).await,
            "breakwater_concurrency_in_use",
            &[("route", "app")],
        )
    };

    // A stream that ends normally.
    let res = within(
        "the stream's head",
        h1_client().request(empty_get(&proxy.url("/stream"))),
    )
    .await
    .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    assert_eq!(next_data(&mut body).await, "first\n");
    let upstream_side = within("the upstream's stream", streams.recv())
        .await
        .expect("a stream");
    assert_eq!(
        in_use().await,
        Some(1.0),
        "the permit is held while the body streams"
    );
    assert_eq!(
        route_status(&proxy, "app").await["concurrency"]["in_use"],
        1
    );
    let (status, headers, _) = get_within(&proxy.url("/other")).await;
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
    );
    within(
        "the upstream sends the rest",
        upstream_side.send(Frame::data(Bytes::from_static(b"rest\n"))),
    )
    .await
    .expect("the proxy still reads");
    drop(upstream_side);
    let rest = within("the rest of the body", body.collect())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&rest[..], b"rest\n");
    eventually("the permit is released when the body ends", || async {
        (in_use().await == Some(0.0)).then_some(())
    })
    .await;
    let (status, _, _) = get_within(&proxy.url("/other")).await;
    assert_eq!(status, StatusCode::OK);

    // A client that hangs up mid-stream.
    let mut client = TcpStream::connect(proxy.addr()).await.expect("connect");
    let head = format!("GET /stream HTTP/1.1\r\nhost: {}\r\n\r\n", proxy.addr());
    client.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    within("the first chunk over raw HTTP/1.1", async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("first") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let upstream_side = within("the upstream's stream", streams.recv())
        .await
        .expect("a stream");
    assert_eq!(in_use().await, Some(1.0));
    drop(client);
    eventually("the permit is released when the client leaves", || async {
        (in_use().await == Some(0.0)).then_some(())
    })
    .await;
    let (status, _, _) = get_within(&proxy.url("/other")).await;
    assert_eq!(status, StatusCode::OK);
    drop(upstream_side);
}

#[tokio::test]
async fn shed_requests_never_count_against_the_upstream() {
    let (up, held) = held_upstream().await;
    let fields =
        "concurrency: { max: 1 }, breaker: { min_requests: 5, error_percent: 50, open_for: 30s }";
    let proxy = Proxy::start(&config_with(up, "", &catch_all(fields))).await;

    let holder = spawn_get(proxy.url("/hold/1"));
    eventually("the holder reaches the upstream", || async {
        (held.count("/hold/1") == 1).then_some(())
    })
    .await;
    for i in 0..20 {
        let (status, headers, _) = get_within(&proxy.url("/x")).await;
        assert_eq!(
            (status, reason_of(&headers)),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            "request {i}"
        );
    }
    held.release(1);
    let (status, _, _) = within("the holder", holder).await.expect("task");
    assert_eq!(status, StatusCode::OK);

    let reached = held.count("/") as u64;
    assert_eq!(reached, 1);
    let b = eventually("the holder's verdict is in the window", || async {
        let b = breaker_of(&proxy, "app").await;
        (b["window"]["requests"] == reached).then_some(b)
    })
    .await;
    assert_eq!(b["state"], "closed", "{b}");
    assert_eq!(b["window"]["failures"], 0, "{b}");
    let samples = scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        metric(&samples, "breakwater_shed_total", &[("route", "app")]),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &samples,
            "breakwater_breaker_rejected_total",
            &[("route", "app")]
        ),
        Some(0.0)
    );
}

// ---------------------------------------------------------------------------
// Upstreams.

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Requests n with n % 5 < 3 fail: 60 %, deterministically.
    SixtyPercent,
    Healthy,
    Failing,
}

/// What a [`flaky_upstream`] has seen, and how it answers.
struct Flaky {
    seen: AtomicUsize,
    mode: AtomicU8,
}

impl Flaky {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            seen: AtomicUsize::new(0),
            mode: AtomicU8::new(mode as u8),
        })
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

/// Counts requests and answers 500 or 200 as its [`Mode`] says.
async fn flaky_upstream(state: Arc<Flaky>) -> SocketAddr {
    upstream(move |_req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let n = state.seen.fetch_add(1, Ordering::SeqCst);
            let mode = state.mode.load(Ordering::SeqCst);
            let fail = if mode == Mode::SixtyPercent as u8 {
                n % 5 < 3
            } else {
                mode == Mode::Failing as u8
            };
            let mut res = Response::new(full(if fail { "boom" } else { "ok" }));
            if fail {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            res
        }
    })
    .await
}

/// What a [`held_upstream`] has seen, and the gate that holds `/hold/N`.
struct Held {
    seen: Mutex<Vec<(String, Instant)>>,
    gate: watch::Sender<u32>,
}

impl Held {
    /// Requests seen whose path starts with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        let seen = self.seen.lock().expect("lock");
        seen.iter().filter(|(p, _)| p.starts_with(prefix)).count()
    }

    fn arrived_after(&self, path: &str, t: Instant) -> bool {
        let seen = self.seen.lock().expect("lock");
        seen.iter().any(|(p, at)| p == path && *at >= t)
    }

    /// Lets every `/hold/N` with N ≤ `n` answer.
    fn release(&self, n: u32) {
        self.gate.send_replace(n);
    }
}

/// Records every request; `/hold/N` answers 200 once released up to N,
/// anything else answers 200 at once.
async fn held_upstream() -> (SocketAddr, Arc<Held>) {
    let held = Arc::new(Held {
        seen: Mutex::new(Vec::new()),
        gate: watch::channel(0).0,
    });
    let state = held.clone();
    let addr = upstream(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let path = req.uri().path().to_owned();
            state
                .seen
                .lock()
                .expect("lock")
                .push((path.clone(), Instant::now()));
            if let Some(n) = path
                .strip_prefix("/hold/")
                .and_then(|n| n.parse::<u32>().ok())
            {
                let mut gate = state.gate.subscribe();
                let _ = gate.wait_for(|released| *released >= n).await;
            }
            Response::new(full("ok"))
        }
    })
    .await;
    (addr, held)
}

#[derive(Debug, PartialEq, Eq)]
enum Silent {
    /// The request head arrived.
    Head,
    /// The connection was closed or reset by the proxy.
    Closed,
}

/// A raw TCP upstream that reads the request head and never answers; it
/// reports when the head arrived and when the proxy closes the connection.
async fn silent_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Silent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let mut head_seen = false;
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if !head_seen && got.windows(4).any(|w| w == b"\r\n\r\n") {
                        head_seen = true;
                        let _ = tx.send(Silent::Head);
                    }
                }
                let _ = tx.send(Silent::Closed);
            });
        }
    });
    (addr, rx)
}

/// Sends a message when dropped.
struct DropSignal(mpsc::UnboundedSender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

// ---------------------------------------------------------------------------
// Clients.

/// Sends GETs one at a time until one is refused with `breaker-open` (at
/// most 30) and returns how many were sent before it.
async fn send_until_open(url: &str) -> usize {
    for i in 0..30 {
        let (status, headers, body) = get_within(url).await;
        if reason_of(&headers) == "breaker-open" {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(headers.contains_key(RETRY_AFTER));
            return i;
        }
    }
    panic!("the breaker did not open within 30 requests to {url}");
}

/// Polls (bounded) until a request is not refused by the breaker; returns
/// that request's status and headers.
async fn first_request_through(url: &str) -> (StatusCode, HeaderMap) {
    eventually("a request passes the breaker after open_for", || async {
        let (status, headers, _) = get_within(url).await;
        (reason_of(&headers) != "breaker-open").then_some((status, headers))
    })
    .await
}

fn spawn_get(url: String) -> tokio::task::JoinHandle<(StatusCode, HeaderMap, String)> {
    tokio::spawn(async move { get_within(&url).await })
}

/// Waits (bounded) until `n` requests wait in route `app`'s queue.
async fn wait_queued(proxy: &Proxy, n: u64) {
    eventually("a request waits in the queue", || async {
        (route_status(proxy, "app").await["concurrency"]["queued"] == n).then_some(())
    })
    .await;
}

fn empty_get(url: &str) -> Request<TestBody> {
    Request::get(url).body(full(Bytes::new())).expect("request")
}

/// The next data frame of a body, as text (bounded).
async fn next_data(body: &mut Incoming) -> String {
    let frame = within("the next body frame", body.frame())
        .await
        .expect("a frame")
        .expect("frame ok");
    let data = frame.into_data().expect("a data frame");
    String::from_utf8_lossy(&data).into_owned()
}

/// One request of the overload test.
#[derive(Debug)]
struct Shot {
    h2: bool,
    status: StatusCode,
    reason: String,
    retry_after: bool,
    /// From sending the request to the end of the response body.
    took: Duration,
    /// When it finished.
    at: Instant,
}

/// A request on its own HTTP/1.1 connection, connected before the barrier so
/// only the exchange itself is timed.
async fn shoot_h1(addr: SocketAddr, barrier: Arc<Barrier>, done: Arc<AtomicUsize>) -> Shot {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(stream))
            .await
            .expect("h1 handshake");
    tokio::spawn(conn);
    sender.ready().await.expect("h1 connection ready");
    let req = Request::get("/hold/1")
        .header(HOST, addr.to_string())
        .body(full(Bytes::new()))
        .expect("request");
    barrier.wait().await;
    let start = Instant::now();
    let res = sender.send_request(req).await.expect("h1 response");
    finish_shot(false, start, res, &done).await
}

/// A request as one more stream of the shared h2c connection.
async fn shoot_h2(
    mut sender: hyper::client::conn::http2::SendRequest<TestBody>,
    addr: SocketAddr,
    barrier: Arc<Barrier>,
    done: Arc<AtomicUsize>,
) -> Shot {
    sender.ready().await.expect("h2c connection ready");
    let req = Request::get(format!("http://{addr}/hold/1"))
        .body(full(Bytes::new()))
        .expect("request");
    barrier.wait().await;
    let start = Instant::now();
    let res = sender.send_request(req).await.expect("h2c response");
    finish_shot(true, start, res, &done).await
}

async fn finish_shot(
    h2: bool,
    start: Instant,
    res: Response<Incoming>,
    done: &AtomicUsize,
) -> Shot {
    let (parts, body) = res.into_parts();
    body.collect().await.expect("body");
    let took = start.elapsed();
    done.fetch_add(1, Ordering::SeqCst);
    Shot {
        h2,
        status: parts.status,
        reason: reason_of(&parts.headers).to_owned(),
        retry_after: parts.headers.contains_key(RETRY_AFTER),
        took,
        at: Instant::now(),
    }
}

/// Sends `n` requests one after another on one HTTP/1.1 connection, then `n`
/// on the h2c connection; returns how long each took (all must be shed).
async fn lone_sheds(
    addr: SocketAddr,
    mut h2: hyper::client::conn::http2::SendRequest<TestBody>,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut h1, conn) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    let done = AtomicUsize::new(0);
    let mut took = (Vec::new(), Vec::new());
    for _ in 0..n {
        within("h1 connection ready", h1.ready())
            .await
            .expect("ready");
        let req = Request::get("/hold/1")
            .header(HOST, addr.to_string())
            .body(full(Bytes::new()))
            .expect("request");
        let start = Instant::now();
        let res = within("a lone h1 request", h1.send_request(req))
            .await
            .expect("response");
        let shot = within("its body", finish_shot(false, start, res, &done)).await;
        assert_eq!(shot.reason, "overloaded", "{shot:?}");
        took.0.push(shot.took);
    }
    for _ in 0..n {
        within("h2c connection ready", h2.ready())
            .await
            .expect("ready");
        let req = Request::get(format!("http://{addr}/hold/1"))
            .body(full(Bytes::new()))
            .expect("request");
        let start = Instant::now();
        let res = within("a lone h2c request", h2.send_request(req))
            .await
            .expect("response");
        let shot = within("its body", finish_shot(true, start, res, &done)).await;
        assert_eq!(shot.reason, "overloaded", "{shot:?}");
        took.1.push(shot.took);
    }
    took
}

/// "p50 …, p90 …, max …" of `v` (sorted in place).
fn percentiles(v: &mut [Duration]) -> String {
    v.sort();
    let at = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)));
    format!(
        "n={} p50 {:?} p90 {:?} max {:?}",
        v.len(),
        at(0.5).copied().unwrap_or_default(),
        at(0.9).copied().unwrap_or_default(),
        v.last().copied().unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------
// Routes and gRPC framing by hand.

/// The whole route table: one catch-all route `app` with extra flow-style
/// fields, e.g. `timeout: 300ms`.
fn catch_all(fields: &str) -> String {
    format!("  - {{ name: app, match: {{ path_prefix: / }}, upstream: app, {fields} }}")
}

/// A unary gRPC call with one empty message over `client`; returns the head
/// and the trailers (None for a trailers-only response).
async fn grpc_call(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
    url: &str,
    extra: &[(&'static str, &'static str)],
) -> (http::response::Parts, Option<HeaderMap>) {
    let mut req = Request::post(url)
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(full(grpc_message(b""))).expect("request");
    within("a gRPC call", async {
        let res = client.request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let collected = body.collect().await.expect("body");
        (parts, collected.trailers().cloned())
    })
    .await
}

/// One length-prefixed, uncompressed gRPC message.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(payload.len()).expect("small message"));
    buf.put_slice(payload);
    buf.freeze()
}

fn grpc_trailers(code: &'static str) -> Frame<Bytes> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(code));
    Frame::trailers(trailers)
}

/// HTTP 200, `application/grpc`, exactly these frames.
fn grpc_response(frames: Vec<Frame<Bytes>>) -> Response<TestBody> {
    let body = StreamBody::new(stream::iter(frames.into_iter().map(Ok::<_, BoxError>))).boxed();
    let mut res = Response::new(body);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    res
}

/// A body fed frame by frame through a channel; it ends when the sender is
/// dropped.
fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, TestBody) {
    let (tx, mut rx) = mpsc::channel::<Frame<Bytes>>(4);
    let frames = stream::poll_fn(move |cx| rx.poll_recv(cx).map(|f| f.map(Ok::<_, BoxError>)));
    (tx, StreamBody::new(frames).boxed())
}

/// A gRPC `TimeoutValue TimeoutUnit`.
fn parse_grpc_timeout(v: &HeaderValue) -> Duration {
    let s = v.to_str().expect("ASCII grpc-timeout");
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("grpc-timeout {s:?}"));
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("grpc-timeout {s:?}: unknown unit"),
    }
}
