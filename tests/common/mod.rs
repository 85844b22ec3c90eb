//! Shared test harness: the proxy in-process on 127.0.0.1:0, real upstream
//! servers, real clients.
#![allow(dead_code)]

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use breakwater::app::App;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub mod etcd;
pub mod lease_nodes;
pub mod pki;
pub mod soak;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A proxy started from YAML. Use `{upstream}` style placeholders via
/// `format!` before calling.
pub struct Proxy {
    pub app: Arc<App>,
}

impl Proxy {
    pub async fn start(yaml: &str) -> Self {
        let cfg = breakwater::config::parse(Path::new("test.yaml"), yaml)
            .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let app = App::start(cfg, None).await.expect("proxy starts");
        Self { app }
    }

    /// The address of the listener named `main`.
    pub fn addr(&self) -> SocketAddr {
        self.app.listener_addr("main").expect("listener main")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.app.admin_addr(), path)
    }
}

/// A minimal config: listener `main` and admin on port 0, upstream `app`.
pub fn config_for(upstream: SocketAddr, extra_routes: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
upstreams:
  app: {{ url: http://{upstream} }}
access_log: {{ format: off }}
routes:
{extra_routes}
  - name: app
    match: {{ path_prefix: / }}
    upstream: app
"#
    )
}

/// Serves `handler` on 127.0.0.1:0 over HTTP/1.1 and h2c (auto). Returns the
/// address; the server lives until the test's runtime ends.
pub async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers every request with a JSON-ish echo of what it
/// saw: method, uri, version and headers, one `name: value` per line.
pub async fn echo_upstream() -> SocketAddr {
    upstream(|req: http::Request<Incoming>| async move {
        let mut out = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("<bin>")));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        out.push_str(&format!("body-bytes: {}\n", body.len()));
        http::Response::new(full(out))
    })
    .await
}

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An HTTP/1.1 client.
pub fn h1_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a GET and returns status, headers and the whole body as text.
pub async fn get(url: &str) -> (http::StatusCode, http::HeaderMap, String) {
    let res = h1_client()
        .request(
            http::Request::get(url)
                .body(full(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("response");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Writes raw bytes on a fresh connection and reads until the server closes
/// it or `limit` elapses; returns what came back.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    assert!(
        read.is_ok(),
        "server did not close the connection within 5s; got so far: {}",
        String::from_utf8_lossy(&out)
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Like `config_for`, but upstream `app` also gets `app_fields` (e.g.
/// `protocol: http2, connect_timeout: 30s`) and `routes` is the whole route
/// list: no catch-all is added.
pub fn config_with(upstream: SocketAddr, app_fields: &str, routes: &str) -> String {
    let sep = if app_fields.is_empty() { "" } else { ", " };
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
upstreams:
  app: {{ url: "http://{upstream}"{sep}{app_fields} }}
access_log: {{ format: off }}
routes:
{routes}
"#
    )
}

/// Sends `req` and reads the whole response; both must finish within 5s.
pub async fn exchange(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
    req: http::Request<TestBody>,
) -> (http::response::Parts, String) {
    let whole = async {
        let res = client.request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), whole)
        .await
        .expect("the response arrives within 5s")
}

// ---------------------------------------------------------------------------
// The `breakwater` binary as a child process, and reading `/metrics` back.

/// The bound on every wait for a child process: to start, to log a line, to
/// exit, and for a polled condition to become true.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `breakwater run -c FILE` as a child process. The config lives in a
/// tempfile that [`BinaryProxy::rewrite_config`] replaces; stderr is collected
/// line by line for [`BinaryProxy::wait_for_log`]. The child is killed (by its
/// pid, `kill_on_drop`) when this is dropped while it still runs.
pub struct BinaryProxy {
    child: tokio::process::Child,
    pid: u32,
    config: tempfile::NamedTempFile,
    logs: tokio::sync::watch::Receiver<Vec<String>>,
    /// The admin listener's bound address.
    pub admin: SocketAddr,
    /// Every listener bound at start, by name.
    pub listeners: std::collections::HashMap<String, SocketAddr>,
}

impl BinaryProxy {
    /// Writes `yaml` to a tempfile, runs the binary on it and waits (bounded)
    /// until the admin listener and every listener named in `yaml` have
    /// logged their bound address, `/readyz` answers 200 and the signal
    /// handlers are installed, so the test may send SIGHUP or SIGTERM at once.
    pub async fn start(yaml: &str) -> Self {
        let mut proxy = Self::spawn(yaml);
        proxy.admin = logged_addr(&proxy.wait_for_log(0, "admin listening addr=").await);
        for name in listener_names(yaml) {
            let addr = proxy.wait_for_listener(0, &name).await;
            proxy.listeners.insert(name, addr);
        }
        proxy.wait_until_ready().await;
        proxy
    }

    /// Writes `yaml` to a tempfile and runs the binary on it without waiting
    /// for anything; `admin` and `listeners` stay unset.
    pub fn spawn(yaml: &str) -> Self {
        use std::io::Write;
        let mut config = tempfile::Builder::new()
            .prefix("breakwater-")
            .suffix(".yaml")
            .tempfile()
            .expect("tempfile");
        config.write_all(yaml.as_bytes()).expect("write config");
        config.flush().expect("flush config");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .arg("run")
            .arg("-c")
            .arg(config.path())
            // `BREAKWATER_TEST_LOG` (a RUST_LOG filter) to see more when
            // diagnosing, e.g. `info,breakwater::lease::peers=debug`.
            .env(
                "RUST_LOG",
                std::env::var("BREAKWATER_TEST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn breakwater");
        let pid = child.id().expect("a running child has a pid");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, logs) = tokio::sync::watch::channel(Vec::new());
        // The sender is dropped at EOF, which ends every wait early.
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tx.send_modify(|all| all.push(line));
            }
        });
        Self {
            child,
            pid,
            config,
            logs,
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            listeners: std::collections::HashMap::new(),
        }
    }

    /// Waits until `/readyz` answers 200 (every listener bound) and the
    /// signal handlers are in place: until then SIGHUP or SIGTERM would kill
    /// the process outright. On Linux the caught-signal mask in /proc tells
    /// when they are; elsewhere only readiness is waited for.
    async fn wait_until_ready(&self) {
        let url = self.admin_url("/readyz");
        eventually("/readyz answers 200", || async {
            (get_within(&url).await.0 == http::StatusCode::OK).then_some(())
        })
        .await;
        // Bits of SIGHUP (1), SIGINT (2) and SIGTERM (15).
        const HUP_INT_TERM: u64 = 1 | 1 << 1 | 1 << 14;
        let status = format!("/proc/{}/status", self.pid);
        if std::fs::metadata(&status).is_err() {
            return;
        }
        eventually("breakwater installs its signal handlers", || async {
            let text = std::fs::read_to_string(&status).unwrap_or_default();
            let caught = text
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .unwrap_or(0);
            (caught & HUP_INT_TERM == HUP_INT_TERM).then_some(())
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn config_path(&self) -> &Path {
        self.config.path()
    }

    /// Replaces the config file's contents (read again on SIGHUP).
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(self.config.path(), yaml).expect("rewrite config");
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to this child by its pid.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("/bin/kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("run /bin/kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// The number of stderr lines so far: pass it to the waits below to look
    /// only at what is logged from now on.
    pub fn log_mark(&self) -> usize {
        self.logs.borrow().len()
    }

    /// Every stderr line so far, joined.
    pub fn logs(&self) -> String {
        self.logs.borrow().join("\n")
    }

    /// Waits (bounded by [`WAIT`]) for a stderr line at or after `mark` that
    /// contains `needle`, and returns it; `None` when the child closed its
    /// stderr (exited) or the bound passed first.
    pub async fn find_log(&self, mark: usize, needle: &str) -> Option<String> {
        let find = |lines: &[String]| {
            lines
                .get(mark..)
                .unwrap_or_default()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        };
        let mut logs = self.logs.clone();
        let _ = tokio::time::timeout(WAIT, logs.wait_for(|l| find(l).is_some())).await;
        let lines = self.logs.borrow();
        find(&lines)
    }

    /// [`BinaryProxy::find_log`], panicking with the whole stderr when the
    /// line does not come.
    pub async fn wait_for_log(&self, mark: usize, needle: &str) -> String {
        let found = self.find_log(mark, needle).await;
        found.unwrap_or_else(|| {
            panic!(
                "breakwater (pid {}) logged no line containing {needle:?} within {WAIT:?}; stderr:\n{}",
                self.pid,
                self.logs()
            )
        })
    }

    /// Waits for `listening listener=NAME addr=…` at or after `mark` and
    /// returns the bound address it names.
    pub async fn wait_for_listener(&self, mark: usize, name: &str) -> SocketAddr {
        let needle = format!("listening listener={name} addr=");
        logged_addr(&self.wait_for_log(mark, &needle).await)
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        let addr = self
            .listeners
            .get(listener)
            .expect("listener bound at start");
        format!("http://{addr}{path}")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The exit status, if the child has exited.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll breakwater")
    }

    /// Waits (bounded by `bound`) for the child to exit.
    pub async fn wait_exit(&mut self, bound: std::time::Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => status.expect("wait for breakwater"),
            Err(_) => panic!(
                "breakwater (pid {}) did not exit within {bound:?}; stderr:\n{}",
                self.pid,
                self.logs()
            ),
        }
    }
}

/// The `addr=` field of a log line.
fn logged_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no addr=IP:PORT in log line {line:?}"))
}

/// The `listeners[*].name` of a config.
fn listener_names(yaml: &str) -> Vec<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).expect("test config is YAML");
    doc.get("listeners")
        .and_then(|l| l.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .collect()
}

/// Runs `check` until it returns `Some`, at most [`WAIT`]; panics naming
/// `what` when it never does.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `fut`, or a panic naming `what` when it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"))
}

