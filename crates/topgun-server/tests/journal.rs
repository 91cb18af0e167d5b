//! The event journal over real sockets, on the default durable path (write-ahead log and
//! redb), including replay after `kill -9` of the real binary.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::JournalEventType::{self, Delete, Put, Update};
use topgun_core::protocol::messages::{
    ClientOp, JournalEventData, JournalRead, JournalSubscribe, JournalUnsubscribe,
};
use topgun_core::protocol::wire::Field;
use topgun_core::{LwwRecord, NodeId, OrRecord, Timestamp, Value};

/// A client timestamp `offset` ms after a fixed point shortly before the test started.
fn at(offset: u64) -> Timestamp {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        u64::try_from(now.as_millis()).unwrap() - 10_000
    });
    Timestamp::new(base + offset, 0, NodeId::new("client-1").unwrap())
}

fn put(id: u64, map: &str, key: &str, value: i64, ts: Timestamp) -> ClientOp {
    put_op(id, map, key, Value::Int(value), ts)
}

fn remove(id: u64, map: &str, key: &str, ts: Timestamp) -> ClientOp {
    ClientOp {
        op_type: Some("REMOVE".into()),
        record: Field::Value(LwwRecord::tombstone(ts)),
        ..blank_op(id, map, key)
    }
}

fn or_record(value: &str, ts: Timestamp) -> OrRecord {
    OrRecord {
        value: Value::Str(value.into()),
        tag: ts.to_string(),
        timestamp: ts,
        ttl_ms: None,
    }
}

async fn durable(dir: &Path, file: Option<&str>) -> Running {
    start_durable(dir, file).await
}

async fn stop(mut server: Running) {
    let _ = server.stop.take().unwrap().send(());
    server.task.await.unwrap().unwrap();
}

/// Sends a batch and waits for its acknowledgement.
async fn write(c: &mut Client, ops: Vec<ClientOp>) {
    let last = ops.last().and_then(|op| op.id.clone()).unwrap();
    send(c, &op_batch(ops)).await;
    loop {
        match recv(c).await {
            Ok(Message::OpAck(ack)) if ack.last_id == last => return,
            Ok(Message::OpAck(_) | Message::ServerEvent(_) | Message::ServerBatchEvent(_)) => {}
            other => panic!("expected OP_ACK {last}, got {other:?}"),
        }
    }
}

fn read(request_id: &str, from: u64, limit: Option<u32>, map: Option<&str>) -> Message {
    Message::JournalRead(JournalRead {
        request_id: request_id.into(),
        from_sequence: from.to_string().into(),
        limit,
        map_name: map.map(Into::into),
    })
}

/// Every event from `from` on, page by page.
async fn read_all(c: &mut Client, from: u64, map: Option<&str>) -> Vec<JournalEventData> {
    let mut out: Vec<JournalEventData> = Vec::new();
    let mut next = from;
    loop {
        send(c, &read("r", next, Some(3), map)).await;
        let page = match recv(c).await {
            Ok(Message::JournalReadResponse(page)) => page,
            other => panic!("expected JOURNAL_READ_RESPONSE, got {other:?}"),
        };
        assert!(page.events.len() <= 3);
        if let Some(last) = page.events.last() {
            next = seq(last) + 1;
        }
        out.extend(page.events);
        if !page.has_more {
            return out;
        }
    }
}

fn seq(e: &JournalEventData) -> u64 {
    e.sequence.parse().unwrap()
}

fn summary(events: &[JournalEventData]) -> Vec<(JournalEventType, String, String, Option<Value>)> {
    events
        .iter()
        .map(|e| {
            (
                e.event_type,
                e.map_name.to_string(),
                e.key.to_string(),
                e.value.clone(),
            )
        })
        .collect()
}

fn strictly_increasing(events: &[JournalEventData]) {
    for pair in events.windows(2) {
        assert!(seq(&pair[0]) < seq(&pair[1]), "{pair:?}");
    }
}

