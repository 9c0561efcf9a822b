//! Inbound gRPC: the `Raft` and `Cluster` services a node serves on its cluster port, and
//! [`serve`] to run both on one listener.
//!
//! Owns the service edge: decoding requests (through [`crate::pb`], which checks the schema
//! version), calling the local [`Raft`], and mapping Raft's typed errors to replies. Every
//! failure is a gRPC status carrying a typed [`WireError`] in its details: on the `Raft`
//! service openraft's own errors (fatal, snapshot mismatch), so the caller's openraft sees the
//! original error; a request that does not decode is `InvalidArgument`, one of an unknown
//! schema version `FailedPrecondition`. On the `Cluster` service, `Forward` answers "not the
//! leader" with the leader hint in its reply; membership operations answer it as a
//! `NotLeader` error with the hint; other Raft errors become "unavailable" (core stopped) or a
//! refusal. `TakeLeadership` is checked and acted on by [`crate::handover::accept`]; while
//! this node hands its own leadership over, `Forward` answers "not the leader" without a
//! hint.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::events::{emit, MembershipChange, MembershipEvent, MembershipEvents, Origin};
use crate::handover::HandoverGate;
use crate::identity::Quarantine;
use crate::membership::{self, MembershipError};
use crate::network::{ForwardOutcome, MAX_MESSAGE_SIZE};
use crate::pb::cluster_server::{Cluster, ClusterServer};
use crate::pb::raft_server::{Raft as RaftRpc, RaftServer};
use crate::pb::{self, raft_error_to_wire, WireApiError, WireError};
use crate::{ClusterRequest, Node, NodeId, NodeStatus, Raft, Registration, StateHandle};

/// The `Raft` service: hands peers' vote / append-entries / install-snapshot requests to the
/// local Raft.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    /// While active, every request is refused (see [`crate::identity`]).
    quarantine: Quarantine,
    /// Turns true when the server stops: open append-entries streams end then, so that the
    /// server's graceful shutdown does not wait for a leader to close them.
    stop: tokio::sync::watch::Receiver<bool>,
}

/// The `Cluster` service: forwarding, status and membership operations on the local Raft.
#[derive(Clone)]
pub struct ClusterService {
    raft: Raft,
    /// Where membership operations are reported (see [`crate::events`]).
    events: Option<MembershipEvents>,
    /// Closed while this node hands its leadership over: forwarded batches are refused
    /// with "not the leader" (no hint), so their senders retry at the next leader.
    handover: HandoverGate,
    /// The applied state's registry, for `Identity` answers (none: answers without it).
    state: Option<StateHandle>,
    /// Mutual TLS of the cluster port, for the leader's probe of a learner before promoting it.
    tls: Option<crate::network::TlsConfig>,
}

/// What a node's services share with the node beyond its Raft (see [`serve_node`]).
#[derive(Debug, Clone, Default)]
pub struct NodeContext {
    /// Where membership operations are reported (see [`crate::events`]).
    pub events: Option<MembershipEvents>,
    /// Mutual TLS of the cluster port.
    pub tls: Option<crate::network::TlsConfig>,
    /// Closed while the node hands its leadership over.
    pub handover: HandoverGate,
    /// Active while the node with an empty store has not established its identity.
    pub quarantine: Quarantine,
    /// The applied state (registry of incarnations).
    pub state: Option<StateHandle>,
    /// Turns true when the server stops (set by [`serve_node`]); None: streams end only when
    /// their sender closes them.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClusterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterService").finish_non_exhaustive()
    }
}

/// Both services over `raft`, with the message size limit raised to
/// [`MAX_MESSAGE_SIZE`]; add them to a
/// `tonic::transport::Server` (or use [`serve`]).
pub fn services(raft: Raft) -> (RaftServer<RaftService>, ClusterServer<ClusterService>) {
    services_with_events(raft, None)
}

/// Like [`services`], reporting membership operations to `events`.
pub fn services_with_events(
    raft: Raft,
    events: Option<MembershipEvents>,
) -> (RaftServer<RaftService>, ClusterServer<ClusterService>) {
    services_with_gate(raft, events, HandoverGate::default())
}

/// Like [`services_with_events`], refusing forwarded batches while `handover` is closed.
pub fn services_with_gate(
    raft: Raft,
    events: Option<MembershipEvents>,
    handover: HandoverGate,
) -> (RaftServer<RaftService>, ClusterServer<ClusterService>) {
    node_services(
        raft,
        NodeContext {
            events,
            handover,
            ..NodeContext::default()
        },
    )
}

