//! The record value: any MsgPack value with string map keys (PROTOCOL.md §2.4).
//!
//! Equality and ordering follow one canonical total order ([`Value::canonical_cmp`]):
//! numbers compare by numeric value across integer and float representations (as they do in
//! JavaScript, where `3` and `3.0` are the same number), maps compare as sets of entries
//! (insertion order is kept for re-encoding but never affects equality), and `NaN` equals
//! itself so that equality is an equivalence relation usable by CRDT merges.

use std::cmp::Ordering;

pub use compact_str::CompactString;

/// A record value.
#[derive(Debug, Clone, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    /// Every integer that fits an `i64`.
    Int(i64),
    /// Integers above `i64::MAX`. Constructors normalise smaller values to [`Value::Int`];
    /// comparisons treat both variants as numbers either way.
    UInt(u64),
    Float(f64),
    /// Strings up to 24 bytes are stored inline (no allocation): most field names and many
    /// values are that short.
    Str(CompactString),
    Bin(Vec<u8>),
    /// A point in time: MsgPack's timestamp extension (type -1), which is how msgpackr sends
    /// a JavaScript `Date`. Kept exactly, so it re-encodes to the same instant.
    Time(ExtTime),
    Array(Vec<Value>),
    Map(ValueMap),
}

/// MsgPack timestamp: seconds since the Unix epoch and nanoseconds within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtTime {
    pub seconds: i64,
    /// Below 1,000,000,000.
    pub nanos: u32,
}

impl ExtTime {
    /// The largest magnitude of a JavaScript `Date` in milliseconds.
    const JS_DATE_LIMIT_MS: f64 = 8.64e15;

    /// The time value of the JavaScript `Date` msgpackr builds from this timestamp
    /// (`seconds * 1000 + nanos / 1e6`, truncated), or `None` where JavaScript has an invalid
    /// date.
    #[allow(clippy::cast_precision_loss)]
    pub fn js_millis(self) -> Option<f64> {
        let ms = (self.seconds as f64 * 1000.0 + f64::from(self.nanos) / 1e6).trunc();
        (ms.abs() <= Self::JS_DATE_LIMIT_MS).then_some(ms + 0.0)
    }

    /// The timestamp of a JavaScript time value in milliseconds.
    pub fn from_millis(ms: i64) -> Self {
        let nanos = u32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
        Self {
            seconds: ms.div_euclid(1000),
            nanos,
        }
    }
}

/// A string-keyed map that keeps insertion order and holds each key once.
///
/// A vector, not a hash map: record values are small objects, where a linear scan beats
/// hashing and the memory overhead of a table matters across millions of records.
#[derive(Debug, Clone, Default)]
pub struct ValueMap {
    entries: Vec<(CompactString, Value)>,
}

impl ValueMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces; a replaced key keeps its position (as a JavaScript object does).
    pub fn insert(&mut self, key: impl Into<CompactString>, value: Value) -> Option<Value> {
        let key = key.into();
        if let Some((_, slot)) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(std::mem::replace(slot, value))
        } else {
            self.entries.push((key, value));
            None
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(at).1)
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Entries sorted by key (bytewise), the canonical order used for comparison.
    fn sorted(&self) -> Vec<(&str, &Value)> {
        let mut sorted: Vec<_> = self.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted
    }
}

impl ValueMap {
    /// A map from decoded entries. Without repeated keys (the usual case) the vector is kept
    /// as it is; otherwise a repeated key keeps its first position and its last value.
    pub fn from_entries(entries: Vec<(CompactString, Value)>) -> Self {
        /// Below this size pairwise comparison beats hashing.
        const SCAN_MAX: usize = 16;
        let unique = if entries.len() <= SCAN_MAX {
            entries
                .iter()
                .enumerate()
                .all(|(i, (k, _))| entries[..i].iter().all(|(e, _)| e != k))
        } else {
            let mut seen = std::collections::HashSet::with_capacity(entries.len());
            entries.iter().all(|(k, _)| seen.insert(k.as_str()))
        };
        if unique {
            Self { entries }
        } else {
            entries.into_iter().collect()
        }
    }
}

