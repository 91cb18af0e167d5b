//! The incrementally maintained Merkle tree always equals a rebuild from scratch, its
//! buckets are consistent with their parents, and `diff` finds exactly the differing leaves.

// Test code: a panic is a test failure, and casts apply to small generated numbers.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use proptest::prelude::*;
use topgun_core::MerkleTree;
use topgun_core::hash::{combine, fnv1a, routing_path};
use topgun_core::merkle::Rehash;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    Remove(u16),
    /// `insert_if`: insert value `v` (hash derived from it), replacing only a smaller value.
    InsertIfLarger(u16, u16),
    /// `update_with`: add to the value, rehash, or remove when it reaches a multiple of 5.
    Update(u16, u16),
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0u16..300, any::<u32>()).prop_map(|(k, h)| Op::Insert(k, h)),
        1 => (0u16..300).prop_map(Op::Remove),
        2 => (0u16..300, any::<u16>()).prop_map(|(k, v)| Op::InsertIfLarger(k, v)),
        2 => (0u16..300, 0u16..7).prop_map(|(k, d)| Op::Update(k, d)),
    ];
    prop::collection::vec(op, 0..300)
}

fn build(ops: &[Op]) -> MerkleTree<u16> {
    let mut t = MerkleTree::new();
    for op in ops {
        match *op {
            Op::Insert(k, h) => {
                t.insert(&format!("key-{k}"), k, h);
            }
            Op::Remove(k) => {
                t.remove(&format!("key-{k}"));
            }
            Op::InsertIfLarger(k, v) => {
                // Item hashes cover the key, as real ones do (the same hash under two keys
                // is a collision that Merkle comparison cannot see).
                let hash = fnv1a(&format!("key-{k}:{v}"));
                t.insert_if(&format!("key-{k}"), v, hash, |stored, new| new > stored);
            }
            Op::Update(k, d) => {
                t.update_with(&format!("key-{k}"), |v| {
                    *v = v.wrapping_add(d);
                    if d == 0 {
                        Rehash::Unchanged
                    } else if v.is_multiple_of(5) {
                        Rehash::Remove
                    } else {
                        Rehash::Changed(fnv1a(&format!("key-{k}:{v}")))
                    }
                });
            }
        }
    }
    t
}

const HEX: &str = "0123456789abcdef";

fn all_paths(depth: usize) -> Vec<String> {
    (0..depth).fold(vec![String::new()], |paths, _| {
        paths
            .iter()
            .flat_map(|p| HEX.chars().map(move |c| format!("{p}{c}")))
            .collect()
    })
}

proptest! {
    #[test]
    fn incremental_root_equals_rebuild(ops in arb_ops()) {
        let t = build(&ops);
        prop_assert_eq!(t.root(), t.recomputed_root());
        // The same final content inserted in one go gives the same root.
        let mut fresh = MerkleTree::new();
        for (k, v) in t.iter() {
            let (_, h) = t.get_with_hash(k).unwrap();
            fresh.insert(k, *v, h);
        }
        prop_assert_eq!(fresh.root(), t.root());
        prop_assert_eq!(fresh.len(), t.len());
    }

    #[test]
    fn buckets_are_consistent_with_parents(ops in arb_ops()) {
        let t = build(&ops);
        for depth in 0..3 {
            for path in all_paths(depth) {
                let children = t.buckets(&path).unwrap();
                prop_assert_eq!(t.node_hash(&path).unwrap(), combine(children.iter().map(|c| c.1)));
                for (digit, hash) in children {
                    prop_assert_eq!(t.node_hash(&format!("{path}{digit}")).unwrap(), hash);
                }
            }
        }
        for (key, _) in t.iter() {
            let leaf = &routing_path(key)[..3];
            prop_assert!(t.keys_in_bucket(leaf).unwrap().contains(&key));
        }
    }

    #[test]
    fn diff_finds_exactly_the_differing_leaves(a in arb_ops(), b in arb_ops()) {
        let (ta, tb) = (build(&a), build(&b));
        let expected: Vec<String> = all_paths(3)
            .into_iter()
            .filter(|p| ta.node_hash(p).unwrap() != tb.node_hash(p).unwrap())
            .collect();
        prop_assert_eq!(ta.diff(&tb), expected);
    }
}
