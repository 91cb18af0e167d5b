//! A bounded MsgPack reader into a borrowed tree, and a MsgPack writer.
//!
//! The reader never panics and never allocates more than the input justifies: every length
//! is checked against the configured [`Limits`] *and* against the bytes that remain (each
//! element takes at least one byte), before any allocation. Strings and binaries borrow from
//! the input. Map keys must be strings: the protocol has no other kind.
//!
//! The writer emits the smallest encoding for integers and float64 for floats, which every
//! MsgPack decoder (msgpackr included) reads back as the same number.

use std::fmt;

use super::error::{DecodeError, ErrorKind, Path};
use crate::hlc::{HlcError, NodeId};

/// The deepest nesting any configuration may allow: deep enough for real documents, shallow
/// enough that decoding, converting and dropping a value of that depth fits a 2 MiB thread
/// stack even in a debug build (a test checks it).
pub const MAX_DEPTH_CEILING: usize = 512;

/// Most elements reserved up front for one collection; beyond it a vector grows as elements
/// actually arrive.
pub const PREALLOCATE_MAX: usize = 1024;

/// Decoder bounds (PROTOCOL.md §7.3 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted frame.
    pub max_frame_bytes: usize,
    /// Deepest accepted nesting of arrays and maps (the top-level map is depth 1); values
    /// above [`MAX_DEPTH_CEILING`] act as the ceiling.
    pub max_depth: usize,
    /// Most elements in one array or entries in one map.
    pub max_collection_len: usize,
    /// Longest string or binary, in bytes.
    pub max_str_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 2 * 1024 * 1024,
            max_depth: 256,
            max_collection_len: 100_000,
            max_str_bytes: 2 * 1024 * 1024,
        }
    }
}

/// A decoded MsgPack value borrowing its strings and binaries from the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    /// Only for values above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(Vec<Raw<'a>>),
    Map(Vec<(&'a str, Raw<'a>)>),
    Ext(i8, &'a [u8]),
}

impl Raw<'_> {
    /// A short name of the kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Nil => "nil",
            Self::Bool(_) => "a boolean",
            Self::Int(_) | Self::UInt(_) => "an integer",
            Self::Float(_) => "a float",
            Self::Str(_) => "a string",
            Self::Bin(_) => "binary data",
            Self::Array(_) => "an array",
            Self::Map(_) => "a map",
            Self::Ext(..) => "an extension value",
        }
    }
}

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "integer {i}"),
            Self::UInt(u) => write!(f, "integer {u}"),
            Self::Float(x) => write!(f, "float {x}"),
            Self::Bool(b) => write!(f, "boolean {b}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// Parses exactly one MsgPack value filling the whole frame into a [`Raw`] tree.
///
/// Typed decoding does not go through this (it reads the frame directly with a [`Reader`]);
/// it serves tests, tools and error messages.
pub fn parse<'a>(frame: &'a [u8], limits: &Limits) -> Result<Raw<'a>, DecodeError> {
    let mut reader = Reader::new(frame, limits)?;
    let value = reader.read_raw(Path::Root)?;
    reader.finish()?;
    Ok(value)
}

/// A number read from the wire, in the representation it was sent in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    /// Only for values above `i64::MAX`.
    UInt(u64),
    Float(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "integer {i}"),
            Self::UInt(u) => write!(f, "integer {u}"),
            Self::Float(x) => write!(f, "float {x}"),
        }
    }
}

/// What the next value is, as far as a decoder needs to branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Nil,
    Map,
    Array,
    /// A scalar (or the end of the frame, which reading reports as truncated).
    Scalar,
}

/// A streaming MsgPack reader over one frame, with the frame's [`Limits`].
///
/// Every read checks its bounds before allocating; nesting is counted across the typed
/// decoders that drive it. Strings and binaries are borrowed from the frame.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    limits: Limits,
    depth: usize,
    /// The last node id decoded: the timestamps of one frame mostly share their node id
    /// (one client's batch), so this saves an allocation per record.
    last_node_id: Option<NodeId>,
}

impl<'a> Reader<'a> {
    pub fn new(frame: &'a [u8], limits: &Limits) -> Result<Self, DecodeError> {
        if frame.len() > limits.max_frame_bytes {
            return Err(DecodeError::frame(ErrorKind::FrameTooLarge {
                size: frame.len(),
                max: limits.max_frame_bytes,
            }));
        }
        Ok(Self {
            bytes: frame,
            pos: 0,
            limits: *limits,
            depth: 0,
            last_node_id: None,
        })
    }

