//! Drains the write-ahead log into the store in batches, then releases the segments the
//! store now holds.
//!
//! The checkpointer reads the log's files behind the writer (never the writer's memory), so
//! a slow or unreachable store only lets the log grow — up to its bound, after which shards
//! refuse writes — and never blocks or loses an append. Store failures are retried with
//! backoff; while they last the server reports itself degraded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::journal::{self, Chunk, Retention, StoredIndex, StoredRow};
use crate::server::now_ms;
use crate::store::{EncodedEntry, Store, StoredEntry};
use crate::wal::{Frame, LogFiles, ReadLimit, Tail};

/// Entries in a store batch while the checkpointer keeps up: small, frequent commits keep
/// the store close behind the log.
const BATCH_MIN: usize = 8192;
/// Most entries in one batch. While the checkpointer falls behind, each batch doubles up to
/// this: a B-tree commit rewrites every page its keys touch, so keys scattered over a large
/// store cost about a page each in small batches and share pages in large ones (redb: 21 µs
/// per entry at 8,192, 10.6 µs at 262,144; `benches/store.rs`).
const BATCH_MAX: usize = 262_144;
/// Most log payload bytes in one batch, whatever the values' size: bounds the memory a
/// batch holds (its entries and its journal row, each about this size; the frames read are
/// freed as they are decoded).
const BATCH_BYTES: usize = 64 << 20;
/// Pause after a checkpoint that left nothing behind. A crash replays the log since the last
/// store write plus the rest of its segment.
const PAUSE: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until the log's writer is gone. The journal events of each batch are stored as one
/// row of the journal map ([`Chunk`]), and rows past `journal`'s retention are deleted in the
/// same batch.
pub async fn run(
    wal: LogFiles,
    tail: Tail,
    store: Arc<dyn Store>,
    degraded: Arc<AtomicBool>,
    journal: (Retention, StoredIndex),
) {
    let (retention, stored_journal) = journal;
    let mut checkpointer = Checkpointer {
        wal,
        tail: Some(tail),
        store,
        degraded,
        retention,
        stored_journal,
    };
    checkpointer.run().await;
}

struct Checkpointer {
    wal: LogFiles,
    /// `None` only while a read has it on the blocking pool.
    tail: Option<Tail>,
    store: Arc<dyn Store>,
    degraded: Arc<AtomicBool>,
    retention: Retention,
    stored_journal: StoredIndex,
}

