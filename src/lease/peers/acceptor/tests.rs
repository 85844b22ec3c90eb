//! Each acceptor rule of LEASES.md §3.3 and §3.6 at its boundary.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;

const TTL: Millis = 10_000;
/// A time well after the start quarantine of [`ready`].
const T: Millis = 50_000;

fn members() -> Members {
    Members::new("a", ["b", "c"]).unwrap()
}

fn b(counter: u64, ordinal: u16) -> Ballot {
    Ballot::new(counter, ordinal).unwrap()
}

/// An acceptor that started with an empty state file at 0: out of
/// quarantine from `TTL` on.
fn ready() -> Acceptor {
    Acceptor::new(members(), Some(Durable::default()), 0, TTL)
}

fn prepare(ballot: Ballot) -> Message {
    Message::Prepare {
        ballot,
        ttl_ms: TTL,
    }
}

fn propose(ballot: Ballot, owner: &str, token: u64) -> Message {
    Message::Propose {
        ballot,
        owner: owner.into(),
        token,
        ttl_ms: TTL,
        urls: Urls::default(),
    }
}

fn release(owner: &str, token: u64) -> Message {
    Message::Release {
        owner: owner.into(),
        token,
    }
}

fn sync_reply(counter: u64, max_ttl_ms: Millis, amnesiac: bool) -> Message {
    Message::SyncReply {
        promised: b(counter, 0),
        max_ttl_ms,
        amnesiac,
    }
}

/// `owner` holds tenure `token` (ballot `counter`), granted at `at`.
fn granted(owner: &str, counter: u64, at: Millis) -> Acceptor {
    let mut acceptor = ready();
    let ballot = b(counter, 1);
    acceptor.handle(at, owner, &prepare(ballot));
    let effects = acceptor.handle(at, owner, &propose(ballot, owner, ballot.as_u64()));
    assert_eq!(effects.reply, Some(Message::Accepted { ballot }));
    acceptor
}

fn is_nack(effects: &Effects) -> bool {
    matches!(effects.reply, Some(Message::Nack { .. }))
}

// §3.3.2 Prepare

#[test]
fn prepare_at_or_above_promised_promises_and_persists_before_replying() {
    let mut acceptor = ready();
    let effects = acceptor.handle(T, "b", &prepare(b(5, 1)));
    assert_eq!(
        effects.persist,
        Some(Durable {
            promised: b(5, 1),
            max_ttl_ms: TTL
        })
    );
    assert_eq!(
        effects.reply,
        Some(Message::Promise {
            ballot: b(5, 1),
            grant: None
        })
    );
    // The same ballot again (a duplicate): promised again, nothing grew.
    let effects = acceptor.handle(T, "b", &prepare(b(5, 1)));
    assert_eq!(effects.persist, None);
    assert!(matches!(effects.reply, Some(Message::Promise { .. })));
}

#[test]
fn prepare_below_promised_is_nacked_with_the_promise() {
    let mut acceptor = ready();
    acceptor.handle(T, "b", &prepare(b(5, 1)));
    // Same counter, lower ordinal: lower.
    let effects = acceptor.handle(T, "a", &prepare(b(5, 0)));
    assert_eq!(
        effects,
        Effects::reply(Message::Nack {
            ballot: b(5, 0),
            promised: b(5, 1),
            held: None
        })
    );
    assert_eq!(acceptor.durable().promised, b(5, 1));
}

#[test]
fn prepare_raises_max_ttl_and_never_lowers_it() {
    let mut acceptor = ready();
    let long = Message::Prepare {
        ballot: b(5, 1),
        ttl_ms: 30_000,
    };
    assert_eq!(
        acceptor.handle(T, "b", &long).persist.unwrap().max_ttl_ms,
        30_000
    );
    let effects = acceptor.handle(T, "b", &prepare(b(6, 1)));
    assert_eq!(
        effects.persist,
        Some(Durable {
            promised: b(6, 1),
            max_ttl_ms: 30_000
        })
    );
}

