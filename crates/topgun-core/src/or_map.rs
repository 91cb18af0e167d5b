//! Observed-remove multi-value map (PROTOCOL.md §2.3).
//!
//! Each key holds a set of records, each identified by a unique **tag** (the string form of
//! the add's timestamp), and a set of **tombstones** (tags of removed adds).
//!
//! Invariants:
//! * a record is present iff its tag is not tombstoned under its key; tombstones only grow
//!   (until [`OrMap::prune`]);
//! * two records with the same tag are the same add; the one with the greater timestamp
//!   wins (equal timestamps: the greater value, then TTL, in the canonical order), so every
//!   merge is commutative, associative and idempotent whatever the arrival order;
//! * the Merkle item hash of a key is the TS client's `hashORMapEntry` (§3.6): FNV-1a of
//!   `"key:<key>"` followed, for every record in tag order, by
//!   `"|<tag>:<valueStr>:<millis>:<counter>:<nodeId>"` and `":ttl=<ttl>"` when a TTL is set.
//!   Tombstones are not hashed; a key holding only tombstones has item hash 0, so it adds
//!   nothing to any hash but is still listed in its bucket and served to peers that walk to
//!   it (that is how they learn the tombstones).
//!
//! * [`OrMap::tombstone_bytes`] is the sum of the UTF-8 lengths of every tombstone tag held,
//!   kept as tags are added, pruned and forgotten (never by a scan): a server reports it.
//!
//! Tombstones are kept per key. The TS client keeps one set per map and attaches all of it
//! to every entry it pushes; [`OrMap::merge_key`] stores what it is given, so a server that
//! accepts such pushes should filter them (a tag only matters under the key that added it).

use std::collections::BTreeSet;

use thiserror::Error;

use crate::hash::Fnv1a;
use crate::hlc::Timestamp;
use crate::js::{cmp_utf16, hash_value_string};
use crate::merkle::{MerkleTree, Rehash};
use crate::value::Value;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrMapError {
    /// The add's tag is already present or tombstoned under the key: the timestamp was not
    /// fresh from this replica's HLC. Nothing changed.
    #[error("tag {tag:?} is already known under key {key:?}")]
    DuplicateTag { key: String, tag: String },
    #[error("TTL must be positive")]
    ZeroTtl,
}

/// One add of a value under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrRecord {
    pub value: Value,
    pub timestamp: Timestamp,
    /// Unique add identifier; the string form of the add's timestamp.
    pub tag: String,
    /// The record is hidden once `timestamp.millis + ttl_ms < now`.
    pub ttl_ms: Option<u64>,
}

impl OrRecord {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.ttl_ms
            .is_some_and(|ttl| self.timestamp.millis.saturating_add(ttl) < now_ms)
    }
}

/// The sync unit of an OR-Map: everything one replica knows about one key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrMapEntry {
    pub key: String,
    pub records: Vec<OrRecord>,
    pub tombstones: Vec<String>,
}

/// Records (sorted by tag in UTF-16 order, the order the entry hash needs), tombstones, and
/// the entry hash's FNV state after each record.
///
/// The entry hash is one FNV pass over all records in tag order, so a change at position `i`
/// re-hashes only records `i..`; tags are timestamps, so new adds usually land at the end and
/// cost one record's rendering, however many records the key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyState {
    records: Vec<OrRecord>,
    /// `hash_prefix[i]` = FNV state after `"key:<key>"` and records `0..=i`.
    hash_prefix: Vec<u32>,
    tombstones: BTreeSet<String>,
}

impl OrRecord {
    /// Whether this record replaces `other`, an earlier copy of the same add (same tag): the
    /// newer timestamp wins; equal timestamps are broken by value then TTL, so that every
    /// replica keeps the same record whatever the arrival order.
    fn supersedes(&self, other: &Self) -> bool {
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.value.canonical_cmp(&other.value))
            .then_with(|| self.ttl_ms.cmp(&other.ttl_ms))
            .is_gt()
    }

    /// Feeds `|<tag>:<valueStr>:<millis>:<counter>:<nodeId>[:ttl=<ttl>]` into `h`.
    fn hash_into(&self, h: &mut Fnv1a) {
        h.write_str("|");
        h.write_str(&self.tag);
        h.write_str(":");
        match &self.value {
            Value::Str(s) => h.write_str(s),
            other => h.write_str(&hash_value_string(other)),
        }
        h.write_str(":");
        self.timestamp.hash_into(h);
        if let Some(ttl) = self.ttl_ms {
            h.write_str(":ttl=");
            h.write_decimal(ttl);
        }
    }
}

