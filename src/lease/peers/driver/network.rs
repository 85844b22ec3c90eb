//! The one peer transport of a process, shared by all its `peers` leases:
//! mutual TLS from `cluster.tls`, accepting on `cluster.listen`, dialling
//! `cluster.peers`; and the demultiplexer that decodes each frame and hands
//! it to the task of the lease it names.
//!
//! Nothing here waits on a lease task: a lease whose queue is full loses
//! the message (the protocol treats that as a lost message), counted as
//! `breakwater_peer_messages_total{direction="received",result="dropped"}`
//! on top of the transport's `ok` for the frame. A frame that does not
//! decode, or names a lease this node does not run, is counted and dropped
//! the same way (`malformed`, `dropped`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use super::Inbound;
use crate::config::{ClusterSpec, PeerTls};
use crate::lease::peers::messages::{self, Envelope};
use crate::lease::peers::transport::{
    Direction, Network, Options, Outcome, PeerMetrics, Received, Tcp, Transport, TransportConfig,
    TransportHandle, UNKNOWN_KIND,
};
use crate::tls::PeerTlsConfig;

/// Messages queued for one lease task, at most; more are dropped.
pub const LEASE_INBOX: usize = 256;

/// The longest shutdown waits for queued frames (a step-down's `Release`)
/// to leave before the transport closes.
const FLUSH_FOR: Duration = Duration::from_millis(500);

type Routes = Arc<Mutex<HashMap<String, mpsc::Sender<Inbound>>>>;

/// One lease's end of the transport: where it sends, and its messages.
pub struct Link {
    /// Sends to peers.
    pub transport: TransportHandle,
    /// The lease's decoded messages, with their senders' authenticated ids.
    pub inbox: mpsc::Receiver<Inbound>,
}

/// The running transport and demultiplexer.
pub struct PeerNetwork {
    transport: TransportHandle,
    routes: Routes,
    demux: JoinHandle<()>,
}

impl PeerNetwork {
    /// Loads `cluster.tls`, binds `cluster.listen` and starts the transport
    /// and the demultiplexer. Errors name the key or address at fault, and
    /// leave nothing running.
    pub async fn start(cluster: &ClusterSpec, metrics: PeerMetrics) -> Result<Self, String> {
        let spec = tls_spec(cluster)?;
        let Some(listen) = cluster.listen else {
            return Err("`backend: peers` needs `cluster.listen`".to_owned());
        };
        let tls = load_tls(spec, cluster)?;
        let listener = Tcp
            .bind(listen)
            .await
            .map_err(|e| format!("cannot bind cluster.listen {listen}: {e}"))?;
        Ok(Self::launch(
            cluster,
            tls,
            Tcp,
            listener,
            Options::default(),
            metrics,
        ))
    }

    /// As [`PeerNetwork::start`], over any [`Network`] (a simulated one, in
    /// `tests/lease_sim.rs`): accepts on `listener`, already bound by the
    /// caller (`cluster.listen` is not read), with transport `options` (a
    /// fixed `jitter_seed` makes a simulation replayable). Production uses
    /// `start`: TCP and [`Options::default`].
    pub fn start_on<N: Network>(
        cluster: &ClusterSpec,
        net: N,
        listener: N::Listener,
        options: Options,
        metrics: PeerMetrics,
    ) -> Result<Self, String> {
        let tls = load_tls(tls_spec(cluster)?, cluster)?;
        Ok(Self::launch(cluster, tls, net, listener, options, metrics))
    }

    fn launch<N: Network>(
        cluster: &ClusterSpec,
        tls: PeerTlsConfig,
        net: N,
        listener: N::Listener,
        options: Options,
        metrics: PeerMetrics,
    ) -> Self {
        let config = TransportConfig {
            me: cluster.node_id.clone(),
            peers: cluster.peers.clone(),
            tls: Arc::new(tls),
            options,
        };
        let (transport, frames) = Transport::start(config, net, listener, metrics.clone());
        if let Some(addr) = transport.local_addr() {
            tracing::info!(%addr, node = %cluster.node_id, "peer transport listening");
        }
        let routes = Routes::default();
        let demux = tokio::spawn(demux(frames, routes.clone(), metrics));
        Self {
            transport,
            routes,
            demux,
        }
    }

    /// Opens lease `lease`'s end: from now on its messages go to the
    /// returned inbox (earlier ones were dropped, as lost messages are).
    pub fn link(&self, lease: &str) -> Link {
        let (tx, inbox) = mpsc::channel(LEASE_INBOX);
        lock(&self.routes).insert(lease.to_owned(), tx);
        Link {
            transport: self.transport.clone(),
            inbox,
        }
    }

