//! Access policies over real sockets: a matrix of users × maps × every path that reads or
//! writes data, checked against a small reference model of the configured policies (written
//! out by hand below, independently of the engine), with zero leaks — no value, field or
//! event reaches a connection that may not see it. Plus a role change mid-session.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::PredicateOp;
use topgun_core::protocol::messages::{
    CounterRequest, LockRequest, MerkleReqBucket, QuerySub, SyncInit, TopicPub, TopicRef,
};
use topgun_core::protocol::query::{PredicateNode, Query};
use topgun_core::{NodeId, Timestamp, Value};

const POLICIES: &str = r#"
[[policies]]
role = "reader"
map_name_pattern = "public/*"
actions = ["READ"]
allowed_fields = ["title"]

[[policies]]
role = "writer"
map_name_pattern = "public/*"
actions = ["ALL"]

[[policies]]
role = "user"
map_name_pattern = "users/{userId}/*"
actions = ["ALL"]

[[policies]]
role = "user"
topic_pattern = "chat/*"
actions = ["ALL"]

[[policies]]
role = "reader"
topic_pattern = "chat/*"
actions = ["READ"]

[[policies]]
role = "user"
lock_pattern = "jobs/*"
actions = ["WRITE"]

[[policies]]
role = "user"
counter_pattern = "likes"
actions = ["ALL"]
"#;

/// The users of the matrix: (user id, roles).
const USERS: [(&str, &[&str]); 6] = [
    ("alice", &["user"]),
    ("bob", &["user"]),
    ("rita", &["reader"]),
    ("walt", &["writer"]),
    ("root", &["ADMIN"]),
    ("nobody", &[]),
];

const MAPS: [&str; 4] = [
    "public/news",
    "users/alice/notes",
    "users/bob/notes",
    "secret",
];

/// What a user reads of a map, by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Denied,
    All,
    Only(Vec<&'static str>),
}

impl Read {
    fn allowed(&self) -> bool {
        *self != Self::Denied
    }

    /// The fields of a `{title, body}` document it sees, sorted.
    fn fields(&self) -> Vec<String> {
        let mut f: Vec<String> = match self {
            Self::Only(f) => f.iter().map(|s| (*s).to_owned()).collect(),
            _ => vec!["body".into(), "title".into()],
        };
        f.sort();
        f
    }
}

/// What the model says a user may do with a map: (may write, what it reads).
fn model(user: &str, roles: &[&str], map: &str) -> (bool, Read) {
    if roles.contains(&"ADMIN") {
        return (true, Read::All);
    }
    let own = map.starts_with(&format!("users/{user}/"));
    let public = map.starts_with("public/");
    let writer = roles.contains(&"writer") && public;
    let user_role = roles.contains(&"user") && own;
    let write = writer || user_role;
    let read = if writer || user_role {
        Read::All
    } else if roles.contains(&"reader") && public {
        Read::Only(vec!["title"])
    } else {
        Read::Denied
    };
    (write, read)
}

fn login(user: &str, roles: &[&str]) -> Message {
    let claims = serde_json::json!({"sub": user, "roles": roles, "exp": now_secs() + 600});
    auth(&token(&claims, SECRET))
}

async fn connect_as(addr: std::net::SocketAddr, user: &str, roles: &[&str]) -> Client {
    let mut c = connect(addr, "/ws").await;
    assert!(matches!(recv(&mut c).await, Ok(Message::AuthRequired(_))));
    send(&mut c, &login(user, roles)).await;
    assert!(matches!(recv(&mut c).await, Ok(Message::AuthAck(_))));
    c
}

fn doc(title: &str, body: &str) -> Value {
    Value::Map(
        [("title", Value::from(title)), ("body", Value::from(body))]
            .into_iter()
            .collect(),
    )
}

fn fields_of(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_map().unwrap().keys().map(Into::into).collect();
    keys.sort();
    keys
}

