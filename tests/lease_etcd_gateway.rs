//! The etcd lease backend against a real etcd on 127.0.0.1 (see
//! `common/etcd.rs`): first the gateway client's calls, then `EtcdBackend`
//! driven directly through a hand-built `BackendCtx` (no proxy), with etcd
//! released, revoked, killed, restarted and paused under it. Real time,
//! short TTLs (2 s; the test etcd's minimum is 1 s).

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::config::{EtcdSpec, LeaseBackend, LeaseSpec, OnFollower};
use breakwater::lease::etcd::gateway::{Acquire, Error, Gateway, WatchEvent};
use breakwater::lease::etcd::EtcdBackend;
use breakwater::lease::{
    validity, Backend, BackendCtx, Command, LeaseMetrics, LeaseView, NodeIdentity, Publisher, Role,
    TokioClock,
};
use breakwater::metrics::Metrics;
use bytes::Bytes;
use common::etcd::Etcd;
use common::{eventually, within};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(600);
const PREFIX: &str = "/breakwater-test/leases/";

fn gateway(etcd: &Etcd) -> Gateway {
    Gateway::new(&etcd.spec(PREFIX), TIMEOUT)
}

fn key(name: &str) -> Vec<u8> {
    format!("{PREFIX}{name}").into_bytes()
}

// --- the gateway client ------------------------------------------------------

#[tokio::test]
async fn grant_keep_alive_and_revoke_round_trip() {
    let etcd = Etcd::start().await;
    let gw = gateway(&etcd);
    let grant = gw.grant(2).await.expect("grant");
    assert_eq!(grant.ttl, Duration::from_secs(2));
    assert_ne!(grant.id, 0);
    let ttl = gw.keep_alive(grant.id).await.expect("keep-alive");
    assert_eq!(ttl, 2);
    gw.revoke(grant.id).await.expect("revoke");
    assert!(gw.keep_alive(grant.id).await.expect("keep-alive") <= 0);
    gw.revoke(grant.id)
        .await
        .expect("a second revoke is no error");
    // etcd raises a TTL below its minimum rather than refusing it.
    let short = gw.grant(0).await.expect("grant");
    assert!(short.ttl >= Duration::from_secs(1), "{short:?}");
}

#[tokio::test]
async fn the_txn_takes_a_free_key_once_and_then_names_its_holder() {
    let etcd = Etcd::start().await;
    let gw = gateway(&etcd);
    let (a, b) = (
        gw.grant(5).await.expect("grant"),
        gw.grant(5).await.expect("grant"),
    );
    let k = key("txn");
    let Acquire::Won { token } = gw.acquire(&k, b"value-a", a.id).await.expect("txn") else {
        panic!("a free key is won");
    };
    match gw.acquire(&k, b"value-b", b.id).await.expect("txn") {
        Acquire::Held { revision, holder } => {
            assert_eq!(holder.create_revision, token);
            assert_eq!(holder.mod_revision, token);
            assert_eq!(holder.lease, a.id);
            assert_eq!(holder.value, b"value-a");
            assert_eq!(holder.key, k);
            assert!(revision >= token);
        }
        other => panic!("a held key is not won again: {other:?}"),
    }
    let range = gw.range(&k).await.expect("range");
    assert_eq!(range.kv.expect("key").create_revision, token);
    gw.revoke(a.id).await.expect("revoke");
    let range = gw.range(&k).await.expect("range");
    assert_eq!(range.kv, None, "revoking the lease deletes its key");
    assert!(range.revision > token);
    let Acquire::Won { token: next } = gw.acquire(&k, b"value-b", b.id).await.expect("txn") else {
        panic!("the key is free again");
    };
    assert!(next > token, "{next} > {token}");
}

