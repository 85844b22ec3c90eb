//! A small client for etcd's v3 API through its gRPC gateway: JSON over
//! HTTP/1.1 on the client port, spoken with the crate's own hyper client.
//!
//! Why not the `etcd-client` crate: it generates its gRPC code at build time
//! and needs `protoc` for that; the gateway needs nothing, so `backend: etcd`
//! works in every build. The calls used by the lease backend:
//!
//! | call | path | notes |
//! |---|---|---|
//! | [`Gateway::grant`] | `/v3/lease/grant` | etcd raises a TTL below its minimum (2 s by default) |
//! | [`Gateway::keep_alive`] | `/v3/lease/keepalive` | a stream; one request, first answer taken |
//! | [`Gateway::revoke`] | `/v3/lease/revoke` | deletes the keys attached; "not found" is success |
//! | [`Gateway::acquire`] | `/v3/kv/txn` | `If CreateRevision(key)==0 Then Put Else Get` |
//! | [`Gateway::range`] | `/v3/kv/range` | one key |
//! | [`Gateway::watch`] | `/v3/watch` | a long-lived stream of `{"result":…}` objects |
//! | (auth) | `/v3/auth/authenticate` | token sent as the bare `Authorization` value |
//!
//! Shapes as checked against etcd 3.4 (the `/v3/` prefix needs 3.4 or
//! later; 3.3 served `/v3beta/`) are described in `wire`. Every call has a
//! bounded timeout per endpoint and tries the endpoints in
//! turn when one is unreachable or unavailable; the last one that answered
//! is tried first next time. With a username and password set, a token is
//! fetched before the first call and again when etcd rejects it.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub use super::error::Error;
use super::error::{check_status, error_chain, etcd_error, grpc, malformed, status_error};
use super::watch::MessageStream;
pub use super::watch::Watch;
use super::wire::{self, base64_encode, int, StreamMessage};
use crate::config::EtcdSpec;

/// The largest answer (or streamed message) accepted from etcd.
pub(super) const MAX_MESSAGE: usize = 1 << 20;

/// A lease granted by etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub id: i64,
    /// The TTL etcd granted, which may exceed the one asked for.
    pub ttl: Duration,
}

/// A key as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key: a holder's fencing token.
    pub create_revision: u64,
    pub mod_revision: u64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// The outcome of [`Gateway::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The key was absent and now carries our lease; `token` is its
    /// `create_revision` (the transaction's revision).
    Won { token: u64 },
    /// The key exists: `holder` as read at `revision`.
    Held { revision: u64, holder: KeyValue },
}

/// One key read at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub revision: u64,
    pub kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { mod_revision: u64 },
}

/// The client. Cheap to share behind an `Arc`; calls may run concurrently.
pub struct Gateway {
    client: Client<HttpConnector, Full<Bytes>>,
    endpoints: Vec<Uri>,
    /// The endpoint tried first: the last one that answered.
    preferred: AtomicUsize,
    credentials: Option<(String, String)>,
    token: Mutex<Option<HeaderValue>>,
    timeout: Duration,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// `timeout` bounds each request to one endpoint (for a watch: until it
    /// is established).
    pub fn new(spec: &EtcdSpec, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let credentials = match (&spec.username, &spec.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (Some(u), None) => Some((u.clone(), String::new())),
            _ => None,
        };
        Self {
            client,
            endpoints: spec.endpoints.clone(),
            preferred: AtomicUsize::new(0),
            credentials,
            token: Mutex::new(None),
            timeout,
        }
    }

