//! The connection layer over real sockets: handshake and auth (no-auth, HS256 JWT), heartbeat,
//! precise errors for bad input without harm to other connections, health endpoints,
//! graceful shutdown; and the `topgun-server` binary's command-line contract.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as Ws;
use topgun_core::protocol::Message;

#[tokio::test]
async fn no_auth_mode_serves_both_paths() {
    let server = start(no_auth(), None).await;
    for path in ["/", "/ws"] {
        let mut c = connect(server.addr, path).await;
        send(&mut c, &auth("whatever")).await;
        assert!(matches!(recv(&mut c).await, Ok(Message::AuthAck(a)) if a.user_id.is_none()));
        send(&mut c, &ping(42)).await;
        expect_pong(&mut c, 42).await;
        send(&mut c, &Message::PartitionMapRequest(None)).await;
        assert!(
            matches!(recv(&mut c).await, Ok(Message::PartitionMap(m)) if m.partitions.len() == 271)
        );
    }
}

#[tokio::test]
async fn jwt_handshake_accepts_valid_tokens_and_refreshes() {
    let server = start(jwt(), None).await;
    let mut c = connect(server.addr, "/").await;
    assert!(
        matches!(recv(&mut c).await, Ok(Message::AuthRequired(_))),
        "AUTH_REQUIRED comes first"
    );
    send(&mut c, &ping(1)).await;
    expect_error(&mut c, 401).await;
    let good = token(
        &json!({"sub": "alice", "exp": now_secs() + 60, "roles": ["USER"]}),
        SECRET,
    );
    send(&mut c, &auth(&good)).await;
    assert!(
        matches!(recv(&mut c).await, Ok(Message::AuthAck(a)) if a.user_id.as_deref() == Some("alice"))
    );
    send(&mut c, &ping(2)).await;
    expect_pong(&mut c, 2).await;
    // Token refresh on the open connection.
    let fresh = token(&json!({"sub": "alice", "exp": now_secs() + 600}), SECRET);
    send(&mut c, &auth(&fresh)).await;
    assert!(matches!(recv(&mut c).await, Ok(Message::AuthAck(_))));
}

#[tokio::test]
async fn jwt_refusals_fail_and_close() {
    let server = start(jwt(), None).await;
    let cases = [
        (
            token(&json!({"sub": "a", "exp": now_secs() + 60}), "wrong-secret"),
            "signature",
        ),
        (
            token(&json!({"sub": "a", "exp": now_secs() - 3600}), SECRET),
            "expired",
        ),
        (token(&json!({"exp": now_secs() + 60}), SECRET), "sub"),
        ("garbage".to_owned(), "well-formed"),
    ];
    for (bad, why) in cases {
        let mut c = connect(server.addr, "/ws").await;
        assert!(matches!(recv(&mut c).await, Ok(Message::AuthRequired(_))));
        send(&mut c, &auth(&bad)).await;
        match recv(&mut c).await {
            Ok(Message::AuthFail(f)) => {
                assert!(
                    f.error.as_deref().unwrap_or_default().contains(why),
                    "{f:?}"
                );
            }
            other => panic!("expected AUTH_FAIL for {why}, got {other:?}"),
        }
        assert_eq!(
            recv(&mut c).await.err(),
            Some(Some(1008)),
            "closed after AUTH_FAIL"
        );
    }
}

#[tokio::test]
async fn the_auth_deadline_closes_silent_connections() {
    let server = start(jwt(), Some("auth_deadline_ms = 300\n")).await;
    let mut c = connect(server.addr, "/").await;
    assert!(matches!(recv(&mut c).await, Ok(Message::AuthRequired(_))));
    // Closed within the deadline plus one tick of the session clock.
    assert_eq!(recv(&mut c).await.err(), Some(Some(1008)));
}

#[tokio::test]
async fn bad_input_gets_precise_errors_and_harms_no_one() {
    let server = start(no_auth(), None).await;
    let mut bystander = connect(server.addr, "/").await;
    let mut c = connect(server.addr, "/").await;

    c.send(Ws::Binary(vec![0xc1, 0xff, 0x00].into()))
        .await
        .unwrap();
    expect_error(&mut c, 400).await;
    c.send(Ws::Text("{\"type\":\"PING\"}".into()))
        .await
        .unwrap();
    expect_error(&mut c, 400).await;
    // Wrong type in a field: the message names the type and the field.
    let mut w = topgun_core::protocol::Writer::new();
    w.map_header(2);
    w.str("type");
    w.str("QUERY_UNSUB");
    w.str("payload");
    w.map_header(1);
    w.str("queryId");
    w.uint(7);
    c.send(Ws::Binary(w.into_bytes().into())).await.unwrap();
    let text = expect_error(&mut c, 400).await;
    assert!(
        text.contains("QUERY_UNSUB") && text.contains("payload.queryId"),
        "{text}"
    );
    // Unknown type, depth bomb, oversize frame.
    let mut w = topgun_core::protocol::Writer::new();
    w.map_header(1);
    w.str("type");
    w.str("NO_SUCH_TYPE");
    c.send(Ws::Binary(w.into_bytes().into())).await.unwrap();
    expect_error(&mut c, 400).await;
    let mut bomb = vec![
        0x82, 0xa4, b't', b'y', b'p', b'e', 0xa4, b'P', b'I', b'N', b'G', 0xa1, b'x',
    ];
    bomb.extend(std::iter::repeat_n(0x91, 10_000));
    bomb.push(0xc0);
    c.send(Ws::Binary(bomb.into())).await.unwrap();
    assert!(expect_error(&mut c, 400).await.contains("nesting"));
    c.send(Ws::Binary(vec![0u8; 3 * 1024 * 1024].into()))
        .await
        .unwrap();
    expect_error(&mut c, 413).await;
    // A server-to-client type, then a data-plane request this layer does not serve yet.
    send(
        &mut c,
        &Message::Pong(topgun_core::protocol::messages::Pong {
            timestamp: 1,
            server_time: 1,
        }),
    )
    .await;
    expect_error(&mut c, 400).await;
    send(
        &mut c,
        &Message::Search(topgun_core::protocol::messages::Search {
            request_id: "s".into(),
            map_name: "todos".into(),
            query: "milk".into(),
            options: None,
        }),
    )
    .await;
    expect_error(&mut c, 501).await;

    // The same connection and its neighbour are still served.
    send(&mut c, &ping(5)).await;
    expect_pong(&mut c, 5).await;
    send(&mut bystander, &ping(6)).await;
    expect_pong(&mut bystander, 6).await;
}

