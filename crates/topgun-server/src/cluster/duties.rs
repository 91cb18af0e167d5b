//! What members do once in the cluster: every member tells the leader it is alive; the
//! leader admits joiners, keeps the Raft group's voters and members in line with the
//! control state (CLUSTER.md §2), and marks silent members down (§3.6).
//!
//! Raft state is in memory, so a member marked down cannot come back with its data: it is
//! removed in the same round, and a restart joins as a new incarnation.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use topgun_cluster::command::{Command, CommandResult};
use topgun_cluster::ids::RaftId;
use topgun_cluster::state::Cluster;
use topgun_cluster::voters::desired_voters;
use topgun_control::{ControlPlane, MemberAddr, RaftControl, Role};

use super::frame::Frame;
use super::hello::Channel;
use super::node::ClusterNode;
use super::wire::{self, JoinReply, StatusWire};
use crate::clock::now_ms;

/// How often a member tells the leader it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// How often the leader looks over the members.
const LEADER_ROUND: Duration = Duration::from_millis(250);

/// Heartbeats and, while leading, the leader's rounds, until the member stops.
pub(crate) async fn run(node: Weak<ClusterNode>) {
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    let mut round = tokio::time::interval(LEADER_ROUND);
    let mut leading_since: Option<Instant> = None;
    // The leader this member last followed: when it takes over, that one has been silent
    // for at least an election timeout already.
    let mut followed: Option<u64> = None;
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let Some(node) = node.upgrade() else { return };
                heartbeat(&node);
            }
            _ = round.tick() => {
                let Some(node) = node.upgrade() else { return };
                let Some(control) = node.control() else { continue };
                if !control.is_leader() {
                    leading_since = None;
                    followed = control.leader().or(followed);
                    continue;
                }
                let since = *leading_since.get_or_insert_with(|| {
                    took_over_from(&node, followed.take());
                    Instant::now()
                });
                lead(&node, &control, since).await;
            }
        }
    }
}

/// A new leader counts the old leader's silence from the last Raft message it had from it
/// (else from one shortest election timeout ago: a majority stopped hearing it at least that
/// long before electing), so a dead leader's partitions fail over about
/// `member_down_after_ms` after its death rather than after the election. Whatever was heard
/// in an earlier term is forgotten: everyone else's silence counts from now.
fn took_over_from(node: &ClusterNode, old: Option<u64>) {
    let last_raft = old.and_then(|old| {
        let state = node.cluster()?;
        let name = state
            .cluster()?
            .member(RaftId(old))?
            .name
            .as_str()
            .to_owned();
        let raft_heard = node
            .raft_heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        raft_heard.get(&name).copied()
    });
    let election = Duration::from_millis(node.config.timing.raft_election_timeout_min_ms);
    let since = last_raft.or_else(|| Instant::now().checked_sub(election));
    let mut heard = node.heard.lock().unwrap_or_else(PoisonError::into_inner);
    heard.clear();
    if let (Some(old), Some(since)) = (old, since) {
        heard.insert(old, since);
    }
}

fn heartbeat(node: &ClusterNode) {
    let Some(control) = node.control() else {
        return;
    };
    let Some(leader) = control.leader().filter(|&l| l != control.id()) else {
        return;
    };
    let Some(state) = node.cluster() else { return };
    let Some(addr) = state
        .cluster()
        .and_then(|c| c.member(RaftId(leader)))
        .map(|m| m.addrs.cluster_addr.clone())
    else {
        return;
    };
    let mut body = control.id().to_be_bytes().to_vec();
    body.push(u8::from(node.is_durable()));
    let beat = Frame::new(wire::HEARTBEAT, body);
    let _ = node.rpc.send(&addr, Channel::Control, beat);
}

/// One leader round: silent members down and out, the Raft group matched to the state.
async fn lead(node: &ClusterNode, control: &Arc<RaftControl>, since: Instant) {
    let Some(state) = node.cluster() else { return };
    let Some(cluster) = state.cluster() else {
        return;
    };
    mark_silent_down(node, control, cluster, since).await;
    match_group(control, cluster).await;
}

/// Members silent for `member_down_after_ms` are marked down (their partitions fail over);
/// a memory-backed one is removed at once (it cannot come back with its data), a durable one
/// after `member_remove_after_ms` down, unless it is heard again first and marked up.
async fn mark_silent_down(
    node: &ClusterNode,
    control: &Arc<RaftControl>,
    cluster: &Cluster,
    since: Instant,
) {
    let timing = &node.config.timing;
    let down_after = Duration::from_millis(timing.member_down_after_ms);
    let remove_after = Duration::from_millis(timing.member_remove_after_ms);
    let mut changes = Vec::new();
    {
        let heard = node.heard.lock().unwrap_or_else(PoisonError::into_inner);
        let now = now_ms();
        for m in cluster.members().filter(|m| m.raft_id.0 != control.id()) {
            // A new leader counts from its election for members it has not heard, and from
            // what it knows for the one it took over from (`took_over_from`).
            let heartbeat = heard.get(&m.raft_id.0).copied();
            let silent_for = heartbeat.unwrap_or(since).elapsed();
            let silent = silent_for >= down_after;
            // A down member is marked up only on a heartbeat of its own.
            let silent = silent || (!m.state.is_live() && heartbeat.is_none());
            let id = m.raft_id;
            let command = match (m.state.is_live(), silent) {
                (true, true) if node.member_durable(id.0) => Command::MarkDown { id },
                (true, true) => Command::Remove { id },
                (false, false) => Command::MarkUp { id },
                // Down for long enough by the state's time — or, should that time be ahead
                // of this leader's clock (a predecessor's clock was), by this leader's own
                // measure of the silence.
                (false, true)
                    if now.saturating_sub(m.since_ms) >= timing.member_remove_after_ms
                        || silent_for >= down_after + remove_after =>
                {
                    Command::Remove { id }
                }
                _ => continue,
            };
            changes.push(command);
        }
    }
    for command in changes {
        tracing::warn!(?command, "a member's liveness changed");
        let _ = control.propose(command).await;
    }
}

