//! The records of a set of partitions, without I/O: one shard task owns one [`Shard`] and
//! is the only code that touches it, so writes need no locks.
//!
//! Each map is held as an [`ArrivedLww`] (the core LWW rule, each key also knowing when its
//! latest change arrived here, for HTTP sync's deltas) or a core [`OrMap`] over this shard's
//! keys only; its Merkle tree is therefore a *partial* tree whose leaf sums add up with the other shards'
//! to the map's single logical tree (see [`topgun_core::SplitTree`]).
//!
//! Every change that took effect yields the `SERVER_EVENT` subscribers need and the entry
//! the store must keep — and, with the journal on, its journal drafts (the kind of change,
//! the new and previous value); a change that loses its merge yields nothing. The server's
//! own reserved maps are never journaled.
//!
//! The shard is sans I/O: whoever applies a change or loads records says what time it is,
//! and that is the arrival its LWW records get.
//!
//! The shard also keeps its [`Tally`] for `/metrics` (OR tombstone bytes, maps appearing and
//! emptying) as each change is applied: see `tally.rs` for its invariants.

pub mod arrived;
pub mod service;
pub mod tally;

use std::collections::HashMap;

use topgun_core::hash::{fnv1a, partition_id};
use topgun_core::merkle::{MERKLE_DEPTH, Sum};
use topgun_core::protocol::enums::{JournalEventType, ServerEventType};
use topgun_core::protocol::messages::{LeafRecord, ServerEvent};
use topgun_core::{LwwRecord, MerkleError, NodeId, OrMap, OrMapEntry, OrRecord, Timestamp};

use crate::by_name;
use crate::data::ops::{RESERVED_PREFIXES, Write, own_tombstones};
use crate::data::parts::PartSet;
use crate::journal::Draft;
use crate::storage::store::{MapKind, StoredEntry, StoredValue};

pub use arrived::{Arrival, Arrivals, ArrivedLww, Mark, Scan};
pub use tally::{Presence, Tally};

/// The effects of one applied change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub event: ServerEvent,
    pub stored: StoredEntry,
    /// Its journal events (none with the journal off); `recorded_ms` is left for the
    /// caller, who has the clock.
    pub drafts: Vec<Draft>,
}

/// What merging a pushed OR entry changed.
#[derive(Debug, Default)]
pub struct Pushed {
    pub events: Vec<ServerEvent>,
    /// The key's new state, when anything changed.
    pub stored: Option<StoredEntry>,
    pub drafts: Vec<Draft>,
}

/// The maps of one shard.
#[derive(Debug, Default)]
pub struct Shard {
    lww: HashMap<String, ArrivedLww>,
    or: HashMap<String, OrMap>,
    journal: bool,
    tally: Tally,
    /// The latest arrival stamped: arrivals never go back, even when the wall clock does, so
    /// a scan from a time already served cannot miss a later change.
    arrival_ms: u64,
    /// The partitions this shard has held a record of: when a cluster member owns them all,
    /// its answers need no filtering by partition.
    parts: PartSet,
}

fn draft(
    kind: JournalEventType,
    value: Option<&topgun_core::Value>,
    timestamp: &Timestamp,
) -> Draft {
    Draft {
        kind,
        value: value.cloned(),
        previous: None,
        timestamp: timestamp.clone(),
        recorded_ms: 0,
    }
}

/// The journal draft of an OR tombstone: the removed record's value and time when this
/// shard held it, else the time its tag names.
fn removal_draft(removed: Option<&OrRecord>, tag: &str) -> Draft {
    let timestamp = removed.map_or_else(
        || {
            tag.parse().unwrap_or_else(|_| {
                Timestamp::new(0, 0, NodeId::new("unknown").expect("a valid node id"))
            })
        },
        |r| r.timestamp.clone(),
    );
    Draft {
        previous: removed.map(|r| r.value.clone()),
        ..draft(JournalEventType::Delete, None, &timestamp)
    }
}

fn event(map: &str, key: &str, event_type: ServerEventType) -> ServerEvent {
    ServerEvent {
        map_name: map.into(),
        event_type,
        key: key.into(),
        record: None,
        or_record: None,
        or_tag: None,
        epoch: None,
    }
}

impl Shard {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shard that drafts journal events for the changes it applies.
    pub fn with_journal() -> Self {
        Self {
            journal: true,
            ..Self::default()
        }
    }

    fn journals(&self, map: &str) -> bool {
        self.journal && !RESERVED_PREFIXES.iter().any(|p| map.starts_with(p))
    }

    /// The arrival of a change applied at `now_ms`: never before the previous one.
    fn arrival(&mut self, now_ms: u64) -> u64 {
        self.arrival_ms = self.arrival_ms.max(now_ms);
        self.arrival_ms
    }

    /// Applies one validated write to `map`, arrived at `now_ms`.
    pub fn apply(&mut self, map: &str, write: Write, now_ms: u64) -> Option<Change> {
        self.parts.insert(partition_id(write.key()));
        let journals = self.journals(map);
        match write {
            Write::Lww { key, record } => {
                let arrived_ms = self.arrival(now_ms);
                self.apply_lww(map, key, record, arrived_ms)
            }
            Write::OrAdd { key, record } => {
                let mut ev = event(map, &key, ServerEventType::OrAdd);
                ev.or_tag = Some(record.tag.as_str().into());
                ev.or_record = Some(record.clone());
                let drafts = if journals {
                    vec![draft(
                        JournalEventType::Put,
                        Some(&record.value),
                        &record.timestamp,
                    )]
                } else {
                    Vec::new()
                };
                self.with_or(map, |or| {
                    or.apply_record(&key, record)
                        .then(|| or_change(or, map, &key, ev, drafts))
                })
            }
            Write::OrRemove { key, tag } => self.with_or(map, |or| {
                let mut ev = event(map, &key, ServerEventType::OrRemove);
                ev.or_tag = Some(tag.as_str().into());
                let drafts = if journals {
                    let removed = or.records(&key).iter().find(|r| r.tag == tag);
                    vec![removal_draft(removed, &tag)]
                } else {
                    Vec::new()
                };
                or.apply_tombstone(&key, &tag)
                    .then(|| or_change(or, map, &key, ev, drafts))
            }),
        }
    }

