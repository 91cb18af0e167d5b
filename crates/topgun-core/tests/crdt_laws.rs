//! Merge laws of every CRDT: commutative, associative, idempotent — on state *and* on the
//! Merkle root, which must also equal a from-scratch rebuild.

// Test code: a panic is a test failure, and casts apply to small generated numbers.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

mod common;

use common::*;
use proptest::prelude::*;
use topgun_core::PnCounter;

fn lww_merged(a: &topgun_core::LwwMap, b: &topgun_core::LwwMap) -> topgun_core::LwwMap {
    let mut out = a.clone();
    merge_lww(&mut out, b);
    out
}

fn or_merged(a: &topgun_core::OrMap, b: &topgun_core::OrMap) -> topgun_core::OrMap {
    let mut out = a.clone();
    merge_or(&mut out, b);
    out
}

fn pn_merged(a: &PnCounter, b: &PnCounter) -> PnCounter {
    let mut out = a.clone();
    out.merge(b).unwrap();
    out
}

fn arb_pn() -> impl Strategy<Value = PnCounter> {
    let deltas = prop::collection::vec((0usize..NODES.len(), -5i32..6), 0..10);
    deltas.prop_map(|ds| {
        let mut c = PnCounter::new();
        for (n, d) in ds {
            c.add(NODES[n], f64::from(d)).unwrap();
        }
        c
    })
}

/// LWW maps whose writes may reuse a timestamp with different contents (a faulty or
/// malicious client): the canonical tie-break must still make merges commutative.
fn arb_conflicting_lww_map() -> impl Strategy<Value = topgun_core::LwwMap> {
    prop::collection::vec((arb_key(), arb_timestamp(), 0u8..3), 0..12).prop_map(|writes| {
        let mut m = topgun_core::LwwMap::new();
        for (k, t, v) in writes {
            m.merge(
                &k,
                topgun_core::LwwRecord::new(topgun_core::Value::from(format!("c{v}")), t, None),
            );
        }
        m
    })
}

fn arb_conflicting_or_map() -> impl Strategy<Value = topgun_core::OrMap> {
    prop::collection::vec((arb_key(), arb_timestamp(), 0u8..3), 0..12).prop_map(|adds| {
        let mut m = topgun_core::OrMap::new();
        for (k, t, v) in adds {
            let mut r = or_record(t);
            r.value = topgun_core::Value::from(format!("c{v}"));
            m.apply_record(&k, r);
        }
        m
    })
}

proptest! {
    #[test]
    fn lww_merge_commutes_even_with_conflicting_contents(a in arb_conflicting_lww_map(), b in arb_conflicting_lww_map()) {
        prop_assert_eq!(lww_state(&lww_merged(&a, &b)), lww_state(&lww_merged(&b, &a)));
    }

    #[test]
    fn or_merge_commutes_even_with_conflicting_contents(a in arb_conflicting_or_map(), b in arb_conflicting_or_map()) {
        let (ab, ba) = (or_merged(&a, &b), or_merged(&b, &a));
        prop_assert_eq!(or_state(&ab), or_state(&ba));
        prop_assert_eq!(ab.merkle().root(), ba.merkle().root());
    }

    #[test]
    fn lww_merge_is_commutative(a in arb_lww_map(), b in arb_lww_map()) {
        let ab = lww_merged(&a, &b);
        let ba = lww_merged(&b, &a);
        prop_assert_eq!(lww_state(&ab), lww_state(&ba));
        prop_assert_eq!(ab.merkle().root(), ba.merkle().root());
        prop_assert_eq!(ab.merkle().root(), ab.merkle().recomputed_root());
    }

    #[test]
    fn lww_merge_is_associative(a in arb_lww_map(), b in arb_lww_map(), c in arb_lww_map()) {
        let left = lww_merged(&lww_merged(&a, &b), &c);
        let right = lww_merged(&a, &lww_merged(&b, &c));
        prop_assert_eq!(lww_state(&left), lww_state(&right));
        prop_assert_eq!(left.merkle().root(), right.merkle().root());
    }

    #[test]
    fn lww_merge_is_idempotent(a in arb_lww_map(), b in arb_lww_map()) {
        let once = lww_merged(&a, &b);
        let twice = lww_merged(&once, &b);
        prop_assert_eq!(lww_state(&once), lww_state(&twice));
        prop_assert_eq!(lww_state(&lww_merged(&a, &a)), lww_state(&a));
    }

    #[test]
    fn or_merge_is_commutative(a in arb_or_map(), b in arb_or_map()) {
        let ab = or_merged(&a, &b);
        let ba = or_merged(&b, &a);
        prop_assert_eq!(or_state(&ab), or_state(&ba));
        prop_assert_eq!(ab.merkle().root(), ba.merkle().root());
        prop_assert_eq!(ab.merkle().root(), ab.merkle().recomputed_root());
    }

    #[test]
    fn or_merge_is_associative(a in arb_or_map(), b in arb_or_map(), c in arb_or_map()) {
        let left = or_merged(&or_merged(&a, &b), &c);
        let right = or_merged(&a, &or_merged(&b, &c));
        prop_assert_eq!(or_state(&left), or_state(&right));
        prop_assert_eq!(left.merkle().root(), right.merkle().root());
    }

    #[test]
    fn or_merge_is_idempotent(a in arb_or_map(), b in arb_or_map()) {
        let once = or_merged(&a, &b);
        let twice = or_merged(&once, &b);
        prop_assert_eq!(or_state(&once), or_state(&twice));
        prop_assert_eq!(or_state(&or_merged(&a, &a)), or_state(&a));
    }

    /// The incrementally kept tombstone byte count equals a scan of the tags, through merges,
    /// a prune and forgetting a key.
    #[test]
    fn or_tombstone_bytes_match_a_scan(a in arb_or_map(), b in arb_or_map(), horizon in arb_timestamp()) {
        let scanned = |m: &topgun_core::OrMap| -> usize {
            m.keys().flat_map(|k| m.tombstones(k)).map(str::len).sum()
        };
        let mut merged = or_merged(&a, &b);
        prop_assert_eq!(merged.tombstone_bytes(), scanned(&merged));
        merged.prune(&horizon);
        prop_assert_eq!(merged.tombstone_bytes(), scanned(&merged));
        merged.forget("a");
        prop_assert_eq!(merged.tombstone_bytes(), scanned(&merged));
    }

    #[test]
    fn pn_merge_laws(a in arb_pn(), b in arb_pn(), c in arb_pn()) {
        prop_assert_eq!(pn_merged(&a, &b), pn_merged(&b, &a));
        prop_assert_eq!(pn_merged(&pn_merged(&a, &b), &c), pn_merged(&a, &pn_merged(&b, &c)));
        prop_assert_eq!(pn_merged(&pn_merged(&a, &b), &b), pn_merged(&a, &b));
        prop_assert_eq!(pn_merged(&a, &a), a.clone());
        // A merge never loses an increment or a decrement: it dominates both inputs per node.
        let m = pn_merged(&a, &b);
        for side in [&a, &b] {
            for (node, total) in side.positive() {
                prop_assert!(m.positive()[node] >= *total);
            }
            for (node, total) in side.negative() {
                prop_assert!(m.negative()[node] >= *total);
            }
        }
    }
}
