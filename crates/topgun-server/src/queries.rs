//! Live queries (PROTOCOL.md §4.7, §5): one task owns every subscription's view
//! ([`topgun_core::live_query::View`]) and turns committed LWW changes into `QUERY_UPDATE`s.
//!
//! A `QUERY_SUB` registers the subscription first and then loads the map's records from every
//! shard; changes committed meanwhile are buffered and, once the snapshot is in, applied only
//! where they are newer than what the snapshot saw — so a write racing the subscription is
//! neither lost nor told twice. `QUERY_RESP` and then the updates go through the connection's
//! event queue, so the response always comes first. A writer is not sent updates for its own
//! writes (the TS client applies them itself), though its views still change.
//!
//! Shards hand changes over only for maps that have queries ([`Queries::watches`]), and wait
//! when this task's queue is full: a slow query task slows writes down instead of losing an
//! update.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, oneshot};
use topgun_core::LwwRecord;
use topgun_core::aggregate::Aggregates;
use topgun_core::live_query::{Change, View};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{ErrorPayload, QueryResp, QueryResultRow, QueryUpdate};
use topgun_core::protocol::query::Query;
use topgun_core::value::Value;

use crate::fanout::{ConnHandle, ConnId, SharedFrame};
use crate::policy::{Action, Decision, Fields, Resource, Subject};
use crate::shard_task::Request;

/// Most live queries one connection may hold by default (`queries_per_connection_max`).
pub const QUERIES_PER_CONNECTION_MAX: usize = 256;
/// Changes buffered for one subscription while its snapshot loads.
const LOADING_BUFFER_MAX: usize = 65_536;
const QUEUE_LEN: usize = 1024;

/// A map's records as the shards hold them: key and latest record (tombstones included).
pub type Records = Vec<(String, LwwRecord)>;

/// What the query task is asked to do.
#[derive(Debug)]
pub enum QueryRequest {
    Subscribe {
        conn: ConnHandle,
        query_id: String,
        map: String,
        query: Box<Query>,
        fields: Option<Vec<String>>,
        /// The field limit the subscription was admitted under (`None`: every field).
        allowed: Option<Fields>,
        now_ms: u64,
    },
    Unsubscribe {
        conn: ConnId,
        query_id: String,
    },
    Forget {
        conn: ConnId,
    },
    /// Committed, durable changes of one map by one writer.
    Changed {
        map: String,
        writer: ConnId,
        changes: Records,
    },
    Loaded {
        sub: u64,
        records: Option<Records>,
    },
}

/// The handle shards and connections use.
#[derive(Debug, Clone)]
pub struct Queries {
    tx: mpsc::Sender<QueryRequest>,
    watched: Arc<RwLock<HashSet<String>>>,
}

impl Queries {
    /// The handle and the receiver [`run`] serves.
    pub fn channel() -> (Self, mpsc::Receiver<QueryRequest>) {
        let (tx, rx) = mpsc::channel(QUEUE_LEN);
        let watched = Arc::default();
        (Self { tx, watched }, rx)
    }

    /// Whether any live query reads `map`.
    pub fn watches(&self, map: &str) -> bool {
        self.watched
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(map)
    }

    /// Queues a request; waits while the task's queue is full.
    pub async fn send(&self, request: QueryRequest) {
        // The task outlives every sender but a shutdown race; nothing is owed then.
        let _ = self.tx.send(request).await;
    }
}

struct Sub {
    conn: ConnHandle,
    query_id: String,
    map: String,
    /// The field limit it was admitted under.
    allowed: Option<Fields>,
    /// Who subscribed, and (when its predicate reads `auth.*`) that context:
    /// `{userId, roles}`.
    subject: Option<Subject>,
    auth: Option<Value>,
    view: View,
    /// With `groupBy`/`aggregations`: the groups, fed by the view's matching rows; the
    /// subscriber is told of groups, not rows.
    groups: Option<Aggregates>,
    cursor_status: topgun_core::protocol::enums::CursorStatus,
    /// `Some` while the snapshot loads: the changes committed meanwhile.
    loading: Option<Vec<(ConnId, String, LwwRecord)>>,
    overflowed: bool,
    now_ms: u64,
}

/// The task's state.
struct Service {
    queries: Queries,
    shards: Vec<mpsc::Sender<Request>>,
    subs: HashMap<u64, Sub>,
    by_map: HashMap<String, MapSubs>,
    by_conn: HashMap<(ConnId, String), u64>,
    next_id: u64,
    per_connection_max: usize,
}

