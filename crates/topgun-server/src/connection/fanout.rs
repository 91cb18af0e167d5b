//! What flows to a connection's socket writer, and how shards reach subscribers.
//!
//! Each connection has a bounded reply queue and an outbox. Its own replies enter the reply
//! queue in request order (a reply computed by shards enters as a future the writer awaits
//! in place), so replies keep request order however many requests are in flight; a full
//! reply queue makes the reader wait. Everything pushed to it by other connections' writes —
//! events, topic messages, live-query updates — enters its [`Outbox`] without waiting, so a
//! client's own pending requests never hold up delivery to others: a connection that does
//! not read what it is sent is closed as a slow consumer (it reconnects and resyncs) rather
//! than allowed to grow server memory or silently miss an event. What "does not read" means
//! — bytes and time, never the number of messages — is the outbox's rule.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use topgun_core::protocol::Message;

use crate::connection::ConnId;
use crate::connection::outbox::{Backlog, KickReason, Outbox, Pushed, SharedFrame, Updates};
use crate::data::forward::writer_origin;
use crate::data::peers::{MemberInterest, add_interest, end_interest};
use crate::security::access::{ConnAccess, project_message};
use crate::security::policy::{Action, Decision, Fields, Resource};
use crate::storage::store::MapKind;

/// Connection ids: from 1 up, offset per process by the clock (see [`first_conn_id`]).
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(0);

/// The first connection id of this process: the clock's microseconds modulo 2^38, plus one.
/// A member restarted under the same Raft id then does not hand out the ids its previous
/// life's connections had, which other members may still hold (locks, relays); ids stay
/// below 2^40, the bound of [`crate::data::forward::remote_writer`], for 3 · 2^38
/// connections.
fn first_conn_id() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros() % (1 << 38)).unwrap_or(0));
    micros + 1
}

/// A new connection id, never 0.
fn next_conn_id() -> u64 {
    let _ = NEXT_CONN_ID.compare_exchange(0, first_conn_id(), Ordering::Relaxed, Ordering::Relaxed);
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}

/// One item of a connection's reply queue.
pub enum Outbound {
    /// A reply, encoded by the writer (boxed: most messages are far smaller than the largest).
    Message(Box<Message>),
    /// Replies still being computed; the writer waits for them before anything behind.
    Later(BoxFuture<'static, Vec<Message>>),
    /// Close the connection after everything before it.
    Close { code: u16, reason: &'static str },
    /// A frame encoded once for many connections (a pushed `PARTITION_MAP`).
    Frame(bytes::Bytes),
    /// A WebSocket ping (cluster mode keeps idle secondary connections alive with them).
    Ping,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Message(m) => write!(f, "Message({})", m.type_name()),
            Self::Later(_) => f.write_str("Later"),
            Self::Close { code, reason } => write!(f, "Close({code}, {reason})"),
            Self::Frame(bytes) => write!(f, "Frame({} bytes)", bytes.len()),
            Self::Ping => f.write_str("Ping"),
        }
    }
}

/// How shards and services reach a connection's outbox.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    /// What every holder of the handle shares, in one allocation per connection.
    shared: Arc<HandleShared>,
}

#[derive(Debug)]
struct HandleShared {
    /// Who the connection is now, for checks at delivery time.
    access: ConnAccess,
    outbox: Arc<Outbox>,
}

/// What happened to an event offered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The connection has been (or had been) closed as a slow consumer.
    Kicked,
    /// The connection is gone.
    Gone,
}

impl From<Pushed> for Offer {
    fn from(pushed: Pushed) -> Self {
        match pushed {
            Pushed::Queued | Pushed::Woke => Self::Queued,
            Pushed::Kicked => Self::Kicked,
            Pushed::Gone => Self::Gone,
        }
    }
}

impl ConnHandle {
    /// A handle for a new connection whose requests and deliveries `access` checks, its
    /// outbox counted in `backlog`, with the receiver that learns of a slow-consumer close.
    pub fn open(backlog: &Arc<Backlog>, access: ConnAccess) -> (Self, watch::Receiver<bool>) {
        let id = next_conn_id();
        let (kicked, on_kick) = watch::channel(false);
        let outbox = Outbox::open(id, backlog, move |_| {
            kicked.send_replace(true);
        });
        let handle = Self {
            id,
            shared: Arc::new(HandleShared { access, outbox }),
        };
        (handle, on_kick)
    }

