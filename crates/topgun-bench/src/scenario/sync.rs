//! `sync`: preloads N keys into a map, syncs them into an empty client by the Merkle walk
//! of PROTOCOL.md §6.3, changes a fraction of the keys while that client is away, and
//! times its resync. Reports seconds, bytes on the wire (MsgPack bytes, WebSocket headers
//! excluded), requests, and the resync's bytes relative to the changed records' own size.
//!
//! The client holds a real [`LwwMap`]: bucket hashes are compared with its Merkle tree,
//! exactly as the TS client compares them, and its root must equal the server's at the end.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use topgun_core::protocol::messages::{ClientOp, LeafRecord, MerkleReqBucket, SyncInit};
use topgun_core::protocol::wire::{Field, Wire};
use topgun_core::protocol::{Message, Writer};
use topgun_core::{LwwMap, Value};

use super::{BenchError, OpMaker, acked_id, value_of_size};
use crate::cli::{Common, SyncArgs};
use crate::client::{Conn, Target};
use crate::progress::Progress;
use crate::report::{Report, round3};

pub async fn run(target: &Target, _common: &Common, args: &SyncArgs) -> Result<Report, BenchError> {
    if args.keys == 0 || args.batch == 0 || !(0.0..=1.0).contains(&args.changed) {
        return Err(BenchError::Invalid(
            "--keys and --batch must be at least 1, --changed within 0..1".into(),
        ));
    }
    let mut progress = Progress::new("sync");
    // Unique per run, and as short as a real map name: each delta leaf repeats it.
    let map = format!("sync-{:x}", crate::now_ms() % 0xff_ffff);
    let mut writer = target
        .open("bench-sync-writer")
        .await
        .map_err(BenchError::client("the writer"))?;
    let mut ops = OpMaker::new("bench-sync-writer", None)?;
    let value = value_of_size(args.value_size);
    let keys: Vec<String> = (0..args.keys).map(|i| format!("s{i}")).collect();
    let preload = put_all(
        &mut writer,
        &mut ops,
        &map,
        &keys,
        &value,
        args.batch,
        target,
    )
    .await?;
    progress.note(&format!(
        "preloaded {} keys in {:.2} s",
        args.keys, preload.seconds
    ));

    let mut local = LwwMap::new();
    let full = walk(target, &map, &mut local, 0, &mut progress).await?;
    progress.note(&format!("full sync: {:.3} s", full.seconds));

    let every = if args.changed > 0.0 {
        ((1.0 / args.changed).round() as usize).max(1)
    } else {
        usize::MAX
    };
    let changed: Vec<String> = keys.iter().step_by(every).cloned().collect();
    let changed_value = Value::Str("y".repeat(args.value_size).into());
    let change = put_all(
        &mut writer,
        &mut ops,
        &map,
        &changed,
        &changed_value,
        args.batch,
        target,
    )
    .await?;
    writer.close().await;
    // As the TS client does: the resync names when the client last synced.
    let resync = walk(target, &map, &mut local, full.root_millis, &mut progress).await?;
    progress.finish();

    let mut report = Report::new("sync");
    report
        .set("keys", args.keys)
        .set("value_size", args.value_size)
        .set("preload_seconds", round3(preload.seconds))
        .set(
            "preload_ops_per_sec",
            round3(args.keys as f64 / preload.seconds),
        )
        .set("changed_keys", changed.len())
        .set("changed_record_bytes", change.record_bytes);
    full.add_to(&mut report, "full");
    resync.add_to(&mut report, "resync");
    report.set(
        "resync_bytes_per_changed_byte",
        round3(resync.bytes_in as f64 / change.record_bytes.max(1) as f64),
    );
    Ok(report)
}

/// What a batch of writes cost.
#[derive(Debug)]
struct Put {
    seconds: f64,
    /// The written records as a server sends them in a leaf (`{key, record}`), summed.
    record_bytes: u64,
}

