//! Request-id deduplication: makes [`Command::Activation`](crate::Command::Activation) idempotent.
//!
//! Owns the memory of applied request ids with their result, and its expiry: an id applied at
//! `t` is remembered while `command time < t + retention`, then forgotten.
//!
//! Layout, sized for millions of ids and O(1) clones (both structures are persistent):
//! - `by_time`: the entries in expiry order `(time_ms, request_id)` with their result, as an
//!   [`imbl::Vector`]. Command times rarely go backwards, so entries are appended at the back
//!   and expire from the front; its chunks stay full (28 bytes an entry), where a B+tree fed
//!   in order leaves its leaves half empty. Forgetting costs O(1) per expired id.
//! - `times`: request id → time, an [`imbl::OrdMap`] for the lookup by id; the result is then
//!   found in `by_time` by binary search (only for duplicates, which are rare).

use imbl::{OrdMap, Vector};
use uuid::Uuid;

use crate::bulk::fill_order;

/// How many slots an out-of-order insert may move at the back before it uses `Vector::insert`.
const NEAR_BACK: usize = 64;

/// Default time an applied request id is remembered: 24 hours in milliseconds.
pub const DEFAULT_DEDUP_RETENTION_MS: u64 = 24 * 3600 * 1000;

/// An applied request id and the result it produced, returned again for duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    /// The request id of the applied activation.
    pub request_id: Uuid,
    /// Command time of the activation (unix ms); drives expiry.
    pub time_ms: u64,
    /// The `active_clients` it returned.
    pub active_clients: u32,
}

/// One entry of `by_time`: 4-byte aligned (the time split in halves), so 28 bytes, not 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    time: [u32; 2],
    id: Uuid,
    active_clients: u32,
}

impl Slot {
    fn new(e: &DedupEntry) -> Self {
        Slot {
            // Split into high and low halves; `time_ms()` joins them.
            time: [(e.time_ms >> 32) as u32, e.time_ms as u32],
            id: e.request_id,
            active_clients: e.active_clients,
        }
    }

    fn time_ms(&self) -> u64 {
        (u64::from(self.time[0]) << 32) | u64::from(self.time[1])
    }

    /// The expiry order.
    fn key(&self) -> (u64, Uuid) {
        (self.time_ms(), self.id)
    }

    fn entry(&self) -> DedupEntry {
        DedupEntry {
            request_id: self.id,
            time_ms: self.time_ms(),
            active_clients: self.active_clients,
        }
    }
}

fn expired_at(time_ms: u64, now_ms: u64, retention_ms: u64) -> bool {
    time_ms.saturating_add(retention_ms) <= now_ms
}

/// Applied request ids with their results, in expiry order.
///
/// Invariant: `times` holds exactly `id → time` for every slot of `by_time`, and `by_time` is
/// strictly increasing by `(time, id)`; so `by_time` alone defines the value (equality).
#[derive(Debug, Clone, Default)]
pub(crate) struct DedupLog {
    times: OrdMap<Uuid, u64>,
    by_time: Vector<Slot>,
}

impl PartialEq for DedupLog {
    fn eq(&self, other: &Self) -> bool {
        self.by_time == other.by_time
    }
}

impl Eq for DedupLog {}

impl DedupLog {
    /// Position in `by_time` of `key`, or where it would go.
    fn position(&self, key: (u64, Uuid)) -> Result<usize, usize> {
        self.by_time.binary_search_by(|s| s.key().cmp(&key))
    }

