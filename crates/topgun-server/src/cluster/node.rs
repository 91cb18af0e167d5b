//! One member of a cluster: its transport, its Raft node once it has an id, and what it
//! derives from the applied control state — the `PARTITION_MAP` clients see and the routes
//! writes follow.
//!
//! Life cycle: [`ClusterNode::start`] binds the cluster listener and starts forming
//! ([`super::forming`]): the member joins a cluster a seed is in, or bootstraps one, or
//! waits. Once it has a Raft id it opens its Raft node, and every applied state is
//! published. The leader's duties (voters, liveness) run in [`super::duties`]. On SIGTERM
//! [`ClusterNode::leave`] takes the member out of the table before the process exits.
//!
//! Raft state is kept in `<data dir>/raft.redb` with a storage backend that writes a data
//! directory, in memory otherwise. A restarted member with kept state resumes on it when
//! its cluster still lists it ([`super::resume`]); any other comes back as a new incarnation
//! of its name, which the state machine admits in place of the old one (CLUSTER.md §3.4).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use topgun_cluster::ids::{Incarnation, MemberName, RaftId};
use topgun_cluster::member::MemberAddrs;
use topgun_cluster::state::Cluster;
use topgun_control::{ControlConfig, ControlPlane, MemberAddr, RaftControl, Storage};

use super::counters::{COUNTER, COUNTER_RELAY};
use super::formation::{InCluster, Status};
use super::forwarder::{FWD_WRITES, LocalWrites, serve_part};
use super::frame::Frame;
use super::hello::{Channel, Credentials, PeerIdentity};
use super::locks::{LOCK_DELIVER, LOCK_OP};
use super::maps::MapPublisher;
use super::reads::{EVENT_RELAY, FWD_READ, INTEREST, Reads, TOPIC_RELAY};
use super::resume::{Identity, RaftDir};
use super::routes::{Routes, RoutesWatch};
use super::rpc::{Handler, Rpc};
use super::transport::Transport;
use super::wire::{self, StatusWire};
use crate::clock::now_ms;
use crate::config::ClusterConfig;
use crate::http::admin::catalogs::AdminCatalogs;

/// What a member is started with.
pub struct NodeSetup {
    pub config: ClusterConfig,
    pub name: MemberName,
    /// The client listener's bound port (for the advertised URLs).
    pub client_port: u16,
    /// Applies forwarded writes on this member's shards.
    pub local: Arc<dyn LocalWrites>,
    /// Merges forwarded pushes into this member's shards.
    pub pushes: Arc<dyn super::pushes::LocalPushes>,
    /// This member's data path, which serves other members' reads and relayed events.
    pub data: Weak<crate::data::plane::DataPlane>,
    /// Where the Raft log is kept (`None`: in memory, with a storage backend that writes
    /// nothing).
    pub raft_dir: Option<RaftDir>,
    /// The admin catalogs, which follow every applied revision of the replicated ones.
    pub catalogs: Arc<AdminCatalogs>,
}

impl std::fmt::Debug for NodeSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSetup")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("client_port", &self.client_port)
            .finish_non_exhaustive()
    }
}

