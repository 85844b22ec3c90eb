//! Each proposer rule of LEASES.md §3.4 and §3.5 at its boundary, driven
//! the way the driver will: replies also pass the own acceptor first.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use crate::lease::peers::acceptor::Durable;
use crate::lease::peers::messages::GrantInfo;
use crate::lease::peers::messages::Held;
use std::time::Duration;

const TTL: Millis = 10_000;
const UNIX: u64 = 1_700_000_000;
/// A time after the own acceptor's start quarantine.
const T: Millis = 50_000;

fn members() -> Members {
    Members::new("a", ["b", "c"]).unwrap()
}

fn timing() -> Timing {
    Timing::new(Duration::from_secs(10), Duration::from_secs(3), 1.0)
}

fn urls() -> Urls {
    Urls {
        forward: Some("http://a:8000".into()),
        public: None,
    }
}

struct Fixture {
    p: Proposer,
    own: Acceptor,
    at: Millis,
}

impl Fixture {
    /// `a` at `T`, healthy, its acceptor out of quarantine.
    fn new() -> Fixture {
        Fixture::with(
            timing(),
            Acceptor::new(members(), Some(Durable::default()), 0, TTL),
        )
    }

    /// `a` just restarted at `T` with its file: its own vote does not count.
    fn quarantined() -> Fixture {
        Fixture::with(
            timing(),
            Acceptor::new(members(), Some(Durable::default()), T, TTL),
        )
    }

    fn with(timing: Timing, own: Acceptor) -> Fixture {
        Fixture {
            p: Proposer::new(members(), timing, urls(), true, 7),
            own,
            at: T,
        }
    }

    fn ev(&mut self, event: Event) -> Vec<Action> {
        let now = Now {
            at: self.at,
            wall_floor: UNIX,
        };
        self.p.on_event(now, &mut self.own, event)
    }

    /// A message from `from`, given to the acceptor and then the proposer.
    fn recv(&mut self, from: &str, message: Message) -> Vec<Action> {
        let _ = self.own.handle(self.at, from, &message);
        self.ev(Event::Received {
            from: from.into(),
            message,
        })
    }

    /// Waits for the planned round to start; returns its ballot.
    fn start_round(&mut self) -> Ballot {
        self.start().0
    }

    /// Waits for the planned round to start; returns its ballot and every
    /// action until then.
    fn start(&mut self) -> (Ballot, Vec<Action>) {
        let mut actions = self.ev(Event::Tick);
        for _ in 0..10 {
            if let Some(ballot) = self.p.round_ballot() {
                return (ballot, actions);
            }
            self.at = self.p.next_attempt().unwrap().max(self.at);
            actions.extend(self.ev(Event::Timer(TimerKind::Attempt)));
        }
        panic!("no round started: {:?}", self.p);
    }

    /// Acquires with `b`'s votes; returns (token, t0).
    fn hold(&mut self) -> (u64, Millis) {
        let ballot = self.start_round();
        let t0 = self.at;
        self.at += 10;
        self.recv("b", promise(ballot, None));
        self.at += 10;
        self.recv("b", Message::Accepted { ballot });
        let (token, _) = self.p.tenure().unwrap();
        assert_eq!(token, ballot.as_u64());
        (token, t0)
    }
}

fn promise(ballot: Ballot, grant: Option<GrantInfo>) -> Message {
    Message::Promise { ballot, grant }
}

fn grant(owner: &str, token: u64, remaining_ms: Millis) -> GrantInfo {
    GrantInfo {
        owner: owner.into(),
        token,
        ballot: Ballot::from_u64(token).unwrap(),
        remaining_ms,
        urls: Urls::default(),
    }
}

fn broadcasts(actions: &[Action]) -> Vec<&Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn proposed(actions: &[Action]) -> Option<(Ballot, u64)> {
    broadcasts(actions).into_iter().find_map(|m| match m {
        Message::Propose { ballot, token, .. } => Some((*ballot, *token)),
        _ => None,
    })
}

