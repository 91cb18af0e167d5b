//! Cross-node reads on real `topgun-server` processes (CLUSTER.md §9, §18 step 4): Merkle sync
//! and a live query from any member answer as a single node does for the same writes; an
//! event written through one member reaches a subscriber on another — not the writer — with
//! its latency reported; topic messages reach subscribers on every member; a counter synced
//! through every member reads as on a single node; a lock is held by one client across all
//! members, its fencing tokens increasing; OR entries pushed through one member reach their
//! owners; HTTP sync's deltas through any member hold every member's records, and the admin
//! API's counts count them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{ask_lock, granted, metric, three_members};
use common::{
    Client, binary, connect, http_post_async, json_call, now_ms, op_batch, or_add_op, or_remove_op,
    put_op, read_map, recv_any, send, serve_binary,
};
use topgun_core::protocol::Limits;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::{ChangeType, PredicateOp, SortDirection};
use topgun_core::protocol::http::{HttpSyncRequest, HttpSyncResponse, SyncMapRequest, SyncSince};
use topgun_core::protocol::messages::{
    ClientOp, CounterRequest, CounterState, LockRelease, MerkleReqBucket, OrMapDiffRequest,
    OrMapPushDiff, OrMapSyncInit, QuerySub, SyncInit, TopicPub, TopicRef,
};
use topgun_core::protocol::query::{PredicateNode, Query, Sort, SortField};
use topgun_core::protocol::{decode_standalone, encode_standalone};
use topgun_core::{LwwRecord, NodeId, OrMapEntry, OrRecord, PnCounter, Timestamp, Value};

/// A single node, memory-backed, run in `cwd`.
fn single_node(cwd: &std::path::Path) -> common::Served {
    serve_binary(
        binary()
            .current_dir(cwd)
            .env("TOPGUN_NO_AUTH", "true")
            .env("STORAGE_BACKEND", "null"),
    )
}

/// The writes both deployments get: LWW puts and deletes on `todos`, OR adds and a remove
/// on `tags`, all stamped by one client clock.
fn ops() -> Vec<ClientOp> {
    let node = NodeId::new("writer").unwrap();
    let at = now_ms();
    let ts = |i: u64| Timestamp::new(at, u32::try_from(i).unwrap(), node.clone());
    let mut ops: Vec<ClientOp> = (0..300)
        .map(|i| put_op(i + 1, "todos", &format!("k{i}"), Value::from(i), ts(i)))
        .collect();
    for i in (0..300).step_by(7) {
        let mut delete = put_op(
            1000 + i,
            "todos",
            &format!("k{i}"),
            Value::Nil,
            ts(1000 + i),
        );
        delete.op_type = Some("REMOVE".into());
        delete.record = topgun_core::protocol::wire::Field::Value(
            topgun_core::LwwRecord::tombstone(ts(1000 + i)),
        );
        ops.push(delete);
    }
    for i in 0..60 {
        let record = OrRecord {
            value: Value::from(i),
            timestamp: ts(2000 + i),
            tag: format!("t{i}"),
            ttl_ms: None,
        };
        ops.push(or_add_op(2000 + i, "tags", &format!("g{}", i % 20), record));
    }
    ops.push(or_remove_op(3000, "tags", "g3", "t3"));
    ops
}

/// Sends `ops` as one batch and waits for its ack.
async fn write(addr: SocketAddr, ops: Vec<ClientOp>) {
    let mut c = connect(addr, "/").await;
    let last = ops.last().unwrap().id.clone().unwrap();
    send(&mut c, &op_batch(ops)).await;
    loop {
        match recv_any(&mut c).await.unwrap() {
            Message::OpAck(ack) => {
                assert_eq!(ack.last_id, last);
                return;
            }
            Message::OpRejected(r) => panic!("rejected: {r:?}"),
            Message::Error(e) => panic!("error: {e:?}"),
            _ => {}
        }
    }
}

