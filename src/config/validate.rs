//! Raw → typed: checks meaning, applies defaults, and collects every semantic
//! problem in one pass instead of stopping at the first.
//!
//! Each builder records what is wrong and returns `None` for a part it cannot
//! build; the `Config` is assembled only when nothing was recorded. The
//! blocks live next door: `endpoints` (listeners, upstreams, URLs),
//! `matching` (route matches and fixed responses), `resilience`,
//! `coordination` (leases, cluster, etcd) and `unsupported`.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::*;
use super::raw::*;
use super::value::{Dur, Percent};
use super::{
    coordination, endpoints, files, matching, render, resilience, unsupported, At, Diagnostic,
};

/// The problems found so far.
pub(super) struct Diags {
    file: PathBuf,
    pub list: Vec<Diagnostic>,
}

impl Diags {
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    /// A path from the file, relative to the config file's directory.
    pub fn path(&self, path: &Path) -> PathBuf {
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }

    pub fn error(&mut self, key: impl Display, message: impl Display) {
        self.list.push(Diagnostic {
            file: self.file.clone(),
            at: At::Key(key.to_string()),
            message: message.to_string(),
        });
    }
}

/// `routes[2] (orders-write)`, or `routes[2]` for an unnamed entry.
pub(super) fn item(list: &str, index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{list}[{index}] ({name})"),
        None => format!("{list}[{index}]"),
    }
}

/// `; known: a, b` or a note that there are none, for "no X named Y" errors.
pub(super) fn known<'a>(kind: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        format!("; no {kind} are configured")
    } else {
        format!("; known: {}", names.join(", "))
    }
}

/// A duration that must not be zero (a zero timeout would refuse everything).
pub(super) fn nonzero(d: &mut Diags, key: impl Display, value: Duration) -> Duration {
    if value.is_zero() {
        d.error(key, "must be more than 0s");
    }
    value
}

pub(super) fn percent(d: &mut Diags, key: impl Display, value: Percent) -> f64 {
    if !(0.0..=100.0).contains(&value.0) {
        d.error(
            key,
            format_args!("must be between 0 and 100, got {}", value.0),
        );
    }
    value.0
}

/// The route settings that `defaults` hands down, already validated.
struct RouteDefaults {
    timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    concurrency: Option<Concurrency>,
    breaker: Option<Breaker>,
}

