//! Guard rails for membership changes: the rules that keep one mistyped command from wedging
//! the cluster, and the guarded operations every caller uses (`kmsctl cluster promote|remove`
//! over gRPC, Kubernetes discovery in-process, the rejoin loop).
//!
//! A voter added to a configuration it cannot answer for stops every commit: openraft moves
//! through a joint configuration that needs a majority of the old *and* of the new voter set,
//! so a single-voter cluster that promotes an absent node needs that node for every entry.
//! Hence:
//! - [`check_promote`]: only a learner the leader has replicated to, at most
//!   [`PROMOTE_MAX_LAG`] entries behind, is promoted (the caller also asks the learner itself
//!   over the network, so a node that died after its last append is refused too);
//! - [`plan_remove`]: learners and voters alike can be removed (never the last voter);
//! - [`state_of`]: whether the membership in effect is stable, joint or not yet committed,
//!   for `/status`, `kmsctl cluster status` and the `kms_raft_membership_*` metrics;
//! - [`change`]: every change runs under [`CHANGE_TIMEOUT`]; one that does not commit in time
//!   is reported with the way out (start the missing node, or stop the cluster and run
//!   `kmsd --rollback-membership`, see [`crate::recover`]).

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use openraft::ChangeMembers;

use crate::status::NodeStatus;
use crate::{LogId, NodeId, Raft, StoredMembership};

/// A learner is promoted only when at most this many entries behind the leader's last entry.
pub const PROMOTE_MAX_LAG: u64 = 256;

/// How long a membership change may take to commit before it is reported as stuck.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a membership change was refused or did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The node is not in the membership at all.
    #[error("node {0} is not a member; add it with `kmsctl cluster add-learner` first")]
    NotMember(NodeId),
    /// Promote of a node that already votes.
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    /// The leader has never replicated to the learner.
    #[error(
        "node {id} at {addr} has not received any log from the leader: it is not running, \
         not reachable at that address, or (with TLS) refuses the cluster's certificate; \
         refusing to promote it (fix it, or remove it with `kmsctl cluster remove --id {id}`)"
    )]
    NeverReplicated {
        /// The learner.
        id: NodeId,
        /// Its address in the membership.
        addr: String,
    },
    /// The learner is too far behind.
    #[error(
        "node {id} is {behind} entries behind the leader (at most {max} to be promoted); \
         wait until it has caught up and try again"
    )]
    Behind {
        /// The learner.
        id: NodeId,
        /// Entries it is behind.
        behind: u64,
        /// The limit.
        max: u64,
    },
    /// The learner did not answer the leader's probe.
    #[error("node {id} at {addr} does not answer ({reason}); refusing to promote it")]
    Unreachable {
        /// The learner.
        id: NodeId,
        /// Its address in the membership.
        addr: String,
        /// What the probe got.
        reason: String,
    },
    /// Removing the only voter would leave no cluster.
    #[error("refusing to remove node {0}: it is the last voter")]
    LastVoter(NodeId),
    /// A change is already under way.
    #[error(
        "a membership change is still in progress ({state}); it completes once every new \
         voter answers. If a new voter never appears: start it at its address, or stop the \
         cluster and run `kmsd --rollback-membership` on the remaining voter (runbook: \
         KmsMembershipChangeStuck)"
    )]
    InProgress {
        /// The membership state, in words.
        state: MembershipState,
    },
    /// The change was written but did not commit in time.
    #[error(
        "the membership change did not commit within {secs} s; the cluster is now in a {state} \
         membership. It completes by itself once every new voter answers; otherwise start the \
         missing node at its address, or stop the cluster and run `kmsd --rollback-membership` \
         on the remaining voter (runbook: KmsMembershipChangeStuck)"
    )]
    Timeout {
        /// The bound that passed.
        secs: u64,
        /// The membership state it was left in.
        state: MembershipState,
    },
    /// openraft refused or failed the change.
    #[error("{0}")]
    Raft(String),
}

