//! Typed decoding from [`Raw`] and encoding to MsgPack: the [`Wire`] trait, its
//! implementations for primitives and core types, and the macros that derive it for
//! message structs and string enums.
//!
//! Integer rules (PROTOCOL.md §1.5): msgpackr sends every number that is not an integer in
//! `[-2^31, 2^32)` as float64, so `u64`/`i64` fields (timestamps, TTLs, epochs, tokens)
//! accept a whole, in-range float64 exactly; `u32` fields (hashes, limits, codes) are strict
//! and refuse any float, as the reference server does. The two exceptions of §1.5 have
//! their own types: `Timestamp.counter` is tolerant, `searchTimeMs` is [`StrictU64`].

use std::collections::BTreeMap;

use super::error::{DecodeError, ErrorKind, Path};
use super::msgpack::{Next, Number, Raw, Reader, Writer};
use crate::hlc::Timestamp;
use crate::lww_map::LwwRecord;
use crate::or_map::{OrMapEntry, OrRecord};
use crate::value::{CompactString, ExtTime, Value, ValueMap};

/// A type with a wire form.
pub trait Wire: Sized {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError>;

    /// The value of a map field whose key is absent: an error unless the field is optional.
    fn absent(at: Path<'_>) -> Result<Self, DecodeError> {
        Err(DecodeError::at(at, ErrorKind::MissingField))
    }

    fn encode(&self, w: &mut Writer);

    /// Whether a map field holding this value is left out when encoding.
    fn is_absent(&self) -> bool {
        false
    }
}

/// A struct encoded as a map, whose fields can also be spliced into an enclosing map
/// (flat messages put their fields next to `type`).
pub trait WireFields {
    fn field_count(&self) -> usize;
    fn encode_fields(&self, w: &mut Writer);
}

fn out_of_range(
    at: Path<'_>,
    expected: &'static str,
    found: &impl std::fmt::Display,
) -> DecodeError {
    DecodeError::at(
        at,
        ErrorKind::OutOfRange {
            expected,
            found: found.to_string(),
        },
    )
}

const U64_EXPECTED: &str = "a non-negative integer";
const U32_EXPECTED: &str = "an integer from 0 to 4294967295";

/// An exact `u64` from an integer or a whole, in-range float.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn tolerant_u64(r: &mut Reader<'_>, at: Path<'_>) -> Result<u64, DecodeError> {
    // 2^64 as f64; every whole float below it converts exactly.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    let raw = r.read_number(at, U64_EXPECTED)?;
    match raw {
        Number::Int(i) => u64::try_from(i).map_err(|_| out_of_range(at, U64_EXPECTED, &raw)),
        Number::UInt(u) => Ok(u),
        Number::Float(f) if f.fract() == 0.0 && (0.0..LIMIT).contains(&f) => Ok(f as u64),
        Number::Float(_) => Err(out_of_range(at, U64_EXPECTED, &raw)),
    }
}

/// An exact `u32` from an integer only.
fn strict_u32(r: &mut Reader<'_>, at: Path<'_>) -> Result<u32, DecodeError> {
    let raw = r.read_number(at, U32_EXPECTED)?;
    match raw {
        Number::Int(i) => u32::try_from(i).map_err(|_| out_of_range(at, U32_EXPECTED, &raw)),
        Number::UInt(_) => Err(out_of_range(at, U32_EXPECTED, &raw)),
        Number::Float(_) => Err(DecodeError::wrong_type(at, U32_EXPECTED, raw)),
    }
}

/// MsgPack's timestamp extension type (a JavaScript `Date` from msgpackr).
const TIMESTAMP_EXT: i8 = -1;

