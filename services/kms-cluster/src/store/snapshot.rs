//! [`SnapshotFiles`]: the node's current Raft snapshot as one file, and the files snapshots are
//! built in and received into.
//!
//! Layout of the snapshot directory: `current.snap` (the snapshot openraft knows), plus
//! temporary `build-*.tmp` / `recv-*.tmp` files while a snapshot is written or received
//! (removed at open: they never became current). A snapshot becomes current only by `rename`
//! after its bytes were fsynced, followed by an fsync of the directory, so a crash leaves either
//! the old or the new snapshot, never a torn one.
//!
//! File format: the 8-byte magic [`MAGIC`], one frame (see `store::frame`) holding the
//! [`SnapshotMeta`] (typed protobuf of the wire schema), then the state body (kms-state's
//! streaming snapshot format, see `store::sm`). The file's bytes are also exactly what
//! is streamed to a follower, chunk by chunk, so the follower receives a file it can verify
//! and rename into place.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::frame::{put_frame, read_frame};
use super::wal::segment_sync_dir;
use crate::error::ClusterError;
use crate::SnapshotMeta;

/// First bytes of a snapshot file: format name and version 1.
pub const MAGIC: &[u8; 8] = b"KMSSNAP\x01";
const KIND_META: u8 = 1;
const CURRENT: &str = "current.snap";

/// Bytes a snapshot writer lets accumulate before it flushes them to disk.
const SYNC_EVERY: u64 = 4 * 1024 * 1024;

/// A file writer that flushes every [`SYNC_EVERY`] bytes: a snapshot of a million clients is
/// some 100 MB, and handing all of it to the disk at the end would queue the log's group
/// commits behind it (a gap in answers); small flushes along the way keep that queue short.
struct SyncEvery {
    file: File,
    unsynced: u64,
}

impl SyncEvery {
    fn new(file: File) -> Self {
        SyncEvery { file, unsynced: 0 }
    }
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Which stored snapshot a save may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Installing a snapshot from the leader: it always becomes current.
    Always,
    /// A locally built snapshot: skipped if the current one covers a later log position (an
    /// install may have overtaken the build).
    IfNotOlder,
}

/// The snapshot directory of one node (cheap to clone).
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
    /// Serializes "is the current one newer" checks with the rename.
    install: Arc<Mutex<()>>,
    seq: Arc<AtomicU64>,
}

fn snap_err(path: &Path) -> impl Fn(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::File {
        path: path.to_owned(),
        source,
    }
}

impl SnapshotFiles {
    /// Opens (creates) the directory and removes leftovers of interrupted builds and receives.
    pub fn open(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(snap_err(dir))?;
        for entry in std::fs::read_dir(dir).map_err(snap_err(dir))? {
            let entry = entry.map_err(snap_err(dir))?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".tmp") {
                let p = entry.path();
                tracing::info!(path = %p.display(), "removing an unfinished snapshot file");
                std::fs::remove_file(&p).map_err(snap_err(&p))?;
            }
        }
        Ok(SnapshotFiles {
            dir: dir.to_owned(),
            install: Arc::new(Mutex::new(())),
            seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Path of the current snapshot (it may not exist).
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// A new temporary file name with the given prefix ("build" or "recv").
    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{prefix}-{}-{n}.tmp", std::process::id()))
    }

    /// Writes a snapshot into a new temporary file: magic, meta, then `body` writes the state.
    /// The file is fsynced; returns its path.
    pub fn write_temp(
        &self,
        meta: &SnapshotMeta,
        body: impl FnOnce(&mut dyn Write) -> Result<(), ClusterError>,
    ) -> Result<PathBuf, ClusterError> {
        let path = self.temp_path("build");
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(snap_err(&path))?;
        let mut w = BufWriter::with_capacity(1 << 20, SyncEvery::new(file));
        let mut head = Vec::from(&MAGIC[..]);
        put_frame(&mut head, KIND_META, &encode_meta(meta)?);
        w.write_all(&head).map_err(snap_err(&path))?;
        body(&mut w)?;
        let file = w.into_inner().map_err(|e| ClusterError::File {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.file.sync_all().map_err(snap_err(&path))?;
        Ok(path)
    }

    /// Makes the (fsynced) snapshot file at `temp` current, unless `replace` forbids it.
    /// Returns whether it became current; a refused file is deleted.
    pub fn make_current(
        &self,
        temp: &Path,
        meta: &SnapshotMeta,
        replace: Replace,
    ) -> Result<bool, ClusterError> {
        let _guard = self.install.lock().unwrap_or_else(PoisonError::into_inner);
        if replace == Replace::IfNotOlder {
            if let Some((current, _)) = self.open_current()? {
                if current.last_log_id > meta.last_log_id {
                    let _ = std::fs::remove_file(temp);
                    return Ok(false);
                }
            }
        }
        let current = self.current_path();
        std::fs::rename(temp, &current).map_err(snap_err(&current))?;
        segment_sync_dir(&self.dir).map_err(snap_err(&self.dir))?;
        Ok(true)
    }

    /// The current snapshot's meta and a reader positioned after the meta (at the body).
    pub fn open_current(&self) -> Result<Option<(SnapshotMeta, BufReader<File>)>, ClusterError> {
        let path = self.current_path();
        match File::open(&path) {
            Ok(f) => read_head(f, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(snap_err(&path)(e)),
        }
    }

    /// Bytes of the snapshot directory.
    pub fn size_on_disk(&self) -> u64 {
        super::wal::dir_size(&self.dir)
    }
}

/// The meta as the typed protobuf `SnapshotMeta` of the wire schema.
fn encode_meta(meta: &SnapshotMeta) -> Result<Vec<u8>, ClusterError> {
    use prost::Message;
    Ok(crate::pb::SnapshotMeta::from(meta).encode_to_vec())
}

/// Reads magic and meta from a snapshot file (any position); leaves the reader at the body.
pub fn read_head(
    mut f: File,
    path: &Path,
) -> Result<(SnapshotMeta, BufReader<File>), ClusterError> {
    let bad = |reason: String| ClusterError::BadSnapshot {
        path: path.to_owned(),
        reason,
    };
    f.seek(SeekFrom::Start(0)).map_err(snap_err(path))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| bad(format!("no header: {e}")))?;
    if &magic != MAGIC {
        return Err(bad("not a kms-cluster snapshot (bad magic)".into()));
    }
    let payload = read_frame(&mut r, KIND_META, "meta").map_err(bad)?;
    let meta = {
        use prost::Message;
        let raw = crate::pb::SnapshotMeta::decode(payload.as_slice())
            .map_err(|e| bad(format!("meta does not decode: {e}")))?;
        SnapshotMeta::try_from(raw).map_err(|e| bad(format!("meta: {e}")))?
    };
    Ok((meta, r))
}
