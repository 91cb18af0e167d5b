//! What flows to a connection's socket writer, and how shards reach subscribers.
//!
//! Each connection has two bounded queues. Its own replies enter the reply queue in request
//! order (a reply computed by shards enters as a future the writer awaits in place), so
//! replies keep request order however many requests are in flight; a full reply queue makes
//! the reader wait. Events from other connections' writes enter the separate event queue
//! with `try_send`, so a client's own pending requests never take an event's place: a
//! connection whose event queue is full is *kicked* — closed so that it reconnects and
//! resyncs — rather than allowed to grow server memory or silently miss an event.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use topgun_core::protocol::Message;

use crate::access::{ConnAccess, project_message};
use crate::policy::{Action, Decision, Fields, Resource};
use crate::store::MapKind;

/// Identifies a connection for the lifetime of a server.
pub type ConnId = u64;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// One item of a connection's reply queue.
pub enum Outbound {
    /// A reply, encoded by the writer (boxed: most messages are far smaller than the largest).
    Message(Box<Message>),
    /// Replies still being computed; the writer waits for them before anything behind.
    Later(BoxFuture<'static, Vec<Message>>),
    /// Close the connection after everything before it.
    Close { code: u16, reason: &'static str },
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(m) => write!(f, "Message({})", m.type_name()),
            Self::Later(_) => f.write_str("Later"),
            Self::Close { code, reason } => write!(f, "Close({code}, {reason})"),
        }
    }
}

/// An encoded frame on its way to one connection or many: shared, and one pointer wide.
///
/// The width matters per connection, not per frame: tokio allocates a queue's first block
/// of 32 slots when the queue is made, so an idle connection's event queue costs 32 × 8
/// bytes with a `SharedFrame` where it cost 32 × 32 with a `Bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFrame(Arc<Bytes>);

impl SharedFrame {
    /// The frame's bytes, for the socket (sharing the buffer, not copying it).
    pub fn bytes(&self) -> Bytes {
        Bytes::clone(&self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SharedFrame {
    fn from(encoded: Vec<u8>) -> Self {
        Self(Arc::new(Bytes::from(encoded)))
    }
}

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// How shards reach a connection's event queue. Holds it weakly: a connection's lifetime
/// belongs to its reader, and the queue closes as soon as the reader is done.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    queue: mpsc::WeakSender<SharedFrame>,
    /// What every holder of the handle shares, in one allocation per connection.
    shared: Arc<HandleShared>,
}

#[derive(Debug)]
struct HandleShared {
    kicked: watch::Sender<bool>,
    /// Who the connection is now, for checks at delivery time.
    access: ConnAccess,
}

/// What happened to an event offered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: the connection has been told to close.
    Kicked,
    /// The connection is gone.
    Gone,
}

impl ConnHandle {
    /// A handle for a new connection without access restrictions, with the receiver that
    /// learns of a kick.
    pub fn new(queue: &mpsc::Sender<SharedFrame>) -> (Self, watch::Receiver<bool>) {
        Self::with_access(queue, ConnAccess::open())
    }

    /// A handle for a new connection whose requests and deliveries `access` checks.
    pub fn with_access(
        queue: &mpsc::Sender<SharedFrame>,
        access: ConnAccess,
    ) -> (Self, watch::Receiver<bool>) {
        let (kicked, on_kick) = watch::channel(false);
        let handle = Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            queue: queue.downgrade(),
            shared: Arc::new(HandleShared { kicked, access }),
        };
        (handle, on_kick)
    }

    /// Who the connection is now, for checks at use.
    pub fn access(&self) -> &ConnAccess {
        &self.shared.access
    }

    /// Queues a frame, waiting for room (for a stream the connection asked for, such as a
    /// journal replay, which must not be cut short by a full queue); false once the
    /// connection is gone.
    pub async fn send(&self, frame: SharedFrame) -> bool {
        match self.queue.upgrade() {
            Some(queue) => queue.send(frame).await.is_ok(),
            None => false,
        }
    }

    /// Offers a frame without waiting.
    pub fn offer(&self, frame: SharedFrame) -> Offer {
        let Some(queue) = self.queue.upgrade() else {
            return Offer::Gone;
        };
        match queue.try_send(frame) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.kicked.send_replace(true);
                Offer::Kicked
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }
}

/// The connections that receive `SERVER_EVENT`s of each map; one copy per shard, so that
/// fan-out needs no lock. Bounded by the per-connection map limit times connections.
#[derive(Debug, Default)]
pub struct Subscribers {
    lww: HashMap<String, Vec<ConnHandle>>,
    or: HashMap<String, Vec<ConnHandle>>,
}

/// What a fan-out did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub queued: usize,
    pub kicked: usize,
}

impl Delivery {
    /// Offers `frame` to `conn` and counts the outcome; false if the subscriber should be
    /// forgotten (gone, or kicked for not keeping up).
    pub fn offer(&mut self, conn: &ConnHandle, frame: SharedFrame) -> bool {
        match conn.offer(frame) {
            Offer::Queued => {
                self.queued += 1;
                true
            }
            Offer::Kicked => {
                self.kicked += 1;
                false
            }
            Offer::Gone => false,
        }
    }
}

impl Subscribers {
    fn table(&mut self, kind: MapKind) -> &mut HashMap<String, Vec<ConnHandle>> {
        match kind {
            MapKind::Lww => &mut self.lww,
            MapKind::Or => &mut self.or,
        }
    }