fn views(actions: &[Action]) -> Vec<&ViewChange> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Publish(v) => Some(v),
            _ => None,
        })
        .collect()
}

fn timer(actions: &[Action], kind: TimerKind) -> Option<Option<Millis>> {
    actions.iter().rev().find_map(|a| match a {
        Action::SetTimer { kind: k, at } if *k == kind => Some(*at),
        _ => None,
    })
}

// §3.4.1 when to acquire

#[test]
fn acquires_after_a_jitter_below_a_tenth_of_the_ttl() {
    for seed in 0..50 {
        let mut f = Fixture::new();
        f.p = Proposer::new(members(), timing(), urls(), true, seed);
        let actions = f.ev(Event::Tick);
        let at = match f.p.round_ballot() {
            Some(_) => T,
            None => timer(&actions, TimerKind::Attempt).unwrap().unwrap(),
        };
        assert!((T..T + TTL / 10).contains(&at), "seed {seed}: {at}");
    }
}

#[test]
fn the_ballot_is_persisted_before_the_prepare_is_sent() {
    let mut f = Fixture::new();
    let (_, actions) = f.start();
    let ballot = f.p.round_ballot().unwrap();
    assert_eq!(ballot, Ballot::new(UNIX + 1, 0).unwrap());
    let persist = actions
        .iter()
        .position(|a| *a == Action::Persist(f.own.durable()));
    let prepare = actions.iter().position(|a| {
        *a == Action::Broadcast(Message::Prepare {
            ballot,
            ttl_ms: TTL,
        })
    });
    assert!(persist.unwrap() < prepare.unwrap(), "{actions:?}");
    assert_eq!(f.own.durable().promised, ballot);
}

#[test]
fn the_ballot_is_reserved_even_while_the_own_acceptor_is_quarantined() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    assert_eq!(f.own.durable().promised, ballot);
}

#[test]
fn no_acquisition_while_unhealthy_until_healthy_again() {
    let mut f = Fixture::new();
    f.p = Proposer::new(members(), timing(), urls(), false, 7);
    let actions = f.ev(Event::Tick);
    assert_eq!(f.p.next_attempt(), None);
    assert_eq!(timer(&actions, TimerKind::Attempt), None);
    f.ev(Event::HealthChanged(true));
    assert!(f.p.next_attempt().is_some() || f.p.round_ballot().is_some());
}

#[test]
fn no_acquisition_while_the_own_acceptor_is_amnesiac() {
    let mut f = Fixture::with(timing(), Acceptor::new(members(), None, T, TTL));
    f.ev(Event::Tick);
    assert_eq!(f.p.next_attempt(), None);
    // Recovered: planned.
    f.recv("b", sync_reply());
    f.recv("c", sync_reply());
    assert!(!f.own.is_amnesiac());
    assert!(f.p.next_attempt().is_some() || f.p.round_ballot().is_some());
}

fn sync_reply() -> Message {
    Message::SyncReply {
        promised: Ballot::ZERO,
        max_ttl_ms: TTL,
        amnesiac: false,
    }
}

#[test]
fn a_live_grant_at_the_own_acceptor_blocks_acquisition_and_names_the_holder() {
    let mut f = Fixture::new();
    let theirs = Ballot::new(UNIX, 1).unwrap();
    f.recv(
        "b",
        Message::Prepare {
            ballot: theirs,
            ttl_ms: TTL,
        },
    );
    let propose = Message::Propose {
        ballot: theirs,
        owner: "b".into(),
        token: theirs.as_u64(),
        ttl_ms: TTL,
        urls: Urls::default(),
    };
    let actions = f.recv("b", propose);
    assert_eq!(
        views(&actions),
        [&ViewChange::Follower {
            holder: "b".into(),
            token: theirs.as_u64(),
            urls: Urls::default()
        }]
    );
    assert_eq!(timer(&actions, TimerKind::View), Some(Some(T + TTL)));
    let next = f.p.next_attempt().unwrap();
    assert!((T + TTL..T + TTL + TTL / 10).contains(&next), "{next}");
    // At the grant's expiry the view clears.
    f.at = T + TTL;
    let actions = f.ev(Event::Timer(TimerKind::View));
    assert_eq!(views(&actions), [&ViewChange::NotHolding]);
}

