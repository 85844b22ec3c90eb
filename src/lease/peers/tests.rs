//! A small in-memory cluster: three acceptors and three proposers wired the
//! way the driver will wire them, a network the test loop delivers with
//! latency, loss, duplication and reordering, per-node clocks with offsets
//! and rates within `max_drift`, and time advanced by hand. After every
//! step it checks G1 (at most one node may stamp, each by its own clock)
//! and G2 (every new tenure's token exceeds all earlier ones).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;

use super::acceptor::{Acceptor, Durable, Effects};
use super::members::Members;
use super::messages::{Message, Urls};
use super::proposer::{Action, Event, Now, Proposer, TimerKind, Timing, ViewChange};
use super::Millis;

const IDS: [&str; 3] = ["n0", "n1", "n2"];
const TTL: Millis = 10_000;
const UNIX0: u64 = 1_700_000_000;
const OFFSETS: [Millis; 3] = [0, 123_456, 7_000_000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    /// SIGSTOP until this real time: nothing runs, messages wait.
    Paused(Millis),
    Down,
}

struct Node {
    acceptor: Acceptor,
    proposer: Proposer,
    /// Armed timers, by local deadline.
    timers: BTreeMap<TimerKind, Millis>,
    /// The state file.
    disk: Option<Durable>,
    state: State,
    inbox: Vec<(usize, Message)>,
    /// The tenure this node last published as holding.
    holding: Option<(u64, Millis)>,
    view: ViewChange,
    incarnation: u64,
}

struct Tenure {
    node: usize,
    token: u64,
    since: Millis,
}

struct Cluster {
    now: Millis,
    timing: Timing,
    nodes: Vec<Node>,
    /// (delivery time, sequence) → (from, to, message).
    net: BTreeMap<(Millis, u64), (usize, usize, Message)>,
    seq: u64,
    rng: u64,
    loss_percent: u64,
    dup_percent: u64,
    max_latency: Millis,
    /// 1 in this many messages is delayed by up to two ttls.
    late_one_in: u64,
    tenures: Vec<Tenure>,
    renewals: usize,
    /// Clock rates in thousandths of real time, within `1 ± ρ`.
    rates: [u64; 3],
    /// The wall clock, frozen: G2 must come from persisted promises, not
    /// from the wall-clock floor of ballots.
    wall_floor: u64,
}

fn members(i: usize) -> Members {
    let peers: Vec<&str> = IDS.iter().copied().filter(|id| *id != IDS[i]).collect();
    Members::new(IDS[i], peers).unwrap()
}

impl Cluster {
    /// Three nodes started at real time 0, with empty state files (`files`)
    /// or none at all.
    fn new(seed: u64, files: bool) -> Cluster {
        Cluster::with_drift(seed, files, 1)
    }

    /// As [`Cluster::new`], with clocks `rho_percent` fast and slow and the
    /// lease configured for that drift.
    fn with_drift(seed: u64, files: bool, rho_percent: u64) -> Cluster {
        let timing = Timing::new(
            std::time::Duration::from_millis(TTL),
            std::time::Duration::from_millis(TTL * 3 / 10),
            rho_percent as f64,
        );
        let mut cluster = Cluster {
            now: 0,
            timing,
            nodes: Vec::new(),
            net: BTreeMap::new(),
            seq: 0,
            rng: seed | 1,
            loss_percent: 0,
            dup_percent: 0,
            max_latency: 20,
            late_one_in: 0,
            tenures: Vec::new(),
            renewals: 0,
            rates: [1_000 + 10 * rho_percent, 1_000 - 10 * rho_percent, 1_000],
            wall_floor: UNIX0,
        };
        for i in 0..IDS.len() {
            let disk = files.then(Durable::default);
            let node = cluster.fresh_node(i, disk, 0);
            cluster.nodes.push(node);
        }
        for i in 0..IDS.len() {
            cluster.boot(i);
        }
        cluster
    }

