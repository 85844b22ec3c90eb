//! TLS end to end over real sockets: termination with ALPN (h1, h2, gRPC
//! trailers), certificates chosen by SNI, legacy protocol versions refused,
//! mTLS with `x-forwarded-client-cert`, reload by a Kubernetes-style symlink
//! swap (and refusal of bad replacements), TLS to upstreams with a private
//! CA, the handshake timeout, `breakwater validate` on certificate files, and
//! the TLS metric families. Every certificate is made here with rcgen.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::tls::{
    http_over, legacy_client_hello, raw_tcp_exchange, refused_in_handshake, serve_tls,
    server_config, tls_connect, Ca, ClientTls, Issued, KeyKind, NegotiatedAlpn, SecretDir,
    Validity, TLS12_ONLY, TLS13_ONLY,
};
use common::{
    echo_upstream, eventually, full, get_within, metric, promtool_lint, reason_of, scrape,
    upstream, within, Proxy, Sample, TestBody,
};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

// ---- Helpers -----------------------------------------------------------------

/// A config with listener `main` on TLS in front of the plain upstream `app`;
/// `tls` is the flow mapping of the listener's `tls:` key.
fn tls_proxy_yaml(app: SocketAddr, tls: &str) -> String {
    tls_proxy_yaml_with(app, "", tls)
}

/// [`tls_proxy_yaml`] with `app_fields` (e.g. `protocol: http2`) on the upstream.
fn tls_proxy_yaml_with(app: SocketAddr, app_fields: &str, tls: &str) -> String {
    let sep = if app_fields.is_empty() { "" } else { ", " };
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: main
    listen: 127.0.0.1:0
    tls: {tls}
upstreams:
  app: {{ url: "http://{app}"{sep}{app_fields} }}
access_log: {{ format: off }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#
    )
}

/// A YAML double-quoted string holding `path`.
fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// The `certificates:` list serving `certs`, in order.
fn certificates(certs: &[(&Path, &Path)]) -> String {
    let entries: Vec<String> = certs
        .iter()
        .map(|(cert, key)| format!("{{ cert: {}, key: {} }}", quoted(cert), quoted(key)))
        .collect();
    format!("[{}]", entries.join(", "))
}

/// The `tls:` mapping of a listener serving `certs` plus `extra` keys.
fn listener_tls(certs: &[&Issued], extra: &str) -> String {
    let paths: Vec<(&Path, &Path)> = certs
        .iter()
        .map(|c| (c.cert.as_path(), c.key.as_path()))
        .collect();
    let sep = if extra.is_empty() { "" } else { ", " };
    format!("{{ certificates: {}{sep}{extra} }}", certificates(&paths))
}

/// Every value of header `name` in an `echo_upstream` answer, in order.
fn seen<'a>(echo: &'a str, name: &str) -> Vec<&'a str> {
    echo.lines()
        .skip(1)
        .filter_map(|line| line.split_once(": "))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .collect()
}

async fn metrics(proxy: &Proxy) -> Vec<Sample> {
    scrape(&proxy.admin_url("/metrics")).await
}

/// Waits until the sample `name{labels}` reaches at least `min`; returns it.
async fn metric_reaches(proxy: &Proxy, name: &str, labels: &[(&str, &str)], min: f64) -> f64 {
    eventually(&format!("{name}{labels:?} >= {min}"), || async {
        metric(&metrics(proxy).await, name, labels).filter(|v| *v >= min)
    })
    .await
}

const HANDSHAKES: &str = "breakwater_tls_handshakes_total";
const HANDSHAKE_ERRORS: &str = "breakwater_tls_handshake_errors_total";
const RELOADS: &str = "breakwater_tls_reloads_total";
const EXPIRY: &str = "breakwater_tls_certificate_expiry_timestamp_seconds";

/// Waits until listener `main` has counted at least `total` failed
/// handshakes (the server counts after the client has seen the failure) and
/// returns every reason counted, with its count.
async fn handshake_error_reasons(proxy: &Proxy, total: f64) -> Vec<(String, f64)> {
    eventually(
        &format!("{total} failed handshakes are counted"),
        || async {
            let reasons: Vec<(String, f64)> = metrics(proxy)
                .await
                .into_iter()
                .filter(|s| s.name == HANDSHAKE_ERRORS && s.labels["listener"] == "main")
                .map(|s| (s.labels["reason"].clone(), s.value))
                .collect();
            let counted: f64 = reasons.iter().map(|(_, n)| n).sum();
            (counted >= total).then_some(reasons)
        },
    )
    .await
}

