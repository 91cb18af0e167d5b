//! The task that owns the [`Journal`]: takes in events as they become durable (in log
//! order, from the write-ahead log's writer), answers `JOURNAL_READ`, and streams
//! `JOURNAL_EVENT`s to `JOURNAL_SUBSCRIBE`rs.
//!
//! * A subscription without `fromSequence` is live at once. One with it first *catches
//!   up*: a helper task pages through the retained events and queues them on the
//!   connection's outbox, waiting for room (a replay is a stream the client asked for,
//!   so it is paced by the client rather than cut short); when a page comes back empty the
//!   subscription turns live in the same step, so no event is missed or sent twice.
//! * Live events are offered to the outbox like map events: a subscriber that does
//!   not keep up is kicked (told to reconnect), never silently skipped.
//! * `fromSequence` is inclusive: a reader resumes with the last sequence it saw plus one.
//!   Events older than the retained ones are gone; a read starts at the oldest kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    JournalEventData, JournalRead, JournalReadResponse, JournalSubscribe,
};

use crate::clock::now_ms;
use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Frames, Offer, Outbound};
use crate::connection::outbox::SharedFrame;
use crate::error::code::{BAD_REQUEST, TOO_MANY, UNAVAILABLE};
use crate::error::error;
use crate::journal::{self, Draft, Filter, Journal, JournalEvent, Logged, Page, Retention};
use crate::security::access::{ConnAccess, project_message};
use crate::security::policy::{Action, Decision, Resource};

/// Batches of events (or requests) waiting for the journal task.
const QUEUE_LEN: usize = 1024;
/// Journal subscriptions one connection may hold.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 16;
/// `JOURNAL_READ` page size when the request names none, and the most it may name.
pub const READ_LIMIT_DEFAULT: usize = 100;
pub const READ_LIMIT_MAX: usize = 1_000;
/// Events per replay page.
const REPLAY_PAGE: usize = 256;
/// How often retention by age is applied.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Input {
    /// Durable changes whose log frames start at `first`, in log order: sequenced here,
    /// not on the log's writer thread, whose every moment delays the next group commit.
    Logged {
        first: u64,
        logged: Vec<Logged>,
    },
    /// Events of a server without a log: sequenced on arrival.
    Unsequenced(Vec<(String, String, Draft)>),
    Subscribe {
        conn: ConnHandle,
        id: String,
        from: Option<u64>,
        filter: Filter,
        reply: oneshot::Sender<Option<Box<Message>>>,
    },
    Unsubscribe {
        conn: ConnId,
        id: String,
    },
    Read {
        from: u64,
        limit: usize,
        filter: Filter,
        conn: ConnHandle,
        reply: oneshot::Sender<Page>,
    },
    /// The next replay page of a catching-up subscription; `None` once it is gone.
    Replay {
        conn: ConnId,
        id: String,
        /// Which subscription under that id it replays (a re-subscribe replaces it).
        generation: u64,
        from: u64,
        reply: oneshot::Sender<Option<Page>>,
    },
    Disconnect(ConnId),
}

struct Subscription {
    conn: ConnHandle,
    filter: Filter,
    live: bool,
    generation: u64,
}

/// How events reach the journal task.
#[derive(Debug, Clone)]
pub struct JournalFeed {
    tx: mpsc::Sender<Input>,
}

impl JournalFeed {
    /// Hands over durable changes, logged from LSN `first` on, from a thread outside the
    /// runtime (the log's writer), waiting while the task's queue is full: a lagging
    /// journal slows writes, it never drops an event.
    pub fn blocking_send(&self, first: u64, logged: Vec<Logged>) {
        if !logged.is_empty() {
            let _ = self.tx.blocking_send(Input::Logged { first, logged });
        }
    }

    /// Hands over events of a server without a log, in the order they were applied.
    pub async fn send_unsequenced(&self, events: Vec<(String, String, Draft)>) {
        if !events.is_empty() {
            let _ = self.tx.send(Input::Unsequenced(events)).await;
        }
    }
}

/// A handle on the journal task.
#[derive(Debug, Clone)]
pub struct Journals {
    tx: mpsc::Sender<Input>,
}

fn parse_sequence(text: &str) -> Result<u64, Box<Message>> {
    text.parse().map_err(|_| {
        Box::new(error(
            BAD_REQUEST,
            format!("fromSequence {text:?} is not a decimal sequence number"),
        ))
    })
}

impl Journals {
    /// Starts the task over the recovered events; `node_id` is named in every event.
    pub fn start(retention: Retention, recovered: Vec<JournalEvent>, node_id: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let task = Task {
            journal: Journal::new(retention, recovered, now_ms()),
            subs: HashMap::new(),
            node_id,
            me: tx.downgrade(),
            generations: 0,
        };
        tokio::spawn(task.run(rx));
        Self { tx }
    }

    pub fn feed(&self) -> JournalFeed {
        JournalFeed {
            tx: self.tx.clone(),
        }
    }

