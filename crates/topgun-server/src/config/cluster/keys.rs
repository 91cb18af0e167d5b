//! The config file's `[cluster]` table: the cluster flags' file names, and the numeric keys —
//! replication counts and timing — each declared once with its range (see `declare.rs`).

use std::net::IpAddr;

use serde::Deserialize;

use super::super::declare::file_keys;
use super::super::error::ConfigError;
use super::super::keys::{DAY, HOUR, KIB, MIB, MIN, SEC};
use crate::cluster::frame::FRAME_BYTES_MAX;

file_keys! {
    /// `[cluster]`; unknown keys are refused, as in the rest of the file.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(in crate::config) struct ClusterFile {
        // Flags as well (`--cluster-port`, `--cluster-host`, …): the flag wins.
        port: Option<u16>,
        host: Option<IpAddr>,
        seed_nodes: Option<Vec<String>>,
        discovery: Option<String>,
        bootstrap_expect: Option<usize>,
        advertise_host: Option<String>,
        advertise_url: Option<String>,
    }

    numeric in "cluster." {
        /// Replicas besides the owner (`--backups` wins). More than three buys little and
        /// multiplies every write's traffic.
        backups (BACKUPS): u8 = 1, Count 1..=3, 0 means "the owner only";
        /// Copies, the owner's included, a `REPLICATED` write waits for
        /// (`TOPGUN_MIN_INSYNC_REPLICAS` wins); also at most `backups` + 1.
        min_insync_replicas (MIN_INSYNC_REPLICAS): u8 = 1, Count 1..=4;
        /// Silence after which a member is marked down and its partitions fail over.
        member_down_after_ms (MEMBER_DOWN_AFTER_MS): u64 = 3 * SEC, Millis 100..=10 * MIN;
        /// Time down after which a member is removed; more than `member_down_after_ms`.
        member_remove_after_ms (MEMBER_REMOVE_AFTER_MS): u64 = 5 * MIN, Millis SEC..=DAY;
        /// The Raft leader's heartbeat; less than `raft_election_timeout_min_ms`.
        raft_heartbeat_ms (RAFT_HEARTBEAT_MS): u64 = 250, Millis 10..=10 * SEC;
        /// Less than `raft_election_timeout_max_ms`: elections time out at random between the
        /// two, so that candidates do not keep splitting the vote.
        raft_election_timeout_min_ms (RAFT_ELECTION_TIMEOUT_MIN_MS): u64 = SEC,
            Millis 50..=MIN;
        raft_election_timeout_max_ms (RAFT_ELECTION_TIMEOUT_MAX_MS): u64 = 2 * SEC,
            Millis 100..=2 * MIN;
        /// After this, a majority of `bootstrap_expect` members forms the cluster.
        bootstrap_timeout_ms (BOOTSTRAP_TIMEOUT_MS): u64 = 10 * SEC, Millis SEC..=HOUR;
        /// How long a write waits for its replicas before it is answered as not replicated.
        replication_timeout_ms (REPLICATION_TIMEOUT_MS): u64 = 2 * SEC, Millis 10..=5 * MIN;
        /// Partition copies one member sends, and receives, at once.
        max_parallel_migrations (MAX_PARALLEL_MIGRATIONS): usize = 2, Count 1..=64;
        /// A migration's chunk; the range keeps a chunk well inside one cluster frame.
        migration_chunk_bytes (MIGRATION_CHUNK_BYTES): usize = 1 << 20,
            Bytes 4 * KIB..=16 * MIB;
        /// Time a partition stays lost (no live copy) before an out-of-date copy is promoted.
        lost_promote_after_ms (LOST_PROMOTE_AFTER_MS): u64 = 30 * SEC, Millis SEC..=DAY;
        /// The longest lease a cluster lock is granted, whatever the client asks.
        cluster_lock_max_ttl_ms (CLUSTER_LOCK_MAX_TTL_MS): u64 = MIN, Millis SEC..=DAY;
        /// Time a lock holder's session outlives its connection.
        session_ttl_ms (SESSION_TTL_MS): u64 = 10 * SEC, Millis SEC..=HOUR;
        /// How often clients are pushed a changed `PARTITION_MAP`, at most.
        map_push_interval_ms (MAP_PUSH_INTERVAL_MS): u64 = 100, Millis 10..=MIN;
        /// How often members ping each other's links.
        ws_ping_interval_ms (WS_PING_INTERVAL_MS): u64 = 20 * SEC, Millis SEC..=10 * MIN;
    }
}

