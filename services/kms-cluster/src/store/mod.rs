//! Where the Raft data lives: the files under a node's data directory, opened by
//! [`open_stores`].
//!
//! | path | what | module |
//! |---|---|---|
//! | `raft/log/<seq>.wal` | log entries, vote, committed pointer (segmented write-ahead log) | `wal`, `log` |
//! | `raft/log/LOCK` | held (flock) while a process has the log open | `wal` |
//! | `raft/snapshots/current.snap` | the current snapshot (meta + state) | `snapshot`, `sm` |
//!
//! Nothing here is sled: see docs/design/storage.md for why. Also owns the helpers both stores
//! use: the mapping of [`ClusterError`] into openraft's `StorageError` at the trait boundary, and
//! running blocking file work off the async workers.

mod codec;
pub(crate) mod frame;
mod log;
mod sm;
mod snapshot;
pub mod space;
pub(crate) mod wal;

pub use log::LogStore;
pub use sm::{FileSnapshotBuilder, StateHandle, StateMachine};
pub use snapshot::SnapshotFiles;
pub use wal::{dir_size, Wal, WalError, WalOptions};

use std::path::Path;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};

use crate::error::ClusterError;
use crate::{NodeId, StorageError};

/// Subdirectory of the data directory holding the log segments.
pub const LOG_DIR: &str = "raft/log";
/// Subdirectory of the data directory holding the snapshots.
pub const SNAPSHOT_DIR: &str = "raft/snapshots";

/// Opens the Raft log store and the state machine under `data_dir` (creating what is missing).
///
/// The state machine starts from the current snapshot, if any (its `last_applied` is the
/// snapshot's); openraft then re-applies the committed log entries after it. A node without a
/// snapshot starts from an empty [`kms_state::HostState`] with the default
/// [`kms_state::StateConfig`]: every replica must start from the same state, so a non-default
/// configuration has to reach the replicas through the log, not through local settings.
///
/// Blocking: it replays the log and reads the snapshot. Call it at startup (or from
/// `spawn_blocking`).
pub fn open_stores(
    data_dir: &Path,
    options: WalOptions,
) -> Result<(LogStore, StateMachine), ClusterError> {
    let wal = Wal::open(&data_dir.join(LOG_DIR), options)?;
    let state_machine = StateMachine::open(&data_dir.join(SNAPSHOT_DIR))?;
    Ok((LogStore::new(wal), state_machine))
}

/// Maps this crate's error into openraft's, at the storage-trait boundary.
pub(crate) fn to_storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    err: &ClusterError,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::new(err)).into()
}

/// Runs synchronous file work on tokio's blocking pool, so that reads, large writes and fsyncs
/// do not stall the async workers.
pub(crate) async fn blocking<T, F>(job: F) -> Result<T, ClusterError>
where
    F: FnOnce() -> Result<T, ClusterError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(job).await?
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
            let (mut log, mut sm) = open_stores(&path, WalOptions::default()).unwrap();
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

        let (mut log, mut sm) = open_stores(&path, WalOptions::default()).unwrap();
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
