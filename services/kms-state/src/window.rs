//! The client inventory of one count group: the 30-day count window and the records kept
//! beyond it for the activation lifecycle.
//!
//! Owns two rules:
//! - **The count** a Microsoft host gives: the distinct client machine ids (CMIDs) whose last
//!   answered request is less than 30 days old. A CMID last counted at `t` still counts at
//!   `t + 30d - 1ms` and no longer at `t + 30d`.
//! - **The inventory retention**: a record stays listed (with its lifecycle fields) until its
//!   last request of any outcome is older than the retention (200 days by default), so a
//!   machine that stopped renewing is still known when its activation runs out at 180 days.
//!
//! A record lives in exactly one of two maps: `counted` (answered within 30 days; its size is
//! the count, ordered by last counted request for pruning) or `retired` (fell out of the count,
//! or was only ever refused; ordered by last request for the retention). Refused requests
//! update a record without counting it. Both maps are persistent B+trees ([`imbl::OrdMap`]),
//! so cloning a window is O(1) and a clone shares every node until one side changes it. A
//! stored entry ([`Client`]) is 104 bytes plus its 16-byte CMID key; the count group lives once
//! in the window, the shared descriptive fields in a [`Profile`]. Readers get a borrowed
//! [`ClientRecord`] view.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use kms_protocol::host::HRESULT_COUNT_TOO_LOW;
use kms_protocol::LicenseState;
use uuid::Uuid;

use crate::bulk::fill_order;
use crate::command::Activation;
use crate::compact::{intern_profile, MachineName, Profile};
use crate::lifecycle::{lifecycle, Lifecycle, LifecyclePolicy, MachineTimes};

/// How long a CMID keeps counting after its last answered request: 30 days in milliseconds.
pub const CLIENT_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

/// How long a record stays in the inventory after its last request: 200 days in milliseconds
/// (longer than an activation's 180 days, so a machine that stopped renewing is still listed
/// when it loses activation).
pub const DEFAULT_INVENTORY_RETENTION_MS: u64 = 200 * 24 * 3600 * 1000;

/// Previous machine names kept per record (most recent first).
pub const NAME_HISTORY: usize = 3;

/// The last failure of a machine: when, and the HRESULT it got (for a count below the
/// client's minimum, 0xC004F038, which the client reports itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Command time of the failed request (unix ms).
    pub time_ms: u64,
    /// The HRESULT: the refusal the host sent, or 0xC004F038 for a count below the minimum.
    pub hresult: u32,
}

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
    /// Names reported before the current one, most recent first (at most [`NAME_HISTORY`]).
    pub previous_names: PreviousNames<'a>,
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
    /// Whether the client is in the count (answered within 30 days, as of the last pruning).
    pub counted: bool,
    /// Earliest request time seen since the client entered the inventory (unix ms).
    pub first_seen_ms: u64,
    /// Latest answered (counted) request (unix ms); 0 when it was only ever refused. Drives
    /// the count.
    pub last_seen_ms: u64,
    /// Latest request of any outcome (unix ms). Drives the inventory retention.
    pub last_request_ms: u64,
    /// Latest request answered with a count at or above the client's minimum: the start of
    /// its current 180-day activation.
    pub last_success_ms: Option<u64>,
    /// Latest failure (refused, or answered below the minimum).
    pub last_failure: Option<Failure>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Raft node id of the node that received the latest request.
    pub answered_by: u64,
    /// Requests seen since the client entered the inventory (saturates at `u32::MAX`).
    pub requests: u64,
}

impl ClientRecord<'_> {
    /// Whether this client still counts at `now_ms` (counted less than 30 days before).
    pub fn is_active_at(&self, now_ms: u64) -> bool {
        self.counted && self.last_seen_ms.saturating_add(CLIENT_WINDOW_MS) > now_ms
    }

    /// The times its lifecycle is derived from.
    pub fn times(&self) -> MachineTimes {
        MachineTimes {
            last_success_ms: self.last_success_ms,
            last_request_ms: self.last_request_ms,
            last_request_failed: self.consecutive_failures > 0,
        }
    }

    /// Where this machine is in its activation lifecycle at `now_ms`.
    pub fn lifecycle(&self, now_ms: u64, policy: &LifecyclePolicy) -> Lifecycle {
        lifecycle(&self.times(), now_ms, policy)
    }
}

