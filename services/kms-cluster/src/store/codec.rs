//! The byte encoding of log entries inside the write-ahead log.
//!
//! One place decides how an [`Entry`] becomes bytes, so that the log, its tests and the wire
//! agree. The entry's log id is also stored in the record prefix (see `wal::record`), which lets
//! a replay index the log without decoding bodies.

use crate::Entry;

/// Why stored entry bytes do not decode.
#[derive(Debug, thiserror::Error)]
#[error("log entry does not decode: {0}")]
pub struct CodecError(String);

/// Encodes an entry.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    serde_json::to_vec(entry).expect("log entries always serialize")
}

/// Decodes an entry written by [`encode_entry`].
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
}
