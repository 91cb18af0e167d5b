//! A connection's outbox: everything pushed to it that is not the reply to one of its own
//! requests — map events, topic messages, lock grants, counter updates, journal events and
//! live-query results — waiting for the connection's socket writer.
//!
//! **Bounded by bytes, not by messages.** One client write can rightly produce thousands of
//! updates for a subscriber (a TS client back online sends its queued edits as one batch of
//! up to 8,192 ops); that is not a reason to close it. A connection is closed as a *slow
//! consumer* only when what it has not read passes its byte budget, when the whole server's
//! unread bytes pass theirs and it holds the most, when one socket write to it does not
//! complete within the write timeout (the writer's side, `server.rs`), or when the query
//! service could not keep its live queries current (`query/service.rs`). An item is always taken
//! into an empty outbox, however large: only what waits behind unread output counts. Each
//! close is counted by reason and logged with the connection and its user; the client
//! reconnects and resyncs.
//!
//! **Live-query updates coalesce.** A view's changes for one write (or one group commit) are
//! one shared batch, pushed to each subscriber as one item, so the query service's work per
//! subscriber does not grow with the batch. The connection's writer encodes them, and merges
//! what it takes in one go: a key changed again before its subscriber read the first change
//! is told once, with its latest state (an `ENTER` then a `LEAVE` is told not at all). A
//! subscriber that falls behind thus gets fewer, newer updates, and the frames are encoded on
//! the connection's own task rather than by the query service.
//!
//! **Server-wide bound.** The memory held for unread output counts against one budget
//! ([`Backlog`]): what is shared (a frame or a batch of changes that 500 subscribers hold)
//! counts once, from its first push until it is freed ([`ChargeOnce`]), and each queued item
//! adds its own small cost. Past the budget, the connection holding the most unread bytes is
//! closed, then the next, until the total is back under it: the memory held stays within the
//! budget plus one push.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use axum::body::Bytes;
use tokio::sync::Notify;
use topgun_core::Value;
use topgun_core::live_query::Change;
use topgun_core::protocol::enums::ChangeType;

use crate::connection::ConnId;

/// Why a connection was closed as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// Its unread output passed its own budget.
    ConnectionBacklog,
    /// The server's unread output passed its budget and this connection held the most.
    ServerBacklog,
    /// Its socket took nothing for the write timeout.
    WriteTimeout,
    /// It holds a live query of a map whose changes the query service could not keep up
    /// with: the query missed a change and must be subscribed again.
    QueryLag,
    /// It receives a map's events and some that another cluster member relayed were lost
    /// on the way (a broken or full link): it must resync.
    RelayGap,
}

impl KickReason {
    pub const ALL: [Self; 5] = [
        Self::ConnectionBacklog,
        Self::ServerBacklog,
        Self::WriteTimeout,
        Self::QueryLag,
        Self::RelayGap,
    ];

    /// The label in `/metrics` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionBacklog => "connection_backlog",
            Self::ServerBacklog => "server_backlog",
            Self::WriteTimeout => "write_timeout",
            Self::QueryLag => "query_lag",
            Self::RelayGap => "relay_gap",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::ConnectionBacklog => 0,
            Self::ServerBacklog => 1,
            Self::WriteTimeout => 2,
            Self::QueryLag => 3,
            Self::RelayGap => 4,
        }
    }
}

/// The budgets for unread output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimits {
    /// Unread bytes one connection may hold (`connection_backlog_bytes_max`).
    pub connection_bytes: usize,
    /// Unread bytes all connections together may hold (`server_backlog_bytes_max`).
    pub server_bytes: usize,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        Self {
            connection_bytes: 16 << 20,
            server_bytes: 512 << 20,
        }
    }
}

/// The server-wide account of unread output, and the slow-consumer closes by reason.
#[derive(Debug)]
pub struct Backlog {
    limits: BacklogLimits,
    used: AtomicUsize,
    kicks: [AtomicU64; 5],
    /// Every open connection's outbox, to find the one holding the most.
    outboxes: Mutex<HashMap<ConnId, Weak<Outbox>>>,
}

