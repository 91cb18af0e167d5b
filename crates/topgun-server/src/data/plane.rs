//! The front of the data path: admits a connection's request, then hands it to the path
//! that serves it (DESIGN §4.1).
//!
//! ```text
//! session → DataPlane::dispatch ─ admission ─┬→ WritePath  (ops, pushes)  ─┐
//!                                            ├→ SyncPath   (Merkle sync)  ─┼→ Shards → shard tasks
//!                                            ├→ Queries    (live queries) ─┘
//!                                            └→ Coordinator (topics, locks, counters, journal)
//! ```
//!
//! Replies that wait for shards travel as [`Outbound::Later`]: the connection's writer sends
//! them in request order while the reader goes on.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use topgun_core::Timestamp;
use topgun_core::protocol::Message;
use topgun_core::protocol::http::{HttpDelta, SyncSince};
use topgun_core::protocol::query::Query;

use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::connection::outbox::SharedFrame;
use crate::coordination::internal::InternalWriter;
use crate::coordination::router::Coordinator;
use crate::data::conn::{Changes, ConnState};
use crate::data::deltas;
use crate::data::peers::{
    self, Cluster, Interests, Local, Peers, Read, ReadPart, read_local, unexpected_part,
};
use crate::data::shard::service::Request;
use crate::data::shards::{ShardGone, Shards};
use crate::data::sync::SyncPath;
use crate::data::write::{Concern, WritePath};
use crate::error;
use crate::query::handle::{Queries, QueryRequest, admit as query_admit};
use crate::query::once::{self, Ask, Page};
use crate::query::view::{auth_context, uses_auth};
use crate::security::access::project_message;
use crate::security::admission;
use crate::security::interceptor::{ConnInfo, Pipeline};
use crate::security::policy::Fields;
use crate::storage::store::{MapKind, StoredEntry};

/// The router in front of the services; shared by every connection. Built by
/// [`crate::services::start`].
#[derive(Debug)]
pub struct DataPlane {
    shards: Shards,
    writes: WritePath,
    sync: SyncPath,
    /// The live-query task.
    queries: Queries,
    coordination: Coordinator,
    /// Writes the server's own records (the admin API's policies).
    internal: InternalWriter,
    /// In a cluster: the other members and this member's interests (set once at start).
    cluster: Arc<OnceLock<Cluster>>,
}

impl DataPlane {
    pub(crate) fn new(
        shards: Shards,
        writes: WritePath,
        sync: SyncPath,
        queries: Queries,
        coordination: Coordinator,
        internal: InternalWriter,
    ) -> Self {
        Self {
            shards,
            writes,
            sync,
            queries,
            coordination,
            internal,
            cluster: Arc::default(),
        }
    }

    /// Shares `cell` with the paths that were built with it.
    pub(crate) fn with_cluster_cell(mut self, cell: Arc<OnceLock<Cluster>>) -> Self {
        self.cluster = cell;
        self
    }

    /// Cluster mode: reads gather every member's part, and events of maps this member's
    /// connections follow are relayed here. Set once; `false` if set already.
    pub fn set_cluster(&self, peers: Arc<dyn Peers>) -> bool {
        let cluster = Cluster {
            peers,
            interests: Arc::default(),
        };
        self.cluster.set(cluster).is_ok()
    }

    /// This member's interests in maps (cluster mode).
    pub fn interests(&self) -> Option<Arc<Interests>> {
        self.cluster.get().map(|c| Arc::clone(&c.interests))
    }

