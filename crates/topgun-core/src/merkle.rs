//! The Merkle tree every TopGun replica of a map keeps (PROTOCOL.md §3.3).
//!
//! A key's routing path is `fnv1a(key)` as 8 hex digits; the tree is a 16-ary trie of depth 3
//! over the first three digits (root → 16 level-1 nodes → 256 level-2 nodes → 4,096 leaves).
//!
//! * leaf hash = `combine(item hashes of its keys)`;
//! * internal node hash = `combine(child node hashes)`, so `mix` is re-applied at every level;
//! * root hash = the level-0 node hash; an empty tree has root 0.
//!
//! The tree stores the items themselves (`key → (value, item hash)`) in its leaves, so a
//! lookup costs one FNV pass plus one small hash-map probe, and the invariant "every item is
//! counted in every hash above it" holds by construction. Because `combine` is a wrapping
//! sum, every write updates the four hashes above its leaf in O(1): a parent moves by
//! `mix(new child hash) − mix(old child hash)`.
//!
//! Buckets are listed by *item count*, not by hash: a child that holds items is listed even
//! when its hash is 0 (an OR-Map key that holds only tombstones hashes to 0, and a peer must
//! still be able to walk to it to learn those tombstones). Children without items are never
//! listed, which peers treat exactly like a child with hash 0.

use std::collections::HashMap;

use thiserror::Error;

use crate::hash::{fnv1a, mix};

/// Depth of the trie: leaves sit at paths of three hex digits.
pub const MERKLE_DEPTH: usize = 3;
const LEAF_COUNT: usize = 1 << (4 * MERKLE_DEPTH);
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    #[error("Merkle path {0:?} is not 0 to 3 lowercase hex digits")]
    InvalidPath(String),
    #[error("Merkle path {0:?} names a leaf, which has no child buckets")]
    NotAnInternalNode(String),
    #[error("Merkle path {0:?} names an internal node, not a leaf")]
    NotALeaf(String),
}

/// The depth of a valid path (0 = root, 3 = a leaf), or why it is not one.
pub fn path_depth(path: &str) -> Result<usize, MerkleError> {
    Path::parse(path).map(|p| p.depth)
}

/// A validated path: `depth` hex digits whose value is `index` (e.g. `"8a"` → depth 2, 0x8a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Path {
    depth: usize,
    index: usize,
}

impl Path {
    fn parse(path: &str) -> Result<Self, MerkleError> {
        let invalid = || MerkleError::InvalidPath(path.to_owned());
        if path.len() > MERKLE_DEPTH {
            return Err(invalid());
        }
        let mut index = 0usize;
        for b in path.bytes() {
            let digit = HEX_DIGITS
                .iter()
                .position(|&d| d == b)
                .ok_or_else(invalid)?;
            index = index * 16 + digit;
        }
        Ok(Self {
            depth: path.len(),
            index,
        })
    }

    fn child_path(self, nibble: usize) -> String {
        let mut out = String::with_capacity(self.depth + 1);
        for level in (0..self.depth).rev() {
            out.push(char::from(HEX_DIGITS[(self.index >> (4 * level)) & 0xF]));
        }
        out.push(char::from(HEX_DIGITS[nibble]));
        out
    }
}

/// The children of the internal node `parent` that hold items, `(hex digit, hash)`, given
/// how to read a node's sum.
fn children(parent: Path, sum_at: impl Fn(Path) -> Sum) -> Vec<(char, u32)> {
    (0..16)
        .filter_map(|nibble| {
            let child = sum_at(Path {
                depth: parent.depth + 1,
                index: parent.index * 16 + nibble,
            });
            (child.count > 0).then(|| (char::from(HEX_DIGITS[nibble]), child.hash))
        })
        .collect()
}

