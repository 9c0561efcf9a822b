//! The admin HTTP API (axum), separate from port 1688: `/livez`, `/readyz`, `/status`,
//! `/clients`, `/metrics`.

use crate::metrics::Metrics;
use crate::report::{self, HostFacts};
use crate::service::Service;
use crate::stats::Counters;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use kms_state::ClientFilter;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// Activation service.
    pub service: Arc<Service>,
    /// Listener counters.
    pub counters: Arc<Counters>,
    /// Static host facts.
    pub facts: Arc<HostFacts>,
    /// True once the KMS listeners are bound and the state is open.
    pub ready: Arc<AtomicBool>,
    /// Prometheus metrics (None when disabled).
    pub metrics: Option<Arc<Metrics>>,
}

/// Builds the router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/clients", get(clients))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    // Ready means "can answer activations": listeners bound and a leader known.
    if s.ready.load(Ordering::Relaxed) && s.service.backend().node().has_leader() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    Json(report::status(
        &s.service,
        &s.counters,
        &s.facts,
        crate::now_ms(),
    ))
}

async fn metrics(State(s): State<AdminState>) -> axum::response::Response {
    let Some(m) = &s.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are disabled (metrics = false)\n",
        )
            .into_response();
    };
    let status = report::status(&s.service, &s.counters, &s.facts, crate::now_ms());
    let body = m.render(&status, &s.counters.snapshot());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Query parameters of `/clients`.
#[derive(Debug, Deserialize, Default)]
pub struct ClientQuery {
    /// Count group.
    pub group: Option<String>,
    /// Product group slug.
    pub product: Option<String>,
    /// Only clients seen since this Unix ms.
    pub since_ms: Option<u64>,
}

async fn clients(State(s): State<AdminState>, Query(q): Query<ClientQuery>) -> impl IntoResponse {
    let filter = ClientFilter {
        count_group: q.group,
        product_group: q.product,
        seen_since_ms: q.since_ms,
    };
    Json(report::clients(&s.service, filter))
}
