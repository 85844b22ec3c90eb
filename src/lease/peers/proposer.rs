//! One lease's proposer (LEASES.md §3.4, §3.5) and this node's view of the
//! lease, as a pure state machine: [`Proposer::on_event`] takes `now`, this
//! node's own [`Acceptor`] and an [`Event`], and returns [`Action`]s.
//!
//! The proposer owns the schedule: when to try, renew, give up, and when a
//! tenure ends. The driver's part:
//! - Execute the actions **in order**: store `Persist` durably before
//!   anything after it is sent (if that fails, skip the rest, call
//!   [`Acceptor::persist_failed`] and feed [`Event::PersistFailed`]);
//!   `Broadcast` goes to every *other* member (the proposer already gave it
//!   to its own acceptor, whose vote counts unless quarantined); `Publish`
//!   replaces the lease view; `SetTimer` (re)arms or cancels the one timer
//!   of that kind, which comes back as [`Event::Timer`].
//! - After giving a received message to the acceptor (and sending its
//!   reply), give it here too as [`Event::Received`]; after
//!   [`Acceptor::tick`], feed [`Event::Tick`]. The view and the acquisition
//!   schedule follow the own acceptor's grant and recovery that way.
//! - On a step-down for shutdown, wait for in-flight stamped requests
//!   between the `Publish` and the `Broadcast(Release)` that follow
//!   [`Event::StepDown`].
//!
//! Randomness (jitter, backoff) comes from a seeded generator inside the
//! state, so a run is a function of its inputs. Deadlines are stored state,
//! checked whenever an event comes, so an early, late or repeated timer is
//! harmless.

mod api;
mod round;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use api::{Action, Event, Now, TimerKind, Timing, ViewChange};

use self::api::BACKOFF_FIRST;
use self::round::{Outcome, Phase, Round, Tenure};
use super::acceptor::Acceptor;
use super::ballot::Ballot;
use super::faults::Faults;
use super::members::Members;
use super::messages::{Message, Urls};
use super::Millis;

/// A holder some other node announced with `Learn`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Learned {
    owner: String,
    token: u64,
    expires_at: Millis,
    urls: Urls,
}

/// Why this node may not start an acquisition now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocker {
    Free,
    Until(Millis),
    /// Until something else changes (health, recovery).
    Never,
}

/// One lease's proposer on this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Proposer {
    members: Members,
    timing: Timing,
    urls: Urls,
    rng: u64,
    healthy: bool,
    highest_seen: Ballot,
    tenure: Option<Tenure>,
    round: Option<Round>,
    next_attempt: Option<Millis>,
    backoff_step: Millis,
    no_acquire_before: Millis,
    learned: Option<Learned>,
    view: ViewChange,
    timers: [Option<Millis>; 4],
    /// Deliberate bugs for the model checker; none in production.
    faults: Faults,
}

impl Proposer {
    /// A proposer that holds nothing. `healthy` is the current
    /// `require_healthy` verdict; `seed` drives jitter and backoff (any
    /// value; differing per node spreads their attempts).
    pub fn new(members: Members, timing: Timing, urls: Urls, healthy: bool, seed: u64) -> Self {
        Proposer {
            members,
            timing,
            urls,
            rng: seed,
            healthy,
            highest_seen: Ballot::ZERO,
            tenure: None,
            round: None,
            next_attempt: None,
            backoff_step: 0,
            no_acquire_before: 0,
            learned: None,
            view: ViewChange::NotHolding,
            timers: [None; 4],
            faults: Faults::default(),
        }
    }

    /// Breaks the rules `faults` names, for the model checker only
    /// (LEASES.md §6b); production keeps the default, the real protocol.
    #[doc(hidden)]
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Handles `event` at `now`; `own` is this node's acceptor for the
    /// lease. Returns what the driver must do, in order.
    pub fn on_event(&mut self, now: Now, own: &mut Acceptor, event: Event) -> Vec<Action> {
        let at = now.at;
        let mut out = Vec::new();
        if let Event::Timer(kind) = event {
            // Fired: if still wanted, it is armed again below.
            self.timers[kind.index()] = None;
        }
        // Deadlines first: nothing below may count a reply after them.
        self.expire(at, own, &mut out);
        match event {
            Event::Tick | Event::Timer(_) => {}
            Event::Received { from, message } => {
                self.on_message(at, own, &from, &message, &mut out);
            }
            Event::StepDown => self.step_down(at, own, &mut out),
            Event::HealthChanged(healthy) => {
                self.healthy = healthy;
                if !healthy && (self.tenure.is_some() || self.round.is_some()) {
                    self.step_down(at, own, &mut out);
                }
            }
            Event::PersistFailed => self.fail_round(at, own, None, &mut out),
        }
        // A round that ends at once (a single member) may schedule another.
        for _ in 0..3 {
            self.schedule(at, own);
            if !self.maybe_start(now, own, &mut out) {
                break;
            }
        }
        self.publish(at, own, &mut out);
        self.sync_timers(at, own, &mut out);
        out
    }

