//! Writes to partitions another member owns (CLUSTER.md §8). The entry node admits and
//! validates a batch exactly as on one node — policies, interceptors, HLC stamps — then
//! sends each remote owner its part; the owner applies it through its shards and answers
//! like a shard would. The batch is acknowledged once every part is, so a client never sees
//! which member applied what, and nothing is ever refused with `NOT_OWNER`.
//!
//! The wire form of a part reuses the storage entry format ([`StoredEntry`]): an LWW write
//! is an LWW entry, an OR add an OR entry with one record, an OR remove one with one
//! tombstone.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use topgun_core::protocol::enums::WriteConcern;

use crate::connection::ConnId;
use crate::data::ops::Write;
use crate::data::shard::service::Failure;
use crate::storage::store::{StoreError, StoredEntry, StoredValue};

/// The writer of a forwarded write on its owner when its origin is unknown: no connection
/// there wrote it, so every local subscriber is told of it. Connection ids start at 1.
pub const REMOTE_WRITER: ConnId = 0;

/// A writer id with this bit stands for a connection on another member: the owner tells
/// its own subscribers of the write, and relays it to the writer's member naming the
/// connection, which is not sent its own write there either.
const REMOTE_BIT: u64 = 1 << 63;
/// Bits of the connection id in a remote writer id; the member's Raft id takes those above.
const CONN_BITS: u32 = 40;
const CONN_MASK: u64 = (1 << CONN_BITS) - 1;
const MEMBER_MAX: u64 = (1 << (63 - CONN_BITS)) - 1;

/// The writer id, on the owner, of connection `conn` of member `member`;
/// [`REMOTE_WRITER`] for ids too large to carry (never reached: ids count members and
/// connections from 1).
pub fn remote_writer(member: u64, conn: ConnId) -> ConnId {
    if member == 0 || member > MEMBER_MAX || conn == 0 || conn > CONN_MASK {
        return REMOTE_WRITER;
    }
    REMOTE_BIT | (member << CONN_BITS) | conn
}

/// The member and connection a remote writer id stands for.
pub fn writer_origin(writer: ConnId) -> Option<(u64, ConnId)> {
    (writer & REMOTE_BIT != 0).then_some(((writer & !REMOTE_BIT) >> CONN_BITS, writer & CONN_MASK))
}

/// How one part of a batch ended: the level it reached, or why it failed.
pub type PartAnswer = Result<WriteConcern, Failure>;

/// A member writes go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub id: u64,
    /// Its cluster address.
    pub addr: String,
}

/// Where the data plane sends writes it does not own. Absent on a single node.
pub trait Forward: Send + Sync + Debug {
    /// The owner of `key`'s partition when it is another member; `None` when it is this one.
    fn owner_elsewhere(&self, key: &str) -> Option<Owner>;

    /// Sends `writes` (all in partitions `to` owns), written by this member's connection
    /// `author`, to their owner; answers like a shard.
    fn forward(
        &self,
        to: Owner,
        writes: Vec<(String, Write)>,
        durable: bool,
        author: ConnId,
    ) -> oneshot::Receiver<PartAnswer>;

    /// Waits, at most `within`, until a partition table is committed; whether one is.
    fn ready(&self, within: Duration) -> BoxFuture<'_, bool>;

    /// Sends pushed OR entries (`ORMAP_PUSH_DIFF` by this member's connection `author`),
    /// some of which other members own, to their owners. Resolves once they are on their
    /// way (waiting while too many pushes are), not once merged: a push has no answer.
    fn push(
        &self,
        map: String,
        entries: Vec<topgun_core::OrMapEntry>,
        author: ConnId,
    ) -> BoxFuture<'_, ()>;
}