/// Decodes a timestamp extension body: 32-bit seconds; 30-bit nanoseconds and 34-bit
/// seconds; or 32-bit nanoseconds and 64-bit signed seconds.
fn ext_time(data: &[u8], at: Path<'_>) -> Result<ExtTime, DecodeError> {
    let invalid = |why: &str| {
        DecodeError::at(
            at,
            ErrorKind::Invalid(format!("timestamp extension: {why}")),
        )
    };
    let be32 = |b: &[u8]| b.try_into().map(u32::from_be_bytes).ok();
    let be64 = |b: &[u8]| b.try_into().map(u64::from_be_bytes).ok();
    let time = match data.len() {
        4 => ExtTime {
            seconds: i64::from(be32(data).ok_or_else(|| invalid("short body"))?),
            nanos: 0,
        },
        8 => {
            let packed = be64(data).ok_or_else(|| invalid("short body"))?;
            ExtTime {
                // 30 bits of nanoseconds above 34 bits of seconds: both fit their types.
                seconds: i64::try_from(packed & ((1 << 34) - 1)).unwrap_or(0),
                nanos: u32::try_from(packed >> 34).unwrap_or(u32::MAX),
            }
        }
        12 => {
            let (nanos, seconds) = data.split_at(4);
            ExtTime {
                seconds: be64(seconds)
                    .map(u64::cast_signed)
                    .ok_or_else(|| invalid("short body"))?,
                nanos: be32(nanos).ok_or_else(|| invalid("short body"))?,
            }
        }
        _ => return Err(invalid("body must be 4, 8 or 12 bytes")),
    };
    if time.nanos >= 1_000_000_000 {
        return Err(invalid("nanoseconds out of range"));
    }
    Ok(time)
}

/// The smallest timestamp extension body for `t`.
fn ext_time_body(t: ExtTime) -> Vec<u8> {
    match u64::try_from(t.seconds) {
        Ok(s) if t.nanos == 0 && u32::try_from(s).is_ok() => s.to_be_bytes()[4..].to_vec(),
        Ok(s) if s < (1 << 34) => ((u64::from(t.nanos) << 34) | s).to_be_bytes().to_vec(),
        _ => {
            let mut body = t.nanos.to_be_bytes().to_vec();
            body.extend_from_slice(&t.seconds.to_be_bytes());
            body
        }
    }
}

/// A scalar record value; extension types other than timestamps are refused.
fn scalar_value(r: &mut Reader<'_>, at: Path<'_>) -> Result<Value, DecodeError> {
    // Fast paths for the common kinds, without building a `Raw`.
    match r.peek_tag() {
        Some(0xa0..=0xbf | 0xd9..=0xdb) => {
            return Ok(Value::Str(CompactString::from(r.read_str(at)?)));
        }
        Some(0x00..=0x7f | 0xcb | 0xcc..=0xd3 | 0xe0..=0xff | 0xca) => {
            return Ok(match r.read_number(at, "a number")? {
                Number::Int(i) => Value::Int(i),
                Number::UInt(u) => Value::UInt(u),
                Number::Float(f) => Value::Float(f),
            });
        }
        Some(0xc2 | 0xc3) => return r.read_bool(at).map(Value::Bool),
        _ if r.take_nil() => return Ok(Value::Nil),
        _ => {}
    }
    Ok(match r.read_raw(at)? {
        Raw::Int(i) => Value::Int(i),
        Raw::UInt(u) => Value::UInt(u),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(CompactString::from(s)),
        Raw::Bin(b) => Value::Bin(b.to_vec()),
        Raw::Bool(b) => Value::Bool(b),
        Raw::Ext(TIMESTAMP_EXT, data) => Value::Time(ext_time(data, at)?),
        Raw::Ext(t, _) => return Err(DecodeError::at(at, ErrorKind::UnsupportedExt(t))),
        Raw::Nil | Raw::Array(_) | Raw::Map(_) => Value::Nil,
    })
}

impl Wire for CompactString {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        r.read_str(at).map(CompactString::from)
    }

    fn encode(&self, w: &mut Writer) {
        w.str(self);
    }
}

impl Wire for String {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        r.read_str(at).map(str::to_owned)
    }

    fn encode(&self, w: &mut Writer) {
        w.str(self);
    }
}

impl Wire for bool {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        r.read_bool(at)
    }

    fn encode(&self, w: &mut Writer) {
        w.bool(*self);
    }
}

