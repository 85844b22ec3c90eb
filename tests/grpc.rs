//! gRPC over h2c end to end, framing written by hand (no tonic): unary,
//! server streaming, client/bidi streaming, error statuses in trailers and
//! trailers-only responses, and the proxy's own gRPC answer for no route.

mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{config_with, h2_client, upstream, within, Proxy, TestBody};
use futures_util::stream;
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The whole route table for most tests: everything goes to the h2c upstream.
const CATCH_ALL: &str = "  - { name: app, match: { path_prefix: / }, upstream: app }";

#[tokio::test]
async fn unary_call_returns_the_message_and_ok_status_in_trailers() {
    let up = upstream(|req: Request<Incoming>| async move {
        let te = req.headers().get(TE).cloned();
        let mut messages = Messages::new(req.into_body());
        let reply = match messages.next().await {
            Ok(Some(m)) => Bytes::from(m.to_ascii_uppercase()),
            other => Bytes::from(format!("unexpected: {other:?}")),
        };
        let mut res = grpc_ok(vec![message(&reply), status_trailers("0", None)]);
        if let Some(te) = te {
            res.headers_mut().insert("x-saw-te", te);
        }
        res
    })
    .await;
    let proxy = Proxy::start(&config_with(up, "protocol: http2", CATCH_ALL)).await;

    let res = call(grpc_request(
        &proxy,
        "/echo.Echo/Upper",
        fixed(vec![message(b"hello")]),
    ))
    .await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc");
    assert_eq!(
        res.headers().get("x-saw-te").map(HeaderValue::as_bytes),
        Some(&b"trailers"[..]),
        "te: trailers reaches the upstream"
    );
    let mut messages = Messages::new(res.into_body());
    assert_eq!(next(&mut messages).await.as_deref(), Some(&b"HELLO"[..]));
    assert_eq!(next(&mut messages).await, None);
    assert_status(&messages.trailers, "0", None);
}

#[tokio::test]
async fn server_streaming_delivers_every_message_in_order_then_ok_status() {
    let up = upstream(|_req: Request<Incoming>| async move {
        let mut frames: Vec<_> = (1..=5)
            .map(|i| message(format!("item {i}").as_bytes()))
            .collect();
        frames.push(status_trailers("0", None));
        grpc_ok(frames)
    })
    .await;
    let proxy = Proxy::start(&config_with(up, "protocol: http2", CATCH_ALL)).await;

    let res = call(grpc_request(
        &proxy,
        "/list.List/All",
        fixed(vec![message(b"")]),
    ))
    .await;

    assert_eq!(res.status(), StatusCode::OK);
    let mut messages = Messages::new(res.into_body());
    for i in 1..=5 {
        let got = next(&mut messages).await;
        assert_eq!(got, Some(Bytes::from(format!("item {i}"))), "message {i}");
    }
    assert_eq!(next(&mut messages).await, None);
    assert_status(&messages.trailers, "0", None);
}

#[tokio::test]
async fn error_status_in_trailers_reaches_the_client() {
    let up = upstream(|_req: Request<Incoming>| async move {
        grpc_ok(vec![status_trailers("14", Some("down"))])
    })
    .await;
    let proxy = Proxy::start(&config_with(up, "protocol: http2", CATCH_ALL)).await;

    let res = call(grpc_request(
        &proxy,
        "/svc.Svc/Fail",
        fixed(vec![message(b"x")]),
    ))
    .await;

    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get("grpc-status").is_none(),
        "status is in trailers, not headers"
    );
    let mut messages = Messages::new(res.into_body());
    assert_eq!(next(&mut messages).await, None, "no messages");
    assert_status(&messages.trailers, "14", Some("down"));
}

#[tokio::test]
async fn trailers_only_error_response_passes_through() {
    let up = upstream(|_req: Request<Incoming>| async move {
        let mut res = grpc_ok(Vec::new());
        let h = res.headers_mut();
        h.insert("grpc-status", HeaderValue::from_static("5"));
        h.insert("grpc-message", HeaderValue::from_static("no such thing"));
        res
    })
    .await;
    let proxy = Proxy::start(&config_with(up, "protocol: http2", CATCH_ALL)).await;

    let res = call(grpc_request(
        &proxy,
        "/svc.Svc/Get",
        fixed(vec![message(b"x")]),
    ))
    .await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_status(&Some(res.headers().clone()), "5", Some("no such thing"));
    let mut messages = Messages::new(res.into_body());
    assert_eq!(next(&mut messages).await, None, "no messages");
    assert_eq!(
        messages.trailers, None,
        "nothing after the trailers-only head"
    );
}

