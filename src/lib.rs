//! Breakwater: a sidecar resilience proxy.
//!
//! Crate map:
//! - [`config`]: YAML → raw serde model → `validate()` → typed [`config::Config`].
//! - [`app`]: wires a config into listeners, routes and the admin server;
//!   reloads it on SIGHUP and drains on SIGTERM.
//! - [`proxy`]: the data path — accept loop ([`proxy::server`]), routing
//!   ([`proxy::router`]), the upstream clients and header hygiene
//!   ([`proxy::upstream`]), and the one place errors become responses
//!   ([`proxy::error`]).
//! - [`metrics`]: an owned Prometheus registry with handles resolved per route.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/config`.
//!
//! A request's path:
//! ```text
//! TCP accept → hyper-util auto (h1 | h2c) → proxy::handler
//!   → reject what is ambiguous (400) → router (first match, no allocation)
//!   → respond directly | strip hop-by-hop, add x-forwarded-*, x-request-id
//!   → pooled upstream client → response streamed back (trailers included)
//! ```

pub mod admin;
pub mod app;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod resilience;

use bytes::Bytes;

/// The error type that crosses service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy hands to hyper: streamed, boxed once.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// A request as the proxy passes it on.
pub type Request = http::Request<Body>;
/// A response as the proxy sends it.
pub type Response = http::Response<Body>;
