//! Server configuration: command line (with the TopGun server's flag and environment names),
//! an optional TOML file, and the auth environment. Precedence: flag or its environment
//! variable, then the file, then the default.
//!
//! Resolution is a pure function of its inputs ([`Config::resolve`]) so that every rule is
//! tested without touching the process environment.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;
use thiserror::Error;
use topgun_core::NodeId;
use topgun_core::protocol::Limits;

use crate::connection::outbox::BacklogLimits;
use crate::journal::Retention;
use crate::security::auth::{JwtVerifier, KeyError};
use crate::security::policy::{PolicyError, PolicySet, PolicySpec};
use crate::storage::wal::OnCorruption;
use crate::storage::{Backend, Durability, StorageConfig};

/// The node id when none is configured (the TopGun server's default).
pub const NODE_ID_DEFAULT: &str = "topgun-server-node";
pub const PORT_DEFAULT: u16 = 8080;

/// Command line of `topgun-server`.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "topgun-server",
    version,
    about = "TopGun data grid server",
    after_help = after_help()
)]
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
    /// A TOML file with any of: `port`, `host`, `node_id`, `data_dir`, `durability`,
    /// `storage_backend`, `server_timestamps`, `[[policies]]`, and the numeric keys listed
    /// below with their valid ranges (security: `ops_per_batch_max`, `value_bytes_max`,
    /// `queries_per_connection_max`, `connections_per_user_max`,
    /// `auth_failures_per_ip_per_minute`, `ops_per_sec_per_connection`, `ops_per_sec_per_user`,
    /// `preauth_bytes_max`, `preauth_connections_max`, `preauth_connections_per_ip_max`).
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

/// The TOML file; unknown keys are refused so that typos do not pass silently. Every number
/// is read as a `u64` and checked against its key's [`KeyRange`], so that an out-of-range
/// value is named with its range rather than as a type error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    port: Option<u16>,
    host: Option<IpAddr>,
    node_id: Option<String>,
    auth_deadline_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_frame_bytes: Option<u64>,
    max_depth: Option<u64>,
    outbound_queue_len: Option<u64>,
    maps_per_connection_max: Option<u64>,
    topics_per_connection_max: Option<u64>,
    shards: Option<u64>,
    max_drift_ms: Option<u64>,
    data_dir: Option<PathBuf>,
    durability: Option<String>,
    storage_backend: Option<String>,
    wal_segment_bytes: Option<u64>,
    wal_max_bytes: Option<u64>,
    wal_commit_delay_us: Option<u64>,
    redb_cache_bytes: Option<u64>,
    journal_capacity: Option<u64>,
    journal_max_age_ms: Option<u64>,
    tombstone_ttl_ms: Option<u64>,
    gc_interval_ms: Option<u64>,
    ops_per_batch_max: Option<u64>,
    value_bytes_max: Option<u64>,
    queries_per_connection_max: Option<u64>,
    connections_per_user_max: Option<u64>,
    auth_failures_per_ip_per_minute: Option<u64>,
    ops_per_sec_per_connection: Option<u64>,
    ops_per_sec_per_user: Option<u64>,
    preauth_bytes_max: Option<u64>,
    preauth_connections_max: Option<u64>,
    preauth_connections_per_ip_max: Option<u64>,
    server_timestamps: Option<bool>,
    connection_backlog_bytes_max: Option<u64>,
    server_backlog_bytes_max: Option<u64>,
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
        rule: String,
        value: String,
    },
}

/// What a numeric key counts; values are shown in the largest unit that divides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Millis,
    Micros,
}

/// The valid values of one numeric key: `min..=max`, and 0 as well where `zero` says what
/// 0 means. Every numeric key of the file has one, in [`NUMERIC_KEYS`]; `--help` and the
/// README's table show them, and a test keeps the README true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub unit: Unit,
    /// What 0 does, where 0 is allowed below `min` ("off", "no limit").
    pub zero: Option<&'static str>,
}

impl KeyRange {
    const fn new(key: &'static str, min: u64, max: u64, unit: Unit) -> Self {
        Self {
            key,
            min,
            max,
            unit,
            zero: None,
        }
    }

    const fn or_zero(mut self, meaning: &'static str) -> Self {
        self.zero = Some(meaning);
        self
    }

    /// `value` if it is in range, else an error naming the key and the range.
    pub fn check(&self, value: u64) -> Result<u64, ConfigError> {
        let zero_ok = value == 0 && self.zero.is_some();
        if zero_ok || (self.min..=self.max).contains(&value) {
            return Ok(value);
        }
        Err(ConfigError::OutOfRange {
            field: self.key,
            rule: self.describe(),
            value: value.to_string(),
        })
    }

