//! The effective configuration rendered back as YAML for the admin `/config`
//! endpoint: every default filled in, `defaults` already merged into each
//! route, and key material paths and credentials replaced by `<redacted>`.
//!
//! It is built from the typed `Config` rather than the raw file, so what it
//! shows is exactly what the proxy runs with.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use http::HeaderValue;
use serde_yaml::{Mapping, Value};

use super::model::*;
use super::value::format_duration;

const REDACTED: &str = "<redacted>";

const HEADER: &str = "# Effective configuration: defaults applied, secrets redacted.\n";

pub(super) fn redacted_yaml(c: &Config) -> Result<String, String> {
    let upstream_names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    let root = map([
        ("admin", map([("listen", text(c.admin.listen))])),
        ("listeners", c.listeners.iter().map(listener).collect()),
        (
            "upstreams",
            named(c.upstreams.iter().map(|u| (&u.name, upstream(u)))),
        ),
        (
            "routes",
            c.routes.iter().map(|r| route(r, &upstream_names)).collect(),
        ),
        (
            "leases",
            named(c.leases.iter().map(|l| (&l.name, lease(l)))),
        ),
        ("cluster", c.cluster.as_ref().map_or(Value::Null, cluster)),
        ("etcd", c.etcd.as_ref().map_or(Value::Null, etcd)),
        (
            "access_log",
            map([("format", text(format!("{:?}", c.access_log).to_lowercase()))]),
        ),
        (
            "shutdown",
            map([
                ("drain_delay", dur(c.shutdown.drain_delay)),
                ("grace", dur(c.shutdown.grace)),
            ]),
        ),
        (
            "limits",
            map([
                ("max_header_bytes", Value::from(c.limits.max_header_bytes)),
                ("max_headers", Value::from(c.limits.max_headers)),
            ]),
        ),
    ]);
    let body = serde_yaml::to_string(&root)
        .map_err(|e| format!("cannot render the effective configuration: {e}"))?;
    Ok(format!("{HEADER}{body}"))
}

/// A mapping of the non-null entries; null when there are none, so the
/// parent leaves the key out.
fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mapping: Mapping = entries
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    if mapping.is_empty() {
        Value::Null
    } else {
        Value::Mapping(mapping)
    }
}

fn named<'a>(entries: impl Iterator<Item = (&'a String, Value)>) -> Value {
    map(entries.map(|(k, v)| (k.as_str(), v)))
}

fn text(value: impl Display) -> Value {
    Value::String(value.to_string())
}

fn dur(value: Duration) -> Value {
    Value::String(format_duration(value))
}

fn opt_dur(value: Option<Duration>) -> Value {
    value.map_or(Value::Null, dur)
}

fn percent(value: f64) -> Value {
    // Whole percentages read better as integers; 0..=100 fits u64 exactly.
    if value.fract() == 0.0 && (0.0..=100.0).contains(&value) {
        Value::from(value as u64)
    } else {
        Value::from(value)
    }
}

fn secret<T>(value: &Option<T>) -> Value {
    value.as_ref().map_or(Value::Null, |_| text(REDACTED))
}

fn secret_path(_: &Path) -> Value {
    text(REDACTED)
}

fn header_text(value: &HeaderValue) -> Value {
    text(String::from_utf8_lossy(value.as_bytes()))
}

fn listener(l: &Listener) -> Value {
    let tls = l.tls.as_ref().map_or(Value::Null, |t| {
        map([
            (
                "certificates",
                t.certificates
                    .iter()
                    .map(|c| map([("cert", secret_path(&c.cert)), ("key", secret_path(&c.key))]))
                    .collect(),
            ),
            (
                "client_ca",
                t.client_ca.as_deref().map_or(Value::Null, secret_path),
            ),
            ("handshake_timeout", dur(t.handshake_timeout)),
            ("forward_client_cert", Value::Bool(t.forward_client_cert)),
        ])
    });
    map([
        ("name", text(&l.name)),
        ("listen", text(l.listen)),
        ("header_timeout", dur(l.header_timeout)),
        ("body_timeout", dur(l.body_timeout)),
        ("tls", tls),
    ])
}

fn upstream(u: &Upstream) -> Value {
    let tls = u.tls.as_ref().map_or(Value::Null, |t| {
        map([
            ("ca", t.ca.as_deref().map_or(Value::Null, secret_path)),
            (
                "server_name",
                t.server_name.as_deref().map_or(Value::Null, text),
            ),
            ("cert", t.cert.as_deref().map_or(Value::Null, secret_path)),
            ("key", t.key.as_deref().map_or(Value::Null, secret_path)),
        ])
    });
    let protocol = match u.protocol {
        Protocol::Http1 => "http1",
        Protocol::Http2 => "http2",
    };
    map([
        ("url", text(&u.url)),
        ("protocol", text(protocol)),
        ("connect_timeout", dur(u.connect_timeout)),
        ("max_idle_per_host", Value::from(u.max_idle_per_host)),
        ("tls", tls),
    ])
}

