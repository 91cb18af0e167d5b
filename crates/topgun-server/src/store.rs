//! Where shards keep their records beyond memory: a narrow trait, and the in-memory twin
//! used by tests and by `STORAGE_BACKEND=memory`.
//!
//! A store holds the latest state of every `(map, key)`: an LWW record (tombstones
//! included, so that removes survive a restart) or an OR-Map key's records and tombstones.
//! Shards load their partitions from it at start-up and hand it every change they apply.
//! The methods return boxed futures so that disk and network stores fit behind the same
//! `dyn Store`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, ready};
use thiserror::Error;
use topgun_core::hash::partition_id;
use topgun_core::protocol::messages::LeafRecord;
use topgun_core::protocol::{Limits, decode_standalone, encode_standalone};
use topgun_core::{LwwRecord, OrMapEntry, OrRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    /// The store could not be reached or refused the operation; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes do not decode: the store is damaged.
    #[error("stored entry is corrupt: {0}")]
    Corrupt(String),
}

/// The two kinds of map; a name may be used by both, as two separate maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    Lww,
    Or,
}

/// The stored state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    Lww(LwwRecord),
    Or {
        records: Vec<OrRecord>,
        tombstones: Vec<String>,
    },
    /// The key is gone (its last tombstone was pruned): a store deletes it. Never loaded.
    Gone(MapKind),
}

impl StoredValue {
    pub fn kind(&self) -> MapKind {
        match self {
            Self::Lww(_) => MapKind::Lww,
            Self::Or { .. } => MapKind::Or,
            Self::Gone(kind) => *kind,
        }
    }
}

/// One key's state, as written and loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub map: String,
    pub key: String,
    pub value: StoredValue,
}

/// Limits for decoding what this server itself wrote: generous, since an OR key's state
/// can outgrow a client frame, but still bounded.
fn stored_limits() -> Limits {
    Limits {
        max_frame_bytes: 1 << 30,
        max_depth: 256,
        max_collection_len: 1 << 24,
        max_str_bytes: 1 << 30,
    }
}

impl StoredEntry {
    /// The entry's bytes, for the write-ahead log and disk stores:
    ///
    /// | bytes | field |
    /// |---|---|
    /// | 1 | kind: 0 = LWW, 1 = OR, 2 = LWW key gone, 3 = OR key gone |
    /// | 4 | map name length `n`, u32 little-endian |
    /// | n | map name, UTF-8 |
    /// | rest | MsgPack: `{key, record}` (LWW) or `{key, records, tombstones}` (OR), the wire shapes of `SYNC_RESP_LEAF` records and OR entries; the key as a MsgPack string when gone |
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.map.len());
        out.push(match &self.value {
            StoredValue::Lww(_) => 0,
            StoredValue::Or { .. } => 1,
            StoredValue::Gone(MapKind::Lww) => 2,
            StoredValue::Gone(MapKind::Or) => 3,
        });
        let map_len = u32::try_from(self.map.len()).expect("map names are at most 256 bytes");
        out.extend_from_slice(&map_len.to_le_bytes());
        out.extend_from_slice(self.map.as_bytes());
        let body = match &self.value {
            StoredValue::Lww(record) => encode_standalone(&LeafRecord {
                key: self.key.as_str().into(),
                record: record.clone(),
            }),
            StoredValue::Or {
                records,
                tombstones,
            } => encode_standalone(&OrMapEntry {
                key: self.key.clone(),
                records: records.clone(),
                tombstones: tombstones.clone(),
            }),
            StoredValue::Gone(_) => encode_standalone(&self.key),
        };
        out.extend_from_slice(&body);
        out
    }

    /// Reads back what [`StoredEntry::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |why: String| StoreError::Corrupt(why);
        let (&kind, rest) = bytes
            .split_first()
            .ok_or_else(|| corrupt("empty entry".into()))?;
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("entry too short for its map name".into()))?;
        let map_len = u32::from_le_bytes(len_bytes) as usize;
        let map = rest
            .get(4..4 + map_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| corrupt("entry map name is cut short or not UTF-8".into()))?
            .to_owned();
        let body = &rest[4 + map_len..];
        let limits = stored_limits();
        let (key, value) = match kind {
            0 => {
                let leaf = decode_standalone::<LeafRecord>(body, &limits)
                    .map_err(|e| corrupt(e.to_string()))?;
                (leaf.key.to_string(), StoredValue::Lww(leaf.record))
            }
            1 => {
                let entry = decode_standalone::<OrMapEntry>(body, &limits)
                    .map_err(|e| corrupt(e.to_string()))?;
                let value = StoredValue::Or {
                    records: entry.records,
                    tombstones: entry.tombstones,
                };
                (entry.key, value)
            }
            2 | 3 => {
                let key = decode_standalone::<String>(body, &limits)
                    .map_err(|e| corrupt(e.to_string()))?;
                let kind = if kind == 2 { MapKind::Lww } else { MapKind::Or };
                (key, StoredValue::Gone(kind))
            }
            other => return Err(corrupt(format!("unknown entry kind {other}"))),
        };
        Ok(Self { map, key, value })
    }
}

