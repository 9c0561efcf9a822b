//! The state backend kmsd talks to: a Raft cluster member ([`ClusterNode`]). A single
//! node is a one-member cluster, so the same path (batched log entries, snapshot files)
//! serves both deployments.

use kms_cluster::node::{ClusterNode, SubmitError};
use kms_state::{Command, CommandResult, HostState};
use std::sync::Arc;

/// Errors of the backend.
pub type BackendError = SubmitError;

/// Handle to the replicated state.
#[derive(Debug, Clone)]
pub struct Backend {
    node: Arc<ClusterNode>,
}

impl Backend {
    /// Wraps a started node.
    pub fn new(node: Arc<ClusterNode>) -> Self {
        Self { node }
    }

    /// The cluster node.
    pub fn node(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    /// Commits a command through Raft; resolves with its applied result.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, BackendError> {
        self.node.submit(cmd).await
    }

    /// Runs `f` on this node's applied state.
    pub fn read<R>(&self, f: impl FnOnce(&HostState) -> R) -> R {
        self.node.read(f)
    }
}