    /// `"1 KiB..=64 MiB"`, or `"0 (off), or 1..=100000"`.
    pub fn describe(&self) -> String {
        let range = format!(
            "{}..={}",
            human(self.min, self.unit),
            human(self.max, self.unit)
        );
        match self.zero {
            Some(meaning) => format!("0 ({meaning}), or {range}"),
            None => range,
        }
    }
}

/// `value` in the largest unit that divides it exactly: `65536` bytes is `64 KiB`.
fn human(value: u64, unit: Unit) -> String {
    const KIB: u64 = 1024;
    let steps: &[(u64, &str)] = match unit {
        Unit::Count => &[],
        Unit::Bytes => &[
            (KIB.pow(4), "TiB"),
            (KIB.pow(3), "GiB"),
            (KIB.pow(2), "MiB"),
            (KIB, "KiB"),
        ],
        Unit::Millis => &[
            (86_400_000, "days"),
            (3_600_000, "h"),
            (60_000, "min"),
            (1_000, "s"),
        ],
        Unit::Micros => &[(1_000_000, "s"), (1_000, "ms")],
    };
    let base = match unit {
        Unit::Count => "",
        Unit::Bytes => " B",
        Unit::Millis => " ms",
        Unit::Micros => " µs",
    };
    match steps
        .iter()
        .find(|(size, _)| value >= *size && value.is_multiple_of(*size))
    {
        Some((size, "days")) if value == *size => "1 day".to_owned(),
        Some((size, name)) => format!("{} {name}", value / size),
        None => format!("{value}{base}"),
    }
}

/// The deepest nesting a client frame may be configured to carry (`max_depth`). What the
/// server acknowledges it must decode again from its log and store, whose bound
/// (`store.rs`, `stored_limits`) must be at least this plus the entry's envelope (the record
/// and leaf around a value); the store's bound is the MsgPack reader's ceiling, 512
/// (`topgun_core::protocol::msgpack::MAX_DEPTH_CEILING`). A deeper client value would be
/// acknowledged and then fail recovery.
pub const MAX_DEPTH_MAX: usize = 256;
const _: () = assert!(MAX_DEPTH_MAX <= topgun_core::protocol::msgpack::MAX_DEPTH_CEILING);

/// The numeric keys' ranges, one constant each (see [`NUMERIC_KEYS`]).
pub mod keys {
    use super::{KeyRange, MAX_DEPTH_MAX, Unit};

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    const SEC: u64 = 1000;
    const DAY: u64 = 86_400 * SEC;

