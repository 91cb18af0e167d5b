//! The data path over real sockets: writes and acks, LWW convergence by HLC, removes as
//! tombstones, OR-Map adds and removes across clients, Merkle sync that moves only the
//! differing leaves, events to subscribers only, slow consumers, restarts from the store,
//! and roots equal to the ones the TS client's hashing (PROTOCOL.md §3) yields, computed by an
//! independent JavaScript implementation run in Node.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Short names (a, b, x, y, z) follow the scenarios; counts are small.
#![allow(
    clippy::many_single_char_names,
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::{ServerEventType, WriteConcern};
use topgun_core::protocol::messages::{
    ClientOp, MerkleReqBucket, OrMapPushDiff, OrMapSyncInit, ServerEvent, SyncInit,
};
use topgun_core::protocol::wire::Field;
use topgun_core::{
    LwwMap, LwwRecord, NodeId, OrMap, OrMapEntry, OrRecord, Timestamp, Value, ValueMap,
};
use topgun_server::storage::store::MemoryStore;

const MAP: &str = "todos";

fn ts(millis: u64, counter: u32, node: &str) -> Timestamp {
    Timestamp::new(millis, counter, NodeId::new(node).unwrap())
}

fn op(id: u64, key: &str) -> ClientOp {
    blank_op(id, MAP, key)
}

fn put(id: u64, key: &str, value: Value, at: Timestamp) -> ClientOp {
    put_op(id, MAP, key, value, at)
}

fn remove(id: u64, key: &str, at: Timestamp) -> ClientOp {
    ClientOp {
        op_type: Some("REMOVE".into()),
        record: Field::Value(LwwRecord::tombstone(at)),
        ..op(id, key)
    }
}

fn or_record(value: Value, at: Timestamp) -> OrRecord {
    OrRecord {
        value,
        tag: at.to_string(),
        timestamp: at,
        ttl_ms: None,
    }
}

fn or_add(id: u64, key: &str, record: OrRecord) -> ClientOp {
    ClientOp {
        op_type: Some("OR_ADD".into()),
        or_record: Field::Value(record),
        ..op(id, key)
    }
}

fn or_remove(id: u64, key: &str, tag: &str) -> ClientOp {
    ClientOp {
        op_type: Some("OR_REMOVE".into()),
        or_tag: Field::Value(tag.into()),
        ..op(id, key)
    }
}

fn batch(ops: Vec<ClientOp>) -> Message {
    op_batch(ops)
}

fn sync_init(map: &str) -> Message {
    Message::SyncInit(SyncInit {
        map_name: map.into(),
        last_sync_timestamp: Some(0),
    })
}

fn or_sync_init(map: &str) -> Message {
    Message::OrMapSyncInit(OrMapSyncInit {
        map_name: map.into(),
        root_hash: 0,
        bucket_hashes: BTreeMap::new(),
        last_sync_timestamp: None,
        claimed_epoch: Some(0),
    })
}

fn bucket_req(map: &str, path: &str) -> MerkleReqBucket {
    MerkleReqBucket {
        map_name: map.into(),
        path: path.into(),
    }
}

async fn next(c: &mut Client) -> Message {
    recv(c).await.expect("connection closed")
}

async fn expect_ack(c: &mut Client, last_id: &str) {
    match next(c).await {
        Message::OpAck(ack) => {
            assert_eq!(ack.last_id, last_id);
            assert_eq!(ack.achieved_level, Some(WriteConcern::Applied));
        }
        other => panic!("expected OP_ACK {last_id}, got {other:?}"),
    }
}

/// The next `n` events, whether sent one by one or in `SERVER_BATCH_EVENT`s.
async fn recv_events(c: &mut Client, n: usize) -> Vec<ServerEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        match next(c).await {
            Message::ServerEvent(e) => events.push(e),
            Message::ServerBatchEvent(b) => events.extend(b.events),
            other => panic!("expected events, got {other:?}"),
        }
    }
    assert_eq!(events.len(), n, "no more events than expected");
    events
}

/// Sends a PING and asserts that the PONG is the next message: nothing else was queued.
async fn expect_quiet(c: &mut Client) {
    send(c, &ping(99)).await;
    expect_pong(c, 99).await;
}

async fn lww_root(c: &mut Client, map: &str) -> u32 {
    send(c, &sync_init(map)).await;
    match next(c).await {
        Message::SyncRespRoot(r) => r.root_hash,
        other => panic!("expected SYNC_RESP_ROOT, got {other:?}"),
    }
}

async fn connect_subscribed(server: &Running, map: &str) -> Client {
    let mut c = connect(server.addr, "/").await;
    lww_root(&mut c, map).await;
    c
}

