//! Deterministic simulation of the `peers` lease backend (LEASES.md §6c):
//! three hosts in a turmoil 0.7 simulation, each running the real lease
//! task, the real mutual-TLS transport and the real state file (in a temp
//! dir), over `turmoil::net`. Each host's lease clock runs at its own rate
//! in `[1−ρ, 1+ρ]` of simulated time. A seeded schedule injects message
//! loss, latency, partitions, held (then released) messages, crashes and
//! restarts, with and without the state file. Every change of each host's
//! published view is logged; the log is turned into stamping intervals
//! `(token, node, from, until)` in simulated time and checked:
//!
//! - G1: intervals of different tokens never overlap;
//! - G2: one node per token, and tokens grow with the tenures' starts;
//! - liveness (sanity, so the test can fail): after the faults are healed,
//!   a holder exists most of the time; handovers happen across the seeds.
//!
//! Soundness of the intervals. A host may stamp at simulated instant `t`
//! iff its current view has `valid_until > clock.now()`. Inside a turmoil
//! host time stands still while any task runs (the runtime's clock is
//! paused; it moves only when every task waits), so the recorder, woken by
//! the publish, logs it at the very simulated instant it was made. The
//! lease clock is exactly linear in simulated time within one process
//! life (`lease = origin + ⌊elapsed·k/10⁶⌋ ns`), so `valid_until` inverts
//! exactly: the host stamps while `elapsed < ⌈v·10⁶/k⌉`. An interval runs
//! from the publish to the earlier of that instant and the host's next
//! publish or crash: it is exactly the set of instants the gate would
//! stamp at. No sampling, so no overlap can slip between two samples.
//!
//! Runs: `SIM_SEEDS=N` seeds from `SIM_FIRST_SEED` (default 1), or one
//! seed with `SIM_SEED=S` (replay, printing the whole log). The suite runs
//! [`SUITE_SEEDS`]; `cargo test --all-features --test lease_sim -- --ignored
//! --nocapture` runs [`MANY_SEEDS`]. A failing seed prints the seed, its
//! schedule and the interval log.
//!
//! What is not deterministic: tokio's `select!` draws its branch order from
//! a thread-local RNG (seeded only under `--cfg tokio_unstable`), rustls
//! draws its randoms, and the state file is fsynced off the runtime. So a
//! replay runs the same schedule, clocks and jitter seeds, but may not
//! retrace every step.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use breakwater::config::{ClusterSpec, LeaseBackend, LeaseSpec, OnFollower, Peer, PeerTls};
use breakwater::lease::peers::driver::{Opened, PeerNetwork};
use breakwater::lease::peers::transport::{Listener, Network, Options};
use breakwater::lease::{Lease, LeaseClock, LeaseMetrics, LeaseView, NodeIdentity};
use breakwater::metrics::Metrics;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::time::Instant;

use breakwater::lease::peers::faults::Faults;

const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];
const LEASE: &str = "orders";
const PORT: u16 = 7946;
const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
/// The simulated wall clock at the start: ballots take it as a floor.
const EPOCH_SECS: u64 = 1_800_000_000;
/// Seeds the suite runs (see the module docs for the figures).
const SUITE_SEEDS: u64 = 16;
/// The least share of the last 2 ttl with a valid holder, per seed: the
/// faults were healed 3 ttl before, enough for a quarantine (1 ttl), a
/// step-down pause (1 ttl) and a round.
const MIN_COVERAGE: f64 = 0.5;
/// Seeds each broken variant may take to show a violation, at most.
#[cfg(feature = "test-hooks")]
const VARIANT_SEEDS: u64 = 40;
/// Seeds of the ignored long run.
const MANY_SEEDS: u64 = 2_000;

/// Simulated time in nanoseconds since the simulation started.
type Nanos = u128;

const SEC: Nanos = 1_000_000_000;

fn nanos(d: Duration) -> Nanos {
    d.as_nanos()
}

// ---- a small seeded RNG (SplitMix64) ---------------------------------------------

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x5151_7e57_c0de_0001)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.range(1, 100) <= percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

// ---- certificates --------------------------------------------------------------