    /// A handle without access restrictions and with default budgets (tests).
    #[cfg(test)]
    pub fn new() -> (Self, watch::Receiver<bool>) {
        let backlog = Backlog::new(crate::connection::outbox::BacklogLimits::default());
        Self::open(&backlog, ConnAccess::open())
    }

    /// Who the connection is now, for checks at use.
    pub fn access(&self) -> &ConnAccess {
        &self.shared.access
    }

    /// The connection's outbox, for its writer.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.shared.outbox
    }

    /// Queues a frame, waiting for room (for a stream the connection asked for, such as a
    /// journal replay, which must not be cut short by a full outbox); false once the
    /// connection is gone.
    pub async fn send(&self, frame: SharedFrame) -> bool {
        self.shared.outbox.push_frame_waiting(frame).await == Pushed::Queued
    }

    /// Offers a frame without waiting.
    pub fn offer(&self, frame: SharedFrame) -> Offer {
        self.shared.outbox.push_frame(frame).into()
    }

    /// Offers live-query updates without waiting.
    pub fn offer_updates(&self, updates: Updates) -> Offer {
        self.shared.outbox.push_updates(updates).into()
    }

    /// Every frame queued so far, with updates encoded (tests).
    #[cfg(test)]
    pub fn take_frames(&self) -> Vec<SharedFrame> {
        crate::connection::outbox::encode(self.shared.outbox.take(usize::MAX))
            .into_iter()
            .map(|bytes| SharedFrame::from(bytes.to_vec()))
            .collect()
    }
}

/// Where a shard sends a map's events for the subscribers another cluster member has
/// (CLUSTER.md §9): the events of writes this member applied, encoded once, to be offered
/// there as if they were local.
pub trait RelaySink: Send + Sync + std::fmt::Debug {
    /// Sends one event frame of `kind`'s map `map` under the receiver's interest
    /// `generation`; `except` is the writer's connection on the receiving member (0: none).
    fn relay(&self, kind: MapKind, map: &str, generation: u64, except: ConnId, frame: &SharedFrame);
}

/// Another member's interest in a map's events.
pub type Relay = MemberInterest<dyn RelaySink>;

/// The connections that receive `SERVER_EVENT`s of each map, and the members that relay them
/// to theirs; one copy per shard, so that fan-out needs no lock. Bounded by the
/// per-connection map limit times connections, and the members' interests likewise.
#[derive(Debug, Default)]
pub struct Subscribers {
    lww: HashMap<String, Vec<ConnHandle>>,
    or: HashMap<String, Vec<ConnHandle>>,
    /// Other members' interests, by kind then map (looked up by `&str`: publishing
    /// allocates nothing).
    relays: [HashMap<String, Vec<Relay>>; 2],
}

