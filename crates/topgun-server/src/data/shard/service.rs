//! The task that owns one [`Shard`]: applies requests in arrival order, makes changes
//! durable, then acknowledges them and fans their events out.
//!
//! With a write-ahead log, a batch's entries are appended without waiting; the commit waits
//! in a FIFO of pending commits while the task goes on serving requests. Because the log
//! completes appends in order, the FIFO's head is always the next to become durable. A
//! commit's events are published, and its writer acknowledged (unless it asked for less than
//! durability), only when it reaches the head *and* is durable — so no subscriber ever sees
//! a write that a crash could still take back, and a re-sent duplicate (which changes
//! nothing) is acknowledged only after the original's commit.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use topgun_core::OrMapEntry;
use topgun_core::merkle::Sum;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::WriteConcern;
use topgun_core::protocol::messages::{LeafRecord, ServerBatchEvent, ServerEvent};

use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Relay, Subscribers};
use crate::connection::outbox::{KickReason, SharedFrame};
use crate::data::ops::Write;
use crate::data::parts::PartSet;
use crate::data::shard::{Arrivals, Mark, Presence, Scan, Shard};
use crate::data::shards::Queued;
use crate::error::code;
use crate::journal::service::JournalFeed;
use crate::journal::{self, Draft, Logged};
use crate::metrics::{Metrics, ShardStats};
use crate::query::handle::{Queries, Records};
use crate::storage::store::{MapKind, Store, StoredEntry};
use crate::storage::wal::{OnDurable, Wal, WalError};

/// Why a write was not acknowledged: an `ERROR` code and message.
pub type Failure = (u32, String);

/// Where applied changes go to become durable.
#[derive(Debug, Clone)]
pub enum Persist {
    /// Appended to the write-ahead log; `level` is what a completed append achieves, and
    /// `ack_waits` whether acknowledgements wait for it (not in `memory` durability).
    Wal {
        wal: Wal,
        level: WriteConcern,
        ack_waits: bool,
    },
    /// Written straight to the store (no log): `APPLIED` once the store has them, and
    /// acknowledged only then.
    Store(Arc<dyn Store>),
}

impl Persist {
    /// The level a durable commit reaches.
    pub fn level(&self) -> WriteConcern {
        match self {
            Self::Wal { level, .. } => *level,
            Self::Store(_) => WriteConcern::Applied,
        }
    }

    /// Whether an acknowledgement asked to be durable waits for durability.
    pub fn ack_waits(&self) -> bool {
        match self {
            Self::Wal { ack_waits, .. } => *ack_waits,
            Self::Store(_) => true,
        }
    }
}

