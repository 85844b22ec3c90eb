//! The binary form of an [`Envelope`]: small, versioned, and decoded without
//! trusting a single byte.
//!
//! ```text
//! envelope = version:u8 (= 1)  type:u8  body
//! Hello      0x01  node_id:str  members_digest:u64  version:u16
//! Prepare    0x10  lease:str  ballot  ttl_ms:u64
//! Promise    0x11  lease:str  ballot  grant:opt(owner:str token ballot remaining_ms:u64 urls)
//! Propose    0x12  lease:str  ballot  owner:str  token  ttl_ms:u64  urls
//! Accepted   0x13  lease:str  ballot
//! Nack       0x14  lease:str  ballot  promised:ballot  held:opt(owner:str token remaining_ms:u64)
//! Release    0x15  lease:str  owner:str  token
//! Learn      0x16  lease:str  owner:str  token  remaining_ms:u64  urls
//! Sync       0x17  lease:str
//! SyncReply  0x18  lease:str  promised:ballot  max_ttl_ms:u64  amnesiac:bool
//!
//! u16, u64     big-endian
//! ballot,token u64 below 2^53 (Ballot::as_u64)
//! str          len:u16 (≤ 1024) + that many bytes of UTF-8
//! opt(x), bool one byte 0 or 1 (then x if 1)
//! urls         forward:opt(str)  public:opt(str)
//! ```
//!
//! Decoding checks every length against what is left, rejects anything
//! after the last field, and names what was wrong; it never panics.

use super::{
    Envelope, GrantInfo, Held, Hello, Message, Urls, MAX_ENCODED, MAX_STRING, WIRE_VERSION,
};
use crate::lease::peers::ballot::{Ballot, NUMBER_LIMIT};

const HELLO: u8 = 0x01;
const PREPARE: u8 = 0x10;
const PROMISE: u8 = 0x11;
const PROPOSE: u8 = 0x12;
const ACCEPTED: u8 = 0x13;
const NACK: u8 = 0x14;
const RELEASE: u8 = 0x15;
const LEARN: u8 = 0x16;
const SYNC: u8 = 0x17;
const SYNC_REPLY: u8 = 0x18;

