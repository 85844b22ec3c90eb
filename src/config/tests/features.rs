//! Every feature of the SPEC §7 example (TLS, concurrency, breaker, leases):
//! validated, merged and rendered; the unsupported-feature check, which
//! refuses what a build lacks, is switched off where a test needs it.

use std::path::Path;
use std::time::Duration;

use super::*;

/// The SPEC §7 example, verbatim.
const SPEC_EXAMPLE: &str = r#"
admin:
  listen: 127.0.0.1:9901
listeners:
  - name: plain
    listen: 0.0.0.0:8000
    header_timeout: 10s
    body_timeout: 30s
  - name: public
    listen: 0.0.0.0:8443
    tls:
      certificates:
        - { cert: tls/api.crt, key: tls/api.key }
      client_ca: tls/clients-ca.crt
      handshake_timeout: 10s
upstreams:
  app:
    url: http://127.0.0.1:8080
    protocol: http1
    connect_timeout: 1s
    max_idle_per_host: 64
    tls: { ca: tls/upstream-ca.crt, server_name: app.internal }
defaults:
  timeout: 1s
  concurrency: { max: 100 }
  breaker: { error_percent: 50 }
routes:
  - name: orders-write
    match:
      host: "*.example.com"
      path_prefix: /orders
      methods: [POST, PUT, PATCH, DELETE]
      headers: { x-tenant: acme }
    upstream: app
    timeout: 2s
    idle_timeout: 30s
    concurrency: { max: 50, queue: 100, queue_timeout: 250ms }
    breaker:
      window: 10s
      buckets: 10
      min_requests: 20
      error_percent: 50
      open_for: 5s
      half_open_probes: 1
      errors: { statuses: [500, 502, 503, 504], timeouts: true, connect_errors: true,
                grpc_codes: [2, 4, 13, 14] }
      slow_call: { threshold: 1s, percent: 80 }
      fallback: { status: 503, body: '{"error":"busy"}', headers: { content-type: application/json } }
    lease: orders
  - name: hello
    match: { path_exact: /hello }
    respond: { status: 200, body: "hello\n" }
  - name: everything-else
    match: { path_prefix: / }
    upstream: app
leases:
  orders:
    backend: peers
    ttl: 10s
    renew_every: 3s
    max_drift: 1%
    on_follower: forward
    wait: 0s
    require_healthy: { url: http://127.0.0.1:8080/healthz, every: 2s }
cluster:
  node_id: orders-0
  forward_url: http://10.0.0.5:8000
  listen: 0.0.0.0:7946
  advertise: 10.0.0.5:7946
  public_url: https://orders-0.orders:8443
  state_dir: /var/lib/breakwater
  peers:
    - { id: orders-1, address: 10.0.0.6:7946 }
    - { id: orders-2, address: 10.0.0.7:7946 }
  tls: { cert: tls/peer.crt, key: tls/peer.key, ca: tls/peers-ca.crt }
etcd:
  endpoints: [http://127.0.0.1:2379]
  prefix: /breakwater/leases/
  password: hunter2
access_log: { format: text }
"#;

/// Parses and validates with the unsupported-feature check switched off.
fn parse_all_features(text: &str) -> Result<Config, Vec<String>> {
    let file = Path::new(FILE);
    let raw = parse_raw(file, text).map_err(|e| vec![e.to_string()])?;
    validate::validate_with(file, raw, |_, _| Vec::new()).map_err(|ds| {
        ds.iter()
            .map(|d| d.to_string().trim_start_matches(FILE).to_owned())
            .collect()
    })
}

#[test]
fn spec_example_is_refused_only_for_its_missing_certificate_files() {
    // Every feature is available: what remains are the files it names,
    // which do not exist here, each reported at its key.
    let expected = [
        (
            "listeners[1] (public).tls.certificates[0].cert",
            "tls/api.crt",
        ),
        ("listeners[1] (public).tls.client_ca", "tls/clients-ca.crt"),
        ("upstreams.app.tls.ca", "tls/upstream-ca.crt"),
        ("cluster.tls.cert", "tls/peer.crt"),
    ];
    let errors = errors(SPEC_EXAMPLE);
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (error, (key, path)) in errors.iter().zip(expected) {
        let start = format!(": {key}: {path}: cannot read: ");
        assert!(
            error.starts_with(&start),
            "{error} should start with {start}"
        );
    }
}

#[test]
fn missing_certificate_files_are_errors_naming_the_key_path() {
    let text = "listeners:\n  - { name: plain, listen: 127.0.0.1:8000 }\n  - name: public\n    listen: 127.0.0.1:8443\n    tls: { certificates: [{ cert: /nonexistent/api.crt, key: /nonexistent/api.key }], client_ca: /nonexistent/ca.crt }\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(
            ": listeners[1] (public).tls.certificates[0].cert: /nonexistent/api.crt: cannot read:"
        ),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(
            ": listeners[1] (public).tls.client_ca: /nonexistent/ca.crt: cannot read:"
        ),
        "{errors:?}"
    );
}

