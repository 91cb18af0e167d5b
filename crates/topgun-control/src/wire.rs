//! What travels between control-plane peers (CLUSTER.md §13, `RAFT_*` and `PROPOSE`): one
//! request, one reply, each the MsgPack of the enums below. The transport only carries
//! the bytes; nothing here knows about sockets.
//!
//! A request that does not decode gets [`Reply::Failed`] with [`RemoteFailure::Malformed`]:
//! bytes from the network are never trusted and never panic.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use topgun_cluster::{Command, CommandResult};

use crate::types::{MemberAddr, SnapshotMeta, TypeConfig, Vote};

/// A request from one control-plane peer to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// A whole snapshot in one message: the control state is tens of KiB.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A proposal forwarded by a member that is not the leader; the receiver stamps the time
    /// if it is the leader and redirects otherwise. It never forwards again, so a proposal
    /// crosses at most one hop per attempt.
    Propose(Command),
}

/// The reply to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// Committed and applied at the leader as log entry `index`.
    Proposed {
        index: u64,
        result: CommandResult,
    },
    /// The receiver is not the leader; `leader` is its best knowledge. Nothing was appended,
    /// so retrying elsewhere cannot apply the command twice.
    NotLeader {
        leader: Option<u64>,
        node: Option<MemberAddr>,
    },
    Failed(RemoteFailure),
}

/// Why a peer could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The request bytes did not decode, or decoded to something invalid.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The receiving Raft node has stopped (shut down, or a fatal storage error).
    #[error("the peer's Raft node has stopped: {0}")]
    Stopped(String),
    /// A proposal whose log entry was appended and then lost to a leader change: it may
    /// still commit, so a retry could apply it twice.
    #[error("proposal outcome unknown: {0}")]
    Indeterminate(String),
    #[error("{0}")]
    Other(String),
}

/// Why bytes could not be turned into a message.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("cannot decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    Ok(rmp_serde::to_vec(message)?)
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Encodes a reply for the wire. A reply that cannot be encoded (no known case) becomes an
/// empty one, which the caller decodes as an error rather than waiting for ever.
pub(crate) fn encode_reply(reply: &Reply) -> Vec<u8> {
    encode(reply).unwrap_or_default()
}
