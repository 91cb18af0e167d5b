//! Backups of a running server's records, and restoring one into a stopped server's data
//! directory (`topgun-server backup` / `topgun-server restore`).
//!
//! A backup is taken through the server (`GET /api/admin/backup`), shard by shard: each shard
//! copies its records, then answers only once every commit it had applied is durable in the
//! write-ahead log — so a backup holds every write acknowledged before it began, and nothing
//! that a crash could still take back.
//!
//! File format:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `TGBAK\0\0\x01` |
//! | … | frames: payload length `n` (u32 LE), CRC32C of the payload (u32 LE), payload (a stored entry, `docs/durability.md`) |
//! | 8 | end marker `TGBAKEND` — a file without it was cut short and is refused |

use std::path::Path;

use thiserror::Error;

use crate::storage::data_dir::{DataDirError, DataDirLock, StorePaths};
use crate::storage::redb::RedbStore;
use crate::storage::store::{Store, StoreError, StoredEntry};
use crate::storage::wal;

pub const MAGIC: [u8; 8] = *b"TGBAK\0\0\x01";
pub const END: [u8; 8] = *b"TGBAKEND";
/// Entries written to the store per transaction while restoring.
const RESTORE_BATCH: usize = 10_000;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("not a TopGun backup (bad magic)")]
    NotABackup,
    #[error("the backup is cut short at byte {0} (no end marker): take it again")]
    Truncated(usize),
    #[error("the backup is corrupt at byte {0}: checksum mismatch")]
    Checksum(usize),
    #[error("backup entry at byte {at}: {source}")]
    Entry { at: usize, source: StoreError },
    #[error(
        "{0} already holds data; restore into an empty directory, or pass --force to replace it"
    )]
    NotEmpty(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Wal(#[from] wal::WalError),
}

/// Appends the frames of `entries` to a backup being written.
pub fn encode_entries(entries: &[StoredEntry], out: &mut Vec<u8>) {
    for entry in entries {
        let payload = entry.encode();
        let len = u32::try_from(payload.len()).expect("entries are far below 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }
}

/// A whole backup of `entries`.
pub fn encode(entries: &[StoredEntry]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    encode_entries(entries, &mut out);
    out.extend_from_slice(&END);
    out
}

/// Reads and checks a whole backup.
pub fn decode(bytes: &[u8]) -> Result<Vec<StoredEntry>, BackupError> {
    let body = bytes
        .strip_prefix(&MAGIC[..])
        .ok_or(BackupError::NotABackup)?;
    let body = body
        .strip_suffix(&END[..])
        .ok_or(BackupError::Truncated(bytes.len()))?;
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let at = MAGIC.len() + pos;
        let header = body.get(pos..pos + 8).ok_or(BackupError::Truncated(at))?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let payload = body
            .get(pos + 8..pos + 8 + len)
            .ok_or(BackupError::Truncated(at))?;
        if crc32c::crc32c(payload) != crc {
            return Err(BackupError::Checksum(at));
        }
        entries.push(
            StoredEntry::decode(payload).map_err(|source| BackupError::Entry { at, source })?,
        );
        pos += 8 + len;
    }
    Ok(entries)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Restores `file` into the store and log at `paths` (whose server must be stopped: the
/// log's directory is locked meanwhile, see [`crate::storage::data_dir`]): the embedded store
/// gets the backup's records and the log starts empty. `progress` is told the entries
/// written so far and the total after each store transaction. Returns the number of entries.
pub async fn restore(
    file: &Path,
    paths: &StorePaths,
    force: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize, BackupError> {
    let bytes = std::fs::read(file).map_err(io(file))?;
    let entries = decode(&bytes)?;
    drop(bytes);
    let _lock = DataDirLock::acquire(&paths.wal)?;
    let store_path = &paths.store;
    // The lock file lives in the log's directory: only segments count as data.
    let segments = wal::segments(&paths.wal)?;
    if store_path.exists() || !segments.is_empty() {
        if !force {
            return Err(BackupError::NotEmpty(format!(
                "{} or {}",
                store_path.display(),
                paths.wal.display()
            )));
        }
        // Opening the store first fails if something else still holds it: nothing is
        // removed then.
        if store_path.exists() {
            drop(RedbStore::open(store_path)?);
            std::fs::remove_file(store_path).map_err(io(store_path))?;
        }
        // Segments only: the directory holds the lock this restore owns.
        for (_, segment) in segments {
            std::fs::remove_file(&segment).map_err(io(&segment))?;
        }
    }
    if let Some(parent) = store_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let store = RedbStore::open(store_path)?;
    let count = entries.len();
    let mut written = 0;
    progress(written, count);
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let batch: Vec<StoredEntry> = entries.by_ref().take(RESTORE_BATCH).collect();
        written += batch.len();
        store.write(batch).await?;
        progress(written, count);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::StoredValue;
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    fn entry(key: &str) -> StoredEntry {
        let ts = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        StoredEntry {
            map: "m".into(),
            key: key.into(),
            value: StoredValue::Lww(LwwRecord::new(Value::Int(1), ts, None)),
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let entries = vec![entry("a"), entry("b")];
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        assert!(matches!(decode(b"nope"), Err(BackupError::NotABackup)));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3]),
            Err(BackupError::Truncated(_))
        ));
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(decode(&flipped), Err(BackupError::Checksum(8))));
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[tokio::test]
    async fn restores_into_an_empty_directory_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.tgbak");
        std::fs::write(&file, encode(&[entry("a"), entry("b")])).unwrap();
        let data = dir.path().join("data");
        let paths = StorePaths::new(&data, None, None);
        let mut seen = Vec::new();
        let mut progress = |done, total| seen.push((done, total));
        assert_eq!(
            restore(&file, &paths, false, &mut progress).await.unwrap(),
            2
        );
        assert_eq!(seen, vec![(0, 2), (2, 2)]);
        let quiet = &mut |_, _| {};
        let err = restore(&file, &paths, false, quiet).await.unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        std::fs::write(&file, encode(&[entry("c")])).unwrap();
        assert_eq!(restore(&file, &paths, true, quiet).await.unwrap(), 1);
        let held = DataDirLock::acquire(&paths.wal).unwrap();
        let err = restore(&file, &paths, true, quiet).await.unwrap_err();
        assert!(
            matches!(err, BackupError::DataDir(DataDirError::InUse { .. })),
            "{err}"
        );
        drop(held);
        let all: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
        let store = RedbStore::open(&data.join("store.redb")).unwrap();
        assert_eq!(store.load(&all).await.unwrap(), vec![entry("c")]);
    }

    /// With the store and the log elsewhere, a restore writes there and nowhere else.
    #[tokio::test]
    async fn restores_into_the_configured_paths_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.tgbak");
        std::fs::write(&file, encode(&[entry("a")])).unwrap();
        let data = dir.path().join("data");
        let store = dir.path().join("s/deeper/x.redb");
        let log = dir.path().join("log");
        let paths = StorePaths::new(&data, Some(&store), Some(&log));
        let quiet = &mut |_, _| {};
        assert_eq!(restore(&file, &paths, false, quiet).await.unwrap(), 1);
        assert!(!data.exists(), "the data directory is not touched");
        assert!(store.exists() && log.join(crate::storage::data_dir::LOCK_FILE).exists());
    }
}
