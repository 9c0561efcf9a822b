//! [`DnsError`]: what is wrong with a DNS setting, naming the setting (or flag) and value.

use std::path::PathBuf;

/// A DNS setting the rules of this crate refuse. `setting` is the caller's name for it
/// (`dns_zone`, `--key-name`, ...), so the message points at what the operator typed.
/// Secrets are never part of a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A required name or value is empty.
    #[error("{setting}: must not be empty")]
    Empty {
        /// Setting or flag.
        setting: &'static str,
    },
    /// The name is longer than [`crate::MAX_NAME_LEN`] (without the trailing dot).
    #[error("{setting} {value:?}: {len} characters, a DNS name has at most {max}")]
    NameTooLong {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// Its length without the trailing dot.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// One label is empty or longer than [`crate::MAX_LABEL_LEN`].
    #[error(
        "{setting} {value:?}: label {label:?} has {len} characters, each label must have 1..={max}"
    )]
    LabelLength {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// The offending label.
        label: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A label holds something else than letters, digits, `-` and `_`.
    #[error("{setting} {value:?}: only letters, digits, '-' and '_' are allowed in a name")]
    NameCharacter {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
    },
    /// A label starts or ends with `-`.
    #[error("{setting} {value:?}: label {label:?} may not start or end with '-'")]
    LabelHyphen {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// The offending label.
        label: String,
    },
    /// An IP address where a name is needed (SRV targets, zones and key names are names).
    #[error("{setting} {value:?}: must be a DNS name, not an IP address")]
    IpNotName {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
    },
    /// The name is not inside the zone it is updated in.
    #[error("{setting} {name} is not inside {zone_setting} {zone}")]
    NotInZone {
        /// Setting or flag of the name.
        setting: &'static str,
        /// The normalized name.
        name: String,
        /// Setting or flag of the zone.
        zone_setting: &'static str,
        /// The normalized zone.
        zone: String,
    },
    /// A TTL out of range.
    #[error("{setting} {value}: must be {min}..={max} seconds")]
    Ttl {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: u64,
        /// Lowest TTL.
        min: u32,
        /// Highest TTL.
        max: u32,
    },
    /// Not a DNS server address.
    #[error("{setting} {value:?}: {reason}; expected IP or IP:PORT (e.g. 10.0.0.53, 10.0.0.53:53, [fd00::53]:53)")]
    Server {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A TSIG algorithm that is known but that this build does not sign with.
    #[error("{setting} {value:?}: refused (hmac-md5 and hmac-sha1 are weak, and only {supported} can be signed here); use one of those")]
    AlgorithmRefused {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// The accepted names, comma separated.
        supported: String,
    },
    /// Not a TSIG algorithm name.
    #[error("{setting} {value:?}: unknown TSIG algorithm, expected one of {supported}")]
    AlgorithmUnknown {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// The accepted names, comma separated.
        supported: String,
    },
    /// The secret is not base64 (the secret itself is not repeated).
    #[error("{setting}: the TSIG secret is not valid base64 ({reason})")]
    SecretBase64 {
        /// Setting or flag.
        setting: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The secret decodes to nothing.
    #[error("{setting}: the TSIG secret is empty")]
    SecretEmpty {
        /// Setting or flag.
        setting: &'static str,
    },
    /// A BIND `key` file this crate cannot read.
    #[error("{setting}: not a BIND key file (`key \"NAME\" {{ algorithm ALG; secret \"BASE64\"; }};`): {reason}")]
    KeyFile {
        /// Setting or flag.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The BIND key file names another key or algorithm than the settings.
    #[error(
        "{setting}: the key file says {field} {in_file:?}, but {other_setting} is {configured:?}"
    )]
    KeyMismatch {
        /// Setting or flag of the secret.
        setting: &'static str,
        /// `key` or `algorithm`.
        field: &'static str,
        /// What the file says.
        in_file: String,
        /// Setting or flag of the other value.
        other_setting: &'static str,
        /// What it says.
        configured: String,
    },
    /// The secret file cannot be read.
    #[error("{setting} {}: cannot read: {source}", .path.display())]
    ReadFile {
        /// Setting or flag.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// hickory refused to build the signer or the name (not expected after the checks).
    #[error("{setting} {value:?}: {reason}")]
    Hickory {
        /// Setting or flag.
        setting: &'static str,
        /// As given.
        value: String,
        /// hickory's message.
        reason: String,
    },
}
