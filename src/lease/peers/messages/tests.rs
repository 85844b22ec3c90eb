//! The codec: round trips for every variant, and every malformed input an
//! error naming what is wrong, never a panic.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

fn ballot(counter: u64, ordinal: u16) -> Ballot {
    Ballot::new(counter, ordinal).unwrap()
}

fn urls() -> Urls {
    Urls {
        forward: Some("http://10.0.0.5:8000".into()),
        public: Some("https://orders-0.orders:8443".into()),
    }
}

fn lease(message: Message) -> Envelope {
    Envelope::Lease {
        lease: "orders".into(),
        message,
    }
}

/// One envelope of every kind, with options both empty and full.
fn samples() -> Vec<Envelope> {
    let b = ballot(1_700_000_001, 2);
    let grant = GrantInfo {
        owner: "orders-1".into(),
        token: ballot(1_699_999_000, 1).as_u64(),
        ballot: ballot(1_700_000_000, 1),
        remaining_ms: 8_765,
        urls: urls(),
    };
    let held = Held {
        owner: "orders-1".into(),
        token: 42,
        remaining_ms: 1,
    };
    vec![
        Envelope::Hello(Hello {
            node_id: "orders-0".into(),
            members_digest: u64::MAX,
            version: 1,
        }),
        lease(Message::Prepare {
            ballot: b,
            ttl_ms: 10_000,
        }),
        lease(Message::Promise {
            ballot: b,
            grant: None,
        }),
        lease(Message::Promise {
            ballot: b,
            grant: Some(grant.clone()),
        }),
        lease(Message::Promise {
            ballot: b,
            grant: Some(GrantInfo {
                urls: Urls::default(),
                ..grant
            }),
        }),
        lease(Message::Propose {
            ballot: b,
            owner: "orders-0".into(),
            token: b.as_u64(),
            ttl_ms: u64::MAX,
            urls: urls(),
        }),
        lease(Message::Accepted { ballot: b }),
        lease(Message::Nack {
            ballot: b,
            promised: ballot(super::super::ballot::MAX_COUNTER, u16::MAX),
            held: None,
        }),
        lease(Message::Nack {
            ballot: b,
            promised: b,
            held: Some(held),
        }),
        lease(Message::Release {
            owner: "orders-0".into(),
            token: 0,
        }),
        lease(Message::Learn {
            owner: "orders-0".into(),
            token: 7,
            remaining_ms: 9_797,
            urls: Urls {
                forward: None,
                public: Some("https://x".into()),
            },
        }),
        lease(Message::Sync),
        lease(Message::SyncReply {
            promised: b,
            max_ttl_ms: 10_000,
            amnesiac: true,
        }),
        lease(Message::SyncReply {
            promised: Ballot::ZERO,
            max_ttl_ms: 0,
            amnesiac: false,
        }),
        Envelope::Lease {
            lease: "é".repeat(MAX_STRING / 2),
            message: Message::Release {
                owner: "o".repeat(MAX_STRING),
                token: (1 << 53) - 1,
            },
        },
    ]
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_variant_round_trips() {
    let samples = samples();
    let kinds: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter_map(|e| match e {
            Envelope::Lease { message, .. } => Some(message.kind()),
            Envelope::Hello(_) => None,
        })
        .collect();
    assert_eq!(kinds.len(), 9, "a message kind has no sample: {kinds:?}");
    for envelope in samples {
        let bytes = encode(&envelope).unwrap();
        assert!(bytes.len() <= MAX_ENCODED);
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode(&bytes), Ok(envelope));
    }
}

#[test]
fn the_encoding_is_compact() {
    let b = ballot(1_700_000_001, 2);
    let bytes = encode(&lease(Message::Accepted { ballot: b })).unwrap();
    // version, type, "orders" with its length, the ballot
    assert_eq!(bytes.len(), 1 + 1 + 2 + 6 + 8);
}

