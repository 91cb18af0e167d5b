//! The write path: `CLIENT_OP`, `OP_BATCH` and `ORMAP_PUSH_DIFF` from admission to
//! acknowledgement.
//!
//! ```text
//! ops ─ admit (policy, interceptors, value size) ─ validate (HLC) ─ split by shard
//!     └→ shard tasks: apply, append to the log ─→ durable ─→ OP_ACK (Outbound::Later)
//! ```
//!
//! A refused op gets its own `OP_REJECTED` and the rest of the batch goes on; a batch over
//! `ops_per_batch_max` is refused whole. The ack waits for every shard's part — or, when the
//! batch names a `timeout`, until it passes: the ack then says what level the batch reached
//! and gives each op a failed result naming the level it did not reach. Without a `timeout`
//! there is no deadline (`defaultOperationTimeoutMs` is 0): an ack is never sent for a write
//! that has not reached the level it promises.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::join_all;
use tokio::sync::oneshot;
use topgun_core::OrMapEntry;
use topgun_core::Value;
use topgun_core::protocol::Message;
use topgun_core::protocol::encode_standalone;
use topgun_core::protocol::enums::WriteConcern;
use topgun_core::protocol::messages::{
    ClientOp, ErrorPayload, OpAck, OpRejected, OpResult, OrMapPushDiff,
};
use topgun_core::protocol::wire::Field;
use topgun_core::value::CompactString;

use crate::clock::ServerClock;
use crate::config::Guards;
use crate::connection::ConnId;
use crate::connection::fanout::Outbound;
use crate::data::conn::{Added, ConnState};
use crate::data::forward::{Forward, Owner, PartAnswer};
use crate::data::ops::{self, Write};
use crate::data::shard::service::Request;
use crate::data::shards::Shards;
use crate::error::{self, code};
use crate::metrics::Metrics;
use crate::security::access::ConnAccess;
use crate::security::admission;
use crate::security::interceptor::{AppliedOp, OpContext, Pipeline, Verdict};
use crate::storage::store::MapKind;

/// Applies client writes through the shards; shared by every connection.
#[derive(Debug)]
pub(crate) struct WritePath {
    pub(crate) shards: Shards,
    pub(crate) guards: Guards,
    pub(crate) pipeline: Pipeline,
    /// The level a durable commit reaches (`PERSISTED` with a synced log).
    pub(crate) durable_level: WriteConcern,
    /// Whether acknowledgements may wait for durability (not in `memory` durability).
    pub(crate) ack_waits: bool,
    pub(crate) clock: ServerClock,
    pub(crate) metrics: Arc<Metrics>,
    /// In cluster mode, where writes this member does not own go (set once, at start).
    pub(crate) forward: std::sync::OnceLock<Arc<dyn Forward>>,
    /// In a cluster: this member's interests in maps, joined for the maps a connection
    /// writes.
    pub(crate) cluster: Arc<std::sync::OnceLock<crate::data::peers::Cluster>>,
}

/// How long a write waits for the first partition table before it is refused as retryable.
const TABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a writer asks of its batch's acknowledgement.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Concern {
    /// The level asked for by the batch (each op may ask for more).
    pub level: Option<WriteConcern>,
    /// The most ms to wait for it (`OP_BATCH.timeout`; else the ops' largest); 0 or none: no
    /// deadline.
    pub timeout_ms: Option<u64>,
}

/// A batch's deadline: how long to wait, and what to tell the writer when it passes.
struct Deadline {
    after: std::time::Duration,
    /// Whether the ack was to wait for durability (else for the batch to be applied).
    durable: bool,
    /// Each shard's word that its part is applied.
    applied: Vec<oneshot::Receiver<()>>,
    /// The accepted ops' ids, in batch order, for their results.
    ops: Vec<CompactString>,
}