/// The first reply of `c` that `pick` accepts.
async fn reply<T>(c: &mut Client, pick: impl Fn(Message) -> Option<T>) -> T {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), recv_any(c))
            .await
            .expect("a reply within 10 s")
            .expect("the connection stays open");
        if let Message::Error(e) = &msg {
            panic!("error: {e:?}");
        }
        if let Some(found) = pick(msg) {
            return found;
        }
    }
}

/// What a client syncing at `addr` is told: both roots, the root's buckets, one leaf's
/// records (sorted), and some OR entries.
async fn sync_view(
    addr: SocketAddr,
    leaf: &str,
) -> (u32, u32, Vec<(String, u32)>, Vec<String>, String) {
    let mut c = connect(addr, "/").await;
    let init = SyncInit {
        map_name: "todos".into(),
        last_sync_timestamp: None,
    };
    send(&mut c, &Message::SyncInit(init)).await;
    let lww_root = reply(&mut c, |m| match m {
        Message::SyncRespRoot(r) => Some(r.root_hash),
        _ => None,
    })
    .await;
    let init = OrMapSyncInit {
        map_name: "tags".into(),
        root_hash: 0,
        bucket_hashes: BTreeMap::new(),
        last_sync_timestamp: None,
        claimed_epoch: None,
    };
    send(&mut c, &Message::OrMapSyncInit(init)).await;
    let or_root = reply(&mut c, |m| match m {
        Message::OrMapSyncRespRoot(r) => Some(r.root_hash),
        _ => None,
    })
    .await;
    let bucket = |path: &str| MerkleReqBucket {
        map_name: "todos".into(),
        path: path.into(),
    };
    send(&mut c, &Message::MerkleReqBucket(bucket(""))).await;
    let buckets = reply(&mut c, |m| match m {
        Message::SyncRespBuckets(b) => Some(b.buckets.into_iter().collect()),
        _ => None,
    })
    .await;
    send(&mut c, &Message::MerkleReqBucket(bucket(leaf))).await;
    let mut records: Vec<String> = reply(&mut c, |m| match m {
        Message::SyncRespLeaf(l) => Some(
            l.records
                .iter()
                .map(|r| format!("{}={:?}", r.key, r.record.value))
                .collect(),
        ),
        _ => None,
    })
    .await;
    records.sort();
    let keys = ["g0", "g3", "nothing", "g19"].map(String::from).to_vec();
    let diff = OrMapDiffRequest {
        map_name: "tags".into(),
        keys,
    };
    send(&mut c, &Message::OrMapDiffRequest(diff)).await;
    let entries = reply(&mut c, |m| match m {
        Message::OrMapDiffResponse(d) => Some(format!("{:?}", d.entries)),
        _ => None,
    })
    .await;
    (lww_root, or_root, buckets, records, entries)
}

/// The leaf path of `key` (its routing path's first three digits).
fn leaf_of(key: &str) -> String {
    topgun_core::hash::routing_path(key)[..3].to_owned()
}

#[tokio::test]
async fn sync_from_any_member_equals_a_single_node_for_the_same_writes() {
    let (cwd, members) = three_members().await;
    let single = single_node(cwd.path());
    let ops = ops();
    write(single.addr, ops.clone()).await;
    write(members[1].served.addr, ops).await;
    let leaf = leaf_of("k5");
    let expected = sync_view(single.addr, &leaf).await;
    assert_ne!(expected.0, 0, "the single node holds records");
    assert!(!expected.3.is_empty(), "the leaf holds k5");
    for m in &members {
        let view = sync_view(m.served.addr, &leaf).await;
        assert_eq!(view, expected, "{} answers as the single node does", m.name);
    }
    // Every record, read leaf by leaf from one member, equals the single node's.
    let whole = read_map(single.addr, "todos").await;
    assert_eq!(whole.len(), 300);
    assert_eq!(read_map(members[2].served.addr, "todos").await, whole);
}

