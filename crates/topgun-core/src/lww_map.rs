//! Last-write-wins map (PROTOCOL.md §2.2).
//!
//! Invariants:
//! * each key holds the record with the greatest timestamp this replica has seen for it;
//!   a remote record replaces the local one iff its timestamp is **strictly** greater (equal
//!   timestamps with different contents: the greater value in the canonical order), so
//!   merging is commutative, associative and idempotent;
//! * a tombstone (value `nil`) is a record like any other: it wins and loses by timestamp and
//!   is hashed like a live record, until [`LwwMap::prune`] forgets it;
//! * the Merkle tree holds every record under item hash `fnv1a("<key>:<millis>:<counter>:
//!   <nodeId>")` (the value is not hashed), maintained on every state change.
//!
//! Time is passed in: reads take `now_ms` for TTL expiry, writes take a timestamp that the
//! caller's [`crate::Hlc`] issued.

use thiserror::Error;

use crate::hash::Fnv1a;
use crate::hlc::Timestamp;
use crate::merkle::MerkleTree;
use crate::value::Value;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LwwError {
    /// The write would not win: its timestamp is not newer than the stored record's. Nothing
    /// changed. A timestamp from this replica's HLC is always newer, so this means the caller
    /// did not stamp the write with its clock (or replayed one).
    #[error("write to {key:?} at {attempted} is not newer than the stored {stored}")]
    StaleTimestamp {
        key: String,
        attempted: Timestamp,
        stored: Timestamp,
    },
    #[error("TTL must be positive")]
    ZeroTtl,
}

/// One key's state: a value (nil = tombstone), the timestamp that orders it, an optional TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LwwRecord {
    /// `Value::Nil` marks a tombstone (a deletion), as on the wire.
    pub value: Value,
    pub timestamp: Timestamp,
    /// The record is hidden once `timestamp.millis + ttl_ms < now`.
    pub ttl_ms: Option<u64>,
}

impl LwwRecord {
    pub fn new(value: Value, timestamp: Timestamp, ttl_ms: Option<u64>) -> Self {
        Self {
            value,
            timestamp,
            ttl_ms,
        }
    }

    pub fn tombstone(timestamp: Timestamp) -> Self {
        Self::new(Value::Nil, timestamp, None)
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_nil()
    }

    /// Whether the TTL ran out: `millis + ttl < now` (still visible at exactly `millis + ttl`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.ttl_ms
            .is_some_and(|ttl| self.timestamp.millis.saturating_add(ttl) < now_ms)
    }

    /// Whether this record wins over `other` for the same key: the greater timestamp; equal
    /// timestamps (one write delivered with two contents, which a correct client never
    /// produces) are broken by value then TTL in the canonical order, so replicas agree
    /// whatever the arrival order.
    pub fn wins_over(&self, other: &Self) -> bool {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.value.canonical_cmp(&other.value))
            .then_with(|| self.ttl_ms.cmp(&other.ttl_ms))
            .is_gt()
    }

    /// Neither a tombstone nor expired.
    pub fn is_visible(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }

    /// `fnv1a("<key>:<millis>:<counter>:<nodeId>")`, streamed without building the string.
    pub fn item_hash(&self, key: &str) -> u32 {
        let mut h = Fnv1a::new();
        h.write_str(key);
        h.write_unit(u16::from(b':'));
        self.timestamp.hash_into(&mut h);
        h.finish()
    }
}

/// A last-write-wins map with an incrementally maintained Merkle tree.
#[derive(Debug, Clone, Default)]
pub struct LwwMap {
    tree: MerkleTree<LwwRecord>,
}