/// One CA and a certificate per node (DNS SAN = its id), in a temp dir;
/// made once per test function (key generation is the slow part).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "sim-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), pem).expect("write ca.crt");
        let issuer = Issuer::new(params, key);
        for id in IDS {
            let mut params = CertificateParams::new(vec![id.to_owned()]).expect("valid SAN");
            params.distinguished_name.push(DnType::CommonName, id);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &issuer).expect("sign");
            std::fs::write(dir.path().join(format!("{id}.crt")), cert.pem()).expect("cert");
            std::fs::write(dir.path().join(format!("{id}.key")), key.serialize_pem()).expect("key");
        }
        Self { dir }
    }

    fn tls(&self, id: &str) -> PeerTls {
        PeerTls {
            cert: self.dir.path().join(format!("{id}.crt")),
            key: self.dir.path().join(format!("{id}.key")),
            ca: self.dir.path().join("ca.crt"),
        }
    }
}

// ---- turmoil as the transport's network ----------------------------------------

/// `turmoil::net` behind the transport's [`Network`].
struct SimNet;

/// A `turmoil::net::TcpListener` (a local type, for the foreign trait).
struct SimListener(turmoil::net::TcpListener);

impl Network for SimNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = SimListener;

    async fn bind(&self, addr: SocketAddr) -> std::io::Result<SimListener> {
        turmoil::net::TcpListener::bind(addr).await.map(SimListener)
    }

    async fn connect(&self, addr: &str) -> std::io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr.to_owned()).await
    }
}

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

// ---- per-host clocks -------------------------------------------------------------

/// Simulated time now, as seen from inside a host.
fn sim_now() -> Nanos {
    turmoil::sim_elapsed()
        .expect("called inside the simulation")
        .as_nanos()
}

/// A lease clock at `ppm / 10⁶` times the simulated rate, exactly linear
/// from its creation (one per process life), so its deadlines convert back
/// to simulated time exactly.
struct SimClock {
    origin: Instant,
    start: Nanos,
    ppm: u128,
}

impl SimClock {
    fn new(ppm: u128) -> Self {
        Self {
            origin: Instant::now(),
            start: sim_now(),
            ppm,
        }
    }

    /// The first simulated instant at which this clock reads `until` or
    /// later: the host stamps strictly before it.
    fn sim_deadline(&self, until: Instant) -> Nanos {
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

    fn unix_secs(&self) -> u64 {
        EPOCH_SECS + u64::try_from(sim_now() / SEC).expect("fits")
    }
}

// ---- the log ---------------------------------------------------------------------

/// What a host may do from an instant on, as far as G1 and G2 go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Stamps with `token` until the simulated instant `until` (exclusive).
    Holding { token: u64, until: Nanos },
    /// Publishes no deadline (a follower, or nothing known).
    Idle,
    /// Crashed: nothing runs.
    Down,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    node: usize,
    at: Nanos,
    state: State,
}

type Log = Rc<RefCell<Vec<Entry>>>;

/// One stamping interval: `node` may stamp with `token` in `[from, until)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval {
    token: u64,
    node: usize,
    from: Nanos,
    until: Nanos,
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token {:>16} {} [{:>9.3} s, {:>9.3} s)",
            self.token,
            IDS[self.node],
            secs(self.from),
            secs(self.until)
        )
    }
}

fn secs(at: Nanos) -> f64 {
    at as f64 / SEC as f64
}

/// The log turned into intervals: each `Holding` lasts until its deadline
/// or the node's next entry, whichever is first; empty ones are dropped.
fn intervals(log: &[Entry], end: Nanos) -> Vec<Interval> {
    let mut out = Vec::new();
    for node in 0..IDS.len() {
        let entries: Vec<&Entry> = log.iter().filter(|e| e.node == node).collect();
        for (i, entry) in entries.iter().enumerate() {
            let State::Holding { token, until } = entry.state else {
                continue;
            };
            let next = entries.get(i + 1).map_or(end, |e| e.at);
            let until = until.min(next);
            if until > entry.at {
                out.push(Interval {
                    token,
                    node,
                    from: entry.at,
                    until,
                });
            }
        }
    }
    out.sort_by_key(|i| (i.from, i.node));
    out
}

// ---- the checks ------------------------------------------------------------------

