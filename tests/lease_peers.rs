//! The `peers` lease backend end to end (LEASES.md §3, §6d): three real
//! `breakwater` processes ([`BinaryProxy`]) on 127.0.0.1 share lease
//! `orders` by PaxosLease over mutual TLS, in front of one "checker" app
//! that records the fencing token and arrival instant of every request.
//! Holders are released and SIGKILLed, killed nodes restarted on their state
//! dirs, and a node whose certificate is from another CA tries to join.
//!
//! Each node has its own listener (its `forward_url`), admin port, peer
//! port (`cluster.listen`), state dir and certificate (DNS SAN = its id,
//! from one rcgen CA). Ports are probed free before the processes start; a
//! port taken meanwhile means another try. ttl 2 s, renew_every 500 ms. A
//! cluster's first start takes about one ttl: every node is amnesiac and
//! bootstraps (§3.6). The failover figures are printed: run with
//! `--nocapture` to read them.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breakwater::config::PeerTls;
use common::lease_nodes::*;
use common::pki::Pki;
use common::*;
use http::StatusCode;
use hyper::body::Incoming;

const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
const IDS: [&str; 3] = ["node-a", "node-b", "node-c"];

// --- the checker app -----------------------------------------------------------------

/// One request as the app saw it.
#[derive(Clone, Debug)]
struct Seen {
    uri: String,
    token: Option<u64>,
    at: Instant,
}

/// The app every node sends to: answers `token=N` (or `token=none`) and
/// records what it saw.
#[derive(Clone)]
struct Checker {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Checker {
    async fn start() -> (Checker, SocketAddr) {
        let checker = Checker {
            seen: Arc::default(),
        };
        let seen = checker.seen.clone();
        let addr = upstream(move |req: http::Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let token = req.headers().get("x-lease-token").map(|v| {
                    let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    text.parse()
                        .unwrap_or_else(|_| panic!("a token that is no number: {text}"))
                });
                let s = Seen {
                    uri: req
                        .uri()
                        .path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .to_owned(),
                    token,
                    at: Instant::now(),
                };
                let body = match token {
                    Some(t) => format!("token={t}\n"),
                    None => "token=none\n".to_owned(),
                };
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                http::Response::new(full(body))
            }
        })
        .await;
        (checker, addr)
    }

    fn mark(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The requests that arrived after `mark`, in arrival order.
    fn since(&self, mark: usize) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(mark..).unwrap_or_default().to_vec()
    }

    /// Every request on the lease-gated route was stamped, and tokens by
    /// arrival never went down (no process was paused in these tests).
    fn assert_tokens_never_decrease(&self) {
        let gated: Vec<Seen> = self
            .since(0)
            .into_iter()
            .filter(|s| s.uri.starts_with("/orders"))
            .collect();
        let tokens: Vec<u64> = gated
            .iter()
            .map(|s| s.token.unwrap_or_else(|| panic!("unstamped: {s:?}")))
            .collect();
        assert!(
            tokens.windows(2).all(|w| w[0] <= w[1]),
            "tokens by arrival went down: {tokens:?}"
        );
    }
}

// --- the nodes -------------------------------------------------------------------------

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Where one member lives, fixed for the test: its ports and state dir.
struct Member {
    id: &'static str,
    port: u16,
    peer_port: u16,
    state_dir: PathBuf,
}

