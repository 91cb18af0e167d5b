//! The redb flavour's file: `<dir>/raft.redb`, one small database beside the data store.
//!
//! | Table | Key | Value (MsgPack) |
//! |---|---|---|
//! | `raft_meta` | `"vote"` | the last saved `Vote` |
//! | `raft_meta` | `"committed"` | `Option<LogId>`: the last committed log id openraft saved |
//! | `raft_meta` | `"purged"` | `Option<LogId>`: the last purged log id |
//! | `raft_meta` | `"snapshot"` | [`StoredSnapshot`]: meta (last applied id, membership) and bytes |
//! | `raft_log` | index (`u64`) | one `Entry` |
//!
//! Invariant: `raft_log` holds a gapless run of indexes above `purged`. Every write is one
//! durable redb transaction, so a crash leaves either the old or the new state, never a hole.
//! The writes run inline on the caller's task: control-plane writes are a handful of small
//! rows each, and running them in order on one task is what keeps openraft's rule that vote
//! and log IO are serialized.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogId, SnapshotMeta, Vote};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT: &str = "snapshot";

/// The last snapshot as stored: openraft's meta plus the MsgPack of the `ControlState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Vec<u8>,
}

/// Everything a reopened file holds, read once at open.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) vote: Option<Vote>,
    pub(crate) committed: Option<LogId>,
    pub(crate) purged: Option<LogId>,
    pub(crate) entries: BTreeMap<u64, Entry>,
    pub(crate) snapshot: Option<StoredSnapshot>,
}

/// An open `raft.redb`, shared by the log store and the state machine.
#[derive(Debug)]
pub(crate) struct RaftFile {
    /// `None` once closed. openraft's tasks may hold store clones a moment past shutdown;
    /// closing here releases the file (and its lock) when `shutdown` returns, so the same
    /// process can reopen it at once. std `Mutex`: held for one synchronous transaction.
    db: Mutex<Option<Database>>,
    path: PathBuf,
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{}: {what}: {e}", path.display()))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> io::Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl RaftFile {
    /// Opens (or creates) the file and reads everything it holds.
    pub(crate) fn open(path: &Path) -> io::Result<(Self, Recovered)> {
        let db = Database::create(path).map_err(|e| io_err(path, "open", e))?;
        let file = Self {
            db: Mutex::new(Some(db)),
            path: path.to_path_buf(),
        };
        // Creates both tables on a new file, so that reads never meet a missing table.
        file.write(|_, _| Ok(()))?;
        let recovered = file.read_all()?;
        Ok((file, recovered))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> io::Error {
        io_err(&self.path, what, e)
    }

    /// Closes the database; every later write fails instead of touching the file.
    pub(crate) fn close(&self) {
        let db = self
            .db
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(db);
    }

    fn closed(&self) -> io::Error {
        self.err("closed", "the control plane has shut down")
    }

    fn read_all(&self) -> io::Result<Recovered> {
        let guard = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let db = guard.as_ref().ok_or_else(|| self.closed())?;
        let txn = db.begin_read().map_err(|e| self.err("read", e))?;
        let meta = txn.open_table(META).map_err(|e| self.err("read", e))?;
        let get = |key: &str| -> io::Result<Option<Vec<u8>>> {
            let row = meta.get(key).map_err(|e| self.err(key, e))?;
            Ok(row.map(|v| v.value().to_vec()))
        };
        let mut out = Recovered {
            vote: get(VOTE)?.map(|b| decode(&b)).transpose()?,
            committed: get(COMMITTED)?.map(|b| decode(&b)).transpose()?.flatten(),
            purged: get(PURGED)?.map(|b| decode(&b)).transpose()?.flatten(),
            snapshot: get(SNAPSHOT)?.map(|b| decode(&b)).transpose()?,
            entries: BTreeMap::new(),
        };
        let log = txn.open_table(LOG).map_err(|e| self.err("read log", e))?;
        for row in log.iter().map_err(|e| self.err("read log", e))? {
            let (index, bytes) = row.map_err(|e| self.err("read log", e))?;
            let entry: Entry = decode(bytes.value())?;
            out.entries.insert(index.value(), entry);
        }
        check_gapless(&out).map_err(|e| self.err("log", e))?;
        Ok(out)
    }

    /// Runs `f` in one durable write transaction over both tables.
    fn write(
        &self,
        f: impl FnOnce(
            &mut redb::Table<'_, &'static str, &'static [u8]>,
            &mut redb::Table<'_, u64, &'static [u8]>,
        ) -> io::Result<()>,
    ) -> io::Result<()> {
        let guard = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let db = guard.as_ref().ok_or_else(|| self.closed())?;
        let txn = db.begin_write().map_err(|e| self.err("write", e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err("write", e))?;
            let mut log = txn.open_table(LOG).map_err(|e| self.err("write", e))?;
            f(&mut meta, &mut log)?;
        }
        txn.commit().map_err(|e| self.err("commit", e))
    }

    fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> io::Result<()> {
        let bytes = encode(value)?;
        self.write(|meta, _| {
            meta.insert(key, bytes.as_slice())
                .map_err(|e| self.err(key, e))?;
            Ok(())
        })
    }

    pub(crate) fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        self.put_meta(VOTE, vote)
    }

    pub(crate) fn save_committed(&self, committed: Option<&LogId>) -> io::Result<()> {
        self.put_meta(COMMITTED, &committed)
    }

    pub(crate) fn save_snapshot(&self, snapshot: &StoredSnapshot) -> io::Result<()> {
        self.put_meta(SNAPSHOT, snapshot)
    }

    pub(crate) fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.write(|_, log| {
            for (index, bytes) in entries {
                log.insert(*index, bytes.as_slice())
                    .map_err(|e| self.err("append", e))?;
            }
            Ok(())
        })
    }

    /// Removes every entry above `keep_upto` (all of them for `None`).
    pub(crate) fn truncate_after(&self, keep_upto: Option<u64>) -> io::Result<()> {
        let from = keep_upto.map_or(0, |i| i + 1);
        self.write(|_, log| {
            log.retain_in(from.., |_, _| false)
                .map_err(|e| self.err("truncate", e))
        })
    }

    /// Records `upto` as purged and removes every entry up to it, in one transaction.
    pub(crate) fn purge(&self, upto: &LogId) -> io::Result<()> {
        let bytes = encode(&Some(upto))?;
        self.write(|meta, log| {
            meta.insert(PURGED, bytes.as_slice())
                .map_err(|e| self.err("purge", e))?;
            log.retain_in(..=upto.index, |_, _| false)
                .map_err(|e| self.err("purge", e))
        })
    }
}

/// The module invariant, checked where the log is read back.
fn check_gapless(recovered: &Recovered) -> Result<(), String> {
    let mut expect = recovered.purged.as_ref().map(|p| p.index + 1);
    for &index in recovered.entries.keys() {
        if let Some(want) = expect
            && index != want
        {
            return Err(format!("gap: entry {index} where {want} was expected"));
        }
        expect = Some(index + 1);
    }
    Ok(())
}
