//! The TCP 1688 accept loop and the per-connection read/answer loop.
//!
//! Bounds at the edge: the access gate (CIDR allowlist, per-source connection limit and
//! request rate) decided from the peer address before any byte is read, a global
//! connection cap (excess connections are closed at once so clients move on to the next
//! SRV target), an idle timeout between PDUs, a read timeout for each whole PDU, a total
//! connection lifetime, and a maximum PDU size checked from the header before anything
//! is allocated. Network input never panics the server: every decode error
//! becomes a fault, a refusal or a closed connection.

use crate::access::{Gate, Refusal};
use crate::metrics::{Metrics, RequestLabels, RequestResult};
use crate::service::Service;
use crate::stats::{Counters, DecodeKind};
use crate::watchdog::RequestProgress;
use kms_protocol::host::{
    HostConnection, HostOptions, Pending, ProtocolIssue, Step, HRESULT_UNSUPPORTED_PRODUCT,
};
use kms_protocol::kms::ResponseRandom;
use kms_protocol::rpc::header::{Header, HEADER_LEN};
use kms_protocol::rpc::NCA_PROTO_ERROR;
use kms_protocol::LicenseState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Limits applied to client connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest PDU.
    pub max_pdu: usize,
    /// Time to receive one PDU after its first byte.
    pub read_timeout: Duration,
    /// Idle time allowed between PDUs.
    pub idle_timeout: Duration,
    /// Simultaneous connections.
    pub max_connections: usize,
    /// Longest a connection may stay open (checked between PDUs).
    pub lifetime: Duration,
}

/// Binds a listener; IPv6 sockets are v6-only so `[::]` and `0.0.0.0` can share a port.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Shared context of all connections.
pub struct Listener {
    /// Activation policy and state.
    pub service: Arc<Service>,
    /// Host negotiation options and limits (swapped as a whole on reload; each connection
    /// keeps the ones it started with).
    settings: std::sync::RwLock<Arc<(HostOptions, Limits)>>,
    /// Counters for status and tests.
    pub counters: Arc<Counters>,
    /// Prometheus metrics (None when disabled).
    pub metrics: Option<Arc<Metrics>>,
    /// Client access control.
    pub gate: Arc<Gate>,
    /// Activations started and finished, for the watchdog's request loop.
    pub requests: Arc<RequestProgress>,
    assoc: AtomicU32,
    slots: Arc<Semaphore>,
}