/// Durable (or not) storage of records, shared by all shards.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Every entry whose key falls in one of `partitions`.
    fn load(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Vec<StoredEntry>, StoreError>>;

    /// Upserts the entries (the latest state of each key); all or nothing.
    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>>;
}

type Slot = (MapKind, String, String);

/// Keeps everything in a map in memory: for tests, and for servers that need no
/// durability. Sharing one between two servers in turn simulates a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// std Mutex: held only to copy entries in or out, never across an `.await`.
    entries: Mutex<BTreeMap<Slot, StoredValue>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Slot, StoredValue>> {
        // The map is valid after any panic elsewhere: every write is a single insert.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Vec<StoredEntry>, StoreError>> {
        let entries = self
            .lock()
            .iter()
            .filter(|((_, _, key), _)| partitions.contains(&partition_id(key)))
            .map(|((_, map, key), value)| StoredEntry {
                map: map.clone(),
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        ready(Ok(entries)).boxed()
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut map = self.lock();
        for e in entries {
            let slot = (e.value.kind(), e.map, e.key);
            if matches!(e.value, StoredValue::Gone(_)) {
                map.remove(&slot);
            } else {
                map.insert(slot, e.value);
            }
        }
        ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::{NodeId, Timestamp, Value};

    fn lww(value: i64) -> StoredValue {
        let ts = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        StoredValue::Lww(LwwRecord::new(Value::Int(value), ts, None))
    }

    fn entry(map: &str, key: &str, value: StoredValue) -> StoredEntry {
        StoredEntry {
            map: map.into(),
            key: key.into(),
            value,
        }
    }

    #[tokio::test]
    async fn upserts_and_loads_by_partition() {
        let store = MemoryStore::new();
        store
            .write(vec![
                entry("m", "hello", lww(1)),
                entry("m", "key1", lww(2)),
            ])
            .await
            .unwrap();
        store
            .write(vec![entry("m", "hello", lww(3))])
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        // "hello" is in partition 95 and "key1" in 268 (PROTOCOL.md §3.1).
        let loaded = store.load(&[95]).await.unwrap();
        assert_eq!(loaded, vec![entry("m", "hello", lww(3))]);
        assert!(store.load(&[0]).await.unwrap().is_empty());
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        let ts = Timestamp::new(7, 1, NodeId::new("n").unwrap());
        let or = StoredValue::Or {
            records: vec![OrRecord {
                value: Value::Str("v".into()),
                tag: ts.to_string(),
                timestamp: ts,
                ttl_ms: Some(5),
            }],
            tombstones: vec!["1:0:x".into()],
        };
        let gone = StoredValue::Gone(MapKind::Or);
        for e in [
            entry("måp", "ключ", lww(3)),
            entry("m", "k", or),
            entry("m", "k", gone),
        ] {
            assert_eq!(StoredEntry::decode(&e.encode()).unwrap(), e);
        }
        let bytes = entry("m", "k", lww(1)).encode();
        for cut in [0, 1, 4, 6, bytes.len() - 1] {
            assert!(StoredEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn lww_and_or_maps_of_one_name_are_separate() {
        let store = MemoryStore::new();
        let or = StoredValue::Or {
            records: vec![],
            tombstones: vec!["1:0:n".into()],
        };
        store
            .write(vec![entry("m", "hello", lww(1)), entry("m", "hello", or)])
            .await
            .unwrap();
        assert_eq!(store.load(&[95]).await.unwrap().len(), 2);
    }
}