    /// Runs `change` on `map`'s OR map (made when missing) and tallies what it did: the
    /// difference in tombstone bytes, and the map starting or ceasing to hold keys. Costs two
    /// reads of the map's own counts; only a map appearing looks further.
    fn with_or<T>(&mut self, map: &str, change: impl FnOnce(&mut OrMap) -> T) -> T {
        let or = by_name::get_or_insert_with(&mut self.or, map, OrMap::default);
        let (was_empty, before) = (or.is_empty(), or.tombstone_bytes());
        let out = change(or);
        let (is_empty, after) = (or.is_empty(), or.tombstone_bytes());
        self.tally.tombstones_moved(before, after);
        if was_empty != is_empty {
            self.kind_presence_changed(map, MapKind::Or, !is_empty);
        }
        out
    }

    /// `map`'s map of `kind` just started (`holds`) or ceased to hold keys: the name as a
    /// whole changed only if its map of the other kind holds none here.
    fn kind_presence_changed(&mut self, map: &str, kind: MapKind, holds: bool) {
        let other_holds = match kind {
            MapKind::Lww => self.or.get(map).is_some_and(|m| !m.is_empty()),
            MapKind::Or => self.lww.get(map).is_some_and(|m| !m.is_empty()),
        };
        if !other_holds {
            self.tally.presence_changed(map, holds);
        }
    }

    /// Whether `map` holds any key here, LWW or OR.
    fn holds(&self, map: &str) -> bool {
        self.lww.get(map).is_some_and(|m| !m.is_empty())
            || self.or.get(map).is_some_and(|m| !m.is_empty())
    }

    /// Every map name holding a key here.
    fn held_names(&self) -> std::collections::HashSet<&str> {
        let lww = self.lww.iter().filter(|(_, m)| !m.is_empty());
        let or = self.or.iter().filter(|(_, m)| !m.is_empty());
        lww.map(|(name, _)| name.as_str())
            .chain(or.map(|(name, _)| name.as_str()))
            .collect()
    }

    /// The sum of every OR map's tombstone bytes: a scan, for loading only.
    fn scanned_tombstone_bytes(&self) -> usize {
        self.or.values().map(OrMap::tombstone_bytes).sum()
    }

    /// What this shard holds, in the numbers `/metrics` reports.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The maps that appeared or emptied here since the last call (see [`Tally`]).
    pub fn take_presence(&mut self) -> Vec<Presence> {
        self.tally.take_presence()
    }

    fn apply_lww(
        &mut self,
        map: &str,
        key: String,
        record: LwwRecord,
        arrived_ms: u64,
    ) -> Option<Change> {
        let journals = self.journals(map);
        let lww = by_name::get_or_insert_with(&mut self.lww, map, ArrivedLww::default);
        let was_empty = lww.is_empty();
        let mut previous = None;
        let merged = lww.merge_seeing(&key, record.clone(), arrived_ms, |stored| {
            if journals && !stored.is_tombstone() {
                previous = Some(stored.value.clone());
            }
        });
        if !merged {
            return None;
        }
        if was_empty {
            self.kind_presence_changed(map, MapKind::Lww, true);
        }
        let event_type = if record.is_tombstone() {
            ServerEventType::Remove
        } else {
            ServerEventType::Put
        };
        let drafts = if journals {
            let (kind, value) = match (record.is_tombstone(), &previous) {
                (true, _) => (JournalEventType::Delete, None),
                (false, None) => (JournalEventType::Put, Some(&record.value)),
                (false, Some(_)) => (JournalEventType::Update, Some(&record.value)),
            };
            vec![Draft {
                previous,
                ..draft(kind, value, &record.timestamp)
            }]
        } else {
            Vec::new()
        };
        let mut ev = event(map, &key, event_type);
        ev.record = Some(record.clone());
        Some(Change {
            event: ev,
            stored: StoredEntry {
                map: map.to_owned(),
                key,
                value: StoredValue::Lww(record),
            },
            drafts,
        })
    }

    /// Merges an OR entry pushed by a client (`ORMAP_PUSH_DIFF`): its own tombstones first,
    /// then its records. Returns one event per tombstone or record that was new here, and
    /// the key's new state for the store once (`None` when nothing changed).
    pub fn push_or_entry(&mut self, map: &str, entry: OrMapEntry) -> Pushed {
        self.parts.insert(partition_id(&entry.key));
        let journals = self.journals(map);
        self.with_or(map, |or| push_into(or, map, entry, journals))
    }

    /// The non-empty partial leaf sums of `map` under `path`.
    pub fn leaf_sums(
        &self,
        kind: MapKind,
        map: &str,
        path: &str,
    ) -> Result<Vec<(u16, Sum)>, MerkleError> {
        let empty = topgun_core::MerkleTree::<()>::new();
        match kind {
            MapKind::Lww => self
                .lww
                .get(map)
                .map_or_else(|| empty.leaf_sums(path), |t| t.leaf_sums(path)),
            MapKind::Or => self
                .or
                .get(map)
                .map_or_else(|| empty.leaf_sums(path), |m| m.merkle().leaf_sums(path)),
        }
    }

    /// [`Shard::leaf_sums`] over the keys of the `owned` partitions only (`None`: all).
    pub fn owned_leaf_sums(
        &self,
        kind: MapKind,
        map: &str,
        path: &str,
        owned: Option<&PartSet>,
    ) -> Result<Vec<(u16, Sum)>, MerkleError> {
        let Some(owned) = owned.filter(|o| !self.parts.is_subset(o)) else {
            return self.leaf_sums(kind, map, path);
        };
        let keep = |key: &str| owned.holds_key(key);
        match kind {
            MapKind::Lww => self
                .lww
                .get(map)
                .map_or_else(|| Ok(Vec::new()), |t| t.leaf_sums_where(path, keep)),
            MapKind::Or => self.or.get(map).map_or_else(
                || Ok(Vec::new()),
                |m| m.merkle().leaf_sums_where(path, keep),
            ),
        }
    }