    /// This node's tenure `(token, valid_until)`, if it holds one (it may
    /// stamp only while `now < valid_until`).
    pub fn tenure(&self) -> Option<(u64, Millis)> {
        self.tenure.map(|t| (t.token, t.valid_until))
    }

    /// The view last published.
    pub fn view(&self) -> &ViewChange {
        &self.view
    }

    /// The ballot of the running round, if any.
    pub fn round_ballot(&self) -> Option<Ballot> {
        self.round.as_ref().map(|r| r.ballot)
    }

    /// The highest ballot seen in any reply or `Learn`.
    pub fn highest_seen(&self) -> Ballot {
        self.highest_seen
    }

    /// When the next round is due, if one is planned.
    pub fn next_attempt(&self) -> Option<Millis> {
        self.next_attempt
    }

    /// Ends what time has ended: the round at its deadline (§3.4.3), the
    /// tenure at `valid_until` (a renewal still running dies with it: the
    /// tenure is over, and its grants are released), a learned holder when
    /// its time is up.
    fn expire(&mut self, at: Millis, own: &mut Acceptor, out: &mut Vec<Action>) {
        if self.round.as_ref().is_some_and(|r| at >= r.deadline) {
            self.fail_round(at, own, None, out);
        }
        if let Some(tenure) = self.tenure.filter(|t| at >= t.valid_until) {
            self.tenure = None;
            if self.round.as_ref().is_some_and(|r| r.renewing) {
                self.round = None;
            }
            self.next_attempt = None;
            // The gate stopped at `valid_until` already; publish anyway
            // before anything leaves.
            self.publish(at, own, out);
            self.release(at, own, tenure.token, out);
        }
        if self.learned.as_ref().is_some_and(|l| at >= l.expires_at) {
            self.learned = None;
        }
    }

    fn on_message(
        &mut self,
        at: Millis,
        own: &mut Acceptor,
        from: &str,
        message: &Message,
        out: &mut Vec<Action>,
    ) {
        if !self.members.contains(from) {
            return;
        }
        match message {
            Message::Promise { grant, .. } => {
                if let Some(grant) = grant {
                    self.see(grant.ballot);
                }
                self.on_reply(at, own, from, message, out);
            }
            Message::Nack { promised, .. } => {
                self.see(*promised);
                self.on_reply(at, own, from, message, out);
            }
            Message::Accepted { .. } => self.on_reply(at, own, from, message, out),
            Message::Learn {
                owner,
                token,
                remaining_ms,
                urls,
            } => self.on_learn(at, from, owner, *token, *remaining_ms, urls),
            Message::Release { owner, token } => {
                let known = matches!(
                    &self.view,
                    ViewChange::Follower { holder, token: t, .. } if holder == owner && t == token
                );
                if self
                    .learned
                    .as_ref()
                    .is_some_and(|l| l.owner == *owner && l.token == *token)
                {
                    self.learned = None;
                }
                // The holder we knew left: plan afresh, with new jitter,
                // rather than at the end of its grant.
                if known && self.tenure.is_none() && self.round.is_none() {
                    self.next_attempt = None;
                }
            }
            Message::Prepare { .. }
            | Message::Propose { .. }
            | Message::Sync
            | Message::SyncReply { .. } => {}
        }
    }

    fn see(&mut self, ballot: Ballot) {
        self.highest_seen = self.highest_seen.max(ballot);
    }