impl Backlog {
    pub fn new(limits: BacklogLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            used: AtomicUsize::new(0),
            kicks: Default::default(),
            outboxes: Mutex::default(),
        })
    }

    /// Unread bytes held for all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Slow-consumer closes for `reason` so far.
    pub fn kicks(&self, reason: KickReason) -> u64 {
        self.kicks[reason.index()].load(Ordering::Relaxed)
    }

    fn outboxes(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Weak<Outbox>>> {
        self.outboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the connections holding the most until the total is within the budget.
    fn shed(&self) {
        while self.used() > self.limits.server_bytes {
            let largest = self
                .outboxes()
                .values()
                .filter_map(Weak::upgrade)
                .max_by_key(|o| o.bytes.load(Ordering::Relaxed));
            match largest {
                Some(outbox) if outbox.bytes.load(Ordering::Relaxed) > 0 => {
                    outbox.kick(KickReason::ServerBacklog);
                }
                _ => return,
            }
        }
    }
}

/// Charges a shared allocation (a frame, a batch of changes) to the server's backlog once,
/// however many outboxes hold it, and releases the charge when it is freed: the server-wide
/// total is then the memory really held for unread output, not that memory once per
/// reader (500 subscribers of one event hold one copy of it).
#[derive(Debug, Default)]
pub struct ChargeOnce(OnceLock<(Arc<Backlog>, usize)>);

impl ChargeOnce {
    pub fn charge(&self, backlog: &Arc<Backlog>, bytes: usize) {
        self.0.get_or_init(|| {
            backlog.used.fetch_add(bytes, Ordering::Relaxed);
            (Arc::clone(backlog), bytes)
        });
    }
}

impl Drop for ChargeOnce {
    fn drop(&mut self) {
        if let Some((backlog, bytes)) = self.0.get() {
            backlog.used.fetch_sub(*bytes, Ordering::Relaxed);
        }
    }
}

/// What one queued item costs besides what it shares: its slot, its pointer, its share of
/// the queue's bookkeeping.
const ITEM_BYTES: usize = 32;

/// Changes of one view from one step (a write or a group commit), shared by every
/// subscription of the view.
#[derive(Debug)]
pub struct ChangeBatch {
    pub changes: Vec<Change>,
    /// About what their frames take, without the query id.
    bytes: usize,
    charge: ChargeOnce,
}

impl PartialEq for ChangeBatch {
    fn eq(&self, other: &Self) -> bool {
        self.changes == other.changes
    }
}

impl ChangeBatch {
    pub fn new(changes: Vec<Change>) -> Self {
        let bytes = changes.iter().map(change_bytes).sum();
        Self {
            changes,
            bytes,
            charge: ChargeOnce::default(),
        }
    }
}

/// Live-query updates waiting to be told: `query_id`'s share of a view's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Updates {
    pub query_id: Arc<str>,
    pub batch: Arc<ChangeBatch>,
}

impl Updates {
    /// What the connection will write.
    fn bytes(&self) -> usize {
        self.batch.bytes + self.batch.changes.len() * self.query_id.len()
    }
}

impl Outgoing {
    /// What the connection will write for it, and what it costs the server beyond what it
    /// shares with other outboxes.
    fn sizes(&self) -> (usize, usize) {
        match self {
            Self::Frame(frame) => (frame.len(), ITEM_BYTES),
            Self::Updates(updates) => (updates.bytes(), ITEM_BYTES + updates.query_id.len()),
        }
    }

    /// Charges what it shares to `backlog`, once.
    fn charge_shared(&self, backlog: &Arc<Backlog>) {
        match self {
            Self::Frame(frame) => frame.charge(backlog),
            Self::Updates(updates) => updates.batch.charge.charge(backlog, updates.batch.bytes),
        }
    }
}

/// What the writer takes out.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Frame(SharedFrame),
    Updates(Updates),
}

/// What happened to something pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued into an empty outbox (the writer is woken); [`Outbox::push_frame`] and
    /// [`Outbox::push_updates`] report it as `Queued`.
    Woke,
    /// The connection was (or had been) closed as a slow consumer.
    Kicked,
    /// The connection is gone.
    Gone,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outgoing>,
    kicked: Option<KickReason>,
    closed: bool,
}

