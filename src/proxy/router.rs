//! Route matching: the compiled routes of one configuration, tried in order;
//! the first match wins. Matching reads the request in place and allocates
//! nothing.

use http::{HeaderMap, Method};

use crate::config::{HeaderMatch, HostMatch, Match, PathMatch};

/// What the matcher needs from a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Host without port, as sent (any case).
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Returns the index of the first route whose matcher accepts the request.
pub fn first_match<'m, I>(matchers: I, req: &RequestView<'_>) -> Option<usize>
where
    I: IntoIterator<Item = &'m Match>,
{
    matchers.into_iter().position(|m| matches(m, req))
}

/// Whether one route's matcher accepts the request.
pub fn matches(m: &Match, req: &RequestView<'_>) -> bool {
    if let Some(h) = &m.host {
        match req.host {
            Some(host) if host_matches(h, host) => {}
            _ => return false,
        }
    }
    if let Some(p) = &m.path {
        if !path_matches(p, req.path) {
            return false;
        }
    }
    if !m.methods.is_empty() && !m.methods.iter().any(|x| x == req.method) {
        return false;
    }
    m.headers.iter().all(|(name, want)| match want {
        HeaderMatch::Present => req.headers.contains_key(name),
        HeaderMatch::Exact(v) => req.headers.get_all(name).iter().any(|got| got == v),
    })
}

fn host_matches(m: &HostMatch, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    match m {
        HostMatch::Exact(want) => host.eq_ignore_ascii_case(want),
        HostMatch::Suffix(suffix) => {
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(want) => path == want,
        PathMatch::Prefix(prefix) => {
            prefix == "/"
                || (path.starts_with(prefix.as_str())
                    && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
        }
    }
}

/// The host a request names, without its port: the absolute-form or HTTP/2
/// authority when present, else the `Host` header.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(host) = uri.host() {
        return Some(host);
    }
    let value = headers.get(http::header::HOST)?.to_str().ok()?;
    Some(strip_port(value))
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(i) => &authority[..i],
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn view<'a>(host: Option<&'a str>, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            host,
            path,
            method: &Method::GET,
            headers,
        }
    }

    fn prefix(p: &str) -> Match {
        Match {
            path: Some(PathMatch::Prefix(p.into())),
            ..Match::default()
        }
    }

    #[test]
    fn path_prefix_respects_segments() {
        let h = HeaderMap::new();
        let m = prefix("/orders");
        assert!(matches(&m, &view(None, "/orders", &h)));
        assert!(matches(&m, &view(None, "/orders/1", &h)));
        assert!(!matches(&m, &view(None, "/ordersx", &h)));
        assert!(!matches(&m, &view(None, "/order", &h)));
        assert!(matches(&prefix("/"), &view(None, "/anything", &h)));
    }

    #[test]
    fn path_exact_matches_only_itself() {
        let h = HeaderMap::new();
        let m = Match {
            path: Some(PathMatch::Exact("/hello".into())),
            ..Match::default()
        };
        assert!(matches(&m, &view(None, "/hello", &h)));
        assert!(!matches(&m, &view(None, "/hello/", &h)));
    }

    #[test]
    fn host_suffix_is_case_insensitive_and_needs_a_label() {
        let h = HeaderMap::new();
        let m = Match {
            host: Some(HostMatch::Suffix(".example.com".into())),
            ..Match::default()
        };
        assert!(matches(&m, &view(Some("API.Example.COM"), "/", &h)));
        assert!(matches(&m, &view(Some("a.b.example.com"), "/", &h)));
        assert!(!matches(&m, &view(Some("example.com"), "/", &h)));
        assert!(!matches(&m, &view(Some("badexample.com"), "/", &h)));
        assert!(!matches(&m, &view(None, "/", &h)));
    }

    #[test]
    fn host_exact_ignores_case_and_trailing_dot() {
        let h = HeaderMap::new();
        let m = Match {
            host: Some(HostMatch::Exact("api.local".into())),
            ..Match::default()
        };
        assert!(matches(&m, &view(Some("API.local."), "/", &h)));
        assert!(!matches(&m, &view(Some("api.localx"), "/", &h)));
    }

    #[test]
    fn headers_match_presence_and_value() {
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("acme"));
        let m = |want| Match {
            headers: vec![(http::HeaderName::from_static("x-tenant"), want)],
            ..Match::default()
        };
        assert!(matches(&m(HeaderMatch::Present), &view(None, "/", &h)));
        assert!(matches(
            &m(HeaderMatch::Exact(HeaderValue::from_static("acme"))),
            &view(None, "/", &h)
        ));
        assert!(!matches(
            &m(HeaderMatch::Exact(HeaderValue::from_static("other"))),
            &view(None, "/", &h)
        ));
        assert!(!matches(
            &m(HeaderMatch::Present),
            &view(None, "/", &HeaderMap::new())
        ));
    }

    #[test]
    fn methods_restrict_and_first_match_wins() {
        let h = HeaderMap::new();
        let post_only = Match {
            methods: vec![Method::POST],
            ..prefix("/")
        };
        let all = prefix("/");
        let routes = [post_only, all];
        let get = view(None, "/x", &h);
        assert_eq!(first_match(&routes, &get), Some(1));
        let post = RequestView {
            method: &Method::POST,
            ..get
        };
        assert_eq!(first_match(&routes, &post), Some(0));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
