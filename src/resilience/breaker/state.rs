//! The breaker's state machine: Hystrix's closed → open → half-open cycle,
//! as pure code with `now` passed in.
//!
//! Hystrix semantics: while closed, every result lands in a rolling
//! [`Window`]; once it holds at least `min_requests` results and the
//! truncated error percentage reaches `error_percent`, the breaker opens and
//! fails fast for `open_for`; then it lets probes through, closes with a fresh
//! window when they all succeed, and opens again when any fails.
//!
//! What we add, and why:
//! - `half_open_probes` probes instead of Hystrix's one, and [`Breaker::cancel`]
//!   to give a probe's slot back when its request ends without a verdict
//!   (client hung up, shed later), so half-open cannot wedge.
//! - Epochs: every transition bumps one and each [`Ticket`] carries it, so a
//!   straggler admitted while closed that finishes while half-open neither
//!   counts as a probe nor reopens the breaker.
//! - A slow-call rule: slow calls trip at their own percentage, and a slow
//!   probe reopens the breaker.
//! - Operator forcing, open or closed, which overrides the machine.
//! - Transitions are returned, not logged: the layer around this writes logs
//!   and metrics, so there is no IO, no clock and no async in here.

use std::fmt;

use tokio::time::{Duration, Instant};

use super::window::Window;
pub use super::window::{Counts, Kind, Outcome};

/// Stands in for an `open_for` too large to add to an instant: about 30
/// years, as tokio's own "far future".
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// What the state machine needs from the route's breaker config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub window: Duration,
    pub buckets: u32,
    pub min_requests: u32,
    /// Trips at `error_percent()` ≥ this, 0..=100.
    pub error_percent: f64,
    pub open_for: Duration,
    pub half_open_probes: u32,
    /// `(threshold, percent)`: calls slower than `threshold` are slow (the
    /// layer decides that); the breaker trips at `slow_percent()` ≥ `percent`.
    pub slow_call: Option<(Duration, f64)>,
}

impl Settings {
    /// Zero buckets or probes would make a window or a half-open state that
    /// can never work, so both are at least one.
    pub fn from_config(cfg: &crate::config::Breaker) -> Settings {
        Settings {
            window: cfg.window,
            buckets: cfg.buckets.max(1),
            min_requests: cfg.min_requests,
            error_percent: cfg.error_percent,
            open_for: cfg.open_for,
            half_open_probes: cfg.half_open_probes.max(1),
            slow_call: cfg.slow_call.map(|s| (s.threshold, s.percent)),
        }
    }
}

/// The state as operators see it: metric label, log field, status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateName {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    ForcedClosed,
}

impl StateName {
    /// Every state, for a per-state gauge set to 1 on the current one.
    pub const ALL: [StateName; 5] = [
        StateName::Closed,
        StateName::Open,
        StateName::HalfOpen,
        StateName::ForcedOpen,
        StateName::ForcedClosed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            StateName::Closed => "closed",
            StateName::Open => "open",
            StateName::HalfOpen => "half_open",
            StateName::ForcedOpen => "forced_open",
            StateName::ForcedClosed => "forced_closed",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's override of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forced {
    /// Reject everything, whatever the window says.
    Open,
    /// Admit everything and never trip; results are still counted.
    Closed,
}

/// Proof of admission, handed back with the request's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    probe: bool,
}

impl Ticket {
    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// Fail fast: the breaker is open (or forced open, or out of probes).
    Rejected,
    /// Send the request on; pass the ticket to `record` or `cancel`.
    Admitted(Ticket),
}

/// A change of state, for the layer's log line and transition metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: StateName,
    pub to: StateName,
    pub at: Instant,
    /// The window at the moment of the change, before any reset.
    pub counts: Counts,
}

/// What the status page and metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub state: StateName,
    pub counts: Counts,
    pub error_percent: u32,
    pub slow_percent: u32,
    /// Some while open (not forced); zero once `open_for` has passed, as the
    /// move to half-open happens lazily on the next `try_acquire`.
    pub open_remaining: Option<Duration>,
    pub last_transition: Option<Transition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
}

