//! The accept loop and one task per accepted connection: TLS and Hello
//! within the handshake timeout, then frames read and handed to the driver
//! tagged with the certificate's id, heartbeats echoed.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::frame::{read_frame, write_frame, FrameError};
use super::handshake::{exchange_hello, Refusal};
use super::metrics::{Direction, Outcome};
use super::network::Listener;
use super::{PeerState, Received, Shared, UNKNOWN_KIND};
use crate::tls::{PeerStream, RejectReason};

/// After a failed accept (out of file descriptors, say), wait this long
/// rather than spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Accepts connections until the transport stops; dropping this future
/// (the task is aborted) aborts every connection task.
pub(super) async fn accept_loop<L: Listener>(
    shared: Arc<Shared>,
    mut listener: L,
    inbox: mpsc::Sender<Received>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if shared.log.allow() {
                    tracing::warn!(error = %e, "peer listener: accept failed");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = HandshakeSlot::take(&shared) else {
            refused(&shared, Refusal::TooManyHandshakes, from);
            continue;
        };
        connections.spawn(serve(shared.clone(), stream, from, inbox.clone(), slot));
    }
}

/// A place among the connections in their handshake; given back on drop.
struct HandshakeSlot(Arc<Shared>);

impl HandshakeSlot {
    fn take(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.options.max_handshakes;
        shared
            .handshakes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(shared.clone()))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One accepted connection, from handshake to close.
async fn serve<S>(
    shared: Arc<Shared>,
    io: S,
    from: SocketAddr,
    inbox: mpsc::Sender<Received>,
    slot: HandshakeSlot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let authenticated = timeout(shared.options.handshake_timeout, authenticate(&shared, io))
        .await
        .unwrap_or(Err(Refusal::Tls(RejectReason::Timeout)));
    drop(slot);
    let (mut stream, peer, mine) = match authenticated {
        Ok(ok) => ok,
        Err(refusal) => return refused(&shared, refusal, from),
    };
    let _open = InboundGuard::new(&peer);
    let mut superseded = peer.inbound_generation.subscribe();
    loop {
        let frame = tokio::select! {
            read = timeout(shared.options.idle_timeout, read_frame(&mut stream)) => read,
            // The peer has dialled again: this connection is stale. Waits
            // forever, rather than fail, if the sender is gone.
            _ = newer(&mut superseded, mine) => return,
        };
        let frame = match frame {
            Ok(Ok(frame)) => frame,
            Ok(Err(FrameError::Oversized(len))) => {
                shared.metrics.message(
                    &peer.id,
                    Direction::Received,
                    UNKNOWN_KIND,
                    Outcome::Oversized,
                );
                tracing::warn!(peer = %peer.id, len, "peer sent an oversized frame; connection closed");
                return;
            }
            // Closed, failed, or silent past the idle timeout.
            Ok(Err(FrameError::Io(_))) | Err(_) => return,
        };
        if frame.is_empty() {
            let echo = timeout(shared.options.write_timeout, write_frame(&mut stream, &[])).await;
            if !matches!(echo, Ok(Ok(()))) {
                return;
            }
            continue;
        }
        if !deliver(&shared, &peer, &inbox, frame) {
            return;
        }
    }
}

/// TLS, then the peer's state, then the Hello; returns the stream, the
/// peer and the generation of this connection among the peer's.
async fn authenticate<S>(
    shared: &Shared,
    io: S,
) -> Result<(PeerStream<S>, Arc<PeerState>, u64), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut stream, id) = shared
        .tls
        .accept(io)
        .await
        .map_err(|e| Refusal::Tls(e.reason))?;
    // The TLS config may accept ids the transport was not given.
    let peer = shared
        .peers
        .get(&id)
        .cloned()
        .ok_or(Refusal::Tls(RejectReason::UnknownPeer))?;
    exchange_hello(&mut stream, &shared.me, shared.digest, &peer.id).await?;
    let mut generation = 0;
    peer.inbound_generation.send_modify(|g| {
        *g += 1;
        generation = *g;
    });
    Ok((stream, peer, generation))
}

/// Hands a frame to the driver, tagged with the authenticated id; false
/// when the driver is gone.
fn deliver(
    shared: &Shared,
    peer: &PeerState,
    inbox: &mpsc::Sender<Received>,
    frame: Vec<u8>,
) -> bool {
    let count = |kind, outcome| {
        shared
            .metrics
            .message(&peer.id, Direction::Received, kind, outcome);
    };
    let Some(kind) = (shared.options.classify)(&frame) else {
        count(UNKNOWN_KIND, Outcome::Malformed);
        return true;
    };
    match inbox.try_send((peer.id.clone(), frame)) {
        Ok(()) => count(kind, Outcome::Ok),
        Err(TrySendError::Full(_)) => count(kind, Outcome::Dropped),
        Err(TrySendError::Closed(_)) => return false,
    }
    true
}

/// Resolves once a connection newer than generation `mine` exists.
async fn newer(generation: &mut tokio::sync::watch::Receiver<u64>, mine: u64) {
    if generation.wait_for(|g| *g != mine).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Counts (and, at a bounded rate, logs) a refused connection.
fn refused(shared: &Shared, refusal: Refusal, from: SocketAddr) {
    shared.metrics.rejected(refusal.as_str());
    if shared.log.allow() {
        tracing::warn!(%from, reason = refusal.as_str(), "peer connection refused");
    } else {
        tracing::debug!(%from, reason = refusal.as_str(), "peer connection refused");
    }
}

/// Marks an authenticated connection from the peer as open.
struct InboundGuard<'a>(&'a PeerState);

impl<'a> InboundGuard<'a> {
    fn new(peer: &'a PeerState) -> Self {
        peer.inbound.fetch_add(1, Ordering::Relaxed);
        Self(peer)
    }
}

impl Drop for InboundGuard<'_> {
    fn drop(&mut self) {
        self.0.inbound.fetch_sub(1, Ordering::Relaxed);
    }
}
