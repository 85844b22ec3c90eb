//! The holder's phase (LEASES.md §4 steps 4–6): renew `L` every
//! `renew_every`, one keep-alive at a time; stamp only until `valid_until`;
//! watch our own key; end the tenure the moment etcd says it is over.
//!
//! Everything slow (a keep-alive, re-opening the watch) runs as a future that
//! the one `select!` polls, so commands, health and the deadline are served
//! however slow or absent etcd is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Backoff;
use super::gateway::{Error, Gateway, Watch, WatchEvent};
use super::{from_now, later, sleep_some, Flow, Task, Tenure, FIRST_BACKOFF};
use crate::lease::{health, validity, Command, Holder, LeaseView};

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Renewal = (Instant, Result<i64, Error>);
type Rewatch = Result<Option<(Watch, u64)>, Error>;

/// What woke the holder.
enum Wake {
    Command(Option<Command>),
    Health,
    Deadline,
    RenewDue,
    Renewed(Renewal),
    Watched(Result<WatchEvent, Error>),
    RewatchDue,
    Rewatched(Rewatch),
}

/// The holder's state around its tenure.
struct Holding {
    tenure: Tenure,
    me: Holder,
    /// Whether the published view lets the gate stamp.
    stamping: bool,
    renew_at: tokio::time::Instant,
    renewal: Option<Pending<Renewal>>,
    renew_backoff: Backoff,
    watch: Option<Watch>,
    /// Where to resume watching our key; `None`: re-read it first.
    watch_from: Option<u64>,
    rewatch_at: Option<tokio::time::Instant>,
    rewatch: Option<Pending<Rewatch>>,
}

impl Task {
    /// Holds `tenure` until it ends (the flow goes on: acquire or follow
    /// again) or the task is told to stop.
    pub(super) async fn hold(&mut self, tenure: Tenure) -> Flow {
        let renew_every = self.ctx.spec.renew_every;
        let mut h = Holding {
            tenure,
            me: self.ctx.node.holder(),
            stamping: false,
            renew_at: from_now(renew_every),
            renewal: None,
            renew_backoff: Backoff::new(FIRST_BACKOFF, renew_every),
            watch: None,
            watch_from: Some(tenure.revision.saturating_add(1)),
            rewatch_at: Some(tokio::time::Instant::now()),
            rewatch: None,
        };
        // A grant slow enough to be used up already waits for a renewal.
        self.publish_holding(&mut h);
        loop {
            self.check_deadline(&mut h);
            let wake = self.next_wake(&mut h).await;
            if let Some(flow) = self.on_wake(&mut h, wake).await {
                return flow;
            }
        }
    }

    async fn next_wake(&mut self, h: &mut Holding) -> Wake {
        let expiry = self.deadline(h.tenure.valid_until);
        let rewatch_due = h.watch.is_none() && h.rewatch.is_none();
        tokio::select! {
            command = self.ctx.commands.recv() => Wake::Command(command),
            () = health::next_change(&mut self.ctx.healthy, &mut self.health_open) => Wake::Health,
            () = tokio::time::sleep_until(expiry), if h.stamping => Wake::Deadline,
            () = tokio::time::sleep_until(h.renew_at), if h.renewal.is_none() => Wake::RenewDue,
            renewal = poll_some(&mut h.renewal) => Wake::Renewed(renewal),
            event = next_event(&mut h.watch) => Wake::Watched(event),
            () = sleep_some(h.rewatch_at), if rewatch_due => Wake::RewatchDue,
            rewatch = poll_some(&mut h.rewatch) => Wake::Rewatched(rewatch),
        }
    }

    async fn on_wake(&mut self, h: &mut Holding, wake: Wake) -> Option<Flow> {
        match wake {
            Wake::Command(command) => {
                let stop = !matches!(command, Some(Command::Release { .. }));
                self.step_down(Some(h.tenure.lease), command).await;
                return Some(if stop { Flow::Stop } else { Flow::Continue });
            }
            Wake::Health if !*self.ctx.healthy.borrow_and_update() => {
                tracing::warn!(lease = %self.ctx.spec.name, "service unhealthy: stepping down");
                self.step_down(Some(h.tenure.lease), None).await;
                return Some(Flow::Continue);
            }
            // The deadline itself is checked before every wait.
            Wake::Health | Wake::Deadline => {}
            Wake::RenewDue => self.send_keep_alive(h),
            Wake::Renewed((t_sent, answer)) => {
                h.renewal = None;
                return self.on_renewed(h, t_sent, answer).await;
            }
            Wake::Watched(event) => return self.on_watched(h, event).await,
            Wake::RewatchDue => self.start_rewatch(h),
            Wake::Rewatched(rewatch) => {
                h.rewatch = None;
                return self.on_rewatched(h, rewatch).await;
            }
        }
        None
    }

    fn send_keep_alive(&self, h: &mut Holding) {
        let t_sent = self.ctx.clock.now();
        let gateway = self.gateway.clone();
        let lease = h.tenure.lease;
        h.renewal = Some(Box::pin(async move {
            (t_sent, gateway.keep_alive(lease).await)
        }));
    }

