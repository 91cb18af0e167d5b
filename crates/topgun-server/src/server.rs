//! The I/O driver: HTTP routes, WebSocket connections and shutdown. Protocol decisions live
//! in [`crate::connection::session`]; this module only moves bytes and time.
//!
//! Per connection: one task reads frames and feeds the session, one task writes. Between
//! them sit a bounded queue of `outbound_queue_len` replies — the reader waits when it is
//! full, so a client that does not read its replies stops being read — and the connection's
//! outbox of pushed events and updates, bounded by bytes ([`crate::connection::outbox`]): a client that
//! does not read those is closed as a slow consumer. Neither can grow server memory.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::clock::now_ms;
use crate::cluster::forwarder::{Forwarder, LocalWrites};
use crate::cluster::maps::{MapPublisher, MapPush, MapWatch};
use crate::cluster::node::{ClusterNode, NodeSetup};
use crate::cluster::resume::RaftDir;
use crate::config::ClusterConfig;
use crate::error;
use crate::http;
use crate::http::admin::catalogs::AdminCatalogs;
use crate::metrics::Metrics;
use crate::metrics::cluster::ForwardStats;
use crate::query::index_catalog;
use crate::security::admin_policy::Rules;
use crate::security::admin_store;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::GcPrune;
use topgun_core::{Hlc, Timestamp};

use crate::config::{AuthMode, Config};
use crate::connection::ConnId;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::connection::listener::{Admission, LINGER, Peer, PreAuth};
use crate::connection::outbox::{Backlog, KickReason, Outbox};
use crate::connection::session::{
    Authenticator, ClusterSession, Output, Session, SessionConfig, close,
};
use crate::data::conn::ConnState;
use crate::data::plane::DataPlane;
use crate::data::shard::service::Persist;
use crate::security::access::{ConnAccess, Policies};
use crate::security::auth::{AuthError, Principal};
use crate::security::guard::{AuthFailures, Unauthenticated, UserConnections};
use crate::security::interceptor::{Caller, ConnInfo};
use crate::services;
use crate::storage::data_dir::{DataDirError, DataDirLock};
use crate::storage::store::Store;
use crate::storage::{self, Backend, Opened, StorageError};

/// How often sessions are told the time (auth deadline, idle timeout).
const TICK: Duration = Duration::from_secs(1);
/// Longest wait for connections to close on shutdown. Launchers of TopGun servers send
/// SIGKILL 5 s after SIGTERM (COMPAT.md §1.2): the drain ends well before, so that the
/// process exits on its own, its log flushed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest wait to deliver the close frame to a slow consumer.
const KICK_TIMEOUT: Duration = Duration::from_secs(1);
/// Most frames one socket write carries.
const COALESCE_FRAMES: usize = 64;
/// About the most outbox bytes one socket write carries.
const COALESCE_BYTES: usize = 256 << 10;
/// The transport accepts messages up to this multiple of the decoder's frame limit, so that
/// an oversize frame is answered with `ERROR 413` instead of a dropped connection; beyond
/// it the WebSocket layer closes the connection (1009).
const TRANSPORT_SLACK: usize = 4;

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// The server-wide state every connection and route shares.
struct Shared {
    session: Arc<SessionConfig>,
    auth: AuthMode,
    phase: AtomicU8,
    metrics: Arc<Metrics>,
    data: Arc<DataPlane>,
    /// The access policies in force (replaced on reload).
    policies: Arc<Policies>,
    auth_failures: AuthFailures,
    user_connections: UserConnections,
    /// JWT mode: the connections not yet authenticated, which the listener bounds.
    waiting: Option<Arc<Unauthenticated>>,
    preauth: crate::config::PreAuthLimits,
    /// Set while the store cannot take checkpoints (writes are held in the log).
    degraded: Arc<std::sync::atomic::AtomicBool>,
    /// The latest tombstone horizon; every open connection is sent it as `GC_PRUNE`.
    gc: watch::Sender<Option<Timestamp>>,
    node_id: topgun_core::NodeId,
    tombstone_ttl_ms: u64,
    /// `TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS`: token-less `POST /sync` on a JWT server.
    http_sync_anonymous: bool,
    /// Without auth, whether the admin plane is served (loopback, or the operator's opt-in).
    admin_without_auth: bool,
    /// The admin API's policies and index catalog (recovered from `__topgun_policies` and
    /// `__topgun_indexes`; in a cluster, followed from the control log).
    catalogs: Arc<AdminCatalogs>,
    /// What `/api/admin/settings` shows; the GC task reads its interval here.
    settings: http::admin::settings::Settings,
    /// The admin login's user name and password.
    admin: crate::config::AdminSettings,
    /// `TOPGUN_TRUSTED_PROXY`.
    trusted_proxy: bool,
    api_rate_limit: http::edge::ApiRateLimit,
    cors: crate::config::CorsOrigins,
    /// Frames being processed right now.
    in_flight: AtomicUsize,
    /// Every connection's unread pushed output, against the server's budget.
    backlog: Arc<Backlog>,
    started: Instant,
    shutdown: watch::Sender<bool>,
    /// This member, in cluster mode (set once it has started), and its forwarding numbers.
    member: std::sync::OnceLock<(Arc<ClusterNode>, Arc<ForwardStats>)>,
}

