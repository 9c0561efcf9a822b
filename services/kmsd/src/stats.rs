//! Process-local counters of the listener (connections, timeouts, decode errors). The
//! cumulative KMS request statistics live in the replicated state, not here.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters updated by the listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections currently open.
    pub open_connections: AtomicU64,
    /// Requests answered with an activation response.
    pub activated: AtomicU64,
    /// Requests refused with an HRESULT.
    pub refused: AtomicU64,
    /// PDUs or KMS messages that failed to decode.
    pub decode_errors: AtomicU64,
    /// Connections closed for idling.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because a PDU arrived too slowly.
    pub read_timeouts: AtomicU64,
}

/// A snapshot for `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct CounterSnapshot {
    /// See [`Counters::open_connections`].
    pub open_connections: u64,
    /// See [`Counters::activated`].
    pub activated: u64,
    /// See [`Counters::refused`].
    pub refused: u64,
    /// See [`Counters::decode_errors`].
    pub decode_errors: u64,
    /// See [`Counters::idle_timeouts`].
    pub idle_timeouts: u64,
    /// See [`Counters::read_timeouts`].
    pub read_timeouts: u64,
}

impl Counters {
    /// Reads all counters.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            open_connections: self.open_connections.load(Ordering::Relaxed),
            activated: self.activated.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            idle_timeouts: self.idle_timeouts.load(Ordering::Relaxed),
            read_timeouts: self.read_timeouts.load(Ordering::Relaxed),
        }
    }
}