/// The names a machine reported before its current one, most recent first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PreviousNames<'a>(&'a [MachineName]);

impl<'a> PreviousNames<'a> {
    /// The names, most recent first.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().map(MachineName::as_str)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the machine never changed its name.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for PreviousNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// How the host's answer to one request reads for the client's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answered with a count at or above the client's minimum.
    Success,
    /// Answered, but below the client's minimum: counted, yet the client stays unactivated.
    BelowMinimum,
    /// Refused with this HRESULT: not counted.
    Refused(u32),
}

/// What the state stores per client (the CMID is the map key, the count group the window's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    pub(crate) first_seen_ms: u64,
    /// Last answered request; 0 = never.
    pub(crate) last_seen_ms: u64,
    pub(crate) last_request_ms: u64,
    /// 0 = never.
    pub(crate) last_success_ms: u64,
    /// 0 = never.
    pub(crate) last_failure_ms: u64,
    pub(crate) answered_by: u64,
    pub(crate) profile: Arc<Profile>,
    pub(crate) machine_name: MachineName,
    /// Boxed so that the common case (never renamed) costs 8 bytes, not a 24-byte `Vec`.
    #[allow(clippy::box_collection)]
    pub(crate) previous_names: Option<Box<Vec<MachineName>>>,
    pub(crate) grace_minutes: u32,
    pub(crate) requests: u32,
    pub(crate) last_failure_hresult: u32,
    pub(crate) consecutive_failures: u16,
}

impl Client {
    /// A record for the first request of `a.cmid` (fields then set by [`Client::observe`]).
    fn new(a: &Activation, verdict: Verdict) -> Self {
        let mut c = Client {
            first_seen_ms: a.time_ms,
            last_seen_ms: 0,
            last_request_ms: a.time_ms,
            last_success_ms: 0,
            last_failure_ms: 0,
            answered_by: a.answered_by,
            profile: intern_profile(Profile::of(a)),
            machine_name: MachineName::new(&a.machine_name),
            previous_names: None,
            grace_minutes: a.grace_minutes,
            requests: 0,
            last_failure_hresult: 0,
            consecutive_failures: 0,
        };
        c.observe(a, verdict);
        c
    }

    /// Folds in a request of the same client. Tolerates time going backwards: descriptive
    /// fields follow the latest request by time, each time only moves forward.
    fn observe(&mut self, a: &Activation, verdict: Verdict) {
        if a.time_ms >= self.last_request_ms {
            if self.machine_name.as_str() != a.machine_name {
                let old =
                    std::mem::replace(&mut self.machine_name, MachineName::new(&a.machine_name));
                let history = self.previous_names.get_or_insert_with(Default::default);
                history.retain(|n| n.as_str() != a.machine_name && *n != old);
                history.insert(0, old);
                history.truncate(NAME_HISTORY);
            }
            if !self.profile.matches(a) {
                self.profile = intern_profile(Profile::of(a));
            }
            self.grace_minutes = a.grace_minutes;
            self.answered_by = a.answered_by;
            self.last_request_ms = a.time_ms;
        }
        self.first_seen_ms = self.first_seen_ms.min(a.time_ms);
        match verdict {
            Verdict::Success => {
                self.last_seen_ms = self.last_seen_ms.max(a.time_ms);
                self.last_success_ms = self.last_success_ms.max(a.time_ms);
                if a.time_ms >= self.last_failure_ms {
                    self.consecutive_failures = 0;
                }
            }
            Verdict::BelowMinimum => {
                self.last_seen_ms = self.last_seen_ms.max(a.time_ms);
                self.fail(a.time_ms, HRESULT_COUNT_TOO_LOW);
            }
            Verdict::Refused(hresult) => self.fail(a.time_ms, hresult),
        }
        self.requests = self.requests.saturating_add(1);
    }

    fn fail(&mut self, time_ms: u64, hresult: u32) {
        if time_ms >= self.last_failure_ms {
            self.last_failure_ms = time_ms;
            self.last_failure_hresult = hresult;
        }
        if time_ms >= self.last_success_ms {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        }
    }

