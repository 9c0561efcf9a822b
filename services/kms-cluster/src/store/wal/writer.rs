//! The log's writer thread: the only code that writes segment files.
//!
//! It takes operations from a channel, writes everything queued in one `write` and one
//! `fdatasync` (group commit: under load, many appends share one disk flush), then answers each
//! operation. It runs on its own OS thread, so no tokio worker ever waits for the disk, and it
//! rotates to a new segment when the active one is full and deletes segments whose entries are
//! all purged. With preallocation on, a helper thread prepares the next segment as a file of
//! zeros while the writer fills the current one (see `segment`); the writer never waits for it.
//! On a nearly full disk no segment is set aside (`store::space`): the log appends to the end
//! of the disk instead, and says so once in the log.
//!
//! Where the kernel allows it (see `direct`), a group is not written and flushed by the writer
//! itself: its blocks are handed to the kernel as one asynchronous durable write, the writer
//! returns to its queue, and the group is answered when the write completes (by a task on the
//! runtime, or by the writer before its next group). One group is in flight at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::direct::{self, Direct, BLOCK};
use super::index::Loc;
use super::record::{self, Pointers, Record};
use super::{segment, Shared};
use crate::store::frame::put_frame;
use crate::{LogId, Vote};

/// Called with the outcome once an operation is durable (or failed).
pub type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// One request to the writer.
pub enum Op {
    /// Append entries (log id and encoded body each).
    Append(Vec<(LogId, Vec<u8>)>, Done),
    /// Save a vote (durable before `Done`).
    Vote(Vote, Done),
    /// Record a truncation from this index on.
    Truncate(u64, Done),
    /// Record a purge up to this log id and delete segments that hold only purged entries.
    Purge(LogId, Done),
    /// Make everything written so far durable.
    Sync(Done),
}

impl Op {
    /// The callback of this operation.
    fn into_done(self) -> Done {
        match self {
            Op::Append(_, d)
            | Op::Vote(_, d)
            | Op::Truncate(_, d)
            | Op::Purge(_, d)
            | Op::Sync(d) => d,
        }
    }
}

/// Writer-side bookkeeping of one segment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegInfo {
    /// Highest entry index written into it (None: no entry).
    pub max_index: Option<u64>,
}

/// State owned by the writer thread.
pub struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    file: File,
    seq: u64,
    size: u64,
    segment_limit: u64,
    segments: BTreeMap<u64, SegInfo>,
    pointers: Pointers,
    /// Whether segments are preallocated at all.
    preallocate: bool,
    /// Whether the active segment is a preallocated one.
    active_preallocated: bool,
    /// The next segment being prepared.
    spare: Option<JoinHandle<std::io::Result<segment::Prepared>>>,
    /// A prepared spare waiting for the next rotation.
    ready: Option<segment::Spare>,
    /// Whether the last preparation found too little free space (logged once per episode).
    low_space: bool,
    /// The thread deleting purged segments, and the way to hand it work.
    janitor: Option<(std::sync::mpsc::Sender<Unlink>, JoinHandle<()>)>,
    /// Asynchronous durable writes, when the kernel allows them (None: `pwrite` + `fdatasync`).
    direct: Option<Arc<Direct>>,
    /// Whether a task on the runtime answers completed groups (else the writer waits for
    /// each group right after handing it over).
    reaper: bool,
    /// The active segment opened for direct writes.
    dfile: Option<Arc<File>>,
    /// The active segment's bytes from its last [`BLOCK`] boundary to `size`: a direct write
    /// starts at that boundary and writes them again, unchanged.
    tail: Vec<u8>,
}

/// Purged segment files to delete, and the purges to answer once they are gone.
struct Unlink {
    paths: Vec<(u64, PathBuf)>,
    dones: Vec<Done>,
}

impl Unlink {
    fn run(self) {
        for (seq, p) in self.paths {
            match std::fs::remove_file(&p) {
                Ok(()) => tracing::debug!(segment = seq, "raft log: purged segment deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, path = %p.display(), "cannot delete purged raft log segment")
                }
            }
        }
        for d in self.dones {
            d(Ok(()));
        }
    }
}

/// Starts the thread that deletes purged segments (None, logged, if it cannot be started).
fn start_janitor() -> Option<(std::sync::mpsc::Sender<Unlink>, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel::<Unlink>();
    match std::thread::Builder::new()
        .name("raft-log-purge".into())
        .spawn(move || rx.into_iter().for_each(Unlink::run))
    {
        Ok(handle) => Some((tx, handle)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the thread deleting purged raft log segments; the writer deletes them");
            None
        }
    }
}