    /// The stored result of `id` if it is remembered and not expired at `now_ms`.
    pub(crate) fn lookup(&self, id: &Uuid, now_ms: u64, retention_ms: u64) -> Option<u32> {
        let time = *self.times.get(id)?;
        if expired_at(time, now_ms, retention_ms) {
            return None;
        }
        self.get(id).map(|e| e.active_clients)
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<DedupEntry> {
        let time = *self.times.get(id)?;
        let pos = self.position((time, *id)).ok()?;
        self.by_time.get(pos).map(Slot::entry)
    }

    /// Entries in expiry order `(time_ms, request_id)` (the snapshot order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = DedupEntry> + '_ {
        self.by_time.iter().map(Slot::entry)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Inserts or replaces the entry for `entry.request_id`; returns whether it replaced one.
    pub(crate) fn insert(&mut self, entry: DedupEntry) -> bool {
        let slot = Slot::new(&entry);
        let old = self.times.insert(entry.request_id, entry.time_ms);
        if let Some(old_time) = old {
            if let Ok(pos) = self.position((old_time, entry.request_id)) {
                self.by_time.remove(pos);
            }
        }
        let key = slot.key();
        if self.by_time.back().is_none_or(|last| last.key() < key) {
            self.by_time.push_back(slot);
        } else if let Err(pos) = self.position(key) {
            // Out of order: a same-millisecond id that sorts before the last ones (common
            // under load) or time going backwards. Near the back, pop the few later slots and
            // push them again: O(k) at the vector's back buffer, where `Vector::insert` would
            // split and re-merge the tree (measured at ~6% of kmsd's CPU under load).
            let later = self.by_time.len() - pos;
            if later <= NEAR_BACK {
                let mut tail: Vec<Slot> =
                    (0..later).filter_map(|_| self.by_time.pop_back()).collect();
                self.by_time.push_back(slot);
                while let Some(s) = tail.pop() {
                    self.by_time.push_back(s);
                }
            } else {
                self.by_time.insert(pos, slot);
            }
        }
        old.is_some()
    }

    /// Replaces the contents with `entries` (a snapshot's requests section), strictly
    /// increasing by `(time_ms, request_id)` as its reader checks; fails with the id of a
    /// request listed twice. The id map is filled in sorted order (`crate::bulk`), not in the
    /// random order the ids come in.
    pub(crate) fn load(&mut self, entries: Vec<DedupEntry>) -> Result<(), Uuid> {
        debug_assert!(entries
            .windows(2)
            .all(|w| (w[0].time_ms, w[0].request_id) < (w[1].time_ms, w[1].request_id)));
        let mut ids: Vec<(Uuid, u64)> = entries.iter().map(|e| (e.request_id, e.time_ms)).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(twice[0].0);
        }
        let mut times = OrdMap::new();
        for (id, time) in fill_order(ids) {
            times.insert(id, time);
        }
        self.times = times;
        self.by_time = entries.iter().map(Slot::new).collect();
        Ok(())
    }

    /// Forgets ids expired at `now_ms`; returns how many.
    pub(crate) fn prune(&mut self, now_ms: u64, retention_ms: u64) -> usize {
        let Some(cutoff) = now_ms.checked_sub(retention_ms) else {
            return 0;
        };
        let mut removed = 0;
        while self.by_time.front().is_some_and(|s| s.time_ms() <= cutoff) {
            if let Some(slot) = self.by_time.pop_front() {
                self.times.remove(&slot.id);
                removed += 1;
            }
        }
        removed
    }

