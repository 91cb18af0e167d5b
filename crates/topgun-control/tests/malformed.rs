//! Bytes from a peer are never trusted: anything that does not decode to a valid request gets
//! a `Malformed` error reply, and the node keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use topgun_cluster::{CommandResult, ControlState};
use topgun_control::wire::{self, Reply, Request};
use topgun_control::{ControlPlane, RaftControl, RemoteFailure, Storage};

async fn reply_to(node: &RaftControl, bytes: &[u8]) -> Reply {
    wire::decode::<Reply>(&node.handle(bytes).await).expect("every reply decodes")
}

fn is_malformed(reply: &Reply) -> bool {
    matches!(reply, Reply::Failed(RemoteFailure::Malformed(_)))
}

/// A small deterministic generator: the test needs varied bytes, not a dependency.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_an_error_reply_and_the_node_keeps_working() {
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);

    // Empty, random, and every truncation of a valid request.
    assert!(is_malformed(&reply_to(&leader, &[]).await));
    for seed in 0..300 {
        let bytes = noise(seed, usize::try_from(seed % 64).unwrap() + 1);
        let reply = reply_to(&leader, &bytes).await;
        assert!(is_malformed(&reply), "seed {seed}: {reply:?}");
    }
    let valid = wire::encode(&Request::Propose(bootstrap_cmd(&[1, 2, 3]))).unwrap();
    for len in 0..valid.len() {
        let reply = reply_to(&leader, &valid[..len]).await;
        assert!(is_malformed(&reply), "truncated to {len}: {reply:?}");
    }

    // A reply sent as a request is the wrong type.
    let confused = wire::encode(&Reply::Proposed {
        index: 1,
        result: CommandResult::Done,
    })
    .unwrap();
    assert!(is_malformed(&reply_to(&leader, &confused).await));

    // A forbidden member name inside an otherwise valid proposal (same length, so only
    // the name's validation can refuse it).
    let mut bad_name = valid.clone();
    let at = bad_name.windows(2).position(|w| w == b"n1").unwrap();
    bad_name[at + 1] = b':';
    assert!(is_malformed(&reply_to(&leader, &bad_name).await));

    // Nothing above changed the state, and the node still serves proposals.
    assert_eq!(*applied(&leader).state, ControlState::new());
    let result = leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    assert!(
        matches!(result, CommandResult::Bootstrapped { .. }),
        "{result:?}"
    );
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_bytes_are_not_a_control_state_is_refused_before_raft_sees_it() {
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    let follower = nodes.values().find(|n| n.id() != leader.id()).unwrap();

    let snapshot = Request::Snapshot {
        vote: openraft::impls::Vote::new(1, 1),
        meta: openraft::SnapshotMeta::default(),
        data: b"not a control state".to_vec(),
    };
    let reply = reply_to(follower, &wire::encode(&snapshot).unwrap()).await;
    assert!(is_malformed(&reply), "{reply:?}");
    // The follower is still a working member.
    let result = follower.propose(join_cmd("n4", 4_000)).await.unwrap();
    assert!(matches!(result, CommandResult::Joined { .. }), "{result:?}");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_beyond_its_senders_vote_is_refused_and_the_node_keeps_working() {
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], fast_config(), |_| Storage::Memory).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    let follower = nodes.values().find(|n| n.id() != leader.id()).unwrap();

    // A readable state and the real leader's committed vote, but a last log id from a term
    // eight ahead of it: openraft asserts against that inside its core task, which would stop
    // this node's Raft (checked by removing the guard: the reply becomes `Stopped`).
    let term = follower.metrics().term;
    let leader_id = openraft::impls::leader_id_adv::LeaderId {
        term: term + 8,
        node_id: leader.id(),
    };
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(openraft::LogId::new(leader_id, 1_000)),
        ..openraft::SnapshotMeta::default()
    };
    let forged = Request::Snapshot {
        vote: openraft::impls::Vote::new_committed(term, leader.id()),
        meta,
        data: wire::encode(&*applied(&leader).state).unwrap(),
    };
    let reply = reply_to(follower, &wire::encode(&forged).unwrap()).await;
    assert!(is_malformed(&reply), "{reply:?}");
    let result = follower.propose(join_cmd("n4", 4_000)).await.unwrap();
    assert!(matches!(result, CommandResult::Joined { .. }), "{result:?}");
    shutdown_all(&nodes).await;
}
