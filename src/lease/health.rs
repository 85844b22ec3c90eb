//! `require_healthy`: a holder steps down when its own service fails its
//! health check, so the lease moves to a replica that can serve it.
//!
//! One task per lease GETs the check URL every `every` and publishes a
//! `watch<bool>`. It starts unhealthy (a node does not take a lease for a
//! service it has not yet seen answer), turns unhealthy after
//! [`FAILURES_TO_STEP_DOWN`] failures in a row (one slow answer is not a
//! reason to hand over), and healthy again on the next pass.

use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::config::HealthCheck;

/// Failed checks in a row after which the service counts as unhealthy.
pub const FAILURES_TO_STEP_DOWN: u32 = 3;

/// The longest a single check may take, however long `every` is.
pub const MAX_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Most of a check response's body that is read (so the connection can be
/// reused); the status alone decides.
const MAX_BODY: usize = 64 * 1024;

/// The verdict over a sequence of checks, without I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdicts {
    healthy: bool,
    failures: u32,
}

impl Verdicts {
    /// Unhealthy until the first pass.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one check's result; returns the verdict after it.
    pub fn record(&mut self, pass: bool) -> bool {
        if pass {
            self.failures = 0;
            self.healthy = true;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= FAILURES_TO_STEP_DOWN {
                self.healthy = false;
            }
        }
        self.healthy
    }

    /// The current verdict.
    pub fn healthy(&self) -> bool {
        self.healthy
    }
}

/// How long one check may take: `every`, at most [`MAX_CHECK_TIMEOUT`].
pub fn check_timeout(every: Duration) -> Duration {
    every.min(MAX_CHECK_TIMEOUT)
}

/// Starts checking `check` for lease `lease` and returns the verdict
/// channel. Without a check the verdict is a constant `true`. The task ends
/// when every receiver is gone; the sender stays alive until then, so
/// `changed()` never fails early.
pub fn spawn(check: Option<HealthCheck>, lease: &str) -> watch::Receiver<bool> {
    let Some(check) = check else {
        let (tx, rx) = watch::channel(true);
        tokio::spawn(async move { tx.closed().await });
        return rx;
    };
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(check, lease.to_owned(), tx));
    rx
}

/// Waits for the next change of `healthy`; once its sender is gone (`open`
/// turns false) waits forever, keeping the last value, instead of returning
/// at once in a loop.
pub async fn next_change(healthy: &mut watch::Receiver<bool>, open: &mut bool) {
    if *open && healthy.changed().await.is_ok() {
        return;
    }
    *open = false;
    std::future::pending::<()>().await;
}

