//! A shard's LWW map: the core [`LwwMap`](topgun_core::LwwMap)'s merge rule over a Merkle
//! tree whose items also carry the server time each key's latest change **arrived** here.
//!
//! HTTP sync serves deltas by arrival (COMPAT §2.2): clients keep their own timestamps, so an
//! offline write may arrive long after its HLC time, and a delta chosen by HLC time would
//! miss it. The arrival is a `u64` stored in the item beside its record — the same slot the
//! write already probes — so a write costs no second lookup, no key copy and no allocation:
//! 8 bytes per key, memory only. After a restart every record counts as arrived at start.
//!
//! Invariants:
//! * every key held has exactly one arrival, that of the change that put its record here;
//! * a merge that loses changes neither record nor arrival.

use topgun_core::merkle::Sum;
use topgun_core::{LwwRecord, MerkleError, MerkleTree, Timestamp};

/// A record and when it arrived (server wall-clock ms).
#[derive(Debug, Clone)]
pub struct Arrived {
    pub record: LwwRecord,
    pub arrived_ms: u64,
}

/// One record of a scan by arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    pub arrived_ms: u64,
    pub key: String,
    pub record: LwwRecord,
}

/// The records of a scan by arrival, oldest first (ties by key).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrivals {
    pub records: Vec<Arrival>,
    /// Whether more records matched than were returned.
    pub truncated: bool,
}

impl Arrivals {
    /// The arrival of the last record returned.
    pub fn last_ms(&self) -> Option<u64> {
        self.records.last().map(|a| a.arrived_ms)
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

    /// The records that arrived at or after `since_ms`, oldest first (ties by key), at most
    /// `max`. A scan of the whole map: the matches are chosen by reference and only the
    /// returned ones are copied.
    pub fn arrived_since(&self, since_ms: u64, max: usize) -> Arrivals {
        let mut hits: Vec<(u64, &str, &LwwRecord)> = self
            .tree
            .iter()
            .filter(|(_, a)| a.arrived_ms >= since_ms)
            .map(|(k, a)| (a.arrived_ms, k, &a.record))
            .collect();
        let order =
            |a: &(u64, &str, &LwwRecord), b: &(u64, &str, &LwwRecord)| (a.0, a.1).cmp(&(b.0, b.1));
        let truncated = hits.len() > max;
        if truncated {
            // The `max` earliest first, unordered; the rest dropped before sorting.
            hits.select_nth_unstable_by(max, order);
            hits.truncate(max);
        }
        hits.sort_unstable_by(order);
        let records = hits
            .into_iter()
            .map(|(arrived_ms, key, record)| Arrival {
                arrived_ms,
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
        assert_eq!(keys(&map.arrived_since(0, 10)), [(100, "k")]);
        assert!(map.merge_seeing("k", record(30), 300, |_| {}));
        assert_eq!(keys(&map.arrived_since(0, 10)), [(300, "k")]);
    }

    #[test]
    fn a_scan_is_ordered_by_arrival_then_key_and_cut_at_max() {
        let mut map = ArrivedLww::default();
        for (key, arrived) in [("d", 30), ("c", 10), ("b", 20), ("a", 20), ("e", 5)] {
            map.merge_seeing(key, record(1), arrived, |_| {});
        }
        let all = map.arrived_since(10, 10);
        assert_eq!(keys(&all), [(10, "c"), (20, "a"), (20, "b"), (30, "d")]);
        assert!(!all.truncated);
        let cut = map.arrived_since(10, 2);
        assert_eq!(keys(&cut), [(10, "c"), (20, "a")]);
        assert!(cut.truncated);
        assert_eq!(cut.last_ms(), Some(20));
        let exact = map.arrived_since(10, 4);
        assert!(!exact.truncated, "exactly max records is not truncated");
        assert_eq!(map.arrived_since(31, 10), Arrivals::default());
    }
}
