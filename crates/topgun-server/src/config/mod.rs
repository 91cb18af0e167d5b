//! Server configuration: command line (with the TopGun server's flag and environment names),
//! an optional TOML file, and the environment variables that are not a flag's ([`Env`]).
//! Precedence: flag or its environment variable, then the other environment variables, then
//! the file, then the default.
//!
//! Each key is declared once. A flag's name and environment names are on its [`Cli`] field;
//! the file's keys, with each numeric key's range, unit and default, are in [`keys`], one
//! line each. Resolution is a pure function of its inputs ([`Config::resolve`]) so that every
//! rule is tested without touching the process environment.

pub mod cluster;
mod declare;
pub mod env;
mod error;
pub mod keys;
mod limits;
mod range;
mod settings;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use topgun_core::NodeId;
use topgun_core::protocol::Limits;

use crate::connection::outbox::BacklogLimits;
use crate::journal::Retention;
use crate::security::auth::JwtVerifier;
use crate::security::policy::PolicySet;
use crate::storage::data_dir::StorePaths;
use crate::storage::wal::OnCorruption;
use crate::storage::{Backend, Durability, StorageConfig};
pub use cluster::{ClusterConfig, ClusterTiming, Discovery, SeedAddr};
use declare::Number;
pub use env::Env;
use env::names;
pub use error::ConfigError;
use keys::{FileConfig, Numbers};
pub use keys::{MAX_DEPTH_MAX, NUMERIC_KEYS};
pub use limits::{Guards, PreAuthLimits, SessionLimits};
pub use range::{KeyRange, Unit};
pub use settings::{
    ADMIN_USERNAME_DEFAULT, AdminSettings, CorsOrigins, HttpSettings, LogFormat, Secret,
};

/// The environment's former name, from when it held the auth variables only.
pub type AuthEnv = Env;

/// The node id when none is configured (the TopGun server's default).
pub const NODE_ID_DEFAULT: &str = "topgun-server-node";
pub const PORT_DEFAULT: u16 = 8080;
/// The port's environment names, the first one set winning: `PORT`, the TopGun server's,
/// then `TOPGUN_PORT`, which deployments' compose files set.
const PORT_ENV_NAMES: &[&str] = &["PORT", "TOPGUN_PORT"];

