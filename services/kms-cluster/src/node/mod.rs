//! A running cluster member ([`ClusterNode`]): opens the data directory (write-ahead log,
//! snapshot files, outbox), starts openraft with those stores and the gRPC network, serves the
//! cluster's gRPC API, bootstraps the cluster once from the static peer list, and commits
//! commands in batches (group commit) — on the leader directly, on a follower by forwarding the
//! batch to the leader.
//!
//! Retries reuse the commands' request ids, so a batch retried after a timeout or a
//! leader change is applied once (the state machine deduplicates by request id).
//!
//! One job per module: `config` (what a node is told), `disk` (data directory checks and
//! sizes), `batcher` (group commit of submitted commands), `forward` (committing a batch on the
//! leader or through it), `local` (serve-local answers and outbox replay), `quorum` (when the
//! node last knew a leader with a quorum), `bootstrap` (initializing a new cluster), `status`
//! (the Raft view for `/status`), `stop_snapshot` (the snapshot a stopping node takes). This
//! file holds the node itself: start, submit, shutdown.

mod batcher;
mod bootstrap;
mod config;
mod disk;
mod forward;
mod local;
mod quorum;
mod rejoin;
mod status;
mod stop_snapshot;

pub use config::{Bootstrap, NodeConfig, QuorumLoss};