    /// Serves another member's read of this member's partitions: puts it on the shards'
    /// queues now; the future is this member's part (`None`: shutting down).
    pub async fn read_for_member(
        &self,
        read: Read,
        local: Local,
    ) -> Result<BoxFuture<'static, Option<ReadPart>>, ShardGone> {
        read_local(&self.shards, read, local).await
    }

    /// Tells every shard about other members' interests: `request` is built once per shard.
    pub async fn tell_shards(&self, request: impl FnMut() -> Request) -> Result<(), ShardGone> {
        self.shards.send_each(request).await
    }

    /// Hands a relayed event frame to the shard that serves the map's relays (one per map,
    /// so that a map's relayed events keep their order); every shard knows every
    /// subscriber.
    pub async fn deliver_relayed(
        &self,
        kind: MapKind,
        map: String,
        except: ConnId,
        frame: SharedFrame,
    ) -> Result<(), ShardGone> {
        let shard = relay_shard(&map, self.shards.count());
        let request = Request::Relayed {
            kind,
            map,
            except,
            frame,
        };
        self.shards.send(shard, request).await
    }

    /// The topics and their subscribers (cluster mode: other members' interests in them).
    pub fn topics(&self) -> &crate::coordination::topics::Topics {
        &self.coordination.topics
    }

    /// The locks (cluster mode: held by the designated member).
    pub fn locks(&self) -> &crate::coordination::locks::service::Locks {
        &self.coordination.locks
    }

    /// The counters (cluster mode: reached on their owners).
    pub fn counters(&self) -> &crate::coordination::counters::Counters {
        &self.coordination.counters
    }

    /// Closes the local subscribers of a map whose relayed events were lost.
    pub async fn kick_followers(&self, kind: MapKind, map: String) -> Result<(), ShardGone> {
        let shard = relay_shard(&map, self.shards.count());
        self.shards
            .send(shard, Request::KickSubscribers { kind, map })
            .await
    }

    /// Counts a connection's new and ended subscriptions in this member's interests.
    fn follow_interest(&self, joined: &[(MapKind, &str)], left: &[(MapKind, String)]) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        for (kind, map) in joined {
            cluster.interests.join(cluster.peers.as_ref(), *kind, map);
        }
        for (kind, map) in left {
            cluster.interests.leave(cluster.peers.as_ref(), *kind, map);
        }
    }

    /// The writer of the server's own records of reserved maps.
    pub fn internal(&self) -> InternalWriter {
        self.internal.clone()
    }

    /// Writes (`Some`) or removes (`None`) a record of a reserved map; resolves once durable.
    pub async fn write_internal(
        &self,
        map: &str,
        key: &str,
        value: Option<topgun_core::Value>,
    ) -> Result<(), String> {
        match value {
            Some(value) => {
                let record = self.internal.stamp(value);
                self.internal.put(map, key, record).await
            }
            None => self.internal.remove(map, key).await,
        }
    }

    /// Every client map holding a live key, by name, with its keys that have a live value:
    /// the shards', or in a cluster every member's for the partitions it owns.
    pub async fn map_catalog(&self) -> Result<Vec<(String, usize)>, Box<Message>> {
        let mut catalog: std::collections::BTreeMap<String, u64> =
            std::collections::BTreeMap::new();
        for part in self.gathered(Read::MapCatalog).await? {
            let ReadPart::Counts(counts) = part else {
                return Err(unexpected_part());
            };
            for (name, count) in counts {
                *catalog.entry(name).or_default() += count;
            }
        }
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(catalog.into_iter().map(|(m, n)| (m, count(n))).collect())
    }

    /// The keys of `map` whose live value holds `attribute`, summed as
    /// [`DataPlane::map_catalog`] sums.
    pub async fn attribute_count(&self, map: &str, attribute: &str) -> Result<usize, Box<Message>> {
        let read = Read::AttributeCount {
            map: map.to_owned(),
            attribute: attribute.to_owned(),
        };
        let mut sum = 0u64;
        for part in self.gathered(read).await? {
            let ReadPart::Count(count) = part else {
                return Err(unexpected_part());
            };
            sum = sum.saturating_add(count);
        }
        Ok(usize::try_from(sum).unwrap_or(usize::MAX))
    }

    /// Every member's part of `read` (this node's alone on a single node).
    async fn gathered(&self, read: Read) -> Result<Vec<ReadPart>, Box<Message>> {
        let cluster = self.cluster.get();
        peers::gather(&self.shards, cluster, read, Local::default(), 0)
            .await?
            .await
    }

    /// A new connection's state in the data path.
    pub fn connection(&self, handle: ConnHandle, maps_max: usize) -> ConnState {
        let queries_max = self.writes.guards.queries_per_connection_max;
        ConnState::new(handle, maps_max, queries_max)
    }

    /// The state of a connection that lives for one HTTP request: it writes and reads but
    /// receives no events (no map or query subscriptions).
    pub fn request_connection(&self, handle: ConnHandle) -> ConnState {
        ConnState::new(handle, 0, 0)
    }

    /// Moves the server clock past a client's clock; one further ahead than the drift bound
    /// is not followed (its writes are refused by the same bound).
    pub fn observe_clock(&self, client: &Timestamp, now_ms: u64) {
        let _ = self.writes.clock.lock().update(client, now_ms);
    }

    /// A fresh server timestamp.
    pub fn server_time(&self, now_ms: u64) -> Timestamp {
        self.writes.clock.now(now_ms)
    }

    /// A one-shot query by `conn`, admitted like a `QUERY_SUB`: the window after `offset`
    /// rows, or the `ERROR` that refuses it.
    pub(crate) async fn query_once(
        &self,
        conn: &ConnState,
        query_id: &str,
        map: &str,
        query: &Query,
        offset: usize,
    ) -> Result<Page, Box<Message>> {
        let access = conn.handle.access();
        let allowed = admission::admit_read(access, map)?;
        let fields = query_admit(query_id, map, query, None, allowed.as_ref())?;
        let auth = uses_auth(query)
            .then(|| access.subject().map(|s| auth_context(&s)))
            .flatten();
        let ask = Ask {
            map,
            query,
            fields,
            allowed: allowed.as_ref(),
            offset,
            auth,
        };
        let page = once::run(&self.shards, self.cluster.get(), ask).await?;
        page.map_err(|why| error::refusal(error::code::BAD_REQUEST, why))
    }

    /// A map's HTTP sync delta for `conn` (COMPAT §2.2): the LWW records that arrived since
    /// the client's `last` sync (see [`deltas`]), admitted like a read and limited to the
    /// fields its reader may see, with the timestamp to ask from next; or the `ERROR` that
    /// refuses it.
    pub(crate) async fn lww_delta(
        &self,
        conn: &ConnState,
        map: &str,
        last: &SyncSince,
        now_ms: u64,
    ) -> Result<HttpDelta, Box<Message>> {
        let allowed = admission::admit_read(conn.handle.access(), map)?;
        let cluster = self.cluster.get();
        let node_id = deltas::cursor_owner(cluster, &self.writes.clock.node_id());
        let from = deltas::resume_from(last, node_id.as_str());
        let delta = deltas::gather(&self.shards, cluster, map, from, now_ms).await?;
        let records = delta
            .records
            .into_iter()
            .map(|arrival| deltas::wire_record(arrival, allowed.as_ref()))
            .collect();
        let (millis, counter) = delta.synced;
        Ok(HttpDelta {
            map_name: map.into(),
            records,
            server_sync_timestamp: Timestamp::new(millis, counter, node_id),
        })
    }

    /// The bound on data requests waiting in the shards' queues (`maxConcurrentOperations`).
    pub fn queue_gate(&self) -> &std::sync::Arc<crate::data::gate::QueueGate> {
        self.shards.gate()
    }

    /// Cluster mode: writes to partitions other members own go through `forward` from now
    /// on. Set once; `false` if one was set already.
    pub fn set_forward(&self, forward: std::sync::Arc<dyn crate::data::forward::Forward>) -> bool {
        self.writes.forward.set(forward).is_ok()
    }

    /// Applies a part of a batch another member validated and forwarded here (CLUSTER.md §8),
    /// written by `author` (see [`crate::data::forward::remote_writer`]).
    pub async fn apply_forwarded(
        &self,
        writes: Vec<(String, crate::data::ops::Write)>,
        durable: bool,
        author: crate::connection::ConnId,
    ) -> crate::data::forward::PartAnswer {
        self.writes.apply_forwarded(writes, durable, author).await
    }

    /// Merges OR entries another member forwarded from a push (CLUSTER.md §8), pushed by
    /// `author` (see [`crate::data::forward::remote_writer`]).
    pub async fn push_forwarded(
        &self,
        map: &str,
        entries: Vec<topgun_core::OrMapEntry>,
        author: ConnId,
    ) {
        let _ = self.writes.push_local(author, map, entries).await;
    }

    /// Most ops one batch may hold (`ops_per_batch_max`).
    pub fn ops_per_batch_max(&self) -> usize {
        self.writes.guards.ops_per_batch_max
    }

    /// The interceptors, in their order.
    pub fn interceptors(&self) -> &Pipeline {
        &self.writes.pipeline
    }

    /// Serves one data request; `None` when the request has no reply.
    pub async fn dispatch(
        &self,
        conn: &mut ConnState,
        msg: Message,
        now_ms: u64,
    ) -> Option<Outbound> {
        let fields = match admission::admit(conn.handle.access(), &msg) {
            Ok(fields) => fields,
            Err(refused) => return Some(Outbound::Message(refused)),
        };
        match msg {
            Message::ClientOp(op) => {
                let concern = Concern {
                    level: op.write_concern,
                    timeout_ms: op.timeout,
                };
                Some(answer(
                    self.writes.write(conn, vec![op], concern, now_ms).await,
                ))
            }
            Message::OpBatch(batch) => {
                let concern = Concern {
                    level: batch.write_concern,
                    timeout_ms: batch.timeout,
                };
                Some(answer(
                    self.writes.write(conn, batch.ops, concern, now_ms).await,
                ))
            }
            Message::OrMapPushDiff(push) => self.writes.push(conn, push, now_ms).await,
            Message::SyncInit(s) => {
                let since = s.last_sync_timestamp.filter(|&t| t > 0);
                let root = self
                    .sync
                    .root(conn, MapKind::Lww, s.map_name.into(), since, now_ms);
                Some(synced(root.await, fields))
            }
            Message::OrMapSyncInit(s) => {
                let root = self
                    .sync
                    .root(conn, MapKind::Or, s.map_name.into(), None, now_ms);
                Some(synced(root.await, fields))
            }
            Message::MerkleReqBucket(r) => {
                Some(synced(self.sync.bucket(MapKind::Lww, r).await, fields))
            }
            Message::OrMapMerkleReqBucket(r) => {
                Some(synced(self.sync.bucket(MapKind::Or, r).await, fields))
            }
            Message::OrMapDiffRequest(r) => Some(synced(self.sync.or_diff(r).await, fields)),
            Message::QuerySub(sub) => {
                let (query_id, map) = (sub.query_id.to_string(), sub.map_name.to_string());
                let subscribed = self.queries.subscribe(&conn.handle, sub, fields, now_ms);
                if let Err(refused) = subscribed.await {
                    return Some(Outbound::Message(refused));
                }
                let changes = conn.maps.add_query(&query_id, &map);
                self.follow(conn, &map, changes).await
            }
            Message::QueryUnsub(unsub) => {
                let query_id = unsub.query_id.to_string();
                let changes = conn.maps.remove_query(&query_id);
                let request = QueryRequest::Unsubscribe {
                    conn: conn.handle.id,
                    query_id,
                };
                self.queries.send(request).await;
                self.follow(conn, "", changes).await
            }
            // Confirmed-apply cursors license tombstone pruning, which this server does not
            // do: tombstones are kept, so there is nothing to advance. Projected queries ask
            // for a Merkle sync of their rows; the QUERY_RESP already carries them whole.
            Message::ClientApplyAck(_) | Message::QuerySyncInit(_) => None,
            other => {
                let state = &mut conn.coordination;
                self.coordination
                    .serve(state, &conn.handle, other, now_ms)
                    .await
            }
        }
    }

    /// Subscribes the connection to the events of the kinds of `map` its live queries now
    /// hold, and unsubscribes it from those they no longer hold (COMPAT §4.2).
    async fn follow(&self, conn: &ConnState, map: &str, changes: Changes) -> Option<Outbound> {
        {
            let joined: Vec<(MapKind, &str)> = changes.join.iter().map(|k| (*k, map)).collect();
            self.follow_interest(&joined, &changes.leave);
        }
        for kind in changes.join {
            let subscribe = || Request::Subscribe {
                kind,
                map: map.to_owned(),
                conn: conn.handle.clone(),
            };
            if self.shards.send_each(subscribe).await.is_err() {
                return Some(Outbound::Message(error::shutting_down()));
            }
        }
        for (kind, map) in changes.leave {
            let id = conn.handle.id;
            let unsubscribe = || Request::Unsubscribe {
                kind,
                map: map.clone(),
                conn: id,
            };
            if self.shards.send_each(unsubscribe).await.is_err() {
                return Some(Outbound::Message(error::shutting_down()));
            }
        }
        None
    }

    /// Forgets tombstones older than `older_than` in every shard; returns the number of keys
    /// changed.
    pub async fn prune(&self, older_than: Timestamp) -> usize {
        let counts = self
            .shards
            .ask_all(|reply| Request::Prune {
                older_than: older_than.clone(),
                reply,
            })
            .await;
        match counts {
            Ok(counts) => counts.await.unwrap_or_default().into_iter().sum(),
            Err(_) => 0,
        }
    }

    /// Every record, shard by shard, each shard's part durable (for backups).
    pub async fn dump(&self) -> Result<Vec<StoredEntry>, String> {
        let parts = self
            .shards
            .ask_all(|reply| Request::Dump { reply })
            .await
            .map_err(|gone| gone.to_string())?;
        let parts = parts.await.ok_or_else(|| ShardGone.to_string())?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// Ends a connection that lived for one HTTP request: as [`DataPlane::disconnect`], and
    /// the interceptors are told (the rate limiter drops its bucket). Its address is not
    /// known here: `ConnInfo.ip` is `None`.
    pub async fn end_request(&self, conn: &mut ConnState) {
        self.disconnect(conn).await;
        let info = ConnInfo {
            id: conn.handle.id,
            ip: None,
        };
        self.writes.pipeline.on_disconnect(&info);
    }

    /// Drops a closed connection's subscriptions.
    pub async fn disconnect(&self, conn: &mut ConnState) {
        let id = conn.handle.id;
        self.follow_interest(&[], &conn.maps.take_all());
        // Every shard is told, even if one has stopped (only while shutting down).
        for shard in 0..self.shards.count() {
            let _ = self.shards.send(shard, Request::Forget { conn: id }).await;
        }
        self.queries.send(QueryRequest::Forget { conn: id }).await;
        self.coordination
            .disconnect(&mut conn.coordination, &conn.handle)
            .await;
    }
}

