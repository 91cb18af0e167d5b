//! Forming (CLUSTER.md §3.3, §3.4): until it has a Raft id, a member asks its seeds who they
//! are every [`ROUND`], and does what [`Formation`] decides — join the cluster one of them is
//! in, bootstrap a new one (the lowest name does, handing out ids in name order), or wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use topgun_cluster::command::{BootstrapMember, Command, CommandResult, version_base_at};
use topgun_cluster::ids::ClusterUuid;
use topgun_control::{ControlPlane, MemberAddr};

use super::formation::{Decision, Formation, Status};
use super::hello::Channel;
use super::node::ClusterNode;
use super::wire::{self, BootstrapWire, JoinReply, StatusWire};
use crate::clock::now_ms;
use crate::config::Discovery;

/// How often a forming member asks its seeds again.
const ROUND: Duration = Duration::from_millis(200);
/// How long one status, bootstrap or join call may take.
const CALL: Duration = Duration::from_secs(1);
/// Most redirects followed in one round of joining.
const REDIRECTS: usize = 3;
/// How long the bootstrapping member keeps proposing the first table.
const FIRST_TABLE: Duration = Duration::from_secs(10);

/// Forms or joins, then ends once this member has a Raft node.
pub(crate) async fn form(node: Weak<ClusterNode>) {
    let Some(first) = node.upgrade() else { return };
    let config = &first.config;
    let has_seeds = !config.seeds.is_empty() || config.discovery.is_some();
    let mut formation = Formation::new(
        first.me.clone(),
        has_seeds,
        config.bootstrap_expect,
        config.timing.bootstrap_timeout_ms,
        now_ms(),
    );
    drop(first);
    // The name each seed address answered with, so a seed that goes quiet stops counting.
    let mut names = HashMap::new();
    loop {
        let Some(node) = node.upgrade() else { return };
        if node.control().is_some() {
            return;
        }
        for (seed, answer) in ask_seeds(&node).await {
            match answer {
                Some(status) => {
                    names.insert(seed, status.name.clone());
                    formation.heard(status);
                }
                None => {
                    if let Some(name) = names.remove(&seed) {
                        formation.lost(&name);
                    }
                }
            }
        }
        let done = match formation.decide(now_ms()) {
            Decision::Wait => false,
            Decision::Join { via } => join(&node, via).await,
            Decision::Bootstrap { members } => bootstrap(&node, members).await,
        };
        if done {
            return;
        }
        drop(node);
        tokio::time::sleep(ROUND).await;
    }
}

/// Every seed's status, or `None` for one that did not answer.
pub(crate) async fn ask_seeds(node: &Arc<ClusterNode>) -> Vec<(String, Option<Status>)> {
    let body = wire::encode(&StatusWire::of(&node.status()));
    let seeds = seed_addrs(node).await;
    let asks = seeds.into_iter().map(|seed| {
        let body = &body;
        async move {
            let reply = node
                .rpc
                .call(&seed, Channel::Control, wire::STATUS, body, CALL)
                .await;
            let status = reply
                .ok()
                .and_then(|bytes| wire::decode::<StatusWire>(&bytes).ok())
                .and_then(StatusWire::status);
            (seed, status)
        }
    });
    futures_util::future::join_all(asks).await
}

/// The configured seeds, and what DNS discovery names now, without this member.
async fn seed_addrs(node: &ClusterNode) -> Vec<String> {
    let mut seeds: Vec<String> = node.config.seeds.iter().map(ToString::to_string).collect();
    if let Some(Discovery::Dns { name, port }) = &node.config.discovery
        && let Ok(found) = tokio::net::lookup_host((name.as_str(), *port)).await
    {
        seeds.extend(found.map(|a| a.to_string()));
    }
    let me = &node.me.addrs.cluster_addr;
    seeds.retain(|s| s != me);
    seeds.sort();
    seeds.dedup();
    seeds
}

