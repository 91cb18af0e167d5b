//! Shared test helpers: strategies for CRDT states and a tiny seeded PRNG.
#![allow(dead_code, unreachable_pub)]

use proptest::prelude::*;
use topgun_core::{LwwMap, LwwRecord, NodeId, OrMap, OrMapEntry, OrRecord, Timestamp, Value};

pub const NODES: [&str; 3] = ["n1", "n2", "n3"];

pub fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

pub fn ts(millis: u64, counter: u32, node_id: &str) -> Timestamp {
    Timestamp::new(millis, counter, node(node_id))
}

/// A timestamp from a small space, so that keys collide and ties happen.
pub fn arb_timestamp() -> impl Strategy<Value = Timestamp> {
    (0u64..6, 0u32..3, 0usize..NODES.len()).prop_map(|(m, c, n)| ts(m, c, NODES[n]))
}

/// Two writes with the same timestamp are the same write, so the value is derived from it
/// (and some are tombstones).
pub fn value_of(t: &Timestamp) -> Value {
    if (t.millis + u64::from(t.counter)).is_multiple_of(4) {
        Value::Nil
    } else {
        Value::from(format!("v{t}"))
    }
}

pub fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "alice", "bob"]).prop_map(str::to_owned)
}

pub fn arb_lww_map() -> impl Strategy<Value = LwwMap> {
    prop::collection::vec((arb_key(), arb_timestamp()), 0..12).prop_map(|writes| {
        let mut m = LwwMap::new();
        for (k, t) in writes {
            m.merge(&k, LwwRecord::new(value_of(&t), t, None));
        }
        m
    })
}

pub fn or_record(t: Timestamp) -> OrRecord {
    OrRecord {
        value: Value::from(format!("v{}", t.millis % 3)),
        tag: t.to_string(),
        timestamp: t,
        ttl_ms: None,
    }
}

/// An OR-Map built from adds and removals of tags from a small tag space.
pub fn arb_or_map() -> impl Strategy<Value = OrMap> {
    let op = (arb_key(), arb_timestamp(), any::<bool>());
    prop::collection::vec(op, 0..12).prop_map(|ops| {
        let mut m = OrMap::new();
        for (k, t, is_remove) in ops {
            if is_remove {
                m.apply_tombstone(&k, &t.to_string());
            } else {
                m.apply_record(&k, or_record(t));
            }
        }
        m
    })
}

/// Merges every record of `from` into `into`.
pub fn merge_lww(into: &mut LwwMap, from: &LwwMap) {
    for (k, r) in from.records() {
        into.merge(k, r.clone());
    }
}

pub fn merge_or(into: &mut OrMap, from: &OrMap) {
    for entry in or_entries(from) {
        into.merge_key(entry);
    }
}

pub fn or_entries(m: &OrMap) -> Vec<OrMapEntry> {
    m.keys().filter_map(|k| m.entry(k)).collect()
}

/// The full state of an LWW map, sorted, for equality checks.
pub fn lww_state(m: &LwwMap) -> Vec<(String, LwwRecord)> {
    let mut s: Vec<_> = m
        .records()
        .map(|(k, r)| (k.to_owned(), r.clone()))
        .collect();
    s.sort_by(|a, b| a.0.cmp(&b.0));
    s
}

pub fn or_state(m: &OrMap) -> Vec<OrMapEntry> {
    let mut s = or_entries(m);
    s.sort_by(|a, b| a.key.cmp(&b.key));
    s
}

/// `SplitMix64`: a seeded generator small enough to reason about, for simulation harnesses.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// The seeds a harness runs: `TOPGUN_SEED=<n>` replays one, otherwise `count` fixed ones.
pub fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("TOPGUN_SEED") {
        Ok(s) => vec![s.parse().expect("TOPGUN_SEED must be a u64")],
        Err(_) => (1..=count).collect(),
    }
}
