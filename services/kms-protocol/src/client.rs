//! Sans-IO client side of the RPC exchange: the bind a modern Windows client sends,
//! choosing a context from the bind_ack, wrapping a KMS message in a request PDU and
//! unwrapping the response.

use crate::rpc::header::{PFC_CONC_MPX, PFC_FIRST_FRAG, PFC_LAST_FRAG};
use crate::rpc::pdu::Body;
use crate::rpc::stub::{self, Ndr, ResponseStub};
use crate::rpc::syntax::{btfn, Syntax, KMS_INTERFACE, NDR32, NDR64};
use crate::rpc::{Bind, ContextElement, Pdu, Request};
use crate::RpcError;

/// Which transfer syntaxes the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOffer {
    /// Offer NDR64 as context 1.
    pub ndr64: bool,
    /// Offer bind-time feature negotiation as context 2.
    pub btfn: bool,
}

impl Default for BindOffer {
    fn default() -> Self {
        Self {
            ndr64: true,
            btfn: true,
        }
    }
}

/// Builds a bind: ctx 0 NDR32, then optionally ctx 1 NDR64 and ctx 2 BTFN.
pub fn bind_pdu(call_id: u32, offer: BindOffer) -> Vec<u8> {
    let mut contexts = vec![ContextElement {
        context_id: 0,
        abstract_syntax: KMS_INTERFACE,
        transfer_syntaxes: vec![NDR32],
    }];
    if offer.ndr64 {
        contexts.push(ContextElement {
            context_id: 1,
            abstract_syntax: KMS_INTERFACE,
            transfer_syntaxes: vec![NDR64],
        });
    }
    if offer.btfn {
        contexts.push(ContextElement {
            context_id: contexts.len() as u16,
            abstract_syntax: KMS_INTERFACE,
            transfer_syntaxes: vec![btfn(3)],
        });
    }
    Pdu {
        flags: PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_CONC_MPX,
        call_id,
        body: Body::Bind(Bind {
            max_xmit_frag: 5840,
            max_recv_frag: 5840,
            assoc_group: 0,
            contexts,
        }),
    }
    .encode()
}

/// Errors of the client-side RPC exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientRpcError {
    /// The PDU did not decode.
    #[error("malformed PDU from host: {0}")]
    Rpc(#[from] RpcError),
    /// The host accepted no usable transfer syntax.
    #[error("host accepted neither NDR32 nor NDR64")]
    NoContext,
    /// The host sent a fault PDU.
    #[error("host sent RPC fault {0:#010x}")]
    Fault(u32),
    /// The host sent a PDU that does not fit here.
    #[error("unexpected PDU from host: {0}")]
    Unexpected(&'static str),
    /// Call id not echoed.
    #[error("call id mismatch: sent {sent}, got {got}")]
    CallId {
        /// Sent.
        sent: u32,
        /// Received.
        got: u32,
    },
}

/// Reads a bind_ack and returns the context id and NDR flavour to use.
pub fn choose_context(frame: &[u8], offer: BindOffer) -> Result<(u16, Ndr), ClientRpcError> {
    let pdu = Pdu::decode(frame, 65535)?;
    let ack = match pdu.body {
        Body::BindAck(a) => a,
        Body::Fault(f) => return Err(ClientRpcError::Fault(f.status)),
        _ => return Err(ClientRpcError::Unexpected("expected bind_ack")),
    };
    let mut offered = vec![(0u16, Ndr::Ndr32)];
    if offer.ndr64 {
        offered.push((1, Ndr::Ndr64));
    }
    for (i, res) in ack.results.iter().enumerate() {
        if res.result != 0 {
            continue;
        }
        let Some(&(id, ndr)) = offered.get(i) else {
            continue;
        };
        let ok = matches!(
            (ndr, Syntax::classify(&res.syntax)),
            (Ndr::Ndr32, Syntax::Ndr32) | (Ndr::Ndr64, Syntax::Ndr64)
        );
        if ok {
            return Ok((id, ndr));
        }
    }
    Err(ClientRpcError::NoContext)
}

/// Wraps a KMS message in a request PDU.
pub fn request_pdu(call_id: u32, context_id: u16, ndr: Ndr, msg: &[u8]) -> Vec<u8> {
    let stub = stub::encode_request(ndr, msg);
    Pdu {
        flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        call_id,
        body: Body::Request(Request {
            alloc_hint: stub.len() as u32,
            context_id,
            opnum: 0,
            object: None,
            stub,
        }),
    }
    .encode()
}

/// What the host answered to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostReply {
    /// A KMS response message to verify.
    Message(Vec<u8>),
    /// The host refused with this HRESULT.
    Refused(u32),
}

/// Unwraps a response PDU.
pub fn read_response(frame: &[u8], call_id: u32, ndr: Ndr) -> Result<HostReply, ClientRpcError> {
    let pdu = Pdu::decode(frame, 65535)?;
    let resp = match pdu.body {
        Body::Response(r) => r,
        Body::Fault(f) => return Err(ClientRpcError::Fault(f.status)),
        _ => return Err(ClientRpcError::Unexpected("expected response")),
    };
    if pdu.call_id != call_id {
        return Err(ClientRpcError::CallId {
            sent: call_id,
            got: pdu.call_id,
        });
    }
    Ok(match stub::decode_response(ndr, &resp.stub)? {
        ResponseStub::Ok(m) => HostReply::Message(m.to_vec()),
        ResponseStub::Error(hr) => HostReply::Refused(hr),
    })
}
