//! The binary as a child process: SIGHUP reloads (good file, bad file,
//! listeners added and removed) and SIGTERM draining (`/readyz`, in-flight
//! requests, `drain_delay`, `grace`). Upstreams run in the test process.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, get_within, metric, refused, scrape, within, BinaryProxy, WAIT};
use http::StatusCode;
use tokio::sync::watch;
use tokio::time::Instant;

/// A config whose only route answers `body` itself.
fn respond_config(body: &str, extra_listeners: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
{extra_listeners}
upstreams:
  app: {{ url: "http://127.0.0.1:9" }}
routes:
  - name: hello
    match: {{ path_prefix: / }}
    respond: {{ status: 200, body: "{body}" }}
"#
    )
}

/// A config that forwards everything to `upstream`, with `shutdown` settings.
fn forward_config(upstream: SocketAddr, drain_delay: &str, grace: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
upstreams:
  app: {{ url: "http://{upstream}" }}
defaults: {{ timeout: 60s }}
routes:
  - name: app
    match: {{ path_prefix: / }}
    upstream: app
shutdown: {{ drain_delay: {drain_delay}, grace: {grace} }}
"#
    )
}

/// An upstream that holds every request until the test releases them all.
struct Gate {
    addr: SocketAddr,
    /// How many requests have reached the upstream.
    arrived: watch::Receiver<usize>,
    release: watch::Sender<bool>,
}

impl Gate {
    async fn start() -> Self {
        let (arrived_tx, arrived) = watch::channel(0usize);
        let arrived_tx = Arc::new(arrived_tx);
        let (release, released) = watch::channel(false);
        let addr = common::upstream(move |_req| {
            let arrived = arrived_tx.clone();
            let mut released = released.clone();
            async move {
                arrived.send_modify(|n| *n += 1);
                // Held until released; never, if the gate is kept closed.
                let _ = released.wait_for(|open| *open).await;
                http::Response::new(common::full("released"))
            }
        })
        .await;
        Self {
            addr,
            arrived,
            release,
        }
    }

    async fn wait_for_arrivals(&self, n: usize) {
        let mut arrived = self.arrived.clone();
        within(
            &format!("{n} requests reach the upstream"),
            arrived.wait_for(|a| *a >= n),
        )
        .await
        .expect("the gate lives as long as the test");
    }

    fn open(&self) {
        self.release.send_replace(true);
    }
}

