//! Single-writer leases (LEASES.md): one task per lease runs its backend and
//! publishes what this node knows as a [`LeaseView`]; the request path loads
//! that view without a lock and decides with [`gate::decide`].
//!
//! - [`clock`]: the lease clock (monotonic; paused and advanced in tests).
//! - [`validity`]: how much of a grant may be used, given clock drift.
//! - [`view`]: the published snapshot and its single writer, [`Publisher`].
//! - [`gate`]: the pure per-request decision and the lease headers.
//! - [`health`]: `require_healthy`, the verdict a holder steps down on.
//! - [`local`]: the `local` backend, always the holder, tokens persisted.
//! - [`peers`]: the `peers` backend (PaxosLease among the sidecars) and the
//!   one peer transport all its leases share.
//! - [`metrics`]: the lease metric families and per-lease handles.
//!
//! A backend is an async task given a [`BackendCtx`]; this module owns the
//! task, its command channel and the shared view ([`Lease`]), and starts one
//! per configured lease ([`Leases`]).

pub mod clock;
pub mod durable;
pub mod etcd;
pub mod gate;
pub mod health;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod local;
pub mod metrics;
pub mod peers;
pub mod validity;
pub mod view;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::Uri;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, LeaseBackend, LeaseSpec};

pub use clock::{LeaseClock, TokioClock};
pub use metrics::{LeaseHandles, LeaseMetrics};
pub use view::{Holder, LeaseView, Publisher, Role, Transition};

/// This node as the leases see it: its id and where others send its traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `cluster.node_id`, unique among the peers.
    pub node_id: String,
    /// Where followers forward lease-gated requests to this node.
    pub forward_url: Option<Uri>,
    /// Where `on_follower: redirect` sends clients of this node.
    pub public_url: Option<Uri>,
}

impl NodeIdentity {
    /// From `config.cluster`; without one, the host name and no addresses
    /// (enough for `local` leases, which have no followers).
    pub fn from_config(config: &Config) -> Self {
        match &config.cluster {
            Some(cluster) => Self {
                node_id: cluster.node_id.clone(),
                forward_url: cluster.forward_url.clone(),
                public_url: cluster.public_url.clone(),
            },
            None => Self {
                node_id: hostname(),
                forward_url: None,
                public_url: None,
            },
        }
    }

    /// This node as a lease holder.
    pub fn holder(&self) -> Holder {
        Holder {
            node_id: self.node_id.clone(),
            forward_url: self.forward_url.clone(),
            public_url: self.public_url.clone(),
        }
    }
}

/// The kernel's host name, or `breakwater` if it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "breakwater".to_owned())
}

/// What the rest of the process asks of a running backend. Each carries a
/// `done` the backend answers once it has done what was asked.
#[derive(Debug)]
pub enum Command {
    /// Step down now (`POST /leases/NAME/release`): publish a view without
    /// `valid_until`, answer `done`, release the lease in its store, and
    /// take no new tenure for one `ttl`. A later tenure gets a greater token.
    Release { done: oneshot::Sender<()> },
    /// Process shutdown: step down and release as above, answer `done`, and
    /// end the task.
    Shutdown { done: oneshot::Sender<()> },
}

/// Everything a backend task works with.
///
/// The contract: publish every change through `publisher`; take or keep a
/// tenure only while `healthy` says `true` (wait on it with
/// [`health::next_change`]) and step down when it turns `false`, then wait
/// one `ttl`; answer [`Command`]s; when `commands` closes (the [`Lease`] was
/// dropped) step down and end; count each error in `errors`.
pub struct BackendCtx {
    /// The lease's configuration.
    pub spec: LeaseSpec,
    /// This node.
    pub node: Arc<NodeIdentity>,
    /// The only way to change what the request path sees.
    pub publisher: Publisher,
    /// Release and shutdown requests.
    pub commands: mpsc::Receiver<Command>,
    /// The `require_healthy` verdict (constant `true` without a check).
    pub healthy: watch::Receiver<bool>,
    /// The clock every deadline is read from.
    pub clock: Arc<dyn LeaseClock>,
    /// `breakwater_lease_backend_errors_total{lease, backend}`.
    pub errors: prometheus::IntCounter,
    /// Backend-specific state for `GET /leases/NAME` (`"details"`); a
    /// backend with nothing to show leaves it `null`.
    pub details: Arc<ArcSwap<serde_json::Value>>,
}

