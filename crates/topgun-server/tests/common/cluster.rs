//! Clusters of real `topgun-server` processes on loopback: starting members, and waiting
//! until they agree on one partition map.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use topgun_core::protocol::Message;
use topgun_core::protocol::messages::PartitionMap;

use super::{Client, Served, binary, connect, recv_any, send, serve_binary};

/// A free loopback port (bound and released: another process could take it meanwhile, which
/// these tests would notice as a start-up failure).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) served: Served,
}

/// `n` members `n1`…, each listing the others as seeds, memory-backed, run in `cwd`.
pub(crate) fn start_cluster(n: usize, cwd: &std::path::Path) -> (Vec<Member>, Vec<u16>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let members = (0..n).map(|i| start_member(i, &ports, cwd)).collect();
    (members, ports)
}

pub(crate) fn start_member(i: usize, cluster_ports: &[u16], cwd: &std::path::Path) -> Member {
    start_member_with(i, cluster_ports, cwd, None)
}

/// Member `i`; with `data`, durable (the default store) in `data/n{i + 1}`, reading the
/// configuration file `data/cluster.toml` if there is one.
pub(crate) fn start_member_with(
    i: usize,
    cluster_ports: &[u16],
    cwd: &std::path::Path,
    data: Option<&std::path::Path>,
) -> Member {
    let seeds: Vec<String> = cluster_ports
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect();
    let name = format!("n{}", i + 1);
    let mut command = binary();
    command
        .current_dir(cwd)
        .env("TOPGUN_NO_AUTH", "true")
        .args(["--node-id", &name])
        .args(["--cluster-port", &cluster_ports[i].to_string()])
        .args(["--seed-nodes", &seeds.join(",")]);
    match data {
        Some(root) => {
            let dir = root.join(&name);
            command.args(["--data-dir".as_ref(), dir.as_os_str()]);
            let config = root.join("cluster.toml");
            if config.exists() {
                command.args(["--config".as_ref(), config.as_os_str()]);
            }
        }
        None => {
            command.env("STORAGE_BACKEND", "null");
        }
    }
    let served = serve_binary(&mut command);
    Member { name, served }
}

/// The map a member answers with now, if it has one.
pub(crate) async fn map_of(addr: SocketAddr) -> Option<PartitionMap> {
    let mut c = connect(addr, "/").await;
    send(&mut c, &Message::PartitionMapRequest(None)).await;
    send(&mut c, &super::ping(1)).await;
    loop {
        match recv_any(&mut c).await.ok()? {
            Message::PartitionMap(map) => return Some(map),
            Message::Pong(_) => return None,
            _ => {}
        }
    }
}

pub(crate) fn names(map: &PartitionMap) -> BTreeSet<String> {
    map.nodes.iter().map(|n| n.node_id.to_string()).collect()
}

pub(crate) fn owners(map: &PartitionMap) -> Vec<String> {
    map.partitions
        .iter()
        .map(|p| p.owner_node_id.to_string())
        .collect()
}

/// Waits until every member serves one map listing exactly `expected` and all 271 owners
/// among them; that map.
pub(crate) async fn agreed(
    members: &[&Member],
    expected: &BTreeSet<String>,
    within: Duration,
) -> PartitionMap {
    let deadline = Instant::now() + within;
    loop {
        let mut maps = Vec::new();
        for m in members {
            maps.push(map_of(m.served.addr).await);
        }
        let first = maps[0].clone();
        let settled = first.as_ref().is_some_and(|first| {
            names(first) == *expected
                && first.partitions.len() == 271
                && owners(first).iter().all(|o| expected.contains(o))
                && maps.iter().all(|m| {
                    m.as_ref()
                        .is_some_and(|m| m.version == first.version && owners(m) == owners(first))
                })
        });
        if settled {
            return first.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no agreement within {within:?}: {maps:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn all(members: &[Member]) -> Vec<&Member> {
    members.iter().collect()
}

pub(crate) fn names_of(members: &[&Member]) -> BTreeSet<String> {
    members.iter().map(|m| m.name.clone()).collect()
}

/// One value of a member's `/metrics`.
pub(crate) fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, metrics) = super::http_get(addr, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// Asks for the lock `job` on `c`, without a lease.
pub(crate) async fn ask_lock(c: &mut Client, request_id: &str) {
    let request = topgun_core::protocol::messages::LockRequest {
        request_id: request_id.into(),
        name: "job".into(),
        ttl: None,
    };
    send(c, &Message::LockRequest(request)).await;
}

/// The fencing token of the next `LOCK_GRANTED` on `c` within `within`; `None` if none came.
pub(crate) async fn granted(c: &mut Client, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, recv_any(c)).await {
            Ok(Ok(Message::LockGranted(g))) => return Some(g.fencing_token),
            Ok(Ok(Message::Error(e))) => panic!("error: {e:?}"),
            Ok(Ok(_)) => {}
            Ok(Err(code)) => panic!("closed: {code:?}"),
            Err(_) => return None,
        }
    }
}

/// Three members agreed on one table, run in a fresh working directory (kept alive by
/// the caller).
pub(crate) async fn three_members() -> (tempfile::TempDir, Vec<Member>) {
    let cwd = tempfile::tempdir().unwrap();
    let (members, _) = start_cluster(3, cwd.path());
    agreed(
        &all(&members),
        &names_of(&all(&members)),
        Duration::from_secs(5),
    )
    .await;
    (cwd, members)
}
