//! The data path: routes a connection's data requests to partition shards and turns their
//! answers into replies (DESIGN §4.1).
//!
//! ```text
//! session → DataPlane::dispatch ─┬→ shard task 0 (Shard + Subscribers) ─→ store
//!                                ├→ shard task 1 …
//!                                └→ Outbound::Later (awaits the shards, in request order)
//! ```
//!
//! * Partition `p` (= `fnv1a(key) % 271`) belongs to shard `p % N`; only that shard's task
//!   touches its records.
//! * A request needing several shards (a batch spanning partitions, any Merkle request) is
//!   sent to each shard's FIFO queue in turn, so a connection's later request is seen by
//!   every shard after its earlier ones: a `SYNC_INIT` after an `OP_BATCH` sees the batch.
//! * Merkle requests gather the shards' partial leaf sums and rebuild the map's single
//!   logical tree ([`SplitTree`]): roots and buckets equal the TS client's for the same data.
//! * Queues are bounded: shard queues by `SHARD_QUEUE_LEN` (a full one makes the reader
//!   wait), replies by the connection's outbound queue.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use tokio::sync::{mpsc, oneshot};
use topgun_core::hash::{PARTITION_COUNT, partition_id};
use topgun_core::merkle::{MERKLE_DEPTH, path_depth};
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::WriteConcern;
use topgun_core::protocol::messages::{
    ClientOp, LeafRecord, MerkleReqBucket, OpAck, OpRejected, OrMapDiffRequest, OrMapDiffResponse,
    OrMapPushDiff, OrMapSyncRespLeaf, OrMapSyncRespRoot, QuerySub, SyncRespBuckets, SyncRespLeaf,
    SyncRespRoot,
};
use topgun_core::value::CompactString;
use topgun_core::{Hlc, OrMapEntry, SplitTree, Timestamp};

use crate::config::Guards;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::coordination::counters::Counters;
use crate::coordination::internal::{self, InternalWriter};
use crate::coordination::locks::service::Locks;
use crate::coordination::topics::{TopicSubs, Topics};
use crate::data::extensions;
use crate::data::ops::{self, Write};
use crate::data::shard::Shard;
use crate::data::shard::service::{self as shard_task, Persist, Request};
use crate::error::{self, code};
use crate::journal::service::Journals;
use crate::journal::{JOURNAL_MAP, JournalEvent, Retention};
use crate::metrics::Metrics;
use crate::query::{Queries, QueryRequest};
use crate::security::access::{ConnAccess, fields_used, project_message};
use crate::security::auth::Principal;
use crate::security::interceptor::{
    AppliedOp, Interceptor, OpContext, Pipeline, RateLimiter, ServerTimestamps, Verdict,
};
use crate::security::policy::{Action, Decision, Fields, Resource, Subject};
use crate::storage::store::{MapKind, StoredEntry};

/// Requests waiting for one shard.
const SHARD_QUEUE_LEN: usize = 1024;

/// The services a connection has used (each is told when it closes).
#[derive(Debug, Default, Clone, Copy)]
struct Uses {
    locks: bool,
    counters: bool,
    journal: bool,
}

/// What one connection holds in the data path.
#[derive(Debug)]
pub struct ConnState {
    pub handle: ConnHandle,
    /// Maps whose events this connection receives.
    maps: HashSet<(MapKind, String)>,
    maps_max: usize,
    topics: TopicSubs,
    /// Which services must hear of the disconnect.
    uses: Uses,
}

impl ConnState {
    pub fn new(handle: ConnHandle, maps_max: usize) -> Self {
        Self {
            handle,
            maps: HashSet::new(),
            maps_max,
            topics: TopicSubs::default(),
            uses: Uses::default(),
        }
    }

    /// Records who is authenticated on the connection (after every frame: an `AUTH` may
    /// have changed it, or a logout ended it). With authentication off, every connection is
    /// an anonymous subject from the start.
    pub fn set_principal(&mut self, principal: Option<&Principal>, auth_required: bool) {
        let wanted = match principal {
            Some(p) => Some((Some(p.user_id.as_str()), p.roles.as_slice())),
            None if !auth_required => Some((None, &[][..])),
            None => None,
        };
        if !self.handle.access().subject_is(wanted) {
            let subject = wanted.map(|(user, roles)| Subject {
                user_id: user.map(str::to_owned),
                roles: roles.to_vec(),
            });
            self.handle.access().set_subject(subject);
        }
    }

    /// The authenticated user, if any.
    fn user(&self) -> Option<String> {
        self.handle.access().user_id()
    }
}

/// What the data plane serves besides maps, and how it guards them.
#[derive(Debug)]
pub struct Services {
    pub topics_per_connection_max: usize,
    pub guards: Guards,
    /// Interceptors run after the built-in ones (rate limiter, server timestamps).
    pub interceptors: Vec<Arc<dyn Interceptor>>,
    pub journal: Retention,
    /// The journal events storage recovered.
    pub recovered_journal: Vec<JournalEvent>,
    /// This server's node id, named in journal events.
    pub node_id: String,
}