/// A request for one shard task.
#[derive(Debug)]
pub enum Request {
    Apply {
        conn: ConnId,
        writes: Vec<(String, Write)>,
        /// Acknowledge only once durable (else once applied).
        durable: bool,
        done: oneshot::Sender<Result<WriteConcern, Failure>>,
        /// Told once the writes are applied in memory, before they are durable: for a writer
        /// with a deadline, to say what level its batch reached when the deadline passed.
        applied: Option<oneshot::Sender<()>>,
    },
    Push {
        conn: ConnId,
        map: String,
        entries: Vec<OrMapEntry>,
    },
    /// The map's leaf sums under `path`, over the `owned` partitions only when given (a
    /// cluster member answers for what it owns). `subscribe` and `relay` start receiving
    /// the map's events in the same step, so that none falls between the sums and them.
    Leaves {
        kind: MapKind,
        map: String,
        path: String,
        owned: Option<PartSet>,
        subscribe: Option<ConnHandle>,
        relay: Option<Relay>,
        reply: oneshot::Sender<Vec<(u16, Sum)>>,
    },
    LwwLeaf {
        map: String,
        path: String,
        owned: Option<PartSet>,
        reply: oneshot::Sender<Vec<LeafRecord>>,
    },
    /// Every LWW record of a map ([`Shard::lww_records`]), for a live query's snapshot.
    LwwRecords {
        map: String,
        /// Only these partitions' records (`None`: all).
        owned: Option<PartSet>,
        /// Another member that receives the map's events from this step on.
        relay: Option<Relay>,
        reply: oneshot::Sender<Vec<(String, topgun_core::LwwRecord)>>,
    },
    /// LWW records changed since a time ([`Shard::lww_since`]).
    LwwSince {
        map: String,
        since_ms: u64,
        max: usize,
        owned: Option<PartSet>,
        reply: oneshot::Sender<Option<Vec<(u16, LeafRecord)>>>,
    },
    /// LWW records from a place in the arrival order ([`Shard::lww_arrived_since`]): HTTP
    /// sync.
    LwwArrivedSince {
        map: String,
        from: Mark,
        /// The latest arrival included, and the one every later change arrives after.
        scan_start_ms: u64,
        max: usize,
        max_bytes: usize,
        owned: Option<PartSet>,
        reply: oneshot::Sender<Arrivals>,
    },
    OrLeaf {
        map: String,
        path: String,
        owned: Option<PartSet>,
        reply: oneshot::Sender<Vec<OrMapEntry>>,
    },
    /// The OR entries of the keys asked (by their place in the request); with `owned`, of
    /// those in the owned partitions only.
    OrEntries {
        map: String,
        keys: Vec<(usize, String)>,
        owned: Option<PartSet>,
        reply: oneshot::Sender<Vec<(usize, OrMapEntry)>>,
    },
    /// Forget tombstones older than the horizon; answers with the number of keys changed.
    Prune {
        older_than: topgun_core::Timestamp,
        reply: oneshot::Sender<usize>,
    },
    /// Every key's state, answered once every commit applied so far is durable.
    Dump {
        reply: oneshot::Sender<Vec<StoredEntry>>,
    },
    /// Receive the map's events (a connection that writes to a map it never synced).
    Subscribe {
        kind: MapKind,
        map: String,
        conn: ConnHandle,
    },
    /// Each client map's count of keys with a live value ([`Shard::live_counts`]).
    LiveCounts {
        owned: Option<PartSet>,
        reply: oneshot::Sender<Vec<(String, usize)>>,
    },
    /// A map's keys whose live value has an attribute ([`Shard::attribute_count`]).
    AttributeCount {
        map: String,
        attribute: String,
        owned: Option<PartSet>,
        reply: oneshot::Sender<usize>,
    },
    /// Stop receiving the map's events (the last live query on it ended).
    Unsubscribe {
        kind: MapKind,
        map: String,
        conn: ConnId,
    },
    Forget {
        conn: ConnId,
    },
    /// Relay the map's events to another member (CLUSTER.md §9).
    Relay {
        kind: MapKind,
        map: String,
        relay: Relay,
    },
    /// A member's interest in the map ended.
    Unrelay {
        kind: MapKind,
        map: String,
        member: u64,
        generation: u64,
    },
    /// A member left or restarted: relay it nothing more.
    ForgetMember {
        member: u64,
    },
    /// An event frame another member relayed, for this member's subscribers of the map.
    Relayed {
        kind: MapKind,
        map: String,
        except: ConnId,
        frame: SharedFrame,
    },
    /// Close the map's local subscribers: they missed a relayed event and must resync.
    KickSubscribers {
        kind: MapKind,
        map: String,
    },
}

type Written = oneshot::Receiver<Result<u64, Arc<WalError>>>;

/// A commit waiting for its log append. The FIFO of them is bounded by what feeds it: each
/// entry answers a request taken from the shard's bounded queue, and appends wait for room
/// in the log's bounded queue.
struct Pending {
    /// `None`: nothing was appended (nothing changed); durable once those before it are.
    written: Option<Written>,
    writer: ConnId,
    events: Vec<(MapKind, ServerEvent)>,
    /// The writer's acknowledgement, when it waits for durability.
    done: Option<oneshot::Sender<Result<WriteConcern, Failure>>>,
    /// A backup's copy of the shard, sent once everything before it is durable.
    dump: Option<(oneshot::Sender<Vec<StoredEntry>>, Vec<StoredEntry>)>,
}

