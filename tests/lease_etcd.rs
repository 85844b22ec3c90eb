//! The etcd lease backend end to end (LEASES.md §6e): real `breakwater`
//! processes ([`BinaryProxy`]) share lease `orders` through a real etcd on
//! 127.0.0.1 (see `common/etcd.rs`), in front of one "checker" app that
//! records, for every request that reaches it, the fencing token, the lease
//! name, the hop marker and the arrival instant. Holders are killed, paused,
//! released and shut down; etcd is killed and restarted, or absent at start.
//!
//! Each node's `cluster.forward_url` is its own listener, so its port is
//! chosen (and probed free) before the process starts. ttl 2 s and
//! renew_every 500 ms keep every test a few seconds long (the test etcd's
//! short election timeout lets it grant a TTL that short). The failover
//! figures are printed: run with `--nocapture` to read them.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::lease_nodes::*;
use common::*;
use http::StatusCode;
use hyper::body::Incoming;

const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
/// etcd expires leases on its own schedule (its lessor looks for expired
/// leases about every 500 ms, and the revoke goes through raft), and a
/// follower waits up to `ttl/10` after the key's deletion: allow for both.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
const HOP: &str = "x-breakwater-forwarded";

// --- the checker app ----------------------------------------------------------

/// One request as the app saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// Path and query.
    uri: String,
    token: Option<String>,
    name: Option<String>,
    forwarded: Option<String>,
    at: Instant,
}

impl Seen {
    fn token(&self) -> Option<u64> {
        self.token.as_deref().map(|t| {
            t.parse()
                .unwrap_or_else(|_| panic!("the app got a token that is no number: {self:?}"))
        })
    }

    fn gated(&self) -> bool {
        self.uri.starts_with("/orders")
    }
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
                let header = |name: &str| {
                    req.headers()
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                };
                let s = Seen {
                    uri: req
                        .uri()
                        .path_and_query()
                        .map_or("/", |pq| pq.as_str())
                        .to_owned(),
                    token: header("x-lease-token"),
                    name: header("x-lease-name"),
                    forwarded: header(HOP),
                    at: Instant::now(),
                };
                let body = format!("token={}\n", s.token.as_deref().unwrap_or("none"));
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(s);
                http::Response::new(full(body))
            }
        })
        .await;
        (checker, addr)
    }

    /// How many requests arrived so far: pass it to [`Checker::since`].
    fn mark(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The requests that arrived after `mark`, in arrival order.
    fn since(&self, mark: usize) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(mark..).unwrap_or_default().to_vec()
    }

    /// Every request on the lease-gated route, in arrival order.
    fn gated(&self) -> Vec<Seen> {
        self.since(0).into_iter().filter(Seen::gated).collect()
    }
}

// --- the nodes ------------------------------------------------------------------

/// One test's etcd, app and key prefix.
struct Setup {
    etcd: Etcd,
    checker: Checker,
    app: SocketAddr,
    prefix: String,
}

impl Setup {
    async fn new() -> Setup {
        use std::hash::{BuildHasher, RandomState};
        let (etcd, (checker, app)) = tokio::join!(Etcd::start(), Checker::start());
        Setup {
            etcd,
            checker,
            app,
            prefix: format!("/test-{:016x}/", RandomState::new().hash_one(0u8)),
        }
    }