/// Serves the query task until every handle is gone.
pub async fn run(
    queries: Queries,
    mut requests: mpsc::Receiver<QueryRequest>,
    shards: Vec<mpsc::Sender<Request>>,
    per_connection_max: usize,
) {
    let mut service = Service {
        queries,
        shards,
        subs: HashMap::new(),
        by_map: HashMap::new(),
        by_conn: HashMap::new(),
        next_id: 1,
        per_connection_max,
    };
    while let Some(request) = requests.recv().await {
        service.serve(request);
    }
}

impl Service {
    fn serve(&mut self, request: QueryRequest) {
        match request {
            QueryRequest::Subscribe {
                conn,
                query_id,
                map,
                query,
                fields,
                allowed,
                now_ms,
            } => {
                let admitted = Admitted {
                    conn,
                    query_id,
                    map,
                    allowed,
                };
                self.subscribe(admitted, &query, fields, now_ms);
            }
            QueryRequest::Unsubscribe { conn, query_id } => {
                if let Some(id) = self.by_conn.get(&(conn, query_id)).copied() {
                    self.remove(id);
                }
            }
            QueryRequest::Forget { conn } => {
                let ids: Vec<u64> = self
                    .by_conn
                    .iter()
                    .filter(|((c, _), _)| *c == conn)
                    .map(|(_, id)| *id)
                    .collect();
                for id in ids {
                    self.remove(id);
                }
            }
            QueryRequest::Changed {
                map,
                writer,
                changes,
            } => self.changed(&map, writer, &changes),
            QueryRequest::Loaded { sub, records } => self.loaded(sub, records),
        }
    }

    fn subscribe(
        &mut self,
        admitted: Admitted,
        query: &Query,
        fields: Option<Vec<String>>,
        now_ms: u64,
    ) {
        let Admitted {
            conn,
            query_id,
            map,
            allowed,
        } = admitted;
        if let Some(old) = self.by_conn.get(&(conn.id, query_id.clone())).copied() {
            // A re-sent QUERY_SUB (the TS client re-subscribes on every reconnect) replaces it.
            self.remove(old);
        }
        let held = self.by_conn.keys().filter(|(c, _)| *c == conn.id).count();
        if held >= self.per_connection_max {
            let why = format!(
                "query {query_id:?}: this connection already holds {} live queries, the most \
                 allowed",
                self.per_connection_max
            );
            send(&conn, &error(429, why));
            return;
        }
        let mut view = match View::new(query, fields) {
            Ok(view) => view,
            Err(e) => {
                send(&conn, &error(400, format!("query {query_id:?}: {e}")));
                return;
            }
        };
        let cursor_status = view.resume(query.cursor.as_deref(), now_ms);
        let groups = Aggregates::new(query);
        let id = self.next_id;
        self.next_id += 1;
        self.by_conn.insert((conn.id, query_id.clone()), id);
        let equality = view
            .required_equality()
            .map(|(f, v)| (f.to_owned(), index_key(v)));
        self.by_map
            .entry(map.clone())
            .or_default()
            .add(id, equality);
        self.watch(&map, true);
        self.subs.insert(
            id,
            Sub {
                subject: uses_auth(query).then(|| conn.access().subject()).flatten(),
                auth: uses_auth(query)
                    .then(|| conn.access().subject().map(|s| auth_context(&s)))
                    .flatten(),
                conn,
                query_id,
                map: map.clone(),
                allowed,
                view,
                groups,
                cursor_status,
                loading: Some(Vec::new()),
                overflowed: false,
                now_ms,
            },
        );
        self.load(id, map);
    }

    /// Asks every shard for the map's records, off this task; the answer comes back as
    /// `Loaded`.
    fn load(&self, sub: u64, map: String) {
        let shards = self.shards.clone();
        let back = self.queries.clone();
        tokio::spawn(async move {
            let mut records = Vec::new();
            let mut whole = true;
            for shard in shards {
                let (reply, answer) = oneshot::channel();
                let request = Request::LwwRecords {
                    map: map.clone(),
                    reply,
                };
                if shard.send(request).await.is_err() {
                    whole = false;
                    break;
                }
                let Ok(part) = answer.await else {
                    whole = false;
                    break;
                };
                records.extend(part);
            }
            let records = whole.then_some(records);
            back.send(QueryRequest::Loaded { sub, records }).await;
        });
    }