    /// The session clock ticks once a second; shorter deadlines are met on the next tick.
    pub const AUTH_DEADLINE_MS: KeyRange =
        KeyRange::new("auth_deadline_ms", 100, 600 * SEC, Unit::Millis);
    pub const IDLE_TIMEOUT_MS: KeyRange = KeyRange::new("idle_timeout_ms", SEC, DAY, Unit::Millis);
    /// The transport takes frames up to four times this (then answers `ERROR 413`), so at
    /// most 256 MiB is ever buffered for one frame.
    pub const MAX_FRAME_BYTES: KeyRange =
        KeyRange::new("max_frame_bytes", KIB, 64 * MIB, Unit::Bytes);
    pub const MAX_DEPTH: KeyRange =
        KeyRange::new("max_depth", 1, MAX_DEPTH_MAX as u64, Unit::Count);
    pub const OUTBOUND_QUEUE_LEN: KeyRange =
        KeyRange::new("outbound_queue_len", 1, 65_536, Unit::Count);
    /// Also at least `max_frame_bytes` (checked with both): else one large event would close
    /// any subscriber.
    pub const CONNECTION_BACKLOG_BYTES_MAX: KeyRange =
        KeyRange::new("connection_backlog_bytes_max", 64 * KIB, GIB, Unit::Bytes);
    /// Also at least `connection_backlog_bytes_max` (checked with both).
    pub const SERVER_BACKLOG_BYTES_MAX: KeyRange =
        KeyRange::new("server_backlog_bytes_max", 64 * KIB, 64 * GIB, Unit::Bytes);
    pub const WRITE_TIMEOUT_MS: KeyRange =
        KeyRange::new("write_timeout_ms", 100, 600 * SEC, Unit::Millis);
    pub const MAPS_PER_CONNECTION_MAX: KeyRange =
        KeyRange::new("maps_per_connection_max", 1, 100_000, Unit::Count);
    pub const TOPICS_PER_CONNECTION_MAX: KeyRange =
        KeyRange::new("topics_per_connection_max", 1, 100_000, Unit::Count);
    /// More shards than partitions would leave shards without partitions.
    pub const SHARDS: KeyRange = KeyRange::new(
        "shards",
        1,
        topgun_core::hash::PARTITION_COUNT as u64,
        Unit::Count,
    );
    pub const MAX_DRIFT_MS: KeyRange = KeyRange::new("max_drift_ms", SEC, DAY, Unit::Millis);
    pub const WAL_SEGMENT_BYTES: KeyRange =
        KeyRange::new("wal_segment_bytes", 4 * KIB, GIB, Unit::Bytes);
    /// Also at least twice `wal_segment_bytes` (checked with both).
    pub const WAL_MAX_BYTES: KeyRange =
        KeyRange::new("wal_max_bytes", 8 * KIB, 1024 * GIB, Unit::Bytes);
    pub const WAL_COMMIT_DELAY_US: KeyRange =
        KeyRange::new("wal_commit_delay_us", 1, 100_000, Unit::Micros).or_zero("off");
    /// Below about 1 MiB each insert reads its B-tree's branch pages from the file again.
    pub const REDB_CACHE_BYTES: KeyRange =
        KeyRange::new("redb_cache_bytes", MIB, 1024 * GIB, Unit::Bytes);
    pub const JOURNAL_CAPACITY: KeyRange =
        KeyRange::new("journal_capacity", 1, 10_000_000, Unit::Count).or_zero("off");
    pub const JOURNAL_MAX_AGE_MS: KeyRange =
        KeyRange::new("journal_max_age_ms", SEC, 3650 * DAY, Unit::Millis);
    pub const TOMBSTONE_TTL_MS: KeyRange =
        KeyRange::new("tombstone_ttl_ms", 100, 3650 * DAY, Unit::Millis).or_zero("kept for ever");
    pub const GC_INTERVAL_MS: KeyRange = KeyRange::new("gc_interval_ms", 10, DAY, Unit::Millis);
    /// The decoder refuses longer arrays (its `max_collection_len`) before this is checked.
    pub const OPS_PER_BATCH_MAX: KeyRange =
        KeyRange::new("ops_per_batch_max", 1, 100_000, Unit::Count);
    /// Also at most `max_frame_bytes` (checked with both).
    pub const VALUE_BYTES_MAX: KeyRange =
        KeyRange::new("value_bytes_max", 1, 64 * MIB, Unit::Bytes).or_zero("the frame bound only");
    pub const QUERIES_PER_CONNECTION_MAX: KeyRange =
        KeyRange::new("queries_per_connection_max", 1, 65_536, Unit::Count);
    pub const CONNECTIONS_PER_USER_MAX: KeyRange =
        KeyRange::new("connections_per_user_max", 1, 1_000_000, Unit::Count).or_zero("no limit");
    pub const AUTH_FAILURES_PER_IP_PER_MINUTE: KeyRange =
        KeyRange::new("auth_failures_per_ip_per_minute", 1, 100_000, Unit::Count)
            .or_zero("no limit");
    pub const OPS_PER_SEC_PER_CONNECTION: KeyRange =
        KeyRange::new("ops_per_sec_per_connection", 1, 10_000_000, Unit::Count).or_zero("no limit");
    pub const OPS_PER_SEC_PER_USER: KeyRange =
        KeyRange::new("ops_per_sec_per_user", 1, 10_000_000, Unit::Count).or_zero("no limit");
    /// An `AUTH` frame with a large token is a few KiB; the upgrade request's headers count too.
    pub const PREAUTH_BYTES_MAX: KeyRange =
        KeyRange::new("preauth_bytes_max", 4 * KIB, MIB, Unit::Bytes);
    pub const PREAUTH_CONNECTIONS_MAX: KeyRange =
        KeyRange::new("preauth_connections_max", 1, 1_000_000, Unit::Count);
    pub const PREAUTH_CONNECTIONS_PER_IP_MAX: KeyRange =
        KeyRange::new("preauth_connections_per_ip_max", 1, 1_000_000, Unit::Count)
            .or_zero("no limit");
}

