//! Conversions of openraft's replication types: log ids, votes, log entries ([`encode_entry`] /
//! [`decode_entry`] for the log store) and the requests and responses of the `Raft` service.
//!
//! Requests carry the schema version: `From<&Request>` writes [`SCHEMA_VERSION`] and
//! `TryFrom<pb::Request>` rejects any version this build does not read before looking at the
//! rest of the message.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload};
use prost::Message;

use super::generated as pb;
use super::{check_schema_version, required, PbError, SCHEMA_VERSION};
use crate::{ClusterRequest, Entry, LogId, NodeId, Registration, TypeConfig, Vote};

/// The bytes of one log entry as the log store keeps them: a `LogEntry` message with the
/// current [`SCHEMA_VERSION`].
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    pb::LogEntry::from(entry).encode_to_vec()
}

/// The log entry stored as `bytes` by [`encode_entry`]. Fails (never panics) on bytes that are
/// not a `LogEntry`, on an unsupported schema version and on missing or invalid fields.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, PbError> {
    pb::LogEntry::decode(bytes)
        .map_err(PbError::decode("LogEntry"))?
        .try_into()
}

impl From<&LogId> for pb::LogId {
    fn from(id: &LogId) -> Self {
        pb::LogId {
            term: id.leader_id.term,
            node_id: id.leader_id.node_id,
            index: id.index,
        }
    }
}

impl From<pb::LogId> for LogId {
    fn from(id: pb::LogId) -> Self {
        LogId::new(CommittedLeaderId::new(id.term, id.node_id), id.index)
    }
}

/// An optional log id (openraft's `None`: an absent field).
pub(super) fn log_id_to_pb(id: Option<&LogId>) -> Option<pb::LogId> {
    id.map(pb::LogId::from)
}

/// The optional log id of an absent-or-present field.
pub(super) fn log_id_from_pb(id: Option<pb::LogId>) -> Option<LogId> {
    id.map(LogId::from)
}

impl From<&Vote> for pb::Vote {
    fn from(vote: &Vote) -> Self {
        pb::Vote {
            term: vote.leader_id.term,
            node_id: vote.leader_id.node_id,
            committed: vote.committed,
        }
    }
}

impl From<pb::Vote> for Vote {
    fn from(vote: pb::Vote) -> Self {
        if vote.committed {
            Vote::new_committed(vote.term, vote.node_id)
        } else {
            Vote::new(vote.term, vote.node_id)
        }
    }
}

fn vote_from_pb(vote: Option<pb::Vote>, field: &'static str) -> Result<Vote, PbError> {
    required(vote, field).map(Vote::from)
}

impl From<&Entry> for pb::LogEntry {
    fn from(entry: &Entry) -> Self {
        use pb::log_entry::Payload;
        let payload = match &entry.payload {
            EntryPayload::Blank => Payload::Blank(pb::Blank {}),
            EntryPayload::Normal(request) => Payload::Normal(pb::CommandBatch {
                commands: request.commands.iter().map(pb::Command::from).collect(),
                register: request.register.as_ref().map(pb::Registration::from),
            }),
            EntryPayload::Membership(membership) => {
                Payload::Membership(pb::Membership::from(membership))
            }
        };
        pb::LogEntry {
            schema_version: SCHEMA_VERSION,
            log_id: Some(pb::LogId::from(&entry.log_id)),
            payload: Some(payload),
        }
    }
}

impl TryFrom<pb::LogEntry> for Entry {
    type Error = PbError;

    fn try_from(entry: pb::LogEntry) -> Result<Self, PbError> {
        use pb::log_entry::Payload;
        check_schema_version(entry.schema_version)?;
        let log_id = required(entry.log_id, "LogEntry.log_id")?.into();
        let payload = match required(entry.payload, "LogEntry.payload")? {
            Payload::Blank(pb::Blank {}) => EntryPayload::Blank,
            Payload::Normal(batch) => EntryPayload::Normal(ClusterRequest {
                commands: super::commands::commands_from_pb(batch.commands)?,
                register: batch.register.map(Registration::try_from).transpose()?,
            }),
            Payload::Membership(m) => EntryPayload::Membership(m.try_into()?),
        };
        Ok(Entry { log_id, payload })
    }
}

impl From<&VoteRequest<NodeId>> for pb::VoteRequest {
    fn from(rpc: &VoteRequest<NodeId>) -> Self {
        pb::VoteRequest {
            schema_version: SCHEMA_VERSION,
            vote: Some(pb::Vote::from(&rpc.vote)),
            last_log_id: log_id_to_pb(rpc.last_log_id.as_ref()),
        }
    }
}

impl TryFrom<pb::VoteRequest> for VoteRequest<NodeId> {
    type Error = PbError;

    fn try_from(rpc: pb::VoteRequest) -> Result<Self, PbError> {
        check_schema_version(rpc.schema_version)?;
        Ok(VoteRequest {
            vote: vote_from_pb(rpc.vote, "VoteRequest.vote")?,
            last_log_id: log_id_from_pb(rpc.last_log_id),
        })
    }
}

impl From<&VoteResponse<NodeId>> for pb::VoteResponse {
    fn from(resp: &VoteResponse<NodeId>) -> Self {
        pb::VoteResponse {
            vote: Some(pb::Vote::from(&resp.vote)),
            vote_granted: resp.vote_granted,
            last_log_id: log_id_to_pb(resp.last_log_id.as_ref()),
        }
    }
}