/// A batch after validation.
struct Validated {
    /// Accepted writes, by shard, in batch order.
    per_shard: Vec<Vec<(String, Write)>>,
    /// Accepted writes other members own, by owner, in batch order.
    remote: std::collections::BTreeMap<Owner, Vec<(String, Write)>>,
    /// `OP_REJECTED`s, in batch order, then the `ERROR`s summing them up (COMPAT §4.1).
    frames: Vec<Message>,
    /// What `OP_ACK` names; `None`: no ack may be sent.
    last_id: Option<CompactString>,
    /// The accepted ops, for the interceptors' `on_after_op` (empty without interceptors).
    applied: Vec<AppliedOp>,
    /// The accepted ops' ids (only for a batch with a deadline).
    accepted: Vec<CompactString>,
}

impl WritePath {
    /// `CLIENT_OP` and `OP_BATCH`: refused ops get `OP_REJECTED` each, the rest are applied,
    /// then one `OP_ACK` names the last op id.
    ///
    /// The strongest write concern asked for (by the batch or any op) decides when the ack
    /// is sent: none, or `PERSISTED`/`REPLICATED`, waits for durability (acknowledged means
    /// durable by default); `APPLIED` or less is acknowledged once applied. `achievedLevel`
    /// is the weakest level any part of the batch reached.
    pub(crate) async fn write(
        &self,
        conn: &mut ConnState,
        ops: Vec<ClientOp>,
        concern: Concern,
        now_ms: u64,
    ) -> Result<Outbound, Box<Message>> {
        let requested = ops
            .iter()
            .filter_map(|op| op.write_concern)
            .chain(concern.level)
            .max_by_key(|wc| rank(*wc));
        let timeout_ms = concern
            .timeout_ms
            .or_else(|| ops.iter().filter_map(|op| op.timeout).max())
            .filter(|&ms| ms > 0);
        let durable =
            self.ack_waits && requested.is_none_or(|wc| rank(wc) >= rank(WriteConcern::Persisted));
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
        if let Some(forward) = self.forward.get()
            && !forward.ready(TABLE_WAIT).await
        {
            return Err(error::refusal(
                code::UNAVAILABLE,
                "the cluster has no partition table yet; nothing was applied, send the batch again",
            ));
        }
        let mut batch = self.validate_batch(ops, conn, now_ms, timeout_ms.is_some());
        let written: Vec<(MapKind, String)> = batch
            .per_shard
            .iter()
            .chain(batch.remote.values())
            .flatten()
            .map(|(map, write)| (write.map_kind(), map.clone()))
            .collect();
        self.subscribe_writer(conn, written).await?;
        let mut pending = Vec::new();
        let mut applied_parts = Vec::new();
        for (shard, writes) in batch.per_shard.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let (done, answer) = oneshot::channel();
            let applied = timeout_ms.map(|_| {
                let (told, applied) = oneshot::channel();
                applied_parts.push(applied);
                told
            });
            let request = Request::Apply {
                conn: conn.handle.id,
                writes,
                durable,
                done,
                applied,
            };
            self.shards
                .send(shard, request)
                .await
                .map_err(|_| error::shutting_down())?;
            pending.push(answer);
        }
        if let Some(forward) = self.forward.get() {
            for (owner, writes) in std::mem::take(&mut batch.remote) {
                let (answer, applied) =
                    forward_part(forward.as_ref(), owner, writes, durable, conn.handle.id);
                if timeout_ms.is_some() {
                    applied_parts.push(applied);
                }
                pending.push(answer);
            }
        }
        let achieved = if durable {
            self.durable_level
        } else {
            WriteConcern::Applied
        };
        let deadline = timeout_ms.map(|ms| Deadline {
            after: std::time::Duration::from_millis(ms),
            durable,
            applied: applied_parts,
            ops: batch.accepted,
        });
        let finish = Finish {
            metrics: Arc::clone(&self.metrics),
            pipeline: self.pipeline.clone(),
            started,
            achieved,
            frames: batch.frames,
            last_id: batch.last_id,
            applied: batch.applied,
            deadline,
        };
        Ok(Outbound::Later(finish.after(pending).boxed()))
    }

    /// Applies a part another member forwarded (validated there) through this member's
    /// shards, written by `author` (a [`remote_writer`] id, or a local connection's when
    /// the entry node re-routed a part to itself); answers with the weakest level any shard
    /// reached, or the first failure.
    pub(crate) async fn apply_forwarded(
        &self,
        writes: Vec<(String, Write)>,
        durable: bool,
        author: ConnId,
    ) -> PartAnswer {
        let mut per_shard: Vec<Vec<(String, Write)>> = vec![Vec::new(); self.shards.count()];
        for (map, write) in writes {
            self.metrics.op(write.kind());
            per_shard[self.shards.of(write.key())].push((map, write));
        }
        let mut answers = Vec::new();
        for (shard, writes) in per_shard.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let (done, answer) = oneshot::channel();
            let request = Request::Apply {
                conn: author,
                writes,
                durable: durable && self.ack_waits,
                done,
                applied: None,
            };
            if self.shards.send(shard, request).await.is_err() {
                return Err(forward_lost());
            }
            answers.push(answer);
        }
        let mut achieved = if durable && self.ack_waits {
            self.durable_level
        } else {
            WriteConcern::Applied
        };
        for answer in join_all(answers).await {
            achieved = weakest(achieved, answer.unwrap_or_else(|_| Err(forward_lost()))?);
        }
        Ok(achieved)
    }

    /// Validates a batch's ops in order: the accepted ones by shard, an `OP_REJECTED` for
    /// each refused one, and the id the `OP_ACK` may name; with `keep_ids`, the accepted ops'
    /// ids too.
    fn validate_batch(
        &self,
        ops: Vec<ClientOp>,
        conn: &ConnState,
        now_ms: u64,
        keep_ids: bool,
    ) -> Validated {
        let any_id = ops.iter().any(|op| op.id.is_some());
        let mut last_id = None;
        let mut retry_from = None;
        let mut refusals = Refusals::default();
        let mut applied = Vec::new();
        let mut accepted = Vec::new();
        let mut per_shard: Vec<Vec<(String, Write)>> = vec![Vec::new(); self.shards.count()];
        let mut remote = std::collections::BTreeMap::<Owner, Vec<_>>::new();
        let forward = self.forward.get();
        let user_id = conn.handle.access().user_id();
        let mut hlc = self.clock.lock();
        for (at, op) in ops.into_iter().enumerate() {
            let id = op.id.clone();
            let named = op.map_name.clone();
            let mut ctx = OpContext {
                conn: conn.handle.id,
                user: user_id.as_deref(),
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
                    if keep_ids {
                        accepted.push(id.clone().unwrap_or_else(|| "unknown".into()));
                    }
                    match forward.and_then(|f| f.owner_elsewhere(write.key())) {
                        Some(owner) => remote.entry(owner).or_default().push((map, write)),
                        None => per_shard[self.shards.of(write.key())].push((map, write)),
                    }
                }
                Err(refused) => {
                    self.metrics.op_rejected();
                    if refused.retry {
                        retry_from.get_or_insert(at);
                    }
                    // Over a rate limit, the rest of the batch would be refused alike, one
                    // OP_REJECTED each: it is left unprocessed instead (neither applied nor
                    // refused; unacknowledged, so the client sends it again).
                    if refusals.refuse(id.clone(), named, refused) == Go::Stop {
                        break;
                    }
                }
            }
            // The ack covers every op up to the first one the client should send again.
            if retry_from.is_none() {
                last_id = id.or(last_id);
            }
        }
        Validated {
            per_shard,
            remote,
            frames: refusals.into_frames(),
            last_id: ack_id(last_id, any_id, retry_from.is_some()),
            applied,
            accepted,
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
        let may_write = |op: &ClientOp| {
            let (remove, data) = ops::intent(op);
            admission::admit_op(access, &op.map_name, remove, data).map_err(|reason| {
                ops::Rejection {
                    code: code::FORBIDDEN,
                    reason,
                    retry: false,
                }
            })
        };
        // Checked before the interceptors (a refused op spends no rate-limit tokens) and
        // again after, on the map and record the op now names.
        may_write(&op)?;
        let op = match self.pipeline.on_before_op(ctx, Box::new(op)) {
            Verdict::Pass(op) => op,
            Verdict::Drop(rejection) => return Err(rejection),
        };
        may_write(&op)?;
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
        written: Vec<(MapKind, String)>,
    ) -> Result<(), Box<Message>> {
        for (kind, map) in written {
            if conn.maps.add(kind, &map) != Added::New {
                continue;
            }
            if let Some(cluster) = self.cluster.get() {
                cluster.interests.join(cluster.peers.as_ref(), kind, &map);
            }
            let subscribe = || Request::Subscribe {
                kind,
                map: map.clone(),
                conn: conn.handle.clone(),
            };
            self.shards
                .send_each(subscribe)
                .await
                .map_err(|_| error::shutting_down())?;
        }
        Ok(())
    }

    /// `ORMAP_PUSH_DIFF`: merged without a reply — an `OP_ACK` here would tell the TS
    /// client that unrelated pending ops were stored (PROTOCOL.md §9.5).
    pub(crate) async fn push(
        &self,
        conn: &ConnState,
        push: OrMapPushDiff,
        now_ms: u64,
    ) -> Option<Outbound> {
        let map = push.map_name.to_string();
        if let Err(refused) = ops::check_map(&map)
            .and_then(|()| self.check_push(&push))
            .and_then(|()| self.intercept_push(conn, &push, now_ms))
        {
            return Some(Outbound::Message(refused));
        }
        let mut entries = push.entries;
        if let Some(forward) = self.forward.get() {
            // Entries other members own go to them (the client is not answered either way).
            let (remote, local): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .partition(|e| forward.owner_elsewhere(&e.key).is_some());
            if !remote.is_empty() {
                forward.push(map.clone(), remote, conn.handle.id).await;
            }
            entries = local;
        }
        if self
            .push_local(conn.handle.id, &map, entries)
            .await
            .is_err()
        {
            return Some(Outbound::Message(error::shutting_down()));
        }
        None
    }

    /// Merges pushed entries into this member's shards, pushed by `author` (a connection
    /// here, or another member's).
    pub(crate) async fn push_local(
        &self,
        author: ConnId,
        map: &str,
        entries: Vec<topgun_core::OrMapEntry>,
    ) -> Result<(), crate::data::shards::ShardGone> {
        let parts = self.shards.split(entries, |e| &e.key);
        for (shard, entries) in parts.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let request = Request::Push {
                conn: author,
                map: map.to_owned(),
                entries,
            };
            self.shards.send(shard, request).await?;
        }
        Ok(())
    }

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
        let items = push.entries.iter().map(items_of).sum();
        let user_id = conn.handle.access().user_id();
        let mut hlc = self.clock.lock();
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
        let total: usize = push.entries.iter().map(items_of).sum();
        let max = self.guards.ops_per_batch_max;
        let key_max = crate::journal::EVENTS_PER_FRAME_MAX - 1;
        if total > max || push.entries.iter().any(|e| items_of(e) > key_max) {
            return Err(error::refusal(
                code::TOO_LARGE,
                format!(
                    "the push holds {total} records and tombstones; at most {max} are allowed, \
                     and {key_max} per key (nothing was applied)"
                ),
            ));
        }
        let value_max = self.guards.value_bytes_max;
        if value_max == 0 {
            return Ok(());
        }
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
                        "a value of key {:?} is {big} bytes; at most {value_max} are allowed \
                         (nothing was applied)",
                        entry.key
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What happens once a batch's parts are sent: wait for every shard, then ack.
struct Finish {
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    started: std::time::Instant,
    achieved: WriteConcern,
    /// The `OP_REJECTED`s, sent before the ack.
    frames: Vec<Message>,
    last_id: Option<CompactString>,
    applied: Vec<AppliedOp>,
    deadline: Option<Deadline>,
}