/// The router in front of the shard tasks; shared by every connection.
pub struct DataPlane {
    shards: Vec<mpsc::Sender<Request>>,
    /// The live-query task.
    queries: Queries,
    topics: Topics,
    locks: Locks,
    counters: Counters,
    /// `None` with the journal turned off.
    journal: Option<Journals>,
    node_id: String,
    guards: Guards,
    pipeline: Pipeline,
    /// The level a durable commit reaches (`PERSISTED` with a synced log).
    durable_level: WriteConcern,
    /// Whether acknowledgements wait for the log (not in `memory` durability).
    ack_after_log: bool,
    /// std Mutex: held for one batch's validation, never across an `.await`.
    hlc: Arc<Mutex<Hlc>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Starts the shard tasks over `loaded` (the store's entries, then the log's, in order).
    pub fn start(
        shard_count: usize,
        loaded: Vec<StoredEntry>,
        persist: &Persist,
        ack_after_log: bool,
        hlc: Hlc,
        metrics: Arc<Metrics>,
        services: Services,
    ) -> Self {
        let shard_count = shard_count.clamp(1, PARTITION_COUNT as usize);
        let mut loaded = loaded;
        // Journal events are the journal's, never a map's.
        loaded.retain(|e| e.map != JOURNAL_MAP);
        let internal = internal::recover(&loaded);
        let journal = services.journal.enabled().then(|| {
            Journals::start(
                services.journal,
                services.recovered_journal,
                services.node_id.clone(),
            )
        });
        let mut parts: Vec<Vec<StoredEntry>> = vec![Vec::new(); shard_count];
        for entry in loaded {
            parts[partition_id(&entry.key) as usize % shard_count].push(entry);
        }
        let durable_level = match persist {
            Persist::Wal { level, .. } => *level,
            Persist::Store(_) => WriteConcern::Applied,
        };
        let (queries, query_requests) = Queries::channel();
        let shards: Vec<_> = parts
            .into_iter()
            .map(|entries| {
                let mut shard = match &journal {
                    Some(_) => Shard::with_journal(),
                    None => Shard::new(),
                };
                shard.load(entries);
                let (tx, rx) = mpsc::channel(SHARD_QUEUE_LEN);
                tokio::spawn(shard_task::run(
                    shard,
                    rx,
                    persist.clone(),
                    queries.clone(),
                    Arc::clone(&metrics),
                    journal.as_ref().map(Journals::feed),
                ));
                tx
            })
            .collect();
        tokio::spawn(crate::query::run(
            queries.clone(),
            query_requests,
            shards.clone(),
            services.guards.queries_per_connection_max,
        ));
        let hlc = Arc::new(Mutex::new(hlc));
        let writer = InternalWriter::new(shards.clone(), Arc::clone(&hlc));
        Self {
            queries,
            topics: Topics::new(services.topics_per_connection_max),
            journal,
            node_id: services.node_id,
            guards: services.guards,
            pipeline: pipeline(&services.guards, services.interceptors),
            locks: Locks::start(internal.fencing_high, writer.clone()),
            counters: Counters::start(internal.counters, writer),
            shards,
            durable_level,
            ack_after_log,
            hlc,
            metrics,
        }
    }

    /// The interceptors, in their order.
    pub fn interceptors(&self) -> &Pipeline {
        &self.pipeline
    }

    fn shard_of(&self, key: &str) -> usize {
        partition_id(key) as usize % self.shards.len()
    }

    fn hlc(&self) -> std::sync::MutexGuard<'_, Hlc> {
        // The clock is valid after a panic elsewhere: every update is a few field writes.
        self.hlc.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves one data request; `None` when the request has no reply.
    pub async fn dispatch(
        &self,
        conn: &mut ConnState,
        msg: Message,
        now_ms: u64,
    ) -> Option<Outbound> {
        let fields = match Self::read_gate(conn, &msg) {
            Ok(fields) => fields,
            Err(refused) => return Some(Outbound::Message(refused)),
        };
        let out = self.serve_data(conn, msg, now_ms).await?;
        Some(match fields {
            Some(fields) => projected(out, fields),
            None => out,
        })
    }

    /// For a request that reads a map's records: `Err` (`ERROR 403`) when the connection may
    /// not read the map, else the fields it may see (`None`: all, or not a read).
    fn read_gate(conn: &ConnState, msg: &Message) -> Result<Option<Fields>, Box<Message>> {
        let (map, or) = match msg {
            Message::SyncInit(s) => (&s.map_name, false),
            Message::MerkleReqBucket(r) => (&r.map_name, false),
            Message::OrMapSyncInit(s) => (&s.map_name, true),
            Message::OrMapMerkleReqBucket(r) => (&r.map_name, true),
            Message::OrMapDiffRequest(r) => (&r.map_name, true),
            _ => return Ok(None),
        };
        match conn
            .handle
            .access()
            .decide(Resource::Map, map, Action::Read)
        {
            // OR entry hashes cover the values: a reader limited to some fields could
            // recover a hidden one by guessing it against the hashes, so it may not sync
            // OR-Maps at all (its events and queries are limited as usual).
            Decision::Allow(Some(_)) if or => Err(error::refusal(
                code::FORBIDDEN,
                format!(
                    "map {map:?} may be read only in part, and an OR-Map's hashes cover whole \
                     values: OR-Map sync is not allowed"
                ),
            )),
            Decision::Allow(fields) => Ok(fields),
            Decision::Deny => Err(error::forbidden(Resource::Map, map, Action::Read)),
        }
    }

