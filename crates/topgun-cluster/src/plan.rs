//! From the table to the target in waves (CLUSTER.md §4): promotions first, then copies, at
//! most `max_parallel` inbound and `max_parallel` outbound copies per member per wave.
//!
//! A [`Move`] is the whole new row of one partition plus the epoch it was planned against:
//! if the partition's owner changed in between, the state machine skips the move instead of
//! undoing a failover (fencing inside the state machine, not in the planner).
//!
//! Until replication exists (part 2) a copy moves no data, so a committed wave applies at
//! once; the wave limits already hold so that part 2 only has to change what "apply" means.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::assign::Target;
use crate::ids::{Epoch, RaftId};
use crate::table::{PartitionEntry, PartitionId, PartitionTable};

/// Copies a member may send, and receive, at once (`max_parallel_migrations`).
pub const MAX_PARALLEL_MIGRATIONS: usize = 2;

/// A partition's data that must reach a member that does not hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTask {
    pub from: RaftId,
    pub to: RaftId,
}

/// One partition's new row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub pid: PartitionId,
    /// The entry's epoch when planned; a different epoch at apply time makes the move stale.
    pub epoch: Epoch,
    pub owner: RaftId,
    pub backups: Vec<RaftId>,
    /// Empty for a promotion or a backup reshuffle among members that hold the data.
    pub copies: Vec<CopyTask>,
}

impl Move {
    /// Needs no data to travel: a promotion, a dropped backup, an owner swap among replicas.
    pub fn is_free(&self) -> bool {
        self.copies.is_empty()
    }
}

/// The next wave from `current` towards `target`; empty once they agree.
pub fn plan(current: &PartitionTable, target: &Target, max_parallel: usize) -> Vec<Move> {
    let moves: Vec<Move> = current
        .iter()
        .filter_map(|(pid, entry)| diff(pid, entry, target))
        .collect();
    if moves.iter().any(Move::is_free) {
        return moves.into_iter().filter(Move::is_free).collect();
    }
    limit_copies(moves, max_parallel)
}

fn diff(pid: PartitionId, entry: &PartitionEntry, target: &Target) -> Option<Move> {
    let want = target.get(pid);
    if entry.owner == want.owner && entry.isr == want.backups {
        return None;
    }
    let copies = std::iter::once(want.owner)
        .chain(want.backups.iter().copied())
        .filter(|m| !entry.replicas().any(|r| r == *m))
        .map(|to| CopyTask {
            from: entry.owner,
            to,
        })
        .collect();
    Some(Move {
        pid,
        epoch: entry.epoch,
        owner: want.owner,
        backups: want.backups.clone(),
        copies,
    })
}

/// Admits moves in partition order while every member stays within `max_parallel` copies
/// each way. A first move needing more copies than the limit (many backups) makes a wave of
/// its own, so it still makes progress without widening anyone else's budget.
fn limit_copies(moves: Vec<Move>, max_parallel: usize) -> Vec<Move> {
    let mut inbound: BTreeMap<RaftId, usize> = BTreeMap::new();
    let mut outbound: BTreeMap<RaftId, usize> = BTreeMap::new();
    let mut wave = Vec::new();
    for mv in moves {
        let fits = mv.copies.iter().all(|c| {
            let sent = mv.copies.iter().filter(|o| o.from == c.from).count();
            inbound.get(&c.to).copied().unwrap_or(0) < max_parallel
                && outbound.get(&c.from).copied().unwrap_or(0) + sent <= max_parallel
        });
        if !fits {
            if wave.is_empty() {
                // Alone over the limit (more backups than `max_parallel`): a wave of its own.
                return vec![mv];
            }
            continue;
        }
        for c in &mv.copies {
            *inbound.entry(c.to).or_insert(0) += 1;
            *outbound.entry(c.from).or_insert(0) += 1;
        }
        wave.push(mv);
    }
    wave
}
