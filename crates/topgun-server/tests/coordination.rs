//! Topics, locks, counters and the declined extensions, over real sockets.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use topgun_core::PnCounter;
use topgun_core::Value;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    CounterRequest, CounterState, EntryProcess, EntryProcessBatch, EntryProcessor, ListResolvers,
    LockRelease, LockRequest, RegisterResolver, ResolverDef, TopicPub, TopicRef,
};
use topgun_server::storage::store::{MemoryStore, Store};

async fn open(addr: std::net::SocketAddr) -> Client {
    let mut c = connect(addr, "/ws").await;
    send(&mut c, &ping(1)).await;
    expect_pong(&mut c, 1).await;
    c
}

fn sub(topic: &str) -> Message {
    Message::TopicSub(TopicRef {
        topic: topic.into(),
    })
}

fn publish(topic: &str, data: Value) -> Message {
    Message::TopicPub(TopicPub {
        topic: topic.into(),
        data,
    })
}

/// Subscribes and proves the subscription is in place (replies keep request order).
async fn subscribe(c: &mut Client, topic: &str) {
    send(c, &sub(topic)).await;
    send(c, &ping(2)).await;
    expect_pong(c, 2).await;
}

/// The next `TOPIC_MESSAGE`: (topic, data, publisherId).
async fn topic_message(c: &mut Client) -> (String, Value, Option<String>) {
    match recv(c).await {
        Ok(Message::TopicMessage(m)) => (
            m.topic.to_string(),
            m.data,
            m.publisher_id.map(|p| p.to_string()),
        ),
        other => panic!("expected TOPIC_MESSAGE, got {other:?}"),
    }
}

/// Nothing but a `PONG` arrives before the `PONG` of a fresh ping.
async fn expect_quiet(c: &mut Client) {
    send(c, &ping(99)).await;
    expect_pong(c, 99).await;
}

#[tokio::test]
async fn topics_fan_out_in_publisher_order_to_everyone_but_the_publisher() {
    let server = start(no_auth(), None).await;
    let mut subscribers = Vec::new();
    for _ in 0..20 {
        let mut c = open(server.addr).await;
        subscribe(&mut c, "chat:room/1").await;
        subscribers.push(c);
    }
    let mut a = open(server.addr).await;
    let mut b = open(server.addr).await;
    subscribe(&mut a, "chat:room/1").await;
    // Two publishers interleave; every subscriber sees each one's messages in order.
    for i in 0..50 {
        send(&mut a, &publish("chat:room/1", Value::Int(i))).await;
        send(&mut b, &publish("chat:room/1", Value::Int(1000 + i))).await;
    }
    for c in &mut subscribers {
        let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            let (topic, data, publisher) = topic_message(c).await;
            assert_eq!(topic, "chat:room/1");
            let publisher = publisher.expect("publisherId is set");
            let Value::Int(n) = data else {
                panic!("{data:?}")
            };
            if n < 1000 { &mut from_a } else { &mut from_b }.push((n, publisher));
        }
        assert_eq!(
            from_a.iter().map(|m| m.0).collect::<Vec<_>>(),
            (0..50).collect::<Vec<_>>()
        );
        assert_eq!(
            from_b.iter().map(|m| m.0).collect::<Vec<_>>(),
            (1000..1050).collect::<Vec<_>>()
        );
        assert_ne!(from_a[0].1, from_b[0].1, "publishers are told apart");
        expect_quiet(c).await;
    }
    // The publisher does not hear itself, only the other publisher.
    for i in 0..50 {
        let (_, data, _) = topic_message(&mut a).await;
        assert_eq!(data, Value::Int(1000 + i));
    }
    expect_quiet(&mut a).await;
}

#[tokio::test]
async fn publisher_id_names_the_authenticated_user() {
    let server = start(jwt(), None).await;
    let login = |user: &str| {
        let claims = serde_json::json!({"sub": user, "exp": now_secs() + 600});
        auth(&token(&claims, SECRET))
    };
    let mut alice = connect(server.addr, "/ws").await;
    let mut bob = connect(server.addr, "/ws").await;
    for (c, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let _ = recv(c).await; // AUTH_REQUIRED
        send(c, &login(user)).await;
        assert!(matches!(recv(c).await, Ok(Message::AuthAck(_))));
    }
    subscribe(&mut bob, "news").await;
    send(&mut alice, &publish("news", Value::Str("hi".into()))).await;
    let (_, data, publisher) = topic_message(&mut bob).await;
    assert_eq!(
        (data, publisher.as_deref()),
        (Value::Str("hi".into()), Some("alice"))
    );
}

