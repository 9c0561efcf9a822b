//! DCE/MS-RPC connection-oriented PDUs as KMS uses them: one fragment per PDU, no
//! authentication, little-endian data representation.
//!
//! - [`header`]: the common 16-byte header and frame-length peeking for readers.
//! - [`pdu`]: typed PDUs (bind, bind_ack, alter_context(_resp), request, response,
//!   fault) with `decode` and `encode`.
//! - [`syntax`]: interface and transfer-syntax identifiers (KMS interface, NDR32,
//!   NDR64, bind-time feature negotiation).
//! - [`stub`]: NDR32/NDR64 marshalling of `RequestActivation`'s arguments and results.

pub mod header;
pub mod pdu;
pub mod stub;
pub mod syntax;

pub use header::{Header, PduType, HEADER_LEN};
pub use pdu::{
    Bind, BindAck, ContextElement, ContextResult, Fault, Pdu, Request, Response, TransferSyntax,
};
pub use syntax::{Syntax, SyntaxId};

/// NCA status: request names a context (interface) that was never bound.
pub const NCA_UNK_IF: u32 = 0x1C01_0003;
/// NCA status: operation number out of range.
pub const NCA_OP_RNG_ERROR: u32 = 0x1C01_0002;
/// NCA status: protocol error.
pub const NCA_PROTO_ERROR: u32 = 0x1C01_000B;
