//! The `local` backend (LEASES.md §2): no peers, so this process is always
//! the holder, with no deadline. Tokens still grow with every tenure, also
//! across restarts, so a service that fences works the same here as behind
//! a shared backend, and keeps working when the deployment moves to one.
//!
//! The counter lives in `cluster.state_dir/local-NAME` and is bumped before
//! each tenure is published (temp file, fsync, rename, fsync of the
//! directory), so no crash can hand out a token twice.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::view::{unix_ms, LeaseView};
use super::{health, Backend, BackendCtx, Command};

/// How far ahead a `local` tenure's deadline lies: far enough to never come.
const UNBOUNDED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest counter file read; a number takes at most 20 digits.
const MAX_COUNTER_BYTES: u64 = 64;

/// Why the local token counter cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// The lease name holds a `/` or NUL.
    #[error("lease name {lease:?} cannot be part of a file name in cluster.state_dir")]
    BadName { lease: String },
    /// The state dir is missing, unreachable or not a directory.
    #[error("cluster.state_dir {}: {reason}", dir.display())]
    StateDir { dir: PathBuf, reason: String },
    /// The counter file exists but cannot be read.
    #[error("cannot read the lease counter {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The counter file holds something other than one number.
    #[error(
        "the lease counter {} is corrupt: expected one decimal number, found {found:?}; \
         restore it, or write a number above every token the service has seen",
        path.display()
    )]
    Corrupt { path: PathBuf, found: String },
    /// The counter reached `u64::MAX`.
    #[error("the lease counter {} is at its maximum", path.display())]
    Exhausted { path: PathBuf },
    /// The new value could not be stored durably.
    #[error("cannot write the lease counter {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Where tokens come from.
#[derive(Debug)]
enum Counter {
    /// A number persisted in `path`, bumped for every tenure.
    File { path: PathBuf },
    /// No state dir: unix milliseconds, and at least one more than the last.
    /// A restart takes longer than a millisecond, so tokens grow across
    /// restarts as long as the wall clock does not step back by more than
    /// the downtime; `validate` warns about this setup.
    WallClock { last: u64 },
}

impl Counter {
    fn next(&mut self) -> Result<u64, CounterError> {
        match self {
            Counter::File { path } => bump(path),
            Counter::WallClock { last } => {
                let now = unix_ms(SystemTime::now());
                *last = now.max(last.saturating_add(1));
                Ok(*last)
            }
        }
    }
}

/// The `local` backend of one lease.
#[derive(Debug)]
pub struct LocalBackend {
    counter: Counter,
    first: u64,
}

impl LocalBackend {
    /// Opens lease `lease`'s counter in `state_dir` (or the wall clock
    /// without one) and takes the first tenure's token now, so a bad file
    /// stops the start with an error naming it.
    pub fn open(lease: &str, state_dir: Option<&Path>) -> Result<Self, CounterError> {
        let mut counter = match state_dir {
            Some(dir) => Counter::File {
                path: counter_path(dir, lease)?,
            },
            None => {
                tracing::warn!(
                    lease,
                    "no cluster.state_dir: the lease's fencing tokens come from the wall clock \
                     (milliseconds at start) and grow across restarts only while the clock \
                     never steps back; set cluster.state_dir to persist them"
                );
                Counter::WallClock { last: 0 }
            }
        };
        let first = counter.next()?;
        Ok(Self { counter, first })
    }

    /// The token the first tenure will carry.
    pub fn first_token(&self) -> u64 {
        self.first
    }