/// Strict: hashes, limits, codes, versions.
impl Wire for u32 {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        strict_u32(r, at)
    }

    fn encode(&self, w: &mut Writer) {
        w.uint(u64::from(*self));
    }
}

/// Tolerant: timestamps, TTLs, epochs, fencing tokens, timeouts.
impl Wire for u64 {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        tolerant_u64(r, at)
    }

    fn encode(&self, w: &mut Writer) {
        w.uint(*self);
    }
}

/// Tolerant (`PARTITION_MAP.generatedAt`).
impl Wire for i64 {
    #[allow(clippy::cast_possible_truncation)]
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        const EXPECTED: &str = "an integer";
        // 2^63 as f64; whole floats in [-2^63, 2^63) convert exactly.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        let raw = r.read_number(at, EXPECTED)?;
        match raw {
            Number::Int(i) => Ok(i),
            Number::Float(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(f as i64),
            _ => Err(out_of_range(at, EXPECTED, &raw)),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.int(*self);
    }
}

/// Scores, boosts, counter totals: any number.
impl Wire for f64 {
    #[allow(clippy::cast_precision_loss)]
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        match r.read_number(at, "a number")? {
            Number::Int(i) => Ok(i as f64),
            Number::UInt(u) => Ok(u as f64),
            Number::Float(f) => Ok(f),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.f64(*self);
    }
}

/// A `u64` that refuses floats (`searchTimeMs`, PROTOCOL.md §1.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StrictU64(pub u64);

impl Wire for StrictU64 {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let raw = r.read_number(at, U64_EXPECTED)?;
        match raw {
            Number::Int(i) => u64::try_from(i)
                .map(Self)
                .map_err(|_| out_of_range(at, U64_EXPECTED, &raw)),
            Number::UInt(u) => Ok(Self(u)),
            Number::Float(_) => Err(DecodeError::wrong_type(at, U64_EXPECTED, raw)),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.uint(self.0);
    }
}

/// Binary data (`bin` on the wire, `Uint8Array` in JavaScript).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bin(pub Vec<u8>);

impl Wire for Bin {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        r.read_bin(at).map(|b| Self(b.to_vec()))
    }

    fn encode(&self, w: &mut Writer) {
        w.bin(&self.0);
    }
}

impl Wire for Value {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        match r.next() {
            Next::Map => ValueMap::decode(r, at).map(Value::Map),
            Next::Array => {
                let mut items = Vec::with_capacity(r.len_hint());
                r.read_array(at, |r, i| {
                    items.push(Value::decode(r, at.index(i))?);
                    Ok(())
                })?;
                Ok(Value::Array(items))
            }
            Next::Nil | Next::Scalar => scalar_value(r, at),
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Value::Nil => w.nil(),
            Value::Bool(b) => w.bool(*b),
            Value::Int(i) => w.int(*i),
            Value::UInt(u) => w.uint(*u),
            Value::Float(f) => w.f64(*f),
            Value::Str(s) => w.str(s),
            Value::Bin(b) => w.bin(b),
            Value::Time(t) => w.ext(TIMESTAMP_EXT, &ext_time_body(*t)),
            Value::Array(items) => {
                w.array_header(items.len());
                for item in items {
                    item.encode(w);
                }
            }
            Value::Map(map) => map.encode(w),
        }
    }
}

