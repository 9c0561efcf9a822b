//! serve-local mode: answering a batch from this node's state while no quorum commits it,
//! keeping it in the durable outbox, and replaying the outbox once a leader is reachable.

use super::*;

impl ClusterNode {
    /// serve-local: answers a batch from the applied state and keeps it in the durable
    /// outbox for replay.
    pub(super) async fn serve_locally(
        &self,
        cmds: &[Command],
        why: &str,
    ) -> Result<Vec<CommandResult>, SubmitError> {
        let pending = self.outbox.peek(10_000).unwrap_or_default();
        let results: Vec<CommandResult> = self.state.read(|st| {
            let mut seen = pending.clone();
            cmds.iter()
                .map(|c| {
                    let r = outbox::local_result(st, &seen, c);
                    seen.push(c.clone());
                    r
                })
                .collect()
        });
        self.outbox
            .push(cmds)
            .await
            .map_err(|e| SubmitError::Unavailable(format!("{why}; outbox: {e}")))?;
        tracing::warn!(
            commands = cmds.len(),
            reason = why,
            outbox = self.outbox.len(),
            "no quorum: answered from local state, kept in the outbox"
        );
        Ok(results)
    }

    /// Replays the outbox through the normal commit path whenever a leader is known.
    pub(super) async fn replayer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(outbox::REPLAY_INTERVAL) => {}
            }
            if self.outbox.is_empty() || !self.has_leader() {
                continue;
            }
            let cmds = match self.outbox.peek(self.config.max_batch) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    continue;
                }
            };
            if cmds.is_empty() {
                continue;
            }
            let deadline = tokio::time::Instant::now() + self.config.commit_timeout;
            match self.commit(&cmds, deadline).await {
                Ok(_) => {
                    if let Err(e) = self.outbox.remove(&cmds).await {
                        tracing::error!(error = %e, "cannot trim the outbox");
                    } else {
                        tracing::info!(
                            replayed = cmds.len(),
                            left = self.outbox.len(),
                            "outbox replayed"
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, "outbox replay postponed"),
            }
        }
    }
}