/// Most operations taken into one group commit.
const MAX_GROUP: usize = 4096;

/// How long the writer, idle with a group in flight, leaves its answer to the runtime's task
/// before it waits for the group itself (should the task be late or the runtime gone).
const REAP_FALLBACK: std::time::Duration = std::time::Duration::from_millis(10);

/// Answers `dones` with `result` (each its own copy of an error).
pub(super) fn answer(dones: impl IntoIterator<Item = Done>, result: &std::io::Result<()>) {
    for d in dones {
        d(match result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        });
    }
}

/// Creates segment `seq` (in `spare` when one is given) with a header carrying `pointers`,
/// and registers a reader for it; returns the file, its bytes so far (magic and header) and
/// whether it is preallocated.
fn new_segment(
    dir: &Path,
    shared: &Shared,
    seq: u64,
    pointers: Pointers,
    spare: Option<segment::Spare>,
) -> std::io::Result<(File, Vec<u8>, bool)> {
    let mut head = Vec::new();
    let mut payload = Vec::new();
    let kind = record::encode(&Record::State(pointers), &mut payload);
    put_frame(&mut head, kind, &payload);
    let (file, preallocated) = match spare {
        Some(spare) => (segment::install_spare(dir, seq, spare, &head)?, true),
        None => (segment::create(dir, seq, &head)?, false),
    };
    shared.add_reader(seq, File::open(segment::path(dir, seq))?);
    let mut first = segment::MAGIC.to_vec();
    first.extend_from_slice(&head);
    Ok((file, first, preallocated))
}

