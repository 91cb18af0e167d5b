//! Opens the configured store and write-ahead log, and recovers the records at start-up:
//! load the store, replay the log on top, then hand both to the shards (DESIGN §4.2).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use thiserror::Error;
use topgun_core::protocol::enums::WriteConcern;

use crate::data::shard::service::Persist;
use crate::journal::{JOURNAL_MAP, JournalEvent, Retention, StoredIndex, StoredRow};
use crate::storage::data_dir::StorePaths;
use crate::storage::pg::PgStore;
use crate::storage::redb::RedbStore;
use crate::storage::store::{Loaded, MemoryStore, Store, StoreError, StoredEntry};
use crate::storage::wal::{self, LogMark, OnCorruption, SyncMode, Tail, Wal, WalConfig, WalError};

/// Where records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: `<data dir>/store.redb` (or [`StorageConfig::redb_path`]).
    Redb,
    /// Nothing survives a restart (tests, throwaway servers); nothing is written to disk,
    /// no log, no lock, no directory.
    Memory,
    /// PostgreSQL at `database_url`; the log stays in `<data dir>/wal` (or
    /// [`StorageConfig::wal_dir`]).
    Postgres,
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the log is synced to disk (`PERSISTED`): the default.
    Fsync,
    /// After the log write reached the operating system (`APPLIED`): survives a server
    /// crash, not a power loss.
    Os,
    /// As soon as applied in memory (`APPLIED`); the log is written behind.
    Memory,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: Backend,
    /// For [`Backend::Postgres`].
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    /// The embedded store's file; `None`: `<data dir>/store.redb`. Its directory is created.
    pub redb_path: Option<PathBuf>,
    /// The write-ahead log's directory; `None`: `<data dir>/wal`.
    pub wal_dir: Option<PathBuf>,
    pub durability: Durability,
    /// With [`Durability::Os`] or [`Durability::Memory`]: the log is also synced at most
    /// this long after a write (the TopGun server's `batched` fsync policy); `None`: only
    /// when a segment is closed. Acknowledgements never wait for it.
    pub wal_sync_interval: Option<Duration>,
    pub wal_segment_bytes: u64,
    pub wal_max_bytes: u64,
    /// [`WalConfig::commit_delay`].
    pub wal_commit_delay: Duration,
    /// The redb store's page cache, in bytes.
    pub redb_cache_bytes: usize,
    pub on_corruption: OnCorruption,
    /// How many journal events are kept, and for how long.
    pub journal: Retention,
}

impl StorageConfig {
    /// Where the store and the log are.
    pub fn paths(&self) -> StorePaths {
        StorePaths::new(
            &self.data_dir,
            self.redb_path.as_deref(),
            self.wal_dir.as_deref(),
        )
    }

    /// How the log writer syncs, following the durability.
    fn sync_mode(&self) -> SyncMode {
        match (self.durability, self.wal_sync_interval) {
            (Durability::Fsync, _) => SyncMode::Fsync,
            (Durability::Os | Durability::Memory, Some(interval)) => SyncMode::Interval(interval),
            (Durability::Os | Durability::Memory, None) => SyncMode::Os,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Redb,
            database_url: None,
            data_dir: PathBuf::from("topgun-data"),
            redb_path: None,
            wal_dir: None,
            durability: Durability::Fsync,
            wal_sync_interval: None,
            wal_segment_bytes: 64 << 20,
            wal_max_bytes: 1 << 30,
            wal_commit_delay: Duration::from_micros(500),
            redb_cache_bytes: crate::storage::redb::DEFAULT_CACHE_BYTES,
            on_corruption: OnCorruption::Refuse,
            journal: Retention::default(),
        }
    }
}

#[derive(Debug, Error)]
// The inner errors are in the messages and not sources: a chain (`{:#}`) that printed them
// again would say everything twice.
pub enum StorageError {
    #[error("store: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Wal(WalError),
    #[error(
        "write-ahead log frame at LSN {lsn} passed its checksum but cannot be decoded: {reason}. \
         Start with --wal-discard-corrupt to drop this one write and go on"
    )]
    Undecodable { lsn: u64, reason: String },
    #[error(
        "{count} stored rows cannot be read, the first {first}. Restore from a backup, or \
         start with --wal-discard-corrupt to delete them (and lose what they held)"
    )]
    UnreadableRows { count: usize, first: String },
    #[error("store directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<WalError> for StorageError {
    fn from(e: WalError) -> Self {
        Self::Wal(e)
    }
}

