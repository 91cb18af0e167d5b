//! HTTP sync's deltas (COMPAT §2.2): the LWW records of a map that arrived at this server
//! since a client last synced, gathered from every shard — in a cluster, from every member,
//! each for the partitions it owns (CLUSTER.md §9).
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
//! A scan reads `T` before any shard is asked and takes only records that arrived **at or
//! before `T`**; each shard, in the same step, makes every later change arrive after `T`.
//! So every change missing from a delta, cut or whole, arrives after the place handed back —
//! one that arrived during the scan waits for the next delta rather than being jumped over.
//!
//! **A cluster** is one arrival order: the member a request reaches reads `T` from its own
//! clock and asks every member — itself included — for the same scan; each member combines
//! its shards' parts, and the entry member merges the members' parts as it merges shards'.
//! Each record lives on one member, so the order `(arrival, tie, key)` is total across
//! members whoever stamped the arrival, and the timestamp handed back names the cluster
//! ([`cursor_owner`]), which any member continues exactly. Members' clocks are assumed to
//! agree within seconds (NTP): a member's record that arrived after `T` by the entry
//! member's clock waits for a later delta, and one restarted with its clock behind a cursor
//! stamps its recovered records below it.
//!
//! Asked again with a timestamp of **this** node (or cluster), a scan continues exactly
//! there: a cut delta moves on even when more records than a delta holds share one arrival
//! (after a restart, every recovered record arrives at start). Any other timestamp — the TS
//! provider's first `{millis: 0, nodeId: ""}`, or another node's — starts [`OVERLAP_MS`]
//! before its `millis`: records merge idempotently, and the overlap absorbs clock
//! differences between nodes.
//!
//! Invariants:
//! * a client that asks again from the timestamp it was given misses no change (above);
//! * a delta — and each shard's or member's part of it — holds at most
//!   [`DELTA_RECORDS_MAX`] records and about [`DELTA_BYTES_MAX`] bytes (one record at
//!   least), the earliest in the order first;
//! * a part cut short may have left out records just after its last one, so a union of
//!   parts is whole only up to the earliest last record of a cut part, and ends there;
//! * a cut delta's continuation is at or before the first record it left out, and after its
//!   own first record unless every record it holds shares one arrival and one tie.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use topgun_core::NodeId;
use topgun_core::protocol::Message;
use topgun_core::protocol::enums::DeltaEventType;
use topgun_core::protocol::http::{HttpDeltaRecord, SyncSince};

use crate::data::parts::PartSet;
use crate::data::peers::{self, Cluster, Local, Read, ReadPart};
use crate::data::shard::arrived::fitting;
use crate::data::shard::service::Request;
use crate::data::shard::{Arrival, Arrivals, Mark};
use crate::data::shards::{ShardGone, Shards};
use crate::security::access::project;
use crate::security::policy::Fields;

/// Most records in one map's delta.
pub const DELTA_RECORDS_MAX: usize = 10_000;

/// About the most bytes of records in one map's delta, or in one member's part of it: well
/// within a cluster frame (32 MiB), and an HTTP answer a client can hold.
pub const DELTA_BYTES_MAX: usize = 8 << 20;

/// How far before a timestamp this node did not issue a scan starts.
pub const OVERLAP_MS: u64 = 1_000;

/// A map's delta: its records in arrival order, and where the client is once it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub records: Vec<Arrival>,
    /// `(millis, counter)` of the `serverSyncTimestamp` to hand back.
    pub synced: (u64, u32),
}

/// Whose arrival order a delta's `serverSyncTimestamp` is a place in: this node's — in a
/// cluster, the cluster's (`cluster-<uuid>`): every member raises its arrivals above each
/// scan's start, so any member continues a cursor another handed out exactly.
pub fn cursor_owner(cluster: Option<&Cluster>, node: &NodeId) -> NodeId {
    cluster
        .and_then(|c| c.peers.owned())
        .and_then(|owned| NodeId::new(&format!("cluster-{:x}", owned.cluster)).ok())
        .unwrap_or_else(|| node.clone())
}

/// Where a scan starts for a client that last synced at `last`; `own` is the cursor owner's
/// id ([`cursor_owner`]).
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

/// How much one delta, or one part of it, may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub records: usize,
    /// About this many bytes ([`crate::data::shard::arrived::weight`]), at least one record.
    pub bytes: usize,
}

/// A delta's bounds, and each shard's and member's part's.
pub const DELTA_BOUNDS: Bounds = Bounds {
    records: DELTA_RECORDS_MAX,
    bytes: DELTA_BYTES_MAX,
};

