//! The event journal (PROTOCOL §4.12): every applied client write, in order, with a durable,
//! strictly increasing sequence — sans I/O. The task serving it is [`service`].
//!
//! **Sequences are log positions.** A change's journal events travel in the same
//! write-ahead-log frame as the change itself (a *journaled entry*, see [`encode_frame`]),
//! so an event is durable exactly when its write is, and a crash can neither keep a write
//! without its event nor an event without its write. The `i`-th event of the frame at LSN
//! `L` has sequence `L << 16 | i` ([`sequence`]): strictly increasing in log order, unique,
//! and the same after recovery. Sequences have gaps (frames without events, and the low
//! bits); readers resume from "last seen + 1".
//!
//! **Retention** is bounded by count and age (the server's clock when the event was
//! recorded), applied in memory here and to the store by the checkpointer. Events are kept
//! in the store under the reserved map `__topgun_journal`, keyed by zero-padded sequence.
//!
//! Public face: [`Journal`] (the model), [`service::Journals`] (the task's handle, for
//! connections) and [`service::JournalFeed`] (for the log's writer and the shards).

pub mod service;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use topgun_core::protocol::enums::JournalEventType;
use topgun_core::protocol::messages::JournalEventData;
use topgun_core::protocol::msgpack::MAX_DEPTH_CEILING;
use topgun_core::protocol::{
    DecodeError, Limits, Number, Path, Reader, Wire, Writer, decode_standalone,
};
use topgun_core::{LwwRecord, NodeId, Timestamp, Value};

use crate::by_name;
use crate::storage::store::{
    EncodedEntry, MapKind, StoreError, StoredEntry, StoredValue, length_prefixed, read_whole,
};

/// The reserved map holding retained events in the store.
pub const JOURNAL_MAP: &str = "__topgun_journal";
/// Bits of a sequence that number the events of one log frame.
pub const FRAME_BITS: u32 = 16;
/// Most journal events one log frame may carry.
pub const EVENTS_PER_FRAME_MAX: usize = 1 << FRAME_BITS;

/// The sequence of the `index`-th event of the frame at `lsn`.
pub fn sequence(lsn: u64, index: usize) -> u64 {
    debug_assert!(index < EVENTS_PER_FRAME_MAX);
    (lsn << FRAME_BITS) | index as u64
}

/// How long and how many events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept; 0 turns the journal off.
    pub capacity: usize,
    /// Events recorded longer ago than this are dropped.
    pub max_age_ms: u64,
}

impl Retention {
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_age_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// One change as recorded, before it has a sequence (the map and key are the entry's).
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub kind: JournalEventType,
    pub value: Option<Value>,
    pub previous: Option<Value>,
    /// The write's HLC timestamp.
    pub timestamp: Timestamp,
    /// The server's wall clock when the change was applied (for retention by age).
    pub recorded_ms: u64,
}

/// A journal event with its sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEvent {
    pub sequence: u64,
    pub map: String,
    pub key: String,
    pub draft: Draft,
}

impl JournalEvent {
    /// The wire form; `node_id` names the server that recorded it.
    pub fn to_wire(&self, node_id: &str) -> JournalEventData {
        JournalEventData {
            sequence: self.sequence.to_string().into(),
            event_type: self.draft.kind,
            map_name: self.map.as_str().into(),
            key: self.key.as_str().into(),
            value: self.draft.value.clone(),
            previous_value: self.draft.previous.clone(),
            timestamp: self.draft.timestamp.clone(),
            node_id: node_id.into(),
            metadata: None,
        }
    }
}

/// The events of one checkpoint batch as one store row: the batch's journaled log frames
/// as they were logged, `[LSN u64 LE][payload length u32 LE][payload]` each.
///
/// One row per batch rather than one per event: a row per event cost the store an insert
/// and, once past retention, a delete for every write — a third of the checkpointer's store
/// work. The frames are copied, not re-encoded, and read back like the log itself.
#[derive(Debug, Default)]
pub struct Chunk {
    bytes: Vec<u8>,
    row: Option<StoredRow>,
}

/// What the checkpointer remembers of a stored journal row, to delete it past retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRow {
    /// The sequence its key is made of: its first event's.
    pub key: u64,
    /// Its last event's sequence.
    pub last: u64,
    pub events: usize,
    /// The newest event's recording time.
    pub newest_ms: u64,
}

