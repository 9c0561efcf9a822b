//! openraft's outbound network: [`GrpcNetworkFactory`] hands openraft one [`GrpcNetwork`] per
//! target node, which sends vote, append-entries and install-snapshot RPCs over the `Raft`
//! gRPC service.
//!
//! Each request is the serde_json of openraft's request type inside a `RaftPayload`; the reply
//! is the serde_json of `Result<Response, RaftError>` as produced by the target's
//! `Raft::vote` / `append_entries` / `install_snapshot`. Error mapping (what openraft does next):
//!
//! | failure | `RPCError` | openraft |
//! |---|---|---|
//! | invalid address, connection refused or timed out (`Unavailable`) | `Unreachable` | backs off |
//! | per-RPC deadline (`RPCOption::hard_ttl`) passed | `Timeout` | retries |
//! | any other gRPC status, undecodable reply | `Network` | retries |
//! | the target's Raft returned an error | `RemoteError` | handles the Raft error |

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::{lazy_channel, TlsConfig, MAX_MESSAGE_SIZE};
use crate::pb::raft_client::RaftClient;
use crate::pb::RaftPayload;
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
        }
    }

    /// Sends one JSON-encoded request and decodes the `Result<Resp, RaftError<E>>` reply.
    async fn call<Req, Resp, E>(
        &self,
        action: RPCTypes,
        request: &Req,
        hard_ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => return Err(Unreachable::new(&RpcFailure(reason.clone())).into()),
        };
        let json = serde_json::to_vec(request).map_err(|e| NetworkError::new(&e))?;
        let mut grpc_request = tonic::Request::new(RaftPayload { json });
        grpc_request.set_timeout(hard_ttl);
        let span = crate::trace_ctx::client_span(match action {
            RPCTypes::Vote => "raft.vote",
            RPCTypes::AppendEntries => "raft.append_entries",
            RPCTypes::InstallSnapshot => "raft.install_snapshot",
        });
        crate::trace_ctx::inject(&span, grpc_request.metadata_mut());

        let call = async {
            match action {
                RPCTypes::Vote => client.vote(grpc_request).await,
                RPCTypes::AppendEntries => client.append_entries(grpc_request).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(grpc_request).await,
            }
        };
        let call = tracing::Instrument::instrument(call, span);
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
            Ok(Err(status)) => return Err(status_to_rpc_error(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.json).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// `Unavailable` is what tonic reports for connect failures (refused, timed out, reset):
/// the peer is unreachable. Everything else is a network error worth retrying.
fn status_to_rpc_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
    let failure = RpcFailure(format!(
        "{:?}: {}",
        status.code(),
        super::status_text(&status)
    ));
    match status.code() {
        tonic::Code::Unavailable => Unreachable::new(&failure).into(),
        _ => NetworkError::new(&failure).into(),
    }
}

/// A failed RPC described as text (tonic's `Status` is not `'static`-error friendly for
/// openraft's `AnyError`, and an invalid address has no error type of its own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, &rpc, option.hard_ttl())
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
        self.call(RPCTypes::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &rpc, option.hard_ttl()).await
    }
}