impl ValueMap {
    /// A map from entries the caller has checked hold each key once.
    pub(crate) fn from_unique_entries(entries: Vec<(CompactString, Value)>) -> Self {
        debug_assert!(
            entries
                .iter()
                .enumerate()
                .all(|(i, (k, _))| entries[..i].iter().all(|(e, _)| e != k))
        );
        Self { entries }
    }
}

impl<K: Into<CompactString>> FromIterator<(K, Value)> for ValueMap {
    /// Collects entries; a repeated key keeps its first position and its last value (as
    /// assigning to a JavaScript object does). Linear time, whatever the size.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Self {
        /// Below this size a scan beats hashing.
        const SCAN_MAX: usize = 16;
        let mut entries: Vec<(CompactString, Value)> = Vec::new();
        let mut index: std::collections::HashMap<CompactString, usize> =
            std::collections::HashMap::new();
        for (k, v) in iter {
            let k = k.into();
            let existing = if entries.len() < SCAN_MAX {
                entries.iter().position(|(e, _)| *e == k)
            } else {
                if index.is_empty() {
                    index = entries
                        .iter()
                        .enumerate()
                        .map(|(i, (e, _))| (e.clone(), i))
                        .collect();
                }
                index.get(&k).copied()
            };
            if let Some(at) = existing {
                entries[at].1 = v;
            } else {
                if !index.is_empty() || entries.len() >= SCAN_MAX {
                    index.insert(k.clone(), entries.len());
                }
                entries.push((k, v));
            }
        }
        Self { entries }
    }
}

impl PartialEq for ValueMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(k, v)| other.get(k).is_some_and(|o| o == v))
    }
}

impl Eq for ValueMap {}

impl Value {
    pub fn is_nil(&self) -> bool {
        matches!(self, Self::Nil)
    }

    /// About how many bytes the value takes as MsgPack, never less: its strings and binaries
    /// exactly, plus the most every header and scalar can take. For byte budgets, not for
    /// allocating a buffer.
    pub fn encoded_len_bound(&self) -> usize {
        match self {
            Self::Nil | Self::Bool(_) => 1,
            Self::Int(_) | Self::UInt(_) | Self::Float(_) => 9,
            Self::Str(s) => 5 + s.len(),
            Self::Bin(b) => 5 + b.len(),
            Self::Time(_) => 15,
            Self::Array(items) => 5 + items.iter().map(Self::encoded_len_bound).sum::<usize>(),
            Self::Map(map) => {
                let entries = map.iter().map(|(k, v)| 5 + k.len() + v.encoded_len_bound());
                5 + entries.sum::<usize>()
            }
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, Self::Int(_) | Self::UInt(_) | Self::Float(_))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number as an `f64` (JavaScript's view of every number; large integers round).
    #[allow(clippy::cast_precision_loss)]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::UInt(u) => Some(*u as f64),
            Self::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&ValueMap> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The field `name` of a map value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_map()?.get(name)
    }

    /// Follows a dot path (`address.city`) through nested maps.
    pub fn get_path(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self, |v, part| v.get(part))
    }

    /// Rank of the variant in the canonical order: nil < bool < number < string < binary <
    /// time < array < map.
    fn rank(&self) -> u8 {
        match self {
            Self::Nil => 0,
            Self::Bool(_) => 1,
            Self::Int(_) | Self::UInt(_) | Self::Float(_) => 2,
            Self::Str(_) => 3,
            Self::Bin(_) => 4,
            Self::Time(_) => 5,
            Self::Array(_) => 6,
            Self::Map(_) => 7,
        }
    }

    /// The canonical total order: by variant rank, then numbers numerically (exactly, across
    /// `Int`/`UInt`/`Float`; `NaN` above every number; `-0.0 == 0.0`), strings and binaries
    /// bytewise, arrays lexicographically, maps as their key-sorted entry lists.
    pub fn canonical_cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Nil, Self::Nil) => Ordering::Equal,
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            (Self::Bin(a), Self::Bin(b)) => a.cmp(b),
            (Self::Time(a), Self::Time(b)) => a.cmp(b),
            (Self::Array(a), Self::Array(b)) => cmp_seq(a.iter(), b.iter()),
            (Self::Map(a), Self::Map(b)) => cmp_maps(a, b),
            (a, b) => match (Num::of(a), Num::of(b)) {
                (Some(x), Some(y)) => cmp_numbers(x, y),
                _ => a.rank().cmp(&b.rank()),
            },
        }
    }
}

