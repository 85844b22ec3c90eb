//! A seed's schedule: drift, clock rates, latency, and the faults with
//! their instants and targets.

use super::rng::Rng;
use super::{nanos, Nanos, IDS, SEC, TTL};

/// Which host a fault hits: a fixed one, or whoever holds the lease (by
/// the log) when the fault starts; its end (restart, repair, release) hits
/// the same host.
#[derive(Clone, Copy, Debug)]
pub enum Who {
    Node(usize),
    Holder { otherwise: usize },
}

/// A fault, applied at its instant by the loop that steps the simulation.
/// `slot` indexes [`Plan::targets`]; `other` (1 or 2) picks the host that
/// many places after the target.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Kill a host (its state file stays unless `wipe`).
    Crash {
        slot: usize,
        wipe: bool,
    },
    /// Start a host's software again (no-op if it runs).
    Restart {
        slot: usize,
    },
    /// Kill and restart at once (`Sim::bounce`).
    Bounce {
        slot: usize,
        wipe: bool,
    },
    /// The operator's release (`POST /leases/NAME/release`).
    StepDown {
        slot: usize,
    },
    /// A graceful stop (SIGTERM); `Restart` starts the host again.
    Stop {
        slot: usize,
    },
    /// Cut both links of a host, and mend them.
    Isolate {
        slot: usize,
    },
    Rejoin {
        slot: usize,
    },
    /// Cut one link, and mend it.
    Partition {
        slot: usize,
        other: usize,
    },
    Repair {
        slot: usize,
        other: usize,
    },
    /// Hold messages on one link, to be delivered late on `Release`.
    Hold {
        slot: usize,
        other: usize,
    },
    Release {
        slot: usize,
        other: usize,
    },
    /// Per-message chance that a link breaks (turmoil's `fail_rate`).
    FailRate {
        rate: f64,
    },
    MaxLatency {
        ms: u64,
    },
    /// Everything healthy again (the start of the quiet period).
    Heal,
}

impl Fault {
    /// The target's slot and the offset of the other host, if it has one.
    pub fn target(self) -> Option<(usize, usize)> {
        match self {
            Fault::Crash { slot, .. }
            | Fault::Restart { slot }
            | Fault::Bounce { slot, .. }
            | Fault::StepDown { slot }
            | Fault::Stop { slot }
            | Fault::Isolate { slot }
            | Fault::Rejoin { slot } => Some((slot, 0)),
            Fault::Partition { slot, other }
            | Fault::Repair { slot, other }
            | Fault::Hold { slot, other }
            | Fault::Release { slot, other } => Some((slot, other)),
            Fault::FailRate { .. } | Fault::MaxLatency { .. } | Fault::Heal => None,
        }
    }
}

/// A seed's whole run, decided up front.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// `max_drift` in percent; clock rates stay within it.
    pub drift_pct: u64,
    /// The `max_drift` the leases are configured with: `drift_pct` but
    /// in [`Plan::with_drift_understated`].
    pub config_drift_pct: u64,
    /// Each host life's clock rate, in parts per million, by (node, life).
    pub rates: Vec<Vec<u128>>,
    pub min_latency_ms: u64,
    pub max_latency_ms: u64,
    pub repair_rate: f64,
    pub targets: Vec<Who>,
    pub faults: Vec<(Nanos, Fault)>,
    pub heal: Nanos,
    pub end: Nanos,
}

pub const LIVES: usize = 64;