#[test]
fn every_truncation_is_an_error() {
    for envelope in samples() {
        let bytes = encode(&envelope).unwrap();
        for len in 0..bytes.len() {
            match decode(&bytes[..len]) {
                Err(DecodeError::Truncated { .. }) => {}
                other => panic!("{envelope:?} cut at {len}: {other:?}"),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for envelope in samples() {
        let mut bytes = encode(&envelope).unwrap();
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&bytes), Err(DecodeError::TrailingBytes { count: 2 }));
    }
}

#[test]
fn unknown_versions_and_types_are_named() {
    let mut bytes = encode(&lease(Message::Sync)).unwrap();
    bytes[0] = 2;
    assert_eq!(decode(&bytes), Err(DecodeError::UnknownVersion(2)));
    for kind in [0x00, 0x02, 0x0f, 0x19, 0xff] {
        bytes[0] = WIRE_VERSION;
        bytes[1] = kind;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownType(kind)));
    }
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Truncated { field: "version" })
    );
}

#[test]
fn over_long_strings_are_refused_both_ways() {
    let long = "x".repeat(MAX_STRING + 1);
    let envelope = Envelope::Lease {
        lease: long.clone(),
        message: Message::Sync,
    };
    assert_eq!(
        encode(&envelope),
        Err(EncodeError::StringTooLong {
            field: "lease",
            len: MAX_STRING + 1
        })
    );
    // Hand-made: a 1025-byte lease name.
    let mut bytes = vec![WIRE_VERSION, 0x17];
    bytes.extend_from_slice(&1025u16.to_be_bytes());
    bytes.extend_from_slice(long.as_bytes());
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::StringTooLong {
            field: "lease",
            len: 1025
        })
    );
    let url = Urls {
        forward: Some(long),
        public: None,
    };
    let envelope = lease(Message::Learn {
        owner: "a".into(),
        token: 1,
        remaining_ms: 1,
        urls: url,
    });
    assert!(matches!(
        encode(&envelope),
        Err(EncodeError::StringTooLong {
            field: "forward_url",
            ..
        })
    ));
}

#[test]
fn over_long_input_is_refused_before_reading_it() {
    let bytes = vec![WIRE_VERSION; MAX_ENCODED + 1];
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TooLong {
            len: MAX_ENCODED + 1
        })
    );
}

#[test]
fn out_of_range_numbers_are_refused_both_ways() {
    let envelope = lease(Message::Release {
        owner: "a".into(),
        token: 1 << 53,
    });
    assert!(matches!(
        encode(&envelope),
        Err(EncodeError::OutOfRange { field: "token", .. })
    ));
    let mut bytes = encode(&lease(Message::Accepted {
        ballot: ballot(1, 1),
    }))
    .unwrap();
    let at = bytes.len() - 8;
    bytes[at..].copy_from_slice(&(1u64 << 53).to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::OutOfRange {
            field: "ballot",
            value: 1 << 53
        })
    );
}

#[test]
fn bad_flags_and_bad_utf8_are_named() {
    let mut bytes = encode(&lease(Message::SyncReply {
        promised: Ballot::ZERO,
        max_ttl_ms: 0,
        amnesiac: false,
    }))
    .unwrap();
    let last = bytes.len() - 1;
    bytes[last] = 2;
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::BadFlag {
            field: "amnesiac",
            tag: 2
        })
    );
    let mut bytes = encode(&lease(Message::Sync)).unwrap();
    bytes[4] = 0xff; // the first byte of "orders"
    assert_eq!(decode(&bytes), Err(DecodeError::NotUtf8 { field: "lease" }));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut decoded = 0;
    for i in 0..100_000 {
        let len = (rng.next() % 96) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Most inputs get a valid version and a known type, so the fields
        // behind them are exercised too.
        if i % 4 != 0 && len >= 2 {
            bytes[0] = WIRE_VERSION;
            bytes[1] = [0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
                [(rng.next() % 10) as usize];
        }
        if let Ok(envelope) = decode(&bytes) {
            // Whatever decodes, encodes back to the same bytes.
            assert_eq!(encode(&envelope).unwrap(), bytes);
            decoded += 1;
        }
    }
    assert!(decoded < 100_000);
}

#[test]
fn mutated_encodings_never_panic_and_reencode_exactly() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let samples: Vec<Vec<u8>> = samples().iter().map(|e| encode(e).unwrap()).collect();
    for _ in 0..50_000 {
        let mut bytes = samples[(rng.next() % samples.len() as u64) as usize].clone();
        for _ in 0..1 + rng.next() % 3 {
            let at = (rng.next() % bytes.len() as u64) as usize;
            bytes[at] = rng.next() as u8;
        }
        if let Ok(envelope) = decode(&bytes) {
            assert_eq!(encode(&envelope).unwrap(), bytes);
        }
    }
}