/// Both services of a node over `raft` with everything in `ctx` (TLS is the listener's
/// business, see [`serve_node`]).
pub fn node_services(
    raft: Raft,
    ctx: NodeContext,
) -> (RaftServer<RaftService>, ClusterServer<ClusterService>) {
    let raft_server = RaftServer::new(RaftService {
        raft: raft.clone(),
        quarantine: ctx.quarantine,
        stop: ctx
            .stop
            .unwrap_or_else(|| tokio::sync::watch::channel(false).1),
    })
    .max_decoding_message_size(MAX_MESSAGE_SIZE)
    .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let cluster_server = ClusterServer::new(ClusterService {
        raft,
        events: ctx.events,
        handover: ctx.handover,
        state: ctx.state,
        tls: ctx.tls,
    })
    .max_decoding_message_size(MAX_MESSAGE_SIZE)
    .max_encoding_message_size(MAX_MESSAGE_SIZE);
    (raft_server, cluster_server)
}

/// Serves both services on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight calls finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    raft: Raft,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with_events(listener, raft, None, shutdown).await
}

/// Like [`serve`], reporting membership operations to `events`.
pub async fn serve_with_events(
    listener: tokio::net::TcpListener,
    raft: Raft,
    events: Option<MembershipEvents>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with_tls(
        listener,
        raft,
        events,
        None,
        HandoverGate::default(),
        shutdown,
    )
    .await
}

/// Like [`serve_with_events`], over mutual TLS when `tls` is set: only clients presenting a
/// certificate signed by the cluster CA get through the handshake (see
/// [`crate::network::TlsConfig`]), refusing forwarded batches while `handover` is closed.
pub async fn serve_with_tls(
    listener: tokio::net::TcpListener,
    raft: Raft,
    events: Option<MembershipEvents>,
    tls: Option<crate::network::TlsConfig>,
    handover: HandoverGate,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_node(
        listener,
        raft,
        NodeContext {
            events,
            tls,
            handover,
            ..NodeContext::default()
        },
        shutdown,
    )
    .await
}

/// Serves a node's services with everything in `ctx` on `listener` (over mutual TLS when
/// `ctx.tls` is set) until `shutdown` completes.
pub async fn serve_node(
    listener: tokio::net::TcpListener,
    raft: Raft,
    ctx: NodeContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let tls = ctx.tls.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let ctx = NodeContext {
        stop: Some(stop_rx),
        ..ctx
    };
    let (raft_server, cluster_server) = node_services(raft, ctx);
    let server = tonic::transport::Server::builder()
        .add_service(raft_server)
        .add_service(cluster_server);
    match tls {
        Some(tls) => {
            server
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await
        }
        None => {
            server
                .serve_with_incoming_shutdown(plain_incoming(listener), shutdown)
                .await
        }
    }
}

/// Completes once `stop` holds true; never when its sender is gone without setting it.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Accepted plaintext connections with `TCP_NODELAY` set (as the TLS path sets it): without
/// it a small reply (an AppendEntries acknowledgement, a forwarded batch's results) can wait
/// for the peer's delayed ACK, some 40 ms, behind the previous one.
fn plain_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    })
}

/// The reply of a `Raft` RPC: the response, or the Raft error as a status with its
/// `ErrorDetail` (so the peer's openraft sees the original error).
fn raft_reply<T, P, E>(result: Result<T, RaftError<NodeId, E>>) -> Result<Response<P>, Status>
where
    P: for<'a> From<&'a T>,
    E: WireApiError,
{
    match result {
        Ok(response) => Ok(Response::new(P::from(&response))),
        Err(e) => Err(raft_error_to_wire(&e).to_status()),
    }
}

/// The wire error of a Raft error on the `Cluster` service, whose callers are not openraft:
/// a stopped core is "unavailable", an API error a refusal.
fn cluster_error<E: std::fmt::Display>(e: RaftError<NodeId, E>) -> WireError {
    match e {
        RaftError::Fatal(fatal) => WireError::Unavailable {
            reason: fatal.to_string(),
        },
        RaftError::APIError(api) => WireError::Refused {
            reason: api.to_string(),
        },
    }
}

