//! Deterministic simulation of the `peers` lease backend (LEASES.md §6c):
//! three hosts in a turmoil 0.7 simulation, each running the real lease
//! task, the real mutual-TLS transport and the real state file (in a temp
//! dir), over `turmoil::net`. Each host's lease clock runs at its own rate
//! in `[1−ρ, 1+ρ]` of simulated time (ρ = the leases' `max_drift`: 1, 5 or
//! 10%; a new rate each process life). ttl 2 s, renew_every 500 ms. A
//! seeded schedule (`sim::plan`) injects message loss (`fail_rate`), latency
//! spikes, partitions, held-then-released messages, crashes and restarts
//! with and without the state file, bounces, step-downs and graceful stops;
//! half the faults hit whoever holds the lease when they start. After 20 s
//! of faults everything is healed, and the run goes on for 5 ttl. Every
//! change of each host's published view is logged; the log is turned into
//! stamping intervals `(token, node, from, until)` in simulated time and
//! checked (`sim::check`):
//!
//! - G1: intervals of different tokens never overlap;
//! - G2: one node per token, and tokens grow with the tenures' starts;
//! - liveness (so the test can fail): a valid holder at least half of the
//!   last 2 ttl of each seed; a handover in some seed.
//!
//! Soundness of the intervals. A host may stamp at simulated instant `t`
//! iff its current view has `valid_until > clock.now()`. Inside a turmoil
//! host, simulated time is the host runtime's paused tokio clock, which
//! moves only when no task of that runtime is ready; the recorder is made
//! ready by the publish, so it logs the publish at the very simulated
//! instant it was made (a publish at the end of a tick is logged at the
//! start of the next: the same instant, since the clock moves only inside
//! the runtime). The lease clock is exactly linear in simulated time within
//! one process life (`lease = origin + ⌊elapsed·k/10⁶⌋ ns`), so
//! `valid_until` inverts exactly: the host stamps while
//! `elapsed < ⌈v·10⁶/k⌉`. An interval runs from the publish to the earlier
//! of that instant and the host's next publish or crash: exactly the
//! instants at which the gate would stamp. No sampling, so no overlap can
//! slip between two samples; and the checker is shown to fail on broken
//! protocols and on drift beyond `max_drift`.
//!
//! Runs: `SIM_SEEDS=N` seeds from `SIM_FIRST_SEED` (default 1), or one
//! seed with `SIM_SEED=S` (replay, printing the whole log). The suite runs
//! [`SUITE_SEEDS`]; `cargo test --all-features --test lease_sim --
//! --ignored --nocapture` runs [`MANY_SEEDS`] and the exploratory runs (a
//! release build is about ten times faster: 0.13 s a seed). A failing
//! seed prints the seed, its schedule as applied and the interval log.
//!
//! What is not deterministic: tokio's `select!` draws its branch order from
//! a thread-local RNG (seeded only under `--cfg tokio_unstable`), rustls
//! draws its randoms, and the state file is fsynced off the runtime. So a
//! replay runs the same schedule, clocks and jitter seeds, and in practice
//! the same tenures, but may differ by a few milliseconds here and there.

mod sim;

use std::time::Instant as StdInstant;

use breakwater::lease::peers::faults::Faults;

use sim::pki::Pki;
use sim::plan::Plan;
use sim::run::run_seed;

/// Seeds the suite runs (see the module docs for the figures).
const SUITE_SEEDS: u64 = 12;
/// The least share of the last 2 ttl with a valid holder, per seed: the
/// faults were healed 3 ttl before, enough for a quarantine (1 ttl), a
/// step-down pause (1 ttl) and a round.
const MIN_COVERAGE: f64 = 0.5;
/// Seeds each broken variant may take to show a violation, at most.
#[cfg(feature = "test-hooks")]
const VARIANT_SEEDS: u64 = 40;
/// Seeds of the ignored long run (about 45 min in debug; for more, a
/// release build and `SIM_SEEDS`: 10,000 seeds took 27 min on two busy
/// cores, with 154,114 faults, 31,793 tenures, 17,703 handovers in 8,572
/// seeds, no violation and a holder throughout every final 2 ttl).
const MANY_SEEDS: u64 = 2_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Totals over many seeds.
#[derive(Default)]
struct Totals {
    seeds: u64,
    faults: usize,
    tenures: usize,
    handovers: usize,
    seeds_with_handover: u64,
    coverage_sum: f64,
    low_coverage: Vec<(u64, f64)>,
    failures: Vec<u64>,
}

