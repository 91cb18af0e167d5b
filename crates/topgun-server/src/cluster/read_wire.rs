//! The bytes of cross-node reads and relays (CLUSTER.md §9, §13): a read request and its
//! answer, an interest, a relayed event. Records and entries travel in the client
//! protocol's own encodings (a `SYNC_RESP_LEAF`'s records, an OR leaf's entries), which both
//! sides already read and write; only the envelopes are new.
//!
//! Everything read here comes from an authenticated member, and is still checked: a
//! malformed body is an error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use topgun_core::OrMapEntry;
use topgun_core::merkle::{MERKLE_DEPTH, Sum, path_depth};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    LeafRecord, OrMapDiffResponse, OrMapSyncRespLeaf, SyncRespLeaf,
};
use topgun_core::protocol::msgpack::Limits;

use crate::data::ops::check_map_name;
use crate::data::peers::{Followed, Read, ReadPart};
use crate::data::shard::{Arrival, Arrivals, Mark};
use crate::storage::store::MapKind;

/// Most keys one read may ask for (an `ORMAP_DIFF_REQUEST`'s bound).
const KEYS_MAX: usize = 100_000;
/// Most records a delta read may ask for.
const SINCE_MAX: usize = crate::data::deltas::DELTA_RECORDS_MAX;

/// A read request: who asks, under which table, following the map under which interest
/// generation (0: not following), and the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub version: u64,
    pub member: u64,
    pub follow: u64,
    pub read: Read,
}

#[derive(Serialize, Deserialize)]
struct ReadWire {
    version: u64,
    member: u64,
    follow: u64,
    what: u8,
    or: bool,
    map: String,
    path: String,
    keys: Vec<(u32, String)>,
    since_ms: u64,
    max: u32,
    /// An arrival scan's start and its mark's tie (`since_ms` is the mark's millis).
    /// Defaulted, like every field added after the first: a member's message without them
    /// still decodes.
    #[serde(default)]
    scan_start_ms: u64,
    #[serde(default)]
    tie: u16,
    #[serde(default)]
    attribute: String,
}

const LEAVES: u8 = 0;
const LWW_LEAF: u8 = 1;
const OR_LEAF: u8 = 2;
const OR_ENTRIES: u8 = 3;
const LWW_SINCE: u8 = 4;
const LWW_RECORDS: u8 = 5;
const LWW_ARRIVED: u8 = 6;
const MAP_CATALOG: u8 = 7;
const ATTRIBUTE_COUNT: u8 = 8;

/// Longest attribute path a count may name.
const ATTRIBUTE_MAX: usize = 1_024;

fn kind_of(or: bool) -> MapKind {
    if or { MapKind::Or } else { MapKind::Lww }
}

