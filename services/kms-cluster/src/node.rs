//! A running cluster member: opens the sled database, starts openraft with the sled stores
//! and the gRPC network, serves the cluster's gRPC API, bootstraps the cluster once from
//! the static peer list, and commits commands in batches (group commit) — on the leader
//! directly, on a follower by forwarding the batch to the leader.
//!
//! Retries reuse the commands' request ids, so a batch retried after a timeout or a
//! leader change is applied once (the state machine deduplicates by request id).

use crate::grpc;
use crate::handover::{self, Handover, HandoverGate};
use crate::network::{ClusterClient, ForwardOutcome, GrpcNetworkFactory};
use crate::outbox::{self, Outbox};
use crate::{open_stores, ClusterRequest, Node, NodeId, Raft, StateHandle};
use kms_state::{Command, CommandResult, HostState};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{RaftMetrics, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

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
    /// sled data directory.
    pub data_dir: PathBuf,
    /// sled page cache in bytes.
    pub cache_bytes: u64,
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

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
            cache_bytes: 16 * 1024 * 1024,
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 2000,
            max_batch: 512,
            max_inflight: 16,
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

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The sled database could not be opened.
    #[error("cannot open {dir}: {source}")]
    Open {
        /// Data directory.
        dir: PathBuf,
        /// Cause.
        source: sled::Error,
    },
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

/// A command waiting to be committed, with the time it was submitted (its deadline is
/// that plus the commit timeout, however long it waits for a batch slot).
type Job = (
    Command,
    tokio::time::Instant,
    oneshot::Sender<Result<CommandResult, SubmitError>>,
    tracing::Span,
);

/// A running cluster member.
pub struct ClusterNode {
    config: NodeConfig,
    raft: Raft,
    state: StateHandle,
    tx: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    clients: Mutex<HashMap<String, ClusterClient>>,
    stop: watch::Sender<bool>,
    grpc_addr: SocketAddr,
    db: sled::Db,
    outbox: Outbox,
    /// Unix ms when this node last knew a leader with a quorum (for staleness).
    last_quorum_ms: AtomicU64,
    /// Closed when this node, stopping as leader, hands leadership over.
    handover: HandoverGate,
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
        let cache = config.cache_bytes;
        let db = tokio::task::spawn_blocking(move || {
            sled::Config::new().path(&dir).cache_capacity(cache).open()
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?
        .map_err(|source| StartError::Open {
            dir: config.data_dir.clone(),
            source,
        })?;
        let (log_store, sm) = open_stores(&db)?;
        let outbox = Outbox::open(&db).map_err(|e| StartError::Raft(e.to_string()))?;
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
            log_store,
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
        let grpc_events = config.membership_events.clone();
        let grpc_tls = config.tls.clone();
        let gate = HandoverGate::default();
        let grpc_gate = gate.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = grpc_stop.changed().await;
            };
            if let Err(e) = grpc::serve_with_tls(
                listener,
                grpc_raft,
                grpc_events,
                grpc_tls,
                grpc_gate,
                shutdown,
            )
            .await
            {
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
            db,
            outbox,
            last_quorum_ms: AtomicU64::new(now_ms()),
            handover: gate,
        });
        tokio::spawn(node.clone().batcher(rx));
        tokio::spawn(node.clone().replayer(node.stop.subscribe()));
        tokio::spawn(node.clone().quorum_watch(node.stop.subscribe()));
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

    /// Size of the data directory in bytes.
    pub fn data_dir_size(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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
    /// [`crate::handover`]), stops Raft and the gRPC server, flushes sled. Returns what the
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
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let _ = self.stop.send(true);
        let _ = self.db.flush_async().await;
        handover
    }

    async fn batcher(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Job>) {
        let inflight = Arc::new(Semaphore::new(self.config.max_inflight.max(1)));
        while let Some(first) = rx.recv().await {
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
            // Waiting for a slot counts against the deadline: a request never waits longer
            // than the commit timeout because earlier batches are stuck.
            let permit =
                match tokio::time::timeout_at(deadline, inflight.clone().acquire_owned()).await {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(_)) => break,
                    Err(_) => None,
                };
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

    /// Drops the cached client of `addr`, so the next call connects anew.
    fn forget_client(&self, addr: &str) {
        self.clients.lock().expect("clients lock").remove(addr);
    }

    fn client(&self, addr: &str) -> ClusterClient {
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
    async fn commit(
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
                Some(l) if l == self.config.node_id && self.handover.is_closed() => {
                    last_error = "leadership is being handed over".into();
                }
                Some(l) if l == self.config.node_id => {
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

    /// serve-local: answers a batch from the applied state and keeps it in the durable
    /// outbox for replay.
    async fn serve_locally(
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
    async fn replayer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
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

    /// Tracks when this node last saw a leader backed by a quorum.
    async fn quorum_watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            let m = self.raft.metrics().borrow().clone();
            if self.quorum_known(&m) {
                self.last_quorum_ms.store(now_ms(), Ordering::Relaxed);
            }
        }
    }

    /// Whether these metrics show a leader backed by a quorum: a leader acknowledged by
    /// a quorum within the election timeout, or any other role that knows a leader.
    fn quorum_known(&self, m: &RaftMetrics<NodeId, Node>) -> bool {
        match m.state {
            ServerState::Leader => m
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < self.config.election_timeout_ms.1),
            _ => m.current_leader.is_some(),
        }
    }

    /// Commands waiting in the serve-local outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// How stale this node's view may be: ms since it last knew a leader backed by a
    /// quorum (0 while it does).
    pub fn stale_ms(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        if m.running_state.is_ok() && self.quorum_known(&m) {
            return 0;
        }
        now_ms().saturating_sub(self.last_quorum_ms.load(Ordering::Relaxed))
    }

    /// Initializes the cluster once: the lowest id in the peer list does it, after
    /// checking that no reachable peer already belongs to an initialized cluster.
    async fn bootstrap(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
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

    /// This node's Raft role as a word.
    pub fn role(&self) -> &'static str {
        match self.raft.metrics().borrow().state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        }
    }

    /// This node's Raft view (for `/status`), from openraft's metrics.
    pub fn view(&self) -> kms_api::RaftView {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voter_ids: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, n) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, n.addr.clone());
            } else {
                learners.insert(*id, n.addr.clone());
            }
        }
        let replication: BTreeMap<u64, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let applied = m.last_applied.map(|l| l.index);
        let commit_index = if m.state == ServerState::Leader && !voter_ids.is_empty() {
            // The highest index matched by a majority of voters.
            let mut matched: Vec<u64> = voter_ids
                .iter()
                .map(|id| {
                    if *id == m.id {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        replication.get(id).copied().flatten().unwrap_or(0)
                    }
                })
                .collect();
            matched.sort_unstable_by(|a, b| b.cmp(a));
            Some(matched[voter_ids.len() / 2])
        } else {
            applied
        };
        kms_api::RaftView {
            node_id: m.id,
            role: self.role().to_string(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            commit_index,
            applied_index: applied,
            snapshot_index: m.snapshot.map(|l| l.index),
            voters,
            learners,
            replication,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            stale_ms: self.stale_ms(),
            outbox_len: self.outbox_len() as u64,
            quorum_loss: match self.config.quorum_loss {
                QuorumLoss::ServeLocal => "serve-local".into(),
                QuorumLoss::FailClosed => "fail-closed".into(),
            },
        }
    }
}