/// What a checkpoint needs to know of a frame's events, read without building them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsSummary {
    pub events: usize,
    /// The newest event's recording time.
    pub newest_ms: u64,
}

/// The entry bytes of a log frame's payload and a summary of its events ([`encode_frame`]).
pub fn frame_parts(payload: &[u8]) -> Result<(&[u8], EventsSummary), StoreError> {
    let Some((entry, drafts)) = split_frame(payload)? else {
        return Ok((payload, EventsSummary::default()));
    };
    let summary = read_whole(drafts, &draft_limits(), events_summary)
        .map_err(|e| frame_corrupt(&e.to_string()))?;
    Ok((entry, summary))
}

fn frame_corrupt(why: &str) -> StoreError {
    StoreError::Corrupt(format!("journaled log entry: {why}"))
}

/// A journaled payload's entry bytes and its MsgPack drafts.
type Parts<'a> = (&'a [u8], &'a [u8]);

/// A journaled payload's parts; `None` for a plain entry.
fn split_frame(payload: &[u8]) -> Result<Option<Parts<'_>>, StoreError> {
    if payload.first() != Some(&JOURNALED) {
        return Ok(None);
    }
    let (entry, end) = length_prefixed(payload, 1).ok_or_else(|| frame_corrupt("cut short"))?;
    Ok(Some((entry, &payload[end..])))
}

/// [`EventsSummary`] as read from the MsgPack list of drafts: only `recordedAt` is read.
fn events_summary(r: &mut Reader<'_>) -> Result<EventsSummary, DecodeError> {
    let mut summary = EventsSummary::default();
    r.read_array(Path::Root, |r, i| {
        summary.events += 1;
        r.read_fields(Path::Root.index(i), |r, name| {
            if name != b"recordedAt" {
                return r.skip(Path::Root);
            }
            if let Number::Int(ms) = r.read_number(Path::Root, "milliseconds")? {
                summary.newest_ms = summary.newest_ms.max(u64::try_from(ms).unwrap_or(0));
            }
            Ok(())
        })
    })?;
    Ok(summary)
}

impl Chunk {
    /// Adds a frame's payload if it carries events (`summary`, read from it; `entry` is its
    /// entry). An LWW frame is kept whole: its events' values are its record's. An OR
    /// frame's entry is the key's whole state, which its events do not need (they carry
    /// their own values), so only its map and key are kept with the events.
    pub fn push(&mut self, lsn: u64, payload: &[u8], summary: EventsSummary, entry: &EncodedEntry) {
        if summary.events == 0 {
            return;
        }
        let reduced;
        let payload = if entry.kind == MapKind::Or {
            reduced = without_state(payload, entry);
            reduced.as_slice()
        } else {
            payload
        };
        let len = u32::try_from(payload.len()).expect("log frames are far below 4 GiB");
        self.bytes.extend_from_slice(&lsn.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(payload);
        let row = self.row.get_or_insert(StoredRow {
            key: sequence(lsn, 0),
            last: 0,
            events: 0,
            newest_ms: 0,
        });
        row.last = sequence(lsn, summary.events - 1);
        row.events += summary.events;
        row.newest_ms = row.newest_ms.max(summary.newest_ms);
    }

    /// The store row, unless no frame carried events. Its record's timestamp means nothing
    /// (journal rows are never merged); it says when the newest event was recorded.
    pub fn into_stored(self) -> Option<(StoredEntry, StoredRow)> {
        let row = self.row?;
        let node = NodeId::new("topgun-journal").expect("a valid node id");
        let timestamp = Timestamp::new(row.newest_ms, 0, node);
        let entry = StoredEntry {
            map: JOURNAL_MAP.to_owned(),
            key: stored_key(row.key),
            value: StoredValue::Lww(LwwRecord::new(Value::Bin(self.bytes), timestamp, None)),
        };
        Some((entry, row))
    }
}

/// A journaled OR frame with its entry replaced by a gone entry of the same map and key.
fn without_state(payload: &[u8], entry: &EncodedEntry) -> Vec<u8> {
    let drafts = split_frame(payload)
        .ok()
        .flatten()
        .map_or(&[][..], |(_, d)| d);
    let gone = StoredEntry {
        map: entry.map.clone(),
        key: entry.key.clone(),
        value: StoredValue::Gone(MapKind::Or),
    }
    .encode();
    let gone_len = u32::try_from(gone.len()).expect("entries are far below 4 GiB");
    [&[JOURNALED][..], &gone_len.to_le_bytes(), &gone, drafts].concat()
}

/// The events of a journal row of the store: `None` if `entry` is not one. Reads chunks,
/// and the rows of one event each that servers before chunks wrote.
pub fn stored_events(entry: &StoredEntry) -> Option<Result<Vec<JournalEvent>, StoreError>> {
    let (JOURNAL_MAP, StoredValue::Lww(record)) = (entry.map.as_str(), &entry.value) else {
        return None;
    };
    let corrupt = || StoreError::Corrupt(format!("journal row {}", entry.key));
    Some(match &record.value {
        Value::Bin(bytes) => chunk_events(bytes).ok_or_else(corrupt),
        single => (|| {
            Some(vec![JournalEvent {
                sequence: entry.key.parse().ok()?,
                map: single.get("map")?.as_str()?.to_owned(),
                key: single.get("key")?.as_str()?.to_owned(),
                draft: draft_from(single)?,
            }])
        })()
        .ok_or_else(corrupt),
    })
}

fn chunk_events(mut bytes: &[u8]) -> Option<Vec<JournalEvent>> {
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let lsn = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let (payload, end) = length_prefixed(bytes, 8)?;
        let (entry, drafts) = decode_frame(payload).ok()?;
        events.extend(sequenced(lsn, &entry, drafts));
        bytes = &bytes[end..];
    }
    Some(events)
}