async fn run(check: HealthCheck, lease: String, tx: watch::Sender<bool>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let limit = check_timeout(check.every);
    // `interval` refuses a zero period; validation already does too.
    let mut ticks = tokio::time::interval(check.every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut verdicts = Verdicts::new();
    loop {
        let outcome = tokio::select! {
            () = tx.closed() => return,
            outcome = async {
                ticks.tick().await;
                probe(&client, &check.url, limit).await
            } => outcome,
        };
        let was = verdicts.healthy();
        let now = verdicts.record(outcome.is_ok());
        match (&outcome, was, now) {
            (Ok(()), false, true) => {
                tracing::info!(lease = %lease, url = %check.url, "service healthy: the lease may be held");
            }
            (Err(why), true, false) => tracing::warn!(
                lease = %lease, url = %check.url, reason = %why,
                "service failed {FAILURES_TO_STEP_DOWN} health checks in a row: stepping down"
            ),
            (Err(why), _, _) => {
                tracing::debug!(lease = %lease, url = %check.url, reason = %why, "health check failed");
            }
            _ => {}
        }
        tx.send_if_modified(|healthy| std::mem::replace(healthy, now) != now);
    }
}

/// One check: a GET answered 2xx within `limit`.
async fn probe(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &Uri,
    limit: Duration,
) -> Result<(), String> {
    let request = http::Request::get(url.clone())
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        // Only the status matters; reading the body lets the connection be
        // reused.
        let _ = Limited::new(response.into_body(), MAX_BODY).collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

/// An error and its causes, `: `-separated (hyper's own message alone says
/// little, e.g. "client error (Connect)").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
    use std::sync::Arc;

    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn unhealthy_until_the_first_pass() {
        let mut v = Verdicts::new();
        assert!(!v.healthy());
        assert!(!v.record(false));
        assert!(v.record(true));
    }

    #[test]
    fn two_failures_in_a_row_keep_it_healthy_the_third_does_not() {
        let mut v = Verdicts::new();
        v.record(true);
        assert!(v.record(false));
        assert!(v.record(false));
        assert!(!v.record(false));
        assert!(!v.record(false));
    }

    #[test]
    fn a_pass_resets_the_failure_count() {
        let mut v = Verdicts::new();
        v.record(true);
        v.record(false);
        v.record(false);
        assert!(v.record(true));
        assert!(v.record(false));
        assert!(v.record(false));
        assert!(!v.record(false));
    }

    #[test]
    fn recovers_on_the_first_pass_after_stepping_down() {
        let mut v = Verdicts::new();
        v.record(true);
        for _ in 0..5 {
            v.record(false);
        }
        assert!(v.record(true));
    }

    #[test]
    fn a_check_may_take_every_but_at_most_two_seconds() {
        assert_eq!(
            check_timeout(Duration::from_millis(500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            check_timeout(Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            check_timeout(Duration::from_secs(30)),
            Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_check_it_is_healthy_and_stays_open() {
        let mut rx = spawn(None, "orders");
        assert!(*rx.borrow());
        // Paused time: this waits an hour of virtual time for a change that
        // must not come, and the channel must not close either.
        let waited = tokio::time::timeout(Duration::from_secs(3600), rx.changed()).await;
        assert!(waited.is_err(), "the constant channel changed or closed");
        assert!(*rx.borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn next_change_waits_forever_once_the_sender_is_gone() {
        let (tx, mut rx) = watch::channel(true);
        drop(tx);
        let mut open = true;
        let waited =
            tokio::time::timeout(Duration::from_secs(60), next_change(&mut rx, &mut open)).await;
        assert!(waited.is_err());
        assert!(!open);
        assert!(*rx.borrow());
    }

    /// A service whose health answer the test flips.
    struct Service {
        status: AtomicU16,
        failed: AtomicU32,
        served: watch::Sender<u32>,
    }

    async fn service(status: u16) -> (Arc<Service>, Uri) {
        let service = Arc::new(Service {
            status: AtomicU16::new(status),
            failed: AtomicU32::new(0),
            served: watch::channel(0).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        let shared = service.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let shared = shared.clone();
                let answer = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let shared = shared.clone();
                    async move {
                        let status = match request.uri().path() {
                            "/healthz" => shared.status.load(Ordering::SeqCst),
                            _ => 404,
                        };
                        if !(200..300).contains(&status) {
                            shared.failed.fetch_add(1, Ordering::SeqCst);
                        }
                        shared.served.send_modify(|n| *n += 1);
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), answer),
                );
            }
        });
        (service, url.parse().unwrap())
    }

    async fn until(rx: &mut watch::Receiver<bool>, want: bool) {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| *h == want))
            .await
            .expect("verdict within 10 s")
            .expect("checker alive");
    }

    #[tokio::test]
    async fn follows_a_real_service_through_failure_and_recovery() {
        let (svc, url) = service(500).await;
        let check = HealthCheck {
            url,
            every: Duration::from_millis(100),
        };
        let mut healthy = spawn(Some(check), "orders");
        // Two failed checks: a checker that started healthy would still say
        // so; this one must not, as nothing has passed yet.
        let mut served = svc.served.subscribe();
        tokio::time::timeout(Duration::from_secs(10), served.wait_for(|n| *n >= 2))
            .await
            .unwrap()
            .unwrap();
        assert!(!*healthy.borrow());

        svc.status.store(204, Ordering::SeqCst);
        until(&mut healthy, true).await;

        let failed_before = svc.failed.load(Ordering::SeqCst);
        svc.status.store(503, Ordering::SeqCst);
        until(&mut healthy, false).await;
        let failures = svc.failed.load(Ordering::SeqCst) - failed_before;
        assert!(
            (FAILURES_TO_STEP_DOWN..=FAILURES_TO_STEP_DOWN + 1).contains(&failures),
            "stepped down after {failures} failures"
        );

        svc.status.store(200, Ordering::SeqCst);
        until(&mut healthy, true).await;
    }

    #[tokio::test]
    async fn an_unreachable_service_is_never_healthy() {
        // Bind then drop: the port is closed, every connect is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: Uri = format!("http://{}/healthz", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let client = Client::builder(TokioExecutor::new()).build_http();
        let err = probe(&client, &url, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("onnect"), "{err}");
    }

    #[tokio::test]
    async fn a_slow_answer_fails_the_check() {
        // Accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}/healthz", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                open.push(stream);
            }
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let err = probe(&client, &url, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.contains("no answer within"), "{err}");
    }
}
