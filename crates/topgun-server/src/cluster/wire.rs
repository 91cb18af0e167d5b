//! The control channel's own messages (CLUSTER.md §13) and their service ids: status while
//! forming, bootstrap, join, heartbeats. Raft's messages travel as the bytes
//! `topgun-control` encodes; these are small serde structs in `MessagePack`.

use serde::{Deserialize, Serialize};
use topgun_cluster::ids::{ClusterUuid, Incarnation, MemberName};
use topgun_cluster::member::MemberAddrs;

use super::formation::{InCluster, Status};

/// Raft requests (`topgun_control::RaftControl::handle`).
pub const RAFT: u8 = 1;
/// [`StatusWire`] for [`StatusWire`]: who is there, and in which cluster.
pub const STATUS: u8 = 2;
/// [`BootstrapWire`]: the lowest-named member forms the cluster.
pub const BOOTSTRAP: u8 = 3;
/// [`StatusWire`] for [`JoinReply`]: admit a member into a running cluster.
pub const JOIN: u8 = 4;
/// `(name, Raft id)` for [`super::resume::RejoinReply`]: may a restarted member resume on
/// its kept log?
pub const REJOIN: u8 = 5;
/// One-way: `u64` Raft id of a live member and `u8` 1 if it keeps its data on disk, to the
/// leader.
pub const HEARTBEAT: u8 = super::rpc::FIRST_MESSAGE_KIND;

/// A member's [`Status`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusWire {
    pub name: String,
    pub incarnation: u128,
    pub cluster_addr: String,
    pub client_url: String,
    pub http_url: String,
    /// The cluster's uuid and its leader's cluster address, when in one.
    pub in_cluster: Option<(u128, Option<String>)>,
}

impl StatusWire {
    pub fn of(status: &Status) -> Self {
        Self {
            name: status.name.as_str().to_owned(),
            incarnation: status.incarnation.0,
            cluster_addr: status.addrs.cluster_addr.clone(),
            client_url: status.addrs.client_url.clone(),
            http_url: status.addrs.http_url.clone(),
            in_cluster: status
                .in_cluster
                .as_ref()
                .map(|c| (c.uuid.0, c.leader.clone())),
        }
    }

    /// The status, if its name is a valid member name.
    pub fn status(self) -> Option<Status> {
        Some(Status {
            name: MemberName::new(&self.name).ok()?,
            incarnation: Incarnation(self.incarnation),
            addrs: MemberAddrs {
                cluster_addr: self.cluster_addr,
                client_url: self.client_url,
                http_url: self.http_url,
            },
            in_cluster: self.in_cluster.map(|(uuid, leader)| InCluster {
                uuid: ClusterUuid(uuid),
                leader,
            }),
        })
    }
}

/// The Raft ids the bootstrapping member handed out, in name order, and where each listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapWire {
    pub members: Vec<(String, u64, String)>,
}

/// The answer to a `JOIN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// Admitted under this Raft id; the leader adds it to the group next.
    Admitted { raft_id: u64 },
    /// Not the leader: ask this cluster address.
    Redirect { leader: String },
    /// Not admitted (a live member holds the name at another address, …).
    Refused { reason: String },
}

/// `value` in `MessagePack`: these structs always encode.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).unwrap_or_else(|e| {
        // Only our own derived types are encoded here, and they always encode. Should one
        // not, the peer refuses the empty message as malformed and says so, rather than
        // this member panicking.
        tracing::error!(error = %e, "a cluster message could not be encoded");
        Vec::new()
    })
}

/// Reads a message, naming what failed.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("a malformed cluster message: {e}"))
}
