//! The view log, the stamping intervals it gives, and the checks: G1,
//! G2 and how much of a window had a valid holder.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use super::{secs, Nanos, IDS, SEC};

/// What a host may do from an instant on, as far as G1 and G2 go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Stamps with `token` until the simulated instant `until` (exclusive).
    Holding { token: u64, until: Nanos },
    /// Publishes no deadline (a follower, or nothing known).
    Idle,
    /// Crashed: nothing runs.
    Down,
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub node: usize,
    pub at: Nanos,
    pub state: State,
}

pub type Log = Rc<RefCell<Vec<Entry>>>;

/// One stamping interval: `node` may stamp with `token` in `[from, until)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub token: u64,
    pub node: usize,
    pub from: Nanos,
    pub until: Nanos,
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

/// The log turned into intervals: each `Holding` lasts until its deadline
/// or the node's next entry, whichever is first; empty ones are dropped.
pub fn intervals(log: &[Entry], end: Nanos) -> Vec<Interval> {
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
pub struct Findings {
    pub violations: Vec<String>,
    pub tenures: usize,
    pub handovers: usize,
    /// Share of the last stretch of the quiet period with a valid holder.
    pub coverage: f64,
}

/// G1, G2 and the liveness figures over `intervals`.
pub fn check(intervals: &[Interval], quiet: (Nanos, Nanos)) -> Findings {
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

/// The node whose view lets it stamp at `t`, if any, by the log.
pub fn holder_at(log: &[Entry], t: Nanos) -> Option<usize> {
    (0..IDS.len()).find(|node| {
        let last = log.iter().rev().find(|e| e.node == *node && e.at <= t);
        matches!(last, Some(Entry { state: State::Holding { until, .. }, .. }) if *until > t)
    })
}

/// The checks themselves, on made-up intervals.
#[test]
pub fn the_checks_flag_overlaps_shared_tokens_and_falling_tokens() {
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
