//! A watch on one key: the long-lived `POST /v3/watch` response, cut into
//! its `{"result": WatchResponse}` messages and turned into key events.

use std::collections::VecDeque;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::error::{error_chain, etcd_error, malformed, Error};
use super::gateway::{key_value, WatchEvent, MAX_MESSAGE};
use super::stream::ObjectSplitter;
use super::wire::{self, StreamMessage};

/// An established watch; dropping it cancels the watch (the connection closes).
#[derive(Debug)]
pub struct Watch {
    stream: MessageStream,
    pending: VecDeque<WatchEvent>,
}

impl Watch {
    /// The next change of the key. Waits as long as it takes: the caller
    /// bounds it. A canceled watch, an error message, the stream's end or a
    /// malformed message is an error; the watch is then unusable. etcd
    /// reports a start revision already compacted here, as
    /// [`Error::Compacted`] right after confirming the watch.
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let r = self.next_response().await?;
            self.take_events(r)?;
        }
    }

    /// Confirms the watch was created: its first message says so.
    pub(super) async fn created(stream: MessageStream) -> Result<Watch, Error> {
        let mut watch = Watch {
            stream,
            pending: VecDeque::new(),
        };
        let first = watch.next_response().await?;
        if !first.created {
            return Err(malformed(
                watch.stream.endpoint(),
                "the watch's first answer is not `created`".into(),
            ));
        }
        watch.take_events(first)?;
        Ok(watch)
    }

    async fn next_response(&mut self) -> Result<wire::WatchResponse, Error> {
        let endpoint = self.stream.endpoint.clone();
        let bytes = self.stream.next().await?;
        let r = match wire::parse_stream_message::<wire::WatchResponse>("watch", &bytes) {
            Ok(StreamMessage::Result(r)) => r,
            Ok(StreamMessage::Error(e)) => return Err(etcd_error(&endpoint, 200, &e)),
            Err(e) => return Err(malformed(&endpoint, e.0)),
        };
        if r.canceled {
            if r.compact_revision.0 > 0 {
                return Err(Error::Compacted {
                    endpoint,
                    compact_revision: u64::try_from(r.compact_revision.0).unwrap_or(0),
                });
            }
            return Err(Error::WatchCanceled {
                endpoint,
                reason: r.cancel_reason,
            });
        }
        Ok(r)
    }

    fn take_events(&mut self, r: wire::WatchResponse) -> Result<(), Error> {
        for e in r.events {
            let event = if e.is_delete() {
                WatchEvent::Delete {
                    mod_revision: u64::try_from(e.kv.mod_revision.0).unwrap_or(0),
                }
            } else {
                WatchEvent::Put(key_value(&self.stream.endpoint, e.kv)?)
            };
            self.pending.push_back(event);
        }
        Ok(())
    }
}

/// A streamed response body cut into JSON objects.
#[derive(Debug)]
pub(super) struct MessageStream {
    endpoint: String,
    body: Incoming,
    splitter: ObjectSplitter,
}

impl MessageStream {
    pub(super) fn new(endpoint: String, body: Incoming) -> Self {
        Self {
            endpoint,
            body,
            splitter: ObjectSplitter::new(MAX_MESSAGE),
        }
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next message; the stream's end is an error.
    pub(super) async fn next(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            match self.splitter.next_object() {
                Ok(Some(object)) => return Ok(object),
                Ok(None) => {}
                Err(e) => return Err(malformed(&self.endpoint, e.to_string())),
            }
            match self.body.frame().await {
                None if self.splitter.is_idle() => {
                    return Err(Error::StreamEnded {
                        endpoint: self.endpoint.clone(),
                    })
                }
                None => {
                    return Err(malformed(
                        &self.endpoint,
                        "the stream ended inside a message".into(),
                    ))
                }
                Some(Err(e)) => {
                    return Err(Error::Transport {
                        endpoint: self.endpoint.clone(),
                        reason: error_chain(&e),
                    })
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.splitter.push(data);
                    }
                }
            }
        }
    }
}
