//! Conversions of cluster memberships: [`Membership`] (joint configs and node addresses),
//! [`StoredMembership`] and [`SnapshotMeta`].
//!
//! A decoded membership is exactly the one encoded: configs keep their order (a joint config
//! stays joint), and a voter without an address is rejected rather than filled in with a
//! default node.

use std::collections::{BTreeMap, BTreeSet};

use super::generated as pb;
use super::raft::{log_id_from_pb, log_id_to_pb};
use super::{required, PbError};
use crate::{Membership, Node, NodeId, SnapshotMeta, StoredMembership};

impl From<&Membership> for pb::Membership {
    fn from(m: &Membership) -> Self {
        pb::Membership {
            configs: m
                .get_joint_config()
                .iter()
                .map(|config| pb::NodeIdSet {
                    ids: config.iter().copied().collect(),
                })
                .collect(),
            nodes: m
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
        }
    }
}

impl TryFrom<pb::Membership> for Membership {
    type Error = PbError;

    fn try_from(m: pb::Membership) -> Result<Self, PbError> {
        let nodes: BTreeMap<NodeId, Node> = m
            .nodes
            .into_iter()
            .map(|(id, addr)| (id, Node::new(addr)))
            .collect();
        let configs: Vec<BTreeSet<NodeId>> = m
            .configs
            .into_iter()
            .map(|set| set.ids.into_iter().collect())
            .collect();
        if let Some(voter) = configs.iter().flatten().find(|id| !nodes.contains_key(id)) {
            return Err(PbError::VoterWithoutNode { voter: *voter });
        }
        // Every voter has a node, so `new` adds nothing.
        Ok(Membership::new(configs, nodes))
    }
}

impl From<&StoredMembership> for pb::StoredMembership {
    fn from(m: &StoredMembership) -> Self {
        pb::StoredMembership {
            log_id: log_id_to_pb(m.log_id().as_ref()),
            membership: Some(pb::Membership::from(m.membership())),
        }
    }
}

impl TryFrom<pb::StoredMembership> for StoredMembership {
    type Error = PbError;

    fn try_from(m: pb::StoredMembership) -> Result<Self, PbError> {
        Ok(StoredMembership::new(
            log_id_from_pb(m.log_id),
            required(m.membership, "StoredMembership.membership")?.try_into()?,
        ))
    }
}

impl From<&SnapshotMeta> for pb::SnapshotMeta {
    fn from(meta: &SnapshotMeta) -> Self {
        pb::SnapshotMeta {
            last_log_id: log_id_to_pb(meta.last_log_id.as_ref()),
            last_membership: Some(pb::StoredMembership::from(&meta.last_membership)),
            snapshot_id: meta.snapshot_id.clone(),
        }
    }
}

impl TryFrom<pb::SnapshotMeta> for SnapshotMeta {
    type Error = PbError;

    fn try_from(meta: pb::SnapshotMeta) -> Result<Self, PbError> {
        Ok(SnapshotMeta {
            last_log_id: log_id_from_pb(meta.last_log_id),
            last_membership: required(meta.last_membership, "SnapshotMeta.last_membership")?
                .try_into()?,
            snapshot_id: meta.snapshot_id,
        })
    }
}
