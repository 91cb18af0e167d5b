//! OR-Map pushes (`ORMAP_PUSH_DIFF`) to partitions other members own (CLUSTER.md §8): the
//! entry member checks and intercepts a push as one node does, then sends each owner its
//! entries; pushes have no answer for the client, so a part that cannot be delivered is
//! logged and the client's next sync (its root still differs) pushes it again.
//!
//! `FWD_PUSH` (a request on the data channel): `u64` the entry member's table version,
//! `u64` the pushing connection ([`remote_writer`]), then the `ORMAP_PUSH_DIFF` as encoded
//! for clients. The reply is `0` (merged) or `2` and the owner's table version: it does not
//! own every entry — the entry member waits to know that table and routes the entries again
//! (a merge is idempotent), at most [`ATTEMPTS`] times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;
use topgun_cluster::table::partition_of;
use topgun_core::OrMapEntry;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::OrMapPushDiff;

use super::hello::Channel;
use super::read_wire::decode_message;
use super::routes::{Routes, RoutesWatch};
use super::rpc::Rpc;
use crate::connection::ConnId;
use crate::data::forward::{Owner, REMOTE_WRITER, remote_writer, writer_origin};

/// The service id of a forwarded push.
pub const FWD_PUSH: u8 = 14;
/// Tries of one push: the first, and re-routes after ownership moved.
const ATTEMPTS: usize = 3;
/// Forwarded pushes on their way at once; past it the pushing readers wait.
pub const IN_FLIGHT: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(5);
const TABLE_CATCH_UP: Duration = Duration::from_secs(2);
const MERGED: u8 = 0;
const MOVED: u8 = 2;

/// Applies pushed entries on this member's shards.
pub trait LocalPushes: Send + Sync + 'static {
    fn push(&self, map: String, entries: Vec<OrMapEntry>, author: ConnId)
    -> BoxFuture<'static, ()>;
}

/// Entries by where they go under `routes`: this member (`None`) or another.
fn split(routes: &Routes, entries: Vec<OrMapEntry>) -> BTreeMap<Option<Owner>, Vec<OrMapEntry>> {
    let mut parts: BTreeMap<Option<Owner>, Vec<OrMapEntry>> = BTreeMap::new();
    for entry in entries {
        let owner = routes.owner(partition_of(&entry.key));
        let to = (owner != routes.me)
            .then(|| routes.members().find(|(id, _)| *id == owner))
            .flatten()
            .map(|(id, addr)| Owner { id: id.0, addr });
        parts.entry(to).or_default().push(entry);
    }
    parts
}

/// Sends `entries` of `map` (pushed by this member's connection `author`) to their owners,
/// off the caller's task, holding `slot` until done; entries that turn out to be this
/// member's are merged here.
pub fn forward(
    rpc: Arc<Rpc>,
    routes: RoutesWatch,
    local: Arc<dyn LocalPushes>,
    (map, entries, author): (String, Vec<OrMapEntry>, ConnId),
    slot: OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let mut pending = entries;
        for _ in 0..ATTEMPTS {
            let Some(current) = routes.borrow().clone() else {
                break;
            };
            let mut moved_to = None;
            let mut again = Vec::new();
            for (owner, part) in split(&current, std::mem::take(&mut pending)) {
                let Some(owner) = owner else {
                    local.push(map.clone(), part, author).await;
                    continue;
                };
                let body = body(
                    current.version,
                    remote_writer(current.me.0, author),
                    &map,
                    &part,
                );
                match send(&rpc, &owner, &body).await {
                    Ok(None) => {}
                    Ok(Some(theirs)) => {
                        moved_to = Some(moved_to.unwrap_or(theirs).max(theirs));
                        again.extend(part);
                    }
                    Err(why) => {
                        tracing::warn!(map, owner = owner.id, %why, "pushed entries not delivered");
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            pending = again;
            if let Some(version) = moved_to {
                let mut watch = routes.clone();
                let newer = watch.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= version));
                let _ = tokio::time::timeout(TABLE_CATCH_UP, newer).await;
            }
        }
        tracing::warn!(
            map,
            entries = pending.len(),
            "pushed entries kept moving owners"
        );
    });
}

fn body(version: u64, author: u64, map: &str, entries: &[OrMapEntry]) -> Vec<u8> {
    let push = Message::OrMapPushDiff(OrMapPushDiff {
        map_name: map.into(),
        entries: entries.to_vec(),
    });
    let mut out = BytesMut::new();
    out.put_u64(version);
    out.put_u64(author);
    out.put_slice(&push.encode());
    out.to_vec()
}

/// `None` once merged; `Some(version)` when the owner's table says it does not own them.
async fn send(rpc: &Rpc, owner: &Owner, body: &[u8]) -> Result<Option<u64>, String> {
    let mut reply = rpc
        .call(&owner.addr, Channel::Data, FWD_PUSH, body, TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    match (reply.len(), reply.first()) {
        (1, Some(&MERGED)) => Ok(None),
        (9, Some(&MOVED)) => {
            reply.advance(1);
            Ok(Some(reply.get_u64()))
        }
        _ => Err("a malformed answer to a push".into()),
    }
}

/// The owner's side: merges the entries if this member owns every one under a table at
/// least as new as the sender's.
pub async fn serve(
    routes: RoutesWatch,
    local: Arc<dyn LocalPushes>,
    mut body: Bytes,
) -> Result<Bytes, String> {
    if body.len() < 16 {
        return Err("a forwarded push without its header".into());
    }
    let theirs = body.get_u64();
    let author = Some(body.get_u64())
        .filter(|w| writer_origin(*w).is_some())
        .unwrap_or(REMOTE_WRITER);
    let Message::OrMapPushDiff(push) = decode_message(&body)? else {
        return Err("a forwarded push that is not one".into());
    };
    crate::data::ops::check_map_name(&push.map_name).map_err(|r| r.reason)?;
    let mut watch = routes.clone();
    let newer = watch.wait_for(|r| r.as_ref().is_some_and(|r| r.version >= theirs));
    let _ = tokio::time::timeout(TABLE_CATCH_UP, newer).await;
    let current = routes.borrow().clone();
    let owned = current.as_ref().is_some_and(|r| {
        r.version >= theirs && push.entries.iter().all(|e| r.owns(partition_of(&e.key)))
    });
    let mut out = BytesMut::with_capacity(9);
    if !owned {
        out.put_u8(MOVED);
        out.put_u64(current.map_or(0, |r| r.version));
        return Ok(out.freeze());
    }
    local
        .push(push.map_name.to_string(), push.entries, author)
        .await;
    out.put_u8(MERGED);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_body_carries_its_header_and_entries() {
        let entry = OrMapEntry {
            key: "k".into(),
            records: Vec::new(),
            tombstones: vec!["t".into()],
        };
        let mut bytes = Bytes::from(body(
            7,
            remote_writer(2, 3),
            "tags",
            std::slice::from_ref(&entry),
        ));
        assert_eq!(bytes.get_u64(), 7);
        assert_eq!(writer_origin(bytes.get_u64()), Some((2, 3)));
        match decode_message(&bytes) {
            Ok(Message::OrMapPushDiff(p)) => assert_eq!(p.entries, [entry]),
            other => panic!("{other:?}"),
        }
    }
}