/// A lease backend: runs as one task for the life of the lease.
pub trait Backend: Send + 'static {
    /// The task's body; it returns once told to shut down (or once its
    /// commands channel closes).
    fn run(self: Box<Self>, ctx: BackendCtx) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// One running lease: its task, its view (loaded without a lock on every
/// request) and its command channel.
pub struct Lease {
    spec: LeaseSpec,
    view: Arc<ArcSwap<LeaseView>>,
    changes: watch::Receiver<Arc<LeaseView>>,
    commands: mpsc::Sender<Command>,
    metrics: LeaseHandles,
    details: Arc<ArcSwap<serde_json::Value>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Lease {
    /// Spawns `backend` for `spec` (in the current tokio runtime). The view
    /// starts as [`LeaseView::unknown`].
    pub fn start(
        spec: LeaseSpec,
        node: Arc<NodeIdentity>,
        backend: Box<dyn Backend>,
        healthy: watch::Receiver<bool>,
        clock: Arc<dyn LeaseClock>,
        metrics: &LeaseMetrics,
    ) -> Arc<Lease> {
        let handles = metrics.handles(&spec.name, backend_name(spec.backend));
        let (publisher, view, changes) = Publisher::new(&node.node_id, handles.clone());
        let (commands, receiver) = mpsc::channel(8);
        let details = Arc::new(ArcSwap::from_pointee(serde_json::Value::Null));
        let ctx = BackendCtx {
            spec: spec.clone(),
            node,
            publisher,
            commands: receiver,
            healthy,
            clock,
            errors: handles.backend_errors.clone(),
            details: details.clone(),
        };
        let task = tokio::spawn(backend.run(ctx));
        Arc::new(Lease {
            spec,
            view,
            changes,
            commands,
            metrics: handles,
            details,
            task: Mutex::new(Some(task)),
        })
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The lease's configuration.
    pub fn spec(&self) -> &LeaseSpec {
        &self.spec
    }

    /// `local`, `peers` or `etcd`.
    pub fn backend_name(&self) -> &'static str {
        backend_name(self.spec.backend)
    }

    /// The current view: one atomic load, no lock, no await.
    pub fn view(&self) -> Arc<LeaseView> {
        self.view.load_full()
    }

    /// Waits until the view differs from the current one, or until `until`;
    /// returns the view then. A change between the caller's own load and
    /// this call is missed; [`Lease::wait_for_change_since`] avoids that.
    pub async fn wait_for_change(&self, until: Instant) -> Arc<LeaseView> {
        let seen = self.view();
        self.wait_for_change_since(&seen, until).await
    }

    /// Waits until the view is no longer `seen` (as returned by
    /// [`Lease::view`]), or until `until`; returns the view then. Returns at
    /// once if it already changed, or if the lease task has ended.
    pub async fn wait_for_change_since(
        &self,
        seen: &Arc<LeaseView>,
        until: Instant,
    ) -> Arc<LeaseView> {
        let mut changes = self.changes.clone();
        let changed =
            tokio::time::timeout_at(until, changes.wait_for(|view| !Arc::ptr_eq(view, seen))).await;
        match changed {
            Ok(Ok(view)) => Arc::clone(&view),
            _ => self.view(),
        }
    }

    /// Steps down now (`POST /leases/NAME/release`); returns once this node
    /// no longer stamps. The backend may take the lease again after one
    /// `ttl`, with a new token.
    pub async fn release(&self) {
        self.command(|done| Command::Release { done }).await;
    }

    /// Steps down, releases the lease and ends its task (SIGTERM). Waiting
    /// for in-flight stamped requests is the caller's part, before this.
    pub async fn shutdown(&self) {
        self.command(|done| Command::Shutdown { done }).await;
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(lease = %self.name(), error = %e, "lease task failed");
            }
        }
    }

    /// The handles the gate counts with (`forwarded`, `unavailable`).
    pub fn metrics(&self) -> &LeaseHandles {
        &self.metrics
    }

    /// What the backend last published about itself (`null` if nothing).
    pub fn details(&self) -> Arc<serde_json::Value> {
        self.details.load_full()
    }

    /// Sends a command and waits for its answer; a task that has ended
    /// answers nothing, and there is nothing to wait for.
    async fn command(&self, command: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, answered) = oneshot::channel();
        if self.commands.send(command(done)).await.is_ok() {
            let _ = answered.await;
        }
    }
}

/// All leases of a config, by name.
pub struct Leases {
    leases: BTreeMap<String, Arc<Lease>>,
    node: Arc<NodeIdentity>,
    /// The peer transport, when a lease uses `backend: peers`.
    network: Option<peers::driver::PeerNetwork>,
}

