//! The openraft type configuration (CLUSTER.md §3.2) and the values the control plane hands
//! out: what a log entry carries, how a node is addressed, and what an applied state looks
//! like to its readers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use topgun_cluster::{Command, CommandResult, ControlState};

/// One log entry's payload: a command and the leader's wall clock when it proposed it.
///
/// Time travels in the entry, stamped once by the leader, so every member replaying the log
/// hands `ControlState::apply` the same `now_ms` and arrives at the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub cmd: Command,
    pub now_ms: u64,
}

/// openraft asks its payloads for `Display`, used in its own log lines.
impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{}", self.cmd, self.now_ms)
    }
}

/// How a Raft node is reached: its member name and the `host:cluster-port` peers dial.
/// Stored in the Raft membership, so every member can dial every other from the log alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MemberAddr {
    pub name: String,
    pub cluster_addr: String,
}

impl fmt::Display for MemberAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.cluster_addr)
    }
}

openraft::declare_raft_types!(
    /// The control plane's openraft types: node ids are `RaftId.0`.
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = u64,
        Node = MemberAddr,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub(crate) type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot's bytes are the MsgPack of a `ControlState` (see `state_machine.rs`).
pub(crate) type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// The control state as of a log index: what `ControlPlane::state()` publishes after every
/// applied batch, every snapshot install and at recovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Index of the last applied log entry; 0 before anything was applied.
    pub applied_index: u64,
    pub state: Arc<ControlState>,
}
