//! The proxy end to end over real sockets: HTTP/1.1 and h2c in and out,
//! transparency and header hygiene, routing, `respond` routes and streaming.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{
    config_for, config_with, echo_upstream, exchange, full, h1_client, h2_client, raw_exchange,
    upstream, Proxy, TestBody,
};
use http::{Method, Request, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;

const WAIT: Duration = Duration::from_secs(5);

/// A request with the given headers and body.
fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<TestBody> {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(full(body)).expect("request")
}

/// Every value of header `name` in an `echo_upstream` answer, in order.
fn seen<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .skip(1)
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect()
}

/// An upstream that answers with the request body and names the method and
/// HTTP version it received in `x-seen-method` / `x-seen-version`.
async fn body_echo_upstream() -> SocketAddr {
    upstream(|req: http::Request<Incoming>| async move {
        let version = format!("{:?}", req.version());
        let method = req.method().to_string();
        let body = req.into_body().collect().await.expect("request body");
        let mut res = http::Response::new(full(body.to_bytes()));
        let h = res.headers_mut();
        h.insert("x-seen-version", version.parse().expect("value"));
        h.insert("x-seen-method", method.parse().expect("value"));
        res
    })
    .await
}

// ---- HTTP/1.1 and h2c -------------------------------------------------------

#[tokio::test]
async fn h1_get_is_proxied_to_an_h1_upstream() {
    let proxy = Proxy::start(&config_for(body_echo_upstream().await, "")).await;
    let (res, body) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/x"), &[], ""),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-seen-method"], "GET");
    assert_eq!(res.headers["x-seen-version"], "HTTP/1.1");
    assert_eq!(body, "");
}

#[tokio::test]
async fn h1_post_body_reaches_the_upstream_and_comes_back() {
    let proxy = Proxy::start(&config_for(body_echo_upstream().await, "")).await;
    let req = request(Method::POST, &proxy.url("/x"), &[], "ping body");
    let (res, body) = exchange(&h1_client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-seen-method"], "POST");
    assert_eq!(body, "ping body");
}

#[tokio::test]
async fn h2c_get_is_proxied_to_an_h1_upstream_over_http1() {
    let proxy = Proxy::start(&config_for(body_echo_upstream().await, "")).await;
    let (res, body) = exchange(
        &h2_client(),
        request(Method::GET, &proxy.url("/x"), &[], ""),
    )
    .await;
    assert_eq!(res.version, http::Version::HTTP_2);
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-seen-method"], "GET");
    assert_eq!(res.headers["x-seen-version"], "HTTP/1.1");
    assert_eq!(body, "");
}

#[tokio::test]
async fn h2c_post_body_reaches_an_h1_upstream_and_comes_back() {
    let proxy = Proxy::start(&config_for(body_echo_upstream().await, "")).await;
    let req = request(Method::POST, &proxy.url("/x"), &[], "h2 body");
    let (res, body) = exchange(&h2_client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-seen-method"], "POST");
    assert_eq!(res.headers["x-seen-version"], "HTTP/1.1");
    assert_eq!(body, "h2 body");
}

#[tokio::test]
async fn h2c_client_reaches_an_http2_upstream_over_h2c() {
    let app = body_echo_upstream().await;
    let routes = "  - { name: app, match: { path_prefix: / }, upstream: app }";
    let proxy = Proxy::start(&config_with(app, "protocol: http2", routes)).await;
    let req = request(Method::POST, &proxy.url("/x"), &[], "over h2");
    let (res, body) = exchange(&h2_client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["x-seen-version"], "HTTP/2.0");
    assert_eq!(body, "over h2");
}

// ---- Transparency and header hygiene ----------------------------------------

#[tokio::test]
async fn method_path_query_and_host_reach_the_upstream_unchanged() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let url = proxy.url("/a/b%20c/?x=1&y=%2F&x=2");
    let req = request(Method::PATCH, &url, &[("host", "api.example.com")], "");
    let (res, echo) = exchange(&h1_client(), req).await;
    assert_eq!(res.status, StatusCode::OK);
    let first = echo.lines().next().expect("request line");
    assert_eq!(first, "PATCH /a/b%20c/?x=1&y=%2F&x=2 HTTP/1.1");
    assert_eq!(seen(&echo, "host"), ["api.example.com"]);
}

#[tokio::test]
async fn end_to_end_headers_reach_the_upstream_unchanged() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let headers = [
        ("x-custom", "Mixed Case, value; q=1"),
        ("x-multi", "one"),
        ("x-multi", "two"),
        ("authorization", "Bearer abc"),
        ("cookie", "a=1; b=2"),
        ("user-agent", "breakwater-test/1"),
    ];
    let (_, echo) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/"), &headers, ""),
    )
    .await;
    assert_eq!(seen(&echo, "x-custom"), ["Mixed Case, value; q=1"]);
    assert_eq!(seen(&echo, "x-multi"), ["one", "two"]);
    assert_eq!(seen(&echo, "authorization"), ["Bearer abc"]);
    assert_eq!(seen(&echo, "cookie"), ["a=1; b=2"]);
    assert_eq!(seen(&echo, "user-agent"), ["breakwater-test/1"]);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_before_the_upstream() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let headers = [
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "only for the proxy"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
        ("x-kept", "yes"),
    ];
    let (res, echo) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/"), &headers, ""),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(
            seen(&echo, name).is_empty(),
            "{name} reached the upstream:\n{echo}"
        );
    }
    assert_eq!(seen(&echo, "x-kept"), ["yes"]);
}

