//! The protobuf messages and tonic stubs generated from `proto/cluster.proto` (package
//! `kmscluster.v1`) by `build.rs`.
//!
//! Owns nothing but the generated code: the `Raft` service (openraft RPCs as JSON payloads)
//! and the `Cluster` service (forwarding, status, membership). The outbound side lives in
//! [`crate::network`], the inbound side in [`crate::grpc`].

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("kmscluster.v1");
