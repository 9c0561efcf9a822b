//! [`Wal`]: the Raft log, vote and committed pointer as a segmented write-ahead log of our own.
//!
//! Layout of the log directory: segment files `<seq>.wal` (see `segment`), each a sequence of
//! CRC-checked frames (see `store::frame`) holding the records of `record`. Nothing is ever
//! rewritten in place: appends, votes, truncations and purges are records appended to the active
//! segment by one writer thread (`writer`), which flushes each group of queued operations with a
//! single `fdatasync`; a purge deletes whole segments. Segments are preallocated (prepared
//! ahead as zeros) unless [`WalOptions::preallocate`] is off. Opening the directory replays the
//! segments; an all-zero rest of a segment is its unwritten end, a torn or corrupt tail of the
//! newest segment (a crash during a write) is cut off, damage anywhere else refuses the open.
//!
//! Why not sled (the design card's store): sled 0.34 deadlocked under sustained load in its
//! flush path (see docs/design/storage.md); a Raft log is append-only and needs nothing of a
//! B-tree.

mod direct;
mod index;
mod record;
mod segment;
mod tail;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};

pub use index::{Loc, LogIndex, Lookup};
pub use record::Pointers;
pub use segment::sync_dir as segment_sync_dir;
pub use writer::Done;

use crate::store::codec;
use crate::store::frame::{check_frame, FrameReader};
use crate::{Entry, LogId, Vote};
use writer::{Op, SegInfo, Writer};

/// Tunables of the log.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Start a new segment when the active one reaches this size.
    pub segment_bytes: u64,
    /// Encoded bytes of written entries kept decoded in memory (the newest ones).
    pub cache_bytes: usize,
    /// Write into segments prepared ahead as files of zeros (see `segment`), so that a
    /// group commit's `fdatasync` does not also commit a file size change.
    pub preallocate: bool,
    /// Hand group commits to the kernel as asynchronous durable writes (Linux AIO on
    /// `O_DIRECT | O_DSYNC` segments; see `direct`) where it allows them, instead of
    /// `pwrite` + `fdatasync` on the writer thread.
    pub direct_io: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 8 * 1024 * 1024,
            cache_bytes: 2 * 1024 * 1024,
            preallocate: true,
            direct_io: true,
        }
    }
}

/// Why the log could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file operation failed.
    #[error("raft log {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process has the log open.
    #[error("raft log {0} is in use by another process")]
    Locked(PathBuf),
    /// A segment other than the newest is damaged, or records contradict each other.
    #[error("raft log segment {path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        /// Segment file.
        path: PathBuf,
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry read back does not decode.
    #[error("raft log entry {index}: {reason}")]
    BadEntry {
        /// Log index.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write failed; the log refuses further work until reopened.
    #[error("raft log failed earlier: {0}")]
    Failed(String),
    /// Appended entries do not continue the log.
    #[error(transparent)]
    NotContiguous(#[from] index::NotContiguous),
    /// The writer thread is gone.
    #[error("raft log writer stopped")]
    Stopped,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// State shared by the handles and the writer thread.
pub struct Shared {
    index: Mutex<LogIndex>,
    readers: Mutex<BTreeMap<u64, Arc<File>>>,
    failed: Mutex<Option<String>>,
    /// A committed pointer saved but not yet written: the writer adds it to its next group
    /// (nobody waits for it, so saving it does not wake the writer thread).
    committed: Mutex<Option<Option<LogId>>>,
}

impl Shared {
    fn lock_index(&self) -> MutexGuard<'_, LogIndex> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add_reader(&self, seq: u64, file: File) {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq, Arc::new(file));
    }

    fn remove_reader(&self, seq: u64) {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&seq);
    }

    fn reader(&self, seq: u64) -> Option<Arc<File>> {
        self.readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&seq)
            .cloned()
    }

    /// The committed pointer saved since the writer last took it, if any.
    fn take_committed(&self) -> Option<Option<LogId>> {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Puts a taken committed pointer back unless a newer one was saved meanwhile.
    fn restore_committed(&self, committed: Option<LogId>) {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(committed);
    }

    /// After a group's write is durable: its entries become readable from their segments, and
    /// the decoded copies the cache no longer needs are dropped.
    fn written(&self, written: Vec<(LogId, Loc)>) {
        let mut index = self.lock_index();
        for (id, loc) in written {
            index.written(id, loc);
        }
        index.trim_cache();
    }

    fn fail(&self, e: &std::io::Error) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.get_or_insert_with(|| e.to_string());
    }

    fn check(&self) -> Result<(), WalError> {
        match &*self.failed.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(why) => Err(WalError::Failed(why.clone())),
            None => Ok(()),
        }
    }
}