impl Leases {
    /// Starts one task per `config.leases` entry, with the backend its spec
    /// names. Every backend is set up before any task starts, so an error
    /// leaves nothing running. With `backend: peers` leases, the one peer
    /// transport they share starts too, on `cluster.listen`.
    pub async fn start(config: &Config, lease_metrics: &LeaseMetrics) -> Result<Leases, String> {
        let node = Arc::new(NodeIdentity::from_config(config));
        let prepared = config
            .leases
            .iter()
            .map(|spec| Ok((spec, backend_for(spec, config)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let uses_peers = prepared
            .iter()
            .any(|(_, p)| matches!(p, Prepared::Peers(_)));
        let network = match &config.cluster {
            Some(cluster) if uses_peers => Some(
                peers::driver::PeerNetwork::start(cluster, lease_metrics.peers().clone()).await?,
            ),
            _ => None,
        };
        let backends: Vec<(&LeaseSpec, Box<dyn Backend>)> = prepared
            .into_iter()
            .filter_map(|(spec, prepared)| match (prepared, &network) {
                (Prepared::Ready(backend), _) => Some((spec, backend)),
                (Prepared::Peers(opened), Some(network)) => {
                    let link = network.link(&spec.name);
                    Some((spec, Box::new(opened.attach(link)) as Box<dyn Backend>))
                }
                // A peers lease always has a cluster, so a network.
                (Prepared::Peers(_), None) => None,
            })
            .collect();
        let clock: Arc<dyn LeaseClock> = Arc::new(TokioClock);
        let leases = backends
            .into_iter()
            .map(|(spec, backend)| {
                let healthy = health::spawn(spec.require_healthy.clone(), &spec.name);
                let lease = Lease::start(
                    spec.clone(),
                    node.clone(),
                    backend,
                    healthy,
                    clock.clone(),
                    lease_metrics,
                );
                (spec.name.clone(), lease)
            })
            .collect();
        Ok(Leases {
            leases,
            node,
            network,
        })
    }

    /// No leases (a config without `leases`, and tests).
    pub fn none(config: &Config) -> Leases {
        Leases {
            leases: BTreeMap::new(),
            node: Arc::new(NodeIdentity::from_config(config)),
            network: None,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.node_id
    }

    /// This node as the leases see it.
    pub fn node(&self) -> &Arc<NodeIdentity> {
        &self.node
    }

    /// The lease named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Lease>> {
        self.leases.get(name)
    }

    /// Every lease, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Lease>> {
        self.leases.values()
    }

    /// Shuts every lease down at once and waits for all of them; then the
    /// peer transport, once their releases had a moment to go out.
    pub async fn shutdown_all(&self) {
        let mut tasks = tokio::task::JoinSet::new();
        for lease in self.leases.values() {
            let lease = lease.clone();
            tasks.spawn(async move { lease.shutdown().await });
        }
        while tasks.join_next().await.is_some() {}
        if let Some(network) = &self.network {
            network.shutdown().await;
        }
    }

    /// One lease as JSON for `GET /leases/NAME` (and each entry of
    /// `GET /leases`), from `view` read at `now`.
    pub fn to_json(view: &LeaseView, lease: &Lease, now: Instant) -> serde_json::Value {
        let url = |u: &Option<Uri>| u.as_ref().map(Uri::to_string);
        let holder = view.holder.as_ref().map(|h| {
            json!({
                "id": h.node_id,
                "forward_url": url(&h.forward_url),
                "public_url": url(&h.public_url),
            })
        });
        let at = view.transition.at;
        let mut out = json!({
            "name": lease.name(),
            "backend": lease.backend_name(),
            "holder": holder,
            "am_holder": view.may_stamp(now),
            "token": view.token,
            "valid_for_ms": u64::try_from(view.valid_for(now).as_millis()).unwrap_or(u64::MAX),
            "last_transition": {
                "to": view.transition.to.as_str(),
                "at": view::rfc3339(at),
                "at_unix_ms": view::unix_ms(at),
            },
        });
        let details = lease.details();
        if !details.is_null() {
            out["details"] = (*details).clone();
        }
        out
    }

    /// Every lease as a JSON array in name order, for `GET /leases`.
    pub fn list_json(&self, now: Instant) -> serde_json::Value {
        self.iter()
            .map(|lease| Self::to_json(&lease.view(), lease, now))
            .collect()
    }
}

/// A lease's backend, set up: ready to run, or (`peers`) waiting for its
/// link to the peer transport.
enum Prepared {
    Ready(Box<dyn Backend>),
    Peers(peers::driver::Opened),
}

/// The backend for one lease spec. Setup errors (an unreadable counter or
/// state file, a missing section) name the lease.
fn backend_for(spec: &LeaseSpec, config: &Config) -> Result<Prepared, String> {
    let name = &spec.name;
    match spec.backend {
        LeaseBackend::Local => {
            let state_dir = config.cluster.as_ref().and_then(|c| c.state_dir.as_deref());
            let backend = local::LocalBackend::open(name, state_dir)
                .map_err(|e| format!("lease {name}: {e}"))?;
            Ok(Prepared::Ready(Box::new(backend)))
        }
        LeaseBackend::Etcd => match &config.etcd {
            Some(etcd) => Ok(Prepared::Ready(Box::new(etcd::EtcdBackend::new(
                etcd.clone(),
            )))),
            None => Err(format!(
                "lease {name}: `backend: etcd` needs an `etcd` section"
            )),
        },
        LeaseBackend::Peers => match &config.cluster {
            Some(cluster) => peers::driver::Opened::open(name, cluster)
                .map(Prepared::Peers)
                .map_err(|e| format!("lease {name}: {e}")),
            None => Err(format!(
                "lease {name}: `backend: peers` needs a `cluster` section"
            )),
        },
    }
}

fn backend_name(backend: LeaseBackend) -> &'static str {
    match backend {
        LeaseBackend::Local => "local",
        LeaseBackend::Peers => "peers",
        LeaseBackend::Etcd => "etcd",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::{ClusterSpec, HealthCheck, OnFollower};
    use crate::metrics::Metrics;

    fn config() -> Config {
        crate::config::parse(Path::new("test.yaml"), crate::config::EMBEDDED_DEFAULT).unwrap()
    }

    fn spec(name: &str, backend: LeaseBackend) -> LeaseSpec {
        LeaseSpec {
            name: name.into(),
            backend,
            ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            max_drift: 1.0,
            on_follower: OnFollower::Forward,
            wait: Duration::ZERO,
            require_healthy: None,
        }
    }

    fn cluster(state_dir: Option<&Path>) -> ClusterSpec {
        ClusterSpec {
            node_id: "orders-0".into(),
            forward_url: Some("http://10.0.0.5:8000/".parse().unwrap()),
            listen: None,
            advertise: None,
            public_url: Some("https://orders-0.orders:8443/".parse().unwrap()),
            state_dir: state_dir.map(Path::to_owned),
            peers: Vec::new(),
            tls: None,
            allow_even_members: false,
        }
    }

    async fn until_holder(lease: &Lease) -> Arc<LeaseView> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let view = lease.view();
            if view.role() == Role::Holder {
                return view;
            }
            assert!(Instant::now() < deadline, "no tenure: {view:?}");
            lease.wait_for_change_since(&view, deadline).await;
        }
    }

