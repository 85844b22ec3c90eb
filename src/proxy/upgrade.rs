//! WebSocket tunnels: an HTTP/1.1 `Upgrade: websocket` exchange that the
//! upstream accepts (101) becomes a byte pipe between client and upstream.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::handler::asks_upgrade;

/// Whether a request asks for a WebSocket tunnel. `Upgrade: h2c` and any
/// other protocol are not tunnelled: their upgrade headers are stripped.
pub fn is_websocket<B>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_11 && asks_upgrade(req.headers(), "websocket")
}

/// Joins the two upgraded connections and copies bytes both ways until
/// either side closes.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "websocket tunnel closed with an error");
        }
    });
}