    async fn serve_data(
        &self,
        conn: &mut ConnState,
        msg: Message,
        now_ms: u64,
    ) -> Option<Outbound> {
        let out = match msg {
            Message::ClientOp(op) => {
                let requested = op.write_concern;
                self.write(conn, vec![op], requested, now_ms).await
            }
            Message::OpBatch(batch) => {
                let requested = batch.write_concern;
                self.write(conn, batch.ops, requested, now_ms).await
            }
            Message::SyncInit(s) => {
                let since = s.last_sync_timestamp.filter(|&t| t > 0);
                self.sync_root(conn, MapKind::Lww, s.map_name.into(), since, now_ms)
                    .await
            }
            Message::OrMapSyncInit(s) => {
                self.sync_root(conn, MapKind::Or, s.map_name.into(), None, now_ms)
                    .await
            }
            Message::MerkleReqBucket(r) => self.bucket(MapKind::Lww, r).await,
            Message::OrMapMerkleReqBucket(r) => self.bucket(MapKind::Or, r).await,
            Message::OrMapDiffRequest(r) => self.or_diff(r).await,
            Message::OrMapPushDiff(p) => {
                let decision =
                    conn.handle
                        .access()
                        .decide(Resource::Map, &p.map_name, Action::Write);
                if !decision.allowed() {
                    let refused = error::forbidden(Resource::Map, &p.map_name, Action::Write);
                    return Some(Outbound::Message(refused));
                }
                return self.or_push(conn, p, now_ms).await;
            }
            // Confirmed-apply cursors license tombstone pruning, which this server does not
            // do: tombstones are kept, so there is nothing to advance. Projected queries ask
            // for a Merkle sync of their rows; the QUERY_RESP already carries them whole.
            Message::ClientApplyAck(_) | Message::QuerySyncInit(_) => return None,
            Message::QuerySub(sub) => return self.query_sub(conn, sub, now_ms).await,
            Message::QueryUnsub(unsub) => {
                let request = QueryRequest::Unsubscribe {
                    conn: conn.handle.id,
                    query_id: unsub.query_id.to_string(),
                };
                self.queries.send(request).await;
                return None;
            }
            other => return self.coordinate(conn, other, now_ms).await,
        };
        Some(out.unwrap_or_else(Outbound::Message))
    }

    /// Topics, locks, counters, and the extensions this server declines.
    async fn coordinate(
        &self,
        conn: &mut ConnState,
        msg: Message,
        now_ms: u64,
    ) -> Option<Outbound> {
        let refusal = |(code, why): (u32, String)| Outbound::Message(error::refusal(code, why));
        if let Some((resource, name, actions)) = coordination_target(&msg)
            && let Some(action) = actions
                .iter()
                .find(|a| !conn.handle.access().decide(resource, name, **a).allowed())
        {
            return Some(Outbound::Message(error::forbidden(resource, name, *action)));
        }
        match msg {
            Message::TopicSub(t) => {
                let subscribed = self
                    .topics
                    .subscribe(&mut conn.topics, &conn.handle, &t.topic);
                subscribed.err().map(refusal)
            }
            Message::TopicUnsub(t) => {
                self.topics
                    .unsubscribe(&mut conn.topics, conn.handle.id, &t.topic);
                None
            }
            Message::TopicPub(p) => {
                let sender = conn.user().unwrap_or_else(|| {
                    // Without authentication there is no user: name the connection.
                    format!("connection:{}", conn.handle.id)
                });
                let outcome =
                    self.topics
                        .publish(conn.handle.id, Some(&sender), &p.topic, p.data, now_ms);
                match outcome {
                    Ok(delivery) => {
                        self.metrics.events(delivery.queued);
                        None
                    }
                    Err(refused) => Some(refusal(refused)),
                }
            }
            Message::LockRequest(r) => {
                conn.uses.locks = true;
                self.locks
                    .request(&conn.handle, &r.request_id, &r.name, r.ttl)
                    .await;
                None
            }
            Message::LockRelease(r) => {
                conn.uses.locks = true;
                let request_id = r.request_id.as_deref().unwrap_or_default();
                self.locks
                    .release(&conn.handle, request_id, &r.name, r.fencing_token)
                    .await;
                None
            }
            Message::CounterRequest(r) => {
                conn.uses.counters = true;
                Some(self.counters.request(&conn.handle, &r.name).await)
            }
            Message::CounterSync(s) => {
                conn.uses.counters = true;
                Some(self.counters.sync(&conn.handle, s).await)
            }
            Message::JournalSubscribe(_)
            | Message::JournalUnsubscribe(_)
            | Message::JournalRead(_) => self.journal_request(conn, msg).await,
            other => Some(Outbound::Message(
                extensions::declined(other)
                    .unwrap_or_else(|other| error::not_served(other.type_name())),
            )),
        }
    }

    /// `JOURNAL_SUBSCRIBE`, `JOURNAL_UNSUBSCRIBE` and `JOURNAL_READ`.
    async fn journal_request(&self, conn: &mut ConnState, msg: Message) -> Option<Outbound> {
        let Some(journal) = &self.journal else {
            return Some(Outbound::Message(error::refusal(
                code::NOT_IMPLEMENTED,
                "the event journal is turned off on this server (journal_capacity = 0)",
            )));
        };
        conn.uses.journal = true;
        // Naming a map one may not read is refused outright (the events would be left out).
        let named = match &msg {
            Message::JournalSubscribe(s) => s.map_name.as_deref(),
            Message::JournalRead(r) => r.map_name.as_deref(),
            _ => None,
        };
        if let Some(map) = named
            && !conn
                .handle
                .access()
                .decide(Resource::Map, map, Action::Read)
                .allowed()
        {
            return Some(Outbound::Message(error::forbidden(
                Resource::Map,
                map,
                Action::Read,
            )));
        }
        match msg {
            Message::JournalSubscribe(s) => journal.subscribe(&conn.handle, s).await,
            Message::JournalUnsubscribe(u) => {
                journal
                    .unsubscribe(conn.handle.id, &u.subscription_id)
                    .await;
                None
            }
            Message::JournalRead(r) => Some(journal.read(&conn.handle, r, &self.node_id).await),
            _ => None,
        }
    }

