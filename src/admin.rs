//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`.
//! Plain HTTP/1.1 on a separate (by default loopback) address.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::proxy::error::full;
use crate::proxy::server::Shared;
use crate::Response;

/// What the admin endpoints read.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    /// False until every listener is bound, and again once draining starts.
    pub ready: AtomicBool,
}

/// Serves the admin endpoints until `stop` flips.
pub async fn serve(state: Arc<AdminState>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10));
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = tokio::select! {
            () = crate::proxy::server::until_set(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn route(state: &AdminState, req: &http::Request<Incoming>) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut res = http::Response::new(full(Bytes::from(state.metrics.render())));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/config" => {
            let yaml = state.shared.current.load().config.redacted_yaml.clone();
            let mut res = http::Response::new(full(Bytes::from(yaml)));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/yaml; charset=utf-8"),
            );
            res
        }
        "/" => text(
            StatusCode::OK,
            "breakwater admin: /metrics /healthz /readyz /config\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut res = http::Response::new(full(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}