    async fn serve(mut self: Box<Self>, mut ctx: BackendCtx) {
        let me = ctx.node.holder();
        let ttl = ctx.spec.ttl;
        let mut fresh = Some(self.first);
        let mut not_before = ctx.clock.now();
        let mut health_open = true;
        loop {
            let now = ctx.clock.now();
            if *ctx.healthy.borrow_and_update() && now >= not_before {
                // A blocking write and two fsyncs on a runtime thread: rare
                // (once per tenure after a step-down) and short, and
                // `block_in_place` would panic on a current-thread runtime.
                let token = match fresh.take() {
                    Some(token) => Ok(token),
                    None => self.counter.next(),
                };
                match token {
                    Ok(token) => {
                        let until = later(now, UNBOUNDED);
                        ctx.publisher
                            .publish(LeaseView::holding(me.clone(), token, until));
                        let end = hold(&mut ctx, &mut health_open).await;
                        ctx.publisher.publish(LeaseView::unknown());
                        match end {
                            End::SteppedDown(done) => {
                                if let Some(done) = done {
                                    let _ = done.send(());
                                }
                                not_before = later(ctx.clock.now(), ttl);
                            }
                            End::Shutdown(done) => {
                                let _ = done.send(());
                                return;
                            }
                            End::Dropped => return,
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            lease = %ctx.spec.name, error = %e,
                            "cannot take a new fencing token; trying again after one ttl"
                        );
                        ctx.errors.inc();
                        not_before = later(now, ttl);
                    }
                }
                continue;
            }
            let cooling = now < not_before;
            tokio::select! {
                command = ctx.commands.recv() => match command {
                    None => return,
                    // Not holding: there is nothing to step down from.
                    Some(Command::Release { done }) => { let _ = done.send(()); }
                    Some(Command::Shutdown { done }) => {
                        let _ = done.send(());
                        return;
                    }
                },
                () = health::next_change(&mut ctx.healthy, &mut health_open) => {}
                () = tokio::time::sleep_until(not_before), if cooling => {}
            }
        }
    }
}

impl Backend for LocalBackend {
    fn run(self: Box<Self>, ctx: BackendCtx) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.serve(ctx))
    }
}

/// How a tenure ended.
enum End {
    /// Released or unhealthy; `done` answers a release.
    SteppedDown(Option<tokio::sync::oneshot::Sender<()>>),
    Shutdown(tokio::sync::oneshot::Sender<()>),
    /// The `Lease` is gone.
    Dropped,
}

/// Holds until told to stop or the service turns unhealthy.
async fn hold(ctx: &mut BackendCtx, health_open: &mut bool) -> End {
    loop {
        tokio::select! {
            command = ctx.commands.recv() => return match command {
                None => End::Dropped,
                Some(Command::Release { done }) => End::SteppedDown(Some(done)),
                Some(Command::Shutdown { done }) => End::Shutdown(done),
            },
            () = health::next_change(&mut ctx.healthy, health_open) => {
                if !*ctx.healthy.borrow_and_update() {
                    return End::SteppedDown(None);
                }
            }
        }
    }
}

/// `at + by`, or `at` plus the most that fits.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(at)
}

