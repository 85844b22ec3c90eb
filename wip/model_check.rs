//! Exhaustive model checking of the `peers` lease protocol (LEASES.md §6b)
//! with `stateright`, around the pure machines of `lease::peers`.
//!
//! Not stateright's `ActorModel`: it fires any armed timer at any moment,
//! so a lease would expire the instant it is granted. This is a plain
//! [`Model`] with real time in it:
//!
//! - Real time `t` counts ticks up to the horizon `H`; `T` = 10 ticks.
//!   Each node's lease clock reads `T + rate·t` local units, its rate fixed
//!   per run at 4, 5 or 6 units per tick: `1 − ρ`, `1`, `1 + ρ` with
//!   ρ = 0.2, every combination an initial state. (So `ttl` = 50 units and
//!   `D = T·(1−ρ)/(1+ρ)` = 33 units, rounded down.)
//! - `Tick` advances real time by one and is refused while a timer (the
//!   proposer's, or the acceptor's `wake_at`) is overdue: each timer fires
//!   in the tick its local deadline is reached, in any order with the
//!   deliveries of that tick. Everything between two ticks happens at the
//!   same real instant, and a message may arrive in the tick it was sent.
//! - The network is a set of packets `(from, to, message)`: deliver one
//!   (removing it), deliver one and keep it (duplication), or drop it.
//!   Which one is delivered next is free, so any order can happen (an
//!   identical packet sent again while one is in flight merges with it:
//!   the kept copy can already be delivered any number of times).
//! - Nodes crash (memory and timers gone, the state file kept) and restart
//!   with their state file or without it (amnesiac, §3.6), step down
//!   (release), and run their proposer timers (rounds).
//!
//! Properties: `always` G1 (at most one node holding, each judged by its
//! own clock, at the same real time) and G2 (a new tenure's token exceeds
//! every earlier one); `sometimes` a handover (two nodes have held) and a
//! holder whose tenure began after a restart, plus a renewal.
//!
//! The proposer runs with [`Faults::ignore_open_filter`]: §3.7 says safety
//! does not rest on the open-Promise filter (§3.4.4), so the check does
//! without it. Every broken variant of §6b must then give a counterexample.
//!
//! `cargo test --test model_check -- --nocapture` prints the bounds, the
//! state counts and the counterexample lengths. The full bounds of §6b run
//! with `cargo test --release --test model_check -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::fmt;
use std::time::Instant;

use breakwater::lease::peers::acceptor::{Acceptor, Durable, Effects};
use breakwater::lease::peers::ballot::Ballot;
use breakwater::lease::peers::faults::Faults;
use breakwater::lease::peers::members::Members;
use breakwater::lease::peers::messages::{self, Envelope, Message, Urls};
use breakwater::lease::peers::proposer::{
    Action, Event, Now, Proposer, TimerKind, Timing, ViewChange,
};
use breakwater::lease::peers::Millis;
use stateright::{Checker, HasDiscoveries, Model, Path, Property};

const IDS: [&str; 3] = ["a", "b", "c"];
/// Local units per real tick at the nominal rate.
const UNITS: Millis = 5;
/// `T`: 10 ticks.
const TTL: Millis = 10 * UNITS;
/// `D = T·(1−ρ)/(1+ρ)` with ρ = 1/5, rounded down (33.3 → 33).
const USABLE: Millis = TTL * (UNITS - 1) / (UNITS + 1);
/// Below `D/2`, as the configuration requires.
const RENEW_EVERY: Millis = 16;
/// Clock rates, local units per tick: `1 − ρ`, `1`, `1 + ρ`.
const ALL_RATES: [Millis; 3] = [UNITS - 1, UNITS, UNITS + 1];
/// The quarantine of the `short_quarantine` fault: below the tight bound
/// `D·(1+ρ)/(1−ρ)` = 49.5 units (a restarted fast acceptor is silent for
/// 40/6 ≈ 6.7 ticks while a slow holder may stamp for 33/4 = 8.25).
const SHORT_QUARANTINE: Millis = 40;
const LEASE: &str = "orders";