    /// Starts node `id` with `on_follower: mode` on a listener port probed
    /// free just before; a port taken meanwhile means another try.
    async fn node(&self, id: &'static str, mode: &str) -> Node {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port();
            let yaml = self.config(id, port, mode);
            // `start` panics with the child's stderr when it cannot listen.
            match tokio::spawn(async move { BinaryProxy::start(&yaml).await }).await {
                Ok(proxy) => return Node { id, port, proxy },
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let clash = panic
                        .downcast_ref::<String>()
                        .is_some_and(|m| m.contains("Address already in use"));
                    if !clash {
                        std::panic::resume_unwind(panic);
                    }
                }
                Err(e) => panic!("starting node {id}: {e}"),
            }
        }
        panic!("node {id}: no free listener port in 5 tries");
    }

    fn config(&self, id: &str, port: u16, mode: &str) -> String {
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
  public_url: "{public}"
etcd: {{ endpoints: ["{etcd}"], prefix: "{prefix}" }}
leases:
  orders: {{ backend: etcd, ttl: {ttl}ms, renew_every: {renew}ms, on_follower: {mode} }}
routes:
  - {{ name: orders, match: {{ path_prefix: /orders }}, upstream: app, lease: orders }}
  - {{ name: open, match: {{ path_prefix: / }}, upstream: app }}
"#,
            app = self.app,
            public = public_url(id),
            etcd = self.etcd.endpoint(),
            prefix = self.prefix,
            ttl = TTL.as_millis(),
            renew = RENEW.as_millis(),
        )
    }
}

/// Node `id`'s `cluster.public_url` (never dialled: only redirected to).
fn public_url(id: &str) -> String {
    format!("https://{id}.orders.test:8443")
}

impl Node {
    async fn forwarded_ok(&self) -> f64 {
        let samples = scrape(&self.proxy.admin_url("/metrics")).await;
        metric(
            &samples,
            "breakwater_lease_forwarded_total",
            &[("lease", "orders"), ("result", "ok")],
        )
        // The series appears with the first forwarded request.
        .unwrap_or(0.0)
    }
}

/// Waits until `node` may stamp; returns its token.
async fn until_holds(node: &Node) -> u64 {
    eventually(&format!("node {} holds lease orders", node.id), || async {
        let v = node.view().await?;
        (v["am_holder"] == true)
            .then(|| v["token"].as_u64())
            .flatten()
    })
    .await
}

// --- the client -------------------------------------------------------------------

/// Sends `n` requests through each node in turn; each must reach the app
/// stamped with `token`.
async fn all_stamped(nodes: &[&Node], n: usize, token: u64) {
    for i in 0..n {
        for node in nodes {
            let r = send(&node.url(&format!("/orders/{i}")), &[]).await;
            assert_eq!(r.token(), Some(token), "via node {}: {r:?}", node.id);
        }
    }
}

// --- the tests ----------------------------------------------------------------------

