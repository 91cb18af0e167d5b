//! Abuse limits and interceptors over real sockets: each limit answers with a precise error
//! and changes nothing; the rate limiter, server timestamps, and an embedder's interceptor.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{ClientOp, MerkleReqBucket, QuerySub, SyncInit};
use topgun_core::protocol::query::Query;
use topgun_core::{NodeId, Timestamp, Value};
use topgun_server::Server;
use topgun_server::config::{Cli, Config};
use topgun_server::security::interceptor::{AppliedOp, ConnInfo, Interceptor, OpContext, Verdict};
use topgun_server::storage::store::MemoryStore;

fn put(id: u64, key: &str, value: Value) -> ClientOp {
    let at = Timestamp::new(now_ms() - 5_000, 0, NodeId::new("client").unwrap());
    put_op(id, "m", key, value, at)
}

/// The keys of map `m` the server holds (by a full Merkle walk).
async fn stored_keys(c: &mut Client) -> Vec<(String, Value, Timestamp)> {
    send(
        c,
        &Message::SyncInit(SyncInit {
            map_name: "m".into(),
            last_sync_timestamp: None,
        }),
    )
    .await;
    assert!(matches!(recv(c).await, Ok(Message::SyncRespRoot(_))));
    let mut out = Vec::new();
    let mut paths = vec![String::new()];
    while let Some(path) = paths.pop() {
        let req = MerkleReqBucket {
            map_name: "m".into(),
            path: path.as_str().into(),
        };
        send(c, &Message::MerkleReqBucket(req)).await;
        match recv(c).await {
            Ok(Message::SyncRespBuckets(b)) => {
                paths.extend(b.buckets.keys().map(|d| format!("{path}{d}")));
            }
            Ok(Message::SyncRespLeaf(leaf)) => out.extend(
                leaf.records
                    .into_iter()
                    .map(|r| (r.key.to_string(), r.record.value, r.record.timestamp)),
            ),
            other => panic!("{other:?}"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn batch_and_value_size_limits_refuse_precisely_and_change_nothing() {
    let server = start(
        no_auth(),
        Some("ops_per_batch_max = 3\nvalue_bytes_max = 32"),
    )
    .await;
    let mut c = connect(server.addr, "/ws").await;
    let four = (0..4)
        .map(|i| put(i + 1, &format!("k{i}"), Value::Int(1)))
        .collect();
    send(&mut c, &op_batch(four)).await;
    let why = expect_error(&mut c, 413).await;
    assert!(why.contains("4 ops") && why.contains("at most 3"), "{why}");
    let big = Value::Str("x".repeat(64).into());
    send(
        &mut c,
        &op_batch(vec![put(10, "small", Value::Int(1)), put(11, "big", big)]),
    )
    .await;
    let replies = drain(&mut c, 1).await;
    assert!(
        replies.iter().any(|m| matches!(m, Message::OpRejected(r)
            if r.op_id == "11" && r.code == Some(413) && r.reason.contains("at most 32"))),
        "{replies:?}"
    );
    assert!(
        replies
            .iter()
            .any(|m| matches!(m, Message::OpAck(a) if a.last_id == "11"))
    );
    let keys: Vec<String> = stored_keys(&mut c).await.into_iter().map(|k| k.0).collect();
    assert_eq!(keys, ["small"], "only the op within the limits landed");
}

#[tokio::test]
async fn the_rate_limiter_holds_back_a_fast_connection_with_a_retry_hint() {
    let server = start(no_auth(), Some("ops_per_sec_per_connection = 5")).await;
    let mut c = connect(server.addr, "/ws").await;
    // A burst of 10 passes; the 11th is refused as retryable and what follows it is left
    // unprocessed (not one OP_REJECTED per op), so the ack stops before them and the client
    // sends them again.
    let ops = (0..12)
        .map(|i| put(i + 1, &format!("k{i:02}"), Value::Int(1)))
        .collect();
    send(&mut c, &op_batch(ops)).await;
    let replies = drain(&mut c, 1).await;
    let limited: Vec<&str> = replies
        .iter()
        .filter_map(|m| match m {
            Message::OpRejected(r) if r.code == Some(429) => {
                assert!(r.reason.contains("retry in"), "{}", r.reason);
                Some(r.op_id.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(limited, ["11"]);
    assert!(
        replies
            .iter()
            .any(|m| matches!(m, Message::OpAck(a) if a.last_id == "10")),
        "{replies:?}"
    );
    assert_eq!(stored_keys(&mut c).await.len(), 10);
    // Another connection has its own allowance.
    let mut other = connect(server.addr, "/ws").await;
    send(&mut other, &op_batch(vec![put(1, "z", Value::Int(1))])).await;
    assert!(
        drain(&mut other, 2)
            .await
            .iter()
            .any(|m| matches!(m, Message::OpAck(_)))
    );
}

#[tokio::test]
async fn server_timestamps_replace_the_clients_when_turned_on() {
    let server = start(no_auth(), Some("server_timestamps = true")).await;
    let mut c = connect(server.addr, "/ws").await;
    let before = now_ms();
    send(&mut c, &op_batch(vec![put(1, "a", Value::Int(1))])).await;
    drain(&mut c, 1).await;
    let stored = stored_keys(&mut c).await;
    let (_, _, at) = &stored[0];
    assert_eq!(at.node_id.as_str(), "topgun-server-node");
    assert!(
        at.millis >= before,
        "the server's time, not the client's 5 s old one"
    );
}

#[tokio::test]
async fn live_queries_per_connection_are_configurable() {
    let server = start(no_auth(), Some("queries_per_connection_max = 2")).await;
    let mut c = connect(server.addr, "/ws").await;
    for id in ["a", "b", "c"] {
        let sub = Message::QuerySub(QuerySub {
            query_id: id.into(),
            map_name: "m".into(),
            query: Query::default(),
            fields: None,
        });
        send(&mut c, &sub).await;
    }
    // Answers come through the event queue: two responses (once their snapshots load) and
    // one refusal (at once).
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv(&mut c).await.unwrap());
    }
    let answered = got
        .iter()
        .filter(|m| matches!(m, Message::QueryResp(r) if r.query_id != "c"))
        .count();
    assert_eq!(answered, 2, "{got:?}");
    let errors: Vec<_> = got
        .iter()
        .filter_map(|m| match m {
            Message::Error(e) => Some((e.code, e.message.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{got:?}");
    assert_eq!(errors[0].0, 429);
    assert!(errors[0].1.contains("\"c\"") && errors[0].1.contains("2 live queries"));
}

fn login(user: &str) -> Message {
    let claims = serde_json::json!({"sub": user, "exp": now_secs() + 600});
    auth(&token(&claims, SECRET))
}

#[tokio::test]
async fn a_user_holds_at_most_so_many_connections() {
    let server = start(jwt(), Some("connections_per_user_max = 2")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect(server.addr, "/ws").await;
        let _ = recv(&mut c).await;
        send(&mut c, &login("alice")).await;
        assert!(matches!(recv(&mut c).await, Ok(Message::AuthAck(_))));
        held.push(c);
    }
    let mut third = connect(server.addr, "/ws").await;
    let _ = recv(&mut third).await;
    send(&mut third, &login("alice")).await;
    match recv(&mut third).await {
        Ok(Message::AuthFail(f)) => assert!(f.error.unwrap().contains("2 connections")),
        other => panic!("{other:?}"),
    }
    assert_eq!(recv(&mut third).await.unwrap_err(), Some(1008));
    // Bob is not affected, and a closed connection frees its place.
    let mut bob = connect(server.addr, "/ws").await;
    let _ = recv(&mut bob).await;
    send(&mut bob, &login("bob")).await;
    assert!(matches!(recv(&mut bob).await, Ok(Message::AuthAck(_))));
    drop(held.pop());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut again = connect(server.addr, "/ws").await;
    let _ = recv(&mut again).await;
    send(&mut again, &login("alice")).await;
    assert!(matches!(recv(&mut again).await, Ok(Message::AuthAck(_))));
}

#[tokio::test]
async fn an_address_that_fails_to_authenticate_too_often_is_turned_away() {
    let server = start(jwt(), Some("auth_failures_per_ip_per_minute = 3")).await;
    for _ in 0..3 {
        let mut c = connect(server.addr, "/ws").await;
        let _ = recv(&mut c).await;
        send(&mut c, &auth("not a token")).await;
        assert!(matches!(recv(&mut c).await, Ok(Message::AuthFail(_))));
    }
    let mut c = connect(server.addr, "/ws").await;
    let why = expect_error(&mut c, 429).await;
    assert!(
        why.contains("too many failed authentication attempts"),
        "{why}"
    );
    assert_eq!(recv(&mut c).await.unwrap_err(), Some(1008));
}

/// An embedder's interceptor: refuses connections while `closed`, renames map `old` to
/// `new`, drops ops on map `blocked`, and counts what was applied.
#[derive(Debug, Default)]
struct Custom {
    closed: std::sync::atomic::AtomicBool,
    applied: AtomicUsize,
    seen: Mutex<Vec<String>>,
}

impl Interceptor for Custom {
    fn on_connection(&self, _conn: &ConnInfo) -> Result<(), String> {
        if self.closed.load(Ordering::SeqCst) {
            return Err("closed for maintenance".into());
        }
        Ok(())
    }

    fn on_before_op(&self, _ctx: &mut OpContext<'_>, mut op: Box<ClientOp>) -> Verdict {
        match op.map_name.as_str() {
            "old" => op.map_name = "m".into(),
            "blocked" => {
                return Verdict::Drop(topgun_server::data::ops::Rejection {
                    code: 403,
                    reason: "blocked by policy".into(),
                    retry: false,
                });
            }
            _ => {}
        }
        Verdict::Pass(op)
    }

    fn on_after_op(&self, op: &AppliedOp) {
        self.applied.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap()
            .push(format!("{}/{}", op.map, op.key));
    }
}

#[tokio::test]
async fn an_embedders_interceptor_transforms_drops_observes_and_refuses() {
    let custom = Arc::new(Custom::default());
    let cli = Cli {
        port: Some(0),
        host: Some("127.0.0.1".parse().unwrap()),
        ..Cli::default()
    };
    let mut config = Config::resolve(&cli, None, &no_auth()).unwrap();
    config.interceptors.push(custom.clone());
    let server = Server::bind_with_store(config, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));

    let mut c = connect(addr, "/ws").await;
    let mut renamed = put(1, "a", Value::Int(1));
    renamed.map_name = "old".into();
    let mut blocked = put(2, "b", Value::Int(1));
    blocked.map_name = "blocked".into();
    send(&mut c, &op_batch(vec![renamed, blocked])).await;
    let replies = drain(&mut c, 1).await;
    assert!(replies.iter().any(|m| matches!(m, Message::OpRejected(r)
        if r.op_id == "2" && r.reason == "blocked by policy")));
    let keys: Vec<String> = stored_keys(&mut c).await.into_iter().map(|k| k.0).collect();
    assert_eq!(keys, ["a"], "the renamed op landed in m");
    assert_eq!(custom.applied.load(Ordering::SeqCst), 1);
    assert_eq!(*custom.seen.lock().unwrap(), ["m/a"]);

    custom.closed.store(true, Ordering::SeqCst);
    let mut refused = connect(addr, "/ws").await;
    let why = expect_error(&mut refused, 429).await;
    assert_eq!(why, "closed for maintenance");
    assert_eq!(recv(&mut refused).await.unwrap_err(), Some(1008));
}

/// An OR record added by client node `c<i>`, 5 s ago.
fn or_record(i: u64, value: Value) -> topgun_core::OrRecord {
    let at = Timestamp::new(now_ms() - 5_000, 0, NodeId::new(&format!("c{i}")).unwrap());
    topgun_core::OrRecord {
        value,
        tag: at.to_string(),
        timestamp: at,
        ttl_ms: None,
    }
}

/// An `ORMAP_PUSH_DIFF` of `records` under key `k` of map `tags`.
fn push(records: Vec<topgun_core::OrRecord>) -> Message {
    Message::OrMapPushDiff(topgun_core::protocol::messages::OrMapPushDiff {
        map_name: "tags".into(),
        entries: vec![topgun_core::OrMapEntry {
            key: "k".into(),
            records,
            tombstones: Vec::new(),
        }],
    })
}

fn ints(n: u64) -> Vec<topgun_core::OrRecord> {
    (0..n).map(|i| or_record(i, Value::Int(1))).collect()
}

#[tokio::test]
async fn a_push_obeys_the_batch_and_value_limits() {
    let server = start(
        no_auth(),
        Some("ops_per_batch_max = 3\nvalue_bytes_max = 32"),
    )
    .await;
    let mut c = connect(server.addr, "/ws").await;
    send(&mut c, &push(ints(4))).await;
    let why = expect_error(&mut c, 413).await;
    assert!(
        why.contains("4 records") && why.contains("nothing was applied"),
        "{why}"
    );
    let big = or_record(9, Value::Str("x".repeat(64).into()));
    send(&mut c, &push(vec![big])).await;
    let why = expect_error(&mut c, 413).await;
    assert!(why.contains("at most 32"), "{why}");
    send(&mut c, &push(vec![or_record(10, Value::Int(1))])).await;
    assert!(
        drain(&mut c, 1).await.is_empty(),
        "within the limits: applied, no reply"
    );
}

#[tokio::test]
async fn the_rate_limiter_charges_a_push_for_its_records() {
    let server = start(no_auth(), Some("ops_per_sec_per_connection = 5")).await;
    let mut c = connect(server.addr, "/ws").await;
    // A burst of 10 allows one push of 8; the next push of 8 must wait.
    send(&mut c, &push(ints(8))).await;
    assert!(drain(&mut c, 1).await.is_empty());
    send(&mut c, &push(ints(8))).await;
    let why = expect_error(&mut c, 429).await;
    assert!(why.contains("retry in"), "{why}");
}
