//! Crash safety of the real binary in its default configuration (synced write-ahead log;
//! the redb store, and the PostgreSQL store against a real server): concurrent writers,
//! `kill -9` at random moments, restart, and every acknowledged write must be there with its
//! value — and nothing that was never sent. Also with the store file and the log directory
//! set elsewhere (`TOPGUN_REDB_PATH`, `TOPGUN_WAL_DIR`): the server writes there and nowhere
//! else, its working directory included.
//!
//! 20 cycles by default; `TOPGUN_CRASH_CYCLES=<n>` runs more (and `TOPGUN_SEED=<n>` replays
//! the random kill times of a failed run, whose seed is printed).

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use topgun_core::protocol::Message;
use topgun_core::{NodeId, Timestamp, Value};

const MAP: &str = "crash";
const WRITERS: usize = 3;
const BATCH: u64 = 5;

/// Where the server keeps its files, under the test's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `--data-dir <dir>`.
    DataDir,
    /// `TOPGUN_REDB_PATH=<dir>/store/db.redb`, `TOPGUN_WAL_DIR=<dir>/log`, no data
    /// directory, run in the empty `<dir>/cwd`.
    Elsewhere,
}

/// Starts the binary over `dir` (and `database_url`, for the PostgreSQL store).
fn spawn(dir: &Path, database_url: Option<&str>, layout: Layout) -> Served {
    let mut cmd = binary();
    cmd.env("TOPGUN_NO_AUTH", "1");
    match layout {
        Layout::DataDir => {
            cmd.arg("--data-dir").arg(dir);
        }
        Layout::Elsewhere => {
            let cwd = dir.join("cwd");
            std::fs::create_dir_all(&cwd).unwrap();
            cmd.current_dir(cwd)
                .env("TOPGUN_REDB_PATH", dir.join("store/db.redb"))
                .env("TOPGUN_WAL_DIR", dir.join("log"));
        }
    }
    if let Some(url) = database_url {
        cmd.env("STORAGE_BACKEND", "postgres")
            .env("DATABASE_URL", url);
    }
    serve_binary(&mut cmd)
}

/// What the writers sent and what the server acknowledged: key → value.
#[derive(Debug, Default)]
struct Ledger {
    sent: HashMap<String, i64>,
    acked: HashMap<String, i64>,
}

/// Writes batches of fresh keys until the connection dies; records sends and acks.
async fn writer(addr: SocketAddr, id: usize, cycle: usize, ledger: Arc<Mutex<Ledger>>) {
    let Ok((mut c, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await else {
        return;
    };
    let node = NodeId::new(&format!("writer-{id}")).unwrap();
    for n in 0u64.. {
        let keys: Vec<(String, i64)> = (0..BATCH)
            .map(|i| {
                let seq = n * BATCH + i;
                (
                    format!("c{cycle}-w{id}-{seq}"),
                    i64::try_from(seq).unwrap() * 7 + 1,
                )
            })
            .collect();
        let ops = keys
            .iter()
            .zip(1u64..)
            .map(|((key, value), op_id)| {
                let at = Timestamp::new(1_700_000_000_000 + n, 0, node.clone());
                put_op(n * BATCH + op_id, MAP, key, Value::Int(*value), at)
            })
            .collect();
        ledger.lock().unwrap().sent.extend(keys.iter().cloned());
        let batch = op_batch(ops);
        if try_send(&mut c, &batch).await.is_err() {
            return;
        }
        // Writers hear of each other's writes (events) while they wait for their ack.
        loop {
            match recv(&mut c).await {
                Ok(Message::OpAck(_)) => break ledger.lock().unwrap().acked.extend(keys.clone()),
                Ok(Message::ServerEvent(_) | Message::ServerBatchEvent(_)) => {}
                _ => return,
            }
        }
    }
}

async fn try_send(c: &mut Client, msg: &Message) -> Result<(), ()> {
    use futures_util::SinkExt;
    c.send(tokio_tungstenite::tungstenite::Message::Binary(
        msg.encode().into(),
    ))
    .await
    .map_err(drop)
}

/// A small deterministic generator for kill delays, seeded per run: 60 ms to 1.5 s, so that
/// kills land before, during and after the checkpointer's once-a-second durable store commit
/// (between them redb commits are not synced and the log must still hold everything).
fn next_delay_ms(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    60 + *state % 1440
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_redb() {
    crash_cycles(None, Layout::DataDir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_postgres() {
    let db = TestDb::create().await;
    crash_cycles(Some(&db.url), Layout::DataDir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_the_store_and_log_elsewhere() {
    let dir = crash_cycles(None, Layout::Elsewhere).await;
    let names = |sub: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(""),
        ["cwd", "log", "store"],
        "nothing beside the paths"
    );
    assert_eq!(names("cwd"), Vec::<String>::new(), "the working directory");
    assert_eq!(names("store"), ["db.redb"]);
    assert!(
        names("log")
            .iter()
            .all(|n| n == "topgun-server.lock" || is_segment(n)),
        "{:?}",
        names("log")
    );
}

/// A write-ahead log segment's name, `wal-<first LSN>.seg`.
fn is_segment(name: &str) -> bool {
    name.strip_prefix("wal-")
        .and_then(|n| n.strip_suffix(".seg"))
        .is_some_and(|lsn| lsn.bytes().all(|b| b.is_ascii_digit()))
}

/// Runs the cycles in a fresh directory, returned for a look at what was written.
async fn crash_cycles(database_url: Option<&str>, layout: Layout) -> tempfile::TempDir {
    let cycles: usize = std::env::var("TOPGUN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TOPGUN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 2_654_435_761 + 1);
    eprintln!("crash test seed {seed} (TOPGUN_SEED={seed} replays the kill times)");
    let mut rng = seed | 1;
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut total_acked = 0;
    for cycle in 0..cycles {
        let server = spawn(dir.path(), database_url, layout);
        let addr = server.addr;
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| tokio::spawn(writer(addr, id, cycle, Arc::clone(&ledger))))
            .collect();
        tokio::time::sleep(Duration::from_millis(next_delay_ms(&mut rng))).await;
        drop(server); // SIGKILL
        for w in writers {
            w.await.unwrap();
        }

        let server = spawn(dir.path(), database_url, layout);
        let stored = read_map(server.addr, MAP).await;
        drop(server);
        let ledger = ledger.lock().unwrap();
        for (key, value) in &ledger.acked {
            assert_eq!(
                stored.get(key),
                Some(&Value::Int(*value)),
                "cycle {cycle} (seed {seed}): acknowledged write {key} lost"
            );
        }
        for (key, value) in &stored {
            assert_eq!(
                ledger.sent.get(key).map(|v| Value::Int(*v)).as_ref(),
                Some(value),
                "cycle {cycle} (seed {seed}): {key} was never sent with this value"
            );
        }
        total_acked = ledger.acked.len();
    }
    assert!(
        total_acked > 0,
        "the writers got no acknowledgements at all"
    );
    eprintln!("{cycles} kill -9 cycles, {total_acked} acknowledged writes all present");
    dir
}
