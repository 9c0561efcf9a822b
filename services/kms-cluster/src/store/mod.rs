//! Where the Raft data lives: three trees of ONE sled database, opened by [`open_stores`].
//!
//! | tree | key | value |
//! |---|---|---|
//! | [`LOG_TREE`] (`raft_log`) | log index, 8 bytes big-endian (so sled's order is log order) | [`Entry`](crate::Entry), JSON |
//! | [`META_TREE`] (`raft_meta`) | `vote`, `committed`, `last_purged_log_id` | [`Vote`](crate::Vote) / [`LogId`](crate::LogId), JSON |
//! | [`SNAPSHOT_TREE`] (`raft_snapshot`) | `meta`, `data` | [`SnapshotMeta`](crate::SnapshotMeta) JSON / the snapshot bytes |
//!
//! Only one process may open a sled directory, so the log store and the state machine share the
//! `sled::Db` the caller opened; each Raft node needs its own directory.
//!
//! Also owns the small helpers both stores use: JSON encoding with typed errors and the mapping
//! of [`ClusterError`] into openraft's `StorageError` at the trait boundary.

mod log;
mod sm;

pub use log::SledLogStore;
pub use sm::{SledSnapshotBuilder, StateHandle, StateMachine};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClusterError;
use crate::{NodeId, StorageError};

/// Name of the sled tree holding the log entries.
pub const LOG_TREE: &str = "raft_log";
/// Name of the sled tree holding vote, committed log id and last purged log id.
pub const META_TREE: &str = "raft_meta";
/// Name of the sled tree holding the current snapshot (meta and data).
pub const SNAPSHOT_TREE: &str = "raft_snapshot";

/// Opens the Raft log store and the state machine over `db` (creating the trees on first use).
///
/// The state machine starts from the snapshot stored in [`SNAPSHOT_TREE`], if any (its
/// `last_applied` is the snapshot's); openraft then re-applies the committed log entries after it.
/// A node without a snapshot starts from an empty [`kms_state::HostState`] with the default
/// [`kms_state::StateConfig`]: every replica must start from the same state, so a non-default
/// configuration has to reach the replicas through the log, not through local settings.
///
/// Synchronous: it reads and decodes the snapshot. Call it at startup (or from
/// `spawn_blocking`).
pub fn open_stores(db: &sled::Db) -> Result<(SledLogStore, StateMachine), ClusterError> {
    let log = db.open_tree(LOG_TREE)?;
    let meta = db.open_tree(META_TREE)?;
    let snapshot = db.open_tree(SNAPSHOT_TREE)?;
    let log_store = SledLogStore::new(log, meta);
    let state_machine = StateMachine::open(snapshot)?;
    Ok((log_store, state_machine))
}

/// JSON-encodes a value, naming it in the error.
pub(crate) fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, ClusterError> {
    serde_json::to_vec(value).map_err(|source| ClusterError::Encode { what, source })
}

/// Decodes a JSON value read from `tree` under `key`.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, ClusterError> {
    serde_json::from_slice(bytes).map_err(|source| ClusterError::Decode {
        what,
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// Maps this crate's error into openraft's, at the storage-trait boundary.
pub(crate) fn to_storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    err: &ClusterError,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}

/// Runs a synchronous sled job on tokio's blocking pool, so that scans, large writes and
/// fsyncs do not stall the async workers.
pub(crate) async fn blocking<T, F>(job: F) -> Result<T, ClusterError>
where
    F: FnOnce() -> Result<T, ClusterError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(job).await?
}

/// Opens the sled database at `path` again in a test, after an earlier handle was dropped:
/// sled's background flusher can hold the directory lock a moment longer, so a reopen
/// retries for up to five seconds while the lock is taken.
#[cfg(test)]
pub(crate) fn reopen_for_test(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return db,
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::{CommittedLeaderId, RaftLogReader, RaftSnapshotBuilder};

    use crate::{ClusterRequest, Entry, LogId, Vote};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// Everything a restarted node needs comes back from disk: vote, committed, entries, the
    /// purge pointer and the snapshot (as the state machine's starting point).
    #[tokio::test]
    async fn reopen_restores_log_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        let entries: Vec<Entry> = (1..=5)
            .map(|i| Entry {
                log_id: log_id(2, i),
                payload: openraft::EntryPayload::Normal(ClusterRequest::default()),
            })
            .collect();
        let snapshot_meta = {
            let db = sled::Config::new().path(&path).open().unwrap();
            let (mut log, mut sm) = open_stores(&db).unwrap();
            log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
            log.blocking_append(entries.clone()).await.unwrap();
            log.save_committed(Some(log_id(2, 4))).await.unwrap();
            sm.apply(entries[..3].to_vec()).await.unwrap();
            let snap = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            log.purge(log_id(2, 2)).await.unwrap();
            snap.meta
        };

        let db = super::reopen_for_test(&path);
        let (mut log, mut sm) = open_stores(&db).unwrap();
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(2, 1))
        );
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(2, 4)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 2)));
        assert_eq!(state.last_log_id, Some(log_id(2, 5)));
        let got = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(got, entries[2..].to_vec());

        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(2, 3)));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot_meta);
    }
}