#[test]
fn promise_reports_the_live_grant_with_its_remaining_time() {
    let mut acceptor = granted("b", 5, T);
    let effects = acceptor.handle(T + 1_000, "c", &prepare(b(9, 2)));
    let Some(Message::Promise {
        grant: Some(grant), ..
    }) = effects.reply
    else {
        panic!("{effects:?}");
    };
    assert_eq!(grant.owner, "b");
    assert_eq!(grant.token, b(5, 1).as_u64());
    assert_eq!(grant.ballot, b(5, 1));
    assert_eq!(grant.remaining_ms, TTL - 1_000);
}

#[test]
fn a_grant_is_expired_at_exactly_its_expiry() {
    let mut acceptor = granted("b", 5, T);
    assert!(acceptor.grant(T + TTL - 1).is_some());
    assert!(acceptor.grant(T + TTL).is_none());
    let effects = acceptor.handle(T + TTL - 1, "c", &prepare(b(9, 2)));
    assert!(matches!(
        effects.reply,
        Some(Message::Promise { grant: Some(ref g), .. }) if g.remaining_ms == 1
    ));
    let effects = acceptor.handle(T + TTL, "c", &prepare(b(10, 2)));
    assert!(matches!(
        effects.reply,
        Some(Message::Promise { grant: None, .. })
    ));
}

// §3.3.3 Propose

#[test]
fn propose_below_promised_is_nacked() {
    let mut acceptor = ready();
    acceptor.handle(T, "c", &prepare(b(7, 2)));
    let effects = acceptor.handle(T, "b", &propose(b(6, 1), "b", 1));
    assert!(is_nack(&effects), "{effects:?}");
    assert!(acceptor.grant(T).is_none());
}

#[test]
fn propose_with_a_ttl_above_max_ttl_is_nacked() {
    let mut acceptor = ready();
    acceptor.handle(T, "b", &prepare(b(7, 1)));
    let long = Message::Propose {
        ballot: b(7, 1),
        owner: "b".into(),
        token: 1,
        ttl_ms: TTL + 1,
        urls: Urls::default(),
    };
    assert!(is_nack(&acceptor.handle(T, "b", &long)));
    assert!(acceptor.grant(T).is_none());
}

#[test]
fn propose_never_overwrites_another_tenures_live_grant_even_with_a_higher_ballot() {
    let mut acceptor = granted("b", 5, T);
    let token_b = b(5, 1).as_u64();
    // Another owner, a higher ballot it even prepared.
    acceptor.handle(T + 1, "c", &prepare(b(9, 2)));
    let effects = acceptor.handle(T + 1, "c", &propose(b(9, 2), "c", b(9, 2).as_u64()));
    assert_eq!(
        effects.reply,
        Some(Message::Nack {
            ballot: b(9, 2),
            promised: b(9, 2),
            held: Some(Held {
                owner: "b".into(),
                token: token_b,
                remaining_ms: TTL - 1
            })
        })
    );
    // The same owner with another token is another tenure too.
    let effects = acceptor.handle(T + 2, "b", &propose(b(10, 1), "b", b(10, 1).as_u64()));
    assert!(is_nack(&effects));
    let grant = acceptor.grant(T + 2).unwrap();
    assert_eq!((grant.owner.as_str(), grant.token), ("b", token_b));
    // A refused Propose leaves `promised` where the Prepare put it.
    assert_eq!(acceptor.durable().promised, b(9, 2));
}

#[test]
fn propose_of_the_same_tenure_renews_it() {
    let mut acceptor = granted("b", 5, T);
    let token = b(5, 1).as_u64();
    acceptor.handle(T + 3_000, "b", &prepare(b(8, 1)));
    let effects = acceptor.handle(T + 3_000, "b", &propose(b(8, 1), "b", token));
    assert_eq!(effects.reply, Some(Message::Accepted { ballot: b(8, 1) }));
    let grant = acceptor.grant(T + 3_000).unwrap();
    assert_eq!(grant.token, token);
    assert_eq!(grant.ballot, b(8, 1));
    assert_eq!(grant.expires_at, T + 3_000 + TTL);
}

