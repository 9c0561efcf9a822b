//! This node's Raft view for `/status`, from openraft's metrics.

use super::*;

impl ClusterNode {
    /// This node's Raft role as a word.
    pub fn role(&self) -> &'static str {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }

    /// This node's Raft view (for `/status`), from openraft's metrics.
    pub fn view(&self) -> kms_api::RaftView {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voter_ids: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, n) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, n.addr.clone());
            } else {
                learners.insert(*id, n.addr.clone());
            }
        }
        let replication: BTreeMap<u64, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let applied = m.last_applied.map(|l| l.index);
        let commit_index = if m.state == ServerState::Leader && !voter_ids.is_empty() {
            Some(majority_matched(
                &voter_ids,
                m.id,
                m.last_log_index.unwrap_or(0),
                &replication,
            ))
        } else {
            applied
        };
        let membership_state = crate::membership::state_of(&m.membership_config, m.last_applied);
        kms_api::RaftView {
            node_id: m.id,
            role: self.role().to_string(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            commit_index,
            applied_index: applied,
            snapshot_index: m.snapshot.map(|l| l.index),
            voters,
            learners,
            replication,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            stale_ms: self.stale_ms(),
            outbox_len: self.outbox_len() as u64,
            quorum_loss: match self.config.quorum_loss {
                QuorumLoss::ServeLocal => "serve-local".into(),
                QuorumLoss::FailClosed => "fail-closed".into(),
            },
            incarnation: self.incarnation().to_string(),
            quarantined: self.in_quarantine(),
            membership_state: membership_state.word().to_string(),
            membership_detail: membership_state.to_string(),
        }
    }
}

/// The highest log index matched by a majority of `voters`: the leader `me` counts with its own
/// last index, the others with what `replication` says they matched (nothing: 0).
fn majority_matched(
    voters: &std::collections::BTreeSet<NodeId>,
    me: NodeId,
    own_last: u64,
    replication: &BTreeMap<NodeId, Option<u64>>,
) -> u64 {
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|id| {
            if *id == me {
                own_last
            } else {
                replication.get(id).copied().flatten().unwrap_or(0)
            }
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[voters.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn commit_index_is_what_a_majority_matched() {
        let voters = BTreeSet::from([1, 2, 3]);
        let repl = BTreeMap::from([(2, Some(7)), (3, None)]);
        assert_eq!(majority_matched(&voters, 1, 10, &repl), 7);
        let repl = BTreeMap::from([(2, Some(12)), (3, Some(9))]);
        assert_eq!(majority_matched(&voters, 1, 10, &repl), 10);
        let five = BTreeSet::from([1, 2, 3, 4, 5]);
        let repl = BTreeMap::from([(2, Some(4)), (3, Some(3)), (4, None), (5, Some(9))]);
        assert_eq!(majority_matched(&five, 1, 10, &repl), 4);
        assert_eq!(
            majority_matched(&BTreeSet::from([1]), 1, 5, &BTreeMap::new()),
            5
        );
    }
}