/// What one seed's run showed.
#[derive(Default, Debug)]
struct Findings {
    violations: Vec<String>,
    tenures: usize,
    handovers: usize,
    /// Share of the last stretch of the quiet period with a valid holder.
    coverage: f64,
}

/// G1, G2 and the liveness figures over `intervals`.
fn check(intervals: &[Interval], quiet: (Nanos, Nanos)) -> Findings {
    let mut findings = Findings::default();
    // G1: two intervals of different tokens never overlap.
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if b.from >= a.until {
                continue;
            }
            if a.token != b.token {
                findings.violations.push(format!("G1: {a} overlaps {b}"));
            }
        }
    }
    // G2: one node per token; tenures (by first start) have growing tokens.
    let mut tenures: BTreeMap<u64, (Nanos, usize)> = BTreeMap::new();
    for i in intervals {
        let tenure = tenures.entry(i.token).or_insert((i.from, i.node));
        if tenure.1 != i.node {
            findings.violations.push(format!(
                "G2: token {} held by {} and {}",
                i.token, IDS[tenure.1], IDS[i.node]
            ));
        }
        tenure.0 = tenure.0.min(i.from);
    }
    let mut by_start: Vec<(Nanos, u64, usize)> = tenures
        .iter()
        .map(|(t, (from, n))| (*from, *t, *n))
        .collect();
    by_start.sort();
    for pair in by_start.windows(2) {
        let ((_, a, _), (at, b, _)) = (pair[0], pair[1]);
        if b <= a {
            findings.violations.push(format!(
                "G2: the tenure starting at {:.3} s has token {b}, not above {a}",
                secs(at)
            ));
        }
    }
    findings.tenures = by_start.len();
    findings.handovers = by_start.windows(2).filter(|p| p[0].2 != p[1].2).count();
    // Liveness: the share of the window with some valid holder.
    let (lo, hi) = quiet;
    let mut covered: Vec<(Nanos, Nanos)> = intervals
        .iter()
        .map(|i| (i.from.max(lo), i.until.min(hi)))
        .filter(|(a, b)| a < b)
        .collect();
    covered.sort();
    let (mut total, mut reach) = (0, lo);
    for (a, b) in covered {
        let a = a.max(reach);
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    findings.coverage = total as f64 / (hi - lo) as f64;
    findings
}

// ---- the schedule ------------------------------------------------------------------

/// Which host a fault hits: a fixed one, or whoever holds the lease (by
/// the log) when the fault starts; its end (restart, repair, release) hits
/// the same host.
#[derive(Clone, Copy, Debug)]
enum Who {
    Node(usize),
    Holder { otherwise: usize },
}

