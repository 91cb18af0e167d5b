//! Where shards keep their records beyond memory: a narrow trait, and the in-memory twin
//! used by tests and by `STORAGE_BACKEND=memory`.
//!
//! A store holds the latest state of every `(map, key)`: an LWW record (tombstones
//! included, so that removes survive a restart) or an OR-Map key's records and tombstones.
//! Shards load their partitions from it at start-up and hand it every change they apply.
//! The methods return boxed futures so that disk and network stores fit behind the same
//! `dyn Store`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, ready};
use thiserror::Error;
use topgun_core::hash::partition_id;
use topgun_core::protocol::messages::LeafRecord;
use topgun_core::protocol::msgpack::MAX_DEPTH_CEILING;
use topgun_core::protocol::{
    DecodeError, ErrorKind, Limits, Path, Reader, Wire, Writer, decode_standalone,
};
use topgun_core::{LwwRecord, OrMapEntry, OrRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    /// The store could not be reached or refused the operation; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes do not decode: the store is damaged.
    #[error("stored entry is corrupt: {0}")]
    Corrupt(String),
}

/// The two kinds of map; a name may be used by both, as two separate maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    Lww,
    Or,
}

/// The stored state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    Lww(LwwRecord),
    Or {
        records: Vec<OrRecord>,
        tombstones: Vec<String>,
    },
    /// The key is gone (its last tombstone was pruned): a store deletes it. Never loaded.
    Gone(MapKind),
}

impl StoredValue {
    pub fn kind(&self) -> MapKind {
        match self {
            Self::Lww(_) => MapKind::Lww,
            Self::Or { .. } => MapKind::Or,
            Self::Gone(kind) => *kind,
        }
    }
}

/// One key's state, as written and loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub map: String,
    pub key: String,
    pub value: StoredValue,
}

/// The record in force for each key of the LWW map `map` among loaded entries: the one with
/// the greatest timestamp (tombstones included). Loading yields the store's entries and then
/// the log's replayed writes, so one key can appear several times, an older write after a
/// newer one never, but a put before its own removal often: the last word is the timestamp's.
pub fn latest_lww<'a>(
    entries: &'a [StoredEntry],
    map: &str,
) -> std::collections::BTreeMap<&'a str, &'a topgun_core::LwwRecord> {
    let mut latest: std::collections::BTreeMap<&str, &topgun_core::LwwRecord> =
        std::collections::BTreeMap::new();
    for entry in entries.iter().filter(|e| e.map == map) {
        let StoredValue::Lww(record) = &entry.value else {
            continue;
        };
        let slot = latest.entry(entry.key.as_str()).or_insert(record);
        if record.timestamp > slot.timestamp {
            *slot = record;
        }
    }
    latest
}

/// Limits for decoding what this server itself wrote: generous, since an OR key's state
/// can outgrow a client frame, but still bounded. The depth is the reader's ceiling, well
/// above the deepest value a client may send (`max_depth` is at most 256), so that nothing
/// acknowledged is ever too deep to read back.
fn stored_limits() -> Limits {
    Limits {
        max_frame_bytes: 1 << 30,
        max_depth: MAX_DEPTH_CEILING,
        max_collection_len: 1 << 24,
        max_str_bytes: 1 << 30,
    }
}

