//! The partition table (CLUSTER.md §3.1, §4): 271 entries, each with one owner, an epoch that
//! rises on every owner change, and the in-sync backups clients see as `backupNodeIds`.
//!
//! Invariants, asserted by [`PartitionTable::check`] and kept by every mutation in
//! `state.rs`:
//! * every entry has exactly one owner, and never lists it among its backups;
//! * backups are distinct.
//!
//! Owner liveness is the state machine's business (it knows the members); the table alone
//! cannot tell a live id from a dead one.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{Epoch, RaftId};

/// Number of partitions: the TS client's `PARTITION_COUNT`, from the one place it is defined.
pub const PARTITION_COUNT: usize = topgun_core::hash::PARTITION_COUNT as usize;

/// A partition number, `0..271`. Decoded through a range check, so no partition number from
/// the wire can index past the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct PartitionId(u16);

impl TryFrom<u16> for PartitionId {
    type Error = TableError;

    fn try_from(pid: u16) -> Result<Self, TableError> {
        Self::new(u32::from(pid)).ok_or(TableError::NoSuchPartition { pid })
    }
}

impl From<PartitionId> for u16 {
    fn from(pid: PartitionId) -> Self {
        pid.0
    }
}

/// Why bytes decoded into a partition table (or a partition number) were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("partition {pid} does not exist (there are {PARTITION_COUNT})")]
    NoSuchPartition { pid: u16 },
    #[error("a table has {PARTITION_COUNT} entries, not {len}")]
    WrongLength { len: usize },
    #[error("{pid}: owner {owner} is its own backup")]
    OwnerIsBackup { pid: PartitionId, owner: RaftId },
    #[error("{pid}: backup {backup} listed twice")]
    BackupTwice { pid: PartitionId, backup: RaftId },
}

impl PartitionId {
    /// `None` for a number outside `0..271`.
    pub fn new(pid: u32) -> Option<Self> {
        let index = usize::try_from(pid).ok()?;
        (index < PARTITION_COUNT).then(|| Self(u16::try_from(pid).unwrap_or(u16::MAX)))
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Every partition, in order.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..PARTITION_COUNT).map(|i| Self(u16::try_from(i).unwrap_or(u16::MAX)))
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The partition of a key: `fnv1a_utf16(key) % 271`, the TS client's routing rule, taken from
/// `topgun-core` so both ends hash alike.
pub fn partition_of(key: &str) -> PartitionId {
    PartitionId(u16::try_from(topgun_core::hash::partition_id(key)).unwrap_or(u16::MAX))
}

/// Whether a partition can admit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PartitionState {
    /// Its owner admits writes.
    Stable,
    /// Ownership is being handed to another member (part 2; never entered yet).
    Handoff,
    /// Its owner is down and no live member could take it over; the owner field still names
    /// the last owner, which gets it back on `MarkUp`.
    Lost,
}

/// A copy of a partition to another member in progress. Part 2 (replication and migration)
/// fills this in; nothing creates one yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub to: RaftId,
    pub started_ms: u64,
}

/// One partition's row of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub epoch: Epoch,
    pub owner: RaftId,
    /// In-sync backups, in promotion order: the first live one takes over on failover.
    pub isr: Vec<RaftId>,
    /// Replicas receiving the live stream but not yet waited for (part 2).
    pub catching_up: Vec<RaftId>,
    pub migration: Option<Migration>,
    pub state: PartitionState,
}

impl PartitionEntry {
    /// The owner and its backups: every member holding this partition's data.
    pub fn replicas(&self) -> impl Iterator<Item = RaftId> + '_ {
        std::iter::once(self.owner).chain(self.isr.iter().copied())
    }
}

/// The 271 entries. Boxed: a table is ~20 KiB, too big to move around on the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    entries: Box<[PartitionEntry; PARTITION_COUNT]>,
}

impl PartitionTable {
    /// A table whose entries are built by `entry(pid)`.
    pub fn from_fn(mut entry: impl FnMut(PartitionId) -> PartitionEntry) -> Self {
        let entries = Box::new(std::array::from_fn(|i| {
            entry(PartitionId(u16::try_from(i).unwrap_or(u16::MAX)))
        }));
        let table = Self { entries };
        table.check();
        table
    }

    pub fn get(&self, pid: PartitionId) -> &PartitionEntry {
        &self.entries[pid.index()]
    }

    /// Crate-private: only the state machine may change the table, so that every change is
    /// counted in `table_version`.
    pub(crate) fn get_mut(&mut self, pid: PartitionId) -> &mut PartitionEntry {
        &mut self.entries[pid.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, &PartitionEntry)> {
        PartitionId::all().zip(self.entries.iter())
    }

    /// Partitions owned per member id (members owning nothing are absent).
    pub fn owner_counts(&self) -> std::collections::BTreeMap<RaftId, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.entries.iter() {
            *counts.entry(entry.owner).or_insert(0) += 1;
        }
        counts
    }

    /// Asserts the structural invariants of the module doc.
    pub fn check(&self) {
        if let Err(broken) = self.validate() {
            panic!("{broken}");
        }
    }

    /// The structural invariants of the module doc, as a result: what a decoder checks
    /// before it trusts a table read back from disk or a peer.
    pub fn validate(&self) -> Result<(), TableError> {
        for (pid, entry) in self.iter() {
            if entry.isr.contains(&entry.owner) {
                return Err(TableError::OwnerIsBackup {
                    pid,
                    owner: entry.owner,
                });
            }
            for (i, &backup) in entry.isr.iter().enumerate() {
                if entry.isr[..i].contains(&backup) {
                    return Err(TableError::BackupTwice { pid, backup });
                }
            }
        }
        Ok(())
    }
}

/// Encoded as a sequence of its 271 entries (serde derives stop at arrays of 32).
impl Serialize for PartitionTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter())
    }
}

/// Decoded from exactly 271 entries that keep the module doc's invariants; anything else is
/// an error, never a panic, because the bytes may come from a peer or a damaged file.
impl<'de> Deserialize<'de> for PartitionTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries: Vec<PartitionEntry> = Vec::deserialize(deserializer)?;
        let len = entries.len();
        let entries: Box<[PartitionEntry; PARTITION_COUNT]> = entries
            .into_boxed_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom(TableError::WrongLength { len }))?;
        let table = Self { entries };
        table.validate().map_err(serde::de::Error::custom)?;
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_of_matches_the_shared_vectors() {
        // The TS client's values (topgun-core's hash vectors).
        assert_eq!(partition_of("").get(), 2_166_136_261 % 271);
        assert_eq!(
            partition_of("key1"),
            PartitionId::new(topgun_core::hash::partition_id("key1")).unwrap_or(PartitionId(0))
        );
    }

    #[test]
    fn partition_ids_are_bounded() {
        assert_eq!(PartitionId::new(270).map(PartitionId::get), Some(270));
        assert_eq!(PartitionId::new(271), None);
        assert_eq!(PartitionId::all().count(), PARTITION_COUNT);
    }
}
