//! The client view (CLUSTER.md §3.7, §4): `PARTITION_MAP` built from the committed state,
//! as `topgun-core`'s wire type, and the key that decides when `table_version` moves.

use topgun_core::protocol::messages::{NodeEndpoints, NodeInfo, PartitionInfo, PartitionMap};

use crate::ids::RaftId;
use crate::member::MemberState;
use crate::state::Cluster;
use crate::table::PARTITION_COUNT;

/// Everything a `PARTITION_MAP` is built from, by id: owners, backups, the member list and
/// each member's status and addresses. Two states with equal keys publish the same map, and
/// `table_version` moves exactly when the key does (§3.8). Ids rather than names, so a
/// restart under the same name and URL still counts as a change of the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ViewKey {
    members: Vec<(RaftId, MemberState, String, String)>,
    rows: Vec<(RaftId, Vec<RaftId>)>,
}

impl ViewKey {
    pub(crate) fn of(cluster: &Cluster) -> Self {
        Self {
            members: cluster
                .members()
                .map(|m| {
                    (
                        m.raft_id,
                        m.state,
                        m.addrs.client_url.clone(),
                        m.addrs.http_url.clone(),
                    )
                })
                .collect(),
            rows: cluster
                .table()
                .iter()
                .map(|(_, e)| (e.owner, e.isr.clone()))
                .collect(),
        }
    }
}

/// The `PARTITION_MAP` of `cluster`: version `version_base + table_version`, every live
/// member (`Down` ones omitted, §3.7) in name order, all 271 partitions with owner and
/// backups by name. `generated_at_ms` is the caller's clock.
pub fn partition_map(cluster: &Cluster, generated_at_ms: i64) -> PartitionMap {
    let mut live: Vec<_> = cluster.members().filter(|m| m.state.is_live()).collect();
    live.sort_by(|a, b| a.name.cmp(&b.name));
    let nodes = live
        .into_iter()
        .filter_map(|m| {
            Some(NodeInfo {
                node_id: m.name.as_str().into(),
                endpoints: NodeEndpoints {
                    websocket: m.addrs.client_url.as_str().into(),
                    http: Some(m.addrs.http_url.as_str().into()),
                },
                status: m.state.node_status()?,
            })
        })
        .collect();
    // Only a `Lost` partition can name a removed owner (nobody live, its owner removed
    // meanwhile); it is listed with an empty owner id, which the TS client routes to its
    // primary, rather than dropped, so the map keeps all 271 entries.
    let name = |id: RaftId| cluster.member(id).map_or("", |m| m.name.as_str());
    let partitions = cluster
        .table()
        .iter()
        .map(|(pid, e)| PartitionInfo {
            partition_id: pid.get(),
            owner_node_id: name(e.owner).into(),
            backup_node_ids: e.isr.iter().map(|&b| name(b).to_owned()).collect(),
        })
        .collect();
    PartitionMap {
        version: cluster.map_version(),
        partition_count: u32::try_from(PARTITION_COUNT).unwrap_or(u32::MAX),
        nodes,
        partitions,
        generated_at: generated_at_ms,
    }
}
