//! Error type of the crate: why a snapshot could not be written or read.
//!
//! Applying a [`Command`](crate::Command) to a [`HostState`](crate::HostState) never fails (it is
//! pure and total); only the snapshot codec ([`HostState::write_snapshot`],
//! [`HostState::read_snapshot`]) returns errors. Reading never panics on corrupt input: each
//! way a file can be wrong has its own variant, naming the record (counted from 0 after the
//! header) where it was found.
//!
//! [`HostState::write_snapshot`]: crate::HostState::write_snapshot
//! [`HostState::read_snapshot`]: crate::HostState::read_snapshot

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The underlying reader or writer failed (other than ending early, see
    /// [`StateError::Truncated`]).
    #[error("snapshot I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the snapshot magic: not a kms-state snapshot.
    #[error("not a kms-state snapshot: magic {found:02x?}")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 8],
    },
    /// The snapshot was written with another layout.
    #[error("snapshot schema version {found}, this build reads 1 to {expected}")]
    SchemaVersion {
        /// Version in the file header.
        found: u32,
        /// Version this build writes (and the newest it reads).
        expected: u32,
    },
    /// The input ended before the end marker and checksum: the file is cut.
    #[error("snapshot truncated: input ended in the {part} after {records} records")]
    Truncated {
        /// Records read completely.
        records: u64,
        /// Where the input ended ("header", "record length", "record", "checksum", ...).
        part: &'static str,
    },
    /// A record length is not a valid varint.
    #[error("snapshot record {record}: malformed length prefix")]
    BadLength {
        /// Index of the record.
        record: u64,
    },
    /// A record is longer than any valid one (corrupt length, or a state that cannot be
    /// written, e.g. a machine name of a megabyte).
    #[error("snapshot record {record} is {len} bytes, more than the limit of {max}")]
    RecordTooLarge {
        /// Index of the record.
        record: u64,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A record is not a valid protobuf `Record` message.
    #[error("snapshot record {record} does not decode: {source}")]
    Decode {
        /// Index of the record.
        record: u64,
        /// The protobuf decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A record decodes but a field is out of range or inconsistent with the records before it.
    #[error("snapshot record {record} ({kind}): {reason}")]
    InvalidRecord {
        /// Index of the record.
        record: u64,
        /// Record kind ("client", "request", ...).
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record appears where the fixed record order does not allow it.
    #[error("snapshot record {record}: found {found} where {expected} was expected")]
    UnexpectedRecord {
        /// Index of the record.
        record: u64,
        /// Kind found.
        found: &'static str,
        /// What the order allows at this point.
        expected: &'static str,
    },
    /// The end marker's counts disagree with the records read.
    #[error("snapshot end marker counts {expected} {what}, the file holds {found}")]
    CountMismatch {
        /// What was counted ("clients", "requests", ...).
        what: &'static str,
        /// Count in the end marker.
        expected: u64,
        /// Count read.
        found: u64,
    },
    /// The CRC-32 after the end marker does not match the bytes before it.
    #[error("snapshot checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// Bytes follow the checksum.
    #[error("snapshot has data after its checksum")]
    TrailingData,
}
