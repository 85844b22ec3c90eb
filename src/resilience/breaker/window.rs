//! The breaker's rolling window: Hystrix's bucketed counts over the last
//! `window`, as pure code with `now` passed in.
//!
//! Hystrix decides on the error percentage of the last `window` (10 s), kept
//! as `buckets` (10) equal slices so that old results leave a slice at a time
//! instead of all at once. We keep that shape and its arithmetic, integer
//! truncated percentages included, so Hystrix intuition carries over
//! (49.99 % is 49 %). What we add: timeouts are counted apart from other
//! failures (both are errors), and slow calls are counted *in addition to*
//! their success or failure, so a slow-call rule can trip the breaker too.
//!
//! Nothing here reads a clock. Recording at `now` first drops the slices that
//! have aged out; reading at `now` ([`Window::counts`]) sums only the slices
//! that would survive that roll, so a reader needs no `&mut`. A gap longer
//! than the whole window clears everything at once: the cost of a roll is
//! bounded by `buckets`, never by how long the route was idle.

use tokio::time::{Duration, Instant};

/// The smallest slice: guards the step division when a window is shorter
/// than its bucket count in nanoseconds (config validation should prevent it).
const MIN_BUCKET_WIDTH: Duration = Duration::from_nanos(1);

/// How a request ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The upstream answered and the answer is not an error.
    Success,
    /// An error status, `grpc-status`, connect or reset error.
    Failure,
    /// The route's timeout fired before the upstream answered.
    Timeout,
}

/// One upstream verdict: its kind, and whether it took longer than the
/// slow-call threshold (counted in addition to the kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub kind: Kind,
    pub slow: bool,
}

impl Outcome {
    pub const fn new(kind: Kind, slow: bool) -> Self {
        Self { kind, slow }
    }

    /// Failures and timeouts are errors; slowness alone is not.
    pub const fn is_error(&self) -> bool {
        !matches!(self.kind, Kind::Success)
    }
}

/// Results in a slice of the window, or summed over the whole window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    pub successes: u64,
    pub failures: u64,
    pub timeouts: u64,
    /// Slow calls, whatever their kind: also counted in one of the above.
    pub slow: u64,
}

impl Counts {
    /// Requests with a verdict: successes, failures and timeouts.
    pub fn total(&self) -> u64 {
        self.successes
            .saturating_add(self.failures)
            .saturating_add(self.timeouts)
    }

    /// Failures and timeouts.
    pub fn errors(&self) -> u64 {
        self.failures.saturating_add(self.timeouts)
    }

    /// Errors as a whole percentage of the total, truncated as Hystrix does.
    pub fn error_percent(&self) -> u32 {
        hystrix_percent(self.errors(), self.total())
    }

    /// Slow calls as a whole percentage of the total, truncated likewise.
    pub fn slow_percent(&self) -> u32 {
        hystrix_percent(self.slow, self.total())
    }

    fn add(&mut self, outcome: Outcome) {
        let kind = match outcome.kind {
            Kind::Success => &mut self.successes,
            Kind::Failure => &mut self.failures,
            Kind::Timeout => &mut self.timeouts,
        };
        *kind = kind.saturating_add(1);
        if outcome.slow {
            self.slow = self.slow.saturating_add(1);
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.successes = self.successes.saturating_add(other.successes);
        self.failures = self.failures.saturating_add(other.failures);
        self.timeouts = self.timeouts.saturating_add(other.timeouts);
        self.slow = self.slow.saturating_add(other.slow);
    }
}

/// Hystrix's `(int) ((double) part / total * 100)`: the float product is
/// truncated, never rounded, so operators' thresholds mean the same here.
fn hystrix_percent(part: u64, total: u64) -> u32 {
    if total > 0 {
        (part as f64 / total as f64 * 100.0) as u32
    } else {
        0
    }
}

/// A ring of `buckets` slices, each `window / buckets` wide.
#[derive(Debug, Clone)]
pub struct Window {
    buckets: Vec<Counts>,
    width: Duration,
    /// Index of the slice that `current_start` begins.
    current: usize,
    /// Start of the current slice; moves forward in whole widths, so slice
    /// boundaries do not drift with the instants results arrive at.
    current_start: Instant,
}

impl Window {
    /// A window of `window` in `buckets` slices (at least one), anchored at `now`.
    pub fn new(window: Duration, buckets: u32, now: Instant) -> Self {
        let buckets = buckets.max(1);
        let width = (window / buckets).max(MIN_BUCKET_WIDTH);
        let len = usize::try_from(buckets).unwrap_or(usize::MAX);
        Self {
            buckets: vec![Counts::default(); len],
            width,
            current: 0,
            current_start: now,
        }
    }

