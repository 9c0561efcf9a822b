//! Shared test support for kms-cluster.
//!
//! - [`vectors`]: loads the captured KMS exchanges under `tests/fixtures/kms-vectors`
//!   (real vlmcs ↔ vlmcsd traffic) as typed frames plus the decoded fields the capture
//!   tool recorded.
//! - [`alertmanager`]: a real Alertmanager on a loopback port and a webhook receiver
//!   that keeps the notifications it delivers.
//! - [`bind`]: a real BIND 9 `named` on a loopback port with a TSIG-updatable zone.
//! - [`cluster`]: a local multi-process Raft cluster on 127.0.0.x addresses.
//! - [`compose`]: the repository's docker-compose.yml as a uniquely named compose
//!   project of the image `docker/build-local.sh` builds (v2 or v1 Compose).
//! - [`docker`]: a Raft cluster of `kmsd` containers on private Docker networks, with
//!   node kill/restart and Raft-only network partitions (image from
//!   `tests/docker/build-image.sh`).
//! - [`fake_kube`]: a fake Kubernetes API server (EndpointSlices, StatefulSet) for
//!   discovery tests.
//! - [`prom`]: a real Prometheus server scraping test nodes, and its HTTP API.
//! - [`otlp`]: an in-process OTLP/gRPC trace collector stub.
//! - [`ledger`]: bench logs (attempted and answered CMIDs) reconciled with a node's
//!   inventory and totals: every answered activation counted exactly once.
//! - [`harness`]: starts real `kmsd` processes on loopback ephemeral ports and runs the
//!   real `kmsctl` binary against them.
//! - [`observability`]: the Prometheus rules, Grafana dashboards and alerts and the
//!   runbook, parsed (every PromQL expression with its source, Grafana macro
//!   substitution, `promtool`).

pub mod alertmanager;
pub mod bind;
pub mod cluster;
pub mod compose;
pub mod docker;
pub mod fake_kube;
pub mod harness;
pub mod ledger;
pub mod observability;
pub mod otlp;
pub mod prom;
pub mod rng;
pub mod vectors;