#[tokio::test]
async fn te_trailers_is_kept_for_the_upstream() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let req = request(Method::GET, &proxy.url("/"), &[("te", "trailers")], "");
    let (_, echo) = exchange(&h1_client(), req).await;
    assert_eq!(seen(&echo, "te"), ["trailers"]);
}

#[tokio::test]
async fn upgrade_h2c_is_not_passed_to_the_upstream() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let headers = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ];
    let (res, echo) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/"), &headers, ""),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{echo}");
    assert!(echo.starts_with("GET / HTTP/1.1\n"), "{echo}");
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(
            seen(&echo, name).is_empty(),
            "{name} reached the upstream:\n{echo}"
        );
    }
}

#[tokio::test]
async fn forwarded_for_is_appended_and_proto_and_host_are_set() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let headers = [
        ("host", "api.example.com"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "spoofed.example"),
    ];
    let (_, echo) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/"), &headers, ""),
    )
    .await;
    assert_eq!(seen(&echo, "x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), ["api.example.com"]);
}

#[tokio::test]
async fn forwarded_for_is_appended_after_every_earlier_hop() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let headers = [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-for", "10.0.0.2"),
    ];
    let (_, echo) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/"), &headers, ""),
    )
    .await;
    let chain = seen(&echo, "x-forwarded-for").join(", ");
    assert_eq!(chain, "10.0.0.1, 10.0.0.2, 127.0.0.1");
}

#[tokio::test]
async fn absolute_form_target_replaces_the_host_header_for_the_upstream() {
    // RFC 9112 §3.2.2: the Host header of an absolute-form request is ignored
    // and regenerated from the target. Otherwise a request routed as
    // a.example.org reaches the app as the host a route keeps it away from.
    let fence = "  - { name: fence, match: { host: admin.internal }, respond: { status: 403 } }";
    let proxy = Proxy::start(&config_for(echo_upstream().await, fence)).await;
    let req =
        b"GET http://a.example.org/x HTTP/1.1\r\nHost: admin.internal\r\nConnection: close\r\n\r\n";
    let res = raw_exchange(proxy.addr(), req).await;
    let echo = res.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(seen(echo, "host"), ["a.example.org"], "{res}");
    assert_eq!(seen(echo, "x-forwarded-host"), ["a.example.org"], "{res}");
}