    pub(crate) fn view<'a>(
        &'a self,
        count_group: &'a str,
        cmid: Uuid,
        counted: bool,
    ) -> ClientRecord<'a> {
        let p = &*self.profile;
        ClientRecord {
            count_group,
            cmid,
            machine_name: self.machine_name.as_str(),
            previous_names: PreviousNames(
                self.previous_names.as_deref().map_or(&[], Vec::as_slice),
            ),
            sku_id: p.sku_id,
            product_group: p.product_group.as_deref(),
            kms_counted_id: p.kms_counted_id,
            application_id: p.application_id,
            client_vm: p.client_vm,
            license_state: p.license_state,
            grace_minutes: self.grace_minutes,
            required_count: p.required_count,
            protocol_major: p.protocol_major,
            counted,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            last_request_ms: self.last_request_ms,
            last_success_ms: (self.last_success_ms > 0).then_some(self.last_success_ms),
            last_failure: (self.last_failure_ms > 0).then_some(Failure {
                time_ms: self.last_failure_ms,
                hresult: self.last_failure_hresult,
            }),
            consecutive_failures: u32::from(self.consecutive_failures),
            answered_by: self.answered_by,
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
    /// Only clients counted at or after this time (unix ms), e.g. `now - 30d` for active ones.
    pub seen_since_ms: Option<u64>,
    /// Only this client machine id.
    pub cmid: Option<Uuid>,
    /// Only machines reporting this name now or before (compared ignoring ASCII case, as
    /// Windows names are).
    pub machine_name: Option<String>,
    /// Only machines in this lifecycle state.
    pub lifecycle: Option<LifecycleFilter>,
}

/// A lifecycle state and the clock and policy it is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleFilter {
    /// The state wanted.
    pub state: Lifecycle,
    /// When (unix ms, state time).
    pub now_ms: u64,
    /// The renewal interval, slack and horizon.
    pub policy: LifecyclePolicy,
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
            && self
                .seen_since_ms
                .is_none_or(|t| record.counted && record.last_seen_ms >= t)
            && self.cmid.is_none_or(|c| c == record.cmid)
            && self.machine_name.as_deref().is_none_or(|n| {
                n.eq_ignore_ascii_case(record.machine_name)
                    || record
                        .previous_names
                        .iter()
                        .any(|p| n.eq_ignore_ascii_case(p))
            })
            && self
                .lifecycle
                .is_none_or(|l| record.lifecycle(l.now_ms, &l.policy) == l.state)
    }
}

/// Client records by CMID with an index ordered by one of their times, kept in step: the
/// index holds exactly `(time(c), cmid)` for every `(cmid, c)` of the map, so equality only
/// compares the maps.
#[derive(Debug, Clone)]
struct TimedMap {
    records: OrdMap<Uuid, Client>,
    by_time: OrdSet<(u64, Uuid)>,
    /// The time the index is ordered by.
    time: fn(&Client) -> u64,
}