fn cmp_seq<'a>(
    mut a: impl Iterator<Item = &'a Value>,
    mut b: impl Iterator<Item = &'a Value>,
) -> Ordering {
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match x.canonical_cmp(y) {
                Ordering::Equal => {}
                unequal => return unequal,
            },
        }
    }
}

fn cmp_maps(a: &ValueMap, b: &ValueMap) -> Ordering {
    let (a, b) = (a.sorted(), b.sorted());
    for ((ka, va), (kb, vb)) in a.iter().zip(b.iter()) {
        let ord = ka.cmp(kb).then_with(|| va.canonical_cmp(vb));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// A number widened so that every `i64`, `u64` and `f64` compares exactly.
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(Self::Int(i128::from(*i))),
            Value::UInt(u) => Some(Self::Int(i128::from(*u))),
            Value::Float(f) => Some(Self::Float(*f)),
            _ => None,
        }
    }
}

fn cmp_numbers(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(x), Num::Float(y)) => cmp_floats(x, y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).reverse(),
    }
}

fn cmp_floats(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // Neither is NaN, so partial_cmp is total here (and -0.0 == 0.0).
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Exact comparison of an integer (within the `i64`/`u64` range) with a float.
fn cmp_int_float(x: i128, y: f64) -> Ordering {
    // Every integer here is below 2^64 in magnitude, so 2^64 bounds the float side.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    if y.is_nan() {
        return Ordering::Less;
    }
    if y >= TWO_POW_64 {
        return Ordering::Less;
    }
    if y <= -TWO_POW_64 {
        return Ordering::Greater;
    }
    let floor = y.floor();
    // |floor| < 2^64, so the conversion to i128 is exact.
    #[allow(clippy::cast_possible_truncation)]
    let floor_int = floor as i128;
    match x.cmp(&floor_int) {
        Ordering::Equal if y > floor => Ordering::Less,
        ord => ord,
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.canonical_cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        self.canonical_cmp(other)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}

impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Self::Int(i64::from(i))
    }
}

impl From<u32> for Value {
    fn from(u: u32) -> Self {
        Self::Int(i64::from(u))
    }
}

impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Self::UInt(u), Self::Int)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Self::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(CompactString::from(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(CompactString::from(s))
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Self::Array(a)
    }
}