/// Three members' settings, a checker app and the CA; the processes are
/// [`Node`]s.
struct Setup {
    checker: Checker,
    app: SocketAddr,
    pki: Pki,
    members: Vec<Member>,
    /// The lease's `ttl` in the configs written from now on.
    ttl: Duration,
    _state: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let (checker, app) = Checker::start().await;
        let state = tempfile::tempdir().expect("tempdir");
        let members = IDS
            .iter()
            .map(|id| {
                let state_dir = state.path().join(id);
                std::fs::create_dir(&state_dir).expect("state dir");
                Member {
                    id,
                    port: 0,
                    peer_port: 0,
                    state_dir,
                }
            })
            .collect();
        Setup {
            checker,
            app,
            pki: Pki::new("breakwater peers test CA"),
            members,
            ttl: TTL,
            _state: state,
        }
    }

    /// Starts all three nodes on ports probed free just before; a port
    /// taken meanwhile means another try with new ones.
    async fn start_all(&mut self) -> Vec<Node> {
        for _ in 0..5 {
            for m in &mut self.members {
                m.port = free_port();
                m.peer_port = free_port();
            }
            let starts: Vec<_> = (0..self.members.len())
                .map(|i| {
                    let yaml = self.config(i, None);
                    tokio::spawn(async move { BinaryProxy::start(&yaml).await })
                })
                .collect();
            let mut nodes = Vec::new();
            let mut clash = false;
            for (i, start) in starts.into_iter().enumerate() {
                match start.await {
                    Ok(proxy) => nodes.push(self.node(i, proxy)),
                    Err(e) if e.is_panic() => {
                        let panic = e.into_panic();
                        if !panic_says(&panic, "Address already in use") {
                            std::panic::resume_unwind(panic);
                        }
                        clash = true;
                    }
                    Err(e) => panic!("starting node {}: {e}", IDS[i]),
                }
            }
            if !clash {
                return nodes;
            }
            // The nodes that did start are killed as they drop.
        }
        panic!("no free ports in 5 tries");
    }

    /// Starts member `i` again on its ports and state dir.
    async fn restart(&self, i: usize) -> Node {
        for _ in 0..20 {
            let yaml = self.config(i, None);
            match tokio::spawn(async move { BinaryProxy::start(&yaml).await }).await {
                Ok(proxy) => return self.node(i, proxy),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    if !panic_says(&panic, "Address already in use") {
                        std::panic::resume_unwind(panic);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restarting node {}: {e}", IDS[i]),
            }
        }
        panic!("node {}: its ports stayed taken", IDS[i]);
    }

    fn node(&self, i: usize, proxy: BinaryProxy) -> Node {
        Node {
            id: self.members[i].id,
            port: self.members[i].port,
            proxy,
        }
    }

    /// Member `i`'s config; `rogue` replaces its certificate and state dir
    /// (and its ports, with fresh ones).
    fn config(&self, i: usize, rogue: Option<(&PeerTls, &Path, u16, u16)>) -> String {
        let me = &self.members[i];
        let peers: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.id != me.id)
            .map(|m| format!("{{ id: {}, address: \"127.0.0.1:{}\" }}", m.id, m.peer_port))
            .collect();
        let own;
        let (tls, state_dir, port, peer_port) = match rogue {
            Some((tls, dir, port, peer_port)) => (tls, dir, port, peer_port),
            None => {
                own = self.pki.node(me.id);
                (&own, me.state_dir.as_path(), me.port, me.peer_port)
            }
        };
        format!(
            r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: "127.0.0.1:{port}" }}
upstreams:
  app: {{ url: "http://{app}" }}
access_log: {{ format: off }}
cluster:
  node_id: {id}
  forward_url: "http://127.0.0.1:{port}"
  listen: "127.0.0.1:{peer_port}"
  advertise: "127.0.0.1:{peer_port}"
  state_dir: "{state}"
  peers: [{peers}]
  tls: {{ cert: "{cert}", key: "{key}", ca: "{ca}" }}
leases:
  orders: {{ backend: peers, ttl: {ttl}ms, renew_every: {renew}ms }}
routes:
  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: app, lease: orders }}
  - {{ name: open, match: {{ path_prefix: / }}, upstream: app }}
"#,
            id = me.id,
            app = self.app,
            state = state_dir.display(),
            peers = peers.join(", "),
            cert = tls.cert.display(),
            key = tls.key.display(),
            ca = tls.ca.display(),
            ttl = self.ttl.as_millis(),
            renew = RENEW.as_millis(),
        )
    }
}