/// Hash and item count of one internal node or leaf.
///
/// Leaf sums of trees over disjoint key sets add up (`combine` is a wrapping sum of mixed
/// item hashes), which is what lets one logical tree be split over partition shards; see
/// [`SplitTree`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sum {
    pub hash: u32,
    pub count: u32,
}

impl Sum {
    /// The sum of two disjoint parts of one leaf.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            hash: self.hash.wrapping_add(other.hash),
            count: self.count.saturating_add(other.count),
        }
    }
}

#[derive(Debug, Clone)]
struct Item<V> {
    value: V,
    item_hash: u32,
}

#[derive(Debug, Clone)]
struct Leaf<V> {
    sum: Sum,
    items: HashMap<String, Item<V>>,
}

/// Node sums of levels 0–2 and the leaves; allocated on the first insert.
#[derive(Debug, Clone)]
struct Levels<V> {
    root: Sum,
    level1: [Sum; 16],
    level2: [Sum; 256],
    leaves: LeafTable<V>,
}

/// The 4,096 leaf slots, in 256 groups of 16 allocated on first use: a map with few keys
/// costs a few KiB instead of 32 KiB of empty slots (a server holds one tree per map per
/// shard). A leaf is allocated while it holds items; a group stays once allocated.
#[derive(Debug, Clone)]
struct LeafTable<V> {
    groups: Box<[Option<Box<LeafGroup<V>>>]>,
}

type LeafGroup<V> = [Option<Box<Leaf<V>>>; 16];

impl<V> LeafTable<V> {
    fn new() -> Self {
        let mut groups = Vec::with_capacity(LEAF_COUNT / 16);
        groups.resize_with(LEAF_COUNT / 16, || None);
        Self {
            groups: groups.into_boxed_slice(),
        }
    }

    fn get(&self, at: usize) -> Option<&Leaf<V>> {
        self.groups[at >> 4].as_ref()?[at & 0xF].as_deref()
    }

    fn get_mut(&mut self, at: usize) -> Option<&mut Leaf<V>> {
        self.groups[at >> 4].as_mut()?[at & 0xF].as_deref_mut()
    }

    /// The leaf at `at`, allocated (with its group) if need be.
    fn get_or_create(&mut self, at: usize) -> &mut Leaf<V> {
        let group = self.groups[at >> 4].get_or_insert_with(Box::default);
        group[at & 0xF].get_or_insert_with(|| {
            Box::new(Leaf {
                sum: Sum::default(),
                items: HashMap::new(),
            })
        })
    }

    fn free(&mut self, at: usize) {
        if let Some(group) = self.groups[at >> 4].as_mut() {
            group[at & 0xF] = None;
        }
    }

    /// Every allocated leaf with its index, ascending, from `first` for `span` slots.
    fn range(&self, first: usize, span: usize) -> impl Iterator<Item = (usize, &Leaf<V>)> {
        let groups = (first >> 4)..((first + span).div_ceil(16));
        groups
            .filter_map(move |g| self.groups[g].as_ref().map(|group| (g, group)))
            .flat_map(move |(g, group)| {
                group
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, leaf)| Some((g * 16 + i, leaf.as_deref()?)))
            })
            .filter(move |(at, _)| (first..first + span).contains(at))
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Leaf<V>)> {
        self.range(0, LEAF_COUNT)
    }

    #[cfg(test)]
    fn groups_in_use(&self) -> usize {
        self.groups.iter().flatten().count()
    }
}

/// What an in-place update ([`MerkleTree::update_with`]) did to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rehash {
    /// Nothing changed; the hashes stay as they are.
    Unchanged,
    /// The value changed and now has this item hash.
    Changed(u32),
    /// The key is to be removed.
    Remove,
}

/// A map from string keys to `V`, hashed as a TopGun Merkle tree.
#[derive(Debug, Clone)]
pub struct MerkleTree<V> {
    levels: Option<Box<Levels<V>>>,
}

