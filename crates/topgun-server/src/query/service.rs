//! The live-query task: owns every subscription and shared view, loads snapshots, steps the
//! views with committed changes and pushes `QUERY_RESP`/`QUERY_UPDATE` to the subscribers'
//! outboxes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use topgun_core::LwwRecord;
use topgun_core::aggregate::Aggregates;
use topgun_core::live_query::{Change, View};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{QueryResp, QueryResultRow};
use topgun_core::protocol::query::Query;

use crate::connection::ConnId;
use crate::connection::fanout::ConnHandle;
use crate::connection::outbox::SharedFrame;
use crate::connection::outbox::{ChangeBatch, KickReason, Updates};
use crate::data::peers::{Cluster, Local, Read, ReadPart, gather};
use crate::data::shards::Shards;
use crate::error::{code, error};
use crate::query::handle::{Queries, QueryRequest, Records};
use crate::query::index::{MapSubs, index_key};
use crate::query::view::{SharedView, ViewKey, auth_context, live_value, load, step, uses_auth};
use crate::security::policy::{Action, Decision, Fields, Resource, Subject};
use crate::storage::store::MapKind;

/// Changes buffered for one subscription while its snapshot loads.
const LOADING_BUFFER_MAX: usize = 65_536;

/// One subscription: a connection's `queryId` on a shared view.
struct Sub {
    conn: ConnHandle,
    query_id: Arc<str>,
    view: u64,
    /// When it subscribed: its cursors' clock.
    now_ms: u64,
}

/// Where the task reads snapshots from: this node's shards and, in a cluster, every
/// member's (a view then holds an interest in its map, so that the owners relay its
/// events here).
#[derive(Debug, Clone)]
pub struct Reads {
    pub shards: Shards,
    pub cluster: Arc<OnceLock<Cluster>>,
}

/// The task's state.
struct Service {
    queries: Queries,
    reads: Reads,
    subs: HashMap<u64, Sub>,
    views: HashMap<u64, SharedView>,
    view_of: HashMap<ViewKey, u64>,
    by_map: HashMap<String, MapSubs>,
    by_conn: HashMap<(ConnId, Arc<str>), u64>,
    next_id: u64,
    per_connection_max: usize,
}

