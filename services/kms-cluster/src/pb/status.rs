//! Conversions of [`NodeStatus`] (a node's Raft view) to and from `StatusResponse`.
//!
//! The role must be a known one (`ROLE_UNSPECIFIED` is rejected); replication progress is
//! present only on a leader, with one entry per replicated node.

use std::collections::BTreeMap;

use openraft::ServerState;

use super::generated as pb;
use super::raft::{log_id_from_pb, log_id_to_pb};
use super::{required, PbError};
use crate::NodeStatus;

fn role_to_pb(state: ServerState) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    }
}

fn role_from_pb(value: i32) -> Result<ServerState, PbError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Leader) => Ok(ServerState::Leader),
        Ok(pb::Role::Follower) => Ok(ServerState::Follower),
        Ok(pb::Role::Candidate) => Ok(ServerState::Candidate),
        Ok(pb::Role::Learner) => Ok(ServerState::Learner),
        Ok(pb::Role::Shutdown) => Ok(ServerState::Shutdown),
        Ok(pb::Role::Unspecified) | Err(_) => Err(PbError::UnknownEnum {
            field: "StatusResponse.role",
            value,
        }),
    }
}

impl From<&NodeStatus> for pb::StatusResponse {
    fn from(s: &NodeStatus) -> Self {
        pb::StatusResponse {
            node_id: s.node_id,
            role: role_to_pb(s.state).into(),
            current_term: s.current_term,
            current_leader: s.current_leader,
            last_log_index: s.last_log_index,
            last_applied: log_id_to_pb(s.last_applied.as_ref()),
            snapshot: log_id_to_pb(s.snapshot.as_ref()),
            membership: Some(pb::StoredMembership::from(&s.membership)),
            millis_since_quorum_ack: s.millis_since_quorum_ack,
            replication: s.replication.as_ref().map(|r| pb::Replication {
                nodes: r
                    .iter()
                    .map(|(id, matched)| pb::ReplicationProgress {
                        node_id: *id,
                        matched: log_id_to_pb(matched.as_ref()),
                    })
                    .collect(),
            }),
        }
    }
}

impl TryFrom<pb::StatusResponse> for NodeStatus {
    type Error = PbError;

    fn try_from(s: pb::StatusResponse) -> Result<Self, PbError> {
        Ok(NodeStatus {
            node_id: s.node_id,
            state: role_from_pb(s.role)?,
            current_term: s.current_term,
            current_leader: s.current_leader,
            last_log_index: s.last_log_index,
            last_applied: log_id_from_pb(s.last_applied),
            snapshot: log_id_from_pb(s.snapshot),
            membership: required(s.membership, "StatusResponse.membership")?.try_into()?,
            millis_since_quorum_ack: s.millis_since_quorum_ack,
            replication: s.replication.map(|r| {
                r.nodes
                    .into_iter()
                    .map(|p| (p.node_id, log_id_from_pb(p.matched)))
                    .collect::<BTreeMap<_, _>>()
            }),
        })
    }
}
