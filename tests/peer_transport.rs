//! The peer transport over real sockets on 127.0.0.1: frames both ways
//! between members, every way a connection is refused (another CA, a
//! certificate naming no member, another member list, garbage, silence, an
//! oversized frame), and that no peer holds up the others: a dead one, one
//! that stops reading, one that restarts. Certificates are made here with
//! rcgen; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use breakwater::config::{Peer, PeerTls};
use breakwater::lease::peers::members::Members;
use breakwater::lease::peers::messages::{self, Envelope, Hello, Message};
use breakwater::lease::peers::transport::frame::{read_frame, write_frame};
use breakwater::lease::peers::transport::{
    message_kind, opaque, Options, PeerMetrics, Received, Tcp, Transport, TransportConfig,
    TransportHandle, PROTOCOL_VERSION,
};
use breakwater::metrics::Metrics;
use breakwater::tls::PeerTlsConfig;
use common::pki::Pki;
use common::{eventually, metric, parse_metrics, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

// ---- Nodes ---------------------------------------------------------------------

/// Short timers, so failures and recoveries show within a test's patience;
/// any payload passes, so tests can send plain bytes.
fn options() -> Options {
    Options {
        classify: opaque,
        heartbeat_every: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_millis(300),
        backoff_first: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        ..Options::default()
    }
}

/// A running transport with its inbox and its own metrics registry.
struct Node {
    handle: TransportHandle,
    inbox: mpsc::Receiver<Received>,
    metrics: Metrics,
    addr: SocketAddr,
}

impl Node {
    /// Starts node `me` on `listener` with `peers` as the other members.
    fn start(me: &str, tls: &PeerTls, peers: &[(&str, SocketAddr)], listener: TcpListener) -> Self {
        Self::start_with(me, tls, peers, listener, options())
    }

    fn start_with(
        me: &str,
        tls: &PeerTls,
        peers: &[(&str, SocketAddr)],
        listener: TcpListener,
        options: Options,
    ) -> Self {
        let ids: Vec<String> = peers.iter().map(|(id, _)| (*id).to_owned()).collect();
        let tls = PeerTlsConfig::load(tls, me, &ids).expect("peer TLS loads");
        let metrics = Metrics::new();
        let peer_metrics = PeerMetrics::new(&metrics).expect("families register");
        let addr = listener.local_addr().expect("bound");
        let config = TransportConfig {
            me: me.to_owned(),
            peers: peers
                .iter()
                .map(|(id, addr)| Peer {
                    id: (*id).to_owned(),
                    address: addr.to_string(),
                })
                .collect(),
            tls: Arc::new(tls),
            options,
        };
        let (handle, inbox) = Transport::start(config, Tcp, listener, peer_metrics);
        assert_eq!(handle.local_addr(), Some(addr));
        Self {
            handle,
            inbox,
            metrics,
            addr,
        }
    }

    /// The next frame handed up, within the test's patience.
    async fn recv(&mut self) -> (String, Vec<u8>) {
        within("a frame arrives", self.inbox.recv())
            .await
            .expect("the transport is running")
    }

    /// The value of `name{labels}` (exact label set), 0 when absent.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = String::from_utf8(self.metrics.render()).expect("UTF-8 metrics");
        metric(&parse_metrics(&text), name, labels).unwrap_or(0.0)
    }

    /// Waits until `name{labels}` is at least `min`.
    async fn metric_reaches(&self, name: &str, labels: &[(&str, &str)], min: f64) {
        eventually(&format!("{name}{labels:?} >= {min}"), || async {
            (self.metric(name, labels) >= min).then_some(())
        })
        .await;
    }

    /// Waits until this node's connection to `peer` is up.
    async fn connected_to(&self, peer: &str) {
        eventually(&format!("connected to {peer}"), || async {
            self.handle
                .reachability()
                .iter()
                .any(|p| p.id == peer && p.connected)
                .then_some(())
        })
        .await;
    }
}

