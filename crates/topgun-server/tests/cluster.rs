//! Clusters of real `topgun-server` processes on loopback (CLUSTER.md §17 step 4, §18 step
//! 1): formation, the map clients see, writes through any member, leave and failure.
//!
//! `TOPGUN_CLUSTER_RUNS` (default 3) sets how many times the formation test forms a fresh
//! cluster; the done-criterion of §18 is 20 out of 20 (run it by hand with 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{Client, Served, binary, connect, now_ms, put_op, recv_any, send, serve_binary};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{OpBatch, PartitionMap, QuerySub};
use topgun_core::protocol::query::Query;
use topgun_core::{Hlc, NodeId, Value};

/// A free loopback port (bound and released: another process could take it meanwhile, which
/// these tests would notice as a start-up failure).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    served: Served,
}

/// `n` members `n1`…, each listing the others as seeds, memory-backed, run in `cwd`.
fn start_cluster(n: usize, cwd: &std::path::Path) -> (Vec<Member>, Vec<u16>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let members = (0..n).map(|i| start_member(i, &ports, cwd)).collect();
    (members, ports)
}

fn start_member(i: usize, cluster_ports: &[u16], cwd: &std::path::Path) -> Member {
    let seeds: Vec<String> = cluster_ports
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect();
    let name = format!("n{}", i + 1);
    let served = serve_binary(
        binary()
            .current_dir(cwd)
            .env("TOPGUN_NO_AUTH", "true")
            .env("STORAGE_BACKEND", "null")
            .args(["--node-id", &name])
            .args(["--cluster-port", &cluster_ports[i].to_string()])
            .args(["--seed-nodes", &seeds.join(",")]),
    );
    Member { name, served }
}

/// The map a member answers with now, if it has one.
async fn map_of(addr: SocketAddr) -> Option<PartitionMap> {
    let mut c = connect(addr, "/").await;
    send(&mut c, &Message::PartitionMapRequest(None)).await;
    send(&mut c, &common::ping(1)).await;
    loop {
        match recv_any(&mut c).await.ok()? {
            Message::PartitionMap(map) => return Some(map),
            Message::Pong(_) => return None,
            _ => {}
        }
    }
}

fn names(map: &PartitionMap) -> BTreeSet<String> {
    map.nodes.iter().map(|n| n.node_id.to_string()).collect()
}

fn owners(map: &PartitionMap) -> Vec<String> {
    map.partitions
        .iter()
        .map(|p| p.owner_node_id.to_string())
        .collect()
}