/// How far the checker looks.
#[derive(Clone, Debug)]
struct Bounds {
    /// Real time ends here (ticks).
    horizon: u8,
    /// The clock rates each node may have (all combinations are checked).
    rates: Vec<Millis>,
    max_crashes: u8,
    max_lost_files: u8,
    max_releases: u8,
    /// Rounds (Prepares) started by all proposers together; past it, a
    /// state has no successors.
    max_rounds: u8,
    /// Whose app is healthy: only they acquire.
    proposers: [bool; 3],
    renew_every: Millis,
    /// Packets that may stay in flight across a tick (0, 1 or 2); all
    /// others are lost when real time moves on.
    survivors: usize,
    /// Whether `Learn`s travel (they are advisory; without them every one
    /// is lost).
    learn: bool,
}

impl Bounds {
    /// LEASES.md §6b: H = 3T, ≤ 2 crashes, ≤ 1 lost file.
    fn full() -> Bounds {
        Bounds {
            horizon: 30,
            rates: ALL_RATES.to_vec(),
            max_crashes: 2,
            max_lost_files: 1,
            max_releases: 1,
            max_rounds: 6,
            proposers: [true, true, true],
            renew_every: RENEW_EVERY,
            survivors: 1,
            learn: true,
        }
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proposers: Vec<&str> = (0..3)
            .filter(|&i| self.proposers[i])
            .map(|i| IDS[i])
            .collect();
        write!(
            f,
            "H = {} ticks (T = 10), rates {:?}/{UNITS} per tick, ttl = {TTL}, D = {USABLE}, \
             renew every {}, ≤ {} crashes, ≤ {} lost files, ≤ {} releases, ≤ {} rounds, \
             proposers {proposers:?}",
            self.horizon,
            self.rates,
            self.renew_every,
            self.max_crashes,
            self.max_lost_files,
            self.max_releases,
            self.max_rounds,
        )
    }
}

/// A message in flight: its slot (sender, receiver, kind, ballot or
/// token), then the message encoded (the codec gives the set an order).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Packet {
    slot: Slot,
    bytes: Vec<u8>,
}

/// At most one message per slot is in flight: an answer sent again for
/// the same ballot while the first is still on its way is lost (the
/// proposer counts one answer per node and ballot anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Slot {
    from: u8,
    to: u8,
    kind: u8,
    number: u64,
}

impl Packet {
    fn new(from: usize, to: usize, message: Message) -> Packet {
        let (kind, number) = match &message {
            Message::Prepare { ballot, .. } => (0, ballot.as_u64()),
            Message::Promise { ballot, .. } => (1, ballot.as_u64()),
            Message::Propose { ballot, .. } => (2, ballot.as_u64()),
            Message::Accepted { ballot } => (3, ballot.as_u64()),
            Message::Nack { ballot, .. } => (4, ballot.as_u64()),
            Message::Release { token, .. } => (5, *token),
            Message::Learn { token, .. } => (6, *token),
            Message::Sync => (7, 0),
            Message::SyncReply { .. } => (8, 0),
        };
        let envelope = Envelope::Lease {
            lease: LEASE.into(),
            message,
        };
        Packet {
            slot: Slot {
                from: from as u8,
                to: to as u8,
                kind,
                number,
            },
            bytes: messages::encode(&envelope).unwrap(),
        }
    }

    fn from(&self) -> usize {
        usize::from(self.slot.from)
    }

    fn to(&self) -> usize {
        usize::from(self.slot.to)
    }

    fn message(&self) -> Message {
        match messages::decode(&self.bytes).unwrap() {
            Envelope::Lease { message, .. } => message,
            Envelope::Hello(_) => unreachable!("only lease messages are sent"),
        }
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = IDS[self.from()];
        let to = IDS[self.to()];
        write!(f, "{from}→{to} {}", short(&self.message()))
    }
}

/// A message in a few words, ballots as `counter.ordinal`.
fn short(message: &Message) -> String {
    let b = |n: u64| Ballot::from_u64(n).map_or(n.to_string(), |b| b.to_string());
    match message {
        Message::Prepare { ballot, .. } => format!("Prepare {ballot}"),
        Message::Promise { ballot, grant } => match grant {
            Some(g) => format!("Promise {ballot} (holds {} {})", g.owner, b(g.token)),
            None => format!("Promise {ballot}"),
        },
        Message::Propose {
            ballot,
            owner,
            token,
            ..
        } => format!("Propose {ballot} {owner} {}", b(*token)),
        Message::Accepted { ballot } => format!("Accepted {ballot}"),
        Message::Nack { ballot, held, .. } => match held {
            Some(h) => format!("Nack {ballot} (holds {} {})", h.owner, b(h.token)),
            None => format!("Nack {ballot}"),
        },
        Message::Release { owner, token } => format!("Release {owner} {}", b(*token)),
        Message::Learn { owner, token, .. } => format!("Learn {owner} {}", b(*token)),
        Message::Sync => "Sync".into(),
        Message::SyncReply { promised, .. } => format!("SyncReply {promised}"),
    }
}