impl RaftService {
    /// Refuses the request while the node is in quarantine: it must not vote or accept entries
    /// before it knows it is not a wiped member under its old identity.
    fn admit(&self) -> Result<(), Status> {
        if self.quarantine.is_active() {
            return Err(WireError::Unavailable {
                reason: "this node started with an empty store and has not established its \
                         identity with its peers yet (see `kmsctl cluster status`)"
                    .into(),
            }
            .to_status());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.admit()?;
        let span = crate::trace_ctx::server_span("raft.vote", request.metadata());
        let rpc = VoteRequest::try_from(request.into_inner())?;
        raft_reply(tracing::Instrument::instrument(self.raft.vote(rpc), span).await)
    }

    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.admit()?;
        let span = crate::trace_ctx::server_span("raft.append_entries", request.metadata());
        let rpc = AppendEntriesRequest::try_from(request.into_inner())?;
        raft_reply(tracing::Instrument::instrument(self.raft.append_entries(rpc), span).await)
    }

    type AppendEntriesStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::AppendEntriesResponse, Status>> + Send>,
    >;

    async fn append_entries_stream(
        &self,
        request: Request<tonic::Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        self.admit()?;
        let inbound = request.into_inner();
        let service = self.clone();
        // One request at a time: read, hand to Raft, answer; the stream ends after the
        // first error (the sender opens a new one for its next request).
        let replies = futures_util::stream::unfold(
            (inbound, service, false),
            |(mut inbound, service, failed)| async move {
                if failed {
                    return None;
                }
                let mut stop = service.stop.clone();
                let msg = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(msg)) => msg,
                        Ok(None) | Err(_) => return None,
                    },
                    () = stopped(&mut stop) => return None,
                };
                // Messages on a stream carry no trace context: each append gets a server
                // span of its own, without a remote parent.
                let span = crate::trace_ctx::server_span(
                    "raft.append_entries",
                    &tonic::metadata::MetadataMap::new(),
                );
                let reply = tracing::Instrument::instrument(
                    async {
                        service.admit()?;
                        let rpc = AppendEntriesRequest::try_from(msg)?;
                        raft_reply(service.raft.append_entries(rpc).await).map(Response::into_inner)
                    },
                    span,
                )
                .await;
                let failed = reply.is_err();
                Some((reply, (inbound, service, failed)))
            },
        );
        Ok(Response::new(Box::pin(replies)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.admit()?;
        let span = crate::trace_ctx::server_span("raft.install_snapshot", request.metadata());
        let rpc = InstallSnapshotRequest::try_from(request.into_inner())?;
        raft_reply(tracing::Instrument::instrument(self.raft.install_snapshot(rpc), span).await)
    }
}

/// A leader hint: who this node believes leads, and that leader's address.
struct LeaderHint {
    leader_id: Option<NodeId>,
    leader_addr: String,
}

impl ClusterService {
    /// The hint for a `ForwardToLeader` error; the address comes from the error or, failing
    /// that, from the membership in the node's metrics.
    fn leader_hint(&self, leader_id: Option<NodeId>, leader_node: Option<&Node>) -> LeaderHint {
        let leader_addr = match (leader_id, leader_node) {
            (_, Some(node)) => node.addr.clone(),
            (Some(id), None) => self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .map(|node| node.addr.clone())
                .unwrap_or_default(),
            (None, None) => String::new(),
        };
        LeaderHint {
            leader_id,
            leader_addr,
        }
    }

