//! Request-id deduplication: makes [`Command::Activation`](crate::Command::Activation) idempotent.
//!
//! Owns the memory of applied request ids with their result, and its expiry: an id applied at
//! `t` is remembered while `command time < t + retention`, then forgotten. An index ordered by
//! `(time_ms, request_id)` makes forgetting cost proportional to the number of expired ids.
//!
//! Both maps are persistent B+trees ([`imbl`]), so cloning the log is O(1). An entry costs its
//! 16-byte id plus 16 bytes of value in the id map and 24 bytes in the time index.

use imbl::{OrdMap, OrdSet};
use uuid::Uuid;

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

/// What is stored per request id (the id is the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    time_ms: u64,
    active_clients: u32,
}

fn expired_at(time_ms: u64, now_ms: u64, retention_ms: u64) -> bool {
    time_ms.saturating_add(retention_ms) <= now_ms
}

/// Applied request ids with their expiry index.
///
/// Invariant: `by_time` holds exactly `(e.time_ms, id)` for every `(id, e)` of `entries`, so
/// equality only compares `entries`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DedupLog {
    entries: OrdMap<Uuid, Remembered>,
    by_time: OrdSet<(u64, Uuid)>,
}

impl PartialEq for DedupLog {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for DedupLog {}

impl DedupLog {
    /// The stored result of `id` if it is remembered and not expired at `now_ms`.
    pub(crate) fn lookup(&self, id: &Uuid, now_ms: u64, retention_ms: u64) -> Option<u32> {
        self.entries
            .get(id)
            .filter(|e| !expired_at(e.time_ms, now_ms, retention_ms))
            .map(|e| e.active_clients)
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<DedupEntry> {
        self.entries.get(id).map(|e| DedupEntry {
            request_id: *id,
            time_ms: e.time_ms,
            active_clients: e.active_clients,
        })
    }

    /// Entries by request id (the snapshot order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = DedupEntry> + '_ {
        self.entries.iter().map(|(id, e)| DedupEntry {
            request_id: *id,
            time_ms: e.time_ms,
            active_clients: e.active_clients,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts or replaces the entry for `entry.request_id`; returns whether it replaced one.
    pub(crate) fn insert(&mut self, entry: DedupEntry) -> bool {
        let value = Remembered {
            time_ms: entry.time_ms,
            active_clients: entry.active_clients,
        };
        let old = self.entries.insert(entry.request_id, value);
        if let Some(old) = old {
            self.by_time.remove(&(old.time_ms, entry.request_id));
        }
        self.by_time.insert((entry.time_ms, entry.request_id));
        old.is_some()
    }

    /// Forgets ids expired at `now_ms`; returns how many.
    pub(crate) fn prune(&mut self, now_ms: u64, retention_ms: u64) -> usize {
        let Some(cutoff) = now_ms.checked_sub(retention_ms) else {
            return 0;
        };
        let mut removed = 0;
        while let Some(&(t, id)) = self.by_time.get_min() {
            if t > cutoff {
                break;
            }
            self.by_time.remove_min();
            self.entries.remove(&id);
            removed += 1;
        }
        removed
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
        assert_eq!(log.get(&id).unwrap().time_ms, 9);
        assert_eq!(log.prune(8, 0), 0);
        assert_eq!(log.prune(9, 0), 1);
    }

    #[test]
    fn iterates_by_id() {
        let mut log = DedupLog::default();
        for (id, t) in [(3u128, 30u64), (1, 20), (2, 20), (9, 10)] {
            log.insert(DedupEntry {
                request_id: Uuid::from_u128(id),
                time_ms: t,
                active_clients: 0,
            });
        }
        let order: Vec<(u128, u64)> = log
            .iter()
            .map(|e| (e.request_id.as_u128(), e.time_ms))
            .collect();
        assert_eq!(order, vec![(1, 20), (2, 20), (3, 30), (9, 10)]);
        let copy = log.clone();
        log.prune(25, 0);
        assert_eq!((log.len(), copy.len()), (1, 4));
    }
}
