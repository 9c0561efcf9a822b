//! Sans-IO codec for the Microsoft KMS activation protocol as spoken on TCP port 1688.
//!
//! Nothing in this crate opens a socket, reads a clock or draws random numbers: time,
//! salts, IVs and ePID choices are passed in by the caller, so captured exchanges replay
//! byte-for-byte in tests and the decoders can be fuzzed.
//!
//! Module map:
//! - [`rpc`]: DCE/MS-RPC connection-oriented PDUs (bind, bind_ack, alter_context,
//!   request, response, fault) and the host-side bind negotiation (NDR32/NDR64/BTFN).
//! - [`kms`]: KMS request/response bodies and their v4/v5/v6 authentication and
//!   encryption, for both sides (host and client).
//! - [`crypto`]: the Rijndael core (AES-128, V4's 160-bit-key variant, V6's altered
//!   round keys), CBC with PKCS#7, the V4 CBC-MAC and the V6 HMAC key derivation.
//! - [`client`]: the sans-IO client side of the RPC exchange (bind offer, context choice).
//! - [`host`]: a sans-IO host connection: feed it PDUs, get replies or an activation
//!   to decide.
//! - [`license`]: the license states a client reports.
//! - [`products`]: the product catalog (application IDs, KMS counted IDs, count groups,
//!   SKUs), compiled in and extensible from a TOML file.
//! - [`epid`]: KMS host extended product IDs: generation from caller-supplied choices,
//!   parsing and validation.
//! - [`host_os`]: the Windows Server release (build, platform id) a host claims in all its
//!   ePIDs.
//! - [`time`]: FILETIME helpers.
//! - [`text`]: escaping of client-chosen strings (machine names) for text output.
#![forbid(unsafe_code)]

pub mod client;
pub mod crypto;
pub mod epid;
pub mod error;
pub mod host;
pub mod host_os;
pub mod kms;
pub mod license;
pub mod products;
pub mod rpc;
pub mod text;
pub mod time;

pub use error::{KmsError, RpcError};
pub use license::LicenseState;