/// Everything the server needs from storage after start-up.
#[derive(Debug)]
pub struct Opened {
    /// The store's entries, then the log's, in order: what the shards load.
    pub loaded: Vec<StoredEntry>,
    /// The retained journal events, from the store and the log.
    pub journal: Vec<JournalEvent>,
    pub persist: Persist,
    /// Set while the checkpointer cannot write to the store.
    pub degraded: Arc<AtomicBool>,
}

/// Opens storage as configured and starts the log writer and the checkpointer.
pub async fn open(config: &StorageConfig) -> Result<Opened, StorageError> {
    let degraded = Arc::new(AtomicBool::new(false));
    if config.backend == Backend::Memory {
        return Ok(Opened {
            loaded: Vec::new(),
            journal: Vec::new(),
            persist: Persist::Store(Arc::new(MemoryStore::new())),
            degraded,
        });
    }
    let store: Arc<dyn Store> = match (config.backend, &config.database_url) {
        (Backend::Postgres, Some(url)) => Arc::new(PgStore::connect(url).await?),
        (Backend::Postgres, None) => {
            return Err(StoreError::Unavailable(
                "STORAGE_BACKEND=postgres needs DATABASE_URL".into(),
            )
            .into());
        }
        _ => Arc::new(open_redb(config)?),
    };
    open_with_store(config, store).await
}

/// The embedded store at its path, its directory created first.
fn open_redb(config: &StorageConfig) -> Result<RedbStore, StorageError> {
    let path = config.paths().store;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| StorageError::DataDir {
            path: parent.to_owned(),
            error,
        })?;
    }
    Ok(RedbStore::open_with_cache(&path, config.redb_cache_bytes)?)
}

/// Like [`open`] over a given store, with the write-ahead log in its directory: for stores
/// that live elsewhere (and for tests that inject store faults).
pub async fn open_with_store(
    config: &StorageConfig,
    store: Arc<dyn Store>,
) -> Result<Opened, StorageError> {
    let degraded = Arc::new(AtomicBool::new(false));
    let loaded = store.load_checked(&all_partitions()).await?;
    let loaded = readable(&*store, loaded, config.on_corruption).await?;
    let Stored {
        mut loaded,
        mut journal,
        journal_index,
        mark,
    } = split_stored(loaded, config.on_corruption)?;
    let wal_config = WalConfig {
        dir: config.paths().wal,
        sync: config.sync_mode(),
        segment_bytes: config.wal_segment_bytes,
        max_bytes: config.wal_max_bytes,
        on_corruption: config.on_corruption,
        commit_delay: config.wal_commit_delay,
    };
    // A store that holds nothing was never checkpointed into, so no segment was released:
    // the log must start at LSN 1. (A store written before marks existed, holding records
    // but no mark, gets one at its first checkpoint.)
    let mark = match mark {
        None if loaded.is_empty() && journal.is_empty() => Some(LogMark::default()),
        mark => mark,
    };
    let recovered = wal::recover(&wal_config, mark)?;
    report_discarded(&recovered.discarded);
    lower_mark(&*store, mark, recovered.next_lsn).await?;
    let skip = replay(&recovered, config.on_corruption, &mut loaded, &mut journal)?;
    tracing::info!(
        entries = loaded.len(),
        replayed = recovered.frames.len(),
        "records recovered"
    );
    // Frames the store holds already need no second checkpoint.
    let checkpointed = mark.map_or(0, |m| m.checkpointed);
    let first_lsn = recovered
        .frames
        .first()
        .map_or(recovered.next_lsn, |f| f.lsn)
        .max(checkpointed + 1)
        .min(recovered.next_lsn);
    let wal = Wal::start(&wal_config, &recovered)?;
    let tail = Tail::new(&wal_config.dir, first_lsn);
    let start = crate::storage::checkpoint::Start {
        retention: config.journal,
        stored_journal: journal_index,
        skip,
    };
    tokio::spawn(crate::storage::checkpoint::run(
        (wal.files(), tail),
        store,
        Arc::clone(&degraded),
        start,
    ));
    let level = match config.durability {
        Durability::Fsync => WriteConcern::Persisted,
        Durability::Os | Durability::Memory => WriteConcern::Applied,
    };
    Ok(Opened {
        loaded,
        journal,
        persist: Persist::Wal {
            wal,
            level,
            ack_waits: config.durability != Durability::Memory,
        },
        degraded,
    })
}

