//! Membership events: what changed the cluster membership on this node, for an audit
//! trail kept by the embedding daemon (kmsd writes them to its audit log).
//!
//! The embedding program hands a [`MembershipEvents`] sender to the node in
//! [`crate::node::NodeConfig::membership_events`] and keeps a receiver; the node sends
//! one [`MembershipEvent`] per membership operation it carries out: the `Cluster` gRPC
//! service's `Initialize`, `AddLearner` and `ChangeMembership` calls (operators'
//! `kmsctl cluster ...`) and the static-peer bootstrap. Sending never blocks; without a
//! receiver (or with a lagging one) events are dropped.

use crate::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// The sending side handed to the node.
pub type MembershipEvents = tokio::sync::broadcast::Sender<MembershipEvent>;

/// A new event channel (sender; take receivers with `subscribe`).
pub fn channel() -> MembershipEvents {
    tokio::sync::broadcast::channel(256).0
}

/// Who asked for the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A `Cluster` gRPC call; the caller's address when known.
    Rpc {
        /// Remote address of the gRPC connection.
        peer: Option<SocketAddr>,
    },
    /// This node's own static-peer bootstrap.
    Bootstrap,
    /// The automatic rejoin of a wiped node (its promotion back to voter by the leader).
    Rejoin,
}

/// The requested change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// Initialize a fresh cluster with these voters.
    Initialize {
        /// Voters and their addresses.
        members: BTreeMap<NodeId, String>,
    },
    /// Add a learner.
    AddLearner {
        /// New node id.
        node_id: NodeId,
        /// Its cluster address.
        addr: String,
    },
    /// Replace the voter set (`kmsctl cluster promote` adds one, `remove` drops one).
    ChangeVoters {
        /// Voters before the change, as this node saw them.
        before: BTreeSet<NodeId>,
        /// Requested voters.
        after: BTreeSet<NodeId>,
    },
    /// Remove a learner (a node in no voter set).
    RemoveLearner {
        /// The node.
        node_id: NodeId,
    },
    /// A wiped node was removed and added back as a learner under a new incarnation.
    Rejoin {
        /// The node.
        node_id: NodeId,
        /// Its address.
        addr: String,
        /// Whether the leader promotes it to voter once caught up.
        as_voter: bool,
    },
}

impl MembershipChange {
    /// Voters `ChangeVoters` adds and removes (empty for the other kinds).
    pub fn voter_diff(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        match self {
            MembershipChange::ChangeVoters { before, after } => (
                after.difference(before).copied().collect(),
                before.difference(after).copied().collect(),
            ),
            _ => Default::default(),
        }
    }
}

/// One membership operation and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipEvent {
    /// What was asked.
    pub change: MembershipChange,
    /// Who asked.
    pub origin: Origin,
    /// None when it succeeded, else the error (a follower's "not the leader" included).
    pub error: Option<String>,
}

/// Sends `event` when a sender is configured (never blocks, ignores a missing receiver).
pub(crate) fn emit(events: Option<&MembershipEvents>, event: MembershipEvent) {
    if let Some(tx) = events {
        let _ = tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voter_diff_names_added_and_removed() {
        let c = MembershipChange::ChangeVoters {
            before: BTreeSet::from([1, 2, 3]),
            after: BTreeSet::from([1, 2, 4]),
        };
        assert_eq!(c.voter_diff(), (BTreeSet::from([4]), BTreeSet::from([3])));
        let add = MembershipChange::AddLearner {
            node_id: 4,
            addr: "a:1".into(),
        };
        assert_eq!(add.voter_diff(), Default::default());
    }

    #[test]
    fn emit_reaches_subscribers_and_tolerates_none() {
        let tx = channel();
        let mut rx = tx.subscribe();
        let ev = MembershipEvent {
            change: MembershipChange::AddLearner {
                node_id: 2,
                addr: "b:1".into(),
            },
            origin: Origin::Bootstrap,
            error: None,
        };
        emit(Some(&tx), ev.clone());
        emit(None, ev.clone());
        assert_eq!(rx.try_recv().unwrap(), ev);
        assert!(rx.try_recv().is_err());
    }
}