struct Task {
    shard: Shard,
    subscribers: Subscribers,
    queries: Queries,
    persist: Persist,
    metrics: Arc<Metrics>,
    /// Where this shard's tally is published for `/metrics` after each change.
    stats: Arc<ShardStats>,
    pending: VecDeque<Pending>,
    /// Where journal events go once durable (with the journal on).
    journal: Option<JournalFeed>,
    /// The events of the commits being settled, kept between settlements: built afresh,
    /// this vector grew by doubling through fresh memory at every group commit (the
    /// kernel zeroing those pages was 6 % of the server under write load while the
    /// allocator still used huge pages).
    settled: Vec<Event>,
}

/// Most events [`Task::settled`] keeps room for while idle (about 300 KiB).
const SETTLED_KEEP: usize = 1024;

/// Runs a shard until every sender is gone and every pending commit is settled.
pub async fn run(
    shard: Shard,
    mut requests: mpsc::Receiver<Queued>,
    persist: Persist,
    queries: Queries,
    metrics: Arc<Metrics>,
    stats: Arc<ShardStats>,
    journal: Option<JournalFeed>,
) {
    let mut task = Task {
        shard,
        subscribers: Subscribers::default(),
        queries,
        persist,
        metrics,
        stats,
        pending: VecDeque::new(),
        journal,
        settled: Vec::new(),
    };
    loop {
        tokio::select! {
            biased;
            written = head_written(&mut task.pending) => task.settle_ready(written),
            queued = requests.recv() => match queued {
                Some(Queued { request, slot }) => {
                    // Off the queue: its place at the gate is free.
                    drop(slot);
                    task.serve(request).await;
                }
                None => break,
            },
        }
    }
    while !task.pending.is_empty() {
        let written = head_written(&mut task.pending).await;
        task.settle_ready(written);
    }
}

/// Publishes what `shard` holds for `/metrics`: copies its tally into `stats` and tells the
/// census of the maps that appeared or emptied in it. Two relaxed stores unless a map
/// appeared or emptied.
pub fn publish_tally(shard: &mut Shard, stats: &ShardStats, metrics: &Metrics) {
    // The census first: a scrape that sees this change's tombstone bytes sees the maps it
    // emptied gone too (a prune of a map's last tombstones lowers both).
    for change in shard.take_presence() {
        match change {
            Presence::Appeared(map) => metrics.maps().appeared(map),
            Presence::Emptied(map) => metrics.maps().emptied(&map),
        }
    }
    let tally = shard.tally();
    stats.publish(tally.tombstone_bytes(), tally.tombstoned_total());
}

/// Resolves when the head commit's append completes; never while the FIFO is empty.
async fn head_written(pending: &mut VecDeque<Pending>) -> Result<(), Arc<WalError>> {
    let Some(head) = pending.front_mut() else {
        return std::future::pending().await;
    };
    match head.written.as_mut() {
        None => Ok(()),
        Some(written) => match written.await {
            Ok(result) => result.map(drop),
            Err(_) => Err(Arc::new(WalError::Closed)),
        },
    }
}

impl Task {
    fn level(&self) -> WriteConcern {
        self.persist.level()
    }

    /// Settles the head commit and every following one that is already durable (a group
    /// commit makes many durable at once), then publishes all their events together: one
    /// frame per map and writer for the group instead of one per commit.
    fn settle_ready(&mut self, first: Result<(), Arc<WalError>>) {
        let mut events = std::mem::take(&mut self.settled);
        self.settle_head(first, &mut events);
        while let Some(next) = self.ready_head() {
            self.settle_head(next, &mut events);
        }
        self.tell_queries(&events);
        publish(&mut self.subscribers, &self.metrics, events.drain(..));
        events.shrink_to(SETTLED_KEEP);
        self.settled = events;
    }