impl ReadRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut wire = ReadWire {
            version: self.version,
            member: self.member,
            follow: self.follow,
            what: LEAVES,
            or: false,
            map: String::new(),
            path: String::new(),
            keys: Vec::new(),
            since_ms: 0,
            max: 0,
            scan_start_ms: 0,
            tie: 0,
            attribute: String::new(),
        };
        match &self.read {
            Read::Leaves { kind, map, path } => {
                (wire.or, wire.map, wire.path) = (*kind == MapKind::Or, map.clone(), path.clone());
            }
            Read::LwwLeaf { map, path } => {
                (wire.what, wire.map, wire.path) = (LWW_LEAF, map.clone(), path.clone());
            }
            Read::OrLeaf { map, path } => {
                (wire.what, wire.map, wire.path) = (OR_LEAF, map.clone(), path.clone());
            }
            Read::LwwRecords { map } => (wire.what, wire.map) = (LWW_RECORDS, map.clone()),
            Read::OrEntries { map, keys } => {
                (wire.what, wire.map) = (OR_ENTRIES, map.clone());
                wire.keys = keys
                    .iter()
                    .map(|(at, key)| (u32::try_from(*at).unwrap_or(u32::MAX), key.clone()))
                    .collect();
            }
            Read::LwwSince { map, since_ms, max } => {
                (wire.what, wire.map, wire.since_ms) = (LWW_SINCE, map.clone(), *since_ms);
                wire.max = u32::try_from(*max).unwrap_or(u32::MAX);
            }
            Read::LwwArrivedSince {
                map,
                from,
                scan_start_ms,
                max,
            } => {
                (wire.what, wire.map, wire.since_ms) = (LWW_ARRIVED, map.clone(), from.ms);
                (wire.tie, wire.scan_start_ms) = (from.tie, *scan_start_ms);
                wire.max = u32::try_from(*max).unwrap_or(u32::MAX);
            }
            Read::MapCatalog => wire.what = MAP_CATALOG,
            Read::AttributeCount { map, attribute } => {
                (wire.what, wire.map) = (ATTRIBUTE_COUNT, map.clone());
                wire.attribute.clone_from(attribute);
            }
        }
        super::wire::encode(&wire)
    }

    /// Reads [`ReadRequest::encode`]'s bytes, checking the map name, the path and the
    /// bounds as a client request's are checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let wire: ReadWire = super::wire::decode(bytes)?;
        if wire.what != MAP_CATALOG {
            check_map_name(&wire.map).map_err(|r| r.reason)?;
        }
        let leaf = |path: &str| match path_depth(path) {
            Ok(depth) if depth == MERKLE_DEPTH => Ok(()),
            _ => Err(format!("{path:?} is not a leaf path")),
        };
        let read = match wire.what {
            LEAVES => {
                path_depth(&wire.path).map_err(|e| e.to_string())?;
                Read::Leaves {
                    kind: kind_of(wire.or),
                    map: wire.map,
                    path: wire.path,
                }
            }
            LWW_LEAF | OR_LEAF => {
                leaf(&wire.path)?;
                let (map, path) = (wire.map, wire.path);
                if wire.what == LWW_LEAF {
                    Read::LwwLeaf { map, path }
                } else {
                    Read::OrLeaf { map, path }
                }
            }
            LWW_RECORDS => Read::LwwRecords { map: wire.map },
            OR_ENTRIES if wire.keys.len() <= KEYS_MAX => Read::OrEntries {
                map: wire.map,
                keys: wire
                    .keys
                    .into_iter()
                    .map(|(at, k)| (at as usize, k))
                    .collect(),
            },
            LWW_SINCE if wire.max as usize <= SINCE_MAX => Read::LwwSince {
                map: wire.map,
                since_ms: wire.since_ms,
                max: wire.max as usize,
            },
            // Shards cut a scan at the delta's bound: another one could not be honoured.
            LWW_ARRIVED if wire.max as usize == SINCE_MAX => Read::LwwArrivedSince {
                map: wire.map,
                from: Mark {
                    ms: wire.since_ms,
                    tie: wire.tie,
                },
                scan_start_ms: wire.scan_start_ms,
                max: SINCE_MAX,
            },
            MAP_CATALOG => Read::MapCatalog,
            ATTRIBUTE_COUNT if (1..=ATTRIBUTE_MAX).contains(&wire.attribute.len()) => {
                Read::AttributeCount {
                    map: wire.map,
                    attribute: wire.attribute,
                }
            }
            other => return Err(format!("an unknown or oversized read ({other})")),
        };
        Ok(Self {
            version: wire.version,
            member: wire.member,
            follow: wire.follow,
            read,
        })
    }
}

const SUMS: u8 = 0;
const RECORDS: u8 = 1;
const ENTRIES: u8 = 2;
const INDEXED: u8 = 3;
const TOO_MANY: u8 = 4;
const SINCE: u8 = 5;
const ARRIVALS: u8 = 6;
const COUNTS: u8 = 7;
const COUNT: u8 = 8;