/// The store key of a sequence: zero-padded, so keys sort as sequences do.
pub fn stored_key(sequence: u64) -> String {
    format!("{sequence:020}")
}

fn draft_from(value: &Value) -> Option<Draft> {
    Some(Draft {
        kind: JournalEventType::parse(value.get("type")?.as_str()?)?,
        value: value.get("value").cloned(),
        previous: value.get("previousValue").cloned(),
        timestamp: value.get("timestamp")?.as_str()?.parse().ok()?,
        recorded_ms: match value.get("recordedAt")? {
            Value::Int(ms) => u64::try_from(*ms).ok()?,
            Value::UInt(ms) => *ms,
            _ => return None,
        },
    })
}

/// The kind byte of a journaled entry (entries themselves use 0–3).
const JOURNALED: u8 = 4;

/// A log frame's payload: the entry's bytes alone when it has no events, else
/// `[4][entry length u32 LE][entry][MsgPack array of drafts]`.
///
/// The `PUT` or `UPDATE` draft of an LWW entry leaves its value out: it is the entry's record
/// value, which the frame already holds ([`decode_frame`] puts it back). Written twice, every
/// write's value would double the log's bytes and the shard's encoding work.
pub fn encode_frame(entry: &StoredEntry, drafts: &[Draft]) -> Vec<u8> {
    if drafts.is_empty() {
        return entry.encode();
    }
    let mut w = Writer::with_capacity(128 + 96 * drafts.len());
    entry.encode_into(&mut w);
    let len = u32::try_from(w.as_bytes().len()).expect("entries are far below 4 GiB");
    w.array_header(drafts.len());
    let entry_value = match &entry.value {
        StoredValue::Lww(record) => Some(&record.value),
        _ => None,
    };
    for d in drafts {
        let in_entry = entry_value.is_some() && value_is_the_entrys(d.kind);
        debug_assert!(
            !in_entry || d.value.as_ref() == entry_value,
            "an LWW draft's value"
        );
        encode_draft(d, !in_entry, &mut w);
    }
    let body = w.into_bytes();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(JOURNALED);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A draft as a map of `type`, `timestamp` (its string form), `recordedAt` (ms), and `value`
/// and `previousValue` where present (read back by `draft_from`), written without building
/// it: this runs for every write, on its shard.
fn encode_draft(draft: &Draft, with_value: bool, w: &mut Writer) {
    let value = draft.value.as_ref().filter(|_| with_value);
    w.map_header(3 + usize::from(value.is_some()) + usize::from(draft.previous.is_some()));
    w.str("type");
    w.str(draft.kind.as_str());
    w.str("timestamp");
    w.str(&draft.timestamp.to_string());
    w.str("recordedAt");
    w.int(i64::try_from(draft.recorded_ms).unwrap_or(i64::MAX));
    for (name, value) in [("value", value), ("previousValue", draft.previous.as_ref())] {
        if let Some(v) = value {
            w.str(name);
            v.encode(w);
        }
    }
}

/// Reads back [`encode_frame`]: the entry and its drafts.
pub fn decode_frame(payload: &[u8]) -> Result<(StoredEntry, Vec<Draft>), StoreError> {
    let Some((entry, drafts)) = split_frame(payload)? else {
        return Ok((StoredEntry::decode(payload)?, Vec::new()));
    };
    let entry = StoredEntry::decode(entry)?;
    let list = decode_standalone::<Value>(drafts, &draft_limits())
        .map_err(|e| frame_corrupt(&e.to_string()))?;
    let mut drafts = list
        .as_array()
        .ok_or_else(|| frame_corrupt("drafts are not a list"))?
        .iter()
        .map(|d| draft_from(d).ok_or_else(|| frame_corrupt("malformed draft")))
        .collect::<Result<Vec<Draft>, _>>()?;
    if let StoredValue::Lww(record) = &entry.value {
        for d in &mut drafts {
            if d.value.is_none() && value_is_the_entrys(d.kind) {
                d.value = Some(record.value.clone());
            }
        }
    }
    Ok((entry, drafts))
}

/// Whether an LWW entry's draft of this kind carries the entry's own value.
fn value_is_the_entrys(kind: JournalEventType) -> bool {
    matches!(kind, JournalEventType::Put | JournalEventType::Update)
}

/// Bounds for reading a frame's drafts: generous, since the log holds only what this server
/// wrote and checksummed.
fn draft_limits() -> Limits {
    Limits {
        max_frame_bytes: 1 << 30,
        max_depth: MAX_DEPTH_CEILING,
        max_collection_len: EVENTS_PER_FRAME_MAX,
        max_str_bytes: 1 << 30,
    }
}

/// A logged change: a key's new state and its journal drafts, one log frame.
pub type Logged = (StoredEntry, Vec<Draft>);

/// The events of logged changes whose frames start at LSN `first`, in log order. The
/// entries' maps and keys move into their events (the last event of a frame takes them),
/// so a change with one event, the common case, copies no string.
pub fn sequence_logged(first: u64, logged: Vec<Logged>) -> Vec<JournalEvent> {
    let mut events = Vec::with_capacity(logged.len());
    for ((entry, drafts), lsn) in logged.into_iter().zip(first..) {
        let StoredEntry {
            mut map, mut key, ..
        } = entry;
        let last = drafts.len().saturating_sub(1);
        for (i, draft) in drafts.into_iter().enumerate() {
            let (map, key) = if i == last {
                (std::mem::take(&mut map), std::mem::take(&mut key))
            } else {
                (map.clone(), key.clone())
            };
            events.push(JournalEvent {
                sequence: sequence(lsn, i),
                map,
                key,
                draft,
            });
        }
    }
    events
}

/// The events of a frame, sequenced by its LSN.
pub fn sequenced(lsn: u64, entry: &StoredEntry, drafts: Vec<Draft>) -> Vec<JournalEvent> {
    drafts
        .into_iter()
        .enumerate()
        .map(|(i, draft)| JournalEvent {
            sequence: sequence(lsn, i),
            map: entry.map.clone(),
            key: entry.key.clone(),
            draft,
        })
        .collect()
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub map: Option<String>,
    pub types: Option<Vec<JournalEventType>>,
}

impl Filter {
    pub fn accepts(&self, event: &JournalEvent) -> bool {
        self.map.as_ref().is_none_or(|m| *m == event.map)
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(&event.draft.kind))
    }
}