    fn fresh_node(&mut self, i: usize, disk: Option<Durable>, incarnation: u64) -> Node {
        let local = self.local(i);
        let urls = Urls {
            forward: Some(format!("http://{}:8000", IDS[i])),
            public: None,
        };
        let seed = self.random(u64::MAX);
        Node {
            acceptor: Acceptor::new(members(i), disk, local, TTL),
            proposer: Proposer::new(members(i), self.timing, urls, true, seed),
            timers: BTreeMap::new(),
            disk,
            state: State::Up,
            inbox: Vec::new(),
            holding: None,
            view: ViewChange::NotHolding,
            incarnation,
        }
    }

    fn random(&mut self, bound: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % bound.max(1)
    }

    /// Node `i`'s lease clock at the current real time.
    fn local(&self, i: usize) -> Millis {
        OFFSETS[i] + self.now * self.rates[i] / 1_000
    }

    /// The first real time at which node `i`'s clock reads `local`.
    fn real(&self, i: usize, local: Millis) -> Millis {
        let since = local.saturating_sub(OFFSETS[i]);
        (since * 1_000).div_ceil(self.rates[i])
    }

    fn now_for(&self, i: usize) -> Now {
        Now {
            at: self.local(i),
            wall_floor: self.wall_floor,
        }
    }

    fn boot(&mut self, i: usize) {
        let local = self.local(i);
        let effects = self.nodes[i].acceptor.tick(local);
        self.apply(i, effects, None);
        self.proposer_event(i, Event::Tick);
    }

    fn send(&mut self, from: usize, to: usize, message: Message) {
        if self.random(100) < self.loss_percent {
            return;
        }
        let copies = if self.random(100) < self.dup_percent {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let late = self.late_one_in > 0 && self.random(self.late_one_in) == 0;
            let latency = if late { 2 * TTL } else { self.max_latency };
            let at = self.now + 1 + self.random(latency);
            self.seq += 1;
            self.net.insert((at, self.seq), (from, to, message.clone()));
        }
    }

    fn broadcast(&mut self, from: usize, message: &Message) {
        for to in 0..IDS.len() {
            if to != from {
                self.send(from, to, message.clone());
            }
        }
    }

    /// The driver's part for acceptor effects.
    fn apply(&mut self, i: usize, effects: Effects, reply_to: Option<usize>) {
        if let Some(state) = effects.persist {
            let disk = &mut self.nodes[i].disk;
            assert!(
                disk.map_or(true, |d| state >= d),
                "persisted state went down"
            );
            *disk = Some(state);
        }
        if let (Some(reply), Some(to)) = (effects.reply, reply_to) {
            self.send(i, to, reply);
        }
        if let Some(message) = effects.broadcast {
            self.broadcast(i, &message);
        }
    }

    fn proposer_event(&mut self, i: usize, event: Event) {
        let now = self.now_for(i);
        let node = &mut self.nodes[i];
        let actions = node.proposer.on_event(now, &mut node.acceptor, event);
        for action in actions {
            match action {
                Action::Persist(state) => {
                    let disk = &mut self.nodes[i].disk;
                    assert!(
                        disk.map_or(true, |d| state >= d),
                        "persisted state went down"
                    );
                    *disk = Some(state);
                }
                Action::Broadcast(message) => self.broadcast(i, &message),
                Action::SetTimer { kind, at } => match at {
                    Some(at) => {
                        self.nodes[i].timers.insert(kind, at);
                    }
                    None => {
                        self.nodes[i].timers.remove(&kind);
                    }
                },
                Action::Publish(view) => self.published(i, view),
            }
        }
    }

    /// Records tenures: a new token must exceed every earlier one (G2);
    /// the same token again is a renewal and never shortens validity.
    fn published(&mut self, i: usize, view: ViewChange) {
        match &view {
            ViewChange::Holding { token, valid_until } => match self.nodes[i].holding {
                Some((held, until)) if held == *token => {
                    assert!(*valid_until >= until, "renewal shortened validity");
                    self.renewals += 1;
                }
                _ => {
                    let highest = self.tenures.iter().map(|t| t.token).max();
                    assert!(
                        highest.map_or(true, |h| *token > h),
                        "G2: token {token} after {highest:?}"
                    );
                    self.tenures.push(Tenure {
                        node: i,
                        token: *token,
                        since: self.now,
                    });
                }
            },
            _ => self.nodes[i].holding = None,
        }
        if let ViewChange::Holding { token, valid_until } = view {
            self.nodes[i].holding = Some((token, valid_until));
        }
        self.nodes[i].view = view;
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message) {
        match self.nodes[to].state {
            State::Down => return,
            State::Paused(_) => {
                self.nodes[to].inbox.push((from, message));
                return;
            }
            State::Up => {}
        }
        let local = self.local(to);
        let effects = self.nodes[to].acceptor.handle(local, IDS[from], &message);
        self.apply(to, effects, Some(from));
        self.proposer_event(
            to,
            Event::Received {
                from: IDS[from].into(),
                message,
            },
        );
    }

