//! A shard's LWW map: the core [`LwwMap`](topgun_core::LwwMap)'s merge rule over a Merkle
//! tree whose items also carry the server time each key's latest change **arrived** here.
//!
//! HTTP sync serves deltas by arrival (COMPAT §2.2): clients keep their own timestamps, so an
//! offline write may arrive long after its HLC time, and a delta chosen by HLC time would
//! miss it. The arrival is a `u64` stored in the item beside its record — the same slot the
//! write already probes — so a write costs no second lookup, no key copy and no allocation:
//! 8 bytes per key, memory only. After a restart every record counts as arrived at start.
//!
//! Scans order records by `(arrival, tie, key)`, where the tie is a 16-bit hash of the key
//! under a key chosen at random per process. A client can then continue a cut scan from a
//! [`Mark`] of two small numbers — the last arrival and the last tie sent — even when far more
//! records than a scan returns share one arrival (every recovered record arrives at start).
//! The hash's key keeps anyone from choosing keys that all share one tie.
//!
//! Invariants:
//! * every key held has exactly one arrival, that of the change that put its record here;
//! * a merge that loses changes neither record nor arrival.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use topgun_core::merkle::Sum;
use topgun_core::{LwwRecord, MerkleError, MerkleTree, Timestamp};

use crate::data::parts::PartSet;

/// A record and when it arrived (server wall-clock ms).
#[derive(Debug, Clone)]
pub struct Arrived {
    pub record: LwwRecord,
    pub arrived_ms: u64,
}

/// A place in the arrival order: a scan from a mark returns the records at or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Mark {
    pub ms: u64,
    /// Within `ms`, the least tie included; 0 includes every record of `ms`.
    pub tie: u16,
}

impl Mark {
    /// Every record that arrived at or after `ms`.
    pub fn at(ms: u64) -> Self {
        Self { ms, tie: 0 }
    }
}

/// The tie of `key`: its place among records of one arrival, in `1..=65535` (0 is below every
/// key, so [`Mark::at`] includes them all). Stable for the life of the process.
pub fn tie_of(key: &str) -> u16 {
    static HASHER: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let hash = HASHER
        .get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(key);
    // Both conversions are exact: the remainder is below 65,535.
    u16::try_from(hash % u64::from(u16::MAX)).map_or(u16::MAX, |t| t + 1)
}

/// One record of a scan by arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    pub arrived_ms: u64,
    pub tie: u16,
    pub key: String,
    pub record: LwwRecord,
}

impl Arrival {
    /// Where this record is in the arrival order.
    pub fn mark(&self) -> Mark {
        Mark {
            ms: self.arrived_ms,
            tie: self.tie,
        }
    }

    /// About how many bytes it takes in a delta, never less (see [`weight`]).
    pub fn weight(&self) -> usize {
        weight(&self.key, &self.record)
    }
}

/// About how many bytes `key`'s record takes in a delta or a member's answer, never less:
/// what byte budgets count.
pub fn weight(key: &str, record: &LwwRecord) -> usize {
    const HEADERS: usize = 48;
    HEADERS + key.len() + record.timestamp.node_id.as_str().len() + record.value.encoded_len_bound()
}

/// How many of `weights` (in order) fit within `max_bytes`: at least one, so that every cut
/// scan makes progress however large its first record.
pub fn fitting(weights: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for weight in weights {
        total = total.saturating_add(weight);
        if n > 0 && total > max_bytes {
            break;
        }
        n += 1;
    }
    n
}

/// What a scan by arrival asks for.
#[derive(Debug, Clone, Copy)]
pub struct Scan<'a> {
    /// The records at or after this place…
    pub from: Mark,
    /// …that arrived at or before this time: the scan's start. A record that arrived later
    /// changed after the cursor handed back was chosen, and is the next scan's.
    pub until_ms: u64,
    /// At most this many…
    pub max: usize,
    /// …and about this many bytes ([`weight`]), at least one record.
    pub max_bytes: usize,
    /// Of these partitions only (`None`: every one).
    pub owned: Option<&'a PartSet>,
}

impl Scan<'_> {
    /// At most `max` records from `from`, whenever they arrived, of any size.
    pub fn from(from: Mark, max: usize) -> Self {
        Self {
            from,
            until_ms: u64::MAX,
            max,
            max_bytes: usize::MAX,
            owned: None,
        }
    }
}

/// The records of a scan by arrival, oldest first (then by tie, then by key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrivals {
    pub records: Vec<Arrival>,
    /// Whether more records matched than were returned.
    pub truncated: bool,
}

impl Arrivals {
    /// Where the last record returned is.
    pub fn last(&self) -> Option<Mark> {
        self.records.last().map(Arrival::mark)
    }
}

/// An LWW map that knows when each record arrived.
#[derive(Debug, Clone, Default)]
pub struct ArrivedLww {
    tree: MerkleTree<Arrived>,
}