/// Leaves out the map events of other users' writes, after checking that each is one the
/// user may read, with exactly the fields it may see.
fn without_events(user: &str, roles: &[&str], msgs: Vec<Message>) -> Vec<Message> {
    msgs.into_iter()
        .filter(|m| {
            let Message::ServerEvent(e) = m else {
                return true;
            };
            let read = model(user, roles, &e.map_name).1;
            assert!(read.allowed(), "{user} got an event of {}", e.map_name);
            let value = &e.record.as_ref().unwrap().value;
            assert_eq!(fields_of(value), read.fields(), "{user}");
            false
        })
        .collect()
}

async fn write_doc(c: &mut Client, id: u64, map: &str, key: &str, value: Value) -> Vec<Message> {
    let at = Timestamp::new(now_ms(), 0, NodeId::new("n").unwrap());
    send(c, &op_batch(vec![put_op(id, map, key, value, at)])).await;
    // The reply (OP_REJECTED and/or OP_ACK) precedes the barrier's PONG.
    drain(c, id).await
}

/// Every record of `map` the connection can pull by Merkle walk: `SYNC_INIT`, then each leaf
/// path holding the written key (found from the root's buckets by walking down).
async fn read_map(c: &mut Client, map: &str) -> Result<Vec<Value>, u32> {
    read_map_as(c, "", &["ADMIN"], map).await
}

/// [`read_map`] for a connection that may also receive events (checked, then skipped).
async fn read_map_as(
    c: &mut Client,
    user: &str,
    roles: &[&str],
    map: &str,
) -> Result<Vec<Value>, u32> {
    send(
        c,
        &Message::SyncInit(SyncInit {
            map_name: map.into(),
            last_sync_timestamp: None,
        }),
    )
    .await;
    match next_reply(c, user, roles).await {
        Message::SyncRespRoot(_) => {}
        Message::Error(e) => return Err(e.code),
        other => panic!("{other:?}"),
    }
    let mut paths = vec![String::new()];
    let mut values = Vec::new();
    while let Some(path) = paths.pop() {
        let req = Message::MerkleReqBucket(MerkleReqBucket {
            map_name: map.into(),
            path: path.as_str().into(),
        });
        send(c, &req).await;
        match next_reply(c, user, roles).await {
            Message::SyncRespBuckets(b) => {
                paths.extend(b.buckets.keys().map(|d| format!("{path}{d}")));
            }
            Message::SyncRespLeaf(leaf) => {
                values.extend(leaf.records.into_iter().map(|r| r.record.value));
            }
            other => panic!("{other:?}"),
        }
    }
    Ok(values)
}

/// The next message that is not a (checked) map event.
async fn next_reply(c: &mut Client, user: &str, roles: &[&str]) -> Message {
    loop {
        let msg = recv(c).await.unwrap();
        if let Some(msg) = without_events(user, roles, vec![msg]).pop() {
            return msg;
        }
    }
}

