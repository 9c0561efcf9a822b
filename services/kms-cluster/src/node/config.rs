//! [`NodeConfig`]: what a node is told — its id and addresses, peers, data directory, Raft
//! timings, batching and what to do without a quorum — and its defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{NodeId, WalOptions};

/// How a node is configured.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (stable across restarts).
    pub node_id: NodeId,
    /// Address the gRPC server binds.
    pub listen: SocketAddr,
    /// Address peers use to reach this node (defaults to `listen`).
    pub advertise: String,
    /// Static peer list used to bootstrap, including this node. Empty: a single-node
    /// cluster of this node alone.
    pub peers: BTreeMap<NodeId, String>,
    /// Data directory (Raft log, snapshots, outbox).
    pub data_dir: PathBuf,
    /// Write-ahead log tunables (segment size, decoded-entry cache).
    pub wal: WalOptions,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout range.
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot after this many log entries (entries are batches).
    pub snapshot_every: u64,
    /// Largest batch of commands per log entry.
    pub max_batch: usize,
    /// Batches committed concurrently (pipelining).
    pub max_inflight: usize,
    /// How long a batch may keep retrying (no leader, forwarding failures) before the
    /// submitters get [`SubmitError::Unavailable`] (fail-closed) or the batch is answered
    /// locally (serve-local).
    pub commit_timeout: Duration,
    /// What to do when no quorum commits a batch in time.
    pub quorum_loss: QuorumLoss,
    /// Who initializes the cluster.
    pub bootstrap: Bootstrap,
    /// Where membership operations (operator RPCs, bootstrap) are reported, for an
    /// audit trail; None: not reported.
    pub membership_events: Option<crate::events::MembershipEvents>,
    /// Mutual TLS for the cluster port and every outbound cluster connection; None:
    /// plaintext (loopback and tests only).
    pub tls: Option<crate::network::TlsConfig>,
}

/// Who initializes a fresh cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The lowest id of the static peer list initializes it with all peers as voters,
    /// after checking that no reachable peer already belongs to a cluster.
    StaticPeers,
    /// This node never initializes by itself: it waits to be added by a leader, or an
    /// external coordinator (kmsd's Kubernetes discovery) calls
    /// [`ClusterNode::initialize_alone`].
    External,
}

/// Behaviour when the cluster cannot commit (quorum lost, leader unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumLoss {
    /// Refuse: the request is not answered and the client tries another host.
    FailClosed,
    /// Answer from the last applied state, keep the command in a durable outbox and
    /// replay it (same request id) once a leader is reachable.
    ServeLocal,
}

impl std::str::FromStr for QuorumLoss {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail-closed" => Ok(Self::FailClosed),
            "serve-local" => Ok(Self::ServeLocal),
            other => Err(format!(
                "unknown quorum-loss mode {other:?} (fail-closed or serve-local)"
            )),
        }
    }
}

impl NodeConfig {
    /// Defaults for a node, given its id, gRPC address and data directory.
    pub fn new(node_id: NodeId, listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            node_id,
            listen,
            advertise: listen.to_string(),
            peers: BTreeMap::new(),
            data_dir,
            wal: WalOptions::default(),
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 2000,
            max_batch: 512,
            max_inflight: 2,
            commit_timeout: Duration::from_secs(2),
            quorum_loss: QuorumLoss::ServeLocal,
            bootstrap: Bootstrap::StaticPeers,
            membership_events: None,
            tls: None,
        }
    }

    /// The peer list, with this node alone when none was given.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        if self.peers.is_empty() {
            BTreeMap::from([(self.node_id, self.advertise.clone())])
        } else {
            self.peers.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_default_to_this_node_alone() {
        let mut c = NodeConfig::new(4, "127.0.0.1:9000".parse().unwrap(), "d".into());
        assert_eq!(
            c.members(),
            BTreeMap::from([(4, "127.0.0.1:9000".to_string())])
        );
        c.peers = BTreeMap::from([(1, "a:1".into()), (4, "b:2".into())]);
        assert_eq!(c.members(), c.peers);
    }

    #[test]
    fn quorum_loss_parses_both_modes_and_names_the_choices() {
        assert_eq!("fail-closed".parse(), Ok(QuorumLoss::FailClosed));
        assert_eq!("serve-local".parse(), Ok(QuorumLoss::ServeLocal));
        let err = "serve_local".parse::<QuorumLoss>().unwrap_err();
        assert!(err.contains("fail-closed or serve-local"), "{err}");
    }
}
