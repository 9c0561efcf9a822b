//! Segment files of the write-ahead log: naming, creation and replay of one file.
//!
//! A segment is `<seq>.wal` (16 hex digits, so names sort like sequence numbers) and starts with
//! the 8-byte magic [`MAGIC`] followed by frames (see `store::frame`). Records are only ever
//! added after the last one; whole segments are deleted once every entry in them is purged.
//!
//! A segment may be preallocated: prepared ahead as a spare file of zeros (fsynced), then given
//! its header and its name. Records then overwrite blocks that already exist, so the
//! `fdatasync` of a group commit has no file size or block allocation to commit (on this
//! project's disks, less than half the time of an appending one). Replay reads an all-zero
//! rest of a segment as its clean end.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// First bytes of every segment: format name and version 1.
pub const MAGIC: &[u8; 8] = b"KMSWAL\x00\x01";

/// Path of segment `seq` in `dir`.
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// Segment sequence numbers present in `dir`, ascending. Other files are ignored.
pub fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(hex) = name.strip_suffix(".wal") else {
            continue;
        };
        if hex.len() == 16 {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn head(first_frames: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(MAGIC.len() + first_frames.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(first_frames);
    head
}

/// Creates segment `seq` holding the magic and `first_frames`, fsyncs it and its directory.
/// The file is written with positioned writes (`write_all_at`), never in append mode.
pub fn create(dir: &Path, seq: u64, first_frames: &[u8]) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(path(dir, seq))?;
    file.write_all(&head(first_frames))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// A zero-filled file ready to become a segment (see the module doc).
#[derive(Debug)]
pub struct Spare {
    path: PathBuf,
    file: File,
}

/// Spare files end in `.spare` (never a segment name, so replay ignores them); each
/// preparation has its own name, so a writer that is still finishing one never touches
/// another's.
const SPARE_SUFFIX: &str = ".spare";

/// Bytes of zeros written and synced at a time while a spare is prepared.
const SPARE_CHUNK: usize = 256 * 1024;

/// Pause between two pieces of a spare (an 8 MiB spare takes some 32 pauses, well below the
/// seconds a segment lasts under full load).
const SPARE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Deletes spare files left by an earlier process (a crash or a stop while one was prepared).
pub fn remove_spares(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(SPARE_SUFFIX) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// What preparing a spare gave.
#[derive(Debug)]
pub enum Prepared {
    /// A spare, ready to be installed.
    Spare(Spare),
    /// None: the disk has too little free space to set a segment aside (`available` bytes;
    /// see `store::space::may_preallocate`).
    LowSpace {
        /// Bytes free on the log's filesystem when it was checked.
        available: u64,
    },
}

/// Writes a spare of `bytes` zeros and fsyncs it, unless the disk has too little free space
/// for it. Blocking (tens of milliseconds for 8 MiB): run it off the writer's path. On
/// failure (a full disk) the partial file is removed.
pub fn prepare_spare(dir: &Path, bytes: u64) -> std::io::Result<Prepared> {
    let available = crate::store::space::of(dir)?.available;
    if !crate::store::space::may_preallocate(available, bytes) {
        return Ok(Prepared::LowSpace { available });
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}{SPARE_SUFFIX}", std::process::id()));
    let fill = || -> std::io::Result<File> {
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        // In small synced pieces with a pause between them: the log's own flushes share the
        // disk's queue, and one 8 MiB write-back in flight would hold a group commit back by
        // its whole length.
        let zeros = vec![0u8; SPARE_CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            // (Also makes the size durable: the last piece's sync is the spare's.)
            file.sync_data()?;
            left -= n as u64;
            if left > 0 {
                std::thread::sleep(SPARE_PAUSE);
            }
        }
        Ok(file)
    };
    match fill() {
        Ok(file) => Ok(Prepared::Spare(Spare { path, file })),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Turns a spare into segment `seq`: the magic and `first_frames` written over its first
/// zeros and synced, then the file renamed to the segment's name and the directory synced. A
/// crash before the rename leaves a spare (deleted at the next open), after it a whole
/// segment.
pub fn install_spare(
    dir: &Path,
    seq: u64,
    spare: Spare,
    first_frames: &[u8],
) -> std::io::Result<File> {
    spare.file.write_all_at(&head(first_frames), 0)?;
    spare.file.sync_data()?;
    std::fs::rename(&spare.path, path(dir, seq))?;
    sync_dir(dir)?;
    Ok(spare.file)
}

/// fsyncs a directory, so that created, renamed or deleted names in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
