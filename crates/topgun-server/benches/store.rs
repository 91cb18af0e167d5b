//! The redb store's checkpoint write: one batch of fresh entries into a store that already
//! holds a million, by key order and batch size.
//!
//! `cargo bench -p topgun-server --bench store` — results and their context live in
//! `docs/benchmarks.md`. Each batch is one durable redb commit on the disk of `$TMPDIR`.

// Bench code: a panic is a failure, and casts apply to small loop indices.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use topgun_core::{LwwRecord, NodeId, Timestamp, Value};
use topgun_server::storage::redb::RedbStore;
use topgun_server::storage::store::{EncodedEntry, Store, StoredEntry, StoredValue};

/// Entries in the store before the measured batches.
const PRELOADED: u64 = 1_000_000;

#[derive(Clone, Copy)]
enum Keys {
    /// As `topgun-bench write` names them: 200 writers' keys, each writer's sorting together.
    Sequential,
    /// Spread over the key space, as random IDs are.
    Scattered,
}

fn key(keys: Keys, i: u64) -> String {
    match keys {
        Keys::Sequential => format!("k{}-{}", i % 200, i / 200),
        Keys::Scattered => format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
    }
}

/// Entries `from..from + count`, in the form the checkpointer hands the store.
fn batch(keys: Keys, from: u64, count: u64) -> Arc<[EncodedEntry]> {
    let node = NodeId::new("bench-client").unwrap();
    (from..from + count)
        .map(|i| {
            let entry = StoredEntry {
                map: "bench".into(),
                key: key(keys, i),
                value: StoredValue::Lww(LwwRecord::new(
                    Value::Str("v".repeat(64).into()),
                    Timestamp::new(1_700_000_000_000 + i, 0, node.clone()),
                    None,
                )),
            };
            EncodedEntry::from(&entry)
        })
        .collect()
}

fn checkpoint_batches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("store_checkpoint");
    // A 262,144-entry batch takes about a second: few samples, a short warm-up.
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for (keys, name) in [
        (Keys::Sequential, "sequential"),
        (Keys::Scattered, "scattered"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("store.redb")).unwrap();
        for from in (0..PRELOADED).step_by(262_144) {
            let count = 262_144.min(PRELOADED - from);
            rt.block_on(store.write_encoded(batch(keys, from, count)))
                .unwrap();
        }
        let mut next = PRELOADED;
        for size in [8_192u64, 262_144] {
            group.throughput(Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let entries = batch(keys, next, size);
                        next += size;
                        let started = Instant::now();
                        rt.block_on(store.write_encoded(entries)).unwrap();
                        spent += started.elapsed();
                    }
                    spent
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, checkpoint_batches);
criterion_main!(benches);
