//! The JSON that etcd's gRPC gateway (v3 API over HTTP/1.1) speaks, checked
//! against etcd 3.4: bytes travel as base64 strings, int64 fields as decimal
//! strings, and fields holding their default value (0, false, empty, the
//! `PUT` event type) are left out. Everything here is pure and never panics:
//! an answer that does not fit is a [`Malformed`] error.

use serde::Deserialize;
use serde_json::Value;

/// An answer from etcd that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// An int64 as the gateway sends it: a decimal string (or, leniently, a
/// JSON number). Absent means 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(s) => s
                .trim()
                .parse()
                .map(Int)
                .map_err(|_| D::Error::custom(format_args!("{s:?} is not an int64"))),
            Value::Number(n) => n
                .as_i64()
                .map(Int)
                .ok_or_else(|| D::Error::custom(format_args!("{n} is not an int64"))),
            Value::Null => Ok(Int(0)),
            other => Err(D::Error::custom(format_args!("{other} is not an int64"))),
        }
    }
}

/// Bytes as the gateway sends them: standard base64. Absent means empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Option::<String>::deserialize(d)? {
            None => Ok(B64(Vec::new())),
            Some(s) => base64_decode(&s)
                .map(B64)
                .ok_or_else(|| D::Error::custom("a value is not valid base64")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    pub revision: Int,
}

/// `mvccpb.KeyValue`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: B64,
    pub value: B64,
    pub create_revision: Int,
    pub mod_revision: Int,
    pub lease: Int,
}

/// `POST /v3/lease/grant` → `LeaseGrantResponse`.
#[derive(Debug, Deserialize)]
pub struct GrantResponse {
    #[serde(rename = "ID")]
    pub id: Int,
    #[serde(rename = "TTL", default)]
    pub ttl: Int,
    #[serde(default)]
    pub error: Option<String>,
}

/// One message of the `POST /v3/lease/keepalive` stream: `{"result": …}`.
/// A lease etcd no longer knows comes back with the `TTL` left out (0).
#[derive(Debug, Deserialize)]
pub struct KeepAliveResponse {
    #[serde(rename = "ID", default)]
    pub id: Int,
    #[serde(rename = "TTL", default)]
    pub ttl: Int,
}

/// An answer of which only the header matters (`LeaseRevokeResponse`).
#[derive(Debug, Deserialize)]
pub struct HeaderOnly {
    pub header: Header,
}

/// `POST /v3/kv/range` → `RangeResponse` (no `kvs` when the key is absent).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
}

/// `POST /v3/kv/txn` → `TxnResponse`; `succeeded` is left out when false.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResponseOp {
    pub response_range: Option<RangeResponse>,
}

/// `POST /v3/auth/authenticate` → `AuthenticateResponse`.
#[derive(Debug, Deserialize)]
pub struct AuthenticateResponse {
    pub token: String,
}

/// One message of the `POST /v3/watch` stream: `{"result": …}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    pub cancel_reason: String,
    pub compact_revision: Int,
    pub events: Vec<Event>,
}

/// `mvccpb.Event`; the type is left out for `PUT` (the enum's zero).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub kv: KeyValue,
}

impl Event {
    pub fn is_delete(&self) -> bool {
        self.kind.as_deref() == Some("DELETE")
    }
}

/// The error body of a failed unary call, e.g.
/// `{"error":"etcdserver: requested lease not found","message":"…","code":5}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    pub error: Value,
    pub message: Option<String>,
    pub code: Option<i64>,
}

impl ErrorBody {
    /// The gateway's text for the error, whichever field carries it.
    pub fn text(&self) -> String {
        if let Some(m) = &self.message {
            return m.clone();
        }
        match &self.error {
            Value::String(s) => s.clone(),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| self.error.to_string(), str::to_owned),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// The gRPC status code, also when nested as `{"error":{"grpc_code":…}}`.
    pub fn grpc_code(&self) -> Option<i64> {
        self.code.or_else(|| {
            self.error
                .get("grpc_code")
                .or_else(|| self.error.get("code"))
                .and_then(Value::as_i64)
        })
    }
}

/// Parses one JSON document into `T`.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Malformed> {
    serde_json::from_slice(bytes).map_err(|e| Malformed(format!("{what}: {e}: {}", excerpt(bytes))))
}

/// A message of a streamed answer: `{"result": T}` or `{"error": …}`.
pub enum StreamMessage<T> {
    Result(T),
    Error(ErrorBody),
}

pub fn parse_stream_message<T: serde::de::DeserializeOwned>(
    what: &str,
    bytes: &[u8],
) -> Result<StreamMessage<T>, Malformed> {
    let mut v: Value = parse(what, bytes)?;
    if let Some(result) = v.get_mut("result").map(Value::take) {
        return serde_json::from_value(result)
            .map(StreamMessage::Result)
            .map_err(|e| Malformed(format!("{what}: {e}: {}", excerpt(bytes))));
    }
    if v.get("error").is_some() {
        return serde_json::from_value(v)
            .map(StreamMessage::Error)
            .map_err(|e| Malformed(format!("{what}: {e}: {}", excerpt(bytes))));
    }
    Err(Malformed(format!(
        "{what}: neither `result` nor `error`: {}",
        excerpt(bytes)
    )))
}