    /// Every LWW record (tombstones included) this shard holds in the leaf at `path`.
    pub fn lww_leaf(&self, map: &str, path: &str) -> Result<Vec<LeafRecord>, MerkleError> {
        let Some(lww) = self.lww.get(map) else {
            return Ok(Vec::new());
        };
        Ok(lww
            .bucket(path)?
            .map(|(key, record)| LeafRecord {
                key: key.into(),
                record: record.clone(),
            })
            .collect())
    }

    /// Each client map this shard holds with its keys that have a live value (LWW records
    /// that are not tombstones, OR keys with at least one record), LWW and OR maps of a name
    /// summed; reserved maps left out (the admin API's maps catalog).
    pub fn live_counts(&self, now_ms: u64, owned: Option<&PartSet>) -> Vec<(String, usize)> {
        let ours = |key: &str| owned.is_none_or(|o| o.holds_key(key));
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for (name, map) in &self.lww {
            let live = map.records();
            let live = live
                .filter(|(k, r)| r.is_visible(now_ms) && ours(k))
                .count();
            *counts.entry(name).or_default() += live;
        }
        for (name, map) in &self.or {
            let live = map.keys().filter(|k| !map.records(k).is_empty() && ours(k));
            *counts.entry(name).or_default() += live.count();
        }
        counts
            .into_iter()
            .filter(|(name, _)| !name.starts_with("_topgun_") && !name.starts_with("__topgun_"))
            .map(|(name, n)| (name.to_owned(), n))
            .collect()
    }

    /// The keys of `map` whose live value holds `attribute` (a field name, else a dotted
    /// path into nested maps; nil counts as absent): LWW records that are not tombstones, OR
    /// keys with such a record. The admin API's index catalog shows it as `entryCount`.
    pub fn attribute_count(
        &self,
        map: &str,
        attribute: &str,
        now_ms: u64,
        owned: Option<&PartSet>,
    ) -> usize {
        let ours = |key: &str| owned.is_none_or(|o| o.holds_key(key));
        let has = |value: &topgun_core::Value| {
            value
                .get(attribute)
                .or_else(|| {
                    let mut path = attribute.split('.');
                    let first = value.get(path.next()?);
                    path.try_fold(first?, |v, name| v.get(name))
                })
                .is_some_and(|v| !matches!(v, topgun_core::Value::Nil))
        };
        let lww = self.lww.get(map).map_or(0, |m| {
            m.records()
                .filter(|(k, r)| r.is_visible(now_ms) && has(&r.value) && ours(k))
                .count()
        });
        let or = self.or.get(map).map_or(0, |m| {
            m.keys()
                .filter(|k| ours(k) && m.records(k).iter().any(|r| has(&r.value)))
                .count()
        });
        lww + or
    }

    /// Every LWW record of a map this shard holds (tombstones included): a live query's
    /// snapshot.
    pub fn lww_records(&self, map: &str) -> Vec<(String, LwwRecord)> {
        self.lww.get(map).map_or_else(Vec::new, |lww| {
            lww.records()
                .map(|(key, record)| (key.to_owned(), record.clone()))
                .collect()
        })
    }

    /// The LWW records (tombstones included) whose timestamp is at or after `since_ms` (of
    /// the `owned` partitions only, when given), each with the index of its leaf: what changed since a client's last sync, for a client
    /// whose clock agrees with ours. Stops, returning `None`, past `max` records (a delta
    /// that large is better served by the Merkle walk).
    pub fn lww_since(
        &self,
        map: &str,
        since_ms: u64,
        max: usize,
        owned: Option<&PartSet>,
    ) -> Option<Vec<(u16, LeafRecord)>> {
        let Some(lww) = self.lww.get(map) else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        for (key, record) in lww.records() {
            if record.timestamp.millis < since_ms || owned.is_some_and(|o| !o.holds_key(key)) {
                continue;
            }
            if out.len() == max {
                return None;
            }
            let leaf = u16::try_from(fnv1a(key) >> (32 - 4 * MERKLE_DEPTH)).unwrap_or(0);
            let record = LeafRecord {
                key: key.into(),
                record: record.clone(),
            };
            out.push((leaf, record));
        }
        Some(out)
    }

    /// The LWW records (tombstones included) of `map` that `scan` asks for: HTTP sync's
    /// deltas, which must not miss a late write stamped with an old HLC time (see
    /// [`ArrivedLww`]).
    pub fn lww_arrived_since(&self, map: &str, scan: &Scan) -> Arrivals {
        self.lww
            .get(map)
            .map_or_else(Arrivals::default, |lww| lww.arrived_since(scan))
    }

    /// Every change applied from now on arrives after `ms`, whatever the wall clock says: so
    /// a client told that it has everything up to a scan's start has it. Called in the same
    /// step as the scan.
    pub fn arrive_after(&mut self, ms: u64) {
        self.arrival_ms = self.arrival_ms.max(ms.saturating_add(1));
    }

    /// Every OR entry this shard holds in the leaf at `path`.
    pub fn or_leaf(&self, map: &str, path: &str) -> Result<Vec<OrMapEntry>, MerkleError> {
        let Some(or) = self.or.get(map) else {
            return Ok(Vec::new());
        };
        Ok(or
            .merkle()
            .keys_in_bucket(path)?
            .into_iter()
            .filter_map(|key| or.entry(key))
            .collect())
    }

    /// The OR entries of `keys`; a key this shard does not hold has an empty entry.
    pub fn or_entries(&self, map: &str, keys: &[String]) -> Vec<OrMapEntry> {
        let or = self.or.get(map);
        keys.iter()
            .map(|key| {
                or.and_then(|or| or.entry(key))
                    .unwrap_or_else(|| OrMapEntry {
                        key: key.clone(),
                        ..OrMapEntry::default()
                    })
            })
            .collect()
    }