#[tokio::test]
async fn every_path_follows_the_policies_with_no_leaks() {
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut root = connect_as(addr, "root", &["ADMIN"]).await;
    // Every user watches every map (a subscription for events is refused where it may not
    // read), then root writes a document with two fields to each map.
    let mut watchers = Vec::new();
    for (user, roles) in USERS {
        let mut c = connect_as(addr, user, roles).await;
        for map in MAPS {
            let (_, read) = model(user, roles, map);
            let got = read_map(&mut c, map).await;
            assert_eq!(got.is_ok(), read.allowed(), "{user} syncs {map}: {got:?}");
        }
        watchers.push(c);
    }
    for (i, map) in MAPS.iter().enumerate() {
        let replies = write_doc(
            &mut root,
            100 + i as u64,
            map,
            "doc",
            doc("t", "secret body"),
        )
        .await;
        assert!(
            replies.iter().any(|m| matches!(m, Message::OpAck(_))),
            "{replies:?}"
        );
    }
    for ((user, roles), c) in USERS.iter().zip(&mut watchers) {
        let events = drain(c, 7).await;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for msg in &events {
            let Message::ServerEvent(e) = msg else {
                panic!("{user} got {msg:?}")
            };
            let (_, read) = model(user, roles, &e.map_name);
            assert!(read.allowed(), "{user} got an event of {}", e.map_name);
            let value = &e.record.as_ref().unwrap().value;
            assert_eq!(fields_of(value), read.fields(), "{user} {}", e.map_name);
            seen.insert(e.map_name.to_string());
        }
        let expected: BTreeSet<String> = MAPS
            .iter()
            .filter(|m| model(user, roles, m).1.allowed())
            .map(|m| (*m).to_owned())
            .collect();
        assert_eq!(
            seen, expected,
            "{user}: events of exactly the maps it may read"
        );
    }
    // Reads, writes and queries, user by user and map by map.
    for (n, ((user, roles), c)) in USERS.iter().zip(&mut watchers).enumerate() {
        for (i, map) in MAPS.iter().enumerate() {
            let (write, read) = model(user, roles, map);
            check_read(c, user, roles, map, &read).await;
            let id = 1_000 + (n * 10 + i) as u64;
            let replies = write_doc(c, id, map, &format!("by-{user}"), doc("x", "y")).await;
            let replies = without_events(user, roles, replies);
            let rejected = replies
                .iter()
                .any(|m| matches!(m, Message::OpRejected(r) if r.code == Some(403)));
            assert_eq!(!rejected, write, "{user} writes {map}: {replies:?}");
            check_query(c, user, roles, map, &read).await;
        }
    }
    // Writes by others, after the fact: what a refused writer sent never landed.
    let values = read_map(&mut root, "secret").await.unwrap();
    assert_eq!(
        values.len(),
        2,
        "root's doc and root's own write only: {values:?}"
    );
}

/// The leaves: refused, or every record with exactly the allowed fields.
async fn check_read(c: &mut Client, user: &str, roles: &[&str], map: &str, read: &Read) {
    let got = read_map_as(c, user, roles, map).await;
    if !read.allowed() {
        assert_eq!(got, Err(403), "{user} reads {map}");
        return;
    }
    let values = got.unwrap();
    assert!(!values.is_empty());
    for v in values {
        assert_eq!(fields_of(&v), read.fields(), "{user} {map}");
    }
}

fn query(id: &str, map: &str, predicate: Option<PredicateNode>) -> Message {
    Message::QuerySub(QuerySub {
        query_id: id.into(),
        map_name: map.into(),
        query: Query {
            predicate,
            ..Query::default()
        },
        fields: None,
    })
}

/// Queries: refused, or rows with exactly the allowed fields; filtering on a hidden field
/// is refused.
async fn check_query(c: &mut Client, user: &str, roles: &[&str], map: &str, read: &Read) {
    send(c, &query("q", map, None)).await;
    let answer = without_events(user, roles, drain(c, 8).await);
    match (read.allowed(), answer.as_slice()) {
        (false, [Message::Error(e)]) => assert_eq!(e.code, 403, "{user} {map}"),
        (true, [Message::QueryResp(resp)]) => {
            assert!(!resp.results.is_empty());
            for row in &resp.results {
                assert_eq!(fields_of(&row.value), read.fields());
            }
        }
        other => panic!("{user} queries {map}: {other:?}"),
    }
    let on_body = PredicateNode::leaf(PredicateOp::Eq, "body", Value::from("secret body"));
    send(c, &query("q2", map, Some(on_body))).await;
    let answer = without_events(user, roles, drain(c, 9).await);
    let refused = matches!(answer.as_slice(), [Message::Error(e)] if e.code == 403);
    let hidden = !read.fields().contains(&"body".to_owned()) || !read.allowed();
    assert_eq!(refused, hidden, "{user} filters {map} by body: {answer:?}");
    let unsub = |id: &str| {
        Message::QueryUnsub(topgun_core::protocol::messages::QueryRef {
            query_id: id.into(),
        })
    };
    send(c, &unsub("q")).await;
    send(c, &unsub("q2")).await;
}