/// Combines parts (each ordered, each maybe cut: a shard's, or a member's) into one part
/// within `bounds`. A cut part may have left out records just after its last one, so the
/// union is whole only up to the earliest last record of a cut part: the combined part ends
/// there at the latest, and is cut.
pub fn combine(parts: Vec<Arrivals>, bounds: Bounds) -> Arrivals {
    let order = |a: &Arrival, b: &Arrival| (a.mark(), &a.key).cmp(&(b.mark(), &b.key));
    let cut_parts = parts.iter().filter(|p| p.truncated);
    // `None` inside: a cut part that returned nothing (never built here) — nothing is whole.
    let whole_to = cut_parts
        .map(|p| p.records.last())
        .min_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => order(a, b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        });
    let whole_to = whole_to.map(|last| last.map(|a| (a.mark(), a.key.clone())));
    let mut truncated = whole_to.is_some();
    let mut records: Vec<Arrival> = parts.into_iter().flat_map(|p| p.records).collect();
    records.sort_unstable_by(order);
    if let Some(end) = whole_to {
        let whole = end.map_or(0, |(mark, key)| {
            records.partition_point(|r| (r.mark(), &r.key) <= (mark, &key))
        });
        records.truncate(whole);
    }
    let fit = fitting(records.iter().map(Arrival::weight), bounds.bytes).min(bounds.records);
    if fit < records.len() {
        records.truncate(fit);
        truncated = true;
    }
    Arrivals { records, truncated }
}

/// Merges the parts of a scan from `from` into one delta within `bounds`, and says where the
/// client is once it has it.
pub fn merge(parts: Vec<Arrivals>, from: Mark, scan_start_ms: u64, bounds: Bounds) -> Delta {
    let Arrivals { records, truncated } = combine(parts, bounds);
    let synced = match records.last() {
        // Continue at the last record's tie: the records of that tie left out are sent next
        // time, the ones sent again merge idempotently.
        Some(last) if truncated => (last.arrived_ms, u32::from(last.tie)),
        // Cut before anything (a part that could not be read whole): from the same place.
        None if truncated && from.tie == 0 => (from.ms.saturating_sub(1), 0),
        None if truncated => (from.ms, u32::from(from.tie)),
        _ => (scan_start_ms, 0),
    };
    Delta { records, synced }
}

/// Puts the scan of `map` from `from` on every shard's queue, each shard raising its
/// arrivals above `scan_start_ms` (of the `owned` partitions only, when given); the future
/// yields their parts combined.
pub async fn read_local(
    shards: &Shards,
    map: &str,
    from: Mark,
    scan_start_ms: u64,
    owned: Option<PartSet>,
) -> Result<BoxFuture<'static, Option<Arrivals>>, ShardGone> {
    let parts = shards
        .ask_all(|reply| Request::LwwArrivedSince {
            map: map.to_owned(),
            from,
            scan_start_ms,
            max: DELTA_RECORDS_MAX,
            max_bytes: DELTA_BYTES_MAX,
            owned,
            reply,
        })
        .await?;
    Ok(parts
        .map(|parts| Some(combine(parts?, DELTA_BOUNDS)))
        .boxed())
}