/// The entries of a load. A row that cannot be read stops start-up, naming it; with
/// [`OnCorruption::Discard`] each such row is named in the log at `ERROR` and deleted from
/// the store (so the next start does not meet it again).
async fn readable(
    store: &dyn Store,
    loaded: Loaded,
    on_corruption: OnCorruption,
) -> Result<Vec<StoredEntry>, StorageError> {
    let Some(first) = loaded.unreadable.first() else {
        return Ok(loaded.entries);
    };
    if on_corruption == OnCorruption::Refuse {
        return Err(StorageError::UnreadableRows {
            count: loaded.unreadable.len(),
            first: first.to_string(),
        });
    }
    let mut deletions = Vec::new();
    for bad in &loaded.unreadable {
        tracing::error!("store damage discarded: the unreadable {bad}");
        deletions.extend(bad.delete.clone());
    }
    store.write_encoded(deletions.into()).await?;
    Ok(loaded.entries)
}

/// What the store held, sorted: records, journal events, and the log's mark.
struct Stored {
    loaded: Vec<StoredEntry>,
    journal: Vec<JournalEvent>,
    journal_index: StoredIndex,
    mark: Option<LogMark>,
}

fn split_stored(
    mut loaded: Vec<StoredEntry>,
    on_corruption: OnCorruption,
) -> Result<Stored, StorageError> {
    let mut journal = Vec::new();
    let mut rows = Vec::new();
    let mut mark = None;
    let mut unreadable_mark = None;
    loaded.retain(|entry| {
        if let Some(read) = crate::storage::checkpoint::read_mark(entry) {
            match read {
                Ok(read) => mark = Some(read),
                Err(e) => unreadable_mark = Some(e),
            }
            return false;
        }
        match crate::journal::stored_events(entry) {
            Some(Ok(events)) => {
                rows.extend(stored_row(entry, &events));
                journal.extend(events);
                false
            }
            Some(Err(e)) => {
                // The journal is a bounded history beside the records: an unreadable row
                // costs its events, not the server's start.
                tracing::error!(key = %entry.key, error = %e, "unreadable journal row skipped");
                false
            }
            None => entry.map != JOURNAL_MAP,
        }
    });
    if let Some(e) = unreadable_mark {
        if on_corruption == OnCorruption::Refuse {
            return Err(StorageError::UnreadableRows {
                count: 1,
                first: e.to_string(),
            });
        }
        // Without a mark recovery checks only what the log itself shows; the next checkpoint
        // writes a new one.
        tracing::error!(error = %e, "store damage discarded: the log's mark");
    }
    Ok(Stored {
        loaded,
        journal,
        journal_index: StoredIndex::new(rows),
        mark,
    })
}

/// After damage was discarded the log may end below what the store's mark says it had
/// synced; the mark is lowered before anything is appended, so that the next start checks
/// the log that is really there (and a torn tail of the new appends is not taken for damage).
async fn lower_mark(
    store: &dyn Store,
    mark: Option<LogMark>,
    next_lsn: u64,
) -> Result<(), StorageError> {
    let Some(mark) = mark.filter(|m| m.synced >= next_lsn) else {
        return Ok(());
    };
    let lowered = LogMark {
        synced: next_lsn - 1,
        ..mark
    };
    let entry =
        crate::storage::store::EncodedEntry::from(&crate::storage::checkpoint::mark_entry(lowered));
    store.write_encoded(vec![entry].into()).await?;
    Ok(())
}

/// Says what recovery cut off or dropped: a torn tail is routine after a crash; anything
/// else was damage the operator chose to discard, and may have held acknowledged writes.
fn report_discarded(discarded: &[wal::Discarded]) {
    for d in discarded {
        if d.may_hold_acknowledged {
            tracing::error!(bytes = d.bytes, "write-ahead log damage discarded: {d}");
        } else {
            tracing::warn!(bytes = d.bytes, "write-ahead log: cut {d}");
        }
    }
}

