//! Offline recovery of a wedged membership (`kmsd --rollback-membership`): drops the
//! uncommitted membership change at the end of a stopped single voter's log.
//!
//! When a single-voter cluster promotes a node that never answers, openraft's joint
//! configuration needs that node for every commit, and a restart comes back the same (the
//! uncommitted joint configuration is the last one in the log, so even an election needs the
//! absent node). The way out, with the node stopped: cut the log from the first membership
//! entry after the committed index. This is safe only when the last committed configuration has
//! this node as its only voter: nothing after the joint entry could commit without the new
//! voter, and the new voter never answered. Anything else is refused with what to do instead.
//! Entries cut off were never committed, so never acknowledged through Raft; activations
//! answered meanwhile from the serve-local outbox stay in the outbox and are replayed once the
//! node leads again.

use std::collections::BTreeSet;
use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::EntryPayload;

use crate::error::ClusterError;
use crate::membership::{state_of, MembershipState};
use crate::store::{open_stores, WalOptions};
use crate::{LogId, NodeId, StoredMembership};

/// Why the rollback was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The store could not be opened or read (is kmsd still running on it?).
    #[error("cannot open the Raft store under {dir}: {source} (is kmsd still running on it?)")]
    Store {
        /// The data directory.
        dir: String,
        /// The cause.
        source: ClusterError,
    },
    /// An openraft storage call failed.
    #[error("Raft store: {0}")]
    Storage(String),
    /// The log holds no uncommitted membership change.
    #[error(
        "nothing to roll back: the log holds no uncommitted membership change ({0}, committed)"
    )]
    NothingPending(String),
    /// The last committed configuration is not this node alone.
    #[error(
        "refusing to roll back: the last committed configuration has voters {voters:?}, not \
         this node ({me}) alone; entries after it may have been committed by the others. Start \
         the missing node at its address instead, or ask for help (runbook: \"Joint \
         configuration\")"
    )]
    NotSoleVoter {
        /// This node.
        me: NodeId,
        /// The voters of the last committed configuration.
        voters: BTreeSet<NodeId>,
    },
}

/// What a rollback does (or did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// The committed index the log records.
    pub committed: Option<u64>,
    /// The membership in effect now (the uncommitted one).
    pub current: MembershipState,
    /// The voters of the last committed configuration (the state after the rollback).
    pub committed_voters: BTreeSet<NodeId>,
    /// The first index cut off.
    pub truncate_from: u64,
    /// The last index in the log before the cut.
    pub last_index: u64,
}

impl RollbackPlan {
    /// How many entries the rollback drops.
    pub fn dropped(&self) -> u64 {
        self.last_index + 1 - self.truncate_from
    }
}

/// Works out the rollback for node `me` whose (stopped) data directory is `data_dir`; with
/// `apply`, also cuts the log. Blocking file work: call it with kmsd stopped, before any Raft
/// starts on this directory.
pub async fn rollback_membership(
    data_dir: &Path,
    me: NodeId,
    apply: bool,
) -> Result<RollbackPlan, RecoverError> {
    let (mut log, mut sm) =
        open_stores(data_dir, WalOptions::default()).map_err(|source| RecoverError::Store {
            dir: data_dir.display().to_string(),
            source,
        })?;
    let storage = |e: crate::StorageError| RecoverError::Storage(e.to_string());
    let (applied, applied_membership) = sm.applied_state().await.map_err(storage)?;
    let committed = log.read_committed().await.map_err(storage)?;
    let state = log.get_log_state().await.map_err(storage)?;
    let committed_index = committed.max(applied).map(|l| l.index);
    let first = state.last_purged_log_id.map_or(0, |l| l.index + 1);
    let last = state.last_log_id.map(|l| l.index);

    let mut last_committed: StoredMembership = applied_membership;
    let mut uncommitted: Vec<(LogId, StoredMembership)> = Vec::new();
    if let Some(last) = last {
        // Read in slices: a log between two purges is at most a few thousand entries.
        let mut start = first;
        while start <= last {
            let end = (start + 1024).min(last + 1);
            for entry in log.try_get_log_entries(start..end).await.map_err(storage)? {
                if let EntryPayload::Membership(m) = entry.payload {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    if Some(entry.log_id.index) <= committed_index {
                        last_committed = stored;
                    } else {
                        uncommitted.push((entry.log_id, stored));
                    }
                }
            }
            start = end;
        }
    }
    let Some((cut, newest)) = uncommitted
        .first()
        .map(|(id, _)| *id)
        .zip(uncommitted.last().map(|(_, m)| m.clone()))
    else {
        let voters: Vec<String> = last_committed
            .membership()
            .voter_ids()
            .map(|v| v.to_string())
            .collect();
        return Err(RecoverError::NothingPending(format!(
            "voters {{{}}}",
            voters.join(",")
        )));
    };
    let committed_configs = last_committed.membership().get_joint_config().clone();
    let committed_voters: BTreeSet<NodeId> = last_committed.membership().voter_ids().collect();
    if committed_configs.len() != 1 || committed_voters != BTreeSet::from([me]) {
        return Err(RecoverError::NotSoleVoter {
            me,
            voters: committed_voters,
        });
    }
    let plan = RollbackPlan {
        committed: committed_index,
        current: state_of(&newest, committed),
        committed_voters,
        truncate_from: cut.index,
        last_index: last.unwrap_or(cut.index),
    };
    if apply {
        // Durable when it returns (the log's truncate waits for its fsync).
        log.truncate(cut).await.map_err(storage)?;
    }
    Ok(plan)
}