impl<V> Default for MerkleTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// The leaf index of a key: the top three hex digits of its FNV-1a hash.
#[inline]
fn leaf_index(key: &str) -> usize {
    (fnv1a(key) >> (32 - 4 * MERKLE_DEPTH)) as usize
}

impl<V> MerkleTree<V> {
    pub const fn new() -> Self {
        Self { levels: None }
    }

    pub fn len(&self) -> usize {
        self.levels.as_ref().map_or(0, |l| l.root.count as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root hash; 0 for an empty tree.
    pub fn root(&self) -> u32 {
        self.levels.as_ref().map_or(0, |l| l.root.hash)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.get_with_hash(key).map(|(v, _)| v)
    }

    /// The value and the item hash it was stored with.
    pub fn get_with_hash(&self, key: &str) -> Option<(&V, u32)> {
        let leaf = self.levels.as_ref()?.leaves.get(leaf_index(key))?;
        leaf.items.get(key).map(|i| (&i.value, i.item_hash))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get_with_hash(key).is_some()
    }

    /// Inserts `key` if absent, or replaces its value if `replace(&stored, &value)` says so,
    /// in one probe. Returns whether the tree changed.
    pub fn insert_if(
        &mut self,
        key: &str,
        value: V,
        item_hash: u32,
        replace: impl FnOnce(&V, &V) -> bool,
    ) -> bool {
        let at = leaf_index(key);
        let levels = self.levels.get_or_insert_with(Levels::new);
        let leaf = levels.leaves.get_or_create(at);
        let old_hash = if let Some(slot) = leaf.items.get_mut(key) {
            if !replace(&slot.value, &value) {
                return false;
            }
            let old_hash = slot.item_hash;
            *slot = Item { value, item_hash };
            Some(old_hash)
        } else {
            leaf.items.insert(key.to_owned(), Item { value, item_hash });
            None
        };
        levels.apply(at, old_hash, Some(item_hash));
        true
    }

    /// Inserts or replaces `key` with an item hash; returns the previous value.
    pub fn insert(&mut self, key: &str, value: V, item_hash: u32) -> Option<V> {
        let at = leaf_index(key);
        let levels = self.levels.get_or_insert_with(Levels::new);
        let leaf = levels.leaves.get_or_create(at);
        let new_item = Item { value, item_hash };
        let old = if let Some(slot) = leaf.items.get_mut(key) {
            Some(std::mem::replace(slot, new_item))
        } else {
            leaf.items.insert(key.to_owned(), new_item);
            None
        };
        let old_hash = old.as_ref().map(|i| i.item_hash);
        levels.apply(at, old_hash, Some(item_hash));
        old.map(|i| i.value)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let at = leaf_index(key);
        let levels = self.levels.as_mut()?;
        let leaf = levels.leaves.get_mut(at)?;
        let old = leaf.items.remove(key)?;
        levels.apply(at, Some(old.item_hash), None);
        Some(old.value)
    }

    /// Updates the value of `key` in place (starting from `V::default()` when absent) and
    /// applies what `f` reports. Returns whether the tree changed.
    pub fn update_with(&mut self, key: &str, f: impl FnOnce(&mut V) -> Rehash) -> bool
    where
        V: Default,
    {
        let at = leaf_index(key);
        let existing = self
            .levels
            .as_mut()
            .and_then(|l| l.leaves.get_mut(at))
            .and_then(|leaf| leaf.items.get_mut(key));
        if let Some(item) = existing {
            let old_hash = item.item_hash;
            let new_hash = match f(&mut item.value) {
                Rehash::Unchanged => return false,
                Rehash::Changed(h) => {
                    item.item_hash = h;
                    Some(h)
                }
                Rehash::Remove => None,
            };
            let levels = self.levels.as_mut().expect("the key was found in a leaf");
            if new_hash.is_none()
                && let Some(leaf) = levels.leaves.get_mut(at)
            {
                leaf.items.remove(key);
            }
            levels.apply(at, Some(old_hash), new_hash);
            return true;
        }
        let mut value = V::default();
        match f(&mut value) {
            Rehash::Changed(h) => {
                self.insert(key, value, h);
                true
            }
            Rehash::Unchanged | Rehash::Remove => false,
        }
    }

    pub fn clear(&mut self) {
        self.levels = None;
    }

    /// Every `(key, value)`, leaf by leaf (order within a leaf is unspecified).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.levels
            .iter()
            .flat_map(|l| l.leaves.iter())
            .flat_map(|(_, leaf)| leaf.items.iter().map(|(k, i)| (k.as_str(), &i.value)))
    }

    /// The hash of the node at `path` (`""` = root, three digits = a leaf); 0 if empty.
    pub fn node_hash(&self, path: &str) -> Result<u32, MerkleError> {
        let path = Path::parse(path)?;
        Ok(self.levels.as_ref().map_or(0, |l| l.sum(path).hash))
    }

    /// The non-empty leaves under the node at `path`: `(leaf index, sum)`, ascending. The
    /// leaf index is the leaf's three hex digits read as a number (0..4096).
    pub fn leaf_sums(&self, path: &str) -> Result<Vec<(u16, Sum)>, MerkleError> {
        let parsed = Path::parse(path)?;
        let Some(levels) = self.levels.as_ref() else {
            return Ok(Vec::new());
        };
        let span = 1usize << (4 * (MERKLE_DEPTH - parsed.depth));
        let first = parsed.index * span;
        Ok(levels
            .leaves
            .range(first, span)
            .map(|(at, leaf)| {
                let index = u16::try_from(at).expect("fewer than 2^16 leaves");
                (index, leaf.sum)
            })
            .collect())
    }

    /// The non-empty leaf sums under `path` over only the keys `keep` accepts: the part of
    /// the tree a subset of its keys would make (a cluster member answering for the
    /// partitions it owns while it still holds records of others). O(items under `path`).
    pub fn leaf_sums_where(
        &self,
        path: &str,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<(u16, Sum)>, MerkleError> {
        let parsed = Path::parse(path)?;
        let Some(levels) = self.levels.as_ref() else {
            return Ok(Vec::new());
        };
        let span = 1usize << (4 * (MERKLE_DEPTH - parsed.depth));
        let first = parsed.index * span;
        Ok(levels
            .leaves
            .range(first, span)
            .filter_map(|(at, leaf)| {
                let kept = leaf.items.iter().filter(|(key, _)| keep(key));
                let sum = kept.fold(Sum::default(), |acc, (_, item)| {
                    acc.plus(Sum {
                        hash: mix(item.item_hash),
                        count: 1,
                    })
                });
                let index = u16::try_from(at).expect("fewer than 2^16 leaves");
                (sum.count > 0).then_some((index, sum))
            })
            .collect())
    }

    /// The non-empty children of the internal node at `path`: `(hex digit, child hash)`,
    /// in digit order.
    pub fn buckets(&self, path: &str) -> Result<Vec<(char, u32)>, MerkleError> {
        let parsed = Path::parse(path)?;
        if parsed.depth == MERKLE_DEPTH {
            return Err(MerkleError::NotAnInternalNode(path.to_owned()));
        }
        let Some(levels) = self.levels.as_ref() else {
            return Ok(Vec::new());
        };
        Ok(children(parsed, |at| levels.sum(at)))
    }

    /// The keys stored in the leaf at `path` (three hex digits), in unspecified order.
    pub fn keys_in_bucket(&self, path: &str) -> Result<Vec<&str>, MerkleError> {
        Ok(self.items_in_bucket(path)?.map(|(k, _)| k).collect())
    }

    /// The `(key, value)` items stored in the leaf at `path`.
    pub fn items_in_bucket(
        &self,
        path: &str,
    ) -> Result<impl Iterator<Item = (&str, &V)>, MerkleError> {
        let parsed = Path::parse(path)?;
        if parsed.depth != MERKLE_DEPTH {
            return Err(MerkleError::NotALeaf(path.to_owned()));
        }
        let leaf = self
            .levels
            .as_ref()
            .and_then(|l| l.leaves.get(parsed.index));
        Ok(leaf
            .into_iter()
            .flat_map(|leaf| leaf.items.iter().map(|(k, i)| (k.as_str(), &i.value))))
    }

    /// The leaf paths (three hex digits, ascending) whose hashes differ between the trees,
    /// found by descending only into differing subtrees.
    pub fn diff<W>(&self, other: &MerkleTree<W>) -> Vec<String> {
        let mut out = Vec::new();
        self.diff_from(other, Path { depth: 0, index: 0 }, &mut out);
        out
    }

    fn diff_from<W>(&self, other: &MerkleTree<W>, at: Path, out: &mut Vec<String>) {
        if self.hash_at(at) == other.hash_at(at) {
            return;
        }
        if at.depth == MERKLE_DEPTH {
            let parent = Path {
                depth: at.depth - 1,
                index: at.index >> 4,
            };
            out.push(parent.child_path(at.index & 0xF));
            return;
        }
        for nibble in 0..16 {
            let child = Path {
                depth: at.depth + 1,
                index: at.index * 16 + nibble,
            };
            self.diff_from(other, child, out);
        }
    }

    fn hash_at(&self, at: Path) -> u32 {
        self.levels.as_ref().map_or(0, |l| l.sum(at).hash)
    }

    /// Recomputes every hash from the stored item hashes, the way a fresh peer would.
    /// For tests and invariant checks; O(number of items).
    pub fn recomputed_root(&self) -> u32 {
        let Some(levels) = self.levels.as_ref() else {
            return 0;
        };
        let mut second = [0u32; 256];
        for (at, leaf) in levels.leaves.iter() {
            let hash = crate::hash::combine(leaf.items.values().map(|i| i.item_hash));
            second[at >> 4] = second[at >> 4].wrapping_add(mix(hash));
        }
        let mut first = [0u32; 16];
        for (at, hash) in second.iter().enumerate() {
            first[at >> 4] = first[at >> 4].wrapping_add(mix(*hash));
        }
        crate::hash::combine(first)
    }
}

/// The hashes of one logical tree whose keys are spread over several partial trees (a map
/// split over partition shards), rebuilt from their [`MerkleTree::leaf_sums`].
///
/// Leaf sums add up across partial trees; the levels above are recomputed, because `mix` is
/// re-applied at every level and does not distribute over the sum. The result equals the tree
/// a single replica holding all the keys computes, which is what lets a client's unchanged
/// map sync in one round trip.
#[derive(Debug, Clone)]
pub struct SplitTree {
    leaves: Box<[Sum]>,
}

impl Default for SplitTree {
    fn default() -> Self {
        Self {
            leaves: vec![Sum::default(); LEAF_COUNT].into_boxed_slice(),
        }
    }
}

impl SplitTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one partial tree's leaf sums.
    pub fn add(&mut self, sums: &[(u16, Sum)]) {
        for &(index, sum) in sums {
            if let Some(slot) = self.leaves.get_mut(usize::from(index)) {
                *slot = slot.plus(sum);
            }
        }
    }

    /// The hash of the node at `path`, like [`MerkleTree::node_hash`].
    pub fn node_hash(&self, path: &str) -> Result<u32, MerkleError> {
        Ok(self.sum(Path::parse(path)?).hash)
    }

    /// The children of the internal node at `path` that hold items, like
    /// [`MerkleTree::buckets`].
    pub fn buckets(&self, path: &str) -> Result<Vec<(char, u32)>, MerkleError> {
        let parsed = Path::parse(path)?;
        if parsed.depth == MERKLE_DEPTH {
            return Err(MerkleError::NotAnInternalNode(path.to_owned()));
        }
        Ok(children(parsed, |at| self.sum(at)))
    }

    fn sum(&self, at: Path) -> Sum {
        if at.depth == MERKLE_DEPTH {
            return self.leaves[at.index];
        }
        (0..16).fold(Sum::default(), |acc, nibble| {
            let child = self.sum(Path {
                depth: at.depth + 1,
                index: at.index * 16 + nibble,
            });
            Sum {
                hash: acc.hash.wrapping_add(mix(child.hash)),
                count: acc.count.saturating_add(child.count),
            }
        })
    }
}

impl<V> Levels<V> {
    fn new() -> Box<Self> {
        Box::new(Self {
            root: Sum::default(),
            level1: [Sum::default(); 16],
            level2: [Sum::default(); 256],
            leaves: LeafTable::new(),
        })
    }

