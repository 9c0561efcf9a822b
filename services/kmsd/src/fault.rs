//! Test-only fault hooks (cargo feature `fault-injection`, never in release images): admin
//! routes that wedge the process on purpose so end-to-end tests can check that the
//! [`crate::watchdog`] notices.
//!
//! - `POST /debug/fault/block-runtime?secs=N`: one runtime worker runs
//!   `std::thread::sleep` for N seconds — with `worker_threads = 1` the whole runtime is
//!   stuck, like a storage call that blocks the only worker.
//! - `POST /debug/fault/hold-requests?secs=N`: activations started during the next N
//!   seconds wait (asynchronously, the runtime stays healthy) until then: a request path
//!   that makes no progress.
//!
//! The routes are not in [`crate::admin::OPEN_PATHS`]: with an admin token they need it.

use crate::admin::AdminState;
use axum::extract::Query;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Unix ms until which new activations are held (0: not held).
static HOLD_UNTIL_MS: AtomicU64 = AtomicU64::new(0);

/// Query of the fault routes.
#[derive(Debug, Deserialize)]
pub struct FaultQuery {
    /// How long the fault lasts, seconds.
    pub secs: u64,
}

/// The fault routes (merged into the admin router).
pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/debug/fault/block-runtime", post(block_runtime))
        .route("/debug/fault/hold-requests", post(hold))
}

async fn block_runtime(Query(q): Query<FaultQuery>) -> String {
    tracing::warn!(secs = q.secs, "fault injection: blocking a runtime worker");
    tokio::spawn(async move {
        // Let the answer go out first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::thread::sleep(Duration::from_secs(q.secs));
        tracing::warn!("fault injection: runtime worker released");
    });
    format!("blocking a runtime worker for {} s\n", q.secs)
}

async fn hold(Query(q): Query<FaultQuery>) -> String {
    tracing::warn!(secs = q.secs, "fault injection: holding activations");
    HOLD_UNTIL_MS.store(crate::now_ms() + q.secs * 1000, Ordering::Relaxed);
    format!("holding activations for {} s\n", q.secs)
}

/// Waits while activations are held (called at the start of each activation).
pub async fn hold_requests() {
    while crate::now_ms() < HOLD_UNTIL_MS.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