    /// §4.4–5: a TTL extends `valid_until` from the keep-alive's `t_sent`; a
    /// failure leaves it alone and retries; no TTL ends the tenure.
    async fn on_renewed(
        &mut self,
        h: &mut Holding,
        t_sent: Instant,
        answer: Result<i64, Error>,
    ) -> Option<Flow> {
        match answer {
            Ok(ttl) if ttl > 0 => {
                let granted = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
                let until = validity::valid_until(t_sent, granted, self.ctx.spec.max_drift);
                h.tenure.valid_until = h.tenure.valid_until.max(until);
                self.publish_holding(h);
                h.renew_backoff.reset();
                h.renew_at = from_now(self.ctx.spec.renew_every);
                None
            }
            Ok(_) => {
                self.lost(&h.tenure, "etcd lease expired").await;
                Some(Flow::Continue)
            }
            Err(e) => {
                self.count(&e);
                h.renew_at = from_now(h.renew_backoff.next_delay());
                None
            }
        }
    }

    /// Our key changed: a put of our own tenure is harmless; anything else
    /// (deleted, recreated, moved to another lease) ends the tenure.
    async fn on_watched(
        &mut self,
        h: &mut Holding,
        event: Result<WatchEvent, Error>,
    ) -> Option<Flow> {
        match event {
            Ok(WatchEvent::Put(kv))
                if kv.create_revision == h.tenure.token && kv.lease == h.tenure.lease =>
            {
                h.watch_from = h
                    .watch_from
                    .map(|from| from.max(kv.mod_revision.saturating_add(1)));
                None
            }
            Ok(_) => {
                self.lost(&h.tenure, "etcd lease key deleted or replaced")
                    .await;
                Some(Flow::Continue)
            }
            Err(e) => {
                if let Error::Compacted { .. } = e {
                    h.watch_from = None;
                }
                self.count(&e);
                h.watch = None;
                h.rewatch_at = Some(from_now(self.backoff.next_delay()));
                None
            }
        }
    }

    fn start_rewatch(&self, h: &mut Holding) {
        h.rewatch_at = None;
        h.rewatch = Some(Box::pin(watch_own_key(
            self.gateway.clone(),
            self.key.clone(),
            h.tenure,
            h.watch_from,
        )));
    }

    async fn on_rewatched(&mut self, h: &mut Holding, rewatch: Rewatch) -> Option<Flow> {
        match rewatch {
            Ok(Some((watch, from))) => {
                h.watch = Some(watch);
                h.watch_from = Some(from);
                None
            }
            Ok(None) => {
                self.lost(&h.tenure, "etcd lease key gone").await;
                Some(Flow::Continue)
            }
            Err(e) => {
                self.count(&e);
                h.rewatch_at = Some(from_now(self.backoff.next_delay()));
                None
            }
        }
    }

    /// Publishes the tenure as usable if it still is.
    fn publish_holding(&self, h: &mut Holding) {
        if h.tenure.valid_until <= self.ctx.clock.now() {
            return;
        }
        if !h.stamping {
            tracing::info!(lease = %self.ctx.spec.name, token = h.tenure.token, "stamping");
        }
        h.stamping = true;
        self.ctx.publisher.publish(LeaseView::holding(
            h.me.clone(),
            h.tenure.token,
            h.tenure.valid_until,
        ));
    }

    /// At `valid_until` the gate stops stamping by itself; this makes the
    /// published role say so too.
    fn check_deadline(&self, h: &mut Holding) {
        if h.stamping && self.ctx.clock.now() >= h.tenure.valid_until {
            tracing::warn!(lease = %self.ctx.spec.name, token = h.tenure.token,
                "etcd lease not renewed in time: no longer stamping");
            self.ctx.publisher.publish(LeaseView::unknown());
            h.stamping = false;
        }
    }

    /// The tenure ended without this node asking: stop stamping at once,
    /// make sure `L` is gone, and let followers (who wait up to `ttl/10`
    /// after the key's deletion) try first.
    async fn lost(&mut self, tenure: &Tenure, why: &str) {
        tracing::warn!(lease = %self.ctx.spec.name, token = tenure.token, "{why}: tenure over");
        self.ctx.publisher.publish(LeaseView::unknown());
        let tenth = self.ctx.spec.ttl / 10;
        let pause = tenth.saturating_add(self.backoff.jitter(tenth));
        self.cooldown_until = Some(later(self.ctx.clock.now(), pause));
        self.revoke(tenure.lease).await;
    }
}

/// Watches our key from `from`; without one (or when that revision is
/// compacted) reads the key to check it is still ours and watches from the
/// read. `Ok(None)`: the key is no longer ours.
async fn watch_own_key(
    gateway: Arc<Gateway>,
    key: Vec<u8>,
    tenure: Tenure,
    from: Option<u64>,
) -> Rewatch {
    if let Some(from) = from {
        match gateway.watch(&key, from).await {
            Ok(w) => return Ok(Some((w, from))),
            Err(Error::Compacted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let range = gateway.range(&key).await?;
    let ours = range
        .kv
        .is_some_and(|kv| kv.create_revision == tenure.token && kv.lease == tenure.lease);
    if !ours {
        return Ok(None);
    }
    let from = range.revision.saturating_add(1);
    Ok(Some((gateway.watch(&key, from).await?, from)))
}

/// Polls the future if there is one; never completes otherwise.
async fn poll_some<T>(f: &mut Option<Pending<T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_event(w: &mut Option<Watch>) -> Result<WatchEvent, Error> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}