impl TryFrom<pb::VoteResponse> for VoteResponse<NodeId> {
    type Error = PbError;

    fn try_from(resp: pb::VoteResponse) -> Result<Self, PbError> {
        Ok(VoteResponse {
            vote: vote_from_pb(resp.vote, "VoteResponse.vote")?,
            vote_granted: resp.vote_granted,
            last_log_id: log_id_from_pb(resp.last_log_id),
        })
    }
}

impl From<&AppendEntriesRequest<TypeConfig>> for pb::AppendEntriesRequest {
    fn from(rpc: &AppendEntriesRequest<TypeConfig>) -> Self {
        pb::AppendEntriesRequest {
            schema_version: SCHEMA_VERSION,
            vote: Some(pb::Vote::from(&rpc.vote)),
            prev_log_id: log_id_to_pb(rpc.prev_log_id.as_ref()),
            entries: rpc.entries.iter().map(pb::LogEntry::from).collect(),
            leader_commit: log_id_to_pb(rpc.leader_commit.as_ref()),
        }
    }
}

impl TryFrom<pb::AppendEntriesRequest> for AppendEntriesRequest<TypeConfig> {
    type Error = PbError;

    fn try_from(rpc: pb::AppendEntriesRequest) -> Result<Self, PbError> {
        check_schema_version(rpc.schema_version)?;
        Ok(AppendEntriesRequest {
            vote: vote_from_pb(rpc.vote, "AppendEntriesRequest.vote")?,
            prev_log_id: log_id_from_pb(rpc.prev_log_id),
            entries: rpc
                .entries
                .into_iter()
                .map(Entry::try_from)
                .collect::<Result<_, _>>()?,
            leader_commit: log_id_from_pb(rpc.leader_commit),
        })
    }
}

impl From<&AppendEntriesResponse<NodeId>> for pb::AppendEntriesResponse {
    fn from(resp: &AppendEntriesResponse<NodeId>) -> Self {
        use pb::append_entries_response::Kind;
        let kind = match resp {
            AppendEntriesResponse::Success => Kind::Success(pb::AppendSuccess {}),
            AppendEntriesResponse::PartialSuccess(matching) => {
                Kind::PartialSuccess(pb::PartialSuccess {
                    matching: log_id_to_pb(matching.as_ref()),
                })
            }
            AppendEntriesResponse::Conflict => Kind::Conflict(pb::Conflict {}),
            AppendEntriesResponse::HigherVote(vote) => Kind::HigherVote(pb::Vote::from(vote)),
        };
        pb::AppendEntriesResponse { kind: Some(kind) }
    }
}

impl TryFrom<pb::AppendEntriesResponse> for AppendEntriesResponse<NodeId> {
    type Error = PbError;

    fn try_from(resp: pb::AppendEntriesResponse) -> Result<Self, PbError> {
        use pb::append_entries_response::Kind;
        Ok(match required(resp.kind, "AppendEntriesResponse.kind")? {
            Kind::Success(pb::AppendSuccess {}) => AppendEntriesResponse::Success,
            Kind::PartialSuccess(p) => {
                AppendEntriesResponse::PartialSuccess(log_id_from_pb(p.matching))
            }
            Kind::Conflict(pb::Conflict {}) => AppendEntriesResponse::Conflict,
            Kind::HigherVote(vote) => AppendEntriesResponse::HigherVote(vote.into()),
        })
    }
}

impl From<&InstallSnapshotRequest<TypeConfig>> for pb::InstallSnapshotRequest {
    fn from(rpc: &InstallSnapshotRequest<TypeConfig>) -> Self {
        pb::InstallSnapshotRequest {
            schema_version: SCHEMA_VERSION,
            vote: Some(pb::Vote::from(&rpc.vote)),
            meta: Some(pb::SnapshotMeta::from(&rpc.meta)),
            offset: rpc.offset,
            data: rpc.data.clone(),
            done: rpc.done,
        }
    }
}

impl TryFrom<pb::InstallSnapshotRequest> for InstallSnapshotRequest<TypeConfig> {
    type Error = PbError;

    fn try_from(rpc: pb::InstallSnapshotRequest) -> Result<Self, PbError> {
        check_schema_version(rpc.schema_version)?;
        Ok(InstallSnapshotRequest {
            vote: vote_from_pb(rpc.vote, "InstallSnapshotRequest.vote")?,
            meta: required(rpc.meta, "InstallSnapshotRequest.meta")?.try_into()?,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        })
    }
}

impl From<&InstallSnapshotResponse<NodeId>> for pb::InstallSnapshotResponse {
    fn from(resp: &InstallSnapshotResponse<NodeId>) -> Self {
        pb::InstallSnapshotResponse {
            vote: Some(pb::Vote::from(&resp.vote)),
        }
    }
}

impl TryFrom<pb::InstallSnapshotResponse> for InstallSnapshotResponse<NodeId> {
    type Error = PbError;

    fn try_from(resp: pb::InstallSnapshotResponse) -> Result<Self, PbError> {
        Ok(InstallSnapshotResponse {
            vote: vote_from_pb(resp.vote, "InstallSnapshotResponse.vote")?,
        })
    }
}
