//! Lease-gated routes on the `local` backend, end to end: the proxy in
//! process, a real upstream that echoes what it received, the admin API.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use common::*;
use http::StatusCode;

/// A proxy with lease `orders` (local, state in `state_dir`), route
/// `orders` gated by it and route `open` not gated.
fn config(upstream: SocketAddr, state_dir: &Path, lease_fields: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
upstreams:
  app: {{ url: "http://{upstream}" }}
access_log: {{ format: off }}
cluster: {{ node_id: node-a, state_dir: "{dir}" }}
leases:
  orders: {{ {lease_fields} }}
routes:
  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: app, lease: orders }}
  - {{ name: open, match: {{ path_prefix: / }}, upstream: app }}
"#,
        dir = state_dir.display()
    )
}

/// GETs `url` with `headers` set; returns status, headers and body.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(full(Bytes::new())).expect("request");
    let (parts, body) = within(&format!("GET {url}"), exchange(&h1_client(), req)).await;
    (parts.status, parts.headers, body)
}

/// The value of header `name` in an echo body, if the upstream saw it.
fn seen(echo: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}: ");
    echo.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

async fn token_of(proxy: &Proxy) -> u64 {
    let v = admin_json(proxy, "/leases/orders").await;
    v["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token in {v}"))
}

/// Waits until the lease view says this node holds it.
async fn until_holder(proxy: &Proxy) -> serde_json::Value {
    let url = proxy.admin_url("/leases/orders");
    eventually("this node holds lease orders", || async {
        let (_, _, body) = get_within(&url).await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["am_holder"] == true).then_some(v)
    })
    .await
}

#[tokio::test]
async fn the_holder_stamps_token_and_name_and_client_lease_headers_never_reach_the_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(&config(echo_upstream().await, dir.path(), "")).await;
    let lease = until_holder(&proxy).await;
    let token = lease["token"].as_u64().expect("token");
    assert!(token >= 1, "{lease}");
    assert_eq!(lease["backend"], "local");
    assert_eq!(lease["holder"]["id"], "node-a");

    let forged = [
        ("x-lease-token", "999999"),
        ("x-lease-name", "evil"),
        ("x-lease-other", "1"),
        ("x-breakwater-forwarded", "someone"),
    ];
    let (status, _, echo) = get_with(&proxy.url("/orders/1"), &forged).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(
        seen(&echo, "x-lease-token"),
        Some(token.to_string()),
        "{echo}"
    );
    assert_eq!(seen(&echo, "x-lease-name").as_deref(), Some("orders"));
    assert_eq!(seen(&echo, "x-lease-other"), None, "{echo}");
    assert_eq!(seen(&echo, "x-breakwater-forwarded"), None, "{echo}");

    // A route without a lease passes no x-lease-* header at all.
    let (status, _, echo) = get_with(&proxy.url("/other"), &forged).await;
    assert_eq!(status, StatusCode::OK);
    for name in ["x-lease-token", "x-lease-name", "x-lease-other"] {
        assert_eq!(seen(&echo, name), None, "{name} reached the app: {echo}");
    }
}

#[tokio::test]
async fn the_token_grows_across_restarts_with_a_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = echo_upstream().await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let proxy = Proxy::start(&config(upstream, dir.path(), "")).await;
        until_holder(&proxy).await;
        let (_, _, echo) = get_with(&proxy.url("/orders"), &[]).await;
        let stamped: u64 = seen(&echo, "x-lease-token")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not stamped: {echo}"));
        assert_eq!(stamped, token_of(&proxy).await);
        tokens.push(stamped);
        proxy.app.shutdown().await;
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly grow across restarts: {tokens:?}"
    );
}

