//! The lease gate's decision for one request (LEASES.md §5), as a pure
//! function of the published view and the stamping instant.
//!
//! The tower layer around it does the I/O — loading the view, reading the
//! clock once, forwarding, redirecting, waiting — and this module decides.
//! Keeping the decision pure lets every boundary (the deadline itself, a
//! second hop, a holder without an address) be tested without sockets.

use http::{HeaderMap, Uri};
use tokio::time::Instant;

use super::view::LeaseView;
use crate::config::OnFollower;

/// The fencing token stamped on requests the holder sends to its service.
pub const TOKEN_HEADER: &str = "x-lease-token";
/// The lease's name, stamped next to the token.
pub const NAME_HEADER: &str = "x-lease-name";
/// Set by a follower that forwards a request (its node id as the value), so
/// the receiver never forwards it again.
pub const FORWARDED_HEADER: &str = "x-breakwater-forwarded";

/// What to do with one request on a lease-gated route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This node holds the lease: send it to the local service with
    /// `x-lease-token: token` and `x-lease-name`.
    Stamp { token: u64 },
    /// Stream it to the holder's sidecar (`forward_url`, path and query kept).
    Forward { to: Uri },
    /// Answer 307 to the holder's `public_url` (path and query kept).
    Redirect { to: Uri },
    /// Answer 503 `lease-unavailable` at once (`on_follower: reject`).
    Reject,
    /// No usable holder: no holder known, a forwarded request reached a
    /// non-holder, this node's own grant lapsed, or the holder has no address
    /// for this mode. Wait up to `wait` for a change, then 503.
    Unavailable,
}

/// Decides what to do with a request at `now`, the stamping instant.
/// `forwarded` says whether it carries [`FORWARDED_HEADER`].
pub fn decide(
    view: &LeaseView,
    now: Instant,
    forwarded: bool,
    on_follower: OnFollower,
) -> Decision {
    if let (Some(token), true) = (view.token, view.may_stamp(now)) {
        return Decision::Stamp { token };
    }
    // A deadline, even a passed one, means this node is the holder: sending
    // the request on would only bring it back here.
    if forwarded || view.valid_until.is_some() {
        return Decision::Unavailable;
    }
    let Some(holder) = &view.holder else {
        return Decision::Unavailable;
    };
    match on_follower {
        OnFollower::Forward => holder
            .forward_url
            .clone()
            .map_or(Decision::Unavailable, |to| Decision::Forward { to }),
        OnFollower::Redirect => holder
            .public_url
            .clone()
            .map_or(Decision::Unavailable, |to| Decision::Redirect { to }),
        OnFollower::Reject => Decision::Reject,
    }
}

