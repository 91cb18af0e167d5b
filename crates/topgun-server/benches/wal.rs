//! The write-ahead log: group commit against one sync per append, and recovery of a
//! million records from the log and from the redb store.
//!
//! `cargo bench -p topgun-server --bench wal` — results and their context live in
//! `docs/benchmarks.md`. These touch the disk of `$TMPDIR`; figures depend on its sync cost.

// Bench code: a panic is a failure, and casts apply to small loop indices.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use topgun_core::{LwwRecord, NodeId, Timestamp, Value};
use topgun_server::data::shard::Shard;
use topgun_server::storage::redb::RedbStore;
use topgun_server::storage::store::{Store, StoredEntry, StoredValue};
use topgun_server::storage::wal::{self, OnCorruption, SyncMode, Wal, WalConfig};

fn config(dir: &Path) -> WalConfig {
    WalConfig {
        dir: dir.to_owned(),
        sync: SyncMode::Fsync,
        segment_bytes: 64 << 20,
        max_bytes: 64 << 30,
        on_corruption: OnCorruption::Refuse,
        // The log alone: appends as fast as they come, as the figures in the docs were taken.
        commit_delay: std::time::Duration::ZERO,
    }
}

fn entry(i: u64) -> Vec<u8> {
    let node = NodeId::new("bench-client").unwrap();
    StoredEntry {
        map: "todos".into(),
        key: format!("user:{i:08}"),
        value: StoredValue::Lww(LwwRecord::new(
            Value::from("a short value of a todo item"),
            Timestamp::new(1_700_000_000_000 + i, 0, node),
            None,
        )),
    }
    .encode()
}

/// `writers` tasks each append one entry at a time, waiting for each; returns the time
/// for `total` appends.
fn appends(rt: &tokio::runtime::Runtime, writers: u64, total: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    rt.block_on(async {
        let wal = Wal::start(&config, &wal::recover(&config, None).unwrap()).unwrap();
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    for i in 0..total / writers {
                        let done = wal.append(vec![entry(w * total + i)]).await.unwrap();
                        done.await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
    })
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("wal");
    group.sample_size(10);
    for writers in [1u64, 64] {
        let total = if writers == 1 { 200 } else { 6_400 };
        group.throughput(Throughput::Elements(total));
        group.bench_function(format!("synced_appends_{writers}_writers"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| appends(&rt, writers, total)).sum());
        });
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    const RECORDS: u64 = 1_000_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        sync: SyncMode::Os,
        ..config(dir.path())
    };
    rt.block_on(async {
        let wal = Wal::start(&config, &wal::recover(&config, None).unwrap()).unwrap();
        for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(10_000) {
            let payloads = chunk.iter().map(|i| entry(*i)).collect();
            wal.append(payloads).await.unwrap().await.unwrap().unwrap();
        }
    });
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("wal_1m_records_into_a_shard", |b| {
        b.iter(|| {
            let recovered = wal::recover(&config, None).unwrap();
            let entries = recovered
                .frames
                .iter()
                .map(|f| StoredEntry::decode(&f.payload).unwrap())
                .collect();
            let mut shard = Shard::new();
            shard.load(entries, 0);
            shard
        });
    });
    let store_dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&store_dir.path().join("store.redb")).unwrap();
    rt.block_on(async {
        for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(50_000) {
            let entries = chunk
                .iter()
                .map(|i| StoredEntry::decode(&entry(*i)).unwrap())
                .collect();
            store.write(entries).await.unwrap();
        }
    });
    let all: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
    group.bench_function("redb_1m_records_into_a_shard", |b| {
        b.iter(|| {
            let entries = rt.block_on(store.load(&all)).unwrap();
            let mut shard = Shard::new();
            shard.load(entries, 0);
            shard
        });
    });
    group.finish();
}

criterion_group!(benches, group_commit, recovery);
criterion_main!(benches);
