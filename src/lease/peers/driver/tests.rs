//! The driver in process, with a one-member cluster (its own acceptor is
//! the majority) over a real transport on 127.0.0.1: first start, tenure,
//! release, restart with and without the state file, and a state dir that
//! cannot be written. Real time with short ttls; every wait is bounded.
//! Three members over real sockets are `tests/lease_peers.rs`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::time::Instant;

use crate::config::{ClusterSpec, Config, LeaseBackend, LeaseSpec, OnFollower, PeerTls};
use crate::lease::{LeaseMetrics, LeaseView, Leases, Role};
use crate::metrics::Metrics;

const TTL: Duration = Duration::from_millis(300);

/// A CA and one node certificate (DNS SAN `id`), in `dir`.
fn pki(dir: &Path, id: &str) -> PeerTls {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut node = CertificateParams::new(vec![id.to_owned()]).unwrap();
    node.distinguished_name.push(DnType::CommonName, id);
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = node.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    PeerTls {
        cert: write("node.crt", cert.pem()),
        key: write("node.key", key.serialize_pem()),
        ca: write("ca.crt", ca_pem),
    }
}

struct Setup {
    config: Config,
    state_dir: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let tls = pki(dir.path(), "solo");
    let mut config =
        crate::config::parse(Path::new("test.yaml"), crate::config::EMBEDDED_DEFAULT).unwrap();
    config.cluster = Some(ClusterSpec {
        node_id: "solo".into(),
        forward_url: Some("http://127.0.0.1:8000/".parse().unwrap()),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        advertise: Some("127.0.0.1:0".into()),
        public_url: None,
        state_dir: Some(state_dir.clone()),
        peers: Vec::new(),
        tls: Some(tls),
        allow_even_members: false,
    });
    config.leases = vec![LeaseSpec {
        name: "orders".into(),
        backend: LeaseBackend::Peers,
        ttl: TTL,
        renew_every: Duration::from_millis(80),
        max_drift: 1.0,
        on_follower: OnFollower::Forward,
        wait: Duration::ZERO,
        require_healthy: None,
    }];
    Setup {
        config,
        state_dir,
        _dir: dir,
    }
}

async fn start(config: &Config, metrics: &Metrics) -> Leases {
    Leases::start(config, &LeaseMetrics::new(metrics).unwrap())
        .await
        .unwrap()
}

/// Waits (≤ 5 s) until lease `orders` is held with a token other than
/// `not`; returns the view.
async fn until_holding(leases: &Leases, not: Option<u64>) -> Arc<LeaseView> {
    let lease = leases.get("orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = lease.view();
        if view.role() == Role::Holder && view.token != not {
            return view;
        }
        assert!(Instant::now() < deadline, "no new tenure: {view:?}");
        lease.wait_for_change_since(&view, deadline).await;
    }
}