    /// Forgets tombstones older than `older_than` in every shard; returns the number of keys
    /// changed.
    pub async fn prune(&self, older_than: Timestamp) -> usize {
        let counts = self
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
        let gone = || "a shard stopped; the server is shutting down".to_owned();
        let parts = self
            .ask_all(|reply| Request::Dump { reply })
            .await
            .map_err(|_| gone())?;
        Ok(parts
            .await
            .ok_or_else(gone)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Drops a closed connection's subscriptions.
    pub async fn disconnect(&self, conn: &mut ConnState) {
        let id = conn.handle.id;
        for shard in &self.shards {
            let _ = shard.send(Request::Forget { conn: id }).await;
        }
        self.queries.send(QueryRequest::Forget { conn: id }).await;
        self.topics.forget(&mut conn.topics, id);
        if conn.uses.locks {
            self.locks.disconnect(id).await;
        }
        if conn.uses.counters {
            self.counters.disconnect(id).await;
        }
        if let (true, Some(journal)) = (conn.uses.journal, &self.journal) {
            journal.disconnect(id).await;
        }
    }

    /// `QUERY_SUB`: answered by the query task through the event queue (`QUERY_RESP`, then
    /// `QUERY_UPDATE`s), or here with `ERROR` for a reserved map name.
    async fn query_sub(&self, conn: &ConnState, sub: QuerySub, now_ms: u64) -> Option<Outbound> {
        let map = sub.map_name.to_string();
        if let Err(refused) = check_map(&map) {
            return Some(Outbound::Message(refused));
        }
        let allowed = match conn
            .handle
            .access()
            .decide(Resource::Map, &map, Action::Read)
        {
            Decision::Deny => {
                return Some(Outbound::Message(error::forbidden(
                    Resource::Map,
                    &map,
                    Action::Read,
                )));
            }
            Decision::Allow(allowed) => allowed,
        };
        let mut fields = sub.fields;
        if let Some(allowed) = &allowed {
            if let Some(hidden) = fields_used(&sub.query)
                .into_iter()
                .find(|f| !allowed.contains(f))
            {
                let why = format!(
                    "query {:?}: field {hidden:?} of map {map:?} may not be read, so the query \
                     may not filter, sort or group by it",
                    sub.query_id
                );
                return Some(Outbound::Message(error::refusal(code::FORBIDDEN, why)));
            }
            // Rows show at most the fields the reader may see.
            fields = Some(match fields {
                Some(asked) => asked.into_iter().filter(|f| allowed.contains(f)).collect(),
                None => allowed.iter().cloned().collect(),
            });
        }
        let request = QueryRequest::Subscribe {
            conn: conn.handle.clone(),
            query_id: sub.query_id.to_string(),
            map,
            query: Box::new(sub.query),
            fields,
            allowed,
            now_ms,
        };
        self.queries.send(request).await;
        None
    }

    async fn send(&self, shard: usize, request: Request) -> Result<(), Box<Message>> {
        self.shards[shard]
            .send(request)
            .await
            .map_err(|_| error::shutting_down())
    }

    /// `CLIENT_OP` and `OP_BATCH`: refused ops get `OP_REJECTED` each, the rest are applied,
    /// then one `OP_ACK` names the last op id.
    ///
    /// The strongest write concern asked for (by the batch or any op) decides when the ack
    /// is sent: none, or `PERSISTED`/`REPLICATED`, waits for durability (acknowledged means
    /// durable by default); `APPLIED` or less is acknowledged once applied. `achievedLevel`
    /// is the weakest level any part of the batch reached.
    async fn write(
        &self,
        conn: &mut ConnState,
        ops: Vec<ClientOp>,
        requested: Option<WriteConcern>,
        now_ms: u64,
    ) -> Result<Outbound, Box<Message>> {
        let requested = ops
            .iter()
            .filter_map(|op| op.write_concern)
            .chain(requested)
            .max_by_key(|wc| rank(*wc));
        let durable = self.ack_after_log
            && requested.is_none_or(|wc| rank(wc) >= rank(WriteConcern::Persisted));
        let started = std::time::Instant::now();
        if ops.len() > self.guards.ops_per_batch_max {
            return Err(error::refusal(
                code::TOO_LARGE,
                format!(
                    "the batch holds {} ops; at most {} are allowed (nothing was applied)",
                    ops.len(),
                    self.guards.ops_per_batch_max
                ),
            ));
        }
        let Validated {
            per_shard,
            mut frames,
            last_id,
            applied,
        } = self.validate_batch(ops, conn, now_ms);
        self.subscribe_writer(conn, &per_shard).await?;
        let conn = conn.handle.id;
        let mut pending = Vec::new();
        for (shard, writes) in per_shard.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let (done, applied) = oneshot::channel();
            let request = Request::Apply {
                conn,
                writes,
                durable,
                done,
            };
            self.send(shard, request).await?;
            pending.push(applied);
        }
        let metrics = Arc::clone(&self.metrics);
        let pipeline = self.pipeline.clone();
        let mut achieved = if durable {
            self.durable_level
        } else {
            WriteConcern::Applied
        };
        Ok(Outbound::Later(
            async move {
                for result in join_all(pending).await {
                    match result {
                        Ok(Ok(level)) => achieved = weakest(achieved, level),
                        Ok(Err((code, why))) => {
                            frames.push(*error::refusal(code, why));
                            return frames;
                        }
                        Err(_) => {
                            frames.push(*error::shutting_down());
                            return frames;
                        }
                    }
                }
                metrics.batch_applied(started.elapsed());
                for op in &applied {
                    pipeline.on_after_op(op);
                }
                if let Some(last_id) = last_id {
                    frames.push(Message::OpAck(OpAck {
                        last_id,
                        achieved_level: Some(achieved),
                        results: None,
                    }));
                }
                frames
            }
            .boxed(),
        ))
    }

    /// Validates a batch's ops in order: the accepted ones by shard, an `OP_REJECTED` for
    /// each refused one, and the id the `OP_ACK` may name.
    fn validate_batch(&self, ops: Vec<ClientOp>, conn: &ConnState, now_ms: u64) -> Validated {
        let any_id = ops.iter().any(|op| op.id.is_some());
        let mut last_id = None;
        let mut retry_from = None;
        let mut frames = Vec::new();
        let mut applied = Vec::new();
        let mut per_shard: Vec<Vec<(String, Write)>> = vec![Vec::new(); self.shards.len()];
        let user_id = conn.handle.access().user_id();
        let user = user_id.as_deref();
        let mut hlc = self.hlc();
        for (at, op) in ops.into_iter().enumerate() {
            let id = op.id.clone();
            let mut ctx = OpContext {
                conn: conn.handle.id,
                user,
                now_ms,
                hlc: &mut hlc,
            };
            // The map is the admitted op's: an interceptor may have changed it.
            let checked = self
                .admit(conn.handle.access(), &mut ctx, op)
                .and_then(|op| {
                    let map = op.map_name.to_string();
                    ops::validate(*op, ctx.hlc, now_ms).map(|write| (map, write))
                });
            match checked {
                Ok((map, write)) => {
                    self.metrics.op(write.kind());
                    if !self.pipeline.is_empty() {
                        applied.push(AppliedOp {
                            conn: conn.handle.id,
                            map: map.clone(),
                            key: write.key().to_owned(),
                            kind: write.kind(),
                        });
                    }
                    per_shard[self.shard_of(write.key())].push((map, write));
                }
                Err(refused) => {
                    self.metrics.op_rejected();
                    if refused.retry {
                        retry_from.get_or_insert(at);
                    }
                    let rate_limited = refused.retry && refused.code == code::TOO_MANY;
                    frames.push(Message::OpRejected(OpRejected {
                        op_id: id.clone().unwrap_or_else(|| "unknown".into()),
                        reason: refused.reason.into(),
                        code: Some(refused.code),
                    }));
                    // Over a rate limit, the rest of the batch would be refused alike, one
                    // OP_REJECTED each: it is left unprocessed instead (neither applied nor
                    // refused; unacknowledged, so the client sends it again).
                    if rate_limited {
                        break;
                    }
                }
            }
            // The ack covers every op up to the first one the client should send again.
            if retry_from.is_none() {
                last_id = id.or(last_id);
            }
        }
        // Without any op id the ack is "unknown" (as the TopGun server sends); with ids but
        // a retryable refusal before any of them, nothing may be acknowledged.
        let last_id = match (last_id, any_id) {
            (Some(id), _) => Some(id),
            (None, false) if retry_from.is_none() => Some("unknown".into()),
            (None, _) => None,
        };
        Validated {
            per_shard,
            frames,
            last_id,
            applied,
        }
    }

    /// An op's way in before validation: the interceptors may change or drop it, its writer
    /// must be allowed to write the (resulting) map, and its value must fit
    /// `value_bytes_max`.
    fn admit(
        &self,
        access: &ConnAccess,
        ctx: &mut OpContext<'_>,
        op: ClientOp,
    ) -> Result<Box<ClientOp>, ops::Rejection> {
        let may_write = |map: &str| {
            if access.decide(Resource::Map, map, Action::Write).allowed() {
                return Ok(());
            }
            Err(ops::Rejection {
                code: code::FORBIDDEN,
                reason: error::forbidden_reason(Resource::Map, map, Action::Write),
                retry: false,
            })
        };
        // Checked before the interceptors (a refused op spends no rate-limit tokens) and
        // again after, on the map the op now names.
        may_write(&op.map_name)?;
        let op = match self.pipeline.on_before_op(ctx, Box::new(op)) {
            Verdict::Pass(op) => op,
            Verdict::Drop(rejection) => return Err(rejection),
        };
        may_write(&op.map_name)?;
        let max = self.guards.value_bytes_max;
        if max > 0 {
            let size = value_bytes(&op);
            if size > max {
                return Err(ops::Rejection {
                    code: code::TOO_LARGE,
                    reason: format!(
                        "the value of key {:?} is {size} bytes; at most {max} are allowed",
                        op.key
                    ),
                    retry: false,
                });
            }
        }
        Ok(op)
    }

    /// Subscribes a connection to the events of the maps it writes to, so that a client
    /// hears of other clients' writes to a map even before it syncs it.
    async fn subscribe_writer(
        &self,
        conn: &mut ConnState,
        writes: &[Vec<(String, Write)>],
    ) -> Result<(), Box<Message>> {
        for (map, write) in writes.iter().flatten() {
            let slot = (write.map_kind(), map.clone());
            if conn.maps.contains(&slot) || conn.maps.len() >= conn.maps_max {
                continue;
            }
            conn.maps.insert(slot);
            for shard in 0..self.shards.len() {
                let request = Request::Subscribe {
                    kind: write.map_kind(),
                    map: map.clone(),
                    conn: conn.handle.clone(),
                };
                self.send(shard, request).await?;
            }
        }
        Ok(())
    }

    /// Sends a leaf-sums request to every shard; the future rebuilds the logical tree.
    async fn gather_sums(
        &self,
        kind: MapKind,
        map: &str,
        path: &str,
        subscribe: Option<&ConnHandle>,
    ) -> Result<BoxFuture<'static, Option<SplitTree>>, Box<Message>> {
        let parts = self
            .ask_all(|reply| Request::Leaves {
                kind,
                map: map.to_owned(),
                path: path.to_owned(),
                subscribe: subscribe.cloned(),
                reply,
            })
            .await?;
        Ok(async move {
            let mut tree = SplitTree::new();
            for sums in parts.await? {
                tree.add(&sums);
            }
            Some(tree)
        }
        .boxed())
    }

