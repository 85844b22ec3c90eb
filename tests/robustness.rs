//! Hostile clients against the whole proxy on real sockets: request
//! smuggling over raw HTTP/1.1 bytes, head limits, slow heads and bodies, and
//! HTTP/2 stream abuse. Every refused request must also never reach the
//! upstream, which counts what it receives.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use common::{full, raw_exchange, upstream, Proxy};

/// How long any single wait in these tests may take before the test fails.
const BOUND: Duration = Duration::from_secs(5);

/// Small limits and timeouts so that each one is quick to reach.
fn robust_config(upstream: SocketAddr) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0, header_timeout: 300ms, body_timeout: 500ms }}
upstreams:
  app: {{ url: http://{upstream} }}
limits: {{ max_header_bytes: 8KiB, max_headers: 20 }}
access_log: {{ format: off }}
routes:
  - name: app
    match: {{ path_prefix: / }}
    upstream: app
"#
    )
}

/// An upstream that counts every request head it receives, reads the whole
/// body and answers 200.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let addr = upstream(move |req: http::Request<Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = req.into_body().collect().await;
            http::Response::new(full("ok\n"))
        }
    })
    .await;
    (addr, seen)
}

/// A proxy in front of a counting upstream.
async fn guarded() -> (Proxy, Arc<AtomicUsize>) {
    let (up, seen) = counting_upstream().await;
    (Proxy::start(&robust_config(up)).await, seen)
}

/// A clean request on a new connection; returns once its 200 is in.
async fn good_request(proxy: &Proxy) {
    let (status, _, _) = timeout(BOUND, common::get(&proxy.url("/good")))
        .await
        .expect("the good request is answered within the bound");
    assert_eq!(status, 200, "a clean request after the bad one");
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// Who produced a raw response: our handler tags its answers with
/// `x-breakwater-reason`; hyper's own parser errors carry no such header.
fn answered_by(response: &str) -> String {
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("x-breakwater-reason")
                .then(|| format!("breakwater ({})", value.trim()))
        })
        .unwrap_or_else(|| "hyper's parser".to_owned())
}

/// Sends `bytes` on a fresh connection and asserts the smuggling contract:
/// 400, the connection closed by the proxy, and the upstream untouched (one
/// clean request afterwards is the only one it ever sees).
async fn assert_refused_before_upstream(case: &str, bytes: &[u8]) {
    let (proxy, seen) = guarded().await;
    // raw_exchange returns only at EOF (or fails after 5 s): the close is asserted there.
    let response = raw_exchange(proxy.addr(), bytes).await;
    eprintln!(
        "{case}: {:?} from {}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(
        response.starts_with("HTTP/1.1 400 "),
        "{case}: expected 400, got {response:?}"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "{case}: upstream was reached"
    );
    good_request(&proxy).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "{case}: upstream saw more than the clean request"
    );
}

