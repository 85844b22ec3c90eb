//! What a node knows about one lease, and the one place that publishes it.
//!
//! The backend task is the only writer. Readers are the request path (a
//! lock-free `ArcSwap` load per request), waiters (a `watch` channel, for
//! requests that wait for a holder) and the admin API. The publisher also
//! keeps the lease's gauges and counts role transitions, so the metrics can
//! never disagree with what the gate sees.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::Uri;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::LeaseHandles;

/// The node that holds a lease, and where to send its traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holder's `cluster.node_id`.
    pub node_id: String,
    /// The holder's sidecar, for `on_follower: forward`.
    pub forward_url: Option<Uri>,
    /// The holder's public address, for `on_follower: redirect`.
    pub public_url: Option<Uri>,
}

/// This node's role in a lease, as far as it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// This node may stamp requests.
    Holder,
    /// Another node holds the lease.
    Follower,
    /// No holder known.
    Unknown,
}

impl Role {
    /// Every role, in metric-label order.
    pub const ALL: [Role; 3] = [Role::Holder, Role::Follower, Role::Unknown];

    /// The metric label and JSON name: `holder`, `follower`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Holder => "holder",
            Role::Follower => "follower",
            Role::Unknown => "unknown",
        }
    }
}

/// The last change of role: to what, and when by the wall clock (for people
/// reading `/leases`; never used for a decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The role changed to.
    pub to: Role,
    /// When, by this node's wall clock.
    pub at: SystemTime,
}

/// One immutable snapshot of a lease as this node knows it.
///
/// Invariants the backend keeps: `valid_until` is `Some` only while this node
/// holds, and then `holder` is this node and `token` is `Some`. A node that
/// can no longer stamp publishes `valid_until: None` and names another holder
/// if it knows one; the [`Publisher`] drops a holder naming this node without
/// `valid_until`, or followers' requests would be forwarded to this node
/// itself.
#[derive(Clone, Debug)]
pub struct LeaseView {
    /// Who holds, as far as this node knows (itself when holding).
    pub holder: Option<Holder>,
    /// The holder's tenure token, when known.
    pub token: Option<u64>,
    /// Until when this node may stamp; `Some` only while it holds.
    pub valid_until: Option<Instant>,
    /// The last role change. Owned by the [`Publisher`]: whatever a backend
    /// puts here is replaced when published.
    pub transition: Transition,
}

impl LeaseView {
    /// No holder known: the state at start and after stepping down with no
    /// successor in sight.
    pub fn unknown() -> Self {
        Self {
            holder: None,
            token: None,
            valid_until: None,
            transition: Transition {
                to: Role::Unknown,
                at: SystemTime::now(),
            },
        }
    }

    /// This node holds tenure `token` and may stamp until `valid_until`.
    pub fn holding(me: Holder, token: u64, valid_until: Instant) -> Self {
        Self {
            holder: Some(me),
            token: Some(token),
            valid_until: Some(valid_until),
            ..Self::unknown()
        }
    }

    /// Another node holds the lease, with tenure `token` when known.
    pub fn following(holder: Holder, token: Option<u64>) -> Self {
        Self {
            holder: Some(holder),
            token,
            ..Self::unknown()
        }
    }

    /// The role this view gives the node.
    pub fn role(&self) -> Role {
        match (&self.valid_until, &self.holder) {
            (Some(_), _) => Role::Holder,
            (None, Some(_)) => Role::Follower,
            (None, None) => Role::Unknown,
        }
    }

    /// Whether this node may stamp a request at `now`. The deadline itself
    /// is already too late: a grant is usable strictly before it.
    pub fn may_stamp(&self, now: Instant) -> bool {
        self.token.is_some() && self.valid_until.is_some_and(|until| until > now)
    }

    /// How much longer this node may stamp, zero when it may not.
    pub fn valid_for(&self, now: Instant) -> Duration {
        match (self.token, self.valid_until) {
            (Some(_), Some(until)) => until.saturating_duration_since(now),
            _ => Duration::ZERO,
        }
    }
}

/// The single writer of one lease's view: stores it for lock-free reads,
/// wakes waiters, and keeps the lease's gauges and transition counter.
pub struct Publisher {
    me: String,
    view: Arc<ArcSwap<LeaseView>>,
    changes: watch::Sender<Arc<LeaseView>>,
    metrics: LeaseHandles,
}