    /// `LeaseGrant(ttl_secs)`.
    pub async fn grant(&self, ttl_secs: u64) -> Result<Grant, Error> {
        let body = json!({ "TTL": ttl_secs.to_string(), "ID": "0" });
        let (endpoint, bytes) = self.unary("/v3/lease/grant", body).await?;
        let r: wire::GrantResponse = parse(&endpoint, "lease grant", &bytes)?;
        if let Some(e) = r.error.filter(|e| !e.is_empty()) {
            return Err(Error::Etcd {
                endpoint,
                status: 200,
                code: 0,
                message: e,
            });
        }
        match (r.id.0, u64::try_from(r.ttl.0)) {
            (id, Ok(ttl)) if id != 0 && ttl > 0 => Ok(Grant {
                id,
                ttl: Duration::from_secs(ttl),
            }),
            (id, _) => Err(malformed(
                &endpoint,
                format!("lease grant gave ID {id}, TTL {}", r.ttl.0),
            )),
        }
    }

    /// One `LeaseKeepAlive` round: the TTL etcd now gives the lease, in
    /// seconds; 0 or less means the lease is gone.
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, Error> {
        let body = json!({ "ID": int(lease) });
        let (endpoint, bytes) = match self.first_message("/v3/lease/keepalive", body).await {
            Err(Error::Etcd { code, .. }) if code == grpc::NOT_FOUND => return Ok(0),
            other => other?,
        };
        match wire::parse_stream_message::<wire::KeepAliveResponse>("lease keepalive", &bytes) {
            Ok(StreamMessage::Result(r)) if r.id.0 == lease => Ok(r.ttl.0),
            Ok(StreamMessage::Result(r)) => Err(malformed(
                &endpoint,
                format!("keepalive for lease {lease} answered for {}", r.id.0),
            )),
            // An expired lease etcd had not yet revoked.
            Ok(StreamMessage::Error(e)) if e.grpc_code() == Some(grpc::NOT_FOUND) => Ok(0),
            Ok(StreamMessage::Error(e)) => Err(etcd_error(&endpoint, 200, &e)),
            Err(e) => Err(malformed(&endpoint, e.0)),
        }
    }

    /// `LeaseRevoke`; a lease etcd no longer knows counts as revoked.
    pub async fn revoke(&self, lease: i64) -> Result<(), Error> {
        let body = json!({ "ID": int(lease) });
        let (endpoint, bytes) = match self.unary("/v3/lease/revoke", body).await {
            Err(Error::Etcd { code, .. }) if code == grpc::NOT_FOUND => return Ok(()),
            other => other?,
        };
        let r: wire::HeaderOnly = parse(&endpoint, "lease revoke", &bytes)?;
        wire::revision("lease revoke revision", r.header.revision)
            .map(drop)
            .map_err(|e| malformed(&endpoint, e.0))
    }