impl Wire for ValueMap {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        // Repeated keys are looked for among the frame's bytes as the keys arrive, which
        // is cheaper than comparing the built strings afterwards; past this many entries
        // `from_entries` looks with a hash set.
        const SCAN_MAX: usize = 16;
        let mut keys: [&[u8]; SCAN_MAX] = [&[]; SCAN_MAX];
        let mut unique = true;
        let mut entries = Vec::with_capacity(r.len_hint());
        r.read_map(at, |r, key| {
            let i = entries.len();
            if i < SCAN_MAX {
                unique &= !keys[..i].contains(&key.as_bytes());
                keys[i] = key.as_bytes();
            }
            entries.push((CompactString::from(key), Value::decode(r, at.key(key))?));
            Ok(())
        })?;
        Ok(if unique && entries.len() <= SCAN_MAX {
            ValueMap::from_unique_entries(entries)
        } else {
            ValueMap::from_entries(entries)
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.map_header(self.len());
        for (k, v) in self.iter() {
            w.str(k);
            v.encode(w);
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let mut items = Vec::with_capacity(r.len_hint());
        r.read_array(at, |r, i| {
            items.push(T::decode(r, at.index(i))?);
            Ok(())
        })?;
        Ok(items)
    }

    fn encode(&self, w: &mut Writer) {
        w.array_header(self.len());
        for item in self {
            item.encode(w);
        }
    }
}

/// Optional: an absent key or nil is `None`; `None` is omitted from its map.
impl<T: Wire> Wire for Option<T> {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        if r.take_nil() {
            Ok(None)
        } else {
            T::decode(r, at).map(Some)
        }
    }

    fn absent(_at: Path<'_>) -> Result<Self, DecodeError> {
        Ok(None)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Some(v) => v.encode(w),
            None => w.nil(),
        }
    }

    fn is_absent(&self) -> bool {
        self.is_none()
    }
}

/// A string-keyed map (bucket hashes, counter totals, scores by method).
impl<T: Wire> Wire for BTreeMap<String, T> {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let mut map = BTreeMap::new();
        r.read_map(at, |r, key| {
            map.insert(key.to_owned(), T::decode(r, at.key(key))?);
            Ok(())
        })?;
        Ok(map)
    }

    fn encode(&self, w: &mut Writer) {
        w.map_header(self.len());
        for (k, v) in self {
            w.str(k);
            v.encode(w);
        }
    }
}

/// A field that distinguishes absent, present-nil and present-value (`record`, `orRecord`
/// and `orTag` of a client op, and a predicate's `value`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Field<T> {
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Absent | Self::Null => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl<T: Wire> Wire for Field<T> {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        if r.take_nil() {
            Ok(Self::Null)
        } else {
            T::decode(r, at).map(Self::Value)
        }
    }

    fn absent(_at: Path<'_>) -> Result<Self, DecodeError> {
        Ok(Self::Absent)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Value(v) => v.encode(w),
            Self::Absent | Self::Null => w.nil(),
        }
    }

    fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl Wire for Timestamp {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let (mut millis, mut counter, mut node) = (None, None, None);
        r.read_fields(at, |r, k| {
            match k {
                b"millis" => millis = Some(tolerant_u64(r, at.key("millis"))?),
                b"counter" => {
                    let at = at.key("counter");
                    let c = tolerant_u64(r, at)?;
                    let too_big = || {
                        DecodeError::at(
                            at,
                            ErrorKind::OutOfRange {
                                expected: U32_EXPECTED,
                                found: format!("integer {c}"),
                            },
                        )
                    };
                    counter = Some(u32::try_from(c).map_err(|_| too_big())?);
                }
                b"nodeId" => node = Some(r.read_node_id(at.key("nodeId"))?),
                _ => {
                    let k = r.unknown_key(k, at)?;
                    r.skip(at.key(k))?;
                }
            }
            Ok(())
        })?;
        let missing = |key| DecodeError::at(at.key(key), ErrorKind::MissingField);
        Ok(Timestamp::new(
            millis.ok_or_else(|| missing("millis"))?,
            counter.ok_or_else(|| missing("counter"))?,
            node.ok_or_else(|| missing("nodeId"))?,
        ))
    }

    fn encode(&self, w: &mut Writer) {
        w.map_header(3);
        w.str("millis");
        w.uint(self.millis);
        w.str("counter");
        w.uint(u64::from(self.counter));
        w.str("nodeId");
        w.str(self.node_id.as_str());
    }
}

wire_struct! {
    /// Wire form of [`LwwRecord`]; `value` nil (or absent) is a tombstone.
    struct LwwRecordWire {
        value: Option<Value> = "value",
        timestamp: Timestamp = "timestamp",
        ttl_ms: Option<u64> = "ttlMs",
    }
}

