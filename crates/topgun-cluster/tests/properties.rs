//! Property tests of assignment, planning and control commands (CLUSTER.md §4, §3.8).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use topgun_cluster::{
    Candidate, CatalogPut, Command, CommandResult, ControlState, Epoch, Expect,
    MAX_PARALLEL_MIGRATIONS, MemberName, PARTITION_COUNT, PartitionEntry, PartitionId,
    PartitionState, PartitionTable, RaftId, Target, assign, plan,
};

/// Ids 1..=10 exist; a random subset is eligible, named in an order unrelated to the ids.
fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
    (
        proptest::sample::subsequence((1..=10u64).collect::<Vec<_>>(), 1..=8),
        any::<u64>(),
    )
        .prop_map(|(ids, salt)| {
            ids.into_iter()
                .map(|id| Candidate {
                    id: RaftId(id),
                    name: MemberName::new(&format!("n{}", (id.wrapping_mul(salt | 1)) % 1000))
                        .unwrap(),
                })
                .collect::<Vec<_>>()
        })
        .prop_filter("distinct names", |c| {
            let mut names: Vec<_> = c.iter().map(|m| m.name.clone()).collect();
            names.sort();
            names.dedup();
            names.len() == c.len()
        })
}

/// Any table over ids 1..=10: owners and backups may be dead or ineligible.
fn table() -> impl Strategy<Value = PartitionTable> {
    proptest::collection::vec(
        (1..=10u64, proptest::collection::vec(1..=10u64, 0..=3)),
        PARTITION_COUNT,
    )
    .prop_map(|rows| {
        PartitionTable::from_fn(|pid| {
            let (owner, isr) = &rows[pid.index()];
            let mut backups: Vec<RaftId> = Vec::new();
            for &b in isr {
                if b != *owner && !backups.contains(&RaftId(b)) {
                    backups.push(RaftId(b));
                }
            }
            entry(RaftId(*owner), backups)
        })
    })
}

fn entry(owner: RaftId, isr: Vec<RaftId>) -> PartitionEntry {
    PartitionEntry {
        epoch: Epoch(1),
        owner,
        isr,
        catching_up: Vec::new(),
        migration: None,
        state: PartitionState::Stable,
    }
}

fn applied(target: &Target) -> PartitionTable {
    PartitionTable::from_fn(|pid| {
        let t = target.get(pid);
        entry(t.owner, t.backups.clone())
    })
}

