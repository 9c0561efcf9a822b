//! Sans-IO host side of one TCP connection: feed it whole PDUs, act on the [`Step`] it
//! returns. It owns the per-connection bind state (which context id means NDR32 or
//! NDR64) and answers binds the way a Windows host does; activation decisions (count,
//! policy, statistics) stay with the caller, who answers a [`Pending`] request.

use crate::kms::{self, BaseResponse, DecodedRequest, ResponseRandom};
use crate::rpc::header::{PFC_CONC_MPX, PFC_DID_NOT_EXECUTE, PFC_FIRST_FRAG, PFC_LAST_FRAG};
use crate::rpc::pdu::Body;
use crate::rpc::stub::{self, Ndr};
use crate::rpc::syntax::{Syntax, KMS_INTERFACE, NDR32, NDR64};
use crate::rpc::{
    Bind, BindAck, ContextResult, Fault, Pdu, PduType, Response, NCA_OP_RNG_ERROR, NCA_UNK_IF,
};
use crate::{KmsError, RpcError};

/// HRESULT: the KMS cannot be used for this product (unsupported / not licensed).
pub const HRESULT_UNSUPPORTED_PRODUCT: u32 = 0xC004_F042;
/// HRESULT: client time differs from the host's by more than allowed.
pub const HRESULT_TIME_SKEW: u32 = 0xC004_F06C;
/// HRESULT: invalid data (malformed request or unsupported version).
pub const HRESULT_INVALID_DATA: u32 = 0x8007_000D;
/// HRESULT a client reports itself when the host's count is below its minimum (the host
/// answers normally; it never sends this code).
pub const HRESULT_COUNT_TOO_LOW: u32 = 0xC004_F038;

/// How the host negotiates transfer syntaxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Accept NDR64 when offered (and then reject NDR32 in the same bind), as Windows
    /// 8 / Server 2012 and later hosts do.
    pub ndr64: bool,
    /// Acknowledge bind-time feature negotiation.
    pub btfn: bool,
    /// TCP port announced as the bind_ack secondary address.
    pub port: u16,
    /// Largest PDU accepted.
    pub max_pdu: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            ndr64: true,
            btfn: true,
            port: 1688,
            max_pdu: 4096,
        }
    }
}

/// Why a connection is being closed or a PDU was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolIssue {
    /// The PDU did not decode.
    #[error("malformed PDU: {0}")]
    Rpc(#[from] RpcError),
    /// A PDU type a host never receives (response, fault, bind_ack, ...).
    #[error("unexpected {0:?} PDU")]
    Unexpected(PduType),
    /// Request on a context id that was never bound (fault sent).
    #[error("request on unbound context {0}")]
    UnknownContext(u16),
    /// Request for an operation other than 0 (fault sent).
    #[error("request for unknown operation {0}")]
    BadOpnum(u16),
}

/// What the caller must do after feeding one PDU.
#[derive(Debug)]
pub enum Step {
    /// Send these bytes and keep reading.
    Send(Vec<u8>),
    /// Send these bytes (a fault) and keep reading; the issue is for logs/metrics.
    Fault(Vec<u8>, ProtocolIssue),
    /// Close the connection without a reply.
    Close(ProtocolIssue),
    /// The KMS message was invalid: send this refusal (HRESULT 0x8007000D) and keep
    /// reading; the error is for logs/metrics.
    Invalid(Vec<u8>, KmsError),
    /// An authenticated activation request: decide, then send [`Pending::reply`].
    Activate(Box<Pending>),
}

/// An activation request awaiting the host's decision.
#[derive(Debug, Clone)]
pub struct Pending {
    call_id: u32,
    context_id: u16,
    ndr: Ndr,
    /// The decoded request.
    pub request: DecodedRequest,
}

/// The host's decision on a [`Pending`] request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Activation response.
    Activated {
        /// Body (ePID, count, intervals; CMID and time echo).
        response: BaseResponse,
        /// Random values for the protection.
        random: ResponseRandom,
        /// Host hardware id (V6).
        hwid: [u8; 8],
    },
    /// Refusal with an HRESULT.
    Refused(u32),
}

impl Pending {
    /// NDR flavour the request came in.
    pub fn ndr(&self) -> Ndr {
        self.ndr
    }

    /// Builds the response PDU for `answer`.
    pub fn reply(&self, answer: &Answer) -> Vec<u8> {
        let stub = match answer {
            Answer::Activated {
                response,
                random,
                hwid,
            } => {
                let msg = kms::encode_response(&self.request, response, random, *hwid);
                stub::encode_response_ok(self.ndr, &msg)
            }
            Answer::Refused(hr) => stub::encode_response_error(self.ndr, *hr),
        };
        response_pdu(self.call_id, self.context_id, stub)
    }
}

fn response_pdu(call_id: u32, context_id: u16, stub: Vec<u8>) -> Vec<u8> {
    Pdu {
        flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        call_id,
        body: Body::Response(Response {
            alloc_hint: stub.len() as u32,
            context_id,
            cancel_count: 0,
            stub,
        }),
    }
    .encode()
}

fn fault_pdu(call_id: u32, status: u32) -> Vec<u8> {
    Pdu {
        flags: PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE,
        call_id,
        body: Body::Fault(Fault {
            alloc_hint: 32,
            context_id: 0,
            cancel_count: 0,
            status,
        }),
    }
    .encode()
}

/// Per-connection host state.
#[derive(Debug, Clone)]
pub struct HostConnection {
    opts: HostOptions,
    assoc_group: u32,
    contexts: Vec<(u16, Ndr)>,
}

