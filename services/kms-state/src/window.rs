//! The 30-day client window of one count group, and the inventory kept with it.
//!
//! Owns the rule a Microsoft host applies: a count group counts the distinct client machine ids
//! (CMIDs) whose last request is less than 30 days old. A CMID last seen at `t` still counts at
//! `t + 30d - 1ms` and no longer at `t + 30d`. An index ordered by `(last_seen_ms, cmid)` makes
//! pruning cost proportional to the number of expired entries.
//!
//! Storage is compact and structurally shared: both maps are persistent B+trees
//! ([`imbl::OrdMap`]), so cloning a window is O(1) and a clone shares every node until one side
//! changes it. A stored entry ([`Client`]) is 56 bytes plus its 16-byte CMID key; the count
//! group lives once in the window, the shared descriptive fields in a [`Profile`]. Readers get
//! a borrowed [`ClientRecord`] view.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use kms_protocol::LicenseState;
use uuid::Uuid;

use crate::command::Activation;
use crate::compact::{intern_profile, MachineName, Profile};

/// How long a CMID keeps counting after its last request: 30 days in milliseconds.
pub const CLIENT_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

/// Inventory entry of one client machine in one count group (what `kmsctl clients` lists): a
/// view borrowed from the state.
///
/// Descriptive fields hold the most recent report (by command time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRecord<'a> {
    /// Count group the client was counted in.
    pub count_group: &'a str,
    /// Client machine id.
    pub cmid: Uuid,
    /// Machine name last reported.
    pub machine_name: &'a str,
    /// SKU (edition activation id) last reported.
    pub sku_id: Uuid,
    /// Catalog product group last reported, if the catalog knew it.
    pub product_group: Option<&'a str>,
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
    /// Answered requests counted since the client (re-)entered the window (saturates at
    /// `u32::MAX`).
    pub requests: u64,
}

impl ClientRecord<'_> {
    /// Whether this client still counts at `now_ms` (last seen less than 30 days before).
    pub fn is_active_at(&self, now_ms: u64) -> bool {
        self.last_seen_ms.saturating_add(CLIENT_WINDOW_MS) > now_ms
    }
}

/// What the state stores per client (the CMID is the map key, the count group the window's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    pub(crate) first_seen_ms: u64,
    pub(crate) last_seen_ms: u64,
    pub(crate) profile: Arc<Profile>,
    pub(crate) machine_name: MachineName,
    pub(crate) grace_minutes: u32,
    pub(crate) requests: u32,
}

impl Client {
    fn new(a: &Activation) -> Self {
        Client {
            first_seen_ms: a.time_ms,
            last_seen_ms: a.time_ms,
            profile: intern_profile(Profile::of(a)),
            machine_name: MachineName::new(&a.machine_name),
            grace_minutes: a.grace_minutes,
            requests: 1,
        }
    }

    /// Folds in a later request of the same client. Tolerates time going backwards.
    fn observe(&mut self, a: &Activation) {
        if a.time_ms >= self.last_seen_ms {
            if self.machine_name.as_str() != a.machine_name {
                self.machine_name = MachineName::new(&a.machine_name);
            }
            if !self.profile.matches(a) {
                self.profile = intern_profile(Profile::of(a));
            }
            self.grace_minutes = a.grace_minutes;
            self.last_seen_ms = a.time_ms;
        }
        self.first_seen_ms = self.first_seen_ms.min(a.time_ms);
        self.requests = self.requests.saturating_add(1);
    }

    pub(crate) fn view<'a>(&'a self, count_group: &'a str, cmid: Uuid) -> ClientRecord<'a> {
        let p = &*self.profile;
        ClientRecord {
            count_group,
            cmid,
            machine_name: self.machine_name.as_str(),
            sku_id: p.sku_id,
            product_group: p.product_group.as_deref(),
            kms_counted_id: p.kms_counted_id,
            application_id: p.application_id,
            client_vm: p.client_vm,
            license_state: p.license_state,
            grace_minutes: self.grace_minutes,
            required_count: p.required_count,
            protocol_major: p.protocol_major,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            requests: u64::from(self.requests),
        }
    }
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
    /// Only this client machine id.
    pub cmid: Option<Uuid>,
    /// Only machines last reporting this name (compared ignoring ASCII case, as Windows
    /// names are).
    pub machine_name: Option<String>,
}