#[tokio::test]
async fn request_id_sent_by_the_client_is_kept_and_returned() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let req = request(
        Method::GET,
        &proxy.url("/"),
        &[("x-request-id", "client-id-42")],
        "",
    );
    let (res, echo) = exchange(&h1_client(), req).await;
    assert_eq!(seen(&echo, "x-request-id"), ["client-id-42"]);
    assert_eq!(res.headers["x-request-id"], "client-id-42");
}

#[tokio::test]
async fn request_id_is_generated_when_missing_and_the_upstream_sees_the_same_one() {
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (res, echo) =
            exchange(&h1_client(), request(Method::GET, &proxy.url("/"), &[], "")).await;
        let returned = res.headers["x-request-id"]
            .to_str()
            .expect("ascii id")
            .to_owned();
        assert!(!returned.is_empty());
        assert_eq!(seen(&echo, "x-request-id"), [returned.as_str()]);
        ids.push(returned);
    }
    assert_ne!(ids[0], ids[1], "every request gets its own id");
}

// ---- Routing ------------------------------------------------------------------

/// Respond-only routes, each answering with its own name; no catch-all.
const ROUTES: &str = r#"
  - { name: first, match: { path_prefix: /dup }, respond: { body: first } }
  - { name: second, match: { path_prefix: /dup }, respond: { body: second } }
  - name: host-exact
    match: { host: api.example.com, path_prefix: /h }
    respond: { body: host-exact }
  - name: host-suffix
    match: { host: "*.example.org", path_prefix: /h }
    respond: { body: host-suffix }
  - { name: orders, match: { path_prefix: /orders }, respond: { body: orders } }
  - { name: exact, match: { path_exact: /exact }, respond: { body: exact } }
  - name: writes
    match: { path_prefix: /m, methods: [POST, put] }
    respond: { body: writes }
  - name: tenant-acme
    match: { path_prefix: /t, headers: { x-tenant: acme } }
    respond: { body: tenant-acme }
  - name: tenant-any
    match: { path_prefix: /t, headers: { x-tenant: "*" } }
    respond: { body: tenant-any }
"#;

async fn routing_proxy() -> Proxy {
    // The upstream is never used: every route answers itself.
    Proxy::start(&config_with(echo_upstream().await, "", ROUTES)).await
}

/// The name of the route that answered, or `<status> <reason>`.
async fn route_of(proxy: &Proxy, method: Method, path: &str, headers: &[(&str, &str)]) -> String {
    let (res, body) = exchange(&h1_client(), request(method, &proxy.url(path), headers, "")).await;
    match res.status {
        StatusCode::OK => body,
        status => {
            let reason = res.headers.get("x-breakwater-reason");
            format!(
                "{} {}",
                status.as_u16(),
                reason.expect("reason").to_str().expect("ascii")
            )
        }
    }
}

async fn route_for_host(proxy: &Proxy, host: &str) -> String {
    route_of(proxy, Method::GET, "/h", &[("host", host)]).await
}

#[tokio::test]
async fn host_exact_match_ignores_case_and_port() {
    let p = routing_proxy().await;
    let route = |host| route_for_host(&p, host);
    assert_eq!(route("api.example.com").await, "host-exact");
    assert_eq!(route("API.Example.COM:8443").await, "host-exact");
    assert_eq!(route("x.api.example.com").await, "404 no-route");
    assert_eq!(route("api.example.com.evil").await, "404 no-route");
}

#[tokio::test]
async fn host_suffix_match_is_case_insensitive_and_ignores_port() {
    let p = routing_proxy().await;
    let route = |host| route_for_host(&p, host);
    assert_eq!(route("a.example.org").await, "host-suffix");
    assert_eq!(route("A.B.EXAMPLE.ORG:1234").await, "host-suffix");
    assert_eq!(route("example.org").await, "404 no-route");
    assert_eq!(route("badexample.org").await, "404 no-route");
}