    fn on_learn(
        &mut self,
        at: Millis,
        from: &str,
        owner: &str,
        token: u64,
        remaining_ms: Millis,
        urls: &Urls,
    ) {
        // Only a holder speaks for itself.
        if self.members.is_me(from) || owner != from {
            return;
        }
        if let Some(ballot) = Ballot::from_u64(token) {
            self.see(ballot);
        }
        if self.learned.as_ref().is_some_and(|l| l.token > token) {
            return;
        }
        self.learned = Some(Learned {
            owner: owner.to_owned(),
            token,
            expires_at: at.saturating_add(remaining_ms),
            urls: urls.clone(),
        });
    }

    /// Counts a Promise, Accepted or Nack for the running round, then goes
    /// on once a majority said yes, or fails once that is out of reach.
    fn on_reply(
        &mut self,
        at: Millis,
        own: &mut Acceptor,
        from: &str,
        reply: &Message,
        out: &mut Vec<Action>,
    ) {
        let me = self.members.me().to_owned();
        let tenure = self.tenure;
        let Some(round) = &mut self.round else {
            return;
        };
        if !round.count(from, reply, &me, tenure, at) {
            return;
        }
        match (round.outcome(&self.members), round.phase) {
            (Outcome::Pending, _) => {}
            (Outcome::Won, Phase::Prepare) => self.propose(at, own, out),
            (Outcome::Won, Phase::Propose) => self.complete(at, own, out),
            (Outcome::Lost { wait }, _) => self.fail_round(at, own, wait, out),
        }
    }

    /// §3.4.5: the tenure's token, or the ballot for a new tenure.
    fn propose(&mut self, at: Millis, own: &mut Acceptor, out: &mut Vec<Action>) {
        let Some(round) = &mut self.round else {
            return;
        };
        round.start_proposing();
        let message = Message::Propose {
            ballot: round.ballot,
            owner: self.members.me().to_owned(),
            token: round.token,
            ttl_ms: self.timing.ttl_ms,
            urls: self.urls.clone(),
        };
        out.push(Action::Broadcast(message.clone()));
        self.deliver_own(at, own, &message, out);
    }

    /// §3.4.6: a majority accepted. Valid until `t0 + D` if that is still
    /// ahead; a quorum completed later is discarded.
    fn complete(&mut self, at: Millis, own: &mut Acceptor, out: &mut Vec<Action>) {
        let Some(round) = self.round.take() else {
            return;
        };
        // `D` from `t0` (§1, §3.4.6). The faults break it: `d_equals_t`
        // ignores drift, `deadline_from_accept_quorum` starts it late.
        let usable = match self.faults.d_equals_t {
            true => self.timing.ttl_ms,
            false => self.timing.usable_ms,
        };
        let start = match self.faults.deadline_from_accept_quorum {
            true => at,
            false => round.t0,
        };
        let deadline = start.saturating_add(usable);
        let same_tenure = self.tenure.filter(|t| t.token == round.token);
        // A renewal extends an unbroken tenure only (the running one).
        let unbroken = !round.renewing || same_tenure.is_some_and(|t| at < t.valid_until);
        if at >= deadline || !unbroken {
            let delay = self.backoff();
            self.next_attempt = Some(at.saturating_add(delay));
            if !round.renewing {
                self.release(at, own, round.token, out);
            }
            return;
        }
        let valid_until = same_tenure.map_or(deadline, |t| t.valid_until.max(deadline));
        self.tenure = Some(Tenure {
            token: round.token,
            valid_until,
            last_t0: round.t0,
        });
        self.backoff_step = 0;
        self.next_attempt = Some(round.t0.saturating_add(self.timing.renew_every_ms));
        self.publish(at, own, out);
        out.push(Action::Broadcast(Message::Learn {
            owner: self.members.me().to_owned(),
            token: round.token,
            remaining_ms: valid_until - at,
            urls: self.urls.clone(),
        }));
    }

    /// Gives `message` to this node's acceptor and counts its answer.
    fn deliver_own(
        &mut self,
        at: Millis,
        own: &mut Acceptor,
        message: &Message,
        out: &mut Vec<Action>,
    ) {
        let me = self.members.me().to_owned();
        let effects = own.handle(at, &me, message);
        if let Some(state) = effects.persist {
            out.push(Action::Persist(state));
        }
        if let Some(reply) = effects.reply {
            self.on_reply(at, own, &me, &reply, out);
        }
    }