impl PartialEq for TimedMap {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

impl TimedMap {
    fn new(time: fn(&Client) -> u64) -> Self {
        TimedMap {
            records: OrdMap::new(),
            by_time: OrdSet::new(),
            time,
        }
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn get(&self, cmid: &Uuid) -> Option<&Client> {
        self.records.get(cmid)
    }

    /// Inserts or replaces the record of `cmid`; returns the one replaced.
    fn insert(&mut self, cmid: Uuid, client: Client) -> Option<Client> {
        let key = (self.time)(&client);
        let replaced = self.records.insert(cmid, client);
        if let Some(old) = &replaced {
            self.by_time.remove(&((self.time)(old), cmid));
        }
        self.by_time.insert((key, cmid));
        replaced
    }

    /// Adds records read from a snapshot: strictly increasing by CMID, each new to the map,
    /// every CMID above the map's so far (the snapshot reader checks all three). Both trees are
    /// filled in [`fill_order`], the index after sorting its keys.
    fn extend_sorted(&mut self, items: Vec<(Uuid, Client)>) {
        debug_assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
        let mut keys: Vec<(u64, Uuid)> = items
            .iter()
            .map(|(cmid, c)| ((self.time)(c), *cmid))
            .collect();
        keys.sort_unstable();
        for (cmid, client) in fill_order(items) {
            let replaced = self.records.insert(cmid, client);
            debug_assert!(replaced.is_none(), "extend_sorted: {cmid} already present");
        }
        for key in fill_order(keys) {
            self.by_time.insert(key);
        }
    }

    /// Changes the record of `cmid` in place, moving its index entry when its time changed;
    /// false when there is none.
    fn update(&mut self, cmid: &Uuid, change: impl FnOnce(&mut Client)) -> bool {
        let Some(rec) = self.records.get_mut(cmid) else {
            return false;
        };
        let old = (self.time)(rec);
        change(rec);
        let new = (self.time)(rec);
        if new != old {
            self.by_time.remove(&(old, *cmid));
            self.by_time.insert((new, *cmid));
        }
        true
    }

    fn remove(&mut self, cmid: &Uuid) -> Option<Client> {
        let rec = self.records.remove(cmid)?;
        self.by_time.remove(&((self.time)(&rec), *cmid));
        Some(rec)
    }

    /// Removes and returns the record with the oldest time when that time is at most
    /// `cutoff`.
    fn pop_until(&mut self, cutoff: u64) -> Option<(Uuid, Client)> {
        let &(time, cmid) = self.by_time.get_min()?;
        if time > cutoff {
            return None;
        }
        self.by_time.remove_min();
        self.records.remove(&cmid).map(|rec| (cmid, rec))
    }

    /// Records whose time is at most `cutoff`, without removing them.
    fn count_until(&self, cutoff: u64) -> usize {
        // Strictly below (cutoff + 1, nil).
        self.by_time
            .range(..(cutoff.saturating_add(1), Uuid::nil()))
            .count()
    }

    #[cfg(test)]
    fn index_consistent(&self) -> bool {
        self.by_time.len() == self.records.len()
            && self
                .by_time
                .iter()
                .all(|(t, id)| self.records.get(id).is_some_and(|r| (self.time)(r) == *t))
    }
}

/// The inventory of one count group: counted clients indexed by last counted request (for
/// the count), and retired ones indexed by last request (for the retention).
///
/// Invariant: a CMID is in at most one of `counted` and `retired`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientWindow {
    counted: TimedMap,
    retired: TimedMap,
}

impl Default for ClientWindow {
    fn default() -> Self {
        ClientWindow {
            counted: TimedMap::new(|c| c.last_seen_ms),
            retired: TimedMap::new(|c| c.last_request_ms),
        }
    }
}

impl Eq for ClientWindow {}

impl ClientWindow {
    /// Number of clients counted (all of them active as of the last pruning): the count.
    pub(crate) fn len(&self) -> usize {
        self.counted.len()
    }

    /// Number of records in the inventory, counted or not.
    pub(crate) fn inventory_len(&self) -> usize {
        self.counted.len() + self.retired.len()
    }

    /// Number of records kept beyond the count.
    pub(crate) fn retired_len(&self) -> usize {
        self.retired.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inventory_len() == 0
    }

    /// A record and whether it is counted.
    pub(crate) fn get(&self, cmid: &Uuid) -> Option<(&Client, bool)> {
        self.counted
            .get(cmid)
            .map(|c| (c, true))
            .or_else(|| self.retired.get(cmid).map(|c| (c, false)))
    }

    /// Counted clients by CMID (the snapshot order of the first section).
    pub(crate) fn iter_counted(&self) -> impl Iterator<Item = (&Uuid, &Client)> {
        self.counted.records.iter()
    }

    /// Retired clients by CMID (the snapshot order of the second section).
    pub(crate) fn iter_retired(&self) -> impl Iterator<Item = (&Uuid, &Client)> {
        self.retired.records.iter()
    }

    /// Every record with whether it is counted: counted ones by CMID, then retired ones.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Uuid, &Client, bool)> {
        self.iter_counted()
            .map(|(k, c)| (k, c, true))
            .chain(self.iter_retired().map(|(k, c)| (k, c, false)))
    }

    /// Adds whole records read from a snapshot to the counted or the retired map: strictly
    /// increasing by CMID, above every CMID already in that map, and in neither map yet (the
    /// snapshot reader checks the order and that no client is both counted and retired).
    pub(crate) fn extend_sorted(&mut self, clients: Vec<(Uuid, Client)>, counted: bool) {
        let map = if counted {
            &mut self.counted
        } else {
            &mut self.retired
        };
        map.extend_sorted(clients);
    }