/// A running node's machines.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Machines {
    acceptor: Acceptor,
    proposer: Proposer,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Node {
    /// Local units per real tick.
    rate: Millis,
    /// `None` while crashed.
    up: Option<Machines>,
    /// The state file.
    disk: Option<Durable>,
    /// The proposer's armed timers (local deadlines), as the driver keeps
    /// them.
    timers: [Option<Millis>; 4],
    /// The tenure `(token, valid_until)` this node last published as
    /// holding, since its last start.
    held: Option<(u64, Millis)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// Real time, in ticks.
    t: u8,
    nodes: [Node; 3],
    net: BTreeSet<Packet>,
    crashes: u8,
    lost_files: u8,
    releases: u8,
    rounds: u8,
    /// The highest tenure token published so far (0: none yet).
    max_token: u64,
    /// Whether a new tenure's token was not above every earlier one.
    g2_broken: bool,
    /// Which nodes have held (bit per node).
    holders: u8,
    restarted: bool,
    held_after_restart: bool,
    renewed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// The packet stays in flight: it may be delivered again (duplication)
    /// until a tick drops it.
    Deliver(Packet),
    Timer(usize, TimerKind),
    /// The acceptor's own timer (`wake_at`, while amnesiac).
    Wake(usize),
    Tick(BTreeSet<Packet>),
    Crash(usize),
    Restart { node: usize, file: bool },
    StepDown(usize),
}

struct LeaseModel {
    bounds: Bounds,
    faults: Faults,
    timing: Timing,
}

fn members(i: usize) -> Members {
    let peers = IDS.iter().copied().filter(|id| *id != IDS[i]);
    Members::new(IDS[i], peers).unwrap()
}

fn index(id: &str) -> usize {
    IDS.iter().position(|x| *x == id).unwrap()
}

impl LeaseModel {
    fn new(bounds: Bounds, faults: Faults) -> LeaseModel {
        LeaseModel {
            timing: Timing {
                ttl_ms: TTL,
                usable_ms: USABLE,
                renew_every_ms: bounds.renew_every,
            },
            bounds,
            faults,
        }
    }

    /// Node `i`'s lease clock now. It starts at `T`, so that a node
    /// created with `now = 0` is just out of its start quarantine.
    fn local(&self, s: &State, i: usize) -> Millis {
        TTL + s.nodes[i].rate * Millis::from(s.t)
    }

    /// A node (re)started at `now` from `file`, faults applied.
    fn machines(&self, i: usize, file: Option<Durable>, now: Millis) -> Machines {
        let file = match self.faults.forget_promise_on_restart {
            true => file.map(|d| Durable {
                promised: Ballot::ZERO,
                ..d
            }),
            false => file,
        };
        // The acceptor is quarantined from `now` for its max_ttl (≥ ttl);
        // starting it that much earlier minus the short quarantine leaves
        // the short one.
        let quarantine = file.map_or(TTL, |d| d.max_ttl_ms.max(TTL));
        let now = match self.faults.short_quarantine {
            true => now - (quarantine - SHORT_QUARANTINE),
            false => now,
        };
        let mut acceptor = Acceptor::new(members(i), file, now, TTL);
        acceptor.set_faults(self.faults);
        let healthy = self.bounds.proposers[i];
        let seed = i as u64 + 1;
        let mut proposer = Proposer::new(members(i), self.timing, Urls::default(), healthy, seed);
        proposer.set_faults(self.faults);
        Machines { acceptor, proposer }
    }

    fn boot(&self, s: &mut State, i: usize) {
        let local = self.local(s, i);
        let Some(m) = s.nodes[i].up.as_mut() else {
            return;
        };
        let effects = m.acceptor.tick(local);
        self.apply(s, i, effects, None);
        self.proposer_event(s, i, Event::Tick);
    }

