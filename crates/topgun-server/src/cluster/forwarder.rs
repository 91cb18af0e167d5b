//! Write forwarding between members (CLUSTER.md §8): the data plane's [`Forward`] on the
//! entry node, and the service that applies forwarded parts on their owner.
//!
//! A part is a request on the data channel: `u8` durable, `u64` the entry node's table
//! version, `u64` the writer ([`remote_writer`]: the entry node's member id and
//! connection, so that the writer is not sent its own write), the writes
//! ([`crate::data::forward::encode_writes`]). The reply is one of
//! * `0`, the level reached (its wire string);
//! * `1`, `u32` error code, the reason: the part failed (a full shard queue, shutting down);
//! * `2`, `u64` the owner's table version: it does not own every partition of the part —
//!   ownership moved. The entry node waits to know that table, routes the part again and
//!   retries (writes are idempotent, so a repeat after a lost reply is harmless), at most
//!   [`ATTEMPTS`] times.
//!
//! Invariant: an owner applies a forwarded write only in a partition it owns under a table
//! at least as new as the one the entry node routed by, so a write is never applied by a
//! member that gave its partition away before the entry node knew.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use topgun_cluster::table::partition_of;
use topgun_core::protocol::enums::WriteConcern;

use super::hello::Channel;
use super::routes::{Routes, RoutesWatch};
use super::rpc::{CallError, Rpc};
use crate::connection::ConnId;
use crate::data::forward::{
    Forward, Owner, PartAnswer, REMOTE_WRITER, decode_writes, encode_writes, remote_writer,
    writer_origin,
};
use crate::data::ops::Write;
use crate::error::code;
use crate::metrics::cluster::ForwardStats;

/// The service id of a forwarded part.
pub const FWD_WRITES: u8 = 10;

/// Tries of one part: the first, and re-routes after ownership moved.
pub const ATTEMPTS: usize = 3;

/// The longest an entry node or owner waits to learn a newer table before it gives up.
const TABLE_CATCH_UP: Duration = Duration::from_secs(2);

const ANSWER_LEVEL: u8 = 0;
const ANSWER_FAILED: u8 = 1;
const ANSWER_MOVED: u8 = 2;

/// Applies writes on this member's own shards.
pub trait LocalWrites: Send + Sync + 'static {
    /// Applies `writes` by `author` (a local connection, or a [`remote_writer`] id).
    fn apply(
        &self,
        writes: Vec<(String, Write)>,
        durable: bool,
        author: ConnId,
    ) -> BoxFuture<'static, PartAnswer>;
}

/// The entry node's side: routes by the applied table, sends parts, re-routes on moves.
#[derive(Clone)]
pub struct Forwarder {
    rpc: Arc<Rpc>,
    routes: RoutesWatch,
    local: Arc<dyn LocalWrites>,
    /// Pushed OR entries that turn out to be this member's are merged here.
    pushes: Arc<dyn super::pushes::LocalPushes>,
    /// Bounds the forwarded pushes on their way at once.
    push_slots: Arc<tokio::sync::Semaphore>,
    /// How long one attempt waits for its owner's answer.
    timeout: Duration,
    stats: Arc<ForwardStats>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One part of a batch: its writes, whether its ack waits for durability, and the entry
/// node's connection that wrote it.
struct Part {
    writes: Vec<(String, Write)>,
    durable: bool,
    author: ConnId,
}

/// Where each write of a part goes now.
enum Routed {
    Local(Vec<(String, Write)>),
    Remote(Owner, Vec<(String, Write)>),
}

impl Forwarder {
    pub fn new(
        rpc: Arc<Rpc>,
        routes: RoutesWatch,
        (local, pushes): (Arc<dyn LocalWrites>, Arc<dyn super::pushes::LocalPushes>),
        timeout: Duration,
    ) -> Self {
        Self {
            rpc,
            routes,
            local,
            pushes,
            push_slots: Arc::new(tokio::sync::Semaphore::new(super::pushes::IN_FLIGHT)),
            timeout,
            stats: Arc::default(),
        }
    }

    /// What forwarding has done, for `/metrics`.
    pub fn stats(&self) -> &Arc<ForwardStats> {
        &self.stats
    }

    fn current(&self) -> Option<Arc<Routes>> {
        self.routes.borrow().clone()
    }

