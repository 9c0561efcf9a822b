//! [`ClusterClient`]: the typed client of the `Cluster` gRPC service, used by nodes to forward
//! command batches to the leader and by `kmsctl` for status and membership changes.
//!
//! Owns the client side of the service: requests built and replies decoded through
//! [`crate::pb`] into [`ForwardOutcome`] / [`NodeStatus`], failures mapped to the typed error
//! [`NetError`] (from the `ErrorDetail` of a gRPC status when the node sent one); the server
//! side is [`crate::grpc`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kms_state::{Command, CommandResult};
use tonic::transport::Channel;

use super::{lazy_channel, TlsConfig, MAX_MESSAGE_SIZE};
use crate::pb::cluster_client::ClusterClient as PbClusterClient;
use crate::pb::{self, PbError, WireError};
use crate::{NodeId, NodeStatus};

/// Deadline of one call made by a client from [`ClusterClient::connect`]: generous, because
/// `add_learner` waits until the learner caught up and a forward waits for the commit.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The address given to [`ClusterClient::connect`] is not a usable URI.
    #[error("invalid node address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The node could not be reached (connection refused, connect timeout, connection lost).
    #[error("node unreachable: {0}")]
    Transport(String),
    /// The node answered with a gRPC error status (bad request, deadline, internal error).
    #[error("gRPC status {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The node handled the call and answered with a typed error (its Raft refused or has
    /// stopped, the request was invalid or of an unsupported schema version, ...).
    #[error("remote error: {0}")]
    Remote(#[source] WireError),
    /// A membership call reached a node that is not the leader.
    #[error("not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader the node knows of, if any.
        leader_id: Option<NodeId>,
        /// That leader's address, if known.
        leader_addr: Option<String>,
    },
    /// The reply (or the error detail of a failed call) could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it does not decode.
        #[source]
        source: PbError,
    },
}

impl From<tonic::Status> for NetError {
    /// A status with an `ErrorDetail` is the node's typed answer ([`NetError::NotLeader`],
    /// [`NetError::Remote`]); one without is a transport failure (`Unavailable`) or another
    /// gRPC error.
    fn from(status: tonic::Status) -> Self {
        match WireError::from_status(&status) {
            Some(Ok(WireError::NotLeader {
                leader_id,
                leader_addr,
            })) => NetError::NotLeader {
                leader_id,
                leader_addr,
            },
            Some(Ok(e)) => NetError::Remote(e),
            Some(Err(source)) => NetError::Decode {
                what: "error detail",
                source,
            },
            None => {
                let message = super::status_text(&status);
                match status.code() {
                    tonic::Code::Unavailable => NetError::Transport(message),
                    code => NetError::Status { code, message },
                }
            }
        }
    }
}

/// What became of a forwarded command batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// The node was the leader and the batch is committed and applied: one result per command.
    Applied(Vec<CommandResult>),
    /// The node is not the leader; retry at the leader when one is known.
    NotLeader {
        /// The leader the node knows of, if any (none during an election).
        leader_id: Option<NodeId>,
        /// That leader's address (`host:port`), if known.
        leader_addr: Option<String>,
    },
}

/// A client of one node's `Cluster` service. Cheap to clone; connects lazily on first use and
/// reconnects after failures.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    addr: String,
    client: Result<PbClusterClient<Channel>, String>,
}

impl ClusterClient {
    /// A client for the node at `addr` (`host:port`, or a full `http://` URI), with a
    /// [`DEFAULT_REQUEST_TIMEOUT`] per call. Does not connect; an invalid address surfaces as
    /// [`NetError::InvalidAddress`] on the first call.
    pub fn connect(addr: &str) -> ClusterClient {
        ClusterClient::connect_with_timeout(addr, DEFAULT_REQUEST_TIMEOUT)
    }

    /// Like [`ClusterClient::connect`] with another per-call deadline.
    pub fn connect_with_timeout(addr: &str, request_timeout: Duration) -> ClusterClient {
        ClusterClient::connect_with(addr, request_timeout, None)
    }

