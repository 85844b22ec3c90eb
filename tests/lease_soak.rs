//! The lease soak (LEASES.md §6d; issue 7, verification 3 and 4): three
//! real `breakwater` processes on 127.0.0.1 share lease `orders`, clients
//! write through all three, and a fault driver SIGKILLs, SIGSTOPs/SIGCONTs
//! and SIGTERMs them and restarts them, round after round. A fencing
//! checker app records every request; at the end every safety property
//! (`common::soak::props`) must hold over the whole record, and the
//! figures are printed (run with `--nocapture`).
//!
//! The harness is backend-agnostic: each test gives the YAML of a node.
//! `soak_etcd_rounds` and `soak_peers_rounds` run in the suite. The
//! properties themselves are unit-tested first, on synthetic records that
//! break each one.
//!
//! Rounds: `SOAK_ROUNDS` (default [`SUITE_ROUNDS`], [`PEERS_SUITE_ROUNDS`]
//! for peers), seed: `SOAK_SEED`. The long soak, outside CI:
//! `benches/lease-soak.sh --backend peers --rounds 1000`. For diagnosis,
//! `SOAK_LOG_DIR` keeps every node's whole log and `BREAKWATER_TEST_LOG`
//! sets the nodes' log filter (e.g. `info,breakwater::lease::peers=debug`).
//! Needs feature `test-hooks` (`./test.sh` builds with `--all-features`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use breakwater::config::PeerTls;
use common::etcd::Etcd;
use common::pki::Pki;
use common::soak::cluster::{Cluster, ConfigFn, NodeSpec};
use common::soak::driver::{self, Fault, Report, Soak, Victim};
use common::soak::props::{self, Interval, Seen, Verdict, Violation};
use common::soak::{logs, Rng};

const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
const IDS: [&str; 3] = ["n0", "n1", "n2"];
/// Rounds in the test suite: 2–2.5 s each at ttl 2 s (a failover takes
/// about a ttl, a SIGSTOP lasts U(1, 6) s), so the issue's 20 would take
/// about 50 s on two shared cores, more when they are busy; 8 keep the file
/// near 20 s. `SOAK_ROUNDS` asks for more.
const SUITE_ROUNDS: usize = 8;
/// The peers backend is this issue's own (issue 7 asks for 20 rounds in the
/// suite): about 50 s.
const PEERS_SUITE_ROUNDS: usize = 20;
/// Half the rounds kill (most of them the holder, for the failover
/// figure); every fourth stops the holder, which is what makes the fence
/// reject something.
const FAULTS: [(Fault, Victim); 4] = [
    (Fault::Kill, Victim::Holder),
    (Fault::Stop, Victim::Holder),
    (Fault::Kill, Victim::Any),
    (Fault::Term, Victim::Any),
];

// --- the soaks ----------------------------------------------------------------

fn etcd_config(etcd: &Etcd) -> ConfigFn {
    use std::hash::{BuildHasher, RandomState};
    let endpoint = etcd.endpoint();
    let prefix = format!("/soak-{:016x}/", RandomState::new().hash_one(0u8));
    Arc::new(move |n: &NodeSpec| {
        format!(
            r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: "127.0.0.1:{port}" }}
upstreams:
  app: {{ url: "http://{app}" }}
access_log: {{ format: off }}
shutdown: {{ drain_delay: 0s, grace: 2s }}
cluster:
  node_id: {id}
  forward_url: "{forward}"
etcd: {{ endpoints: ["{endpoint}"], prefix: "{prefix}" }}
leases:
  orders: {{ backend: etcd, ttl: {ttl}ms, renew_every: {renew}ms, on_follower: forward }}
routes:
  # A long timeout: a request stamped just before a SIGSTOP still reaches
  # the app after SIGCONT, where the fence must reject it.
  - {{ name: orders, match: {{ path_prefix: / }}, upstream: app, lease: orders, timeout: 10s }}
"#,
            port = n.http_port,
            app = n.app,
            id = n.id,
            forward = n.forward_url(),
            ttl = TTL.as_millis(),
            renew = RENEW.as_millis(),
        )
    })
}

