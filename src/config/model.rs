//! The typed, validated configuration: what the rest of the proxy reads.
//!
//! Nothing here can be invalid: every cross-reference is resolved to an index,
//! every duration and address is parsed. Built only by `config::load`/`parse`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde::Deserialize;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub shutdown: Shutdown,
    pub limits: Limits,
    pub access_log: AccessLogFormat,
    /// Named single-writer leases, in file order.
    pub leases: Vec<LeaseSpec>,
    /// This node's place among its peers (for `backend: peers`).
    pub cluster: Option<ClusterSpec>,
    /// The etcd store (for `backend: etcd`).
    pub etcd: Option<EtcdSpec>,
    /// The effective configuration rendered back as YAML with key and secret
    /// paths redacted, for the admin `/config` endpoint.
    pub redacted_yaml: String,
}

impl Config {
    /// Whether a lease runs on the `peers` backend (which needs `cluster`
    /// with its transport, and may run only once per process).
    pub fn uses_peers(&self) -> bool {
        self.leases.iter().any(|l| l.backend == LeaseBackend::Peers)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Default 127.0.0.1:9901.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    /// The request head must arrive within this. Default 10s.
    pub header_timeout: Duration,
    /// The whole request body must arrive within this (total). Default 30s.
    pub body_timeout: Duration,
    /// None: plain HTTP (h1 and h2c prior knowledge).
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the fallback. Never empty.
    pub certificates: Vec<CertificatePaths>,
    /// Some: clients must present a certificate signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Default 10s.
    pub handshake_timeout: Duration,
    /// Send the verified client certificate's identity upstream as
    /// `x-forwarded-client-cert` (Envoy's format). A client-sent copy is
    /// always removed. Default false.
    pub forward_client_cert: bool,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// `http://host:port` (path, if any, is ignored: requests keep their own).
    pub url: Uri,
    pub protocol: Protocol,
    /// Default 1s.
    pub connect_timeout: Duration,
    /// Default 64.
    pub max_idle_per_host: usize,
    /// Custom trust or SNI; only an `https://` url uses it.
    pub tls: Option<UpstreamTls>,
}

/// Trust and SNI for an upstream; used only when its url is `https://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// None: the platform's trusted roots.
    pub ca: Option<PathBuf>,
    /// None: the host of the upstream url.
    pub server_name: Option<String>,
    /// A client certificate to present (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: Match,
    pub action: Action,
    /// Exchange up to the response head. None: no timeout.
    pub timeout: Option<Duration>,
    /// A response body that stops moving for this long is cut.
    pub idle_timeout: Option<Duration>,
    /// The route's own settings merged field by field over `defaults`.
    pub concurrency: Option<Concurrency>,
    /// The route's own settings merged field by field over `defaults`.
    pub breaker: Option<Breaker>,
    /// Name of an entry of `Config::leases`: a single-writer route.
    pub lease: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Match {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    /// Every entry must hold.
    pub headers: Vec<(HeaderName, HeaderMatch)>,
}

/// Host names are stored lower-case, without a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`; it matches `a.example.com`
    /// and `a.b.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Segment-respecting prefix: `/orders` matches `/orders`, `/orders/1`,
    /// not `/ordersx`. `/` matches everything. Stored without a trailing `/`
    /// unless it is exactly `/`.
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `"*"`: the header is present, any value.
    Present,
    Exact(HeaderValue),
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Index into `Config::upstreams`.
    Upstream(usize),
    Respond(Respond),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Respond {
    pub status: StatusCode,
    pub body: Bytes,
    pub headers: HeaderMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// Default 0s.
    pub drain_delay: Duration,
    /// Default 30s.
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Default 64 KiB; 8 KiB..=16 MiB.
    pub max_header_bytes: usize,
    /// Default 100; 1..=10000.
    pub max_headers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    Text,
    Json,
    Off,
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
}

/// Concurrency limit of a route: at most `max` in flight, `queue` waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Required, at least 1.
    pub max: usize,
    /// Requests that may wait for a slot. Default 0: shed as soon as full.
    pub queue: usize,
    /// How long a queued request waits before it is shed. Default 1s.
    pub queue_timeout: Duration,
}

