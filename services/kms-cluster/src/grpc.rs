//! Inbound gRPC: the `Raft` and `Cluster` services a node serves on its cluster port, and
//! [`serve`] to run both on one listener.
//!
//! Owns the service edge: decoding requests, calling the local [`Raft`], and mapping Raft's
//! typed errors to replies. Raft RPC results (including Raft errors) travel back as JSON
//! `Result`s so the caller's openraft sees the original error; only undecodable requests become
//! a gRPC status (`InvalidArgument`). On the `Cluster` service, "not the leader" becomes a
//! leader hint in the reply, other Raft errors the reply's `error` text. `TakeLeadership` is
//! checked and acted on by [`crate::handover::accept`]; while this node hands its own
//! leadership over, `Forward` answers "not the leader" without a hint.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::Serialize;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::events::{emit, MembershipChange, MembershipEvent, MembershipEvents, Origin};
use crate::handover::HandoverGate;
use crate::network::MAX_MESSAGE_SIZE;
use crate::pb::cluster_server::{Cluster, ClusterServer};
use crate::pb::raft_server::{Raft as RaftRpc, RaftServer};
use crate::pb::{
    Ack, AddLearnerRequest, ForwardRequest, ForwardResponse, MembersRequest, RaftPayload,
    StatusRequest, StatusResponse, TakeLeadershipRequest,
};
use crate::{ClusterRequest, Node, NodeId, Raft};

/// The `Raft` service: hands peers' vote / append-entries / install-snapshot requests to the
/// local Raft.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
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
    let raft_server = RaftServer::new(RaftService { raft: raft.clone() })
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let cluster_server = ClusterServer::new(ClusterService {
        raft,
        events,
        handover,
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
    let (raft_server, cluster_server) = services_with_gate(raft, events, handover);
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
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(json)
        .map_err(|e| Status::invalid_argument(format!("cannot decode {what}: {e}")))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("cannot encode {what}: {e}")))
}

fn payload<T: Serialize>(what: &str, result: &T) -> Result<Response<RaftPayload>, Status> {
    Ok(Response::new(RaftPayload {
        json: encode(what, result)?,
    }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let span = crate::trace_ctx::server_span("raft.vote", request.metadata());
        let rpc = decode("vote request", &request.into_inner().json)?;
        let result = tracing::Instrument::instrument(self.raft.vote(rpc), span).await;
        payload("vote result", &result)
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let span = crate::trace_ctx::server_span("raft.append_entries", request.metadata());
        let rpc = decode("append-entries request", &request.into_inner().json)?;
        let result = tracing::Instrument::instrument(self.raft.append_entries(rpc), span).await;
        payload("append-entries result", &result)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let span = crate::trace_ctx::server_span("raft.install_snapshot", request.metadata());
        let rpc = decode("install-snapshot request", &request.into_inner().json)?;
        let result = tracing::Instrument::instrument(self.raft.install_snapshot(rpc), span).await;
        payload("install-snapshot result", &result)
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

    /// The reply to a membership operation's outcome.
    fn ack<T>(
        &self,
        result: Result<T, RaftError<NodeId, ClientWriteError<NodeId, Node>>>,
    ) -> Response<Ack> {
        let ack = match result {
            Ok(_) => Ack::default(),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let hint = self.leader_hint(f.leader_id, f.leader_node.as_ref());
                Ack {
                    error: f.to_string(),
                    leader_id: hint.leader_id,
                    leader_addr: hint.leader_addr,
                    not_leader: true,
                }
            }
            Err(e) => Ack {
                error: e.to_string(),
                ..Ack::default()
            },
        };
        Response::new(ack)
    }

    /// Reports a membership operation and its reply.
    fn report(&self, change: MembershipChange, peer: Option<std::net::SocketAddr>, ack: &Ack) {
        emit(
            self.events.as_ref(),
            MembershipEvent {
                change,
                origin: Origin::Rpc { peer },
                error: (!ack.error.is_empty()).then(|| ack.error.clone()),
            },
        );
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let span = crate::trace_ctx::server_span("cluster.forward", request.metadata());
        let commands = decode("commands", &request.into_inner().commands_json)?;
        if self.handover.is_closed() {
            // Handing leadership over: no leader to name yet; the sender retries.
            return Ok(Response::new(ForwardResponse::default()));
        }
        let write = self.raft.client_write(ClusterRequest::new(commands));
        let reply = match tracing::Instrument::instrument(write, span).await {
            Ok(written) => ForwardResponse {
                results_json: encode("command results", &written.data.results)?,
                ..ForwardResponse::default()
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let hint = self.leader_hint(f.leader_id, f.leader_node.as_ref());
                ForwardResponse {
                    leader_id: hint.leader_id,
                    leader_addr: hint.leader_addr,
                    ..ForwardResponse::default()
                }
            }
            Err(e) => ForwardResponse {
                error: e.to_string(),
                ..ForwardResponse::default()
            },
        };
        Ok(Response::new(reply))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        Ok(Response::new(StatusResponse {
            node_id: metrics.id,
            metrics_json: encode("raft metrics", &metrics)?,
        }))
    }

    async fn initialize(&self, request: Request<MembersRequest>) -> Result<Response<Ack>, Status> {
        let peer = request.remote_addr();
        let requested = request.into_inner().members;
        let members: BTreeMap<NodeId, Node> = requested
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        let ack = match self.raft.initialize(members).await {
            Ok(()) => Ack::default(),
            Err(e) => Ack {
                error: e.to_string(),
                ..Ack::default()
            },
        };
        self.report(
            MembershipChange::Initialize {
                members: requested.into_iter().collect(),
            },
            peer,
            &ack,
        );
        Ok(Response::new(ack))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<Ack>, Status> {
        let peer = request.remote_addr();
        let AddLearnerRequest { node_id, addr } = request.into_inner();
        let result = self
            .raft
            .add_learner(node_id, BasicNode::new(addr.clone()), true)
            .await;
        let reply = self.ack(result);
        self.report(
            MembershipChange::AddLearner { node_id, addr },
            peer,
            reply.get_ref(),
        );
        Ok(reply)
    }

    async fn change_membership(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<Ack>, Status> {
        let peer = request.remote_addr();
        let ids: BTreeSet<NodeId> = request.into_inner().members.into_keys().collect();
        let before: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let result = self.raft.change_membership(ids.clone(), false).await;
        let reply = self.ack(result);
        self.report(
            MembershipChange::ChangeVoters { before, after: ids },
            peer,
            reply.get_ref(),
        );
        Ok(reply)
    }

    async fn take_leadership(
        &self,
        request: Request<TakeLeadershipRequest>,
    ) -> Result<Response<Ack>, Status> {
        let TakeLeadershipRequest {
            leader_id,
            term,
            last_log_index,
        } = request.into_inner();
        let ack = match crate::handover::accept(&self.raft, leader_id, term, last_log_index) {
            Ok(()) => Ack::default(),
            Err(refusal) => Ack {
                error: refusal.to_string(),
                ..Ack::default()
            },
        };
        Ok(Response::new(ack))
    }
}
