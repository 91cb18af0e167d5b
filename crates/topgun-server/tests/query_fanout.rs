//! Live-query delivery under load, over real sockets: one large batch and a sustained write
//! rate reach subscribers that read, whole; a subscriber that stops reading is closed within
//! the write timeout; past the server's backlog budget the largest backlogs are shed; every
//! close is counted by reason.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::ChangeType;
use topgun_core::protocol::messages::QuerySub;
use topgun_core::protocol::query::Query;
use topgun_core::{NodeId, Timestamp, Value};

const MAP: &str = "feed";

/// The tests of this file load both cores for seconds at a time, and what they measure —
/// who keeps up, who is shed and why — depends on the server getting its share of them:
/// they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn subscribe(query_id: &str) -> Message {
    Message::QuerySub(QuerySub {
        query_id: query_id.into(),
        map_name: MAP.into(),
        query: Query::default(),
        fields: None,
    })
}

/// A connection with a live `QUERY_SUB {}` on [`MAP`], its (empty) response read.
async fn subscriber(addr: std::net::SocketAddr, query_id: &str) -> Client {
    let mut c = connect(addr, "/").await;
    send(&mut c, &subscribe(query_id)).await;
    match recv(&mut c).await {
        Ok(Message::QueryResp(r)) => assert!(r.results.is_empty()),
        other => panic!("expected QUERY_RESP, got {other:?}"),
    }
    c
}

/// Puts keys `first..first + count` with `value`, as one batch; waits for the ack.
async fn put_batch(c: &mut Client, first: u64, count: u64, value: &Value) {
    let node = NodeId::new("writer").unwrap();
    let at = now_ms();
    let ops = (first..first + count)
        .map(|i| {
            let ts = Timestamp::new(at, u32::try_from(i - first).unwrap(), node.clone());
            put_op(i + 1, MAP, &format!("k{i}"), value.clone(), ts)
        })
        .collect();
    send(c, &op_batch(ops)).await;
    loop {
        match recv(c).await {
            Ok(Message::OpAck(_)) => return,
            Ok(Message::OpRejected(r)) => panic!("write refused: {r:?}"),
            Ok(_) => {}
            Err(code) => panic!("the writer was closed: {code:?}"),
        }
    }
}

/// Reads updates until `want` distinct keys have entered; panics on a close or a stall.
async fn entered(c: &mut Client, want: usize) -> HashSet<String> {
    let mut keys = HashSet::with_capacity(want);
    while keys.len() < want {
        match tokio::time::timeout(Duration::from_secs(20), recv(c)).await {
            Ok(Ok(Message::QueryUpdate(u))) => {
                assert_eq!(u.change_type, ChangeType::Enter, "{u:?}");
                assert!(keys.insert(u.key.to_string()), "told twice: {}", u.key);
            }
            Ok(Ok(_)) => {}
            Ok(Err(code)) => panic!("closed after {} of {want} updates: {code:?}", keys.len()),
            Err(e) => panic!("stalled after {} of {want} updates: {e}", keys.len()),
        }
    }
    keys
}

/// The value of one `/metrics` line (`name` with its labels), as a number.
async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let text = http_get_async(addr, "/metrics").await.1;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

const KICKS_BACKLOG: &str = "topgun_slow_consumer_kicks_total{reason=\"connection_backlog\"}";
const KICKS_SERVER: &str = "topgun_slow_consumer_kicks_total{reason=\"server_backlog\"}";
const KICKS_TIMEOUT: &str = "topgun_slow_consumer_kicks_total{reason=\"write_timeout\"}";
const KICKS_LAG: &str = "topgun_slow_consumer_kicks_total{reason=\"query_lag\"}";

/// Every reason's slow-consumer kicks: backlog, server, timeout, query lag.
async fn kicks(addr: std::net::SocketAddr) -> Vec<(&'static str, u64)> {
    let mut counts = Vec::new();
    for name in [KICKS_BACKLOG, KICKS_SERVER, KICKS_TIMEOUT, KICKS_LAG] {
        counts.push((name, metric(addr, name).await));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_8192_writes_reaches_every_live_query_whole() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), None).await;
    // Two subscribers of the same query share one view; each is told everything.
    let mut a = subscriber(server.addr, "qa").await;
    let mut b = subscriber(server.addr, "qb").await;
    let mut writer = connect(server.addr, "/").await;
    put_batch(&mut writer, 0, 8192, &Value::Int(1)).await;
    let (got_a, got_b) = tokio::join!(entered(&mut a, 8192), entered(&mut b, 8192));
    assert_eq!(got_a, got_b);
    for kind in [KICKS_BACKLOG, KICKS_SERVER, KICKS_TIMEOUT] {
        assert_eq!(metric(server.addr, kind).await, 0, "{kind}");
    }
}