impl StoredEntry {
    /// The entry's bytes, for the write-ahead log and disk stores:
    ///
    /// | bytes | field |
    /// |---|---|
    /// | 1 | kind: 0 = LWW, 1 = OR, 2 = LWW key gone, 3 = OR key gone |
    /// | 4 | map name length `n`, u32 little-endian |
    /// | n | map name, UTF-8 |
    /// | rest | MsgPack: `{key, record}` (LWW) or `{key, records, tombstones}` (OR), the wire shapes of `SYNC_RESP_LEAF` records and OR entries; the key as a MsgPack string when gone |
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.map.len() + self.key.len());
        self.encode_into(&mut w);
        w.into_bytes()
    }

    /// Appends [`StoredEntry::encode`]'s bytes to `w`. The bodies are written field by field
    /// (the map of a `LeafRecord` or `OrMapEntry` message) rather than by building those
    /// messages, which would clone the record: this runs for every write, on its shard.
    pub fn encode_into(&self, w: &mut Writer) {
        let map_len = u32::try_from(self.map.len()).expect("map names are at most 256 bytes");
        let mut header = [0; 5];
        header[0] = kind_byte(
            self.value.kind(),
            matches!(self.value, StoredValue::Gone(_)),
        );
        header[1..].copy_from_slice(&map_len.to_le_bytes());
        w.raw(&header);
        w.raw(self.map.as_bytes());
        match &self.value {
            StoredValue::Lww(record) => {
                w.map_header(2);
                w.str("key");
                w.str(&self.key);
                w.str("record");
                record.encode(w);
            }
            StoredValue::Or {
                records,
                tombstones,
            } => {
                w.map_header(3);
                w.str("key");
                w.str(&self.key);
                w.str("records");
                w.array_header(records.len());
                for r in records {
                    r.encode(w);
                }
                w.str("tombstones");
                w.array_header(tombstones.len());
                for t in tombstones {
                    w.str(t);
                }
            }
            StoredValue::Gone(_) => w.str(&self.key),
        }
    }

    /// Reads back what [`StoredEntry::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |e: DecodeError| StoreError::Corrupt(e.to_string());
        let header = EntryHeader::read(bytes)?;
        let (map, body, limits) = (header.map.to_owned(), header.body, stored_limits());
        let (key, value) = match (header.kind, header.gone) {
            (_, true) => {
                let key = decode_standalone::<String>(body, &limits).map_err(corrupt)?;
                (key, StoredValue::Gone(header.kind))
            }
            (MapKind::Lww, false) => {
                let leaf = decode_standalone::<LeafRecord>(body, &limits).map_err(corrupt)?;
                (leaf.key.to_string(), StoredValue::Lww(leaf.record))
            }
            (MapKind::Or, false) => {
                let entry = decode_standalone::<OrMapEntry>(body, &limits).map_err(corrupt)?;
                let value = StoredValue::Or {
                    records: entry.records,
                    tombstones: entry.tombstones,
                };
                (entry.key, value)
            }
        };
        Ok(Self { map, key, value })
    }
}

/// An entry in its byte form ([`StoredEntry::encode`]) with what stores key it by: what the
/// checkpointer hands to the store. Log frames already hold this form, so checkpoints pass
/// it on instead of decoding every record and encoding it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEntry {
    pub kind: MapKind,
    /// The key is gone: delete it.
    pub gone: bool,
    pub map: String,
    pub key: String,
    pub bytes: Vec<u8>,
}

impl EncodedEntry {
    /// Reads the kind, map and key of `bytes` without building its record.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, StoreError> {
        let header = EntryHeader::read(&bytes)?;
        let key = if header.gone {
            decode_standalone::<String>(header.body, &stored_limits())
        } else {
            read_whole(header.body, &stored_limits(), record_key)
        }
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (kind, gone, map) = (header.kind, header.gone, header.map.to_owned());
        Ok(Self {
            kind,
            gone,
            map,
            key,
            bytes,
        })
    }
}

/// The first byte of an entry's byte form: its kind, and whether the key is gone.
fn kind_byte(kind: MapKind, gone: bool) -> u8 {
    match (kind, gone) {
        (MapKind::Lww, false) => 0,
        (MapKind::Or, false) => 1,
        (MapKind::Lww, true) => 2,
        (MapKind::Or, true) => 3,
    }
}

/// The parts of an entry's byte form in front of its MsgPack body.
struct EntryHeader<'a> {
    kind: MapKind,
    gone: bool,
    map: &'a str,
    body: &'a [u8],
}

impl<'a> EntryHeader<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(format!("stored entry: {why}"));
        let (kind, gone) = match bytes.first() {
            Some(0) => (MapKind::Lww, false),
            Some(1) => (MapKind::Or, false),
            Some(2) => (MapKind::Lww, true),
            Some(3) => (MapKind::Or, true),
            Some(other) => return Err(corrupt(&format!("unknown kind {other}"))),
            None => return Err(corrupt("empty")),
        };
        let (map, body_at) = length_prefixed(bytes, 1)
            .and_then(|(map, end)| Some((std::str::from_utf8(map).ok()?, end)))
            .ok_or_else(|| corrupt("map name cut short or not UTF-8"))?;
        Ok(Self {
            kind,
            gone,
            map,
            body: &bytes[body_at..],
        })
    }
}

impl From<&StoredEntry> for EncodedEntry {
    fn from(entry: &StoredEntry) -> Self {
        Self {
            kind: entry.value.kind(),
            gone: matches!(entry.value, StoredValue::Gone(_)),
            map: entry.map.clone(),
            key: entry.key.clone(),
            bytes: entry.encode(),
        }
    }
}

/// The `key` of a record body; the other fields are checked and skipped, not built.
fn record_key(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let mut key = None;
    r.read_fields(Path::Root, |r, name| {
        if name == b"key" {
            key = Some(r.read_str(Path::Root.key("key"))?.to_owned());
            Ok(())
        } else {
            r.skip(Path::Root)
        }
    })?;
    key.ok_or_else(|| DecodeError::at(Path::Root.key("key"), ErrorKind::MissingField))
}

