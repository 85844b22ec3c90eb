//! The proposer's inputs and outputs: what the driver (and a model checker)
//! feeds in and must carry out.

use std::time::Duration;

use crate::lease::peers::acceptor::Durable;
use crate::lease::peers::messages::{Message, Urls};
use crate::lease::peers::Millis;
use crate::lease::validity;

/// The first backoff step after a failed round.
pub(super) const BACKOFF_FIRST: Millis = 50;

/// The longest a round may take, whatever the `ttl`.
const ROUND_TIMEOUT_MAX: Millis = 2_000;

/// `now` as the proposer needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Now {
    /// The lease clock.
    pub at: Millis,
    /// The wall clock as [`crate::lease::peers::ballot::wall_floor`] steps
    /// it: only a floor for new ballots (§3.1), never a deadline.
    pub wall_floor: u64,
}

/// A lease's durations, in lease-clock milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timing {
    /// `T`: how long acceptors keep a grant.
    pub ttl_ms: Millis,
    /// `D`: how long after a round's `t0` its holder may stamp.
    pub usable_ms: Millis,
    /// How often a holder renews.
    pub renew_every_ms: Millis,
}

impl Timing {
    /// From the lease's configuration; `D` as [`validity::usable`] computes
    /// it (rounded down to the millisecond).
    pub fn new(ttl: Duration, renew_every: Duration, max_drift_percent: f64) -> Timing {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let ttl_ms = ms(ttl);
        let usable = validity::usable(Duration::from_millis(ttl_ms), max_drift_percent);
        Timing {
            ttl_ms,
            usable_ms: ms(usable),
            renew_every_ms: ms(renew_every).max(1),
        }
    }

    /// `min(ttl/4, 2 s)`: a round that takes longer has failed (§3.4.3).
    pub fn round_timeout_ms(&self) -> Millis {
        (self.ttl_ms / 4).clamp(1, ROUND_TIMEOUT_MAX)
    }

    pub(super) fn backoff_cap_ms(&self) -> Millis {
        (self.ttl_ms / 4).max(1)
    }
}

/// The proposer's timers; at most one of each is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The next round: an acquisition, a renewal or a retry.
    Attempt,
    /// The running round's deadline.
    Round,
    /// The end of this node's tenure (`valid_until`).
    Expire,
    /// When the known holder's grant or `Learn` runs out.
    View,
}

impl TimerKind {
    /// Every kind.
    pub const ALL: [TimerKind; 4] = [
        TimerKind::Attempt,
        TimerKind::Round,
        TimerKind::Expire,
        TimerKind::View,
    ];

    pub(super) fn index(self) -> usize {
        match self {
            TimerKind::Attempt => 0,
            TimerKind::Round => 1,
            TimerKind::Expire => 2,
            TimerKind::View => 3,
        }
    }
}

/// What happens to a proposer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Nothing new; catch up with `now` (after [`Acceptor::tick`](crate::lease::peers::acceptor::Acceptor::tick), say).
    Tick,
    /// A timer set by [`Action::SetTimer`] fired.
    Timer(TimerKind),
    /// A message from member `from` (already given to the own acceptor).
    Received { from: String, message: Message },
    /// Release now (`POST /leases/NAME/release`, shutdown): §3.5.
    StepDown,
    /// The `require_healthy` verdict changed; `false` steps down.
    HealthChanged(bool),
    /// The last `Persist` could not be stored; the round it was for is
    /// abandoned.
    PersistFailed,
}

/// What this node knows about the lease, for the request path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ViewChange {
    /// This node holds tenure `token` and may stamp before `valid_until`.
    Holding { token: u64, valid_until: Millis },
    /// Another node holds tenure `token`.
    Follower {
        holder: String,
        token: u64,
        urls: Urls,
    },
    /// Nobody is known to hold the lease.
    NotHolding,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Store this acceptor state durably before anything after it is sent.
    Persist(Durable),
    /// Send this to every other member.
    Broadcast(Message),
    /// Arm the timer of `kind` for `at` (replacing it), or cancel it.
    SetTimer { kind: TimerKind, at: Option<Millis> },
    /// Publish this view.
    Publish(ViewChange),
}