/// A proxy terminating TLS with one ECDSA certificate for `api.test`, in
/// front of an echo upstream; `extra` adds keys to the listener's `tls:`.
async fn api_proxy(ca: &Ca, extra: &str) -> Proxy {
    let cert = ca.issue(&["api.test"], KeyKind::Ecdsa);
    Proxy::start(&tls_proxy_yaml(
        echo_upstream().await,
        &listener_tls(&[&cert], extra),
    ))
    .await
}

// ---- HTTP/1.1 and HTTP/2 over TLS, ALPN ---------------------------------------

/// GETs `/hello` through a TLS proxy with a client offering `alpn`; returns
/// the negotiated protocol, the response head and the upstream's echo.
async fn get_with_alpn(alpn: &[&str]) -> (Option<Vec<u8>>, http::response::Parts, String) {
    let ca = Ca::new("alpn CA");
    let proxy = api_proxy(&ca, "").await;
    let config = ClientTls::trusting(&ca).alpn(alpn).build();
    let (stream, _) = tls_connect(proxy.addr(), "api.test", config).await;
    let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut conn = http_over(stream, "api.test").await;
    let (parts, echo) = conn.get("/hello", &[]).await;
    (negotiated, parts, echo)
}

#[tokio::test]
async fn alpn_h2_is_negotiated_and_the_request_is_served_over_http2() {
    let (negotiated, res, echo) = get_with_alpn(&["h2", "http/1.1"]).await;
    assert_eq!(negotiated.as_deref(), Some(&b"h2"[..]));
    assert_eq!(res.status, StatusCode::OK, "{echo}");
    assert_eq!(res.version, Version::HTTP_2);
    assert_eq!(echo.lines().next(), Some("GET /hello HTTP/1.1"), "{echo}");
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"], "{echo}");
}

