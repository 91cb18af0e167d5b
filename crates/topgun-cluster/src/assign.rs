//! Minimal-movement assignment (CLUSTER.md §4): which member should own and back up each
//! partition, given who is eligible and what the table says now.
//!
//! Rules, in the order they are applied (each a separate pass over the 271 partitions, so an
//! earlier rule is never starved by a later one):
//! 1. Quotas: each member owns ⌊271/n⌋ or ⌈271/n⌉ partitions; the ⌈⌉ slots go to the members
//!    that own the most today, so a balanced table is a fixed point.
//! 2. Keep every owner that is eligible and under quota.
//! 3. An orphaned partition goes to one of its in-sync backups (a promotion: no copy)…
//! 4. …else to the least-loaded member.
//! 5. Backups (`min(backups, n − 1)` per partition, never on the owner, quotas like owners):
//!    keep existing eligible backups, then the previous owner (it holds the data), then the
//!    least-loaded members.
//!
//! Ties break by member name, never by id or by map iteration order, so every replica and
//! every run computes the same target. The reference server's `sorted[pid % n]` moves nearly
//! every partition on any change; this moves ≈ 271/n when one member joins.

use std::collections::BTreeMap;

use crate::ids::{MemberName, RaftId};
use crate::table::{PARTITION_COUNT, PartitionId, PartitionTable};

/// A member eligible to own partitions, as assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: RaftId,
    pub name: MemberName,
}

/// Where one partition should end up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEntry {
    pub owner: RaftId,
    pub backups: Vec<RaftId>,
}

/// The desired owner and backups of every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    entries: Vec<TargetEntry>,
}

impl Target {
    pub fn get(&self, pid: PartitionId) -> &TargetEntry {
        &self.entries[pid.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, &TargetEntry)> {
        PartitionId::all().zip(self.entries.iter())
    }
}

/// The target for `members` (distinct ids), starting from `current`, with up to `backups`
/// backups per partition. `None` when nobody is eligible.
pub fn assign(members: &[Candidate], current: &PartitionTable, backups: usize) -> Option<Target> {
    if members.is_empty() {
        return None;
    }
    let pool = Pool::new(members);
    let owners = assign_owners(&pool, current);
    let backups = assign_backups(&pool, current, &owners, backups.min(members.len() - 1));
    let entries = owners
        .iter()
        .zip(backups)
        .map(|(&o, b)| TargetEntry {
            owner: pool.ids[o],
            backups: b.into_iter().map(|i| pool.ids[i]).collect(),
        })
        .collect();
    Some(Target { entries })
}

/// The eligible members, indexed `0..n` in name order, so "lowest index" is "lowest name".
struct Pool {
    ids: Vec<RaftId>,
    index: BTreeMap<RaftId, usize>,
}

impl Pool {
    fn new(members: &[Candidate]) -> Self {
        let mut sorted: Vec<&Candidate> = members.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let ids: Vec<RaftId> = sorted.iter().map(|c| c.id).collect();
        let index = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        Self { ids, index }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn idx(&self, id: RaftId) -> Option<usize> {
        self.index.get(&id).copied()
    }
}

/// Splits `total` slots over members: ⌊total/n⌋ each, one more for the first `total % n`
/// members of `priority`.
fn quotas(total: usize, priority: &[usize]) -> Vec<usize> {
    let n = priority.len();
    let mut quota = vec![total / n; n];
    for &i in priority.iter().take(total % n) {
        quota[i] += 1;
    }
    quota
}

/// Member indices sorted by `key`, then by name.
fn ranked<K: Ord>(n: usize, key: impl Fn(usize) -> K) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (key(i), i));
    order
}

/// The member under quota with the least load (ties by name), if any, among those `allowed`.
fn least_loaded(load: &[usize], quota: &[usize], allowed: impl Fn(usize) -> bool) -> Option<usize> {
    (0..load.len())
        .filter(|&i| allowed(i) && load[i] < quota[i])
        .min_by_key(|&i| (load[i], i))
}

fn assign_owners(pool: &Pool, current: &PartitionTable) -> Vec<usize> {
    let mut held = vec![0; pool.len()];
    for (_, e) in current.iter() {
        if let Some(i) = pool.idx(e.owner) {
            held[i] += 1;
        }
    }
    // The ⌈⌉ slots go to the members that own the most today: nobody gives up a partition
    // it could keep, and a balanced table is a fixed point.
    let quota = quotas(
        PARTITION_COUNT,
        &ranked(pool.len(), |i| std::cmp::Reverse(held[i])),
    );
    let mut load = vec![0; pool.len()];
    let mut owner: Vec<Option<usize>> = vec![None; PARTITION_COUNT];
    // Pass 1: keep.
    for (pid, e) in current.iter() {
        if let Some(i) = pool.idx(e.owner).filter(|&i| load[i] < quota[i]) {
            owner[pid.index()] = Some(i);
            load[i] += 1;
        }
    }
    // Pass 2: promote an in-sync backup.
    for (pid, e) in current.iter() {
        if owner[pid.index()].is_some() {
            continue;
        }
        let in_sync: Vec<usize> = e.isr.iter().filter_map(|&b| pool.idx(b)).collect();
        if let Some(i) = least_loaded(&load, &quota, |i| in_sync.contains(&i)) {
            owner[pid.index()] = Some(i);
            load[i] += 1;
        }
    }
    // Pass 3: the least-loaded member. Quotas sum to 271, so one is always under quota.
    owner
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                let i = least_loaded(&load, &quota, |_| true).unwrap_or(0);
                load[i] += 1;
                i
            })
        })
        .collect()
}