/// A handle on an open log (cheap to clone; all clones share one writer thread).
#[derive(Clone)]
pub struct Wal {
    dir: PathBuf,
    shared: Arc<Shared>,
    open: Arc<Open>,
}

/// The writer thread and the directory lock, shared by all handles. Dropping the last handle
/// lets the writer finish what was sent (and a saved committed pointer), then releases the
/// lock: the log can be opened again as soon as the drop returns.
struct Open {
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<std::thread::JoinHandle<()>>,
    _lock: File,
}

impl Drop for Open {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            // (Never the writer joining itself, should a callback hold the last handle.)
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("entries", &self.shared.lock_index().len())
            .finish_non_exhaustive()
    }
}

/// What replaying the segments found.
struct Replayed {
    index: LogIndex,
    segments: BTreeMap<u64, SegInfo>,
}

fn replay(dir: &Path, options: &WalOptions) -> Result<Replayed, WalError> {
    let mut index = LogIndex::new(options.cache_bytes);
    let mut segments = BTreeMap::new();
    let seqs = segment::list(dir).map_err(io_err(dir))?;
    let newest = seqs.last().copied();
    for seq in seqs {
        let path = segment::path(dir, seq);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let is_newest = Some(seq) == newest;
        let corrupt = |offset: usize, reason: String| WalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        if bytes.len() < segment::MAGIC.len() || &bytes[..segment::MAGIC.len()] != segment::MAGIC {
            // A crash while a segment was being created leaves a short newest file.
            if is_newest && segment::MAGIC.starts_with(&bytes) {
                tracing::warn!(path = %path.display(), "removing a raft log segment torn at creation");
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            return Err(corrupt(0, "not a kms-cluster log segment".into()));
        }
        let mut info = SegInfo::default();
        let mut frames = FrameReader::new(&bytes, segment::MAGIC.len());
        for frame in frames.by_ref() {
            let rec = record::decode(frame.kind, frame.payload)
                .map_err(|e| corrupt(frame.offset, e.to_string()))?
                .ok_or_else(|| {
                    corrupt(
                        frame.offset,
                        format!(
                            "unknown record kind {} (written by a newer version?)",
                            frame.kind
                        ),
                    )
                })?;
            match rec {
                record::Record::Entry(id, _) => {
                    let loc = Loc {
                        seg: seq,
                        offset: frame.offset as u64,
                        size: frame.size as u32,
                    };
                    index
                        .push(id, Some(loc), None)
                        .map_err(|e| corrupt(frame.offset, e.to_string()))?;
                    info.max_index = info.max_index.max(Some(id.index));
                }
                record::Record::Vote(v) => index.pointers.vote = Some(v),
                record::Record::Committed(c) => index.pointers.committed = c,
                record::Record::Truncate(from) => index.truncate(from),
                record::Record::Purge(id) => index.purge(id),
                record::Record::State(p) => {
                    if p.vote.is_some() {
                        index.pointers.vote = p.vote;
                    }
                    if p.committed.is_some() {
                        index.pointers.committed = p.committed;
                    }
                    if let Some(purged) = p.purged {
                        index.purge(purged);
                    }
                }
            }
        }
        match frames.defect() {
            // The unwritten rest of a preallocated segment: its clean end.
            Some((offset, _)) if bytes[offset..].iter().all(|b| *b == 0) => {}
            Some((offset, defect)) if !is_newest => {
                return Err(corrupt(offset, defect.to_string()));
            }
            Some((offset, defect)) => {
                let last = index.last_log_id().map(|id| id.index);
                if let tail::Tail::Damaged {
                    offset: next,
                    index: next_index,
                } = tail::judge(&bytes, offset, defect, last)
                {
                    return Err(corrupt(
                        offset,
                        format!(
                            "{defect}, followed by acknowledged records (entry {next_index} at \
                             byte {next}): damage, not a write cut short by a crash"
                        ),
                    ));
                }
                // A crash in the middle of a write: nothing after `offset` was acknowledged.
                tracing::warn!(path = %path.display(), offset, %defect, "cutting a torn tail off the raft log");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(offset as u64).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            None => {}
        }
        segments.insert(seq, info);
    }
    Ok(Replayed { index, segments })
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replays it and starts the writer thread.
    ///
    /// Blocking: call it at startup or from `spawn_blocking`.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.try_lock()
            .map_err(|_| WalError::Locked(dir.to_owned()))?;
        segment::remove_spares(dir).map_err(io_err(dir))?;
        let Replayed { index, segments } = replay(dir, &options)?;
        let shared = Arc::new(Shared {
            index: Mutex::new(index),
            readers: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(None),
            committed: Mutex::new(None),
        });
        for seq in segments.keys() {
            let p = segment::path(dir, *seq);
            shared.add_reader(*seq, File::open(&p).map_err(io_err(&p))?);
        }
        let pointers = shared.lock_index().pointers;
        let writer = Writer::start(
            dir.to_owned(),
            shared.clone(),
            segments,
            pointers,
            options.segment_bytes,
            options.preallocate,
            options.direct_io,
        )
        .map_err(io_err(dir))?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("raft-log".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(Wal {
            dir: dir.to_owned(),
            shared,
            open: Arc::new(Open {
                tx: Some(tx),
                writer: Some(writer),
                _lock: lock,
            }),
        })
    }

    fn send(&self, op: Op) -> Result<(), WalError> {
        self.shared.check()?;
        let tx = self.open.tx.as_ref().ok_or(WalError::Stopped)?;
        tx.send(op).map_err(|_| WalError::Stopped)
    }

    /// Vote, committed and purge pointers.
    pub fn pointers(&self) -> Pointers {
        self.shared.lock_index().pointers
    }

    /// Log id of the last entry (or of the purge point when the log is empty).
    pub fn last_log_id(&self) -> Option<LogId> {
        self.shared.lock_index().last_log_id()
    }

    /// Appends entries: readable at once, `done` is called once they are durable.
    pub fn append(&self, entries: Vec<Entry>, done: Done) -> Result<(), WalError> {
        let encoded: Vec<(LogId, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.log_id, codec::encode_entry(e)))
            .collect();
        {
            let mut index = self.shared.lock_index();
            for (e, (_, bytes)) in entries.into_iter().zip(&encoded) {
                index.push(e.log_id, None, Some((e, bytes.len())))?;
            }
        }
        self.send(Op::Append(encoded, done))
    }

    /// Saves a vote; `done` once durable.
    pub fn save_vote(&self, vote: Vote, done: Done) -> Result<(), WalError> {
        self.shared.lock_index().pointers.vote = Some(vote);
        self.send(Op::Vote(vote, done))
    }

    /// Saves the committed pointer: written with the writer's next group (after the entries
    /// it covers) and durable with the next flush; a crash may lose the newest one, which
    /// openraft allows (the log is committed again after the restart).
    pub fn save_committed(&self, committed: Option<LogId>) -> Result<(), WalError> {
        self.shared.check()?;
        self.shared.lock_index().pointers.committed = committed;
        *self
            .shared
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(committed);
        Ok(())
    }

    /// Removes entries from index `from` on; `done` once durable.
    pub fn truncate(&self, from: u64, done: Done) -> Result<(), WalError> {
        self.shared.lock_index().truncate(from);
        self.send(Op::Truncate(from, done))
    }

    /// Purges entries up to `upto`; `done` once durable.
    pub fn purge(&self, upto: LogId, done: Done) -> Result<(), WalError> {
        self.shared.lock_index().purge(upto);
        self.send(Op::Purge(upto, done))
    }

    /// Calls `done` once everything sent so far is durable.
    pub fn sync(&self, done: Done) -> Result<(), WalError> {
        self.send(Op::Sync(done))
    }

    /// Where to find the entries in `[start, end)`.
    pub fn lookup(&self, start: u64, end: u64) -> Vec<Lookup> {
        self.shared.lock_index().lookup(start, end)
    }

    /// Reads an entry from its segment and checks frame CRC, log id and encoding. Blocking
    /// (a positioned read, usually from the page cache).
    pub fn read_at(&self, log_id: LogId, loc: Loc) -> Result<Entry, WalError> {
        let bad = |reason: String| WalError::BadEntry {
            index: log_id.index,
            reason,
        };
        let file = self
            .shared
            .reader(loc.seg)
            .ok_or_else(|| bad(format!("segment {} is gone (purged meanwhile)", loc.seg)))?;
        let mut buf = vec![0u8; loc.size as usize];
        file.read_exact_at(&mut buf, loc.offset)
            .map_err(|e| bad(e.to_string()))?;
        let (kind, payload, _) = check_frame(&buf).map_err(|d| bad(d.to_string()))?;
        match record::decode(kind, payload) {
            Ok(Some(record::Record::Entry(id, body))) if id == log_id => {
                codec::decode_entry(body).map_err(|e| bad(e.to_string()))
            }
            _ => Err(bad("the record at its place is another one".into())),
        }
    }

    /// Bytes of all files in the log directory.
    pub fn size_on_disk(&self) -> u64 {
        dir_size(&self.dir)
    }
}

/// Total size of the regular files under `dir`, recursively (0 when it cannot be read): the
/// log and snapshot directories, and the whole data directory for the node's status.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests;