/// SPEC §7's `cluster` for `backend: peers`: mutual TLS on `listen`, the
/// other two as peers, a state dir that survives restarts.
fn peers_config(pki: &Pki) -> ConfigFn {
    let tls: Vec<(String, PeerTls)> = IDS
        .iter()
        .map(|id| ((*id).to_owned(), pki.node(id)))
        .collect();
    Arc::new(move |n: &NodeSpec| {
        let (_, t) = tls
            .iter()
            .find(|(id, _)| *id == n.id)
            .unwrap_or_else(|| panic!("no certificate for node {}", n.id));
        let peers: Vec<String> = n
            .peers()
            .iter()
            .map(|(id, addr)| format!(r#"{{ id: {id}, address: "{addr}" }}"#))
            .collect();
        format!(
            r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: "127.0.0.1:{port}" }}
upstreams:
  app: {{ url: "http://{app}" }}
access_log: {{ format: off }}
shutdown: {{ drain_delay: 0s, grace: 2s }}
cluster:
  node_id: {id}
  listen: "127.0.0.1:{peer_port}"
  advertise: "127.0.0.1:{peer_port}"
  forward_url: "{forward}"
  state_dir: "{state}"
  peers: [{peers}]
  tls: {{ cert: "{cert}", key: "{key}", ca: "{ca}" }}
leases:
  orders: {{ backend: peers, ttl: {ttl}ms, renew_every: {renew}ms, on_follower: forward }}
routes:
  - {{ name: orders, match: {{ path_prefix: / }}, upstream: app, lease: orders, timeout: 10s }}
"#,
            port = n.http_port,
            app = n.app,
            id = n.id,
            peer_port = n.peer_port,
            forward = n.forward_url(),
            state = n.state_dir.display(),
            peers = peers.join(", "),
            cert = t.cert.display(),
            key = t.key.display(),
            ca = t.ca.display(),
            ttl = TTL.as_millis(),
            renew = RENEW.as_millis(),
        )
    })
}

/// Prints the report and fails on any violation, listing them.
fn judge(report: &Report) {
    println!("{report}");
    let shown: Vec<String> = report
        .violations
        .iter()
        .take(30)
        .map(|v| format!("  {}: {}", v.property, v.detail))
        .collect();
    assert!(
        report.violations.is_empty(),
        "{} violations (first {}):\n{}",
        report.violations.len(),
        shown.len(),
        shown.join("\n")
    );
    assert!(report.accepted > 0, "no request was accepted: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs feature test-hooks (./test.sh runs cargo test --all-features)"
)]
async fn soak_etcd_rounds() {
    let etcd = Etcd::start().await;
    let soak = Soak::new(TTL, RENEW, SUITE_ROUNDS, &FAULTS);
    let mut rng = Rng::new(soak.seed);
    let mut cluster = Cluster::start(&IDS, etcd_config(&etcd), &mut rng).await;
    let report = driver::run(&soak, &mut cluster).await;
    judge(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "test-hooks"),
    ignore = "needs feature test-hooks (./test.sh runs cargo test --all-features)"
)]
async fn soak_peers_rounds() {
    let pki = Pki::new("soak peers CA");
    let mut faults = FAULTS.to_vec();
    // LEASES.md §6d: state file deletion too (§3.6, the amnesiac restart).
    faults.push((Fault::KillWipe, Victim::Any));
    faults.push((Fault::Stop, Victim::Any));
    let soak = Soak::new(TTL, RENEW, PEERS_SUITE_ROUNDS, &faults);
    let mut rng = Rng::new(soak.seed);
    let mut cluster = Cluster::start(&IDS, peers_config(&pki), &mut rng).await;
    let report = driver::run(&soak, &mut cluster).await;
    judge(&report);
}

/// LEASES.md §6d wants each node to log the intervals in which it
/// considered itself holder. A step-down (SIGTERM, `POST …/release`, an
/// unhealthy app) ends the interval before its deadline, and is logged as a
/// `lease_interval` line with `me`, `token` and `now_ns` but no `until_ns`;
/// without it, a SIGTERMed holder's logged interval would overlap its
/// successor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_down_closes_the_logged_holding_interval() {
    let etcd = Etcd::start().await;
    let mut soak = Soak::new(TTL, RENEW, 1, &[(Fault::Term, Victim::Holder)]);
    soak.rounds = 1;
    let mut rng = Rng::new(soak.seed);
    let mut cluster = Cluster::start(&IDS, etcd_config(&etcd), &mut rng).await;
    let report = driver::run(&soak, &mut cluster).await;
    judge(&report);
    // Without the harness's step-down marking: the logs alone.
    let intervals = cluster.intervals();
    let overlaps = props::intervals_disjoint(&intervals, &cluster.checker.seen());
    assert!(
        overlaps.is_empty(),
        "the logged intervals overlap:\n{overlaps:#?}\nintervals:\n{intervals:#?}"
    );
}