#[tokio::test]
async fn alpn_http11_only_is_served_over_http1() {
    let (negotiated, res, echo) = get_with_alpn(&["http/1.1"]).await;
    assert_eq!(negotiated.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(res.status, StatusCode::OK, "{echo}");
    assert_eq!(res.version, Version::HTTP_11);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"], "{echo}");
}

#[tokio::test]
async fn a_client_without_alpn_is_served_over_http1() {
    let (negotiated, res, echo) = get_with_alpn(&[]).await;
    assert_eq!(negotiated, None);
    assert_eq!(res.status, StatusCode::OK, "{echo}");
    assert_eq!(res.version, Version::HTTP_11);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"], "{echo}");
}

/// One gRPC message: uncompressed flag, big-endian length, payload.
fn grpc_message(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(u32::try_from(payload.len()).expect("small message"));
    out.put_slice(payload);
    out.freeze()
}

/// A body of `data` then `trailers`.
fn with_trailers(data: Bytes, trailers: HeaderMap) -> TestBody {
    let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
        vec![Ok(Frame::data(data)), Ok(Frame::trailers(trailers))];
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

#[tokio::test]
async fn grpc_call_over_tls_h2_carries_trailers_both_ways() {
    // An h2c upstream that answers with the request's message and trailers
    // `grpc-status: 0` plus the request trailer it saw.
    let app = upstream(|req: http::Request<Incoming>| async move {
        let collected = req.into_body().collect().await.expect("request body");
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("value"));
        if let Some(t) = collected.trailers().and_then(|t| t.get("x-client-trailer")) {
            trailers.insert("x-seen-trailer", t.clone());
        }
        Response::builder()
            .header(CONTENT_TYPE, "application/grpc")
            .body(with_trailers(collected.to_bytes(), trailers))
            .expect("response")
    })
    .await;
    let ca = Ca::new("grpc CA");
    let cert = ca.issue(&["api.test"], KeyKind::Ecdsa);
    let yaml = tls_proxy_yaml_with(app, "protocol: http2", &listener_tls(&[&cert], ""));
    let proxy = Proxy::start(&yaml).await;
    let config = ClientTls::trusting(&ca).alpn(&["h2"]).build();
    let (stream, _) = tls_connect(proxy.addr(), "api.test", config).await;
    let mut conn = http_over(stream, "api.test").await;

    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", "sent".parse().expect("value"));
    let req = conn.request(
        Method::POST,
        "/echo.Echo/Say",
        &[("content-type", "application/grpc"), ("te", "trailers")],
        with_trailers(grpc_message(b"hi"), trailers),
    );
    let res = conn.send(req).await.expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc");
    let body = within("the gRPC response body", res.into_body().collect())
        .await
        .expect("response body");
    let trailers = body.trailers().cloned().expect("response trailers");
    assert_eq!(body.to_bytes(), grpc_message(b"hi"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers.get("x-seen-trailer").map(|v| v.as_bytes()),
        Some(&b"sent"[..]),
        "the request trailer reaches the upstream"
    );
}

// ---- SNI -----------------------------------------------------------------------

/// A proxy serving a.test (ECDSA, first), b.test (RSA) and *.w.test.
async fn sni_proxy(ca: &Ca) -> Proxy {
    let a = ca.issue(&["a.test"], KeyKind::Ecdsa);
    let b = ca.issue(&["b.test"], KeyKind::Rsa);
    let w = ca.issue(&["*.w.test"], KeyKind::Ecdsa);
    Proxy::start(&tls_proxy_yaml(
        echo_upstream().await,
        &listener_tls(&[&a, &b, &w], ""),
    ))
    .await
}

#[tokio::test]
async fn sni_picks_the_certificate_for_each_name() {
    let ca = Ca::new("sni CA");
    let proxy = sni_proxy(&ca).await;
    for name in ["a.test", "b.test"] {
        let config = ClientTls::trusting(&ca).build();
        let (stream, sans) = tls_connect(proxy.addr(), name, config).await;
        assert_eq!(sans, [name], "SNI {name}");
        let (res, echo) = http_over(stream, name).await.get("/", &[]).await;
        assert_eq!(res.status, StatusCode::OK, "SNI {name}: {echo}");
    }
}

#[tokio::test]
async fn an_unknown_name_and_a_client_without_sni_get_the_first_certificate() {
    let ca = Ca::new("sni CA");
    let proxy = sni_proxy(&ca).await;
    // An IP address as the server name sends no SNI extension at all.
    for sni in ["unknown.test", "127.0.0.1"] {
        let config = ClientTls::trusting(&ca).any_name().build();
        let (_, sans) = tls_connect(proxy.addr(), sni, config).await;
        assert_eq!(sans, ["a.test"], "SNI {sni}");
    }
}

#[tokio::test]
async fn a_wildcard_certificate_serves_one_level_below_it() {
    let ca = Ca::new("sni CA");
    let proxy = sni_proxy(&ca).await;
    let config = ClientTls::trusting(&ca).build();
    let (stream, sans) = tls_connect(proxy.addr(), "x.w.test", config).await;
    assert_eq!(sans, ["*.w.test"]);
    let (res, _) = http_over(stream, "x.w.test").await.get("/", &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    // A wildcard covers one label only; two levels down is the fallback.
    let config = ClientTls::trusting(&ca).any_name().build();
    let (_, sans) = tls_connect(proxy.addr(), "y.x.w.test", config).await;
    assert_eq!(sans, ["a.test"]);
}

// ---- Protocol versions -----------------------------------------------------------

/// What a legacy ClientHello gets back: nothing, or a fatal alert first.
fn assert_refused_without_server_hello(version: u16, answer: &[u8]) {
    match answer {
        [] => {}
        // Alert record: type 21, version, length, level 2 (fatal), description.
        [21, _, _, _, _, 2, _description, ..] => {}
        other => panic!(
            "a ClientHello with client_version {version:#06x} got neither a fatal alert nor a \
             plain close; first bytes: {:02x?}",
            &other[..other.len().min(16)]
        ),
    }
}

#[tokio::test]
async fn tls_1_0_and_1_1_client_hellos_get_a_fatal_alert_and_no_server_hello() {
    let ca = Ca::new("versions CA");
    let proxy = api_proxy(&ca, "").await;
    for version in [0x0301, 0x0302] {
        let answer =
            raw_tcp_exchange(proxy.addr(), &legacy_client_hello(version, "api.test")).await;
        assert_refused_without_server_hello(version, &answer);
    }
    let reasons = handshake_error_reasons(&proxy, 2.0).await;
    let total: f64 = reasons.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 2.0, "both refusals are counted: {reasons:?}");
}

#[tokio::test]
async fn tls_1_0_and_1_1_client_hellos_are_counted_as_protocol_version() {
    let ca = Ca::new("versions CA");
    let proxy = api_proxy(&ca, "").await;
    for version in [0x0301, 0x0302] {
        let answer =
            raw_tcp_exchange(proxy.addr(), &legacy_client_hello(version, "api.test")).await;
        assert_refused_without_server_hello(version, &answer);
    }
    let reasons = handshake_error_reasons(&proxy, 2.0).await;
    assert_eq!(reasons, [("protocol_version".to_owned(), 2.0)]);
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_are_served_and_counted_by_version() {
    let ca = Ca::new("versions CA");
    let proxy = api_proxy(&ca, "").await;
    for (versions, want) in [
        (TLS12_ONLY, rustls::ProtocolVersion::TLSv1_2),
        (TLS13_ONLY, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = ClientTls::trusting(&ca).versions(versions).build();
        let (stream, _) = tls_connect(proxy.addr(), "api.test", config).await;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(want));
        let (res, _) = http_over(stream, "api.test").await.get("/", &[]).await;
        assert_eq!(res.status, StatusCode::OK, "{want:?}");
    }
    for version in ["TLSv1.2", "TLSv1.3"] {
        let labels = [("listener", "main"), ("version", version)];
        assert_eq!(metric_reaches(&proxy, HANDSHAKES, &labels, 1.0).await, 1.0);
    }
}

// ---- mTLS --------------------------------------------------------------------------

/// The PKI of an mTLS listener: the server's CA and the clients' CA.
struct MtlsPki {
    server: Ca,
    clients: Ca,
}

impl MtlsPki {
    fn new() -> Self {
        Self {
            server: Ca::new("server CA"),
            clients: Ca::new("clients CA"),
        }
    }

    /// The listener's `client_ca` plus `extra`.
    fn tls_keys(&self, extra: &str) -> String {
        let sep = if extra.is_empty() { "" } else { ", " };
        format!("client_ca: {}{sep}{extra}", quoted(&self.clients.cert))
    }
}

const SPIFFE_ID: &str = "spiffe://acme.test/ns/shop/sa/orders";

#[tokio::test]
async fn mtls_forwards_the_verified_client_certificate_and_replaces_a_client_sent_one() {
    let pki = MtlsPki::new();
    let proxy = api_proxy(&pki.server, &pki.tls_keys("forward_client_cert: true")).await;
    let id = pki.clients.client("orders-client", SPIFFE_ID);
    let config = ClientTls::trusting(&pki.server).identity(&id).build();
    let (stream, _) = tls_connect(proxy.addr(), "api.test", config).await;
    let mut conn = http_over(stream, "api.test").await;
    let forged = "Hash=forged;Subject=\"CN=admin\"";
    let (res, echo) = conn.get("/", &[("x-forwarded-client-cert", forged)]).await;
    assert_eq!(res.status, StatusCode::OK, "{echo}");

    let xfcc = seen(&echo, "x-forwarded-client-cert");
    assert_eq!(
        xfcc.len(),
        1,
        "exactly one header reaches the upstream: {echo}"
    );
    let xfcc = xfcc[0];
    assert!(
        !xfcc.contains("forged"),
        "the client's copy is replaced: {xfcc}"
    );
    let (chain, _) = common::tls::pem_pair(&id);
    let digest = ring::digest::digest(&ring::digest::SHA256, chain[0].as_ref());
    let hash: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hash.len(), 64);
    assert!(xfcc.starts_with(&format!("Hash={hash};")), "{xfcc}");
    assert!(xfcc.contains("Subject=\"CN=orders-client\""), "{xfcc}");
    assert!(xfcc.contains(&format!("URI={SPIFFE_ID}")), "{xfcc}");
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_in_the_handshake() {
    let pki = MtlsPki::new();
    let proxy = api_proxy(&pki.server, &pki.tls_keys("")).await;
    for versions in [TLS13_ONLY, TLS12_ONLY] {
        let config = ClientTls::trusting(&pki.server).versions(versions).build();
        let saw = refused_in_handshake(proxy.addr(), "api.test", config).await;
        eprintln!(
            "{:?} client without a certificate: {saw}",
            versions[0].version
        );
    }
    let reasons = handshake_error_reasons(&proxy, 2.0).await;
    assert_eq!(reasons, [("no_client_certificate".to_owned(), 2.0)]);
}

#[tokio::test]
async fn mtls_refuses_a_certificate_from_another_ca_in_the_handshake() {
    let pki = MtlsPki::new();
    let proxy = api_proxy(&pki.server, &pki.tls_keys("")).await;
    let stranger = Ca::new("another CA").client("intruder", SPIFFE_ID);
    for versions in [TLS13_ONLY, TLS12_ONLY] {
        let config = ClientTls::trusting(&pki.server)
            .identity(&stranger)
            .versions(versions)
            .build();
        let saw = refused_in_handshake(proxy.addr(), "api.test", config).await;
        eprintln!("{:?} client from another CA: {saw}", versions[0].version);
    }
    let reasons = handshake_error_reasons(&proxy, 2.0).await;
    assert_eq!(reasons, [("bad_client_certificate".to_owned(), 2.0)]);
}

#[tokio::test]
async fn without_forward_client_cert_no_client_certificate_header_reaches_the_upstream() {
    let pki = MtlsPki::new();
    let proxy = api_proxy(&pki.server, &pki.tls_keys("")).await;
    let id = pki.clients.client("orders-client", SPIFFE_ID);
    let config = ClientTls::trusting(&pki.server).identity(&id).build();
    let (stream, _) = tls_connect(proxy.addr(), "api.test", config).await;
    let (res, echo) = http_over(stream, "api.test")
        .await
        .get("/", &[("x-forwarded-client-cert", "Hash=forged")])
        .await;
    assert_eq!(res.status, StatusCode::OK, "{echo}");
    assert_eq!(
        seen(&echo, "x-forwarded-client-cert"),
        [] as [&str; 0],
        "{echo}"
    );
}

// ---- Reload ----------------------------------------------------------------------

/// Certificates for the reload tests: every generation also names
/// `svc.test`, which the client asks for; the first name tells them apart
/// (and labels the expiry gauge).
fn generation(ca: &Ca, name: &str) -> Issued {
    ca.issue(&[name, "svc.test"], KeyKind::Ecdsa)
}

/// A TLS proxy serving the certificate in a Secret-style directory.
async fn secret_proxy(secret: &SecretDir) -> Proxy {
    let certs = certificates(&[(&secret.cert(), &secret.key())]);
    Proxy::start(&tls_proxy_yaml(
        echo_upstream().await,
        &format!("{{ certificates: {certs} }}"),
    ))
    .await
}

/// The first SAN of the certificate a fresh handshake gets now.
async fn served_now(proxy: &Proxy, ca: &Ca) -> String {
    let config = ClientTls::trusting(ca).build();
    let (_, sans) = tls_connect(proxy.addr(), "svc.test", config).await;
    sans.into_iter().next().expect("a SAN")
}

fn expiry_of(samples: &[Sample], name: &str) -> Option<f64> {
    metric(samples, EXPIRY, &[("listener", "main"), ("name", name)])
}

#[tokio::test]
async fn a_symlink_swap_serves_the_new_certificate_and_open_connections_keep_working() {
    let ca = Ca::new("reload CA");
    let v1 = generation(&ca, "v1.test");
    let v2 = generation(&ca, "v2.test");
    let mut secret = SecretDir::new(ca.dir(), &v1.cert_pem, &v1.key_pem);
    let proxy = secret_proxy(&secret).await;

    let config = ClientTls::trusting(&ca).alpn(&["http/1.1"]).build();
    let (stream, sans) = tls_connect(proxy.addr(), "svc.test", config).await;
    assert_eq!(sans[0], "v1.test");
    let mut before = http_over(stream, "svc.test").await;
    assert_eq!(before.get("/before", &[]).await.0.status, StatusCode::OK);
    let samples = metrics(&proxy).await;
    assert_eq!(expiry_of(&samples, "v1.test"), Some(v1.not_after as f64));

    secret.swap(&v2.cert_pem, &v2.key_pem);
    eventually("a new handshake gets the v2 certificate", || async {
        (served_now(&proxy, &ca).await == "v2.test").then_some(())
    })
    .await;

    let (res, _) = before.get("/after", &[]).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "the connection opened before still serves"
    );
    let labels = [("listener", "main"), ("result", "success")];
    assert!(metric_reaches(&proxy, RELOADS, &labels, 1.0).await >= 1.0);
    let samples = metrics(&proxy).await;
    assert_eq!(expiry_of(&samples, "v2.test"), Some(v2.not_after as f64));
    assert_eq!(
        expiry_of(&samples, "v1.test"),
        None,
        "the old name's series is gone"
    );
}

#[tokio::test]
async fn a_reload_rereads_the_certificates_of_an_unchanged_listener_and_keeps_it_running() {
    let ca = Ca::new("sighup CA");
    let v1 = generation(&ca, "v1.test");
    let secret = SecretDir::new(ca.dir(), &v1.cert_pem, &v1.key_pem);
    let certs = certificates(&[(&secret.cert(), &secret.key())]);
    let yaml = tls_proxy_yaml(
        echo_upstream().await,
        &format!("{{ certificates: {certs} }}"),
    );
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.addr();
    let labels = [("listener", "main"), ("result", "success")];
    let before = metric(&metrics(&proxy).await, RELOADS, &labels).unwrap_or(0.0);
    // What SIGHUP does: apply the file again. The files did not change, yet
    // they are read again (a reload counts), and the listener stays put.
    let cfg = breakwater::config::parse(Path::new("test.yaml"), &yaml).expect("config");
    proxy.app.apply(cfg).await.expect("reload");
    assert_eq!(
        metric(&metrics(&proxy).await, RELOADS, &labels),
        Some(before + 1.0)
    );
    assert_eq!(proxy.addr(), addr, "the listener kept its socket");
    assert_eq!(served_now(&proxy, &ca).await, "v1.test");
}

/// Swaps in `bad` (cert PEM, key PEM) and checks the old certificate keeps
/// serving, old and new connections work, and the refusal is counted; then
/// a good swap is still picked up.
async fn a_bad_replacement_keeps_the_old_certificate(
    bad: impl FnOnce(&Ca, &Issued) -> (String, String),
) {
    let ca = Ca::new("reload CA");
    let v1 = generation(&ca, "v1.test");
    let mut secret = SecretDir::new(ca.dir(), &v1.cert_pem, &v1.key_pem);
    let proxy = secret_proxy(&secret).await;
    let config = ClientTls::trusting(&ca).alpn(&["h2"]).build();
    let (stream, _) = tls_connect(proxy.addr(), "svc.test", config.clone()).await;
    let mut before = http_over(stream, "svc.test").await;
    assert_eq!(before.get("/before", &[]).await.0.status, StatusCode::OK);

    let (cert_pem, key_pem) = bad(&ca, &v1);
    secret.swap(&cert_pem, &key_pem);
    let error = [("listener", "main"), ("result", "error")];
    metric_reaches(&proxy, RELOADS, &error, 1.0).await;

    assert_eq!(
        served_now(&proxy, &ca).await,
        "v1.test",
        "the old certificate serves"
    );
    let (stream, _) = tls_connect(proxy.addr(), "svc.test", config).await;
    let (res, _) = http_over(stream, "svc.test").await.get("/new", &[]).await;
    assert_eq!(res.status, StatusCode::OK, "a new connection is served");
    let (res, _) = before.get("/after", &[]).await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "the connection opened before is served"
    );
    let samples = metrics(&proxy).await;
    let success = [("listener", "main"), ("result", "success")];
    assert_eq!(
        metric(&samples, RELOADS, &success),
        None,
        "nothing was swapped in"
    );
    assert_eq!(expiry_of(&samples, "v1.test"), Some(v1.not_after as f64));

    // The watcher is not stuck on the bad file: a good one is taken.
    let v3 = generation(&ca, "v3.test");
    secret.swap(&v3.cert_pem, &v3.key_pem);
    eventually("a good replacement after a bad one is served", || async {
        (served_now(&proxy, &ca).await == "v3.test").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_garbage_certificate_keeps_the_old_one() {
    a_bad_replacement_keeps_the_old_certificate(|_, v1| {
        ("this is not a certificate\n".to_owned(), v1.key_pem.clone())
    })
    .await;
}

#[tokio::test]
async fn a_certificate_whose_key_does_not_match_keeps_the_old_one() {
    a_bad_replacement_keeps_the_old_certificate(|ca, v1| {
        // v2's certificate with v1's key.
        (generation(ca, "v2.test").cert_pem, v1.key_pem.clone())
    })
    .await;
}

#[tokio::test]
async fn an_expired_certificate_keeps_the_old_one() {
    a_bad_replacement_keeps_the_old_certificate(|ca, _| {
        let expired = ca.issue_with(&["v2.test", "svc.test"], KeyKind::Ecdsa, Validity::Expired);
        (expired.cert_pem, expired.key_pem)
    })
    .await;
}

// ---- TLS to upstreams -----------------------------------------------------------------

/// An upstream behind TLS with a certificate for `app.internal` from `ca`,
/// requiring client certificates from `client_ca` when given. It answers
/// with the HTTP version it saw in `x-seen-version` and the ALPN protocol
/// its connection negotiated in `x-seen-alpn` (`none` without ALPN).
async fn tls_app(ca: &Ca, client_ca: Option<&Ca>) -> SocketAddr {
    let cert = ca.issue(&["app.internal"], KeyKind::Ecdsa);
    let config = server_config(&cert, &["h2", "http/1.1"], client_ca);
    serve_tls(config, |req: http::Request<Incoming>| async move {
        let alpn = match req.extensions().get::<NegotiatedAlpn>() {
            Some(NegotiatedAlpn(Some(p))) => String::from_utf8_lossy(p).into_owned(),
            _ => "none".to_owned(),
        };
        Response::builder()
            .header("x-seen-version", format!("{:?}", req.version()))
            .header("x-seen-alpn", alpn)
            .body(full("from the tls app"))
            .expect("response")
    })
    .await
}

/// A plain listener `main` in front of `https://app` with `fields` on the
/// upstream.
fn https_upstream_yaml(app: SocketAddr, fields: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: main, listen: 127.0.0.1:0 }}
upstreams:
  app: {{ url: "https://{app}", {fields} }}
access_log: {{ format: off }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#
    )
}

/// The `tls:` of an upstream trusting `ca` and sending SNI app.internal.
fn upstream_tls(ca: &Ca, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        "tls: {{ ca: {}, server_name: app.internal{sep}{extra} }}",
        quoted(&ca.cert)
    )
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_is_reached_over_http1() {
    let ca = Ca::new("private CA");
    let app = tls_app(&ca, None).await;
    let proxy = Proxy::start(&https_upstream_yaml(app, &upstream_tls(&ca, ""))).await;
    let (status, headers, body) = get_within(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "from the tls app");
    assert_eq!(headers["x-seen-version"], "HTTP/1.1");
    assert_eq!(headers["x-seen-alpn"], "http/1.1");
}

#[tokio::test]
async fn an_https_upstream_with_protocol_http2_is_reached_over_h2() {
    let ca = Ca::new("private CA");
    let app = tls_app(&ca, None).await;
    let fields = format!("protocol: http2, {}", upstream_tls(&ca, ""));
    let proxy = Proxy::start(&https_upstream_yaml(app, &fields)).await;
    let (status, headers, body) = get_within(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-seen-version"], "HTTP/2.0");
    assert_eq!(headers["x-seen-alpn"], "h2");
}

#[tokio::test]
async fn an_https_upstream_not_signed_by_a_trusted_ca_gets_a_502() {
    let ca = Ca::new("private CA");
    let app = tls_app(&ca, None).await;
    // No `ca`: the system's roots, which do not know the private CA.
    let fields = "tls: { server_name: app.internal }";
    let proxy = Proxy::start(&https_upstream_yaml(app, fields)).await;
    let (status, headers, body) = get_within(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(reason_of(&headers), "upstream-unreachable", "{body}");
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate_gets_the_configured_one() {
    let ca = Ca::new("private CA");
    let clients = Ca::new("upstream clients CA");
    let app = tls_app(&ca, Some(&clients)).await;
    let id = clients.client("breakwater", "spiffe://acme.test/ns/shop/sa/breakwater");
    let keys = format!("cert: {}, key: {}", quoted(&id.cert), quoted(&id.key));
    let proxy = Proxy::start(&https_upstream_yaml(app, &upstream_tls(&ca, &keys))).await;
    let (status, _, body) = get_within(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "from the tls app");
}

#[tokio::test]
async fn an_upstream_requiring_a_client_certificate_refuses_the_proxy_without_one() {
    let ca = Ca::new("private CA");
    let clients = Ca::new("upstream clients CA");
    let app = tls_app(&ca, Some(&clients)).await;
    let proxy = Proxy::start(&https_upstream_yaml(app, &upstream_tls(&ca, ""))).await;
    let (status, headers, body) = get_within(&proxy.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_ne!(reason_of(&headers), "", "the proxy's own answer: {body}");
}

// ---- Handshake timeout, plain HTTP on the TLS port ------------------------------------

#[tokio::test]
async fn the_handshake_timeout_closes_a_silent_connection() {
    let ca = Ca::new("timeout CA");
    let proxy = api_proxy(&ca, "handshake_timeout: 300ms").await;
    let mut tcp = TcpStream::connect(proxy.addr()).await.expect("connect");
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = within("the proxy closes a silent connection", tcp.read(&mut buf)).await;
    let elapsed = start.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF or a reset, got {read:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}, expected about 300ms"
    );
    let reasons = handshake_error_reasons(&proxy, 1.0).await;
    assert_eq!(reasons, [("timeout".to_owned(), 1.0)]);
}

#[tokio::test]
async fn plain_http_to_a_tls_port_is_refused_and_counted_as_not_tls() {
    let ca = Ca::new("not-tls CA");
    let proxy = api_proxy(&ca, "").await;
    let answer = raw_tcp_exchange(proxy.addr(), b"GET / HTTP/1.1\r\nhost: api.test\r\n\r\n").await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let reasons = handshake_error_reasons(&proxy, 1.0).await;
    assert_eq!(reasons, [("not_tls".to_owned(), 1.0)]);
}

// ---- breakwater validate ------------------------------------------------------------------

/// A config with a plain listener and a TLS listener `public` serving
/// `cert`/`key` (written as given: absolute or relative).
fn validate_yaml(cert: &str, key: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: plain, listen: 127.0.0.1:0 }}
  - name: public
    listen: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: "{cert}", key: "{key}" }}
upstreams:
  app: {{ url: "http://127.0.0.1:8080" }}
routes:
  - {{ name: app, match: {{ path_prefix: / }}, upstream: app }}
"#
    )
}