impl Publisher {
    /// Starts with [`LeaseView::unknown`]. Returns the publisher, the shared
    /// view for readers and a receiver for waiters. `me` is this node's id.
    pub fn new(
        me: &str,
        metrics: LeaseHandles,
    ) -> (
        Self,
        Arc<ArcSwap<LeaseView>>,
        watch::Receiver<Arc<LeaseView>>,
    ) {
        let initial = Arc::new(LeaseView::unknown());
        let view = Arc::new(ArcSwap::new(initial.clone()));
        let (changes, receiver) = watch::channel(initial);
        metrics.is_holder.set(0);
        metrics.token.set(0);
        let publisher = Self {
            me: me.to_owned(),
            view: view.clone(),
            changes,
            metrics,
        };
        (publisher, view, receiver)
    }

    /// Makes `view` the current one. The transition is kept from the
    /// previous view unless the role changed, in which case it is stamped
    /// now and counted.
    pub fn publish(&self, mut view: LeaseView) {
        if view.valid_until.is_none() && view.holder.as_ref().is_some_and(|h| h.node_id == self.me)
        {
            view.holder = None;
            view.token = None;
        }
        let previous = self.view.load();
        #[cfg(feature = "test-hooks")]
        let was_holding = (previous.transition.to == Role::Holder)
            .then_some(previous.token)
            .flatten();
        let role = view.role();
        view.transition = if role == previous.transition.to {
            previous.transition
        } else {
            self.metrics.transition(role);
            Transition {
                to: role,
                at: SystemTime::now(),
            }
        };
        drop(previous);
        self.metrics.is_holder.set(i64::from(role == Role::Holder));
        let token = view
            .token
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        self.metrics.token.set(token);
        #[cfg(feature = "test-hooks")]
        if let (Some(token), None) = (was_holding, view.valid_until) {
            // A step-down ends the interval before its deadline.
            tracing::info!(
                target: "breakwater::lease_interval",
                me = %self.me,
                token,
                now_ns = super::hooks::monotonic_ns(),
                "stepped down"
            );
        }
        #[cfg(feature = "test-hooks")]
        if let (Some(token), Some(until)) = (view.token, view.valid_until) {
            // The soak tests rebuild each node's holding intervals from these.
            tracing::info!(
                target: "breakwater::lease_interval",
                me = %self.me,
                token,
                now_ns = super::hooks::monotonic_ns(),
                until_ns = super::hooks::instant_ns(until),
                "holding"
            );
        }
        let view = Arc::new(view);
        // The watch first, then the ArcSwap: a waiter that loaded the new
        // view from the ArcSwap then finds it in the watch too, and one that
        // loaded the old view sees the change at once (see
        // `Lease::wait_for_change_since`).
        self.changes.send_replace(view.clone());
        self.view.store(view);
    }

    /// The view last published.
    pub fn current(&self) -> Arc<LeaseView> {
        self.view.load_full()
    }
}