/// Each shard's answer to its part of a batch.
type Parts = Vec<oneshot::Receiver<Result<WriteConcern, (u32, String)>>>;

impl Finish {
    async fn after(mut self, pending: Parts) -> Vec<Message> {
        let answers = match self.deadline.take() {
            None => join_all(pending).await,
            Some(deadline) => match tokio::time::timeout(deadline.after, join_all(pending)).await {
                Ok(answers) => answers,
                Err(_) => return self.timed_out(deadline),
            },
        };
        for result in answers {
            match result {
                Ok(Ok(level)) => self.achieved = weakest(self.achieved, level),
                Ok(Err((code, why))) => {
                    self.frames.push(error::error(code, why));
                    return self.frames;
                }
                Err(_) => {
                    self.frames.push(*error::shutting_down());
                    return self.frames;
                }
            }
        }
        self.metrics.batch_applied(self.started.elapsed());
        for op in &self.applied {
            self.pipeline.on_after_op(op);
        }
        if let Some(last_id) = self.last_id {
            self.frames.push(Message::OpAck(OpAck {
                last_id,
                achieved_level: Some(self.achieved),
                results: None,
            }));
        }
        self.frames
    }
}

impl Finish {
    /// The deadline passed before every part answered: the ack reports the level the whole
    /// batch is known to have reached — `APPLIED` once every part is applied, else
    /// `FIRE_AND_FORGET` (accepted, nothing confirmed) — and a failed result for each op.
    /// The writes go on: they may still become durable.
    fn timed_out(mut self, mut deadline: Deadline) -> Vec<Message> {
        let all_applied = deadline
            .applied
            .iter_mut()
            .all(|told| told.try_recv().is_ok());
        let reached = if all_applied {
            WriteConcern::Applied
        } else {
            WriteConcern::FireAndForget
        };
        let waited_for = if deadline.durable {
            "durable"
        } else {
            "applied"
        };
        let why = format!(
            "timed out after {} ms waiting for the batch to be {waited_for}; reached {}",
            deadline.after.as_millis(),
            reached.as_str()
        );
        let results = deadline
            .ops
            .into_iter()
            .map(|op_id| OpResult {
                op_id,
                success: false,
                achieved_level: reached,
                error: Some(why.as_str().into()),
            })
            .collect();
        if let Some(last_id) = self.last_id {
            self.frames.push(Message::OpAck(OpAck {
                last_id,
                achieved_level: Some(reached),
                results: Some(results),
            }));
        }
        self.frames
    }
}

