//! The control plane's errors. Each says whether the cluster state may have changed.

use thiserror::Error;

use crate::wire::RemoteFailure;

/// Why a proposal has no result.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// No leader was reachable within the bounded attempts. Nothing was appended.
    #[error("no leader accepted the proposal after {attempts} attempts")]
    NoLeader { attempts: u32 },
    /// The proposal may or may not commit (a timeout after sending, or its entry lost to a
    /// leader change). Commands are fenced by epochs and mostly answer `Unchanged` when
    /// repeated, but the caller decides whether to retry.
    #[error("proposal outcome unknown: {reason}")]
    Indeterminate { reason: String },
    /// This node's Raft has stopped. Nothing was appended by this call.
    #[error("the control plane has stopped: {reason}")]
    Stopped { reason: String },
    /// The leader refused or failed it for another reason; nothing was applied.
    #[error("proposal failed at the leader: {0}")]
    Remote(RemoteFailure),
}

/// Why a membership or lifecycle call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// Membership changes run on the leader only; `leader` is this node's best knowledge.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// `initialize` on a node that already has a log or membership: the cluster exists.
    #[error("already initialized: {0}")]
    AlreadyInitialized(String),
    /// The change was refused and nothing changed (e.g. a voter set without this node's
    /// learners, or a change while another is in flight).
    #[error("membership change refused: {0}")]
    Refused(String),
    /// The call did not finish in its bound. A membership change may still complete.
    #[error("{what} did not finish within {timeout_ms} ms")]
    Timeout { what: &'static str, timeout_ms: u64 },
    /// Raft has stopped or its storage failed.
    #[error("the control plane has stopped: {0}")]
    Stopped(String),
    /// Opening the storage or building the Raft node failed.
    #[error("cannot start the control plane: {0}")]
    Open(String),
    #[error("invalid control config: {0}")]
    Config(String),
}
