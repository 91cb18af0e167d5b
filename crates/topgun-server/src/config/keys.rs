//! The keys of the config file, each declared once (see `declare.rs` for what a line
//! becomes). A numeric key's constant here is its range; its resolved value is the field of
//! the same name in `Numbers`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use topgun_core::protocol::Limits;

use super::cluster::keys::ClusterFile;
use super::declare::file_keys;
use crate::connection::outbox::BacklogLimits;
use crate::journal::Retention;
use crate::security::policy::PolicySpec;
use crate::storage::StorageConfig;

/// The deepest nesting a client frame may be configured to carry (`max_depth`). What the
/// server acknowledges it must decode again from its log and store, whose bound
/// (`store.rs`, `stored_limits`) must be at least this plus the entry's envelope (the record
/// and leaf around a value); the store's bound is the MsgPack reader's ceiling, 512
/// (`topgun_core::protocol::msgpack::MAX_DEPTH_CEILING`). A deeper client value would be
/// acknowledged and then fail recovery.
pub const MAX_DEPTH_MAX: usize = 256;
const _: () = assert!(MAX_DEPTH_MAX <= topgun_core::protocol::msgpack::MAX_DEPTH_CEILING);

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;
pub(super) const SEC: u64 = 1000;
pub(super) const MIN: u64 = 60 * SEC;
pub(super) const HOUR: u64 = 60 * MIN;
pub(super) const DAY: u64 = 24 * HOUR;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

