//! The embedded default store: one redb file (`<data dir>/store.redb`).
//!
//! One table maps `kind ‖ map length ‖ map ‖ key` to the entry's byte form
//! ([`StoredEntry::encode`]). redb commits are atomic and durable, so a batch of entries is
//! stored all or nothing. Calls run on the blocking pool: redb does file I/O.

use std::path::Path;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use topgun_core::hash::partition_id;

use crate::storage::store::{
    EncodedEntry, Loaded, MapKind, Store, StoreError, StoredEntry, Unreadable,
};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The redb store.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

fn slot(entry: &EncodedEntry) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + entry.map.len() + entry.key.len());
    key.push(match entry.kind {
        MapKind::Lww => 0,
        MapKind::Or => 1,
    });
    let map_len = u32::try_from(entry.map.len()).expect("map names are at most 256 bytes");
    key.extend_from_slice(&map_len.to_le_bytes());
    key.extend_from_slice(entry.map.as_bytes());
    key.extend_from_slice(entry.key.as_bytes());
    key
}

/// redb's page cache by default. The server keeps every record in memory and reads the
/// store only when it starts, so the cache serves the checkpoint's B-tree walks alone:
/// 64 MiB holds the branch pages of millions of entries. (redb's own default, 1 GiB, made
/// the server's memory grow by about 500 bytes per stored entry, for no measurable speed.)
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl RedbStore {
    /// Opens (or creates) the store file with a [`DEFAULT_CACHE_BYTES`] cache.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store file with a page cache of at most `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(ENTRIES).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn load_blocking(&self, partitions: &[u32]) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(ENTRIES).map_err(unavailable)?;
        let mut out = Loaded::default();
        for item in table.iter().map_err(unavailable)? {
            let (slot, value) = item.map_err(unavailable)?;
            match StoredEntry::decode(value.value()) {
                Ok(entry) if partitions.contains(&partition_id(&entry.key)) => {
                    out.entries.push(entry);
                }
                Ok(_) => {}
                Err(e) => out.unreadable.push(unreadable(slot.value(), &e)),
            }
        }
        Ok(out)
    }

    /// Writes a batch in key order, each key once (its last state in the batch): a B-tree
    /// takes sorted inserts far more cheaply than scattered ones, since consecutive keys land
    /// in the same, already copied, page.
    ///
    /// Every commit is durable. redb keeps the pages of non-durable commits in its own
    /// buffer and writes them all at the next durable one, so syncing only now and then
    /// turned a steady trickle of store writes into bursts that the log's syncs, which every
    /// acknowledgement waits for, queued behind (`docs/benchmarks.md`).
    fn write_blocking(&self, entries: &[EncodedEntry]) -> Result<(), StoreError> {
        let mut rows: Vec<(Vec<u8>, &EncodedEntry)> =
            entries.iter().map(|e| (slot(e), e)).collect();
        // Stable: the batch's order survives among equal keys, so the last is the latest.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let txn = self.db.begin_write().map_err(unavailable)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(unavailable)?;
            for (at, (slot, entry)) in rows.iter().enumerate() {
                if rows.get(at + 1).is_some_and(|(next, _)| next == slot) {
                    continue;
                }
                if entry.gone {
                    table.remove(slot.as_slice()).map_err(unavailable)?;
                } else {
                    table
                        .insert(slot.as_slice(), entry.bytes.as_slice())
                        .map_err(unavailable)?;
                }
            }
        }
        txn.commit().map_err(unavailable)
    }
}

