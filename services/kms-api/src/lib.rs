//! The admin API's JSON documents (`GET /status`, `GET /clients`, `GET /host-identity`), shared by `kmsd`
//! (which produces them) and `kmsctl` (which renders them), so the two cannot drift.
//!
//! Field names are part of the interface scripts rely on (`total_requests`,
//! `failed_requests`, each group's `current_count`, ...): rename nothing.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Cumulative request statistics as `slmgr /dlv` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    /// Total requests received.
    pub total_requests: u64,
    /// Failed requests received.
    pub failed_requests: u64,
    /// Answered requests by the license state the client reported (snake_case labels:
    /// unlicensed, licensed, initial_grace, additional_grace, non_genuine_grace,
    /// notification, extended_grace, other).
    pub requests_by_license_state: BTreeMap<String, u64>,
}

/// One count group (Windows, Office 2010, Office 2013+) as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Count group name (`windows`, `office2010`, `office`).
    pub name: String,
    /// Display name.
    pub display: String,
    /// Application ID.
    pub application_id: Uuid,
    /// Host ePID for this group (None until the first activation).
    pub epid: Option<String>,
    /// Current count as clients receive it (capped at `cap`).
    pub current_count: u32,
    /// Distinct client machines seen in the last 30 days (uncapped).
    pub active_clients: u32,
    /// Largest minimum count among the group's products (25 Windows, 5 Office).
    pub minimum: u32,
    /// Count cap (twice the minimum).
    pub cap: u32,
    /// Licensed product groups in this count group.
    pub licensed_products: Vec<String>,
    /// Request statistics of this group.
    #[serde(flatten)]
    pub stats: RequestStats,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// kmsd version.
    pub version: String,
    /// KMS listening addresses.
    pub listening: Vec<String>,
    /// KMS port (from the first listening address).
    pub port: u16,
    /// Whether the host publishes its SRV record in DNS.
    pub dns_publishing: bool,
    /// KMS priority as `slmgr /dlv` shows it.
    pub priority: String,
    /// Activation interval, minutes.
    pub activation_interval: u32,
    /// Renewal interval, minutes.
    pub renewal_interval: u32,
    /// Licensed product groups.
    pub licensed_groups: Vec<String>,
    /// Cluster-wide cumulative statistics.
    #[serde(flatten)]
    pub stats: RequestStats,
    /// Per count group.
    pub groups: Vec<GroupStatus>,
    /// Process-local listener counters.
    pub connections: BTreeMap<String, u64>,
    /// This node's view of the Raft cluster.
    pub raft: RaftView,
    /// The test clock offset in effect (`clock_offset_secs`; 0 in production).
    #[serde(default)]
    pub clock_offset_secs: i64,
    /// This node's data directory and the disk it is on (zeros from a node that does not
    /// report them).
    #[serde(default)]
    pub storage: StorageView,
}

/// This node's data directory and the free space of its filesystem (`status.storage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageView {
    /// Bytes of the files in the data directory (log segments, snapshot, identity, outbox).
    pub data_dir_bytes: u64,
    /// Bytes still free for kmsd on the filesystem holding it.
    pub available_bytes: u64,
    /// Size of that filesystem in bytes (0 when it could not be read).
    pub filesystem_bytes: u64,
}

/// One node's view of the Raft cluster (`status.raft`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// This node's id.
    pub node_id: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Leader id, if known.
    pub leader: Option<u64>,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Highest index known committed (leader: replicated on a quorum; others: applied).
    pub commit_index: Option<u64>,
    /// Highest index applied to this node's state.
    pub applied_index: Option<u64>,
    /// Index covered by the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Voting members: id → cluster address.
    pub voters: BTreeMap<u64, String>,
    /// Non-voting learners: id → cluster address.
    pub learners: BTreeMap<u64, String>,
    /// Leader only: highest index each member has matched.
    pub replication: BTreeMap<u64, Option<u64>>,
    /// Leader only: ms since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// How stale this node's view may be: ms since it last knew a leader backed by a
    /// quorum (0 while it does).
    pub stale_ms: u64,
    /// Commands answered locally without a quorum, waiting to be replayed (serve-local).
    pub outbox_len: u64,
    /// Quorum-loss mode: `serve-local` or `fail-closed`.
    pub quorum_loss: String,
    /// The incarnation of this node's data directory (new whenever it starts empty).
    #[serde(default)]
    pub incarnation: String,
    /// The node started with an empty store and does not take part in Raft until its peers
    /// confirm it is new or the leader took it back as a learner.
    #[serde(default)]
    pub quarantined: bool,
    /// The membership in effect: `stable`, `pending` (written, not committed yet) or `joint`
    /// (old and new voter sets at once: every commit needs a majority of each).
    #[serde(default)]
    pub membership_state: String,
    /// The same in words, with the voter sets (e.g. `joint ({1} -> {1,2})`).
    #[serde(default)]
    pub membership_detail: String,
}

