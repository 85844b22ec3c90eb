//! The `peers` backend's task (LEASES.md §3, §5): the async shell around one
//! lease's pure [`Acceptor`] and [`Proposer`]. It owns both, reads the
//! clocks, stores the state file, talks to the peers through the shared
//! transport ([`PeerNetwork`]) and publishes the view.
//!
//! One `select!` loop serves, one input at a time: commands (release,
//! shutdown), the `require_healthy` verdict, messages from peers (each given
//! to the acceptor first, then to the proposer), and the timers the
//! machines asked for (the proposer's, one per [`TimerKind`], and the
//! acceptor's [`Acceptor::wake_at`]). What the machines return is carried
//! out in order, and a `persist` is written and fsynced (off the runtime's
//! threads) **before** anything produced by the same step is sent. A write
//! that fails sends nothing of that step: the acceptor goes amnesiac
//! ([`Acceptor::persist_failed`]), the proposer abandons its round
//! ([`Event::PersistFailed`]), and a tenure whose `Holding` could not be
//! published is stepped down from.
//!
//! Files: `act` (carrying out effects and actions), `network` (the
//! transport and the demultiplexer), `time` (lease clock ↔ [`Millis`]),
//! `details` (the `/leases/NAME` details).

mod act;
mod details;
mod network;
#[cfg(test)]
mod tests;
mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use http::Uri;
use tokio::sync::mpsc;

pub use self::network::{Link, PeerNetwork, LEASE_INBOX};

use self::time::LeaseTime;
use super::acceptor::{Acceptor, Durable, Notice};
use super::ballot::Ballot;
use super::faults::Faults;
use super::members::Members;
use super::messages::{Message, Urls};
use super::proposer::{Event, Proposer, TimerKind, Timing, ViewChange};
use super::state::{StateError, StateFile};
use super::transport::TransportHandle;
use super::Millis;
use crate::config::ClusterSpec;
use crate::lease::{health, Backend, BackendCtx, Command, Holder, LeaseView};

/// A decoded message for one lease and its sender's authenticated id.
pub type Inbound = (String, Message);

/// How often the details are refreshed when nothing else happens (peers'
/// reachability changes on its own).
const DETAILS_EVERY: Duration = Duration::from_secs(1);

/// A `peers` lease whose state file has been read, waiting for its link to
/// the transport (which starts only once every lease is set up).
pub struct Opened {
    lease: String,
    members: Members,
    state: StateFile,
    /// The state file's content; `None`: amnesiac.
    loaded: Option<Durable>,
    /// Why the state is lost, when it is.
    lost: Option<String>,
    /// The proposer's jitter seed; `None` draws one at random.
    seed: Option<u64>,
    /// Rules to break (`test-hooks` only); the default is the protocol.
    faults: Faults,
}

impl Opened {
    /// Reads lease `lease`'s state file in `cluster.state_dir`. A missing or
    /// corrupt file is no error (the node recovers, §3.6); a member list
    /// that cannot be used, a missing state dir or an unreadable file are.
    pub fn open(lease: &str, cluster: &ClusterSpec) -> Result<Opened, String> {
        let members = Members::new(&cluster.node_id, cluster.peers.iter().map(|p| p.id.clone()))
            .map_err(|e| format!("cluster: {e}"))?;
        let Some(dir) = cluster.state_dir.as_deref() else {
            return Err("`backend: peers` needs `cluster.state_dir`".to_owned());
        };
        if !dir.is_dir() {
            return Err(format!(
                "cluster.state_dir {} is not a directory",
                dir.display()
            ));
        }
        let state = StateFile::new(dir, lease, &members).map_err(|e| e.to_string())?;
        let (loaded, lost) = match state.load() {
            Ok(Some(durable)) => (Some(durable), None),
            Ok(None) => (None, Some(format!("{} does not exist", show(state.path())))),
            Err(e @ StateError::Corrupt { .. }) => (None, Some(e.to_string())),
            Err(e) => return Err(e.to_string()),
        };
        Ok(Opened {
            lease: lease.to_owned(),
            members,
            state,
            loaded,
            lost,
            seed: None,
            faults: Faults::default(),
        })
    }

    /// Runs a deliberately broken protocol (LEASES.md §6b's variants), so
    /// the simulation (`tests/lease_sim.rs`) can show its checker catches
    /// them. Only the acceptor's and the proposer's own rules apply here;
    /// the restart faults are the restarter's to carry out.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Fixes the seed of the proposer's jitter (random by default), so a
    /// simulation replays the same rounds (`tests/lease_sim.rs`).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The backend, ready to run on `link`.
    pub fn attach(self, link: Link) -> PeersBackend {
        PeersBackend { opened: self, link }
    }
}

/// The `peers` backend of one lease.
pub struct PeersBackend {
    opened: Opened,
    link: Link,
}

impl Backend for PeersBackend {
    fn run(self: Box<Self>, ctx: BackendCtx) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let PeersBackend { opened, link } = *self;
        Box::pin(Driver::new(opened, link, ctx).run())
    }
}

