//! Three-process lease tests' shared parts (`lease_etcd`, `lease_peers`):
//! a running node and what it holds, and a client that sees whether and
//! with which token the app answered.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::{eventually, full, get_within, h1_client, reason_of, BinaryProxy};

/// The lease under test's admin path.
pub const LEASE: &str = "/leases/orders";

/// One running `breakwater`: its id, main listener port and process.
pub struct Node {
    pub id: &'static str,
    pub port: u16,
    pub proxy: BinaryProxy,
}

impl Node {
    /// `path` on this node's main listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET /leases/orders`, or `None` when it does not answer JSON.
    pub async fn view(&self) -> Option<serde_json::Value> {
        let (status, _, body) = get_within(&self.proxy.admin_url(LEASE)).await;
        if status != StatusCode::OK {
            return None;
        }
        serde_json::from_str(&body).ok()
    }
}

/// Waits until exactly one of `nodes` may stamp and every other one knows it
/// as the holder (with its token); returns its index and token.
pub async fn until_converged(nodes: &[&Node]) -> (usize, u64) {
    eventually(
        "one node holds lease orders and the others follow it",
        || async {
            let mut views = Vec::new();
            for node in nodes {
                views.push(node.view().await?);
            }
            let holders: Vec<usize> = (0..views.len())
                .filter(|&i| views[i]["am_holder"] == true)
                .collect();
            let [h] = holders[..] else { return None };
            let token = views[h]["token"].as_u64()?;
            let id = nodes[h].id;
            let agreed = views.iter().enumerate().all(|(i, v)| {
                i == h || (v["holder"]["id"] == id && v["token"].as_u64() == Some(token))
            });
            (views[h]["holder"]["id"] == id && agreed).then_some((h, token))
        },
    )
    .await
}

// --- the client ---------------------------------------------------------------

/// A whole answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// The token the app says it saw: `None` unless the app answered.
    pub fn token(&self) -> Option<u64> {
        if self.status != StatusCode::OK {
            return None;
        }
        self.body.trim().strip_prefix("token=")?.parse().ok()
    }

    /// The `x-breakwater-reason` of a refusal, if any.
    pub fn reason(&self) -> &str {
        reason_of(&self.headers)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (reason {:?}) {:?}",
            self.status,
            self.reason(),
            self.body.trim()
        )
    }
}

/// GETs `url` with `headers` on a fresh connection; an error or no whole
/// answer within `bound` is an `Err` naming it.
pub async fn send_within(
    url: &str,
    headers: &[(&str, &str)],
    bound: Duration,
) -> Result<Reply, String> {
    use http_body_util::BodyExt;
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(full(Bytes::new())).map_err(|e| e.to_string())?;
    let whole = async {
        let res = h1_client().request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(bound, whole)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {bound:?}")))
}

/// [`send_within`] 5 s, which must answer.
pub async fn send(url: &str, headers: &[(&str, &str)]) -> Reply {
    send_within(url, headers, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `d` in whole milliseconds, for figures.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}
