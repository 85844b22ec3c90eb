//! The `etcd` lease backend (LEASES.md §4): a lease is an etcd key attached
//! to an etcd lease, taken the way etcd's own `concurrency.Election` does,
//! and its fencing token is the key's `create_revision`, which grows with
//! every write to etcd and survives etcd restarts with its data.
//!
//! One task per lease, in three phases:
//! - **acquire**: `t0 = now`, grant an etcd lease `L` (TTL `T`, perhaps raised
//!   by etcd), then `Txn If CreateRevision(key) == 0 Then Put(key, me, L)
//!   Else Get(key)`. Won: hold with `valid_until = t0 + D(T)`. Lost: revoke
//!   `L` and follow the holder the `Get` names.
//! - **hold**: keep-alive `L` every `renew_every`, one at a time, each from a
//!   `t_sent` read before sending; `TTL > 0` extends `valid_until` to
//!   `t_sent + D(TTL)`. Failing keep-alives leave `valid_until` alone (the
//!   gate stops stamping there) and keep retrying `L`. `TTL ≤ 0`, or our key
//!   deleted or recreated (we watch it), ends the tenure at once.
//! - **follow**: publish the holder, watch the key; on `DELETE`, acquire after
//!   a jitter of up to `ttl/10`. A range read every `ttl` checks the watch
//!   still stands (a paused or partitioned etcd sends nothing).
//!
//! etcd unreachable: count the error, back off (100 ms doubling up to
//! `ttl/2`, jittered), try again; a follower keeps the last holder it saw
//! for forwarding. Release, shutdown and an unhealthy service all step down
//! the same way: publish a view without `valid_until`, then revoke `L`, and
//! take no tenure for one `ttl`. A tenure lost without asking waits
//! `ttl/10..ttl/5` before trying again, so followers (`0..ttl/10`) go first.
//!
//! Files: [`gateway`] (the HTTP/JSON client, with `error`, `watch`, `wire`
//! and `stream` beneath it), `hold` and `follow` (the two phases), `record`
//! (the value under the key), `backoff` (retry pacing).

mod backoff;
mod error;
mod follow;
pub mod gateway;
mod hold;
mod record;
mod stream;
mod watch;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use self::backoff::Backoff;
use self::gateway::{Acquire, Error, Gateway, KeyValue};
use super::{validity, Backend, BackendCtx, Command, LeaseView};
use crate::config::EtcdSpec;

/// The longest any single request to etcd may take.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The first retry delay after an error.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The `etcd` backend for one lease.
#[derive(Debug, Clone)]
pub struct EtcdBackend {
    etcd: EtcdSpec,
}

impl EtcdBackend {
    pub fn new(etcd: EtcdSpec) -> Self {
        Self { etcd }
    }

    /// The timeout of each request for a lease of `ttl`: `min(ttl/3, 2 s)`.
    pub fn request_timeout(ttl: Duration) -> Duration {
        (ttl / 3).clamp(Duration::from_millis(1), MAX_REQUEST_TIMEOUT)
    }
}

impl Backend for EtcdBackend {
    fn run(self: Box<Self>, ctx: BackendCtx) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(Task::new(&self.etcd, ctx).run())
    }
}

/// Whether the task goes on after a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// One tenure of this node.
#[derive(Debug, Clone, Copy)]
struct Tenure {
    lease: i64,
    token: u64,
    valid_until: Instant,
    /// The store's revision when it began: watch our key from just after it.
    revision: u64,
}

/// The outcome of one acquisition round.
enum Attempt {
    Won(Tenure),
    Held { revision: u64, holder: KeyValue },
}

struct Task {
    ctx: BackendCtx,
    gateway: Arc<Gateway>,
    key: Vec<u8>,
    value: Vec<u8>,
    backoff: Backoff,
    /// No acquisition before this (one `ttl` after stepping down).
    cooldown_until: Option<Instant>,
    /// False once the health sender is gone (its last value then stands).
    health_open: bool,
}

impl Task {
    fn new(etcd: &EtcdSpec, ctx: BackendCtx) -> Self {
        let ttl = ctx.spec.ttl;
        let gateway = Arc::new(Gateway::new(etcd, EtcdBackend::request_timeout(ttl)));
        let key = format!("{}{}", etcd.prefix, ctx.spec.name).into_bytes();
        let value = record::encode(&ctx.node);
        Self {
            backoff: Backoff::new(FIRST_BACKOFF, ttl / 2),
            ctx,
            gateway,
            key,
            value,
            cooldown_until: None,
            health_open: true,
        }
    }

    async fn run(mut self) {
        loop {
            let flow = match self.round().await {
                Ok(flow) => flow,
                Err(e) => {
                    self.count(&e);
                    let delay = self.backoff.next_delay();
                    self.rest(delay).await
                }
            };
            if flow == Flow::Stop {
                return;
            }
        }
    }

