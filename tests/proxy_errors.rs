//! The answers the proxy makes itself when it will not or cannot forward:
//! `CONNECT`, unreachable and misbehaving upstreams, route timeouts.

mod common;

use std::future::pending;
use std::net::SocketAddr;
use std::time::Duration;

use common::{config_with, exchange, full, h1_client, raw_exchange, upstream, Proxy};
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CATCH_ALL: &str = "  - { name: app, match: { path_prefix: / }, upstream: app }";

/// `GET /` through the proxy; every wait bounded.
async fn get(proxy: &Proxy) -> (http::response::Parts, String) {
    let req = Request::get(proxy.url("/"))
        .body(full(""))
        .expect("request");
    exchange(&h1_client(), req).await
}

/// An upstream speaking raw TCP: on each connection it reads a request head,
/// writes `reply` and keeps the connection open until the proxy closes it.
/// An empty `reply` closes the connection at once instead.
async fn raw_upstream(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if reply.is_empty() {
                    return;
                }
                let _ = stream.write_all(reply).await;
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// Asserts the proxy answered 502 with `reason` for an upstream sending `reply`.
async fn assert_bad_gateway(reply: &'static [u8], reason: &str) {
    let proxy = Proxy::start(&config_with(raw_upstream(reply).await, "", CATCH_ALL)).await;
    let (res, body) = get(&proxy).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(res.headers["x-breakwater-reason"], reason, "{body}");
    assert!(body.starts_with(reason), "{body}");
}

#[tokio::test]
async fn connect_gets_405_method_not_allowed() {
    let app = upstream(|_| async { http::Response::new(full("reached the upstream")) }).await;
    let proxy = Proxy::start(&config_with(app, "", CATCH_ALL)).await;
    let req =
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n";
    let res = raw_exchange(proxy.addr(), req).await;
    assert!(res.starts_with("HTTP/1.1 405"), "{res}");
    assert!(
        res.contains("x-breakwater-reason: method-not-allowed"),
        "{res}"
    );
    assert!(!res.contains("reached the upstream"), "{res}");
}

#[tokio::test]
async fn unreachable_upstream_gets_502_at_once_and_counts_a_connect_error() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let routes = "  - { name: app, match: { path_prefix: / }, upstream: app, timeout: 30s }";
    let proxy = Proxy::start(&config_with(refused, "connect_timeout: 30s", routes)).await;
    // Far inside both 30s budgets: a refused connect is not retried until a
    // timeout runs out.
    let (res, body) = tokio::time::timeout(Duration::from_secs(5), get(&proxy))
        .await
        .expect("answered well within the 30s timeouts");
    assert_eq!(res.status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(res.headers["x-breakwater-reason"], "upstream-unreachable");

    let req = Request::get(proxy.admin_url("/metrics"))
        .body(full(""))
        .expect("request");
    let (_, metrics) = exchange(&h1_client(), req).await;
    let series = r#"breakwater_upstream_connect_errors_total{upstream="app"} "#;
    let count: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number");
    assert!(count >= 1.0, "{count}");
}

#[tokio::test]
async fn invalid_upstream_status_line_gets_502_protocol_error() {
    let reply = b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n";
    assert_bad_gateway(reply, "upstream-protocol-error").await;
}

#[tokio::test]
async fn nul_in_an_upstream_header_value_gets_502_protocol_error() {
    let reply = b"HTTP/1.1 200 OK\r\nX-Bad: a\0b\r\nContent-Length: 0\r\n\r\n";
    assert_bad_gateway(reply, "upstream-protocol-error").await;
}

#[tokio::test]
async fn cr_in_an_upstream_header_value_gets_502_protocol_error() {
    let reply = b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 0\r\n\r\n";
    assert_bad_gateway(reply, "upstream-protocol-error").await;
}

#[tokio::test]
async fn conflicting_upstream_content_lengths_get_502_protocol_error() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    assert_bad_gateway(reply, "upstream-protocol-error").await;
}

#[tokio::test]
async fn upstream_content_length_with_transfer_encoding_is_not_forwarded_ambiguously() {
    // Chunked framing carries "hello"; the stale Content-Length says 3.
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\n";
    let proxy = Proxy::start(&config_with(raw_upstream(reply).await, "", CATCH_ALL)).await;
    let (res, body) = get(&proxy).await;
    if res.status == StatusCode::BAD_GATEWAY {
        assert_eq!(
            res.headers["x-breakwater-reason"],
            "upstream-protocol-error"
        );
    } else {
        // Forwarded: then only with framing that matches the body it carries.
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(body, "hello", "headers sent: {:?}", res.headers);
        let length = res.headers.get("content-length");
        assert!(!matches!(length, Some(l) if l != "5"), "{:?}", res.headers);
    }
}

#[tokio::test]
async fn upstream_closing_without_answering_gets_502_upstream_reset() {
    assert_bad_gateway(b"", "upstream-reset").await;
}

#[tokio::test]
async fn route_timeout_before_the_response_head_gets_504() {
    let app = upstream(|_| pending::<http::Response<common::TestBody>>()).await;
    let routes = "  - { name: app, match: { path_prefix: / }, upstream: app, timeout: 200ms }";
    let proxy = Proxy::start(&config_with(app, "", routes)).await;
    let (res, body) = get(&proxy).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(res.headers["x-breakwater-reason"], "timeout");
}