pub(super) fn validate(file: &Path, raw: RawConfig) -> Result<Config, Vec<Diagnostic>> {
    let config = validate_with(file, raw, unsupported::unsupported)?;
    // The files a config names are checked once the config itself holds.
    let problems = files::check(file, &config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// `validate` with the check for features this build lacks passed in, so
/// tests can exercise the validation of those features too.
pub(super) fn validate_with(
    file: &Path,
    raw: RawConfig,
    unsupported: fn(&RawConfig, &Path) -> Vec<Diagnostic>,
) -> Result<Config, Vec<Diagnostic>> {
    let mut d = Diags::new(file);
    let d = &mut d;
    let admin_listen = match raw.admin.as_ref().and_then(|a| a.listen.as_deref()) {
        Some(text) => endpoints::socket_addr(d, "admin.listen", text),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    let listeners = endpoints::listeners(d, raw.listeners.as_deref());
    let upstreams = endpoints::upstreams(d, raw.upstreams.as_ref().map_or(&[], |u| &u.0));
    let defaults = route_defaults(d, raw.defaults.as_ref());
    let leases = coordination::leases(d, raw.leases.as_ref().map_or(&[], |l| &l.0));
    let routes = routes(d, &raw, &defaults);
    let cluster = raw.cluster.as_ref().map(|c| coordination::cluster(d, c));
    let etcd = raw.etcd.as_ref().and_then(|e| coordination::etcd(d, e));
    coordination::lease_needs(
        d,
        &leases,
        raw.cluster.is_some(),
        &cluster,
        raw.etcd.is_some(),
    );
    let raw_listeners = raw.listeners.as_deref().unwrap_or(&[]);
    endpoints::unique_addresses(d, admin_listen, raw_listeners, &listeners, cluster.as_ref());
    let shutdown = shutdown(raw.shutdown.as_ref());
    let limits = limits(d, raw.limits.as_ref());
    let access_log = raw.access_log.as_ref().and_then(|a| a.format);
    d.list.extend(unsupported(&raw, file));

    let config = (|| {
        Some(Config {
            admin: Admin {
                listen: admin_listen?,
            },
            listeners: listeners.into_iter().collect::<Option<_>>()?,
            upstreams: upstreams.into_iter().collect::<Option<_>>()?,
            routes: routes.into_iter().collect::<Option<_>>()?,
            shutdown,
            limits,
            access_log: access_log.unwrap_or(AccessLogFormat::Text),
            leases: leases.into_iter().collect::<Option<_>>()?,
            cluster,
            etcd,
            redacted_yaml: String::new(),
        })
    })();
    match config {
        Some(mut config) if d.list.is_empty() => match render::redacted_yaml(&config) {
            Ok(yaml) => {
                config.redacted_yaml = yaml;
                Ok(config)
            }
            Err(message) => Err(vec![file_error(file, message)]),
        },
        // A part is missing only if its problem was recorded; the fallback
        // message guards against a builder that forgot to say why.
        _ if d.list.is_empty() => Err(vec![file_error(file, "invalid configuration")]),
        _ => Err(std::mem::take(&mut d.list)),
    }
}

fn file_error(file: &Path, message: impl Display) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        at: At::File,
        message: message.to_string(),
    }
}

/// Records a duplicate name; `seen` holds (name, key of its first use).
pub(super) fn unique_name(
    d: &mut Diags,
    key: &str,
    kind: &str,
    name: &str,
    seen: &mut Vec<(String, String)>,
) {
    if name.trim().is_empty() {
        d.error(format_args!("{key}.name"), "must not be empty");
    } else if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
        d.error(
            format_args!("{key}.name"),
            format_args!("duplicate {kind} name {name:?} (also {first})"),
        );
    } else {
        seen.push((name.to_owned(), key.to_owned()));
    }
}

fn route_defaults(d: &mut Diags, raw: Option<&RawDefaults>) -> RouteDefaults {
    let empty = RawDefaults::default();
    let raw = raw.unwrap_or(&empty);
    RouteDefaults {
        timeout: raw.timeout.map(|t| nonzero(d, "defaults.timeout", t.0)),
        idle_timeout: raw
            .idle_timeout
            .map(|t| nonzero(d, "defaults.idle_timeout", t.0)),
        concurrency: raw
            .concurrency
            .as_ref()
            .and_then(|c| resilience::concurrency(d, "defaults.concurrency", c, None)),
        breaker: raw
            .breaker
            .as_ref()
            .and_then(|b| resilience::breaker(d, "defaults.breaker", b, &Breaker::default())),
    }
}

fn routes(d: &mut Diags, raw: &RawConfig, defaults: &RouteDefaults) -> Vec<Option<Route>> {
    let upstreams = raw.upstreams.as_ref().map_or(&[][..], |u| &u.0[..]);
    let leases = raw.leases.as_ref().map_or(&[][..], |l| &l.0[..]);
    let mut names = Vec::new();
    let mut out = Vec::new();
    for (i, r) in raw.routes.iter().flatten().enumerate() {
        let key = item("routes", i, r.name.as_deref());
        let name = r.name.clone().unwrap_or_else(|| format!("route-{i}"));
        unique_name(d, &key, "route", &name, &mut names);
        let matcher = matching::matcher(d, &format!("{key}.match"), r.matcher.as_ref());
        let action = action(d, &key, r, upstreams);
        let timeout = |d: &mut Diags, field: &str, own: Option<Dur>, inherited| {
            own.map(|t| nonzero(d, format_args!("{key}.{field}"), t.0))
                .or(inherited)
        };
        let route_timeout = timeout(d, "timeout", r.timeout, defaults.timeout);
        let idle_timeout = timeout(d, "idle_timeout", r.idle_timeout, defaults.idle_timeout);
        let concurrency = match &r.concurrency {
            Some(c) => {
                let base = defaults.concurrency.as_ref();
                resilience::concurrency(d, &format!("{key}.concurrency"), c, base)
            }
            None => defaults.concurrency,
        };
        let breaker = match &r.breaker {
            Some(b) => {
                let base = defaults.breaker.clone().unwrap_or_default();
                resilience::breaker(d, &format!("{key}.breaker"), b, &base)
            }
            None => defaults.breaker.clone(),
        };
        if let Some(lease) = &r.lease {
            check_lease(d, &key, lease, r.upstream.is_some(), leases);
        }
        out.push(matcher.zip(action).map(|(matcher, action)| Route {
            name,
            matcher,
            action,
            timeout: route_timeout,
            idle_timeout,
            concurrency,
            breaker,
            lease: r.lease.clone(),
        }));
    }
    out
}