/// The one delta of `map` that `POST /sync` at `addr` answers from `since`: each record
/// as `(key, record)`, and the timestamp to ask from next.
async fn http_delta(
    addr: SocketAddr,
    map: &str,
    since: SyncSince,
) -> (Vec<(String, LwwRecord)>, Timestamp) {
    let ask = HttpSyncRequest {
        client_id: "http-client".into(),
        client_hlc: Timestamp::new(now_ms(), 0, NodeId::new("http-client").unwrap()),
        operations: None,
        sync_maps: Some(vec![SyncMapRequest {
            map_name: map.into(),
            last_sync_timestamp: since,
        }]),
        queries: None,
        searches: None,
    };
    let reply = http_post_async(addr, "/sync", vec![], encode_standalone(&ask)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let reply: HttpSyncResponse = decode_standalone(&reply.body, &Limits::default()).unwrap();
    assert_eq!(reply.errors, None);
    let mut deltas = reply.deltas.expect("a delta");
    assert_eq!(deltas.len(), 1);
    let delta = deltas.remove(0);
    let records = delta.records.into_iter();
    let records = records.map(|r| (r.key.to_string(), r.record)).collect();
    (records, delta.server_sync_timestamp)
}

/// The TS provider's first `lastSyncTimestamp`.
fn from_start() -> SyncSince {
    SyncSince {
        millis: 0,
        counter: 0,
        node_id: "".into(),
    }
}

fn since(at: &Timestamp) -> SyncSince {
    SyncSince {
        millis: at.millis,
        counter: at.counter,
        node_id: at.node_id.as_str().into(),
    }
}

fn sorted(mut records: Vec<(String, LwwRecord)>) -> Vec<(String, LwwRecord)> {
    records.sort_by(|a, b| a.0.cmp(&b.0));
    records
}

/// HTTP sync's deltas (COMPAT §2.2) read every member: the first delta through any member
/// holds a single node's records for the same writes; the cursor it hands back names the
/// cluster, and continued through another member returns exactly what was written since,
/// through a third; a delta cut at its bound continues through yet another member until
/// every record has been sent.
#[tokio::test]
async fn http_sync_deltas_from_any_member_hold_every_member_s_records() {
    let (cwd, members) = three_members().await;
    let single = single_node(cwd.path());
    let ops = ops();
    write(single.addr, ops.clone()).await;
    write(members[0].served.addr, ops).await;
    let (expected, _) = http_delta(single.addr, "todos", from_start()).await;
    assert_eq!(expected.len(), 300);
    let (first, cursor) = http_delta(members[1].served.addr, "todos", from_start()).await;
    assert_eq!(first.len(), 300, "every member's records");
    assert_eq!(sorted(first), sorted(expected), "a single node's records");
    assert!(
        cursor.node_id.as_str().starts_with("cluster-"),
        "{cursor:?} names the cluster"
    );

    let node = NodeId::new("writer").unwrap();
    let later: Vec<ClientOp> = (0..20)
        .map(|i| {
            let at = Timestamp::new(now_ms(), i, node.clone());
            put_op(
                5000 + u64::from(i),
                "todos",
                &format!("new{i}"),
                Value::from(i),
                at,
            )
        })
        .collect();
    write(members[2].served.addr, later).await;
    let (next, _) = http_delta(members[0].served.addr, "todos", since(&cursor)).await;
    let keys: BTreeSet<String> = next.into_iter().map(|(k, _)| k).collect();
    let new: BTreeSet<String> = (0..20).map(|i| format!("new{i}")).collect();
    assert_eq!(
        keys, new,
        "exactly what was written since, nothing sent again"
    );

    // More records than one delta holds, written through every member.
    for (batch, member) in (0..21u64).zip(members.iter().cycle()) {
        let bulk: Vec<ClientOp> = (0..500u64)
            .map(|i| {
                let n = batch * 500 + i;
                let at = Timestamp::new(now_ms(), 0, node.clone());
                put_op(n + 1, "bulk", &format!("b{n}"), Value::from(n), at)
            })
            .collect();
        write(member.served.addr, bulk).await;
    }
    let mut seen = BTreeSet::new();
    let mut from = from_start();
    for (page, member) in (0..4).zip(members.iter().cycle()) {
        let (records, cursor) = http_delta(member.served.addr, "bulk", from).await;
        assert!(records.len() <= 10_000);
        if page == 0 {
            assert_eq!(records.len(), 10_000, "the first delta is cut at its bound");
            assert_ne!(
                cursor.counter, 0,
                "a cut delta's cursor is its last record's place"
            );
        }
        seen.extend(records.into_iter().map(|(k, _)| k));
        from = since(&cursor);
        if cursor.counter == 0 {
            break;
        }
    }
    assert_eq!(from.counter, 0, "the pages end");
    assert_eq!(seen.len(), 10_500, "every record, page by page");
}

/// The admin API's counts read every member: the maps catalog from any member lists a single
/// node's maps and counts for the same writes, and a new index's entry count counts the
/// records of every member.
#[tokio::test]
async fn admin_counts_from_any_member_count_every_member_s_records() {
    let (cwd, members) = three_members().await;
    let single = single_node(cwd.path());
    let mut ops = ops();
    let node = NodeId::new("writer").unwrap();
    for i in 0..90u64 {
        let mut doc = vec![("name", Value::from(format!("p{i}")))];
        if i % 3 != 0 {
            doc.push(("city", Value::from("Lisbon")));
        }
        let doc = Value::Map(doc.into_iter().collect());
        let at = Timestamp::new(now_ms(), 0, node.clone());
        ops.push(put_op(9000 + i, "people", &format!("p{i}"), doc, at));
    }
    write(single.addr, ops.clone()).await;
    write(members[2].served.addr, ops).await;
    let (status, expected) = json_call(single.addr, "GET", "/api/admin/maps", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(
        expected["maps"].as_array().map(Vec::len),
        Some(3),
        "{expected}"
    );
    for m in &members {
        let (status, catalog) = json_call(m.served.addr, "GET", "/api/admin/maps", &[], None).await;
        assert_eq!((status, &catalog), (200, &expected), "{}", m.name);
    }
    let index = serde_json::json!({"mapName": "people", "attribute": "city", "indexType": "hash"});
    let (status, created) = json_call(
        members[0].served.addr,
        "POST",
        "/api/admin/indexes",
        &[],
        Some(index),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["entryCount"], 60, "{created}");
}

/// Waits until `c` has been told of every key of `keys` (by `SERVER_EVENT` or a batch of
/// them); the keys it heard of.
async fn heard(c: &mut Client, keys: &BTreeSet<String>, within: Duration) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + within;
    while !keys.is_subset(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(next) = tokio::time::timeout(left, recv_any(c)).await else {
            break;
        };
        match next.unwrap() {
            Message::ServerEvent(e) => {
                seen.insert(e.key.to_string());
            }
            Message::ServerBatchEvent(b) => {
                seen.extend(b.events.iter().map(|e| e.key.to_string()));
            }
            _ => {}
        }
    }
    seen
}

/// A connection that has synced `todos` (and so receives its events).
async fn subscriber(addr: SocketAddr) -> Client {
    let mut c = connect(addr, "/").await;
    let init = SyncInit {
        map_name: "todos".into(),
        last_sync_timestamp: None,
    };
    send(&mut c, &Message::SyncInit(init)).await;
    reply(&mut c, |m| {
        matches!(m, Message::SyncRespRoot(_)).then_some(())
    })
    .await;
    c
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test]
async fn an_event_written_through_one_member_reaches_subscribers_on_every_other() {
    let (_cwd, members) = three_members().await;
    let mut on_first = subscriber(members[0].served.addr).await;
    let mut on_third = subscriber(members[2].served.addr).await;
    // The writer syncs too, so it would hear of others' writes: never of its own.
    let mut writer = subscriber(members[1].served.addr).await;
    let node = NodeId::new("w").unwrap();
    let keys: BTreeSet<String> = (0..60).map(|i| format!("e{i}")).collect();
    let ops = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let at = Timestamp::new(now_ms(), u32::try_from(i).unwrap(), node.clone());
            put_op(i as u64 + 1, "todos", k, Value::from(1), at)
        })
        .collect();
    send(&mut writer, &op_batch(ops)).await;
    for (name, c) in [("n1", &mut on_first), ("n3", &mut on_third)] {
        let seen = heard(c, &keys, Duration::from_secs(5)).await;
        assert_eq!(&seen, &keys, "a subscriber on {name} hears of every write");
    }
    let echoed = heard(&mut writer, &keys, Duration::from_millis(500)).await;
    assert!(
        echoed.is_empty(),
        "the writer is not told of its own writes: {echoed:?}"
    );

    // One write at a time through n2, heard on n1: the cross-member event latency.
    let mut latencies = Vec::new();
    for i in 0..200u32 {
        let key = format!("lat{i}");
        let at = Timestamp::new(now_ms(), i, node.clone());
        let started = Instant::now();
        send(
            &mut writer,
            &op_batch(vec![put_op(1, "todos", &key, Value::from(1), at)]),
        )
        .await;
        let want = BTreeSet::from([key]);
        assert_eq!(
            heard(&mut on_first, &want, Duration::from_secs(5)).await,
            want
        );
        latencies.push(started.elapsed());
    }
    // Relayed, never lost: no gap and nothing dropped anywhere.
    let (mut relayed, mut received) = (0, 0);
    for m in &members {
        assert_eq!(metric(m.served.addr, "topgun_cluster_relay_gaps_total"), 0);
        assert_eq!(
            metric(m.served.addr, "topgun_cluster_relay_dropped_total"),
            0
        );
        relayed += metric(
            m.served.addr,
            "topgun_cluster_relayed_total{what=\"event\"}",
        );
        received += metric(m.served.addr, "topgun_cluster_relay_received_total");
    }
    assert!(
        relayed > 0 && received > 0,
        "{relayed} relayed, {received} received"
    );
    latencies.sort();
    eprintln!(
        "cross-member event latency over {} writes: p50 {:?}, p99 {:?}",
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99)
    );
}

