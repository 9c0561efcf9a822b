//! The log's writer thread: the only code that writes segment files.
//!
//! It takes operations from a channel, writes everything queued in one `write` and one
//! `fdatasync` (group commit: under load, many appends share one disk flush), then answers each
//! operation. It runs on its own OS thread, so no tokio worker ever waits for the disk, and it
//! rotates to a new segment when the active one is full and deletes segments whose entries are
//! all purged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

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
    /// Save the committed pointer (durable with the next flush; nobody waits).
    Committed(Option<LogId>),
    /// Record a truncation from this index on.
    Truncate(u64, Done),
    /// Record a purge up to this log id and delete segments that hold only purged entries.
    Purge(LogId, Done),
    /// Make everything written so far durable.
    Sync(Done),
}

/// Writer-side bookkeeping of one segment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegInfo {
    /// Highest entry index written into it (None: no entry).
    pub max_index: Option<u64>,
}

/// State owned by the writer thread.
pub struct Writer {
    pub(super) dir: PathBuf,
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) seq: u64,
    pub(super) size: u64,
    pub(super) segment_limit: u64,
    pub(super) segments: BTreeMap<u64, SegInfo>,
    pub(super) pointers: Pointers,
}

/// Most operations taken into one group commit.
const MAX_GROUP: usize = 4096;

fn copy_err(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

impl Writer {
    /// Runs until every sender is gone.
    pub fn run(mut self, rx: Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.group(ops);
        }
        let _ = self.file.sync_data();
    }

    fn group(&mut self, ops: Vec<Op>) {
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        let mut written: Vec<(LogId, Loc)> = Vec::new();
        let mut need_sync = false;
        let mut purge: Option<LogId> = None;
        let mut dones: Vec<Done> = Vec::new();
        for op in ops {
            payload.clear();
            let (record, done) = match &op {
                Op::Append(entries, _) => {
                    for (id, body) in entries {
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
                    need_sync = true;
                    (None, true)
                }
                Op::Vote(v, _) => {
                    self.pointers.vote = Some(*v);
                    need_sync = true;
                    (Some(Record::Vote(*v)), true)
                }
                Op::Committed(c) => {
                    self.pointers.committed = *c;
                    (Some(Record::Committed(*c)), false)
                }
                Op::Truncate(from, _) => {
                    need_sync = true;
                    (Some(Record::Truncate(*from)), true)
                }
                Op::Purge(id, _) => {
                    if self.pointers.purged.is_none_or(|p| p.index < id.index) {
                        self.pointers.purged = Some(*id);
                    }
                    purge = Some(*id);
                    need_sync = true;
                    (Some(Record::Purge(*id)), true)
                }
                Op::Sync(_) => {
                    need_sync = true;
                    (None, true)
                }
            };
            if let Some(r) = record {
                let kind = record::encode(&r, &mut payload);
                put_frame(&mut buf, kind, &payload);
            }
            if done {
                match op {
                    Op::Append(_, d)
                    | Op::Vote(_, d)
                    | Op::Truncate(_, d)
                    | Op::Purge(_, d)
                    | Op::Sync(d) => dones.push(d),
                    Op::Committed(_) => {}
                }
            }
        }
        let result = self.file.write_all(&buf).and_then(|()| {
            if need_sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        match &result {
            Ok(()) => {
                self.size += buf.len() as u64;
                let mut index = self.shared.lock_index();
                for (id, loc) in written {
                    index.written(id, loc);
                }
                index.trim_cache();
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "raft log write failed");
                self.shared.fail(e);
            }
        }
        if result.is_ok() {
            // Before answering, so that a caller of purge sees the files gone.
            if let Some(upto) = purge {
                self.delete_purged(upto);
            }
            if self.size >= self.segment_limit {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, dir = %self.dir.display(), "cannot start a new raft log segment");
                    self.shared.fail(&e);
                }
            }
        }
        for d in dones {
            d(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(copy_err(e)),
            });
        }
    }

    /// Starts a new segment whose header carries the current pointers.
    fn rotate(&mut self) -> std::io::Result<()> {
        let seq = self.seq + 1;
        let mut head = Vec::new();
        let mut payload = Vec::new();
        let kind = record::encode(&Record::State(self.pointers), &mut payload);
        put_frame(&mut head, kind, &payload);
        let file = segment::create(&self.dir, seq, &head)?;
        let reader = File::open(segment::path(&self.dir, seq))?;
        self.shared.add_reader(seq, reader);
        self.file = file;
        self.seq = seq;
        self.size = (segment::MAGIC.len() + head.len()) as u64;
        self.segments.insert(seq, SegInfo::default());
        tracing::debug!(segment = seq, "raft log: new segment");
        Ok(())
    }

    /// Deletes the oldest segments while every entry in them is at or below `upto` (never the
    /// active one): whole files, so a purge costs no rewriting.
    fn delete_purged(&mut self, upto: LogId) {
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, info)| {
                **seq != self.seq && info.max_index.is_none_or(|m| m <= upto.index)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in deletable {
            let p = segment::path(&self.dir, seq);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    self.segments.remove(&seq);
                    self.shared.remove_reader(seq);
                    tracing::debug!(segment = seq, "raft log: purged segment deleted");
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %p.display(), "cannot delete purged raft log segment");
                    break;
                }
            }
        }
    }
}
