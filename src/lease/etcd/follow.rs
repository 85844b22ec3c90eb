//! The follower's phase: publish who holds, watch the key, and go back to
//! acquiring once it is free and this node may take it (healthy, not
//! cooling down after a step-down), after a jitter of up to `ttl/10` so
//! replicas that saw the same `DELETE` do not all race for it at once.

use super::gateway::{Error, KeyValue, WatchEvent};
use std::time::Duration;

use super::{from_now, later, record, sleep_some, Flow, Task};
use crate::lease::{health, LeaseView};

impl Task {
    /// Follows the holder `kv` names (none if `None`) from just after
    /// `revision`. A range read every `ttl` checks that the watch still
    /// stands: a paused or partitioned etcd sends nothing, and an error here
    /// sends the task back to its retry loop.
    pub(super) async fn follow(
        &mut self,
        revision: u64,
        kv: Option<KeyValue>,
    ) -> Result<Flow, Error> {
        let ttl = self.ctx.spec.ttl;
        let mut holder = kv;
        self.publish_follower(holder.as_ref());
        let mut watch = self
            .gateway
            .watch(&self.key, revision.saturating_add(1))
            .await?;
        let mut acquire_at = self.ctx.clock.now();
        // `interval` refuses a zero period; validation already does too.
        let period = ttl.max(Duration::from_millis(1));
        let mut check = tokio::time::interval_at(from_now(period), period);
        loop {
            if holder.is_none() && self.may_acquire() && self.ctx.clock.now() >= acquire_at {
                return Ok(Flow::Continue);
            }
            let cooling = self.cooldown_until.map(|until| self.deadline(until));
            let acquire_deadline = self.deadline(acquire_at);
            tokio::select! {
                command = self.ctx.commands.recv() => {
                    if self.answer_idle(command) == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                () = health::next_change(&mut self.ctx.healthy, &mut self.health_open) => {}
                () = sleep_some(cooling), if cooling.is_some() => {
                    self.cooldown_until = None;
                }
                () = tokio::time::sleep_until(acquire_deadline), if holder.is_none() => {}
                event = watch.next() => {
                    // Only a watch that delivers counts as recovered: one that
                    // opens and then fails at once keeps backing off.
                    self.backoff.reset();
                    match event? {
                        WatchEvent::Delete { .. } => {
                            holder = None;
                            self.publish_follower(None);
                            acquire_at = later(self.ctx.clock.now(), self.backoff.jitter(ttl / 10));
                        }
                        WatchEvent::Put(kv) => {
                            self.publish_follower(Some(&kv));
                            holder = Some(kv);
                        }
                    }
                }
                _ = check.tick() => {
                    let range = self.gateway.range(&self.key).await?;
                    let seen = range.kv.as_ref().map(|kv| kv.create_revision);
                    if seen != holder.as_ref().map(|kv| kv.create_revision) {
                        // The watch missed a change: start over from a fresh read.
                        return Ok(Flow::Continue);
                    }
                    self.backoff.reset();
                }
            }
        }
    }

    /// Publishes the holder `kv` names; a value that names none (written by
    /// something else) is counted and published as "no holder known".
    fn publish_follower(&self, kv: Option<&KeyValue>) {
        let view = match kv.map(|kv| (record::decode(&kv.value), kv.create_revision)) {
            Some((Ok(holder), token)) => LeaseView::following(holder, Some(token)),
            Some((Err(why), _)) => {
                self.ctx.errors.inc();
                tracing::warn!(lease = %self.ctx.spec.name, "{why}");
                LeaseView::unknown()
            }
            None => LeaseView::unknown(),
        };
        self.ctx.publisher.publish(view);
    }
}
