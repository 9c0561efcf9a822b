//! Raft replication of the KMS host state ([`kms_state::HostState`]) with openraft 0.9.
//!
//! Every node keeps the whole host state in memory and agrees with its peers on one log of
//! command batches; applying the same log gives every replica the same state because
//! [`kms_state::HostState::apply`] is deterministic (the time is inside each command).
//!
//! This crate declares the openraft type configuration once ([`TypeConfig`]) and the aliases
//! everything else uses; nothing outside it names openraft's generic types. For now it holds the
//! storage layer only: networking (tonic) and node wiring come later.
//!
//! Module map (one job each):
//! - `types`: [`ClusterRequest`] / [`ClusterResponse`], the payload of a log entry and its result.
//! - `store`: [`open_stores`], the layout of the Raft data under the data directory.
//!   - `store::wal`: [`Wal`], the segmented write-ahead log (entries, vote, committed pointer)
//!     with its writer thread (group commit, one fdatasync per group).
//!   - `store::log`: [`LogStore`], openraft's log storage over the WAL (durable before
//!     acknowledged).
//!   - `store::snapshot`: [`SnapshotFiles`], snapshot files made current by an atomic rename.
//!   - `store::sm`: [`StateMachine`], the in-memory [`kms_state::HostState`] fed by committed
//!     entries, its snapshots ([`FileSnapshotBuilder`]) and the read handle [`StateHandle`].
//! - [`pb`]: the wire schema (`proto/cluster.proto`) and every conversion between its messages
//!   and the domain types, with the schema version and the typed wire errors.
//! - `status`: [`NodeStatus`], a node's Raft view as the `Cluster.Status` RPC reports it.
//! - [`trace_ctx`]: trace context propagation over gRPC metadata.
//! - [`handover`]: leadership hand-over when a leader stops gracefully.
//! - [`identity`]: the data directory's node id and incarnation.
//! - [`node`]: a running cluster member (start, group commit, forwarding, serve-local outbox,
//!   quorum watch, bootstrap, status), one module per job.
//! - [`events`]: membership events (operator RPCs, bootstrap) for the daemon's audit log.
//! - `error`: [`ClusterError`], this crate's typed errors (mapped to openraft's `StorageError` at
//!   the trait boundary).

// `deny`, not `forbid`: store/wal/direct.rs (Linux AIO system calls) is the one module that
// allows it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod events;
pub mod grpc;
pub mod handover;
pub mod identity;
pub mod membership;
pub mod network;
pub mod node;
pub mod outbox;
pub mod pb;
pub mod recover;
mod status;
mod store;
pub mod trace_ctx;
mod types;

pub use error::ClusterError;
pub use status::NodeStatus;
pub use store::{
    dir_size, open_stores, space, FileSnapshotBuilder, LogStore, SnapshotFiles, StateHandle,
    StateMachine, Wal, WalError, WalOptions, LOG_DIR, SNAPSHOT_DIR,
};
pub use types::{ClusterRequest, ClusterResponse, Registration};

openraft::declare_raft_types!(
    /// The openraft type configuration of the KMS cluster: u64 node ids, [`openraft::BasicNode`]
    /// (an address) per node, batches of [`kms_state::Command`] as log payload and snapshots
    /// as files.
    pub TypeConfig:
        D = ClusterRequest,
        R = ClusterResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Identifier of a Raft node (unique within the cluster, never reused).
pub type NodeId = u64;
/// What the cluster knows about a node: its address.
pub type Node = openraft::BasicNode;
/// A running Raft node of this cluster.
pub type Raft = openraft::Raft<TypeConfig>;
/// The state machine handed to [`Raft`].
pub type StateMachineStore = StateMachine;
/// Position of an entry in the log (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A node's vote (term, candidate, committed flag).
pub type Vote = openraft::Vote<NodeId>;
/// One Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// The payload of a [`Entry`].
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// A cluster membership configuration.
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership together with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Which log position and membership a snapshot covers.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot: meta plus its bytes.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// A snapshot's bytes: its file (see `store::snapshot`), streamed to followers in chunks.
pub type SnapshotData = tokio::fs::File;
/// openraft's storage error, as returned across the storage traits.
pub type StorageError = openraft::StorageError<NodeId>;