    /// The span actually covered: `buckets` whole slices.
    pub fn span(&self) -> Duration {
        let buckets = u32::try_from(self.buckets.len()).unwrap_or(u32::MAX);
        self.width.saturating_mul(buckets)
    }

    /// Counts one result at `now`, after dropping the slices that aged out.
    pub fn record(&mut self, now: Instant, outcome: Outcome) {
        self.roll(now);
        self.buckets[self.current].add(outcome);
    }

    /// The window's counts at `now`: the slices that a roll to `now` would
    /// keep, summed. The current slice is always kept, so results younger than
    /// `window - window / buckets` always count and none older than `window` do.
    pub fn counts(&self, now: Instant) -> Counts {
        let len = self.buckets.len();
        let kept = len - self.steps(now);
        let mut sum = Counts::default();
        for (index, bucket) in self.buckets.iter().enumerate() {
            // 0 for the current slice, len - 1 for the oldest.
            let age = (self.current + len - index) % len;
            if age < kept {
                sum.merge(bucket);
            }
        }
        sum
    }

    /// Forgets everything; the first slice starts at `now`.
    pub fn reset(&mut self, now: Instant) {
        self.buckets.fill(Counts::default());
        self.current = 0;
        self.current_start = now;
    }

    /// Whole slices between the current slice's start and `now`, capped at
    /// the slice count (every slice expired). Time going backwards is 0.
    fn steps(&self, now: Instant) -> usize {
        let elapsed = now.saturating_duration_since(self.current_start);
        let steps = elapsed.as_nanos() / self.width.as_nanos();
        usize::try_from(steps).map_or(self.buckets.len(), |steps| steps.min(self.buckets.len()))
    }

    /// Moves the current slice forward to the one that covers `now`, clearing
    /// the slices it passes over: they held the results now out of the window.
    fn roll(&mut self, now: Instant) {
        let len = self.buckets.len();
        let steps = self.steps(now);
        if steps == 0 {
            return;
        }
        if steps >= len {
            // Idle longer than the window: nothing survives, and the slice
            // grid restarts at `now` instead of counting the idle slices.
            self.reset(now);
            return;
        }
        for step in 1..=steps {
            self.buckets[(self.current + step) % len] = Counts::default();
        }
        self.current = (self.current + steps) % len;
        // steps < len, and len came from a u32.
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.current_start += self.width.saturating_mul(steps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome::new(Kind::Success, false);
    const FAIL: Outcome = Outcome::new(Kind::Failure, false);
    const TIMEOUT: Outcome = Outcome::new(Kind::Timeout, false);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ten_seconds(t0: Instant) -> Window {
        Window::new(Duration::from_secs(10), 10, t0)
    }

    #[test]
    fn counts_each_kind_and_slow_in_addition_to_its_kind() {
        let t0 = Instant::now();
        let mut w = ten_seconds(t0);
        w.record(t0, OK);
        w.record(t0, Outcome::new(Kind::Success, true));
        w.record(t0, FAIL);
        w.record(t0, TIMEOUT);
        w.record(t0, Outcome::new(Kind::Timeout, true));
        let c = w.counts(t0);
        assert_eq!(
            c,
            Counts {
                successes: 2,
                failures: 1,
                timeouts: 2,
                slow: 2
            }
        );
        assert_eq!(c.total(), 5);
        assert_eq!(c.errors(), 3, "timeouts are errors");
        assert_eq!(c.error_percent(), 60);
        assert_eq!(c.slow_percent(), 40);
    }

    #[test]
    fn percentages_truncate_like_hystrix() {
        let c = Counts {
            successes: 5001,
            failures: 4999,
            ..Counts::default()
        };
        assert_eq!(c.error_percent(), 49, "49.99 % is 49 %, not 50 %");
        let c = Counts {
            successes: 1,
            failures: 1,
            ..Counts::default()
        };
        assert_eq!(c.error_percent(), 50);
        let c = Counts {
            successes: 2,
            slow: 2,
            timeouts: 1,
            ..Counts::default()
        };
        assert_eq!(c.slow_percent(), 66, "66.67 % is 66 %");
    }

    #[test]
    fn an_empty_window_is_zero_percent() {
        let c = Counts::default();
        assert_eq!((c.total(), c.error_percent(), c.slow_percent()), (0, 0, 0));
    }

    #[test]
    fn results_older_than_the_window_expire() {
        let t0 = Instant::now();
        let mut w = ten_seconds(t0);
        for _ in 0..5 {
            w.record(t0, FAIL);
        }
        assert_eq!(w.counts(t0 + ms(9_999)).failures, 5);
        w.record(t0 + ms(11_000), OK);
        let c = w.counts(t0 + ms(11_000));
        assert_eq!(
            (c.failures, c.successes),
            (0, 1),
            "errors from 11 s ago are gone"
        );
    }

    #[test]
    fn buckets_expire_one_slice_at_a_time() {
        let t0 = Instant::now();
        let mut w = ten_seconds(t0);
        w.record(t0 + ms(500), FAIL);
        w.record(t0 + ms(5_500), TIMEOUT);
        // A slice leaves once the current slice starts a whole window after
        // it: [0 s, 1 s) at 10 s, [5 s, 6 s) at 15 s.
        assert_eq!(w.counts(t0 + ms(9_999)).errors(), 2);
        assert_eq!(w.counts(t0 + ms(10_000)).errors(), 1);
        w.record(t0 + ms(10_000), OK);
        assert_eq!(w.counts(t0 + ms(10_000)).total(), 2);
        assert_eq!(w.counts(t0 + ms(14_999)).timeouts, 1);
        assert_eq!(w.counts(t0 + ms(15_000)).timeouts, 0);
    }

    #[test]
    fn reading_without_a_roll_agrees_with_recording() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(1), 4, t0);
        for i in 0..40 {
            let now = t0 + ms(i * 90);
            let before = w.counts(now);
            let mut rolled = w.clone();
            rolled.roll(now);
            assert_eq!(before, rolled.counts(now), "at {} ms", i * 90);
            w.record(now, if i % 3 == 0 { FAIL } else { OK });
        }
    }

