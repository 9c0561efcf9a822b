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
        preallocate: false,
        direct_io: true,
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
fn a_committed_pointer_is_written_with_the_next_group_or_at_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = reopen(dir.path(), small());
        append(&wal, (1..=3).map(|i| entry(1, i)).collect());
        wal.save_committed(Some(id(1, 2))).unwrap();
        append(&wal, vec![entry(1, 4)]);
        assert_eq!(wal.pointers().committed, Some(id(1, 2)));
    }
    assert_eq!(
        reopen(dir.path(), small()).pointers().committed,
        Some(id(1, 2)),
        "written with the next append"
    );
    {
        let wal = reopen(dir.path(), small());
        wal.save_committed(Some(id(1, 4))).unwrap();
        // No operation follows: the writer writes it when the log is closed.
    }
    assert_eq!(
        reopen(dir.path(), small()).pointers().committed,
        Some(id(1, 4)),
        "written at close"
    );
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

/// Segments large enough that a test's whole log is one, appended (not preallocated).
const ONE_SEGMENT: WalOptions = WalOptions {
    segment_bytes: 1 << 20,
    cache_bytes: 0,
    preallocate: false,
    direct_io: true,
};

#[test]
fn every_torn_tail_is_cut_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ONE_SEGMENT;
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
    // (Direct writes leave the file padded with zeros to a whole block after the records.)
    let end = last.offset + last.size;
    assert!(full[end..].iter().all(|b| *b == 0));
    for cut in last.offset..end {
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
    // The end of the records (direct writes pad the file with zeros to a whole block).
    let n = FrameReader::new(&bytes, segment::MAGIC.len())
        .last()
        .map(|f| f.offset + f.size)
        .unwrap();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let wal = reopen(dir.path(), small());
    assert_eq!(all(&wal), vec![entry(1, 1)]);
}

/// One segment of entries 1..=`n`, each appended (made durable) on its own.
fn one_segment_log(n: u64) -> (tempfile::TempDir, WalOptions) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ONE_SEGMENT;
    let wal = reopen(dir.path(), opts);
    for i in 1..=n {
        append(&wal, vec![entry(1, i)]);
    }
    drop(wal);
    assert_eq!(segment::list(dir.path()).unwrap().len(), 1);
    (dir, opts)
}

#[test]
fn a_flipped_bit_before_acknowledged_records_of_the_newest_segment_refuses_to_open() {
    let (dir, opts) = one_segment_log(200);
    let path = newest(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let frames: Vec<_> = FrameReader::new(&bytes, segment::MAGIC.len())
        .map(|f| (f.offset, f.size))
        .collect();
    let (at, size) = frames[frames.len() / 2];
    bytes[at + size / 2] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), opts) {
        Err(e @ WalError::Corrupt { .. }) => {
            let text = e.to_string();
            assert!(text.contains("followed by acknowledged records"), "{text}");
        }
        other => panic!("expected a damaged segment, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a damaged segment is left as it is, not cut"
    );
}

#[test]
fn a_write_torn_with_a_sector_lost_in_its_middle_is_cut_there() {
    // A power cut while the last group was being written: one sector of it never reached
    // the disk, later ones did. None of that group was acknowledged.
    let (dir, opts) = one_segment_log(200);
    let path = newest(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let lost = bytes.len() / 512 / 2 * 512;
    bytes[lost..lost + 512].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let first_bad = FrameReader::new(&bytes, segment::MAGIC.len())
        .last()
        .map(|f| f.offset + f.size)
        .unwrap();
    assert!(first_bad <= lost);
    let wal = reopen(dir.path(), opts);
    let kept = all(&wal);
    assert!(!kept.is_empty() && kept.len() < 200, "{}", kept.len());
    assert_eq!(
        kept,
        (1..=kept.len() as u64)
            .map(|i| entry(1, i))
            .collect::<Vec<_>>()
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), first_bad as u64);
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

const PREALLOCATED: WalOptions = WalOptions {
    segment_bytes: 64 * 1024,
    cache_bytes: 0,
    preallocate: true,
    direct_io: true,
};

/// A closed log of entries 1, 2, … of term 1 whose newest segment is a preallocated one
/// holding some of them; returns its directory and the last index.
fn preallocated_log() -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let wal = reopen(dir.path(), PREALLOCATED);
    let last = fill_until_preallocated(&wal, dir.path());
    (dir, last)
}