    /// The next real time anything is due.
    fn next_due(&self) -> Option<Millis> {
        let mut due: Vec<Millis> = self.net.keys().map(|k| k.0).take(1).collect();
        for (i, node) in self.nodes.iter().enumerate() {
            match node.state {
                State::Down => {}
                State::Paused(until) => due.push(until),
                State::Up => {
                    due.extend(node.timers.values().map(|at| self.real(i, *at)));
                    due.extend(node.acceptor.wake_at().map(|at| self.real(i, at)));
                }
            }
        }
        due.into_iter().min()
    }

    /// Runs everything due at the current real time.
    fn step(&mut self) {
        for _ in 0..1_000 {
            let mut busy = false;
            while let Some(entry) = self.net.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (from, to, message) = entry.remove();
                self.deliver(from, to, message);
                busy = true;
            }
            for i in 0..IDS.len() {
                busy |= self.step_node(i);
            }
            self.check_one_holder();
            if !busy {
                return;
            }
        }
        panic!("livelock at {}", self.now);
    }

    fn step_node(&mut self, i: usize) -> bool {
        let local = self.local(i);
        match self.nodes[i].state {
            State::Down => return false,
            State::Paused(until) if until > self.now => return false,
            State::Paused(_) => {
                self.nodes[i].state = State::Up;
                for (from, message) in std::mem::take(&mut self.nodes[i].inbox) {
                    self.deliver(from, i, message);
                }
                self.proposer_event(i, Event::Tick);
                return true;
            }
            State::Up => {}
        }
        let mut busy = false;
        if self.nodes[i]
            .acceptor
            .wake_at()
            .is_some_and(|at| at <= local)
        {
            let effects = self.nodes[i].acceptor.tick(local);
            self.apply(i, effects, None);
            self.proposer_event(i, Event::Tick);
            busy = true;
        }
        let due: Vec<TimerKind> = self.nodes[i]
            .timers
            .iter()
            .filter(|(_, at)| **at <= local)
            .map(|(kind, _)| *kind)
            .collect();
        for kind in due {
            self.nodes[i].timers.remove(&kind);
            self.proposer_event(i, Event::Timer(kind));
            busy = true;
        }
        busy
    }

    /// G1: at most one node (running or paused) may stamp now, each judged
    /// by its own clock.
    fn check_one_holder(&self) {
        let holders: Vec<usize> = (0..IDS.len())
            .filter(|&i| self.nodes[i].state != State::Down)
            .filter(|&i| {
                self.nodes[i]
                    .proposer
                    .tenure()
                    .is_some_and(|(_, until)| self.local(i) < until)
            })
            .collect();
        assert!(holders.len() <= 1, "G1 at {}: {holders:?} hold", self.now);
    }

    fn run_until(&mut self, until: Millis) {
        while let Some(next) = self.next_due().filter(|next| *next <= until) {
            self.now = self.now.max(next);
            self.step();
        }
        self.now = until;
        self.step();
    }

    fn run_for(&mut self, span: Millis) {
        self.run_until(self.now + span);
    }

    /// The node that may stamp now, if any.
    fn holder(&self) -> Option<usize> {
        (0..IDS.len()).find(|&i| {
            self.nodes[i].state == State::Up
                && self.nodes[i]
                    .proposer
                    .tenure()
                    .is_some_and(|(_, until)| self.local(i) < until)
        })
    }

    fn pause(&mut self, i: usize, span: Millis) {
        self.nodes[i].state = State::Paused(self.now + span);
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].state = State::Down;
        self.nodes[i].timers.clear();
        self.nodes[i].inbox.clear();
        self.nodes[i].holding = None;
    }

    fn restart(&mut self, i: usize, keep_file: bool) {
        let disk = if keep_file { self.nodes[i].disk } else { None };
        let incarnation = self.nodes[i].incarnation + 1;
        self.nodes[i] = self.fresh_node(i, disk, incarnation);
        self.boot(i);
    }

    fn step_down(&mut self, i: usize) {
        self.proposer_event(i, Event::StepDown);
    }
}

