//! Request-id deduplication: makes [`Command::Activation`](crate::Command::Activation) idempotent.
//!
//! Owns the memory of applied request ids with their result, and its expiry: an id applied at
//! `t` is remembered while `command time < t + retention`, then forgotten. An index ordered by
//! `(time_ms, request_id)` makes forgetting cost proportional to the number of expired ids.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default time an applied request id is remembered: 24 hours in milliseconds.
pub const DEFAULT_DEDUP_RETENTION_MS: u64 = 24 * 3600 * 1000;

/// An applied request id and the result it produced, returned again for duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// The request id of the applied activation.
    pub request_id: Uuid,
    /// Command time of the activation (unix ms); drives expiry.
    pub time_ms: u64,
    /// The `active_clients` it returned.
    pub active_clients: u32,
}

impl DedupEntry {
    fn expired_at(&self, now_ms: u64, retention_ms: u64) -> bool {
        self.time_ms.saturating_add(retention_ms) <= now_ms
    }
}

/// Applied request ids with their expiry index.
///
/// Serialized as the list of entries; the index is rebuilt on deserialization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<DedupEntry>", into = "Vec<DedupEntry>")]
pub(crate) struct DedupLog {
    entries: BTreeMap<Uuid, DedupEntry>,
    by_time: BTreeSet<(u64, Uuid)>,
}

impl From<Vec<DedupEntry>> for DedupLog {
    fn from(list: Vec<DedupEntry>) -> Self {
        let mut log = DedupLog::default();
        for e in list {
            log.insert(e);
        }
        log
    }
}

impl From<DedupLog> for Vec<DedupEntry> {
    fn from(log: DedupLog) -> Self {
        log.entries.into_values().collect()
    }
}

impl DedupLog {
    /// The stored result of `id` if it is remembered and not expired at `now_ms`.
    pub(crate) fn lookup(&self, id: &Uuid, now_ms: u64, retention_ms: u64) -> Option<u32> {
        self.entries
            .get(id)
            .filter(|e| !e.expired_at(now_ms, retention_ms))
            .map(|e| e.active_clients)
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<&DedupEntry> {
        self.entries.get(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &DedupEntry> {
        self.entries.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts or replaces the entry for `entry.request_id`.
    pub(crate) fn insert(&mut self, entry: DedupEntry) {
        if let Some(old) = self.entries.insert(entry.request_id, entry) {
            self.by_time.remove(&(old.time_ms, old.request_id));
        }
        self.by_time.insert((entry.time_ms, entry.request_id));
    }

    /// Forgets ids expired at `now_ms`; returns them.
    pub(crate) fn prune(&mut self, now_ms: u64, retention_ms: u64) -> Vec<Uuid> {
        let Some(cutoff) = now_ms.checked_sub(retention_ms) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        while let Some(&(t, id)) = self.by_time.first() {
            if t > cutoff {
                break;
            }
            self.by_time.pop_first();
            self.entries.remove(&id);
            removed.push(id);
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
        assert!(log.prune(1_000 + 99, 100).is_empty());
        assert_eq!(log.lookup(&id, 1_000 + 100, 100), None);
        assert_eq!(log.prune(1_000 + 100, 100), vec![id]);
        assert_eq!(log.len(), 0);
        assert!(log.prune(0, u64::MAX).is_empty());
    }

    #[test]
    fn reinsert_moves_index() {
        let mut log = DedupLog::default();
        let id = Uuid::from_u128(1);
        for t in [5, 9] {
            log.insert(DedupEntry {
                request_id: id,
                time_ms: t,
                active_clients: 1,
            });
        }
        assert_eq!(log.by_time.len(), 1);
        assert!(log.prune(8, 0).is_empty());
        assert_eq!(log.prune(9, 0), vec![id]);
    }
}
