//! The peer transport (LEASES.md §3.8): carries frames, one encoded
//! [`Envelope`] each, between this node and the other members over mutual
//! TLS. The driver sends and receives bytes and does the decoding; it sees
//! `(authenticated peer id, bytes)`. The transport looks inside a frame only
//! to check the Hello and to name the message type for the counters
//! ([`Options::classify`], which also drops what is not a message).
//!
//! - [`network`]: TCP, or any network with streams (a simulation).
//! - [`frame`]: `u32` length-prefixed frames (≤ 64 KiB) and heartbeats.
//! - `handshake`: the `Hello` each side sends first (the codec's, from
//!   [`super::messages`]) and the reasons a connection is refused.
//! - `outbox`: the bounded per-peer queue and the reconnect backoff.
//! - `peer`: one peer's shared state and its [`PeerStatus`].
//! - [`metrics`]: the `breakwater_peer_*` families.
//! - `link`: one task per peer dials it and writes its queue.
//! - `inbound`: the accept loop and one reading task per connection.
//!
//! Each direction has its own connection: a node writes its messages on
//! the connection it dialled, and reads the others' messages from those it
//! accepted (where it writes only heartbeat echoes). Both nodes dialling each
//! other is the normal case, not a race to resolve. After TLS, each side
//! sends a `Hello {version, node_id, members_digest}`; any mismatch (the id
//! must be the certificate's) closes the connection and counts a rejection.
//! Frames handed up are tagged with the certificate's id, never with
//! anything the payload says.
//!
//! Nothing waits on a peer: [`TransportHandle::send`] queues (dropping the
//! oldest frame of a full queue) and returns; every connect, handshake and
//! write has a timeout; a peer whose connection fails is redialled with
//! exponential backoff and jitter. Heartbeats every `heartbeat_every`,
//! echoed by the acceptor, measure the round trip and find dead
//! connections (no echo within `idle_timeout`).

pub mod frame;
mod handshake;
mod inbound;
mod link;
pub mod metrics;
pub mod network;
mod outbox;
mod peer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::messages::{self, Envelope};
use crate::config::Peer;
use crate::tls::PeerTlsConfig;

pub use frame::MAX_FRAME;
pub use handshake::{Refusal, PROTOCOL_VERSION};
pub use metrics::{Direction, Outcome, PeerMetrics};
pub use network::{Listener, Network, Tcp};
pub use peer::PeerStatus;

use peer::PeerState;

/// A frame handed up to the driver: the sender's authenticated id and the
/// payload.
pub type Received = (String, Vec<u8>);

/// The type label of frames whose payload the transport cannot classify.
pub const UNKNOWN_KIND: &str = "unknown";

/// Tuning of the transport; [`Options::default`] is what production uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frames queued per peer; when full, the oldest is dropped.
    pub queue: usize,
    /// A queued frame older than this is dropped rather than sent: the
    /// round it belonged to is over (rounds last at most 2 s).
    pub max_age: Duration,
    /// Bound on a TCP connect.
    pub connect_timeout: Duration,
    /// Bound on TLS and the Hello exchange, either side.
    pub handshake_timeout: Duration,
    /// Bound on writing one frame; a peer that does not read is cut off.
    pub write_timeout: Duration,
    /// How often a dialled connection sends a heartbeat.
    pub heartbeat_every: Duration,
    /// A connection silent this long (no frame, no heartbeat) is closed.
    pub idle_timeout: Duration,
    /// First reconnect delay; it doubles up to `backoff_cap`, with jitter.
    pub backoff_first: Duration,
    /// Longest reconnect delay; also how long a connection must have
    /// lasted for the next failure to start again from `backoff_first`.
    pub backoff_cap: Duration,
    /// Frames waiting for the driver; beyond that, received frames are
    /// dropped (and counted) rather than stall the readers.
    pub inbox: usize,
    /// Connections accepted but not yet authenticated, at most; more are
    /// closed at once.
    pub max_handshakes: usize,
    /// The message type of a payload, for the counters; `None` when it is
    /// not a message this build knows: it is then counted as malformed and
    /// dropped, sent or received. Default [`message_kind`]; [`opaque`]
    /// passes anything.
    pub classify: fn(&[u8]) -> Option<&'static str>,
    /// Seed of the backoff jitter (per peer, mixed with its id), for
    /// reproducible simulations; `None` draws one at random.
    pub jitter_seed: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            queue: 64,
            max_age: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            heartbeat_every: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            backoff_first: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(2),
            inbox: 1024,
            max_handshakes: 32,
            classify: message_kind,
            jitter_seed: None,
        }
    }
}