#[test]
fn one_holder_is_elected_after_the_start_quarantine_and_renews_with_its_token() {
    let mut c = Cluster::new(1, true);
    c.run_for(TTL - 1);
    assert!(
        c.tenures.is_empty(),
        "acceptors are quarantined for one ttl"
    );
    c.run_until(60_000);
    assert_eq!(c.tenures.len(), 1, "one tenure, renewed throughout");
    let first = &c.tenures[0];
    assert!(first.since < TTL + TTL / 2, "elected at {}", first.since);
    assert!(c.renewals >= 14, "{} renewals", c.renewals);
    let holder = c.holder().unwrap();
    assert_eq!(holder, first.node);
    assert_eq!(c.nodes[holder].proposer.tenure().unwrap().0, first.token);
    // The followers know who holds, with its token and URL.
    for i in (0..3).filter(|&i| i != holder) {
        assert_eq!(
            c.nodes[i].view,
            ViewChange::Follower {
                holder: IDS[holder].into(),
                token: first.token,
                urls: Urls {
                    forward: Some(format!("http://{}:8000", IDS[holder])),
                    public: None
                }
            }
        );
    }
    // The token is the first round's ballot, above the wall-clock floor.
    assert!(first.token >> 16 > UNIX0);
}

#[test]
fn a_holder_that_stops_renewing_is_replaced_after_about_one_ttl() {
    let mut c = Cluster::new(2, true);
    c.run_until(30_000);
    let old = c.holder().unwrap();
    let old_token = c.tenures.last().unwrap().token;
    let stopped = c.now;
    c.pause(old, 3 * TTL);
    c.run_for(3 * TTL - 1);
    let new = c
        .tenures
        .last()
        .map(|t| (t.node, t.token, t.since))
        .unwrap();
    let (new_node, new_token, new_since) = new;
    assert_ne!(new_node, old);
    assert!(new_token > old_token);
    let failover = new_since - stopped;
    assert!(failover >= TTL * 9 / 10, "took over after {failover} ms");
    assert!(failover <= TTL * 12 / 10, "took over after {failover} ms");
    // The old holder wakes up with a stale view and stale messages: it
    // does not stamp again, and nobody loses the lease to it.
    c.run_for(2 * TTL);
    let last = c.tenures.last().unwrap();
    assert_eq!(last.token, new_token);
    assert_eq!(c.holder(), Some(last.node));
    assert!(matches!(c.nodes[old].view, ViewChange::Follower { .. }));
}

#[test]
fn release_hands_over_fast_and_the_releaser_waits_one_ttl() {
    let mut c = Cluster::new(3, true);
    c.run_until(30_000);
    let old = c.holder().unwrap();
    let old_token = c.tenures.last().unwrap().token;
    let released = c.now;
    c.step_down(old);
    assert_eq!(c.holder(), None);
    c.run_for(TTL / 4);
    let new = c.tenures.last().unwrap();
    assert_ne!(new.node, old);
    assert!(new.token > old_token);
    assert!(new.since - released < TTL / 4, "{}", new.since - released);
    // The new holder keeps it; the releaser never took it back in a ttl.
    c.run_for(TTL);
    assert!(c
        .tenures
        .iter()
        .all(|t| t.node != old || t.since < released));
}

#[test]
fn restarts_with_state_files_keep_tokens_growing() {
    let mut c = Cluster::new(4, true);
    c.run_until(25_000);
    for round in 0..4 {
        let holder = c.holder().unwrap();
        let crashed = c.now;
        c.crash(holder);
        c.run_for(1_000);
        c.restart(holder, true);
        assert!(c.nodes[holder].acceptor.is_quarantined(c.local(holder)));
        // Nobody takes over while the crashed holder's grants live on at
        // the others (its last renewal was at most renew_every ago).
        c.run_for(2 * TTL);
        let new = c.tenures.last().unwrap();
        assert!(
            new.since >= crashed + TTL / 2,
            "round {round}: {}",
            new.since - crashed
        );
        assert!(c.holder().is_some(), "round {round}");
    }
    let tokens: Vec<u64> = c.tenures.iter().map(|t| t.token).collect();
    assert_eq!(tokens.len(), 5);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
}