/// Exactly one of `upstream` (resolved to its index) and `respond`.
fn action(
    d: &mut Diags,
    key: &str,
    r: &RawRoute,
    upstreams: &[(String, RawUpstream)],
) -> Option<Action> {
    match (&r.upstream, &r.respond) {
        (Some(_), Some(_)) => {
            d.error(key, "set either `upstream` or `respond`, not both");
            None
        }
        (None, None) => {
            d.error(key, "needs `upstream` (or `respond` to answer it itself)");
            None
        }
        (Some(wanted), None) => {
            let index = upstreams.iter().position(|(n, _)| n == wanted);
            if index.is_none() {
                let known = known("upstreams", upstreams.iter().map(|(n, _)| n.as_str()));
                d.error(
                    format_args!("{key}.upstream"),
                    format_args!("no upstream named {wanted:?}{known}"),
                );
            }
            index.map(Action::Upstream)
        }
        (None, Some(respond)) => {
            matching::respond(d, &format!("{key}.respond"), respond, 200).map(Action::Respond)
        }
    }
}

fn check_lease(
    d: &mut Diags,
    key: &str,
    lease: &str,
    has_upstream: bool,
    leases: &[(String, RawLease)],
) {
    if !leases.iter().any(|(n, _)| n == lease) {
        let known = known("leases", leases.iter().map(|(n, _)| n.as_str()));
        d.error(
            format_args!("{key}.lease"),
            format_args!("no lease named {lease:?}{known}"),
        );
    } else if !has_upstream {
        d.error(
            format_args!("{key}.lease"),
            "a lease gates requests to an upstream; this route has none",
        );
    }
}

fn shutdown(raw: Option<&RawShutdown>) -> Shutdown {
    Shutdown {
        drain_delay: raw
            .and_then(|s| s.drain_delay)
            .map_or(Duration::ZERO, |t| t.0),
        grace: raw
            .and_then(|s| s.grace)
            .map_or(Duration::from_secs(30), |t| t.0),
    }
}

fn limits(d: &mut Diags, raw: Option<&RawLimits>) -> Limits {
    let max_header_bytes = raw.and_then(|l| l.max_header_bytes).map_or(65536, |s| s.0);
    // hyper refuses (panics on) an HTTP/1 read buffer below 8 KiB, and HTTP/2
    // counts header-list sizes in a u32; stay well inside both.
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&max_header_bytes) {
        d.error(
            "limits.max_header_bytes",
            format_args!(
                "must be between {MIN_HEADER_BYTES} (8KiB) and {MAX_HEADER_BYTES} (16MiB)"
            ),
        );
    }
    let max_headers = raw.and_then(|l| l.max_headers).unwrap_or(100);
    if !(1..=MAX_HEADERS).contains(&max_headers) {
        d.error(
            "limits.max_headers",
            format_args!("must be between 1 and {MAX_HEADERS}"),
        );
    }
    Limits {
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        max_headers,
    }
}

const MIN_HEADER_BYTES: u64 = 8 * 1024;
const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;
/// Parsers allocate room for this many headers per request.
const MAX_HEADERS: usize = 10_000;