    /// Sends one part, re-routing it when its owner says ownership moved.
    async fn send(self, to: Owner, part: Part, attempt: usize) -> PartAnswer {
        let Part {
            writes,
            durable,
            author,
        } = part;
        let current = self.current();
        let version = current.as_ref().map_or(0, |r| r.version);
        let me = current.map_or(0, |r| r.me.0);
        let mut body = BytesMut::new();
        body.put_u8(u8::from(durable));
        body.put_u64(version);
        body.put_u64(remote_writer(me, author));
        body.put_slice(&encode_writes(&writes));
        let started = std::time::Instant::now();
        let reply = self
            .rpc
            .call(&to.addr, Channel::Data, FWD_WRITES, &body, self.timeout)
            .await;
        let answer = reply.map_err(call_failed).and_then(read_answer);
        let done = matches!(answer, Ok(Answer::Done(_)));
        self.stats.record(writes.len(), started.elapsed(), done);
        match answer? {
            Answer::Done(level) => Ok(level),
            Answer::Moved(theirs) if attempt + 1 < ATTEMPTS => {
                wait_for_version(self.routes.clone(), theirs).await;
                let part = Part {
                    writes,
                    durable,
                    author,
                };
                self.reroute(part, attempt + 1).await
            }
            Answer::Moved(_) => Err(moved_too_often()),
        }
    }

    /// Splits `writes` by their owners under the table now applied and sends each part.
    fn reroute(self, part: Part, attempt: usize) -> BoxFuture<'static, PartAnswer> {
        async move {
            let Some(routes) = self.current() else {
                return Err(moved_too_often());
            };
            let Part {
                writes,
                durable,
                author,
            } = part;
            let parts = split(&routes, writes);
            let answers = parts.into_iter().map(|routed| match routed {
                Routed::Local(writes) => self.local.apply(writes, durable, author),
                Routed::Remote(owner, writes) => {
                    let part = Part {
                        writes,
                        durable,
                        author,
                    };
                    self.clone().send(owner, part, attempt).boxed()
                }
            });
            let mut reached = WriteConcern::Persisted;
            for answer in futures_util::future::join_all(answers).await {
                reached = weaker(reached, answer?);
            }
            Ok(reached)
        }
        .boxed()
    }
}

impl Forward for Forwarder {
    fn owner_elsewhere(&self, key: &str) -> Option<Owner> {
        let routes = self.routes.borrow();
        let routes = routes.as_ref()?;
        owner_of(routes, key)
    }

    fn forward(
        &self,
        to: Owner,
        writes: Vec<(String, Write)>,
        durable: bool,
        author: ConnId,
    ) -> oneshot::Receiver<PartAnswer> {
        let (answer, answered) = oneshot::channel();
        let this = self.clone();
        let part = Part {
            writes,
            durable,
            author,
        };
        tokio::spawn(async move {
            let _ = answer.send(this.send(to, part, 0).await);
        });
        answered
    }

    fn push(
        &self,
        map: String,
        entries: Vec<topgun_core::OrMapEntry>,
        author: ConnId,
    ) -> BoxFuture<'_, ()> {
        async move {
            // The pushing reader waits while too many pushes are on their way.
            let Ok(slot) = Arc::clone(&self.push_slots).acquire_owned().await else {
                return;
            };
            let (rpc, routes) = (Arc::clone(&self.rpc), self.routes.clone());
            let local = Arc::clone(&self.pushes);
            super::pushes::forward(rpc, routes, local, (map, entries, author), slot);
        }
        .boxed()
    }

    fn ready(&self, within: Duration) -> BoxFuture<'_, bool> {
        let mut routes = self.routes.clone();
        async move {
            let known = routes.wait_for(Option::is_some);
            tokio::time::timeout(within, known)
                .await
                .is_ok_and(|r| r.is_ok())
        }
        .boxed()
    }
}

/// The owner of `key` when it is not this member.
fn owner_of(routes: &Routes, key: &str) -> Option<Owner> {
    let owner = routes.owner(partition_of(key));
    if owner == routes.me {
        return None;
    }
    Some(Owner {
        id: owner.0,
        addr: routes.addr(owner)?.to_owned(),
    })
}

