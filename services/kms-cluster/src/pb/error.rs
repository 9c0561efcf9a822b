//! The two error types of the wire: [`PbError`], why a protobuf message could not become a domain
//! value, and [`WireError`], the typed cause of a failed call as it crosses between nodes (the
//! `ErrorDetail` inside a gRPC status's details).
//!
//! Server side, a handler turns its failure into a [`WireError`] and answers
//! [`WireError::to_status`]; client side, [`WireError::from_status`] reads it back, and the
//! network layer maps it to openraft's `RPCError` or to `NetError`.

use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, SnapshotSegmentId, StorageError, StorageIOError,
};
use prost::Message;

use super::generated as pb;
use super::required;
use crate::NodeId;
use pb::{error_detail, ErrorDetail};

/// Why bytes or a protobuf message could not be turned into a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PbError {
    /// The bytes are not a valid encoding of the message.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// The message being decoded (e.g. "LogEntry").
        what: &'static str,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A required field (message or oneof) is absent.
    #[error("{field} is missing")]
    Missing {
        /// `Message.field`.
        field: &'static str,
    },
    /// A bytes field has the wrong length (e.g. a UUID that is not 16 bytes).
    #[error("{field} has {len} bytes, expected {expected}")]
    Length {
        /// `Message.field`.
        field: &'static str,
        /// The length required.
        expected: usize,
        /// The length found.
        len: usize,
    },
    /// A number is larger than its domain type allows.
    #[error("{field} = {value} is out of range (at most {max})")]
    OutOfRange {
        /// `Message.field`.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// An enum field holds a value that has no meaning here (including `*_UNSPECIFIED`).
    #[error("{field} = {value} is not a known value")]
    UnknownEnum {
        /// `Message.field`.
        field: &'static str,
        /// The raw value.
        value: i32,
    },
    /// A membership names a voter without an address in its `nodes`.
    #[error("membership voter {voter} has no entry in nodes")]
    VoterWithoutNode {
        /// The voter's id.
        voter: NodeId,
    },
    /// The message was written with a schema version this build does not read.
    #[error("schema version {got} is not supported (this build reads {min}..={max})")]
    SchemaVersion {
        /// The version in the message (0: absent).
        got: u32,
        /// The oldest version read.
        min: u32,
        /// The newest version read.
        max: u32,
    },
}

impl PbError {
    /// A [`PbError::Decode`] of message `what`.
    pub(crate) fn decode(what: &'static str) -> impl FnOnce(prost::DecodeError) -> PbError {
        move |source| PbError::Decode { what, source }
    }
}

/// Why openraft's core stopped (openraft's [`Fatal`] without the storage error's details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalCause {
    /// The log or state machine storage failed.
    Storage,
    /// The core panicked.
    Panicked,
    /// The core shut down normally.
    Stopped,
}

/// The typed cause of a failed call, as one node reports it to another.
///
/// Carried as the `ErrorDetail` of a gRPC status; [`WireError::code`] gives the status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The node is not the leader; the hint names the leader it knows (if any).
    #[error("not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader the node knows of, if any.
        leader_id: Option<NodeId>,
        /// That leader's address, if known.
        leader_addr: Option<String>,
    },
    /// The node cannot serve the call now (its Raft is stopping or stopped).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The receiving Raft core stopped (openraft's [`Fatal`]).
    #[error("raft fatal error ({kind:?}): {message}")]
    Fatal {
        /// What stopped it.
        kind: FatalCause,
        /// The error's text.
        message: String,
    },
    /// An install-snapshot chunk arrived out of order.
    #[error(transparent)]
    SnapshotMismatch(SnapshotMismatch),
    /// The request's schema version is not one the receiver reads.
    #[error("schema version {got} is not supported by the receiver (it reads {min}..={max})")]
    SchemaMismatch {
        /// The version sent.
        got: u32,
        /// The oldest version the receiver reads.
        min: u32,
        /// The newest version the receiver reads.
        max: u32,
    },
    /// The request is malformed.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The node handled the call and refused it.
    #[error("{reason}")]
    Refused {
        /// Why (the Raft error's or the hand-over refusal's text).
        reason: String,
    },
}