    fn send(&self, s: &mut State, from: usize, to: usize, message: Message) {
        if !self.bounds.learn && matches!(message, Message::Learn { .. }) {
            return;
        }
        let packet = Packet::new(from, to, message);
        if s.net.iter().all(|p| p.slot != packet.slot) {
            s.net.insert(packet);
        }
    }

    fn broadcast(&self, s: &mut State, from: usize, message: &Message) {
        for to in (0..3).filter(|&to| to != from) {
            self.send(s, from, to, message.clone());
        }
    }

    /// The driver's part for acceptor effects: persist, then send.
    fn apply(&self, s: &mut State, i: usize, effects: Effects, reply_to: Option<usize>) {
        if let Some(state) = effects.persist {
            s.nodes[i].disk = Some(state);
        }
        if let (Some(reply), Some(to)) = (effects.reply, reply_to) {
            self.send(s, i, to, reply);
        }
        if let Some(message) = effects.broadcast {
            self.broadcast(s, i, &message);
        }
    }

    fn proposer_event(&self, s: &mut State, i: usize, event: Event) {
        let now = Now {
            at: self.local(s, i),
            // A frozen wall clock: G2 must come from persisted promises.
            unix_secs: 0,
        };
        let Some(m) = s.nodes[i].up.as_mut() else {
            return;
        };
        let actions = m.proposer.on_event(now, &mut m.acceptor, event);
        for action in actions {
            match action {
                Action::Persist(state) => s.nodes[i].disk = Some(state),
                Action::Broadcast(message) => {
                    if matches!(message, Message::Prepare { .. }) {
                        s.rounds += 1;
                    }
                    self.broadcast(s, i, &message);
                }
                Action::SetTimer { kind, at } => s.nodes[i].timers[kind as usize] = at,
                Action::Publish(view) => self.published(s, i, &view),
            }
        }
    }

    /// Keeps the tenure history: G2, handovers, renewals.
    fn published(&self, s: &mut State, i: usize, view: &ViewChange) {
        let ViewChange::Holding { token, valid_until } = *view else {
            return;
        };
        match s.nodes[i].held {
            Some((held, until)) if held == token => s.renewed |= valid_until > until,
            _ => {
                if s.max_token != 0 && token <= s.max_token {
                    s.g2_broken = true;
                }
                s.max_token = s.max_token.max(token);
                s.holders |= 1 << i;
                s.held_after_restart |= s.restarted;
            }
        }
        s.nodes[i].held = Some((token, valid_until));
    }

    fn deliver(&self, s: &mut State, packet: &Packet) {
        let (from, to) = (packet.from(), packet.to());
        let message = packet.message();
        let local = self.local(s, to);
        let Some(m) = s.nodes[to].up.as_mut() else {
            return;
        };
        let effects = m.acceptor.handle(local, IDS[from], &message);
        self.apply(s, to, effects, Some(from));
        let event = Event::Received {
            from: IDS[from].into(),
            message,
        };
        self.proposer_event(s, to, event);
    }

    /// Nodes that may stamp now, each by its own clock.
    fn holding_now(&self, s: &State) -> usize {
        (0..3)
            .filter(|&i| {
                s.nodes[i].up.as_ref().is_some_and(|m| {
                    matches!(m.proposer.view(), ViewChange::Holding { valid_until, .. }
                        if self.local(s, i) < *valid_until)
                })
            })
            .count()
    }

    /// Timers (proposer and acceptor) whose local deadline has come.
    fn overdue(&self, s: &State, out: &mut Vec<Step>) {
        for i in 0..3 {
            let Some(m) = &s.nodes[i].up else {
                continue;
            };
            let local = self.local(s, i);
            for kind in TimerKind::ALL {
                if s.nodes[i].timers[kind as usize].is_some_and(|at| at <= local) {
                    out.push(Step::Timer(i, kind));
                }
            }
            if m.acceptor.wake_at().is_some_and(|at| at <= local) {
                out.push(Step::Wake(i));
            }
        }
    }
}