impl Wire for LwwRecord {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let w = LwwRecordWire::decode(r, at)?;
        Ok(LwwRecord::new(
            w.value.unwrap_or(Value::Nil),
            w.timestamp,
            w.ttl_ms,
        ))
    }

    fn encode(&self, w: &mut Writer) {
        // `value` is always written (nil for a tombstone): the TS client reads the key.
        let fields = 2 + usize::from(self.ttl_ms.is_some());
        w.map_header(fields);
        w.str("value");
        self.value.encode(w);
        w.str("timestamp");
        self.timestamp.encode(w);
        if let Some(ttl) = self.ttl_ms {
            w.str("ttlMs");
            w.uint(ttl);
        }
    }
}

wire_struct! {
    struct OrRecordWire {
        value: Option<Value> = "value",
        timestamp: Timestamp = "timestamp",
        tag: String = "tag",
        ttl_ms: Option<u64> = "ttlMs",
    }
}

impl Wire for OrRecord {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let w = OrRecordWire::decode(r, at)?;
        Ok(OrRecord {
            value: w.value.unwrap_or(Value::Nil),
            timestamp: w.timestamp,
            tag: w.tag,
            ttl_ms: w.ttl_ms,
        })
    }

    fn encode(&self, w: &mut Writer) {
        let fields = 3 + usize::from(self.ttl_ms.is_some());
        w.map_header(fields);
        w.str("value");
        self.value.encode(w);
        w.str("timestamp");
        self.timestamp.encode(w);
        w.str("tag");
        w.str(&self.tag);
        if let Some(ttl) = self.ttl_ms {
            w.str("ttlMs");
            w.uint(ttl);
        }
    }
}

wire_struct! {
    struct OrMapEntryWire {
        key: String = "key",
        records: Vec<OrRecord> = "records",
        tombstones: Vec<String> = "tombstones",
    }
}

impl Wire for OrMapEntry {
    fn decode(r: &mut Reader<'_>, at: Path<'_>) -> Result<Self, DecodeError> {
        let w = OrMapEntryWire::decode(r, at)?;
        Ok(OrMapEntry {
            key: w.key,
            records: w.records,
            tombstones: w.tombstones,
        })
    }

