//! A cluster member's numbers for `/metrics` (CLUSTER.md §16): membership and the control
//! plane as applied here, forwarded writes and their latency, and what waits in the links to
//! peers. Forwarding records with relaxed atomics; the rest is read at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::Histogram;

/// What the forwarder records.
#[derive(Debug, Default)]
pub struct ForwardStats {
    parts: AtomicU64,
    writes: AtomicU64,
    failed: AtomicU64,
    latency: Histogram,
}

impl ForwardStats {
    /// One part sent to its owner and answered (or failed) after `took`.
    pub fn record(&self, writes: usize, took: Duration, ok: bool) {
        self.parts.fetch_add(1, Ordering::Relaxed);
        let writes = u64::try_from(writes).unwrap_or(u64::MAX);
        self.writes.fetch_add(writes, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(took);
    }

    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "topgun_cluster_forwarded_parts_total",
                "Parts of write batches sent to the member owning their partitions.",
                load(&self.parts),
            ),
            (
                "topgun_cluster_forwarded_writes_total",
                "Writes sent to the member owning their partition.",
                load(&self.writes),
            ),
            (
                "topgun_cluster_forward_failures_total",
                "Forwarded parts that failed (no answer in time, ownership kept moving, the owner failed them).",
                load(&self.failed),
            ),
        ] {
            gauge_or_counter(out, name, "counter", help, value);
        }
        self.latency.render(
            out,
            "topgun_cluster_forward_seconds",
            "From sending a part of a batch to its owner to the owner's answer.",
        );
    }
}

/// What one member relayed to others and received from them (CLUSTER.md §9).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Map event frames sent to other members.
    pub sent: AtomicU64,
    /// Topic messages sent to other members.
    pub topics_sent: AtomicU64,
    /// Counter updates sent to other members.
    pub counters_sent: AtomicU64,
    /// Lock operations and answers sent to other members.
    pub locks_sent: AtomicU64,
    /// Frames that found the link to a member (or the queue here) full or closed.
    pub dropped: AtomicU64,
    /// Map event frames received and handed to the shards.
    pub received: AtomicU64,
    /// Gaps detected in a member's numbering of its relayed events.
    pub gaps: AtomicU64,
}

impl RelayStats {
    pub fn render(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP topgun_cluster_relayed_total Frames sent to other members, by what they carry.\n\
             # TYPE topgun_cluster_relayed_total counter"
        );
        for (what, counter) in [
            ("event", &self.sent),
            ("topic", &self.topics_sent),
            ("counter", &self.counters_sent),
            ("lock", &self.locks_sent),
        ] {
            let _ = writeln!(
                out,
                "topgun_cluster_relayed_total{{what=\"{what}\"}} {}",
                load(counter)
            );
        }
        for (name, help, value) in [
            (
                "topgun_cluster_relay_dropped_total",
                "Frames to or from other members dropped at a full or closed link or queue.",
                load(&self.dropped),
            ),
            (
                "topgun_cluster_relay_received_total",
                "Map event frames other members relayed here.",
                load(&self.received),
            ),
            (
                "topgun_cluster_relay_gaps_total",
                "Gaps in a member's numbering of relayed events (the followers resynced).",
                load(&self.gaps),
            ),
        ] {
            gauge_or_counter(out, name, "counter", help, value);
        }
    }
}

/// The applied control state and Raft as one member sees them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Members by state: joining, active, leaving, down.
    pub members: [u64; 4],
    pub table_version: u64,
    pub map_version: u64,
    /// The applied revision of the replicated admin catalogs (policies, indexes).
    pub catalog_revision: u64,
    pub owned_partitions: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    pub is_leader: bool,
    /// Frames queued in the links to peers.
    pub peer_queue: u64,
}

impl MemberView {
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP topgun_cluster_members Members of the applied table, by state.\n\
             # TYPE topgun_cluster_members gauge"
        );
        for (state, n) in ["joining", "active", "leaving", "down"]
            .iter()
            .zip(self.members)
        {
            let _ = writeln!(out, "topgun_cluster_members{{state=\"{state}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "topgun_cluster_table_version",
                "The applied partition table's version.",
                self.table_version,
            ),
            (
                "topgun_cluster_map_version",
                "The PARTITION_MAP version clients are given.",
                self.map_version,
            ),
            (
                "topgun_cluster_catalog_revision",
                "The applied revision of the admin policies and indexes: equal on members that \
                 decide alike.",
                self.catalog_revision,
            ),
            (
                "topgun_cluster_owned_partitions",
                "Partitions this member owns.",
                self.owned_partitions,
            ),
            (
                "topgun_cluster_raft_term",
                "The control plane's Raft term.",
                self.raft_term,
            ),
            (
                "topgun_cluster_raft_applied_index",
                "The last control log entry applied here.",
                self.raft_applied_index,
            ),
            (
                "topgun_cluster_is_leader",
                "1 while this member leads the control plane.",
                u64::from(self.is_leader),
            ),
            (
                "topgun_cluster_peer_queue_frames",
                "Frames waiting in the links to other members.",
                self.peer_queue,
            ),
        ] {
            gauge_or_counter(out, name, "gauge", help, value);
        }
    }
}

fn gauge_or_counter(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}