/// Removes every client-sent `x-lease-*` header, so only the holder's gate
/// ever sets a token the service sees. Allocates only when one is present.
pub fn strip_lease_headers(headers: &mut HeaderMap) {
    let is_lease = |name: &http::HeaderName| name.as_str().starts_with("x-lease-");
    if !headers.keys().any(is_lease) {
        return;
    }
    let names: Vec<http::HeaderName> = headers.keys().filter(|n| is_lease(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// The URL a forwarded or redirected request goes to: scheme and authority
/// of `base` (a holder's `forward_url` or `public_url`, which carry no path),
/// path and query of the request. `None` if `base` is not absolute.
pub fn target(base: &Uri, request: &Uri) -> Option<Uri> {
    let path_and_query = request.path_and_query().map_or("/", |pq| pq.as_str());
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path_and_query)
        .build()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;
    use crate::lease::view::Holder;

    const MODES: [OnFollower; 3] = [
        OnFollower::Forward,
        OnFollower::Redirect,
        OnFollower::Reject,
    ];

    fn other() -> Holder {
        Holder {
            node_id: "orders-1".into(),
            forward_url: Some("http://10.0.0.6:8000/".parse().unwrap()),
            public_url: Some("https://orders-1.orders:8443/".parse().unwrap()),
        }
    }

    fn me() -> Holder {
        Holder {
            node_id: "orders-0".into(),
            forward_url: Some("http://10.0.0.5:8000/".parse().unwrap()),
            public_url: Some("https://orders-0.orders:8443/".parse().unwrap()),
        }
    }

    fn holding(until: Instant) -> LeaseView {
        LeaseView::holding(me(), 7, until)
    }

    #[test]
    fn holder_stamps_before_the_deadline() {
        let now = Instant::now();
        let view = holding(now + Duration::from_millis(1));
        for mode in MODES {
            for forwarded in [false, true] {
                assert_eq!(
                    decide(&view, now, forwarded, mode),
                    Decision::Stamp { token: 7 }
                );
            }
        }
    }

    #[test]
    fn holder_stamps_one_nanosecond_before_the_deadline() {
        let now = Instant::now();
        let view = holding(now + Duration::from_nanos(1));
        assert_eq!(
            decide(&view, now, false, OnFollower::Forward),
            Decision::Stamp { token: 7 }
        );
    }

    #[test]
    fn the_deadline_itself_is_too_late() {
        let now = Instant::now();
        for mode in MODES {
            assert_eq!(
                decide(&holding(now), now, false, mode),
                Decision::Unavailable
            );
        }
    }

    #[test]
    fn a_lapsed_holder_never_forwards_to_itself() {
        let now = Instant::now();
        let view = holding(now - Duration::from_secs(1));
        for mode in MODES {
            assert_eq!(decide(&view, now, false, mode), Decision::Unavailable);
        }
    }

    #[test]
    fn a_deadline_without_a_token_does_not_stamp() {
        let now = Instant::now();
        let mut view = holding(now + Duration::from_secs(1));
        view.token = None;
        assert_eq!(
            decide(&view, now, false, OnFollower::Forward),
            Decision::Unavailable
        );
    }

    #[test]
    fn follower_forwards_to_the_holders_sidecar() {
        let view = LeaseView::following(other(), Some(8));
        assert_eq!(
            decide(&view, Instant::now(), false, OnFollower::Forward),
            Decision::Forward {
                to: "http://10.0.0.6:8000/".parse().unwrap()
            }
        );
    }

    #[test]
    fn follower_redirects_to_the_holders_public_url() {
        let view = LeaseView::following(other(), None);
        assert_eq!(
            decide(&view, Instant::now(), false, OnFollower::Redirect),
            Decision::Redirect {
                to: "https://orders-1.orders:8443/".parse().unwrap()
            }
        );
    }

    #[test]
    fn follower_rejects_when_told_to() {
        let view = LeaseView::following(other(), Some(8));
        assert_eq!(
            decide(&view, Instant::now(), false, OnFollower::Reject),
            Decision::Reject
        );
    }

    #[test]
    fn a_forwarded_request_never_takes_a_second_hop() {
        let view = LeaseView::following(other(), Some(8));
        for mode in MODES {
            assert_eq!(
                decide(&view, Instant::now(), true, mode),
                Decision::Unavailable
            );
        }
    }

    #[test]
    fn no_known_holder_is_unavailable_in_every_mode() {
        for mode in MODES {
            for forwarded in [false, true] {
                assert_eq!(
                    decide(&LeaseView::unknown(), Instant::now(), forwarded, mode),
                    Decision::Unavailable
                );
            }
        }
    }

    #[test]
    fn a_holder_without_the_needed_address_is_unavailable() {
        let now = Instant::now();
        let mut holder = other();
        holder.forward_url = None;
        let view = LeaseView::following(holder, Some(8));
        assert_eq!(
            decide(&view, now, false, OnFollower::Forward),
            Decision::Unavailable
        );
        assert!(matches!(
            decide(&view, now, false, OnFollower::Redirect),
            Decision::Redirect { .. }
        ));
        let mut holder = other();
        holder.public_url = None;
        let view = LeaseView::following(holder, Some(8));
        assert_eq!(
            decide(&view, now, false, OnFollower::Redirect),
            Decision::Unavailable
        );
        assert!(matches!(
            decide(&view, now, false, OnFollower::Forward),
            Decision::Forward { .. }
        ));
    }

    #[test]
    fn strips_every_client_sent_lease_header_and_keeps_the_rest() {
        let mut headers = HeaderMap::new();
        headers.insert("x-lease-token", HeaderValue::from_static("999"));
        headers.append("x-lease-token", HeaderValue::from_static("1000"));
        headers.insert(
            http::HeaderName::from_bytes(b"X-Lease-Name").unwrap(),
            HeaderValue::from_static("orders"),
        );
        headers.insert("x-lease-anything", HeaderValue::from_static("1"));
        headers.insert("x-leases", HeaderValue::from_static("kept"));
        headers.insert("x-lease", HeaderValue::from_static("kept"));
        headers.insert(FORWARDED_HEADER, HeaderValue::from_static("orders-1"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        strip_lease_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-type",
                "x-breakwater-forwarded",
                "x-lease",
                "x-leases"
            ]
        );
    }

    #[test]
    fn stripping_headers_without_lease_headers_changes_nothing() {
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("*/*"));
        let before = headers.clone();
        strip_lease_headers(&mut headers);
        assert_eq!(headers, before);
    }

    #[test]
    fn target_keeps_the_requests_path_and_query() {
        let base: Uri = "http://10.0.0.6:8000/".parse().unwrap();
        let request: Uri = "/orders/7?dry=1".parse().unwrap();
        assert_eq!(
            target(&base, &request).unwrap(),
            "http://10.0.0.6:8000/orders/7?dry=1"
        );
        let absolute: Uri = "http://client.example/a?b".parse().unwrap();
        assert_eq!(
            target(&base, &absolute).unwrap(),
            "http://10.0.0.6:8000/a?b"
        );
    }

    #[test]
    fn target_of_a_request_without_a_path_is_the_root() {
        let base: Uri = "https://orders-1.orders:8443/".parse().unwrap();
        let request: Uri = "orders-1.orders:8443".parse().unwrap();
        assert_eq!(
            target(&base, &request).unwrap(),
            "https://orders-1.orders:8443/"
        );
    }

    #[test]
    fn target_needs_an_absolute_base() {
        let base: Uri = "/relative".parse().unwrap();
        assert_eq!(target(&base, &"/x".parse().unwrap()), None);
    }
}