impl Authenticator for Shared {
    fn verify(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError> {
        match &self.auth {
            AuthMode::Jwt(verifier) => Authenticator::verify(verifier, token, now_ms),
            // Never consulted: sessions do not verify tokens when auth is off.
            AuthMode::Disabled => Err(AuthError::Malformed),
        }
    }
}

impl http::Host for Shared {
    fn data(&self) -> &DataPlane {
        &self.data
    }

    fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    fn decode_limits(&self) -> &topgun_core::protocol::Limits {
        &self.session.decode
    }

    fn auth_required(&self) -> bool {
        self.session.auth_required
    }

    fn verify(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError> {
        Authenticator::verify(self, token, now_ms)
    }

    fn http_sync_allows_anonymous(&self) -> bool {
        self.http_sync_anonymous
    }

    fn admin_plane_without_auth(&self) -> bool {
        self.admin_without_auth
    }

    fn admin_dir(&self) -> Option<&std::path::Path> {
        self.admin.dir.as_deref()
    }

    fn catalogs(&self) -> &AdminCatalogs {
        &self.catalogs
    }

    fn settings(&self) -> &http::admin::settings::Settings {
        &self.settings
    }

    fn node(&self) -> http::admin::cluster::NodeView {
        http::admin::cluster::NodeView {
            node_id: self.node_id.as_str().to_owned(),
            address: format!("{}:{}", self.settings.host, self.settings.port),
            connections: self.metrics.connections(),
            uptime_secs: self.started.elapsed().as_secs(),
        }
    }

    fn cluster(&self) -> Option<Arc<topgun_cluster::state::ControlState>> {
        self.member.get()?.0.cluster()
    }

    fn credentials(&self) -> http::admin::login::Credentials<'_> {
        http::admin::login::Credentials {
            username: &self.admin.username,
            password: self
                .admin
                .password
                .as_ref()
                .map(crate::config::Secret::expose),
        }
    }

    fn sign(&self, sub: &str, roles: &[&str], exp_secs: u64) -> Option<String> {
        match &self.auth {
            AuthMode::Jwt(verifier) => verifier.sign(sub, roles, exp_secs),
            AuthMode::Disabled => None,
        }
    }

    fn auth_failures(&self) -> &AuthFailures {
        &self.auth_failures
    }

    fn trusted_proxy(&self) -> bool {
        self.trusted_proxy
    }

    fn api_rate_limit(&self) -> &http::edge::ApiRateLimit {
        &self.api_rate_limit
    }

    fn cors(&self) -> &crate::config::CorsOrigins {
        &self.cors
    }