    /// The round failed: retry after `wait` (plus jitter), or after the
    /// next backoff step. An acquisition that got as far as `Propose` may
    /// have left grants of a tenure that never began; they are released.
    fn fail_round(
        &mut self,
        at: Millis,
        own: &mut Acceptor,
        wait: Option<Millis>,
        out: &mut Vec<Action>,
    ) {
        let Some(round) = self.round.take() else {
            return;
        };
        let delay = match wait {
            Some(wait) => wait.saturating_add(self.jitter()),
            None => self.backoff(),
        };
        self.next_attempt = Some(at.saturating_add(delay));
        if round.phase == Phase::Propose && !round.renewing {
            self.release(at, own, round.token, out);
        }
    }

    /// Sends `Release{me, token}` for a tenure this node will never stamp
    /// with (again): one that never began, or whose time ran out. Without
    /// it, its grants would keep every other node out until they expire,
    /// up to a `ttl`: two proposers colliding after both sent `Propose`
    /// would each leave a majority-blocking grant at its own acceptor.
    ///
    /// Safe whatever arrives when: a release clears only grants of exactly
    /// this tenure, whose token no round of this node uses again (a new
    /// tenure takes a new ballot, a renewal needs the tenure unbroken), so
    /// nobody is stamping with it.
    fn release(&mut self, at: Millis, own: &mut Acceptor, token: u64, out: &mut Vec<Action>) {
        let release = Message::Release {
            owner: self.members.me().to_owned(),
            token,
        };
        out.push(Action::Broadcast(release.clone()));
        self.deliver_own(at, own, &release, out);
    }

    /// §3.5: stop stamping (published first), release what may be granted,
    /// and take nothing for one `ttl`.
    fn step_down(&mut self, at: Millis, own: &mut Acceptor, out: &mut Vec<Action>) {
        let mut tokens = Vec::new();
        if let Some(tenure) = self.tenure.take() {
            tokens.push(tenure.token);
        }
        let round = self.round.take();
        if let Some(round) = &round {
            // Grants exist only once a Propose went out.
            if round.phase == Phase::Propose && !tokens.contains(&round.token) {
                tokens.push(round.token);
            }
        }
        self.next_attempt = None;
        if !tokens.is_empty() || round.is_some() {
            self.no_acquire_before = at.saturating_add(self.timing.ttl_ms);
        }
        self.publish(at, own, out);
        for token in tokens {
            self.release(at, own, token, out);
        }
    }

    /// Plans the next round if none is planned: a renewal `renew_every`
    /// after the last round's `t0`, or an acquisition after jitter once
    /// nothing blocks it (§3.4.1).
    fn schedule(&mut self, at: Millis, own: &Acceptor) {
        if self.round.is_some() {
            return;
        }
        if let Some(tenure) = self.tenure {
            if self.next_attempt.is_none() {
                let renew = tenure.last_t0.saturating_add(self.timing.renew_every_ms);
                self.next_attempt = Some(renew);
            }
            return;
        }
        match self.blocker(at, own) {
            Blocker::Never => self.next_attempt = None,
            Blocker::Until(until) => {
                if self.next_attempt.map_or(true, |next| next < until) {
                    let delay = self.jitter();
                    self.next_attempt = Some(until.saturating_add(delay));
                }
            }
            Blocker::Free => {
                if self.next_attempt.is_none() {
                    let delay = self.jitter();
                    self.next_attempt = Some(at.saturating_add(delay));
                }
            }
        }
    }

    /// §3.4.1: healthy, state not lost, no live grant at the own acceptor,
    /// no live `Learn`, no step-down in the last `ttl`.
    fn blocker(&self, at: Millis, own: &Acceptor) -> Blocker {
        if !self.healthy || own.is_amnesiac() {
            return Blocker::Never;
        }
        let grant = own.grant(at).map_or(0, |g| g.expires_at);
        let learned = self.learned.as_ref().map_or(0, |l| l.expires_at);
        let until = self.no_acquire_before.max(grant).max(learned);
        match until > at {
            true => Blocker::Until(until),
            false => Blocker::Free,
        }
    }