/// The shard that delivers a map's relayed events: the same one for every event of the map.
fn relay_shard(map: &str, count: usize) -> usize {
    topgun_core::hash::fnv1a(map) as usize % count
}

/// A reply, or the refusal that replaces it.
fn answer(out: Result<Outbound, Box<Message>>) -> Outbound {
    out.unwrap_or_else(Outbound::Message)
}

/// A sync reply, limited to the fields its reader may see.
fn synced(out: Result<Outbound, Box<Message>>, fields: Option<Fields>) -> Outbound {
    answer(out.map(|out| project(out, fields)))
}

/// A reply with every record value limited to `fields` (`None`: unlimited).
fn project(out: Outbound, fields: Option<Fields>) -> Outbound {
    use futures_util::FutureExt;
    let Some(fields) = fields else {
        return out;
    };
    match out {
        Outbound::Message(mut msg) => {
            project_message(&mut msg, &fields);
            Outbound::Message(msg)
        }
        Outbound::Later(replies) => Outbound::Later(
            async move {
                let mut msgs = replies.await;
                for m in &mut msgs {
                    project_message(m, &fields);
                }
                msgs
            }
            .boxed(),
        ),
        other @ (Outbound::Close { .. } | Outbound::Frame(_) | Outbound::Ping) => other,
    }
}