/// Waits until every member serves one map listing exactly `expected` and all 271 owners
/// among them; that map.
async fn agreed(
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

fn all(members: &[Member]) -> Vec<&Member> {
    members.iter().collect()
}

fn names_of(members: &[&Member]) -> BTreeSet<String> {
    members.iter().map(|m| m.name.clone()).collect()
}

#[tokio::test]
async fn three_members_started_together_agree_on_one_table_within_3_s() {
    let runs: usize = std::env::var("TOPGUN_CLUSTER_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let cwd = tempfile::tempdir().unwrap();
    for run in 0..runs {
        let started = Instant::now();
        let (members, _) = start_cluster(3, cwd.path());
        let map = agreed(
            &all(&members),
            &names_of(&all(&members)),
            Duration::from_secs(3),
        )
        .await;
        let took = started.elapsed();
        let mut counts = BTreeMap::<String, usize>::new();
        for owner in owners(&map) {
            *counts.entry(owner).or_default() += 1;
        }
        let (min, max) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(max - min <= 1, "even: {counts:?}");
        assert!(
            map.version > 1,
            "a cluster's versions start above a single node's"
        );
        eprintln!("run {run}: three members agreed in {took:?}");
    }
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "STORAGE_BACKEND=null wrote {left:?}");
}

/// A TS-client-style writer connected to one member: every write is acked whichever
/// member owns its key, and each key lands on its owner.
#[tokio::test]
async fn writes_through_any_member_are_acked_and_land_on_their_owners() {
    let cwd = tempfile::tempdir().unwrap();
    let (members, _) = start_cluster(3, cwd.path());
    let map = agreed(
        &all(&members),
        &names_of(&all(&members)),
        Duration::from_secs(5),
    )
    .await;
    let mut writer = connect(members[0].served.addr, "/").await;
    let mut hlc = Hlc::new(NodeId::new("writer").unwrap());
    let ops = (1..=100)
        .map(|i| {
            put_op(
                i,
                "todos",
                &format!("k{i}"),
                Value::from(i),
                hlc.now(now_ms()),
            )
        })
        .collect();
    let batch = OpBatch {
        ops,
        write_concern: None,
        timeout: None,
    };
    send(&mut writer, &Message::OpBatch(batch)).await;
    let ack = loop {
        match recv_any(&mut writer).await.unwrap() {
            Message::OpAck(ack) => break ack,
            Message::OpRejected(r) => panic!("rejected: {r:?}"),
            Message::Error(e) => panic!("error: {e:?}"),
            _ => {}
        }
    };
    assert_eq!(ack.last_id, "100");
    assert_admin_view(&members, &map);
    // Each member holds exactly the keys whose partitions it owns.
    let owner_of = |key: &str| {
        let pid = topgun_core::hash::partition_id(key) as usize;
        map.partitions[pid].owner_node_id.to_string()
    };
    let mut elsewhere = 0;
    for m in &members {
        let held = local_keys(&mut connect(m.served.addr, "/").await).await;
        let expected: BTreeSet<String> = (1..=100)
            .map(|i| format!("k{i}"))
            .filter(|k| owner_of(k) == m.name)
            .collect();
        assert_eq!(held, expected, "{} holds its own keys only", m.name);
        if m.name != members[0].name {
            elsewhere += held.len();
        }
    }
    assert!(elsewhere > 0, "some writes were forwarded");
    let value = |name| metric(members[0].served.addr, name);
    let forwarded = value("topgun_cluster_forwarded_writes_total");
    assert_eq!(forwarded, u64::try_from(elsewhere).unwrap());
    assert_eq!(value("topgun_cluster_members{state=\"active\"}"), 3);
    assert_eq!(value("topgun_cluster_forward_failures_total"), 0);
}

/// One value of a member's `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (_, metrics) = common::http_get(addr, "/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

/// `/health/ready` and `/api/admin/cluster/status` show the cluster on every member.
fn assert_admin_view(members: &[Member], map: &PartitionMap) {
    for m in members {
        assert_eq!(common::http_get(m.served.addr, "/health/ready").0, 200);
        let (code, body) = common::http_get(m.served.addr, "/api/admin/cluster/status");
        assert_eq!(code, 200, "{body}");
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut listed: Vec<&str> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["nodeId"].as_str().unwrap())
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, ["n1", "n2", "n3"]);
        let owned: Vec<String> = status["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["ownerNodeId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(owned, owners(map));
    }
}

/// The keys of `todos` a member holds itself (queries are local until cross-node reads).
async fn local_keys(c: &mut Client) -> BTreeSet<String> {
    let sub = QuerySub {
        query_id: "q".into(),
        map_name: "todos".into(),
        query: Query::default(),
        fields: None,
    };
    send(c, &Message::QuerySub(sub)).await;
    loop {
        if let Message::QueryResp(resp) = recv_any(c).await.unwrap() {
            return resp.results.iter().map(|r| r.key.to_string()).collect();
        }
    }
}

/// The first map pushed to `c` that no longer lists `gone`, within `within`.
async fn pushed_without(c: &mut Client, gone: &str, within: Duration) -> PartitionMap {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, recv_any(c)).await;
        match next.unwrap_or_else(|_| panic!("no map without {gone} within {within:?}")) {
            Ok(Message::PartitionMap(map)) if !names(&map).contains(gone) => return map,
            Ok(_) => {}
            Err(code) => panic!("closed: {code:?}"),
        }
    }
}

/// A client connection that has its map already, so what comes next is pushed.
async fn watcher(addr: SocketAddr) -> Client {
    let mut c = connect(addr, "/").await;
    send(&mut c, &Message::PartitionMapRequest(None)).await;
    loop {
        if let Ok(Message::PartitionMap(_)) = recv_any(&mut c).await {
            return c;
        }
    }
}

