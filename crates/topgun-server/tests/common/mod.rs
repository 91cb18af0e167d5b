//! Helpers shared by the integration tests: a server on a free port, a WebSocket test
//! client, and message shorthands.

// Each test file uses a different subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream as AsyncTcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use topgun_core::protocol::messages::{Auth, Ping};
use topgun_core::protocol::{Limits, Message};
use topgun_server::Server;
use topgun_server::config::{AuthEnv, Cli, Config};
use topgun_server::storage::store::{MemoryStore, Store};

pub(crate) mod cluster;

pub(crate) type Client = WebSocketStream<MaybeTlsStream<AsyncTcpStream>>;

pub(crate) const SECRET: &str = "integration-secret-0123456789abcdef";

/// A server on a free loopback port; dropping the sender shuts it down.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(crate) async fn start(env: AuthEnv, file: Option<&str>) -> Running {
    start_with_store(env, file, Arc::new(MemoryStore::new())).await
}

/// A server over `dir` with the default storage (redb behind the write-ahead log).
pub(crate) async fn start_durable(dir: &std::path::Path, file: Option<&str>) -> Running {
    let cli = Cli {
        port: Some(0),
        host: Some("127.0.0.1".parse().unwrap()),
        data_dir: Some(dir.to_owned()),
        ..Cli::default()
    };
    let config = Config::resolve(&cli, file, &no_auth()).unwrap();
    serve(Server::bind(config).await.unwrap())
}

