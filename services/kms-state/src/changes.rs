//! [`Changes`]: which keys a command touched, so that a store writes only those.

use std::collections::BTreeSet;

use uuid::Uuid;

/// Identifies one inventory entry: a CMID is counted separately in each count group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey {
    /// Count group.
    pub count_group: String,
    /// Client machine id.
    pub cmid: Uuid,
}

/// The keys touched by one command (or, after [`Changes::merge`], by a batch).
///
/// Upserted and removed sets are kept disjoint with "last operation wins" semantics, so a store
/// can write upserted keys from the final in-memory state and delete removed ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Inventory entries inserted or updated.
    pub clients_upserted: BTreeSet<ClientKey>,
    /// Inventory entries pruned (30-day expiry).
    pub clients_removed: BTreeSet<ClientKey>,
    /// The global statistics changed.
    pub global_stats: bool,
    /// Count groups whose statistics changed.
    pub group_stats: BTreeSet<String>,
    /// Count groups whose ePID was set.
    pub epids_set: BTreeSet<String>,
    /// Request ids remembered for deduplication.
    pub requests_added: BTreeSet<Uuid>,
    /// Request ids forgotten (retention expired).
    pub requests_removed: BTreeSet<Uuid>,
}

impl Changes {
    /// True when nothing changed (e.g. a duplicate request or a repeated SetEpid).
    pub fn is_empty(&self) -> bool {
        self.clients_upserted.is_empty()
            && self.clients_removed.is_empty()
            && !self.global_stats
            && self.group_stats.is_empty()
            && self.epids_set.is_empty()
            && self.requests_added.is_empty()
            && self.requests_removed.is_empty()
    }

    /// Folds in the changes of a command applied after those already recorded.
    pub fn merge(&mut self, later: Changes) {
        for k in later.clients_removed {
            self.client_removed(k);
        }
        for k in later.clients_upserted {
            self.client_upserted(k);
        }
        self.global_stats |= later.global_stats;
        self.group_stats.extend(later.group_stats);
        self.epids_set.extend(later.epids_set);
        for id in later.requests_removed {
            self.request_removed(id);
        }
        for id in later.requests_added {
            self.request_added(id);
        }
    }

    pub(crate) fn client_upserted(&mut self, key: ClientKey) {
        self.clients_removed.remove(&key);
        self.clients_upserted.insert(key);
    }

    pub(crate) fn client_removed(&mut self, key: ClientKey) {
        self.clients_upserted.remove(&key);
        self.clients_removed.insert(key);
    }

    pub(crate) fn request_added(&mut self, id: Uuid) {
        self.requests_removed.remove(&id);
        self.requests_added.insert(id);
    }

    pub(crate) fn request_removed(&mut self, id: Uuid) {
        self.requests_added.remove(&id);
        self.requests_removed.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_last_operation() {
        let key = ClientKey {
            count_group: "windows".into(),
            cmid: Uuid::from_u128(1),
        };
        let mut a = Changes::default();
        a.client_upserted(key.clone());
        a.request_added(Uuid::from_u128(9));
        let mut b = Changes::default();
        b.client_removed(key.clone());
        b.request_removed(Uuid::from_u128(9));
        a.merge(b);
        assert!(a.clients_upserted.is_empty() && a.clients_removed.contains(&key));
        assert!(a.requests_added.is_empty() && a.requests_removed.len() == 1);
        let mut c = Changes::default();
        c.client_upserted(key.clone());
        a.merge(c);
        assert!(a.clients_removed.is_empty() && a.clients_upserted.contains(&key));
        assert!(!a.is_empty());
        assert!(Changes::default().is_empty());
    }
}