/// Every numeric key of the file, in the README's order.
pub const NUMERIC_KEYS: &[KeyRange] = &[
    keys::AUTH_DEADLINE_MS,
    keys::IDLE_TIMEOUT_MS,
    keys::MAX_FRAME_BYTES,
    keys::MAX_DEPTH,
    keys::OUTBOUND_QUEUE_LEN,
    keys::CONNECTION_BACKLOG_BYTES_MAX,
    keys::SERVER_BACKLOG_BYTES_MAX,
    keys::WRITE_TIMEOUT_MS,
    keys::MAPS_PER_CONNECTION_MAX,
    keys::TOPICS_PER_CONNECTION_MAX,
    keys::SHARDS,
    keys::MAX_DRIFT_MS,
    keys::WAL_SEGMENT_BYTES,
    keys::WAL_MAX_BYTES,
    keys::WAL_COMMIT_DELAY_US,
    keys::REDB_CACHE_BYTES,
    keys::JOURNAL_CAPACITY,
    keys::JOURNAL_MAX_AGE_MS,
    keys::TOMBSTONE_TTL_MS,
    keys::GC_INTERVAL_MS,
    keys::OPS_PER_BATCH_MAX,
    keys::VALUE_BYTES_MAX,
    keys::QUERIES_PER_CONNECTION_MAX,
    keys::CONNECTIONS_PER_USER_MAX,
    keys::AUTH_FAILURES_PER_IP_PER_MINUTE,
    keys::OPS_PER_SEC_PER_CONNECTION,
    keys::OPS_PER_SEC_PER_USER,
    keys::PREAUTH_BYTES_MAX,
    keys::PREAUTH_CONNECTIONS_MAX,
    keys::PREAUTH_CONNECTIONS_PER_IP_MAX,
];

/// `--help`'s closing section: what starting needs, and every numeric key's range.
fn after_help() -> String {
    let mut out = String::from(
        "Authentication (exactly one is required):\n  \
         JWT_SECRET=<key>     an HS256 secret of at least 32 bytes, or an RS256 public key in PEM\n  \
         TOPGUN_NO_AUTH=1     development only: every connection is accepted\n  \
         TOPGUN_JWT_ISSUER, TOPGUN_JWT_AUDIENCE   required claims, when set\n\n\
         Numeric keys of the --config file and their valid ranges:\n",
    );
    for range in NUMERIC_KEYS {
        let _ = writeln!(out, "  {:<34}{}", range.key, range.describe());
    }
    out.push_str("\nSee README.md (Running the server) and docs/security.md for what each does.");
    out
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
            queries_per_connection_max: crate::query::QUERIES_PER_CONNECTION_MAX,
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

/// Bounds on connections that have not authenticated yet. They apply with JWT auth only:
/// without auth every connection is authenticated from the start. The bytes the server holds
/// for such connections are at most `connections_max` × 2 × `bytes_max` (`listener.rs` says
/// why twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreAuthLimits {
    /// Bytes a connection may send before its `AUTH` succeeds, counted from its latest HTTP
    /// request (the upgrade, for a WebSocket): the request's headers, the `AUTH` frame and
    /// anything sent with it. More: close 1009.
    pub bytes_max: usize,
    /// Connections not yet authenticated, in total; more: HTTP 503 at once.
    pub connections_max: usize,
    /// Connections not yet authenticated from one IP address; 0: no limit.
    pub connections_per_ip_max: usize,
}

