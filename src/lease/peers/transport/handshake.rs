//! The Hello exchange after TLS, the same on both sides, and the reasons a
//! connection is refused before it carries messages. The Hello is the
//! codec's ([`messages::Hello`]); this is the one place the transport looks
//! inside a frame.

use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{read_frame, write_frame, FrameError};
use crate::lease::peers::messages::{self, DecodeError, Envelope, Hello};
use crate::tls::{PeerRejected, RejectReason};

/// The peer protocol version this build speaks, sent in its Hello; a peer
/// announcing another is refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// Why a peer connection was refused or failed before carrying messages;
/// the `reason` label of the rejection and connect-error counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In TLS: see [`RejectReason`] (its `Timeout` covers the Hello too).
    Tls(RejectReason),
    /// The first frame was not a Hello.
    HelloMalformed,
    /// A Hello of another wire or protocol version.
    HelloVersion,
    /// The Hello names another node than the certificate.
    HelloIdentity,
    /// The peer's member list differs from ours.
    HelloMembers,
    /// Too many connections were in their handshake at once.
    TooManyHandshakes,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Tls(reason) => reason.as_str(),
            Refusal::HelloMalformed => "hello_malformed",
            Refusal::HelloVersion => "hello_version",
            Refusal::HelloIdentity => "hello_identity",
            Refusal::HelloMembers => "hello_members",
            Refusal::TooManyHandshakes => "too_many_handshakes",
        }
    }

    /// Whether this side refused the other (rather than having been
    /// refused, timed out or cut off), so that it counts as a rejection.
    pub fn is_ours(self) -> bool {
        !matches!(
            self,
            Refusal::Tls(
                RejectReason::RefusedByPeer | RejectReason::Closed | RejectReason::Timeout
            )
        )
    }

    fn of_io(e: &std::io::Error) -> Self {
        Refusal::Tls(PeerRejected::of_io(e).reason)
    }
}

/// Sends our Hello, then reads and checks the peer's: our versions, the id
/// its certificate proved, our member list. Unbounded in time: the caller
/// bounds it with the TLS handshake.
pub(super) async fn exchange_hello<S>(
    stream: &mut S,
    me: &str,
    digest: u64,
    peer: &str,
) -> Result<(), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mine = Envelope::Hello(Hello {
        node_id: me.to_owned(),
        members_digest: digest,
        version: PROTOCOL_VERSION,
    });
    // Node ids are DNS names (checked by the TLS config), so this encodes.
    let mine = messages::encode(&mine).map_err(|_| Refusal::HelloMalformed)?;
    write_frame(stream, &mine)
        .await
        .map_err(|e| Refusal::of_io(&e))?;
    let theirs = match read_frame(stream).await {
        Ok(bytes) => bytes,
        Err(FrameError::Oversized(_)) => return Err(Refusal::HelloMalformed),
        Err(FrameError::Io(e)) => return Err(Refusal::of_io(&e)),
    };
    let hello = match messages::decode(&theirs) {
        Ok(Envelope::Hello(hello)) => hello,
        Err(DecodeError::UnknownVersion(_)) => return Err(Refusal::HelloVersion),
        Ok(Envelope::Lease { .. }) | Err(_) => return Err(Refusal::HelloMalformed),
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(Refusal::HelloVersion);
    }
    if hello.node_id != peer {
        return Err(Refusal::HelloIdentity);
    }
    if hello.members_digest != digest {
        return Err(Refusal::HelloMembers);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    async fn exchange(theirs: Vec<u8>) -> Result<(), Refusal> {
        let (mut ours, mut other) = tokio::io::duplex(1024);
        write_frame(&mut other, &theirs).await.unwrap();
        exchange_hello(&mut ours, "a", 7, "b").await
    }

    fn hello(version: u16, id: &str, digest: u64) -> Vec<u8> {
        messages::encode(&Envelope::Hello(Hello {
            node_id: id.into(),
            members_digest: digest,
            version,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_matching_hello_passes() {
        assert_eq!(exchange(hello(PROTOCOL_VERSION, "b", 7)).await, Ok(()));
    }

    #[tokio::test]
    async fn each_mismatch_is_named() {
        assert_eq!(
            exchange(hello(PROTOCOL_VERSION, "c", 7)).await,
            Err(Refusal::HelloIdentity)
        );
        assert_eq!(
            exchange(hello(PROTOCOL_VERSION, "b", 8)).await,
            Err(Refusal::HelloMembers)
        );
        assert_eq!(
            exchange(hello(PROTOCOL_VERSION + 1, "b", 7)).await,
            Err(Refusal::HelloVersion)
        );
        assert_eq!(
            exchange(b"prepare".to_vec()).await,
            Err(Refusal::HelloVersion),
            "the first byte of an envelope is its wire version"
        );
        assert_eq!(
            exchange(vec![messages::WIRE_VERSION, 0xff]).await,
            Err(Refusal::HelloMalformed)
        );
        let lease = messages::encode(&Envelope::Lease {
            lease: "orders".into(),
            message: messages::Message::Sync,
        })
        .unwrap();
        assert_eq!(exchange(lease).await, Err(Refusal::HelloMalformed));
    }

    #[tokio::test]
    async fn our_hello_goes_first_so_both_sides_can_judge() {
        let (mut ours, mut other) = tokio::io::duplex(1024);
        let reply = hello(PROTOCOL_VERSION, "b", 7);
        let (mine, _) = tokio::join!(exchange_hello(&mut ours, "a", 7, "b"), async {
            let got = read_frame(&mut other).await.unwrap();
            write_frame(&mut other, &reply).await.unwrap();
            got
        });
        assert_eq!(mine, Ok(()));
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_our_refusal() {
        let (mut ours, other) = tokio::io::duplex(1024);
        drop(other);
        let refusal = exchange_hello(&mut ours, "a", 7, "b").await.unwrap_err();
        assert_eq!(refusal, Refusal::Tls(RejectReason::Closed));
        assert!(!refusal.is_ours());
        assert!(Refusal::HelloMembers.is_ours());
    }
}