/// Runs a bound server until its `stop` sender is used or dropped.
pub(crate) fn serve(server: Server) -> Running {
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// A server over `store`, so that a test can restart one over the same records.
pub(crate) async fn start_with_store(
    env: AuthEnv,
    file: Option<&str>,
    store: Arc<dyn Store>,
) -> Running {
    let cli = Cli {
        port: Some(0),
        host: Some("127.0.0.1".parse().unwrap()),
        ..Cli::default()
    };
    let config = Config::resolve(&cli, file, &env).unwrap();
    serve(Server::bind_with_store(config, store).await.unwrap())
}

pub(crate) fn no_auth() -> AuthEnv {
    AuthEnv {
        no_auth: Some("1".into()),
        ..AuthEnv::default()
    }
}

pub(crate) fn jwt() -> AuthEnv {
    AuthEnv {
        jwt_secret: Some(SECRET.into()),
        ..AuthEnv::default()
    }
}

pub(crate) fn token(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

// Not every test file reads the clock.
#[allow(unused_imports)]
pub(crate) use topgun_server::clock::now_ms;

/// Every message up to the `PONG` of a fresh ping (what arrived before this barrier; replies
/// keep request order, so every reply to earlier requests is among them).
pub(crate) async fn drain(c: &mut Client, ts: u64) -> Vec<Message> {
    send(c, &ping(ts)).await;
    let mut out = Vec::new();
    loop {
        match recv(c).await {
            Ok(Message::Pong(p)) if p.timestamp == ts => return out,
            Ok(msg) => out.push(msg),
            Err(code) => panic!("closed: {code:?}"),
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) async fn connect(addr: SocketAddr, path: &str) -> Client {
    let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    client
}

pub(crate) async fn send(client: &mut Client, msg: &Message) {
    client.send(Ws::Binary(msg.encode().into())).await.unwrap();
}

/// The next protocol message, or the close frame's code.
///
/// `GC_PRUNE`s (sent to every open connection when tombstones are pruned, and on connect
/// once a horizon exists) are skipped; [`recv_any`] returns them too.
pub(crate) async fn recv(client: &mut Client) -> Result<Message, Option<u16>> {
    loop {
        match recv_any(client).await {
            Ok(Message::GcPrune(_)) => {}
            other => return other,
        }
    }
}

/// The next protocol message, whatever it is, or the close frame's code.
pub(crate) async fn recv_any(client: &mut Client) -> Result<Message, Option<u16>> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("no frame within 5 s");
        match frame {
            Some(Ok(Ws::Binary(bytes))) => {
                return Ok(Message::decode(&bytes, &Limits::default()).unwrap());
            }
            Some(Ok(Ws::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}

pub(crate) fn auth(token: &str) -> Message {
    Message::Auth(Auth {
        token: token.into(),
        protocol_version: None,
        device_token: None,
    })
}

pub(crate) fn ping(ts: u64) -> Message {
    Message::Ping(Ping { timestamp: ts })
}

pub(crate) async fn expect_error(client: &mut Client, code: u32) -> String {
    match recv(client).await {
        Ok(Message::Error(e)) => {
            assert_eq!(e.code, code, "{}", e.message);
            e.message.to_string()
        }
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

pub(crate) async fn expect_pong(client: &mut Client, ts: u64) {
    match recv(client).await {
        Ok(Message::Pong(p)) => assert_eq!(p.timestamp, ts),
        other => panic!("expected PONG, got {other:?}"),
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// A plain HTTP/1.1 response: status, headers (names lowercased) and body.
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpReply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 POST of `body`, with `extra` header lines (each `"Name: value"`).
pub(crate) fn http_post(addr: SocketAddr, path: &str, extra: &[&str], body: &[u8]) -> HttpReply {
    http_request(addr, "POST", path, extra, body)
}

/// A plain HTTP/1.1 request.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &[u8],
) -> HttpReply {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413, 401) before taking the whole body, and close.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let mut body = response[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body);
    }
    HttpReply {
        status,
        headers,
        body,
    }
}

/// A chunked body's bytes.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// [`http_request`] off the async runtime.
pub(crate) async fn http_request_async(
    addr: SocketAddr,
    method: &'static str,
    path: String,
    extra: Vec<String>,
    body: Vec<u8>,
) -> HttpReply {
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        http_request(addr, method, &path, &extra, &body)
    })
    .await
    .unwrap()
}

/// `Authorization: Bearer <a JWT for root with `roles`>`, signed with [`SECRET`].
pub(crate) fn admin_bearer(roles: &[&str]) -> String {
    let jwt = token(
        &serde_json::json!({"sub": "root", "roles": roles, "exp": now_secs() + 3600}),
        SECRET,
    );
    format!("Authorization: Bearer {jwt}")
}

/// An HTTP request with an optional JSON body; the reply as it came.
pub(crate) async fn json_request(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    headers: &[String],
    body: Option<serde_json::Value>,
) -> HttpReply {
    let mut headers = headers.to_vec();
    let body = match body {
        Some(json) => {
            headers.push("Content-Type: application/json".into());
            json.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    http_request_async(addr, method, path.to_owned(), headers, body).await
}

/// [`json_request`], with the reply's status and its body as JSON (`null` when it is not).
pub(crate) async fn json_call(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    headers: &[String],
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let reply = json_request(addr, method, path, headers, body).await;
    let json = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, json)
}

/// [`http_post`] off the async runtime.
pub(crate) async fn http_post_async(
    addr: SocketAddr,
    path: &'static str,
    extra: Vec<String>,
    body: Vec<u8>,
) -> HttpReply {
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        http_post(addr, path, &extra, &body)
    })
    .await
    .unwrap()
}

/// [`http_get`] off the async runtime (the server under test shares it).
pub(crate) async fn http_get_async(addr: SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_get(addr, path))
        .await
        .unwrap()
}

/// A PostgreSQL database of its own for one test, dropped afterwards (also on panic).
///
/// The server comes from `TOPGUN_TEST_PG_URL` (an admin URL; `./scripts/test` sets it,
/// starting a throwaway server when none runs), else `postgres://postgres@127.0.0.1:5432/postgres`.
pub(crate) struct TestDb {
    admin_url: String,
    name: String,
    pub(crate) url: String,
}

impl TestDb {
    pub(crate) async fn create() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let admin_url = std::env::var("TOPGUN_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "topgun_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = admin_connection(&admin_url).await;
        sqlx::Executor::execute(
            &mut admin,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }
}

async fn admin_connection(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL tests need a server at {url} ({e}). Run ./scripts/test, which starts a \
             throwaway one when PostgreSQL is installed but not running, or set \
             TOPGUN_TEST_PG_URL to an admin URL"
        )
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any async context we could borrow: use a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = admin_connection(&url).await;
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(drop)).await;
            });
        })
        .join();
    }
}

