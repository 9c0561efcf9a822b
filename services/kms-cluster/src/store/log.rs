//! [`SledLogStore`]: the Raft log, the vote and the committed pointer in sled.
//!
//! Owns the log tree (entries keyed by big-endian index) and the meta tree (vote, committed,
//! last purged log id), and the durability rule openraft relies on: an append is acknowledged
//! through [`LogFlushed`] only after sled has fsynced it, and a vote is fsynced before
//! `save_vote` returns. sled writes are cheap in-memory operations; scans, multi-key deletes and
//! fsyncs run off the async workers (`flush_async` or the blocking pool).

use std::fmt;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{blocking, decode, encode, to_storage_error, LOG_TREE, META_TREE};
use crate::error::ClusterError;
use crate::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";

/// The Raft log storage of one node, over two sled trees of the node's database.
///
/// Cloning is cheap (sled trees are reference counted); a clone is also the log reader openraft
/// hands to replication tasks. Writes are serialized by openraft (`&mut self`), reads may run
/// concurrently from clones.
///
/// `committed` is written without its own fsync: it is optional for openraft (a lost value only
/// means fewer entries are re-applied at startup), and sled's log is sequential, so the next
/// append or vote fsync makes it durable too.
#[derive(Clone)]
pub struct SledLogStore {
    log: sled::Tree,
    meta: sled::Tree,
}

impl Debug for SledLogStore {
    // sled's own `Debug for Tree` walks the whole tree; print only sizes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledLogStore")
            .field("entries", &self.log.len())
            .finish_non_exhaustive()
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, ClusterError> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| ClusterError::BadLogKey { key: key.to_vec() })
}

/// Decodes one stored entry and checks it sits under its own index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, ClusterError> {
    let key_index = key_index(key)?;
    let entry: Entry = decode(
        "log entry",
        LOG_TREE,
        &key_index.to_string().into_bytes(),
        value,
    )?;
    if entry.log_id.index != key_index {
        return Err(ClusterError::LogIndexMismatch {
            key_index,
            entry_index: entry.log_id.index,
        });
    }
    Ok(entry)
}

impl SledLogStore {
    pub(crate) fn new(log: sled::Tree, meta: sled::Tree) -> Self {
        SledLogStore { log, meta }
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &'static [u8],
        what: &'static str,
    ) -> Result<Option<T>, ClusterError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => decode(what, META_TREE, key, &v).map(Some),
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, ClusterError> {
        self.read_meta(KEY_LAST_PURGED, "last purged log id")
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, ClusterError> {
        let last_purged_log_id = self.last_purged()?;
        let last_entry = match self.log.last()? {
            None => None,
            Some((k, v)) => Some(decode_entry(&k, &v)?.log_id),
        };
        // With no entry left (everything purged), the last log id is the purged one.
        let last_log_id = last_entry.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    fn read_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, ClusterError> {
        let range = (start.map(index_key), end.map(index_key));
        self.log
            .range(range)
            .map(|item| {
                let (k, v) = item?;
                decode_entry(&k, &v)
            })
            .collect()
    }

    /// Writes the entries in one atomic sled batch (visible at once, durable after a flush).
    fn write_entries<I>(&self, entries: I) -> Result<(), ClusterError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), encode("log entry", &entry)?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        what: &'static str,
        value: &T,
    ) -> Result<(), ClusterError> {
        self.meta.insert(key, encode(what, value)?)?;
        Ok(())
    }

    /// fsyncs everything written so far (all trees share sled's log) on sled's own thread pool.
    async fn flush(&self) -> Result<(), ClusterError> {
        self.log.flush_async().await?;
        Ok(())
    }