#[test]
fn an_unexpired_learn_blocks_acquisition_until_it_runs_out() {
    let mut f = Fixture::new();
    let learn = Message::Learn {
        owner: "c".into(),
        token: 99,
        remaining_ms: 4_000,
        urls: Urls::default(),
    };
    let actions = f.recv("c", learn);
    assert!(matches!(
        views(&actions)[..],
        [ViewChange::Follower { token: 99, .. }]
    ));
    assert!(f.p.next_attempt().unwrap() >= T + 4_000);
    assert_eq!(f.p.round_ballot(), None);
    // A Learn relayed for someone else is not believed.
    let mut g = Fixture::new();
    g.recv(
        "b",
        Message::Learn {
            owner: "c".into(),
            token: 99,
            remaining_ms: 4_000,
            urls: Urls::default(),
        },
    );
    assert_eq!(g.p.view(), &ViewChange::NotHolding);
}

#[test]
fn the_holders_release_clears_the_learned_view_and_replans_quickly() {
    let mut f = Fixture::new();
    f.recv(
        "c",
        Message::Learn {
            owner: "c".into(),
            token: 99,
            remaining_ms: 9_000,
            urls: Urls::default(),
        },
    );
    f.at += 1_000;
    let actions = f.recv(
        "c",
        Message::Release {
            owner: "c".into(),
            token: 99,
        },
    );
    assert_eq!(views(&actions), [&ViewChange::NotHolding]);
    let next = f.p.next_attempt().unwrap_or(f.at);
    assert!(next < f.at + TTL / 10, "{next}");
}

// §3.4.3-6 the round

#[test]
fn holds_from_a_majority_of_accepted_until_t0_plus_d() {
    let mut f = Fixture::new();
    let ballot = f.start_round();
    let t0 = f.at;
    f.at += 100;
    let actions = f.recv("b", promise(ballot, None));
    // Own promise + b's: a majority of 3.
    assert_eq!(proposed(&actions), Some((ballot, ballot.as_u64())));
    f.at += 100;
    let actions = f.recv("b", Message::Accepted { ballot });
    let valid_until = t0 + timing().usable_ms;
    assert_eq!(timing().usable_ms, 9_796);
    assert_eq!(
        views(&actions),
        [&ViewChange::Holding {
            token: ballot.as_u64(),
            valid_until
        }]
    );
    let publish = actions.iter().position(|a| matches!(a, Action::Publish(_)));
    let learn = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast(Message::Learn { .. })));
    assert!(publish < learn);
    assert!(broadcasts(&actions).contains(&&Message::Learn {
        owner: "a".into(),
        token: ballot.as_u64(),
        remaining_ms: valid_until - f.at,
        urls: urls()
    }));
    assert_eq!(timer(&actions, TimerKind::Expire), Some(Some(valid_until)));
    // Renew every renew_every, counted from t0.
    assert_eq!(timer(&actions, TimerKind::Attempt), Some(Some(t0 + 3_000)));
}

#[test]
fn duplicate_replies_from_one_node_never_make_a_quorum() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    for _ in 0..5 {
        let actions = f.recv("b", promise(ballot, None));
        assert_eq!(proposed(&actions), None);
    }
    let actions = f.recv("c", promise(ballot, None));
    assert!(proposed(&actions).is_some());
    for _ in 0..5 {
        f.recv("b", Message::Accepted { ballot });
        assert_eq!(f.p.tenure(), None);
    }
    f.recv("c", Message::Accepted { ballot });
    assert!(f.p.tenure().is_some());
}

#[test]
fn replies_for_another_ballot_or_from_strangers_are_not_counted() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    let other = Ballot::new(ballot.counter() - 1, 1).unwrap();
    f.recv("b", promise(other, None));
    f.recv("z", promise(ballot, None));
    let actions = f.recv("c", promise(ballot, None));
    assert_eq!(proposed(&actions), None);
    // An Accepted before the Propose phase counts for nothing either.
    f.recv("b", Message::Accepted { ballot });
    assert_eq!(
        proposed(&f.recv("b", promise(ballot, None))).map(|p| p.0),
        Some(ballot)
    );
}

