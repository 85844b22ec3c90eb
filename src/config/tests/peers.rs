//! What `backend: peers` requires of `cluster`: ids a certificate can name,
//! an odd member count unless allowed, and `cluster.tls` files that the
//! transport will accept.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::*;

/// A peers lease; `node_id`, `peers` and `extra` (more `cluster` keys) as
/// given; `tls` files under `/nonexistent` unless `extra` has its own.
fn peers_config(node_id: &str, peers: &[&str], extra: &str) -> String {
    let peers: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{{ id: \"{id}\", address: \"10.0.0.{}:7946\" }}", i + 6))
        .collect();
    let tls = if extra.contains("tls:") {
        String::new()
    } else {
        "\n  tls: { cert: /nonexistent/p.crt, key: /nonexistent/p.key, ca: /nonexistent/ca.crt }"
            .to_owned()
    };
    format!(
        r#"
listeners: [{{ listen: 127.0.0.1:8000 }}]
leases: {{ orders: {{ backend: peers }} }}
cluster:
  node_id: "{node_id}"
  listen: 127.0.0.1:7946
  advertise: 10.0.0.5:7946
  forward_url: http://10.0.0.5:8000
  state_dir: /var/lib/breakwater
  peers: [{peers}]{tls}
{extra}
"#,
        peers = peers.join(", ")
    )
}

/// Parsed and validated without looking at files.
fn semantic_errors(text: &str) -> Vec<String> {
    let file = Path::new(FILE);
    let raw = parse_raw(file, text).unwrap();
    match validate::validate_with(file, raw, unsupported::unsupported) {
        Ok(_) => Vec::new(),
        Err(ds) => ds
            .iter()
            .map(|d| d.to_string().trim_start_matches(FILE).to_owned())
            .collect(),
    }
}

#[test]
fn a_peers_lease_with_three_dns_named_members_is_valid() {
    let text = peers_config("orders-0", &["orders-1", "orders-2.example.com"], "");
    assert_eq!(semantic_errors(&text), Vec::<String>::new());
    let c = validate::validate_with(
        Path::new(FILE),
        parse_raw(Path::new(FILE), &text).unwrap(),
        unsupported::unsupported,
    )
    .unwrap();
    let cluster = c.cluster.unwrap();
    assert!(!cluster.allow_even_members);
    assert_eq!(c.leases[0].backend, LeaseBackend::Peers);
    assert!(
        c.redacted_yaml.contains("allow_even_members: false"),
        "{}",
        c.redacted_yaml
    );
}

#[test]
fn peer_ids_must_be_dns_names_naming_the_key() {
    let text = peers_config("orders_0", &["b..c", "-d"], "");
    let errors = semantic_errors(&text);
    let tail = "; peers identify each other by a DNS name in their certificates, so use \
                letters, digits, `-` and `.`";
    assert_eq!(
        errors,
        [
            format!(
                ": cluster.node_id: \"orders_0\" cannot be a peer id: it holds a character \
                 other than a letter, digit, `-` or `.`{tail}"
            ),
            format!(
                ": cluster.peers[0] (b..c).id: \"b..c\" cannot be a peer id: it has an empty \
                 label (a leading, trailing or double `.`){tail}"
            ),
            format!(
                ": cluster.peers[1] (-d).id: \"-d\" cannot be a peer id: a label starts or ends \
                 with `-`{tail}"
            ),
        ]
    );
}

#[test]
fn ids_that_differ_only_in_case_are_refused() {
    let errors = semantic_errors(&peers_config("node-a", &["Node-A", "node-b"], ""));
    assert_eq!(
        errors,
        [
            ": cluster.peers[0] (Node-A).id: \"Node-A\" differs from \"node-a\" (cluster.node_id) \
          only in case; certificates name hosts without case"
        ]
    );
}

