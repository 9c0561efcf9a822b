//! An async KMS client over TCP: bind, one or more activation requests on the same
//! connection, full verification of every response (MAC / hash / HMAC, echoes).

use kms_protocol::client::{self as rpc_client, BindOffer, ClientRpcError, HostReply};
use kms_protocol::host::{
    HRESULT_COUNT_TOO_LOW, HRESULT_INVALID_DATA, HRESULT_TIME_SKEW, HRESULT_UNSUPPORTED_PRODUCT,
};
use kms_protocol::kms::{self, BaseRequest, BaseResponse};
use kms_protocol::rpc::header::{Header, HEADER_LEN};
use kms_protocol::rpc::stub::Ndr;
use kms_protocol::KmsError;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// What can go wrong for a client, by kind (the bench counts these).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Target.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing failed (connection closed by the host, reset...).
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The exchange did not finish in time.
    #[error("timed out")]
    Timeout,
    /// RPC-level problem (fault, no usable context, malformed PDU).
    #[error(transparent)]
    Rpc(#[from] ClientRpcError),
    /// The host refused with an HRESULT.
    #[error("the KMS host refused the request: {}", describe_hresult(*.0))]
    Refused(u32),
    /// The response failed verification.
    #[error("the response is not authentic: {0}")]
    NotAuthentic(KmsError),
}

impl ClientError {
    /// Short label for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            Self::Connect { .. } => "connect".into(),
            Self::Io(_) => "io".into(),
            Self::Timeout => "timeout".into(),
            Self::Rpc(ClientRpcError::Fault(code)) => format!("rpc_fault_{code:#010x}"),
            Self::Rpc(_) => "rpc".into(),
            Self::Refused(hr) => format!("refused_{hr:#010x}"),
            Self::NotAuthentic(_) => "not_authentic".into(),
        }
    }
}

/// Human text for the HRESULTs a KMS host returns (as slmgr prints them).
pub fn describe_hresult(hr: u32) -> String {
    let text = match hr {
        HRESULT_UNSUPPORTED_PRODUCT => "the specified Key Management Service (KMS) cannot be used (product not supported by this host)",
        HRESULT_TIME_SKEW => "the request timestamp is invalid (client and host clocks differ too much)",
        HRESULT_INVALID_DATA => "the data is invalid",
        HRESULT_COUNT_TOO_LOW => "the count reported by your Key Management Service (KMS) is insufficient",
        0xC004_F041 => "the KMS host is not activated",
        _ => "unknown error",
    };
    format!("0x{hr:08X} ({text})")
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `host:port`.
    pub addr: String,
    /// Transfer syntaxes to offer.
    pub offer: BindOffer,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
    /// Local source address to connect from (None: the system's choice).
    pub source: Option<std::net::IpAddr>,
}

/// Connects to `addr`, from `source` when given.
async fn connect(addr: &str, source: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for target in tokio::net::lookup_host(addr).await? {
        if target.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if target.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A verified activation response.
#[derive(Debug, Clone)]
pub struct Activated {
    /// Response body.
    pub response: BaseResponse,
    /// Host hardware id (V6).
    pub hwid: Option<[u8; 8]>,
    /// NDR flavour used.
    pub ndr: Ndr,
}

/// One open client connection, bound to the KMS interface.
pub struct Connection {
    stream: TcpStream,
    context: u16,
    ndr: Ndr,
    call_id: u32,
}

async fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, ClientError> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).await?;
    let h = Header::parse(&head, 65535).map_err(|e| ClientError::Rpc(e.into()))?;
    let mut frame = vec![0u8; h.frag_len as usize];
    frame[..HEADER_LEN].copy_from_slice(&head);
    stream.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(frame)
}

impl Connection {
    /// Connects and binds.
    pub async fn open(opts: &ConnectOptions) -> Result<Connection, ClientError> {
        tokio::time::timeout(opts.timeout, async {
            let mut stream =
                connect(&opts.addr, opts.source)
                    .await
                    .map_err(|source| ClientError::Connect {
                        addr: opts.addr.clone(),
                        source,
                    })?;
            let _ = stream.set_nodelay(true);
            stream
                .write_all(&rpc_client::bind_pdu(2, opts.offer))
                .await?;
            let ack = read_frame(&mut stream).await?;
            let (context, ndr) = rpc_client::choose_context(&ack, opts.offer)?;
            Ok(Connection {
                stream,
                context,
                ndr,
                call_id: 2,
            })
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// Sends one request and verifies the answer.
    pub async fn activate(
        &mut self,
        base: &BaseRequest,
        timeout: Duration,
    ) -> Result<Activated, ClientError> {
        tokio::time::timeout(timeout, async {
            let (msg, creq) =
                kms::encode_request(base, rand::random()).map_err(ClientError::NotAuthentic)?;
            let call_id = self.call_id;
            self.call_id = self.call_id.wrapping_add(1);
            self.stream
                .write_all(&rpc_client::request_pdu(
                    call_id,
                    self.context,
                    self.ndr,
                    &msg,
                ))
                .await?;
            let frame = read_frame(&mut self.stream).await?;
            match rpc_client::read_response(&frame, call_id, self.ndr)? {
                HostReply::Refused(hr) => Err(ClientError::Refused(hr)),
                HostReply::Message(m) => {
                    let v = kms::decode_response(&creq, &m).map_err(ClientError::NotAuthentic)?;
                    Ok(Activated {
                        response: v.base,
                        hwid: v.hwid,
                        ndr: self.ndr,
                    })
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }
}

/// Parameters of a request (the fields a Windows client fills in).
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Protocol major version (4, 5, 6).
    pub protocol: u16,
    /// Application id.
    pub application_id: Uuid,
    /// SKU id.
    pub sku_id: Uuid,
    /// KMS counted id.
    pub kms_counted_id: Uuid,
    /// Client machine id.
    pub cmid: Uuid,
    /// Machine name.
    pub machine_name: String,
    /// License state (wire value).
    pub license_status: u32,
    /// Minutes left in that state.
    pub grace_minutes: u32,
    /// Required count.
    pub required_count: u32,
    /// Virtual machine.
    pub client_vm: bool,
    /// Request time (FILETIME).
    pub request_time: u64,
}

impl RequestSpec {
    /// The base request.
    pub fn to_base(&self) -> BaseRequest {
        let mut b = BaseRequest {
            minor: 0,
            major: self.protocol,
            is_client_vm: self.client_vm as u32,
            license_status: self.license_status,
            grace_time: self.grace_minutes,
            application_id: self.application_id,
            sku_id: self.sku_id,
            kms_counted_id: self.kms_counted_id,
            cmid: self.cmid,
            required_client_count: self.required_count,
            request_time: self.request_time,
            previous_cmid: Uuid::nil(),
            machine_name_raw: [0; 128],
        };
        b.set_machine_name(&self.machine_name);
        b
    }
}