    /// Records a request of `a.cmid` and returns the count after it. An answered request
    /// counts the client (moving it back from the retired map when it was there); whether it
    /// was a success depends on that count and the client's minimum. A refused one updates or
    /// creates the record without counting it.
    pub(crate) fn record(&mut self, a: &Activation, refused: Option<u32>) -> usize {
        if let Some(hresult) = refused {
            let verdict = Verdict::Refused(hresult);
            // A refusal never changes last_seen_ms, so a counted record keeps its place.
            if !self.counted.update(&a.cmid, |rec| rec.observe(a, verdict))
                && !self.retired.update(&a.cmid, |rec| rec.observe(a, verdict))
            {
                self.retired.insert(a.cmid, Client::new(a, verdict));
            }
            return self.counted.len();
        }
        let verdict_for = |count: usize| {
            if count >= a.required_count as usize {
                Verdict::Success
            } else {
                Verdict::BelowMinimum
            }
        };
        let count = self.counted.len();
        if self
            .counted
            .update(&a.cmid, |rec| rec.observe(a, verdict_for(count)))
        {
            return count;
        }
        let count = count + 1;
        let rec = match self.retired.remove(&a.cmid) {
            Some(mut rec) => {
                rec.observe(a, verdict_for(count));
                rec
            }
            None => Client::new(a, verdict_for(count)),
        };
        self.counted.insert(a.cmid, rec);
        count
    }

    /// Moves clients counted 30 days or more before `now_ms` to the retired map, then drops
    /// retired records whose last request is `retention_ms` or more before `now_ms`; returns
    /// how many left the count and how many left the inventory.
    pub(crate) fn prune(&mut self, now_ms: u64, retention_ms: u64) -> (usize, usize) {
        let mut uncounted = 0;
        if let Some(cutoff) = now_ms.checked_sub(CLIENT_WINDOW_MS) {
            while let Some((cmid, rec)) = self.counted.pop_until(cutoff) {
                self.retired.insert(cmid, rec);
                uncounted += 1;
            }
        }
        let mut dropped = 0;
        if let Some(cutoff) = now_ms.checked_sub(retention_ms) {
            while self.retired.pop_until(cutoff).is_some() {
                dropped += 1;
            }
        }
        (uncounted, dropped)
    }

    /// Clients that count at `now_ms`, without pruning.
    pub(crate) fn active_at(&self, now_ms: u64) -> usize {
        match now_ms.checked_sub(CLIENT_WINDOW_MS) {
            Some(cutoff) => self.len() - self.counted.count_until(cutoff),
            None => self.len(),
        }
    }

    #[cfg(test)]
    fn index_consistent(&self) -> bool {
        self.counted.index_consistent()
            && self.retired.index_consistent()
            && self
                .counted
                .records
                .keys()
                .all(|k| !self.retired.records.contains_key(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Outcome;

    const RET: u64 = DEFAULT_INVENTORY_RETENTION_MS;
    const DAY: u64 = 24 * 3600 * 1000;

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
            required_count: 1,
            protocol_major: 6,
            outcome: Outcome::Answered,
            answered_by: 1,
        }
    }

    fn view(w: &ClientWindow, cmid: u128) -> ClientRecord<'_> {
        let (c, counted) = w.get(&Uuid::from_u128(cmid)).unwrap();
        c.view("windows", Uuid::from_u128(cmid), counted)
    }

    #[test]
    fn boundary_is_exact() {
        let mut w = ClientWindow::default();
        let t = CLIENT_WINDOW_MS + 5;
        w.record(&act(1, t), None);
        assert_eq!(w.active_at(t + CLIENT_WINDOW_MS - 1), 1);
        assert_eq!(w.active_at(t + CLIENT_WINDOW_MS), 0);
        assert_eq!(w.prune(t + CLIENT_WINDOW_MS - 1, RET), (0, 0));
        assert_eq!(w.prune(t + CLIENT_WINDOW_MS, RET), (1, 0));
        assert_eq!(
            (w.len(), w.inventory_len()),
            (0, 1),
            "kept beyond the count"
        );
        assert!(!view(&w, 1).counted && w.index_consistent());
        assert_eq!(w.prune(t + RET - 1, RET), (0, 0));
        assert_eq!(w.prune(t + RET, RET), (0, 1));
        assert!(w.is_empty() && w.index_consistent());
    }