/// `dir/local-NAME`, once `dir` is known to be a directory.
pub fn counter_path(dir: &Path, lease: &str) -> Result<PathBuf, CounterError> {
    if lease.contains(['/', '\0']) {
        return Err(CounterError::BadName {
            lease: lease.to_owned(),
        });
    }
    let state_dir = |reason: String| CounterError::StateDir {
        dir: dir.to_owned(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(dir.join(format!("local-{lease}"))),
        Ok(_) => Err(state_dir("not a directory".into())),
        Err(e) => Err(state_dir(e.to_string())),
    }
}

/// Reads the counter at `path` (a missing file counts as 0), adds one, and
/// stores the result durably before returning it.
pub fn bump(path: &Path) -> Result<u64, CounterError> {
    let next = read(path)?
        .checked_add(1)
        .ok_or_else(|| CounterError::Exhausted {
            path: path.to_owned(),
        })?;
    write(path, next)?;
    Ok(next)
}

fn read(path: &Path) -> Result<u64, CounterError> {
    let read_error = |source| CounterError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(read_error(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_COUNTER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let corrupt = || CounterError::Corrupt {
        path: path.to_owned(),
        found: String::from_utf8_lossy(&bytes).into_owned(),
    };
    if bytes.len() as u64 > MAX_COUNTER_BYTES {
        return Err(corrupt());
    }
    std::str::from_utf8(&bytes)
        .ok()
        .map(str::trim)
        .filter(|text| text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(corrupt)
}

/// Writes `value` to `path`, crash-safe (see [`super::durable::write_atomic`]).
fn write(path: &Path, value: u64) -> Result<(), CounterError> {
    super::durable::write_atomic(path, format!("{value}\n").as_bytes())
        .map_err(|(path, source)| CounterError::Write { path, source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::sync::Arc;

    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::config::{LeaseBackend, LeaseSpec, OnFollower};
    use crate::lease::{Lease, LeaseMetrics, NodeIdentity, Publisher, Role, TokioClock};
    use crate::metrics::Metrics;

    const TTL: Duration = Duration::from_secs(10);

    fn spec() -> LeaseSpec {
        LeaseSpec {
            name: "orders".into(),
            backend: LeaseBackend::Local,
            ttl: TTL,
            renew_every: TTL / 3,
            max_drift: 1.0,
            on_follower: OnFollower::Forward,
            wait: Duration::ZERO,
            require_healthy: None,
        }
    }

    fn node() -> Arc<NodeIdentity> {
        Arc::new(NodeIdentity {
            node_id: "orders-0".into(),
            forward_url: None,
            public_url: None,
        })
    }

    fn start(backend: LocalBackend, healthy: watch::Receiver<bool>) -> (Arc<Lease>, Metrics) {
        let metrics = Metrics::new();
        let lease_metrics = LeaseMetrics::new(&metrics).unwrap();
        let lease = Lease::start(
            spec(),
            node(),
            Box::new(backend),
            healthy,
            Arc::new(TokioClock),
            &lease_metrics,
        );
        (lease, metrics)
    }

    fn always_healthy() -> watch::Receiver<bool> {
        health::spawn(None, "orders")
    }

    /// Waits (in paused time, bounded) until the lease's role is `want`.
    async fn role(lease: &Lease, want: Role) -> Arc<LeaseView> {
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let view = lease.view();
            if view.role() == want {
                return view;
            }
            assert!(Instant::now() < deadline, "never became {want:?}: {view:?}");
            lease.wait_for_change_since(&view, deadline).await;
        }
    }

    fn counter_file(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("local-orders")).unwrap()
    }

    fn metric(metrics: &Metrics, line_start: &str) -> String {
        let text = String::from_utf8(metrics.render()).unwrap();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn first_start_takes_token_one_and_persists_it() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open("orders", Some(dir.path())).unwrap();
        assert_eq!(backend.first_token(), 1);
        assert_eq!(counter_file(dir.path()), "1\n");
    }

    #[test]
    fn every_start_takes_a_greater_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local-orders"), "41\n").unwrap();
        let tokens: Vec<u64> = (0..3)
            .map(|_| {
                LocalBackend::open("orders", Some(dir.path()))
                    .unwrap()
                    .first_token()
            })
            .collect();
        assert_eq!(tokens, [42, 43, 44]);
        assert_eq!(counter_file(dir.path()), "44\n");
    }

    #[test]
    fn leases_count_separately() {
        let dir = tempfile::tempdir().unwrap();
        LocalBackend::open("orders", Some(dir.path())).unwrap();
        LocalBackend::open("orders", Some(dir.path())).unwrap();
        let billing = LocalBackend::open("billing", Some(dir.path())).unwrap();
        assert_eq!(billing.first_token(), 1);
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        LocalBackend::open("orders", Some(dir.path())).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["local-orders"]);
    }

    #[test]
    fn a_corrupt_counter_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local-orders");
        for bad in [
            &b""[..],
            b"\n",
            b"twelve\n",
            b"-3\n",
            b"+3\n",
            b"1 2\n",
            b"18446744073709551616\n",
            b"\xff\xfe",
            &[b'7'; 100],
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = LocalBackend::open("orders", Some(dir.path())).unwrap_err();
            assert!(
                matches!(err, CounterError::Corrupt { .. }),
                "{bad:?}: {err}"
            );
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            // The file is left as it was, for the operator to look at.
            assert_eq!(std::fs::read(&path).unwrap(), bad);
        }
    }

    #[test]
    fn surrounding_whitespace_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local-orders"), " 9 \r\n").unwrap();
        let backend = LocalBackend::open("orders", Some(dir.path())).unwrap();
        assert_eq!(backend.first_token(), 10);
    }

    #[test]
    fn an_exhausted_counter_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("local-orders"), u64::MAX.to_string()).unwrap();
        let err = LocalBackend::open("orders", Some(dir.path())).unwrap_err();
        assert!(matches!(err, CounterError::Exhausted { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_counter_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: open succeeds, read fails.
        let path = dir.path().join("local-orders");
        std::fs::create_dir(&path).unwrap();
        let err = LocalBackend::open("orders", Some(dir.path())).unwrap_err();
        assert!(matches!(err, CounterError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_missing_state_dir_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = LocalBackend::open("orders", Some(&missing)).unwrap_err();
        assert!(matches!(err, CounterError::StateDir { .. }), "{err}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = LocalBackend::open("orders", Some(&file)).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn a_lease_name_that_is_a_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../escape", "a/b", "nul\0"] {
            let err = LocalBackend::open(name, Some(dir.path())).unwrap_err();
            assert!(
                matches!(err, CounterError::BadName { .. }),
                "{name:?}: {err}"
            );
        }
        // Dots alone are harmless behind the `local-` prefix.
        assert!(LocalBackend::open("..", Some(dir.path())).is_ok());
        assert!(dir.path().join("local-..").is_file());
    }

    #[test]
    fn without_a_state_dir_the_token_is_unix_milliseconds() {
        let before = unix_ms(SystemTime::now());
        let token = LocalBackend::open("orders", None).unwrap().first_token();
        let after = unix_ms(SystemTime::now());
        assert!(
            (before..=after).contains(&token),
            "{before} <= {token} <= {after}"
        );
    }

    #[test]
    fn wall_clock_tokens_grow_even_within_one_millisecond() {
        let mut counter = Counter::WallClock { last: u64::MAX - 1 };
        assert_eq!(counter.next().unwrap(), u64::MAX);
        let mut counter = Counter::WallClock { last: 0 };
        let a = counter.next().unwrap();
        let b = counter.next().unwrap();
        let c = counter.next().unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[tokio::test(start_paused = true)]
    async fn holds_at_start_with_the_first_token_and_no_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (lease, metrics) = start(
            LocalBackend::open("orders", Some(dir.path())).unwrap(),
            always_healthy(),
        );
        let view = role(&lease, Role::Holder).await;
        assert_eq!(view.token, Some(1));
        assert_eq!(view.holder.as_ref().unwrap().node_id, "orders-0");
        assert!(view.may_stamp(Instant::now() + Duration::from_secs(50 * 365 * 24 * 3600)));
        assert_eq!(
            metric(&metrics, r#"breakwater_lease_is_holder{lease="orders"}"#),
            r#"breakwater_lease_is_holder{lease="orders"} 1"#
        );
        assert_eq!(
            metric(&metrics, r#"breakwater_lease_token{lease="orders"}"#),
            r#"breakwater_lease_token{lease="orders"} 1"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_steps_down_for_one_ttl_then_holds_with_a_greater_token() {
        let dir = tempfile::tempdir().unwrap();
        let (lease, metrics) = start(
            LocalBackend::open("orders", Some(dir.path())).unwrap(),
            always_healthy(),
        );
        role(&lease, Role::Holder).await;
        let released_at = Instant::now();
        lease.release().await;
        // Once release returns, this node no longer stamps.
        let view = lease.view();
        assert_eq!(view.role(), Role::Unknown);
        assert!(!view.may_stamp(Instant::now()));
        let view = role(&lease, Role::Holder).await;
        assert!(Instant::now() - released_at >= TTL);
        assert_eq!(view.token, Some(2));
        assert_eq!(counter_file(dir.path()), "2\n");
        assert_eq!(
            metric(
                &metrics,
                r#"breakwater_lease_transitions_total{lease="orders",to="holder"}"#
            ),
            r#"breakwater_lease_transitions_total{lease="orders",to="holder"} 2"#
        );
        assert_eq!(
            metric(
                &metrics,
                r#"breakwater_lease_transitions_total{lease="orders",to="unknown"}"#
            ),
            r#"breakwater_lease_transitions_total{lease="orders",to="unknown"} 1"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_while_cooling_down_answers_and_keeps_waiting() {
        let (lease, _metrics) = start(
            LocalBackend::open("orders", None).unwrap(),
            always_healthy(),
        );
        let first = role(&lease, Role::Holder).await.token.unwrap();
        let released_at = Instant::now();
        lease.release().await;
        lease.release().await;
        let view = role(&lease, Role::Holder).await;
        assert!(Instant::now() - released_at >= TTL);
        assert!(view.token.unwrap() > first);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_steps_down_and_ends_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let (lease, metrics) = start(
            LocalBackend::open("orders", Some(dir.path())).unwrap(),
            always_healthy(),
        );
        role(&lease, Role::Holder).await;
        lease.shutdown().await;
        assert_eq!(lease.view().role(), Role::Unknown);
        assert!(lease.task.lock().unwrap().is_none());
        assert_eq!(
            metric(&metrics, r#"breakwater_lease_is_holder{lease="orders"}"#),
            r#"breakwater_lease_is_holder{lease="orders"} 0"#
        );
        // A second shutdown, and a release after it, return at once.
        lease.shutdown().await;
        lease.release().await;
        // Waiting on an ended lease returns at once with the last view.
        let far = Instant::now() + Duration::from_secs(3600);
        let before = Instant::now();
        lease.wait_for_change(far).await;
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_health_and_steps_down_when_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let (healthy, rx) = watch::channel(false);
        let (lease, _metrics) = start(LocalBackend::open("orders", Some(dir.path())).unwrap(), rx);
        // Unhealthy from the start: an hour passes without a tenure.
        let view = lease
            .wait_for_change_since(&lease.view(), Instant::now() + Duration::from_secs(3600))
            .await;
        assert_eq!(view.role(), Role::Unknown);

        healthy.send(true).unwrap();
        assert_eq!(role(&lease, Role::Holder).await.token, Some(1));

        healthy.send(false).unwrap();
        role(&lease, Role::Unknown).await;
        let stepped_down_at = Instant::now();
        // Healthy again at once: still no tenure before one ttl has passed.
        healthy.send(true).unwrap();
        let view = role(&lease, Role::Holder).await;
        assert!(Instant::now() - stepped_down_at >= TTL);
        assert_eq!(view.token, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_counter_that_cannot_be_written_blocks_the_next_tenure_until_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let (lease, metrics) = start(
            LocalBackend::open("orders", Some(&state)).unwrap(),
            always_healthy(),
        );
        role(&lease, Role::Holder).await;
        std::fs::remove_dir_all(&state).unwrap();
        let released_at = Instant::now();
        lease.release().await;
        let errors = r#"breakwater_lease_backend_errors_total{backend="local",lease="orders"}"#;
        // After one ttl the bump fails: counted, and still no tenure.
        let view = lease
            .wait_for_change_since(&lease.view(), released_at + TTL + TTL / 2)
            .await;
        assert_eq!(view.role(), Role::Unknown);
        assert_eq!(metric(&metrics, errors), format!("{errors} 1"));
        // Restored: the next try, one more ttl later, holds with token 2.
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("local-orders"), "1\n").unwrap();
        let view = role(&lease, Role::Holder).await;
        assert!(Instant::now() - released_at >= 2 * TTL);
        assert_eq!(view.token, Some(2));
        assert_eq!(metric(&metrics, errors), format!("{errors} 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_its_commands_channel_closes() {
        let metrics = Metrics::new();
        let handles = LeaseMetrics::new(&metrics)
            .unwrap()
            .handles("orders", "local");
        let (publisher, view, mut changes) = Publisher::new("orders-0", handles.clone());
        let (commands, receiver) = mpsc::channel(1);
        let ctx = BackendCtx {
            spec: spec(),
            node: node(),
            publisher,
            commands: receiver,
            healthy: always_healthy(),
            clock: Arc::new(TokioClock),
            errors: handles.backend_errors,
            details: Arc::default(),
        };
        let backend = Box::new(LocalBackend::open("orders", None).unwrap());
        let task = tokio::spawn(backend.run(ctx));
        changes
            .wait_for(|v| v.role() == Role::Holder)
            .await
            .unwrap();
        drop(commands);
        tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .expect("task ends")
            .unwrap();
        assert_eq!(view.load().role(), Role::Unknown);
    }
}