#[tokio::test]
async fn a_watch_reports_puts_and_the_delete_of_its_key() {
    let etcd = Etcd::start().await;
    let gw = gateway(&etcd);
    let k = key("watched");
    let start = gw.range(&k).await.expect("range").revision;
    let mut watch = gw.watch(&k, start + 1).await.expect("watch");
    let lease = gw.grant(5).await.expect("grant");
    let Acquire::Won { token } = gw.acquire(&k, b"{}", lease.id).await.expect("txn") else {
        panic!("free key");
    };
    // Another key's events are not reported.
    let other = gw.grant(5).await.expect("grant");
    gw.acquire(&key("other"), b"x", other.id)
        .await
        .expect("txn");
    gw.revoke(lease.id).await.expect("revoke");
    match within("put event", watch.next()).await.expect("event") {
        WatchEvent::Put(kv) => {
            assert_eq!((kv.create_revision, kv.lease), (token, lease.id));
        }
        other => panic!("expected the put, got {other:?}"),
    }
    match within("delete event", watch.next()).await.expect("event") {
        WatchEvent::Delete { mod_revision } => assert!(mod_revision > token),
        other => panic!("expected the delete, got {other:?}"),
    }
    // Events that happened before the watch began are replayed from its start.
    let mut replay = gw.watch(&k, start + 1).await.expect("watch");
    assert!(matches!(
        within("replayed put", replay.next()).await,
        Ok(WatchEvent::Put(_))
    ));
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_an_error() {
    let etcd = Etcd::start().await;
    let gw = gateway(&etcd);
    let k = key("compacted");
    for _ in 0..3 {
        let lease = gw.grant(5).await.expect("grant");
        gw.acquire(&k, b"{}", lease.id).await.expect("txn");
        gw.revoke(lease.id).await.expect("revoke");
    }
    let now = gw.range(&k).await.expect("range").revision;
    etcd.call(
        "/v3/kv/compaction",
        serde_json::json!({"revision": now.to_string(), "physical": true}),
    )
    .await;
    // etcd confirms the watch, then cancels it in a second message.
    let mut watch = gw.watch(&k, 2).await.expect("watch created");
    match within("the cancellation", watch.next()).await {
        Err(Error::Compacted {
            compact_revision, ..
        }) => assert_eq!(compact_revision, now),
        other => panic!("expected a compaction error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dead_endpoint_is_skipped_for_the_next() {
    let etcd = Etcd::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/", closed.local_addr().expect("addr"));
    drop(closed);
    let spec = EtcdSpec {
        endpoints: vec![
            dead.parse().expect("uri"),
            format!("{}/", etcd.endpoint()).parse().expect("uri"),
        ],
        ..etcd.spec(PREFIX)
    };
    let gw = Gateway::new(&spec, TIMEOUT);
    for _ in 0..3 {
        gw.range(&key("x"))
            .await
            .expect("the live endpoint answers");
    }
    let only_dead = EtcdSpec {
        endpoints: vec![dead.parse().expect("uri")],
        ..etcd.spec(PREFIX)
    };
    let err = Gateway::new(&only_dead, TIMEOUT).range(&key("x")).await;
    assert!(matches!(err, Err(Error::Transport { .. })), "{err:?}");
}

#[tokio::test]
async fn credentials_get_a_token_and_a_rejected_token_is_renewed() {
    let mut etcd = Etcd::start().await;
    etcd.enable_auth().await;
    let anonymous = gateway(&etcd);
    let err = anonymous.range(&key("secret")).await;
    assert!(matches!(&err, Err(e) if e.is_auth()), "{err:?}");
    let plain = etcd.spec(PREFIX);
    let with = |password: &str| EtcdSpec {
        username: Some("root".into()),
        password: Some(password.into()),
        ..plain.clone()
    };
    let gw = Gateway::new(&with("pw"), TIMEOUT);
    let lease = gw.grant(5).await.expect("grant");
    assert!(matches!(
        gw.acquire(&key("secret"), b"{}", lease.id).await,
        Ok(Acquire::Won { .. })
    ));
    let mut watch = gw
        .watch(&key("secret"), 1)
        .await
        .expect("an authorized watch");
    assert!(matches!(
        within("put", watch.next()).await,
        Ok(WatchEvent::Put(_))
    ));
    // etcd's simple tokens live in memory: a restart invalidates ours.
    etcd.restart().await;
    assert!(gw
        .range(&key("secret"))
        .await
        .expect("re-authenticated")
        .kv
        .is_some());
    assert!(gw.watch(&key("secret"), 1).await.is_ok());
    let wrong = Gateway::new(&with("nope"), TIMEOUT)
        .range(&key("secret"))
        .await;
    assert!(matches!(wrong, Err(Error::Etcd { .. })), "{wrong:?}");
}

/// What the fake etcd answers.
#[derive(Clone, Copy)]
enum Garbage {
    NotJson,
    WrongShapes,
    HtmlError,
    Huge,
    Silent,
    CutStream,
}

/// A hyper server on 127.0.0.1:0 that answers every gateway call wrongly.
async fn garbage_etcd(kind: Garbage) -> EtcdSpec {
    let addr = common::upstream(
        move |req: http::Request<hyper::body::Incoming>| async move {
            let path = req.uri().path().to_owned();
            let body = |s: &'static str| common::full(s);
            let res = |status: u16, b: common::TestBody| {
                http::Response::builder()
                    .status(status)
                    .body(b)
                    .expect("response")
            };
            match kind {
                Garbage::NotJson => res(200, body("garbage\n")),
                Garbage::WrongShapes => res(
                    200,
                    body(match path.as_str() {
                        "/v3/lease/grant" => r#"{"ID":"12","TTL":"-5"}"#,
                        "/v3/lease/keepalive" => r#"{"result":{"ID":"99","TTL":"5"}}"#,
                        "/v3/kv/txn" => r#"{"header":{},"succeeded":true}"#,
                        "/v3/kv/range" => r#"{"header":{"revision":"3"},"kvs":[{"key":"!!"}]}"#,
                        "/v3/watch" => r#"{"result":{"header":{"revision":"3"}}}"#,
                        _ => r#"[]"#,
                    }),
                ),
                Garbage::HtmlError => res(502, body("<html>bad gateway</html>")),
                Garbage::Huge => res(200, common::full(vec![b' '; 3 << 20])),
                Garbage::Silent => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    res(200, body("{}"))
                }
                Garbage::CutStream => {
                    let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
                        Bytes::from_static(b"{\"result\":{\"created\":true}}\n{\"result\":{\"ev"),
                    ))]);
                    res(
                        200,
                        StreamBody::new(frames)
                            .map_err(|never: Infallible| match never {})
                            .boxed(),
                    )
                }
            }
        },
    )
    .await;
    EtcdSpec {
        endpoints: vec![format!("http://{addr}/").parse().expect("uri")],
        prefix: PREFIX.into(),
        username: None,
        password: None,
    }
}

