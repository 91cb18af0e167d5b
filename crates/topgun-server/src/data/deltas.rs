//! HTTP sync's deltas (COMPAT §2.2): the LWW records of a map that arrived at this server
//! since a client last synced, gathered from every shard.
//!
//! Deltas go by **arrival**, not by HLC time: clients keep their own timestamps, so an
//! offline write may arrive late with an old one. Each shard stamps each key's latest change
//! with the server time it arrived ([`crate::data::shard::ArrivedLww`]), and orders records
//! by `(arrival, tie, key)`, the tie a small hash of the key ([`crate::data::shard::Mark`]).
//!
//! The `serverSyncTimestamp` handed back says where the client is in that order:
//! * `{millis: T, counter: 0}`: it has everything that arrived up to `T`, the scan's start;
//! * `{millis: T, counter: c}` (a cut delta): it has everything before arrival `T`, tie `c`.
//!
//! Asked again with a timestamp of **this** node, a scan continues exactly there: a cut delta
//! moves on even when more records than a delta holds share one arrival (after a restart,
//! every recovered record arrives at start). Any other timestamp — the TS provider's first
//! `{millis: 0, nodeId: ""}`, or another node's — starts [`OVERLAP_MS`] before its `millis`:
//! records merge idempotently, and the overlap absorbs clock differences between nodes.
//!
//! Invariants:
//! * a client that asks again from the timestamp it was given misses no change: the scan
//!   start `T` is read before any shard is asked, and every shard stamps each change applied
//!   after its scan later than `T`, whatever the wall clock does;
//! * a delta holds at most [`DELTA_RECORDS_MAX`] records, the earliest in the order first;
//! * a cut delta's continuation is at or before the first record it left out, and after its
//!   own first record unless every record it holds shares one arrival and one tie.

use topgun_core::protocol::enums::DeltaEventType;
use topgun_core::protocol::http::{HttpDeltaRecord, SyncSince};

use crate::data::shard::service::Request;
use crate::data::shard::{Arrival, Arrivals, Mark};
use crate::data::shards::{ShardGone, Shards};
use crate::security::access::project;
use crate::security::policy::Fields;

/// Most records in one map's delta.
pub const DELTA_RECORDS_MAX: usize = 10_000;

/// How far before a timestamp this node did not issue a scan starts.
pub const OVERLAP_MS: u64 = 1_000;

/// A map's delta: its records in arrival order, and where the client is once it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub records: Vec<Arrival>,
    /// `(millis, counter)` of the `serverSyncTimestamp` to hand back.
    pub synced: (u64, u32),
}

/// Where a scan starts for a client that last synced at `last`; `own` is this node's id.
pub fn resume_from(last: &SyncSince, own: &str) -> Mark {
    if last.node_id != own {
        return Mark::at(last.millis.saturating_sub(OVERLAP_MS));
    }
    match u16::try_from(last.counter) {
        Ok(0) => Mark::at(last.millis.saturating_add(1)),
        Ok(tie) => Mark {
            ms: last.millis,
            tie,
        },
        // Not a counter this node hands out: start as for a stranger's timestamp.
        Err(_) => Mark::at(last.millis.saturating_sub(OVERLAP_MS)),
    }
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
    records.sort_unstable_by(|a, b| (a.mark(), &a.key).cmp(&(b.mark(), &b.key)));
    if records.len() > max {
        records.truncate(max);
        truncated = true;
    }
    let synced = match records.last() {
        // Continue at the last record's tie: the records of that tie left out are sent next
        // time, the ones sent again merge idempotently.
        Some(last) if truncated => (last.arrived_ms, u32::from(last.tie)),
        _ => (scan_start_ms, 0),
    };
    Delta { records, synced }
}

/// The delta of `map` from `from`, the scan starting at `now_ms` (read before any shard is
/// asked).
pub async fn gather(
    shards: &Shards,
    map: &str,
    from: Mark,
    now_ms: u64,
) -> Result<Delta, ShardGone> {
    let parts = shards
        .ask_all(|reply| Request::LwwArrivedSince {
            map: map.to_owned(),
            from,
            scan_start_ms: now_ms,
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

    fn arrival(arrived_ms: u64, tie: u16, key: &str) -> Arrival {
        let at = Timestamp::new(1, 0, NodeId::new("a").unwrap());
        Arrival {
            arrived_ms,
            tie,
            key: key.into(),
            record: LwwRecord::new(Value::Int(1), at, None),
        }
    }

    fn part(records: &[(u64, u16, &str)], truncated: bool) -> Arrivals {
        Arrivals {
            records: records.iter().map(|(t, c, k)| arrival(*t, *c, k)).collect(),
            truncated,
        }
    }

    fn keys(delta: &Delta) -> Vec<&str> {
        delta.records.iter().map(|r| r.key.as_str()).collect()
    }

    fn since(millis: u64, counter: u32, node_id: &str) -> SyncSince {
        SyncSince {
            millis,
            counter,
            node_id: node_id.into(),
        }
    }

    #[test]
    fn a_stranger_s_timestamp_starts_a_second_early_and_never_below_zero() {
        assert_eq!(resume_from(&since(5_000, 0, ""), "me"), Mark::at(4_000));
        assert_eq!(resume_from(&since(300, 0, ""), "me"), Mark::at(0));
        assert_eq!(
            resume_from(&since(5_000, 9, "other"), "me"),
            Mark::at(4_000)
        );
        let too_big = since(5_000, 70_000, "me");
        assert_eq!(resume_from(&too_big, "me"), Mark::at(4_000));
    }

    #[test]
    fn our_own_timestamp_continues_exactly() {
        assert_eq!(
            resume_from(&since(5_000, 0, "me"), "me"),
            Mark::at(5_001),
            "everything up to the scan start was sent"
        );
        assert_eq!(
            resume_from(&since(5_000, 7, "me"), "me"),
            Mark { ms: 5_000, tie: 7 }
        );
    }

    #[test]
    fn whole_parts_merge_in_order_and_hand_back_the_scan_start() {
        let parts = vec![
            part(&[(10, 5, "b"), (30, 1, "d")], false),
            part(&[(10, 2, "a"), (20, 1, "c")], false),
        ];
        let delta = merge(parts, 99, 4);
        assert_eq!(keys(&delta), ["a", "b", "c", "d"]);
        assert_eq!(delta.synced, (99, 0), "nothing cut: the scan start");
        assert_eq!(merge(Vec::new(), 99, 4).synced, (99, 0));
    }

    #[test]
    fn a_cut_delta_hands_back_its_last_record_s_place() {
        let parts = vec![
            part(&[(10, 5, "b"), (30, 1, "d")], false),
            part(&[(10, 2, "a"), (20, 3, "c")], false),
        ];
        let delta = merge(parts, 99, 3);
        assert_eq!(keys(&delta), ["a", "b", "c"]);
        assert_eq!(delta.synced, (20, 3));
        // One shard cut its part: the delta ends before that shard's first record left out.
        let parts = vec![
            part(&[(10, 1, "a"), (20, 1, "b")], true),
            part(&[(5, 1, "c")], false),
        ];
        let delta = merge(parts, 99, 2);
        assert_eq!(keys(&delta), ["c", "a"]);
        assert_eq!(delta.synced, (10, 1));
    }
}
