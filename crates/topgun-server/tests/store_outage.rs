//! A store that stops taking writes: the server keeps accepting writes into its log up to the
//! log's bound, then refuses them with a clear error (never drops them), reports itself
//! degraded, and drains everything into the store once it is back. Once with a fault
//! injected in front of the in-memory store, once with a real PostgreSQL behind a TCP proxy
//! that is shut mid-load (its connections cut, new ones refused) and then reopened.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use topgun_core::protocol::Message;
use topgun_core::{NodeId, Timestamp, Value};
use topgun_server::Server;
use topgun_server::config::{Cli, Config};
use topgun_server::storage::pg::PgStore;
use topgun_server::storage::store::{
    Loaded, MemoryStore, Store, StoreError, StoredEntry, StoredValue,
};

/// The in-memory store behind a switch that makes every write fail.
#[derive(Debug, Default)]
struct Switchable {
    inner: MemoryStore,
    down: AtomicBool,
}

impl Store for Switchable {
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        self.inner.load_checked(partitions)
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        if self.down.load(Ordering::SeqCst) {
            return futures_util::future::ready(Err(StoreError::Unavailable(
                "connection refused".into(),
            )))
            .boxed();
        }
        self.inner.write(entries)
    }
}

/// A store that can "crash": what it then leaves behind is what its finished writes stored,
/// and the process it belonged to never finishes another write (so its checkpointer, stuck
/// on that write, must not have released the log behind it).
#[derive(Debug, Default)]
struct Crashing {
    inner: MemoryStore,
    crashed: AtomicBool,
    written: AtomicUsize,
    /// Writes begun after the crash, which never finish.
    hung: AtomicUsize,
}

impl Crashing {
    /// Crashes; returns what the store holds as a new store.
    fn crash(&self) -> Arc<MemoryStore> {
        self.crashed.store(true, Ordering::SeqCst);
        let all: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
        let durable = self.inner.load(&all).now_or_never().unwrap().unwrap();
        let copy = MemoryStore::new();
        copy.write(durable).now_or_never().unwrap().unwrap();
        Arc::new(copy)
    }
}

impl Store for Crashing {
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        self.inner.load_checked(partitions)
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        if self.crashed.load(Ordering::SeqCst) {
            self.hung.fetch_add(1, Ordering::SeqCst);
            return futures_util::future::pending().boxed();
        }
        self.written.fetch_add(1, Ordering::SeqCst);
        self.inner.write(entries)
    }
}

fn batch(n: u64, size: usize) -> (Message, Vec<(String, i64)>) {
    let node = NodeId::new("writer").unwrap();
    let keys: Vec<(String, i64)> = (0..size as u64)
        .map(|i| (format!("k{n}-{i}"), i64::try_from(n * 1000 + i).unwrap()))
        .collect();
    let ops = keys
        .iter()
        .zip(1u64..)
        .map(|((key, value), id)| {
            let at = Timestamp::new(1_700_000_000_000, 0, node.clone());
            put_op(n * 1000 + id, "m", key, Value::Int(*value), at)
        })
        .collect();
    let msg = op_batch(ops);
    (msg, keys)
}

/// Whether a store holds every key of `acked` (journal rows aside).
async fn holds_all(store: &dyn Store, acked: &HashMap<String, i64>) -> bool {
    let held = lww_values(store).await;
    acked.keys().all(|key| held.contains_key(key))
}

/// The LWW values a store holds, by key.
async fn lww_values(store: &dyn Store) -> HashMap<String, Value> {
    let all: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
    store
        .load(&all)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.value {
            StoredValue::Lww(r) => Some((e.key, r.value)),
            StoredValue::Or { .. } | StoredValue::Gone(_) => None,
        })
        .collect()
}

/// A server config on a free port with its log in `dir`, bounded at 64 KiB so that a test
/// reaches the bound quickly.
fn small_log_config(dir: &tempfile::TempDir, cli: Cli) -> Config {
    let cli = Cli {
        port: Some(0),
        host: Some("127.0.0.1".parse().unwrap()),
        data_dir: Some(dir.path().to_owned()),
        ..cli
    };
    let file = "wal_segment_bytes = 4096\nwal_max_bytes = 65536\n";
    Config::resolve(&cli, Some(file), &no_auth()).unwrap()
}

/// Writes batches (numbered from `first`) until one is refused because the log is full;
/// records every acknowledged key.
async fn write_until_refused(c: &mut Client, first: u64, acked: &mut HashMap<String, i64>) {
    for n in first..first + 1000 {
        let (msg, keys) = batch(n, 20);
        send(c, &msg).await;
        match recv(c).await.unwrap() {
            Message::OpAck(_) => acked.extend(keys),
            Message::Error(e) => {
                assert_eq!(e.code, 503, "{}", e.message);
                assert!(e.message.contains("not yet in the store"), "{}", e.message);
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("the log's bound was never reached");
}

/// Polls `check` every 50 ms for up to 30 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A TCP proxy that can be shut (every connection cut, new ones closed at once) and reopened.
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, links2) = (Arc::clone(&up), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        });
        Self { addr, up, links }
    }

    fn shut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn reopen(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Host and port of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once('@').unwrap().1;
    rest.split_once('/').unwrap().0.to_owned()
}

async fn stored(store: &Switchable) -> HashMap<String, Value> {
    lww_values(&store.inner).await
}