    fn sum(&self, path: Path) -> Sum {
        match path.depth {
            0 => self.root,
            1 => self.level1[path.index],
            2 => self.level2[path.index],
            _ => self
                .leaves
                .get(path.index)
                .map_or_else(Sum::default, |l| l.sum),
        }
    }

    /// Moves the leaf at `at` and its ancestors from `old_item` to `new_item` (either may be
    /// absent), and frees the leaf once it holds nothing.
    fn apply(&mut self, at: usize, old_item: Option<u32>, new_item: Option<u32>) {
        let leaf = self
            .leaves
            .get_mut(at)
            .expect("apply is only called for an allocated leaf");
        let before = leaf.sum;
        let mut after = before;
        if let Some(h) = old_item {
            after.hash = after.hash.wrapping_sub(mix(h));
            after.count -= 1;
        }
        if let Some(h) = new_item {
            after.hash = after.hash.wrapping_add(mix(h));
            after.count += 1;
        }
        leaf.sum = after;
        if after.count == 0 {
            self.leaves.free(at);
        }
        let (before2, after2) = propagate(&mut self.level2[at >> 4], before, after);
        let (before1, after1) = propagate(&mut self.level1[at >> 8], before2, after2);
        propagate(&mut self.root, before1, after1);
    }
}

/// Moves `parent` as its child went from `before` to `after`; returns the parent's own
/// before and after.
fn propagate(parent: &mut Sum, before: Sum, after: Sum) -> (Sum, Sum) {
    let old = *parent;
    parent.hash = parent
        .hash
        .wrapping_sub(mix(before.hash))
        .wrapping_add(mix(after.hash));
    parent.count = parent.count - before.count + after.count;
    (old, *parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lww_item(key: &str, ts: &str) -> u32 {
        fnv1a(&format!("{key}:{ts}"))
    }

    /// PROTOCOL.md §3.4: one key, root = mix applied at each of the four levels.
    #[test]
    fn single_key_root_vector() {
        let mut t = MerkleTree::new();
        t.insert("alice", (), lww_item("alice", "1700000000000:0:n1"));
        assert_eq!(t.node_hash("872").unwrap(), 4_166_413_597);
        assert_eq!(t.root(), 3_716_192_681);
        assert_eq!(t.recomputed_root(), t.root());
    }

    /// PROTOCOL.md §3.5: the three-key client tree.
    #[test]
    fn three_key_vector() {
        let mut t = MerkleTree::new();
        t.insert("alice", (), lww_item("alice", "1700000000000:0:n1"));
        t.insert("bob", (), lww_item("bob", "1700000000001:0:n1"));
        t.insert("carol", (), lww_item("carol", "1700000000002:3:n2"));
        assert_eq!(t.root(), 2_476_720_979);
        assert_eq!(
            t.buckets("").unwrap(),
            vec![('6', 3_202_217_666), ('8', 1_458_996_198)]
        );
        assert_eq!(t.keys_in_bucket("872").unwrap(), vec!["alice"]);
        assert_eq!(t.keys_in_bucket("86c").unwrap(), vec!["bob"]);
        assert_eq!(t.buckets("8").unwrap().len(), 2);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn empty_tree() {
        let t: MerkleTree<()> = MerkleTree::new();
        assert_eq!(t.root(), 0);
        assert_eq!(t.buckets("").unwrap(), vec![]);
        assert!(t.keys_in_bucket("000").unwrap().is_empty());
        assert_eq!(t.node_hash("abc").unwrap(), 0);
        assert!(t.diff(&t).is_empty());
    }

    #[test]
    fn removing_the_last_key_of_a_leaf_empties_it() {
        let mut t = MerkleTree::new();
        t.insert("alice", 1, 7);
        t.insert("bob", 2, 8);
        assert_eq!(t.remove("alice"), Some(1));
        assert_eq!(t.remove("alice"), None);
        assert_eq!(t.node_hash("872").unwrap(), 0);
        assert_eq!(
            t.buckets("8").unwrap(),
            vec![('6', t.node_hash("86").unwrap())]
        );
        assert_eq!(t.remove("bob"), Some(2));
        assert_eq!(t.root(), 0);
        assert!(t.is_empty());
        assert_eq!(t.buckets("").unwrap(), vec![]);
    }

    #[test]
    fn replacing_moves_the_root_like_a_rebuild() {
        let mut t = MerkleTree::new();
        t.insert("k", "a", 1);
        let mut fresh = MerkleTree::new();
        fresh.insert("k", "b", 2);
        assert_eq!(t.insert("k", "b", 2), Some("a"));
        assert_eq!(t.root(), fresh.root());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn items_with_hash_zero_are_listed_but_hash_nothing() {
        let mut t = MerkleTree::new();
        t.insert("alice", (), 0);
        assert_eq!(t.root(), 0);
        assert_eq!(t.buckets("").unwrap(), vec![('8', 0)]);
        assert_eq!(t.keys_in_bucket("872").unwrap(), vec!["alice"]);
    }

    #[test]
    fn update_with_inserts_changes_and_removes() {
        let mut t: MerkleTree<u32> = MerkleTree::new();
        assert!(!t.update_with("k", |_| Rehash::Unchanged));
        assert!(t.is_empty(), "an unchanged default is not inserted");
        assert!(t.update_with("k", |v| {
            *v = 5;
            Rehash::Changed(50)
        }));
        assert_eq!(t.get_with_hash("k"), Some((&5, 50)));
        assert!(t.update_with("k", |v| {
            *v += 1;
            Rehash::Changed(60)
        }));
        let mut fresh = MerkleTree::new();
        fresh.insert("k", 6, 60);
        assert_eq!(t.root(), fresh.root());
        assert!(!t.update_with("k", |_| Rehash::Unchanged));
        assert!(t.update_with("k", |_| Rehash::Remove));
        assert!(t.is_empty());
        assert_eq!(t.root(), 0);
    }

    #[test]
    fn invalid_paths_are_refused() {
        let t: MerkleTree<()> = MerkleTree::new();
        for bad in ["0000", "g", "A", "0/1/2", " "] {
            assert_eq!(t.buckets(bad), Err(MerkleError::InvalidPath(bad.into())));
        }
        assert_eq!(
            t.buckets("abc"),
            Err(MerkleError::NotAnInternalNode("abc".into()))
        );
        assert!(matches!(
            t.keys_in_bucket("ab"),
            Err(MerkleError::NotALeaf(_))
        ));
    }

    /// Keys spread over partial trees by partition aggregate to the single tree's hashes.
    #[test]
    fn split_trees_add_up_to_the_single_tree() {
        let mut whole = MerkleTree::new();
        let mut parts: Vec<MerkleTree<()>> = (0..3).map(|_| MerkleTree::new()).collect();
        for i in 0..500 {
            let key = format!("k{i}");
            let hash = fnv1a(&format!("{key}:{i}:0:n"));
            whole.insert(&key, (), hash);
            parts[crate::hash::partition_id(&key) as usize % 3].insert(&key, (), hash);
        }
        for path in ["", "8", "8a", "8a1"] {
            let mut split = SplitTree::new();
            for part in &parts {
                split.add(&part.leaf_sums(path).unwrap());
            }
            assert_eq!(split.node_hash(path), whole.node_hash(path), "{path}");
            if path.len() < MERKLE_DEPTH {
                assert_eq!(split.buckets(path), whole.buckets(path), "{path}");
            }
        }
        assert_ne!(whole.root(), 0);
        assert_eq!(
            parts[0].leaf_sums("0000"),
            Err(MerkleError::InvalidPath("0000".into()))
        );
    }

    /// A tree holding more keys than it answers for gives the sums of those it keeps: with
    /// the other holders' kept parts they add up to the tree of the kept keys alone.
    #[test]
    fn filtered_leaf_sums_equal_the_tree_of_the_kept_keys() {
        let mut all = MerkleTree::new();
        let mut kept = MerkleTree::new();
        let keep = |key: &str| crate::hash::partition_id(key).is_multiple_of(2);
        for i in 0..500 {
            let key = format!("k{i}");
            let hash = fnv1a(&format!("{key}:{i}:0:n"));
            all.insert(&key, (), hash);
            if keep(&key) {
                kept.insert(&key, (), hash);
            }
        }
        for path in ["", "8", "8a1"] {
            let filtered = all.leaf_sums_where(path, keep).unwrap();
            assert_eq!(filtered, kept.leaf_sums(path).unwrap(), "{path}");
        }
        assert_eq!(all.leaf_sums_where("", |_| true), all.leaf_sums(""));
        assert!(all.leaf_sums_where("", |_| false).unwrap().is_empty());
        assert!(all.leaf_sums_where("0000", keep).is_err());
    }

    #[test]
    fn leaf_groups_are_allocated_as_keys_arrive() {
        let mut tree: MerkleTree<u32> = MerkleTree::new();
        tree.insert("a", 1, 11);
        let groups = |t: &MerkleTree<u32>| t.levels.as_ref().unwrap().leaves.groups_in_use();
        assert_eq!(
            groups(&tree),
            1,
            "one key: one group of 16 slots, not 4,096 slots"
        );
        for i in 0..10_000 {
            tree.insert(&format!("k{i}"), i, i);
        }
        assert_eq!(groups(&tree), 256);
        assert_eq!(tree.recomputed_root(), tree.root());
        let sums: Vec<usize> = tree
            .leaf_sums("a")
            .unwrap()
            .into_iter()
            .map(|(at, _)| usize::from(at))
            .collect();
        let mut expected: Vec<usize> = (0..10_000)
            .map(|i| leaf_index(&format!("k{i}")))
            .chain([leaf_index("a")])
            .filter(|at| (0xa00..0xb00).contains(at))
            .collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(
            sums, expected,
            "exactly the leaves in use under \"a\", ascending"
        );
    }

    #[test]
    fn diff_names_exactly_the_differing_leaves() {
        let mut a = MerkleTree::new();
        let mut b = MerkleTree::new();
        for i in 0..200 {
            let key = format!("key-{i}");
            a.insert(&key, (), fnv1a(&key));
            b.insert(&key, (), fnv1a(&key));
        }
        assert!(a.diff(&b).is_empty());
        b.insert("key-7", (), 1);
        b.insert("extra", (), 2);
        let mut expected = vec![
            crate::hash::routing_path("key-7")[..3].to_owned(),
            crate::hash::routing_path("extra")[..3].to_owned(),
        ];
        expected.sort();
        assert_eq!(a.diff(&b), expected);
        assert_eq!(b.diff(&a), expected);
    }
}