    /// Acquire (or, while this node may not, just read the key), then hold
    /// or follow until that phase ends.
    async fn round(&mut self) -> Result<Flow, Error> {
        if !self.may_acquire() {
            let range = self.gateway.range(&self.key).await?;
            return self.follow(range.revision, range.kv).await;
        }
        match self.acquire().await? {
            Attempt::Won(tenure) => {
                self.backoff.reset();
                Ok(self.hold(tenure).await)
            }
            Attempt::Held { revision, holder } => self.follow(revision, Some(holder)).await,
        }
    }

    /// LEASES.md §4 steps 1–3.
    async fn acquire(&mut self) -> Result<Attempt, Error> {
        let t0 = self.ctx.clock.now();
        let grant = self.gateway.grant(whole_seconds(self.ctx.spec.ttl)).await?;
        let outcome = self.gateway.acquire(&self.key, &self.value, grant.id).await;
        let (token, revision) = match outcome {
            Ok(Acquire::Won { token }) => (token, token),
            // Our own put, when a retried transaction had in fact succeeded.
            Ok(Acquire::Held { revision, holder }) if holder.lease == grant.id => {
                (holder.create_revision, revision)
            }
            Ok(Acquire::Held { revision, holder }) => {
                self.revoke(grant.id).await;
                return Ok(Attempt::Held { revision, holder });
            }
            Err(e) => {
                self.revoke(grant.id).await;
                return Err(e);
            }
        };
        let valid_until = validity::valid_until(t0, grant.ttl, self.ctx.spec.max_drift);
        tracing::info!(lease = %self.ctx.spec.name, token, ttl = ?grant.ttl, "etcd lease acquired");
        Ok(Attempt::Won(Tenure {
            lease: grant.id,
            token,
            valid_until,
            revision,
        }))
    }

    /// Steps down: no more stamping (published first), answers the command,
    /// then revokes `lease` (deleting the key) and takes no tenure for one
    /// `ttl`.
    async fn step_down(&mut self, lease: Option<i64>, command: Option<Command>) {
        self.ctx.publisher.publish(LeaseView::unknown());
        self.cooldown_until = Some(later(self.ctx.clock.now(), self.ctx.spec.ttl));
        match command {
            Some(Command::Release { done } | Command::Shutdown { done }) => {
                let _ = done.send(());
            }
            None => {}
        }
        if let Some(lease) = lease {
            self.revoke(lease).await;
            tracing::info!(lease = %self.ctx.spec.name, "etcd lease released");
        }
    }

    /// Answers a command while holding nothing.
    fn answer_idle(&mut self, command: Option<Command>) -> Flow {
        self.cooldown_until = Some(later(self.ctx.clock.now(), self.ctx.spec.ttl));
        match command {
            Some(Command::Release { done }) => {
                let _ = done.send(());
                Flow::Continue
            }
            Some(Command::Shutdown { done }) => {
                let _ = done.send(());
                Flow::Stop
            }
            None => Flow::Stop,
        }
    }

    /// Waits `delay`, answering commands meanwhile.
    async fn rest(&mut self, delay: Duration) -> Flow {
        let until = from_now(delay);
        loop {
            tokio::select! {
                command = self.ctx.commands.recv() => {
                    if self.answer_idle(command) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                () = tokio::time::sleep_until(until) => return Flow::Continue,
            }
        }
    }

    /// Best effort: a lease not revoked expires after its TTL anyway.
    async fn revoke(&self, lease: i64) {
        if let Err(e) = self.gateway.revoke(lease).await {
            self.count(&e);
        }
    }

    fn may_acquire(&self) -> bool {
        *self.ctx.healthy.borrow()
            && !matches!(self.cooldown_until, Some(until) if self.ctx.clock.now() < until)
    }

    fn count(&self, e: &Error) {
        self.ctx.errors.inc();
        tracing::warn!(lease = %self.ctx.spec.name, error = %e, "etcd lease backend error");
    }

    /// The tokio instant at which the lease clock should read `at`, as far
    /// as can be told now. Whoever sleeps until it re-checks the lease clock.
    fn deadline(&self, at: Instant) -> tokio::time::Instant {
        let remaining = at.saturating_duration_since(self.ctx.clock.now());
        from_now(remaining.max(Duration::from_millis(1)))
    }
}

/// `ttl` in whole seconds, rounded up, at least 1 (etcd's unit).
fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1)
}

/// `at + d`, or a year after `at` if that does not fit (a `d` that large
/// means "not in this process's life" anyway): never an overflow panic.
fn later(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// [`later`] from the tokio clock's now, for timers.
fn from_now(d: Duration) -> tokio::time::Instant {
    later(tokio::time::Instant::now(), d)
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds(Duration::from_millis(10_001)), 11);
        assert_eq!(whole_seconds(Duration::MAX), u64::MAX);
    }

    #[test]
    fn adding_a_huge_duration_does_not_panic() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[test]
    fn requests_time_out_within_a_third_of_the_ttl_and_two_seconds() {
        let t = EtcdBackend::request_timeout;
        assert_eq!(t(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(t(Duration::from_secs(30)), Duration::from_secs(2));
        assert_eq!(t(Duration::ZERO), Duration::from_millis(1));
    }
}
