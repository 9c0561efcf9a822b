//! The one set of DNS rules `kmsd` (SRV publishing, `dns_*` settings) and `kmsctl`
//! (`kmsctl dns render|check`) both apply, so that a value one accepts the other accepts too.
//!
//! - [`server`]: DNS server addresses (`IP`, `IP:PORT`, `[v6]:PORT`; port 53 by default).
//! - [`name`]: host, domain, zone and key names (checked, lower case, no trailing dot),
//!   zone membership, the SRV owner `_vlmcs._tcp.<domain>`, zone-file SRV lines and TTLs.
//! - [`tsig`]: the TSIG algorithms this build can sign with, secrets (base64, inline or
//!   in a file, or a BIND `key` file) and [`tsig::TsigKey`], which builds the signer.
//! - [`error`]: [`DnsError`]; each message names the setting or flag and the bad value
//!   (never the secret).
//!
//! No I/O beyond reading a key file the caller names.
#![forbid(unsafe_code)]

pub mod error;
pub mod name;
pub mod server;
pub mod tsig;

pub use error::DnsError;
pub use name::{
    check_in_zone, dns_name, normalize_name, owner, owner_name, srv_line, ttl, MAX_LABEL_LEN,
    MAX_NAME_LEN, MAX_TTL, SERVICE,
};
pub use server::{parse_server, DEFAULT_PORT};
pub use tsig::{bind_key_file, decode_secret, Secret, TsigAlgorithm, TsigKey, TsigSettings};