/// This node's last round (acquisition or renewal) as `/leases/NAME`
/// shows it: the acceptors that promised its ballot and that accepted it,
/// this node's own included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LastRound {
    pub ballot: Ballot,
    pub promised: BTreeSet<String>,
    pub accepted: BTreeSet<String>,
}

impl LastRound {
    /// Notes `message` from `from` if it answers this round.
    fn answered(&mut self, from: &str, message: &Message) {
        match message {
            Message::Promise { ballot, .. } if *ballot == self.ballot => {
                self.promised.insert(from.to_owned());
            }
            Message::Accepted { ballot } if *ballot == self.ballot => {
                self.accepted.insert(from.to_owned());
            }
            _ => {}
        }
    }
}

/// What woke the task.
enum Wake {
    Command(Option<Command>),
    Inbound(Option<Inbound>),
    Health,
    Due,
    Details,
}

/// One lease's task state.
struct Driver {
    ctx: BackendCtx,
    lease: String,
    time: LeaseTime,
    acceptor: Acceptor,
    proposer: Proposer,
    state: StateFile,
    transport: TransportHandle,
    inbox: mpsc::Receiver<Inbound>,
    /// The proposer's armed timers.
    timers: BTreeMap<TimerKind, Millis>,
    me: Holder,
    health_open: bool,
    inbox_open: bool,
    /// This node's last round and who answered it, for the details.
    last_round: Option<LastRound>,
    details_at: tokio::time::Instant,
}

impl Driver {
    fn new(opened: Opened, link: Link, ctx: BackendCtx) -> Self {
        let Opened {
            lease,
            members,
            state,
            loaded,
            lost,
            seed: fixed_seed,
            faults,
        } = opened;
        let time = LeaseTime::new(ctx.clock.clone());
        let spec = &ctx.spec;
        let timing = Timing::new(spec.ttl, spec.renew_every, spec.max_drift);
        let now = time.now();
        match (&lost, loaded) {
            (Some(why), _) => tracing::error!(
                lease = %lease, state_file = %show(state.path()),
                "LEASE STATE LOST: {why}. This node is amnesiac: it takes no part in lease \
                 {lease} until a majority of the other members told it what it may have \
                 promised (or, if most members are amnesiac too, after one ttl; expected \
                 only on the cluster's very first start). Restore the file only from this \
                 node's own latest copy, never from another node"
            ),
            (None, Some(d)) => tracing::info!(
                lease = %lease, promised = d.promised.as_u64(), max_ttl_ms = d.max_ttl_ms,
                quarantine_ms = d.max_ttl_ms.max(timing.ttl_ms),
                "lease state loaded; silent until grants made before the restart have expired"
            ),
            (None, None) => {}
        }
        let mut acceptor = Acceptor::new(members.clone(), loaded, now.at, timing.ttl_ms);
        acceptor.set_faults(faults);
        let node = &ctx.node;
        let urls = Urls {
            forward: node.forward_url.as_ref().map(Uri::to_string),
            public: node.public_url.as_ref().map(Uri::to_string),
        };
        let healthy = *ctx.healthy.borrow();
        let seed = fixed_seed.unwrap_or_else(|| seed(&node.node_id));
        let mut proposer = Proposer::new(members, timing, urls, healthy, seed);
        proposer.set_faults(faults);
        Driver {
            me: node.holder(),
            lease,
            time,
            acceptor,
            proposer,
            state,
            transport: link.transport,
            inbox: link.inbox,
            timers: BTreeMap::new(),
            health_open: true,
            inbox_open: true,
            last_round: None,
            details_at: tokio::time::Instant::now(),
            ctx,
        }
    }

    async fn run(mut self) {
        // The acceptor starts its recovery (if amnesiac), the proposer plans.
        let now = self.time.now();
        let effects = self.acceptor.tick(now.at);
        if self.apply(None, effects).await {
            self.event(Event::Tick).await;
        }
        self.refresh_details();
        loop {
            let wake = self.next_wake().await;
            match wake {
                Wake::Command(Some(Command::Release { done })) => {
                    self.step_down().await;
                    let _ = done.send(());
                }
                Wake::Command(Some(Command::Shutdown { done })) => {
                    self.step_down().await;
                    let _ = done.send(());
                    break;
                }
                Wake::Command(None) => {
                    self.step_down().await;
                    break;
                }
                Wake::Inbound(Some((from, message))) => self.on_message(from, message).await,
                Wake::Inbound(None) => self.inbox_open = false,
                Wake::Health => {
                    let healthy = *self.ctx.healthy.borrow_and_update();
                    self.event(Event::HealthChanged(healthy)).await;
                }
                Wake::Due => self.on_due().await,
                Wake::Details => {}
            }
            self.refresh_details();
        }
        self.refresh_details();
        tracing::info!(lease = %self.lease, "peers lease stopped");
    }