/// An answer: the table version it was read under, then the part — or nothing after the
/// version when the member's table is another one than the request's.
pub fn encode_answer(version: u64, part: Option<&ReadPart>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u64(version);
    let Some(part) = part else {
        return out.freeze();
    };
    match part {
        ReadPart::Sums(sums) => {
            out.put_u8(SUMS);
            put_len(&mut out, sums.len());
            for (leaf, sum) in sums {
                out.put_u16(*leaf);
                out.put_u32(sum.hash);
                out.put_u32(sum.count);
            }
        }
        ReadPart::LwwRecords(records) => {
            out.put_u8(RECORDS);
            out.put_slice(&records_message(records.clone()).encode());
        }
        ReadPart::OrEntries(entries) => {
            out.put_u8(ENTRIES);
            out.put_slice(&entries_message(entries.clone()).encode());
        }
        ReadPart::Indexed(found) => {
            out.put_u8(INDEXED);
            put_len(&mut out, found.len());
            for (at, _) in found {
                out.put_u32(u32::try_from(*at).unwrap_or(u32::MAX));
            }
            let entries = found.iter().map(|(_, e)| e.clone()).collect();
            out.put_slice(&diff_message(entries).encode());
        }
        ReadPart::Since(None) => out.put_u8(TOO_MANY),
        ReadPart::Since(Some(records)) => {
            out.put_u8(SINCE);
            put_len(&mut out, records.len());
            for (leaf, _) in records {
                out.put_u16(*leaf);
            }
            let records = records.iter().map(|(_, r)| r.clone()).collect();
            out.put_slice(&records_message(records).encode());
        }
        ReadPart::Arrivals(arrivals) => {
            out.put_u8(ARRIVALS);
            out.put_u8(u8::from(arrivals.truncated));
            put_len(&mut out, arrivals.records.len());
            for arrival in &arrivals.records {
                out.put_u64(arrival.arrived_ms);
                out.put_u16(arrival.tie);
            }
            let records = arrivals.records.iter().map(|a| LeafRecord {
                key: a.key.as_str().into(),
                record: a.record.clone(),
            });
            out.put_slice(&records_message(records.collect()).encode());
        }
        ReadPart::Counts(counts) => {
            out.put_u8(COUNTS);
            put_len(&mut out, counts.len());
            for (name, count) in counts {
                out.put_u64(*count);
                // Map names are checked to at most 256 bytes where they enter.
                out.put_u16(u16::try_from(name.len()).unwrap_or(u16::MAX));
                out.put_slice(name.as_bytes());
            }
        }
        ReadPart::Count(count) => {
            out.put_u8(COUNT);
            out.put_u64(*count);
        }
    }
    out.freeze()
}

/// Reads [`encode_answer`]'s bytes: the version, and the part if there is one.
pub fn decode_answer(mut bytes: Bytes) -> Result<(u64, Option<ReadPart>), String> {
    let malformed = || "a malformed read answer".to_owned();
    if bytes.len() < 8 {
        return Err(malformed());
    }
    let version = bytes.get_u64();
    if bytes.is_empty() {
        return Ok((version, None));
    }
    let part = match bytes.get_u8() {
        SUMS => {
            let n = take_len(&mut bytes, 10)?;
            let sums = (0..n)
                .map(|_| {
                    let leaf = bytes.get_u16();
                    let (hash, count) = (bytes.get_u32(), bytes.get_u32());
                    (leaf, Sum { hash, count })
                })
                .collect();
            ReadPart::Sums(sums)
        }
        RECORDS => ReadPart::LwwRecords(records_of(&bytes)?),
        ENTRIES => match decode_message(&bytes)? {
            Message::OrMapSyncRespLeaf(leaf) => ReadPart::OrEntries(leaf.entries),
            _ => return Err(malformed()),
        },
        INDEXED => {
            let n = take_len(&mut bytes, 4)?;
            let at: Vec<usize> = (0..n).map(|_| bytes.get_u32() as usize).collect();
            let entries = match decode_message(&bytes)? {
                Message::OrMapDiffResponse(diff) if diff.entries.len() == n => diff.entries,
                _ => return Err(malformed()),
            };
            ReadPart::Indexed(at.into_iter().zip(entries).collect())
        }
        TOO_MANY => ReadPart::Since(None),
        SINCE => {
            let n = take_len(&mut bytes, 2)?;
            let leaves: Vec<u16> = (0..n).map(|_| bytes.get_u16()).collect();
            let records = records_of(&bytes)?;
            if records.len() != n {
                return Err(malformed());
            }
            ReadPart::Since(Some(leaves.into_iter().zip(records).collect()))
        }
        ARRIVALS => ReadPart::Arrivals(arrivals_of(&mut bytes)?),
        COUNTS => ReadPart::Counts(counts_of(&mut bytes)?),
        COUNT if bytes.len() == 8 => ReadPart::Count(bytes.get_u64()),
        _ => return Err(malformed()),
    };
    Ok((version, Some(part)))
}