// A chunk travels in one frame with its envelope.
const _: () = assert!(MIGRATION_CHUNK_BYTES.max * 2 <= FRAME_BYTES_MAX as u64);

/// The cluster's timing and bounds, from `[cluster]` (CLUSTER.md §14). Parsed and checked;
/// the clustering that uses them is being built (docs/cluster.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterTiming {
    pub member_down_after_ms: u64,
    pub member_remove_after_ms: u64,
    pub raft_heartbeat_ms: u64,
    pub raft_election_timeout_min_ms: u64,
    pub raft_election_timeout_max_ms: u64,
    pub bootstrap_timeout_ms: u64,
    pub replication_timeout_ms: u64,
    pub max_parallel_migrations: usize,
    pub migration_chunk_bytes: usize,
    pub lost_promote_after_ms: u64,
    pub cluster_lock_max_ttl_ms: u64,
    pub session_ttl_ms: u64,
    pub map_push_interval_ms: u64,
    pub ws_ping_interval_ms: u64,
}

impl ClusterTiming {
    pub(super) fn new(n: &Numbers) -> Self {
        Self {
            member_down_after_ms: n.member_down_after_ms,
            member_remove_after_ms: n.member_remove_after_ms,
            raft_heartbeat_ms: n.raft_heartbeat_ms,
            raft_election_timeout_min_ms: n.raft_election_timeout_min_ms,
            raft_election_timeout_max_ms: n.raft_election_timeout_max_ms,
            bootstrap_timeout_ms: n.bootstrap_timeout_ms,
            replication_timeout_ms: n.replication_timeout_ms,
            max_parallel_migrations: n.max_parallel_migrations,
            migration_chunk_bytes: n.migration_chunk_bytes,
            lost_promote_after_ms: n.lost_promote_after_ms,
            cluster_lock_max_ttl_ms: n.cluster_lock_max_ttl_ms,
            session_ttl_ms: n.session_ttl_ms,
            map_push_interval_ms: n.map_push_interval_ms,
            ws_ping_interval_ms: n.ws_ping_interval_ms,
        }
    }
}

impl Default for ClusterTiming {
    fn default() -> Self {
        Self::new(&Numbers::defaults())
    }
}

/// The rules between the timing keys, checked once each is within its own range. The first
/// key of each pair is the one named. (`min_insync_replicas` against `backups` is checked
/// where it is known whether the variable or the file set it.)
pub(super) fn check_relations(n: &Numbers) -> Result<(), ConfigError> {
    let less_than = [
        (
            &RAFT_HEARTBEAT_MS,
            n.raft_heartbeat_ms,
            &RAFT_ELECTION_TIMEOUT_MIN_MS,
            n.raft_election_timeout_min_ms,
        ),
        (
            &RAFT_ELECTION_TIMEOUT_MIN_MS,
            n.raft_election_timeout_min_ms,
            &RAFT_ELECTION_TIMEOUT_MAX_MS,
            n.raft_election_timeout_max_ms,
        ),
        (
            &MEMBER_DOWN_AFTER_MS,
            n.member_down_after_ms,
            &MEMBER_REMOVE_AFTER_MS,
            n.member_remove_after_ms,
        ),
    ];
    for (key, value, bound, bound_value) in less_than {
        if value >= bound_value {
            let rule = format!("less than {} ({bound_value})", bound.key);
            return Err(super::super::refused(key, rule, value));
        }
    }
    Ok(())
}
