//! The admin HTTP listener: its accept loop, the admin connection cap and the per-connection
//! header and idle deadlines; the routes and the token check stay in [`crate::admin`].
//!
//! The admin port may be exposed beyond loopback (containers, the Helm chart), so it is
//! bounded like port 1688:
//! - at most `admin_max_connections` at once; a connection beyond is closed as soon as it
//!   is accepted (before any byte is read, before the token check), counted in
//!   `kms_admin_connections_refused_total` and logged at most once per [`REFUSAL_LOG_EVERY`];
//! - a request header must be complete within `admin_header_timeout_ms`, counted from the
//!   accept for the first request and from its first byte for later ones (slow-header
//!   clients are cut off);
//! - a keep-alive connection without a request for `admin_idle_timeout_ms` after its last
//!   answer is closed (so is one whose client does not read the answer);
//! - a header larger than `admin_max_header_bytes` gets 431 and a closed connection (hyper's
//!   `max_header_size`, checked as bytes arrive).
//!
//! Both deadlines are kept here rather than by hyper's `header_read_timeout`: hyper 1.12
//! restarts that timer as soon as a keep-alive connection goes idle, so it would close
//! every idle connection at the header timeout and leave no separate idle timeout.
//! A request being handled has no deadline from this module (the handlers are short).

use crate::stats::Counters;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt as _;

/// At most one warning per this interval about refused admin connections.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a stopping daemon waits for admin requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Limits of the admin listener (from the `admin_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Time to deliver a whole request header.
    pub header_timeout: Duration,
    /// Time a connection may stay without a request after its last answer.
    pub idle_timeout: Duration,
    /// Largest request header (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// Simultaneous connections.
    pub max_connections: usize,
}

impl AdminLimits {
    /// The limits the configuration sets (after [`crate::config::Config::validate`]).
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        AdminLimits {
            header_timeout: Duration::from_millis(cfg.admin_header_timeout_ms),
            idle_timeout: Duration::from_millis(cfg.admin_idle_timeout_ms),
            max_header_bytes: cfg.admin_max_header_bytes,
            max_connections: cfg.admin_max_connections,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets requests in flight
/// finish for up to [`SHUTDOWN_GRACE`]. Handlers see the peer as
/// `ConnectInfo<SocketAddr>` (as with axum's `into_make_service_with_connect_info`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: AdminLimits,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    // Header and idle deadlines are ours (see the module docs); no hyper timer needed.
    http.header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut refusals = RefusalLog::new(REFUSAL_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Dropping the stream closes it; nothing was read.
            counters.admin_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = refusals.hit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    refused = n,
                    admin_max_connections = limits.max_connections,
                    "admin connections refused: admin_max_connections are open (one line per {}s at most; all counted in kms_admin_connections_refused_total)",
                    REFUSAL_LOG_EVERY.as_secs()
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, http, counters, stop) = (
            app.clone(),
            http.clone(),
            counters.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            counters
                .admin_open_connections
                .fetch_add(1, Ordering::Relaxed);
            if let Some(kind) = connection(stream, peer, app, &http, limits, stop).await {
                let counter = match kind {
                    Deadline::Header => &counters.admin_header_timeouts,
                    Deadline::Idle => &counters.admin_idle_timeouts,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, timeout = kind.label(), "admin connection closed by a timeout");
            }
            counters
                .admin_open_connections
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // Every permit back means every connection task ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!("admin connections still open after the shutdown grace; closing them");
    }
}

/// Serves one connection until it ends; the deadline that closed it, if one did.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    http: &hyper::server::conn::http1::Builder,
    limits: AdminLimits,
    mut stop: watch::Receiver<bool>,
) -> Option<Deadline> {
    let clock = Arc::new(Clock::new(Instant::now()));
    let io = TokioIo::new(TimedIo {
        inner: stream,
        clock: clock.clone(),
    });
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            clock.request_started();
            req.extensions_mut().insert(ConnectInfo(peer));
            let (app, clock) = (app.clone(), clock.clone());
            async move {
                let response = app.oneshot(req).await;
                clock.response_ready(Instant::now());
                response
            }
        })
    };
    let mut conn = pin!(http.serve_connection(io, service));
    let mut stopping = false;
    // Each turn waits for the connection, its deadline, a phase change or the stop
    // signal; the loop ends with the connection (closed by the client, by hyper after
    // an error or `Connection: close`, or by a deadline here).
    loop {
        let now = Instant::now();
        let due = clock.deadline(limits);
        // While a request is handled there is no deadline: look again after a while.
        let wake = due.map_or(now + limits.idle_timeout, |(at, _)| at);
        tokio::select! {
            // The connection first: bytes that are already here (say, after the runtime
            // was stalled past a deadline) are parsed before the deadline is judged.
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                }
                return None;
            }
            _ = tokio::time::sleep_until(wake) => {
                if let Some((at, kind)) = clock.deadline(limits) {
                    if Instant::now() >= at {
                        // Dropping the connection closes the socket.
                        return Some(kind);
                    }
                }
            }
            _ = clock.changed.notified() => {}
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The request header was not complete in time.
    Header,
    /// No request came in time.
    Idle,
}

impl Deadline {
    /// Metric label (`kms_admin_connection_timeouts_total{kind}`).
    pub fn label(self) -> &'static str {
        match self {
            Deadline::Header => "header",
            Deadline::Idle => "idle",
        }
    }
}

