//! WebSocket tunnels: an HTTP/1.1 `Upgrade: websocket` exchange that the
//! upstream accepts (101) becomes a byte pipe between client and upstream.

use std::sync::{Arc, Mutex};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use http::header::{CONNECTION, UPGRADE};

/// Whether a request asks for a WebSocket tunnel. `Upgrade: h2c` and any
/// other protocol are not tunnelled: their upgrade headers are stripped.
pub fn is_websocket<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_11 && asks_upgrade(req.headers(), "websocket")
}

/// A tunnel the upstream accepted, carried on the 101 response until the
/// handler hands it what must live as long as the tunnel does.
#[derive(Clone)]
pub struct PendingTunnel(Arc<Mutex<Option<(OnUpgrade, OnUpgrade)>>>);

impl PendingTunnel {
    pub fn new(client: OnUpgrade, upstream: OnUpgrade) -> Self {
        Self(Arc::new(Mutex::new(Some((client, upstream)))))
    }

    fn take(&self) -> Option<(OnUpgrade, OnUpgrade)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Joins the two upgraded connections and copies bytes both ways until
/// either side closes. `keep` (the route's permit and in-flight count, the
/// drain registration) lives exactly as long as the tunnel; `on_close` runs
/// when it ends.
pub fn spawn_tunnel<K, F>(pending: PendingTunnel, keep: K, on_close: F)
where
    K: Send + 'static,
    F: FnOnce() + Send + 'static,
{
    let Some((client, upstream)) = pending.take() else {
        return;
    };
    tokio::spawn(async move {
        let _keep = keep;
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    tracing::debug!(error = %e, "websocket tunnel closed with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
        on_close();
    });
}

/// `Connection: upgrade` with the given protocol in `Upgrade`.
fn asks_upgrade(headers: &http::HeaderMap, protocol: &str) -> bool {
    let connection_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade
        && headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(protocol))
}