    fn status(&self) -> (usize, u64, u64) {
        (
            self.metrics.connections(),
            self.started.elapsed().as_secs(),
            self.metrics.ops_total(),
        )
    }
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// The log's directory, held until [`Server::run`] returns (`None` without one).
    data_dir: Option<DataDirLock>,
}

/// Why a server could not start. Each message is whole: the storage error's own causes are
/// folded into its text, so that printing the chain says nothing twice.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{0}")]
    Storage(StorageError),
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::node::NodeError),
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Locks the log's directory (unless the store is in memory: then nothing is written
    /// anywhere), opens the configured storage, recovers its records and binds the listener
    /// (port 0 picks a free port).
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let lock = match config.storage.backend {
            Backend::Memory => None,
            Backend::Redb | Backend::Postgres => {
                Some(DataDirLock::acquire(&config.storage.paths().wal)?)
            }
        };
        let opened = storage::open(&config.storage)
            .await
            .map_err(StartError::Storage)?;
        let mut server = Self::bind_opened(config, opened).await?;
        server.data_dir = lock;
        Ok(server)
    }

    /// Like [`Server::bind`] with the configured write-ahead log in front of a given store.
    /// The data directory is not locked: the caller owns the store, and may simulate a crash
    /// and a restart within one process.
    pub async fn bind_with_log(config: Config, store: Arc<dyn Store>) -> Result<Self, StartError> {
        let opened = storage::open_with_store(&config.storage, store)
            .await
            .map_err(StartError::Storage)?;
        Self::bind_opened(config, opened).await
    }

    /// Like [`Server::bind`] over a given store, without a log: every write goes straight to
    /// `store`. For tests and embedding; sharing a store between servers in turn simulates a
    /// restart.
    pub async fn bind_with_store(
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartError> {
        let all: Vec<u32> = (0..topgun_core::hash::PARTITION_COUNT).collect();
        let loaded = store
            .load(&all)
            .await
            .map_err(|e| StartError::Storage(e.into()))?;
        let opened = Opened {
            loaded,
            journal: Vec::new(),
            persist: Persist::Store(store),
            degraded: Arc::default(),
        };
        Self::bind_opened(config, opened).await
    }

    async fn bind_opened(config: Config, opened: Opened) -> Result<Self, StartError> {
        let backlog = Backlog::new(config.backlog);
        let metrics = Metrics::default().with_backlog(Arc::clone(&backlog));
        let metrics = match &opened.persist {
            Persist::Wal { wal, .. } => metrics.with_log(wal.stats()),
            Persist::Store(_) => metrics,
        };
        let waiting = matches!(config.auth, AuthMode::Jwt(_)).then(|| {
            Arc::new(Unauthenticated::new(
                config.preauth.connections_max,
                config.preauth.connections_per_ip_max,
            ))
        });
        let metrics = Arc::new(match &waiting {
            Some(waiting) => metrics.with_preauth(Arc::clone(waiting)),
            None => metrics,
        });
        // Strict: a client clock far ahead must not drag the server clock along with it. But
        // first past every stored timestamp: if the wall clock went back across the restart,
        // the server's own writes (fencing marks, counters, stamped removes) must still win
        // over what it wrote before.
        let mut hlc = Hlc::new(config.node_id.clone()).with_max_drift_ms(config.max_drift_ms);
        if let Some(latest) = latest_timestamp(&opened.loaded) {
            let _ = hlc.update(&latest, now_ms());
        }
        let hlc = hlc.strict(true);
        // Read before the shards take the records: the admin API's policies are in force from
        // the first request.
        let admin_policies = admin_store::recover(&opened.loaded);
        let indexes = index_catalog::recover(&opened.loaded);
        let settings = services::Settings {
            shards: config.shards,
            topics_per_connection_max: config.session.topics_per_connection_max,
            guards: config.guards,
            interceptors: config.interceptors.clone(),
            journal: config.storage.journal,
            recovered_journal: opened.journal,
            node_id: config.node_id.as_str().to_owned(),
        };
        let data = services::start(
            settings,
            opened.loaded,
            &opened.persist,
            hlc,
            Arc::clone(&metrics),
        );
        let degraded = opened.degraded;
        let listen = |error| StartError::Listen {
            addr: config.bind,
            error,
        };
        let listener = TcpListener::bind(config.bind).await.map_err(listen)?;
        let addr = listener.local_addr().map_err(listen)?;
        let (publisher, maps) = MapPublisher::new();
        let member = config.cluster.clone().map(|c| Member {
            config: c,
            name: config.node_id.as_str().to_owned(),
            raft_dir: raft_dir(&config),
        });
        let session = Arc::new(session_config(&config, addr, maps));
        let (shutdown, _) = watch::channel(false);
        let settings = node_settings(&config, addr, Arc::clone(data.queue_gate()));
        let policies = Arc::new(Policies::with_rules(Rules {
            roles: config.policies,
            admin: admin_policies,
            admin_subjects: config.admin.subjects.clone(),
        }));
        let catalogs = AdminCatalogs::new(Arc::clone(&policies), indexes, data.internal());
        let shared = Arc::new(Shared {
            session,
            policies,
            auth_failures: AuthFailures::new(config.guards.auth_failures_per_ip_per_minute),
            user_connections: UserConnections::new(config.guards.connections_per_user_max),
            waiting,
            preauth: config.preauth,
            auth: config.auth,
            phase: AtomicU8::new(STARTING),
            metrics,
            data: Arc::new(data),
            degraded,
            gc: watch::channel(None).0,
            node_id: config.node_id.clone(),
            tombstone_ttl_ms: config.tombstone_ttl_ms,
            http_sync_anonymous: config.http.sync_allow_anonymous,
            admin_without_auth: config.bind.ip().is_loopback()
                || config.admin.allow_no_auth_public_bind,
            catalogs: Arc::new(catalogs),
            settings,
            admin: config.admin.clone(),
            trusted_proxy: config.http.trusted_proxy,
            api_rate_limit: http::edge::ApiRateLimit::default(),
            cors: config.http.cors_origins.clone(),
            in_flight: AtomicUsize::new(0),
            backlog,
            started: Instant::now(),
            shutdown,
            member: std::sync::OnceLock::new(),
        });
        start_cluster(member, addr.port(), &shared, publisher).await?;
        Ok(Self {
            listener,
            shared,
            data_dir: None,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Lets `PUT /api/admin/settings` change the log filter (the binary hands it over).
    pub fn set_log_control(&self, control: http::admin::settings::LogControl) {
        self.shared.settings.set_log_control(control);
    }

    /// The policies in force; [`Policies::replace`] reloads them (SIGHUP in the binary).
    pub fn policies(&self) -> Arc<Policies> {
        Arc::clone(&self.shared.policies)
    }

    /// Serves until `shutdown` completes, then drains: readiness turns 503, sessions are
    /// closed with 1001, and the call returns once they are gone (or after 4 s).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        // Released when serving ends, so that a restart within the process can take it.
        let _data_dir = self.data_dir;
        let app = Router::new()
            .route("/health", get(health))
            .route("/health/live", get(|| async { StatusCode::OK }))
            .route("/health/ready", get(ready))
            .route("/healthz", get(ready))
            .route("/metrics", get(metrics))
            .merge(admin_pages(shared.admin.dir.is_some()))
            .route("/api/admin/backup", get(api_backup))
            .merge(http::admin::routes::<Shared>())
            .route(
                "/sync",
                axum::routing::post(http::sync::handle::<Shared>)
                    .layer(axum::extract::DefaultBodyLimit::disable()),
            )
            // Each plain request starts its connection's pre-auth allowance again (the
            // WebSocket routes below do not: their upgrade and AUTH share one).
            .route_layer(axum::middleware::from_fn(refill_preauth))
            .route("/", get(upgrade))
            .route("/ws", get(upgrade))
            .with_state(Arc::clone(&shared))
            // Outermost last: CORS answers preflights and marks every answer, 429s included.
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&shared),
                http::edge::rate_limit::<Shared>,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&shared),
                http::edge::cors::<Shared>,
            ));
        shared.phase.store(READY, Ordering::SeqCst);
        if shared.tombstone_ttl_ms > 0 {
            tokio::spawn(prune_tombstones(Arc::clone(&shared)));
        }
        let drain = Arc::clone(&shared);
        let member = shared.member.get().map(|(node, _)| Arc::clone(node));
        let stop = async move {
            shutdown.await;
            if let Some(member) = &member {
                member.leave().await;
            }
            drain.phase.store(DRAINING, Ordering::SeqCst);
            drain.shutdown.send_replace(true);
        };
        let listener = Admission::new(
            self.listener,
            shared.waiting.clone(),
            shared.preauth,
            shared.session.limits.auth_deadline_ms,
            Arc::clone(&shared.metrics),
        );
        let app = app.into_make_service_with_connect_info::<Peer>();
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while shared.metrics.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// How long a forwarded part may wait for its owner's answer before the batch is told to
/// send it again.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What every session shares; in cluster mode, the committed maps too.
fn session_config(config: &Config, addr: SocketAddr, maps: MapWatch) -> SessionConfig {
    SessionConfig {
        auth_required: matches!(config.auth, AuthMode::Jwt(_)),
        limits: config.session,
        decode: config.decode,
        node_id: config.node_id.as_str().to_owned(),
        advertised_url: config
            .cluster
            .as_ref()
            .map_or_else(|| format!("ws://{addr}"), |c| c.advertise_url(addr.port())),
        cluster: config.cluster.as_ref().map(|c| cluster_session(c, maps)),
    }
}

