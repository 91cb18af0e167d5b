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
use topgun_core::{LwwRecord, OrRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    /// The store could not be reached or refused the operation; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
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
}

impl StoredValue {
    pub fn kind(&self) -> MapKind {
        match self {
            Self::Lww(_) => MapKind::Lww,
            Self::Or { .. } => MapKind::Or,
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

/// Durable (or not) storage of records, shared by all shards.
pub trait Store: Send + Sync + 'static {
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
            map.insert((e.value.kind(), e.map, e.key), e.value);
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
