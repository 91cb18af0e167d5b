//! TopGun's cluster control plane (CLUSTER.md §3): one Raft group, on openraft, replicating
//! `topgun-cluster`'s [`ControlState`](topgun_cluster::ControlState).
//!
//! | Module | Owns |
//! |---|---|
//! | [`types`] | the openraft type config, [`Proposal`] (command + leader time), [`MemberAddr`], [`Applied`] |
//! | [`control`] | the [`ControlPlane`] trait the server talks to, [`ControlConfig`], [`ControlMetrics`] |
//! | `raft_control` | [`RaftControl`]: `ControlPlane` on openraft; proposal forwarding; serving peers |
//! | `state_machine` | openraft's state machine: `ControlState::apply`, snapshots, the applied-state watch |
//! | [`store`] | the log store in two flavours, memory and `raft.redb` ([`Storage`]) |
//! | [`network`] | [`PeerRpc`], the byte-level seam to the transport, and openraft's network over it |
//! | [`wire`] | the peer request/reply enums, MsgPack |
//! | [`error`] | [`ProposeError`], [`ControlError`] |
//!
//! Invariants:
//! * every member applies the same committed entries in the same order through the same
//!   `ControlState::apply`, with the `now_ms` the leader stamped — so states are equal at
//!   equal applied indexes, whatever the storage flavour;
//! * `state()` is published before a proposal is answered: a proposer that got its result
//!   sees its effect;
//! * bytes from peers, files or snapshots are decoded with validation; a bad request gets an
//!   error reply, never a panic.

pub mod control;
pub mod error;
pub mod network;
mod raft_control;
mod state_machine;
pub mod store;
pub mod types;
pub mod wire;

pub use control::{ControlConfig, ControlMetrics, ControlPlane, Role};
pub use error::{ControlError, ProposeError};
pub use network::{BoxFuture, PeerRpc, RpcError};
pub use raft_control::{PROPOSE_ATTEMPTS_MAX, RaftControl};
pub use store::Storage;
pub use types::{Applied, MemberAddr, Proposal, TypeConfig};
pub use wire::{RemoteFailure, WireError};
