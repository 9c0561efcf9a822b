//! Leadership hand-over when a leader stops gracefully.
//!
//! Owns both sides of the protocol:
//! - the leader ([`hand_over`]): closes its write gate ([`HandoverGate`]: forwarded batches
//!   get "not the leader" and are retried by their senders), waits until everything in its
//!   log is applied and a voter has matched all of it ([`successors`]), stops sending
//!   heartbeats and asks that voter to campaign (`TakeLeadership` RPC), then waits until a
//!   leader of a newer term is known before Raft is stopped;
//! - the successor ([`accept`]): checks the request comes from the leader it follows, at
//!   its term, and that it holds the leader's last log index, then campaigns until a leader
//!   of a newer term is known or a deadline passes.
//!
//! openraft 0.9 has no transfer call, and voters refuse a vote while their leader lease
//! (`election_timeout_max` since the leader's last message) runs. The old leader's own vote
//! dates from its election (heartbeats do not renew it), so once it has led for longer
//! than a lease it grants the successor's vote at once: in a
//! 3-voter cluster the successor wins immediately (its vote plus the old leader's). With
//! more voters the successor keeps campaigning every half heartbeat interval and wins as soon
//! as the others' leases expire — still before their own election timers would fire
//! (lease plus a random election timeout), and without split votes. If anything fails the
//! remaining voters elect a leader on their own, as after a crash.

use crate::network::ClusterClient;
use crate::{Node, NodeId, Raft};
use openraft::{RaftMetrics, ServerState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Closed while this node hands its leadership over: it takes no new writes. It also counts
/// the writes under way ([`HandoverGate::enter`]): a write handed to Raft just before the
/// gate closed may not be in the log yet, so the hand-over waits for them before it picks a
/// successor (else the successor is told a last log index that a later entry makes stale).
#[derive(Debug, Clone, Default)]
pub struct HandoverGate(Arc<GateState>);

#[derive(Debug, Default)]
struct GateState {
    closed: AtomicBool,
    writers: AtomicUsize,
}

/// A write admitted through an open gate; the gate counts it until it is dropped.
#[derive(Debug)]
pub struct GateWrite(Arc<GateState>);

impl Drop for GateWrite {
    fn drop(&mut self) {
        self.0.writers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HandoverGate {
    /// Stops new writes on this node.
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
    }

    /// Whether writes are refused (a hand-over has begun).
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::SeqCst)
    }

    /// Admits one write (hold the result until the write returns), or None once closed.
    /// Counted before the check, so a write either sees the gate closed or is seen by
    /// [`HandoverGate::writers`] after `close`.
    pub fn enter(&self) -> Option<GateWrite> {
        self.0.writers.fetch_add(1, Ordering::SeqCst);
        let write = GateWrite(self.0.clone());
        if self.is_closed() {
            return None; // dropping `write` uncounts it
        }
        Some(write)
    }

    /// Writes admitted and not yet returned.
    pub fn writers(&self) -> usize {
        self.0.writers.load(Ordering::SeqCst)
    }
}

/// What a hand-over achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// A leader of a newer term took over.
    Done {
        /// The voter asked to campaign.
        successor: NodeId,
        /// The leader now known (normally `successor`).
        new_leader: NodeId,
        /// The term this node led.
        from_term: u64,
        /// The new leader's term.
        new_term: u64,
        /// From closing the gate to seeing the new leader.
        took: Duration,
    },
    /// Leadership was not handed over; the other voters elect a leader by themselves.
    Failed {
        /// The voter asked to campaign, if one was picked.
        successor: Option<NodeId>,
        /// The term this node led.
        from_term: u64,
        /// Why.
        reason: String,
        /// Time spent trying.
        took: Duration,
    },
}

/// Why no voter can take over right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoSuccessor {
    /// This node does not lead.
    #[error("this node is not the leader")]
    NotLeader,
    /// This node is the only voter.
    #[error("no other voter")]
    NoOtherVoter,
    /// Entries are not applied yet on the leader.
    #[error("log not yet applied up to its last index")]
    Unapplied,
    /// No other voter has matched the whole log yet.
    #[error("no voter has the whole log yet")]
    NoneCaughtUp,
}