/// An [`ARRIVALS`] part after its tag: whether it was cut, each record's place in the
/// arrival order, then the records.
fn arrivals_of(bytes: &mut Bytes) -> Result<Arrivals, String> {
    if bytes.is_empty() {
        return Err("a read answer without its cut flag".into());
    }
    let truncated = bytes.get_u8() != 0;
    let n = take_len(bytes, 10)?;
    let marks: Vec<(u64, u16)> = (0..n).map(|_| (bytes.get_u64(), bytes.get_u16())).collect();
    let records = records_of(bytes)?;
    if records.len() != n {
        return Err("a read answer with fewer records than places".into());
    }
    let records: Vec<Arrival> = marks
        .into_iter()
        .zip(records)
        .map(|((arrived_ms, tie), r)| Arrival {
            arrived_ms,
            tie,
            key: r.key.into(),
            record: r.record,
        })
        .collect();
    // What merging relies on: the order, and a cut part ending at a record.
    let ordered = records
        .windows(2)
        .all(|w| (w[0].mark(), &w[0].key) < (w[1].mark(), &w[1].key));
    if !ordered || (truncated && records.is_empty()) {
        return Err("a read answer with records out of order, or cut before any".into());
    }
    Ok(Arrivals { records, truncated })
}

/// A [`COUNTS`] part after its tag: `(count, name)` pairs.
fn counts_of(bytes: &mut Bytes) -> Result<Vec<(String, u64)>, String> {
    let malformed = || "a malformed count answer".to_owned();
    let n = take_len(bytes, 10)?;
    let mut counts = Vec::with_capacity(n);
    for _ in 0..n {
        if bytes.len() < 10 {
            return Err(malformed());
        }
        let count = bytes.get_u64();
        let len = usize::from(bytes.get_u16());
        if bytes.len() < len {
            return Err(malformed());
        }
        let name = String::from_utf8(bytes.split_to(len).to_vec()).map_err(|_| malformed())?;
        counts.push((name, count));
    }
    if !bytes.is_empty() {
        return Err(malformed());
    }
    Ok(counts)
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// A count of items of `each` bytes, checked against what is left.
fn take_len(bytes: &mut Bytes, each: usize) -> Result<usize, String> {
    if bytes.len() < 4 {
        return Err("a read answer without its count".into());
    }
    let n = bytes.get_u32() as usize;
    if n.saturating_mul(each) > bytes.len() {
        return Err("a read answer shorter than its count".into());
    }
    Ok(n)
}

fn records_message(records: Vec<LeafRecord>) -> Message {
    Message::SyncRespLeaf(SyncRespLeaf {
        map_name: "".into(),
        path: "".into(),
        records,
    })
}

fn entries_message(entries: Vec<OrMapEntry>) -> Message {
    Message::OrMapSyncRespLeaf(OrMapSyncRespLeaf {
        map_name: "".into(),
        path: "".into(),
        entries,
        covering_epoch: None,
    })
}

fn diff_message(entries: Vec<OrMapEntry>) -> Message {
    Message::OrMapDiffResponse(OrMapDiffResponse {
        map_name: "".into(),
        entries,
        covering_epoch: None,
    })
}

fn records_of(bytes: &[u8]) -> Result<Vec<LeafRecord>, String> {
    match decode_message(bytes)? {
        Message::SyncRespLeaf(leaf) => Ok(leaf.records),
        _ => Err("a read answer that is not records".into()),
    }
}

/// Decodes a message a member encoded: beyond a client frame's size, as a large part may be.
pub fn decode_message(bytes: &[u8]) -> Result<Message, String> {
    let limits = Limits {
        max_frame_bytes: usize::MAX,
        max_str_bytes: usize::MAX,
        max_collection_len: usize::MAX,
        ..Limits::default()
    };
    Message::decode(bytes, &limits).map_err(|e| e.to_string())
}

/// An interest: `member`'s interest `generation` in `name` (a map of a kind, or a topic)
/// began (`on`) or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestWire {
    pub member: u64,
    /// 0: an LWW map, 1: an OR-Map, 2: a topic, 3: a counter.
    pub kind: u8,
    pub name: String,
    pub generation: u64,
    pub on: bool,
}