/// Writes `value` under every key, `batch` PUTs per `OP_BATCH`, four batches in flight,
/// and waits until all are acknowledged. A batch refused as retryable (a server's rate
/// limit: `OP_REJECTED` 429 "retry in N ms") is sent again after the hinted wait.
async fn put_all(
    conn: &mut Conn,
    ops: &mut OpMaker,
    map: &str,
    keys: &[String],
    value: &Value,
    batch: usize,
    target: &Target,
) -> Result<Put, BenchError> {
    let started = Instant::now();
    let mut record_bytes = 0u64;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut chunks = keys.chunks(batch);
    let failed = || BenchError::client("the writer");
    loop {
        while in_flight.len() < 4 {
            let Some(chunk) = chunks.next() else { break };
            let mut batch_ops = Vec::with_capacity(chunk.len());
            for key in chunk {
                let (id, op) = ops.put(map, key, value.clone());
                if let Field::Value(record) = &op.record {
                    record_bytes += leaf_record_size(key, record);
                }
                batch_ops.push((id, op));
            }
            let ids = batch_ops[0].0..=batch_ops[batch_ops.len() - 1].0;
            let all = batch_ops.iter().map(|(_, op)| op.clone()).collect();
            conn.send(&ops.batch(all)).await.map_err(failed())?;
            in_flight.push_back(InFlight {
                ids,
                ops: batch_ops,
                retry: None,
                refused: false,
            });
        }
        if in_flight.is_empty() {
            break;
        }
        // What a rate limit held back goes again once its wait is over: the batch from the
        // refused op on (the server processed nothing after it).
        let now = Instant::now();
        for batch in &mut in_flight {
            let Some((_, from)) = batch.retry.filter(|(at, _)| *at <= now) else {
                continue;
            };
            batch.retry = None;
            let tail = batch
                .ops
                .iter()
                .filter(|(id, _)| *id >= from)
                .map(|(_, op)| op.clone())
                .collect();
            conn.send(&ops.batch(tail)).await.map_err(failed())?;
        }
        let next_retry = in_flight
            .iter()
            .filter_map(|b| b.retry.map(|(at, _)| at))
            .min();
        let wait = next_retry.map_or(target.timeout, |at| at.saturating_duration_since(now));
        let message = match tokio::time::timeout(wait, conn.recv()).await {
            Ok(message) => message.map_err(failed())?,
            Err(_) if next_retry.is_some() => continue,
            Err(_) => return Err(BenchError::Failed("the writer: no OP_ACK in time".into())),
        };
        match message {
            // The ERROR summing up a batch's refused ops (COMPAT §4.1): its OP_REJECTEDs
            // already said what to send again.
            Message::Error(e)
                if matches!(e.code, 403 | 429) && in_flight.iter().any(|b| b.refused) => {}
            Message::Error(e) => {
                return Err(BenchError::Failed(format!(
                    "a write batch failed: ERROR {} {}",
                    e.code, e.message
                )));
            }
            Message::OpRejected(r) if r.code == Some(429) => {
                let id: u64 = r.op_id.parse().unwrap_or(0);
                if let Some(batch) = in_flight.iter_mut().find(|b| b.ids.contains(&id)) {
                    let at = Instant::now() + retry_hint(&r.reason);
                    batch.retry = Some(batch.retry.map_or((at, id), |(a, f)| (a, f.min(id))));
                    batch.refused = true;
                }
            }
            other => {
                // An ack names the last op of a batch, and covers every batch up to it —
                // but a batch the server refused in part is settled only by its own ack.
                if let Some(id) = acked_id(&other) {
                    in_flight.retain(|b| {
                        let end = *b.ids.end();
                        !(id == end || (id > end && !b.refused))
                    });
                }
            }
        }
    }
    Ok(Put {
        seconds: started.elapsed().as_secs_f64(),
        record_bytes,
    })
}

/// A batch sent and not yet acknowledged.
struct InFlight {
    ids: std::ops::RangeInclusive<u64>,
    ops: Vec<(u64, ClientOp)>,
    /// When to send it again, from which op on (a server's rate limit refused that op).
    retry: Option<(Instant, u64)>,
    /// Part of it was refused once: only an ack naming its own last op settles it.
    refused: bool,
}

