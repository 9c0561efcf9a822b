//! [`LogStore`]: openraft's `RaftLogStorage` over the write-ahead log ([`Wal`]).
//!
//! Owns the mapping between openraft's storage calls and the log's operations, and the rule
//! openraft relies on: appended entries are readable when `append` returns and acknowledged
//! through [`LogFlushed`] only once the writer thread has fsynced them; a vote, truncation or
//! purge returns only once durable. No call blocks a tokio worker: writes are handed to the
//! writer thread, and entries that are no longer cached are read on the blocking pool.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use super::to_storage_error;
use super::wal::{Lookup, Wal, WalError};
use crate::error::ClusterError as StoreError;
use crate::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The Raft log storage of one node. Cloning is cheap; a clone is also the log reader openraft
/// hands to replication tasks.
#[derive(Debug, Clone)]
pub struct LogStore {
    wal: Wal,
}

/// Waits for a writer-thread operation that reports through a `Done` callback.
async fn durable(
    op: impl FnOnce(super::wal::Done) -> Result<(), WalError>,
) -> Result<(), StoreError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    op(Box::new(move |r| {
        let _ = tx.send(r);
    }))?;
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Io(e)),
        Err(_) => Err(WalError::Stopped.into()),
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl LogStore {
    /// A log store over an open log.
    pub fn new(wal: Wal) -> Self {
        LogStore { wal }
    }

    /// The underlying log (sizes, sync at shutdown).
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Reads `[start, end)`: cached entries at once, the others on the blocking pool.
    async fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, StoreError> {
        let lookups = self.wal.lookup(start, end);
        if lookups.iter().all(|l| matches!(l, Lookup::Hit(_))) {
            return Ok(lookups
                .into_iter()
                .map(|l| match l {
                    Lookup::Hit(e) => e,
                    Lookup::Disk(..) => unreachable!("all cached"),
                })
                .collect());
        }
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || {
            lookups
                .into_iter()
                .map(|l| match l {
                    Lookup::Hit(e) => Ok(e),
                    Lookup::Disk(id, loc) => wal.read_at(id, loc).map_err(StoreError::from),
                })
                .collect()
        })
        .await?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read(start, end)
            .await
            .map_err(|e| to_storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.wal.pointers().purged,
            last_log_id: self.wal.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        durable(|done| self.wal.save_vote(vote, done))
            .await
            .map_err(|e| to_storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.wal.pointers().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.wal
            .save_committed(committed)
            .map_err(|e| to_storage_error(ErrorSubject::Store, ErrorVerb::Write, &e.into()))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal.pointers().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.wal
            .append(
                entries,
                Box::new(move |result| callback.log_io_completed(result)),
            )
            .map_err(|e| to_storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e.into()))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log from this entry on");
        durable(|done| self.wal.truncate(log_id.index, done))
            .await
            .map_err(|e| to_storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e))
    }

    /// Not waited for: openraft's core runs no other command until `purge` returns, and the
    /// purge record's flush plus the deletion of whole segments (tens of ms on a busy disk)
    /// would hold every request back that long, on every node at once after a snapshot. The
    /// index forgets the entries at once; the record goes out with the next group commit. A
    /// purge lost in a crash only leaves entries the snapshot already covers (purged again
    /// after the next snapshot); a failed write fails the log, and with it the next append.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log up to this entry");
        self.wal
            .purge(
                log_id,
                Box::new(move |r| {
                    if let Err(e) = r {
                        tracing::error!(error = %e, %log_id, "raft log purge failed");
                    }
                }),
            )
            .map_err(|e| to_storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e.into()))
    }
}