/// Each request message is acknowledged as soon as it arrives and the client
/// waits for that ack before sending the next, so neither direction can be
/// held back until the other ends; the final reply is the count.
#[tokio::test]
async fn bidi_streaming_messages_flow_both_ways_before_either_side_ends() {
    let up = upstream(|req: Request<Incoming>| async move {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let mut messages = Messages::new(req.into_body());
            let mut count = 0;
            while let Ok(Some(m)) = messages.next().await {
                count += 1;
                let ack = format!("ack {count}: {}", String::from_utf8_lossy(&m));
                if tx.send(message(ack.as_bytes())).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(message(format!("count {count}").as_bytes())).await;
            let _ = tx.send(status_trailers("0", None)).await;
        });
        grpc_ok_body(body)
    })
    .await;
    let proxy = Proxy::start(&config_with(up, "protocol: http2", CATCH_ALL)).await;

    let (tx, body) = channel_body();
    let res = call(grpc_request(&proxy, "/chat.Chat/Talk", body)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut messages = Messages::new(res.into_body());
    for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
        within(
            "room in the request stream",
            tx.send(message(text.as_bytes())),
        )
        .await
        .expect("request stream open");
        let ack = next(&mut messages).await;
        assert_eq!(ack, Some(Bytes::from(format!("ack {}: {text}", i + 1))));
    }
    drop(tx); // ends the request stream
    assert_eq!(next(&mut messages).await.as_deref(), Some(&b"count 3"[..]));
    assert_eq!(next(&mut messages).await, None);
    assert_status(&messages.trailers, "0", None);
}

#[tokio::test]
async fn grpc_request_matching_no_route_gets_trailers_only_unimplemented() {
    let up = upstream(|_req: Request<Incoming>| async move { grpc_ok(Vec::new()) }).await;
    let routes = "  - { name: known, match: { path_prefix: /known.Known/ }, upstream: app }";
    let proxy = Proxy::start(&config_with(up, "protocol: http2", routes)).await;

    let res = call(grpc_request(
        &proxy,
        "/other.Other/Call",
        fixed(vec![message(b"x")]),
    ))
    .await;

    assert_eq!(
        res.status(),
        StatusCode::OK,
        "gRPC errors travel as HTTP 200"
    );
    assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc");
    assert_eq!(res.headers()["x-breakwater-reason"], "no-route");
    assert_status(&Some(res.headers().clone()), "12", None);
    let mut messages = Messages::new(res.into_body());
    assert_eq!(next(&mut messages).await, None, "no messages");
    assert_eq!(
        messages.trailers, None,
        "trailers-only: the head is the whole response"
    );
}

// ---------------------------------------------------------------------------
// gRPC framing by hand.

/// One length-prefixed message: flag 0 (uncompressed), big-endian u32 length,
/// payload.
fn message(payload: &[u8]) -> Frame<Bytes> {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(payload.len()).expect("small message"));
    buf.put_slice(payload);
    Frame::data(buf.freeze())
}

fn status_trailers(code: &'static str, msg: Option<&'static str>) -> Frame<Bytes> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(code));
    if let Some(msg) = msg {
        trailers.insert("grpc-message", HeaderValue::from_static(msg));
    }
    Frame::trailers(trailers)
}

fn assert_status(headers: &Option<HeaderMap>, code: &str, msg: Option<&str>) {
    let headers = headers.as_ref().expect("grpc status present");
    assert_eq!(
        headers.get("grpc-status").map(HeaderValue::as_bytes),
        Some(code.as_bytes())
    );
    if let Some(msg) = msg {
        assert_eq!(
            headers.get("grpc-message").map(HeaderValue::as_bytes),
            Some(msg.as_bytes())
        );
    }
}

/// Reads length-prefixed messages off a body, however its data frames split
/// or join them, and keeps the trailers when they come.
struct Messages {
    body: Incoming,
    buf: BytesMut,
    trailers: Option<HeaderMap>,
}

impl Messages {
    fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            trailers: None,
        }
    }

    /// The next message, `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(m) = self.split_message()? {
                return Ok(Some(m));
            }
            match self.body.frame().await {
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(format!("body ended inside a message: {:?}", self.buf)),
                Some(Err(e)) => return Err(format!("body failed: {e}")),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
            }
        }
    }

    fn split_message(&mut self) -> Result<Option<Bytes>, String> {
        let Some(header) = self.buf.get(..5) else {
            return Ok(None);
        };
        if header[0] != 0 {
            return Err(format!("compressed flag {} on a message", header[0]));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// The next message, bounded; a framing error fails the test.
async fn next(messages: &mut Messages) -> Option<Bytes> {
    within("the next gRPC message", messages.next())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// Requests, responses and bodies.

fn grpc_request(proxy: &Proxy, path: &str, body: TestBody) -> Request<TestBody> {
    Request::post(proxy.url(path))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .body(body)
        .expect("request")
}

/// Sends a request and waits (bounded) for the response head.
async fn call(req: Request<TestBody>) -> Response<Incoming> {
    within("the gRPC response head", h2_client().request(req))
        .await
        .expect("response")
}

fn grpc_ok(frames: Vec<Frame<Bytes>>) -> Response<TestBody> {
    grpc_ok_body(fixed(frames))
}

fn grpc_ok_body(body: TestBody) -> Response<TestBody> {
    let mut res = Response::new(body);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    res
}

/// A body of exactly these frames.
fn fixed(frames: Vec<Frame<Bytes>>) -> TestBody {
    StreamBody::new(stream::iter(frames.into_iter().map(Ok))).boxed()
}

/// A body fed frame by frame through a channel; it ends when the sender is
/// dropped.
fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, TestBody) {
    let (tx, mut rx) = mpsc::channel::<Frame<Bytes>>(1);
    let frames = stream::poll_fn(move |cx| rx.poll_recv(cx).map(|f| f.map(Ok::<_, BoxError>)));
    (tx, StreamBody::new(frames).boxed())
}
