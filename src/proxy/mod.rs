//! The data path: what one configuration generation compiles to, and the
//! modules that serve requests with it.

pub mod body;
pub mod error;
pub mod framing;
pub mod handler;
pub mod router;
pub mod server;
pub mod upgrade;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, AccessLogFormat, Config, Match, Respond};
use crate::metrics::{Metrics, RouteMetrics, NO_ROUTE};
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
}

/// One compiled route.
pub struct Route {
    pub name: Arc<str>,
    pub target: Target,
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub metrics: Arc<RouteMetrics>,
}

/// Where a route sends its requests.
pub enum Target {
    Upstream(Arc<Upstream>),
    Respond(Respond),
}

impl Generation {
    /// Compiles a configuration. Upstreams whose configuration is unchanged
    /// from `previous` keep their client, so reloads keep warm pools.
    pub fn build(
        config: Arc<Config>,
        metrics: &Metrics,
        previous: Option<&Generation>,
    ) -> Result<Self, BoxError> {
        let mut upstreams = HashMap::new();
        for up in &config.upstreams {
            let reused = previous
                .and_then(|p| p.upstreams.get(&up.name))
                .filter(|old| old.config == *up)
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
            let target = match &r.action {
                config::Action::Respond(respond) => Target::Respond(respond.clone()),
                config::Action::Upstream(i) => {
                    let name = &config.upstreams[*i].name;
                    Target::Upstream(upstreams[name].clone())
                }
            };
            routes.push(Route {
                name: r.name.as_str().into(),
                target,
                timeout: r.timeout,
                idle_timeout: r.idle_timeout,
                metrics: Arc::new(metrics.route(&r.name)),
            });
        }
        Ok(Self {
            matchers: config.routes.iter().map(|r| r.matcher.clone()).collect(),
            routes,
            upstreams,
            no_route: Arc::new(metrics.route(NO_ROUTE)),
            access_log: config.access_log,
            config,
        })
    }
}
