//! [`HostState`]: the whole deterministic state of a KMS host and [`HostState::apply`].
//!
//! Owns the order of operations when a command is applied and the read-only views over the
//! state. It is pure: no clock, no I/O, no randomness, only ordered collections, so replicas
//! applying the same commands produce equal states (and equal snapshot bytes).

use std::collections::BTreeMap;
use std::sync::Arc;

use kms_protocol::host::HRESULT_UNSUPPORTED_PRODUCT;
use uuid::Uuid;

use crate::command::{Activation, ActivationResult, Command, CommandResult, Outcome};
use crate::compact::intern;
use crate::dedup::{DedupEntry, DedupLog, DEFAULT_DEDUP_RETENTION_MS};
use crate::epid::EpidRecord;
use crate::identity::HostIdentity;
use crate::lifecycle::{GroupLifecycle, LifecyclePolicy};
use crate::stats::Stats;
use crate::window::{
    ClientFilter, ClientRecord, ClientWindow, CLIENT_WINDOW_MS, DEFAULT_INVENTORY_RETENTION_MS,
};

/// Parameters that influence how commands are applied; part of the state so that every replica
/// (and every snapshot) uses the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateConfig {
    /// How long an applied request id is remembered for deduplication (ms of command time).
    pub dedup_retention_ms: u64,
    /// How long a client record stays in the inventory after its last request (ms of command
    /// time); at least [`CLIENT_WINDOW_MS`]. Set through [`Command::SetInventoryRetention`].
    pub inventory_retention_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dedup_retention_ms: DEFAULT_DEDUP_RETENTION_MS,
            inventory_retention_ms: DEFAULT_INVENTORY_RETENTION_MS,
        }
    }
}

/// The inventory group of requests whose product the catalog does not know: they are refused
/// and never counted, but the machine's record shows what it asked and what it got.
pub const UNKNOWN_GROUP: &str = "unknown";

/// The deterministic state of a KMS host: statistics, per-group client windows with inventory,
/// ePIDs, the host identity and the deduplication memory. Written and read as a whole by
/// [`HostState::write_snapshot`] and [`HostState::read_snapshot`] (the Raft snapshot).
///
/// Cloning is cheap whatever the number of clients (the large maps are persistent B+trees that
/// a clone shares; only the per-group maps, a few entries each, are copied), so a snapshot can
/// be taken under a short lock and written on another thread while commands keep applying.
///
/// Invariant: a count group has a client window only while it holds at least one record, so
/// equal histories give structurally equal values regardless of how they were rebuilt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub(crate) config: StateConfig,
    pub(crate) global: Stats,
    pub(crate) group_stats: BTreeMap<String, Stats>,
    pub(crate) windows: BTreeMap<Arc<str>, ClientWindow>,
    pub(crate) epids: BTreeMap<String, EpidRecord>,
    pub(crate) identity: Option<HostIdentity>,
    pub(crate) dedup: DedupLog,
}

impl HostState {
    /// An empty state with the given configuration.
    pub fn new(config: StateConfig) -> Self {
        HostState {
            config,
            ..HostState::default()
        }
    }