/// Most denied ops an `ERROR` lists in `details.denied`; the rest are counted in `more`.
const DENIED_LISTED_MAX: usize = 100;

/// Whether a batch goes on after a refused op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Go {
    On,
    Stop,
}

/// A frame's refused ops: an `OP_REJECTED` each (the reason per op), then — as the reference
/// server's tools wait for the first `OP_ACK` or `ERROR` after a batch — one `ERROR 403`
/// listing the ops refused by policy or for a reserved map, and one `ERROR 429` if the rate
/// limiter refused any, all before the frame's `OP_ACK` (COMPAT §4.1).
#[derive(Debug, Default)]
struct Refusals {
    rejected: Vec<Message>,
    /// `(opId, mapName)` of each op refused with 403.
    denied: Vec<(CompactString, CompactString)>,
    rate_limited: bool,
}

impl Refusals {
    fn refuse(
        &mut self,
        id: Option<CompactString>,
        map: CompactString,
        refused: ops::Rejection,
    ) -> Go {
        let op_id = id.unwrap_or_else(|| "unknown".into());
        let stop = refused.retry && refused.code == code::TOO_MANY;
        match refused.code {
            code::FORBIDDEN => self.denied.push((op_id.clone(), map)),
            code::TOO_MANY => self.rate_limited = true,
            _ => {}
        }
        self.rejected.push(Message::OpRejected(OpRejected {
            op_id,
            reason: refused.reason.into(),
            code: Some(refused.code),
        }));
        if stop { Go::Stop } else { Go::On }
    }

