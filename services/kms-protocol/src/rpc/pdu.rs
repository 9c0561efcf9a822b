//! Typed connection-oriented PDUs with `decode` (from one whole frame) and `encode`.

use super::header::{Header, PduType, HEADER_LEN, PFC_FIRST_FRAG, PFC_LAST_FRAG, PFC_OBJECT_UUID};
use super::syntax::SyntaxId;
use crate::RpcError;

/// Transfer syntax as it appears in a context element or result.
pub type TransferSyntax = SyntaxId;

/// One presentation context offered in a bind or alter_context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextElement {
    /// Context id the client will use in requests.
    pub context_id: u16,
    /// Interface requested.
    pub abstract_syntax: SyntaxId,
    /// Transfer syntaxes offered (KMS clients offer exactly one per element).
    pub transfer_syntaxes: Vec<TransferSyntax>,
}

/// bind (11) or alter_context (14) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Client's max transmit fragment.
    pub max_xmit_frag: u16,
    /// Client's max receive fragment.
    pub max_recv_frag: u16,
    /// Association group (0 from clients).
    pub assoc_group: u32,
    /// Offered contexts.
    pub contexts: Vec<ContextElement>,
}

/// One entry of a bind_ack's result list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextResult {
    /// 0 acceptance, 2 provider rejection, 3 negotiate ack.
    pub result: u16,
    /// Reason (or BTFN feature bits for negotiate ack).
    pub reason: u16,
    /// Accepted transfer syntax (zero when rejected).
    pub syntax: TransferSyntax,
}

impl ContextResult {
    /// Acceptance of `syntax`.
    pub fn accept(syntax: TransferSyntax) -> Self {
        Self {
            result: 0,
            reason: 0,
            syntax,
        }
    }

    /// Provider rejection with `reason` (1 abstract syntax, 2 transfer syntaxes not
    /// supported).
    pub fn reject(reason: u16) -> Self {
        Self {
            result: 2,
            reason,
            syntax: SyntaxId {
                uuid: [0; 16],
                version: 0,
            },
        }
    }

    /// Negotiate ack of bind-time features `bits`.
    pub fn negotiate_ack(bits: u16) -> Self {
        Self {
            result: 3,
            reason: bits,
            syntax: SyntaxId {
                uuid: [0; 16],
                version: 0,
            },
        }
    }
}

/// bind_ack (12) or alter_context_resp (15) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAck {
    /// Echo of the client's max transmit fragment.
    pub max_xmit_frag: u16,
    /// Echo of the client's max receive fragment.
    pub max_recv_frag: u16,
    /// Host-chosen association group.
    pub assoc_group: u32,
    /// Secondary address: the port as ASCII, NUL included; empty for alter_context_resp.
    pub secondary_address: Vec<u8>,
    /// One result per offered context, in order.
    pub results: Vec<ContextResult>,
}

/// request (0) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Allocation hint (stub length).
    pub alloc_hint: u32,
    /// Presentation context id.
    pub context_id: u16,
    /// Operation number (0 = RequestActivation).
    pub opnum: u16,
    /// Object UUID when the OBJECT_UUID flag is set.
    pub object: Option<[u8; 16]>,
    /// Marshalled arguments.
    pub stub: Vec<u8>,
}

/// response (2) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Allocation hint (stub length).
    pub alloc_hint: u32,
    /// Echo of the request's context id.
    pub context_id: u16,
    /// Cancel count (0).
    pub cancel_count: u8,
    /// Marshalled results.
    pub stub: Vec<u8>,
}

/// fault (3) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Allocation hint (32 by convention).
    pub alloc_hint: u32,
    /// Context id.
    pub context_id: u16,
    /// Cancel count.
    pub cancel_count: u8,
    /// NCA status code.
    pub status: u32,
}

/// A PDU body by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// bind
    Bind(Bind),
    /// alter_context
    AlterContext(Bind),
    /// bind_ack
    BindAck(BindAck),
    /// alter_context_resp
    AlterContextResp(BindAck),
    /// bind_nak with its reject reason.
    BindNak(u16),
    /// request
    Request(Request),
    /// response
    Response(Response),
    /// fault
    Fault(Fault),
}

/// A whole PDU: flags, call id and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// pfc_flags.
    pub flags: u8,
    /// Call id.
    pub call_id: u32,
    /// Typed body.
    pub body: Body,
}