#[tokio::test]
async fn writes_are_acknowledged_and_events_reach_subscribers_only() {
    let server = start(no_auth(), None).await;
    let mut writer = connect_subscribed(&server, MAP).await;
    let mut subscriber = connect_subscribed(&server, MAP).await;
    let mut other_map = connect_subscribed(&server, "elsewhere").await;
    let mut bystander = connect(server.addr, "/").await;

    let now = now_ms();
    let ops = vec![
        put(1, "a", Value::Str("one".into()), ts(now, 0, "w")),
        put(2, "b", Value::Int(2), ts(now, 1, "w")),
    ];
    send(&mut writer, &batch(ops)).await;
    expect_ack(&mut writer, "2").await;
    expect_quiet(&mut writer).await;

    let mut seen = Vec::new();
    for _ in 0..2 {
        match next(&mut subscriber).await {
            Message::ServerEvent(e) => {
                assert_eq!(
                    (e.map_name.as_str(), e.event_type),
                    (MAP, ServerEventType::Put)
                );
                seen.push((e.key.to_string(), e.record.unwrap().value));
            }
            other => panic!("expected SERVER_EVENT, got {other:?}"),
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            ("a".to_owned(), Value::Str("one".into())),
            ("b".to_owned(), Value::Int(2))
        ]
    );
    expect_quiet(&mut subscriber).await;
    expect_quiet(&mut other_map).await;
    expect_quiet(&mut bystander).await;

    // CLIENT_OP is acknowledged the same way.
    send(
        &mut writer,
        &Message::ClientOp(put(3, "c", Value::Bool(true), ts(now, 2, "w"))),
    )
    .await;
    expect_ack(&mut writer, "3").await;
    assert!(matches!(next(&mut subscriber).await, Message::ServerEvent(e) if e.key == "c"));
}

#[tokio::test]
async fn the_same_key_converges_by_hlc_whatever_the_arrival_order() {
    let server = start(no_auth(), Some("shards = 3\n")).await;
    let mut a = connect_subscribed(&server, MAP).await;
    let mut b = connect_subscribed(&server, MAP).await;
    let now = now_ms();

    send(
        &mut a,
        &batch(vec![put(
            1,
            "k",
            Value::Str("from a".into()),
            ts(now, 5, "a"),
        )]),
    )
    .await;
    expect_ack(&mut a, "1").await;
    assert!(matches!(next(&mut b).await, Message::ServerEvent(_)));
    // B's write is older by HLC although it arrives later: acknowledged, but it loses.
    send(
        &mut b,
        &batch(vec![put(
            7,
            "k",
            Value::Str("from b".into()),
            ts(now, 4, "b"),
        )]),
    )
    .await;
    expect_ack(&mut b, "7").await;
    expect_quiet(&mut a).await;

    let mut fresh = connect(server.addr, "/").await;
    let leaf = lww_leaf(&mut fresh, MAP, "k").await;
    assert_eq!(leaf.len(), 1);
    assert_eq!(leaf["k"].value, Value::Str("from a".into()));
    assert_eq!(
        leaf["k"].timestamp,
        ts(now, 5, "a"),
        "the client timestamp is kept"
    );

    // Equal millis and counter: the node id breaks the tie, bytewise.
    send(
        &mut b,
        &batch(vec![put(8, "k", Value::Str("tie".into()), ts(now, 5, "b"))]),
    )
    .await;
    expect_ack(&mut b, "8").await;
    assert_eq!(
        lww_leaf(&mut fresh, MAP, "k").await["k"].value,
        Value::Str("tie".into())
    );
}

/// Everything the server holds in the leaf of `key`.
async fn lww_leaf(c: &mut Client, map: &str, key: &str) -> BTreeMap<String, LwwRecord> {
    let path = &topgun_core::hash::routing_path(key)[..3];
    send(c, &Message::MerkleReqBucket(bucket_req(map, path))).await;
    match next(c).await {
        Message::SyncRespLeaf(leaf) => {
            assert_eq!(leaf.path, path);
            leaf.records
                .into_iter()
                .map(|r| (r.key.to_string(), r.record))
                .collect()
        }
        other => panic!("expected SYNC_RESP_LEAF, got {other:?}"),
    }
}

#[tokio::test]
async fn removes_propagate_as_tombstones() {
    let server = start(no_auth(), None).await;
    let mut a = connect_subscribed(&server, MAP).await;
    let mut b = connect_subscribed(&server, MAP).await;
    let now = now_ms();
    send(
        &mut a,
        &batch(vec![put(1, "k", Value::Int(1), ts(now, 0, "a"))]),
    )
    .await;
    expect_ack(&mut a, "1").await;
    next(&mut b).await;
    send(&mut a, &batch(vec![remove(2, "k", ts(now, 1, "a"))])).await;
    expect_ack(&mut a, "2").await;
    match next(&mut b).await {
        Message::ServerEvent(e) => {
            assert_eq!(e.event_type, ServerEventType::Remove);
            let record = e.record.expect("a remove event carries its tombstone");
            assert!(record.is_tombstone());
            assert_eq!(record.timestamp, ts(now, 1, "a"));
        }
        other => panic!("expected SERVER_EVENT, got {other:?}"),
    }
    let leaf = lww_leaf(&mut b, MAP, "k").await;
    assert!(leaf["k"].is_tombstone(), "Merkle sync serves the tombstone");
    // A late put older than the remove does not resurrect the key.
    send(
        &mut a,
        &batch(vec![put(3, "k", Value::Int(9), ts(now, 0, "z"))]),
    )
    .await;
    expect_ack(&mut a, "3").await;
    assert!(lww_leaf(&mut b, MAP, "k").await["k"].is_tombstone());
}

/// A client replica walking the server's tree (PROTOCOL.md §6.3), counting what it moved.
#[derive(Debug, Default)]
struct SyncStats {
    round_trips: usize,
    leaf_requests: usize,
    records: usize,
}

