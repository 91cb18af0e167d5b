//! Server metrics, exposed at `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! Every metric is a fixed set of atomic counters: recording never allocates or locks, and
//! label sets are bounded (message types come from the protocol's fixed list; error codes
//! from a fixed list with `other` for the rest).
//!
//! What the shards hold (OR tombstone bytes, the maps holding keys) is kept by the shards
//! themselves as changes are applied and published per shard ([`ShardStats`], [`MapCensus`]);
//! a scrape adds up numbers and never walks the records.
//!
//! The reference server's names that dashboards read (COMPAT.md §8) are rendered beside ours
//! from the same reading: `topgun_active_connections`, `topgun_operations_total`,
//! `topgun_operation_duration_seconds`, `topgun_operation_errors_total`.
//!
//! Public face: [`Metrics`] (shared by every task that records), [`Histogram`],
//! [`ShardStats`] and [`MapCensus`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use topgun_core::protocol::Message;

pub mod census;
pub mod cluster;
pub mod histogram;
pub mod shard_stats;

pub use census::MapCensus;
pub use histogram::Histogram;
pub use shard_stats::ShardStats;

use crate::connection::outbox::{Backlog, KickReason};
use crate::error::code;
use crate::security::guard::Unauthenticated;
use crate::storage::store::MapKind;
use crate::storage::wal::LogStats;

/// Error codes counted individually; any other code counts as `other`.
const ERROR_CODES: [u32; 6] = [
    code::BAD_REQUEST,
    code::UNAUTHORIZED,
    code::FORBIDDEN,
    code::TOO_LARGE,
    code::TOO_MANY,
    code::NOT_IMPLEMENTED,
];

/// Why connections were refused or closed before authenticating (`PreAuthRefusal` labels,
/// then the listener's own).
pub const PREAUTH_REASONS: [&str; 4] = ["connections", "connections_per_ip", "bytes", "timeout"];

/// Op kinds counted individually (PROTOCOL.md §2.5).
const OP_KINDS: [&str; 4] = ["PUT", "REMOVE", "OR_ADD", "OR_REMOVE"];

/// Counters shared by every connection of a server.
#[derive(Debug)]
pub struct Metrics {
    connections: AtomicUsize,
    connections_total: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    auth_failures: AtomicU64,
    /// Indexed like `Message::TYPE_NAMES`.
    messages: Vec<AtomicU64>,
    /// Indexed like `ERROR_CODES`, then one slot for any other code.
    errors: Vec<AtomicU64>,
    frame_latency: Histogram,
    /// Indexed like `OP_KINDS`.
    ops: Vec<AtomicU64>,
    ops_rejected: AtomicU64,
    /// From an op batch's dispatch to every shard having applied it.
    batch_latency: Histogram,
    /// LWW, then OR-Map Merkle sync requests (roots, buckets and leaves).
    merkle_requests: [AtomicU64; 2],
    events_queued: AtomicU64,
    /// Connections not yet authenticated (JWT mode), counted by the listener.
    preauth: Option<Arc<Unauthenticated>>,
    /// Indexed like `PREAUTH_REASONS`.
    preauth_refused: [AtomicU64; 4],
    /// The write-ahead log's size, syncs (every acknowledgement waits for one, in `fsync`
    /// mode) and checkpoints, recorded by its writer thread and the checkpointer.
    log: Option<Arc<LogStats>>,
    /// Unread pushed output and the slow-consumer closes, by reason.
    backlog: Option<Arc<Backlog>>,
    /// Each shard task's numbers, registered as the shards start. std Mutex: taken once per
    /// shard at start and once per scrape, never by recording nor across an `.await`.
    shards: Mutex<Vec<Arc<ShardStats>>>,
    /// The maps holding keys, kept from the shards' reports.
    maps: MapCensus,
}

