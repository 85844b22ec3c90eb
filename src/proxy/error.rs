//! The one place where a refusal or failure of the proxy becomes a response:
//! status, `x-breakwater-reason`, and a short text or JSON body — or, for gRPC
//! callers, a trailers-only response with the matching `grpc-status`.

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

use crate::Response;

/// Header naming why the proxy answered instead of the upstream.
pub const REASON_HEADER: &str = "x-breakwater-reason";

/// Every response the proxy makes itself, named for its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matched.
    NoRoute,
    /// The upstream could not be connected to.
    UpstreamUnreachable,
    /// The upstream answered with something that is not valid HTTP.
    UpstreamProtocol,
    /// The upstream closed or reset the exchange before a response head.
    UpstreamReset,
    /// The route's timeout elapsed before the response head.
    Timeout,
    /// The request body did not arrive within the listener's `body_timeout`.
    BodyTimeout,
    /// The request head is larger than the limits allow.
    HeadersTooLarge,
    /// The request is malformed or ambiguous.
    BadRequest,
    /// `CONNECT`: the proxy is never a forward proxy.
    MethodNotAllowed,
    /// The route's concurrency limit is full (and its queue, if any).
    Overloaded,
    /// The route's circuit breaker is open: failing fast.
    BreakerOpen,
    /// A lease-gated route with no holder to send to (none known within
    /// `wait`, a follower set to `reject`, or a forwarded request that
    /// reached a node that does not hold the lease).
    LeaseUnavailable,
}

impl ProxyError {
    /// The `x-breakwater-reason` value, also the metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::UpstreamUnreachable => "upstream-unreachable",
            Self::UpstreamProtocol => "upstream-protocol-error",
            Self::UpstreamReset => "upstream-reset",
            Self::Timeout => "timeout",
            Self::BodyTimeout => "body-timeout",
            Self::HeadersTooLarge => "request-too-large",
            Self::BadRequest => "bad-request",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Overloaded => "overloaded",
            Self::BreakerOpen => "breaker-open",
            Self::LeaseUnavailable => "lease-unavailable",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::UpstreamUnreachable | Self::UpstreamProtocol | Self::UpstreamReset => {
                StatusCode::BAD_GATEWAY
            }
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Overloaded | Self::BreakerOpen | Self::LeaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The gRPC status code a gRPC caller sees instead of the HTTP status.
    pub fn grpc_status(self) -> u8 {
        match self {
            Self::NoRoute => 12,                                   // UNIMPLEMENTED
            Self::Timeout => 4,                                    // DEADLINE_EXCEEDED
            Self::BodyTimeout => 4,                                // DEADLINE_EXCEEDED
            Self::HeadersTooLarge => 8,                            // RESOURCE_EXHAUSTED
            Self::BadRequest => 3,                                 // INVALID_ARGUMENT
            Self::MethodNotAllowed => 12,                          // UNIMPLEMENTED
            Self::UpstreamUnreachable | Self::UpstreamReset => 14, // UNAVAILABLE
            Self::UpstreamProtocol => 13,                          // INTERNAL
            Self::Overloaded => 8,                                 // RESOURCE_EXHAUSTED
            Self::BreakerOpen => 14,                               // UNAVAILABLE
            Self::LeaseUnavailable => 14,                          // UNAVAILABLE
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::NoRoute => "no route matches this request",
            Self::UpstreamUnreachable => "the upstream could not be reached",
            Self::UpstreamProtocol => "the upstream sent a malformed response",
            Self::UpstreamReset => "the upstream closed the connection before responding",
            Self::Timeout => "the upstream did not respond in time",
            Self::BodyTimeout => "the request body did not arrive in time",
            Self::HeadersTooLarge => "the request headers are too large",
            Self::BadRequest => "the request is malformed or ambiguous",
            Self::MethodNotAllowed => "this proxy does not tunnel CONNECT requests",
            Self::Overloaded => "too many requests in flight; retry later",
            Self::BreakerOpen => "the upstream is failing; failing fast",
            Self::LeaseUnavailable => "no holder of this route's lease is available",
        }
    }

    /// Whether the client connection must be closed after this response
    /// (its framing can no longer be trusted).
    fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::BadRequest | Self::BodyTimeout | Self::HeadersTooLarge
        )
    }

    /// Builds the response in the style the caller understands.
    pub fn to_response(self, style: Style) -> Response {
        let mut res = if style == Style::Grpc {
            grpc_response(self.grpc_status(), self.message())
        } else if style == Style::Json {
            let body = format!(
                "{{\"error\":\"{}\",\"message\":\"{}\"}}\n",
                self.reason(),
                self.message()
            );
            body_response(self.status(), "application/json", Bytes::from(body))
        } else {
            let body = format!("{}: {}\n", self.reason(), self.message());
            body_response(
                self.status(),
                "text/plain; charset=utf-8",
                Bytes::from(body),
            )
        };
        res.headers_mut()
            .insert(REASON_HEADER, HeaderValue::from_static(self.reason()));
        if self.closes_connection() {
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ProxyError {}

/// How a caller wants the proxy's own answers: gRPC status, JSON or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Text,
    Json,
    Grpc,
}

impl Style {
    /// Reads the style off a request's headers.
    pub fn of(headers: &HeaderMap) -> Self {
        if is_grpc(headers) {
            Self::Grpc
        } else if accepts_json(headers) {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// A gRPC request is one whose content type is `application/grpc[+proto…]`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().any(|v| {
        let v = v.as_bytes();
        v.windows(16)
            .any(|w| w.eq_ignore_ascii_case(b"application/json"))
    })
}

fn body_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut res = http::Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A trailers-only gRPC response: HTTP 200, status and message in the head.
/// `message` must be printable ASCII without `%` (gRPC percent-encodes others).
pub fn grpc_response(code: u8, message: &'static str) -> Response {
    let mut res = http::Response::new(empty());
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert("grpc-message", HeaderValue::from_static(message));
    res
}

/// A body with all its bytes known.
pub fn full(bytes: Bytes) -> crate::Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> crate::Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
