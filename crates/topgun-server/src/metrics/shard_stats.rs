//! What one shard task publishes for `/metrics` about the records it holds; the scrape sums
//! every shard's.
//!
//! The shard keeps the numbers itself (sans I/O, exact: see `data/shard/tally.rs`); its task
//! copies them here after each change with relaxed stores, so recording is two stores and
//! never a lock, and a scrape never asks a shard anything.

use std::sync::atomic::{AtomicU64, Ordering};

/// One shard's published numbers. Aligned to its own cache line(s): each shard task writes
/// its own while the others write theirs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    /// UTF-8 bytes of the OR tombstone tags the shard holds.
    tombstone_bytes: AtomicU64,
    /// Bytes the shard tombstoned since start, what it recovered included.
    tombstoned_total: AtomicU64,
}

impl ShardStats {
    /// The shard's current numbers (the shard task is the only writer).
    pub fn publish(&self, tombstone_bytes: u64, tombstoned_total: u64) {
        self.tombstone_bytes
            .store(tombstone_bytes, Ordering::Relaxed);
        self.tombstoned_total
            .store(tombstoned_total, Ordering::Relaxed);
    }

    pub fn tombstone_bytes(&self) -> u64 {
        self.tombstone_bytes.load(Ordering::Relaxed)
    }

    pub fn tombstoned_total(&self) -> u64 {
        self.tombstoned_total.load(Ordering::Relaxed)
    }
}