    fn into_frames(mut self) -> Vec<Message> {
        if let Some(denied) = denied_error(&self.denied) {
            self.rejected.push(denied);
        }
        if self.rate_limited {
            self.rejected.push(error::error(
                code::TOO_MANY,
                "rate limit exceeded, slow down",
            ));
        }
        self.rejected
    }
}

/// The `ERROR 403` summing up a frame's denied ops, in the reference server's words.
/// A part whose answer never came (its owner's shard or link went away): retryable.
fn forward_lost() -> (u32, String) {
    (
        code::UNAVAILABLE,
        "a part of the batch got no answer from its owner; send the batch again".into(),
    )
}

/// Sends one owner its part: the answer, and word that the part is applied (for a batch
/// with a deadline) — an owner's answer is at least that.
fn forward_part(
    forward: &dyn Forward,
    owner: Owner,
    writes: Vec<(String, Write)>,
    durable: bool,
    author: ConnId,
) -> (oneshot::Receiver<PartAnswer>, oneshot::Receiver<()>) {
    let answered = forward.forward(owner, writes, durable, author);
    let (answer_tx, answer) = oneshot::channel();
    let (applied_tx, applied) = oneshot::channel();
    tokio::spawn(async move {
        let result = answered.await.unwrap_or_else(|_| Err(forward_lost()));
        if result.is_ok() {
            let _ = applied_tx.send(());
        }
        let _ = answer_tx.send(result);
    });
    (answer, applied)
}