fn errors(metrics: &Metrics) -> f64 {
    let text = String::from_utf8(metrics.render()).unwrap();
    let line = r#"breakwater_lease_backend_errors_total{backend="peers",lease="orders"} "#;
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn a_lone_member_bootstraps_holds_releases_and_takes_a_greater_token() {
    let s = setup();
    let metrics = Metrics::new();
    let leases = start(&s.config, &metrics).await;
    let started = Instant::now();
    let first = until_holding(&leases, None).await;
    // Amnesiac on its first start: silent for one ttl.
    assert!(started.elapsed() >= TTL - Duration::from_millis(20));
    let token = first.token.unwrap();
    let lease = leases.get("orders").unwrap();
    let now = Instant::now();
    let json = Leases::to_json(&lease.view(), lease, now);
    assert_eq!(json["backend"], "peers");
    assert_eq!(json["am_holder"], true);
    let details = &json["details"];
    assert_eq!(details["members"], serde_json::json!(["solo"]));
    assert_eq!(details["majority"], 1);
    assert_eq!(details["amnesiac"], false);
    assert!(details["promised"].as_u64().unwrap() >= token, "{details}");
    assert!(details["ballot"].as_u64().unwrap() >= token, "{details}");
    assert_eq!(details["peers"], serde_json::json!([]));
    // Renewals keep the token and stay within D of their round.
    tokio::time::sleep(TTL).await;
    let renewed = lease.view();
    assert_eq!(renewed.token, Some(token));
    let usable = crate::lease::validity::usable(TTL, 1.0);
    assert!(renewed.valid_until.unwrap() <= Instant::now() + usable);
    assert!(s.state_dir.join("peers-orders.state").exists());

    lease.release().await;
    assert_eq!(lease.view().role(), Role::Unknown);
    let released = Instant::now();
    let again = until_holding(&leases, Some(token)).await;
    assert!(
        released.elapsed() >= TTL - Duration::from_millis(20),
        "one ttl off"
    );
    assert!(again.token.unwrap() > token);
    leases.shutdown_all().await;
    assert_eq!(lease.view().role(), Role::Unknown);
    assert_eq!(errors(&metrics), 0.0);
}

#[tokio::test]
async fn a_restart_with_the_state_file_continues_above_it_and_a_corrupt_one_recovers() {
    let s = setup();
    let metrics = Metrics::new();
    let leases = start(&s.config, &metrics).await;
    let first = until_holding(&leases, None).await.token.unwrap();
    leases.shutdown_all().await;

    let leases = start(&s.config, &metrics).await;
    let second = until_holding(&leases, None).await.token.unwrap();
    assert!(second > first, "{second} > {first}");
    let lease = leases.get("orders").unwrap();
    let json = Leases::to_json(&lease.view(), lease, Instant::now());
    assert!(json["details"]["promised"].as_u64().unwrap() >= second);
    leases.shutdown_all().await;

    std::fs::write(s.state_dir.join("peers-orders.state"), b"garbage").unwrap();
    let leases = start(&s.config, &metrics).await;
    let lease = leases.get("orders").unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while lease.details().is_null() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(lease.details()["amnesiac"], true, "{}", lease.details());
    let floor_before = crate::lease::peers::ballot::wall_floor(crate::lease::clock::since_epoch(
        std::time::SystemTime::now(),
    ));
    let third = until_holding(&leases, None).await.token.unwrap();
    // With every member's state lost, tokens rest on the wall-clock floor
    // of ballots (§3.6) alone, which outruns rounds every 80 ms.
    let counter = crate::lease::peers::ballot::Ballot::from_u64(third)
        .unwrap()
        .counter();
    assert!(counter > floor_before, "{counter} > {floor_before}");
    assert!(third > second, "{third} > {second}");
    leases.shutdown_all().await;
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_written_never_holds_and_counts_errors() {
    let s = setup();
    let metrics = Metrics::new();
    let leases = start(&s.config, &metrics).await;
    // Gone after the start: every write fails.
    std::fs::remove_dir(&s.state_dir).unwrap();
    let lease = leases.get("orders").unwrap();
    let deadline = Instant::now() + 3 * TTL;
    while Instant::now() < deadline {
        assert_ne!(lease.view().role(), Role::Holder);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(errors(&metrics) >= 1.0);
    leases.shutdown_all().await;
}

#[tokio::test]
async fn setup_errors_name_what_is_wrong() {
    let metrics = Metrics::new();
    let lease_metrics = LeaseMetrics::new(&metrics).unwrap();
    let s = setup();
    let mut config = s.config.clone();
    let cluster = config.cluster.as_mut().unwrap();
    cluster.state_dir = Some(s.state_dir.join("missing"));
    let err = Leases::start(&config, &lease_metrics).await.err().unwrap();
    assert!(
        err.starts_with("lease orders: cluster.state_dir ") && err.ends_with("is not a directory"),
        "{err}"
    );

    let mut config = s.config.clone();
    let tls = config.cluster.as_mut().unwrap().tls.as_mut().unwrap();
    tls.ca = s.state_dir.join("nope.crt");
    let err = Leases::start(&config, &lease_metrics).await.err().unwrap();
    assert!(err.starts_with("cluster.tls.ca: "), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = s.config.clone();
    let addr = taken.local_addr().unwrap();
    config.cluster.as_mut().unwrap().listen = Some(addr);
    let err = Leases::start(&config, &lease_metrics).await.err().unwrap();
    assert!(
        err.starts_with(&format!("cannot bind cluster.listen {addr}: ")),
        "{err}"
    );
}
