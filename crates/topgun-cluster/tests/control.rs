//! `ControlState` command sequences with exact results and effects (CLUSTER.md §3, §6).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use topgun_cluster::{
    Command, CommandResult, ControlState, Effect, Epoch, MemberState, PARTITION_COUNT, PartitionId,
    PartitionState, RaftId, Refusal, desired_voters, partition_map, version_base_at,
};
use topgun_core::protocol::enums::NodeStatus;

fn pid(n: u32) -> PartitionId {
    PartitionId::new(n).unwrap()
}

#[test]
fn bootstrap_hands_out_ids_in_name_order_and_an_even_table_at_epoch_1() {
    let mut state = ControlState::new();
    let out = state.apply(bootstrap_cmd(&["c", "a", "b"], 1), 1_000);
    assert_eq!(
        out.result,
        CommandResult::Bootstrapped {
            ids: vec![
                (name("a"), RaftId(1)),
                (name("b"), RaftId(2)),
                (name("c"), RaftId(3))
            ]
        }
    );
    assert_eq!(
        out.effects,
        vec![
            Effect::MemberJoined { id: RaftId(1) },
            Effect::MemberJoined { id: RaftId(2) },
            Effect::MemberJoined { id: RaftId(3) },
            Effect::TableChanged {
                table_version: 1,
                map_version: VERSION_BASE + 1
            },
        ]
    );
    let c = cluster(&state);
    assert_eq!(owner_counts(&state), vec![91, 90, 90]);
    for (_, e) in c.table().iter() {
        assert_eq!(e.epoch, Epoch(1));
        assert_eq!(e.isr.len(), 1);
        assert_ne!(e.isr[0], e.owner);
        assert_eq!(e.state, PartitionState::Stable);
    }
    assert!(
        c.members()
            .all(|m| m.state == MemberState::Active && m.since_ms == 1_000)
    );
}

#[test]
fn commands_before_bootstrap_and_a_second_bootstrap_are_refused_without_change() {
    let mut state = ControlState::new();
    let out = state.apply(Command::Activate { id: RaftId(1) }, 0);
    assert_eq!(out.result, CommandResult::Refused(Refusal::NotBootstrapped));
    let bad = state.apply(bootstrap_cmd(&["a", "a"], 1), 0);
    assert_eq!(
        bad.result,
        CommandResult::Refused(Refusal::BadBootstrap {
            reason: "a member name is listed twice".into()
        })
    );
    let too_many = state.apply(bootstrap_cmd(&["a"], 4), 0);
    assert!(matches!(
        too_many.result,
        CommandResult::Refused(Refusal::BadBootstrap { .. })
    ));
    assert_eq!(state, ControlState::new());
    let mut state = formed(&["a"], 1);
    let before = state.clone();
    let again = state.apply(bootstrap_cmd(&["b"], 1), 0);
    assert_eq!(
        again.result,
        CommandResult::Refused(Refusal::AlreadyBootstrapped)
    );
    assert!(again.effects.is_empty());
    assert_eq!(state, before);
}

#[test]
fn a_single_member_owns_everything_with_no_backups() {
    let state = formed(&["solo"], 1);
    assert_eq!(owner_counts(&state), vec![271]);
    assert!(
        cluster(&state)
            .table()
            .iter()
            .all(|(_, e)| e.isr.is_empty())
    );
    assert!(cluster(&state).next_wave(2).is_empty());
}

#[test]
fn a_join_lists_the_member_as_joining_owning_nothing_and_a_retry_is_answered_alike() {
    let mut state = formed(&["a", "b", "c"], 1);
    let out = state.apply(join_cmd("d", 40, 9000), 2_000);
    assert_eq!(
        out.result,
        CommandResult::Joined {
            raft_id: RaftId(4),
            replaced: None
        }
    );
    assert_eq!(
        out.effects,
        vec![
            Effect::MemberJoined { id: RaftId(4) },
            Effect::TableChanged {
                table_version: 2,
                map_version: VERSION_BASE + 2
            },
        ]
    );
    let d = cluster(&state).member(RaftId(4)).unwrap();
    assert_eq!((d.state, d.since_ms), (MemberState::Joining, 2_000));
    assert!(
        cluster(&state).next_wave(2).is_empty(),
        "joining members get nothing"
    );
    let before = state.clone();
    let retry = state.apply(join_cmd("d", 40, 9000), 2_500);
    assert_eq!(
        retry.result,
        CommandResult::Joined {
            raft_id: RaftId(4),
            replaced: None
        }
    );
    assert!(retry.effects.is_empty());
    assert_eq!(state, before);
}

