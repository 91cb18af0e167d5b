//! The transport ceiling: a server that speaks just enough of the protocol for `write`
//! (and the handshake of every scenario) — it decodes each frame with the same codec and
//! WebSocket stack as `topgun-server`, and answers `AUTH` with `AUTH_ACK`, `PING` with
//! `PONG`, `OP_BATCH`/`CLIENT_OP` with `OP_ACK` — and does no CRDT, storage or fan-out
//! work. What `write` reaches against it is the most this machine's transport allows;
//! the server's figure is read as a fraction of it.

use std::future::Future;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use topgun_core::protocol::enums::WriteConcern;
use topgun_core::protocol::messages::{AuthAck, OpAck, Pong};
use topgun_core::protocol::{Limits, Message};

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(upgrade))
        .route("/ws", get(upgrade));
    // As topgun-server: small frames go out at once (no Nagle delay).
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    let max = Limits::default().max_frame_bytes;
    // The same transport settings as topgun-server, so that only the work differs.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4 * 1024)
        .on_upgrade(connection)
}

async fn connection(mut socket: WebSocket) {
    let limits = Limits::default();
    while let Some(Ok(frame)) = socket.recv().await {
        let WsMessage::Binary(bytes) = frame else {
            continue;
        };
        let Ok(message) = Message::decode(&bytes, &limits) else {
            continue;
        };
        if let Some(answer) = answer(message)
            && socket
                .send(WsMessage::Binary(answer.encode().into()))
                .await
                .is_err()
        {
            return;
        }
    }
}

/// The one reply a message gets, if any.
fn answer(message: Message) -> Option<Message> {
    let ack = |last: Option<&str>| {
        Message::OpAck(OpAck {
            last_id: last.unwrap_or("unknown").into(),
            achieved_level: Some(WriteConcern::Applied),
            results: None,
        })
    };
    match message {
        Message::Auth(_) => Some(Message::AuthAck(AuthAck {
            protocol_version: None,
            user_id: Some("ceiling".into()),
            device_id: None,
            device_token: None,
        })),
        Message::Ping(ping) => Some(Message::Pong(Pong {
            timestamp: ping.timestamp,
            server_time: crate::now_ms(),
        })),
        Message::OpBatch(batch) => Some(ack(batch.ops.last().and_then(|op| op.id.as_deref()))),
        Message::ClientOp(op) => Some(ack(op.id.as_deref())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::protocol::messages::{OpBatch, Ping};

    #[test]
    fn acknowledges_the_last_op_and_answers_ping() {
        let batch = Message::OpBatch(OpBatch {
            ops: Vec::new(),
            write_concern: None,
            timeout: None,
        });
        assert!(matches!(answer(batch), Some(Message::OpAck(a)) if a.last_id == "unknown"));
        let pong = answer(Message::Ping(Ping { timestamp: 7 }));
        assert!(matches!(pong, Some(Message::Pong(p)) if p.timestamp == 7));
        let other = Message::SyncInit(topgun_core::protocol::messages::SyncInit {
            map_name: "m".into(),
            last_sync_timestamp: None,
        });
        assert!(answer(other).is_none());
    }
}
