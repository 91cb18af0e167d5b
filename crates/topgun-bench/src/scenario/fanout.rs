//! `fanout`: S subscribers on one map, one writer at R writes/s. Every write carries its
//! send time; each subscriber records delivery latency and which writes it heard of, so
//! that lost and duplicated events are counted exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use topgun_core::Value;
use topgun_core::protocol::messages::{QuerySub, SyncInit};
use topgun_core::protocol::query::Query;
use topgun_core::protocol::{Limits, Message};

use super::{
    BenchError, Bits, Count, Pace, Written, events, micros_since, open_many, paced_writes,
    sent_before,
};
use crate::cli::{Common, FanoutArgs, SubscribeBy};
use crate::client::{Conn, Target};
use crate::progress::Progress;
use crate::report::{Report, round3};
use crate::stats::Latency;

/// What one subscriber heard.
#[derive(Debug, Default)]
struct Heard {
    seen: Bits,
    duplicates: u64,
    latency: Latency,
    /// The server closed the connection (e.g. it fell too far behind and was let go).
    disconnected: bool,
    /// Frames that did not decode.
    malformed: u64,
}

/// What the run shares between the writer, the subscribers and the coordinator.
#[derive(Debug)]
struct Plan {
    map: String,
    base: Instant,
    /// Writes with a lower sequence number belong to the warm-up.
    first_measured: u64,
    received: Count,
}

pub async fn run(
    target: &Target,
    common: &Common,
    args: &FanoutArgs,
) -> Result<Report, BenchError> {
    if args.subscribers == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        return Err(BenchError::Invalid(
            "--subscribers must be at least 1 and --rate above 0".into(),
        ));
    }
    let mut progress = Progress::new("fanout");
    let plan = Arc::new(Plan {
        map: format!("bench-fanout-{}-{}", std::process::id(), crate::now_ms()),
        base: Instant::now(),
        first_measured: (args.rate * common.warmup.as_secs_f64()).ceil() as u64,
        received: Count::default(),
    });
    let subscribers = open_many(
        target,
        args.subscribers,
        64,
        |i| format!("bench-subscriber-{i}"),
        &mut progress,
    )
    .await?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::with_capacity(subscribers.len());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.subscribers);
    for (index, conn) in subscribers.into_iter().enumerate() {
        let task = subscribe(
            conn,
            index,
            args.subscribe,
            Arc::clone(&plan),
            stopped.clone(),
        );
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move { task.await_with(ready).await }));
    }
    drop(ready_tx);
    for done in 0..args.subscribers {
        match ready_rx.recv().await {
            Some(Ok(())) => {
                progress.count("subscribed", done + 1, args.subscribers);
            }
            Some(Err(e)) => return Err(e),
            None => return Err(BenchError::Failed("a subscriber ended early".into())),
        }
    }
    progress.note(&format!("{} subscribers on {}", args.subscribers, plan.map));
    let writer = target
        .open("bench-fanout-writer")
        .await
        .map_err(BenchError::client("the writer"))?;
    let total = (args.rate * (common.warmup + common.duration).as_secs_f64()).ceil() as u64;
    let pace = Pace {
        rate: args.rate,
        total,
        map: &plan.map,
        base: plan.base,
        timeout: target.timeout,
    };
    let by = args.subscribe;
    let make = |seq, sent_at| (key_for(by, seq), Value::Int(sent_at));
    let written = paced_writes(writer, &pace, make, &plan.received, &mut progress).await?;
    // Wait until every subscriber heard every acknowledged write, or the drain time is up.
    let expected = written.acked * args.subscribers as u64;
    let drain_end = Instant::now() + args.drain;
    while plan.received.get() < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let mut heard = Vec::with_capacity(tasks.len());
    for task in tasks {
        heard.push(task.await.map_err(|e| BenchError::Failed(e.to_string()))?);
    }
    progress.finish();
    Ok(report(args, &plan, &written, &heard))
}

/// A subscriber: subscribes, says it is ready, then listens until told to stop.
struct Subscriber {
    conn: Conn,
    index: usize,
    by: SubscribeBy,
    plan: Arc<Plan>,
    stopped: watch::Receiver<bool>,
    limits: Limits,
}

fn subscribe(
    conn: Conn,
    index: usize,
    by: SubscribeBy,
    plan: Arc<Plan>,
    stopped: watch::Receiver<bool>,
) -> Subscriber {
    let limits = *conn.limits();
    Subscriber {
        conn,
        index,
        by,
        plan,
        stopped,
        limits,
    }
}

impl Subscriber {
    async fn await_with(
        mut self,
        ready: tokio::sync::mpsc::Sender<Result<(), BenchError>>,
    ) -> Heard {
        let subscribed = self.subscribe().await;
        let failed = subscribed.is_err();
        let _ = ready.send(subscribed).await;
        let mut heard = Heard::default();
        if !failed {
            self.listen(&mut heard).await;
        }
        self.conn.close().await;
        heard
    }

