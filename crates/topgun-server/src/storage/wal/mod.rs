//! The write-ahead log: the commit point of every write (DESIGN §4.2, `docs/durability.md`).
//!
//! One log for the whole server, so that one `fdatasync` covers the appends of every shard:
//! a writer thread takes every append queued while the previous sync ran and makes them
//! durable together (group commit). Where acknowledgements do not wait for the disk, the
//! writer either never syncs (`Os`) or syncs on a timer (`Interval`): at most that interval
//! after the first write not yet synced, however the appends come. The log is a directory
//! of segments; each frame holds one stored entry with its log sequence number (LSN) and a
//! CRC32C.
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
//! | 16 | n | payload: a [`crate::storage::store::StoredEntry`] in its byte form |
//!
//! Recovery ([`recovery`]): a bad frame with nothing valid after it, at the end of the last
//! segment and past what the store knows was synced, is a torn tail (a write cut short by a
//! crash) and is truncated. Anything else is damage: start-up stops, unless the operator
//! chose to discard it, and then says exactly what was dropped.

mod frame;
mod recovery;

pub use frame::Frame;
pub use recovery::{Discarded, LogMark, Recovered, recover};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::histogram::Histogram;

pub const MAGIC: [u8; 8] = *b"TGWAL\0\0\x01";
const SEGMENT_HEADER_BYTES: u64 = 16;
/// The header length as an index.
const HEADER_LEN: usize = 16;
use frame::{FRAME_HEADER_BYTES, encode_frame, parse_frames};
/// Appends waiting for the writer thread.
const APPEND_QUEUE_LEN: usize = 1024;
/// Most appends made durable by one sync.
const GROUP_MAX: usize = 4096;
/// A group of at least this many appends means the log is busy: the writer then waits
/// [`WalConfig::commit_delay`] before taking the next group.
pub const BUSY_GROUP: usize = 4;

/// When an append counts as written, and when the log is synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After `fdatasync`: survives power loss.
    Fsync,
    /// After the write reached the operating system: survives a crash of the server only.
    Os,
    /// Written as in `Os`, and synced on a timer: an `fdatasync` at most this long after
    /// the first write it covers. A power loss takes back at most that window of
    /// acknowledged writes, while acknowledgements never wait for a disk (the TopGun
    /// server's `batched` fsync policy).
    Interval(Duration),
}

impl SyncMode {
    /// Whether an append counts as written only once synced (the durable mark means on disk).
    pub fn acks_after_sync(self) -> bool {
        self == Self::Fsync
    }
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
    /// In [`SyncMode::Fsync`], how long the writer waits after a busy group (at least
    /// [`BUSY_GROUP`] appends) before taking the next, so that more appends share its sync.
    /// Each `fdatasync` costs the server's CPU as well as the disk's time (about 0.1 ms of
    /// CPU each on the benchmark machine), and under load the syncs, not the bytes, are
    /// most of the log's cost. A lone writer's appends come in groups of one and never
    /// wait, nor does an append after a quiet spell (the delay runs from the previous
    /// group's completion), nor one the log will refuse anyway. Zero turns it off.
    pub commit_delay: Duration,
}

#[derive(Debug, Error)]
pub enum WalError {
    // `error` is not this error's source: the message holds it already, and a chain that
    // printed it again would say it twice.
    #[error("write-ahead log {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
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
        "write-ahead log {dir}: {detail}. Restore the data directory from a backup, or start \
         with --wal-discard-corrupt to accept the loss"
    )]
    Missing { dir: PathBuf, detail: String },
    #[error(
        "the write-ahead log holds {bytes} bytes not yet in the store (limit {max_bytes}): the \
         store is not keeping up or is unreachable; retry later"
    )]
    Full { bytes: u64, max_bytes: u64 },
    #[error("the write-ahead log is closed")]
    Closed,
    #[error(
        "an earlier write-ahead log write failed; writes are refused until a restart recovers the log"
    )]
    Failed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |error| WalError::Io {
        path: path.to_owned(),
        error,
    }
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

/// Runs on the writer thread with an append's first LSN once the append is durable, before
/// its writer is told; hooks run in LSN order. It may wait (for a bounded queue, say),
/// which holds back every later append: back-pressure, never loss.
pub type OnDurable = Box<dyn FnOnce(u64) + Send>;

