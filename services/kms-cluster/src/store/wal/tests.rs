//! Crash-safety tests of the write-ahead log: reopen after every kind of operation, rotation
//! and purge, torn and corrupted files.

use std::path::Path;

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::ClusterRequest;

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(ClusterRequest::default()),
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 300,
        cache_bytes: 0,
    }
}

/// Runs a writer operation and waits until it is durable.
fn wait(op: impl FnOnce(Done) -> Result<(), WalError>) {
    let (tx, rx) = std::sync::mpsc::channel();
    op(Box::new(move |r| tx.send(r).unwrap())).unwrap();
    rx.recv().unwrap().unwrap();
}

fn append(wal: &Wal, entries: Vec<Entry>) {
    wait(|d| wal.append(entries, d));
}

/// All entries of the log, read the way openraft reads them (cache or disk).
fn all(wal: &Wal) -> Vec<Entry> {
    wal.lookup(0, u64::MAX)
        .into_iter()
        .map(|l| match l {
            Lookup::Hit(e) => e,
            Lookup::Disk(id, loc) => wal.read_at(id, loc).unwrap(),
        })
        .collect()
}

fn reopen(dir: &Path, options: WalOptions) -> Wal {
    Wal::open(dir, options).unwrap()
}

#[test]
fn everything_comes_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = reopen(dir.path(), WalOptions::default());
        wait(|d| wal.save_vote(Vote::new(1, 1), d));
        append(&wal, (1..=5).map(|i| entry(1, i)).collect());
        wait(|d| wal.save_vote(Vote::new_committed(2, 1), d));
        // Replace 4 and 5 with entries of term 2.
        wait(|d| wal.truncate(4, d));
        append(&wal, (4..=6).map(|i| entry(2, i)).collect());
        wal.save_committed(Some(id(2, 5))).unwrap();
        wait(|d| wal.sync(d));
    }
    let wal = reopen(dir.path(), WalOptions::default());
    let p = wal.pointers();
    assert_eq!(p.vote, Some(Vote::new_committed(2, 1)));
    assert_eq!(p.committed, Some(id(2, 5)));
    let got = all(&wal);
    let want: Vec<Entry> = (1..=3)
        .map(|i| entry(1, i))
        .chain((4..=6).map(|i| entry(2, i)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(wal.last_log_id(), Some(id(2, 6)));
}

#[test]
fn purge_deletes_whole_segments_and_keeps_pointers() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = reopen(dir.path(), small());
        wait(|d| wal.save_vote(Vote::new_committed(3, 1), d));
        for i in 1..=60 {
            append(&wal, vec![entry(3, i)]);
        }
        let before = segment::list(dir.path()).unwrap().len();
        assert!(before > 5, "small segments rotate: {before}");
        wait(|d| wal.purge(id(3, 50), d));
        let after = segment::list(dir.path()).unwrap().len();
        assert!(
            after < before,
            "purge deleted segments: {before} -> {after}"
        );
        assert_eq!(
            all(&wal),
            (51..=60).map(|i| entry(3, i)).collect::<Vec<_>>()
        );
    }
    let wal = reopen(dir.path(), small());
    assert_eq!(wal.pointers().vote, Some(Vote::new_committed(3, 1)));
    assert_eq!(wal.pointers().purged, Some(id(3, 50)));
    assert_eq!(
        all(&wal),
        (51..=60).map(|i| entry(3, i)).collect::<Vec<_>>()
    );
    // Purging everything leaves an empty log that continues after the purge point.
    wait(|d| wal.purge(id(3, 60), d));
    drop(wal);
    let wal = reopen(dir.path(), small());
    assert!(all(&wal).is_empty());
    assert_eq!(wal.last_log_id(), Some(id(3, 60)));
    append(&wal, vec![entry(4, 61)]);
    append(&wal, vec![entry(4, 60)]);
    assert_eq!(
        wal.last_log_id(),
        Some(id(4, 61)),
        "entries below the purge point are dropped"
    );
}

/// The newest segment's file and the length of its last complete state (everything written).
fn newest(dir: &Path) -> std::path::PathBuf {
    segment::path(dir, *segment::list(dir).unwrap().last().unwrap())
}

#[test]
fn every_torn_tail_is_cut_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_bytes: 1 << 20,
        cache_bytes: 0,
    };
    {
        let wal = reopen(dir.path(), opts);
        append(&wal, (1..=3).map(|i| entry(1, i)).collect());
        append(&wal, vec![entry(1, 4)]);
    }
    let path = newest(dir.path());
    let full = std::fs::read(&path).unwrap();
    // Where the last entry's frame starts: after entries 1..=3.
    let frames: Vec<_> = FrameReader::new(&full, segment::MAGIC.len()).collect();
    let last = frames.last().unwrap();
    for cut in last.offset..full.len() {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(copy.path().join(path.file_name().unwrap()), &full[..cut]).unwrap();
        let wal = reopen(copy.path(), opts);
        assert_eq!(
            all(&wal),
            (1..=3).map(|i| entry(1, i)).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        // The log continues where the good part ended, and survives another reopen.
        append(&wal, vec![entry(2, 4)]);
        drop(wal);
        let wal = reopen(copy.path(), opts);
        assert_eq!(wal.last_log_id(), Some(id(2, 4)), "cut at {cut}");
    }
}

#[test]
fn a_flipped_bit_in_the_newest_record_is_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = reopen(dir.path(), small());
        append(&wal, vec![entry(1, 1), entry(1, 2)]);
    }
    let path = newest(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let wal = reopen(dir.path(), small());
    assert_eq!(all(&wal), vec![entry(1, 1)]);
}

#[test]
fn damage_in_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = reopen(dir.path(), small());
        for i in 1..=20 {
            append(&wal, vec![entry(1, i)]);
        }
    }
    let first = segment::path(dir.path(), segment::list(dir.path()).unwrap()[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(WalError::Corrupt { path, .. }) => assert_eq!(path, first),
        other => panic!("expected a corrupt segment error, got {other:?}"),
    }
}

#[test]
fn a_second_process_cannot_open_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = reopen(dir.path(), small());
    assert!(matches!(
        Wal::open(dir.path(), small()),
        Err(WalError::Locked(_))
    ));
}

#[test]
fn group_commit_answers_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let wal = reopen(dir.path(), WalOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 1..=500 {
        let tx = tx.clone();
        wal.append(
            vec![entry(1, i)],
            Box::new(move |r| tx.send((i, r.is_ok())).unwrap()),
        )
        .unwrap();
    }
    drop(tx);
    let mut acked: Vec<u64> = rx
        .iter()
        .map(|(i, ok)| {
            assert!(ok);
            i
        })
        .collect();
    acked.sort_unstable();
    assert_eq!(acked, (1..=500).collect::<Vec<_>>());
    drop(wal);
    assert_eq!(
        reopen(dir.path(), WalOptions::default()).last_log_id(),
        Some(id(1, 500))
    );
}

#[test]
fn dir_size_counts_files_in_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), b"x").unwrap();
    std::fs::write(dir.path().join("db"), b"y").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/f"), b"abc").unwrap();
    assert_eq!(super::dir_size(dir.path()), 5);
}