fn route(r: &Route, upstream_names: &[&str]) -> Value {
    let (upstream, respond_value) = match &r.action {
        Action::Upstream(i) => (
            upstream_names.get(*i).map_or(Value::Null, text),
            Value::Null,
        ),
        Action::Respond(resp) => (Value::Null, respond(resp)),
    };
    map([
        ("name", text(&r.name)),
        ("match", matcher(&r.matcher)),
        ("upstream", upstream),
        ("respond", respond_value),
        ("timeout", opt_dur(r.timeout)),
        ("idle_timeout", opt_dur(r.idle_timeout)),
        (
            "concurrency",
            r.concurrency.as_ref().map_or(Value::Null, concurrency),
        ),
        ("breaker", r.breaker.as_ref().map_or(Value::Null, breaker)),
        ("lease", r.lease.as_deref().map_or(Value::Null, text)),
    ])
}

fn matcher(m: &Match) -> Value {
    let host = match &m.host {
        Some(HostMatch::Exact(h)) => text(h),
        Some(HostMatch::Suffix(s)) => text(format_args!("*{s}")),
        None => Value::Null,
    };
    let (prefix, exact) = match &m.path {
        Some(PathMatch::Prefix(p)) => (text(p), Value::Null),
        Some(PathMatch::Exact(p)) => (Value::Null, text(p)),
        None => (Value::Null, Value::Null),
    };
    let methods = if m.methods.is_empty() {
        Value::Null
    } else {
        m.methods.iter().map(text).collect()
    };
    let headers = map(m.headers.iter().map(|(name, value)| {
        let value = match value {
            HeaderMatch::Present => text("*"),
            HeaderMatch::Exact(v) => header_text(v),
        };
        (name.as_str(), value)
    }));
    map([
        ("host", host),
        ("path_prefix", prefix),
        ("path_exact", exact),
        ("methods", methods),
        ("headers", headers),
    ])
}

fn respond(r: &Respond) -> Value {
    map([
        ("status", Value::from(r.status.as_u16())),
        ("body", text(String::from_utf8_lossy(&r.body))),
        (
            "headers",
            map(r.headers.iter().map(|(n, v)| (n.as_str(), header_text(v)))),
        ),
    ])
}

fn concurrency(c: &Concurrency) -> Value {
    map([
        ("max", Value::from(c.max)),
        ("queue", Value::from(c.queue)),
        ("queue_timeout", dur(c.queue_timeout)),
    ])
}

fn breaker(b: &Breaker) -> Value {
    let errors = map([
        (
            "statuses",
            b.errors
                .statuses
                .iter()
                .map(|s| Value::from(s.as_u16()))
                .collect(),
        ),
        ("timeouts", Value::from(b.errors.timeouts)),
        ("connect_errors", Value::from(b.errors.connect_errors)),
        (
            "grpc_codes",
            b.errors
                .grpc_codes
                .iter()
                .copied()
                .map(Value::from)
                .collect(),
        ),
    ]);
    let slow_call = b.slow_call.map_or(Value::Null, |s| {
        map([
            ("threshold", dur(s.threshold)),
            ("percent", percent(s.percent)),
        ])
    });
    map([
        ("window", dur(b.window)),
        ("buckets", Value::from(b.buckets)),
        ("min_requests", Value::from(b.min_requests)),
        ("error_percent", percent(b.error_percent)),
        ("open_for", dur(b.open_for)),
        ("half_open_probes", Value::from(b.half_open_probes)),
        ("errors", errors),
        ("slow_call", slow_call),
        ("fallback", b.fallback.as_ref().map_or(Value::Null, respond)),
    ])
}

fn lease(l: &LeaseSpec) -> Value {
    let require_healthy = l.require_healthy.as_ref().map_or(Value::Null, |h| {
        map([("url", text(&h.url)), ("every", dur(h.every))])
    });
    map([
        ("backend", text(format!("{:?}", l.backend).to_lowercase())),
        ("ttl", dur(l.ttl)),
        ("renew_every", dur(l.renew_every)),
        ("max_drift", percent(l.max_drift)),
        (
            "on_follower",
            text(format!("{:?}", l.on_follower).to_lowercase()),
        ),
        ("wait", dur(l.wait)),
        ("require_healthy", require_healthy),
    ])
}

fn cluster(c: &ClusterSpec) -> Value {
    let peers = if c.peers.is_empty() {
        Value::Null
    } else {
        let peer = |p: &Peer| map([("id", text(&p.id)), ("address", text(&p.address))]);
        c.peers.iter().map(peer).collect()
    };
    let tls = c.tls.as_ref().map_or(Value::Null, |t| {
        map([
            ("cert", secret_path(&t.cert)),
            ("key", secret_path(&t.key)),
            ("ca", secret_path(&t.ca)),
        ])
    });
    map([
        ("node_id", text(&c.node_id)),
        (
            "forward_url",
            c.forward_url.as_ref().map_or(Value::Null, text),
        ),
        ("listen", c.listen.map_or(Value::Null, text)),
        (
            "advertise",
            c.advertise.as_deref().map_or(Value::Null, text),
        ),
        (
            "public_url",
            c.public_url.as_ref().map_or(Value::Null, text),
        ),
        (
            "state_dir",
            c.state_dir
                .as_ref()
                .map_or(Value::Null, |p| text(p.display())),
        ),
        ("peers", peers),
        ("tls", tls),
        ("allow_even_members", Value::Bool(c.allow_even_members)),
    ])
}

fn etcd(e: &EtcdSpec) -> Value {
    map([
        ("endpoints", e.endpoints.iter().map(text).collect()),
        ("prefix", text(&e.prefix)),
        ("username", secret(&e.username)),
        ("password", secret(&e.password)),
    ])
}