#[test]
fn a_new_incarnation_at_the_same_address_replaces_the_old_one_in_one_step() {
    let mut state = formed(&["a", "b", "c"], 1);
    let owned_by_b: Vec<PartitionId> = cluster(&state)
        .table()
        .iter()
        .filter(|(_, e)| e.owner == RaftId(2))
        .map(|(p, _)| p)
        .collect();
    let out = state.apply(join_cmd("b", 99, 9000), 5_000);
    assert_eq!(
        out.result,
        CommandResult::Joined {
            raft_id: RaftId(4),
            replaced: Some(RaftId(2))
        }
    );
    assert_eq!(out.effects[0], Effect::MemberDown { id: RaftId(2) });
    assert_eq!(out.effects[1], Effect::MemberRemoved { id: RaftId(2) });
    assert_eq!(out.effects[2], Effect::MemberJoined { id: RaftId(4) });
    let moved = out
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::OwnershipChanged { .. }))
        .count();
    assert_eq!(moved, owned_by_b.len());
    assert_eq!(
        out.effects.last(),
        Some(&Effect::TableChanged {
            table_version: 2,
            map_version: VERSION_BASE + 2
        })
    );
    let c = cluster(&state);
    assert!(c.member(RaftId(2)).is_none());
    for p in owned_by_b {
        let e = c.table().get(p);
        assert_eq!(e.epoch, Epoch(2), "{p}");
        assert!(
            e.owner == RaftId(1) || e.owner == RaftId(3),
            "promoted to a live backup"
        );
    }
}

#[test]
fn a_second_process_with_a_live_name_at_another_address_is_refused() {
    let mut state = formed(&["a", "b"], 1);
    let before = state.clone();
    let out = state.apply(join_cmd("b", 99, 9100), 5_000);
    assert_eq!(
        out.result,
        CommandResult::Refused(Refusal::NameInUse {
            name: name("b"),
            holder: RaftId(2)
        })
    );
    assert!(out.effects.is_empty());
    assert_eq!(state, before);
    // Once the holder is down the name is free, wherever the new process lives.
    state.apply(Command::MarkDown { id: RaftId(2) }, 6_000);
    let out = state.apply(join_cmd("b", 99, 9100), 7_000);
    assert_eq!(
        out.result,
        CommandResult::Joined {
            raft_id: RaftId(3),
            replaced: Some(RaftId(2))
        }
    );
}

#[test]
fn mark_down_fails_over_in_the_same_command_by_promoting_the_first_backup() {
    let mut state = formed(&["a", "b", "c"], 1);
    let before = cluster(&state).table().clone();
    let out = state.apply(Command::MarkDown { id: RaftId(1) }, 9_000);
    assert_eq!(out.result, CommandResult::Done);
    assert_eq!(out.effects[0], Effect::MemberDown { id: RaftId(1) });
    let mut expected = vec![Effect::MemberDown { id: RaftId(1) }];
    for (p, e) in before.iter().filter(|(_, e)| e.owner == RaftId(1)) {
        expected.push(Effect::OwnershipChanged {
            pid: p,
            old: RaftId(1),
            new: e.isr[0],
            epoch: Epoch(2),
        });
    }
    expected.push(Effect::TableChanged {
        table_version: 2,
        map_version: VERSION_BASE + 2,
    });
    assert_eq!(out.effects, expected);
    let c = cluster(&state);
    assert!(
        c.table()
            .iter()
            .all(|(_, e)| e.owner != RaftId(1) && !e.isr.contains(&RaftId(1)))
    );
    assert_eq!(c.member(RaftId(1)).unwrap().since_ms, 9_000);
    // Again: nothing to do, nothing counted.
    let again = state.apply(Command::MarkDown { id: RaftId(1) }, 9_500);
    assert_eq!(
        (again.result, again.effects),
        (CommandResult::Unchanged, vec![])
    );
}

#[test]
fn with_every_member_down_partitions_are_lost_and_come_back_to_their_owner() {
    let mut state = formed(&["a", "b"], 0);
    state.apply(Command::MarkDown { id: RaftId(1) }, 1);
    let out = state.apply(Command::MarkDown { id: RaftId(2) }, 2);
    let lost = out
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::PartitionLost { .. }))
        .count();
    assert_eq!(lost, PARTITION_COUNT);
    assert!(
        cluster(&state)
            .table()
            .iter()
            .all(|(_, e)| e.state == PartitionState::Lost)
    );
    let epochs: Vec<Epoch> = cluster(&state)
        .table()
        .iter()
        .map(|(_, e)| e.epoch)
        .collect();
    let out = state.apply(Command::MarkUp { id: RaftId(2) }, 3);
    let recovered = out
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::PartitionRecovered { .. }))
        .count();
    let moved = out
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::OwnershipChanged { .. }))
        .count();
    // a failed first, so b held everything when it failed: all of it comes back as it was.
    assert_eq!((recovered, moved), (PARTITION_COUNT, 0));
    for ((_, e), before) in cluster(&state).table().iter().zip(epochs) {
        assert_eq!(
            (e.owner, e.state, e.epoch),
            (RaftId(2), PartitionState::Stable, before)
        );
    }
}

