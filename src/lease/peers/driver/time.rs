//! The driver's clock: lease-clock instants as [`Millis`] since the task's
//! start (rounded down), back again, and the wall-clock floor ballots take
//! (§3.1, read through [`LeaseClock::since_epoch`]).
//!
//! Rounding `now` down makes every deadline the machines compute from it
//! (`t0 + D`, `receipt + T`) at most what it would be exactly; converting a
//! deadline back adds its milliseconds to the same origin, so the instant
//! the gate stops stamping at is exactly the machines' deadline, never
//! later.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::peers::ballot;
use crate::lease::peers::proposer::Now;
use crate::lease::peers::Millis;
use crate::lease::LeaseClock;

/// How far off an instant that does not fit the clock is put: never, for
/// this process.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The shortest sleep: a timer due now fires on the next pass anyway, and
/// a clock that disagrees with tokio's by less than this cannot spin.
const MIN_SLEEP: Duration = Duration::from_millis(1);

/// One lease task's time base.
#[derive(Clone)]
pub(super) struct LeaseTime {
    clock: Arc<dyn LeaseClock>,
    origin: Instant,
}

impl LeaseTime {
    /// Starts counting at the clock's `now`.
    pub(super) fn new(clock: Arc<dyn LeaseClock>) -> Self {
        let origin = clock.now();
        Self { clock, origin }
    }

    /// `now` for the machines: one reading of the lease clock, and of the
    /// wall clock for ballots.
    pub(super) fn now(&self) -> Now {
        Now {
            at: self.millis(self.clock.now()),
            wall_floor: ballot::wall_floor(self.clock.since_epoch()),
        }
    }

    /// `at` in whole milliseconds since the origin, rounded down; 0 before it.
    pub(super) fn millis(&self, at: Instant) -> Millis {
        let since = at.saturating_duration_since(self.origin);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant the machines mean by `ms`: exactly `origin + ms`, or far
    /// in the future if that does not fit.
    pub(super) fn instant(&self, ms: Millis) -> Instant {
        let later = Duration::from_millis(ms);
        self.origin
            .checked_add(later)
            .or_else(|| self.origin.checked_add(FAR))
            .unwrap_or(self.origin)
    }

    /// The tokio instant to sleep until for the lease clock to read `ms`,
    /// as far as can be told now (at least [`MIN_SLEEP`] ahead).
    pub(super) fn deadline(&self, ms: Millis) -> tokio::time::Instant {
        let remaining = self
            .instant(ms)
            .saturating_duration_since(self.clock.now())
            .max(MIN_SLEEP);
        let now = tokio::time::Instant::now();
        now.checked_add(remaining)
            .or_else(|| now.checked_add(FAR))
            .unwrap_or(now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::lease::TokioClock;

    #[tokio::test(start_paused = true)]
    async fn millis_round_down_and_convert_back_to_no_later_instant() {
        let time = LeaseTime::new(Arc::new(TokioClock));
        assert_eq!(time.now().at, 0);
        tokio::time::advance(Duration::from_micros(1_999)).await;
        // 1.999 ms reads as 1 ms: a round's t0 is taken early, so its
        // deadline t0 + D is early too.
        let now = time.now().at;
        assert_eq!(now, 1);
        let back = time.instant(now);
        assert!(back <= Instant::now());
        assert_eq!(back, time.origin + Duration::from_millis(1));
        // A deadline converts to exactly origin + ms.
        let deadline: Millis = 1_955;
        assert_eq!(
            time.instant(deadline) - time.origin,
            Duration::from_millis(deadline)
        );
        assert_eq!(time.millis(time.instant(deadline)), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn instants_before_the_origin_and_huge_millis_do_not_panic() {
        let early = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        let time = LeaseTime::new(Arc::new(TokioClock));
        assert_eq!(time.millis(early), 0);
        assert!(time.instant(u64::MAX) > Instant::now());
        assert!(time.deadline(u64::MAX) > tokio::time::Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_passed_sleeps_the_minimum() {
        let time = LeaseTime::new(Arc::new(TokioClock));
        tokio::time::advance(Duration::from_millis(50)).await;
        let now = tokio::time::Instant::now();
        assert_eq!(time.deadline(10), now + MIN_SLEEP);
        assert_eq!(time.deadline(80), now + Duration::from_millis(30));
    }
}