/// `writes` as a forwarded part's bytes: `u32` count, then each entry as `u32` length and
/// [`StoredEntry`] bytes.
pub fn encode_writes(writes: &[(String, Write)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * writes.len() + 4);
    out.extend_from_slice(&count(writes.len()).to_be_bytes());
    for (map, write) in writes {
        let bytes = stored(map, write).encode();
        out.extend_from_slice(&count(bytes.len()).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Reads back [`encode_writes`]' bytes; an error for anything else.
pub fn decode_writes(mut bytes: &[u8]) -> Result<Vec<(String, Write)>, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("a forwarded part: {why}"));
    let n = take_u32(&mut bytes).ok_or_else(|| corrupt("no count"))?;
    // Each entry takes at least its length and a header: a count beyond that is a lie.
    if n as usize > bytes.len() / 9 + 1 {
        return Err(corrupt("a count larger than the bytes"));
    }
    let mut writes = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = take_u32(&mut bytes).ok_or_else(|| corrupt("no entry length"))? as usize;
        if len > bytes.len() {
            return Err(corrupt("an entry past the end"));
        }
        let (entry, rest) = bytes.split_at(len);
        bytes = rest;
        writes.push(write_of(StoredEntry::decode(entry)?).ok_or_else(|| corrupt("not a write"))?);
    }
    if !bytes.is_empty() {
        return Err(corrupt("bytes after the last entry"));
    }
    Ok(writes)
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn take_u32(bytes: &mut &[u8]) -> Option<u32> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    *bytes = rest;
    Some(u32::from_be_bytes(*head))
}

fn stored(map: &str, write: &Write) -> StoredEntry {
    let (key, value) = match write {
        Write::Lww { key, record } => (key, StoredValue::Lww(record.clone())),
        Write::OrAdd { key, record } => (
            key,
            StoredValue::Or {
                records: vec![record.clone()],
                tombstones: Vec::new(),
            },
        ),
        Write::OrRemove { key, tag } => (
            key,
            StoredValue::Or {
                records: Vec::new(),
                tombstones: vec![tag.clone()],
            },
        ),
    };
    StoredEntry {
        map: map.to_owned(),
        key: key.clone(),
        value,
    }
}

fn write_of(entry: StoredEntry) -> Option<(String, Write)> {
    let StoredEntry { map, key, value } = entry;
    let write = match value {
        StoredValue::Lww(record) => Write::Lww { key, record },
        StoredValue::Or {
            mut records,
            mut tombstones,
        } => match (records.len(), tombstones.len()) {
            (1, 0) => Write::OrAdd {
                key,
                record: records.pop()?,
            },
            (0, 1) => Write::OrRemove {
                key,
                tag: tombstones.pop()?,
            },
            _ => return None,
        },
        StoredValue::Gone(_) => return None,
    };
    Some((map, write))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use topgun_core::{LwwRecord, NodeId, OrRecord, Timestamp, Value};

    use super::*;

    #[test]
    fn a_remote_writer_names_its_member_and_connection_and_never_a_local_one() {
        let writer = remote_writer(3, 42);
        assert_eq!(writer_origin(writer), Some((3, 42)));
        assert_ne!(writer, 42, "never a local connection's id");
        assert_eq!(writer_origin(42), None);
        assert_eq!(writer_origin(REMOTE_WRITER), None);
        assert_eq!(remote_writer(0, 42), REMOTE_WRITER);
        assert_eq!(remote_writer(1 << 30, 42), REMOTE_WRITER);
        assert_eq!(remote_writer(3, 1 << 41), REMOTE_WRITER);
        assert_eq!(
            writer_origin(remote_writer(MEMBER_MAX, CONN_MASK)),
            Some((MEMBER_MAX, CONN_MASK))
        );
    }

    fn ts(millis: u64) -> Timestamp {
        Timestamp::new(millis, 1, NodeId::new("n1").unwrap())
    }

    fn writes() -> Vec<(String, Write)> {
        vec![
            (
                "todos".into(),
                Write::Lww {
                    key: "a".into(),
                    record: LwwRecord {
                        value: Value::from("A"),
                        timestamp: ts(1),
                        ttl_ms: None,
                    },
                },
            ),
            (
                "tags".into(),
                Write::OrAdd {
                    key: "k".into(),
                    record: OrRecord {
                        value: Value::from(7i64),
                        timestamp: ts(2),
                        tag: "t1".into(),
                        ttl_ms: None,
                    },
                },
            ),
            (
                "tags".into(),
                Write::OrRemove {
                    key: "k".into(),
                    tag: "t0".into(),
                },
            ),
        ]
    }

    #[test]
    fn a_part_round_trips() {
        let bytes = encode_writes(&writes());
        assert_eq!(decode_writes(&bytes).unwrap(), writes());
        assert_eq!(decode_writes(&encode_writes(&[])).unwrap(), []);
    }

    #[test]
    fn malformed_parts_are_errors() {
        let bytes = encode_writes(&writes());
        for cut in [0, 3, 4, 10, bytes.len() - 1] {
            assert!(decode_writes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_writes(&longer).is_err());
        let mut lying = bytes;
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_writes(&lying).is_err());
    }
}
