//! Tests of the whole path from YAML text to `Config` or diagnostics.

#![allow(clippy::unwrap_used)]

mod features;
mod peers;
mod semantic;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

const FILE: &str = "test.yaml";

/// The SPEC §7 example with every key this build supports, and nothing else.
const SUPPORTED_EXAMPLE: &str = r#"
admin:
  listen: 127.0.0.1:9901
listeners:
  - name: plain
    listen: 0.0.0.0:8000
    header_timeout: 10s
    body_timeout: 30s
upstreams:
  app:
    url: http://127.0.0.1:8080
    protocol: http1
    connect_timeout: 1s
    max_idle_per_host: 64
defaults:
  timeout: 1s
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
  - name: hello
    match: { path_exact: /hello }
    respond: { status: 200, body: "hello\n" }
  - name: everything-else
    match: { path_prefix: / }
    upstream: app
access_log: { format: text }
shutdown: { drain_delay: 5s, grace: 1m }
limits: { max_header_bytes: 32KiB, max_headers: 50 }
"#;

pub(super) fn parse_ok(text: &str) -> Config {
    match parse(Path::new(FILE), text) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Each diagnostic as displayed, without the `FILE` prefix.
pub(super) fn errors(text: &str) -> Vec<String> {
    match parse(Path::new(FILE), text) {
        Ok(_) => panic!("expected errors, the config is valid"),
        Err(Error::Invalid { diagnostics }) => diagnostics
            .iter()
            .map(|d| d.to_string().trim_start_matches(FILE).to_owned())
            .collect(),
        Err(e) => panic!("expected diagnostics, got {e}"),
    }
}

/// Asserts that exactly one diagnostic was produced, and returns it.
pub(super) fn only_error(text: &str) -> String {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap_or_default()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn embedded_default_config_is_valid_and_serves_one_replica() {
    let c = parse_ok(EMBEDDED_DEFAULT);
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].name, "main");
    assert_eq!(c.listeners[0].listen, addr("127.0.0.1:8000"));
    assert_eq!(c.upstreams[0].name, "app");
    assert_eq!(c.upstreams[0].url, "http://127.0.0.1:8080/");
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["hello", "app"]);
    let Action::Respond(hello) = &c.routes[0].action else {
        panic!("hello should respond itself")
    };
    assert_eq!(hello.status, 200);
    assert_eq!(&hello.body[..], b"hello from breakwater\n");
    assert!(matches!(c.routes[1].action, Action::Upstream(0)));
    assert_eq!(c.routes[1].timeout, Some(Duration::from_secs(1)));
    assert!(c.leases.is_empty() && c.cluster.is_none() && c.etcd.is_none());
}

#[test]
fn default_path_holds_the_embedded_config() {
    let loaded = load(Path::new(DEFAULT_PATH)).unwrap();
    assert_eq!(
        loaded.redacted_yaml,
        parse_ok(EMBEDDED_DEFAULT).redacted_yaml
    );
}

#[test]
fn load_names_the_file_it_cannot_read() {
    let err = load(Path::new("no/such/file.yaml")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read no/such/file.yaml: "),
        "{err}"
    );
}

