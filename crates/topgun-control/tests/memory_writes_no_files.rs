//! The memory flavour (`STORAGE_BACKEND=null|memory`) writes nothing: run a group with the
//! working directory in an empty folder and find it still empty. Alone in its own test binary
//! because the working directory is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use topgun_control::{ControlConfig, ControlPlane, Storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_group_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let config = ControlConfig {
        snapshot_after_logs: 2,
        max_in_snapshot_log_to_keep: 0,
        ..fast_config()
    };
    let router = Arc::new(Router::default());
    let nodes = start_group(&router, &[1, 2, 3], config, |_| Storage::Memory).await;
    let leader = Arc::clone(&nodes[&leader_of(&nodes).await]);
    leader.propose(bootstrap_cmd(&[1, 2, 3])).await.unwrap();
    for n in 0..4 {
        leader
            .propose(join_cmd(&format!("x{n}"), 10 + n))
            .await
            .unwrap();
    }
    assert!(leader.metrics().snapshot_index.is_some() || leader.metrics().applied_index > 0);
    shutdown_all(&nodes).await;
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files written: {left:?}");
}