async fn reloads(proxy: &BinaryProxy, result: &str) -> f64 {
    let samples = scrape(&proxy.admin_url("/metrics")).await;
    metric(
        &samples,
        "breakwater_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or_else(|| panic!("no breakwater_config_reloads_total{{result={result:?}}}"))
}

async fn readyz(proxy: &BinaryProxy) -> StatusCode {
    get_within(&proxy.admin_url("/readyz")).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_with_a_good_file_swaps_the_routes() {
    let proxy = BinaryProxy::start(&respond_config("one", "")).await;
    let url = proxy.url("main", "/");
    assert_eq!(get_within(&url).await.2, "one");

    proxy.rewrite_config(&respond_config("two", ""));
    let mark = proxy.log_mark();
    proxy.signal("HUP");
    eventually("the reloaded route answers \"two\"", || async {
        (get_within(&url).await.2 == "two").then_some(())
    })
    .await;
    proxy.wait_for_log(mark, "configuration reloaded").await;
    assert_eq!(reloads(&proxy, "success").await, 1.0);
    assert_eq!(reloads(&proxy, "failure").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_with_a_syntax_error_is_refused_and_the_old_config_keeps_serving() {
    let proxy = BinaryProxy::start(&respond_config("one", "")).await;
    let url = proxy.url("main", "/");

    proxy.rewrite_config("routes: [\n");
    let mark = proxy.log_mark();
    proxy.signal("HUP");
    proxy
        .wait_for_log(mark, "configuration reload refused")
        .await;
    let error = proxy
        .wait_for_log(mark, &format!("{}:", proxy.config_path().display()))
        .await;
    assert!(
        error.contains(&format!("{}:2:", proxy.config_path().display())),
        "the error names the file and line: {error}"
    );
    let (status, _, body) = get_within(&url).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "one"));
    assert_eq!(reloads(&proxy, "failure").await, 1.0);
    assert_eq!(reloads(&proxy, "success").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_with_an_unknown_upstream_is_refused_and_logs_the_error() {
    let proxy = BinaryProxy::start(&respond_config("one", "")).await;
    let url = proxy.url("main", "/");

    let bad = respond_config("two", "")
        .replace(r#"respond: { status: 200, body: "two" }"#, "upstream: ap");
    proxy.rewrite_config(&bad);
    let mark = proxy.log_mark();
    proxy.signal("HUP");
    let file = proxy.config_path().display().to_string();
    let error = proxy.wait_for_log(mark, &format!("{file}: ")).await;
    assert_eq!(
        error,
        format!(r#"{file}: routes[0] (hello).upstream: no upstream named "ap"; known: app"#)
    );
    let (status, _, body) = get_within(&url).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "one"));
    assert_eq!(reloads(&proxy, "failure").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_opens_an_added_listener_and_closes_a_removed_one() {
    let proxy = BinaryProxy::start(&respond_config("one", "")).await;
    let second = "  - { name: second, listen: 127.0.0.1:0 }";

    proxy.rewrite_config(&respond_config("one", second));
    let mark = proxy.log_mark();
    proxy.signal("HUP");
    let addr = proxy.wait_for_listener(mark, "second").await;
    let (status, _, body) = get_within(&format!("http://{addr}/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "one"));

    proxy.rewrite_config(&respond_config("one", ""));
    let mark = proxy.log_mark();
    proxy.signal("HUP");
    proxy.wait_for_log(mark, "configuration reloaded").await;
    eventually("the removed listener refuses connections", || async {
        refused(addr).await.then_some(())
    })
    .await;
    let (status, _, body) = get_within(&proxy.url("main", "/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "one"));
    assert_eq!(reloads(&proxy, "success").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_right_after_startup_reloads_instead_of_killing_the_process() {
    // The window is short, so try a few times; each try that survives is cheap.
    for attempt in 0..20 {
        let mut proxy = BinaryProxy::spawn(&respond_config("one", ""));
        proxy.wait_for_log(0, "listening listener=main addr=").await;
        // As soon as the proxy says it is listening, an operator may reload it.
        proxy.signal("HUP");
        let reloaded = proxy.find_log(0, "configuration reloaded").await;
        assert!(
            reloaded.is_some(),
            "attempt {attempt}: SIGHUP sent after `listening` was logged ended the process \
             ({}); stderr:\n{}",
            proxy
                .try_exit_status()
                .map_or("still running".into(), |s| s.to_string()),
            proxy.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_fifty_in_flight_requests_finish_and_exits_0() {
    const IN_FLIGHT: usize = 50;
    let gate = Gate::start().await;
    let mut proxy = BinaryProxy::start(&forward_config(gate.addr, "0s", "10s")).await;
    let main = proxy.listeners["main"];
    let url = proxy.url("main", "/slow");
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let url = url.clone();
            // Each call has its own client, so its own connection.
            tokio::spawn(async move { get_within(&url).await })
        })
        .collect();
    gate.wait_for_arrivals(IN_FLIGHT).await;

    proxy.signal("TERM");
    let term = Instant::now();
    eventually("/readyz answers 503 once draining", || async {
        (readyz(&proxy).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    eventually("the listener stops accepting (drain_delay 0s)", || async {
        refused(main).await.then_some(())
    })
    .await;
    gate.open();

    for request in requests {
        let (status, _, body) = within("an in-flight request finishes", request)
            .await
            .expect("request task");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "released"));
    }
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status}");
    assert!(
        term.elapsed() < Duration::from_secs(10),
        "exited after {:?}, beyond the 10s grace",
        term.elapsed()
    );
    assert!(
        refused(main).await,
        "new connections after drain are refused"
    );
    assert!(
        proxy.logs().contains("drained; every connection finished"),
        "stderr:\n{}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_turns_503_at_once_on_sigterm_while_a_request_is_in_flight() {
    let gate = Gate::start().await;
    let mut proxy = BinaryProxy::start(&forward_config(gate.addr, "2s", "10s")).await;
    assert_eq!(readyz(&proxy).await, StatusCode::OK);
    let url = proxy.url("main", "/slow");
    let request = tokio::spawn(async move { get_within(&url).await });
    gate.wait_for_arrivals(1).await;

    proxy.signal("TERM");
    let term = Instant::now();
    eventually("/readyz answers 503 after SIGTERM", || async {
        (readyz(&proxy).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    // Well inside the 2s drain_delay: readiness does not wait for it.
    assert!(
        term.elapsed() < Duration::from_secs(2),
        "/readyz took {:?} to fail",
        term.elapsed()
    );
    gate.open();

    let (status, _, body) = within("the in-flight request finishes", request)
        .await
        .expect("request task");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "released"));
    let status = proxy.wait_exit(WAIT).await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grace_bounds_the_drain_when_an_upstream_never_answers() {
    // The gate is never opened: the request stays in flight for good.
    let gate = Gate::start().await;
    let mut proxy = BinaryProxy::start(&forward_config(gate.addr, "0s", "1s")).await;
    let request = common::h1_client().request(
        http::Request::get(proxy.url("main", "/stuck"))
            .body(common::full(""))
            .expect("request"),
    );
    // Cut when the grace period ends; only its arrival matters.
    let request = tokio::spawn(request);
    gate.wait_for_arrivals(1).await;

    proxy.signal("TERM");
    let term = Instant::now();
    let status = proxy.wait_exit(WAIT).await;
    let took = term.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the 1s grace was over"
    );
    assert!(
        proxy.logs().contains("grace period over"),
        "stderr:\n{}",
        proxy.logs()
    );
    request.abort();
}
