//! Test-only instrumentation (feature `test-hooks`, LEASES.md §6d): the
//! instants the lease soak tests check, on CLOCK_MONOTONIC, which every
//! process on one host shares, so intervals logged by different processes
//! and stamps seen by the checker upstream can be compared.

use std::sync::OnceLock;

use tokio::time::Instant;

/// The header a holder adds next to the token: when it stamped, in ns.
pub const STAMP_HEADER: &str = "x-breakwater-stamp-ns";

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// A tokio instant on CLOCK_MONOTONIC, in nanoseconds. The offset between
/// the two clocks is taken once; tokio's clock is CLOCK_MONOTONIC too, so
/// it does not drift (it would under `tokio::time::pause`, never used with
/// this feature's tests).
pub fn instant_ns(at: Instant) -> u64 {
    static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();
    let (origin, origin_ns) = *ORIGIN.get_or_init(|| (Instant::now(), monotonic_ns()));
    if at >= origin {
        let since = u64::try_from(at.duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
        origin_ns.saturating_add(since)
    } else {
        let before = u64::try_from(origin.duration_since(at).as_nanos()).unwrap_or(u64::MAX);
        origin_ns.saturating_sub(before)
    }
}