/// The run of bytes at `at` that a u32 LE length prefixes, and the offset after it; `None`
/// if either is cut short.
pub(crate) fn length_prefixed(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let end = (at + 4).checked_add(len)?;
    Some((bytes.get(at + 4..end)?, end))
}

/// Reads one value from the whole of `bytes` with `read`: nothing may follow it.
pub(crate) fn read_whole<T>(
    bytes: &[u8],
    limits: &Limits,
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes, limits)?;
    let value = read(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// A stored row that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Which row: its kind, map and key as far as the store's key says.
    pub row: String,
    pub reason: String,
    /// What deletes it (a *gone* entry for its slot), when the store's key could be read.
    pub delete: Option<EncodedEntry>,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.row, self.reason)
    }
}

/// What a load found: the entries, and the rows it could not read.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<StoredEntry>,
    pub unreadable: Vec<Unreadable>,
}

impl EncodedEntry {
    /// A *gone* entry for the slot `(kind, map, key)`: writing it deletes the row.
    pub fn deletion(kind: MapKind, map: String, key: String) -> Self {
        Self {
            kind,
            gone: true,
            map,
            key,
            bytes: Vec::new(),
        }
    }
}

/// Durable (or not) storage of records, shared by all shards.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Every entry whose key falls in one of `partitions`; an unreadable row is an error.
    fn load(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Vec<StoredEntry>, StoreError>> {
        self.load_checked(partitions)
            .map(|loaded| {
                let loaded = loaded?;
                match loaded.unreadable.into_iter().next() {
                    None => Ok(loaded.entries),
                    Some(bad) => Err(StoreError::Corrupt(bad.to_string())),
                }
            })
            .boxed()
    }

    /// Every entry whose key falls in one of `partitions`, and the rows that could not be
    /// read (start-up refuses them, or drops them at the operator's request: one damaged
    /// row must not keep a server from ever starting again).
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>>;

    /// Upserts the entries (the latest state of each key); all or nothing, and durable once
    /// the future completes.
    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Upserts entries already in their byte form, like [`Store::write`]: all or nothing,
    /// and durable once the future completes. For the checkpointer, which releases the log
    /// segments a batch came from only after this. Shared, because a failed write is tried
    /// again with the same batch. The default decodes the entries; stores that keep the byte
    /// form (all but the in-memory one) take it as is.
    fn write_encoded(&self, entries: Arc<[EncodedEntry]>) -> BoxFuture<'_, Result<(), StoreError>> {
        let decoded: Result<Vec<StoredEntry>, StoreError> = entries
            .iter()
            .map(|e| StoredEntry::decode(&e.bytes))
            .collect();
        match decoded {
            Ok(entries) => self.write(entries),
            Err(e) => ready(Err(e)).boxed(),
        }
    }
}

type Slot = (MapKind, String, String);