#[test]
fn spec_example_without_unsupported_keys_parses_with_its_values() {
    let c = parse_ok(SUPPORTED_EXAMPLE);
    assert_eq!(c.listeners[0].header_timeout, Duration::from_secs(10));
    assert_eq!(c.listeners[0].body_timeout, Duration::from_secs(30));
    assert_eq!(c.upstreams[0].protocol, Protocol::Http1);
    let orders = &c.routes[0];
    assert_eq!(orders.timeout, Some(Duration::from_secs(2)));
    assert_eq!(orders.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(orders.matcher.methods.len(), 4);
    assert_eq!(
        c.routes[1].timeout,
        Some(Duration::from_secs(1)),
        "inherited"
    );
    assert_eq!(c.access_log, AccessLogFormat::Text);
    assert_eq!(c.shutdown.drain_delay, Duration::from_secs(5));
    assert_eq!(c.shutdown.grace, Duration::from_secs(60));
    assert_eq!(c.limits.max_header_bytes, 32 * 1024);
    assert_eq!(c.limits.max_headers, 50);
}

#[test]
fn effective_yaml_parses_back_to_the_same_config() {
    let first = parse_ok(SUPPORTED_EXAMPLE);
    let second = parse_ok(&first.redacted_yaml);
    assert_eq!(first.redacted_yaml, second.redacted_yaml);
    assert!(
        first.redacted_yaml.contains("host: '*.example.com'"),
        "{}",
        first.redacted_yaml
    );
}

#[test]
fn unknown_key_is_reported_at_its_line_and_column() {
    let text = "listeners:\n  - name: main\n    listen: 127.0.0.1:8000\n    lisen_backlog: 5\n";
    let error = only_error(text);
    assert!(
        error.starts_with(":4:5: listeners[0]: unknown field `lisen_backlog`"),
        "{error}"
    );
}

#[test]
fn unknown_top_level_section_lists_the_known_ones() {
    let error = only_error("listener: []\n");
    assert!(
        error.starts_with(":1:1: unknown field `listener`, expected one of `admin`, `listeners`"),
        "{error}"
    );
}

#[test]
fn bad_duration_is_reported_at_its_line_and_column() {
    let text = "listeners:\n  - listen: 127.0.0.1:8000\n    header_timeout: 10 seconds\n";
    assert_eq!(
        only_error(text),
        ":3:21: listeners[0].header_timeout: expected a duration like 250ms or 10s, got \"10 seconds\""
    );
}

#[test]
fn bare_number_duration_asks_for_a_unit() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\ndefaults:\n  timeout: 5\n";
    assert_eq!(
        only_error(text),
        ":3:12: defaults.timeout: expected a duration like 250ms or 10s, got \"5\" (add a unit)"
    );
}

#[test]
fn wrong_type_is_reported_at_its_line_and_column() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\nupstreams:\n  app:\n    url: http://a:1\n    max_idle_per_host: lots\n";
    let error = only_error(text);
    assert!(
        error.starts_with(":5:24: upstreams.app.max_idle_per_host: invalid type: string \"lots\""),
        "{error}"
    );
}

#[test]
fn unknown_enum_value_lists_the_choices() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\naccess_log: { format: xml }\n";
    let error = only_error(text);
    assert!(error.contains(":2:23: access_log.format: unknown variant `xml`, expected one of `text`, `json`, `off`"), "{error}");
}

#[test]
fn missing_required_key_is_reported_at_its_block() {
    let error = only_error(
        "listeners: [{ listen: 127.0.0.1:8000 }]\nupstreams:\n  app: { protocol: http2 }\n",
    );
    assert!(
        error.starts_with(":3:8: upstreams.app: missing field `url`"),
        "{error}"
    );
}

#[test]
fn yaml_syntax_error_is_reported_at_its_line_and_column() {
    let error = only_error("listeners:\n  - listen: 127.0.0.1:8000\n   name: main\n");
    assert_eq!(
        error,
        ":3:4: did not find expected '-' indicator, while parsing a block collection at line 2 column 3"
    );
}

#[test]
fn duplicate_upstream_is_a_syntax_error() {
    let text = "listeners: [{ listen: 127.0.0.1:8000 }]\nupstreams:\n  app: { url: http://a:1 }\n  app: { url: http://b:1 }\n";
    assert!(only_error(text).contains("upstreams: duplicate key `app`"));
}

#[test]
fn empty_file_needs_a_listener() {
    assert_eq!(
        only_error(""),
        ": listeners: at least one listener is needed"
    );
    assert_eq!(
        only_error("listeners: []\n"),
        ": listeners: at least one listener is needed"
    );
}

#[test]
fn invalid_error_displays_one_diagnostic_per_line_with_the_file() {
    let err = parse(
        Path::new("cfg/x.yaml"),
        "listeners: [{ listen: nope }, { listen: 1.2.3.4 }]\n",
    )
    .unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert_eq!(
        lines[0],
        "cfg/x.yaml: listeners[0].listen: expected an IP address and port like 127.0.0.1:8000, got \"nope\""
    );
    assert!(lines[1].starts_with("cfg/x.yaml: listeners[1].listen: "));
}
