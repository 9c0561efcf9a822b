//! The admin HTTP API (axum), separate from port 1688: `/livez`, `/readyz`, `/status`,
//! `/clients`, `/metrics`, `/host-identity` and `POST /host-identity/regenerate` (audited).
//!
//! `/livez` tells the truth about progress: it answers 503 naming the stalled loop while
//! the [`crate::watchdog`] finds one (work pending, no progress for
//! `watchdog_stall_secs`), and `/readyz` fails then too. Both run on the runtime they
//! report on: when the runtime itself is stuck they cannot answer at all, which a probe
//! with a timeout counts as a failure as well.
//!
//! With an admin token configured, [`protect`] requires `Authorization: Bearer <token>`
//! on every path except [`OPEN_PATHS`] (probes and Prometheus); failures answer 401 with
//! `WWW-Authenticate: Bearer` and are written to the audit log.

use crate::metrics::Metrics;
use crate::report::{self, HostFacts};
use crate::service::Service;
use crate::stats::Counters;
use crate::watchdog::Health;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kms_state::lifecycle::Lifecycle;
use kms_state::{ClientFilter, LifecycleFilter};
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
    /// The watchdog's verdict.
    pub health: Arc<Health>,
    /// Where operator actions (regenerate) are recorded.
    pub audit: Arc<crate::audit::Audit>,
}

/// Paths served without the admin token: kubelet probes and Prometheus scrapes.
pub const OPEN_PATHS: [&str; 3] = ["/livez", "/readyz", "/metrics"];

/// Admin API authentication settings.
pub struct AdminAuth {
    /// SHA-256 of the required bearer token (compared in constant time); None: open.
    token_digest: Option<[u8; 32]>,
    /// Where authentication failures are recorded.
    audit: Arc<crate::audit::Audit>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token_digest.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl AdminAuth {
    /// Requires `token` when given; failures are recorded in `audit`.
    pub fn new(token: Option<&str>, audit: Arc<crate::audit::Audit>) -> Self {
        AdminAuth {
            token_digest: token.map(digest),
            audit,
        }
    }

    /// Checks an `Authorization` header value against the token: Ok, or the reason
    /// (safe to show the client: it never contains the token).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AuthFailure> {
        let Some(want) = &self.token_digest else {
            return Ok(());
        };
        let Some(value) = authorization else {
            return Err(AuthFailure::Missing);
        };
        let Some(given) = bearer(value) else {
            return Err(AuthFailure::NotBearer);
        };
        if constant_time_eq(&digest_bytes(given), want) {
            Ok(())
        } else {
            Err(AuthFailure::WrongToken)
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header of another scheme, or malformed.
    NotBearer,
    /// A bearer token that is not the configured one.
    WrongToken,
}

impl AuthFailure {
    /// Short reason for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_token",
            AuthFailure::NotBearer => "not_bearer",
            AuthFailure::WrongToken => "invalid_token",
        }
    }

    /// The response body.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "unauthorized: this endpoint requires an `Authorization: Bearer <token>` header (the admin token); none was sent\n"
            }
            AuthFailure::NotBearer => {
                "unauthorized: the Authorization header must be `Bearer <token>`\n"
            }
            AuthFailure::WrongToken => "unauthorized: the bearer token is not the admin token\n",
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, surrounding spaces ignored).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn digest(token: &str) -> [u8; 32] {
    digest_bytes(token.as_bytes())
}

fn digest_bytes(b: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(b);
    let mut out = [0u8; 32];
    out.copy_from_slice(&d);
    out
}

/// Equality without an early exit (the inputs are digests, so lengths match and the
/// comparison time does not depend on where the token differs, nor on its length).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Wraps the admin router with the token check (a no-op layer without a token). Serve
/// it with `into_make_service_with_connect_info::<SocketAddr>()` so failures name the
/// peer.
pub fn protect(router: Router, auth: AdminAuth) -> Router {
    if auth.token_digest.is_none() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(auth),
        require_token,
    ))
}

async fn require_token(
    State(auth): State<Arc<AdminAuth>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.check(header) {
        Ok(()) => next.run(req).await,
        Err(failure) => {
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.to_string());
            auth.audit.record(
                "admin.auth_failed",
                serde_json::json!({
                    "path": path,
                    "method": req.method().as_str(),
                    "peer": peer,
                    "reason": failure.reason(),
                }),
            );
            let challenge = match failure {
                AuthFailure::WrongToken => "Bearer realm=\"kmsd\", error=\"invalid_token\"",
                _ => "Bearer realm=\"kmsd\"",
            };
            (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, challenge)],
                failure.message(),
            )
                .into_response()
        }
    }
}

/// Builds the router.
pub fn router(state: AdminState) -> Router {
    let router = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/clients", get(clients))
        .route("/metrics", get(metrics))
        .route("/host-identity", get(host_identity))
        .route("/host-identity/regenerate", post(regenerate_host_identity));
    #[cfg(feature = "fault-injection")]
    let router = router.merge(crate::fault::router());
    router.with_state(state)
}