impl Checkpointer {
    async fn run(&mut self) {
        let mut durable = self.wal.durable();
        let mut size = BATCH_MIN;
        loop {
            let target = *durable.borrow_and_update();
            let next = self.tail.as_ref().map_or(u64::MAX, Tail::next_lsn);
            if next > target {
                // Caught up: wait for more.
                if durable.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let Some(batch) = self.read(target, size).await else {
                return;
            };
            let behind = self.tail.as_ref().is_some_and(|t| t.next_lsn() <= target);
            if batch.frames > 0 {
                self.store(batch).await;
            }
            size = next_batch_size(size, behind);
            if !behind {
                tokio::time::sleep(PAUSE).await;
            }
        }
    }

    /// Reads and decodes up to `size` frames through `target`; `None` once the runtime is
    /// going away.
    async fn read(&mut self, target: u64, size: usize) -> Option<Batch> {
        let mut tail = self.tail.take()?;
        let after = self.stored_journal.last_sequence();
        // Reading and decoding stay off the async workers, which serve clients.
        let read = tokio::task::spawn_blocking(move || {
            let limit = ReadLimit {
                frames: size,
                bytes: BATCH_BYTES,
            };
            let batch = tail.read(target, limit).map(|f| decode(f, after));
            (tail, batch)
        })
        .await;
        let (tail, batch) = match read {
            Ok(read) => read,
            Err(e) => {
                // Writes go on into the log until its bound; the operator must be told.
                tracing::error!(error = %e, "checkpointer stopped: reading the log failed");
                self.degraded.store(true, Ordering::Relaxed);
                return None;
            }
        };
        self.tail = Some(tail);
        match batch {
            // Frames written but not yet visible whole read as none: looked at again later.
            Ok(batch) => Some(batch),
            Err(e) => {
                tracing::error!(error = %e, "checkpoint cannot read the write-ahead log");
                self.degraded.store(true, Ordering::Relaxed);
                tokio::time::sleep(BACKOFF_MAX).await;
                Some(Batch::default())
            }
        }
    }

    async fn store(&mut self, batch: Batch) {
        let mut entries = batch.entries;
        let row = batch.journal.map(|(entry, row)| {
            entries.push(EncodedEntry::from(&entry));
            row
        });
        let gone = self.stored_journal.add(row, self.retention, now_ms());
        entries.extend(gone.iter().map(EncodedEntry::from));
        // Shared rather than cloned for each attempt: a clone of a full batch took a
        // runtime worker for a millisecond or more.
        let entries: Arc<[EncodedEntry]> = entries.into();
        let (store, count, started) = (Arc::clone(&self.store), entries.len(), Instant::now());
        with_retry(&self.degraded, || store.write_encoded(Arc::clone(&entries))).await;
        let stats = self.wal.stats();
        stats.store_writes.record(started.elapsed());
        stats
            .stored_entries
            .fetch_add(count as u64, Ordering::Relaxed);
        self.release(batch.last).await;
    }

    /// Releases the log segments whose frames, through `through`, the store durably holds.
    async fn release(&self, through: u64) {
        // Deleting segments is file I/O: off the async workers too.
        let log = self.wal.clone();
        let outcome = tokio::task::spawn_blocking(move || log.release_through(through));
        if let Ok(Err(e)) = outcome.await {
            tracing::warn!(error = %e, "could not delete checkpointed log segments");
        }
    }
}

/// The next batch's size: doubled (up to [`BATCH_MAX`]) while the log holds more than the
/// last batch took, back to [`BATCH_MIN`] once the checkpointer has caught up.
fn next_batch_size(size: usize, behind: bool) -> usize {
    if behind {
        (size * 2).min(BATCH_MAX)
    } else {
        BATCH_MIN
    }
}

/// A read stretch of the log, decoded.
#[derive(Default)]
struct Batch {
    frames: usize,
    /// The last frame's LSN.
    last: u64,
    entries: Vec<EncodedEntry>,
    /// The journal row of the batch's events, if it has any.
    journal: Option<(StoredEntry, StoredRow)>,
}

/// Reads frames into store entries, passing each record's bytes on as logged; journal events
/// up to sequence `after` are already stored and left out.
///
/// Takes the frames by value so that each is freed once copied: a batch then holds its
/// entries and journal row, not the frames as well.
fn decode(frames: Vec<Frame>, after: Option<u64>) -> Batch {
    let (count, last) = (frames.len(), frames.last().map_or(0, |f| f.lsn));
    let mut entries = Vec::with_capacity(count);
    let mut chunk = Chunk::default();
    for f in frames {
        let parts = journal::frame_parts(&f.payload)
            .and_then(|(entry, events)| Ok((EncodedEntry::parse(entry.to_vec())?, events)));
        match parts {
            Ok((entry, events)) => {
                if after.is_none_or(|after| journal::sequence(f.lsn, 0) > after) {
                    chunk.push(f.lsn, &f.payload, events, &entry);
                }
                entries.push(entry);
            }
            // The frame passed its checksum, so this is a bug, not disk damage.
            Err(e) => tracing::error!(lsn = f.lsn, error = %e, "undecodable log entry skipped"),
        }
    }
    Batch {
        frames: count,
        last,
        entries,
        journal: chunk.into_stored(),
    }
}

/// Runs `write` until the store takes the batch; marks the server degraded meanwhile.
async fn with_retry<T, F>(degraded: &AtomicBool, mut write: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, crate::store::StoreError>>,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        match write().await {
            Ok(done) => {
                if degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("store reachable again; checkpoints resumed");
                }
                return done;
            }
            Err(e) => {
                if !degraded.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "store write failed; writes stay in the log");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_grow_while_behind_and_shrink_once_caught_up() {
        let mut size = BATCH_MIN;
        let mut sizes = Vec::new();
        for _ in 0..7 {
            size = next_batch_size(size, true);
            sizes.push(size);
        }
        assert_eq!(
            sizes,
            [16_384, 32_768, 65_536, 131_072, 262_144, 262_144, 262_144]
        );
        assert_eq!(next_batch_size(size, false), BATCH_MIN);
    }
}
