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

/// The deepest nesting any configuration may allow: deep enough for real documents, shallow
/// enough that decoding, converting and dropping a value of that depth fits a 2 MiB thread
/// stack even in a debug build (a test checks it).
pub const MAX_DEPTH_CEILING: usize = 512;

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

/// Parses exactly one MsgPack value filling the whole frame.
pub fn parse<'a>(frame: &'a [u8], limits: &Limits) -> Result<Raw<'a>, DecodeError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(DecodeError::frame(ErrorKind::FrameTooLarge {
            size: frame.len(),
            max: limits.max_frame_bytes,
        }));
    }
    let mut reader = Reader {
        bytes: frame,
        at: 0,
        limits,
    };
    let value = reader.value(Path::Root, 1)?;
    if reader.at != frame.len() {
        return Err(DecodeError::frame(ErrorKind::TrailingBytes {
            count: frame.len() - reader.at,
        }));
    }
    Ok(value)
}

struct Reader<'a, 'l> {
    bytes: &'a [u8],
    at: usize,
    limits: &'l Limits,
}

impl<'a> Reader<'a, '_> {
    fn take(&mut self, n: usize, at: Path<'_>) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| DecodeError::at(at, ErrorKind::Truncated))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
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

    /// Reads one value. Kept small: it is the only recursive function, and its frame is
    /// what nesting multiplies (scalars are read by the non-recursive `scalar`).
    fn value(&mut self, at: Path<'_>, depth: usize) -> Result<Raw<'a>, DecodeError> {
        let tag = self.byte(at)?;
        match tag {
            0x80..=0x8f => self.map(usize::from(tag & 0x0f), at, depth),
            0x90..=0x9f => self.array(usize::from(tag & 0x0f), at, depth),
            0xdc => {
                let n = self.len_u16(at)?;
                self.array(n, at, depth)
            }
            0xdd => {
                let n = self.len_u32(at)?;
                self.array(n, at, depth)
            }
            0xde => {
                let n = self.len_u16(at)?;
                self.map(n, at, depth)
            }
            0xdf => {
                let n = self.len_u32(at)?;
                self.map(n, at, depth)
            }
            _ => self.scalar(tag, at),
        }
    }

    /// Reads a value that is not an array or a map.
    #[inline(never)]
    fn scalar(&mut self, tag: u8, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        match tag {
            0x00..=0x7f => Ok(Raw::Int(i64::from(tag))),
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
            0xca => Ok(Raw::Float(f64::from(f32::from_be_bytes(self.be(at)?)))),
            0xcb => Ok(Raw::Float(f64::from_be_bytes(self.be(at)?))),
            0xcc => Ok(Raw::Int(i64::from(self.byte(at)?))),
            0xcd => Ok(Raw::Int(i64::from(u16::from_be_bytes(self.be(at)?)))),
            0xce => Ok(Raw::Int(i64::from(u32::from_be_bytes(self.be(at)?)))),
            0xcf => {
                let u = u64::from_be_bytes(self.be(at)?);
                Ok(i64::try_from(u).map_or(Raw::UInt(u), Raw::Int))
            }
            0xd0 => Ok(Raw::Int(i64::from(i8::from_be_bytes(self.be(at)?)))),
            0xd1 => Ok(Raw::Int(i64::from(i16::from_be_bytes(self.be(at)?)))),
            0xd2 => Ok(Raw::Int(i64::from(i32::from_be_bytes(self.be(at)?)))),
            0xd3 => Ok(Raw::Int(i64::from_be_bytes(self.be(at)?))),
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
            0xe0..=0xff => Ok(Raw::Int(i64::from(i8::from_be_bytes([tag])))),
            _ => Err(DecodeError::at(at, ErrorKind::ReservedByte(tag))),
        }
    }

    fn check_string_len(&self, n: usize, at: Path<'_>) -> Result<(), DecodeError> {
        if n > self.limits.max_str_bytes {
            return Err(DecodeError::at(
                at,
                ErrorKind::TooLong {
                    len: n,
                    max: self.limits.max_str_bytes,
                },
            ));
        }
        Ok(())
    }

    fn str(&mut self, n: usize, at: Path<'_>) -> Result<Raw<'a>, DecodeError> {
        self.check_string_len(n, at)?;
        let bytes = self.take(n, at)?;
        std::str::from_utf8(bytes)
            .map(Raw::Str)
            .map_err(|_| DecodeError::at(at, ErrorKind::InvalidUtf8))
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

    /// Checks a collection header: depth, the configured length cap, and that the frame
    /// still holds at least `n * min_bytes` bytes (so a forged length allocates nothing).
    fn check_collection(
        &self,
        n: usize,
        min_bytes: usize,
        at: Path<'_>,
        depth: usize,
    ) -> Result<(), DecodeError> {
        let max_depth = self.limits.max_depth.min(MAX_DEPTH_CEILING);
        if depth > max_depth {
            return Err(DecodeError::at(at, ErrorKind::TooDeep { max: max_depth }));
        }
        if n > self.limits.max_collection_len {
            return Err(DecodeError::at(
                at,
                ErrorKind::TooLong {
                    len: n,
                    max: self.limits.max_collection_len,
                },
            ));
        }
        let remaining = self.bytes.len() - self.at;
        if n.saturating_mul(min_bytes) > remaining {
            return Err(DecodeError::at(at, ErrorKind::Truncated));
        }
        Ok(())
    }

    fn array(&mut self, n: usize, at: Path<'_>, depth: usize) -> Result<Raw<'a>, DecodeError> {
        self.check_collection(n, 1, at, depth)?;
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            items.push(self.value(at.index(i), depth + 1)?);
        }
        Ok(Raw::Array(items))
    }

    fn map(&mut self, n: usize, at: Path<'_>, depth: usize) -> Result<Raw<'a>, DecodeError> {
        self.check_collection(n, 2, at, depth)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let key = match self.value(at, depth + 1)? {
                Raw::Str(key) => key,
                other => {
                    return Err(DecodeError::at(at, ErrorKind::NonStringKey(other.kind())));
                }
            };
            let value = self.value(at.key(key), depth + 1)?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
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

    /// Appends an already encoded MsgPack value.
    pub fn raw(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

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
            assert_eq!(err.kind, kind, "{input}");
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
        let kind = |input: &str| parse(&hex(input), &tight).unwrap_err().kind;
        assert!(matches!(
            kind("a9616161616161616161"),
            ErrorKind::FrameTooLarge { .. }
        ));
        assert_eq!(kind("919191c0"), ErrorKind::TooDeep { max: 2 });
        assert_eq!(kind("93c0c0c0"), ErrorKind::TooLong { len: 3, max: 2 });
        assert_eq!(kind("a461616161"), ErrorKind::TooLong { len: 4, max: 3 });
        assert!(parse(&hex("9191c0"), &tight).is_ok(), "depth 2 is allowed");
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
                let value = crate::Value::decode(&raw, Path::Root).unwrap();
                drop((raw, value));
                deepest.insert(0, 0x91);
                parse(&deepest, &limits).map(|_| ()).unwrap_err().kind
            })
            .unwrap();
        assert_eq!(
            handle.join().unwrap(),
            ErrorKind::TooDeep {
                max: MAX_DEPTH_CEILING
            }
        );
    }

    #[test]
    fn error_paths_name_the_field() {
        // {"a": [nil, "\xc3("]} — invalid UTF-8 inside a.[1]
        let err = parse(&hex("81a16192c0a2c328"), &Limits::default()).unwrap_err();
        assert_eq!(err.field, "a[1]");
    }
}
