//! The 30-day client window of one count group, and the inventory kept with it.
//!
//! Owns the rule a Microsoft host applies: a count group counts the distinct client machine ids
//! (CMIDs) whose last request is less than 30 days old. A CMID last seen at `t` still counts at
//! `t + 30d - 1ms` and no longer at `t + 30d`. An index ordered by `(last_seen_ms, cmid)` makes
//! pruning cost proportional to the number of expired entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use kms_protocol::LicenseState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::command::Activation;

/// How long a CMID keeps counting after its last request: 30 days in milliseconds.
pub const CLIENT_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

/// Inventory entry of one client machine in one count group (what `kmsctl clients` lists).
///
/// Descriptive fields hold the most recent report (by command time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Count group the client was counted in.
    #[serde(deserialize_with = "de_interned")]
    pub count_group: Arc<str>,
    /// Client machine id.
    pub cmid: Uuid,
    /// Machine name last reported.
    pub machine_name: String,
    /// SKU (edition activation id) last reported.
    pub sku_id: Uuid,
    /// Catalog product group last reported, if the catalog knew it.
    #[serde(deserialize_with = "de_interned_opt")]
    pub product_group: Option<Arc<str>>,
    /// kmsCountedId last reported.
    pub kms_counted_id: Uuid,
    /// applicationId last reported.
    pub application_id: Uuid,
    /// Whether the client said it is a VM.
    pub client_vm: bool,
    /// License state last reported.
    pub license_state: LicenseState,
    /// Grace minutes last reported.
    pub grace_minutes: u32,
    /// requiredClientCount last reported.
    pub required_count: u32,
    /// KMS protocol major version last used.
    pub protocol_major: u16,
    /// Earliest request time seen since the client (re-)entered the window (unix ms).
    pub first_seen_ms: u64,
    /// Latest request time seen (unix ms); drives expiry.
    pub last_seen_ms: u64,
    /// Answered requests counted since the client (re-)entered the window.
    pub requests: u64,
}

impl ClientRecord {
    /// Whether this client still counts at `now_ms` (last seen less than 30 days before).
    pub fn is_active_at(&self, now_ms: u64) -> bool {
        self.last_seen_ms.saturating_add(CLIENT_WINDOW_MS) > now_ms
    }

    fn new(group: &str, a: &Activation) -> Self {
        ClientRecord {
            count_group: intern(group),
            cmid: a.cmid,
            machine_name: a.machine_name.clone(),
            sku_id: a.sku_id,
            product_group: a.product_group.as_deref().map(intern),
            kms_counted_id: a.kms_counted_id,
            application_id: a.application_id,
            client_vm: a.client_vm,
            license_state: a.license_state,
            grace_minutes: a.grace_minutes,
            required_count: a.required_count,
            protocol_major: a.protocol_major,
            first_seen_ms: a.time_ms,
            last_seen_ms: a.time_ms,
            requests: 1,
        }
    }

    /// Folds in a later request of the same client. Tolerates time going backwards.
    fn observe(&mut self, a: &Activation) {
        if a.time_ms >= self.last_seen_ms {
            self.machine_name.clone_from(&a.machine_name);
            self.sku_id = a.sku_id;
            self.product_group = a.product_group.as_deref().map(intern);
            self.kms_counted_id = a.kms_counted_id;
            self.application_id = a.application_id;
            self.client_vm = a.client_vm;
            self.license_state = a.license_state;
            self.grace_minutes = a.grace_minutes;
            self.required_count = a.required_count;
            self.protocol_major = a.protocol_major;
            self.last_seen_ms = a.time_ms;
        }
        self.first_seen_ms = self.first_seen_ms.min(a.time_ms);
        self.requests = self.requests.saturating_add(1);
    }
}

