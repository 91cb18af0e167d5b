//! The binary under the environment of TopGun deployments (COMPAT.md §1): the variables they
//! set, and the process contract their launchers rely on — one `PORT=<n>` line on stdout,
//! logs on stderr, nothing written to the working directory without a store, exit within
//! 5 s of SIGTERM and the port free again at once.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use topgun_core::protocol::Message;
use topgun_core::{NodeId, Timestamp, Value};

/// Starts `cmd` (which names its own port, if any) and reads the `PORT=<n>` line; the child
/// keeps its stdout, so that the test can check nothing else is ever written there.
fn announce(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT=")
        .unwrap_or_else(|| panic!("expected a PORT=<n> line, got {line:?}"))
        .parse()
        .unwrap();
    child.stdout = Some(stdout.into_inner());
    (child, port)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for `child` to exit, at most `limit`; `None` (and the child killed) if it did not.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Writes one record and waits for its acknowledgement.
async fn write_one(addr: SocketAddr, key: &str) {
    let mut c = connect(addr, "/").await;
    let at = Timestamp::new(1_700_000_000_000, 0, NodeId::new("env-test").unwrap());
    send(
        &mut c,
        &op_batch(vec![put_op(1, "env", key, Value::Int(7), at)]),
    )
    .await;
    loop {
        match recv(&mut c).await {
            Ok(Message::OpAck(_)) => return,
            Ok(_) => {}
            Err(code) => panic!("closed before the ack: {code:?}"),
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn storage_backend_null_leaves_an_empty_working_directory_empty() {
    let cwd = tempfile::tempdir().unwrap();
    let served = serve_binary(
        binary()
            .current_dir(cwd.path())
            .env("TOPGUN_NO_AUTH", "1")
            .env("STORAGE_BACKEND", "null")
            .env("RUST_LOG", "info"),
    );
    write_one(served.addr, "k").await;
    assert_eq!(
        read_map(served.addr, "env").await.get("k"),
        Some(&Value::Int(7))
    );
    drop(served);
    assert_eq!(entries(cwd.path()), Vec::<String>::new(), "nothing written");
}

#[test]
fn topgun_port_is_read_when_port_is_not_set() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wanted = free.local_addr().unwrap().port();
    drop(free);
    let (mut child, port) = announce(
        binary()
            .env("TOPGUN_NO_AUTH", "1")
            .env("STORAGE_BACKEND", "memory")
            .env("TOPGUN_PORT", wanted.to_string()),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(port, wanted);
    // PORT wins: port 1 would need privileges this test does not have.
    let (mut child, port) = announce(
        binary()
            .env("TOPGUN_NO_AUTH", "1")
            .env("STORAGE_BACKEND", "memory")
            .env("PORT", "0")
            .env("TOPGUN_PORT", "1"),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(port, 1);
}

#[test]
fn a_bad_environment_value_exits_with_status_2_naming_the_variable() {
    for (name, value) in [
        ("TOPGUN_WAL_FSYNC_POLICY", "sometimes"),
        ("TOPGUN_JOURNAL_ENABLED", "perhaps"),
        ("TOPGUN_CORS_ORIGINS", "example.com"),
        ("TOPGUN_LOG_FORMAT", "xml"),
    ] {
        let out = binary()
            .env("TOPGUN_NO_AUTH", "1")
            .env("STORAGE_BACKEND", "memory")
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    }
}

/// With `TOPGUN_LOG_FORMAT=json` every stderr line is a JSON object; the no-auth warning and
/// the tolerated variables are said once each; SIGTERM ends the server within 5 s with
/// status 0, stdout never carried more than the port, and the port is free again at once.
#[tokio::test]
async fn the_process_contract_holds_with_json_logs() {
    let mut cmd = binary();
    cmd.env("TOPGUN_NO_AUTH", "1")
        .env("JWT_SECRET", SECRET)
        .env("STORAGE_BACKEND", "memory")
        .env("TOPGUN_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .env("TOPGUN_MAX_RAM_MB", "512")
        .env("TOPGUN_EVICTION_POLICY", "lru")
        .args(["--port", "0"])
        .stderr(Stdio::piped());
    let (mut child, port) = announce(&mut cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // A client that holds its connection and never reads must not hold up the exit.
    let _idle = connect(addr, "/").await;
    write_one(addr, "k").await;
    let stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    sigterm(&child);
    let status = exit_within(&mut child, Duration::from_secs(5));
    let took = started.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} after {took:?}"
    );
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    assert_eq!(rest, "", "stdout carries the PORT line only");

    let lines: Vec<String> = BufReader::new(stderr).lines().map(Result::unwrap).collect();
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let messages: Vec<&str> = logs
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    let said = |text: &str| messages.iter().filter(|m| m.contains(text)).count();
    assert_eq!(said("authentication is OFF"), 1, "{messages:?}");
    assert_eq!(
        said("not used by this server: RUST_BACKTRACE, TOPGUN_EVICTION_POLICY, TOPGUN_MAX_RAM_MB"),
        1,
        "{messages:?}"
    );

    // A new instance binds the same port at once.
    let (mut again, same) = announce(
        binary()
            .env("TOPGUN_NO_AUTH", "1")
            .env("STORAGE_BACKEND", "memory")
            .args(["--port", &port.to_string()]),
    );
    let _ = again.kill();
    let _ = again.wait();
    assert_eq!(same, port);
}
