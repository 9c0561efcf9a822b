//! The small requests of the `Cluster` service that carry plain values: the member map of
//! `Initialize` / `ChangeMembership`, `AddLearner`, `Promote` / `Remove`, `TakeLeadership` and `Status`.
//!
//! Each builder writes [`SCHEMA_VERSION`]; each reader checks it first.

use std::collections::BTreeMap;

use super::generated as pb;
use super::{check_schema_version, PbError, SCHEMA_VERSION};
use crate::NodeId;

/// The request of `Initialize` / `ChangeMembership`: node id → address.
pub fn members_request(members: &BTreeMap<NodeId, String>) -> pb::MembersRequest {
    pb::MembersRequest {
        schema_version: SCHEMA_VERSION,
        members: members.clone(),
        force: false,
    }
}

/// The members of a `MembersRequest`.
pub fn members_from_pb(request: pb::MembersRequest) -> Result<BTreeMap<NodeId, String>, PbError> {
    check_schema_version(request.schema_version)?;
    Ok(request.members)
}

/// The request of `AddLearner`: node `node_id` at `addr`.
pub fn add_learner_request(node_id: NodeId, addr: &str) -> pb::AddLearnerRequest {
    pb::AddLearnerRequest {
        schema_version: SCHEMA_VERSION,
        node_id,
        addr: addr.to_string(),
    }
}

/// The node id and address of an `AddLearnerRequest`.
pub fn add_learner_from_pb(request: pb::AddLearnerRequest) -> Result<(NodeId, String), PbError> {
    check_schema_version(request.schema_version)?;
    Ok((request.node_id, request.addr))
}

/// The request of `Promote` / `Remove`: node `node_id`.
pub fn node_request(node_id: NodeId) -> pb::NodeRequest {
    pb::NodeRequest {
        schema_version: SCHEMA_VERSION,
        node_id,
    }
}

/// The node id of a `NodeRequest`.
pub fn node_from_pb(request: pb::NodeRequest) -> Result<NodeId, PbError> {
    check_schema_version(request.schema_version)?;
    Ok(request.node_id)
}

/// What a stopping leader asks of its successor (see [`crate::handover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeLeadership {
    /// The stopping leader.
    pub leader_id: NodeId,
    /// Its term.
    pub term: u64,
    /// Its last log index (None: empty log).
    pub last_log_index: Option<u64>,
}

impl From<&TakeLeadership> for pb::TakeLeadershipRequest {
    fn from(t: &TakeLeadership) -> Self {
        pb::TakeLeadershipRequest {
            schema_version: SCHEMA_VERSION,
            leader_id: t.leader_id,
            term: t.term,
            last_log_index: t.last_log_index,
        }
    }
}

impl TryFrom<pb::TakeLeadershipRequest> for TakeLeadership {
    type Error = PbError;

    fn try_from(request: pb::TakeLeadershipRequest) -> Result<Self, PbError> {
        check_schema_version(request.schema_version)?;
        Ok(TakeLeadership {
            leader_id: request.leader_id,
            term: request.term,
            last_log_index: request.last_log_index,
        })
    }
}

/// The request of `Status`.
pub fn status_request() -> pb::StatusRequest {
    pb::StatusRequest {
        schema_version: SCHEMA_VERSION,
    }
}

/// Checks a `StatusRequest` (only its schema version).
pub fn check_status_request(request: &pb::StatusRequest) -> Result<(), PbError> {
    check_schema_version(request.schema_version)
}
