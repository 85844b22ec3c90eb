//! The operator's side of the resilience layers: breaker overrides through
//! `POST /breakers/ROUTE/{open,close,reset}`, `/breakers`, `/status.json`,
//! the `/status` page, the resilience metric families (linted by promtool
//! when it is available) and the log line of a breaker transition.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{
    breaker_of, config_with, full, get, get_within, metric, post_within, reason_of, route_status,
    scrape, upstream, within, BinaryProxy, Proxy, Sample,
};
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

/// The states the breaker state gauge reports, one of them 1.
const STATES: [&str; 5] = [
    "closed",
    "open",
    "half_open",
    "forced_open",
    "forced_closed",
];

/// Routes: `guarded` (/guarded: breaker, limit of 2, 300ms timeout),
/// `plain` (/plain: neither) and `hello` (answered by the proxy).
fn routes() -> &'static str {
    r#"  - name: guarded
    match: { path_prefix: /guarded }
    upstream: app
    timeout: 300ms
    concurrency: { max: 2, queue: 1, queue_timeout: 100ms }
    breaker: { window: 10s, buckets: 10, min_requests: 5, error_percent: 50, open_for: 30s }
  - name: plain
    match: { path_prefix: /plain }
    upstream: app
  - name: hello
    match: { path_exact: /hello }
    respond: { status: 200, body: "hello\n" }"#
}

/// Counts requests; fails them all with 500 while `failing` is set, and
/// hangs `/guarded/hang` forever.
struct Switchable {
    seen: AtomicUsize,
    failing: AtomicBool,
}

