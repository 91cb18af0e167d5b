//! Live queries over real sockets: `QUERY_RESP` then `QUERY_UPDATE`s for other connections'
//! writes, top-N windows, writes racing a subscription, cursor paging, errors and
//! unsubscribing.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::{ChangeType, CursorStatus, PredicateOp, SortDirection};
use topgun_core::protocol::messages::{QueryRef, QueryResp, QuerySub};
use topgun_core::protocol::query::{PredicateNode, Query, Sort, SortField};
use topgun_core::{NodeId, Timestamp, Value};

const MAP: &str = "players";

fn doc(score: i64, team: &str) -> Value {
    Value::Map(
        [("score", Value::Int(score)), ("team", Value::from(team))]
            .into_iter()
            .collect(),
    )
}

/// Puts `docs` (key, value) in one batch from `c`, stamped by `node`, and waits for the ack.
async fn put_all(c: &mut Client, node: &str, first_id: u64, docs: &[(String, Value)]) {
    let at = now_ms();
    let ops = docs
        .iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let ts = Timestamp::new(at, i as u32, NodeId::new(node).unwrap());
            put_op(first_id + i as u64, MAP, key, value.clone(), ts)
        })
        .collect();
    send(c, &op_batch(ops)).await;
    loop {
        match next_for_query(c).await {
            Message::OpAck(_) => return,
            // A refused write would show up later as a row missing from some result.
            Message::OpRejected(r) => panic!("write refused: {r:?}"),
            _ => {}
        }
    }
}

/// The next message other than map events (writers hear of each other's writes).
async fn next_for_query(c: &mut Client) -> Message {
    loop {
        match recv(c).await.expect("connection closed") {
            Message::ServerEvent(_) | Message::ServerBatchEvent(_) => {}
            other => return other,
        }
    }
}

fn top_of_team_a(query_id: &str, limit: u32) -> Message {
    Message::QuerySub(QuerySub {
        query_id: query_id.into(),
        map_name: MAP.into(),
        query: Query {
            predicate: Some(PredicateNode::leaf(PredicateOp::Eq, "team", "a".into())),
            sort: Some(Sort(vec![SortField {
                field: "score".into(),
                direction: SortDirection::Desc,
            }])),
            limit: Some(limit),
            ..Query::default()
        },
        fields: None,
    })
}

async fn expect_resp(c: &mut Client) -> QueryResp {
    match next_for_query(c).await {
        Message::QueryResp(r) => r,
        other => panic!("expected QUERY_RESP, got {other:?}"),
    }
}

fn keys(resp: &QueryResp) -> Vec<String> {
    resp.results.iter().map(|r| r.key.to_string()).collect()
}

/// The next `n` updates as (key, change).
async fn updates(c: &mut Client, n: usize) -> Vec<(String, ChangeType)> {
    let mut out = Vec::new();
    while out.len() < n {
        match next_for_query(c).await {
            Message::QueryUpdate(u) => out.push((u.key.to_string(), u.change_type)),
            other => panic!("expected QUERY_UPDATE, got {other:?}"),
        }
    }
    out
}

/// Nothing else is queued: a PING's PONG comes next.
async fn quiet(c: &mut Client) {
    send(c, &ping(7)).await;
    match next_for_query(c).await {
        Message::Pong(_) => {}
        other => panic!("expected nothing before PONG, got {other:?}"),
    }
}

