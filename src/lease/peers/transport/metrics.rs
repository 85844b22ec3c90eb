//! The peer transport's metric families, registered in the process's own
//! registry as the lease families are (see [`crate::lease::metrics`]): a
//! second registration in the same registry replaces the families and
//! carries the counters over, so they never go back; the round-trip
//! histogram starts afresh.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::metrics::Metrics;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the peer's connection, or handed to the driver.
    Ok,
    /// Lost to a full or stale queue, a failed write, or a full inbox.
    Dropped,
    /// Not a message (empty, or its type unknown to this version).
    Malformed,
    /// Longer than the frame limit.
    Oversized,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Dropped => "dropped",
            Outcome::Malformed => "malformed",
            Outcome::Oversized => "oversized",
        }
    }
}

/// The peer transport families of one registry; cloning is cheap.
#[derive(Clone)]
pub struct PeerMetrics {
    rtt: HistogramVec,
    messages: IntCounterVec,
    rejected: IntCounterVec,
    connected: IntGaugeVec,
    connect_errors: IntCounterVec,
    quorum: IntGauge,
    quorum_changes: IntCounterVec,
}

impl PeerMetrics {
    /// Creates the families and registers them in `metrics`' registry.
    /// Fails only if another family already uses one of these names with
    /// other labels.
    pub fn new(metrics: &Metrics) -> Result<Self, String> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition")
        };
        let families = Self {
            rtt: HistogramVec::new(
                HistogramOpts::new(
                    "breakwater_peer_rtt_seconds",
                    "Round trip to a peer over its connection (transport heartbeats).",
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ]),
                &["peer"],
            )
            .expect("static metric definition"),
            messages: counter(
                "breakwater_peer_messages_total",
                "Peer protocol messages by peer, direction (sent|received), message type and \
                 result (ok|dropped|malformed|oversized).",
                &["peer", "direction", "type", "result"],
            ),
            rejected: counter(
                "breakwater_peer_rejected_total",
                "Peer connections refused before or at the Hello exchange, by reason.",
                &["reason"],
            ),
            connected: IntGaugeVec::new(
                Opts::new(
                    "breakwater_peer_connected",
                    "1 while this node's connection to the peer is up, else 0.",
                ),
                &["peer"],
            )
            .expect("static metric definition"),
            connect_errors: counter(
                "breakwater_peer_connect_errors_total",
                "Failed attempts of this node to connect to a peer, by reason.",
                &["peer", "reason"],
            ),
            quorum: IntGauge::with_opts(Opts::new(
                "breakwater_peer_quorum",
                "1 while this node and the peers it is connected to are a majority of the \
                 members (it can take part in rounds), else 0.",
            ))
            .expect("static metric definition"),
            quorum_changes: counter(
                "breakwater_peer_quorum_changes_total",
                "Times this node lost or regained (first reached included) a connected majority.",
                &["to"],
            ),
        };
        families.register(metrics.registry())?;
        Ok(families)
    }

    /// Records a round trip to `peer`.
    pub fn rtt(&self, peer: &str, rtt: Duration) {
        self.rtt
            .with_label_values(&[peer])
            .observe(rtt.as_secs_f64());
    }

    /// Counts a message; the driver calls it too, e.g. for a frame whose
    /// payload does not decode (`Received`, `Malformed`).
    pub fn message(&self, peer: &str, direction: Direction, kind: &str, outcome: Outcome) {
        self.messages
            .with_label_values(&[peer, direction.as_str(), kind, outcome.as_str()])
            .inc();
    }

    /// Counts a refused peer connection.
    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a failed connection attempt to `peer`.
    pub fn connect_error(&self, peer: &str, reason: &str) {
        self.connect_errors.with_label_values(&[peer, reason]).inc();
    }

    /// Records whether this node reaches a majority now; counts a change.
    pub fn quorum(&self, reached: bool, changed: bool) {
        self.quorum.set(i64::from(reached));
        if changed {
            let to = if reached { "regained" } else { "lost" };
            self.quorum_changes.with_label_values(&[to]).inc();
        }
    }

    /// The connection gauge of `peer`, at 0 until set.
    pub fn connected(&self, peer: &str) -> IntGauge {
        self.connected.with_label_values(&[peer])
    }

    fn collectors(&self) -> [Box<dyn Collector>; 7] {
        [
            Box::new(self.rtt.clone()),
            Box::new(self.messages.clone()),
            Box::new(self.rejected.clone()),
            Box::new(self.connected.clone()),
            Box::new(self.connect_errors.clone()),
            Box::new(self.quorum.clone()),
            Box::new(self.quorum_changes.clone()),
        ]
    }

    fn counters(&self) -> [&IntCounterVec; 4] {
        [
            &self.messages,
            &self.rejected,
            &self.connect_errors,
            &self.quorum_changes,
        ]
    }

    fn register(&self, registry: &Registry) -> Result<(), String> {
        let carried = counter_values(registry);
        for collector in self.collectors() {
            let name = family_name(collector.as_ref());
            match registry.register(collector) {
                Ok(()) => {}
                Err(prometheus::Error::AlreadyReg) => {
                    // Equal descriptors are one collector to the registry,
                    // so this unregisters the earlier family.
                    let replaced = self
                        .collector_named(&name)
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
            let vec = self
                .counters()
                .into_iter()
                .find(|v| family_name(*v) == name);
            if let Some(counter) = vec.and_then(|v| v.get_metric_with(&labels).ok()) {
                counter.inc_by(value);
            }
        }
        Ok(())
    }

    fn collector_named(&self, name: &str) -> Option<Box<dyn Collector>> {
        self.collectors()
            .into_iter()
            .find(|c| family_name(c.as_ref()) == name)
    }
}

fn family_name(c: &dyn Collector) -> String {
    c.desc()
        .first()
        .map_or(String::new(), |d| d.fq_name.clone())
}

/// One counter series: `(family, (label, value) pairs, value)`.
type Sample = (String, Vec<(String, String)>, u64);

/// The current values of the peer counter families in `registry`.
fn counter_values(registry: &Registry) -> Vec<Sample> {
    let mut out = Vec::new();
    for family in registry.gather() {
        let name = family.name();
        if !name.starts_with("breakwater_peer_") || family.get_field_type() != MetricType::COUNTER {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    #[test]
    fn series_are_labelled_as_documented() {
        let metrics = Metrics::new();
        let peers = PeerMetrics::new(&metrics).unwrap();
        peers.message("b", Direction::Sent, "prepare", Outcome::Dropped);
        peers.rejected("unknown_peer");
        peers.connect_error("b", "timeout");
        peers.connected("b").set(1);
        peers.rtt("b", Duration::from_millis(3));
        let text = text(&metrics);
        for line in [
            r#"breakwater_peer_messages_total{direction="sent",peer="b",result="dropped",type="prepare"} 1"#,
            r#"breakwater_peer_rejected_total{reason="unknown_peer"} 1"#,
            r#"breakwater_peer_connect_errors_total{peer="b",reason="timeout"} 1"#,
            r#"breakwater_peer_connected{peer="b"} 1"#,
            r#"breakwater_peer_rtt_seconds_count{peer="b"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn registering_again_replaces_the_families_and_keeps_counts() {
        let metrics = Metrics::new();
        let first = PeerMetrics::new(&metrics).unwrap();
        first.rejected("not_tls");
        first.rejected("not_tls");
        let second = PeerMetrics::new(&metrics).unwrap();
        second.rejected("not_tls");
        let text = text(&metrics);
        assert!(
            text.contains(r#"breakwater_peer_rejected_total{reason="not_tls"} 3"#),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE breakwater_peer_rejected_total")
                .count(),
            1
        );
    }
}
