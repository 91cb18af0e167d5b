//! Backup of a running server and restore into a new data directory, through the real
//! binary's `backup` and `restore` commands; and who may take a backup.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::json;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{ClientOp, SyncInit};
use topgun_core::protocol::wire::Field;
use topgun_core::{NodeId, OrRecord, Timestamp, Value};

fn serve(dir: &Path) -> Served {
    serve_binary(
        binary()
            .arg("--data-dir")
            .arg(dir)
            .env("TOPGUN_NO_AUTH", "1"),
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn writes(from: u64, count: u64) -> Message {
    let node = NodeId::new("client").unwrap();
    let ops = (from..from + count)
        .map(|i| {
            let ts = Timestamp::new(1_700_000_000_000 + i, 0, node.clone());
            let key = format!("k{i}");
            if i % 4 == 0 {
                let or = OrRecord {
                    value: Value::Int(i64::try_from(i).unwrap()),
                    tag: ts.to_string(),
                    timestamp: ts,
                    ttl_ms: None,
                };
                ClientOp {
                    or_record: Field::Value(or),
                    ..blank_op(i + 1, "m", &key)
                }
            } else {
                put_op(
                    i + 1,
                    "m",
                    &key,
                    Value::Str(format!("value {i}").into()),
                    ts,
                )
            }
        })
        .collect();
    op_batch(ops)
}

async fn roots(c: &mut Client) -> (u32, u32) {
    send(
        c,
        &Message::SyncInit(SyncInit {
            map_name: "m".into(),
            last_sync_timestamp: None,
        }),
    )
    .await;
    let Ok(Message::SyncRespRoot(lww)) = recv(c).await else {
        panic!()
    };
    send(
        c,
        &Message::OrMapSyncInit(topgun_core::protocol::messages::OrMapSyncInit {
            map_name: "m".into(),
            root_hash: 0,
            bucket_hashes: std::collections::BTreeMap::new(),
            last_sync_timestamp: None,
            claimed_epoch: None,
        }),
    )
    .await;
    let Ok(Message::OrMapSyncRespRoot(or)) = recv(c).await else {
        panic!()
    };
    (lww.root_hash, or.root_hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_server_restores_into_a_new_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (source, restored, file) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("m.tgbak"),
    );
    let server = serve(&source);
    let addr = server.addr;
    let mut c = connect(addr, "/").await;
    send(&mut c, &writes(0, 400)).await;
    assert!(matches!(recv(&mut c).await, Ok(Message::OpAck(_))));
    let before = roots(&mut c).await;
    assert_ne!(before, (0, 0));

    let taken = run(binary()
        .args(["backup", "--out"])
        .arg(&file)
        .args(["--url", &format!("http://{addr}")]));
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(said.contains("400 records"));
    // Not a terminal: one closing line, no progress bar redrawn in the log.
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(!said.contains(['\r', '\u{1b}']), "{said:?}");
    // Writes after the backup are not in it.
    send(&mut c, &writes(400, 10)).await;
    assert!(matches!(recv(&mut c).await, Ok(Message::OpAck(_))));
    drop(server);

    let restore = |force: bool| {
        let mut cmd = binary();
        cmd.arg("restore")
            .arg(&file)
            .arg("--data-dir")
            .arg(&restored);
        if force {
            cmd.arg("--force");
        }
        run(&mut cmd)
    };
    let done = restore(false);
    let said = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(!said.contains(['\r', '\u{1b}']), "{said:?}");
    let again = restore(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let server = serve(&restored);
    let addr = server.addr;
    let mut c = connect(addr, "/").await;
    assert_eq!(
        roots(&mut c).await,
        before,
        "the restored server holds exactly the backup"
    );
    drop(server);

    // A damaged file is refused and changes nothing.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&file, bytes).unwrap();
    let refused = restore(true);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cut short"));
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response[9..12].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_only_admins_may_take_a_backup() {
    let server = start(jwt(), None).await;
    let addr = server.addr;
    let exp = now_secs() + 60;
    let user = token(&json!({"sub": "u", "exp": exp, "roles": ["USER"]}), SECRET);
    let admin = token(&json!({"sub": "a", "exp": exp, "roles": ["ADMIN"]}), SECRET);
    let codes = tokio::task::spawn_blocking(move || {
        (
            get(addr, "/admin/backup", None),
            get(addr, "/admin/backup", Some("garbage")),
            get(addr, "/admin/backup", Some(&user)),
            get(addr, "/admin/backup", Some(&admin)),
        )
    })
    .await
    .unwrap();
    assert_eq!(codes, (401, 401, 403, 200));
}