// --- Request smuggling -----------------------------------------------------

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_in_either_order() {
    assert_refused_before_upstream(
        "CL then TE",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_refused_before_upstream(
        "TE then CL",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn duplicate_content_length_is_refused_whether_or_not_the_values_agree() {
    assert_refused_before_upstream(
        "two CL, different values",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert_refused_before_upstream(
        "two CL, same value",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_refused_before_upstream(
        "CL list 5, 5",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    )
    .await;
}

#[tokio::test]
async fn content_length_that_is_not_plain_digits_is_refused() {
    for value in ["abc", "-1", "+5"] {
        let bytes = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\nhello");
        assert_refused_before_upstream(&format!("CL {value}"), bytes.as_bytes()).await;
    }
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_refused() {
    assert_refused_before_upstream(
        "TE gzip",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    )
    .await;
}

#[tokio::test]
async fn chunked_transfer_encoding_on_http_1_0_is_refused() {
    assert_refused_before_upstream(
        "TE chunked on HTTP/1.0",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn bare_lf_chunk_size_line_sent_with_the_head_is_refused() {
    assert_refused_before_upstream(
        "bare LF chunk size line",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    )
    .await;
}

/// A chunked POST whose bad chunk line (bare LF) lies past the first 8 KiB
/// hyper reads, so the head is parsed and dispatched before the inspector
/// sees the bad line, even though the client sent it all in one write.
fn bare_lf_behind_a_large_chunk() -> Vec<u8> {
    let mut bytes =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2800\r\n".to_vec();
    bytes.extend_from_slice(&[b'a'; 0x2800]);
    bytes.extend_from_slice(b"\r\n5\nhello\r\n0\r\n\r\n");
    bytes
}

#[tokio::test]
async fn bad_chunk_line_found_after_forwarding_never_completes_the_upstream_body() {
    // Streaming means the head and the first chunk are already upstream when
    // the bad line arrives; what must hold is that the upstream body fails.
    let (up, mut outcomes) = body_reporting_upstream().await;
    let proxy = Proxy::start(&robust_config(up)).await;
    let response = raw_exchange(proxy.addr(), &bare_lf_behind_a_large_chunk()).await;
    let outcome = timeout(BOUND, outcomes.recv())
        .await
        .expect("upstream finished reading within the bound");
    eprintln!(
        "bare LF after a 10 KiB chunk: {:?} from {}; upstream body {outcome:?}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(
        matches!(outcome, Some(BodyOutcome::Failed(n)) if n <= 0x2800),
        "upstream body must fail, not complete: {outcome:?}"
    );
    assert!(!response.starts_with("HTTP/1.1 2"), "{response:?}");
}

#[tokio::test]
async fn bad_chunk_line_found_after_forwarding_is_answered_400_not_blamed_on_upstream() {
    let (up, _outcomes) = body_reporting_upstream().await;
    let proxy = Proxy::start(&robust_config(up)).await;
    let response = raw_exchange(proxy.addr(), &bare_lf_behind_a_large_chunk()).await;
    eprintln!(
        "bare LF after a 10 KiB chunk: {:?} from {}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(response.starts_with("HTTP/1.1 400 "), "{response:?}");
    assert!(
        response.contains("x-breakwater-reason: bad-request"),
        "{response:?}"
    );
}

#[tokio::test]
async fn request_body_cut_short_by_the_client_is_not_blamed_on_upstream() {
    let (up, _outcomes) = body_reporting_upstream().await;
    let proxy = Proxy::start(&robust_config(up)).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .expect("write");
    // Half-close: the body ends at 10 of 100 bytes; the response can still come back.
    stream.shutdown().await.expect("shutdown");
    let (response, _) = read_until_closed(&mut stream, Instant::now()).await;
    eprintln!(
        "body cut short by the client: {:?} from {}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(
        !response.contains("x-breakwater-reason: upstream-"),
        "the upstream did nothing wrong: {response:?}"
    );
}

#[tokio::test]
async fn obs_fold_header_continuation_is_refused() {
    assert_refused_before_upstream(
        "obs-fold",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn control_characters_in_header_values_are_refused() {
    let cases: [(&str, &[u8]); 3] = [
        (
            "NUL in value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
        ),
        (
            "bare CR in value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
        ),
        (
            "DEL in value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n",
        ),
    ];
    for (case, bytes) in cases {
        assert_refused_before_upstream(case, bytes).await;
    }
}

#[tokio::test]
async fn http_1_1_request_without_host_is_refused() {
    assert_refused_before_upstream("missing Host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n").await;
}

#[tokio::test]
async fn http_1_1_request_with_two_host_headers_is_refused() {
    assert_refused_before_upstream(
        "two Host headers",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn ambiguous_request_pipelined_behind_a_good_one_is_refused_alone() {
    let (proxy, seen) = guarded().await;
    let bytes = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
        POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let response = raw_exchange(proxy.addr(), bytes).await;
    let statuses: Vec<&str> = response
        .lines()
        .filter(|l| l.starts_with("HTTP/1."))
        .collect();
    eprintln!(
        "pipelined good + CL/TE: {statuses:?}, second from {}",
        answered_by(response.rsplit("HTTP/1.1 400").next().unwrap_or(""))
    );
    assert_eq!(statuses.len(), 2, "two responses: {response:?}");
    assert!(statuses[0].starts_with("HTTP/1.1 200 "), "{response:?}");
    assert!(statuses[1].starts_with("HTTP/1.1 400 "), "{response:?}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "only the first reached upstream"
    );
    good_request(&proxy).await;
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

// --- Head limits -----------------------------------------------------------

#[tokio::test]
async fn head_larger_than_max_header_bytes_gets_431_and_is_closed() {
    let (proxy, seen) = guarded().await;
    let big = "v".repeat(9000);
    let bytes = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let response = raw_exchange(proxy.addr(), bytes.as_bytes()).await;
    eprintln!(
        "head > max_header_bytes: {:?} from {}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(response.starts_with("HTTP/1.1 431 "), "{response:?}");
    good_request(&proxy).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn more_headers_than_max_headers_gets_431_and_is_closed() {
    let (proxy, seen) = guarded().await;
    let mut bytes = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..30 {
        bytes.push_str(&format!("X-{i}: v\r\n"));
    }
    bytes.push_str("\r\n");
    let response = raw_exchange(proxy.addr(), bytes.as_bytes()).await;
    eprintln!(
        "headers > max_headers: {:?} from {}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(response.starts_with("HTTP/1.1 431 "), "{response:?}");
    good_request(&proxy).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

// --- Slow clients ----------------------------------------------------------

/// Reads until EOF or a reset; fails the test if neither comes within BOUND.
/// Returns what was read and how long after `since` the connection ended.
async fn read_until_closed(stream: &mut TcpStream, since: Instant) -> (String, Duration) {
    let mut out = Vec::new();
    let read = timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "connection still open after {BOUND:?}; got {:?}",
        String::from_utf8_lossy(&out)
    );
    (String::from_utf8_lossy(&out).into_owned(), since.elapsed())
}

#[tokio::test]
async fn incomplete_head_is_closed_after_the_header_timeout() {
    let (proxy, seen) = guarded().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let start = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let (response, took) = read_until_closed(&mut stream, start).await;
    eprintln!("slowloris (partial head): closed after {took:?}, sent back {response:?}");
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let (proxy, _seen) = guarded().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (response, took) = read_until_closed(&mut stream, Instant::now()).await;
    eprintln!("idle connection: closed after {took:?}, sent back {response:?}");
}

#[tokio::test]
async fn partial_http2_preface_is_closed_after_the_header_timeout() {
    let (proxy, _seen) = guarded().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let start = Instant::now();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let (response, took) = read_until_closed(&mut stream, start).await;
    eprintln!("partial h2 preface: closed after {took:?}, sent back {response:?}");
}

#[tokio::test]
async fn keep_alive_connection_idle_after_a_response_is_closed_after_the_header_timeout() {
    let (proxy, seen) = guarded().await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // The response is small: read until its body ("ok\n") is in.
    let mut got = Vec::new();
    let answered = timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"ok\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "no response within the bound");
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let (rest, took) = read_until_closed(&mut stream, Instant::now()).await;
    eprintln!("idle keep-alive connection: closed {took:?} after its response, sent back {rest:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn head_trickled_byte_by_byte_is_closed_after_the_header_timeout() {
    let (proxy, seen) = guarded().await;
    let stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    // A new header byte every 50 ms keeps the connection busy, never complete.
    let trickle = async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        for &b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            tick.tick().await;
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
        }
        // Out of bytes (5 s and more): hold the connection open; the read side fails the test.
        std::future::pending::<()>().await;
    };
    let mut out = Vec::new();
    let closed = timeout(BOUND, async {
        tokio::select! {
            () = trickle => {}
            _ = rd.read_to_end(&mut out) => {}
        }
    })
    .await;
    let took = start.elapsed();
    eprintln!("slowloris (trickled head): closed after {took:?}");
    assert!(closed.is_ok(), "trickled head still open after {BOUND:?}");
    assert!(took < Duration::from_secs(2), "closed only after {took:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

/// What an upstream that reads whole bodies got.
#[derive(Debug)]
enum BodyOutcome {
    Complete(usize),
    Failed(usize),
}

/// An upstream that reads each request body frame by frame and reports how
/// it ended.
async fn body_reporting_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<BodyOutcome>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = upstream(move |req: http::Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let mut body = req.into_body();
            let mut got = 0;
            let outcome = loop {
                match body.frame().await {
                    None => break BodyOutcome::Complete(got),
                    Some(Err(_)) => break BodyOutcome::Failed(got),
                    Some(Ok(frame)) => got += frame.data_ref().map_or(0, Bytes::len),
                }
            };
            let _ = tx.send(outcome);
            http::Response::new(full("ok\n"))
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test]
async fn slow_body_is_cut_at_the_body_timeout_and_never_reaches_upstream_whole() {
    let (up, mut outcomes) = body_reporting_upstream().await;
    let proxy = Proxy::start(&robust_config(up)).await;
    let stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let start = Instant::now();
    wr.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .await
        .expect("write head");
    // One body byte every 100 ms, at most 20 (2 s): far short of 100.
    let trickle = async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.tick().await;
        let mut sent = 0;
        while sent < 20 {
            tick.tick().await;
            if wr.write_all(b"x").await.is_err() {
                break;
            }
            sent += 1;
        }
        std::future::pending::<()>().await;
    };
    let mut out = Vec::new();
    let ended = timeout(BOUND, async {
        tokio::select! {
            () = trickle => {}
            _ = rd.read_to_end(&mut out) => {}
        }
    })
    .await;
    let took = start.elapsed();
    let response = String::from_utf8_lossy(&out).into_owned();
    eprintln!(
        "slow body: ended after {took:?} with {:?} from {}",
        status_line(&response),
        answered_by(&response)
    );
    assert!(
        ended.is_ok(),
        "slow body exchange still open after {BOUND:?}"
    );
    assert!(
        response.is_empty()
            || (response.starts_with("HTTP/1.1 408 ")
                && response.contains("x-breakwater-reason: body-timeout")),
        "{response:?}"
    );
    let outcome = timeout(BOUND, outcomes.recv())
        .await
        .expect("upstream finished reading within the bound");
    eprintln!("slow body: upstream saw {outcome:?}");
    if let Some(BodyOutcome::Complete(n)) = outcome {
        panic!("upstream got a complete body of {n} bytes");
    }
}

// --- HTTP/2 ----------------------------------------------------------------

async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = timeout(BOUND, h2::client::handshake(tcp))
        .await
        .expect("h2 handshake within the bound")
        .expect("h2 handshake");
    (client, tokio::spawn(conn))
}

fn h2_get(addr: SocketAddr) -> http::Request<()> {
    http::Request::get(format!("http://{addr}/"))
        .body(())
        .expect("request")
}

/// Opens streams and resets each right after its HEADERS frame is written,
/// until `n` are done or the connection refuses more. Returns how many were
/// reset and the error that stopped the flood, if any.
async fn rapid_reset(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    n: usize,
) -> (usize, Option<h2::Error>) {
    for done in 0..n {
        let step = async {
            *client = client.clone().ready().await?;
            let (_response, mut stream) = client.send_request(h2_get(addr), true)?;
            // Ready again once this stream's HEADERS have left the queue: a
            // stream reset before that would never reach the wire at all.
            *client = client.clone().ready().await?;
            stream.send_reset(h2::Reason::CANCEL);
            Ok::<_, h2::Error>(())
        };
        if let Err(e) = step.await {
            return (done, Some(e));
        }
    }
    (n, None)
}

/// A normal GET on an existing h2 connection.
async fn h2_probe(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
) -> Result<http::StatusCode, h2::Error> {
    let mut ready = client.clone().ready().await?;
    let (response, _) = ready.send_request(h2_get(addr), true)?;
    Ok(response.await?.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_flood_is_cut_off_and_proxy_stays_healthy() {
    const STREAMS: usize = 2000;
    let (proxy, seen) = guarded().await;
    let addr = proxy.addr();
    let (mut client, conn) = h2_connect(addr).await;
    let (reset, stopped) = timeout(
        Duration::from_secs(10),
        rapid_reset(&mut client, addr, STREAMS),
    )
    .await
    .expect("flood finishes within 10 s");
    // A request behind the flood on the same connection: the proxy has read
    // every reset before it, so it either answers or the connection is gone.
    let probe = timeout(BOUND, h2_probe(&mut client, addr))
        .await
        .expect("probe settles within the bound");
    drop(client);
    let ended = timeout(BOUND, conn)
        .await
        .expect("the h2 connection ends within the bound")
        .expect("connection task");
    let upstream_saw = seen.load(Ordering::SeqCst);
    eprintln!(
        "rapid reset: {reset} streams reset, flood stopped by {stopped:?}, \
         probe on the same connection {probe:?}, connection ended {ended:?}; upstream saw {upstream_saw}"
    );
    match &probe {
        Ok(status) => assert_eq!(*status, 200, "a healthy connection answers the probe"),
        // GOAWAY, or a broken pipe when the close overtakes the GOAWAY frame.
        Err(e) => assert!(
            e.is_go_away() || e.is_io(),
            "a refused connection is closed: {e:?}"
        ),
    }
    good_request(&proxy).await;
    assert!(
        upstream_saw < STREAMS / 10,
        "upstream saw {upstream_saw} of {reset} reset streams"
    );
}

#[tokio::test]
async fn h2_header_list_over_max_header_bytes_is_refused_and_proxy_stays_up() {
    let (proxy, seen) = guarded().await;
    let addr = proxy.addr();
    let (client, conn) = h2_connect(addr).await;
    let mut client = timeout(BOUND, client.ready())
        .await
        .expect("ready within the bound")
        .expect("ready");
    let mut req = http::Request::get(format!("http://{addr}/big"));
    for i in 0..12 {
        req = req.header(format!("x-big-{i}"), "v".repeat(1000));
    }
    let req = req.body(()).expect("request");
    let (response, _stream) = client.send_request(req, true).expect("send");
    let answer = timeout(BOUND, response)
        .await
        .expect("answered within the bound");
    match &answer {
        Ok(res) => eprintln!("h2 12 KB header list: status {}", res.status()),
        Err(e) => eprintln!("h2 12 KB header list: stream error {e:?}"),
    }
    match answer {
        Ok(res) => assert_eq!(res.status(), 431),
        Err(e) => assert!(e.is_reset() || e.is_go_away(), "{e:?}"),
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "upstream was reached");

    // The same connection still serves a normal request, if it survived.
    let reused = async {
        let mut client = client.ready().await.ok()?;
        let (response, _) = client.send_request(h2_get(addr), true).ok()?;
        Some(response.await.ok()?.status())
    };
    let reused = timeout(BOUND, reused).await.expect("bounded");
    eprintln!("h2 12 KB header list: same connection afterwards: {reused:?}");
    drop(conn);

    good_request(&proxy).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1 + usize::from(reused.is_some())
    );
}

#[tokio::test]
async fn h2_request_with_more_headers_than_max_headers_gets_431() {
    let (proxy, seen) = guarded().await;
    let addr = proxy.addr();
    let (client, _conn) = h2_connect(addr).await;
    let mut client = timeout(BOUND, client.ready())
        .await
        .expect("ready within the bound")
        .expect("ready");
    let mut req = http::Request::get(format!("http://{addr}/many"));
    for i in 0..30 {
        req = req.header(format!("x-h-{i}"), "v");
    }
    let (response, _stream) = client
        .send_request(req.body(()).expect("request"), true)
        .expect("send");
    let res = timeout(BOUND, response)
        .await
        .expect("answered within the bound")
        .expect("a response");
    assert_eq!(res.status(), 431);
    assert_eq!(res.headers()["x-breakwater-reason"], "request-too-large");
    assert_eq!(seen.load(Ordering::SeqCst), 0, "upstream was reached");
}
