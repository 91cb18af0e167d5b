//! A data directory with known acknowledged writes, damaged the ways disks and operators
//! damage logs, then started by the real binary with and without `--wal-discard-corrupt`.
//! Every case must end one of three ways: start-up refuses with a message naming the
//! damage; or the server starts with every acknowledged write; or, with the flag, it starts
//! and says what it discarded. Never a silent loss.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use topgun_core::protocol::Message;
use topgun_core::{NodeId, Timestamp, Value};

const MAP: &str = "damage";
const WRITES: u64 = 3000;
const BATCH: u64 = 50;

/// Writes [`WRITES`] acknowledged records, then kills the server at once (so the last of
/// them are in the log only). Returns what was acknowledged.
async fn acknowledged(dir: &Path) -> BTreeMap<String, i64> {
    let server = serve_binary(
        binary()
            .arg("--data-dir")
            .arg(dir)
            .env("TOPGUN_NO_AUTH", "1"),
    );
    let mut c = connect(server.addr, "/").await;
    let node = NodeId::new("damage-writer").unwrap();
    let mut acked = BTreeMap::new();
    for n in 0..WRITES / BATCH {
        let keys: Vec<(String, i64)> = (0..BATCH)
            .map(|i| {
                (
                    format!("k{}", n * BATCH + i),
                    i64::try_from(n * BATCH + i).unwrap(),
                )
            })
            .collect();
        let ops = keys
            .iter()
            .zip(1..)
            .map(|((key, value), id)| {
                let at = Timestamp::new(1_700_000_000_000 + n, 0, node.clone());
                put_op(n * BATCH + id, MAP, key, Value::Int(*value), at)
            })
            .collect();
        send(&mut c, &op_batch(ops)).await;
        match recv(&mut c).await {
            Ok(Message::OpAck(_)) => acked.extend(keys),
            other => panic!("expected OP_ACK, got {other:?}"),
        }
    }
    drop(server); // SIGKILL
    acked
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn last_segment(data: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("the log keeps its current segment")
}

/// Frame offsets in a segment, in order.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 16;
    while pos + 16 <= bytes.len() {
        out.push(pos);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 16 + len;
    }
    out
}

/// How the server on a damaged directory ended.
enum Outcome {
    Refused(String),
    Started {
        records: BTreeMap<String, Value>,
        log: String,
    },
}

/// Starts the binary on `data`; reads every record if it comes up.
async fn start(data: &Path, discard: bool) -> Outcome {
    let mut cmd = binary();
    cmd.arg("--data-dir")
        .arg(data)
        .env("TOPGUN_NO_AUTH", "1")
        .env("RUST_LOG", "warn")
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if discard {
        cmd.arg("--wal-discard-corrupt");
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let port = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line.trim()
            .strip_prefix("PORT=")
            .map(|p| p.parse::<u16>().unwrap())
    })
    .join()
    .unwrap();
    let Some(port) = port else {
        let status = child.wait().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        assert!(!status.success(), "no port, yet it exited 0: {text}");
        return Outcome::Refused(text);
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let records = read_map(addr, MAP).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    Outcome::Started { records, log }
}

/// Checks one damaged copy both ways; `expect` is what the refusal must name. Every case
/// here is damage the log can see, so without the flag start-up must refuse; with it, the
/// server starts and says what it discarded, and then starts again without the flag (after
/// a `kill -9`) on what it left: the discard leaves a log that checks out.
async fn check(
    name: &str,
    source: &Path,
    acked: &BTreeMap<String, i64>,
    harm: impl Fn(&Path),
    expect: &str,
) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(source, copy.path());
    harm(copy.path());
    match start(copy.path(), false).await {
        Outcome::Refused(why) => {
            assert!(
                why.contains(expect),
                "{name}: the refusal must name {expect:?}: {why}"
            );
            assert!(
                why.contains("--wal-discard-corrupt"),
                "{name}: and the way past: {why}"
            );
        }
        Outcome::Started { log, .. } => panic!("{name}: started on a damaged log: {log}"),
    }
    let missing = |records: &BTreeMap<String, Value>| {
        acked
            .iter()
            .filter(|(k, v)| records.get(*k) != Some(&Value::Int(**v)))
            .count()
    };
    let kept = match start(copy.path(), true).await {
        Outcome::Refused(why) => panic!("{name}: the flag must get past it: {why}"),
        Outcome::Started { records, log } => {
            let lost = missing(&records);
            assert!(
                log.contains("damage discarded"),
                "{name}: the flag must say what it discarded ({lost} lost): {log}"
            );
            eprintln!(
                "{name}: discarded, {lost} of {} acknowledged writes lost",
                acked.len()
            );
            records
        }
    };
    match start(copy.path(), false).await {
        Outcome::Started { records, .. } => {
            assert_eq!(
                records, kept,
                "{name}: the restart finds what the discard kept"
            );
        }
        Outcome::Refused(why) => panic!("{name}: refused again after the discard: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_log_damage_is_refused_or_reported() {
    let source = tempfile::tempdir().unwrap();
    let acked = acknowledged(source.path()).await;
    assert_eq!(acked.len() as u64, WRITES);

    // The control: the undamaged directory starts with everything.
    let control = tempfile::tempdir().unwrap();
    copy_dir(source.path(), control.path());
    match start(control.path(), false).await {
        Outcome::Started { records, .. } => assert_eq!(records.len() as u64, WRITES),
        Outcome::Refused(why) => panic!("a healthy log was refused: {why}"),
    }

    check(
        "a length pointing past the end, at 75 %",
        source.path(),
        &acked,
        |dir| {
            let path = last_segment(dir);
            let mut bytes = std::fs::read(&path).unwrap();
            let offsets = frame_offsets(&bytes);
            let at = offsets[offsets.len() * 3 / 4];
            bytes[at..at + 4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
            std::fs::write(&path, bytes).unwrap();
        },
        "valid frames follow it",
    )
    .await;

    check(
        "a segment cut below its header",
        source.path(),
        &acked,
        |dir| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(last_segment(dir))
                .unwrap();
            file.set_len(9).unwrap();
        },
        "cut below its 16-byte header",
    )
    .await;

    check(
        "the log directory deleted",
        source.path(),
        &acked,
        |dir| {
            std::fs::remove_dir_all(dir.join("wal")).unwrap();
        },
        "the log directory is missing or holds no segment",
    )
    .await;

    check(
        "a bad segment magic",
        source.path(),
        &acked,
        |dir| {
            let path = last_segment(dir);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[0] = b'X';
            std::fs::write(&path, bytes).unwrap();
        },
        "bad magic",
    )
    .await;

    check(
        "garbage under a segment's name",
        source.path(),
        &acked,
        |dir| {
            let path = last_segment(dir);
            let len = std::fs::read(&path).unwrap().len();
            std::fs::write(
                &path,
                (0..len)
                    .map(|i| (i * 7919 % 251).to_le_bytes()[0])
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        },
        "bad magic",
    )
    .await;

    check(
        "a frame with a valid checksum and an undecodable payload",
        source.path(),
        &acked,
        |dir| {
            let path = last_segment(dir);
            let mut bytes = std::fs::read(&path).unwrap();
            let at = frame_offsets(&bytes)[0];
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            bytes[at + 16] = 0x7F; // no such entry kind
            let crc = crc32c::crc32c(&bytes[at + 8..at + 16 + len]);
            bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&path, bytes).unwrap();
        },
        "cannot be decoded",
    )
    .await;
}
