//! `write`: C connections each send `OP_BATCH`es of B fresh-key PUTs with P in flight and
//! count what the server **acknowledged**. Latency is per batch, send (or due time, when
//! paced) to `OP_ACK`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::time::sleep_until;
use topgun_core::Value;
use topgun_core::protocol::Message;

use super::{BenchError, Count, OpMaker, acked_id, open_many, value_of_size};
use crate::cli::{Common, KeyOrder, WriteArgs};
use crate::client::{Conn, Target};
use crate::progress::Progress;
use crate::report::{Report, round3};
use crate::stats::Latency;

/// What every connection task adds to, and the coordinator reads.
#[derive(Debug, Default)]
struct Counters {
    acked_ops: Count,
    acked_batches: Count,
    rejected_ops: Count,
    errors: Count,
    timeouts: Count,
    lost_connections: Count,
    measuring: AtomicBool,
    stop: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> [u64; 5] {
        [
            self.acked_ops.get(),
            self.acked_batches.get(),
            self.rejected_ops.get(),
            self.errors.get(),
            self.timeouts.get(),
        ]
    }
}

pub async fn run(target: &Target, common: &Common, args: &WriteArgs) -> Result<Report, BenchError> {
    if args.connections == 0 || args.batch == 0 || args.in_flight == 0 {
        return Err(BenchError::Invalid(
            "--connections, --batch and --in-flight must be at least 1".into(),
        ));
    }
    if args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(BenchError::Invalid("--rate must be above 0".into()));
    }
    let mut progress = Progress::new("write");
    let conns = open_many(
        target,
        args.connections,
        64,
        |i| format!("bench-writer-{i}"),
        &mut progress,
    )
    .await?;
    let counters = Arc::new(Counters::default());
    let value = value_of_size(args.value_size);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns.len());
    for (index, conn) in conns.into_iter().enumerate() {
        let map = match args.maps {
            0 => format!("bench-write-{index}"),
            n => format!("bench-write-{}", index % n),
        };
        let writer = Writer {
            conn,
            index,
            map,
            ops: OpMaker::new(&format!("bench-{index}"), args.write_concern)?,
            value: value.clone(),
            args: args.clone(),
            timeout: target.timeout,
            counters: Arc::clone(&counters),
            next_key: 0,
        };
        let first_due = started
            + pacing(args).map_or(Duration::ZERO, |every| {
                every.mul_f64(index as f64 / args.connections as f64)
            });
        tasks.push(tokio::spawn(writer.run(first_due)));
    }
    let window = coordinate(common, &counters, &mut progress).await;
    let mut latency = Latency::default();
    for task in tasks {
        if let Ok(batch_latency) = task.await {
            latency.add(&batch_latency);
        }
    }
    progress.finish();
    Ok(report(args, &counters, &window, &latency))
}

/// The measured window: counters at its start and end, and its length.
struct Window {
    start: [u64; 5],
    end: [u64; 5],
    elapsed: Duration,
}

/// Runs the warm-up, then the measured phase, updating the progress line.
async fn coordinate(common: &Common, counters: &Counters, progress: &mut Progress) -> Window {
    let warmup_end = Instant::now() + common.warmup;
    while Instant::now() < warmup_end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        progress.update(format!(
            "warming up, {} ops acked",
            counters.acked_ops.get()
        ));
    }
    let start = counters.snapshot();
    let began = Instant::now();
    counters.measuring.store(true, Ordering::Relaxed);
    let end_at = began + common.duration;
    while Instant::now() < end_at {
        tokio::time::sleep(Duration::from_millis(250).min(end_at - Instant::now())).await;
        let secs = began.elapsed().as_secs_f64().max(1e-3);
        let ops = counters.acked_ops.get() - start[0];
        progress.update(format!(
            "{:.0} acked ops/s, {} errors, {} timeouts",
            ops as f64 / secs,
            counters.errors.get() - start[3],
            counters.timeouts.get() - start[4],
        ));
    }
    counters.measuring.store(false, Ordering::Relaxed);
    let end = counters.snapshot();
    let elapsed = began.elapsed();
    counters.stop.store(true, Ordering::Relaxed);
    Window {
        start,
        end,
        elapsed,
    }
}

fn report(args: &WriteArgs, counters: &Counters, window: &Window, latency: &Latency) -> Report {
    let diff = |i: usize| window.end[i] - window.start[i];
    let secs = window.elapsed.as_secs_f64();
    let mut report = Report::new("write");
    report
        .set("connections", args.connections)
        .set("batch", args.batch)
        .set("in_flight", args.in_flight)
        .set("value_size", args.value_size)
        .set("keys", format!("{:?}", args.keys).to_lowercase())
        .set(
            "write_concern",
            args.write_concern.map_or("server default", |w| w.as_str()),
        )
        .set("offered_ops_per_sec", args.rate.map_or(0.0, round3))
        .set("seconds", round3(secs))
        .set("acked_ops", diff(0))
        .set("acked_ops_per_sec", round3(diff(0) as f64 / secs))
        .set("acked_batches", diff(1))
        .set("rejected_ops", diff(2))
        .set("errors", diff(3))
        .set("timeouts", diff(4))
        .set("lost_connections", counters.lost_connections.get());
    report.latency("batch_latency", &latency.summary());
    report
}

/// The `n`th fresh key of connection `index`.
fn fresh_key(order: KeyOrder, index: usize, n: u64) -> String {
    match order {
        KeyOrder::Sequential => format!("k{index}-{n}"),
        // Distinct for distinct (index, n) while n < 2^40: the mix is a bijection.
        KeyOrder::Scattered => format!("{:016x}", mix64(((index as u64) << 40) ^ n)),
    }
}

