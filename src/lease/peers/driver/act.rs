//! Carrying out what the machines ask, in order: a `persist` is written
//! and fsynced (off the runtime's threads) before anything produced by the
//! same step is sent; after a failed write nothing more of that step is
//! sent, both machines are told, and a `Holding` that could not be
//! published is stepped down from.

use std::collections::BTreeSet;

use super::{show, Driver, LastRound};
use crate::lease::peers::acceptor::{Durable, Effects};
use crate::lease::peers::messages::{self, Envelope, Message};
use crate::lease::peers::proposer::{Action, Event, ViewChange};

/// Passes through a list of actions after failed writes, at most: each
/// failure feeds the proposer, whose answer may hold another write.
const MAX_FAILURE_PASSES: usize = 3;

impl Driver {
    /// Carries out the acceptor's effects: persist, then reply and
    /// broadcast. False if the write failed (then nothing was sent, and
    /// both machines were told).
    pub(super) async fn apply(&mut self, from: Option<&str>, effects: Effects) -> bool {
        let Effects {
            persist,
            reply,
            broadcast,
            notice,
        } = effects;
        if let Some(state) = persist {
            if !self.persist(state).await {
                let now = self.time.now();
                self.acceptor.persist_failed(now.at);
                self.event(Event::PersistFailed).await;
                return false;
            }
        }
        if let Some(notice) = notice {
            self.log_notice(&notice);
        }
        if let (Some(to), Some(reply)) = (from, reply) {
            tracing::debug!(lease = %self.lease, %to, message = ?reply, "peer message out");
            if let Some(frame) = self.encode(reply) {
                self.transport.send(to, frame);
            }
        }
        if let Some(message) = broadcast {
            self.broadcast(message);
        }
        true
    }

    /// Carries out the proposer's actions in order; after a failed write,
    /// tells both machines and carries out what the proposer says then.
    pub(super) async fn execute(&mut self, actions: Vec<Action>) {
        let mut pending = actions;
        for _ in 0..MAX_FAILURE_PASSES {
            let Some(skipped_holding) = self.execute_pass(pending, false).await else {
                return;
            };
            let now = self.time.now();
            self.acceptor.persist_failed(now.at);
            pending = self
                .proposer
                .on_event(now, &mut self.acceptor, Event::PersistFailed);
            if skipped_holding {
                // The proposer believes it published a tenure that the
                // request path never saw; end it cleanly.
                let more = self
                    .proposer
                    .on_event(now, &mut self.acceptor, Event::StepDown);
                pending.extend(more);
            }
        }
        // Still failing: keep the timers and the view in step, send nothing.
        let _ = self.execute_pass(pending, true).await;
    }

    /// One pass over `actions`. Once a write failed (or `failed` from the
    /// start), nothing more is sent and no `Holding` is published; timers
    /// and other views still apply. Returns `Some(skipped a Holding)` if a
    /// write failed in this pass.
    async fn execute_pass(&mut self, actions: Vec<Action>, mut failed: bool) -> Option<bool> {
        let mut failed_here = false;
        let mut skipped_holding = false;
        for action in actions {
            match action {
                Action::Persist(state) => {
                    if !failed && !self.persist(state).await {
                        failed = true;
                        failed_here = true;
                    }
                }
                Action::Broadcast(message) => {
                    if !failed {
                        self.broadcast(message);
                    }
                }
                Action::SetTimer { kind, at } => match at {
                    Some(at) => {
                        self.timers.insert(kind, at);
                    }
                    None => {
                        self.timers.remove(&kind);
                    }
                },
                Action::Publish(view) => {
                    if failed && matches!(view, ViewChange::Holding { .. }) {
                        skipped_holding = true;
                    } else {
                        self.publish(view);
                    }
                }
            }
        }
        failed_here.then_some(skipped_holding)
    }

    /// Writes `state` and fsyncs it, off the runtime's threads. False (and
    /// logged, counted) if it could not be stored.
    async fn persist(&mut self, state: Durable) -> bool {
        let file = self.state.clone();
        let stored = tokio::task::spawn_blocking(move || file.store(&state)).await;
        let error = match stored {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the write of {} failed: {e}", show(self.state.path())),
        };
        self.ctx.errors.inc();
        tracing::error!(lease = %self.lease, error = %error,
            "cannot store the lease state: this node goes silent and recovers it from its peers");
        false
    }

    fn broadcast(&mut self, message: Message) {
        tracing::debug!(lease = %self.lease, ?message, "peer message out to all");
        // The own acceptor answered before anything is sent (the proposer
        // hands it each message first); its vote counts unless quarantined.
        let now = self.time.now().at;
        let me = self.me.node_id.clone();
        match &message {
            Message::Prepare { ballot, .. } => {
                let mut round = LastRound {
                    ballot: *ballot,
                    promised: BTreeSet::new(),
                    accepted: BTreeSet::new(),
                };
                if !self.acceptor.is_quarantined(now) && self.acceptor.durable().promised == *ballot
                {
                    round.promised.insert(me);
                }
                self.last_round = Some(round);
            }
            Message::Propose { ballot, .. } => {
                let own = self
                    .acceptor
                    .grant(now)
                    .is_some_and(|g| g.ballot == *ballot);
                if let Some(round) = self.last_round.as_mut().filter(|r| r.ballot == *ballot) {
                    if own {
                        round.accepted.insert(me);
                    }
                }
            }
            _ => {}
        }
        if let Some(frame) = self.encode(message) {
            self.transport.broadcast(frame);
        }
    }

    fn encode(&self, message: Message) -> Option<Vec<u8>> {
        let envelope = Envelope::Lease {
            lease: self.lease.clone(),
            message,
        };
        match messages::encode(&envelope) {
            Ok(frame) => Some(frame),
            Err(e) => {
                self.ctx.errors.inc();
                tracing::error!(lease = %self.lease, error = %e, "cannot encode a peer message");
                None
            }
        }
    }
}
