//! The server's own durable state — the fencing-token high-water mark and the PN counters —
//! kept as LWW records of reserved maps (PROTOCOL §4.19), so that it travels the same path
//! as client data: the write-ahead log, checkpoints into the store, recovery at start-up,
//! backups. Clients cannot name these maps: every client path refuses `__topgun_` names.
//!
//! | map | key | value |
//! |---|---|---|
//! | `__topgun_locks` | `fencing` | the highest fencing token reserved (an integer) |
//! | `__topgun_counters` | counter name | `{p: {node: total}, n: {node: total}}` |

use std::collections::BTreeMap;

use tokio::sync::oneshot;
use topgun_core::value::ValueMap;
use topgun_core::{LwwRecord, PnCounter, Value};

use crate::clock::ServerClock;
use crate::connection::ConnId;
use crate::data::ops::Write;
use crate::data::shard::service::Request;
use crate::data::shards::{ShardGone, Shards};
use crate::storage::store::{StoredEntry, StoredValue};

pub const LOCKS_MAP: &str = "__topgun_locks";
pub const FENCING_KEY: &str = "fencing";
pub const COUNTERS_MAP: &str = "__topgun_counters";

/// The writer id of the server's own writes (connection ids start at 1).
const INTERNAL_CONN: ConnId = 0;

/// Writes records of the reserved maps through the shards.
#[derive(Debug, Clone)]
pub struct InternalWriter {
    shards: Shards,
    clock: ServerClock,
}

impl InternalWriter {
    pub fn new(shards: Shards, clock: ServerClock) -> Self {
        Self { shards, clock }
    }

    /// A record of `value` stamped now by the server clock. Stamp in the order the values
    /// were produced: the store keeps the record with the greatest stamp, whatever order
    /// the writes reach it in.
    pub fn stamp(&self, value: Value) -> LwwRecord {
        let timestamp = self.clock.now(crate::clock::now_ms());
        LwwRecord::new(value, timestamp, None)
    }

    /// Removes `map`/`key` (a tombstone stamped now); resolves once it is durable.
    pub async fn remove(&self, map: &str, key: &str) -> Result<(), String> {
        let tombstone = LwwRecord::tombstone(self.clock.now(crate::clock::now_ms()));
        self.put(map, key, tombstone).await
    }

    /// Applies `record` under `map`/`key`; resolves once it is durable.
    pub async fn put(&self, map: &str, key: &str, record: LwwRecord) -> Result<(), String> {
        let gone = || ShardGone.to_string();
        let (done, durable) = oneshot::channel();
        let write = Write::Lww {
            key: key.to_owned(),
            record,
        };
        let shard = self.shards.of(key);
        self.shards
            .send(
                shard,
                Request::Apply {
                    conn: INTERNAL_CONN,
                    writes: vec![(map.to_owned(), write)],
                    durable: true,
                    done,
                    applied: None,
                },
            )
            .await
            .map_err(|_| gone())?;
        match durable.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((_, why))) => Err(why),
            Err(_) => Err(gone()),
        }
    }
}

/// The internal state found among the loaded records.
#[derive(Debug, Default)]
pub struct Recovered {
    pub fencing_high: u64,
    pub counters: Vec<(String, PnCounter)>,
}

/// Reads the reserved maps' records out of what storage loaded; a record this server
/// could not have written is skipped with a warning rather than stopping the start-up.
pub fn recover(entries: &[StoredEntry]) -> Recovered {
    let mut out = Recovered::default();
    for entry in entries {
        let StoredValue::Lww(record) = &entry.value else {
            continue;
        };
        match (entry.map.as_str(), entry.key.as_str()) {
            (LOCKS_MAP, FENCING_KEY) => match &record.value {
                Value::Int(n) => out.fencing_high = u64::try_from(*n).unwrap_or(0),
                Value::UInt(n) => out.fencing_high = *n,
                other => tracing::warn!(value = ?other, "ignoring a malformed fencing mark"),
            },
            (COUNTERS_MAP, name) => {
                if let Some(counter) = counter_from_value(&record.value) {
                    out.counters.push((name.to_owned(), counter));
                } else {
                    tracing::warn!(counter = name, "ignoring a malformed stored counter");
                }
            }
            _ => {}
        }
    }
    out
}

/// A counter's stored form: `{p: {node: total}, n: {node: total}}`.
pub fn counter_to_value(counter: &PnCounter) -> Value {
    let totals = |side: &BTreeMap<String, f64>| {
        Value::Map(ValueMap::from_entries(
            side.iter()
                .map(|(node, total)| (node.as_str().into(), Value::Float(*total)))
                .collect(),
        ))
    };
    Value::Map(ValueMap::from_entries(vec![
        ("p".into(), totals(counter.positive())),
        ("n".into(), totals(counter.negative())),
    ]))
}

fn counter_from_value(value: &Value) -> Option<PnCounter> {
    let side = |name: &str| -> Option<BTreeMap<String, f64>> {
        value
            .get(name)?
            .as_map()?
            .iter()
            .map(|(node, total)| Some((node.to_owned(), total.as_f64()?)))
            .collect()
    };
    PnCounter::from_parts(side("p")?, side("n")?).ok()
}

#[cfg(test)]
mod tests {
    use topgun_core::{NodeId, Timestamp};

    use super::*;

    fn entry(map: &str, key: &str, value: Value) -> StoredEntry {
        let at = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        StoredEntry {
            map: map.into(),
            key: key.into(),
            value: StoredValue::Lww(LwwRecord::new(value, at, None)),
        }
    }

    #[test]
    fn internal_state_round_trips_through_records() {
        let mut counter = PnCounter::new();
        counter.add("a", 5.0).unwrap();
        counter.add("b", -2.5).unwrap();
        let recovered = recover(&[
            entry(LOCKS_MAP, FENCING_KEY, Value::Int(4096)),
            entry(COUNTERS_MAP, "likes", counter_to_value(&counter)),
            entry(COUNTERS_MAP, "broken", Value::Str("x".into())),
            entry("todos", "fencing", Value::Int(7)),
        ]);
        assert_eq!(recovered.fencing_high, 4096);
        assert_eq!(recovered.counters, vec![("likes".to_owned(), counter)]);
    }
}
