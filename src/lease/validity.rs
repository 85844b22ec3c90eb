//! How long a grant may be used: the drift-safe share of a `ttl`
//! (LEASES.md §1).
//!
//! A holder measures its deadline on its own clock, and whoever grants the
//! lease measures the expiry on theirs. Each clock runs at a rate within
//! `1 ± ρ` of real time, so a fast granter forgets the grant after at least
//! `T/(1+ρ)` real time while a slow holder's `D` local lasts up to
//! `D/(1−ρ)` real time. `D = T·(1−ρ)/(1+ρ) − ε` keeps the holder's use of the
//! grant strictly inside every granter's memory of it, with `ε` to spare for
//! scheduling between the check and the stamp.

use std::time::Duration;

use tokio::time::Instant;

/// Scheduling slack `ε` taken off every usable period.
pub const SLACK: Duration = Duration::from_millis(5);

/// The usable part `D` of a grant of `ttl` given a clock-rate bound of
/// `max_drift_percent` (validated to 0..50): `ttl·(1−ρ)/(1+ρ) − SLACK`,
/// saturating at zero. Out-of-range or non-finite drifts give zero (never
/// stamp) rather than a panic.
pub fn usable(ttl: Duration, max_drift_percent: f64) -> Duration {
    let rho = max_drift_percent / 100.0;
    if !(0.0..1.0).contains(&rho) {
        return Duration::ZERO;
    }
    let factor = (1.0 - rho) / (1.0 + rho);
    // Fails only on overflow, which a factor ≤ 1 cannot cause; zero is the
    // safe answer anyway.
    Duration::try_from_secs_f64(ttl.as_secs_f64() * factor)
        .unwrap_or(Duration::ZERO)
        .saturating_sub(SLACK)
}

/// The instant until which a grant whose round started at `t0` (read before
/// the request that earned it was sent) may be used. An instant that does
/// not fit the clock gives `t0` itself: a grant never usable, not a panic.
pub fn valid_until(t0: Instant, ttl: Duration, max_drift_percent: f64) -> Instant {
    t0.checked_add(usable(ttl, max_drift_percent)).unwrap_or(t0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn assert_near(got: Duration, want_ms: f64) {
        let got_ms = got.as_secs_f64() * 1000.0;
        assert!(
            (got_ms - want_ms).abs() <= 1.0,
            "got {got_ms} ms, want {want_ms} ms ± 1"
        );
    }

    #[test]
    fn ten_seconds_at_one_percent_is_about_9797_ms() {
        // 10 000 · 0.99 / 1.01 − 5 = 9 796.98 ms
        assert_near(usable(Duration::from_secs(10), 1.0), 9796.98);
    }

    #[test]
    fn fifteen_seconds_at_five_percent() {
        // 15 000 · 0.95 / 1.05 − 5 = 13 566.43 ms
        assert_near(usable(Duration::from_secs(15), 5.0), 13566.43);
    }

    #[test]
    fn no_drift_leaves_only_the_slack_off() {
        assert_eq!(
            usable(Duration::from_secs(10), 0.0),
            Duration::from_millis(9995)
        );
    }

    #[test]
    fn short_ttl_saturates_at_zero() {
        assert_eq!(usable(Duration::from_millis(5), 1.0), Duration::ZERO);
        assert_eq!(usable(Duration::from_millis(4), 0.0), Duration::ZERO);
        assert_eq!(usable(Duration::ZERO, 1.0), Duration::ZERO);
    }

    #[test]
    fn just_above_the_slack_is_positive() {
        // 6 ms with no drift leaves 1 ms.
        assert_eq!(
            usable(Duration::from_millis(6), 0.0),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn out_of_range_drift_never_allows_stamping() {
        for bad in [100.0, 150.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                usable(Duration::from_secs(10), bad),
                Duration::ZERO,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_largest_validated_drift_still_leaves_a_third() {
        // ρ = 49.9 %: 30 000 · 0.501 / 1.499 − 5 = 10 021.68 ms
        assert_near(usable(Duration::from_secs(30), 49.9), 10021.68);
    }

    #[test]
    fn huge_ttl_does_not_panic() {
        let d = usable(Duration::MAX, 1.0);
        assert!(d > Duration::from_secs(1 << 40));
    }

    #[test]
    fn valid_until_is_t0_plus_usable() {
        let t0 = Instant::now();
        let until = valid_until(t0, Duration::from_secs(10), 1.0);
        assert_near(until - t0, 9796.98);
    }

    #[test]
    fn valid_until_that_does_not_fit_is_t0() {
        let t0 = Instant::now();
        assert_eq!(valid_until(t0, Duration::MAX, 0.0), t0);
    }
}