/// Raft members the state no longer has are removed; voters follow `desired_voters`.
async fn match_group(control: &Arc<RaftControl>, cluster: &Cluster) {
    let metrics = control.metrics();
    let in_group: BTreeSet<u64> = metrics.voters.union(&metrics.learners).copied().collect();
    for gone in in_group
        .iter()
        .filter(|&&id| cluster.member(RaftId(id)).is_none())
    {
        if *gone != control.id() {
            let _ = control.remove_node(*gone).await;
        }
    }
    let current: BTreeSet<RaftId> = metrics.voters.iter().map(|&v| RaftId(v)).collect();
    let grouped = cluster
        .members()
        .filter(|m| in_group.contains(&m.raft_id.0));
    let desired: BTreeSet<u64> = desired_voters(grouped, &current)
        .into_iter()
        .map(|id| id.0)
        .collect();
    if !desired.is_empty()
        && desired != metrics.voters
        && let Err(e) = control.change_voters(desired).await
    {
        tracing::debug!(error = %e, "voters not changed this round");
    }
}

/// The leader admits a member: `Join` committed (a restart under the same name and address
/// replaces its old incarnation), then the member added to the Raft group and activated.
pub(crate) async fn on_join(node: &Arc<ClusterNode>, body: &[u8]) -> Result<Bytes, String> {
    let joiner: StatusWire = wire::decode(body)?;
    let reply = admit(node, joiner).await;
    Ok(Bytes::from(wire::encode(&reply)))
}

async fn admit(node: &Arc<ClusterNode>, joiner: StatusWire) -> JoinReply {
    let Some(control) = node.control() else {
        return JoinReply::Refused {
            reason: "this member is not in a cluster yet".into(),
        };
    };
    if !control.is_leader() {
        return redirect(node, &control);
    }
    let Some(status) = joiner.status() else {
        return JoinReply::Refused {
            reason: "not a valid member name".into(),
        };
    };
    let addr = MemberAddr {
        name: status.name.as_str().to_owned(),
        cluster_addr: status.addrs.cluster_addr.clone(),
    };
    let join = Command::Join {
        name: status.name.clone(),
        incarnation: status.incarnation,
        addrs: status.addrs,
    };
    match control.propose(join).await {
        Ok(CommandResult::Joined { raft_id, replaced }) => {
            // Heard now: its silence counts from its admission, not from the leader's start.
            node.heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(raft_id.0, Instant::now());
            tokio::spawn(enrol(Arc::clone(&control), raft_id, addr, replaced));
            JoinReply::Admitted { raft_id: raft_id.0 }
        }
        Ok(CommandResult::Refused(why)) => JoinReply::Refused {
            reason: why.to_string(),
        },
        Ok(other) => JoinReply::Refused {
            reason: format!("unexpected answer to a join: {other:?}"),
        },
        Err(e) => JoinReply::Refused {
            reason: e.to_string(),
        },
    }
}

fn redirect(node: &ClusterNode, control: &RaftControl) -> JoinReply {
    let leader = control.leader().and_then(|id| {
        let state = node.cluster()?;
        let addr = state
            .cluster()?
            .member(RaftId(id))?
            .addrs
            .cluster_addr
            .clone();
        Some(addr)
    });
    match leader {
        Some(leader) => JoinReply::Redirect { leader },
        None => JoinReply::Refused {
            reason: "no leader right now; try again".into(),
        },
    }
}

/// Adds an admitted member to the Raft group, then activates it.
async fn enrol(control: Arc<RaftControl>, id: RaftId, addr: MemberAddr, replaced: Option<RaftId>) {
    if let Some(old) = replaced {
        let _ = control.remove_node(old.0).await;
    }
    if let Err(e) = control.add_learner(id.0, addr).await {
        tracing::warn!(raft_id = id.0, error = %e, "could not add a joining member to the group");
        return;
    }
    let _ = control.propose(Command::Activate { id }).await;
}

/// A leaving leader hands leadership to another voter first, so the group does not wait
/// out an election timeout (§3.5).
pub(crate) async fn hand_over_leadership(control: &RaftControl) {
    let metrics = control.metrics();
    if metrics.role != Role::Leader {
        return;
    }
    let Some(&to) = metrics.voters.iter().find(|&&v| v != control.id()) else {
        return;
    };
    if control.transfer_leader(to).await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(600);
    while Instant::now() < deadline && control.leader() == Some(control.id()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