#[tokio::test]
async fn topics_locks_and_counters_follow_the_policies() {
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut alice = connect_as(addr, "alice", &["user"]).await;
    let mut rita = connect_as(addr, "rita", &["reader"]).await;
    let mut nobody = connect_as(addr, "nobody", &[]).await;
    let sub = |t: &str| Message::TopicSub(TopicRef { topic: t.into() });
    let publish = |t: &str| {
        Message::TopicPub(TopicPub {
            topic: t.into(),
            data: Value::Int(1),
        })
    };
    send(&mut rita, &sub("chat/1")).await;
    assert!(
        drain(&mut rita, 1).await.is_empty(),
        "a reader may subscribe"
    );
    send(&mut nobody, &sub("chat/1")).await;
    assert!(matches!(drain(&mut nobody, 2).await.as_slice(), [Message::Error(e)] if e.code == 403));
    send(&mut rita, &publish("chat/1")).await;
    assert!(matches!(drain(&mut rita, 3).await.as_slice(), [Message::Error(e)] if e.code == 403));
    send(&mut alice, &publish("chat/1")).await;
    assert!(drain(&mut alice, 4).await.is_empty());
    let got = drain(&mut rita, 5).await;
    assert!(
        matches!(got.as_slice(), [Message::TopicMessage(_)]),
        "{got:?}"
    );
    assert!(
        drain(&mut nobody, 6).await.is_empty(),
        "no leak to a refused subscriber"
    );

    let lock = |name: &str| {
        Message::LockRequest(LockRequest {
            request_id: "r".into(),
            name: name.into(),
            ttl: Some(1_000),
        })
    };
    send(&mut alice, &lock("jobs/1")).await;
    assert!(matches!(
        drain(&mut alice, 7).await.as_slice(),
        [Message::LockGranted(_)]
    ));
    send(&mut alice, &lock("admin/1")).await;
    assert!(matches!(drain(&mut alice, 8).await.as_slice(), [Message::Error(e)] if e.code == 403));
    send(&mut rita, &lock("jobs/2")).await;
    assert!(matches!(drain(&mut rita, 9).await.as_slice(), [Message::Error(e)] if e.code == 403));

    let counter = |name: &str| Message::CounterRequest(CounterRequest { name: name.into() });
    send(&mut alice, &counter("likes")).await;
    assert!(matches!(
        drain(&mut alice, 10).await.as_slice(),
        [Message::CounterResponse(_)]
    ));
    send(&mut rita, &counter("likes")).await;
    assert!(matches!(drain(&mut rita, 11).await.as_slice(), [Message::Error(e)] if e.code == 403));
}

#[tokio::test]
async fn a_role_change_takes_effect_at_once_on_existing_subscriptions() {
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut root = connect_as(addr, "root", &["ADMIN"]).await;
    let mut rita = connect_as(addr, "rita", &["reader"]).await;
    write_doc(&mut root, 1, "public/news", "a", doc("t", "b")).await;
    read_map(&mut rita, "public/news").await.unwrap();
    send(&mut rita, &query("q", "public/news", None)).await;
    assert!(matches!(
        drain(&mut rita, 1).await.as_slice(),
        [Message::QueryResp(_)]
    ));

    // As a writer, rita sees whole records from the next event on; her query, admitted
    // under the old limit, ends with ERROR 403 rather than go on under the wrong one.
    send(&mut rita, &login("rita", &["writer"])).await;
    assert!(matches!(recv(&mut rita).await, Ok(Message::AuthAck(_))));
    write_doc(&mut root, 2, "public/news", "b", doc("t2", "b2")).await;
    let got = drain(&mut rita, 2).await;
    let event = got
        .iter()
        .find_map(|m| match m {
            Message::ServerEvent(e) => Some(e),
            _ => None,
        })
        .expect("an event");
    assert_eq!(
        fields_of(&event.record.as_ref().unwrap().value),
        ["body", "title"]
    );
    assert!(
        got.iter()
            .any(|m| matches!(m, Message::Error(e) if e.code == 403)),
        "{got:?}"
    );

    // With no roles at all, nothing more arrives.
    send(&mut rita, &login("rita", &[])).await;
    assert!(matches!(recv(&mut rita).await, Ok(Message::AuthAck(_))));
    write_doc(&mut root, 3, "public/news", "c", doc("t3", "b3")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        drain(&mut rita, 3).await.is_empty(),
        "no leak after losing the role"
    );
}