use crate::grpc;
use crate::handover::{self, Handover, HandoverGate};
use crate::network::{ClusterClient, ForwardOutcome, GrpcNetworkFactory};
use crate::outbox::{self, Outbox};
use crate::{open_stores, ClusterRequest, LogStore, Node, NodeId, Raft, StateHandle};
use kms_state::{Command, CommandResult, HostState};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{RaftMetrics, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use batcher::Job;
use disk::refuse_old_format;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory holds the sled format of earlier versions.
    #[error("{0}")]
    OldFormat(String),
    /// The stores could not be loaded.
    #[error(transparent)]
    Store(#[from] crate::ClusterError),
    /// Invalid Raft configuration.
    #[error("raft configuration: {0}")]
    Config(String),
    /// openraft failed to start.
    #[error("raft start: {0}")]
    Raft(String),
    /// The gRPC listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// This node is not in its own peer list.
    #[error("node {0} is not in --peers")]
    NotInPeers(NodeId),
    /// The data directory's identity file refuses this node (another node id) or is damaged.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// The serve-local outbox could not be read.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// Why a command could not be committed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No leader could commit the batch within the commit timeout (quorum lost or
    /// leader unreachable).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Stopped,
}

/// A running cluster member.
pub struct ClusterNode {
    config: NodeConfig,
    raft: Raft,
    state: StateHandle,
    tx: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    clients: Mutex<HashMap<String, ClusterClient>>,
    stop: watch::Sender<bool>,
    grpc_addr: SocketAddr,
    log: LogStore,
    outbox: Outbox,
    /// Unix ms when this node last knew a leader with a quorum (for staleness).
    last_quorum_ms: AtomicU64,
    /// Closed when this node, stopping as leader, hands leadership over.
    handover: HandoverGate,
    /// serve-local: the applied state (at this log id) with the outbox applied on top.
    local_view: tokio::sync::Mutex<Option<(Option<crate::LogId>, HostState)>>,
    /// Who this data directory belongs to (node id, incarnation).
    identity: crate::identity::Identity,
    /// Active while a node that started with an empty store has not established its identity.
    quarantine: crate::identity::Quarantine,
    /// Peer addresses reported by an external discovery (see `rejoin`).
    noted_peers: Mutex<Option<Vec<String>>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("node_id", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Opens storage, starts Raft, the gRPC server, bootstrap and the batcher.
    pub async fn start(config: NodeConfig) -> Result<Arc<ClusterNode>, StartError> {
        let members = config.members();
        if !members.contains_key(&config.node_id) {
            return Err(StartError::NotInPeers(config.node_id));
        }
        let dir = config.data_dir.clone();
        let wal = config.wal;
        let node_id = config.node_id;
        let (log_store, sm, outbox, identity, fresh) = tokio::task::spawn_blocking(move || {
            refuse_old_format(&dir)?;
            let (log, sm) = open_stores(&dir, wal)?;
            let outbox = Outbox::open(&dir)?;
            let store_empty = log.wal().pointers().vote.is_none()
                && log.wal().last_log_id().is_none()
                && sm.handle().last_applied().is_none();
            let (identity, fresh) =
                crate::identity::load_or_create(&dir, node_id, store_empty, now_ms())?;
            Ok::<_, StartError>((log, sm, outbox, identity, fresh))
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))??;
        // A node with an empty store must not vote or accept entries before it knows that
        // the cluster does not hold an earlier incarnation of it (see `rejoin`).
        let quarantine = if fresh {
            crate::identity::Quarantine::active()
        } else {
            crate::identity::Quarantine::default()
        };
        let state = sm.handle();
        let raft_config = openraft::Config {
            cluster_name: "kms-cluster".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 500,
            purge_batch_size: 256,
            max_payload_entries: 64,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            GrpcNetworkFactory::with_tls(config.tls.clone()),
            log_store.clone(),
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let grpc_addr = listener.local_addr().unwrap_or(config.listen);
        let (stop, stop_rx) = watch::channel(false);
        let mut grpc_stop = stop_rx.clone();
        let grpc_raft = raft.clone();
        let gate = HandoverGate::default();
        let ctx = grpc::NodeContext {
            events: config.membership_events.clone(),
            tls: config.tls.clone(),
            handover: gate.clone(),
            quarantine: quarantine.clone(),
            state: Some(state.clone()),
            stop: None,
        };
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = grpc_stop.changed().await;
            };
            if let Err(e) = grpc::serve_node(listener, grpc_raft, ctx, shutdown).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });

        let (tx, rx) = mpsc::unbounded_channel();
        let node = Arc::new(ClusterNode {
            config,
            raft,
            state,
            tx: Mutex::new(Some(tx)),
            clients: Mutex::new(HashMap::new()),
            stop,
            grpc_addr,
            log: log_store,
            outbox,
            last_quorum_ms: AtomicU64::new(now_ms()),
            handover: gate,
            local_view: tokio::sync::Mutex::new(None),
            identity,
            quarantine,
            noted_peers: Mutex::new(None),
        });
        tokio::spawn(node.clone().batcher(rx));
        tokio::spawn(node.clone().replayer(node.stop.subscribe()));
        tokio::spawn(node.clone().quorum_watch(node.stop.subscribe()));
        if node.quarantine.is_active() {
            tokio::spawn(node.clone().establish_identity(node.stop.subscribe()));
        } else {
            tokio::spawn(node.clone().register_incarnation(node.stop.subscribe()));
        }
        tokio::spawn(node.clone().promote_rejoined(node.stop.subscribe()));
        tokio::spawn(node.clone().bootstrap(stop_rx));
        Ok(node)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The mutual TLS of the cluster port (None: plain), for calls to other nodes.
    pub fn tls(&self) -> Option<crate::network::TlsConfig> {
        self.config.tls.clone()
    }

    /// The Raft handle (membership changes, metrics).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Current Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<NodeId, Node> {
        self.raft.metrics().borrow().clone()
    }

    /// Runs `f` on the applied state.
    pub fn read<R>(&self, f: impl FnOnce(&HostState) -> R) -> R {
        self.state.read(f)
    }

    /// True when this node's Raft core runs and knows a leader (itself or another).
    pub fn has_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.running_state.is_ok() && m.current_leader.is_some()
    }

    /// Resolves when the Raft core stops with a fatal error (storage failure, panic):
    /// the process should exit so its supervisor restarts it from disk.
    pub async fn fatal(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(e) = &rx.borrow().running_state {
                return e.to_string();
            }
            if rx.changed().await.is_err() {
                return "raft metrics channel closed".into();
            }
        }
    }

    /// Size of the data directory in bytes (log, snapshots, outbox).
    pub fn data_dir_size(&self) -> u64 {
        crate::store::wal::dir_size(&self.config.data_dir)
    }

    /// Commits one command (batched with others) and returns its result.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, SubmitError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.tx.lock().expect("tx lock");
            let sender = guard.as_ref().ok_or(SubmitError::Stopped)?;
            sender
                .send((
                    cmd,
                    tokio::time::Instant::now(),
                    tx,
                    tracing::Span::current(),
                ))
                .map_err(|_| SubmitError::Stopped)?;
        }
        rx.await.map_err(|_| SubmitError::Stopped)?
    }

    /// Stops accepting commands, hands leadership over when this node leads (see
    /// [`crate::handover`]), stops Raft and the gRPC server, syncs the log. Returns what the
    /// hand-over achieved (None: nothing to hand over).
    pub async fn shutdown(&self) -> Option<Handover> {
        self.tx.lock().expect("tx lock").take();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let handover =
            handover::hand_over(&self.raft, &self.handover, |addr| self.client(addr)).await;
        match &handover {
            Some(Handover::Done {
                new_leader,
                new_term,
                took,
                ..
            }) => tracing::info!(
                new_leader,
                term = new_term,
                took_ms = took.as_millis() as u64,
                "leadership handed over"
            ),
            Some(Handover::Failed {
                successor, reason, ..
            }) => tracing::warn!(
                ?successor,
                reason,
                "leadership not handed over; the other voters will elect a leader"
            ),
            None => {}
        }
        match stop_snapshot::take(&self.raft, self.config.snapshot_every, stop_snapshot::DEADLINE)
            .await
        {
            stop_snapshot::Outcome::Taken { index, took } => tracing::info!(
                index,
                took_ms = took.as_millis() as u64,
                "final snapshot taken; the next start replays no log"
            ),
            stop_snapshot::Outcome::NotTaken => tracing::warn!(
                "no final snapshot before stopping; the next start replays the log since the last one"
            ),
            stop_snapshot::Outcome::Skipped => {}
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let _ = self.stop.send(true);
        let (tx, rx) = oneshot::channel();
        if self
            .log
            .wal()
            .sync(Box::new(move |r| {
                let _ = tx.send(r);
            }))
            .is_ok()
        {
            let _ = rx.await;
        }
        handover
    }
}
