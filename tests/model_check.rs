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
//!   ρ = 0.2, each allowed combination an initial state. (So `ttl` = 50
//!   units and `D = T·(1−ρ)/(1+ρ)` = 33 units, rounded down.)
//! - `Tick` advances real time by one and is refused while a timer (the
//!   proposer's, or the acceptor's `wake_at`) is overdue: each timer fires
//!   in the tick its local deadline is reached, in any order with the
//!   deliveries of that tick. Everything between two ticks happens at the
//!   same real instant, and a message may arrive in the tick it was sent.
//! - The network is a set of packets `(from, to, message)`, delivered one
//!   at a time in any order. A tick drops all that are still in flight
//!   (loss) but at most `survivors` of them, which arrive later (delay).
//!   A delivery may also keep its packet in flight (duplication). Delays
//!   and duplicates are budgets over the run, like crashes.
//! - A crash restarts the node at once, with its state file or without it
//!   (amnesiac, §3.6): memory, grants and timers are gone. (A node that
//!   stays down a while behaves like one restarted at the end of that
//!   while whose messages were all lost, so nothing is missed.) Crashes
//!   come at the end of an instant, step-downs of holders (release) at the
//!   start of one, within budgets.
//!
//! Properties: `always` G1 (at most one node holding, each judged by its
//! own clock, at the same real time) and G2 (a new tenure's token exceeds
//! every earlier one); `sometimes` a handover (two nodes have held) and a
//! holder whose tenure began after a restart.
//!
//! The proposer runs with [`Faults::ignore_open_filter`]: §3.7 says safety
//! does not rest on the open-Promise filter (§3.4.4), so the check does
//! without it. Every broken variant of §6b must then give a counterexample,
//! or its test fails: a checker that cannot fail proves nothing.
//!
//! `cargo test --test model_check -- --nocapture` prints the bounds, the
//! state counts and the counterexamples. The fuller bounds of §6b run with
//! `cargo test --release --test model_check -- --ignored --nocapture`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use breakwater::lease::peers::acceptor::{Acceptor, Durable, Effects};
use breakwater::lease::peers::ballot::Ballot;
use breakwater::lease::peers::faults::Faults;
use breakwater::lease::peers::members::Members;
use breakwater::lease::peers::messages::{Message, Urls};
use breakwater::lease::peers::proposer::{
    Action, Event, Now, Proposer, TimerKind, Timing, ViewChange,
};
use breakwater::lease::peers::Millis;
use stateright::{Checker, CheckerBuilder, HasDiscoveries, Model, Path, Property};

const IDS: [&str; 3] = ["a", "b", "c"];
/// Local units per real tick at the nominal rate.
const UNITS: Millis = 5;
/// `T`: 10 ticks.
const TTL: Millis = 10 * UNITS;
/// `D = T·(1−ρ)/(1+ρ)` with ρ = 1/5, rounded down (33.3 → 33).
const USABLE: Millis = TTL * (UNITS - 1) / (UNITS + 1);
/// Below `D/2`, as the configuration requires.
const RENEW_EVERY: Millis = 16;
/// The slowest and the fastest clock, local units per tick: `1 ∓ ρ`.
const SLOW: Millis = UNITS - 1;
const FAST: Millis = UNITS + 1;
/// The quarantine of the `short_quarantine` fault: below the tight bound
/// `D·(1+ρ)/(1−ρ)` = 49.5 units (a restarted fast acceptor is silent for
/// 40/6 ≈ 6.7 ticks while a slow holder may stamp for 33/4 = 8.25).
const SHORT_QUARANTINE: Millis = 40;
/// The kinds of message, as [`Slot::kind`] numbers them.
const PREPARE: u8 = 0;
const PROMISE: u8 = 1;
const PROPOSE: u8 = 2;
const ACCEPTED: u8 = 3;
const NACK: u8 = 4;
const RELEASE: u8 = 5;
const LEARN: u8 = 6;
const SYNC: u8 = 7;
const SYNC_REPLY: u8 = 8;
const ANY_KIND: &[u8] = &[
    PREPARE, PROMISE, PROPOSE, ACCEPTED, NACK, RELEASE, LEARN, SYNC, SYNC_REPLY,
];

