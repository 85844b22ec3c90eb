//! The operator's view of the routes: `/status.json`, `/status` (a plain
//! server-rendered page that refreshes itself), `/breakers`, and the
//! breaker overrides `POST /breakers/ROUTE/{open,close,reset}`.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::proxy::{Generation, Route, Target};
use crate::resilience::breaker::state::{Forced, Snapshot};
use crate::resilience::breaker::BreakerCell;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn breaker_json(cell: &BreakerCell) -> Value {
    let snap: Snapshot = cell.snapshot();
    let now = Instant::now();
    let c = &snap.counts;
    json!({
        "state": snap.state.as_str(),
        "forced": matches!(snap.state.as_str(), "forced_open" | "forced_closed"),
        "window": {
            "requests": c.total(),
            "successes": c.successes,
            "failures": c.failures,
            "timeouts": c.timeouts,
            "slow": c.slow,
            "error_percent": snap.error_percent,
            "slow_percent": snap.slow_percent,
        },
        "open_remaining_ms": snap.open_remaining.map(ms),
        "last_transition": snap.last_transition.as_ref().map(|t| json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "ago_ms": ms(now.saturating_duration_since(t.at)),
        })),
        "settings": {
            "window_ms": ms(cell.config.window),
            "buckets": cell.config.buckets,
            "min_requests": cell.config.min_requests,
            "error_percent": cell.config.error_percent,
            "open_for_ms": ms(cell.config.open_for),
            "half_open_probes": cell.config.half_open_probes,
        },
    })
}

fn route_json(route: &Route) -> Value {
    let target = match &route.target {
        Target::Upstream(_) => "upstream",
        Target::Respond(_) => "respond",
    };
    json!({
        "name": &*route.name,
        "target": target,
        "in_flight": route.metrics.in_flight.get(),
        "timeout_ms": route.timeout.map(ms),
        "concurrency": route.limiter.as_ref().map(|l| json!({
            "max": l.config.max,
            "in_use": l.in_use(),
            "queue": l.config.queue,
            "queued": l.queued(),
            "queue_timeout_ms": ms(l.config.queue_timeout),
        })),
        "breaker": route.breaker.as_deref().map(breaker_json),
        "lease": route.lease.as_ref().map(|g| g.lease.name()),
    })
}

/// `/status.json`: every route with its limit and breaker.
pub fn status_json(gen: &Generation) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "routes": gen.routes.iter().map(route_json).collect::<Vec<_>>(),
        "leases": gen.leases.list_json(Instant::now()),
    })
}

/// `GET /breakers`: the routes that have a breaker, with its state.
pub fn breakers_json(gen: &Generation) -> Value {
    let list: Vec<Value> = gen
        .routes
        .iter()
        .filter_map(|r| {
            let cell = r.breaker.as_deref()?;
            let mut v = breaker_json(cell);
            v["route"] = json!(&*r.name);
            Some(v)
        })
        .collect();
    json!({ "breakers": list })
}

/// The outcome of an operator's breaker override.
pub enum Override {
    Done(Value),
    NoSuchRoute,
    NoBreaker,
    UnknownAction,
}

/// `POST /breakers/ROUTE/ACTION` with ACTION `open`, `close` or `reset`.
pub fn override_breaker(gen: &Generation, route: &str, action: &str) -> Override {
    let Some(r) = gen.routes.iter().find(|r| &*r.name == route) else {
        return Override::NoSuchRoute;
    };
    let Some(cell) = r.breaker.as_deref() else {
        return Override::NoBreaker;
    };
    match action {
        "open" => cell.force(Forced::Open),
        "close" => cell.force(Forced::Closed),
        "reset" => cell.reset(),
        _ => return Override::UnknownAction,
    }
    let mut v = breaker_json(cell);
    v["route"] = json!(route);
    Override::Done(v)
}

/// `/status`: the same as `/status.json`, as a page readable at a glance.
pub fn status_html(gen: &Generation) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"2\">",
        "<title>breakwater status</title><style>",
        "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse}td,th{padding:.35em .8em;border-bottom:1px solid #ddd;text-align:left}",
        "th{background:#f4f4f4}.closed{color:#176f2c}.open,.forced_open{color:#b00020;font-weight:bold}",
        ".half_open{color:#a65e00;font-weight:bold}.forced_closed{color:#5a3fa0;font-weight:bold}",
        "small{color:#777}</style></head><body>",
        "<h1>breakwater</h1><p><small>refreshes every 2 s · <a href=\"/status.json\">json</a></small></p>",
        "<table><tr><th>route</th><th>in flight</th><th>timeout</th><th>concurrency</th>",
        "<th>breaker</th><th>window</th><th>last transition</th></tr>",
    ));
    let now = Instant::now();
    for r in &gen.routes {
        let timeout = r
            .timeout
            .map_or("—".to_owned(), |t| format!("{} ms", ms(t)));
        let limit = r.limiter.as_ref().map_or("—".to_owned(), |l| {
            format!(
                "{}/{} in use, {}/{} queued",
                l.in_use(),
                l.config.max,
                l.queued(),
                l.config.queue
            )
        });
        let (state, window, last) = match r.breaker.as_deref() {
            None => ("—".to_owned(), "—".to_owned(), "—".to_owned()),
            Some(cell) => {
                let s = cell.snapshot();
                let c = &s.counts;
                let state = s.state.as_str();
                let state = format!("<span class=\"{state}\">{state}</span>");
                let window = format!(
                    "{} requests, {} errors ({} %), {} timeouts, {} slow",
                    c.total(),
                    c.errors(),
                    s.error_percent,
                    c.timeouts,
                    c.slow
                );
                let last = s.last_transition.map_or("—".to_owned(), |t| {
                    format!(
                        "{} → {}, {} s ago",
                        t.from.as_str(),
                        t.to.as_str(),
                        now.saturating_duration_since(t.at).as_secs()
                    )
                });
                (state, window, last)
            }
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            r.metrics.in_flight.get(),
            timeout,
            limit,
            state,
            window,
            last
        );
    }
    out.push_str("</table>");
    leases_html(gen, now, &mut out);
    out.push_str("</body></html>\n");
    out
}

/// The leases table of `/status`: who holds each, this node's role, token.
fn leases_html(gen: &Generation, now: Instant, out: &mut String) {
    if gen.leases.iter().next().is_none() {
        return;
    }
    out.push_str(concat!(
        "<h2>leases</h2><table><tr><th>lease</th><th>backend</th><th>holder</th>",
        "<th>this node</th><th>token</th><th>valid for</th><th>last transition</th></tr>",
    ));
    for lease in gen.leases.iter() {
        let view = lease.view();
        let holder = view
            .holder
            .as_ref()
            .map_or("none known".to_owned(), |h| escape(&h.node_id));
        let role = if view.may_stamp(now) {
            "<span class=\"closed\">holder</span>"
        } else {
            view.role().as_str()
        };
        let token = view.token.map_or("—".to_owned(), |t| t.to_string());
        let valid = if view.may_stamp(now) {
            format!("{} ms", ms(view.valid_for(now)))
        } else {
            "—".to_owned()
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} at {}</td></tr>",
            escape(lease.name()),
            lease.backend_name(),
            holder,
            role,
            token,
            valid,
            view.transition.to.as_str(),
            crate::lease::view::rfc3339(view.transition.at),
        );
    }
    out.push_str("</table>");
}

/// Route names come from the config file: escape them for HTML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(ch),
        }
    }
    out
}