/// The voters that could take over, in the order to ask them: those that have matched the
/// leader's whole (applied) log, lowest id first (deterministic, so operators can tell in
/// advance). A voter that does not answer is skipped for the next.
pub fn successors(m: &RaftMetrics<NodeId, Node>) -> Result<Vec<NodeId>, NoSuccessor> {
    if m.state != ServerState::Leader {
        return Err(NoSuccessor::NotLeader);
    }
    let others: Vec<NodeId> = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|id| *id != m.id)
        .collect();
    if others.is_empty() {
        return Err(NoSuccessor::NoOtherVoter);
    }
    let last = m.last_log_index;
    if m.last_applied.map(|l| l.index) != last {
        return Err(NoSuccessor::Unapplied);
    }
    let replication = m.replication.as_ref();
    let caught_up: Vec<NodeId> = others
        .into_iter()
        .filter(|id| {
            let matched = replication
                .and_then(|r| r.get(id))
                .and_then(|l| l.map(|l| l.index));
            matched == last
        })
        .collect();
    if caught_up.is_empty() {
        return Err(NoSuccessor::NoneCaughtUp);
    }
    Ok(caught_up)
}

/// Hands leadership over (leader side); None when there is nothing to hand over (not the
/// leader, or the only voter). `client` gives the cluster client for a node address.
pub async fn hand_over(
    raft: &Raft,
    gate: &HandoverGate,
    client: impl Fn(&str) -> ClusterClient,
) -> Option<Handover> {
    let start = Instant::now();
    let first = raft.metrics().borrow().clone();
    match successors(&first) {
        Err(NoSuccessor::NotLeader) | Err(NoSuccessor::NoOtherVoter) => return None,
        _ => {}
    }
    let from_term = first.current_term;
    let config = raft.config().clone();
    let heartbeat = Duration::from_millis(config.heartbeat_interval.max(10));
    let lease = Duration::from_millis(config.election_timeout_max);
    let failed = |successor: Option<NodeId>, reason: String| Handover::Failed {
        successor,
        from_term,
        reason,
        took: start.elapsed(),
    };
    gate.close();
    tracing::info!(term = from_term, "handing leadership over: writes stopped");

    // 1. Everything written is applied and some voter has all of it.
    //    One heartbeat per heartbeat interval: each one changes the metrics, so waking on
    //    every change and triggering again spun (thousands of heartbeats a second while no
    //    voter could be reached).
    let catch_up_until = start + 2 * lease;
    let mut rx = raft.metrics();
    let mut next_heartbeat = Instant::now();
    let candidates = loop {
        let m = rx.borrow_and_update().clone();
        // Writes admitted before the gate closed are waited for: until they return, the
        // log may still grow.
        let ready = if gate.writers() > 0 {
            Err(NoSuccessor::Unapplied)
        } else {
            successors(&m)
        };
        match ready {
            Ok(ids) => break ids,
            Err(NoSuccessor::NotLeader) => {
                return Some(failed(None, "lost leadership while preparing".into()))
            }
            Err(e) if Instant::now() >= catch_up_until => return Some(failed(None, e.to_string())),
            Err(_) => {}
        }
        if Instant::now() >= next_heartbeat {
            let _ = raft.trigger().heartbeat().await;
            next_heartbeat = Instant::now() + heartbeat;
        }
        let wait = next_heartbeat.saturating_duration_since(Instant::now());
        if let Ok(Err(_)) = tokio::time::timeout(wait, rx.changed()).await {
            tokio::time::sleep(wait).await; // metrics gone (core stopped): no busy loop
        }
    };

    // 2. Stop renewing the voters' lease, never campaign again here, ask the candidates
    //    in turn until one accepts (each gets half the minimum election timeout: a
    //    reachable peer answers in milliseconds).
    raft.runtime_config().heartbeat(false);
    raft.runtime_config().elect(false);
    let last_log_index = rx.borrow().last_log_index;
    let ask_timeout = Duration::from_millis(config.election_timeout_min / 2).max(heartbeat);
    let members = first.membership_config.membership().clone();
    let mut refusals = Vec::new();
    let mut successor = None;
    for id in candidates {
        let Some(addr) = members.get_node(&id).map(|n| n.addr.clone()) else {
            refusals.push(format!("node {id} has no address"));
            continue;
        };
        let peer = client(&addr);
        let ask = peer.take_leadership(first.id, from_term, last_log_index);
        match tokio::time::timeout(ask_timeout, ask).await {
            Ok(Ok(())) => {
                successor = Some(id);
                break;
            }
            Ok(Err(e)) => refusals.push(format!("node {id}: {e}")),
            Err(_) => refusals.push(format!("node {id} did not answer")),
        }
    }
    let Some(successor) = successor else {
        return Some(failed(None, refusals.join("; ")));
    };

    // 3. Wait for a leader of a newer term (the successor, unless it failed).
    let until = Instant::now() + 3 * lease;
    loop {
        let m = rx.borrow_and_update().clone();
        if let Some(new_leader) = m.current_leader.filter(|l| *l != m.id) {
            if m.current_term > from_term {
                return Some(Handover::Done {
                    successor,
                    new_leader,
                    from_term,
                    new_term: m.current_term,
                    took: start.elapsed(),
                });
            }
        }
        if Instant::now() >= until {
            return Some(failed(
                Some(successor),
                "no new leader before the deadline".into(),
            ));
        }
        let _ = tokio::time::timeout_at(until, rx.changed()).await;
    }
}

