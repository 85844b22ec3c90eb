//! Validation of the per-route resilience blocks (`concurrency`, `breaker`),
//! each merged field by field over what `defaults` sets.
//!
//! Only the fields a block sets itself are checked and reported under its
//! own key; inherited fields were checked once, under `defaults`.

use std::time::Duration;

use http::StatusCode;

use super::matching;
use super::model::*;
use super::raw::*;
use super::validate::{nonzero, percent, Diags};

/// More buckets than this buys no precision and costs memory per route.
const MAX_BUCKETS: u32 = 1000;

/// Bounds `max` and `queue` far below what a semaphore can count, so no
/// setting can overflow one.
const MAX_SLOTS: usize = 1_000_000;

pub(super) fn concurrency(
    d: &mut Diags,
    key: &str,
    raw: &RawConcurrency,
    base: Option<&Concurrency>,
) -> Option<Concurrency> {
    let max = raw.max.or(base.map(|b| b.max));
    match max {
        None => d.error(format_args!("{key}.max"), "is required"),
        Some(m) if !(1..=MAX_SLOTS).contains(&m) => {
            d.error(
                format_args!("{key}.max"),
                format_args!("must be between 1 and {MAX_SLOTS}"),
            );
        }
        Some(_) => {}
    }
    let queue = raw.queue.or(base.map(|b| b.queue)).unwrap_or(0);
    if queue > MAX_SLOTS {
        d.error(
            format_args!("{key}.queue"),
            format_args!("must be at most {MAX_SLOTS}"),
        );
    }
    let queue_timeout = match raw.queue_timeout {
        Some(t) => nonzero(d, format_args!("{key}.queue_timeout"), t.0),
        None => base.map_or(Duration::from_secs(1), |b| b.queue_timeout),
    };
    Some(Concurrency {
        max: max.filter(|m| (1..=MAX_SLOTS).contains(m))?,
        queue: Some(queue).filter(|q| *q <= MAX_SLOTS)?,
        queue_timeout,
    })
}

pub(super) fn breaker(
    d: &mut Diags,
    key: &str,
    raw: &RawBreaker,
    base: &Breaker,
) -> Option<Breaker> {
    let problems_before = d.list.len();
    let duration = |d: &mut Diags, field: &str, own: Option<super::value::Dur>, inherited| match own
    {
        Some(t) => nonzero(d, format_args!("{key}.{field}"), t.0),
        None => inherited,
    };
    let window = duration(d, "window", raw.window, base.window);
    let open_for = duration(d, "open_for", raw.open_for, base.open_for);
    let buckets = raw.buckets.unwrap_or(base.buckets);
    if !(1..=MAX_BUCKETS).contains(&buckets) {
        d.error(
            format_args!("{key}.buckets"),
            format_args!("must be between 1 and {MAX_BUCKETS}"),
        );
    } else if window.as_nanos() % u128::from(buckets) != 0 {
        d.error(
            format_args!("{key}.buckets"),
            format_args!(
                "window {} does not divide into {buckets} equal buckets",
                super::format_duration(window)
            ),
        );
    }
    let min_requests = raw.min_requests.unwrap_or(base.min_requests);
    if min_requests == 0 {
        d.error(format_args!("{key}.min_requests"), "must be at least 1");
    }
    let half_open_probes = raw.half_open_probes.unwrap_or(base.half_open_probes);
    if half_open_probes == 0 {
        d.error(format_args!("{key}.half_open_probes"), "must be at least 1");
    }
    let error_percent = match raw.error_percent {
        Some(p) => percent(d, format_args!("{key}.error_percent"), p),
        None => base.error_percent,
    };
    let errors = match &raw.errors {
        Some(e) => errors(d, &format!("{key}.errors"), e, &base.errors),
        None => base.errors.clone(),
    };
    let slow_call = match &raw.slow_call {
        Some(s) => Some(SlowCall {
            threshold: nonzero(d, format_args!("{key}.slow_call.threshold"), s.threshold.0),
            percent: s.percent.map_or(50.0, |p| {
                percent(d, format_args!("{key}.slow_call.percent"), p)
            }),
        }),
        None => base.slow_call,
    };
    let fallback = match &raw.fallback {
        Some(f) => matching::respond(d, &format!("{key}.fallback"), f, 503),
        None => base.fallback.clone(),
    };
    let valid = d.list.len() == problems_before;
    valid.then_some(Breaker {
        window,
        buckets,
        min_requests,
        error_percent,
        open_for,
        half_open_probes,
        errors,
        slow_call,
        fallback,
    })
}

fn errors(d: &mut Diags, key: &str, raw: &RawErrors, base: &ErrorsSpec) -> ErrorsSpec {
    let statuses = match &raw.statuses {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, &code)| {
                let status = StatusCode::from_u16(code)
                    .ok()
                    .filter(|_| (100..=599).contains(&code));
                if status.is_none() {
                    d.error(
                        format_args!("{key}.statuses[{i}]"),
                        format_args!("{code} is not an HTTP status"),
                    );
                }
                status
            })
            .collect(),
        None => base.statuses.clone(),
    };
    let grpc_codes = match &raw.grpc_codes {
        Some(codes) => {
            for (i, code) in codes.iter().enumerate() {
                if !(1..=16).contains(code) {
                    let why = "is not a gRPC error code (1..=16; 0 is OK, never an error)";
                    d.error(
                        format_args!("{key}.grpc_codes[{i}]"),
                        format_args!("{code} {why}"),
                    );
                }
            }
            codes.clone()
        }
        None => base.grpc_codes.clone(),
    };
    ErrorsSpec {
        statuses,
        timeouts: raw.timeouts.unwrap_or(base.timeouts),
        connect_errors: raw.connect_errors.unwrap_or(base.connect_errors),
        grpc_codes,
    }
}