/// What connections of a cluster member share.
fn cluster_session(config: &ClusterConfig, maps: MapWatch) -> ClusterSession {
    ClusterSession {
        maps,
        push_interval: Duration::from_millis(config.timing.map_push_interval_ms),
        ping_interval: Duration::from_millis(config.timing.ws_ping_interval_ms),
    }
}

/// In cluster mode: starts this member and routes writes it does not own through it.
/// What a cluster member starts with.
struct Member {
    config: ClusterConfig,
    name: String,
    raft_dir: Option<RaftDir>,
}

/// Where a member keeps its Raft log: the data directory, unless the storage backend
/// writes nothing anywhere.
fn raft_dir(config: &Config) -> Option<RaftDir> {
    match config.storage.backend {
        Backend::Memory => None,
        Backend::Redb | Backend::Postgres => Some(RaftDir(config.storage.data_dir.clone())),
    }
}

async fn start_cluster(
    member: Option<Member>,
    client_port: u16,
    shared: &Arc<Shared>,
    publisher: MapPublisher,
) -> Result<(), StartError> {
    let Some(Member {
        config: cluster,
        name: node_id,
        raft_dir,
    }) = member
    else {
        return Ok(());
    };
    if let Some(RaftDir(dir)) = &raft_dir
        && let Err(error) = std::fs::create_dir_all(dir)
    {
        tracing::error!(dir = %dir.display(), %error, "cannot create the data directory");
    }
    // Checked when the configuration was read: a member name has no `:`.
    let Ok(name) = topgun_cluster::ids::MemberName::new(&node_id) else {
        return Ok(());
    };
    let local: Arc<dyn LocalWrites> = Arc::new(SharedWrites(Arc::downgrade(shared)));
    let pushes: Arc<dyn crate::cluster::pushes::LocalPushes> =
        Arc::new(SharedWrites(Arc::downgrade(shared)));
    let (routes, _) = watch::channel(None);
    let setup = NodeSetup {
        config: cluster,
        name,
        client_port,
        local: Arc::clone(&local),
        pushes: Arc::clone(&pushes),
        data: Arc::downgrade(&shared.data),
        raft_dir,
        catalogs: Arc::clone(&shared.catalogs),
    };
    let node = ClusterNode::start(setup, publisher, routes).await?;
    let replicated = crate::cluster::catalogs::ControlCatalogs(Arc::downgrade(&node));
    shared.catalogs.set_replicated(Arc::new(replicated));
    let forward = Forwarder::new(
        Arc::clone(node.rpc()),
        node.routes(),
        (local, pushes),
        FORWARD_TIMEOUT,
    );
    let stats = Arc::clone(forward.stats());
    shared.data.set_forward(Arc::new(forward));
    let peers: Arc<dyn crate::data::peers::Peers> = Arc::clone(node.reads()) as _;
    shared.data.set_cluster(peers);
    let counters = crate::cluster::counters::RemoteCounters {
        rpc: Arc::clone(node.rpc()),
        routes: node.routes(),
    };
    shared.data.counters().set_peers(Arc::new(counters));
    let locks = crate::cluster::locks::RemoteLocks {
        rpc: Arc::clone(node.rpc()),
        routes: node.routes(),
        stats: Arc::clone(&node.reads().stats),
    };
    shared.data.locks().set_peers(Arc::new(locks));
    let _ = shared.member.set((node, stats));
    Ok(())
}

/// This member's shards, for writes and pushes forwarded to it.
struct SharedWrites(std::sync::Weak<Shared>);

impl crate::cluster::pushes::LocalPushes for SharedWrites {
    fn push(
        &self,
        map: String,
        entries: Vec<topgun_core::OrMapEntry>,
        author: crate::connection::ConnId,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let shared = self.0.upgrade();
        Box::pin(async move {
            if let Some(shared) = shared {
                shared.data.push_forwarded(&map, entries, author).await;
            }
        })
    }
}

impl LocalWrites for SharedWrites {
    fn apply(
        &self,
        writes: Vec<(String, crate::data::ops::Write)>,
        durable: bool,
        author: crate::connection::ConnId,
    ) -> futures_util::future::BoxFuture<'static, crate::data::forward::PartAnswer> {
        let shared = self.0.upgrade();
        Box::pin(async move {
            match shared {
                Some(shared) => shared.data.apply_forwarded(writes, durable, author).await,
                None => Err((error::code::UNAVAILABLE, "the member is stopping".into())),
            }
        })
    }
}