/// The `topgun-server` binary with none of its settings inherited from this environment.
pub(crate) fn binary() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_topgun-server"));
    for var in [
        "JWT_SECRET",
        "TOPGUN_NO_AUTH",
        "PORT",
        "TOPGUN_PORT",
        "TOPGUN_DATA_DIR",
        "TOPGUN_REDB_PATH",
        "TOPGUN_WAL_DIR",
        "TOPGUN_DURABILITY",
        "TOPGUN_WAL_FSYNC_POLICY",
        "TOPGUN_JOURNAL_ENABLED",
        "TOPGUN_JOURNAL_CAPACITY",
        "TOPGUN_LOG_FORMAT",
        "STORAGE_BACKEND",
        "DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// A running `topgun-server` process, killed when dropped (also when a test fails midway,
/// so that no orphan keeps the test's output open).
pub(crate) struct Served {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` on a free port and waits for the `PORT=<n>` line it prints once listening.
pub(crate) fn serve_binary(cmd: &mut std::process::Command) -> Served {
    use std::io::BufRead;
    let mut child = cmd
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT=")
        .unwrap_or_else(|| panic!("expected a PORT=<n> line, got {line:?}"))
        .parse()
        .unwrap();
    Served {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// An op on `map` that carries nothing yet: set its `record`, `orRecord` or `orTag`.
pub(crate) fn blank_op(id: u64, map: &str, key: &str) -> topgun_core::protocol::messages::ClientOp {
    use topgun_core::protocol::wire::Field;
    topgun_core::protocol::messages::ClientOp {
        id: Some(id.to_string().into()),
        map_name: map.into(),
        key: key.into(),
        op_type: None,
        record: Field::Absent,
        or_record: Field::Absent,
        or_tag: Field::Absent,
        write_concern: None,
        timeout: None,
    }
}

/// An LWW put, as the TS client sends it.
pub(crate) fn put_op(
    id: u64,
    map: &str,
    key: &str,
    value: topgun_core::Value,
    at: topgun_core::Timestamp,
) -> topgun_core::protocol::messages::ClientOp {
    topgun_core::protocol::messages::ClientOp {
        op_type: Some("PUT".into()),
        record: topgun_core::protocol::wire::Field::Value(topgun_core::LwwRecord::new(
            value, at, None,
        )),
        ..blank_op(id, map, key)
    }
}

/// An OR-Map add of `record` under `key`.
pub(crate) fn or_add_op(
    id: u64,
    map: &str,
    key: &str,
    record: topgun_core::OrRecord,
) -> topgun_core::protocol::messages::ClientOp {
    topgun_core::protocol::messages::ClientOp {
        op_type: Some("OR_ADD".into()),
        or_record: topgun_core::protocol::wire::Field::Value(record),
        ..blank_op(id, map, key)
    }
}

/// An OR-Map remove of the record tagged `tag` under `key`.
pub(crate) fn or_remove_op(
    id: u64,
    map: &str,
    key: &str,
    tag: &str,
) -> topgun_core::protocol::messages::ClientOp {
    topgun_core::protocol::messages::ClientOp {
        op_type: Some("OR_REMOVE".into()),
        or_tag: topgun_core::protocol::wire::Field::Value(tag.into()),
        ..blank_op(id, map, key)
    }
}

/// A live query on every record of `map`.
pub(crate) fn query_all(query_id: &str, map: &str) -> Message {
    Message::QuerySub(topgun_core::protocol::messages::QuerySub {
        query_id: query_id.into(),
        map_name: map.into(),
        query: topgun_core::protocol::query::Query::default(),
        fields: None,
    })
}

/// Role `user` may do everything on map `todos`, and nothing else is allowed.
pub(crate) const USERS_OWN_TODOS: &str = r#"
[[policies]]
role = "user"
map_name_pattern = "todos"
actions = ["ALL"]
"#;

/// An `OP_BATCH` of `ops` without a write concern.
pub(crate) fn op_batch(ops: Vec<topgun_core::protocol::messages::ClientOp>) -> Message {
    Message::OpBatch(topgun_core::protocol::messages::OpBatch {
        ops,
        write_concern: None,
        timeout: None,
    })
}

/// Every record of `map` on the server at `addr`, read leaf by leaf (requests pipelined in
/// chunks): key → value.
pub(crate) async fn read_map(
    addr: SocketAddr,
    map: &str,
) -> std::collections::BTreeMap<String, topgun_core::Value> {
    use topgun_core::protocol::messages::MerkleReqBucket;
    let mut c = connect(addr, "/").await;
    let mut out = std::collections::BTreeMap::new();
    let paths: Vec<String> = (0..4096).map(|i| format!("{i:03x}")).collect();
    for chunk in paths.chunks(128) {
        for path in chunk {
            let req = MerkleReqBucket {
                map_name: map.into(),
                path: path.as_str().into(),
            };
            send(&mut c, &Message::MerkleReqBucket(req)).await;
        }
        let mut answered = 0;
        while answered < chunk.len() {
            match recv(&mut c).await {
                Ok(Message::SyncRespLeaf(leaf)) => {
                    answered += 1;
                    for r in leaf.records {
                        out.insert(r.key.to_string(), r.record.value);
                    }
                }
                // A cluster member pushes its partition map to every connection.
                Ok(Message::PartitionMap(_)) => {}
                other => panic!("expected SYNC_RESP_LEAF, got {other:?}"),
            }
        }
    }
    out
}
