//! Raft storage in two flavours with one code path: the log and the state live in memory in
//! both; the redb flavour writes every change through to `<dir>/raft.redb` first and reads it
//! back at open (CLUSTER.md §3.2).

pub(crate) mod file;
pub(crate) mod log;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

pub(crate) use self::log::LogStore;
use crate::state_machine::StateMachineStore;
use crate::types::Applied;

/// The redb flavour's file name inside a data directory.
pub const FILE_NAME: &str = "raft.redb";

/// Where a node keeps its Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Nothing survives the process: `STORAGE_BACKEND=null|memory`. Writes no file.
    Memory,
    /// The redb file at this path (by convention `<data dir>/raft.redb`), created if absent.
    Redb(PathBuf),
}

impl Storage {
    /// The redb flavour at `<data_dir>/raft.redb`, beside the data store's own files.
    pub fn redb_in(data_dir: &std::path::Path) -> Self {
        Self::Redb(data_dir.join(FILE_NAME))
    }
}

/// The opened stores and the channel the state machine publishes on.
pub(crate) struct Opened {
    pub(crate) log: LogStore,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) applied: watch::Receiver<Arc<Applied>>,
    /// The redb flavour's file, closed at shutdown.
    pub(crate) file: Option<Arc<file::RaftFile>>,
}

pub(crate) fn open(storage: &Storage) -> io::Result<Opened> {
    match storage {
        Storage::Memory => {
            let (state_machine, applied) = StateMachineStore::new(None, None);
            Ok(Opened {
                log: LogStore::memory(),
                state_machine,
                applied,
                file: None,
            })
        }
        Storage::Redb(path) => {
            let (file, mut recovered) = file::RaftFile::open(path)?;
            let file = Arc::new(file);
            let snapshot = recovered.snapshot.take();
            let log = LogStore::on_file(Arc::clone(&file), &mut recovered);
            let (state_machine, applied) =
                StateMachineStore::new(Some(Arc::clone(&file)), snapshot);
            Ok(Opened {
                log,
                state_machine,
                applied,
                file: Some(file),
            })
        }
    }
}