    pub fn subscribe(&mut self, kind: MapKind, map: &str, conn: ConnHandle) {
        let subs = self.table(kind).entry(map.to_owned()).or_default();
        if !subs.iter().any(|c| c.id == conn.id) {
            subs.push(conn);
        }
    }

    /// Drops every subscription of a connection.
    pub fn forget(&mut self, conn: ConnId) {
        for table in [&mut self.lww, &mut self.or] {
            table.retain(|_, subs| {
                subs.retain(|c| c.id != conn);
                !subs.is_empty()
            });
        }
    }

    /// Offers `event` to every subscriber of the map but `except` (the writer), as each may
    /// read it now: encoded once for those who see everything and once per distinct field
    /// limit; skipped for those not allowed to read the map (while they are not). Drops
    /// subscribers that are gone or were kicked.
    pub fn publish(
        &mut self,
        kind: MapKind,
        map: &str,
        except: ConnId,
        event: &Message,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let table = self.table(kind);
        let Some(subs) = table.get_mut(map) else {
            return delivery;
        };
        let mut frames = Frames::new(event);
        subs.retain(|conn| {
            if conn.id == except {
                return true;
            }
            let Some(frame) =
                frames.for_reader(conn.access().decide(Resource::Map, map, Action::Read))
            else {
                return true;
            };
            delivery.offer(conn, frame)
        });
        if subs.is_empty() {
            table.remove(map);
        }
        delivery
    }

    /// Whether anyone but `except` would receive an event of the map (so that events
    /// nobody reads are never encoded).
    pub fn has_subscribers(&self, kind: MapKind, map: &str, except: ConnId) -> bool {
        let table = match kind {
            MapKind::Lww => &self.lww,
            MapKind::Or => &self.or,
        };
        table
            .get(map)
            .is_some_and(|subs| subs.iter().any(|c| c.id != except))
    }
}

/// One message's encodings for its readers: the full one and one per field limit, each made
/// once ([`project_message`] limits map records and journal events).
#[derive(Debug)]
pub struct Frames<'a> {
    event: &'a Message,
    full: Option<SharedFrame>,
    limited: Vec<(Fields, SharedFrame)>,
}

impl<'a> Frames<'a> {
    pub fn new(event: &'a Message) -> Self {
        Self {
            event,
            full: None,
            limited: Vec::new(),
        }
    }

    /// The frame a reader with `decision` receives; `None` if it may not read.
    pub fn for_reader(&mut self, decision: Decision) -> Option<SharedFrame> {
        match decision {
            Decision::Deny => None,
            Decision::Allow(None) => Some(
                self.full
                    .get_or_insert_with(|| SharedFrame::from(self.event.encode()))
                    .clone(),
            ),
            Decision::Allow(Some(fields)) => {
                if let Some((_, frame)) = self.limited.iter().find(|(f, _)| *f == fields) {
                    return Some(frame.clone());
                }
                let mut limited = self.event.clone();
                project_message(&mut limited, &fields);
                let frame = SharedFrame::from(limited.encode());
                self.limited.push((fields, frame.clone()));
                Some(frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Message {
        Message::Ping(topgun_core::protocol::messages::Ping { timestamp: 1 })
    }

    fn frames(rx: &mut mpsc::Receiver<SharedFrame>) -> usize {
        std::iter::from_fn(|| rx.try_recv().ok()).count()
    }

    #[test]
    fn events_reach_subscribers_but_not_the_writer() {
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let (a, _) = ConnHandle::new(&tx_a);
        let (b, _) = ConnHandle::new(&tx_b);
        let mut subs = Subscribers::default();
        subs.subscribe(MapKind::Lww, "m", a.clone());
        subs.subscribe(MapKind::Lww, "m", a.clone());
        subs.subscribe(MapKind::Lww, "m", b.clone());
        let frame = event();
        let delivery = subs.publish(MapKind::Lww, "m", a.id, &frame);
        assert_eq!(
            delivery,
            Delivery {
                queued: 1,
                kicked: 0
            }
        );
        assert_eq!((frames(&mut rx_a), frames(&mut rx_b)), (0, 1));
        subs.publish(MapKind::Or, "m", 0, &frame);
        assert_eq!(frames(&mut rx_b), 0, "OR and LWW maps are separate");
        subs.forget(b.id);
        subs.publish(MapKind::Lww, "m", 0, &frame);
        assert_eq!((frames(&mut rx_a), frames(&mut rx_b)), (1, 0));
    }

    #[test]
    fn a_full_queue_kicks_and_a_closed_one_is_forgotten() {
        let (tx, _rx) = mpsc::channel(1);
        let (slow, on_kick) = ConnHandle::new(&tx);
        let mut subs = Subscribers::default();
        subs.subscribe(MapKind::Lww, "m", slow);
        let frame = event();
        assert_eq!(subs.publish(MapKind::Lww, "m", 0, &frame).queued, 1);
        assert_eq!(subs.publish(MapKind::Lww, "m", 0, &frame).kicked, 1);
        assert!(*on_kick.borrow());
        assert!(!subs.has_subscribers(MapKind::Lww, "m", 0));

        let (tx, rx) = mpsc::channel(1);
        let (gone, _) = ConnHandle::new(&tx);
        drop((tx, rx));
        assert_eq!(gone.offer(SharedFrame::from(b"x".to_vec())), Offer::Gone);
    }
}
