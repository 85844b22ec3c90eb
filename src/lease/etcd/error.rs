//! What can go wrong talking to etcd's gateway, and how each failure is
//! handled: another endpoint may answer ([`Error::try_next_endpoint`]), or a
//! fresh token may help ([`Error::is_auth`]). Every one is counted and
//! retried by the backend; none ends the lease task.

use std::time::Duration;

use super::wire;

/// gRPC status codes that etcd's gateway reports in `code`.
pub(super) mod grpc {
    pub const INVALID_ARGUMENT: i64 = 3;
    pub const NOT_FOUND: i64 = 5;
    pub const UNAVAILABLE: i64 = 14;
    pub const UNAUTHENTICATED: i64 = 16;
}

/// A failed gateway call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("etcd {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("etcd {endpoint}: no answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("etcd {endpoint} answered {status}: {message} (gRPC code {code})")]
    Etcd {
        endpoint: String,
        status: u16,
        code: i64,
        message: String,
    },
    #[error("etcd {endpoint} sent a malformed answer: {reason}")]
    Malformed { endpoint: String, reason: String },
    #[error("etcd {endpoint}: the watch start is compacted (up to revision {compact_revision})")]
    Compacted {
        endpoint: String,
        compact_revision: u64,
    },
    #[error("etcd {endpoint} canceled the watch: {reason}")]
    WatchCanceled { endpoint: String, reason: String },
    #[error("etcd {endpoint}: the stream ended")]
    StreamEnded { endpoint: String },
    #[error(
        "etcd {endpoint}: https endpoints are not supported yet (no TLS client in this build)"
    )]
    Unsupported { endpoint: String },
}

impl Error {
    /// A token would help: missing, expired or invalid.
    pub fn is_auth(&self) -> bool {
        let auth_text = |s: &str| {
            s.contains("invalid auth token")
                || s.contains("user name is empty")
                || s.contains("Unauthenticated")
        };
        match self {
            Error::Etcd { code, message, .. } => {
                *code == grpc::UNAUTHENTICATED
                    || (*code == grpc::INVALID_ARGUMENT && auth_text(message))
            }
            Error::WatchCanceled { reason, .. } => auth_text(reason),
            _ => false,
        }
    }

    /// Another endpoint may answer where this one did not.
    pub(super) fn try_next_endpoint(&self) -> bool {
        match self {
            Error::Transport { .. }
            | Error::Timeout { .. }
            | Error::StreamEnded { .. }
            | Error::Unsupported { .. } => true,
            Error::Etcd { status, code, .. } => {
                *code == grpc::UNAVAILABLE || matches!(status, 502..=504)
            }
            _ => false,
        }
    }
}

/// A non-2xx answer as an [`Error::Etcd`], from its JSON error body if any.
pub(super) fn check_status(
    endpoint: &str,
    status: http::StatusCode,
    bytes: &[u8],
) -> Result<(), Error> {
    if status.is_success() {
        return Ok(());
    }
    Err(status_error(endpoint, status, bytes))
}

pub(super) fn status_error(endpoint: &str, status: http::StatusCode, bytes: &[u8]) -> Error {
    match wire::parse::<wire::ErrorBody>("error", bytes) {
        Ok(e) if !e.error.is_null() || e.message.is_some() => {
            etcd_error(endpoint, status.as_u16(), &e)
        }
        _ => Error::Etcd {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            code: -1,
            message: wire::excerpt(bytes),
        },
    }
}

pub(super) fn etcd_error(endpoint: &str, status: u16, e: &wire::ErrorBody) -> Error {
    Error::Etcd {
        endpoint: endpoint.to_owned(),
        status,
        code: e.grpc_code().unwrap_or(-1),
        message: e.text(),
    }
}

pub(super) fn malformed(endpoint: &str, reason: String) -> Error {
    Error::Malformed {
        endpoint: endpoint.to_owned(),
        reason,
    }
}

/// An error and its sources on one line ("connection refused" is a source).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