impl Default for Metrics {
    fn default() -> Self {
        let counters = |n| (0..n).map(|_| AtomicU64::new(0)).collect();
        Self {
            connections: AtomicUsize::new(0),
            connections_total: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            messages: counters(Message::TYPE_NAMES.len()),
            errors: counters(ERROR_CODES.len() + 1),
            frame_latency: Histogram::default(),
            ops: counters(OP_KINDS.len()),
            ops_rejected: AtomicU64::new(0),
            batch_latency: Histogram::default(),
            merkle_requests: [AtomicU64::new(0), AtomicU64::new(0)],
            events_queued: AtomicU64::new(0),
            preauth: None,
            preauth_refused: Default::default(),
            log: None,
            backlog: None,
            shards: Mutex::default(),
            maps: MapCensus::default(),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Metrics {
    /// Also renders what the write-ahead log's writer and checkpointer record in `stats`.
    #[must_use]
    pub fn with_log(mut self, stats: Arc<LogStats>) -> Self {
        self.log = Some(stats);
        self
    }

    /// Also renders the connections' unread output and slow-consumer closes.
    #[must_use]
    pub fn with_backlog(mut self, backlog: Arc<Backlog>) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Also renders how many connections `waiting` counts.
    #[must_use]
    pub fn with_preauth(mut self, waiting: Arc<Unauthenticated>) -> Self {
        self.preauth = Some(waiting);
        self
    }

    /// A new shard's numbers, summed into every scrape from now on; its task publishes into
    /// them.
    pub fn register_shard(&self) -> Arc<ShardStats> {
        let stats = Arc::new(ShardStats::default());
        self.lock_shards().push(Arc::clone(&stats));
        stats
    }

    fn lock_shards(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ShardStats>>> {
        self.shards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The maps holding keys, which shard tasks tell as maps appear and empty.
    pub fn maps(&self) -> &MapCensus {
        &self.maps
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        bump(&self.connections_total, 1);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Ops applied since start, of every kind (`/api/status`'s `totalOperations`).
    pub fn ops_total(&self) -> u64 {
        self.ops.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn received(&self, bytes: usize) {
        bump(
            &self.bytes_received,
            u64::try_from(bytes).unwrap_or(u64::MAX),
        );
    }

    /// A message this server sent: bytes, and `ERROR`s and `AUTH_FAIL`s by kind.
    pub fn sent(&self, msg: &Message, bytes: usize) {
        self.sent_bytes(bytes);
        match msg {
            Message::Error(e) => {
                let slot = ERROR_CODES
                    .iter()
                    .position(|c| *c == e.code)
                    .unwrap_or(ERROR_CODES.len());
                bump(&self.errors[slot], 1);
            }
            Message::AuthFail(_) => bump(&self.auth_failures, 1),
            _ => {}
        }
    }

    /// A decoded message from a client, by type.
    pub fn message(&self, type_name: &str) {
        if let Some(at) = Message::TYPE_NAMES.iter().position(|t| *t == type_name) {
            bump(&self.messages[at], 1);
        }
    }

    /// Time spent handling one frame.
    pub fn frame_handled(&self, took: Duration) {
        self.frame_latency.record(took);
    }

    /// Bytes of a frame written to a socket (replies and shared events alike).
    pub fn sent_bytes(&self, bytes: usize) {
        bump(&self.bytes_sent, u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// An accepted op, by kind (`PUT`, `REMOVE`, `OR_ADD`, `OR_REMOVE`).
    pub fn op(&self, kind: &str) {
        if let Some(at) = OP_KINDS.iter().position(|k| *k == kind) {
            bump(&self.ops[at], 1);
        }
    }

    pub fn op_rejected(&self) {
        bump(&self.ops_rejected, 1);
    }

    pub fn batch_applied(&self, took: Duration) {
        self.batch_latency.record(took);
    }

    pub fn merkle_request(&self, kind: MapKind) {
        bump(&self.merkle_requests[usize::from(kind == MapKind::Or)], 1);
    }

    /// One event's fan-out: the subscribers it was queued for. (Those it closed as slow
    /// consumers are counted by their outboxes, once each.)
    pub fn events(&self, queued: usize) {
        bump(
            &self.events_queued,
            u64::try_from(queued).unwrap_or(u64::MAX),
        );
    }

    /// A connection refused or closed before authenticating, by a label of
    /// [`PREAUTH_REASONS`].
    pub fn preauth_refused(&self, reason: &str) {
        if let Some(at) = PREAUTH_REASONS.iter().position(|r| *r == reason) {
            bump(&self.preauth_refused[at], 1);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let open = u64::try_from(self.connections()).unwrap_or(u64::MAX);
        for (name, kind, help, value) in [
            (
                "topgun_connections",
                "gauge",
                "Open client connections.",
                open,
            ),
            (
                "topgun_active_connections",
                "gauge",
                "Open client connections (the reference server's name for topgun_connections).",
                open,
            ),
            (
                "topgun_connections_total",
                "counter",
                "Client connections accepted.",
                load(&self.connections_total),
            ),
            (
                "topgun_received_bytes_total",
                "counter",
                "Bytes of binary frames received.",
                load(&self.bytes_received),
            ),
            (
                "topgun_sent_bytes_total",
                "counter",
                "Bytes of frames sent.",
                load(&self.bytes_sent),
            ),
            (
                "topgun_auth_failures_total",
                "counter",
                "AUTH_FAIL replies sent.",
                load(&self.auth_failures),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        self.render_labelled(&mut out);
        self.render_preauth(&mut out);
        self.render_held(&mut out);
        out
    }

    /// What the shards hold: OR tombstone bytes and the maps holding keys.
    fn render_held(&self, out: &mut String) {
        let (mut bytes, mut total) = (0u64, 0u64);
        for shard in self.lock_shards().iter() {
            bytes = bytes.saturating_add(shard.tombstone_bytes());
            total = total.saturating_add(shard.tombstoned_total());
        }
        for (name, kind, help, value) in [
            (
                "topgun_ormap_tombstone_bytes",
                "gauge",
                "UTF-8 bytes of the OR-Map tombstone tags this node holds, all maps; falls \
                 when pruning drops them.",
                bytes,
            ),
            (
                "topgun_ormap_tombstone_bytes_total",
                "counter",
                "UTF-8 bytes of OR-Map tombstone tags added since start, starting from what \
                 was recovered.",
                total,
            ),
            (
                "topgun_maps",
                "gauge",
                "Maps holding at least one key (records or tombstones), LWW and OR maps of \
                 one name counted once, reserved maps excluded.",
                self.maps.count(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    fn render_preauth(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP topgun_preauth_connections Connections not yet authenticated.\n\
             # TYPE topgun_preauth_connections gauge\ntopgun_preauth_connections {}\n\
             # HELP topgun_preauth_refused_total Connections refused or closed before \
             authenticating, by reason.\n# TYPE topgun_preauth_refused_total counter",
            self.preauth.as_ref().map_or(0, |p| p.count())
        );
        for (reason, count) in PREAUTH_REASONS.iter().zip(&self.preauth_refused) {
            let _ = writeln!(
                out,
                "topgun_preauth_refused_total{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
    }

    fn render_labelled(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP topgun_messages_received_total Client messages decoded, by type.\n\
             # TYPE topgun_messages_received_total counter"
        );
        for (name, count) in Message::TYPE_NAMES.iter().zip(&self.messages) {
            let value = load(count);
            if value > 0 {
                let _ = writeln!(
                    out,
                    "topgun_messages_received_total{{type=\"{name}\"}} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP topgun_errors_sent_total ERROR replies sent, by code.\n\
             # TYPE topgun_errors_sent_total counter"
        );
        let labels = ERROR_CODES
            .iter()
            .map(ToString::to_string)
            .chain(["other".to_owned()]);
        for (code, count) in labels.zip(&self.errors) {
            let _ = writeln!(
                out,
                "topgun_errors_sent_total{{code=\"{code}\"}} {}",
                load(count)
            );
        }
        self.frame_latency.render(
            out,
            "topgun_frame_seconds",
            "Time to handle one client frame.",
        );
        self.render_data_path(out);
    }

    fn render_data_path(&self, out: &mut String) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // One reading under both names, so that they agree even while ops arrive.
        let ops: Vec<u64> = self.ops.iter().map(load).collect();
        for (name, help) in [
            ("topgun_ops_total", "Ops accepted, by type."),
            (
                "topgun_operations_total",
                "Ops accepted, by type (the reference server's name for topgun_ops_total).",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (kind, count) in OP_KINDS.iter().zip(&ops) {
                let _ = writeln!(out, "{name}{{type=\"{kind}\"}} {count}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP topgun_merkle_requests_total Merkle sync requests, by map kind.\n\
             # TYPE topgun_merkle_requests_total counter\n\
             topgun_merkle_requests_total{{kind=\"lww\"}} {}\n\
             topgun_merkle_requests_total{{kind=\"or\"}} {}",
            load(&self.merkle_requests[0]),
            load(&self.merkle_requests[1]),
        );
        let rejected = load(&self.ops_rejected);
        for (name, help, value) in [
            (
                "topgun_ops_rejected_total",
                "Ops refused with OP_REJECTED.",
                rejected,
            ),
            (
                "topgun_operation_errors_total",
                "Ops refused with OP_REJECTED (the reference server's name for \
                 topgun_ops_rejected_total).",
                rejected,
            ),
            (
                "topgun_events_sent_total",
                "SERVER_EVENTs queued for subscribers.",
                load(&self.events_queued),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        self.batch_latency.render_as(
            out,
            &[
                (
                    "topgun_op_batch_seconds",
                    "Time from receiving an op batch to every shard having applied it.",
                ),
                (
                    "topgun_operation_duration_seconds",
                    "Time from receiving an op batch to every shard having applied it (the \
                     reference server's name for topgun_op_batch_seconds).",
                ),
            ],
        );
        if let Some(log) = &self.log {
            render_log(out, log);
        }
        if let Some(backlog) = &self.backlog {
            render_backlog(out, backlog);
        }
    }
}

fn render_log(out: &mut String, log: &LogStats) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP topgun_wal_bytes Bytes in the write-ahead log's segments, bounded by \
         wal_max_bytes: what the store has yet to take, plus the open segment.\n\
         # TYPE topgun_wal_bytes gauge\ntopgun_wal_bytes {}",
        load(&log.bytes)
    );
    log.syncs.render(
        out,
        "topgun_wal_sync_seconds",
        "Time of one fdatasync of the write-ahead log (one group commit).",
    );
    log.store_writes.render(
        out,
        "topgun_checkpoint_seconds",
        "Time of one checkpoint batch's store write, retries included.",
    );
    let _ = writeln!(
        out,
        "# HELP topgun_checkpoint_entries_total Entries the checkpointer wrote to the store.\n\
         # TYPE topgun_checkpoint_entries_total counter\ntopgun_checkpoint_entries_total {}",
        load(&log.stored_entries)
    );
}

/// Unread pushed output, and connections closed as slow consumers.
fn render_backlog(out: &mut String, backlog: &Backlog) {
    let _ = writeln!(
        out,
        "# HELP topgun_outbound_backlog_bytes Pushed output (events, updates) not yet written to \
         its connection's socket, all connections together (bounded by server_backlog_bytes_max).\n\
         # TYPE topgun_outbound_backlog_bytes gauge\ntopgun_outbound_backlog_bytes {}",
        backlog.used()
    );
    let _ = writeln!(
        out,
        "# HELP topgun_slow_consumer_kicks_total Connections closed because they did not read \
         what they were sent (they reconnect and resync), by reason.\n\
         # TYPE topgun_slow_consumer_kicks_total counter"
    );
    let mut total = 0;
    for reason in KickReason::ALL {
        let kicks = backlog.kicks(reason);
        total += kicks;
        let _ = writeln!(
            out,
            "topgun_slow_consumer_kicks_total{{reason=\"{}\"}} {kicks}",
            reason.as_str()
        );
    }
    let _ = writeln!(
        out,
        "# HELP topgun_outbound_queue_drops_total Connections closed as slow consumers, every \
         reason together (their unread output dropped; they reconnect and resync).\n\
         # TYPE topgun_outbound_queue_drops_total counter\ntopgun_outbound_queue_drops_total {total}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::protocol::messages::ErrorPayload;

    #[test]
    fn renders_counts_by_label() {
        let m = Metrics::default();
        m.connection_opened();
        m.received(100);
        m.message("PING");
        m.message("PING");
        m.message("NOT_A_TYPE");
        let err = Message::Error(ErrorPayload {
            code: 413,
            message: "x".into(),
            details: None,
        });
        m.sent(&err, 20);
        m.sent(
            &Message::Error(ErrorPayload {
                code: 418,
                message: "x".into(),
                details: None,
            }),
            20,
        );
        m.frame_handled(Duration::from_micros(30));
        m.frame_handled(Duration::from_secs(1));
        m.op("PUT");
        m.op("OR_ADD");
        m.op("MERGE");
        m.merkle_request(MapKind::Or);
        m.events(3);
        m.batch_applied(Duration::from_micros(7));
        let backlog = Backlog::new(crate::connection::outbox::BacklogLimits::default());
        let slow = crate::connection::outbox::Outbox::open(1, &backlog, |_| {});
        slow.kick(KickReason::WriteTimeout);
        let m = m.with_backlog(backlog);
        let waiting = Arc::new(Unauthenticated::new(4, 0));
        waiting.admit("127.0.0.1".parse().unwrap()).unwrap();
        let m = m.with_preauth(waiting);
        m.preauth_refused("bytes");
        m.preauth_refused("no-such-reason");
        let text = m.render();
        for line in [
            "topgun_connections 1",
            "topgun_connections_total 1",
            "topgun_received_bytes_total 100",
            "topgun_sent_bytes_total 40",
            "topgun_messages_received_total{type=\"PING\"} 2",
            "topgun_errors_sent_total{code=\"413\"} 1",
            "topgun_errors_sent_total{code=\"other\"} 1",
            "topgun_frame_seconds_bucket{le=\"0.00005\"} 1",
            "topgun_frame_seconds_bucket{le=\"+Inf\"} 2",
            "topgun_frame_seconds_count 2",
            "topgun_ops_total{type=\"PUT\"} 1",
            "topgun_ops_total{type=\"OR_ADD\"} 1",
            "topgun_ops_total{type=\"REMOVE\"} 0",
            "topgun_merkle_requests_total{kind=\"or\"} 1",
            "topgun_events_sent_total 3",
            "topgun_outbound_queue_drops_total 1",
            "topgun_slow_consumer_kicks_total{reason=\"write_timeout\"} 1",
            "topgun_slow_consumer_kicks_total{reason=\"connection_backlog\"} 0",
            "topgun_outbound_backlog_bytes 0",
            "topgun_op_batch_seconds_bucket{le=\"0.00001\"} 1",
            "topgun_preauth_connections 1",
            "topgun_preauth_refused_total{reason=\"bytes\"} 1",
            "topgun_preauth_refused_total{reason=\"connections\"} 0",
            "topgun_active_connections 1",
            "topgun_operations_total{type=\"PUT\"} 1",
            "topgun_operations_total{type=\"REMOVE\"} 0",
            "topgun_operation_errors_total 0",
            "topgun_operation_duration_seconds_bucket{le=\"0.00001\"} 1",
            "topgun_operation_duration_seconds_count 1",
            "topgun_ormap_tombstone_bytes 0",
            "topgun_ormap_tombstone_bytes_total 0",
            "topgun_maps 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("NOT_A_TYPE"));
        m.connection_closed();
        assert_eq!(m.connections(), 0);
    }

    /// The value of the unlabelled sample `name` in `text`.
    fn sample(text: &str, name: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn held_numbers_are_summed_over_the_shards() {
        let m = Metrics::default();
        let (a, b) = (m.register_shard(), m.register_shard());
        a.publish(10, 30);
        b.publish(5, 5);
        m.maps().appeared("todos".into());
        m.maps().appeared("todos".into());
        m.maps().appeared("tags".into());
        let text = m.render();
        assert_eq!(sample(&text, "topgun_ormap_tombstone_bytes"), 15);
        assert_eq!(sample(&text, "topgun_ormap_tombstone_bytes_total"), 35);
        assert_eq!(sample(&text, "topgun_maps"), 2);
        a.publish(0, 30);
        assert_eq!(sample(&m.render(), "topgun_ormap_tombstone_bytes"), 5);
    }

    #[test]
    fn every_family_is_declared_once() {
        let m = Metrics::default();
        m.op("PUT");
        m.op_rejected();
        let text = m.render();
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(seen.insert(line), "declared twice: {line}");
        }
        assert_eq!(sample(&text, "topgun_operation_errors_total"), 1);
        assert_eq!(sample(&text, "topgun_ops_rejected_total"), 1);
    }
}
