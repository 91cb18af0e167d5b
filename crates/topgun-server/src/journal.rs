//! The event journal (PROTOCOL §4.12): every applied client write, in order, with a durable,
//! strictly increasing sequence — sans I/O. The task serving it is `journal_service`.
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use topgun_core::protocol::enums::JournalEventType;
use topgun_core::protocol::messages::JournalEventData;
use topgun_core::protocol::{Limits, decode_standalone, encode_standalone};
use topgun_core::value::ValueMap;
use topgun_core::{LwwRecord, Timestamp, Value};

use crate::store::{StoreError, StoredEntry, StoredValue};

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

    /// The store's form: an LWW record of [`JOURNAL_MAP`] keyed by the zero-padded sequence.
    pub fn to_stored(&self) -> StoredEntry {
        let mut fields = vec![
            ("map".into(), Value::Str(self.map.as_str().into())),
            ("key".into(), Value::Str(self.key.as_str().into())),
        ];
        fields.extend(draft_fields(&self.draft));
        StoredEntry {
            map: JOURNAL_MAP.to_owned(),
            key: stored_key(self.sequence),
            value: StoredValue::Lww(LwwRecord::new(
                Value::Map(ValueMap::from_entries(fields)),
                self.draft.timestamp.clone(),
                None,
            )),
        }
    }

    /// Reads back [`JournalEvent::to_stored`]; `None` for anything else.
    pub fn from_stored(entry: &StoredEntry) -> Option<Self> {
        let (JOURNAL_MAP, StoredValue::Lww(record)) = (entry.map.as_str(), &entry.value) else {
            return None;
        };
        let value = &record.value;
        Some(Self {
            sequence: entry.key.parse().ok()?,
            map: value.get("map")?.as_str()?.to_owned(),
            key: value.get("key")?.as_str()?.to_owned(),
            draft: draft_from(value)?,
        })
    }
}

/// The store key of a sequence: zero-padded, so keys sort as sequences do.
pub fn stored_key(sequence: u64) -> String {
    format!("{sequence:020}")
}

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
pub fn encode_frame(entry: &StoredEntry, drafts: &[Draft]) -> Vec<u8> {
    let bytes = entry.encode();
    if drafts.is_empty() {
        return bytes;
    }
    let len = u32::try_from(bytes.len()).expect("entries are far below 4 GiB");
    let list = Value::Array(
        drafts
            .iter()
            .map(|d| Value::Map(ValueMap::from_entries(draft_fields(d))))
            .collect(),
    );
    let mut out = Vec::with_capacity(5 + bytes.len() + 64 * drafts.len());
    out.push(JOURNALED);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&encode_standalone(&list));
    out
}

/// Reads back [`encode_frame`]: the entry and its drafts.
pub fn decode_frame(payload: &[u8]) -> Result<(StoredEntry, Vec<Draft>), StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("journaled log entry: {why}"));
    if payload.first() != Some(&JOURNALED) {
        return Ok((StoredEntry::decode(payload)?, Vec::new()));
    }
    let len_bytes: [u8; 4] = payload
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("cut short"))?;
    let end = 5 + u32::from_le_bytes(len_bytes) as usize;
    let entry = StoredEntry::decode(payload.get(5..end).ok_or_else(|| corrupt("cut short"))?)?;
    let limits = Limits {
        max_frame_bytes: 1 << 30,
        max_depth: 256,
        max_collection_len: EVENTS_PER_FRAME_MAX,
        max_str_bytes: 1 << 30,
    };
    let list = decode_standalone::<Value>(&payload[end..], &limits)
        .map_err(|e| corrupt(&e.to_string()))?;
    let drafts = list
        .as_array()
        .ok_or_else(|| corrupt("drafts are not a list"))?
        .iter()
        .map(|d| draft_from(d).ok_or_else(|| corrupt("malformed draft")))
        .collect::<Result<_, _>>()?;
    Ok((entry, drafts))
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
            self.by_map
                .entry(event.map.clone())
                .or_default()
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
        accept: impl Fn(&JournalEvent) -> bool,
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

/// What the checkpointer keeps of the events it stored, to delete them past retention.
#[derive(Debug, Default)]
pub struct StoredIndex {
    /// (sequence, recorded at), oldest first.
    stored: VecDeque<(u64, u64)>,
}

impl StoredIndex {
    pub fn new(mut stored: Vec<(u64, u64)>) -> Self {
        stored.sort_unstable();
        stored.dedup_by_key(|s| s.0);
        Self {
            stored: stored.into(),
        }
    }

    /// Records `events` as stored and returns the store entries of every event now past
    /// retention (to delete).
    pub fn add(
        &mut self,
        events: &[JournalEvent],
        retention: Retention,
        now_ms: u64,
    ) -> Vec<StoredEntry> {
        for e in events {
            if self
                .stored
                .back()
                .is_none_or(|&(last, _)| e.sequence > last)
            {
                self.stored.push_back((e.sequence, e.draft.recorded_ms));
            }
        }
        let horizon = now_ms.saturating_sub(retention.max_age_ms);
        let mut gone = Vec::new();
        while let Some(&(sequence, at)) = self.stored.front() {
            if self.stored.len() <= retention.capacity && at >= horizon {
                break;
            }
            self.stored.pop_front();
            gone.push(StoredEntry {
                map: JOURNAL_MAP.to_owned(),
                key: stored_key(sequence),
                value: StoredValue::Gone(crate::store::MapKind::Lww),
            });
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use topgun_core::NodeId;

    use super::*;

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
        let stored = events[0].to_stored();
        assert_eq!(stored.key, "00000000000000458752");
        assert_eq!(JournalEvent::from_stored(&stored), Some(events[0].clone()));
        let mut bad = encode_frame(&entry, &[draft(JournalEventType::Put, None, 1)]);
        bad.truncate(bad.len() - 2);
        assert!(decode_frame(&bad).is_err());
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

        let mut index = StoredIndex::new(vec![]);
        let gone = index.add(&events, retention, 0);
        let keys: Vec<_> = gone.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, vec![stored_key(1), stored_key(2)]);
        let gone = index.add(&[], retention, 145);
        assert_eq!(gone.len(), 2, "events 3 and 4 are older than 100 ms at 145");
    }
}
