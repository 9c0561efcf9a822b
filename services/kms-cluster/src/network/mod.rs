//! Outbound gRPC: everything a node (or `kmsctl`) sends to another node.
//!
//! - [`GrpcNetworkFactory`] / [`GrpcNetwork`] (`network::raft`): openraft's `RaftNetwork`
//!   over the `Raft` service, one lazily connected tonic channel per target.
//! - [`ClusterClient`] (`network::client`): the `Cluster` service (forward a command batch to
//!   the leader, status, membership changes), with its typed error [`NetError`].
//!
//! - [`TlsConfig`] (`network::tls`): mutual TLS for both directions of the cluster port.
//!
//! Both connect to `http://{addr}` where `addr` is the node's `host:port` as stored in its
//! [`BasicNode`](openraft::BasicNode), or to `https://{addr}` with a [`TlsConfig`] (then any
//! scheme in `addr` is replaced, so an `http://` address cannot bypass TLS).

mod client;
mod raft;
mod tls;

pub use client::{ClusterClient, ForwardOutcome, NetError, DEFAULT_REQUEST_TIMEOUT};
pub use raft::{GrpcNetwork, GrpcNetworkFactory};
pub use tls::{host_of, TlsConfig, TlsError, HANDSHAKE_TIMEOUT};

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How long opening a TCP connection to a peer may take before the RPC fails as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest gRPC message accepted (both directions): room for openraft's snapshot chunks and
/// large append-entries batches (up to `max_payload_entries` entries of up to `max_batch`
/// commands each).
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

/// A gRPC status as text with its whole cause chain: tonic reports a failed TLS handshake
/// as "transport error", and the reason (e.g. `invalid peer certificate: UnknownIssuer`) is
/// only in the sources.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The URI for a node address over TLS: always `https://host:port`.
pub(crate) fn tls_uri_for(addr: &str) -> String {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    format!("https://{rest}")
}

/// A lazily connected channel to `addr` (connects on first use, reconnects after failures),
/// over mutual TLS when `tls` is set.
/// Interval of HTTP/2 keep-alive pings on cluster connections.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// A ping not acknowledged within this closes the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn lazy_channel(
    addr: &str,
    request_timeout: Option<Duration>,
    tls: Option<&TlsConfig>,
) -> Result<Channel, String> {
    let uri = match tls {
        Some(_) => tls_uri_for(addr),
        None => uri_for(addr),
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // A peer cut off without a reset (partition, paused container) must not keep a
        // dead connection forever: HTTP/2 pings detect it and the channel reconnects.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL));
    if let Some(tls) = tls {
        let config = tls.client_config(addr).map_err(|e| e.to_string())?;
        endpoint = endpoint.tls_config(config).map_err(|e| e.to_string())?;
    }
    if let Some(timeout) = request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(endpoint.connect_lazy())
}
