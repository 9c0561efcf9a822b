//! Commands (the only way to change a [`HostState`](crate::HostState)) and their results.
//!
//! A command carries everything needed to apply it deterministically, including the time
//! (stamped by the node that received the KMS request), so that every Raft replica applying the
//! same log reaches the same state. This crate never reads a clock.

use std::collections::BTreeMap;

use kms_protocol::LicenseState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::HostIdentity;

/// One state change of the KMS host, as it will be written to the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A KMS request the host answered or refused: counted in statistics, client windows and
    /// inventory. Idempotent by `request_id`.
    Activation(Activation),
    /// Sets the ePID a count group answers with. The first write wins, so concurrent nodes that
    /// each generated an ePID converge on one; later ones are no-ops returning the existing ePID.
    SetEpid {
        /// Count group ("windows", "office2010", "office").
        count_group: String,
        /// The extended PID string.
        epid: String,
        /// When it was proposed (unix ms).
        time_ms: u64,
    },
    /// Sets the host identity (hardware id, OS build and platform of every ePID). The first
    /// write wins, as for [`Command::SetEpid`]: later ones are no-ops returning the identity in
    /// effect. Its `set_ms` is the command time.
    SetHostIdentity(HostIdentity),
    /// Replaces the host identity and every ePID at once (the operator's "regenerate"): the
    /// ePID map becomes exactly `epids`, so no ePID of the old identity survives and an ePID
    /// proposed for the old identity afterwards is a no-op for every group listed.
    ReplaceHostIdentity {
        /// The new identity; its `set_ms` is the command time.
        identity: HostIdentity,
        /// Count group → ePID made with the new identity's build and platform.
        epids: BTreeMap<String, String>,
    },
    /// Sets how long a client record stays in the inventory after its last request (the
    /// operator's `inventory_retention_days`, replicated so that every node prunes alike).
    /// Values below the 30-day count window are raised to it.
    SetInventoryRetention {
        /// The retention (ms).
        retention_ms: u64,
        /// When it was proposed (unix ms).
        time_ms: u64,
    },
}

impl Command {
    /// The time carried by the command (unix ms), e.g. for log display.
    pub fn time_ms(&self) -> u64 {
        match self {
            Command::Activation(a) => a.time_ms,
            Command::SetEpid { time_ms, .. } | Command::SetInventoryRetention { time_ms, .. } => {
                *time_ms
            }
            Command::SetHostIdentity(identity) | Command::ReplaceHostIdentity { identity, .. } => {
                identity.set_ms
            }
        }
    }
}

/// One KMS request and the host's answer, as recorded by the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Unique id chosen by the receiving node; makes re-proposals of the same request harmless.
    pub request_id: Uuid,
    /// Unix ms when the receiving node got the request. Drives the 30-day window and dedup expiry.
    pub time_ms: u64,
    /// Count pool ("windows" | "office2010" | "office"); `None` when the catalog does not know the
    /// product (then only the global statistics count the request).
    pub count_group: Option<String>,
    /// Catalog product group slug, e.g. "windows-10-11" (inventory only).
    pub product_group: Option<String>,
    /// kmsCountedId from the request.
    pub kms_counted_id: Uuid,
    /// applicationId from the request.
    pub application_id: Uuid,
    /// skuId (activation id of the client's edition).
    pub sku_id: Uuid,
    /// Client machine id: what the host counts.
    pub cmid: Uuid,
    /// Client's machine name (FQDN or NetBIOS).
    pub machine_name: String,
    /// Whether the client said it is a VM (informational; VMs count like physical machines).
    pub client_vm: bool,
    /// License state the client reported.
    pub license_state: LicenseState,
    /// Minutes remaining in the client's current license state.
    pub grace_minutes: u32,
    /// requiredClientCount the client sent (25 Windows client, 5 server/Office).
    pub required_count: u32,
    /// KMS protocol major version of the request (4, 5, 6).
    pub protocol_major: u16,
    /// Whether the host answered or refused.
    pub outcome: Outcome,
    /// Raft node id of the node that received the request (inventory only; 0 when unknown,
    /// e.g. in commands written before it was recorded).
    #[serde(default)]
    pub answered_by: u64,
}

/// How the host handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The host sent an activation response (the client may still find the count too low).
    Answered,
    /// The host refused with this HRESULT (e.g. 0xC004F042 unsupported product, 0xC004F06C time
    /// skew, 0x8007000D invalid data). Counts as a failed request.
    Refused {
        /// The HRESULT returned to the client.
        hresult: u32,
    },
}

impl Outcome {
    /// True for [`Outcome::Answered`].
    pub fn is_answered(&self) -> bool {
        matches!(self, Outcome::Answered)
    }
}

/// What applying a command produced; returned to the node that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandResult {
    /// Result of [`Command::Activation`].
    Activation(ActivationResult),
    /// Result of [`Command::SetEpid`]: the ePID now in effect for the group (the first one set).
    Epid(String),
    /// Result of [`Command::SetHostIdentity`] and [`Command::ReplaceHostIdentity`]: the identity
    /// now in effect.
    HostIdentity(HostIdentity),
    /// Result of [`Command::SetInventoryRetention`]: the retention now in effect (ms).
    InventoryRetention(u64),
}

/// The count to put in the activation response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationResult {
    /// Distinct client machine ids of the request's count group active in the last 30 days,
    /// including the requester when answered. Uncapped: the caller caps at 2 × the minimum.
    /// 0 when the request had no count group.
    pub active_clients: u32,
    /// True when the request id had already been applied; the stored result is returned and the
    /// state is unchanged.
    pub duplicate: bool,
}
