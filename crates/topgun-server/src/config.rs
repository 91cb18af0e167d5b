//! Server configuration: command line (with the TopGun server's flag and environment names),
//! an optional TOML file, and the auth environment. Precedence: flag or its environment
//! variable, then the file, then the default.
//!
//! Resolution is a pure function of its inputs ([`Config::resolve`]) so that every rule is
//! tested without touching the process environment.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;
use thiserror::Error;
use topgun_core::NodeId;
use topgun_core::protocol::Limits;

use crate::auth::{JwtVerifier, KeyError};
use crate::journal::Retention;
use crate::outbox::BacklogLimits;
use crate::policy::{PolicyError, PolicySet, PolicySpec};
use crate::storage::{Backend, Durability, StorageConfig};
use crate::wal::OnCorruption;

/// The node id when none is configured (the TopGun server's default).
pub const NODE_ID_DEFAULT: &str = "topgun-server-node";
pub const PORT_DEFAULT: u16 = 8080;

/// Command line of `topgun-server`.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "topgun-server", version, about = "TopGun data grid server")]
pub struct Cli {
    /// Port to listen on; 0 picks a free port (printed as `PORT=<n>`).
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Address to bind (default: 127.0.0.1 without auth, 0.0.0.0 with it).
    #[arg(long, env = "TOPGUN_BIND_ADDR")]
    pub host: Option<IpAddr>,
    /// This node's id; issues its HLC timestamps (no `:` allowed).
    #[arg(long, env = "TOPGUN_NODE_ID")]
    pub node_id: Option<String>,
    /// A TOML file with any of: `port`, `host`, `node_id`, `auth_deadline_ms`,
    /// `idle_timeout_ms`, `max_frame_bytes`, `max_depth`, `outbound_queue_len`,
    /// `maps_per_connection_max`, `topics_per_connection_max`, `shards`, `max_drift_ms`,
    /// `data_dir`, `durability`, `storage_backend`, `wal_segment_bytes`, `wal_max_bytes`,
    /// `wal_commit_delay_us`, `redb_cache_bytes`, `journal_capacity`, `journal_max_age_ms`,
    /// `tombstone_ttl_ms`, `gc_interval_ms`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store and the write-ahead log (default `./topgun-data`).
    #[arg(long, env = "TOPGUN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// When writes are acknowledged: `fsync` (durable, the default), `os` (survives a
    /// server crash, not a power loss) or `memory` (as soon as applied).
    #[arg(long, env = "TOPGUN_DURABILITY")]
    pub durability: Option<String>,
    /// `redb` (embedded, the default), `postgres` (with `DATABASE_URL`) or `memory`
    /// (nothing survives a restart).
    #[arg(long = "storage", env = "STORAGE_BACKEND")]
    pub storage_backend: Option<String>,
    /// PostgreSQL connection URL for `--storage postgres`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Start even if the write-ahead log is corrupt, discarding it from the damaged frame on.
    #[arg(long)]
    pub wal_discard_corrupt: bool,
    /// Without a command, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `topgun-server` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Writes a backup of a running server's records to a file.
    Backup {
        /// The file to write (replaced only once the whole backup has arrived and checks out).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The running server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// A JWT with the `ADMIN` role, when the server has auth on.
        #[arg(long, env = "TOPGUN_ADMIN_TOKEN")]
        token: Option<String>,
    },
    /// Restores a backup into the data directory (`--data-dir`) of a stopped server.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace the records already in the data directory.
        #[arg(long)]
        force: bool,
    },
}