    /// The configuration commands are applied with.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Applies one command deterministically and returns its result.
    ///
    /// Never panics, whatever the command times (they may go backwards between commands).
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Activation(a) => CommandResult::Activation(self.apply_activation(a)),
            Command::SetEpid {
                count_group,
                epid,
                time_ms,
            } => self.apply_set_epid(count_group, epid, *time_ms),
            Command::SetHostIdentity(identity) => {
                CommandResult::HostIdentity(*self.identity.get_or_insert(*identity))
            }
            Command::ReplaceHostIdentity { identity, epids } => {
                self.identity = Some(*identity);
                self.epids = epids
                    .iter()
                    .map(|(group, epid)| {
                        let rec = EpidRecord {
                            count_group: group.clone(),
                            epid: epid.clone(),
                            set_ms: identity.set_ms,
                        };
                        (group.clone(), rec)
                    })
                    .collect();
                CommandResult::HostIdentity(*identity)
            }
            Command::SetInventoryRetention { retention_ms, .. } => {
                self.config.inventory_retention_ms = (*retention_ms).max(CLIENT_WINDOW_MS);
                CommandResult::InventoryRetention(self.config.inventory_retention_ms)
            }
        }
    }

    fn apply_activation(&mut self, a: &Activation) -> ActivationResult {
        let retention = self.config.dedup_retention_ms;
        if let Some(active_clients) = self.dedup.lookup(&a.request_id, a.time_ms, retention) {
            return ActivationResult {
                active_clients,
                duplicate: true,
            };
        }
        self.expire(a.time_ms);

        self.global.record(&a.outcome, a.license_state);
        if let Some(group) = &a.count_group {
            match self.group_stats.get_mut(group.as_str()) {
                Some(stats) => stats.record(&a.outcome, a.license_state),
                None => {
                    let mut stats = Stats::default();
                    stats.record(&a.outcome, a.license_state);
                    self.group_stats.insert(group.clone(), stats);
                }
            }
        }

        // An answered request always has a count group (the catalog knew the product); one
        // without is recorded as refused whatever it says, so it can never count.
        let refused = match (a.outcome, &a.count_group) {
            (Outcome::Refused { hresult }, _) => Some(hresult),
            (Outcome::Answered, None) => Some(HRESULT_UNSUPPORTED_PRODUCT),
            (Outcome::Answered, Some(_)) => None,
        };
        let inventory = a.count_group.as_deref().unwrap_or(UNKNOWN_GROUP);
        let window = match self.windows.get_mut(inventory) {
            Some(w) => w,
            None => self.windows.entry(intern(inventory)).or_default(),
        };
        // The unknown group never counts (all its requests are refused): its count is 0.
        let active = window.record(a, refused);
        let active_clients = u32::try_from(active).unwrap_or(u32::MAX);

        self.dedup.insert(DedupEntry {
            request_id: a.request_id,
            time_ms: a.time_ms,
            active_clients,
        });
        ActivationResult {
            active_clients,
            duplicate: false,
        }
    }

    /// Takes clients whose 30 days are over out of the count and drops records past the
    /// inventory retention (in every group, so idle groups do not keep stale inventory), and
    /// forgets request ids past their retention.
    fn expire(&mut self, now_ms: u64) {
        self.dedup.prune(now_ms, self.config.dedup_retention_ms);
        let retention = self.config.inventory_retention_ms;
        self.windows.retain(|_, window| {
            window.prune(now_ms, retention);
            !window.is_empty()
        });
    }

    fn apply_set_epid(&mut self, group: &str, epid: &str, time_ms: u64) -> CommandResult {
        let rec = self
            .epids
            .entry(group.to_owned())
            .or_insert_with(|| EpidRecord {
                count_group: group.to_owned(),
                epid: epid.to_owned(),
                set_ms: time_ms,
            });
        CommandResult::Epid(rec.epid.clone())
    }

    /// Global statistics (all requests, including those of unknown products).
    pub fn stats(&self) -> &Stats {
        &self.global
    }

    /// Statistics of one count group, if it ever received a request.
    pub fn group_stats(&self, group: &str) -> Option<&Stats> {
        self.group_stats.get(group)
    }

    /// Count groups seen in requests or ePIDs, sorted.
    pub fn groups(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .group_stats
            .keys()
            .map(String::as_str)
            .chain(
                self.windows
                    .keys()
                    .map(|g| &**g)
                    .filter(|g| *g != UNKNOWN_GROUP),
            )
            .chain(self.epids.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Distinct CMIDs of `group` still counting at `now_ms`, without pruning (for status views
    /// between commands). Uncapped.
    pub fn active_clients_at(&self, group: &str, now_ms: u64) -> u32 {
        let n = self.windows.get(group).map_or(0, |w| w.active_at(now_ms));
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Inventory entries passing `filter`, ordered by count group then CMID.
    ///
    /// Entries expired since the last command are still listed; use
    /// [`ClientFilter::seen_since_ms`] to hide them.
    pub fn clients(&self, filter: ClientFilter) -> impl Iterator<Item = ClientRecord<'_>> + '_ {
        let group = filter.count_group.clone();
        self.windows
            .iter()
            .filter(move |(g, _)| group.as_deref().is_none_or(|want| want == &***g))
            .flat_map(|(g, w)| {
                w.iter()
                    .map(move |(cmid, c, counted)| c.view(g, *cmid, counted))
            })
            .filter(move |r| filter.matches(r))
    }

    /// The inventory entry of one client in one count group.
    pub fn client(&self, group: &str, cmid: &Uuid) -> Option<ClientRecord<'_>> {
        let (name, window) = self.windows.get_key_value(group)?;
        window
            .get(cmid)
            .map(|(c, counted)| c.view(name, *cmid, counted))
    }

    /// Number of clients counted over all groups (as of the last pruning).
    pub fn client_count_total(&self) -> usize {
        self.windows.values().map(ClientWindow::len).sum()
    }

    /// Number of inventory records over all groups, counted or not (as of the last pruning).
    pub fn inventory_len(&self) -> usize {
        self.windows.values().map(ClientWindow::inventory_len).sum()
    }

    /// Number of inventory records kept beyond the count over all groups.
    pub fn retired_len(&self) -> usize {
        self.windows.values().map(ClientWindow::retired_len).sum()
    }

    /// The ePID of a count group, once set.
    pub fn epid(&self, group: &str) -> Option<&str> {
        self.epids.get(group).map(|r| r.epid.as_str())
    }

    /// The host identity, once set.
    pub fn host_identity(&self) -> Option<&HostIdentity> {
        self.identity.as_ref()
    }

    /// All ePID records, sorted by count group.
    pub fn epids(&self) -> impl Iterator<Item = &EpidRecord> {
        self.epids.values()
    }

    /// The remembered result of a request id, if still held (expiry happens when later
    /// commands are applied).
    pub fn request(&self, request_id: &Uuid) -> Option<DedupEntry> {
        self.dedup.get(request_id)
    }

    /// Number of request ids currently remembered for deduplication.
    pub fn request_count(&self) -> usize {
        self.dedup.len()
    }

    /// Machines per lifecycle state and the renewal-age distribution of every inventory group
    /// at `now_ms`, ordered by group. Walks every record: call it off the apply path on a
    /// clone (clones are O(1)).
    pub fn lifecycle_summary(
        &self,
        now_ms: u64,
        policy: &LifecyclePolicy,
    ) -> Vec<(String, GroupLifecycle)> {
        self.windows
            .iter()
            .map(|(g, w)| {
                let mut summary = GroupLifecycle::default();
                for (cmid, c, counted) in w.iter() {
                    summary.add(&c.view(g, *cmid, counted), now_ms, policy);
                }
                (g.to_string(), summary)
            })
            .collect()
    }
}