/// One route's circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: Settings,
    window: Window,
    state: State,
    forced: Option<Forced>,
    /// Bumped by every transition; tickets from older epochs are ignored.
    epoch: u64,
    last_transition: Option<Transition>,
}

impl Breaker {
    /// A closed breaker with an empty window starting at `now`.
    pub fn new(settings: Settings, now: Instant) -> Self {
        Self {
            window: Window::new(settings.window, settings.buckets, now),
            settings,
            state: State::Closed,
            forced: None,
            epoch: 0,
            last_transition: None,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// True when a reload may keep this breaker's state for `other`.
    pub fn same_settings(&self, other: &Settings) -> bool {
        self.settings == *other
    }

    pub fn state_name(&self) -> StateName {
        match (self.forced, self.state) {
            (Some(Forced::Open), _) => StateName::ForcedOpen,
            (Some(Forced::Closed), _) => StateName::ForcedClosed,
            (None, State::Closed) => StateName::Closed,
            (None, State::Open { .. }) => StateName::Open,
            (None, State::HalfOpen { .. }) => StateName::HalfOpen,
        }
    }

    pub fn forced(&self) -> Option<Forced> {
        self.forced
    }

    /// Asks to send a request at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Admission {
        self.try_acquire_with_transition(now).0
    }

    /// [`Breaker::try_acquire`], also returning the one transition it can
    /// make: open → half-open, when `open_for` has passed and this request
    /// is the first probe.
    pub fn try_acquire_with_transition(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        match (self.forced, self.state) {
            (Some(Forced::Open), _) => (Admission::Rejected, None),
            (Some(Forced::Closed), _) | (None, State::Closed) => (self.admit(false), None),
            (None, State::Open { until }) if now < until => (Admission::Rejected, None),
            (None, State::Open { .. }) => {
                let half_open = State::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                let transition = self.move_to(half_open, None, now);
                (self.admit(true), Some(transition))
            }
            (
                None,
                State::HalfOpen {
                    admitted,
                    succeeded,
                },
            ) if admitted < self.probes() => {
                self.state = State::HalfOpen {
                    admitted: admitted + 1,
                    succeeded,
                };
                (self.admit(true), None)
            }
            (None, State::HalfOpen { .. }) => (Admission::Rejected, None),
        }
    }

    /// The upstream's verdict on an admitted request. Tickets from an earlier
    /// epoch are ignored: their state is gone.
    pub fn record(&mut self, ticket: Ticket, now: Instant, outcome: Outcome) -> Option<Transition> {
        if ticket.epoch != self.epoch {
            return None;
        }
        match (self.forced, self.state) {
            (Some(Forced::Closed), _) => {
                self.window.record(now, outcome);
                None
            }
            // Nothing is admitted in these epochs, so no ticket can match.
            (Some(Forced::Open), _) | (None, State::Open { .. }) => None,
            (None, State::Closed) => {
                self.window.record(now, outcome);
                if self.should_trip(now) {
                    Some(self.open(now))
                } else {
                    None
                }
            }
            (
                None,
                State::HalfOpen {
                    admitted,
                    succeeded,
                },
            ) => {
                // Counted so the status page shows the probes too.
                self.window.record(now, outcome);
                if self.is_bad_probe(outcome) {
                    return Some(self.open(now));
                }
                let succeeded = succeeded.saturating_add(1);
                if succeeded >= self.probes() {
                    let closed = self.move_to(State::Closed, None, now);
                    self.window.reset(now);
                    return Some(closed);
                }
                self.state = State::HalfOpen {
                    admitted,
                    succeeded,
                };
                None
            }
        }
    }

    /// The request ended without an upstream verdict: nothing is counted, and
    /// a probe's slot is given back so another request can probe.
    pub fn cancel(&mut self, ticket: Ticket, _now: Instant) {
        if ticket.epoch != self.epoch || !ticket.probe {
            return;
        }
        if let (
            None,
            State::HalfOpen {
                admitted,
                succeeded,
            },
        ) = (self.forced, self.state)
        {
            self.state = State::HalfOpen {
                admitted: admitted.saturating_sub(1),
                succeeded,
            };
        }
    }

    /// Overrides the state machine until [`Breaker::reset`]. The window is
    /// kept, and forced closed keeps counting into it.
    pub fn force(&mut self, forced: Forced, now: Instant) -> Option<Transition> {
        if self.forced == Some(forced) {
            return None;
        }
        Some(self.move_to(State::Closed, Some(forced), now))
    }

    /// Clears forcing and starts closed with a fresh window.
    pub fn reset(&mut self, now: Instant) -> Option<Transition> {
        let transition = match self.state_name() {
            StateName::Closed => None,
            _ => Some(self.move_to(State::Closed, None, now)),
        };
        self.window.reset(now);
        transition
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let counts = self.window.counts(now);
        let open_remaining = match (self.forced, self.state) {
            (None, State::Open { until }) => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        Snapshot {
            state: self.state_name(),
            counts,
            error_percent: counts.error_percent(),
            slow_percent: counts.slow_percent(),
            open_remaining,
            last_transition: self.last_transition,
        }
    }

    fn admit(&self, probe: bool) -> Admission {
        Admission::Admitted(Ticket {
            epoch: self.epoch,
            probe,
        })
    }

    fn probes(&self) -> u32 {
        self.settings.half_open_probes.max(1)
    }

    fn should_trip(&self, now: Instant) -> bool {
        let counts = self.window.counts(now);
        if counts.total() < u64::from(self.settings.min_requests) {
            return false;
        }
        let errors = f64::from(counts.error_percent()) >= self.settings.error_percent;
        let slow = self
            .settings
            .slow_call
            .is_some_and(|(_, percent)| f64::from(counts.slow_percent()) >= percent);
        errors || slow
    }

    fn is_bad_probe(&self, outcome: Outcome) -> bool {
        outcome.is_error() || (outcome.slow && self.settings.slow_call.is_some())
    }

    fn open(&mut self, now: Instant) -> Transition {
        let until = now
            .checked_add(self.settings.open_for)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        self.move_to(State::Open { until }, None, now)
    }

    fn move_to(&mut self, state: State, forced: Option<Forced>, now: Instant) -> Transition {
        let from = self.state_name();
        let counts = self.window.counts(now);
        self.state = state;
        self.forced = forced;
        self.epoch = self.epoch.wrapping_add(1);
        let transition = Transition {
            from,
            to: self.state_name(),
            at: now,
            counts,
        };
        self.last_transition = Some(transition);
        transition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome::new(Kind::Success, false);
    const FAIL: Outcome = Outcome::new(Kind::Failure, false);
    const TIMEOUT: Outcome = Outcome::new(Kind::Timeout, false);
    const SLOW_OK: Outcome = Outcome::new(Kind::Success, true);
    const OPEN_FOR: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settings(min_requests: u32, error_percent: f64, probes: u32) -> Settings {
        Settings {
            window: Duration::from_secs(10),
            buckets: 10,
            min_requests,
            error_percent,
            open_for: OPEN_FOR,
            half_open_probes: probes,
            slow_call: None,
        }
    }

    fn ticket(c: &mut Breaker, now: Instant) -> Ticket {
        match c.try_acquire(now) {
            Admission::Admitted(ticket) => ticket,
            Admission::Rejected => panic!("rejected in {}", c.state_name()),
        }
    }

    fn call(c: &mut Breaker, now: Instant, outcome: Outcome) -> Option<Transition> {
        let t = ticket(c, now);
        c.record(t, now, outcome)
    }

    /// A breaker (min 4 requests, 50 %, `probes` probes) opened at `t0`.
    fn opened(t0: Instant, probes: u32) -> Breaker {
        let mut c = Breaker::new(settings(4, 50.0, probes), t0);
        for _ in 0..4 {
            call(&mut c, t0, FAIL);
        }
        assert_eq!(c.state_name(), StateName::Open);
        c
    }

    fn rejected(c: &mut Breaker, now: Instant) -> bool {
        c.try_acquire(now) == Admission::Rejected
    }

    #[test]
    fn stays_closed_below_min_requests_even_at_100_percent_errors() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(20, 50.0, 1), t0);
        for i in 0..19 {
            assert_eq!(call(&mut c, t0 + ms(i), FAIL), None);
        }
        assert_eq!(c.state_name(), StateName::Closed);
        assert_eq!(c.snapshot(t0 + ms(19)).error_percent, 100);
    }

    #[test]
    fn opens_when_errors_reach_the_threshold_at_exactly_min_requests() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        call(&mut c, t0, OK);
        call(&mut c, t0, OK);
        call(&mut c, t0, FAIL);
        let t = call(&mut c, t0, FAIL).expect("2 of 4 is 50 %");
        assert_eq!((t.from, t.to), (StateName::Closed, StateName::Open));
        assert!(rejected(&mut c, t0));
    }