/// How far the checker looks.
#[derive(Clone, Debug)]
struct Bounds {
    /// Real time ends here (ticks).
    horizon: u8,
    /// The clock rates each node may have (all combinations are checked).
    rates: [&'static [Millis]; 3],
    max_crashes: u8,
    max_lost_files: u8,
    max_releases: u8,
    /// Rounds (Prepares) started by all proposers together; the one past
    /// it ends the run.
    max_rounds: u8,
    /// From which tick on each node's app is healthy (`require_healthy`):
    /// only then does it acquire. A late start spares the checker the
    /// contention of the first instant where a run does not need it.
    proposers: [Option<u8>; 3],
    /// Packets that may stay in flight across a tick (0, 1 or 2); all
    /// others are lost when real time moves on.
    survivors: usize,
    /// Packets delayed past a tick over the whole run (one carried over
    /// several ticks counts once).
    max_delayed: u8,
    /// Deliveries that keep the packet in flight, so that it may arrive
    /// again (duplication), over the whole run.
    max_duplicates: u8,
    /// The kinds of message that may be delayed or duplicated
    /// ([`ANY_KIND`], or the one a variant's counterexample needs, to keep
    /// its search small).
    faulty_kinds: &'static [u8],
    /// Whether `Learn`s travel. Without them the network loses every one,
    /// as it may anyway; they are advisory (they hold acquisitions back and
    /// raise ballots), so the small bounds leave them out.
    learn: bool,
}

impl Bounds {
    /// The base of the variants' bounds: the dangerous clocks only (a slow
    /// holder `a` against fast acceptors), two proposers, nothing else.
    fn tight(horizon: u8) -> Bounds {
        Bounds {
            horizon,
            rates: [&[SLOW], &[FAST], &[FAST]],
            max_crashes: 0,
            max_lost_files: 0,
            max_releases: 0,
            max_rounds: 3,
            proposers: [Some(0), Some(0), None],
            survivors: 0,
            max_delayed: 0,
            max_duplicates: 0,
            faulty_kinds: ANY_KIND,
            learn: false,
        }
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proposers: Vec<String> = (0..3)
            .filter_map(|i| Some(format!("{} from {}", IDS[i], self.proposers[i]?)))
            .collect();
        write!(
            f,
            "H = {} ticks (T = 10), rates {:?}/{UNITS} per tick, ttl = {TTL}, D = {USABLE}, \
             renew every {RENEW_EVERY}, ≤ {} crashes, ≤ {} lost files, ≤ {} releases, \
             ≤ {} rounds, proposers {proposers:?}, ≤ {} packets across a tick, \
             ≤ {} delayed, ≤ {} duplicated (kinds {:?}), learn {}",
            self.horizon,
            self.rates,
            self.max_crashes,
            self.max_lost_files,
            self.max_releases,
            self.max_rounds,
            self.survivors,
            self.max_delayed,
            self.max_duplicates,
            self.faulty_kinds,
            self.learn,
        )
    }
}

/// Where a message in flight goes, and which one it is. At most one
/// message per slot is in flight: an answer sent again for the same ballot
/// while the first is still on its way merges with it (the proposer counts
/// one answer per node and ballot anyway, and the one in flight may be
/// delivered any number of times).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Slot {
    from: u8,
    to: u8,
    kind: u8,
    /// The ballot, or the token of a `Release` or `Learn`.
    number: u64,
}

impl Slot {
    fn new(from: usize, to: usize, message: &Message) -> Slot {
        let (kind, number) = match message {
            Message::Prepare { ballot, .. } => (PREPARE, ballot.as_u64()),
            Message::Promise { ballot, .. } => (PROMISE, ballot.as_u64()),
            Message::Propose { ballot, .. } => (PROPOSE, ballot.as_u64()),
            Message::Accepted { ballot } => (ACCEPTED, ballot.as_u64()),
            Message::Nack { ballot, .. } => (NACK, ballot.as_u64()),
            Message::Release { token, .. } => (RELEASE, *token),
            Message::Learn { token, .. } => (LEARN, *token),
            Message::Sync => (SYNC, 0),
            Message::SyncReply { .. } => (SYNC_REPLY, 0),
        };
        Slot {
            from: from as u8,
            to: to as u8,
            kind,
            number,
        }
    }

    fn from(&self) -> usize {
        usize::from(self.from)
    }

    fn to(&self) -> usize {
        usize::from(self.to)
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = [
            "Prepare",
            "Promise",
            "Propose",
            "Accepted",
            "Nack",
            "Release",
            "Learn",
            "Sync",
            "SyncReply",
        ][usize::from(self.kind)];
        let (from, to) = (IDS[self.from()], IDS[self.to()]);
        write!(f, "{from}→{to} {kind} {}", number(self.number))
    }
}