/// A page of events.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<Arc<JournalEvent>>,
    /// Whether more accepted events follow.
    pub has_more: bool,
    /// Where the next page starts.
    pub next: u64,
}

/// The retained events, oldest first, with each map's own list (so a read filtered by map
/// looks at that map's events only, not at everything retained).
#[derive(Debug)]
pub struct Journal {
    events: VecDeque<Arc<JournalEvent>>,
    by_map: HashMap<String, VecDeque<Arc<JournalEvent>>>,
    retention: Retention,
}

impl Journal {
    /// A journal over recovered events (in any order, possibly repeated).
    pub fn new(retention: Retention, mut recovered: Vec<JournalEvent>, now_ms: u64) -> Self {
        recovered.sort_by_key(|e| e.sequence);
        recovered.dedup_by_key(|e| e.sequence);
        let mut journal = Self {
            events: VecDeque::new(),
            by_map: HashMap::new(),
            retention,
        };
        journal.push(recovered);
        journal.expire(now_ms);
        journal
    }

    /// Appends events newer than every retained one (older ones are ignored: replays).
    pub fn push(&mut self, events: Vec<JournalEvent>) -> Vec<Arc<JournalEvent>> {
        let mut added = Vec::with_capacity(events.len());
        for event in events {
            if self
                .last_sequence()
                .is_some_and(|last| event.sequence <= last)
            {
                continue;
            }
            let event = Arc::new(event);
            self.events.push_back(Arc::clone(&event));
            by_name::get_or_insert_with(&mut self.by_map, &event.map, VecDeque::new)
                .push_back(Arc::clone(&event));
            added.push(event);
        }
        while self.events.len() > self.retention.capacity {
            self.pop_oldest();
        }
        added
    }