async fn switchable_upstream() -> (SocketAddr, Arc<Switchable>) {
    let state = Arc::new(Switchable {
        seen: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
    });
    let shared = state.clone();
    let addr = upstream(move |req: http::Request<Incoming>| {
        let state = shared.clone();
        async move {
            state.seen.fetch_add(1, Ordering::SeqCst);
            if req.uri().path() == "/guarded/hang" {
                std::future::pending::<()>().await;
            }
            let mut res = Response::new(full("upstream"));
            if state.failing.load(Ordering::SeqCst) {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            res
        }
    })
    .await;
    (addr, state)
}

#[tokio::test]
async fn operators_force_a_breaker_open_and_closed_and_reset_it() {
    let (up, app) = switchable_upstream().await;
    let proxy = Proxy::start(&config_with(up, "", routes())).await;
    let metrics = proxy.admin_url("/metrics");

    // Forced open: every request fails fast; nothing reaches the upstream.
    let (status, _, body) = post_within(&proxy.admin_url("/breakers/guarded/open")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("the override answers JSON");
    assert_eq!(answer["state"], "forced_open", "{answer}");
    for i in 0..5 {
        let (status, headers, _) = get_within(&proxy.url("/guarded/x")).await;
        assert_eq!(
            (status, reason_of(&headers)),
            (StatusCode::SERVICE_UNAVAILABLE, "breaker-open"),
            "request {i} while forced open"
        );
    }
    assert_eq!(app.seen.load(Ordering::SeqCst), 0);
    let b = breaker_of(&proxy, "guarded").await;
    assert_eq!(
        (&b["state"], &b["forced"]),
        (&"forced_open".into(), &true.into()),
        "{b}"
    );
    let s = route_status(&proxy, "guarded").await;
    assert_eq!(s["breaker"]["state"], "forced_open", "{s}");
    assert_eq!(s["breaker"]["forced"], true, "{s}");
    let samples = scrape(&metrics).await;
    assert_state_gauge(&samples, "guarded", "forced_open");
    assert_eq!(
        transitions(&samples, "guarded", "closed", "forced_open"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &samples,
            "breakwater_breaker_rejected_total",
            &[("route", "guarded")]
        ),
        Some(5.0)
    );

    // Forced closed: everything passes, even a failing upstream's 500s well
    // past min_requests; they are still counted.
    let (status, _, body) = post_within(&proxy.admin_url("/breakers/guarded/close")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.failing.store(true, Ordering::SeqCst);
    for i in 0..20 {
        let (status, headers, _) = get_within(&proxy.url("/guarded/x")).await;
        assert_eq!(
            (status, reason_of(&headers)),
            (StatusCode::INTERNAL_SERVER_ERROR, ""),
            "request {i} while forced closed reaches the upstream"
        );
    }
    assert_eq!(app.seen.load(Ordering::SeqCst), 20);
    let b = common::eventually("the forced-closed window counts the failures", || async {
        let b = breaker_of(&proxy, "guarded").await;
        (b["window"]["failures"] == 20).then_some(b)
    })
    .await;
    assert_eq!(
        (&b["state"], &b["forced"]),
        (&"forced_closed".into(), &true.into()),
        "{b}"
    );
    let samples = scrape(&metrics).await;
    assert_state_gauge(&samples, "guarded", "forced_closed");
    assert_eq!(
        transitions(&samples, "guarded", "forced_open", "forced_closed"),
        Some(1.0)
    );

    // Reset: closed, not forced, a fresh window.
    let (status, _, body) = post_within(&proxy.admin_url("/breakers/guarded/reset")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b = breaker_of(&proxy, "guarded").await;
    assert_eq!(
        (&b["state"], &b["forced"]),
        (&"closed".into(), &false.into()),
        "{b}"
    );
    assert_eq!(b["window"]["requests"], 0, "{b}");
    assert_state_gauge(&scrape(&metrics).await, "guarded", "closed");

    // What the override endpoint refuses.
    let (status, _, _) = post_within(&proxy.admin_url("/breakers/nope/open")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown route");
    let (status, _, _) = post_within(&proxy.admin_url("/breakers/plain/open")).await;
    assert_eq!(status, StatusCode::CONFLICT, "a route without a breaker");
    let (status, _, _) = post_within(&proxy.admin_url("/breakers/guarded/bogus")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an unknown action");
    let (status, _, _) = get_within(&proxy.admin_url("/breakers/guarded/open")).await;
    assert_ne!(status, StatusCode::OK, "GET on an override path");
    assert!(
        status.is_client_error(),
        "GET on an override path: {status}"
    );
    assert_eq!(
        breaker_of(&proxy, "guarded").await["state"],
        "closed",
        "GET changed nothing"
    );
}

#[tokio::test]
async fn status_json_and_the_status_page_show_every_route_with_its_limit_and_breaker() {
    let (up, _app) = switchable_upstream().await;
    let proxy = Proxy::start(&config_with(up, "", routes())).await;
    let (status, _, _) = get_within(&proxy.url("/guarded/x")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = post_within(&proxy.admin_url("/breakers/guarded/open")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, headers, body) = get_within(&proxy.admin_url("/status.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("application/json"),
        "{headers:?}"
    );
    let json: Value = serde_json::from_str(&body).expect("JSON");
    let names: Vec<&str> = json["routes"]
        .as_array()
        .expect("routes is a list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["guarded", "plain", "hello"], "{json}");

    let guarded = common::eventually("the first request is in the window", || async {
        let r = route_status(&proxy, "guarded").await;
        (r["breaker"]["window"]["requests"] == 1).then_some(r)
    })
    .await;
    let limit = &guarded["concurrency"];
    assert_eq!(limit["max"], 2, "{guarded}");
    assert_eq!(limit["in_use"], 0, "{guarded}");
    assert_eq!(limit["queue"], 1, "{guarded}");
    assert_eq!(limit["queued"], 0, "{guarded}");
    let breaker = &guarded["breaker"];
    assert_eq!(breaker["state"], "forced_open", "{guarded}");
    let window = &breaker["window"];
    for field in [
        "requests",
        "successes",
        "failures",
        "timeouts",
        "error_percent",
    ] {
        assert!(window[field].is_u64(), "window.{field} in {guarded}");
    }
    assert_eq!(window["requests"], 1, "{guarded}");
    assert_eq!(window["successes"], 1, "{guarded}");
    assert_eq!(breaker["last_transition"]["from"], "closed", "{guarded}");
    assert_eq!(breaker["last_transition"]["to"], "forced_open", "{guarded}");
    assert!(breaker["last_transition"]["ago_ms"].is_u64(), "{guarded}");
    for name in ["plain", "hello"] {
        let r = route_status(&proxy, name).await;
        assert!(r["concurrency"].is_null(), "{name} has no limit: {r}");
        assert!(r["breaker"].is_null(), "{name} has no breaker: {r}");
    }

    let (status, headers, html) = get_within(&proxy.admin_url("/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html"),
        "{headers:?}"
    );
    assert!(html.contains("<meta http-equiv=\"refresh\""), "{html}");
    for name in ["guarded", "plain", "hello", "forced_open"] {
        assert!(html.contains(name), "the page names {name}: {html}");
    }
    let external = external_assets(&html);
    assert!(
        external.is_empty(),
        "the page loads nothing from elsewhere: {external:?}"
    );
}

#[tokio::test]
async fn every_resilience_metric_family_is_exposed_and_promtool_finds_nothing_to_lint() {
    let (up, _app) = switchable_upstream().await;
    let proxy = Proxy::start(&config_with(up, "", routes())).await;
    // A timeout, a shed request (two hanging, one queued past its timeout, one
    // more over the queue) and a breaker refusal.
    let hang = proxy.url("/guarded/hang");
    let (status, headers, _) = get_within(&hang).await;
    assert_eq!(
        (status, reason_of(&headers)),
        (StatusCode::GATEWAY_TIMEOUT, "timeout")
    );
    let hung: Vec<_> = (0..4)
        .map(|_| {
            let url = hang.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut reasons = Vec::new();
    for h in hung {
        let (_, headers, _) = within("a request to the hanging route", h)
            .await
            .expect("task");
        reasons.push(reason_of(&headers).to_owned());
    }
    assert!(reasons.iter().any(|r| r == "overloaded"), "{reasons:?}");
    let (status, _, _) = post_within(&proxy.admin_url("/breakers/guarded/open")).await;
    assert_eq!(status, StatusCode::OK);
    let (_, headers, _) = get_within(&proxy.url("/guarded/x")).await;
    assert_eq!(reason_of(&headers), "breaker-open");

    let (status, _, body) = get_within(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let samples = common::parse_metrics(&body);
    let route = [("route", "guarded")];
    for family in [
        "breakwater_timeouts_total",
        "breakwater_shed_total",
        "breakwater_breaker_rejected_total",
    ] {
        let v = metric(&samples, family, &route);
        assert!(
            v.is_some_and(|v| v >= 1.0),
            "{family}{{route=\"guarded\"}} = {v:?}"
        );
    }
    for family in [
        "breakwater_concurrency_in_use",
        "breakwater_concurrency_queued",
    ] {
        assert_eq!(metric(&samples, family, &route), Some(0.0), "{family}");
    }
    assert_state_gauge(&samples, "guarded", "forced_open");
    assert_eq!(
        transitions(&samples, "guarded", "closed", "forced_open"),
        Some(1.0)
    );
    for family in [
        "breakwater_breaker_state",
        "breakwater_breaker_transitions_total",
        "breakwater_breaker_rejected_total",
        "breakwater_timeouts_total",
        "breakwater_concurrency_in_use",
        "breakwater_concurrency_queued",
        "breakwater_shed_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} has a TYPE line"
        );
    }

    common::promtool_lint("the resilience metrics", &body).await;
}

#[tokio::test]
async fn a_breaker_transition_is_logged_with_the_window_counts() {
    let line = logged_trip().await;
    assert!(
        line.contains("from=closed to=open"),
        "the line names the transition: {line}"
    );
    assert!(
        line.contains("route=app"),
        "the line names the route: {line}"
    );
    let requests = field(&line, "requests=");
    let errors = field(&line, "errors=");
    assert!(requests >= 5, "requests= is the window's count: {line}");
    assert_eq!(errors, requests, "every request failed: {line}");
    assert!(line.contains("error_percent=100"), "{line}");
}

/// Runs the binary with a route whose upstream always fails, sends requests
/// until its breaker opens and returns the transition's log line.
async fn logged_trip() -> String {
    let up = upstream(|_req: http::Request<Incoming>| async move {
        let mut res = Response::new(full("boom"));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res
    })
    .await;
    let routes = "  - { name: app, match: { path_prefix: / }, upstream: app,
      breaker: { min_requests: 5, error_percent: 50, open_for: 30s } }";
    let proxy = BinaryProxy::start(&config_with(up, "", routes)).await;
    let mark = proxy.log_mark();
    let url = proxy.url("main", "/x");
    let mut opened = false;
    for _ in 0..20 {
        let (_, headers, _) = get_within(&url).await;
        if reason_of(&headers) == "breaker-open" {
            opened = true;
            break;
        }
    }
    assert!(opened, "the breaker opened within 20 requests");
    proxy
        .wait_for_log(mark, "circuit breaker state changed")
        .await
}

// ---------------------------------------------------------------------------
// Helpers.

/// The breaker state gauge of `route` is 1 for `current` and 0 for the rest.
fn assert_state_gauge(samples: &[Sample], route: &str, current: &str) {
    for state in STATES {
        let v = metric(
            samples,
            "breakwater_breaker_state",
            &[("route", route), ("state", state)],
        );
        let want = if state == current { 1.0 } else { 0.0 };
        assert_eq!(
            v,
            Some(want),
            "breakwater_breaker_state{{route={route},state={state}}}"
        );
    }
}

fn transitions(samples: &[Sample], route: &str, from: &str, to: &str) -> Option<f64> {
    metric(
        samples,
        "breakwater_breaker_transitions_total",
        &[("route", route), ("from", from), ("to", to)],
    )
}

/// The `src`/`href`/`url(` targets of a page that point off the admin host.
fn external_assets(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for attr in ["src=", "href=", "url(", "@import"] {
        for (i, _) in lower.match_indices(attr) {
            let rest = lower[i + attr.len()..].trim_start_matches(['"', '\'', ' ']);
            if rest.starts_with("http://") || rest.starts_with("https://") || rest.starts_with("//")
            {
                found.push(html[i..(i + 60).min(html.len())].to_owned());
            }
        }
    }
    found
}

/// The number after `name` in a log line.
fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}N in {line}"))
}