/// Runs `breakwater validate -c config` in `cwd` (bounded); returns the exit
/// code, stdout and stderr.
async fn validate(config: &Path, cwd: &Path) -> (Option<i32>, String, String) {
    let out = within(
        "breakwater validate",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .arg("validate")
            .arg("-c")
            .arg(config)
            .current_dir(cwd)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run breakwater validate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(ca: &Ca, yaml: &str) -> std::path::PathBuf {
    let path = ca.dir().join("breakwater.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[tokio::test]
async fn validate_names_the_key_path_of_a_missing_key_file() {
    let ca = Ca::new("validate CA");
    let cert = ca.issue(&["api.test"], KeyKind::Ecdsa);
    let missing = ca.dir().join("missing.key");
    let config = write_config(
        &ca,
        &validate_yaml(
            &cert.cert.display().to_string(),
            &missing.display().to_string(),
        ),
    );
    let (code, _, stderr) = validate(&config, ca.dir()).await;
    assert_eq!(code, Some(2), "{stderr}");
    let want = format!(
        "{}: listeners[1] (public).tls.certificates[0].key: {}: cannot read",
        config.display(),
        missing.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
}

#[tokio::test]
async fn validate_reports_a_key_that_does_not_match_on_the_key_path() {
    let ca = Ca::new("validate CA");
    let cert = ca.issue(&["api.test"], KeyKind::Ecdsa);
    let other = ca.issue(&["other.test"], KeyKind::Ecdsa);
    let config = write_config(
        &ca,
        &validate_yaml(
            &cert.cert.display().to_string(),
            &other.key.display().to_string(),
        ),
    );
    let (code, _, stderr) = validate(&config, ca.dir()).await;
    assert_eq!(code, Some(2), "{stderr}");
    let want = format!(
        "listeners[1] (public).tls.certificates[0].key: {}: does not match the certificate in {}",
        other.key.display(),
        cert.cert.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
}

#[tokio::test]
async fn validate_resolves_certificate_paths_against_the_config_directory() {
    let ca = Ca::new("validate CA");
    let cert = ca.issue(&["api.test"], KeyKind::Ecdsa);
    let conf = ca.dir().join("conf");
    std::fs::create_dir_all(conf.join("tls")).expect("mkdir conf/tls");
    std::fs::write(conf.join("tls/api.crt"), &cert.cert_pem).expect("write api.crt");
    std::fs::write(conf.join("tls/api.key"), &cert.key_pem).expect("write api.key");
    let config = conf.join("breakwater.yaml");
    std::fs::write(&config, validate_yaml("tls/api.crt", "tls/api.key")).expect("write config");
    // Run from elsewhere, where `tls/api.crt` does not exist.
    let (code, stdout, stderr) = validate(&config, ca.dir()).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
}

// ---- Metrics ----------------------------------------------------------------------------

#[tokio::test]
async fn the_tls_metric_families_pass_promtool() {
    let ca = Ca::new("metrics CA");
    let v1 = generation(&ca, "v1.test");
    let v2 = generation(&ca, "v2.test");
    let mut secret = SecretDir::new(ca.dir(), &v1.cert_pem, &v1.key_pem);
    let proxy = secret_proxy(&secret).await;
    // One of each: a handshake, a failed one, a reload.
    let config = ClientTls::trusting(&ca).build();
    let (stream, _) = tls_connect(proxy.addr(), "svc.test", config).await;
    drop(stream);
    raw_tcp_exchange(proxy.addr(), b"GET / HTTP/1.1\r\n\r\n").await;
    secret.swap(&v2.cert_pem, &v2.key_pem);
    let success = [("listener", "main"), ("result", "success")];
    metric_reaches(&proxy, RELOADS, &success, 1.0).await;
    handshake_error_reasons(&proxy, 1.0).await;
    let tls13 = [("listener", "main"), ("version", "TLSv1.3")];
    metric_reaches(&proxy, HANDSHAKES, &tls13, 1.0).await;

    let (status, _, exposition) = get_within(&proxy.admin_url("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    for family in [HANDSHAKES, HANDSHAKE_ERRORS, RELOADS, EXPIRY] {
        assert!(
            exposition.contains(&format!("\n{family}{{")),
            "{family} has samples:\n{exposition}"
        );
    }
    promtool_lint("/metrics with TLS families", &exposition).await;
}
