//! Committing a batch: through Raft on the leader, forwarded to the leader elsewhere, retried
//! with the same request ids until the deadline; and the cache of gRPC clients to peers.

use super::*;

impl ClusterNode {
    /// Drops the cached client of `addr`, so the next call connects anew.
    pub(super) fn forget_client(&self, addr: &str) {
        self.clients.lock().expect("clients lock").remove(addr);
    }

    pub(crate) fn client(&self, addr: &str) -> ClusterClient {
        let mut map = self.clients.lock().expect("clients lock");
        map.entry(addr.to_string())
            .or_insert_with(|| {
                ClusterClient::connect_with(
                    addr,
                    crate::network::DEFAULT_REQUEST_TIMEOUT,
                    self.config.tls.as_ref(),
                )
            })
            .clone()
    }

    /// Commits a batch: on the leader directly, else forwarded; retried with the same
    /// request ids until the commit timeout.
    pub(super) async fn commit(
        &self,
        cmds: &[Command],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<CommandResult>, SubmitError> {
        // A forward to a leader that died silently must not use up the whole deadline:
        // each attempt gets a slice, then the leader is looked up again.
        let attempt = (self.config.commit_timeout / 3)
            .clamp(Duration::from_millis(200), Duration::from_secs(1));
        let mut last_error = String::from("no leader");
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(SubmitError::Unavailable(last_error));
            }
            let (leader, leader_addr) = {
                let m = self.raft.metrics().borrow().clone();
                let addr = m.current_leader.and_then(|l| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
                (m.current_leader, addr)
            };
            match leader {
                Some(l) if l == self.config.node_id => match self.handover.enter() {
                    None => last_error = "leadership is being handed over".into(),
                    Some(_write) => {
                        let req = ClusterRequest::new(cmds.to_vec());
                        match tokio::time::timeout_at(deadline, self.raft.client_write(req)).await {
                            Ok(Ok(resp)) => return Ok(resp.data.results),
                            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                                last_error = format!("leadership moved to {:?}", f.leader_id);
                            }
                            Ok(Err(e)) => last_error = e.to_string(),
                            Err(_) => last_error = "commit timed out".into(),
                        }
                    }
                },
                Some(l) => match leader_addr {
                    Some(addr) => {
                        let client = self.client(&addr);
                        let until = deadline.min(tokio::time::Instant::now() + attempt);
                        match tokio::time::timeout_at(until, client.forward(cmds)).await {
                            Ok(Ok(ForwardOutcome::Applied(results))) => return Ok(results),
                            Ok(Ok(ForwardOutcome::NotLeader { .. })) => {
                                last_error = format!("node {l} is no longer leader");
                            }
                            Ok(Err(e)) => {
                                self.forget_client(&addr);
                                last_error = format!("forward to node {l}: {e}");
                            }
                            Err(_) => {
                                // The connection may be dead without a reset (the peer was
                                // cut off): build a fresh one for the next attempt.
                                self.forget_client(&addr);
                                last_error = format!("forward to node {l} timed out");
                            }
                        }
                    }
                    None => last_error = format!("leader {l} has no address"),
                },
                None => last_error = "no leader".into(),
            }
            // Wait for the leader to change or a short back-off.
            let mut m = self.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(50), m.changed()).await;
        }
    }
}
