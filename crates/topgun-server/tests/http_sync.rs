//! `POST /sync` (COMPAT §2) over real HTTP against a real server: the shapes, the content
//! type, authentication, limits and errors, and that what it writes reaches WebSocket
//! clients like any other write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use topgun_core::protocol::Limits;
use topgun_core::protocol::http::{HttpQuery, HttpSearch, HttpSyncRequest, HttpSyncResponse};
use topgun_core::protocol::messages::ClientOp;
use topgun_core::protocol::{Message, decode_standalone, encode_standalone};
use topgun_core::{NodeId, Timestamp, Value};

fn at() -> Timestamp {
    Timestamp::new(now_ms(), 0, NodeId::new("http-client").unwrap())
}

fn request(operations: Vec<ClientOp>) -> HttpSyncRequest {
    HttpSyncRequest {
        client_id: "http-client".into(),
        client_hlc: at(),
        operations: Some(operations),
        sync_maps: None,
        queries: None,
        searches: None,
    }
}

fn put(id: u64, map: &str, key: &str, title: &str) -> ClientOp {
    let value = Value::Map([("title", Value::from(title))].into_iter().collect());
    put_op(id, map, key, value, at())
}

fn bearer(user: &str) -> String {
    let jwt = token(
        &serde_json::json!({"sub": user, "roles": ["user"], "exp": now_secs() + 3600}),
        SECRET,
    );
    format!("Authorization: Bearer {jwt}")
}

/// A WebSocket client, authenticated as bob with `roles`, holding a live query on `todos`.
async fn subscriber(addr: std::net::SocketAddr, roles: &[&str]) -> Client {
    let mut ws = connect(addr, "/ws").await;
    let jwt = token(
        &serde_json::json!({"sub": "bob", "roles": roles, "exp": now_secs() + 3600}),
        SECRET,
    );
    send(&mut ws, &auth(&jwt)).await;
    drain(&mut ws, 0).await;
    send(&mut ws, &query_all("q", "todos")).await;
    // The response comes through the push stream, which a PONG may overtake: wait for it.
    while !matches!(recv(&mut ws).await.unwrap(), Message::QueryResp(_)) {}
    ws
}

async fn post(addr: std::net::SocketAddr, headers: Vec<String>, body: Vec<u8>) -> HttpReply {
    http_post_async(addr, "/sync", headers, body).await
}

fn decoded(reply: &HttpReply) -> HttpSyncResponse {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), Some("application/msgpack"));
    decode_standalone(&reply.body, &Limits::default()).unwrap()
}

fn json(reply: &HttpReply) -> serde_json::Value {
    assert_eq!(reply.header("content-type"), Some("application/json"));
    serde_json::from_slice(&reply.body).unwrap()
}

#[tokio::test]
async fn an_empty_body_gets_the_server_clock_and_bad_bodies_get_400_without_harm() {
    let server = start(no_auth(), None).await;
    let reply = decoded(&post(server.addr, vec![], vec![]).await);
    assert!(reply.server_hlc.millis > 0);
    assert!(reply.ack.is_none() && reply.errors.is_none());

    let garbage = post(server.addr, vec![], vec![0xff, 0xff]).await;
    assert_eq!(garbage.status, 400);
    let body = json(&garbage);
    assert_eq!(body["code"], 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid MsgPack body")
    );

    // A value nested 1,000 arrays deep, in an otherwise valid request.
    let mut deep = vec![0x91; 1_000];
    deep.push(0xc0);
    let mut body = encode_standalone(&request(vec![]));
    body[0] += 1; // one more key in the fixmap: "deep": [[[…]]]
    body.extend_from_slice(&[0xa4, b'd', b'e', b'e', b'p']);
    body.extend_from_slice(&deep);
    let nested = post(server.addr, vec![], body).await;
    assert_eq!(
        nested.status,
        400,
        "{}",
        String::from_utf8_lossy(&nested.body)
    );

    let too_big = post(server.addr, vec![], vec![0xc0; 3 * 1024 * 1024]).await;
    assert_eq!(too_big.status, 413);
    assert_eq!(json(&too_big)["code"], 413);

    // The server goes on serving.
    let again = decoded(&post(server.addr, vec![], vec![]).await);
    assert!(again.server_hlc.millis > 0);
}