    fn loaded(&mut self, id: u64, records: Option<Records>) {
        let Some(sub) = self.subs.get_mut(&id) else {
            return; // unsubscribed meanwhile
        };
        let Some(records) = records else {
            send(
                &sub.conn,
                &error(503, format!("query {:?}: a shard is gone", sub.query_id)),
            );
            self.remove(id);
            return;
        };
        if sub.overflowed {
            let why = format!(
                "query {:?}: too many writes while it loaded; subscribe again",
                sub.query_id
            );
            send(&sub.conn, &error(503, why));
            self.remove(id);
            return;
        }
        if let Err(revoked) = still_admitted(sub) {
            send(&sub.conn, &revoked);
            self.remove(id);
            return;
        }
        let mut seen: HashMap<String, LwwRecord> = HashMap::with_capacity(records.len());
        for (key, record) in records {
            load(sub, &key, &record);
            seen.insert(key, record);
        }
        send(&sub.conn, &response(sub));
        for (writer, key, record) in sub.loading.take().unwrap_or_default() {
            // What the snapshot already holds is not news.
            if seen.get(&key).is_some_and(|s| !record.wins_over(s)) {
                continue;
            }
            let changes = step(sub, &key, &record);
            if writer != sub.conn.id {
                tell(sub, changes);
            }
        }
        if let Some(subs) = self.by_map.get_mut(&sub.map) {
            subs.loaded(id, sub.view.keys());
        }
    }

    fn changed(&mut self, map: &str, writer: ConnId, changes: &[(String, LwwRecord)]) {
        let Some(subs) = self.by_map.get_mut(map) else {
            return;
        };
        let mut revoked = Vec::new();
        for (key, record) in changes {
            for id in subs.candidates(key, live_value(record)) {
                let Some(sub) = self.subs.get_mut(&id) else {
                    continue;
                };
                if revoked.contains(&id) {
                    continue;
                }
                if sub.loading.is_none()
                    && let Err(why) = still_admitted(sub)
                {
                    send(&sub.conn, &why);
                    revoked.push(id);
                    continue;
                }
                if let Some(buffer) = sub.loading.as_mut() {
                    if buffer.len() >= LOADING_BUFFER_MAX {
                        sub.overflowed = true;
                        buffer.clear();
                    } else if !sub.overflowed {
                        buffer.push((writer, key.clone(), record.clone()));
                    }
                    continue;
                }
                let told = step(sub, key, record);
                subs.hold(key, id, sub.view.get(key).is_some());
                if writer != sub.conn.id {
                    tell(sub, told);
                }
            }
        }
        for id in revoked {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(sub) = self.subs.remove(&id) else {
            return;
        };
        self.by_conn.remove(&(sub.conn.id, sub.query_id));
        let now_empty = self.by_map.get_mut(&sub.map).is_some_and(|subs| {
            subs.remove(id, sub.view.keys());
            subs.is_empty()
        });
        if now_empty {
            self.by_map.remove(&sub.map);
            self.watch(&sub.map, false);
        }
    }

    fn watch(&self, map: &str, on: bool) {
        let mut watched = self
            .queries
            .watched
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if on {
            watched.insert(map.to_owned());
        } else {
            watched.remove(map);
        }
    }
}

/// The subscriptions of one map, indexed so that a change costs only the subscriptions it
/// can concern: those whose required field value it has, those that hold its key (they must
/// hear that it left), those no index applies to, and those still loading (they buffer all).
#[derive(Debug, Default)]
struct MapSubs {
    /// Field → the value's [`index_key`] → subscriptions requiring it.
    by_equality: HashMap<String, HashMap<String, Vec<u64>>>,
    /// Where each subscription is indexed (`None`: not indexed).
    index_of: HashMap<u64, Option<(String, String)>>,
    unindexed: HashSet<u64>,
    loading: HashSet<u64>,
    holders: HashMap<String, HashSet<u64>>,
}

impl MapSubs {
    fn add(&mut self, id: u64, equality: Option<(String, String)>) {
        match &equality {
            Some((field, value)) => self
                .by_equality
                .entry(field.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(id),
            None => {
                self.unindexed.insert(id);
            }
        }
        self.index_of.insert(id, equality);
        self.loading.insert(id);
    }

    /// The snapshot is in: from now on the subscription hears of what it holds or matches.
    fn loaded<'a>(&mut self, id: u64, keys: impl Iterator<Item = &'a str>) {
        self.loading.remove(&id);
        for key in keys {
            self.hold(key, id, true);
        }
    }

