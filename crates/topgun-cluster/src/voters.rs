//! Which members should vote in Raft (CLUSTER.md §2): up to 3 voters, 5 once there are at
//! least 5 live members, everyone else a learner. Pure, so every node computes the same set
//! and the Raft layer only has to apply the difference in one membership change.

use std::collections::BTreeSet;

use crate::ids::RaftId;
use crate::member::{Member, MemberState};

/// Voters while fewer than [`LARGE_CLUSTER_MEMBERS`] members are live.
pub const VOTERS_SMALL: usize = 3;
/// Voters from [`LARGE_CLUSTER_MEMBERS`] live members on: tolerates two failures.
pub const VOTERS_LARGE: usize = 5;
pub const LARGE_CLUSTER_MEMBERS: usize = 5;

/// The desired voter set given the members and the `current` voters.
///
/// Down and leaving members give their seat up (a dead voter weakens the quorum; a leaving
/// one is about to go). Seats go to current voters first, so a change replaces only what it
/// must, then to `Active` before `Joining` members, then to the oldest (lowest Raft id). If
/// only leaving members are live, they keep voting: a group needs at least one voter.
pub fn desired_voters<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    current: &BTreeSet<RaftId>,
) -> BTreeSet<RaftId> {
    let live: Vec<&Member> = members.into_iter().filter(|m| m.state.is_live()).collect();
    let seats = if live.len() >= LARGE_CLUSTER_MEMBERS {
        VOTERS_LARGE
    } else {
        VOTERS_SMALL
    };
    let mut eligible: Vec<&Member> = live
        .iter()
        .copied()
        .filter(|m| m.state != MemberState::Leaving)
        .collect();
    if eligible.is_empty() {
        eligible = live;
    }
    eligible.sort_by_key(|m| {
        (
            !current.contains(&m.raft_id),
            m.state != MemberState::Active,
            m.raft_id,
        )
    });
    eligible
        .into_iter()
        .take(seats)
        .map(|m| m.raft_id)
        .collect()
}
