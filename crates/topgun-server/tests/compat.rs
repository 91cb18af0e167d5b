//! What code written for TopGun's reference server relies on over the WebSocket, beyond the
//! message shapes (COMPAT §4), against a real server over real sockets: the `ERROR` that
//! sums up refused ops, `SERVER_EVENT`s for query subscribers, and the inbound `BATCH`
//! envelope's charge and per-item refusals. (SQL-off is in `connection.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::ServerEventType;
use topgun_core::protocol::messages::{Batch, ClientOp, OpAck, QueryRef};
use topgun_core::protocol::wire::Bin;
use topgun_core::{NodeId, OrRecord, Timestamp, Value};

fn at(counter: u32) -> Timestamp {
    Timestamp::new(now_ms(), counter, NodeId::new("client").unwrap())
}

fn put(id: u64, map: &str, key: &str) -> ClientOp {
    put_op(id, map, key, Value::Int(i64::try_from(id).unwrap()), at(0))
}

async fn connect_user(addr: std::net::SocketAddr) -> Client {
    let mut c = connect(addr, "/ws").await;
    let jwt = token(
        &serde_json::json!({"sub": "alice", "roles": ["user"], "exp": now_secs() + 3600}),
        SECRET,
    );
    send(&mut c, &auth(&jwt)).await;
    let replies = drain(&mut c, 0).await;
    assert!(
        replies.iter().any(|m| matches!(m, Message::AuthAck(_))),
        "{replies:?}"
    );
    c
}

/// COMPAT §4.1: ops 6, 7, 8 with only 7 denied get `OP_REJECTED` for 7, then one `ERROR 403`
/// naming it, then the `OP_ACK` covering all three, in that order.
#[tokio::test]
async fn a_denied_write_is_summed_up_in_an_error_before_the_ack() {
    let server = start(jwt(), Some(USERS_OWN_TODOS)).await;
    let mut c = connect_user(server.addr).await;
    let ops = vec![
        put(6, "todos", "a"),
        put(7, "secret", "b"),
        put(8, "todos", "c"),
    ];
    send(&mut c, &op_batch(ops)).await;
    let replies = drain(&mut c, 1).await;
    let types: Vec<_> = replies.iter().map(Message::type_name).collect();
    assert_eq!(types, ["OP_REJECTED", "ERROR", "OP_ACK"], "{replies:?}");
    let Message::OpRejected(rejected) = &replies[0] else {
        unreachable!()
    };
    assert_eq!((rejected.op_id.as_str(), rejected.code), ("7", Some(403)));
    let Message::Error(error) = &replies[1] else {
        unreachable!()
    };
    assert_eq!(error.code, 403);
    assert_eq!(
        error.message.as_str(),
        "write access denied for map: secret"
    );
    let details = error.details.as_ref().expect("details");
    let denied = match details.get("denied") {
        Some(Value::Array(denied)) => denied,
        other => panic!("{other:?}"),
    };
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].get("opId"), Some(&Value::from("7")));
    assert_eq!(denied[0].get("mapName"), Some(&Value::from("secret")));
    assert!(matches!(&replies[2], Message::OpAck(OpAck { last_id, .. }) if last_id == "8"));

    // A lone CLIENT_OP to a reserved map: the same three frames.
    send(&mut c, &Message::ClientOp(put(9, "__topgun_locks", "x"))).await;
    let replies = drain(&mut c, 2).await;
    let types: Vec<_> = replies.iter().map(Message::type_name).collect();
    assert_eq!(types, ["OP_REJECTED", "ERROR", "OP_ACK"], "{replies:?}");
}

fn or_add(id: u64, map: &str, key: &str, tag: &str) -> ClientOp {
    let record = OrRecord {
        value: Value::from("milk"),
        tag: tag.into(),
        timestamp: at(1),
        ttl_ms: None,
    };
    or_add_op(id, map, key, record)
}

/// The events in `msgs`, as (event type, key).
fn events(msgs: &[Message]) -> Vec<(ServerEventType, String)> {
    let mut out = Vec::new();
    for msg in msgs {
        match msg {
            Message::ServerEvent(e) => out.push((e.event_type, e.key.to_string())),
            Message::ServerBatchEvent(b) => {
                out.extend(b.events.iter().map(|e| (e.event_type, e.key.to_string())));
            }
            _ => {}
        }
    }
    out
}

