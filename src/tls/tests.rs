//! Certificate loading: what is accepted, and what each refusal says.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use super::certs::{self, Which};
use super::crypto;

const NOW: i64 = 1_800_000_000;

fn issue(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn load(cert: &str, key: &str, now: i64) -> Result<certs::Loaded, certs::CertError> {
    certs::certified_key(
        &crypto(),
        Path::new("a.crt"),
        cert.as_bytes(),
        Path::new("a.key"),
        key.as_bytes(),
        now,
    )
}

#[test]
fn a_matching_pair_loads_with_its_names_lowercased_and_its_expiry() {
    let (cert, key) = issue(&["API.Example.test", "*.svc.test"]);
    let loaded = load(&cert, &key, NOW).unwrap();
    assert_eq!(loaded.names, ["api.example.test", "*.svc.test"]);
    assert_eq!(loaded.label, "api.example.test");
    assert!(loaded.not_after > NOW, "{}", loaded.not_after);
}

#[test]
fn a_key_of_another_certificate_is_refused_on_the_key() {
    let (cert, _) = issue(&["a.test"]);
    let (_, other_key) = issue(&["b.test"]);
    let e = load(&cert, &other_key, NOW).unwrap_err();
    assert_eq!(e.which, Which::Key);
    assert_eq!(
        e.to_string(),
        "a.key: does not match the certificate in a.crt"
    );
}

#[test]
fn an_expired_certificate_is_refused_on_the_cert() {
    let (cert, key) = issue(&["a.test"]);
    let not_after = load(&cert, &key, NOW).unwrap().not_after;
    let e = load(&cert, &key, not_after).unwrap_err();
    assert_eq!(e.which, Which::Cert);
    assert!(e.problem.starts_with("expired at"), "{e}");
}

#[test]
fn files_without_pem_blocks_say_what_was_expected() {
    let (cert, key) = issue(&["a.test"]);
    let e = load("hello", &key, NOW).unwrap_err();
    assert_eq!(
        (e.which, e.problem.contains("BEGIN CERTIFICATE")),
        (Which::Cert, true)
    );
    let e = load(&cert, "hello", NOW).unwrap_err();
    assert_eq!(
        (e.which, e.problem.contains("BEGIN PRIVATE KEY")),
        (Which::Key, true)
    );
    // A certificate where the key should be is not a key either.
    let e = load(&cert, &cert, NOW).unwrap_err();
    assert_eq!(e.which, Which::Key, "{e}");
}

#[test]
fn a_pem_block_with_garbage_inside_is_an_error_not_a_panic() {
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n";
    let (_, key) = issue(&["a.test"]);
    assert_eq!(load(garbage, &key, NOW).unwrap_err().which, Which::Cert);
    let bad_der = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(load(bad_der, &key, NOW).unwrap_err().which, Which::Cert);
}

#[test]
fn a_ca_bundle_needs_one_usable_certificate() {
    let (cert, _) = issue(&["ca.test"]);
    assert!(certs::roots(Which::Ca, Path::new("ca.pem"), cert.as_bytes()).is_ok());
    let e = certs::roots(Which::Ca, Path::new("ca.pem"), b"").unwrap_err();
    assert_eq!(e.which, Which::Ca);
}

#[test]
fn a_missing_file_names_its_path() {
    let e = certs::read(Which::Key, Path::new("/nonexistent/x.key")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/x.key: cannot read:"),
        "{e}"
    );
}

#[test]
fn peer_identity_reads_subject_sans_and_hash() {
    let (cert, _) = issue(&["client.test"]);
    let der = certs::parse_certs(Path::new("c.pem"), cert.as_bytes()).unwrap();
    let id = certs::peer_identity(der[0].as_ref()).unwrap();
    assert_eq!(id.dns, ["client.test"]);
    assert_eq!(id.hash.len(), 64);
    assert!(id.hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(certs::peer_identity(b"not der").is_none());
}