/// The type of a lease message ([`messages::Message::kind`]); `None` for anything
/// that does not decode, and for a Hello after the handshake.
pub fn message_kind(payload: &[u8]) -> Option<&'static str> {
    match messages::decode(payload) {
        Ok(Envelope::Lease { message, .. }) => Some(message.kind()),
        Ok(Envelope::Hello(_)) | Err(_) => None,
    }
}

/// Takes every payload as a message of type `frame` (tests, benchmarks).
pub fn opaque(_payload: &[u8]) -> Option<&'static str> {
    Some("frame")
}

/// What the transport needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id (`cluster.node_id`).
    pub me: String,
    /// The other members (`cluster.peers`); an entry for `me` is ignored.
    pub peers: Vec<Peer>,
    /// Mutual TLS, loaded for `me` and these peers.
    pub tls: Arc<PeerTlsConfig>,
    /// Timeouts, bounds and the classifier; the defaults outside tests.
    pub options: Options,
}

/// Starts the transport.
pub struct Transport;

impl Transport {
    /// Starts accepting on `listener` (bound by the caller, so a bind error
    /// is the caller's to report) and one dialling task per peer. Frames
    /// from peers arrive on the returned receiver. Must run inside a tokio
    /// runtime; everything stops on [`TransportHandle::shutdown`] or when
    /// the last handle is dropped.
    pub fn start<N: Network>(
        config: TransportConfig,
        net: N,
        listener: N::Listener,
        metrics: PeerMetrics,
    ) -> (TransportHandle, mpsc::Receiver<Received>) {
        let TransportConfig {
            me,
            peers,
            tls,
            options,
        } = config;
        let ids: Vec<String> = peers
            .iter()
            .map(|p| p.id.clone())
            .filter(|id| *id != me)
            .chain(std::iter::once(me.clone()))
            .collect();
        // The digest the state file carries too (`Members::digest`).
        let digest = super::state::members_digest(&ids);
        let seed = options.jitter_seed.unwrap_or_else(random_seed);
        let peers: BTreeMap<String, Arc<PeerState>> = peers
            .into_iter()
            .filter(|p| p.id != me)
            .map(|p| {
                let state = PeerState::new(&p, &options, &metrics);
                (p.id, Arc::new(state))
            })
            .collect();
        let (tx, rx) = mpsc::channel(options.inbox.max(1));
        let local_addr = listener.local_addr().ok();
        let shared = Arc::new(Shared {
            me,
            digest,
            tls,
            options,
            peers,
            metrics,
            handshakes: AtomicUsize::new(0),
            log: LogGate::default(),
            quorum: Mutex::new(None),
        });
        // A lone member is its own majority from the start.
        shared.connection_changed();
        let net = Arc::new(net);
        let mut tasks = vec![tokio::spawn(inbound::accept_loop(
            shared.clone(),
            listener,
            tx,
        ))];
        for peer in shared.peers.values() {
            let seed = seed ^ super::state::members_digest(std::slice::from_ref(&peer.id));
            tasks.push(tokio::spawn(link::run(
                shared.clone(),
                peer.clone(),
                net.clone(),
                seed,
            )));
        }
        let handle = TransportHandle {
            shared,
            tasks: Arc::new(Tasks(Mutex::new(tasks))),
            local_addr,
        };
        (handle, rx)
    }
}

/// Sends frames to peers and reports on them; cloning is cheap.
#[derive(Clone)]
pub struct TransportHandle {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
    local_addr: Option<SocketAddr>,
}

impl TransportHandle {
    /// Queues `frame` (one encoded envelope) for peer `to` and returns at
    /// once. Dropped: a frame for no member (this node included: the driver
    /// delivers its own messages); dropped and counted: an oversized frame,
    /// one that `classify` refuses or is empty, and the oldest frame of a
    /// full queue.
    pub fn send(&self, to: &str, frame: Vec<u8>) {
        let Some(peer) = self.shared.peers.get(to) else {
            tracing::debug!(peer = to, "frame for a node that is not a peer dropped");
            return;
        };
        let checked = self.check(frame);
        self.shared.enqueue(peer, checked);
    }

    /// Queues `frame` for every peer; see [`TransportHandle::send`].
    pub fn broadcast(&self, frame: Vec<u8>) {
        let checked = self.check(frame);
        for peer in self.shared.peers.values() {
            self.shared.enqueue(peer, checked.clone());
        }
    }

