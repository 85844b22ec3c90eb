//! Each host's lease clock: exactly linear in simulated time, at its own
//! rate, so its deadlines convert back to simulated time exactly.

use std::time::Duration;

use breakwater::lease::LeaseClock;
use tokio::time::Instant;

use super::{Nanos, EPOCH_SECS, SEC};

/// Simulated time now, as seen from inside a host.
pub fn sim_now() -> Nanos {
    turmoil::sim_elapsed()
        .expect("called inside the simulation")
        .as_nanos()
}

/// A lease clock at `ppm / 10⁶` times the simulated rate, exactly linear
/// from its creation (one per process life), so its deadlines convert back
/// to simulated time exactly.
pub struct SimClock {
    pub origin: Instant,
    pub start: Nanos,
    pub ppm: u128,
}

impl SimClock {
    pub fn new(ppm: u128) -> Self {
        Self {
            origin: Instant::now(),
            start: sim_now(),
            ppm,
        }
    }

    /// The first simulated instant at which this clock reads `until` or
    /// later: the host stamps strictly before it.
    pub fn sim_deadline(&self, until: Instant) -> Nanos {
        let v = until.saturating_duration_since(self.origin).as_nanos();
        self.start + (v * 1_000_000).div_ceil(self.ppm)
    }
}

impl LeaseClock for SimClock {
    fn now(&self) -> Instant {
        let elapsed = sim_now() - self.start;
        let lease = elapsed * self.ppm / 1_000_000;
        self.origin + Duration::from_nanos(u64::try_from(lease).expect("fits"))
    }

    fn since_epoch(&self) -> Duration {
        let nanos = u64::try_from(sim_now()).expect("fits");
        Duration::from_secs(EPOCH_SECS) + Duration::from_nanos(nanos)
    }
}

/// A deadline on a fast or slow clock converts back to the first simulated
/// instant at which that clock reads it.
#[test]
pub fn lease_deadlines_convert_back_to_simulated_time_exactly() {
    let origin = Instant::now();
    for ppm in [900_000, 990_000, 1_000_000, 1_010_000, 1_100_000] {
        let clock = SimClock {
            origin,
            start: 7 * SEC,
            ppm,
        };
        let until = origin + Duration::from_nanos(1_234_567_891);
        let at = clock.sim_deadline(until) - clock.start;
        let reads = |elapsed: Nanos| elapsed * ppm / 1_000_000;
        assert!(reads(at) >= 1_234_567_891, "{ppm}");
        assert!(reads(at - 1) < 1_234_567_891, "{ppm}");
    }
}