/// Asks the cluster at `via` to admit this member, following redirects to the leader.
async fn join(node: &Arc<ClusterNode>, mut via: String) -> bool {
    let body = wire::encode(&StatusWire::of(&node.me));
    for _ in 0..REDIRECTS {
        let reply = node
            .rpc
            .call(&via, Channel::Control, wire::JOIN, &body, CALL * 5)
            .await;
        let reply = match reply
            .map_err(|e| e.to_string())
            .and_then(|b| wire::decode(&b))
        {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(%via, error = %e, "join attempt failed");
                return false;
            }
        };
        match reply {
            JoinReply::Admitted { raft_id } => return node.open_control(raft_id).await.is_some(),
            JoinReply::Redirect { leader } => via = leader,
            JoinReply::Refused { reason } => {
                tracing::warn!(%via, %reason, "the cluster refused to admit this member");
                return false;
            }
        }
    }
    false
}

/// Forms the cluster of `members` (this member the lowest-named): ids 1..=k in name order,
/// each member told its id, the Raft group initialized, the first table committed.
async fn bootstrap(node: &Arc<ClusterNode>, members: Vec<BootstrapMember>) -> bool {
    let ids: Vec<(String, u64, String)> = members
        .iter()
        .zip(1u64..)
        .map(|(m, id)| (m.name.as_str().to_owned(), id, m.addrs.cluster_addr.clone()))
        .collect();
    let body = wire::encode(&BootstrapWire {
        members: ids.clone(),
    });
    let others = ids
        .iter()
        .filter(|(_, _, addr)| *addr != node.me.addrs.cluster_addr);
    let told = others.map(|(_, _, addr)| {
        node.rpc
            .call(addr, Channel::Control, wire::BOOTSTRAP, &body, CALL)
    });
    if futures_util::future::join_all(told)
        .await
        .iter()
        .any(Result::is_err)
    {
        return false; // Next round: everyone must know its id before the group forms.
    }
    let Some(control) = node.open_control(1).await else {
        return false;
    };
    let voters: BTreeMap<u64, MemberAddr> = ids
        .iter()
        .map(|(name, id, addr)| {
            let addr = MemberAddr {
                name: name.clone(),
                cluster_addr: addr.clone(),
            };
            (*id, addr)
        })
        .collect();
    if let Err(e) = control.initialize(voters).await {
        tracing::warn!(error = %e, "could not initialize the control plane");
    }
    let command = Command::Bootstrap {
        cluster_uuid: ClusterUuid(rand::random()),
        version_base: version_base_at(now_ms() / 1000),
        // No partition has a replica until replication is built: listing backups in the map
        // would tell clients of copies that do not exist. `--backups` applies from then on.
        backups: 0,
        members,
    };
    propose_first_table(&control, command).await;
    true
}

/// Proposes the bootstrap until it commits (or another one did), within [`FIRST_TABLE`].
async fn propose_first_table(control: &Arc<topgun_control::RaftControl>, command: Command) {
    let deadline = tokio::time::Instant::now() + FIRST_TABLE;
    while tokio::time::Instant::now() < deadline {
        match control.propose(command.clone()).await {
            Ok(CommandResult::Bootstrapped { .. }) => {
                tracing::info!("the cluster is formed");
                return;
            }
            Ok(other) => {
                tracing::info!(?other, "the cluster was formed already");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "the first table is not committed yet"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("the first table did not commit within {FIRST_TABLE:?}");
}

/// A member told its id by the bootstrapping one opens its Raft node under it and waits
/// for the group's first messages.
pub(crate) async fn on_bootstrap(node: &Arc<ClusterNode>, body: &[u8]) -> Result<Bytes, String> {
    let ids: BootstrapWire = wire::decode(body)?;
    let mine = ids
        .members
        .iter()
        .find(|(name, _, _)| name == node.me.name.as_str())
        .ok_or("this member is not among those bootstrapped")?;
    match node.open_control(mine.1).await {
        Some(control) if control.id() == mine.1 => Ok(Bytes::new()),
        Some(control) => Err(format!("already in a cluster as {}", control.id())),
        None => Err("could not open the control plane".to_owned()),
    }
}