#[tokio::test]
async fn health_endpoints_and_graceful_shutdown() {
    let mut server = start(no_auth(), None).await;
    let addr = server.addr;
    let mut c = connect(addr, "/").await;
    send(&mut c, &ping(1)).await;
    expect_pong(&mut c, 1).await;
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/health"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (health["state"].as_str(), health["connections"].as_u64()),
        (Some("ready"), Some(1))
    );
    c.send(Ws::Binary(vec![0xc1].into())).await.unwrap();
    expect_error(&mut c, 400).await;
    let (status, text) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    for line in [
        "topgun_connections 1",
        "topgun_messages_received_total{type=\"PING\"} 1",
        "topgun_errors_sent_total{code=\"400\"} 1",
        "topgun_frame_seconds_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for path in ["/health/live", "/health/ready", "/healthz"] {
        let (status, _) = tokio::task::spawn_blocking(move || http_get(addr, path))
            .await
            .unwrap();
        assert_eq!(status, 200, "{path}");
    }

    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(
        recv(&mut c).await.err(),
        Some(Some(1001)),
        "sessions are told the server is going away"
    );
    let result = tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .unwrap();
    assert!(
        result.unwrap().is_ok(),
        "run returns cleanly after draining"
    );
}

// ---- the binary -----------------------------------------------------------------------------

/// These tests are about the command line; the storage tests use their own directories.
fn memory_binary() -> Command {
    let mut cmd = binary();
    cmd.env("STORAGE_BACKEND", "memory");
    cmd
}

#[test]
fn the_binary_refuses_to_start_without_an_auth_decision() {
    let out = memory_binary().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOPGUN_NO_AUTH=1"));
    let out = memory_binary()
        .arg("--no-such-flag")
        .env("TOPGUN_NO_AUTH", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = memory_binary()
        .args(["--config", "/nonexistent.toml"])
        .env("TOPGUN_NO_AUTH", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent.toml"));
}

#[test]
fn the_binary_prints_its_port_serves_and_stops_on_sigterm() {
    let mut served = serve_binary(memory_binary().env("TOPGUN_NO_AUTH", "1"));
    assert_eq!(http_get(served.addr, "/health/ready").0, 200);
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = served.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0");
}

#[tokio::test]
async fn idle_connections_are_reaped_and_pinging_ones_kept() {
    let server = start(no_auth(), Some("idle_timeout_ms = 1500\n")).await;
    let mut idle = connect(server.addr, "/").await;
    let mut alive = connect(server.addr, "/").await;
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        send(&mut alive, &ping(i)).await;
        expect_pong(&mut alive, i).await;
    }
    // Three seconds without a PING: closed normally, with the reason.
    assert_eq!(recv(&mut idle).await.err(), Some(Some(1000)));
    send(&mut alive, &ping(7)).await;
    expect_pong(&mut alive, 7).await;
}

/// COMPAT §4.4: while SQL is off every `SQL_QUERY` — empty or unparsable too — is answered
/// at once, in request order, with the typed error the TS client's `client.sql()` fails
/// with, never an `ERROR` it cannot match to its request.
#[tokio::test]
async fn sql_queries_are_answered_at_once_with_the_typed_error_while_sql_is_off() {
    let server = start(no_auth(), None).await;
    let mut c = connect(server.addr, "/ws").await;
    for (at, sql) in ["SELECT * FROM todos", "", "this is not SQL"]
        .into_iter()
        .enumerate()
    {
        let query_id = format!("q{at}");
        send(
            &mut c,
            &Message::SqlQuery(topgun_core::protocol::messages::SqlQuery {
                sql: sql.into(),
                query_id: query_id.as_str().into(),
            }),
        )
        .await;
        send(&mut c, &ping(at as u64)).await;
        let Ok(Message::SqlQueryResp(resp)) = recv(&mut c).await else {
            panic!("SQL_QUERY_RESP first, before the PING's PONG");
        };
        assert_eq!(resp.query_id.as_str(), query_id);
        assert!(resp.columns.is_empty() && resp.rows.is_empty());
        assert_eq!(resp.code.as_deref(), Some("FEATURE_DISABLED"));
        let error = resp.error.unwrap_or_default().to_lowercase();
        assert!(error.contains("sql is not available"), "{error}");
        expect_pong(&mut c, at as u64).await;
    }
}