#[test]
fn the_id_rule_applies_only_with_a_peers_lease() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\nleases: { reports: {} }\n\
                cluster: { node_id: my_host, peers: [{ id: x_y, address: \"a:1\" }] }\n";
    assert_eq!(semantic_errors(text), Vec::<String>::new());
}

#[test]
fn an_even_member_count_is_refused_unless_allowed() {
    let errors = semantic_errors(&peers_config("a", &["b"], ""));
    assert_eq!(
        errors,
        [
            ": cluster.peers: 2 members (node_id and 1 peers): an even count tolerates no more \
          failures than 1 members and splits into halves where no side has a majority; add \
          or remove a peer, or set `cluster.allow_even_members: true`"
        ]
    );
    let four = peers_config("a", &["b", "c", "d"], "");
    assert_eq!(semantic_errors(&four).len(), 1);
    let allowed = peers_config("a", &["b", "c", "d"], "  allow_even_members: true");
    assert_eq!(semantic_errors(&allowed), Vec::<String>::new());
    let c = validate::validate_with(
        Path::new(FILE),
        parse_raw(Path::new(FILE), &allowed).unwrap(),
        unsupported::unsupported,
    )
    .unwrap();
    assert!(c.cluster.as_ref().unwrap().allow_even_members);
    assert!(c.redacted_yaml.contains("allow_even_members: true"));
    // Not a boolean: a type error at its position.
    let wrong = peers_config("a", &["b", "c"], "  allow_even_members: sometimes");
    let error = only_error(&wrong);
    assert!(error.contains("allow_even_members"), "{error}");
}

/// A CA in `dir` and a certificate from it naming `names`, usable as
/// client and server; returns `(cert, key, ca)` paths.
fn issue(dir: &Path, ca_name: &str, names: &[&str]) -> (String, String, String) {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(format!("{ca_name}-{name}"));
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    (
        write("node.crt", cert.pem()),
        write("node.key", key.serialize_pem()),
        write("ca.crt", ca_pem),
    )
}

fn tls_line(cert: &str, key: &str, ca: &str) -> String {
    format!("  tls: {{ cert: \"{cert}\", key: \"{key}\", ca: \"{ca}\" }}")
}

#[test]
fn cluster_tls_is_loaded_as_the_transport_will_and_errors_name_the_file_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = issue(dir.path(), "good", &["orders-0"]);
    let text = peers_config(
        "orders-0",
        &["orders-1", "orders-2"],
        &tls_line(&cert, &key, &ca),
    );
    parse_ok(&text);

    // Missing files, each at its key.
    let text = peers_config("orders-0", &["orders-1", "orders-2"], "");
    let error = only_error(&text);
    assert!(
        error.starts_with(": cluster.tls.cert: /nonexistent/p.crt: cannot read:"),
        "{error}"
    );
    let missing_ca = tls_line(&cert, &key, "/nonexistent/ca.crt");
    let error = only_error(&peers_config(
        "orders-0",
        &["orders-1", "orders-2"],
        &missing_ca,
    ));
    assert!(
        error.starts_with(": cluster.tls.ca: /nonexistent/ca.crt: cannot read:"),
        "{error}"
    );

    // A certificate from another CA: the others would refuse it.
    let (other_cert, other_key, _) = issue(dir.path(), "other", &["orders-0"]);
    let foreign = tls_line(&other_cert, &other_key, &ca);
    let error = only_error(&peers_config(
        "orders-0",
        &["orders-1", "orders-2"],
        &foreign,
    ));
    assert!(error.starts_with(": cluster.tls.cert: "), "{error}");

    // A certificate that names another member, not this node.
    let (wrong_cert, wrong_key, wrong_ca) = issue(dir.path(), "wrong", &["orders-1"]);
    let wrong = tls_line(&wrong_cert, &wrong_key, &wrong_ca);
    let error = only_error(&peers_config("orders-0", &["orders-1", "orders-2"], &wrong));
    assert!(error.starts_with(": cluster.tls.cert: "), "{error}");
}

#[test]
fn cluster_tls_files_are_not_read_without_a_peers_lease() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\nleases: { reports: {} }\n\
                cluster: { node_id: a, tls: { cert: /nonexistent/p.crt, key: /nonexistent/p.key, \
                ca: /nonexistent/ca.crt } }\n";
    parse_ok(text);
}