    /// Starts the planned round if it is due; whether it did.
    fn maybe_start(&mut self, now: Now, own: &mut Acceptor, out: &mut Vec<Action>) -> bool {
        let at = now.at;
        if self.round.is_some() || self.next_attempt.map_or(true, |next| next > at) {
            return false;
        }
        self.next_attempt = None;
        let renewing = self.tenure.is_some();
        if !renewing && self.blocker(at, own) != Blocker::Free {
            return false;
        }
        let ordinal = self.members.my_ordinal();
        let promised = own.durable().promised;
        let Some(ballot) = Ballot::next(promised, self.highest_seen, now.wall_floor, ordinal)
        else {
            // Counter space exhausted: nothing safe to propose.
            self.next_attempt = Some(at.saturating_add(self.timing.ttl_ms));
            return false;
        };
        let token = match self.tenure {
            Some(tenure) => tenure.token,
            None => ballot.as_u64(),
        };
        // §3.4.2: durable before it is sent, even while quarantined.
        if let Some(state) = own.reserve(ballot) {
            out.push(Action::Persist(state));
        }
        self.round = Some(Round {
            ballot,
            t0: at,
            deadline: at.saturating_add(self.timing.round_timeout_ms()),
            renewing,
            token,
            phase: Phase::Prepare,
            votes: BTreeMap::new(),
            faults: self.faults,
        });
        let prepare = Message::Prepare {
            ballot,
            ttl_ms: self.timing.ttl_ms,
        };
        out.push(Action::Broadcast(prepare.clone()));
        self.deliver_own(at, own, &prepare, out);
        true
    }

    fn current_view(&self, at: Millis, own: &Acceptor) -> ViewChange {
        if let Some(tenure) = self.tenure.filter(|t| at < t.valid_until) {
            return ViewChange::Holding {
                token: tenure.token,
                valid_until: tenure.valid_until,
            };
        }
        let me = self.members.me();
        let from_grant = own
            .grant(at)
            .filter(|g| g.owner != me)
            .map(|g| (g.token, &g.owner, &g.urls));
        let from_learn = self
            .learned
            .as_ref()
            .filter(|l| at < l.expires_at && l.owner != me)
            .map(|l| (l.token, &l.owner, &l.urls));
        match from_grant.into_iter().chain(from_learn).max_by_key(|c| c.0) {
            Some((token, holder, urls)) => ViewChange::Follower {
                holder: holder.clone(),
                token,
                urls: urls.clone(),
            },
            None => ViewChange::NotHolding,
        }
    }

    fn publish(&mut self, at: Millis, own: &Acceptor, out: &mut Vec<Action>) {
        let view = self.current_view(at, own);
        if view != self.view {
            self.view = view.clone();
            out.push(Action::Publish(view));
        }
    }

    /// Arms, moves or cancels each timer whose deadline changed.
    fn sync_timers(&mut self, at: Millis, own: &Acceptor, out: &mut Vec<Action>) {
        let me = self.members.me();
        let grant = own
            .grant(at)
            .filter(|g| g.owner != me)
            .map(|g| g.expires_at);
        let learned = self.learned.as_ref().map(|l| l.expires_at);
        let view = grant.into_iter().chain(learned).min();
        for kind in TimerKind::ALL {
            let want = match kind {
                TimerKind::Attempt => self.next_attempt,
                TimerKind::Round => self.round.as_ref().map(|r| r.deadline),
                TimerKind::Expire => self.tenure.map(|t| t.valid_until),
                TimerKind::View => view,
            };
            if self.timers[kind.index()] != want {
                self.timers[kind.index()] = want;
                out.push(Action::SetTimer { kind, at: want });
            }
        }
    }

    /// The next backoff delay: from the upper half of a step that doubles
    /// from 50 ms up to `ttl/4`.
    fn backoff(&mut self) -> Millis {
        let cap = self.timing.backoff_cap_ms();
        let step = match self.backoff_step {
            0 => BACKOFF_FIRST.min(cap),
            step => step,
        };
        self.backoff_step = step.saturating_mul(2).min(cap);
        (step / 2 + self.below(step - step / 2 + 1)).max(1)
    }

    /// Uniform in `[0, ttl/10)`: the pause before an acquisition.
    fn jitter(&mut self) -> Millis {
        self.below(self.timing.ttl_ms / 10)
    }

    /// Uniform-enough in `[0, bound)` (splitmix64); zero for zero.
    fn below(&mut self, bound: Millis) -> Millis {
        if bound == 0 {
            return 0;
        }
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}