/// Bounds-checked little-endian reader over one frame.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RpcError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(RpcError::Truncated {
                what,
                need: self.pos.saturating_add(n),
                have: self.buf.len(),
            }),
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, RpcError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, RpcError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, RpcError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn uuid(&mut self, what: &'static str) -> Result<[u8; 16], RpcError> {
        let mut u = [0u8; 16];
        u.copy_from_slice(self.take(16, what)?);
        Ok(u)
    }
    fn syntax(&mut self, what: &'static str) -> Result<SyntaxId, RpcError> {
        Ok(SyntaxId {
            uuid: self.uuid(what)?,
            version: self.u32(what)?,
        })
    }
    fn align4(&mut self) -> Result<(), RpcError> {
        let pad = (4 - self.pos % 4) % 4;
        self.take(pad, "alignment")?;
        Ok(())
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

fn decode_bind(r: &mut Reader<'_>) -> Result<Bind, RpcError> {
    let max_xmit_frag = r.u16("bind")?;
    let max_recv_frag = r.u16("bind")?;
    let assoc_group = r.u32("bind")?;
    let n = r.u8("bind context count")?;
    r.take(3, "bind reserved")?;
    let mut contexts = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let context_id = r.u16("context element")?;
        let n_ts = r.u8("context element")?;
        r.u8("context element")?;
        let abstract_syntax = r.syntax("abstract syntax")?;
        let mut transfer_syntaxes = Vec::with_capacity(n_ts as usize);
        for _ in 0..n_ts {
            transfer_syntaxes.push(r.syntax("transfer syntax")?);
        }
        contexts.push(ContextElement {
            context_id,
            abstract_syntax,
            transfer_syntaxes,
        });
    }
    Ok(Bind {
        max_xmit_frag,
        max_recv_frag,
        assoc_group,
        contexts,
    })
}

fn decode_bind_ack(r: &mut Reader<'_>) -> Result<BindAck, RpcError> {
    let max_xmit_frag = r.u16("bind_ack")?;
    let max_recv_frag = r.u16("bind_ack")?;
    let assoc_group = r.u32("bind_ack")?;
    let sec_len = r.u16("secondary address")?;
    let secondary_address = r.take(sec_len as usize, "secondary address")?.to_vec();
    r.align4()?;
    let n = r.u8("result count")?;
    r.take(3, "result count")?;
    let mut results = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let result = r.u16("result")?;
        let reason = r.u16("result")?;
        let syntax = r.syntax("result syntax")?;
        results.push(ContextResult {
            result,
            reason,
            syntax,
        });
    }
    Ok(BindAck {
        max_xmit_frag,
        max_recv_frag,
        assoc_group,
        secondary_address,
        results,
    })
}

impl Pdu {
    /// Decodes one whole frame (header included). Trailing bytes beyond the structure
    /// inside the frame are tolerated only where DCE/RPC allows them (stubs).
    pub fn decode(frame: &[u8], max_frag: usize) -> Result<Pdu, RpcError> {
        let h = Header::parse(frame, max_frag)?;
        if frame.len() < h.frag_len as usize {
            return Err(RpcError::Truncated {
                what: "frame",
                need: h.frag_len as usize,
                have: frame.len(),
            });
        }
        if h.auth_len != 0 {
            return Err(RpcError::AuthPresent(h.auth_len));
        }
        let ptype = PduType::from_wire(h.ptype).ok_or(RpcError::PduType(h.ptype))?;
        let mut r = Reader {
            buf: &frame[..h.frag_len as usize],
            pos: HEADER_LEN,
        };
        let body = match ptype {
            PduType::Bind => Body::Bind(decode_bind(&mut r)?),
            PduType::AlterContext => Body::AlterContext(decode_bind(&mut r)?),
            PduType::BindAck => Body::BindAck(decode_bind_ack(&mut r)?),
            PduType::AlterContextResp => Body::AlterContextResp(decode_bind_ack(&mut r)?),
            PduType::BindNak => Body::BindNak(r.u16("bind_nak")?),
            PduType::Request => {
                if h.flags & (PFC_FIRST_FRAG | PFC_LAST_FRAG) != PFC_FIRST_FRAG | PFC_LAST_FRAG {
                    return Err(RpcError::Fragmented(h.flags));
                }
                let alloc_hint = r.u32("request")?;
                let context_id = r.u16("request")?;
                let opnum = r.u16("request")?;
                let object = if h.flags & PFC_OBJECT_UUID != 0 {
                    Some(r.uuid("object uuid")?)
                } else {
                    None
                };
                Body::Request(Request {
                    alloc_hint,
                    context_id,
                    opnum,
                    object,
                    stub: r.rest().to_vec(),
                })
            }
            PduType::Response => {
                if h.flags & (PFC_FIRST_FRAG | PFC_LAST_FRAG) != PFC_FIRST_FRAG | PFC_LAST_FRAG {
                    return Err(RpcError::Fragmented(h.flags));
                }
                let alloc_hint = r.u32("response")?;
                let context_id = r.u16("response")?;
                let cancel_count = r.u8("response")?;
                r.u8("response")?;
                Body::Response(Response {
                    alloc_hint,
                    context_id,
                    cancel_count,
                    stub: r.rest().to_vec(),
                })
            }
            PduType::Fault => {
                let alloc_hint = r.u32("fault")?;
                let context_id = r.u16("fault")?;
                let cancel_count = r.u8("fault")?;
                r.u8("fault")?;
                let status = r.u32("fault")?;
                Body::Fault(Fault {
                    alloc_hint,
                    context_id,
                    cancel_count,
                    status,
                })
            }
        };
        Ok(Pdu {
            flags: h.flags,
            call_id: h.call_id,
            body,
        })
    }