/// One client machine in the inventory (`GET /clients`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client machine ID.
    pub cmid: Uuid,
    /// Machine name it reported.
    pub machine_name: String,
    /// Count group.
    pub count_group: String,
    /// Product group slug.
    pub product_group: Option<String>,
    /// SKU id.
    pub sku_id: Uuid,
    /// SKU name when known.
    pub product: Option<String>,
    /// Virtual machine flag.
    pub client_vm: bool,
    /// License state last reported.
    pub license_state: String,
    /// Minutes left in that state, last reported.
    pub grace_minutes: u32,
    /// Protocol major version last used.
    pub protocol: u16,
    /// First request (Unix ms).
    pub first_seen_ms: u64,
    /// Last answered (counted) request (Unix ms); 0 when only ever refused.
    pub last_seen_ms: u64,
    /// Requests seen.
    pub requests: u64,
    /// In the count: answered within the 30 days before the answering node's clock.
    #[serde(default)]
    pub counted: bool,
    /// Last request of any outcome (Unix ms).
    #[serde(default)]
    pub last_request_ms: u64,
    /// Last request answered with a count at or above the client's minimum (Unix ms).
    #[serde(default)]
    pub last_success_ms: Option<u64>,
    /// When the activation that success gave ends (180 days after it).
    #[serde(default)]
    pub activation_ends_ms: Option<u64>,
    /// The last failure: refused, or answered below the minimum.
    #[serde(default)]
    pub last_failure: Option<ClientFailure>,
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Raft node id of the node that received the last request (0: unknown).
    #[serde(default)]
    pub answered_by: u64,
    /// Names reported before `machine_name`, most recent first.
    #[serde(default)]
    pub previous_names: Vec<String>,
    /// Lifecycle state at the answering node's clock: `active`, `overdue`, `expiring`,
    /// `expired` or `failing`.
    #[serde(default)]
    pub state: String,
}

/// A machine's last failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFailure {
    /// When (Unix ms).
    pub time_ms: u64,
    /// The HRESULT, as `0xC004F042`.
    pub hresult: String,
    /// What it means.
    pub reason: String,
}

/// `GET /host-identity` (and the answer of `POST /host-identity/regenerate`): the one
/// machine the cluster presents, and each count group's ePID checked against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentityReport {
    /// The replicated identity; `None` until the first answered request chooses it.
    pub identity: Option<HostIdentityView>,
    /// The `host_os` setting of the node that answered (what a regenerate there claims).
    pub configured_host_os: String,
    /// Stored ePIDs, by count group.
    pub epids: Vec<GroupEpid>,
    /// True when every stored ePID names the identity's build and platform.
    pub uniform: bool,
}

/// The host identity: hardware id, OS build and platform id of every ePID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIdentityView {
    /// Hardware id, 16 upper-case hex digits (as `kmsctl activate --json` prints `hwid`).
    pub hwid: String,
    /// Host OS build, e.g. 26100.
    pub build: u32,
    /// Platform id of the build, e.g. 3612.
    pub platform: u32,
    /// The release of that build (`2025`, `2012r2`, ...), when it is one.
    pub host_os: Option<String>,
    /// When it was chosen (Unix ms).
    pub set_ms: u64,
}

/// One count group's stored ePID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEpid {
    /// Count group ("windows", "office2010", "office").
    pub count_group: String,
    /// The ePID.
    pub epid: String,
    /// Whether it names the identity's build and platform.
    pub matches_identity: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_keys_scripts_rely_on() {
        let r = StatusReport {
            version: "0".into(),
            listening: vec![],
            port: 1688,
            dns_publishing: false,
            priority: "Normal".into(),
            activation_interval: 120,
            renewal_interval: 10080,
            licensed_groups: vec![],
            stats: RequestStats::default(),
            groups: vec![],
            connections: BTreeMap::new(),
            clock_offset_secs: 0,
            raft: RaftView::default(),
            storage: StorageView::default(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert!(v.get("total_requests").is_some());
        assert!(v.get("failed_requests").is_some());
        let back: StatusReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