/// The TOML file; unknown keys are refused so that typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    port: Option<u16>,
    host: Option<IpAddr>,
    node_id: Option<String>,
    auth_deadline_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_frame_bytes: Option<usize>,
    max_depth: Option<usize>,
    outbound_queue_len: Option<usize>,
    maps_per_connection_max: Option<usize>,
    topics_per_connection_max: Option<usize>,
    shards: Option<usize>,
    max_drift_ms: Option<u64>,
    data_dir: Option<PathBuf>,
    durability: Option<String>,
    storage_backend: Option<String>,
    wal_segment_bytes: Option<u64>,
    wal_max_bytes: Option<u64>,
    wal_commit_delay_us: Option<u64>,
    redb_cache_bytes: Option<usize>,
    journal_capacity: Option<usize>,
    journal_max_age_ms: Option<u64>,
    tombstone_ttl_ms: Option<u64>,
    gc_interval_ms: Option<u64>,
    ops_per_batch_max: Option<usize>,
    value_bytes_max: Option<usize>,
    queries_per_connection_max: Option<usize>,
    connections_per_user_max: Option<usize>,
    auth_failures_per_ip_per_minute: Option<u32>,
    ops_per_sec_per_connection: Option<u32>,
    ops_per_sec_per_user: Option<u32>,
    server_timestamps: Option<bool>,
    connection_backlog_bytes_max: Option<usize>,
    server_backlog_bytes_max: Option<usize>,
    write_timeout_ms: Option<u64>,
    #[serde(default)]
    policies: Vec<PolicySpec>,
}

/// The auth environment (`JWT_SECRET`, `TOPGUN_NO_AUTH`, `TOPGUN_JWT_ISSUER`,
/// `TOPGUN_JWT_AUDIENCE`).
#[derive(Debug, Clone, Default)]
pub struct AuthEnv {
    pub jwt_secret: Option<String>,
    pub no_auth: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl AuthEnv {
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            jwt_secret: var("JWT_SECRET"),
            no_auth: var("TOPGUN_NO_AUTH"),
            issuer: var("TOPGUN_JWT_ISSUER"),
            audience: var("TOPGUN_JWT_AUDIENCE"),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "no authentication configured: set JWT_SECRET (an HS256 secret or an RS256 public key \
         in PEM) or, for development only, TOPGUN_NO_AUTH=1"
    )]
    NoAuth,
    #[error("JWT_SECRET and TOPGUN_NO_AUTH are both set; choose one")]
    BothAuthModes,
    #[error("TOPGUN_NO_AUTH={0:?} is not one of 1, true, 0, false")]
    BadNoAuth(String),
    #[error("JWT_SECRET: {0}")]
    BadKey(#[from] KeyError),
    #[error("node id {0:?}: {1}")]
    BadNodeId(String, topgun_core::HlcError),
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{field} must be {rule}, got {value}")]
    OutOfRange {
        field: &'static str,
        rule: &'static str,
        value: String,
    },
}

/// How clients authenticate.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Development: every connection is accepted; `AUTH` is acknowledged without checks.
    Disabled,
    Jwt(JwtVerifier),
}

/// Abuse limits and the built-in interceptors' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guards {
    /// Ops in one `OP_BATCH`; more: `ERROR 413`, nothing applied.
    pub ops_per_batch_max: usize,
    /// Encoded bytes of one op's value; more: `OP_REJECTED 413`. 0: only the frame bound.
    pub value_bytes_max: usize,
    /// Live queries one connection may hold.
    pub queries_per_connection_max: usize,
    /// Authenticated connections one user may hold at once; 0: no limit.
    pub connections_per_user_max: usize,
    /// Failed `AUTH`s one IP address may make per minute before its connections are
    /// refused for a while; 0: no limit.
    pub auth_failures_per_ip_per_minute: u32,
    /// Ops per second one connection may send (bursts of twice that); 0: no limit.
    pub ops_per_sec_per_connection: u32,
    /// Ops per second one user may send over all its connections; 0: no limit.
    pub ops_per_sec_per_user: u32,
    /// Stamp writes with the server's clock instead of the client's (see
    /// `interceptor::ServerTimestamps` for the trade-off).
    pub server_timestamps: bool,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            ops_per_batch_max: 8_192,
            value_bytes_max: 0,
            queries_per_connection_max: crate::queries::QUERIES_PER_CONNECTION_MAX,
            connections_per_user_max: 0,
            auth_failures_per_ip_per_minute: 10,
            ops_per_sec_per_connection: 20_000,
            ops_per_sec_per_user: 0,
            server_timestamps: false,
        }
    }
}

