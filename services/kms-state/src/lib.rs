//! Deterministic state of a KMS host (client counts, statistics, inventory, ePIDs) and its sled
//! persistence.
//!
//! This crate is the boundary that the cluster replicates: every state change is a [`Command`]
//! carrying its own time, applied by [`HostState::apply`] deterministically and idempotently (by
//! request id). [`HostState`] serializes as a whole (a Raft snapshot). [`SledStore`] keeps it on
//! disk, writing each batch of commands atomically. The API is synchronous; the daemon calls it
//! from a dedicated thread.
//!
//! Module map (one job each):
//! - `command`: [`Command`], [`Outcome`], [`CommandResult`]: what can change and what it returns.
//! - `stats`: [`Stats`]: the `slmgr /dlv` request counters.
//! - `window`: the 30-day CMID window of a count group and its [`ClientRecord`] inventory.
//! - `dedup`: request-id memory that makes activations idempotent.
//! - `epid`: [`EpidRecord`], the ePID per count group.
//! - `changes`: [`Changes`], the keys a command touched.
//! - `state`: [`HostState`] and the order in which a command is applied.
//! - `keys`: the sled key layout (documented there).
//! - `store`: [`SledStore`], loading and atomic batch writes.
//! - `error`: [`StateError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod changes;
mod command;
mod dedup;
mod epid;
mod error;
mod keys;
mod state;
mod stats;
mod store;
mod window;

pub use changes::{Changes, ClientKey};
pub use command::{Activation, ActivationResult, Command, CommandResult, Outcome};
pub use dedup::{DedupEntry, DEFAULT_DEDUP_RETENTION_MS};
pub use epid::EpidRecord;
pub use error::StateError;
pub use keys::SCHEMA_VERSION;
pub use state::{HostState, StateConfig};
pub use stats::{LicenseCounts, Stats};
pub use store::{SledStore, StoreOptions, DEFAULT_CACHE_CAPACITY};
pub use window::{ClientFilter, ClientRecord, CLIENT_WINDOW_MS};