impl WireError {
    /// The error for openraft's `fatal`.
    pub fn from_fatal(fatal: &Fatal<NodeId>) -> WireError {
        let kind = match fatal {
            Fatal::StorageError(_) => FatalCause::Storage,
            Fatal::Panicked => FatalCause::Panicked,
            Fatal::Stopped => FatalCause::Stopped,
        };
        WireError::Fatal {
            kind,
            message: fatal.to_string(),
        }
    }

    /// The gRPC status code of this error (see the "Errors" section of `proto/cluster.proto`).
    pub fn code(&self) -> tonic::Code {
        match self {
            WireError::NotLeader { .. }
            | WireError::Refused { .. }
            | WireError::SchemaMismatch { .. } => tonic::Code::FailedPrecondition,
            WireError::Unavailable { .. }
            | WireError::Fatal {
                kind: FatalCause::Stopped,
                ..
            } => tonic::Code::Unavailable,
            WireError::Fatal { .. } => tonic::Code::Internal,
            WireError::SnapshotMismatch(_) => tonic::Code::Aborted,
            WireError::InvalidRequest { .. } => tonic::Code::InvalidArgument,
        }
    }

    /// A gRPC status with [`WireError::code`], this error's text and its `ErrorDetail`.
    pub fn to_status(&self) -> tonic::Status {
        let detail = ErrorDetail::from(self).encode_to_vec();
        tonic::Status::with_details(self.code(), self.to_string(), detail.into())
    }

    /// The error a status carries in its details; None when it has none (a transport failure
    /// or a status from something else than a node), `Err` when they do not decode.
    pub fn from_status(status: &tonic::Status) -> Option<Result<WireError, PbError>> {
        let details = status.details();
        if details.is_empty() {
            return None;
        }
        Some(
            ErrorDetail::decode(details)
                .map_err(PbError::decode("ErrorDetail"))
                .and_then(WireError::try_from),
        )
    }
}

impl From<PbError> for WireError {
    /// A request that does not decode: a schema mismatch or an invalid request.
    fn from(e: PbError) -> Self {
        match e {
            PbError::SchemaVersion { got, min, max } => WireError::SchemaMismatch { got, min, max },
            other => WireError::InvalidRequest {
                reason: other.to_string(),
            },
        }
    }
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        e.to_status()
    }
}

impl From<PbError> for tonic::Status {
    fn from(e: PbError) -> Self {
        WireError::from(e).to_status()
    }
}

/// openraft's [`Fatal`] for a fatal error reported by a peer. A storage error keeps only its
/// text (the subject and verb stay on the peer).
pub fn fatal_of(kind: FatalCause, message: &str) -> Fatal<NodeId> {
    match kind {
        FatalCause::Storage => Fatal::StorageError(StorageError::IO {
            source: StorageIOError::new(
                ErrorSubject::None,
                ErrorVerb::Read,
                AnyError::error(message),
            ),
        }),
        FatalCause::Panicked => Fatal::Panicked,
        FatalCause::Stopped => Fatal::Stopped,
    }
}

impl From<FatalCause> for pb::FatalKind {
    fn from(kind: FatalCause) -> Self {
        match kind {
            FatalCause::Storage => pb::FatalKind::Storage,
            FatalCause::Panicked => pb::FatalKind::Panicked,
            FatalCause::Stopped => pb::FatalKind::Stopped,
        }
    }
}

fn segment_to_pb(s: &SnapshotSegmentId) -> pb::SnapshotSegmentId {
    pb::SnapshotSegmentId {
        id: s.id.clone(),
        offset: s.offset,
    }
}

