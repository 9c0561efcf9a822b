//! Judges the damaged end of the newest log segment: a write cut short by a crash (cut it off:
//! nothing in it was acknowledged) or damage to records that were acknowledged (refuse to
//! open: cutting would drop them without a word).
//!
//! Two facts of the writer decide it. It writes only into space that holds zeros (a
//! preallocated segment, or past the end of an appended one) and never rewrites a byte, so
//! the part of an interrupted write that did not reach the disk reads as zeros, in whole
//! sectors. And it starts a group only after the one before is durable, so the records of a
//! torn write are the last ones of the log. Hence:
//! - a damaged record with zeros where the disk lost a sector is torn (as etcd's WAL judges
//!   one);
//! - otherwise, a valid entry further on, newer than the last good one, means acknowledged
//!   records follow the damage (a flipped bit): damaged;
//! - otherwise (garbage to the end, stale blocks a file system exposed after a crash) it is
//!   torn.
//!
//! A flipped bit in the very last record is indistinguishable from a torn write and is cut.

use crate::store::frame::{frames_after, lost_a_sector, FrameDefect};
use crate::store::wal::record::{self, Record};

/// What the damaged end of the newest segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// A write cut short: cut the segment at the damaged record.
    Torn,
    /// Acknowledged records follow the damage: the first newer entry found after it.
    Damaged {
        /// Offset of that entry's record.
        offset: usize,
        /// Its log index.
        index: u64,
    },
}

/// Judges the damaged record at `offset` of the segment `bytes` (see the module doc);
/// `last_index` is the index of the last good entry before it.
pub(super) fn judge(
    bytes: &[u8],
    offset: usize,
    defect: FrameDefect,
    last_index: Option<u64>,
) -> Tail {
    if lost_a_sector(bytes, offset, defect) {
        return Tail::Torn;
    }
    match newer_entry_after(bytes, offset, last_index) {
        Some((offset, index)) => Tail::Damaged { offset, index },
        None => Tail::Torn,
    }
}