fn panic_says(panic: &Box<dyn std::any::Any + Send>, needle: &str) -> bool {
    panic
        .downcast_ref::<String>()
        .is_some_and(|m| m.contains(needle))
}

impl Node {
    async fn metrics(&self) -> Vec<Sample> {
        scrape(&self.proxy.admin_url("/metrics")).await
    }
}

// --- the client --------------------------------------------------------------------------

/// Sends `n` requests through each node in turn; each must reach the app
/// stamped with `token`.
async fn all_stamped(nodes: &[&Node], n: usize, token: u64) {
    for i in 0..n {
        for node in nodes {
            let r = send(&node.url(&format!("/orders/{i}?via={}", node.id)), &[]).await;
            assert_eq!(r.token(), Some(token), "via node {}: {r:?}", node.id);
        }
    }
}

// --- the tests ----------------------------------------------------------------------------

#[tokio::test]
async fn exactly_one_of_three_holds_every_node_stamps_its_token_and_details_show_the_peers() {
    let mut s = Setup::new().await;
    let started = Instant::now();
    let nodes = s.start_all().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (h, token) = until_converged(&all).await;
    println!(
        "first start: node {} holds token {token} {} ms after the processes were started",
        all[h].id,
        ms(started.elapsed())
    );
    let holder = all[h];

    // Never two holders, seen from anywhere, while it runs.
    for _ in 0..5 {
        let mut holding = 0;
        for node in &all {
            let v = node.view().await.expect("view");
            holding += usize::from(v["am_holder"] == true);
        }
        assert_eq!(holding, 1);
    }
    let mark = s.checker.mark();
    all_stamped(&all, 5, token).await;
    let seen = s.checker.since(mark);
    assert_eq!(seen.len(), 15, "{seen:#?}");
    assert!(seen.iter().all(|x| x.token == Some(token)), "{seen:#?}");
    for follower in all.iter().filter(|n| n.id != holder.id) {
        let forwarded = metric(
            &follower.metrics().await,
            "breakwater_lease_forwarded_total",
            &[("lease", "orders"), ("result", "ok")],
        );
        assert_eq!(forwarded, Some(5.0), "via {}", follower.id);
        let v = follower.view().await.expect("view");
        assert_eq!(
            v["holder"]["forward_url"]
                .as_str()
                .map(|u| u.trim_end_matches('/')),
            Some(holder.url("").as_str()),
            "followers forward to the holder's listener: {v}"
        );
    }
    let r = send(&all[(h + 1) % 3].url("/open"), &[]).await;
    assert_eq!(r.body.trim(), "token=none", "{r:?}");

    // Details: ballots, the own acceptor, and every peer reachable.
    for node in &all {
        let details = eventually(
            &format!("node {} sees both peers and the grant", node.id),
            || async {
                let v = node.view().await?;
                let d = v["details"].clone();
                let peers = d["peers"].as_array()?;
                let up = peers.len() == 2
                    && peers
                        .iter()
                        .all(|p| p["connected"] == true && p["inbound"] == true);
                // Its acceptor holds the holder's grant (once any grant of a
                // round that lost at the start has run out).
                (up && d["grant"]["token"] == token).then_some(d)
            },
        )
        .await;
        assert_eq!(details["majority"], 2, "{details}");
        assert_eq!(details["amnesiac"], false, "{details}");
        assert_eq!(details["quarantined"], false, "{details}");
        assert!(details["promised"].as_u64() >= Some(token), "{details}");
        for p in details["peers"].as_array().into_iter().flatten() {
            assert!(p["rtt_ms"].as_f64().is_some(), "{details}");
            assert!(p["address"].as_str().is_some(), "{details}");
        }
        if node.id == holder.id {
            assert!(details["ballot"].as_u64() >= Some(token), "{details}");
        }
    }
    // The holder's last finished renewal: who promised and accepted it (a
    // majority, itself among them).
    let holder_node = all[h];
    eventually("the holder shows who answered its last round", || async {
        let d = holder_node.view().await?["details"].clone();
        let ids = |key: &str| -> Option<Vec<String>> {
            let list = d[key].as_array()?;
            Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            )
        };
        let (promised, accepted) = (ids("promised_by")?, ids("accepted_by")?);
        let me = holder_node.id.to_owned();
        (promised.len() >= 2 && accepted.len() >= 2 && accepted.contains(&me)).then_some(())
    })
    .await;
    s.checker.assert_tokens_never_decrease();
}