#[test]
fn propose_of_another_tenure_is_accepted_once_the_grant_expired() {
    let mut acceptor = granted("b", 5, T);
    let at = T + TTL; // exactly the expiry
    acceptor.handle(at, "c", &prepare(b(9, 2)));
    let effects = acceptor.handle(at, "c", &propose(b(9, 2), "c", b(9, 2).as_u64()));
    assert_eq!(effects.reply, Some(Message::Accepted { ballot: b(9, 2) }));
    assert_eq!(acceptor.grant(at).unwrap().owner, "c");
}

#[test]
fn propose_that_raises_promised_persists_before_accepting() {
    let mut acceptor = ready();
    acceptor.handle(T, "b", &prepare(b(5, 1)));
    let effects = acceptor.handle(T, "c", &propose(b(6, 2), "c", 7));
    assert_eq!(
        effects.persist,
        Some(Durable {
            promised: b(6, 2),
            max_ttl_ms: TTL
        })
    );
    assert_eq!(effects.reply, Some(Message::Accepted { ballot: b(6, 2) }));
    // At the promised ballot itself, nothing to persist.
    let effects = acceptor.handle(T, "c", &propose(b(6, 2), "c", 7));
    assert_eq!(effects.persist, None);
}

// §3.3.4 Release

#[test]
fn release_clears_only_the_exact_live_tenure() {
    let mut acceptor = granted("b", 5, T);
    let token = b(5, 1).as_u64();
    for wrong in [
        release("b", token + 1),
        release("c", token),
        release("a", token),
    ] {
        assert_eq!(acceptor.handle(T + 1, "b", &wrong), Effects::default());
        assert!(acceptor.grant(T + 1).is_some(), "{wrong:?}");
    }
    let promised = acceptor.durable();
    assert_eq!(
        acceptor.handle(T + 1, "b", &release("b", token)),
        Effects::default()
    );
    assert!(acceptor.grant(T + 1).is_none());
    assert_eq!(acceptor.durable(), promised);
}

// §3.6 Restarts

#[test]
fn with_its_file_it_is_quarantined_for_max_of_max_ttl_and_ttl() {
    let state = Durable {
        promised: b(5, 1),
        max_ttl_ms: 30_000,
    };
    let mut acceptor = Acceptor::new(members(), Some(state), T, TTL);
    assert_eq!(acceptor.quarantine_until(), Some(T + 30_000));
    let late = T + 30_000 - 1;
    // Refused (not in silence, so a round need not time out), promising
    // nothing and storing nothing; a release is ignored.
    for message in [prepare(b(9, 1)), propose(b(9, 1), "b", 1)] {
        assert_eq!(
            acceptor.handle(late, "b", &message),
            Effects {
                reply: Some(Message::Nack {
                    ballot: b(9, 1),
                    promised: b(5, 1),
                    held: None,
                }),
                ..Effects::default()
            }
        );
    }
    assert_eq!(
        acceptor.handle(late, "b", &release("b", 1)),
        Effects::default()
    );
    assert_eq!(acceptor.durable().promised, b(5, 1));
    assert_eq!(acceptor.grant(late), None);
    // Sync is answered during the quarantine.
    assert_eq!(
        acceptor.handle(late, "b", &Message::Sync).reply,
        Some(Message::SyncReply {
            promised: b(5, 1),
            max_ttl_ms: 30_000,
            amnesiac: false
        })
    );
    assert!(matches!(
        acceptor.handle(T + 30_000, "b", &prepare(b(9, 1))).reply,
        Some(Message::Promise { .. })
    ));
    // Ballots continue above the persisted promise.
    let mut acceptor = Acceptor::new(members(), Some(state), T, TTL);
    assert!(is_nack(&acceptor.handle(
        T + 30_000,
        "b",
        &prepare(b(5, 0))
    )));
}