impl ClientFilter {
    /// Whether `record` passes the filter.
    pub fn matches(&self, record: &ClientRecord<'_>) -> bool {
        self.count_group
            .as_deref()
            .is_none_or(|g| g == record.count_group)
            && self
                .product_group
                .as_deref()
                .is_none_or(|p| record.product_group == Some(p))
            && self.seen_since_ms.is_none_or(|t| record.last_seen_ms >= t)
            && self.cmid.is_none_or(|c| c == record.cmid)
            && self
                .machine_name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(record.machine_name))
    }
}

/// Clients of one count group with their expiry index.
///
/// Invariant: `by_last_seen` holds exactly `(c.last_seen_ms, cmid)` for every `(cmid, c)` of
/// `clients`, so equality only compares `clients`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientWindow {
    clients: OrdMap<Uuid, Client>,
    by_last_seen: OrdSet<(u64, Uuid)>,
}

impl PartialEq for ClientWindow {
    fn eq(&self, other: &Self) -> bool {
        self.clients == other.clients
    }
}

impl Eq for ClientWindow {}

impl ClientWindow {
    /// Number of clients held (all of them active as of the last pruning).
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    pub(crate) fn get(&self, cmid: &Uuid) -> Option<&Client> {
        self.clients.get(cmid)
    }

