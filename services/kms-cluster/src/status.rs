//! [`NodeStatus`]: what a node reports about its Raft view over the `Cluster.Status` RPC.
//!
//! A typed subset of openraft's `RaftMetrics`, holding only what callers use (`kmsctl cluster
//! ...`, the bootstrap check "does this peer already belong to a cluster", tests), so the RPC
//! does not depend on the shape of openraft's metrics. The wire form and its conversions are in
//! `pb::status`.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{RaftMetrics, ServerState};

use crate::{LogId, Node, NodeId, StoredMembership};

/// A node's Raft view, as answered by `Cluster.Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The answering node's id.
    pub node_id: NodeId,
    /// Its Raft role.
    pub state: ServerState,
    /// Its current term.
    pub current_term: u64,
    /// The leader it knows, if any.
    pub current_leader: Option<NodeId>,
    /// Index of its last log entry (None: empty log).
    pub last_log_index: Option<u64>,
    /// The last entry it applied.
    pub last_applied: Option<LogId>,
    /// The last entry covered by its snapshot (None: no snapshot).
    pub snapshot: Option<LogId>,
    /// The membership in effect on this node.
    pub membership: StoredMembership,
    /// Leader only: ms since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Leader only: per replicated node, the last log id known to match there.
    pub replication: Option<BTreeMap<NodeId, Option<LogId>>>,
}

impl NodeStatus {
    /// The status of a node with these metrics.
    pub fn from_metrics(m: &RaftMetrics<NodeId, Node>) -> Self {
        NodeStatus {
            node_id: m.id,
            state: m.state,
            current_term: m.current_term,
            current_leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied,
            snapshot: m.snapshot,
            membership: (*m.membership_config).clone(),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            replication: m.replication.clone(),
        }
    }

    /// The role as a lowercase word ("leader", "follower", ...).
    pub fn role(&self) -> &'static str {
        match self.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }

    /// Voter ids: the union of all configs (both halves of a joint configuration).
    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.membership.membership().voter_ids().collect()
    }

    /// Learner ids: known nodes that are in no config.
    pub fn learners(&self) -> BTreeSet<NodeId> {
        self.membership.membership().learner_ids().collect()
    }

    /// Every known node (voters and learners) with its address.
    pub fn nodes(&self) -> BTreeMap<NodeId, String> {
        self.membership
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// The address of node `id`, when it is a member.
    pub fn addr_of(&self, id: NodeId) -> Option<&str> {
        self.membership
            .membership()
            .get_node(&id)
            .map(|node| node.addr.as_str())
    }

    /// Whether the node belongs to an initialized cluster: it has voters or knows a leader.
    pub fn in_cluster(&self) -> bool {
        !self.voters().is_empty() || self.current_leader.is_some()
    }

    /// Leader only: the last log id replicated to node `id` (None: nothing yet, or `id` is
    /// not replicated to, or this node does not lead).
    pub fn matched(&self, id: NodeId) -> Option<LogId> {
        self.replication.as_ref()?.get(&id).copied().flatten()
    }
}