    /// `JOURNAL_SUBSCRIBE`: `None` when accepted (events follow through the outbox).
    pub async fn subscribe(&self, conn: &ConnHandle, msg: JournalSubscribe) -> Option<Outbound> {
        let from = match msg.from_sequence.as_deref().map(parse_sequence).transpose() {
            Ok(from) => from,
            Err(refused) => return Some(Outbound::Message(refused)),
        };
        let filter = Filter {
            map: msg.map_name.map(|m| m.to_string()),
            types: msg.types,
        };
        let (reply, answer) = oneshot::channel();
        let input = Input::Subscribe {
            conn: conn.clone(),
            id: msg.request_id.to_string(),
            from,
            filter,
            reply,
        };
        if self.tx.send(input).await.is_err() {
            return Some(stopped());
        }
        let refused = answer.await.ok().flatten()?;
        Some(Outbound::Message(refused))
    }

    pub async fn unsubscribe(&self, conn: ConnId, id: &str) {
        let input = Input::Unsubscribe {
            conn,
            id: id.to_owned(),
        };
        let _ = self.tx.send(input).await;
    }

    /// `JOURNAL_READ`: the reply, in request order — only events of maps the connection may
    /// read, limited to the fields it may see.
    pub async fn read(&self, conn: &ConnHandle, msg: JournalRead, node_id: &str) -> Outbound {
        let from = match parse_sequence(&msg.from_sequence) {
            Ok(from) => from,
            Err(refused) => return Outbound::Message(refused),
        };
        let limit = msg.limit.map_or(READ_LIMIT_DEFAULT, |l| l as usize);
        let (reply, answer) = oneshot::channel();
        let input = Input::Read {
            from,
            limit: limit.clamp(1, READ_LIMIT_MAX),
            filter: Filter {
                map: msg.map_name.map(|m| m.to_string()),
                types: None,
            },
            conn: conn.clone(),
            reply,
        };
        if self.tx.send(input).await.is_err() {
            return stopped();
        }
        let (request_id, node_id) = (msg.request_id, node_id.to_owned());
        let reader = conn.clone();
        Outbound::Later(
            async move {
                let Ok(page) = answer.await else {
                    return vec![error(UNAVAILABLE, "the journal stopped")];
                };
                let events = page
                    .events
                    .iter()
                    .filter_map(|e| readable(reader.access(), e, &node_id))
                    .collect();
                vec![Message::JournalReadResponse(JournalReadResponse {
                    request_id,
                    events,
                    has_more: page.has_more,
                })]
            }
            .boxed(),
        )
    }

    /// A connection that used the journal closed.
    pub async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(Input::Disconnect(conn)).await;
    }
}

fn stopped() -> Outbound {
    Outbound::Message(Box::new(error(UNAVAILABLE, "the journal stopped")))
}

