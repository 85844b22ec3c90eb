//! Prometheus metrics: one owned [`Registry`] per process (no global statics,
//! so tests can run several proxies side by side), with handles resolved once
//! per route at config load so the request path only touches atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The metric families of the core proxy.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// TLS handshakes, failures, certificate expiry and reloads.
    pub tls: TlsMetrics,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    connect_errors: IntCounterVec,
    proxy_errors: IntCounterVec,
    reloads: IntCounterVec,
    connections: IntGaugeVec,
    timeouts: IntCounterVec,
    in_use: IntGaugeVec,
    queued: IntGaugeVec,
    shed: IntCounterVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    breaker_rejected: IntCounterVec,
}

/// Label used for requests that matched no route.
pub const NO_ROUTE: &str = "-";

impl Metrics {
    /// Creates the registry and registers every family.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "breakwater_requests_total",
                "Requests answered, by route and status class.",
            ),
            &["route", "code"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "breakwater_request_duration_seconds",
                "Time from request head to the end of the response body.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("static metric definition");
        let in_flight = IntGaugeVec::new(
            Opts::new(
                "breakwater_requests_in_flight",
                "Requests being served, response bodies included.",
            ),
            &["route"],
        )
        .expect("static metric definition");
        let connect_errors = IntCounterVec::new(
            Opts::new(
                "breakwater_upstream_connect_errors_total",
                "Failed connection attempts to an upstream.",
            ),
            &["upstream"],
        )
        .expect("static metric definition");
        let proxy_errors = IntCounterVec::new(
            Opts::new(
                "breakwater_proxy_errors_total",
                "Responses made by the proxy itself instead of the upstream, by reason.",
            ),
            &["route", "reason"],
        )
        .expect("static metric definition");
        let reloads = IntCounterVec::new(
            Opts::new(
                "breakwater_config_reloads_total",
                "Configuration reloads, by result.",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let connections = IntGaugeVec::new(
            Opts::new(
                "breakwater_downstream_connections",
                "Open client connections, by listener.",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let timeouts = counter(
            "breakwater_timeouts_total",
            "Requests cut by the route timeout before the response head.",
            &["route"],
        );
        let in_use = gauge(
            "breakwater_concurrency_in_use",
            "Concurrency permits held, response bodies included.",
            &["route"],
        );
        let queued = gauge(
            "breakwater_concurrency_queued",
            "Requests waiting for a concurrency permit.",
            &["route"],
        );
        let shed = counter(
            "breakwater_shed_total",
            "Requests refused by the concurrency limit (full, or queued too long).",
            &["route"],
        );
        let breaker_state = gauge(
            "breakwater_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            &["route", "state"],
        );
        let breaker_transitions = counter(
            "breakwater_breaker_transitions_total",
            "Circuit breaker state changes.",
            &["route", "from", "to"],
        );
        let breaker_rejected = counter(
            "breakwater_breaker_rejected_total",
            "Requests failed fast by an open (or half-open, full) breaker.",
            &["route"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("breakwater_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(connect_errors.clone()),
            Box::new(proxy_errors.clone()),
            Box::new(reloads.clone()),
            Box::new(connections.clone()),
            Box::new(build_info),
            Box::new(timeouts.clone()),
            Box::new(in_use.clone()),
            Box::new(queued.clone()),
            Box::new(shed.clone()),
            Box::new(breaker_state.clone()),
            Box::new(breaker_transitions.clone()),
            Box::new(breaker_rejected.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        let tls = TlsMetrics::register(&registry);
        Self {
            tls,
            registry,
            requests,
            duration,
            in_flight,
            connect_errors,
            proxy_errors,
            reloads,
            connections,
            timeouts,
            in_use,
            queued,
            shed,
            breaker_state,
            breaker_transitions,
            breaker_rejected,
        }
    }

    /// Handles for one route's resilience layers.
    pub fn resilience(&self, route: &str) -> ResilienceMetrics {
        ResilienceMetrics {
            timeouts: self.timeouts.with_label_values(&[route]),
            in_use: self.in_use.with_label_values(&[route]),
            queued: self.queued.with_label_values(&[route]),
            shed: self.shed.with_label_values(&[route]),
            breaker_rejected: self.breaker_rejected.with_label_values(&[route]),
            breaker_state: self.breaker_state.clone(),
            breaker_transitions: self.breaker_transitions.clone(),
            route: route.into(),
        }
    }

    /// The registry, for layers that add their own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Handles for one route, resolved once.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let class = |c: &str| self.requests.with_label_values(&[route, c]);
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self.duration.with_label_values(&[route]),
            in_flight: self.in_flight.with_label_values(&[route]),
            proxy_errors: self.proxy_errors.clone(),
            route: route.into(),
        }
    }

    /// The connect-error counter of one upstream.
    pub fn upstream_connect_errors(&self, upstream: &str) -> IntCounter {
        self.connect_errors.with_label_values(&[upstream])
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
    }

    /// The open-connections gauge of one listener.
    pub fn connections(&self, listener: &str) -> IntGauge {
        self.connections.with_label_values(&[listener])
    }

    /// The text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-route handles; cloning is cheap (each handle is an `Arc`).
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [IntCounter; 5],
    pub duration: Histogram,
    pub in_flight: IntGauge,
    proxy_errors: IntCounterVec,
    route: Box<str>,
}

impl RouteMetrics {
    /// Counts a response by its status class.
    pub fn response(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
    }

    /// Counts a response the proxy made itself. Reasons are a fixed set.
    pub fn proxy_error(&self, reason: &str) {
        self.proxy_errors
            .with_label_values(&[&self.route, reason])
            .inc();
    }
}

/// Per-route handles of the resilience layers.
#[derive(Clone)]
pub struct ResilienceMetrics {
    pub timeouts: IntCounter,
    pub in_use: IntGauge,
    pub queued: IntGauge,
    pub shed: IntCounter,
    pub breaker_rejected: IntCounter,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    route: Box<str>,
}

impl ResilienceMetrics {
    /// Sets the breaker state gauge: 1 for `current`, 0 for every other
    /// state in `all`.
    pub fn breaker_state(&self, all: &[&str], current: &str) {
        for state in all {
            self.breaker_state
                .with_label_values(&[&*self.route, *state])
                .set(i64::from(*state == current));
        }
    }

    /// Counts a breaker transition.
    pub fn breaker_transition(&self, from: &str, to: &str) {
        self.breaker_transitions
            .with_label_values(&[&*self.route, from, to])
            .inc();
    }
}

/// TLS families, labelled by listener.
#[derive(Clone)]
pub struct TlsMetrics {
    handshakes: IntCounterVec,
    handshake_errors: IntCounterVec,
    expiry: prometheus::IntGaugeVec,
    reloads: IntCounterVec,
}

impl TlsMetrics {
    fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let handshakes = counter(
            "breakwater_tls_handshakes_total",
            "TLS handshakes completed, by listener and protocol version.",
            &["listener", "version"],
        );
        let handshake_errors = counter(
            "breakwater_tls_handshake_errors_total",
            "TLS handshakes that failed, by listener and reason.",
            &["listener", "reason"],
        );
        let reloads = counter(
            "breakwater_tls_reloads_total",
            "Reloads of a listener's certificate files, by result (success: swapped in; error: refused, the previous certificates keep serving).",
            &["listener", "result"],
        );
        let expiry = prometheus::IntGaugeVec::new(
            Opts::new(
                "breakwater_tls_certificate_expiry_timestamp_seconds",
                "When each served certificate expires (notAfter), in Unix seconds.",
            ),
            &["listener", "name"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(handshakes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(handshake_errors.clone()),
            Box::new(expiry.clone()),
            Box::new(reloads.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            handshakes,
            handshake_errors,
            expiry,
            reloads,
        }
    }

    pub fn handshake(&self, listener: &str, version: &str) {
        self.handshakes
            .with_label_values(&[listener, version])
            .inc();
    }

    pub fn handshake_error(&self, listener: &str, reason: &str) {
        self.handshake_errors
            .with_label_values(&[listener, reason])
            .inc();
    }

    pub fn reload(&self, listener: &str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reloads.with_label_values(&[listener, result]).inc();
    }

    pub fn expiry(&self, listener: &str, name: &str, not_after: i64) {
        self.expiry
            .with_label_values(&[listener, name])
            .set(not_after);
    }

    pub fn forget_expiry(&self, listener: &str, name: &str) {
        let _ = self.expiry.remove_label_values(&[listener, name]);
    }
}
