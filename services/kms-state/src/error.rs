//! Error type of the crate: what can go wrong when the state is persisted or loaded.
//!
//! Applying a [`Command`](crate::Command) to a [`HostState`](crate::HostState) never fails
//! (it is pure and total); only the sled store ([`SledStore`](crate::SledStore)) returns errors.

/// Why a store operation failed.
///
/// Structured so that callers (the daemon, `kmsctl`) can tell a disk problem from a corrupt or
/// incompatible data directory and report it clearly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The sled database returned an error (I/O, lock held by another process, ...).
    #[error("sled storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored key or value could not be decoded, or disagrees with its key.
    #[error("corrupt state entry {key:?}: {reason}")]
    Corrupt {
        /// The sled key (lossy UTF-8) of the bad entry.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The data directory was written by a build with a different on-disk layout.
    #[error("state store has schema version {found}, this build expects {expected}")]
    SchemaVersion {
        /// Version found in `meta/schema_version`.
        found: u32,
        /// Version this build reads and writes ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)).
        expected: u32,
    },
    /// A value could not be serialized (should not happen for this crate's types).
    #[error("cannot encode value for key {key:?}: {source}")]
    Encode {
        /// The sled key being written.
        key: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A previous write failed and the in-memory state could not be reloaded from disk, so memory
    /// and disk may disagree; the store refuses further use. Reopen it.
    #[error("state store is unusable after a failed write; reopen it")]
    Poisoned,
}
