//! The data path: what one configuration generation compiles to, and the
//! modules that serve requests with it.

pub mod body;
pub mod error;
pub mod forward;
pub mod framing;
pub mod handler;
pub mod lease_gate;
pub mod router;
pub mod server;
pub mod stack;
pub mod upgrade;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, AccessLogFormat, Config, Match, Respond};
use crate::lease::Leases;
use crate::metrics::{Metrics, ResilienceMetrics, RouteMetrics, NO_ROUTE};
use crate::resilience::breaker::BreakerCell;
use crate::resilience::limit::Limiter;
use crate::BoxError;
use upstream::Upstream;

/// Everything the request path reads, built once per configuration load and
/// swapped whole on reload (readers never lock).
pub struct Generation {
    pub config: Arc<Config>,
    /// Route matchers, contiguous and in order; index `i` is `routes[i]`.
    pub matchers: Vec<Match>,
    pub routes: Vec<Route>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub no_route: Arc<RouteMetrics>,
    pub access_log: AccessLogFormat,
    /// The running leases (they outlive generations with unchanged lease
    /// config).
    pub leases: Arc<Leases>,
}

/// One compiled route.
pub struct Route {
    pub name: Arc<str>,
    pub target: Target,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub metrics: Arc<RouteMetrics>,
    /// Kept for the admin API and for reloads, which keep the state of
    /// routes whose limit or breaker config is unchanged.
    pub limiter: Option<Arc<Limiter>>,
    pub breaker: Option<Arc<BreakerCell>>,
    /// The upstream an upstream route sends to.
    pub upstream: Option<Arc<Upstream>>,
    /// The lease gate of a single-writer route.
    pub lease: Option<Arc<lease_gate::LeaseRoute>>,
}

/// Where a route sends its requests.
pub enum Target {
    Upstream(stack::Stack),
    Respond(Respond),
}

impl Generation {
    /// Compiles a configuration. Plain-HTTP upstreams whose configuration is
    /// unchanged from `previous` keep their client, so reloads keep warm pools.
    pub fn build(
        config: Arc<Config>,
        metrics: &Metrics,
        previous: Option<&Generation>,
        leases: Arc<Leases>,
    ) -> Result<Self, BoxError> {
        let mut upstreams = HashMap::new();
        for up in &config.upstreams {
            // An unchanged upstream keeps its client and warm pool; an
            // `https://` one is rebuilt so a reload picks up rotated CA and
            // client-certificate files (in-flight requests finish on the old).
            let reused = previous
                .and_then(|p| p.upstreams.get(&up.name))
                .filter(|old| old.config == *up && old.scheme != http::uri::Scheme::HTTPS)
                .cloned();
            let built = match reused {
                Some(old) => old,
                None => Arc::new(Upstream::new(
                    up,
                    metrics.upstream_connect_errors(&up.name),
                )?),
            };
            upstreams.insert(up.name.clone(), built);
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let old = previous.and_then(|p| p.routes.iter().find(|o| *o.name == *r.name));
            let name: Arc<str> = r.name.as_str().into();
            let res_metrics = metrics.resilience(&r.name);
            // Only upstream routes have a stack; a `respond` route answers
            // itself and inherits none of the defaults' layers.
            let (target, upstream, limiter, breaker) = match &r.action {
                config::Action::Respond(respond) => {
                    (Target::Respond(respond.clone()), None, None, None)
                }
                config::Action::Upstream(i) => {
                    let (limiter, breaker) = layer_state(r, old, &name, &res_metrics);
                    let up = upstreams[&config.upstreams[*i].name].clone();
                    let stack = stack::build(
                        up.clone(),
                        limiter.clone(),
                        breaker.clone(),
                        r.timeout,
                        &res_metrics,
                    );
                    (Target::Upstream(stack), Some(up), limiter, breaker)
                }
            };
            let timeout = upstream.as_ref().and(r.timeout);
            let lease = match &r.lease {
                Some(name) => {
                    let lease = leases.get(name).ok_or_else(|| {
                        format!("routes ({}): lease {name} is not running", r.name)
                    })?;
                    Some(Arc::new(lease_gate::LeaseRoute::new(
                        lease.clone(),
                        leases.node_id(),
                    )))
                }
                None => None,
            };
            routes.push(Route {
                lease,
                name,
                target,
                timeout,
                idle_timeout: r.idle_timeout,
                metrics: Arc::new(metrics.route(&r.name)),
                limiter,
                breaker,
                upstream,
            });
        }
        Ok(Self {
            matchers: config.routes.iter().map(|r| r.matcher.clone()).collect(),
            routes,
            upstreams,
            no_route: Arc::new(metrics.route(NO_ROUTE)),
            access_log: config.access_log,
            config,
            leases,
        })
    }
}

/// The limiter and breaker of an upstream route: the previous generation's
/// when their config is unchanged (state survives a reload), else new ones.
fn layer_state(
    r: &config::Route,
    old: Option<&Route>,
    name: &Arc<str>,
    metrics: &ResilienceMetrics,
) -> (Option<Arc<Limiter>>, Option<Arc<BreakerCell>>) {
    let limiter = r
        .concurrency
        .map(|c| match old.and_then(|o| o.limiter.clone()) {
            Some(l) if l.config == c => l,
            _ => Limiter::new(c, metrics.clone()),
        });
    let breaker = r
        .breaker
        .as_ref()
        .map(|b| match old.and_then(|o| o.breaker.clone()) {
            Some(cell) if cell.config == *b => cell,
            _ => BreakerCell::new(name.clone(), b.clone(), metrics.clone()),
        });
    (limiter, breaker)
}
