//! The lease clock: the one source of `now` for lease deadlines.
//!
//! Behind a trait so tests can drive it; the real one reads
//! `tokio::time::Instant`, which is monotonic (never steps back with the wall
//! clock) and follows `tokio::time::pause`/`advance` in tests.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Where lease code reads the time. Its rate must stay within `max_drift` of
/// real time (LEASES.md §1); nothing else is assumed of it.
pub trait LeaseClock: Send + Sync + 'static {
    /// The current instant on this node's lease clock.
    fn now(&self) -> Instant;

    /// Whole seconds since the Unix epoch by the wall clock: the floor of
    /// new `peers` ballots (LEASES.md §3.1), never a deadline. A simulation
    /// replaces it with its own, so a run replays.
    fn unix_secs(&self) -> u64 {
        unix_secs(SystemTime::now())
    }
}

/// Whole seconds since the Unix epoch; 0 for a clock set before it.
pub fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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
    fn unix_seconds_floor_at_zero() {
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(2_500)), 2);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
