//! Breakwater: a sidecar resilience proxy.
//!
//! Crate map:
//! - [`config`]: YAML → raw serde model → `validate()` → typed [`config::Config`].
//! - [`app`]: wires a config into listeners, routes and the admin server;
//!   reloads it on SIGHUP and drains on SIGTERM.
//! - [`proxy`]: the data path — accept loop ([`proxy::server`]), the HTTP/1
//!   framing inspector ([`proxy::framing`]), routing ([`proxy::router`]), each
//!   route's stack ([`proxy::stack`]), the upstream clients and header
//!   hygiene ([`proxy::forward`], [`proxy::upstream`]), and the one place
//!   errors become responses ([`proxy::error`]).
//! - [`resilience`]: the per-route tower layers — concurrency limit, circuit
//!   breaker (a pure state machine and a thin layer), timeout.
//! - [`lease`]: single-writer leases — one task per lease publishes who holds
//!   it (lock-free view per request), the pure gate decision, the backends.
//! - [`metrics`]: an owned Prometheus registry with handles resolved per route.
//! - [`tls`]: TLS termination (SNI, ALPN, mTLS, certificate reload) and TLS
//!   to upstreams; the only module that touches rustls.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/config`, `/status`,
//!   `/status.json`, `/breakers`.
//!
//! A request's path:
//! ```text
//! TCP accept → framing inspector → hyper-util auto (h1 | h2c) → proxy::handler
//!   → reject what is ambiguous (400) → router (first match, no allocation)
//!   → respond directly, or the route's stack:
//!       limit → breaker → timeout → forward (hop-by-hop out, x-forwarded-*,
//!       x-request-id in; pooled upstream client)
//!   → response streamed back (trailers included); when its body ends, the
//!     layers' hooks run (permit released, breaker verdict recorded)
//! ```

pub mod admin;
pub mod app;
pub mod config;
pub mod lease;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod tls;

use bytes::Bytes;

/// The error type that crosses service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy hands to hyper: streamed, boxed once.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// A request as the proxy passes it on.
pub type Request = http::Request<Body>;
/// A response as the proxy sends it.
pub type Response = http::Response<Body>;