fn denied_error(denied: &[(CompactString, CompactString)]) -> Option<Message> {
    let (_, first) = denied.first()?;
    let mut maps: Vec<&str> = denied.iter().map(|(_, map)| map.as_str()).collect();
    maps.sort_unstable();
    maps.dedup();
    let message = match maps.as_slice() {
        [_] => format!("write access denied for map: {first}"),
        several => format!("write access denied for maps: {}", several.join(", ")),
    };
    let listed = denied.iter().take(DENIED_LISTED_MAX).map(|(op_id, map)| {
        let entry = [
            ("opId", Value::Str(op_id.clone())),
            ("mapName", Value::Str(map.clone())),
        ];
        Value::Map(entry.into_iter().collect())
    });
    let mut details = vec![("denied", Value::Array(listed.collect()))];
    if denied.len() > DENIED_LISTED_MAX {
        let more = u64::try_from(denied.len() - DENIED_LISTED_MAX).unwrap_or(u64::MAX);
        details.push(("more", Value::UInt(more)));
    }
    Some(Message::Error(ErrorPayload {
        code: code::FORBIDDEN,
        message: message.into(),
        details: Some(Value::Map(details.into_iter().collect())),
    }))
}

/// What `OP_ACK` names. Without any op id the ack is "unknown" (as the TopGun server
/// sends); with ids but a retryable refusal before any of them, nothing may be acknowledged.
fn ack_id(last_id: Option<CompactString>, any_id: bool, retry: bool) -> Option<CompactString> {
    match (last_id, any_id) {
        (Some(id), _) => Some(id),
        (None, false) if !retry => Some("unknown".into()),
        (None, _) => None,
    }
}

