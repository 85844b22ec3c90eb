//! Upgrades: a WebSocket handshake is tunnelled to the upstream and frames
//! flow both ways; `Upgrade: h2c` is stripped and answered as plain HTTP/1.1.

mod common;

use std::net::SocketAddr;

use common::{config_for, echo_upstream, within, Proxy};
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn websocket_text_and_binary_frames_echo_through_the_tunnel_and_close_cleanly() {
    let (up, handshake) = websocket_echo_upstream().await;
    let proxy = Proxy::start(&config_for(up, "")).await;

    let url = format!("ws://{}/ws", proxy.addr());
    let (mut ws, res) = within(
        "the websocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake through the proxy");
    assert_eq!(res.status(), http::StatusCode::SWITCHING_PROTOCOLS);

    ws.send(Message::Text("hello".into()))
        .await
        .expect("send text");
    let echoed = within("the text echo", ws.next()).await;
    assert_eq!(
        echoed.expect("a frame").expect("ok"),
        Message::Text("hello".into())
    );

    let bytes = vec![0u8, 1, 2, 254, 255];
    ws.send(Message::Binary(bytes.clone()))
        .await
        .expect("send binary");
    let echoed = within("the binary echo", ws.next()).await;
    assert_eq!(
        echoed.expect("a frame").expect("ok"),
        Message::Binary(bytes)
    );

    ws.close(None).await.expect("send close");
    let reply = within("the close reply", ws.next()).await;
    assert!(
        matches!(reply, Some(Ok(Message::Close(_)))),
        "the upstream's close frame comes back: {reply:?}"
    );
    let end = within("the end of the stream", ws.next()).await;
    assert!(end.is_none(), "nothing after the close handshake: {end:?}");

    let headers = within("the upstream's handshake", handshake)
        .await
        .expect("the upstream saw a handshake");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers["upgrade"]
        .as_bytes()
        .eq_ignore_ascii_case(b"websocket"));
}

#[tokio::test]
async fn h2c_upgrade_is_not_passed_on_and_the_answer_is_plain_http1() {
    let up = echo_upstream().await;
    let proxy = Proxy::start(&config_for(up, "")).await;
    let mut conn = TcpStream::connect(proxy.addr()).await.expect("connect");

    let request = "GET / HTTP/1.1\r\n\
                   Host: app.local\r\n\
                   Connection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: h2c\r\n\
                   HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
                   \r\n";
    conn.write_all(request.as_bytes()).await.expect("write");
    let (head, body) = within("the response", read_response(&mut conn)).await;

    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let seen = body.to_ascii_lowercase();
    assert!(seen.starts_with("get / http/1.1"), "{body}");
    assert!(
        !seen.contains("\nupgrade:"),
        "upgrade reached the upstream:\n{body}"
    );
    assert!(
        !seen.contains("\nhttp2-settings:"),
        "http2-settings reached the upstream:\n{body}"
    );
    assert!(
        !seen.contains("\nconnection:"),
        "connection reached the upstream:\n{body}"
    );

    // The connection is still plain HTTP/1.1: a second request is served.
    conn.write_all(b"GET /again HTTP/1.1\r\nHost: app.local\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = within("the second response", read_response(&mut conn)).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(body.starts_with("GET /again HTTP/1.1"), "{body}");
}

/// A WebSocket server that echoes text and binary frames on the first
/// connection it accepts and reports the handshake's request headers.
async fn websocket_echo_upstream() -> (SocketAddr, oneshot::Receiver<HeaderMap>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, handshake) = oneshot::channel();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        // The `Result` shape is tungstenite's callback signature.
        #[allow(clippy::result_large_err)]
        let inspect = move |req: &Request, res: Response| {
            let _ = seen.send(req.headers().clone());
            Ok(res)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, inspect).await else {
            return;
        };
        // tungstenite answers a Close itself; the stream then ends.
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    (addr, handshake)
}

/// Reads one HTTP/1.1 response with a `Content-Length` body off `conn`,
/// leaving the connection open; returns the head and the body.
async fn read_response(conn: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(conn, &mut buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in:\n{head}"));
    while buf.len() < head_end + len {
        read_more(conn, &mut buf).await;
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    (head, body)
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = conn.read(&mut chunk).await.expect("read");
    assert!(
        n > 0,
        "connection closed early; got:\n{}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

#[tokio::test]
async fn an_open_tunnel_holds_its_concurrency_permit_until_it_closes() {
    let (up, _handshake) = websocket_echo_upstream().await;
    let routes =
        "  - { name: ws, match: { path_prefix: /ws }, upstream: app, concurrency: { max: 1 } }";
    let proxy = Proxy::start(&config_for(up, routes)).await;
    let url = format!("ws://{}/ws", proxy.addr());
    let (mut ws, _) = within(
        "the websocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake through the proxy");

    // While the tunnel is open, the route's one permit is taken.
    let (status, headers, _) = common::get_within(&proxy.url("/ws/other")).await;
    assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["x-breakwater-reason"], "overloaded");

    ws.close(None).await.expect("send close");
    while within("the tunnel closing", ws.next()).await.is_some() {}
    drop(ws);
    common::eventually("the permit comes back once the tunnel closed", || async {
        let samples = common::scrape(&proxy.admin_url("/metrics")).await;
        let in_use = common::metric(
            &samples,
            "breakwater_concurrency_in_use",
            &[("route", "ws")],
        );
        (in_use == Some(0.0)).then_some(())
    })
    .await;
}
