//! `query`: Q live queries on one map, spread over C connections, and one writer at R
//! writes/s. Query `n` selects the records whose `bucket` is `n mod B`, with B = 1/matching,
//! and write `s` goes to bucket `s mod B`: each write matches that fraction of the queries.
//! Every write carries its send time; subscribers record write → `QUERY_UPDATE` latency and
//! which (query, write) pairs they were told of, so lost and duplicated updates are exact.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use topgun_core::protocol::enums::PredicateOp;
use topgun_core::protocol::messages::QuerySub;
use topgun_core::protocol::query::{PredicateNode, Query};
use topgun_core::protocol::{Limits, Message};
use topgun_core::{Value, ValueMap};

use super::{
    BenchError, Bits, Count, Pace, Written, events, micros_since, open_many, paced_writes,
    sent_before,
};
use crate::cli::{Common, QueryArgs};
use crate::client::{Conn, Target};
use crate::progress::Progress;
use crate::report::{Report, round3};
use crate::stats::Latency;

/// Most queries the bench puts on one connection (servers bound them per connection).
const QUERIES_PER_CONNECTION: usize = 256;

pub async fn run(target: &Target, common: &Common, args: &QueryArgs) -> Result<Report, BenchError> {
    let buckets = buckets(args)?;
    let per_conn = args.queries.div_ceil(args.connections);
    if per_conn > QUERIES_PER_CONNECTION {
        return Err(BenchError::Invalid(format!(
            "{} queries on {} connections is {per_conn} per connection; servers allow \
             {QUERIES_PER_CONNECTION}: raise --connections",
            args.queries, args.connections
        )));
    }
    let mut progress = Progress::new("query");
    let map = format!("query-{:x}", crate::now_ms() % 0xff_ffff);
    let base = Instant::now();
    let first_measured = (args.rate * common.warmup.as_secs_f64()).ceil() as u64;
    let delivered = Arc::new(Count::default());
    let conns = open_many(
        target,
        args.connections,
        64,
        |i| format!("bench-query-{i}"),
        &mut progress,
    )
    .await?;
    let (stop, stopped) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.connections);
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let first = i * per_conn;
        let ids: Vec<usize> = (first..(first + per_conn).min(args.queries)).collect();
        let listener = Listener {
            limits: *conn.limits(),
            conn,
            base,
            first_measured,
            delivered: Arc::clone(&delivered),
            stopped: stopped.clone(),
        };
        let (ready, map) = (ready_tx.clone(), map.clone());
        tasks.push(tokio::spawn(listener.run(map, ids, buckets, ready)));
    }
    drop(ready_tx);
    // One answer per connection (the listeners keep their senders while they listen).
    let mut subscribed = 0;
    for _ in 0..args.connections {
        let outcome = ready_rx
            .recv()
            .await
            .ok_or_else(|| BenchError::Failed("a query connection ended early".into()))?;
        subscribed += outcome?;
        progress.update(format!("{subscribed}/{} queries answered", args.queries));
    }
    progress.note(&format!("{subscribed} live queries on {map}"));
    let writer = target
        .open("bench-query-writer")
        .await
        .map_err(BenchError::client("the writer"))?;
    let total = (args.rate * (common.warmup + common.duration).as_secs_f64()).ceil() as u64;
    let pace = Pace {
        rate: args.rate,
        total,
        map: &map,
        base,
        timeout: target.timeout,
    };
    let make = |seq: u64, sent_at: i64| {
        let mut value = ValueMap::new();
        value.insert("bucket", Value::from(seq % buckets));
        value.insert("sentAt", Value::Int(sent_at));
        (format!("w{seq}"), Value::Map(value))
    };
    let written = paced_writes(writer, &pace, make, &delivered, &mut progress).await?;
    let expected = expected(&written, args.queries, buckets);
    let drain_end = Instant::now() + args.drain;
    while delivered.get() < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let mut heard = Heard::default();
    for task in tasks {
        let part = task.await.map_err(|e| BenchError::Failed(e.to_string()))?;
        heard.merge(part);
    }
    progress.finish();
    Ok(report(
        args,
        buckets,
        &written,
        expected,
        &heard,
        first_measured,
    ))
}

/// B: how many buckets the writes cycle through.
fn buckets(args: &QueryArgs) -> Result<u64, BenchError> {
    if args.queries == 0 || args.connections == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        return Err(BenchError::Invalid(
            "--queries and --connections must be at least 1, --rate above 0".into(),
        ));
    }
    if !(args.matching > 0.0 && args.matching <= 1.0) {
        return Err(BenchError::Invalid(
            "--matching must be within (0, 1]".into(),
        ));
    }
    Ok(((1.0 / args.matching).round() as u64).max(1))
}

/// Updates owed: for every acknowledged write, one per query of its bucket.
fn expected(written: &Written, queries: usize, buckets: u64) -> u64 {
    let per_bucket = |b: u64| (0..queries as u64).filter(|n| n % buckets == b).count() as u64;
    let counts: Vec<u64> = (0..buckets).map(per_bucket).collect();
    (0..written.sent)
        .filter(|s| written.acked_seqs.contains(*s))
        .map(|s| counts[(s % buckets) as usize])
        .sum()
}

