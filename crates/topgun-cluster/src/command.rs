//! What the replicated log carries (`Command`), what applying one answers (`CommandResult`)
//! and what the local node must do about it (`Effect`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::CatalogPut;
use crate::ids::{ClusterUuid, Epoch, Incarnation, MemberName, RaftId};
use crate::member::{MemberAddrs, MemberState};
use crate::plan::Move;
use crate::table::PartitionId;

/// Most backups per partition (`--backups`, CLUSTER.md §14).
pub const BACKUPS_MAX: u8 = 3;

/// A member named in `Bootstrap`; ids are handed out 1..=k in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapMember {
    pub name: MemberName,
    pub incarnation: Incarnation,
    pub addrs: MemberAddrs,
}

/// A committed change of the control state. Time never travels inside a command except as
/// the `now_ms` the leader stamps beside it, so replaying the log is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Forms the cluster: every member `Active`, an even table at epoch 1.
    Bootstrap {
        cluster_uuid: ClusterUuid,
        /// Seconds since 2025-01-01 UTC at bootstrap (see [`version_base_at`]).
        version_base: u32,
        /// Backups per partition, `0..=BACKUPS_MAX`. In the command rather than in each
        /// node's config so that every replica assigns alike.
        backups: u8,
        members: Vec<BootstrapMember>,
    },
    Join {
        name: MemberName,
        incarnation: Incarnation,
        addrs: MemberAddrs,
    },
    Activate {
        id: RaftId,
    },
    Leave {
        id: RaftId,
    },
    MarkDown {
        id: RaftId,
    },
    MarkUp {
        id: RaftId,
    },
    Remove {
        id: RaftId,
    },
    /// One wave of [`crate::plan::plan`]; moves planned against an older epoch are skipped.
    ApplyPlan {
        moves: Vec<Move>,
    },
    /// `owner` takes `pid` over at `epoch`, which must be the current epoch + 1.
    OwnerChanged {
        pid: PartitionId,
        owner: RaftId,
        epoch: Epoch,
    },
    /// Sets or removes one key of a replicated catalog (admin policies, the index catalog).
    /// Never changes the client view.
    CatalogPut(CatalogPut),
}

/// Why a command changed nothing. A refused command never changes the state.
///
/// The texts are `Cow`: the state machine names them statically, and a refusal decoded from a
/// peer's reply owns its copy.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("the cluster is not bootstrapped yet")]
    NotBootstrapped,
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error("bootstrap refused: {reason}")]
    BadBootstrap { reason: Cow<'static, str> },
    /// Two processes configured with one `--node-id`: the live one keeps the name until it
    /// is down, so the two cannot evict each other for ever (§3.4).
    #[error("member name {name} is in use by live member {holder} at another address")]
    NameInUse { name: MemberName, holder: RaftId },
    #[error("no member {id}")]
    UnknownMember { id: RaftId },
    #[error("member {id} is {state:?}, which {command} does not apply to")]
    WrongState {
        id: RaftId,
        state: MemberState,
        command: Cow<'static, str>,
    },
    #[error("{pid}: epoch {given} is stale (current {current})")]
    StaleEpoch {
        pid: PartitionId,
        current: Epoch,
        given: Epoch,
    },
    #[error("{pid}: {owner} cannot own it ({reason})")]
    BadOwner {
        pid: PartitionId,
        owner: RaftId,
        reason: Cow<'static, str>,
    },
    /// A conditional catalog change found the key `present` (or not) when it asked for the
    /// opposite.
    #[error("{catalog}/{key} is {}", if *present { "present" } else { "absent" })]
    CatalogCondition {
        catalog: Cow<'static, str>,
        key: Cow<'static, str>,
        present: bool,
    },
    #[error("catalog {catalog} holds the most allowed ({max}); remove one first")]
    CatalogFull {
        catalog: Cow<'static, str>,
        max: usize,
    },
    #[error("catalog change refused: {reason}")]
    BadCatalogPut { reason: Cow<'static, str> },
}

/// The typed answer to a command (openraft's `R`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Bootstrapped {
        ids: Vec<(MemberName, RaftId)>,
    },
    /// `replaced`: the previous incarnation of the name, removed in the same step.
    Joined {
        raft_id: RaftId,
        replaced: Option<RaftId>,
    },
    /// The command changed the state.
    Done,
    /// Nothing to do: the command repeated a state already reached (a retried proposal).
    Unchanged,
    PlanApplied {
        applied: usize,
        skipped: usize,
    },
    Refused(Refusal),
}

/// What the node applying a command must do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    MemberJoined {
        id: RaftId,
    },
    MemberActivated {
        id: RaftId,
    },
    MemberLeaving {
        id: RaftId,
    },
    /// Stop sending to it; its partitions have already failed over in this same step.
    MemberDown {
        id: RaftId,
    },
    MemberUp {
        id: RaftId,
    },
    /// Drop its connections; its Raft id is retired for good.
    MemberRemoved {
        id: RaftId,
    },
    /// Shards fence the old owner from `epoch` on; routing uses the new one.
    OwnershipChanged {
        pid: PartitionId,
        old: RaftId,
        new: RaftId,
        epoch: Epoch,
    },
    /// No live member could take `pid` over; writes to it wait or get 503.
    PartitionLost {
        pid: PartitionId,
    },
    /// The lost partition's owner is back; it admits writes again.
    PartitionRecovered {
        pid: PartitionId,
    },
    /// The client view changed: push `PARTITION_MAP` version `map_version` to every client.
    /// Always last, at most once per command.
    TableChanged {
        table_version: u64,
        map_version: u32,
    },
}

/// The result of applying one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub result: CommandResult,
    pub effects: Vec<Effect>,
}

impl Outcome {
    pub(crate) fn refused(refusal: Refusal) -> Self {
        Self {
            result: CommandResult::Refused(refusal),
            effects: Vec::new(),
        }
    }
}

/// 2025-01-01T00:00:00Z as Unix seconds: the zero of `version_base`.
pub const VERSION_EPOCH_UNIX_S: u64 = 1_735_689_600;

/// `version_base` for a bootstrap at `unix_s` (the leader's clock, read by the caller):
/// seconds since 2025-01-01 UTC, so a cluster re-created from nothing publishes versions
/// above those clients held from its previous life (§3.8). Saturates rather than wrap.
pub fn version_base_at(unix_s: u64) -> u32 {
    u32::try_from(unix_s.saturating_sub(VERSION_EPOCH_UNIX_S)).unwrap_or(u32::MAX)
}
