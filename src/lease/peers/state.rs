//! The acceptor's durable state, `cluster.state_dir/peers-NAME.state`
//! (LEASES.md §3.1): the highest ballot promised and the longest `ttl`
//! promised for, so a restarted node never promises below what it promised
//! before, and knows how long to stay silent.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "BWPS"
//!      4     2  version (1), big-endian like every number here
//!      6     8  members_digest
//!     14     8  promised (Ballot::as_u64)
//!     22     8  max_ttl_ms
//!     30     4  CRC-32 (IEEE) of bytes 0..30
//! ```
//!
//! A file that fails any check is corrupt, and so is one written for another
//! member list: promises made in one membership say nothing about quorums of
//! another. Corrupt is treated like missing (the node is amnesiac, §3.6);
//! the file is left in place for the operator until the next write replaces
//! it. Writes are atomic (temp file, fsync, rename, fsync of the directory).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::acceptor::Durable;
use super::ballot::Ballot;
use super::members::Members;

/// The state file format written by this build.
pub const STATE_VERSION: u16 = 1;

const MAGIC: &[u8; 4] = b"BWPS";

/// The size of a state file.
pub const STATE_LEN: usize = 34;

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The lease name holds a `/` or NUL.
    #[error("lease name {lease:?} cannot be part of a file name in cluster.state_dir")]
    BadName { lease: String },
    /// The file exists but cannot be read.
    #[error("cannot read the lease state {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file holds something unusable; the node must recover (§3.6).
    #[error("the lease state {} is unusable: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: Corruption },
    /// The state could not be stored durably.
    #[error("cannot write the lease state {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What is wrong with a state file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Not [`STATE_LEN`] bytes.
    #[error("{0} bytes, expected {STATE_LEN}")]
    Length(usize),
    /// The checksum does not match the content.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    /// Not a state file.
    #[error("not a Breakwater lease state file")]
    Magic,
    /// A format this build does not read.
    #[error("unsupported version {0}")]
    Version(u16),
    /// Written for another member list.
    #[error(
        "written for another member list (digest {stored:#018x}, now {expected:#018x}); \
         promises do not carry over between memberships"
    )]
    Members { stored: u64, expected: u64 },
    /// A promised ballot no valid ballot has.
    #[error("promised ballot {0} is out of range")]
    Ballot(u64),
}

/// One lease's state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
    members_digest: u64,
}

