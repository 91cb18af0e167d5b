//! The identities of CLUSTER.md §2: member names, incarnations, Raft ids, epochs and the
//! cluster's own uuid. Each is a newtype so that a Raft id can never be passed where an epoch
//! is meant.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest member name accepted, in bytes. A name is repeated in all 271 entries of every
/// `PARTITION_MAP`, so an unbounded one would inflate every push to every client.
pub const MEMBER_NAME_LEN_MAX: usize = 128;

/// Why a member name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("member name is empty")]
    Empty,
    /// `:` separates the parts of an HLC timestamp string, whose node id is the member name.
    #[error("member name {0:?} contains ':', which HLC timestamp strings reserve")]
    HasColon(String),
    #[error("member name is {len} bytes long (at most {MEMBER_NAME_LEN_MAX})")]
    TooLong { len: usize },
    /// Control characters would corrupt logs and the URLs clients build from `nodeId`s.
    #[error("member name {0:?} contains a control character")]
    HasControl(String),
}

/// A member's configured name (`--node-id`): unique among live members, listed as
/// `PARTITION_MAP.nodes[].nodeId`. Ordered, because assignment breaks ties by name.
/// Decoded through [`MemberName::new`], so bytes from the wire cannot smuggle in a name the
/// constructor would refuse.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberName(String);

impl MemberName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MEMBER_NAME_LEN_MAX {
            return Err(NameError::TooLong { len: name.len() });
        }
        if name.contains(':') {
            return Err(NameError::HasColon(name.to_owned()));
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::HasControl(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MemberName {
    type Error = NameError;

    fn try_from(name: String) -> Result<Self, NameError> {
        Self::new(&name)
    }
}

impl From<MemberName> for String {
    fn from(name: MemberName) -> Self {
        name.0
    }
}

impl fmt::Debug for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One life of a member process: random, kept in the data directory by durable backends and
/// new on every start with the memory backend. A new incarnation of a name is a new member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Incarnation(pub u128);

/// A member's Raft node id, handed out by the state machine's counter at join. Never reused:
/// a node that lost its Raft log must not vote again under its old id (it could vote twice
/// in one term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RaftId(pub u64);

impl fmt::Display for RaftId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A partition's ownership epoch. It rises by one on every owner change, so "who owns p at
/// epoch e" has exactly one answer, and a message naming an older epoch is fenced off.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// The cluster's identity, fixed at bootstrap: a peer from another cluster is never joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClusterUuid(pub u128);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_hlc_node_id_rules_and_are_bounded() {
        assert_eq!(MemberName::new(""), Err(NameError::Empty));
        assert_eq!(
            MemberName::new("a:b"),
            Err(NameError::HasColon("a:b".into()))
        );
        assert_eq!(
            MemberName::new("a\nb"),
            Err(NameError::HasControl("a\nb".into()))
        );
        let long = "x".repeat(MEMBER_NAME_LEN_MAX + 1);
        assert_eq!(
            MemberName::new(&long),
            Err(NameError::TooLong {
                len: MEMBER_NAME_LEN_MAX + 1
            })
        );
        let max = "x".repeat(MEMBER_NAME_LEN_MAX);
        assert_eq!(
            MemberName::new(&max).map(|n| n.as_str().len()),
            Ok(MEMBER_NAME_LEN_MAX)
        );
        assert_eq!(
            MemberName::new("node-1").map(|n| n.to_string()),
            Ok("node-1".into())
        );
    }
}
