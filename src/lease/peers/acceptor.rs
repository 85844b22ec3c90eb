//! One lease's acceptor (LEASES.md §3.3, §3.6), as a pure state machine:
//! [`Acceptor::handle`] takes `now` and a message and returns [`Effects`];
//! it reads no clock and does no I/O.
//!
//! The driver's part, for every effect: store `persist` durably (fsync)
//! **before** sending `reply` to the sender or `broadcast` to every other
//! member; if storing fails, send neither and call
//! [`Acceptor::persist_failed`]. Log `notice`. Call [`Acceptor::tick`] once
//! at start and whenever [`Acceptor::wake_at`] comes.
//!
//! What differs from the PaxosLease paper: `promised` and `max_ttl` are on
//! disk, so a restart needs only a quarantine (no ballot is ever promised
//! twice); a live grant is never replaced by another tenure's, whatever the
//! ballot (the audit's rule A2); a release must name the exact tenure. And
//! from LEASES.md: a quarantined acceptor refuses `Prepare` and `Propose`
//! with a `Nack` rather than in silence, so rounds need not time out.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use super::ballot::Ballot;
use super::faults::Faults;
use super::members::Members;
use super::messages::{GrantInfo, Held, Message, Urls};
use super::Millis;

/// Most time between two `Sync` broadcasts while amnesiac.
const SYNC_EVERY_MAX: Millis = 1_000;

/// Least time between two `Sync` broadcasts while amnesiac.
const SYNC_EVERY_MIN: Millis = 50;

/// What an acceptor keeps on disk: the highest ballot it promised, and the
/// longest `ttl` any ballot it promised asked for (how long its grants may
/// last, so how long it must stay silent after forgetting them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Durable {
    /// Ballots below this are refused.
    pub promised: Ballot,
    /// The longest `ttl_ms` promised for.
    pub max_ttl_ms: Millis,
}

impl Durable {
    /// The larger of each field: what a node that knew both would know.
    pub fn max(self, other: Durable) -> Durable {
        Durable {
            promised: self.promised.max(other.promised),
            max_ttl_ms: self.max_ttl_ms.max(other.max_ttl_ms),
        }
    }
}

/// A tenure this acceptor granted, kept in memory only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// The holder's node id.
    pub owner: String,
    /// The tenure's fencing token.
    pub token: u64,
    /// The ballot that last set it (acquisition or renewal).
    pub ballot: Ballot,
    /// From this instant on, the grant is gone (`now >= expires_at`).
    pub expires_at: Millis,
    /// Where the holder takes traffic.
    pub urls: Urls,
}

/// Something the driver should log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Notice {
    /// An amnesiac acceptor adopted the state of enough other members
    /// (`answers`) and persisted it (log at info).
    Recovered { state: Durable, answers: usize },
    /// A majority of members (this one included) is amnesiac: after one
    /// `ttl` of silence the acceptor started from the largest state anyone
    /// reported, or zero. Fencing tokens now rest on the wall-clock floor of
    /// ballots (§3.1). Log at warn as `lease_state_bootstrap`.
    Bootstrapped { state: Durable, answers: usize },
}

/// What handling one input asks of the driver (see the module docs for the
/// order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// Store this durably before anything below is sent.
    pub persist: Option<Durable>,
    /// Send this to the member the input came from.
    pub reply: Option<Message>,
    /// Send this to every other member.
    pub broadcast: Option<Message>,
    /// Log this.
    pub notice: Option<Notice>,
}

impl Effects {
    fn reply(message: Message) -> Effects {
        Effects {
            reply: Some(message),
            ..Effects::default()
        }
    }
}

/// An amnesiac acceptor's recovery (§3.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Recovery {
    /// When the state was lost (start, or a failed write).
    since: Millis,
    /// When to broadcast `Sync` next.
    next_sync_at: Millis,
    /// The latest answer of each other member.
    answers: BTreeMap<String, Answer>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Answer {
    state: Durable,
    amnesiac: bool,
}

/// One lease's acceptor on this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Acceptor {
    members: Members,
    ttl_ms: Millis,
    durable: Durable,
    grant: Option<Grant>,
    /// Prepare, Propose and Release are dropped before this instant.
    quarantine_until: Millis,
    /// `Some` while amnesiac: dropping them until recovered.
    recovery: Option<Recovery>,
    /// Deliberate bugs for the model checker; none in production.
    faults: Faults,
}

