//! The 16-byte common header of every connection-oriented PDU.

use crate::RpcError;

/// Size of the common header.
pub const HEADER_LEN: usize = 16;

/// pfc_flags: first fragment.
pub const PFC_FIRST_FRAG: u8 = 0x01;
/// pfc_flags: last fragment.
pub const PFC_LAST_FRAG: u8 = 0x02;
/// pfc_flags: concurrent multiplexing.
pub const PFC_CONC_MPX: u8 = 0x10;
/// pfc_flags: call did not execute (set on faults).
pub const PFC_DID_NOT_EXECUTE: u8 = 0x20;
/// pfc_flags: an object UUID follows the request header.
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// Little-endian, ASCII, IEEE float.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];

/// PDU types this crate handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduType {
    /// 0
    Request,
    /// 2
    Response,
    /// 3
    Fault,
    /// 11
    Bind,
    /// 12
    BindAck,
    /// 13
    BindNak,
    /// 14
    AlterContext,
    /// 15
    AlterContextResp,
}

impl PduType {
    /// From the wire byte.
    pub fn from_wire(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Request,
            2 => Self::Response,
            3 => Self::Fault,
            11 => Self::Bind,
            12 => Self::BindAck,
            13 => Self::BindNak,
            14 => Self::AlterContext,
            15 => Self::AlterContextResp,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn to_wire(self) -> u8 {
        match self {
            Self::Request => 0,
            Self::Response => 2,
            Self::Fault => 3,
            Self::Bind => 11,
            Self::BindAck => 12,
            Self::BindNak => 13,
            Self::AlterContext => 14,
            Self::AlterContextResp => 15,
        }
    }
}

/// The common header. `ptype` is kept raw so a reader can report unknown types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// PDU type byte.
    pub ptype: u8,
    /// pfc_flags.
    pub flags: u8,
    /// Total PDU length including this header.
    pub frag_len: u16,
    /// Authentication trailer length (always 0 for KMS).
    pub auth_len: u16,
    /// Call identifier chosen by the client.
    pub call_id: u32,
}

impl Header {
    /// Parses and validates the first 16 bytes of a PDU: version 5.0, little-endian data
    /// representation, `16 <= frag_len <= max_frag`. Readers call this on the first 16
    /// bytes to learn how many more to read, before allocating anything.
    pub fn parse(buf: &[u8], max_frag: usize) -> Result<Header, RpcError> {
        if buf.len() < HEADER_LEN {
            return Err(RpcError::Truncated {
                what: "header",
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        if buf[0] != 5 || buf[1] != 0 {
            return Err(RpcError::Version {
                major: buf[0],
                minor: buf[1],
            });
        }
        let drep = [buf[4], buf[5], buf[6], buf[7]];
        if drep[0] & 0xf0 != 0x10 || drep[1] != 0 {
            return Err(RpcError::DataRepresentation(drep));
        }
        let frag_len = u16::from_le_bytes([buf[8], buf[9]]);
        if (frag_len as usize) < HEADER_LEN || frag_len as usize > max_frag {
            return Err(RpcError::FragLength {
                len: frag_len as usize,
                min: HEADER_LEN,
                max: max_frag,
            });
        }
        Ok(Header {
            ptype: buf[2],
            flags: buf[3],
            frag_len,
            auth_len: u16::from_le_bytes([buf[10], buf[11]]),
            call_id: u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]),
        })
    }

    /// Writes the header (frag_len patched later by the encoder).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[5, 0, self.ptype, self.flags]);
        out.extend_from_slice(&DREP_LE);
        out.extend_from_slice(&self.frag_len.to_le_bytes());
        out.extend_from_slice(&self.auth_len.to_le_bytes());
        out.extend_from_slice(&self.call_id.to_le_bytes());
    }
}