    /// `Txn If CreateRevision(key) == 0 Then Put(key, value, lease) Else Get(key)`.
    pub async fn acquire(&self, key: &[u8], value: &[u8], lease: i64) -> Result<Acquire, Error> {
        let key = base64_encode(key);
        let body = json!({
            "compare": [{ "target": "CREATE", "result": "EQUAL", "key": key, "create_revision": "0" }],
            "success": [{ "request_put": { "key": key, "value": base64_encode(value), "lease": int(lease) } }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let (endpoint, bytes) = self.unary("/v3/kv/txn", body).await?;
        let r: wire::TxnResponse = parse(&endpoint, "txn", &bytes)?;
        let revision = wire::revision("txn revision", r.header.revision)
            .map_err(|e| malformed(&endpoint, e.0))?;
        if r.succeeded {
            return Ok(Acquire::Won { token: revision });
        }
        let holder = r
            .responses
            .into_iter()
            .find_map(|op| op.response_range)
            .and_then(|range| range.kvs.into_iter().next())
            .ok_or_else(|| malformed(&endpoint, "a failed txn without the key".into()))?;
        Ok(Acquire::Held {
            revision,
            holder: key_value(&endpoint, holder)?,
        })
    }

    /// `Range(key)`.
    pub async fn range(&self, key: &[u8]) -> Result<Range, Error> {
        let body = json!({ "key": base64_encode(key) });
        let (endpoint, bytes) = self.unary("/v3/kv/range", body).await?;
        let r: wire::RangeResponse = parse(&endpoint, "range", &bytes)?;
        let revision = wire::revision("range revision", r.header.revision)
            .map_err(|e| malformed(&endpoint, e.0))?;
        let kv = match r.kvs.into_iter().next() {
            Some(kv) => Some(key_value(&endpoint, kv)?),
            None => None,
        };
        Ok(Range { revision, kv })
    }

    /// Watches one key from `start_revision` on. Returns once etcd confirmed
    /// the watch (within the timeout); events then come from [`Watch::next`].
    pub async fn watch(&self, key: &[u8], start_revision: u64) -> Result<Watch, Error> {
        let body = Bytes::from(
            json!({ "create_request": {
                "key": base64_encode(key),
                "start_revision": start_revision.to_string(),
            } })
            .to_string(),
        );
        let body = &body;
        self.failover(|idx| self.authed(idx, move |token| self.open_watch(idx, body, token)))
            .await
    }

    /// Fetches a fresh token now (also done on demand by every call).
    pub async fn authenticate(&self) -> Result<(), Error> {
        self.failover(|idx| async move { self.authenticate_at(idx).await.map(drop) })
            .await
    }

    // --- plumbing -----------------------------------------------------------

    /// A unary call: the whole answer, read to its end.
    async fn unary(&self, path: &str, body: Value) -> Result<(String, Bytes), Error> {
        let body = &Bytes::from(body.to_string());
        self.failover(|idx| {
            self.authed(idx, move |token| async move {
                let (endpoint, res) = self.post(idx, path, body, token).await?;
                let status = res.status();
                let bytes = timed(
                    &endpoint,
                    self.timeout,
                    read_all(&endpoint, res.into_body()),
                )
                .await?;
                check_status(&endpoint, status, &bytes)?;
                Ok((endpoint, bytes))
            })
        })
        .await
    }

    /// A streaming call sent one message: its first answer.
    async fn first_message(&self, path: &str, body: Value) -> Result<(String, Bytes), Error> {
        let body = &Bytes::from(body.to_string());
        self.failover(|idx| {
            self.authed(idx, move |token| async move {
                let (endpoint, res) = self.post(idx, path, body, token).await?;
                let mut stream = self.stream_of(endpoint.clone(), res).await?;
                let first = timed(&endpoint, self.timeout, stream.next()).await?;
                Ok((endpoint, Bytes::from(first)))
            })
        })
        .await
    }

    async fn open_watch(
        &self,
        idx: usize,
        body: &Bytes,
        token: Option<HeaderValue>,
    ) -> Result<Watch, Error> {
        let (endpoint, res) = self.post(idx, "/v3/watch", body, token).await?;
        let stream = self.stream_of(endpoint.clone(), res).await?;
        timed(&endpoint, self.timeout, Watch::created(stream)).await
    }

    /// The body of a streaming call's answer, or the error it reports.
    async fn stream_of(
        &self,
        endpoint: String,
        res: http::Response<Incoming>,
    ) -> Result<MessageStream, Error> {
        let status = res.status();
        let body = res.into_body();
        if status.is_success() {
            return Ok(MessageStream::new(endpoint, body));
        }
        let bytes = timed(&endpoint, self.timeout, read_all(&endpoint, body)).await?;
        Err(status_error(&endpoint, status, &bytes))
    }

    /// Runs `attempt` against each endpoint in turn, starting with the
    /// preferred one, until one answers or fails in a way another endpoint
    /// would not fix.
    async fn failover<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = Error::Transport {
            endpoint: "-".into(),
            reason: "no endpoints configured".into(),
        };
        for i in 0..n {
            let idx = (first + i) % n;
            match attempt(idx).await {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.try_next_endpoint() => {
                    tracing::debug!(error = %e, "etcd endpoint failed, trying the next");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Runs `call` with the current token (fetching one first if needed),
    /// and once more with a fresh token if etcd rejected it.
    async fn authed<T, F, Fut>(&self, idx: usize, call: F) -> Result<T, Error>
    where
        F: Fn(Option<HeaderValue>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        if self.credentials.is_none() {
            return call(None).await;
        }
        let token = match self.current_token() {
            Some(t) => t,
            None => self.authenticate_at(idx).await?,
        };
        match call(Some(token)).await {
            Err(e) if e.is_auth() => {
                tracing::debug!(error = %e, "etcd rejected the token; authenticating again");
                let token = self.authenticate_at(idx).await?;
                call(Some(token)).await
            }
            r => r,
        }
    }

    fn current_token(&self) -> Option<HeaderValue> {
        self.token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn authenticate_at(&self, idx: usize) -> Result<HeaderValue, Error> {
        let Some((name, password)) = &self.credentials else {
            return Err(Error::Transport {
                endpoint: "-".into(),
                reason: "authentication without credentials".into(),
            });
        };
        let body = Bytes::from(json!({ "name": name, "password": password }).to_string());
        let (endpoint, res) = self.post(idx, "/v3/auth/authenticate", &body, None).await?;
        let status = res.status();
        let bytes = timed(
            &endpoint,
            self.timeout,
            read_all(&endpoint, res.into_body()),
        )
        .await?;
        check_status(&endpoint, status, &bytes)?;
        let r: wire::AuthenticateResponse = parse(&endpoint, "authenticate", &bytes)?;
        let token = HeaderValue::from_str(&r.token)
            .map_err(|_| malformed(&endpoint, "the auth token is not a header value".into()))?;
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.clone());
        Ok(token)
    }

    /// Sends one POST and waits (bounded) for the response head.
    async fn post(
        &self,
        idx: usize,
        path: &str,
        body: &Bytes,
        token: Option<HeaderValue>,
    ) -> Result<(String, http::Response<Incoming>), Error> {
        let Some(base) = self.endpoints.get(idx) else {
            return Err(Error::Transport {
                endpoint: "-".into(),
                reason: format!("no endpoint #{idx}"),
            });
        };
        let endpoint = base
            .authority()
            .map_or_else(|| base.to_string(), ToString::to_string);
        if base.scheme_str() == Some("https") {
            return Err(Error::Unsupported { endpoint });
        }
        let transport = |reason: String| Error::Transport {
            endpoint: endpoint.clone(),
            reason,
        };
        let mut req = http::Request::post(format!("http://{endpoint}{path}"))
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, token);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| transport(e.to_string()))?;
        let res = timed(&endpoint, self.timeout, async {
            self.client
                .request(req)
                .await
                .map_err(|e| transport(error_chain(&e)))
        })
        .await?;
        Ok((endpoint, res))
    }
}

async fn timed<T>(
    endpoint: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(Error::Timeout {
            endpoint: endpoint.to_owned(),
            timeout,
        })
    })
}

async fn read_all(endpoint: &str, body: Incoming) -> Result<Bytes, Error> {
    Limited::new(body, MAX_MESSAGE)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| Error::Transport {
            endpoint: endpoint.to_owned(),
            reason: format!("reading the answer: {e}"),
        })
}

fn parse<T: serde::de::DeserializeOwned>(
    endpoint: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T, Error> {
    wire::parse(what, bytes).map_err(|e| malformed(endpoint, e.0))
}

pub(super) fn key_value(endpoint: &str, kv: wire::KeyValue) -> Result<KeyValue, Error> {
    let non_negative = |what: &str, n: wire::Int| {
        u64::try_from(n.0).map_err(|_| malformed(endpoint, format!("{what} {} < 0", n.0)))
    };
    Ok(KeyValue {
        create_revision: non_negative("create_revision", kv.create_revision)?,
        mod_revision: non_negative("mod_revision", kv.mod_revision)?,
        key: kv.key.0,
        value: kv.value.0,
        lease: kv.lease.0,
    })
}
