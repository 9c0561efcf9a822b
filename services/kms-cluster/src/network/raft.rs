//! openraft's outbound network: [`GrpcNetworkFactory`] hands openraft one [`GrpcNetwork`] per
//! target node, which sends vote, append-entries and install-snapshot RPCs over the `Raft`
//! gRPC service.
//!
//! Append-entries go over one long-lived `AppendEntriesStream` call per target (see
//! `AppendStream`): per request only a message each way, where a unary call also costs
//! HTTP/2 headers, a new stream and a server task (a fifth of the cluster's CPU per activation,
//! docs/benchmarks.md). Vote and install-snapshot stay unary.
//!
//! Requests and replies are the typed messages of `proto/cluster.proto`, converted by
//! [`crate::pb`] (requests carry the schema version). The target's `Raft::vote` /
//! `append_entries` / `install_snapshot` errors come back as a gRPC status whose details hold
//! the typed error. Error mapping (what openraft does next):
//!
//! | failure | `RPCError` | openraft |
//! |---|---|---|
//! | invalid address, connection refused or timed out (`Unavailable` without details) | `Unreachable` | backs off |
//! | the target does not read our schema version (`FailedPrecondition`, schema mismatch) | `Unreachable` | backs off (until one side is upgraded) |
//! | per-RPC deadline (`RPCOption::hard_ttl`) passed | `Timeout` | retries |
//! | any other gRPC status, undecodable reply or error detail | `Network` | retries |
//! | the target's Raft returned an error (fatal, snapshot mismatch) | `RemoteError` | handles the Raft error |

use std::future::Future;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tonic::transport::Channel;

use super::{lazy_channel, TlsConfig, MAX_MESSAGE_SIZE};
use crate::pb::raft_client::RaftClient;
use crate::pb::{self, raft_error_from_wire, PbError, WireApiError, WireError};
use crate::{Node, NodeId, TypeConfig};

/// Creates a [`GrpcNetwork`] for each peer openraft replicates to or asks for votes.
///
/// Every client gets its own lazily connected channel, so creating one never blocks and a
/// peer that is down only fails its RPCs (as `Unreachable`, making openraft back off). With
/// a [`TlsConfig`] ([`GrpcNetworkFactory::with_tls`]) every channel uses mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct GrpcNetworkFactory {
    tls: Option<TlsConfig>,
}

impl GrpcNetworkFactory {
    /// A factory whose channels use mutual TLS when `tls` is set (plaintext otherwise).
    pub fn with_tls(tls: Option<TlsConfig>) -> Self {
        GrpcNetworkFactory { tls }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> GrpcNetwork {
        GrpcNetwork::connect(target, node.clone(), self.tls.as_ref())
    }
}

/// The connection to one peer: openraft's `RaftNetwork` over the `Raft` gRPC service.
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    target: NodeId,
    node: Node,
    /// `Err` holds why the node's address is unusable; every RPC then fails as unreachable.
    client: Result<RaftClient<Channel>, String>,
    /// The open append-entries stream (see [`AppendStream`]); None until the first append and
    /// after a failure. Not shared by clones.
    stream: AppendStream,
}

/// Append-entries over one long-lived `AppendEntriesStream` call: openraft sends one request
/// to a target at a time and waits for its reply, so each request is written to the stream and
/// the next message read is its reply. Any failure or timeout drops the stream (a late reply
/// must never be taken for the next request's) and the next append opens a new one. A peer
/// that does not offer the stream (an older version, `Unimplemented`) is sent unary
/// `AppendEntries` from then on.
#[derive(Default)]
struct AppendStream {
    open: Option<(
        tokio::sync::mpsc::Sender<pb::AppendEntriesRequest>,
        tonic::Streaming<pb::AppendEntriesResponse>,
    )>,
    unary_only: bool,
}

impl Clone for AppendStream {
    fn clone(&self) -> Self {
        AppendStream {
            open: None,
            unary_only: self.unary_only,
        }
    }
}

impl std::fmt::Debug for AppendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendStream")
            .field("open", &self.open.is_some())
            .field("unary_only", &self.unary_only)
            .finish()
    }
}

impl GrpcNetwork {
    /// A client for node `target` at `node.addr` (`host:port`). Does not connect yet.
    pub fn new(target: NodeId, node: Node) -> Self {
        GrpcNetwork::connect(target, node, None)
    }