    fn hold(&mut self, key: &str, id: u64, holds: bool) {
        if holds {
            self.holders.entry(key.to_owned()).or_default().insert(id);
        } else if let Some(ids) = self.holders.get_mut(key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.holders.remove(key);
            }
        }
    }

    fn remove<'a>(&mut self, id: u64, keys: impl Iterator<Item = &'a str>) {
        if let Some(Some((field, value))) = self.index_of.remove(&id)
            && let Some(values) = self.by_equality.get_mut(&field)
        {
            if let Some(ids) = values.get_mut(&value) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    values.remove(&value);
                }
            }
            if values.is_empty() {
                self.by_equality.remove(&field);
            }
        }
        self.unindexed.remove(&id);
        self.loading.remove(&id);
        for key in keys {
            self.hold(key, id, false);
        }
    }

    fn is_empty(&self) -> bool {
        self.index_of.is_empty()
    }

    /// The subscriptions a change of `key` to `value` can concern, in subscription order.
    fn candidates(&self, key: &str, value: Option<&Value>) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .unindexed
            .iter()
            .chain(&self.loading)
            .copied()
            .collect();
        if let Some(holders) = self.holders.get(key) {
            ids.extend(holders);
        }
        if let Some(value) = value {
            for (field, values) in &self.by_equality {
                let have = value.get(field).unwrap_or(&Value::Nil);
                if let Some(matching) = values.get(&index_key(have)) {
                    ids.extend(matching);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// An equality index's key for a value: JavaScript's `String` rendering (objects as sorted
/// JSON). Values equal as numbers render alike; the few distinct values that also do (`3`
/// and `"3"`) only make a candidate more, as the filter still decides.
fn index_key(value: &Value) -> String {
    topgun_core::js::hash_value_string(value)
}

/// A record's value for a view: `None` for a tombstone or an expired record.
fn live_value(record: &LwwRecord) -> Option<&Value> {
    let now = crate::server::now_ms();
    record.is_visible(now).then_some(&record.value)
}

/// Applies a record's new state to a subscription: the changes its subscriber is owed (the
/// window's rows, or its groups when it aggregates).
fn step(sub: &mut Sub, key: &str, record: &LwwRecord) -> Vec<Change> {
    let auth = sub.auth.as_ref();
    let value = readable(sub, record);
    let value = value.as_deref();
    let Some(groups) = sub.groups.as_mut() else {
        return sub.view.apply(key, value, auth);
    };
    let old = sub.view.get(key).cloned();
    sub.view.apply(key, value, auth);
    groups.apply(old.as_ref(), sub.view.get(key))
}

/// A record's live value as the subscriber may read it: limited to its fields when it is
/// (so filters, sort and groups only ever see what it may see).
fn readable<'a>(sub: &Sub, record: &'a LwwRecord) -> Option<std::borrow::Cow<'a, Value>> {
    let value = live_value(record)?;
    Some(match &sub.allowed {
        Some(fields) => std::borrow::Cow::Owned(crate::access::project(value, fields)),
        None => std::borrow::Cow::Borrowed(value),
    })
}

/// [`step`] for a snapshot row: nothing is owed yet (the response carries the window).
fn load(sub: &mut Sub, key: &str, record: &LwwRecord) {
    let old = sub.groups.as_ref().and_then(|_| sub.view.get(key).cloned());
    let value = readable(sub, record);
    sub.view.load(key, value.as_deref(), sub.auth.as_ref());
    if let Some(groups) = sub.groups.as_mut() {
        groups.apply(old.as_ref(), sub.view.get(key));
    }
}

/// Whether a query's predicate reads the subscriber's identity (`valueRef: "auth.…"`).
fn uses_auth(query: &Query) -> bool {
    fn walk(node: &topgun_core::protocol::query::PredicateNode) -> bool {
        node.value_ref
            .as_deref()
            .is_some_and(|r| r.starts_with("auth."))
            || node.children.iter().flatten().any(walk)
    }
    query.predicate.as_ref().is_some_and(walk)
}

/// What a predicate's `valueRef: "auth.<path>"` reads: `{userId, roles}`.
fn auth_context(subject: &Subject) -> Value {
    let user = subject
        .user_id
        .as_deref()
        .map_or(Value::Nil, |u| Value::Str(u.into()));
    let roles = subject
        .roles
        .iter()
        .map(|r| Value::Str(r.as_str().into()))
        .collect();
    Value::Map(
        [("userId", user), ("roles", Value::Array(roles))]
            .into_iter()
            .collect(),
    )
}

/// Who subscribed, to what, under which field limit.
struct Admitted {
    conn: ConnHandle,
    query_id: String,
    map: String,
    allowed: Option<Fields>,
}

/// `Ok` while the connection may still read the map with the field limit the subscription
/// was admitted under; else the `ERROR 403` that ends it (a re-`AUTH` with other roles, or a
/// policy reload, changed what it may see: it must subscribe again).
fn still_admitted(sub: &Sub) -> Result<(), Box<Message>> {
    // A predicate reading `auth.*` was evaluated for the identity that subscribed.
    let same_context = sub.auth.is_none() || sub.conn.access().subject() == sub.subject;
    match sub
        .conn
        .access()
        .decide(Resource::Map, &sub.map, Action::Read)
    {
        Decision::Allow(fields) if fields == sub.allowed && same_context => Ok(()),
        _ => Err(Box::new(error(
            403,
            format!(
                "query {:?}: what this connection may read of map {:?} changed; the query \
                 is ended, subscribe again",
                sub.query_id, sub.map
            ),
        ))),
    }
}

fn response(sub: &Sub) -> Message {
    let rows = match &sub.groups {
        Some(groups) => groups.rows(),
        None => sub.view.window(),
    };
    let results = rows
        .into_iter()
        .map(|(key, value)| QueryResultRow {
            key: key.into(),
            value,
        })
        .collect();
    let paged = sub.groups.is_none();
    Message::QueryResp(QueryResp {
        query_id: sub.query_id.as_str().into(),
        results,
        next_cursor: paged
            .then(|| sub.view.next_cursor(sub.now_ms))
            .flatten()
            .map(Into::into),
        has_more: (paged && sub.view.has_more()).then_some(true),
        cursor_status: Some(sub.cursor_status),
        merkle_root_hash: None,
        error: None,
        code: None,
    })
}

fn tell(sub: &Sub, changes: Vec<Change>) {
    for change in changes {
        let update = Message::QueryUpdate(QueryUpdate {
            query_id: sub.query_id.as_str().into(),
            key: change.key.into(),
            value: change.value,
            change_type: change.change,
        });
        send(&sub.conn, &update);
    }
}

fn error(code: u32, message: String) -> Message {
    Message::Error(ErrorPayload {
        code,
        message: message.into(),
        details: None,
    })
}

/// Through the event queue: in order after the `QUERY_RESP`; a connection that cannot keep
/// up is closed (and re-subscribes on reconnect) rather than skipped.
fn send(conn: &ConnHandle, message: &Message) {
    let _ = conn.offer(SharedFrame::from(message.encode()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(name: &str) -> Value {
        Value::Map([("team", Value::from(name))].into_iter().collect())
    }

    #[test]
    fn a_change_reaches_only_the_subscriptions_it_can_concern() {
        let mut subs = MapSubs::default();
        let on = |v: &str| Some(("team".to_owned(), index_key(&Value::from(v))));
        subs.add(1, on("a"));
        subs.add(2, on("b"));
        subs.add(3, None);
        subs.add(4, on("a"));
        // Loading subscriptions hear of everything.
        assert_eq!(subs.candidates("k", Some(&team("b"))), [1, 2, 3, 4]);
        for id in [1, 2, 3] {
            subs.loaded(id, std::iter::empty());
        }
        subs.loaded(4, ["k"].into_iter());
        assert_eq!(subs.candidates("x", Some(&team("b"))), [2, 3]);
        assert_eq!(subs.candidates("x", Some(&team("a"))), [1, 3, 4]);
        // Subscription 4 holds "k": it hears that "k" is now on team b, or deleted.
        assert_eq!(subs.candidates("k", Some(&team("b"))), [2, 3, 4]);
        assert_eq!(subs.candidates("k", None), [3, 4]);
        subs.remove(4, ["k"].into_iter());
        assert_eq!(subs.candidates("k", None), [3]);
        for id in [1, 2, 3] {
            subs.remove(id, std::iter::empty());
        }
        assert!(subs.is_empty() && subs.by_equality.is_empty() && subs.holders.is_empty());
    }
}