impl ArrivedLww {
    /// Number of stored records, tombstones included.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Merges `record`, arrived at `arrived_ms`, by the LWW rule (it wins iff there is no
    /// stored record or it wins over it), first showing `seen` the stored record, in one
    /// probe. Returns whether the map changed.
    pub fn merge_seeing(
        &mut self,
        key: &str,
        record: LwwRecord,
        arrived_ms: u64,
        seen: impl FnOnce(&LwwRecord),
    ) -> bool {
        let item_hash = record.item_hash(key);
        let item = Arrived { record, arrived_ms };
        self.tree.insert_if(key, item, item_hash, |stored, new| {
            seen(&stored.record);
            new.record.wins_over(&stored.record)
        })
    }

    /// Every stored `(key, record)`, tombstones and expired records included.
    pub fn records(&self) -> impl Iterator<Item = (&str, &LwwRecord)> {
        self.tree.iter().map(|(k, a)| (k, &a.record))
    }

    /// The records `scan` asks for, the earliest first. A scan of the whole map: the matches
    /// are chosen by reference and only the returned ones are copied.
    pub fn arrived_since(&self, scan: &Scan) -> Arrivals {
        let Scan {
            from,
            until_ms,
            max,
            max_bytes,
            owned,
        } = *scan;
        let mut hits: Vec<(Mark, &str, &LwwRecord)> = self
            .tree
            .iter()
            .filter(|(k, a)| {
                (from.ms..=until_ms).contains(&a.arrived_ms) && owned.is_none_or(|o| o.holds_key(k))
            })
            .map(|(k, a)| {
                let mark = Mark {
                    ms: a.arrived_ms,
                    tie: tie_of(k),
                };
                (mark, k, &a.record)
            })
            .filter(|(mark, _, _)| *mark >= from)
            .collect();
        let order = |a: &(Mark, &str, &LwwRecord), b: &(Mark, &str, &LwwRecord)| {
            (a.0, a.1).cmp(&(b.0, b.1))
        };
        let mut truncated = hits.len() > max;
        if truncated {
            // The `max` earliest first, unordered; the rest dropped before sorting.
            hits.select_nth_unstable_by(max, order);
            hits.truncate(max);
        }
        hits.sort_unstable_by(order);
        let fit = fitting(hits.iter().map(|(_, k, r)| weight(k, r)), max_bytes);
        if fit < hits.len() {
            hits.truncate(fit);
            truncated = true;
        }
        let records = hits
            .into_iter()
            .map(|(mark, key, record)| Arrival {
                arrived_ms: mark.ms,
                tie: mark.tie,
                key: key.to_owned(),
                record: record.clone(),
            })
            .collect();
        Arrivals { records, truncated }
    }

    /// The non-empty leaf sums under `path`.
    pub fn leaf_sums(&self, path: &str) -> Result<Vec<(u16, Sum)>, MerkleError> {
        self.tree.leaf_sums(path)
    }