/// The first valid entry record after `offset` whose index is above `last_index`, if any
/// (its offset and index).
fn newer_entry_after(bytes: &[u8], offset: usize, last_index: Option<u64>) -> Option<(usize, u64)> {
    frames_after(bytes, offset, &[record::KIND_ENTRY]).find_map(|f| {
        match record::decode(f.kind, f.payload) {
            Ok(Some(Record::Entry(id, _))) if last_index.is_none_or(|l| id.index > l) => {
                Some((f.offset, id.index))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::frame::{check_frame, put_frame, SECTOR};

    /// A segment body of entry-like records (`n` of them, `size` bytes of payload each,
    /// never zero), as the real log frames them; returns the bytes and each record's offset.
    fn records(first_index: u64, n: u64, size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for i in first_index..first_index + n {
            offsets.push(buf.len());
            let body = vec![0x5a; size];
            let id = crate::LogId::new(openraft::CommittedLeaderId::new(1, 1), i);
            let mut payload = Vec::new();
            let kind = record::encode(&Record::Entry(id, &body), &mut payload);
            put_frame(&mut buf, kind, &payload);
        }
        (buf, offsets)
    }

    fn defect_at(bytes: &[u8], offset: usize) -> FrameDefect {
        check_frame(&bytes[offset..]).expect_err("damaged")
    }

    /// Judges `after` written behind `records(first, n, 200)`, whose last index is the last
    /// good one.
    fn judge_what_follows(first: u64, n: u64, after: impl IntoIterator<Item = u8>) -> Tail {
        let (mut bytes, _) = records(first, n, 200);
        let end = bytes.len();
        bytes.extend(after);
        judge(&bytes, end, defect_at(&bytes, end), Some(first + n - 1))
    }

    #[test]
    fn a_flipped_bit_with_newer_entries_after_it_is_damage() {
        let (mut bytes, offsets) = records(1, 20, 200);
        let hit = offsets[5] + 40;
        bytes[hit] ^= 0x04;
        let d = defect_at(&bytes, offsets[5]);
        assert_eq!(d, FrameDefect::BadCrc);
        assert_eq!(
            judge(&bytes, offsets[5], d, Some(5)),
            Tail::Damaged {
                offset: offsets[6],
                index: 7
            }
        );
    }

    #[test]
    fn a_flipped_length_with_newer_entries_after_it_is_damage() {
        let (mut bytes, offsets) = records(1, 20, 200);
        bytes[offsets[3] + 3] ^= 0x80; // the length's top byte: far beyond the file
        let d = defect_at(&bytes, offsets[3]);
        assert!(matches!(d, FrameDefect::BadLength(_)), "{d:?}");
        assert!(matches!(
            judge(&bytes, offsets[3], d, Some(3)),
            Tail::Damaged { index: 5, .. }
        ));
        let (mut bytes, offsets) = records(1, 20, 200);
        bytes[offsets[3] + 1] ^= 0x01; // 256 bytes longer: the frame takes in the next one
        let d = defect_at(&bytes, offsets[3]);
        assert_eq!(d, FrameDefect::BadCrc);
        assert!(matches!(
            judge(&bytes, offsets[3], d, Some(3)),
            Tail::Damaged { .. }
        ));
    }

    #[test]
    fn a_lost_sector_is_a_torn_write_even_with_later_sectors_on_disk() {
        // A group of records written at once; the disk kept every sector but one.
        let (mut bytes, offsets) = records(1, 40, 200);
        let lost = (offsets[10] / SECTOR + 1) * SECTOR;
        bytes[lost..lost + SECTOR].fill(0);
        let (bad, d) = crate::store::frame::FrameReader::new(&bytes, 0)
            .by_ref()
            .last()
            .map(|f| f.offset + f.size)
            .map(|o| (o, defect_at(&bytes, o)))
            .unwrap();
        assert!(bad <= lost && lost < bad + 300, "{bad} {lost}");
        assert_eq!(judge(&bytes, bad, d, Some(10)), Tail::Torn);
    }

    #[test]
    fn a_lost_first_sector_is_a_torn_write() {
        // The record starts in a sector whose write was lost: its header reads as zeros.
        let (mut bytes, offsets) = records(1, 40, 200);
        let at = offsets[12];
        let sector = at / SECTOR * SECTOR;
        bytes[at..sector + SECTOR].fill(0);
        let d = defect_at(&bytes, at);
        assert_eq!(judge(&bytes, at, d, Some(12)), Tail::Torn);
    }

    #[test]
    fn garbage_or_a_cut_at_the_end_is_a_torn_write() {
        let garbage = [&[0x5a; 13][..], b"\x40\x00\x00\x00garbage"].concat();
        assert_eq!(judge_what_follows(1, 10, garbage), Tail::Torn);
        // A flipped bit in the very last record looks the same as a torn one.
        let (mut bytes, offsets) = records(1, 10, 200);
        let last = offsets[9];
        bytes[last + 30] ^= 1;
        assert_eq!(
            judge(&bytes, last, defect_at(&bytes, last), Some(9)),
            Tail::Torn
        );
        // Cut short inside the last record.
        let (bytes, _) = records(1, 10, 200);
        let cut = &bytes[..last + 100];
        assert_eq!(judge(cut, last, defect_at(cut, last), Some(9)), Tail::Torn);
    }

    #[test]
    fn megabytes_of_garbage_after_the_end_are_a_torn_write() {
        // Stale blocks a file system exposed after a crash: random bytes, some of them
        // looking like record headers of every length.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let garbage = (0..4 << 20).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        });
        assert_eq!(judge_what_follows(1, 10, garbage), Tail::Torn);
    }

    #[test]
    fn older_entries_after_the_damage_do_not_count() {
        // Stale records of an earlier segment (lower indexes) after a torn end.
        let stale = [&[0x33; 100][..], &records(1, 5, 200).0].concat();
        assert_eq!(judge_what_follows(50, 5, stale), Tail::Torn);
    }
}