/// Records `{team, score}` for keys `p{first}..p{first + n}`, team `a` for even scores.
fn players(first: u64, n: u64, node: &NodeId) -> Vec<ClientOp> {
    (first..first + n)
        .map(|i| {
            let value = Value::Map(
                [
                    ("team", Value::from(if i % 2 == 0 { "a" } else { "b" })),
                    ("score", Value::from(i)),
                ]
                .into_iter()
                .collect(),
            );
            let at = Timestamp::new(now_ms(), u32::try_from(i).unwrap(), node.clone());
            put_op(i + 1, "players", &format!("p{i}"), value, at)
        })
        .collect()
}

/// Team `a`'s ten best by score, live.
fn top_ten(query_id: &str) -> Message {
    Message::QuerySub(QuerySub {
        query_id: query_id.into(),
        map_name: "players".into(),
        query: Query {
            predicate: Some(PredicateNode::leaf(PredicateOp::Eq, "team", "a".into())),
            sort: Some(Sort(vec![SortField {
                field: "score".into(),
                direction: SortDirection::Desc,
            }])),
            limit: Some(10),
            ..Query::default()
        },
        fields: None,
    })
}

/// A query's window as the client holds it: the `QUERY_RESP`, then each `QUERY_UPDATE`
/// applied, until `done` says the rows are what the test waits for.
struct Window {
    c: Client,
    rows: BTreeMap<String, Value>,
    first: Vec<String>,
}