/// The address `listener` is bound to.
fn addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().expect("bound")
}

/// Peer TLS for a hand-made node `me` that accepts `members`.
fn raw_tls(pki: &Pki, me: &str, members: &[&str]) -> PeerTlsConfig {
    let members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
    PeerTlsConfig::load(&pki.node(me), me, &members).expect("peer TLS loads")
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// An address where nothing listens: bound, then closed.
async fn dead_address() -> SocketAddr {
    listener().await.local_addr().expect("bound")
}

/// Starts one node per id, each with all the others as members.
async fn cluster(pki: &Pki, ids: &[&str]) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in ids {
        listeners.push(listener().await);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect();
    ids.iter()
        .zip(listeners)
        .map(|(me, listener)| {
            let peers: Vec<(&str, SocketAddr)> = ids
                .iter()
                .zip(&addrs)
                .filter(|(id, _)| *id != me)
                .map(|(id, addr)| (*id, *addr))
                .collect();
            Node::start(me, &pki.node(me), &peers, listener)
        })
        .collect()
}

const REJECTED: &str = "breakwater_peer_rejected_total";
const MESSAGES: &str = "breakwater_peer_messages_total";
const CONNECT_ERRORS: &str = "breakwater_peer_connect_errors_total";
const QUORUM: &str = "breakwater_peer_quorum";
const QUORUM_CHANGES: &str = "breakwater_peer_quorum_changes_total";

/// Asserts that nothing was handed up to `node` (give a refused peer's
/// frames time to arrive first).
fn assert_nothing_delivered(node: &mut Node) {
    assert!(
        matches!(node.inbox.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "a frame was delivered"
    );
}

/// A hand-made peer connection to `to`: TLS as `me`, then our Hello with
/// `digest`; returns the stream after reading the other side's Hello.
async fn raw_peer(
    tls: &PeerTlsConfig,
    me: &str,
    to: (&str, SocketAddr),
    digest: u64,
) -> breakwater::tls::PeerStream<TcpStream> {
    let tcp = TcpStream::connect(to.1).await.expect("connect");
    let mut stream = tls.connect(tcp, to.0).await.expect("TLS");
    write_frame(&mut stream, &hello(me, digest))
        .await
        .expect("send Hello");
    let theirs = read_frame(&mut stream).await.expect("a Hello back");
    match messages::decode(&theirs) {
        Ok(Envelope::Hello(hello)) => assert_eq!(hello.node_id, to.0),
        other => panic!("not a Hello: {other:?}"),
    }
    stream
}

/// The encoded Hello of node `me` with member digest `digest`.
fn hello(me: &str, digest: u64) -> Vec<u8> {
    messages::encode(&Envelope::Hello(Hello {
        node_id: me.to_owned(),
        members_digest: digest,
        version: PROTOCOL_VERSION,
    }))
    .expect("encodes")
}

/// The member digest of cluster `a`, `b`, `c`.
fn abc_digest() -> u64 {
    Members::new("a", ["b", "c"]).expect("members").digest()
}

// ---- Exchange ------------------------------------------------------------------

#[tokio::test]
async fn three_members_exchange_frames_tagged_with_the_sender() {
    let pki = Pki::new("peers");
    let mut nodes = cluster(&pki, &["a", "b", "c"]).await;
    for node in &nodes {
        node.handle
            .broadcast(format!("hello from {}", node.handle.me()).into_bytes());
    }
    for node in &mut nodes {
        let me = node.handle.me().to_owned();
        let mut from = Vec::new();
        for _ in 0..2 {
            let (peer, frame) = node.recv().await;
            assert_eq!(frame, format!("hello from {peer}").into_bytes());
            from.push(peer);
        }
        from.sort();
        let others: Vec<String> = ["a", "b", "c"]
            .iter()
            .filter(|id| **id != me)
            .map(|id| (*id).to_owned())
            .collect();
        assert_eq!(from, others, "at {me}");
    }
    nodes[0].handle.send("c", b"only for c".to_vec());
    assert_eq!(
        nodes[2].recv().await,
        ("a".to_owned(), b"only for c".to_vec())
    );

    // Heartbeats give every link a round trip, both directions are up.
    let a = &nodes[0];
    eventually("a knows its round trips", || async {
        let peers = a.handle.reachability();
        peers
            .iter()
            .all(|p| p.connected && p.inbound && p.last_rtt.is_some())
            .then_some(())
    })
    .await;
    let labels = [
        ("peer", "c"),
        ("direction", "sent"),
        ("type", "frame"),
        ("result", "ok"),
    ];
    assert_eq!(a.handle.members_digest(), abc_digest());
    a.metric_reaches(MESSAGES, &labels, 2.0).await;
    assert_eq!(a.metric(MESSAGES, &labels), 2.0);
    assert_eq!(a.metric("breakwater_peer_connected", &[("peer", "b")]), 1.0);
    assert!(a.metric("breakwater_peer_rtt_seconds_count", &[("peer", "b")]) >= 1.0);
    assert_eq!(a.metric(REJECTED, &[("reason", "hello_members")]), 0.0);
}

// ---- Refusals ------------------------------------------------------------------

#[tokio::test]
async fn a_peer_certified_by_another_ca_is_refused() {
    let (pki, rogue_ca) = (Pki::new("peers"), Pki::new("rogue"));
    let (la, lb) = (listener().await, listener().await);
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let mut a = Node::start("a", &pki.node("a"), &[("b", b_addr)], la);
    // It trusts our CA too, so only a can refuse it.
    let mut tls = rogue_ca.node("b");
    tls.ca = rogue_ca.bundle_with(&pki);
    let rogue = Node::start("b", &tls, &[("a", a_addr)], lb);
    rogue.handle.send("a", b"let me in".to_vec());
    a.metric_reaches(REJECTED, &[("reason", "bad_certificate")], 2.0)
        .await;
    rogue
        .metric_reaches(
            CONNECT_ERRORS,
            &[("peer", "a"), ("reason", "refused_by_peer")],
            1.0,
        )
        .await;
    assert_nothing_delivered(&mut a);
    assert!(!a.handle.reachability()[0].inbound);
}

#[tokio::test]
async fn a_peer_whose_certificate_names_no_member_is_refused() {
    let pki = Pki::new("peers");
    let (la, lm) = (listener().await, listener().await);
    let a_addr = addr(&la);
    let dead = dead_address().await;
    let mut a = Node::start("a", &pki.node("a"), &[("b", dead)], la);
    // Certified by the right CA, but not a member of a's cluster.
    let mallory = Node::start("mallory", &pki.node("mallory"), &[("a", a_addr)], lm);
    mallory.handle.send("a", b"from b, honestly".to_vec());
    a.metric_reaches(REJECTED, &[("reason", "unknown_peer")], 2.0)
        .await;
    assert_nothing_delivered(&mut a);
}

#[tokio::test]
async fn a_hello_with_another_member_list_is_refused() {
    let pki = Pki::new("peers");
    let (la, lb) = (listener().await, listener().await);
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let dead = dead_address().await;
    let mut a = Node::start("a", &pki.node("a"), &[("b", b_addr)], la);
    // b believes in a third member, x.
    let b = Node::start("b", &pki.node("b"), &[("a", a_addr), ("x", dead)], lb);
    assert_ne!(a.handle.members_digest(), b.handle.members_digest());
    b.handle.send("a", b"prepare".to_vec());
    a.metric_reaches(REJECTED, &[("reason", "hello_members")], 2.0)
        .await;
    b.metric_reaches(REJECTED, &[("reason", "hello_members")], 2.0)
        .await;
    assert_nothing_delivered(&mut a);
    assert!(a.handle.reachability().iter().all(|p| !p.connected));
}

#[tokio::test]
async fn garbage_and_silence_are_refused_and_harm_no_one() {
    let pki = Pki::new("peers");
    let options = Options {
        handshake_timeout: Duration::from_millis(300),
        ..options()
    };
    let (la, lb) = (listener().await, listener().await);
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let mut a = Node::start_with("a", &pki.node("a"), &[("b", b_addr)], la, options.clone());

    let mut garbage = TcpStream::connect(a_addr).await.expect("connect to a");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // a answers with an alert at most, then closes.
    let mut sink = Vec::new();
    within(
        "a closes the garbage connection",
        garbage.read_to_end(&mut sink),
    )
    .await
    .ok();
    a.metric_reaches(REJECTED, &[("reason", "not_tls")], 1.0)
        .await;

    let mut silent = TcpStream::connect(a_addr).await.expect("connect to a");
    let started = Instant::now();
    let closed = within("a closes the silent connection", silent.read(&mut [0u8; 1])).await;
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    a.metric_reaches(REJECTED, &[("reason", "timeout")], 1.0)
        .await;

    let b = Node::start_with("b", &pki.node("b"), &[("a", a_addr)], lb, options);
    b.handle.send("a", b"still here".to_vec());
    assert_eq!(a.recv().await, ("b".to_owned(), b"still here".to_vec()));
}

#[tokio::test]
async fn an_oversized_frame_closes_that_connection_only() {
    let pki = Pki::new("peers");
    let (la, lc) = (listener().await, listener().await);
    let (a_addr, c_addr) = (addr(&la), addr(&lc));
    let dead = dead_address().await;
    let mut a = Node::start("a", &pki.node("a"), &[("b", dead), ("c", c_addr)], la);
    let c = Node::start("c", &pki.node("c"), &[("a", a_addr), ("b", dead)], lc);

    let b_tls = raw_tls(&pki, "b", &["a", "c"]);
    let mut b = raw_peer(&b_tls, "b", ("a", a_addr), abc_digest()).await;
    // The payload may claim anything; the frame is b's.
    write_frame(&mut b, b"from c, really").await.expect("write");
    assert_eq!(a.recv().await, ("b".to_owned(), b"from c, really".to_vec()));

    b.write_all(&(16u32 << 20).to_be_bytes())
        .await
        .expect("write");
    b.flush().await.expect("flush");
    let mut rest = Vec::new();
    within("a closes b's connection", b.read_to_end(&mut rest))
        .await
        .ok();
    a.metric_reaches(
        MESSAGES,
        &[
            ("peer", "b"),
            ("direction", "received"),
            ("type", "unknown"),
            ("result", "oversized"),
        ],
        1.0,
    )
    .await;

    c.handle.send("a", b"unaffected".to_vec());
    assert_eq!(a.recv().await, ("c".to_owned(), b"unaffected".to_vec()));
}

#[tokio::test]
async fn a_newer_connection_from_a_peer_replaces_the_older() {
    let pki = Pki::new("peers");
    let la = listener().await;
    let a_addr = addr(&la);
    let dead = dead_address().await;
    let mut a = Node::start("a", &pki.node("a"), &[("b", dead), ("c", dead)], la);
    let b_tls = raw_tls(&pki, "b", &["a", "c"]);
    let mut old = raw_peer(&b_tls, "b", ("a", a_addr), abc_digest()).await;
    let mut new = raw_peer(&b_tls, "b", ("a", a_addr), abc_digest()).await;
    // Left over from before a restart, say: a closes it.
    let mut rest = Vec::new();
    within("a closes the older connection", old.read_to_end(&mut rest))
        .await
        .ok();
    write_frame(&mut new, b"on the new one")
        .await
        .expect("write");
    assert_eq!(a.recv().await, ("b".to_owned(), b"on the new one".to_vec()));
    assert!(a.handle.reachability()[0].inbound);
}

#[tokio::test]
async fn frames_that_are_not_messages_are_counted_and_dropped() {
    let pki = Pki::new("peers");
    let la = listener().await;
    let a_addr = addr(&la);
    let dead = dead_address().await;
    let codec = Options {
        classify: message_kind,
        ..options()
    };
    let mut a = Node::start_with("a", &pki.node("a"), &[("b", dead), ("c", dead)], la, codec);
    let b_tls = raw_tls(&pki, "b", &["a", "c"]);
    let mut b = raw_peer(&b_tls, "b", ("a", a_addr), abc_digest()).await;
    let sync = messages::encode(&Envelope::Lease {
        lease: "orders".into(),
        message: Message::Sync,
    })
    .expect("encodes");
    // Not an envelope; a type from a later version; a second Hello.
    for junk in [
        b"garbage".to_vec(),
        vec![messages::WIRE_VERSION, 0x7f],
        hello("b", abc_digest()),
    ] {
        write_frame(&mut b, &junk).await.expect("write");
    }
    write_frame(&mut b, &sync).await.expect("write");
    // The connection survives them, and the next message arrives.
    assert_eq!(a.recv().await, ("b".to_owned(), sync));
    let received = |kind, result| {
        a.metric(
            MESSAGES,
            &[
                ("peer", "b"),
                ("direction", "received"),
                ("type", kind),
                ("result", result),
            ],
        )
    };
    assert_eq!(received("unknown", "malformed"), 3.0);
    assert_eq!(received("sync", "ok"), 1.0);

    // Sending is held to the same rule.
    a.handle.send("c", b"garbage".to_vec());
    a.handle.send("c", Vec::new());
    let sent = [
        ("peer", "c"),
        ("direction", "sent"),
        ("type", "unknown"),
        ("result", "malformed"),
    ];
    assert_eq!(a.metric(MESSAGES, &sent), 2.0);
    assert_eq!(a.handle.reachability()[1].queued, 0);
}

// ---- Nobody waits on a peer ----------------------------------------------------

#[tokio::test]
async fn a_dead_peer_does_not_hold_up_the_others() {
    let pki = Pki::new("peers");
    let (la, lb) = (listener().await, listener().await);
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let dead = dead_address().await;
    let a = Node::start("a", &pki.node("a"), &[("b", b_addr), ("d", dead)], la);
    let mut b = Node::start("b", &pki.node("b"), &[("a", a_addr), ("d", dead)], lb);
    a.connected_to("b").await;
    // Two of three connected: a majority, with d dead.
    a.metric_reaches(QUORUM_CHANGES, &[("to", "regained")], 1.0)
        .await;
    assert_eq!(a.metric(QUORUM, &[]), 1.0);

    let started = Instant::now();
    for i in 0..50u32 {
        a.handle.broadcast(i.to_be_bytes().to_vec());
    }
    for i in 50..80u32 {
        a.handle.send("d", i.to_be_bytes().to_vec());
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "sending took {:?}",
        started.elapsed()
    );
    for i in 0..50u32 {
        assert_eq!(b.recv().await, ("a".to_owned(), i.to_be_bytes().to_vec()));
    }
    // d's queue holds the newest 64 of its 80 frames.
    let d = a
        .handle
        .reachability()
        .into_iter()
        .find(|p| p.id == "d")
        .expect("d is a peer");
    assert!(!d.connected);
    assert_eq!(d.queued, 64);
    let dropped = [
        ("peer", "d"),
        ("direction", "sent"),
        ("type", "frame"),
        ("result", "dropped"),
    ];
    assert_eq!(a.metric(MESSAGES, &dropped), 16.0);
    a.metric_reaches(
        CONNECT_ERRORS,
        &[("peer", "d"), ("reason", "connect_failed")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_does_not_hold_up_the_others() {
    let pki = Pki::new("peers");
    let (la, lb, lc) = (listener().await, listener().await, listener().await);
    let (a_addr, b_addr, c_addr) = (addr(&la), addr(&lb), addr(&lc));
    let a = Node::start("a", &pki.node("a"), &[("b", b_addr), ("c", c_addr)], la);
    let mut c = Node::start("c", &pki.node("c"), &[("a", a_addr), ("b", b_addr)], lc);

    // b completes TLS and the Hello, then never reads again.
    let b_tls = Arc::new(raw_tls(&pki, "b", &["a", "c"]));
    let hello = hello("b", abc_digest());
    let from_a = Arc::new(AtomicUsize::new(0));
    let stalled = tokio::spawn({
        let from_a = from_a.clone();
        async move {
            let mut held = Vec::new();
            // Bounded: a redials b after each write timeout.
            for _ in 0..50 {
                let Ok((tcp, _)) = lb.accept().await else {
                    break;
                };
                let Ok((mut stream, id)) = b_tls.accept(tcp).await else {
                    continue;
                };
                let _ = write_frame(&mut stream, &hello).await;
                if id == "a" {
                    from_a.fetch_add(1, Ordering::Relaxed);
                }
                held.push(stream);
            }
        }
    });
    a.connected_to("b").await;
    a.connected_to("c").await;

    let big = vec![0xAB; 60 * 1024];
    let started = Instant::now();
    for i in 0..300u32 {
        a.handle.send("b", big.clone());
        if i % 10 == 0 {
            a.handle.send("c", i.to_be_bytes().to_vec());
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "sending took {:?}",
        started.elapsed()
    );
    for i in (0..300u32).step_by(10) {
        assert_eq!(c.recv().await, ("a".to_owned(), i.to_be_bytes().to_vec()));
    }
    let dropped = [
        ("peer", "b"),
        ("direction", "sent"),
        ("type", "frame"),
        ("result", "dropped"),
    ];
    a.metric_reaches(MESSAGES, &dropped, 100.0).await;

    // Once the socket buffers are full, a write times out and a redials.
    eventually("a gives up on the stalled connection and redials", || {
        for _ in 0..8 {
            a.handle.send("b", big.clone());
        }
        let dials = from_a.load(Ordering::Relaxed);
        async move { (dials >= 2).then_some(()) }
    })
    .await;
    stalled.abort();
}

#[tokio::test]
async fn a_restarted_peer_is_reached_again() {
    let pki = Pki::new("peers");
    let (la, lb) = (listener().await, listener().await);
    let (a_addr, b_addr) = (addr(&la), addr(&lb));
    let b_tls = pki.node("b");
    let a = Node::start("a", &pki.node("a"), &[("b", b_addr)], la);
    let mut b = Node::start("b", &b_tls, &[("a", a_addr)], lb);
    a.handle.send("b", b"before".to_vec());
    assert_eq!(b.recv().await, ("a".to_owned(), b"before".to_vec()));
    // Of two members, both are needed.
    a.metric_reaches(QUORUM_CHANGES, &[("to", "regained")], 1.0)
        .await;
    assert_eq!(a.metric(QUORUM, &[]), 1.0);

    b.handle.shutdown().await;
    assert_eq!(within("b's inbox ends", b.inbox.recv()).await, None);
    a.metric_reaches(QUORUM_CHANGES, &[("to", "lost")], 1.0)
        .await;
    assert_eq!(a.metric(QUORUM, &[]), 0.0);
    let lb = TcpListener::bind(b.addr).await.expect("b's port again");
    let mut b = Node::start("b", &b_tls, &[("a", a_addr)], lb);

    // Frames sent while b was away may be lost; keep sending until one lands.
    let mut n = 0u32;
    let (from, frame) = eventually("a reaches the restarted b", || {
        n += 1;
        a.handle.send("b", n.to_be_bytes().to_vec());
        let got = b.inbox.try_recv().ok();
        async move { got }
    })
    .await;
    assert_eq!(from, "a");
    assert_eq!(frame.len(), 4);
    a.connected_to("b").await;
    a.metric_reaches(QUORUM_CHANGES, &[("to", "regained")], 2.0)
        .await;
    assert_eq!(a.metric(QUORUM, &[]), 1.0);
    assert_eq!(a.metric(QUORUM_CHANGES, &[("to", "lost")]), 1.0);
}
