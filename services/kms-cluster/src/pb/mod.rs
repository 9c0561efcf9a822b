//! The protobuf messages and tonic stubs generated from `proto/cluster.proto` (package
//! `kmscluster.v1`) by `build.rs`, and the one place that converts between them and the domain
//! types (openraft's, [`kms_state`]'s, [`NodeStatus`](crate::NodeStatus)).
//!
//! Direction and failure: domain → protobuf is infallible (`From<&Domain>` for the message);
//! protobuf → domain is `TryFrom<Message>` with a [`PbError`] naming the missing or invalid
//! field, because every message may come from the network or from disk. Nothing here panics on
//! input.
//!
//! Module map:
//! - `error`: [`PbError`] (decoding failures) and [`WireError`] (the typed cause of a failed
//!   call, carried as the `ErrorDetail` of a gRPC status).
//! - `raft`: log ids, votes, log entries and the three openraft RPCs.
//! - `membership`: memberships, stored memberships, snapshot meta.
//! - `commands`: KMS commands, command batches and their results.
//! - `status`: [`NodeStatus`](crate::NodeStatus) ↔ `StatusResponse`.
//! - `cluster`: the plain requests of the `Cluster` service (members, add learner,
//!   take leadership, status).
//!
//! For storage (the log store, the outbox): [`encode_entry`] / [`decode_entry`] and
//! [`encode_commands`] / [`decode_commands`], each carrying [`SCHEMA_VERSION`].
//!
//! The outbound side of the services lives in [`crate::network`], the inbound side in
//! [`crate::grpc`].

mod cluster;
mod commands;
mod error;
mod identity;
mod membership;
mod raft;
mod status;

pub use cluster::{
    add_learner_from_pb, add_learner_request, check_status_request, members_from_pb,
    members_request, node_from_pb, node_request, status_request, TakeLeadership,
};
pub use commands::{decode_commands, encode_commands, forward_commands, forward_request};
pub use error::{
    fatal_of, raft_error_from_wire, raft_error_to_wire, FatalCause, PbError, WireApiError,
    WireError,
};
pub use identity::{
    identity_from_pb, identity_request, register_from_pb, register_request, IdentityAnswer,
    MemberRoleOf, Rejoin,
};
pub use raft::{decode_entry, encode_entry};

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("kmscluster.v1");
}

pub use generated::*;

/// The schema version this build writes (`schema_version` of `LogEntry`, `StoredCommands` and
/// every RPC request); see the "Schema version" section of `proto/cluster.proto`.
pub const SCHEMA_VERSION: u32 = 1;

/// The oldest schema version this build still reads.
pub const MIN_SCHEMA_VERSION: u32 = 1;

/// `Ok` when `got` is a schema version this build reads, else [`PbError::SchemaVersion`].
pub fn check_schema_version(got: u32) -> Result<(), PbError> {
    if (MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&got) {
        Ok(())
    } else {
        Err(PbError::SchemaVersion {
            got,
            min: MIN_SCHEMA_VERSION,
            max: SCHEMA_VERSION,
        })
    }
}

/// A required message field: `Some` or [`PbError::Missing`] naming it.
pub(crate) fn required<T>(value: Option<T>, field: &'static str) -> Result<T, PbError> {
    value.ok_or(PbError::Missing { field })
}