impl From<ValueMap> for Value {
    fn from(m: ValueMap) -> Self {
        Self::Map(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(entries.iter().cloned().collect())
    }

    #[test]
    fn the_encoded_length_bound_is_never_below_the_encoding() {
        let values = [
            Value::Nil,
            Value::Bool(true),
            Value::Int(-1),
            Value::Int(i64::MIN),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::from("a".repeat(300)),
            Value::Bin(vec![7; 70_000]),
            Value::Time(ExtTime {
                seconds: -5,
                nanos: 9,
            }),
            Value::Array(vec![Value::Int(1), Value::from("x"), Value::Nil]),
            map(&[
                ("title", Value::from("t")),
                ("n", map(&[("deep", Value::Int(9))])),
            ]),
        ];
        for value in values {
            let encoded = crate::protocol::encode_standalone(&value).len();
            let bound = value.encoded_len_bound();
            assert!(bound >= encoded, "{value:?}: {bound} < {encoded}");
            assert!(
                bound <= encoded + 64,
                "{value:?}: {bound} is far above {encoded}"
            );
        }
    }

    #[test]
    fn numbers_compare_across_representations() {
        assert_eq!(Value::Int(3), Value::Float(3.0));
        assert_eq!(Value::from(5u64), Value::Int(5));
        assert_eq!(Value::UInt(5), Value::Int(5));
        assert!(Value::Int(3) < Value::Float(3.5));
        assert!(Value::Float(-0.5) < Value::Int(0));
        assert_eq!(Value::Float(-0.0), Value::Int(0));
        assert!(Value::UInt(u64::MAX) > Value::Int(i64::MAX));
        assert!(Value::Float(1e300) > Value::UInt(u64::MAX));
        assert!(Value::Float(f64::NEG_INFINITY) < Value::Int(i64::MIN));
        // 2^63 as a float equals the u64 2^63 and exceeds i64::MAX exactly.
        assert_eq!(
            Value::Float(9_223_372_036_854_775_808.0),
            Value::UInt(1 << 63)
        );
        assert!(Value::Float(9_223_372_036_854_775_808.0) > Value::Int(i64::MAX));
        assert_eq!(Value::Float(f64::NAN), Value::Float(f64::NAN));
        assert!(Value::Float(f64::NAN) > Value::Float(f64::INFINITY));
        assert!(Value::Float(f64::NAN) > Value::Int(i64::MAX));
    }

    #[test]
    fn variant_rank_orders_types() {
        let ordered = [
            Value::Nil,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(-1),
            Value::Str("a".into()),
            Value::Bin(vec![0]),
            Value::Time(ExtTime::from_millis(-5)),
            Value::Array(vec![]),
            map(&[]),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn maps_compare_as_sets_of_entries() {
        let a = map(&[("x", Value::Int(1)), ("y", Value::from("s"))]);
        let b = map(&[("y", Value::from("s")), ("x", Value::Float(1.0))]);
        assert_eq!(a, b);
        assert_ne!(a, map(&[("x", Value::Int(1))]));
        assert!(map(&[("a", Value::Int(1))]) < map(&[("a", Value::Int(2))]));
        assert!(map(&[("a", Value::Int(1))]) < map(&[("b", Value::Int(0))]));
    }

    #[test]
    fn arrays_compare_lexicographically() {
        let a = Value::from(vec![Value::Int(1), Value::Int(2)]);
        let b = Value::from(vec![Value::Int(1), Value::Int(3)]);
        let prefix = Value::from(vec![Value::Int(1)]);
        assert!(a < b);
        assert!(prefix < a);
    }

    #[test]
    fn value_map_insert_replaces_in_place() {
        let mut m = ValueMap::new();
        m.insert("a", Value::Int(1));
        m.insert("b", Value::Int(2));
        assert_eq!(m.insert("a", Value::Int(3)), Some(Value::Int(1)));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.remove("a"), Some(Value::Int(3)));
        assert_eq!(m.remove("a"), None);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn collecting_keeps_first_position_and_last_value() {
        let small: ValueMap = [
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
            ("a", Value::Int(3)),
        ]
        .into_iter()
        .collect();
        assert_eq!(small.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(small.get("a"), Some(&Value::Int(3)));
        let mut entries: Vec<(CompactString, Value)> = (0..40)
            .map(|i| (format!("k{i}").into(), Value::Int(i)))
            .collect();
        entries.push(("k3".into(), Value::Int(-3)));
        entries.push(("k39".into(), Value::Int(-39)));
        let big: ValueMap = entries.into_iter().collect();
        assert_eq!(big.len(), 40);
        assert_eq!(big.get("k3"), Some(&Value::Int(-3)));
        assert_eq!(big.get("k39"), Some(&Value::Int(-39)));
        assert_eq!(big.keys().nth(39), Some("k39"));
    }

    #[test]
    fn ext_time_matches_javascript_dates() {
        let t = ExtTime::from_millis(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
        assert_eq!(t.js_millis(), Some(1_700_000_000_123.0));
        let before_epoch = ExtTime::from_millis(-1);
        assert_eq!(
            (before_epoch.seconds, before_epoch.nanos),
            (-1, 999_000_000)
        );
        assert_eq!(before_epoch.js_millis(), Some(-1.0));
        let far = ExtTime {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(
            far.js_millis(),
            None,
            "beyond the range of a JavaScript Date"
        );
    }

    #[test]
    fn dot_paths_walk_nested_maps() {
        let v = map(&[("address", map(&[("city", Value::from("Oslo"))]))]);
        assert_eq!(v.get_path("address.city"), Some(&Value::from("Oslo")));
        assert_eq!(v.get_path("address.zip"), None);
        assert_eq!(v.get_path("address.city.x"), None);
    }
}