/// The delta of `map` from `from`, the scan starting at `now_ms` (read before any shard is
/// asked): this node's shards', or in a `cluster` every member's for the partitions it owns.
pub async fn gather(
    shards: &Shards,
    cluster: Option<&Cluster>,
    map: &str,
    from: Mark,
    now_ms: u64,
) -> Result<Delta, Box<Message>> {
    let read = Read::LwwArrivedSince {
        map: map.to_owned(),
        from,
        scan_start_ms: now_ms,
        max: DELTA_RECORDS_MAX,
    };
    let parts = peers::gather(shards, cluster, read, Local::default(), 0).await?;
    // A part of another shape would leave records out while the cursor moves past them.
    let parts = parts.await?.into_iter().map(|part| match part {
        ReadPart::Arrivals(arrivals) => Ok(arrivals),
        _ => Err(peers::unexpected_part()),
    });
    let parts = parts.collect::<Result<_, _>>()?;
    Ok(merge(parts, from, now_ms, DELTA_BOUNDS))
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

    /// At most `records` records, of any size.
    fn up_to(records: usize) -> Bounds {
        Bounds {
            records,
            bytes: usize::MAX,
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
        let delta = merge(parts, Mark::at(0), 99, up_to(4));
        assert_eq!(keys(&delta), ["a", "b", "c", "d"]);
        assert_eq!(delta.synced, (99, 0), "nothing cut: the scan start");
        assert_eq!(merge(Vec::new(), Mark::at(0), 99, up_to(4)).synced, (99, 0));
    }

    /// Members combine their shards' parts, and the entry member merges the members' parts:
    /// the same delta as one node merging every shard's part at once, whichever parts were
    /// cut, and a scan continued from its cursor returns exactly what the first left out.
    #[test]
    fn members_parts_of_shards_parts_merge_as_all_shards_at_once() {
        let records: Vec<(u64, u16, String)> = (0..60u64)
            .map(|i| {
                (
                    10 + i % 7,
                    u16::try_from(i % 5).unwrap() + 1,
                    format!("k{i}"),
                )
            })
            .collect();
        let scan = |from: Mark, shards: &[Vec<usize>], max: usize| {
            // Each shard's part: its records at or after `from`, ordered, cut at `max`.
            let shard_part = |ids: &Vec<usize>| {
                let mut mine: Vec<Arrival> = ids
                    .iter()
                    .map(|&i| &records[i])
                    .map(|(t, c, k)| arrival(*t, *c, k))
                    .filter(|a| a.mark() >= from)
                    .collect();
                mine.sort_by(|a, b| (a.mark(), &a.key).cmp(&(b.mark(), &b.key)));
                let truncated = mine.len() > max;
                mine.truncate(max);
                Arrivals {
                    records: mine,
                    truncated,
                }
            };
            shards.iter().map(shard_part).collect::<Vec<_>>()
        };
        let shards: Vec<Vec<usize>> = (0..6).map(|s| (s..60).step_by(6).collect()).collect();
        let mut from = Mark::at(0);
        let mut seen = Vec::new();
        for _ in 0..10 {
            let flat = merge(scan(from, &shards, 8), Mark::at(0), 99, up_to(8));
            let members: Vec<Arrivals> = scan(from, &shards, 8)
                .chunks(2)
                .map(|of_member| combine(of_member.to_vec(), up_to(8)))
                .collect();
            let nested = merge(members, Mark::at(0), 99, up_to(8));
            assert_eq!(nested, flat, "from {from:?}");
            seen.extend(keys(&nested).into_iter().map(str::to_owned));
            let (ms, counter) = nested.synced;
            if counter == 0 {
                break;
            }
            from = Mark {
                ms,
                tie: u16::try_from(counter).unwrap(),
            };
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), records.len(), "every record, page by page");
    }

    /// A part cut short of `max` (by its bytes) may have left out records just after its
    /// last: the combined part ends there, whatever the other parts hold after it.
    #[test]
    fn a_part_cut_by_its_bytes_ends_the_union_at_its_last_record() {
        let parts = vec![
            part(&[(10, 1, "a"), (30, 1, "d")], true),
            part(&[(20, 1, "b"), (40, 1, "e"), (50, 1, "f")], false),
        ];
        let delta = merge(parts, Mark::at(0), 99, up_to(100));
        assert_eq!(
            keys(&delta),
            ["a", "b", "d"],
            "e and f wait for the next delta"
        );
        assert_eq!(delta.synced, (30, 1), "continued from d's place");
        // Cut before anything: the delta hands back the place it started from.
        let nothing = vec![Arrivals {
            records: Vec::new(),
            truncated: true,
        }];
        let from = Mark { ms: 70, tie: 3 };
        assert_eq!(merge(nothing.clone(), from, 99, up_to(9)).synced, (70, 3));
        let delta = merge(nothing, Mark::at(70), 99, up_to(9));
        assert!(delta.records.is_empty());
        assert_eq!(
            resume_from(&since(delta.synced.0, delta.synced.1, "me"), "me"),
            Mark::at(70)
        );
    }

    #[test]
    fn a_delta_is_cut_at_its_byte_bound_but_holds_one_record_at_least() {
        let big = |t: u64, key: &str| Arrival {
            record: LwwRecord::new(
                Value::from("x".repeat(1_000)),
                Timestamp::new(1, 0, NodeId::new("a").unwrap()),
                None,
            ),
            ..arrival(t, 1, key)
        };
        let parts = vec![Arrivals {
            records: vec![big(10, "a"), big(20, "b"), big(30, "c")],
            truncated: false,
        }];
        let bounds = Bounds {
            records: 100,
            bytes: 2_500,
        };
        let delta = merge(parts.clone(), Mark::at(0), 99, bounds);
        assert_eq!(keys(&delta), ["a", "b"]);
        assert_eq!(delta.synced, (20, 1));
        let tiny = Bounds {
            records: 100,
            bytes: 10,
        };
        assert_eq!(
            keys(&merge(parts, Mark::at(0), 99, tiny)),
            ["a"],
            "progress"
        );
    }

    #[test]
    fn a_cut_delta_hands_back_its_last_record_s_place() {
        let parts = vec![
            part(&[(10, 5, "b"), (30, 1, "d")], false),
            part(&[(10, 2, "a"), (20, 3, "c")], false),
        ];
        let delta = merge(parts, Mark::at(0), 99, up_to(3));
        assert_eq!(keys(&delta), ["a", "b", "c"]);
        assert_eq!(delta.synced, (20, 3));
        // One shard cut its part: the delta ends before that shard's first record left out.
        let parts = vec![
            part(&[(10, 1, "a"), (20, 1, "b")], true),
            part(&[(5, 1, "c")], false),
        ];
        let delta = merge(parts, Mark::at(0), 99, up_to(2));
        assert_eq!(keys(&delta), ["c", "a"]);
        assert_eq!(delta.synced, (10, 1));
    }
}