async fn lww_sync(c: &mut Client, map: &str, local: &mut LwwMap) -> SyncStats {
    let mut stats = SyncStats {
        round_trips: 1,
        ..SyncStats::default()
    };
    if lww_root(c, map).await == local.merkle().root() {
        return stats;
    }
    let mut pending = vec![String::new()];
    while let Some(path) = pending.pop() {
        send(c, &Message::MerkleReqBucket(bucket_req(map, &path))).await;
        stats.round_trips += 1;
        match next(c).await {
            Message::SyncRespBuckets(b) => {
                for (digit, hash) in b.buckets {
                    let child = format!("{path}{digit}");
                    if local.merkle().node_hash(&child).unwrap() != hash {
                        pending.push(child);
                    }
                }
            }
            Message::SyncRespLeaf(leaf) => {
                stats.leaf_requests += 1;
                stats.records += leaf.records.len();
                for r in leaf.records {
                    local.merge(&r.key, r.record);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    stats
}

#[tokio::test]
async fn merkle_sync_moves_only_the_differing_leaves() {
    let server = start(no_auth(), Some("shards = 2\n")).await;
    let mut a = connect(server.addr, "/").await;
    let now = now_ms();
    let keys: Vec<String> = (0..300).map(|i| format!("item-{i}")).collect();
    let ops = keys
        .iter()
        .enumerate()
        .map(|(i, k)| put(i as u64 + 1, k, Value::Int(i as i64), ts(now, 0, "a")))
        .collect();
    send(&mut a, &batch(ops)).await;
    expect_ack(&mut a, "300").await;

    // Client C syncs everything, then goes offline.
    let mut c = connect(server.addr, "/").await;
    let mut replica = LwwMap::new();
    let first = lww_sync(&mut c, MAP, &mut replica).await;
    assert_eq!(first.records, 300);
    assert_eq!(replica.merkle().root(), lww_root(&mut c, MAP).await);
    drop(c);

    // Offline edits on both sides: A changes 3 keys on the server, C changes 2 locally.
    let changed = ["item-7", "item-150", "item-299"];
    let ops = changed
        .iter()
        .enumerate()
        .map(|(i, k)| {
            put(
                400 + i as u64,
                k,
                Value::Str("server edit".into()),
                ts(now, 1, "a"),
            )
        })
        .collect();
    send(&mut a, &batch(ops)).await;
    expect_ack(&mut a, "402").await;
    let local_edits = ["item-20", "item-21"];
    let mut c = connect(server.addr, "/").await;
    let mut flush = Vec::new();
    for (i, k) in local_edits.iter().enumerate() {
        let record = LwwRecord::new(Value::Str("client edit".into()), ts(now, 2, "c"), None);
        replica.merge(k, record.clone());
        flush.push(ClientOp {
            record: Field::Value(record),
            ..op(i as u64 + 1, k)
        });
    }
    // Reconnect: the op log is flushed first, then each map is synced (PROTOCOL.md §6.1).
    send(&mut c, &batch(flush)).await;
    expect_ack(&mut c, "2").await;
    let resync = lww_sync(&mut c, MAP, &mut replica).await;
    let differing_leaves: std::collections::BTreeSet<_> = changed
        .iter()
        .map(|k| topgun_core::hash::routing_path(k)[..3].to_owned())
        .collect();
    assert_eq!(resync.leaf_requests, differing_leaves.len(), "{resync:?}");
    let records_in_those_leaves: usize = differing_leaves
        .iter()
        .map(|p| replica.merkle().keys_in_bucket(p).unwrap().len())
        .sum();
    assert_eq!(resync.records, records_in_those_leaves);
    assert!(resync.records < 20, "a few leaves, not the map: {resync:?}");
    for k in changed {
        assert_eq!(replica.get(k, now), Some(&Value::Str("server edit".into())));
    }
    // Converged: the next sync is one round trip.
    let again = lww_sync(&mut c, MAP, &mut replica).await;
    assert_eq!((again.round_trips, again.records), (1, 0));
}

/// `SYNC_INIT` naming the last sync's time: the leaves sent before the root (the delta),
/// merged into `local`, and the root's hash and timestamp.
async fn sync_since(
    c: &mut Client,
    map: &str,
    since: u64,
    local: &mut LwwMap,
) -> (Vec<String>, u32, u64) {
    send(
        c,
        &Message::SyncInit(SyncInit {
            map_name: map.into(),
            last_sync_timestamp: Some(since),
        }),
    )
    .await;
    let mut delta = Vec::new();
    loop {
        match next(c).await {
            Message::SyncRespLeaf(leaf) => {
                for r in leaf.records {
                    assert_eq!(
                        topgun_core::hash::routing_path(&r.key)[..3],
                        *leaf.path,
                        "a delta leaf holds only its own keys"
                    );
                    delta.push(r.key.to_string());
                    local.merge(&r.key, r.record);
                }
            }
            Message::SyncRespRoot(root) => {
                delta.sort();
                return (delta, root.root_hash, root.timestamp.millis);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_resync_since_the_last_sync_moves_only_what_changed() {
    let server = start(no_auth(), Some("shards = 2\n")).await;
    let mut a = connect(server.addr, "/").await;
    // Written a minute ago, so that a write stamped ten seconds ago still wins.
    let then = now_ms() - 60_000;
    let ops = (0..300)
        .map(|i| put(i + 1, &format!("item-{i}"), Value::Int(0), ts(then, 0, "a")))
        .collect();
    send(&mut a, &batch(ops)).await;
    expect_ack(&mut a, "300").await;

    // A first sync (since 0) gets no delta: the whole map comes by the walk.
    let mut c = connect(server.addr, "/").await;
    let mut replica = LwwMap::new();
    let (delta, _, _) = sync_since(&mut c, MAP, 0, &mut replica).await;
    assert!(delta.is_empty());
    assert_eq!(lww_sync(&mut c, MAP, &mut replica).await.records, 300);
    let (_, root, last_sync) = sync_since(&mut c, MAP, 0, &mut replica).await;
    assert_eq!(root, replica.merkle().root());
    drop(c);

    // While C is away: two writes stamped after its last sync, and one by a client whose
    // clock is ten seconds behind, which a delta by time cannot see.
    let now = now_ms().max(last_sync);
    let ops = vec![
        put(400, "item-7", Value::Int(1), ts(now, 1, "a")),
        put(401, "item-150", Value::Int(1), ts(now, 2, "a")),
        put(402, "item-20", Value::Int(1), ts(now - 10_000, 0, "slow")),
    ];
    send(&mut a, &batch(ops)).await;
    expect_ack(&mut a, "402").await;

    let mut c = connect(server.addr, "/").await;
    let (delta, root, _) = sync_since(&mut c, MAP, last_sync, &mut replica).await;
    assert_eq!(delta, ["item-150", "item-7"]);
    // The late-stamped write leaves the roots apart: the walk fetches just its leaf.
    assert_ne!(root, replica.merkle().root());
    let walk = lww_sync(&mut c, MAP, &mut replica).await;
    assert_eq!(walk.leaf_requests, 1, "{walk:?}");
    assert_eq!(replica.get("item-20", now), Some(&Value::Int(1)));
    let (_, root, _) = sync_since(&mut c, MAP, 0, &mut replica).await;
    assert_eq!(root, replica.merkle().root());
}

/// Reads an `OP_ACK` and one event, which race each other; returns the event.
async fn ack_and_event(c: &mut Client, last_id: &str) -> ServerEvent {
    let mut event = None;
    let mut acked = false;
    while !(acked && event.is_some()) {
        match next(c).await {
            Message::OpAck(ack) if !acked => {
                assert_eq!(ack.last_id, last_id);
                acked = true;
            }
            Message::ServerEvent(e) if event.is_none() => event = Some(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    event.unwrap()
}

fn or_values(entry: &OrMapEntry) -> Vec<Value> {
    let mut values: Vec<Value> = entry.records.iter().map(|r| r.value.clone()).collect();
    values.sort_by(Value::canonical_cmp);
    values
}

async fn or_entry(c: &mut Client, map: &str, key: &str) -> OrMapEntry {
    send(
        c,
        &Message::OrMapDiffRequest(topgun_core::protocol::messages::OrMapDiffRequest {
            map_name: map.into(),
            keys: vec![key.to_owned()],
        }),
    )
    .await;
    match next(c).await {
        Message::OrMapDiffResponse(r) => r.entries.into_iter().next().unwrap(),
        other => panic!("expected ORMAP_DIFF_RESPONSE, got {other:?}"),
    }
}

#[tokio::test]
async fn or_map_adds_and_removes_across_clients() {
    let server = start(no_auth(), None).await;
    let mut a = connect(server.addr, "/").await;
    let mut b = connect(server.addr, "/").await;
    for c in [&mut a, &mut b] {
        send(c, &or_sync_init(MAP)).await;
        assert!(matches!(next(c).await, Message::OrMapSyncRespRoot(r) if r.root_hash == 0));
    }
    let now = now_ms();
    let x = or_record(Value::Str("x".into()), ts(now, 0, "a"));
    send(&mut a, &batch(vec![or_add(1, "tags", x.clone())])).await;
    expect_ack(&mut a, "1").await;
    match next(&mut b).await {
        Message::ServerEvent(e) => {
            assert_eq!(e.event_type, ServerEventType::OrAdd);
            assert_eq!(
                e.or_tag.as_deref(),
                Some(x.tag.as_str()),
                "the client's tag is kept"
            );
            assert_eq!(e.or_record.unwrap(), x);
        }
        other => panic!("expected OR_ADD, got {other:?}"),
    }
    // Concurrently: B removes x (the tag it observed) while A adds y.
    let y = or_record(Value::Str("y".into()), ts(now, 1, "a"));
    send(&mut b, &batch(vec![or_remove(1, "tags", &x.tag)])).await;
    send(&mut a, &batch(vec![or_add(2, "tags", y.clone())])).await;
    // Each side gets its ack and the other's event, in either order.
    let removed = ack_and_event(&mut a, "2").await;
    assert_eq!(removed.event_type, ServerEventType::OrRemove);
    assert_eq!(removed.or_tag.as_deref(), Some(x.tag.as_str()));
    assert_eq!(
        ack_and_event(&mut b, "1").await.event_type,
        ServerEventType::OrAdd
    );
    let entry = or_entry(&mut a, MAP, "tags").await;
    assert_eq!(or_values(&entry), vec![Value::Str("y".into())]);
    assert_eq!(entry.tombstones, vec![x.tag.clone()]);

    // A push (ORMAP_PUSH_DIFF) merges without an OP_ACK; subscribers hear of what was new.
    let z = or_record(Value::Str("z".into()), ts(now, 2, "b"));
    let push = OrMapPushDiff {
        map_name: MAP.into(),
        entries: vec![OrMapEntry {
            key: "tags".into(),
            records: vec![y.clone(), z.clone()],
            tombstones: vec![x.tag.clone(), "1:0:a-tag-of-another-key".into()],
        }],
    };
    send(&mut b, &Message::OrMapPushDiff(push)).await;
    expect_quiet(&mut b).await;
    assert!(
        matches!(next(&mut a).await, Message::ServerEvent(e) if e.or_tag.as_deref() == Some(z.tag.as_str()))
    );
    expect_quiet(&mut a).await;
    let entry = or_entry(&mut a, MAP, "tags").await;
    assert_eq!(
        or_values(&entry),
        vec![Value::Str("y".into()), Value::Str("z".into())]
    );
    assert_eq!(
        entry.tombstones,
        vec![x.tag],
        "tombstones of other keys are not kept here"
    );

    // A fresh replica walking the OR tree ends with the server's root.
    let mut replica = OrMap::new();
    let root = or_sync(&mut a, MAP, &mut replica).await;
    assert_eq!(replica.merkle().root(), root);
    assert_ne!(root, 0);
}

/// Walks the server's OR tree into `replica`; returns the server root.
async fn or_sync(c: &mut Client, map: &str, replica: &mut OrMap) -> u32 {
    send(c, &or_sync_init(map)).await;
    let Message::OrMapSyncRespRoot(root) = next(c).await else {
        panic!("expected ORMAP_SYNC_RESP_ROOT")
    };
    let mut pending = vec![String::new()];
    while let Some(path) = pending.pop() {
        send(c, &Message::OrMapMerkleReqBucket(bucket_req(map, &path))).await;
        match next(c).await {
            Message::OrMapSyncRespBuckets(b) => {
                for (digit, hash) in b.buckets {
                    let child = format!("{path}{digit}");
                    if replica.merkle().node_hash(&child).unwrap() != hash {
                        pending.push(child);
                    }
                }
            }
            Message::OrMapSyncRespLeaf(leaf) => {
                for entry in leaf.entries {
                    replica.merge_key(entry);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    root.root_hash
}

#[tokio::test]
async fn refused_ops_are_rejected_one_by_one_and_the_rest_apply() {
    let server = start(no_auth(), None).await;
    let mut c = connect(server.addr, "/").await;
    let now = now_ms();
    let reserved = ClientOp {
        map_name: "_topgun_devices".into(),
        ..put(1, "k", Value::Int(1), ts(now, 0, "c"))
    };
    let future = put(2, "k", Value::Int(2), ts(now + 3_600_000, 0, "c"));
    let empty = op(3, "k");
    let good = put(4, "k", Value::Int(4), ts(now, 0, "c"));
    send(&mut c, &batch(vec![reserved, future, empty, good])).await;
    let mut rejected = Vec::new();
    for _ in 0..3 {
        match next(&mut c).await {
            Message::OpRejected(r) => rejected.push((r.op_id.to_string(), r.code, r.reason)),
            other => panic!("expected OP_REJECTED, got {other:?}"),
        }
    }
    assert_eq!(rejected[0].0, "1");
    assert_eq!(rejected[0].1, Some(403));
    assert!(
        rejected[1].2.contains("ahead of the server clock"),
        "{rejected:?}"
    );
    assert!(rejected[2].2.contains("no record"), "{rejected:?}");
    // The reserved-map refusal is summed up in an ERROR before the ack (COMPAT §4.1); the
    // other two are not refusals of access.
    let why = expect_error(&mut c, 403).await;
    assert_eq!(why, "write access denied for map: _topgun_devices");
    // The future op will be accepted once the server clock reaches it: the ack stops
    // before it, so the client keeps it (and the ops after it) and sends them again.
    expect_ack(&mut c, "1").await;
    assert_eq!(lww_leaf(&mut c, MAP, "k").await["k"].value, Value::Int(4));
    let future_only = put(5, "k", Value::Int(5), ts(now + 3_600_000, 0, "c"));
    send(&mut c, &batch(vec![future_only])).await;
    assert!(matches!(next(&mut c).await, Message::OpRejected(r) if r.op_id == "5"));
    expect_quiet(&mut c).await;

    // Bad sync requests get precise errors and change nothing.
    send(&mut c, &Message::MerkleReqBucket(bucket_req(MAP, "xyz"))).await;
    assert!(expect_error(&mut c, 400).await.contains("xyz"));
    send(&mut c, &sync_init("__topgun_policies")).await;
    expect_error(&mut c, 403).await;
    send(&mut c, &ping(1)).await;
    expect_pong(&mut c, 1).await;
}

#[tokio::test]
async fn replies_keep_request_order_when_pipelined() {
    let server = start(no_auth(), Some("shards = 4\n")).await;
    let mut c = connect(server.addr, "/").await;
    let now = now_ms();
    let ops = (0..50)
        .map(|i| {
            put(
                i + 1,
                &format!("k{i}"),
                Value::Int(i as i64),
                ts(now, 0, "c"),
            )
        })
        .collect();
    // Sent back to back, without waiting for any reply.
    send(&mut c, &batch(ops)).await;
    send(&mut c, &sync_init(MAP)).await;
    send(&mut c, &ping(1)).await;
    send(&mut c, &Message::MerkleReqBucket(bucket_req(MAP, ""))).await;
    send(&mut c, &ping(2)).await;
    expect_ack(&mut c, "50").await;
    assert!(matches!(next(&mut c).await, Message::SyncRespRoot(r) if r.root_hash != 0));
    expect_pong(&mut c, 1).await;
    assert!(matches!(next(&mut c).await, Message::SyncRespBuckets(b) if !b.buckets.is_empty()));
    expect_pong(&mut c, 2).await;
}

#[tokio::test]
async fn records_survive_a_restart_over_the_same_store() {
    let store = Arc::new(MemoryStore::new());
    let now = now_ms();
    let (root, or_root) = {
        let mut server = start_with_store(no_auth(), None, store.clone()).await;
        let mut c = connect(server.addr, "/").await;
        let x = or_record(Value::Str("x".into()), ts(now, 0, "c"));
        let ops = vec![
            put(1, "kept", Value::Int(1), ts(now, 0, "c")),
            put(2, "gone", Value::Int(2), ts(now, 0, "c")),
            remove(3, "gone", ts(now, 1, "c")),
            or_add(4, "set", x),
        ];
        send(&mut c, &batch(ops)).await;
        expect_ack(&mut c, "4").await;
        let root = lww_root(&mut c, MAP).await;
        send(&mut c, &or_sync_init(MAP)).await;
        let Message::OrMapSyncRespRoot(or_root) = next(&mut c).await else {
            panic!()
        };
        server.stop.take().unwrap().send(()).unwrap();
        drop(c);
        server.task.await.unwrap().unwrap();
        (root, or_root.root_hash)
    };
    assert_eq!(store.len(), 3);
    let server = start_with_store(no_auth(), Some("shards = 3\n"), store).await;
    let mut c = connect(server.addr, "/").await;
    assert_eq!(lww_root(&mut c, MAP).await, root);
    send(&mut c, &or_sync_init(MAP)).await;
    assert!(matches!(next(&mut c).await, Message::OrMapSyncRespRoot(r) if r.root_hash == or_root));
    assert!(lww_leaf(&mut c, MAP, "gone").await["gone"].is_tombstone());
}

#[tokio::test]
async fn a_slow_subscriber_is_closed_and_the_writer_is_not_held_up() {
    let server = start(no_auth(), Some("outbound_queue_len = 4\n")).await;
    let mut writer = connect(server.addr, "/").await;
    let mut slow = connect_subscribed(&server, MAP).await;
    let mut healthy = connect_subscribed(&server, MAP).await;
    let now = now_ms();
    let big = Value::Str("x".repeat(60_000).into());
    // The slow subscriber reads nothing while ~24 MB of events are published.
    let mut drained = 0;
    for i in 0..400u64 {
        let ops = vec![put(i + 1, &format!("k{i}"), big.clone(), ts(now, 0, "w"))];
        send(&mut writer, &batch(ops)).await;
        expect_ack(&mut writer, &(i + 1).to_string()).await;
        // The healthy subscriber keeps up.
        while drained <= i {
            assert!(matches!(next(&mut healthy).await, Message::ServerEvent(_)));
            drained += 1;
        }
    }
    // What was queued before the kick arrives, then the close frame (1013).
    let mut events = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), recv(&mut slow)).await {
            Ok(Ok(Message::ServerEvent(_))) => events += 1,
            Ok(Err(code)) => break code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(1013), "after {events} events");
    assert!(
        events < 400,
        "the slow subscriber was cut off, not buffered: {events}"
    );
    let metrics = http_get_async(server.addr, "/metrics").await.1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("topgun_outbound_queue_drops_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    expect_quiet(&mut healthy).await;
}

#[tokio::test]
async fn a_large_batch_reaches_a_subscriber_without_overflowing_it() {
    let server = start(no_auth(), Some("outbound_queue_len = 8\n")).await;
    let mut writer = connect(server.addr, "/").await;
    let mut subscriber = connect_subscribed(&server, MAP).await;
    let now = now_ms();
    let ops = (0..2000)
        .map(|i| {
            put(
                i + 1,
                &format!("k{i}"),
                Value::Int(i as i64),
                ts(now, 0, "w"),
            )
        })
        .collect();
    send(&mut writer, &batch(ops)).await;
    expect_ack(&mut writer, "2000").await;
    let events = recv_events(&mut subscriber, 2000).await;
    assert!(events.iter().all(|e| e.event_type == ServerEventType::Put));
    expect_quiet(&mut subscriber).await;
}

#[tokio::test]
async fn a_writer_hears_of_other_writes_to_its_maps_without_syncing() {
    let server = start(no_auth(), None).await;
    let mut a = connect(server.addr, "/").await;
    let mut b = connect(server.addr, "/").await;
    let now = now_ms();
    send(
        &mut a,
        &batch(vec![put(1, "x", Value::Int(1), ts(now, 0, "a"))]),
    )
    .await;
    expect_ack(&mut a, "1").await;
    send(
        &mut b,
        &batch(vec![put(1, "y", Value::Int(2), ts(now, 1, "b"))]),
    )
    .await;
    expect_ack(&mut b, "1").await;
    let [event] = &recv_events(&mut a, 1).await[..] else {
        panic!()
    };
    assert_eq!(event.key, "y");
    expect_quiet(&mut b).await;
}

#[tokio::test]
async fn old_tombstones_are_pruned_and_clients_told() {
    let server = start(
        no_auth(),
        Some("tombstone_ttl_ms = 300\ngc_interval_ms = 100\n"),
    )
    .await;
    let mut a = connect_subscribed(&server, MAP).await;
    let now = now_ms();
    let ops = vec![
        put(1, "gone", Value::Int(1), ts(now, 0, "a")),
        remove(2, "gone", ts(now, 1, "a")),
        put(3, "kept", Value::Int(3), ts(now, 0, "a")),
    ];
    send(&mut a, &batch(ops)).await;
    expect_ack(&mut a, "3").await;
    assert!(lww_leaf(&mut a, MAP, "gone").await["gone"].is_tombstone());
    // Connections are told each new horizon; wait for one past the tombstone.
    loop {
        match recv_any(&mut a).await.unwrap() {
            Message::GcPrune(p) if p.older_than > ts(now, 1, "a") => break,
            Message::GcPrune(_) => {}
            other => panic!("expected GC_PRUNE, got {other:?}"),
        }
    }
    assert!(
        !lww_leaf(&mut a, MAP, "gone").await.contains_key("gone"),
        "tombstone pruned"
    );
    assert_eq!(
        lww_leaf(&mut a, MAP, "kept").await["kept"].value,
        Value::Int(3)
    );
    // The root is what a replica holding the remaining records computes.
    let mut replica = LwwMap::new();
    let synced = lww_sync(&mut a, MAP, &mut replica).await;
    assert_eq!(synced.records, 1);
    assert_eq!(replica.merkle().root(), lww_root(&mut a, MAP).await);
}

#[tokio::test]
async fn the_horizon_follows_the_handshake_reply() {
    let server = start(
        no_auth(),
        Some("tombstone_ttl_ms = 300\ngc_interval_ms = 50\n"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A TS client without a token sends DEVICE_HELLO and waits for DEVICE_ACK: it must come
    // before the GC_PRUNE every connection is told once a horizon exists.
    let mut c = connect(server.addr, "/ws").await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let hello = topgun_core::protocol::messages::DeviceHello { device_token: None };
    send(&mut c, &Message::DeviceHello(hello)).await;
    assert!(
        matches!(recv_any(&mut c).await, Ok(Message::DeviceAck(_))),
        "DEVICE_ACK first"
    );
    assert!(matches!(recv_any(&mut c).await, Ok(Message::GcPrune(_))));
}

#[tokio::test]
async fn metrics_count_ops_and_merkle_requests() {
    let server = start(no_auth(), None).await;
    let mut c = connect(server.addr, "/").await;
    let now = now_ms();
    send(
        &mut c,
        &batch(vec![
            put(1, "a", Value::Int(1), ts(now, 0, "c")),
            remove(2, "a", ts(now, 1, "c")),
        ]),
    )
    .await;
    expect_ack(&mut c, "2").await;
    lww_root(&mut c, MAP).await;
    let text = http_get_async(server.addr, "/metrics").await.1;
    for line in [
        "topgun_ops_total{type=\"PUT\"} 1",
        "topgun_ops_total{type=\"REMOVE\"} 1",
        "topgun_merkle_requests_total{kind=\"lww\"} 1",
        "topgun_op_batch_seconds_count 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        !text.contains("topgun_wal_sync_seconds"),
        "a server without a log reports no log syncs"
    );
}

#[tokio::test]
async fn metrics_report_the_log_s_syncs_size_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), None).await;
    let mut c = connect(server.addr, "/").await;
    send(
        &mut c,
        &batch(vec![put(1, "a", Value::Int(1), ts(now_ms(), 0, "c"))]),
    )
    .await;
    match next(&mut c).await {
        Message::OpAck(ack) => assert_eq!(ack.achieved_level, Some(WriteConcern::Persisted)),
        other => panic!("expected OP_ACK, got {other:?}"),
    }
    let text = http_get_async(server.addr, "/metrics").await.1;
    // The acknowledged write waited for at least one sync; recovery and start-up may add more.
    let syncs = metric(&text, "topgun_wal_sync_seconds_count ");
    assert!(syncs.is_some_and(|n| n >= 1), "no log syncs in\n{text}");
    assert!(text.contains("# TYPE topgun_wal_sync_seconds histogram"));
    assert!(
        metric(&text, "topgun_wal_bytes ").is_some_and(|n| n > 0),
        "{text}"
    );

    // The checkpointer stores the write (one entry, and the journal row of its event).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get_async(server.addr, "/metrics").await.1;
        let stored = metric(&text, "topgun_checkpoint_entries_total ");
        let writes = metric(&text, "topgun_checkpoint_seconds_count ");
        if stored.is_some_and(|n| n >= 2) && writes.is_some_and(|n| n >= 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the first line of `text` starting with `prefix`.
fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|n| n.parse().ok())
}

// ---- Roots equal to the TS client's -----------------------------------------------------

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s.as_str()),
        Value::Array(items) => items.iter().map(value_json).collect(),
        Value::Map(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.to_string(), value_json(v)))
                .collect(),
        ),
        other => panic!("not used in this data set: {other:?}"),
    }
}

fn obj(entries: &[(&str, Value)]) -> Value {
    Value::Map(ValueMap::from_entries(
        entries
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    ))
}

/// The data set: keys with non-ASCII characters, nested objects whose inner keys the TS
/// allow-list drops, arrays, floats, TTLs and several records per OR key.
fn data_set(now: u64) -> (Vec<ClientOp>, serde_json::Value) {
    let values = [
        Value::Str("plain".into()),
        Value::Int(-42),
        Value::Float(1.5),
        Value::Float(1e21),
        Value::Bool(false),
        obj(&[
            ("b", Value::Int(1)),
            ("a", obj(&[("c", Value::Int(2)), ("a", Value::Int(3))])),
        ]),
        Value::Array(vec![obj(&[("x", Value::Int(1))]), Value::Int(2)]),
        Value::Str("ünïcødé 😀".into()),
    ];
    let mut ops = Vec::new();
    let (mut lww, mut or) = (Vec::new(), Vec::new());
    for i in 0..120u32 {
        let key = if i % 7 == 0 {
            format!("ключ-{i}-😀")
        } else {
            format!("key-{i}")
        };
        let node = if i % 2 == 0 { "client-a" } else { "client-b" };
        let at = ts(now - u64::from(i), i % 5, node);
        let value = values[i as usize % values.len()].clone();
        ops.push(put(ops.len() as u64 + 1, &key, value.clone(), at.clone()));
        // Every fifth key is removed again: its tombstone is what both sides hash.
        let at = if i % 5 == 0 {
            let removed = ts(at.millis, 10, node);
            ops.push(remove(ops.len() as u64 + 1, &key, removed.clone()));
            removed
        } else {
            at
        };
        lww.push(json!({"key": key, "millis": at.millis, "counter": at.counter, "nodeId": node}));
        let mut records = Vec::new();
        for j in 0..=(i % 3) {
            let at = ts(now - u64::from(i), j, node);
            let mut record = or_record(values[(i + j) as usize % values.len()].clone(), at.clone());
            if j == 1 {
                record.ttl_ms = Some(86_400_000);
            }
            let mut rec_json = json!({
                "tag": record.tag, "value": value_json(&record.value),
                "millis": at.millis, "counter": at.counter, "nodeId": node,
            });
            if let Some(ttl) = record.ttl_ms {
                rec_json["ttlMs"] = json!(ttl);
            }
            let tag = record.tag.clone();
            ops.push(or_add(ops.len() as u64 + 1, &key, record));
            // Some first adds are removed again (a key may be left with tombstones only).
            if i % 4 == 1 && j == 0 {
                ops.push(or_remove(ops.len() as u64 + 1, &key, &tag));
            } else {
                records.push(rec_json);
            }
        }
        or.push(json!({"key": key, "records": records}));
    }
    (ops, json!({"lww": lww, "or": or}))
}

fn ts_client_roots(data: &serde_json::Value) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/protocol-vectors/merkle-root.mjs"
    );
    let mut child = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test needs Node.js (`node`) on the PATH: install Node 20 or newer");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "node failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Buckets with a non-zero hash. Zero-hash children are listed differently by design (we
/// list a child while it holds keys, even tombstone-only ones; the client keeps emptied
/// nodes) and never trigger a request either way, since a missing child counts as 0.
fn buckets_json(buckets: &BTreeMap<String, u32>) -> serde_json::Value {
    buckets
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect()
}

fn nonzero(buckets: &serde_json::Value) -> serde_json::Value {
    buckets
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn roots_and_buckets_equal_the_ts_clients_for_the_same_data() {
    let server = start(no_auth(), Some("shards = 3\n")).await;
    let mut c = connect(server.addr, "/").await;
    let (ops, data) = data_set(now_ms());
    let last = ops.len().to_string();
    send(&mut c, &batch(ops)).await;
    expect_ack(&mut c, &last).await;
    let expected = ts_client_roots(&data);

    assert_eq!(json!(lww_root(&mut c, MAP).await), expected["lww"]["root"]);
    send(&mut c, &Message::MerkleReqBucket(bucket_req(MAP, ""))).await;
    let Message::SyncRespBuckets(b) = next(&mut c).await else {
        panic!("expected SYNC_RESP_BUCKETS")
    };
    assert_eq!(
        buckets_json(&b.buckets),
        nonzero(&expected["lww"]["buckets"])
    );

    send(&mut c, &or_sync_init(MAP)).await;
    let Message::OrMapSyncRespRoot(root) = next(&mut c).await else {
        panic!("expected ORMAP_SYNC_RESP_ROOT")
    };
    assert_eq!(json!(root.root_hash), expected["or"]["root"]);
    send(&mut c, &Message::OrMapMerkleReqBucket(bucket_req(MAP, ""))).await;
    let Message::OrMapSyncRespBuckets(b) = next(&mut c).await else {
        panic!("expected ORMAP_SYNC_RESP_BUCKETS")
    };
    assert_eq!(
        buckets_json(&b.buckets),
        nonzero(&expected["or"]["buckets"])
    );
    assert_ne!(root.root_hash, 0);
}
