//! `/metrics` as TopGun monitoring reads it (COMPAT.md §8), from the real binary over a data
//! directory: the OR-Map tombstone gauge is there at 0 from the first scrape, rises with OR
//! removes, falls when pruning drops them, and comes back at the same value after a restart;
//! the map count follows maps appearing and emptying; the reference server's names carry
//! the same values as ours.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::ClientOp;
use topgun_core::{NodeId, OrRecord, Timestamp, Value};

/// Tombstones are pruned once this old; the GC looks every 100 ms.
const TTL_MS: u64 = 30 * 60 * 1000;
/// How long after the test's start its "old" tombstones become prunable: far longer than a
/// scrape takes, so the test sees them before they go.
const OLD_FOR_MS: u64 = 4_000;

fn serve(dir: &Path) -> Served {
    let config = dir.join("topgun.toml");
    std::fs::write(
        &config,
        format!("tombstone_ttl_ms = {TTL_MS}\ngc_interval_ms = 100\nshards = 4\n"),
    )
    .unwrap();
    serve_binary(
        binary()
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .env("TOPGUN_NO_AUTH", "1"),
    )
}

async fn scrape(server: &Served) -> String {
    let (status, body) = http_get_async(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The value of the sample `series` (name and labels) as rendered.
fn sample<'a>(text: &'a str, series: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The value of a counter or integer gauge.
fn count(text: &str, series: &str) -> u64 {
    sample(text, series).parse().unwrap()
}

/// (gauge, counter, maps) as scraped.
async fn held(server: &Served) -> (u64, u64, u64) {
    let text = scrape(server).await;
    (
        count(&text, "topgun_ormap_tombstone_bytes"),
        count(&text, "topgun_ormap_tombstone_bytes_total"),
        count(&text, "topgun_maps"),
    )
}

fn at(millis: u64, counter: u32) -> Timestamp {
    Timestamp::new(millis, counter, NodeId::new("client-1").unwrap())
}

fn or_add(id: u64, map: &str, key: &str, t: &Timestamp) -> ClientOp {
    let record = OrRecord {
        value: Value::Int(i64::from(t.counter)),
        tag: t.to_string(),
        timestamp: t.clone(),
        ttl_ms: None,
    };
    or_add_op(id, map, key, record)
}

/// Sends `ops` as one batch and waits for its `OP_ACK` (durable: the default log syncs).
async fn write(c: &mut Client, ops: Vec<ClientOp>) {
    send(c, &op_batch(ops)).await;
    match recv(c).await {
        Ok(Message::OpAck(_)) => {}
        other => panic!("expected OP_ACK, got {other:?}"),
    }
}

/// Polls until the tombstone gauge reads `bytes` (the GC runs every 100 ms).
async fn await_gauge(server: &Served, bytes: u64) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(OLD_FOR_MS / 1000 + 15);
    loop {
        let now = held(server).await;
        if now.0 == bytes || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bytes(tags: &[&Timestamp]) -> u64 {
    tags.iter().map(|t| t.to_string().len() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstone_bytes_rise_fall_when_pruned_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    assert_eq!(
        held(&server).await,
        (0, 0, 0),
        "present from the first scrape"
    );

    let now = now_ms();
    // Kept: fresh tags, on keys spread over the shards, one beside a live record.
    let fresh: Vec<Timestamp> = (0..6).map(|i| at(now, i)).collect();
    // Pruned OLD_FOR_MS from now: one beside the live record and fresh tombstones (its key
    // is rewritten without it), and one alone in a map of its own (the map empties).
    let old = at(now + OLD_FOR_MS - TTL_MS, 0);
    let lonely = at(now + OLD_FOR_MS - TTL_MS, 1);
    let live = at(now, 100);
    let mut c = connect(server.addr, "/").await;
    let mut ops = vec![put_op(1, "todos", "t", Value::Int(1), at(now, 200))];
    for (i, t) in fresh.iter().enumerate() {
        ops.push(or_add(ops.len() as u64 + 1, "todos", &format!("k{i}"), t));
    }
    ops.push(or_add(ops.len() as u64 + 1, "todos", "k0", &old));
    ops.push(or_add(ops.len() as u64 + 1, "todos", "k0", &live));
    write(&mut c, ops).await;
    assert_eq!(held(&server).await, (0, 0, 1), "adds tombstone nothing");

    let mut removes = Vec::new();
    for (i, t) in fresh.iter().enumerate() {
        removes.push(or_remove_op(
            i as u64 + 1,
            "todos",
            &format!("k{i}"),
            &t.to_string(),
        ));
    }
    removes.push(or_remove_op(7, "todos", "k0", &old.to_string()));
    removes.push(or_remove_op(8, "todos", "k0", &old.to_string()));
    removes.push(or_remove_op(9, "gone", "g", &lonely.to_string()));
    write(&mut c, removes).await;
    let kept = bytes(&fresh.iter().collect::<Vec<_>>());
    let all = kept + bytes(&[&old, &lonely]);
    assert_eq!(
        held(&server).await,
        (all, all, 2),
        "each tag once (k0's old tag was removed twice); the tombstone-only map counts"
    );

    assert_eq!(
        await_gauge(&server, kept).await,
        (kept, all, 1),
        "pruning lowers the gauge, never the total; `gone` held only pruned tombstones"
    );
    // Whatever the log takes after the prune is durable after it: once this write is
    // acknowledged, a kill cannot take the prune back.
    write(
        &mut c,
        vec![put_op(1, "todos", "t", Value::Int(2), at(now, 300))],
    )
    .await;
    drop(c);
    drop(server); // SIGKILL

    let server = serve(dir.path());
    assert_eq!(
        held(&server).await,
        (kept, kept, 1),
        "recovered at the same value; the total starts from it"
    );
    let mut c = connect(server.addr, "/").await;
    let more = at(now_ms(), 0);
    write(
        &mut c,
        vec![or_remove_op(1, "todos", "k9", &more.to_string())],
    )
    .await;
    let grown = kept + bytes(&[&more]);
    assert_eq!(
        held(&server).await,
        (grown, grown, 1),
        "and rises from there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_names_carry_our_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let mut c = connect(server.addr, "/").await;
    let now = now_ms();
    write(
        &mut c,
        vec![
            put_op(1, "todos", "a", Value::Int(1), at(now, 0)),
            or_add(2, "tags", "b", &at(now, 1)),
            or_remove_op(3, "tags", "b", &at(now, 1).to_string()),
        ],
    )
    .await;
    // A write to a reserved map is refused op by op.
    send(
        &mut c,
        &op_batch(vec![put_op(
            4,
            "__topgun_x",
            "a",
            Value::Int(1),
            at(now, 2),
        )]),
    )
    .await;
    drain(&mut c, 1).await;
    let text = scrape(&server).await;
    let pairs = [
        ("topgun_connections", "topgun_active_connections"),
        ("topgun_ops_rejected_total", "topgun_operation_errors_total"),
        (
            "topgun_op_batch_seconds_count",
            "topgun_operation_duration_seconds_count",
        ),
        (
            "topgun_op_batch_seconds_sum",
            "topgun_operation_duration_seconds_sum",
        ),
        (
            "topgun_op_batch_seconds_bucket{le=\"+Inf\"}",
            "topgun_operation_duration_seconds_bucket{le=\"+Inf\"}",
        ),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(sample(&text, ours), sample(&text, theirs), "{theirs}");
    }
    for kind in ["PUT", "REMOVE", "OR_ADD", "OR_REMOVE"] {
        let ours = sample(&text, &format!("topgun_ops_total{{type=\"{kind}\"}}"));
        let theirs = sample(
            &text,
            &format!("topgun_operations_total{{type=\"{kind}\"}}"),
        );
        assert_eq!(ours, theirs, "{kind}");
    }
    assert_eq!(count(&text, "topgun_active_connections"), 1);
    assert_eq!(
        count(&text, "topgun_operations_total{type=\"OR_REMOVE\"}"),
        1
    );
    assert_eq!(count(&text, "topgun_operation_errors_total"), 1);
    assert!(count(&text, "topgun_operation_duration_seconds_count") >= 1);
    let maps = count(&text, "topgun_maps");
    assert_eq!(maps, 2, "todos and tags; reserved maps never");
}