/// How long a handover with two contenders may take: normally a jitter
/// (≤ ttl/10) and a round. When both start a round within a round trip of
/// each other, the loser's own acceptor may have granted it a tenure no
/// majority accepted; the loser releases it at once, but were that
/// `Release` lost, the grant would block everyone for up to one ttl: allow
/// one such collision.
fn contended(nominal: Duration) -> Duration {
    nominal + TTL + TTL / 10 + Duration::from_millis(300)
}

/// Prints a handover figure, flagging one slower than `nominal`.
fn report(what: &str, took: Duration, nominal: Duration) {
    let flag = if took > nominal {
        " (slower than nominal: two contenders' rounds collided)"
    } else {
        ""
    };
    println!(
        "{what}: {} ms = {:.2} × ttl{flag}",
        ms(took),
        took.as_secs_f64() / TTL.as_secs_f64()
    );
}

/// POSTs a release to `node`; it answers once it no longer stamps.
async fn release(node: &Node) {
    let (status, _, body) = post_within(&node.proxy.admin_url("/leases/orders/release")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(after["am_holder"], false, "{after}");
}

/// A `peers` lease cannot run twice in one process (its state file, its
/// `cluster.listen`), so a reload that changes it steps the old one down
/// first; before, such a reload was refused (the new transport could not
/// bind).
#[tokio::test]
async fn a_reload_that_changes_the_lease_restarts_it_and_the_cluster_holds_again() {
    let mut s = Setup::new().await;
    let nodes = s.start_all().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (_, before) = until_converged(&all).await;

    s.ttl = TTL + Duration::from_millis(400);
    for (i, node) in all.iter().enumerate() {
        node.proxy.rewrite_config(&s.config(i, None));
        let mark = node.proxy.log_mark();
        node.proxy.signal("HUP");
        node.proxy
            .wait_for_log(mark, "configuration reloaded")
            .await;
    }
    // The holder stepped down when it reloaded: a new tenure, and every
    // acceptor promised for the new ttl.
    let (h, after) = until_converged(&all).await;
    assert!(after > before, "{after} > {before}");
    all_stamped(&all, 1, after).await;
    // (A node still quarantined after its restart promises at its end.)
    let ttl_ms = u64::try_from(s.ttl.as_millis()).expect("a ttl in u64 ms");
    for node in &all {
        eventually(
            &format!("{} promised for ttl {ttl_ms} ms", node.id),
            || async {
                let view = node.view().await?;
                (view["details"]["max_ttl_ms"] == ttl_ms).then_some(())
            },
        )
        .await;
    }
    println!("reload: {} holds token {after} (was {before})", all[h].id);

    // A new lease set that cannot start (its `cluster.listen` is taken:
    // nothing `validate` can see) refuses the reload and brings the
    // stepped-down one back.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let taken_port = taken.local_addr().expect("its address").port();
    let holder = all[h];
    let m = &s.members[h];
    let tls = s.pki.node(m.id);
    holder
        .proxy
        .rewrite_config(&s.config(h, Some((&tls, &m.state_dir, m.port, taken_port))));
    let mark = holder.proxy.log_mark();
    holder.proxy.signal("HUP");
    holder
        .proxy
        .wait_for_log(mark, "the previous leases are running again")
        .await;
    // Logged once `apply` returned, after the restore: awaited, not read.
    holder
        .proxy
        .wait_for_log(mark, "configuration reload refused")
        .await;
    let (_, again) = until_converged(&all).await;
    assert!(again > after, "{again} > {after}");
    all_stamped(&all, 1, again).await;
}

#[tokio::test]
async fn release_and_sigterm_hand_over_with_greater_tokens_faster_than_an_expiry() {
    let mut s = Setup::new().await;
    let nodes = s.start_all().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (h0, t0) = until_converged(&all).await;
    all_stamped(&all, 1, t0).await;

    // Two contenders: the other two nodes.
    let released = Instant::now();
    release(all[h0]).await;
    let (h1, t1) = until_converged(&all).await;
    let took = released.elapsed();
    report(
        &format!("release by {} → {} holds", all[h0].id, all[h1].id),
        took,
        TTL,
    );
    assert_ne!(h1, h0, "the releasing node takes nothing for one ttl");
    assert!(t1 > t0, "the new tenure's token {t1} must exceed {t0}");
    assert!(took < contended(TTL), "took {} ms", ms(took));
    all_stamped(&all, 1, t1).await;

    // Released again at once: the first releaser still waits out its ttl,
    // so the third node is the only contender, and must not need an
    // expiry (which would take about a whole ttl).
    let single = released.elapsed() < TTL - Duration::from_millis(700);
    let again = Instant::now();
    release(all[h1]).await;
    let (h2, t2) = until_converged(&all).await;
    let took = again.elapsed();
    report(
        &format!("release by {} → {} holds", all[h1].id, all[h2].id),
        took,
        TTL,
    );
    assert!(t2 > t1, "{t2} > {t1}");
    assert!(h2 != h1, "{h2} != {h1}");
    if single {
        assert_eq!(h2, 3 - h0 - h1, "the only node that may take it");
        assert!(
            took < TTL / 2,
            "took {} ms: no faster than an expiry",
            ms(took)
        );
    } else {
        assert!(took < contended(TTL), "took {} ms", ms(took));
    }
    all_stamped(&all, 1, t2).await;

    // SIGTERM: the holder releases on its way out, before its transport
    // closes. Once both releasers' ttl without acquiring is over (two
    // contenders again), the others get its Release and take over.
    tokio::time::sleep(TTL.saturating_sub(again.elapsed())).await;
    let mut nodes = nodes;
    let mut holder = nodes.remove(h2);
    let rest: Vec<&Node> = nodes.iter().collect();
    let mut releases = Vec::new();
    for node in &rest {
        releases.push(releases_from(node, holder.id).await);
    }
    let termed = Instant::now();
    holder.proxy.signal("TERM");
    let (status, (h3, t3)) = tokio::join!(holder.proxy.wait_exit(WAIT), until_converged(&rest));
    let took = termed.elapsed();
    report(
        &format!("SIGTERM of {} → {} holds", holder.id, rest[h3].id),
        took,
        TTL,
    );
    assert!(status.success(), "SIGTERM exits 0: {status}");
    for (node, before) in rest.iter().zip(releases) {
        assert!(
            releases_from(node, holder.id).await > before,
            "node {} got the Release of {} sent on SIGTERM",
            node.id,
            holder.id
        );
    }
    assert!(t3 > t2, "{t3} > {t2}");
    assert!(took < contended(TTL), "took {} ms", ms(took));
    all_stamped(&rest, 1, t3).await;
    s.checker.assert_tokens_never_decrease();
}

/// Release messages `node` received from `from` so far.
async fn releases_from(node: &Node, from: &str) -> f64 {
    metric(
        &node.metrics().await,
        "breakwater_peer_messages_total",
        &[
            ("peer", from),
            ("direction", "received"),
            ("type", "release"),
            ("result", "ok"),
        ],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn sigkill_of_the_holder_fails_over_and_the_restarted_node_rejoins_as_a_follower() {
    const REPS: usize = 2;
    let mut s = Setup::new().await;
    let mut nodes: Vec<Node> = s.start_all().await;
    let mut figures = Vec::new();
    let mut highest = 0;
    for rep in 1..=REPS {
        let (h, old) = until_converged(&nodes.iter().collect::<Vec<_>>()).await;
        assert!(old >= highest, "rep {rep}: token {old} after {highest}");
        // The kills land at different points of the renewal cycle.
        tokio::time::sleep(RENEW * (rep as u32 - 1) / REPS as u32).await;
        let survivor = (h + 1) % 3;
        let url = nodes[survivor].url(&format!("/orders/failover-{rep}"));
        let mark = s.checker.mark();

        let killed = Instant::now();
        nodes[h].proxy.signal("KILL");
        let mut new = None;
        let mut failures = 0;
        while killed.elapsed() < WAIT {
            match send_within(&url, &[], Duration::from_secs(2)).await {
                Ok(r) => match r.token() {
                    Some(t) if t != old => {
                        new = Some(t);
                        break;
                    }
                    _ => failures += 1,
                },
                Err(_) => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let new = new.unwrap_or_else(|| {
            panic!(
                "rep {rep}: no request stamped by a new holder within {WAIT:?} of SIGKILL; \
                 node {} stderr:\n{}",
                nodes[survivor].id,
                nodes[survivor].proxy.logs()
            )
        });
        assert!(new > old, "rep {rep}: token {new} must exceed {old}");
        let seen = s.checker.since(mark);
        let first = seen
            .iter()
            .find(|x| x.token == Some(new))
            .expect("the app saw the stamped request");
        assert!(
            seen.iter().all(|x| x.token == Some(new)),
            "rep {rep}: only the new holder stamps after the kill: {seen:#?}"
        );
        let failover = first.at.saturating_duration_since(killed);
        println!(
            "failover {rep}/{REPS}: SIGKILL of node {} → first request stamped by the new \
             holder: {} ms = {:.2} × ttl (token {old} → {new}; {failures} requests before it \
             got no stamp)",
            nodes[h].id,
            ms(failover),
            failover.as_secs_f64() / TTL.as_secs_f64()
        );
        figures.push(failover);
        // The survivors were not restarted: no quarantine, only the killed
        // holder's grant (≤ ttl after its last renewal) and a jitter
        // (≤ ttl/10) before a round, which takes a round trip; unless the
        // two survivors' rounds collide (see `contended`).
        let nominal = TTL.mul_f64(1.2);
        if failover > nominal {
            println!("failover {rep}: slower than 1.2 × ttl: the survivors' rounds collided");
        }
        assert!(
            failover <= contended(nominal),
            "rep {rep}: failover took {} ms",
            ms(failover)
        );
        let status = nodes[h].proxy.wait_exit(WAIT).await;
        assert!(!status.success(), "SIGKILL is no clean exit: {status}");
        highest = new;

        // Back on its state dir: quarantined for one ttl, a follower of
        // the new holder meanwhile and after, never a holder.
        let restarted_at = Instant::now();
        nodes[h] = s.restart(h).await;
        let back = &nodes[h];
        let v = eventually(&format!("node {} follows again", back.id), || async {
            let v = back.view().await?;
            (v["holder"]["id"] != serde_json::Value::Null).then_some(v)
        })
        .await;
        assert_eq!(v["am_holder"], false, "{v}");
        assert_eq!(v["token"].as_u64(), Some(new), "{v}");
        let d = &v["details"];
        assert_eq!(d["amnesiac"], false, "{v}");
        assert!(d["promised"].as_u64() >= Some(old), "{v}");
        if restarted_at.elapsed() < TTL - Duration::from_millis(300) {
            assert_eq!(d["quarantined"], true, "{v}");
        }
        eventually(&format!("node {} ends its quarantine", back.id), || async {
            let v = back.view().await?;
            (v["details"]["quarantined"] == false).then_some(())
        })
        .await;
        let all: Vec<&Node> = nodes.iter().collect();
        let (h2, token) = until_converged(&all).await;
        assert_eq!((token, h2 == h), (new, false), "the new holder keeps it");
        all_stamped(&all, 1, new).await;
    }
    figures.sort();
    println!(
        "failover over {REPS} SIGKILLs (ttl {} ms, renew_every {} ms): ms {:?}, × ttl {:?}",
        ms(TTL),
        ms(RENEW),
        figures.iter().map(|f| ms(*f)).collect::<Vec<_>>(),
        figures
            .iter()
            .map(|f| format!("{:.2}", f.as_secs_f64() / TTL.as_secs_f64()))
            .collect::<Vec<_>>()
    );

    // A handover after the restarts still raises the token.
    let all: Vec<&Node> = nodes.iter().collect();
    let (h, token) = until_converged(&all).await;
    release(all[h]).await;
    let (_, next) = until_converged(&all).await;
    assert!(next > token && next > highest, "{next} > {token}");
    all_stamped(&all, 1, next).await;
    s.checker.assert_tokens_never_decrease();
}

#[tokio::test]
async fn a_node_without_a_certificate_from_the_ca_cannot_take_part() {
    let mut s = Setup::new().await;
    let nodes = s.start_all().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (h, token) = until_converged(&all).await;

    // An impostor of node-c (same id and member list, its own ports and
    // state dir) with a certificate from another CA, which it trusts.
    let other = Pki::new("another CA");
    let rogue_tls = other.node("node-c");
    let rogue_dir = tempfile::tempdir().expect("tempdir");
    let rogue = {
        let mut started = None;
        for _ in 0..5 {
            let (port, peer_port) = (free_port(), free_port());
            let yaml = s.config(2, Some((&rogue_tls, rogue_dir.path(), port, peer_port)));
            match tokio::spawn(async move { BinaryProxy::start(&yaml).await }).await {
                Ok(proxy) => {
                    started = Some(Node {
                        id: "node-c (rogue)",
                        port,
                        proxy,
                    });
                    break;
                }
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    if !panic_says(&panic, "Address already in use") {
                        std::panic::resume_unwind(panic);
                    }
                }
                Err(e) => panic!("starting the rogue: {e}"),
            }
        }
        started.expect("the rogue starts")
    };

    // The members refuse its connections, and it theirs.
    for node in &all[..2] {
        eventually(&format!("node {} refuses the rogue", node.id), || async {
            let samples = node.metrics().await;
            let refused: f64 = samples
                .iter()
                .filter(|x| x.name == "breakwater_peer_rejected_total")
                .map(|x| x.value)
                .sum();
            (refused >= 1.0).then_some(())
        })
        .await;
    }
    eventually("the rogue cannot connect to any member", || async {
        let samples = rogue.metrics().await;
        let failed = ["node-a", "node-b"].iter().all(|peer| {
            samples.iter().any(|x| {
                x.name == "breakwater_peer_connect_errors_total"
                    && x.labels.get("peer").map(String::as_str) == Some(peer)
                    && x.value >= 1.0
            })
        });
        failed.then_some(())
    })
    .await;
    let refused_log = all[0]
        .proxy
        .find_log(0, "peer connection refused")
        .await
        .or(all[1].proxy.find_log(0, "peer connection refused").await);
    assert!(
        refused_log.is_some(),
        "a member logs the refusal; stderr:\n{}",
        all[0].proxy.logs()
    );

    // It learns nothing and takes nothing; the members keep their holder.
    let v = rogue.view().await.expect("view");
    assert_eq!(v["am_holder"], false, "{v}");
    assert!(v["holder"].is_null(), "{v}");
    assert_eq!(v["details"]["amnesiac"], true, "{v}");
    let r = send(&rogue.url("/orders/from-the-rogue"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    tokio::time::sleep(TTL).await;
    assert_eq!(until_converged(&all).await, (h, token));
    all_stamped(&all, 1, token).await;
    s.checker.assert_tokens_never_decrease();
}