/// The wait a rate-limited server asks for ("… retry in N ms"), else 50 ms.
fn retry_hint(reason: &str) -> Duration {
    let ms = reason
        .split("retry in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    Duration::from_millis(ms)
}

fn leaf_record_size(key: &str, record: &topgun_core::LwwRecord) -> u64 {
    let mut w = Writer::new();
    LeafRecord {
        key: key.into(),
        record: record.clone(),
    }
    .encode(&mut w);
    w.as_bytes().len() as u64
}

/// One Merkle walk's cost.
#[derive(Debug, Default)]
struct Walk {
    seconds: f64,
    bytes_in: u64,
    bytes_out: u64,
    bucket_requests: u64,
    leaf_requests: u64,
    records: u64,
    /// Records the server sent before the root, unasked (a delta since the last sync).
    delta_records: u64,
    roots_match: bool,
    /// The server clock's millis in its root answer: the client's next `lastSyncTimestamp`.
    root_millis: u64,
}

impl Walk {
    fn add_to(&self, report: &mut Report, prefix: &str) {
        report
            .set(&format!("{prefix}_seconds"), round3(self.seconds))
            .set(&format!("{prefix}_bytes_in"), self.bytes_in)
            .set(&format!("{prefix}_bytes_out"), self.bytes_out)
            .set(&format!("{prefix}_bucket_requests"), self.bucket_requests)
            .set(&format!("{prefix}_leaf_requests"), self.leaf_requests)
            .set(&format!("{prefix}_records"), self.records)
            .set(&format!("{prefix}_delta_records"), self.delta_records)
            .set(&format!("{prefix}_roots_match"), self.roots_match);
    }
}

/// Syncs `map` into `local` over a new connection, as the TS client does: `SYNC_INIT` with
/// the time of the last sync (`since`, 0 for none), then every child bucket whose hash
/// differs from the local one, in parallel, down to the leaves. Every leaf's records are
/// merged, asked for or not.
async fn walk(
    target: &Target,
    map: &str,
    local: &mut LwwMap,
    since: u64,
    progress: &mut Progress,
) -> Result<Walk, BenchError> {
    let failed = || BenchError::client("the sync client");
    let mut conn = target.open("bench-sync-reader").await.map_err(failed())?;
    let (in0, out0) = (conn.bytes_in, conn.bytes_out);
    let started = Instant::now();
    conn.send(&Message::SyncInit(SyncInit {
        map_name: map.into(),
        last_sync_timestamp: Some(since),
    }))
    .await
    .map_err(failed())?;
    let mut walk = Walk::default();
    let mut outstanding: HashSet<String> = HashSet::new();
    let mut server_root = None;
    while server_root.is_none() || !outstanding.is_empty() {
        let message = conn
            .recv_within(target.timeout, "sync answer")
            .await
            .map_err(failed())?;
        match message {
            Message::SyncRespRoot(root) if root.map_name == map => {
                server_root = Some(root.root_hash);
                walk.root_millis = root.timestamp.millis;
                if root.root_hash != local.merkle().root() {
                    request(&mut conn, map, String::new(), &mut walk).await?;
                    outstanding.insert(String::new());
                }
            }
            Message::SyncRespBuckets(buckets) if buckets.map_name == map => {
                outstanding.remove(buckets.path.as_str());
                for (digit, hash) in &buckets.buckets {
                    let child = format!("{}{digit}", buckets.path);
                    if local.merkle().node_hash(&child).unwrap_or(0) != *hash {
                        request(&mut conn, map, child.clone(), &mut walk).await?;
                        outstanding.insert(child);
                    }
                }
            }
            Message::SyncRespLeaf(leaf) if leaf.map_name == map => {
                let asked = outstanding.remove(leaf.path.as_str());
                for LeafRecord { key, record } in leaf.records {
                    local.merge(&key, record);
                    walk.records += 1;
                    walk.delta_records += u64::from(!asked);
                }
                progress.update(format!(
                    "{} records, {} leaves",
                    walk.records, walk.leaf_requests
                ));
            }
            _ => {}
        }
    }
    walk.seconds = started.elapsed().as_secs_f64();
    walk.bytes_in = conn.bytes_in - in0;
    walk.bytes_out = conn.bytes_out - out0;
    walk.roots_match = server_root == Some(local.merkle().root());
    conn.close().await;
    Ok(walk)
}

/// Asks for the node at `path`; three hex digits address a leaf.
async fn request(
    conn: &mut Conn,
    map: &str,
    path: String,
    walk: &mut Walk,
) -> Result<(), BenchError> {
    if path.len() >= 3 {
        walk.leaf_requests += 1;
    } else {
        walk.bucket_requests += 1;
    }
    conn.send(&Message::MerkleReqBucket(MerkleReqBucket {
        map_name: map.into(),
        path: path.into(),
    }))
    .await
    .map_err(BenchError::client("the sync client"))
}
