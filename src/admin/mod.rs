//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/config`,
//! `/status`, `/status.json`, `/breakers`, `/leases`. Plain HTTP on a separate (by
//! default loopback) address.

pub mod status;

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
use tokio::time::Instant;

use crate::lease::Leases;
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
                async move { Ok::<_, Infallible>(route(&state, &req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn route(state: &AdminState, req: &http::Request<Incoming>) -> Response {
    let path = req.uri().path();
    if req.method() == Method::POST {
        if let Some(name) = path
            .strip_prefix("/leases/")
            .and_then(|p| p.strip_suffix("/release"))
        {
            return release_lease(state, name).await;
        }
        return match path
            .strip_prefix("/breakers/")
            .and_then(|p| p.split_once('/'))
        {
            Some((route, action)) => override_breaker(state, route, action),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, or POST for /breakers/ROUTE/ACTION and /leases/NAME/release\n",
        );
    }
    if let Some(name) = path.strip_prefix("/leases/") {
        let gen = state.shared.current.load();
        return match gen.leases.get(name) {
            Some(lease) => json(
                StatusCode::OK,
                &Leases::to_json(&lease.view(), lease, Instant::now()),
            ),
            None => text(StatusCode::NOT_FOUND, "no such lease\n"),
        };
    }
    match path {
        "/metrics" => with_type(
            StatusCode::OK,
            state.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
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
            with_type(StatusCode::OK, yaml, "application/yaml; charset=utf-8")
        }
        "/status" => {
            let html = status::status_html(&state.shared.current.load());
            with_type(StatusCode::OK, html, "text/html; charset=utf-8")
        }
        "/status.json" => json(
            StatusCode::OK,
            &status::status_json(&state.shared.current.load()),
        ),
        "/breakers" => json(
            StatusCode::OK,
            &status::breakers_json(&state.shared.current.load()),
        ),
        "/leases" => json(
            StatusCode::OK,
            &serde_json::json!({
                "leases": state.shared.current.load().leases.list_json(Instant::now())
            }),
        ),
        "/" => text(
            StatusCode::OK,
            "breakwater admin: /metrics /healthz /readyz /config /status /status.json /breakers /leases\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `POST /leases/NAME/release`: this node steps down now and releases the
/// lease; it may take it again after one ttl. Answers the view afterwards.
async fn release_lease(state: &AdminState, name: &str) -> Response {
    let gen = state.shared.current.load_full();
    let Some(lease) = gen.leases.get(name) else {
        return text(StatusCode::NOT_FOUND, "no such lease\n");
    };
    lease.release().await;
    tracing::info!(lease = %name, "lease released by the admin API");
    json(
        StatusCode::OK,
        &Leases::to_json(&lease.view(), lease, Instant::now()),
    )
}

fn override_breaker(state: &AdminState, route: &str, action: &str) -> Response {
    use status::Override;
    match status::override_breaker(&state.shared.current.load(), route, action) {
        Override::Done(v) => json(StatusCode::OK, &v),
        Override::NoSuchRoute => text(StatusCode::NOT_FOUND, "no such route\n"),
        Override::NoBreaker => text(StatusCode::CONFLICT, "this route has no breaker\n"),
        Override::UnknownAction => text(
            StatusCode::NOT_FOUND,
            "unknown action; use open, close or reset\n",
        ),
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    let mut body = v.to_string();
    body.push('\n');
    with_type(status, body, "application/json")
}

fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response {
    let mut res = http::Response::new(full(body.into()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn text(status: StatusCode, body: &'static str) -> Response {
    with_type(status, body, "text/plain; charset=utf-8")
}