    /// Deletes entries with index >= `from` and fsyncs.
    fn truncate_blocking(&self, from: u64) -> Result<(), ClusterError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(from)..) {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.log.apply_batch(batch)?;
        self.log.flush()?;
        Ok(())
    }

    /// Records `upto` as purged and deletes entries with index <= `upto.index`, in one
    /// transaction over both trees, then fsyncs.
    fn purge_blocking(&self, upto: LogId) -> Result<(), ClusterError> {
        let keys = self
            .log
            .range(..=index_key(upto.index))
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        let purged = encode("last purged log id", &upto)?;
        (&self.log, &self.meta)
            .transaction(|(log, meta)| {
                for k in &keys {
                    log.remove(k)?;
                }
                meta.insert(KEY_LAST_PURGED, purged.as_slice())?;
                Ok::<(), ConflictableTransactionError<std::convert::Infallible>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => ClusterError::Sled(e),
                TransactionError::Abort(never) => match never {},
            })?;
        self.log.flush()?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range.start_bound().cloned(), range.end_bound().cloned())
            .map_err(|e| to_storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = SledLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state()
            .map_err(|e| to_storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let res = match self.write_meta(KEY_VOTE, "vote", vote) {
            Ok(()) => self.flush().await,
            Err(e) => Err(e),
        };
        res.map_err(|e| to_storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE, "vote")
            .map_err(|e| to_storage_error(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(KEY_COMMITTED, "committed log id", &committed)
            .map_err(|e| to_storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        // Stored as JSON `Option<LogId>`: `null` and a missing key both mean "none".
        self.read_meta::<Option<LogId>>(KEY_COMMITTED, "committed log id")
            .map(Option::flatten)
            .map_err(|e| to_storage_error(ErrorSubject::Store, ErrorVerb::Read, &e))
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
        // Visible to readers as soon as the batch is applied; acknowledged once fsynced.
        let res = match self.write_entries(entries) {
            Ok(()) => self.flush().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            // Returning the error makes openraft stop the node; the callback is dropped unsent.
            Err(e) => Err(to_storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e)),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating raft log from this entry on");
        let store = self.clone();
        blocking(move || store.truncate_blocking(log_id.index))
            .await
            .map_err(|e| to_storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging raft log up to this entry");
        let store = self.clone();
        blocking(move || store.purge_blocking(log_id))
            .await
            .map_err(|e| to_storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    use crate::ClusterRequest;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 7), index)
    }

    fn store() -> (tempfile::TempDir, sled::Db, SledLogStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log = SledLogStore::new(
            db.open_tree(LOG_TREE).unwrap(),
            db.open_tree(META_TREE).unwrap(),
        );
        (dir, db, log)
    }

    #[test]
    fn keys_sort_like_indexes() {
        let mut keys: Vec<[u8; 8]> = [256u64, 1, u64::MAX, 0, 255].map(index_key).to_vec();
        keys.sort();
        let back: Vec<u64> = keys.iter().map(|k| key_index(k).unwrap()).collect();
        assert_eq!(back, vec![0, 1, 255, 256, u64::MAX]);
        assert!(matches!(
            key_index(b"vote"),
            Err(ClusterError::BadLogKey { .. })
        ));
    }

    #[tokio::test]
    async fn committed_none_roundtrips() {
        let (_dir, _db, mut log) = store();
        assert_eq!(log.read_committed().await.unwrap(), None);
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
        log.save_committed(None).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
    }

    #[tokio::test]
    async fn entry_under_wrong_key_is_reported() {
        let (_dir, _db, mut log) = store();
        let entry = Entry {
            log_id: log_id(1, 5),
            payload: EntryPayload::<TypeConfig>::Normal(ClusterRequest::default()),
        };
        log.blocking_append([entry.clone()]).await.unwrap();
        // Corrupt: the same entry stored under index 6.
        log.log
            .insert(index_key(6), encode("log entry", &entry).unwrap())
            .unwrap();
        assert!(log.try_get_log_entries(5..6).await.is_ok());
        assert!(log.try_get_log_entries(5..7).await.is_err());
        assert!(matches!(
            log.log_state(),
            Err(ClusterError::LogIndexMismatch {
                key_index: 6,
                entry_index: 5
            })
        ));
    }
}