/// A fault, applied at its instant by the loop that steps the simulation.
/// `slot` indexes [`Plan::targets`]; `other` (1 or 2) picks the host that
/// many places after the target.
#[derive(Clone, Copy, Debug)]
enum Fault {
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
    fn target(self) -> Option<(usize, usize)> {
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
struct Plan {
    seed: u64,
    /// `max_drift` in percent; clock rates stay within it.
    drift_pct: u64,
    /// Each host life's clock rate, in parts per million, by (node, life).
    rates: Vec<Vec<u128>>,
    min_latency_ms: u64,
    max_latency_ms: u64,
    repair_rate: f64,
    targets: Vec<Who>,
    faults: Vec<(Nanos, Fault)>,
    heal: Nanos,
    end: Nanos,
}

const LIVES: usize = 64;

impl Plan {
    /// The schedule of `seed`. `hostile` (the broken-variant runs): the
    /// largest drift, more faults, every one aimed at the holder.
    fn new(seed: u64, hostile: bool) -> Self {
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

    /// Every member loses its state file at once, at the heal: LEASES.md
    /// §3.6's last case, where G2 rests on the wall-clock floor of ballots.
    fn with_total_loss(mut self) -> Self {
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
    fn quiet(&self) -> (Nanos, Nanos) {
        (self.end - 2 * nanos(TTL), self.end)
    }
}

// ---- one host ------------------------------------------------------------------------

/// What a host's software needs; shared by all its lives.
#[derive(Clone)]
struct HostSetup {
    node: usize,
    cluster: ClusterSpec,
    spec: LeaseSpec,
    seed: u64,
    rates: Rc<Vec<u128>>,
    lives: Rc<RefCell<usize>>,
    log: Log,
    /// Commands from the loop that steps the simulation, and their doorbell.
    commands: Rc<RefCell<Vec<Command>>>,
    doorbell: Arc<tokio::sync::Notify>,
    /// The protocol to run: the real one unless a broken-variant test.
    faults: Faults,
}

/// What the loop that steps the simulation asks of a running host.
#[derive(Clone, Copy, Debug)]
enum Command {
    /// `POST /leases/NAME/release`: step down, release, pause one ttl.
    Release,
    /// SIGTERM: step down, release, stop the transport, end.
    Stop,
}

fn cluster(node: usize, state_dir: &Path, pki: &Pki) -> ClusterSpec {
    let me = IDS[node];
    ClusterSpec {
        node_id: me.to_owned(),
        forward_url: None,
        listen: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
        advertise: None,
        public_url: None,
        state_dir: Some(state_dir.to_owned()),
        peers: IDS
            .iter()
            .filter(|id| **id != me)
            .map(|id| Peer {
                id: (*id).to_owned(),
                address: format!("{id}:{PORT}"),
            })
            .collect(),
        tls: Some(pki.tls(me)),
        allow_even_members: false,
    }
}

fn spec(drift_pct: u64) -> LeaseSpec {
    LeaseSpec {
        name: LEASE.to_owned(),
        backend: LeaseBackend::Peers,
        ttl: TTL,
        renew_every: RENEW,
        max_drift: drift_pct as f64,
        on_follower: OnFollower::Forward,
        wait: Duration::ZERO,
        require_healthy: None,
    }
}

/// One life of a host: the transport, the lease, and the recorder.
async fn run_host(setup: HostSetup) -> turmoil::Result {
    let life = {
        let mut lives = setup.lives.borrow_mut();
        *lives += 1;
        *lives - 1
    };
    let seed = setup.seed ^ ((setup.node as u64) << 32) ^ life as u64;
    let clock = Arc::new(SimClock::new(setup.rates[life % LIVES]));
    let listener = SimListener(turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?);
    let metrics = LeaseMetrics::new(&Metrics::new())?;
    let options = Options {
        jitter_seed: Some(seed),
        ..Options::default()
    };
    let network = PeerNetwork::start_on(
        &setup.cluster,
        SimNet,
        listener,
        options,
        metrics.peers().clone(),
    )?;
    let opened = Opened::open(LEASE, &setup.cluster)?.with_seed(seed.rotate_left(17));
    #[cfg(feature = "test-hooks")]
    let opened = opened.with_faults(setup.faults);
    #[cfg(not(feature = "test-hooks"))]
    assert_eq!(
        setup.faults,
        Faults::default(),
        "broken protocols need test-hooks"
    );
    let backend = Box::new(opened.attach(network.link(LEASE)));
    let node = Arc::new(NodeIdentity {
        node_id: IDS[setup.node].to_owned(),
        forward_url: None,
        public_url: None,
    });
    let (_healthy_tx, healthy) = tokio::sync::watch::channel(true);
    let lease = Lease::start(
        setup.spec.clone(),
        node,
        backend,
        healthy,
        clock.clone(),
        &metrics,
    );
    let record = |view: &LeaseView| {
        let state = match (view.token, view.valid_until) {
            (Some(token), Some(until)) => State::Holding {
                token,
                until: clock.sim_deadline(until),
            },
            _ => State::Idle,
        };
        setup.log.borrow_mut().push(Entry {
            node: setup.node,
            at: sim_now(),
            state,
        });
    };
    let mut seen = lease.view();
    record(&seen);
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let network = Rc::new(network);
    // Commands run in their own tasks, so every publish they cause is
    // logged at its instant; a stop ends this life once it is done.
    let mut stopping: Option<tokio::task::JoinHandle<()>> = None;
    setup.commands.borrow_mut().clear();
    loop {
        tokio::select! {
            view = lease.wait_for_change_since(&seen, far) => {
                record(&view);
                seen = view;
            }
            () = setup.doorbell.notified() => {
                let commands = std::mem::take(&mut *setup.commands.borrow_mut());
                for command in commands {
                    let (lease, network) = (lease.clone(), network.clone());
                    match command {
                        Command::Release => {
                            tokio::task::spawn_local(async move { lease.release().await });
                        }
                        Command::Stop if stopping.is_none() => {
                            stopping = Some(tokio::task::spawn_local(async move {
                                lease.shutdown().await;
                                network.shutdown().await;
                            }));
                        }
                        Command::Stop => {}
                    }
                }
            }
            _ = async { stopping.as_mut().expect("guarded").await }, if stopping.is_some() => {
                record(&lease.view());
                return Ok(());
            }
        }
    }
}

// ---- one seed ------------------------------------------------------------------------

/// What a run produced: the log, the intervals and the checks.
struct Outcome {
    plan: Plan,
    log: Vec<Entry>,
    intervals: Vec<Interval>,
    findings: Findings,
    /// The faults as applied: when, and to which host.
    applied: Vec<(Nanos, String)>,
}

impl Outcome {
    fn report(&self) -> String {
        let mut out = format!(
            "seed {} (replay: SIM_SEED={}): drift {}%, latency {}..{} ms, repair_rate {}\n",
            self.plan.seed,
            self.plan.seed,
            self.plan.drift_pct,
            self.plan.min_latency_ms,
            self.plan.max_latency_ms,
            self.plan.repair_rate
        );
        out += &format!(
            "schedule (healed at {:.3} s, ends at {:.3} s):\n",
            secs(self.plan.heal),
            secs(self.plan.end)
        );
        for (at, fault) in &self.applied {
            out += &format!("  {:>9.3} s  {fault}\n", secs(*at));
        }
        out += "views:\n";
        for e in &self.log {
            let state = match e.state {
                State::Holding { token, until } => {
                    format!("holding token {token} until {:.6} s", secs(until))
                }
                other => format!("{other:?}"),
            };
            out += &format!("  {:>12.6} s  {}  {state}\n", secs(e.at), IDS[e.node]);
        }
        out += "intervals:\n";
        for i in &self.intervals {
            out += &format!("  {i}\n");
        }
        out += &format!(
            "tenures {}, handovers {}, holder {:.0}% of the last 2 ttl\n",
            self.findings.tenures,
            self.findings.handovers,
            self.findings.coverage * 100.0
        );
        for v in &self.findings.violations {
            out += &format!("VIOLATION {v}\n");
        }
        out
    }
}

/// Runs `plan` with the protocol `variant` (the real one: `Faults::default()`).
fn run_seed(pki: &Pki, plan: Plan, variant: Faults) -> Outcome {
    let seed = plan.seed;
    let dirs: Vec<tempfile::TempDir> = IDS.iter().map(|_| state_dir()).collect();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(3600))
        .min_message_latency(Duration::from_millis(plan.min_latency_ms))
        .max_message_latency(Duration::from_millis(plan.max_latency_ms))
        .fail_rate(0.0)
        .repair_rate(plan.repair_rate)
        .build();
    let log: Log = Rc::default();
    let commands: Vec<Rc<RefCell<Vec<Command>>>> = IDS.iter().map(|_| Rc::default()).collect();
    let doorbells: Vec<Arc<tokio::sync::Notify>> = IDS.iter().map(|_| Arc::default()).collect();
    for node in 0..IDS.len() {
        let setup = HostSetup {
            node,
            cluster: cluster(node, dirs[node].path(), pki),
            spec: spec(plan.drift_pct),
            seed,
            rates: Rc::new(plan.rates[node].clone()),
            lives: Rc::default(),
            log: log.clone(),
            commands: commands[node].clone(),
            doorbell: doorbells[node].clone(),
            faults: variant,
        };
        sim.host(IDS[node], move || run_host(setup.clone()));
    }
    let restart = |sim: &mut turmoil::Sim, node: usize| {
        if variant.forget_promise_on_restart {
            forget_promise(dirs[node].path(), node);
        }
        sim.bounce(IDS[node]);
    };
    let state_file =
        |node: usize| -> PathBuf { dirs[node].path().join(format!("peers-{LEASE}.state")) };
    let mut next = 0;
    let mut down = [false; 3];
    let mut resolved: Vec<Option<usize>> = vec![None; plan.targets.len()];
    let mut applied = Vec::new();
    let ips: Vec<std::net::IpAddr> = IDS.iter().map(|id| sim.lookup(*id)).collect();
    let now = |sim: &turmoil::Sim| nanos(sim.elapsed());
    let mark_down = |log: &Log, node: usize, at: Nanos| {
        log.borrow_mut().push(Entry {
            node,
            at,
            state: State::Down,
        });
    };
    while now(&sim) < plan.end {
        while let Some(&(at, fault)) = plan.faults.get(next) {
            let t = now(&sim);
            if at > t {
                break;
            }
            next += 1;
            let (slot, other) = fault.target().unwrap_or((usize::MAX, 0));
            let (node, peer) = match resolved.get_mut(slot) {
                Some(host) => {
                    let holder = holder_at(&log.borrow(), t);
                    let node = *host.get_or_insert(match plan.targets[slot] {
                        Who::Node(n) => n,
                        Who::Holder { otherwise } => holder.unwrap_or(otherwise),
                    });
                    applied.push((t, format!("{fault:?}: {}", IDS[node])));
                    (node, (node + other) % 3)
                }
                None => {
                    applied.push((t, format!("{fault:?}")));
                    (0, 0)
                }
            };
            match fault {
                Fault::Crash { wipe, .. } => {
                    if !down[node] {
                        sim.crash(IDS[node]);
                        mark_down(&log, node, t);
                        down[node] = true;
                    }
                    if wipe {
                        let _ = std::fs::remove_file(state_file(node));
                    }
                }
                Fault::Restart { .. } => {
                    if down[node] {
                        restart(&mut sim, node);
                        down[node] = false;
                    }
                }
                Fault::Bounce { wipe, .. } => {
                    sim.crash(IDS[node]);
                    mark_down(&log, node, t);
                    if wipe {
                        let _ = std::fs::remove_file(state_file(node));
                    }
                    restart(&mut sim, node);
                    down[node] = false;
                }
                Fault::StepDown { .. } | Fault::Stop { .. } if !down[node] => {
                    let command = match fault {
                        Fault::Stop { .. } => Command::Stop,
                        _ => Command::Release,
                    };
                    commands[node].borrow_mut().push(command);
                    doorbells[node].notify_one();
                    // A stopped host is started again by `Restart`.
                    down[node] |= matches!(command, Command::Stop);
                }
                Fault::StepDown { .. } | Fault::Stop { .. } => {}
                Fault::Isolate { .. } => {
                    for other in (0..3).filter(|o| *o != node) {
                        sim.partition(ips[node], ips[other]);
                    }
                }
                Fault::Rejoin { .. } => {
                    for other in (0..3).filter(|o| *o != node) {
                        sim.repair(ips[node], ips[other]);
                    }
                }
                Fault::Partition { .. } => sim.partition(ips[node], ips[peer]),
                Fault::Repair { .. } => sim.repair(ips[node], ips[peer]),
                Fault::Hold { .. } => sim.hold(ips[node], ips[peer]),
                Fault::Release { .. } => sim.release(ips[node], ips[peer]),
                Fault::FailRate { rate } => sim.set_fail_rate(rate),
                Fault::MaxLatency { ms } => sim.set_max_message_latency(Duration::from_millis(ms)),
                Fault::Heal => {
                    sim.set_fail_rate(0.0);
                    sim.set_max_message_latency(Duration::from_millis(plan.max_latency_ms));
                    for a in 0..3 {
                        for b in a + 1..3 {
                            sim.release(ips[a], ips[b]);
                            sim.repair(ips[a], ips[b]);
                        }
                    }
                    for (node, down) in down.iter_mut().enumerate() {
                        if *down {
                            restart(&mut sim, node);
                            *down = false;
                        }
                    }
                }
            }
        }
        if let Err(e) = sim.step() {
            panic!("seed {seed}: the simulation failed: {e}");
        }
    }
    let end = now(&sim);
    let log = log.borrow().clone();
    let intervals = intervals(&log, end);
    let findings = check(&intervals, plan.quiet());
    Outcome {
        plan,
        log,
        intervals,
        findings,
        applied,
    }
}

/// A state dir, in memory when the host has a tmpfs: the state file is
/// fsynced before every reply, and a host waits for it in real time (not
/// simulated), so a disk makes the runs several times slower.
fn state_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    shm.is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
        .unwrap_or_else(|| tempfile::tempdir().expect("state dir"))
}

/// The node whose view lets it stamp at `t`, if any, by the log.
fn holder_at(log: &[Entry], t: Nanos) -> Option<usize> {
    (0..IDS.len()).find(|node| {
        let last = log.iter().rev().find(|e| e.node == *node && e.at <= t);
        matches!(last, Some(Entry { state: State::Holding { until, .. }, .. }) if *until > t)
    })
}

/// The restart fault `forget_promise_on_restart`: the state file keeps
/// `max_ttl` but its `promised` goes back to zero.
fn forget_promise(dir: &Path, node: usize) {
    use breakwater::lease::peers::acceptor::Durable;
    use breakwater::lease::peers::ballot::Ballot;
    use breakwater::lease::peers::members::Members;
    use breakwater::lease::peers::state::StateFile;
    let me = IDS[node];
    let peers = IDS.iter().filter(|id| **id != me).copied();
    let members = Members::new(me, peers).expect("members");
    let file = StateFile::new(dir, LEASE, &members).expect("state file");
    if let Ok(Some(durable)) = file.load() {
        let forgot = Durable {
            promised: Ballot::ZERO,
            ..durable
        };
        file.store(&forgot).expect("rewrite the state file");
    }
}

// ---- the runs ------------------------------------------------------------------------

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

/// LEASES.md §3.6's last case, for the record: all three state files lost
/// at once. Prints the seeds whose tokens went down (G2): the new ballots
/// start from the simulated wall clock's seconds, while renewals every
/// 500 ms had pushed the counters past it.
#[test]
#[ignore = "G2 after a total state loss rests on the wall clock; prints what it finds"]
fn tokens_after_a_total_state_loss() {
    let pki = Pki::new();
    let seeds = env_u64("SIM_SEEDS").unwrap_or(10);
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
}

/// The broken protocols of LEASES.md §6b, as [`Faults`] for the lease
/// tasks (each acceptor and proposer holds its own: none is process-global).
/// The first two the hostile schedules catch within a few seeds; the
/// others need what these schedules rarely or never make (an `Accepted`
/// late while its `Propose` was quick and the `Learn` lost; a `Release`
/// delayed past the owner's next tenure; a stale proposer meeting a node
/// that forgot its promise) and are left to the model checker.
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

/// The checks themselves, on made-up intervals.
#[test]
fn the_checks_flag_overlaps_shared_tokens_and_falling_tokens() {
    let i = |token, node, from: Nanos, until: Nanos| Interval {
        token,
        node,
        from: from * SEC,
        until: until * SEC,
    };
    let quiet = (0, 10 * SEC);
    // Back to back, growing tokens, a holder throughout: clean.
    let clean = check(&[i(5, 0, 0, 4), i(5, 0, 4, 6), i(9, 1, 6, 10)], quiet);
    assert!(clean.violations.is_empty(), "{:?}", clean.violations);
    assert_eq!((clean.tenures, clean.handovers), (2, 1));
    assert!((clean.coverage - 1.0).abs() < 1e-9);
    // Two tokens at the same instant: G1.
    let g1 = check(&[i(5, 0, 0, 4), i(9, 1, 3, 6)], quiet);
    assert!(g1.violations[0].starts_with("G1"), "{:?}", g1.violations);
    // One token on two nodes, and a later tenure with a lower token: G2.
    let shared = check(&[i(5, 0, 0, 2), i(5, 1, 3, 4)], quiet);
    assert!(
        shared.violations[0].starts_with("G2"),
        "{:?}",
        shared.violations
    );
    let falling = check(&[i(9, 0, 0, 2), i(5, 1, 3, 4)], quiet);
    assert!(
        falling.violations[0].starts_with("G2"),
        "{:?}",
        falling.violations
    );
    assert!((falling.coverage - 0.3).abs() < 1e-9);
}

/// A deadline on a fast or slow clock converts back to the first simulated
/// instant at which that clock reads it.
#[test]
fn lease_deadlines_convert_back_to_simulated_time_exactly() {
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
