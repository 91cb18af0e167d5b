#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use tokio::sync::watch;
use topgun_cluster::command::{BootstrapMember, Command};
use topgun_cluster::ids::{ClusterUuid, Incarnation, MemberName, RaftId};
use topgun_cluster::member::MemberAddrs;
use topgun_cluster::state::ControlState;
use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

use super::super::frame::Frame;
use super::super::hello::PeerIdentity;
use super::super::rpc::Handler;
use super::super::transport::bind_for_test;
use super::*;

/// A member's shards, as far as forwarding sees them: what they were asked to apply, and
/// by which writer.
#[derive(Default)]
struct Recorded(Mutex<Vec<String>>, Mutex<Vec<ConnId>>);

impl LocalWrites for Recorded {
    fn apply(
        &self,
        writes: Vec<(String, Write)>,
        _: bool,
        author: ConnId,
    ) -> BoxFuture<'static, PartAnswer> {
        let mut applied = self.0.lock().unwrap();
        applied.extend(writes.iter().map(|(_, w)| w.key().to_owned()));
        self.1.lock().unwrap().push(author);
        async { Ok(WriteConcern::Persisted) }.boxed()
    }
}

impl super::super::pushes::LocalPushes for Recorded {
    fn push(
        &self,
        _: String,
        entries: Vec<topgun_core::OrMapEntry>,
        _: ConnId,
    ) -> BoxFuture<'static, ()> {
        let mut applied = self.0.lock().unwrap();
        applied.extend(entries.into_iter().map(|e| e.key));
        async {}.boxed()
    }
}

struct OwnerSide {
    routes: RoutesWatch,
    local: Arc<dyn LocalWrites>,
}

impl Handler for OwnerSide {
    fn serve(
        &self,
        _: PeerIdentity,
        service: u8,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        assert_eq!(service, FWD_WRITES);
        serve_part(self.routes.clone(), Arc::clone(&self.local), body).boxed()
    }

    fn message(&self, _: PeerIdentity, _: Channel, _: Frame) {}
}

struct Member {
    rpc: Arc<Rpc>,
    local: Arc<Recorded>,
    routes: watch::Sender<Option<Arc<Routes>>>,
}

async fn member(name: &str) -> Member {
    let (transport, inbox) = bind_for_test(name, b"").await;
    let local = Arc::new(Recorded::default());
    let (routes, watching) = watch::channel(None);
    let handler: Arc<dyn Handler> = Arc::new(OwnerSide {
        routes: watching,
        local: Arc::clone(&local) as Arc<dyn LocalWrites>,
    });
    let rpc = Arc::new(Rpc::start(transport, inbox, &handler));
    Member { rpc, local, routes }
}

/// A two-member cluster of `a` (id 1) and `b` (id 2) at their real addresses.
fn cluster(a: &Member, b: &Member) -> ControlState {
    let member = |name: &str, m: &Member| BootstrapMember {
        name: MemberName::new(name).unwrap(),
        incarnation: Incarnation(1),
        addrs: MemberAddrs {
            cluster_addr: m.rpc.transport().me().addr.clone(),
            client_url: format!("ws://{name}"),
            http_url: format!("http://{name}"),
        },
    };
    let mut state = ControlState::new();
    let _ = state.apply(
        Command::Bootstrap {
            cluster_uuid: ClusterUuid(1),
            version_base: 1,
            backups: 0,
            members: vec![member("a", a), member("b", b)],
        },
        1,
    );
    state
}

fn forwarder(m: &Member) -> Forwarder {
    Forwarder::new(
        Arc::clone(&m.rpc),
        m.routes.subscribe(),
        (
            Arc::clone(&m.local) as Arc<dyn LocalWrites>,
            Arc::clone(&m.local) as Arc<dyn super::super::pushes::LocalPushes>,
        ),
        Duration::from_secs(5),
    )
}

fn put(key: &str) -> (String, Write) {
    let record = LwwRecord {
        value: Value::from("v"),
        timestamp: Timestamp::new(1, 0, NodeId::new("c").unwrap()),
        ttl_ms: None,
    };
    let write = Write::Lww {
        key: key.into(),
        record,
    };
    ("m".into(), write)
}

/// Keys until one is owned by `id` under `routes`.
fn key_owned_by(routes: &Routes, id: RaftId) -> String {
    (0..100_000)
        .map(|n| format!("k{n}"))
        .find(|k| routes.owner(partition_of(k)) == id)
        .unwrap()
}

#[tokio::test]
async fn a_write_another_member_owns_is_applied_there_and_answered_here() {
    let (a, b) = (member("a").await, member("b").await);
    let state = cluster(&a, &b);
    let cluster = state.cluster().unwrap();
    let (at_a, at_b) = (
        Routes::of(cluster, RaftId(1)),
        Routes::of(cluster, RaftId(2)),
    );
    let theirs = key_owned_by(&at_a, RaftId(2));
    let ours = key_owned_by(&at_a, RaftId(1));
    a.routes.send_replace(Some(Arc::new(at_a)));
    b.routes.send_replace(Some(Arc::new(at_b)));
    let fwd = forwarder(&a);
    assert!(fwd.ready(Duration::from_secs(1)).await);
    assert_eq!(fwd.owner_elsewhere(&ours), None, "a's own partition");
    let owner = fwd.owner_elsewhere(&theirs).expect("b's partition");
    assert_eq!(owner.id, 2);
    let answer = fwd
        .forward(owner, vec![put(&theirs)], true, 7)
        .await
        .unwrap();
    assert_eq!(answer, Ok(WriteConcern::Persisted));
    assert_eq!(*b.local.0.lock().unwrap(), [theirs]);
    let writers = b.local.1.lock().unwrap().clone();
    assert_eq!(
        writers
            .iter()
            .map(|w| writer_origin(*w))
            .collect::<Vec<_>>(),
        [Some((1, 7))],
        "the owner knows the writer as a's connection 7"
    );
    assert!(a.local.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_owner_that_gave_the_partition_away_applies_nothing_and_the_batch_is_retryable() {
    let (a, b) = (member("a").await, member("b").await);
    let state = cluster(&a, &b);
    let cluster = state.cluster().unwrap();
    let at_a = Routes::of(cluster, RaftId(1));
    let theirs = key_owned_by(&at_a, RaftId(2));
    // b's view: it is member 1, so it owns none of member 2's partitions.
    b.routes
        .send_replace(Some(Arc::new(Routes::of(cluster, RaftId(1)))));
    a.routes.send_replace(Some(Arc::new(at_a)));
    let fwd = forwarder(&a);
    let owner = fwd.owner_elsewhere(&theirs).unwrap();
    let answer = fwd
        .forward(owner, vec![put(&theirs)], true, 7)
        .await
        .unwrap();
    let (code, why) = answer.unwrap_err();
    assert_eq!(code, code::UNAVAILABLE);
    assert!(why.contains("send it again"), "{why}");
    assert!(b.local.0.lock().unwrap().is_empty(), "nothing applied");
}

#[tokio::test]
async fn no_table_means_not_ready_and_malformed_parts_are_refused() {
    let (a, b) = (member("a").await, member("b").await);
    assert!(!forwarder(&a).ready(Duration::from_millis(50)).await);
    let to_b = b.rpc.transport().me().addr.clone();
    let reply = a
        .rpc
        .call(
            &to_b,
            Channel::Data,
            FWD_WRITES,
            b"\x01junk-junk",
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(reply, Err(CallError::Refused(_))), "{reply:?}");
    assert!(b.local.0.lock().unwrap().is_empty());
}
