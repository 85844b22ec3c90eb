//! The simulation harness of `tests/lease_sim.rs` (LEASES.md §6c); the
//! module docs there say what is simulated and why the check is sound.
//!
//! - `rng`: the seeded generator every choice of a run comes from.
//! - `pki`: a CA and one certificate per member.
//! - `net`: `turmoil::net` as the transport's `Network`.
//! - `clock`: each host's lease clock, at its own rate.
//! - `check`: the view log, its stamping intervals, G1, G2 and coverage.
//! - `plan`: a seed's schedule of faults.
//! - `host`: one host's software (transport, lease, recorder).
//! - `run`: one seed, start to end, and its report.

pub mod check;
pub mod clock;
pub mod host;
pub mod net;
pub mod pki;
pub mod plan;
pub mod rng;
pub mod run;

use std::time::Duration;

pub const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
pub const LEASE: &str = "orders";
pub const PORT: u16 = 7946;
pub const TTL: Duration = Duration::from_secs(2);
pub const RENEW: Duration = Duration::from_millis(500);
/// The simulated wall clock at the start: ballots take it as a floor.
pub const EPOCH_SECS: u64 = 1_800_000_000;

/// Simulated time in nanoseconds since the simulation started.
pub type Nanos = u128;

pub const SEC: Nanos = 1_000_000_000;

pub fn nanos(d: Duration) -> Nanos {
    d.as_nanos()
}

pub fn secs(at: Nanos) -> f64 {
    at as f64 / SEC as f64
}