fn split(routes: &Routes, writes: Vec<(String, Write)>) -> Vec<Routed> {
    let mut local = Vec::new();
    let mut remote: BTreeMap<Owner, Vec<_>> = BTreeMap::new();
    for (map, write) in writes {
        match owner_of(routes, write.key()) {
            Some(owner) => remote.entry(owner).or_default().push((map, write)),
            None => local.push((map, write)),
        }
    }
    let remote = remote.into_iter().map(|(o, w)| Routed::Remote(o, w));
    (!local.is_empty())
        .then_some(Routed::Local(local))
        .into_iter()
        .chain(remote)
        .collect()
}

/// Waits, at most [`TABLE_CATCH_UP`], until the applied table is at least `version`.
async fn wait_for_version(mut routes: RoutesWatch, version: u64) {
    let caught_up = routes.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= version));
    let _ = tokio::time::timeout(TABLE_CATCH_UP, caught_up).await;
}

enum Answer {
    Done(WriteConcern),
    Moved(u64),
}

fn read_answer(mut reply: Bytes) -> Result<Answer, (u32, String)> {
    let malformed = || {
        (
            code::INTERNAL,
            "a malformed answer from a member".to_owned(),
        )
    };
    if reply.is_empty() {
        return Err(malformed());
    }
    match reply.get_u8() {
        ANSWER_LEVEL => std::str::from_utf8(&reply)
            .ok()
            .and_then(WriteConcern::parse)
            .map(Answer::Done)
            .ok_or_else(malformed),
        ANSWER_FAILED if reply.len() >= 4 => {
            let code = reply.get_u32();
            Err((code, String::from_utf8_lossy(&reply).into_owned()))
        }
        ANSWER_MOVED if reply.len() == 8 => Ok(Answer::Moved(reply.get_u64())),
        _ => Err(malformed()),
    }
}

fn call_failed(e: CallError) -> (u32, String) {
    let why = match e {
        CallError::Timeout(after) => format!(
            "the member owning part of the batch did not answer within {after:?}; it may or may \
             not be applied — send the batch again"
        ),
        other => format!("part of the batch could not reach its owner ({other}); send it again"),
    };
    (code::UNAVAILABLE, why)
}

fn moved_too_often() -> (u32, String) {
    (
        code::UNAVAILABLE,
        "partition ownership kept moving while the batch was routed; send it again".into(),
    )
}

fn weaker(a: WriteConcern, b: WriteConcern) -> WriteConcern {
    let rank = |w: WriteConcern| match w {
        WriteConcern::FireAndForget => 0,
        WriteConcern::Memory => 1,
        WriteConcern::Applied => 2,
        WriteConcern::Replicated => 3,
        WriteConcern::Persisted => 4,
    };
    if rank(a) <= rank(b) { a } else { b }
}

/// The owner's side: applies a forwarded part if this member owns all of it under a table
/// at least as new as the sender's.
pub async fn serve_part(
    routes: RoutesWatch,
    local: Arc<dyn LocalWrites>,
    mut body: Bytes,
) -> Result<Bytes, String> {
    if body.len() < 17 {
        return Err("a forwarded part without its header".into());
    }
    let durable = body.get_u8() != 0;
    let theirs = body.get_u64();
    // Only an id naming another member's connection: a peer cannot make this member skip
    // one of its own connections.
    let author = Some(body.get_u64())
        .filter(|w| writer_origin(*w).is_some())
        .unwrap_or(REMOTE_WRITER);
    let writes = decode_writes(&body).map_err(|e| e.to_string())?;
    wait_for_version(routes.clone(), theirs).await;
    let Some(routes) = routes.borrow().clone() else {
        return Ok(moved(0));
    };
    let owned = writes
        .iter()
        .all(|(_, w)| routes.owns(partition_of(w.key())));
    if !owned || routes.version < theirs {
        return Ok(moved(routes.version));
    }
    let mut out = BytesMut::new();
    match local.apply(writes, durable, author).await {
        Ok(level) => {
            out.put_u8(ANSWER_LEVEL);
            out.put_slice(level.as_str().as_bytes());
        }
        Err((code, why)) => {
            out.put_u8(ANSWER_FAILED);
            out.put_u32(code);
            out.put_slice(why.as_bytes());
        }
    }
    Ok(out.freeze())
}

fn moved(version: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(9);
    out.put_u8(ANSWER_MOVED);
    out.put_u64(version);
    out.freeze()
}

#[cfg(test)]
#[path = "forwarder_tests.rs"]
mod tests;