// --- the properties, on synthetic records -----------------------------------------

fn iv(node: &str, token: u64, from_ns: u64, until_ns: u64) -> Interval {
    Interval {
        node: node.to_owned(),
        token,
        from_ns,
        until_ns,
        last_ns: from_ns,
        closed_ns: None,
        stepped_down_at: None,
    }
}

fn req(node: &str, token: u64, stamp_ns: u64, arrival_ns: u64, verdict: Verdict) -> Seen {
    Seen {
        node: node.to_owned(),
        via: Some(node.to_owned()),
        token: Some(token),
        stamp_ns: Some(stamp_ns),
        arrival_ns,
        verdict,
    }
}

const OK: Verdict = Verdict::Accepted;

/// n0 holds 10 over [100, 200), n1 holds 20 over [250, 400); a request n0
/// stamped at 195 arrives after n1's first (a SIGSTOP) and is fenced.
fn history() -> (Vec<Interval>, Vec<Seen>) {
    let intervals = vec![iv("n0", 10, 100, 200), iv("n1", 20, 250, 400)];
    let seen = vec![
        req("n0", 10, 110, 111, OK),
        req("n0", 10, 150, 152, OK),
        req("n1", 20, 260, 262, OK),
        req("n0", 10, 195, 270, Verdict::Fenced { by: 20 }),
        req("n1", 20, 390, 391, OK),
    ];
    (intervals, seen)
}

/// The properties `violations` names, each once.
fn broken(violations: &[Violation]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = violations.iter().map(|v| v.property).collect();
    names.dedup();
    names
}

#[test]
fn a_consistent_history_breaks_no_property() {
    let (intervals, seen) = history();
    assert_eq!(props::check(&intervals, &seen), vec![]);
}

#[test]
fn an_unstamped_request_at_the_app_is_caught() {
    let (intervals, mut seen) = history();
    seen.push(Seen {
        token: None,
        stamp_ns: None,
        verdict: Verdict::Unstamped,
        ..req("n1", 0, 0, 300, OK)
    });
    assert_eq!(
        broken(&props::check(&intervals, &seen)),
        [props::ALL_STAMPED]
    );
}

#[test]
fn a_token_logged_by_two_nodes_is_caught() {
    let (mut intervals, seen) = history();
    intervals.push(iv("n2", 20, 300, 350));
    let v = props::one_node_per_token(&intervals, &seen);
    assert_eq!(broken(&v), [props::ONE_NODE], "{v:?}");
    assert!(v[0].detail.contains("token 20"), "{v:?}");
}

#[test]
fn a_token_stamped_by_a_node_that_did_not_log_it_is_caught_twice() {
    let (intervals, mut seen) = history();
    seen.push(req("n2", 20, 300, 301, OK));
    assert_eq!(
        broken(&props::check(&intervals, &seen)),
        [props::ONE_NODE, props::INSIDE]
    );
}

#[test]
fn overlapping_intervals_of_two_tokens_are_caught() {
    let (mut intervals, seen) = history();
    intervals[1].from_ns = 190;
    let v = props::intervals_disjoint(&intervals, &seen);
    assert_eq!(broken(&v), [props::DISJOINT], "{v:?}");
    assert!(v[0].detail.contains("by 10 ns"), "{v:?}");
    // One that starts inside and ends inside another, too.
    let nested = vec![iv("n0", 10, 100, 500), iv("n1", 20, 200, 300)];
    assert_eq!(
        broken(&props::intervals_disjoint(&nested, &[])),
        [props::DISJOINT]
    );
    // Touching is not overlapping: the deadline is exclusive.
    let touching = vec![iv("n0", 10, 100, 200), iv("n1", 20, 200, 300)];
    assert_eq!(props::intervals_disjoint(&touching, &[]), vec![]);
}

