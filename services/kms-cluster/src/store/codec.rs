//! The byte encoding of log entries inside the write-ahead log.
//!
//! One place decides how an [`Entry`] becomes bytes: the same typed protobuf `LogEntry` the wire
//! uses (with its schema version, see [`crate::pb`]), so the log, its tests and the wire agree
//! and an entry written by a newer, incompatible version is refused instead of misread. The
//! entry's log id is also stored in the record prefix (see `wal::record`), which lets a replay
//! index the log without decoding bodies.

use crate::pb::{self, PbError};
use crate::Entry;

/// Encodes an entry.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    pb::encode_entry(entry)
}

/// Decodes an entry written by [`encode_entry`].
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, PbError> {
    pb::decode_entry(bytes)
}