#[tokio::test]
async fn exactly_one_of_two_processes_stamps_and_the_follower_forwards_to_it() {
    let s = Setup::new().await;
    let (a, b) = tokio::join!(s.node("a", "forward"), s.node("b", "forward"));
    let nodes = [&a, &b];
    let (h, token) = until_converged(&nodes).await;
    let (holder, follower) = (nodes[h], nodes[1 - h]);

    let hv = holder.view().await.expect("holder view");
    assert_eq!(hv["backend"], "etcd", "{hv}");
    assert_eq!(hv["holder"]["id"], holder.id, "{hv}");
    assert!(hv["valid_for_ms"].as_u64().unwrap_or(0) > 0, "{hv}");
    let fv = follower.view().await.expect("follower view");
    assert_eq!(fv["am_holder"], false, "{fv}");
    assert_eq!(fv["valid_for_ms"], 0, "{fv}");
    assert_eq!(
        fv["holder"]["forward_url"]
            .as_str()
            .map(|u| u.trim_end_matches('/')),
        Some(holder.url("").as_str()),
        "the follower forwards to the holder's own listener: {fv}"
    );
    assert_eq!(
        fv["holder"]["public_url"]
            .as_str()
            .map(|u| u.trim_end_matches('/')),
        Some(public_url(holder.id).as_str()),
        "{fv}"
    );
    for _ in 0..5 {
        let (va, vb) = tokio::join!(a.view(), b.view());
        let (va, vb) = (va.expect("view"), vb.expect("view"));
        assert!(
            !(va["am_holder"] == true && vb["am_holder"] == true),
            "both hold: {va} {vb}"
        );
    }

    let forwarded_before = follower.forwarded_ok().await;
    let mark = s.checker.mark();
    const EACH: usize = 10;
    for i in 0..EACH {
        for node in nodes {
            let mut headers = vec![("x-lease-token", "999999"), ("x-lease-name", "evil")];
            if node.id == holder.id && i % 2 == 0 {
                // A hop marker sent to the holder: stamped, and the marker
                // does not reach the app either.
                headers.push((HOP, "forged"));
            }
            let r = send(&node.url(&format!("/orders/{i}?via={}", node.id)), &headers).await;
            assert_eq!(r.token(), Some(token), "via node {}: {r:?}", node.id);
        }
    }
    let seen = s.checker.since(mark);
    assert_eq!(seen.len(), 2 * EACH, "{seen:#?}");
    for x in &seen {
        assert_eq!(x.token(), Some(token), "{x:?}");
        assert_eq!(x.name.as_deref(), Some("orders"), "{x:?}");
        assert_eq!(x.forwarded, None, "the hop marker reached the app: {x:?}");
    }
    let via_follower = seen
        .iter()
        .filter(|x| x.uri.ends_with(&format!("via={}", follower.id)))
        .count();
    assert_eq!(via_follower, EACH, "{seen:#?}");
    assert_eq!(
        follower.forwarded_ok().await - forwarded_before,
        EACH as f64,
        "every request sent via the follower was forwarded to the holder"
    );
    assert_eq!(
        holder.forwarded_ok().await,
        0.0,
        "the holder forwards nothing"
    );

    // The open route passes no lease header, forged or not.
    let r = send(&follower.url("/open"), &[("x-lease-token", "999999")]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body.trim(), "token=none");
}

#[tokio::test]
async fn release_hands_over_with_a_greater_token() {
    let s = Setup::new().await;
    let (a, b) = tokio::join!(s.node("a", "forward"), s.node("b", "forward"));
    let nodes = [&a, &b];
    let (h, old) = until_converged(&nodes).await;
    let (holder, other) = (nodes[h], nodes[1 - h]);
    all_stamped(&nodes, 2, old).await;

    let released = Instant::now();
    let (status, _, body) = post_within(&holder.proxy.admin_url("/leases/orders/release")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(after["am_holder"], false, "{after}");
    assert_eq!(after["valid_for_ms"], 0, "{after}");

    let new = until_holds(other).await;
    let took = released.elapsed();
    println!("release → node {} holds: {} ms", other.id, ms(took));
    assert!(new > old, "the new tenure's token {new} must exceed {old}");
    // Left to expire, the released lease would last about a whole ttl.
    assert!(
        took < TTL - RENEW,
        "took {} ms: no faster than an expiry",
        ms(took)
    );
    let (h2, token) = until_converged(&nodes).await;
    assert_eq!((nodes[h2].id, token), (other.id, new));

    let mark = s.checker.mark();
    all_stamped(&nodes, 3, new).await;
    let seen = s.checker.since(mark);
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|x| x.token() == Some(new)), "{seen:#?}");
}

