//! The boundary the server talks to: [`ControlPlane`]. [`crate::RaftControl`] implements it
//! on openraft; the simulation (CLUSTER.md §17) can implement it with a model log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;
use topgun_cluster::{Command, CommandResult};

use crate::error::{ControlError, ProposeError};
use crate::network::BoxFuture;
use crate::types::{Applied, MemberAddr};

/// Timings and bounds of one control-plane node (CLUSTER.md §3.2 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlConfig {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in `[min, max)` starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one; the log before it is
    /// purged (down to `max_in_snapshot_log_to_keep` entries).
    pub snapshot_after_logs: u64,
    /// Entries kept below the snapshot, so a briefly lagging follower catches up from the log
    /// instead of a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
    /// Bound on one forwarded proposal's round trip.
    pub propose_timeout_ms: u64,
    /// Bound on `add_learner` waiting for the learner to catch up.
    pub learner_catch_up_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_after_logs: 5_000,
            max_in_snapshot_log_to_keep: 1_000,
            propose_timeout_ms: 5_000,
            learner_catch_up_ms: 10_000,
        }
    }
}

/// A node's role in the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Leader,
    Candidate,
    Follower,
    Learner,
    Shutdown,
}

/// A snapshot of a node's Raft metrics (CLUSTER.md §16, `metrics.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMetrics {
    pub id: u64,
    pub role: Role,
    pub term: u64,
    pub leader: Option<u64>,
    pub applied_index: u64,
    /// Index of the last snapshot this node built or installed.
    pub snapshot_index: Option<u64>,
    /// Entries up to this index are gone from the log.
    pub purged_index: Option<u64>,
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
}

/// The control plane as the server sees it. Object-safe: every async call is a boxed future.
///
/// Membership calls (`initialize` aside) run on the leader and return
/// [`ControlError::NotLeader`] elsewhere; proposals work on any member.
pub trait ControlPlane: Send + Sync {
    /// Commits `cmd` and returns what applying it answered. On a follower the proposal is
    /// forwarded to the leader; the leader stamps `now_ms` from its wall clock. Returns once
    /// this node's `state()` shows the command applied (bounded by `propose_timeout_ms`).
    fn propose(&self, cmd: Command) -> BoxFuture<'_, Result<CommandResult, ProposeError>>;

    /// The applied state, published after every applied batch, snapshot install and restart
    /// recovery. A receiver sees the latest value; intermediate ones may be skipped.
    fn state(&self) -> watch::Receiver<Arc<Applied>>;

    fn leader(&self) -> Option<u64>;

    fn is_leader(&self) -> bool;

    fn metrics(&self) -> ControlMetrics;

    /// Forms the group with `members` as its voters (this node among them). Call it on one
    /// node, or on all with identical members.
    fn initialize(
        &self,
        members: BTreeMap<u64, MemberAddr>,
    ) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Adds a non-voting member and waits (bounded by `learner_catch_up_ms`) until it has
    /// caught up with the log.
    fn add_learner(&self, id: u64, addr: MemberAddr) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Makes exactly `voters` the voters (each must already be a member). Voters left out
    /// stay on as learners — every member applies the state machine (§2); use
    /// [`ControlPlane::remove_node`] to drop one for good.
    fn change_voters(&self, voters: BTreeSet<u64>) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Removes `id` from the group entirely, voter or learner; a node not in the group is
    /// already removed.
    fn remove_node(&self, id: u64) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Asks the leader to hand leadership to `to` (graceful leave, §3.5). Returns once the
    /// request is submitted; watch `leader()` for the result.
    fn transfer_leader(&self, to: u64) -> BoxFuture<'_, Result<(), ControlError>>;

    /// Stops this node's Raft and releases its storage file: it can be reopened at once.
    /// Further calls fail with `Stopped`.
    fn shutdown(&self) -> BoxFuture<'_, Result<(), ControlError>>;
}