/// Per-connection timing and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Time from connect to a successful `AUTH` (JWT mode).
    pub auth_deadline_ms: u64,
    /// Time without a `PING` after which a connection is closed.
    pub idle_timeout_ms: u64,
    /// Replies queued for one connection's socket writer.
    pub outbound_queue_len: usize,
    /// How long a connection's socket may take no data before it is closed as a slow
    /// consumer.
    pub write_timeout_ms: u64,
    /// Maps one connection may sync (and receive events of) at once.
    pub maps_per_connection_max: usize,
    /// Topics one connection may subscribe to at once.
    pub topics_per_connection_max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            auth_deadline_ms: 10_000,
            idle_timeout_ms: 60_000,
            outbound_queue_len: 256,
            write_timeout_ms: 30_000,
            maps_per_connection_max: 1024,
            topics_per_connection_max: 100,
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub node_id: NodeId,
    pub auth: AuthMode,
    pub decode: Limits,
    pub session: SessionLimits,
    /// Budgets for what connections have been sent but not read.
    pub backlog: BacklogLimits,
    /// Partition shard tasks; default: the number of cores.
    pub shards: usize,
    /// How far ahead of the server clock a client timestamp may be (PROTOCOL.md §2.1).
    pub max_drift_ms: u64,
    pub storage: StorageConfig,
    /// Tombstones older than this are pruned and clients told with `GC_PRUNE`; 0 keeps them.
    pub tombstone_ttl_ms: u64,
    /// How often tombstones are pruned.
    pub gc_interval_ms: u64,
    /// Access policies (`[[policies]]` in the file); none: no restrictions.
    pub policies: PolicySet,
    pub guards: Guards,
    /// Interceptors an embedding program adds; they run after the built-in ones.
    pub interceptors: Vec<std::sync::Arc<dyn crate::interceptor::Interceptor>>,
}

/// Thirty days: long enough for clients that went offline to come back and sync.
pub const TOMBSTONE_TTL_MS_DEFAULT: u64 = 30 * 24 * 3600 * 1000;
pub const GC_INTERVAL_MS_DEFAULT: u64 = 3600 * 1000;

/// The HLC drift tolerance of both TopGun implementations.
pub const MAX_DRIFT_MS_DEFAULT: u64 = 60_000;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// `TOPGUN_NO_AUTH`: `1`/`true` on, `0`/`false`/unset off, anything else an error.
fn no_auth_is_on(value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(ConfigError::BadNoAuth(value.unwrap_or_default().to_owned())),
    }
}

