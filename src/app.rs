//! Wires a configuration into running listeners, routes and the admin
//! server; reloads it atomically; drains on shutdown.
//!
//! [`App::start`] binds everything and returns at once (tests bind port 0 and
//! read the bound addresses back); [`App::run_until_signal`] is the binary's
//! main loop: SIGHUP reloads, SIGTERM/SIGINT drain and exit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::config::{self, Config};
use crate::lease::{LeaseMetrics, Leases};
use crate::metrics::Metrics;
use crate::proxy::server::{self, ListenerSettings, Shared};
use crate::proxy::Generation;
use crate::tls::TlsListener;
use crate::BoxError;

/// Why the proxy could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error("{what} {addr}: cannot listen: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Build(BoxError),
}

/// A listener bound during a reload, not yet accepting.
struct Opened {
    name: String,
    configured: SocketAddr,
    listener: TcpListener,
}

/// A listener's TLS for the config being applied.
struct PreparedTls {
    listener: Arc<TlsListener>,
    /// The running listener's, kept because its TLS config is unchanged.
    reused: bool,
}

/// A listener that is accepting connections.
struct Running {
    configured: SocketAddr,
    bound: SocketAddr,
    settings: Arc<ArcSwap<ListenerSettings>>,
    stop: watch::Sender<bool>,
}

/// The running proxy.
pub struct App {
    shared: Arc<Shared>,
    admin: Arc<AdminState>,
    admin_addr: SocketAddr,
    admin_stop: watch::Sender<bool>,
    listeners: Mutex<HashMap<String, Running>>,
    config_path: Option<PathBuf>,
    metrics: Metrics,
    lease_metrics: LeaseMetrics,
}