#[test]
fn owner_changed_is_fenced_by_epoch() {
    let mut state = formed(&["a", "b"], 1);
    let p = pid(0);
    let entry = cluster(&state).table().get(p).clone();
    let other = if entry.owner == RaftId(1) {
        RaftId(2)
    } else {
        RaftId(1)
    };
    let before = state.clone();
    let fenced = state.apply(
        Command::OwnerChanged {
            pid: p,
            owner: other,
            epoch: Epoch(1),
        },
        10,
    );
    assert_eq!(
        fenced.result,
        CommandResult::Refused(Refusal::StaleEpoch {
            pid: p,
            current: Epoch(1),
            given: Epoch(1)
        })
    );
    let same = state.apply(
        Command::OwnerChanged {
            pid: p,
            owner: entry.owner,
            epoch: Epoch(2),
        },
        10,
    );
    assert!(matches!(
        same.result,
        CommandResult::Refused(Refusal::BadOwner { .. })
    ));
    assert_eq!(state, before);
    let ok = state.apply(
        Command::OwnerChanged {
            pid: p,
            owner: other,
            epoch: Epoch(2),
        },
        10,
    );
    assert_eq!(ok.result, CommandResult::Done);
    assert_eq!(
        ok.effects,
        vec![
            Effect::OwnershipChanged {
                pid: p,
                old: entry.owner,
                new: other,
                epoch: Epoch(2)
            },
            Effect::TableChanged {
                table_version: 2,
                map_version: VERSION_BASE + 2
            },
        ]
    );
    // The new owner left the backups it was among.
    assert!(cluster(&state).table().get(p).isr.is_empty());
    // Replayed: the epoch has moved on, so it is a no-op.
    let replay = state.apply(
        Command::OwnerChanged {
            pid: p,
            owner: other,
            epoch: Epoch(2),
        },
        11,
    );
    assert!(matches!(
        replay.result,
        CommandResult::Refused(Refusal::StaleEpoch { .. })
    ));
}

#[test]
fn a_fourth_member_takes_67_partitions_and_moves_planned_before_a_failover_are_skipped() {
    let mut state = formed(&["a", "b", "c"], 1);
    state.apply(join_cmd("d", 4, 9000), 1);
    state.apply(Command::Activate { id: RaftId(4) }, 2);
    let wave = cluster(&state).next_wave(2);
    assert!(!wave.is_empty());
    // A failover commits between planning and applying: moves of a's partitions are stale.
    let mut other = state.clone();
    other.apply(Command::MarkDown { id: RaftId(1) }, 3);
    let out = other.apply(
        Command::ApplyPlan {
            moves: wave.clone(),
        },
        4,
    );
    let CommandResult::PlanApplied { applied, skipped } = out.result else {
        panic!("{out:?}")
    };
    assert_eq!(applied + skipped, wave.len());
    assert!(skipped > 0);
    // Undisturbed, the plan converges to 68/68/68/67 with 67 owner moves.
    let start = cluster(&state).table().clone();
    converge(&mut state, 5);
    let mut counts = owner_counts(&state);
    counts.sort_unstable();
    assert_eq!(counts, vec![67, 68, 68, 68]);
    let moved = start
        .iter()
        .filter(|(p, e)| cluster(&state).table().get(*p).owner != e.owner)
        .count();
    assert_eq!(moved, 67);
}

#[test]
fn a_graceful_leave_moves_everything_off_before_remove() {
    let mut state = formed(&["a", "b", "c"], 1);
    let out = state.apply(Command::Leave { id: RaftId(2) }, 1);
    assert_eq!(
        out.effects,
        vec![
            Effect::MemberLeaving { id: RaftId(2) },
            Effect::TableChanged {
                table_version: 2,
                map_version: VERSION_BASE + 2
            },
        ]
    );
    converge(&mut state, 2);
    let c = cluster(&state);
    assert!(
        c.table()
            .iter()
            .all(|(_, e)| e.owner != RaftId(2) && !e.isr.contains(&RaftId(2)))
    );
    let out = state.apply(Command::Remove { id: RaftId(2) }, 3);
    assert_eq!(
        out.effects,
        vec![
            Effect::MemberDown { id: RaftId(2) },
            Effect::MemberRemoved { id: RaftId(2) },
            Effect::TableChanged {
                table_version: cluster(&state).table_version(),
                map_version: cluster(&state).map_version()
            },
        ]
    );
    let again = state.apply(Command::Remove { id: RaftId(2) }, 4);
    assert_eq!(
        (again.result, again.effects),
        (CommandResult::Unchanged, vec![])
    );
    let unknown = state.apply(Command::Remove { id: RaftId(40) }, 4);
    assert_eq!(
        unknown.result,
        CommandResult::Refused(Refusal::UnknownMember { id: RaftId(40) })
    );
}

