//! The write-ahead log: the commit point of every write (DESIGN §4.2, `docs/durability.md`).
//!
//! One log for the whole server, so that one `fdatasync` covers the appends of every shard:
//! a writer thread takes every append queued while the previous sync ran and makes them
//! durable together (group commit). The log is a directory of segments; each frame holds one
//! stored entry with its log sequence number (LSN) and a CRC32C.
//!
//! Segment `wal-<first LSN, 20 digits>.seg`:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `TGWAL\0\0\x01` |
//! | 8 | 8 | LSN of the first frame, u64 LE |
//! | 16 | … | frames |
//!
//! Frame:
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | payload length `n`, u32 LE |
//! | 4 | 4 | CRC32C of bytes 8..16+n (LSN and payload), u32 LE |
//! | 8 | 8 | LSN, u64 LE; each frame's is the previous one's + 1 |
//! | 16 | n | payload: a [`crate::store::StoredEntry`] in its byte form |
//!
//! Recovery: a bad frame with nothing valid after it, in the last segment, is a torn tail
//! (a write cut short by a crash) and is truncated. Anything else — a bad frame followed by
//! more bytes, or in an older segment — is corruption: start-up stops, unless the operator
//! chose to discard everything from the bad frame on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

pub const MAGIC: [u8; 8] = *b"TGWAL\0\0\x01";
const SEGMENT_HEADER_BYTES: u64 = 16;
/// The header length as an index.
const HEADER_LEN: usize = 16;
const FRAME_HEADER_BYTES: usize = 16;
/// Appends waiting for the writer thread.
const APPEND_QUEUE_LEN: usize = 1024;
/// Most appends made durable by one sync.
const GROUP_MAX: usize = 4096;

/// When an append counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After `fdatasync`: survives power loss.
    Fsync,
    /// After the write reached the operating system: survives a crash of the server only.
    Os,
}

/// What recovery does with corruption that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    Refuse,
    /// Drop the bad frame and everything after it (the operator accepts the loss).
    Discard,
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    /// Appends are refused while the log holds more than this (not yet checkpointed).
    pub max_bytes: u64,
    pub on_corruption: OnCorruption,
}

#[derive(Debug, Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "write-ahead log segment {path} is corrupt at byte {offset}: {reason}. Restore from a \
         backup, or start with --wal-discard-corrupt to drop everything from that point on"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "the write-ahead log holds {bytes} bytes not yet in the store (limit {max_bytes}): the \
         store is not keeping up or is unreachable; retry later"
    )]
    Full { bytes: u64, max_bytes: u64 },
    #[error("the write-ahead log is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub lsn: u64,
    pub payload: Vec<u8>,
}

fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.seg")
}

/// The segments of `dir`, oldest first: `(first LSN, path)`.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("wal-")?.strip_suffix(".seg")?.parse().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// How parsing a segment's bytes ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    Clean,
    /// A frame at `offset` is cut short or fails its checksum and nothing follows it.
    Torn {
        offset: u64,
    },
    /// A frame at `offset` is bad and more bytes follow.
    Corrupt {
        offset: u64,
        reason: String,
    },
}

/// Parses frames from `bytes` (which start at file offset `base`), expecting `next_lsn`.
fn parse_frames(bytes: &[u8], base: u64, mut next_lsn: u64, out: &mut Vec<Frame>) -> Ending {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let offset = base + pos as u64;
        let rest = &bytes[pos..];
        let Some(header) = rest.get(..FRAME_HEADER_BYTES) else {
            return Ending::Torn { offset };
        };
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let Some(body) = rest.get(8..FRAME_HEADER_BYTES + len) else {
            return Ending::Torn { offset };
        };
        let end = pos + FRAME_HEADER_BYTES + len;
        let bad = |reason: String| {
            if end == bytes.len() {
                Ending::Torn { offset }
            } else {
                Ending::Corrupt { offset, reason }
            }
        };
        if crc32c::crc32c(body) != crc {
            return bad("checksum mismatch".into());
        }
        let lsn = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
        if lsn != next_lsn {
            return bad(format!("LSN {lsn} where {next_lsn} was expected"));
        }
        out.push(Frame {
            lsn,
            payload: body[8..].to_vec(),
        });
        next_lsn += 1;
        pos = end;
    }
    Ending::Clean
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// Every frame still in the log, in LSN order.
    pub frames: Vec<Frame>,
    /// The LSN the next append gets.
    pub next_lsn: u64,
    /// Bytes cut off a torn tail or discarded on request.
    pub discarded_bytes: u64,
}

