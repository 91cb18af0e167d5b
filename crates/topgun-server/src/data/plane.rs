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

use topgun_core::Timestamp;
use topgun_core::protocol::Message;

use crate::connection::fanout::Outbound;
use crate::coordination::router::Coordinator;
use crate::data::conn::ConnState;
use crate::data::shard::service::Request;
use crate::data::shards::{ShardGone, Shards};
use crate::data::sync::SyncPath;
use crate::data::write::WritePath;
use crate::query::handle::{Queries, QueryRequest};
use crate::security::access::project_message;
use crate::security::admission;
use crate::security::interceptor::Pipeline;
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
}

impl DataPlane {
    pub fn new(
        shards: Shards,
        (writes, sync): (WritePath, SyncPath),
        queries: Queries,
        coordination: Coordinator,
    ) -> Self {
        Self {
            shards,
            writes,
            sync,
            queries,
            coordination,
        }
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
                let requested = op.write_concern;
                Some(answer(
                    self.writes.write(conn, vec![op], requested, now_ms).await,
                ))
            }
            Message::OpBatch(batch) => {
                let requested = batch.write_concern;
                Some(answer(
                    self.writes.write(conn, batch.ops, requested, now_ms).await,
                ))
            }
            Message::OrMapPushDiff(push) => self.writes.push(conn, push, now_ms).await,
            msg @ (Message::SyncInit(_)
            | Message::OrMapSyncInit(_)
            | Message::MerkleReqBucket(_)
            | Message::OrMapMerkleReqBucket(_)
            | Message::OrMapDiffRequest(_)) => {
                let out = self.sync(conn, msg, now_ms).await;
                Some(answer(out.map(|out| match fields {
                    Some(fields) => projected(out, fields),
                    None => out,
                })))
            }
            Message::QuerySub(sub) => {
                let subscribed = self.queries.subscribe(&conn.handle, sub, fields, now_ms);
                subscribed.await.err().map(Outbound::Message)
            }
            Message::QueryUnsub(unsub) => {
                let request = QueryRequest::Unsubscribe {
                    conn: conn.handle.id,
                    query_id: unsub.query_id.to_string(),
                };
                self.queries.send(request).await;
                None
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

    /// The Merkle sync requests.
    async fn sync(
        &self,
        conn: &mut ConnState,
        msg: Message,
        now_ms: u64,
    ) -> Result<Outbound, Box<Message>> {
        match msg {
            Message::SyncInit(s) => {
                let since = s.last_sync_timestamp.filter(|&t| t > 0);
                let map = s.map_name.into();
                self.sync.root(conn, MapKind::Lww, map, since, now_ms).await
            }
            Message::OrMapSyncInit(s) => {
                let map = s.map_name.into();
                self.sync.root(conn, MapKind::Or, map, None, now_ms).await
            }
            Message::MerkleReqBucket(r) => self.sync.bucket(MapKind::Lww, r).await,
            Message::OrMapMerkleReqBucket(r) => self.sync.bucket(MapKind::Or, r).await,
            Message::OrMapDiffRequest(r) => self.sync.or_diff(r).await,
            other => unreachable!(
                "dispatch sends only sync requests here, not {}",
                other.type_name()
            ),
        }
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

    /// Drops a closed connection's subscriptions.
    pub async fn disconnect(&self, conn: &mut ConnState) {
        let id = conn.handle.id;
        let _ = self.shards.send_each(|| Request::Forget { conn: id }).await;
        self.queries.send(QueryRequest::Forget { conn: id }).await;
        self.coordination
            .disconnect(&mut conn.coordination, &conn.handle)
            .await;
    }
}

/// A reply, or the refusal that replaces it.
fn answer(out: Result<Outbound, Box<Message>>) -> Outbound {
    out.unwrap_or_else(Outbound::Message)
}

/// A reply with every record value limited to `fields`.
fn projected(out: Outbound, fields: Fields) -> Outbound {
    use futures_util::FutureExt;
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
