//! NDR marshalling of `RequestActivation(int requestSize, byte* request, int*
//! responseSize, byte** response)`: the request's `[in]` arguments and the response's
//! `[out]` arguments plus return value, in NDR32 and NDR64.

use crate::RpcError;

/// Which NDR flavour a context negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ndr {
    /// NDR 2.0 (32-bit).
    Ndr32,
    /// NDR64.
    Ndr64,
}

const REFERENT: u32 = 0x0002_0000;

/// Marshals the request arguments around a KMS message.
pub fn encode_request(ndr: Ndr, msg: &[u8]) -> Vec<u8> {
    let n = msg.len() as u32;
    let mut out = Vec::with_capacity(msg.len() + 16);
    match ndr {
        Ndr::Ndr32 => {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        Ndr::Ndr64 => {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(msg);
    out
}

/// Extracts the KMS message from request arguments. Both size fields must agree and the
/// data must be present; trailing bytes are tolerated (some RPC stacks add them).
pub fn decode_request(ndr: Ndr, stub: &[u8]) -> Result<&[u8], RpcError> {
    let (size, conf, off) = match ndr {
        Ndr::Ndr32 => {
            if stub.len() < 8 {
                return Err(RpcError::Truncated {
                    what: "NDR32 request stub",
                    need: 8,
                    have: stub.len(),
                });
            }
            let a = u32::from_le_bytes(stub[0..4].try_into().expect("4 bytes")) as u64;
            let b = u32::from_le_bytes(stub[4..8].try_into().expect("4 bytes")) as u64;
            (a, b, 8)
        }
        Ndr::Ndr64 => {
            if stub.len() < 16 {
                return Err(RpcError::Truncated {
                    what: "NDR64 request stub",
                    need: 16,
                    have: stub.len(),
                });
            }
            let a = u32::from_le_bytes(stub[0..4].try_into().expect("4 bytes")) as u64;
            let b = u64::from_le_bytes(stub[8..16].try_into().expect("8 bytes"));
            (a, b, 16)
        }
    };
    if size != conf {
        return Err(RpcError::Inconsistent {
            what: "request size",
            detail: format!("requestSize {size} != conformance {conf}"),
        });
    }
    let end = (off as u64).saturating_add(size);
    if end > stub.len() as u64 {
        return Err(RpcError::Truncated {
            what: "request data",
            need: end as usize,
            have: stub.len(),
        });
    }
    Ok(&stub[off..end as usize])
}

/// Marshals a successful response: size, non-NULL pointer, conformant array, return 0.
pub fn encode_response_ok(ndr: Ndr, msg: &[u8]) -> Vec<u8> {
    let n = msg.len();
    let mut out = Vec::with_capacity(n + 32);
    match ndr {
        Ndr::Ndr32 => {
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(&REFERENT.to_le_bytes());
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        Ndr::Ndr64 => {
            out.extend_from_slice(&(n as u64).to_le_bytes());
            out.extend_from_slice(&(REFERENT as u64).to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(msg);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// Marshals a refusal: size 0, NULL pointer, the HRESULT as return value.
pub fn encode_response_error(ndr: Ndr, hresult: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    match ndr {
        Ndr::Ndr32 => out.extend_from_slice(&[0; 8]),
        Ndr::Ndr64 => out.extend_from_slice(&[0; 16]),
    }
    out.extend_from_slice(&hresult.to_le_bytes());
    out
}

/// Client side: the response message, or the HRESULT the host returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseStub<'a> {
    /// The KMS response bytes (return value 0).
    Ok(&'a [u8]),
    /// NULL pointer or non-zero return value.
    Error(u32),
}

/// Client side: unmarshals a response stub.
pub fn decode_response(ndr: Ndr, stub: &[u8]) -> Result<ResponseStub<'_>, RpcError> {
    let word = if ndr == Ndr::Ndr32 { 4 } else { 8 };
    let read = |off: usize, len: usize| -> Result<u64, RpcError> {
        let b = stub.get(off..off + len).ok_or(RpcError::Truncated {
            what: "response stub",
            need: off + len,
            have: stub.len(),
        })?;
        let mut a = [0u8; 8];
        a[..len].copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    };
    let size = read(0, word)?;
    let referent = read(word, word)?;
    if referent == 0 {
        return Ok(ResponseStub::Error(read(2 * word, 4)? as u32));
    }
    let conf = read(2 * word, word)?;
    if conf != size {
        return Err(RpcError::Inconsistent {
            what: "response size",
            detail: format!("responseSize {size} != conformance {conf}"),
        });
    }
    let start = 3 * word;
    let end = start.saturating_add(size as usize);
    if end > stub.len() {
        return Err(RpcError::Truncated {
            what: "response data",
            need: end,
            have: stub.len(),
        });
    }
    let status_off = end.div_ceil(4) * 4;
    let status = read(status_off, 4)? as u32;
    if status != 0 {
        return Ok(ResponseStub::Error(status));
    }
    Ok(ResponseStub::Ok(&stub[start..end]))
}
