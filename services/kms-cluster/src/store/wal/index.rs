//! [`LogIndex`]: what the log holds, in memory — the pointers (vote, committed, purged), where
//! each live entry sits on disk, and a bounded cache of recent decoded entries.
//!
//! Entries are kept in memory only while they are not yet on disk and, after that, as long as
//! the newest ones fit in `cache_limit` bytes (counted by encoded size; replication and apply
//! read the newest entries); older ones are read back from their segment. So memory does not
//! grow with the log.

use std::collections::BTreeMap;

use super::record::Pointers;
use crate::{Entry, LogId};

/// Where a written entry's frame is: segment sequence number, offset and frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Segment sequence number.
    pub seg: u64,
    /// Offset of the frame in the segment file.
    pub offset: u64,
    /// Size of the whole frame.
    pub size: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    log_id: LogId,
    loc: Option<Loc>,
}

/// A read that must go to disk or can be served from memory.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Cached.
    Hit(Entry),
    /// On disk at this place, with the log id it must carry.
    Disk(LogId, Loc),
}

/// The in-memory view of the log (see the module docs).
#[derive(Debug)]
pub struct LogIndex {
    /// Vote, committed and purge pointers.
    pub pointers: Pointers,
    slots: BTreeMap<u64, Slot>,
    cache: BTreeMap<u64, (Entry, usize)>,
    cache_bytes: usize,
    cache_limit: usize,
}

/// An entry at or below the purge point was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("log entry {got} is at or below the purged part of the log (expected index {expected} or later)")]
pub struct NotContiguous {
    /// The index that would continue the log.
    pub expected: u64,
    /// The index offered.
    pub got: u64,
}

impl LogIndex {
    /// An empty log keeping written entries of up to `cache_limit` encoded bytes in memory.
    pub fn new(cache_limit: usize) -> Self {
        LogIndex {
            pointers: Pointers::default(),
            slots: BTreeMap::new(),
            cache: BTreeMap::new(),
            cache_bytes: 0,
            cache_limit,
        }
    }

    fn recount(&mut self) {
        self.cache_bytes = self.cache.values().map(|(_, n)| n).sum();
    }