#[test]
fn a_later_tenure_with_a_smaller_token_is_caught() {
    let (mut intervals, mut seen) = history();
    // Disjoint, but 5 comes after 10.
    intervals.push(iv("n2", 5, 500, 600));
    seen.push(req("n2", 5, 510, 511, Verdict::Fenced { by: 20 }));
    let v = props::tokens_increase(&intervals);
    assert_eq!(broken(&v), [props::G2], "{v:?}");
    assert_eq!(props::intervals_disjoint(&intervals, &seen), vec![]);
    // The fence catches the request, but its stamp is after 20's first:
    // FENCED flags that too.
    assert_eq!(broken(&props::fenced_predate_newer(&seen)), [props::FENCED]);
}

#[test]
fn a_stamp_outside_its_interval_is_caught() {
    for stamp in [99, 200, 240] {
        let (intervals, mut seen) = history();
        seen.push(req("n0", 10, stamp, 241, Verdict::Accepted));
        let v = props::stamped_inside(&intervals, &seen);
        assert_eq!(broken(&v), [props::INSIDE], "stamp {stamp}: {v:?}");
    }
    // The first and the last instant inside are fine.
    let (intervals, mut seen) = history();
    seen.push(req("n0", 10, 100, 101, OK));
    seen.push(req("n0", 10, 199, 201, OK));
    assert_eq!(props::stamped_inside(&intervals, &seen), vec![]);
}

#[test]
fn a_stamp_with_a_token_its_node_never_logged_is_caught() {
    let (intervals, mut seen) = history();
    seen.push(req("n0", 30, 500, 501, OK));
    let v = props::stamped_inside(&intervals, &seen);
    assert_eq!(broken(&v), [props::INSIDE], "{v:?}");
    assert!(v[0].detail.contains("never logged"), "{v:?}");
}

#[test]
fn a_fenced_request_stamped_after_the_newer_tokens_first_stamp_is_caught() {
    let (intervals, mut seen) = history();
    // n0 stamped 10 at 265, after n1's first stamp of 20 at 260: G1 broke,
    // and the fence hid it from the app. (INSIDE catches it as well.)
    seen.push(req("n0", 10, 265, 280, Verdict::Fenced { by: 20 }));
    let v = props::fenced_predate_newer(&seen);
    assert_eq!(broken(&v), [props::FENCED], "{v:?}");
    assert!(v[0].detail.contains("5 ns after token 20"), "{v:?}");
    assert_eq!(
        broken(&props::check(&intervals, &seen)),
        [props::INSIDE, props::FENCED]
    );
}

#[test]
fn a_request_fenced_by_a_token_nobody_carried_is_caught() {
    let (_, mut seen) = history();
    seen.push(req("n0", 10, 150, 300, Verdict::Fenced { by: 99 }));
    seen.push(req("n1", 20, 300, 301, Verdict::Fenced { by: 20 }));
    let v = props::fenced_predate_newer(&seen);
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v[0].detail.contains("no recorded request carries"), "{v:?}");
    assert!(v[1].detail.contains("not above its token"), "{v:?}");
}

#[test]
fn a_step_down_ends_the_interval_at_the_sigterm_or_its_last_evidence_unless_its_end_is_logged() {
    // n0's deadline was 1000, but it got SIGTERM at 200; n1 began at 250.
    let mut intervals = vec![iv("n0", 10, 100, 1000), iv("n1", 20, 250, 400)];
    let mut seen = vec![req("n0", 10, 150, 151, OK), req("n1", 20, 260, 261, OK)];
    let overlap = props::intervals_disjoint(&intervals, &seen);
    assert_eq!(broken(&overlap), [props::DISJOINT]);

    props::mark_step_downs(&mut intervals, &[("n0".to_owned(), 200)]);
    assert_eq!(intervals[0].stepped_down_at, Some(200));
    assert_eq!(intervals[1].stepped_down_at, None);
    assert_eq!(props::check(&intervals, &seen), vec![]);

    // A stamp of the old token after the successor began is still caught.
    seen.push(req("n0", 10, 255, 300, Verdict::Fenced { by: 20 }));
    assert_eq!(
        broken(&props::intervals_disjoint(&intervals, &seen)),
        [props::DISJOINT]
    );
    seen.pop();
    // So is a successor that began before the SIGTERM, stamps or not.
    let early = vec![intervals[0].clone(), iv("n1", 20, 190, 400)];
    assert_eq!(
        broken(&props::intervals_disjoint(&early, &[])),
        [props::DISJOINT]
    );

    // A logged end replaces both, and bounds the stamps.
    intervals[0].stepped_down_at = None;
    intervals[0].closed_ns = Some(240);
    assert_eq!(props::check(&intervals, &seen), vec![]);
    seen.push(req("n0", 10, 245, 246, OK));
    assert_eq!(
        broken(&props::stamped_inside(&intervals, &seen)),
        [props::INSIDE]
    );
}

