//! The admin listener of an in-process proxy: `/metrics` read back in the
//! Prometheus text format (and linted by promtool when it is available),
//! `/healthz`, `/config` and unknown paths.

mod common;

use std::net::SocketAddr;

use common::{eventually, get_within, metric, scrape, Proxy, Sample};
use http::StatusCode;

/// Routes `app` (a live upstream on /app) and `dead` (nothing listens, on
/// /dead); any other path matches no route.
fn config(app: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
upstreams:
  app: {{ url: "http://{app}" }}
  dead: {{ url: "http://{dead}" }}
access_log: {{ format: off }}
routes:
  - name: app
    match: {{ path_prefix: /app }}
    upstream: app
  - name: dead
    match: {{ path_prefix: /dead }}
    upstream: dead
"#
    )
}

/// An address nothing listens on: bound, then released.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}

/// A proxy that has answered three 200s on `app`, one no-route 404 and one
/// 502 from `dead`.
async fn proxy_with_traffic() -> Proxy {
    let app = common::upstream(|_req| async { http::Response::new(common::full("ok")) }).await;
    let proxy = Proxy::start(&config(app, dead_addr().await)).await;
    for _ in 0..3 {
        let (status, _, body) = get_within(&proxy.url("/app/x")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    let (status, headers, _) = get_within(&proxy.url("/nowhere")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-breakwater-reason"], "no-route");
    let (status, headers, _) = get_within(&proxy.url("/dead")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["x-breakwater-reason"], "upstream-unreachable");
    proxy
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(samples, name, labels).unwrap_or_else(|| {
        let near: Vec<String> = samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| format!("{:?} {}", s.labels, s.value))
            .collect();
        panic!("no sample {name}{labels:?}; samples of that name:\n{near:#?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_responses_errors_durations_and_in_flight_by_route() {
    let proxy = proxy_with_traffic().await;
    // In-flight and duration are settled when the server drops the response
    // body, which may be a moment after the client has read it all.
    let samples = eventually("app requests settle (in flight 0, 3 durations)", || async {
        let samples = scrape(&proxy.admin_url("/metrics")).await;
        let route = [("route", "app")];
        let settled = metric(&samples, "breakwater_requests_in_flight", &route) == Some(0.0)
            && metric(
                &samples,
                "breakwater_request_duration_seconds_count",
                &route,
            ) == Some(3.0);
        settled.then_some(samples)
    })
    .await;
    let s = &samples;

    let requests = "breakwater_requests_total";
    assert_eq!(
        value(s, requests, &[("code", "2xx"), ("route", "app")]),
        3.0
    );
    assert_eq!(value(s, requests, &[("code", "4xx"), ("route", "-")]), 1.0);
    assert_eq!(
        value(s, requests, &[("code", "5xx"), ("route", "dead")]),
        1.0
    );
    assert_eq!(
        value(s, requests, &[("code", "5xx"), ("route", "app")]),
        0.0
    );

    let errors = "breakwater_proxy_errors_total";
    assert_eq!(
        value(s, errors, &[("reason", "no-route"), ("route", "-")]),
        1.0
    );
    assert_eq!(
        value(
            s,
            errors,
            &[("reason", "upstream-unreachable"), ("route", "dead")]
        ),
        1.0
    );
    assert_eq!(
        value(
            s,
            "breakwater_upstream_connect_errors_total",
            &[("upstream", "dead")]
        ),
        1.0
    );

    let app = [("route", "app")];
    assert_eq!(
        value(s, "breakwater_request_duration_seconds_count", &app),
        3.0
    );
    let inf = [("route", "app"), ("le", "+Inf")];
    assert_eq!(
        value(s, "breakwater_request_duration_seconds_bucket", &inf),
        3.0
    );
    assert!(value(s, "breakwater_request_duration_seconds_sum", &app) > 0.0);
    assert_eq!(value(s, "breakwater_requests_in_flight", &app), 0.0);

    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(s, "breakwater_build_info", &version), 1.0);
    let reloads = "breakwater_config_reloads_total";
    assert_eq!(value(s, reloads, &[("result", "success")]), 0.0);
    assert_eq!(value(s, reloads, &[("result", "failure")]), 0.0);
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let proxy = proxy_with_traffic().await;
    let (status, headers, body) = get_within(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content-type: {content_type}"
    );
    assert!(body.contains("# TYPE breakwater_requests_total counter"));
    assert!(body.contains("# TYPE breakwater_request_duration_seconds histogram"));
    assert!(body.contains("# HELP breakwater_requests_in_flight "));
}

#[tokio::test]
async fn promtool_finds_nothing_to_lint_in_the_metrics() {
    let proxy = proxy_with_traffic().await;
    let (status, _, body) = get_within(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    common::promtool_lint("the core metrics", &body).await;
}

#[tokio::test]
async fn healthz_answers_200() {
    let app = common::echo_upstream().await;
    let proxy = Proxy::start(&config(app, dead_addr().await)).await;
    let (status, _, body) = get_within(&proxy.admin_url("/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
}

#[tokio::test]
async fn config_endpoint_returns_the_effective_config_as_yaml() {
    let app = common::echo_upstream().await;
    let proxy = Proxy::start(&config(app, dead_addr().await)).await;
    let (status, headers, body) = get_within(&proxy.admin_url("/config")).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("application/yaml"),
        "{content_type}"
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(&body)
        .unwrap_or_else(|e| panic!("/config is not YAML ({e}):\n{body}"));
    let routes: Vec<&str> = doc["routes"]
        .as_sequence()
        .unwrap_or_else(|| panic!("no routes list in:\n{body}"))
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(routes, ["app", "dead"], "in:\n{body}");
    assert!(
        doc["upstreams"]["app"]["url"].as_str().is_some(),
        "no upstreams.app.url in:\n{body}"
    );
}

#[tokio::test]
async fn unknown_admin_path_answers_404() {
    let app = common::echo_upstream().await;
    let proxy = Proxy::start(&config(app, dead_addr().await)).await;
    let (status, _, _) = get_within(&proxy.admin_url("/no-such-endpoint")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