    #[test]
    fn a_retired_client_counts_again_when_answered() {
        let mut w = ClientWindow::default();
        w.record(&act(1, 1_000), None);
        w.prune(1_000 + CLIENT_WINDOW_MS, RET);
        assert_eq!(w.len(), 0);
        let mut back = act(1, 1_000 + 100 * DAY);
        back.machine_name = "renamed".into();
        assert_eq!(w.record(&back, None), 1);
        let r = view(&w, 1);
        assert!(r.counted);
        assert_eq!((r.first_seen_ms, r.requests), (1_000, 2));
        assert_eq!(r.previous_names.iter().collect::<Vec<_>>(), ["pc1"]);
        assert!(w.index_consistent());
    }

    #[test]
    fn refusals_update_the_record_without_counting() {
        let mut w = ClientWindow::default();
        // Only ever refused: in the inventory, not in the count.
        assert_eq!(w.record(&act(1, 10), Some(0xC004_F042)), 0);
        let r = view(&w, 1);
        assert!(!r.counted);
        assert_eq!(r.last_seen_ms, 0);
        assert_eq!(r.last_success_ms, None);
        assert_eq!(
            r.last_failure,
            Some(Failure {
                time_ms: 10,
                hresult: 0xC004_F042
            })
        );
        assert_eq!(r.consecutive_failures, 1);
        // A counted client refused later keeps counting, and is failing.
        assert_eq!(w.record(&act(2, 20), None), 1);
        assert_eq!(w.record(&act(2, 30), Some(0xC004_F06C)), 1);
        let r = view(&w, 2);
        assert!(r.counted);
        assert_eq!((r.last_seen_ms, r.last_request_ms), (20, 30));
        assert_eq!(r.last_success_ms, Some(20));
        assert_eq!(r.consecutive_failures, 1);
        assert_eq!(
            r.lifecycle(30, &LifecyclePolicy::default()),
            Lifecycle::Failing
        );
        // A success clears the failure streak but keeps the last failure.
        w.record(&act(2, 40), None);
        let r = view(&w, 2);
        assert_eq!(r.consecutive_failures, 0);
        assert_eq!(r.last_failure.map(|f| f.time_ms), Some(30));
        assert_eq!(
            r.lifecycle(40, &LifecyclePolicy::default()),
            Lifecycle::Active
        );
        assert!(w.index_consistent());
    }

    #[test]
    fn a_count_below_the_minimum_is_a_failure_that_counts() {
        let mut w = ClientWindow::default();
        let mut a = act(1, 10);
        a.required_count = 2;
        assert_eq!(w.record(&a, None), 1);
        let r = view(&w, 1);
        assert!(r.counted);
        assert_eq!(r.last_success_ms, None);
        assert_eq!(
            r.last_failure.map(|f| f.hresult),
            Some(HRESULT_COUNT_TOO_LOW)
        );
        let mut b = act(2, 20);
        b.required_count = 2;
        assert_eq!(w.record(&b, None), 2);
        assert_eq!(view(&w, 2).last_success_ms, Some(20));
        assert_eq!(view(&w, 2).consecutive_failures, 0);
    }

    #[test]
    fn name_history_keeps_the_last_few_distinct_names() {
        let mut w = ClientWindow::default();
        for (i, name) in ["a", "b", "a", "c", "d", "e"].iter().enumerate() {
            let mut x = act(1, 10 + i as u64);
            x.machine_name = (*name).into();
            w.record(&x, None);
        }
        let r = view(&w, 1);
        assert_eq!(r.machine_name, "e");
        assert_eq!(r.previous_names.iter().collect::<Vec<_>>(), ["d", "c", "a"]);
        let by_old_name = ClientFilter {
            machine_name: Some("C".into()),
            ..Default::default()
        };
        assert!(by_old_name.matches(&r));
    }

    #[test]
    fn time_going_backwards_keeps_latest_report() {
        let mut w = ClientWindow::default();
        w.record(&act(1, 1_000), None);
        let mut older = act(1, 400);
        older.machine_name = "old-name".into();
        older.license_state = LicenseState::Notification;
        older.answered_by = 9;
        w.record(&older, None);
        let r = view(&w, 1);
        assert_eq!(
            (
                r.first_seen_ms,
                r.last_seen_ms,
                r.last_request_ms,
                r.requests
            ),
            (400, 1_000, 1_000, 2)
        );
        assert_eq!(r.machine_name, "pc1");
        assert!(r.previous_names.is_empty());
        assert_eq!(r.license_state, LicenseState::Licensed);
        assert_eq!(r.answered_by, 1);
        // An old failure does not make a later success look failed.
        w.record(&act(1, 500), Some(0xC004_F042));
        assert_eq!(view(&w, 1).consecutive_failures, 0);
        assert!(w.index_consistent());
        // Early times never underflow.
        assert_eq!(w.active_at(0), 1);
        assert_eq!(w.prune(0, RET), (0, 0));
    }