#[tokio::test]
async fn path_prefix_matches_whole_segments_only() {
    let p = routing_proxy().await;
    assert_eq!(route_of(&p, Method::GET, "/orders", &[]).await, "orders");
    assert_eq!(route_of(&p, Method::GET, "/orders/1", &[]).await, "orders");
    assert_eq!(
        route_of(&p, Method::GET, "/orders?x=1", &[]).await,
        "orders"
    );
    assert_eq!(
        route_of(&p, Method::GET, "/ordersx", &[]).await,
        "404 no-route"
    );
}

#[tokio::test]
async fn path_exact_matches_only_that_path() {
    let p = routing_proxy().await;
    assert_eq!(route_of(&p, Method::GET, "/exact", &[]).await, "exact");
    assert_eq!(route_of(&p, Method::GET, "/exact?q=1", &[]).await, "exact");
    assert_eq!(
        route_of(&p, Method::GET, "/exact/", &[]).await,
        "404 no-route"
    );
    assert_eq!(
        route_of(&p, Method::GET, "/exact/1", &[]).await,
        "404 no-route"
    );
}

#[tokio::test]
async fn methods_restrict_a_route() {
    let p = routing_proxy().await;
    assert_eq!(route_of(&p, Method::POST, "/m", &[]).await, "writes");
    assert_eq!(route_of(&p, Method::PUT, "/m", &[]).await, "writes");
    assert_eq!(route_of(&p, Method::GET, "/m", &[]).await, "404 no-route");
}

#[tokio::test]
async fn headers_match_by_value_and_by_presence() {
    let p = routing_proxy().await;
    let acme = [("x-tenant", "acme")];
    let other = [("x-tenant", "other")];
    assert_eq!(route_of(&p, Method::GET, "/t", &acme).await, "tenant-acme");
    assert_eq!(route_of(&p, Method::GET, "/t", &other).await, "tenant-any");
    assert_eq!(route_of(&p, Method::GET, "/t", &[]).await, "404 no-route");
}

#[tokio::test]
async fn first_matching_route_wins() {
    let p = routing_proxy().await;
    assert_eq!(route_of(&p, Method::GET, "/dup/x", &[]).await, "first");
}

#[tokio::test]
async fn unmatched_request_gets_404_no_route() {
    let p = routing_proxy().await;
    let (res, body) = exchange(&h1_client(), request(Method::GET, &p.url("/nope"), &[], "")).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.headers["x-breakwater-reason"], "no-route");
    assert!(body.starts_with("no-route"), "{body}");
}

#[tokio::test]
async fn unmatched_request_accepting_json_gets_a_json_body() {
    let p = routing_proxy().await;
    let req = request(
        Method::GET,
        &p.url("/nope"),
        &[("accept", "application/json")],
        "",
    );
    let (res, body) = exchange(&h1_client(), req).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.headers["x-breakwater-reason"], "no-route");
    assert_eq!(res.headers["content-type"], "application/json");
    assert!(
        body.trim().starts_with('{') && body.trim().ends_with('}'),
        "{body}"
    );
    assert!(body.contains(r#""error":"no-route""#), "{body}");
}

#[tokio::test]
async fn unmatched_grpc_request_gets_a_trailers_only_response() {
    let p = routing_proxy().await;
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    let req = request(
        Method::POST,
        &p.url("/pkg.Svc/Call"),
        &headers,
        &[0u8; 5][..],
    );
    let res = tokio::time::timeout(WAIT, h2_client().request(req))
        .await
        .expect("response within 5s")
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["grpc-status"], "12");
    assert_eq!(res.headers()["x-breakwater-reason"], "no-route");
    assert!(
        res.body().is_end_stream(),
        "trailers-only: the head ends the stream"
    );
}

