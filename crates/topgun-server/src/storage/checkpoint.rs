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

use topgun_core::value::ValueMap;
use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

use crate::clock::now_ms;
use crate::journal::{self, Chunk, Retention, StoredIndex, StoredRow};
use crate::storage::store::{EncodedEntry, Store, StoreError, StoredEntry, StoredValue};
use crate::storage::wal::{Frame, LogFiles, LogMark, ReadLimit, Tail};

/// The reserved map and key of the store's [`LogMark`]: which log the store has checkpointed,
/// and how far. Written in every checkpoint batch, so the mark and the entries it covers are
/// stored together or not at all.
pub const LOG_MAP: &str = "__topgun_wal";
const MARK_KEY: &str = "mark";

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
    log: (LogFiles, Tail),
    store: Arc<dyn Store>,
    degraded: Arc<AtomicBool>,
    start: Start,
) {
    let (wal, tail) = log;
    let mut checkpointer = Checkpointer {
        wal,
        tail: Some(tail),
        store,
        degraded,
        retention: start.retention,
        stored_journal: start.stored_journal,
        skip: start.skip,
        stuck: None,
    };
    checkpointer.run().await;
}

/// What the checkpointer starts from besides the log.
#[derive(Debug, Default)]
pub struct Start {
    /// How many journal events are kept, and the journal rows already stored.
    pub retention: Retention,
    pub stored_journal: StoredIndex,
    /// LSNs of frames recovery found undecodable and the operator chose to discard.
    pub skip: Vec<u64>,
}

struct Checkpointer {
    wal: LogFiles,
    /// `None` only while a read has it on the blocking pool.
    tail: Option<Tail>,
    store: Arc<dyn Store>,
    degraded: Arc<AtomicBool>,
    retention: Retention,
    stored_journal: StoredIndex,
    skip: Vec<u64>,
    /// The undecodable frame checkpoints stopped before, once reported.
    stuck: Option<u64>,
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
            let Some(mut batch) = self.read(target, size).await else {
                return;
            };
            batch.mark = LogMark {
                checkpointed: batch.last,
                synced: if self.wal.synced() { target } else { 0 },
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
        let skip = self.skip.clone();
        // Reading and decoding stay off the async workers, which serve clients.
        let read = tokio::task::spawn_blocking(move || {
            let limit = ReadLimit {
                frames: size,
                bytes: BATCH_BYTES,
            };
            let batch = tail.read(target, limit).map(|f| decode(f, after, &skip));
            if let Ok((_, Some(lsn))) = &batch {
                // Read again from the frame that could not be decoded, next time.
                tail.rewind(*lsn);
            }
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
            Ok((batch, None)) => Some(batch),
            // What came before the undecodable frame is stored; the frame holds back every
            // later checkpoint (and the release of its segment) until an operator acts.
            Ok((batch, Some(lsn))) => {
                if self.stuck != Some(lsn) {
                    tracing::error!(
                        lsn,
                        "a log frame cannot be decoded: checkpoints stop before it and the \
                         log grows until writes are refused; restart to have recovery name it"
                    );
                    self.stuck = Some(lsn);
                }
                self.degraded.store(true, Ordering::Relaxed);
                if batch.frames == 0 {
                    // Nothing before it left to store: look again only now and then, not
                    // in a loop that rereads the segment.
                    tokio::time::sleep(BACKOFF_MAX).await;
                }
                Some(batch)
            }
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
        entries.push(EncodedEntry::from(&mark_entry(batch.mark)));
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
    /// What the store will say of the log once it holds this batch.
    mark: LogMark,
    entries: Vec<EncodedEntry>,
    /// The journal row of the batch's events, if it has any.
    journal: Option<(StoredEntry, StoredRow)>,
}

/// Reads frames into store entries, passing each record's bytes on as logged; journal events
/// up to sequence `after` are already stored and left out.
///
/// Takes the frames by value so that each is freed once copied: a batch then holds its
/// entries and journal row, not the frames as well.
///
/// A frame that cannot be decoded (it passed its checksum, so a bug rather than disk damage)
/// ends the batch before it, and its LSN comes back beside the batch. Skipping it
/// would let its segment be released, and the write it holds vanish without a trace. Frames
/// in `skip` were reported and discarded by recovery at the operator's request.
fn decode(frames: Vec<Frame>, after: Option<u64>, skip: &[u64]) -> (Batch, Option<u64>) {
    let mut batch = Batch {
        entries: Vec::with_capacity(frames.len()),
        ..Batch::default()
    };
    let mut chunk = Chunk::default();
    let mut undecodable = None;
    for f in frames {
        if skip.contains(&f.lsn) {
            (batch.frames, batch.last) = (batch.frames + 1, f.lsn);
            continue;
        }
        let parts = journal::frame_parts(&f.payload)
            .and_then(|(entry, events)| Ok((EncodedEntry::parse(entry.to_vec())?, events)));
        let Ok((entry, events)) = parts else {
            undecodable = Some(f.lsn);
            break;
        };
        if after.is_none_or(|after| journal::sequence(f.lsn, 0) > after) {
            chunk.push(f.lsn, &f.payload, events, &entry);
        }
        batch.entries.push(entry);
        (batch.frames, batch.last) = (batch.frames + 1, f.lsn);
    }
    batch.journal = chunk.into_stored();
    (batch, undecodable)
}

/// The store's record of `mark`.
pub fn mark_entry(mark: LogMark) -> StoredEntry {
    let mut value = ValueMap::new();
    value.insert("checkpointed", Value::from(mark.checkpointed));
    value.insert("synced", Value::from(mark.synced));
    let node = NodeId::new("topgun-log").expect("a valid node id");
    // The store upserts without merging, so the stamp only has to be valid.
    let record = LwwRecord::new(Value::Map(value), Timestamp::new(0, 0, node), None);
    StoredEntry {
        map: LOG_MAP.to_owned(),
        key: MARK_KEY.to_owned(),
        value: StoredValue::Lww(record),
    }
}

/// The mark `entry` holds, if it is the log's record: `None` for any other entry.
pub fn read_mark(entry: &StoredEntry) -> Option<Result<LogMark, StoreError>> {
    if entry.map != LOG_MAP {
        return None;
    }
    let bad = || {
        StoreError::Corrupt(format!(
            "the log's mark in the store is unreadable: {entry:?}"
        ))
    };
    let StoredValue::Lww(record) = &entry.value else {
        return Some(Err(bad()));
    };
    let field = |name: &str| match record.value.get(name) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        Some(Value::UInt(n)) => Some(*n),
        _ => None,
    };
    Some(match (field("checkpointed"), field("synced")) {
        (Some(checkpointed), Some(synced)) => Ok(LogMark {
            checkpointed,
            synced,
        }),
        _ => Err(bad()),
    })
}

/// Runs `write` until the store takes the batch; marks the server degraded meanwhile.
async fn with_retry<T, F>(degraded: &AtomicBool, mut write: impl FnMut() -> F) -> T
where
    F: Future<Output = Result<T, crate::storage::store::StoreError>>,
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
