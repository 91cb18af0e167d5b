//! Positive-negative counter (PROTOCOL.md §4.10).
//!
//! Each node only ever raises its own two totals: increments go to `p[node]`, decrements to
//! `n[node]`. Merging takes the per-node maximum of both maps, which is commutative,
//! associative and idempotent; the value is `Σp − Σn`.
//!
//! Totals are `f64` because that is what clients send and read. Every total is finite and
//! non-negative (checked on construction), and sums run in node-id order so replicas with
//! equal state report bit-identical values.

use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum CounterError {
    #[error("counter total for node {node:?} is {total}, not a finite non-negative number")]
    InvalidTotal { node: String, total: f64 },
    #[error("counter delta {0} is not a finite number")]
    InvalidDelta(f64),
    /// The totals are valid one by one but their sum is not a finite number.
    #[error("counter totals sum to a number that is not finite")]
    SumOverflow,
}

/// A PN-counter's full state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PnCounter {
    p: BTreeMap<String, f64>,
    n: BTreeMap<String, f64>,
}

fn check_totals(totals: &BTreeMap<String, f64>) -> Result<(), CounterError> {
    if let Some((node, total)) = totals.iter().find(|(_, t)| !t.is_finite() || **t < 0.0) {
        return Err(CounterError::InvalidTotal {
            node: node.clone(),
            total: *total,
        });
    }
    if !totals.values().sum::<f64>().is_finite() {
        return Err(CounterError::SumOverflow);
    }
    Ok(())
}

/// Raises `totals[node]` to at least `total`; returns whether it moved.
fn raise(totals: &mut BTreeMap<String, f64>, node: &str, total: f64) -> bool {
    match totals.get_mut(node) {
        Some(current) if *current >= total => false,
        Some(current) => {
            *current = total;
            true
        }
        None => {
            totals.insert(node.to_owned(), total);
            true
        }
    }
}

impl PnCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A counter from per-node totals, e.g. as decoded from the wire.
    pub fn from_parts(
        positive: BTreeMap<String, f64>,
        negative: BTreeMap<String, f64>,
    ) -> Result<Self, CounterError> {
        check_totals(&positive)?;
        check_totals(&negative)?;
        Ok(Self {
            p: positive,
            n: negative,
        })
    }

    /// Adds `delta` (positive or negative) on behalf of `node`.
    pub fn add(&mut self, node: &str, delta: f64) -> Result<f64, CounterError> {
        if !delta.is_finite() {
            return Err(CounterError::InvalidDelta(delta));
        }
        let totals = if delta >= 0.0 {
            &mut self.p
        } else {
            &mut self.n
        };
        let next = totals.get(node).copied().unwrap_or(0.0) + delta.abs();
        let sum = totals.values().sum::<f64>() + delta.abs();
        if !next.is_finite() || !sum.is_finite() {
            return Err(CounterError::InvalidDelta(delta));
        }
        totals.insert(node.to_owned(), next);
        Ok(self.value())
    }

    pub fn increment(&mut self, node: &str) -> f64 {
        self.add(node, 1.0).unwrap_or_else(|_| self.value())
    }

    pub fn decrement(&mut self, node: &str) -> f64 {
        self.add(node, -1.0).unwrap_or_else(|_| self.value())
    }

    /// Per-node maximum of both maps. Returns whether this counter changed; a merge whose
    /// sums would not be finite is refused and changes nothing.
    pub fn merge(&mut self, other: &Self) -> Result<bool, CounterError> {
        let (mut p, mut n) = (self.p.clone(), self.n.clone());
        let mut changed = false;
        for (node, total) in &other.p {
            changed |= raise(&mut p, node, *total);
        }
        for (node, total) in &other.n {
            changed |= raise(&mut n, node, *total);
        }
        check_totals(&p)?;
        check_totals(&n)?;
        self.p = p;
        self.n = n;
        Ok(changed)
    }

    /// `Σp − Σn`, summed in node-id order.
    pub fn value(&self) -> f64 {
        self.p.values().sum::<f64>() - self.n.values().sum::<f64>()
    }

    pub fn positive(&self) -> &BTreeMap<String, f64> {
        &self.p
    }

    pub fn negative(&self) -> &BTreeMap<String, f64> {
        &self.n
    }
}

#[cfg(test)]
// Totals here are small integers, exactly representable: exact comparison is the point.
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    #[test]
    fn add_and_value() {
        let mut c = PnCounter::new();
        assert_eq!(c.value(), 0.0);
        assert_eq!(c.increment("a"), 1.0);
        assert_eq!(c.add("a", 4.0), Ok(5.0));
        assert_eq!(c.add("b", -2.0), Ok(3.0));
        assert_eq!(c.decrement("a"), 2.0);
        assert_eq!(c.positive().get("a"), Some(&5.0));
        assert_eq!(c.negative().get("a"), Some(&1.0));
        assert!(matches!(c.add("a", f64::NAN), Err(CounterError::InvalidDelta(d)) if d.is_nan()));
        assert_eq!(c.value(), 2.0, "a refused delta changes nothing");
    }

    #[test]
    fn invalid_input_changes_nothing() {
        let mut c = PnCounter::new();
        c.add("a", 1.0).unwrap();
        assert!(matches!(
            c.add("a", f64::INFINITY),
            Err(CounterError::InvalidDelta(_))
        ));
        c.add("a", f64::MAX).unwrap();
        let before = c.clone();
        assert!(matches!(
            c.add("a", f64::MAX),
            Err(CounterError::InvalidDelta(_))
        ));
        assert_eq!(c, before, "an overflowing delta changes nothing");
        let bad = BTreeMap::from([("x".to_owned(), -1.0)]);
        assert_eq!(
            PnCounter::from_parts(bad, BTreeMap::new()),
            Err(CounterError::InvalidTotal {
                node: "x".into(),
                total: -1.0
            })
        );
    }

    #[test]
    fn sums_that_overflow_are_refused() {
        let huge = BTreeMap::from([("a".to_owned(), 1e308), ("b".to_owned(), 1e308)]);
        assert_eq!(
            PnCounter::from_parts(huge, BTreeMap::new()),
            Err(CounterError::SumOverflow)
        );
        let one = |node: &str| BTreeMap::from([(node.to_owned(), 1e308)]);
        let mut a = PnCounter::from_parts(one("a"), BTreeMap::new()).unwrap();
        let b = PnCounter::from_parts(one("b"), BTreeMap::new()).unwrap();
        let before = a.clone();
        assert_eq!(a.merge(&b), Err(CounterError::SumOverflow));
        assert_eq!(a, before, "a refused merge changes nothing");
        assert!(a.add("c", 1e308).is_err());
    }

    #[test]
    fn merge_takes_per_node_maximum() {
        let mut a = PnCounter::new();
        a.add("a", 3.0).unwrap();
        a.add("b", -1.0).unwrap();
        let mut b = PnCounter::new();
        b.add("a", 1.0).unwrap();
        b.add("c", 7.0).unwrap();
        assert!(a.merge(&b).unwrap());
        assert_eq!(a.value(), 3.0 + 7.0 - 1.0);
        assert!(!a.merge(&b).unwrap(), "idempotent");
        let mut b2 = b.clone();
        b2.merge(&a).unwrap();
        assert_eq!(a, b2);
    }
}