/// One connection's outbox; see the module docs.
pub struct Outbox {
    id: ConnId,
    state: Mutex<State>,
    /// Unread bytes (mirrors the state, for the server-wide scan without locking).
    bytes: AtomicUsize,
    /// What this outbox alone charges the server: its items, not what they share.
    own: AtomicUsize,
    /// Wakes the writer: something to send, or a kick.
    ready: Notify,
    /// Wakes a sender waiting for room.
    room: Notify,
    backlog: Arc<Backlog>,
    /// Told once, on a kick (the reader stops reading).
    on_kick: Box<dyn Fn(KickReason) + Send + Sync>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("id", &self.id)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// A connection's outbox, registered with the server's backlog; `on_kick` runs once if
    /// the connection is closed as a slow consumer.
    pub fn open(
        id: ConnId,
        backlog: &Arc<Backlog>,
        on_kick: impl Fn(KickReason) + Send + Sync + 'static,
    ) -> Arc<Self> {
        let outbox = Arc::new(Self {
            id,
            state: Mutex::default(),
            bytes: AtomicUsize::new(0),
            own: AtomicUsize::new(0),
            ready: Notify::new(),
            room: Notify::new(),
            backlog: Arc::clone(backlog),
            on_kick: Box::new(on_kick),
        });
        backlog.outboxes().insert(id, Arc::downgrade(&outbox));
        outbox
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Unread bytes.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn kicked(&self) -> Option<KickReason> {
        self.state().kicked
    }

    /// Queues a frame.
    pub fn push_frame(&self, frame: SharedFrame) -> Pushed {
        let pushed = self.push(Outgoing::Frame(frame));
        self.after_push(pushed)
    }

    /// Queues live-query updates.
    pub fn push_updates(&self, updates: Updates) -> Pushed {
        let pushed = self.push(Outgoing::Updates(updates));
        self.after_push(pushed)
    }

    /// Queues `item` unless the connection is gone or closed, charging its bytes; closes the
    /// connection if its own budget is passed. (Byte counts change only under the state's
    /// lock, so a kick or a take never sees them half done.)
    fn push(&self, item: Outgoing) -> Pushed {
        let (size, server) = item.sizes();
        let mut state = self.state();
        if state.closed {
            return Pushed::Gone;
        }
        if state.kicked.is_some() {
            return Pushed::Kicked;
        }
        // An item is always taken into an empty outbox, however large (a `QUERY_RESP` of a
        // wide window, a batch of large events): only what waits behind unread output counts
        // against the budget, or one legitimate answer would close a reader that keeps up.
        let held = self.bytes();
        if held > 0 && held + size > self.backlog.limits.connection_bytes {
            self.kick_locked(&mut state, KickReason::ConnectionBacklog);
            return Pushed::Kicked;
        }
        let was_empty = state.items.is_empty();
        item.charge_shared(&self.backlog);
        state.items.push_back(item);
        self.charge(size, server);
        if was_empty {
            Pushed::Woke
        } else {
            Pushed::Queued
        }
    }

    /// Counts `bytes` against the connection's budget and `server` (what the item does not
    /// share) against the server's.
    fn charge(&self, bytes: usize, server: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.own.fetch_add(server, Ordering::Relaxed);
        self.backlog.used.fetch_add(server, Ordering::Relaxed);
    }

    fn after_push(&self, pushed: Pushed) -> Pushed {
        if pushed == Pushed::Woke {
            // Only the first item into an empty outbox wakes the writer: it takes everything
            // there at once (and wakes itself again if one take was not enough), so under
            // fan-out load a push costs a lock and a queue slot, not a task wake-up.
            self.ready.notify_one();
        } else if pushed != Pushed::Queued {
            return pushed;
        }
        if self.backlog.used() > self.backlog.limits.server_bytes {
            self.backlog.shed();
            if self.kicked().is_some() {
                return Pushed::Kicked;
            }
        }
        Pushed::Queued
    }

    fn release(&self, bytes: usize, server: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.own.fetch_sub(server, Ordering::Relaxed);
        self.backlog.used.fetch_sub(server, Ordering::Relaxed);
    }

    /// Queues a frame once there is room (at most half the connection's budget used), for a
    /// stream the connection asked for (a journal replay) that must not be cut short by a
    /// full outbox; `Gone` or `Kicked` if the connection ends meanwhile.
    pub async fn push_frame_waiting(&self, frame: SharedFrame) -> Pushed {
        loop {
            let room = self.room.notified();
            {
                let state = self.state();
                if state.closed {
                    return Pushed::Gone;
                }
                if state.kicked.is_some() {
                    return Pushed::Kicked;
                }
            }
            let held = self.bytes();
            if held == 0 || held + frame.len() <= self.backlog.limits.connection_bytes / 2 {
                return self.push_frame(frame);
            }
            room.await;
        }
    }

    /// Closes the connection as a slow consumer (once): drops what it had not read, counts
    /// the reason, tells the connection, and wakes its writer.
    pub fn kick(&self, reason: KickReason) {
        let mut state = self.state();
        self.kick_locked(&mut state, reason);
    }

    fn kick_locked(&self, state: &mut State, reason: KickReason) {
        if state.kicked.is_some() || state.closed {
            return;
        }
        state.kicked = Some(reason);
        self.clear(state);
        self.backlog.kicks[reason.index()].fetch_add(1, Ordering::Relaxed);
        (self.on_kick)(reason);
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Drops everything queued and frees its bytes.
    fn clear(&self, state: &mut State) {
        state.items.clear();
        let held = self.bytes.load(Ordering::Relaxed);
        let own = self.own.load(Ordering::Relaxed);
        self.release(held, own);
    }

    /// Takes what is queued, up to about `max_bytes` (always one item if there is one).
    pub fn take(&self, max_bytes: usize) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let (mut taken, mut own) = (0, 0);
        let mut state = self.state();
        while taken < max_bytes {
            let Some(item) = state.items.pop_front() else {
                break;
            };
            let (size, server) = item.sizes();
            (taken, own) = (taken + size, own + server);
            out.push(item);
        }
        if !state.items.is_empty() {
            // More than one take's worth: the writer comes back at once.
            self.ready.notify_one();
        } else if state.items.capacity() > 1024 {
            // A burst grew the queue; an idle connection should not keep that much.
            state.items = VecDeque::new();
        }
        self.release(taken, own);
        drop(state);
        if taken > 0 {
            self.room.notify_waiters();
        }
        out
    }

    /// Resolves when something may be there to take (or the connection was kicked).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The connection ended: nothing more is queued, and what was is freed.
    pub fn close(&self) {
        {
            let mut state = self.state();
            state.closed = true;
            self.clear(&mut state);
        }
        self.backlog.outboxes().remove(&self.id);
        self.room.notify_waiters();
    }
}

/// The frames of what the writer took: frames as they are, updates merged and encoded. A
/// key of a query changed more than once in a run of updates is told once, with its latest
/// state, where its first change was; a frame ends the run (a `QUERY_RESP` is never crossed).
pub fn encode(items: Vec<Outgoing>) -> Vec<axum::body::Bytes> {
    let mut out = Vec::with_capacity(items.len());
    let mut run: Vec<Outgoing> = Vec::new();
    for item in items {
        match item {
            Outgoing::Frame(frame) => {
                encode_run(&mut run, &mut out);
                out.push(frame.bytes());
            }
            updates @ Outgoing::Updates(_) => run.push(updates),
        }
    }
    encode_run(&mut run, &mut out);
    out
}

/// Merges and encodes a run of updates (emptying it).
fn encode_run(run: &mut Vec<Outgoing>, out: &mut Vec<axum::body::Bytes>) {
    // (query, key) → position in `told`; `told` holds (query, merged type, latest change).
    let mut at: HashMap<(&str, &str), usize> = HashMap::new();
    let mut told: Vec<Option<(&str, ChangeType, &Change)>> = Vec::new();
    for item in run.iter() {
        let Outgoing::Updates(updates) = item else {
            continue;
        };
        for change in &updates.batch.changes {
            let slot = (&*updates.query_id, change.key.as_str());
            let Some(&i) = at.get(&slot) else {
                at.insert(slot, told.len());
                told.push(Some((&updates.query_id, change.change, change)));
                continue;
            };
            told[i] = match told[i] {
                Some((query, pending, _)) => {
                    merge(pending, change.change).map(|merged| (query, merged, change))
                }
                // Entered and left unseen; a new entry is news again.
                None => Some((&updates.query_id, change.change, change)),
            };
        }
    }
    for (query, change_type, change) in told.into_iter().flatten() {
        out.push(encode_update(query, change_type, change).into());
    }
    run.clear();
}

/// A `QUERY_UPDATE`, encoded straight from the change (building the message would clone its
/// value): `{type, payload: {queryId, key, value, changeType}}`.
pub fn encode_update(query_id: &str, change_type: ChangeType, change: &Change) -> Vec<u8> {
    use topgun_core::protocol::{Wire, Writer};
    let mut w = Writer::with_capacity(change_bytes(change) + query_id.len());
    w.map_header(2);
    w.str("type");
    w.str("QUERY_UPDATE");
    w.str("payload");
    w.map_header(4);
    w.str("queryId");
    w.str(query_id);
    w.str("key");
    w.str(&change.key);
    w.str("value");
    if change_type == ChangeType::Leave {
        Value::Nil.encode(&mut w);
    } else {
        change.value.encode(&mut w);
    }
    w.str("changeType");
    w.str(change_type.as_str());
    w.into_bytes()
}

/// An update that is still unread, followed by another of the same query and key: the one
/// change the subscriber is owed instead (`None`: nothing, it entered and left unseen).
fn merge(pending: ChangeType, next: ChangeType) -> Option<ChangeType> {
    use ChangeType::{Enter, Leave, Update};
    match (pending, next) {
        (Enter, Leave) => None,
        (Enter, _) => Some(Enter),
        // The subscriber still holds the row it was not yet told had left.
        (Leave, Enter | Update) => Some(Update),
        (Update | Leave, next) => Some(next),
    }
}

/// About the bytes a change's frame takes, less its query id: `{type, payload: {queryId,
/// key, value, type}}` and MsgPack headers.
fn change_bytes(change: &Change) -> usize {
    64 + change.key.len() + value_bytes(&change.value)
}

/// About the bytes a value's MsgPack encoding takes (exact for strings and binaries, close
/// for numbers and containers), without encoding it.
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Nil | Value::Bool(_) => 1,
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => 9,
        Value::Str(s) => 5 + s.len(),
        Value::Bin(b) => 5 + b.len(),
        Value::Time(_) => 15,
        Value::Array(items) => 5 + items.iter().map(value_bytes).sum::<usize>(),
        Value::Map(map) => {
            5 + map
                .iter()
                .map(|(k, v)| 5 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
    }
}

/// An encoded frame on its way to one connection or many: shared, and one pointer wide.
///
/// The width matters per connection, not per frame: a connection's queues hold many of
/// them. The frame's bytes count once against the server's backlog budget however many
/// outboxes hold it ([`ChargeOnce`]).
#[derive(Debug, Clone)]
pub struct SharedFrame(Arc<FrameInner>);

#[derive(Debug)]
struct FrameInner {
    bytes: Bytes,
    charge: ChargeOnce,
}

impl PartialEq for SharedFrame {
    fn eq(&self, other: &Self) -> bool {
        self.0.bytes == other.0.bytes
    }
}

impl Eq for SharedFrame {}

impl SharedFrame {
    /// The frame's bytes, for the socket (sharing the buffer, not copying it).
    pub fn bytes(&self) -> Bytes {
        Bytes::clone(&self.0.bytes)
    }