/// An append waiting for the writer thread.
struct Append {
    payloads: Vec<Vec<u8>>,
    done: oneshot::Sender<Result<u64, Arc<WalError>>>,
    on_durable: Option<OnDurable>,
}

/// What `/metrics` reports of the log: its size, its syncs, and the checkpoints that drain
/// it into the store.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Bytes in all segments: what `wal_max_bytes` bounds.
    pub bytes: AtomicU64,
    /// Each `fdatasync` of a group commit, or of the timer in `Interval` mode, recorded by
    /// the writer thread (none in `Os` mode).
    pub syncs: Histogram,
    /// The timer's syncs in `Interval` mode (counted in `syncs` as well).
    pub timed_syncs: AtomicU64,
    /// Each checkpoint batch's store write, from its first attempt to the store taking it.
    pub store_writes: Histogram,
    /// Entries the checkpointer has written to the store (journal rows included).
    pub stored_entries: AtomicU64,
}

/// The handle shards append through.
#[derive(Debug, Clone)]
pub struct Wal {
    appends: mpsc::Sender<Append>,
    /// Its size, syncs and checkpoints; the checkpointer subtracts what it deletes.
    stats: Arc<LogStats>,
    max_bytes: u64,
    /// The highest LSN written (and synced, in `Fsync` mode).
    durable: watch::Receiver<u64>,
    dir: PathBuf,
    /// Set by the writer thread once a write failed.
    failed: Arc<AtomicBool>,
    /// [`SyncMode::acks_after_sync`].
    synced: bool,
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
        let stats = Arc::new(LogStats {
            bytes: AtomicU64::new(bytes),
            ..LogStats::default()
        });
        let (durable_tx, durable) = watch::channel(recovered.next_lsn - 1);
        let failed = Arc::new(AtomicBool::new(false));
        let mut writer = Writer::open(config, recovered.next_lsn, Arc::clone(&stats), durable_tx)?;
        writer.failed_flag = Arc::clone(&failed);
        let (appends, queue) = mpsc::channel(APPEND_QUEUE_LEN);
        std::thread::Builder::new()
            .name("topgun-wal".into())
            .spawn(move || writer.run(queue))
            .map_err(io_err(&config.dir))?;
        Ok(Self {
            appends,
            stats,
            max_bytes: config.max_bytes,
            durable,
            dir: config.dir.clone(),
            failed,
            synced: config.sync.acks_after_sync(),
        })
    }

    /// The log's size, syncs and checkpoints so far, for `/metrics`.
    pub fn stats(&self) -> Arc<LogStats> {
        Arc::clone(&self.stats)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses when the log is over its bound (the store is behind).
    pub fn check_room(&self) -> Result<(), WalError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(WalError::Failed);
        }
        let bytes = self.stats.bytes.load(Ordering::Relaxed);
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
        self.append_with(payloads, None).await
    }

    /// Like [`Wal::append`], running `on_durable` once the payloads are durable.
    pub async fn append_with(
        &self,
        payloads: Vec<Vec<u8>>,
        on_durable: Option<OnDurable>,
    ) -> Result<oneshot::Receiver<Result<u64, Arc<WalError>>>, WalError> {
        let (done, written) = oneshot::channel();
        let append = Append {
            payloads,
            done,
            on_durable,
        };
        self.appends
            .send(append)
            .await
            .map_err(|_| WalError::Closed)?;
        Ok(written)
    }

    /// Watches the highest durable LSN.
    /// The checkpointer's handle on the log's files.
    pub fn files(&self) -> LogFiles {
        LogFiles {
            dir: self.dir.clone(),
            stats: Arc::clone(&self.stats),
            durable: self.durable.clone(),
            synced: self.synced,
        }
    }
}

/// What the checkpointer needs of the log: its durable mark, and deleting segments. Unlike a
/// [`Wal`] it does not keep the writer alive: once the last `Wal` is dropped, the writer
/// thread ends, the durable mark's channel closes, and the checkpointer stops with it.
#[derive(Debug, Clone)]
pub struct LogFiles {
    dir: PathBuf,
    stats: Arc<LogStats>,
    durable: watch::Receiver<u64>,
    synced: bool,
}

