//! What a connection may cost before it authenticates, against a real server over real
//! sockets: the bytes it may send, how many such connections there may be in all and per
//! address, and how long one may stay silent. Legitimate clients are served throughout.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::{self, Message as Ws};
use topgun_core::protocol::Message;

/// A value of a `topgun_…` line of `/metrics`.
async fn metric(addr: SocketAddr, line_start: &'static str) -> u64 {
    let text = http_get_async(addr, "/metrics").await.1;
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .unwrap_or_else(|| panic!("no {line_start:?} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits (at most 5 s) for a metric to reach `want`.
async fn await_metric(addr: SocketAddr, line_start: &'static str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = metric(addr, line_start).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line_start}: {now}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WebSocket to `addr` from the loopback address `local` (127.0.0.0/8 is all loopback, so
/// one machine can play several clients' addresses).
async fn ws_from(local: &str, addr: SocketAddr) -> Result<Client, tungstenite::Error> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    let tcp = socket.connect(addr).await?;
    let url = format!("ws://{addr}/ws");
    let (client, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp)).await?;
    Ok(client)
}

/// A connection waiting to authenticate: connected, and told so.
async fn waiting(local: &str, addr: SocketAddr) -> Client {
    let mut c = ws_from(local, addr).await.unwrap();
    assert!(matches!(recv(&mut c).await, Ok(Message::AuthRequired(_))));
    c
}

/// The HTTP status a refused connection was answered with, and its body.
fn refusal(result: Result<Client, tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

fn login(user: &str) -> Message {
    auth(&token(
        &json!({"sub": user, "exp": now_secs() + 600}),
        SECRET,
    ))
}

async fn authenticate(c: &mut Client, user: &str) {
    send(c, &login(user)).await;
    assert!(matches!(recv(c).await, Ok(Message::AuthAck(_))));
}

/// Sends a `bytes`-long binary frame and returns the close code the server answers with. The
/// send runs beside the read: the server stops reading long before the frame is complete.
async fn close_code_after_sending(c: Client, bytes: usize) -> Option<u16> {
    let (mut sink, mut stream) = c.split();
    let writer = tokio::spawn(async move {
        let _ = sink.send(Ws::Binary(vec![7u8; bytes].into())).await;
    });
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Ws::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the server did not close the connection within 5 s");
    writer.abort();
    code
}

#[tokio::test]
async fn large_frames_before_auth_are_closed_with_1009_and_legitimate_clients_are_served() {
    let server = start(jwt(), Some("preauth_bytes_max = 8192\n")).await;
    let mut legit = connect(server.addr, "/ws").await;
    assert!(matches!(
        recv(&mut legit).await,
        Ok(Message::AuthRequired(_))
    ));
    // Sixteen connections each start a 1 MiB frame (half the frame bound) without `AUTH`.
    let mut closes = Vec::new();
    for _ in 0..16 {
        let c = waiting("127.0.0.1", server.addr).await;
        closes.push(tokio::spawn(close_code_after_sending(c, 1 << 20)));
    }
    // Meanwhile a client authenticates and is served.
    authenticate(&mut legit, "alice").await;
    send(&mut legit, &ping(1)).await;
    expect_pong(&mut legit, 1).await;
    for close in closes {
        assert_eq!(
            close.await.unwrap(),
            Some(1009),
            "close 1009 (message too big)"
        );
    }
    await_metric(
        server.addr,
        "topgun_preauth_refused_total{reason=\"bytes\"} ",
        16,
    )
    .await;
    // Only the connection that asks for `/metrics` waits now.
    await_metric(server.addr, "topgun_preauth_connections ", 1).await;
    // After `AUTH` the pre-auth allowance no longer applies: a 1 MiB frame is decoded (and,
    // being no message, answered 400 on a connection that stays open).
    send_raw(&mut legit, vec![0xc1; 1 << 20]).await;
    expect_error(&mut legit, 400).await;
    send(&mut legit, &ping(2)).await;
    expect_pong(&mut legit, 2).await;
}

async fn send_raw(c: &mut Client, bytes: Vec<u8>) {
    c.send(Ws::Binary(bytes.into())).await.unwrap();
}

#[tokio::test]
async fn connections_waiting_to_authenticate_are_capped_in_all_and_per_address() {
    let file = "preauth_connections_max = 4\npreauth_connections_per_ip_max = 2\n";
    let server = start(jwt(), Some(file)).await;
    let addr = server.addr;
    let mut first = waiting("127.0.0.1", addr).await;
    let _second = waiting("127.0.0.1", addr).await;
    let (status, body) = refusal(ws_from("127.0.0.1", addr).await);
    assert_eq!(status, 503);
    assert!(body.contains("from this address"), "{body}");
    // Other addresses still get in, up to the total.
    let _third = waiting("127.0.0.2", addr).await;
    let _fourth = waiting("127.0.0.2", addr).await;
    let (status, body) = refusal(ws_from("127.0.0.3", addr).await);
    assert_eq!(status, 503);
    assert!(body.contains("too many connections are waiting"), "{body}");
    // An authenticated connection no longer counts: its place goes to the next one.
    authenticate(&mut first, "alice").await;
    let mut fifth = waiting("127.0.0.1", addr).await;
    authenticate(&mut fifth, "bob").await;
    send(&mut first, &ping(1)).await;
    expect_pong(&mut first, 1).await;
    let refused = |reason| match reason {
        "connections" => "topgun_preauth_refused_total{reason=\"connections\"} ",
        _ => "topgun_preauth_refused_total{reason=\"connections_per_ip\"} ",
    };
    // `/metrics` is reached over a connection of its own, which counts while open: with
    // two places free again, it gets one.
    assert_eq!(metric(addr, refused("connections")).await, 1);
    assert_eq!(metric(addr, refused("connections_per_ip")).await, 1);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_auth_deadline_and_frees_its_place() {
    let file = "auth_deadline_ms = 300\npreauth_connections_max = 1\n";
    let server = start(jwt(), Some(file)).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // While it holds the only place, others are refused.
    let (status, _) = refusal(ws_from("127.0.0.1", server.addr).await);
    assert_eq!(status, 503);
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("a silent connection is closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    let mut c = waiting("127.0.0.1", server.addr).await;
    authenticate(&mut c, "alice").await;
    assert_eq!(
        metric(
            server.addr,
            "topgun_preauth_refused_total{reason=\"timeout\"} "
        )
        .await,
        1
    );
}

#[tokio::test]
async fn plain_http_requests_each_get_the_allowance_and_oversized_headers_are_refused() {
    let file = "preauth_bytes_max = 4096\nauth_deadline_ms = 300\n";
    let server = start(jwt(), Some(file)).await;
    // Keep-alive: ten requests of 2 KiB each on one connection, 20 KiB in all.
    let mut http = TcpStream::connect(server.addr).await.unwrap();
    let padding = "x".repeat(2000);
    for _ in 0..10 {
        let request = format!("GET /health/live HTTP/1.1\r\nHost: t\r\nX-Pad: {padding}\r\n\r\n");
        http.write_all(request.as_bytes()).await.unwrap();
        let mut response = [0u8; 256];
        let n = http.read(&mut response).await.unwrap();
        let head = String::from_utf8_lossy(&response[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // One request larger than the allowance is never read in full: the connection closes at
    // the request deadline.
    let mut big = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /health/live HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "x".repeat(8192)
    );
    let _ = big.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), big.read_to_end(&mut response))
        .await
        .expect("closed within the deadline");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&response).contains(" 200 "),
        "{response:?}"
    );
    assert_eq!(
        metric(
            server.addr,
            "topgun_preauth_refused_total{reason=\"bytes\"} "
        )
        .await,
        1
    );
}

#[tokio::test]
async fn without_auth_no_pre_auth_limit_applies() {
    let file = "preauth_connections_max = 1\npreauth_bytes_max = 4096\n";
    let server = start(no_auth(), Some(file)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(ws_from("127.0.0.1", server.addr).await.unwrap());
    }
    for (i, c) in (0u64..).zip(clients.iter_mut()) {
        send_raw(c, vec![0xc1; 64 * 1024]).await;
        expect_error(c, 400).await;
        send(c, &ping(i)).await;
        expect_pong(c, i).await;
    }
}