#[test]
fn quarantine_is_at_least_one_ttl() {
    let state = Durable {
        promised: b(5, 1),
        max_ttl_ms: 1_000,
    };
    let acceptor = Acceptor::new(members(), Some(state), T, TTL);
    assert_eq!(acceptor.quarantine_until(), Some(T + TTL));
    assert!(acceptor.is_quarantined(T + TTL - 1));
    assert!(!acceptor.is_quarantined(T + TTL));
}

#[test]
fn reserve_raises_promised_even_while_quarantined() {
    let mut acceptor = Acceptor::new(members(), Some(Durable::default()), T, TTL);
    assert!(acceptor.is_quarantined(T));
    assert_eq!(
        acceptor.reserve(b(3, 0)),
        Some(Durable {
            promised: b(3, 0),
            max_ttl_ms: TTL
        })
    );
    assert_eq!(acceptor.reserve(b(3, 0)), None);
    assert_eq!(acceptor.reserve(b(2, 0)), None);
    assert_eq!(acceptor.durable().promised, b(3, 0));
}

#[test]
fn an_amnesiac_acceptor_drops_everything_and_asks_for_sync() {
    let mut acceptor = Acceptor::new(members(), None, T, TTL);
    assert!(acceptor.is_amnesiac());
    assert_eq!(acceptor.quarantine_until(), None);
    // Refused, promising nothing; a release is ignored.
    for message in [prepare(b(9, 1)), propose(b(9, 1), "b", 1)] {
        let reply = acceptor.handle(T + 100 * TTL, "b", &message).reply;
        assert_eq!(reply, Some(nack(b(9, 1), Ballot::ZERO)));
    }
    assert_eq!(
        acceptor.handle(T + 100 * TTL, "b", &release("b", 1)),
        Effects::default()
    );
    assert_eq!(acceptor.durable(), Durable::default());
    assert_eq!(acceptor.wake_at(), Some(T));
    assert_eq!(acceptor.tick(T).broadcast, Some(Message::Sync));
    // Asked again every ttl/4 (at most 1 s) until recovered.
    assert_eq!(acceptor.wake_at(), Some(T + 1_000));
    assert_eq!(acceptor.tick(T + 999).broadcast, None);
    assert_eq!(acceptor.tick(T + 1_000).broadcast, Some(Message::Sync));
    // It answers Sync, saying it is amnesiac.
    assert!(matches!(
        acceptor.handle(T, "b", &Message::Sync).reply,
        Some(Message::SyncReply { amnesiac: true, .. })
    ));
}

#[test]
fn an_amnesiac_acceptor_recovers_from_a_majority_of_others() {
    let mut acceptor = Acceptor::new(members(), None, T, TTL);
    // One answer, even repeated, is not enough of three members' others.
    let effects = acceptor.handle(T + 5, "b", &sync_reply(40, 12_000, false));
    assert_eq!(effects, Effects::default());
    let effects = acceptor.handle(T + 6, "b", &sync_reply(41, 12_000, false));
    assert_eq!(effects, Effects::default());
    // Its own answer (`from` = itself) does not count either.
    assert_eq!(
        acceptor.handle(T + 7, "a", &sync_reply(90, 0, false)),
        Effects::default()
    );
    let effects = acceptor.handle(T + 8, "c", &sync_reply(30, 20_000, false));
    let adopted = Durable {
        promised: b(41, 0),
        max_ttl_ms: 20_000,
    };
    assert_eq!(effects.persist, Some(adopted));
    assert_eq!(
        effects.notice,
        Some(Notice::Recovered {
            state: adopted,
            answers: 2
        })
    );
    assert!(!acceptor.is_amnesiac());
    assert_eq!(acceptor.wake_at(), None);
    // Quarantined for the adopted max_ttl, counted from the restart.
    assert_eq!(acceptor.quarantine_until(), Some(T + 20_000));
    assert!(is_nack(&acceptor.handle(
        T + 20_000,
        "b",
        &prepare(b(40, 2))
    )));
}