impl LogFiles {
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Whether the durable mark means synced to disk ([`SyncMode::Fsync`]), not only written.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Where the checkpointer records its store writes.
    pub fn stats(&self) -> &LogStats {
        &self.stats
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
            self.stats.bytes.fetch_sub(len, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    sync: SyncMode,
    commit_delay: Duration,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    segment_len: u64,
    next_lsn: u64,
    stats: Arc<LogStats>,
    durable: watch::Sender<u64>,
    /// After a failed write the segment's end is unknown: every later append fails too,
    /// and a restart recovers (truncating the partial frame as a torn tail).
    failed: Option<Arc<WalError>>,
    failed_flag: Arc<AtomicBool>,
    /// In [`SyncMode::Interval`]: when the oldest write not yet synced was made.
    unsynced_since: Option<Instant>,
    /// In [`SyncMode::Interval`]: a runtime of the writer thread's own, whose only use is to
    /// wait for the next append no longer than the sync timer allows (the queue offers no
    /// blocking receive with a timeout).
    timer: Option<tokio::runtime::Runtime>,
}

impl Writer {
    fn open(
        config: &WalConfig,
        next_lsn: u64,
        stats: Arc<LogStats>,
        durable: watch::Sender<u64>,
    ) -> Result<Self, WalError> {
        let (file, path) = create_segment(&config.dir, next_lsn)?;
        let timer = match config.sync {
            SyncMode::Interval(_) => Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(io_err(&config.dir))?,
            ),
            SyncMode::Fsync | SyncMode::Os => None,
        };
        stats
            .bytes
            .fetch_add(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        Ok(Self {
            dir: config.dir.clone(),
            sync: config.sync,
            commit_delay: config.commit_delay,
            segment_bytes: config.segment_bytes,
            file,
            path,
            segment_len: SEGMENT_HEADER_BYTES,
            next_lsn,
            stats,
            durable,
            failed: None,
            failed_flag: Arc::default(),
            unsynced_since: None,
            timer,
        })
    }

    /// Takes every append queued while the last group was written: one write, one sync.
    fn run(mut self, mut queue: mpsc::Receiver<Append>) {
        // The previous group's size, and when it was completed.
        let mut previous = (0, Instant::now());
        while let Some(first) = self.receive(&mut queue) {
            let (len, done) = previous;
            let pause = pause_after(len, done.elapsed(), self.sync, self.commit_delay);
            if let (Some(pause), None) = (pause, &self.failed) {
                std::thread::sleep(pause);
            }
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match queue.try_recv() {
                    Ok(more) => group.push(more),
                    Err(_) => break,
                }
            }
            let group_len = group.len();
            let first = self.next_lsn;
            let result = match &self.failed {
                Some(e) => Err(Arc::clone(e)),
                None => self.write_group(&group).map_err(Arc::new),
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "write-ahead log append failed; refusing writes");
                self.failed = Some(Arc::clone(e));
                self.failed_flag.store(true, Ordering::Relaxed);
            } else {
                let mut lsn = first;
                for append in &mut group {
                    if let Some(hook) = append.on_durable.take() {
                        hook(lsn);
                    }
                    lsn += append.payloads.len() as u64;
                }
            }
            let mut last = self.next_lsn - 1;
            for append in group.into_iter().rev() {
                let _ = append.done.send(result.clone().map(|()| last));
                last -= append.payloads.len() as u64;
            }
            previous = (group_len, Instant::now());
            // Under a steady stream of appends the wait in `receive` may never time out:
            // the timer is checked after each group as well.
            if sync_due(self.sync, self.unsynced_since, Instant::now()) == Some(Duration::ZERO) {
                self.timed_sync();
            }
        }
        // Closing: what was written is synced too.
        if self.unsynced_since.is_some() {
            self.timed_sync();
        }
    }

    /// The next append, or `None` once every sender is gone. In [`SyncMode::Interval`], while
    /// written data waits for its sync, waits only until the sync is due, syncs, and goes
    /// on waiting.
    fn receive(&mut self, queue: &mut mpsc::Receiver<Append>) -> Option<Append> {
        loop {
            let due = sync_due(self.sync, self.unsynced_since, Instant::now());
            let (Some(left), Some(timer)) = (due, &self.timer) else {
                return queue.blocking_recv();
            };
            if !left.is_zero() {
                // The timeout is made inside the runtime: its timer belongs to it.
                let next = timer.block_on(async { tokio::time::timeout(left, queue.recv()).await });
                if let Ok(next) = next {
                    return next;
                }
            }
            self.timed_sync();
        }
    }