    /// The non-empty leaf sums under `path` over the keys `keep` accepts.
    pub fn leaf_sums_where(
        &self,
        path: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(u16, Sum)>, MerkleError> {
        self.tree.leaf_sums_where(path, keep)
    }

    /// Every `(key, record)` in the leaf at `path`.
    pub fn bucket(
        &self,
        path: &str,
    ) -> Result<impl Iterator<Item = (&str, &LwwRecord)>, MerkleError> {
        Ok(self
            .tree
            .items_in_bucket(path)?
            .map(|(k, a)| (k, &a.record)))
    }

    /// Forgets tombstones older than `older_than`; returns their keys.
    pub fn prune(&mut self, older_than: &Timestamp) -> Vec<String> {
        let doomed: Vec<String> = self
            .records()
            .filter(|(_, r)| r.is_tombstone() && r.timestamp < *older_than)
            .map(|(k, _)| k.to_owned())
            .collect();
        for key in &doomed {
            self.tree.remove(key);
        }
        doomed
    }

    /// Drops a key's record outright: replaying a prune recorded elsewhere.
    pub fn forget(&mut self, key: &str) {
        self.tree.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::{NodeId, Value};

    fn record(millis: u64) -> LwwRecord {
        let at = Timestamp::new(millis, 0, NodeId::new("a").unwrap());
        LwwRecord::new(Value::Int(1), at, None)
    }

    fn keys(arrivals: &Arrivals) -> Vec<(u64, &str)> {
        arrivals
            .records
            .iter()
            .map(|a| (a.arrived_ms, a.key.as_str()))
            .collect()
    }

    #[test]
    fn a_losing_merge_keeps_the_winner_s_arrival() {
        let mut map = ArrivedLww::default();
        assert!(map.merge_seeing("k", record(20), 100, |_| {}));
        assert!(
            !map.merge_seeing("k", record(10), 200, |_| {}),
            "older loses"
        );
        assert_eq!(
            keys(&map.arrived_since(&Scan::from(Mark::at(0), 10))),
            [(100, "k")]
        );
        assert!(map.merge_seeing("k", record(30), 300, |_| {}));
        assert_eq!(
            keys(&map.arrived_since(&Scan::from(Mark::at(0), 10))),
            [(300, "k")]
        );
    }

    /// `(arrival, key)` in scan order: by arrival, then by tie.
    fn by_tie<'a>(records: &[(u64, &'a str)]) -> Vec<(u64, &'a str)> {
        let mut records = records.to_vec();
        records.sort_by_key(|(ms, key)| (*ms, tie_of(key), *key));
        records
    }

    #[test]
    fn a_scan_is_ordered_by_arrival_then_tie_and_cut_at_max() {
        let mut map = ArrivedLww::default();
        for (key, arrived) in [("d", 30), ("c", 10), ("b", 20), ("a", 20), ("e", 5)] {
            map.merge_seeing(key, record(1), arrived, |_| {});
        }
        let expected = by_tie(&[(10, "c"), (20, "a"), (20, "b"), (30, "d")]);
        let all = map.arrived_since(&Scan::from(Mark::at(10), 10));
        assert_eq!(keys(&all), expected);
        assert!(!all.truncated);
        let cut = map.arrived_since(&Scan::from(Mark::at(10), 2));
        assert_eq!(keys(&cut), expected[..2]);
        assert!(cut.truncated);
        assert_eq!(cut.last().map(|m| m.ms), Some(20));
        let exact = map.arrived_since(&Scan::from(Mark::at(10), 4));
        assert!(!exact.truncated, "exactly max records is not truncated");
        assert_eq!(
            map.arrived_since(&Scan::from(Mark::at(31), 10)),
            Arrivals::default()
        );
    }

    #[test]
    fn a_scan_of_owned_partitions_leaves_the_others_out_and_cuts_among_the_owned() {
        let mut map = ArrivedLww::default();
        let keys_all: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for (i, key) in (0u64..).zip(&keys_all) {
            map.merge_seeing(key, record(1), 10 + i, |_| {});
        }
        let mut owned = PartSet::default();
        for key in keys_all.iter().step_by(3) {
            owned.insert(topgun_core::hash::partition_id(key));
        }
        let expected: Vec<&str> = keys_all
            .iter()
            .filter(|k| owned.holds_key(k))
            .map(String::as_str)
            .collect();
        assert!(expected.len() < keys_all.len(), "some keys are not owned");
        let all = map.arrived_since(&Scan {
            owned: Some(&owned),
            ..Scan::from(Mark::at(0), 1_000)
        });
        let got: Vec<&str> = all.records.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(got, expected, "in arrival order, owned only");
        let cut = map.arrived_since(&Scan {
            owned: Some(&owned),
            ..Scan::from(Mark::at(0), 5)
        });
        assert!(cut.truncated);
        let got: Vec<&str> = cut.records.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(got, expected[..5], "the cut counts owned records only");
    }

    /// A scan leaves out what arrived after its start (the next scan's), and stops at its
    /// byte bound, one record at least.
    #[test]
    fn a_scan_ends_at_its_start_and_at_its_byte_bound() {
        let mut map = ArrivedLww::default();
        for (key, arrived) in [("a", 10), ("b", 20), ("c", 30)] {
            map.merge_seeing(key, record(1), arrived, |_| {});
        }
        let until = map.arrived_since(&Scan {
            until_ms: 20,
            ..Scan::from(Mark::at(0), 10)
        });
        assert_eq!(keys(&until), [(10, "a"), (20, "b")]);
        assert!(
            !until.truncated,
            "what arrived later is not left out but not yet due"
        );
        let one = weight("a", &record(1));
        let two = map.arrived_since(&Scan {
            max_bytes: 2 * one,
            ..Scan::from(Mark::at(0), 10)
        });
        assert_eq!(keys(&two), [(10, "a"), (20, "b")]);
        assert!(two.truncated);
        let least = map.arrived_since(&Scan {
            max_bytes: 1,
            ..Scan::from(Mark::at(0), 10)
        });
        assert_eq!(keys(&least), [(10, "a")]);
        assert!(least.truncated);
    }

    /// Many records of one arrival: a scan continued from the mark of the last record it
    /// returned makes progress and, over all pages, returns every record.
    #[test]
    fn records_of_one_arrival_page_by_tie() {
        let mut map = ArrivedLww::default();
        for i in 0..1_000 {
            map.merge_seeing(&format!("k{i}"), record(1), 7, |_| {});
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut from = Mark::at(0);
        for _ in 0..20 {
            let page = map.arrived_since(&Scan::from(from, 100));
            seen.extend(page.records.iter().map(|a| a.key.clone()));
            if !page.truncated {
                break;
            }
            let next = page.last().unwrap();
            assert!(next > from, "every page moves on");
            from = next;
        }
        assert_eq!(seen.len(), 1_000);
    }

    #[test]
    fn ties_are_never_zero_and_stable() {
        for i in 0..10_000 {
            let key = format!("key-{i}");
            assert_ne!(tie_of(&key), 0);
            assert_eq!(tie_of(&key), tie_of(&key));
        }
    }
}
