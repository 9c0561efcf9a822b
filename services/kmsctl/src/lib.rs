//! kmsctl: the operator CLI of kms-cluster.
//!
//! Module map:
//! - [`client`]: an async KMS client (bind, request, full response verification).
//! - [`bench`]: the bounded load generator.
//! - [`cluster`]: membership and Raft status over the cluster gRPC API.
//! - [`cert`]: a private CA and node/operator certificates for the cluster's mutual TLS.
//! - [`render`]: `slmgr`-style text for status, activations and the inventory.
//! - [`dns`]: `_vlmcs._tcp` SRV records: render, RFC 2782 order, check.
//! - [`products`]: resolving `--product` and the protocol/product mix.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cert;
pub mod client;
pub mod cluster;
pub mod dns;
pub mod products;
pub mod render;
