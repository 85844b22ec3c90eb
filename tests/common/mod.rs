//! Shared test harness: the proxy in-process on 127.0.0.1:0, real upstream
//! servers, real clients.
#![allow(dead_code)]

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
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        out.push_str(&format!("body-bytes: {}\n", body.len()));
        http::Response::new(full(out))
    })
    .await
}

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An HTTP/1.1 client.
pub fn h1_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    TestBody,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    TestBody,
> {
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
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// Writes raw bytes on a fresh connection and reads until the server closes
/// it or `limit` elapses; returns what came back.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "server did not close the connection within 5s; got so far: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}