impl Window {
    async fn subscribe(addr: SocketAddr) -> Self {
        let mut c = connect(addr, "/").await;
        send(&mut c, &top_ten("top")).await;
        let resp = reply(&mut c, |m| match m {
            Message::QueryResp(r) => Some(r),
            _ => None,
        })
        .await;
        let first = resp.results.iter().map(|r| r.key.to_string()).collect();
        let rows = resp
            .results
            .into_iter()
            .map(|r| (r.key.to_string(), r.value))
            .collect();
        Self { c, rows, first }
    }

    async fn until(&mut self, keys: &BTreeSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.rows.keys().cloned().collect::<BTreeSet<_>>() != *keys {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, recv_any(&mut self.c)).await;
            let next = next.unwrap_or_else(|_| panic!("rows {:?}, want {keys:?}", self.rows));
            if let Message::QueryUpdate(u) = next.unwrap() {
                match u.change_type {
                    ChangeType::Leave => self.rows.remove(u.key.as_str()),
                    _ => self.rows.insert(u.key.to_string(), u.value),
                };
            }
        }
    }
}

#[tokio::test]
async fn a_live_query_on_any_member_answers_and_follows_as_a_single_node() {
    let (cwd, members) = three_members().await;
    let single = single_node(cwd.path());
    let node = NodeId::new("w").unwrap();
    let before = players(0, 100, &node);
    write(single.addr, before.clone()).await;
    write(members[1].served.addr, before).await;
    let mut alone = Window::subscribe(single.addr).await;
    let mut on_first = Window::subscribe(members[0].served.addr).await;
    assert_eq!(alone.first.len(), 10);
    assert_eq!(
        on_first.first, alone.first,
        "the same QUERY_RESP rows, in order"
    );
    assert_eq!(on_first.rows, alone.rows);
    // Better scores written through another member enter; the window ends alike.
    let after = players(100, 40, &node);
    write(single.addr, after.clone()).await;
    write(members[2].served.addr, after).await;
    let best: BTreeSet<String> = (120..140).step_by(2).map(|i| format!("p{i}")).collect();
    alone.until(&best).await;
    on_first.until(&best).await;
    assert_eq!(on_first.rows, alone.rows);
}

