//! The messages of the peer protocol (LEASES.md §3.2) and their wire form.
//!
//! Every lease message travels in an [`Envelope`] naming its lease; the
//! sender (`from`) is not in the message but is the peer's authenticated
//! mTLS identity, supplied by the transport. Durations are remaining
//! milliseconds, never instants: clocks are not shared.
//!
//! Who handles what: [`Prepare`](Message::Prepare),
//! [`Propose`](Message::Propose), [`Release`](Message::Release),
//! [`Sync`](Message::Sync) and [`SyncReply`](Message::SyncReply) are for the
//! acceptor; [`Promise`](Message::Promise), [`Accepted`](Message::Accepted),
//! [`Nack`](Message::Nack), [`Learn`](Message::Learn) and `Release` are for
//! the proposer. Each machine ignores what is not its own, so a driver may
//! hand every message to both.
//!
//! The codec ([`encode`], [`decode`]) is in [`codec`].

pub mod codec;
#[cfg(test)]
mod tests;

pub use codec::{decode, encode, DecodeError, EncodeError};

use super::ballot::Ballot;
use super::Millis;

/// The wire format version, the first byte of every encoded envelope.
pub const WIRE_VERSION: u8 = 1;

/// The longest string field (lease name, node id, URL), in bytes.
pub const MAX_STRING: usize = 1024;

/// The longest encoded envelope, in bytes (the transport's frame limit).
pub const MAX_ENCODED: usize = 64 * 1024;

/// Where followers send this node's traffic (`cluster.forward_url`,
/// `cluster.public_url`), as text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Urls {
    /// For `on_follower: forward`.
    pub forward: Option<String>,
    /// For `on_follower: redirect`.
    pub public: Option<String>,
}

/// A live grant as an acceptor reports it in a `Promise`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrantInfo {
    /// The holder's node id.
    pub owner: String,
    /// The tenure's fencing token.
    pub token: u64,
    /// The ballot of the round that last set the grant.
    pub ballot: Ballot,
    /// How long the acceptor keeps it, by its clock.
    pub remaining_ms: Millis,
    /// Where the holder takes traffic.
    pub urls: Urls,
}

/// The live grant that made an acceptor refuse (`Nack`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Held {
    /// The holder's node id.
    pub owner: String,
    /// The tenure's fencing token.
    pub token: u64,
    /// How long the acceptor keeps it, by its clock.
    pub remaining_ms: Millis,
}

/// One protocol message about one lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// Phase 1 request, proposer → all.
    Prepare { ballot: Ballot, ttl_ms: Millis },
    /// Phase 1 answer: the acceptor promised `ballot` and reports its live
    /// grant, if any.
    Promise {
        ballot: Ballot,
        grant: Option<GrantInfo>,
    },
    /// Phase 2 request, proposer → all: grant `owner` tenure `token` for
    /// `ttl_ms` from receipt.
    Propose {
        ballot: Ballot,
        owner: String,
        token: u64,
        ttl_ms: Millis,
        urls: Urls,
    },
    /// Phase 2 answer: granted.
    Accepted { ballot: Ballot },
    /// Refusal of `ballot` (either phase): the acceptor promised
    /// `promised`, or holds another tenure's live grant (`held`).
    Nack {
        ballot: Ballot,
        promised: Ballot,
        held: Option<Held>,
    },
    /// Holder → all: forget the grant of exactly this tenure.
    Release { owner: String, token: u64 },
    /// Holder → all, advisory: who holds, for followers' forwarding.
    Learn {
        owner: String,
        token: u64,
        remaining_ms: Millis,
        urls: Urls,
    },
    /// Amnesiac acceptor → all: report your durable state.
    Sync,
    /// Answer to `Sync`: the sender's durable state, and whether it is
    /// itself amnesiac (still recovering, its state incomplete).
    SyncReply {
        promised: Ballot,
        max_ttl_ms: Millis,
        amnesiac: bool,
    },
}

impl Message {
    /// The message's name, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Propose { .. } => "propose",
            Message::Accepted { .. } => "accepted",
            Message::Nack { .. } => "nack",
            Message::Release { .. } => "release",
            Message::Learn { .. } => "learn",
            Message::Sync => "sync",
            Message::SyncReply { .. } => "sync_reply",
        }
    }
}

/// The first message on a peer connection, each way (§3.8): a peer whose
/// member list differs (`members_digest`) is closed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hello {
    /// The sender's `cluster.node_id` (must match its certificate).
    pub node_id: String,
    /// [`super::members::Members::digest`] of the sender's member list.
    pub members_digest: u64,
    /// The sender's protocol version.
    pub version: u16,
}

/// What one frame carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Envelope {
    /// Connection set-up.
    Hello(Hello),
    /// A message about lease `lease`.
    Lease { lease: String, message: Message },
}
