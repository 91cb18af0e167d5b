//! The scenarios. Each opens real connections to the target, drives them, and returns a
//! [`Report`](crate::report::Report); the binary prints it, the smoke tests check it.

pub mod conns;
pub mod events;
pub mod fanout;
pub mod query;
pub mod sync;
pub mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use topgun_core::protocol::messages::{ClientOp, OpBatch, Ping};
use topgun_core::protocol::wire::Field;
use topgun_core::protocol::{Message, enums::WriteConcern};
use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

use crate::client::{ClientError, Conn, Target};
use crate::progress::Progress;

/// Why a scenario could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: ClientError,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

impl BenchError {
    fn client(what: impl Into<String>) -> impl FnOnce(ClientError) -> Self {
        let what = what.into();
        move |source| Self::Client { what, source }
    }
}

/// Opens `count` connections, at most `concurrency` handshakes at a time; the first
/// failure ends the attempt. `subject(i)` names connection `i` (the token's `sub`).
pub async fn open_many(
    target: &Target,
    count: usize,
    concurrency: usize,
    subject: impl Fn(usize) -> String,
    progress: &mut Progress,
) -> Result<Vec<Conn>, BenchError> {
    let mut opened: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
    let mut pending = FuturesUnordered::new();
    let (mut next, mut done) = (0, 0);
    // Reports even while no handshake completes, so a stalled phase shows where it stands.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    progress.count("connected", done, count);
    while next < count || !pending.is_empty() {
        while next < count && pending.len() < concurrency.max(1) {
            let (target, name, index) = (target.clone(), subject(next), next);
            pending.push(async move { (index, target.open(&name).await) });
            next += 1;
        }
        tokio::select! {
            Some((index, result)) = pending.next() => {
                let conn = result.map_err(BenchError::client(format!(
                    "connection {} of {count}",
                    index + 1
                )))?;
                opened[index] = Some(conn);
                done += 1;
                progress.count("connected", done, count);
            }
            _ = tick.tick() => progress.count("connected", done, count),
        }
    }
    Ok(opened.into_iter().flatten().collect())
}

/// A string value of `size` bytes.
pub fn value_of_size(size: usize) -> Value {
    Value::Str("x".repeat(size).into())
}

/// Issues the ops of one connection: increasing decimal op ids (as the TS client's op log
/// does), fresh HLC timestamps from the connection's own node id.
#[derive(Debug)]
pub struct OpMaker {
    node: NodeId,
    next_id: u64,
    counter: u32,
    write_concern: Option<WriteConcern>,
}

impl OpMaker {
    pub fn new(node: &str, write_concern: Option<WriteConcern>) -> Result<Self, BenchError> {
        let node =
            NodeId::new(node).map_err(|e| BenchError::Invalid(format!("node id {node:?}: {e}")))?;
        Ok(Self {
            node,
            next_id: 1,
            counter: 0,
            write_concern,
        })
    }

    /// One PUT; returns its op id.
    pub fn put(&mut self, map: &str, key: &str, value: Value) -> (u64, ClientOp) {
        let id = self.next_id;
        self.next_id += 1;
        self.counter = self.counter.wrapping_add(1);
        let at = Timestamp::new(crate::now_ms(), self.counter, self.node.clone());
        let op = ClientOp {
            id: Some(id.to_string().into()),
            map_name: map.into(),
            key: key.into(),
            op_type: Some("PUT".into()),
            record: Field::Value(LwwRecord::new(value, at, None)),
            or_record: Field::Absent,
            or_tag: Field::Absent,
            write_concern: None,
            timeout: None,
        };
        (id, op)
    }

    /// An `OP_BATCH` of `ops`, with the write concern asked for.
    pub fn batch(&self, ops: Vec<ClientOp>) -> Message {
        Message::OpBatch(OpBatch {
            ops,
            write_concern: self.write_concern,
            timeout: None,
        })
    }
}

/// The id an `OP_ACK` names, when it is one of ours (decimal).
pub fn acked_id(message: &Message) -> Option<u64> {
    match message {
        Message::OpAck(ack) => ack.last_id.parse().ok(),
        _ => None,
    }
}