async fn pg_values(url: &str) -> HashMap<String, Value> {
    lww_values(&PgStore::connect(url).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_loses_nothing_acknowledged() {
    let db = TestDb::create().await;
    let upstream = host_port(&db.url);
    let proxy = Proxy::start(upstream.clone()).await;
    let proxied = db.url.replace(&upstream, &proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let postgres = Cli {
        storage_backend: Some("postgres".into()),
        database_url: Some(proxied),
        ..Cli::default()
    };
    let config = small_log_config(&dir, postgres);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    let mut c = connect(addr, "/").await;
    let mut acked: HashMap<String, i64> = HashMap::new();
    for n in 0..5 {
        let (msg, keys) = batch(n, 20);
        send(&mut c, &msg).await;
        assert!(matches!(recv(&mut c).await.unwrap(), Message::OpAck(_)));
        acked.extend(keys);
    }
    eventually("the first writes reached PostgreSQL", async || {
        pg_values(&db.url).await.len() >= acked.len()
    })
    .await;

    proxy.shut();
    write_until_refused(&mut c, 5, &mut acked).await;
    // The checkpointer finds the outage on its next attempt (it pauses between batches).
    eventually("readiness reports the outage", async || {
        let (status, body) = http_get_async(addr, "/health/ready").await;
        status == 503 && body.contains("degraded")
    })
    .await;

    proxy.reopen();
    eventually("the log drained into PostgreSQL", async || {
        pg_values(&db.url).await.len() >= acked.len()
    })
    .await;
    let stored = pg_values(&db.url).await;
    for (key, value) in &acked {
        assert_eq!(stored.get(key), Some(&Value::Int(*value)), "{key} lost");
    }
    eventually("readiness recovered", async || {
        http_get_async(addr, "/health/ready").await.0 == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_in_the_log_while_the_store_is_down_and_drain_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_log_config(&dir, Cli::default());
    let store = Arc::new(Switchable::default());
    let server = Server::bind_with_log(config, store.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut c = connect(addr, "/").await;
    let mut acked: HashMap<String, i64> = HashMap::new();

    store.down.store(true, Ordering::SeqCst);
    write_until_refused(&mut c, 0, &mut acked).await;
    assert!(acked.len() > 100, "writes were accepted into the log first");
    assert!(stored(&store).await.is_empty(), "nothing reached the store");
    eventually("readiness reports the outage", async || {
        let (status, body) = http_get_async(addr, "/health/ready").await;
        status == 503 && body.contains("degraded")
    })
    .await;

    store.down.store(false, Ordering::SeqCst);
    eventually("the log drained into the store", async || {
        stored(&store).await.len() >= acked.len()
    })
    .await;
    let now_stored = stored(&store).await;
    for (key, value) in &acked {
        assert_eq!(now_stored.get(key), Some(&Value::Int(*value)), "{key} lost");
    }
    eventually("readiness recovered", async || {
        http_get_async(addr, "/health/ready").await.0 == 200
    })
    .await;
    let (msg, _) = batch(5000, 5);
    send(&mut c, &msg).await;
    assert!(
        matches!(recv(&mut c).await.unwrap(), Message::OpAck(_)),
        "writes accepted again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_released_only_once_the_store_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Crashing::default());
    let server = Server::bind_with_log(small_log_config(&dir, Cli::default()), store.clone())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    let mut c = connect(addr, "/").await;
    let mut acked: HashMap<String, i64> = HashMap::new();
    // Writes spread over a few seconds: many checkpoints, and more log than one segment, so
    // segments are released along the way. Then a crash, and a few writes the store never
    // gets (a few: the log, bounded at 64 KiB, now fills), sent at once so that the
    // checkpointer, pausing between batches, reads them together, across segments: it hangs
    // on writing them, as if the process had died mid-write.
    let mut left = None;
    for n in 0..44 {
        let (msg, keys) = batch(n, 20);
        send(&mut c, &msg).await;
        assert!(matches!(recv(&mut c).await.unwrap(), Message::OpAck(_)));
        acked.extend(keys);
        if n < 40 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        } else if n == 40 {
            // The crash comes right after the checkpoint that stores every write so far
            // (which comes, since they are all acknowledged): the checkpointer then pauses
            // before its next read. Waiting for "the next checkpoint" instead could wait for
            // ever, when the checkpointer had already caught up.
            assert!(store.written.load(Ordering::SeqCst) >= 2, "checkpoints ran");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !holds_all(&store.inner, &acked).await {
                assert!(
                    std::time::Instant::now() < deadline,
                    "acknowledged writes stored"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            left = Some(store.crash());
        }
    }
    // The store the crash left holds batches 0 to 40; 41 to 43 are only in the log.
    let left = left.unwrap();
    eventually("the checkpointer is stuck in a write", async || {
        store.hung.load(Ordering::SeqCst) > 0
    })
    .await;

    // A restart over what the crash left: what the store held, and the log. Every
    // acknowledged write must reach the store again.
    let server = Server::bind_with_log(small_log_config(&dir, Cli::default()), left.clone())
        .await
        .unwrap();
    tokio::spawn(server.run(std::future::pending()));
    eventually("every acknowledged write is in the store", async || {
        lww_values(&*left).await.len() >= acked.len()
    })
    .await;
    let now_stored = lww_values(&*left).await;
    for (key, value) in &acked {
        assert_eq!(now_stored.get(key), Some(&Value::Int(*value)), "{key} lost");
    }
}
