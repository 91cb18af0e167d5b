//! A batch's `timeout` (PROTOCOL §4.3), tested over a real socket against a server whose store is
//! slowed down on purpose, so that durability takes longer than the deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::WriteConcern;
use topgun_core::protocol::messages::{OpAck, OpBatch};
use topgun_core::{NodeId, Timestamp, Value};
use topgun_server::clock::now_ms;
use topgun_server::storage::store::{Loaded, MemoryStore, Store, StoreError, StoredEntry};

/// How long a slowed store takes to make a write durable.
const SLOW: Duration = Duration::from_millis(600);

/// A [`MemoryStore`] whose writes take [`SLOW`] once `slow` is set.
#[derive(Debug, Default)]
struct SlowStore {
    inner: MemoryStore,
    slow: AtomicBool,
}

impl Store for SlowStore {
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        self.inner.load_checked(partitions)
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if self.slow.load(Ordering::SeqCst) {
                tokio::time::sleep(SLOW).await;
            }
            self.inner.write(entries).await
        }
        .boxed()
    }
}

fn batch(first_id: u64, timeout: Option<u64>) -> Message {
    let at = Timestamp::new(now_ms(), 0, NodeId::new("c").unwrap());
    let ops = (first_id..first_id + 3)
        .map(|i| put_op(i, "todos", &format!("k{i}"), Value::from(1), at.clone()))
        .collect();
    Message::OpBatch(OpBatch {
        ops,
        write_concern: None,
        timeout,
    })
}

async fn ack(c: &mut Client) -> OpAck {
    loop {
        match recv(c).await.unwrap() {
            Message::OpAck(ack) => return ack,
            Message::ServerEvent(_) | Message::ServerBatchEvent(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Past its deadline a batch is answered at once: the ack says what level it reached and each
/// op has a failed result saying why. Without a deadline the ack waits for durability.
#[tokio::test]
async fn a_batch_past_its_timeout_is_answered_with_the_level_it_reached() {
    let store = Arc::new(SlowStore::default());
    let server = start_with_store(no_auth(), None, store.clone()).await;
    let mut c = connect(server.addr, "/ws").await;
    store.slow.store(true, Ordering::SeqCst);

    let started = Instant::now();
    send(&mut c, &batch(1, Some(100))).await;
    let late = ack(&mut c).await;
    let waited = started.elapsed();
    assert!(
        waited < SLOW,
        "answered at its deadline, not after {waited:?}"
    );
    assert_eq!(late.last_id, "3");
    assert_eq!(late.achieved_level, Some(WriteConcern::Applied));
    let results = late.results.expect("a result per op");
    let ids: Vec<&str> = results.iter().map(|r| r.op_id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    for result in &results {
        assert!(!result.success);
        assert_eq!(result.achieved_level, WriteConcern::Applied);
        let why = result.error.as_deref().unwrap();
        assert!(why.starts_with("timed out after 100 ms"), "{why}");
    }

    let started = Instant::now();
    send(&mut c, &batch(4, None)).await;
    let durable = ack(&mut c).await;
    assert!(
        started.elapsed() >= SLOW,
        "no deadline: the ack waits for the store"
    );
    assert_eq!(durable.last_id, "6");
    assert!(durable.results.is_none());

    // What timed out still became durable: the store holds every key.
    tokio::time::sleep(SLOW).await;
    assert_eq!(store.inner.len(), 6);
}