impl InterestWire {
    pub fn new(member: u64, followed: Followed, name: &str, generation: u64, on: bool) -> Self {
        let kind = match followed {
            Followed::Map(MapKind::Lww) => 0,
            Followed::Map(MapKind::Or) => 1,
            Followed::Topic => 2,
            Followed::Counter => 3,
        };
        Self {
            member,
            kind,
            name: name.to_owned(),
            generation,
            on,
        }
    }

    /// What it follows; an error for an unknown kind or a name no map or topic may have.
    pub fn followed(&self) -> Result<Followed, String> {
        let followed = match self.kind {
            0 => Followed::Map(MapKind::Lww),
            1 => Followed::Map(MapKind::Or),
            2 => Followed::Topic,
            3 => Followed::Counter,
            other => return Err(format!("an unknown interest kind {other}")),
        };
        match followed {
            Followed::Map(_) => check_map_name(&self.name).map_err(|r| r.reason)?,
            Followed::Topic => crate::coordination::names::check("topic", &self.name)?,
            Followed::Counter => {
                crate::coordination::counters::checked_name(&self.name).map_err(|(_, why)| why)?;
            }
        }
        Ok(followed)
    }
}

/// A relayed topic message: the receiver's interest generation, the topic, then the
/// `TOPIC_MESSAGE` frame as encoded for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRelayWire {
    pub generation: u64,
    pub topic: String,
    pub frame: Bytes,
}

impl TopicRelayWire {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(10 + self.topic.len() + self.frame.len());
        out.put_u64(self.generation);
        out.put_u16(u16::try_from(self.topic.len()).unwrap_or(u16::MAX));
        out.put_slice(self.topic.as_bytes());
        out.put_slice(&self.frame);
        out.freeze()
    }

    pub fn decode(mut bytes: Bytes) -> Result<Self, String> {
        let malformed = || "a malformed relayed topic message".to_owned();
        if bytes.len() < 10 {
            return Err(malformed());
        }
        let generation = bytes.get_u64();
        let len = usize::from(bytes.get_u16());
        if bytes.len() < len {
            return Err(malformed());
        }
        let topic = String::from_utf8(bytes.split_to(len).to_vec()).map_err(|_| malformed())?;
        Ok(Self {
            generation,
            topic,
            frame: bytes,
        })
    }
}

/// A relayed event: the sender's sequence number towards this member, the map, the
/// receiver's interest generation it was relayed under, the writer's connection on the
/// receiver (0: none), then the event frame as encoded for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayWire {
    pub seq: u64,
    pub kind: MapKind,
    pub map: String,
    pub generation: u64,
    pub except: u64,
    pub frame: Bytes,
}

