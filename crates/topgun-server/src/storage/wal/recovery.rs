//! Reading the log back at start-up, and telling a torn tail from damage.
//!
//! Recovery first reads every segment without changing anything, then decides, and only
//! then truncates or removes files. The decision rests on two kinds of evidence:
//!
//! * **The log itself.** A write cut short by a crash can only be the end of the last
//!   segment, with nothing valid after it. A bad frame followed by any valid frame, a bad
//!   frame in any other segment, a segment cut below its header (segments are created whole,
//!   under a temporary name), a gap between segments: all damage.
//! * **The store's mark** ([`LogMark`]), written atomically with every checkpoint batch: the
//!   LSN the store holds everything through, and the LSN the log had synced by then. A
//!   healthy log always keeps a segment (the writer's current one is never released),
//!   reaches back to the frame after the checkpoint, and reaches forward at least to the
//!   synced mark. So a deleted `wal/` directory, a missing segment, or a last segment cut
//!   short below what was synced is found even where the log's own bytes look clean.
//!
//! What the two cannot tell apart is damage to frames written after the last checkpoint at
//! the very end of the last segment, from a crash a moment earlier. Checkpoints run at least
//! every 100 ms while writes come in, so that is the window.
//!
//! Damage stops start-up with an error naming the file, the offset and what was found, unless
//! the operator chose to discard it ([`OnCorruption::Discard`]); then every stretch dropped is
//! reported ([`Discarded`]), with the frames known to be in it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use super::frame::{Ending, Frame, Survivors, parse_frames, survivors};
use super::{HEADER_LEN, MAGIC, OnCorruption, WalConfig, WalError, io_err, truncate};

/// What the store says the log must hold: recorded with every checkpoint batch, in the same
/// atomic store write. An empty store says `{0, 0}`: nothing was ever checkpointed, so no
/// segment was ever released, and the log must start at LSN 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    /// The store holds every frame through this LSN.
    pub checkpointed: u64,
    /// Every frame through this LSN was synced to the log when the batch was read (at least
    /// `checkpointed`). Zero when the log is not synced (`os` durability), where a power loss
    /// may take back what the store already holds.
    pub synced: u64,
}

/// A stretch of the log that recovery dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// The file (or directory) and what was wrong with it.
    pub what: String,
    /// Bytes removed from disk.
    pub bytes: u64,
    /// Valid frames known to have been in what was dropped: how many, and their LSNs.
    pub frames: Option<(u64, u64, u64)>,
    /// Frames that may have been acknowledged are in it. Only a torn tail never holds any.
    pub may_hold_acknowledged: bool,
}

impl std::fmt::Display for Discarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes", self.what, self.bytes)?;
        if let Some((count, first, last)) = self.frames {
            write!(f, "; {count} valid frames, LSNs {first}..={last}")?;
        }
        write!(f, ")")
    }
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// Every frame still in the log, in LSN order.
    pub frames: Vec<Frame>,
    /// The LSN the next append gets.
    pub next_lsn: u64,
    /// What was cut off or dropped: a torn tail, or damage the operator chose to discard.
    pub discarded: Vec<Discarded>,
}

impl Recovered {
    /// Bytes cut off a torn tail or discarded on request.
    pub fn discarded_bytes(&self) -> u64 {
        self.discarded.iter().map(|d| d.bytes).sum()
    }
}

/// One segment file as found.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    len: u64,
}

/// Where the readable log ends, if it ends before the last byte.
#[derive(Debug)]
struct Damage {
    /// Index of the segment.
    segment: usize,
    /// Bytes of the segment kept: 0 drops the whole file, else the offset of the bad frame.
    keep: u64,
    /// The offset reported.
    offset: u64,
    reason: String,
    /// The LSN that was due where the damage is.
    expected: u64,
    /// Valid frames found after it in the same segment.
    survivors: Option<Survivors>,
}

/// The log read through, before anything is changed.
#[derive(Debug)]
struct Scan {
    segments: Vec<Segment>,
    frames: Vec<Frame>,
    damage: Option<Damage>,
}

/// What will be done to the files.
#[derive(Debug, Default)]
struct Plan {
    /// Cut the segment at this index to this many bytes (0: remove it) and remove every
    /// later one.
    cut: Option<(usize, u64)>,
    /// Remove every segment (all its frames are in the store).
    clear: bool,
    discarded: Vec<Discarded>,
}