    /// The outcome of a membership operation as a wire error: "not the leader" with the
    /// hint, or [`cluster_error`].
    fn membership_outcome<T>(
        &self,
        result: Result<T, RaftError<NodeId, ClientWriteError<NodeId, Node>>>,
    ) -> Result<(), WireError> {
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let hint = self.leader_hint(f.leader_id, f.leader_node.as_ref());
                Err(WireError::NotLeader {
                    leader_id: hint.leader_id,
                    leader_addr: (!hint.leader_addr.is_empty()).then_some(hint.leader_addr),
                })
            }
            Err(e) => Err(cluster_error(e)),
        }
    }

    /// Reports a membership operation and turns its outcome into the reply.
    fn report(
        &self,
        change: MembershipChange,
        peer: Option<std::net::SocketAddr>,
        outcome: Result<(), WireError>,
    ) -> Result<Response<pb::Ack>, Status> {
        emit(
            self.events.as_ref(),
            MembershipEvent {
                change,
                origin: Origin::Rpc { peer },
                error: outcome.as_ref().err().map(ToString::to_string),
            },
        );
        outcome
            .map(|()| Response::new(pb::Ack {}))
            .map_err(|e| e.to_status())
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn forward(
        &self,
        request: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let span = crate::trace_ctx::server_span("cluster.forward", request.metadata());
        let commands = pb::forward_commands(request.into_inner())?;
        let admitted = self.handover.enter();
        let outcome = if admitted.is_none() {
            // Handing leadership over: no leader to name yet; the sender retries.
            ForwardOutcome::NotLeader {
                leader_id: None,
                leader_addr: None,
            }
        } else {
            let write = self.raft.client_write(ClusterRequest::new(commands));
            match tracing::Instrument::instrument(write, span).await {
                Ok(written) => ForwardOutcome::Applied(written.data.results),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    let hint = self.leader_hint(f.leader_id, f.leader_node.as_ref());
                    ForwardOutcome::NotLeader {
                        leader_id: hint.leader_id,
                        leader_addr: (!hint.leader_addr.is_empty()).then_some(hint.leader_addr),
                    }
                }
                Err(e) => return Err(cluster_error(e).to_status()),
            }
        };
        Ok(Response::new(pb::ForwardResponse::from(&outcome)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        pb::check_status_request(request.get_ref())?;
        let status = NodeStatus::from_metrics(&self.raft.metrics().borrow());
        Ok(Response::new(pb::StatusResponse::from(&status)))
    }

    async fn initialize(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let peer = request.remote_addr();
        let requested = pb::members_from_pb(request.into_inner())?;
        let members: BTreeMap<NodeId, Node> = requested
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        let outcome = self.raft.initialize(members).await.map_err(cluster_error);
        self.report(
            MembershipChange::Initialize { members: requested },
            peer,
            outcome,
        )
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let peer = request.remote_addr();
        let (node_id, addr) = pb::add_learner_from_pb(request.into_inner())?;
        // Not blocking until the learner caught up: a learner that is down or mistyped would
        // hold the call until its deadline. `promote` waits for the catch-up instead.
        let result = self
            .raft
            .add_learner(node_id, BasicNode::new(addr.clone()), false)
            .await;
        let outcome = self.membership_outcome(result);
        self.report(
            MembershipChange::AddLearner { node_id, addr },
            peer,
            outcome,
        )
    }

    async fn change_membership(
        &self,
        request: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let force = request.force;
        let ids: BTreeSet<NodeId> = pb::members_from_pb(request)?.into_keys().collect();
        let status = NodeStatus::from_metrics(&self.raft.metrics().borrow());
        let before = status.voters();
        let mut outcome = Ok(());
        if !force {
            for id in ids.difference(&before) {
                if let Err(e) = membership::check_promote(&status, *id, membership::PROMOTE_MAX_LAG)
                {
                    outcome = Err(self.membership_refusal(e));
                    break;
                }
            }
        }
        if outcome.is_ok() {
            outcome = membership::change(
                &self.raft,
                ChangeMembers::ReplaceAllVoters(ids.clone()),
                membership::CHANGE_TIMEOUT,
            )
            .await
            .map_err(|e| self.membership_refusal(e));
        }
        self.report(
            MembershipChange::ChangeVoters { before, after: ids },
            peer,
            outcome,
        )
    }

    async fn promote(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let peer = request.remote_addr();
        let id = pb::node_from_pb(request.into_inner())?;
        let before = NodeStatus::from_metrics(&self.raft.metrics().borrow()).voters();
        let tls = self.tls.clone();
        let outcome = membership::promote(&self.raft, id, |addr| membership::answers(addr, tls))
            .await
            .map_err(|e| self.membership_refusal(e));
        let mut after = before.clone();
        after.insert(id);
        self.report(
            MembershipChange::ChangeVoters { before, after },
            peer,
            outcome,
        )
    }

    async fn remove(&self, request: Request<pb::NodeRequest>) -> Result<Response<pb::Ack>, Status> {
        let peer = request.remote_addr();
        let id = pb::node_from_pb(request.into_inner())?;
        let before = NodeStatus::from_metrics(&self.raft.metrics().borrow()).voters();
        let outcome = membership::remove(&self.raft, id)
            .await
            .map_err(|e| self.membership_refusal(e));
        let change = if before.contains(&id) {
            let mut after = before.clone();
            after.remove(&id);
            MembershipChange::ChangeVoters { before, after }
        } else {
            MembershipChange::RemoveLearner { node_id: id }
        };
        self.report(change, peer, outcome)
    }

    async fn take_leadership(
        &self,
        request: Request<pb::TakeLeadershipRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let ask = pb::TakeLeadership::try_from(request.into_inner())?;
        crate::handover::accept(&self.raft, ask.leader_id, ask.term, ask.last_log_index)
            .map(|()| Response::new(pb::Ack {}))
            .map_err(|refusal| {
                WireError::Refused {
                    reason: refusal.to_string(),
                }
                .to_status()
            })
    }

    async fn identity(
        &self,
        request: Request<pb::IdentityRequest>,
    ) -> Result<Response<pb::IdentityResponse>, Status> {
        let node_id = pb::identity_from_pb(request.into_inner())?;
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let initialized = membership.nodes().next().is_some();
        let role = if membership.voter_ids().any(|id| id == node_id) {
            pb::MemberRoleOf::Voter
        } else if membership.get_node(&node_id).is_some() {
            pb::MemberRoleOf::Learner
        } else {
            pb::MemberRoleOf::None
        };
        let hint = self.leader_hint(metrics.current_leader, None);
        let answer = pb::IdentityAnswer {
            initialized,
            role,
            registered: self.state.as_ref().and_then(|s| s.registration(node_id)),
            leader_id: hint.leader_id,
            leader_addr: hint.leader_addr,
        };
        Ok(Response::new(pb::IdentityResponse::from(&answer)))
    }

    async fn rejoin(
        &self,
        request: Request<pb::RejoinRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let peer = request.remote_addr();
        let ask = pb::Rejoin::try_from(request.into_inner())?;
        let _write = self.check_not_handing_over()?;
        let outcome = self.take_back(&ask).await;
        if let Err(e) = &outcome {
            tracing::warn!(node_id = ask.node_id, error = %e, "rejoin of a wiped node not done");
        } else {
            tracing::warn!(
                node_id = ask.node_id,
                addr = %ask.addr,
                as_voter = ask.as_voter,
                "node came back with an empty store: removed and added again as a learner \
                 under its new incarnation"
            );
        }
        self.report(
            MembershipChange::Rejoin {
                node_id: ask.node_id,
                addr: ask.addr,
                as_voter: ask.as_voter,
            },
            peer,
            outcome,
        )
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::Ack>, Status> {
        let registration = pb::register_from_pb(request.into_inner())?;
        let _write = self.check_not_handing_over()?;
        let result = self
            .raft
            .client_write(ClusterRequest::register(registration))
            .await;
        self.membership_outcome(result)
            .map(|()| Response::new(pb::Ack {}))
            .map_err(|e| e.to_status())
    }
}

impl ClusterService {
    /// A guarded membership operation's failure as a wire error: "not the leader" (with the
    /// hint) when this node does not lead, else refused with the guard's reason.
    fn membership_refusal(&self, e: MembershipError) -> WireError {
        let (state, leader) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.state, m.current_leader)
        };
        if state != ServerState::Leader {
            let hint = self.leader_hint(leader, None);
            return WireError::NotLeader {
                leader_id: hint.leader_id,
                leader_addr: (!hint.leader_addr.is_empty()).then_some(hint.leader_addr),
            };
        }
        WireError::Refused {
            reason: e.to_string(),
        }
    }

    /// Refuses a write while this node hands its leadership over: its successor was told the
    /// last log index, and an entry appended now would make the successor's log look stale
    /// to the other voters. The caller retries at the next leader.
    fn check_not_handing_over(&self) -> Result<crate::handover::GateWrite, Status> {
        let Some(write) = self.handover.enter() else {
            return Err(WireError::NotLeader {
                leader_id: None,
                leader_addr: None,
            }
            .to_status());
        };
        Ok(write)
    }

    /// The leader's part of a rejoin: remove the node (voter or learner), add it again as a
    /// learner (a fresh replication stream that expects nothing of its old log), then record
    /// its new incarnation, with `voter_wanted` when it was a voter (the leader's reconcile
    /// loop promotes it once it has caught up). Each step is idempotent, so the node may ask
    /// again after a timeout.
    async fn take_back(&self, ask: &pb::Rejoin) -> Result<(), WireError> {
        use openraft::ChangeMembers;
        let (me, membership) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.id, m.membership_config.membership().clone())
        };
        if ask.node_id == me {
            return Err(WireError::Refused {
                reason: format!("node {me} cannot take itself back"),
            });
        }
        let id = BTreeSet::from([ask.node_id]);
        if membership.voter_ids().any(|v| v == ask.node_id) {
            let result = self
                .raft
                .change_membership(ChangeMembers::RemoveVoters(id.clone()), false)
                .await;
            self.membership_outcome(result)?;
        } else if membership.get_node(&ask.node_id).is_some() {
            let result = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(id), false)
                .await;
            self.membership_outcome(result)?;
        }
        let result = self
            .raft
            .add_learner(ask.node_id, BasicNode::new(ask.addr.clone()), false)
            .await;
        self.membership_outcome(result)?;
        let registration = Registration {
            node_id: ask.node_id,
            incarnation: ask.incarnation,
            voter_wanted: ask.as_voter,
        };
        let result = self
            .raft
            .client_write(ClusterRequest::register(registration))
            .await;
        self.membership_outcome(result)
    }
}