    /// The frame ready to queue, or why it may not be sent; with its type.
    fn check(&self, frame: Vec<u8>) -> Checked {
        if frame.len() > MAX_FRAME {
            return Err((Outcome::Oversized, UNKNOWN_KIND));
        }
        // An empty frame is a heartbeat on the wire.
        match (self.shared.options.classify)(&frame).filter(|_| !frame.is_empty()) {
            Some(kind) => Ok((Bytes::from(frame), kind)),
            None => Err((Outcome::Malformed, UNKNOWN_KIND)),
        }
    }

    /// Every peer's state, sorted by id.
    pub fn reachability(&self) -> Vec<PeerStatus> {
        self.shared.peers.values().map(|p| p.status()).collect()
    }

    /// The address the transport accepts on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.shared.me
    }

    /// The digest of the member list this node announces in its Hello.
    pub fn members_digest(&self) -> u64 {
        self.shared.digest
    }

    /// The metric families, for the driver's own counts (a payload that
    /// does not decode, say).
    pub fn metrics(&self) -> &PeerMetrics {
        &self.shared.metrics
    }

    /// Stops every task and closes the listener and all connections; the
    /// receiver then ends once the last reader is gone. Returns when the
    /// listener is closed (its address can be bound again).
    pub async fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.0.lock().unwrap_or_else(|p| p.into_inner()));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        for peer in self.shared.peers.values() {
            peer.set_connected(false);
        }
        // Not a loss: the node is going away (the gauge reads 0 again).
        self.shared.metrics.quorum(false, false);
    }
}

/// A frame checked for sending and its type, or what to count instead.
type Checked = Result<(Bytes, &'static str), (Outcome, &'static str)>;

/// The running tasks; aborted when the last handle goes.
struct Tasks(Mutex<Vec<JoinHandle<()>>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in self
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// What every task of one transport shares.
struct Shared {
    me: String,
    digest: u64,
    tls: Arc<PeerTlsConfig>,
    options: Options,
    peers: BTreeMap<String, Arc<PeerState>>,
    metrics: PeerMetrics,
    /// Accepted connections still in TLS or Hello.
    handshakes: AtomicUsize,
    log: LogGate,
    /// Whether this node and the peers it is connected to were a majority
    /// when last looked at; `None` before the first look.
    quorum: Mutex<Option<bool>>,
}

impl Shared {
    /// Called after a connection to a peer came up or went down: whether
    /// this node still reaches a majority of the members (itself and the
    /// peers its connections to are up), logged and counted when that
    /// changes. Without it no round can succeed, here or at a node that
    /// needs this one's vote.
    fn connection_changed(&self) {
        let members = self.peers.len() + 1;
        let up = 1 + self.peers.values().filter(|p| p.status().connected).count();
        let reached = up > members / 2;
        let mut last = self.quorum.lock().unwrap_or_else(|p| p.into_inner());
        let changed = *last != Some(reached) && (last.is_some() || reached);
        *last = Some(reached);
        drop(last);
        self.metrics.quorum(reached, changed);
        if changed && reached {
            tracing::info!(
                connected = up,
                members,
                "peer quorum reached: a majority is connected"
            );
        } else if changed {
            tracing::warn!(
                connected = up,
                members,
                "peer quorum lost: fewer than a majority connected"
            );
        }
    }

    /// Queues a checked frame for `peer`, or counts why not.
    fn enqueue(&self, peer: &PeerState, checked: Checked) {
        let (frame, kind) = match checked {
            Ok(ready) => ready,
            Err((outcome, kind)) => {
                self.metrics
                    .message(&peer.id, Direction::Sent, kind, outcome);
                return;
            }
        };
        let item = outbox::Queued {
            frame,
            kind,
            since: Instant::now(),
        };
        if let Some(evicted) = peer.outbox.push(item) {
            self.metrics
                .message(&peer.id, Direction::Sent, evicted.kind, Outcome::Dropped);
        }
    }
}

/// Lets a warning about refused connections through at most once per
/// [`LogGate::EVERY`]; the metrics count every one.
#[derive(Default)]
struct LogGate {
    last: Mutex<Option<Instant>>,
}

impl LogGate {
    const EVERY: Duration = Duration::from_secs(10);

    fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Self::EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// A jitter seed from the system's random source (the clock if that fails).
fn random_seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_be_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos())),
    }
}
