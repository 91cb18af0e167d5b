//! `GET /api/admin/cluster/status` (COMPAT §3.7). A single node reports itself, healthy, as
//! the owner of all 271 partitions; a cluster member reports the members and owners of the
//! table it applied (connections, memory and uptime are known for itself only).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, guard};
use crate::http::Host;

/// What a node reports of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node_id: String,
    /// `host:port` it serves on.
    pub address: String,
    pub connections: usize,
    pub uptime_secs: u64,
}

/// One node of the cluster.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    node_id: String,
    address: String,
    /// `healthy`, `suspect` or `dead`.
    status: &'static str,
    /// Partitions it owns.
    partition_count: u32,
    connections: usize,
    /// Resident memory, in bytes (0 where the platform does not say).
    memory: u64,
    /// Seconds since it started.
    uptime: u64,
}

/// A partition and its owner.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOwner {
    id: u32,
    owner_node_id: String,
}

/// `GET /api/admin/cluster/status`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    nodes: Vec<NodeStatus>,
    partitions: Vec<PartitionOwner>,
    total_partitions: u32,
    is_rebalancing: bool,
}

/// The cluster as one node sees it when it is alone.
pub fn single_node(node: NodeView, memory: u64) -> ClusterStatus {
    let total = topgun_core::hash::PARTITION_COUNT;
    let partitions = (0..total)
        .map(|id| PartitionOwner {
            id,
            owner_node_id: node.node_id.clone(),
        })
        .collect();
    ClusterStatus {
        nodes: vec![NodeStatus {
            node_id: node.node_id,
            address: node.address,
            status: "healthy",
            partition_count: total,
            connections: node.connections,
            memory,
            uptime: node.uptime_secs,
        }],
        partitions,
        total_partitions: total,
        is_rebalancing: false,
    }
}

/// The cluster as a member sees it: every member of the applied state, live ones
/// `healthy` (`suspect` while joining or leaving), down ones `dead`.
pub fn of_cluster(
    cluster: &topgun_cluster::state::Cluster,
    me: &NodeView,
    memory: u64,
) -> ClusterStatus {
    use topgun_cluster::member::MemberState;
    let name = |id| {
        cluster
            .member(id)
            .map_or("", |m| m.name.as_str())
            .to_owned()
    };
    let partitions: Vec<PartitionOwner> = cluster
        .table()
        .iter()
        .map(|(pid, e)| PartitionOwner {
            id: pid.get(),
            owner_node_id: name(e.owner),
        })
        .collect();
    let nodes = cluster
        .members()
        .map(|m| {
            let mine = m.name.as_str() == me.node_id;
            let owned = partitions
                .iter()
                .filter(|p| p.owner_node_id == m.name.as_str())
                .count();
            NodeStatus {
                node_id: m.name.as_str().to_owned(),
                address: m
                    .addrs
                    .client_url
                    .trim_start_matches("ws://")
                    .trim_start_matches("wss://")
                    .to_owned(),
                status: match m.state {
                    MemberState::Active => "healthy",
                    MemberState::Joining | MemberState::Leaving => "suspect",
                    MemberState::Down => "dead",
                },
                partition_count: u32::try_from(owned).unwrap_or(u32::MAX),
                connections: if mine { me.connections } else { 0 },
                memory: if mine { memory } else { 0 },
                uptime: if mine { me.uptime_secs } else { 0 },
            }
        })
        .collect();
    ClusterStatus {
        nodes,
        partitions,
        total_partitions: topgun_core::hash::PARTITION_COUNT,
        is_rebalancing: cluster.table().iter().any(|(_, e)| e.migration.is_some()),
    }
}

/// The resident memory in `/proc/self/status` (`VmRSS`, in kB), or 0 where there is none.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| vm_rss(&status))
        .unwrap_or(0)
}

fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// `GET /api/admin/cluster/status`.
#[utoipa::path(
    get, path = "/api/admin/cluster/status", tag = "cluster", security(("bearer" = [])),
    responses(
        (status = 200, body = ClusterStatus),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn status<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    match guard(&*host, &headers) {
        Ok(()) => {
            let state = host.cluster();
            let status = match state.as_deref().and_then(|s| s.cluster()) {
                Some(cluster) => of_cluster(cluster, &host.node(), resident_bytes()),
                None => single_node(host.node(), resident_bytes()),
            };
            Json(status).into_response()
        }
        Err(refused) => *refused.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_node_owns_every_partition() {
        let node = NodeView {
            node_id: "n1".into(),
            address: "127.0.0.1:8080".into(),
            connections: 3,
            uptime_secs: 9,
        };
        let status = single_node(node, 4096);
        assert_eq!(status.partitions.len(), 271);
        assert!(status.partitions.iter().all(|p| p.owner_node_id == "n1"));
        assert_eq!(status.partitions[270].id, 270);
        assert_eq!(
            (status.nodes.len(), status.nodes[0].partition_count),
            (1, 271)
        );
    }

    #[test]
    fn resident_memory_is_read_from_vm_rss() {
        assert_eq!(vm_rss("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234 * 1024));
        assert_eq!(vm_rss("Name:\tx\n"), None);
        assert_eq!(vm_rss("VmRSS: lots kB"), None);
    }
}