    /// Hands durable LWW changes of maps with live queries to the query task, grouped by map
    /// and writer, without waiting (see [`Queries::offer_changed`]).
    fn tell_queries(&self, events: &[Event]) {
        let mut groups: Vec<(ConnId, String, Records)> = Vec::new();
        for (writer, kind, event) in events {
            let (MapKind::Lww, Some(record)) = (kind, &event.record) else {
                continue;
            };
            if !self.queries.watches(&event.map_name) {
                continue;
            }
            let change = (event.key.to_string(), record.clone());
            match groups
                .iter_mut()
                .find(|(w, m, _)| w == writer && *m == event.map_name)
            {
                Some((_, _, changes)) => changes.push(change),
                None => groups.push((*writer, event.map_name.to_string(), vec![change])),
            }
        }
        for (writer, map, changes) in groups {
            self.queries.offer_changed(map, writer, changes);
        }
    }

    /// The head commit's outcome if its append has already completed.
    fn ready_head(&mut self) -> Option<Result<(), Arc<WalError>>> {
        let head = self.pending.front_mut()?;
        match head.written.as_mut() {
            None => Some(Ok(())),
            Some(written) => match written.try_recv() {
                Ok(result) => Some(result.map(drop)),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(Arc::new(WalError::Closed))),
            },
        }
    }

    /// Pops the head commit: answers its writer and keeps its events (if it is durable).
    fn settle_head(&mut self, written: Result<(), Arc<WalError>>, events: &mut Vec<Event>) {
        let Some(head) = self.pending.pop_front() else {
            return;
        };
        let outcome = match written {
            Ok(()) => {
                let writer = head.writer;
                events.extend(head.events.into_iter().map(|(kind, e)| (writer, kind, e)));
                Ok(self.level())
            }
            Err(e) => {
                tracing::error!(error = %e, "a commit failed; its writer is told");
                Err((code::UNAVAILABLE, e.to_string()))
            }
        };
        if let Some(done) = head.done {
            let _ = done.send(outcome);
        }
        if let Some((reply, entries)) = head.dump {
            let _ = reply.send(entries);
        }
    }

    async fn serve(&mut self, request: Request) {
        match request {
            Request::Apply {
                conn,
                writes,
                durable,
                done,
                applied,
            } => {
                if let Err(refused) = self.check_room() {
                    let _ = done.send(Err(refused));
                    return;
                }
                let mut events = Vec::with_capacity(writes.len());
                let mut logged = Vec::with_capacity(writes.len());
                let now = crate::clock::now_ms();
                for (map, write) in writes {
                    let kind = write.map_kind();
                    if let Some(mut change) = self.shard.apply(&map, write, now) {
                        events.push((kind, change.event));
                        stamp(&mut change.drafts, now);
                        logged.push((change.stored, change.drafts));
                    }
                }
                if let Some(applied) = applied {
                    let _ = applied.send(());
                }
                self.commit(conn, events, logged, Some((done, durable)))
                    .await;
                self.publish_tally();
            }
            Request::Push { conn, map, entries } => {
                if let Err((_, why)) = self.check_room() {
                    tracing::warn!(%why, "pushed OR entries refused");
                    return;
                }
                let (mut events, mut logged) = (Vec::new(), Vec::new());
                let now = crate::clock::now_ms();
                for entry in entries {
                    let mut pushed = self.shard.push_or_entry(&map, entry);
                    events.extend(pushed.events.into_iter().map(|e| (MapKind::Or, e)));
                    stamp(&mut pushed.drafts, now);
                    logged.extend(pushed.stored.map(|s| (s, pushed.drafts)));
                }
                self.commit(conn, events, logged, None).await;
                self.publish_tally();
            }
            Request::Prune { older_than, reply } => {
                let stored = self.shard.prune(&older_than);
                let _ = reply.send(stored.len());
                self.persist_quietly(stored).await;
                self.publish_tally();
            }
            Request::Dump { reply } => {
                let entries = self.shard.dump();
                match self.persist {
                    Persist::Store(_) => {
                        let _ = reply.send(entries);
                    }
                    Persist::Wal { .. } => self.pending.push_back(Pending {
                        written: None,
                        writer: 0,
                        events: Vec::new(),
                        done: None,
                        dump: Some((reply, entries)),
                    }),
                }
            }
            other => self.read(other),
        }
    }

    /// After a change has been handed to the log (or store): see [`publish_tally`].
    fn publish_tally(&mut self) {
        publish_tally(&mut self.shard, &self.stats, &self.metrics);
    }

    fn check_room(&self) -> Result<(), Failure> {
        match &self.persist {
            Persist::Wal { wal, .. } => wal
                .check_room()
                .map_err(|e| (code::UNAVAILABLE, e.to_string())),
            Persist::Store(_) => Ok(()),
        }
    }

    /// Serves the requests that only read (and subscriptions).
    fn read(&mut self, request: Request) {
        match request {
            Request::Leaves {
                kind,
                map,
                path,
                owned,
                subscribe,
                relay,
                reply,
            } => {
                if let Some(conn) = subscribe {
                    self.subscribers.subscribe(kind, &map, conn);
                }
                if let Some(relay) = relay {
                    self.subscribers.add_relay(kind, &map, relay);
                }
                let sums = self
                    .shard
                    .owned_leaf_sums(kind, &map, &path, owned.as_ref());
                let _ = reply.send(sums.unwrap_or_default());
            }
            Request::LwwLeaf {
                map,
                path,
                owned,
                reply,
            } => {
                let mut records = self.shard.lww_leaf(&map, &path).unwrap_or_default();
                if let Some(owned) = owned {
                    records.retain(|r| owned.holds_key(&r.key));
                }
                let _ = reply.send(records);
            }
            Request::LwwRecords {
                map,
                owned,
                relay,
                reply,
            } => {
                if let Some(relay) = relay {
                    self.subscribers.add_relay(MapKind::Lww, &map, relay);
                }
                let mut records = self.shard.lww_records(&map);
                if let Some(owned) = owned {
                    records.retain(|(key, _)| owned.holds_key(key));
                }
                let _ = reply.send(records);
            }
            Request::LwwSince {
                map,
                since_ms,
                max,
                owned,
                reply,
            } => {
                let since = self.shard.lww_since(&map, since_ms, max, owned.as_ref());
                let _ = reply.send(since);
            }
            Request::LwwArrivedSince {
                map,
                from,
                scan_start_ms,
                max,
                max_bytes,
                owned,
                reply,
            } => {
                let scan = Scan {
                    from,
                    until_ms: scan_start_ms,
                    max,
                    max_bytes,
                    owned: owned.as_ref(),
                };
                let found = self.shard.lww_arrived_since(&map, &scan);
                self.shard.arrive_after(scan_start_ms);
                let _ = reply.send(found);
            }
            request @ (Request::OrLeaf { .. } | Request::OrEntries { .. }) => self.read_or(request),
            Request::Subscribe { kind, map, conn } => self.subscribers.subscribe(kind, &map, conn),
            request @ (Request::LiveCounts { .. } | Request::AttributeCount { .. }) => {
                self.count(request);
            }
            Request::Unsubscribe { kind, map, conn } => {
                self.subscribers.unsubscribe(kind, &map, conn);
            }
            Request::Forget { conn } => self.subscribers.forget(conn),
            other => self.relays(other),
        }
    }

    /// Serves the counts of live keys (the admin API's).
    fn count(&self, request: Request) {
        let now = crate::clock::now_ms();
        match request {
            Request::LiveCounts { owned, reply } => {
                let _ = reply.send(self.shard.live_counts(now, owned.as_ref()));
            }
            Request::AttributeCount {
                map,
                attribute,
                owned,
                reply,
            } => {
                let count = self
                    .shard
                    .attribute_count(&map, &attribute, now, owned.as_ref());
                let _ = reply.send(count);
            }
            _ => unreachable!("only counts are served here"),
        }
    }

    /// Serves the reads of OR-Maps' entries.
    fn read_or(&mut self, request: Request) {
        match request {
            Request::OrLeaf {
                map,
                path,
                owned,
                reply,
            } => {
                let mut entries = self.shard.or_leaf(&map, &path).unwrap_or_default();
                if let Some(owned) = owned {
                    entries.retain(|e| owned.holds_key(&e.key));
                }
                let _ = reply.send(entries);
            }
            Request::OrEntries {
                map,
                mut keys,
                owned,
                reply,
            } => {
                if let Some(owned) = owned {
                    keys.retain(|(_, key)| owned.holds_key(key));
                }
                let (at, keys): (Vec<usize>, Vec<String>) = keys.into_iter().unzip();
                let entries = self.shard.or_entries(&map, &keys);
                let _ = reply.send(at.into_iter().zip(entries).collect());
            }
            _ => unreachable!("only OR reads are served here"),
        }
    }

    /// Serves the requests of other members' interests and relayed events.
    fn relays(&mut self, request: Request) {
        match request {
            Request::Relay { kind, map, relay } => self.subscribers.add_relay(kind, &map, relay),
            Request::Unrelay {
                kind,
                map,
                member,
                generation,
            } => self
                .subscribers
                .remove_relay(kind, &map, member, generation),
            Request::ForgetMember { member } => self.subscribers.forget_member(member),
            Request::Relayed {
                kind,
                map,
                except,
                frame,
            } => {
                if kind == MapKind::Lww && self.queries.watches(&map) {
                    // This member's live queries of the map hear of the change too.
                    let changes = relayed_records(&frame);
                    self.queries.offer_changed(map.clone(), except, changes);
                }
                let delivery = self.subscribers.publish_relayed(kind, &map, except, frame);
                self.metrics.events(delivery.queued);
            }
            Request::KickSubscribers { kind, map } => {
                self.subscribers.kick_all(kind, &map, KickReason::RelayGap);
            }
            Request::Apply { .. }
            | Request::Push { .. }
            | Request::Dump { .. }
            | Request::Prune { .. } => unreachable!("writes are served by `serve`"),
            _ => unreachable!("reads are served by `read`"),
        }
    }

    /// Makes server-made changes durable (nobody waits, no events).
    async fn persist_quietly(&mut self, stored: Vec<StoredEntry>) {
        if stored.is_empty() {
            return;
        }
        let result = match &self.persist {
            Persist::Store(store) => store.write(stored).await.map_err(|e| e.to_string()),
            Persist::Wal { wal, .. } => {
                let payloads = stored.iter().map(StoredEntry::encode).collect();
                wal.append(payloads)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "pruned tombstones were not recorded; a restart prunes again");
        }
    }

    /// Makes `logged` durable, then publishes `events` and acknowledges the writer.
    async fn commit(
        &mut self,
        writer: ConnId,
        events: Vec<(MapKind, ServerEvent)>,
        logged: Vec<Logged>,
        ack: Option<(oneshot::Sender<Result<WriteConcern, Failure>>, bool)>,
    ) {
        let wal = match &self.persist {
            Persist::Store(store) => {
                let (stored, drafts): (Vec<_>, Vec<_>) = logged
                    .into_iter()
                    .map(|(entry, drafts)| {
                        let named = drafts
                            .into_iter()
                            .map(|d| (entry.map.clone(), entry.key.clone(), d))
                            .collect::<Vec<_>>();
                        (entry, named)
                    })
                    .unzip();
                let outcome = match store.write(stored).await {
                    Ok(()) => {
                        if let Some(journal) = &self.journal {
                            let drafts = drafts.into_iter().flatten().collect();
                            journal.send_unsequenced(drafts).await;
                        }
                        let events: Vec<Event> = events
                            .into_iter()
                            .map(|(kind, e)| (writer, kind, e))
                            .collect();
                        self.tell_queries(&events);
                        publish(&mut self.subscribers, &self.metrics, events.into_iter());
                        Ok(WriteConcern::Applied)
                    }
                    Err(e) => Err((code::UNAVAILABLE, e.to_string())),
                };
                if let Some((done, _)) = ack {
                    let _ = done.send(outcome);
                }
                return;
            }
            Persist::Wal { wal, .. } => wal.clone(),
        };
        let written = if logged.is_empty() {
            None
        } else {
            let payloads = logged
                .iter()
                .map(|(entry, drafts)| journal::encode_frame(entry, drafts))
                .collect();
            let on_durable = self
                .journal
                .clone()
                .and_then(|feed| on_durable(feed, logged));
            match wal.append_with(payloads, on_durable).await {
                Ok(written) => Some(written),
                Err(e) => {
                    if let Some((done, _)) = ack {
                        let _ = done.send(Err((code::UNAVAILABLE, e.to_string())));
                    }
                    return;
                }
            }
        };
        let done = match ack {
            Some((done, true)) => Some(done),
            Some((done, false)) => {
                let _ = done.send(Ok(WriteConcern::Applied));
                None
            }
            None => None,
        };
        self.pending.push_back(Pending {
            written,
            writer,
            events,
            done,
            dump: None,
        });
    }
}

