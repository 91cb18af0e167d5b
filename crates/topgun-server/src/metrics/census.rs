//! `topgun_maps`: how many maps hold at least one key on this node, LWW and OR maps of one
//! name counted once, the server's reserved maps never.
//!
//! A map's keys are spread over the shards, so per-shard counts cannot be added up: a name
//! held by three shards would count three times. Instead each shard reports when a name
//! starts or stops holding keys *in that shard* (see `data/shard/tally.rs`), and the census
//! counts, per name, the shards holding it: the name counts while that is above zero. Those
//! reports come once per map and shard as it appears or empties, not once per write, so the
//! lock they take is off the write path; a scrape reads one atomic.
//!
//! Invariant: `maps` = the number of entries of `holders` (each above zero).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct MapCensus {
    /// Map name → how many shards hold a key of it. std Mutex: held for one map update,
    /// never across an `.await`.
    holders: Mutex<HashMap<String, usize>>,
    maps: AtomicU64,
}

impl MapCensus {
    /// A shard holds `map`'s first key.
    pub fn appeared(&self, map: String) {
        let mut holders = self
            .holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shards = holders.entry(map).or_insert(0);
        *shards += 1;
        if *shards == 1 {
            self.maps.fetch_add(1, Ordering::Relaxed);
        }
        debug_assert_eq!(holders.len() as u64, self.maps.load(Ordering::Relaxed));
    }

    /// A shard no longer holds any key of `map`.
    pub fn emptied(&self, map: &str) {
        let mut holders = self
            .holders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(shards) = holders.get_mut(map) else {
            debug_assert!(false, "{map:?} emptied from a shard that never held it");
            return;
        };
        *shards -= 1;
        if *shards == 0 {
            holders.remove(map);
            self.maps.fetch_sub(1, Ordering::Relaxed);
        }
        debug_assert_eq!(holders.len() as u64, self.maps.load(Ordering::Relaxed));
    }

    /// Maps holding at least one key.
    pub fn count(&self) -> u64 {
        self.maps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_counts_once_while_any_shard_holds_it() {
        let census = MapCensus::default();
        census.appeared("a".into());
        census.appeared("a".into());
        census.appeared("b".into());
        assert_eq!(census.count(), 2);
        census.emptied("a");
        assert_eq!(census.count(), 2, "another shard still holds a");
        census.emptied("a");
        assert_eq!(census.count(), 1);
    }
}