#[tokio::test]
async fn absolute_form_target_is_routed_by_its_authority_not_the_host_header() {
    let p = routing_proxy().await;
    // Routed by Host this would be host-exact; by the target it is host-suffix.
    let req = b"GET http://a.example.org/h HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";
    let res = raw_exchange(p.addr(), req).await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(res.ends_with("host-suffix"), "{res}");
    // A route for the Host header's host does not match another authority.
    let req = b"GET http://elsewhere.test/h HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";
    let res = raw_exchange(p.addr(), req).await;
    assert!(res.starts_with("HTTP/1.1 404"), "{res}");
    assert!(res.contains("x-breakwater-reason: no-route"), "{res}");
}

#[tokio::test]
async fn absolute_form_target_for_an_unconfigured_host_goes_to_the_configured_upstream() {
    // A server the request names in its target, which must never be dialled.
    let bystander = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    bystander.set_nonblocking(true).expect("nonblocking");
    let target = bystander.local_addr().expect("addr");
    let proxy = Proxy::start(&config_for(echo_upstream().await, "")).await;
    let req =
        format!("GET http://{target}/x HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let res = raw_exchange(proxy.addr(), req.as_bytes()).await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    assert!(
        res.contains("\r\n\r\nGET /x HTTP/1.1\n"),
        "the echo upstream answered: {res}"
    );
    // The proxy connected (if at all) before it answered, so a connection
    // to the bystander would already be waiting in its backlog.
    let accepted = bystander.accept();
    assert!(
        matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy dialled the host named in the request: {accepted:?}"
    );
}

// ---- Responses the proxy makes itself, and streaming ----------------------------

#[tokio::test]
async fn respond_route_returns_its_status_body_and_headers() {
    let routes = r#"
  - name: teapot
    match: { path_exact: /tea }
    respond:
      status: 418
      body: "short and stout\n"
      headers: { x-custom: "yes", cache-control: no-store }
"#;
    let proxy = Proxy::start(&config_with(echo_upstream().await, "", routes)).await;
    let (res, body) = exchange(
        &h1_client(),
        request(Method::GET, &proxy.url("/tea"), &[], ""),
    )
    .await;
    assert_eq!(res.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(body, "short and stout\n");
    assert_eq!(res.headers["x-custom"], "yes");
    assert_eq!(res.headers["cache-control"], "no-store");
    assert_eq!(res.headers["content-length"], "16");
}

type Chunks = tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>;

#[tokio::test]
async fn response_chunks_reach_the_client_before_the_upstream_finishes() {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let rx: Arc<Mutex<Option<Chunks>>> = Arc::new(Mutex::new(Some(rx)));
    let app = upstream(move |_req: http::Request<Incoming>| {
        let rx = rx.lock().expect("lock").take();
        async move {
            let mut rx = rx.expect("one streaming request");
            let chunks = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let body = StreamBody::new(chunks).map_err(|never| match never {});
            http::Response::new(BodyExt::boxed(body))
        }
    })
    .await;
    let proxy = Proxy::start(&config_for(app, "")).await;
    let send = h1_client().request(request(Method::GET, &proxy.url("/stream"), &[], ""));
    let chunk = |s: &'static str| Ok(Frame::data(Bytes::from_static(s.as_bytes())));
    tx.send(chunk("one ")).await.expect("upstream streams");
    let res = tokio::time::timeout(WAIT, send)
        .await
        .expect("head within 5s")
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    // Each chunk is released only after the previous one reached the client.
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some(&b"one "[..]));
    tx.send(chunk("two ")).await.expect("upstream streams");
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some(&b"two "[..]));
    tx.send(chunk("three")).await.expect("upstream streams");
    assert_eq!(next_chunk(&mut body).await.as_deref(), Some(&b"three"[..]));
    drop(tx);
    assert_eq!(
        next_chunk(&mut body).await,
        None,
        "the body ends with the upstream's"
    );
}

/// The next data chunk of `body` (None at its end), within 5s.
async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    let frame = tokio::time::timeout(WAIT, body.frame()).await;
    let frame = frame.expect("a chunk within 5s")?.expect("frame");
    Some(frame.into_data().expect("a data frame"))
}
