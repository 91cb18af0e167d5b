//! The transport ceiling: a server that speaks just enough of the protocol for `write` and
//! `fanout` (and the handshake of every scenario), with the same codec and WebSocket stack
//! as `topgun-server`, and no CRDT, storage, security or durability work:
//!
//! - `AUTH` gets `AUTH_ACK`, `PING` gets `PONG`, `OP_BATCH`/`CLIENT_OP` get `OP_ACK`;
//! - `SYNC_INIT` (answered by an empty `SYNC_RESP_ROOT`) and `QUERY_SUB` (an empty
//!   `QUERY_RESP`) subscribe the connection to the map's writes;
//! - each write's PUTs go to every other subscriber of its map as one `SERVER_EVENT` or
//!   `SERVER_BATCH_EVENT`, encoded once and shared, through a bounded queue per connection
//!   whose writer sends what has piled up in one socket write — the least a fan-out server
//!   does, and what `topgun-server` does too. A subscriber whose queue is full loses its
//!   subscription (and `fanout` counts the events it then misses as lost); `topgun-server`
//!   closes such a connection instead.
//!
//! What a scenario reaches against it is the most this machine's transport allows; the
//! server's figure is read as a fraction of it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use topgun_core::protocol::enums::{ServerEventType, WriteConcern};
use topgun_core::protocol::messages::{
    AuthAck, OpAck, Pong, QueryResp, ServerBatchEvent, ServerEvent, SyncRespRoot,
};
use topgun_core::protocol::{Limits, Message};
use topgun_core::{NodeId, Timestamp};

/// Frames a connection may have queued: `topgun-server`'s default `outbound_queue_len`.
const QUEUE_FRAMES: usize = 256;
/// Most frames one socket write carries, as in `topgun-server`.
const COALESCE_FRAMES: usize = 64;

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(upgrade))
        .route("/ws", get(upgrade))
        .with_state(Arc::new(Hub::default()));
    // As topgun-server: small frames go out at once (no Nagle delay).
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    let max = Limits::default().max_frame_bytes;
    // The same transport settings as topgun-server, so that only the work differs.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| connection(socket, hub))
}

/// A connection's outbound frames, encoded.
type Queue = mpsc::Sender<Bytes>;

/// The subscribers of each map: a connection's id and its outbound queue.
#[derive(Debug, Default)]
struct Hub {
    maps: Mutex<HashMap<String, Vec<(u64, Queue)>>>,
    /// Subscriptions held, so that writes with nobody listening (the `write` scenario)
    /// cost nothing here.
    held: AtomicUsize,
    next_id: AtomicU64,
}

