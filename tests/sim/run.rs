//! One seed from start to end: the simulation, its hosts, the faults
//! applied at their instants, the log checked, and the report.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use breakwater::lease::peers::faults::Faults;

use super::check::{check, holder_at, intervals, Entry, Findings, Interval, Log, State};
use super::host::{cluster, run_host, spec, Command, HostSetup};
use super::pki::Pki;
use super::plan::{Fault, Plan, Who};
use super::{nanos, secs, Nanos, EPOCH_SECS, IDS, LEASE};

/// What a run produced: the log, the intervals and the checks.
pub struct Outcome {
    pub plan: Plan,
    pub log: Vec<Entry>,
    pub intervals: Vec<Interval>,
    pub findings: Findings,
    /// The faults as applied: when, and to which host.
    pub applied: Vec<(Nanos, String)>,
}

impl Outcome {
    pub fn report(&self) -> String {
        let mut out = format!(
            "seed {} (replay: SIM_SEED={}): drift {}% (max_drift {}%), latency {}..{} ms, repair_rate {}\n",
            self.plan.seed,
            self.plan.seed,
            self.plan.drift_pct,
            self.plan.config_drift_pct,
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
pub fn run_seed(pki: &Pki, plan: Plan, variant: Faults) -> Outcome {
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
            spec: spec(plan.config_drift_pct),
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
    // Whatever still ran on the host (a graceful stop under way) is cut.
    let restart = |sim: &mut turmoil::Sim, node: usize| {
        log.borrow_mut().push(Entry {
            node,
            at: nanos(sim.elapsed()),
            state: State::Down,
        });
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
pub fn state_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    shm.is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten()
        .unwrap_or_else(|| tempfile::tempdir().expect("state dir"))
}
/// The restart fault `forget_promise_on_restart`: the state file keeps
/// `max_ttl` but its `promised` goes back to zero.
pub fn forget_promise(dir: &Path, node: usize) {
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