    /// Drops events older than the retention age.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.retention.max_age_ms);
        while self
            .events
            .front()
            .is_some_and(|e| e.draft.recorded_ms < horizon)
        {
            self.pop_oldest();
        }
        while self.events.len() > self.retention.capacity {
            self.pop_oldest();
        }
    }

    /// Drops the oldest event, from the whole list and from its map's (where it is oldest
    /// too, both being in sequence order).
    fn pop_oldest(&mut self) {
        let Some(oldest) = self.events.pop_front() else {
            return;
        };
        if let Some(list) = self.by_map.get_mut(&oldest.map) {
            list.pop_front();
            if list.is_empty() {
                self.by_map.remove(&oldest.map);
            }
        }
    }

    pub fn last_sequence(&self) -> Option<u64> {
        self.events.back().map(|e| e.sequence)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Up to `limit` accepted events with sequence ≥ `from`.
    pub fn read(&self, from: u64, limit: usize, filter: &Filter) -> Page {
        self.read_where(from, limit, filter.map.as_deref(), |e| filter.accepts(e))
    }

    /// Up to `limit` events with sequence ≥ `from`, of `map` only when given, that `accept`
    /// takes.
    pub fn read_where(
        &self,
        from: u64,
        limit: usize,
        map: Option<&str>,
        mut accept: impl FnMut(&JournalEvent) -> bool,
    ) -> Page {
        static EMPTY: VecDeque<Arc<JournalEvent>> = VecDeque::new();
        let list = match map {
            Some(map) => self.by_map.get(map).unwrap_or(&EMPTY),
            None => &self.events,
        };
        let start = list.partition_point(|e| e.sequence < from);
        let mut events = Vec::new();
        let mut next = self
            .last_sequence()
            .map_or(from, |last| (last + 1).max(from));
        let mut has_more = false;
        for event in list.range(start..) {
            if !accept(event) {
                continue;
            }
            if events.len() == limit {
                has_more = true;
                break;
            }
            next = event.sequence + 1;
            events.push(Arc::clone(event));
        }
        if !has_more {
            next = self.last_sequence().map_or(next, |last| next.max(last + 1));
        }
        Page {
            events,
            has_more,
            next,
        }
    }
}

/// The journal rows in the store, oldest first, to delete them past retention.
#[derive(Debug, Default)]
pub struct StoredIndex {
    rows: VecDeque<StoredRow>,
    events: usize,
}

impl StoredIndex {
    pub fn new(mut rows: Vec<StoredRow>) -> Self {
        rows.sort_unstable_by_key(|r| r.key);
        rows.dedup_by_key(|r| r.key);
        Self {
            events: rows.iter().map(|r| r.events).sum(),
            rows: rows.into(),
        }
    }

    /// The last sequence stored: a checkpoint that reads log frames again after a restart
    /// leaves out the events the store already has.
    pub fn last_sequence(&self) -> Option<u64> {
        self.rows.back().map(|r| r.last)
    }