/// What `/api/admin/settings` shows, from the configuration and the bound address.
fn node_settings(
    config: &Config,
    addr: SocketAddr,
    gate: Arc<crate::data::gate::QueueGate>,
) -> http::admin::settings::Settings {
    http::admin::settings::Settings::new(
        config.node_id.as_str().to_owned(),
        addr,
        matches!(config.auth, AuthMode::Jwt(_)),
        config.guards.value_bytes_max,
        gate,
        config.gc_interval_ms,
    )
}

/// The greatest timestamp among loaded records.
fn latest_timestamp(entries: &[crate::storage::store::StoredEntry]) -> Option<Timestamp> {
    use crate::storage::store::StoredValue;
    entries
        .iter()
        .flat_map(|e| match &e.value {
            StoredValue::Lww(r) => vec![&r.timestamp],
            StoredValue::Or { records, .. } => records.iter().map(|r| &r.timestamp).collect(),
            StoredValue::Gone(_) => Vec::new(),
        })
        .max()
        .cloned()
}

/// Every `gc_interval_ms`: prunes tombstones older than `tombstone_ttl_ms` and publishes the
/// horizon, which every connection forwards as `GC_PRUNE`. Stops with the server.
async fn prune_tombstones(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    // The first round runs at once, as the server starts.
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        // Read each round: `PUT /api/admin/settings` may have changed it.
        wait = Duration::from_millis(shared.settings.gc_interval_ms());
        let millis = now_ms().saturating_sub(shared.tombstone_ttl_ms);
        let horizon = Timestamp::new(millis, 0, shared.node_id.clone());
        let keys = shared.data.prune(horizon.clone()).await;
        if keys > 0 {
            tracing::info!(keys, %horizon, "pruned old tombstones");
        }
        shared.gc.send_replace(Some(horizon));
    }
}

/// The socket read buffer of one connection. The WebSocket stack allocates it eagerly and
/// zero-fills its free part before every read, so its default (128 KiB) costs both memory
/// per idle connection and a large memset per frame; client frames are mostly far smaller,
/// and a larger one simply takes several reads.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Starts the pre-auth allowance of a plain HTTP request's connection again.
async fn refill_preauth(
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(preauth) = &peer.preauth {
        preauth.refill();
    }
    next.run(request).await
}

async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<Peer>,
    State(shared): State<Arc<Shared>>,
) -> Response {
    if shared.phase.load(Ordering::SeqCst) != READY {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Some(preauth) = &peer.preauth {
        preauth.upgraded();
    }
    let max = shared
        .session
        .decode
        .max_frame_bytes
        .saturating_mul(TRANSPORT_SLACK);
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve_connection(socket, shared, peer))
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let state = match shared.phase.load(Ordering::SeqCst) {
        STARTING => "starting",
        READY => "ready",
        _ => "draining",
    };
    let storage = if shared.degraded.load(Ordering::Relaxed) {
        "degraded: the store is not taking checkpoints; writes are held in the log"
    } else {
        "ok"
    };
    axum::Json(serde_json::json!({
        "state": state,
        "storage": storage,
        "connections": shared.metrics.connections(),
        "in_flight": shared.in_flight.load(Ordering::SeqCst),
        "uptime_secs": shared.started.elapsed().as_secs(),
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        render_metrics(&shared),
    )
}

/// The server's metrics, and a cluster member's own.
fn render_metrics(shared: &Shared) -> String {
    let mut out = shared.metrics.render();
    if let Some((member, forwarded)) = shared.member.get() {
        member.view().render(&mut out);
        forwarded.render(&mut out);
        member.reads().stats.render(&mut out);
    }
    out
}

/// A backup of every record (see [`crate::storage::backup`]). With JWT auth on, the request must carry
/// `Authorization: Bearer <token>` with the `ADMIN` role; without auth (development) anyone
/// who can connect may read everything anyway.
async fn backup(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    if matches!(shared.auth, AuthMode::Jwt(_)) {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match token.map(|t| Authenticator::verify(&*shared, t, now_ms())) {
            Some(Ok(p)) if p.roles.iter().any(|r| r == "ADMIN") => {}
            Some(Ok(_)) => {
                return (StatusCode::FORBIDDEN, "backups need the ADMIN role").into_response();
            }
            _ => {
                let why = "send Authorization: Bearer <a JWT with the ADMIN role>";
                return (StatusCode::UNAUTHORIZED, why).into_response();
            }
        }
    }
    dump(&shared).await
}

/// What is under `/admin`: the static dashboard when `TOPGUN_ADMIN_DIR` names one, else the
/// old path of backups (COMPAT §3.1 keeps it while no dashboard is served there).
fn admin_pages(dashboard: bool) -> Router<Arc<Shared>> {
    if dashboard {
        let page = get(http::admin::dashboard::serve::<Shared>);
        Router::new()
            .route("/admin", page.clone())
            .route("/admin/", page.clone())
            .route("/admin/{*path}", page)
    } else {
        Router::new().route("/admin/backup", get(backup))
    }
}

/// `GET /api/admin/backup`: a backup for the admin plane's role (COMPAT §3.1).
async fn api_backup(State(shared): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    if let Err(refused) = http::admin::guard(&*shared, &headers) {
        return *refused.0;
    }
    dump(&shared).await
}

/// Every record, encoded as a backup file.
async fn dump(shared: &Shared) -> Response {
    match shared.data.dump().await {
        Ok(entries) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            crate::storage::backup::encode(&entries),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

/// 200 when serving normally; 503 while starting, draining, or while the store is
/// unreachable (writes are still accepted into the log, up to its bound).
async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.phase.load(Ordering::SeqCst) != READY {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready");
    }
    if shared.degraded.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "degraded: the store is unreachable; writes are held in the write-ahead log",
        );
    }
    if let Some((member, _)) = shared.member.get()
        && member.cluster().is_none()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "forming: this member is not in a cluster with a partition table yet",
        );
    }
    (StatusCode::OK, "ready")
}