    /// Clients by CMID (the listing and snapshot order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Uuid, &Client)> {
        self.clients.iter()
    }

    /// Inserts a whole record (reading a snapshot); returns false when it replaced a record of
    /// the same CMID.
    pub(crate) fn insert(&mut self, cmid: Uuid, client: Client) -> bool {
        let last_seen_ms = client.last_seen_ms;
        let replaced = self.clients.insert(cmid, client);
        if let Some(old) = &replaced {
            self.by_last_seen.remove(&(old.last_seen_ms, cmid));
        }
        self.by_last_seen.insert((last_seen_ms, cmid));
        replaced.is_none()
    }

    /// Records an answered request of `a.cmid` (new client or re-request).
    pub(crate) fn observe(&mut self, a: &Activation) {
        match self.clients.get_mut(&a.cmid) {
            Some(rec) => {
                let old_last = rec.last_seen_ms;
                rec.observe(a);
                let new_last = rec.last_seen_ms;
                if new_last != old_last {
                    self.by_last_seen.remove(&(old_last, a.cmid));
                    self.by_last_seen.insert((new_last, a.cmid));
                }
            }
            None => {
                self.clients.insert(a.cmid, Client::new(a));
                self.by_last_seen.insert((a.time_ms, a.cmid));
            }
        }
    }

    /// Removes clients last seen 30 days or more before `now_ms`; returns how many.
    pub(crate) fn prune(&mut self, now_ms: u64) -> usize {
        let Some(cutoff) = now_ms.checked_sub(CLIENT_WINDOW_MS) else {
            return 0;
        };
        let mut removed = 0;
        while let Some(&(last_seen, cmid)) = self.by_last_seen.get_min() {
            if last_seen > cutoff {
                break;
            }
            self.by_last_seen.remove_min();
            self.clients.remove(&cmid);
            removed += 1;
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
        w.observe(&act(1, t));
        assert_eq!(w.active_at(t + CLIENT_WINDOW_MS - 1), 1);
        assert_eq!(w.active_at(t + CLIENT_WINDOW_MS), 0);
        assert_eq!(w.prune(t + CLIENT_WINDOW_MS - 1), 0);
        assert_eq!(w.prune(t + CLIENT_WINDOW_MS), 1);
        assert!(w.is_empty() && w.index_consistent());
    }

    #[test]
    fn time_going_backwards_keeps_latest_report() {
        let mut w = ClientWindow::default();
        w.observe(&act(1, 1_000));
        let mut older = act(1, 400);
        older.machine_name = "old-name".into();
        older.license_state = LicenseState::Notification;
        w.observe(&older);
        let r = w
            .get(&Uuid::from_u128(1))
            .unwrap()
            .view("windows", Uuid::from_u128(1));
        assert_eq!(
            (r.first_seen_ms, r.last_seen_ms, r.requests),
            (400, 1_000, 2)
        );
        assert_eq!(r.machine_name, "pc1");
        assert_eq!(r.license_state, LicenseState::Licensed);
        assert!(w.index_consistent());
        // Early times never underflow.
        assert_eq!(w.active_at(0), 1);
        assert_eq!(w.prune(0), 0);
    }

    #[test]
    fn later_report_replaces_descriptive_fields() {
        let mut w = ClientWindow::default();
        w.observe(&act(1, 10));
        let mut later = act(1, 20);
        later.machine_name = "a-much-longer-machine-name.campus.example".into();
        later.license_state = LicenseState::Other(1234);
        later.product_group = Some("windows-server".into());
        later.client_vm = true;
        w.observe(&later);
        let r = w
            .get(&Uuid::from_u128(1))
            .unwrap()
            .view("windows", Uuid::from_u128(1));
        assert_eq!(r.machine_name, later.machine_name);
        assert_eq!(r.license_state, LicenseState::Other(1234));
        assert_eq!(r.product_group, Some("windows-server"));
        assert!(r.client_vm);
        assert_eq!((r.first_seen_ms, r.last_seen_ms, r.requests), (10, 20, 2));
        assert!(w.index_consistent());
    }

    #[test]
    fn clone_is_shared_and_independent() {
        let mut w = ClientWindow::default();
        for i in 0..1_000 {
            w.observe(&act(i, 100 + i as u64));
        }
        let snapshot = w.clone();
        w.observe(&act(5, 5_000));
        w.observe(&act(5_000, 5_001));
        assert_eq!(snapshot.len(), 1_000);
        assert_eq!(snapshot.get(&Uuid::from_u128(5)).unwrap().last_seen_ms, 105);
        assert_eq!(w.get(&Uuid::from_u128(5)).unwrap().last_seen_ms, 5_000);
        assert!(w.index_consistent() && snapshot.index_consistent());
        assert_ne!(w, snapshot);
    }

    #[test]
    fn insert_replaces_record_and_index_entry() {
        let mut w = ClientWindow::default();
        let c = Client::new(&act(1, 10));
        assert!(w.insert(Uuid::from_u128(1), c.clone()));
        let later = Client::new(&act(1, 20));
        assert!(!w.insert(Uuid::from_u128(1), later));
        assert!(w.index_consistent());
        assert_eq!(w.len(), 1);
        assert_eq!(w.get(&Uuid::from_u128(1)).unwrap().last_seen_ms, 20);
    }

    #[test]
    fn filter_matches_fields() {
        let mut a = act(1, 100);
        a.product_group = Some("windows-10-11".into());
        let c = Client::new(&a);
        let r = c.view("windows", a.cmid);
        assert!(ClientFilter::default().matches(&r));
        let f = |g: Option<&str>, p: Option<&str>, s: Option<u64>| ClientFilter {
            count_group: g.map(Into::into),
            product_group: p.map(Into::into),
            seen_since_ms: s,
            ..Default::default()
        };
        let by_id = |cmid: Uuid| ClientFilter {
            cmid: Some(cmid),
            ..Default::default()
        };
        assert!(by_id(a.cmid).matches(&r));
        assert!(!by_id(Uuid::from_u128(999)).matches(&r));
        let by_name = |n: &str| ClientFilter {
            machine_name: Some(n.into()),
            ..Default::default()
        };
        assert!(by_name(&a.machine_name.to_ascii_lowercase()).matches(&r));
        assert!(by_name(&a.machine_name.to_ascii_uppercase()).matches(&r));
        assert!(!by_name("another-pc").matches(&r));
        assert!(f(Some("windows"), Some("windows-10-11"), Some(100)).matches(&r));
        assert!(!f(Some("office"), None, None).matches(&r));
        assert!(!f(None, Some("office-2016"), None).matches(&r));
        assert!(!f(None, None, Some(101)).matches(&r));
    }

    #[test]
    fn stored_entry_is_compact() {
        assert_eq!(std::mem::size_of::<Client>(), 56);
    }
}
