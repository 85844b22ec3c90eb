//! Bodies stream through the proxy: uploads and downloads far larger than
//! the proxy's memory ceiling pass through the real binary (its peak RSS is
//! read from `/proc`), and trailers travel end to end over h2c and HTTP/1.1.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    config_for, config_with, full, h1_client, h2_client, upstream, BinaryProxy, Proxy, TestBody,
};
use futures_util::stream;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, TE, TRAILER};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;

const MIB: u64 = 1024 * 1024;
/// The size of each generated body chunk.
const CHUNK: usize = 64 * 1024;
/// The proxy's peak resident set must stay below this: a few times what it
/// needs at rest, far below one 256 MiB body held whole.
const PEAK_RSS_CEILING_KIB: u64 = 96 * 1024;
/// The bound on one whole large transfer (a debug build moves a few hundred
/// MiB/s on loopback; this leaves room for a loaded machine).
const TRANSFER_WAIT: Duration = Duration::from_secs(180);

const REQUEST_TRAILER: HeaderName = HeaderName::from_static("x-request-checksum");
const RESPONSE_TRAILER: HeaderName = HeaderName::from_static("x-response-checksum");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_256_mib_over_http1_streams_in_bounded_proxy_memory() {
    let up = upstream(counting_upstream).await;
    let proxy = BinaryProxy::start(&child_config(up, "http1")).await;
    let before = peak_rss_kib(proxy.pid());

    let req = Request::post(proxy.url("main", "/upload"))
        .body(generated_body(256 * MIB))
        .expect("request");
    let (status, counted) = transfer("256 MiB h1 upload", async {
        let res = h1_client().request(req).await.expect("response");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await;

    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(counted, (256 * MIB).to_string(), "bytes the upstream saw");
    assert_bounded("256 MiB h1 upload", before, peak_rss_kib(proxy.pid()));
    drop(proxy); // kill_on_drop: SIGKILL to the child's pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_256_mib_over_http1_streams_in_bounded_proxy_memory() {
    let up = upstream(|_req: Request<Incoming>| async move {
        let mut res = Response::new(generated_body(256 * MIB));
        res.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(256 * MIB));
        res
    })
    .await;
    let proxy = BinaryProxy::start(&child_config(up, "http1")).await;
    let before = peak_rss_kib(proxy.pid());

    let req = Request::get(proxy.url("main", "/download"))
        .body(full(Bytes::new()))
        .expect("request");
    let (status, received) = transfer("256 MiB h1 download", async {
        let res = h1_client().request(req).await.expect("response");
        let status = res.status();
        (status, count_bytes(res.into_body()).await.expect("body"))
    })
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(received, 256 * MIB, "bytes the client received");
    assert_bounded("256 MiB h1 download", before, peak_rss_kib(proxy.pid()));
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_64_mib_over_h2c_to_an_h2c_upstream_streams_in_bounded_proxy_memory() {
    let up = upstream(counting_upstream).await;
    let proxy = BinaryProxy::start(&child_config(up, "http2")).await;
    let before = peak_rss_kib(proxy.pid());

    let req = Request::post(proxy.url("main", "/upload"))
        .body(generated_body(64 * MIB))
        .expect("request");
    let (status, counted) = transfer("64 MiB h2c upload", async {
        let res = h2_client().request(req).await.expect("response");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
    .await;

    assert_eq!(status, StatusCode::OK, "{counted}");
    assert_eq!(
        counted,
        format!("{} HTTP/2.0", 64 * MIB),
        "what the upstream saw"
    );
    assert_bounded("64 MiB h2c upload", before, peak_rss_kib(proxy.pid()));
    drop(proxy);
}

#[tokio::test]
async fn h2c_request_and_response_trailers_pass_through_to_an_h2c_upstream() {
    let up = upstream(trailer_echo_upstream).await;
    let proxy = Proxy::start(&config_with(up, "protocol: http2", CATCH_ALL)).await;

    let req = Request::post(proxy.url("/trailers"))
        .body(body_with_trailers(
            "request body",
            &REQUEST_TRAILER,
            "req-123",
        ))
        .expect("request");
    let (version, body, trailers) = with_trailers(h2_client().request(req)).await;

    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body, "HTTP/2.0 request trailer: req-123");
    let trailers = trailers.expect("response trailers reach the client");
    assert_eq!(trailers[&RESPONSE_TRAILER], "resp-456");
}

/// HTTP/1.1 carries trailers only in chunked bodies, and hyper only writes
/// them when the `Trailer` header announces their names; a server also only
/// sends response trailers to a client that said `TE: trailers` (RFC 9110
/// §6.5.1 lets it drop them otherwise). So the client here sends both
/// `TE: trailers` and `Trailer`, and the upstream announces its own. Without
/// `TE: trailers` from the client, hyper drops the response trailers — at the
/// upstream (the proxy forwards no `TE` it was not given) and at the proxy.
#[tokio::test]
async fn http1_chunked_trailers_pass_through_when_the_client_sends_te_trailers() {
    let up = upstream(trailer_echo_upstream).await;
    let proxy = Proxy::start(&config_for(up, "")).await;

    let req = Request::post(proxy.url("/trailers"))
        .header(TE, "trailers")
        .header(TRAILER, REQUEST_TRAILER.as_str())
        .body(body_with_trailers(
            "request body",
            &REQUEST_TRAILER,
            "req-123",
        ))
        .expect("request");
    let (version, body, trailers) = with_trailers(h1_client().request(req)).await;

    assert_eq!(version, Version::HTTP_11);
    assert_eq!(body, "HTTP/1.1 request trailer: req-123");
    let trailers = trailers.expect("response trailers reach the client");
    assert_eq!(trailers[&RESPONSE_TRAILER], "resp-456");
}

const CATCH_ALL: &str = "  - { name: app, match: { path_prefix: / }, upstream: app }";

/// A config for the binary: no route timeout (a 256 MiB upload is answered
/// only once it has all arrived) and a generous body timeout.
fn child_config(upstream: std::net::SocketAddr, protocol: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0, body_timeout: 180s }}
upstreams:
  app: {{ url: "http://{upstream}", protocol: {protocol} }}
access_log: {{ format: off }}
routes:
{CATCH_ALL}
"#
    )
}

