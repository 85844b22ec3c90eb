//! The lease metric families, registered in the process's own registry, and
//! the handles each lease resolves once.
//!
//! Registered through [`Metrics::registry`] rather than in `Metrics::new`,
//! so the lease module owns its names. A second registration in the same
//! registry (a config reload that starts leases again) replaces the
//! families and carries the counters' values over, so they never go back;
//! the earlier handles then count into the void, so stop the old leases
//! before or soon after starting new ones.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::peers::transport::PeerMetrics;
use super::view::Role;
use crate::metrics::Metrics;

/// The lease families of one registry.
#[derive(Clone)]
pub struct LeaseMetrics {
    is_holder: IntGaugeVec,
    token: IntGaugeVec,
    transitions: IntCounterVec,
    forwarded: IntCounterVec,
    unavailable: IntCounterVec,
    backend_errors: IntCounterVec,
    /// The peer transport's families (`breakwater_peer_*`), registered here
    /// so that they too are registered once per registry, not per start of
    /// the leases.
    peers: PeerMetrics,
}

impl LeaseMetrics {
    /// Creates the families, the peer transport's included, and registers
    /// them in `metrics`' registry. Fails only if another family already
    /// uses one of these names with other labels.
    pub fn new(metrics: &Metrics) -> Result<Self, String> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let families = Self {
            is_holder: gauge(
                "breakwater_lease_is_holder",
                "1 while this node may stamp requests of the lease, else 0.",
                &["lease"],
            ),
            token: gauge(
                "breakwater_lease_token",
                "Fencing token of the lease's current tenure as this node knows it; 0 if unknown.",
                &["lease"],
            ),
            transitions: counter(
                "breakwater_lease_transitions_total",
                "Changes of this node's role in the lease, by the role it changed to.",
                &["lease", "to"],
            ),
            forwarded: counter(
                "breakwater_lease_forwarded_total",
                "Lease-gated requests this follower sent on to the holder, by result.",
                &["lease", "result"],
            ),
            unavailable: counter(
                "breakwater_lease_unavailable_total",
                "Lease-gated requests answered 503 lease-unavailable.",
                &["lease"],
            ),
            backend_errors: counter(
                "breakwater_lease_backend_errors_total",
                "Errors of a lease backend (store unreachable, state file unwritable, ...).",
                &["lease", "backend"],
            ),
            peers: PeerMetrics::new(metrics)?,
        };
        families.register(metrics.registry())?;
        Ok(families)
    }

    /// The peer transport's families, for the `peers` backend's transport.
    pub fn peers(&self) -> &PeerMetrics {
        &self.peers
    }

    fn collectors(&self) -> [Box<dyn Collector>; 6] {
        [
            Box::new(self.is_holder.clone()),
            Box::new(self.token.clone()),
            Box::new(self.transitions.clone()),
            Box::new(self.forwarded.clone()),
            Box::new(self.unavailable.clone()),
            Box::new(self.backend_errors.clone()),
        ]
    }

    fn register(&self, registry: &Registry) -> Result<(), String> {
        let carried = counter_values(registry);
        for collector in self.collectors() {
            let name = collector
                .desc()
                .first()
                .map_or(String::new(), |d| d.fq_name.clone());
            match registry.register(collector) {
                Ok(()) => {}
                Err(prometheus::Error::AlreadyReg) => {
                    // Equal descriptors are one collector to the registry,
                    // so this unregisters the earlier family.
                    let again = self.collector_named(&name);
                    let replaced = again
                        .and_then(|c| registry.unregister(c).ok())
                        .and_then(|()| self.collector_named(&name))
                        .map(|c| registry.register(c));
                    if !matches!(replaced, Some(Ok(()))) {
                        return Err(format!("cannot register the metric family {name}"));
                    }
                }
                Err(e) => return Err(format!("cannot register the metric family {name}: {e}")),
            }
        }
        for (name, labels, value) in carried {
            let labels: HashMap<&str, &str> = labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            if let Some(vec) = self.counter_named(&name) {
                if let Ok(c) = vec.get_metric_with(&labels) {
                    c.inc_by(value);
                }
            }
        }
        Ok(())
    }

    fn collector_named(&self, name: &str) -> Option<Box<dyn Collector>> {
        self.collectors()
            .into_iter()
            .find(|c| c.desc().first().is_some_and(|d| d.fq_name == name))
    }

    fn counter_named(&self, name: &str) -> Option<&IntCounterVec> {
        [
            &self.transitions,
            &self.forwarded,
            &self.unavailable,
            &self.backend_errors,
        ]
        .into_iter()
        .find(|v| v.desc().first().is_some_and(|d| d.fq_name == name))
    }

    /// Resolves the handles of lease `lease` run by backend `backend`, and
    /// makes every series of it visible at zero.
    pub fn handles(&self, lease: &str, backend: &str) -> LeaseHandles {
        let transitions =
            Role::ALL.map(|to| self.transitions.with_label_values(&[lease, to.as_str()]));
        for result in FORWARD_RESULTS {
            self.forwarded.with_label_values(&[lease, result]);
        }
        LeaseHandles {
            is_holder: self.is_holder.with_label_values(&[lease]),
            token: self.token.with_label_values(&[lease]),
            transitions,
            unavailable: self.unavailable.with_label_values(&[lease]),
            backend_errors: self.backend_errors.with_label_values(&[lease, backend]),
            forwarded: self.forwarded.clone(),
            lease: lease.into(),
        }
    }
}

/// The `result` values of `breakwater_lease_forwarded_total`: the holder
/// answered, or it could not be reached (or failed mid-way).
pub const FORWARD_RESULTS: [&str; 2] = ["ok", "error"];