/// Appends entries one by one until the newest segment is a preallocated one (its file
/// already `segment_bytes` long), then a few more into it; returns the last index.
fn fill_until_preallocated(wal: &Wal, dir: &Path) -> u64 {
    for i in 1..=20_000 {
        append(wal, vec![entry(1, i)]);
        let len = std::fs::metadata(newest(dir)).unwrap().len();
        if len == PREALLOCATED.segment_bytes && i > 1 {
            let more = i + 5;
            for j in i + 1..=more {
                append(wal, vec![entry(1, j)]);
            }
            return more;
        }
        if i % 100 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    panic!("the writer never moved to a preallocated segment");
}

#[test]
fn a_preallocated_segment_ends_at_its_zeros() {
    let (dir, last) = preallocated_log();
    let segments = segment::list(dir.path()).unwrap().len();
    let preallocated = newest(dir.path());
    let wal = reopen(dir.path(), PREALLOCATED);
    assert_eq!(
        all(&wal),
        (1..=last).map(|i| entry(1, i)).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::metadata(&preallocated).unwrap().len(),
        PREALLOCATED.segment_bytes,
        "the zeros are the segment's end, not a torn tail to cut off"
    );
    // The log continues after the zeros were read as an end, and comes back again.
    append(&wal, vec![entry(2, last + 1)]);
    drop(wal);
    let wal = reopen(dir.path(), PREALLOCATED);
    assert_eq!(wal.last_log_id(), Some(id(2, last + 1)));
    assert!(
        segments >= 2,
        "an appended and a preallocated segment: {segments}"
    );
}

#[test]
fn a_torn_record_in_a_preallocated_segment_is_cut() {
    let (dir, last) = preallocated_log();
    let path = newest(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let torn = FrameReader::new(&bytes, segment::MAGIC.len())
        .last()
        .map(|f| (f.offset, f.size))
        .unwrap();
    // The last record's second half never reached the disk: zeros where it should be.
    let (from, to) = (torn.0 + torn.1 / 2, torn.0 + torn.1);
    bytes[from..to].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let wal = reopen(dir.path(), PREALLOCATED);
    assert_eq!(
        all(&wal),
        (1..last).map(|i| entry(1, i)).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        torn.0 as u64,
        "the torn record is cut off"
    );
}

#[test]
fn leftover_spares_are_removed_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let wal = reopen(dir.path(), small());
        append(&wal, vec![entry(1, 1)]);
    }
    let stale = dir.path().join("99-0.spare");
    std::fs::write(&stale, b"KMSWAL\x00\x01 half a header").unwrap();
    let wal = reopen(dir.path(), small());
    assert!(!stale.exists());
    assert_eq!(all(&wal), vec![entry(1, 1)]);
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

/// Whether files in `dir` can be opened for direct writes (not on tmpfs, for one).
fn direct_writes_possible(dir: &Path) -> bool {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").unwrap();
    let ok = super::direct::open_segment(&probe).is_ok();
    std::fs::remove_file(&probe).unwrap();
    ok
}

#[test]
fn both_write_paths_keep_everything_across_reopen_rotation_and_purge() {
    for direct_io in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            direct_io,
            ..small()
        };
        {
            let wal = reopen(dir.path(), opts);
            wait(|d| wal.save_vote(Vote::new_committed(2, 1), d));
            for i in 1..=40 {
                append(&wal, vec![entry(2, i)]);
            }
            wait(|d| wal.purge(id(2, 20), d));
            append(&wal, (41..=60).map(|i| entry(2, i)).collect());
            wal.save_committed(Some(id(2, 55))).unwrap();
            assert_eq!(
                all(&wal),
                (21..=60).map(|i| entry(2, i)).collect::<Vec<_>>(),
                "direct_io {direct_io}"
            );
        }
        // Direct writes rewrite whole blocks: the segments written to (appended ones) end at
        // a block boundary; with pwrite they end where their records do.
        let whole_blocks = segment::list(dir.path())
            .unwrap()
            .into_iter()
            .filter(|seq| {
                let len = std::fs::metadata(segment::path(dir.path(), *seq))
                    .unwrap()
                    .len();
                len.is_multiple_of(direct::BLOCK)
            })
            .count();
        if !direct_io {
            assert_eq!(whole_blocks, 0, "pwrite");
        } else if direct_writes_possible(dir.path()) {
            assert!(whole_blocks > 0, "direct writes");
        }
        let wal = reopen(dir.path(), opts);
        assert_eq!(
            all(&wal),
            (21..=60).map(|i| entry(2, i)).collect::<Vec<_>>(),
            "direct_io {direct_io}"
        );
        let p = wal.pointers();
        assert_eq!(p.vote, Some(Vote::new_committed(2, 1)));
        assert_eq!(p.purged, Some(id(2, 20)));
        assert_eq!(p.committed, Some(id(2, 55)));
    }
}
/// A runtime on the calling thread (a log opened on it answers direct writes there).
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Appends entry `i` of term 1; the receiver gets whether it became durable.
fn append_async(wal: &Wal, i: u64) -> tokio::sync::oneshot::Receiver<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    wal.append(
        vec![entry(1, i)],
        Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }),
    )
    .unwrap();
    rx
}

#[test]
fn groups_answered_on_the_runtime_are_durable_one_at_a_time_and_many_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    runtime.block_on(async {
        // Opened on the runtime: a task there answers completed direct writes.
        let wal = reopen(dir.path(), WalOptions::default());
        // One at a time (no next group to push the previous one out).
        for i in 1..=100 {
            assert_eq!(append_async(&wal, i).await, Ok(true), "entry {i}");
        }
        // Many at once.
        let mut answers = Vec::new();
        for i in 101..=600 {
            answers.push(append_async(&wal, i));
        }
        for (i, rx) in answers.into_iter().enumerate() {
            assert_eq!(rx.await, Ok(true), "entry {}", i + 101);
        }
        assert_eq!(all(&wal).len(), 600);
    });
    drop(runtime);
    let wal = reopen(dir.path(), WalOptions::default());
    assert_eq!(
        all(&wal),
        (1..=600).map(|i| entry(1, i)).collect::<Vec<_>>()
    );
}

#[test]
fn a_log_opened_on_a_runtime_that_is_gone_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = current_thread_runtime();
    let wal = runtime.block_on(async { reopen(dir.path(), WalOptions::default()) });
    // The task that would answer direct writes is gone with its runtime: the writer answers
    // each group itself shortly after.
    drop(runtime);
    for i in 1..=20 {
        append(&wal, vec![entry(1, i)]);
    }
    drop(wal);
    let wal = reopen(dir.path(), WalOptions::default());
    assert_eq!(wal.last_log_id(), Some(id(1, 20)));
}