/// What the listeners heard.
#[derive(Debug, Default)]
struct Heard {
    /// Query number → the writes it was told of.
    seen: HashMap<usize, Bits>,
    duplicates: u64,
    latency: Latency,
    disconnected: u64,
}

impl Heard {
    fn merge(&mut self, other: Self) {
        self.seen.extend(other.seen);
        self.duplicates += other.duplicates;
        self.latency.add(&other.latency);
        self.disconnected += other.disconnected;
    }
}

/// One connection's queries.
struct Listener {
    conn: Conn,
    limits: Limits,
    base: Instant,
    first_measured: u64,
    delivered: Arc<Count>,
    stopped: watch::Receiver<bool>,
}

impl Listener {
    async fn run(
        mut self,
        map: String,
        ids: Vec<usize>,
        buckets: u64,
        ready: tokio::sync::mpsc::Sender<Result<usize, BenchError>>,
    ) -> Heard {
        let subscribed = self.subscribe(&map, &ids, buckets).await;
        let failed = subscribed.is_err();
        let _ = ready.send(subscribed).await;
        let mut heard = Heard::default();
        if !failed {
            self.listen(&mut heard).await;
        }
        self.conn.close().await;
        heard
    }

    async fn subscribe(
        &mut self,
        map: &str,
        ids: &[usize],
        buckets: u64,
    ) -> Result<usize, BenchError> {
        let what = || BenchError::client("a query connection");
        for &n in ids {
            let bucket = Value::from(n as u64 % buckets);
            let sub = Message::QuerySub(QuerySub {
                query_id: format!("q{n}").into(),
                map_name: map.into(),
                query: Query {
                    predicate: Some(PredicateNode::leaf(PredicateOp::Eq, "bucket", bucket)),
                    ..Query::default()
                },
                fields: None,
            });
            self.conn.send(&sub).await.map_err(what())?;
        }
        let mut answered = 0;
        while answered < ids.len() {
            match self
                .conn
                .recv_within(Duration::from_mins(1), "QUERY_RESP")
                .await
                .map_err(what())?
            {
                Message::QueryResp(_) => answered += 1,
                Message::Error(e) => {
                    return Err(BenchError::Failed(format!(
                        "the server refused a live query: ERROR {} {}",
                        e.code, e.message
                    )));
                }
                _ => {}
            }
        }
        Ok(answered)
    }

    async fn listen(&mut self, heard: &mut Heard) {
        loop {
            tokio::select! {
                frame = self.conn.recv_frame() => {
                    let Ok(frame) = frame else {
                        heard.disconnected += 1;
                        return;
                    };
                    let (limits, now) = (self.limits, micros_since(self.base));
                    let mut delivered = 0;
                    let _ = events::scan(&frame, &limits, |seen| {
                        delivered += u64::from(self.on_update(&seen, now, heard));
                    });
                    self.delivered.add(delivered);
                }
                _ = self.stopped.changed() => return,
            }
        }
    }

    /// Records one update received at `now`; true if it was new.
    fn on_update(&self, seen: &events::Seen<'_>, now: u128, heard: &mut Heard) -> bool {
        let (Some(query), Some(seq), Some(sent_at)) = (
            seen.query
                .strip_prefix('q')
                .and_then(|n| n.parse::<usize>().ok()),
            seen.key
                .strip_prefix('w')
                .and_then(|s| s.parse::<u64>().ok()),
            seen.value,
        ) else {
            return false;
        };
        if !heard.seen.entry(query).or_default().insert(seq) {
            heard.duplicates += 1;
            return false;
        }
        if seq >= self.first_measured {
            heard.latency.record(sent_before(now, sent_at));
        }
        true
    }
}

fn report(
    args: &QueryArgs,
    buckets: u64,
    written: &Written,
    expected: u64,
    heard: &Heard,
    first_measured: u64,
) -> Report {
    let mut lost = 0u64;
    for n in 0..args.queries {
        let seen = heard.seen.get(&n);
        for seq in (0..written.sent).filter(|s| s % buckets == n as u64 % buckets) {
            if written.acked_seqs.contains(seq) && !seen.is_some_and(|b| b.contains(seq)) {
                lost += 1;
            }
        }
    }
    let mut report = Report::new("query");
    report
        .set("queries", args.queries)
        .set("connections", args.connections)
        .set("matching_fraction", round3(1.0 / buckets as f64))
        .set("offered_writes_per_sec", round3(args.rate))
        .set("writes_sent", written.sent)
        .set("writes_acked", written.acked)
        .set(
            "writes_per_sec",
            round3(written.sent as f64 / written.sending_seconds.max(1e-9)),
        )
        .set("updates_expected", expected)
        .set("updates_received", expected - lost)
        .set("updates_lost", lost)
        .set("updates_duplicated", heard.duplicates)
        .set("connections_disconnected", heard.disconnected)
        .set("first_measured_write", first_measured);
    report.latency("update_latency", &heard.latency.summary());
    report
}