impl Hub {
    fn maps(&self) -> MutexGuard<'_, HashMap<String, Vec<(u64, Queue)>>> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn subscribe(&self, map: &str, id: u64, queue: &Queue) {
        let mut maps = self.maps();
        let subscribers = maps.entry(map.to_owned()).or_default();
        if !subscribers.iter().any(|(s, _)| *s == id) {
            subscribers.push((id, queue.clone()));
            self.held.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn anyone_listens(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0
    }

    /// Whether `map` has a subscriber other than `writer`.
    fn others_listen(&self, map: &str, writer: u64) -> bool {
        self.maps()
            .get(map)
            .is_some_and(|subscribers| subscribers.iter().any(|(id, _)| *id != writer))
    }

    /// Queues `frame` for every subscriber of `map` but `writer`; drops those whose queue
    /// is full or gone.
    fn publish(&self, map: &str, writer: u64, frame: &Bytes) {
        let mut maps = self.maps();
        let Some(subscribers) = maps.get_mut(map) else {
            return;
        };
        let before = subscribers.len();
        subscribers.retain(|(id, queue)| *id == writer || queue.try_send(frame.clone()).is_ok());
        self.held
            .fetch_sub(before - subscribers.len(), Ordering::Relaxed);
    }

    fn forget(&self, id: u64) {
        let mut maps = self.maps();
        let mut dropped = 0;
        maps.retain(|_, subscribers| {
            let before = subscribers.len();
            subscribers.retain(|(s, _)| *s != id);
            dropped += before - subscribers.len();
            !subscribers.is_empty()
        });
        self.held.fetch_sub(dropped, Ordering::Relaxed);
    }
}

/// The next message a stream of WebSocket frames carries; `None` once it ends. Frames that
/// are not binary or do not decode are passed over.
async fn next_message<S>(frames: &mut S, limits: &Limits) -> Option<Message>
where
    S: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
{
    while let Some(Ok(frame)) = frames.next().await {
        if let WsMessage::Binary(bytes) = frame
            && let Ok(message) = Message::decode(&bytes, limits)
        {
            return Some(message);
        }
    }
    None
}

fn subscribes_to(message: &Message) -> Option<&str> {
    match message {
        Message::SyncInit(init) => Some(&init.map_name),
        Message::QuerySub(sub) => Some(&sub.map_name),
        _ => None,
    }
}

/// A connection answers in line, one task and no queue (the cheapest there is, which is
/// what `write` measures), until it subscribes to a map; then it becomes a [`subscriber`].
async fn connection(mut socket: WebSocket, hub: Arc<Hub>) {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let limits = Limits::default();
    while let Some(message) = next_message(&mut socket, &limits).await {
        if subscribes_to(&message).is_some() {
            return subscriber(socket, &hub, id, message).await;
        }
        fan_out(&hub, id, &message);
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

/// A subscribed connection: a writer task sends its queue, which events and answers share.
async fn subscriber(socket: WebSocket, hub: &Hub, id: u64, first: Message) {
    let (sink, mut stream) = socket.split();
    let (queue, outbound) = mpsc::channel(QUEUE_FRAMES);
    let writer = tokio::spawn(write_loop(sink, outbound));
    let limits = Limits::default();
    let mut next = Some(first);
    while let Some(message) = next {
        // Subscribed once its answer is queued, so that no event overtakes the answer.
        let subscribes = subscribes_to(&message).map(str::to_owned);
        fan_out(hub, id, &message);
        if let Some(answer) = answer(message)
            && queue.send(answer.encode().into()).await.is_err()
        {
            break;
        }
        if let Some(map) = subscribes {
            hub.subscribe(&map, id, &queue);
        }
        next = next_message(&mut stream, &limits).await;
    }
    hub.forget(id);
    drop(queue);
    let _ = writer.await;
}

/// Sends what is queued, everything that has piled up in one socket write.
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut outbound: mpsc::Receiver<Bytes>,
) {
    while let Some(first) = outbound.recv().await {
        let mut frames = vec![first];
        while frames.len() < COALESCE_FRAMES {
            match outbound.try_recv() {
                Ok(frame) => frames.push(frame),
                Err(_) => break,
            }
        }
        for frame in frames {
            if sink.feed(WsMessage::Binary(frame)).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Offers a write's PUTs, per map, to that map's other subscribers: one frame each map.
fn fan_out(hub: &Hub, writer: u64, message: &Message) {
    let ops = match message {
        _ if !hub.anyone_listens() => return,
        Message::OpBatch(batch) => batch.ops.as_slice(),
        Message::ClientOp(op) => std::slice::from_ref(op),
        _ => return,
    };
    let mut by_map: Vec<(&str, Vec<ServerEvent>)> = Vec::new();
    // Maps nobody else listens to: their writes are not encoded at all.
    let mut silent: Vec<&str> = Vec::new();
    for op in ops {
        let Some(record) = op.record.value() else {
            continue;
        };
        let map = op.map_name.as_str();
        if silent.contains(&map) {
            continue;
        }
        if !by_map.iter().any(|(m, _)| *m == map) && !hub.others_listen(map, writer) {
            silent.push(map);
            continue;
        }
        let event = ServerEvent {
            map_name: op.map_name.clone(),
            event_type: ServerEventType::Put,
            key: op.key.clone(),
            record: Some(record.clone()),
            or_record: None,
            or_tag: None,
            epoch: None,
        };
        match by_map.iter_mut().find(|(map, _)| *map == op.map_name) {
            Some((_, events)) => events.push(event),
            None => by_map.push((&op.map_name, vec![event])),
        }
    }
    for (map, mut events) in by_map {
        let message = if events.len() == 1 {
            Message::ServerEvent(events.remove(0))
        } else {
            Message::ServerBatchEvent(ServerBatchEvent { events })
        };
        hub.publish(map, writer, &message.encode().into());
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
        Message::SyncInit(init) => Some(Message::SyncRespRoot(SyncRespRoot {
            map_name: init.map_name,
            root_hash: 0,
            timestamp: Timestamp::new(crate::now_ms(), 0, ceiling_node()),
        })),
        Message::QuerySub(sub) => Some(Message::QueryResp(QueryResp {
            query_id: sub.query_id,
            results: Vec::new(),
            next_cursor: None,
            has_more: None,
            cursor_status: None,
            merkle_root_hash: None,
            error: None,
            code: None,
        })),
        _ => None,
    }
}

fn ceiling_node() -> NodeId {
    NodeId::new("ceiling").expect("a valid node id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::protocol::messages::{OpBatch, Ping};

    #[test]
    fn acknowledges_the_last_op_and_answers_ping_and_subscriptions() {
        let batch = Message::OpBatch(OpBatch {
            ops: Vec::new(),
            write_concern: None,
            timeout: None,
        });
        assert!(matches!(answer(batch), Some(Message::OpAck(a)) if a.last_id == "unknown"));
        let pong = answer(Message::Ping(Ping { timestamp: 7 }));
        assert!(matches!(pong, Some(Message::Pong(p)) if p.timestamp == 7));
        let sync = Message::SyncInit(topgun_core::protocol::messages::SyncInit {
            map_name: "m".into(),
            last_sync_timestamp: None,
        });
        assert!(matches!(answer(sync), Some(Message::SyncRespRoot(r)) if r.map_name == "m"));
        let other = Message::Pong(Pong {
            timestamp: 1,
            server_time: 2,
        });
        assert!(answer(other).is_none());
    }
}