    /// Every key's state, as the store keeps it (for backups).
    pub fn dump(&self) -> Vec<StoredEntry> {
        let mut out = Vec::new();
        for (map, lww) in &self.lww {
            out.extend(lww.records().map(|(key, record)| StoredEntry {
                map: map.clone(),
                key: key.to_owned(),
                value: StoredValue::Lww(record.clone()),
            }));
        }
        for (map, or) in &self.or {
            out.extend(
                or.keys()
                    .filter_map(|key| or.entry(key))
                    .map(|entry| StoredEntry {
                        map: map.clone(),
                        key: entry.key,
                        value: StoredValue::Or {
                            records: entry.records,
                            tombstones: entry.tombstones,
                        },
                    }),
            );
        }
        out
    }

    /// Restores entries read back from the store, then the log, in that order, and tallies
    /// what was recovered (a scan: this is start-up). Arrivals are memory only: every
    /// recovered LWW record counts as arrived at `now_ms`, so HTTP sync clients get one full
    /// resend after a restart rather than missing what changed while they were away.
    ///
    /// An OR entry is its key's whole state when it was written, so the last one read is the
    /// key's state: it replaces what came before rather than merging with it (a merge would
    /// bring back the tombstones a prune logged after the store last took the key).
    pub fn load(&mut self, entries: Vec<StoredEntry>, now_ms: u64) {
        let held: std::collections::HashSet<String> =
            self.held_names().into_iter().map(str::to_owned).collect();
        let tombstones_before = self.scanned_tombstone_bytes();
        let arrived_ms = self.arrival(now_ms);
        for entry in &entries {
            self.parts.insert(partition_id(&entry.key));
        }
        self.load_entries(entries, arrived_ms);
        let tombstones_after = self.scanned_tombstone_bytes();
        self.tally
            .tombstones_moved(tombstones_before, tombstones_after);
        let now_held = self.held_names();
        let appeared: Vec<String> = now_held
            .iter()
            .filter(|name| !held.contains(**name))
            .map(|name| (*name).to_owned())
            .collect();
        let emptied: Vec<String> = held
            .into_iter()
            .filter(|name| !now_held.contains(name.as_str()))
            .collect();
        for name in appeared {
            self.tally.presence_changed(&name, true);
        }
        for name in emptied {
            self.tally.presence_changed(&name, false);
        }
    }

    fn load_entries(&mut self, entries: Vec<StoredEntry>, arrived_ms: u64) {
        for e in entries {
            match e.value {
                StoredValue::Lww(record) => {
                    let lww = self.lww.entry(e.map).or_default();
                    lww.merge_seeing(&e.key, record, arrived_ms, |_| {});
                }
                StoredValue::Or {
                    records,
                    tombstones,
                } => {
                    let or = self.or.entry(e.map).or_default();
                    or.forget(&e.key);
                    or.merge_key(OrMapEntry {
                        key: e.key,
                        records,
                        tombstones,
                    });
                }
                StoredValue::Gone(MapKind::Lww) => {
                    if let Some(lww) = self.lww.get_mut(&e.map) {
                        lww.forget(&e.key);
                    }
                }
                StoredValue::Gone(MapKind::Or) => {
                    if let Some(or) = self.or.get_mut(&e.map) {
                        or.forget(&e.key);
                    }
                }
            }
        }
    }

    /// Forgets tombstones older than `older_than` (every replica has been told to do the
    /// same); returns what the store must record: LWW keys gone, OR keys' new states (or
    /// gone, when nothing is left).
    pub fn prune(&mut self, older_than: &topgun_core::Timestamp) -> Vec<StoredEntry> {
        let mut out = Vec::new();
        // Maps this prune left without keys (of one kind): the name may be gone as a whole.
        let mut emptied = Vec::new();
        for (map, lww) in &mut self.lww {
            let pruned = lww.prune(older_than);
            if !pruned.is_empty() && lww.is_empty() {
                emptied.push(map.clone());
            }
            out.extend(pruned.into_iter().map(|key| StoredEntry {
                map: map.clone(),
                key,
                value: StoredValue::Gone(MapKind::Lww),
            }));
        }
        for (map, or) in &mut self.or {
            let before = or.tombstone_bytes();
            let mut keys: Vec<String> = or.prune(older_than).into_iter().map(|(k, _)| k).collect();
            self.tally.tombstones_moved(before, or.tombstone_bytes());
            if !keys.is_empty() && or.is_empty() {
                emptied.push(map.clone());
            }
            keys.dedup();
            out.extend(keys.into_iter().map(|key| {
                let value = match or.entry(&key) {
                    Some(entry) => StoredValue::Or {
                        records: entry.records,
                        tombstones: entry.tombstones,
                    },
                    None => StoredValue::Gone(MapKind::Or),
                };
                StoredEntry {
                    map: map.clone(),
                    key,
                    value,
                }
            }));
        }
        emptied.sort_unstable();
        emptied.dedup();
        for map in emptied {
            if !self.holds(&map) {
                self.tally.presence_changed(&map, false);
            }
        }
        out
    }
}

/// [`Shard::push_or_entry`] on the map itself.
fn push_into(or: &mut OrMap, map: &str, entry: OrMapEntry, journals: bool) -> Pushed {
    let key = entry.key;
    let tombstones = own_tombstones(
        entry.tombstones,
        |tag| or.records(&key).iter().any(|r| r.tag == tag),
        &entry.records,
    );
    let mut pushed = Pushed::default();
    for tag in tombstones {
        let removed = journals
            .then(|| or.records(&key).iter().find(|r| r.tag == tag).cloned())
            .flatten();
        if or.apply_tombstone(&key, &tag) {
            if journals {
                pushed.drafts.push(removal_draft(removed.as_ref(), &tag));
            }
            let mut ev = event(map, &key, ServerEventType::OrRemove);
            ev.or_tag = Some(tag.into());
            pushed.events.push(ev);
        }
    }
    for record in entry.records {
        let mut ev = event(map, &key, ServerEventType::OrAdd);
        ev.or_tag = Some(record.tag.as_str().into());
        ev.or_record = Some(record.clone());
        let added = journals.then(|| {
            draft(
                JournalEventType::Put,
                Some(&record.value),
                &record.timestamp,
            )
        });
        if or.apply_record(&key, record) {
            pushed.events.extend(Some(ev));
            pushed.drafts.extend(added);
        }
    }
    if !pushed.events.is_empty() {
        pushed.stored = Some(or_stored(or, map, &key));
    }
    pushed
}