impl Writer {
    /// A writer for a log whose replayed segments are `segments`: writes always go to a fresh
    /// segment after them, whose header carries the pointers. That first one is an appended
    /// one (no startup wait for a file of zeros); the writer moves to a preallocated one as
    /// soon as it is ready.
    pub(super) fn start(
        dir: PathBuf,
        shared: Arc<Shared>,
        mut segments: BTreeMap<u64, SegInfo>,
        pointers: Pointers,
        segment_limit: u64,
        preallocate: bool,
        direct_io: bool,
    ) -> std::io::Result<Writer> {
        let seq = segments.keys().next_back().map_or(1, |s| s + 1);
        let (file, first, _) = new_segment(&dir, &shared, seq, pointers, None)?;
        segments.insert(seq, SegInfo::default());
        let direct = if direct_io {
            match Direct::new(shared.clone()) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::info!(error = %e, "no asynchronous durable writes here (AIO refused): the raft log writes with pwrite + fdatasync");
                    None
                }
            }
        } else {
            None
        };
        let reaper = direct.as_ref().is_some_and(Direct::spawn_reaper);
        let size = first.len() as u64;
        let mut writer = Writer {
            dir,
            shared,
            file,
            seq,
            size,
            segment_limit,
            segments,
            pointers,
            preallocate,
            active_preallocated: false,
            spare: None,
            ready: None,
            low_space: false,
            janitor: start_janitor(),
            direct,
            reaper,
            dfile: None,
            tail: Vec::new(),
        };
        writer.open_direct(first);
        writer.prepare_next();
        Ok(writer)
    }

    /// Opens the active segment (whose bytes so far are `first`) for direct writes; where
    /// its filesystem refuses `O_DIRECT` (tmpfs) the log writes with `pwrite` + `fdatasync`
    /// from here on.
    fn open_direct(&mut self, first: Vec<u8>) {
        let Some(d) = self.direct.clone() else {
            return;
        };
        match direct::open_segment(&segment::path(&self.dir, self.seq)) {
            Ok(f) => {
                self.dfile = Some(f);
                let at = (first.len() as u64 / BLOCK * BLOCK) as usize;
                self.tail = first[at..].to_vec();
            }
            Err(e) => {
                tracing::info!(error = %e, dir = %self.dir.display(), "no direct writes on this filesystem: the raft log writes with pwrite + fdatasync");
                d.close();
                self.direct = None;
                self.dfile = None;
                self.tail = Vec::new();
            }
        }
    }

    /// The next operation; None once every sender is gone. With a group in flight that the
    /// runtime's task should answer, waits for it itself if nothing arrives for a while.
    fn next_op(&self, rx: &Receiver<Op>) -> Option<Op> {
        if let Some(d) = self.direct.as_ref().filter(|_| self.reaper) {
            while d.busy() {
                match rx.recv_timeout(REAP_FALLBACK) {
                    Ok(op) => return Some(op),
                    Err(RecvTimeoutError::Timeout) => d.settle(),
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            }
        }
        rx.recv().ok()
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, rx: Receiver<Op>) {
        while let Some(first) = self.next_op(&rx) {
            // Taken before the queue is drained: the entries a saved committed pointer covers
            // were sent before it was saved, so they are in this group (unless it is full).
            let mut committed = self.shared.take_committed();
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if ops.len() == MAX_GROUP {
                if let Some(c) = committed.take() {
                    self.shared.restore_committed(c);
                }
            }
            self.group(ops, committed);
        }
        if let Some(c) = self.shared.take_committed() {
            self.group(Vec::new(), Some(c));
        }
        if let Some(d) = self.direct.take() {
            d.close();
        }
        let _ = self.file.sync_data();
        // A spare still being written is finished before the log is let go (it is deleted at
        // the next open).
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
        // (A spare never installed stays a `.spare` file, deleted at the next open.)
        // Purged segments still to delete are deleted before the log is let go.
        if let Some((tx, handle)) = self.janitor.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// Starts preparing the next segment on a helper thread, unless one is under way.
    fn prepare_next(&mut self) {
        if !self.preallocate || self.spare.is_some() {
            return;
        }
        let dir = self.dir.clone();
        let bytes = self.segment_limit;
        match std::thread::Builder::new()
            .name("raft-log-spare".into())
            .spawn(move || segment::prepare_spare(&dir, bytes))
        {
            Ok(handle) => self.spare = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start preparing the next raft log segment")
            }
        }
    }

    /// Takes a finished preparation: a spare is kept for the next rotation; a disk too full
    /// for one, or a failure, is logged and dropped, and the next rotation (when the active
    /// segment is full) tries again. Never waits for a preparation under way.
    fn collect_spare(&mut self) {
        if !self.spare.as_ref().is_some_and(JoinHandle::is_finished) {
            return;
        }
        let Some(handle) = self.spare.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(segment::Prepared::Spare(spare))) => {
                if std::mem::take(&mut self.low_space) {
                    tracing::info!(dir = %self.dir.display(), "enough free disk space again: raft log segments are preallocated");
                }
                self.ready = Some(spare);
            }
            Ok(Ok(segment::Prepared::LowSpace { available })) => {
                if !std::mem::replace(&mut self.low_space, true) {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        available_bytes = available,
                        "little free disk space: raft log segments are no longer preallocated (the log appends until the disk is full, then the node stops)"
                    );
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot preallocate the next raft log segment; writing an appended one");
            }
            Err(_) => {}
        }
    }

    /// Writes one group: the operations in order, then the committed pointer if one was saved.
    fn group(&mut self, ops: Vec<Op>, committed: Option<Option<LogId>>) {
        if let Some(d) = &self.direct {
            // One group in flight: the next rewrites its tail block.
            d.settle();
            // After a failed write nothing more is written (a later group that succeeded
            // would be acknowledged behind a hole).
            if let Err(e) = self.shared.check() {
                answer(
                    ops.into_iter().map(Op::into_done),
                    &Err(std::io::Error::other(e.to_string())),
                );
                return;
            }
        }
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        let mut written: Vec<(LogId, Loc)> = Vec::new();
        // Every operation but the committed pointer is answered once durable.
        let need_sync = !ops.is_empty();
        let mut purge: Option<LogId> = None;
        // Purges are answered once their segments are deleted (see `delete_purged`).
        let mut purge_dones: Vec<Done> = Vec::new();
        let mut dones: Vec<Done> = Vec::with_capacity(ops.len());
        for op in ops {
            payload.clear();
            let (record, done) = match op {
                Op::Append(entries, done) => {
                    for (id, body) in &entries {
                        payload.clear();
                        let kind = record::encode(&Record::Entry(*id, body), &mut payload);
                        let offset = self.size + buf.len() as u64;
                        put_frame(&mut buf, kind, &payload);
                        let size = (self.size + buf.len() as u64 - offset) as u32;
                        written.push((
                            *id,
                            Loc {
                                seg: self.seq,
                                offset,
                                size,
                            },
                        ));
                        let info = self.segments.entry(self.seq).or_default();
                        info.max_index = info.max_index.max(Some(id.index));
                    }
                    (None, done)
                }
                Op::Vote(v, done) => {
                    self.pointers.vote = Some(v);
                    (Some(Record::Vote(v)), done)
                }
                Op::Truncate(from, done) => (Some(Record::Truncate(from)), done),
                Op::Purge(id, done) => {
                    if self.pointers.purged.is_none_or(|p| p.index < id.index) {
                        self.pointers.purged = Some(id);
                    }
                    purge = Some(id);
                    (Some(Record::Purge(id)), done)
                }
                Op::Sync(done) => (None, done),
            };
            if let Some(r) = &record {
                let kind = record::encode(r, &mut payload);
                put_frame(&mut buf, kind, &payload);
            }
            if matches!(record, Some(Record::Purge(_))) {
                purge_dones.push(done);
            } else {
                dones.push(done);
            }
        }
        // Last, so that a torn write never keeps the pointer without the entries it covers.
        if let Some(c) = committed {
            self.pointers.committed = c;
            payload.clear();
            let kind = record::encode(&Record::Committed(c), &mut payload);
            put_frame(&mut buf, kind, &payload);
        }
        if let (Some(d), Some(dfile)) = (self.direct.clone(), self.dfile.clone()) {
            let at = self.size - self.tail.len() as u64;
            let mut bytes = std::mem::take(&mut self.tail);
            bytes.extend_from_slice(&buf);
            self.size += buf.len() as u64;
            self.tail = bytes[(self.size / BLOCK * BLOCK - at) as usize..].to_vec();
            d.submit(dfile, at, &bytes, written, dones);
            if !self.reaper || purge.is_some() {
                d.settle();
            }
            if let Some(upto) = purge {
                match self.shared.check() {
                    Ok(()) => self.delete_purged(upto, purge_dones),
                    Err(e) => answer(purge_dones, &Err(std::io::Error::other(e.to_string()))),
                }
            }
            self.after_write();
            return;
        }
        let result = self.file.write_all_at(&buf, self.size).and_then(|()| {
            if need_sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match &result {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.shared.written(written);
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "raft log write failed");
                self.shared.fail(e);
            }
        }
        if result.is_ok() {
            if let Some(upto) = purge {
                self.delete_purged(upto, std::mem::take(&mut purge_dones));
            }
            self.after_write();
        }
        answer(dones.into_iter().chain(purge_dones), &result);
    }

    /// After a group was written: a full segment is replaced; so is an appended one (the
    /// first after an open, or one written while no spare was ready) as soon as a preallocated
    /// one is ready.
    fn after_write(&mut self) {
        self.collect_spare();
        if self.size >= self.segment_limit || (!self.active_preallocated && self.ready.is_some()) {
            if let Err(e) = self.rotate() {
                tracing::error!(error = %e, dir = %self.dir.display(), "cannot start a new raft log segment");
                self.shared.fail(&e);
            }
        }
    }

    /// Starts a new segment whose header carries the current pointers. (A direct write still
    /// in flight into the old one keeps its own handle on it.)
    fn rotate(&mut self) -> std::io::Result<()> {
        let seq = self.seq + 1;
        self.collect_spare();
        let spare = self.ready.take();
        let (file, first, preallocated) =
            new_segment(&self.dir, &self.shared, seq, self.pointers, spare)?;
        self.file = file;
        self.seq = seq;
        self.size = first.len() as u64;
        self.open_direct(first);
        self.active_preallocated = preallocated;
        self.segments.insert(seq, SegInfo::default());
        tracing::debug!(segment = seq, preallocated, "raft log: new segment");
        self.prepare_next();
        Ok(())
    }

    /// Deletes the oldest segments while every entry in them is at or below `upto` (never the
    /// active one): whole files, so a purge costs no rewriting. The files are unlinked on a
    /// helper thread (freeing an 8 MiB file takes milliseconds on a busy disk, and the
    /// writer's next group would wait for it); `dones` are answered once they are gone, so a
    /// caller of purge sees the files gone. A file that cannot be deleted is logged and
    /// left (replay ignores entries below the purge pointer).
    fn delete_purged(&mut self, upto: LogId, dones: Vec<Done>) {
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, info)| {
                **seq != self.seq && info.max_index.is_none_or(|m| m <= upto.index)
            })
            .map(|(seq, _)| *seq)
            .collect();
        let mut paths = Vec::with_capacity(deletable.len());
        for seq in deletable {
            self.segments.remove(&seq);
            self.shared.remove_reader(seq);
            paths.push((seq, segment::path(&self.dir, seq)));
        }
        let job = Unlink { paths, dones };
        // Without a helper (it could not be started), the writer deletes them itself.
        let job = match &self.janitor {
            Some((tx, _)) => match tx.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        job.run();
    }
}