    #[test]
    fn node_identity_comes_from_the_cluster_section() {
        let mut config = config();
        config.cluster = Some(cluster(None));
        let node = NodeIdentity::from_config(&config);
        assert_eq!(node.node_id, "orders-0");
        assert_eq!(node.forward_url.unwrap(), "http://10.0.0.5:8000/");
        assert_eq!(node.public_url.unwrap(), "https://orders-0.orders:8443/");
    }

    #[test]
    fn without_a_cluster_the_node_is_named_after_the_host() {
        let node = NodeIdentity::from_config(&config());
        let expected = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "breakwater".into());
        assert_eq!(node.node_id, expected);
        assert!(!node.node_id.is_empty());
        assert_eq!((node.forward_url, node.public_url), (None, None));
    }

    #[tokio::test]
    async fn starts_a_local_lease_per_spec_and_shuts_them_all_down() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.cluster = Some(cluster(Some(dir.path())));
        config.leases = vec![
            spec("reports", LeaseBackend::Local),
            spec("audit", LeaseBackend::Local),
        ];
        let metrics = Metrics::new();
        let leases = Leases::start(&config, &LeaseMetrics::new(&metrics).unwrap())
            .await
            .unwrap();
        let names: Vec<&str> = leases.iter().map(|l| l.name()).collect();
        assert_eq!(names, ["audit", "reports"]);
        let reports = leases.get("reports").unwrap();
        assert_eq!(reports.backend_name(), "local");
        assert_eq!(reports.spec().ttl, Duration::from_secs(10));
        let view = until_holder(reports).await;
        assert_eq!(view.token, Some(1));
        assert_eq!(view.holder.as_ref().unwrap().node_id, "orders-0");
        assert!(leases.get("nope").is_none());

        leases.shutdown_all().await;
        for lease in leases.iter() {
            assert_eq!(lease.view().role(), Role::Unknown, "{}", lease.name());
        }
        // The next start continues the counters.
        let again = Leases::start(&config, &LeaseMetrics::new(&metrics).unwrap())
            .await
            .unwrap();
        assert_eq!(
            until_holder(again.get("reports").unwrap()).await.token,
            Some(2)
        );
        again.shutdown_all().await;
    }

    #[tokio::test]
    async fn a_lease_with_require_healthy_waits_for_its_service() {
        // Nothing listens on this port: the service is never healthy.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", closed.local_addr().unwrap());
        drop(closed);
        let mut config = config();
        let mut gated = spec("gated", LeaseBackend::Local);
        gated.require_healthy = Some(HealthCheck {
            url: url.parse().unwrap(),
            every: Duration::from_millis(10),
        });
        config.leases = vec![gated];
        let leases = Leases::start(&config, &LeaseMetrics::new(&Metrics::new()).unwrap())
            .await
            .unwrap();
        let lease = leases.get("gated").unwrap();
        let view = lease
            .wait_for_change(Instant::now() + Duration::from_millis(200))
            .await;
        assert_eq!(view.role(), Role::Unknown);
        leases.shutdown_all().await;
    }

    #[tokio::test]
    async fn backend_setup_errors_name_the_lease() {
        let metrics = Metrics::new();
        let mut config = config();
        config.leases = vec![spec("billing", LeaseBackend::Etcd)];
        let err = Leases::start(&config, &LeaseMetrics::new(&metrics).unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(
            err,
            "lease billing: `backend: etcd` needs an `etcd` section"
        );
        config.leases = vec![
            spec("reports", LeaseBackend::Local),
            spec("orders", LeaseBackend::Peers),
        ];
        let err = Leases::start(&config, &LeaseMetrics::new(&metrics).unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(
            err,
            "lease orders: `backend: peers` needs a `cluster` section"
        );
    }

    #[tokio::test]
    async fn a_corrupt_counter_stops_the_start_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("local-reports");
        std::fs::write(&file, "garbage").unwrap();
        let mut config = config();
        config.cluster = Some(cluster(Some(dir.path())));
        config.leases = vec![spec("reports", LeaseBackend::Local)];
        let err = Leases::start(&config, &LeaseMetrics::new(&Metrics::new()).unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.starts_with("lease reports: "), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn json_describes_the_holder_and_the_remaining_validity() {
        let mut config = config();
        config.cluster = Some(cluster(None));
        config.leases = vec![spec("reports", LeaseBackend::Local)];
        let leases = Leases::start(&config, &LeaseMetrics::new(&Metrics::new()).unwrap())
            .await
            .unwrap();
        let lease = leases.get("reports").unwrap();
        let view = until_holder(lease).await;
        let now = Instant::now();
        let json = Leases::to_json(&view, lease, now);
        assert_eq!(json["name"], "reports");
        assert_eq!(json["backend"], "local");
        assert_eq!(json["am_holder"], true);
        assert_eq!(json["token"], view.token.unwrap());
        assert_eq!(json["holder"]["id"], "orders-0");
        assert_eq!(json["holder"]["forward_url"], "http://10.0.0.5:8000/");
        assert_eq!(
            json["holder"]["public_url"],
            "https://orders-0.orders:8443/"
        );
        let valid_for = json["valid_for_ms"].as_u64().unwrap();
        assert!(valid_for > 99 * 365 * 24 * 3600 * 1000, "{valid_for}");
        assert_eq!(json["last_transition"]["to"], "holder");
        assert!(json.get("details").is_none(), "local shows no details");
        let at = json["last_transition"]["at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 24, "{at}");
        assert!(json["last_transition"]["at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);

        // Past the deadline of a view, it is no longer the holder's.
        let mut lapsed = (*view).clone();
        lapsed.valid_until = Some(now);
        let json = Leases::to_json(&lapsed, lease, now);
        assert_eq!(json["am_holder"], false);
        assert_eq!(json["valid_for_ms"], 0);

        let json = Leases::to_json(&LeaseView::unknown(), lease, now);
        assert_eq!(json["holder"], serde_json::Value::Null);
        assert_eq!(json["token"], serde_json::Value::Null);
        assert_eq!(json["last_transition"]["to"], "unknown");

        let list = leases.list_json(now);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["name"], "reports");
    }
}