#[tokio::test]
async fn every_write_is_journaled_in_order_and_read_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = durable(dir.path(), None).await;
    let mut c = connect(server.addr, "/ws").await;
    write(
        &mut c,
        vec![
            put(1, "todos", "a", 1, at(1)),
            put(2, "todos", "b", 2, at(2)),
        ],
    )
    .await;
    write(&mut c, vec![put(3, "todos", "a", 3, at(3))]).await;
    write(&mut c, vec![remove(4, "todos", "b", at(4))]).await;
    let added = or_record("x", at(5));
    let tag = added.tag.clone();
    let or_add = ClientOp {
        op_type: Some("OR_ADD".into()),
        or_record: Field::Value(added),
        ..blank_op(5, "tags", "t")
    };
    let or_remove = ClientOp {
        op_type: Some("OR_REMOVE".into()),
        or_tag: Field::Value(tag.into()),
        ..blank_op(6, "tags", "t")
    };
    write(&mut c, vec![or_add]).await;
    write(&mut c, vec![or_remove]).await;
    // A write that loses its merge changes nothing and is not journaled.
    write(&mut c, vec![put(7, "todos", "a", 0, at(0))]).await;

    let events = read_all(&mut c, 0, None).await;
    strictly_increasing(&events);
    let (a, b) = ("a".to_owned(), "b".to_owned());
    let (todos, tags) = ("todos".to_owned(), "tags".to_owned());
    // Keys of one batch may land in different shards; within a key, order is the write order.
    let mut first_two = summary(&events[..2]);
    first_two.sort_by(|x, y| x.2.cmp(&y.2));
    assert_eq!(
        first_two,
        vec![
            (Put, todos.clone(), a.clone(), Some(Value::Int(1))),
            (Put, todos.clone(), b.clone(), Some(Value::Int(2))),
        ]
    );
    assert_eq!(
        summary(&events[2..]),
        vec![
            (Update, todos.clone(), a, Some(Value::Int(3))),
            (Delete, todos.clone(), b, None),
            (Put, tags.clone(), "t".into(), Some(Value::Str("x".into()))),
            (Delete, tags, "t".into(), None),
        ]
    );
    assert_eq!(events[2].previous_value, Some(Value::Int(1)));
    assert_eq!(events[3].previous_value, Some(Value::Int(2)));
    assert_eq!(events[5].previous_value, Some(Value::Str("x".into())));
    assert_eq!(events[2].timestamp, at(3));
    assert!(!events[0].node_id.is_empty());

    // Filtered by map, and from the middle (inclusive).
    let todos_only = read_all(&mut c, 0, Some("todos")).await;
    assert_eq!(todos_only.len(), 4);
    let tail = read_all(&mut c, seq(&events[3]), None).await;
    assert_eq!(summary(&tail), summary(&events[3..]));

    // A bad fromSequence is refused.
    let bad = Message::JournalRead(JournalRead {
        request_id: "bad".into(),
        from_sequence: "ten".into(),
        limit: None,
        map_name: None,
    });
    send(&mut c, &bad).await;
    let why = expect_error(&mut c, 400).await;
    assert!(why.contains("fromSequence"), "{why}");
    stop(server).await;
}

fn subscribe(
    id: &str,
    from: Option<u64>,
    map: Option<&str>,
    types: Option<Vec<JournalEventType>>,
) -> Message {
    Message::JournalSubscribe(JournalSubscribe {
        request_id: id.into(),
        from_sequence: from.map(|f| f.to_string().into()),
        map_name: map.map(Into::into),
        types,
    })
}

async fn journal_event(c: &mut Client) -> JournalEventData {
    match recv(c).await {
        Ok(Message::JournalEvent(e)) => e,
        other => panic!("expected JOURNAL_EVENT, got {other:?}"),
    }
}