#[test]
fn a_quorum_completed_at_t0_plus_d_is_discarded() {
    // A round timeout longer than D, so the boundary can be reached.
    let short = Timing {
        ttl_ms: TTL,
        usable_ms: 1_000,
        renew_every_ms: 300,
    };
    for (delay, holds) in [(999, true), (1_000, false)] {
        let own = Acceptor::new(members(), Some(Durable::default()), 0, TTL);
        let mut f = Fixture::with(short, own);
        let ballot = f.start_round();
        let t0 = f.at;
        f.recv("b", promise(ballot, None));
        f.at = t0 + delay;
        let actions = f.recv("b", Message::Accepted { ballot });
        assert_eq!(f.p.tenure().is_some(), holds, "delay {delay}");
        assert_eq!(views(&actions).is_empty(), !holds);
        // The discarded tenure's grants are let go at once.
        let gone: &[u64] = if holds { &[] } else { &[ballot.as_u64()] };
        assert_eq!(released(&actions), gone);
        assert_eq!(f.own.grant(f.at).is_some(), holds);
    }
}

fn released(actions: &[Action]) -> Vec<u64> {
    broadcasts(actions)
        .into_iter()
        .filter_map(|m| match m {
            Message::Release { owner, token } if owner == "a" => Some(*token),
            _ => None,
        })
        .collect()
}

#[test]
fn an_acquisition_lost_after_its_propose_releases_the_grants_it_left() {
    let mut f = Fixture::new();
    let ballot = f.start_round();
    let actions = f.recv("b", promise(ballot, None));
    assert_eq!(proposed(&actions).map(|p| p.1), Some(ballot.as_u64()));
    // The own acceptor accepted: its grant would keep everyone out.
    assert_eq!(f.own.grant(f.at).unwrap().owner, "a");
    let held = Message::Nack {
        ballot,
        promised: ballot,
        held: Some(Held {
            owner: "c".into(),
            token: 5,
            remaining_ms: 3_000,
        }),
    };
    assert!(released(&f.recv("b", held.clone())).is_empty());
    let actions = f.recv("c", held);
    assert_eq!(f.p.round_ballot(), None);
    assert_eq!(released(&actions), [ballot.as_u64()]);
    assert_eq!(f.own.grant(f.at), None);
}

#[test]
fn an_acquisition_timed_out_after_its_propose_releases_but_not_before() {
    for proposing in [false, true] {
        let mut f = Fixture::new();
        let ballot = f.start_round();
        let t0 = f.at;
        if proposing {
            f.recv("b", promise(ballot, None));
        }
        f.at = t0 + timing().round_timeout_ms();
        let actions = f.ev(Event::Timer(TimerKind::Round));
        assert_eq!(f.p.round_ballot(), None);
        let gone: &[u64] = if proposing { &[ballot.as_u64()] } else { &[] };
        assert_eq!(released(&actions), gone, "proposing: {proposing}");
        assert_eq!(f.own.grant(f.at), None);
    }
}

#[test]
fn a_failed_renewal_of_a_valid_tenure_releases_nothing() {
    let mut f = Fixture::new();
    let (token, t0) = f.hold();
    f.at = t0 + timing().renew_every_ms;
    f.ev(Event::Timer(TimerKind::Attempt));
    let renewal = f.p.round_ballot().unwrap();
    f.recv("b", promise(renewal, None));
    let refused = |promised| Message::Nack {
        ballot: renewal,
        promised,
        held: None,
    };
    let higher = Ballot::new(renewal.counter() + 5, 2).unwrap();
    f.recv("b", refused(higher));
    let actions = f.recv("c", refused(higher));
    assert_eq!(f.p.round_ballot(), None);
    assert!(released(&actions).is_empty());
    assert_eq!(f.p.tenure().map(|t| t.0), Some(token));
    assert!(f.own.grant(f.at).is_some());
}