#[tokio::test]
async fn topic_names_and_limits_are_enforced_and_subscriptions_end_with_the_connection() {
    let server = start(no_auth(), Some("topics_per_connection_max = 3")).await;
    let mut c = open(server.addr).await;
    for bad in ["", "has space", "wild*card", &"x".repeat(257)] {
        send(&mut c, &sub(bad)).await;
        let why = expect_error(&mut c, 400).await;
        assert!(why.starts_with("topic name"), "{why}");
        send(&mut c, &publish(bad, Value::Nil)).await;
        expect_error(&mut c, 400).await;
    }
    for topic in ["a", "b", "c", "c"] {
        subscribe(&mut c, topic).await;
    }
    send(&mut c, &sub("d")).await;
    let why = expect_error(&mut c, 429).await;
    assert!(why.contains("3 topics"), "{why}");
    // Unsubscribing makes room.
    send(&mut c, &Message::TopicUnsub(TopicRef { topic: "a".into() })).await;
    subscribe(&mut c, "d").await;

    // A subscriber that disconnects is no longer delivered to; others still are.
    let mut publisher = open(server.addr).await;
    drop(c);
    let mut late = open(server.addr).await;
    subscribe(&mut late, "d").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_before = events_sent(server.addr).await;
    send(&mut publisher, &publish("d", Value::Int(1))).await;
    let (_, data, _) = topic_message(&mut late).await;
    assert_eq!(data, Value::Int(1));
    assert_eq!(events_sent(server.addr).await - sent_before, 1);
}