impl Config {
    /// Resolves flags, the file's text (if a file was given) and the auth environment.
    pub fn resolve(cli: &Cli, file: Option<&str>, env: &AuthEnv) -> Result<Self, ConfigError> {
        let file: FileConfig = match file {
            Some(text) => toml::from_str(text).map_err(|e| ConfigError::File {
                path: cli
                    .config
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                reason: e.to_string(),
            })?,
            None => FileConfig::default(),
        };
        let auth = Self::auth_mode(env)?;
        let guards = guards(&file)?;
        let loopback_default = matches!(auth, AuthMode::Disabled);
        let host = cli.host.or(file.host).unwrap_or(if loopback_default {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let port = cli.port.or(file.port).unwrap_or(PORT_DEFAULT);
        let node = cli
            .node_id
            .clone()
            .or(file.node_id)
            .unwrap_or_else(|| NODE_ID_DEFAULT.to_owned());
        let node_id = NodeId::new(&node).map_err(|e| ConfigError::BadNodeId(node.clone(), e))?;
        let mut decode = Limits::default();
        if let Some(max) = file.max_frame_bytes {
            decode.max_frame_bytes = positive("max_frame_bytes", max)?;
            decode.max_str_bytes = decode.max_frame_bytes;
        }
        if let Some(depth) = file.max_depth {
            decode.max_depth = positive("max_depth", depth)?;
        }
        let defaults = SessionLimits::default();
        let session = SessionLimits {
            auth_deadline_ms: file.auth_deadline_ms.unwrap_or(defaults.auth_deadline_ms),
            idle_timeout_ms: file.idle_timeout_ms.unwrap_or(defaults.idle_timeout_ms),
            outbound_queue_len: positive(
                "outbound_queue_len",
                file.outbound_queue_len
                    .unwrap_or(defaults.outbound_queue_len),
            )?,
            maps_per_connection_max: positive(
                "maps_per_connection_max",
                file.maps_per_connection_max
                    .unwrap_or(defaults.maps_per_connection_max),
            )?,
            topics_per_connection_max: positive(
                "topics_per_connection_max",
                file.topics_per_connection_max
                    .unwrap_or(defaults.topics_per_connection_max),
            )?,
            write_timeout_ms: in_range(
                "write_timeout_ms",
                file.write_timeout_ms.unwrap_or(defaults.write_timeout_ms),
                100..=600_000,
            )?,
        };
        let backlog = backlog_limits(
            (
                file.connection_backlog_bytes_max,
                file.server_backlog_bytes_max,
            ),
            decode.max_frame_bytes,
        )?;
        let shards = positive("shards", file.shards.unwrap_or_else(cores))?;
        let tombstone_ttl_ms = file.tombstone_ttl_ms.unwrap_or(TOMBSTONE_TTL_MS_DEFAULT);
        let gc_interval_ms = u64::try_from(positive(
            "gc_interval_ms",
            usize::try_from(file.gc_interval_ms.unwrap_or(GC_INTERVAL_MS_DEFAULT))
                .unwrap_or(usize::MAX),
        )?)
        .unwrap_or(u64::MAX);
        let file_storage = FileStorage {
            data_dir: file.data_dir,
            durability: file.durability,
            storage_backend: file.storage_backend,
            wal_segment_bytes: file.wal_segment_bytes,
            wal_max_bytes: file.wal_max_bytes,
            wal_commit_delay_us: file.wal_commit_delay_us,
            redb_cache_bytes: file.redb_cache_bytes,
            journal_capacity: file.journal_capacity,
            journal_max_age_ms: file.journal_max_age_ms,
        };
        Ok(Self {
            bind: SocketAddr::new(host, port),
            node_id,
            auth,
            decode,
            session,
            backlog,
            shards,
            max_drift_ms: file.max_drift_ms.unwrap_or(MAX_DRIFT_MS_DEFAULT),
            storage: storage_config(cli, file_storage)?,
            tombstone_ttl_ms,
            gc_interval_ms,
            guards,
            interceptors: Vec::new(),
            policies: PolicySet::compile(&file.policies)?,
        })
    }

    fn auth_mode(env: &AuthEnv) -> Result<AuthMode, ConfigError> {
        let no_auth = no_auth_is_on(env.no_auth.as_deref())?;
        match (&env.jwt_secret, no_auth) {
            (Some(_), true) => Err(ConfigError::BothAuthModes),
            (None, true) => Ok(AuthMode::Disabled),
            (None, false) => Err(ConfigError::NoAuth),
            (Some(secret), false) => Ok(AuthMode::Jwt(JwtVerifier::from_secret(
                secret,
                env.issuer.clone(),
                env.audience.clone(),
            )?)),
        }
    }
}

fn guards(file: &FileConfig) -> Result<Guards, ConfigError> {
    let d = Guards::default();
    Ok(Guards {
        ops_per_batch_max: positive(
            "ops_per_batch_max",
            file.ops_per_batch_max.unwrap_or(d.ops_per_batch_max),
        )?,
        value_bytes_max: file.value_bytes_max.unwrap_or(d.value_bytes_max),
        queries_per_connection_max: positive(
            "queries_per_connection_max",
            file.queries_per_connection_max
                .unwrap_or(d.queries_per_connection_max),
        )?,
        connections_per_user_max: file
            .connections_per_user_max
            .unwrap_or(d.connections_per_user_max),
        auth_failures_per_ip_per_minute: file
            .auth_failures_per_ip_per_minute
            .unwrap_or(d.auth_failures_per_ip_per_minute),
        ops_per_sec_per_connection: file
            .ops_per_sec_per_connection
            .unwrap_or(d.ops_per_sec_per_connection),
        ops_per_sec_per_user: file.ops_per_sec_per_user.unwrap_or(d.ops_per_sec_per_user),
        server_timestamps: file.server_timestamps.unwrap_or(d.server_timestamps),
    })
}

/// The longest commit delay accepted: 100 ms.
const WAL_COMMIT_DELAY_US_MAX: u64 = 100_000;
/// The smallest redb cache accepted: below about this, each insert reads its B-tree's
/// branch pages from the file again.
const REDB_CACHE_BYTES_MIN: usize = 1 << 20;

/// The storage keys of the file.
struct FileStorage {
    data_dir: Option<PathBuf>,
    durability: Option<String>,
    storage_backend: Option<String>,
    wal_segment_bytes: Option<u64>,
    wal_max_bytes: Option<u64>,
    wal_commit_delay_us: Option<u64>,
    redb_cache_bytes: Option<usize>,
    journal_capacity: Option<usize>,
    journal_max_age_ms: Option<u64>,
}

fn storage_config(cli: &Cli, file: FileStorage) -> Result<StorageConfig, ConfigError> {
    let defaults = StorageConfig::default();
    let durability = match cli.durability.clone().or(file.durability).as_deref() {
        None | Some("fsync") => Durability::Fsync,
        Some("os") => Durability::Os,
        Some("memory") => Durability::Memory,
        Some(other) => return Err(out_of_range("durability", "fsync, os or memory", other)),
    };
    let backend = match cli
        .storage_backend
        .clone()
        .or(file.storage_backend)
        .as_deref()
    {
        None | Some("redb") => Backend::Redb,
        Some("memory") => Backend::Memory,
        Some("postgres") => Backend::Postgres,
        Some(other) => {
            return Err(out_of_range(
                "storage backend",
                "redb, postgres or memory",
                other,
            ));
        }
    };
    if backend == Backend::Postgres && cli.database_url.is_none() {
        return Err(out_of_range(
            "DATABASE_URL",
            "set when the storage backend is postgres",
            "nothing",
        ));
    }
    let segment = file.wal_segment_bytes.unwrap_or(defaults.wal_segment_bytes);
    let max = file.wal_max_bytes.unwrap_or(defaults.wal_max_bytes);
    if segment < 4096 || max < segment {
        return Err(out_of_range(
            "wal_segment_bytes / wal_max_bytes",
            "at least 4096, with wal_max_bytes at least wal_segment_bytes",
            &format!("{segment} / {max}"),
        ));
    }
    let commit_delay = match file.wal_commit_delay_us {
        None => defaults.wal_commit_delay,
        Some(us) if us <= WAL_COMMIT_DELAY_US_MAX => std::time::Duration::from_micros(us),
        Some(us) => {
            return Err(out_of_range(
                "wal_commit_delay_us",
                "at most 100000 (0 turns it off)",
                &us.to_string(),
            ));
        }
    };
    let redb_cache_bytes = match file.redb_cache_bytes {
        None => defaults.redb_cache_bytes,
        Some(bytes) if bytes >= REDB_CACHE_BYTES_MIN => bytes,
        Some(bytes) => {
            return Err(out_of_range(
                "redb_cache_bytes",
                "at least 1048576 (1 MiB)",
                &bytes.to_string(),
            ));
        }
    };
    Ok(StorageConfig {
        backend,
        database_url: cli.database_url.clone(),
        data_dir: cli
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or(defaults.data_dir),
        durability,
        wal_segment_bytes: segment,
        wal_max_bytes: max,
        wal_commit_delay: commit_delay,
        redb_cache_bytes,
        on_corruption: if cli.wal_discard_corrupt {
            OnCorruption::Discard
        } else {
            OnCorruption::Refuse
        },
        journal: Retention {
            capacity: file.journal_capacity.unwrap_or(defaults.journal.capacity),
            max_age_ms: file
                .journal_max_age_ms
                .unwrap_or(defaults.journal.max_age_ms),
        },
    })
}

fn out_of_range(field: &'static str, rule: &'static str, value: &str) -> ConfigError {
    ConfigError::OutOfRange {
        field,
        rule,
        value: value.to_owned(),
    }
}

/// `value` if `range` holds it.
fn in_range<T>(
    field: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        return Ok(value);
    }
    Err(ConfigError::OutOfRange {
        field,
        rule: "within its range (README: config keys)",
        value: format!("{value} (allowed {}..={})", range.start(), range.end()),
    })
}

/// The unread-output budgets: a connection's at least one frame (else one large event would
/// close any subscriber), the server's at least one connection's.
fn backlog_limits(
    (connection, server): (Option<usize>, Option<usize>),
    max_frame_bytes: usize,
) -> Result<BacklogLimits, ConfigError> {
    let d = BacklogLimits::default();
    let connection_bytes = in_range(
        "connection_backlog_bytes_max",
        connection.unwrap_or(d.connection_bytes),
        max_frame_bytes.max(64 << 10)..=1 << 30,
    )?;
    let server_bytes = in_range(
        "server_backlog_bytes_max",
        server.unwrap_or(d.server_bytes),
        connection_bytes..=1 << 36,
    )?;
    Ok(BacklogLimits {
        connection_bytes,
        server_bytes,
    })
}

fn positive(field: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::OutOfRange {
            field,
            rule: "positive",
            value: value.to_string(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn no_auth() -> AuthEnv {
        AuthEnv {
            no_auth: Some("1".into()),
            ..AuthEnv::default()
        }
    }

    #[test]
    fn defaults_without_auth_bind_loopback() {
        let c = Config::resolve(&Cli::default(), None, &no_auth()).unwrap();
        assert_eq!(c.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.node_id.as_str(), NODE_ID_DEFAULT);
        assert!(matches!(c.auth, AuthMode::Disabled));
        assert_eq!(c.session, SessionLimits::default());
    }

    #[test]
    fn jwt_mode_binds_all_interfaces_by_default() {
        let env = AuthEnv {
            jwt_secret: Some("s3cret".into()),
            ..AuthEnv::default()
        };
        let c = Config::resolve(&Cli::default(), None, &env).unwrap();
        assert_eq!(c.bind, "0.0.0.0:8080".parse().unwrap());
        assert!(matches!(c.auth, AuthMode::Jwt(_)));
    }

    #[test]
    fn refuses_to_start_without_an_auth_decision() {
        let err = Config::resolve(&Cli::default(), None, &AuthEnv::default()).unwrap_err();
        assert!(matches!(err, ConfigError::NoAuth));
        assert!(err.to_string().contains("TOPGUN_NO_AUTH=1"));
        let both = AuthEnv {
            jwt_secret: Some("x".into()),
            no_auth: Some("true".into()),
            ..AuthEnv::default()
        };
        assert!(matches!(
            Config::resolve(&Cli::default(), None, &both),
            Err(ConfigError::BothAuthModes)
        ));
        let odd = AuthEnv {
            no_auth: Some("yes please".into()),
            ..AuthEnv::default()
        };
        assert!(matches!(
            Config::resolve(&Cli::default(), None, &odd),
            Err(ConfigError::BadNoAuth(_))
        ));
    }

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let file = "port = 9000\nhost = \"0.0.0.0\"\nnode_id = \"from-file\"\n\
                    idle_timeout_ms = 5000\nshards = 3\nmax_drift_ms = 10\n";
        let cli = Cli {
            port: Some(9100),
            ..Cli::default()
        };
        let c = Config::resolve(&cli, Some(file), &no_auth()).unwrap();
        assert_eq!(c.bind, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(c.node_id.as_str(), "from-file");
        assert_eq!(c.session.idle_timeout_ms, 5000);
        assert_eq!((c.shards, c.max_drift_ms), (3, 10));
        assert_eq!(c.storage.durability, Durability::Fsync);
        assert_eq!(c.storage.backend, Backend::Redb);
    }

    #[test]
    fn storage_settings_resolve_and_bad_ones_are_named() {
        let cli = Cli {
            durability: Some("os".into()),
            wal_discard_corrupt: true,
            ..Cli::default()
        };
        let c = Config::resolve(&cli, Some("storage_backend = \"memory\"\n"), &no_auth()).unwrap();
        assert_eq!(c.storage.durability, Durability::Os);
        assert_eq!(c.storage.backend, Backend::Memory);
        assert_eq!(c.storage.on_corruption, OnCorruption::Discard);
        let cli = Cli {
            durability: Some("sometimes".into()),
            ..Cli::default()
        };
        let err = Config::resolve(&cli, None, &no_auth()).unwrap_err();
        assert!(err.to_string().contains("durability"), "{err}");
        let err =
            Config::resolve(&Cli::default(), Some("wal_max_bytes = 10\n"), &no_auth()).unwrap_err();
        assert!(err.to_string().contains("wal_max_bytes"), "{err}");
    }

    #[test]
    fn the_commit_delay_has_a_default_can_be_turned_off_and_is_bounded() {
        let delay = |file: Option<&str>| {
            Config::resolve(&Cli::default(), file, &no_auth()).map(|c| c.storage.wal_commit_delay)
        };
        assert_eq!(delay(None).unwrap(), Duration::from_micros(500));
        assert_eq!(
            delay(Some("wal_commit_delay_us = 0\n")).unwrap(),
            Duration::ZERO
        );
        assert_eq!(
            delay(Some("wal_commit_delay_us = 2000\n")).unwrap(),
            Duration::from_millis(2)
        );
        let err = delay(Some("wal_commit_delay_us = 100001\n")).unwrap_err();
        assert!(err.to_string().contains("wal_commit_delay_us"), "{err}");
    }

    #[test]
    fn the_redb_cache_has_a_default_and_a_floor() {
        let cache = |file: Option<&str>| {
            Config::resolve(&Cli::default(), file, &no_auth()).map(|c| c.storage.redb_cache_bytes)
        };
        assert_eq!(cache(None).unwrap(), 64 << 20);
        assert_eq!(
            cache(Some("redb_cache_bytes = 1073741824\n")).unwrap(),
            1 << 30
        );
        let err = cache(Some("redb_cache_bytes = 4096\n")).unwrap_err();
        assert!(err.to_string().contains("redb_cache_bytes"), "{err}");
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let err = Config::resolve(&Cli::default(), Some("prot = 1\n"), &no_auth()).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
        let err =
            Config::resolve(&Cli::default(), Some("max_depth = 0\n"), &no_auth()).unwrap_err();
        assert!(err.to_string().contains("max_depth"), "{err}");
        let cli = Cli {
            node_id: Some("a:b".into()),
            ..Cli::default()
        };
        assert!(matches!(
            Config::resolve(&cli, None, &no_auth()),
            Err(ConfigError::BadNodeId(..))
        ));
    }
}
