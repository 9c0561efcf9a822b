//! Outbound gRPC: everything a node (or `kmsctl`) sends to another node.
//!
//! - [`GrpcNetworkFactory`] / [`GrpcNetwork`] (`network::raft`): openraft's `RaftNetwork`
//!   over the `Raft` service, one lazily connected tonic channel per target.
//! - [`ClusterClient`] (`network::client`): the `Cluster` service (forward a command batch to
//!   the leader, status, membership changes), with its typed error [`NetError`].
//!
//! Both connect to `http://{addr}` where `addr` is the node's `host:port` as stored in its
//! [`BasicNode`](openraft::BasicNode).

mod client;
mod raft;

pub use client::{ClusterClient, ForwardOutcome, NetError, DEFAULT_REQUEST_TIMEOUT};
pub use raft::{GrpcNetwork, GrpcNetworkFactory};

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How long opening a TCP connection to a peer may take before the RPC fails as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest gRPC message accepted (both directions): openraft snapshot chunks and large
/// append-entries batches are JSON, which is several times the size of their bytes.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The URI for a node address: `host:port` gets `http://`; an address that already has a
/// scheme is kept as it is.
pub(crate) fn uri_for(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// A lazily connected channel to `addr` (connects on first use, reconnects after failures).
pub(crate) fn lazy_channel(
    addr: &str,
    request_timeout: Option<Duration>,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(uri_for(addr))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if let Some(timeout) = request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(endpoint.connect_lazy())
}