/// Runs the seeds `SIM_SEED` (one, printing its log) or `SIM_SEEDS` from
/// `SIM_FIRST_SEED` (default: `count` from 1); panics with the first
/// failing seed's report.
fn run_seeds(count: u64) {
    let pki = Pki::new();
    let (first, count, verbose) = match env_u64("SIM_SEED") {
        Some(seed) => (seed, 1, true),
        None => (
            env_u64("SIM_FIRST_SEED").unwrap_or(1),
            env_u64("SIM_SEEDS").unwrap_or(count),
            false,
        ),
    };
    let started = StdInstant::now();
    let mut totals = Totals::default();
    let mut first_report = None;
    for seed in first..first + count {
        let outcome = run_seed(&pki, Plan::new(seed, false), Faults::default());
        if verbose {
            println!("{}", outcome.report());
        }
        let f = &outcome.findings;
        totals.seeds += 1;
        totals.faults += outcome.applied.len();
        totals.tenures += f.tenures;
        totals.handovers += f.handovers;
        totals.seeds_with_handover += u64::from(f.handovers > 0);
        totals.coverage_sum += f.coverage;
        let stalled = f.coverage < MIN_COVERAGE;
        if stalled {
            totals.low_coverage.push((seed, f.coverage));
        }
        if !f.violations.is_empty() || stalled {
            totals.failures.push(seed);
            eprintln!("{}", outcome.report());
            first_report.get_or_insert_with(|| outcome.report());
        }
        if totals.seeds % 100 == 0 {
            eprintln!(
                "lease_sim: {} seeds, {:.0} s, failing: {:?}",
                totals.seeds,
                started.elapsed().as_secs_f64(),
                totals.failures
            );
        }
    }
    println!(
        "lease_sim: {} seeds from {first} in {:.1} s: {} faults injected, {} tenures, \
         {} handovers ({} seeds with one), mean holder coverage {:.1}% of the last 2 ttl, \
         seeds below the minimum: {:?}, failing seeds: {:?}",
        totals.seeds,
        started.elapsed().as_secs_f64(),
        totals.faults,
        totals.tenures,
        totals.handovers,
        totals.seeds_with_handover,
        100.0 * totals.coverage_sum / totals.seeds as f64,
        totals.low_coverage,
        totals.failures,
    );
    if let Some(report) = first_report {
        panic!("G1/G2 violated, or no holder after healing; first failing seed:\n{report}");
    }
    assert!(
        totals.seeds < 10 || totals.seeds_with_handover > 0,
        "no handover in {} seeds: the faults miss the holder",
        totals.seeds
    );
}

#[test]
fn leases_stay_exclusive_and_tokens_grow_under_simulated_faults() {
    run_seeds(SUITE_SEEDS);
}

#[test]
#[ignore = "thousands of seeds: run with --ignored --nocapture"]
fn leases_stay_exclusive_and_tokens_grow_over_many_seeds() {
    run_seeds(MANY_SEEDS);
}

/// The drift margin is what keeps G1 when clocks disagree: clocks drifting
/// 10% under leases configured for 1% must be caught (`D` then exceeds
/// what a fast acceptor remembers, as with `d_equals_t`).
#[test]
fn the_checker_catches_drift_beyond_max_drift() {
    let pki = Pki::new();
    let tries = env_u64("SIM_VARIANT_SEEDS").unwrap_or(40);
    let caught = (1..=tries).find_map(|seed| {
        let plan = Plan::new(seed, true).with_drift_understated(1);
        let outcome = run_seed(&pki, plan, Faults::default());
        let first = outcome.findings.violations.first().cloned();
        first.map(|v| (seed, v))
    });
    let (seed, violation) = caught.expect("10% drift under max_drift 1% went unnoticed");
    println!("drift 10% under max_drift 1%: caught by seed {seed}: {violation}");
}