/// A connection subscribed to `topic` (a `PING` answered after it: the subscription is in).
async fn topic_subscriber(addr: SocketAddr, topic: &str) -> Client {
    let mut c = connect(addr, "/").await;
    send(
        &mut c,
        &Message::TopicSub(TopicRef {
            topic: topic.into(),
        }),
    )
    .await;
    send(&mut c, &common::ping(1)).await;
    reply(&mut c, |m| matches!(m, Message::Pong(_)).then_some(())).await;
    c
}

/// The `data` of the topic messages `c` receives within `within`.
async fn topic_messages(c: &mut Client, within: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, recv_any(c)).await {
            Ok(Ok(Message::TopicMessage(m))) => out.push(m.data),
            Ok(Ok(_)) => {}
            Ok(Err(code)) => panic!("closed: {code:?}"),
            Err(_) => return out,
        }
    }
}

#[tokio::test]
async fn a_topic_message_published_on_one_member_reaches_subscribers_on_every_other() {
    let (_cwd, members) = three_members().await;
    let mut on_first = topic_subscriber(members[0].served.addr, "chat").await;
    let mut on_third = topic_subscriber(members[2].served.addr, "chat").await;
    let mut publisher = topic_subscriber(members[1].served.addr, "chat").await;
    // The interests reach every member on their own: wait until a message gets through.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = TopicPub {
            topic: "chat".into(),
            data: Value::from("probe"),
        };
        send(&mut publisher, &Message::TopicPub(probe)).await;
        let first = topic_messages(&mut on_first, Duration::from_millis(100)).await;
        let third = topic_messages(&mut on_third, Duration::from_millis(100)).await;
        if !first.is_empty() && !third.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no topic message crossed members"
        );
    }
    let sent: Vec<Value> = (0..20).map(Value::from).collect();
    for data in &sent {
        let publish = TopicPub {
            topic: "chat".into(),
            data: data.clone(),
        };
        send(&mut publisher, &Message::TopicPub(publish)).await;
    }
    let wait = Duration::from_millis(500);
    let strip = |got: Vec<Value>| -> Vec<Value> {
        got.into_iter()
            .filter(|v| *v != Value::from("probe"))
            .collect()
    };
    assert_eq!(
        strip(topic_messages(&mut on_first, wait).await),
        sent,
        "in order on n1"
    );
    assert_eq!(
        strip(topic_messages(&mut on_third, wait).await),
        sent,
        "in order on n3"
    );
    assert!(
        topic_messages(&mut publisher, wait).await.is_empty(),
        "the publisher is not sent its own messages"
    );
    // Unsubscribed on n1: nothing more reaches it, n3 still hears.
    send(
        &mut on_first,
        &Message::TopicUnsub(TopicRef {
            topic: "chat".into(),
        }),
    )
    .await;
    send(&mut on_first, &common::ping(2)).await;
    reply(&mut on_first, |m| {
        matches!(m, Message::Pong(_)).then_some(())
    })
    .await;
    let last = TopicPub {
        topic: "chat".into(),
        data: Value::from("last"),
    };
    send(&mut publisher, &Message::TopicPub(last)).await;
    assert_eq!(
        topic_messages(&mut on_third, wait).await,
        [Value::from("last")]
    );
    assert!(topic_messages(&mut on_first, wait).await.is_empty());
}