fn docs(items: &[(&str, i64, &str)]) -> Vec<(String, Value)> {
    items
        .iter()
        .map(|(k, s, t)| ((*k).to_owned(), doc(*s, t)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_answers_then_follows_other_connections_writes() {
    let server = start(no_auth(), None).await;
    let mut writer = connect(server.addr, "/").await;
    put_all(
        &mut writer,
        "w",
        1,
        &docs(&[
            ("x", 10, "a"),
            ("y", 5, "a"),
            ("z", 7, "a"),
            ("b1", 99, "b"),
        ]),
    )
    .await;

    let mut sub = connect(server.addr, "/").await;
    send(&mut sub, &top_of_team_a("top2", 2)).await;
    let resp = expect_resp(&mut sub).await;
    assert_eq!(resp.query_id, "top2");
    assert_eq!(keys(&resp), ["x", "z"]);
    assert_eq!(resp.has_more, Some(true));
    assert_eq!(resp.cursor_status, Some(CursorStatus::None));
    assert!(resp.next_cursor.is_some());

    // A new leader enters and pushes the last row out.
    put_all(&mut writer, "w", 10, &docs(&[("n", 50, "a")])).await;
    assert_eq!(
        updates(&mut sub, 2).await,
        [
            ("n".into(), ChangeType::Enter),
            ("z".into(), ChangeType::Leave)
        ]
    );
    // A delete inside the window promotes the next row.
    let tombstone =
        topgun_core::LwwRecord::tombstone(Timestamp::new(now_ms(), 99, NodeId::new("w").unwrap()));
    let remove = topgun_core::protocol::messages::ClientOp {
        record: topgun_core::protocol::wire::Field::Value(tombstone),
        ..blank_op(20, MAP, "n")
    };
    send(&mut writer, &op_batch(vec![remove])).await;
    assert_eq!(
        updates(&mut sub, 2).await,
        [
            ("n".into(), ChangeType::Leave),
            ("z".into(), ChangeType::Enter)
        ]
    );
    // Rows the query does not select change nothing.
    put_all(&mut writer, "w", 30, &docs(&[("b2", 1000, "b")])).await;
    quiet(&mut sub).await;

    // The subscriber's own write changes its window but is not echoed to it.
    put_all(&mut sub, "s", 1, &docs(&[("mine", 500, "a")])).await;
    quiet(&mut sub).await;
    let mut other = connect(server.addr, "/").await;
    send(&mut other, &top_of_team_a("check", 2)).await;
    assert_eq!(keys(&expect_resp(&mut other).await), ["mine", "x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_and_unsubscribing_stops_updates() {
    let server = start(no_auth(), None).await;
    let mut c = connect(server.addr, "/").await;
    let bad = Message::QuerySub(QuerySub {
        query_id: "bad".into(),
        map_name: MAP.into(),
        query: Query {
            predicate: Some(PredicateNode::leaf(PredicateOp::Regex, "team", "(".into())),
            ..Query::default()
        },
        fields: None,
    });
    send(&mut c, &bad).await;
    let why = expect_error(&mut c, 400).await;
    assert!(why.contains("\"bad\"") && why.contains("regex"), "{why}");

    // An operator no evaluator knows: the frame is refused, naming the field.
    let mut w = topgun_core::protocol::Writer::new();
    let unknown: Value = Value::Map(
        [
            ("type", Value::from("QUERY_SUB")),
            (
                "payload",
                Value::Map(
                    [
                        ("queryId", Value::from("odd")),
                        ("mapName", Value::from(MAP)),
                        (
                            "query",
                            Value::Map(
                                [(
                                    "predicate",
                                    Value::Map(
                                        [("op", Value::from("bogus")), ("attribute", "a".into())]
                                            .into_iter()
                                            .collect(),
                                    ),
                                )]
                                .into_iter()
                                .collect(),
                            ),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                ),
            ),
        ]
        .into_iter()
        .collect(),
    );
    topgun_core::protocol::Wire::encode(&unknown, &mut w);
    {
        use futures_util::SinkExt;
        c.send(tokio_tungstenite::tungstenite::Message::Binary(
            w.into_bytes().into(),
        ))
        .await
        .unwrap();
    }
    let why = expect_error(&mut c, 400).await;
    assert!(why.contains("op") && why.contains("bogus"), "{why}");

    send(&mut c, &top_of_team_a("q", 5)).await;
    assert!(expect_resp(&mut c).await.results.is_empty());
    let mut writer = connect(server.addr, "/").await;
    put_all(&mut writer, "w", 1, &docs(&[("x", 1, "a")])).await;
    assert_eq!(updates(&mut c, 1).await, [("x".into(), ChangeType::Enter)]);
    send(
        &mut c,
        &Message::QueryUnsub(QueryRef {
            query_id: "q".into(),
        }),
    )
    .await;
    quiet(&mut c).await;
    put_all(&mut writer, "w", 2, &docs(&[("y", 2, "a")])).await;
    quiet(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_subscription_are_neither_lost_nor_told_twice() {
    let server = start(no_auth(), Some("shards = 2\n")).await;
    let addr = server.addr;
    let writing = tokio::spawn(async move {
        let mut writer = connect(addr, "/").await;
        for round in 0..30u64 {
            let batch: Vec<_> = (0..10)
                .map(|i| {
                    (
                        format!("k{}", (round * 7 + i) % 120),
                        doc((round * 10 + i) as i64, "a"),
                    )
                })
                .collect();
            put_all(&mut writer, "w", round * 10 + 1, &batch).await;
        }
    });
    let mut sub = connect(server.addr, "/").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(&mut sub, &top_of_team_a("all", 10_000)).await;
    let mut replica: BTreeMap<String, Value> = expect_resp(&mut sub)
        .await
        .results
        .into_iter()
        .map(|r| (r.key.to_string(), r.value))
        .collect();
    writing.await.unwrap();
    // Every write is acknowledged: a fresh subscription sees them all.
    let mut check = connect(server.addr, "/").await;
    send(&mut check, &top_of_team_a("fresh", 10_000)).await;
    let fresh: BTreeMap<String, Value> = expect_resp(&mut check)
        .await
        .results
        .into_iter()
        .map(|r| (r.key.to_string(), r.value))
        .collect();
    assert_eq!(fresh.len(), 120);
    // The racing subscription's updates bring its replica to the same rows. (Updates come
    // through the push stream, which a PING's PONG may overtake: so the updates are read
    // until the replica matches, each within `recv`'s 5 s, rather than up to a PONG.)
    while replica != fresh {
        let Message::QueryUpdate(u) = next_for_query(&mut sub).await else {
            panic!("expected QUERY_UPDATE");
        };
        match u.change_type {
            ChangeType::Enter => {
                assert!(
                    replica.insert(u.key.to_string(), u.value).is_none(),
                    "told twice"
                );
            }
            ChangeType::Update => {
                assert!(
                    replica.insert(u.key.to_string(), u.value).is_some(),
                    "unknown row"
                );
            }
            ChangeType::Leave => {
                assert!(replica.remove(u.key.as_str()).is_some(), "unknown row");
            }
        }
    }
    // And nothing more: no update was told twice.
    quiet(&mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_page_through_50k_rows_without_gaps_or_repeats() {
    // 50,000 writes from one connection as fast as it goes: past the default per-connection
    // rate limit (a burst of 40,000, then 20,000 a second) on a fast enough machine.
    let server = start(
        no_auth(),
        Some("shards = 2\nops_per_sec_per_connection = 0\n"),
    )
    .await;
    let mut writer = connect(server.addr, "/").await;
    for chunk in 0..50u64 {
        let batch: Vec<_> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                (format!("p{n:05}"), doc((n % 13) as i64, "a"))
            })
            .collect();
        put_all(&mut writer, "w", chunk * 1000 + 1, &batch).await;
    }
    let mut reader = connect(server.addr, "/").await;
    // Without a limit a response stops at 10,000 rows, and says there is more.
    let Message::QuerySub(mut all) = top_of_team_a("all", 1) else {
        unreachable!()
    };
    all.query.limit = None;
    send(&mut reader, &Message::QuerySub(all)).await;
    let capped = expect_resp(&mut reader).await;
    assert_eq!(capped.results.len(), 10_000);
    assert_eq!(capped.has_more, Some(true));
    assert!(capped.next_cursor.is_some());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let Message::QuerySub(mut sub) = top_of_team_a("page", 7_000) else {
            unreachable!()
        };
        sub.query.cursor = cursor.clone().map(Into::into);
        send(&mut reader, &Message::QuerySub(sub)).await;
        let resp = expect_resp(&mut reader).await;
        let status = if cursor.is_some() {
            CursorStatus::Valid
        } else {
            CursorStatus::None
        };
        assert_eq!(resp.cursor_status, Some(status));
        seen.extend(keys(&resp));
        match resp.next_cursor {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 50_000, "every row once");
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregations_answer_per_group_and_follow_writes() {
    use topgun_core::protocol::enums::AggFunc;
    use topgun_core::protocol::query::Aggregation;
    let server = start(no_auth(), None).await;
    let mut writer = connect(server.addr, "/").await;
    put_all(
        &mut writer,
        "w",
        1,
        &docs(&[("x", 10, "a"), ("y", 5, "a"), ("z", 7, "b")]),
    )
    .await;
    let mut sub = connect(server.addr, "/").await;
    let by_team = Message::QuerySub(QuerySub {
        query_id: "teams".into(),
        map_name: MAP.into(),
        query: Query {
            group_by: Some(vec!["team".into()]),
            aggregations: Some(vec![
                Aggregation {
                    func: AggFunc::Count,
                    field: None,
                },
                Aggregation {
                    func: AggFunc::Sum,
                    field: Some("score".into()),
                },
            ]),
            ..Query::default()
        },
        fields: None,
    });
    send(&mut sub, &by_team).await;
    let resp = expect_resp(&mut sub).await;
    assert_eq!(keys(&resp), ["a", "b"]);
    let a = &resp.results[0].value;
    assert_eq!(a.get("__count"), Some(&Value::Int(2)));
    assert_eq!(a.get("__sum_score"), Some(&Value::Int(15)));
    assert_eq!(a.get("team"), Some(&Value::from("a")));

    put_all(&mut writer, "w", 10, &docs(&[("y", 6, "b")])).await;
    let mut told = BTreeMap::new();
    while told.len() < 2 {
        match next_for_query(&mut sub).await {
            Message::QueryUpdate(u) => {
                assert_eq!(u.change_type, ChangeType::Update);
                told.insert(u.key.to_string(), u.value);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(told["a"].get("__sum_score"), Some(&Value::Int(10)));
    assert_eq!(told["b"].get("__sum_score"), Some(&Value::Int(13)));
    assert_eq!(told["b"].get("__count"), Some(&Value::Int(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_256_queries() {
    let server = start(no_auth(), None).await;
    let mut c = connect(server.addr, "/").await;
    for n in 0..=256 {
        send(&mut c, &top_of_team_a(&format!("q{n}"), 1)).await;
    }
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < 257 {
        match next_for_query(&mut c).await {
            Message::QueryResp(_) => answered += 1,
            Message::Error(e) => {
                assert_eq!(e.code, 429, "{}", e.message);
                assert!(e.message.contains("\"q256\""), "{}", e.message);
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((answered, refused), (256, 1));
    // Re-sending a held query replaces it rather than counting twice.
    send(&mut c, &top_of_team_a("q0", 1)).await;
    assert!(matches!(
        next_for_query(&mut c).await,
        Message::QueryResp(_)
    ));
}
