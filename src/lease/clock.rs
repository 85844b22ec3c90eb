//! The lease clock: the one source of `now` for lease deadlines.
//!
//! Behind a trait so tests can drive it; the real one reads
//! `tokio::time::Instant`, which is monotonic (never steps back with the wall
//! clock) and follows `tokio::time::pause`/`advance` in tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where lease code reads the time. Its rate must stay within `max_drift` of
/// real time (LEASES.md §1); nothing else is assumed of it.
pub trait LeaseClock: Send + Sync + 'static {
    /// The current instant on this node's lease clock.
    fn now(&self) -> Instant;

    /// Time since the Unix epoch by the wall clock: only the floor of new
    /// `peers` ballots (LEASES.md §3.1), never a deadline. A simulation
    /// replaces it with its own, so a run replays.
    fn since_epoch(&self) -> Duration {
        since_epoch(SystemTime::now())
    }
}

/// Time since the Unix epoch at `at`; zero for a clock set before it.
pub fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The process's monotonic clock, through tokio so paused-time tests work.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl LeaseClock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let before = TokioClock.now();
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(TokioClock.now() - before, Duration::from_secs(7));
    }

    #[test]
    fn time_since_the_epoch_is_zero_before_it() {
        let later = UNIX_EPOCH + Duration::from_millis(2_500);
        assert_eq!(since_epoch(later), Duration::from_millis(2_500));
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
