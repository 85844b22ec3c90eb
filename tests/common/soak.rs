//! The lease soak harness (LEASES.md §6d; issue 7, verification 3 and 4):
//! three real `breakwater` processes share lease `orders` through any
//! backend (the test supplies each node's YAML), clients write through all
//! three, a fault driver SIGKILLs, SIGSTOPs/SIGCONTs and SIGTERMs them and
//! restarts them, and a fencing checker app records every request. The
//! properties are pure functions ([`props`]) over two records, both on
//! CLOCK_MONOTONIC, which every process of the host shares (feature
//! `test-hooks`):
//! - each node's holding intervals, from its `breakwater::lease_interval`
//!   log lines ([`logs`]);
//! - each request the app saw: token, `x-breakwater-stamp-ns`, arrival, and
//!   the node that stamped it ([`checker`]).
//!
//! **Which node stamped a request**: the checker listens on one port per
//! node and node *i*'s only upstream is port *i*. A stamped request reaches
//! the app only from the gate of the node that stamped it (a follower
//! forwards to the holder's listener, and the holder's gate stamps it and
//! sends it to *its* upstream), so the port it arrives on names the stamping
//! node, independently of the logs the properties check it against.
//!
//! Layout: [`props`] (pure), [`logs`] (parsing), [`checker`] (the app),
//! [`load`] (the clients), [`cluster`] (the processes, their ports, state
//! dirs and restarts), [`driver`] (faults, rounds, figures), [`pki`]
//! (mutual-TLS certificates for the `peers` backend).

use std::time::Duration;

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the stamps and of the
/// logged intervals (`std::time::Instant` reads it too, but opaquely).
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Milliseconds between two CLOCK_MONOTONIC readings (0 if `to < from`).
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}

/// A small deterministic generator (SplitMix64): the soak prints its seed,
/// and `SOAK_SEED` replays a run's choices (not its timing).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the clock, for when none is given.
    pub fn seed_from_clock() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(mono_ns())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; 0 when `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[lo, hi)`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + hi.saturating_sub(lo).mul_f64(self.unit())
    }
}

// ---------------------------------------------------------------------------

/// The safety properties, as pure functions of the recorded data. Each
/// returns the violations it finds, described well enough to debug from.
pub mod props {
    use std::collections::{BTreeMap, BTreeSet};

