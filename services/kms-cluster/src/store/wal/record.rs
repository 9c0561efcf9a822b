//! The records of the Raft write-ahead log and their fixed binary layout.
//!
//! Every record is one frame (see `store::frame`) whose kind byte says which record it is. All
//! integers are little-endian; a log id is `term u64 | leader node u64 | index u64`; an optional
//! value is a presence byte (0 or 1) followed by the value when present. The entry body itself
//! is the entry codec's bytes (see `store::codec`).
//!
//! | kind | record | payload |
//! |---|---|---|
//! | 1 | [`Record::Entry`] | log id, entry bytes |
//! | 2 | [`Record::Vote`] | term, node, committed (u8) |
//! | 3 | [`Record::Committed`] | optional log id |
//! | 4 | [`Record::Truncate`] | first index removed (u64) |
//! | 5 | [`Record::Purge`] | log id purged up to (inclusive) |
//! | 6 | [`Record::State`] | optional vote, optional committed, optional purged |
//!
//! A segment starts with a `State` record holding the vote, committed and purge pointers as they
//! were when it was opened, so that whole older segments can be deleted without losing them.

use openraft::CommittedLeaderId;

use crate::{LogId, Vote};

/// Kind byte of [`Record::Entry`].
pub(super) const KIND_ENTRY: u8 = 1;
const KIND_VOTE: u8 = 2;
const KIND_COMMITTED: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_PURGE: u8 = 5;
const KIND_STATE: u8 = 6;

/// The pointers a segment header carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pointers {
    /// The last saved vote.
    pub vote: Option<Vote>,
    /// The last saved committed log id.
    pub committed: Option<LogId>,
    /// The last purged log id.
    pub purged: Option<LogId>,
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A log entry: its id and its encoded body.
    Entry(LogId, &'a [u8]),
    /// A vote was saved.
    Vote(Vote),
    /// The committed log id was saved.
    Committed(Option<LogId>),
    /// Entries from this index on were removed.
    Truncate(u64),
    /// Entries up to this log id (inclusive) were purged.
    Purge(LogId),
    /// Segment header.
    State(Pointers),
}

/// The payload does not hold what its kind says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} record")]
pub struct Malformed {
    /// Which record.
    pub what: &'static str,
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_log_id(out: &mut Vec<u8>, id: &LogId) {
    put_u64(out, id.leader_id.term);
    put_u64(out, id.leader_id.node_id);
    put_u64(out, id.index);
}

fn put_opt_log_id(out: &mut Vec<u8>, id: &Option<LogId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_log_id(out, id);
        }
    }
}

fn put_vote(out: &mut Vec<u8>, v: &Vote) {
    put_u64(out, v.leader_id.term);
    put_u64(out, v.leader_id.node_id);
    out.push(u8::from(v.committed));
}

/// Encodes a record as (kind, payload) into `out` (payload only; the caller frames it).
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) -> u8 {
    match record {
        Record::Entry(id, body) => {
            put_log_id(out, id);
            out.extend_from_slice(body);
            KIND_ENTRY
        }
        Record::Vote(v) => {
            put_vote(out, v);
            KIND_VOTE
        }
        Record::Committed(c) => {
            put_opt_log_id(out, c);
            KIND_COMMITTED
        }
        Record::Truncate(from) => {
            put_u64(out, *from);
            KIND_TRUNCATE
        }
        Record::Purge(id) => {
            put_log_id(out, id);
            KIND_PURGE
        }
        Record::State(p) => {
            match &p.vote {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    put_vote(out, v);
                }
            }
            put_opt_log_id(out, &p.committed);
            put_opt_log_id(out, &p.purged);
            KIND_STATE
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed { what: self.what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed { what: self.what }),
        }
    }

    fn log_id(&mut self) -> Result<LogId, Malformed> {
        let term = self.u64()?;
        let node = self.u64()?;
        let index = self.u64()?;
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    fn opt_log_id(&mut self) -> Result<Option<LogId>, Malformed> {
        if self.flag()? {
            self.log_id().map(Some)
        } else {
            Ok(None)
        }
    }

    fn vote(&mut self) -> Result<Vote, Malformed> {
        let term = self.u64()?;
        let node = self.u64()?;
        Ok(if self.flag()? {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        })
    }

    fn end(self) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed { what: self.what })
        }
    }
}

/// Decodes a record from its frame kind and payload. `Ok(None)`: an unknown kind (written by a
/// newer version), which the caller must refuse.
pub fn decode(kind: u8, payload: &[u8]) -> Result<Option<Record<'_>>, Malformed> {
    let what = match kind {
        KIND_ENTRY => "entry",
        KIND_VOTE => "vote",
        KIND_COMMITTED => "committed",
        KIND_TRUNCATE => "truncate",
        KIND_PURGE => "purge",
        KIND_STATE => "state",
        _ => return Ok(None),
    };
    let mut c = Cursor { buf: payload, what };
    let record = match kind {
        KIND_ENTRY => {
            let id = c.log_id()?;
            return Ok(Some(Record::Entry(id, c.buf)));
        }
        KIND_VOTE => Record::Vote(c.vote()?),
        KIND_COMMITTED => Record::Committed(c.opt_log_id()?),
        KIND_TRUNCATE => Record::Truncate(c.u64()?),
        KIND_PURGE => Record::Purge(c.log_id()?),
        _ => {
            let vote = if c.flag()? { Some(c.vote()?) } else { None };
            let committed = c.opt_log_id()?;
            let purged = c.opt_log_id()?;
            Record::State(Pointers {
                vote,
                committed,
                purged,
            })
        }
    };
    c.end()?;
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(t: u64, n: u64, i: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(t, n), i)
    }

    #[test]
    fn records_round_trip() {
        let records = [
            Record::Entry(id(3, 2, 17), b"body"),
            Record::Vote(Vote::new(4, 1)),
            Record::Vote(Vote::new_committed(5, 3)),
            Record::Committed(None),
            Record::Committed(Some(id(1, 1, 1))),
            Record::Truncate(9),
            Record::Purge(id(2, 2, 100)),
            Record::State(Pointers::default()),
            Record::State(Pointers {
                vote: Some(Vote::new_committed(7, 2)),
                committed: Some(id(7, 2, 70)),
                purged: Some(id(6, 1, 50)),
            }),
        ];
        for r in &records {
            let mut payload = Vec::new();
            let kind = encode(r, &mut payload);
            assert_eq!(decode(kind, &payload).unwrap().as_ref(), Some(r));
            // Cut payloads never decode as something else silently (entries excepted: their
            // body is opaque here and checked by the entry codec).
            if !matches!(r, Record::Entry(..)) {
                for cut in 0..payload.len() {
                    assert!(decode(kind, &payload[..cut]).is_err(), "{r:?} cut {cut}");
                }
            }
        }
        assert_eq!(decode(99, b"").unwrap(), None);
    }
}