    /// The offset of the next value.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Moves back to an offset returned by [`Reader::position`] at the same nesting depth.
    pub fn seek(&mut self, position: usize) {
        self.pos = position.min(self.bytes.len());
    }

    /// Fails unless the whole frame was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::frame(ErrorKind::TrailingBytes {
                count: self.bytes.len() - self.pos,
            }))
        }
    }

    pub fn next(&self) -> Next {
        match self.bytes.get(self.pos) {
            Some(0xc0) => Next::Nil,
            Some(0x80..=0x8f | 0xde | 0xdf) => Next::Map,
            Some(0x90..=0x9f | 0xdc | 0xdd) => Next::Array,
            _ => Next::Scalar,
        }
    }

    /// The element count of the array or map that comes next, for preallocation: capped by
    /// the bytes left and by [`PREALLOCATE_MAX`] (a nest of forged headers must not reserve
    /// memory at every level); 0 for anything else. Vectors grow past it as elements arrive.
    pub fn len_hint(&self) -> usize {
        let b = &self.bytes[self.pos..];
        let n = match b {
            [tag @ 0x80..=0x9f, ..] => usize::from(tag & 0x0f),
            [0xdc | 0xde, x, y, ..] => usize::from(u16::from_be_bytes([*x, *y])),
            [0xdd | 0xdf, a, b2, c, d, ..] => {
                usize::try_from(u32::from_be_bytes([*a, *b2, *c, *d])).unwrap_or(usize::MAX)
            }
            _ => 0,
        };
        n.min(b.len())
            .min(self.limits.max_collection_len)
            .min(PREALLOCATE_MAX)
    }

    /// The next byte (the MsgPack tag of the next value), if any.
    pub fn peek_tag(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes a nil if one comes next.
    pub fn take_nil(&mut self) -> bool {
        let is_nil = self.next() == Next::Nil;
        if is_nil {
            self.pos += 1;
        }
        is_nil
    }

    /// Reads a node id, sharing the previous allocation when it repeats. A repeat is found
    /// by comparing bytes, before any UTF-8 validation: the text already passed it.
    pub fn read_node_id(&mut self, at: Path<'_>) -> Result<NodeId, DecodeError> {
        let bytes = self.read_str_bytes(at)?;
        if let Some(last) = &self.last_node_id
            && last.as_str().as_bytes() == bytes
        {
            return Ok(last.clone());
        }
        let fresh = NodeId::new(utf8(bytes, at)?)
            .map_err(|e: HlcError| DecodeError::at(at, ErrorKind::Invalid(e.to_string())))?;
        self.last_node_id = Some(fresh.clone());
        Ok(fresh)
    }

    /// An error saying what was expected at `at` and what the next value is.
    ///
    /// Describes the next value from its tag (and, for a scalar, its value) without reading
    /// any collection: an error must not cost more than the value that caused it.
    pub fn wrong_type(&self, at: Path<'_>, expected: &'static str) -> DecodeError {
        let found = match self.next() {
            Next::Nil => "nil".to_owned(),
            Next::Map => "a map".to_owned(),
            Next::Array => "an array".to_owned(),
            Next::Scalar => self
                .clone()
                .scalar(at)
                .map_or_else(|_| "malformed data".to_owned(), |raw| raw.to_string()),
        };
        DecodeError::at(at, ErrorKind::WrongType { expected, found })
    }

    /// Reads a map, calling `entry` with the reader positioned at each value and its key.
    pub fn read_map(
        &mut self,
        at: Path<'_>,
        mut entry: impl FnMut(&mut Self, &'a str) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let n = self.map_header(at)?;
        for _ in 0..n {
            let key = self.read_key(at)?;
            entry(self, key)?;
        }
        self.depth -= 1;
        Ok(())
    }

    /// Reads a map whose keys the caller compares with known names: `entry` gets each key's
    /// raw bytes. A key equal to a known (string literal) name is valid UTF-8 by
    /// construction, so only unknown keys need validating ([`Reader::unknown_key`]).
    pub fn read_fields(
        &mut self,
        at: Path<'_>,
        mut entry: impl FnMut(&mut Self, &'a [u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let n = self.map_header(at)?;
        for _ in 0..n {
            let key = self.read_key_bytes(at)?;
            entry(self, key)?;
        }
        self.depth -= 1;
        Ok(())
    }

    /// Validates a key no known name matched, returning it as text.
    pub fn unknown_key(&self, key: &'a [u8], at: Path<'_>) -> Result<&'a str, DecodeError> {
        utf8(key, at)
    }

    /// Reads an array, calling `item` with the reader positioned at each element.
    pub fn read_array(
        &mut self,
        at: Path<'_>,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let n = self.array_header(at)?;
        for i in 0..n {
            item(self, i)?;
        }
        self.depth -= 1;
        Ok(())
    }

    /// Consumes a map header and enters it; returns the entry count.
    pub(crate) fn map_header(&mut self, at: Path<'_>) -> Result<usize, DecodeError> {
        let n = match self.bytes.get(self.pos) {
            Some(&tag @ 0x80..=0x8f) => {
                self.pos += 1;
                usize::from(tag & 0x0f)
            }
            Some(0xde) => {
                self.pos += 1;
                self.len_u16(at)?
            }
            Some(0xdf) => {
                self.pos += 1;
                self.len_u32(at)?
            }
            _ => return Err(self.wrong_type(at, "a map")),
        };
        self.enter(n, 2, at)?;
        Ok(n)
    }

    fn array_header(&mut self, at: Path<'_>) -> Result<usize, DecodeError> {
        let n = match self.bytes.get(self.pos) {
            Some(&tag @ 0x90..=0x9f) => {
                self.pos += 1;
                usize::from(tag & 0x0f)
            }
            Some(0xdc) => {
                self.pos += 1;
                self.len_u16(at)?
            }
            Some(0xdd) => {
                self.pos += 1;
                self.len_u32(at)?
            }
            _ => return Err(self.wrong_type(at, "an array")),
        };
        self.enter(n, 1, at)?;
        Ok(n)
    }

    /// Enters a collection of `n` elements of at least `min_bytes` each: checks depth, the
    /// configured length cap, and that the frame still holds `n * min_bytes` bytes (so a
    /// forged length allocates nothing).
    fn enter(&mut self, n: usize, min_bytes: usize, at: Path<'_>) -> Result<(), DecodeError> {
        let max_depth = self.limits.max_depth.min(MAX_DEPTH_CEILING);
        if self.depth >= max_depth {
            return Err(DecodeError::at(at, ErrorKind::TooDeep { max: max_depth }));
        }
        let max = self.limits.max_collection_len;
        if n > max {
            return Err(DecodeError::at(at, ErrorKind::TooLong { len: n, max }));
        }
        if n.saturating_mul(min_bytes) > self.bytes.len() - self.pos {
            return Err(DecodeError::at(at, ErrorKind::Truncated));
        }
        self.depth += 1;
        Ok(())
    }

    fn read_key(&mut self, at: Path<'_>) -> Result<&'a str, DecodeError> {
        let key = self.read_key_bytes(at)?;
        self.unknown_key(key, at)
    }

    /// A map key's bytes, not yet validated as UTF-8.
    ///
    /// Inlined with only the fixstr case (almost every key): the rest is a cold call, so
    /// the hot path carries no spills for code it never runs.
    #[inline]
    fn read_key_bytes(&mut self, at: Path<'_>) -> Result<&'a [u8], DecodeError> {
        if let Some(&tag @ 0xa0..=0xbf) = self.bytes.get(self.pos) {
            let start = self.pos + 1;
            if let Some(key) = self.bytes.get(start..start + usize::from(tag & 0x1f)) {
                self.pos = start + key.len();
                return Ok(key);
            }
        }
        self.read_key_slow(at)
    }

    #[cold]
    #[inline(never)]
    fn read_key_slow(&mut self, at: Path<'_>) -> Result<&'a [u8], DecodeError> {
        if let Some(n) = self.str_len(at)? {
            return self.take(n, at);
        }
        let kind = match self.next() {
            Next::Nil => "nil",
            Next::Map => "a map",
            Next::Array => "an array",
            Next::Scalar => self
                .clone()
                .scalar(at)
                .map_or("malformed data", |r| r.kind()),
        };
        Err(DecodeError::at(at, ErrorKind::NonStringKey(kind)))
    }

    /// Consumes a string header and returns its length; `None` (nothing consumed) if the
    /// next value is not a string.
    #[inline]
    fn str_len(&mut self, at: Path<'_>) -> Result<Option<usize>, DecodeError> {
        // Strings under 256 bytes (fixstr and str8: ids, keys, names) need no length check
        // unless the configured limit is below that; then the slow path checks them.
        let short = self.limits.max_str_bytes >= 255;
        match self.bytes.get(self.pos..) {
            Some(&[tag @ 0xa0..=0xbf, ..]) if short => {
                self.pos += 1;
                Ok(Some(usize::from(tag & 0x1f)))
            }
            Some(&[0xd9, n, ..]) if short => {
                self.pos += 2;
                Ok(Some(usize::from(n)))
            }
            _ => self.str_len_slow(at),
        }
    }

    #[cold]
    #[inline(never)]
    fn str_len_slow(&mut self, at: Path<'_>) -> Result<Option<usize>, DecodeError> {
        let n = match self.bytes.get(self.pos) {
            Some(&tag @ 0xa0..=0xbf) => {
                self.pos += 1;
                usize::from(tag & 0x1f)
            }
            Some(0xd9) => {
                self.pos += 1;
                self.len_u8(at)?
            }
            Some(0xda) => {
                self.pos += 1;
                self.len_u16(at)?
            }
            Some(0xdb) => {
                self.pos += 1;
                self.len_u32(at)?
            }
            _ => return Ok(None),
        };
        self.check_string_len(n, at)?;
        Ok(Some(n))
    }

    /// Reads a scalar of the kind `accept` allows, or fails with `expected`.
    fn read_scalar(
        &mut self,
        at: Path<'_>,
        expected: &'static str,
        accept: fn(&Raw<'a>) -> bool,
    ) -> Result<Raw<'a>, DecodeError> {
        if self.next() == Next::Scalar {
            let before = self.pos;
            let raw = self.scalar(at)?;
            if accept(&raw) {
                return Ok(raw);
            }
            self.pos = before;
        }
        Err(self.wrong_type(at, expected))
    }

    pub fn read_str(&mut self, at: Path<'_>) -> Result<&'a str, DecodeError> {
        let bytes = self.read_str_bytes(at)?;
        utf8(bytes, at)
    }

    /// A string's bytes, not yet validated as UTF-8.
    fn read_str_bytes(&mut self, at: Path<'_>) -> Result<&'a [u8], DecodeError> {
        match self.str_len(at)? {
            Some(n) => self.take(n, at),
            None => Err(self.wrong_type(at, "a string")),
        }
    }

    pub fn read_bin(&mut self, at: Path<'_>) -> Result<&'a [u8], DecodeError> {
        match self.read_scalar(at, "binary data", |r| matches!(r, Raw::Bin(_)))? {
            Raw::Bin(b) => Ok(b),
            _ => Err(self.wrong_type(at, "binary data")),
        }
    }

    pub fn read_bool(&mut self, at: Path<'_>) -> Result<bool, DecodeError> {
        let value = match self.peek_tag() {
            Some(0xc2) => false,
            Some(0xc3) => true,
            _ => return Err(self.wrong_type(at, "a boolean")),
        };
        self.pos += 1;
        Ok(value)
    }

    /// Reads an integer or a float.
    #[inline]
    pub fn read_number(
        &mut self,
        at: Path<'_>,
        expected: &'static str,
    ) -> Result<Number, DecodeError> {
        match number(self.rest()) {
            Some((number, size)) => {
                self.pos += size;
                Ok(number)
            }
            None => Err(self.number_error(at, expected)),
        }
    }

    #[cold]
    #[inline(never)]
    fn number_error(&self, at: Path<'_>, expected: &'static str) -> DecodeError {
        match self.peek_tag() {
            Some(0xca..=0xd3) => truncated(at),
            _ => self.wrong_type(at, expected),
        }
    }

    /// The bytes from the position on.
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Skips one value: its structure, lengths and nesting are checked, but the text of
    /// skipped strings is not validated (nothing reads it; what is decoded is validated).
    pub fn skip(&mut self, at: Path<'_>) -> Result<(), DecodeError> {
        match self.next() {
            Next::Map => self.read_fields(at, |r, _| r.skip(at)),
            Next::Array => self.read_array(at, |r, i| r.skip(at.index(i))),
            Next::Nil | Next::Scalar => self.skip_scalar(at),
        }
    }

    fn skip_scalar(&mut self, at: Path<'_>) -> Result<(), DecodeError> {
        if let Some(n) = self.str_len(at)? {
            return self.take(n, at).map(|_| ());
        }
        self.scalar(at).map(|_| ())
    }

    /// Reads one value as a [`Raw`] tree.
    pub fn read_raw(&mut self, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        match self.next() {
            Next::Map => {
                let mut entries = Vec::new();
                self.read_map(at, |r, key| {
                    entries.push((key, r.read_raw(at.key(key))?));
                    Ok(())
                })?;
                Ok(Raw::Map(entries))
            }
            Next::Array => {
                let mut items = Vec::new();
                self.read_array(at, |r, i| {
                    items.push(r.read_raw(at.index(i))?);
                    Ok(())
                })?;
                Ok(Raw::Array(items))
            }
            Next::Nil | Next::Scalar => self.scalar(at),
        }
    }

    #[inline]
    fn take(&mut self, n: usize, at: Path<'_>) -> Result<&'a [u8], DecodeError> {
        match self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
        {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(truncated(at)),
        }
    }

    fn byte(&mut self, at: Path<'_>) -> Result<u8, DecodeError> {
        Ok(self.take(1, at)?[0])
    }

    fn be<const N: usize>(&mut self, at: Path<'_>) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, at)?);
        Ok(out)
    }

    fn len_u8(&mut self, at: Path<'_>) -> Result<usize, DecodeError> {
        Ok(usize::from(self.byte(at)?))
    }

    fn len_u16(&mut self, at: Path<'_>) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.be(at)?)))
    }

    fn len_u32(&mut self, at: Path<'_>) -> Result<usize, DecodeError> {
        usize::try_from(u32::from_be_bytes(self.be(at)?))
            .map_err(|_| DecodeError::at(at, ErrorKind::Truncated))
    }

    /// Reads a value that is not an array or a map (those tags are reported as reserved
    /// here; callers branch on [`Reader::next`] first).
    #[inline(never)]
    fn scalar(&mut self, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        if let Some((number, size)) = number(self.rest()) {
            self.pos += size;
            return Ok(match number {
                Number::Int(i) => Raw::Int(i),
                Number::UInt(u) => Raw::UInt(u),
                Number::Float(f) => Raw::Float(f),
            });
        }
        let tag = self.byte(at)?;
        match tag {
            0xa0..=0xbf => self.str(usize::from(tag & 0x1f), at),
            0xc0 => Ok(Raw::Nil),
            0xc2 => Ok(Raw::Bool(false)),
            0xc3 => Ok(Raw::Bool(true)),
            0xc4 => {
                let n = self.len_u8(at)?;
                self.bin(n, at)
            }
            0xc5 => {
                let n = self.len_u16(at)?;
                self.bin(n, at)
            }
            0xc6 => {
                let n = self.len_u32(at)?;
                self.bin(n, at)
            }
            0xc7 => {
                let n = self.len_u8(at)?;
                self.ext(n, at)
            }
            0xc8 => {
                let n = self.len_u16(at)?;
                self.ext(n, at)
            }
            0xc9 => {
                let n = self.len_u32(at)?;
                self.ext(n, at)
            }
            // The number tags `number` could not read: too few bytes follow.
            0xca..=0xd3 => Err(truncated(at)),
            0xd4 => self.ext(1, at),
            0xd5 => self.ext(2, at),
            0xd6 => self.ext(4, at),
            0xd7 => self.ext(8, at),
            0xd8 => self.ext(16, at),
            0xd9 => {
                let n = self.len_u8(at)?;
                self.str(n, at)
            }
            0xda => {
                let n = self.len_u16(at)?;
                self.str(n, at)
            }
            0xdb => {
                let n = self.len_u32(at)?;
                self.str(n, at)
            }
            _ => Err(DecodeError::at(at, ErrorKind::ReservedByte(tag))),
        }
    }

    fn check_string_len(&self, n: usize, at: Path<'_>) -> Result<(), DecodeError> {
        let max = self.limits.max_str_bytes;
        if n > max {
            return Err(DecodeError::at(at, ErrorKind::TooLong { len: n, max }));
        }
        Ok(())
    }

    fn str(&mut self, n: usize, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        self.check_string_len(n, at)?;
        let bytes = self.take(n, at)?;
        utf8(bytes, at).map(Raw::Str)
    }

    fn bin(&mut self, n: usize, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        self.check_string_len(n, at)?;
        Ok(Raw::Bin(self.take(n, at)?))
    }

    fn ext(&mut self, n: usize, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        self.check_string_len(n, at)?;
        let [ext_type] = self.be::<1>(at)?;
        let ext_type = i8::from_be_bytes([ext_type]);
        Ok(Raw::Ext(ext_type, self.take(n, at)?))
    }
}

/// `bytes` as text, or the error naming where invalid UTF-8 was found.
fn utf8<'a>(bytes: &'a [u8], at: Path<'_>) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::at(at, ErrorKind::InvalidUtf8))
}

/// The number encoded at the start of `bytes` and its size in bytes; `None` if no number
/// starts there or it is cut short. Integers that fit an `i64` are `Int` whatever their
/// encoding.
#[inline]
fn number(bytes: &[u8]) -> Option<(Number, usize)> {
    /// The `N` bytes after the tag.
    fn body<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
        bytes.get(1..)?.first_chunk().copied()
    }
    let int = |i: i64, body_len: usize| (Number::Int(i), 1 + body_len);
    Some(match *bytes.first()? {
        tag @ 0x00..=0x7f => int(i64::from(tag), 0),
        tag @ 0xe0..=0xff => int(i64::from(tag.cast_signed()), 0),
        0xcb => (Number::Float(f64::from_be_bytes(body(bytes)?)), 9),
        0xca => (
            Number::Float(f64::from(f32::from_be_bytes(body(bytes)?))),
            5,
        ),
        0xcc => int(i64::from(u8::from_be_bytes(body(bytes)?)), 1),
        0xcd => int(i64::from(u16::from_be_bytes(body(bytes)?)), 2),
        0xce => int(i64::from(u32::from_be_bytes(body(bytes)?)), 4),
        0xcf => {
            let u = u64::from_be_bytes(body(bytes)?);
            (i64::try_from(u).map_or(Number::UInt(u), Number::Int), 9)
        }
        0xd0 => int(i64::from(i8::from_be_bytes(body(bytes)?)), 1),
        0xd1 => int(i64::from(i16::from_be_bytes(body(bytes)?)), 2),
        0xd2 => int(i64::from(i32::from_be_bytes(body(bytes)?)), 4),
        0xd3 => int(i64::from_be_bytes(body(bytes)?), 8),
        _ => return None,
    })
}

/// The error for a value that runs past the end of the frame; out of line, like every
/// error, so that the paths reading valid frames stay small.
#[cold]
#[inline(never)]
fn truncated(at: Path<'_>) -> DecodeError {
    DecodeError::at(at, ErrorKind::Truncated)
}

/// Builds a MsgPack frame.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn nil(&mut self) {
        self.buf.push(0xc0);
    }

    pub fn bool(&mut self, b: bool) {
        self.buf.push(if b { 0xc3 } else { 0xc2 });
    }

    // The narrowing casts below are guarded by the range checks of each arm.
    #[allow(clippy::cast_possible_truncation)]
    pub fn uint(&mut self, u: u64) {
        match u {
            0..=0x7f => self.buf.push(u as u8),
            0x80..=0xff => self.buf.extend_from_slice(&[0xcc, u as u8]),
            0x100..=0xffff => {
                self.buf.push(0xcd);
                self.buf.extend_from_slice(&(u as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.buf.push(0xce);
                self.buf.extend_from_slice(&(u as u32).to_be_bytes());
            }
            _ => {
                self.buf.push(0xcf);
                self.buf.extend_from_slice(&u.to_be_bytes());
            }
        }
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub fn int(&mut self, i: i64) {
        if i >= 0 {
            self.uint(i as u64);
        } else if i >= -32 {
            self.buf.push(i as u8);
        } else if i >= i64::from(i8::MIN) {
            self.buf.extend_from_slice(&[0xd0, i as u8]);
        } else if i >= i64::from(i16::MIN) {
            self.buf.push(0xd1);
            self.buf.extend_from_slice(&(i as i16).to_be_bytes());
        } else if i >= i64::from(i32::MIN) {
            self.buf.push(0xd2);
            self.buf.extend_from_slice(&(i as i32).to_be_bytes());
        } else {
            self.buf.push(0xd3);
            self.buf.extend_from_slice(&i.to_be_bytes());
        }
    }

    pub fn f64(&mut self, x: f64) {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&x.to_be_bytes());
    }

    /// Writes a length-prefixed header in the smallest of three forms.
    #[allow(clippy::cast_possible_truncation)]
    fn header(&mut self, len: usize, fix: Option<(u8, usize)>, tags: [u8; 3]) {
        match fix {
            Some((base, max)) if len <= max => self.buf.push(base | len as u8),
            _ if tags[0] != 0 && len <= 0xff => self.buf.extend_from_slice(&[tags[0], len as u8]),
            _ if len <= 0xffff => {
                self.buf.push(tags[1]);
                self.buf.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                self.buf.push(tags[2]);
                self.buf.extend_from_slice(&(len as u32).to_be_bytes());
            }
        }
    }

    pub fn str(&mut self, s: &str) {
        self.header(s.len(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn bin(&mut self, b: &[u8]) {
        self.header(b.len(), None, [0xc4, 0xc5, 0xc6]);
        self.buf.extend_from_slice(b);
    }

    pub fn array_header(&mut self, len: usize) {
        self.header(len, Some((0x90, 15)), [0, 0xdc, 0xdd]);
    }

    pub fn map_header(&mut self, len: usize) {
        self.header(len, Some((0x80, 15)), [0, 0xde, 0xdf]);
    }

    /// An extension value: the fixext forms for 1, 2, 4, 8 and 16 bytes, else ext 8/16/32.
    #[allow(clippy::cast_possible_truncation)]
    pub fn ext(&mut self, type_id: i8, data: &[u8]) {
        let fixed = match data.len() {
            1 => Some(0xd4),
            2 => Some(0xd5),
            4 => Some(0xd6),
            8 => Some(0xd7),
            16 => Some(0xd8),
            _ => None,
        };
        match fixed {
            Some(tag) => self.buf.push(tag),
            None => self.header(data.len(), None, [0xc7, 0xc8, 0xc9]),
        }
        self.buf.extend_from_slice(&type_id.to_be_bytes());
        self.buf.extend_from_slice(data);
    }

    /// Appends an already encoded MsgPack value.
    pub fn raw(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::hex;

    #[test]
    fn reads_the_ts_ping_fixture() {
        // PROTOCOL.md §1.8: map16, float64 timestamp.
        let frame = hex("de0002a474797065a450494e47a974696d657374616d70cb4278bcfe56800000");
        let raw = parse(&frame, &Limits::default()).unwrap();
        assert_eq!(
            raw,
            Raw::Map(vec![
                ("type", Raw::Str("PING")),
                ("timestamp", Raw::Float(1_700_000_000_000.0))
            ])
        );
    }

    #[test]
    fn writes_the_reference_ping_bytes() {
        let mut w = Writer::new();
        w.map_header(2);
        w.str("type");
        w.str("PING");
        w.str("timestamp");
        w.uint(1_700_000_000_000);
        assert_eq!(
            w.into_bytes(),
            hex("82a474797065a450494e47a974696d657374616d70cf0000018bcfe56800")
        );
    }

    #[test]
    fn integers_round_trip_at_every_boundary() {
        let ints = [
            0,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            i64::from(u32::MAX) + 1,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            i32::MIN.into(),
            i64::from(i32::MIN) - 1,
            i64::MIN,
        ];
        for i in ints {
            let mut w = Writer::new();
            w.int(i);
            assert_eq!(
                parse(w.as_bytes(), &Limits::default()),
                Ok(Raw::Int(i)),
                "{i}"
            );
        }
        let mut w = Writer::new();
        w.uint(u64::MAX);
        assert_eq!(
            parse(w.as_bytes(), &Limits::default()),
            Ok(Raw::UInt(u64::MAX))
        );
    }

    #[test]
    fn strings_and_collections_use_every_header_size() {
        for len in [0usize, 31, 32, 255, 256, 65_535, 65_536] {
            let s = "x".repeat(len);
            let mut w = Writer::new();
            w.str(&s);
            assert_eq!(parse(w.as_bytes(), &Limits::default()), Ok(Raw::Str(&s)));
            let mut w = Writer::new();
            w.array_header(len);
            for _ in 0..len {
                w.nil();
            }
            assert_eq!(
                parse(w.as_bytes(), &Limits::default()),
                Ok(Raw::Array(vec![Raw::Nil; len]))
            );
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let limits = Limits::default();
        let cases: [(&str, ErrorKind); 7] = [
            ("", ErrorKind::Truncated),
            ("c1", ErrorKind::ReservedByte(0xc1)),
            ("a3616263ff", ErrorKind::TrailingBytes { count: 1 }),
            ("a2c328", ErrorKind::InvalidUtf8),
            ("8101c0", ErrorKind::NonStringKey("an integer")),
            // array32 claiming 4 billion elements in a 5-byte frame: refused before allocating.
            (
                "ddffffffff",
                ErrorKind::TooLong {
                    len: 4_294_967_295,
                    max: 100_000,
                },
            ),
            ("dd0000ffff", ErrorKind::Truncated),
        ];
        for (input, kind) in cases {
            let err = parse(&hex(input), &limits).unwrap_err();
            assert_eq!(err.kind(), &kind, "{input}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let tight = Limits {
            max_frame_bytes: 8,
            max_depth: 2,
            max_collection_len: 2,
            max_str_bytes: 3,
        };
        let kind = |input: &str| parse(&hex(input), &tight).unwrap_err().kind().clone();
        assert!(matches!(
            kind("a9616161616161616161"),
            ErrorKind::FrameTooLarge { .. }
        ));
        assert_eq!(kind("919191c0"), ErrorKind::TooDeep { max: 2 });
        assert_eq!(kind("93c0c0c0"), ErrorKind::TooLong { len: 3, max: 2 });
        assert_eq!(kind("a461616161"), ErrorKind::TooLong { len: 4, max: 3 });
        assert!(parse(&hex("9191c0"), &tight).is_ok(), "depth 2 is allowed");
    }

    #[test]
    fn fast_paths_keep_every_check() {
        // The typed reader's short-string path still applies a string limit below 255.
        let tight = Limits {
            max_str_bytes: 3,
            ..Limits::default()
        };
        for input in ["a461616161", "d90461616161"] {
            let bytes = hex(input);
            let mut r = Reader::new(&bytes, &tight).unwrap();
            let err = r.read_str(Path::Root).unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::TooLong { len: 4, max: 3 },
                "{input}"
            );
            let mut r = Reader::new(&bytes, &tight).unwrap();
            assert!(r.skip(Path::Root).is_err(), "{input}");
        }
        // Every number encoding cut short is truncated, however it is read; whole, it reads.
        let limits = Limits::default();
        let sizes = [
            (0xca, 4),
            (0xcb, 8),
            (0xcc, 1),
            (0xcd, 2),
            (0xce, 4),
            (0xcf, 8),
        ];
        let signed = [(0xd0, 1), (0xd1, 2), (0xd2, 4), (0xd3, 8)];
        for (tag, size) in sizes.into_iter().chain(signed) {
            let mut frame = vec![tag];
            frame.extend(std::iter::repeat_n(0x01, size - 1));
            let mut r = Reader::new(&frame, &limits).unwrap();
            let err = r.read_number(Path::Root, "a number").unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Truncated, "{tag:#x}");
            let err = parse(&frame, &limits).unwrap_err();
            assert_eq!(err.kind(), &ErrorKind::Truncated, "{tag:#x}");
            frame.push(0x01);
            let mut r = Reader::new(&frame, &limits).unwrap();
            assert!(r.read_number(Path::Root, "a number").is_ok(), "{tag:#x}");
            r.finish().unwrap();
        }
        // A string where a number belongs is the wrong type, and is left unread.
        let frame = hex("a131");
        let mut r = Reader::new(&frame, &limits).unwrap();
        let err = r.read_number(Path::Root, "a number").unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WrongType { .. }));
        assert_eq!(r.read_str(Path::Root).unwrap(), "1");
    }

    /// Nesting at the ceiling decodes, converts to a typed value and drops on a 2 MiB stack
    /// (the default for spawned threads) in whatever profile the tests run.
    #[test]
    fn the_depth_ceiling_fits_a_small_stack() {
        use crate::protocol::Wire;
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let limits = Limits {
                    max_depth: usize::MAX,
                    ..Limits::default()
                };
                // MAX_DEPTH_CEILING nested one-element arrays around a nil.
                let mut deepest = vec![0x91; MAX_DEPTH_CEILING];
                deepest.push(0xc0);
                let raw = parse(&deepest, &limits).unwrap();
                let mut reader = Reader::new(&deepest, &limits).unwrap();
                let value = crate::Value::decode(&mut reader, Path::Root).unwrap();
                drop((raw, value));
                let mut reader = Reader::new(&deepest, &limits).unwrap();
                reader.skip(Path::Root).unwrap();
                deepest.insert(0, 0x91);
                parse(&deepest, &limits)
                    .map(|_| ())
                    .unwrap_err()
                    .kind()
                    .clone()
            })
            .unwrap();
        assert_eq!(
            handle.join().unwrap(),
            ErrorKind::TooDeep {
                max: MAX_DEPTH_CEILING
            }
        );
    }

    /// A type error on a huge collection describes it without reading it.
    #[test]
    fn wrong_type_errors_do_not_read_the_value() {
        // An array claiming 100,000 elements of which only the header is present: reading it
        // would fail as truncated; describing it must not.
        let mut frame = vec![0xdd];
        frame.extend_from_slice(&100_000u32.to_be_bytes());
        let r = Reader::new(&frame, &Limits::default()).unwrap();
        let err = r.wrong_type(Path::Root, "a string");
        assert_eq!(err.to_string(), "expected a string, found an array");
    }

    #[test]
    fn preallocation_is_capped() {
        let mut frame = vec![0xdd];
        frame.extend_from_slice(&100_000u32.to_be_bytes());
        frame.extend(std::iter::repeat_n(0xc0, 100_000));
        let r = Reader::new(&frame, &Limits::default()).unwrap();
        assert_eq!(r.len_hint(), PREALLOCATE_MAX);
    }

    #[test]
    fn error_paths_name_the_field() {
        // {"a": [nil, "\xc3("]} — invalid UTF-8 inside a.[1]
        let err = parse(&hex("81a16192c0a2c328"), &Limits::default()).unwrap_err();
        assert_eq!(err.field(), "a[1]");
    }
}