impl Listener {
    /// Builds the shared listener context.
    pub fn new(
        service: Arc<Service>,
        host: HostOptions,
        limits: Limits,
        counters: Arc<Counters>,
        metrics: Option<Arc<Metrics>>,
        gate: Arc<Gate>,
        requests: Arc<RequestProgress>,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            service,
            settings: std::sync::RwLock::new(Arc::new((host, limits))),
            counters,
            metrics,
            gate,
            requests,
            assoc: AtomicU32::new(rand::random::<u32>() & 0x7fff_0000 | 0x1000),
        })
    }

    /// Accepts connections on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Decided from the address alone, before reading a byte.
                    let ticket = match self.gate.admit(peer.ip()) {
                        Ok(t) => t,
                        Err(refusal) => {
                            self.refuse(refusal, peer);
                            continue;
                        }
                    };
                    let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                        self.refuse(Refusal::GlobalLimit, peer);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let this = self.clone();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        this.counters.accepted.fetch_add(1, Ordering::Relaxed);
                        this.counters
                            .open_connections
                            .fetch_add(1, Ordering::Relaxed);
                        this.connection(stream, peer, sd).await;
                        this.counters
                            .open_connections
                            .fetch_sub(1, Ordering::Relaxed);
                        drop(ticket);
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The negotiation options and limits new connections get.
    pub fn settings(&self) -> Arc<(HostOptions, Limits)> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the per-connection limits for new connections (reload). The connection
    /// cap is fixed at start.
    pub fn set_limits(&self, max_pdu: usize, read: Duration, idle: Duration, lifetime: Duration) {
        let mut guard = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let (mut host, mut limits) = (guard.0.clone(), guard.1.clone());
        host.max_pdu = max_pdu;
        limits.max_pdu = max_pdu;
        limits.read_timeout = read;
        limits.idle_timeout = idle;
        limits.lifetime = lifetime;
        *guard = Arc::new((host, limits));
    }

    /// Counts and logs a refused connection (the stream is dropped, i.e. closed).
    fn refuse(&self, refusal: Refusal, peer: SocketAddr) {
        self.counters.refusal(refusal);
        tracing::debug!(%peer, reason = refusal.label(), "connection refused");
    }

    async fn connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let assoc = self.assoc.fetch_add(1, Ordering::Relaxed);
        let settings = self.settings();
        let (host_options, limits) = (&settings.0, &settings.1);
        let mut host = HostConnection::new(host_options.clone(), assoc);
        let mut reader = FrameReader::new(limits.max_pdu);
        let end_of_life = tokio::time::Instant::now() + limits.lifetime;
        loop {
            let frame = tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep_until(end_of_life) => {
                    self.counters.lifetime_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closing connection: lifetime reached");
                    return;
                }
                f = reader.next(&mut stream, limits) => f,
            };
            let frame_len = match frame {
                Ok(n) => n,
                Err(ReadEnd::Closed) => return,
                Err(ReadEnd::Idle) => {
                    self.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "idle timeout");
                    return;
                }
                Err(ReadEnd::Slow) => {
                    self.counters.read_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "closing connection: PDU not received within read timeout");
                    return;
                }
                Err(ReadEnd::BadHeader(issue, call_id)) => {
                    self.counters.decode_error(DecodeKind::Header);
                    tracing::info!(%peer, %issue, "closing connection: bad PDU header");
                    if let ProtocolIssue::Rpc(kms_protocol::RpcError::Version { .. }) = issue {
                        let _ = stream.write_all(&proto_fault(call_id)).await;
                    }
                    return;
                }
            };
            // A request PDU carries a KMS message: it gets the activation span (exported
            // only when tracing is on; a disabled callsite otherwise).
            let frame = reader.frame(frame_len);
            let is_request = frame.get(2) == Some(&0);
            if is_request && !self.gate.take_request(peer.ip(), crate::now_ms()) {
                self.refuse(Refusal::RateLimited, peer);
                return;
            }
            let span = if is_request {
                tracing::trace_span!(
                    target: "kms_trace",
                    "kms.activation",
                    otel.kind = "server",
                    client = %peer,
                    protocol = tracing::field::Empty,
                    count_group = tracing::field::Empty,
                    result = tracing::field::Empty,
                    current_count = tracing::field::Empty,
                )
            } else {
                tracing::Span::none()
            };
            let step = {
                let _decode =
                    tracing::trace_span!(target: "kms_trace", parent: &span, "kms.decode")
                        .entered();
                host.handle(frame)
            };
            reader.consume(frame_len);
            let reply = match step {
                Step::Send(bytes) => bytes,
                Step::Fault(bytes, issue) => {
                    self.counters.decode_error(DecodeKind::RpcFault);
                    tracing::info!(%peer, %issue, "RPC fault sent");
                    bytes
                }
                Step::Invalid(bytes, err) => {
                    self.counters.decode_error(DecodeKind::InvalidRequest);
                    tracing::info!(%peer, error = %err, "invalid KMS request refused (0x8007000D)");
                    bytes
                }
                Step::Close(issue) => {
                    self.counters.decode_error(DecodeKind::Protocol);
                    tracing::info!(%peer, %issue, "closing connection");
                    return;
                }
                Step::Activate(pending) => match tracing::Instrument::instrument(
                    self.activate(&pending, peer),
                    span.clone(),
                )
                .await
                {
                    Some(bytes) => bytes,
                    None => return,
                },
            };
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    }

    /// Decides one activation, logs it like event 12290 and builds the reply; None when
    /// the request could not be recorded (the connection is then closed so the client
    /// tries another host).
    async fn activate(&self, pending: &Pending, peer: SocketAddr) -> Option<Vec<u8>> {
        let _in_flight = self.requests.begin();
        #[cfg(feature = "fault-injection")]
        crate::fault::hold_requests().await;
        let started = std::time::Instant::now();
        let now_ms = crate::now_ms();
        let random = ResponseRandom {
            random: rand::random(),
            ivs: rand::random(),
        };
        let b = &pending.request.base;
        let license_state = LicenseState::from_wire(b.license_status).label();
        let span = tracing::Span::current();
        span.record("protocol", b.major);
        let decided = tracing::Instrument::instrument(
            self.service.activate(&pending.request, now_ms, random),
            tracing::trace_span!(target: "kms_trace", "kms.replicate"),
        );
        match decided.await {
            Ok((answer, o)) => {
                tracing::info!(
                    target: "kmsd::activation",
                    client = %peer,
                    machine = %b.machine_name(),
                    cmid = %b.cmid,
                    product = %o.product,
                    product_group = o.product_group.as_deref().unwrap_or("unknown"),
                    count_group = o.count_group.as_deref().unwrap_or("unknown"),
                    license_state,
                    minutes_to_expiry = b.grace_time,
                    client_vm = b.is_client_vm != 0,
                    protocol = b.major,
                    required_count = b.required_client_count,
                    current_count = o.current_count,
                    result = %format_args!("{:#010x}", o.refused.unwrap_or(0)),
                    duplicate = o.duplicate,
                    micros = started.elapsed().as_micros() as u64,
                    "KMS request"
                );
                if o.refused.is_some() {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.activated.fetch_add(1, Ordering::Relaxed);
                }
                let reply = {
                    let _respond =
                        tracing::trace_span!(target: "kms_trace", "kms.respond").entered();
                    pending.reply(&answer)
                };
                let result = match o.refused {
                    Some(HRESULT_UNSUPPORTED_PRODUCT) => RequestResult::RefusedProduct,
                    Some(_) => RequestResult::Error,
                    None if o.current_count < b.required_client_count => RequestResult::CountTooLow,
                    None => RequestResult::Activated,
                };
                let count_group = o.count_group.as_deref().unwrap_or("unknown");
                span.record("result", result.label());
                span.record("count_group", count_group);
                span.record("current_count", o.current_count);
                if let Some(m) = &self.metrics {
                    let refused_group = o
                        .refused
                        .map(|_| o.product_group.as_deref().unwrap_or("unknown"));
                    m.request(
                        RequestLabels {
                            count_group,
                            protocol: b.major,
                            license_state,
                            result,
                        },
                        started.elapsed(),
                        refused_group,
                    );
                }
                Some(reply)
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot record request; closing so the client tries another host");
                if let Some(m) = &self.metrics {
                    let group = self
                        .service
                        .catalog()
                        .group_by_counted_id(&b.kms_counted_id)
                        .map(|g| g.count_group.as_str())
                        .unwrap_or("unknown");
                    m.request(
                        RequestLabels {
                            count_group: group,
                            protocol: b.major,
                            license_state,
                            result: RequestResult::Error,
                        },
                        started.elapsed(),
                        None,
                    );
                }
                None
            }
        }
    }
}