    /// One node's holding of one token, rebuilt from its log lines.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Interval {
        pub node: String,
        pub token: u64,
        /// The first `now_ns` logged for this token: the view is published
        /// (and the gate may stamp) only after it.
        pub from_ns: u64,
        /// The greatest `until_ns` logged: the gate stamps only before it.
        pub until_ns: u64,
        /// The last `now_ns` of a holding line.
        pub last_ns: u64,
        /// A logged end of holding (a `lease_interval` line without
        /// `until_ns`, after the last holding line), if there is one.
        pub closed_ns: Option<u64>,
        /// When the driver sent SIGTERM (a step-down) to this node while it
        /// held this token. With no `closed_ns` the step-down instant is not
        /// known, only that it came after this (no successor can begin
        /// before it: the old holder releases only once it stepped down);
        /// see [`holding_end`].
        pub stepped_down_at: Option<u64>,
    }

    /// What the checker app did with a request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Verdict {
        /// Its token was at least the highest seen so far.
        Accepted,
        /// Rejected (409): `by` was the highest token seen when it arrived.
        Fenced { by: u64 },
        /// It lacked the token or the stamp header (rejected, 400).
        Unstamped,
    }

    /// One request as the checker app saw it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Seen {
        /// The node that stamped it: the checker port it arrived on.
        pub node: String,
        /// The node the client sent it to (`x-soak-via`).
        pub via: Option<String>,
        pub token: Option<u64>,
        pub stamp_ns: Option<u64>,
        /// CLOCK_MONOTONIC in the checker, under the fence's lock.
        pub arrival_ns: u64,
        pub verdict: Verdict,
    }

    impl Seen {
        /// `(token, stamp_ns)` of a stamped request.
        pub fn stamped(&self) -> Option<(u64, u64)> {
            Some((self.token?, self.stamp_ns?))
        }
    }

    /// A broken property, named by one of the constants below.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Violation {
        pub property: &'static str,
        pub detail: String,
    }

    pub const ALL_STAMPED: &str = "every request that reaches the app is stamped";
    pub const ONE_NODE: &str = "one node per token";
    pub const DISJOINT: &str = "holding intervals of different tokens never overlap";
    pub const G2: &str = "a later tenure has a strictly greater token (G2)";
    pub const INSIDE: &str = "every request was stamped inside its node's interval";
    pub const FENCED: &str =
        "every fenced request was stamped before the first stamp of the token that fenced it";

    fn violation(property: &'static str, detail: String) -> Violation {
        Violation { property, detail }
    }

    /// Every property, in the order above.
    pub fn check(intervals: &[Interval], seen: &[Seen]) -> Vec<Violation> {
        let mut all = all_stamped(seen);
        all.extend(one_node_per_token(intervals, seen));
        all.extend(intervals_disjoint(intervals, seen));
        all.extend(tokens_increase(intervals));
        all.extend(stamped_inside(intervals, seen));
        all.extend(fenced_predate_newer(seen));
        all
    }

    pub fn all_stamped(seen: &[Seen]) -> Vec<Violation> {
        seen.iter()
            .filter(|s| s.verdict == Verdict::Unstamped || s.stamped().is_none())
            .map(|s| {
                violation(
                    ALL_STAMPED,
                    format!("the app got an unstamped request: {s:?}"),
                )
            })
            .collect()
    }

    /// Each token is logged, and stamped, by one node only.
    pub fn one_node_per_token(intervals: &[Interval], seen: &[Seen]) -> Vec<Violation> {
        let mut logged: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
        for iv in intervals {
            logged.entry(iv.token).or_default().insert(&iv.node);
        }
        let mut stamping: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
        for s in seen {
            if let Some((token, _)) = s.stamped() {
                stamping.entry(token).or_default().insert(&s.node);
            }
        }
        let tokens: BTreeSet<u64> = logged.keys().chain(stamping.keys()).copied().collect();
        let none = BTreeSet::new();
        tokens
            .into_iter()
            .filter_map(|t| {
                let (l, s) = (
                    logged.get(&t).unwrap_or(&none),
                    stamping.get(&t).unwrap_or(&none),
                );
                let nodes: BTreeSet<&str> = l.union(s).copied().collect();
                (nodes.len() > 1).then(|| {
                    violation(
                        ONE_NODE,
                        format!("token {t}: logged as held by {l:?}, stamped by {s:?}"),
                    )
                })
            })
            .collect()
    }

    /// The instant by which `iv`'s node stopped holding: its logged end;
    /// else, after a SIGTERM, the later of that instant and the last
    /// evidence of holding (its last holding line or stamp), which is as far
    /// as the record shows it held; else `until_ns`.
    pub fn holding_end(iv: &Interval, last_stamp: Option<u64>) -> u64 {
        let logged = iv.until_ns.max(iv.from_ns);
        let end = match (iv.closed_ns, iv.stepped_down_at) {
            (Some(closed), _) => logged.min(closed),
            (None, Some(term)) => {
                let evidence = iv.last_ns.max(last_stamp.unwrap_or(0)).saturating_add(1);
                logged.min(evidence.max(term))
            }
            (None, None) => logged,
        };
        end.max(iv.from_ns)
    }

    fn last_stamps(seen: &[Seen]) -> BTreeMap<(&str, u64), u64> {
        let mut last = BTreeMap::new();
        for s in seen {
            if let Some((token, stamp)) = s.stamped() {
                let e = last.entry((s.node.as_str(), token)).or_insert(stamp);
                *e = (*e).max(stamp);
            }
        }
        last
    }

    /// `[from, end)` of different tokens never intersect (G1 on the logs).
    pub fn intervals_disjoint(intervals: &[Interval], seen: &[Seen]) -> Vec<Violation> {
        let last = last_stamps(seen);
        let mut spans: Vec<(u64, u64, &Interval)> = intervals
            .iter()
            .map(|iv| {
                let end = holding_end(iv, last.get(&(iv.node.as_str(), iv.token)).copied());
                (iv.from_ns, end, iv)
            })
            .collect();
        spans.sort_by_key(|&(from, end, iv)| (from, end, iv.token));
        let mut out = Vec::new();
        for (i, &(_, end, a)) in spans.iter().enumerate() {
            for &(from, _, b) in spans[i + 1..].iter().take_while(|(from, ..)| *from < end) {
                if a.token != b.token {
                    out.push(violation(
                        DISJOINT,
                        format!(
                            "token {} on {} [{}, {end}) overlaps token {} on {} from {from} by {} ns",
                            a.token,
                            a.node,
                            a.from_ns,
                            b.token,
                            b.node,
                            end - from
                        ),
                    ));
                }
            }
        }
        out
    }

    /// Ordered by start, tenures' tokens strictly grow (G2; the intervals
    /// are then ordered by token too).
    pub fn tokens_increase(intervals: &[Interval]) -> Vec<Violation> {
        let mut by_start: Vec<&Interval> = intervals.iter().collect();
        by_start.sort_by_key(|iv| (iv.from_ns, iv.token));
        let mut out = Vec::new();
        let mut highest: Option<&Interval> = None;
        for iv in by_start {
            match highest {
                Some(h) if iv.token < h.token => out.push(violation(
                    G2,
                    format!(
                        "token {} (on {} from {}) began after token {} (on {} from {})",
                        iv.token, iv.node, iv.from_ns, h.token, h.node, h.from_ns
                    ),
                )),
                Some(h) if iv.token == h.token => {}
                _ => highest = Some(iv),
            }
        }
        out
    }

    /// Each stamp lies in `[from, until)` (or before a logged end) of the
    /// interval its node logged for its token.
    pub fn stamped_inside(intervals: &[Interval], seen: &[Seen]) -> Vec<Violation> {
        let by_key: BTreeMap<(&str, u64), &Interval> = intervals
            .iter()
            .map(|iv| ((iv.node.as_str(), iv.token), iv))
            .collect();
        let mut out = Vec::new();
        for s in seen {
            let Some((token, stamp)) = s.stamped() else {
                continue;
            };
            let Some(iv) = by_key.get(&(s.node.as_str(), token)) else {
                out.push(violation(
                    INSIDE,
                    format!(
                        "{} stamped token {token}, which it never logged holding: {s:?}",
                        s.node
                    ),
                ));
                continue;
            };
            let end = iv.closed_ns.map_or(iv.until_ns, |c| c.min(iv.until_ns));
            if stamp < iv.from_ns || stamp >= end {
                let (side, by) = if stamp < iv.from_ns {
                    ("before", iv.from_ns - stamp)
                } else {
                    ("after", stamp - end)
                };
                out.push(violation(
                    INSIDE,
                    format!(
                        "stamped {by} ns {side} its interval [{}, {end}) of token {token} on {}: {s:?}",
                        iv.from_ns, iv.node
                    ),
                ));
            }
        }
        out
    }

    /// A fenced request is an old one arriving late, never one stamped
    /// after the newer tenure began: arrival order may go backwards (a
    /// SIGSTOP), stamp order may not.
    pub fn fenced_predate_newer(seen: &[Seen]) -> Vec<Violation> {
        let mut first: BTreeMap<u64, u64> = BTreeMap::new();
        for s in seen {
            if let Some((token, stamp)) = s.stamped() {
                let e = first.entry(token).or_insert(stamp);
                *e = (*e).min(stamp);
            }
        }
        let mut out = Vec::new();
        for s in seen {
            let Verdict::Fenced { by } = s.verdict else {
                continue;
            };
            let Some((token, stamp)) = s.stamped() else {
                out.push(violation(FENCED, format!("fenced without a stamp: {s:?}")));
                continue;
            };
            if token >= by {
                out.push(violation(
                    FENCED,
                    format!("fenced by {by}, which is not above its token: {s:?}"),
                ));
            }
            match first.get(&by) {
                None => out.push(violation(
                    FENCED,
                    format!("fenced by token {by}, which no recorded request carries: {s:?}"),
                )),
                Some(&newer) if stamp >= newer => out.push(violation(
                    FENCED,
                    format!(
                        "stamped {} ns after token {by}'s first stamp ({newer}): {s:?}",
                        stamp - newer
                    ),
                )),
                Some(_) => {}
            }
        }
        out
    }

    /// Marks the interval each `(node, term_ns)` step-down cut short: the
    /// node's latest interval begun before `term_ns`, if it still ran then.
    pub fn mark_step_downs(intervals: &mut [Interval], step_downs: &[(String, u64)]) {
        for (node, at) in step_downs {
            let latest = intervals
                .iter_mut()
                .filter(|iv| iv.node == *node && iv.from_ns <= *at)
                .max_by_key(|iv| iv.from_ns);
            if let Some(iv) = latest {
                if iv.until_ns > *at {
                    iv.stepped_down_at = Some(*at);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------

/// `breakwater::lease_interval` log lines (feature `test-hooks`), e.g.
/// `… INFO breakwater::lease_interval: holding me=n0 token=7 now_ns=… until_ns=…`.
pub mod logs {
    use std::collections::BTreeMap;

    use super::props::Interval;

    pub const TARGET: &str = "breakwater::lease_interval:";

    /// One logged event: a holding (with `until_ns`) or an end of holding
    /// (without).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Event {
        pub node: String,
        pub token: u64,
        pub now_ns: u64,
        pub until_ns: Option<u64>,
    }

    /// `Ok(None)` for any other line; `Err` for a `lease_interval` line that
    /// does not parse (the format changed: the soak must not pass silently).
    pub fn parse(line: &str) -> Result<Option<Event>, String> {
        let Some(at) = line.find(TARGET) else {
            return Ok(None);
        };
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for word in line[at + TARGET.len()..].split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                fields.insert(k, v.trim_matches('"'));
            }
        }
        let num = |k: &str| -> Result<Option<u64>, String> {
            fields
                .get(k)
                .map(|v| v.parse().map_err(|e| format!("{k}={v}: {e} in {line:?}")))
                .transpose()
        };
        let missing = |k: &str| format!("no {k}= in lease_interval line {line:?}");
        Ok(Some(Event {
            node: fields.get("me").ok_or_else(|| missing("me"))?.to_string(),
            token: num("token")?.ok_or_else(|| missing("token"))?,
            now_ns: num("now_ns")?.ok_or_else(|| missing("now_ns"))?,
            until_ns: num("until_ns")?,
        }))
    }

    /// Every event of `lines`, in order; panics naming a line that does not
    /// parse.
    pub fn events<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Event> {
        lines
            .into_iter()
            .filter_map(|l| parse(l).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// One interval per (node, token): from = first `now_ns`, until = the
    /// greatest `until_ns`; an end line after the last holding line closes it.
    pub fn intervals(events: &[Event]) -> Vec<Interval> {
        let mut by_key: BTreeMap<(&str, u64), Interval> = BTreeMap::new();
        for e in events {
            let iv = by_key
                .entry((e.node.as_str(), e.token))
                .or_insert_with(|| Interval {
                    node: e.node.clone(),
                    token: e.token,
                    from_ns: e.now_ns,
                    until_ns: 0,
                    last_ns: e.now_ns,
                    closed_ns: None,
                    stepped_down_at: None,
                });
            iv.from_ns = iv.from_ns.min(e.now_ns);
            match e.until_ns {
                Some(until) => {
                    iv.until_ns = iv.until_ns.max(until);
                    iv.last_ns = iv.last_ns.max(e.now_ns);
                    if iv.closed_ns.is_some_and(|c| c < e.now_ns) {
                        iv.closed_ns = None;
                    }
                }
                None => iv.closed_ns = Some(iv.closed_ns.unwrap_or(0).max(e.now_ns)),
            }
        }
        let mut all: Vec<Interval> = by_key.into_values().collect();
        all.sort_by_key(|iv| (iv.from_ns, iv.token));
        all
    }
}

// ---------------------------------------------------------------------------

/// The app behind every node: one listener per node, one fence for all.
pub mod checker {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use tokio::sync::watch;

    use super::props::{Seen, Verdict};

    /// The header the clients add: the node they sent the request to.
    pub const VIA: &str = "x-soak-via";
    const TOKEN: &str = "x-lease-token";
    const STAMP: &str = "x-breakwater-stamp-ns";

    #[derive(Debug, Default)]
    pub struct State {
        /// The fence: the highest token accepted so far.
        pub highest: Option<u64>,
        /// Every request, in arrival (= fence) order.
        pub seen: Vec<Seen>,
    }

    /// Cheap to clone: every clone shares the record.
    #[derive(Clone)]
    pub struct Checker {
        state: Arc<Mutex<State>>,
        changes: watch::Receiver<usize>,
        /// Node `i`'s upstream address.
        pub addrs: Vec<SocketAddr>,
    }

    impl Checker {
        /// One listener on 127.0.0.1:0 per node id.
        pub async fn start(nodes: &[String]) -> Checker {
            let state = Arc::new(Mutex::new(State::default()));
            let (tx, changes) = watch::channel(0usize);
            let tx = Arc::new(tx);
            let mut addrs = Vec::new();
            for node in nodes {
                let (state, tx, node) = (state.clone(), tx.clone(), node.clone());
                let addr = super::super::upstream(move |req: http::Request<Incoming>| {
                    let (state, tx, node) = (state.clone(), tx.clone(), node.clone());
                    async move { record(&state, &tx, node, req).await }
                })
                .await;
                addrs.push(addr);
            }
            Checker {
                state,
                changes,
                addrs,
            }
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// How many requests arrived so far (an index into `seen`).
        pub fn mark(&self) -> usize {
            self.lock().seen.len()
        }

        /// A copy of every request seen so far.
        pub fn seen(&self) -> Vec<Seen> {
            self.since(0)
        }

        /// A copy of the requests seen from `mark` on.
        pub fn since(&self, mark: usize) -> Vec<Seen> {
            self.lock().seen.get(mark..).unwrap_or_default().to_vec()
        }

        /// Runs `check` on the record from request `mark` on, whenever a
        /// request arrives, until it returns `Some`, at most `bound`.
        pub async fn wait_for<T>(
            &self,
            what: &str,
            mark: usize,
            bound: Duration,
            mut check: impl FnMut(Option<u64>, &[Seen]) -> Option<T>,
        ) -> Result<T, String> {
            let deadline = tokio::time::Instant::now() + bound;
            let mut changes = self.changes.clone();
            loop {
                changes.borrow_and_update();
                {
                    let state = self.lock();
                    let since = state.seen.get(mark..).unwrap_or_default();
                    if let Some(found) = check(state.highest, since) {
                        return Ok(found);
                    }
                }
                match tokio::time::timeout_at(deadline, changes.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(format!("the checker stopped: {what}")),
                    Err(_) => return Err(format!("not within {bound:?}: {what}")),
                }
            }
        }
    }

    /// Receives the whole body (as a write would), then fences and records
    /// under one lock, so arrival order is fence order.
    async fn record(
        state: &Mutex<State>,
        changes: &watch::Sender<usize>,
        node: String,
        req: http::Request<Incoming>,
    ) -> http::Response<super::super::TestBody> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let via = header(VIA);
        let token = header(TOKEN).and_then(|t| t.parse::<u64>().ok());
        let stamp_ns = header(STAMP).and_then(|t| t.parse::<u64>().ok());
        let _ = req.into_body().collect().await;
        let (status, body) = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            let arrival_ns = super::mono_ns();
            let verdict = match (token, stamp_ns, state.highest) {
                (Some(_), None, _) | (None, ..) => Verdict::Unstamped,
                (Some(t), Some(_), Some(h)) if t < h => Verdict::Fenced { by: h },
                (Some(t), Some(_), _) => {
                    state.highest = Some(t);
                    Verdict::Accepted
                }
            };
            state.seen.push(Seen {
                node,
                via,
                token,
                stamp_ns,
                arrival_ns,
                verdict,
            });
            changes.send_replace(state.seen.len());
            match verdict {
                Verdict::Accepted => (
                    http::StatusCode::OK,
                    format!("token={}\n", token.unwrap_or_default()),
                ),
                Verdict::Fenced { by } => (
                    http::StatusCode::CONFLICT,
                    format!("fenced: token {} < {by}\n", token.unwrap_or_default()),
                ),
                Verdict::Unstamped => (http::StatusCode::BAD_REQUEST, "unstamped\n".to_owned()),
            }
        };
        let mut res = http::Response::new(super::super::full(body));
        *res.status_mut() = status;
        res
    }
}

// ---------------------------------------------------------------------------

/// Clients writing through every node at a bounded rate.
pub mod load {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use tokio::sync::Semaphore;

    use super::checker::VIA;
    use super::Rng;

    /// The client side's tally (the checker's record is the evidence; this
    /// only shows what clients went through).
    #[derive(Debug, Default)]
    pub struct Tally {
        pub sent: AtomicU64,
        pub ok: AtomicU64,
        pub fenced: AtomicU64,
        pub unavailable: AtomicU64,
        pub other_status: AtomicU64,
        pub errors: AtomicU64,
        pub skipped: AtomicU64,
        /// Answers other than 200, by `status reason` (`x-breakwater-reason`).
        pub refusals: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    }

    impl std::fmt::Display for Tally {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
            write!(
                f,
                "sent {} (200 {}, 409 {}, 503 {}, other {}, no answer {}; {} not sent: too many in flight)",
                g(&self.sent),
                g(&self.ok),
                g(&self.fenced),
                g(&self.unavailable),
                g(&self.other_status),
                g(&self.errors),
                g(&self.skipped)
            )?;
            let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if !refusals.is_empty() {
                write!(f, "; refusals {refusals:?}")?;
            }
            Ok(())
        }
    }

    /// Requests in flight per node at most, so a stopped node does not
    /// make them pile up without bound; more than a client sends while
    /// waiting for the longest answer, so no client stalls on a stopped
    /// node (it would stop writing through the others too, which would
    /// hide when the new holder starts stamping).
    const IN_FLIGHT: usize = 1024;

    /// The share of requests whose body comes in two parts, `U(0,
    /// SLOW_BODY)` apart: the gate stamps on the head, the app fences once
    /// the body is in, so a SIGSTOP of the holder in between delivers a
    /// request stamped before the stop after its successor's first (which
    /// the fence must reject, and which must predate it by stamp).
    const SLOW_SHARE: f64 = 0.5;
    const SLOW_BODY: Duration = Duration::from_millis(300);

    /// `{"write":1}`, sent in two chunks `pause` apart.
    fn slow_body(pause: Duration) -> super::super::TestBody {
        use http_body::Frame;
        let parts = futures_util::stream::unfold(0u8, move |part| async move {
            let chunk: &'static [u8] = match part {
                0 => b"{\"write\":",
                1 => {
                    tokio::time::sleep(pause).await;
                    b"1}"
                }
                _ => return None,
            };
            let frame: Result<_, Box<dyn std::error::Error + Send + Sync>> =
                Ok(Frame::data(Bytes::from_static(chunk)));
            Some((frame, part + 1))
        });
        http_body_util::StreamBody::new(parts).boxed()
    }

    pub struct Load {
        stop: Arc<AtomicBool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
        timeout: Duration,
        pub tally: Arc<Tally>,
    }

    impl Load {
        /// A POST to `/orders/…` via each `(node id, base URL)` every
        /// U(`every`) apart, each on its own task and given up after
        /// `timeout`: longer than the longest SIGSTOP, so requests held by a
        /// stopped node are answered after SIGCONT rather than abandoned.
        pub fn start(
            nodes: Vec<(String, String)>,
            every: (Duration, Duration),
            timeout: Duration,
            seed: u64,
        ) -> Load {
            let stop = Arc::new(AtomicBool::new(false));
            let tally = Arc::new(Tally::default());
            let tasks = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (id, base))| {
                    let (stop, tally) = (stop.clone(), tally.clone());
                    let rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
                    tokio::spawn(client(id, base, every, timeout, rng, stop, tally))
                })
                .collect();
            Load {
                stop,
                tasks,
                timeout,
                tally,
            }
        }

        /// Stops sending and waits (bounded) for every answer.
        pub async fn stop(self) -> Arc<Tally> {
            self.stop.store(true, Ordering::Relaxed);
            for task in self.tasks {
                let _ = tokio::time::timeout(self.timeout + Duration::from_secs(2), task).await;
            }
            self.tally
        }
    }

    async fn client(
        id: String,
        base: String,
        every: (Duration, Duration),
        timeout: Duration,
        mut rng: Rng,
        stop: Arc<AtomicBool>,
        tally: Arc<Tally>,
    ) {
        let client = super::super::h1_client();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(rng.duration(every.0, every.1)).await;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tally.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            n += 1;
            let body = if rng.unit() < SLOW_SHARE {
                slow_body(rng.duration(Duration::ZERO, SLOW_BODY))
            } else {
                super::super::full(Bytes::from_static(b"{\"write\":1}"))
            };
            let req = http::Request::post(format!("{base}/orders/{id}-{n}"))
                .header(VIA, id.as_str())
                .body(body);
            let Ok(req) = req else {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            tally.sent.fetch_add(1, Ordering::Relaxed);
            let (client, tally) = (client.clone(), tally.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let answer = async {
                    let res = client.request(req).await.ok()?;
                    let status = res.status();
                    let reason = res
                        .headers()
                        .get("x-breakwater-reason")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("from the app")
                        .to_owned();
                    res.into_body().collect().await.ok()?;
                    if status != http::StatusCode::OK {
                        let mut r = tally.refusals.lock().unwrap_or_else(|p| p.into_inner());
                        *r.entry(format!("{} {reason}", status.as_u16()))
                            .or_default() += 1;
                    }
                    Some(status)
                };
                let counter = match tokio::time::timeout(timeout, answer).await {
                    Ok(Some(http::StatusCode::OK)) => &tally.ok,
                    Ok(Some(http::StatusCode::CONFLICT)) => &tally.fenced,
                    Ok(Some(http::StatusCode::SERVICE_UNAVAILABLE)) => &tally.unavailable,
                    Ok(Some(_)) => &tally.other_status,
                    Ok(None) | Err(_) => &tally.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        }
        // Every slot back: every answer is in (or timed out).
        let _ = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            slots.acquire_many(IN_FLIGHT as u32),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------

/// Three nodes as child processes: ports, state dirs, starts and restarts.
pub mod cluster {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{BinaryProxy, WAIT};
    use super::checker::Checker;
    use super::{logs, props, Rng};

    /// What a node's config is made from; the same for every incarnation.
    #[derive(Debug, Clone)]
    pub struct NodeSpec {
        pub index: usize,
        pub id: String,
        /// The `main` listener (and `cluster.forward_url`).
        pub http_port: u16,
        /// `cluster.listen` / `advertise` (backend `peers`).
        pub peer_port: u16,
        /// `cluster.state_dir`, kept across restarts.
        pub state_dir: PathBuf,
        /// This node's own checker listener: its only upstream.
        pub app: std::net::SocketAddr,
        /// Every member: `(id, peer port)`, this node included.
        pub members: Vec<(String, u16)>,
    }

    impl NodeSpec {
        pub fn forward_url(&self) -> String {
            format!("http://127.0.0.1:{}", self.http_port)
        }

        /// The other members, `(id, "127.0.0.1:port")`.
        pub fn peers(&self) -> Vec<(String, String)> {
            self.members
                .iter()
                .filter(|(id, _)| *id != self.id)
                .map(|(id, port)| (id.clone(), format!("127.0.0.1:{port}")))
                .collect()
        }
    }

    /// A node's YAML from its spec: the backend lives here.
    pub type ConfigFn = Arc<dyn Fn(&NodeSpec) -> String + Send + Sync>;

    pub struct Cluster {
        pub specs: Vec<NodeSpec>,
        procs: Vec<Option<BinaryProxy>>,
        config: ConfigFn,
        /// Lines of incarnations that ended, per node.
        past: Vec<Vec<String>>,
        /// Parent of the state dirs.
        _dirs: tempfile::TempDir,
        pub checker: Checker,
    }

    /// Ports handed out are below the ephemeral range (32768+ on Linux), so
    /// no outgoing connection takes one while its node is down.
    const PORTS: std::ops::Range<u16> = 20_000..32_000;
    const START_TRIES: usize = 5;

    impl Cluster {
        /// Starts nodes `ids` (concurrently) with configs from `config`.
        pub async fn start(ids: &[&str], config: ConfigFn, rng: &mut Rng) -> Cluster {
            let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
            let checker = Checker::start(&ids).await;
            let dirs = tempfile::Builder::new()
                .prefix("breakwater-soak-")
                .tempdir()
                .expect("a temp dir for the state dirs");
            let mut last = String::new();
            for _ in 0..START_TRIES {
                let ports = free_ports(ids.len() * 2, rng);
                let members: Vec<(String, u16)> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (id.clone(), ports[2 * i + 1]))
                    .collect();
                let specs: Vec<NodeSpec> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let state_dir = dirs.path().join(id);
                        std::fs::create_dir_all(&state_dir).expect("create a state dir");
                        NodeSpec {
                            index: i,
                            id: id.clone(),
                            http_port: ports[2 * i],
                            peer_port: ports[2 * i + 1],
                            state_dir,
                            app: checker.addrs[i],
                            members: members.clone(),
                        }
                    })
                    .collect();
                let starts: Vec<_> = specs
                    .iter()
                    .map(|s| tokio::spawn(try_start(config(s))))
                    .collect();
                let mut procs = Vec::new();
                for start in starts {
                    match start.await {
                        Ok(started) => procs.push(started),
                        // A start that failed otherwise: its panic, as is.
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => panic!("starting a node: {e}"),
                    }
                }
                if procs.iter().all(Result::is_ok) {
                    return Cluster {
                        procs: procs.into_iter().map(Result::ok).collect(),
                        past: vec![Vec::new(); specs.len()],
                        specs,
                        config,
                        _dirs: dirs,
                        checker,
                    };
                }
                // A port taken meanwhile: all over again on new ports (the
                // started ones are killed as they drop).
                last = procs.into_iter().filter_map(Result::err).collect();
                for spec in &specs {
                    let _ = std::fs::remove_dir_all(&spec.state_dir);
                }
            }
            panic!("no free ports for the cluster in {START_TRIES} tries; last clash:\n{last}");
        }

        pub fn len(&self) -> usize {
            self.specs.len()
        }

        pub fn id(&self, i: usize) -> &str {
            &self.specs[i].id
        }

        /// `(id, base URL)` of every node, for the clients.
        pub fn entry_points(&self) -> Vec<(String, String)> {
            self.specs
                .iter()
                .map(|s| (s.id.clone(), s.forward_url()))
                .collect()
        }

        fn proc(&self, i: usize) -> &BinaryProxy {
            self.procs[i]
                .as_ref()
                .unwrap_or_else(|| panic!("node {} is not running", self.specs[i].id))
        }

        /// Node `i`'s admin URL for `path`, while it runs.
        pub fn admin_url(&self, i: usize, path: &str) -> Option<String> {
            self.procs[i].as_ref().map(|p| p.admin_url(path))
        }

        /// Sends `SIG<signal>` to node `i`'s process (by its pid).
        pub fn signal(&self, i: usize, signal: &str) {
            self.proc(i).signal(signal);
        }

        /// Waits (bounded) for node `i` to exit, keeps its log, and returns
        /// whether it exited with status 0.
        pub async fn reap(&mut self, i: usize, bound: Duration) -> bool {
            let mut proc = self.procs[i]
                .take()
                .unwrap_or_else(|| panic!("node {} is not running", self.specs[i].id));
            let status = proc.wait_exit(bound).await;
            self.keep_logs(i, &proc);
            status.success()
        }

        fn keep_logs(&mut self, i: usize, proc: &BinaryProxy) {
            let lines = proc.logs();
            // For diagnosis: every incarnation's whole log, appended to
            // `$SOAK_LOG_DIR/ID.log` (with `BREAKWATER_TEST_LOG` for more).
            if let Ok(dir) = std::env::var("SOAK_LOG_DIR") {
                use std::io::Write;
                let path = std::path::Path::new(&dir).join(format!("{}.log", self.id(i)));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path);
                if let Ok(mut file) = file {
                    let _ = writeln!(file, "{lines}\n--- exited ---");
                }
            }
            self.past[i].extend(
                lines
                    .lines()
                    .filter(|l| l.contains(logs::TARGET))
                    .map(str::to_owned),
            );
        }

        /// Deletes everything in node `i`'s state dir (it must be down).
        pub fn wipe_state(&self, i: usize) {
            assert!(self.procs[i].is_none(), "wipe the state of a running node");
            let dir = &self.specs[i].state_dir;
            for entry in std::fs::read_dir(dir)
                .expect("read the state dir")
                .flatten()
            {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
            }
        }

        /// Starts node `i` again with the same config, ports and state dir;
        /// a port still taken is retried for a while (bounded).
        pub async fn restart(&mut self, i: usize) {
            assert!(self.procs[i].is_none(), "restart a running node");
            let yaml = (self.config)(&self.specs[i]);
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut pause = Duration::from_millis(50);
            loop {
                match try_start(yaml.clone()).await {
                    Ok(proc) => {
                        self.procs[i] = Some(proc);
                        return;
                    }
                    Err(clash) if tokio::time::Instant::now() + pause < deadline => {
                        eprintln!("restart of {}: {clash}; retrying", self.specs[i].id);
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Err(clash) => panic!(
                        "node {} could not restart on its ports within {WAIT:?}: {clash}",
                        self.specs[i].id
                    ),
                }
            }
        }

        /// SIGKILLs every node that still runs (SIGCONT first would not
        /// matter: SIGKILL ends a stopped process too) and keeps every log.
        pub async fn kill_all(&mut self) {
            for i in 0..self.len() {
                if self.procs[i].is_some() {
                    self.signal(i, "KILL");
                    self.reap(i, WAIT).await;
                }
            }
        }

        /// Every `lease_interval` line of every incarnation so far.
        pub fn interval_lines(&self) -> Vec<String> {
            let mut all: Vec<String> = self.past.iter().flatten().cloned().collect();
            for proc in self.procs.iter().flatten() {
                all.extend(
                    proc.logs()
                        .lines()
                        .filter(|l| l.contains(logs::TARGET))
                        .map(str::to_owned),
                );
            }
            all
        }

        /// The holding intervals logged so far.
        pub fn intervals(&self) -> Vec<props::Interval> {
            let lines = self.interval_lines();
            logs::intervals(&logs::events(lines.iter().map(String::as_str)))
        }

        /// For a failure message: each node's `/leases` (what it believes:
        /// amnesia, quarantine, ballots, peers' reachability) and the tail
        /// of its log.
        pub async fn dump(&self) -> String {
            let mut out = String::new();
            for i in 0..self.len() {
                let leases = match self.admin_url(i, "/leases") {
                    Some(url) => {
                        let get = super::super::get(&url);
                        match tokio::time::timeout(Duration::from_secs(2), get).await {
                            Ok((_, _, body)) => body,
                            Err(_) => "(no answer within 2 s)".to_owned(),
                        }
                    }
                    None => "(not running)".to_owned(),
                };
                out.push_str(&format!(
                    "--- {} ---
/leases: {leases}
{}
",
                    self.id(i),
                    self.log_tail(i, 25)
                ));
            }
            out
        }

        /// The tail of node `i`'s current stderr, for failure messages.
        pub fn log_tail(&self, i: usize, n: usize) -> String {
            match &self.procs[i] {
                Some(p) => {
                    let all = p.logs();
                    let lines: Vec<&str> = all.lines().collect();
                    lines[lines.len().saturating_sub(n)..].join("\n")
                }
                None => "(not running)".to_owned(),
            }
        }
    }

    /// Starts the binary on `yaml`: `Err` (with the reason) when a port was
    /// taken, any other failure panics as [`BinaryProxy::start`] does.
    async fn try_start(yaml: String) -> Result<BinaryProxy, String> {
        match tokio::spawn(async move { BinaryProxy::start(&yaml).await }).await {
            Ok(proc) => Ok(proc),
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                if text.contains("Address already in use") || text.contains("address in use") {
                    Err(text
                        .lines()
                        .find(|l| l.contains("in use"))
                        .unwrap_or("")
                        .to_owned())
                } else {
                    std::panic::resume_unwind(panic)
                }
            }
            Err(e) => panic!("the start task failed: {e}"),
        }
    }

    /// `n` distinct ports in [`PORTS`] that were free a moment ago.
    fn free_ports(n: usize, rng: &mut Rng) -> Vec<u16> {
        let mut ports = Vec::new();
        for _ in 0..n * 200 {
            if ports.len() == n {
                break;
            }
            let span = usize::from(PORTS.end - PORTS.start);
            let port = PORTS.start + u16::try_from(rng.below(span)).unwrap_or(0);
            if !ports.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                ports.push(port);
            }
        }
        assert_eq!(ports.len(), n, "found only {ports:?} free in {PORTS:?}");
        ports
    }
}