/// Whether the membership in effect on a node is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipState {
    /// One configuration, committed (applied) on this node.
    Stable,
    /// One configuration, written but not yet committed.
    Pending {
        /// Its voters.
        voters: BTreeSet<NodeId>,
    },
    /// Two configurations (old and new voter sets) in effect at once: every commit needs a
    /// majority of each.
    Joint {
        /// The voter sets, old first.
        configs: Vec<BTreeSet<NodeId>>,
    },
}

impl MembershipState {
    /// The state as one word: `stable`, `pending` or `joint`.
    pub fn word(&self) -> &'static str {
        match self {
            MembershipState::Stable => "stable",
            MembershipState::Pending { .. } => "pending",
            MembershipState::Joint { .. } => "joint",
        }
    }

    /// Whether a change is under way (joint or pending).
    pub fn in_progress(&self) -> bool {
        !matches!(self, MembershipState::Stable)
    }
}

impl fmt::Display for MembershipState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &BTreeSet<NodeId>| {
            let ids: Vec<String> = s.iter().map(ToString::to_string).collect();
            format!("{{{}}}", ids.join(","))
        };
        match self {
            MembershipState::Stable => write!(f, "stable"),
            MembershipState::Pending { voters } => {
                write!(f, "pending (voters {} not committed yet)", set(voters))
            }
            MembershipState::Joint { configs } => {
                let sets: Vec<String> = configs.iter().map(set).collect();
                write!(f, "joint ({})", sets.join(" -> "))
            }
        }
    }
}

/// The state of `membership` on a node that has applied up to `last_applied`.
pub fn state_of(membership: &StoredMembership, last_applied: Option<LogId>) -> MembershipState {
    let configs: Vec<BTreeSet<NodeId>> = membership.membership().get_joint_config().clone();
    if configs.len() > 1 {
        return MembershipState::Joint { configs };
    }
    let applied = last_applied.map(|l| l.index);
    let written = membership.log_id().map(|l| l.index);
    if written > applied {
        return MembershipState::Pending {
            voters: configs.into_iter().next().unwrap_or_default(),
        };
    }
    MembershipState::Stable
}

/// Checks, on the leader's view `status`, that learner `id` may become a voter: a member, not
/// yet a voter, replicated to and at most `max_lag` entries behind; no change in progress.
pub fn check_promote(status: &NodeStatus, id: NodeId, max_lag: u64) -> Result<(), MembershipError> {
    let state = state_of(&status.membership, status.last_applied);
    if state.in_progress() {
        return Err(MembershipError::InProgress { state });
    }
    let Some(addr) = status.addr_of(id) else {
        return Err(MembershipError::NotMember(id));
    };
    if status.voters().contains(&id) {
        return Err(MembershipError::AlreadyVoter(id));
    }
    let Some(matched) = status.matched(id) else {
        return Err(MembershipError::NeverReplicated {
            id,
            addr: addr.to_string(),
        });
    };
    let last = status.last_log_index.unwrap_or(0);
    let behind = last.saturating_sub(matched.index);
    if behind > max_lag {
        return Err(MembershipError::Behind {
            id,
            behind,
            max: max_lag,
        });
    }
    Ok(())
}

/// What removing node `id` takes, on the leader's view `status`: voters leave the voter set
/// and the membership at once, learners just the membership.
pub fn plan_remove(
    status: &NodeStatus,
    id: NodeId,
) -> Result<ChangeMembers<NodeId, crate::Node>, MembershipError> {
    let state = state_of(&status.membership, status.last_applied);
    if state.in_progress() {
        return Err(MembershipError::InProgress { state });
    }
    if status.addr_of(id).is_none() {
        return Err(MembershipError::NotMember(id));
    }
    let voters = status.voters();
    if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(MembershipError::LastVoter(id));
        }
        // Not retained as a learner: the node leaves the membership entirely.
        return Ok(ChangeMembers::RemoveVoters(BTreeSet::from([id])));
    }
    Ok(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
}