/// Applies updates to a replica of the query's rows until it equals `want`; panics on a
/// close or a stall. Returns the number of updates read.
async fn follow(c: &mut Client, want: &HashMap<String, Value>) -> usize {
    let mut rows: HashMap<String, Value> = HashMap::new();
    let mut updates = 0;
    while rows != *want {
        match tokio::time::timeout(Duration::from_secs(20), recv(c)).await {
            Ok(Ok(Message::QueryUpdate(u))) => {
                updates += 1;
                let key = u.key.to_string();
                match u.change_type {
                    ChangeType::Enter => assert!(rows.insert(key, u.value).is_none()),
                    ChangeType::Update => assert!(rows.insert(key, u.value).is_some()),
                    ChangeType::Leave => assert!(rows.remove(&key).is_some()),
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(code)) => panic!("closed after {updates} updates: {code:?}"),
            Err(e) => panic!("stalled after {updates} updates, {} rows: {e}", rows.len()),
        }
    }
    updates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_subscriber_keeps_up_with_5000_writes_a_second_for_10_seconds() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_durable(dir.path(), None).await;
    let mut reader = subscriber(server.addr, "q").await;
    // 2,000 keys written 25 times each: every write is a change the subscriber is owed.
    let (keys, batches, per_batch) = (2000u64, 200u64, 250u64);
    // Batch n writes value n / 8 to an eighth of the keys, in turn.
    let round = move |n: u64| Value::Int(i64::try_from(n / (keys / per_batch)).unwrap());
    let want: HashMap<String, Value> = (0..keys)
        .map(|k| (format!("k{k}"), round(batches - 1)))
        .collect();
    let reading = tokio::spawn(async move { follow(&mut reader, &want).await });
    let mut writer = connect(server.addr, "/").await;
    let started = Instant::now();
    for n in 0..batches {
        // Paced: batch n is due at n × 50 ms, so 5,000 writes a second.
        let due = started + Duration::from_millis(50 * n);
        tokio::time::sleep_until(due.into()).await;
        let first = n * per_batch % keys;
        put_batch(&mut writer, first, per_batch, &round(n)).await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the writer was held up: {took:?}"
    );
    let updates = reading.await.unwrap();
    assert!(updates >= 2000, "{updates}");
    assert_eq!(
        metric(server.addr, "topgun_outbound_queue_drops_total").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_within_the_write_timeout() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // The budget is large, so that only the timeout can close it.
    let config = "write_timeout_ms = 1000\nconnection_backlog_bytes_max = 268435456\n";
    let server = start(no_auth(), Some(config)).await;
    let mut stalled = subscriber(server.addr, "q").await;
    let mut writer = connect(server.addr, "/").await;
    let big = Value::Str("x".repeat(32 << 10).into());
    let started = Instant::now();
    let mut first = 0;
    // Socket buffers fill within a few MB; from then on nothing moves for the timeout. The
    // writer is paced (1 MiB per 50 ms) so that nothing but the timeout can close the
    // subscriber: flooding it fills the outbox or the query task's queue first.
    while kicks(server.addr).await.iter().all(|(_, n)| *n == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not closed after {first} writes in {:?}",
            started.elapsed()
        );
        put_batch(&mut writer, first, 32, &big).await;
        first += 32;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kicks = kicks(server.addr).await;
    assert_eq!(
        kicks.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [0, 0, 1, 0],
        "closed by the write timeout only: {kicks:?}"
    );
    // The connection is gone: reading what the socket still held ends in a close.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if recv(&mut stalled).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stalled connection is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_server_budget_the_largest_backlogs_are_shed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let config = "write_timeout_ms = 600000\nconnection_backlog_bytes_max = 16777216\n\
                  server_backlog_bytes_max = 16777216\n";
    let server = start(no_auth(), Some(config)).await;
    // Different queries (views are shared only by identical ones), so that their backlogs
    // are copies and add up. Four, for three kicks by the server's budget: the last one
    // left alone would pass its own budget, equal to the server's, with the same push.
    let mut stalled = Vec::new();
    for i in 0..4 {
        let mut c = connect(server.addr, "/").await;
        let query = Query {
            limit: Some(10_000 - i),
            ..Query::default()
        };
        let sub = Message::QuerySub(QuerySub {
            query_id: format!("s{i}").into(),
            map_name: MAP.into(),
            query,
            fields: None,
        });
        send(&mut c, &sub).await;
        assert!(matches!(recv(&mut c).await, Ok(Message::QueryResp(_))));
        stalled.push(c);
    }
    let mut healthy = subscriber(server.addr, "h").await;
    let mut writer = connect(server.addr, "/").await;
    let big = Value::Str("x".repeat(16 << 10).into());
    let started = Instant::now();
    let mut first = 0u64;
    while metric(server.addr, KICKS_SERVER).await < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "not shed");
        assert_eq!(
            metric(server.addr, KICKS_BACKLOG).await,
            0,
            "a connection's own budget closed it before the server's budget did"
        );
        // The healthy query's window holds the first 10,000 rows; past it new keys would
        // not enter, and this test would wait for updates that are not owed.
        assert!(
            first + 64 <= 10_000,
            "not shed before the healthy window filled"
        );
        put_batch(&mut writer, first, 64, &big).await;
        first += 64;
        // The healthy subscriber reads everything as it comes.
        entered(&mut healthy, 64).await;
    }
    assert_eq!(metric(server.addr, KICKS_BACKLOG).await, 0);
    assert!(
        metric(server.addr, "topgun_outbound_backlog_bytes").await <= 16 << 20,
        "the backlog is back within the budget"
    );
    // The healthy one was never the largest: it still hears of writes.
    put_batch(&mut writer, first, 1, &Value::Int(1)).await;
    entered(&mut healthy, 1).await;
}