#[test]
fn amnesiac_answers_do_not_count_towards_recovery() {
    let mut acceptor = Acceptor::new(members(), None, T, TTL);
    acceptor.handle(T, "b", &sync_reply(40, TTL, false));
    let effects = acceptor.handle(T, "c", &sync_reply(50, TTL, true));
    assert_eq!(effects, Effects::default());
    assert!(acceptor.is_amnesiac());
    // The other later recovers and says so: now it counts.
    let effects = acceptor.handle(T + 1, "c", &sync_reply(50, TTL, false));
    assert!(matches!(effects.notice, Some(Notice::Recovered { .. })));
    assert_eq!(acceptor.durable().promised, b(50, 0));
}

#[test]
fn a_majority_amnesiac_bootstraps_after_one_ttl_with_a_warning() {
    let mut acceptor = Acceptor::new(members(), None, T, TTL);
    acceptor.handle(T, "c", &sync_reply(50, 15_000, true));
    // Self and c: two of three amnesiac. Nothing before one ttl.
    assert_eq!(acceptor.wake_at(), Some(T));
    acceptor.tick(T);
    assert_eq!(acceptor.wake_at(), Some(T + 1_000));
    let effects = acceptor.tick(T + TTL - 1);
    assert_eq!(effects.persist, None);
    assert!(acceptor.is_amnesiac());
    assert_eq!(acceptor.wake_at(), Some(T + TTL));
    let effects = acceptor.tick(T + TTL);
    let adopted = Durable {
        promised: b(50, 0),
        max_ttl_ms: 15_000,
    };
    assert_eq!(effects.persist, Some(adopted));
    assert_eq!(
        effects.notice,
        Some(Notice::Bootstrapped {
            state: adopted,
            answers: 1
        })
    );
    assert_eq!(acceptor.quarantine_until(), Some(T + 15_000));
}

#[test]
fn a_lone_member_bootstraps_from_zero() {
    let mut acceptor = Acceptor::new(
        Members::new("a", Vec::<String>::new()).unwrap(),
        None,
        T,
        TTL,
    );
    assert_eq!(acceptor.wake_at(), Some(T));
    acceptor.tick(T);
    assert_eq!(acceptor.wake_at(), Some(T + 1_000));
    let effects = acceptor.tick(T + TTL);
    assert_eq!(
        effects.notice,
        Some(Notice::Bootstrapped {
            state: Durable {
                promised: Ballot::ZERO,
                max_ttl_ms: 0
            },
            answers: 0
        })
    );
    assert!(!acceptor.is_quarantined(T + TTL));
}

#[test]
fn recovery_needs_half_the_members_rounded_up_among_the_others() {
    // n = 2: the one other member is enough (⌊n/2⌋+1 = 2 others could
    // never answer).
    let two = Members::new("a", ["b"]).unwrap();
    let mut acceptor = Acceptor::new(two, None, T, TTL);
    let effects = acceptor.handle(T, "b", &sync_reply(9, TTL, false));
    assert!(matches!(effects.notice, Some(Notice::Recovered { .. })));
    // n = 4: two of the three others.
    let four = Members::new("a", ["b", "c", "d"]).unwrap();
    let mut acceptor = Acceptor::new(four.clone(), None, T, TTL);
    acceptor.handle(T, "b", &sync_reply(9, TTL, false));
    assert!(acceptor.is_amnesiac());
    let effects = acceptor.handle(T, "d", &sync_reply(9, TTL, false));
    assert!(matches!(effects.notice, Some(Notice::Recovered { .. })));
    // n = 5: three of the four others.
    let five = Members::new("a", ["b", "c", "d", "e"]).unwrap();
    let mut acceptor = Acceptor::new(five, None, T, TTL);
    acceptor.handle(T, "b", &sync_reply(9, TTL, false));
    acceptor.handle(T, "c", &sync_reply(9, TTL, false));
    assert!(acceptor.is_amnesiac());
    acceptor.handle(T, "d", &sync_reply(9, TTL, false));
    assert!(!acceptor.is_amnesiac());
    // n = 4, two of four amnesiac (a majority is 3): neither rule yet.
    let mut acceptor = Acceptor::new(four, None, T, TTL);
    acceptor.handle(T, "b", &sync_reply(9, TTL, true));
    acceptor.tick(T + TTL);
    assert!(acceptor.is_amnesiac());
}