/// Why no frame came out of a [`FrameReader`].
enum ReadEnd {
    /// Peer closed or the socket failed.
    Closed,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// A started PDU did not complete within the read timeout.
    Slow,
    /// The header is invalid (with the call id it carried).
    BadHeader(ProtocolIssue, u32),
}

/// Buffers socket reads and cuts whole PDUs out of them, so a PDU usually costs one
/// read system call. Never holds more than one maximum-size PDU.
struct FrameReader {
    buf: Vec<u8>,
    filled: usize,
    max_pdu: usize,
}

impl FrameReader {
    fn new(max_pdu: usize) -> Self {
        Self {
            buf: vec![0; max_pdu.max(HEADER_LEN)],
            filled: 0,
            max_pdu,
        }
    }

    /// Length of the next complete frame at the start of the buffer, reading as needed.
    async fn next(&mut self, stream: &mut TcpStream, limits: &Limits) -> Result<usize, ReadEnd> {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            if self.filled >= HEADER_LEN {
                let head = &self.buf[..HEADER_LEN];
                match Header::parse(head, self.max_pdu) {
                    Ok(h) if self.filled >= h.frag_len as usize => return Ok(h.frag_len as usize),
                    Ok(_) => {}
                    Err(e) => {
                        let call_id = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
                        return Err(ReadEnd::BadHeader(e.into(), call_id));
                    }
                }
            }
            let read = stream.read(&mut self.buf[self.filled..]);
            let n = if self.filled == 0 {
                match tokio::time::timeout(limits.idle_timeout, read).await {
                    Ok(r) => r,
                    Err(_) => return Err(ReadEnd::Idle),
                }
            } else {
                let d = *deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + limits.read_timeout);
                match tokio::time::timeout_at(d, read).await {
                    Ok(r) => r,
                    Err(_) => return Err(ReadEnd::Slow),
                }
            };
            match n {
                Ok(0) | Err(_) => return Err(ReadEnd::Closed),
                Ok(n) => {
                    if self.filled == 0 {
                        deadline = Some(tokio::time::Instant::now() + limits.read_timeout);
                    }
                    self.filled += n;
                }
            }
        }
    }

    fn frame(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    fn consume(&mut self, len: usize) {
        self.buf.copy_within(len..self.filled, 0);
        self.filled -= len;
    }
}

/// A fault (nca_proto_error) echoing the call id of a PDU with a bad version.
fn proto_fault(call_id: u32) -> Vec<u8> {
    use kms_protocol::rpc::pdu::{Body, Fault, Pdu};
    Pdu {
        flags: 0x23,
        call_id,
        body: Body::Fault(Fault {
            alloc_hint: 32,
            context_id: 0,
            cancel_count: 0,
            status: NCA_PROTO_ERROR,
        }),
    }
    .encode()
}