#[tokio::test]
async fn garbage_answers_are_errors_not_panics() {
    for kind in [
        Garbage::NotJson,
        Garbage::WrongShapes,
        Garbage::HtmlError,
        Garbage::Huge,
        Garbage::Silent,
        Garbage::CutStream,
    ] {
        let gw = Gateway::new(&garbage_etcd(kind).await, TIMEOUT);
        let k = key("g");
        let calls = async {
            let mut errors = vec![
                gw.grant(2).await.err(),
                gw.keep_alive(7).await.err(),
                gw.revoke(7).await.err(),
                gw.acquire(&k, b"{}", 7).await.err(),
                gw.range(&k).await.err(),
            ];
            let watch = match gw.watch(&k, 1).await {
                Ok(mut w) => w.next().await.err(),
                Err(e) => Some(e),
            };
            errors.push(watch);
            errors
        };
        let errors = within("garbage calls", calls).await;
        let names = ["grant", "keep_alive", "revoke", "acquire", "range", "watch"];
        for (name, err) in names.iter().zip(&errors) {
            assert!(err.is_some(), "{name} accepted garbage");
        }
        if let Garbage::Silent = kind {
            assert!(errors
                .iter()
                .flatten()
                .all(|e| matches!(e, Error::Timeout { .. })));
        }
    }
}

// --- EtcdBackend driven directly ----------------------------------------------

fn lease_spec(name: &str) -> LeaseSpec {
    LeaseSpec {
        name: name.into(),
        backend: LeaseBackend::Etcd,
        ttl: TTL,
        renew_every: RENEW,
        max_drift: 1.0,
        on_follower: OnFollower::Forward,
        wait: Duration::ZERO,
        require_healthy: None,
    }
}