impl RelayWire {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(27 + self.map.len() + self.frame.len());
        out.put_u64(self.seq);
        out.put_u8(u8::from(self.kind == MapKind::Or));
        out.put_u64(self.generation);
        out.put_u64(self.except);
        out.put_u16(u16::try_from(self.map.len()).unwrap_or(u16::MAX));
        out.put_slice(self.map.as_bytes());
        out.put_slice(&self.frame);
        out.freeze()
    }

    pub fn decode(mut bytes: Bytes) -> Result<Self, String> {
        let malformed = || "a malformed relayed event".to_owned();
        if bytes.len() < 27 {
            return Err(malformed());
        }
        let seq = bytes.get_u64();
        let kind = kind_of(bytes.get_u8() != 0);
        let generation = bytes.get_u64();
        let except = bytes.get_u64();
        let len = usize::from(bytes.get_u16());
        if bytes.len() < len {
            return Err(malformed());
        }
        let map = String::from_utf8(bytes.split_to(len).to_vec()).map_err(|_| malformed())?;
        Ok(Self {
            seq,
            kind,
            map,
            generation,
            except,
            frame: bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::{LwwRecord, NodeId, OrRecord, Timestamp, Value};

    fn record(key: &str) -> LeafRecord {
        let ts = Timestamp::new(5, 1, NodeId::new("n").unwrap());
        LeafRecord {
            key: key.into(),
            record: LwwRecord::new(Value::from("v"), ts, None),
        }
    }

    fn arrival(arrived_ms: u64, tie: u16, key: &str) -> Arrival {
        Arrival {
            arrived_ms,
            tie,
            key: key.into(),
            record: record(key).record,
        }
    }

    fn entry(key: &str) -> OrMapEntry {
        OrMapEntry {
            key: key.into(),
            records: vec![OrRecord {
                value: Value::from(1i64),
                timestamp: Timestamp::new(5, 1, NodeId::new("n").unwrap()),
                tag: "t".into(),
                ttl_ms: None,
            }],
            tombstones: vec!["x".into()],
        }
    }

    #[test]
    fn every_read_round_trips_and_bad_ones_are_refused() {
        let reads = [
            Read::Leaves {
                kind: MapKind::Or,
                map: "m".into(),
                path: "8a".into(),
            },
            Read::LwwLeaf {
                map: "m".into(),
                path: "8a1".into(),
            },
            Read::OrLeaf {
                map: "m".into(),
                path: "000".into(),
            },
            Read::LwwRecords { map: "m".into() },
            Read::OrEntries {
                map: "m".into(),
                keys: vec![(0, "a".into()), (7, "b".into())],
            },
            Read::LwwSince {
                map: "m".into(),
                since_ms: 9,
                max: 100,
            },
            Read::LwwArrivedSince {
                map: "m".into(),
                from: Mark { ms: 9, tie: 300 },
                scan_start_ms: 12,
                max: SINCE_MAX,
            },
            Read::MapCatalog,
            Read::AttributeCount {
                map: "m".into(),
                attribute: "address.city".into(),
            },
        ];
        for read in reads {
            let request = ReadRequest {
                version: 4,
                member: 2,
                follow: 7,
                read,
            };
            assert_eq!(ReadRequest::decode(&request.encode()), Ok(request));
        }
        let bad = |read: Read| {
            let request = ReadRequest {
                version: 1,
                member: 1,
                follow: 0,
                read,
            };
            ReadRequest::decode(&request.encode())
        };
        let leaf = |map: &str, path: &str| Read::LwwLeaf {
            map: map.into(),
            path: path.into(),
        };
        assert!(bad(leaf("m", "8a")).is_err(), "not a leaf");
        assert!(bad(leaf("__topgun_x", "8a1")).is_err(), "a reserved map");
        assert!(bad(leaf("", "8a1")).is_err());
        let since = Read::LwwSince {
            map: "m".into(),
            since_ms: 0,
            max: SINCE_MAX + 1,
        };
        assert!(bad(since).is_err());
        let arrived = Read::LwwArrivedSince {
            map: "m".into(),
            from: Mark::at(0),
            scan_start_ms: 0,
            max: 10,
        };
        assert!(
            bad(arrived).is_err(),
            "a scan cut elsewhere than the delta's bound"
        );
        let count = |attribute: String| Read::AttributeCount {
            map: "m".into(),
            attribute,
        };
        assert!(bad(count(String::new())).is_err(), "no attribute");
        assert!(bad(count("a".repeat(ATTRIBUTE_MAX + 1))).is_err());
        assert!(ReadRequest::decode(b"\x93junk").is_err());
    }

    #[test]
    fn every_part_round_trips_and_truncated_answers_are_errors() {
        let sum = Sum { hash: 9, count: 2 };
        let parts = [
            ReadPart::Sums(vec![(3, sum), (4095, sum)]),
            ReadPart::LwwRecords(vec![record("a"), record("b")]),
            ReadPart::OrEntries(vec![entry("a")]),
            ReadPart::Indexed(vec![(4, entry("a")), (1, entry("b"))]),
            ReadPart::Since(None),
            ReadPart::Since(Some(vec![(3, record("a"))])),
            ReadPart::Sums(Vec::new()),
            ReadPart::Arrivals(Arrivals {
                records: vec![arrival(5, 2, "a"), arrival(5, 9, "b")],
                truncated: true,
            }),
            ReadPart::Arrivals(Arrivals::default()),
            ReadPart::Counts(vec![("todos".into(), 3), ("é".into(), u64::MAX)]),
            ReadPart::Counts(Vec::new()),
            ReadPart::Count(42),
        ];
        let unordered = ReadPart::Arrivals(Arrivals {
            records: vec![arrival(5, 9, "b"), arrival(5, 2, "a")],
            truncated: false,
        });
        assert!(decode_answer(encode_answer(1, Some(&unordered))).is_err());
        let cut_empty = ReadPart::Arrivals(Arrivals {
            records: Vec::new(),
            truncated: true,
        });
        assert!(decode_answer(encode_answer(1, Some(&cut_empty))).is_err());
        for part in parts {
            let bytes = encode_answer(12, Some(&part));
            assert_eq!(decode_answer(bytes.clone()), Ok((12, Some(part))));
            for cut in [3, 9, bytes.len() - 1] {
                if cut < bytes.len() && cut != 8 {
                    assert!(decode_answer(bytes.slice(..cut)).is_err(), "cut at {cut}");
                }
            }
        }
        assert_eq!(decode_answer(encode_answer(13, None)), Ok((13, None)));
    }

    #[test]
    fn relays_and_interests_round_trip() {
        let relay = RelayWire {
            seq: 3,
            kind: MapKind::Or,
            map: "todos".into(),
            generation: 2,
            except: 17,
            frame: Bytes::from_static(b"\x81\xa4type"),
        };
        assert_eq!(RelayWire::decode(relay.encode()), Ok(relay.clone()));
        assert!(RelayWire::decode(relay.encode().slice(..20)).is_err());
        for (followed, name) in [
            (Followed::Map(MapKind::Lww), "m"),
            (Followed::Map(MapKind::Or), "m"),
            (Followed::Topic, "chat.room-1"),
            (Followed::Counter, "likes"),
        ] {
            let interest = InterestWire::new(1, followed, name, 3, true);
            let bytes = super::super::wire::encode(&interest);
            let back = super::super::wire::decode::<InterestWire>(&bytes).unwrap();
            assert_eq!(back.followed(), Ok(followed));
            assert_eq!(back, interest);
        }
        let bad = |kind, name: &str| InterestWire {
            kind,
            ..InterestWire::new(1, Followed::Topic, name, 1, true)
        };
        assert!(bad(7, "t").followed().is_err());
        assert!(bad(2, "no spaces").followed().is_err());
        assert!(bad(0, "__topgun_x").followed().is_err());
        let topic = TopicRelayWire {
            generation: 9,
            topic: "t".into(),
            frame: Bytes::from_static(b"\x81"),
        };
        assert_eq!(TopicRelayWire::decode(topic.encode()), Ok(topic.clone()));
        assert!(TopicRelayWire::decode(topic.encode().slice(..9)).is_err());
    }
}