/// Why a `TakeLeadership` request was refused (successor side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sender is not the leader this node follows at that term.
    #[error("node {from} at term {term} is not my leader (leader {leader:?}, term {my_term})")]
    NotMyLeader {
        /// Sender.
        from: NodeId,
        /// Sender's term.
        term: u64,
        /// The leader this node knows.
        leader: Option<NodeId>,
        /// This node's term.
        my_term: u64,
    },
    /// This node is not a voter.
    #[error("not a voter")]
    NotVoter,
    /// This node lacks entries the leader has.
    #[error("log behind: have {have:?}, leader has {want:?}")]
    Behind {
        /// This node's last log index.
        have: Option<u64>,
        /// The leader's.
        want: Option<u64>,
    },
}

/// Successor side: checks the request and starts campaigning in the background.
pub fn accept(
    raft: &Raft,
    from: NodeId,
    term: u64,
    last_log_index: Option<u64>,
) -> Result<(), Refusal> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(from) || m.current_term != term || from == m.id {
        return Err(Refusal::NotMyLeader {
            from,
            term,
            leader: m.current_leader,
            my_term: m.current_term,
        });
    }
    if !m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == m.id)
    {
        return Err(Refusal::NotVoter);
    }
    if m.last_log_index < last_log_index {
        return Err(Refusal::Behind {
            have: m.last_log_index,
            want: last_log_index,
        });
    }
    tracing::info!(from, term, "taking leadership over: campaigning");
    tokio::spawn(campaign(raft.clone(), term));
    Ok(())
}

