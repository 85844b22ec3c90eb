//! Retry pacing for the etcd backend: exponential backoff with jitter, and
//! the uniform jitter before an acquisition, so replicas that saw the same
//! event do not all call etcd at the same instant.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Exponential from `first`, doubling up to `cap`; each delay is drawn
/// uniformly from the upper half of the current step.
#[derive(Debug)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
    rng: Rng,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        let cap = cap.max(first);
        Self {
            first,
            cap,
            step: first,
            rng: Rng::new(),
        }
    }

    /// The delay before the next retry; the step after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.cap);
        step / 2 + self.rng.below(step / 2)
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    /// Uniform in `[0, max)`.
    pub fn jitter(&mut self, max: Duration) -> Duration {
        self.rng.below(max)
    }
}

/// splitmix64 seeded from the process's random hasher keys: enough to spread
/// retries, not for secrets.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(RandomState::new().hash_one(std::process::id()))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max)` at nanosecond resolution; zero for zero.
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_the_upper_half_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        for (lo, hi) in [(50, 100), (100, 200), (200, 400), (250, 500), (250, 500)] {
            let d = b.next_delay();
            assert!(d >= ms(lo) && d < ms(hi), "{d:?} not in [{lo}, {hi}) ms");
        }
        b.reset();
        let d = b.next_delay();
        assert!(d >= ms(50) && d < ms(100), "{d:?}");
    }

    #[test]
    fn a_cap_below_the_first_step_is_the_first_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::ZERO);
        assert!(b.next_delay() < Duration::from_millis(100));
        assert!(b.next_delay() < Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        assert_eq!(b.jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1000 {
            assert!(b.jitter(Duration::from_millis(3)) < Duration::from_millis(3));
        }
    }
}
