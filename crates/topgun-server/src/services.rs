//! Starts the data-plane services — shard tasks, the query, journal, lock and counter tasks —
//! and wires their handles together: the one place that knows who holds whose handle.
//! (Storage starts the log writer and the checkpointer; the server, the listener and GC.)
//! `docs/ARCHITECTURE.md` draws the result.
//!
//! Order matters only where a task needs another's handle: the journal first (shards feed
//! it), the query task's handle (shards offer it changes), then the shards, then what reads
//! or writes through them (the query task, locks, counters).

use std::sync::Arc;

use topgun_core::Hlc;

use crate::clock::ServerClock;
use crate::config::Guards;
use crate::coordination::counters::Counters;
use crate::coordination::internal::{self, InternalWriter};
use crate::coordination::locks::service::Locks;
use crate::coordination::router::Coordinator;
use crate::coordination::topics::Topics;
use crate::data::plane::DataPlane;
use crate::data::shard::Shard;
use crate::data::shard::service::{self as shard_service, Persist};
use crate::data::shards::{Shards, shard_count, shard_of, shard_queue};
use crate::data::sync::SyncPath;
use crate::data::write::WritePath;
use crate::journal::service::Journals;
use crate::journal::{JOURNAL_MAP, JournalEvent, Retention};
use crate::metrics::Metrics;
use crate::query::handle::Queries;
use crate::query::service as query_service;
use crate::security::interceptor::{Interceptor, Pipeline, RateLimiter, ServerTimestamps};
use crate::storage::store::StoredEntry;

/// What the services are started with besides the records.
#[derive(Debug)]
pub struct Settings {
    /// Partition shard tasks (clamped to 1..=271).
    pub shards: usize,
    pub topics_per_connection_max: usize,
    pub guards: Guards,
    /// Interceptors run after the built-in ones (rate limiter, server timestamps).
    pub interceptors: Vec<Arc<dyn Interceptor>>,
    pub journal: Retention,
    /// The journal events storage recovered.
    pub recovered_journal: Vec<JournalEvent>,
    /// This server's node id, named in journal events.
    pub node_id: String,
}

/// Starts every service over `loaded` (the store's entries, then the log's, in order) and
/// returns the data plane that routes to them.
pub fn start(
    settings: Settings,
    mut loaded: Vec<StoredEntry>,
    persist: &Persist,
    hlc: Hlc,
    metrics: Arc<Metrics>,
) -> DataPlane {
    // Journal events are the journal's, never a map's.
    loaded.retain(|e| e.map != JOURNAL_MAP);
    let internal = internal::recover(&loaded);
    let journal = settings.journal.enabled().then(|| {
        Journals::start(
            settings.journal,
            settings.recovered_journal,
            settings.node_id.clone(),
        )
    });
    let (queries, query_requests) = Queries::channel();
    let shards = start_shards(
        settings.shards,
        loaded,
        persist,
        &queries,
        &metrics,
        journal.as_ref(),
    );
    // Set once the member starts, shared by every path that reads or follows maps.
    let cluster = Arc::new(std::sync::OnceLock::new());
    tokio::spawn(query_service::run(
        queries.clone(),
        query_requests,
        query_service::Reads {
            shards: shards.clone(),
            cluster: Arc::clone(&cluster),
        },
        settings.guards.queries_per_connection_max,
    ));
    let clock = ServerClock::new(hlc);
    let internal_writer = InternalWriter::new(shards.clone(), clock.clone());
    let coordination = Coordinator {
        topics: Topics::new(settings.topics_per_connection_max, Arc::clone(&cluster)),
        locks: Locks::start(internal.fencing_high, internal_writer.clone()),
        counters: Counters::start(
            internal.counters,
            internal_writer.clone(),
            Arc::clone(&cluster),
        ),
        journal,
        node_id: settings.node_id,
        metrics: Arc::clone(&metrics),
    };
    let writes = WritePath {
        shards: shards.clone(),
        guards: settings.guards,
        pipeline: pipeline(&settings.guards, settings.interceptors),
        durable_level: persist.level(),
        ack_waits: persist.ack_waits(),
        clock: clock.clone(),
        metrics: Arc::clone(&metrics),
        forward: std::sync::OnceLock::new(),
        cluster: Arc::clone(&cluster),
    };
    let sync = SyncPath {
        shards: shards.clone(),
        clock,
        metrics,
        cluster: Arc::clone(&cluster),
    };
    let plane = DataPlane::new(shards, writes, sync, queries, coordination, internal_writer);
    plane.with_cluster_cell(cluster)
}

/// Loads each shard with its part of `loaded` and starts its task.
fn start_shards(
    count: usize,
    loaded: Vec<StoredEntry>,
    persist: &Persist,
    queries: &Queries,
    metrics: &Arc<Metrics>,
    journal: Option<&Journals>,
) -> Shards {
    let count = shard_count(count);
    let mut parts: Vec<Vec<StoredEntry>> = vec![Vec::new(); count];
    for entry in loaded {
        parts[shard_of(&entry.key, count)].push(entry);
    }
    let queues = parts
        .into_iter()
        .map(|entries| {
            let mut shard = match journal {
                Some(_) => Shard::with_journal(),
                None => Shard::new(),
            };
            shard.load(entries, crate::clock::now_ms());
            // Published before the task starts, so the first scrape sees what was recovered.
            let stats = metrics.register_shard();
            shard_service::publish_tally(&mut shard, &stats, metrics);
            let (tx, rx) = shard_queue();
            tokio::spawn(shard_service::run(
                shard,
                rx,
                persist.clone(),
                queries.clone(),
                Arc::clone(metrics),
                stats,
                journal.map(Journals::feed),
            ));
            tx
        })
        .collect();
    Shards::new(queues)
}

/// The interceptors in their order: the built-ins the guards turn on, then `extra`.
fn pipeline(guards: &Guards, extra: Vec<Arc<dyn Interceptor>>) -> Pipeline {
    let mut stages: Vec<Arc<dyn Interceptor>> = Vec::new();
    if guards.ops_per_sec_per_connection > 0 || guards.ops_per_sec_per_user > 0 {
        stages.push(Arc::new(RateLimiter::new(
            guards.ops_per_sec_per_connection,
            guards.ops_per_sec_per_user,
        )));
    }
    if guards.server_timestamps {
        stages.push(Arc::new(ServerTimestamps));
    }
    stages.extend(extra);
    Pipeline::new(stages)
}
