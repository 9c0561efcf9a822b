//! The snapshot a stopping node takes of what it has applied, so that its next start reads that
//! snapshot and replays next to no log: a clean restart (a rolling upgrade, a rescheduled pod)
//! costs the snapshot read alone. A crash still replays the entries after the last snapshot.
//!
//! Owns the rule for when it is worth taking ([`worth_taking`]) and the bounded wait for it
//! ([`take`]); the node calls it on shutdown after the hand-over, while Raft still runs.

use std::time::Duration;

use crate::Raft;

/// How long a stopping node waits for its final snapshot; past it the node stops without
/// one (the next start replays the log, as after a crash).
pub(super) const DEADLINE: Duration = Duration::from_secs(5);

/// What the final snapshot came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Too few entries after the last snapshot to be worth the write.
    Skipped,
    /// The snapshot covers everything applied when it was asked for.
    Taken { index: u64, took: Duration },
    /// Raft refused (it stopped) or the deadline passed first.
    NotTaken,
}

/// Whether entries applied after the last snapshot are worth a snapshot before stopping: at
/// least a tenth of the snapshot interval (at least one). Below that the replay costs less
/// than writing the whole state again.
pub(super) fn worth_taking(applied: Option<u64>, snapshot: Option<u64>, every: u64) -> bool {
    let Some(applied) = applied else {
        return false;
    };
    let tail = match snapshot {
        Some(s) => applied.saturating_sub(s),
        None => applied + 1,
    };
    tail >= (every / 10).max(1)
}

/// Asks Raft for a snapshot of what is applied now and waits (at most `deadline`) until
/// Raft reports a snapshot at least that far.
pub(super) async fn take(raft: &Raft, every: u64, deadline: Duration) -> Outcome {
    let (applied, snapshot) = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
    };
    let Some(target) = applied.filter(|_| worth_taking(applied, snapshot, every)) else {
        return Outcome::Skipped;
    };
    let started = tokio::time::Instant::now();
    if raft.trigger().snapshot().await.is_err() {
        return Outcome::NotTaken;
    }
    let reached = raft
        .wait(Some(deadline))
        .metrics(
            |m| m.snapshot.is_some_and(|l| l.index >= target),
            "final snapshot before stopping",
        )
        .await;
    match reached.ok().and_then(|m| m.snapshot) {
        Some(l) => Outcome::Taken {
            index: l.index,
            took: started.elapsed(),
        },
        None => Outcome::NotTaken,
    }
}

#[cfg(test)]
mod tests {
    use super::worth_taking;

    #[test]
    fn nothing_applied_needs_no_snapshot() {
        assert!(!worth_taking(None, None, 2000));
    }

    #[test]
    fn a_short_tail_is_replayed_instead() {
        assert!(!worth_taking(Some(1199), Some(1000), 2000));
        assert!(worth_taking(Some(1200), Some(1000), 2000));
    }

    #[test]
    fn without_a_snapshot_every_applied_entry_counts() {
        assert!(!worth_taking(Some(198), None, 2000));
        assert!(worth_taking(Some(199), None, 2000));
    }

    #[test]
    fn a_tiny_interval_still_needs_one_entry() {
        assert!(!worth_taking(Some(5), Some(5), 3));
        assert!(worth_taking(Some(6), Some(5), 3));
    }
}