#[test]
fn the_round_fails_at_min_of_ttl_over_4_and_2_s_then_backs_off() {
    let mut f = Fixture::quarantined();
    let (_, actions) = f.start();
    let t0 = f.at;
    assert_eq!(timer(&actions, TimerKind::Round), Some(Some(t0 + 2_000)));
    f.at = t0 + 1_999;
    f.ev(Event::Tick);
    assert!(f.p.round_ballot().is_some());
    f.at = t0 + 2_000;
    f.ev(Event::Timer(TimerKind::Round));
    assert_eq!(f.p.round_ballot(), None);
    let retry = f.p.next_attempt().unwrap() - f.at;
    assert!((25..=50).contains(&retry), "{retry}");
    // Each failure doubles the step, up to ttl/4.
    let mut steps = Vec::new();
    for _ in 0..8 {
        f.at = f.p.next_attempt().unwrap();
        f.ev(Event::Timer(TimerKind::Attempt));
        f.at += 2_000;
        f.ev(Event::Timer(TimerKind::Round));
        steps.push(f.p.next_attempt().unwrap() - f.at);
    }
    assert!((50..=100).contains(&steps[0]), "{steps:?}");
    assert!(steps.iter().all(|s| *s <= TTL / 4), "{steps:?}");
    assert!(steps[7] >= TTL / 8, "{steps:?}");
    // A reply after the deadline is not counted.
    let ballot = {
        f.at = f.p.next_attempt().unwrap();
        f.ev(Event::Timer(TimerKind::Attempt));
        f.p.round_ballot().unwrap()
    };
    f.at += 2_000;
    f.recv("b", promise(ballot, None));
    let actions = f.recv("c", promise(ballot, None));
    assert_eq!(proposed(&actions), None);
}

#[test]
fn a_short_ttl_rounds_time_out_after_a_quarter_of_it() {
    assert_eq!(
        Timing::new(Duration::from_secs(4), Duration::from_secs(1), 1.0).round_timeout_ms(),
        1_000
    );
    assert_eq!(timing().round_timeout_ms(), 2_000);
}

#[test]
fn an_unreachable_open_majority_retries_when_enough_grants_run_out() {
    let mut f = Fixture::new();
    let ballot = f.start_round();
    f.recv("b", promise(ballot, Some(grant("c", 77, 6_000))));
    assert!(
        f.p.round_ballot().is_some(),
        "one of three may still answer"
    );
    f.recv("c", promise(ballot, Some(grant("c", 77, 4_000))));
    // Out of reach: one of the two blocking grants must go, the shorter.
    assert_eq!(f.p.round_ballot(), None);
    let next = f.p.next_attempt().unwrap();
    assert!(
        (f.at + 4_000..f.at + 4_000 + TTL / 10).contains(&next),
        "{next}"
    );
}

#[test]
fn refusals_without_a_grant_back_off_and_raise_the_next_ballot() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    let high = Ballot::new(ballot.counter() + 50, 2).unwrap();
    for from in ["b", "c"] {
        f.recv(
            from,
            Message::Nack {
                ballot,
                promised: high,
                held: None,
            },
        );
    }
    assert_eq!(f.p.round_ballot(), None);
    assert!(f.p.next_attempt().unwrap() - f.at <= 50);
    f.at = f.p.next_attempt().unwrap();
    f.ev(Event::Timer(TimerKind::Attempt));
    assert!(f.p.round_ballot().unwrap() > high);
}

#[test]
fn a_propose_refused_for_a_live_grant_retries_after_it() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    f.recv("b", promise(ballot, None));
    f.recv("c", promise(ballot, None));
    let held = |ms| Message::Nack {
        ballot,
        promised: ballot,
        held: Some(Held {
            owner: "c".into(),
            token: 5,
            remaining_ms: ms,
        }),
    };
    f.recv("b", held(3_000));
    f.recv("c", held(2_000));
    assert_eq!(f.p.round_ballot(), None);
    assert!(f.p.next_attempt().unwrap() >= f.at + 2_000);
}