/// Serves the query task until every handle is gone.
pub async fn run(
    queries: Queries,
    mut requests: mpsc::Receiver<QueryRequest>,
    reads: Reads,
    per_connection_max: usize,
) {
    let mut service = Service {
        queries,
        reads,
        subs: HashMap::new(),
        views: HashMap::new(),
        view_of: HashMap::new(),
        by_map: HashMap::new(),
        by_conn: HashMap::new(),
        next_id: 1,
        per_connection_max,
    };
    let wake = Arc::clone(&service.queries.wake);
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => service.serve(request),
                None => break,
            },
            () = wake.notified() => {}
        }
        for map in service.queries.take_lagged() {
            service.shed(&map);
        }
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
                    query_id: query_id.into(),
                    map,
                    allowed,
                };
                self.subscribe(admitted, &query, fields, now_ms);
            }
            QueryRequest::Unsubscribe { conn, query_id } => {
                if let Some(id) = self.by_conn.get(&(conn, query_id.into())).copied() {
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
            QueryRequest::Loaded { view, records } => self.loaded(view, records),
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn subscribe(
        &mut self,
        admitted: Admitted,
        query: &Query,
        fields: Option<Vec<String>>,
        now_ms: u64,
    ) {
        let slot = (admitted.conn.id, Arc::clone(&admitted.query_id));
        if let Some(old) = self.by_conn.get(&slot).copied() {
            // A re-sent QUERY_SUB (the TS client re-subscribes on every reconnect) replaces it.
            self.remove(old);
        }
        let conn = &admitted.conn;
        let held = self.by_conn.keys().filter(|(c, _)| *c == conn.id).count();
        if held >= self.per_connection_max {
            let why = format!(
                "query {:?}: this connection already holds {} live queries, the most allowed",
                admitted.query_id, self.per_connection_max
            );
            send(conn, &error(code::TOO_MANY, why));
            return;
        }
        let subject = uses_auth(query).then(|| conn.access().subject()).flatten();
        let key = ViewKey {
            map: admitted.map.clone(),
            query: topgun_core::protocol::encode_standalone(query),
            fields: fields.clone(),
            allowed: admitted.allowed.clone(),
            subject: subject
                .as_ref()
                .map(|s| (s.user_id.clone(), s.roles.clone())),
        };
        // A cursor resumes a window at one moment: such views are not shared.
        let shared = query.cursor.is_none();
        let view_id = match self.view_of.get(&key).copied().filter(|_| shared) {
            Some(view_id) => view_id,
            None => match self.open_view(key, &admitted, query, fields, subject, now_ms) {
                Ok(view_id) => view_id,
                Err(e) => {
                    let why = format!("query {:?}: {e}", admitted.query_id);
                    send(conn, &error(code::BAD_REQUEST, why));
                    return;
                }
            },
        };
        let id = self.next_id();
        self.by_conn.insert(slot, id);
        let sub = Sub {
            conn: admitted.conn,
            query_id: admitted.query_id,
            view: view_id,
            now_ms,
        };
        let view = self.views.get_mut(&view_id).expect("just found or opened");
        view.subs.push(id);
        if view.loading.is_none() {
            // Already loaded: everything committed so far is in it.
            send(&sub.conn, &response(view, &sub));
        }
        self.subs.insert(id, sub);
    }

    /// Opens a view for `admitted`'s query and starts loading its snapshot.
    fn open_view(
        &mut self,
        key: ViewKey,
        admitted: &Admitted,
        query: &Query,
        fields: Option<Vec<String>>,
        subject: Option<Subject>,
        now_ms: u64,
    ) -> Result<u64, String> {
        let mut view = View::new(query, fields).map_err(|e| e.to_string())?;
        let cursor_status = view.resume(query.cursor.as_deref(), now_ms);
        let id = self.next_id();
        let equality = view
            .required_equality()
            .map(|(f, v)| (f.to_owned(), index_key(v)));
        let map = admitted.map.clone();
        self.by_map
            .entry(map.clone())
            .or_default()
            .add(id, equality);
        self.watch(&map, true);
        if query.cursor.is_none() {
            self.view_of.insert(key.clone(), id);
        }
        self.views.insert(
            id,
            SharedView {
                key,
                map: map.clone(),
                allowed: admitted.allowed.clone(),
                auth: subject.as_ref().map(auth_context),
                subject,
                view,
                groups: Aggregates::new(query),
                cursor_status,
                loading: Some(Vec::new()),
                overflowed: false,
                subs: Vec::new(),
            },
        );
        let follow = self.follow(&map, true);
        self.load(id, map, follow);
        Ok(id)
    }

    /// In a cluster, a view holds an interest in its map's LWW events, so that every owner
    /// relays them here: begun when it opens (the generation its snapshot is read under,
    /// so that each owner starts relaying in the same step), ended when it closes.
    fn follow(&self, map: &str, on: bool) -> u64 {
        let Some(cluster) = self.reads.cluster.get() else {
            return 0;
        };
        let (peers, interests) = (cluster.peers.as_ref(), &cluster.interests);
        if on {
            interests.join(peers, MapKind::Lww, map)
        } else {
            interests.leave(peers, MapKind::Lww, map);
            0
        }
    }

    /// Reads the map's records — every shard's, in a cluster every member's — off this
    /// task; the answer comes back as `Loaded`.
    fn load(&self, view: u64, map: String, follow: u64) {
        let reads = self.reads.clone();
        let back = self.queries.clone();
        tokio::spawn(async move {
            let read = Read::LwwRecords { map };
            let cluster = reads.cluster.get();
            let parts = gather(&reads.shards, cluster, read, Local::default(), follow).await;
            let records = match parts {
                Ok(parts) => parts.await.ok().map(snapshot),
                Err(_) => None,
            };
            back.send(QueryRequest::Loaded { view, records }).await;
        });
    }

    /// A view's snapshot is in: each subscription gets its `QUERY_RESP`, then what was
    /// committed meanwhile.
    fn loaded(&mut self, id: u64, records: Option<Records>) {
        let Some(view) = self.views.get_mut(&id) else {
            return; // every subscription left meanwhile
        };
        let failure = match (&records, view.overflowed) {
            (None, _) => Some("a shard is gone"),
            (_, true) => Some("too many writes while it loaded; subscribe again"),
            _ => None,
        };
        if let Some(why) = failure {
            for sub in view.subs.clone() {
                if let Some(s) = self.subs.get(&sub) {
                    let message =
                        error(code::UNAVAILABLE, format!("query {:?}: {why}", s.query_id));
                    send(&s.conn, &message);
                }
                self.remove(sub);
            }
            return;
        }
        let mut seen: HashMap<String, LwwRecord> = HashMap::new();
        for (key, record) in records.unwrap_or_default() {
            load(view, &key, &record);
            seen.insert(key, record);
        }
        let buffered = view.loading.take().unwrap_or_default();
        let mut revoked = Vec::new();
        for sub in &view.subs {
            let Some(s) = self.subs.get(sub) else {
                continue;
            };
            match still_admitted(view, s) {
                Ok(()) => send(&s.conn, &response(view, s)),
                Err(why) => {
                    send(&s.conn, &why);
                    revoked.push(*sub);
                }
            }
        }
        for (writer, key, record) in buffered {
            // What the snapshot already holds is not news.
            if seen.get(&key).is_some_and(|s| !record.wins_over(s)) {
                continue;
            }
            let changes = step(view, &key, &record);
            tell(&self.subs, view, writer, changes, &revoked);
        }
        if let Some(subs) = self.by_map.get_mut(&view.map) {
            subs.loaded(id, view.view.keys());
        }
        for sub in revoked {
            self.remove(sub);
        }
    }

    /// Applies one writer's committed changes of `map` to every view they can concern, then
    /// tells each view's subscribers once, with all of its changes.
    fn changed(&mut self, map: &str, writer: ConnId, changes: &[(String, LwwRecord)]) {
        let Some(index) = self.by_map.get_mut(map) else {
            return;
        };
        let mut told: HashMap<u64, Vec<Change>> = HashMap::new();
        for (key, record) in changes {
            for id in index.candidates(key, live_value(record)) {
                let Some(view) = self.views.get_mut(&id) else {
                    continue;
                };
                if let Some(buffer) = view.loading.as_mut() {
                    if buffer.len() >= LOADING_BUFFER_MAX {
                        view.overflowed = true;
                        buffer.clear();
                    } else if !view.overflowed {
                        buffer.push((writer, key.clone(), record.clone()));
                    }
                    continue;
                }
                let changes = step(view, key, record);
                index.hold(key, id, view.view.get(key).is_some());
                told.entry(id).or_default().extend(changes);
            }
        }
        let mut revoked = Vec::new();
        for (id, changes) in told {
            let Some(view) = self.views.get(&id) else {
                continue;
            };
            for sub in &view.subs {
                if let Some(s) = self.subs.get(sub)
                    && let Err(why) = still_admitted(view, s)
                {
                    send(&s.conn, &why);
                    revoked.push(*sub);
                }
            }
            tell(&self.subs, view, writer, changes, &revoked);
        }
        for id in revoked {
            self.remove(id);
        }
    }

    /// A change of `map` was not handed over: every view of the map may now be wrong. Their
    /// subscribers' connections are closed as slow consumers (they reconnect and subscribe
    /// again, from a fresh snapshot) and the views dropped.
    fn shed(&mut self, map: &str) {
        let views: Vec<u64> = self
            .views
            .iter()
            .filter(|(_, v)| v.map == map)
            .map(|(id, _)| *id)
            .collect();
        let mut closed = 0;
        for view in views {
            let subs = self
                .views
                .get(&view)
                .map(|v| v.subs.clone())
                .unwrap_or_default();
            for id in subs {
                if let Some(sub) = self.subs.get(&id) {
                    sub.conn.outbox().kick(KickReason::QueryLag);
                    closed += 1;
                }
                self.remove(id);
            }
        }
        tracing::warn!(
            map,
            closed,
            "live queries fell behind this map's writes; their connections were closed to resync"
        );
    }

    /// Ends a subscription; its view goes with its last one.
    fn remove(&mut self, id: u64) {
        let Some(sub) = self.subs.remove(&id) else {
            return;
        };
        self.by_conn.remove(&(sub.conn.id, sub.query_id));
        let Some(view) = self.views.get_mut(&sub.view) else {
            return;
        };
        view.subs.retain(|s| *s != id);
        if !view.subs.is_empty() {
            return;
        }
        let view = self.views.remove(&sub.view).expect("just found");
        if self.view_of.get(&view.key) == Some(&sub.view) {
            self.view_of.remove(&view.key);
        }
        let now_empty = self.by_map.get_mut(&view.map).is_some_and(|subs| {
            subs.remove(sub.view, view.view.keys());
            subs.is_empty()
        });
        if now_empty {
            self.by_map.remove(&view.map);
            self.watch(&view.map, false);
        }
        self.follow(&view.map, false);
    }

    fn watch(&self, map: &str, on: bool) {
        self.queries.set_watched(map, on);
    }
}

/// Who subscribed, to what, under which field limit.
struct Admitted {
    conn: ConnHandle,
    query_id: Arc<str>,
    map: String,
    allowed: Option<Fields>,
}

/// `Ok` while the connection may still read the map with the field limit the view was
/// admitted under; else the `ERROR 403` that ends the subscription (a re-`AUTH` with other
/// roles, or a policy reload, changed what it may see: it must subscribe again).
fn still_admitted(view: &SharedView, sub: &Sub) -> Result<(), Box<Message>> {
    // A predicate reading `auth.*` was evaluated for the identity that subscribed.
    let same_context = view.auth.is_none() || sub.conn.access().subject() == view.subject;
    match sub
        .conn
        .access()
        .decide(Resource::Map, &view.map, Action::Read)
    {
        Decision::Allow(fields) if fields == view.allowed && same_context => Ok(()),
        _ => Err(Box::new(error(
            code::FORBIDDEN,
            format!(
                "query {:?}: what this connection may read of map {:?} changed; the query \
                 is ended, subscribe again",
                sub.query_id, view.map
            ),
        ))),
    }
}

fn response(view: &SharedView, sub: &Sub) -> Message {
    let rows = match &view.groups {
        Some(groups) => groups.rows(),
        None => view.view.window(),
    };
    let results = rows
        .into_iter()
        .map(|(key, value)| QueryResultRow {
            key: key.into(),
            value,
        })
        .collect();
    let paged = view.groups.is_none();
    Message::QueryResp(QueryResp {
        query_id: (*sub.query_id).into(),
        results,
        next_cursor: paged
            .then(|| view.view.next_cursor(sub.now_ms))
            .flatten()
            .map(Into::into),
        has_more: (paged && view.view.has_more()).then_some(true),
        cursor_status: Some(view.cursor_status),
        merkle_root_hash: None,
        error: None,
        code: None,
    })
}

/// Every member's records of a map as one snapshot.
fn snapshot(parts: Vec<ReadPart>) -> Records {
    let mut records = Vec::new();
    for part in parts {
        if let ReadPart::LwwRecords(part) = part {
            records.extend(part.into_iter().map(|r| (r.key.to_string(), r.record)));
        }
    }
    records
}

/// Queues `changes` for every subscription of `view` but the writer's (the TS client applies
/// its own writes) and those being ended: one shared batch, one push per subscriber, however
/// many changes. Each connection's writer merges and encodes them.
fn tell(
    subs: &HashMap<u64, Sub>,
    view: &SharedView,
    writer: ConnId,
    changes: Vec<Change>,
    revoked: &[u64],
) {
    if changes.is_empty() {
        return;
    }
    let batch = Arc::new(ChangeBatch::new(changes));
    for id in &view.subs {
        let Some(sub) = subs.get(id) else { continue };
        if sub.conn.id == writer || revoked.contains(id) {
            continue;
        }
        sub.conn.offer_updates(Updates {
            query_id: Arc::clone(&sub.query_id),
            batch: Arc::clone(&batch),
        });
    }
}

/// Through the outbox: in order with the query's updates, which are never merged across
/// it. A connection that cannot keep up is closed (and re-subscribes on reconnect) rather
/// than skipped.
fn send(conn: &ConnHandle, message: &Message) {
    let _ = conn.offer(SharedFrame::from(message.encode()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shard::service::Request;
    use crate::query::index::index_key;
    use std::sync::atomic::Ordering;
    use topgun_core::value::Value;

    fn team(name: &str) -> Value {
        Value::Map([("team", Value::from(name))].into_iter().collect())
    }

    /// A shard that holds no records, and counts the loads it was asked for.
    fn empty_shard() -> (
        crate::data::shards::ShardQueue,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (tx, mut rx) = crate::data::shards::shard_queue();
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&loads);
        tokio::spawn(async move {
            while let Some(queued) = rx.recv().await {
                if let Request::LwwRecords { reply, .. } = queued.request {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Vec::new());
                }
            }
        });
        (tx, loads)
    }

    /// A single node's reads over `shards`.
    fn reads(shards: Shards) -> Reads {
        Reads {
            shards,
            cluster: Arc::default(),
        }
    }

    fn subscribe(conn: &ConnHandle, query_id: &str) -> QueryRequest {
        QueryRequest::Subscribe {
            conn: conn.clone(),
            query_id: query_id.into(),
            map: "m".into(),
            query: Box::default(),
            fields: None,
            allowed: None,
            now_ms: 0,
        }
    }

    fn record(n: i64) -> LwwRecord {
        let node = topgun_core::NodeId::new("w").unwrap();
        LwwRecord::new(Value::Int(n), topgun_core::Timestamp::new(1, 0, node), None)
    }

    /// Waits until `conn` has been sent `n` frames or kicked.
    async fn frames(conn: &ConnHandle, n: usize) -> Vec<SharedFrame> {
        let mut got = Vec::new();
        for _ in 0..200 {
            got.extend(conn.take_frames());
            if got.len() >= n || conn.outbox().kicked().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        got
    }

    #[tokio::test]
    async fn identical_queries_share_a_view_and_each_is_told() {
        let (queries, rx) = Queries::channel();
        let (shard, loads) = empty_shard();
        tokio::spawn(run(queries.clone(), rx, reads(Shards::new(vec![shard])), 8));
        let ((a, _), (b, _)) = (ConnHandle::new(), ConnHandle::new());
        queries.send(subscribe(&a, "qa")).await;
        assert_eq!(frames(&a, 1).await.len(), 1, "QUERY_RESP");
        queries.send(subscribe(&b, "qb")).await;
        assert_eq!(
            frames(&b, 1).await.len(),
            1,
            "answered from the loaded view"
        );
        assert_eq!(loads.load(Ordering::Relaxed), 1, "one snapshot for both");
        queries.offer_changed("m".into(), 0, vec![("k".into(), record(1))]);
        assert_eq!(
            (frames(&a, 1).await.len(), frames(&b, 1).await.len()),
            (1, 1)
        );
    }

    #[tokio::test]
    async fn a_map_whose_changes_could_not_be_handed_over_closes_its_subscribers() {
        let (queries, rx) = Queries::with_capacity(1);
        tokio::spawn(run(
            queries.clone(),
            rx,
            reads(Shards::new(vec![empty_shard().0])),
            8,
        ));
        let (conn, on_kick) = ConnHandle::new();
        queries.send(subscribe(&conn, "q")).await;
        assert_eq!(frames(&conn, 1).await.len(), 1, "QUERY_RESP");
        assert!(queries.watches("m"));
        // Without yielding, so the task cannot drain its one-slot queue in between.
        for n in 0..10 {
            queries.offer_changed("m".into(), 0, vec![(format!("k{n}"), record(n))]);
        }
        frames(&conn, usize::MAX).await;
        assert_eq!(conn.outbox().kicked(), Some(KickReason::QueryLag));
        assert!(*on_kick.borrow());
        assert!(!queries.watches("m"), "the view is dropped");
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