/// Reads the log in `config.dir` (created if missing), repairing a torn tail.
pub fn recover(config: &WalConfig) -> Result<Recovered, WalError> {
    fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
    let segs = segments(&config.dir)?;
    let mut frames = Vec::new();
    let mut discarded_bytes = 0;
    let mut next_lsn = segs.first().map_or(1, |(first, _)| *first);
    for (at, (first, path)) in segs.iter().enumerate() {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let corrupt = |offset: u64, reason: String| WalError::Corrupt {
            path: path.clone(),
            offset,
            reason,
        };
        if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
            return Err(corrupt(0, "not a write-ahead log segment".into()));
        }
        let header_lsn = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        if header_lsn != *first || *first != next_lsn {
            return Err(corrupt(
                8,
                format!("starts at LSN {header_lsn}, expected {next_lsn}"),
            ));
        }
        let last = at + 1 == segs.len();
        let ending = parse_frames(
            &bytes[HEADER_LEN..],
            SEGMENT_HEADER_BYTES,
            next_lsn,
            &mut frames,
        );
        next_lsn = frames.last().map_or(next_lsn, |f| f.lsn + 1);
        let cut = match ending {
            Ending::Clean => continue,
            Ending::Torn { offset } if last => offset,
            Ending::Torn { offset } | Ending::Corrupt { offset, .. }
                if config.on_corruption == OnCorruption::Discard =>
            {
                offset
            }
            Ending::Torn { offset } => {
                return Err(corrupt(
                    offset,
                    "cut short, but newer segments follow".into(),
                ));
            }
            Ending::Corrupt { offset, reason } => return Err(corrupt(offset, reason)),
        };
        discarded_bytes += bytes.len() as u64 - cut;
        truncate(path, cut)?;
        for (_, later) in &segs[at + 1..] {
            discarded_bytes += fs::metadata(later).map_err(io_err(later))?.len();
            fs::remove_file(later).map_err(io_err(later))?;
        }
        break;
    }
    Ok(Recovered {
        frames,
        next_lsn,
        discarded_bytes,
    })
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    file.set_len(len).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// An append waiting for the writer thread.
struct Append {
    payloads: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<u64, Arc<WalError>>>,
}

/// The handle shards append through.
#[derive(Debug, Clone)]
pub struct Wal {
    appends: mpsc::Sender<Append>,
    /// Bytes in all segments; the checkpointer subtracts what it deletes.
    bytes: Arc<AtomicU64>,
    max_bytes: u64,
    /// The highest LSN written (and synced, in `Fsync` mode).
    durable: watch::Receiver<u64>,
    dir: PathBuf,
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Append({} frames)", self.payloads.len())
    }
}

