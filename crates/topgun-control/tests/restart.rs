//! The redb flavour: a node restarted over its `raft.redb` comes back with its vote, log and
//! state, and rejoins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use topgun_cluster::CommandResult;
use topgun_control::{ControlPlane, RaftControl, Storage};

/// Each node's data directory under `dir`, holding its `raft.redb`.
fn redb_in(dir: &tempfile::TempDir) -> impl Fn(u64) -> Storage + '_ {
    move |id| {
        let data_dir = dir.path().join(format!("n{id}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        Storage::redb_in(&data_dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reopened_over_its_file_recovers_its_state_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let storage = redb_in(&dir);
    let router = Arc::new(Router::default());
    let mut nodes = start_group(&router, &[1, 2, 3], fast_config(), &storage).await;
    let first = Arc::clone(&nodes[&leader_of(&nodes).await]);
    first.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    // Hand leadership over, so that the term is past what a fresh node reaches by itself
    // before its first election timeout.
    let id = *nodes.keys().find(|&&id| id != first.id()).unwrap();
    let next = *nodes.keys().find(|&&n| n != first.id() && n != id).unwrap();
    first.transfer_leader(next).await.unwrap();
    eventually(Duration::from_secs(5), "the transfer", || {
        nodes
            .values()
            .all(|n| n.leader() == Some(next))
            .then_some(())
    })
    .await;
    let leader = Arc::clone(&nodes[&next]);
    leader.propose(join_cmd("n4", 4_000)).await.unwrap();

    let index = applied(&leader).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let before = states_at(&all, index).await.remove(0);
    let node = nodes.remove(&id).unwrap();
    let term = node.metrics().term;
    node.shutdown().await.unwrap();
    router.remove(id);
    drop(node);

    // The group moves on without it.
    let joined = leader.propose(join_cmd("n5", 5_000)).await.unwrap();
    assert!(matches!(joined, CommandResult::Joined { .. }), "{joined:?}");

    // Cut off while it comes back: whatever it knows now came from its file.
    router.cut_off(id);
    let back = start(&router, id, fast_config(), &storage(id)).await;
    let recovered = applied(&back);
    assert_eq!(
        recovered.applied_index, index,
        "re-applied up to the saved commit"
    );
    assert_eq!(*recovered.state, *before);
    assert!(term >= 2, "term {term}");
    let within = Duration::from_millis(fast_config().election_timeout_min_ms / 2);
    eventually(within, "the recovered vote", || {
        (back.metrics().term >= term).then_some(())
    })
    .await;
    router.heal(id);

    nodes.insert(id, back);
    let index = applied(&leader).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let states = states_at(&all, index).await;
    assert!(states.iter().all(|s| **s == *states[0]));
    assert_eq!(states[0].cluster().unwrap().members().count(), 5);
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_group_restarted_over_its_files_elects_a_leader_and_keeps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let storage = redb_in(&dir);
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), &storage).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    let index = applied(&leader).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let before = states_at(&all, index).await.remove(0);
    drop(all);
    drop(leader);
    shutdown_all(&nodes).await;
    for id in [1, 2, 3] {
        router.remove(id);
    }
    drop(nodes);

    let mut nodes: BTreeMap<u64, Arc<RaftControl>> = BTreeMap::new();
    for id in [1, 2, 3] {
        nodes.insert(id, start(&router, id, fast_config(), &storage(id)).await);
    }
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    let result = leader.propose(join_cmd("n4", 4_000)).await.unwrap();
    assert!(matches!(result, CommandResult::Joined { .. }), "{result:?}");
    let index = applied(&leader).applied_index;
    let all: Vec<_> = nodes.values().collect();
    let states = states_at(&all, index).await;
    assert!(states.iter().all(|s| **s == *states[0]));
    let cluster = states[0].cluster().unwrap();
    assert_eq!(cluster.members().count(), 4);
    assert_eq!(
        before.cluster().unwrap().table(),
        cluster.table(),
        "a join moves no partition until it is activated"
    );
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_was_compacted_recovers_from_its_stored_snapshot_and_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let storage = redb_in(&dir);
    let config = topgun_control::ControlConfig {
        snapshot_after_logs: 3,
        max_in_snapshot_log_to_keep: 0,
        ..fast_config()
    };
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1], config, &storage).await;
    let node = Arc::clone(&nodes[&leader_of(&nodes).await]);
    node.propose(bootstrap_cmd(&[1])).await.unwrap();
    for n in 0..7 {
        node.propose(join_cmd(&format!("x{n}"), 10 + n))
            .await
            .unwrap();
    }
    let purged = eventually(Duration::from_secs(5), "a compacted log", || {
        node.metrics().purged_index.filter(|&p| p > 3)
    })
    .await;
    let before = applied(&node);
    assert!(before.applied_index > purged);
    drop(node);
    shutdown_all(&nodes).await;
    router.remove(1);
    drop(nodes);

    let back = start(&router, 1, config, &storage(1)).await;
    let recovered = applied(&back);
    assert_eq!(recovered.applied_index, before.applied_index);
    assert_eq!(*recovered.state, *before.state);
    let m = eventually(Duration::from_secs(2), "recovered metrics", || {
        let m = back.metrics();
        m.snapshot_index.is_some().then_some(m)
    })
    .await;
    assert!(m.snapshot_index >= Some(purged), "{m:?}");
    let result = back.propose(join_cmd("y", 99)).await.unwrap();
    assert!(matches!(result, CommandResult::Joined { .. }), "{result:?}");
    back.shutdown().await.unwrap();
}