impl Model for LeaseModel {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let rates = &self.bounds.rates;
        let mut states = Vec::new();
        for &r0 in rates {
            for &r1 in rates {
                for &r2 in rates {
                    let node = |rate| Node {
                        rate,
                        up: None,
                        disk: Some(Durable::default()),
                        timers: [None; 4],
                        held: None,
                    };
                    let mut s = State {
                        t: 0,
                        nodes: [node(r0), node(r1), node(r2)],
                        net: BTreeSet::new(),
                        crashes: 0,
                        lost_files: 0,
                        releases: 0,
                        rounds: 0,
                        max_token: 0,
                        g2_broken: false,
                        holders: 0,
                        restarted: false,
                        held_after_restart: false,
                        renewed: false,
                    };
                    // Up for a while, nothing granted, files in place.
                    for i in 0..3 {
                        s.nodes[i].up = Some(self.machines(i, s.nodes[i].disk, 0));
                    }
                    for i in 0..3 {
                        self.boot(&mut s, i);
                    }
                    states.push(s);
                }
            }
        }
        states
    }

    fn actions(&self, s: &State, out: &mut Vec<Step>) {
        if s.rounds > self.bounds.max_rounds {
            return;
        }
        for packet in &s.net {
            if s.nodes[packet.to()].up.is_some() {
                out.push(Step::Deliver(packet.clone()));
            }
        }
        let before = out.len();
        self.overdue(s, out);
        if out.len() == before && s.t < self.bounds.horizon {
            // Real time moves on; at most `survivors` packets stay in flight.
            let packets: Vec<&Packet> = s.net.iter().collect();
            out.push(Step::Tick(BTreeSet::new()));
            for (i, p) in packets.iter().enumerate() {
                if self.bounds.survivors >= 1 {
                    out.push(Step::Tick([(*p).clone()].into()));
                }
                if self.bounds.survivors >= 2 {
                    for q in &packets[i + 1..] {
                        out.push(Step::Tick([(*p).clone(), (*q).clone()].into()));
                    }
                }
            }
        }
        for i in 0..3 {
            match &s.nodes[i].up {
                Some(m) => {
                    if s.crashes < self.bounds.max_crashes {
                        out.push(Step::Crash(i));
                    }
                    if s.releases < self.bounds.max_releases && m.proposer.tenure().is_some() {
                        out.push(Step::StepDown(i));
                    }
                }
                None => {
                    out.push(Step::Restart { node: i, file: true });
                    if s.lost_files < self.bounds.max_lost_files {
                        out.push(Step::Restart { node: i, file: false });
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &State, step: Step) -> Option<State> {
        let mut s = last.clone();
        match step {
            Step::Deliver(packet) => self.deliver(&mut s, &packet),
            Step::Timer(i, kind) => {
                s.nodes[i].timers[kind as usize] = None;
                self.proposer_event(&mut s, i, Event::Timer(kind));
            }
            Step::Wake(i) => {
                let local = self.local(&s, i);
                let m = s.nodes[i].up.as_mut()?;
                let effects = m.acceptor.tick(local);
                self.apply(&mut s, i, effects, None);
                self.proposer_event(&mut s, i, Event::Tick);
            }
            Step::Tick(keep) => {
                s.t += 1;
                s.net = keep;
            }
            Step::Crash(i) => {
                let node = &mut s.nodes[i];
                node.up = None;
                node.timers = [None; 4];
                node.held = None;
                s.crashes += 1;
            }
            Step::Restart { node: i, file } => {
                if !file {
                    s.nodes[i].disk = None;
                    s.lost_files += 1;
                }
                let local = self.local(&s, i);
                s.nodes[i].up = Some(self.machines(i, s.nodes[i].disk, local));
                s.restarted = true;
                self.boot(&mut s, i);
            }
            Step::StepDown(i) => {
                s.releases += 1;
                self.proposer_event(&mut s, i, Event::StepDown);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("G1 one holder", |m: &LeaseModel, s: &State| {
                m.holding_now(s) <= 1
            }),
            Property::always("G2 growing tokens", |_, s: &State| !s.g2_broken),
            Property::sometimes("a handover", |_, s: &State| s.holders.count_ones() >= 2),
            Property::sometimes("a holder after a restart", |_, s: &State| {
                s.held_after_restart
            }),
            Property::sometimes("a renewal", |_, s: &State| s.renewed),
        ]
    }
}

const G1: &str = "G1 one holder";
const G2: &str = "G2 growing tokens";
const SOMETIMES: [&str; 3] = ["a handover", "a holder after a restart", "a renewal"];

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks the correct protocol exhaustively within `bounds`: no
/// counterexample to G1 or G2, and every `sometimes` property reached.
fn check_correct(name: &str, bounds: Bounds) {
    let faults = Faults {
        ignore_open_filter: true,
        ..Faults::default()
    };
    println!("{name}: {bounds}");
    let started = Instant::now();
    let checker = LeaseModel::new(bounds, faults)
        .checker()
        .threads(threads())
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    println!(
        "{name}: {} states, {} unique, max depth {}, {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    for property in [G1, G2] {
        if let Some(path) = checker.discovery(property) {
            print_path(property, &path);
            panic!("{name}: counterexample to {property}");
        }
    }
    for property in SOMETIMES {
        let path = checker.discovery(property);
        assert!(path.is_some(), "{name}: never {property}");
        println!(
            "{name}: {property} after {} steps",
            path.unwrap().into_actions().len()
        );
    }
}

/// Checks a broken variant: it must give a counterexample to G1 or G2.
fn check_broken(name: &str, bounds: Bounds, faults: Faults) {
    println!("{name}: {bounds}; {faults:?}");
    let started = Instant::now();
    let checker = LeaseModel::new(bounds, faults)
        .checker()
        .threads(threads())
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    println!(
        "{name}: {} states, {} unique, max depth {}, {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    let found: Vec<_> = [G1, G2]
        .into_iter()
        .filter_map(|p| checker.discovery(p).map(|path| (p, path)))
        .collect();
    assert!(!found.is_empty(), "{name}: no counterexample");
    for (property, path) in found {
        print_path(property, &path);
    }
}

fn print_path(property: &str, path: &Path<State, Step>) {
    let steps = path.clone().into_vec();
    println!("  counterexample to {property}: {} steps", steps.len() - 1);
    let mut last_t = None;
    for (state, step) in steps {
        if last_t != Some(state.t) {
            let rates: Vec<Millis> = state.nodes.iter().map(|n| n.rate).collect();
            println!("    t = {} (rates {rates:?})", state.t);
            last_t = Some(state.t);
        }
        if let Some(step) = step {
            println!("      {step:?}");
        }
    }
}

#[test]
fn correct_protocol_is_safe_within_small_bounds() {
    let bounds = Bounds {
        horizon: 20,
        rates: vec![UNITS - 1, UNITS + 1],
        max_crashes: 1,
        max_lost_files: 1,
        max_releases: 1,
        max_rounds: 3,
        proposers: [true, true, false],
        renew_every: RENEW_EVERY,
        survivors: 1,
        learn: true,
    };
    check_correct("small", bounds);
}

#[test]
#[ignore = "minutes in release mode: cargo test --release --test model_check -- --ignored"]
fn correct_protocol_is_safe_within_the_full_bounds() {
    check_correct("full", Bounds::full());
}


#[test]
#[ignore]
fn experiment() {
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let rates = match env("RATES", 2) { 1 => vec![4], 2 => vec![4, 6], _ => ALL_RATES.to_vec() };
    let bounds = Bounds {
        horizon: env("H", 30) as u8,
        rates,
        max_crashes: env("CRASHES", 0) as u8,
        max_lost_files: env("LOST", 0) as u8,
        max_releases: env("RELEASES", 0) as u8,
        max_rounds: env("ROUNDS", 3) as u8,
        proposers: [true, true, env("P3", 0) == 1],
        renew_every: env("RENEW", RENEW_EVERY),
        survivors: env("SURV", 1) as usize,
        learn: env("LEARN", 1) == 1,
    };
    println!("{bounds}");
    let faults = Faults { ignore_open_filter: true, ..Faults::default() };
    let started = Instant::now();
    let b = LeaseModel::new(bounds, faults).checker().threads(2).finish_when(HasDiscoveries::AnyFailures);
    fn show(c: impl Checker<LeaseModel>, started: Instant) {
        println!("{} states, {} unique, max depth {}, {:.1?}", c.state_count(), c.unique_state_count(), c.max_depth(), started.elapsed());
        for p in [G1, G2].into_iter().chain(SOMETIMES) { println!("{p}: {:?}", c.discovery(p).map(|p| p.into_actions().len())); }
    }
    if env("DFS", 1) == 1 { show(b.spawn_dfs().join(), started) } else { show(b.spawn_bfs().join(), started) };
}