    #[cfg(test)]
    fn consistent(&self) -> bool {
        self.times.len() == self.by_time.len()
            && self
                .by_time
                .iter()
                .all(|s| self.times.get(&s.id) == Some(&s.time_ms()))
            && self
                .by_time
                .iter()
                .zip(self.by_time.iter().skip(1))
                .all(|(a, b)| a.key() < b.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_prune_agree_on_expiry() {
        let mut log = DedupLog::default();
        let id = Uuid::from_u128(7);
        log.insert(DedupEntry {
            request_id: id,
            time_ms: 1_000,
            active_clients: 3,
        });
        assert_eq!(log.lookup(&id, 1_000 + 99, 100), Some(3));
        assert_eq!(
            log.lookup(&id, 500, 100),
            Some(3),
            "earlier time: still known"
        );
        assert_eq!(log.prune(1_000 + 99, 100), 0);
        assert_eq!(log.lookup(&id, 1_000 + 100, 100), None);
        assert_eq!(log.prune(1_000 + 100, 100), 1);
        assert_eq!(log.len(), 0);
        assert_eq!(log.prune(0, u64::MAX), 0);
    }

    #[test]
    fn reinsert_moves_index() {
        let mut log = DedupLog::default();
        let id = Uuid::from_u128(1);
        for (t, replaced) in [(5, false), (9, true)] {
            let entry = DedupEntry {
                request_id: id,
                time_ms: t,
                active_clients: 1,
            };
            assert_eq!(log.insert(entry), replaced);
        }
        assert_eq!(log.by_time.len(), 1);
        assert!(log.consistent());
        assert_eq!(log.get(&id).unwrap().time_ms, 9);
        assert_eq!(log.prune(8, 0), 0);
        assert_eq!(log.prune(9, 0), 1);
    }

    #[test]
    fn iterates_in_expiry_order() {
        let mut log = DedupLog::default();
        for (id, t) in [(3u128, 30u64), (1, 20), (2, 20), (9, 10)] {
            log.insert(DedupEntry {
                request_id: Uuid::from_u128(id),
                time_ms: t,
                active_clients: id as u32,
            });
        }
        assert!(log.consistent());
        let order: Vec<(u64, u128, u32)> = log
            .iter()
            .map(|e| (e.time_ms, e.request_id.as_u128(), e.active_clients))
            .collect();
        assert_eq!(order, vec![(10, 9, 9), (20, 1, 1), (20, 2, 2), (30, 3, 3)]);
        let copy = log.clone();
        assert_eq!(log.prune(25, 0), 3);
        assert_eq!((log.len(), copy.len()), (1, 4));
        assert!(log.consistent() && copy.consistent());
        assert_eq!(copy.get(&Uuid::from_u128(2)).unwrap().active_clients, 2);
    }

    #[test]
    fn times_going_backwards_keep_the_order() {
        let mut log = DedupLog::default();
        for (i, t) in [50u64, 10, 30, 30, 70, 0, u64::MAX, 5]
            .into_iter()
            .enumerate()
        {
            log.insert(DedupEntry {
                request_id: Uuid::from_u128(i as u128 % 6),
                time_ms: t,
                active_clients: i as u32,
            });
            assert!(log.consistent());
        }
        assert_eq!(log.len(), 6);
        assert_eq!(log.get(&Uuid::from_u128(0)).unwrap().time_ms, u64::MAX);
        assert_eq!(log.get(&Uuid::from_u128(1)).unwrap().time_ms, 5);
        assert_eq!(log.lookup(&Uuid::from_u128(1), 5 + 99, 100), Some(7));
        assert_eq!(log.prune(40, 0), 4);
        assert!(log.consistent());
    }

    #[test]
    fn out_of_order_inserts_near_and_far_from_the_back_match_a_sorted_model() {
        let mut log = DedupLog::default();
        let mut model = std::collections::BTreeMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..3000u128 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly the same few milliseconds (inserts a few slots from the back), now and
            // then far in the past (an insert deep inside the vector).
            let t = if x.is_multiple_of(50) {
                x % 1000
            } else {
                1000 + i as u64 / 40
            };
            let id = Uuid::from_u128(u128::from(x) << 20 | i);
            log.insert(DedupEntry {
                request_id: id,
                time_ms: t,
                active_clients: i as u32,
            });
            model.insert((t, id), i as u32);
        }
        assert!(log.consistent());
        let got: Vec<((u64, Uuid), u32)> = log
            .iter()
            .map(|e| ((e.time_ms, e.request_id), e.active_clients))
            .collect();
        let want: Vec<((u64, Uuid), u32)> = model.into_iter().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn slot_is_packed() {
        assert_eq!(std::mem::size_of::<Slot>(), 28);
        let e = DedupEntry {
            request_id: Uuid::from_u128(5),
            time_ms: 0x1234_5678_9abc_def0,
            active_clients: 7,
        };
        assert_eq!(Slot::new(&e).entry(), e);
    }
}
