//! serve-local mode: answering a batch from this node's state while no quorum commits it,
//! keeping it in the durable outbox, and replaying the outbox once a leader is reachable.

use super::*;

impl ClusterNode {
    /// serve-local: answers a batch from the applied state (with the outbox's pending commands
    /// applied on top) and keeps it in the durable outbox for replay.
    pub(super) async fn serve_locally(
        &self,
        cmds: &[Command],
        why: &str,
    ) -> Result<Vec<CommandResult>, SubmitError> {
        // One counting rule: the answer is what `HostState::apply` gives on the applied state
        // plus everything still waiting in the outbox (dedup included) — a preview kept while
        // the applied state does not move, rebuilt (an O(1) clone plus the outbox) when it does.
        // Held across the outbox write, so every answered command is in the next rebuild.
        let mut view = self.local_view.lock().await;
        let applied = self.state.last_applied();
        if !matches!(&*view, Some((at, _)) if *at == applied) {
            let mut preview = self.state.read(HostState::clone);
            for c in self.outbox.peek(usize::MAX).unwrap_or_default() {
                preview.apply(&c);
            }
            *view = Some((applied, preview));
        }
        let Some((_, preview)) = view.as_mut() else {
            unreachable!("set above")
        };
        let results: Vec<CommandResult> = cmds.iter().map(|c| preview.apply(c)).collect();
        if let Err(e) = self.outbox.push(cmds).await {
            // Not kept: forget the preview, it counted commands that are not pending.
            *view = None;
            return Err(SubmitError::Unavailable(format!("{why}; outbox: {e}")));
        }
        drop(view);
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