/// Keeps everything in a map in memory: for tests, and for servers that need no
/// durability. Sharing one between two servers in turn simulates a restart.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// std Mutex: held only to copy entries in or out, never across an `.await`.
    entries: Mutex<BTreeMap<Slot, StoredValue>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Slot, StoredValue>> {
        // The map is valid after any panic elsewhere: every write is a single insert.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load_checked(&self, partitions: &[u32]) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        let entries = self
            .lock()
            .iter()
            .filter(|((_, _, key), _)| partitions.contains(&partition_id(key)))
            .map(|((_, map, key), value)| StoredEntry {
                map: map.clone(),
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        // Entries are held decoded: there is nothing to misread.
        let loaded = Loaded {
            entries,
            unreadable: Vec::new(),
        };
        ready(Ok(loaded)).boxed()
    }

    fn write(&self, entries: Vec<StoredEntry>) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut map = self.lock();
        for e in entries {
            let slot = (e.value.kind(), e.map, e.key);
            if matches!(e.value, StoredValue::Gone(_)) {
                map.remove(&slot);
            } else {
                map.insert(slot, e.value);
            }
        }
        ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_deeper_than_any_client_may_send_reads_back() {
        // A client's frame may nest 256 deep at most (`max_depth`), its value a few levels
        // less; the store reads back deeper still, so no acknowledged write is unreadable.
        let mut value = topgun_core::Value::Int(1);
        for _ in 0..300 {
            value = topgun_core::Value::Array(vec![value]);
        }
        let node = topgun_core::NodeId::new("n").unwrap();
        let at = topgun_core::Timestamp::new(5, 1, node);
        let entry = StoredEntry {
            map: "m".into(),
            key: "k".into(),
            value: StoredValue::Lww(LwwRecord::new(value, at, None)),
        };
        let bytes = entry.encode();
        assert_eq!(StoredEntry::decode(&bytes).unwrap(), entry);
        assert_eq!(EncodedEntry::parse(bytes).unwrap().key, "k");
    }

    #[test]
    fn entries_encode_as_the_messages_they_are_read_back_as() {
        use topgun_core::protocol::encode_standalone;
        let node = topgun_core::NodeId::new("n").unwrap();
        let at = topgun_core::Timestamp::new(5, 1, node);
        let record = LwwRecord::new(topgun_core::Value::Int(7), at.clone(), Some(30));
        let or = OrRecord {
            value: topgun_core::Value::Str("v".into()),
            tag: "t1".into(),
            timestamp: at,
            ttl_ms: None,
        };
        let entry = |value| StoredEntry {
            map: "m".into(),
            key: "k".into(),
            value,
        };
        let prefix = |kind: u8| [vec![kind], 1u32.to_le_bytes().to_vec(), b"m".to_vec()].concat();
        let lww = entry(StoredValue::Lww(record.clone()));
        let leaf = LeafRecord {
            key: "k".into(),
            record,
        };
        assert_eq!(lww.encode(), [prefix(0), encode_standalone(&leaf)].concat());
        let or_entry = entry(StoredValue::Or {
            records: vec![or.clone()],
            tombstones: vec!["t0".into()],
        });
        let message = OrMapEntry {
            key: "k".into(),
            records: vec![or],
            tombstones: vec!["t0".into()],
        };
        assert_eq!(
            or_entry.encode(),
            [prefix(1), encode_standalone(&message)].concat()
        );
        let gone = entry(StoredValue::Gone(MapKind::Or));
        assert_eq!(
            gone.encode(),
            [prefix(3), encode_standalone(&"k".to_owned())].concat()
        );
        for e in [lww, or_entry, gone] {
            assert_eq!(StoredEntry::decode(&e.encode()).unwrap(), e);
            let parsed = EncodedEntry::parse(e.encode()).unwrap();
            assert_eq!(
                parsed,
                EncodedEntry::from(&e),
                "kind, map and key read in place"
            );
        }
        assert!(EncodedEntry::parse(vec![9]).is_err());
        let mut cut = entry(StoredValue::Gone(MapKind::Lww)).encode();
        cut.pop();
        assert!(EncodedEntry::parse(cut).is_err());
    }
    use topgun_core::{NodeId, Timestamp, Value};

    fn lww(value: i64) -> StoredValue {
        let ts = Timestamp::new(1, 0, NodeId::new("n").unwrap());
        StoredValue::Lww(LwwRecord::new(Value::Int(value), ts, None))
    }

    fn entry(map: &str, key: &str, value: StoredValue) -> StoredEntry {
        StoredEntry {
            map: map.into(),
            key: key.into(),
            value,
        }
    }

    #[tokio::test]
    async fn upserts_and_loads_by_partition() {
        let store = MemoryStore::new();
        store
            .write(vec![
                entry("m", "hello", lww(1)),
                entry("m", "key1", lww(2)),
            ])
            .await
            .unwrap();
        store
            .write(vec![entry("m", "hello", lww(3))])
            .await
            .unwrap();
        assert_eq!(store.len(), 2);
        // "hello" is in partition 95 and "key1" in 268 (PROTOCOL.md §3.1).
        let loaded = store.load(&[95]).await.unwrap();
        assert_eq!(loaded, vec![entry("m", "hello", lww(3))]);
        assert!(store.load(&[0]).await.unwrap().is_empty());
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        let ts = Timestamp::new(7, 1, NodeId::new("n").unwrap());
        let or = StoredValue::Or {
            records: vec![OrRecord {
                value: Value::Str("v".into()),
                tag: ts.to_string(),
                timestamp: ts,
                ttl_ms: Some(5),
            }],
            tombstones: vec!["1:0:x".into()],
        };
        let gone = StoredValue::Gone(MapKind::Or);
        for e in [
            entry("måp", "ключ", lww(3)),
            entry("m", "k", or),
            entry("m", "k", gone),
        ] {
            assert_eq!(StoredEntry::decode(&e.encode()).unwrap(), e);
        }
        let bytes = entry("m", "k", lww(1)).encode();
        for cut in [0, 1, 4, 6, bytes.len() - 1] {
            assert!(StoredEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn lww_and_or_maps_of_one_name_are_separate() {
        let store = MemoryStore::new();
        let or = StoredValue::Or {
            records: vec![],
            tombstones: vec!["1:0:n".into()],
        };
        store
            .write(vec![entry("m", "hello", lww(1)), entry("m", "hello", or)])
            .await
            .unwrap();
        assert_eq!(store.load(&[95]).await.unwrap().len(), 2);
    }
}