/// The change for an OR event: the key's whole state is what the store keeps.
fn or_change(or: &OrMap, map: &str, key: &str, event: ServerEvent, drafts: Vec<Draft>) -> Change {
    Change {
        event,
        stored: or_stored(or, map, key),
        drafts,
    }
}

/// An OR key's state as the store keeps it.
fn or_stored(or: &OrMap, map: &str, key: &str) -> StoredEntry {
    let entry = or.entry(key).unwrap_or_default();
    StoredEntry {
        map: map.to_owned(),
        key: key.to_owned(),
        value: StoredValue::Or {
            records: entry.records,
            tombstones: entry.tombstones,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time changes arrive at, unless a test says otherwise.
    const NOW: u64 = 1_000;
    use topgun_core::{NodeId, OrRecord, Timestamp, Value};

    fn ts(millis: u64, node: &str) -> Timestamp {
        Timestamp::new(millis, 0, NodeId::new(node).unwrap())
    }

    fn put(key: &str, value: i64, millis: u64) -> Write {
        Write::Lww {
            key: key.into(),
            record: LwwRecord::new(Value::Int(value), ts(millis, "a"), None),
        }
    }

    fn tags(records: &[OrRecord]) -> Vec<&str> {
        records.iter().map(|r| r.tag.as_str()).collect()
    }

    fn add(value: &str, millis: u64) -> OrRecord {
        let timestamp = ts(millis, "a");
        OrRecord {
            value: Value::Str(value.into()),
            tag: timestamp.to_string(),
            timestamp,
            ttl_ms: None,
        }
    }

    /// A member still holding records of partitions it gave away sums only those it owns:
    /// the same sums as a shard that never held the others.
    #[test]
    fn owned_leaf_sums_leave_out_partitions_not_owned() {
        let (mut all, mut kept) = (Shard::new(), Shard::new());
        let mut owned = PartSet::default();
        for pid in (0..271).step_by(3) {
            owned.insert(pid);
        }
        for i in 0..400 {
            let key = format!("k{i}");
            all.apply("m", put(&key, i, 5), NOW);
            all.apply(
                "o",
                Write::OrAdd {
                    key: key.clone(),
                    record: add("v", 5),
                },
                NOW,
            );
            if owned.holds_key(&key) {
                kept.apply("m", put(&key, i, 5), NOW);
                kept.apply(
                    "o",
                    Write::OrAdd {
                        key: key.clone(),
                        record: add("v", 5),
                    },
                    NOW,
                );
            }
        }
        for (kind, map) in [(MapKind::Lww, "m"), (MapKind::Or, "o")] {
            for path in ["", "8"] {
                let filtered = all.owned_leaf_sums(kind, map, path, Some(&owned)).unwrap();
                assert_eq!(filtered, kept.leaf_sums(kind, map, path).unwrap());
            }
            let everything = all.owned_leaf_sums(kind, map, "", Some(&PartSet::all()));
            assert_eq!(everything.unwrap(), all.leaf_sums(kind, map, "").unwrap());
            assert_eq!(
                all.owned_leaf_sums(kind, map, "", None).unwrap(),
                all.leaf_sums(kind, map, "").unwrap()
            );
        }
        assert_ne!(
            all.leaf_sums(MapKind::Lww, "m", "").unwrap(),
            kept.leaf_sums(MapKind::Lww, "m", "").unwrap()
        );
    }

    #[test]
    fn lww_writes_merge_by_timestamp_and_emit_only_winners() {
        let mut shard = Shard::new();
        let first = shard.apply("m", put("k", 1, 20), NOW).unwrap();
        assert_eq!(first.event.event_type, ServerEventType::Put);
        assert!(
            shard.apply("m", put("k", 2, 10), NOW).is_none(),
            "older loses"
        );
        let tombstone = Write::Lww {
            key: "k".into(),
            record: LwwRecord::tombstone(ts(30, "b")),
        };
        let removed = shard.apply("m", tombstone, NOW).unwrap();
        assert_eq!(removed.event.event_type, ServerEventType::Remove);
        assert!(removed.event.record.unwrap().is_tombstone());
        let leaf = shard.lww_leaf("m", &topgun_core::hash::routing_path("k")[..3]);
        assert_eq!(leaf.unwrap().len(), 1, "the tombstone is kept and served");
    }

    #[test]
    fn changes_since_a_time_come_with_their_leaf_and_stop_at_the_bound() {
        let mut shard = Shard::new();
        for (key, millis) in [("old", 10), ("new", 20), ("newer", 30)] {
            shard.apply("m", put(key, 1, millis), NOW).unwrap();
        }
        let mut since = shard.lww_since("m", 20, 10, None).unwrap();
        since.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        let keys: Vec<_> = since.iter().map(|(_, r)| r.key.as_str()).collect();
        assert_eq!(keys, ["new", "newer"], "at or after the time");
        let leaf = u16::from_str_radix(&topgun_core::hash::routing_path("new")[..3], 16);
        assert_eq!(since[0].0, leaf.unwrap());
        assert!(
            shard.lww_since("m", 0, 2, None).is_none(),
            "three records, at most two"
        );
        assert_eq!(shard.lww_since("other", 0, 2, None), Some(Vec::new()));
        // Records of partitions not owned neither count towards the bound nor come back.
        let mut owned = PartSet::default();
        owned.insert(topgun_core::hash::partition_id("newer"));
        let mine = shard
            .lww_since("m", 0, 1, Some(&owned))
            .expect("one owned record");
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].1.key, "newer");
    }

    /// `(arrival, key)` of each record of a scan.
    fn arrivals(shard: &mut Shard, since_ms: u64, max: usize) -> (Vec<(u64, String)>, bool) {
        let scan = shard.lww_arrived_since("m", &Scan::from(Mark::at(since_ms), max));
        let keys = scan.records.iter().map(|a| (a.arrived_ms, a.key.clone()));
        (keys.collect(), scan.truncated)
    }

    fn owned(records: &[(u64, &str)]) -> Vec<(u64, String)> {
        records.iter().map(|(t, k)| (*t, (*k).to_owned())).collect()
    }

    /// `records` in a scan's order: by arrival, then by tie.
    fn in_scan_order(records: &[(u64, &str)]) -> Vec<(u64, String)> {
        let mut records = owned(records);
        records.sort_by_key(|(ms, key)| (*ms, arrived::tie_of(key), key.clone()));
        records
    }

    #[test]
    fn a_write_arrives_when_applied_whatever_its_hlc_time() {
        let mut shard = Shard::new();
        shard.apply("m", put("new", 1, 900), 1_000);
        // Written offline long ago, arriving now: by HLC time it is older than "new".
        shard.apply("m", put("late", 1, 5), 2_000);
        let (records, truncated) = arrivals(&mut shard, 1_500, 10);
        assert_eq!(records, owned(&[(2_000, "late")]));
        assert!(!truncated);
        assert_eq!(
            shard.lww_since("m", 1_500, 10, None),
            Some(Vec::new()),
            "a scan by HLC time misses it"
        );
        // A losing write changes nothing, its arrival included.
        assert!(shard.apply("m", put("new", 2, 800), 3_000).is_none());
        let (records, _) = arrivals(&mut shard, 0, 10);
        assert_eq!(records, owned(&[(1_000, "new"), (2_000, "late")]));
        // A tombstone is a change: it arrives too, and is served.
        let gone = Write::Lww {
            key: "new".into(),
            record: LwwRecord::tombstone(ts(950, "b")),
        };
        shard.apply("m", gone, 4_000).unwrap();
        let scan = shard.lww_arrived_since("m", &Scan::from(Mark::at(4_000), 10));
        assert!(scan.records[0].record.is_tombstone());
        let other = shard.lww_arrived_since("other", &Scan::from(Mark::at(0), 10));
        assert!(other.records.is_empty());
    }

    #[test]
    fn arrivals_never_go_back_when_the_clock_does() {
        let mut shard = Shard::new();
        shard.apply("m", put("a", 1, 1), 5_000);
        shard.apply("m", put("b", 1, 2), 4_000);
        let (records, _) = arrivals(&mut shard, 5_000, 10);
        assert_eq!(records, in_scan_order(&[(5_000, "a"), (5_000, "b")]));
    }

    /// A change applied after a scan arrives after the scan's start, even within the same
    /// millisecond: a client told it has everything up to the scan's start misses nothing.
    #[test]
    fn a_change_after_a_scan_arrives_after_its_start() {
        let mut shard = Shard::new();
        shard.apply("m", put("a", 1, 1), 5_000);
        shard.arrive_after(5_000);
        shard.apply("m", put("b", 1, 2), 5_000);
        let (records, _) = arrivals(&mut shard, 5_001, 10);
        assert_eq!(records, owned(&[(5_001, "b")]));
    }

    #[test]
    fn a_scan_is_by_arrival_then_tie_and_cut_at_its_bound() {
        let mut shard = Shard::new();
        for (key, at) in [("z", 2_000), ("c", 3_000), ("b", 3_000), ("a", 4_000)] {
            shard.apply("m", put(key, 1, 1), at);
        }
        let (records, truncated) = arrivals(&mut shard, 0, 10);
        let all = in_scan_order(&[(2_000, "z"), (3_000, "b"), (3_000, "c"), (4_000, "a")]);
        assert_eq!(records, all);
        assert!(!truncated);
        let cut = shard.lww_arrived_since("m", &Scan::from(Mark::at(0), 2));
        assert!(cut.truncated);
        assert_eq!(cut.last().map(|m| m.ms), Some(3_000));
        assert_eq!(
            arrivals(&mut shard, 0, 2).0,
            all[..2],
            "the earliest arrivals"
        );
        let (records, truncated) = arrivals(&mut shard, 0, 4);
        assert!(!truncated, "exactly the bound is whole");
        assert_eq!(records.len(), 4);
    }

    #[test]
    fn the_overlap_sends_the_second_before_the_last_sync_again() {
        let mut shard = Shard::new();
        shard.apply("m", put("before", 1, 1), 8_999);
        shard.apply("m", put("inside", 1, 1), 9_500);
        shard.apply("m", put("after", 1, 1), 10_000);
        let last = topgun_core::protocol::http::SyncSince {
            millis: 10_000,
            counter: 0,
            node_id: "".into(),
        };
        let from = crate::data::deltas::resume_from(&last, "me");
        let scan = shard.lww_arrived_since("m", &Scan::from(from, 10));
        let records: Vec<_> = scan
            .records
            .iter()
            .map(|a| (a.arrived_ms, a.key.clone()))
            .collect();
        assert_eq!(records, owned(&[(9_500, "inside"), (10_000, "after")]));
    }

    #[test]
    fn recovered_records_arrive_at_load_time_and_pruned_ones_leave() {
        let mut shard = Shard::new();
        let live = shard.apply("m", put("live", 1, 5), 100).unwrap().stored;
        let tombstone = Write::Lww {
            key: "dead".into(),
            record: LwwRecord::tombstone(ts(6, "a")),
        };
        let dead = shard.apply("m", tombstone, 200).unwrap().stored;
        let mut restarted = Shard::new();
        restarted.load(vec![live, dead], 7_000);
        let (records, _) = arrivals(&mut restarted, 7_000, 10);
        assert_eq!(records, in_scan_order(&[(7_000, "dead"), (7_000, "live")]));
        restarted.apply("m", put("next", 1, 7), 6_000);
        assert_eq!(
            arrivals(&mut restarted, 7_000, 10).0.len(),
            3,
            "later changes arrive no earlier than the load"
        );
        restarted.prune(&ts(100, "z"));
        let (records, _) = arrivals(&mut restarted, 0, 10);
        assert_eq!(records, in_scan_order(&[(7_000, "live"), (7_000, "next")]));
    }

    #[test]
    fn or_adds_and_removes_keep_tags() {
        let mut shard = Shard::new();
        let record = add("x", 5);
        let tag = record.tag.clone();
        let added = shard
            .apply(
                "m",
                Write::OrAdd {
                    key: "k".into(),
                    record,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(added.event.or_tag.as_deref(), Some(tag.as_str()));
        let remove = Write::OrRemove {
            key: "k".into(),
            tag: tag.clone(),
        };
        let removed = shard.apply("m", remove.clone(), NOW).unwrap();
        assert_eq!(
            removed.stored.value,
            StoredValue::Or {
                records: vec![],
                tombstones: vec![tag]
            }
        );
        assert!(shard.apply("m", remove, NOW).is_none(), "idempotent");
    }

    #[test]
    fn journal_drafts_say_what_changed() {
        use JournalEventType::{Delete, Put, Update};
        let kinds = |c: &Change| -> Vec<(JournalEventType, Option<Value>, Option<Value>)> {
            c.drafts
                .iter()
                .map(|d| (d.kind, d.value.clone(), d.previous.clone()))
                .collect()
        };
        let mut shard = Shard::with_journal();
        let first = shard.apply("m", put("k", 1, 20), NOW).unwrap();
        assert_eq!(kinds(&first), vec![(Put, Some(Value::Int(1)), None)]);
        assert_eq!(first.drafts[0].timestamp, ts(20, "a"));
        let second = shard.apply("m", put("k", 2, 30), NOW).unwrap();
        assert_eq!(
            kinds(&second),
            vec![(Update, Some(Value::Int(2)), Some(Value::Int(1)))]
        );
        let tombstone = Write::Lww {
            key: "k".into(),
            record: LwwRecord::tombstone(ts(40, "b")),
        };
        let removed = shard.apply("m", tombstone, NOW).unwrap();
        assert_eq!(kinds(&removed), vec![(Delete, None, Some(Value::Int(2)))]);
        let again = shard.apply("m", put("k", 3, 50), NOW).unwrap();
        assert_eq!(
            kinds(&again)[0].0,
            Put,
            "after a delete, a put is new again"
        );

        let record = add("x", 5);
        let tag = record.tag.clone();
        let added = shard
            .apply(
                "o",
                Write::OrAdd {
                    key: "k".into(),
                    record,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(
            kinds(&added),
            vec![(Put, Some(Value::Str("x".into())), None)]
        );
        let gone = shard
            .apply(
                "o",
                Write::OrRemove {
                    key: "k".into(),
                    tag,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(
            kinds(&gone),
            vec![(Delete, None, Some(Value::Str("x".into())))]
        );

        let internal = shard
            .apply("__topgun_counters", put("c", 1, 60), NOW)
            .unwrap();
        assert!(
            internal.drafts.is_empty(),
            "reserved maps are not journaled"
        );
        let plain = Shard::new().apply("m", put("k", 1, 20), NOW).unwrap();
        assert!(plain.drafts.is_empty(), "no journal, no drafts");
    }

    #[test]
    fn pushed_entries_merge_and_report_what_was_new() {
        let mut shard = Shard::new();
        let old = add("old", 1);
        shard.apply(
            "m",
            Write::OrAdd {
                key: "k".into(),
                record: old.clone(),
            },
            NOW,
        );
        let entry = OrMapEntry {
            key: "k".into(),
            records: vec![add("new", 2)],
            tombstones: vec![old.tag.clone(), "9:0:other-key".into()],
        };
        let Pushed { events, stored, .. } = shard.push_or_entry("m", entry);
        let kinds: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert!(stored.is_some(), "the key's new state is stored once");
        assert_eq!(
            kinds,
            vec![ServerEventType::OrRemove, ServerEventType::OrAdd]
        );
        let [entry] = &shard.or_entries("m", &["k".into()])[..] else {
            panic!()
        };
        assert_eq!(tags(&entry.records), vec!["2:0:a"]);
        assert_eq!(
            entry.tombstones,
            vec![old.tag],
            "foreign tombstones dropped"
        );
    }

    #[test]
    fn pruning_forgets_old_tombstones_and_replays() {
        let mut shard = Shard::new();
        let mut log = Vec::new();
        log.push(shard.apply("m", put("old", 1, 5), NOW).unwrap().stored);
        let tombstone = Write::Lww {
            key: "old".into(),
            record: LwwRecord::tombstone(ts(6, "a")),
        };
        log.push(shard.apply("m", tombstone, NOW).unwrap().stored);
        log.push(shard.apply("m", put("live", 2, 5), NOW).unwrap().stored);
        let x = add("x", 1);
        let remove = Write::OrRemove {
            key: "set".into(),
            tag: x.tag.clone(),
        };
        log.push(
            shard
                .apply(
                    "m",
                    Write::OrAdd {
                        key: "set".into(),
                        record: x,
                    },
                    NOW,
                )
                .unwrap()
                .stored,
        );
        log.push(shard.apply("m", remove, NOW).unwrap().stored);
        let pruned = shard.prune(&ts(100, "z"));
        assert_eq!(
            pruned
                .iter()
                .map(|e| (e.key.as_str(), e.value.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("old", StoredValue::Gone(MapKind::Lww)),
                ("set", StoredValue::Gone(MapKind::Or)),
            ]
        );
        assert_eq!(shard.dump().len(), 1, "only the live record is left");
        // Replaying the log with the prune gives the same state.
        let mut replayed = Shard::new();
        log.extend(pruned);
        replayed.load(log, NOW);
        assert_eq!(replayed.dump(), shard.dump());
        assert_eq!(
            replayed.leaf_sums(MapKind::Lww, "m", "").unwrap(),
            shard.leaf_sums(MapKind::Lww, "m", "").unwrap()
        );
    }

    #[test]
    fn partial_leaf_sums_and_loading() {
        let mut shard = Shard::new();
        let change = shard.apply("m", put("k", 1, 5), NOW).unwrap();
        let sums = shard.leaf_sums(MapKind::Lww, "m", "").unwrap();
        assert_eq!(sums.len(), 1);
        assert!(shard.leaf_sums(MapKind::Or, "m", "").unwrap().is_empty());
        assert!(
            shard
                .leaf_sums(MapKind::Lww, "other", "")
                .unwrap()
                .is_empty()
        );
        let mut restored = Shard::new();
        assert_eq!(shard.dump(), vec![change.stored.clone()]);
        restored.load(vec![change.stored], NOW);
        assert_eq!(restored.leaf_sums(MapKind::Lww, "m", "").unwrap(), sums);
    }

    /// The tally's tombstone bytes, checked against a scan of what the shard holds.
    fn tombstone_bytes(shard: &Shard) -> u64 {
        let scanned: usize = shard
            .dump()
            .iter()
            .map(|e| match &e.value {
                StoredValue::Or { tombstones, .. } => tombstones.iter().map(String::len).sum(),
                _ => 0,
            })
            .sum();
        assert_eq!(
            shard.tally().tombstone_bytes(),
            scanned as u64,
            "tally = scan"
        );
        shard.tally().tombstone_bytes()
    }

    fn or_add(key: &str, record: OrRecord) -> Write {
        Write::OrAdd {
            key: key.into(),
            record,
        }
    }

    fn or_remove(key: &str, tag: &str) -> Write {
        Write::OrRemove {
            key: key.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn tombstone_bytes_count_each_new_tag_once() {
        let mut shard = Shard::new();
        let (x, y) = (add("x", 5), add("y", 10));
        shard.apply("m", or_add("k", x.clone()), NOW);
        shard.apply("m", or_add("k", y.clone()), NOW);
        assert_eq!(tombstone_bytes(&shard), 0, "adds tombstone nothing");
        shard.apply("m", or_remove("k", &x.tag), NOW);
        assert_eq!(tombstone_bytes(&shard), 5, "\"5:0:a\"");
        assert!(shard.apply("m", or_remove("k", &x.tag), NOW).is_none());
        assert_eq!(tombstone_bytes(&shard), 5, "the same tag again counts once");
        shard.apply("other", or_remove("k", &x.tag), NOW);
        assert_eq!(
            tombstone_bytes(&shard),
            10,
            "another map's tombstone counts"
        );
        let pushed = OrMapEntry {
            key: "k".into(),
            records: vec![],
            tombstones: vec![y.tag.clone(), x.tag.clone(), "99:0:foreign".into()],
        };
        let Pushed { events, .. } = shard.push_or_entry("m", pushed);
        assert_eq!(events.len(), 1, "only y's tombstone is new");
        assert_eq!(
            tombstone_bytes(&shard),
            16,
            "the foreign tag was dropped, uncounted"
        );
        assert_eq!(shard.tally().tombstoned_total(), 16);
    }

    #[test]
    fn pruning_lowers_tombstone_bytes_but_not_the_total() {
        let mut shard = Shard::new();
        let (old, new) = (add("old", 5), add("new", 50));
        for record in [old.clone(), new.clone()] {
            let tag = record.tag.clone();
            shard.apply("m", or_add("k", record), NOW);
            shard.apply("m", or_remove("k", &tag), NOW);
        }
        shard.apply("m", or_add("k", add("live", 60)), NOW);
        assert_eq!(tombstone_bytes(&shard), 5 + 6);
        shard.prune(&ts(20, "z"));
        assert_eq!(
            tombstone_bytes(&shard),
            6,
            "the old tag is gone, the new one kept"
        );
        shard.prune(&ts(100, "z"));
        assert_eq!(tombstone_bytes(&shard), 0);
        assert_eq!(
            shard.tally().tombstoned_total(),
            11,
            "the total never falls"
        );
    }

    #[test]
    fn loading_seeds_the_tally_and_a_logged_prune_stays_pruned() {
        let mut shard = Shard::new();
        let mut log = Vec::new();
        let (old, new) = (add("old", 5), add("new", 50));
        for record in [old.clone(), new.clone()] {
            let tag = record.tag.clone();
            log.push(shard.apply("m", or_add("k", record), NOW).unwrap().stored);
            log.push(shard.apply("m", or_remove("k", &tag), NOW).unwrap().stored);
        }
        log.push(
            shard
                .apply("m", or_add("k", add("live", 60)), NOW)
                .unwrap()
                .stored,
        );
        // The store took the key before the prune; the log holds the pruned state after it.
        let mut loaded = shard.dump();
        log.extend(shard.prune(&ts(20, "z")));
        loaded.extend(log);
        let mut restarted = Shard::new();
        restarted.load(loaded, NOW);
        assert_eq!(
            restarted.dump(),
            shard.dump(),
            "the old tombstone is not brought back"
        );
        assert_eq!(tombstone_bytes(&restarted), 6);
        assert_eq!(
            restarted.tally().tombstoned_total(),
            6,
            "seeded with what was recovered"
        );
        assert_eq!(
            restarted.take_presence(),
            vec![Presence::Appeared("m".into())]
        );
    }

    #[test]
    fn a_map_name_appears_once_for_both_kinds_and_empties_when_pruned() {
        let mut shard = Shard::new();
        shard.apply("m", put("k", 1, 5), NOW);
        shard.apply("m", put("j", 1, 5), NOW);
        let x = add("x", 5);
        shard.apply("m", or_add("k", x.clone()), NOW);
        shard.apply("__topgun_counters", put("c", 1, 5), NOW);
        shard.apply("tags", or_remove("k", &x.tag), NOW);
        assert_eq!(
            shard.take_presence(),
            vec![
                Presence::Appeared("m".into()),
                Presence::Appeared("tags".into())
            ],
            "m once for its LWW and OR maps; reserved maps never"
        );
        let gone = Write::Lww {
            key: "k".into(),
            record: LwwRecord::tombstone(ts(6, "a")),
        };
        shard.apply("m", gone, NOW);
        shard.prune(&ts(100, "z"));
        assert_eq!(
            shard.take_presence(),
            vec![Presence::Emptied("tags".into())],
            "m still holds j and its OR key"
        );
        shard.apply("m", or_remove("k", &x.tag), NOW);
        shard.apply("m", put("j", 2, 7), NOW);
        shard.apply(
            "m",
            Write::Lww {
                key: "j".into(),
                record: LwwRecord::tombstone(ts(8, "a")),
            },
            NOW,
        );
        shard.prune(&ts(100, "z"));
        assert_eq!(shard.take_presence(), vec![Presence::Emptied("m".into())]);
    }
}