/// One `EtcdBackend` task with its context built by hand.
struct Node {
    id: String,
    views: watch::Receiver<Arc<LeaseView>>,
    commands: mpsc::Sender<Command>,
    healthy: watch::Sender<bool>,
    errors: prometheus::IntCounter,
    task: JoinHandle<()>,
}

impl Node {
    fn start(etcd: &EtcdSpec, id: &str, lease: &str, healthy: bool) -> Node {
        let metrics = Metrics::new();
        let handles = LeaseMetrics::new(&metrics)
            .expect("lease metrics")
            .handles(lease, "etcd");
        let errors = handles.backend_errors.clone();
        let (publisher, _view, views) = Publisher::new(id, handles);
        let (commands, receiver) = mpsc::channel(8);
        let (health_tx, health_rx) = watch::channel(healthy);
        let node = NodeIdentity {
            node_id: id.into(),
            forward_url: Some(format!("http://{id}.test:8000/").parse().expect("uri")),
            public_url: None,
        };
        let ctx = BackendCtx {
            spec: lease_spec(lease),
            node: Arc::new(node),
            publisher,
            commands: receiver,
            healthy: health_rx,
            clock: Arc::new(TokioClock),
            errors: errors.clone(),
            details: Arc::default(),
        };
        let task = tokio::spawn(Box::new(EtcdBackend::new(etcd.clone())).run(ctx));
        Node {
            id: id.into(),
            views,
            commands,
            healthy: health_tx,
            errors,
            task,
        }
    }

    fn view(&self) -> Arc<LeaseView> {
        self.views.borrow().clone()
    }

    /// The token while this node may stamp now.
    fn stamping(&self) -> Option<u64> {
        let view = self.view();
        view.token.filter(|_| view.may_stamp(Instant::now()))
    }

    async fn command(&self, make: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, answered) = oneshot::channel();
        self.commands.send(make(done)).await.expect("task alive");
        within("the command's answer", answered)
            .await
            .expect("answered");
    }

    async fn release(&self) {
        self.command(|done| Command::Release { done }).await;
        assert_eq!(
            self.view().role(),
            Role::Unknown,
            "{}: no longer holds",
            self.id
        );
    }

    async fn shutdown(self) {
        self.command(|done| Command::Shutdown { done }).await;
        within("the task's end", self.task).await.expect("no panic");
    }
}

/// Waits until exactly one of `nodes` stamps; returns its index and token.
async fn holder_of(nodes: &[&Node]) -> (usize, u64) {
    eventually("one node holds", || async {
        let holding: Vec<_> = nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.stamping().map(|t| (i, t)))
            .collect();
        match holding[..] {
            [one] => Some(one),
            _ => None,
        }
    })
    .await
}

