//! Conversions of the identity messages: [`Registration`] (log entries, snapshot registry),
//! the `Identity` question a node with an empty store asks its peers ([`IdentityAnswer`]), and
//! the `Rejoin` / `Register` requests.

use uuid::Uuid;

use super::commands::{uuid_from_pb, uuid_to_pb};
use super::generated as pb;
use super::{check_schema_version, required, PbError, SCHEMA_VERSION};
use crate::{NodeId, Registration};

impl From<&Registration> for pb::Registration {
    fn from(r: &Registration) -> Self {
        pb::Registration {
            node_id: r.node_id,
            incarnation: uuid_to_pb(&r.incarnation),
            voter_wanted: r.voter_wanted,
        }
    }
}

impl TryFrom<pb::Registration> for Registration {
    type Error = PbError;

    fn try_from(r: pb::Registration) -> Result<Self, PbError> {
        Ok(Registration {
            node_id: r.node_id,
            incarnation: uuid_from_pb(&r.incarnation, "Registration.incarnation")?,
            voter_wanted: r.voter_wanted,
        })
    }
}

/// Where the asking node stands in the answering node's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRoleOf {
    /// Not in the membership.
    None,
    /// A voter (in any config of a joint membership).
    Voter,
    /// A learner.
    Learner,
}

/// A peer's answer to `Identity`: how it sees the asking node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityAnswer {
    /// The peer belongs to an initialized cluster.
    pub initialized: bool,
    /// The asking node's place in the peer's membership.
    pub role: MemberRoleOf,
    /// The asking node's registration in the peer's registry.
    pub registered: Option<Registration>,
    /// The leader the peer knows.
    pub leader_id: Option<NodeId>,
    /// That leader's address ("" when unknown).
    pub leader_addr: String,
}

impl From<&IdentityAnswer> for pb::IdentityResponse {
    fn from(a: &IdentityAnswer) -> Self {
        pb::IdentityResponse {
            initialized: a.initialized,
            role: match a.role {
                MemberRoleOf::None => pb::MemberRole::None,
                MemberRoleOf::Voter => pb::MemberRole::Voter,
                MemberRoleOf::Learner => pb::MemberRole::Learner,
            } as i32,
            registered: a.registered.as_ref().map(pb::Registration::from),
            leader_id: a.leader_id,
            leader_addr: a.leader_addr.clone(),
        }
    }
}

impl TryFrom<pb::IdentityResponse> for IdentityAnswer {
    type Error = PbError;

    fn try_from(r: pb::IdentityResponse) -> Result<Self, PbError> {
        let role = match pb::MemberRole::try_from(r.role) {
            Ok(pb::MemberRole::None) => MemberRoleOf::None,
            Ok(pb::MemberRole::Voter) => MemberRoleOf::Voter,
            Ok(pb::MemberRole::Learner) => MemberRoleOf::Learner,
            Err(_) => {
                return Err(PbError::UnknownEnum {
                    field: "IdentityResponse.role",
                    value: r.role,
                })
            }
        };
        Ok(IdentityAnswer {
            initialized: r.initialized,
            role,
            registered: r.registered.map(Registration::try_from).transpose()?,
            leader_id: r.leader_id,
            leader_addr: r.leader_addr,
        })
    }
}

/// The request of `Identity` for node `node_id`.
pub fn identity_request(node_id: NodeId) -> pb::IdentityRequest {
    pb::IdentityRequest {
        schema_version: SCHEMA_VERSION,
        node_id,
    }
}

/// The node id of an `IdentityRequest`.
pub fn identity_from_pb(request: pb::IdentityRequest) -> Result<NodeId, PbError> {
    check_schema_version(request.schema_version)?;
    Ok(request.node_id)
}

/// What a wiped node asks of the leader (see `RejoinRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejoin {
    /// The node.
    pub node_id: NodeId,
    /// Its new incarnation.
    pub incarnation: Uuid,
    /// Its Raft address.
    pub addr: String,
    /// Promote it to voter once it has caught up.
    pub as_voter: bool,
}

impl From<&Rejoin> for pb::RejoinRequest {
    fn from(r: &Rejoin) -> Self {
        pb::RejoinRequest {
            schema_version: SCHEMA_VERSION,
            node_id: r.node_id,
            incarnation: uuid_to_pb(&r.incarnation),
            addr: r.addr.clone(),
            as_voter: r.as_voter,
        }
    }
}

impl TryFrom<pb::RejoinRequest> for Rejoin {
    type Error = PbError;

    fn try_from(r: pb::RejoinRequest) -> Result<Self, PbError> {
        check_schema_version(r.schema_version)?;
        Ok(Rejoin {
            node_id: r.node_id,
            incarnation: uuid_from_pb(&r.incarnation, "RejoinRequest.incarnation")?,
            addr: r.addr,
            as_voter: r.as_voter,
        })
    }
}

/// The request of `Register`.
pub fn register_request(registration: &Registration) -> pb::RegisterRequest {
    pb::RegisterRequest {
        schema_version: SCHEMA_VERSION,
        registration: Some(pb::Registration::from(registration)),
    }
}

/// The registration of a `RegisterRequest`.
pub fn register_from_pb(request: pb::RegisterRequest) -> Result<Registration, PbError> {
    check_schema_version(request.schema_version)?;
    required(request.registration, "RegisterRequest.registration")?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_messages_round_trip() {
        let reg = Registration {
            node_id: 3,
            incarnation: Uuid::from_u128(0x1234),
            voter_wanted: true,
        };
        let answer = IdentityAnswer {
            initialized: true,
            role: MemberRoleOf::Voter,
            registered: Some(reg),
            leader_id: Some(1),
            leader_addr: "127.0.0.1:7001".into(),
        };
        assert_eq!(
            IdentityAnswer::try_from(pb::IdentityResponse::from(&answer)).unwrap(),
            answer
        );
        let rejoin = Rejoin {
            node_id: 3,
            incarnation: Uuid::from_u128(9),
            addr: "a:1".into(),
            as_voter: true,
        };
        assert_eq!(
            Rejoin::try_from(pb::RejoinRequest::from(&rejoin)).unwrap(),
            rejoin
        );
        assert_eq!(register_from_pb(register_request(&reg)).unwrap(), reg);
        assert_eq!(identity_from_pb(identity_request(7)).unwrap(), 7);
    }

    #[test]
    fn a_short_incarnation_and_an_unknown_role_are_refused() {
        let bad = pb::Registration {
            node_id: 1,
            incarnation: vec![1, 2, 3],
            voter_wanted: false,
        };
        assert!(matches!(
            Registration::try_from(bad),
            Err(PbError::Length { len: 3, .. })
        ));
        let odd = pb::IdentityResponse {
            role: 9,
            ..Default::default()
        };
        assert!(IdentityAnswer::try_from(odd).is_err());
        let unversioned = pb::RejoinRequest::default();
        assert!(matches!(
            Rejoin::try_from(unversioned),
            Err(PbError::SchemaVersion { .. })
        ));
    }
}