#[test]
fn https_upstream_ca_must_be_readable_and_client_cert_needs_both_files() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\nupstreams: { app: { url: https://app.internal, tls: { ca: /nonexistent/ca.pem } }, b: { url: https://b, tls: { cert: /x.crt } } }\n";
    assert_eq!(
        errors(text),
        [": upstreams.b.tls: a client certificate needs both `cert` and `key`"],
        "structure is checked before files"
    );
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\nupstreams: { app: { url: https://app.internal, tls: { ca: /nonexistent/ca.pem } } }\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(": upstreams.app.tls.ca: /nonexistent/ca.pem: cannot read:"),
        "{errors:?}"
    );
}

#[test]
fn spec_example_validates_every_feature_key() {
    let c = parse_all_features(SPEC_EXAMPLE).unwrap();
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].key, Path::new("tls/api.key"));
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(
        c.upstreams[0].tls.as_ref().unwrap().server_name.as_deref(),
        Some("app.internal")
    );
    let orders = &c.leases[0];
    assert_eq!(
        (orders.backend, orders.on_follower),
        (LeaseBackend::Peers, OnFollower::Forward)
    );
    assert_eq!(
        (orders.ttl, orders.renew_every, orders.max_drift),
        (Duration::from_secs(10), Duration::from_secs(3), 1.0)
    );
    let cluster = c.cluster.as_ref().unwrap();
    assert_eq!(cluster.peers.len(), 2);
    assert_eq!(
        cluster.public_url.as_ref().unwrap(),
        "https://orders-0.orders:8443/"
    );
    assert_eq!(c.etcd.as_ref().unwrap().prefix, "/breakwater/leases/");
    let route = &c.routes[0];
    assert_eq!(route.lease.as_deref(), Some("orders"));
    let breaker = route.breaker.as_ref().unwrap();
    assert_eq!(
        breaker.slow_call,
        Some(SlowCall {
            threshold: Duration::from_secs(1),
            percent: 80.0
        })
    );
    assert_eq!(breaker.fallback.as_ref().unwrap().status, 503);
}

#[test]
fn routes_merge_resilience_settings_field_by_field_over_defaults() {
    let text = r#"
listeners: [{ listen: 127.0.0.1:8000 }]
defaults:
  concurrency: { max: 100, queue: 10 }
  breaker: { error_percent: 25, open_for: 30s, errors: { timeouts: false } }
routes:
  - { name: plain, respond: {} }
  - name: own
    respond: {}
    concurrency: { max: 5 }
    breaker: { min_requests: 3, errors: { statuses: [503] } }
"#;
    let c = parse_all_features(text).unwrap();
    let plain = &c.routes[0];
    assert_eq!(
        plain.concurrency,
        Some(Concurrency {
            max: 100,
            queue: 10,
            queue_timeout: Duration::from_secs(1)
        })
    );
    let own = &c.routes[1];
    assert_eq!(
        own.concurrency,
        Some(Concurrency {
            max: 5,
            queue: 10,
            queue_timeout: Duration::from_secs(1)
        })
    );
    let b = own.breaker.as_ref().unwrap();
    assert_eq!(
        (b.error_percent, b.open_for, b.min_requests),
        (25.0, Duration::from_secs(30), 3)
    );
    assert_eq!(
        (b.window, b.buckets, b.half_open_probes),
        (Duration::from_secs(10), 10, 1)
    );
    assert_eq!(b.errors.statuses, [503]);
    assert!(!b.errors.timeouts && b.errors.connect_errors);
    assert_eq!(b.errors.grpc_codes, [2, 4, 13, 14]);
}

#[test]
fn resilience_and_lease_settings_are_range_checked() {
    let text = r#"
listeners: [{ listen: 127.0.0.1:8000 }]
upstreams: { app: { url: http://a:1 } }
defaults:
  concurrency: { queue: 3 }
routes:
  - name: r
    upstream: app
    breaker: { window: 10s, buckets: 3, error_percent: 150, errors: { statuses: [42], grpc_codes: [0] } }
    lease: nope
leases:
  l: { ttl: 1s, renew_every: 2s, max_drift: "60%", backend: etcd }
"#;
    assert_eq!(
        parse_all_features(text).unwrap_err(),
        [
            ": defaults.concurrency.max: is required",
            ": leases.l.renew_every: must be shorter than ttl, or the lease lapses between renewals",
            ": leases.l.max_drift: must be below 50%: no safe margin exists beyond that",
            ": routes[0] (r).breaker.buckets: window 10s does not divide into 3 equal buckets",
            ": routes[0] (r).breaker.error_percent: must be between 0 and 100, got 150",
            ": routes[0] (r).breaker.errors.statuses[0]: 42 is not an HTTP status",
            ": routes[0] (r).breaker.errors.grpc_codes[0]: 0 is not a gRPC error code (1..=16; 0 is OK, never an error)",
            ": routes[0] (r).lease: no lease named \"nope\"; known: l",
            ": leases.l.backend: `backend: etcd` needs an `etcd` section",
            ": leases.l.backend: a shared lease needs a `cluster` section naming this node",
        ]
    );
}

#[test]
fn redacted_yaml_hides_key_material_and_credentials() {
    let yaml = parse_all_features(SPEC_EXAMPLE).unwrap().redacted_yaml;
    for secret in [
        "tls/api.crt",
        "tls/api.key",
        "clients-ca",
        "upstream-ca",
        "peer.key",
        "peers-ca",
        "hunter2",
    ] {
        assert!(!yaml.contains(secret), "{secret} leaked:\n{yaml}");
    }
    assert!(
        yaml.contains("key: <redacted>") && yaml.contains("password: <redacted>"),
        "{yaml}"
    );
    assert!(
        yaml.contains("server_name: app.internal"),
        "non-secrets stay: {yaml}"
    );
    assert!(yaml.contains("max_drift: 1\n"), "{yaml}");
}

#[test]
fn debug_output_of_etcd_settings_hides_the_password() {
    let c = parse_all_features(SPEC_EXAMPLE).unwrap();
    let shown = format!("{:?}", c.etcd);
    assert!(
        !shown.contains("hunter2") && shown.contains("<redacted>"),
        "{shown}"
    );
}
