//! Who owns each partition, as this member last applied it: what the data plane routes
//! writes by. Rebuilt from the committed control state on every change of its table
//! version, shared read-only.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use topgun_cluster::ids::RaftId;
use topgun_cluster::state::Cluster;
use topgun_cluster::table::PartitionId;

use crate::data::parts::PartSet;

/// One applied table, from one member's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub me: RaftId,
    /// The control state's `table_version` this was built from.
    pub version: u64,
    /// The cluster's uuid.
    pub uuid: u128,
    owners: Vec<RaftId>,
    /// Cluster addresses of the live members (owning something or not yet).
    addrs: HashMap<RaftId, String>,
}

/// What the data plane and the forwarder watch: `None` before the first table.
pub type RoutesWatch = watch::Receiver<Option<Arc<Routes>>>;

impl Routes {
    /// The routes of `cluster` for member `me`.
    pub fn of(cluster: &Cluster, me: RaftId) -> Self {
        let owners: Vec<RaftId> = cluster.table().iter().map(|(_, e)| e.owner).collect();
        let addrs = cluster
            .members()
            .filter(|m| m.state.is_live() || owners.contains(&m.raft_id))
            .map(|m| (m.raft_id, m.addrs.cluster_addr.clone()))
            .collect();
        Self {
            me,
            version: cluster.table_version(),
            uuid: cluster.uuid().0,
            owners,
            addrs,
        }
    }

    /// The owner of partition `pid`.
    pub fn owner(&self, pid: PartitionId) -> RaftId {
        self.owners.get(pid.index()).copied().unwrap_or(self.me)
    }

    /// Whether this member owns `pid`.
    pub fn owns(&self, pid: PartitionId) -> bool {
        self.owner(pid) == self.me
    }

    /// Where member `id` listens.
    pub fn addr(&self, id: RaftId) -> Option<&str> {
        self.addrs.get(&id).map(String::as_str)
    }

    /// Partitions this member owns.
    pub fn owned(&self) -> usize {
        self.owners.iter().filter(|&&o| o == self.me).count()
    }

    /// The partitions this member owns, as a set.
    pub fn owned_set(&self) -> PartSet {
        let mut set = PartSet::default();
        for (pid, owner) in (0u32..).zip(&self.owners) {
            if *owner == self.me {
                set.insert(pid);
            }
        }
        set
    }

    /// The live members (and any member still owning a partition), this one included,
    /// with their cluster addresses, in id order.
    pub fn members(&self) -> impl Iterator<Item = (RaftId, String)> + '_ {
        let mut ids: Vec<_> = self.addrs.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| (id, self.addrs[&id].clone()))
    }
}