/// A running member.
pub struct ClusterNode {
    pub(super) me: Status,
    pub(super) config: ClusterConfig,
    pub(super) rpc: Arc<Rpc>,
    pub(super) control: watch::Sender<Option<Arc<RaftControl>>>,
    publisher: MapPublisher,
    routes: watch::Sender<Option<Arc<Routes>>>,
    local: Arc<dyn LocalWrites>,
    pushes: Arc<dyn super::pushes::LocalPushes>,
    reads: Arc<Reads>,
    raft_dir: Option<RaftDir>,
    catalogs: Arc<AdminCatalogs>,
    /// Whether the identity file names the cluster this member is in.
    identity_kept: std::sync::atomic::AtomicBool,
    /// The leader's record of when each member was last heard (by Raft id).
    pub(super) heard: Mutex<HashMap<u64, Instant>>,
    /// Whether each member keeps its data on disk, as its heartbeats say (by Raft id).
    durable: Mutex<HashMap<u64, bool>>,
    /// When each member (by name) last sent this one a Raft message: a follower's measure of
    /// its leader's silence, for when it takes over.
    pub(super) raft_heard: Mutex<HashMap<String, Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("me", &self.me.name)
            .field("addr", &self.me.addrs.cluster_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for cluster peers on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

impl ClusterNode {
    /// Binds the cluster listener and starts forming; returns at once (forming goes on in
    /// the background, so clients are served before the cluster exists).
    pub async fn start(
        setup: NodeSetup,
        publisher: MapPublisher,
        routes: watch::Sender<Option<Arc<Routes>>>,
    ) -> Result<Arc<Self>, NodeError> {
        let NodeSetup {
            config,
            name,
            client_port,
            local,
            pushes,
            data,
            raft_dir,
            catalogs,
        } = setup;
        let incarnation = Incarnation(rand::random());
        let creds = Credentials {
            cluster: config.name.clone(),
            me: PeerIdentity {
                name: name.as_str().to_owned(),
                incarnation: incarnation.0,
                addr: String::new(),
            },
            secret: config.secret.clone().unwrap_or_default(),
        };
        let listen = config.listen;
        let (transport, inbox) = Transport::bind(listen, &config.advertise_host, creds)
            .await
            .map_err(|error| NodeError::Listen {
                addr: listen,
                error,
            })?;
        let me = Status {
            name,
            incarnation,
            addrs: MemberAddrs {
                cluster_addr: transport.me().addr.clone(),
                client_url: config.advertise_url(client_port),
                http_url: config.http_url(client_port),
            },
            in_cluster: None,
        };
        let node = Arc::new_cyclic(|weak: &Weak<Self>| {
            let handler: Arc<dyn Handler> = Arc::new(NodeHandler(weak.clone()));
            let rpc = Arc::new(Rpc::start(transport, inbox, &handler));
            let reads = Reads::start(Arc::clone(&rpc), routes.subscribe(), data);
            Self {
                me,
                config,
                rpc,
                control: watch::channel(None).0,
                publisher,
                routes,
                local,
                pushes,
                reads,
                raft_dir: raft_dir.clone(),
                catalogs,
                identity_kept: std::sync::atomic::AtomicBool::new(false),
                heard: Mutex::new(HashMap::new()),
                durable: Mutex::new(HashMap::new()),
                raft_heard: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
            }
        });
        node.begin();
        node.spawn(publish(Arc::downgrade(&node)));
        node.spawn(super::duties::run(Arc::downgrade(&node)));
        tracing::info!(
            member = node.me.name.as_str(),
            cluster_addr = node.me.addrs.cluster_addr.as_str(),
            "cluster member listening"
        );
        Ok(node)
    }

    /// Resumes on a kept Raft log when there is one of this member's, else forms.
    fn begin(self: &Arc<Self>) {
        let name = self.me.name.as_str();
        let kept = self.raft_dir.as_ref().and_then(|dir| dir.read(name));
        if let (Some(dir), Some(identity)) = (&self.raft_dir, kept) {
            let resume = super::resume::resume_or_form(Arc::downgrade(self), dir.clone(), identity);
            self.spawn(resume);
            return;
        }
        if let Some(dir) = &self.raft_dir {
            // A log without its identity (or another member's) is not resumed.
            let _ = dir.clear();
        }
        self.spawn(super::forming::form(Arc::downgrade(self)));
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handle);
    }

    /// The RPC layer: what the forwarder sends parts over.
    pub fn rpc(&self) -> &Arc<Rpc> {
        &self.rpc
    }

    /// Cross-node reads and relays: the data path's peers.
    pub fn reads(&self) -> &Arc<Reads> {
        &self.reads
    }

    /// The routes as applied here.
    pub fn routes(&self) -> RoutesWatch {
        self.routes.subscribe()
    }

    /// This member's Raft node, once it has one.
    pub fn control(&self) -> Option<Arc<RaftControl>> {
        self.control.borrow().clone()
    }

    /// The applied cluster, once bootstrapped.
    pub fn cluster(&self) -> Option<Arc<topgun_cluster::state::ControlState>> {
        let control = self.control()?;
        let applied = control.state().borrow().clone();
        applied
            .state
            .cluster()
            .is_some()
            .then(|| Arc::clone(&applied.state))
    }

    /// Membership and Raft as applied here, for `/metrics`.
    pub fn view(&self) -> crate::metrics::cluster::MemberView {
        use topgun_cluster::member::MemberState;
        let mut view = crate::metrics::cluster::MemberView {
            peer_queue: u64::try_from(self.rpc.transport().queued_frames()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        let Some(control) = self.control() else {
            return view;
        };
        let metrics = control.metrics();
        view.raft_term = metrics.term;
        view.raft_applied_index = metrics.applied_index;
        view.is_leader = metrics.leader == Some(control.id());
        if let Some(state) = self.cluster()
            && let Some(cluster) = state.cluster()
        {
            for m in cluster.members() {
                let slot = match m.state {
                    MemberState::Joining => 0,
                    MemberState::Active => 1,
                    MemberState::Leaving => 2,
                    MemberState::Down => 3,
                };
                view.members[slot] += 1;
            }
            view.table_version = cluster.table_version();
            view.map_version = u64::from(cluster.map_version());
            view.catalog_revision = cluster.catalogs().revision();
            let me = RaftId(control.id());
            view.owned_partitions = cluster
                .table()
                .iter()
                .filter(|(_, e)| e.owner == me)
                .count() as u64;
        }
        view
    }

    /// The status this member gives peers while the cluster forms.
    pub(super) fn status(&self) -> Status {
        let mut me = self.me.clone();
        if let Some(state) = self.cluster()
            && let Some(cluster) = state.cluster()
        {
            let leader = self
                .control()
                .and_then(|c| c.leader())
                .and_then(|id| cluster.member(RaftId(id)))
                .map(|m| m.addrs.cluster_addr.clone());
            me.in_cluster = Some(InCluster {
                uuid: cluster.uuid(),
                leader,
            });
        }
        me
    }

    /// Opens this member's Raft node under `id` (once; later calls keep the first).
    pub(super) async fn open_control(&self, id: u64) -> Option<Arc<RaftControl>> {
        if let Some(control) = self.control() {
            return Some(control);
        }
        let addr = MemberAddr {
            name: self.me.name.as_str().to_owned(),
            cluster_addr: self.me.addrs.cluster_addr.clone(),
        };
        let rpc: Arc<dyn topgun_control::PeerRpc> =
            Arc::new(super::peer_rpc::RaftRpc(Arc::clone(&self.rpc)));
        let config = control_config(&self.config);
        let storage = self
            .raft_dir
            .as_ref()
            .map_or(Storage::Memory, |dir| Storage::Redb(dir.log()));
        match RaftControl::open(id, addr, config, &storage, rpc).await {
            Ok(control) => {
                let control = Arc::new(control);
                let mut kept = None;
                self.control.send_if_modified(|slot| {
                    if slot.is_none() {
                        *slot = Some(Arc::clone(&control));
                    }
                    kept.clone_from(slot);
                    true
                });
                tracing::info!(
                    member = self.me.name.as_str(),
                    raft_id = id,
                    "joined the control plane"
                );
                kept
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open the control plane");
                None
            }
        }
    }

    /// Graceful leave (SIGTERM): leadership handed on, this member removed from the table so
    /// every other member pushes a map without it, Raft stopped. Bounded: the process exits
    /// within its 2 s either way.
    pub async fn leave(&self) {
        let Some(control) = self.control() else {
            return;
        };
        let leave = async {
            super::duties::hand_over_leadership(&control).await;
            let me = RaftId(control.id());
            if let Err(e) = control
                .propose(topgun_cluster::command::Command::Remove { id: me })
                .await
            {
                tracing::warn!(error = %e, "could not leave the cluster cleanly");
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(1_200), leave).await;
        let _ = tokio::time::timeout(Duration::from_millis(300), control.shutdown()).await;
    }

    /// Whether this member keeps its data (and Raft log) on disk.
    pub(super) fn is_durable(&self) -> bool {
        self.raft_dir.is_some()
    }

    /// Whether member `raft_id` keeps its data on disk, as its heartbeats said; one never
    /// heard (a leader's dead predecessor) counts as durable, so it is marked down rather than
    /// removed until `member_remove_after_ms`.
    pub(super) fn member_durable(&self, raft_id: u64) -> bool {
        let durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        durable.get(&raft_id).copied().unwrap_or(true)
    }

    /// Counts member `raft_id` as heard now (the leader's liveness record).
    pub(super) fn heard_now(&self, raft_id: u64) {
        self.heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(raft_id, Instant::now());
    }

    /// Keeps whose the Raft log is, once this member is in a cluster (durable members).
    fn keep_identity(&self, cluster: &Cluster, me: RaftId) {
        use std::sync::atomic::Ordering;
        let Some(dir) = &self.raft_dir else { return };
        if self.identity_kept.load(Ordering::Relaxed) {
            return;
        }
        let identity = Identity {
            name: self.me.name.as_str().to_owned(),
            raft_id: me.0,
            cluster_uuid: cluster.uuid().0.to_string(),
        };
        match dir.write(&identity) {
            Ok(()) => self.identity_kept.store(true, Ordering::Relaxed),
            Err(e) => tracing::error!(error = %e, "could not keep the member's identity"),
        }
    }

    /// Publishes `cluster` to clients and to the router.
    fn apply(&self, cluster: &Cluster, me: RaftId) {
        self.keep_identity(cluster, me);
        self.catalogs.follow(cluster.catalogs());
        self.publisher.publish(cluster, now_ms());
        let stale = self
            .routes
            .borrow()
            .as_ref()
            .is_none_or(|r| r.version != cluster.table_version() || r.me != me);
        if stale {
            self.routes
                .send_replace(Some(Arc::new(Routes::of(cluster, me))));
        }
    }
}

/// The control plane's timings from the cluster settings.
fn control_config(config: &ClusterConfig) -> ControlConfig {
    ControlConfig {
        heartbeat_ms: config.timing.raft_heartbeat_ms,
        election_timeout_min_ms: config.timing.raft_election_timeout_min_ms,
        election_timeout_max_ms: config.timing.raft_election_timeout_max_ms,
        ..ControlConfig::default()
    }
}

/// Follows the applied state: every change is published.
async fn publish(node: Weak<ClusterNode>) {
    let mut controls = match node.upgrade() {
        Some(node) => node.control.subscribe(),
        None => return,
    };
    let Ok(control) = controls.wait_for(Option::is_some).await.map(|c| c.clone()) else {
        return;
    };
    let Some(control) = control else { return };
    let mut states = control.state();
    loop {
        let applied = states.borrow_and_update().clone();
        let Some(node) = node.upgrade() else { return };
        if let Some(cluster) = applied.state.cluster() {
            node.apply(cluster, RaftId(control.id()));
        }
        drop(node);
        if states.changed().await.is_err() {
            return;
        }
    }
}

/// What peers ask of this member.
struct NodeHandler(Weak<ClusterNode>);

impl Handler for NodeHandler {
    fn serve(
        &self,
        from: PeerIdentity,
        service: u8,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let Some(node) = self.0.upgrade() else {
            return async { Err("the member is stopping".to_owned()) }.boxed();
        };
        if service == wire::RAFT {
            node.raft_heard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(from.name.clone(), Instant::now());
        }
        async move {
            match service {
                wire::RAFT => match node.control() {
                    Some(control) => Ok(Bytes::from(control.handle(&body).await)),
                    None => Err("not in a cluster yet".to_owned()),
                },
                wire::STATUS => Ok(Bytes::from(wire::encode(&StatusWire::of(&node.status())))),
                wire::BOOTSTRAP => super::forming::on_bootstrap(&node, &body).await,
                wire::JOIN => super::duties::on_join(&node, &body).await,
                wire::REJOIN => super::resume::on_rejoin(&node, &body).await,
                FWD_WRITES => serve_part(node.routes(), Arc::clone(&node.local), body).await,
                FWD_READ => node.reads.serve_read(from, body).await,
                super::pushes::FWD_PUSH => {
                    super::pushes::serve(node.routes(), Arc::clone(&node.pushes), body).await
                }
                INTEREST => node.reads.serve_interest(from, body).await,
                COUNTER => match node.reads.data() {
                    Some(data) => super::counters::serve(&node.reads, &from, &data, body).await,
                    None => Err("the member is stopping".to_owned()),
                },
                other => Err(format!("unknown cluster service {other}")),
            }
        }
        .boxed()
    }

    fn message(&self, from: PeerIdentity, _channel: Channel, frame: Frame) {
        let Some(node) = self.0.upgrade() else { return };
        if frame.kind == EVENT_RELAY {
            node.reads.on_relay(from, frame);
            return;
        }
        if frame.kind == TOPIC_RELAY {
            node.reads.on_topic(&from, frame);
            return;
        }
        if frame.kind == LOCK_OP {
            super::locks::on_op(&node.reads, &from, &frame.body);
            return;
        }
        if frame.kind == LOCK_DELIVER {
            super::locks::on_deliver(&node.reads, frame.body);
            return;
        }
        if frame.kind == COUNTER_RELAY {
            if let Some(data) = node.reads.data() {
                super::counters::on_relay(&node.reads, &data, &from, frame.body);
            }
            return;
        }
        if frame.kind == wire::HEARTBEAT
            && let Some(id) = frame
                .body
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
        {
            let id = u64::from_be_bytes(id);
            node.heard_now(id);
            if let Some(&durable) = frame.body.get(8) {
                node.durable
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, durable != 0);
            }
        }
    }
}