fn segment_from_pb(s: pb::SnapshotSegmentId) -> SnapshotSegmentId {
    SnapshotSegmentId {
        id: s.id,
        offset: s.offset,
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<&WireError> for ErrorDetail {
    fn from(e: &WireError) -> Self {
        use error_detail::Kind;
        let kind = match e {
            WireError::NotLeader {
                leader_id,
                leader_addr,
            } => Kind::NotLeader(pb::LeaderHint {
                leader_id: *leader_id,
                leader_addr: leader_addr.clone().unwrap_or_default(),
            }),
            WireError::Unavailable { reason } => Kind::Unavailable(pb::Unavailable {
                reason: reason.clone(),
            }),
            WireError::Fatal { kind, message } => Kind::Fatal(pb::Fatal {
                kind: pb::FatalKind::from(*kind).into(),
                message: message.clone(),
            }),
            WireError::SnapshotMismatch(m) => Kind::SnapshotMismatch(pb::SnapshotMismatch {
                expect: Some(segment_to_pb(&m.expect)),
                got: Some(segment_to_pb(&m.got)),
            }),
            WireError::SchemaMismatch { got, min, max } => {
                Kind::SchemaMismatch(pb::SchemaMismatch {
                    got: *got,
                    min_supported: *min,
                    max_supported: *max,
                })
            }
            WireError::InvalidRequest { reason } => Kind::InvalidRequest(pb::InvalidRequest {
                reason: reason.clone(),
            }),
            WireError::Refused { reason } => Kind::Refused(pb::Refusal {
                reason: reason.clone(),
            }),
        };
        ErrorDetail { kind: Some(kind) }
    }
}

impl TryFrom<ErrorDetail> for WireError {
    type Error = PbError;

    fn try_from(detail: ErrorDetail) -> Result<Self, PbError> {
        use error_detail::Kind;
        Ok(match required(detail.kind, "ErrorDetail.kind")? {
            Kind::NotLeader(hint) => WireError::NotLeader {
                leader_id: hint.leader_id,
                leader_addr: non_empty(hint.leader_addr),
            },
            Kind::Unavailable(u) => WireError::Unavailable { reason: u.reason },
            Kind::Fatal(f) => {
                let kind = match pb::FatalKind::try_from(f.kind) {
                    Ok(pb::FatalKind::Storage) => FatalCause::Storage,
                    Ok(pb::FatalKind::Panicked) => FatalCause::Panicked,
                    Ok(pb::FatalKind::Stopped) => FatalCause::Stopped,
                    Ok(pb::FatalKind::Unspecified) | Err(_) => {
                        return Err(PbError::UnknownEnum {
                            field: "Fatal.kind",
                            value: f.kind,
                        })
                    }
                };
                WireError::Fatal {
                    kind,
                    message: f.message,
                }
            }
            Kind::SnapshotMismatch(m) => WireError::SnapshotMismatch(SnapshotMismatch {
                expect: segment_from_pb(required(m.expect, "SnapshotMismatch.expect")?),
                got: segment_from_pb(required(m.got, "SnapshotMismatch.got")?),
            }),
            Kind::SchemaMismatch(s) => WireError::SchemaMismatch {
                got: s.got,
                min: s.min_supported,
                max: s.max_supported,
            },
            Kind::InvalidRequest(i) => WireError::InvalidRequest { reason: i.reason },
            Kind::Refused(r) => WireError::Refused { reason: r.reason },
        })
    }
}

/// An openraft API error type that can cross the wire as a [`WireError`]: the `E` of
/// `RaftError<NodeId, E>` in the replies of the `Raft` service.
pub trait WireApiError: Sized {
    /// The wire form of this error.
    fn to_wire(&self) -> WireError;
    /// The API error a peer reported, when `e` is one of this type.
    fn from_wire(e: &WireError) -> Option<Self>;
}

impl WireApiError for openraft::error::Infallible {
    fn to_wire(&self) -> WireError {
        match *self {}
    }

    fn from_wire(_: &WireError) -> Option<Self> {
        None
    }
}

impl WireApiError for InstallSnapshotError {
    fn to_wire(&self) -> WireError {
        match self {
            InstallSnapshotError::SnapshotMismatch(m) => WireError::SnapshotMismatch(m.clone()),
        }
    }

    fn from_wire(e: &WireError) -> Option<Self> {
        match e {
            WireError::SnapshotMismatch(m) => {
                Some(InstallSnapshotError::SnapshotMismatch(m.clone()))
            }
            _ => None,
        }
    }
}

/// The wire form of an error returned by the local Raft to a peer's RPC.
pub fn raft_error_to_wire<E: WireApiError>(e: &RaftError<NodeId, E>) -> WireError {
    match e {
        RaftError::APIError(api) => api.to_wire(),
        RaftError::Fatal(fatal) => WireError::from_fatal(fatal),
    }
}

/// The Raft error a peer reported, when `e` is one its RPC can return (a fatal error or an
/// API error of type `E`); None for any other wire error.
pub fn raft_error_from_wire<E: WireApiError>(e: &WireError) -> Option<RaftError<NodeId, E>> {
    match e {
        WireError::Fatal { kind, message } => Some(RaftError::Fatal(fatal_of(*kind, message))),
        other => E::from_wire(other).map(RaftError::APIError),
    }
}