/// A row whose value could not be read, named (and made deletable) by its slot when the
/// slot itself reads.
fn unreadable(slot: &[u8], error: &StoreError) -> Unreadable {
    let parsed = (|| {
        let kind = match slot.first()? {
            0 => MapKind::Lww,
            1 => MapKind::Or,
            _ => return None,
        };
        let (map, end) = crate::storage::store::length_prefixed(slot, 1)?;
        let map = std::str::from_utf8(map).ok()?.to_owned();
        let key = std::str::from_utf8(&slot[end..]).ok()?.to_owned();
        Some((kind, map, key))
    })();
    match parsed {
        Some((kind, map, key)) => Unreadable {
            row: format!("store.redb row {kind:?} map {map:?} key {key:?}"),
            reason: error.to_string(),
            delete: Some(EncodedEntry::deletion(kind, map, key)),
        },
        None => Unreadable {
            row: format!("store.redb row with slot {slot:02x?}"),
            reason: error.to_string(),
            delete: None,
        },
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

impl Store for RedbStore {
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        let (this, partitions) = (self.clone(), partitions.to_vec());
        blocking(move || this.load_blocking(&partitions)).boxed()
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.write_encoded(entries.iter().map(EncodedEntry::from).collect())
    }

    fn write_encoded(&self, entries: Arc<[EncodedEntry]>) -> BoxFuture<'_, Result<(), StoreError>> {
        let this = self.clone();
        blocking(move || this.write_blocking(&entries)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    use super::*;
    use crate::storage::store::StoredValue;

    /// About 5 MB of entries under scattered keys.
    fn entries() -> Vec<EncodedEntry> {
        let at = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        (0u64..20_000)
            .map(|i| {
                let entry = StoredEntry {
                    map: "m".into(),
                    key: format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                    value: StoredValue::Lww(LwwRecord::new(
                        Value::Str("v".repeat(200).into()),
                        at.clone(),
                        None,
                    )),
                };
                EncodedEntry::from(&entry)
            })
            .collect()
    }

    #[tokio::test]
    async fn an_unreadable_row_stops_start_up_unless_discarded_and_then_is_deleted() {
        use crate::storage::wal::OnCorruption;
        use crate::storage::{StorageConfig, StorageError, open_with_store};
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        let good = entries().into_iter().take(3).collect::<Vec<_>>();
        store.write_blocking(&good).unwrap();
        // A row whose value is not an entry, under a slot that reads.
        let bad = EncodedEntry::deletion(MapKind::Lww, "m".into(), "broken".into());
        let txn = store.db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert(slot(&bad).as_slice(), &[0xFF, 1, 2][..])
            .unwrap();
        txn.commit().unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let config = |on_corruption| StorageConfig {
            data_dir: dir.path().to_owned(),
            on_corruption,
            ..StorageConfig::default()
        };
        let refused = open_with_store(&config(OnCorruption::Refuse), Arc::clone(&store)).await;
        let Err(StorageError::UnreadableRows { count: 1, first }) = refused else {
            panic!("expected a refusal, got {refused:?}");
        };
        assert!(first.contains("\"broken\""), "{first}");
        let opened = open_with_store(&config(OnCorruption::Discard), Arc::clone(&store))
            .await
            .unwrap();
        assert_eq!(opened.loaded.len(), 3);
        let partitions: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
        let after = store.load_checked(&partitions).await.unwrap();
        assert!(after.unreadable.is_empty(), "the row was deleted");
        assert_eq!(after.entries.len(), 3);
    }

    #[test]
    fn the_page_cache_holds_no_more_than_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let used = |cache: usize| {
            let path = dir.path().join(format!("{cache}.redb"));
            let store = RedbStore::open_with_cache(&path, cache).unwrap();
            store.write_blocking(&entries()).unwrap();
            // Reading every entry back fills the cache as far as it may go.
            let partitions: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
            assert_eq!(
                store.load_blocking(&partitions).unwrap().entries.len(),
                20_000
            );
            store.db.cache_stats().used_bytes()
        };
        let small = used(1 << 20);
        assert!(small <= (1 << 20) + 4096, "{small} bytes cached");
        // The same writes fill a larger cache well past the small one's bound.
        let large = used(DEFAULT_CACHE_BYTES);
        assert!(large > 2 << 20);
    }
}
