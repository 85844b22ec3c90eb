//! One task per peer: dial it (TCP, TLS, Hello, each bounded), then write
//! its queue and heartbeats until the connection fails, then dial again
//! after a backoff. Only this task waits on the peer; senders never do.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::frame::{read_frame, write_frame, FrameError};
use super::handshake::{exchange_hello, Refusal};
use super::metrics::{Direction, Outcome};
use super::network::Network;
use super::outbox::Backoff;
use super::{PeerState, Shared};
use crate::tls::{PeerStream, RejectReason};

/// Heartbeats sent and not yet echoed, at most; more means the peer reads
/// but does not answer, and the connection is dropped. `idle_timeout`
/// normally closes such a connection long before.
const MAX_UNECHOED: usize = 64;

/// Why a dial failed.
enum DialError {
    Connect,
    ConnectTimeout,
    Refused(Refusal),
}

impl DialError {
    fn as_str(&self) -> &'static str {
        match self {
            DialError::Connect => "connect_failed",
            DialError::ConnectTimeout => "connect_timeout",
            DialError::Refused(refusal) => refusal.as_str(),
        }
    }
}

/// Keeps the connection to `peer` up for as long as the transport runs.
pub(super) async fn run<N: Network>(
    shared: Arc<Shared>,
    peer: Arc<PeerState>,
    net: Arc<N>,
    seed: u64,
) {
    let options = &shared.options;
    let mut backoff = Backoff::new(options.backoff_first, options.backoff_cap, seed);
    // The last failure logged, so a peer that stays down is logged once.
    let mut last_failure: Option<&'static str> = None;
    loop {
        match dial(&shared, &peer, net.as_ref()).await {
            Ok(stream) => {
                last_failure = None;
                peer.set_connected(true);
                shared.connection_changed();
                tracing::info!(peer = %peer.id, address = %peer.address, "peer connected");
                let up = Instant::now();
                let why = serve(&shared, &peer, stream).await;
                peer.set_connected(false);
                shared.connection_changed();
                tracing::info!(peer = %peer.id, reason = why, "peer connection closed");
                // Only a connection that lasted restarts the backoff, so a
                // peer that takes connections and drops them is not
                // redialled in a tight loop.
                if up.elapsed() >= options.backoff_cap {
                    backoff.reset();
                }
            }
            Err(e) => {
                let reason = e.as_str();
                shared.metrics.connect_error(&peer.id, reason);
                if let DialError::Refused(refusal) = &e {
                    if refusal.is_ours() {
                        shared.metrics.rejected(reason);
                    }
                }
                if last_failure != Some(reason) {
                    tracing::warn!(peer = %peer.id, address = %peer.address, reason, "cannot connect to peer; retrying with backoff");
                    last_failure = Some(reason);
                }
            }
        }
        tokio::time::sleep(backoff.delay()).await;
    }
}

/// One connection attempt: TCP connect, then TLS and Hello, each bounded.
async fn dial<N: Network>(
    shared: &Shared,
    peer: &PeerState,
    net: &N,
) -> Result<PeerStream<N::Stream>, DialError> {
    let options = &shared.options;
    let tcp = match timeout(options.connect_timeout, net.connect(&peer.address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(_)) => return Err(DialError::Connect),
        Err(_) => return Err(DialError::ConnectTimeout),
    };
    let handshake = async {
        let mut stream = shared
            .tls
            .connect(tcp, &peer.id)
            .await
            .map_err(|e| Refusal::Tls(e.reason))?;
        exchange_hello(&mut stream, &shared.me, shared.digest, &peer.id).await?;
        Ok(stream)
    };
    match timeout(options.handshake_timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(refusal)) => Err(DialError::Refused(refusal)),
        Err(_) => Err(DialError::Refused(Refusal::Tls(RejectReason::Timeout))),
    }
}

/// Writes queued frames and heartbeats on an established connection, and
/// reads the echoes, until something fails; returns what did.
async fn serve<S>(shared: &Shared, peer: &PeerState, stream: PeerStream<S>) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let options = &shared.options;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let unechoed: Mutex<VecDeque<Instant>> = Mutex::new(VecDeque::new());
    let reader = async {
        loop {
            match timeout(options.idle_timeout, read_frame(&mut rd)).await {
                Err(_) => return "idle_timeout",
                Ok(Err(FrameError::Oversized(_))) => return "oversized_frame",
                Ok(Err(FrameError::Io(_))) => return "closed_by_peer",
                Ok(Ok(frame)) if frame.is_empty() => {
                    let sent = unechoed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front();
                    if let Some(sent) = sent {
                        let rtt = sent.elapsed();
                        shared.metrics.rtt(&peer.id, rtt);
                        peer.record_rtt(rtt);
                    }
                }
                // The acceptor of a connection only echoes heartbeats.
                Ok(Ok(_)) => return "unexpected_frame",
            }
        }
    };
    tokio::pin!(reader);
    let mut beat = tokio::time::interval(options.heartbeat_every);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            why = &mut reader => return why,
            _ = beat.tick() => {
                {
                    let mut unechoed = unechoed.lock().unwrap_or_else(|p| p.into_inner());
                    if unechoed.len() >= MAX_UNECHOED {
                        return "unresponsive";
                    }
                    unechoed.push_back(Instant::now());
                }
                if let Err(why) = write(&mut wr, &[], options.write_timeout).await {
                    return why;
                }
            }
            item = peer.outbox.pop() => {
                if item.since.elapsed() > options.max_age {
                    peer.outbox.finished();
                    shared.metrics.message(&peer.id, Direction::Sent, item.kind, Outcome::Dropped);
                    continue;
                }
                let written = write(&mut wr, &item.frame, options.write_timeout).await;
                peer.outbox.finished();
                let outcome = if written.is_ok() { Outcome::Ok } else { Outcome::Dropped };
                shared.metrics.message(&peer.id, Direction::Sent, item.kind, outcome);
                if let Err(why) = written {
                    return why;
                }
            }
        }
    }
}

/// Writes one frame within `limit`.
async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
    limit: Duration,
) -> Result<(), &'static str> {
    match timeout(limit, write_frame(w, payload)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write_failed"),
        Err(_) => Err("write_timeout"),
    }
}
