//! [`HostState`]: the whole deterministic state of a KMS host and [`HostState::apply`].
//!
//! Owns the order of operations when a command is applied and the read-only views over the
//! state. It is pure: no clock, no I/O, no randomness, only ordered collections, so replicas
//! applying the same commands produce equal states (and equal serialized snapshots).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::changes::{Changes, ClientKey};
use crate::command::{Activation, ActivationResult, Command, CommandResult, Outcome};
use crate::dedup::{DedupEntry, DedupLog, DEFAULT_DEDUP_RETENTION_MS};
use crate::epid::EpidRecord;
use crate::stats::Stats;
use crate::window::{ClientFilter, ClientRecord, ClientWindow};

/// Parameters that influence how commands are applied; part of the state so that every replica
/// (and every snapshot) uses the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateConfig {
    /// How long an applied request id is remembered for deduplication (ms of command time).
    pub dedup_retention_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dedup_retention_ms: DEFAULT_DEDUP_RETENTION_MS,
        }
    }
}

/// The deterministic state of a KMS host: statistics, per-group client windows with inventory,
/// ePIDs and the deduplication memory. Serializable as a whole (the Raft snapshot).
///
/// Invariant: a count group has a client window only while it holds at least one client, so
/// equal histories give structurally equal values regardless of how they were rebuilt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    config: StateConfig,
    global: Stats,
    group_stats: BTreeMap<String, Stats>,
    windows: BTreeMap<String, ClientWindow>,
    epids: BTreeMap<String, EpidRecord>,
    dedup: DedupLog,
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

    /// Applies one command deterministically and reports its result and the keys it touched.
    ///
    /// Never panics, whatever the command times (they may go backwards between commands).
    pub fn apply(&mut self, cmd: &Command) -> (CommandResult, Changes) {
        match cmd {
            Command::Activation(a) => {
                let (r, ch) = self.apply_activation(a);
                (CommandResult::Activation(r), ch)
            }
            Command::SetEpid {
                count_group,
                epid,
                time_ms,
            } => self.apply_set_epid(count_group, epid, *time_ms),
        }
    }

    fn apply_activation(&mut self, a: &Activation) -> (ActivationResult, Changes) {
        let retention = self.config.dedup_retention_ms;
        if let Some(active_clients) = self.dedup.lookup(&a.request_id, a.time_ms, retention) {
            let dup = ActivationResult {
                active_clients,
                duplicate: true,
            };
            return (dup, Changes::default());
        }
        let mut ch = Changes::default();
        self.expire(a.time_ms, &mut ch);

        self.global.record(&a.outcome, a.license_state);
        ch.global_stats = true;
        if let Some(group) = &a.count_group {
            self.group_stats
                .entry(group.clone())
                .or_default()
                .record(&a.outcome, a.license_state);
            ch.group_stats.insert(group.clone());
        }

        let active = match (&a.count_group, a.outcome) {
            (Some(group), Outcome::Answered) => {
                let window = self.windows.entry(group.clone()).or_default();
                window.observe(group, a);
                ch.client_upserted(ClientKey {
                    count_group: group.clone(),
                    cmid: a.cmid,
                });
                window.len()
            }
            (Some(group), Outcome::Refused { .. }) => {
                self.windows.get(group).map_or(0, ClientWindow::len)
            }
            (None, _) => 0,
        };
        let active_clients = u32::try_from(active).unwrap_or(u32::MAX);

        self.dedup.insert(DedupEntry {
            request_id: a.request_id,
            time_ms: a.time_ms,
            active_clients,
        });
        ch.request_added(a.request_id);
        let result = ActivationResult {
            active_clients,
            duplicate: false,
        };
        (result, ch)
    }

    /// Drops clients whose 30 days are over (in every group, so idle groups do not keep stale
    /// inventory) and request ids past their retention.
    fn expire(&mut self, now_ms: u64, ch: &mut Changes) {
        for id in self.dedup.prune(now_ms, self.config.dedup_retention_ms) {
            ch.request_removed(id);
        }
        self.windows.retain(|group, window| {
            for cmid in window.prune(now_ms) {
                ch.client_removed(ClientKey {
                    count_group: group.clone(),
                    cmid,
                });
            }
            !window.is_empty()
        });
    }

    fn apply_set_epid(
        &mut self,
        group: &str,
        epid: &str,
        time_ms: u64,
    ) -> (CommandResult, Changes) {
        let mut ch = Changes::default();
        let rec = self.epids.entry(group.to_owned()).or_insert_with(|| {
            ch.epids_set.insert(group.to_owned());
            EpidRecord {
                count_group: group.to_owned(),
                epid: epid.to_owned(),
                set_ms: time_ms,
            }
        });
        (CommandResult::Epid(rec.epid.clone()), ch)
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
            .chain(self.windows.keys())
            .chain(self.epids.keys())
            .map(String::as_str)
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
    pub fn clients(&self, filter: ClientFilter) -> impl Iterator<Item = &ClientRecord> + '_ {
        let group = filter.count_group.clone();
        self.windows
            .iter()
            .filter(move |(g, _)| group.as_deref().is_none_or(|want| want == g.as_str()))
            .flat_map(|(_, w)| w.iter())
            .filter(move |r| filter.matches(r))
    }

    /// The inventory entry of one client in one count group.
    pub fn client(&self, group: &str, cmid: &Uuid) -> Option<&ClientRecord> {
        self.windows.get(group)?.get(cmid)
    }

    /// Number of inventory entries over all groups (as of the last pruning).
    pub fn client_count_total(&self) -> usize {
        self.windows.values().map(ClientWindow::len).sum()
    }

    /// The ePID of a count group, once set.
    pub fn epid(&self, group: &str) -> Option<&str> {
        self.epids.get(group).map(|r| r.epid.as_str())
    }

    /// All ePID records, sorted by count group.
    pub fn epids(&self) -> impl Iterator<Item = &EpidRecord> {
        self.epids.values()
    }

    /// The remembered result of a request id, if still held (expiry happens when later
    /// commands are applied).
    pub fn request(&self, request_id: &Uuid) -> Option<&DedupEntry> {
        self.dedup.get(request_id)
    }

    /// Number of request ids currently remembered for deduplication.
    pub fn request_count(&self) -> usize {
        self.dedup.len()
    }

    // ---- crate-internal access for the store (loading and writing keys) ----

    pub(crate) fn group_stats_iter(&self) -> impl Iterator<Item = (&String, &Stats)> {
        self.group_stats.iter()
    }

    pub(crate) fn requests_iter(&self) -> impl Iterator<Item = &DedupEntry> {
        self.dedup.iter()
    }

    pub(crate) fn set_config(&mut self, config: StateConfig) {
        self.config = config;
    }

    pub(crate) fn restore_global_stats(&mut self, stats: Stats) {
        self.global = stats;
    }

    pub(crate) fn restore_group_stats(&mut self, group: String, stats: Stats) {
        self.group_stats.insert(group, stats);
    }

    pub(crate) fn restore_client(&mut self, record: ClientRecord) {
        self.windows
            .entry(record.count_group.to_string())
            .or_default()
            .insert_record(record);
    }

    pub(crate) fn restore_epid(&mut self, record: EpidRecord) {
        self.epids.insert(record.count_group.clone(), record);
    }

    pub(crate) fn restore_request(&mut self, entry: DedupEntry) {
        self.dedup.insert(entry);
    }
}