impl LwwMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored records, tombstones included.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Writes `value` under `key` at `timestamp` (from this replica's HLC).
    pub fn set(
        &mut self,
        key: &str,
        value: Value,
        timestamp: Timestamp,
        ttl_ms: Option<u64>,
    ) -> Result<&LwwRecord, LwwError> {
        if ttl_ms == Some(0) {
            return Err(LwwError::ZeroTtl);
        }
        self.write(key, LwwRecord::new(value, timestamp, ttl_ms))
    }

    /// Deletes `key` by writing a tombstone at `timestamp`.
    pub fn remove(&mut self, key: &str, timestamp: Timestamp) -> Result<&LwwRecord, LwwError> {
        self.write(key, LwwRecord::tombstone(timestamp))
    }

    /// A local write must carry a strictly newer timestamp than the stored record (a fresh
    /// HLC timestamp always does); the value tie-break of [`LwwRecord::wins_over`] is for
    /// remote copies of one write, never for local writes.
    fn write(&mut self, key: &str, record: LwwRecord) -> Result<&LwwRecord, LwwError> {
        if let Some(stored) = self.tree.get(key)
            && record.timestamp <= stored.timestamp
        {
            return Err(LwwError::StaleTimestamp {
                key: key.to_owned(),
                attempted: record.timestamp,
                stored: stored.timestamp.clone(),
            });
        }
        let item_hash = record.item_hash(key);
        self.tree.insert(key, record, item_hash);
        Ok(self.tree.get(key).expect("the record was just stored"))
    }

    /// Merges a remote record; it wins iff there is no local record or its timestamp is
    /// strictly greater. Returns whether the map changed.
    pub fn merge(&mut self, key: &str, record: LwwRecord) -> bool {
        let item_hash = record.item_hash(key);
        self.tree
            .insert_if(key, record, item_hash, |stored, new| new.wins_over(stored))
    }

    /// Like [`LwwMap::merge`], first showing `seen` the record stored under `key`, if any:
    /// one probe of the tree where looking the record up and then merging take two (on a
    /// large map each probe is a few cache misses, on every write).
    pub fn merge_seeing(
        &mut self,
        key: &str,
        record: LwwRecord,
        seen: impl FnOnce(&LwwRecord),
    ) -> bool {
        let item_hash = record.item_hash(key);
        self.tree.insert_if(key, record, item_hash, |stored, new| {
            seen(stored);
            new.wins_over(stored)
        })
    }

    /// The live value of `key`: `None` for missing, deleted and expired keys.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<&Value> {
        self.tree
            .get(key)
            .filter(|r| r.is_visible(now_ms))
            .map(|r| &r.value)
    }

    /// The stored record, tombstones and expired records included.
    pub fn record(&self, key: &str) -> Option<&LwwRecord> {
        self.tree.get(key)
    }

    /// Every live `(key, value)` at `now_ms`.
    pub fn entries(&self, now_ms: u64) -> impl Iterator<Item = (&str, &Value)> {
        self.tree
            .iter()
            .filter(move |(_, r)| r.is_visible(now_ms))
            .map(|(k, r)| (k, &r.value))
    }

    /// Every stored `(key, record)`, tombstones and expired records included.
    pub fn records(&self) -> impl Iterator<Item = (&str, &LwwRecord)> {
        self.tree.iter()
    }

    /// Forgets tombstones older than `older_than`; returns their keys.
    ///
    /// Only safe once every replica has seen those tombstones: a replica that still holds an
    /// older live record would otherwise resurrect it on its next sync.
    pub fn prune(&mut self, older_than: &Timestamp) -> Vec<String> {
        let doomed: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, r)| r.is_tombstone() && r.timestamp < *older_than)
            .map(|(k, _)| k.to_owned())
            .collect();
        for key in &doomed {
            self.tree.remove(key);
        }
        doomed
    }

    /// Drops a key's record outright, whatever it is: replaying a prune recorded elsewhere.
    pub fn forget(&mut self, key: &str) -> Option<LwwRecord> {
        self.tree.remove(key)
    }

    /// The Merkle tree over this map's records.
    pub fn merkle(&self) -> &MerkleTree<LwwRecord> {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;

    fn ts(millis: u64, counter: u32, node: &str) -> Timestamp {
        Timestamp::new(millis, counter, NodeId::new(node).unwrap())
    }

    fn rec(value: impl Into<Value>, t: Timestamp) -> LwwRecord {
        LwwRecord::new(value.into(), t, None)
    }

    #[test]
    fn set_get_remove() {
        let mut m = LwwMap::new();
        m.set("a", Value::from("x"), ts(1, 0, "n"), None).unwrap();
        assert_eq!(m.get("a", 0), Some(&Value::from("x")));
        m.remove("a", ts(2, 0, "n")).unwrap();
        assert_eq!(m.get("a", 0), None);
        assert!(m.record("a").unwrap().is_tombstone());
        assert_eq!(m.len(), 1, "the tombstone is kept");
        assert_eq!(m.entries(0).count(), 0);
    }

    #[test]
    fn stale_local_write_is_refused_and_changes_nothing() {
        let mut m = LwwMap::new();
        m.set("a", Value::Int(1), ts(5, 0, "n"), None).unwrap();
        let root = m.merkle().root();
        let err = m.set("a", Value::Int(2), ts(5, 0, "n"), None).unwrap_err();
        assert!(matches!(err, LwwError::StaleTimestamp { .. }));
        assert_eq!(m.get("a", 0), Some(&Value::Int(1)));
        assert_eq!(m.merkle().root(), root);
        assert_eq!(
            m.set("a", Value::Int(2), ts(6, 0, "n"), Some(0)),
            Err(LwwError::ZeroTtl)
        );
    }

    #[test]
    fn merge_seeing_shows_the_stored_record_and_merges_like_merge() {
        let mut m = LwwMap::new();
        let mut seen = Vec::new();
        assert!(m.merge_seeing("k", rec("a", ts(10, 0, "n")), |r| seen.push(r.clone())));
        assert!(seen.is_empty(), "nothing stored yet");
        assert!(!m.merge_seeing("k", rec("b", ts(9, 0, "n")), |r| seen.push(r.clone())));
        assert!(m.merge_seeing("k", rec("c", ts(11, 0, "n")), |r| seen.push(r.clone())));
        let values: Vec<_> = seen.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, [Value::from("a"), Value::from("a")]);
        assert_eq!(m.get("k", 0), Some(&Value::from("c")));
        let mut same = LwwMap::new();
        same.merge("k", rec("a", ts(10, 0, "n")));
        same.merge("k", rec("b", ts(9, 0, "n")));
        same.merge("k", rec("c", ts(11, 0, "n")));
        assert_eq!(m.merkle().root(), same.merkle().root());
    }

    #[test]
    fn merge_accepts_only_strictly_newer() {
        let mut m = LwwMap::new();
        assert!(m.merge("k", rec("a", ts(10, 0, "n1"))));
        assert!(
            !m.merge("k", rec("a", ts(10, 0, "n1"))),
            "the same record again"
        );
        assert!(
            !m.merge("k", rec("0", ts(10, 0, "n1"))),
            "equal timestamp, smaller value"
        );
        assert!(!m.merge("k", rec("b", ts(9, 5, "n1"))), "older loses");
        assert!(
            m.merge("k", rec("c", ts(10, 0, "n2"))),
            "node id breaks the tie"
        );
        assert_eq!(m.get("k", 0), Some(&Value::from("c")));
    }

    #[test]
    fn equal_timestamps_with_different_values_converge() {
        let t = ts(10, 0, "n1");
        let mut a = LwwMap::new();
        a.merge("k", rec("x", t.clone()));
        a.merge("k", rec("y", t.clone()));
        let mut b = LwwMap::new();
        b.merge("k", rec("y", t.clone()));
        b.merge("k", rec("x", t));
        assert_eq!(a.record("k"), b.record("k"));
        assert_eq!(a.get("k", 0), Some(&Value::from("y")));
    }

    #[test]
    fn tombstone_versus_write_at_equal_time_is_decided_by_value() {
        // Nil sorts first in the canonical order, so at equal timestamps the write wins on
        // every replica, whichever arrived first.
        let t = ts(10, 0, "n1");
        let mut a = LwwMap::new();
        assert!(a.merge("k", LwwRecord::tombstone(t.clone())));
        assert!(a.merge("k", rec("v", t.clone())));
        assert!(!a.merge("k", LwwRecord::tombstone(t.clone())));
        assert_eq!(a.get("k", 0), Some(&Value::from("v")));
        // A later write resurrects the key; a later tombstone deletes it again.
        assert!(a.merge("k", rec("v", ts(11, 0, "n1"))));
        assert_eq!(a.get("k", 0), Some(&Value::from("v")));
        assert!(a.merge("k", LwwRecord::tombstone(ts(12, 0, "n0"))));
        assert_eq!(a.get("k", 0), None);
    }

    #[test]
    fn ttl_boundary() {
        let mut m = LwwMap::new();
        m.set("k", Value::Int(1), ts(1_000, 0, "n"), Some(500))
            .unwrap();
        assert_eq!(
            m.get("k", 1_500),
            Some(&Value::Int(1)),
            "visible at millis + ttl"
        );
        assert_eq!(m.get("k", 1_501), None, "hidden just after");
        assert_eq!(m.entries(1_501).count(), 0);
        assert!(
            m.record("k").is_some(),
            "expired records stay stored and hashed"
        );
        let near_max = LwwRecord::new(Value::Int(1), ts(u64::MAX - 1, 0, "n"), Some(10));
        assert!(
            !near_max.is_expired(u64::MAX),
            "no overflow at the end of time"
        );
    }

    #[test]
    fn merkle_tracks_every_change() {
        let mut m = LwwMap::new();
        m.set(
            "alice",
            Value::from("x"),
            ts(1_700_000_000_000, 0, "n1"),
            None,
        )
        .unwrap();
        assert_eq!(m.merkle().root(), 3_716_192_681);
        m.remove("alice", ts(1_700_000_000_001, 0, "n1")).unwrap();
        let mut tomb = MerkleTree::new();
        tomb.insert("alice", (), crate::hash::fnv1a("alice:1700000000001:0:n1"));
        assert_eq!(
            m.merkle().root(),
            tomb.root(),
            "tombstones hash like records"
        );
        m.prune(&ts(1_700_000_000_002, 0, "n1"));
        assert_eq!(m.merkle().root(), 0);
    }

    #[test]
    fn prune_forgets_only_old_tombstones() {
        let mut m = LwwMap::new();
        m.merge("old-tomb", LwwRecord::tombstone(ts(5, 0, "n")));
        m.merge("new-tomb", LwwRecord::tombstone(ts(20, 0, "n")));
        m.merge("old-live", rec(1, ts(5, 0, "n")));
        let pruned = m.prune(&ts(10, 0, "n"));
        assert_eq!(pruned, vec!["old-tomb".to_owned()]);
        assert!(m.record("old-tomb").is_none());
        assert!(m.record("new-tomb").is_some());
        assert!(m.record("old-live").is_some());
        assert_eq!(m.merkle().root(), m.merkle().recomputed_root());
    }
}
