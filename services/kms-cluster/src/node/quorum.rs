//! When this node last knew a leader backed by a quorum, and how stale its view may be.

use super::*;

impl ClusterNode {
    /// Tracks when this node last saw a leader backed by a quorum.
    pub(super) async fn quorum_watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            let m = self.raft.metrics().borrow().clone();
            if self.quorum_known(&m) {
                self.last_quorum_ms.store(now_ms(), Ordering::Relaxed);
            }
        }
    }

    /// Whether these metrics show a leader backed by a quorum: a leader acknowledged by
    /// a quorum within the election timeout, or any other role that knows a leader.
    pub(super) fn quorum_known(&self, m: &RaftMetrics<NodeId, Node>) -> bool {
        quorum_known(
            m.state,
            m.millis_since_quorum_ack,
            m.current_leader,
            self.config.election_timeout_ms.1,
        )
    }

    /// Commands waiting in the serve-local outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// How stale this node's view may be: ms since it last knew a leader backed by a
    /// quorum (0 while it does).
    pub fn stale_ms(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        if m.running_state.is_ok() && self.quorum_known(&m) {
            return 0;
        }
        now_ms().saturating_sub(self.last_quorum_ms.load(Ordering::Relaxed))
    }
}

/// Whether a node in `state` knows a leader backed by a quorum: a leader acknowledged by a
/// quorum within `election_max_ms`, or any other role that knows a leader.
fn quorum_known(
    state: ServerState,
    millis_since_quorum_ack: Option<u64>,
    leader: Option<NodeId>,
    election_max_ms: u64,
) -> bool {
    match state {
        ServerState::Leader => millis_since_quorum_ack.is_some_and(|ms| ms < election_max_ms),
        _ => leader.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_needs_a_recent_quorum_ack_others_a_known_leader() {
        assert!(quorum_known(ServerState::Leader, Some(799), Some(1), 800));
        assert!(!quorum_known(ServerState::Leader, Some(800), Some(1), 800));
        assert!(!quorum_known(ServerState::Leader, None, Some(1), 800));
        assert!(quorum_known(ServerState::Follower, None, Some(2), 800));
        assert!(!quorum_known(ServerState::Candidate, Some(1), None, 800));
        assert!(!quorum_known(ServerState::Learner, None, None, 800));
    }
}