impl Default for PreAuthLimits {
    fn default() -> Self {
        Self {
            bytes_max: 64 * 1024,
            connections_max: 1_000,
            connections_per_ip_max: 64,
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
    pub preauth: PreAuthLimits,
    /// Interceptors an embedding program adds; they run after the built-in ones.
    pub interceptors: Vec<std::sync::Arc<dyn crate::security::interceptor::Interceptor>>,
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
            .or(file.node_id.clone())
            .unwrap_or_else(|| NODE_ID_DEFAULT.to_owned());
        let node_id = NodeId::new(&node).map_err(|e| ConfigError::BadNodeId(node.clone(), e))?;
        let decode = decode_limits(&file)?;
        let defaults = SessionLimits::default();
        let session = SessionLimits {
            auth_deadline_ms: number(
                keys::AUTH_DEADLINE_MS,
                file.auth_deadline_ms,
                defaults.auth_deadline_ms,
            )?,
            idle_timeout_ms: number(
                keys::IDLE_TIMEOUT_MS,
                file.idle_timeout_ms,
                defaults.idle_timeout_ms,
            )?,
            outbound_queue_len: size(
                keys::OUTBOUND_QUEUE_LEN,
                file.outbound_queue_len,
                defaults.outbound_queue_len,
            )?,
            maps_per_connection_max: size(
                keys::MAPS_PER_CONNECTION_MAX,
                file.maps_per_connection_max,
                defaults.maps_per_connection_max,
            )?,
            topics_per_connection_max: size(
                keys::TOPICS_PER_CONNECTION_MAX,
                file.topics_per_connection_max,
                defaults.topics_per_connection_max,
            )?,
            write_timeout_ms: number(
                keys::WRITE_TIMEOUT_MS,
                file.write_timeout_ms,
                defaults.write_timeout_ms,
            )?,
        };
        let shards_default = cores().min(topgun_core::hash::PARTITION_COUNT as usize);
        let backlog = backlog_limits(&file, decode.max_frame_bytes)?;
        Ok(Self {
            bind: SocketAddr::new(host, port),
            node_id,
            auth,
            session,
            backlog,
            shards: size(keys::SHARDS, file.shards, shards_default)?,
            max_drift_ms: number(keys::MAX_DRIFT_MS, file.max_drift_ms, MAX_DRIFT_MS_DEFAULT)?,
            storage: storage_config(cli, &file)?,
            tombstone_ttl_ms: number(
                keys::TOMBSTONE_TTL_MS,
                file.tombstone_ttl_ms,
                TOMBSTONE_TTL_MS_DEFAULT,
            )?,
            gc_interval_ms: number(
                keys::GC_INTERVAL_MS,
                file.gc_interval_ms,
                GC_INTERVAL_MS_DEFAULT,
            )?,
            guards: guards(&file, decode.max_frame_bytes)?,
            preauth: preauth(&file)?,
            decode,
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

/// The file's value of a numeric key, or `default`, checked against the key's range.
fn number(range: KeyRange, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    range.check(value.unwrap_or(default))
}

/// [`number`] for a count or size held as `usize` (every range fits one).
fn size(range: KeyRange, value: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    let default = u64::try_from(default).unwrap_or(u64::MAX);
    let checked = number(range, value, default)?;
    Ok(usize::try_from(checked).expect("every range fits a usize"))
}

/// [`number`] for a `u32` setting.
fn rate(range: KeyRange, value: Option<u64>, default: u32) -> Result<u32, ConfigError> {
    let checked = number(range, value, u64::from(default))?;
    Ok(u32::try_from(checked).expect("every rate range fits a u32"))
}

fn decode_limits(file: &FileConfig) -> Result<Limits, ConfigError> {
    let mut decode = Limits::default();
    decode.max_frame_bytes = size(
        keys::MAX_FRAME_BYTES,
        file.max_frame_bytes,
        decode.max_frame_bytes,
    )?;
    decode.max_str_bytes = decode.max_frame_bytes;
    decode.max_depth = size(
        keys::MAX_DEPTH,
        file.max_depth,
        decode.max_depth.min(MAX_DEPTH_MAX),
    )?;
    Ok(decode)
}

fn guards(file: &FileConfig, max_frame_bytes: usize) -> Result<Guards, ConfigError> {
    let d = Guards::default();
    let value_bytes_max = size(
        keys::VALUE_BYTES_MAX,
        file.value_bytes_max,
        d.value_bytes_max,
    )?;
    if value_bytes_max > max_frame_bytes {
        return Err(ConfigError::OutOfRange {
            field: "value_bytes_max",
            rule: format!("0, or at most max_frame_bytes ({max_frame_bytes})"),
            value: value_bytes_max.to_string(),
        });
    }
    Ok(Guards {
        ops_per_batch_max: size(
            keys::OPS_PER_BATCH_MAX,
            file.ops_per_batch_max,
            d.ops_per_batch_max,
        )?,
        value_bytes_max,
        queries_per_connection_max: size(
            keys::QUERIES_PER_CONNECTION_MAX,
            file.queries_per_connection_max,
            d.queries_per_connection_max,
        )?,
        connections_per_user_max: size(
            keys::CONNECTIONS_PER_USER_MAX,
            file.connections_per_user_max,
            d.connections_per_user_max,
        )?,
        auth_failures_per_ip_per_minute: rate(
            keys::AUTH_FAILURES_PER_IP_PER_MINUTE,
            file.auth_failures_per_ip_per_minute,
            d.auth_failures_per_ip_per_minute,
        )?,
        ops_per_sec_per_connection: rate(
            keys::OPS_PER_SEC_PER_CONNECTION,
            file.ops_per_sec_per_connection,
            d.ops_per_sec_per_connection,
        )?,
        ops_per_sec_per_user: rate(
            keys::OPS_PER_SEC_PER_USER,
            file.ops_per_sec_per_user,
            d.ops_per_sec_per_user,
        )?,
        server_timestamps: file.server_timestamps.unwrap_or(d.server_timestamps),
    })
}

fn preauth(file: &FileConfig) -> Result<PreAuthLimits, ConfigError> {
    let d = PreAuthLimits::default();
    Ok(PreAuthLimits {
        bytes_max: size(keys::PREAUTH_BYTES_MAX, file.preauth_bytes_max, d.bytes_max)?,
        connections_max: size(
            keys::PREAUTH_CONNECTIONS_MAX,
            file.preauth_connections_max,
            d.connections_max,
        )?,
        connections_per_ip_max: size(
            keys::PREAUTH_CONNECTIONS_PER_IP_MAX,
            file.preauth_connections_per_ip_max,
            d.connections_per_ip_max,
        )?,
    })
}

fn storage_config(cli: &Cli, file: &FileConfig) -> Result<StorageConfig, ConfigError> {
    let defaults = StorageConfig::default();
    let durability = match cli
        .durability
        .clone()
        .or(file.durability.clone())
        .as_deref()
    {
        None | Some("fsync") => Durability::Fsync,
        Some("os") => Durability::Os,
        Some("memory") => Durability::Memory,
        Some(other) => return Err(out_of_range("durability", "fsync, os or memory", other)),
    };
    let backend = match cli
        .storage_backend
        .clone()
        .or(file.storage_backend.clone())
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
    let (segment, max) = wal_bounds(file, &defaults)?;
    let commit_delay_us = number(
        keys::WAL_COMMIT_DELAY_US,
        file.wal_commit_delay_us,
        u64::try_from(defaults.wal_commit_delay.as_micros()).unwrap_or(u64::MAX),
    )?;
    let journal = Retention {
        capacity: size(
            keys::JOURNAL_CAPACITY,
            file.journal_capacity,
            defaults.journal.capacity,
        )?,
        max_age_ms: number(
            keys::JOURNAL_MAX_AGE_MS,
            file.journal_max_age_ms,
            defaults.journal.max_age_ms,
        )?,
    };
    Ok(StorageConfig {
        backend,
        database_url: cli.database_url.clone(),
        data_dir: cli
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or(defaults.data_dir),
        durability,
        wal_segment_bytes: segment,
        wal_max_bytes: max,
        wal_commit_delay: std::time::Duration::from_micros(commit_delay_us),
        redb_cache_bytes: size(
            keys::REDB_CACHE_BYTES,
            file.redb_cache_bytes,
            defaults.redb_cache_bytes,
        )?,
        on_corruption: if cli.wal_discard_corrupt {
            OnCorruption::Discard
        } else {
            OnCorruption::Refuse
        },
        journal,
    })
}

/// The unread-output budgets: a connection's at least one frame (else one large event would
/// close any subscriber), the server's at least one connection's. Unset, each is its default
/// or, if larger, what the other setting needs.
fn backlog_limits(file: &FileConfig, max_frame_bytes: usize) -> Result<BacklogLimits, ConfigError> {
    let d = BacklogLimits::default();
    let connection_bytes = size(
        keys::CONNECTION_BACKLOG_BYTES_MAX,
        file.connection_backlog_bytes_max,
        d.connection_bytes.max(max_frame_bytes),
    )?;
    if connection_bytes < max_frame_bytes {
        return Err(ConfigError::OutOfRange {
            field: "connection_backlog_bytes_max",
            rule: format!("at least max_frame_bytes ({max_frame_bytes})"),
            value: connection_bytes.to_string(),
        });
    }
    let server_bytes = size(
        keys::SERVER_BACKLOG_BYTES_MAX,
        file.server_backlog_bytes_max,
        d.server_bytes.max(connection_bytes),
    )?;
    if server_bytes < connection_bytes {
        return Err(ConfigError::OutOfRange {
            field: "server_backlog_bytes_max",
            rule: format!("at least connection_backlog_bytes_max ({connection_bytes})"),
            value: server_bytes.to_string(),
        });
    }
    Ok(BacklogLimits {
        connection_bytes,
        server_bytes,
    })
}

/// `wal_segment_bytes` and `wal_max_bytes`. The segment being written cannot be released
/// until the next one starts, and it starts only with the next write, which a full log
/// refuses: so the bound leaves room for at least one closed segment beside the open one.
fn wal_bounds(file: &FileConfig, defaults: &StorageConfig) -> Result<(u64, u64), ConfigError> {
    let segment = number(
        keys::WAL_SEGMENT_BYTES,
        file.wal_segment_bytes,
        defaults.wal_segment_bytes,
    )?;
    let max = number(
        keys::WAL_MAX_BYTES,
        file.wal_max_bytes,
        defaults.wal_max_bytes,
    )?;
    if max < segment.saturating_mul(2) {
        return Err(ConfigError::OutOfRange {
            field: "wal_max_bytes",
            rule: format!("at least twice wal_segment_bytes ({segment})"),
            value: max.to_string(),
        });
    }
    Ok((segment, max))
}

fn out_of_range(field: &'static str, rule: &str, value: &str) -> ConfigError {
    ConfigError::OutOfRange {
        field,
        rule: rule.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 32 bytes or more, as HS256 requires.
    const SECRET: &str = "config-tests-secret-0123456789abcdef";

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
            jwt_secret: Some(SECRET.into()),
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
            jwt_secret: Some(SECRET.into()),
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
                    idle_timeout_ms = 5000\nshards = 3\nmax_drift_ms = 1000\n";
        let cli = Cli {
            port: Some(9100),
            ..Cli::default()
        };
        let c = Config::resolve(&cli, Some(file), &no_auth()).unwrap();
        assert_eq!(c.bind, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(c.node_id.as_str(), "from-file");
        assert_eq!(c.session.idle_timeout_ms, 5000);
        assert_eq!((c.shards, c.max_drift_ms), (3, 1000));
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

    fn file_error(file: &str) -> String {
        Config::resolve(&Cli::default(), Some(file), &no_auth())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_short_hs256_secret_is_refused_and_a_pem_key_is_not() {
        let short = AuthEnv {
            jwt_secret: Some("s3cret".into()),
            ..AuthEnv::default()
        };
        let err = Config::resolve(&Cli::default(), None, &short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JWT_SECRET: an HS256 secret must be at least 32 bytes (RFC 7518 §3.2), got 6; use \
             a longer random secret, or an RS256 public key in PEM"
        );
        let just_enough = AuthEnv {
            jwt_secret: Some("x".repeat(32)),
            ..AuthEnv::default()
        };
        assert!(Config::resolve(&Cli::default(), None, &just_enough).is_ok());
        let pem = AuthEnv {
            jwt_secret: Some(include_str!("../tests/fixtures/rs256-public.pem").into()),
            ..AuthEnv::default()
        };
        let c = Config::resolve(&Cli::default(), None, &pem).unwrap();
        assert!(
            matches!(&c.auth, AuthMode::Jwt(v) if v.algorithm() == jsonwebtoken::Algorithm::RS256)
        );
    }

    /// Each numeric key: the values just outside its range are refused with a message naming
    /// the key and the range, and the ends of the range are accepted.
    #[test]
    fn every_numeric_key_refuses_values_outside_its_range() {
        for range in NUMERIC_KEYS {
            let rule = range.describe();
            let mut refused = vec![range.max + 1];
            if range.min > 0 && range.zero.is_none() {
                refused.push(0);
            }
            if range.min > 1 {
                refused.push(range.min - 1);
            }
            for value in refused {
                let err = file_error(&format!("{} = {value}\n", range.key));
                assert_eq!(
                    err,
                    format!("{} must be {rule}, got {value}", range.key),
                    "{}",
                    range.key
                );
            }
            let mut accepted = vec![range.min, range.max];
            if range.zero.is_some() {
                accepted.push(0);
            }
            for value in accepted {
                // The keys checked against another key get a partner that allows the value.
                let partner = match range.key {
                    "wal_segment_bytes" => format!("wal_max_bytes = {}\n", 2 * value),
                    "wal_max_bytes" => "wal_segment_bytes = 4096\n".to_owned(),
                    "value_bytes_max" => format!("max_frame_bytes = {}\n", value.max(1024)),
                    "connection_backlog_bytes_max" => {
                        format!("max_frame_bytes = {}\n", value.clamp(1024, 64 << 20))
                    }
                    "server_backlog_bytes_max" => format!(
                        "connection_backlog_bytes_max = {0}\nmax_frame_bytes = {0}\n",
                        value.min(64 << 10)
                    ),
                    _ => String::new(),
                };
                let file = format!("{} = {value}\n{partner}", range.key);
                let resolved = Config::resolve(&Cli::default(), Some(&file), &no_auth());
                assert!(resolved.is_ok(), "{file}: {:?}", resolved.err());
            }
        }
    }

    #[test]
    fn the_backlog_budgets_hold_a_frame_and_a_connection() {
        assert_eq!(
            file_error("max_frame_bytes = 4194304\nconnection_backlog_bytes_max = 2097152\n"),
            "connection_backlog_bytes_max must be at least max_frame_bytes (4194304), got 2097152"
        );
        assert_eq!(
            file_error(
                "connection_backlog_bytes_max = 4194304\nserver_backlog_bytes_max = 2097152\n"
            ),
            "server_backlog_bytes_max must be at least connection_backlog_bytes_max (4194304), \
             got 2097152"
        );
        // Unset, a budget grows to what the other settings need.
        let file = "max_frame_bytes = 67108864\n";
        let c = Config::resolve(&Cli::default(), Some(file), &no_auth()).unwrap();
        assert_eq!(c.backlog.connection_bytes, 64 << 20);
        assert_eq!(c.backlog.server_bytes, 512 << 20);
        let c = Config::resolve(&Cli::default(), None, &no_auth()).unwrap();
        assert_eq!(c.backlog, BacklogLimits::default());
    }

    #[test]
    fn range_refusals_read_plainly() {
        assert_eq!(
            file_error("idle_timeout_ms = 0\n"),
            "idle_timeout_ms must be 1 s..=1 day, got 0"
        );
        assert_eq!(
            file_error("auth_deadline_ms = 0\n"),
            "auth_deadline_ms must be 100 ms..=10 min, got 0"
        );
        assert_eq!(
            file_error("max_depth = 257\n"),
            "max_depth must be 1..=256, got 257"
        );
        assert_eq!(
            file_error("max_frame_bytes = 9223372036854775807\n"),
            "max_frame_bytes must be 1 KiB..=64 MiB, got 9223372036854775807"
        );
        assert_eq!(
            file_error("journal_capacity = 10000001\n"),
            "journal_capacity must be 0 (off), or 1..=10000000, got 10000001"
        );
    }

    #[test]
    fn values_beyond_what_toml_holds_are_refused_naming_the_key() {
        // 2^63 does not fit TOML's integers; -1 fits no key.
        for file in [
            "max_frame_bytes = 9223372036854775808\n",
            "max_depth = -1\n",
        ] {
            let err = file_error(file);
            let key = file.split(' ').next().unwrap();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn keys_checked_against_each_other_name_both() {
        let err = file_error("max_frame_bytes = 4096\nvalue_bytes_max = 4097\n");
        assert_eq!(
            err,
            "value_bytes_max must be 0, or at most max_frame_bytes (4096), got 4097"
        );
        let err = file_error("wal_segment_bytes = 1048576\nwal_max_bytes = 2097151\n");
        assert_eq!(
            err,
            "wal_max_bytes must be at least twice wal_segment_bytes (1048576), got 2097151"
        );
        assert!(
            Config::resolve(
                &Cli::default(),
                Some("wal_segment_bytes = 1048576\nwal_max_bytes = 2097152\n"),
                &no_auth()
            )
            .is_ok()
        );
    }

    /// The defaults, as resolved, lie inside their ranges (the table names them all).
    #[test]
    fn the_defaults_are_valid_and_the_table_knows_the_decoder_s_bounds() {
        let c = Config::resolve(&Cli::default(), None, &no_auth()).unwrap();
        assert_eq!(c.decode.max_depth, MAX_DEPTH_MAX);
        assert_eq!(c.preauth, PreAuthLimits::default());
        assert_eq!(
            keys::OPS_PER_BATCH_MAX.max,
            Limits::default().max_collection_len as u64,
            "more ops than the decoder takes could never be honoured"
        );
        assert_eq!(
            NUMERIC_KEYS.len(),
            NUMERIC_KEYS
                .iter()
                .map(|r| r.key)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        );
    }

    /// README.md's table of keys shows each numeric key's range as the code checks it.
    #[test]
    fn the_readme_shows_every_range() {
        let readme = include_str!("../../../README.md");
        for range in NUMERIC_KEYS {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", range.key)))
                .unwrap_or_else(|| panic!("README.md has no row for {}", range.key));
            assert!(
                row.contains(&format!("| {} |", range.describe())),
                "README.md's row for {} should show {:?}: {row}",
                range.key,
                range.describe()
            );
        }
    }

    #[test]
    fn help_names_the_auth_environment_and_every_range() {
        let help = after_help();
        assert!(help.contains("JWT_SECRET") && help.contains("TOPGUN_NO_AUTH=1"));
        for range in NUMERIC_KEYS {
            assert!(help.contains(range.key), "{}", range.key);
        }
        assert!(
            help.contains("preauth_connections_max           1..=1000000"),
            "{help}"
        );
    }
}
