//! Real openraft nodes in one process, every request and reply through the wire format.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use topgun_cluster::{CommandResult, MemberName, PARTITION_COUNT, RaftId};
use topgun_control::wire::{self, Reply, Request};
use topgun_control::{ControlConfig, ControlPlane, RaftControl, Storage};

fn cluster_table_owners(state: &topgun_cluster::ControlState) -> usize {
    state
        .cluster()
        .unwrap()
        .table()
        .owner_counts()
        .values()
        .sum()
}

fn follower_of(nodes: &BTreeMap<u64, Arc<RaftControl>>, leader: u64) -> &Arc<RaftControl> {
    nodes.values().find(|n| n.id() != leader).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_proposed_on_a_follower_reaches_every_node_identically() {
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let leader = leader_of(&nodes).await;
    let follower = follower_of(&nodes, leader);

    let result = follower.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    let ids: Vec<_> = (1..=3)
        .map(|n| (MemberName::new(&format!("n{n}")).unwrap(), RaftId(n)))
        .collect();
    assert_eq!(result, CommandResult::Bootstrapped { ids });

    // Answered only after the proposer's own state shows it.
    let proposer_state = applied(follower);
    assert!(proposer_state.state.cluster().is_some());
    let index = applied(&nodes[&leader]).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let states = states_at(&all, index).await;
    for state in &states {
        assert_eq!(**state, *states[0]);
        let cluster = state.cluster().unwrap();
        assert_eq!(cluster.table_version(), 1);
        assert_eq!(cluster_table_owners(state), PARTITION_COUNT);
    }
    let metrics = nodes[&leader].metrics();
    assert_eq!(metrics.voters, [1, 2, 3].into());
    assert_eq!(metrics.leader, Some(leader));
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_is_replaced_and_proposals_keep_working() {
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let old = leader_of(&nodes).await;
    nodes[&old]
        .propose(bootstrap_cmd(&[1, 2, 3]))
        .await
        .unwrap();

    router.cut_off(old);
    let rest: BTreeMap<_, _> = nodes
        .iter()
        .filter(|(id, _)| **id != old)
        .map(|(id, n)| (*id, Arc::clone(n)))
        .collect();
    let new = leader_of(&rest).await;
    assert_ne!(new, old);
    let result = follower_of(&rest, new).propose(join_cmd("n4", 4_000)).await;
    assert!(
        matches!(result, Ok(CommandResult::Joined { .. })),
        "{result:?}"
    );

    // Back in, the old leader steps down and applies what it missed.
    router.heal(old);
    let index = applied(&nodes[&new]).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let states = states_at(&all, index).await;
    assert!(states.iter().all(|s| **s == *states[0]));
    assert_eq!(states[0].cluster().unwrap().members().count(), 4);
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_after_the_log_was_purged_catches_up_from_a_snapshot() {
    let config = ControlConfig {
        snapshot_after_logs: 4,
        max_in_snapshot_log_to_keep: 0,
        ..fast_config()
    };
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], config, |_| Storage::Memory).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    for n in 0..8 {
        let name = format!("x{n}");
        leader.propose(join_cmd(&name, 100 + n)).await.unwrap();
    }
    eventually(
        Duration::from_secs(5),
        "the leader to purge its log",
        || leader.metrics().purged_index.filter(|&p| p > 2),
    )
    .await;

    let learner = start(&router, 4, config, &Storage::Memory).await;
    leader.add_learner(4, addr(4)).await.unwrap();
    let index = applied(&leader).applied_index;
    let mut all: Vec<_> = nodes.values().collect();
    all.push(&learner);
    let states = states_at(&all, index).await;
    assert!(states.iter().all(|s| **s == *states[0]));
    assert_eq!(states[0].cluster().unwrap().members().count(), 11);
    let m = learner.metrics();
    assert!(m.snapshot_index.is_some(), "{m:?}");
    assert!(leader.metrics().learners.contains(&4));
    learner.shutdown().await.unwrap();
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_replaced_in_one_change_and_a_removed_node_leaves_the_group() {
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    let learner = start(&router, 4, fast_config(), &Storage::Memory).await;
    leader.add_learner(4, addr(4)).await.unwrap();

    // Membership calls belong to the leader.
    let follower = follower_of(&nodes, leader.id());
    let refused = follower.add_learner(5, addr(5)).await;
    assert!(
        matches!(refused, Err(topgun_control::ControlError::NotLeader { leader: Some(l) }) if l == leader.id()),
        "{refused:?}"
    );

    // Swap a follower's seat for the learner; the follower stays on as a learner.
    let out = follower.id();
    let voters = [1, 2, 3, 4].into_iter().filter(|&v| v != out).collect();
    leader.change_voters(voters).await.unwrap();
    let m = leader.metrics();
    assert!(m.voters.contains(&4) && !m.voters.contains(&out), "{m:?}");
    assert!(m.learners.contains(&out), "{m:?}");

    leader.remove_node(out).await.unwrap();
    let m = leader.metrics();
    assert!(
        !m.voters.contains(&out) && !m.learners.contains(&out),
        "{m:?}"
    );
    // Removing a node that is not in the group is already done.
    leader.remove_node(out).await.unwrap();

    // The new group still commits.
    let result = learner.propose(join_cmd("n9", 9_000)).await.unwrap();
    assert!(matches!(result, CommandResult::Joined { .. }), "{result:?}");
    learner.shutdown().await.unwrap();
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_leader_is_replaced_and_proposals_keep_working() {
    let router = Arc::new(Router::default());
    let mut nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let old = leader_of(&nodes).await;
    nodes[&old]
        .propose(bootstrap_cmd(&[1, 2, 3]))
        .await
        .unwrap();

    let gone = nodes.remove(&old).unwrap();
    gone.shutdown().await.unwrap();
    // A stopped node answers peers with an error reply instead of hanging them.
    let request = wire::encode(&Request::Propose(join_cmd("late", 1))).unwrap();
    let reply = wire::decode::<Reply>(&gone.handle(&request).await).unwrap();
    assert!(matches!(reply, Reply::Failed(_)), "{reply:?}");
    let new = leader_of(&nodes).await;
    assert_ne!(new, old);
    let result = follower_of(&nodes, new)
        .propose(join_cmd("n4", 4_000))
        .await;
    assert!(
        matches!(result, Ok(CommandResult::Joined { .. })),
        "{result:?}"
    );
    let index = applied(&nodes[&new]).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let states = states_at(&all, index).await;
    assert!(states.iter().all(|s| **s == *states[0]));
    shutdown_all(&nodes).await;
}