/// Counts a connection for as long as it lives.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}

/// Why a slow consumer is closed: it missed events and must resync.
const KICK: CloseFrame = CloseFrame {
    code: close::TRY_AGAIN_LATER,
    reason: axum::extract::ws::Utf8Bytes::from_static(
        "slow consumer: events were not read in time; reconnect and resync",
    ),
};

async fn serve_connection(socket: WebSocket, shared: Arc<Shared>, peer: Peer) {
    let (ip, preauth) = (Some(peer.addr.ip()), peer.preauth);
    shared.metrics.connection_opened();
    let _guard = ConnectionGuard(Arc::clone(&shared));
    let (sink, mut stream) = socket.split();
    let queue_len = shared.session.limits.outbound_queue_len;
    let (tx, replies) = mpsc::channel::<Outbound>(queue_len);
    let access = ConnAccess::new(Arc::clone(&shared.policies));
    let (handle, mut kicked) = ConnHandle::open(&shared.backlog, access);
    let queues = Queues {
        replies,
        outbox: Arc::clone(handle.outbox()),
        kicked: kicked.clone(),
        write_timeout: Duration::from_millis(shared.session.limits.write_timeout_ms),
    };
    let writer = tokio::spawn(write_loop(sink, queues, Arc::clone(&shared.metrics)));
    let mut conn = shared
        .data
        .connection(handle, shared.session.limits.maps_per_connection_max);
    let (mut session, mut first) = Session::open(Arc::clone(&shared.session), now_ms());
    conn.set_principal(session.principal(), shared.session.auth_required);
    // Built where needed rather than kept: every byte held across the loop's awaits is a
    // byte of every idle connection.
    let info = |id| ConnInfo { id, ip };
    if let Err(why) = admit(&shared, &info(conn.handle.id)) {
        first = refuse(why);
    }
    let mut user: Option<String> = None;
    // `deliver` futures are boxed (as is dispatch within them): they hold whole messages
    // across awaits, and inline they would sit in every idle connection's task.
    let mut open = Box::pin(deliver(first, &tx, &mut conn, &shared)).await;
    let mut tick = tokio::time::interval(TICK);
    let mut shutdown = shared.shutdown.subscribe();
    let mut gc = shared.gc.subscribe();
    let mut horizon_sent = None;
    // The horizon goes out once the client has spoken (without auth, its DEVICE_HELLO or
    // AUTH is answered first: a TS client waiting for DEVICE_ACK must not get GC_PRUNE
    // before it).
    let mut greeted = false;
    let mut unasked = Unasked::of(shared.session.cluster.as_ref());
    while open {
        // No binding holds the message: a local `Option<Message>` would sit in this task's
        // state (≈ 440 bytes) across every await of the loop.
        if greeted && let Some(prune) = horizon_news(&session, &mut gc, &mut horizon_sent) {
            open = Box::pin(deliver(vec![Output::Send(prune)], &tx, &mut conn, &shared)).await;
            continue;
        }
        let outputs = tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(WsMessage::Binary(bytes))) => {
                    greeted = true;
                    let hooks = Hooks { shared: &shared, conn: conn.handle.id };
                    let mut outputs = handle_frame(&mut session, &bytes, &hooks);
                    guard_auth(&shared, &session, ip, &mut user, &mut outputs);
                    note_map_sent(unasked.as_mut(), &outputs);
                    if session.is_open() && let Some(preauth) = &preauth {
                        preauth.authenticated();
                    }
                    outputs
                }
                Some(Ok(WsMessage::Text(_))) => session.on_text_frame(),
                // WebSocket pings are answered by the transport; pongs answer ours.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {
                    session.on_activity(now_ms());
                    continue;
                }
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
            },
            _ = tick.tick() => {
                let mut outputs = session.on_tick(now_ms());
                // A logout at the token's expiry ends the user's count here too.
                guard_auth(&shared, &session, ip, &mut user, &mut outputs);
                outputs
            }
            _ = shutdown.changed() => vec![Output::Close {
                code: close::GOING_AWAY,
                reason: "server shutting down",
            }],
            // The writer closes the socket; nothing more is read.
            _ = kicked.changed() => break,
            _ = gc.changed() => continue,
            item = Unasked::next(unasked.as_mut(), session.is_open()) => {
                if tx.send(item).await.is_err() { break }
                continue;
            }
            () = preauth_spent(preauth.as_deref()) => too_much_before_auth(&shared, preauth.as_deref()),
        };
        conn.set_principal(session.principal(), shared.session.auth_required);
        open = Box::pin(deliver(outputs, &tx, &mut conn, &shared)).await;
    }
    warn_if_kicked(&conn, user.as_deref(), ip);
    if let Some(user) = user {
        shared.user_connections.leave(&user);
    }
    shared
        .data
        .interceptors()
        .on_disconnect(&info(conn.handle.id));
    Box::pin(shared.data.disconnect(&mut conn)).await;
    drop(tx);
    let _ = writer.await;
    conn.handle.outbox().close();
    // A connection closed for sending too much before `AUTH` is drained for a moment (see
    // `PreAuth::discard`): its client, perhaps still writing, then reads the close frame.
    if preauth.as_ref().is_some_and(|p| p.is_discarding()) {
        let _ =
            tokio::time::timeout(LINGER, async { while stream.next().await.is_some() {} }).await;
    }
}