fn loads(target: &Target, members: &[Candidate]) -> Vec<usize> {
    let mut load: BTreeMap<RaftId, usize> = members.iter().map(|m| (m.id, 0)).collect();
    for (_, t) in target.iter() {
        *load.get_mut(&t.owner).expect("owner is a candidate") += 1;
    }
    load.into_values().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)))]

    /// §4: max − min owners ≤ 1 and max − min backups ≤ 1; backups never on the owner, distinct, eligible, as many as
    /// members allow.
    #[test]
    fn assignment_is_balanced_and_well_formed(members in candidates(), current in table(), backups in 0usize..=3) {
        let target = assign(&members, &current, backups).unwrap();
        let load = loads(&target, &members);
        prop_assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "{load:?}");
        let ids: Vec<RaftId> = members.iter().map(|m| m.id).collect();
        let mut backup_load: BTreeMap<RaftId, usize> = ids.iter().map(|&id| (id, 0)).collect();
        for b in target.iter().flat_map(|(_, t)| t.backups.iter()) {
            *backup_load.get_mut(b).unwrap() += 1;
        }
        let (lo, hi) = (backup_load.values().min().unwrap(), backup_load.values().max().unwrap());
        prop_assert!(hi - lo <= 1, "backups per member {backup_load:?}");
        for (pid, t) in target.iter() {
            prop_assert_eq!(t.backups.len(), backups.min(members.len() - 1), "{}", pid);
            prop_assert!(!t.backups.contains(&t.owner), "{pid}: backup on its owner");
            prop_assert!(t.backups.iter().all(|b| ids.contains(b)));
            let mut sorted = t.backups.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), t.backups.len());
        }
    }

    /// Same inputs → same output, whatever order the members are listed in.
    #[test]
    fn assignment_is_deterministic(members in candidates(), current in table(), backups in 0usize..=3) {
        let a = assign(&members, &current, backups);
        let mut reversed = members.clone();
        reversed.reverse();
        prop_assert_eq!(&a, &assign(&reversed, &current, backups));
        prop_assert_eq!(&a, &assign(&members, &current, backups));
    }

    /// A reached target is kept: no plan churns once balanced.
    #[test]
    fn a_reached_target_is_a_fixed_point(members in candidates(), current in table(), backups in 0usize..=3) {
        let target = assign(&members, &current, backups).unwrap();
        let reached = applied(&target);
        prop_assert_eq!(assign(&members, &reached, backups), Some(target.clone()));
        prop_assert!(plan(&reached, &target, MAX_PARALLEL_MIGRATIONS).is_empty());
    }

    /// Owners that are eligible and under quota stay put: only orphans and the excess of
    /// overloaded members move.
    #[test]
    fn owners_move_only_when_they_must(members in candidates(), current in table(), backups in 0usize..=3) {
        let target = assign(&members, &current, backups).unwrap();
        let n = members.len();
        let ceil = PARTITION_COUNT.div_ceil(n);
        let mut held: BTreeMap<RaftId, usize> = BTreeMap::new();
        for (_, e) in current.iter() {
            *held.entry(e.owner).or_insert(0) += 1;
        }
        let orphans = current.iter().filter(|(_, e)| !members.iter().any(|m| m.id == e.owner)).count();
        let excess: usize = members.iter().map(|m| held.get(&m.id).copied().unwrap_or(0).saturating_sub(ceil.min(PARTITION_COUNT / n + 1))).sum();
        let moved = current.iter().filter(|(p, e)| target.get(*p).owner != e.owner).count();
        // ⌊⌋-quota members may give up one more each than their ⌈⌉ excess.
        prop_assert!(moved <= orphans + excess + n, "moved {moved}, orphans {orphans}, excess {excess}");
    }

    /// §4: a 4th member joining 3 balanced ones takes ≈ 68 owners, never more than ⌈271/4⌉ + 2.
    #[test]
    fn a_fourth_member_moves_about_68_owners(names in proptest::sample::subsequence(vec!["a", "b", "c", "d", "e", "f", "g"], 4), backups in 0u8..=3, first in 0usize..4) {
        let mut names = names;
        let joiner = names.remove(first);
        let mut state = formed(&names, backups);
        converge(&mut state, 1);
        let before = cluster(&state).table().clone();
        state.apply(join_cmd(joiner, 44, 9000), 2);
        let id = id_of(&state, joiner);
        state.apply(Command::Activate { id }, 3);
        converge(&mut state, 4);
        let after = cluster(&state).table();
        let moved = before.iter().filter(|(p, e)| after.get(*p).owner != e.owner).count();
        prop_assert!((67..=PARTITION_COUNT.div_ceil(4) + 2).contains(&moved), "moved {moved}");
        let mut counts = owner_counts(&state);
        counts.sort_unstable();
        prop_assert_eq!(counts, vec![67, 68, 68, 68]);
    }

    /// §4 plan: promotions first, then copies within 2 inbound and 2 outbound per member.
    #[test]
    fn waves_put_promotions_first_and_bound_copies(members in candidates(), current in table(), backups in 0usize..=3) {
        let mut table = current;
        for _ in 0..500 {
            let target = assign(&members, &table, backups).unwrap();
            let wave = plan(&table, &target, MAX_PARALLEL_MIGRATIONS);
            if wave.is_empty() {
                return Ok(());
            }
            let free = wave.iter().filter(|m| m.is_free()).count();
            prop_assert!(free == 0 || free == wave.len(), "free and copy moves mixed");
            if wave.len() > 1 {
                let mut inbound: BTreeMap<RaftId, usize> = BTreeMap::new();
                let mut outbound: BTreeMap<RaftId, usize> = BTreeMap::new();
                for c in wave.iter().flat_map(|m| m.copies.iter()) {
                    *inbound.entry(c.to).or_insert(0) += 1;
                    *outbound.entry(c.from).or_insert(0) += 1;
                }
                prop_assert!(inbound.values().chain(outbound.values()).all(|&n| n <= MAX_PARALLEL_MIGRATIONS));
            }
            let moves: BTreeMap<PartitionId, _> = wave.into_iter().map(|m| (m.pid, m)).collect();
            table = PartitionTable::from_fn(|pid| match moves.get(&pid) {
                Some(m) => entry(m.owner, m.backups.clone()),
                None => table.get(pid).clone(),
            });
        }
        prop_assert!(false, "no convergence in 500 waves");
    }

    /// §3.8: `table_version` rises by exactly one when the client view changes and not
    /// otherwise; refusals change nothing; every owner is live while anyone is.
    #[test]
    fn table_version_follows_the_client_view(ops in proptest::collection::vec((0u8..10, 1u64..=9, any::<u8>()), 1..60)) {
        let mut state = formed(&["a", "b", "c"], 1);
        let mut fresh = 100u128;
        for (step, (kind, target, extra)) in ops.into_iter().enumerate() {
            let cmd = command(&state, kind, RaftId(target), extra, &mut fresh);
            let before = state.clone();
            let (key, version) = (view_key(&state), cluster(&state).table_version());
            let catalogs = cluster(&state).catalogs().clone();
            let entries = |c: &topgun_cluster::Catalogs| -> Vec<(String, Vec<u8>)> {
                c.entries("policies").map(|(k, v)| (k.to_owned(), v.to_vec())).collect()
            };
            let out = state.apply(cmd.clone(), step as u64);
            let changed = view_key(&state) != key;
            prop_assert_eq!(cluster(&state).table_version(), version + u64::from(changed), "{:?} → {:?}", cmd, out);
            // A catalog's revision counts exactly its changes.
            let after = cluster(&state).catalogs();
            let catalog_changed = entries(after) != entries(&catalogs);
            prop_assert_eq!(after.revision(), catalogs.revision() + u64::from(catalog_changed));
            if let CommandResult::Refused(_) = out.result {
                prop_assert_eq!(&state, &before);
            }
            cluster(&state).check();
        }
    }
}