/// Sets the time the drafts were recorded (the shard, being sans I/O, has no clock).
fn stamp(drafts: &mut [Draft], now_ms: u64) {
    for draft in drafts {
        draft.recorded_ms = now_ms;
    }
}

/// The hook that hands a commit's logged changes, with the LSN of their first frame, to the
/// journal once the log has them (the journal task sequences their events); `None` when
/// the commit has no events.
fn on_durable(feed: JournalFeed, logged: Vec<Logged>) -> Option<OnDurable> {
    if logged.iter().all(|(_, drafts)| drafts.is_empty()) {
        return None;
    }
    Some(Box::new(move |first_lsn| {
        feed.blocking_send(first_lsn, logged);
    }))
}

/// The LWW records a relayed event frame carries (`SERVER_EVENT` or a batch of them);
/// none if it does not decode (a member relayed what this one cannot read).
fn relayed_records(frame: &SharedFrame) -> Records {
    let limits = topgun_core::protocol::msgpack::Limits {
        max_frame_bytes: usize::MAX,
        max_str_bytes: usize::MAX,
        ..Default::default()
    };
    let events = match Message::decode(&frame.bytes(), &limits) {
        Ok(Message::ServerEvent(event)) => vec![event],
        Ok(Message::ServerBatchEvent(batch)) => batch.events,
        _ => Vec::new(),
    };
    events
        .into_iter()
        .filter_map(|e| Some((e.key.to_string(), e.record?)))
        .collect()
}