// §3.4.4-5 renewals

#[test]
fn renewals_keep_the_token_and_extend_validity() {
    let mut f = Fixture::new();
    let (token, t0) = f.hold();
    f.at = t0 + 3_000;
    f.ev(Event::Timer(TimerKind::Attempt));
    let ballot = f.p.round_ballot().unwrap();
    assert!(ballot > Ballot::from_u64(token).unwrap());
    // The own acceptor reported (a, token): open, as this is a renewal.
    let actions = f.recv("c", promise(ballot, Some(grant("a", token, 7_000))));
    assert_eq!(proposed(&actions), Some((ballot, token)));
    let actions = f.recv("c", Message::Accepted { ballot });
    assert_eq!(
        views(&actions),
        [&ViewChange::Holding {
            token,
            valid_until: t0 + 3_000 + timing().usable_ms
        }]
    );
}

#[test]
fn the_own_old_tenure_blocks_a_new_acquisition() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    let old = Ballot::new(UNIX - 100, 0).unwrap().as_u64();
    // Not renewing: (a, old token) is not open.
    f.recv("b", promise(ballot, Some(grant("a", old, 5_000))));
    f.recv("c", promise(ballot, Some(grant("a", old, 5_000))));
    assert_eq!(f.p.round_ballot(), None);
    assert_eq!(f.p.tenure(), None);
}

#[test]
fn a_renewal_is_open_only_for_the_exact_tenure_still_valid() {
    let mut f = Fixture::new();
    let (token, t0) = f.hold();
    f.at = t0 + 3_000;
    f.ev(Event::Timer(TimerKind::Attempt));
    let ballot = f.p.round_ballot().unwrap();
    f.recv("b", promise(ballot, Some(grant("a", token - 1, 7_000))));
    f.recv("c", promise(ballot, Some(grant("b", token, 7_000))));
    assert_eq!(f.p.round_ballot(), None, "neither reply is open");
    // Still holding until valid_until; the renewal is retried.
    assert!(f.p.tenure().is_some());
}

#[test]
fn the_tenure_ends_at_valid_until_and_a_running_renewal_dies_with_it() {
    let mut f = Fixture::new();
    let (token, t0) = f.hold();
    let valid_until = t0 + timing().usable_ms;
    f.at = valid_until - 1_000;
    f.ev(Event::Timer(TimerKind::Attempt));
    let renewal = f.p.round_ballot().unwrap();
    f.at = valid_until - 1;
    f.ev(Event::Tick);
    assert_eq!(f.p.tenure(), Some((token, valid_until)));
    f.at = valid_until;
    let actions = f.ev(Event::Timer(TimerKind::Expire));
    assert_eq!(views(&actions), [&ViewChange::NotHolding]);
    assert_eq!(f.p.tenure(), None);
    // Published as over before its grants are released.
    let publish = actions.iter().position(|a| matches!(a, Action::Publish(_)));
    let release = actions
        .iter()
        .position(|a| matches!(a, Action::Broadcast(_)));
    assert!(publish < release, "{actions:?}");
    assert_eq!(released(&actions), [token]);
    assert_eq!(f.own.grant(f.at), None);
    assert_ne!(f.p.round_ballot(), Some(renewal));
    // Its late acceptances are not a tenure.
    f.recv("b", promise(renewal, None));
    f.recv("b", Message::Accepted { ballot: renewal });
    assert_eq!(f.p.tenure(), None);
}

// §3.5 step-down