    /// The timer's `fdatasync` in [`SyncMode::Interval`]. Acknowledgements never waited for
    /// it; a failure refuses every later append, as a failed write does, since what was
    /// written may not reach the disk.
    fn timed_sync(&mut self) {
        self.unsynced_since = None;
        if self.failed.is_some() {
            return;
        }
        let started = Instant::now();
        match self.file.sync_data() {
            Ok(()) => {
                self.stats.syncs.record(started.elapsed());
                self.stats.timed_syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let e = Arc::new(io_err(&self.path)(error));
                tracing::error!(error = %e, "write-ahead log sync failed; refusing writes");
                self.failed = Some(e);
                self.failed_flag.store(true, Ordering::Relaxed);
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
            encode_frame(lsn, payload, &mut buf);
            lsn += 1;
        }
        self.file.write_all(&buf).map_err(io_err(&self.path))?;
        match self.sync {
            SyncMode::Fsync => {
                let started = Instant::now();
                self.file.sync_data().map_err(io_err(&self.path))?;
                self.stats.syncs.record(started.elapsed());
            }
            SyncMode::Interval(_) => {
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
            SyncMode::Os => {}
        }
        self.segment_len += buf.len() as u64;
        self.stats
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.next_lsn = lsn;
        self.durable.send_replace(lsn - 1);
        Ok(())
    }

    fn roll(&mut self) -> Result<(), WalError> {
        self.file.sync_all().map_err(io_err(&self.path))?;
        // The closed segment is on disk; the timer has nothing left to sync in it.
        self.unsynced_since = None;
        let (file, path) = create_segment(&self.dir, self.next_lsn)?;
        self.file = file;
        self.path = path;
        self.segment_len = SEGMENT_HEADER_BYTES;
        self.stats
            .bytes
            .fetch_add(SEGMENT_HEADER_BYTES, Ordering::Relaxed);
        Ok(())
    }
}

/// How long to let appends gather after a group of `last_group` appends completed `since`
/// ago: what is left of the commit delay after a busy group in `fsync` mode, else nothing.
/// An append that comes after a quiet spell finds the delay already spent.
fn pause_after(
    last_group: usize,
    since: Duration,
    sync: SyncMode,
    commit_delay: Duration,
) -> Option<Duration> {
    let busy = last_group >= BUSY_GROUP && sync == SyncMode::Fsync;
    let left = commit_delay.saturating_sub(since);
    (busy && !left.is_zero()).then_some(left)
}

/// In [`SyncMode::Interval`] with written data not yet synced since `unsynced_since`: how
/// long until its sync is due (zero: now). `None`: nothing waits for the timer.
fn sync_due(sync: SyncMode, unsynced_since: Option<Instant>, now: Instant) -> Option<Duration> {
    let SyncMode::Interval(interval) = sync else {
        return None;
    };
    let waited = now.saturating_duration_since(unsynced_since?);
    Some(interval.saturating_sub(waited))
}

/// Creates the segment starting at `first_lsn`, or continues it if recovery left it with
/// its header only.
///
/// A new segment is written whole under a temporary name (`.seg.tmp`), synced, and only then
/// renamed into place, so a segment file is never seen without its header: recovery takes a
/// segment cut below its header for damage, and removes temporary files as never used.
fn create_segment(dir: &Path, first_lsn: u64) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_name(first_lsn));
    if path.exists() {
        // Recovery ended in this segment, so its LSNs continue where it ends.
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        return Ok((file, path));
    }
    let temporary = path.with_extension("seg.tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&temporary)
        .map_err(io_err(&temporary))?;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&first_lsn.to_le_bytes());
    file.write_all(&header).map_err(io_err(&temporary))?;
    file.sync_all().map_err(io_err(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    drop(file);
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    Ok((file, path))
}

/// How much one [`Tail::read`] returns at most.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimit {
    pub frames: usize,
    /// Payload bytes.
    pub bytes: usize,
}

/// Reads frames after a given LSN as the writer adds them: the checkpointer's view.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    /// The segment being read: its first LSN, the open file, and the offset of its next
    /// unread frame.
    segment: Option<(u64, File, u64)>,
    next_lsn: u64,
    /// Reused by every read. Reading into fresh memory each time made the kernel fault in
    /// and zero new pages for every checkpoint: a tenth of the server's CPU under load.
    buf: Vec<u8>,
}