async fn livez(State(s): State<AdminState>) -> (StatusCode, String) {
    // Live means "makes progress": a stalled loop is reported with its name and duration.
    match s.health.reason() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, String) {
    // Ready means "can answer activations": listeners bound, a leader known, nothing stalled.
    if let Some(reason) = s.health.reason() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        );
    }
    if s.ready.load(Ordering::Relaxed) && s.service.backend().node().has_leader() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
    }
}

async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    let now = s.service.policy().state_time(crate::now_ms());
    Json(report::status(&s.service, &s.counters, &s.facts, now))
}

async fn metrics(State(s): State<AdminState>) -> axum::response::Response {
    let Some(m) = &s.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are disabled (metrics = false)\n",
        )
            .into_response();
    };
    let now = s.service.policy().state_time(crate::now_ms());
    let status = report::status(&s.service, &s.counters, &s.facts, now);
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

async fn host_identity(State(s): State<AdminState>) -> impl IntoResponse {
    Json(report::host_identity(&s.service))
}

/// Replaces the host identity and every ePID (a new hardware id, the configured `host_os`);
/// needs a leader, so the change is committed rather than queued. Audited either way.
async fn regenerate_host_identity(
    State(s): State<AdminState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string());
    if !s.service.backend().node().has_leader() {
        s.audit.record(
            "host_identity.regenerate",
            serde_json::json!({"peer": peer, "ok": false, "error": "no leader"}),
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no leader: the host identity can only be regenerated while the cluster has a quorum\n",
        )
            .into_response();
    }
    let now = s.service.policy().state_time(crate::now_ms());
    match s.service.regenerate_identity(now).await {
        Ok((before, after)) => {
            let hex = |h: [u8; 8]| h.iter().map(|b| format!("{b:02X}")).collect::<String>();
            s.audit.record(
                "host_identity.regenerate",
                serde_json::json!({
                    "peer": peer,
                    "ok": true,
                    "old_hwid": before.map(|b| hex(b.hwid)),
                    "old_build": before.map(|b| b.build),
                    "hwid": hex(after.hwid),
                    "build": after.build,
                    "platform": after.platform,
                }),
            );
            Json(report::host_identity(&s.service)).into_response()
        }
        Err(e) => {
            s.audit.record(
                "host_identity.regenerate",
                serde_json::json!({"peer": peer, "ok": false, "error": e.to_string()}),
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot regenerate the host identity: {e}\n"),
            )
                .into_response()
        }
    }
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
    /// Only this client machine id.
    pub cmid: Option<uuid::Uuid>,
    /// Only machines of this name now or before (ignoring ASCII case).
    pub machine: Option<String>,
    /// Only machines in this lifecycle state (`active`, `overdue`, `expiring`, `expired`,
    /// `failing`), read at this node's clock.
    pub state: Option<String>,
}

async fn clients(State(s): State<AdminState>, Query(q): Query<ClientQuery>) -> Response {
    let policy = s.service.policy();
    let now_ms = policy.state_time(crate::now_ms());
    let lifecycle = match q.state.as_deref() {
        None => None,
        Some(word) => match Lifecycle::parse(word) {
            Some(state) => Some(LifecycleFilter {
                state,
                now_ms,
                policy: policy.lifecycle,
            }),
            None => {
                let known: Vec<&str> = Lifecycle::ALL.iter().map(|l| l.label()).collect();
                return (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown state {word:?}: expected one of {}\n",
                        known.join(", ")
                    ),
                )
                    .into_response();
            }
        },
    };
    let filter = ClientFilter {
        count_group: q.group,
        product_group: q.product,
        seen_since_ms: q.since_ms,
        cmid: q.cmid,
        machine_name: q.machine,
        lifecycle,
    };
    Json(report::clients(&s.service, filter, now_ms)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>) -> AdminAuth {
        AdminAuth::new(token, crate::audit::Audit::new(1, None))
    }

    #[test]
    fn token_check() {
        let a = auth(Some("s3cret"));
        assert_eq!(a.check(Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(a.check(Some(b"bearer  s3cret ")), Ok(()));
        assert_eq!(a.check(None), Err(AuthFailure::Missing));
        assert_eq!(a.check(Some(b"Bearer wrong")), Err(AuthFailure::WrongToken));
        assert_eq!(a.check(Some(b"Bearer s3cre")), Err(AuthFailure::WrongToken));
        assert_eq!(
            a.check(Some(b"Bearer s3crett")),
            Err(AuthFailure::WrongToken)
        );
        assert_eq!(
            a.check(Some(b"Basic czNjcmV0")),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(a.check(Some(b"Bearer")), Err(AuthFailure::NotBearer));
        assert_eq!(a.check(Some(b"Bearers3cret")), Err(AuthFailure::NotBearer));
        assert_eq!(a.check(Some(b"s3cret")), Err(AuthFailure::NotBearer));
        // Without a token everything passes.
        assert_eq!(auth(None).check(None), Ok(()));
    }

    #[test]
    fn messages_never_contain_the_token() {
        for f in [
            AuthFailure::Missing,
            AuthFailure::NotBearer,
            AuthFailure::WrongToken,
        ] {
            assert!(f.message().starts_with("unauthorized: "));
            assert!(!f.message().contains("s3cret"));
        }
        assert!(!format!("{:?}", auth(Some("s3cret"))).contains("s3cret"));
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let a = digest("x");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }
}
