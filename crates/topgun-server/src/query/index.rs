//! One map's live-query subscriptions, indexed by the equality their filters require.

use std::collections::{HashMap, HashSet};

use topgun_core::value::Value;

/// The subscriptions of one map, indexed so that a change costs only the subscriptions it
/// can concern: those whose required field value it has, those that hold its key (they must
/// hear that it left), those no index applies to, and those still loading (they buffer all).
#[derive(Debug, Default)]
pub(super) struct MapSubs {
    /// Field → the value's [`index_key`] → subscriptions requiring it.
    pub(super) by_equality: HashMap<String, HashMap<String, Vec<u64>>>,
    /// Where each subscription is indexed (`None`: not indexed).
    pub(super) index_of: HashMap<u64, Option<(String, String)>>,
    pub(super) unindexed: HashSet<u64>,
    pub(super) loading: HashSet<u64>,
    pub(super) holders: HashMap<String, HashSet<u64>>,
}

impl MapSubs {
    pub(super) fn add(&mut self, id: u64, equality: Option<(String, String)>) {
        match &equality {
            Some((field, value)) => self
                .by_equality
                .entry(field.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(id),
            None => {
                self.unindexed.insert(id);
            }
        }
        self.index_of.insert(id, equality);
        self.loading.insert(id);
    }

    /// The snapshot is in: from now on the subscription hears of what it holds or matches.
    pub(super) fn loaded<'a>(&mut self, id: u64, keys: impl Iterator<Item = &'a str>) {
        self.loading.remove(&id);
        for key in keys {
            self.hold(key, id, true);
        }
    }

    pub(super) fn hold(&mut self, key: &str, id: u64, holds: bool) {
        if holds {
            self.holders.entry(key.to_owned()).or_default().insert(id);
        } else if let Some(ids) = self.holders.get_mut(key) {
            ids.remove(&id);
            if ids.is_empty() {
                self.holders.remove(key);
            }
        }
    }

    pub(super) fn remove<'a>(&mut self, id: u64, keys: impl Iterator<Item = &'a str>) {
        if let Some(Some((field, value))) = self.index_of.remove(&id)
            && let Some(values) = self.by_equality.get_mut(&field)
        {
            if let Some(ids) = values.get_mut(&value) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    values.remove(&value);
                }
            }
            if values.is_empty() {
                self.by_equality.remove(&field);
            }
        }
        self.unindexed.remove(&id);
        self.loading.remove(&id);
        for key in keys {
            self.hold(key, id, false);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index_of.is_empty()
    }

    /// The subscriptions a change of `key` to `value` can concern, in subscription order.
    pub(super) fn candidates(&self, key: &str, value: Option<&Value>) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .unindexed
            .iter()
            .chain(&self.loading)
            .copied()
            .collect();
        if let Some(holders) = self.holders.get(key) {
            ids.extend(holders);
        }
        if let Some(value) = value {
            for (field, values) in &self.by_equality {
                let have = value.get(field).unwrap_or(&Value::Nil);
                if let Some(matching) = values.get(&index_key(have)) {
                    ids.extend(matching);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// An equality index's key for a value: JavaScript's `String` rendering (objects as sorted
/// JSON). Values equal as numbers render alike; the few distinct values that also do (`3`
/// and `"3"`) only make a candidate more, as the filter still decides.
pub(super) fn index_key(value: &Value) -> String {
    topgun_core::js::hash_value_string(value)
}
