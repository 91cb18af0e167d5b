//! Where the server's files are, and the lock that keeps one process at a time on them.
//!
//! The embedded store is one file (`<data dir>/store.redb`, or `TOPGUN_REDB_PATH`), the
//! write-ahead log one directory (`<data dir>/wal`, or `TOPGUN_WAL_DIR`): [`StorePaths`]
//! resolves both, for the server and for `restore`, so that the rule lives in one place.
//!
//! The lock guards the log, the one thing every persistent backend writes (redb also locks
//! its own file; a PostgreSQL store is shared by design, its log must not be). A second
//! server on the same log would otherwise fail deep inside the store with a message about
//! "binding", or — with PostgreSQL — share the log with the first. The lock is an advisory
//! exclusive lock (`flock`) on `<log dir>/topgun-server.lock`, which holds the owner's
//! process id for the message; in the log's directory, so that a server whose paths are set
//! elsewhere writes nothing into its data directory or its working directory. The operating
//! system releases it when the process ends, however it ends (`kill -9` included), so a
//! stale file never blocks a restart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name inside the log's directory.
pub const LOCK_FILE: &str = "topgun-server.lock";
/// The store's file name inside the data directory, when no path is given.
pub const STORE_FILE: &str = "store.redb";
/// The log's directory name inside the data directory, when no path is given.
pub const WAL_DIR: &str = "wal";

/// Where the embedded store and the write-ahead log are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePaths {
    /// The redb file.
    pub store: PathBuf,
    /// The log's directory, which holds the lock as well.
    pub wal: PathBuf,
}

impl StorePaths {
    /// The given paths, each defaulting to its place in `data_dir`.
    pub fn new(data_dir: &Path, store: Option<&Path>, wal: Option<&Path>) -> Self {
        Self {
            store: store.map_or_else(|| data_dir.join(STORE_FILE), Path::to_owned),
            wal: wal.map_or_else(|| data_dir.join(WAL_DIR), Path::to_owned),
        }
    }
}

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error(
        "write-ahead log directory {dir} is in use by another topgun-server ({holder} holds \
         {lock}); stop it, or choose another --data-dir or TOPGUN_WAL_DIR",
        dir = dir.display(),
        lock = lock.display()
    )]
    InUse {
        dir: PathBuf,
        lock: PathBuf,
        /// "process <pid>", or "a process" when the file does not say.
        holder: String,
    },
    #[error("{path}: {error}", path = path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Held while this process uses the log's directory; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says who holds it. Never waits.
    pub fn acquire(dir: &Path) -> Result<Self, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| DataDirError::Io { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io(&lock))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|pid| pid.trim().parse::<u32>().ok())
                    .map_or_else(|| "a process".to_owned(), |pid| format!("process {pid}"));
                return Err(DataDirError::InUse {
                    dir: dir.to_owned(),
                    lock,
                    holder,
                });
            }
            Err(TryLockError::Error(error)) => return Err(DataDirError::Io { path: lock, error }),
        }
        // The pid is for the message above; the lock, not the file's content, decides.
        file.set_len(0).map_err(io(&lock))?;
        file.rewind().map_err(io(&lock))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&lock))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataDirLock::acquire(&data).unwrap();
        let err = DataDirLock::acquire(&data).unwrap_err();
        let pid = std::process::id();
        assert_eq!(
            err.to_string(),
            format!(
                "write-ahead log directory {} is in use by another topgun-server (process {pid} \
                 holds {}); stop it, or choose another --data-dir or TOPGUN_WAL_DIR",
                data.display(),
                data.join(LOCK_FILE).display()
            )
        );
        drop(held);
        assert!(DataDirLock::acquire(&data).is_ok(), "free once dropped");
    }

    #[test]
    fn each_path_defaults_to_its_place_in_the_data_directory() {
        let data = Path::new("d");
        assert_eq!(
            StorePaths::new(data, None, None),
            StorePaths {
                store: PathBuf::from("d/store.redb"),
                wal: PathBuf::from("d/wal"),
            }
        );
        let (store, wal) = (Path::new("/s/x.redb"), Path::new("/l"));
        assert_eq!(
            StorePaths::new(data, Some(store), Some(wal)),
            StorePaths {
                store: store.to_owned(),
                wal: wal.to_owned(),
            }
        );
    }
}
