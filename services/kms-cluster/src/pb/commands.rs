//! Conversions of the application data: [`kms_state::Command`] (an activation, an ePID or the
//! host identity),
//! [`kms_state::CommandResult`], command batches ([`encode_commands`] / [`decode_commands`] for
//! the outbox) and the `Forward` request and response.
//!
//! UUIDs travel as their 16 bytes; a license state as its KMS protocol number (known values
//! have names in the proto enum, others keep their number); an outcome as "answered" or the
//! refusal's HRESULT.

use kms_protocol::LicenseState;
use kms_state::{Activation, ActivationResult, Command, CommandResult, HostIdentity, Outcome};
use prost::Message;
use uuid::Uuid;

use super::generated as pb;
use super::{check_schema_version, required, PbError, SCHEMA_VERSION};
use crate::network::ForwardOutcome;

/// The bytes of `commands` kept outside the log (the serve-local outbox): a `StoredCommands`
/// message with the current [`SCHEMA_VERSION`].
pub fn encode_commands(commands: &[Command]) -> Vec<u8> {
    pb::StoredCommands {
        schema_version: SCHEMA_VERSION,
        commands: commands.iter().map(pb::Command::from).collect(),
    }
    .encode_to_vec()
}

/// The commands stored as `bytes` by [`encode_commands`]. Fails (never panics) on bytes that
/// are not a `StoredCommands`, an unsupported schema version and invalid commands.
pub fn decode_commands(bytes: &[u8]) -> Result<Vec<Command>, PbError> {
    let stored = pb::StoredCommands::decode(bytes).map_err(PbError::decode("StoredCommands"))?;
    check_schema_version(stored.schema_version)?;
    commands_from_pb(stored.commands)
}

/// Converts a list of commands, failing on the first invalid one.
pub(super) fn commands_from_pb(commands: Vec<pb::Command>) -> Result<Vec<Command>, PbError> {
    commands.into_iter().map(Command::try_from).collect()
}

pub(super) fn uuid_from_pb(bytes: &[u8], field: &'static str) -> Result<Uuid, PbError> {
    <[u8; 16]>::try_from(bytes)
        .map(Uuid::from_bytes)
        .map_err(|_| PbError::Length {
            field,
            expected: 16,
            len: bytes.len(),
        })
}

pub(super) fn uuid_to_pb(uuid: &Uuid) -> Vec<u8> {
    uuid.as_bytes().to_vec()
}

/// The proto enum value of a license state: its KMS number, bit for bit (numbers above
/// `i32::MAX`, which no client sends, become negative and come back unchanged).
fn license_state_to_pb(state: LicenseState) -> i32 {
    state.to_wire() as i32
}

fn license_state_from_pb(value: i32) -> LicenseState {
    LicenseState::from_wire(value as u32)
}

impl From<&Activation> for pb::Activation {
    fn from(a: &Activation) -> Self {
        use pb::activation::Outcome as PbOutcome;
        pb::Activation {
            request_id: uuid_to_pb(&a.request_id),
            time_ms: a.time_ms,
            count_group: a.count_group.clone(),
            product_group: a.product_group.clone(),
            kms_counted_id: uuid_to_pb(&a.kms_counted_id),
            application_id: uuid_to_pb(&a.application_id),
            sku_id: uuid_to_pb(&a.sku_id),
            cmid: uuid_to_pb(&a.cmid),
            machine_name: a.machine_name.clone(),
            client_vm: a.client_vm,
            license_state: license_state_to_pb(a.license_state),
            grace_minutes: a.grace_minutes,
            required_count: a.required_count,
            protocol_major: u32::from(a.protocol_major),
            outcome: Some(match a.outcome {
                Outcome::Answered => PbOutcome::Answered(pb::Answered {}),
                Outcome::Refused { hresult } => PbOutcome::Refused(pb::Refused { hresult }),
            }),
            answered_by: a.answered_by,
        }
    }
}

impl TryFrom<pb::Activation> for Activation {
    type Error = PbError;