    /// Records `row` as stored and returns the store entries of the rows now wholly past
    /// retention (to delete). A row goes once the rows after it hold `capacity` events, or
    /// once its newest event is older than the age limit: the store keeps at least what
    /// retention asks, and at most one batch more.
    pub fn add(
        &mut self,
        row: Option<StoredRow>,
        retention: Retention,
        now_ms: u64,
    ) -> Vec<StoredEntry> {
        if let Some(row) = row
            && self.rows.back().is_none_or(|last| row.key > last.key)
        {
            self.events += row.events;
            self.rows.push_back(row);
        }
        let horizon = now_ms.saturating_sub(retention.max_age_ms);
        let mut gone = Vec::new();
        while let Some(&oldest) = self.rows.front() {
            if self.events - oldest.events < retention.capacity && oldest.newest_ms >= horizon {
                break;
            }
            self.rows.pop_front();
            self.events -= oldest.events;
            gone.push(StoredEntry {
                map: JOURNAL_MAP.to_owned(),
                key: stored_key(oldest.key),
                value: StoredValue::Gone(crate::storage::store::MapKind::Lww),
            });
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use topgun_core::protocol::encode_standalone;
    use topgun_core::value::ValueMap;

    use super::*;

    /// A draft's fields as a journal row of one event stored them (before chunks).
    fn draft_fields(draft: &Draft) -> Vec<(topgun_core::value::CompactString, Value)> {
        let mut fields = vec![
            ("type".into(), Value::Str(draft.kind.as_str().into())),
            (
                "timestamp".into(),
                Value::Str(draft.timestamp.to_string().into()),
            ),
            (
                "recordedAt".into(),
                Value::Int(i64::try_from(draft.recorded_ms).unwrap_or(i64::MAX)),
            ),
        ];
        if let Some(v) = &draft.value {
            fields.push(("value".into(), v.clone()));
        }
        if let Some(v) = &draft.previous {
            fields.push(("previousValue".into(), v.clone()));
        }
        fields
    }

    fn ts(millis: u64) -> Timestamp {
        Timestamp::new(millis, 0, NodeId::new("client").unwrap())
    }

    fn draft(kind: JournalEventType, value: Option<i64>, at: u64) -> Draft {
        Draft {
            kind,
            value: value.map(Value::Int),
            previous: None,
            timestamp: ts(at),
            recorded_ms: at,
        }
    }

    fn event(sequence: u64, map: &str, kind: JournalEventType, at: u64) -> JournalEvent {
        JournalEvent {
            sequence,
            map: map.into(),
            key: "k".into(),
            draft: draft(kind, Some(1), at),
        }
    }

    #[test]
    fn frames_carry_their_entry_and_drafts_and_old_frames_still_read() {
        let entry = StoredEntry {
            map: "todos".into(),
            key: "a".into(),
            value: StoredValue::Lww(LwwRecord::new(Value::Int(2), ts(5), None)),
        };
        let drafts = vec![Draft {
            previous: Some(Value::Int(1)),
            ..draft(JournalEventType::Update, Some(2), 5)
        }];
        let (back, back_drafts) = decode_frame(&encode_frame(&entry, &drafts)).unwrap();
        assert_eq!((back, back_drafts), (entry.clone(), drafts.clone()));
        assert_eq!(
            decode_frame(&entry.encode()).unwrap(),
            (entry.clone(), vec![]),
            "frames written before the journal are plain entries"
        );
        let events = sequenced(7, &entry, drafts);
        assert_eq!(events[0].sequence, 7 << 16);
        let mut bad = encode_frame(&entry, &[draft(JournalEventType::Delete, None, 1)]);
        bad.truncate(bad.len() - 2);
        assert!(decode_frame(&bad).is_err());
    }

    #[test]
    fn an_lww_frame_holds_its_value_once() {
        let long = Value::Str("x".repeat(200).into());
        let entry = StoredEntry {
            map: "todos".into(),
            key: "a".into(),
            value: StoredValue::Lww(LwwRecord::new(long.clone(), ts(5), None)),
        };
        let drafts = vec![Draft {
            value: Some(long.clone()),
            ..draft(JournalEventType::Put, None, 5)
        }];
        let frame = encode_frame(&entry, &drafts);
        assert!(
            frame.len() < 400,
            "the value is written once: {} bytes",
            frame.len()
        );
        assert_eq!(
            decode_frame(&frame).unwrap(),
            (entry.clone(), drafts.clone())
        );

        // Frames that carried the value in the draft as well still read the same.
        let list = Value::Array(vec![Value::Map(ValueMap::from_entries(draft_fields(
            &drafts[0],
        )))]);
        let entry_bytes = entry.encode();
        let len = u32::try_from(entry_bytes.len()).unwrap().to_le_bytes();
        let older = [
            &[JOURNALED][..],
            &len,
            &entry_bytes,
            &encode_standalone(&list),
        ]
        .concat();
        assert_eq!(decode_frame(&older).unwrap(), (entry, drafts));
    }

    #[test]
    fn logged_changes_are_sequenced_by_their_frames() {
        let entry = |map: &str, key: &str| StoredEntry {
            map: map.into(),
            key: key.into(),
            value: StoredValue::Lww(LwwRecord::new(Value::Int(2), ts(5), None)),
        };
        let two = vec![
            draft(JournalEventType::Put, Some(2), 30),
            draft(JournalEventType::Update, Some(3), 31),
        ];
        let one = vec![draft(JournalEventType::Delete, None, 32)];
        let logged = vec![
            (entry("todos", "a"), two.clone()),
            (entry("todos", "quiet"), Vec::new()),
            (entry("tags", "b"), one.clone()),
        ];
        let mut expected = sequenced(40, &entry("todos", "a"), two);
        expected.extend(sequenced(42, &entry("tags", "b"), one));
        assert_eq!(sequence_logged(40, logged), expected);
        assert_eq!(
            expected.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [40 << 16, (40 << 16) | 1, 42 << 16],
            "a frame without events still takes its LSN"
        );
    }

    #[test]
    fn a_chunk_stores_a_batch_of_frames_as_one_row() {
        let entry = |key: &str| StoredEntry {
            map: "todos".into(),
            key: key.into(),
            value: StoredValue::Lww(LwwRecord::new(Value::Int(2), ts(5), None)),
        };
        let two = vec![
            draft(JournalEventType::Put, Some(2), 30),
            draft(JournalEventType::Update, Some(2), 20),
        ];
        let one = [draft(JournalEventType::Delete, None, 10)];
        // An OR key whose whole (large) state rides in its frame; its event needs none of it.
        let or_record = |i: u64| topgun_core::OrRecord {
            value: Value::Str("y".repeat(100).into()),
            tag: format!("{i}:0:n"),
            timestamp: ts(i),
            ttl_ms: None,
        };
        let or_entry = StoredEntry {
            map: "tags".into(),
            key: "c".into(),
            value: StoredValue::Or {
                records: (0..20).map(or_record).collect(),
                tombstones: vec![],
            },
        };
        let or_drafts = [draft(JournalEventType::Put, Some(5), 25)];
        let mut chunk = Chunk::default();
        assert!(
            Chunk::default().into_stored().is_none(),
            "no events, no row"
        );
        for (lsn, key, payload) in [
            (7, "plain", entry("plain").encode()),
            (8, "a", encode_frame(&entry("a"), &two)),
            (9, "b", encode_frame(&entry("b"), &one)),
            (10, "c", encode_frame(&or_entry, &or_drafts)),
        ] {
            let (bytes, summary) = frame_parts(&payload).unwrap();
            let encoded = EncodedEntry::parse(bytes.to_vec()).unwrap();
            assert_eq!(encoded.key, key);
            chunk.push(lsn, &payload, summary, &encoded);
        }
        let (stored, row) = chunk.into_stored().unwrap();
        assert_eq!(
            row,
            StoredRow {
                key: 8 << 16,
                last: 10 << 16,
                events: 4,
                newest_ms: 30
            }
        );
        assert_eq!(stored.key, stored_key(8 << 16));
        let StoredValue::Lww(record) = &stored.value else {
            unreachable!()
        };
        let Value::Bin(row) = &record.value else {
            unreachable!()
        };
        assert!(
            row.len() < 600,
            "the OR key's state is not kept: {} bytes",
            row.len()
        );
        let back = stored_events(&stored).unwrap().unwrap();
        let mut expected = sequenced(8, &entry("a"), two);
        expected.extend(sequenced(9, &entry("b"), one.to_vec()));
        expected.extend(sequenced(10, &or_entry, or_drafts.to_vec()));
        assert_eq!(back, expected);

        // A row of one event, as servers before chunks stored them.
        let mut fields = vec![
            ("map".into(), Value::Str("todos".into())),
            ("key".into(), Value::Str("a".into())),
        ];
        fields.extend(draft_fields(&expected[0].draft));
        let single = StoredEntry {
            map: JOURNAL_MAP.into(),
            key: stored_key(expected[0].sequence),
            value: StoredValue::Lww(LwwRecord::new(
                Value::Map(ValueMap::from_entries(fields)),
                ts(1),
                None,
            )),
        };
        assert_eq!(
            stored_events(&single).unwrap().unwrap(),
            vec![expected[0].clone()]
        );
        assert!(stored_events(&entry("a")).is_none(), "not a journal row");
        let StoredValue::Lww(mut record) = stored.value.clone() else {
            unreachable!()
        };
        let Value::Bin(bytes) = &mut record.value else {
            unreachable!()
        };
        bytes.truncate(bytes.len() - 1);
        let damaged = StoredEntry {
            value: StoredValue::Lww(record),
            ..stored
        };
        assert!(stored_events(&damaged).unwrap().is_err());
    }

    #[test]
    fn reads_page_by_sequence_with_filters() {
        use JournalEventType::{Delete, Put};
        let mut j = Journal::new(
            Retention {
                capacity: 10,
                max_age_ms: 1_000,
            },
            vec![],
            0,
        );
        j.push(vec![
            event(10, "a", Put, 1),
            event(20, "b", Put, 1),
            event(30, "a", Delete, 1),
            event(40, "a", Put, 1),
        ]);
        assert!(
            j.push(vec![event(40, "a", Put, 1)]).is_empty(),
            "replays are ignored"
        );
        let all = Filter::default();
        let page = j.read(11, 2, &all);
        let seqs: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
        assert_eq!((seqs, page.has_more, page.next), (vec![20, 30], true, 31));
        let page = j.read(31, 2, &all);
        assert_eq!(
            (page.events.len(), page.has_more, page.next),
            (1, false, 41)
        );
        let only_a_puts = Filter {
            map: Some("a".into()),
            types: Some(vec![Put]),
        };
        let page = j.read(0, 10, &only_a_puts);
        let seqs: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
        assert_eq!((seqs, page.next), (vec![10, 40], 41));
        assert!(j.read(41, 10, &all).events.is_empty());
        assert_eq!(j.read(1_000, 10, &all).next, 1_000);
    }

    #[test]
    fn retention_bounds_count_and_age_in_memory_and_in_the_store() {
        use JournalEventType::Put;
        let retention = Retention {
            capacity: 3,
            max_age_ms: 100,
        };
        let events: Vec<_> = (1..=5).map(|s| event(s, "m", Put, s * 10)).collect();
        let mut j = Journal::new(retention, events.clone(), 0);
        assert_eq!(j.len(), 3, "capacity");
        j.expire(145);
        assert_eq!(j.read(0, 10, &Filter::default()).events[0].sequence, 5);
        // Each map's own list follows retention too: a read by map sees what is kept.
        j.push(vec![event(6, "n", Put, 150), event(7, "m", Put, 150)]);
        let only_m = Filter {
            map: Some("m".into()),
            types: None,
        };
        let seqs: Vec<u64> = j
            .read(0, 10, &only_m)
            .events
            .iter()
            .map(|e| e.sequence)
            .collect();
        assert_eq!(seqs, vec![5, 7]);
        j.push(vec![event(8, "n", Put, 150), event(9, "n", Put, 150)]);
        assert!(
            j.read(0, 10, &only_m)
                .events
                .iter()
                .all(|e| e.sequence == 7)
        );
        assert!(
            j.by_map.values().all(|list| !list.is_empty()),
            "no empty lists kept"
        );
        let kept: usize = j.by_map.values().map(VecDeque::len).sum();
        assert_eq!(kept, j.len());

        // The store drops whole rows: once the rows after one hold `capacity` events, or
        // once its newest event is past the age limit.
        let row = |key, events, newest_ms| StoredRow {
            key,
            last: key + 1,
            events,
            newest_ms,
        };
        let mut index = StoredIndex::new(vec![row(20, 2, 120), row(10, 2, 110)]);
        assert!(
            index.add(None, retention, 0).is_empty(),
            "4 events, 2 after the first"
        );
        let gone = index.add(Some(row(30, 1, 130)), retention, 0);
        let keys: Vec<_> = gone.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, vec![stored_key(10)], "3 events after it");
        assert!(
            index.add(Some(row(30, 1, 130)), retention, 0).is_empty(),
            "a row already stored is not counted twice"
        );
        assert_eq!(index.last_sequence(), Some(31));
        let gone = index.add(None, retention, 225);
        assert_eq!(
            gone.len(),
            1,
            "row 20's newest event is older than 100 ms at 225"
        );
        assert_eq!(index.add(None, retention, 231).len(), 1);
    }
}