/// One counter series: `(family, (label, value) pairs, value)`.
type Sample = (String, Vec<(String, String)>, u64);

/// The current values of the lease counter families in `registry`.
fn counter_values(registry: &Registry) -> Vec<Sample> {
    let mut out = Vec::new();
    for family in registry.gather() {
        let name = family.name();
        if !name.starts_with("breakwater_lease_") || family.get_field_type() != MetricType::COUNTER
        {
            continue;
        }
        for metric in family.get_metric() {
            let labels = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            // Counters hold whole numbers, so the cast is exact.
            let value = metric.get_counter().get_value() as u64;
            out.push((name.to_owned(), labels, value));
        }
    }
    out
}

/// One lease's metric handles, resolved once; cloning is cheap.
#[derive(Clone)]
pub struct LeaseHandles {
    /// 1 while this node may stamp.
    pub is_holder: IntGauge,
    /// The current tenure's token as known, 0 if unknown.
    pub token: IntGauge,
    transitions: [IntCounter; 3],
    /// Requests answered 503 `lease-unavailable`.
    pub unavailable: IntCounter,
    /// Backend errors, labelled with the backend's name.
    pub backend_errors: IntCounter,
    forwarded: IntCounterVec,
    lease: Box<str>,
}

impl LeaseHandles {
    /// Counts a change of role to `to`.
    pub fn transition(&self, to: Role) {
        let index = Role::ALL.iter().position(|r| *r == to).unwrap_or(0);
        if let Some(counter) = self.transitions.get(index) {
            counter.inc();
        }
    }

    /// Counts a request a follower passed on to the holder; `result` is one
    /// of a small fixed set chosen by the gate (e.g. `ok`, `error`).
    pub fn forwarded(&self, result: &str) {
        self.forwarded
            .with_label_values(&[&*self.lease, result])
            .inc();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    #[test]
    fn every_family_appears_once_handles_are_resolved() {
        let metrics = Metrics::new();
        let lease = LeaseMetrics::new(&metrics).unwrap();
        let handles = lease.handles("orders", "local");
        handles.forwarded("ok");
        let text = text(&metrics);
        for line in [
            r#"breakwater_lease_is_holder{lease="orders"} 0"#,
            r#"breakwater_lease_token{lease="orders"} 0"#,
            r#"breakwater_lease_transitions_total{lease="orders",to="holder"} 0"#,
            r#"breakwater_lease_transitions_total{lease="orders",to="follower"} 0"#,
            r#"breakwater_lease_transitions_total{lease="orders",to="unknown"} 0"#,
            r#"breakwater_lease_forwarded_total{lease="orders",result="ok"} 1"#,
            r#"breakwater_lease_unavailable_total{lease="orders"} 0"#,
            r#"breakwater_lease_backend_errors_total{backend="local",lease="orders"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn transitions_are_counted_by_target_role() {
        let metrics = Metrics::new();
        let handles = LeaseMetrics::new(&metrics).unwrap().handles("a", "etcd");
        handles.transition(Role::Follower);
        handles.transition(Role::Follower);
        handles.transition(Role::Unknown);
        let text = text(&metrics);
        assert!(text.contains(r#"breakwater_lease_transitions_total{lease="a",to="follower"} 2"#));
        assert!(text.contains(r#"breakwater_lease_transitions_total{lease="a",to="unknown"} 1"#));
        assert!(text.contains(r#"breakwater_lease_transitions_total{lease="a",to="holder"} 0"#));
    }

    #[test]
    fn separate_metrics_instances_do_not_share_families() {
        let (one, two) = (Metrics::new(), Metrics::new());
        LeaseMetrics::new(&one)
            .unwrap()
            .handles("a", "local")
            .unavailable
            .inc();
        LeaseMetrics::new(&two).unwrap().handles("a", "local");
        assert!(text(&one).contains(r#"breakwater_lease_unavailable_total{lease="a"} 1"#));
        assert!(text(&two).contains(r#"breakwater_lease_unavailable_total{lease="a"} 0"#));
    }

    #[test]
    fn registering_again_replaces_the_families_and_keeps_counts() {
        let metrics = Metrics::new();
        let first = LeaseMetrics::new(&metrics).unwrap().handles("a", "local");
        first.unavailable.inc_by(3);
        first.backend_errors.inc();
        first.forwarded("error");
        first.transition(Role::Holder);
        first.is_holder.set(1);
        let second = LeaseMetrics::new(&metrics).unwrap().handles("a", "local");
        second.unavailable.inc();
        let text = text(&metrics);
        assert!(
            text.contains(r#"breakwater_lease_unavailable_total{lease="a"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"breakwater_lease_backend_errors_total{backend="local",lease="a"} 1"#)
        );
        assert!(text.contains(r#"breakwater_lease_forwarded_total{lease="a",result="error"} 1"#));
        assert!(text.contains(r#"breakwater_lease_transitions_total{lease="a",to="holder"} 1"#));
        // Gauges describe the present: the new lease sets them afresh.
        assert!(text.contains(r#"breakwater_lease_is_holder{lease="a"} 0"#));
        assert_eq!(
            text.matches("# TYPE breakwater_lease_unavailable_total")
                .count(),
            1
        );
    }

    #[test]
    fn a_name_taken_with_other_labels_is_an_error() {
        let metrics = Metrics::new();
        let clash = IntGaugeVec::new(Opts::new("breakwater_lease_token", "x"), &["other"]).unwrap();
        metrics.registry().register(Box::new(clash)).unwrap();
        let err = LeaseMetrics::new(&metrics).err().unwrap();
        assert!(err.contains("breakwater_lease_token"), "{err}");
    }
}