fn kind_index(kind: MapKind) -> usize {
    match kind {
        MapKind::Lww => 0,
        MapKind::Or => 1,
    }
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

    /// Drops one subscription of a connection.
    pub fn unsubscribe(&mut self, kind: MapKind, map: &str, conn: ConnId) {
        let table = self.table(kind);
        if let Some(subs) = table.get_mut(map) {
            subs.retain(|c| c.id != conn);
            if subs.is_empty() {
                table.remove(map);
            }
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

    /// Relays the map's events to `relay`'s member from now on (replacing an older interest
    /// of the same member; an older generation than the one held changes nothing).
    pub fn add_relay(&mut self, kind: MapKind, map: &str, relay: Relay) {
        let relays = self.relays[kind_index(kind)]
            .entry(map.to_owned())
            .or_default();
        add_interest(relays, relay);
    }

    /// Ends `member`'s interest `generation` in the map (and any older one it still holds).
    pub fn remove_relay(&mut self, kind: MapKind, map: &str, member: u64, generation: u64) {
        let table = &mut self.relays[kind_index(kind)];
        if let Some(relays) = table.get_mut(map) {
            end_interest(relays, member, generation);
            if relays.is_empty() {
                table.remove(map);
            }
        }
    }

    /// Drops every interest of a member that left the cluster (or restarted).
    pub fn forget_member(&mut self, member: u64) {
        for table in &mut self.relays {
            table.retain(|_, relays| {
                relays.retain(|r| r.member != member);
                !relays.is_empty()
            });
        }
    }

    /// Offers `event` to every subscriber of the map but `except` (the writer), as each may
    /// read it now: encoded once for those who see everything and once per distinct field
    /// limit; skipped for those not allowed to read the map (while they are not). Drops
    /// subscribers that are gone or were kicked. Members interested in the map get the
    /// full frame, told which of their connections wrote it.
    pub fn publish(
        &mut self,
        kind: MapKind,
        map: &str,
        except: ConnId,
        event: &Message,
    ) -> Delivery {
        let mut frames = Frames::new(event);
        if let Some(relays) = self.relays[kind_index(kind)].get(map) {
            let frame = frames.full();
            for relay in relays {
                let theirs = match writer_origin(except) {
                    Some((member, conn)) if member == relay.member => conn,
                    _ => 0,
                };
                relay
                    .sink
                    .relay(kind, map, relay.generation, theirs, &frame);
            }
        }
        self.offer(kind, map, except, &mut frames)
    }

    /// Offers a frame another member relayed to every local subscriber of the map but
    /// `except`, like [`Subscribers::publish`]; decoded only for readers with a field limit.
    pub fn publish_relayed(
        &mut self,
        kind: MapKind,
        map: &str,
        except: ConnId,
        frame: SharedFrame,
    ) -> Delivery {
        let mut frames = Frames::encoded(frame);
        self.offer(kind, map, except, &mut frames)
    }

    fn offer(
        &mut self,
        kind: MapKind,
        map: &str,
        except: ConnId,
        frames: &mut Frames<'_>,
    ) -> Delivery {
        let mut delivery = Delivery::default();
        let table = self.table(kind);
        let Some(subs) = table.get_mut(map) else {
            return delivery;
        };
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
    /// nobody reads are never encoded): a local subscriber, or another member.
    pub fn has_subscribers(&self, kind: MapKind, map: &str, except: ConnId) -> bool {
        let table = match kind {
            MapKind::Lww => &self.lww,
            MapKind::Or => &self.or,
        };
        table
            .get(map)
            .is_some_and(|subs| subs.iter().any(|c| c.id != except))
            || self.relays[kind_index(kind)].contains_key(map)
    }

    /// Closes every local subscriber of the map as a slow consumer for `reason` (they
    /// missed an event and must resync); returns how many.
    pub fn kick_all(&mut self, kind: MapKind, map: &str, reason: KickReason) -> usize {
        let subs = self.table(kind).remove(map).unwrap_or_default();
        for conn in &subs {
            conn.outbox().kick(reason);
        }
        subs.len()
    }
}

/// One message's encodings for its readers: the full one and one per field limit, each made
/// once ([`project_message`] limits map records and journal events).
#[derive(Debug)]
pub struct Frames<'a> {
    /// The message, or `None` until a relayed frame has to be decoded for a field limit.
    event: Option<std::borrow::Cow<'a, Message>>,
    full: Option<SharedFrame>,
    limited: Vec<(Fields, SharedFrame)>,
}

impl<'a> Frames<'a> {
    pub fn new(event: &'a Message) -> Self {
        Self {
            event: Some(std::borrow::Cow::Borrowed(event)),
            full: None,
            limited: Vec::new(),
        }
    }

    /// The encodings of a message that arrived encoded.
    pub fn encoded(full: SharedFrame) -> Self {
        Self {
            event: None,
            full: Some(full),
            limited: Vec::new(),
        }
    }

    /// The full frame, encoded at the first call.
    pub fn full(&mut self) -> SharedFrame {
        let event = &self.event;
        self.full
            .get_or_insert_with(|| {
                let event = event.as_deref().expect("a message or its frame");
                SharedFrame::from(event.encode())
            })
            .clone()
    }

    /// The message, decoded from the full frame if it came encoded; `None` if it does not
    /// decode (a member relayed something this one cannot read).
    fn message(&mut self) -> Option<&Message> {
        if self.event.is_none() {
            let full = self.full.as_ref()?;
            // Encoded by a member (authenticated) from a message it accepted: only its size
            // is beyond a client frame's bounds, as a batch of events may be.
            let limits = topgun_core::protocol::msgpack::Limits {
                max_frame_bytes: usize::MAX,
                max_str_bytes: usize::MAX,
                ..Default::default()
            };
            let decoded = Message::decode(&full.bytes(), &limits).ok()?;
            self.event = Some(std::borrow::Cow::Owned(decoded));
        }
        self.event.as_deref()
    }

    /// The frame a reader with `decision` receives; `None` if it may not read.
    pub fn for_reader(&mut self, decision: Decision) -> Option<SharedFrame> {
        match decision {
            Decision::Deny => None,
            Decision::Allow(None) => Some(self.full()),
            Decision::Allow(Some(fields)) => {
                if let Some((_, frame)) = self.limited.iter().find(|(f, _)| *f == fields) {
                    return Some(frame.clone());
                }
                let mut limited = self.message()?.clone();
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

    fn frames(conn: &ConnHandle) -> usize {
        conn.take_frames().len()
    }

    #[test]
    fn events_reach_subscribers_but_not_the_writer() {
        let (a, _) = ConnHandle::new();
        let (b, _) = ConnHandle::new();
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
        assert_eq!((frames(&a), frames(&b)), (0, 1));
        subs.publish(MapKind::Or, "m", 0, &frame);
        assert_eq!(frames(&b), 0, "OR and LWW maps are separate");
        subs.forget(b.id);
        subs.publish(MapKind::Lww, "m", 0, &frame);
        assert_eq!((frames(&a), frames(&b)), (1, 0));
    }

    /// A member's link, as a shard sees it: what it relayed, under which generation,
    /// naming which writer.
    #[derive(Debug, Default)]
    struct Link(std::sync::Mutex<Vec<(String, u64, ConnId)>>);

    impl RelaySink for Link {
        fn relay(&self, _: MapKind, map: &str, generation: u64, except: ConnId, _: &SharedFrame) {
            self.0
                .lock()
                .unwrap()
                .push((map.to_owned(), generation, except));
        }
    }

    #[test]
    fn members_interested_in_a_map_get_its_events_naming_their_own_writer() {
        let link = Arc::new(Link::default());
        let relay = |member, generation| Relay {
            member,
            generation,
            sink: link.clone(),
        };
        let mut subs = Subscribers::default();
        assert!(!subs.has_subscribers(MapKind::Lww, "m", 0));
        subs.add_relay(MapKind::Lww, "m", relay(2, 5));
        assert!(
            subs.has_subscribers(MapKind::Lww, "m", 0),
            "a member listens"
        );
        let frame = event();
        let theirs = crate::data::forward::remote_writer(2, 7);
        subs.publish(MapKind::Lww, "m", theirs, &frame);
        subs.publish(
            MapKind::Lww,
            "m",
            crate::data::forward::remote_writer(3, 7),
            &frame,
        );
        subs.publish(MapKind::Or, "m", 0, &frame);
        subs.add_relay(MapKind::Lww, "m", relay(2, 4));
        subs.remove_relay(MapKind::Lww, "m", 2, 4);
        subs.publish(MapKind::Lww, "m", 9, &frame);
        assert_eq!(
            *link.0.lock().unwrap(),
            [("m".into(), 5, 7), ("m".into(), 5, 0), ("m".into(), 5, 0)],
            "its own connection named; an older interest neither replaces nor ends it"
        );
        subs.remove_relay(MapKind::Lww, "m", 2, 5);
        assert!(!subs.has_subscribers(MapKind::Lww, "m", 0));
        subs.add_relay(MapKind::Or, "o", relay(3, 1));
        subs.forget_member(3);
        assert!(!subs.has_subscribers(MapKind::Or, "o", 0));
    }

    #[test]
    fn a_kicked_subscriber_and_a_closed_one_are_forgotten() {
        let (slow, on_kick) = ConnHandle::new();
        let mut subs = Subscribers::default();
        subs.subscribe(MapKind::Lww, "m", slow.clone());
        let frame = event();
        assert_eq!(subs.publish(MapKind::Lww, "m", 0, &frame).queued, 1);
        slow.outbox()
            .kick(crate::connection::outbox::KickReason::WriteTimeout);
        assert!(*on_kick.borrow());
        assert_eq!(subs.publish(MapKind::Lww, "m", 0, &frame).kicked, 1);
        assert!(!subs.has_subscribers(MapKind::Lww, "m", 0));

        let (gone, _) = ConnHandle::new();
        gone.outbox().close();
        assert_eq!(gone.offer(SharedFrame::from(b"x".to_vec())), Offer::Gone);
    }
}