/// More operations than `ops_per_batch_max`, or more than 64 entries in another list: 413 for
/// the whole request, nothing applied; at the bound, served.
#[tokio::test]
async fn lists_over_their_bounds_are_refused_whole_with_413() {
    let server = start(no_auth(), Some("ops_per_batch_max = 3\n")).await;
    let ops = |n: u64| {
        (0..n)
            .map(|i| put(i, "todos", &format!("k{i}"), "x"))
            .collect()
    };
    let over = post(server.addr, vec![], encode_standalone(&request(ops(4)))).await;
    assert_eq!(over.status, 413, "{}", String::from_utf8_lossy(&over.body));
    let message = json(&over)["message"].as_str().unwrap().to_owned();
    assert!(message.contains("at most 3"), "{message}");

    let maps: Vec<(&str, u64)> = vec![("todos", 0); 65];
    let over = post(server.addr, vec![], syncing(&maps, vec![])).await;
    assert_eq!(over.status, 413);

    let (nothing, _) = delta(&decoded(
        &post(server.addr, vec![], syncing(&[("todos", 0)], vec![])).await,
    ));
    assert!(nothing.is_empty(), "nothing was applied: {nothing:?}");
    let at_bound = decoded(&post(server.addr, vec![], encode_standalone(&request(ops(3)))).await);
    assert_eq!(at_bound.ack.expect("ack").last_id, "2");
}

#[tokio::test]
async fn a_jwt_server_refuses_token_less_and_bad_tokens_with_401() {
    let server = start(jwt(), Some(USERS_OWN_TODOS)).await;
    let body = encode_standalone(&request(vec![put(1, "todos", "a", "milk")]));
    for headers in [
        vec![],
        vec!["Authorization: Bearer ".to_owned()],
        vec!["Authorization: Bearer undefined".to_owned()],
        vec!["Authorization: Bearer null".to_owned()],
    ] {
        let refused = post(server.addr, headers, body.clone()).await;
        assert_eq!(refused.status, 401);
        let body = json(&refused);
        assert_eq!(
            body,
            serde_json::json!({"code": 401, "message": "authentication required"})
        );
    }
    let bad = post(
        server.addr,
        vec!["Authorization: Bearer x.y.z".into()],
        body,
    )
    .await;
    assert_eq!(bad.status, 401);
    assert!(
        json(&bad)["message"]
            .as_str()
            .unwrap()
            .starts_with("Authentication failed: ")
    );
}

/// Ops run the WebSocket write pipeline: a denied op is reported in `results` and `errors`
/// while the others apply, and what was written reaches a WebSocket subscriber.
#[tokio::test]
async fn operations_are_acked_per_op_and_reach_websocket_clients() {
    let server = start(jwt(), Some(USERS_OWN_TODOS)).await;
    let mut ws = subscriber(server.addr, &["user"]).await;

    let ops = vec![
        put(1, "todos", "a", "milk"),
        put(2, "secret", "b", "x"),
        put(3, "todos", "c", "eggs"),
    ];
    let body = encode_standalone(&request(ops));
    let reply = decoded(&post(server.addr, vec![bearer("alice")], body).await);
    let ack = reply.ack.expect("an ack");
    assert_eq!(ack.last_id, "3");
    let results: Vec<_> = ack
        .results
        .unwrap()
        .into_iter()
        .map(|r| (r.op_id.to_string(), r.success))
        .collect();
    assert_eq!(
        results,
        [("1".into(), true), ("2".into(), false), ("3".into(), true)]
    );
    let errors = reply.errors.expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, 403);
    let context = errors[0].context.as_ref().unwrap();
    assert_eq!(context.get("opId"), Some(&Value::from("2")));
    assert_eq!(context.get("mapName"), Some(&Value::from("secret")));

    // The WebSocket subscriber hears of both writes, and only of them.
    let mut keys = Vec::new();
    while keys.len() < 2 {
        match recv(&mut ws).await.unwrap() {
            Message::ServerEvent(e) => keys.push(e.key.to_string()),
            Message::ServerBatchEvent(b) => keys.extend(b.events.iter().map(|e| e.key.to_string())),
            _ => {}
        }
    }
    keys.sort();
    assert_eq!(keys, ["a", "c"]);
}

