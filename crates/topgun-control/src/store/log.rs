//! The Raft log and vote (`RaftLogStorage`): held in memory in both flavours, written
//! through to `raft.redb` first in the redb flavour.
//!
//! Invariant (asserted on append and on open): the entries are a gapless run of indexes above
//! the purged id. A write reaches the file before memory, so what a reader sees is always
//! durable, and a failed write leaves memory unchanged.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::store::file::{RaftFile, Recovered, encode};
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// The log store; clones share one log (openraft reads it from its replication tasks).
#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    /// std `Mutex`: never held across an `.await`, every section is a map operation.
    inner: Arc<Mutex<LogInner>>,
    /// `None` in the memory flavour.
    file: Option<Arc<RaftFile>>,
}

#[derive(Debug, Default)]
struct LogInner {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

impl LogInner {
    /// The module invariant, checked before anything is written: `entries` continue the log
    /// without a gap or an overlap. A violation is openraft misusing the store; it gets a
    /// storage error (which stops Raft) rather than a log with a hole.
    fn check_follows(&self, entries: &[Entry]) -> io::Result<()> {
        let mut expected = self
            .entries
            .keys()
            .next_back()
            .map(|last| last + 1)
            .or(self.purged.map(|p| p.index + 1));
        for entry in entries {
            let index = entry.log_id.index;
            if expected.is_some_and(|want| want != index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("log gap: appending {index}, expected {expected:?}"),
                ));
            }
            expected = Some(index + 1);
        }
        Ok(())
    }
}

impl LogStore {
    pub(crate) fn memory() -> Self {
        Self {
            inner: Arc::default(),
            file: None,
        }
    }