/// A command from a small alphabet over ids that may or may not exist.
fn command(state: &ControlState, kind: u8, id: RaftId, extra: u8, fresh: &mut u128) -> Command {
    let names = ["a", "b", "c", "d", "e", "f"];
    match kind {
        0 => {
            *fresh += 1;
            let n = names[usize::from(extra) % names.len()];
            join_cmd(n, *fresh, 9000 + u16::from(extra % 2))
        }
        1 => Command::Activate { id },
        2 => Command::Leave { id },
        3 => Command::MarkDown { id },
        4 => Command::MarkUp { id },
        5 => Command::Remove { id },
        6 | 7 => Command::ApplyPlan {
            moves: cluster(state).next_wave(MAX_PARALLEL_MIGRATIONS),
        },
        9 => Command::CatalogPut(CatalogPut {
            catalog: "policies".into(),
            key: format!("k{}", extra % 4),
            value: (!extra.is_multiple_of(5)).then(|| vec![extra % 3]),
            expect: [Expect::Any, Expect::Absent, Expect::Present][usize::from(extra % 3)],
            max_entries: 3,
        }),
        _ => {
            let pid = PartitionId::new(u32::from(extra) % 271).unwrap();
            let epoch = cluster(state).table().get(pid).epoch;
            let epoch = if extra.is_multiple_of(3) {
                epoch
            } else {
                epoch.next()
            };
            Command::OwnerChanged {
                pid,
                owner: id,
                epoch,
            }
        }
    }
}

/// A new leader's clock may be behind its predecessor's: a command stamped earlier than the
/// latest applied still applies at the latest time, so a member marked down then is not
/// marked down in the past.
#[test]
fn time_in_the_state_never_goes_backwards() {
    let mut state = formed(&["a", "b", "c"], 1);
    state.apply(Command::MarkDown { id: RaftId(3) }, 50_000);
    assert_eq!(state.time_ms(), 50_000);
    state.apply(Command::MarkUp { id: RaftId(3) }, 40_000);
    assert_eq!(
        state.time_ms(),
        50_000,
        "an earlier stamp applies at the latest time"
    );
    let member = cluster(&state).member(RaftId(3)).unwrap();
    assert_eq!(
        member.since_ms, 50_000,
        "marked up at the latest time, not before its down"
    );
}