/// A PN state counting `up` for node `node` (and `down` against it).
fn counted(node: &str, up: f64, down: f64) -> PnCounter {
    let mut state = PnCounter::new();
    state.add(node, up).unwrap();
    if down > 0.0 {
        state.add(node, -down).unwrap();
    }
    state
}

/// Syncs `state` into counter `likes` at `c`; the value it is answered with (the first
/// update that holds what was synced: earlier ones tell of other clients' syncs).
async fn sync_counter(c: &mut Client, state: PnCounter) -> f64 {
    let sync = CounterState {
        name: "likes".into(),
        state: state.clone(),
    };
    send(c, &Message::CounterSync(sync)).await;
    let holds = |merged: &PnCounter| {
        let within = |ours: &BTreeMap<String, f64>, theirs: &BTreeMap<String, f64>| {
            ours.iter().all(|(node, n)| theirs.get(node) == Some(n))
        };
        within(state.positive(), merged.positive()) && within(state.negative(), merged.negative())
    };
    reply(c, |m| match m {
        Message::CounterUpdate(u) if holds(&u.state) => Some(u.state.value()),
        _ => None,
    })
    .await
}

/// The value `c` is answered with for counter `likes`.
async fn read_counter(c: &mut Client) -> f64 {
    let request = CounterRequest {
        name: "likes".into(),
    };
    send(c, &Message::CounterRequest(request)).await;
    reply(c, |m| match m {
        Message::CounterResponse(r) => Some(r.state.value()),
        _ => None,
    })
    .await
}