    async fn next_wake(&mut self) -> Wake {
        let due = self
            .timers
            .values()
            .copied()
            .chain(self.acceptor.wake_at())
            .min();
        let due = due.map(|ms| self.time.deadline(ms));
        tokio::select! {
            command = self.ctx.commands.recv() => Wake::Command(command),
            inbound = self.inbox.recv(), if self.inbox_open => Wake::Inbound(inbound),
            () = health::next_change(&mut self.ctx.healthy, &mut self.health_open) => Wake::Health,
            () = sleep_some(due) => Wake::Due,
            () = tokio::time::sleep_until(self.details_at) => Wake::Details,
        }
    }

    /// A message from a peer: the acceptor answers first (durably), then the
    /// proposer counts it.
    async fn on_message(&mut self, from: String, message: Message) {
        if let Some(round) = &mut self.last_round {
            round.answered(&from, &message);
        }
        tracing::debug!(lease = %self.lease, %from, ?message, "peer message in");
        let now = self.time.now();
        let effects = self.acceptor.handle(now.at, &from, &message);
        if !self.apply(Some(&from), effects).await {
            return;
        }
        self.event(Event::Received { from, message }).await;
    }

    /// The acceptor's wake time and the proposer's timers that came.
    async fn on_due(&mut self) {
        let now = self.time.now();
        if self.acceptor.wake_at().is_some_and(|at| at <= now.at) {
            let effects = self.acceptor.tick(now.at);
            if self.apply(None, effects).await {
                self.event(Event::Tick).await;
            }
        }
        let now = self.time.now();
        let fired: Vec<TimerKind> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now.at)
            .map(|(kind, _)| *kind)
            .collect();
        for kind in fired {
            self.timers.remove(&kind);
            self.event(Event::Timer(kind)).await;
        }
    }

    /// §3.5: through the proposer, which publishes first, then releases.
    async fn step_down(&mut self) {
        self.event(Event::StepDown).await;
    }

    /// Feeds `event` to the proposer at the current time and carries out
    /// what it asks.
    async fn event(&mut self, event: Event) {
        let now = self.time.now();
        let actions = self.proposer.on_event(now, &mut self.acceptor, event);
        self.execute(actions).await;
    }

    /// Replaces the lease view; `valid_until` becomes exactly the instant
    /// the proposer's deadline names (see [`time`]).
    fn publish(&self, view: ViewChange) {
        let was_holding = self.ctx.publisher.current().valid_until.is_some();
        let view = match view {
            ViewChange::Holding { token, valid_until } => {
                if !was_holding {
                    tracing::info!(lease = %self.lease, token, "peers lease acquired: stamping");
                }
                LeaseView::holding(self.me.clone(), token, self.time.instant(valid_until))
            }
            ViewChange::Follower {
                holder,
                token,
                urls,
            } => {
                let holder = Holder {
                    node_id: holder,
                    forward_url: parse_url(urls.forward.as_deref()),
                    public_url: parse_url(urls.public.as_deref()),
                };
                LeaseView::following(holder, Some(token))
            }
            ViewChange::NotHolding => LeaseView::unknown(),
        };
        if was_holding && view.valid_until.is_none() {
            tracing::info!(lease = %self.lease, "peers lease no longer held: not stamping");
        }
        self.ctx.publisher.publish(view);
    }

    fn log_notice(&self, notice: &Notice) {
        match notice {
            Notice::Recovered { state, answers } => tracing::info!(
                lease = %self.lease, promised = state.promised.as_u64(),
                max_ttl_ms = state.max_ttl_ms, answers,
                "lease state recovered from the other members"
            ),
            Notice::Bootstrapped { state, answers } => tracing::warn!(
                lease = %self.lease, promised = state.promised.as_u64(),
                max_ttl_ms = state.max_ttl_ms, answers,
                "lease_state_bootstrap: most members have no lease state (first start, or \
                 their state dirs were lost); starting from what was found. Fencing tokens \
                 now rest on the wall clock not having stepped back across the outage"
            ),
        }
    }

    /// Publishes the details for `/leases/NAME`, at most every
    /// [`DETAILS_EVERY`] unless something happened.
    fn refresh_details(&mut self) {
        let now = self.time.now().at;
        let snapshot = details::Snapshot {
            now,
            acceptor: &self.acceptor,
            proposer: &self.proposer,
            last_round: self.last_round.as_ref(),
            peers: self.transport.reachability(),
            state_file: show(self.state.path()),
        };
        self.ctx
            .details
            .store(std::sync::Arc::new(details::to_json(&snapshot)));
        self.details_at = tokio::time::Instant::now() + DETAILS_EVERY;
    }
}

/// A URL a peer announced, if it parses.
fn parse_url(url: Option<&str>) -> Option<Uri> {
    url.and_then(|u| u.parse().ok())
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A seed for the proposer's jitter that differs between nodes and starts:
/// the system's random source, mixed with the node id.
fn seed(node_id: &str) -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let random = match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_be_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::from(d.subsec_nanos())),
    };
    random ^ super::state::members_digest(&[node_id.to_owned()])
}
