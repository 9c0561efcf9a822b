//! Deterministic state of a KMS host (client counts, statistics, inventory, ePIDs) and its
//! compact snapshot format.
//!
//! This crate is the boundary that the cluster replicates: every state change is a [`Command`]
//! carrying its own time, applied by [`HostState::apply`] deterministically and idempotently (by
//! request id). The state is sized for millions of clients: compact records, shared descriptive
//! fields, and persistent maps that make [`HostState`] clones O(1), so a snapshot is taken
//! under a short lock and written by [`HostState::write_snapshot`] on another thread while
//! commands keep applying. The API is synchronous and does no I/O besides the streams handed
//! to the snapshot codec.
//!
//! Module map (one job each):
//! - `bulk`: the insert order that loads a snapshot's sorted keys into full B+tree leaves.
//! - `command`: [`Command`], [`Outcome`], [`CommandResult`]: what can change and what it returns.
//! - `stats`: [`Stats`]: the `slmgr /dlv` request counters.
//! - `window`: the 30-day CMID window of a count group and its inventory kept beyond it (the
//!   retention), read through [`ClientRecord`] views.
//! - [`lifecycle`]: where a machine is in its 180-day activation (derived from times) and the
//!   per-group summary behind the lifecycle metrics.
//! - `compact`: the compact pieces of an inventory entry (inline machine names, shared
//!   profiles) and their interning.
//! - `dedup`: request-id memory that makes activations idempotent.
//! - `epid`: [`EpidRecord`], the ePID per count group.
//! - `identity`: [`HostIdentity`], the hardware id and OS build all ePIDs share.
//! - `state`: [`HostState`] and the order in which a command is applied.
//! - `snapshot`: the streaming snapshot codec over the records of `proto/state.proto`: the
//!   format (`snapshot`), [`HostState::write_snapshot`] (`snapshot::write`) and
//!   [`HostState::read_snapshot`] with its validation (`snapshot::read`).
//! - `error`: [`StateError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bulk;
mod command;
mod compact;
mod dedup;
mod epid;
mod error;
mod identity;
pub mod lifecycle;
mod snapshot;
mod state;
mod stats;
mod window;

pub use command::{Activation, ActivationResult, Command, CommandResult, Outcome};
pub use dedup::{DedupEntry, DEFAULT_DEDUP_RETENTION_MS};
pub use epid::EpidRecord;
pub use error::StateError;
pub use identity::HostIdentity;
pub use snapshot::{MAX_RECORD_LEN, SNAPSHOT_MAGIC, SNAPSHOT_SCHEMA_VERSION};
pub use state::{HostState, StateConfig, UNKNOWN_GROUP};
pub use stats::{LicenseCounts, Stats};
pub use window::{
    ClientFilter, ClientRecord, Failure, LifecycleFilter, PreviousNames, CLIENT_WINDOW_MS,
    DEFAULT_INVENTORY_RETENTION_MS, NAME_HISTORY,
};