#[tokio::test]
async fn release_steps_down_at_once_then_holds_again_after_one_ttl_with_a_greater_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(&config(echo_upstream().await, dir.path(), "ttl: 300ms")).await;
    let before = until_holder(&proxy).await["token"].as_u64().expect("token");

    let (status, _, body) = post_within(&proxy.admin_url("/leases/orders/release")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(after["am_holder"], false, "{after}");
    assert_eq!(after["valid_for_ms"], 0, "{after}");

    // Not the holder, and no one else is: 503 lease-unavailable at once
    // (wait: 0s), for plain and gRPC callers alike.
    let (status, headers, body) = get_with(&proxy.url("/orders"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(reason_of(&headers), "lease-unavailable");
    let (status, headers, _) = get_with(
        &proxy.url("/orders"),
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("grpc-status").and_then(|v| v.to_str().ok()),
        Some("14")
    );

    let again = until_holder(&proxy).await;
    let token = again["token"].as_u64().expect("token");
    assert!(token > before, "new tenure {token} must exceed {before}");
    let (status, _, echo) = get_with(&proxy.url("/orders"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen(&echo, "x-lease-token"), Some(token.to_string()));
    assert_eq!(again["last_transition"]["to"], "holder");
}

#[tokio::test]
async fn a_request_waits_up_to_wait_for_a_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(&config(
        echo_upstream().await,
        dir.path(),
        "ttl: 300ms, wait: 5s",
    ))
    .await;
    let before = until_holder(&proxy).await["token"].as_u64().expect("token");
    let (status, _, _) = post_within(&proxy.admin_url("/leases/orders/release")).await;
    assert_eq!(status, StatusCode::OK);
    // Sent while no one holds: it waits for the new tenure instead of 503.
    let (status, headers, echo) = get_with(&proxy.url("/orders"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{}: {echo}", reason_of(&headers));
    let stamped: u64 = seen(&echo, "x-lease-token")
        .and_then(|t| t.parse().ok())
        .expect("stamped");
    assert!(stamped > before, "{stamped} > {before}");
}

#[tokio::test]
async fn lease_api_metrics_and_status_page_show_the_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(&config(echo_upstream().await, dir.path(), "")).await;
    let lease = until_holder(&proxy).await;
    let token = lease["token"].as_u64().expect("token");

    let all = admin_json(&proxy, "/leases").await;
    assert_eq!(all["leases"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(all["leases"][0]["name"], "orders");
    assert!(lease["valid_for_ms"].as_u64().unwrap_or(0) > 0, "{lease}");

    let (status, _, _) = get_within(&proxy.admin_url("/leases/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = post_within(&proxy.admin_url("/leases/nope/release")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let status = admin_json(&proxy, "/status.json").await;
    assert_eq!(status["leases"][0]["name"], "orders", "{status}");
    let orders = route_status(&proxy, "orders").await;
    assert_eq!(orders["lease"], "orders");
    let (_, _, html) = get_within(&proxy.admin_url("/status")).await;
    assert!(
        html.contains("<h2>leases</h2>") && html.contains("node-a"),
        "{html}"
    );

    let (_, _, exposition) = get_within(&proxy.admin_url("/metrics")).await;
    let samples = parse_metrics(&exposition);
    let lease = [("lease", "orders")];
    assert_eq!(
        metric(&samples, "breakwater_lease_is_holder", &lease),
        Some(1.0)
    );
    assert_eq!(
        metric(&samples, "breakwater_lease_token", &lease),
        Some(token as f64)
    );
    assert_eq!(
        metric(
            &samples,
            "breakwater_lease_transitions_total",
            &[("lease", "orders"), ("to", "holder")]
        ),
        Some(1.0)
    );
    promtool_lint("/metrics with a lease", &exposition).await;
}

#[tokio::test]
async fn a_corrupt_token_file_refuses_to_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local-orders"), "not a number\n").expect("write");
    let cfg = breakwater::config::parse(
        Path::new("test.yaml"),
        &config(echo_upstream().await, dir.path(), ""),
    )
    .expect("valid config");
    let err = match breakwater::app::App::start(cfg, None).await {
        Ok(_) => panic!("started with a corrupt token file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("local-orders"), "{err}");
}