impl StateFile {
    /// `dir/peers-LEASE.state`, bound to `members`' digest.
    pub fn new(dir: &Path, lease: &str, members: &Members) -> Result<StateFile, StateError> {
        if lease.contains(['/', '\0']) {
            return Err(StateError::BadName {
                lease: lease.to_owned(),
            });
        }
        Ok(StateFile {
            path: dir.join(format!("peers-{lease}.state")),
            members_digest: members.digest(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state: `Ok(None)` if there is no file, `Err(Corrupt)` if
    /// it is unusable (both mean amnesiac), `Err(Read)` if it cannot be read.
    pub fn load(&self) -> Result<Option<Durable>, StateError> {
        let read_error = |source| StateError::Read {
            path: self.path.clone(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read_error(e)),
        };
        let mut bytes = Vec::with_capacity(STATE_LEN + 1);
        file.take(STATE_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        decode(&bytes, self.members_digest)
            .map(Some)
            .map_err(|reason| StateError::Corrupt {
                path: self.path.clone(),
                reason,
            })
    }

    /// Stores `state` so that after a crash the file holds either the old or
    /// the new state, never a torn one, and the new one once this returns.
    /// Blocking: call it off the async runtime's hot path.
    pub fn store(&self, state: &Durable) -> Result<(), StateError> {
        crate::lease::durable::write_atomic(&self.path, &encode(state, self.members_digest))
            .map_err(|(path, source)| StateError::Write { path, source })
    }
}

/// The file content for `state` under a member list with `members_digest`.
pub fn encode(state: &Durable, members_digest: u64) -> [u8; STATE_LEN] {
    let mut bytes = [0u8; STATE_LEN];
    bytes[0..4].copy_from_slice(MAGIC);
    bytes[4..6].copy_from_slice(&STATE_VERSION.to_be_bytes());
    bytes[6..14].copy_from_slice(&members_digest.to_be_bytes());
    bytes[14..22].copy_from_slice(&state.promised.as_u64().to_be_bytes());
    bytes[22..30].copy_from_slice(&state.max_ttl_ms.to_be_bytes());
    let crc = crc32(&bytes[..30]);
    bytes[30..34].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// The state in `bytes`, if they are a whole, intact state file of this
/// version for the member list with `members_digest`.
pub fn decode(bytes: &[u8], members_digest: u64) -> Result<Durable, Corruption> {
    let bytes: &[u8; STATE_LEN] = bytes
        .try_into()
        .map_err(|_| Corruption::Length(bytes.len()))?;
    let (body, stored) = bytes.split_at(30);
    let stored = u32::from_be_bytes(word(stored));
    let computed = crc32(body);
    if stored != computed {
        return Err(Corruption::Checksum { stored, computed });
    }
    if &bytes[0..4] != MAGIC {
        return Err(Corruption::Magic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != STATE_VERSION {
        return Err(Corruption::Version(version));
    }
    let stored = u64::from_be_bytes(word(&bytes[6..14]));
    if stored != members_digest {
        return Err(Corruption::Members {
            stored,
            expected: members_digest,
        });
    }
    let promised = u64::from_be_bytes(word(&bytes[14..22]));
    Ok(Durable {
        promised: Ballot::from_u64(promised).ok_or(Corruption::Ballot(promised))?,
        max_ttl_ms: u64::from_be_bytes(word(&bytes[22..30])),
    })
}

/// The first `N` bytes of `bytes` (zero-padded if fewer; the callers pass
/// slices of a fixed-size array, so never).
fn word<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

/// CRC-32 (IEEE 802.3, as in zlib and PNG: reflected polynomial
/// `0xEDB88320`, initial and final `!0`), bit by bit: 30 bytes per write do
/// not need a table.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A stable 64-bit digest of a member list: FNV-1a over the sorted ids, each
/// preceded by its length (so `["ab","c"]` and `["a","bc"]` differ). It
/// detects a changed configuration; it is not cryptographic and need not
/// be, as members are authenticated by mTLS.
pub fn members_digest(members: &[String]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for id in sorted {
        feed(&(id.len() as u64).to_be_bytes());
        feed(id.as_bytes());
    }
    hash
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn members() -> Members {
        Members::new("a", ["b", "c"]).unwrap()
    }

    fn state() -> Durable {
        Durable {
            promised: Ballot::new(1_700_000_123, 2).unwrap(),
            max_ttl_ms: 10_000,
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn fnv_digest_is_stable_order_free_and_length_prefixed() {
        let ab_c = members_digest(&["ab".into(), "c".into()]);
        let c_ab = members_digest(&["c".into(), "ab".into()]);
        let a_bc = members_digest(&["a".into(), "bc".into()]);
        assert_eq!(ab_c, c_ab);
        assert_ne!(ab_c, a_bc);
        // Pinned: the digest is part of the file format and of Hello.
        assert_eq!(members_digest(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(ab_c, members_digest(&["ab".into(), "c".into()]));
    }

    #[test]
    fn encode_decode_round_trip() {
        let digest = members().digest();
        let bytes = encode(&state(), digest);
        assert_eq!(&bytes[0..4], b"BWPS");
        assert_eq!(decode(&bytes, digest), Ok(state()));
    }

    #[test]
    fn flipping_any_bit_of_any_byte_is_corrupt() {
        let digest = members().digest();
        let bytes = encode(&state(), digest);
        for i in 0..STATE_LEN {
            for bit in 0..8 {
                let mut bad = bytes;
                bad[i] ^= 1 << bit;
                assert!(decode(&bad, digest).is_err(), "byte {i} bit {bit}");
            }
            let mut bad = bytes;
            bad[i] = !bad[i];
            assert!(
                matches!(decode(&bad, digest), Err(Corruption::Checksum { .. })),
                "byte {i}"
            );
        }
    }

    #[test]
    fn wrong_lengths_are_corrupt() {
        let bytes = encode(&state(), 1);
        for len in 0..STATE_LEN {
            assert_eq!(decode(&bytes[..len], 1), Err(Corruption::Length(len)));
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode(&long, 1), Err(Corruption::Length(STATE_LEN + 1)));
    }

    /// Bytes with a valid checksum over whatever `edit` made of them.
    fn resealed(edit: impl FnOnce(&mut [u8; STATE_LEN])) -> [u8; STATE_LEN] {
        let mut bytes = encode(&state(), 1);
        edit(&mut bytes);
        let crc = crc32(&bytes[..30]);
        bytes[30..].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn another_version_magic_or_ballot_range_is_corrupt_even_with_a_good_checksum() {
        let bytes = resealed(|b| b[5] = 2);
        assert_eq!(decode(&bytes, 1), Err(Corruption::Version(2)));
        let bytes = resealed(|b| b[0] = b'X');
        assert_eq!(decode(&bytes, 1), Err(Corruption::Magic));
        let bytes = resealed(|b| b[14..22].copy_from_slice(&(1u64 << 53).to_be_bytes()));
        assert_eq!(decode(&bytes, 1), Err(Corruption::Ballot(1 << 53)));
    }

    #[test]
    fn another_member_list_is_corrupt() {
        let bytes = encode(&state(), members().digest());
        let other = Members::new("a", ["b", "d"]).unwrap().digest();
        assert!(matches!(
            decode(&bytes, other),
            Err(Corruption::Members { .. })
        ));
    }

    #[test]
    fn load_missing_is_none_and_store_then_load_returns_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "orders", &members()).unwrap();
        assert_eq!(file.path(), dir.path().join("peers-orders.state"));
        assert_eq!(file.load().unwrap(), None);
        file.store(&state()).unwrap();
        assert_eq!(file.load().unwrap(), Some(state()));
        let bigger = Durable {
            promised: Ballot::new(1_700_000_200, 0).unwrap(),
            max_ttl_ms: 15_000,
        };
        file.store(&bigger).unwrap();
        assert_eq!(file.load().unwrap(), Some(bigger));
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["peers-orders.state"]);
    }

    #[test]
    fn load_of_a_damaged_or_foreign_file_is_corrupt_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "orders", &members()).unwrap();
        file.store(&state()).unwrap();
        let mut bytes = std::fs::read(file.path()).unwrap();
        bytes[20] ^= 0x40;
        std::fs::write(file.path(), &bytes).unwrap();
        let err = file.load().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("peers-orders.state"), "{err}");

        file.store(&state()).unwrap();
        let moved = StateFile::new(
            dir.path(),
            "orders",
            &Members::new("a", ["b", "c", "d"]).unwrap(),
        )
        .unwrap();
        let err = moved.load().unwrap_err();
        assert!(
            matches!(
                err,
                StateError::Corrupt {
                    reason: Corruption::Members { .. },
                    ..
                }
            ),
            "{err}"
        );
        std::fs::write(file.path(), vec![0u8; 1 << 20]).unwrap();
        assert!(matches!(
            file.load(),
            Err(StateError::Corrupt {
                reason: Corruption::Length(35),
                ..
            })
        ));
    }

    #[test]
    fn path_like_lease_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../x", "a/b", "nul\0"] {
            assert!(matches!(
                StateFile::new(dir.path(), name, &members()),
                Err(StateError::BadName { .. })
            ));
        }
    }

    #[test]
    fn a_store_that_cannot_write_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let file = StateFile::new(&gone, "orders", &members()).unwrap();
        assert!(matches!(
            file.store(&state()),
            Err(StateError::Write { .. })
        ));
    }
}