/// COMPAT §4.2: a connection holding only a `QUERY_SUB` on a map hears of other connections'
/// writes to the LWW map and to the OR-Map of that name, and no more once its last query on
/// the map is gone.
#[tokio::test]
async fn a_query_subscriber_receives_lww_and_or_events_until_it_unsubscribes() {
    let server = start(no_auth(), None).await;
    let mut reader = connect(server.addr, "/ws").await;
    let mut writer = connect(server.addr, "/ws").await;
    send(&mut reader, &query_all("q1", "list")).await;
    send(&mut reader, &query_all("q2", "list")).await;
    let first = drain(&mut reader, 1).await;
    assert!(
        first.iter().any(|m| matches!(m, Message::QueryResp(_))),
        "{first:?}"
    );

    let ops = vec![
        put(1, "list", "lww-key"),
        or_add(2, "list", "or-key", "t1"),
        or_remove_op(3, "list", "or-key", "t1"),
    ];
    send(&mut writer, &op_batch(ops)).await;
    drain(&mut writer, 1).await;
    let got = events(&drain(&mut reader, 2).await);
    assert!(
        got.contains(&(ServerEventType::Put, "lww-key".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(ServerEventType::OrAdd, "or-key".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(ServerEventType::OrRemove, "or-key".into())),
        "{got:?}"
    );

    // One query left on the map: still subscribed. None left: no more events.
    let unsub = |id: &str| {
        Message::QueryUnsub(QueryRef {
            query_id: id.into(),
        })
    };
    send(&mut reader, &unsub("q1")).await;
    send(
        &mut writer,
        &op_batch(vec![or_add(4, "list", "or-2", "t2")]),
    )
    .await;
    drain(&mut writer, 2).await;
    let got = events(&drain(&mut reader, 3).await);
    assert_eq!(got, [(ServerEventType::OrAdd, "or-2".into())]);
    send(&mut reader, &unsub("q2")).await;
    drain(&mut reader, 4).await;
    send(
        &mut writer,
        &op_batch(vec![or_add(5, "list", "or-3", "t3"), put(6, "list", "k")]),
    )
    .await;
    drain(&mut writer, 3).await;
    assert_eq!(events(&drain(&mut reader, 5).await), []);
}

/// A `BATCH` frame of `items`, each a length-prefixed frame.
fn batch(items: &[Vec<u8>]) -> Message {
    let mut data = Vec::new();
    for item in items {
        data.extend_from_slice(&u32::try_from(item.len()).unwrap().to_be_bytes());
        data.extend_from_slice(item);
    }
    Message::Batch(Batch {
        count: 1,
        data: Bin(data),
    })
}

/// COMPAT §4.3: a bad item is refused naming its index and the next one is still served; a
/// frame packing more items than the rate limit allows is refused whole before any item is
/// decoded, whatever its `count` says; over 8,192 items is 413.
#[tokio::test]
async fn a_batch_is_charged_for_its_items_and_a_bad_item_stops_nothing() {
    let server = start(no_auth(), Some("ops_per_sec_per_connection = 5")).await;
    let mut c = connect(server.addr, "/ws").await;
    let items = [ping(1).encode(), vec![0xff, 0xff], ping(2).encode()];
    send(&mut c, &batch(&items)).await;
    let Ok(Message::Pong(p)) = recv(&mut c).await else {
        panic!("PONG 1")
    };
    assert_eq!(p.timestamp, 1);
    let why = expect_error(&mut c, 400).await;
    assert!(why.starts_with("BATCH item 1:"), "{why}");
    expect_pong(&mut c, 2).await;

    // The burst is 10 tokens; 3 went above. A frame of 30 items costs a whole bucket (10):
    // refused now, with nothing in it served (its PINGs get no PONG).
    let many: Vec<_> = (100..130).map(|ts| ping(ts).encode()).collect();
    send(&mut c, &batch(&many)).await;
    let why = expect_error(&mut c, 429).await;
    assert_eq!(why, "rate limit exceeded, slow down");
    send(&mut c, &ping(7)).await;
    expect_pong(&mut c, 7).await;

    let too_many: Vec<_> = (0..8_193).map(|_| Vec::new()).collect();
    send(&mut c, &batch(&too_many)).await;
    expect_error(&mut c, 413).await;
    send(&mut c, &ping(8)).await;
    expect_pong(&mut c, 8).await;
}

/// Once the bucket has refilled, a frame larger than the burst is let in: it costs a whole
/// bucket, not its item count, so it is never refused for ever.
#[tokio::test]
async fn a_batch_larger_than_the_burst_waits_for_a_full_bucket() {
    let server = start(no_auth(), Some("ops_per_sec_per_connection = 1000")).await;
    let mut c = connect(server.addr, "/ws").await;
    let many: Vec<_> = (0..5_000).map(|ts| ping(ts).encode()).collect();
    send(&mut c, &batch(&many)).await;
    for ts in 0..5_000 {
        expect_pong(&mut c, ts).await;
    }
}

/// COMPAT §7, what the TopGun MCP package's tools rely on: a `QUERY_SUB` with a `limit` from
/// a cold client gets its rows, and `hasMore` only ever with a usable `nextCursor`; a live
/// query then hears one `ENTER` per new key and one `LEAVE` per removed key, and nothing
/// for rows that were not touched.
#[tokio::test]
async fn queries_page_with_a_cursor_and_subscriptions_hear_only_what_changed() {
    use topgun_core::protocol::enums::ChangeType;
    let server = start(no_auth(), None).await;
    let mut writer = connect(server.addr, "/ws").await;
    let ops = (1..=5).map(|i| put(i, "notes", &format!("n{i}"))).collect();
    send(&mut writer, &op_batch(ops)).await;
    drain(&mut writer, 1).await;

    let mut reader = connect(server.addr, "/ws").await;
    let page = |id: &str, cursor: Option<String>| {
        Message::QuerySub(topgun_core::protocol::messages::QuerySub {
            query_id: id.into(),
            map_name: "notes".into(),
            query: topgun_core::protocol::query::Query {
                limit: Some(3),
                cursor: cursor.map(Into::into),
                ..topgun_core::protocol::query::Query::default()
            },
            fields: None,
        })
    };
    send(&mut reader, &page("p1", None)).await;
    let first = drain(&mut reader, 2).await;
    let Some(Message::QueryResp(first)) = first
        .into_iter()
        .find(|m| matches!(m, Message::QueryResp(_)))
    else {
        panic!("a QUERY_RESP");
    };
    assert_eq!(first.results.len(), 3);
    assert_eq!(first.has_more, Some(true));
    let cursor = first
        .next_cursor
        .expect("hasMore comes with a cursor")
        .to_string();
    send(&mut reader, &page("p2", Some(cursor))).await;
    let second = drain(&mut reader, 3).await;
    let Some(Message::QueryResp(second)) = second
        .into_iter()
        .find(|m| matches!(m, Message::QueryResp(_)))
    else {
        panic!("a QUERY_RESP");
    };
    assert_eq!(second.results.len(), 2, "the rest");
    assert_eq!(second.has_more, None);
    assert!(second.next_cursor.is_none());

    let mut watcher = connect(server.addr, "/ws").await;
    send(&mut watcher, &query_all("live", "notes")).await;
    drain(&mut watcher, 4).await;
    let remove = ClientOp {
        op_type: Some("REMOVE".into()),
        ..blank_op(7, "notes", "n1")
    };
    send(&mut writer, &op_batch(vec![put(6, "notes", "n6"), remove])).await;
    drain(&mut writer, 5).await;
    // The updates come through the push stream, which a PONG may overtake: wait for them.
    let mut changes: Vec<(String, ChangeType)> = Vec::new();
    while changes.len() < 2 {
        if let Message::QueryUpdate(u) = recv(&mut watcher).await.unwrap() {
            changes.push((u.key.to_string(), u.change_type));
        }
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changes,
        [
            ("n1".into(), ChangeType::Leave),
            ("n6".into(), ChangeType::Enter)
        ]
    );
    let rest = drain(&mut watcher, 6).await;
    assert!(
        !rest.iter().any(|m| matches!(m, Message::QueryUpdate(_))),
        "nothing for untouched rows: {rest:?}"
    );
}