impl App {
    /// Binds the admin listener and every listener of `config`, and starts
    /// serving. `config_path` is what SIGHUP re-reads.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Self>, Error> {
        let metrics = Metrics::new();
        let lease_metrics = LeaseMetrics::new(&metrics).map_err(|e| Error::Build(e.into()))?;
        let config = Arc::new(config);
        let leases = Arc::new(
            Leases::start(&config, &lease_metrics)
                .await
                .map_err(|e| Error::Build(e.into()))?,
        );
        let gen = Generation::build(config.clone(), &metrics, None, leases.clone());
        let gen = match gen {
            Ok(gen) => gen,
            Err(e) => {
                leases.shutdown_all().await;
                return Err(Error::Build(e));
            }
        };
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(gen),
            drain: watch::channel(false).0,
        });
        let admin_listener = bind("admin", config.admin.listen).await?;
        let admin_addr = local_addr(&admin_listener, config.admin.listen);
        let admin = Arc::new(AdminState {
            shared: shared.clone(),
            metrics: metrics.clone(),
            ready: false.into(),
        });
        let (admin_stop, admin_rx) = watch::channel(false);
        tokio::spawn(admin::serve(admin.clone(), admin_listener, admin_rx));
        tracing::info!(addr = %admin_addr, "admin listening");
        let app = Arc::new(Self {
            shared,
            admin,
            admin_addr,
            admin_stop,
            listeners: Mutex::new(HashMap::new()),
            config_path,
            metrics,
            lease_metrics,
        });
        let opened = app.bind_new_listeners(&config).await?;
        let tls = app.prepare_tls(&config)?;
        app.publish_breakers();
        app.start_listeners(&config, opened, &tls);
        app.admin.ready.store(true, Ordering::Release);
        Ok(app)
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.lock_listeners().get(name).map(|l| l.bound)
    }

    /// The metrics registry of this process.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so poisoning is ignored.
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the configuration file and applies it; see [`App::apply`].
    pub async fn reload(&self) -> Result<(), Error> {
        let result = match &self.config_path {
            Some(path) => match config::load(path) {
                Ok(cfg) => self.apply(cfg).await,
                Err(e) => Err(e.into()),
            },
            None => Ok(()),
        };
        self.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(
                "configuration reload refused; the previous one keeps serving:\n{e}"
            ),
        }
        result
    }

    /// Applies a new configuration. New listeners are bound first and the
    /// routes built next, with no effect on what is serving: a failure of
    /// either refuses the whole reload. Then the route table is swapped in
    /// one step, listener settings are updated, new listeners start
    /// accepting and the ones no longer configured stop.
    pub async fn apply(&self, config: Config) -> Result<(), Error> {
        let config = Arc::new(config);
        let opened = self.bind_new_listeners(&config).await?;
        let tls = self.prepare_tls(&config)?;
        let current = self.shared.current.load_full();
        // Leases keep running across reloads that leave their config alone.
        // Otherwise the new set starts now and the old one steps down and
        // releases once the new routes are in place; but a `peers` lease
        // (in either set) must never run twice in one process: the new
        // acceptor would trust a state file the old one keeps raising, and
        // could not bind `cluster.listen`. Then the old set steps down
        // first, and comes back if the new one cannot start.
        let lease_config = |c: &Config| (c.leases.clone(), c.cluster.clone(), c.etcd.clone());
        let same_leases = lease_config(&config) == lease_config(&current.config);
        let stop_first = !same_leases && (config.uses_peers() || current.config.uses_peers());
        if stop_first {
            tracing::info!("lease configuration changed: stepping down before restarting leases");
            current.leases.shutdown_all().await;
        }
        let leases = if same_leases {
            current.leases.clone()
        } else {
            match Leases::start(&config, &self.lease_metrics).await {
                Ok(leases) => Arc::new(leases),
                Err(e) => {
                    if stop_first {
                        self.restore_leases(&current).await;
                    }
                    return Err(Error::Build(e.into()));
                }
            }
        };
        let gen = match Generation::build(
            config.clone(),
            &self.metrics,
            Some(&current),
            leases.clone(),
        ) {
            Ok(gen) => gen,
            Err(e) => {
                if !same_leases {
                    leases.shutdown_all().await;
                }
                if stop_first {
                    self.restore_leases(&current).await;
                }
                return Err(Error::Build(e));
            }
        };
        if config.admin.listen != self.shared.current.load().config.admin.listen {
            tracing::warn!("admin.listen changes take effect on restart");
        }
        self.shared.current.store(Arc::new(gen));
        self.publish_breakers();
        self.start_listeners(&config, opened, &tls);
        if !same_leases && !stop_first {
            let old = current.leases.clone();
            tokio::spawn(async move { old.shutdown_all().await });
        }
        // SIGHUP also re-reads the certificate files of unchanged listeners
        // (a bad file keeps the old certificate; the watcher says why).
        for t in tls.values().filter(|t| t.reused) {
            t.listener.reload();
        }
        Ok(())
    }

    /// After a refused reload that had stopped the running leases: starts
    /// them again from the running configuration and serves with them. If
    /// even that fails, lease-gated routes answer 503 until a reload
    /// succeeds, and the log says so.
    async fn restore_leases(&self, current: &Arc<Generation>) {
        let leases = match Leases::start(&current.config, &self.lease_metrics).await {
            Ok(leases) => Arc::new(leases),
            Err(e) => {
                tracing::error!("the previous leases could not be restarted either: {e}");
                return;
            }
        };
        match Generation::build(
            current.config.clone(),
            &self.metrics,
            Some(current),
            leases.clone(),
        ) {
            Ok(gen) => {
                self.shared.current.store(Arc::new(gen));
                tracing::info!("the previous leases are running again");
            }
            Err(e) => {
                leases.shutdown_all().await;
                tracing::error!("the previous leases could not be restarted: {e}");
            }
        }
    }

    /// TLS termination for every listener with `tls:`: the running one when
    /// its TLS config is unchanged (certificates reload in place, connections
    /// keep going), else loaded anew. A file that cannot be used refuses the
    /// start or reload.
    fn prepare_tls(&self, config: &Config) -> Result<HashMap<String, PreparedTls>, Error> {
        let running = self.lock_listeners();
        let mut out = HashMap::new();
        for l in &config.listeners {
            let Some(cfg) = &l.tls else { continue };
            let old = running
                .get(&l.name)
                .and_then(|r| r.settings.load().tls.clone())
                .filter(|t| t.config() == cfg);
            let prepared = match old {
                Some(listener) => PreparedTls {
                    listener,
                    reused: true,
                },
                None => PreparedTls {
                    listener: TlsListener::new(&l.name, cfg, self.metrics.tls.clone()).map_err(
                        |e| {
                            Error::Build(
                                format!(
                                    "listeners ({}).tls.{}: {e}",
                                    l.name,
                                    match e.which {
                                        crate::tls::Which::Ca => "client_ca",
                                        other => other.key(),
                                    }
                                )
                                .into(),
                            )
                        },
                    )?,
                    reused: false,
                },
            };
            out.insert(l.name.clone(), prepared);
        }
        Ok(out)
    }

    /// Sets every live breaker's state gauge (new breakers start closed;
    /// kept ones keep their state).
    fn publish_breakers(&self) {
        for route in &self.shared.current.load().routes {
            if let Some(cell) = &route.breaker {
                cell.publish();
            }
        }
    }

    /// Binds the listeners that are new or moved; nothing else changes.
    async fn bind_new_listeners(&self, config: &Config) -> Result<Vec<Opened>, Error> {
        let mut opened = Vec::new();
        for l in &config.listeners {
            let running = self
                .lock_listeners()
                .get(&l.name)
                .is_some_and(|r| r.configured == l.listen);
            if !running {
                let listener = bind(&format!("listeners ({})", l.name), l.listen).await?;
                opened.push(Opened {
                    name: l.name.clone(),
                    configured: l.listen,
                    listener,
                });
            }
        }
        Ok(opened)
    }

    /// Updates the settings of running listeners, starts the newly bound
    /// ones, and stops those no longer configured (or moved).
    fn start_listeners(
        &self,
        config: &Config,
        opened: Vec<Opened>,
        tls: &HashMap<String, PreparedTls>,
    ) {
        let tls_of = |name: &str| tls.get(name).map(|t| t.listener.clone());
        let mut running = self.lock_listeners();
        for l in &config.listeners {
            if let Some(r) = running.get(&l.name).filter(|r| r.configured == l.listen) {
                r.settings.store(Arc::new(ListenerSettings::new(
                    l,
                    &config.limits,
                    tls_of(&l.name),
                )));
            }
        }
        for o in opened {
            let Some(cfg) = config.listeners.iter().find(|l| l.name == o.name) else {
                continue;
            };
            let bound = local_addr(&o.listener, o.configured);
            let settings = Arc::new(ArcSwap::from_pointee(ListenerSettings::new(
                cfg,
                &config.limits,
                tls_of(&o.name),
            )));
            let (stop, stop_rx) = watch::channel(false);
            tokio::spawn(server::accept_loop(
                self.shared.clone(),
                o.name.as_str().into(),
                settings.clone(),
                o.listener,
                stop_rx,
                self.metrics.connections(&o.name),
            ));
            tracing::info!(listener = %o.name, addr = %bound, "listening");
            let old = running.insert(
                o.name,
                Running {
                    configured: o.configured,
                    bound,
                    settings,
                    stop,
                },
            );
            if let Some(old) = old {
                let _ = old.stop.send(true);
            }
        }
        running.retain(|name, r| {
            let keep = config.listeners.iter().any(|l| &l.name == name);
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
    }

    /// Drains and stops: `/readyz` fails at once; after `drain_delay` the
    /// listeners stop accepting; in-flight requests get up to `grace` to
    /// finish (HTTP/2 connections receive GOAWAY, idle HTTP/1 connections
    /// close); then whatever is left is cut.
    pub async fn shutdown(&self) {
        let shutdown = self.shared.current.load().config.shutdown;
        self.admin.ready.store(false, Ordering::Release);
        tracing::info!(
            drain_delay = ?shutdown.drain_delay,
            grace = ?shutdown.grace,
            "draining"
        );
        tokio::time::sleep(shutdown.drain_delay).await;
        for (_, r) in self.lock_listeners().drain() {
            let _ = r.stop.send(true);
        }
        let _ = self.shared.drain.send(true);
        let finished = tokio::time::timeout(shutdown.grace, self.shared.drain.closed()).await;
        match finished {
            Ok(()) => tracing::info!("drained; every connection finished"),
            Err(_) => tracing::warn!(
                open = self.shared.drain.receiver_count(),
                "grace period over; closing the connections still open"
            ),
        }
        // In-flight requests, lease-gated ones included, are done (or cut):
        // now each lease steps down and is released, so another node can
        // take it without waiting for it to expire.
        self.shared.current.load().leases.shutdown_all().await;
        let _ = self.admin_stop.send(true);
    }

    /// Runs until SIGTERM or SIGINT, reloading on SIGHUP, then drains.
    pub async fn run_until_signal(&self, mut signals: Signals) {
        loop {
            tokio::select! {
                _ = signals.hup.recv() => { let _ = self.reload().await; }
                _ = signals.term.recv() => break,
                _ = signals.int.recv() => break,
            }
        }
        self.shutdown().await;
    }
}

/// The signals the proxy acts on. Installed before anything is bound, so a
/// SIGHUP sent as soon as a listener is announced reloads instead of killing
/// the process (the default action).
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        what: what.to_owned(),
        addr,
        source,
    })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}