#[test]
fn all_crashed_together_with_files_come_back_with_greater_tokens() {
    let mut c = Cluster::new(5, true);
    c.run_until(25_000);
    let before = c.tenures.last().unwrap().token;
    for i in 0..3 {
        c.crash(i);
    }
    c.run_for(500);
    for i in 0..3 {
        c.restart(i, true);
    }
    c.run_for(3 * TTL);
    let after = c.tenures.last().unwrap().token;
    assert!(after > before);
}

#[test]
fn a_first_start_without_state_files_bootstraps_then_elects() {
    let mut c = Cluster::new(6, false);
    // The fastest clock (1 % fast) reaches one ttl first.
    c.run_for(TTL * 98 / 100);
    assert!((0..3).all(|i| c.nodes[i].acceptor.is_amnesiac()));
    c.run_for(TTL);
    assert!((0..3).all(|i| !c.nodes[i].acceptor.is_amnesiac()));
    assert!(
        (0..3).all(|i| c.nodes[i].disk.is_some()),
        "bootstrap persisted"
    );
    c.run_for(2 * TTL);
    assert_eq!(c.tenures.len(), 1);
    assert!(c.holder().is_some());
}

#[test]
fn a_lost_state_file_is_recovered_from_the_others() {
    let mut c = Cluster::new(7, true);
    c.run_until(25_000);
    let holder = c.holder().unwrap();
    let victim = (holder + 1) % 3;
    let promised = c.nodes[victim].disk.unwrap().promised;
    c.crash(victim);
    c.restart(victim, false);
    c.run_for(2_000);
    assert!(!c.nodes[victim].acceptor.is_amnesiac());
    assert!(c.nodes[victim].acceptor.durable().promised >= promised);
    assert_eq!(
        c.nodes[victim].disk,
        Some(c.nodes[victim].acceptor.durable())
    );
    c.run_for(2 * TTL);
    assert_eq!(
        c.holder(),
        Some(holder),
        "the holder kept renewing meanwhile"
    );
}

/// Loss, duplication, reordering, pauses, crashes, restarts and lost files
/// at random, over simulated hours: G1 and G2 are checked after every step.
#[test]
fn chaos_keeps_one_holder_and_growing_tokens() {
    for seed in 1..=30 {
        let mut c = Cluster::with_drift(seed * 7_919, true, 20);
        c.loss_percent = 15;
        c.dup_percent = 15;
        c.max_latency = 300;
        c.late_one_in = 50;
        let mut lost_files = 0;
        for _ in 0..300 {
            let span = 1_000 + c.random(8_000);
            c.run_for(span);
            let i = c.random(3) as usize;
            match (c.random(10), c.nodes[i].state) {
                (0..=2, State::Up) => {
                    let span = TTL / 2 + c.random(3 * TTL);
                    c.pause(i, span);
                }
                (3 | 4, State::Up) => c.crash(i),
                (5, State::Up) => c.step_down(i),
                (_, State::Down) => {
                    // At most one lost file at a time keeps a majority sane.
                    let others_ok = (0..3).all(|j| j == i || !c.nodes[j].acceptor.is_amnesiac());
                    let keep = !(others_ok && lost_files < 3 && c.random(4) == 0);
                    lost_files += u64::from(!keep);
                    c.restart(i, keep);
                }
                _ => {}
            }
        }
        // Heal everything: a holder comes back.
        for i in 0..3 {
            if c.nodes[i].state == State::Down {
                c.restart(i, true);
            }
        }
        c.loss_percent = 0;
        c.dup_percent = 0;
        c.run_for(6 * TTL);
        assert!(c.holder().is_some(), "seed {seed}: no holder after healing");
        assert!(
            c.tenures.len() >= 5,
            "seed {seed}: {} tenures",
            c.tenures.len()
        );
    }
}