#[test]
fn a_step_down_marks_only_the_interval_it_cut_short() {
    let mut intervals = vec![
        iv("n0", 10, 100, 200),
        iv("n1", 20, 250, 400),
        iv("n0", 30, 500, 700),
    ];
    // n0 followed when terminated at 300; n1 held when terminated at 350.
    props::mark_step_downs(
        &mut intervals,
        &[("n0".to_owned(), 300), ("n1".to_owned(), 350)],
    );
    let marked: Vec<Option<u64>> = intervals.iter().map(|iv| iv.stepped_down_at).collect();
    assert_eq!(marked, [None, Some(350), None]);
}

// --- the log lines -----------------------------------------------------------------

/// A line as the binary writes it (checked against a real run).
const LINE: &str = "2026-11-25T15:28:16.835007Z  INFO breakwater::lease_interval: holding \
                    me=n0 token=1795620496834 now_ns=12825878769037 until_ns=12827878713995";

#[test]
fn interval_lines_parse_and_other_lines_are_skipped() {
    let e = logs::parse(LINE)
        .expect("parses")
        .expect("an interval line");
    assert_eq!(
        e,
        logs::Event {
            node: "n0".into(),
            token: 1_795_620_496_834,
            now_ns: 12_825_878_769_037,
            until_ns: Some(12_827_878_713_995),
        }
    );
    let other =
        "2026-11-25T15:28:16Z  INFO breakwater::app: listening listener=main addr=127.0.0.1:1";
    assert_eq!(logs::parse(other), Ok(None));
    let broken_line =
        "… INFO breakwater::lease_interval: holding me=n0 token=x now_ns=1 until_ns=2";
    assert!(logs::parse(broken_line).is_err());
    let no_token = "… INFO breakwater::lease_interval: holding me=n0 now_ns=1 until_ns=2";
    assert!(logs::parse(no_token).is_err());
}

#[test]
fn intervals_span_first_now_to_greatest_until_per_node_and_token() {
    let line = |me: &str, token: u64, now: u64, until: Option<u64>| {
        let until = until.map_or(String::new(), |u| format!(" until_ns={u}"));
        format!(
            "t INFO breakwater::lease_interval: holding me={me} token={token} now_ns={now}{until}"
        )
    };
    let lines = [
        line("n0", 7, 100, Some(300)),
        line("n0", 7, 200, Some(450)),
        line("n0", 7, 300, Some(420)),
        line("n1", 9, 500, Some(700)),
        line("n1", 9, 600, None),
        line("n2", 11, 800, Some(900)),
        line("n2", 11, 820, None),
        line("n2", 11, 850, Some(950)),
    ];
    let ivs = logs::intervals(&logs::events(lines.iter().map(String::as_str)));
    assert_eq!(
        ivs,
        [
            Interval {
                last_ns: 300,
                ..iv("n0", 7, 100, 450)
            },
            Interval {
                closed_ns: Some(600),
                ..iv("n1", 9, 500, 700)
            },
            // Held again after an end line: the end no longer stands.
            Interval {
                last_ns: 850,
                ..iv("n2", 11, 800, 950)
            },
        ]
    );
}

#[test]
fn percentiles_are_nearest_rank() {
    let xs = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(driver::percentile(&xs, 0.5), Some(2.0));
    assert_eq!(driver::percentile(&xs, 0.99), Some(4.0));
    assert_eq!(driver::percentile(&[], 0.5), None);
}
