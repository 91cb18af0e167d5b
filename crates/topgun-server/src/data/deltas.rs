//! HTTP sync's deltas (COMPAT §2.2): the LWW records of a map that arrived at this server
//! since a client last synced, gathered from every shard.
//!
//! Deltas go by **arrival**, not by HLC time: clients keep their own timestamps, so an
//! offline write may arrive late with an old one. Each shard stamps each key's latest change
//! with the server time it arrived ([`crate::data::shard::ArrivedLww`]).
//!
//! Invariants:
//! * a client that asks again from the `serverSyncTimestamp` it was given misses no change:
//!   the scan start `T` is read before any shard is asked, every later change arrives at or
//!   after it (arrivals never go back within a shard), and a truncated answer hands back the
//!   last arrival it holds;
//! * a delta holds at most [`DELTA_RECORDS_MAX`] records, the earliest arrivals first (ties by
//!   key), so continuing from its last arrival picks up where it stopped;
//! * the [`OVERLAP_MS`] before the client's time are sent again: records merge idempotently,
//!   and the overlap absorbs clock differences between the nodes that stamped them.

use topgun_core::protocol::enums::DeltaEventType;
use topgun_core::protocol::http::HttpDeltaRecord;

use crate::data::shard::service::Request;
use crate::data::shard::{Arrival, Arrivals};
use crate::data::shards::{ShardGone, Shards};
use crate::security::access::project;
use crate::security::policy::Fields;

/// Most records in one map's delta.
pub const DELTA_RECORDS_MAX: usize = 10_000;

/// How far before the client's last sync a scan starts.
pub const OVERLAP_MS: u64 = 1_000;

/// A map's delta: its records by arrival, and the time the client is to ask from next.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub records: Vec<Arrival>,
    /// The scan start, or the last record's arrival when the delta was cut.
    pub synced_ms: u64,
}

/// Where a scan starts for a client last synced at `last_sync_ms`.
pub fn since_ms(last_sync_ms: u64) -> u64 {
    last_sync_ms.saturating_sub(OVERLAP_MS)
}

/// Merges the shards' parts (each ordered, each cut at `max`) into one delta of at most `max`
/// records: the union holds the `max` earliest of all, since each shard's cut keeps its own
/// earliest.
pub fn merge(parts: Vec<Arrivals>, scan_start_ms: u64, max: usize) -> Delta {
    debug_assert!(
        parts.iter().all(|p| !p.truncated || p.records.len() == max),
        "a shard cuts its part only at max records"
    );
    let mut truncated = parts.iter().any(|p| p.truncated);
    let mut records: Vec<Arrival> = parts.into_iter().flat_map(|p| p.records).collect();
    records.sort_unstable_by(|a, b| (a.arrived_ms, &a.key).cmp(&(b.arrived_ms, &b.key)));
    if records.len() > max {
        records.truncate(max);
        truncated = true;
    }
    let synced_ms = match records.last() {
        Some(last) if truncated => last.arrived_ms,
        _ => scan_start_ms,
    };
    Delta { records, synced_ms }
}

/// The delta of `map` for a client last synced at `last_sync_ms`, the scan starting at
/// `now_ms` (read before any shard is asked).
pub async fn gather(
    shards: &Shards,
    map: &str,
    last_sync_ms: u64,
    now_ms: u64,
) -> Result<Delta, ShardGone> {
    let since_ms = since_ms(last_sync_ms);
    let parts = shards
        .ask_all(|reply| Request::LwwArrivedSince {
            map: map.to_owned(),
            since_ms,
            max: DELTA_RECORDS_MAX,
            reply,
        })
        .await?;
    let parts = parts.await.ok_or(ShardGone)?;
    Ok(merge(parts, now_ms, DELTA_RECORDS_MAX))
}

/// A record as a delta carries it: a tombstone is a `REMOVE` with its tombstone record, any
/// other a `PUT`; a reader limited to `fields` sees only those.
pub fn wire_record(arrival: Arrival, fields: Option<&Fields>) -> HttpDeltaRecord {
    let mut record = arrival.record;
    let event_type = if record.is_tombstone() {
        DeltaEventType::Remove
    } else {
        DeltaEventType::Put
    };
    if let Some(fields) = fields {
        record.value = project(&record.value, fields);
    }
    HttpDeltaRecord {
        key: arrival.key.into(),
        record,
        event_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

    fn arrival(arrived_ms: u64, key: &str) -> Arrival {
        let at = Timestamp::new(1, 0, NodeId::new("a").unwrap());
        Arrival {
            arrived_ms,
            key: key.into(),
            record: LwwRecord::new(Value::Int(1), at, None),
        }
    }

    fn part(records: &[(u64, &str)], truncated: bool) -> Arrivals {
        Arrivals {
            records: records.iter().map(|(t, k)| arrival(*t, k)).collect(),
            truncated,
        }
    }

    fn keys(delta: &Delta) -> Vec<&str> {
        delta.records.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn the_overlap_starts_a_second_early_and_never_below_zero() {
        assert_eq!(since_ms(5_000), 4_000);
        assert_eq!(since_ms(300), 0);
        assert_eq!(since_ms(0), 0);
    }

    #[test]
    fn whole_parts_merge_by_arrival_and_hand_back_the_scan_start() {
        let parts = vec![
            part(&[(10, "b"), (30, "d")], false),
            part(&[(10, "a"), (20, "c")], false),
        ];
        let delta = merge(parts, 99, 4);
        assert_eq!(keys(&delta), ["a", "b", "c", "d"]);
        assert_eq!(delta.synced_ms, 99, "nothing cut: the scan start");
        assert_eq!(merge(Vec::new(), 99, 4).synced_ms, 99);
    }

    #[test]
    fn a_cut_delta_hands_back_its_last_arrival() {
        let parts = vec![
            part(&[(10, "b"), (30, "d")], false),
            part(&[(10, "a"), (20, "c")], false),
        ];
        let delta = merge(parts, 99, 3);
        assert_eq!(keys(&delta), ["a", "b", "c"]);
        assert_eq!(delta.synced_ms, 20);
        // One shard cut its part: the delta ends before that shard's first record left out.
        let parts = vec![
            part(&[(10, "a"), (20, "b")], true),
            part(&[(5, "c")], false),
        ];
        let delta = merge(parts, 99, 2);
        assert_eq!(keys(&delta), ["c", "a"]);
        assert_eq!(delta.synced_ms, 10);
    }
}