impl Wal {
    /// Starts the writer thread after [`recover`]; new frames go to a fresh segment.
    pub fn start(config: &WalConfig, recovered: &Recovered) -> Result<Self, WalError> {
        let mut bytes = 0;
        for (_, path) in segments(&config.dir)? {
            bytes += fs::metadata(&path).map_err(io_err(&path))?.len();
        }
        let bytes = Arc::new(AtomicU64::new(bytes));
        let (durable_tx, durable) = watch::channel(recovered.next_lsn - 1);
        let writer = Writer::open(config, recovered.next_lsn, Arc::clone(&bytes), durable_tx)?;
        let (appends, queue) = mpsc::channel(APPEND_QUEUE_LEN);
        std::thread::Builder::new()
            .name("topgun-wal".into())
            .spawn(move || writer.run(queue))
            .map_err(io_err(&config.dir))?;
        Ok(Self {
            appends,
            bytes,
            max_bytes: config.max_bytes,
            durable,
            dir: config.dir.clone(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses when the log is over its bound (the store is behind).
    pub fn check_room(&self) -> Result<(), WalError> {
        let bytes = self.bytes.load(Ordering::Relaxed);
        if bytes > self.max_bytes {
            return Err(WalError::Full {
                bytes,
                max_bytes: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Queues payloads; the receiver resolves with the last LSN once they are written (and
    /// synced, in `Fsync` mode).
    pub async fn append(
        &self,
        payloads: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<u64, Arc<WalError>>>, WalError> {
        let (done, written) = oneshot::channel();
        self.appends
            .send(Append { payloads, done })
            .await
            .map_err(|_| WalError::Closed)?;
        Ok(written)
    }

    /// Watches the highest durable LSN.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Deletes closed segments whose every frame is at or below `lsn` (already in the store).
    pub fn release_through(&self, lsn: u64) -> Result<(), WalError> {
        let segs = segments(&self.dir)?;
        for pair in segs.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if next_first - 1 > lsn {
                break;
            }
            let len = fs::metadata(path).map_err(io_err(path))?.len();
            fs::remove_file(path).map_err(io_err(path))?;
            self.bytes.fetch_sub(len, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    segment_len: u64,
    next_lsn: u64,
    bytes: Arc<AtomicU64>,
    durable: watch::Sender<u64>,
    /// After a failed write the segment's end is unknown: every later append fails too,
    /// and a restart recovers (truncating the partial frame as a torn tail).
    failed: Option<Arc<WalError>>,
}

impl Writer {
    fn open(
        config: &WalConfig,
        next_lsn: u64,
        bytes: Arc<AtomicU64>,
        durable: watch::Sender<u64>,
    ) -> Result<Self, WalError> {
        let (file, path) = create_segment(&config.dir, next_lsn)?;
        bytes.fetch_add(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        Ok(Self {
            dir: config.dir.clone(),
            sync: config.sync,
            segment_bytes: config.segment_bytes,
            file,
            path,
            segment_len: SEGMENT_HEADER_BYTES,
            next_lsn,
            bytes,
            durable,
            failed: None,
        })
    }

    /// Takes every append queued while the last group was written: one write, one sync.
    fn run(mut self, mut queue: mpsc::Receiver<Append>) {
        while let Some(first) = queue.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match queue.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            let result = match &self.failed {
                Some(e) => Err(Arc::clone(e)),
                None => self.write_group(&group).map_err(Arc::new),
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "write-ahead log append failed; refusing writes");
                self.failed = Some(Arc::clone(e));
            }
            let mut last = self.next_lsn - 1;
            for append in group.into_iter().rev() {
                let _ = append.done.send(result.clone().map(|()| last));
                last -= append.payloads.len() as u64;
            }
        }
    }

    fn write_group(&mut self, group: &[Append]) -> Result<(), WalError> {
        if self.segment_len >= self.segment_bytes {
            self.roll()?;
        }
        let mut buf = Vec::new();
        let mut lsn = self.next_lsn;
        for payload in group.iter().flat_map(|a| &a.payloads) {
            let len = u32::try_from(payload.len()).expect("entries are far below 4 GiB");
            let lsn_bytes = lsn.to_le_bytes();
            let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.extend_from_slice(&lsn_bytes);
            buf.extend_from_slice(payload);
            lsn += 1;
        }
        self.file.write_all(&buf).map_err(io_err(&self.path))?;
        if self.sync == SyncMode::Fsync {
            self.file.sync_data().map_err(io_err(&self.path))?;
        }
        self.segment_len += buf.len() as u64;
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.next_lsn = lsn;
        self.durable.send_replace(lsn - 1);
        Ok(())
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.file.sync_all().map_err(io_err(&self.path))?;
        let (file, path) = create_segment(&self.dir, self.next_lsn)?;
        self.file = file;
        self.path = path;
        self.segment_len = SEGMENT_HEADER_BYTES;
        self.bytes
            .fetch_add(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        Ok(())
    }
}

/// Creates (or, if empty after a crash, recreates) the segment starting at `first_lsn`.
fn create_segment(dir: &Path, first_lsn: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_name(first_lsn));
    if let Ok(meta) = fs::metadata(&path) {
        // Recovery ended in this segment and it holds no frame: start it again.
        if meta.len() <= SEGMENT_HEADER_BYTES {
            fs::remove_file(&path).map_err(io_err(&path))?;
        } else {
            return reopen_segment(&path);
        }
    }
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&first_lsn.to_le_bytes());
    file.write_all(&header).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

/// Continuing a segment that already holds frames would break the name ↔ first-LSN rule
/// only if the LSNs did not continue; recovery guarantees they do, so appends resume at
/// its end.
fn reopen_segment(path: &Path) -> Result<(File, PathBuf), WalError> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    Ok((file, path.to_owned()))
}

/// Reads frames after a given LSN as the writer adds them: the checkpointer's view.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    /// The segment being read and the offset of its next unread frame.
    segment: Option<(u64, u64)>,
    next_lsn: u64,
}

impl Tail {
    /// Starts reading at `next_lsn`.
    pub fn new(dir: &Path, next_lsn: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            segment: None,
            next_lsn,
        }
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Up to `max` frames with LSNs from `next_lsn` through `durable`.
    pub fn read(&mut self, durable: u64, max: usize) -> Result<Vec<Frame>, WalError> {
        let mut out = Vec::new();
        while self.next_lsn <= durable && out.len() < max {
            let segs = segments(&self.dir)?;
            let Some(at) = segs.iter().rposition(|(first, _)| *first <= self.next_lsn) else {
                break;
            };
            let (first, path) = &segs[at];
            let offset = match self.segment {
                Some((current, offset)) if current == *first => offset,
                _ => self.seek(path, *first)?,
            };
            let mut file = File::open(path).map_err(io_err(path))?;
            file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).map_err(io_err(path))?;
            let before = out.len();
            let mut frames = Vec::new();
            // A frame being written shows as a torn tail: read again later.
            let _ = parse_frames(&bytes, offset, self.next_lsn, &mut frames);
            let mut consumed = offset;
            for frame in frames {
                if frame.lsn > durable || out.len() >= max {
                    break;
                }
                consumed += (FRAME_HEADER_BYTES + frame.payload.len()) as u64;
                self.next_lsn = frame.lsn + 1;
                out.push(frame);
            }
            self.segment = Some((*first, consumed));
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// The offset of frame `next_lsn` in a segment starting at `first`.
    fn seek(&self, path: &Path, first: u64) -> Result<u64, WalError> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let mut frames = Vec::new();
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        let _ = parse_frames(body, SEGMENT_HEADER_BYTES, first, &mut frames);
        let skipped = frames.iter().take_while(|f| f.lsn < self.next_lsn);
        Ok(SEGMENT_HEADER_BYTES
            + skipped
                .map(|f| (FRAME_HEADER_BYTES + f.payload.len()) as u64)
                .sum::<u64>())
    }
}
