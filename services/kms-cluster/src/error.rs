//! [`ClusterError`]: what can go wrong inside this crate's storage layer.
//!
//! Internal functions return this typed error; it is turned into openraft's
//! [`StorageError`](openraft::StorageError) (with the right `ErrorSubject`/`ErrorVerb`) only at
//! the `RaftLogStorage`/`RaftStateMachine` trait boundary, in `store::to_storage_error`.

/// Why a storage operation of the cluster failed.
///
/// Structured so that the daemon can tell a disk problem ([`ClusterError::Sled`]) from a data
/// directory that holds something this build cannot read ([`ClusterError::Decode`],
/// [`ClusterError::BadLogKey`], ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// sled returned an error (I/O, lock held by another process, ...).
    #[error("sled storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A value could not be serialized to JSON.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded (e.g. "log entry", "vote").
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be decoded.
    #[error("cannot decode {what} stored under {tree}/{key}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The sled tree holding it.
        tree: &'static str,
        /// The key (lossy UTF-8, or the log index).
        key: String,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A key of the log tree is not an 8-byte big-endian index.
    #[error("log key {key:02x?} is not an 8-byte big-endian index")]
    BadLogKey {
        /// The raw key.
        key: Vec<u8>,
    },
    /// A log entry is stored under another index than its own log id says.
    #[error("log entry stored at index {key_index} has log id index {entry_index}")]
    LogIndexMismatch {
        /// Index from the sled key.
        key_index: u64,
        /// Index from the decoded entry.
        entry_index: u64,
    },
    /// The stored snapshot has only one of its two parts (meta and data).
    #[error("stored snapshot is incomplete: meta present = {meta}, data present = {data}")]
    IncompleteSnapshot {
        /// Whether the meta key exists.
        meta: bool,
        /// Whether the data key exists.
        data: bool,
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
    /// A blocking storage task panicked or was cancelled.
    #[error("blocking storage task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