    /// Like [`ClusterClient::connect_with_timeout`], over mutual TLS when `tls` is set (this
    /// certificate as client identity, the server verified against the CA for the host part
    /// of `addr`).
    pub fn connect_with(
        addr: &str,
        request_timeout: Duration,
        tls: Option<&TlsConfig>,
    ) -> ClusterClient {
        let client = lazy_channel(addr, Some(request_timeout), tls).map(|channel| {
            PbClusterClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE)
        });
        ClusterClient {
            addr: addr.to_string(),
            client,
        }
    }

    /// The address this client talks to, as given to [`ClusterClient::connect`].
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn client(&self) -> Result<PbClusterClient<Channel>, NetError> {
        self.client
            .clone()
            .map_err(|reason| NetError::InvalidAddress {
                addr: self.addr.clone(),
                reason,
            })
    }

    /// Proposes `cmds` as one batch through this node. Applied when the node is the leader,
    /// otherwise [`ForwardOutcome::NotLeader`] with the leader hint. A Raft failure on the
    /// leader (e.g. shutting down) is [`NetError::Remote`].
    pub async fn forward(&self, cmds: &[Command]) -> Result<ForwardOutcome, NetError> {
        let span = crate::trace_ctx::client_span("cluster.forward");
        let mut request = tonic::Request::new(pb::forward_request(cmds));
        crate::trace_ctx::inject(&span, request.metadata_mut());
        let reply = tracing::Instrument::instrument(self.client()?.forward(request), span)
            .await?
            .into_inner();
        ForwardOutcome::try_from(reply).map_err(|source| NetError::Decode {
            what: "forward response",
            source,
        })
    }

    /// This node's Raft view.
    pub async fn status(&self) -> Result<NodeStatus, NetError> {
        let reply = self
            .client()?
            .status(pb::status_request())
            .await?
            .into_inner();
        NodeStatus::try_from(reply).map_err(|source| NetError::Decode {
            what: "status response",
            source,
        })
    }

    /// Initializes a new cluster on this node with `members` (node id → `host:port`) as
    /// voters. Fails with [`NetError::Remote`] when the node is already initialized.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NetError> {
        self.client()?
            .initialize(pb::members_request(&members))
            .await?;
        Ok(())
    }

    /// Adds node `id` at `addr` as a learner (returns once that is committed, without waiting
    /// for the learner to catch up). Must be sent to the leader ([`NetError::NotLeader`]
    /// otherwise).
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), NetError> {
        self.client()?
            .add_learner(pb::add_learner_request(id, addr))
            .await?;
        Ok(())
    }

    /// Makes exactly `members` the voters (they must already be known to the cluster, e.g. as
    /// learners; removed voters are dropped, not kept as learners). Must be sent to the leader
    /// ([`NetError::NotLeader`] otherwise).
    pub async fn change_membership(&self, members: BTreeSet<NodeId>) -> Result<(), NetError> {
        self.set_voters(members, false).await
    }

    /// Like [`ClusterClient::change_membership`] without the guard rails (a new voter need
    /// not have received the log): for recovery drills and tests only, as it can wedge the
    /// cluster in a joint configuration (see [`crate::membership`]).
    pub async fn change_membership_forced(
        &self,
        members: BTreeSet<NodeId>,
    ) -> Result<(), NetError> {
        self.set_voters(members, true).await
    }

    async fn set_voters(&self, members: BTreeSet<NodeId>, force: bool) -> Result<(), NetError> {
        let members = members.into_iter().map(|id| (id, String::new())).collect();
        let mut request = pb::members_request(&members);
        request.force = force;
        self.client()?.change_membership(request).await?;
        Ok(())
    }

    /// Makes learner `id` a voter once it answers and has caught up; refused with the reason
    /// otherwise (see [`crate::membership`]). Must be sent to the leader.
    pub async fn promote(&self, id: NodeId) -> Result<(), NetError> {
        self.client()?.promote(pb::node_request(id)).await?;
        Ok(())
    }

    /// Removes node `id`, learner or voter (never the last voter). Must be sent to the leader.
    pub async fn remove(&self, id: NodeId) -> Result<(), NetError> {
        self.client()?.remove(pb::node_request(id)).await?;
        Ok(())
    }

    /// Asks this node to campaign because `leader_id`, its leader at `term`, is stopping
    /// (see [`crate::handover`]). Fails with [`NetError::Remote`] when it refuses.
    pub async fn take_leadership(
        &self,
        leader_id: NodeId,
        term: u64,
        last_log_index: Option<u64>,
    ) -> Result<(), NetError> {
        let ask = pb::TakeLeadership {
            leader_id,
            term,
            last_log_index,
        };
        self.client()?
            .take_leadership(pb::TakeLeadershipRequest::from(&ask))
            .await?;
        Ok(())
    }

    /// How this node sees node `node_id`: membership, registered incarnation, leader.
    pub async fn identity(&self, node_id: NodeId) -> Result<pb::IdentityAnswer, NetError> {
        let reply = self
            .client()?
            .identity(pb::identity_request(node_id))
            .await?
            .into_inner();
        pb::IdentityAnswer::try_from(reply).map_err(|source| NetError::Decode {
            what: "identity response",
            source,
        })
    }

    /// Asks this node, the leader, to take a wiped node back under its new incarnation
    /// ([`NetError::NotLeader`] otherwise).
    pub async fn rejoin(&self, ask: &pb::Rejoin) -> Result<(), NetError> {
        self.client()?.rejoin(pb::RejoinRequest::from(ask)).await?;
        Ok(())
    }

    /// Records `registration` through this node, the leader ([`NetError::NotLeader`]
    /// otherwise).
    pub async fn register(&self, registration: &crate::Registration) -> Result<(), NetError> {
        self.client()?
            .register(pb::register_request(registration))
            .await?;
        Ok(())
    }
}