    fn try_from(a: pb::Activation) -> Result<Self, PbError> {
        use pb::activation::Outcome as PbOutcome;
        let protocol_major = u16::try_from(a.protocol_major).map_err(|_| PbError::OutOfRange {
            field: "Activation.protocol_major",
            value: u64::from(a.protocol_major),
            max: u64::from(u16::MAX),
        })?;
        Ok(Activation {
            request_id: uuid_from_pb(&a.request_id, "Activation.request_id")?,
            time_ms: a.time_ms,
            count_group: a.count_group,
            product_group: a.product_group,
            kms_counted_id: uuid_from_pb(&a.kms_counted_id, "Activation.kms_counted_id")?,
            application_id: uuid_from_pb(&a.application_id, "Activation.application_id")?,
            sku_id: uuid_from_pb(&a.sku_id, "Activation.sku_id")?,
            cmid: uuid_from_pb(&a.cmid, "Activation.cmid")?,
            machine_name: a.machine_name,
            client_vm: a.client_vm,
            license_state: license_state_from_pb(a.license_state),
            grace_minutes: a.grace_minutes,
            required_count: a.required_count,
            protocol_major,
            outcome: match required(a.outcome, "Activation.outcome")? {
                PbOutcome::Answered(pb::Answered {}) => Outcome::Answered,
                PbOutcome::Refused(pb::Refused { hresult }) => Outcome::Refused { hresult },
            },
            answered_by: a.answered_by,
        })
    }
}

impl From<&Command> for pb::Command {
    fn from(command: &Command) -> Self {
        use pb::command::Kind;
        let kind = match command {
            Command::Activation(a) => Kind::Activation(pb::Activation::from(a)),
            Command::SetEpid {
                count_group,
                epid,
                time_ms,
            } => Kind::SetEpid(pb::SetEpid {
                count_group: count_group.clone(),
                epid: epid.clone(),
                time_ms: *time_ms,
            }),
            Command::SetHostIdentity(identity) => {
                Kind::SetHostIdentity(pb::HostIdentity::from(identity))
            }
            Command::ReplaceHostIdentity { identity, epids } => {
                Kind::ReplaceHostIdentity(pb::ReplaceHostIdentity {
                    identity: Some(pb::HostIdentity::from(identity)),
                    epids: epids
                        .iter()
                        .map(|(count_group, epid)| pb::GroupEpid {
                            count_group: count_group.clone(),
                            epid: epid.clone(),
                        })
                        .collect(),
                })
            }
            Command::SetInventoryRetention {
                retention_ms,
                time_ms,
            } => Kind::SetInventoryRetention(pb::SetInventoryRetention {
                retention_ms: *retention_ms,
                time_ms: *time_ms,
            }),
        };
        pb::Command { kind: Some(kind) }
    }
}

impl TryFrom<pb::Command> for Command {
    type Error = PbError;

    fn try_from(command: pb::Command) -> Result<Self, PbError> {
        use pb::command::Kind;
        Ok(match required(command.kind, "Command.kind")? {
            Kind::Activation(a) => Command::Activation(a.try_into()?),
            Kind::SetEpid(s) => Command::SetEpid {
                count_group: s.count_group,
                epid: s.epid,
                time_ms: s.time_ms,
            },
            Kind::SetHostIdentity(h) => Command::SetHostIdentity(h.try_into()?),
            Kind::ReplaceHostIdentity(r) => Command::ReplaceHostIdentity {
                identity: required(r.identity, "ReplaceHostIdentity.identity")?.try_into()?,
                epids: r
                    .epids
                    .into_iter()
                    .map(|e| (e.count_group, e.epid))
                    .collect(),
            },
            Kind::SetInventoryRetention(r) => Command::SetInventoryRetention {
                retention_ms: r.retention_ms,
                time_ms: r.time_ms,
            },
        })
    }
}

impl From<&HostIdentity> for pb::HostIdentity {
    fn from(h: &HostIdentity) -> Self {
        pb::HostIdentity {
            hwid: h.hwid.to_vec(),
            build: h.build,
            platform: h.platform,
            set_ms: h.set_ms,
        }
    }
}