/// Reads the log in `config.dir` (created if missing), checks it against what the store last
/// checkpointed (`mark`), repairs a torn tail, and drops damage if the operator asked to.
pub fn recover(config: &WalConfig, mark: Option<LogMark>) -> Result<Recovered, WalError> {
    fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
    remove_unfinished_segments(&config.dir)?;
    let scan = scan(&config.dir)?;
    let discard = config.on_corruption == OnCorruption::Discard;
    let mut plan = Plan::default();
    let mut frames = scan.frames;
    if let Some(damage) = &scan.damage {
        decide_damage(&scan.segments, damage, mark, discard, &mut plan)?;
    }
    let kept_segments = match plan.cut {
        Some((at, 0)) => at,
        Some((at, _)) => at + 1,
        None => scan.segments.len(),
    };
    let next_lsn = match mark {
        Some(mark) => {
            let kept = &scan.segments[..kept_segments];
            check_against_mark(&config.dir, kept, &frames, mark, discard, &mut plan)?
        }
        None => end_of(&scan.segments[..kept_segments], &frames) + 1,
    };
    if plan.clear {
        frames.clear();
    }
    apply(&scan.segments, &plan)?;
    Ok(Recovered {
        frames,
        next_lsn,
        discarded: plan.discarded,
    })
}

/// The last LSN the kept log holds (the first segment's first LSN − 1 if it holds no frame,
/// 0 if there is no segment).
fn end_of(segments: &[Segment], frames: &[Frame]) -> u64 {
    match (frames.last(), segments.first()) {
        (Some(frame), _) => frame.lsn,
        (None, Some(first)) => first.first - 1,
        (None, None) => 0,
    }
}