struct Task {
    journal: Journal,
    /// Subscriptions by connection, then by id.
    subs: HashMap<ConnId, HashMap<String, Subscription>>,
    node_id: String,
    /// Weak, so that the task ends once every handle is gone.
    me: mpsc::WeakSender<Input>,
    /// Numbers subscriptions, so a replaced one's replay stops.
    generations: u64,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.serve(input),
                    None => break,
                },
                _ = expire.tick() => self.journal.expire(now_ms()),
            }
        }
    }

    fn serve(&mut self, input: Input) {
        match input {
            Input::Logged { first, logged } => {
                let added = self.journal.push(journal::sequence_logged(first, logged));
                self.publish(&added);
            }
            Input::Unsequenced(drafts) => {
                let mut next = self.journal.last_sequence().map_or(1, |s| s + 1);
                let events = drafts
                    .into_iter()
                    .map(|(map, key, draft)| {
                        next += 1;
                        JournalEvent {
                            sequence: next - 1,
                            map,
                            key,
                            draft,
                        }
                    })
                    .collect();
                let added = self.journal.push(events);
                self.publish(&added);
            }
            Input::Subscribe {
                conn,
                id,
                from,
                filter,
                reply,
            } => {
                let _ = reply.send(self.subscribe(conn, id, from, filter).err());
            }
            Input::Unsubscribe { conn, id } => {
                if let Some(held) = self.subs.get_mut(&conn) {
                    held.remove(&id);
                    if held.is_empty() {
                        self.subs.remove(&conn);
                    }
                }
            }
            Input::Read {
                from,
                limit,
                filter,
                conn,
                reply,
            } => {
                let mut readable = ReadableMaps::new(conn.access());
                let page = self
                    .journal
                    .read_where(from, limit, filter.map.as_deref(), |e| {
                        filter.accepts(e) && readable.may_read(&e.map)
                    });
                let _ = reply.send(page);
            }
            Input::Replay {
                conn,
                id,
                generation,
                from,
                reply,
            } => {
                let sub = self
                    .subs
                    .get_mut(&conn)
                    .and_then(|held| held.get_mut(&id))
                    .filter(|sub| sub.generation == generation);
                let page = sub.map(|sub| {
                    let mut readable = ReadableMaps::new(sub.conn.access());
                    let map = sub.filter.map.as_deref();
                    let page = self.journal.read_where(from, REPLAY_PAGE, map, |e| {
                        sub.filter.accepts(e) && readable.may_read(&e.map)
                    });
                    // Nothing left to replay: from here on, events arrive live.
                    sub.live = page.events.is_empty();
                    page
                });
                let _ = reply.send(page);
            }
            Input::Disconnect(conn) => {
                self.subs.remove(&conn);
            }
        }
    }

    fn subscribe(
        &mut self,
        conn: ConnHandle,
        id: String,
        from: Option<u64>,
        filter: Filter,
    ) -> Result<(), Box<Message>> {
        let held = self.subs.entry(conn.id).or_default();
        if !held.contains_key(&id) && held.len() >= SUBSCRIPTIONS_PER_CONNECTION_MAX {
            return Err(Box::new(error(
                TOO_MANY,
                format!(
                    "this connection already holds {SUBSCRIPTIONS_PER_CONNECTION_MAX} journal \
                     subscriptions, the most allowed"
                ),
            )));
        }
        let live = from.is_none();
        let handle = conn.clone();
        self.generations += 1;
        let generation = self.generations;
        held.insert(
            id.clone(),
            Subscription {
                conn,
                filter,
                live,
                generation,
            },
        );
        if let Some(from) = from {
            let (me, node_id) = (self.me.clone(), self.node_id.clone());
            tokio::spawn(replay(me, handle, (id, generation), from, node_id));
        }
        Ok(())
    }

    /// Offers each new event to the live subscriptions that accept it.
    fn publish(&mut self, events: &[Arc<JournalEvent>]) {
        if self.subs.is_empty() {
            return;
        }
        for event in events {
            let msg = Message::JournalEvent(event.to_wire(&self.node_id));
            let mut frames = Frames::new(&msg);
            for held in self.subs.values_mut() {
                held.retain(|_, sub| {
                    if !sub.live || !sub.filter.accepts(event) {
                        return true;
                    }
                    let decision =
                        sub.conn
                            .access()
                            .decide(Resource::Map, &event.map, Action::Read);
                    let Some(bytes) = frames.for_reader(decision) else {
                        return true;
                    };
                    !matches!(sub.conn.offer(bytes), Offer::Gone | Offer::Kicked)
                });
            }
        }
        self.subs.retain(|_, held| !held.is_empty());
    }
}

/// A connection's read access to maps, decided once per map for one page: a page may scan
/// the whole journal (100,000 events by default) to find the events a reader may see, and
/// deciding for each of them (policy locks, pattern matches) would let one reader who may
/// see little hold up the journal task, and with it every write, for each request.
struct ReadableMaps<'a> {
    access: &'a ConnAccess,
    decided: HashMap<String, bool>,
}

impl<'a> ReadableMaps<'a> {
    fn new(access: &'a ConnAccess) -> Self {
        Self {
            access,
            decided: HashMap::new(),
        }
    }

    fn may_read(&mut self, map: &str) -> bool {
        if let Some(&allowed) = self.decided.get(map) {
            return allowed;
        }
        let allowed = self
            .access
            .decide(Resource::Map, map, Action::Read)
            .allowed();
        self.decided.insert(map.to_owned(), allowed);
        allowed
    }
}

/// The event as this connection may see it: `None` if it may not read the map, else with
/// its values limited to the fields it may read.
fn readable(access: &ConnAccess, event: &JournalEvent, node_id: &str) -> Option<JournalEventData> {
    let fields = match access.decide(Resource::Map, &event.map, Action::Read) {
        Decision::Deny => return None,
        Decision::Allow(fields) => fields,
    };
    let mut msg = Message::JournalEvent(event.to_wire(node_id));
    if let Some(fields) = fields {
        project_message(&mut msg, &fields);
    }
    match msg {
        Message::JournalEvent(wire) => Some(wire),
        _ => None,
    }
}

/// Pages a catching-up subscription through the retained events until it is live.
async fn replay(
    journal: mpsc::WeakSender<Input>,
    conn: ConnHandle,
    (id, generation): (String, u64),
    mut from: u64,
    node_id: String,
) {
    loop {
        let Some(tx) = journal.upgrade() else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let ask = Input::Replay {
            conn: conn.id,
            id: id.clone(),
            generation,
            from,
            reply,
        };
        if tx.send(ask).await.is_err() {
            return;
        }
        drop(tx);
        let Ok(Some(page)) = answer.await else {
            return;
        };
        if page.events.is_empty() {
            return;
        }
        for event in &page.events {
            let Some(wire) = readable(conn.access(), event, &node_id) else {
                continue;
            };
            if !conn
                .send(SharedFrame::from(Message::JournalEvent(wire).encode()))
                .await
            {
                return;
            }
        }
        from = page.next;
    }
}