impl HostConnection {
    /// A new connection; `assoc_group` is the host-chosen association group id.
    pub fn new(opts: HostOptions, assoc_group: u32) -> Self {
        Self {
            opts,
            assoc_group: assoc_group.max(1),
            contexts: Vec::new(),
        }
    }

    /// Handles one whole PDU frame.
    pub fn handle(&mut self, frame: &[u8]) -> Step {
        let pdu = match Pdu::decode(frame, self.opts.max_pdu) {
            Ok(p) => p,
            Err(e) => return Step::Close(e.into()),
        };
        match pdu.body {
            Body::Bind(ref b) => {
                let results = self.negotiate(b, true);
                let flags = PFC_FIRST_FRAG | PFC_LAST_FRAG | (pdu.flags & PFC_CONC_MPX);
                Step::Send(self.ack(pdu.call_id, flags, b, results, true))
            }
            Body::AlterContext(ref b) => {
                let results = self.negotiate(b, false);
                Step::Send(self.ack(
                    pdu.call_id,
                    PFC_FIRST_FRAG | PFC_LAST_FRAG,
                    b,
                    results,
                    false,
                ))
            }
            Body::Request(req) => {
                let Some(&(_, ndr)) = self.contexts.iter().find(|(id, _)| *id == req.context_id)
                else {
                    return Step::Fault(
                        fault_pdu(pdu.call_id, NCA_UNK_IF),
                        ProtocolIssue::UnknownContext(req.context_id),
                    );
                };
                if req.opnum != 0 {
                    return Step::Fault(
                        fault_pdu(pdu.call_id, NCA_OP_RNG_ERROR),
                        ProtocolIssue::BadOpnum(req.opnum),
                    );
                }
                let invalid = |e: KmsError| {
                    Step::Invalid(
                        response_pdu(
                            pdu.call_id,
                            req.context_id,
                            stub::encode_response_error(ndr, HRESULT_INVALID_DATA),
                        ),
                        e,
                    )
                };
                let msg = match stub::decode_request(ndr, &req.stub) {
                    Ok(m) => m,
                    Err(_) => {
                        return invalid(KmsError::TooShort {
                            major: 0,
                            need: 8,
                            have: req.stub.len(),
                        })
                    }
                };
                match kms::decode_request(msg) {
                    Ok(request) => Step::Activate(Box::new(Pending {
                        call_id: pdu.call_id,
                        context_id: req.context_id,
                        ndr,
                        request,
                    })),
                    Err(e) => invalid(e),
                }
            }
            other => {
                let t = Pdu {
                    flags: 0,
                    call_id: 0,
                    body: other,
                }
                .ptype();
                Step::Close(ProtocolIssue::Unexpected(t))
            }
        }
    }

    /// Decides each context element and records accepted ones.
    fn negotiate(&mut self, b: &Bind, is_bind: bool) -> Vec<ContextResult> {
        if is_bind {
            self.contexts.clear();
        }
        let kms = |e: &crate::rpc::ContextElement| {
            e.abstract_syntax.uuid == KMS_INTERFACE.uuid
                && e.abstract_syntax.version & 0xffff == KMS_INTERFACE.version
        };
        let ndr64_offered = self.opts.ndr64
            && b.contexts.iter().any(|e| {
                kms(e)
                    && e.transfer_syntaxes
                        .iter()
                        .any(|t| Syntax::classify(t) == Syntax::Ndr64)
            });
        let mut results = Vec::with_capacity(b.contexts.len());
        for e in &b.contexts {
            if !kms(e) {
                // A BTFN element is not tied to the interface's identity in practice, but
                // KMS clients always name the KMS interface; anything else is foreign.
                results.push(ContextResult::reject(1));
                continue;
            }
            let mut chosen = None;
            for t in &e.transfer_syntaxes {
                match Syntax::classify(t) {
                    Syntax::Ndr32 if !ndr64_offered => {
                        chosen = Some((ContextResult::accept(NDR32), Some(Ndr::Ndr32)));
                    }
                    Syntax::Ndr64 if self.opts.ndr64 => {
                        chosen = Some((ContextResult::accept(NDR64), Some(Ndr::Ndr64)));
                    }
                    Syntax::Btfn(bits) if self.opts.btfn && is_bind => {
                        chosen = Some((ContextResult::negotiate_ack(bits & 0x0003), None));
                    }
                    _ => continue,
                }
                break;
            }
            match chosen {
                Some((res, ndr)) => {
                    if let Some(ndr) = ndr {
                        self.contexts.retain(|(id, _)| *id != e.context_id);
                        self.contexts.push((e.context_id, ndr));
                    }
                    results.push(res);
                }
                None => results.push(ContextResult::reject(2)),
            }
        }
        results
    }

    fn ack(
        &self,
        call_id: u32,
        flags: u8,
        b: &Bind,
        results: Vec<ContextResult>,
        is_bind: bool,
    ) -> Vec<u8> {
        let ack = BindAck {
            max_xmit_frag: b.max_xmit_frag,
            max_recv_frag: b.max_recv_frag,
            assoc_group: self.assoc_group,
            secondary_address: if is_bind {
                let mut s = self.opts.port.to_string().into_bytes();
                s.push(0);
                s
            } else {
                Vec::new()
            },
            results,
        };
        Pdu {
            flags,
            call_id,
            body: if is_bind {
                Body::BindAck(ack)
            } else {
                Body::AlterContextResp(ack)
            },
        }
        .encode()
    }
}
