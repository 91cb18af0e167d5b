//! Frames in a segment's bytes: parsing them in order, and finding a valid one past damage.
//!
//! Parsing only says where and why a run of frames ended. Whether that end is a torn tail
//! (a write cut short by a crash, never acknowledged) or damage is the caller's decision:
//! recovery looks for valid frames after it and at what the store last checkpointed, the
//! checkpointer's reader at what the writer reported durable.

/// Frame header: payload length (u32 LE), CRC32C (u32 LE), LSN (u64 LE).
pub(super) const FRAME_HEADER_BYTES: usize = 16;

/// One frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Its length in the segment, header included.
    pub(super) fn span(&self) -> u64 {
        (FRAME_HEADER_BYTES + self.payload.len()) as u64
    }
}

/// How a run of frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// Every byte was parsed, or the caller's `stop` said so.
    Clean,
    /// The frame at `offset` runs past the bytes given: a torn tail, the end of a partial
    /// read, or a damaged length field.
    Short { offset: u64, reason: String },
    /// The frame at `offset` is whole but fails its checksum or breaks the LSN sequence.
    Bad { offset: u64, reason: String },
}

impl Ending {
    /// Where the run broke off, and why; `None` if it did not.
    pub(super) fn broken(&self) -> Option<(u64, &str)> {
        match self {
            Self::Clean => None,
            Self::Short { offset, reason } | Self::Bad { offset, reason } => {
                Some((*offset, reason))
            }
        }
    }
}

/// A whole frame at the start of `bytes`: `(LSN, payload, its length)` if its checksum
/// holds, whatever its LSN.
fn frame_at(bytes: &[u8]) -> Result<(u64, &[u8], usize), Ending> {
    let short = |reason: String| Ending::Short { offset: 0, reason };
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Err(short(format!(
            "frame header cut short ({} of {FRAME_HEADER_BYTES} bytes)",
            bytes.len()
        )));
    };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let Some(body) = bytes.get(8..FRAME_HEADER_BYTES + len) else {
        return Err(short(format!(
            "frame of {len} payload bytes runs past the end ({} bytes left)",
            bytes.len() - FRAME_HEADER_BYTES
        )));
    };
    if crc32c::crc32c(body) != crc {
        return Err(Ending::Bad {
            offset: 0,
            reason: "checksum mismatch".into(),
        });
    }
    let lsn = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    Ok((lsn, &body[8..], FRAME_HEADER_BYTES + len))
}

/// Parses frames from `bytes` (which start at file offset `base`), expecting `next_lsn`,
/// until `stop` says so for the next frame's LSN (with the number of frames in `out` and the
/// payload bytes parsed so far by this call).
pub(super) fn parse_frames(
    bytes: &[u8],
    base: u64,
    mut next_lsn: u64,
    out: &mut Vec<Frame>,
    stop: impl Fn(u64, usize, usize) -> bool,
) -> Ending {
    let mut pos = 0usize;
    let mut parsed = 0usize;
    while pos < bytes.len() && !stop(next_lsn, out.len(), parsed) {
        let offset = base + pos as u64;
        let (lsn, payload, span) = match frame_at(&bytes[pos..]) {
            Ok(frame) => frame,
            Err(Ending::Short { reason, .. }) => return Ending::Short { offset, reason },
            Err(Ending::Bad { reason, .. }) => return Ending::Bad { offset, reason },
            Err(Ending::Clean) => unreachable!("frame_at never ends cleanly"),
        };
        if lsn != next_lsn {
            let reason = format!("LSN {lsn} where {next_lsn} was expected");
            return Ending::Bad { offset, reason };
        }
        out.push(Frame {
            lsn,
            payload: payload.to_vec(),
        });
        parsed += payload.len();
        next_lsn += 1;
        pos += span;
    }
    Ending::Clean
}

/// Valid frames found after damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Survivors {
    /// Offset (within the bytes searched) of the first one.
    pub at: usize,
    /// How many follow one another from there, and their LSNs.
    pub count: u64,
    pub first_lsn: u64,
    pub last_lsn: u64,
}

/// Looks for a valid frame anywhere in `bytes[from..]` whose LSN could follow the damaged
/// frame that was to carry `expected` (so at least `expected`, and at most one more per
/// frame header's worth of bytes in between), then counts the run of frames from there.
///
/// A checksum alone would not do: among the millions of offsets of a large segment, a few
/// random ones pass a 32-bit CRC. Requiring the LSN as well makes a false find a matter of
/// a 64-bit coincidence, and skips most offsets without computing a checksum at all.
pub(super) fn survivors(bytes: &[u8], from: usize, expected: u64) -> Option<Survivors> {
    let last_start = bytes.len().checked_sub(FRAME_HEADER_BYTES)?;
    for at in from..=last_start {
        let lsn = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        let most = expected + ((at - from) / FRAME_HEADER_BYTES) as u64 + 1;
        if lsn < expected || lsn > most {
            continue;
        }
        if let Ok((lsn, _, _)) = frame_at(&bytes[at..]) {
            let mut run = Vec::new();
            let _ = parse_frames(&bytes[at..], 0, lsn, &mut run, |_, _, _| false);
            let last_lsn = run.last().map_or(lsn, |f| f.lsn);
            return Some(Survivors {
                at,
                count: run.len() as u64,
                first_lsn: lsn,
                last_lsn,
            });
        }
    }
    None
}

/// Appends one frame's bytes to `out`.
pub(super) fn encode_frame(lsn: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("entries are far below 4 GiB");
    let lsn_bytes = lsn.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lsns: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for lsn in lsns {
            encode_frame(lsn, format!("payload {lsn}").as_bytes(), &mut out);
        }
        out
    }

    fn parse(bytes: &[u8], first: u64) -> (Vec<u64>, Ending) {
        let mut out = Vec::new();
        let ending = parse_frames(bytes, 0, first, &mut out, |_, _, _| false);
        (out.iter().map(|f| f.lsn).collect(), ending)
    }

    #[test]
    fn frames_parse_in_order_and_stop_at_the_first_bad_one() {
        let bytes = log(1..=5);
        assert_eq!(parse(&bytes, 1), ((1..=5).collect(), Ending::Clean));
        let (lsns, ending) = parse(&bytes, 2);
        assert!(lsns.is_empty());
        assert!(
            matches!(ending, Ending::Bad { offset: 0, .. }),
            "{ending:?}"
        );
        let (lsns, ending) = parse(&bytes[..bytes.len() - 1], 1);
        assert_eq!(lsns, [1, 2, 3, 4]);
        assert!(matches!(ending, Ending::Short { .. }));
    }

    #[test]
    fn a_length_pointing_past_the_end_is_found_to_have_survivors() {
        let mut bytes = log(1..=20);
        let fourth = 3 * (FRAME_HEADER_BYTES + "payload 1".len());
        bytes[fourth..fourth + 4].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let (lsns, ending) = parse(&bytes, 1);
        assert_eq!(lsns, [1, 2, 3]);
        let (offset, _) = ending.broken().unwrap();
        assert_eq!(offset, fourth as u64);
        let found = survivors(&bytes, fourth + 1, 4).expect("frames 5..=20 are intact");
        assert_eq!((found.first_lsn, found.last_lsn, found.count), (5, 20, 16));
    }

    #[test]
    fn zeros_and_garbage_have_no_survivors() {
        assert_eq!(survivors(&[0; 4096], 0, 7), None);
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert_eq!(survivors(&garbage, 0, 7), None);
        // A frame whose LSN cannot follow the damage does not count.
        assert_eq!(survivors(&log(1..=3), 0, 50), None);
    }
}
