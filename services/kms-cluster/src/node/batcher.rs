//! Group commit: collects submitted commands into batches (up to `max_batch`, at most
//! `max_inflight` batches at once), gives each batch a deadline from its oldest command, commits
//! it (see `forward`) and answers every submitter; in serve-local mode an uncommittable batch is
//! answered locally (see `local`).

use super::*;

/// A command waiting to be committed, with the time it was submitted (its deadline is
/// that plus the commit timeout, however long it waits for a batch slot).
pub(super) type Job = (
    Command,
    tokio::time::Instant,
    oneshot::Sender<Result<CommandResult, SubmitError>>,
    tracing::Span,
);

impl ClusterNode {
    pub(super) async fn batcher(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Job>) {
        // A batch waits for the leader's fsync and its followers' acknowledgements (a
        // forwarded one also for the round trip to the leader): few in flight make the next
        // batch gather more requests (one log entry, one fsync, one forward for many). Keeping
        // more forwarded batches in flight than a leader keeps was measured slower through a
        // follower (docs/benchmarks.md, "Step 6: the cluster port and forwarding").
        let inflight = Arc::new(Semaphore::new(self.config.max_inflight.max(1)));
        while let Some(first) = rx.recv().await {
            // A slot first, then the batch: whatever arrives while the batches in flight
            // still wait for their flush and acknowledgements joins this one, so under load
            // batches fill (one log entry, one fsync, one append to each follower for many)
            // and an idle node still commits a lone request at once. Waiting for a slot
            // counts against the oldest request's deadline: a request never waits longer
            // than the commit timeout because earlier batches are stuck.
            let oldest = first.1 + self.config.commit_timeout;
            let permit =
                match tokio::time::timeout_at(oldest, inflight.clone().acquire_owned()).await {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(_)) => break,
                    Err(_) => None,
                };
            let mut jobs = vec![first];
            while jobs.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let deadline = jobs
                .iter()
                .map(|(_, t, _, _)| *t)
                .min()
                .unwrap_or_else(tokio::time::Instant::now)
                + self.config.commit_timeout;
            let node = self.clone();
            // One span per batch: child of the first request's span, linked to the others.
            let span = tracing::trace_span!(
                target: "kms_trace",
                parent: &jobs[0].3,
                "raft.commit",
                batch = jobs.len()
            );
            for (_, _, _, s) in &jobs[1..] {
                span.follows_from(s);
            }
            let task = async move {
                let (cmds, txs): (Vec<Command>, Vec<_>) =
                    jobs.into_iter().map(|(c, _, tx, _)| (c, tx)).unzip();
                let committed = if permit.is_some() {
                    node.commit(&cmds, deadline).await
                } else {
                    Err(SubmitError::Unavailable(
                        "earlier batches still waiting for a quorum".into(),
                    ))
                };
                let result = match committed {
                    Err(SubmitError::Unavailable(why))
                        if node.config.quorum_loss == QuorumLoss::ServeLocal =>
                    {
                        node.serve_locally(&cmds, &why).await
                    }
                    other => other,
                };
                match result {
                    Ok(results) => {
                        for (tx, r) in txs.into_iter().zip(results) {
                            let _ = tx.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        for tx in txs {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
                drop(permit);
            };
            tokio::spawn(tracing::Instrument::instrument(task, span));
        }
    }
}