/// Decodes the recovered frames onto the stored entries and journal events. A frame that
/// passed its checksum but cannot be decoded stops start-up, or with
/// [`OnCorruption::Discard`] is dropped, named in the log and returned, so that the
/// checkpointer passes over it too.
fn replay(
    recovered: &wal::Recovered,
    on_corruption: OnCorruption,
    loaded: &mut Vec<StoredEntry>,
    journal: &mut Vec<JournalEvent>,
) -> Result<Vec<u64>, StorageError> {
    let mut skipped = Vec::new();
    for frame in &recovered.frames {
        match crate::journal::decode_frame(&frame.payload) {
            Ok((entry, drafts)) => {
                journal.extend(crate::journal::sequenced(frame.lsn, &entry, drafts));
                loaded.push(entry);
            }
            Err(e) if on_corruption == OnCorruption::Discard => {
                tracing::error!(
                    lsn = frame.lsn,
                    error = %e,
                    "write-ahead log damage discarded: the undecodable frame at LSN {}",
                    frame.lsn
                );
                skipped.push(frame.lsn);
            }
            Err(e) => {
                return Err(StorageError::Undecodable {
                    lsn: frame.lsn,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(skipped)
}

/// What retention needs to know of a journal row read back from the store.
fn stored_row(entry: &StoredEntry, events: &[JournalEvent]) -> Option<StoredRow> {
    Some(StoredRow {
        key: entry.key.parse().ok()?,
        last: events.iter().map(|e| e.sequence).max()?,
        events: events.len(),
        newest_ms: events.iter().map(|e| e.draft.recorded_ms).max()?,
    })
}

fn all_partitions() -> Vec<u32> {
    (0..topgun_core::hash::PARTITION_COUNT).collect()
}

#[cfg(test)]
mod tests {
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    use super::*;
    use crate::storage::store::StoredValue;

    fn entry(i: u64) -> StoredEntry {
        let at = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        StoredEntry {
            map: "m".into(),
            key: format!("k{i}"),
            value: StoredValue::Lww(LwwRecord::new(Value::Int(1), at, None)),
        }
    }

    /// A log of `count` entries in `dir`/wal, written by the real writer.
    async fn log(dir: &std::path::Path, count: u64) {
        let config = WalConfig {
            dir: dir.join("wal"),
            sync: SyncMode::Os,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            on_corruption: OnCorruption::Refuse,
            commit_delay: Duration::ZERO,
        };
        let wal = Wal::start(&config, &wal::recover(&config, None).unwrap()).unwrap();
        let payloads = (1..=count).map(|i| entry(i).encode()).collect();
        wal.append(payloads).await.unwrap().await.unwrap().unwrap();
    }

    // Current-thread: nothing spawned (the checkpointer, which would write a mark of its
    // own) runs between the two starts, which never wait.
    #[tokio::test(flavor = "current_thread")]
    async fn after_a_discard_the_mark_follows_the_log_so_the_next_start_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        log(dir.path(), 10).await;
        // The store holds frames 1–2, and frames through 8 had been synced.
        let store = Arc::new(MemoryStore::new());
        let mark = LogMark {
            checkpointed: 2,
            synced: 8,
        };
        let stored = vec![
            entry(1),
            entry(2),
            crate::storage::checkpoint::mark_entry(mark),
        ];
        store.write(stored).await.unwrap();
        // Damage to frame 5, with valid frames after it.
        let (_, segment) = wal::segments(&dir.path().join("wal")).unwrap().remove(0);
        let mut bytes = std::fs::read(&segment).unwrap();
        let frame = 16 + entry(1).encode().len();
        bytes[16 + 4 * frame + 20] ^= 0x40;
        std::fs::write(&segment, bytes).unwrap();
        let config = |on_corruption| StorageConfig {
            data_dir: dir.path().to_owned(),
            durability: Durability::Os,
            on_corruption,
            ..StorageConfig::default()
        };
        let store: Arc<dyn Store> = store;
        let refused = open_with_store(&config(OnCorruption::Refuse), Arc::clone(&store)).await;
        assert!(matches!(
            refused,
            Err(StorageError::Wal(WalError::Corrupt { .. }))
        ));
        let opened = open_with_store(&config(OnCorruption::Discard), Arc::clone(&store))
            .await
            .unwrap();
        assert_eq!(
            opened.loaded.len(),
            6,
            "2 from the store, then frames 1–4 of the log"
        );
        drop(opened);
        // Frames 5–8 are gone from the log for good: the mark must say so, or this start
        // would take the log for cut short.
        let again = open_with_store(&config(OnCorruption::Refuse), Arc::clone(&store)).await;
        assert!(again.is_ok(), "{:?}", again.err());
        let rows = store.load(&all_partitions()).await.unwrap();
        let marks: Vec<_> = rows
            .iter()
            .filter_map(crate::storage::checkpoint::read_mark)
            .collect();
        assert_eq!(
            marks.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [LogMark {
                checkpointed: 2,
                synced: 4
            }]
        );
    }
}