/// The `SplitMix64` finaliser: a bijection on u64 that spreads neighbouring inputs apart.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Time between one connection's batches when paced.
fn pacing(args: &WriteArgs) -> Option<Duration> {
    let rate = args.rate?;
    let per_conn_batches = rate / (args.connections * args.batch) as f64;
    Some(Duration::from_secs_f64(1.0 / per_conn_batches))
}

/// One connection's loop.
struct Writer {
    conn: Conn,
    index: usize,
    map: String,
    ops: OpMaker,
    value: Value,
    args: WriteArgs,
    timeout: Duration,
    counters: Arc<Counters>,
    next_key: u64,
}

impl Writer {
    async fn run(mut self, mut due: Instant) -> Latency {
        let pace = pacing(&self.args);
        let mut latency = Latency::default();
        // (last op id of the batch, when its latency starts)
        let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut rejected_since_ack = 0u64;
        let mut last_ping = Instant::now();
        while !self.counters.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            while in_flight.len() < self.args.in_flight && (pace.is_none() || due <= now) {
                let origin = if pace.is_some() { due } else { Instant::now() };
                match self.send_batch().await {
                    Ok(last) => in_flight.push_back((last, origin)),
                    Err(()) => return latency,
                }
                if let Some(every) = pace {
                    due += every;
                }
            }
            if last_ping.elapsed() >= super::HEARTBEAT {
                last_ping = Instant::now();
                if self.conn.send(&super::ping()).await.is_err() {
                    self.counters.lost_connections.add(1);
                    return latency;
                }
            }
            let mut wake = now + Duration::from_millis(50);
            if let Some(&(_, oldest)) = in_flight.front() {
                wake = wake.min(oldest + self.timeout);
            }
            if pace.is_some() && in_flight.len() < self.args.in_flight {
                wake = wake.min(due);
            }
            tokio::select! {
                message = self.conn.recv() => {
                    let Ok(message) = message else {
                        self.counters.lost_connections.add(1);
                        return latency;
                    };
                    self.on_message(&message, &mut in_flight, &mut rejected_since_ack, &mut latency);
                }
                () = sleep_until(wake.into()) => {
                    while in_flight.front().is_some_and(|(_, at)| at.elapsed() >= self.timeout) {
                        in_flight.pop_front();
                        self.counters.timeouts.add(1);
                    }
                }
            }
        }
        self.conn.close().await;
        latency
    }

    async fn send_batch(&mut self) -> Result<u64, ()> {
        let mut ops = Vec::with_capacity(self.args.batch);
        let mut last = 0;
        for _ in 0..self.args.batch {
            let key = fresh_key(self.args.keys, self.index, self.next_key);
            self.next_key += 1;
            let (id, op) = self.ops.put(&self.map, &key, self.value.clone());
            last = id;
            ops.push(op);
        }
        let batch = self.ops.batch(ops);
        if self.conn.send(&batch).await.is_err() {
            self.counters.lost_connections.add(1);
            return Err(());
        }
        Ok(last)
    }

    fn on_message(
        &self,
        message: &Message,
        in_flight: &mut VecDeque<(u64, Instant)>,
        rejected_since_ack: &mut u64,
        latency: &mut Latency,
    ) {
        let batch = self.args.batch as u64;
        match message {
            Message::OpAck(_) => {
                let Some(id) = acked_id(message) else {
                    // Not one of ours (e.g. "unknown"): acknowledges the oldest batch.
                    in_flight.pop_front();
                    return;
                };
                let Some(at) = in_flight.iter().position(|&(last, _)| last == id) else {
                    return; // a batch already counted as timed out
                };
                let Some((_, origin)) = in_flight.remove(at) else {
                    return;
                };
                if self.counters.measuring.load(Ordering::Relaxed) {
                    latency.record(origin.elapsed());
                }
                let refused = (*rejected_since_ack).min(batch);
                *rejected_since_ack = 0;
                self.counters.acked_ops.add(batch - refused);
                self.counters.acked_batches.add(1);
            }
            Message::OpRejected(_) => {
                *rejected_since_ack += 1;
                self.counters.rejected_ops.add(1);
            }
            // The ERROR that sums up a batch's refused ops comes after their OP_REJECTEDs and
            // before the batch's own ack (COMPAT §4.1): it settles nothing.
            Message::Error(e) if *rejected_since_ack > 0 && matches!(e.code, 403 | 429) => {}
            Message::Error(_) => {
                // A failed batch gets an ERROR instead of its ack: the oldest one is given up.
                in_flight.pop_front();
                self.counters.errors.add(1);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn scattered_keys_are_distinct_and_do_not_sort_by_connection() {
        let mut keys: Vec<(String, usize)> = (0..4)
            .flat_map(|conn| {
                (0..1000).map(move |n| (fresh_key(KeyOrder::Scattered, conn, n), conn))
            })
            .collect();
        assert_eq!(
            keys.iter().map(|(k, _)| k).collect::<HashSet<_>>().len(),
            4000
        );
        keys.sort();
        // Sorted, one connection's keys interleave with the others' instead of running
        // together as sequential keys do (3 changes of connection in 4,000 keys).
        let changes = keys.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(
            changes > 2000,
            "{changes} changes of connection in key order"
        );
        assert_eq!(fresh_key(KeyOrder::Sequential, 3, 7), "k3-7");
    }
}