/// Applies `change` on the leader `raft`, bounded by `timeout`; a change that does not commit
/// in time is reported with the membership state it left.
pub async fn change(
    raft: &Raft,
    change: ChangeMembers<NodeId, crate::Node>,
    timeout: Duration,
) -> Result<(), MembershipError> {
    match tokio::time::timeout(timeout, raft.change_membership(change, false)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(MembershipError::Raft(e.to_string())),
        Err(_) => {
            let status = NodeStatus::from_metrics(&raft.metrics().borrow());
            Err(MembershipError::Timeout {
                secs: timeout.as_secs(),
                state: state_of(&status.membership, status.last_applied),
            })
        }
    }
}

/// How long [`promote`] waits for a learner to receive the log and catch up before refusing.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// Promotes learner `id` on the leader `raft`: waits up to [`CATCH_UP_WAIT`] for
/// [`check_promote`] to pass (a learner added a moment ago is still receiving the log), then
/// `probe` (asks the learner itself; Err names why it does not answer), then the change under
/// [`CHANGE_TIMEOUT`].
pub async fn promote<F, Fut>(raft: &Raft, id: NodeId, probe: F) -> Result<(), MembershipError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    let status = loop {
        let status = NodeStatus::from_metrics(&raft.metrics().borrow());
        match check_promote(&status, id, PROMOTE_MAX_LAG) {
            Ok(()) => break status,
            Err(MembershipError::NeverReplicated { .. } | MembershipError::Behind { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let addr = status.addr_of(id).unwrap_or_default().to_string();
    probe(addr.clone())
        .await
        .map_err(|reason| MembershipError::Unreachable { id, addr, reason })?;
    change(
        raft,
        ChangeMembers::AddVoterIds(BTreeSet::from([id])),
        CHANGE_TIMEOUT,
    )
    .await
}

/// The probe of [`promote`] over the cluster port: asks the node at `addr` for its status
/// (3 s deadline, over mutual TLS when `tls` is set); Ok when it answers.
pub async fn answers(addr: String, tls: Option<crate::network::TlsConfig>) -> Result<(), String> {
    let client =
        crate::network::ClusterClient::connect_with(&addr, Duration::from_secs(3), tls.as_ref());
    client.status().await.map(|_| ()).map_err(|e| e.to_string())
}

/// Removes node `id` (voter or learner) on the leader `raft`, under [`CHANGE_TIMEOUT`].
pub async fn remove(raft: &Raft, id: NodeId) -> Result<(), MembershipError> {
    let status = NodeStatus::from_metrics(&raft.metrics().borrow());
    let plan = plan_remove(&status, id)?;
    change(raft, plan, CHANGE_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Membership, Node};
    use openraft::{CommittedLeaderId, ServerState};
    use std::collections::BTreeMap;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn nodes(ids: &[NodeId]) -> BTreeMap<NodeId, Node> {
        ids.iter()
            .map(|i| (*i, Node::new(format!("127.0.0.1:{}", 9000 + i))))
            .collect()
    }

    /// A leader (node 1) at `last` with `voters` and `learners`, membership written at
    /// `member_at`, applied up to `applied`, with `matched` replication progress.
    fn leader(
        configs: Vec<BTreeSet<NodeId>>,
        all: &[NodeId],
        member_at: u64,
        applied: u64,
        last: u64,
        matched: &[(NodeId, Option<u64>)],
    ) -> NodeStatus {
        let membership = Membership::new(configs, nodes(all));
        NodeStatus {
            node_id: 1,
            state: ServerState::Leader,
            current_term: 1,
            current_leader: Some(1),
            last_log_index: Some(last),
            last_applied: Some(log_id(applied)),
            snapshot: None,
            membership: StoredMembership::new(Some(log_id(member_at)), membership),
            millis_since_quorum_ack: Some(0),
            replication: Some(matched.iter().map(|(id, m)| (*id, m.map(log_id))).collect()),
        }
    }

    fn one(ids: &[NodeId]) -> Vec<BTreeSet<NodeId>> {
        vec![ids.iter().copied().collect()]
    }

    #[test]
    fn a_learner_that_never_received_the_log_is_not_promoted() {
        let s = leader(one(&[1]), &[1, 2], 3, 10, 10, &[(1, Some(10)), (2, None)]);
        let e = check_promote(&s, 2, PROMOTE_MAX_LAG).unwrap_err();
        assert!(
            matches!(e, MembershipError::NeverReplicated { id: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("127.0.0.1:9002"), "{e}");
    }

    #[test]
    fn a_learner_behind_is_refused_with_how_far_and_one_at_the_limit_passes() {
        let s = leader(one(&[1]), &[1, 2], 3, 1000, 1000, &[(2, Some(743))]);
        let e = check_promote(&s, 2, PROMOTE_MAX_LAG).unwrap_err();
        assert_eq!(
            e,
            MembershipError::Behind {
                id: 2,
                behind: 257,
                max: 256
            }
        );
        let s = leader(one(&[1]), &[1, 2], 3, 1000, 1000, &[(2, Some(744))]);
        check_promote(&s, 2, PROMOTE_MAX_LAG).unwrap();
    }

    #[test]
    fn promote_refuses_strangers_voters_and_changes_in_progress() {
        let s = leader(one(&[1, 2]), &[1, 2], 3, 10, 10, &[(2, Some(10))]);
        assert_eq!(
            check_promote(&s, 2, 256).unwrap_err(),
            MembershipError::AlreadyVoter(2)
        );
        assert_eq!(
            check_promote(&s, 7, 256).unwrap_err(),
            MembershipError::NotMember(7)
        );
        let joint = vec![BTreeSet::from([1]), BTreeSet::from([1, 2])];
        let s = leader(joint, &[1, 2, 3], 11, 10, 11, &[(3, Some(11))]);
        assert!(matches!(
            check_promote(&s, 3, 256).unwrap_err(),
            MembershipError::InProgress { .. }
        ));
    }

    #[test]
    fn states_stable_pending_joint() {
        let s = leader(one(&[1]), &[1], 3, 3, 3, &[]);
        assert_eq!(
            state_of(&s.membership, s.last_applied),
            MembershipState::Stable
        );
        let s = leader(one(&[1, 2]), &[1, 2], 12, 11, 12, &[]);
        let st = state_of(&s.membership, s.last_applied);
        assert_eq!(st.word(), "pending");
        assert!(st.to_string().contains("{1,2}"), "{st}");
        let joint = vec![BTreeSet::from([1]), BTreeSet::from([1, 2])];
        let s = leader(joint, &[1, 2], 12, 11, 12, &[]);
        let st = state_of(&s.membership, s.last_applied);
        assert_eq!(st.word(), "joint");
        assert_eq!(st.to_string(), "joint ({1} -> {1,2})");
        // No applied entry yet but a membership written: pending.
        let mut s = leader(one(&[1]), &[1], 1, 0, 1, &[]);
        s.last_applied = None;
        assert_eq!(state_of(&s.membership, s.last_applied).word(), "pending");
    }

    #[test]
    fn remove_takes_learners_and_voters_but_never_the_last_voter() {
        let s = leader(one(&[1]), &[1, 2], 3, 10, 10, &[(2, None)]);
        assert_eq!(
            plan_remove(&s, 2).unwrap(),
            ChangeMembers::RemoveNodes(BTreeSet::from([2]))
        );
        assert_eq!(
            plan_remove(&s, 1).unwrap_err(),
            MembershipError::LastVoter(1)
        );
        assert_eq!(
            plan_remove(&s, 5).unwrap_err(),
            MembershipError::NotMember(5)
        );
        let s = leader(one(&[1, 2, 3]), &[1, 2, 3], 3, 10, 10, &[]);
        assert_eq!(
            plan_remove(&s, 3).unwrap(),
            ChangeMembers::RemoveVoters(BTreeSet::from([3]))
        );
        let joint = vec![BTreeSet::from([1]), BTreeSet::from([1, 2])];
        let s = leader(joint, &[1, 2], 12, 11, 12, &[]);
        let e = plan_remove(&s, 2).unwrap_err();
        assert!(e.to_string().contains("kmsd --rollback-membership"), "{e}");
    }
}
