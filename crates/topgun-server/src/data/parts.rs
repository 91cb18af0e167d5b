//! Sets of partitions: which of the 271 a cluster member owns, and which a shard holds
//! records of. A member answers a read for the partitions it owns only, so that the parts
//! gathered from every member add up to the map once, even while a member still holds
//! records of a partition it gave away.

use topgun_core::hash::{PARTITION_COUNT, partition_id};

const WORDS: usize = (PARTITION_COUNT as usize).div_ceil(64);

/// A set of partition ids, as a bitset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PartSet([u64; WORDS]);

/// The bytes of a [`PartSet`] on the wire.
pub const PART_SET_BYTES: usize = WORDS * 8;

impl PartSet {
    /// Every partition.
    pub fn all() -> Self {
        let mut set = Self::default();
        for pid in 0..PARTITION_COUNT {
            set.insert(pid);
        }
        set
    }

    /// Adds `pid` (ignored past the last partition).
    pub fn insert(&mut self, pid: u32) {
        if pid < PARTITION_COUNT {
            self.0[pid as usize / 64] |= 1 << (pid % 64);
        }
    }

    pub fn contains(&self, pid: u32) -> bool {
        pid < PARTITION_COUNT && self.0[pid as usize / 64] & (1 << (pid % 64)) != 0
    }

    /// Whether `key`'s partition is in the set.
    pub fn holds_key(&self, key: &str) -> bool {
        self.contains(partition_id(key))
    }

    /// Whether every partition of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| a & !b == 0)
    }

    /// Whether the two sets share a partition.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }

    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        out
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The set's wire form: its words, big-endian.
    pub fn to_bytes(self) -> [u8; PART_SET_BYTES] {
        let mut out = [0; PART_SET_BYTES];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Reads [`PartSet::to_bytes`]; `None` for the wrong length or bits past the last
    /// partition.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != PART_SET_BYTES {
            return None;
        }
        let mut set = Self::default();
        for (word, chunk) in set.0.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().ok()?);
        }
        set.is_subset(&Self::all()).then_some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_what_was_inserted_and_round_trip() {
        let mut a = PartSet::default();
        for pid in [0, 63, 64, 270, 271, 5000] {
            a.insert(pid);
        }
        assert_eq!(a.len(), 4, "ids past the last partition are not kept");
        assert!(a.contains(270) && a.contains(64) && !a.contains(1) && !a.contains(271));
        assert_eq!(PartSet::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(PartSet::all().len(), 271);
        assert!(a.is_subset(&PartSet::all()) && !PartSet::all().is_subset(&a));
        let mut past = PartSet::all().to_bytes();
        past[PART_SET_BYTES - 8] |= 0x80; // the last word's high bit: 319
        assert_eq!(PartSet::from_bytes(&past), None, "bit 319 is no partition");
        assert_eq!(PartSet::from_bytes(&[0; 3]), None);
        let mut b = PartSet::default();
        b.insert(1);
        assert!(!a.overlaps(&b) && a.union(&b).len() == 5 && a.union(&b).overlaps(&b));
        assert!(PartSet::default().is_empty() && !a.is_empty());
        assert_eq!(a.holds_key("k"), a.contains(partition_id("k")));
    }
}
