//! A member record (CLUSTER.md §3.1) and its life cycle.
//!
//! ```text
//! Join ─▶ Joining ─Activate─▶ Active ─Leave─▶ Leaving ─Remove─▶ (gone)
//!            │                  │  ▲             │
//!            └──────MarkDown────┴──┼─────────────┘
//!                               ▼  │ MarkUp
//!                              Down ─Remove─▶ (gone)
//! ```

use serde::{Deserialize, Serialize};
use topgun_core::protocol::enums::NodeStatus;

use crate::ids::{Incarnation, MemberName, RaftId};

/// Where a member can be reached. Per incarnation: a restart may move it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// `host:cluster-port` that peers dial.
    pub cluster_addr: String,
    /// The advertised `ws://host:port` clients dial, listed verbatim in `PARTITION_MAP`.
    pub client_url: String,
    /// `endpoints.http` of `PARTITION_MAP`.
    pub http_url: String,
}

/// Where a member is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Committed, catching up the log; listed to clients, owns nothing until `Activate`.
    Joining,
    /// Eligible to own partitions and back them up.
    Active,
    /// Handing its partitions off before it goes; still listed and still serving.
    Leaving,
    /// Silent past `member_down_after_ms`, or replaced by a new incarnation. Never listed to
    /// clients (§3.7): the TS client revives a node only after it vanished from `nodes`.
    Down,
}

impl MemberState {
    /// Live members are the ones clients see and the only ones that may own a partition.
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Down)
    }

    /// `PARTITION_MAP.nodes[].status`; `None` for `Down`, which is omitted (§3.7).
    pub fn node_status(self) -> Option<NodeStatus> {
        match self {
            Self::Joining => Some(NodeStatus::Joining),
            Self::Active => Some(NodeStatus::Active),
            Self::Leaving => Some(NodeStatus::Leaving),
            Self::Down => None,
        }
    }
}

/// One incarnation of a member, as the state machine records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub raft_id: RaftId,
    pub name: MemberName,
    pub incarnation: Incarnation,
    pub addrs: MemberAddrs,
    pub state: MemberState,
    /// The leader's clock (carried in the command) when `state` was entered.
    pub since_ms: u64,
}