/// Where a connection is in its request cycle, which decides its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request header to complete, since this instant (the accept for the
    /// first request, the first byte for a later one).
    Header(Instant),
    /// No request since this instant (the last answer was handed to hyper).
    Idle(Instant),
    /// A request is being handled.
    Busy,
}

/// A connection's phase, shared by its socket wrapper, its service and its deadline loop.
#[derive(Debug)]
struct Clock {
    phase: Mutex<Phase>,
    /// Woken when the deadline may have moved earlier (idle → header).
    changed: Notify,
}

impl Clock {
    fn new(accepted: Instant) -> Self {
        Clock {
            phase: Mutex::new(Phase::Header(accepted)),
            changed: Notify::new(),
        }
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) -> (Phase, Phase) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let before = *p;
        *p = f(before);
        (before, *p)
    }

    /// Bytes arrived: an idle connection starts a request header now.
    fn bytes_arrived(&self, now: Instant) {
        let (before, after) = self.set(|p| match p {
            Phase::Idle(_) => Phase::Header(now),
            other => other,
        });
        if before != after {
            self.changed.notify_one();
        }
    }

    /// hyper parsed a whole header and calls the service.
    fn request_started(&self) {
        self.set(|_| Phase::Busy);
    }

    /// The answer is ready; the connection is idle until the next request.
    fn response_ready(&self, now: Instant) {
        self.set(|_| Phase::Idle(now));
    }

    /// The instant the connection is closed at unless its phase changes, and why.
    fn deadline(&self, limits: AdminLimits) -> Option<(Instant, Deadline)> {
        let p = *self.phase.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Phase::Header(since) => Some((since + limits.header_timeout, Deadline::Header)),
            Phase::Idle(since) => Some((since + limits.idle_timeout, Deadline::Idle)),
            Phase::Busy => None,
        }
    }
}

/// The socket as hyper sees it, telling the [`Clock`] when bytes arrive.
struct TimedIo {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_arrived(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Rate-limits the warning about refused connections: the first refusal logs, later
/// ones within the interval are only counted and reported with the next line.
#[derive(Debug)]
struct RefusalLog {
    every: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl RefusalLog {
    fn new(every: Duration) -> Self {
        RefusalLog {
            every,
            last: None,
            pending: 0,
        }
    }

    /// Counts one refusal at `now`; when a line is due, the number of refusals it
    /// reports (this one included).
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        if self.last.is_some_and(|l| now < l + self.every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AdminLimits = AdminLimits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        max_header_bytes: 16_384,
        max_connections: 64,
    };

    #[test]
    fn deadlines_follow_the_request_cycle() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let c = Clock::new(t0);
        // A fresh connection must deliver its first header within the header timeout,
        // whether it sends nothing or a part.
        assert_eq!(c.deadline(LIMITS), Some((t0 + s(5), Deadline::Header)));
        c.bytes_arrived(t0 + s(1));
        assert_eq!(c.deadline(LIMITS), Some((t0 + s(5), Deadline::Header)));
        c.request_started();
        assert_eq!(c.deadline(LIMITS), None);
        // Bytes while busy (a body, a pipelined request) change nothing.
        c.bytes_arrived(t0 + s(2));
        assert_eq!(c.deadline(LIMITS), None);
        c.response_ready(t0 + s(3));
        assert_eq!(c.deadline(LIMITS), Some((t0 + s(63), Deadline::Idle)));
        // The next request's first byte starts a header deadline from that byte.
        c.bytes_arrived(t0 + s(40));
        assert_eq!(c.deadline(LIMITS), Some((t0 + s(45), Deadline::Header)));
        // Later bytes of the same header do not extend it.
        c.bytes_arrived(t0 + s(44));
        assert_eq!(c.deadline(LIMITS), Some((t0 + s(45), Deadline::Header)));
    }

    #[tokio::test]
    async fn idle_to_header_wakes_the_deadline_loop() {
        let t0 = Instant::now();
        let c = Clock::new(t0);
        c.request_started();
        c.response_ready(t0);
        // No wake-up for transitions that only move the deadline later.
        let quiet = tokio::time::timeout(Duration::from_millis(20), c.changed.notified()).await;
        assert!(quiet.is_err());
        c.bytes_arrived(t0 + Duration::from_millis(1));
        let woken = tokio::time::timeout(Duration::from_secs(5), c.changed.notified()).await;
        assert!(woken.is_ok());
    }

    #[test]
    fn refusals_log_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = RefusalLog::new(Duration::from_secs(10));
        assert_eq!(log.hit(t0), Some(1));
        for i in 1..=200 {
            assert_eq!(log.hit(t0 + ms(i * 10)), None, "refusal {i}");
        }
        assert_eq!(log.hit(t0 + ms(10_000)), Some(201));
        assert_eq!(log.hit(t0 + ms(10_001)), None);
        assert_eq!(log.hit(t0 + ms(30_000)), Some(2));
    }

    #[test]
    fn limits_come_from_the_admin_settings() {
        let cfg = crate::config::Config {
            admin_header_timeout_ms: 1500,
            admin_idle_timeout_ms: 2500,
            admin_max_header_bytes: 4096,
            admin_max_connections: 3,
            ..crate::config::Config::default()
        };
        assert_eq!(
            AdminLimits::from_config(&cfg),
            AdminLimits {
                header_timeout: Duration::from_millis(1500),
                idle_timeout: Duration::from_millis(2500),
                max_header_bytes: 4096,
                max_connections: 3,
            }
        );
    }
}