    fn encode(&self, w: &mut Writer) {
        w.map_header(3);
        w.str("key");
        w.str(&self.key);
        w.str("records");
        self.records.encode(w);
        w.str("tombstones");
        self.tombstones.encode(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::NodeId;
    use crate::protocol::msgpack::Limits;

    fn decode<T: Wire>(frame: &[u8]) -> Result<T, DecodeError> {
        let mut r = Reader::new(frame, &Limits::default())?;
        let value = T::decode(&mut r, Path::Root)?;
        r.finish()?;
        Ok(value)
    }

    fn encoded<T: Wire>(v: &T) -> Vec<u8> {
        let mut w = Writer::new();
        v.encode(&mut w);
        w.into_bytes()
    }

    fn float(f: f64) -> Vec<u8> {
        let mut w = Writer::new();
        w.f64(f);
        w.into_bytes()
    }

    #[test]
    fn tolerant_fields_take_whole_floats_only() {
        assert_eq!(
            decode::<u64>(&float(1_700_000_000_000.0)),
            Ok(1_700_000_000_000)
        );
        assert_eq!(decode::<u64>(&float(0.0)), Ok(0));
        let frac = decode::<u64>(&float(1.5)).unwrap_err();
        assert!(
            matches!(frac.kind(), ErrorKind::OutOfRange { .. }),
            "{frac}"
        );
        assert!(decode::<u64>(&float(-1.0)).is_err());
        assert!(
            decode::<u64>(&float(18_446_744_073_709_551_616.0)).is_err(),
            "2^64 is out of range"
        );
        assert!(decode::<u64>(&float(f64::NAN)).is_err());
        assert!(decode::<u64>(&encoded(&-5i64)).is_err());
        assert_eq!(decode::<i64>(&float(-3.0)), Ok(-3));
    }

    #[test]
    fn strict_fields_refuse_every_float() {
        let whole = decode::<u32>(&float(10.0)).unwrap_err();
        assert_eq!(
            whole.to_string(),
            "expected an integer from 0 to 4294967295, found float 10"
        );
        assert!(decode::<u32>(&float(10.5)).is_err());
        assert!(decode::<u32>(&encoded(&-5i64)).is_err());
        assert!(decode::<u32>(&encoded(&(1u64 << 32))).is_err());
        assert_eq!(decode::<u32>(&encoded(&u32::MAX)), Ok(u32::MAX));
        assert!(decode::<StrictU64>(&float(3.0)).is_err());
    }

    #[test]
    fn timestamps_accept_float_millis_and_counter_and_check_node_ids() {
        let mut w = Writer::new();
        w.map_header(3);
        w.str("nodeId");
        w.str("n1");
        w.str("millis");
        w.f64(1_700_000_000_000.0);
        w.str("counter");
        w.f64(2.0);
        let ts = decode::<Timestamp>(w.as_bytes()).unwrap();
        assert_eq!(ts.to_string(), "1700000000000:2:n1");
        assert_eq!(decode::<Timestamp>(&encoded(&ts)), Ok(ts));

        let mut w = Writer::new();
        w.map_header(3);
        w.str("millis");
        w.uint(1);
        w.str("counter");
        w.uint(0);
        w.str("nodeId");
        w.str("a:b");
        let err = decode::<Timestamp>(w.as_bytes()).unwrap_err();
        assert_eq!(err.field(), "nodeId");
    }

    #[test]
    fn tri_state_fields() {
        assert_eq!(decode::<Field<String>>(&[0xc0]), Ok(Field::Null));
        assert_eq!(Field::<String>::absent(Path::Root), Ok(Field::Absent));
        assert_eq!(
            decode::<Field<String>>(&encoded(&"x".to_owned())),
            Ok(Field::Value("x".into()))
        );
    }

    #[test]
    fn records_round_trip_and_omit_absent_ttl() {
        let ts = Timestamp::new(5, 1, NodeId::new("n").unwrap());
        let rec = LwwRecord::new(Value::from("v"), ts.clone(), None);
        let bytes = encoded(&rec);
        assert!(
            !bytes.windows(5).any(|w| w == b"ttlMs"),
            "absent TTL is omitted"
        );
        assert_eq!(decode::<LwwRecord>(&bytes), Ok(rec));
        let tomb = LwwRecord::tombstone(ts);
        assert_eq!(decode::<LwwRecord>(&encoded(&tomb)), Ok(tomb));
    }

    /// Dates from msgpackr (extension -1) decode and re-encode to the same bytes; other
    /// extension types (which msgpackr itself cannot read) are refused.
    #[test]
    fn timestamp_extensions_round_trip_and_others_are_refused() {
        for hex in [
            "d6ff00000001",
            "d7ff1d5353006553f100",
            "c70cff00000001ffffffffffffffff",
        ] {
            let bytes = crate::protocol::hex(hex);
            let value = decode::<Value>(&bytes).unwrap();
            assert!(matches!(value, Value::Time(_)), "{hex}");
            assert_eq!(encoded(&value), bytes, "{hex} re-encodes unchanged");
        }
        let date =
            decode::<Value>(&[0xd7, 0xff, 0x1d, 0x53, 0x53, 0, 0x65, 0x53, 0xf1, 0]).unwrap();
        assert_eq!(date, Value::Time(ExtTime::from_millis(1_700_000_000_123)));
        let bad_nanos = [
            0xc7, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(matches!(
            decode::<Value>(&bad_nanos).unwrap_err().kind(),
            ErrorKind::Invalid(_)
        ));
        // {"a": <ext 5>}
        let frame = [0x81, 0xa1, b'a', 0xd4, 0x05, 0];
        let err = decode::<Value>(&frame).unwrap_err();
        assert_eq!(
            (err.field(), err.kind().clone()),
            ("a", ErrorKind::UnsupportedExt(5))
        );
    }
}