    /// The redb flavour, starting from what the file held.
    pub(crate) fn on_file(file: Arc<RaftFile>, recovered: &mut Recovered) -> Self {
        let inner = LogInner {
            vote: recovered.vote.take(),
            committed: recovered.committed.take(),
            purged: recovered.purged.take(),
            entries: std::mem::take(&mut recovered.entries),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            file: Some(file),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic elsewhere cannot leave the maps half-written: every section is one call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last.or(inner.purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        if let Some(file) = &self.file {
            file.save_vote(vote)?;
        }
        self.lock().vote = Some(*vote);
        Ok(())
    }

    /// Saved so that a restarted node re-applies its log up to the committed point at once,
    /// instead of showing an older state until the next leader's commit reaches it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(file) = &self.file {
            file.save_committed(committed.as_ref())?;
        }
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.lock().check_follows(&entries)?;
        if let Some(file) = &self.file {
            let rows = entries
                .iter()
                .map(|e| Ok((e.log_id.index, encode(e)?)))
                .collect::<io::Result<Vec<_>>>()?;
            file.append(&rows)?;
        }
        let mut inner = self.lock();
        for entry in entries {
            inner.entries.insert(entry.log_id.index, entry);
        }
        drop(inner);
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let keep_upto = last_log_id.map(|id| id.index);
        if let Some(file) = &self.file {
            file.truncate_after(keep_upto)?;
        }
        let from = keep_upto.map_or(0, |i| i + 1);
        let mut inner = self.lock();
        let _removed = inner.entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        if let Some(file) = &self.file {
            file.purge(&log_id)?;
        }
        let mut inner = self.lock();
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.purged = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The redb flavour against its in-memory twin: the same seeded operations on both must
    //! read back alike after every step, and a reopened file must read back like the twin.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use openraft::vote::RaftLeaderIdExt;
    use openraft::{EntryPayload, LogId as RaftLogId};

    use super::*;
    use crate::store::file::RaftFile;

    type LeaderId = openraft::impls::leader_id_adv::LeaderId<u64, u64>;

    fn log_id(term: u64, index: u64) -> LogId {
        RaftLogId::new(LeaderId::new_committed(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// What a store reads back, for comparison.
    async fn read_back(store: &mut LogStore) -> (String, Vec<Entry>, Option<Vote>, Option<LogId>) {
        let state = store.get_log_state().await.unwrap();
        (
            format!("{state:?}"),
            store.try_get_log_entries(..).await.unwrap(),
            store.read_vote().await.unwrap(),
            store.read_committed().await.unwrap(),
        )
    }

    /// One random operation, applied to both stores alike.
    async fn step(rng: &mut Rng, term: &mut u64, stores: [&mut LogStore; 2]) {
        let state = stores[0].get_log_state().await.unwrap();
        let purged = state.last_purged_log_id.map(|id| id.index);
        let last = state.last_log_id.map(|id| id.index);
        let first = purged.map_or(0, |p| p + 1);
        let choice = rng.below(5);
        if rng.below(4) == 0 {
            *term += 1;
        }
        for store in stores {
            match (choice, last) {
                (0 | 1, _) => {
                    let from = last.map_or(first, |l| l + 1);
                    let batch: Vec<Entry> = (from..from + 3).map(|i| entry(*term, i)).collect();
                    store.append(batch, IOFlushed::noop()).await.unwrap();
                }
                (2, Some(last)) if last >= first => {
                    let keep = first + (last - first) / 2;
                    store
                        .truncate_after(Some(log_id(*term, keep)))
                        .await
                        .unwrap();
                }
                (3, Some(last)) if last >= first => {
                    store
                        .purge(log_id(*term, first + (last - first) / 3))
                        .await
                        .unwrap();
                }
                _ => {
                    let vote = openraft::impls::Vote::new(*term, 1);
                    store.save_vote(&vote).await.unwrap();
                    store
                        .save_committed(last.map(|l| log_id(*term, l)))
                        .await
                        .unwrap();
                }
            }
        }
    }

    #[tokio::test]
    async fn the_redb_log_reads_back_like_its_memory_twin_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        for seed in 1..=4_u64 {
            let path = dir.path().join(format!("raft-{seed}.redb"));
            let (file, mut recovered) = RaftFile::open(&path).unwrap();
            let file = Arc::new(file);
            let mut on_file = LogStore::on_file(Arc::clone(&file), &mut recovered);
            let mut memory = LogStore::memory();
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut term = 1;
            for _ in 0..40 {
                step(&mut rng, &mut term, [&mut memory, &mut on_file]).await;
                assert_eq!(
                    read_back(&mut memory).await,
                    read_back(&mut on_file).await,
                    "seed {seed}"
                );
            }
            file.close();
            drop(on_file);
            let (file, mut recovered) = RaftFile::open(&path).unwrap();
            let mut reopened = LogStore::on_file(Arc::new(file), &mut recovered);
            assert_eq!(
                read_back(&mut memory).await,
                read_back(&mut reopened).await,
                "seed {seed}"
            );
        }
    }

    #[tokio::test]
    async fn an_append_that_would_leave_a_gap_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut recovered) = RaftFile::open(&dir.path().join("raft.redb")).unwrap();
        let mut store = LogStore::on_file(Arc::new(file), &mut recovered);
        let first: Vec<Entry> = (0..3).map(|i| entry(1, i)).collect();
        store
            .append(first.clone(), IOFlushed::noop())
            .await
            .unwrap();
        let gap = vec![entry(1, 4)];
        assert!(store.append(gap, IOFlushed::noop()).await.is_err());
        let overlap = vec![entry(1, 2)];
        assert!(store.append(overlap, IOFlushed::noop()).await.is_err());
        assert_eq!(store.try_get_log_entries(..).await.unwrap(), first);
    }

    #[tokio::test]
    async fn a_closed_file_refuses_writes_instead_of_touching_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (file, mut recovered) = RaftFile::open(&dir.path().join("raft.redb")).unwrap();
        let file = Arc::new(file);
        let mut store = LogStore::on_file(Arc::clone(&file), &mut recovered);
        file.close();
        let vote = openraft::impls::Vote::new(1, 1);
        assert!(store.save_vote(&vote).await.is_err());
        assert_eq!(
            store.read_vote().await.unwrap(),
            None,
            "memory unchanged on failure"
        );
    }
}
