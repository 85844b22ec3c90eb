//! What a holder writes under its lease key: `{"node", "forward_url",
//! "public_url"}` as JSON, so followers know where to send requests.
//!
//! Anything may sit under the key (another tool, an older version), so
//! reading it is lenient: a URL that does not parse is left out, and only a
//! missing or non-string `node` makes the record unreadable.

use http::Uri;
use serde::{Deserialize, Serialize};

use crate::lease::{Holder, NodeIdentity};

#[derive(Serialize, Deserialize)]
struct Record {
    node: String,
    #[serde(default)]
    forward_url: Option<String>,
    #[serde(default)]
    public_url: Option<String>,
}

/// The value this node writes when it takes the lease.
pub fn encode(me: &NodeIdentity) -> Vec<u8> {
    let record = Record {
        node: me.node_id.clone(),
        forward_url: me.forward_url.as_ref().map(Uri::to_string),
        public_url: me.public_url.as_ref().map(Uri::to_string),
    };
    // A struct of strings always serializes.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// The holder a key's value names, or why it names none.
pub fn decode(value: &[u8]) -> Result<Holder, String> {
    let record: Record = serde_json::from_slice(value).map_err(|e| {
        format!(
            "the lease key holds no holder record ({e}): {}",
            super::wire::excerpt(value)
        )
    })?;
    let url = |u: Option<String>| u.and_then(|u| u.parse::<Uri>().ok());
    Ok(Holder {
        node_id: record.node,
        forward_url: url(record.forward_url),
        public_url: url(record.public_url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips() {
        let me = NodeIdentity {
            node_id: "orders-0".into(),
            forward_url: Some("http://10.0.0.5:8000/".parse().expect("uri")),
            public_url: None,
        };
        let value = encode(&me);
        assert_eq!(
            String::from_utf8_lossy(&value),
            r#"{"node":"orders-0","forward_url":"http://10.0.0.5:8000/","public_url":null}"#
        );
        assert_eq!(decode(&value), Ok(me.holder()));
    }

    #[test]
    fn reading_is_lenient_about_urls_but_needs_a_node() {
        let h = decode(br#"{"node":"b","forward_url":"not a url","extra":1}"#).expect("holder");
        assert_eq!((h.node_id.as_str(), h.forward_url), ("b", None));
        assert!(decode(br#"{"forward_url":"http://x/"}"#).is_err());
        assert!(decode(br#"{"node":5}"#).is_err());
        assert!(decode(b"\xff\x00garbage").is_err());
        assert!(decode(b"").is_err());
    }
}
