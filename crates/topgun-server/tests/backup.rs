//! Backup of a running server and restore into a new data directory, through the real
//! binary's `backup` and `restore` commands; and who may take a backup.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::*;
use serde_json::json;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{ClientOp, OpBatch, SyncInit};
use topgun_core::protocol::wire::Field;
use topgun_core::{LwwRecord, NodeId, OrRecord, Timestamp, Value};

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_topgun-server"));
    cmd.env_remove("JWT_SECRET")
        .env_remove("STORAGE_BACKEND")
        .env_remove("TOPGUN_DURABILITY")
        .env_remove("TOPGUN_DATA_DIR")
        .env("RUST_LOG", "warn");
    cmd
}

/// A server process, killed when dropped (also when a test fails midway, so that no
/// orphan keeps the test's output open).
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Served, SocketAddr) {
    let mut child = binary()
        .args(["--port", "0", "--data-dir"])
        .arg(dir)
        .env("TOPGUN_NO_AUTH", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().strip_prefix("PORT=").unwrap().parse().unwrap();
    (Served(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

fn run(cmd: &mut Command) -> Output {
    cmd.env_remove("TOPGUN_NO_AUTH").output().unwrap()
}

fn writes(from: u64, count: u64) -> Message {
    let node = NodeId::new("client").unwrap();
    let ops = (from..from + count)
        .map(|i| {
            let ts = Timestamp::new(1_700_000_000_000 + i, 0, node.clone());
            let (record, or_record) = if i % 4 == 0 {
                let or = OrRecord {
                    value: Value::Int(i64::try_from(i).unwrap()),
                    tag: ts.to_string(),
                    timestamp: ts,
                    ttl_ms: None,
                };
                (Field::Absent, Field::Value(or))
            } else {
                let value = Value::Str(format!("value {i}").into());
                (Field::Value(LwwRecord::new(value, ts, None)), Field::Absent)
            };
            ClientOp {
                id: Some((i + 1).to_string().into()),
                map_name: "m".into(),
                key: format!("k{i}").into(),
                op_type: None,
                record,
                or_record,
                or_tag: Field::Absent,
                write_concern: None,
                timeout: None,
            }
        })
        .collect();
    Message::OpBatch(OpBatch {
        ops,
        write_concern: None,
        timeout: None,
    })
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
    let (server, addr) = serve(&source);
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
    assert!(String::from_utf8_lossy(&taken.stderr).contains("400 records"));
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
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let again = restore(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let (server, addr) = serve(&restored);
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