/// [`get`], bounded by [`WAIT`].
pub async fn get_within(url: &str) -> (http::StatusCode, http::HeaderMap, String) {
    within(&format!("GET {url}"), get(url)).await
}

/// Whether a fresh TCP connection to `addr` is refused.
pub async fn refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format back into samples: `#`
/// lines are skipped, the rest are `name{k="v",…} value [timestamp]`.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not a sample line: {l:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = std::collections::BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        };
        rest = &after[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the sample `name` with exactly `labels`, if there is one.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// GETs an admin `/metrics` URL (bounded) and parses it.
pub async fn scrape(url: &str) -> Vec<Sample> {
    let (status, _, body) = get_within(url).await;
    assert_eq!(status, http::StatusCode::OK, "GET {url}: {body}");
    parse_metrics(&body)
}

// ---------------------------------------------------------------------------
// Resilience and the admin API: refusals, breaker overrides, route status.

/// The `x-breakwater-reason` of a response; "" when the upstream answered.
pub fn reason_of(headers: &http::HeaderMap) -> &str {
    headers
        .get("x-breakwater-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// POSTs an empty body, bounded by [`WAIT`]; returns status, headers, body.
pub async fn post_within(url: &str) -> (http::StatusCode, http::HeaderMap, String) {
    let req = http::Request::post(url)
        .body(full(Bytes::new()))
        .expect("request");
    let (parts, body) = within(&format!("POST {url}"), exchange(&h1_client(), req)).await;
    (parts.status, parts.headers, body)
}

/// GETs an admin JSON endpoint (bounded) and parses it.
pub async fn admin_json(proxy: &Proxy, path: &str) -> serde_json::Value {
    let (status, _, body) = get_within(&proxy.admin_url(path)).await;
    assert_eq!(status, http::StatusCode::OK, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// The `/breakers` entry of `route`.
pub async fn breaker_of(proxy: &Proxy, route: &str) -> serde_json::Value {
    let all = admin_json(proxy, "/breakers").await;
    all["breakers"]
        .as_array()
        .and_then(|list| list.iter().find(|b| b["route"] == route))
        .cloned()
        .unwrap_or_else(|| panic!("no breaker for route {route} in /breakers: {all}"))
}

/// The `/status.json` entry of `route`.
pub async fn route_status(proxy: &Proxy, route: &str) -> serde_json::Value {
    let all = admin_json(proxy, "/status.json").await;
    all["routes"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["name"] == route))
        .cloned()
        .unwrap_or_else(|| panic!("no route {route} in /status.json: {all}"))
}

/// Lints a Prometheus exposition with `$PROMTOOL check metrics` (./test.sh
/// sets PROMTOOL) and fails on any remark. Without PROMTOOL it says loudly
/// that the lint was skipped.
pub async fn promtool_lint(what: &str, exposition: &str) {
    use tokio::io::AsyncWriteExt;
    let Some(promtool) = std::env::var_os("PROMTOOL") else {
        eprintln!(
            "SKIPPED: promtool lint of {what}: PROMTOOL is not set \
             (./test.sh sets it); the /metrics exposition was NOT linted"
        );
        return;
    };
    let mut child = tokio::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {promtool:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    within(
        "promtool reads the exposition",
        stdin.write_all(exposition.as_bytes()),
    )
    .await
    .expect("write to promtool");
    // Closing stdin tells promtool the exposition is complete.
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("promtool finishes")
        .expect("promtool output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics ({what}): {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nexposition:\n{exposition}",
        out.status
    );
}