/// What a cluster member sends each connection unasked: newer maps, and WebSocket pings.
struct Unasked {
    pushes: MapPush,
    pings: tokio::time::Interval,
}

impl Unasked {
    fn of(cluster: Option<&ClusterSession>) -> Option<Self> {
        cluster.map(|c| Self {
            pushes: MapPush::new(c.maps.clone(), c.push_interval),
            pings: tokio::time::interval(c.ping_interval),
        })
    }

    /// The next push or ping; never on a single node.
    async fn next(this: Option<&mut Self>, open: bool) -> Outbound {
        let Some(this) = this else {
            return std::future::pending().await;
        };
        tokio::select! {
            map = this.pushes.due(open) => Outbound::Frame(map.frame.clone()),
            _ = this.pings.tick() => Outbound::Ping,
        }
    }
}

/// A map the session sent in answer to a request counts as pushed.
fn note_map_sent(unasked: Option<&mut Unasked>, outputs: &[Output]) {
    let Some(unasked) = unasked else { return };
    for output in outputs {
        if let Output::Send(Message::PartitionMap(map)) = output {
            unasked.pushes.sent(map.version);
        }
    }
}

/// Logs a connection closed as a slow consumer.
fn warn_if_kicked(conn: &ConnState, user: Option<&str>, ip: Option<IpAddr>) {
    if let Some(reason) = conn.handle.outbox().kicked() {
        tracing::warn!(
            conn = conn.handle.id,
            user = user.unwrap_or("-"),
            ip = ?ip,
            reason = reason.as_str(),
            "closed a slow consumer: it did not read what it was sent; it must reconnect and resync"
        );
    }
}

/// Completes when the connection has spent its pre-auth allowance; never without one.
async fn preauth_spent(preauth: Option<&PreAuth>) {
    match preauth {
        Some(preauth) if !preauth.is_authenticated() => preauth.spent().await,
        _ => std::future::pending().await,
    }
}

/// The allowance is spent in the middle of a frame, which can then never complete.
fn too_much_before_auth(shared: &Shared, preauth: Option<&PreAuth>) -> Vec<Output> {
    shared.metrics.preauth_refused("bytes");
    if let Some(preauth) = preauth {
        preauth.discard();
    }
    vec![Output::Close {
        code: close::TOO_BIG,
        reason: "more than preauth_bytes_max bytes sent before authenticating",
    }]
}

/// Whether a new connection may be served: its address has not used up its failed
/// `AUTH`s, and no interceptor refuses it.
fn admit(shared: &Shared, info: &ConnInfo) -> Result<(), String> {
    if let Some(ip) = info.ip
        && let Err(wait_ms) = shared.auth_failures.admits(ip, now_ms())
    {
        return Err(format!(
            "too many failed authentication attempts from {ip}; retry in {} s",
            wait_ms.div_ceil(1000)
        ));
    }
    shared.data.interceptors().on_connection(info)
}

/// What a refused connection is sent: the reason, then a policy close.
fn refuse(why: String) -> Vec<Output> {
    vec![
        Output::Send(error::error(error::code::TOO_MANY, why)),
        Output::Close {
            code: close::POLICY,
            reason: "connection refused",
        },
    ]
}

/// After a frame: counts a failed `AUTH` against the address, and keeps the user's
/// connection count — an `AUTH` that would take a user past its limit is failed instead.
fn guard_auth(
    shared: &Shared,
    session: &Session,
    ip: Option<IpAddr>,
    user: &mut Option<String>,
    outputs: &mut Vec<Output>,
) {
    let failed = outputs
        .iter()
        .any(|o| matches!(o, Output::Send(Message::AuthFail(_))));
    if let (true, Some(ip)) = (failed, ip) {
        shared.auth_failures.failed(ip, now_ms());
    }
    let now = session.principal().map(|p| p.user_id.as_str());
    if now == user.as_deref() {
        return;
    }
    if let Some(old) = user.take() {
        shared.user_connections.leave(&old);
    }
    let Some(now) = now else {
        return;
    };
    if shared.user_connections.join(now) {
        *user = Some(now.to_owned());
        return;
    }
    let why = format!(
        "Authentication failed: user {now:?} already has {} connections, the most allowed",
        shared.user_connections.max()
    );
    *outputs = vec![
        Output::Send(Message::AuthFail(
            topgun_core::protocol::messages::AuthFail {
                error: Some(why.into()),
                code: Some(429),
            },
        )),
        Output::Close {
            code: close::POLICY,
            reason: "too many connections for this user",
        },
    ];
}

/// A `GC_PRUNE` to send, once the session is open and the horizon moved past what it was told.
fn horizon_news(
    session: &Session,
    gc: &mut watch::Receiver<Option<Timestamp>>,
    sent: &mut Option<Timestamp>,
) -> Option<Message> {
    // Marks the value seen either way, so `changed` waits for the next horizon.
    let current = gc.borrow_and_update().clone();
    if !session.is_open() || current.is_none() || current == *sent {
        return None;
    }
    sent.clone_from(&current);
    current.map(|older_than| Message::GcPrune(GcPrune { older_than }))
}