#[test]
fn a_failed_write_makes_the_acceptor_amnesiac() {
    let mut acceptor = granted("b", 5, T);
    acceptor.persist_failed(T + 1);
    assert!(acceptor.is_amnesiac());
    let promised = acceptor.durable().promised;
    assert_eq!(
        acceptor.handle(T + 1, "c", &prepare(b(99, 2))),
        Effects::reply(nack(b(99, 2), promised))
    );
    assert_eq!(acceptor.durable().promised, promised);
    assert_eq!(acceptor.tick(T + 1).broadcast, Some(Message::Sync));
    // What it promised in memory is kept through recovery.
    acceptor.handle(T + 2, "b", &sync_reply(1, TTL, false));
    acceptor.handle(T + 2, "c", &sync_reply(1, TTL, false));
    assert_eq!(acceptor.durable().promised, b(5, 1));
    assert_eq!(acceptor.quarantine_until(), Some(T + 1 + TTL));
}

#[test]
fn messages_from_non_members_and_for_the_proposer_are_ignored() {
    let mut acceptor = ready();
    assert_eq!(
        acceptor.handle(T, "z", &prepare(b(9, 1))),
        Effects::default()
    );
    assert_eq!(acceptor.durable(), Durable::default());
    for message in [
        Message::Accepted { ballot: b(1, 1) },
        Message::Promise {
            ballot: b(1, 1),
            grant: None,
        },
        Message::Learn {
            owner: "b".into(),
            token: 1,
            remaining_ms: 1,
            urls: Urls::default(),
        },
        sync_reply(1, 1, false),
    ] {
        assert_eq!(acceptor.handle(T, "b", &message), Effects::default());
    }
    // Its own Sync needs no answer.
    assert_eq!(acceptor.handle(T, "a", &Message::Sync), Effects::default());
}

/// A xorshift stream of messages from random members at growing times:
/// `promised` never decreases, every persist is ≥ the one before, and no
/// two tenures are granted with overlapping lives.
#[test]
fn promised_never_decreases_and_live_grants_are_never_replaced() {
    let mut acceptor = ready();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let ids = ["a", "b", "c"];
    let mut now = T;
    let mut last = acceptor.durable();
    let mut held: Option<(String, u64, Millis)> = None;
    for _ in 0..20_000 {
        now += rand(1_500);
        let from = ids[rand(3) as usize];
        let ballot = b(rand(40), rand(3) as u16);
        let owner = ids[rand(3) as usize];
        let token = rand(4);
        let message = match rand(4) {
            0 => prepare(ballot),
            1 | 2 => propose(ballot, owner, token),
            _ => release(owner, token),
        };
        let effects = acceptor.handle(now, from, &message);
        assert!(acceptor.durable() >= last);
        if let Some(persist) = effects.persist {
            assert!(persist >= last && persist == acceptor.durable());
        }
        last = acceptor.durable();
        if let Some(Message::Accepted { .. }) = effects.reply {
            if let Some((o, t, until)) = &held {
                assert!(
                    now >= *until || (o == owner && *t == token),
                    "replaced live grant"
                );
            }
            held = Some((owner.to_owned(), token, now + TTL));
        }
        if let Message::Release { owner: o, token: t } = &message {
            if held
                .as_ref()
                .is_some_and(|(ho, ht, until)| ho == o && ht == t && now < *until)
            {
                held = None;
            }
        }
        assert_eq!(
            acceptor.grant(now).map(|g| (g.owner.clone(), g.token)),
            held.as_ref()
                .filter(|h| now < h.2)
                .map(|h| (h.0.clone(), h.1))
        );
    }
}

/// A refusal that reports no grant.
fn nack(ballot: Ballot, promised: Ballot) -> Message {
    Message::Nack {
        ballot,
        promised,
        held: None,
    }
}
