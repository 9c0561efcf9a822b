//! The application data that travels through the Raft log: [`ClusterRequest`] (openraft's `D`)
//! and [`ClusterResponse`] (openraft's `R`).
//!
//! Owns only the shape of an entry's payload and its result. One entry carries a *batch* of
//! [`Command`]s so that a node can group-commit many KMS requests with one Raft round trip and
//! one fsync; the state machine applies them in order and answers with one result per command.

use kms_state::{Command, CommandResult};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::NodeId;

/// A node's entry in the replicated registry of incarnations (see [`crate::identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The node.
    pub node_id: NodeId,
    /// The incarnation of its data directory.
    pub incarnation: Uuid,
    /// The leader promotes the node to voter once it has caught up (a wiped voter that
    /// rejoined as a learner).
    pub voter_wanted: bool,
}

/// The payload of one normal Raft log entry: commands applied in order, atomically with respect
/// to readers of the state machine.
///
/// Each command carries its own time (stamped by the node that received the KMS request), so
/// every replica applying the entry reaches the same state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRequest {
    /// The batch, in proposal order.
    pub commands: Vec<Command>,
    /// A registry update carried by this entry (applied after the commands).
    #[serde(default)]
    pub register: Option<Registration>,
}

impl ClusterRequest {
    /// A request carrying `commands` in this order.
    pub fn new(commands: Vec<Command>) -> Self {
        ClusterRequest {
            commands,
            register: None,
        }
    }

    /// A request that only records `registration`.
    pub fn register(registration: Registration) -> Self {
        ClusterRequest {
            commands: Vec::new(),
            register: Some(registration),
        }
    }
}

impl From<Command> for ClusterRequest {
    /// A batch of one.
    fn from(command: Command) -> Self {
        ClusterRequest::new(vec![command])
    }
}

impl From<Vec<Command>> for ClusterRequest {
    fn from(commands: Vec<Command>) -> Self {
        ClusterRequest::new(commands)
    }
}

/// What applying one log entry produced, returned to the proposer by `Raft::client_write`.
///
/// For a normal entry `results[i]` is the result of `commands[i]` of its [`ClusterRequest`];
/// blank and membership entries produce an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterResponse {
    /// One result per command, in the request's order.
    pub results: Vec<CommandResult>,
}