/// Campaigns until a leader of a term after `term` is known, for at most three leases:
/// once at once (enough when the old leader's vote completes a quorum), then from the end
/// of this node's own lease — the other followers heard the same last heartbeat, so theirs
/// ends about then — every half heartbeat interval.
async fn campaign(raft: Raft, term: u64) {
    let config = raft.config().clone();
    // Half a heartbeat: the others heard the leader's last message at slightly different
    // times, so their leases end a few milliseconds apart.
    let retry = Duration::from_millis((config.heartbeat_interval / 2).max(10));
    let lease = Duration::from_millis(config.election_timeout_max);
    let until = Instant::now() + 3 * lease;
    // When the leader's last message reached this node, before campaigning changes it.
    let heard = raft
        .with_raft_state(|st| st.vote_last_modified())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(Instant::now);
    let leases_end = heard + lease + Duration::from_millis(20);
    let mut rx = raft.metrics();
    let settled = |m: &RaftMetrics<NodeId, Node>| {
        m.running_state.is_err() || (m.current_term > term && m.current_leader.is_some())
    };
    let mut attempts = 0u32;
    let mut last_started = term;
    loop {
        if settled(&rx.borrow_and_update()) {
            let m = rx.borrow();
            tracing::info!(
                attempts,
                leader = ?m.current_leader,
                term = m.current_term,
                "leadership taken over"
            );
            return;
        }
        if Instant::now() >= until {
            tracing::warn!(
                attempts,
                "no leader after the hand-over; normal elections go on"
            );
            return;
        }
        let (state, current) = {
            let m = rx.borrow();
            (m.state, m.current_term)
        };
        if state == ServerState::Candidate && current > last_started {
            // openraft's own election timer has just started a newer campaign: let it run.
            last_started = current;
        } else {
            attempts += 1;
            last_started = current + 1;
            if raft.trigger().elect().await.is_err() {
                return;
            }
        }
        let mut next = Instant::now() + retry;
        if attempts == 1 {
            next = next.max(leases_end);
        }
        let next = next.min(until);
        while Instant::now() < next {
            if tokio::time::timeout_at(next, rx.changed()).await.is_err() {
                break;
            }
            if settled(&rx.borrow()) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn leader_metrics(
        voters: &[NodeId],
        last: u64,
        applied: u64,
        matched: &[(NodeId, Option<u64>)],
    ) -> RaftMetrics<NodeId, Node> {
        let mut m = RaftMetrics::new_initial(1);
        m.state = ServerState::Leader;
        m.current_term = 1;
        m.current_leader = Some(1);
        m.last_log_index = Some(last);
        m.last_applied = Some(log_id(applied));
        let nodes: BTreeMap<NodeId, Node> = voters
            .iter()
            .map(|id| (*id, Node::new(format!("n{id}:1"))))
            .collect();
        let ids: BTreeSet<NodeId> = voters.iter().copied().collect();
        let membership = Membership::new(vec![ids], nodes);
        m.membership_config = Arc::new(StoredMembership::new(Some(log_id(1)), membership));
        m.replication = Some(matched.iter().map(|(id, i)| (*id, i.map(log_id))).collect());
        m
    }

    #[test]
    fn asks_voters_with_the_whole_log_lowest_id_first() {
        let m = leader_metrics(
            &[1, 2, 3, 4],
            10,
            10,
            &[(2, Some(9)), (3, Some(10)), (4, Some(10))],
        );
        assert_eq!(successors(&m), Ok(vec![3, 4]));
    }

    #[test]
    fn learners_never_take_over() {
        let mut m = leader_metrics(&[1, 2], 10, 10, &[(2, Some(9)), (5, Some(10))]);
        assert_eq!(successors(&m), Err(NoSuccessor::NoneCaughtUp));
        m.replication = Some(BTreeMap::from([(2, Some(log_id(10)))]));
        assert_eq!(successors(&m), Ok(vec![2]));
    }

    #[test]
    fn waits_for_the_leader_to_apply_everything() {
        let m = leader_metrics(&[1, 2], 10, 9, &[(2, Some(10))]);
        assert_eq!(successors(&m), Err(NoSuccessor::Unapplied));
    }

    #[test]
    fn nothing_to_hand_over_alone_or_as_follower() {
        let m = leader_metrics(&[1], 10, 10, &[]);
        assert_eq!(successors(&m), Err(NoSuccessor::NoOtherVoter));
        let mut f = leader_metrics(&[1, 2], 10, 10, &[(2, Some(10))]);
        f.state = ServerState::Follower;
        assert_eq!(successors(&f), Err(NoSuccessor::NotLeader));
    }

    #[test]
    fn a_voter_with_nothing_matched_is_not_caught_up() {
        let m = leader_metrics(&[1, 2], 10, 10, &[(2, None)]);
        assert_eq!(successors(&m), Err(NoSuccessor::NoneCaughtUp));
    }

    #[test]
    fn the_gate_counts_admitted_writes_and_refuses_after_close() {
        let gate = HandoverGate::default();
        let a = gate.enter().expect("open gate admits");
        let b = gate.enter().expect("open gate admits");
        assert_eq!(gate.writers(), 2);
        gate.close();
        assert!(gate.enter().is_none(), "a closed gate admits nothing");
        assert_eq!(gate.writers(), 2, "a refused write is not counted");
        drop(a);
        assert_eq!(gate.writers(), 1);
        drop(b);
        assert_eq!(gate.writers(), 0);
    }
}