/// A pushed entry's records and tombstones: each counts as one op.
fn items_of(entry: &OrMapEntry) -> usize {
    entry.records.len() + entry.tombstones.len()
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

/// The encoded size of an op's value.
fn value_bytes(op: &ClientOp) -> usize {
    let lww = match &op.record {
        Field::Value(r) => encode_standalone(&r.value).len(),
        _ => 0,
    };
    let or = match &op.or_record {
        Field::Value(r) => encode_standalone(&r.value).len(),
        _ => 0,
    };
    lww.max(or)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_names_the_last_id_unknown_without_ids_and_nothing_after_a_retry() {
        assert_eq!(ack_id(Some("7".into()), true, true).as_deref(), Some("7"));
        assert_eq!(ack_id(None, false, false).as_deref(), Some("unknown"));
        assert_eq!(ack_id(None, false, true), None);
        assert_eq!(ack_id(None, true, false), None);
    }

    fn rejection(code: u32, retry: bool) -> ops::Rejection {
        ops::Rejection {
            code,
            reason: "why".into(),
            retry,
        }
    }

    #[test]
    fn denied_ops_are_summed_up_in_one_error_after_their_op_rejecteds() {
        let mut refusals = Refusals::default();
        let on = refusals.refuse(Some("7".into()), "secret".into(), rejection(403, false));
        assert_eq!(on, Go::On);
        refusals.refuse(Some("9".into()), "todos".into(), rejection(400, false));
        refusals.refuse(None, "secret".into(), rejection(403, false));
        let frames = refusals.into_frames();
        let types: Vec<_> = frames.iter().map(Message::type_name).collect();
        assert_eq!(
            types,
            ["OP_REJECTED", "OP_REJECTED", "OP_REJECTED", "ERROR"]
        );
        let Message::Error(e) = &frames[3] else {
            unreachable!()
        };
        assert_eq!(
            (e.code, e.message.as_str()),
            (403, "write access denied for map: secret")
        );
        let details = e.details.as_ref().expect("details");
        let denied = details.get("denied").expect("denied");
        let Value::Array(denied) = denied else {
            panic!("{denied:?}")
        };
        assert_eq!(denied.len(), 2, "the 400 is not a denial");
        assert_eq!(denied[0].get("opId"), Some(&Value::from("7")));
        assert_eq!(denied[1].get("opId"), Some(&Value::from("unknown")));
        assert_eq!(denied[1].get("mapName"), Some(&Value::from("secret")));
    }

    #[test]
    fn a_rate_limit_stops_the_batch_and_adds_an_error_429() {
        let mut refusals = Refusals::default();
        assert_eq!(
            refusals.refuse(Some("1".into()), "m".into(), rejection(429, true)),
            Go::Stop
        );
        let frames = refusals.into_frames();
        let Message::Error(e) = &frames[1] else {
            panic!("{frames:?}")
        };
        assert_eq!(e.code, 429);
        assert!(
            Refusals::default().into_frames().is_empty(),
            "no refusal, no ERROR"
        );
    }

    #[test]
    fn a_long_denial_lists_a_hundred_ops_and_counts_the_rest() {
        let denied: Vec<_> = (0..130)
            .map(|i| {
                (
                    CompactString::from(i.to_string()),
                    CompactString::from(if i % 2 == 0 { "a" } else { "b" }),
                )
            })
            .collect();
        let Some(Message::Error(e)) = denied_error(&denied) else {
            panic!()
        };
        assert_eq!(e.message.as_str(), "write access denied for maps: a, b");
        let details = e.details.expect("details");
        let Some(Value::Array(listed)) = details.get("denied") else {
            panic!()
        };
        assert_eq!(listed.len(), DENIED_LISTED_MAX);
        assert_eq!(details.get("more"), Some(&Value::UInt(30)));
    }

    #[test]
    fn the_weakest_level_of_a_batch_is_what_it_achieved() {
        use WriteConcern::{Applied, FireAndForget, Persisted};
        assert_eq!(weakest(Persisted, Applied), Applied);
        assert_eq!(weakest(Applied, Persisted), Applied);
        assert_eq!(weakest(FireAndForget, Persisted), FireAndForget);
    }
}