/// Answers with the number of body bytes it read (frame by frame, never
/// holding the body) and, for HTTP/2, the version it was spoken to with.
async fn counting_upstream(req: Request<Incoming>) -> Response<TestBody> {
    let version = req.version();
    match count_bytes(req.into_body()).await {
        Ok(n) if version == Version::HTTP_2 => Response::new(full(format!("{n} HTTP/2.0"))),
        Ok(n) => Response::new(full(n.to_string())),
        Err(e) => {
            let mut res = Response::new(full(format!("body failed: {e}")));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            res
        }
    }
}

/// Reads the request and its trailers whole (they are small), answers with
/// what it saw in a chunked body, and sends a response trailer.
async fn trailer_echo_upstream(req: Request<Incoming>) -> Response<TestBody> {
    let version = req.version();
    let seen = match req.into_body().collect().await {
        Ok(collected) => collected
            .trailers()
            .and_then(|t| t.get(&REQUEST_TRAILER))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned(),
        Err(e) => format!("body failed: {e}"),
    };
    let text = format!("{version:?} request trailer: {seen}");
    let mut res = Response::new(body_with_trailers(&text, &RESPONSE_TRAILER, "resp-456"));
    res.headers_mut()
        .insert(TRAILER, HeaderValue::from_name(RESPONSE_TRAILER));
    res
}

/// `text` as one data frame, then one trailer. No size hint, so HTTP/1.1
/// sends it chunked.
fn body_with_trailers(text: &str, name: &HeaderName, value: &'static str) -> TestBody {
    let mut trailers = HeaderMap::new();
    trailers.insert(name.clone(), HeaderValue::from_static(value));
    let frames = vec![
        Ok(Frame::data(Bytes::copy_from_slice(text.as_bytes()))),
        Ok(Frame::trailers(trailers)),
    ];
    StreamBody::new(stream::iter(frames)).boxed()
}

/// `total` bytes (a multiple of [`CHUNK`]) produced chunk by chunk as the
/// receiver asks for them; no size hint, so HTTP/1.1 sends it chunked.
fn generated_body(total: u64) -> TestBody {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let chunks = total / CHUNK as u64;
    let frames = (0..chunks).map(move |_| Ok(Frame::data(chunk.clone())));
    StreamBody::new(stream::iter(frames)).boxed()
}

/// Counts a body's data bytes frame by frame.
async fn count_bytes(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

/// Awaits a response and reads its body and trailers, bounded.
async fn with_trailers(
    sent: impl std::future::Future<
        Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    >,
) -> (Version, String, Option<HeaderMap>) {
    common::within("the response and its trailers", async {
        let res = sent.await.expect("response");
        let version = res.version();
        let collected = res.into_body().collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        (version, body, trailers)
    })
    .await
}

async fn transfer<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TRANSFER_WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TRANSFER_WAIT:?}"))
}

/// The peak resident set size (`VmHWM`) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

fn assert_bounded(what: &str, before_kib: u64, after_kib: u64) {
    eprintln!(
        "{what}: proxy peak RSS {:.1} MiB before, {:.1} MiB after",
        before_kib as f64 / 1024.0,
        after_kib as f64 / 1024.0
    );
    assert!(
        after_kib < PEAK_RSS_CEILING_KIB,
        "{what}: the proxy's peak RSS reached {after_kib} KiB (ceiling {PEAK_RSS_CEILING_KIB} KiB): \
         the body was buffered, not streamed"
    );
}
