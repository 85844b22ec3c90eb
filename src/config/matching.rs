//! Validation of what a route matches (host, path, methods, headers) and of
//! the responses the proxy sends itself.

use std::net::Ipv6Addr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::model::*;
use super::raw::*;
use super::validate::Diags;

pub(super) fn matcher(d: &mut Diags, key: &str, raw: Option<&RawMatch>) -> Option<Match> {
    let Some(raw) = raw else {
        return Some(Match::default());
    };
    let problems_before = d.list.len();
    let host = raw
        .host
        .as_deref()
        .and_then(|h| host(d, &format!("{key}.host"), h));
    let path = match (&raw.path_prefix, &raw.path_exact) {
        (Some(_), Some(_)) => {
            d.error(key, "set either `path_prefix` or `path_exact`, not both");
            None
        }
        (Some(p), None) => path(d, &format!("{key}.path_prefix"), p).map(|p| {
            let trimmed = p.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() {
                "/".to_owned()
            } else {
                trimmed.to_owned()
            })
        }),
        (None, Some(p)) => path(d, &format!("{key}.path_exact"), p).map(PathMatch::Exact),
        (None, None) => None,
    };
    let mut methods: Vec<Method> = Vec::new();
    for (i, m) in raw.methods.iter().flatten().enumerate() {
        match Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()) {
            Ok(m) if !methods.contains(&m) => methods.push(m),
            Ok(_) => {}
            Err(_) => d.error(
                format_args!("{key}.methods[{i}]"),
                format_args!("{m:?} is not an HTTP method"),
            ),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in raw.headers.iter().flat_map(|h| &h.0) {
        let hkey = format!("{key}.headers.{name}");
        let value = if value == "*" {
            Some(HeaderMatch::Present)
        } else {
            header_value(d, &hkey, value).map(HeaderMatch::Exact)
        };
        if let (Some(name), Some(value)) = (header_name(d, &hkey, name), value) {
            headers.push((name, value));
        }
    }
    let valid = d.list.len() == problems_before;
    valid.then_some(Match {
        host,
        path,
        methods,
        headers,
    })
}

/// `api.example.com` or `*.example.com`, stored lower-case.
fn host(d: &mut Diags, key: &str, raw: &str) -> Option<HostMatch> {
    let lower = raw.trim().to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let bracketed_ip = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok());
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !(plain || (bracketed_ip && !suffix)) {
        d.error(
            key,
            format_args!(
                "expected a host name like api.example.com or *.example.com (no port), got {raw:?}"
            ),
        );
        return None;
    }
    Some(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_owned())
    })
}

fn path(d: &mut Diags, key: &str, raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        d.error(key, format_args!("must start with /, got {raw:?}"));
        None
    } else if raw.contains(['?', '#'])
        || raw
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        d.error(
            key,
            format_args!("must be a plain path without query, fragment or spaces, got {raw:?}"),
        );
        None
    } else {
        Some(raw.to_owned())
    }
}

fn header_name(d: &mut Diags, key: &str, raw: &str) -> Option<HeaderName> {
    let parsed = HeaderName::from_bytes(raw.as_bytes()).ok();
    if parsed.is_none() {
        d.error(key, format_args!("{raw:?} is not a valid header name"));
    }
    parsed
}

fn header_value(d: &mut Diags, key: &str, raw: &str) -> Option<HeaderValue> {
    let parsed = HeaderValue::from_str(raw).ok();
    if parsed.is_none() {
        d.error(key, format_args!("{raw:?} is not a valid header value"));
    }
    parsed
}

/// A response the proxy sends itself (`respond`, or a breaker's `fallback`).
pub(super) fn respond(
    d: &mut Diags,
    key: &str,
    raw: &RawRespond,
    default_status: u16,
) -> Option<Respond> {
    let problems_before = d.list.len();
    let code = raw.status.unwrap_or(default_status);
    // 1xx are interim responses: one can never end an exchange.
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|_| (200..=599).contains(&code));
    if status.is_none() {
        d.error(
            format_args!("{key}.status"),
            format_args!("must be between 200 and 599, got {code}"),
        );
    }
    let mut headers = HeaderMap::new();
    for (name, value) in raw.headers.iter().flat_map(|h| &h.0) {
        let hkey = format!("{key}.headers.{name}");
        match (header_name(d, &hkey, name), header_value(d, &hkey, value)) {
            (Some(n), _) if is_framing(&n) => {
                d.error(&hkey, "is set by the proxy from the body; leave it out")
            }
            (Some(n), Some(v)) => {
                headers.append(n, v);
            }
            _ => {}
        }
    }
    let body = Bytes::from(raw.body.clone().unwrap_or_default());
    let status = status.filter(|_| d.list.len() == problems_before)?;
    Some(Respond {
        status,
        body,
        headers,
    })
}

/// Headers that frame the message; a configured value could contradict the body.
fn is_framing(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length" | "transfer-encoding" | "connection"
    )
}