#[test]
fn step_down_publishes_first_then_releases_and_waits_one_ttl() {
    let mut f = Fixture::new();
    let (token, _) = f.hold();
    assert!(f.own.grant(f.at).is_some());
    f.at += 500;
    let actions = f.ev(Event::StepDown);
    let release = Message::Release {
        owner: "a".into(),
        token,
    };
    let publish = actions
        .iter()
        .position(|a| *a == Action::Publish(ViewChange::NotHolding));
    let sent = actions
        .iter()
        .position(|a| *a == Action::Broadcast(release.clone()));
    assert!(publish.unwrap() < sent.unwrap(), "{actions:?}");
    assert!(f.own.grant(f.at).is_none(), "the own acceptor released too");
    let stepped = f.at;
    let next = f.p.next_attempt().unwrap();
    assert!(next >= stepped + TTL, "{next}");
    // After one ttl: a new tenure with a greater token.
    let (again, _) = f.hold();
    assert!(f.at >= stepped + TTL);
    assert!(again > token);
}

#[test]
fn failing_health_steps_down() {
    let mut f = Fixture::new();
    let (token, _) = f.hold();
    let actions = f.ev(Event::HealthChanged(false));
    assert_eq!(views(&actions), [&ViewChange::NotHolding]);
    assert!(broadcasts(&actions).contains(&&Message::Release {
        owner: "a".into(),
        token
    }));
    assert_eq!(f.p.next_attempt(), None);
}

#[test]
fn stepping_down_mid_acquisition_releases_the_proposed_token() {
    let mut f = Fixture::quarantined();
    let ballot = f.start_round();
    f.recv("b", promise(ballot, None));
    f.recv("c", promise(ballot, None));
    let actions = f.ev(Event::StepDown);
    assert_eq!(
        broadcasts(&actions),
        [&Message::Release {
            owner: "a".into(),
            token: ballot.as_u64()
        }]
    );
    f.recv("b", Message::Accepted { ballot });
    f.recv("c", Message::Accepted { ballot });
    assert_eq!(f.p.tenure(), None);
}

#[test]
fn a_failed_persist_abandons_the_round() {
    let mut f = Fixture::new();
    f.start_round();
    f.own.persist_failed(f.at);
    f.ev(Event::PersistFailed);
    assert_eq!(f.p.round_ballot(), None);
    // The own acceptor must recover before any new acquisition.
    f.at += 1_000;
    f.ev(Event::Tick);
    assert_eq!(f.p.next_attempt(), None);
}

#[test]
fn a_lone_member_acquires_by_itself() {
    let alone = Members::new("a", Vec::<String>::new()).unwrap();
    let own = Acceptor::new(alone.clone(), Some(Durable::default()), 0, TTL);
    let mut p = Proposer::new(alone, timing(), urls(), true, 1);
    let mut own = own;
    let mut at = T;
    let mut actions = p.on_event(
        Now {
            at,
            wall_floor: UNIX,
        },
        &mut own,
        Event::Tick,
    );
    if p.tenure().is_none() {
        at = p.next_attempt().unwrap();
        actions = p.on_event(
            Now {
                at,
                wall_floor: UNIX,
            },
            &mut own,
            Event::Timer(TimerKind::Attempt),
        );
    }
    let (token, valid_until) = p.tenure().unwrap();
    assert_eq!(valid_until, at + timing().usable_ms);
    assert_eq!(
        views(&actions),
        [&ViewChange::Holding { token, valid_until }]
    );
}

#[test]
fn timers_are_set_once_and_rearmed_after_firing() {
    let mut f = Fixture::new();
    let (_, t0) = f.hold();
    let actions = f.ev(Event::Tick);
    assert_eq!(
        timer(&actions, TimerKind::Attempt),
        None,
        "unchanged: not re-sent"
    );
    // Fired early (a model checker may): armed again for the same instant.
    let actions = f.ev(Event::Timer(TimerKind::Attempt));
    assert_eq!(timer(&actions, TimerKind::Attempt), Some(Some(t0 + 3_000)));
}

#[test]
fn timing_uses_validity_for_d() {
    let t = Timing::new(Duration::from_millis(10_000), Duration::from_secs(3), 1.0);
    assert_eq!(t.ttl_ms, 10_000);
    assert_eq!(t.usable_ms, 9_796); // 9 796.98 rounded down
    let t = Timing::new(Duration::from_millis(15_000), Duration::from_secs(5), 5.0);
    assert_eq!(t.usable_ms, 13_566);
}
