//! Semantic checks: cross-references, ranges, normalisation and defaults.

use std::time::Duration;

use http::{HeaderValue, Method};

use super::*;

const LISTENER: &str = "listeners: [{ listen: 127.0.0.1:8000 }]\n";

fn with_listener(rest: &str) -> String {
    format!("{LISTENER}{rest}")
}

#[test]
fn several_semantic_errors_are_reported_in_one_pass() {
    let text = r#"
listeners:
  - { name: a, listen: 127.0.0.1:8000 }
  - { name: a, listen: 127.0.0.1:8000 }
upstreams:
  app: { url: http://127.0.0.1:8080 }
routes:
  - { name: one, upstream: app }
  - { name: two, respond: { status: 700 } }
  - { name: orders-write, upstream: ap }
  - { name: one, upstream: app, match: { path_prefix: orders } }
"#;
    let errors = errors(text);
    let expected = [
        ": listeners[1] (a).name: duplicate listener name \"a\" (also listeners[0] (a))",
        ": routes[1] (two).respond.status: must be between 200 and 599, got 700",
        ": routes[2] (orders-write).upstream: no upstream named \"ap\"; known: app",
        ": routes[3] (one).name: duplicate route name \"one\" (also routes[0] (one))",
        ": routes[3] (one).match.path_prefix: must start with /, got \"orders\"",
        ": listeners[1] (a).listen: address 127.0.0.1:8000 is already used by listeners[0] (a).listen",
    ];
    assert_eq!(errors, expected);
}

#[test]
fn unknown_upstream_lists_every_known_name_in_file_order() {
    let text = with_listener("upstreams:\n  zeta: { url: http://z:1 }\n  alpha: { url: http://a:1 }\nroutes: [{ upstream: beta }]\n");
    assert_eq!(
        only_error(&text),
        ": routes[0].upstream: no upstream named \"beta\"; known: zeta, alpha"
    );
}

#[test]
fn upstreams_keep_file_order_so_routes_index_the_right_one() {
    let text = with_listener("upstreams:\n  zeta: { url: http://z:1 }\n  alpha: { url: http://a:1 }\nroutes: [{ upstream: alpha }]\n");
    let c = parse_ok(&text);
    assert_eq!(c.upstreams[1].name, "alpha");
    assert!(matches!(c.routes[0].action, Action::Upstream(1)));
}

#[test]
fn route_needs_exactly_one_of_upstream_and_respond() {
    let text = with_listener("upstreams: { app: { url: http://a:1 } }\nroutes:\n  - { name: x }\n  - { name: y, upstream: app, respond: {} }\n");
    assert_eq!(
        errors(&text),
        [
            ": routes[0] (x): needs `upstream` (or `respond` to answer it itself)",
            ": routes[1] (y): set either `upstream` or `respond`, not both",
        ]
    );
}

#[test]
fn host_is_lower_cased_and_wildcards_become_suffixes() {
    let text = with_listener(
        "routes:\n  - { respond: {}, match: { host: \"*.Example.COM\" } }\n  - { respond: {}, match: { host: API.example.com } }\n",
    );
    let c = parse_ok(&text);
    assert_eq!(
        c.routes[0].matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    assert_eq!(
        c.routes[1].matcher.host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
}

#[test]
fn malformed_hosts_are_refused() {
    for host in [
        "example.com:8080",
        "*",
        "a.*.com",
        "*.",
        "exa mple.com",
        "a..b",
    ] {
        let text = with_listener(&format!(
            "routes: [{{ respond: {{}}, match: {{ host: \"{host}\" }} }}]\n"
        ));
        assert!(
            only_error(&text).starts_with(": routes[0].match.host: expected a host name"),
            "{host}"
        );
    }
}

#[test]
fn path_prefix_drops_its_trailing_slash_except_for_the_root() {
    let text = with_listener(
        "routes:\n  - { respond: {}, match: { path_prefix: /orders/ } }\n  - { respond: {}, match: { path_prefix: / } }\n  - { respond: {}, match: { path_exact: /a/ } }\n",
    );
    let c = parse_ok(&text);
    assert_eq!(
        c.routes[0].matcher.path,
        Some(PathMatch::Prefix("/orders".into()))
    );
    assert_eq!(
        c.routes[1].matcher.path,
        Some(PathMatch::Prefix("/".into()))
    );
    assert_eq!(
        c.routes[2].matcher.path,
        Some(PathMatch::Exact("/a/".into()))
    );
}

#[test]
fn path_prefix_and_path_exact_together_are_refused() {
    let text =
        with_listener("routes: [{ respond: {}, match: { path_prefix: /a, path_exact: /a } }]\n");
    assert_eq!(
        only_error(&text),
        ": routes[0].match: set either `path_prefix` or `path_exact`, not both"
    );
}

#[test]
fn methods_are_upper_cased_and_headers_star_means_present() {
    let text = with_listener(
        "routes:\n  - respond: {}\n    match: { methods: [get, Post, GET], headers: { X-Tenant: acme, x-debug: \"*\", x-version: 2 } }\n",
    );
    let m = &parse_ok(&text).routes[0].matcher;
    assert_eq!(m.methods, [Method::GET, Method::POST]);
    let headers: Vec<(&str, &HeaderMatch)> =
        m.headers.iter().map(|(n, v)| (n.as_str(), v)).collect();
    assert_eq!(
        headers,
        [
            (
                "x-tenant",
                &HeaderMatch::Exact(HeaderValue::from_static("acme"))
            ),
            ("x-debug", &HeaderMatch::Present),
            (
                "x-version",
                &HeaderMatch::Exact(HeaderValue::from_static("2"))
            ),
        ]
    );
}

#[test]
fn invalid_methods_and_header_names_are_refused() {
    let text = with_listener(
        "routes: [{ respond: {}, match: { methods: [\"GE T\"], headers: { \"bad name\": x } } }]\n",
    );
    assert_eq!(
        errors(&text),
        [
            ": routes[0].match.methods[0]: \"GE T\" is not an HTTP method",
            ": routes[0].match.headers.bad name: \"bad name\" is not a valid header name",
        ]
    );
}

#[test]
fn respond_headers_are_checked_and_framing_headers_refused() {
    let text = with_listener("routes: [{ respond: { status: 404, headers: { content-type: text/plain, content-length: \"3\" } } }]\n");
    assert_eq!(
        only_error(&text),
        ": routes[0].respond.headers.content-length: is set by the proxy from the body; leave it out"
    );
}

#[test]
fn routes_inherit_timeouts_from_defaults_unless_they_set_their_own() {
    let text = with_listener(
        "defaults: { timeout: 1s, idle_timeout: 20s }\nroutes:\n  - { respond: {} }\n  - { respond: {}, timeout: 250ms }\n",
    );
    let c = parse_ok(&text);
    assert_eq!(c.routes[0].timeout, Some(Duration::from_secs(1)));
    assert_eq!(c.routes[0].idle_timeout, Some(Duration::from_secs(20)));
    assert_eq!(c.routes[1].timeout, Some(Duration::from_millis(250)));
    assert_eq!(c.routes[1].idle_timeout, Some(Duration::from_secs(20)));
}

#[test]
fn built_in_defaults_fill_what_the_file_leaves_out() {
    let c = parse_ok(&with_listener(
        "upstreams: { app: { url: http://app } }\nroutes: [{ respond: {} }]\n",
    ));
    assert_eq!(c.admin.listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.listeners[0].name, "listener-0");
    assert_eq!(c.listeners[0].header_timeout, Duration::from_secs(10));
    assert_eq!(c.listeners[0].body_timeout, Duration::from_secs(30));
    let app = &c.upstreams[0];
    assert_eq!(
        (app.url.to_string().as_str(), app.protocol),
        ("http://app:80/", Protocol::Http1)
    );
    assert_eq!(
        (app.connect_timeout, app.max_idle_per_host),
        (Duration::from_secs(1), 64)
    );
    assert_eq!(c.routes[0].name, "route-0");
    assert_eq!(c.routes[0].timeout, None);
    assert_eq!(
        c.shutdown,
        Shutdown {
            drain_delay: Duration::ZERO,
            grace: Duration::from_secs(30)
        }
    );
    assert_eq!(
        c.limits,
        Limits {
            max_header_bytes: 65536,
            max_headers: 100
        }
    );
    assert_eq!(c.access_log, AccessLogFormat::Text);
}

#[test]
fn upstream_urls_must_be_bare_http_origins() {
    let text = with_listener(
        "upstreams:\n  a: { url: http://h:1/api }\n  b: { url: \"http://h:1/?x=1\" }\n  c: { url: ftp://h:1 }\n  d: { url: \"http://u:p@h:1\" }\n  e: { url: /just/a/path }\n",
    );
    assert_eq!(
        errors(&text),
        [
            ": upstreams.a.url: must not have a path (requests keep their own), got \"/api\"",
            ": upstreams.b.url: must not have a query, got \"http://h:1/?x=1\"",
            ": upstreams.c.url: must start with http:// or https://, got \"ftp://h:1\"",
            ": upstreams.d.url: must not carry credentials",
            ": upstreams.e.url: must start with http:// or https://, got \"/just/a/path\"",
        ]
    );
}

#[test]
fn zero_timeouts_and_tiny_limits_are_refused() {
    let text = with_listener(
        "defaults: { timeout: 0s }\nlimits: { max_header_bytes: 10, max_headers: 0 }\n",
    );
    assert_eq!(
        errors(&text),
        [
            ": defaults.timeout: must be more than 0s",
            ": limits.max_header_bytes: must be between 8192 (8KiB) and 16777216 (16MiB)",
            ": limits.max_headers: must be between 1 and 10000",
        ]
    );
}

#[test]
fn port_zero_listeners_never_clash() {
    let c = parse_ok("listeners: [{ listen: 127.0.0.1:0 }, { listen: 127.0.0.1:0 }]\nadmin: { listen: 127.0.0.1:0 }\n");
    assert_eq!(c.listeners.len(), 2);
}

#[test]
fn admin_and_listener_on_one_address_clash() {
    let text =
        "admin: { listen: 127.0.0.1:8000 }\nlisteners: [{ name: main, listen: 127.0.0.1:8000 }]\n";
    assert_eq!(
        only_error(text),
        ": listeners[0] (main).listen: address 127.0.0.1:8000 is already used by admin.listen"
    );
}