file_keys! {
    /// The TOML file; unknown keys are refused so that typos do not pass silently.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct FileConfig {
        // Flags as well: the flag and its environment names are on `Cli`, and win.
        port: Option<u16>,
        host: Option<IpAddr>,
        node_id: Option<String>,
        data_dir: Option<PathBuf>,
        durability: Option<String>,
        storage_backend: Option<String>,
        // Only in the file.
        server_timestamps: Option<bool>,
        #[serde(default)]
        policies: Vec<PolicySpec>,
        /// `[cluster]`: the cluster's flags and its timing (`cluster/keys.rs`).
        cluster: Option<ClusterFile>,
    }

    numeric {
        /// Time from connect to a successful `AUTH`. The session clock ticks once a second;
        /// shorter deadlines are met on the next tick.
        auth_deadline_ms (AUTH_DEADLINE_MS): u64 = 10 * SEC, Millis 100..=10 * MIN;
        /// Time without a `PING` after which a connection is closed.
        idle_timeout_ms (IDLE_TIMEOUT_MS): u64 = 60 * SEC, Millis SEC..=DAY;
        /// The largest frame decoded. The transport takes frames up to four times this
        /// (then answers `ERROR 413`), so at most 256 MiB is ever buffered for one frame.
        max_frame_bytes (MAX_FRAME_BYTES): usize = Limits::default().max_frame_bytes,
            Bytes KIB..=64 * MIB;
        /// The deepest nesting of a frame (see [`MAX_DEPTH_MAX`]).
        max_depth (MAX_DEPTH): usize = Limits::default().max_depth.min(MAX_DEPTH_MAX),
            Count 1..=MAX_DEPTH_MAX as u64;
        /// Replies queued for one connection's socket writer.
        outbound_queue_len (OUTBOUND_QUEUE_LEN): usize = 256, Count 1..=65_536;
        /// Also at least `max_frame_bytes` (checked with both): else one large event would
        /// close any subscriber. Unset, it grows to `max_frame_bytes` if that is larger.
        connection_backlog_bytes_max (CONNECTION_BACKLOG_BYTES_MAX): usize =
            BacklogLimits::default().connection_bytes.max(max_frame_bytes),
            Bytes 64 * KIB..=GIB;
        /// Also at least `connection_backlog_bytes_max` (checked with both). Unset, it grows
        /// to `connection_backlog_bytes_max` if that is larger.
        server_backlog_bytes_max (SERVER_BACKLOG_BYTES_MAX): usize =
            BacklogLimits::default().server_bytes.max(connection_backlog_bytes_max),
            Bytes 64 * KIB..=64 * GIB;
        /// How long a socket may take no data before it is closed as a slow consumer.
        write_timeout_ms (WRITE_TIMEOUT_MS): u64 = 30 * SEC, Millis 100..=10 * MIN;
        maps_per_connection_max (MAPS_PER_CONNECTION_MAX): usize = 1024, Count 1..=100_000;
        topics_per_connection_max (TOPICS_PER_CONNECTION_MAX): usize = 100,
            Count 1..=100_000;
        /// Partition shard tasks. More shards than partitions would leave shards without
        /// partitions.
        shards (SHARDS): usize = cores().min(topgun_core::hash::PARTITION_COUNT as usize),
            Count 1..=topgun_core::hash::PARTITION_COUNT as u64;
        /// How far ahead of the server clock a client timestamp may be (PROTOCOL.md §2.1);
        /// the default is both TopGun implementations' tolerance.
        max_drift_ms (MAX_DRIFT_MS): u64 = topgun_core::hlc::MAX_DRIFT_MS_DEFAULT,
            Millis SEC..=DAY;
        wal_segment_bytes (WAL_SEGMENT_BYTES): u64 = StorageConfig::default().wal_segment_bytes,
            Bytes 4 * KIB..=GIB;
        /// Also at least twice `wal_segment_bytes` (checked with both).
        wal_max_bytes (WAL_MAX_BYTES): u64 = StorageConfig::default().wal_max_bytes,
            Bytes 8 * KIB..=1024 * GIB;
        wal_commit_delay_us (WAL_COMMIT_DELAY_US): u64 =
            micros(StorageConfig::default().wal_commit_delay),
            Micros 1..=100_000, 0 means "off";
        /// Below about 1 MiB each insert reads its B-tree's branch pages from the file again.
        redb_cache_bytes (REDB_CACHE_BYTES): usize = StorageConfig::default().redb_cache_bytes,
            Bytes MIB..=1024 * GIB;
        journal_capacity (JOURNAL_CAPACITY): usize = Retention::default().capacity,
            Count 1..=10_000_000, 0 means "off";
        journal_max_age_ms (JOURNAL_MAX_AGE_MS): u64 = Retention::default().max_age_ms,
            Millis SEC..=3650 * DAY;
        /// Thirty days by default: long enough for clients that went offline to come back
        /// and sync.
        tombstone_ttl_ms (TOMBSTONE_TTL_MS): u64 = 30 * DAY,
            Millis 100..=3650 * DAY, 0 means "kept for ever";
        /// How often tombstones are pruned.
        gc_interval_ms (GC_INTERVAL_MS): u64 = HOUR, Millis 10..=DAY;
        /// The decoder refuses longer arrays (its `max_collection_len`) before this is
        /// checked.
        ops_per_batch_max (OPS_PER_BATCH_MAX): usize = 8_192, Count 1..=100_000;
        /// Also at most `max_frame_bytes` (checked with both).
        value_bytes_max (VALUE_BYTES_MAX): usize = 0,
            Bytes 1..=64 * MIB, 0 means "the frame bound only";
        queries_per_connection_max (QUERIES_PER_CONNECTION_MAX): usize =
            crate::query::handle::QUERIES_PER_CONNECTION_MAX, Count 1..=65_536;
        connections_per_user_max (CONNECTIONS_PER_USER_MAX): usize = 0,
            Count 1..=1_000_000, 0 means "no limit";
        auth_failures_per_ip_per_minute (AUTH_FAILURES_PER_IP_PER_MINUTE): u32 = 10,
            Count 1..=100_000, 0 means "no limit";
        ops_per_sec_per_connection (OPS_PER_SEC_PER_CONNECTION): u32 = 20_000,
            Count 1..=10_000_000, 0 means "no limit";
        ops_per_sec_per_user (OPS_PER_SEC_PER_USER): u32 = 0,
            Count 1..=10_000_000, 0 means "no limit";
        /// An `AUTH` frame with a large token is a few KiB; the upgrade request's headers
        /// count too.
        preauth_bytes_max (PREAUTH_BYTES_MAX): usize = 64 * 1024, Bytes 4 * KIB..=MIB;
        preauth_connections_max (PREAUTH_CONNECTIONS_MAX): usize = 1_000,
            Count 1..=1_000_000;
        preauth_connections_per_ip_max (PREAUTH_CONNECTIONS_PER_IP_MAX): usize = 64,
            Count 1..=1_000_000, 0 means "no limit";
    }
}
