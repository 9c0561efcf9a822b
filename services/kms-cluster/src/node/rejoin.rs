//! This node's identity in the cluster (see [`crate::identity`]): the check a node that
//! started with an empty store makes before it takes part in Raft (quarantine until its peers
//! say it is new, or until the leader has taken it back as a learner), the registration of its
//! incarnation, and, on the leader, promoting rejoined nodes back to voter once caught up.

use super::*;
use crate::events::{emit, MembershipChange, MembershipEvent, Origin};
use crate::identity::{decide, Verdict};
use crate::membership::{self, MembershipError};
use crate::pb::{IdentityAnswer, Rejoin};
use crate::{NodeStatus, Registration};
use std::collections::BTreeSet;

/// How often the identity loops look again.
const IDENTITY_ROUND: Duration = Duration::from_secs(1);

/// How often a repeated "still waiting" is logged.
const WAIT_NOTE_EVERY: Duration = Duration::from_secs(30);

impl ClusterNode {
    /// Whether this node still refuses Raft requests because its identity is not established.
    pub fn in_quarantine(&self) -> bool {
        self.quarantine.is_active()
    }

    /// This node's incarnation (see [`crate::identity::Identity`]).
    pub fn incarnation(&self) -> uuid::Uuid {
        self.identity.incarnation
    }

    /// Tells the node the addresses of its peers as an external discovery sees them (Kubernetes
    /// mode has no static peer list); the identity check asks them.
    pub fn note_peers(&self, addrs: Vec<String>) {
        *self.noted_peers.lock().expect("peers lock") = Some(addrs);
    }

    /// The peers to ask about this node's identity: the static peers and what discovery
    /// reported. None while an external discovery has not reported yet.
    fn identity_peers(&self) -> Option<Vec<String>> {
        let mut peers: BTreeSet<String> = self
            .config
            .members()
            .into_iter()
            .filter(|(id, _)| *id != self.config.node_id)
            .map(|(_, addr)| addr)
            .collect();
        let noted = self.noted_peers.lock().expect("peers lock").clone();
        match noted {
            Some(addrs) => peers.extend(addrs),
            None if self.config.bootstrap == Bootstrap::External => return None,
            None => {}
        }
        peers.remove(&self.config.advertise);
        Some(peers.into_iter().collect())
    }

