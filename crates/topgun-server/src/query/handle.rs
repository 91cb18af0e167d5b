//! The live-query task's handle: what shard tasks and connections hold to hand it changes
//! and requests, without ever waiting for it to catch up with writes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::mpsc;
use topgun_core::LwwRecord;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::QuerySub;
use topgun_core::protocol::query::Query;

use crate::connection::ConnId;
use crate::connection::fanout::ConnHandle;
use crate::error::{code, error};
use crate::security::access::fields_used;
use crate::security::policy::Fields;

/// Most live queries one connection may hold by default (`queries_per_connection_max`).
pub const QUERIES_PER_CONNECTION_MAX: usize = 256;
/// Requests waiting for the query task.
const QUEUE_LEN: usize = 1024;

/// A map's records as the shards hold them: key and latest record (tombstones included).
pub type Records = Vec<(String, LwwRecord)>;

/// What the query task is asked to do.
#[derive(Debug)]
pub enum QueryRequest {
    Subscribe {
        conn: ConnHandle,
        query_id: String,
        map: String,
        query: Box<Query>,
        fields: Option<Vec<String>>,
        /// The field limit the subscription was admitted under (`None`: every field).
        allowed: Option<Fields>,
        now_ms: u64,
    },
    Unsubscribe {
        conn: ConnId,
        query_id: String,
    },
    Forget {
        conn: ConnId,
    },
    /// Committed, durable changes of one map by one writer.
    Changed {
        map: String,
        writer: ConnId,
        changes: Records,
    },
    Loaded {
        view: u64,
        records: Option<Records>,
    },
}

/// The handle shards and connections use.
#[derive(Debug, Clone)]
pub struct Queries {
    tx: mpsc::Sender<QueryRequest>,
    watched: Arc<RwLock<HashSet<String>>>,
    /// Maps whose changes could not be handed over (the queue was full).
    lagged: Arc<Mutex<HashSet<String>>>,
    any_lagged: Arc<AtomicBool>,
    /// Wakes the task to shed a lagged map even if no request follows.
    pub(super) wake: Arc<tokio::sync::Notify>,
}

impl Queries {
    /// The handle and the receiver [`run`] serves.
    pub fn channel() -> (Self, mpsc::Receiver<QueryRequest>) {
        Self::with_capacity(QUEUE_LEN)
    }

    /// Like [`Queries::channel`] with a queue of `capacity` requests.
    pub fn with_capacity(capacity: usize) -> (Self, mpsc::Receiver<QueryRequest>) {
        let (tx, rx) = mpsc::channel(capacity);
        let queries = Self {
            tx,
            watched: Arc::default(),
            lagged: Arc::default(),
            any_lagged: Arc::default(),
            wake: Arc::default(),
        };
        (queries, rx)
    }

    /// Hands committed changes over without waiting; if the task's queue is full, marks the
    /// map lagged instead (its live queries will be ended and their connections closed).
    pub fn offer_changed(&self, map: String, writer: ConnId, changes: Records) {
        let request = QueryRequest::Changed {
            map,
            writer,
            changes,
        };
        if let Err(mpsc::error::TrySendError::Full(QueryRequest::Changed { map, .. })) =
            self.tx.try_send(request)
        {
            self.lagged
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(map);
            self.any_lagged.store(true, Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// The maps marked lagged since the last call.
    pub(super) fn take_lagged(&self) -> Vec<String> {
        if !self.any_lagged.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        let mut lagged = self.lagged.lock().unwrap_or_else(PoisonError::into_inner);
        lagged.drain().collect()
    }

    /// Marks whether any live query reads `map` (the query task keeps this up to date).
    pub(super) fn set_watched(&self, map: &str, on: bool) {
        let mut watched = self.watched.write().unwrap_or_else(PoisonError::into_inner);
        if on {
            watched.insert(map.to_owned());
        } else {
            watched.remove(map);
        }
    }

    /// Whether any live query reads `map`.
    pub fn watches(&self, map: &str) -> bool {
        self.watched
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(map)
    }

    /// `QUERY_SUB`, admitted to read the map under `allowed` (`None`: every field): queued
    /// for the task, which answers through the connection's outbox (`QUERY_RESP`, then
    /// `QUERY_UPDATE`s); `Err` is the `ERROR` to answer at once (a reserved map name, or a
    /// query that filters, sorts or groups by a field its reader may not see).
    pub async fn subscribe(
        &self,
        conn: &ConnHandle,
        sub: QuerySub,
        allowed: Option<Fields>,
        now_ms: u64,
    ) -> Result<(), Box<Message>> {
        let map = sub.map_name.to_string();
        let fields = admit(
            &sub.query_id,
            &map,
            &sub.query,
            sub.fields,
            allowed.as_ref(),
        )?;
        let request = QueryRequest::Subscribe {
            conn: conn.clone(),
            query_id: sub.query_id.to_string(),
            map,
            query: Box::new(sub.query),
            fields,
            allowed,
            now_ms,
        };
        self.send(request).await;
        Ok(())
    }

    /// Queues a request; waits while the task's queue is full.
    pub async fn send(&self, request: QueryRequest) {
        // The task outlives every sender but a shutdown race; nothing is owed then.
        let _ = self.tx.send(request).await;
    }
}

/// Admits a query on `map` by a reader limited to `allowed` fields (`None`: all): refused
/// for a reserved map name, or if it filters, sorts or groups by a field its reader may not
/// see; else the fields its rows show (at most those the reader may see).
pub(crate) fn admit(
    query_id: &str,
    map: &str,
    query: &Query,
    fields: Option<Vec<String>>,
    allowed: Option<&Fields>,
) -> Result<Option<Vec<String>>, Box<Message>> {
    crate::data::ops::check_map(map)?;
    let Some(allowed) = allowed else {
        return Ok(fields);
    };
    if let Some(hidden) = fields_used(query)
        .into_iter()
        .find(|f| !allowed.contains(f))
    {
        let why = format!(
            "query {query_id:?}: field {hidden:?} of map {map:?} may not be read, so the query \
             may not filter, sort or group by it"
        );
        return Err(Box::new(error(code::FORBIDDEN, why)));
    }
    Ok(Some(match fields {
        Some(asked) => asked.into_iter().filter(|f| allowed.contains(f)).collect(),
        None => allowed.iter().cloned().collect(),
    }))
}
