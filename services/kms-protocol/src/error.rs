//! Typed errors of the protocol crate, one enum per layer: [`RpcError`] for the DCE/RPC
//! framing and [`KmsError`] for KMS message bodies and their cryptography.

use thiserror::Error;

/// A DCE/RPC PDU could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RpcError {
    /// Fewer bytes than the structure needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The header's version is not 5.0.
    #[error("unsupported RPC version {major}.{minor}")]
    Version {
        /// rpc_vers.
        major: u8,
        /// rpc_vers_minor.
        minor: u8,
    },
    /// The data representation is not little-endian ASCII IEEE.
    #[error("unsupported data representation {0:02x?}")]
    DataRepresentation([u8; 4]),
    /// frag_length is below the header size or above the allowed maximum.
    #[error("fragment length {len} outside {min}..={max}")]
    FragLength {
        /// Announced length.
        len: usize,
        /// Smallest valid length.
        min: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// A PDU with authentication data (KMS never uses any).
    #[error("authenticated PDUs are not supported (auth_length {0})")]
    AuthPresent(u16),
    /// A PDU type this implementation does not handle.
    #[error("unsupported PDU type {0}")]
    PduType(u8),
    /// A multi-fragment PDU (KMS messages always fit in one).
    #[error("fragmented PDUs are not supported (flags {0:#04x})")]
    Fragmented(u8),
    /// A length field disagrees with the data.
    #[error("inconsistent {what}: {detail}")]
    Inconsistent {
        /// Which field.
        what: &'static str,
        /// Explanation.
        detail: String,
    },
}

/// A KMS message body could not be decoded, verified or built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KmsError {
    /// Message shorter than its version requires.
    #[error("KMS message too short for protocol {major}: need {need} bytes, have {have}")]
    TooShort {
        /// Protocol major version.
        major: u16,
        /// Needed length.
        need: usize,
        /// Actual length.
        have: usize,
    },
    /// A version this implementation does not speak.
    #[error("unsupported KMS protocol version {major}.{minor}")]
    Version {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// Invalid PKCS#7 padding after decryption.
    #[error("bad padding")]
    Padding,
    /// V4 MAC mismatch.
    #[error("V4 MAC does not verify")]
    Mac,
    /// V6 HMAC mismatch.
    #[error("V6 HMAC does not verify")]
    Hmac,
    /// V5/V6 SHA-256(random) hash mismatch.
    #[error("response hash does not verify")]
    Hash,
    /// A field of the response disagrees with the request.
    #[error("response {field} does not match the request")]
    Mismatch {
        /// Which field.
        field: &'static str,
    },
    /// Malformed ePID in a response.
    #[error("malformed ePID: {0}")]
    Epid(&'static str),
    /// Ciphertext length not a multiple of the block size.
    #[error("ciphertext length {0} is not a multiple of 16")]
    BlockLength(usize),
    /// The host refused with an HRESULT (client side).
    #[error("host returned HRESULT {0:#010x}")]
    HostError(u32),
}