    /// The PDU type of the body.
    pub fn ptype(&self) -> PduType {
        match &self.body {
            Body::Bind(_) => PduType::Bind,
            Body::AlterContext(_) => PduType::AlterContext,
            Body::BindAck(_) => PduType::BindAck,
            Body::AlterContextResp(_) => PduType::AlterContextResp,
            Body::BindNak(_) => PduType::BindNak,
            Body::Request(_) => PduType::Request,
            Body::Response(_) => PduType::Response,
            Body::Fault(_) => PduType::Fault,
        }
    }

    /// Encodes the PDU as one frame (padding bytes are zero).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        Header {
            ptype: self.ptype().to_wire(),
            flags: self.flags,
            frag_len: 0,
            auth_len: 0,
            call_id: self.call_id,
        }
        .write(&mut out);
        match &self.body {
            Body::Bind(b) | Body::AlterContext(b) => {
                out.extend_from_slice(&b.max_xmit_frag.to_le_bytes());
                out.extend_from_slice(&b.max_recv_frag.to_le_bytes());
                out.extend_from_slice(&b.assoc_group.to_le_bytes());
                out.extend_from_slice(&[b.contexts.len() as u8, 0, 0, 0]);
                for c in &b.contexts {
                    out.extend_from_slice(&c.context_id.to_le_bytes());
                    out.extend_from_slice(&[c.transfer_syntaxes.len() as u8, 0]);
                    put_syntax(&mut out, &c.abstract_syntax);
                    for t in &c.transfer_syntaxes {
                        put_syntax(&mut out, t);
                    }
                }
            }
            Body::BindAck(a) | Body::AlterContextResp(a) => {
                out.extend_from_slice(&a.max_xmit_frag.to_le_bytes());
                out.extend_from_slice(&a.max_recv_frag.to_le_bytes());
                out.extend_from_slice(&a.assoc_group.to_le_bytes());
                out.extend_from_slice(&(a.secondary_address.len() as u16).to_le_bytes());
                out.extend_from_slice(&a.secondary_address);
                while out.len() % 4 != 0 {
                    out.push(0);
                }
                out.extend_from_slice(&[a.results.len() as u8, 0, 0, 0]);
                for res in &a.results {
                    out.extend_from_slice(&res.result.to_le_bytes());
                    out.extend_from_slice(&res.reason.to_le_bytes());
                    put_syntax(&mut out, &res.syntax);
                }
            }
            Body::BindNak(reason) => out.extend_from_slice(&reason.to_le_bytes()),
            Body::Request(q) => {
                out.extend_from_slice(&q.alloc_hint.to_le_bytes());
                out.extend_from_slice(&q.context_id.to_le_bytes());
                out.extend_from_slice(&q.opnum.to_le_bytes());
                if let Some(o) = &q.object {
                    out.extend_from_slice(o);
                }
                out.extend_from_slice(&q.stub);
            }
            Body::Response(p) => {
                out.extend_from_slice(&p.alloc_hint.to_le_bytes());
                out.extend_from_slice(&p.context_id.to_le_bytes());
                out.extend_from_slice(&[p.cancel_count, 0]);
                out.extend_from_slice(&p.stub);
            }
            Body::Fault(f) => {
                out.extend_from_slice(&f.alloc_hint.to_le_bytes());
                out.extend_from_slice(&f.context_id.to_le_bytes());
                out.extend_from_slice(&[f.cancel_count, 0]);
                out.extend_from_slice(&f.status.to_le_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
            }
        }
        let len = (out.len() as u16).to_le_bytes();
        out[8] = len[0];
        out[9] = len[1];
        out
    }
}

fn put_syntax(out: &mut Vec<u8>, s: &SyntaxId) {
    out.extend_from_slice(&s.uuid);
    out.extend_from_slice(&s.version.to_le_bytes());
}