/// Waits until `c` is told counter `likes` reached `value`.
async fn told(c: &mut Client, value: f64) {
    reply(c, |m| match m {
        Message::CounterUpdate(u) if (u.state.value() - value).abs() < f64::EPSILON => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn a_counter_synced_through_every_member_reads_as_on_a_single_node() {
    let (cwd, members) = three_members().await;
    let single = single_node(cwd.path());
    let syncs = [
        (0, counted("a", 1.0, 0.0)),
        (1, counted("b", 2.0, 0.0)),
        (2, counted("c", 5.0, 0.0)),
        (0, counted("a", 3.0, 1.0)),
    ];
    let mut alone = connect(single.addr, "/").await;
    let mut last_alone = 0.0;
    for (_, state) in &syncs {
        last_alone = sync_counter(&mut alone, state.clone()).await;
    }
    assert!((last_alone - 9.0).abs() < f64::EPSILON, "{last_alone}");
    let mut clients = Vec::new();
    for m in &members {
        let mut c = connect(m.served.addr, "/").await;
        assert!(
            read_counter(&mut c).await.abs() < f64::EPSILON,
            "a new counter reads 0"
        );
        clients.push(c);
    }
    let mut last = 0.0;
    for (at, state) in syncs {
        last = sync_counter(&mut clients[at], state).await;
    }
    assert!(
        (last - last_alone).abs() < f64::EPSILON,
        "the last sync is answered with {last}"
    );
    // Every member's subscriber is told, and reads the single node's value.
    for c in &mut clients[1..] {
        told(c, last_alone).await;
    }
    for c in &mut clients {
        assert!((read_counter(c).await - last_alone).abs() < f64::EPSILON);
    }
}

#[tokio::test]
async fn a_lock_is_held_by_one_client_across_all_members_with_increasing_tokens() {
    let (_cwd, members) = three_members().await;
    let mut clients = Vec::new();
    for m in &members {
        clients.push(connect(m.served.addr, "/").await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        ask_lock(c, &format!("r{i}")).await;
    }
    let short = Duration::from_millis(700);
    let mut holders = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        if let Some(token) = granted(c, short).await {
            holders.push((i, token));
        }
    }
    assert_eq!(
        holders.len(),
        1,
        "one holder across the members: {holders:?}"
    );
    let (first, token) = holders[0];
    // Released: the next in line, on another member, gets a greater token.
    let release = LockRelease {
        request_id: Some("free".into()),
        name: "job".into(),
        fencing_token: token,
    };
    send(&mut clients[first], &Message::LockRelease(release)).await;
    let released = reply(&mut clients[first], |m| match m {
        Message::LockReleased(r) => Some(r.success),
        _ => None,
    })
    .await;
    assert!(released);
    let mut next = Vec::new();
    for (i, c) in clients.iter_mut().enumerate().filter(|(i, _)| *i != first) {
        if let Some(t) = granted(c, short).await {
            next.push((i, t));
        }
    }
    assert_eq!(next.len(), 1, "one next holder: {next:?}");
    assert!(
        next[0].1 > token,
        "tokens increase: {token} then {}",
        next[0].1
    );
    // Its connection closes: the last one in line is granted, with a greater token still.
    let (second, second_token) = next[0];
    let last = (0..3).find(|i| *i != first && *i != second).unwrap();
    drop(clients.remove(second));
    let last = if last > second { last - 1 } else { last };
    let third = granted(&mut clients[last], Duration::from_secs(5)).await;
    assert!(
        third.is_some_and(|t| t > second_token),
        "{third:?} after {second_token}"
    );
}

/// The OR root a client syncing `tags` at `addr` is told.
async fn or_root(addr: SocketAddr) -> u32 {
    let mut c = connect(addr, "/").await;
    let init = OrMapSyncInit {
        map_name: "tags".into(),
        root_hash: 0,
        bucket_hashes: BTreeMap::new(),
        last_sync_timestamp: None,
        claimed_epoch: None,
    };
    send(&mut c, &Message::OrMapSyncInit(init)).await;
    reply(&mut c, |m| match m {
        Message::OrMapSyncRespRoot(r) => Some(r.root_hash),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn or_entries_pushed_through_any_member_reach_their_owners() {
    let (cwd, members) = three_members().await;
    let single = single_node(cwd.path());
    let node = NodeId::new("p").unwrap();
    let entries: Vec<OrMapEntry> = (0..40)
        .map(|i| {
            let timestamp = Timestamp::new(now_ms(), i, node.clone());
            let record = OrRecord {
                value: Value::from(i64::from(i)),
                tag: timestamp.to_string(),
                timestamp,
                ttl_ms: None,
            };
            OrMapEntry {
                key: format!("g{i}"),
                records: vec![record],
                tombstones: Vec::new(),
            }
        })
        .collect();
    for addr in [single.addr, members[0].served.addr] {
        let mut c = connect(addr, "/").await;
        let push = OrMapPushDiff {
            map_name: "tags".into(),
            entries: entries.clone(),
        };
        send(&mut c, &Message::OrMapPushDiff(push)).await;
        // Not answered: a PING behind it says the push was taken.
        send(&mut c, &common::ping(1)).await;
        reply(&mut c, |m| matches!(m, Message::Pong(_)).then_some(())).await;
    }
    let expected = or_root(single.addr).await;
    assert_ne!(expected, 0);
    // Forwarded parts are merged off the pushing connection's path: wait a little for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    for m in &members {
        while or_root(m.served.addr).await != expected {
            assert!(
                Instant::now() < deadline,
                "{} never saw every pushed entry",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