impl KeyState {
    fn position(&self, tag: &str) -> Result<usize, usize> {
        self.records.binary_search_by(|r| cmp_utf16(&r.tag, tag))
    }

    /// Adds or upgrades a record unless its tag is tombstoned. Returns whether it changed.
    fn apply_record(&mut self, key: &str, record: OrRecord) -> bool {
        if self.tombstones.contains(&record.tag) {
            return false;
        }
        match self.position(&record.tag) {
            Ok(at) if record.supersedes(&self.records[at]) => {
                self.records[at] = record;
                self.rehash_from(key, at);
                true
            }
            Ok(_) => false,
            Err(at) => {
                self.records.insert(at, record);
                self.rehash_from(key, at);
                true
            }
        }
    }

    /// Tombstones a tag and drops its record. Returns whether it changed.
    fn apply_tombstone(&mut self, key: &str, tag: &str) -> bool {
        if self.tombstones.contains(tag) {
            return false;
        }
        if let Ok(at) = self.position(tag) {
            self.records.remove(at);
            self.rehash_from(key, at);
        }
        self.tombstones.insert(tag.to_owned());
        true
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.tombstones.is_empty()
    }

    /// The UTF-8 bytes of this key's tombstone tags (a scan: for a key being dropped).
    fn tombstone_bytes(&self) -> usize {
        self.tombstones.iter().map(String::len).sum()
    }

    /// Recomputes the FNV states of records `from..`.
    fn rehash_from(&mut self, key: &str, from: usize) {
        self.hash_prefix.truncate(from);
        let resumed = from.checked_sub(1).and_then(|i| self.hash_prefix.get(i));
        let mut h = if let Some(&state) = resumed {
            Fnv1a::resume(state)
        } else {
            let mut h = Fnv1a::new();
            h.write_str("key:");
            h.write_str(key);
            h
        };
        for record in &self.records[from..] {
            record.hash_into(&mut h);
            self.hash_prefix.push(h.finish());
        }
    }

    /// The TS client's `hashORMapEntry`; 0 when no record is held.
    fn item_hash(&self) -> u32 {
        self.hash_prefix.last().copied().unwrap_or(0)
    }
}

/// An observed-remove map with an incrementally maintained Merkle tree.
#[derive(Debug, Clone, Default)]
pub struct OrMap {
    tree: MerkleTree<KeyState>,
    /// UTF-8 bytes of every tombstone tag under every key: raised where a tag is inserted
    /// (each tag once, as the set refuses a second copy) and lowered where tags are pruned
    /// or a key is forgotten, so that reading it costs nothing.
    tombstone_bytes: usize,
}