/// Sends `PING` as the TS client's heartbeat does, so that the server's idle timer never
/// closes a connection that a long run keeps quiet.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

pub fn ping() -> Message {
    Message::Ping(Ping {
        timestamp: crate::now_ms(),
    })
}

/// Microseconds since `base`: the clock writes are stamped with (`paced_writes`).
pub fn micros_since(base: Instant) -> u128 {
    base.elapsed().as_micros()
}

/// How long before `now` (from [`micros_since`]) a write stamped `sent_at` was sent. A
/// frame's events all arrived at once, so readers take the time once per frame: a clock
/// read per event was 3 % of the load generator's CPU in `fanout`.
pub fn sent_before(now: u128, sent_at: i64) -> Duration {
    let sent_at = u128::try_from(sent_at).unwrap_or(0);
    Duration::from_micros(u64::try_from(now.saturating_sub(sent_at)).unwrap_or(u64::MAX))
}

/// A counter shared by the connection tasks and read by the coordinator.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One bit per write sequence number.
#[derive(Debug, Default, Clone)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// Marks `seq`; false if it was already marked.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.0
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

/// What the writer managed.
#[derive(Debug)]
pub struct Written {
    pub sent: u64,
    pub acked: u64,
    pub acked_seqs: Bits,
    /// From the first write to the last one sent.
    pub sending_seconds: f64,
}

/// How a writer paces its writes.
#[derive(Debug)]
pub struct Pace<'a> {
    pub rate: f64,
    pub total: u64,
    pub map: &'a str,
    /// Send times are microseconds since this instant.
    pub base: Instant,
    pub timeout: Duration,
}

/// Sends `pace.total` writes at `pace.rate`/s, one PUT per `OP_BATCH` (as a TS client writing
/// once); `make(seq, sent_at)` gives each write's key and value, `sent_at` being its send
/// time in microseconds since `pace.base`. Returns once every write is acknowledged or the
/// server falls silent for the timeout.
pub async fn paced_writes(
    mut conn: Conn,
    pace: &Pace<'_>,
    make: impl Fn(u64, i64) -> (String, Value),
    delivered: &Count,
    progress: &mut Progress,
) -> Result<Written, BenchError> {
    let mut ops = OpMaker::new("bench-writer", None)?;
    let (rate, total, timeout) = (pace.rate, pace.total, pace.timeout);
    let every = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut written = Written {
        sent: 0,
        acked: 0,
        acked_seqs: Bits::default(),
        sending_seconds: 0.0,
    };
    let mut last_answer = Instant::now();
    while written.acked < total && last_answer.elapsed() < timeout {
        let due = started + every.mul_f64(written.sent as f64);
        if written.sent < total && Instant::now() >= due {
            let sent_at = i64::try_from(pace.base.elapsed().as_micros()).unwrap_or(i64::MAX);
            let (key, value) = make(written.sent, sent_at);
            let (_, op) = ops.put(pace.map, &key, value);
            conn.send(&ops.batch(vec![op]))
                .await
                .map_err(BenchError::client("the writer"))?;
            written.sent += 1;
            // Up to the last send, also when the run ends before every write went out (a
            // server that stopped acknowledging).
            written.sending_seconds = started.elapsed().as_secs_f64();
            continue;
        }
        let wake = if written.sent < total {
            due
        } else {
            Instant::now() + timeout
        };
        tokio::select! {
            message = conn.recv() => {
                let message = message.map_err(BenchError::client("the writer"))?;
                if let Some(id) = acked_id(&message) {
                    // Op ids start at 1: the write with sequence number id - 1.
                    if written.acked_seqs.insert(id - 1) {
                        written.acked += 1;
                    }
                    last_answer = Instant::now();
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        progress.update(format!(
            "{} writes sent, {} acked, {} events delivered",
            written.sent,
            written.acked,
            delivered.get()
        ));
    }
    conn.close().await;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::Bits;

    #[test]
    fn bits_mark_once() {
        let mut seen = Bits::default();
        assert!(seen.insert(0));
        assert!(seen.insert(130));
        assert!(!seen.insert(130));
        assert!(seen.contains(130) && seen.contains(0) && !seen.contains(64));
    }
}
