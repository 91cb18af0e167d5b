//! The `topgun-server` binary as an operator meets it: its help, its refusals at start-up,
//! and its logs.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::process::Stdio;

use common::{binary, serve_binary};

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_says_what_starting_needs_and_every_security_key() {
    let help = binary().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for needed in [
        "JWT_SECRET",
        "TOPGUN_NO_AUTH=1",
        "at least 32 bytes",
        "ops_per_batch_max",
        "auth_failures_per_ip_per_minute",
        "preauth_connections_max",
        "max_depth                         1..=256",
    ] {
        assert!(text.contains(needed), "--help lacks {needed:?}:\n{text}");
    }
}

#[test]
fn a_second_server_on_the_same_data_directory_says_so_once_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _first = serve_binary(
        binary()
            .env("TOPGUN_NO_AUTH", "1")
            .arg("--data-dir")
            .arg(&data),
    );
    let second = binary()
        .env("TOPGUN_NO_AUTH", "1")
        .args(["--port", "0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = stderr_of(&second);
    let expected = format!(
        "write-ahead log directory {} is in use by another topgun-server",
        data.join("wal").display()
    );
    assert_eq!(
        stderr.matches(&expected).count(),
        1,
        "said once, in:\n{stderr}"
    );
    assert!(stderr.contains("topgun-server.lock"), "{stderr}");
    assert!(
        !stderr.contains("binding"),
        "not blamed on the address: {stderr}"
    );
    assert!(
        !stderr.contains("Database already open"),
        "the store is never reached: {stderr}"
    );
}

#[test]
fn a_setting_out_of_range_stops_the_server_naming_the_key_and_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("topgun.toml");
    std::fs::write(&file, "idle_timeout_ms = 0\n").unwrap();
    let refused = binary()
        .env("TOPGUN_NO_AUTH", "1")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        stderr_of(&refused),
        "topgun-server: idle_timeout_ms must be 1 s..=1 day, got 0\n"
    );
    let short = binary().env("JWT_SECRET", "s3cret").output().unwrap();
    assert_eq!(short.status.code(), Some(2));
    assert!(
        stderr_of(&short).contains("JWT_SECRET: an HS256 secret must be at least 32 bytes"),
        "{}",
        stderr_of(&short)
    );
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = binary()
        .env("TOPGUN_NO_AUTH", "1")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let listening = line.contains("listening");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("listening")),
        "no listening line in {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI codes in a pipe: {seen:?}"
    );
}