#[tokio::test]
async fn sigkill_of_the_holder_hands_over_within_ttl_plus_renew() {
    const REPS: usize = 3;
    let bound = TTL + RENEW + EXPIRY_SLACK;
    let s = Setup::new().await;
    let (a, b) = tokio::join!(s.node("a", "forward"), s.node("b", "forward"));
    let mut nodes = [a, b];
    let mut figures = Vec::new();
    for rep in 1..=REPS {
        let (h, old) = until_converged(&[&nodes[0], &nodes[1]]).await;
        // Each kill lands at another phase of the renewal cycle: the first
        // just after the tenure began (a whole ttl left in etcd, the worst
        // case), the others later into it.
        let phase = RENEW * (rep as u32 - 1) / REPS as u32;
        tokio::time::sleep(phase).await;
        let survivor = &nodes[1 - h];
        let url = survivor.url(&format!("/orders/failover-{rep}"));
        let mark = s.checker.mark();

        let killed = Instant::now();
        nodes[h].proxy.signal("KILL");
        let survivor = &nodes[1 - h];
        // Every ~20 ms through the survivor, until the app answers with a
        // new token; bounded in count and time.
        let mut new = None;
        let mut failures = 0;
        for _ in 0..400 {
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
            if killed.elapsed() > WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let new = new.unwrap_or_else(|| {
            panic!(
                "rep {rep}: no request stamped by a new holder within {WAIT:?} of SIGKILL; \
                 survivor {} stderr:\n{}",
                survivor.id,
                survivor.proxy.logs()
            )
        });
        assert!(new > old, "rep {rep}: token {new} must exceed {old}");
        let seen = s.checker.since(mark);
        let first = seen
            .iter()
            .find(|x| x.token() == Some(new))
            .expect("the app saw the stamped request");
        assert!(
            seen.iter().all(|x| x.token() == Some(new)),
            "rep {rep}: only the new holder stamps after the kill: {seen:#?}"
        );
        let failover = first.at.saturating_duration_since(killed);
        let ratio = failover.as_secs_f64() / TTL.as_secs_f64();
        println!(
            "failover {rep}/{REPS}: SIGKILL of node {} (≥ {} ms into its tenure) → first request \
             stamped by node {}: {} ms = {ratio:.2} × ttl (token {old} → {new}; {failures} requests \
             before it failed)",
            nodes[h].id,
            ms(phase),
            survivor.id,
            ms(failover)
        );
        figures.push(failover);
        assert!(
            failover <= bound,
            "rep {rep}: failover took {} ms, more than ttl + renew_every + {} ms = {} ms",
            ms(failover),
            ms(EXPIRY_SLACK),
            ms(bound)
        );

        let status = nodes[h].proxy.wait_exit(WAIT).await;
        assert!(!status.success(), "SIGKILL is no clean exit: {status}");
        // Back as a follower of the survivor, the next victim's successor.
        nodes[h] = s.node(nodes[h].id, "forward").await;
    }
    figures.sort();
    let ratios: Vec<String> = figures
        .iter()
        .map(|f| format!("{:.2}", f.as_secs_f64() / TTL.as_secs_f64()))
        .collect();
    println!(
        "failover over {REPS} SIGKILLs (ttl {} ms, renew_every {} ms): ms {:?}, × ttl {ratios:?}, median {} ms",
        ms(TTL),
        ms(RENEW),
        figures.iter().map(|f| ms(*f)).collect::<Vec<_>>(),
        ms(figures[REPS / 2])
    );
}

#[tokio::test]
async fn sigstop_beyond_ttl_the_paused_holder_stops_stamping_before_the_other_starts() {
    let s = Setup::new().await;
    let a = s.node("a", "forward").await;
    let old = until_holds(&a).await;
    let b = s.node("b", "forward").await;
    until_converged(&[&a, &b]).await;
    // Every request through A has its answer before the pause: nothing is
    // in flight inside A when it stops.
    all_stamped(&[&a, &b], 3, old).await;

    let stopped = Instant::now();
    a.proxy.signal("STOP");
    // Sent to A while it is stopped: A reads it only after SIGCONT, past
    // its deadline, so it must not stamp it with its old token.
    let during_url = a.url("/orders/sent-during-the-pause");
    let during = tokio::spawn(async move { send_within(&during_url, &[], WAIT).await });
    let new = until_holds(&b).await;
    assert!(new > old, "{new} > {old}");
    let taken_over = stopped.elapsed();
    for i in 0..3 {
        let r = send(&b.url(&format!("/orders/b-{i}")), &[]).await;
        assert_eq!(r.token(), Some(new), "{r:?}");
    }
    // A fixed pause: at least ttl + 1 s.
    let pause = TTL + Duration::from_secs(1);
    tokio::time::sleep(pause.saturating_sub(stopped.elapsed())).await;
    a.proxy.signal("CONT");
    println!(
        "SIGSTOP of the holder: node b held {} ms after the stop; a resumed after {} ms",
        ms(taken_over),
        ms(stopped.elapsed())
    );

    // Right after SIGCONT: forwarded to B (stamped with B's token) or 503,
    // never stamped with A's old token.
    let mut answers = Vec::new();
    for i in 0..10 {
        let r = send(&a.url(&format!("/orders/a-after-{i}")), &[]).await;
        assert!(
            r.token() == Some(new)
                || (r.status == StatusCode::SERVICE_UNAVAILABLE
                    && r.reason() == "lease-unavailable"),
            "after SIGCONT, via a: {r:?}"
        );
        answers.push(r.status.as_u16());
    }
    let r = during
        .await
        .expect("task")
        .expect("the request sent during the pause is answered");
    assert!(
        r.token() == Some(new) || r.status == StatusCode::SERVICE_UNAVAILABLE,
        "sent during the pause: {r:?}"
    );
    println!("via a right after SIGCONT: {answers:?}; sent during the pause: {r:?}");
    let (h, token) = until_converged(&[&a, &b]).await;
    assert_eq!((h, token), (1, new), "b keeps the lease");
    all_stamped(&[&a, &b], 2, new).await;

    // The checker's record: tokens by arrival never decrease, and the two
    // tenures' arrival intervals do not overlap.
    let seen = s.checker.gated();
    let tokens: Vec<u64> = seen
        .iter()
        .map(|x| x.token().unwrap_or_else(|| panic!("unstamped: {x:?}")))
        .collect();
    assert!(
        tokens.windows(2).all(|w| w[0] <= w[1]),
        "tokens by arrival went down: {seen:#?}"
    );
    let span = |t: u64| {
        let at: Vec<Instant> = seen
            .iter()
            .filter(|x| x.token() == Some(t))
            .map(|x| x.at)
            .collect();
        (at[0], at[at.len() - 1])
    };
    let ((_, last_old), (first_new, _)) = (span(old), span(new));
    assert!(
        last_old < first_new,
        "token {old} arrived until {:?} after the stop, token {new} from {:?}",
        last_old.saturating_duration_since(stopped),
        first_new.saturating_duration_since(stopped)
    );
    assert!(last_old < stopped, "nothing stamped {old} after the stop");
    assert!(tokens.iter().all(|t| *t == old || *t == new), "{tokens:?}");
}

#[tokio::test]
async fn follower_modes_forward_redirect_and_reject_are_each_observed() {
    let s = Setup::new().await;
    let a = s.node("a", "forward").await;
    let token = until_holds(&a).await;
    let (fwd, redirect, reject) = tokio::join!(
        s.node("b", "forward"),
        s.node("c", "redirect"),
        s.node("d", "reject")
    );
    until_converged(&[&a, &fwd, &redirect, &reject]).await;
    let mark = s.checker.mark();

    let r = send(&fwd.url("/orders/x?q=1"), &[]).await;
    assert_eq!(r.token(), Some(token), "forward: {r:?}");
    let seen = s.checker.since(mark);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].uri, "/orders/x?q=1", "path and query kept");

    let r = send(&redirect.url("/orders/x?q=1"), &[]).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "redirect: {r:?}");
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("{}/orders/x?q=1", public_url("a")).as_str()),
        "redirect: {r:?}"
    );

    let r = send(&reject.url("/orders/x?q=1"), &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "reject: {r:?}");
    assert_eq!(r.reason(), "lease-unavailable", "reject: {r:?}");

    // A request that already took its hop is never sent on again, in any
    // mode: 503, and the app does not see it.
    for node in [&fwd, &redirect, &reject] {
        let r = send(&node.url("/orders/x?q=1"), &[(HOP, "z")]).await;
        assert_eq!(
            (r.status, r.reason()),
            (StatusCode::SERVICE_UNAVAILABLE, "lease-unavailable"),
            "a forwarded request to follower {}: {r:?}",
            node.id
        );
    }
    let seen = s.checker.since(mark);
    assert_eq!(seen.len(), 1, "only the forward reached the app: {seen:#?}");
}