    /// Runs while the node is in quarantine: asks the peers how they see it, and lifts the
    /// quarantine when [`decide`] says it may join, or once the leader took it back.
    pub(super) async fn establish_identity(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let me = self.config.node_id;
        let started = tokio::time::Instant::now();
        let mut noted: Option<(tokio::time::Instant, String)> = None;
        while self.quarantine.is_active() {
            if *stop.borrow() {
                return;
            }
            let outcome = match self.identity_peers() {
                None => Err("waiting for discovery to list the peers".to_string()),
                Some(peers) => {
                    let answers = self.ask_peers(&peers).await;
                    match decide(me, peers.len(), &answers) {
                        Verdict::Join => {
                            self.quarantine.lift();
                            tracing::info!(
                                incarnation = %self.identity.incarnation,
                                "empty store: no peer holds an earlier incarnation of this node; \
                                 taking part in Raft"
                            );
                            tokio::spawn(self.clone().register_incarnation(stop.clone()));
                            return;
                        }
                        Verdict::Rejoin {
                            leader_addr,
                            as_voter,
                        } => self.ask_rejoin(&leader_addr, as_voter).await,
                        Verdict::Wait(reason) => Err(reason),
                    }
                }
            };
            match outcome {
                Ok(()) => return,
                Err(reason) => {
                    let repeat = noted
                        .as_ref()
                        .is_some_and(|(at, r)| *r == reason && at.elapsed() < WAIT_NOTE_EVERY);
                    if !repeat {
                        tracing::warn!(%reason, "empty store: not taking part in Raft yet");
                        noted = Some((tokio::time::Instant::now(), reason));
                    }
                }
            }
            // Peers of a new cluster start within moments of each other: ask again soon at
            // first, then once a round.
            let pause = if started.elapsed() < Duration::from_secs(10) {
                IDENTITY_ROUND / 5
            } else {
                IDENTITY_ROUND
            };
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The answers of the peers that answered `Identity` within a second.
    async fn ask_peers(&self, peers: &[String]) -> Vec<IdentityAnswer> {
        let me = self.config.node_id;
        let mut asks = tokio::task::JoinSet::new();
        for addr in peers {
            let client = self.client(addr);
            asks.spawn(async move {
                tokio::time::timeout(Duration::from_secs(1), client.identity(me))
                    .await
                    .ok()
                    .and_then(Result::ok)
            });
        }
        let mut answers = Vec::new();
        while let Some(done) = asks.join_next().await {
            if let Ok(Some(answer)) = done {
                answers.push(answer);
            }
        }
        answers
    }

    /// Asks the leader to take this node back; lifts the quarantine when it did.
    async fn ask_rejoin(&self, leader_addr: &str, as_voter: bool) -> Result<(), String> {
        let ask = Rejoin {
            node_id: self.config.node_id,
            incarnation: self.identity.incarnation,
            addr: self.config.advertise.clone(),
            as_voter,
        };
        tracing::warn!(
            leader = %leader_addr,
            as_voter,
            incarnation = %ask.incarnation,
            "empty store, but the cluster knows this node: asking the leader to remove it and \
             take it back as a learner under its new incarnation"
        );
        let client = self.client(leader_addr);
        match tokio::time::timeout(self.config.commit_timeout * 5, client.rejoin(&ask)).await {
            Ok(Ok(())) => {
                self.quarantine.lift();
                tracing::warn!(
                    as_voter,
                    "taken back as a learner; catching up from the leader{}",
                    if as_voter {
                        " (it promotes this node to voter once caught up)"
                    } else {
                        ""
                    }
                );
                Ok(())
            }
            Ok(Err(e)) => Err(format!("rejoin through {leader_addr} failed: {e}")),
            Err(_) => Err(format!("rejoin through {leader_addr} timed out")),
        }
    }

    /// Records this node's incarnation in the registry once the node takes part in Raft
    /// (unless it is there already), retrying until it is applied here.
    pub(super) async fn register_incarnation(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let me = Registration {
            node_id: self.config.node_id,
            incarnation: self.identity.incarnation,
            voter_wanted: false,
        };
        loop {
            if self
                .state
                .registration(me.node_id)
                .is_some_and(|r| r.incarnation == me.incarnation)
            {
                return;
            }
            if let Some(addr) = self.leader_addr() {
                if let Err(e) = self.client(&addr).register(&me).await {
                    tracing::debug!(error = %e, "incarnation not registered yet");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(IDENTITY_ROUND * 2) => {}
            }
        }
    }

    /// The current leader's address, if a leader is known.
    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// On the leader: promotes the learners that rejoined as former voters once they have
    /// caught up, and clears their `voter_wanted` mark.
    pub(super) async fn promote_rejoined(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(IDENTITY_ROUND * 2) => {}
            }
            let m = self.metrics();
            if m.state != ServerState::Leader {
                continue;
            }
            // Held through the promotions: their membership changes and writes count as
            // writes under way for a hand-over, like any other write on the leader.
            let Some(_write) = self.handover.enter() else {
                continue;
            };
            for reg in self.state.registry().into_values() {
                if reg.voter_wanted {
                    self.promote_one(&m, reg).await;
                }
            }
        }
    }

    async fn promote_one(&self, m: &RaftMetrics<NodeId, Node>, reg: Registration) {
        let id = reg.node_id;
        let status = NodeStatus::from_metrics(m);
        // The same guard as `kmsctl cluster promote` (see `crate::membership`): caught up,
        // answering, no other change under way, bounded in time.
        match membership::check_promote(&status, id, membership::PROMOTE_MAX_LAG) {
            Err(MembershipError::AlreadyVoter(_) | MembershipError::NotMember(_)) => {}
            Err(e) => {
                tracing::debug!(node_id = id, reason = %e, "rejoined learner not promoted yet");
                return;
            }
            Ok(()) => {
                let before = status.voters();
                let tls = self.config.tls.clone();
                let result =
                    membership::promote(&self.raft, id, |addr| membership::answers(addr, tls))
                        .await;
                let error = result.as_ref().err().map(ToString::to_string);
                let mut after = before.clone();
                after.insert(id);
                emit(
                    self.config.membership_events.as_ref(),
                    MembershipEvent {
                        change: MembershipChange::ChangeVoters { before, after },
                        origin: Origin::Rejoin,
                        error: error.clone(),
                    },
                );
                if let Some(e) = error {
                    tracing::warn!(node_id = id, error = %e, "rejoined node not promoted yet");
                    return;
                }
                tracing::warn!(node_id = id, "rejoined node caught up and is a voter again");
            }
        }
        // A voter again (or removed meanwhile): clear the mark.
        let done = Registration {
            voter_wanted: false,
            ..reg
        };
        if let Err(e) = self.raft.client_write(ClusterRequest::register(done)).await {
            tracing::debug!(node_id = id, error = %e, "voter_wanted mark not cleared yet");
        }
    }
}