/// Why bytes are not an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// More than [`MAX_ENCODED`] bytes.
    #[error("message of {len} bytes exceeds the {MAX_ENCODED}-byte limit")]
    TooLong { len: usize },
    /// A wire version this build does not speak.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// A message type this build does not know.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// The bytes ended inside `field`.
    #[error("truncated in {field}")]
    Truncated { field: &'static str },
    /// A string field longer than [`MAX_STRING`].
    #[error("{field} is {len} bytes long, more than {MAX_STRING}")]
    StringTooLong { field: &'static str, len: usize },
    /// A string field that is not UTF-8.
    #[error("{field} is not UTF-8")]
    NotUtf8 { field: &'static str },
    /// An option or boolean byte other than 0 or 1.
    #[error("{field} has flag byte {tag}, expected 0 or 1")]
    BadFlag { field: &'static str, tag: u8 },
    /// A ballot or token not below 2^53.
    #[error("{field} {value} is out of range")]
    OutOfRange { field: &'static str, value: u64 },
    /// Bytes left after the last field.
    #[error("{count} bytes after the end of the message")]
    TrailingBytes { count: usize },
}

/// Why an [`Envelope`] cannot be encoded (a field the decoder would refuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field longer than [`MAX_STRING`].
    #[error("{field} is {len} bytes long, more than {MAX_STRING}")]
    StringTooLong { field: &'static str, len: usize },
    /// A token not below 2^53.
    #[error("{field} {value} is out of range")]
    OutOfRange { field: &'static str, value: u64 },
}

/// The wire form of `envelope`; fails only on a field [`decode`] would
/// refuse (a string over [`MAX_STRING`], a token from 2^53 on), so what is
/// sent always decodes.
pub fn encode(envelope: &Envelope) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(WIRE_VERSION);
    match envelope {
        Envelope::Hello(hello) => {
            w.u8(HELLO);
            w.str("node_id", &hello.node_id)?;
            w.u64(hello.members_digest);
            w.u16(hello.version);
        }
        Envelope::Lease { lease, message } => {
            w.u8(type_of(message));
            w.str("lease", lease)?;
            encode_message(&mut w, message)?;
        }
    }
    Ok(w.0)
}

fn type_of(message: &Message) -> u8 {
    match message {
        Message::Prepare { .. } => PREPARE,
        Message::Promise { .. } => PROMISE,
        Message::Propose { .. } => PROPOSE,
        Message::Accepted { .. } => ACCEPTED,
        Message::Nack { .. } => NACK,
        Message::Release { .. } => RELEASE,
        Message::Learn { .. } => LEARN,
        Message::Sync => SYNC,
        Message::SyncReply { .. } => SYNC_REPLY,
    }
}

fn encode_message(w: &mut Writer, message: &Message) -> Result<(), EncodeError> {
    match message {
        Message::Prepare { ballot, ttl_ms } => {
            w.ballot(*ballot);
            w.u64(*ttl_ms);
        }
        Message::Promise { ballot, grant } => {
            w.ballot(*ballot);
            w.flag(grant.is_some());
            if let Some(g) = grant {
                w.str("grant.owner", &g.owner)?;
                w.token("grant.token", g.token)?;
                w.ballot(g.ballot);
                w.u64(g.remaining_ms);
                w.urls(&g.urls)?;
            }
        }
        Message::Propose {
            ballot,
            owner,
            token,
            ttl_ms,
            urls,
        } => {
            w.ballot(*ballot);
            w.str("owner", owner)?;
            w.token("token", *token)?;
            w.u64(*ttl_ms);
            w.urls(urls)?;
        }
        Message::Accepted { ballot } => w.ballot(*ballot),
        Message::Nack {
            ballot,
            promised,
            held,
        } => {
            w.ballot(*ballot);
            w.ballot(*promised);
            w.flag(held.is_some());
            if let Some(h) = held {
                w.str("held.owner", &h.owner)?;
                w.token("held.token", h.token)?;
                w.u64(h.remaining_ms);
            }
        }
        Message::Release { owner, token } => {
            w.str("owner", owner)?;
            w.token("token", *token)?;
        }
        Message::Learn {
            owner,
            token,
            remaining_ms,
            urls,
        } => {
            w.str("owner", owner)?;
            w.token("token", *token)?;
            w.u64(*remaining_ms);
            w.urls(urls)?;
        }
        Message::Sync => {}
        Message::SyncReply {
            promised,
            max_ttl_ms,
            amnesiac,
        } => {
            w.ballot(*promised);
            w.u64(*max_ttl_ms);
            w.flag(*amnesiac);
        }
    }
    Ok(())
}

/// The envelope in `bytes`, which must hold exactly one.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() > MAX_ENCODED {
        return Err(DecodeError::TooLong { len: bytes.len() });
    }
    let mut r = Reader(bytes);
    let version = r.u8("version")?;
    if version != WIRE_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let kind = r.u8("type")?;
    let envelope = match kind {
        HELLO => Envelope::Hello(Hello {
            node_id: r.str("node_id")?,
            members_digest: r.u64("members_digest")?,
            version: r.u16("hello.version")?,
        }),
        PREPARE..=SYNC_REPLY => {
            let lease = r.str("lease")?;
            let message = decode_message(&mut r, kind)?;
            Envelope::Lease { lease, message }
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    match r.0.len() {
        0 => Ok(envelope),
        count => Err(DecodeError::TrailingBytes { count }),
    }
}

fn decode_message(r: &mut Reader<'_>, kind: u8) -> Result<Message, DecodeError> {
    Ok(match kind {
        PREPARE => Message::Prepare {
            ballot: r.ballot("ballot")?,
            ttl_ms: r.u64("ttl_ms")?,
        },
        PROMISE => Message::Promise {
            ballot: r.ballot("ballot")?,
            grant: match r.flag("grant")? {
                false => None,
                true => Some(GrantInfo {
                    owner: r.str("grant.owner")?,
                    token: r.token("grant.token")?,
                    ballot: r.ballot("grant.ballot")?,
                    remaining_ms: r.u64("grant.remaining_ms")?,
                    urls: r.urls()?,
                }),
            },
        },
        PROPOSE => Message::Propose {
            ballot: r.ballot("ballot")?,
            owner: r.str("owner")?,
            token: r.token("token")?,
            ttl_ms: r.u64("ttl_ms")?,
            urls: r.urls()?,
        },
        ACCEPTED => Message::Accepted {
            ballot: r.ballot("ballot")?,
        },
        NACK => Message::Nack {
            ballot: r.ballot("ballot")?,
            promised: r.ballot("promised")?,
            held: match r.flag("held")? {
                false => None,
                true => Some(Held {
                    owner: r.str("held.owner")?,
                    token: r.token("held.token")?,
                    remaining_ms: r.u64("held.remaining_ms")?,
                }),
            },
        },
        RELEASE => Message::Release {
            owner: r.str("owner")?,
            token: r.token("token")?,
        },
        LEARN => Message::Learn {
            owner: r.str("owner")?,
            token: r.token("token")?,
            remaining_ms: r.u64("remaining_ms")?,
            urls: r.urls()?,
        },
        SYNC => Message::Sync,
        SYNC_REPLY => Message::SyncReply {
            promised: r.ballot("promised")?,
            max_ttl_ms: r.u64("max_ttl_ms")?,
            amnesiac: r.flag("amnesiac")?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn flag(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    fn ballot(&mut self, b: Ballot) {
        self.u64(b.as_u64());
    }

    fn token(&mut self, field: &'static str, token: u64) -> Result<(), EncodeError> {
        if token >= NUMBER_LIMIT {
            return Err(EncodeError::OutOfRange {
                field,
                value: token,
            });
        }
        self.u64(token);
        Ok(())
    }

    fn str(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        let too_long = || EncodeError::StringTooLong {
            field,
            len: s.len(),
        };
        if s.len() > MAX_STRING {
            return Err(too_long());
        }
        self.u16(u16::try_from(s.len()).map_err(|_| too_long())?);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn opt_str(&mut self, field: &'static str, s: Option<&str>) -> Result<(), EncodeError> {
        self.flag(s.is_some());
        match s {
            Some(s) => self.str(field, s),
            None => Ok(()),
        }
    }

    fn urls(&mut self, urls: &Urls) -> Result<(), EncodeError> {
        self.opt_str("forward_url", urls.forward.as_deref())?;
        self.opt_str("public_url", urls.public.as_deref())
    }
}

/// What is left to decode.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        <[u8; N]>::try_from(self.take(N, field)?).map_err(|_| DecodeError::Truncated { field })
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadFlag { field, tag }),
        }
    }

    fn ballot(&mut self, field: &'static str) -> Result<Ballot, DecodeError> {
        let value = self.u64(field)?;
        Ballot::from_u64(value).ok_or(DecodeError::OutOfRange { field, value })
    }

    fn token(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let value = self.u64(field)?;
        match value < NUMBER_LIMIT {
            true => Ok(value),
            false => Err(DecodeError::OutOfRange { field, value }),
        }
    }

    fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len > MAX_STRING {
            return Err(DecodeError::StringTooLong { field, len });
        }
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 { field })
    }

    fn opt_str(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.flag(field)? {
            false => Ok(None),
            true => self.str(field).map(Some),
        }
    }

    fn urls(&mut self) -> Result<Urls, DecodeError> {
        Ok(Urls {
            forward: self.opt_str("forward_url")?,
            public: self.opt_str("public_url")?,
        })
    }
}