/// Shares one allocation per distinct group name among all records (a few dozen names
/// for any number of clients), which keeps the per-client memory small. Interning does
/// not change any value, so applying stays deterministic.
pub fn intern(name: &str) -> Arc<str> {
    static NAMES: OnceLock<Mutex<BTreeSet<Arc<str>>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(n.clone());
    n
}

fn de_interned<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(intern(&s))
}

fn de_interned_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.as_deref().map(intern))
}

/// Selects inventory entries for [`HostState::clients`](crate::HostState::clients).
///
/// Every `Some` field must match; the default matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFilter {
    /// Only this count group.
    pub count_group: Option<String>,
    /// Only this catalog product group.
    pub product_group: Option<String>,
    /// Only clients last seen at or after this time (unix ms), e.g. `now - 30d` for active ones.
    pub seen_since_ms: Option<u64>,
}

impl ClientFilter {
    /// Whether `record` passes the filter.
    pub fn matches(&self, record: &ClientRecord) -> bool {
        self.count_group
            .as_deref()
            .is_none_or(|g| g == &*record.count_group)
            && self
                .product_group
                .as_deref()
                .is_none_or(|p| record.product_group.as_deref() == Some(p))
            && self.seen_since_ms.is_none_or(|t| record.last_seen_ms >= t)
    }
}

/// Clients of one count group with their expiry index.
///
/// Serialized as the list of records; the index is rebuilt on deserialization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<ClientRecord>", into = "Vec<ClientRecord>")]
pub(crate) struct ClientWindow {
    clients: BTreeMap<Uuid, ClientRecord>,
    by_last_seen: BTreeSet<(u64, Uuid)>,
}

impl From<Vec<ClientRecord>> for ClientWindow {
    fn from(records: Vec<ClientRecord>) -> Self {
        let mut w = ClientWindow::default();
        for r in records {
            w.insert_record(r);
        }
        w
    }
}

impl From<ClientWindow> for Vec<ClientRecord> {
    fn from(w: ClientWindow) -> Self {
        w.clients.into_values().collect()
    }
}