/// Command line of `topgun-server`.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "topgun-server",
    version,
    about = "TopGun data grid server",
    after_help = after_help()
)]
pub struct Cli {
    /// Port to listen on; 0 picks a free port (printed as `PORT=<n>`). `TOPGUN_PORT` is
    /// read when `PORT` is not set (compose files of TopGun deployments set it).
    #[arg(long, env = env_name(PORT_ENV_NAMES))]
    pub port: Option<u16>,
    /// Address to bind (default: 127.0.0.1 without auth, 0.0.0.0 with it).
    #[arg(long, env = env_name(&["TOPGUN_BIND_ADDR"]))]
    pub host: Option<IpAddr>,
    /// This node's id; issues its HLC timestamps (no `:` allowed).
    #[arg(long, env = env_name(&["TOPGUN_NODE_ID"]))]
    pub node_id: Option<String>,
    /// A TOML file with any of: `port`, `host`, `node_id`, `data_dir`, `durability`,
    /// `storage_backend`, `server_timestamps`, `[[policies]]`, and the numeric keys listed
    /// below with their valid ranges (security: `ops_per_batch_max`, `value_bytes_max`,
    /// `queries_per_connection_max`, `connections_per_user_max`,
    /// `auth_failures_per_ip_per_minute`, `ops_per_sec_per_connection`, `ops_per_sec_per_user`,
    /// `preauth_bytes_max`, `preauth_connections_max`, `preauth_connections_per_ip_max`),
    /// and a `[cluster]` table (the cluster flags' keys and the `cluster.` keys below).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded store and the write-ahead log (default `./topgun-data`).
    #[arg(long, env = env_name(&["TOPGUN_DATA_DIR"]), global = true)]
    pub data_dir: Option<PathBuf>,
    /// The embedded store's file (default `<data dir>/store.redb`; its directory is created).
    #[arg(long, value_name = "FILE", env = env_name(&["TOPGUN_REDB_PATH"]), global = true)]
    pub redb_path: Option<PathBuf>,
    /// The write-ahead log's directory (default `<data dir>/wal`).
    #[arg(long, value_name = "DIR", env = env_name(&["TOPGUN_WAL_DIR"]), global = true)]
    pub wal_dir: Option<PathBuf>,
    /// When writes are acknowledged: `fsync` (durable, the default), `os` (survives a
    /// server crash, not a power loss) or `memory` (as soon as applied). Wins over
    /// `TOPGUN_WAL_FSYNC_POLICY`.
    #[arg(long, env = env_name(&["TOPGUN_DURABILITY"]))]
    pub durability: Option<String>,
    /// `redb` (embedded, the default), `postgres` (with `DATABASE_URL`) or `memory` (alias
    /// `null`: nothing survives a restart, nothing is written to disk).
    #[arg(long = "storage", env = env_name(&["STORAGE_BACKEND"]))]
    pub storage_backend: Option<String>,
    /// PostgreSQL connection URL for `--storage postgres`.
    #[arg(long, env = env_name(&["DATABASE_URL"]))]
    pub database_url: Option<String>,
    /// Start even if the write-ahead log is corrupt, discarding it from the damaged frame on.
    #[arg(long)]
    pub wal_discard_corrupt: bool,
    /// Turns cluster mode on: the port other members reach this one on (0 picks a free
    /// port). Unset: a single node. Cluster mode is parsed and checked; the clustering
    /// itself is being built (docs/cluster.md).
    #[arg(long, env = env_name(&["TOPGUN_CLUSTER_PORT"]))]
    pub cluster_port: Option<u16>,
    /// Address the cluster listener binds (default: the client bind address).
    #[arg(long, env = env_name(&["TOPGUN_CLUSTER_BIND_ADDR"]))]
    pub cluster_host: Option<IpAddr>,
    /// Other members' cluster addresses, `host:port,…` (IPv6 in brackets); this member's own
    /// address may be listed too.
    #[arg(long, value_name = "HOST:PORT,…", env = env_name(&["TOPGUN_SEED_NODES"]))]
    pub seed_nodes: Option<String>,
    /// `dns:<name>:<port>`: every address `<name>` resolves to is a seed at `<port>` (a
    /// Kubernetes headless service). Needs `--bootstrap-expect`.
    #[arg(long, value_name = "dns:NAME:PORT", env = env_name(&["TOPGUN_DISCOVERY"]))]
    pub discovery: Option<String>,
    /// Members, this one included, that must know each other before the cluster forms
    /// (default: 1 + the seeds other than this member).
    #[arg(long, value_name = "N", env = env_name(&["TOPGUN_BOOTSTRAP_EXPECT"]))]
    pub bootstrap_expect: Option<usize>,
    /// The host other members and clients reach this one at (default: `--host` if it is a
    /// specific address, else 127.0.0.1).
    #[arg(long, env = env_name(&["TOPGUN_ADVERTISE_HOST"]))]
    pub advertise_host: Option<String>,
    /// The `ws://` or `wss://` URL clients are given for this member (default:
    /// `ws://<advertise host>:<port>`).
    #[arg(long, value_name = "URL", env = env_name(&["TOPGUN_ADVERTISE_URL"]))]
    pub advertise_url: Option<String>,
    /// Replicas of each partition besides its owner, 0..=3 (default 1).
    #[arg(long, value_name = "N", env = env_name(&["TOPGUN_BACKUP_COUNT"]))]
    pub backups: Option<u8>,
    /// The ids of the cluster flags read from the environment rather than the command line
    /// ([`Cli::parse_process`]): without cluster mode those are a warning, not an error.
    #[arg(skip)]
    pub env_sourced: Vec<&'static str>,
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

/// The environment variable clap reads for a flag: the first of `names` that is set, else
/// the first. clap's `env` takes one name; a list lets a setting keep its TopGun server name
/// and gain others, one entry each.
fn env_name(names: &[&'static str]) -> &'static str {
    first_set(names, |name| {
        std::env::var_os(name).is_some_and(|value| !value.is_empty())
    })
}

fn first_set(names: &[&'static str], is_set: impl Fn(&str) -> bool) -> &'static str {
    names
        .iter()
        .copied()
        .find(|name| is_set(name))
        .or_else(|| names.first().copied())
        .unwrap_or_default()
}

impl Cli {
    /// Parses the process's arguments as `Cli::parse` does (exiting with clap's message and
    /// status 2 on an error), and notes which cluster flags came from the environment.
    pub fn parse_process() -> Self {
        let mut command = Self::command();
        let matches = command.clone().get_matches();
        let mut cli =
            Self::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
        cli.env_sourced = cluster::env_sourced(&matches);
        cli
    }

    /// Where the store and the log are, from the flags alone (for `restore`, which reads
    /// no config file).
    pub fn store_paths(&self) -> StorePaths {
        let default = StorageConfig::default().data_dir;
        StorePaths::new(
            self.data_dir.as_deref().unwrap_or(&default),
            self.redb_path.as_deref(),
            self.wal_dir.as_deref(),
        )
    }
}

/// `--help`'s closing section: what starting needs, and every numeric key's range.
fn after_help() -> String {
    let mut out = String::from(
        "Authentication (one is required; with both, TOPGUN_NO_AUTH wins and a warning is logged):\n  \
         JWT_SECRET=<key>     an HS256 secret of at least 32 bytes, or an RS256 public key in PEM\n  \
         TOPGUN_NO_AUTH=1     development only: every connection is accepted\n  \
         TOPGUN_JWT_ISSUER, TOPGUN_JWT_AUDIENCE   required claims, when set\n\n\
         Numeric keys of the --config file and their valid ranges:\n",
    );
    for range in NUMERIC_KEYS.iter().chain(cluster::NUMERIC_KEYS) {
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
    /// Cluster mode's settings; `None`: a single node.
    pub cluster: Option<ClusterConfig>,
    /// The admin plane's settings (the admin REST API, login).
    pub admin: AdminSettings,
    /// HTTP settings (`POST /sync` and `/api/*`: CORS, the trusted proxy).
    pub http: HttpSettings,
    /// SQL queries on (`TOPGUN_SQL`; off by default). SQL is not built yet: requests are
    /// answered `ERROR 501` either way.
    pub sql: bool,
    pub log_format: LogFormat,
    /// What the binary logs at `WARN` once logging is set up: settings that were accepted
    /// but deserve the operator's attention.
    pub warnings: Vec<String>,
    /// The tolerated variables that are set but mean nothing here ([`env::TOLERATED`]),
    /// logged once at start.
    pub unused_env: Vec<String>,
}

impl Config {
    /// Resolves flags, the file's text (if a file was given) and the environment.
    pub fn resolve(cli: &Cli, file: Option<&str>, env: &Env) -> Result<Self, ConfigError> {
        let mut file = parse_file(cli, file)?;
        journal_from_env(env, &mut file)?;
        let (auth, mut warnings) = Self::auth_mode(env)?;
        let http = HttpSettings::from_env(env)?;
        if http.sync_allow_anonymous && matches!(auth, AuthMode::Jwt(_)) {
            warnings.push(
                "TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS is on: POST /sync serves requests without a \
                 token as the anonymous subject, with what policies give everyone"
                    .to_owned(),
            );
        }
        let host = cli
            .host
            .or(file.host)
            .unwrap_or_else(|| default_host(&auth));
        let port = cli.port.or(file.port).unwrap_or(PORT_DEFAULT);
        let node_id = node_id(cli.node_id.as_ref().or(file.node_id.as_ref()))?;
        let n = Numbers::resolve(&file)?;
        check_relations(&n)?;
        let bind = SocketAddr::new(host, port);
        let cluster = cluster::resolve(
            cluster::Inputs {
                cli,
                file: file.cluster.take(),
                env,
                bind,
                node_id: node_id.as_str(),
            },
            &mut warnings,
        )?;
        Ok(Self {
            bind,
            node_id,
            auth,
            decode: decode_limits(&n),
            session: SessionLimits::new(&n),
            backlog: BacklogLimits {
                connection_bytes: n.connection_backlog_bytes_max,
                server_bytes: n.server_backlog_bytes_max,
            },
            shards: n.shards,
            max_drift_ms: n.max_drift_ms,
            storage: storage_config(cli, &file, &n, env)?,
            tombstone_ttl_ms: n.tombstone_ttl_ms,
            gc_interval_ms: n.gc_interval_ms,
            policies: PolicySet::compile(&file.policies)?,
            guards: Guards::new(&n, file.server_timestamps.unwrap_or_default()),
            preauth: PreAuthLimits::new(&n),
            interceptors: Vec::new(),
            cluster,
            admin: AdminSettings::from_env(env)?,
            http,
            sql: env::switch(names::SQL, env.sql.as_deref(), false)?,
            log_format: LogFormat::from_env(env)?,
            warnings,
            unused_env: env.tolerated.clone(),
        })
    }

    /// The auth mode, and a warning when `TOPGUN_NO_AUTH` overrides a `JWT_SECRET`: inherited
    /// environments often carry both, and the TopGun server starts without auth then, so we
    /// do too rather than refuse, but say so.
    fn auth_mode(env: &Env) -> Result<(AuthMode, Vec<String>), ConfigError> {
        let no_auth = env::switch(names::NO_AUTH, env.no_auth.as_deref(), false)?;
        match (&env.jwt_secret, no_auth) {
            (Some(_), true) => Ok((
                AuthMode::Disabled,
                vec![format!(
                    "{} and {} are both set: authentication is OFF ({} wins); {} is ignored",
                    names::NO_AUTH,
                    names::JWT_SECRET,
                    names::NO_AUTH,
                    names::JWT_SECRET
                )],
            )),
            (None, true) => Ok((AuthMode::Disabled, Vec::new())),
            (None, false) => Err(ConfigError::NoAuth),
            (Some(secret), false) => {
                let verifier =
                    JwtVerifier::from_secret(secret, env.issuer.clone(), env.audience.clone())?;
                Ok((AuthMode::Jwt(verifier), Vec::new()))
            }
        }
    }
}

/// The file's keys; no file is an empty one.
fn parse_file(cli: &Cli, text: Option<&str>) -> Result<FileConfig, ConfigError> {
    let Some(text) = text else {
        return Ok(FileConfig::default());
    };
    toml::from_str(text).map_err(|e| ConfigError::File {
        path: cli
            .config
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string()),
        reason: e.to_string(),
    })
}

/// Without auth, only this machine is served; with it, every interface.
fn default_host(auth: &AuthMode) -> IpAddr {
    match auth {
        AuthMode::Disabled => IpAddr::V4(Ipv4Addr::LOCALHOST),
        AuthMode::Jwt(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

fn node_id(name: Option<&String>) -> Result<NodeId, ConfigError> {
    let name = name.map_or(NODE_ID_DEFAULT, String::as_str);
    NodeId::new(name).map_err(|e| ConfigError::BadNodeId(name.to_owned(), e))
}

fn decode_limits(n: &Numbers) -> Limits {
    Limits {
        max_frame_bytes: n.max_frame_bytes,
        max_str_bytes: n.max_frame_bytes,
        max_depth: n.max_depth,
        ..Limits::default()
    }
}

/// The rules between keys, checked once each key is within its own range.
fn check_relations(n: &Numbers) -> Result<(), ConfigError> {
    let frame = n.max_frame_bytes;
    let connection = n.connection_backlog_bytes_max;
    // The unread-output budgets: a connection's holds at least one frame (else one large
    // event would close any subscriber), the server's at least one connection's.
    if connection < frame {
        let rule = format!("at least {} ({frame})", keys::MAX_FRAME_BYTES.key);
        return Err(refused(
            &keys::CONNECTION_BACKLOG_BYTES_MAX,
            rule,
            connection,
        ));
    }
    if n.server_backlog_bytes_max < connection {
        let rule = format!(
            "at least {} ({connection})",
            keys::CONNECTION_BACKLOG_BYTES_MAX.key
        );
        return Err(refused(
            &keys::SERVER_BACKLOG_BYTES_MAX,
            rule,
            n.server_backlog_bytes_max,
        ));
    }
    // The segment being written cannot be released until the next one starts, and it starts
    // only with the next write, which a full log refuses: so the log's bound leaves room for
    // at least one closed segment beside the open one.
    let segment = n.wal_segment_bytes;
    if n.wal_max_bytes < segment.saturating_mul(2) {
        let rule = format!("at least twice {} ({segment})", keys::WAL_SEGMENT_BYTES.key);
        return Err(refused(&keys::WAL_MAX_BYTES, rule, n.wal_max_bytes));
    }
    if n.value_bytes_max > frame {
        let rule = format!("0, or at most {} ({frame})", keys::MAX_FRAME_BYTES.key);
        return Err(refused(&keys::VALUE_BYTES_MAX, rule, n.value_bytes_max));
    }
    Ok(())
}

fn refused(key: &KeyRange, rule: String, value: impl Number) -> ConfigError {
    ConfigError::OutOfRange {
        field: key.key,
        rule,
        value: value.to_u64().to_string(),
    }
}

/// The `--durability` names.
const DURABILITIES: &[(&str, Durability)] = &[
    ("fsync", Durability::Fsync),
    ("os", Durability::Os),
    ("memory", Durability::Memory),
];

/// The `--storage` names; `null` is the TopGun server's name for `memory`.
const BACKENDS: &[(&str, Backend)] = &[
    ("redb", Backend::Redb),
    ("postgres", Backend::Postgres),
    ("memory", Backend::Memory),
    ("null", Backend::Memory),
];

/// How often the log is synced under the `batched` fsync policy (the TopGun server's).
pub const BATCHED_SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// `TOPGUN_WAL_FSYNC_POLICY`'s values: the durability each stands for, and the log's timed
/// sync. `per_op` acknowledges after the sync, as `fsync` does (with group commit, so
/// concurrent writes share a sync); the others acknowledge once the OS has the write.
const FSYNC_POLICIES: &[(&str, (Durability, Option<Duration>))] = &[
    ("per_op", (Durability::Fsync, None)),
    ("batched", (Durability::Os, Some(BATCHED_SYNC_INTERVAL))),
    ("none", (Durability::Os, None)),
];

fn storage_config(
    cli: &Cli,
    file: &FileConfig,
    n: &Numbers,
    env: &Env,
) -> Result<StorageConfig, ConfigError> {
    let defaults = StorageConfig::default();
    let (durability, wal_sync_interval) = durability(cli, file, env)?;
    let backend = match (&cli.storage_backend, &file.storage_backend) {
        (Some(name), _) => named("--storage / STORAGE_BACKEND", BACKENDS, name)?,
        (None, Some(name)) => named("storage_backend", BACKENDS, name)?,
        (None, None) => defaults.backend,
    };
    if backend == Backend::Postgres && cli.database_url.is_none() {
        return Err(out_of_range(
            "DATABASE_URL",
            "set when the storage backend is postgres",
            "nothing",
        ));
    }
    let data_dir = cli.data_dir.as_ref().or(file.data_dir.as_ref());
    Ok(StorageConfig {
        backend,
        database_url: cli.database_url.clone(),
        data_dir: data_dir.cloned().unwrap_or(defaults.data_dir),
        redb_path: cli.redb_path.clone(),
        wal_dir: cli.wal_dir.clone(),
        durability,
        wal_sync_interval,
        wal_segment_bytes: n.wal_segment_bytes,
        wal_max_bytes: n.wal_max_bytes,
        wal_commit_delay: Duration::from_micros(n.wal_commit_delay_us),
        redb_cache_bytes: n.redb_cache_bytes,
        on_corruption: if cli.wal_discard_corrupt {
            OnCorruption::Discard
        } else {
            OnCorruption::Refuse
        },
        journal: Retention {
            capacity: n.journal_capacity,
            max_age_ms: n.journal_max_age_ms,
        },
    })
}

/// The durability and the log's timed sync: `--durability` (or `TOPGUN_DURABILITY`), else
/// `TOPGUN_WAL_FSYNC_POLICY`, else the file's `durability`, else `fsync`. A bad fsync policy
/// is refused even when `--durability` wins: a typo must not pass unnoticed.
fn durability(
    cli: &Cli,
    file: &FileConfig,
    env: &Env,
) -> Result<(Durability, Option<Duration>), ConfigError> {
    let policy = match &env.wal_fsync_policy {
        Some(name) => Some(named(
            names::WAL_FSYNC_POLICY,
            FSYNC_POLICIES,
            &name.trim().to_ascii_lowercase(),
        )?),
        None => None,
    };
    Ok(match (&cli.durability, policy, &file.durability) {
        (Some(name), _, _) => (
            named("--durability / TOPGUN_DURABILITY", DURABILITIES, name)?,
            None,
        ),
        (None, Some(policy), _) => policy,
        (None, None, Some(name)) => (named("durability", DURABILITIES, name)?, None),
        (None, None, None) => (StorageConfig::default().durability, None),
    })
}

/// `TOPGUN_JOURNAL_CAPACITY` and `TOPGUN_JOURNAL_ENABLED`, over the file's
/// `journal_capacity`: a capacity checked against the key's range, naming the variable;
/// the journal turned off (capacity 0) whatever the capacity says.
fn journal_from_env(env: &Env, file: &mut FileConfig) -> Result<(), ConfigError> {
    if let Some(text) = &env.journal_capacity {
        let capacity = text
            .trim()
            .parse::<u64>()
            .map_err(|_| ConfigError::BadEnv {
                name: names::JOURNAL_CAPACITY,
                value: text.clone(),
                rule: format!("a number of events, {}", keys::JOURNAL_CAPACITY.describe()),
            })?;
        keys::JOURNAL_CAPACITY
            .check(capacity)
            .map_err(|_| ConfigError::OutOfRange {
                field: names::JOURNAL_CAPACITY,
                rule: keys::JOURNAL_CAPACITY.describe(),
                value: capacity.to_string(),
            })?;
        file.journal_capacity = Some(capacity);
    }
    let enabled = env::switch(names::JOURNAL_ENABLED, env.journal_enabled.as_deref(), true)?;
    if !enabled {
        file.journal_capacity = Some(0);
    }
    Ok(())
}

/// The value `name` stands for in `names`, else an error listing the names.
fn named<T: Copy>(field: &'static str, names: &[(&str, T)], name: &str) -> Result<T, ConfigError> {
    if let Some((_, value)) = names.iter().find(|(known, _)| *known == name) {
        return Ok(*value);
    }
    let mut rule = String::new();
    for (i, (known, _)) in names.iter().enumerate() {
        let separator = match i {
            0 => "",
            i if i + 1 == names.len() => " or ",
            _ => ", ",
        };
        rule.push_str(separator);
        rule.push_str(known);
    }
    Err(out_of_range(field, &rule, name))
}

fn out_of_range(field: &'static str, rule: &str, value: &str) -> ConfigError {
    ConfigError::OutOfRange {
        field,
        rule: rule.to_owned(),
        value: value.to_owned(),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_env;