#[test]
fn life_cycle_transitions_that_do_not_apply_are_refused_and_repeats_are_unchanged() {
    let mut state = formed(&["a", "b"], 1);
    let out = state.apply(Command::Activate { id: RaftId(1) }, 1);
    assert_eq!(
        (out.result, out.effects),
        (CommandResult::Unchanged, vec![])
    );
    state.apply(Command::MarkDown { id: RaftId(2) }, 2);
    let out = state.apply(Command::Leave { id: RaftId(2) }, 3);
    assert_eq!(
        out.result,
        CommandResult::Refused(Refusal::WrongState {
            id: RaftId(2),
            state: MemberState::Down,
            command: "Leave".into()
        })
    );
    let out = state.apply(Command::MarkUp { id: RaftId(2) }, 4);
    assert_eq!(out.result, CommandResult::Done);
    assert_eq!(out.effects[0], Effect::MemberUp { id: RaftId(2) });
    assert_eq!(
        cluster(&state).member(RaftId(2)).unwrap().state,
        MemberState::Active
    );
}

#[test]
fn the_partition_map_lists_live_members_only_and_every_partition() {
    let mut state = formed(&["a", "b", "c"], 1);
    state.apply(join_cmd("d", 4, 9000), 1);
    state.apply(Command::Leave { id: RaftId(3) }, 2);
    state.apply(Command::MarkDown { id: RaftId(2) }, 3);
    let map = partition_map(cluster(&state), 1_234);
    assert_eq!(
        map.version,
        VERSION_BASE + u32::try_from(cluster(&state).table_version()).unwrap()
    );
    assert_eq!(map.partition_count, 271);
    assert_eq!(map.generated_at, 1_234);
    let nodes: Vec<(&str, NodeStatus)> = map
        .nodes
        .iter()
        .map(|n| (n.node_id.as_str(), n.status))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("a", NodeStatus::Active),
            ("c", NodeStatus::Leaving),
            ("d", NodeStatus::Joining)
        ]
    );
    assert_eq!(
        map.nodes[0].endpoints.websocket.as_str(),
        "ws://a.local:8080"
    );
    assert_eq!(
        map.nodes[0].endpoints.http.as_deref(),
        Some("http://a.local:8080")
    );
    assert_eq!(map.partitions.len(), 271);
    for (i, p) in map.partitions.iter().enumerate() {
        assert_eq!(p.partition_id as usize, i);
        assert!(p.owner_node_id == "a" || p.owner_node_id == "c");
        assert!(
            !p.backup_node_ids
                .iter()
                .any(|b| b == p.owner_node_id.as_str() || b == "b")
        );
    }
}

#[test]
fn voters_are_three_then_five_and_keep_their_seats() {
    let mut state = formed(&["a", "b", "c", "d"], 1);
    let none = BTreeSet::new();
    let ids = |v: &[u64]| v.iter().map(|&i| RaftId(i)).collect::<BTreeSet<_>>();
    assert_eq!(
        desired_voters(cluster(&state).members(), &none),
        ids(&[1, 2, 3])
    );
    assert_eq!(
        desired_voters(cluster(&state).members(), &ids(&[2, 3, 4])),
        ids(&[2, 3, 4])
    );
    state.apply(join_cmd("e", 5, 9000), 1);
    assert_eq!(
        desired_voters(cluster(&state).members(), &ids(&[2, 3, 4])),
        ids(&[1, 2, 3, 4, 5])
    );
    state.apply(Command::MarkDown { id: RaftId(3) }, 2);
    state.apply(Command::Leave { id: RaftId(2) }, 3);
    // 4 live: back to 3 seats; the down and the leaving voter give theirs up.
    assert_eq!(
        desired_voters(cluster(&state).members(), &ids(&[1, 2, 3, 4, 5])),
        ids(&[1, 4, 5])
    );
}

#[test]
fn version_base_counts_seconds_since_2025() {
    assert_eq!(version_base_at(1_735_689_600), 0);
    assert_eq!(version_base_at(1_735_689_600 + 86_400), 86_400);
    assert_eq!(version_base_at(0), 0);
    assert_eq!(version_base_at(u64::MAX), u32::MAX);
}

#[test]
fn incarnations_are_compared_whole() {
    let mut state = formed(&["a", "b"], 1);
    let out = state.apply(join_cmd("a", 1 | (1 << 100), 9000), 1);
    assert!(matches!(
        out.result,
        CommandResult::Joined {
            replaced: Some(RaftId(1)),
            ..
        }
    ));
    let _ = topgun_cluster::Incarnation(0);
}