#[tokio::test]
async fn queries_answer_rows_with_their_keys_and_searches_are_refused_for_now() {
    let server = start(no_auth(), None).await;
    let ops = vec![put(1, "todos", "a", "milk"), put(2, "todos", "b", "eggs")];
    decoded(&post(server.addr, vec![], encode_standalone(&request(ops))).await);

    let mut ask = request(vec![]);
    let filter = Value::Map([("title", Value::from("eggs"))].into_iter().collect());
    ask.queries = Some(vec![
        HttpQuery {
            query_id: "all".into(),
            map_name: "todos".into(),
            filter: None,
            limit: Some(1),
            offset: None,
            cursor: None,
        },
        HttpQuery {
            query_id: "eggs".into(),
            map_name: "todos".into(),
            filter: Some(filter),
            limit: None,
            offset: None,
            cursor: None,
        },
        HttpQuery {
            query_id: "reserved".into(),
            map_name: "__topgun_locks".into(),
            filter: None,
            limit: None,
            offset: None,
            cursor: None,
        },
    ]);
    ask.searches = Some(vec![HttpSearch {
        search_id: "s".into(),
        map_name: "todos".into(),
        query: "milk".into(),
        options: None,
    }]);
    let reply = decoded(&post(server.addr, vec![], encode_standalone(&ask)).await);
    let results = reply.query_results.expect("query results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].query_id, "all");
    assert_eq!(results[0].results.len(), 1);
    assert_eq!(results[0].has_more, Some(true));
    assert!(
        results[0].next_cursor.is_some(),
        "hasMore comes with a cursor"
    );
    let row = &results[1].results[0];
    assert_eq!(row.get("key"), Some(&Value::from("b")));
    assert_eq!(
        row.get("value").and_then(|v| v.get("title")),
        Some(&Value::from("eggs"))
    );
    let errors = reply.errors.expect("errors");
    let codes: Vec<_> = errors.iter().map(|e| e.code).collect();
    assert_eq!(codes, [403, 501], "{errors:?}");
}

/// With `TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS=1` a token-less request on a JWT server is served
/// as the anonymous subject (the reference's behaviour, opted into): without policies its
/// PUT is acknowledged and reaches a WebSocket subscriber; a bad token is still refused.
#[tokio::test]
async fn the_anonymous_opt_in_serves_token_less_requests() {
    let env = topgun_server::config::AuthEnv {
        http_sync_allow_anonymous: Some("1".into()),
        ..jwt()
    };
    let server = start(env, None).await;
    let mut ws = subscriber(server.addr, &[]).await;

    let body = encode_standalone(&request(vec![put(1, "todos", "anon", "from the edge")]));
    let reply = decoded(&post(server.addr, vec![], body.clone()).await);
    assert_eq!(reply.ack.expect("an ack").last_id, "1");
    loop {
        match recv(&mut ws).await.unwrap() {
            Message::ServerEvent(e) => {
                assert_eq!(e.key, "anon");
                break;
            }
            Message::QueryUpdate(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let bad = post(
        server.addr,
        vec!["Authorization: Bearer x.y.z".into()],
        body,
    )
    .await;
    assert_eq!(bad.status, 401);
}

/// A `syncMaps` entry from `millis` (the TS provider's first one has an empty node id).
fn sync_from(map: &str, millis: u64) -> topgun_core::protocol::http::SyncMapRequest {
    topgun_core::protocol::http::SyncMapRequest {
        map_name: map.into(),
        last_sync_timestamp: topgun_core::protocol::http::SyncSince {
            millis,
            counter: 0,
            node_id: "".into(),
        },
    }
}

/// A request syncing `map` from the `serverSyncTimestamp` a previous delta handed back.
fn syncing_from(map: &str, last: &Timestamp) -> Vec<u8> {
    let mut ask = request(vec![]);
    let since = topgun_core::protocol::http::SyncSince {
        millis: last.millis,
        counter: last.counter,
        node_id: last.node_id.as_str().into(),
    };
    ask.sync_maps = Some(vec![topgun_core::protocol::http::SyncMapRequest {
        map_name: map.into(),
        last_sync_timestamp: since,
    }]);
    encode_standalone(&ask)
}

/// A request syncing `maps`, each from its time, with `operations`.
fn syncing(maps: &[(&str, u64)], operations: Vec<ClientOp>) -> Vec<u8> {
    let mut ask = request(operations);
    ask.sync_maps = Some(maps.iter().map(|(m, t)| sync_from(m, *t)).collect());
    encode_standalone(&ask)
}

/// The one delta of a reply: `(key, eventType, title)` of each record, and the time to ask
/// from next.
fn delta(reply: &HttpSyncResponse) -> (Vec<(String, String, Option<Value>)>, Timestamp) {
    let deltas = reply.deltas.as_ref().expect("deltas");
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    let records = deltas[0]
        .records
        .iter()
        .map(|r| {
            let title = r.record.value.get("title").cloned();
            (r.key.to_string(), r.event_type.as_str().to_owned(), title)
        })
        .collect();
    (records, deltas[0].server_sync_timestamp.clone())
}

/// Writes `ops` over a WebSocket and waits for them to be acknowledged.
async fn write_over_ws(ws: &mut Client, ops: Vec<ClientOp>) {
    let last = ops.last().and_then(|op| op.id.clone()).unwrap();
    send(ws, &op_batch(ops)).await;
    loop {
        match recv(ws).await.unwrap() {
            Message::OpAck(ack) if ack.last_id == last => return,
            Message::OpAck(_) | Message::ServerEvent(_) | Message::ServerBatchEvent(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A remove, stamped after any put of [`at`] in the same millisecond.
fn remove(id: u64, map: &str, key: &str) -> ClientOp {
    let later = Timestamp::new(now_ms(), 1, NodeId::new("http-client").unwrap());
    ClientOp {
        op_type: Some("REMOVE".into()),
        record: topgun_core::protocol::wire::Field::Value(topgun_core::LwwRecord::tombstone(later)),
        ..blank_op(id, map, key)
    }
}

/// What another client writes over the WebSocket — puts and removes — reaches an HTTP caller
/// as the next delta; as does what another HTTP caller writes; and each delta's time is the
/// server's, the scan's start.
#[tokio::test]
async fn writes_by_others_reach_an_http_caller_as_deltas() {
    let server = start(no_auth(), None).await;
    let first = decoded(&post(server.addr, vec![], syncing(&[("todos", 0)], vec![])).await);
    let (records, synced) = delta(&first);
    assert!(records.is_empty());
    assert!(synced.millis > 0 && synced.counter == 0);
    assert_eq!(
        synced.node_id, first.server_hlc.node_id,
        "the server's node id"
    );

    let mut ws = connect(server.addr, "/ws").await;
    write_over_ws(
        &mut ws,
        vec![put(1, "todos", "a", "milk"), put(2, "todos", "b", "eggs")],
    )
    .await;
    write_over_ws(&mut ws, vec![remove(3, "todos", "b")]).await;
    let body = syncing(&[("todos", synced.millis)], vec![]);
    let (mut records, _) = delta(&decoded(&post(server.addr, vec![], body).await));
    // By arrival; within one millisecond by a per-process hash of the key: sorted here.
    records.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        records,
        [
            ("a".into(), "PUT".into(), Some(Value::from("milk"))),
            ("b".into(), "REMOVE".into(), None),
        ]
    );

    // Another HTTP caller's write: in its own delta, and in the first caller's next one.
    let before = now_ms();
    let own = syncing(&[("todos", before)], vec![put(4, "todos", "c", "tea")]);
    let (records, _) = delta(&decoded(&post(server.addr, vec![], own).await));
    assert!(records.iter().any(|(k, _, _)| k == "c"), "{records:?}");
    let body = syncing(&[("todos", synced.millis)], vec![]);
    let (records, _) = delta(&decoded(&post(server.addr, vec![], body).await));
    let mut keys: Vec<_> = records.iter().map(|(k, _, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["a", "b", "c"]);
}

/// An offline write arrives after the caller's last sync stamped with an old HLC time: it is
/// still in the next delta, which goes by arrival, not by HLC time.
#[tokio::test]
async fn a_late_write_with_an_old_timestamp_still_reaches_the_next_delta() {
    let server = start(no_auth(), None).await;
    let first = decoded(&post(server.addr, vec![], syncing(&[("todos", 0)], vec![])).await);
    let (_, synced) = delta(&first);

    let mut ws = connect(server.addr, "/ws").await;
    let an_hour_ago = Timestamp::new(now_ms() - 3_600_000, 0, NodeId::new("offline").unwrap());
    let value = Value::Map([("title", Value::from("old"))].into_iter().collect());
    let late = put_op(1, "todos", "late", value, an_hour_ago);
    write_over_ws(&mut ws, vec![late]).await;

    let body = syncing(&[("todos", synced.millis)], vec![]);
    let (records, _) = delta(&decoded(&post(server.addr, vec![], body).await));
    assert_eq!(
        records,
        [("late".into(), "PUT".into(), Some(Value::from("old")))]
    );
}

const READERS: &str = r#"
[[policies]]
role = "user"
map_name_pattern = "todos"
actions = ["ALL"]

[[policies]]
role = "user"
map_name_pattern = "profiles"
actions = ["READ"]
allowed_fields = ["title"]

[[policies]]
role = "writer"
map_name_pattern = "profiles"
actions = ["ALL"]
"#;

/// `READ` is checked per map: a map the caller may not read is an error naming it, the others
/// are served; a reader limited to some fields sees only those.
#[tokio::test]
async fn a_map_the_caller_may_not_read_is_refused_and_field_limits_apply() {
    let server = start(jwt(), Some(READERS)).await;
    let writer = token(
        &serde_json::json!({"sub": "w", "roles": ["writer"], "exp": now_secs() + 3600}),
        SECRET,
    );
    let value = Value::Map(
        [
            ("title", Value::from("bob")),
            ("email", Value::from("bob@x")),
        ]
        .into_iter()
        .collect(),
    );
    let body = encode_standalone(&request(vec![put_op(1, "profiles", "bob", value, at())]));
    let written = decoded(
        &post(
            server.addr,
            vec![format!("Authorization: Bearer {writer}")],
            body,
        )
        .await,
    );
    assert!(written.errors.is_none(), "{:?}", written.errors);

    let body = syncing(&[("secret", 0), ("profiles", 0)], vec![]);
    let reply = decoded(&post(server.addr, vec![bearer("alice")], body).await);
    let (records, _) = delta(&reply);
    assert_eq!(records.len(), 1);
    let deltas = reply.deltas.as_ref().unwrap();
    assert_eq!(deltas[0].map_name, "profiles");
    let seen = &deltas[0].records[0].record.value;
    assert_eq!(seen.get("title"), Some(&Value::from("bob")));
    assert_eq!(seen.get("email"), None, "a field the reader may not see");
    let errors = reply.errors.expect("errors");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, 403);
    let context = errors[0].context.as_ref().unwrap();
    assert_eq!(context.get("mapName"), Some(&Value::from("secret")));
}

/// A delta holds at most 10,000 records, the earliest arrivals; its timestamp is then the
/// last one's place, and asking again from it brings the rest, nothing sent twice but the
/// records that share the last one's place.
#[tokio::test]
async fn a_delta_is_cut_at_ten_thousand_and_the_next_request_continues_from_its_end() {
    let server = start(no_auth(), None).await;
    let mut ws = connect(server.addr, "/ws").await;
    write_over_ws(&mut ws, bulk("a", 0, 6_000)).await;
    let before_second = now_ms();
    write_over_ws(&mut ws, bulk("b", 6_000, 6_000)).await;
    let after_second = now_ms();

    let reply = decoded(&post(server.addr, vec![], syncing(&[("bulk", 0)], vec![])).await);
    let (first, synced) = delta(&reply);
    assert_eq!(first.len(), 10_000);
    assert_eq!(
        first.iter().filter(|(k, _, _)| k.starts_with('a')).count(),
        6_000,
        "the earliest arrivals first"
    );
    assert!(
        (before_second..=after_second + 1).contains(&synced.millis),
        "the last record's arrival: {} not in {before_second}..={after_second}",
        synced.millis
    );
    assert_ne!(
        synced.counter, 0,
        "a cut delta's place within its millisecond"
    );

    let before_scan = now_ms();
    let reply = decoded(&post(server.addr, vec![], syncing_from("bulk", &synced)).await);
    let (rest, next) = delta(&reply);
    assert!(next.millis >= before_scan, "not cut: the scan's start");
    assert_eq!(next.counter, 0);
    assert!(
        rest.len() < 2_100,
        "{} records sent again",
        rest.len() - 2_000
    );
    let mut keys: std::collections::BTreeSet<&str> =
        first.iter().map(|(k, _, _)| k.as_str()).collect();
    keys.extend(rest.iter().map(|(k, _, _)| k.as_str()));
    assert_eq!(keys.len(), 12_000, "nothing missed");

    // Up to date: the next delta is empty, and a later write is in the one after.
    let (none, next) = delta(&decoded(
        &post(server.addr, vec![], syncing_from("bulk", &next)).await,
    ));
    assert!(none.is_empty(), "{none:?}");
    write_over_ws(&mut ws, bulk("c", 12_000, 1)).await;
    let (late, _) = delta(&decoded(
        &post(server.addr, vec![], syncing_from("bulk", &next)).await,
    ));
    assert_eq!(late.len(), 1);
}

/// `count` puts of `bulk/<prefix><i>`, ids from `first_id`.
fn bulk(prefix: &str, first_id: u64, count: u64) -> Vec<ClientOp> {
    (0..count)
        .map(|i| put(first_id + i, "bulk", &format!("{prefix}{i:05}"), "x"))
        .collect()
}

/// After a restart every record arrives at once (at start): far more than a delta holds share
/// one millisecond, and a client still pages through them all, each request moving on.
#[tokio::test]
async fn records_sharing_one_arrival_page_through_in_full() {
    let store = std::sync::Arc::new(topgun_server::storage::store::MemoryStore::new());
    {
        let mut server = start_with_store(no_auth(), None, store.clone()).await;
        let mut ws = connect(server.addr, "/ws").await;
        for part in 0..5 {
            write_over_ws(&mut ws, bulk(&format!("{part}-"), part * 5_000, 5_000)).await;
        }
        server.stop.take().unwrap().send(()).unwrap();
        drop(ws);
        server.task.await.unwrap().unwrap();
    }
    let server = start_with_store(no_auth(), None, store).await;
    let mut keys = std::collections::BTreeSet::new();
    let reply = decoded(&post(server.addr, vec![], syncing(&[("bulk", 0)], vec![])).await);
    let (mut page, mut synced) = delta(&reply);
    let mut requests = 1;
    while synced.counter != 0 {
        assert_eq!(page.len(), 10_000);
        keys.extend(page.into_iter().map(|(k, _, _)| k));
        let reply = decoded(&post(server.addr, vec![], syncing_from("bulk", &synced)).await);
        (page, synced) = delta(&reply);
        requests += 1;
        assert!(
            requests <= 4,
            "25,000 records in three deltas, not {requests}"
        );
    }
    keys.extend(page.into_iter().map(|(k, _, _)| k));
    assert_eq!(keys.len(), 25_000, "nothing missed");
    assert_eq!(requests, 3);
}

/// Counts the connections the interceptors were told had ended.
#[derive(Debug, Default)]
struct Ended(std::sync::atomic::AtomicUsize);

impl topgun_server::security::interceptor::Interceptor for Ended {
    fn on_disconnect(&self, _: &topgun_server::security::interceptor::ConnInfo) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Each request is a connection that ends with it: the interceptors hear of every one,
/// refused ones included, so that per-connection state (the rate limiter's buckets) does
/// not pile up with the requests.
#[tokio::test]
async fn every_request_s_connection_ends_with_it() {
    use topgun_server::config::{Cli, Config};
    let ended = std::sync::Arc::new(Ended::default());
    let cli = Cli {
        port: Some(0),
        host: Some("127.0.0.1".parse().unwrap()),
        ..Cli::default()
    };
    let mut config = Config::resolve(&cli, None, &no_auth()).unwrap();
    config.interceptors.push(ended.clone());
    let server = serve(topgun_server::Server::bind(config).await.unwrap());
    for id in 1..=3 {
        let body = encode_standalone(&request(vec![put(id, "todos", "k", "v")]));
        decoded(&post(server.addr, vec![], body).await);
    }
    let reserved = encode_standalone(&request(vec![put(4, "__topgun_x", "k", "v")]));
    decoded(&post(server.addr, vec![], reserved).await);
    assert_eq!(ended.0.load(std::sync::atomic::Ordering::SeqCst), 4);
}