// ---------------------------------------------------------------------------

/// The fault driver: rounds of one fault each, and the figures.
pub mod driver {
    use std::time::Duration;

    use super::cluster::Cluster;
    use super::load::{Load, Tally};
    use super::props::{self, Seen, Verdict, Violation};
    use super::{mono_ns, ms_between, Rng};

    /// One fault of a round.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// SIGKILL, then a restart at once.
        Kill,
        /// SIGSTOP for U(0.5, 3)·ttl, then SIGCONT.
        Stop,
        /// SIGTERM (a step-down and release), then a restart.
        Term,
        /// SIGKILL, delete the state dir's files, restart (backend `peers`).
        KillWipe,
    }

    /// Whom a round's fault hits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Victim {
        /// The node stamping when the round begins.
        Holder,
        /// The holder with probability [`Soak::holder_share`], else a
        /// follower chosen at random.
        Any,
    }

    impl Fault {
        fn name(self) -> &'static str {
            match self {
                Fault::Kill => "SIGKILL+restart",
                Fault::Stop => "SIGSTOP/SIGCONT",
                Fault::Term => "SIGTERM+restart",
                Fault::KillWipe => "SIGKILL+wipe+restart",
            }
        }
    }

    /// The soak's parameters.
    #[derive(Debug, Clone)]
    pub struct Soak {
        pub ttl: Duration,
        pub renew_every: Duration,
        pub rounds: usize,
        pub seed: u64,
        /// Taken in turn, round after round.
        pub faults: Vec<(Fault, Victim)>,
        /// How often each node's client sends: U(lo, hi).
        pub every: (Duration, Duration),
        /// The share of [`Victim::Any`] rounds whose victim is the holder.
        pub holder_share: f64,
        /// The longest a round may take to reach a stamping holder again.
        pub converge_within: Duration,
    }

    impl Soak {
        /// `ttl` and `renew_every` of the lease under test; `SOAK_ROUNDS` and
        /// `SOAK_SEED` override `rounds` and the seed.
        pub fn new(
            ttl: Duration,
            renew_every: Duration,
            rounds: usize,
            faults: &[(Fault, Victim)],
        ) -> Soak {
            let env = |k: &str| {
                std::env::var(k)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            Soak {
                ttl,
                renew_every,
                rounds: env("SOAK_ROUNDS").map_or(rounds, |r| r as usize),
                seed: env("SOAK_SEED").unwrap_or_else(Rng::seed_from_clock),
                faults: faults.to_vec(),
                every: (Duration::from_millis(10), Duration::from_millis(20)),
                holder_share: 0.75,
                // Generous: a node resumed after a long SIGSTOP first works
                // through the backlog its clients and peers left it, on
                // shared cores.
                converge_within: ttl * 4 + Duration::from_secs(20),
            }
        }
    }

    /// What a soak found.
    #[derive(Debug)]
    pub struct Report {
        pub rounds: usize,
        pub requests: usize,
        pub accepted: usize,
        pub fenced: usize,
        pub tenures: usize,
        /// Tenures cut short by a SIGTERM whose end was not logged.
        pub unlogged_step_downs: usize,
        pub violations: Vec<Violation>,
        pub figures: Figures,
        pub ttl: Duration,
        pub clients: String,
        pub seconds: f64,
    }

    /// Handover times, in ms from the fault.
    #[derive(Debug, Default)]
    pub struct Figures {
        /// SIGKILL of the holder → first stamp of a new token.
        pub failovers_ms: Vec<f64>,
        /// SIGKILL of the holder → first holding line of the next tenure:
        /// the lease's share of the failover, without the clients' pacing.
        pub failovers_logged_ms: Vec<f64>,
        /// Any other fault of the holder that changed the token → first
        /// stamp of the new token.
        pub takeovers_ms: Vec<(Fault, f64)>,
    }

    /// `p` (0..=1) nearest-rank percentile of sorted `xs`.
    pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
        if xs.is_empty() {
            return None;
        }
        let rank = (p * xs.len() as f64).ceil().max(1.0) as usize;
        xs.get(rank.min(xs.len()) - 1).copied()
    }

    impl std::fmt::Display for Report {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let ttl = self.ttl.as_secs_f64() * 1e3;
            let sorted = |xs: &[f64]| {
                let mut xs = xs.to_vec();
                xs.sort_by(f64::total_cmp);
                xs
            };
            let fo = sorted(&self.figures.failovers_ms);
            let logged = sorted(&self.figures.failovers_logged_ms);
            writeln!(
                f,
                "soak: {} rounds in {:.0} s; {} requests reached the app: {} accepted, {} fenced; \
                 {} tenures ({} cut short by SIGTERM, end unlogged); violations: {}",
                self.rounds,
                self.seconds,
                self.requests,
                self.accepted,
                self.fenced,
                self.tenures,
                self.unlogged_step_downs,
                self.violations.len()
            )?;
            writeln!(f, "soak: clients {}", self.clients)?;
            match (percentile(&fo, 0.5), percentile(&fo, 0.99), fo.last()) {
                (Some(p50), Some(p99), Some(max)) => writeln!(
                    f,
                    "soak: failover (SIGKILL of the holder → first stamp of the new token, ttl {ttl:.0} ms) \
                     over {}: median {p50:.0} ms = {:.2} × ttl, p99 {p99:.0} ms = {:.2} × ttl, \
                     max {max:.0} ms = {:.2} × ttl (target ≤ 1.20 × ttl: {})",
                    fo.len(),
                    p50 / ttl,
                    p99 / ttl,
                    max / ttl,
                    if p99 / ttl <= 1.2 { "met" } else { "MISSED" }
                )?,
                _ => writeln!(f, "soak: no SIGKILL of the holder in this run")?,
            }
            if let (Some(p50), Some(max)) = (percentile(&logged, 0.5), logged.last()) {
                writeln!(
                    f,
                    "soak: of which the lease (SIGKILL → the new tenure's first holding line): \
                     median {p50:.0} ms = {:.2} × ttl, max {max:.0} ms = {:.2} × ttl",
                    p50 / ttl,
                    max / ttl
                )?;
            }
            for fault in [Fault::Stop, Fault::Term, Fault::KillWipe] {
                let mut t: Vec<f64> = self
                    .figures
                    .takeovers_ms
                    .iter()
                    .filter(|(k, _)| *k == fault)
                    .map(|(_, ms)| *ms)
                    .collect();
                t.sort_by(f64::total_cmp);
                if let (Some(p50), Some(max)) = (percentile(&t, 0.5), t.last()) {
                    writeln!(
                        f,
                        "soak: takeover after {} of the holder over {}: median {p50:.0} ms = {:.2} × ttl, max {max:.0} ms",
                        fault.name(),
                        t.len(),
                        p50 / ttl,
                    )?;
                }
            }
            Ok(())
        }
    }

    /// Who stamps now: the node and token of the checker's highest token.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Holding {
        node: usize,
        token: u64,
    }

    /// Runs the rounds on `cluster`, under load, then checks every
    /// property over the whole record.
    pub async fn run(soak: &Soak, cluster: &mut Cluster) -> Report {
        let started = mono_ns();
        let mut rng = Rng::new(soak.seed);
        println!(
            "soak: {} rounds, faults {:?}, ttl {:?}, renew_every {:?}, seed {} (SOAK_SEED replays the choices)",
            soak.rounds, soak.faults, soak.ttl, soak.renew_every, soak.seed
        );
        // Answers held by a SIGSTOP come within 3·ttl.
        let timeout = soak.ttl * 3 + Duration::from_secs(4);
        let load = Load::start(cluster.entry_points(), soak.every, timeout, rng.next_u64());
        let mut holding = converge(soak, cluster, 0, 0, "at start").await;
        let mut figures = Figures::default();
        let mut step_downs = Vec::new();
        for round in 1..=soak.rounds {
            // Land the fault at a random phase of the renewals.
            tokio::time::sleep(rng.duration(Duration::ZERO, soak.renew_every)).await;
            let (fault, whom) = soak.faults[(round - 1) % soak.faults.len().max(1)];
            let victim = if whom == Victim::Holder || rng.unit() < soak.holder_share {
                holding.node
            } else {
                (holding.node + 1 + rng.below(cluster.len() - 1)) % cluster.len()
            };
            let was_holder = victim == holding.node;
            let mark = cluster.checker.mark();
            let fault_ns = mono_ns();
            let mut detail = String::new();
            if std::env::var_os("SOAK_LOG_DIR").is_some() {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                println!("round {round}: fault at unix {:.3} s", unix.as_secs_f64());
            }
            match fault {
                Fault::Kill | Fault::KillWipe => {
                    cluster.signal(victim, "KILL");
                    cluster.reap(victim, super::super::WAIT).await;
                    if fault == Fault::KillWipe {
                        cluster.wipe_state(victim);
                    }
                    let checker = cluster.checker.clone();
                    let newer = async {
                        if !was_holder {
                            return None;
                        }
                        let what = "a request stamped with a newer token after the SIGKILL";
                        let first = checker
                            .wait_for(what, mark, soak.converge_within, |_, seen| {
                                first_stamp_above(seen, holding.token)
                            })
                            .await;
                        Some(first)
                    };
                    let ((), first) = tokio::join!(cluster.restart(victim), newer);
                    let first = match first {
                        Some(Err(e)) => panic!("round {round}: {e}\n{}", cluster.dump().await),
                        Some(Ok(stamp)) => Some(stamp),
                        None => None,
                    };
                    // A stamp before the fault: the holder had changed
                    // during the pause before it (no failover to time).
                    if let Some(stamp) = first.filter(|&stamp| stamp > fault_ns) {
                        let ms = ms_between(fault_ns, stamp);
                        detail = format!(
                            "failover {ms:.0} ms = {:.2} × ttl",
                            ms / (soak.ttl.as_secs_f64() * 1e3)
                        );
                        if fault == Fault::Kill {
                            figures.failovers_ms.push(ms);
                        } else {
                            figures.takeovers_ms.push((fault, ms));
                        }
                    }
                }
                Fault::Stop => {
                    let pause = soak.ttl.mul_f64(0.5 + 2.5 * rng.unit());
                    cluster.signal(victim, "STOP");
                    // A fixed pause: that is the fault.
                    tokio::time::sleep(pause).await;
                    cluster.signal(victim, "CONT");
                    detail = format!("stopped {} ms", pause.as_millis());
                }
                Fault::Term => {
                    step_downs.push((cluster.id(victim).to_owned(), mono_ns()));
                    cluster.signal(victim, "TERM");
                    let clean = cluster.reap(victim, super::super::WAIT).await;
                    assert!(
                        clean,
                        "round {round}: {} exited non-zero after SIGTERM",
                        cluster.id(victim)
                    );
                    cluster.restart(victim).await;
                }
            }
            let done_ns = mono_ns();
            let next = converge(soak, cluster, mark, done_ns, &format!("round {round}")).await;
            let since = &cluster.checker.since(mark)[..];
            let fenced = since
                .iter()
                .filter(|s| matches!(s.verdict, Verdict::Fenced { .. }))
                .count();
            if next.token != holding.token
                && was_holder
                && matches!(fault, Fault::Stop | Fault::Term)
            {
                let first = first_stamp_above(since, holding.token);
                if let Some(stamp) = first.filter(|&stamp| stamp > fault_ns) {
                    let ms = ms_between(fault_ns, stamp);
                    figures.takeovers_ms.push((fault, ms));
                    detail.push_str(&format!("; taken over after {ms:.0} ms"));
                }
            }
            if next.token != holding.token {
                // When the next tenure was first logged, next to when it
                // first stamped: what the lease took, not the clients.
                let began = cluster
                    .intervals()
                    .iter()
                    .filter(|iv| iv.token > holding.token)
                    .map(|iv| iv.from_ns)
                    .min();
                if let Some(began) = began {
                    let ms = ms_between(fault_ns, began);
                    detail.push_str(&format!("; next tenure logged after {ms:.0} ms"));
                    if fault == Fault::Kill && was_holder {
                        figures.failovers_logged_ms.push(ms);
                    }
                }
            }
            println!(
                "round {round}/{}: {} of {}{} (token {}){}{} → {} holds token {}; back in {:.0} ms; {} requests, {} fenced",
                soak.rounds,
                fault.name(),
                cluster.id(victim),
                if was_holder { ", the holder" } else { "" },
                holding.token,
                if detail.is_empty() { "" } else { ": " },
                detail.trim_start_matches("; "),
                cluster.id(next.node),
                next.token,
                ms_between(fault_ns, mono_ns()),
                since.len(),
                fenced
            );
            holding = next;
        }
        let tally = load.stop().await;
        cluster.kill_all().await;
        report(soak, cluster, &step_downs, figures, &tally, started)
    }

    fn report(
        soak: &Soak,
        cluster: &Cluster,
        step_downs: &[(String, u64)],
        figures: Figures,
        tally: &Tally,
        started: u64,
    ) -> Report {
        let mut intervals = cluster.intervals();
        props::mark_step_downs(&mut intervals, step_downs);
        let seen = cluster.checker.seen();
        let violations = props::check(&intervals, &seen);
        Report {
            rounds: soak.rounds,
            requests: seen.len(),
            accepted: seen
                .iter()
                .filter(|s| s.verdict == Verdict::Accepted)
                .count(),
            fenced: seen
                .iter()
                .filter(|s| matches!(s.verdict, Verdict::Fenced { .. }))
                .count(),
            tenures: intervals.len(),
            unlogged_step_downs: intervals
                .iter()
                .filter(|iv| iv.stepped_down_at.is_some() && iv.closed_ns.is_none())
                .count(),
            violations,
            figures,
            ttl: soak.ttl,
            clients: tally.to_string(),
            seconds: ms_between(started, mono_ns()) / 1e3,
        }
    }

    /// The smallest stamp of an accepted request whose token is above `token`.
    fn first_stamp_above(seen: &[Seen], token: u64) -> Option<u64> {
        seen.iter()
            .filter(|s| s.verdict == Verdict::Accepted)
            .filter_map(Seen::stamped)
            .filter(|&(t, _)| t > token)
            .map(|(_, stamp)| stamp)
            .min()
    }

    /// Waits until requests sent via every node, stamped after `after_ns`,
    /// were accepted with the checker's highest token: one holder stamps
    /// and every node reaches it.
    async fn converge(
        soak: &Soak,
        cluster: &Cluster,
        mark: usize,
        after_ns: u64,
        what: &str,
    ) -> Holding {
        let ids: Vec<String> = (0..cluster.len())
            .map(|i| cluster.id(i).to_owned())
            .collect();
        let found = cluster
            .checker
            .wait_for(
                "requests via every node accepted with the highest token",
                mark,
                soak.converge_within,
                |highest, seen| {
                    let highest = highest?;
                    let fresh = |s: &&Seen| {
                        s.verdict == Verdict::Accepted
                            && s.token == Some(highest)
                            && s.stamp_ns.is_some_and(|t| t > after_ns)
                    };
                    let all_via = ids.iter().all(|id| {
                        seen.iter()
                            .filter(fresh)
                            .any(|s| s.via.as_deref() == Some(id))
                    });
                    let by = seen.iter().filter(fresh).map(|s| s.node.clone()).next()?;
                    let node = ids.iter().position(|id| *id == by)?;
                    all_via.then_some(Holding {
                        node,
                        token: highest,
                    })
                },
            )
            .await;
        match found {
            Ok(holding) => holding,
            Err(e) => panic!("{what}: {e}\n{}", cluster.dump().await),
        }
    }
}

// ---------------------------------------------------------------------------