    #[test]
    fn a_big_time_jump_clears_the_window() {
        let t0 = Instant::now();
        let mut w = ten_seconds(t0);
        w.record(t0, FAIL);
        w.record(t0 + ms(9_000), FAIL);
        let later = t0 + Duration::from_secs(3600 * 24 * 365);
        assert_eq!(w.counts(later), Counts::default());
        w.record(later, OK);
        assert_eq!(w.counts(later).total(), 1);
        assert_eq!(w.current_start, later, "the grid restarts at the jump");
        // And the ring keeps working normally afterwards.
        w.record(later + ms(1_000), FAIL);
        assert_eq!(w.counts(later + ms(1_000)).total(), 2);
    }

    #[test]
    fn time_going_backwards_lands_in_the_current_slice() {
        let t0 = Instant::now();
        let mut w = ten_seconds(t0 + ms(5_000));
        w.record(t0, FAIL);
        assert_eq!(w.counts(t0).failures, 1);
        assert_eq!(w.current, 0);
    }

    #[test]
    fn reset_forgets_everything() {
        let t0 = Instant::now();
        let mut w = ten_seconds(t0);
        w.record(t0, FAIL);
        w.record(t0 + ms(3_000), OK);
        w.reset(t0 + ms(4_000));
        assert_eq!(w.counts(t0 + ms(4_000)), Counts::default());
        w.record(t0 + ms(4_000), OK);
        assert_eq!(w.counts(t0 + ms(13_999)).total(), 1);
        assert_eq!(w.counts(t0 + ms(14_000)).total(), 0);
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::ZERO, 0, t0);
        w.record(t0, FAIL);
        assert_eq!(w.counts(t0).failures, 1);
        w.record(t0 + ms(1), OK);
        assert_eq!(w.counts(t0 + ms(1)).total(), 1);
        let w = Window::new(Duration::MAX, 1000, t0);
        assert_eq!(w.counts(t0 + Duration::from_secs(1)).total(), 0);
    }

    #[test]
    fn the_span_is_the_configured_window_when_it_divides_evenly() {
        let t0 = Instant::now();
        assert_eq!(ten_seconds(t0).span(), Duration::from_secs(10));
        assert_eq!(Window::new(ms(250), 1, t0).span(), ms(250));
    }
}