/// An event of a settled commit, with the connection that wrote it (which is not sent its
/// own writes).
type Event = (ConnId, MapKind, ServerEvent);

/// Most events in one `SERVER_BATCH_EVENT` frame, so that one frame stays small.
const EVENTS_PER_FRAME: usize = 512;

/// Offers settled commits' events to each map's subscribers but the writer. Each (map,
/// writer) group is encoded once: one `SERVER_EVENT`, or `SERVER_BATCH_EVENT`s when the
/// group changed several keys (a large batch costs each subscriber one frame per
/// [`EVENTS_PER_FRAME`] events, not one per op).
fn publish(subscribers: &mut Subscribers, metrics: &Metrics, events: impl Iterator<Item = Event>) {
    let mut groups: Vec<(ConnId, MapKind, Vec<ServerEvent>)> = Vec::new();
    for (writer, kind, event) in events {
        if !subscribers.has_subscribers(kind, &event.map_name, writer) {
            continue;
        }
        let group = groups
            .iter_mut()
            .find(|(w, k, evs)| *w == writer && *k == kind && evs[0].map_name == event.map_name);
        match group {
            Some((_, _, evs)) => evs.push(event),
            None => groups.push((writer, kind, vec![event])),
        }
    }
    for (writer, kind, events) in groups {
        let map = events[0].map_name.to_string();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut chunk: Vec<ServerEvent> = events.by_ref().take(EVENTS_PER_FRAME).collect();
            let msg = if chunk.len() == 1 {
                Message::ServerEvent(chunk.remove(0))
            } else {
                Message::ServerBatchEvent(ServerBatchEvent { events: chunk })
            };
            let delivery = subscribers.publish(kind, &map, writer, &msg);
            metrics.events(delivery.queued);
        }
    }
}