/// `topgun_events_sent_total` from `/metrics`.
async fn events_sent(addr: std::net::SocketAddr) -> u64 {
    let (_, body) = http_get_async(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("topgun_events_sent_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("topgun_events_sent_total is exported")
}

fn lock(request_id: &str, name: &str, ttl: Option<u64>) -> Message {
    Message::LockRequest(LockRequest {
        request_id: request_id.into(),
        name: name.into(),
        ttl,
    })
}

fn unlock(request_id: &str, name: &str, token: u64) -> Message {
    Message::LockRelease(LockRelease {
        request_id: Some(request_id.into()),
        name: name.into(),
        fencing_token: token,
    })
}

async fn granted(c: &mut Client, request_id: &str) -> u64 {
    match recv(c).await {
        Ok(Message::LockGranted(g)) => {
            assert_eq!(g.request_id, request_id);
            g.fencing_token
        }
        other => panic!("expected LOCK_GRANTED for {request_id}, got {other:?}"),
    }
}

async fn released(c: &mut Client, request_id: &str) -> bool {
    match recv(c).await {
        Ok(Message::LockReleased(r)) => {
            assert_eq!(r.request_id, request_id);
            r.success
        }
        other => panic!("expected LOCK_RELEASED for {request_id}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_busy_lock_queues_until_released_and_tokens_increase() {
    let server = start(no_auth(), None).await;
    let mut a = open(server.addr).await;
    let mut b = open(server.addr).await;
    let mut c = open(server.addr).await;
    send(&mut a, &lock("a1", "orders/42", Some(10_000))).await;
    let t1 = granted(&mut a, "a1").await;
    send(&mut b, &lock("b1", "orders/42", Some(10_000))).await;
    send(&mut c, &lock("c1", "orders/42", Some(10_000))).await;
    // Waiting requests are not answered at all (the TS client would read any answer as
    // success), not even with LOCK_RELEASED.
    expect_quiet(&mut b).await;
    // The holder asking again keeps its token.
    send(&mut a, &lock("a2", "orders/42", Some(10_000))).await;
    assert_eq!(granted(&mut a, "a2").await, t1);
    // A release needs the current token.
    send(&mut b, &unlock("b-bad", "orders/42", t1 + 100)).await;
    assert!(!released(&mut b, "b-bad").await);
    send(&mut a, &unlock("a3", "orders/42", t1)).await;
    assert!(released(&mut a, "a3").await);
    let t2 = granted(&mut b, "b1").await;
    assert!(t2 > t1, "{t2} > {t1}");
    expect_quiet(&mut c).await;
    // Closing the holder's connection hands the lock on.
    drop(b);
    let t3 = granted(&mut c, "c1").await;
    assert!(t3 > t2);
    // Names and ttl are checked, with an ERROR rather than a denial the client misreads.
    send(&mut c, &lock("c2", "bad name", None)).await;
    expect_error(&mut c, 400).await;
    send(&mut c, &lock("c3", "x", Some(0))).await;
    expect_error(&mut c, 400).await;
}

#[tokio::test]
async fn a_lease_expires_and_the_next_waiter_is_granted() {
    let server = start(no_auth(), None).await;
    let mut a = open(server.addr).await;
    let mut b = open(server.addr).await;
    send(&mut a, &lock("a", "lease", Some(300))).await;
    let t1 = granted(&mut a, "a").await;
    let asked = std::time::Instant::now();
    send(&mut b, &lock("b", "lease", Some(5_000))).await;
    let t2 = granted(&mut b, "b").await;
    assert!(t2 > t1);
    assert!(
        asked.elapsed() >= Duration::from_millis(250),
        "{:?}",
        asked.elapsed()
    );
    // The expired holder's token no longer releases anything.
    send(&mut a, &unlock("a-late", "lease", t1)).await;
    assert!(!released(&mut a, "a-late").await);
}

#[tokio::test]
async fn fencing_tokens_keep_increasing_across_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut last = 0;
    for _ in 0..3 {
        let mut server = start_with_store(no_auth(), None, Arc::clone(&store)).await;
        let mut c = open(server.addr).await;
        for i in 0..3 {
            send(&mut c, &lock("r", &format!("l{i}"), None)).await;
            let token = granted(&mut c, "r").await;
            assert!(token > last, "{token} > {last}");
            last = token;
        }
        drop(c);
        let _ = server.stop.take().unwrap().send(());
        server.task.await.unwrap().unwrap();
    }
}

fn counter(positive: &[(&str, f64)], negative: &[(&str, f64)]) -> PnCounter {
    let side = |s: &[(&str, f64)]| {
        s.iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    PnCounter::from_parts(side(positive), side(negative)).unwrap()
}

async fn counter_state(c: &mut Client) -> (String, PnCounter) {
    match recv(c).await {
        Ok(Message::CounterUpdate(s) | Message::CounterResponse(s)) => {
            (s.name.to_string(), s.state)
        }
        other => panic!("expected a counter state, got {other:?}"),
    }
}

/// One client's increments: `rounds` syncs of its own state (+2 each, −1 every fifth),
/// each waiting for its answer. Returns its state.
async fn increment(
    addr: std::net::SocketAddr,
    id: usize,
    rounds: u32,
    mut mine: PnCounter,
) -> PnCounter {
    let node = format!("node-{id}");
    let mut c = open(addr).await;
    for round in 1..=rounds {
        mine.add(&node, 2.0).unwrap();
        if round % 5 == 0 {
            mine.add(&node, -1.0).unwrap();
        }
        let sync = Message::CounterSync(CounterState {
            name: "likes".into(),
            state: mine.clone(),
        });
        send(&mut c, &sync).await;
        // The answer (other clients' merges may arrive first) holds at least this state.
        loop {
            let (name, state) = counter_state(&mut c).await;
            assert_eq!(name, "likes");
            if state.positive().get(&node) == mine.positive().get(&node)
                && state.negative().get(&node) == mine.negative().get(&node)
            {
                break;
            }
        }
    }
    mine
}

/// Four clients incrementing at once, each from its own state.
async fn increment_all(
    addr: std::net::SocketAddr,
    rounds: u32,
    states: Vec<PnCounter>,
) -> Vec<PnCounter> {
    let tasks: Vec<_> = states
        .into_iter()
        .enumerate()
        .map(|(id, mine)| tokio::spawn(increment(addr, id, rounds, mine)))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

async fn request_counter(addr: std::net::SocketAddr) -> PnCounter {
    let mut c = open(addr).await;
    let request = Message::CounterRequest(CounterRequest {
        name: "likes".into(),
    });
    send(&mut c, &request).await;
    counter_state(&mut c).await.1
}

#[tokio::test]
async fn counters_converge_under_concurrent_increments_across_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut server = start_with_store(no_auth(), None, Arc::clone(&store)).await;
    let mut watcher = open(server.addr).await;
    let request = Message::CounterRequest(CounterRequest {
        name: "likes".into(),
    });
    send(&mut watcher, &request).await;
    assert_eq!(counter_state(&mut watcher).await.1, PnCounter::new());

    let states = increment_all(server.addr, 25, vec![PnCounter::new(); 4]).await;
    let expected = 4.0 * (2.0 * 25.0 - 5.0);
    // The watcher hears every durable merge; the last one holds everything.
    let mut heard = PnCounter::new();
    while heard.value() < expected {
        heard = counter_state(&mut watcher).await.1;
    }
    assert!((heard.value() - expected).abs() < f64::EPSILON, "{heard:?}");
    assert_eq!(request_counter(server.addr).await, heard);
    drop(watcher);
    let _ = server.stop.take().unwrap().send(());
    server.task.await.unwrap().unwrap();

    // After a restart the counter is intact, and the clients go on from their own states.
    let server = start_with_store(no_auth(), None, store).await;
    assert_eq!(
        request_counter(server.addr).await,
        heard,
        "kept across the restart"
    );
    let states = increment_all(server.addr, 10, states).await;
    let mut merged = PnCounter::new();
    for state in &states {
        merged.merge(state).unwrap();
    }
    let total = 4.0 * (2.0 * 35.0 - 7.0);
    assert!((merged.value() - total).abs() < f64::EPSILON);
    assert_eq!(
        request_counter(server.addr).await,
        merged,
        "the server converged"
    );
}

#[tokio::test]
async fn the_ts_clients_counter_spelling_is_accepted_and_both_are_sent() {
    let server = start(no_auth(), None).await;
    let mut c = open(server.addr).await;
    let frame = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../topgun-core/tests/vectors/c2s/COUNTER_SYNC__positive_negative.msgpack"
    ))
    .unwrap();
    c.send(tokio_tungstenite::tungstenite::Message::Binary(
        frame.into(),
    ))
    .await
    .unwrap();
    let (name, state) = counter_state(&mut c).await;
    assert_eq!(name, "page-views");
    assert_eq!(
        state,
        counter(&[("node-1", 5.0), ("node-2", 1_099_511_627_776.0)], &[])
    );
    // A negative total is refused, naming the field, and changes nothing.
    let mut w = topgun_core::protocol::msgpack::Writer::new();
    w.map_header(2);
    w.str("type");
    w.str("COUNTER_SYNC");
    w.str("payload");
    w.map_header(2);
    w.str("name");
    w.str("page-views");
    w.str("state");
    w.map_header(2);
    w.str("p");
    w.map_header(1);
    w.str("node-1");
    w.f64(-3.0);
    w.str("n");
    w.map_header(0);
    c.send(tokio_tungstenite::tungstenite::Message::Binary(
        w.into_bytes().into(),
    ))
    .await
    .unwrap();
    let why = expect_error(&mut c, 400).await;
    assert!(
        why.contains("COUNTER_SYNC") && why.contains("state"),
        "{why}"
    );
    send(
        &mut c,
        &Message::CounterRequest(CounterRequest {
            name: "page-views".into(),
        }),
    )
    .await;
    assert_eq!(counter_state(&mut c).await.1, state);
}

#[tokio::test]
async fn extensions_are_declined_with_the_response_the_client_waits_for() {
    let server = start(no_auth(), None).await;
    let mut c = open(server.addr).await;
    let processor = EntryProcessor {
        name: "inc".into(),
        code: "return value + 1".into(),
        args: None,
    };
    send(
        &mut c,
        &Message::EntryProcess(EntryProcess {
            request_id: "e1".into(),
            map_name: "m".into(),
            key: "k".into(),
            processor: processor.clone(),
        }),
    )
    .await;
    match recv(&mut c).await {
        Ok(Message::EntryProcessResponse(r)) => {
            assert_eq!((r.request_id.as_str(), r.success), ("e1", false));
            assert!(r.error.unwrap().contains("not supported"));
        }
        other => panic!("{other:?}"),
    }
    send(
        &mut c,
        &Message::EntryProcessBatch(EntryProcessBatch {
            request_id: "e2".into(),
            map_name: "m".into(),
            keys: vec!["a".into(), "b".into()],
            processor,
        }),
    )
    .await;
    match recv(&mut c).await {
        Ok(Message::EntryProcessBatchResponse(r)) => {
            assert_eq!(r.results.len(), 2);
            assert!(r.results.values().all(|k| !k.success && k.error.is_some()));
        }
        other => panic!("{other:?}"),
    }
    send(
        &mut c,
        &Message::RegisterResolver(RegisterResolver {
            request_id: "r1".into(),
            map_name: "m".into(),
            resolver: ResolverDef {
                name: "max".into(),
                code: "return a".into(),
                priority: None,
                key_pattern: None,
            },
        }),
    )
    .await;
    match recv(&mut c).await {
        Ok(Message::RegisterResolverResponse(r)) => {
            assert!(!r.success && r.error.unwrap().contains("not supported"));
        }
        other => panic!("{other:?}"),
    }
    send(
        &mut c,
        &Message::ListResolvers(ListResolvers {
            request_id: "r2".into(),
            map_name: None,
        }),
    )
    .await;
    match recv(&mut c).await {
        Ok(Message::ListResolversResponse(r)) => assert!(r.resolvers.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_counter_counts_a_bounded_number_of_nodes() {
    let server = start(no_auth(), None).await;
    let mut c = open(server.addr).await;
    let many: Vec<(String, f64)> = (0..=topgun_server::coordination::counters::NODES_MAX)
        .map(|i| (format!("node-{i}"), 1.0))
        .collect();
    let state = PnCounter::from_parts(many.into_iter().collect(), BTreeMap::new()).unwrap();
    let sync = Message::CounterSync(CounterState {
        name: "wide".into(),
        state,
    });
    send(&mut c, &sync).await;
    let why = expect_error(&mut c, 413).await;
    assert!(why.contains("at most 1024 nodes"), "{why}");
    send(
        &mut c,
        &Message::CounterRequest(CounterRequest {
            name: "wide".into(),
        }),
    )
    .await;
    assert_eq!(
        counter_state(&mut c).await.1,
        PnCounter::new(),
        "nothing changed"
    );
}