#[tokio::test]
async fn subscriptions_replay_from_a_sequence_then_stream_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = durable(dir.path(), None).await;
    let mut writer = connect(server.addr, "/ws").await;
    let ops: Vec<_> = (0..600)
        .map(|i| {
            put(
                i + 1,
                "feed",
                &format!("k{i}"),
                i64::try_from(i).unwrap(),
                at(1),
            )
        })
        .collect();
    for chunk in ops.chunks(100) {
        write(&mut writer, chunk.to_vec()).await;
    }
    let history = read_all(&mut writer, 0, None).await;
    assert_eq!(history.len(), 600);

    // Live only: hears what is written from now on.
    let mut live = connect(server.addr, "/ws").await;
    send(
        &mut live,
        &subscribe("live", None, None, Some(vec![Update])),
    )
    .await;
    // Replaying from the 101st event: more than a replay page, then live.
    let mut replayer = connect(server.addr, "/ws").await;
    let from = seq(&history[100]);
    send(
        &mut replayer,
        &subscribe("replay", Some(from), Some("feed"), None),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..500 {
        seen.push(journal_event(&mut replayer).await);
    }
    assert_eq!(summary(&seen), summary(&history[100..]));
    send(&mut live, &ping(1)).await;
    expect_pong(&mut live, 1).await;

    write(&mut writer, vec![put(1001, "feed", "k0", 42, at(2))]).await;
    let update = journal_event(&mut live).await;
    assert_eq!(
        (update.event_type, update.value.clone()),
        (Update, Some(Value::Int(42)))
    );
    let streamed = journal_event(&mut replayer).await;
    assert_eq!(
        streamed.sequence, update.sequence,
        "no gap, no repeat at the hand-over"
    );
    assert!(seq(&streamed) > seq(history.last().unwrap()));

    // Types filter: a new key is a PUT, which `live` does not want.
    write(&mut writer, vec![put(1002, "feed", "new", 1, at(3))]).await;
    assert_eq!(journal_event(&mut replayer).await.event_type, Put);
    send(&mut live, &ping(2)).await;
    expect_pong(&mut live, 2).await;

    // Unsubscribed: nothing more.
    let unsub = Message::JournalUnsubscribe(JournalUnsubscribe {
        subscription_id: "replay".into(),
    });
    send(&mut replayer, &unsub).await;
    send(&mut replayer, &ping(3)).await;
    expect_pong(&mut replayer, 3).await;
    write(&mut writer, vec![put(1003, "feed", "k1", 7, at(4))]).await;
    assert_eq!(journal_event(&mut live).await.value, Some(Value::Int(7)));
    send(&mut replayer, &ping(4)).await;
    expect_pong(&mut replayer, 4).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bounds_the_journal_and_a_turned_off_journal_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_with(dir.path(), "journal_capacity = 5");
    let mut c = client(server.addr).await;
    for i in 0..12 {
        write(&mut c, vec![put(i + 1, "m", &format!("k{i}"), 1, at(i))]).await;
    }
    let kept = read_all(&mut c, 0, None).await;
    let keys: Vec<_> = kept.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(keys, ["k7", "k8", "k9", "k10", "k11"]);
    drop(c);
    // Let a checkpoint store (and prune) the events, then restart: the store holds no more
    // than the retention either.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    drop(server);
    let server = spawn_with(dir.path(), "journal_capacity = 5");
    let mut c = client(server.addr).await;
    assert_eq!(summary(&read_all(&mut c, 0, None).await), summary(&kept));
    drop((c, server));

    let server = spawn_with(dir.path(), "journal_capacity = 0");
    let mut c = client(server.addr).await;
    send(&mut c, &read("r", 0, None, None)).await;
    let why = expect_error(&mut c, 501).await;
    assert!(why.contains("journal"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outlive_their_log_segments_in_the_store() {
    // Small segments, so that checkpoints release the log that carried the events and a
    // restart can only find them in the store's journal rows.
    let config = "wal_segment_bytes = 4096";
    let dir = tempfile::tempdir().unwrap();
    let server = spawn_with(dir.path(), config);
    let mut c = client(server.addr).await;
    for i in 0..60_u64 {
        write(&mut c, vec![put(i + 1, "m", &format!("k{i}"), 1, at(i))]).await;
    }
    write(&mut c, vec![remove(61, "m", "k0", at(61))]).await;
    let before = read_all(&mut c, 0, None).await;
    assert_eq!(before.len(), 61);
    // Segments only: the log's directory holds the server's lock file too.
    let segments = || {
        std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segments() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment was released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop((c, server)); // SIGKILL

    let server = spawn_with(dir.path(), config);
    let mut c = client(server.addr).await;
    let after = read_all(&mut c, 0, None).await;
    assert_eq!(summary(&after), summary(&before));
    let sequences = |events: &[JournalEventData]| -> Vec<u64> { events.iter().map(seq).collect() };
    assert_eq!(sequences(&after), sequences(&before));
}

fn spawn(dir: &Path) -> Served {
    spawn_with(dir, "")
}

/// The binary over `dir`, with `config` as its configuration file.
fn spawn_with(dir: &Path, config: &str) -> Served {
    let file = dir.join("topgun.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = binary();
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(&file)
        .env("TOPGUN_NO_AUTH", "1");
    serve_binary(&mut cmd)
}

async fn client(addr: SocketAddr) -> Client {
    connect(addr, "/ws").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_kill_9_returns_exactly_the_events_after_a_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path());
    let mut c = client(server.addr).await;
    for i in 0..10_u64 {
        let ops = (0..5)
            .map(|j| put(i * 5 + j + 1, "orders", &format!("o{i}-{j}"), 1, at(i)))
            .collect();
        write(&mut c, ops).await;
    }
    let before = read_all(&mut c, 0, None).await;
    assert_eq!(before.len(), 50);
    drop(c);
    drop(server); // SIGKILL: the events are only in the log (and perhaps the store).

    let server = spawn(dir.path());
    let mut c = client(server.addr).await;
    write(&mut c, vec![put(100, "orders", "after", 2, at(20))]).await;
    let cut = seq(&before[24]);
    let after = read_all(&mut c, cut + 1, None).await;
    assert_eq!(after.len(), 26, "25 from before the crash and 1 after");
    assert_eq!(summary(&after[..25]), summary(&before[25..]));
    assert_eq!(
        after
            .iter()
            .map(|e| e.sequence.clone())
            .take(25)
            .collect::<Vec<_>>(),
        before[25..]
            .iter()
            .map(|e| e.sequence.clone())
            .collect::<Vec<_>>(),
        "sequences survive the restart unchanged"
    );
    assert_eq!(after[25].key, "after");
    strictly_increasing(&after);
}

#[tokio::test]
async fn subscribing_again_under_the_same_id_replays_once() {
    let dir = tempfile::tempdir().unwrap();
    // A small outbox budget and large events (24 MB in all, far beyond what socket buffers
    // hold): the first replay is still waiting for room when the second subscription comes,
    // so whether it stops shows.
    let config = "connection_backlog_bytes_max = 2097152\n";
    let server = durable(dir.path(), Some(config)).await;
    let mut writer = connect(server.addr, "/ws").await;
    let events: u64 = 3000;
    let big = Value::Str("x".repeat(8 << 10).into());
    let ops: Vec<_> = (0..events)
        .map(|i| put_op(i + 1, "feed", &format!("k{i}"), big.clone(), at(1)))
        .collect();
    for chunk in ops.chunks(100) {
        write(&mut writer, chunk.to_vec()).await;
    }
    let mut c = connect(server.addr, "/ws").await;
    send(&mut c, &subscribe("s", Some(0), None, None)).await;
    send(&mut c, &subscribe("s", Some(0), None, None)).await;
    let mut seen = std::collections::BTreeMap::new();
    let quiet = std::time::Duration::from_millis(800);
    while let Ok(Ok(Message::JournalEvent(e))) = tokio::time::timeout(quiet, recv(&mut c)).await {
        *seen.entry(seq(&e)).or_insert(0) += 1;
    }
    assert_eq!(seen.len() as u64, events, "every event");
    assert!(
        seen.values().all(|&n| n <= 2),
        "the first replay stops when the second takes over"
    );
    let twice = seen.values().filter(|&&n| n == 2).count() as u64;
    assert!(
        twice < events / 2,
        "only what the first replay had in flight comes twice: {twice}"
    );
    stop(server).await;
}
