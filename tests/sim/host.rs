//! One host's software: the transport over `turmoil::net`, the real
//! `peers` lease, and the recorder that logs every view it publishes.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use breakwater::config::{ClusterSpec, LeaseBackend, LeaseSpec, OnFollower, Peer};
use breakwater::lease::peers::driver::{Opened, PeerNetwork};
use breakwater::lease::peers::faults::Faults;
use breakwater::lease::peers::transport::Options;
use breakwater::lease::{Lease, LeaseMetrics, LeaseView, NodeIdentity};
use breakwater::metrics::Metrics;
use tokio::time::Instant;

use super::check::{Entry, Log, State};
use super::clock::{sim_now, SimClock};
use super::net::{SimListener, SimNet};
use super::pki::Pki;
use super::plan::LIVES;
use super::{IDS, LEASE, PORT, RENEW, TTL};

/// What a host's software needs; shared by all its lives.
#[derive(Clone)]
pub struct HostSetup {
    pub node: usize,
    pub cluster: ClusterSpec,
    pub spec: LeaseSpec,
    pub seed: u64,
    pub rates: Rc<Vec<u128>>,
    pub lives: Rc<RefCell<usize>>,
    pub log: Log,
    /// Commands from the loop that steps the simulation, and their doorbell.
    pub commands: Rc<RefCell<Vec<Command>>>,
    pub doorbell: Arc<tokio::sync::Notify>,
    /// The protocol to run: the real one unless a broken-variant test.
    pub faults: Faults,
}

/// What the loop that steps the simulation asks of a running host.
#[derive(Clone, Copy, Debug)]
pub enum Command {
    /// `POST /leases/NAME/release`: step down, release, pause one ttl.
    Release,
    /// SIGTERM: step down, release, stop the transport, end.
    Stop,
}

pub fn cluster(node: usize, state_dir: &Path, pki: &Pki) -> ClusterSpec {
    let me = IDS[node];
    ClusterSpec {
        node_id: me.to_owned(),
        forward_url: None,
        listen: Some(SocketAddr::from(([0, 0, 0, 0], PORT))),
        advertise: None,
        public_url: None,
        state_dir: Some(state_dir.to_owned()),
        peers: IDS
            .iter()
            .filter(|id| **id != me)
            .map(|id| Peer {
                id: (*id).to_owned(),
                address: format!("{id}:{PORT}"),
            })
            .collect(),
        tls: Some(pki.tls(me)),
        allow_even_members: false,
    }
}

pub fn spec(drift_pct: u64) -> LeaseSpec {
    LeaseSpec {
        name: LEASE.to_owned(),
        backend: LeaseBackend::Peers,
        ttl: TTL,
        renew_every: RENEW,
        max_drift: drift_pct as f64,
        on_follower: OnFollower::Forward,
        wait: Duration::ZERO,
        require_healthy: None,
    }
}

/// One life of a host: the transport, the lease, and the recorder.
pub async fn run_host(setup: HostSetup) -> turmoil::Result {
    let life = {
        let mut lives = setup.lives.borrow_mut();
        *lives += 1;
        *lives - 1
    };
    let seed = setup.seed ^ ((setup.node as u64) << 32) ^ life as u64;
    let clock = Arc::new(SimClock::new(setup.rates[life % LIVES]));
    let listener = SimListener(turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?);
    let metrics = LeaseMetrics::new(&Metrics::new())?;
    let options = Options {
        jitter_seed: Some(seed),
        ..Options::default()
    };
    let network = PeerNetwork::start_on(
        &setup.cluster,
        SimNet,
        listener,
        options,
        metrics.peers().clone(),
    )?;
    let opened = Opened::open(LEASE, &setup.cluster)?.with_seed(seed.rotate_left(17));
    #[cfg(feature = "test-hooks")]
    let opened = opened.with_faults(setup.faults);
    #[cfg(not(feature = "test-hooks"))]
    assert_eq!(
        setup.faults,
        Faults::default(),
        "broken protocols need test-hooks"
    );
    let backend = Box::new(opened.attach(network.link(LEASE)));
    let node = Arc::new(NodeIdentity {
        node_id: IDS[setup.node].to_owned(),
        forward_url: None,
        public_url: None,
    });
    let (_healthy_tx, healthy) = tokio::sync::watch::channel(true);
    let lease = Lease::start(
        setup.spec.clone(),
        node,
        backend,
        healthy,
        clock.clone(),
        &metrics,
    );
    let record = |view: &LeaseView| {
        let state = match (view.token, view.valid_until) {
            (Some(token), Some(until)) => State::Holding {
                token,
                until: clock.sim_deadline(until),
            },
            _ => State::Idle,
        };
        setup.log.borrow_mut().push(Entry {
            node: setup.node,
            at: sim_now(),
            state,
        });
    };
    let mut seen = lease.view();
    record(&seen);
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let network = Rc::new(network);
    // Commands run in their own tasks, so every publish they cause is
    // logged at its instant; a stop ends this life once it is done.
    let mut stopping: Option<tokio::task::JoinHandle<()>> = None;
    setup.commands.borrow_mut().clear();
    // Off once the lease task has ended: its view no longer changes, and
    // waiting for a change returns at once (a busy loop would stop time).
    let mut watching = true;
    loop {
        tokio::select! {
            view = lease.wait_for_change_since(&seen, far), if watching => {
                if Arc::ptr_eq(&view, &seen) {
                    watching = false;
                } else {
                    record(&view);
                    seen = view;
                }
            }
            () = setup.doorbell.notified() => {
                let commands = std::mem::take(&mut *setup.commands.borrow_mut());
                for command in commands {
                    let (lease, network) = (lease.clone(), network.clone());
                    match command {
                        Command::Release => {
                            tokio::task::spawn_local(async move { lease.release().await });
                        }
                        Command::Stop if stopping.is_none() => {
                            stopping = Some(tokio::task::spawn_local(async move {
                                lease.shutdown().await;
                                network.shutdown().await;
                            }));
                        }
                        Command::Stop => {}
                    }
                }
            }
            _ = async { stopping.as_mut().expect("guarded").await }, if stopping.is_some() => {
                let view = lease.view();
                if !Arc::ptr_eq(&view, &seen) {
                    record(&view);
                }
                return Ok(());
            }
        }
    }
}
