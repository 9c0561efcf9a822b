//! [`ClusterError`]: what can go wrong inside this crate's storage layer.
//!
//! Internal functions return this typed error; it is turned into openraft's
//! [`StorageError`](openraft::StorageError) (with the right `ErrorSubject`/`ErrorVerb`) only at
//! the `RaftLogStorage`/`RaftStateMachine` trait boundary, in `store::to_storage_error`.

use std::path::PathBuf;

use crate::store::WalError;

/// Why a storage operation of the cluster failed.
///
/// Structured so that the daemon can tell a disk problem ([`ClusterError::File`],
/// [`ClusterError::Io`]) from a data directory that holds something this build cannot read
/// ([`ClusterError::BadSnapshot`], a corrupt log).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The write-ahead log failed or is damaged.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error without a path (a write reported by the writer thread).
    #[error("storage I/O: {0}")]
    Io(#[source] std::io::Error),
    /// A value could not be serialized.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded (e.g. "snapshot meta").
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A snapshot file is damaged or not ours.
    #[error("snapshot {path}: {reason}")]
    BadSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Snapshot data disagree with the snapshot's meta (last applied log id or membership).
    #[error("snapshot meta says {field} = {meta}, its data says {data}")]
    SnapshotMismatch {
        /// Which field differs ("last_log_id" or "last_membership").
        field: &'static str,
        /// The value in the meta (displayed).
        meta: String,
        /// The value in the data (displayed).
        data: String,
    },
    /// The host state could not be written to a snapshot.
    #[error("snapshot state: {0}")]
    State(#[from] kms_state::StateError),
    /// A blocking storage task panicked or was cancelled.
    #[error("blocking storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