#[tokio::test]
async fn a_token_that_expires_while_connected_logs_the_connection_out() {
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut root = connect_as(addr, "root", &["ADMIN"]).await;
    let mut walt = connect(addr, "/ws").await;
    assert!(matches!(
        recv(&mut walt).await,
        Ok(Message::AuthRequired(_))
    ));
    // Accepted within the 60 s leeway, and expiring a second from now.
    let claims = serde_json::json!({"sub": "walt", "roles": ["writer"], "exp": now_secs() - 59});
    send(&mut walt, &auth(&token(&claims, SECRET))).await;
    assert!(matches!(recv(&mut walt).await, Ok(Message::AuthAck(_))));
    read_map(&mut walt, "public/news").await.unwrap();

    let told = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match recv(&mut walt).await {
                Ok(Message::AuthRequired(_)) => return,
                Ok(Message::Error(e)) => assert_eq!(e.code, 401, "{}", e.message),
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(told.is_ok(), "the connection is told at expiry");
    // Logged out: its subscription delivers nothing, and requests are refused.
    write_doc(&mut root, 1, "public/news", "a", doc("t", "b")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut walt, &ping(1)).await;
    match recv(&mut walt).await {
        Ok(Message::Error(e)) => assert_eq!(e.code, 401),
        other => panic!("expected ERROR 401 and no event, got {other:?}"),
    }
    // A fresh token opens it again.
    send(&mut walt, &login("walt", &["writer"])).await;
    assert!(matches!(recv(&mut walt).await, Ok(Message::AuthAck(_))));
    write_doc(&mut root, 2, "public/news", "b", doc("t", "b")).await;
    let got = drain(&mut walt, 2).await;
    assert!(
        matches!(got.as_slice(), [Message::ServerEvent(_)]),
        "{got:?}"
    );
}

/// The binary with `config` as its file, JWT auth on.
fn serve_with_config(dir: &std::path::Path, config: &str) -> (Served, std::path::PathBuf) {
    let file = dir.join("topgun.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = binary();
    cmd.arg("--config")
        .arg(&file)
        .arg("--storage")
        .arg("memory")
        .env("JWT_SECRET", SECRET);
    (serve_binary(&mut cmd), file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_load_from_the_file_reload_on_sighup_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let only_readers = r#"
[[policies]]
role = "reader"
map_name_pattern = "public/*"
actions = ["READ"]
"#;
    let (served, file) = serve_with_config(dir.path(), only_readers);
    let mut walt = connect_as(served.addr, "walt", &["writer"]).await;
    let replies = write_doc(&mut walt, 1, "public/news", "a", doc("t", "b")).await;
    assert!(
        replies
            .iter()
            .any(|m| matches!(m, Message::OpRejected(r) if r.code == Some(403))),
        "{replies:?}"
    );

    // A broken file is reported and the policies in force stay.
    std::fs::write(&file, "[[policies]]\nrole = \"writer\"\n").unwrap();
    let hup = |pid: u32| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup(served.child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies = write_doc(&mut walt, 2, "public/news", "a", doc("t", "b")).await;
    assert!(replies.iter().any(|m| matches!(m, Message::OpRejected(_))));

    let with_writers = format!(
        "{only_readers}\n[[policies]]\nrole = \"writer\"\nmap_name_pattern = \"public/*\"\nactions = [\"ALL\"]\n"
    );
    std::fs::write(&file, with_writers).unwrap();
    hup(served.child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let replies = write_doc(&mut walt, 3, "public/news", "a", doc("t", "b")).await;
    assert!(
        !replies.iter().any(|m| matches!(m, Message::OpRejected(_)))
            && replies.iter().any(|m| matches!(m, Message::OpAck(_))),
        "the reloaded policies apply to the open connection: {replies:?}"
    );
    drop(served);

    // At start-up, an invalid policy stops the server with a message naming it.
    let bad = "[[policies]]\nrole = \"user\"\nmap_name_pattern = \"users/{user}/*\"\nactions = [\"READ\"]\n";
    std::fs::write(&file, bad).unwrap();
    let out = binary()
        .arg("--config")
        .arg(&file)
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy 1 (role \"user\", map \"users/{user}/*\")")
            && stderr.contains("{userId}"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_query_can_select_by_the_callers_identity() {
    let server = start(jwt(), None).await;
    let addr = server.addr;
    let mut root = connect_as(addr, "root", &["ADMIN"]).await;
    for (i, owner) in ["alice", "bob", "alice"].iter().enumerate() {
        let value = Value::Map(
            [
                ("owner", Value::from(*owner)),
                ("n", Value::Int(i64::try_from(i).unwrap())),
            ]
            .into_iter()
            .collect(),
        );
        write_doc(&mut root, i as u64 + 1, "tasks", &format!("t{i}"), value).await;
    }
    let mine = PredicateNode {
        value_ref: Some("auth.userId".into()),
        ..PredicateNode::leaf(PredicateOp::Eq, "owner", Value::Nil)
    };
    let mine = PredicateNode {
        value: topgun_core::protocol::wire::Field::Absent,
        ..mine
    };
    for (user, expected) in [("alice", vec!["t0", "t2"]), ("bob", vec!["t1"])] {
        let mut c = connect_as(addr, user, &[]).await;
        send(&mut c, &query("mine", "tasks", Some(mine.clone()))).await;
        let got = drain(&mut c, 1).await;
        let [Message::QueryResp(resp)] = got.as_slice() else {
            panic!("{got:?}")
        };
        let mut keys: Vec<&str> = resp.results.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, expected, "{user}");
    }
}

#[tokio::test]
async fn the_journal_shows_each_reader_only_what_it_may_read() {
    use topgun_core::protocol::messages::JournalRead;
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut root = connect_as(addr, "root", &["ADMIN"]).await;
    // Two events a map, so that a page also judges a map it has judged before.
    for (i, map) in MAPS.iter().enumerate() {
        let id = 2 * i as u64 + 1;
        write_doc(&mut root, id, map, "doc", doc("t", "secret body")).await;
        write_doc(&mut root, id + 1, map, "doc2", doc("t", "secret body")).await;
    }
    let read = |map: Option<&str>, limit: Option<u32>| {
        Message::JournalRead(JournalRead {
            request_id: "r".into(),
            from_sequence: "0".into(),
            limit,
            map_name: map.map(Into::into),
        })
    };
    for (user, roles) in USERS {
        let mut c = connect_as(addr, user, roles).await;
        let expected: Vec<&str> = MAPS
            .iter()
            .copied()
            .filter(|m| model(user, roles, m).1.allowed())
            .flat_map(|m| [m, m])
            .collect();
        // A page exactly as long as what the reader may see holds all of it: no event it
        // may not see took a place in the page.
        let limit = Some(u32::try_from(expected.len().max(1)).unwrap());
        send(&mut c, &read(None, limit)).await;
        let Ok(Message::JournalReadResponse(page)) = recv(&mut c).await else {
            panic!("{user}: expected a journal page")
        };
        let maps: Vec<&str> = page.events.iter().map(|e| e.map_name.as_str()).collect();
        assert_eq!(maps, expected, "{user}");
        for e in &page.events {
            let value = e.value.as_ref().unwrap();
            assert_eq!(
                fields_of(value),
                model(user, roles, &e.map_name).1.fields(),
                "{user}"
            );
        }
        send(&mut c, &read(Some("secret"), None)).await;
        let refused = matches!(recv(&mut c).await, Ok(Message::Error(e)) if e.code == 403);
        assert_eq!(refused, !model(user, roles, "secret").1.allowed(), "{user}");
    }
}

#[tokio::test]
async fn a_field_limited_reader_cannot_learn_hidden_fields_through_hashes_or_filters() {
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut root = connect_as(addr, "root", &["ADMIN"]).await;
    let mut rita = connect_as(addr, "rita", &["reader"]).await;
    // OR-Map entry hashes cover whole values: no OR-Map sync for a field-limited reader.
    let init = Message::OrMapSyncInit(topgun_core::protocol::messages::OrMapSyncInit {
        map_name: "public/tags".into(),
        root_hash: 0,
        bucket_hashes: std::collections::BTreeMap::new(),
        last_sync_timestamp: None,
        claimed_epoch: None,
    });
    send(&mut rita, &init).await;
    let why = expect_error(&mut rita, 403).await;
    assert!(why.contains("OR-Map"), "{why}");

    // A hidden top-level field whose name looks like a path under an allowed one.
    let tricky = Value::Map(
        [
            ("title", Value::from("t")),
            ("title.secret", Value::from("s3cr3t")),
        ]
        .into_iter()
        .collect(),
    );
    write_doc(&mut root, 1, "public/news", "doc", tricky).await;
    let probe = PredicateNode::leaf(PredicateOp::Eq, "title.secret", Value::from("s3cr3t"));
    send(&mut rita, &query("probe", "public/news", Some(probe))).await;
    let got = drain(&mut rita, 1).await;
    let [Message::QueryResp(resp)] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert!(
        resp.results.is_empty(),
        "the hidden field steered the result: {resp:?}"
    );
}

#[tokio::test]
async fn a_waiting_lock_request_is_not_granted_after_its_access_is_gone() {
    let server = start(jwt(), Some(POLICIES)).await;
    let addr = server.addr;
    let mut bob = connect_as(addr, "bob", &["user"]).await;
    let mut alice = connect_as(addr, "alice", &["user"]).await;
    let lock = |id: &str| {
        Message::LockRequest(LockRequest {
            request_id: id.into(),
            name: "jobs/1".into(),
            ttl: Some(10_000),
        })
    };
    send(&mut bob, &lock("b")).await;
    let Ok(Message::LockGranted(granted)) = recv(&mut bob).await else {
        panic!("bob holds the lock")
    };
    send(&mut alice, &lock("a")).await;
    assert!(drain(&mut alice, 1).await.is_empty(), "alice waits");
    // Alice loses her role while she waits; then bob releases.
    send(&mut alice, &login("alice", &[])).await;
    assert!(matches!(recv(&mut alice).await, Ok(Message::AuthAck(_))));
    let release = Message::LockRelease(topgun_core::protocol::messages::LockRelease {
        request_id: Some("r".into()),
        name: "jobs/1".into(),
        fencing_token: granted.fencing_token,
    });
    send(&mut bob, &release).await;
    assert!(matches!(recv(&mut bob).await, Ok(Message::LockReleased(r)) if r.success));
    match recv(&mut alice).await {
        Ok(Message::Error(e)) => assert_eq!(e.code, 403, "{}", e.message),
        other => panic!("expected ERROR 403, not a grant: {other:?}"),
    }
    // The lock was handed on, not left held by a connection that may not hold it.
    send(&mut bob, &lock("b2")).await;
    assert!(matches!(recv(&mut bob).await, Ok(Message::LockGranted(_))));
}