/// A token or ballot number as `counter.ordinal`.
fn number(n: u64) -> String {
    Ballot::from_u64(n).map_or(n.to_string(), |b| b.to_string())
}

/// A message in a few words, ballots as `counter.ordinal`.
fn short(message: &Message) -> String {
    match message {
        Message::Prepare { ballot, .. } => format!("Prepare {ballot}"),
        Message::Promise { ballot, grant } => match grant {
            Some(g) => format!("Promise {ballot} (holds {} {})", g.owner, number(g.token)),
            None => format!("Promise {ballot}"),
        },
        Message::Propose {
            ballot,
            owner,
            token,
            ..
        } => format!("Propose {ballot} {owner} {}", number(*token)),
        Message::Accepted { ballot } => format!("Accepted {ballot}"),
        Message::Nack { ballot, held, .. } => match held {
            Some(h) => format!("Nack {ballot} (holds {} {})", h.owner, number(h.token)),
            None => format!("Nack {ballot}"),
        },
        Message::Release { owner, token } => format!("Release {owner} {}", number(*token)),
        Message::Learn { owner, token, .. } => format!("Learn {owner} {}", number(*token)),
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
    m: Machines,
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
    /// Shared with the states before until changed: cloning a state is
    /// most of what the checker does.
    nodes: [Arc<Node>; 3],
    net: BTreeMap<Slot, Message>,
    /// The packets carried past the last tick.
    carried: BTreeSet<Slot>,
    /// How many packets were ever carried past a tick.
    delayed: u8,
    duplicates: u8,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    Deliver(Slot),
    /// Deliver, and keep the packet in flight: it may arrive again.
    Duplicate(Slot),
    Timer(usize, TimerKind),
    /// The acceptor's own timer (`wake_at`, while amnesiac).
    Wake(usize),
    /// Real time moves on; `keep` stays in flight. At the end of the
    /// instant (after its deliveries, so right after what the node last
    /// accepted), `crash` crashes a node and restarts it with its state
    /// file (`true`) or without it. At the start of the next (before its
    /// deliveries, so that a takeover may follow at once), `step_down`
    /// steps a holder down (§3.5). Tying them to ticks spares the checker
    /// every other place between two deliveries, which only shifts them
    /// by part of an instant.
    Tick {
        keep: BTreeSet<Slot>,
        crash: Option<(usize, bool)>,
        step_down: Option<usize>,
    },
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

impl LeaseModel {
    fn new(bounds: Bounds, faults: Faults) -> LeaseModel {
        LeaseModel {
            timing: Timing {
                ttl_ms: TTL,
                usable_ms: USABLE,
                renew_every_ms: RENEW_EVERY,
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

    /// A node (re)started at tick `t` (local `now`) from `file`, faults
    /// applied.
    fn machines(&self, i: usize, file: Option<Durable>, t: u8, now: Millis) -> Machines {
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
            // (At the start, `now = 0`, the quarantine is over anyway.)
            true => now.saturating_sub(quarantine - SHORT_QUARANTINE),
            false => now,
        };
        let mut acceptor = Acceptor::new(members(i), file, now, TTL);
        acceptor.set_faults(self.faults);
        let healthy = self.bounds.proposers[i].is_some_and(|from| from <= t);
        let seed = i as u64 + 1;
        let mut proposer = Proposer::new(members(i), self.timing, Urls::default(), healthy, seed);
        proposer.set_faults(self.faults);
        Machines { acceptor, proposer }
    }

    /// What a (re)started driver does first: tick the acceptor (an
    /// amnesiac one sends `Sync`) and let the proposer plan.
    fn boot(&self, s: &mut State, i: usize) {
        let local = self.local(s, i);
        let effects = Arc::make_mut(&mut s.nodes[i]).m.acceptor.tick(local);
        self.apply(s, i, effects, None);
        self.proposer_event(s, i, Event::Tick);
    }

    fn send(&self, s: &mut State, from: usize, to: usize, message: Message) {
        if !self.bounds.learn && matches!(message, Message::Learn { .. }) {
            return;
        }
        s.net
            .entry(Slot::new(from, to, &message))
            .or_insert(message);
    }

    fn broadcast(&self, s: &mut State, from: usize, message: &Message) {
        for to in (0..3).filter(|&to| to != from) {
            self.send(s, from, to, message.clone());
        }
    }

    /// The driver's part for acceptor effects: persist, then send.
    fn apply(&self, s: &mut State, i: usize, effects: Effects, reply_to: Option<usize>) {
        if let Some(state) = effects.persist {
            Arc::make_mut(&mut s.nodes[i]).disk = Some(state);
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
            wall_floor: 0,
        };
        let m = &mut Arc::make_mut(&mut s.nodes[i]).m;
        let actions = m.proposer.on_event(now, &mut m.acceptor, event);
        for action in actions {
            match action {
                Action::Persist(state) => Arc::make_mut(&mut s.nodes[i]).disk = Some(state),
                Action::Broadcast(message) => {
                    if matches!(message, Message::Prepare { .. }) {
                        s.rounds += 1;
                    }
                    self.broadcast(s, i, &message);
                }
                Action::SetTimer { kind, at } => {
                    Arc::make_mut(&mut s.nodes[i]).timers[kind as usize] = at
                }
                Action::Publish(view) => self.published(s, i, &view),
            }
        }
    }

    /// Keeps the tenure history: G2, handovers, holders after restarts.
    fn published(&self, s: &mut State, i: usize, view: &ViewChange) {
        let ViewChange::Holding { token, valid_until } = *view else {
            return;
        };
        if s.nodes[i].held.map_or(true, |(held, _)| held != token) {
            if s.max_token != 0 && token <= s.max_token {
                s.g2_broken = true;
            }
            s.max_token = s.max_token.max(token);
            s.holders |= 1 << i;
            s.held_after_restart |= s.restarted;
        }
        Arc::make_mut(&mut s.nodes[i]).held = Some((token, valid_until));
    }

    fn deliver(&self, s: &mut State, slot: Slot, message: Message) {
        let (from, to) = (slot.from(), slot.to());
        let local = self.local(s, to);
        let effects = Arc::make_mut(&mut s.nodes[to])
            .m
            .acceptor
            .handle(local, IDS[from], &message);
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
                matches!(s.nodes[i].m.proposer.view(), ViewChange::Holding { valid_until, .. }
                    if self.local(s, i) < *valid_until)
            })
            .count()
    }

    /// Timers (proposer and acceptor) whose local deadline has come.
    fn overdue(&self, s: &State, out: &mut Vec<Step>) {
        for (i, node) in s.nodes.iter().enumerate() {
            let local = self.local(s, i);
            for kind in TimerKind::ALL {
                if node.timers[kind as usize].is_some_and(|at| at <= local) {
                    out.push(Step::Timer(i, kind));
                }
            }
            if node.m.acceptor.wake_at().is_some_and(|at| at <= local) {
                out.push(Step::Wake(i));
            }
        }
    }

    /// Node `i` crashes and restarts at once (see the module docs).
    fn crash(&self, s: &mut State, i: usize, file: bool) {
        s.crashes += 1;
        if !file {
            Arc::make_mut(&mut s.nodes[i]).disk = None;
            s.lost_files += 1;
        }
        let local = self.local(s, i);
        let node = Arc::make_mut(&mut s.nodes[i]);
        node.m = self.machines(i, node.disk, s.t, local);
        node.timers = [None; 4];
        node.held = None;
        s.restarted = true;
        self.boot(s, i);
    }

    /// The sets of packets that may stay in flight across the next tick.
    fn ticks(&self, s: &State, out: &mut Vec<Step>) {
        let packets: Vec<Slot> = s
            .net
            .keys()
            .filter(|p| self.bounds.faulty_kinds.contains(&p.kind))
            .copied()
            .collect();
        let mut keeps = vec![BTreeSet::new()];
        for (i, p) in packets.iter().enumerate() {
            if self.bounds.survivors >= 1 {
                keeps.push(BTreeSet::from([*p]));
            }
            if self.bounds.survivors >= 2 {
                for q in &packets[i + 1..] {
                    keeps.push(BTreeSet::from([*p, *q]));
                }
            }
        }
        let mut crashes = vec![None];
        if s.crashes < self.bounds.max_crashes {
            for node in 0..3 {
                crashes.push(Some((node, true)));
                if s.lost_files < self.bounds.max_lost_files {
                    crashes.push(Some((node, false)));
                }
            }
        }
        let mut step_downs = vec![None];
        if s.releases < self.bounds.max_releases {
            let holders = (0..3).filter(|&i| s.nodes[i].m.proposer.tenure().is_some());
            step_downs.extend(holders.map(Some));
        }
        for keep in keeps {
            let fresh = keep.difference(&s.carried).count();
            if usize::from(s.delayed) + fresh > usize::from(self.bounds.max_delayed) {
                continue;
            }
            for &crash in &crashes {
                for &step_down in &step_downs {
                    let keep = keep.clone();
                    out.push(Step::Tick {
                        keep,
                        crash,
                        step_down,
                    });
                }
            }
        }
    }
}

impl Model for LeaseModel {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let [r0, r1, r2] = self.bounds.rates;
        let mut states = Vec::new();
        for &a in r0 {
            for &b in r1 {
                for &c in r2 {
                    states.push(self.init_state([a, b, c]));
                }
            }
        }
        states
    }

    fn actions(&self, s: &State, out: &mut Vec<Step>) {
        if s.rounds > self.bounds.max_rounds {
            return;
        }
        for slot in s.net.keys() {
            out.push(Step::Deliver(*slot));
            if s.duplicates < self.bounds.max_duplicates
                && self.bounds.faulty_kinds.contains(&slot.kind)
            {
                out.push(Step::Duplicate(*slot));
            }
        }
        let before = out.len();
        self.overdue(s, out);
        if out.len() == before && s.t < self.bounds.horizon {
            self.ticks(s, out);
        }
    }

    fn next_state(&self, last: &State, step: Step) -> Option<State> {
        let mut s = last.clone();
        match step {
            Step::Deliver(slot) => {
                let message = s.net.remove(&slot)?;
                self.deliver(&mut s, slot, message);
            }
            Step::Duplicate(slot) => {
                s.duplicates += 1;
                let message = s.net.get(&slot)?.clone();
                self.deliver(&mut s, slot, message);
            }
            Step::Timer(i, kind) => {
                Arc::make_mut(&mut s.nodes[i]).timers[kind as usize] = None;
                self.proposer_event(&mut s, i, Event::Timer(kind));
            }
            Step::Wake(i) => {
                let local = self.local(&s, i);
                let effects = Arc::make_mut(&mut s.nodes[i]).m.acceptor.tick(local);
                self.apply(&mut s, i, effects, None);
                self.proposer_event(&mut s, i, Event::Tick);
            }
            Step::Tick {
                keep,
                crash,
                step_down,
            } => {
                s.delayed += keep.difference(&s.carried).count() as u8;
                s.net.retain(|slot, _| keep.contains(slot));
                s.carried = keep;
                // What the restarted node sends (an amnesiac's `Sync`)
                // arrives in the next tick, or is lost then.
                if let Some((i, file)) = crash {
                    self.crash(&mut s, i, file);
                }
                s.t += 1;
                for i in 0..3 {
                    if self.bounds.proposers[i] == Some(s.t) {
                        self.proposer_event(&mut s, i, Event::HealthChanged(true));
                    }
                }
                if let Some(i) = step_down {
                    s.releases += 1;
                    self.proposer_event(&mut s, i, Event::StepDown);
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(G1, |m: &LeaseModel, s: &State| m.holding_now(s) <= 1),
            Property::always(G2, |_, s: &State| !s.g2_broken),
            Property::sometimes(HANDOVER, |_, s: &State| s.holders.count_ones() >= 2),
            Property::sometimes(HELD_AFTER_RESTART, |_, s: &State| s.held_after_restart),
        ]
    }
}

impl LeaseModel {
    /// Up for a while with the given clock rates, nothing granted, files
    /// in place.
    fn init_state(&self, rates: [Millis; 3]) -> State {
        let node = |i: usize| Node {
            rate: rates[i],
            m: self.machines(i, Some(Durable::default()), 0, 0),
            disk: Some(Durable::default()),
            timers: [None; 4],
            held: None,
        };
        let mut s = State {
            t: 0,
            nodes: [Arc::new(node(0)), Arc::new(node(1)), Arc::new(node(2))],
            net: BTreeMap::new(),
            carried: BTreeSet::new(),
            delayed: 0,
            duplicates: 0,
            crashes: 0,
            lost_files: 0,
            releases: 0,
            rounds: 0,
            max_token: 0,
            g2_broken: false,
            holders: 0,
            restarted: false,
            held_after_restart: false,
        };
        for i in 0..3 {
            self.boot(&mut s, i);
        }
        s
    }
}

const G1: &str = "G1 one holder";
const G2: &str = "G2 growing tokens";
const HANDOVER: &str = "a handover";
const HELD_AFTER_RESTART: &str = "a holder after a restart";

/// Where a search that cannot be exhaustive stops.
#[derive(Clone, Copy)]
struct Limit {
    /// Generated states, revisits included.
    states: usize,
    time: Duration,
}

/// What one exploration found.
struct Outcome {
    /// States generated, revisits included.
    states: usize,
    unique: usize,
    max_depth: usize,
    /// Whether the limit stopped the exploration before it was
    /// exhaustive.
    capped: bool,
    g1: Option<Path<State, Step>>,
    g2: Option<Path<State, Step>>,
    handover: Option<Path<State, Step>>,
    held_after_restart: Option<Path<State, Step>>,
}

impl Outcome {
    fn of(checker: impl Checker<LeaseModel>, limit: Option<Limit>, started: Instant) -> Outcome {
        let states = checker.state_count();
        let capped = limit.is_some_and(|l| states >= l.states || started.elapsed() >= l.time);
        Outcome {
            states,
            unique: checker.unique_state_count(),
            max_depth: checker.max_depth(),
            capped,
            g1: checker.discovery(G1),
            g2: checker.discovery(G2),
            handover: checker.discovery(HANDOVER),
            held_after_restart: checker.discovery(HELD_AFTER_RESTART),
        }
    }
}

/// Explores the model until a counterexample to G1 or G2, or the end:
/// breadth first on one thread, for the shortest counterexample, or depth
/// first on every core, whose memory is little more than one fingerprint
/// per state; within `limit` if given.
fn explore(name: &str, bounds: Bounds, faults: Faults, bfs: bool, limit: Option<Limit>) -> Outcome {
    println!("{name}: {bounds}");
    let started = Instant::now();
    let threads = match bfs {
        true => 1,
        false => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut builder: CheckerBuilder<LeaseModel> = LeaseModel::new(bounds, faults)
        .checker()
        .threads(threads)
        .finish_when(HasDiscoveries::AnyFailures);
    if let Some(limit) = limit {
        builder = builder.target_state_count(limit.states).timeout(limit.time);
    }
    let outcome = match bfs {
        true => Outcome::of(builder.spawn_bfs().join(), limit, started),
        false => Outcome::of(builder.spawn_dfs().join(), limit, started),
    };
    println!(
        "{name}: {} unique states ({} generated{}), max depth {}, {:.1?}",
        outcome.unique,
        outcome.states,
        match outcome.capped {
            true => ", stopped by the limit: not exhaustive",
            false => "",
        },
        outcome.max_depth,
        started.elapsed(),
    );
    outcome
}

/// Checks the correct protocol within `bounds`: no counterexample to G1
/// or G2 (exhaustive unless `limit` stopped it, which it reports), and
/// each property of `sometimes` reached (if exhaustive).
fn check_correct(name: &str, bounds: Bounds, limit: Option<Limit>, sometimes: &[&str]) {
    let faults = Faults {
        ignore_open_filter: true,
        ..Faults::default()
    };
    let outcome = explore(name, bounds, faults, false, limit);
    for (property, path) in [(G1, &outcome.g1), (G2, &outcome.g2)] {
        if let Some(path) = path {
            print_path(property, path);
            panic!("{name}: counterexample to {property}");
        }
    }
    for (property, path) in [
        (HANDOVER, &outcome.handover),
        (HELD_AFTER_RESTART, &outcome.held_after_restart),
    ] {
        match path {
            Some(path) => println!(
                "{name}: {property} after {} steps",
                path.clone().into_actions().len()
            ),
            None if outcome.capped => println!("{name}: {property} not reached"),
            None => assert!(!sometimes.contains(&property), "{name}: never {property}"),
        }
    }
}

/// Checks a broken variant: breadth first, it must give a counterexample
/// to G1 or G2, which is printed (the shortest there is).
fn check_broken(name: &str, bounds: Bounds, faults: Faults) {
    let faults = Faults {
        ignore_open_filter: true,
        ..faults
    };
    let outcome = explore(name, bounds, faults, true, None);
    let found = [(G1, &outcome.g1), (G2, &outcome.g2)];
    let mut caught = false;
    for (property, path) in found {
        if let Some(path) = path {
            print_path(property, path);
            caught = true;
        }
    }
    assert!(caught, "{name}: no counterexample to G1 or G2");
}

/// Who holds which tenure until when (local units), for a trace.
fn holders(s: &State) -> String {
    let held: Vec<String> = (0..3)
        .filter_map(|i| match s.nodes[i].m.proposer.view() {
            ViewChange::Holding { token, valid_until } => Some(format!(
                "{} {} until {valid_until} (now {})",
                IDS[i],
                number(*token),
                TTL + s.nodes[i].rate * Millis::from(s.t),
            )),
            _ => None,
        })
        .collect();
    held.join(", ")
}

/// A path, one line per step, grouped by real time.
fn print_path(property: &str, path: &Path<State, Step>) {
    let steps = path.clone().into_vec();
    println!("  counterexample to {property}: {} steps", steps.len() - 1);
    let mut last_t = None;
    let mut last_holders = String::new();
    for (state, step) in steps {
        if last_t != Some(state.t) {
            let rates: Vec<Millis> = state.nodes.iter().map(|n| n.rate).collect();
            println!("    t = {} (rates {rates:?})", state.t);
            last_t = Some(state.t);
        }
        let holders = holders(&state);
        if holders != last_holders {
            println!("        holding: {holders}");
            last_holders = holders;
        }
        match step {
            Some(Step::Deliver(slot) | Step::Duplicate(slot)) => {
                let how = match step {
                    Some(Step::Duplicate(_)) => "deliver a copy of",
                    _ => "deliver",
                };
                match state.net.get(&slot) {
                    Some(message) => println!("      {how} {slot:?}: {}", short(message)),
                    None => println!("      {how} {slot:?}"),
                }
            }
            Some(step) => println!("      {step:?}"),
            None => {}
        }
    }
}

/// The correct protocol in the suite, in three checks that each stay
/// within seconds: every combination of the clock extremes, restarts, and
/// a delayed packet. Two proposers (`b` may start later), three rounds:
/// the rounds bound the search more than the horizon does.
fn suite(horizon: u8) -> Bounds {
    Bounds {
        horizon,
        rates: [&[SLOW], &[FAST], &[FAST]],
        max_crashes: 0,
        max_lost_files: 0,
        max_releases: 0,
        max_rounds: 3,
        proposers: [Some(0), Some(0), None],
        survivors: 0,
        max_delayed: 0,
        max_duplicates: 0,
        faulty_kinds: ANY_KIND,
        learn: false,
    }
}

#[test]
fn correct_protocol_is_safe_whatever_the_clock_rates() {
    let bounds = Bounds {
        // `c` only accepts: a slow clock there only keeps grants longer.
        rates: [&[SLOW, FAST], &[SLOW, FAST], &[FAST]],
        max_releases: 1,
        ..suite(12)
    };
    check_correct("correct, clocks", bounds, None, &[HANDOVER]);
}

#[test]
fn correct_protocol_is_safe_across_a_restart_with_or_without_its_file() {
    let bounds = Bounds {
        max_crashes: 1,
        max_lost_files: 1,
        ..suite(10)
    };
    let sometimes = [HANDOVER, HELD_AFTER_RESTART];
    check_correct("correct, restarts", bounds, None, &sometimes);
}

#[test]
fn correct_protocol_is_safe_with_a_delayed_packet() {
    let bounds = Bounds {
        proposers: [Some(0), Some(2), None],
        survivors: 1,
        max_delayed: 1,
        ..suite(10)
    };
    check_correct("correct, delays", bounds, None, &[]);
}

/// In release mode, two depth-first runs that report how far they got.
/// First the suite's three checks at once (both clock extremes
/// everywhere, a crash with or without the file, a release, a delayed and
/// a duplicated packet of any kind), then LEASES.md §6b. Neither is
/// exhaustive within its limit (2026-11-25, 2 shared cores: 164 million
/// unique states, depth 49, in 15 minutes; 27.7 million, depth 72, at the
/// state limit in under 5; 2.5 GB peak); no counterexample.
#[test]
#[ignore = "long: cargo test --release --all-features --test model_check -- --ignored --nocapture"]
fn correct_protocol_is_safe_within_the_fuller_bounds() {
    let sometimes = [HANDOVER, HELD_AFTER_RESTART];
    let combined = Bounds {
        rates: [&[SLOW, FAST], &[SLOW, FAST], &[SLOW, FAST]],
        max_crashes: 1,
        max_lost_files: 1,
        max_releases: 1,
        survivors: 1,
        max_delayed: 1,
        max_duplicates: 1,
        ..suite(12)
    };
    check_correct("combined", combined, Some(COMBINED_LIMIT), &sometimes);
    let bounds = Bounds {
        horizon: 30,
        rates: [
            &[SLOW, UNITS, FAST],
            &[SLOW, UNITS, FAST],
            &[SLOW, UNITS, FAST],
        ],
        max_crashes: 2,
        max_lost_files: 1,
        max_releases: 1,
        max_rounds: 6,
        proposers: [Some(0), Some(0), Some(0)],
        survivors: 1,
        max_delayed: 2,
        max_duplicates: 2,
        faulty_kinds: ANY_KIND,
        learn: true,
    };
    check_correct("fuller", bounds, Some(FULLER_LIMIT), &sometimes);
}

/// About 2.5 GB of fingerprints at the end.
const COMBINED_LIMIT: Limit = Limit {
    states: 600_000_000,
    time: Duration::from_secs(15 * 60),
};

/// Fingerprints take about 12 bytes per unique state (27.7 million in
/// 0.32 GB at this limit).
const FULLER_LIMIT: Limit = Limit {
    states: 150_000_000,
    time: Duration::from_secs(10 * 60),
};

// Each broken variant of §6b, at the smallest horizon that gives a
// counterexample (found by search: one tick less gives none; nor does the
// per-message counting without its duplicate, nor the deadline from the
// quorum without its delayed `Accepted`). The base is `Bounds::tight`.

#[test]
fn overwriting_a_live_grant_breaks_g1() {
    let faults = Faults {
        overwrite_live_grant: true,
        ..Faults::default()
    };
    check_broken("overwrite", Bounds::tight(0), faults);
}

#[test]
fn counting_messages_not_nodes_breaks_g1() {
    let faults = Faults {
        count_messages_not_nodes: true,
        ..Faults::default()
    };
    let bounds = Bounds {
        max_duplicates: 1,
        faulty_kinds: &[ACCEPTED],
        ..Bounds::tight(0)
    };
    check_broken("per-message counting", bounds, faults);
}

#[test]
fn d_equal_to_t_breaks_g1() {
    let faults = Faults {
        d_equals_t: true,
        ..Faults::default()
    };
    let bounds = Bounds {
        proposers: [Some(0), Some(8), None],
        ..Bounds::tight(9)
    };
    check_broken("D = T", bounds, faults);
}

#[test]
fn a_deadline_from_the_accepted_quorum_breaks_g1() {
    let faults = Faults {
        deadline_from_accept_quorum: true,
        ..Faults::default()
    };
    let bounds = Bounds {
        proposers: [Some(0), Some(9), None],
        survivors: 1,
        max_delayed: 1,
        faulty_kinds: &[ACCEPTED],
        ..Bounds::tight(9)
    };
    check_broken("deadline from the Accepted quorum", bounds, faults);
}

#[test]
fn an_owner_only_release_breaks_g1() {
    let faults = Faults {
        owner_only_release: true,
        ..Faults::default()
    };
    // A fast holder: its step-down keeps it from acquiring for `T`, the
    // shortest on a fast clock.
    let bounds = Bounds {
        rates: [&[FAST], &[FAST], &[FAST]],
        max_releases: 1,
        proposers: [Some(0), Some(10), None],
        survivors: 1,
        max_delayed: 1,
        faulty_kinds: &[RELEASE],
        ..Bounds::tight(10)
    };
    check_broken("owner-only release", bounds, faults);
}

#[test]
fn forgetting_the_promise_on_restart_breaks_g2() {
    let faults = Faults {
        forget_promise_on_restart: true,
        ..Faults::default()
    };
    let bounds = Bounds {
        max_crashes: 1,
        proposers: [Some(0), Some(1), None],
        ..Bounds::tight(1)
    };
    check_broken("restart forgetting promised", bounds, faults);
}

#[test]
fn a_short_quarantine_breaks_g1() {
    let faults = Faults {
        short_quarantine: true,
        ..Faults::default()
    };
    let bounds = Bounds {
        max_crashes: 1,
        proposers: [Some(0), Some(7), None],
        ..Bounds::tight(7)
    };
    check_broken("short quarantine", bounds, faults);
}