/// The first bytes of an answer, for error messages.
pub fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    if bytes.len() > MAX {
        format!("{s:?}…")
    } else {
        format!("{s:?}")
    }
}

/// An int64 for a request body: the gateway takes them as strings.
pub fn int(n: i64) -> Value {
    Value::String(n.to_string())
}

/// A non-negative int64 from etcd as `u64` (revisions, fencing tokens).
pub fn revision(what: &str, n: Int) -> Result<u64, Malformed> {
    u64::try_from(n.0)
        .ok()
        .filter(|&r| r > 0)
        .ok_or_else(|| Malformed(format!("{what} {} is not a positive revision", n.0)))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Standard or URL-safe base64, padding optional; `None` if invalid.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let digits = s.trim_end_matches('=').as_bytes();
    if s.len() - digits.len() > 2 || digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in digits {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..40 {
            let enc = base64_encode(&data[..n]);
            assert_eq!(enc.len() % 4, 0);
            assert_eq!(base64_decode(&enc).as_deref(), Some(&data[..n]));
        }
        assert_eq!(base64_encode(b"/bw/orders"), "L2J3L29yZGVycw==");
        assert_eq!(
            base64_decode("eyJub2RlIjoiYSJ9").as_deref(),
            Some(&b"{\"node\":\"a\"}"[..])
        );
        assert_eq!(base64_decode("eA").as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["a", "ab!c", "====", "abc===", "é"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ints_arrive_as_strings_numbers_or_not_at_all() {
        let r: GrantResponse =
            parse("grant", br#"{"ID":"2324035610679954950","TTL":"2"}"#).expect("parses");
        assert_eq!((r.id.0, r.ttl.0), (2324035610679954950, 2));
        let r: GrantResponse = parse("grant", br#"{"ID":7,"TTL":5}"#).expect("parses");
        assert_eq!((r.id.0, r.ttl.0), (7, 5));
        let r: KeepAliveResponse = parse("ka", br#"{"ID":"7"}"#).expect("parses");
        assert_eq!(r.ttl.0, 0);
        assert!(parse::<GrantResponse>("grant", br#"{"ID":"x"}"#).is_err());
        assert!(parse::<GrantResponse>("grant", br#"{"TTL":"1"}"#).is_err());
        assert!(parse::<GrantResponse>("grant", br#"{"ID":1.5}"#).is_err());
    }

    #[test]
    fn a_failed_txn_names_the_holder() {
        let body = br#"{"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"L2J3L29yZGVycw==","create_revision":"2","mod_revision":"2","version":"1","value":"eyJub2RlIjoiYSJ9","lease":"2324035610679954956"}],"count":"1"}}]}"#;
        let r: TxnResponse = parse("txn", body).expect("parses");
        assert!(!r.succeeded);
        let kv = &r.responses[0].response_range.as_ref().expect("range").kvs[0];
        assert_eq!(kv.key.0, b"/bw/orders");
        assert_eq!(kv.create_revision.0, 2);
        assert_eq!(kv.lease.0, 2324035610679954956);
    }

    #[test]
    fn watch_events_default_to_put() {
        let body = br#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"YQ==","create_revision":"2","mod_revision":"2"}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"3"}}]}}"#;
        let StreamMessage::Result(w) =
            parse_stream_message::<WatchResponse>("watch", body).expect("parses")
        else {
            panic!("expected a result");
        };
        assert!(!w.events[0].is_delete());
        assert!(w.events[1].is_delete());
    }

    #[test]
    fn stream_errors_are_told_apart_from_results() {
        for body in [
            &br#"{"error":"etcdserver: no leader","code":14}"#[..],
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#,
        ] {
            let Ok(StreamMessage::Error(e)) = parse_stream_message::<WatchResponse>("watch", body)
            else {
                panic!("expected an error");
            };
            assert_eq!(e.grpc_code(), Some(14));
            assert_eq!(e.text(), "etcdserver: no leader");
        }
        assert!(parse_stream_message::<WatchResponse>("watch", b"{}").is_err());
        assert!(parse_stream_message::<WatchResponse>("watch", b"[1]").is_err());
        assert!(parse_stream_message::<WatchResponse>("watch", br#"{"result":5}"#).is_err());
    }

    #[test]
    fn revisions_must_be_positive() {
        assert_eq!(revision("r", Int(5)), Ok(5));
        assert!(revision("r", Int(0)).is_err());
        assert!(revision("r", Int(-1)).is_err());
    }
}