/// Bytes a read takes from a segment at a time (more when one frame is larger).
const READ_BYTES: usize = 1 << 20;

impl Tail {
    /// Starts reading at `next_lsn`.
    pub fn new(dir: &Path, next_lsn: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            segment: None,
            next_lsn,
            buf: Vec::new(),
        }
    }

    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Reads from `lsn` again (at most back to where a read took frames from).
    pub fn rewind(&mut self, lsn: u64) {
        if lsn < self.next_lsn {
            self.next_lsn = lsn;
            self.segment = None;
        }
    }

    /// Frames with LSNs from `next_lsn` through `durable`, as many as `limit` allows (and
    /// always one, if one is there, however large it is).
    ///
    /// A read that fails after it has found frames returns those frames: the tail has
    /// already moved past them, and dropping them would let the checkpointer skip them —
    /// and later release the segment that holds them. The error comes back on the next read.
    pub fn read(&mut self, durable: u64, limit: ReadLimit) -> Result<Vec<Frame>, WalError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while self.next_lsn <= durable && out.len() < limit.frames && bytes < limit.bytes {
            let before = out.len();
            let left = ReadLimit {
                frames: limit.frames,
                bytes: limit.bytes - bytes,
            };
            let more = self.read_some(durable, left, &mut out);
            bytes += out[before..].iter().map(|f| f.payload.len()).sum::<usize>();
            match more {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One read from the segment holding `next_lsn` into `out`; `false` once nothing more
    /// is there yet.
    fn read_some(
        &mut self,
        durable: u64,
        limit: ReadLimit,
        out: &mut Vec<Frame>,
    ) -> Result<bool, WalError> {
        let segs = segments(&self.dir)?;
        let Some(at) = segs.iter().rposition(|(first, _)| *first <= self.next_lsn) else {
            return Ok(false);
        };
        let (first, path) = &segs[at];
        let (file, offset) = match self.segment.take() {
            Some((current, file, offset)) if current == *first => (file, offset),
            _ => (
                File::open(path).map_err(io_err(path))?,
                self.seek(path, *first)?,
            ),
        };
        let filled = self.fill(&file, offset);
        // Keep the open file whatever happened: the position has not moved yet.
        self.segment = Some((*first, file, offset));
        let len = filled.map_err(io_err(path))?;
        let before = out.len();
        // Only frames up to `durable` are parsed, and those were written whole before it was
        // published: if the first of them cannot be read, that is damage, not a frame still
        // being written. (A frame cut off later in the buffer is the end of this read.)
        let ending = parse_frames(
            &self.buf[..len],
            offset,
            self.next_lsn,
            out,
            |lsn, n, taken| lsn > durable || n >= limit.frames || taken >= limit.bytes,
        );
        if out.len() == before && self.next_lsn <= durable {
            let (at, reason) = match ending.broken() {
                Some((at, reason)) => (at, reason.to_owned()),
                None => (
                    offset + len as u64,
                    format!("the segment ends, but LSN {} is durable", self.next_lsn),
                ),
            };
            return Err(WalError::Corrupt {
                path: path.clone(),
                offset: at,
                reason,
            });
        }
        let consumed: u64 = out[before..].iter().map(Frame::span).sum();
        self.next_lsn = out.last().map_or(self.next_lsn, |f| f.lsn + 1);
        if let Some((_, _, at)) = self.segment.as_mut() {
            *at = offset + consumed;
        }
        if self.buf.len() > 4 * READ_BYTES {
            // One large frame grew the buffer; do not keep that much for good.
            self.buf = Vec::new();
        }
        Ok(out.len() > before)
    }

    /// Reads the segment from `offset` into the buffer: [`READ_BYTES`], or the whole first
    /// frame if it is larger (but never past the file's end, whatever a damaged length
    /// says). Returns how many bytes were read.
    fn fill(&mut self, file: &File, offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let available =
            usize::try_from(file.metadata()?.len().saturating_sub(offset)).unwrap_or(usize::MAX);
        let mut want = READ_BYTES.min(available);
        loop {
            // Growing zero-fills only the new part; a reused buffer costs nothing here.
            self.buf.resize(want, 0);
            let mut len = 0;
            while len < want {
                match file.read_at(&mut self.buf[len..want], offset + len as u64) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let first_frame = self.buf.get(..4).filter(|_| len >= 4).map(|h| {
                FRAME_HEADER_BYTES + u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
            });
            match first_frame {
                Some(needed) if len == want && needed > want && needed <= available => {
                    want = needed;
                }
                _ => return Ok(len),
            }
        }
    }

    /// The offset of frame `next_lsn` in a segment starting at `first`.
    fn seek(&self, path: &Path, first: u64) -> Result<u64, WalError> {
        if self.next_lsn == first {
            return Ok(SEGMENT_HEADER_BYTES);
        }
        let bytes = fs::read(path).map_err(io_err(path))?;
        let mut frames = Vec::new();
        let body = bytes.get(HEADER_LEN..).unwrap_or_default();
        let next = self.next_lsn;
        let _ = parse_frames(
            body,
            SEGMENT_HEADER_BYTES,
            first,
            &mut frames,
            |lsn, _, _| lsn >= next,
        );
        Ok(SEGMENT_HEADER_BYTES + frames.iter().map(Frame::span).sum::<u64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> WalConfig {
        WalConfig {
            dir: dir.to_owned(),
            sync: SyncMode::Fsync,
            segment_bytes: 256,
            max_bytes: 1 << 20,
            on_corruption: OnCorruption::Refuse,
            commit_delay: Duration::from_micros(500),
        }
    }

    fn frames(frames: usize) -> ReadLimit {
        ReadLimit {
            frames,
            bytes: usize::MAX,
        }
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("entry number {i}").into_bytes()
    }

    /// Appends one entry and waits until it is synced; returns its LSN.
    async fn append(wal: &Wal, i: u64) -> u64 {
        let written = wal.append(vec![payload(i)]).await.unwrap();
        written.await.unwrap().unwrap()
    }

    /// Appends `count` single-frame entries through a fresh writer; returns the last LSN.
    async fn write(config: &WalConfig, count: u64) -> u64 {
        let recovered = recover(config, None).unwrap();
        let wal = Wal::start(config, &recovered).unwrap();
        let first = recovered.next_lsn;
        let mut last = 0;
        for i in first..first + count {
            last = append(&wal, i).await;
        }
        last
    }

    fn payloads(frames: &[Frame]) -> Vec<Vec<u8>> {
        frames.iter().map(|f| f.payload.clone()).collect()
    }

    fn last_segment(dir: &Path) -> PathBuf {
        segments(dir).unwrap().pop().unwrap().1
    }

    #[test]
    fn only_a_busy_synced_log_waits_before_its_next_group() {
        let (delay, now) = (Duration::from_micros(500), Duration::ZERO);
        let fsync = SyncMode::Fsync;
        assert_eq!(pause_after(BUSY_GROUP, now, fsync, delay), Some(delay));
        let later = Duration::from_micros(200);
        assert_eq!(
            pause_after(BUSY_GROUP, later, fsync, delay),
            Some(Duration::from_micros(300)),
            "only what is left of the delay"
        );
        let quiet = Duration::from_secs(1);
        assert_eq!(
            pause_after(BUSY_GROUP, quiet, fsync, delay),
            None,
            "after a quiet spell"
        );
        assert_eq!(pause_after(BUSY_GROUP - 1, now, fsync, delay), None);
        assert_eq!(pause_after(1, now, fsync, delay), None, "a lone writer");
        let os = SyncMode::Os;
        assert_eq!(
            pause_after(BUSY_GROUP, now, os, delay),
            None,
            "no sync to share"
        );
        assert_eq!(pause_after(BUSY_GROUP, now, fsync, Duration::ZERO), None);
    }

    #[test]
    fn the_timer_syncs_at_most_its_interval_after_the_first_unsynced_write() {
        let interval = Duration::from_millis(10);
        let timed = SyncMode::Interval(interval);
        let now = Instant::now();
        let ago = |ms| now.checked_sub(Duration::from_millis(ms)).unwrap();
        assert_eq!(sync_due(timed, None, now), None, "nothing written");
        assert_eq!(sync_due(timed, Some(now), now), Some(interval));
        assert_eq!(
            sync_due(timed, Some(ago(4)), now),
            Some(Duration::from_millis(6)),
            "counted from the oldest unsynced write"
        );
        assert_eq!(sync_due(timed, Some(ago(10)), now), Some(Duration::ZERO));
        assert_eq!(sync_due(timed, Some(ago(500)), now), Some(Duration::ZERO));
        for untimed in [SyncMode::Fsync, SyncMode::Os] {
            assert_eq!(sync_due(untimed, Some(ago(500)), now), None, "{untimed:?}");
        }
    }

    /// In `Interval` mode an append is acknowledged once written, before any sync, and the
    /// timer then syncs it on its own, although nothing else is appended.
    #[tokio::test]
    async fn the_interval_mode_acknowledges_at_once_and_syncs_on_its_timer() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            sync: SyncMode::Interval(Duration::from_millis(10)),
            segment_bytes: 1 << 20,
            ..config(dir.path())
        };
        let wal = Wal::start(&config, &recover(&config, None).unwrap()).unwrap();
        assert!(
            !wal.files().synced(),
            "the durable mark means written, not synced"
        );
        let stats = wal.stats();
        assert_eq!(append(&wal, 1).await, 1);
        assert_eq!(append(&wal, 2).await, 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.timed_syncs.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // One sync covers both unless the machine paused the writer between them.
        let synced = stats.timed_syncs.load(Ordering::Relaxed);
        assert!((1..=2).contains(&synced), "{synced} syncs");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            stats.timed_syncs.load(Ordering::Relaxed),
            synced,
            "no sync without writes"
        );
        assert_eq!(append(&wal, 3).await, 3);
        drop(wal);
        assert_eq!(recover(&config, None).unwrap().frames.len(), 3);
    }

    #[tokio::test]
    async fn appends_survive_reopening_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        assert_eq!(write(&config, 30).await, 30);
        assert!(
            segments(dir.path()).unwrap().len() > 3,
            "small segments roll over"
        );
        assert_eq!(write(&config, 5).await, 35, "LSNs continue after a restart");
        let recovered = recover(&config, None).unwrap();
        assert_eq!(
            payloads(&recovered.frames),
            (1..=35).map(payload).collect::<Vec<_>>()
        );
        assert_eq!((recovered.next_lsn, recovered.discarded_bytes()), (36, 0));
    }

    #[tokio::test]
    async fn concurrent_appends_share_syncs_and_keep_lsn_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            segment_bytes: 1 << 20,
            ..config(dir.path())
        };
        let wal = Wal::start(&config, &recover(&config, None).unwrap()).unwrap();
        let mut waits = Vec::new();
        for i in 1..=200 {
            waits.push(wal.append(vec![payload(i), payload(i)]).await.unwrap());
        }
        for (i, wait) in (1..).zip(waits) {
            assert_eq!(
                wait.await.unwrap().unwrap(),
                2 * i,
                "each append gets its last LSN"
            );
        }
        assert_eq!(recover(&config, None).unwrap().frames.len(), 400);
    }

    #[tokio::test]
    async fn a_truncated_tail_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        write(&config, 10).await;
        let path = last_segment(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        truncate(&path, len - 3).unwrap();
        let recovered = recover(&config, None).unwrap();
        assert_eq!(recovered.next_lsn, 10, "the cut frame is gone");
        assert!(recovered.discarded_bytes() > 0);
        assert_eq!(write(&config, 2).await, 11);
        assert_eq!(recover(&config, None).unwrap().frames.len(), 11);
    }

    fn flip(path: &Path, offset_from_end: u64) {
        let mut bytes = fs::read(path).unwrap();
        let at = bytes.len() - usize::try_from(offset_from_end).unwrap();
        bytes[at] ^= 0x40;
        fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn a_flipped_byte_in_the_last_frame_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        write(&config, 10).await;
        flip(&last_segment(dir.path()), 2);
        let recovered = recover(&config, None).unwrap();
        assert_eq!(recovered.frames.last().unwrap().lsn, 9);
    }

    #[tokio::test]
    async fn corruption_mid_log_stops_recovery_unless_discarding() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        write(&config, 30).await;
        let (_, first) = segments(dir.path()).unwrap().remove(0);
        // A byte inside the first segment's first frame: valid frames follow it.
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER_LEN + FRAME_HEADER_BYTES + 1] ^= 0x01;
        fs::write(&first, bytes).unwrap();
        let err = recover(&config, None).unwrap_err();
        assert!(
            matches!(&err, WalError::Corrupt { offset: 16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--wal-discard-corrupt"));
        let discard = WalConfig {
            on_corruption: OnCorruption::Discard,
            ..config.clone()
        };
        let recovered = recover(&discard, None).unwrap();
        assert!(
            recovered.frames.is_empty(),
            "everything from the bad frame on is dropped"
        );
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        assert_eq!(write(&config, 1).await, 1);
    }

    #[tokio::test]
    async fn the_tail_reads_durable_frames_and_released_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let recovered = recover(&config, None).unwrap();
        let wal = Wal::start(&config, &recovered).unwrap();
        for i in 1..=40 {
            append(&wal, i).await;
        }
        let mut tail = Tail::new(dir.path(), 1);
        let first = tail.read(25, frames(10)).unwrap();
        assert_eq!(
            first.iter().map(|f| f.lsn).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        let rest = tail.read(25, frames(100)).unwrap();
        assert_eq!(rest.first().map(|f| f.lsn), Some(11));
        assert_eq!(rest.last().map(|f| f.lsn), Some(25));
        let before = segments(dir.path()).unwrap().len();
        wal.files().release_through(25).unwrap();
        let after = segments(dir.path()).unwrap();
        assert!(after.len() < before);
        assert!(after[0].0 <= 26, "frames after the checkpoint are kept");
        let recovered = recover(&config, None).unwrap();
        assert_eq!(recovered.frames.last().unwrap().lsn, 40);
        assert!(recovered.frames[0].lsn <= 26);
    }

    #[tokio::test]
    async fn a_tail_read_stops_at_its_byte_limit_but_always_takes_a_frame() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let wal = Wal::start(&config, &recover(&config, None).unwrap()).unwrap();
        for i in 1..=40 {
            append(&wal, i).await;
        }
        let lsns = |frames: Vec<Frame>| frames.iter().map(|f| f.lsn).collect::<Vec<_>>();
        let mut tail = Tail::new(dir.path(), 1);
        let tiny = ReadLimit {
            frames: 100,
            bytes: 1,
        };
        assert_eq!(lsns(tail.read(40, tiny).unwrap()), [1]);
        // Frames 2–4 fill the limit exactly; segments of 256 bytes make the read cross them.
        let three = ReadLimit {
            frames: 100,
            bytes: (2..=4).map(|i| payload(i).len()).sum(),
        };
        assert_eq!(lsns(tail.read(40, three).unwrap()), [2, 3, 4]);
        assert_eq!(
            lsns(tail.read(40, frames(100)).unwrap()),
            (5..=40).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn the_tail_reports_a_damaged_frame_instead_of_waiting_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let wal = Wal::start(&config, &recover(&config, None).unwrap()).unwrap();
        for i in 1..=30 {
            append(&wal, i).await;
        }
        let (_, first) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER_LEN + FRAME_HEADER_BYTES + 1] ^= 0x01;
        fs::write(&first, bytes).unwrap();
        let mut tail = Tail::new(dir.path(), 1);
        let err = tail.read(30, frames(100)).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset: 16, .. }), "{err}");
        assert_eq!(tail.next_lsn(), 1, "nothing is skipped");
    }

    #[tokio::test]
    async fn appends_are_refused_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            max_bytes: 300,
            ..config(dir.path())
        };
        let wal = Wal::start(&config, &recover(&config, None).unwrap()).unwrap();
        assert!(wal.check_room().is_ok());
        for i in 1..=20 {
            append(&wal, i).await;
        }
        assert!(matches!(wal.check_room(), Err(WalError::Full { .. })));
    }
}
