//! Segment files of the write-ahead log: naming, creation and replay of one file.
//!
//! A segment is `<seq>.wal` (16 hex digits, so names sort like sequence numbers) and starts with
//! the 8-byte magic [`MAGIC`] followed by frames (see `store::frame`). Files are only ever
//! appended to; whole segments are deleted once every entry in them is purged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Creates segment `seq` holding the magic and `first_frames`, fsyncs it and its directory.
pub fn create(dir: &Path, seq: u64, first_frames: &[u8]) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .append(true)
        .open(path(dir, seq))?;
    let mut head = Vec::with_capacity(MAGIC.len() + first_frames.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(first_frames);
    file.write_all(&head)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// fsyncs a directory, so that created, renamed or deleted names in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