    /// Puts one request on every shard's queue (built around its reply channel); the future
    /// yields every shard's answer, or `None` if a shard is gone.
    async fn ask_all<T: Send + 'static>(
        &self,
        mut request: impl FnMut(oneshot::Sender<T>) -> Request,
    ) -> Result<BoxFuture<'static, Option<Vec<T>>>, Box<Message>> {
        let mut replies = Vec::with_capacity(self.shards.len());
        for shard in 0..self.shards.len() {
            let (reply, answer) = oneshot::channel();
            self.send(shard, request(reply)).await?;
            replies.push(answer);
        }
        Ok(async move {
            join_all(replies)
                .await
                .into_iter()
                .map(Result::ok)
                .collect()
        }
        .boxed())
    }

    /// `SYNC_INIT` / `ORMAP_SYNC_INIT`: subscribes the connection to the map's events and
    /// answers with the root hash and the server clock.
    ///
    /// A client that says when it last synced (`lastSyncTimestamp`, the millis of the last
    /// root timestamp it was sent) first gets the records changed since then as
    /// `SYNC_RESP_LEAF`s, before the root: merged, they usually make its root equal ours, and
    /// the resync moves only what changed instead of whole leaves. Whatever the delta misses
    /// (a write stamped by a clock behind ours) leaves the roots different, and the client
    /// walks the tree as always.
    async fn sync_root(
        &self,
        conn: &mut ConnState,
        kind: MapKind,
        map: String,
        since_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Outbound, Box<Message>> {
        check_map(&map)?;
        let subscribe = conn.maps.contains(&(kind, map.clone()));
        if !subscribe && conn.maps.len() >= conn.maps_max {
            return Err(error::refusal(
                code::TOO_MANY,
                format!(
                    "this connection already syncs {} maps, the most allowed; map {map:?} is \
                     not synced",
                    conn.maps_max
                ),
            ));
        }
        conn.maps.insert((kind, map.clone()));
        self.metrics.merkle_request(kind);
        let delta = match since_ms {
            Some(since_ms) => Some(
                self.ask_all(|reply| Request::LwwSince {
                    map: map.clone(),
                    since_ms,
                    max: DELTA_RECORDS_MAX,
                    reply,
                })
                .await?,
            ),
            None => None,
        };
        let tree = self.gather_sums(kind, &map, "", Some(&conn.handle)).await?;
        let timestamp = self.hlc().now(now_ms);
        Ok(Outbound::Later(
            async move {
                let mut out = match delta {
                    Some(parts) => delta_leaves(&map, parts.await),
                    None => Vec::new(),
                };
                let Some(tree) = tree.await else {
                    return vec![*error::shutting_down()];
                };
                let root_hash = tree.node_hash("").unwrap_or(0);
                let msg = match kind {
                    MapKind::Lww => Message::SyncRespRoot(SyncRespRoot {
                        map_name: map.into(),
                        root_hash,
                        timestamp,
                    }),
                    MapKind::Or => Message::OrMapSyncRespRoot(OrMapSyncRespRoot {
                        map_name: map.into(),
                        root_hash,
                        timestamp,
                        covering_epoch: None,
                        full_resync: None,
                    }),
                };
                out.push(msg);
                out
            }
            .boxed(),
        ))
    }

    /// `MERKLE_REQ_BUCKET` / `ORMAP_MERKLE_REQ_BUCKET`: an internal node's children, or a
    /// leaf's records.
    async fn bucket(&self, kind: MapKind, req: MerkleReqBucket) -> Result<Outbound, Box<Message>> {
        let map = req.map_name.to_string();
        check_map(&map)?;
        let depth =
            path_depth(&req.path).map_err(|e| error::refusal(code::BAD_REQUEST, e.to_string()))?;
        self.metrics.merkle_request(kind);
        if depth == MERKLE_DEPTH {
            return match kind {
                MapKind::Lww => self.lww_leaf(map, req.path.to_string()).await,
                MapKind::Or => self.or_leaf(map, req.path.to_string()).await,
            };
        }
        let path = req.path.to_string();
        let tree = self.gather_sums(kind, &map, &path, None).await?;
        Ok(Outbound::Later(
            async move {
                let Some(tree) = tree.await else {
                    return vec![*error::shutting_down()];
                };
                let buckets = tree
                    .buckets(&path)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(digit, hash)| (digit.to_string(), hash))
                    .collect();
                let body = SyncRespBuckets {
                    map_name: map.into(),
                    path: path.into(),
                    buckets,
                };
                vec![match kind {
                    MapKind::Lww => Message::SyncRespBuckets(body),
                    MapKind::Or => Message::OrMapSyncRespBuckets(body),
                }]
            }
            .boxed(),
        ))
    }

    async fn lww_leaf(&self, map: String, path: String) -> Result<Outbound, Box<Message>> {
        let parts = self
            .ask_all(|reply| Request::LwwLeaf {
                map: map.clone(),
                path: path.clone(),
                reply,
            })
            .await?;
        Ok(joined_reply(parts, move |records| {
            Message::SyncRespLeaf(SyncRespLeaf {
                map_name: map.into(),
                path: path.into(),
                records,
            })
        }))
    }

    async fn or_leaf(&self, map: String, path: String) -> Result<Outbound, Box<Message>> {
        let parts = self
            .ask_all(|reply| Request::OrLeaf {
                map: map.clone(),
                path: path.clone(),
                reply,
            })
            .await?;
        Ok(joined_reply(parts, move |entries| {
            Message::OrMapSyncRespLeaf(OrMapSyncRespLeaf {
                map_name: map.into(),
                path: path.into(),
                entries,
                covering_epoch: None,
            })
        }))
    }

    /// `ORMAP_DIFF_REQUEST`: the entries of the named keys, in the order asked.
    async fn or_diff(&self, req: OrMapDiffRequest) -> Result<Outbound, Box<Message>> {
        let map = req.map_name.to_string();
        check_map(&map)?;
        let total = req.keys.len();
        let mut per_shard: Vec<Vec<(usize, String)>> = vec![Vec::new(); self.shards.len()];
        for (at, key) in req.keys.into_iter().enumerate() {
            per_shard[self.shard_of(&key)].push((at, key));
        }
        let mut replies = Vec::new();
        for (shard, keys) in per_shard.into_iter().enumerate() {
            if keys.is_empty() {
                continue;
            }
            let (reply, entries) = oneshot::channel();
            let map = map.clone();
            self.send(shard, Request::OrEntries { map, keys, reply })
                .await?;
            replies.push(entries);
        }
        Ok(Outbound::Later(
            async move {
                let mut entries = vec![OrMapEntry::default(); total];
                for part in join_all(replies).await {
                    let Ok(part) = part else {
                        return vec![*error::shutting_down()];
                    };
                    for (at, entry) in part {
                        entries[at] = entry;
                    }
                }
                vec![Message::OrMapDiffResponse(OrMapDiffResponse {
                    map_name: map.into(),
                    entries,
                    covering_epoch: None,
                })]
            }
            .boxed(),
        ))
    }

    /// `ORMAP_PUSH_DIFF`: merged without a reply — an `OP_ACK` here would tell the TS
    /// client that unrelated pending ops were stored (PROTOCOL.md §9.5).
    async fn or_push(
        &self,
        conn: &ConnState,
        push: OrMapPushDiff,
        now_ms: u64,
    ) -> Option<Outbound> {
        let map = push.map_name.to_string();
        if let Err(refused) = check_map(&map)
            .and_then(|()| self.check_push(&push))
            .and_then(|()| self.intercept_push(conn, &push, now_ms))
        {
            return Some(Outbound::Message(refused));
        }
        let conn = conn.handle.id;
        let mut per_shard: Vec<Vec<OrMapEntry>> = vec![Vec::new(); self.shards.len()];
        for entry in push.entries {
            per_shard[self.shard_of(&entry.key)].push(entry);
        }
        for (shard, entries) in per_shard.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let map = map.clone();
            if let Err(gone) = self.send(shard, Request::Push { conn, map, entries }).await {
                return Some(Outbound::Message(gone));
            }
        }
        None
    }
}