/// What one connection's session asks of the server while it reads a frame.
struct Hooks<'a> {
    shared: &'a Shared,
    conn: ConnId,
}

impl Authenticator for Hooks<'_> {
    fn verify(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError> {
        Authenticator::verify(self.shared, token, now_ms)
    }

    fn admit_batch(&self, user: Option<&str>, items: usize, now_ms: u64) -> bool {
        let caller = Caller {
            conn: self.conn,
            user,
            now_ms,
        };
        self.shared
            .data
            .interceptors()
            .on_before_batch(&caller, items)
            .is_ok()
    }
}

/// Runs one binary frame through the session, with metrics.
fn handle_frame(session: &mut Session, bytes: &[u8], hooks: &Hooks<'_>) -> Vec<Output> {
    let shared = hooks.shared;
    let started = Instant::now();
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let out = session.on_frame(bytes, now_ms(), hooks);
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    shared.metrics.received(bytes.len());
    if let Some(type_name) = session.last_message_type() {
        shared.metrics.message(type_name);
    }
    shared.metrics.frame_handled(started.elapsed());
    out
}

/// Carries out a session's outputs in order; false once the connection is to be closed.
async fn deliver(
    outputs: Vec<Output>,
    tx: &mpsc::Sender<Outbound>,
    conn: &mut ConnState,
    shared: &Shared,
) -> bool {
    for output in outputs {
        let item = match output {
            Output::Send(msg) => Outbound::Message(Box::new(msg)),
            // Boxed: the dispatch future is large (every request kind's state).
            Output::Dispatch(msg) => {
                match Box::pin(shared.data.dispatch(conn, msg, now_ms())).await {
                    Some(item) => item,
                    None => continue,
                }
            }
            Output::Close { code, reason } => {
                let _ = tx.send(Outbound::Close { code, reason }).await;
                return false;
            }
        };
        if tx.send(item).await.is_err() {
            return false;
        }
    }
    true
}

/// What a connection's writer reads from.
struct Queues {
    replies: mpsc::Receiver<Outbound>,
    outbox: Arc<Outbox>,
    kicked: watch::Receiver<bool>,
    /// How long one socket write (at most [`COALESCE_BYTES`] of the outbox, or one reply) may
    /// take before the connection is closed as slow.
    write_timeout: Duration,
}

/// Writes replies (in request order) and the outbox's frames and updates to the socket; on
/// a kick, sends the slow-consumer close frame instead of anything still queued. A socket
/// whose write (at most [`COALESCE_BYTES`] of the outbox, or one reply) does not complete
/// within the write timeout is closed as a slow consumer, which also stops
/// the reader.
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut queues: Queues,
    metrics: Arc<Metrics>,
) {
    // One wait for the kick for the connection's whole life: a fresh `changed()` in every
    // round registered and removed a waiter each time, for every event delivered.
    let on_kick = queues.kicked.changed();
    tokio::pin!(on_kick);
    let outbox = Arc::clone(&queues.outbox);
    loop {
        let frames = tokio::select! {
            _ = &mut on_kick => break kick(sink).await,
            () = outbox.ready() => Vec::new(),
            reply = queues.replies.recv() => match reply {
                None => break,
                Some(Outbound::Message(msg)) => vec![encoded(&msg, &metrics)],
                Some(Outbound::Frame(bytes)) => {
                    metrics.sent_bytes(bytes.len());
                    vec![WsMessage::Binary(bytes)]
                }
                Some(Outbound::Ping) => vec![WsMessage::Ping(bytes::Bytes::new())],
                Some(Outbound::Later(replies)) => tokio::select! {
                    _ = &mut on_kick => break kick(sink).await,
                    msgs = replies => msgs.iter().map(|m| encoded(m, &metrics)).collect(),
                },
                Some(Outbound::Close { code, reason }) => {
                    let close = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let sent = sink.send(WsMessage::Close(Some(close)));
                    let _ = tokio::time::timeout(queues.write_timeout, sent).await;
                    break;
                }
            },
        };
        let mut frames = frames;
        // What the outbox holds goes out in the same socket write: under fan-out load this
        // turns one syscall per event into one per burst, and costs nothing when idle.
        // Updates are encoded here, on the connection's own task.
        if frames.len() < COALESCE_FRAMES {
            for bytes in crate::connection::outbox::encode(outbox.take(COALESCE_BYTES)) {
                metrics.sent_bytes(bytes.len());
                frames.push(WsMessage::Binary(bytes));
            }
        }
        if frames.is_empty() {
            continue;
        }
        let written = async {
            for frame in frames {
                sink.feed(frame).await?;
            }
            sink.flush().await
        };
        let sent = tokio::select! {
            _ = &mut on_kick => return kick(sink).await,
            sent = tokio::time::timeout(queues.write_timeout, written) => sent,
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                // The socket took nothing for the whole timeout: a slow consumer. Closing
                // politely would wait on the same socket; it is dropped instead.
                outbox.kick(KickReason::WriteTimeout);
                return;
            }
        }
    }
}

async fn kick(mut sink: SplitSink<WebSocket, WsMessage>) {
    let close = sink.send(WsMessage::Close(Some(KICK)));
    let _ = tokio::time::timeout(KICK_TIMEOUT, close).await;
}

fn encoded(msg: &Message, metrics: &Metrics) -> WsMessage {
    let bytes = msg.encode();
    metrics.sent(msg, bytes.len());
    WsMessage::Binary(bytes.into())
}