/// Samples the nodes' views every 2 ms and records any instant at which two
/// of them may stamp.
struct Exclusive {
    overlaps: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Exclusive {
    fn watch(nodes: &[&Node]) -> Exclusive {
        let views: Vec<_> = nodes.iter().map(|n| n.views.clone()).collect();
        let overlaps = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (overlaps.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let now = Instant::now();
                let stamping = views.iter().filter(|v| v.borrow().may_stamp(now)).count();
                if stamping > 1 {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Exclusive {
            overlaps,
            stop,
            task,
        }
    }

    async fn assert_never_overlapped(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler");
        assert_eq!(
            self.overlaps.load(Ordering::Relaxed),
            0,
            "two nodes stamped at once"
        );
    }
}

#[tokio::test]
async fn two_backends_on_one_key_exactly_one_holds() {
    let etcd = Etcd::start().await;
    let spec = etcd.spec(PREFIX);
    let (a, b) = (
        Node::start(&spec, "a", "one", true),
        Node::start(&spec, "b", "one", true),
    );
    let exclusive = Exclusive::watch(&[&a, &b]);
    let (i, token) = holder_of(&[&a, &b]).await;
    let (holder, follower) = if i == 0 { (&a, &b) } else { (&b, &a) };
    let seen = eventually("the follower names the holder", || async {
        let v = follower.view();
        (v.role() == Role::Follower).then_some(v)
    })
    .await;
    let named = seen.holder.as_ref().expect("holder");
    assert_eq!(named.node_id, holder.id);
    assert_eq!(
        named.forward_url.as_ref().map(ToString::to_string),
        Some(format!("http://{}.test:8000/", holder.id))
    );
    assert_eq!(seen.token, Some(token));
    // Several renewals later, the same tenure goes on.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(holder.stamping(), Some(token), "renewed without a break");
    assert_eq!(follower.stamping(), None);
    let value = gateway(&etcd)
        .range(&key("one"))
        .await
        .expect("range")
        .kv
        .expect("key");
    assert_eq!(value.create_revision, token);
    exclusive.assert_never_overlapped().await;
    assert_eq!(holder.errors.get(), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn tokens_strictly_increase_across_release_and_reacquire() {
    let etcd = Etcd::start().await;
    let spec = etcd.spec(PREFIX);
    let (a, b) = (
        Node::start(&spec, "a", "tokens", true),
        Node::start(&spec, "b", "tokens", true),
    );
    let nodes = [&a, &b];
    let exclusive = Exclusive::watch(&nodes);
    let (first, t1) = holder_of(&nodes).await;
    let released = Instant::now();
    nodes[first].release().await;
    let (second, t2) = holder_of(&nodes).await;
    assert_ne!(first, second, "the releaser takes nothing for one ttl");
    assert!(t2 > t1, "{t2} > {t1}");
    assert!(released.elapsed() < TTL, "taken over by revoke, not expiry");
    nodes[second].release().await;
    let (third, t3) = holder_of(&nodes).await;
    assert_eq!(third, first, "back to the first once its pause is over");
    assert!(t3 > t2, "{t3} > {t2}");
    assert!(
        released.elapsed() >= TTL,
        "not before one ttl after its release"
    );
    exclusive.assert_never_overlapped().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn revoking_the_holders_lease_ends_its_tenure_at_once() {
    let etcd = Etcd::start().await;
    let spec = etcd.spec(PREFIX);
    let (a, b) = (
        Node::start(&spec, "a", "revoked", true),
        Node::start(&spec, "b", "revoked", true),
    );
    let nodes = [&a, &b];
    let exclusive = Exclusive::watch(&nodes);
    let (first, t1) = holder_of(&nodes).await;
    let until = nodes[first].view().valid_until.expect("valid until");
    let gw = gateway(&etcd);
    let lease = gw
        .range(&key("revoked"))
        .await
        .expect("range")
        .kv
        .expect("key")
        .lease;
    gw.revoke(lease).await.expect("revoke");
    let stopped = eventually("the holder stops", || async {
        (nodes[first].stamping().is_none()).then(Instant::now)
    })
    .await;
    assert!(stopped < until, "stopped by the watch, before its deadline");
    let (second, t2) = holder_of(&nodes).await;
    assert_ne!(second, first, "the follower goes first");
    assert!(t2 > t1, "{t2} > {t1}");
    exclusive.assert_never_overlapped().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn etcd_killed_and_restarted_keeps_tokens_increasing() {
    let mut etcd = Etcd::start().await;
    let spec = etcd.spec(PREFIX);
    let (a, b) = (
        Node::start(&spec, "a", "restarts", true),
        Node::start(&spec, "b", "restarts", true),
    );
    let nodes = [&a, &b];
    let exclusive = Exclusive::watch(&nodes);
    let (mut holder, mut token) = holder_of(&nodes).await;
    for round in 0..2 {
        etcd.kill();
        etcd.restart().await;
        // Stay until the holder renews through the restarted etcd.
        let renewed_from = Instant::now();
        eventually("a renewal after the restart", || async {
            let v = nodes[holder].view();
            v.valid_until
                .filter(|u| *u > renewed_from + TTL / 2)
                .map(drop)
        })
        .await;
        nodes[holder].release().await;
        let (next, next_token) = holder_of(&nodes).await;
        assert!(next_token > token, "round {round}: {next_token} > {token}");
        (holder, token) = (next, next_token);
    }
    exclusive.assert_never_overlapped().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_paused_etcd_stops_the_holder_by_its_deadline_and_a_new_tenure_follows() {
    let etcd = Etcd::start().await;
    let spec = etcd.spec(PREFIX);
    let (a, b) = (
        Node::start(&spec, "a", "paused", true),
        Node::start(&spec, "b", "paused", true),
    );
    let nodes = [&a, &b];
    let exclusive = Exclusive::watch(&nodes);
    let (first, t1) = holder_of(&nodes).await;
    etcd.pause();
    let paused = Instant::now();
    // Nothing can renew now: the last grant was earned before `paused`.
    let limit = paused + validity::usable(TTL, 1.0);
    let last = nodes[first].view().valid_until.expect("valid until");
    assert!(last <= limit);
    let after = limit + Duration::from_millis(10);
    tokio::time::sleep_until(after).await;
    for node in nodes {
        assert!(
            !node.view().may_stamp(after),
            "{} stamps past its deadline",
            node.id
        );
    }
    eventually("the holder publishes that it stopped", || async {
        (nodes[first].view().role() != Role::Holder).then_some(())
    })
    .await;
    tokio::time::sleep_until(paused + TTL + Duration::from_millis(500)).await;
    assert!(nodes.iter().all(|n| n.stamping().is_none()));
    etcd.resume();
    let (_, t2) = holder_of(&nodes).await;
    assert!(t2 > t1, "a new tenure: {t2} > {t1}");
    assert!(nodes[first].errors.get() > 0, "the outage was counted");
    exclusive.assert_never_overlapped().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn health_gates_acquisition_and_a_holder_turning_unhealthy_steps_down() {
    let etcd = Etcd::start().await;
    let spec = etcd.spec(PREFIX);
    let gw = gateway(&etcd);
    let a = Node::start(&spec, "a", "health", false);
    tokio::time::sleep(TTL / 2).await;
    assert_eq!(a.view().role(), Role::Unknown);
    assert_eq!(gw.range(&key("health")).await.expect("range").kv, None);
    a.healthy.send_replace(true);
    let (_, t1) = holder_of(&[&a]).await;
    let b = Node::start(&spec, "b", "health", true);
    let exclusive = Exclusive::watch(&[&a, &b]);
    eventually("b follows", || async {
        (b.view().role() == Role::Follower).then_some(())
    })
    .await;
    a.healthy.send_replace(false);
    eventually("a steps down", || async {
        a.stamping().is_none().then_some(())
    })
    .await;
    let (i, t2) = holder_of(&[&a, &b]).await;
    assert_eq!(i, 1, "b took over");
    assert!(t2 > t1);
    a.healthy.send_replace(true);
    eventually("a follows b", || async {
        let v = a.view();
        (v.holder.as_ref().is_some_and(|h| h.node_id == "b")).then_some(())
    })
    .await;
    assert_eq!(b.stamping(), Some(t2));
    exclusive.assert_never_overlapped().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_deletes_the_key_and_ends_the_task() {
    let etcd = Etcd::start().await;
    let a = Node::start(&etcd.spec(PREFIX), "a", "bye", true);
    let (_, token) = holder_of(&[&a]).await;
    let gw = gateway(&etcd);
    let kv = gw.range(&key("bye")).await.expect("range").kv.expect("key");
    assert_eq!(kv.create_revision, token);
    assert_eq!(
        kv.value,
        br#"{"node":"a","forward_url":"http://a.test:8000/","public_url":null}"#
    );
    let views = a.views.clone();
    a.shutdown().await;
    assert_eq!(views.borrow().role(), Role::Unknown);
    assert_eq!(
        gw.range(&key("bye")).await.expect("range").kv,
        None,
        "revoked"
    );
}

#[tokio::test]
async fn a_garbage_etcd_counts_errors_and_never_holds() {
    for kind in [Garbage::NotJson, Garbage::WrongShapes, Garbage::Silent] {
        let spec = garbage_etcd(kind).await;
        let a = Node::start(&spec, "a", "garbage", true);
        let started = Instant::now();
        eventually("errors are counted", || async {
            (a.errors.get() >= 2).then_some(())
        })
        .await;
        assert_eq!(a.view().role(), Role::Unknown);
        // Backing off, not spinning: 100 ms doubling, a few errors per try.
        tokio::time::sleep_until(started + TTL).await;
        assert!(a.errors.get() <= 20, "{} errors in {TTL:?}", a.errors.get());
        a.shutdown().await;
    }
}