/// `at` as RFC 3339 UTC with milliseconds (`2024-02-29T12:34:56.789Z`);
/// instants before 1970 print as the epoch.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Milliseconds since the Unix epoch, zero before it.
pub fn unix_ms(at: SystemTime) -> u64 {
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::lease::metrics::LeaseMetrics;
    use crate::metrics::Metrics;

    fn node(id: &str) -> Holder {
        Holder {
            node_id: id.into(),
            forward_url: Some("http://10.0.0.9:8000/".parse().unwrap()),
            public_url: None,
        }
    }

    fn publisher() -> (Publisher, Arc<ArcSwap<LeaseView>>, Metrics) {
        let metrics = Metrics::new();
        let handles = LeaseMetrics::new(&metrics)
            .unwrap()
            .handles("orders", "local");
        let (p, view, _) = Publisher::new("me", handles);
        (p, view, metrics)
    }

    fn sample(metrics: &Metrics, line_start: &str) -> Option<f64> {
        let text = String::from_utf8(metrics.render()).unwrap();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn role_follows_validity_then_holder() {
        let now = Instant::now();
        assert_eq!(LeaseView::unknown().role(), Role::Unknown);
        assert_eq!(
            LeaseView::following(node("b"), Some(3)).role(),
            Role::Follower
        );
        assert_eq!(LeaseView::holding(node("me"), 3, now).role(), Role::Holder);
    }

    #[test]
    fn may_stamp_strictly_before_the_deadline() {
        let now = Instant::now();
        let until = now + Duration::from_millis(10);
        let view = LeaseView::holding(node("me"), 1, until);
        assert!(view.may_stamp(now));
        assert!(view.may_stamp(until - Duration::from_nanos(1)));
        assert!(!view.may_stamp(until));
        assert!(!view.may_stamp(until + Duration::from_nanos(1)));
        assert_eq!(view.valid_for(now), Duration::from_millis(10));
        assert_eq!(view.valid_for(until), Duration::ZERO);
        assert_eq!(
            view.valid_for(until + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_deadline_without_a_token_never_stamps() {
        let now = Instant::now();
        let mut view = LeaseView::holding(node("me"), 1, now + Duration::from_secs(1));
        view.token = None;
        assert!(!view.may_stamp(now));
        assert_eq!(view.valid_for(now), Duration::ZERO);
    }

    #[test]
    fn publish_counts_a_transition_only_when_the_role_changes() {
        let (p, view, metrics) = publisher();
        let until = Instant::now() + Duration::from_secs(10);
        let holder = r#"breakwater_lease_transitions_total{lease="orders",to="holder"}"#;
        let follower = r#"breakwater_lease_transitions_total{lease="orders",to="follower"}"#;
        p.publish(LeaseView::holding(node("me"), 4, until));
        let first = view.load().transition;
        assert_eq!(first.to, Role::Holder);
        // A renewal: same role, later deadline; the transition is kept.
        p.publish(LeaseView::holding(
            node("me"),
            4,
            until + Duration::from_secs(3),
        ));
        assert_eq!(view.load().transition, first);
        assert_eq!(sample(&metrics, holder), Some(1.0));
        p.publish(LeaseView::following(node("b"), Some(5)));
        p.publish(LeaseView::following(node("c"), Some(6)));
        assert_eq!(sample(&metrics, follower), Some(1.0));
        assert_eq!(sample(&metrics, holder), Some(1.0));
        assert_eq!(view.load().transition.to, Role::Follower);
    }

    #[test]
    fn publish_sets_the_holder_and_token_gauges() {
        let (p, _view, metrics) = publisher();
        let is_holder = r#"breakwater_lease_is_holder{lease="orders"}"#;
        let token = r#"breakwater_lease_token{lease="orders"}"#;
        assert_eq!(sample(&metrics, is_holder), Some(0.0));
        p.publish(LeaseView::holding(node("me"), 42, Instant::now()));
        assert_eq!(sample(&metrics, is_holder), Some(1.0));
        assert_eq!(sample(&metrics, token), Some(42.0));
        p.publish(LeaseView::following(node("b"), Some(43)));
        assert_eq!(sample(&metrics, is_holder), Some(0.0));
        assert_eq!(sample(&metrics, token), Some(43.0));
        p.publish(LeaseView::unknown());
        assert_eq!(sample(&metrics, token), Some(0.0));
    }

    #[test]
    fn publish_drops_this_node_as_holder_once_it_may_not_stamp() {
        let (p, view, _metrics) = publisher();
        p.publish(LeaseView::following(node("me"), Some(9)));
        let published = view.load();
        assert_eq!(published.holder, None);
        assert_eq!(published.token, None);
        assert_eq!(published.role(), Role::Unknown);
    }

    #[test]
    fn publish_wakes_waiters_with_the_same_view_readers_load() {
        let metrics = Metrics::new();
        let handles = LeaseMetrics::new(&metrics)
            .unwrap()
            .handles("orders", "local");
        let (p, view, mut rx) = Publisher::new("me", handles);
        p.publish(LeaseView::following(node("b"), Some(1)));
        assert!(rx.has_changed().unwrap());
        let seen = rx.borrow_and_update().clone();
        assert!(Arc::ptr_eq(&seen, &view.load_full()));
        assert!(Arc::ptr_eq(&seen, &p.current()));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_709_210_096, 789)), "2024-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(at(1_735_689_599, 999)), "2024-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn unix_ms_counts_from_the_epoch() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