    /// The transport, for its state (reachability) and address.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// Stops the transport and the demultiplexer, after giving frames
    /// already queued (the leases' `Release`s) a bounded moment to be
    /// written to the peers that are connected.
    pub async fn shutdown(&self) {
        let _ = tokio::time::timeout(FLUSH_FOR, async {
            while self
                .transport
                .reachability()
                .iter()
                .any(|p| p.connected && p.queued > 0)
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        self.transport.shutdown().await;
        self.demux.abort();
        lock(&self.routes).clear();
    }
}

impl Drop for PeerNetwork {
    fn drop(&mut self) {
        self.demux.abort();
    }
}

/// `cluster.tls`, which a `peers` lease needs.
fn tls_spec(cluster: &ClusterSpec) -> Result<&PeerTls, String> {
    cluster
        .tls
        .as_ref()
        .ok_or_else(|| "`backend: peers` needs `cluster.tls`".to_owned())
}

/// `cluster.tls`'s files, loaded for this node and its peers.
fn load_tls(spec: &PeerTls, cluster: &ClusterSpec) -> Result<PeerTlsConfig, String> {
    let ids: Vec<String> = cluster.peers.iter().map(|p| p.id.clone()).collect();
    PeerTlsConfig::load(spec, &cluster.node_id, &ids)
        .map_err(|e| format!("cluster.tls.{}: {e}", e.which.key()))
}

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Inbound>>> {
    // Every update is one insert or clear: a panic cannot leave it torn.
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decodes every frame and passes it to its lease's task.
async fn demux(mut frames: mpsc::Receiver<Received>, routes: Routes, metrics: PeerMetrics) {
    while let Some((from, bytes)) = frames.recv().await {
        route(&routes, &metrics, from, &bytes);
    }
}

/// One frame: decoded and queued for its lease, or counted and dropped.
fn route(routes: &Routes, metrics: &PeerMetrics, from: String, bytes: &[u8]) {
    let (lease, message) = match messages::decode(bytes) {
        Ok(Envelope::Lease { lease, message }) => (lease, message),
        Ok(Envelope::Hello(_)) | Err(_) => {
            metrics.message(&from, Direction::Received, UNKNOWN_KIND, Outcome::Malformed);
            return;
        }
    };
    let kind = message.kind();
    let sender = lock(routes).get(&lease).cloned();
    let Some(sender) = sender else {
        tracing::debug!(peer = %from, lease = %lease, "message for a lease this node does not run");
        metrics.message(&from, Direction::Received, kind, Outcome::Dropped);
        return;
    };
    match sender.try_send((from, message)) {
        Ok(()) => {}
        Err(TrySendError::Full((from, _)) | TrySendError::Closed((from, _))) => {
            metrics.message(&from, Direction::Received, kind, Outcome::Dropped);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::lease::peers::ballot::Ballot;
    use crate::lease::peers::messages::{Hello, Message};
    use crate::metrics::Metrics;

    fn count(metrics: &Metrics, labels: &str) -> f64 {
        let text = String::from_utf8(metrics.render()).unwrap();
        let line = format!("breakwater_peer_messages_total{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    fn frame(lease: &str, message: Message) -> Vec<u8> {
        messages::encode(&Envelope::Lease {
            lease: lease.into(),
            message,
        })
        .unwrap()
    }

    #[test]
    fn frames_go_to_their_lease_and_the_rest_is_counted_and_dropped() {
        let registry = Metrics::new();
        let metrics = PeerMetrics::new(&registry).unwrap();
        let routes = Routes::default();
        let (tx, mut orders) = mpsc::channel(1);
        lock(&routes).insert("orders".into(), tx);
        let prepare = Message::Prepare {
            ballot: Ballot::new(7, 1).unwrap(),
            ttl_ms: 2_000,
        };

        route(
            &routes,
            &metrics,
            "b".into(),
            &frame("orders", prepare.clone()),
        );
        assert_eq!(orders.try_recv().unwrap(), ("b".into(), prepare.clone()));

        // Full: the second one is dropped, not waited for.
        route(
            &routes,
            &metrics,
            "b".into(),
            &frame("orders", prepare.clone()),
        );
        route(
            &routes,
            &metrics,
            "c".into(),
            &frame("orders", prepare.clone()),
        );
        assert_eq!(orders.try_recv().unwrap().0, "b");
        assert!(orders.try_recv().is_err());
        let dropped = r#"direction="received",peer="c",result="dropped",type="prepare""#;
        assert_eq!(count(&registry, dropped), 1.0);

        route(
            &routes,
            &metrics,
            "c".into(),
            &frame("billing", Message::Sync),
        );
        let unknown = r#"direction="received",peer="c",result="dropped",type="sync""#;
        assert_eq!(count(&registry, unknown), 1.0);

        route(&routes, &metrics, "c".into(), b"\x01garbage");
        let hello = messages::encode(&Envelope::Hello(Hello {
            node_id: "c".into(),
            members_digest: 1,
            version: 1,
        }))
        .unwrap();
        route(&routes, &metrics, "c".into(), &hello);
        let malformed = r#"direction="received",peer="c",result="malformed",type="unknown""#;
        assert_eq!(count(&registry, malformed), 2.0);

        // A lease task that ended: dropped too.
        drop(orders);
        route(
            &routes,
            &metrics,
            "b".into(),
            &frame("orders", Message::Sync),
        );
        let closed = r#"direction="received",peer="b",result="dropped",type="sync""#;
        assert_eq!(count(&registry, closed), 1.0);
    }
}
