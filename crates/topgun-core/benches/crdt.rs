//! Core CRDT throughput: every figure includes Merkle maintenance.
//!
//! `cargo bench -p topgun-core --bench crdt` — results and their context live in
//! `docs/benchmarks.md`.

// Bench code: a panic is a failure, and casts apply to small loop indices.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use topgun_core::{
    LwwMap, LwwRecord, MerkleTree, NodeId, OrMap, OrMapEntry, OrRecord, Timestamp, Value,
};

const BATCH: usize = 10_000;
const BASE_MS: u64 = 1_700_000_000_000;

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user:{i:08}")).collect()
}

fn records(keys: &[String], millis: u64, node_id: &NodeId) -> Vec<(String, LwwRecord)> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let ts = Timestamp::new(millis + i as u64, 0, node_id.clone());
            (
                k.clone(),
                LwwRecord::new(Value::from("some value"), ts, None),
            )
        })
        .collect()
}

fn lww(c: &mut Criterion) {
    let mut g = c.benchmark_group("lww");
    g.throughput(Throughput::Elements(BATCH as u64));
    let keys = keys(BATCH);
    let writer = node("writer");

    g.bench_function("set_new_keys", |b| {
        b.iter_batched(
            LwwMap::new,
            |mut m| {
                for (i, k) in keys.iter().enumerate() {
                    let ts = Timestamp::new(BASE_MS + i as u64, 0, writer.clone());
                    m.set(k, Value::from("some value"), ts, None).unwrap();
                }
                m
            },
            BatchSize::LargeInput,
        );
    });

    let fresh = records(&keys, BASE_MS, &writer);
    g.bench_function("merge_new_keys", |b| {
        b.iter_batched(
            || (LwwMap::new(), fresh.clone()),
            |(mut m, batch)| {
                for (k, r) in batch {
                    black_box(m.merge(&k, r));
                }
                m
            },
            BatchSize::LargeInput,
        );
    });

    // Steady state: every remote record overwrites an existing, older one.
    let mut existing = LwwMap::new();
    for (k, r) in records(&keys, BASE_MS, &writer) {
        existing.merge(&k, r);
    }
    let newer = records(&keys, BASE_MS + 1_000_000, &node("remote"));
    g.bench_function("merge_updates", |b| {
        b.iter_batched(
            || (existing.clone(), newer.clone()),
            |(mut m, batch)| {
                for (k, r) in batch {
                    black_box(m.merge(&k, r));
                }
                m
            },
            BatchSize::LargeInput,
        );
    });

    // Stale duplicates: the common case of a re-sent op log.
    g.bench_function("merge_stale", |b| {
        b.iter_batched(
            || (existing.clone(), fresh.clone()),
            |(mut m, batch)| {
                for (k, r) in batch {
                    black_box(m.merge(&k, r));
                }
                m
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn or_map(c: &mut Criterion) {
    let mut g = c.benchmark_group("or");
    g.throughput(Throughput::Elements(BATCH as u64));
    let keys = keys(BATCH);
    let writer = node("writer");

    g.bench_function("add", |b| {
        b.iter_batched(
            OrMap::new,
            |mut m| {
                for (i, k) in keys.iter().enumerate() {
                    let ts = Timestamp::new(BASE_MS + i as u64, 0, writer.clone());
                    m.add(k, Value::from("tag-value"), ts, None).unwrap();
                }
                m
            },
            BatchSize::LargeInput,
        );
    });

    // Entries of two records and one tombstone each, merged into an empty map.
    let entries: Vec<OrMapEntry> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let record = |n: u64| {
                let ts = Timestamp::new(BASE_MS + 3 * i as u64 + n, 0, node("remote"));
                OrRecord {
                    value: Value::from(format!("v{n}")),
                    tag: ts.to_string(),
                    timestamp: ts,
                    ttl_ms: None,
                }
            };
            let dead = record(2);
            OrMapEntry {
                key: k.clone(),
                records: vec![record(0), record(1)],
                tombstones: vec![dead.tag],
            }
        })
        .collect();
    g.bench_function("merge_key", |b| {
        b.iter_batched(
            || (OrMap::new(), entries.clone()),
            |(mut m, batch)| {
                for e in batch {
                    black_box(m.merge_key(e));
                }
                m
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    const KEYS: usize = 100_000;
    let keys = keys(KEYS);
    let mut a = MerkleTree::new();
    let mut b = MerkleTree::new();
    for (i, k) in keys.iter().enumerate() {
        a.insert(k, (), i as u32);
        // 1 % of the keys carry a different item hash on the other side.
        let hash = if i.is_multiple_of(100) {
            i as u32 + 1
        } else {
            i as u32
        };
        b.insert(k, (), hash);
    }
    let mut g = c.benchmark_group("merkle");
    g.bench_function("diff_100k_keys_1pct", |bench| {
        bench.iter(|| black_box(a.diff(&b)));
    });
    g.bench_function("root_buckets_and_leaf", |bench| {
        bench.iter(|| {
            let root = a.buckets("").unwrap();
            let leaf = a.keys_in_bucket("abc").unwrap().len();
            black_box((root, leaf))
        });
    });
    g.finish();
}

criterion_group!(benches, lww, or_map, merkle);
criterion_main!(benches);