/// LEASES.md §3.6's last case: all three state files lost at once. Tokens
/// then rest on the wall-clock floor of ballots alone (§3.1), which must
/// outrun the counters: renewals every 500 ms take two ballots a second.
/// With a floor of whole seconds, 57 of 100 seeds saw a later tenure get a
/// lower token; the floor now steps 16 times a second
/// (`ballot::FLOOR_PER_SEC`). `SIM_SEEDS` runs more (30: none broke).
#[test]
fn tokens_grow_after_a_total_state_loss() {
    let pki = Pki::new();
    let seeds = env_u64("SIM_SEEDS").unwrap_or(6);
    let mut broken = Vec::new();
    for seed in 1..=seeds {
        let outcome = run_seed(
            &pki,
            Plan::new(seed, false).with_total_loss(),
            Faults::default(),
        );
        if let Some(v) = outcome.findings.violations.first() {
            println!("seed {seed}: {v}");
            broken.push(seed);
        }
    }
    println!(
        "total state loss: {} of {seeds} seeds broke G1/G2: {broken:?}",
        broken.len()
    );
    assert!(broken.is_empty(), "seeds that broke G1/G2: {broken:?}");
}

/// The broken protocols of LEASES.md §6b, as [`Faults`] for the lease
/// tasks (each acceptor and proposer holds its own: none is process-global).
/// The first two the hostile schedules catch within a few seeds (2 and 8);
/// the others need what these schedules rarely or never make: a stale
/// proposer meeting a node that forgot its promise (caught by seed 107 or
/// 185, depending on the run), an `Accepted` late while its `Propose` was
/// quick and the `Learn` lost, a `Release` delayed past the owner's next
/// tenure (neither caught in 1,000 seeds). Those are left to the model
/// checker; so are `short_quarantine` (the driver has no way to start an
/// acceptor with a shortened quarantine) and `count_messages_not_nodes`
/// (framed TCP never delivers a message twice).
#[cfg(feature = "test-hooks")]
fn variants() -> [(&'static str, Faults, bool); 5] {
    let open = Faults {
        ignore_open_filter: true,
        ..Faults::default()
    };
    let broken = |f: fn(&mut Faults)| {
        let mut faults = Faults::default();
        f(&mut faults);
        faults
    };
    [
        (
            "overwrite_live_grant",
            Faults {
                overwrite_live_grant: true,
                ..open
            },
            true,
        ),
        ("d_equals_t", broken(|f| f.d_equals_t = true), true),
        (
            "deadline_from_accept_quorum",
            broken(|f| f.deadline_from_accept_quorum = true),
            false,
        ),
        (
            "owner_only_release",
            broken(|f| f.owner_only_release = true),
            false,
        ),
        (
            "forget_promise_on_restart",
            broken(|f| f.forget_promise_on_restart = true),
            false,
        ),
    ]
}

/// Runs each variant `must` selects on hostile schedules until a seed
/// shows a violation, at most `SIM_VARIANT_SEEDS` (default `tries`);
/// returns the names of those no seed caught.
#[cfg(feature = "test-hooks")]
fn hunt(must: bool, tries: u64) -> Vec<&'static str> {
    let pki = Pki::new();
    let tries = env_u64("SIM_VARIANT_SEEDS").unwrap_or(tries);
    let mut missed = Vec::new();
    for (name, faults, _) in variants().into_iter().filter(|v| v.2 == must) {
        let started = StdInstant::now();
        let caught = (1..=tries).find_map(|seed| {
            let outcome = run_seed(&pki, Plan::new(seed, true), faults);
            let first = outcome.findings.violations.first().cloned();
            first.map(|v| (seed, v))
        });
        match caught {
            Some((seed, violation)) => println!(
                "{name}: caught by seed {seed} in {:.1} s: {violation}",
                started.elapsed().as_secs_f64()
            ),
            None => {
                println!("{name}: not caught in {tries} seeds");
                missed.push(name);
            }
        }
    }
    missed
}

/// A checker that cannot fail proves nothing: G1 and G2 must catch the
/// broken protocols the simulation can express.
#[cfg(feature = "test-hooks")]
#[test]
fn the_checker_catches_broken_protocols() {
    let missed = hunt(true, VARIANT_SEEDS);
    assert!(missed.is_empty(), "broken variants not caught: {missed:?}");
}

/// The other variants, for the record: prints which seeds catch them.
#[cfg(feature = "test-hooks")]
#[test]
#[ignore = "these variants are rarely or never caught here; prints what the seeds find"]
fn broken_protocols_the_schedules_rarely_catch() {
    let missed = hunt(false, 200);
    println!("not caught: {missed:?}");
}