impl DataPlane {
    /// The interceptors' say on a push (the rate limiter charges its records and
    /// tombstones); a refusal refuses the whole push, with nothing applied.
    fn intercept_push(
        &self,
        conn: &ConnState,
        push: &OrMapPushDiff,
        now_ms: u64,
    ) -> Result<(), Box<Message>> {
        if self.pipeline.is_empty() {
            return Ok(());
        }
        let items = push
            .entries
            .iter()
            .map(|e| e.records.len() + e.tombstones.len())
            .sum();
        let user_id = conn.handle.access().user_id();
        let mut hlc = self.hlc();
        let mut ctx = OpContext {
            conn: conn.handle.id,
            user: user_id.as_deref(),
            now_ms,
            hlc: &mut hlc,
        };
        self.pipeline
            .on_before_push(&mut ctx, &push.map_name, items)
            .map_err(|refused| error::refusal(refused.code, refused.reason))
    }

    /// The limits a push shares with op batches: records and tombstones count as ops (and a
    /// key's, as journal events of one log frame, stay below 65,536), and each record's value
    /// must fit `value_bytes_max`. Refused whole, with nothing applied.
    fn check_push(&self, push: &OrMapPushDiff) -> Result<(), Box<Message>> {
        let per_entry = |e: &OrMapEntry| e.records.len() + e.tombstones.len();
        let total: usize = push.entries.iter().map(per_entry).sum();
        let max = self.guards.ops_per_batch_max;
        let key_max = crate::journal::EVENTS_PER_FRAME_MAX - 1;
        if total > max || push.entries.iter().any(|e| per_entry(e) > key_max) {
            return Err(error::refusal(
                code::TOO_LARGE,
                format!(
                    "the push holds {total} records and tombstones; at most {max} are allowed, \
                     and {key_max} per key (nothing was applied)"
                ),
            ));
        }
        let value_max = self.guards.value_bytes_max;
        if value_max > 0 {
            use topgun_core::protocol::encode_standalone;
            for entry in &push.entries {
                if let Some(big) = entry
                    .records
                    .iter()
                    .map(|r| encode_standalone(&r.value).len())
                    .find(|size| *size > value_max)
                {
                    return Err(error::refusal(
                        code::TOO_LARGE,
                        format!(
                            "a value of key {:?} is {big} bytes; at most {value_max} are \
                             allowed (nothing was applied)",
                            entry.key
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The reply built from every shard's part, joined in shard order, once all have answered.
fn joined_reply<T: Send + 'static>(
    parts: BoxFuture<'static, Option<Vec<Vec<T>>>>,
    reply: impl FnOnce(Vec<T>) -> Message + Send + 'static,
) -> Outbound {
    Outbound::Later(
        async move {
            match parts.await {
                Some(parts) => vec![reply(parts.into_iter().flatten().collect())],
                None => vec![*error::shutting_down()],
            }
        }
        .boxed(),
    )
}

/// A batch after validation.
struct Validated {
    /// Accepted writes, by shard, in batch order.
    per_shard: Vec<Vec<(String, Write)>>,
    /// `OP_REJECTED`s, in batch order.
    frames: Vec<Message>,
    /// What `OP_ACK` names; `None`: no ack may be sent.
    last_id: Option<CompactString>,
    /// The accepted ops, for the interceptors' `on_after_op` (empty without interceptors).
    applied: Vec<AppliedOp>,
}

/// Write concerns from weakest to strongest.
fn rank(wc: WriteConcern) -> u8 {
    match wc {
        WriteConcern::FireAndForget => 0,
        WriteConcern::Memory => 1,
        WriteConcern::Applied => 2,
        WriteConcern::Persisted => 3,
        WriteConcern::Replicated => 4,
    }
}

fn weakest(a: WriteConcern, b: WriteConcern) -> WriteConcern {
    if rank(a) <= rank(b) { a } else { b }
}

/// The interceptors in their order: the built-ins the guards turn on, then `extra`.
fn pipeline(guards: &Guards, extra: Vec<Arc<dyn Interceptor>>) -> Pipeline {
    let mut stages: Vec<Arc<dyn Interceptor>> = Vec::new();
    if guards.ops_per_sec_per_connection > 0 || guards.ops_per_sec_per_user > 0 {
        stages.push(Arc::new(RateLimiter::new(
            guards.ops_per_sec_per_connection,
            guards.ops_per_sec_per_user,
        )));
    }
    if guards.server_timestamps {
        stages.push(Arc::new(ServerTimestamps));
    }
    stages.extend(extra);
    Pipeline::new(stages)
}

/// The encoded size of an op's value.
fn value_bytes(op: &ClientOp) -> usize {
    use topgun_core::protocol::encode_standalone;
    let lww = match &op.record {
        topgun_core::protocol::wire::Field::Value(r) => encode_standalone(&r.value).len(),
        _ => 0,
    };
    let or = match &op.or_record {
        topgun_core::protocol::wire::Field::Value(r) => encode_standalone(&r.value).len(),
        _ => 0,
    };
    lww.max(or)
}

/// The resource a topic, lock or counter request names, and the actions it needs.
fn coordination_target(msg: &Message) -> Option<(Resource, &str, &'static [Action])> {
    const READ: &[Action] = &[Action::Read];
    const WRITE: &[Action] = &[Action::Write];
    const BOTH: &[Action] = &[Action::Read, Action::Write];
    Some(match msg {
        Message::TopicSub(t) => (Resource::Topic, t.topic.as_str(), READ),
        Message::TopicPub(p) => (Resource::Topic, p.topic.as_str(), WRITE),
        Message::LockRequest(r) => (Resource::Lock, r.name.as_str(), WRITE),
        Message::LockRelease(r) => (Resource::Lock, r.name.as_str(), WRITE),
        Message::CounterRequest(r) => (Resource::Counter, r.name.as_str(), READ),
        // A sync is answered with the merged state: it reads as well as writes.
        Message::CounterSync(s) => (Resource::Counter, s.name.as_str(), BOTH),
        _ => return None,
    })
}

/// A reply with every record value limited to `fields`.
fn projected(out: Outbound, fields: Fields) -> Outbound {
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
        close @ Outbound::Close { .. } => close,
    }
}

fn check_map(map: &str) -> Result<(), Box<Message>> {
    ops::check_map_name(map).map_err(|refused| error::refusal(refused.code, refused.reason))
}

/// One shard's changed records, each with its leaf index.
type ShardDelta = Vec<(u16, LeafRecord)>;

/// Most records a sync delta carries; beyond this the Merkle walk serves the client.
const DELTA_RECORDS_MAX: usize = 10_000;

/// The shards' changed records as one `SYNC_RESP_LEAF` per leaf (a client merges each leaf's
/// records as it would a requested one); nothing if any shard found too many, or failed.
fn delta_leaves(map: &str, parts: Option<Vec<Option<ShardDelta>>>) -> Vec<Message> {
    let Some(parts) = parts.and_then(|p| p.into_iter().collect::<Option<Vec<_>>>()) else {
        return Vec::new();
    };
    if parts.iter().map(Vec::len).sum::<usize>() > DELTA_RECORDS_MAX {
        return Vec::new();
    }
    let mut leaves: BTreeMap<u16, Vec<LeafRecord>> = BTreeMap::new();
    for (leaf, record) in parts.into_iter().flatten() {
        leaves.entry(leaf).or_default().push(record);
    }
    leaves
        .into_iter()
        .map(|(leaf, records)| {
            Message::SyncRespLeaf(SyncRespLeaf {
                map_name: map.into(),
                path: format!("{leaf:03x}").into(),
                records,
            })
        })
        .collect()
}
