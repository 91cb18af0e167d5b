//! In-process control-plane clusters: each node's `PeerRpc` encodes nothing itself but hands
//! the already-encoded bytes to the target node's `handle`, so every request and reply goes
//! through the wire format. A node can be cut off (both directions).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use topgun_cluster::{
    BootstrapMember, ClusterUuid, Command, ControlState, Incarnation, MemberAddrs, MemberName,
};
use topgun_control::{
    Applied, BoxFuture, ControlConfig, ControlPlane, MemberAddr, PeerRpc, RaftControl, RpcError,
    Storage,
};

/// Fast timings so each test stays within a few seconds; the shape is the default's.
pub fn fast_config() -> ControlConfig {
    ControlConfig {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        propose_timeout_ms: 2_000,
        learner_catch_up_ms: 5_000,
        ..ControlConfig::default()
    }
}

pub fn addr(id: u64) -> MemberAddr {
    MemberAddr {
        name: format!("n{id}"),
        cluster_addr: format!("127.0.0.1:{}", 7000 + id),
    }
}

#[derive(Default)]
pub struct Router {
    nodes: Mutex<BTreeMap<u64, Arc<RaftControl>>>,
    cut: Mutex<BTreeSet<u64>>,
}

impl Router {
    pub fn insert(&self, node: Arc<RaftControl>) {
        self.nodes.lock().unwrap().insert(node.id(), node);
    }

    pub fn remove(&self, id: u64) -> Option<Arc<RaftControl>> {
        self.nodes.lock().unwrap().remove(&id)
    }

    pub fn cut_off(&self, id: u64) {
        self.cut.lock().unwrap().insert(id);
    }

    pub fn heal(&self, id: u64) {
        self.cut.lock().unwrap().remove(&id);
    }
}

/// One node's end of the router.
struct Link {
    router: Arc<Router>,
    from: u64,
}

impl PeerRpc for Link {
    fn call(
        &self,
        target: u64,
        _node: &MemberAddr,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let cut = {
            let cut = self.router.cut.lock().unwrap();
            cut.contains(&self.from) || cut.contains(&target)
        };
        let node = self.router.nodes.lock().unwrap().get(&target).cloned();
        Box::pin(async move {
            let unreachable = |reason: &str| RpcError::Unreachable {
                target,
                reason: reason.to_owned(),
            };
            if cut {
                return Err(unreachable("cut off"));
            }
            let node = node.ok_or_else(|| unreachable("no such node"))?;
            tokio::time::timeout(timeout, node.handle(&request))
                .await
                .map_err(|_| RpcError::Timeout {
                    target,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap(),
                })
        })
    }
}

pub async fn start(
    router: &Arc<Router>,
    id: u64,
    config: ControlConfig,
    storage: &Storage,
) -> Arc<RaftControl> {
    let link = Arc::new(Link {
        router: Arc::clone(router),
        from: id,
    });
    let node = RaftControl::open(id, addr(id), config, storage, link)
        .await
        .unwrap();
    let node = Arc::new(node);
    router.insert(Arc::clone(&node));
    node
}

/// Starts `ids` and initialises them as the voters.
pub async fn start_group(
    router: &Arc<Router>,
    ids: &[u64],
    config: ControlConfig,
    storage: impl Fn(u64) -> Storage,
) -> BTreeMap<u64, Arc<RaftControl>> {
    let mut nodes = BTreeMap::new();
    for &id in ids {
        nodes.insert(id, start(router, id, config, &storage(id)).await);
    }
    let members = ids.iter().map(|&id| (id, addr(id))).collect();
    nodes[&ids[0]].initialize(members).await.unwrap();
    nodes
}

pub fn bootstrap_cmd(ids: &[u64]) -> Command {
    let members = ids
        .iter()
        .map(|&id| BootstrapMember {
            name: MemberName::new(&format!("n{id}")).unwrap(),
            incarnation: Incarnation(u128::from(id) * 1_000),
            addrs: MemberAddrs {
                cluster_addr: addr(id).cluster_addr,
                client_url: format!("ws://127.0.0.1:{}", 8000 + id),
                http_url: format!("http://127.0.0.1:{}", 8000 + id),
            },
        })
        .collect();
    Command::Bootstrap {
        cluster_uuid: ClusterUuid(42),
        version_base: 30_000_000,
        backups: 1,
        members,
    }
}

pub fn join_cmd(name: &str, incarnation: u128) -> Command {
    Command::Join {
        name: MemberName::new(name).unwrap(),
        incarnation: Incarnation(incarnation),
        addrs: MemberAddrs {
            cluster_addr: format!("{name}.local:7000"),
            client_url: format!("ws://{name}.local:8000"),
            http_url: format!("http://{name}.local:8000"),
        },
    }
}

/// Polls `check` every 20 ms until it holds, for at most `bound`.
pub async fn eventually<T>(bound: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader among `nodes` once exactly one of them leads and all that see one agree.
pub async fn leader_of(nodes: &BTreeMap<u64, Arc<RaftControl>>) -> u64 {
    eventually(Duration::from_secs(5), "a leader", || {
        let leaders: Vec<u64> = nodes
            .values()
            .filter(|n| n.is_leader())
            .map(|n| n.id())
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

pub fn applied(node: &RaftControl) -> Arc<Applied> {
    Arc::clone(&node.state().borrow())
}

/// Waits until every node has applied one same index, at least `index`, then returns their
/// states.
pub async fn states_at(nodes: &[&Arc<RaftControl>], index: u64) -> Vec<Arc<ControlState>> {
    eventually(Duration::from_secs(5), "every node to apply", || {
        let all: Vec<Arc<Applied>> = nodes.iter().map(|n| applied(n)).collect();
        let first = all[0].applied_index;
        (first >= index && all.iter().all(|a| a.applied_index == first))
            .then(|| all.iter().map(|a| Arc::clone(&a.state)).collect())
    })
    .await
}

pub async fn shutdown_all(nodes: &BTreeMap<u64, Arc<RaftControl>>) {
    for node in nodes.values() {
        let _ = node.shutdown().await;
    }
}