/// Error-percentage circuit breaker (Hystrix semantics). Defaults follow
/// Hystrix: a 10s window in 10 buckets, 20 requests minimum, 50% errors,
/// open for 5s, one half-open probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    /// Rolling window. Default 10s.
    pub window: Duration,
    /// The window is divided into this many equal buckets (1..=1000). Default 10.
    pub buckets: u32,
    /// No trip below this many requests in the window. Default 20.
    pub min_requests: u32,
    /// Trip at errors/requests ≥ this, 0..=100. Default 50.
    pub error_percent: f64,
    /// How long an open breaker fails fast. Default 5s.
    pub open_for: Duration,
    /// Requests let through when half-open. Default 1.
    pub half_open_probes: u32,
    pub errors: ErrorsSpec,
    /// Some: slow calls count towards tripping too.
    pub slow_call: Option<SlowCall>,
    /// Some: the response sent while open, instead of 503.
    pub fallback: Option<Respond>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            buckets: 10,
            min_requests: 20,
            error_percent: 50.0,
            open_for: Duration::from_secs(5),
            half_open_probes: 1,
            errors: ErrorsSpec::default(),
            slow_call: None,
            fallback: None,
        }
    }
}

/// What the breaker counts as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorsSpec {
    /// Default 500, 502, 503, 504 (not 501: "not implemented" is an answer).
    pub statuses: Vec<StatusCode>,
    /// Upstream timeouts. Default true.
    pub timeouts: bool,
    /// Connect and reset errors. Default true.
    pub connect_errors: bool,
    /// `grpc-status` values, 1..=16. Default 2 UNKNOWN, 4 DEADLINE_EXCEEDED,
    /// 13 INTERNAL, 14 UNAVAILABLE (not caller errors like 3 INVALID_ARGUMENT).
    pub grpc_codes: Vec<u32>,
}

impl Default for ErrorsSpec {
    fn default() -> Self {
        Self {
            statuses: [500, 502, 503, 504]
                .into_iter()
                .filter_map(|s| StatusCode::from_u16(s).ok())
                .collect(),
            timeouts: true,
            connect_errors: true,
            grpc_codes: vec![2, 4, 13, 14],
        }
    }
}

/// Calls slower than `threshold` count as failures; the breaker also trips
/// when they reach `percent` of the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowCall {
    /// Required.
    pub threshold: Duration,
    /// 0..=100. Default 50.
    pub percent: f64,
}

/// A named single-writer lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseSpec {
    pub name: String,
    /// Default `local`.
    pub backend: LeaseBackend,
    /// Default 10s.
    pub ttl: Duration,
    /// Below `ttl`. Default `ttl / 3`.
    pub renew_every: Duration,
    /// Bound on clock-rate drift, 0..50 percent. Default 1.
    pub max_drift: f64,
    /// Default `forward`.
    pub on_follower: OnFollower,
    /// How long a request waits for a holder to be known. Default 0s.
    pub wait: Duration,
    pub require_healthy: Option<HealthCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseBackend {
    /// No peers: this process always holds the lease.
    Local,
    /// A majority quorum of the peer sidecars.
    Peers,
    /// etcd v3 leases.
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFollower {
    /// Send the request to the holder's sidecar.
    Forward,
    /// 307 to the holder's public address.
    Redirect,
    /// 503.
    Reject,
}

/// The holder steps down when its service fails this check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub url: Uri,
    /// Default 2s.
    pub every: Duration,
}

/// This node and its peers, for the `peers` lease backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub node_id: String,
    /// Where followers forward lease-gated requests to this node.
    pub forward_url: Option<Uri>,
    /// The peer protocol listener.
    pub listen: Option<SocketAddr>,
    /// `host:port` where peers reach this node.
    pub advertise: Option<String>,
    /// Used by `on_follower: redirect`.
    pub public_url: Option<Uri>,
    /// Persisted ballots, so fencing tokens grow across restarts.
    pub state_dir: Option<PathBuf>,
    pub peers: Vec<Peer>,
    pub tls: Option<PeerTls>,
    /// Allow an even number of members (this node and its peers) for
    /// `backend: peers`; default false: an even count survives no more
    /// failures than one member fewer.
    pub allow_even_members: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    /// `host:port`.
    pub address: String,
}

/// Mutual TLS between peers: a peer without a certificate from `ca` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The etcd store for the `etcd` lease backend.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    /// Never empty.
    pub endpoints: Vec<Uri>,
    /// Default `/breakwater/leases/`.
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for EtcdSpec {
    /// Never prints the password, so logging a `Config` leaks no secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSpec")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}
