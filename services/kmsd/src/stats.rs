//! Process-local counters of the listener (connections, refusals, timeouts, decode
//! errors) and of the admin listener (open, refused and timed-out admin connections).
//! The cumulative KMS request statistics live in the replicated state, not here.

use crate::access::Refusal;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kinds of malformed input, as `kms_decode_errors_total{kind}` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKind {
    /// The RPC header was invalid (connection closed).
    Header,
    /// An RPC fault was sent (unbound context, unknown operation, bad PDU).
    RpcFault,
    /// The KMS message was refused as invalid (0x8007000D).
    InvalidRequest,
    /// The connection was closed on a protocol violation.
    Protocol,
}

impl DecodeKind {
    /// Every kind, in label order.
    pub const ALL: [DecodeKind; 4] = [
        DecodeKind::Header,
        DecodeKind::RpcFault,
        DecodeKind::InvalidRequest,
        DecodeKind::Protocol,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DecodeKind::Header => "header",
            DecodeKind::RpcFault => "rpc_fault",
            DecodeKind::InvalidRequest => "invalid_request",
            DecodeKind::Protocol => "protocol",
        }
    }
}

/// Counters updated by the listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections currently open.
    pub open_connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Requests answered with an activation response.
    pub activated: AtomicU64,
    /// Requests refused with an HRESULT.
    pub refused: AtomicU64,
    /// PDUs or KMS messages that failed to decode, by [`DecodeKind`].
    decode: [AtomicU64; 4],
    /// Connections closed for idling.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because a PDU arrived too slowly.
    pub read_timeouts: AtomicU64,
    /// Connections closed at the end of their allowed lifetime.
    pub lifetime_timeouts: AtomicU64,
    /// Connections or requests turned away, by [`Refusal`].
    refusals: [AtomicU64; 4],
    /// Admin connections open now.
    pub admin_open_connections: AtomicU64,
    /// Admin connections closed at once: `admin_max_connections` were open.
    pub admin_refused: AtomicU64,
    /// Admin connections closed: no whole request header within `admin_header_timeout_ms`.
    pub admin_header_timeouts: AtomicU64,
    /// Admin connections closed: no request within `admin_idle_timeout_ms`.
    pub admin_idle_timeouts: AtomicU64,
}

/// A snapshot for `/status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct CounterSnapshot {
    /// See [`Counters::open_connections`].
    pub open_connections: u64,
    /// See [`Counters::accepted`].
    pub accepted: u64,
    /// See [`Counters::activated`].
    pub activated: u64,
    /// See [`Counters::refused`].
    pub refused: u64,
    /// All decode errors.
    pub decode_errors: u64,
    /// Bad RPC headers.
    pub decode_errors_header: u64,
    /// RPC faults sent.
    pub decode_errors_rpc_fault: u64,
    /// KMS messages refused as invalid.
    pub decode_errors_invalid_request: u64,
    /// Connections closed on protocol violations.
    pub decode_errors_protocol: u64,
    /// See [`Counters::idle_timeouts`].
    pub idle_timeouts: u64,
    /// See [`Counters::read_timeouts`].
    pub read_timeouts: u64,
    /// See [`Counters::lifetime_timeouts`].
    pub lifetime_timeouts: u64,
    /// Connections refused: source not on the allowlist.
    pub refused_not_allowed: u64,
    /// Connections refused: per-source connection limit.
    pub refused_per_ip_limit: u64,
    /// Connections refused: global connection cap.
    pub refused_global_limit: u64,
    /// Connections closed: per-source request rate exceeded.
    pub refused_rate_limited: u64,
    /// See [`Counters::admin_open_connections`].
    pub admin_open_connections: u64,
    /// See [`Counters::admin_refused`].
    pub admin_refused: u64,
    /// See [`Counters::admin_header_timeouts`].
    pub admin_header_timeouts: u64,
    /// See [`Counters::admin_idle_timeouts`].
    pub admin_idle_timeouts: u64,
}

impl Counters {
    /// Counts one malformed input.
    pub fn decode_error(&self, kind: DecodeKind) {
        self.decode[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Malformed inputs of one kind so far.
    pub fn decode_errors(&self, kind: DecodeKind) -> u64 {
        self.decode[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts one connection or request turned away.
    pub fn refusal(&self, r: Refusal) {
        self.refusals[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals of one kind so far.
    pub fn refusals(&self, r: Refusal) -> u64 {
        self.refusals[r as usize].load(Ordering::Relaxed)
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> CounterSnapshot {
        let d = |k| self.decode_errors(k);
        CounterSnapshot {
            open_connections: self.open_connections.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            activated: self.activated.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            decode_errors: DecodeKind::ALL.iter().map(|k| d(*k)).sum(),
            decode_errors_header: d(DecodeKind::Header),
            decode_errors_rpc_fault: d(DecodeKind::RpcFault),
            decode_errors_invalid_request: d(DecodeKind::InvalidRequest),
            decode_errors_protocol: d(DecodeKind::Protocol),
            idle_timeouts: self.idle_timeouts.load(Ordering::Relaxed),
            read_timeouts: self.read_timeouts.load(Ordering::Relaxed),
            lifetime_timeouts: self.lifetime_timeouts.load(Ordering::Relaxed),
            refused_not_allowed: self.refusals(Refusal::NotAllowed),
            refused_per_ip_limit: self.refusals(Refusal::PerIpLimit),
            refused_global_limit: self.refusals(Refusal::GlobalLimit),
            refused_rate_limited: self.refusals(Refusal::RateLimited),
            admin_open_connections: self.admin_open_connections.load(Ordering::Relaxed),
            admin_refused: self.admin_refused.load(Ordering::Relaxed),
            admin_header_timeouts: self.admin_header_timeouts.load(Ordering::Relaxed),
            admin_idle_timeouts: self.admin_idle_timeouts.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_sum_over_kinds() {
        let c = Counters::default();
        c.decode_error(DecodeKind::Header);
        c.decode_error(DecodeKind::Protocol);
        c.decode_error(DecodeKind::Protocol);
        let s = c.snapshot();
        assert_eq!(s.decode_errors, 3);
        assert_eq!(s.decode_errors_header, 1);
        assert_eq!(s.decode_errors_protocol, 2);
        assert_eq!(s.decode_errors_rpc_fault, 0);
    }
}
