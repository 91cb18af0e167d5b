//! One conformance suite for every `Store`: run against the in-memory store, redb and a real
//! PostgreSQL server (a database of its own per test, dropped afterwards). A store must upsert whole key states, keep LWW and OR maps of
//! one name apart, load by partition, survive reopening (disk stores), and round-trip
//! every value shape byte-exactly.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::TestDb;

use topgun_core::hash::{PARTITION_COUNT, partition_id};
use topgun_core::{LwwRecord, NodeId, OrRecord, Timestamp, Value, ValueMap};
use topgun_server::storage::pg::PgStore;
use topgun_server::storage::redb::RedbStore;
use topgun_server::storage::store::{MapKind, MemoryStore, Store, StoredEntry, StoredValue};

fn ts(millis: u64, counter: u32) -> Timestamp {
    Timestamp::new(millis, counter, NodeId::new("node-1").unwrap())
}

fn lww(map: &str, key: &str, value: Value, millis: u64) -> StoredEntry {
    StoredEntry {
        map: map.into(),
        key: key.into(),
        value: StoredValue::Lww(LwwRecord::new(value, ts(millis, 0), Some(60_000))),
    }
}

fn or(map: &str, key: &str, values: &[&str], tombstones: &[&str]) -> StoredEntry {
    let records = values
        .iter()
        .zip(1u32..)
        .map(|(v, c)| OrRecord {
            value: Value::Str((*v).into()),
            tag: ts(5, c).to_string(),
            timestamp: ts(5, c),
            ttl_ms: None,
        })
        .collect();
    StoredEntry {
        map: map.into(),
        key: key.into(),
        value: StoredValue::Or {
            records,
            tombstones: tombstones.iter().map(|t| (*t).to_owned()).collect(),
        },
    }
}

fn all() -> Vec<u32> {
    (0..PARTITION_COUNT).collect()
}

fn sorted(mut entries: Vec<StoredEntry>) -> Vec<StoredEntry> {
    entries.sort_by(|a, b| {
        (a.map.as_str(), a.key.as_str(), a.value.kind()).cmp(&(
            b.map.as_str(),
            b.key.as_str(),
            b.value.kind(),
        ))
    });
    entries
}

/// Every value shape a record may hold.
fn shapes() -> Vec<Value> {
    vec![
        Value::Nil,
        Value::Bool(true),
        Value::Int(-7),
        Value::UInt(u64::MAX),
        Value::Float(0.1),
        Value::Str("ünïcødé 😀".into()),
        Value::Bin(vec![0, 255, 1]),
        Value::Array(vec![Value::Int(1), Value::Str("two".into())]),
        Value::Map(ValueMap::from_entries(vec![
            ("b".into(), Value::Int(1)),
            ("a".into(), Value::Nil),
        ])),
    ]
}

async fn conformance(store: Arc<dyn Store>) {
    assert!(store.load(&all()).await.unwrap().is_empty(), "starts empty");

    // Upserts keep the latest state of each key; one name may hold an LWW and an OR map.
    store
        .write(vec![
            lww("m", "a", Value::Int(1), 1),
            lww("m", "b", Value::Int(2), 1),
            or("m", "a", &["x"], &[]),
        ])
        .await
        .unwrap();
    store
        .write(vec![
            lww("m", "a", Value::Int(3), 2),
            or("m", "a", &["y"], &["5:1:node-1"]),
            lww("other", "a", Value::Nil, 3),
        ])
        .await
        .unwrap();
    let expected = sorted(vec![
        lww("m", "a", Value::Int(3), 2),
        or("m", "a", &["y"], &["5:1:node-1"]),
        lww("m", "b", Value::Int(2), 1),
        lww("other", "a", Value::Nil, 3),
    ]);
    assert_eq!(sorted(store.load(&all()).await.unwrap()), expected);

    // Loading by partition returns exactly the keys of those partitions.
    let pa = partition_id("a");
    let only_a = store.load(&[pa]).await.unwrap();
    assert!(!only_a.is_empty());
    assert!(only_a.iter().all(|e| partition_id(&e.key) == pa));
    assert_eq!(store.load(&[pa, partition_id("b")]).await.unwrap().len(), 4);

    // A key gone (its last tombstone pruned) is deleted; deleting an absent key is fine.
    let gone = |map: &str, key: &str, kind| StoredEntry {
        map: map.into(),
        key: key.into(),
        value: StoredValue::Gone(kind),
    };
    store
        .write(vec![
            lww("m", "doomed", Value::Nil, 4),
            gone("m", "doomed", MapKind::Lww),
            gone("m", "never-there", MapKind::Or),
        ])
        .await
        .unwrap();
    store
        .write(vec![lww("m", "doomed2", Value::Nil, 4)])
        .await
        .unwrap();
    store
        .write(vec![gone("m", "doomed2", MapKind::Lww)])
        .await
        .unwrap();
    assert_eq!(sorted(store.load(&all()).await.unwrap()), expected);

    // Every value shape comes back exactly; an empty batch is fine.
    let shaped: Vec<StoredEntry> = shapes()
        .into_iter()
        .enumerate()
        .map(|(i, v)| lww("shapes", &format!("k{i}"), v, 9))
        .collect();
    store.write(shaped.clone()).await.unwrap();
    store.write(Vec::new()).await.unwrap();
    let loaded: Vec<StoredEntry> = store
        .load(&all())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.map == "shapes")
        .collect();
    assert_eq!(sorted(loaded), sorted(shaped));
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn redb_store_conforms_and_keeps_everything_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    conformance(Arc::new(RedbStore::open(&path).unwrap())).await;
    let reopened = RedbStore::open(&path).unwrap();
    let entries = reopened.load(&all()).await.unwrap();
    assert_eq!(entries.len(), 4 + shapes().len());
    assert!(entries.contains(&lww("m", "a", Value::Int(3), 2)));
}

#[test]
fn redb_refuses_an_unusable_path_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RedbStore::open(&dir.path().join("missing/dir/store.redb")).unwrap_err();
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[tokio::test]
async fn postgres_store_conforms_and_keeps_everything_across_reconnecting() {
    let db = TestDb::create().await;
    conformance(Arc::new(PgStore::connect(&db.url).await.unwrap())).await;
    // A second connection (a restart) migrates nothing and sees everything.
    let again = PgStore::connect(&db.url).await.unwrap();
    let entries = again.load(&all()).await.unwrap();
    assert_eq!(entries.len(), 4 + shapes().len());
    assert!(entries.contains(&lww("m", "a", Value::Int(3), 2)));
    // Keys may hold any character, NUL included; one batch may repeat a key.
    again
        .write(vec![
            lww("m", "nul\0key", Value::Int(1), 1),
            lww("m", "nul\0key", Value::Int(2), 2),
        ])
        .await
        .unwrap();
    let loaded = again.load(&[partition_id("nul\0key")]).await.unwrap();
    assert!(loaded.contains(&lww("m", "nul\0key", Value::Int(2), 2)));
}

#[tokio::test]
async fn postgres_loads_page_by_page() {
    let db = TestDb::create().await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let entries: Vec<StoredEntry> = (0..25_000)
        .map(|i| lww("big", &format!("key-{i:05}"), Value::Int(i), 1))
        .collect();
    for chunk in entries.chunks(5_000) {
        store.write(chunk.to_vec()).await.unwrap();
    }
    assert_eq!(sorted(store.load(&all()).await.unwrap()), sorted(entries));
}
