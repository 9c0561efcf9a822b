//! The TCP 1688 accept loop and the per-connection read/answer loop.
//!
//! Bounds at the edge: a connection semaphore, an idle timeout between PDUs, a read
//! timeout for each whole PDU, and a maximum PDU size checked from the header before
//! anything is allocated. Network input never panics the server: every decode error
//! becomes a fault, a refusal or a closed connection.

use crate::service::Service;
use crate::stats::Counters;
use kms_protocol::host::{HostConnection, HostOptions, ProtocolIssue, Step};
use kms_protocol::kms::ResponseRandom;
use kms_protocol::rpc::header::{Header, HEADER_LEN};
use kms_protocol::rpc::NCA_PROTO_ERROR;
use kms_protocol::LicenseState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
    /// Host negotiation options.
    pub host: HostOptions,
    /// Limits.
    pub limits: Limits,
    /// Counters for status and tests.
    pub counters: Arc<Counters>,
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
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            service,
            host,
            limits,
            counters,
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
            let permit = tokio::select! {
                _ = shutdown.changed() => return,
                p = self.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let accepted = tokio::select! {
                _ = shutdown.changed() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let this = self.clone();
                    let sd = shutdown.clone();
                    tokio::spawn(async move {
                        this.counters
                            .open_connections
                            .fetch_add(1, Ordering::Relaxed);
                        this.connection(stream, peer, sd).await;
                        this.counters
                            .open_connections
                            .fetch_sub(1, Ordering::Relaxed);
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

    async fn connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let assoc = self.assoc.fetch_add(1, Ordering::Relaxed);
        let mut host = HostConnection::new(self.host.clone(), assoc);
        let mut buf = vec![0u8; self.limits.max_pdu];
        loop {
            // Wait for the first byte of the next PDU (idle timeout), then the rest of
            // it within the read timeout.
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                r = tokio::time::timeout(self.limits.idle_timeout, stream.read(&mut buf[..1])) => r,
            };
            match first {
                Ok(Ok(1)) => {}
                Ok(Ok(_)) => return,
                Ok(Err(_)) => return,
                Err(_) => {
                    self.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "idle timeout");
                    return;
                }
            }
            let frame_len = match tokio::time::timeout(
                self.limits.read_timeout,
                self.read_rest(&mut stream, &mut buf),
            )
            .await
            {
                Ok(Ok(Ok(n))) => n,
                Ok(Ok(Err(issue))) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, %issue, "closing connection: bad PDU header");
                    if let ProtocolIssue::Rpc(kms_protocol::RpcError::Version { .. }) = issue {
                        let _ = stream.write_all(&proto_fault(&buf)).await;
                    }
                    return;
                }
                Ok(Err(_)) => return,
                Err(_) => {
                    self.counters.read_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, "closing connection: PDU not received within read timeout");
                    return;
                }
            };
            let reply = match host.handle(&buf[..frame_len]) {
                Step::Send(bytes) => bytes,
                Step::Fault(bytes, issue) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, %issue, "RPC fault sent");
                    bytes
                }
                Step::Invalid(bytes, err) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, error = %err, "invalid KMS request refused (0x8007000D)");
                    bytes
                }
                Step::Close(issue) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%peer, %issue, "closing connection");
                    return;
                }
                Step::Activate(pending) => {
                    let started = std::time::Instant::now();
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    let random = ResponseRandom {
                        random: rand::random(),
                        ivs: rand::random(),
                    };
                    match self
                        .service
                        .activate(&pending.request, now_ms, random)
                        .await
                    {
                        Ok((answer, o)) => {
                            let b = &pending.request.base;
                            tracing::info!(
                                target: "kmsd::activation",
                                client = %peer,
                                machine = %b.machine_name(),
                                cmid = %b.cmid,
                                product = %o.product,
                                product_group = o.product_group.as_deref().unwrap_or("unknown"),
                                count_group = o.count_group.as_deref().unwrap_or("unknown"),
                                license_state = LicenseState::from_wire(b.license_status).label(),
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
                            pending.reply(&answer)
                        }
                        Err(e) => {
                            tracing::error!(%peer, error = %e, "cannot record request; closing so the client tries another host");
                            return;
                        }
                    }
                }
            };
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    }

    /// Reads the rest of a PDU whose first byte is in `buf[0]`; returns its length.
    async fn read_rest(
        &self,
        stream: &mut TcpStream,
        buf: &mut [u8],
    ) -> std::io::Result<Result<usize, ProtocolIssue>> {
        stream.read_exact(&mut buf[1..HEADER_LEN]).await?;
        let h = match Header::parse(&buf[..HEADER_LEN], self.limits.max_pdu) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.into())),
        };
        let len = h.frag_len as usize;
        stream.read_exact(&mut buf[HEADER_LEN..len]).await?;
        Ok(Ok(len))
    }
}

/// A fault (nca_proto_error) echoing the call id of a PDU with a bad version.
fn proto_fault(header: &[u8]) -> Vec<u8> {
    use kms_protocol::rpc::pdu::{Body, Fault, Pdu};
    let call_id = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
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