    /// Log id of the newest entry (or the purge pointer when no entry is left).
    pub fn last_log_id(&self) -> Option<LogId> {
        self.slots
            .last_key_value()
            .map(|(_, s)| s.log_id)
            .or(self.pointers.purged)
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Adds an entry after the others; `loc` is known when replaying, `entry` (with its encoded
    /// size) when appending. An entry at or below the purge point is dropped (it is covered by
    /// the state machine already; openraft's own storage suite appends such entries); one at or
    /// below the last entry replaces it and everything after (openraft truncates first anyway,
    /// and a replay must see the same log as the writer did).
    pub fn push(
        &mut self,
        log_id: LogId,
        loc: Option<Loc>,
        entry: Option<(Entry, usize)>,
    ) -> Result<(), NotContiguous> {
        if self
            .pointers
            .purged
            .is_some_and(|p| log_id.index <= p.index)
        {
            return Ok(());
        }
        if self
            .slots
            .last_key_value()
            .is_some_and(|(last, _)| *last >= log_id.index)
        {
            self.truncate(log_id.index);
        }
        self.slots.insert(log_id.index, Slot { log_id, loc });
        if let Some((e, size)) = entry {
            self.cache_bytes += size;
            self.cache.insert(log_id.index, (e, size));
        }
        Ok(())
    }

    /// Removes entries with index >= `from`.
    pub fn truncate(&mut self, from: u64) {
        self.slots.split_off(&from);
        self.cache.split_off(&from);
        self.recount();
    }

    /// Removes entries up to `upto.index` (inclusive) and records the purge pointer.
    pub fn purge(&mut self, upto: LogId) {
        if self.pointers.purged.is_some_and(|p| p.index >= upto.index) {
            return;
        }
        self.pointers.purged = Some(upto);
        self.slots = self.slots.split_off(&(upto.index + 1));
        self.cache = self.cache.split_off(&(upto.index + 1));
        self.recount();
    }

    /// Records where the writer put an entry (if the entry is still the same one) and drops
    /// cached entries beyond the limit that are on disk.
    pub fn written(&mut self, log_id: LogId, loc: Loc) {
        if let Some(slot) = self.slots.get_mut(&log_id.index) {
            if slot.log_id == log_id {
                slot.loc = Some(loc);
            }
        }
    }

    /// Drops the oldest cached entries that are on disk until the cache fits its limit.
    pub fn trim_cache(&mut self) {
        while self.cache_bytes > self.cache_limit {
            let Some((&oldest, &(_, size))) = self.cache.first_key_value() else {
                break;
            };
            let on_disk = self.slots.get(&oldest).is_none_or(|s| s.loc.is_some());
            if !on_disk {
                break;
            }
            self.cache.pop_first();
            self.cache_bytes -= size;
        }
    }

    /// How to read the entries with indexes in `[start, end)` that exist.
    pub fn lookup(&self, start: u64, end: u64) -> Vec<Lookup> {
        if start >= end {
            return Vec::new();
        }
        self.slots
            .range(start..end)
            .filter_map(|(i, slot)| match self.cache.get(i) {
                Some((e, _)) => Some(Lookup::Hit(e.clone())),
                None => slot.loc.map(|loc| Lookup::Disk(slot.log_id, loc)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn id(i: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), i)
    }

    fn entry(i: u64) -> Entry {
        Entry {
            log_id: id(i),
            payload: EntryPayload::Blank,
        }
    }

    fn loc(i: u64) -> Loc {
        Loc {
            seg: 1,
            offset: i * 100,
            size: 50,
        }
    }

    #[test]
    fn append_truncate_purge_keep_contiguity() {
        let mut ix = LogIndex::new(2);
        for i in 1..=5 {
            ix.push(id(i), None, Some((entry(i), 1))).unwrap();
        }
        ix.truncate(4);
        assert_eq!(ix.last_log_id(), Some(id(3)));
        ix.push(id(4), None, Some((entry(4), 1))).unwrap();
        ix.purge(id(2));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.lookup(0, 100).len(), 2);
        // Purging past the end leaves an empty log that continues after the purge point.
        ix.purge(id(10));
        assert_eq!(ix.len(), 0);
        assert_eq!(ix.last_log_id(), Some(id(10)));
        ix.push(id(9), None, None).unwrap();
        assert_eq!(ix.len(), 0, "below the purge point: dropped");
        assert!(ix.push(id(11), None, None).is_ok());
        // Appending over the end replaces the tail.
        ix.push(id(12), None, None).unwrap();
        ix.push(id(13), None, None).unwrap();
        let other = LogId::new(CommittedLeaderId::new(2, 2), 12);
        ix.push(other, None, None).unwrap();
        assert_eq!(ix.last_log_id(), Some(other));
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn cache_keeps_unwritten_entries_and_evicts_written_ones() {
        let mut ix = LogIndex::new(2);
        for i in 1..=4 {
            ix.push(id(i), None, Some((entry(i), 1))).unwrap();
        }
        ix.trim_cache();
        assert!(ix.lookup(1, 5).iter().all(|l| matches!(l, Lookup::Hit(_))));
        for i in 1..=3 {
            ix.written(id(i), loc(i));
        }
        ix.trim_cache();
        let got = ix.lookup(1, 5);
        assert!(matches!(got[0], Lookup::Disk(_, l) if l == loc(1)));
        assert!(matches!(got[1], Lookup::Disk(_, l) if l == loc(2)));
        assert!(matches!(got[2], Lookup::Hit(_)));
        assert!(matches!(got[3], Lookup::Hit(_)));
    }

    #[test]
    fn a_replaced_entry_keeps_its_new_place() {
        let mut ix = LogIndex::new(0);
        ix.push(id(1), None, Some((entry(1), 1))).unwrap();
        ix.truncate(1);
        let other = LogId::new(CommittedLeaderId::new(2, 2), 1);
        ix.push(other, None, None).unwrap();
        // The writer reports the old entry's place late: ignored.
        ix.written(id(1), loc(1));
        assert!(ix.lookup(1, 2).is_empty(), "not on disk yet, not cached");
        ix.written(other, loc(2));
        assert!(matches!(ix.lookup(1, 2)[0], Lookup::Disk(i, _) if i == other));
    }
}