impl ClientWindow {
    /// Number of clients held (all of them active as of the last pruning).
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub(crate) fn get(&self, cmid: &Uuid) -> Option<&ClientRecord> {
        self.clients.get(cmid)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ClientRecord> {
        self.clients.values()
    }

    /// Inserts or replaces a whole record (loading from disk or a snapshot).
    pub(crate) fn insert_record(&mut self, record: ClientRecord) {
        self.by_last_seen.insert((record.last_seen_ms, record.cmid));
        if let Some(old) = self.clients.insert(record.cmid, record) {
            let new_last = self.clients[&old.cmid].last_seen_ms;
            if old.last_seen_ms != new_last {
                self.by_last_seen.remove(&(old.last_seen_ms, old.cmid));
            }
        }
    }

    /// Records an answered request of `a.cmid` (new client or re-request).
    pub(crate) fn observe(&mut self, group: &str, a: &Activation) {
        match self.clients.get_mut(&a.cmid) {
            Some(rec) => {
                let old_last = rec.last_seen_ms;
                rec.observe(a);
                if rec.last_seen_ms != old_last {
                    self.by_last_seen.remove(&(old_last, a.cmid));
                    self.by_last_seen.insert((rec.last_seen_ms, a.cmid));
                }
            }
            None => {
                self.clients.insert(a.cmid, ClientRecord::new(group, a));
                self.by_last_seen.insert((a.time_ms, a.cmid));
            }
        }
    }

    /// Removes clients last seen 30 days or more before `now_ms`; returns their CMIDs.
    pub(crate) fn prune(&mut self, now_ms: u64) -> Vec<Uuid> {
        let Some(cutoff) = now_ms.checked_sub(CLIENT_WINDOW_MS) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        while let Some(&(last_seen, cmid)) = self.by_last_seen.first() {
            if last_seen > cutoff {
                break;
            }
            self.by_last_seen.pop_first();
            self.clients.remove(&cmid);
            removed.push(cmid);
        }
        removed
    }

    /// Clients that count at `now_ms`, without pruning.
    pub(crate) fn active_at(&self, now_ms: u64) -> usize {
        let Some(cutoff) = now_ms.checked_sub(CLIENT_WINDOW_MS) else {
            return self.len();
        };
        // Expired: last_seen <= cutoff, i.e. strictly below (cutoff + 1, nil).
        let expired = self.by_last_seen.range(..(cutoff + 1, Uuid::nil())).count();
        self.len() - expired
    }

    #[cfg(test)]
    fn index_consistent(&self) -> bool {
        self.by_last_seen.len() == self.clients.len()
            && self
                .by_last_seen
                .iter()
                .all(|(t, id)| self.clients.get(id).is_some_and(|r| r.last_seen_ms == *t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Outcome;

    fn act(cmid: u128, time_ms: u64) -> Activation {
        Activation {
            request_id: Uuid::from_u128(time_ms as u128),
            time_ms,
            count_group: Some("windows".into()),
            product_group: None,
            kms_counted_id: Uuid::nil(),
            application_id: Uuid::nil(),
            sku_id: Uuid::nil(),
            cmid: Uuid::from_u128(cmid),
            machine_name: format!("pc{cmid}"),
            client_vm: false,
            license_state: LicenseState::Licensed,
            grace_minutes: 0,
            required_count: 25,
            protocol_major: 6,
            outcome: Outcome::Answered,
        }
    }

    #[test]
    fn boundary_is_exact() {
        let mut w = ClientWindow::default();
        let t = CLIENT_WINDOW_MS + 5;
        w.observe("windows", &act(1, t));
        assert_eq!(w.active_at(t + CLIENT_WINDOW_MS - 1), 1);
        assert_eq!(w.active_at(t + CLIENT_WINDOW_MS), 0);
        assert!(w.prune(t + CLIENT_WINDOW_MS - 1).is_empty());
        assert_eq!(w.prune(t + CLIENT_WINDOW_MS), vec![Uuid::from_u128(1)]);
        assert!(w.is_empty() && w.index_consistent());
    }

    #[test]
    fn time_going_backwards_keeps_latest_report() {
        let mut w = ClientWindow::default();
        w.observe("windows", &act(1, 1_000));
        let mut older = act(1, 400);
        older.machine_name = "old-name".into();
        w.observe("windows", &older);
        let r = w.get(&Uuid::from_u128(1)).unwrap();
        assert_eq!(
            (r.first_seen_ms, r.last_seen_ms, r.requests),
            (400, 1_000, 2)
        );
        assert_eq!(r.machine_name, "pc1");
        assert!(w.index_consistent());
        // Early times never underflow.
        assert_eq!(w.active_at(0), 1);
        assert!(w.prune(0).is_empty());
    }

    #[test]
    fn insert_record_replaces_index_entry() {
        let mut w = ClientWindow::default();
        w.observe("windows", &act(1, 10));
        let mut r = w.get(&Uuid::from_u128(1)).unwrap().clone();
        r.last_seen_ms = 20;
        w.insert_record(r.clone());
        w.insert_record(r);
        assert!(w.index_consistent());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn filter_matches_fields() {
        let mut a = act(1, 100);
        a.product_group = Some("windows-10-11".into());
        let r = ClientRecord::new("windows", &a);
        assert!(ClientFilter::default().matches(&r));
        let f = |g: Option<&str>, p: Option<&str>, s: Option<u64>| ClientFilter {
            count_group: g.map(Into::into),
            product_group: p.map(Into::into),
            seen_since_ms: s,
        };
        assert!(f(Some("windows"), Some("windows-10-11"), Some(100)).matches(&r));
        assert!(!f(Some("office"), None, None).matches(&r));
        assert!(!f(None, Some("office-2016"), None).matches(&r));
        assert!(!f(None, None, Some(101)).matches(&r));
    }
}