#[tokio::test]
async fn a_member_stopped_with_sigterm_leaves_every_map_within_1_s_and_exits_within_2_s() {
    let cwd = tempfile::tempdir().unwrap();
    let (mut members, _) = start_cluster(3, cwd.path());
    let before = agreed(
        &all(&members),
        &names_of(&all(&members)),
        Duration::from_secs(5),
    )
    .await;
    let mut watchers = vec![
        watcher(members[0].served.addr).await,
        watcher(members[1].served.addr).await,
    ];
    let leaving = members.pop().unwrap();
    let stopped = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &leaving.served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for w in &mut watchers {
        let map = pushed_without(w, &leaving.name, Duration::from_secs(1)).await;
        assert!(map.version > before.version);
        assert!(owners(&map).iter().all(|o| o != &leaving.name));
    }
    let mut leaving = leaving;
    let exited = loop {
        if let Some(status) = leaving.served.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "still running after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exited.success(), "{exited:?}");
}

#[tokio::test]
async fn a_killed_leader_leaves_every_map_within_5_s_and_its_restart_is_back_within_5_s() {
    let cwd = tempfile::tempdir().unwrap();
    let (mut members, ports) = start_cluster(3, cwd.path());
    let everyone = names_of(&all(&members));
    agreed(&all(&members), &everyone, Duration::from_secs(5)).await;
    // The leader: the harder case, since the others must elect a new one first.
    let leader = members
        .iter()
        .position(|m| metric(m.served.addr, "topgun_cluster_is_leader") == 1)
        .expect("a leader");
    let mut killed = members.remove(leader);
    let mut watchers = Vec::new();
    for m in &members {
        watchers.push(watcher(m.served.addr).await);
    }
    let started = Instant::now();
    killed.served.child.kill().unwrap();
    let _ = killed.served.child.wait();
    for w in &mut watchers {
        pushed_without(w, &killed.name, Duration::from_secs(5)).await;
    }
    eprintln!(
        "a killed leader left every map after {:?}",
        started.elapsed()
    );
    // The same name and cluster port again: a new incarnation, back in every map.
    let restarted = Instant::now();
    members.push(start_member(leader, &ports, cwd.path()));
    agreed(&all(&members), &everyone, Duration::from_secs(5)).await;
    eprintln!("restart back in every map after {:?}", restarted.elapsed());
}

/// Reads `c` for `for_how_long`, answering the server's WebSocket pings (the client library
/// does as it reads) but never sending a `PING`; the close code if the server closed it.
async fn silent_for(c: &mut Client, for_how_long: Duration) -> Option<Option<u16>> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Ws;
    let deadline = tokio::time::Instant::now() + for_how_long;
    loop {
        match tokio::time::timeout_at(deadline, c.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Ws::Close(frame)))) => return Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Some(None),
        }
    }
}

/// The TS cluster client pings on its primary connection only: a member keeps its other,
/// silent connections open with WebSocket pings whose pongs count as activity, where a single
/// node closes a connection that sends no `PING` (PROTOCOL.md §7.3).
#[tokio::test]
async fn a_silent_connection_stays_open_in_cluster_mode_and_idles_out_on_a_single_node() {
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("topgun.toml");
    std::fs::write(
        &file,
        "idle_timeout_ms = 2000\n[cluster]\nws_ping_interval_ms = 1000\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let member = serve_binary(
        binary()
            .current_dir(cwd.path())
            .env("TOPGUN_NO_AUTH", "true")
            .env("STORAGE_BACKEND", "null")
            .args([
                "--config",
                config,
                "--node-id",
                "solo",
                "--cluster-port",
                "0",
            ]),
    );
    let mut c = connect(member.addr, "/").await;
    let silence = Duration::from_secs(5);
    assert_eq!(silent_for(&mut c, silence).await, None, "closed");
    let single = serve_binary(
        binary()
            .current_dir(cwd.path())
            .env("TOPGUN_NO_AUTH", "true")
            .env("STORAGE_BACKEND", "null")
            .args(["--config", config]),
    );
    let mut c = connect(single.addr, "/").await;
    let closed = silent_for(&mut c, silence).await;
    assert_eq!(
        closed,
        Some(Some(1000)),
        "a single node idles a silent connection out"
    );
}