#[tokio::test]
async fn etcd_restart_keeps_tokens_increasing() {
    let mut s = Setup::new().await;
    let (a, b) = tokio::join!(s.node("a", "forward"), s.node("b", "forward"));
    let nodes = [&a, &b];
    let (_, first) = until_converged(&nodes).await;
    all_stamped(&nodes, 2, first).await;
    let mut tokens = vec![first];

    s.etcd.kill();
    s.etcd.restart().await;
    let (h, token) = until_converged(&nodes).await;
    println!(
        "after the etcd restart node {} holds, token {first} → {token}",
        nodes[h].id
    );
    assert!(token >= first, "{token} >= {first}");
    all_stamped(&nodes, 2, token).await;
    tokens.push(token);

    // A new tenure after the restart.
    let (status, _, body) = post_within(&nodes[h].proxy.admin_url("/leases/orders/release")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (h2, new) = until_converged(&nodes).await;
    assert_ne!(h2, h, "the other node takes over");
    tokens.extend(s.checker.gated().iter().filter_map(Seen::token));
    let highest = tokens.iter().max().copied().unwrap_or(0);
    assert!(
        new > highest,
        "the tenure after the etcd restart has token {new}, not above {tokens:?}"
    );
    all_stamped(&nodes, 2, new).await;
}

#[tokio::test]
async fn etcd_unreachable_at_start_serves_other_routes_and_lease_routes_answer_503_until_it_is_back(
) {
    let mut s = Setup::new().await;
    // Its port now has nothing listening; `restart` brings it back there.
    s.etcd.kill();
    let a = s.node("a", "forward").await;

    let r = send(&a.url("/open"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "the open route: {r:?}");
    assert_eq!(r.body.trim(), "token=none");
    for i in 0..5 {
        let r = send(&a.url(&format!("/orders/{i}")), &[]).await;
        assert_eq!(
            (r.status, r.reason()),
            (StatusCode::SERVICE_UNAVAILABLE, "lease-unavailable"),
            "{r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = a.view().await.expect("view");
    assert_eq!(v["am_holder"], false, "{v}");
    assert!(v["holder"].is_null(), "{v}");
    let url = a.proxy.admin_url("/metrics");
    eventually("the backend counts its errors", || async {
        let errors = metric(
            &scrape(&url).await,
            "breakwater_lease_backend_errors_total",
            &[("backend", "etcd"), ("lease", "orders")],
        )?;
        (errors > 0.0).then_some(())
    })
    .await;
    assert!(
        s.checker.gated().is_empty(),
        "nothing reached the app on the lease route"
    );

    let back = Instant::now();
    s.etcd.restart().await;
    let token = eventually("the lease route works once etcd is back", || async {
        send_within(&a.url("/orders/back"), &[], Duration::from_secs(2))
            .await
            .ok()?
            .token()
    })
    .await;
    println!("etcd back → lease route stamped: {} ms", ms(back.elapsed()));
    assert_eq!(until_holds(&a).await, token);
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_other_takes_over_quickly() {
    let s = Setup::new().await;
    let (mut a, mut b) = tokio::join!(s.node("a", "forward"), s.node("b", "forward"));
    let (h, old) = until_converged(&[&a, &b]).await;
    let (holder, other) = if h == 0 { (&mut a, &b) } else { (&mut b, &a) };
    all_stamped(&[other], 2, old).await;

    let mark = holder.proxy.log_mark();
    let termed = Instant::now();
    holder.proxy.signal("TERM");
    let (status, (new, held)) = tokio::join!(holder.proxy.wait_exit(WAIT), async {
        let new = until_holds(other).await;
        (new, Instant::now())
    });
    let exited = Instant::now();
    assert!(status.success(), "SIGTERM exits 0: {status}");
    assert!(
        holder
            .proxy
            .find_log(mark, "etcd lease released")
            .await
            .is_some(),
        "the holder released its lease; stderr:\n{}",
        holder.proxy.logs()
    );
    let took = held.saturating_duration_since(termed);
    println!(
        "SIGTERM of node {} → node {} holds: {} ms ({:.2} × ttl); the process exited after {} ms",
        holder.id,
        other.id,
        ms(took),
        took.as_secs_f64() / TTL.as_secs_f64(),
        ms(exited.saturating_duration_since(termed))
    );
    assert!(new > old, "{new} > {old}");
    // Left to expire, the lease would outlive the holder's last renewal
    // (at most renew_every before the signal) by a whole ttl.
    assert!(
        took < TTL - RENEW,
        "took {} ms: no faster than an expiry",
        ms(took)
    );
    all_stamped(&[other], 2, new).await;
}

#[tokio::test]
async fn etcd_paused_beyond_ttl_the_holder_stamps_until_its_deadline_then_every_node_answers_503() {
    let s = Setup::new().await;
    let a = s.node("a", "forward").await;
    let old = until_holds(&a).await;
    let b = s.node("b", "forward").await;
    until_converged(&[&a, &b]).await;
    all_stamped(&[&a, &b], 2, old).await;

    s.etcd.pause();
    // Read after etcd stopped: every renewal it answered was sent before.
    let paused = Instant::now();
    // Through the holder every ~20 ms until it stops stamping.
    let mut stopped = None;
    for i in 0..400 {
        let r = send(&a.url(&format!("/orders/paused-{i}")), &[]).await;
        match r.token() {
            Some(t) => assert_eq!(t, old, "{r:?}"),
            None => {
                assert_eq!(
                    (r.status, r.reason()),
                    (StatusCode::SERVICE_UNAVAILABLE, "lease-unavailable"),
                    "{r:?}"
                );
                stopped = Some(paused.elapsed());
                break;
            }
        }
        if paused.elapsed() > WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = stopped.expect("the holder stops stamping while etcd is paused");
    // Its last renewal was sent before the pause, so its deadline is less
    // than D after it; what it stamped reaches the app a moment later.
    let usable = breakwater::lease::validity::usable(TTL, 1.0);
    let last = s
        .checker
        .gated()
        .iter()
        .filter(|x| x.token() == Some(old))
        .map(|x| x.at)
        .max()
        .expect("stamped requests");
    let last = last.saturating_duration_since(paused);
    println!(
        "etcd paused: the holder stamped until {} ms after the pause (D = {} ms), answered 503 from {} ms",
        ms(last),
        ms(usable),
        ms(stopped)
    );
    assert!(
        last < usable + Duration::from_millis(250),
        "stamped {} ms after etcd stopped answering, beyond D = {} ms",
        ms(last),
        ms(usable)
    );
    // Every node answers 503 now: the follower still forwards to the last
    // holder it saw, which no longer stamps.
    for node in [&a, &b] {
        let r = send(&node.url("/orders/while-paused"), &[]).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "via {}: {r:?}",
            node.id
        );
    }

    // Beyond the ttl: once etcd runs again the lease may expire at once.
    let pause = TTL + Duration::from_secs(1);
    tokio::time::sleep(pause.saturating_sub(paused.elapsed())).await;
    s.etcd.resume();
    let (h, new) = until_converged(&[&a, &b]).await;
    println!(
        "etcd resumed: node {} holds, token {old} → {new}",
        [&a, &b][h].id
    );
    assert!(new >= old, "{new} >= {old}");
    all_stamped(&[&a, &b], 2, new).await;
    let tokens: Vec<u64> = s.checker.gated().iter().filter_map(Seen::token).collect();
    assert!(
        tokens.windows(2).all(|w| w[0] <= w[1]),
        "tokens by arrival went down: {tokens:?}"
    );
}