impl OrMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys with records or tombstones.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Adds `value` under `key`, tagged with `timestamp` (fresh from this replica's HLC).
    pub fn add(
        &mut self,
        key: &str,
        value: Value,
        timestamp: Timestamp,
        ttl_ms: Option<u64>,
    ) -> Result<OrRecord, OrMapError> {
        if ttl_ms == Some(0) {
            return Err(OrMapError::ZeroTtl);
        }
        let tag = timestamp.to_string();
        if let Some(state) = self.tree.get(key)
            && (state.tombstones.contains(&tag) || state.position(&tag).is_ok())
        {
            return Err(OrMapError::DuplicateTag {
                key: key.to_owned(),
                tag,
            });
        }
        let record = OrRecord {
            value,
            timestamp,
            tag,
            ttl_ms,
        };
        self.update(key, |state| state.apply_record(key, record.clone()));
        Ok(record)
    }

    /// Removes every record under `key` whose value equals `value` (structurally);
    /// returns the tombstoned tags.
    pub fn remove(&mut self, key: &str, value: &Value) -> Vec<String> {
        let tags: Vec<String> = self
            .records(key)
            .iter()
            .filter(|r| r.value == *value)
            .map(|r| r.tag.clone())
            .collect();
        if !tags.is_empty() {
            let mut added = 0;
            self.update(key, |state| {
                for tag in &tags {
                    if state.apply_tombstone(key, tag) {
                        added += tag.len();
                    }
                }
                true
            });
            self.tombstone_bytes += added;
        }
        tags
    }

    /// Applies one remote add (an `OR_ADD` event). Returns whether the map changed.
    pub fn apply_record(&mut self, key: &str, record: OrRecord) -> bool {
        self.update(key, |state| state.apply_record(key, record))
    }

    /// Applies one remote removal of `tag` under `key` (an `OR_REMOVE` event).
    pub fn apply_tombstone(&mut self, key: &str, tag: &str) -> bool {
        let added = self.update(key, |state| state.apply_tombstone(key, tag));
        if added {
            self.tombstone_bytes += tag.len();
        }
        added
    }

    /// Merges a peer's entry: tombstones first (dropping tombstoned records), then every
    /// record not tombstoned (new tags added, known tags upgraded to newer timestamps).
    pub fn merge_key(&mut self, entry: OrMapEntry) -> bool {
        let key = entry.key.as_str();
        let mut added = 0;
        let changed = self.update(key, |state| {
            let mut changed = false;
            for tag in &entry.tombstones {
                if state.apply_tombstone(key, tag) {
                    added += tag.len();
                    changed = true;
                }
            }
            for record in entry.records {
                changed |= state.apply_record(key, record);
            }
            changed
        });
        self.tombstone_bytes += added;
        changed
    }

    /// Runs `f` on the key's state in place and re-hashes the key if `f` reports a change.
    fn update(&mut self, key: &str, f: impl FnOnce(&mut KeyState) -> bool) -> bool {
        self.tree.update_with(key, |state| {
            if !f(state) {
                Rehash::Unchanged
            } else if state.is_empty() {
                Rehash::Remove
            } else {
                Rehash::Changed(state.item_hash())
            }
        })
    }

    /// The values visible under `key` at `now_ms`, in tag order.
    pub fn get(&self, key: &str, now_ms: u64) -> Vec<&Value> {
        self.records(key)
            .iter()
            .filter(|r| !r.is_expired(now_ms))
            .map(|r| &r.value)
            .collect()
    }

    /// Every record held under `key` (expired ones included), in tag order.
    pub fn records(&self, key: &str) -> &[OrRecord] {
        self.tree.get(key).map_or(&[], |s| s.records.as_slice())
    }

    /// The tombstoned tags under `key`, sorted.
    pub fn tombstones(&self, key: &str) -> impl Iterator<Item = &str> {
        self.tree
            .get(key)
            .into_iter()
            .flat_map(|s| s.tombstones.iter().map(String::as_str))
    }

    /// Drops everything known about a key: replaying a prune recorded elsewhere.
    pub fn forget(&mut self, key: &str) -> bool {
        let Some(state) = self.tree.remove(key) else {
            return false;
        };
        self.tombstone_bytes -= state.tombstone_bytes();
        true
    }

    /// The UTF-8 bytes of every tombstone tag this map holds (each tag once per key).
    pub fn tombstone_bytes(&self) -> usize {
        self.tombstone_bytes
    }

    /// Everything known about `key`, as a sync entry (`None` for an unknown key).
    pub fn entry(&self, key: &str) -> Option<OrMapEntry> {
        self.tree.get(key).map(|s| OrMapEntry {
            key: key.to_owned(),
            records: s.records.clone(),
            tombstones: s.tombstones.iter().cloned().collect(),
        })
    }

    /// Every key with records or tombstones.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tree.iter().map(|(k, _)| k)
    }

    /// Forgets tombstones whose tag parses as a timestamp older than `older_than`; returns
    /// them as `(key, tag)`. Tags that are not timestamps are kept. Only safe once every
    /// replica has seen those tombstones.
    pub fn prune(&mut self, older_than: &Timestamp) -> Vec<(String, String)> {
        let is_old = |tag: &str| tag.parse::<Timestamp>().is_ok_and(|ts| ts < *older_than);
        let keys: Vec<String> = self
            .tree
            .iter()
            .filter(|(_, s)| s.tombstones.iter().any(|t| is_old(t)))
            .map(|(k, _)| k.to_owned())
            .collect();
        let mut pruned = Vec::new();
        let mut dropped = 0;
        for key in keys {
            self.update(&key, |state| {
                state.tombstones.retain(|t| {
                    let old = is_old(t);
                    if old {
                        dropped += t.len();
                        pruned.push((key.clone(), t.clone()));
                    }
                    !old
                });
                true
            });
        }
        self.tombstone_bytes -= dropped;
        pruned
    }

    /// The Merkle tree over this map's keys.
    pub fn merkle(&self) -> &MerkleTree<impl Sized> {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::fnv1a;
    use crate::hlc::NodeId;
    use crate::value::ValueMap;

    fn ts(millis: u64, counter: u32, node: &str) -> Timestamp {
        Timestamp::new(millis, counter, NodeId::new(node).unwrap())
    }

    fn record(value: impl Into<Value>, t: Timestamp) -> OrRecord {
        OrRecord {
            value: value.into(),
            tag: t.to_string(),
            timestamp: t,
            ttl_ms: None,
        }
    }

    #[test]
    fn add_get_remove() {
        let mut m = OrMap::new();
        m.add("k", Value::from("a"), ts(1, 0, "n"), None).unwrap();
        m.add("k", Value::from("b"), ts(2, 0, "n"), None).unwrap();
        m.add("k", Value::from("a"), ts(3, 0, "n"), None).unwrap();
        assert_eq!(m.get("k", 0).len(), 3);
        let removed = m.remove("k", &Value::from("a"));
        assert_eq!(removed, vec!["1:0:n".to_owned(), "3:0:n".to_owned()]);
        assert_eq!(m.get("k", 0), vec![&Value::from("b")]);
        assert_eq!(m.tombstones("k").collect::<Vec<_>>(), ["1:0:n", "3:0:n"]);
        assert!(m.remove("k", &Value::from("zzz")).is_empty());
    }

    #[test]
    fn duplicate_tags_are_refused() {
        let mut m = OrMap::new();
        m.add("k", Value::Int(1), ts(1, 0, "n"), None).unwrap();
        assert!(matches!(
            m.add("k", Value::Int(2), ts(1, 0, "n"), None),
            Err(OrMapError::DuplicateTag { .. })
        ));
        m.remove("k", &Value::Int(1));
        assert!(matches!(
            m.add("k", Value::Int(3), ts(1, 0, "n"), None),
            Err(OrMapError::DuplicateTag { .. })
        ));
        assert_eq!(
            m.add("k", Value::Int(3), ts(1, 0, "n"), Some(0)),
            Err(OrMapError::ZeroTtl)
        );
    }

    #[test]
    fn concurrent_add_survives_remove_of_observed_tags() {
        // Replica A removes "x" having observed only tag t1; B concurrently re-adds "x" (t2).
        let t1 = ts(1, 0, "a");
        let t2 = ts(2, 0, "b");
        let mut a = OrMap::new();
        a.apply_record("k", record("x", t1.clone()));
        a.remove("k", &Value::from("x"));
        let mut b = OrMap::new();
        b.apply_record("k", record("x", t1));
        b.apply_record("k", record("x", t2));
        a.merge_key(b.entry("k").unwrap());
        b.merge_key(a.entry("k").unwrap());
        assert_eq!(a.get("k", 0), vec![&Value::from("x")]);
        assert_eq!(a.entry("k"), b.entry("k"));
        assert_eq!(a.merkle().root(), b.merkle().root());
    }

    #[test]
    fn same_tag_upgrades_to_newer_timestamp_only() {
        let mut m = OrMap::new();
        let mut r = record("v1", ts(5, 0, "n"));
        assert!(m.apply_record("k", r.clone()));
        assert!(!m.apply_record("k", r.clone()), "idempotent");
        r.value = Value::from("v2");
        r.timestamp = ts(6, 0, "n");
        assert!(m.apply_record("k", r.clone()));
        r.value = Value::from("old");
        r.timestamp = ts(4, 0, "n");
        assert!(!m.apply_record("k", r));
        assert_eq!(m.get("k", 0), vec![&Value::from("v2")]);
    }

    #[test]
    fn same_tag_and_timestamp_converge_whatever_the_order() {
        let t = ts(5, 0, "n");
        let a = record("a", t.clone());
        let b = record("b", t);
        let mut first = OrMap::new();
        first.apply_record("k", a.clone());
        first.apply_record("k", b.clone());
        let mut second = OrMap::new();
        second.apply_record("k", b);
        second.apply_record("k", a);
        assert_eq!(first.entry("k"), second.entry("k"));
        assert_eq!(first.get("k", 0), vec![&Value::from("b")]);
        assert_eq!(first.merkle().root(), second.merkle().root());
    }

    /// The cached per-record hash states give the same entry hash as hashing from scratch,
    /// whatever the order of inserts and removals.
    #[test]
    fn cached_hash_states_match_a_fresh_hash() {
        let mut m = OrMap::new();
        for i in [5u64, 1, 9, 3, 7] {
            m.apply_record(
                "k",
                record(Value::Int(i64::try_from(i).unwrap()), ts(i, 0, "n")),
            );
        }
        m.apply_tombstone("k", "3:0:n");
        m.apply_tombstone("k", "9:0:n");
        let mut fresh = OrMap::new();
        for i in [1u64, 5, 7] {
            fresh.apply_record(
                "k",
                record(Value::Int(i64::try_from(i).unwrap()), ts(i, 0, "n")),
            );
        }
        fresh.apply_tombstone("k", "3:0:n");
        fresh.apply_tombstone("k", "9:0:n");
        assert_eq!(m.merkle().root(), fresh.merkle().root());
        let mut expected = Fnv1a::new();
        expected.write_str("key:k");
        for r in m.records("k") {
            r.hash_into(&mut expected);
        }
        let mut tree = MerkleTree::new();
        tree.insert("k", (), expected.finish());
        assert_eq!(m.merkle().root(), tree.root());
    }

    #[test]
    fn tombstone_before_record_blocks_it() {
        let mut m = OrMap::new();
        let r = record("x", ts(1, 0, "n"));
        assert!(m.apply_tombstone("k", &r.tag));
        assert!(!m.apply_record("k", r));
        assert!(m.get("k", 0).is_empty());
        assert_eq!(m.merkle().root(), 0, "tombstone-only keys hash to nothing");
        assert_eq!(m.merkle().buckets("").unwrap().len(), 1, "but are listed");
    }

    #[test]
    fn ttl_hides_but_still_hashes() {
        let mut m = OrMap::new();
        m.add("k", Value::Int(1), ts(1_000, 0, "n"), Some(10))
            .unwrap();
        assert_eq!(m.get("k", 1_010).len(), 1);
        assert!(m.get("k", 1_011).is_empty());
        assert_ne!(m.merkle().root(), 0);
    }

    /// The TS client's entry-hash string for a known entry, built by hand.
    #[test]
    fn entry_hash_matches_the_ts_formula() {
        let mut m = OrMap::new();
        let obj: ValueMap = [("b", Value::Int(1)), ("a", Value::Float(2.5))]
            .into_iter()
            .collect();
        m.apply_record(
            "k",
            record(Value::Map(obj), ts(1_700_000_000_001, 0, "node-2")),
        );
        let mut with_ttl = record("alice", ts(1_700_000_000_000, 1, "node-1"));
        with_ttl.ttl_ms = Some(5_000);
        m.apply_record("k", with_ttl);
        m.apply_record("k", record(Value::Nil, ts(1_700_000_000_002, 0, "node-1")));
        let expected = fnv1a(concat!(
            "key:k",
            "|1700000000000:1:node-1:alice:1700000000000:1:node-1:ttl=5000",
            "|1700000000001:0:node-2:{\"a\":2.5,\"b\":1}:1700000000001:0:node-2",
            "|1700000000002:0:node-1:null:1700000000002:0:node-1",
        ));
        let mut tree = MerkleTree::new();
        tree.insert("k", (), expected);
        assert_eq!(m.merkle().root(), tree.root());
    }

    /// A tag counts once however often it is tombstoned, and stops counting when pruned or
    /// forgotten.
    #[test]
    fn tombstone_bytes_follow_the_tags_held() {
        let mut m = OrMap::new();
        m.add("k", Value::from("a"), ts(1, 0, "n"), None).unwrap();
        m.add("k", Value::from("a"), ts(22, 0, "n"), None).unwrap();
        assert_eq!(m.tombstone_bytes(), 0);
        m.remove("k", &Value::from("a"));
        assert_eq!(m.tombstone_bytes(), "1:0:n".len() + "22:0:n".len());
        assert!(!m.apply_tombstone("k", "1:0:n"), "known already");
        let entry = OrMapEntry {
            key: "other".into(),
            records: vec![],
            tombstones: vec!["3:0:n".into(), "1:0:n".into()],
        };
        m.merge_key(entry.clone());
        m.merge_key(entry);
        assert_eq!(m.tombstone_bytes(), 11 + 10, "a tag counts once per key");
        m.prune(&ts(2, 0, "n"));
        assert_eq!(m.tombstone_bytes(), "22:0:n".len() + "3:0:n".len());
        assert!(m.forget("other"));
        assert_eq!(m.tombstone_bytes(), "22:0:n".len());
    }

    #[test]
    fn prune_forgets_old_tombstones_and_empty_keys() {
        let mut m = OrMap::new();
        m.apply_tombstone("gone", "5:0:n");
        m.apply_tombstone("kept", "20:0:n");
        m.apply_tombstone("kept", "not-a-timestamp");
        m.add("live", Value::Int(1), ts(1, 0, "n"), None).unwrap();
        m.apply_tombstone("live", "2:0:n");
        let mut pruned = m.prune(&ts(10, 0, "n"));
        pruned.sort();
        let pair = |k: &str, t: &str| (k.to_owned(), t.to_owned());
        assert_eq!(pruned, vec![pair("gone", "5:0:n"), pair("live", "2:0:n")]);
        assert!(m.entry("gone").is_none());
        assert_eq!(m.tombstones("kept").count(), 2);
        assert_eq!(m.get("live", 0).len(), 1);
        assert_eq!(m.merkle().root(), m.merkle().recomputed_root());
    }
}
