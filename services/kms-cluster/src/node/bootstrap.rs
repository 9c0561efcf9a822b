//! Initializing a new cluster: once, from the static peer list (lowest id) or on request of an
//! external coordinator, never when a reachable peer already belongs to a cluster.

use super::*;

impl ClusterNode {
    /// Initializes the cluster once: the lowest id in the peer list does it, after
    /// checking that no reachable peer already belongs to an initialized cluster.
    pub(super) async fn bootstrap(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.config.bootstrap != Bootstrap::StaticPeers {
            return;
        }
        let members = self.config.members();
        let first = *members.keys().next().expect("non-empty");
        if first != self.config.node_id {
            return;
        }
        loop {
            if *stop.borrow() {
                return;
            }
            if self.quarantine.is_active() {
                // Not before the node knows it is not a wiped member (see `rejoin`).
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
            match self.raft.is_initialized().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read raft state");
                    return;
                }
            }
            let mut someone_initialized = false;
            for (id, addr) in &members {
                if *id == self.config.node_id {
                    continue;
                }
                if self.peer_in_cluster(addr).await {
                    someone_initialized = true;
                }
            }
            if someone_initialized {
                tracing::info!(
                    "a peer already belongs to an initialized cluster; not bootstrapping"
                );
                return;
            }
            let nodes: BTreeMap<NodeId, Node> = members
                .iter()
                .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
                .collect();
            match self.raft.initialize(nodes).await {
                Ok(()) => {
                    tracing::info!(members = ?members, "cluster initialized");
                    crate::events::emit(
                        self.config.membership_events.as_ref(),
                        crate::events::MembershipEvent {
                            change: crate::events::MembershipChange::Initialize {
                                members: members.clone(),
                            },
                            origin: crate::events::Origin::Bootstrap,
                            error: None,
                        },
                    );
                    return;
                }
                Err(e) => {
                    tracing::info!(error = %e, "initialize not done; will check again");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Whether the node at `addr` answers and already belongs to an initialized cluster
    /// (has a membership or knows a leader). Unreachable: false.
    pub async fn peer_in_cluster(&self, addr: &str) -> bool {
        match tokio::time::timeout(Duration::from_secs(1), self.client(addr).status()).await {
            Ok(Ok(status)) => status.in_cluster(),
            _ => false,
        }
    }

    /// Initializes a one-voter cluster of this node (reachable at `advertise`) when its
    /// Raft store is fresh and none of `peers` (addresses) already belongs to a cluster.
    /// Returns whether this call initialized it; never re-initializes.
    pub async fn initialize_alone(
        &self,
        advertise: &str,
        peers: &[String],
    ) -> Result<bool, String> {
        if self.quarantine.is_active() {
            return Ok(false);
        }
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(false);
        }
        for addr in peers {
            if self.peer_in_cluster(addr).await {
                tracing::info!(peer = %addr, "a peer already belongs to a cluster; not initializing");
                return Ok(false);
            }
        }
        let nodes = BTreeMap::from([(
            self.config.node_id,
            Node {
                addr: advertise.to_string(),
            },
        )]);
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(node_id = self.config.node_id, addr = %advertise, "cluster initialized with this node as its only voter");
        Ok(true)
    }
}