    /// Like [`GrpcNetwork::new`], over mutual TLS when `tls` is set.
    pub fn connect(target: NodeId, node: Node, tls: Option<&TlsConfig>) -> Self {
        let client = lazy_channel(&node.addr, None, tls)
            .map(|channel| {
                RaftClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE)
            })
            .map_err(|e| format!("unusable address {:?} of node {target}: {e}", node.addr));
        GrpcNetwork {
            target,
            node,
            client,
            stream: AppendStream::default(),
        }
    }

    /// Sends one request with `send` and converts the reply to openraft's `Resp`, mapping
    /// failures as in the table of this module.
    async fn call<Req, PbResp, Resp, E, Fut>(
        &self,
        action: RPCTypes,
        request: Req,
        hard_ttl: Duration,
        send: impl FnOnce(RaftClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Fut: Future<Output = Result<tonic::Response<PbResp>, tonic::Status>>,
        Resp: TryFrom<PbResp, Error = PbError>,
        E: std::error::Error + WireApiError,
    {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => return Err(Unreachable::new(&RpcFailure(reason.clone())).into()),
        };
        let mut grpc_request = tonic::Request::new(request);
        grpc_request.set_timeout(hard_ttl);
        let span = crate::trace_ctx::client_span(match action {
            RPCTypes::Vote => "raft.vote",
            RPCTypes::AppendEntries => "raft.append_entries",
            RPCTypes::InstallSnapshot => "raft.install_snapshot",
        });
        crate::trace_ctx::inject(&span, grpc_request.metadata_mut());

        let call = tracing::Instrument::instrument(send(client, grpc_request), span);
        let reply = match tokio::time::timeout(hard_ttl, call).await {
            Err(_elapsed) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    // openraft only uses `id` for display; the factory does not know our id.
                    id: self.target,
                    target: self.target,
                    timeout: hard_ttl,
                }));
            }
            Ok(Err(status)) => return Err(self.status_to_rpc_error(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        Resp::try_from(reply).map_err(|e| NetworkError::new(&e).into())
    }

    /// The `RPCError` for a failed call: the peer's Raft error when the status carries one,
    /// otherwise by status code (`Unavailable`: unreachable; anything else: network error).
    fn status_to_rpc_error<E>(
        &self,
        status: tonic::Status,
    ) -> RPCError<NodeId, Node, RaftError<NodeId, E>>
    where
        E: std::error::Error + WireApiError,
    {
        let failure = || {
            RpcFailure(format!(
                "{:?}: {}",
                status.code(),
                super::status_text(&status)
            ))
        };
        match WireError::from_status(&status) {
            Some(Ok(wire)) => match raft_error_from_wire::<E>(&wire) {
                Some(raft_error) => RPCError::RemoteError(RemoteError::new_with_node(
                    self.target,
                    self.node.clone(),
                    raft_error,
                )),
                None if matches!(wire, WireError::SchemaMismatch { .. }) => {
                    Unreachable::new(&wire).into()
                }
                None => NetworkError::new(&wire).into(),
            },
            Some(Err(undecodable)) => NetworkError::new(&undecodable).into(),
            None if status.code() == tonic::Code::Unavailable => {
                Unreachable::new(&failure()).into()
            }
            None => NetworkError::new(&failure()).into(),
        }
    }
}

/// A failed RPC described as text (tonic's `Status` is not `'static`-error friendly for
/// openraft's `AnyError`, and an invalid address has no error type of its own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

impl GrpcNetwork {
    /// One append over the stream (opened first when needed); `Ok(Err(request))` hands the
    /// request back when the peer does not offer the stream, to be sent unary.
    async fn append_streamed(
        &mut self,
        request: pb::AppendEntriesRequest,
        hard_ttl: Duration,
    ) -> Result<
        Result<AppendEntriesResponse<NodeId>, pb::AppendEntriesRequest>,
        RPCError<NodeId, Node, RaftError<NodeId>>,
    > {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => return Err(Unreachable::new(&RpcFailure(reason.clone())).into()),
        };
        let timeout = || {
            RPCError::Timeout(Timeout {
                action: RPCTypes::AppendEntries,
                id: self.target,
                target: self.target,
                timeout: hard_ttl,
            })
        };
        let deadline = tokio::time::Instant::now() + hard_ttl;
        if self.stream.open.is_none() {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut open = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            let span = crate::trace_ctx::client_span("raft.append_entries_stream");
            crate::trace_ctx::inject(&span, open.metadata_mut());
            let mut client = client;
            let call = tracing::Instrument::instrument(client.append_entries_stream(open), span);
            match tokio::time::timeout_at(deadline, call).await {
                Err(_) => return Err(timeout()),
                Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                    self.stream.unary_only = true;
                    return Ok(Err(request));
                }
                Ok(Err(status)) => return Err(self.status_to_rpc_error(status)),
                Ok(Ok(replies)) => self.stream.open = Some((tx, replies.into_inner())),
            }
        }
        let Some((tx, replies)) = self.stream.open.as_mut() else {
            return Ok(Err(request));
        };
        let exchange = async {
            // The stream's sending half only closes when the call has ended; the read below
            // then reports how.
            let _ = tx.send(request).await;
            replies.message().await
        };
        let span = crate::trace_ctx::client_span("raft.append_entries");
        let exchange = tracing::Instrument::instrument(exchange, span);
        let result = tokio::time::timeout_at(deadline, exchange).await;
        let reply = match result {
            Ok(Ok(Some(reply))) => reply,
            failed => {
                self.stream.open = None;
                return Err(match failed {
                    Err(_) => timeout(),
                    Ok(Err(status)) => self.status_to_rpc_error(status),
                    _ => NetworkError::new(&RpcFailure(format!(
                        "node {} closed the append-entries stream",
                        self.target
                    )))
                    .into(),
                });
            }
        };
        AppendEntriesResponse::try_from(reply)
            .map(Ok)
            .map_err(|e| NetworkError::new(&e).into())
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let mut request = pb::AppendEntriesRequest::from(&rpc);
        if !self.stream.unary_only {
            match self.append_streamed(request, option.hard_ttl()).await? {
                Ok(reply) => return Ok(reply),
                Err(unsent) => request = unsent,
            }
        }
        self.call(
            RPCTypes::AppendEntries,
            request,
            option.hard_ttl(),
            |mut client, request| async move { client.append_entries(request).await },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let request = pb::InstallSnapshotRequest::from(&rpc);
        self.call(
            RPCTypes::InstallSnapshot,
            request,
            option.hard_ttl(),
            |mut client, request| async move { client.install_snapshot(request).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let request = pb::VoteRequest::from(&rpc);
        self.call(
            RPCTypes::Vote,
            request,
            option.hard_ttl(),
            |mut client, request| async move { client.vote(request).await },
        )
        .await
    }
}
