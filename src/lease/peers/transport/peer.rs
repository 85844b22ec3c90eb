//! One peer as the transport's tasks share it: its queue, whether its
//! connections are up, its last round trip; and the snapshot of that the
//! driver shows on `/leases/NAME`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;

use super::metrics::PeerMetrics;
use super::outbox::Outbox;
use super::Options;
use crate::config::Peer;

/// How one peer looks from here, for `/leases/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its node id.
    pub id: String,
    /// Where this node dials it (`cluster.peers[].address`).
    pub address: String,
    /// This node's connection to the peer is up (Hello exchanged).
    pub connected: bool,
    /// The peer's connection to this node is up.
    pub inbound: bool,
    /// The last heartbeat round trip, if any.
    pub last_rtt: Option<Duration>,
    /// Frames waiting to be sent to it, or being written.
    pub queued: usize,
}

/// One peer as the tasks see it.
pub(super) struct PeerState {
    pub id: String,
    pub address: String,
    pub outbox: Outbox,
    connected: AtomicBool,
    connected_gauge: IntGauge,
    /// Authenticated connections from the peer that are open.
    pub inbound: AtomicUsize,
    /// Bumped by each new authenticated connection from the peer: the
    /// newest wins, since a peer has one dialled connection at a time, and
    /// an older one is left over from before a restart or a partition.
    pub inbound_generation: watch::Sender<u64>,
    /// The last round trip in microseconds plus one; 0 before the first.
    last_rtt: AtomicU64,
}

impl PeerState {
    /// The state of `peer` before any connection; its gauge reads 0.
    pub fn new(peer: &Peer, options: &Options, metrics: &PeerMetrics) -> Self {
        let connected_gauge = metrics.connected(&peer.id);
        connected_gauge.set(0);
        Self {
            id: peer.id.clone(),
            address: peer.address.clone(),
            outbox: Outbox::new(options.queue),
            connected: AtomicBool::new(false),
            connected_gauge,
            inbound: AtomicUsize::new(0),
            inbound_generation: watch::Sender::new(0),
            last_rtt: AtomicU64::new(0),
        }
    }

    /// Marks this node's connection to the peer up or down.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.connected_gauge.set(i64::from(up));
    }

    /// Keeps the latest round trip for [`PeerState::status`].
    pub fn record_rtt(&self, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX - 1);
        self.last_rtt.store(micros + 1, Ordering::Relaxed);
    }

    /// A snapshot for `/leases/NAME`.
    pub fn status(&self) -> PeerStatus {
        let rtt = self.last_rtt.load(Ordering::Relaxed);
        PeerStatus {
            id: self.id.clone(),
            address: self.address.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            inbound: self.inbound.load(Ordering::Relaxed) > 0,
            last_rtt: rtt.checked_sub(1).map(Duration::from_micros),
            queued: self.outbox.unfinished(),
        }
    }
}
