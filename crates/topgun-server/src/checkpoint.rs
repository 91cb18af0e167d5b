//! Drains the write-ahead log into the store in batches, then releases the segments the
//! store now holds.
//!
//! The checkpointer reads the log's files behind the writer (never the writer's memory), so
//! a slow or unreachable store only lets the log grow — up to its bound, after which shards
//! refuse writes — and never blocks or loses an append. Store failures are retried with
//! backoff; while they last the server reports itself degraded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::journal::{self, JournalEvent, Retention, StoredIndex};
use crate::server::now_ms;
use crate::store::{Store, StoredEntry};
use crate::wal::{Frame, Tail, Wal};

/// Most entries written to the store in one batch.
const BATCH_MAX: usize = 8192;
/// Pause after a checkpoint that found less than a full batch. Fewer, larger store commits
/// cost far less per entry (a redb commit rewrites every B-tree page it touches and syncs
/// twice) and leave the disk to the log's own syncs; the price is at most this much more
/// log to replay after a crash.
const PAUSE: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until the log's writer is gone. Journal events in the log are stored as entries of
/// the journal map, and those past `journal`'s retention are deleted in the same batch.
pub async fn run(
    wal: Wal,
    mut tail: Tail,
    store: Arc<dyn Store>,
    degraded: Arc<AtomicBool>,
    journal: (Retention, StoredIndex),
) {
    let (retention, mut stored_journal) = journal;
    let mut durable = wal.durable();
    loop {
        let target = *durable.borrow_and_update();
        if tail.next_lsn() > target {
            if durable.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Reading and decoding stay off the async workers, which serve clients.
        let read = tokio::task::spawn_blocking(move || {
            let batch = tail.read(target, BATCH_MAX).map(|frames| decode(&frames));
            (tail, batch)
        })
        .await;
        let Ok((returned, batch)) = read else {
            return;
        };
        tail = returned;
        let batch = match batch {
            Ok(batch) if batch.frames > 0 => batch,
            Ok(_) => {
                // The frames are written but not yet visible whole; look again shortly.
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint cannot read the write-ahead log");
                degraded.store(true, Ordering::Relaxed);
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            }
        };
        let full = batch.frames >= BATCH_MAX;
        let mut entries = batch.entries;
        entries.extend(batch.events.iter().map(JournalEvent::to_stored));
        entries.extend(stored_journal.add(&batch.events, retention, now_ms()));
        store_with_retry(&*store, entries, &degraded).await;
        // Deleting segments is file I/O: off the async workers too.
        let log = wal.clone();
        let outcome = tokio::task::spawn_blocking(move || log.release_through(batch.last));
        if let Ok(Err(e)) = outcome.await {
            tracing::warn!(error = %e, "could not delete checkpointed log segments");
        }
        if !full {
            tokio::time::sleep(PAUSE).await;
        }
    }
}

/// A read stretch of the log, decoded.
struct Batch {
    frames: usize,
    /// The last frame's LSN.
    last: u64,
    entries: Vec<StoredEntry>,
    /// Journal events, in sequence order.
    events: Vec<JournalEvent>,
}

fn decode(frames: &[Frame]) -> Batch {
    let mut entries = Vec::with_capacity(frames.len());
    let mut events = Vec::new();
    for f in frames {
        match journal::decode_frame(&f.payload) {
            Ok((entry, drafts)) => {
                events.extend(journal::sequenced(f.lsn, &entry, drafts));
                entries.push(entry);
            }
            // The frame passed its checksum, so this is a bug, not disk damage.
            Err(e) => tracing::error!(lsn = f.lsn, error = %e, "undecodable log entry skipped"),
        }
    }
    Batch {
        frames: frames.len(),
        last: frames.last().map_or(0, |f| f.lsn),
        entries,
        events,
    }
}

/// Writes until the store takes the batch; marks the server degraded meanwhile.
async fn store_with_retry(store: &dyn Store, entries: Vec<StoredEntry>, degraded: &AtomicBool) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match store.write(entries.clone()).await {
            Ok(()) => {
                if degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("store reachable again; checkpoints resumed");
                }
                return;
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