impl TryFrom<pb::HostIdentity> for HostIdentity {
    type Error = PbError;

    fn try_from(h: pb::HostIdentity) -> Result<Self, PbError> {
        let hwid = <[u8; 8]>::try_from(h.hwid.as_slice()).map_err(|_| PbError::Length {
            field: "HostIdentity.hwid",
            expected: 8,
            len: h.hwid.len(),
        })?;
        Ok(HostIdentity {
            hwid,
            build: h.build,
            platform: h.platform,
            set_ms: h.set_ms,
        })
    }
}

impl From<&CommandResult> for pb::CommandResult {
    fn from(result: &CommandResult) -> Self {
        use pb::command_result::Kind;
        let kind = match result {
            CommandResult::Activation(a) => Kind::Activation(pb::ActivationResult {
                active_clients: a.active_clients,
                duplicate: a.duplicate,
            }),
            CommandResult::Epid(epid) => Kind::Epid(epid.clone()),
            CommandResult::HostIdentity(h) => Kind::HostIdentity(pb::HostIdentity::from(h)),
            CommandResult::InventoryRetention(ms) => Kind::InventoryRetentionMs(*ms),
        };
        pb::CommandResult { kind: Some(kind) }
    }
}

impl TryFrom<pb::CommandResult> for CommandResult {
    type Error = PbError;

    fn try_from(result: pb::CommandResult) -> Result<Self, PbError> {
        use pb::command_result::Kind;
        Ok(match required(result.kind, "CommandResult.kind")? {
            Kind::Activation(a) => CommandResult::Activation(ActivationResult {
                active_clients: a.active_clients,
                duplicate: a.duplicate,
            }),
            Kind::Epid(epid) => CommandResult::Epid(epid),
            Kind::HostIdentity(h) => CommandResult::HostIdentity(h.try_into()?),
            Kind::InventoryRetentionMs(ms) => CommandResult::InventoryRetention(ms),
        })
    }
}

/// The `Forward` request proposing `commands` as one batch.
pub fn forward_request(commands: &[Command]) -> pb::ForwardRequest {
    pb::ForwardRequest {
        schema_version: SCHEMA_VERSION,
        commands: commands.iter().map(pb::Command::from).collect(),
    }
}

/// The commands of a `Forward` request.
pub fn forward_commands(request: pb::ForwardRequest) -> Result<Vec<Command>, PbError> {
    check_schema_version(request.schema_version)?;
    commands_from_pb(request.commands)
}

impl From<&ForwardOutcome> for pb::ForwardResponse {
    fn from(outcome: &ForwardOutcome) -> Self {
        use pb::forward_response::Outcome as PbOutcome;
        let outcome = match outcome {
            ForwardOutcome::Applied(results) => PbOutcome::Applied(pb::CommandResults {
                results: results.iter().map(pb::CommandResult::from).collect(),
            }),
            ForwardOutcome::NotLeader {
                leader_id,
                leader_addr,
            } => PbOutcome::NotLeader(pb::LeaderHint {
                leader_id: *leader_id,
                leader_addr: leader_addr.clone().unwrap_or_default(),
            }),
        };
        pb::ForwardResponse {
            outcome: Some(outcome),
        }
    }
}

impl TryFrom<pb::ForwardResponse> for ForwardOutcome {
    type Error = PbError;

    fn try_from(response: pb::ForwardResponse) -> Result<Self, PbError> {
        use pb::forward_response::Outcome as PbOutcome;
        Ok(
            match required(response.outcome, "ForwardResponse.outcome")? {
                PbOutcome::Applied(applied) => ForwardOutcome::Applied(
                    applied
                        .results
                        .into_iter()
                        .map(CommandResult::try_from)
                        .collect::<Result<_, _>>()?,
                ),
                PbOutcome::NotLeader(hint) => ForwardOutcome::NotLeader {
                    leader_id: hint.leader_id,
                    leader_addr: (!hint.leader_addr.is_empty()).then_some(hint.leader_addr),
                },
            },
        )
    }
}