    #[test]
    fn error_percent_truncates_like_hystrix() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(20, 50.0, 1), t0);
        for _ in 0..5001 {
            call(&mut c, t0, OK);
        }
        for _ in 0..4999 {
            assert_eq!(call(&mut c, t0, FAIL), None, "49.99 % does not trip at 50");
        }
        // Truncation also means 49.99 % is below a 49.5 threshold.
        let mut c = Breaker::new(settings(20, 49.5, 1), t0);
        for _ in 0..5001 {
            call(&mut c, t0, OK);
        }
        for _ in 0..4999 {
            assert_eq!(call(&mut c, t0, FAIL), None);
        }
        let mut c = Breaker::new(settings(2, 50.0, 1), t0);
        call(&mut c, t0, OK);
        assert!(call(&mut c, t0, FAIL).is_some(), "1 of 2 trips at 50");
    }

    #[test]
    fn timeouts_count_as_errors() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        call(&mut c, t0, OK);
        call(&mut c, t0, OK);
        call(&mut c, t0, TIMEOUT);
        assert!(call(&mut c, t0, TIMEOUT).is_some());
        assert_eq!(c.snapshot(t0).counts.timeouts, 2);
    }

    #[test]
    fn errors_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(20, 50.0, 1), t0);
        for _ in 0..19 {
            call(&mut c, t0, FAIL);
        }
        let later = t0 + ms(11_000);
        assert_eq!(
            call(&mut c, later, FAIL),
            None,
            "only 1 error in the window"
        );
        assert_eq!(c.snapshot(later).counts.total(), 1);
    }

    #[test]
    fn a_big_time_jump_clears_the_window() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(20, 50.0, 1), t0);
        for _ in 0..19 {
            call(&mut c, t0, FAIL);
        }
        let later = t0 + Duration::from_secs(86_400);
        assert_eq!(c.snapshot(later).counts, Counts::default());
        assert_eq!(call(&mut c, later, FAIL), None);
    }

    #[test]
    fn open_rejects_until_open_for_elapses() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        assert!(rejected(&mut c, t0 + ms(1)));
        assert!(rejected(&mut c, t0 + OPEN_FOR - ms(1)));
        let (admission, transition) = c.try_acquire_with_transition(t0 + OPEN_FOR);
        let Admission::Admitted(probe) = admission else {
            panic!("a probe is admitted once open_for has passed");
        };
        assert!(probe.is_probe());
        let t = transition.expect("open → half-open");
        assert_eq!((t.from, t.to), (StateName::Open, StateName::HalfOpen));
    }

    #[test]
    fn half_open_admits_exactly_n_probes_and_rejects_the_rest() {
        let t0 = Instant::now();
        let mut c = opened(t0, 3);
        let now = t0 + OPEN_FOR;
        let probes: Vec<Ticket> = (0..3).map(|_| ticket(&mut c, now)).collect();
        assert!(probes.iter().all(Ticket::is_probe));
        assert!(rejected(&mut c, now));
        // Still rejected after some probes succeed: the slots are spent.
        c.record(probes[0], now, OK);
        assert!(rejected(&mut c, now + ms(1)));
        assert_eq!(c.state_name(), StateName::HalfOpen);
    }

    #[test]
    fn all_probes_succeeding_closes_with_a_fresh_window() {
        let t0 = Instant::now();
        let mut c = opened(t0, 2);
        let now = t0 + OPEN_FOR;
        let a = ticket(&mut c, now);
        let b = ticket(&mut c, now);
        assert_eq!(c.record(a, now, OK), None);
        let t = c.record(b, now + ms(1), OK).expect("closes");
        assert_eq!((t.from, t.to), (StateName::HalfOpen, StateName::Closed));
        assert_eq!(
            t.counts.failures, 4,
            "the transition carries the old window"
        );
        assert_eq!(c.snapshot(now + ms(1)).counts, Counts::default());
        // A fresh window: three failures in a row are below min_requests.
        for _ in 0..3 {
            assert_eq!(call(&mut c, now + ms(2), FAIL), None);
        }
    }

    #[test]
    fn one_failed_probe_opens_again_for_open_for() {
        let t0 = Instant::now();
        let mut c = opened(t0, 2);
        let now = t0 + OPEN_FOR;
        let a = ticket(&mut c, now);
        let b = ticket(&mut c, now);
        c.record(a, now, OK);
        let t = c.record(b, now + ms(10), FAIL).expect("reopens");
        assert_eq!((t.from, t.to), (StateName::HalfOpen, StateName::Open));
        let reopened = now + ms(10);
        assert_eq!(
            c.snapshot(reopened).open_remaining,
            Some(OPEN_FOR),
            "open for the whole open_for again"
        );
        assert!(rejected(&mut c, reopened + OPEN_FOR - ms(1)));
        assert!(!rejected(&mut c, reopened + OPEN_FOR));
    }

    #[test]
    fn a_timed_out_probe_opens_again() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        let t = call(&mut c, t0 + OPEN_FOR, TIMEOUT).expect("reopens");
        assert_eq!(t.to, StateName::Open);
    }

    #[test]
    fn a_slow_probe_opens_again_when_slow_call_is_set() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        let t = call(&mut c, t0 + OPEN_FOR, SLOW_OK).expect("without slow_call: closes");
        assert_eq!(t.to, StateName::Closed);

        let mut s = settings(4, 50.0, 1);
        s.slow_call = Some((ms(100), 80.0));
        let mut c = Breaker::new(s, t0);
        for _ in 0..4 {
            call(&mut c, t0, FAIL);
        }
        let t = call(&mut c, t0 + OPEN_FOR, SLOW_OK).expect("with slow_call: reopens");
        assert_eq!(t.to, StateName::Open);
    }

    #[test]
    fn cancel_gives_a_probe_slot_back_and_records_nothing() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        let now = t0 + OPEN_FOR;
        let probe = ticket(&mut c, now);
        assert!(rejected(&mut c, now));
        c.cancel(probe, now);
        assert_eq!(c.state_name(), StateName::HalfOpen);
        let again = ticket(&mut c, now);
        assert!(again.is_probe());
        assert_eq!(c.snapshot(now).counts.total(), 4, "cancel counted nothing");
        assert!(c.record(again, now, OK).is_some());
    }

    #[test]
    fn cancel_while_closed_counts_nothing() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(1, 50.0, 1), t0);
        let t = ticket(&mut c, t0);
        c.cancel(t, t0);
        assert_eq!(c.snapshot(t0).counts, Counts::default());
        assert_eq!(c.state_name(), StateName::Closed);
    }

    #[test]
    fn stale_tickets_from_before_a_transition_are_ignored() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        let stragglers: Vec<Ticket> = (0..3).map(|_| ticket(&mut c, t0)).collect();
        for _ in 0..4 {
            call(&mut c, t0, FAIL);
        }
        let now = t0 + OPEN_FOR;
        let probe = ticket(&mut c, now);
        // A closed-state straggler failing while half-open does not reopen,
        // succeeding does not close, and cancelling frees no probe slot.
        assert_eq!(c.record(stragglers[0], now, FAIL), None);
        assert_eq!(c.record(stragglers[1], now, OK), None);
        c.cancel(stragglers[2], now);
        assert!(rejected(&mut c, now));
        assert_eq!(c.state_name(), StateName::HalfOpen);
        assert_eq!(
            c.snapshot(now).counts.total(),
            4,
            "stragglers are not counted"
        );
        let t = c.record(probe, now, OK).expect("the real probe closes");
        assert_eq!(t.to, StateName::Closed);
        // An old probe ticket cannot count in the new closed state either.
        assert_eq!(c.record(probe, now, FAIL), None);
        assert_eq!(c.snapshot(now).counts.total(), 0);
    }

    #[test]
    fn the_slow_call_rule_trips_at_its_percent_once_min_requests_is_met() {
        let t0 = Instant::now();
        let mut s = settings(5, 50.0, 1);
        s.slow_call = Some((ms(100), 80.0));
        let mut c = Breaker::new(s, t0);
        for _ in 0..3 {
            assert_eq!(call(&mut c, t0, SLOW_OK), None, "below min_requests");
        }
        call(&mut c, t0, OK);
        let t = call(&mut c, t0, SLOW_OK).expect("4 of 5 slow is 80 %");
        assert_eq!(t.counts.slow, 4);
        assert_eq!(t.counts.errors(), 0, "tripped on slowness alone");
    }

    #[test]
    fn slow_calls_do_not_trip_without_the_slow_call_rule() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(5, 50.0, 1), t0);
        for _ in 0..10 {
            assert_eq!(call(&mut c, t0, SLOW_OK), None);
        }
        assert_eq!(c.snapshot(t0).slow_percent, 100);
    }

    #[test]
    fn forced_open_rejects_even_with_a_clean_window() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        let in_flight = ticket(&mut c, t0);
        let t = c.force(Forced::Open, t0).expect("a transition");
        assert_eq!((t.from, t.to), (StateName::Closed, StateName::ForcedOpen));
        assert!(rejected(&mut c, t0 + Duration::from_secs(3600)));
        assert_eq!(c.record(in_flight, t0, OK), None);
        assert_eq!(c.snapshot(t0).open_remaining, None);
        assert_eq!(c.force(Forced::Open, t0), None, "already forced open");
    }

    #[test]
    fn forced_closed_admits_and_never_trips_at_100_percent_errors() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        let t = c.force(Forced::Closed, t0).expect("a transition");
        assert_eq!((t.from, t.to), (StateName::Open, StateName::ForcedClosed));
        for _ in 0..100 {
            let ticket = ticket(&mut c, t0 + ms(1));
            assert!(!ticket.is_probe());
            assert_eq!(c.record(ticket, t0 + ms(1), FAIL), None);
        }
        let snap = c.snapshot(t0 + ms(1));
        assert_eq!(snap.state, StateName::ForcedClosed);
        assert_eq!(snap.counts.failures, 104, "results are still counted");
        assert_eq!(snap.error_percent, 100);
    }

    #[test]
    fn reset_clears_forcing_and_the_window() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        call(&mut c, t0, FAIL);
        c.force(Forced::Open, t0);
        let t = c.reset(t0 + ms(1)).expect("a transition");
        assert_eq!((t.from, t.to), (StateName::ForcedOpen, StateName::Closed));
        assert_eq!(t.counts.failures, 1, "counts before the reset");
        assert_eq!(c.forced(), None);
        assert_eq!(c.snapshot(t0 + ms(1)).counts, Counts::default());
        assert!(!rejected(&mut c, t0 + ms(1)));
        // Resetting a closed breaker clears the window without a transition.
        call(&mut c, t0 + ms(2), FAIL);
        assert_eq!(c.reset(t0 + ms(3)), None);
        assert_eq!(c.snapshot(t0 + ms(3)).counts, Counts::default());
    }

    #[test]
    fn reset_closes_an_open_breaker() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        let t = c.reset(t0 + ms(1)).expect("a transition");
        assert_eq!((t.from, t.to), (StateName::Open, StateName::Closed));
        assert!(!rejected(&mut c, t0 + ms(1)));
    }

    #[test]
    fn transitions_carry_from_to_when_and_counts() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        call(&mut c, t0, OK);
        call(&mut c, t0, TIMEOUT);
        call(&mut c, t0 + ms(5), SLOW_OK);
        let t = call(&mut c, t0 + ms(7), FAIL).expect("opens");
        assert_eq!(
            t,
            Transition {
                from: StateName::Closed,
                to: StateName::Open,
                at: t0 + ms(7),
                counts: Counts {
                    successes: 2,
                    failures: 1,
                    timeouts: 1,
                    slow: 1,
                },
            }
        );
        assert_eq!(c.snapshot(t0 + ms(7)).last_transition, Some(t));
    }

    #[test]
    fn snapshot_reports_state_counts_percentages_and_open_remaining() {
        let t0 = Instant::now();
        let mut c = Breaker::new(settings(4, 50.0, 1), t0);
        let fresh = c.snapshot(t0);
        assert_eq!(
            (fresh.state, fresh.last_transition),
            (StateName::Closed, None)
        );
        assert_eq!(fresh.open_remaining, None);
        call(&mut c, t0, OK);
        call(&mut c, t0, SLOW_OK);
        call(&mut c, t0, FAIL);
        let snap = c.snapshot(t0);
        assert_eq!((snap.error_percent, snap.slow_percent), (33, 33));
        assert_eq!(snap.counts.total(), 3);
        call(&mut c, t0 + ms(1_000), FAIL);
        let snap = c.snapshot(t0 + ms(3_000));
        assert_eq!(snap.state, StateName::Open);
        assert_eq!(snap.open_remaining, Some(ms(3_000)));
        assert_eq!(snap.error_percent, 50);
    }

    #[test]
    fn an_expired_open_shows_zero_remaining_until_the_next_acquire() {
        let t0 = Instant::now();
        let mut c = opened(t0, 1);
        let late = t0 + OPEN_FOR + ms(500);
        let snap = c.snapshot(late);
        assert_eq!(
            snap.state,
            StateName::Open,
            "a snapshot does not transition"
        );
        assert_eq!(snap.open_remaining, Some(Duration::ZERO));
        let _ = ticket(&mut c, late);
        let snap = c.snapshot(late);
        assert_eq!(
            (snap.state, snap.open_remaining),
            (StateName::HalfOpen, None)
        );
    }

    #[test]
    fn a_huge_open_for_does_not_overflow() {
        let t0 = Instant::now();
        let mut s = settings(1, 50.0, 1);
        s.open_for = Duration::MAX;
        let mut c = Breaker::new(s, t0);
        assert!(call(&mut c, t0, FAIL).is_some());
        assert!(rejected(&mut c, t0 + Duration::from_secs(86_400 * 365)));
    }

    #[test]
    fn settings_come_from_config_and_compare_for_reload() {
        let mut cfg = crate::config::Breaker {
            half_open_probes: 0,
            slow_call: Some(crate::config::SlowCall {
                threshold: ms(250),
                percent: 80.0,
            }),
            ..Default::default()
        };
        let s = Settings::from_config(&cfg);
        assert_eq!(s.window, Duration::from_secs(10));
        assert_eq!((s.buckets, s.min_requests), (10, 20));
        assert_eq!((s.error_percent, s.open_for), (50.0, OPEN_FOR));
        assert_eq!(s.half_open_probes, 1, "zero probes would wedge half-open");
        assert_eq!(s.slow_call, Some((ms(250), 80.0)));

        let c = Breaker::new(s.clone(), Instant::now());
        assert!(c.same_settings(&s));
        assert_eq!(c.settings(), &s);
        cfg.error_percent = 60.0;
        assert!(!c.same_settings(&Settings::from_config(&cfg)));
    }

    #[test]
    fn state_names_are_metric_labels() {
        let labels: Vec<&str> = StateName::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            labels,
            [
                "closed",
                "open",
                "half_open",
                "forced_open",
                "forced_closed"
            ]
        );
        assert_eq!(StateName::HalfOpen.to_string(), "half_open");
    }
}