impl Plan {
    /// The schedule of `seed`. `hostile` (the broken-variant runs): the
    /// largest drift, more faults, every one aimed at the holder.
    pub fn new(seed: u64, hostile: bool) -> Self {
        let mut rng = Rng::new(seed);
        let drift_pct = if hostile { 10 } else { rng.pick(&[1, 5, 10]) };
        let rho = u128::from(drift_pct) * 10_000;
        let rates = (0..IDS.len())
            .map(|_| {
                (0..LIVES)
                    .map(|_| match rng.range(0, 3) {
                        0 => 1_000_000 - rho,
                        1 => 1_000_000 + rho,
                        _ => 1_000_000 - rho + u128::from(rng.range(0, 2 * rho as u64)),
                    })
                    .collect()
            })
            .collect();
        let min_latency_ms = rng.range(0, 3);
        let max_latency_ms = min_latency_ms + rng.pick(&[1, 5, 20, 50, 150]);
        let repair_rate = rng.pick(&[0.01, 0.05, 0.2]);
        let start = SEC;
        let heal = start + nanos(TTL) * 10;
        let mut targets = Vec::new();
        let mut faults = Vec::new();
        let mut last_wipe: Option<Nanos> = None;
        let count = if hostile {
            rng.range(8, 20)
        } else {
            rng.range(2, 14)
        };
        for slot in 0..count as usize {
            let at = rng.range(start as u64, heal as u64 - 1) as Nanos;
            let lasts = rng.range(0, (3 * nanos(TTL)) as u64) as Nanos;
            let end = (at + lasts).min(heal);
            let node = rng.range(0, 2) as usize;
            let other = rng.range(1, 2) as usize;
            targets.push(match hostile || rng.chance(50) {
                true => Who::Holder { otherwise: node },
                false => Who::Node(node),
            });
            // At most one member without its state at a time (§3.6: a
            // majority must remember): wipes at least 5 ttl apart.
            let near = |w: Nanos| at < w + 5 * nanos(TTL) && w < at + 5 * nanos(TTL);
            let wipe = rng.chance(30) && !last_wipe.is_some_and(near);
            if wipe {
                last_wipe = Some(at);
            }
            let (first, then) = match rng.range(0, 9) {
                7 => (Fault::StepDown { slot }, None),
                8 => (Fault::Stop { slot }, Some(Fault::Restart { slot })),
                0 => (Fault::Crash { slot, wipe }, Some(Fault::Restart { slot })),
                1 => (Fault::Bounce { slot, wipe }, None),
                2 => (
                    Fault::Partition { slot, other },
                    Some(Fault::Repair { slot, other }),
                ),
                3 => (Fault::Isolate { slot }, Some(Fault::Rejoin { slot })),
                4 => (
                    Fault::Hold { slot, other },
                    Some(Fault::Release { slot, other }),
                ),
                5 => {
                    let rate = rng.pick(&[0.0005, 0.002, 0.01]);
                    let off = Fault::FailRate { rate: 0.0 };
                    (Fault::FailRate { rate }, Some(off))
                }
                _ => {
                    let ms = max_latency_ms + rng.pick(&[100, 300, 1_000]);
                    let back = Fault::MaxLatency { ms: max_latency_ms };
                    (Fault::MaxLatency { ms }, Some(back))
                }
            };
            faults.push((at, first));
            faults.extend(then.map(|f| (end, f)));
        }
        faults.push((heal, Fault::Heal));
        faults.sort_by_key(|(at, _)| *at);
        Self {
            seed,
            drift_pct,
            config_drift_pct: drift_pct,
            rates,
            min_latency_ms,
            max_latency_ms,
            repair_rate,
            targets,
            faults,
            heal,
            end: heal + 5 * nanos(TTL),
        }
    }

    /// The clocks drift by `drift_pct` while the leases are told
    /// `max_drift: config_pct`: a misconfiguration §1 rules out.
    pub fn with_drift_understated(mut self, config_pct: u64) -> Self {
        self.config_drift_pct = config_pct;
        self
    }

    /// Every member loses its state file at once, at the heal: LEASES.md
    /// §3.6's last case, where G2 rests on the wall-clock floor of ballots.
    pub fn with_total_loss(mut self) -> Self {
        for node in 0..IDS.len() {
            let slot = self.targets.len();
            self.targets.push(Who::Node(node));
            let wipe = Fault::Bounce { slot, wipe: true };
            self.faults.push((self.heal, wipe));
        }
        self
    }

    /// The window liveness is measured over: the last 2 ttl of the quiet
    /// period (which gives 3 ttl to recover: quarantines last one).
    pub fn quiet(&self) -> (Nanos, Nanos) {
        (self.end - 2 * nanos(TTL), self.end)
    }
}