fn assign_backups(
    pool: &Pool,
    current: &PartitionTable,
    owners: &[usize],
    per_partition: usize,
) -> Vec<Vec<usize>> {
    let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); PARTITION_COUNT];
    if per_partition == 0 {
        return chosen;
    }
    let mut held = vec![0; pool.len()];
    for (_, e) in current.iter() {
        for i in e.isr.iter().filter_map(|&b| pool.idx(b)) {
            held[i] += 1;
        }
    }
    // The ⌈⌉ slots go to the members that own the fewest partitions (they have the most
    // partitions they may back up), then to those backing up the most today. The first
    // criterion is what makes every quota reachable, so that a reached target is a fixed
    // point; the second keeps movement minimal.
    let mut owned = vec![0; pool.len()];
    for &o in owners {
        owned[o] += 1;
    }
    let priority = ranked(pool.len(), |i| (owned[i], std::cmp::Reverse(held[i])));
    let quota = quotas(PARTITION_COUNT * per_partition, &priority);
    let mut load = vec![0; pool.len()];
    // Pass 1: keep existing backups, in their promotion order.
    for (pid, e) in current.iter() {
        for i in e.isr.iter().filter_map(|&b| pool.idx(b)) {
            take_backup(
                &mut chosen[pid.index()],
                i,
                owners[pid.index()],
                per_partition,
                &quota,
                &mut load,
            );
        }
    }
    // Pass 2: a previous owner still holds the data.
    for (pid, e) in current.iter() {
        if let Some(i) = pool.idx(e.owner) {
            take_backup(
                &mut chosen[pid.index()],
                i,
                owners[pid.index()],
                per_partition,
                &quota,
                &mut load,
            );
        }
    }
    // Pass 3: fill from the least loaded.
    for pid in 0..PARTITION_COUNT {
        fill_backups(pid, owners, per_partition, &quota, &mut load, &mut chosen);
    }
    chosen
}

/// Adds `i` to `chosen` if it may back the partition up and is under its quota.
fn take_backup(
    chosen: &mut Vec<usize>,
    i: usize,
    owner: usize,
    per_partition: usize,
    quota: &[usize],
    load: &mut [usize],
) {
    if i != owner && !chosen.contains(&i) && chosen.len() < per_partition && load[i] < quota[i] {
        chosen.push(i);
        load[i] += 1;
    }
}

/// Tops partition `pid` up to `per_partition` backups from the least-loaded members.
fn fill_backups(
    pid: usize,
    owners: &[usize],
    per_partition: usize,
    quota: &[usize],
    load: &mut [usize],
    chosen: &mut [Vec<usize>],
) {
    while chosen[pid].len() < per_partition {
        let mine = &chosen[pid];
        let allowed = |i: usize| i != owners[pid] && !mine.contains(&i);
        let under_quota = least_loaded(load, quota, allowed);
        // Quotas give way only when no swap exists: a backup over quota beats none.
        let any = (0..load.len())
            .filter(|&i| allowed(i))
            .min_by_key(|&i| (load[i], i));
        if let Some(i) = under_quota {
            load[i] += 1;
            chosen[pid].push(i);
        } else if let Some(i) = swap_in(pid, owners, quota, load, chosen) {
            chosen[pid].push(i);
        } else if let Some(i) = any {
            load[i] += 1;
            chosen[pid].push(i);
        } else {
            return;
        }
    }
}

/// When the only members under quota cannot back `pid` up (its owner, or already chosen),
/// finds a partition `q` whose backup `x` could serve `pid` and whose spare member `y` could
/// serve `q`: `y` takes `x`'s place at `q` and `x` is returned for `pid`. `x`'s load is
/// unchanged, `y`'s rises by one, so quotas hold.
fn swap_in(
    pid: usize,
    owners: &[usize],
    quota: &[usize],
    load: &mut [usize],
    chosen: &mut [Vec<usize>],
) -> Option<usize> {
    for y in (0..load.len()).filter(|&y| load[y] < quota[y]) {
        for q in (0..PARTITION_COUNT).filter(|&q| q != pid) {
            if owners[q] == y || chosen[q].contains(&y) {
                continue;
            }
            let usable = |x: &usize| *x != owners[pid] && !chosen[pid].contains(x);
            if let Some(slot) = chosen[q].iter().position(usable) {
                let x = std::mem::replace(&mut chosen[q][slot], y);
                load[y] += 1;
                return Some(x);
            }
        }
    }
    None
}
