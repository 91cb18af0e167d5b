//! The hashes every TopGun implementation must agree on (PROTOCOL.md §3).
//!
//! * [`fnv1a`] — 32-bit FNV-1a over **UTF-16 code units** (what JavaScript's `charCodeAt`
//!   sees), not UTF-8 bytes. It routes keys to Merkle leaves and partitions and hashes items.
//! * [`mix`] — the MurmurHash3 `fmix32` finaliser.
//! * [`combine`] — the order-independent node hash: the wrapping sum of the mixed inputs.
//!   Because it is a plain sum, a parent can be maintained incrementally by subtracting the
//!   mix of a child's old hash and adding the mix of its new one.
//! * [`partition_id`] — `fnv1a(key) % 271`.

/// Number of partitions of the key space (`PARTITION_COUNT` on every node and client).
pub const PARTITION_COUNT: u32 = 271;

const FNV_OFFSET_BASIS: u32 = 0x811C_9DC5;
const FNV_PRIME: u32 = 0x0100_0193;

/// Streaming FNV-1a over UTF-16 code units.
///
/// Streaming lets hot paths hash `"<key>:<millis>:<counter>:<node>"` without building the
/// string, and lets a caller reuse the state after the key (which *is* `fnv1a(key)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a {
    state: u32,
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    /// A hasher in the initial state (the hash of `""`).
    pub const fn new() -> Self {
        Self {
            state: FNV_OFFSET_BASIS,
        }
    }

    /// A hasher continuing from `state`, a value [`Fnv1a::finish`] returned: streaming a
    /// string in two parts gives the hash of the whole.
    pub const fn resume(state: u32) -> Self {
        Self { state }
    }

    /// Feeds one UTF-16 code unit.
    #[inline]
    pub fn write_unit(&mut self, unit: u16) {
        self.state = (self.state ^ u32::from(unit)).wrapping_mul(FNV_PRIME);
    }

    /// Feeds a string as its UTF-16 code units.
    #[inline]
    pub fn write_str(&mut self, s: &str) {
        if s.is_ascii() {
            // ASCII bytes are their own UTF-16 code units; skip the decoder.
            for &b in s.as_bytes() {
                self.write_unit(u16::from(b));
            }
        } else {
            for unit in s.encode_utf16() {
                self.write_unit(unit);
            }
        }
    }

    /// Feeds the decimal digits of `n` (as JavaScript's `String(n)` renders an integer).
    #[inline]
    pub fn write_decimal(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            // `rest % 10` is below 10, so the narrowing cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let digit = (rest % 10) as u8;
            digits[at] = b'0' + digit;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for &d in &digits[at..] {
            self.write_unit(u16::from(d));
        }
    }

    /// The hash of everything fed so far.
    #[inline]
    pub const fn finish(self) -> u32 {
        self.state
    }
}

/// 32-bit FNV-1a of `s` over its UTF-16 code units.
#[inline]
pub fn fnv1a(s: &str) -> u32 {
    let mut h = Fnv1a::new();
    h.write_str(s);
    h.finish()
}

/// MurmurHash3's 32-bit finaliser (`fmix32`). `mix(0) == 0`.
#[inline]
pub const fn mix(h: u32) -> u32 {
    let mut h = h;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    h
}

/// Order-independent combination: `Σ mix(h)` modulo 2^32. Empty input gives 0.
pub fn combine<I: IntoIterator<Item = u32>>(hashes: I) -> u32 {
    hashes
        .into_iter()
        .fold(0u32, |acc, h| acc.wrapping_add(mix(h)))
}

/// The partition a key belongs to: `fnv1a(key) % 271`.
#[inline]
pub fn partition_id(key: &str) -> u32 {
    fnv1a(key) % PARTITION_COUNT
}

/// A key's Merkle routing path: `fnv1a(key)` as 8 lowercase, zero-padded hex digits.
pub fn routing_path(key: &str) -> String {
    format!("{:08x}", fnv1a(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §3.1: every vector with its hash, hex form and partition.
    #[test]
    fn fnv1a_vectors() {
        let vectors: [(&str, u32, &str, u32); 9] = [
            ("", 2_166_136_261, "811c9dc5", 199),
            ("hello", 1_335_831_723, "4f9f2cab", 95),
            ("foo", 2_851_307_223, "a9f37ed7", 235),
            ("key1", 927_623_783, "374a6a67", 268),
            ("user:alice", 927_278_352, "37452510", 91),
            ("a", 3_826_002_220, "e40c292c", 101),
            ("key1:100:0:test", 3_988_528_110, "edbc1bee", 245),
            ("€", 2_839_424_075, "a93e2c4b", 166),
            ("😀", 3_409_036_472, "cb31c4b8", 102),
        ];
        for (input, decimal, hex, partition) in vectors {
            assert_eq!(fnv1a(input), decimal, "fnv1a({input:?})");
            assert_eq!(routing_path(input), hex, "hex of {input:?}");
            assert_eq!(partition_id(input), partition, "partition of {input:?}");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = Fnv1a::new();
        h.write_str("key1");
        h.write_unit(u16::from(b':'));
        h.write_decimal(100);
        h.write_unit(u16::from(b':'));
        h.write_decimal(0);
        h.write_str(":test");
        assert_eq!(h.finish(), fnv1a("key1:100:0:test"));
        let mut max = Fnv1a::new();
        max.write_decimal(u64::MAX);
        assert_eq!(max.finish(), fnv1a("18446744073709551615"));
    }

    /// PROTOCOL.md §3.2 vectors.
    #[test]
    fn mix_and_combine_vectors() {
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 1_364_076_727);
        assert_eq!(mix(5), 3_423_425_485);
        assert_eq!(combine([100, 200]), 0xBC1D_AB1C);
        assert_eq!(combine([100, 200]), 3_156_060_956);
        assert_eq!(combine([0xFFFF_FFFF; 3]), 0x85D4_4DAB);
        assert_eq!(combine([]), 0);
        assert_eq!(combine([7]), mix(7));
    }

    #[test]
    fn combine_is_order_independent_and_additive() {
        let a = [1u32, 99, 0xDEAD_BEEF];
        let b = [42u32, 7];
        assert_eq!(combine(a), combine([0xDEAD_BEEF, 1, 99]));
        let union: Vec<u32> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(combine(a).wrapping_add(combine(b)), combine(union));
    }

    /// PROTOCOL.md §3.4: the LWW item hash of `alice` at `1700000000000:0:n1`.
    #[test]
    fn lww_item_hash_vector() {
        let item = fnv1a("alice:1700000000000:0:n1");
        assert_eq!(item, 3_608_504_158);
        assert_eq!(mix(item), 4_166_413_597);
        assert_eq!(routing_path("alice"), "872213e7");
    }
}