    pub fn len(&self) -> usize {
        self.0.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }

    /// Counts the frame against `backlog` (the first time only; released when it is freed).
    pub fn charge(&self, backlog: &Arc<Backlog>) {
        self.0.charge.charge(backlog, self.len());
    }
}

impl From<Vec<u8>> for SharedFrame {
    fn from(encoded: Vec<u8>) -> Self {
        Self(Arc::new(FrameInner {
            bytes: Bytes::from(encoded),
            charge: ChargeOnce::default(),
        }))
    }
}

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(limits: BacklogLimits) -> (Arc<Backlog>, Arc<Outbox>, Arc<Mutex<Vec<KickReason>>>) {
        let backlog = Backlog::new(limits);
        let kicks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&kicks);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let outbox = Outbox::open(id, &backlog, move |r| seen.lock().unwrap().push(r));
        (backlog, outbox, kicks)
    }

    static NEXT: AtomicU64 = AtomicU64::new(1);

    fn batch(changes: &[(&str, ChangeType, i64)]) -> Updates {
        let changes = changes
            .iter()
            .map(|(key, change, value)| Change {
                key: (*key).into(),
                change: *change,
                value: Value::Int(*value),
            })
            .collect();
        Updates {
            query_id: "q".into(),
            batch: Arc::new(ChangeBatch::new(changes)),
        }
    }

    /// What the writer would tell, decoded back: (key, type, value).
    fn told(outbox: &Outbox) -> Vec<(String, ChangeType, Value)> {
        use topgun_core::protocol::{Limits, Message};
        encode(outbox.take(usize::MAX))
            .iter()
            .filter_map(
                |bytes| match Message::decode(bytes, &Limits::default()).unwrap() {
                    Message::QueryUpdate(u) => Some((u.key.to_string(), u.change_type, u.value)),
                    _ => None,
                },
            )
            .collect()
    }

    #[test]
    fn updates_of_one_key_merge_into_what_the_subscriber_is_owed() {
        use ChangeType::{Enter, Leave, Update};
        let (backlog, outbox, _) = outbox(BacklogLimits::default());
        outbox.push_updates(batch(&[("a", Enter, 1), ("b", Update, 1)]));
        outbox.push_updates(batch(&[("a", Update, 2)]));
        outbox.push_updates(batch(&[("c", Enter, 1), ("c", Leave, 0), ("b", Leave, 0)]));
        outbox.push_updates(batch(&[("b", Enter, 3), ("d", Enter, 4), ("d", Leave, 0)]));
        outbox.push_updates(batch(&[("d", Enter, 5)]));
        assert_eq!(
            told(&outbox),
            [
                ("a".into(), Enter, Value::Int(2)),
                ("b".into(), Update, Value::Int(3)),
                ("d".into(), Enter, Value::Int(5)),
            ]
        );
        assert_eq!((outbox.bytes(), backlog.used()), (0, 0));
        // Once read, a key's next change is news again.
        outbox.push_updates(batch(&[("a", Leave, 0)]));
        assert_eq!(told(&outbox), [("a".into(), Leave, Value::Nil)]);
    }

    #[test]
    fn a_frame_keeps_the_updates_before_it_apart_from_those_after() {
        let (_, outbox, _) = outbox(BacklogLimits::default());
        outbox.push_updates(batch(&[("a", ChangeType::Update, 1)]));
        outbox.push_frame(SharedFrame::from(b"resp".to_vec()));
        outbox.push_updates(batch(&[("a", ChangeType::Update, 2)]));
        assert_eq!(encode(outbox.take(usize::MAX)).len(), 3);
    }

    #[test]
    fn many_updates_fit_a_connection_but_an_unread_backlog_past_its_budget_is_closed() {
        let limits = BacklogLimits {
            connection_bytes: 200_000,
            server_bytes: 1 << 30,
        };
        let (backlog, outbox, kicks) = outbox(limits);
        let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
        let one_write: Vec<(&str, ChangeType, i64)> = keys
            .iter()
            .map(|k| (k.as_str(), ChangeType::Enter, 1))
            .collect();
        assert_eq!(outbox.push_updates(batch(&one_write)), Pushed::Queued);
        assert_eq!(
            told(&outbox).len(),
            1000,
            "one batch's updates are no reason to close"
        );
        let mut pushed = 0;
        while outbox.push_updates(batch(&[("x", ChangeType::Update, 0)])) == Pushed::Queued {
            pushed += 1;
        }
        assert!(pushed > 1000, "the budget is bytes: {pushed} updates fit");
        assert_eq!(*kicks.lock().unwrap(), [KickReason::ConnectionBacklog]);
        assert_eq!(backlog.kicks(KickReason::ConnectionBacklog), 1);
        assert_eq!(
            (outbox.bytes(), backlog.used()),
            (0, 0),
            "what it held is freed"
        );
        assert_eq!(
            outbox.push_frame(SharedFrame::from(vec![0; 8])),
            Pushed::Kicked
        );
    }

    #[test]
    fn an_item_larger_than_the_budget_passes_an_empty_outbox_but_not_a_backlog() {
        let limits = BacklogLimits {
            connection_bytes: 1000,
            server_bytes: 1 << 20,
        };
        let (_, outbox, kicks) = outbox(limits);
        assert_eq!(
            outbox.push_frame(SharedFrame::from(vec![0; 5000])),
            Pushed::Queued
        );
        assert_eq!(outbox.take(usize::MAX).len(), 1);
        assert_eq!(
            outbox.push_frame(SharedFrame::from(vec![0; 10])),
            Pushed::Queued
        );
        assert_eq!(
            outbox.push_frame(SharedFrame::from(vec![0; 5000])),
            Pushed::Kicked
        );
        assert_eq!(*kicks.lock().unwrap(), [KickReason::ConnectionBacklog]);
    }

    #[test]
    fn past_the_server_budget_the_connection_holding_most_is_closed() {
        let limits = BacklogLimits {
            connection_bytes: 1 << 20,
            server_bytes: 10_000,
        };
        let backlog = Backlog::new(limits);
        let open = |id| Outbox::open(id, &backlog, |_| {});
        let (small, large, third) = (open(1), open(2), open(3));
        small.push_frame(SharedFrame::from(vec![0; 1000]));
        large.push_frame(SharedFrame::from(vec![0; 8000]));
        assert_eq!(
            third.push_frame(SharedFrame::from(vec![0; 2000])),
            Pushed::Queued
        );
        assert_eq!(large.kicked(), Some(KickReason::ServerBacklog));
        assert_eq!((small.kicked(), third.kicked()), (None, None));
        assert_eq!(backlog.used(), 3000 + 2 * ITEM_BYTES);
        third.close();
        assert_eq!(backlog.used(), 1000 + ITEM_BYTES);
        assert_eq!(third.push_frame(SharedFrame::from(vec![1])), Pushed::Gone);
    }

    #[test]
    fn what_many_outboxes_share_counts_once_against_the_server() {
        // Counted once per reader, this would be 58 MB, far past the budget.
        let limits = BacklogLimits {
            connection_bytes: 1 << 20,
            server_bytes: 1 << 20,
        };
        let backlog = Backlog::new(limits);
        let readers: Vec<_> = (0..500)
            .map(|id| Outbox::open(id, &backlog, |_| {}))
            .collect();
        // One 50 KB event to 500 readers is 50 KB of memory, not 25 MB.
        let event = SharedFrame::from(vec![0; 50_000]);
        let changes = (0..500)
            .map(|i| Change {
                key: format!("k{i}"),
                change: ChangeType::Enter,
                value: Value::Str("x".repeat(60).into()),
            })
            .collect();
        let batch = Arc::new(ChangeBatch::new(changes));
        for reader in &readers {
            assert_eq!(reader.push_frame(event.clone()), Pushed::Queued);
            let updates = Updates {
                query_id: "q".into(),
                batch: Arc::clone(&batch),
            };
            assert_eq!(reader.push_updates(updates), Pushed::Queued);
        }
        let shared = 50_000 + batch.bytes;
        let own = 500 * (2 * ITEM_BYTES + 1);
        assert_eq!(backlog.used(), shared + own);
        assert!(readers.iter().all(|r| r.kicked().is_none()));
        drop((event, batch));
        for reader in &readers {
            reader.take(usize::MAX);
        }
        assert_eq!(backlog.used(), 0, "freed with the last reader's copy");
    }

    #[test]
    fn updates_encode_as_the_message_they_are() {
        use topgun_core::protocol::Message;
        use topgun_core::protocol::messages::QueryUpdate;
        let value = Value::Map(
            [("title", Value::from("x")), ("n", Value::Int(3))]
                .into_iter()
                .collect(),
        );
        let change = Change {
            key: "k".into(),
            change: ChangeType::Update,
            value: value.clone(),
        };
        let message = Message::QueryUpdate(QueryUpdate {
            query_id: "q-1".into(),
            key: "k".into(),
            value,
            change_type: ChangeType::Update,
        });
        assert_eq!(
            encode_update("q-1", ChangeType::Update, &change),
            message.encode()
        );
    }

    #[test]
    fn estimates_follow_the_value() {
        let small = value_bytes(&Value::Int(1));
        let text = value_bytes(&Value::Str("x".repeat(1000).into()));
        assert!(small < 16 && (1000..1020).contains(&text));
    }
}
