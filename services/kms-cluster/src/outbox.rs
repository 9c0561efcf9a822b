//! The durable local outbox of serve-local mode: commands a node answered from its own
//! applied state while no quorum could commit them, kept in a sled tree (keyed by request
//! id) until a leader has applied them. Replays reuse the request ids, so a command
//! replayed twice (crash between commit and removal) still counts once.

use kms_state::{Command, CommandResult, HostState};
use std::time::Duration;

/// The sled tree holding the outbox.
pub const OUTBOX_TREE: &str = "outbox";

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// sled failed.
    #[error("outbox storage: {0}")]
    Sled(#[from] sled::Error),
    /// A stored command does not decode.
    #[error("outbox entry {key} does not decode: {source}")]
    Decode {
        /// Hex key.
        key: String,
        /// Cause.
        source: serde_json::Error,
    },
}

/// Handle to the outbox tree.
#[derive(Debug, Clone)]
pub struct Outbox {
    tree: sled::Tree,
}

fn key_of(cmd: &Command) -> Vec<u8> {
    match cmd {
        Command::Activation(a) => a.request_id.as_bytes().to_vec(),
        Command::SetEpid { count_group, .. } => format!("epid/{count_group}").into_bytes(),
    }
}

impl Outbox {
    /// Opens the outbox tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, OutboxError> {
        Ok(Self {
            tree: db.open_tree(OUTBOX_TREE)?,
        })
    }

    /// Appends commands durably (fsync) before the caller answers its clients.
    pub async fn push(&self, cmds: &[Command]) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for c in cmds {
            let v = serde_json::to_vec(c).map_err(|source| OutboxError::Decode {
                key: String::from_utf8_lossy(&key_of(c)).into_owned(),
                source,
            })?;
            batch.insert(key_of(c), v);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Up to `max` pending commands.
    pub fn peek(&self, max: usize) -> Result<Vec<Command>, OutboxError> {
        let mut out = Vec::new();
        for item in self.tree.iter().take(max) {
            let (k, v) = item?;
            out.push(
                serde_json::from_slice(&v).map_err(|source| OutboxError::Decode {
                    key: format!("{k:02x?}"),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Removes commands that a leader has applied.
    pub async fn remove(&self, cmds: &[Command]) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for c in cmds {
            batch.remove(key_of(c));
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Number of pending commands.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// The answer a node gives from its last applied state (plus its own pending outbox
/// commands) when it cannot reach a quorum: the count a host would report if this
/// request were applied now.
pub fn local_result(state: &HostState, pending: &[Command], cmd: &Command) -> CommandResult {
    match cmd {
        Command::Activation(a) => {
            let Some(group) = &a.count_group else {
                return CommandResult::Activation(kms_state::ActivationResult {
                    active_clients: 0,
                    duplicate: false,
                });
            };
            let mut active = state.active_clients_at(group, a.time_ms);
            if a.outcome.is_answered() {
                // Distinct CMIDs not yet in the applied window: this one and those waiting
                // in the outbox.
                let mut extra = std::collections::BTreeSet::new();
                for c in pending.iter().chain(std::iter::once(cmd)) {
                    if let Command::Activation(p) = c {
                        if p.count_group.as_deref() == Some(group)
                            && p.outcome.is_answered()
                            && state
                                .client(group, &p.cmid)
                                .is_none_or(|r| !r.is_active_at(a.time_ms))
                        {
                            extra.insert(p.cmid);
                        }
                    }
                }
                active += extra.len() as u32;
            }
            CommandResult::Activation(kms_state::ActivationResult {
                active_clients: active,
                duplicate: false,
            })
        }
        Command::SetEpid {
            count_group, epid, ..
        } => CommandResult::Epid(
            state
                .epid(count_group)
                .map(str::to_owned)
                .unwrap_or_else(|| epid.clone()),
        ),
    }
}

/// How often the replay loop looks at the outbox.
pub const REPLAY_INTERVAL: Duration = Duration::from_millis(300);
