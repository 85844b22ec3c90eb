//! The peer wire format below the messages: a frame is a `u32` big-endian
//! length and that many bytes, at most [`MAX_FRAME`]. An empty frame is a
//! heartbeat (never handed up); every other frame holds one encoded
//! [`Envelope`](crate::lease::peers::messages::Envelope), the first each way
//! a `Hello`.
//!
//! Reading never trusts the length: an oversized one is refused before any
//! allocation, and the caller closes the connection, since nothing after it
//! can be framed.

use std::fmt;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame payload (64 KiB): the largest encoded message.
pub const MAX_FRAME: usize = crate::lease::peers::messages::MAX_ENCODED;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    Oversized(u32),
    /// The connection failed or closed (cleanly between frames or not).
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized(len) => {
                write!(f, "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")
            }
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads one frame; an empty one is a heartbeat. Not cancel-safe: drop the
/// connection rather than the read.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(prefix);
    let size = usize::try_from(len).unwrap_or(usize::MAX);
    if size > MAX_FRAME {
        return Err(FrameError::Oversized(len));
    }
    let mut payload = vec![0u8; size];
    r.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    Ok(payload)
}

/// Writes one frame and flushes it. The caller keeps `payload` within
/// [`MAX_FRAME`]; a longer one is refused here rather than sent.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    // One buffer, so the prefix and the payload leave in one TLS record.
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf).await?;
    w.flush().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_an_empty_one_is_a_heartbeat() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"prepare").await.unwrap();
        write_frame(&mut a, b"").await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), b"prepare");
        assert!(read_frame(&mut b).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_frame_of_exactly_the_limit_passes() {
        let (mut a, mut b) = tokio::io::duplex(4 * MAX_FRAME);
        let big = vec![7u8; MAX_FRAME];
        write_frame(&mut a, &big).await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), big);
    }

    #[tokio::test]
    async fn an_oversized_prefix_is_refused_before_reading_the_payload() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let len = u32::try_from(MAX_FRAME + 1).unwrap();
        a.write_all(&len.to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Oversized(n) if n == len), "{err}");
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b).await.unwrap_err(),
            FrameError::Oversized(u32::MAX)
        ));
    }

    #[tokio::test]
    async fn writing_an_oversized_frame_is_refused() {
        let (mut a, _b) = tokio::io::duplex(64);
        let err = write_frame(&mut a, &vec![0u8; MAX_FRAME + 1])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_an_io_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b).await.unwrap_err(),
            FrameError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
    }
}