    async fn subscribe(&mut self) -> Result<(), BenchError> {
        let map = self.plan.map.as_str();
        let request = match self.by {
            SubscribeBy::Sync => Message::SyncInit(SyncInit {
                map_name: map.into(),
                last_sync_timestamp: Some(0),
            }),
            SubscribeBy::Query => Message::QuerySub(QuerySub {
                query_id: format!("bench-{}", self.index).into(),
                map_name: map.into(),
                query: Query::default(),
                fields: None,
            }),
        };
        let what = format!("subscriber {}", self.index);
        self.conn
            .send(&request)
            .await
            .map_err(BenchError::client(what.clone()))?;
        loop {
            let answer = self
                .conn
                .recv_within(Duration::from_secs(30), "subscription answer")
                .await
                .map_err(BenchError::client(what.clone()))?;
            match answer {
                Message::SyncRespRoot(_) | Message::QueryResp(_) => return Ok(()),
                Message::Error(e) => {
                    return Err(BenchError::Failed(format!(
                        "{what}: the server refused the subscription: ERROR {} {}",
                        e.code, e.message
                    )));
                }
                _ => {}
            }
        }
    }

    async fn listen(&mut self, heard: &mut Heard) {
        let mut heartbeat = tokio::time::interval(super::HEARTBEAT);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                frame = self.conn.recv_frame() => {
                    let Ok(frame) = frame else {
                        heard.disconnected = true;
                        return;
                    };
                    self.on_frame(&frame, heard);
                }
                _ = self.stopped.changed() => return,
                _ = heartbeat.tick() => {
                    if self.conn.send(&super::ping()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn on_frame(&self, frame: &[u8], heard: &mut Heard) {
        // Once per frame, not per event: the clock and the counter all subscribers share.
        let (now, mut received) = (micros_since(self.plan.base), 0);
        let scanned = events::scan(frame, &self.limits, |seen| {
            if seen.map.is_empty() || seen.map == self.plan.map {
                received += u64::from(self.on_write(seen.key, seen.value, now, heard));
            }
        });
        self.plan.received.add(received);
        if scanned.is_err() {
            heard.malformed += 1;
        }
    }

    /// Records one write heard at `now`; true if it was new.
    fn on_write(&self, key: &str, value: Option<i64>, now: u128, heard: &mut Heard) -> bool {
        let Some(seq) = seq_of(self.by, key) else {
            return false;
        };
        if !heard.seen.insert(seq) {
            heard.duplicates += 1;
            return false;
        }
        if seq >= self.plan.first_measured
            && let Some(sent_at) = value
        {
            heard.latency.record(sent_before(now, sent_at));
        }
        true
    }
}

fn report(args: &FanoutArgs, plan: &Plan, written: &Written, heard: &[Heard]) -> Report {
    let mut latency = Latency::default();
    let (mut lost, mut duplicates, mut received) = (0u64, 0u64, 0u64);
    let (mut disconnected, mut malformed) = (0u64, 0u64);
    for subscriber in heard {
        latency.add(&subscriber.latency);
        disconnected += u64::from(subscriber.disconnected);
        malformed += subscriber.malformed;
        duplicates += subscriber.duplicates;
        for seq in 0..written.sent {
            let acked = written.acked_seqs.contains(seq);
            let got = subscriber.seen.contains(seq);
            if acked && !got {
                lost += 1;
            }
            if got {
                received += 1;
            }
        }
    }
    let subscribers = heard.len() as u64;
    let mut report = Report::new("fanout");
    report
        .set("subscribers", subscribers)
        .set(
            "subscribe_by",
            format!("{:?}", args.subscribe).to_lowercase(),
        )
        .set("offered_writes_per_sec", round3(args.rate))
        .set("writes_sent", written.sent)
        .set("writes_acked", written.acked)
        .set(
            "writes_per_sec",
            round3(written.sent as f64 / written.sending_seconds.max(1e-9)),
        )
        .set("events_expected", written.acked * subscribers)
        .set("events_received", received)
        .set("events_lost", lost)
        .set("events_duplicated", duplicates)
        .set("subscribers_disconnected", disconnected)
        .set("malformed_frames", malformed)
        .set("first_measured_write", plan.first_measured);
    report.latency("delivery_latency", &latency.summary());
    report
}

/// Query-mode keys count down from this, so that each sorts before every earlier one.
const NEWEST: u64 = 99_999_999_999_999_999;

/// The key of write `seq`. A live query without sort or limit answers a window of its first
/// 10,000 rows in key order, so in query mode keys sort newest first: every write enters the
/// window (pushing the oldest row out, a `LEAVE` that reports no write), and a run longer than
/// 10,000 writes measures delivery rather than the window's edge.
fn key_for(by: SubscribeBy, seq: u64) -> String {
    match by {
        SubscribeBy::Sync => format!("e{seq}"),
        SubscribeBy::Query => format!("e{:017}", NEWEST - seq),
    }
}

/// The write a key belongs to: the inverse of [`key_for`].
fn seq_of(by: SubscribeBy, key: &str) -> Option<u64> {
    let n = key.strip_prefix('e')?.parse::<u64>().ok()?;
    match by {
        SubscribeBy::Sync => Some(n),
        SubscribeBy::Query => NEWEST.checked_sub(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keys_sort_newest_first_and_name_their_write() {
        let keys: Vec<String> = (0..20_000)
            .map(|seq| key_for(SubscribeBy::Query, seq))
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] > w[1]),
            "each sorts before the one before it"
        );
        for (seq, key) in (0..).zip(&keys) {
            assert_eq!(seq_of(SubscribeBy::Query, key), Some(seq));
        }
        assert_eq!(
            seq_of(SubscribeBy::Sync, &key_for(SubscribeBy::Sync, 42)),
            Some(42)
        );
    }
}