    #[test]
    fn later_report_replaces_descriptive_fields() {
        let mut w = ClientWindow::default();
        w.record(&act(1, 10), None);
        let mut later = act(1, 20);
        later.machine_name = "a-much-longer-machine-name.campus.example".into();
        later.license_state = LicenseState::Other(1234);
        later.product_group = Some("windows-server".into());
        later.client_vm = true;
        later.answered_by = 3;
        w.record(&later, None);
        let r = view(&w, 1);
        assert_eq!(r.machine_name, later.machine_name);
        assert_eq!(r.license_state, LicenseState::Other(1234));
        assert_eq!(r.product_group, Some("windows-server"));
        assert!(r.client_vm);
        assert_eq!(r.answered_by, 3);
        assert_eq!((r.first_seen_ms, r.last_seen_ms, r.requests), (10, 20, 2));
        assert!(w.index_consistent());
    }

    #[test]
    fn clone_is_shared_and_independent() {
        let mut w = ClientWindow::default();
        for i in 0..1_000 {
            w.record(&act(i, 100 + i as u64), None);
        }
        let snapshot = w.clone();
        w.record(&act(5, 5_000), None);
        w.record(&act(5_000, 5_001), None);
        assert_eq!(snapshot.len(), 1_000);
        assert_eq!(
            snapshot.get(&Uuid::from_u128(5)).unwrap().0.last_seen_ms,
            105
        );
        assert_eq!(w.get(&Uuid::from_u128(5)).unwrap().0.last_seen_ms, 5_000);
        assert!(w.index_consistent() && snapshot.index_consistent());
        assert_ne!(w, snapshot);
    }

    #[test]
    fn bulk_loaded_records_match_applied_ones() {
        // The same clients applied one by one and loaded in chunks (as the snapshot reader
        // does): equal windows, consistent indexes, and the loaded one keeps working.
        let mut applied = ClientWindow::default();
        let mut clients = Vec::new();
        for i in 0..1000u128 {
            // Times out of CMID order, so the index is sorted apart from the records.
            let a = act(i * 7 + 1, 1_000 + ((i * 7919) % 1000) as u64);
            applied.record(&a, None);
            clients.push((a.cmid, Client::new(&a, Verdict::Success)));
        }
        let mut loaded = ClientWindow::default();
        for chunk in clients.chunks(333) {
            loaded.extend_sorted(chunk.to_vec(), true);
        }
        assert!(loaded.index_consistent());
        assert_eq!(loaded, applied);
        assert_eq!(loaded.len(), 1000);
        loaded.record(&act(7 * 500 + 1, 5_000), None);
        loaded.record(&act(1 << 100, 5_000), None);
        assert!(loaded.index_consistent());
        assert_eq!(loaded.len(), 1001);
        assert_eq!(
            loaded
                .get(&Uuid::from_u128(7 * 500 + 1))
                .unwrap()
                .0
                .last_seen_ms,
            5_000
        );
    }

    #[test]
    fn filter_matches_fields() {
        let mut a = act(1, 100);
        a.product_group = Some("windows-10-11".into());
        let c = Client::new(&a, Verdict::Success);
        let r = c.view("windows", a.cmid, true);
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
        let by_state = |state: Lifecycle, now_ms: u64| ClientFilter {
            lifecycle: Some(LifecycleFilter {
                state,
                now_ms,
                policy: LifecyclePolicy::default(),
            }),
            ..Default::default()
        };
        assert!(by_state(Lifecycle::Active, 100).matches(&r));
        assert!(!by_state(Lifecycle::Expiring, 100).matches(&r));
        assert!(by_state(Lifecycle::Expiring, 100 + 160 * DAY).matches(&r));
    }

    #[test]
    fn stored_entry_is_compact() {
        assert_eq!(std::mem::size_of::<Client>(), 104);
    }
}
