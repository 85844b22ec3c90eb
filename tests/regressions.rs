//! Defects found in review, each pinned by the behaviour that was wrong:
//! upstream pooling keyed by the client's Host, and the in-flight gauge of
//! requests whose client went away before a response.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{eventually, full, h1_client, metric, scrape, Proxy};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers 200 at once, or never for `/hang`, and counts
/// the TCP connections it accepts.
async fn connection_counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    if req.uri().path() == "/hang" {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(http::Response::new(full("ok")))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn requests_with_many_different_hosts_share_one_upstream_pool() {
    let (up, accepted) = connection_counting_upstream().await;
    let proxy = Proxy::start(&common::config_for(up, "")).await;
    let client = h1_client();
    for i in 0..20 {
        let req = http::Request::get(proxy.url("/"))
            .header("host", format!("random-{i}.example"))
            .body(full(Bytes::new()))
            .expect("request");
        let res = tokio::time::timeout(common::WAIT, client.request(req))
            .await
            .expect("answered within the bound")
            .expect("response");
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.expect("body");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "sequential requests reuse one upstream connection whatever their Host"
    );
}

#[tokio::test]
async fn a_request_whose_client_leaves_before_the_response_leaves_the_in_flight_gauge() {
    let (up, _) = connection_counting_upstream().await;
    let proxy = Proxy::start(&common::config_for(up, "")).await;
    let in_flight = || async {
        let samples = scrape(&proxy.admin_url("/metrics")).await;
        metric(
            &samples,
            "breakwater_requests_in_flight",
            &[("route", "app")],
        )
    };

    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    eventually("the hanging request is in flight", || async {
        (in_flight().await == Some(1.0)).then_some(())
    })
    .await;

    drop(stream);
    eventually("the gauge returns to 0 once the client is gone", || async {
        (in_flight().await == Some(0.0)).then_some(())
    })
    .await;
}

/// A config with route `app` (with a breaker) and, optionally, a second
/// listener on `extra`.
fn breaker_config(up: SocketAddr, min_requests: u32, extra: Option<SocketAddr>) -> String {
    let extra = extra.map_or(String::new(), |a| {
        format!("  - {{ name: extra, listen: {a} }}\n")
    });
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
{extra}upstreams:
  app: {{ url: http://{up} }}
access_log: {{ format: off }}
routes:
  - name: app
    match: {{ path_prefix: / }}
    upstream: app
    breaker: {{ min_requests: {min_requests} }}
"#
    )
}

#[tokio::test]
async fn a_refused_reload_leaves_the_breaker_gauges_as_they_were() {
    let (up, _) = connection_counting_upstream().await;
    let proxy = Proxy::start(&breaker_config(up, 20, None)).await;
    let (status, _, _) = common::post_within(&proxy.admin_url("/breakers/app/open")).await;
    assert_eq!(status, 200);

    // The new config changes the breaker (a new one would be built) and
    // adds a listener on an address that is taken: the reload must fail.
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let next = breaker_config(up, 5, Some(taken.local_addr().expect("addr")));
    let cfg = breakwater::config::parse(std::path::Path::new("next.yaml"), &next).expect("valid");
    assert!(
        proxy.app.apply(cfg).await.is_err(),
        "the bind failure refuses the reload"
    );

    let samples = scrape(&proxy.admin_url("/metrics")).await;
    let state = |s| {
        metric(
            &samples,
            "breakwater_breaker_state",
            &[("route", "app"), ("state", s)],
        )
    };
    assert_eq!(state("forced_open"), Some(1.0));
    assert_eq!(state("closed"), Some(0.0));
    let (status, headers, _) = common::get_within(&proxy.url("/")).await;
    assert_eq!(status, 503, "the old, forced-open breaker still serves");
    assert_eq!(headers["x-breakwater-reason"], "breaker-open");
}

#[tokio::test]
async fn respond_routes_take_no_layers_from_the_defaults() {
    let (up, _) = connection_counting_upstream().await;
    let yaml = format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners: [ {{ name: main, listen: 127.0.0.1:0 }} ]
upstreams: {{ app: {{ url: http://{up} }} }}
defaults: {{ timeout: 1s, concurrency: {{ max: 100 }}, breaker: {{ error_percent: 50 }} }}
access_log: {{ format: off }}
routes:
  - {{ name: hello, match: {{ path_exact: /hello }}, respond: {{ status: 200, body: hi }} }}
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#
    );
    let proxy = Proxy::start(&yaml).await;
    let status = common::admin_json(&proxy, "/status.json").await;
    let route = |name: &str| {
        status["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("route {name} in {status}"))
    };
    let hello = route("hello");
    assert!(
        hello["breaker"].is_null() && hello["concurrency"].is_null(),
        "{hello}"
    );
    assert!(hello["timeout_ms"].is_null(), "{hello}");
    let app = route("app");
    assert_eq!(app["concurrency"]["max"], 100, "{app}");
    assert_eq!(app["breaker"]["state"], "closed", "{app}");
}

#[tokio::test]
async fn a_grpc_refusal_is_counted_by_the_status_it_stands_for() {
    let (up, _) = connection_counting_upstream().await;
    let routes = "  - { name: app, match: { path_prefix: /app }, upstream: app }";
    let yaml = common::config_with(up, "", routes);
    let proxy = Proxy::start(&yaml).await;
    let req = http::Request::post(proxy.url("/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::new()))
        .expect("request");
    let res = tokio::time::timeout(common::WAIT, common::h2_client().request(req))
        .await
        .expect("answered within the bound")
        .expect("response");
    assert_eq!(
        res.status(),
        200,
        "gRPC refusals are trailers-only HTTP 200"
    );
    assert_eq!(res.headers()["grpc-status"], "12");

    let samples = scrape(&proxy.admin_url("/metrics")).await;
    let count = |code| {
        metric(
            &samples,
            "breakwater_requests_total",
            &[("code", code), ("route", "-")],
        )
    };
    assert_eq!(count("4xx"), Some(1.0), "a no-route refusal is a 404");
    assert_eq!(count("2xx"), Some(0.0));
}
