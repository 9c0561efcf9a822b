//! Shared test support for kms-cluster.
//!
//! - [`vectors`]: loads the captured KMS exchanges under `tests/fixtures/kms-vectors`
//!   (real vlmcs ↔ vlmcsd traffic) as typed frames plus the decoded fields the capture
//!   tool recorded.
//! - [`cluster`]: a local multi-process Raft cluster on 127.0.0.x addresses.
//! - [`docker`]: a Raft cluster of `kmsd` containers on private Docker networks, with
//!   node kill/restart and Raft-only network partitions (image from
//!   `tests/docker/build-image.sh`).
//! - [`prom`]: a real Prometheus server scraping test nodes, and its HTTP API.
//! - [`otlp`]: an in-process OTLP/gRPC trace collector stub.
//! - [`harness`]: starts real `kmsd` processes on loopback ephemeral ports and runs the
//!   real `kmsctl` binary against them.
//! - [`observability`]: the Prometheus rules, Grafana dashboards and alerts and the
//!   runbook, parsed (every PromQL expression with its source, Grafana macro
//!   substitution, `promtool`).

pub mod cluster;
pub mod docker;
pub mod harness;
pub mod observability;
pub mod otlp;
pub mod prom;
pub mod vectors;