impl Acceptor {
    /// The acceptor after a (re)start at `now`, for a lease with `ttl_ms`.
    ///
    /// With the state file's content (`Some`), it is silent for
    /// `max(max_ttl_ms, ttl_ms)`: it forgot its grants, which may last that
    /// long. Without one (`None`: missing, corrupt or for another member
    /// list), it is amnesiac: silent until it has recovered its state from
    /// other members through `Sync` (see [`Acceptor::tick`]).
    pub fn new(members: Members, durable: Option<Durable>, now: Millis, ttl_ms: Millis) -> Self {
        let (durable, recovery) = match durable {
            Some(durable) => (durable, None),
            None => (Durable::default(), Some(Recovery::new(now))),
        };
        Acceptor {
            members,
            ttl_ms,
            durable,
            grant: None,
            quarantine_until: now.saturating_add(durable.max_ttl_ms.max(ttl_ms)),
            recovery,
            faults: Faults::default(),
        }
    }

    /// Breaks the rules `faults` names, for the model checker only
    /// (LEASES.md §6b); production keeps the default, the real protocol.
    #[doc(hidden)]
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Handles `message` from member `from` (this node's own proposer
    /// included) at `now`. Messages from non-members, and those meant for
    /// the proposer, have no effect.
    pub fn handle(&mut self, now: Millis, from: &str, message: &Message) -> Effects {
        if !self.members.contains(from) {
            return Effects::default();
        }
        // Read `now` once, and drop an expired grant before any rule looks.
        self.expire(now);
        let quarantined = self.is_quarantined(now);
        match message {
            Message::Sync => self.on_sync(from),
            Message::SyncReply {
                promised,
                max_ttl_ms,
                amnesiac,
            } => {
                let state = Durable {
                    promised: *promised,
                    max_ttl_ms: *max_ttl_ms,
                };
                self.on_sync_reply(now, from, state, *amnesiac)
            }
            // A refusal, not silence (LEASES.md §3.3.1 drops them): a
            // proposer waiting on this vote would otherwise wait out its
            // round timeout, where a refusal lets it fail at once and retry
            // when the grants it was told of run out. A refusal promises
            // and accepts nothing, so safety is the same. No grant is
            // reported: whatever this node granted before, it forgot.
            Message::Prepare { ballot, .. } | Message::Propose { ballot, .. } if quarantined => {
                Effects::reply(Message::Nack {
                    ballot: *ballot,
                    promised: self.durable.promised,
                    held: None,
                })
            }
            Message::Release { .. } if quarantined => Effects::default(),
            Message::Prepare { ballot, ttl_ms } => self.on_prepare(now, *ballot, *ttl_ms),
            Message::Propose {
                ballot,
                owner,
                token,
                ttl_ms,
                urls,
            } => self.on_propose(now, *ballot, owner, *token, *ttl_ms, urls),
            Message::Release { owner, token } => {
                self.on_release(owner, *token);
                Effects::default()
            }
            Message::Promise { .. }
            | Message::Accepted { .. }
            | Message::Nack { .. }
            | Message::Learn { .. } => Effects::default(),
        }
    }

    /// Time-driven work while amnesiac: broadcast `Sync` again, and
    /// bootstrap once a majority is known amnesiac and one `ttl` has passed.
    pub fn tick(&mut self, now: Millis) -> Effects {
        self.expire(now);
        let mut effects = self.try_recover(now);
        let every = (self.ttl_ms / 4).clamp(SYNC_EVERY_MIN, SYNC_EVERY_MAX);
        if let Some(recovery) = &mut self.recovery {
            if now >= recovery.next_sync_at {
                recovery.next_sync_at = now.saturating_add(every);
                effects.broadcast = Some(Message::Sync);
            }
        }
        effects
    }

    /// When [`Acceptor::tick`] has work; `None` when it has none.
    pub fn wake_at(&self) -> Option<Millis> {
        let recovery = self.recovery.as_ref()?;
        let bootstrap = self
            .majority_amnesiac(recovery)
            .then(|| recovery.since.saturating_add(self.ttl_ms));
        Some(bootstrap.map_or(recovery.next_sync_at, |b| b.min(recovery.next_sync_at)))
    }

    /// Records that this node's proposer will use `ballot` (§3.4.2): raises
    /// `promised` to it, and `max_ttl` to this lease's `ttl`, even while
    /// quarantined. Returns what to store before the ballot is sent, if
    /// anything grew.
    pub fn reserve(&mut self, ballot: Ballot) -> Option<Durable> {
        self.raise(Durable {
            promised: ballot,
            max_ttl_ms: self.ttl_ms,
        })
    }

    /// The driver could not store a `persist`: what this acceptor promised
    /// is not durable, so it goes silent and recovers as if its file were
    /// lost (§3.6).
    pub fn persist_failed(&mut self, now: Millis) {
        self.recovery = Some(Recovery::new(now));
    }

    /// The live grant at `now`, if any: who holds the lease as far as this
    /// acceptor knows (followers learn the holder from it too).
    pub fn grant(&self, now: Millis) -> Option<&Grant> {
        self.grant.as_ref().filter(|g| now < g.expires_at)
    }

    /// The state that is (or is being) on disk.
    pub fn durable(&self) -> Durable {
        self.durable
    }

    /// Whether Prepare, Propose and Release are dropped at `now`.
    pub fn is_quarantined(&self, now: Millis) -> bool {
        self.recovery.is_some() || now < self.quarantine_until
    }

    /// Whether the durable state is lost and not yet recovered.
    pub fn is_amnesiac(&self) -> bool {
        self.recovery.is_some()
    }

    /// The end of the quarantine; `None` while amnesiac (it ends only after
    /// recovery).
    pub fn quarantine_until(&self) -> Option<Millis> {
        self.recovery.is_none().then_some(self.quarantine_until)
    }

    /// The member list.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The lease's `ttl`.
    pub fn ttl_ms(&self) -> Millis {
        self.ttl_ms
    }

    fn expire(&mut self, now: Millis) {
        if self.grant.as_ref().is_some_and(|g| now >= g.expires_at) {
            self.grant = None;
        }
    }

    /// Raises the durable state to at least `to`; `Some` if it grew.
    fn raise(&mut self, to: Durable) -> Option<Durable> {
        let before = self.durable;
        self.durable = before.max(to);
        (self.durable != before).then_some(self.durable)
    }

    fn held(&self, now: Millis) -> Option<Held> {
        self.grant(now).map(|g| Held {
            owner: g.owner.clone(),
            token: g.token,
            remaining_ms: g.expires_at - now,
        })
    }

    fn nack(&self, now: Millis, ballot: Ballot) -> Effects {
        Effects::reply(Message::Nack {
            ballot,
            promised: self.durable.promised,
            held: self.held(now),
        })
    }

    /// §3.3.2.
    fn on_prepare(&mut self, now: Millis, ballot: Ballot, ttl_ms: Millis) -> Effects {
        if ballot < self.durable.promised {
            return self.nack(now, ballot);
        }
        let persist = self.raise(Durable {
            promised: ballot,
            max_ttl_ms: ttl_ms,
        });
        let grant = self.grant(now).map(|g| GrantInfo {
            owner: g.owner.clone(),
            token: g.token,
            ballot: g.ballot,
            remaining_ms: g.expires_at - now,
            urls: g.urls.clone(),
        });
        Effects {
            persist,
            ..Effects::reply(Message::Promise { ballot, grant })
        }
    }

    /// §3.3.3.
    fn on_propose(
        &mut self,
        now: Millis,
        ballot: Ballot,
        owner: &str,
        token: u64,
        ttl_ms: Millis,
        urls: &Urls,
    ) -> Effects {
        if ballot < self.durable.promised || ttl_ms > self.durable.max_ttl_ms {
            return self.nack(now, ballot);
        }
        // Never overwrite another tenure's live grant (rule A2); the same
        // tenure renews. The `overwrite_live_grant` fault breaks A2.
        let other_tenure = self
            .grant(now)
            .is_some_and(|g| g.owner != owner || g.token != token);
        if other_tenure && !self.faults.overwrite_live_grant {
            return self.nack(now, ballot);
        }
        let persist = self.raise(Durable {
            promised: ballot,
            max_ttl_ms: 0,
        });
        let renewed = self.grant(now).map_or(0, |g| g.expires_at);
        self.grant = Some(Grant {
            owner: owner.to_owned(),
            token,
            ballot,
            // A renewal never shortens what this acceptor already promised.
            expires_at: now.saturating_add(ttl_ms).max(renewed),
            urls: urls.clone(),
        });
        Effects {
            persist,
            ..Effects::reply(Message::Accepted { ballot })
        }
    }

    /// §3.3.4: only the exact live tenure; `promised` stays. The
    /// `owner_only_release` fault drops the token from the match.
    fn on_release(&mut self, owner: &str, token: u64) {
        let owner_only = self.faults.owner_only_release;
        if self
            .grant
            .as_ref()
            .is_some_and(|g| g.owner == owner && (g.token == token || owner_only))
        {
            self.grant = None;
        }
    }

    fn on_sync(&self, from: &str) -> Effects {
        if self.members.is_me(from) {
            return Effects::default();
        }
        Effects::reply(Message::SyncReply {
            promised: self.durable.promised,
            max_ttl_ms: self.durable.max_ttl_ms,
            amnesiac: self.recovery.is_some(),
        })
    }

    fn on_sync_reply(
        &mut self,
        now: Millis,
        from: &str,
        state: Durable,
        amnesiac: bool,
    ) -> Effects {
        if self.members.is_me(from) {
            return Effects::default();
        }
        let Some(recovery) = &mut self.recovery else {
            return Effects::default();
        };
        let answer = recovery
            .answers
            .entry(from.to_owned())
            .or_insert(Answer { state, amnesiac });
        // The latest word on amnesia; the largest state ever reported.
        answer.state = answer.state.max(state);
        answer.amnesiac = amnesiac;
        self.try_recover(now)
    }

    /// §3.6, with the threshold made exact. A ballot persisted by a
    /// majority was persisted by at least `⌊n/2⌋` members besides this one;
    /// to meet every such set, the answers must come from `n − ⌊n/2⌋ =
    /// ⌈n/2⌉` other members. For odd `n` that is LEASES.md's `⌊n/2⌋+1`;
    /// for even `n` the note's count would exceed what can ever answer when
    /// the rest is amnesiac (n = 2: two *other* members), and this one is
    /// the exact complement of the bootstrap rule: recovery is impossible
    /// exactly when a majority, this node included, is known amnesiac.
    fn try_recover(&mut self, now: Millis) -> Effects {
        let Some(recovery) = &self.recovery else {
            return Effects::default();
        };
        let sane = recovery.answers.values().filter(|a| !a.amnesiac).count();
        let needed = self.members.len() - self.members.len() / 2;
        let bootstrap =
            self.majority_amnesiac(recovery) && now >= recovery.since.saturating_add(self.ttl_ms);
        if sane < needed && !bootstrap {
            return Effects::default();
        }
        let answers = recovery.answers.len();
        let since = recovery.since;
        let adopted = recovery
            .answers
            .values()
            .fold(self.durable, |acc, a| acc.max(a.state));
        self.durable = adopted;
        self.quarantine_until = since.saturating_add(adopted.max_ttl_ms.max(self.ttl_ms));
        self.recovery = None;
        let notice = match sane >= needed {
            true => Notice::Recovered {
                state: adopted,
                answers,
            },
            false => Notice::Bootstrapped {
                state: adopted,
                answers,
            },
        };
        Effects {
            persist: Some(adopted),
            notice: Some(notice),
            ..Effects::default()
        }
    }

    /// Whether a majority of members, this one included, said it is
    /// amnesiac: then no majority of others can ever answer sanely.
    fn majority_amnesiac(&self, recovery: &Recovery) -> bool {
        let amnesiac = 1 + recovery.answers.values().filter(|a| a.amnesiac).count();
        amnesiac >= self.members.majority()
    }
}

impl Recovery {
    fn new(now: Millis) -> Recovery {
        Recovery {
            since: now,
            next_sync_at: now,
            answers: BTreeMap::new(),
        }
    }
}
