//! The data directory's lock: one process at a time uses a data directory.
//!
//! A second server on the same directory would otherwise fail deep inside the store (redb
//! locks its file) with a message about "binding", or — with PostgreSQL, whose data
//! directory holds only the write-ahead log — share the log with the first. The lock is an
//! advisory exclusive lock (`flock`) on `<data dir>/topgun-server.lock`, which holds the
//! owner's process id for the message. The operating system releases it when the process
//! ends, however it ends (`kill -9` included), so a stale file never blocks a restart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "topgun-server.lock";

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error(
        "data directory {dir} is in use by another topgun-server ({holder} holds {lock}); stop \
         it, or choose another --data-dir",
        dir = dir.display(),
        lock = lock.display()
    )]
    InUse {
        dir: PathBuf,
        lock: PathBuf,
        /// "process <pid>", or "a process" when the file does not say.
        holder: String,
    },
    #[error("data directory {path}: {error}", path = path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Held while this process uses the directory; dropping it releases the directory.
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
                "data directory {} is in use by another topgun-server (process {pid} holds {}); \
                 stop it, or choose another --data-dir",
                data.display(),
                data.join(LOCK_FILE).display()
            )
        );
        drop(held);
        assert!(DataDirLock::acquire(&data).is_ok(), "free once dropped");
    }
}
