//! The YAML file as written: every key of the schema, nothing checked beyond
//! its syntax. `validate` turns this into the typed `Config`.
//!
//! Unknown keys are refused everywhere (`deny_unknown_fields`). A key is
//! `Option` when the user may leave it out; the few plain fields are the ones
//! without which their block means nothing (an upstream's `url`, a listener's
//! `listen`, a certificate's `cert` and `key`, …), so a missing one is
//! reported with its line and column.

use std::path::PathBuf;

use serde::Deserialize;

use super::model::{AccessLogFormat, LeaseBackend, OnFollower, Protocol};
use super::value::{ByteSize, Dur, OrderedMap, Percent};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of configuration sections")]
pub struct RawConfig {
    pub admin: Option<RawAdmin>,
    pub listeners: Option<Vec<RawListener>>,
    pub upstreams: Option<OrderedMap<RawUpstream>>,
    pub defaults: Option<RawDefaults>,
    pub routes: Option<Vec<RawRoute>>,
    pub leases: Option<OrderedMap<RawLease>>,
    pub cluster: Option<RawCluster>,
    pub etcd: Option<RawEtcd>,
    pub access_log: Option<RawAccessLog>,
    pub shutdown: Option<RawShutdown>,
    pub limits: Option<RawLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub listen: String,
    pub header_timeout: Option<Dur>,
    pub body_timeout: Option<Dur>,
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Option<Vec<RawCertificate>>,
    pub client_ca: Option<PathBuf>,
    pub handshake_timeout: Option<Dur>,
    pub forward_client_cert: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    pub protocol: Option<Protocol>,
    pub connect_timeout: Option<Dur>,
    pub max_idle_per_host: Option<usize>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// What every route inherits when it leaves the key out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub concurrency: Option<RawConcurrency>,
    pub breaker: Option<RawBreaker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub upstream: Option<String>,
    pub respond: Option<RawRespond>,
    pub timeout: Option<Dur>,
    pub idle_timeout: Option<Dur>,
    pub concurrency: Option<RawConcurrency>,
    pub breaker: Option<RawBreaker>,
    pub lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<OrderedMap<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub headers: Option<OrderedMap<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrency {
    pub max: Option<usize>,
    pub queue: Option<usize>,
    pub queue_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub window: Option<Dur>,
    pub buckets: Option<u32>,
    pub min_requests: Option<u32>,
    pub error_percent: Option<Percent>,
    pub open_for: Option<Dur>,
    pub half_open_probes: Option<u32>,
    pub errors: Option<RawErrors>,
    pub slow_call: Option<RawSlowCall>,
    pub fallback: Option<RawRespond>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrors {
    pub statuses: Option<Vec<u16>>,
    pub timeouts: Option<bool>,
    pub connect_errors: Option<bool>,
    pub grpc_codes: Option<Vec<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlowCall {
    pub threshold: Dur,
    pub percent: Option<Percent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLease {
    pub backend: Option<LeaseBackend>,
    pub ttl: Option<Dur>,
    pub renew_every: Option<Dur>,
    pub max_drift: Option<Percent>,
    pub on_follower: Option<OnFollower>,
    pub wait: Option<Dur>,
    pub require_healthy: Option<RawHealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub url: String,
    pub every: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub node_id: String,
    pub forward_url: Option<String>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub public_url: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub peers: Option<Vec<RawPeer>>,
    pub tls: Option<RawPeerTls>,
    pub allow_even_members: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub id: String,
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<AccessLogFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_delay: Option<Dur>,
    pub grace: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<ByteSize>,
    pub max_headers: Option<usize>,
}