/// Segments are created under a temporary name and renamed once their header is synced, so
/// a leftover temporary file is a crash during creation: it never held a frame.
fn remove_unfinished_segments(dir: &Path) -> Result<(), WalError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("wal-") && name.ends_with(".seg.tmp") {
            tracing::info!(path = %path.display(), "removed a log segment left unfinished by a crash");
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Reads every segment, oldest first, up to the first damage.
fn scan(dir: &Path) -> Result<Scan, WalError> {
    let mut segments = Vec::new();
    for (first, path) in super::segments(dir)? {
        let len = fs::metadata(&path).map_err(io_err(&path))?.len();
        segments.push(Segment { first, path, len });
    }
    let mut frames = Vec::new();
    let mut next_lsn = segments.first().map_or(1, |s| s.first);
    for (at, segment) in segments.iter().enumerate() {
        let bytes = fs::read(&segment.path).map_err(io_err(&segment.path))?;
        let whole = |offset: u64, reason: String| Damage {
            segment: at,
            keep: 0,
            offset,
            reason,
            expected: next_lsn,
            survivors: None,
        };
        if let Some(reason) = header_problem(&bytes, segment.first, next_lsn) {
            let damage = whole(0, reason);
            return Ok(Scan {
                segments,
                frames,
                damage: Some(damage),
            });
        }
        let body = &bytes[HEADER_LEN..];
        let before = frames.len();
        let ending = parse_frames(body, HEADER_LEN as u64, next_lsn, &mut frames, |_, _, _| {
            false
        });
        next_lsn += (frames.len() - before) as u64;
        if let Some((offset, reason)) = ending.broken() {
            let from = usize::try_from(offset).expect("offsets fit in memory") - HEADER_LEN + 1;
            let damage = Damage {
                segment: at,
                keep: offset,
                offset,
                reason: reason.to_owned(),
                expected: next_lsn,
                survivors: survivors(body, from, next_lsn),
            };
            return Ok(Scan {
                segments,
                frames,
                damage: Some(damage),
            });
        }
        debug_assert_eq!(ending, Ending::Clean);
    }
    Ok(Scan {
        segments,
        frames,
        damage: None,
    })
}

/// What is wrong with a segment's header, if anything.
fn header_problem(bytes: &[u8], named_first: u64, expected: u64) -> Option<String> {
    if named_first == 0 {
        return Some("named for LSN 0, which no frame ever has".into());
    }
    if bytes.len() < HEADER_LEN {
        // Segments appear only once their header is on disk (created under a temporary
        // name), so a short one was cut, not caught half-made by a crash.
        return Some(format!(
            "cut below its {HEADER_LEN}-byte header ({} bytes)",
            bytes.len()
        ));
    }
    if bytes[..8] != MAGIC {
        return Some("not a write-ahead log segment (bad magic)".into());
    }
    let header_lsn = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if header_lsn != named_first {
        return Some(format!(
            "its header says it starts at LSN {header_lsn}, its name at {named_first}"
        ));
    }
    if named_first > expected {
        return Some(format!(
            "starts at LSN {named_first}, but the log before it ends at LSN {}: frames \
             {expected}..={} are missing",
            expected - 1,
            named_first - 1
        ));
    }
    if named_first < expected {
        return Some(format!(
            "starts at LSN {named_first}, inside the segment before it (which ends at LSN {})",
            expected - 1
        ));
    }
    None
}

/// Whether the log's first damage is a torn tail (cut off) or corruption (refused, or
/// discarded with everything after it).
fn decide_damage(
    segments: &[Segment],
    damage: &Damage,
    mark: Option<LogMark>,
    discard: bool,
    plan: &mut Plan,
) -> Result<(), WalError> {
    let segment = &segments[damage.segment];
    let last = damage.segment + 1 == segments.len();
    let synced = mark.map_or(0, |m| m.synced);
    let torn = last && damage.keep > 0 && damage.survivors.is_none() && damage.expected > synced;
    let dropped = lost_frames(segments, damage)?;
    let bytes = segment.len - damage.keep
        + segments[damage.segment + 1..]
            .iter()
            .map(|s| s.len)
            .sum::<u64>();
    plan.cut = Some((damage.segment, damage.keep));
    if torn {
        plan.discarded.push(Discarded {
            what: format!(
                "a torn tail at byte {} of {} (a write cut short by a crash: {})",
                damage.offset,
                segment.path.display(),
                damage.reason
            ),
            bytes,
            frames: None,
            may_hold_acknowledged: false,
        });
        return Ok(());
    }
    let mut reason = damage.reason.clone();
    if let Some(s) = damage.survivors {
        let _ = write!(
            reason,
            "; {} valid frames follow it (LSNs {}..={})",
            s.count, s.first_lsn, s.last_lsn
        );
    } else if last && damage.keep > 0 {
        let _ = write!(
            reason,
            "; LSN {} was synced before the store's last checkpoint, so this is damage, not \
             a write cut short",
            damage.expected
        );
    }
    if let Some((count, first, last)) = dropped.filter(|_| damage.segment + 1 < segments.len()) {
        let _ = write!(
            reason,
            "; {count} frames (LSNs {first}..={last}) are in this and the later segments"
        );
    }
    if !discard {
        return Err(WalError::Corrupt {
            path: segment.path.clone(),
            offset: damage.offset,
            reason,
        });
    }
    plan.discarded.push(Discarded {
        what: format!(
            "{} from byte {} on, and every later segment: {reason}",
            segment.path.display(),
            damage.offset
        ),
        bytes,
        frames: dropped,
        may_hold_acknowledged: true,
    });
    Ok(())
}

/// The valid frames known to be in what a cut at `damage` drops: its survivors and every
/// later segment's frames (`(count, first LSN, last LSN)`).
fn lost_frames(segments: &[Segment], damage: &Damage) -> Result<Option<(u64, u64, u64)>, WalError> {
    let mut found: Option<(u64, u64, u64)> =
        damage.survivors.map(|s| (s.count, s.first_lsn, s.last_lsn));
    if damage.keep == 0 {
        // The whole segment goes: count what it holds past a bad header, if anything.
        found = None;
    }
    for segment in &segments[damage.segment + usize::from(damage.keep > 0)..] {
        let bytes = fs::read(&segment.path).map_err(io_err(&segment.path))?;
        let Some(body) = bytes.get(HEADER_LEN..) else {
            continue;
        };
        let first = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let mut frames = Vec::new();
        let _ = parse_frames(body, 0, first, &mut frames, |_, _, _| false);
        if let (Some(a), Some(b)) = (frames.first(), frames.last()) {
            found = Some(match found {
                Some((count, lo, hi)) => {
                    (count + frames.len() as u64, lo.min(a.lsn), hi.max(b.lsn))
                }
                None => (frames.len() as u64, a.lsn, b.lsn),
            });
        }
    }
    Ok(found)
}

/// Checks the kept log's segments against the store's mark; returns the next LSN.
fn check_against_mark(
    dir: &Path,
    segments: &[Segment],
    frames: &[Frame],
    mark: LogMark,
    discard: bool,
    plan: &mut Plan,
) -> Result<u64, WalError> {
    let after = mark.checkpointed + 1;
    let missing = |detail: String, plan: &mut Plan| {
        if !discard {
            return Err(WalError::Missing {
                dir: dir.to_owned(),
                detail,
            });
        }
        plan.discarded.push(Discarded {
            what: detail,
            bytes: 0,
            frames: None,
            may_hold_acknowledged: true,
        });
        Ok(())
    };
    let Some(first) = segments.first() else {
        // The writer's current segment is never released: a log with none lost them all —
        // unless nothing was ever checkpointed (a new data directory).
        if plan.cut.is_none() && mark.checkpointed > 0 {
            // Missing and empty read alike: the server's lock, taken before recovery, creates
            // the directory (it holds the lock file).
            missing(
                format!(
                    "the log directory is missing or holds no segment, but the store has \
                     checkpointed it through LSN {} and a log always keeps its current \
                     segment: whatever was written after that checkpoint is lost",
                    mark.checkpointed
                ),
                plan,
            )?;
        }
        return Ok(after);
    };
    if first.first > after {
        missing(
            format!(
                "the store holds the log through LSN {}, but the oldest segment, {}, starts \
                 at LSN {}: the segments holding LSNs {after}..={} are missing",
                mark.checkpointed,
                first.path.display(),
                first.first,
                first.first - 1
            ),
            plan,
        )?;
    }
    let end = end_of(segments, frames);
    if end < mark.synced && plan.cut.is_none() {
        let last = segments.last().expect("a first segment is a last one");
        missing(
            format!(
                "the log ends at LSN {end}, but it had synced LSN {} before the store's last \
                 checkpoint: LSNs {}..={} are missing (the last segment, {}, was cut short, \
                 or segments after it were removed)",
                mark.synced,
                end + 1,
                mark.synced,
                last.path.display()
            ),
            plan,
        )?;
    }
    if end < mark.checkpointed {
        // Every frame left is in the store already: start a fresh log after it. (A power
        // loss under `os` durability, where the log was not synced but the store was.)
        if mark.synced < mark.checkpointed {
            tracing::warn!(
                log_end = end,
                checkpointed = mark.checkpointed,
                "the log ends before the store's last checkpoint (unsynced log writes lost \
                 in a power loss): starting a fresh log after it"
            );
        }
        plan.clear = true;
        return Ok(after);
    }
    Ok(end + 1)
}

/// Truncates and removes segment files as planned.
fn apply(segments: &[Segment], plan: &Plan) -> Result<(), WalError> {
    let from = match (plan.clear, plan.cut) {
        (true, _) => 0,
        (false, Some((at, 0))) => at,
        (false, Some((at, keep))) => {
            truncate(&segments[at].path, keep)?;
            at + 1
        }
        (false, None) => return Ok(()),
    };
    for segment in &segments[from..] {
        fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
    }
    if let Some(segment) = segments.first() {
        let dir = segment.path.parent().unwrap_or(Path::new("."));
        super::sync_dir(dir)?;
    }
    Ok(())
}

/// Recovery against a model of what was acknowledged: random logs written by the real
/// writer, a checkpoint (the store's mark, and the segments it released) at a random point,
/// then one random kind of damage. Whatever the damage, recovery either refuses, or keeps
/// every acknowledged write the store does not hold, or (only past the synced mark, at the
/// end of the last segment, where no log can tell damage from a crash) cuts a tail; with
/// the discard flag it always starts, and reports a possible loss whenever one happened.
#[cfg(test)]
// Positions are fractions of small files, payload bytes a pattern: nothing here overflows.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]
mod model {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::super::{ReadLimit, SyncMode, Tail, Wal};
    use super::*;

    #[derive(Debug, Clone)]
    enum Harm {
        None,
        /// Flip a bit at a fraction of a segment's length.
        Flip {
            segment: usize,
            at: f64,
        },
        /// Overwrite a frame's length field (the frame nearest a fraction of the segment).
        Length {
            segment: usize,
            at: f64,
            len: u32,
        },
        /// Cut a segment to a fraction of its length.
        Truncate {
            segment: usize,
            at: f64,
        },
        /// Cut a segment below its header.
        BelowHeader {
            segment: usize,
            len: usize,
        },
        Delete {
            segment: usize,
        },
        Garbage {
            segment: usize,
        },
        DeleteDirectory,
    }

    fn harm() -> impl Strategy<Value = Harm> {
        let seg = 0usize..8;
        prop_oneof![
            Just(Harm::None),
            (seg.clone(), 0.0..1.0).prop_map(|(segment, at)| Harm::Flip { segment, at }),
            (
                seg.clone(),
                0.0..1.0,
                prop_oneof![Just(0x7FFF_FFFF), 0u32..64, any::<u32>()]
            )
                .prop_map(|(segment, at, len)| Harm::Length { segment, at, len }),
            (seg.clone(), 0.0..1.0).prop_map(|(segment, at)| Harm::Truncate { segment, at }),
            (seg.clone(), 0usize..16).prop_map(|(segment, len)| Harm::BelowHeader { segment, len }),
            seg.clone().prop_map(|segment| Harm::Delete { segment }),
            seg.prop_map(|segment| Harm::Garbage { segment }),
            Just(Harm::DeleteDirectory),
        ]
    }

    fn payload(lsn: u64, size: usize) -> Vec<u8> {
        (0..size).map(|i| (lsn as usize * 31 + i) as u8).collect()
    }

    fn config(dir: &Path, segment_bytes: u64, discard: bool) -> WalConfig {
        WalConfig {
            dir: dir.to_owned(),
            sync: SyncMode::Os,
            segment_bytes,
            max_bytes: 1 << 30,
            on_corruption: if discard {
                OnCorruption::Discard
            } else {
                OnCorruption::Refuse
            },
            commit_delay: Duration::ZERO,
        }
    }

    /// Writes `sizes.len()` frames, one append each (all acknowledged), releases what a
    /// checkpoint through `checkpointed` covers; returns the written payloads by LSN − 1.
    fn write_log(config: &WalConfig, sizes: &[usize], checkpointed: u64) -> Vec<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let wal = Wal::start(config, &recover(config, None).unwrap()).unwrap();
            let mut written = Vec::new();
            for (lsn, size) in (1..).zip(sizes) {
                let bytes = payload(lsn, *size);
                let done = wal.append(vec![bytes.clone()]).await.unwrap();
                assert_eq!(done.await.unwrap().unwrap(), lsn);
                written.push(bytes);
            }
            wal.files().release_through(checkpointed).unwrap();
            written
        })
    }

    fn damage(dir: &Path, harm: &Harm) {
        let segs = super::super::segments(dir).unwrap();
        let pick = |i: usize| &segs[i % segs.len()].1;
        let at = |path: &Path, f: f64| {
            let len = fs::metadata(path).unwrap().len() as f64;
            (len * f) as usize
        };
        match harm {
            Harm::None => {}
            Harm::Flip { segment, at: f } => {
                let path = pick(*segment);
                let mut bytes = fs::read(path).unwrap();
                let i = at(path, *f).min(bytes.len() - 1);
                bytes[i] ^= 0x10;
                fs::write(path, bytes).unwrap();
            }
            Harm::Length {
                segment,
                at: f,
                len,
            } => {
                let path = pick(*segment);
                let mut bytes = fs::read(path).unwrap();
                // Walk the frames to the one nearest the chosen offset.
                let target = at(path, *f);
                let mut pos = HEADER_LEN;
                while pos + 16 <= bytes.len() {
                    let n = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
                    if pos + 16 + n >= target || pos + 16 + n + 16 > bytes.len() {
                        break;
                    }
                    pos += 16 + n;
                }
                if pos + 4 <= bytes.len() {
                    bytes[pos..pos + 4].copy_from_slice(&len.to_le_bytes());
                    fs::write(path, bytes).unwrap();
                }
            }
            Harm::Truncate { segment, at: f } => {
                let path = pick(*segment);
                truncate(path, at(path, *f) as u64).unwrap();
            }
            Harm::BelowHeader { segment, len } => truncate(pick(*segment), *len as u64).unwrap(),
            Harm::Delete { segment } => fs::remove_file(pick(*segment)).unwrap(),
            Harm::Garbage { segment } => {
                let path = pick(*segment);
                let len = fs::metadata(path).unwrap().len() as usize;
                let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 253) as u8).collect();
                fs::write(path, garbage).unwrap();
            }
            Harm::DeleteDirectory => fs::remove_dir_all(dir).unwrap(),
        }
    }

    /// The greatest LSN whose whole frame is still somewhere in the damaged log's files.
    fn last_intact(dir: &Path, written: &[Vec<u8>]) -> u64 {
        let files: Vec<Vec<u8>> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| fs::read(e.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        (1..=written.len() as u64)
            .rev()
            .find(|lsn| {
                let mut frame = Vec::new();
                super::super::frame::encode_frame(*lsn, &written[*lsn as usize - 1], &mut frame);
                files
                    .iter()
                    .any(|f| f.windows(frame.len()).any(|w| w == frame.as_slice()))
            })
            .unwrap_or(0)
    }

    /// Whether recovery lost an acknowledged write it could have told was lost: one through
    /// the synced mark, or one with an intact frame after it (`intact`: the last such LSN).
    /// Checks that every frame kept is intact too.
    fn lost_visibly(
        recovered: &Recovered,
        written: &[Vec<u8>],
        mark: Option<LogMark>,
        intact: u64,
    ) -> bool {
        let checkpointed = mark.map_or(0, |m| m.checkpointed);
        let synced = mark.map_or(0, |m| m.synced);
        let mut kept = std::collections::BTreeSet::new();
        for frame in &recovered.frames {
            assert_eq!(
                frame.payload,
                written[frame.lsn as usize - 1],
                "kept frames are intact"
            );
            kept.insert(frame.lsn);
        }
        (checkpointed + 1..=written.len() as u64)
            .filter(|lsn| !kept.contains(lsn))
            .any(|lsn| lsn <= synced || lsn < intact)
    }

    /// The log can be written after recovery, and reads back whole.
    fn appends_continue(config: &WalConfig, recovered: &Recovered) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let last = runtime.block_on(async {
            let wal = Wal::start(config, recovered).unwrap();
            let done = wal.append(vec![b"after".to_vec()]).await.unwrap();
            done.await.unwrap().unwrap()
        });
        assert_eq!(last, recovered.next_lsn);
        let strict = WalConfig {
            on_corruption: OnCorruption::Refuse,
            ..config.clone()
        };
        let again = recover(&strict, None).expect("a recovered log reads back cleanly");
        assert_eq!(again.frames.last().map(|f| f.lsn), Some(last));
        let mut tail = Tail::new(&config.dir, last);
        let limit = ReadLimit {
            frames: 10,
            bytes: usize::MAX,
        };
        assert_eq!(tail.read(last, limit).unwrap().len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(192))]

        #[test]
        fn recovery_never_loses_an_acknowledged_write_silently(
            sizes in prop::collection::vec(0usize..120, 1..120),
            segment_bytes in 64u64..1500,
            checkpoint in 0.0f64..1.0,
            synced in 0.0f64..1.0,
            harm in harm(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let wal_dir = dir.path().join("wal");
            let strict = config(&wal_dir, segment_bytes, false);
            let n = sizes.len() as u64;
            let checkpointed = (n as f64 * checkpoint) as u64;
            let written = write_log(&strict, &sizes, checkpointed);
            // The store's mark: synced somewhere between the checkpoint and the last write
            // (`{0, 0}` when nothing was checkpointed: an empty store).
            let synced = if checkpointed == 0 {
                0
            } else {
                checkpointed + ((n - checkpointed) as f64 * synced) as u64
            };
            let mark = Some(LogMark { checkpointed, synced });
            damage(&wal_dir, &harm);
            let copy = tempfile::tempdir().unwrap();
            copy_dir(&wal_dir, copy.path());
            let intact = last_intact(copy.path(), &written);

            match recover(&strict, mark) {
                Ok(recovered) => {
                    prop_assert!(
                        !lost_visibly(&recovered, &written, mark, intact),
                        "a silent loss: {harm:?}, {:?}", recovered.discarded
                    );
                    if matches!(harm, Harm::None) {
                        prop_assert_eq!(recovered.frames.last().map(|f| f.lsn), Some(n));
                        prop_assert!(recovered.discarded.is_empty());
                    }
                    prop_assert!(recovered.discarded.iter().all(|d| !d.may_hold_acknowledged));
                    appends_continue(&strict, &recovered);
                }
                Err(e) => prop_assert!(!matches!(harm, Harm::None), "a healthy log refused: {e}"),
            }

            // The same damage, discarded on request: it always starts, and says so whenever
            // an acknowledged write may be gone.
            let discard = config(copy.path(), segment_bytes, true);
            let recovered = recover(&discard, mark).expect("discarding always starts");
            if lost_visibly(&recovered, &written, mark, intact) {
                prop_assert!(
                    recovered.discarded.iter().any(|d| d.may_hold_acknowledged),
                    "a loss reported only as {:?}", recovered.discarded
                );
            }
            appends_continue(&discard, &recovered);
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        if let Ok(entries) = fs::read_dir(from) {
            for entry in entries {
                let path = entry.unwrap().path();
                fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}
