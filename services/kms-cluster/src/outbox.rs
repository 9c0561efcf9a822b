//! The durable local outbox of serve-local mode: commands a node answered from its own
//! applied state while no quorum could commit them, kept in `outbox.log` in the data
//! directory until a leader has applied them. Replays reuse the request ids, so a command
//! replayed twice (crash between commit and removal) still counts once.
//!
//! The file is an append-only sequence of CRC-checked frames (see `store::frame`): "pushed"
//! records carry a command (typed protobuf with its schema version, see [`crate::pb`]), "removed" records the key of a command a leader applied. It is
//! replayed at open (a torn tail from a crash is cut off; damage followed by later records is
//! refused, see `store::frame::lost_a_sector`) and emptied once nothing is pending.
//! Every write is fsynced before the caller answers its clients, on the blocking pool.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kms_state::Command;

use crate::store::frame::{frames_after, lost_a_sector, put_frame, FrameReader};

/// File name of the outbox in the data directory.
pub const OUTBOX_FILE: &str = "outbox.log";
const MAGIC: &[u8; 8] = b"KMSOBX\x00\x01";
const KIND_PUSHED: u8 = 1;
const KIND_REMOVED: u8 = 2;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A file operation failed.
    #[error("outbox {path}: {source}")]
    Io {
        /// The outbox file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored command does not decode, or the file is not an outbox.
    #[error("outbox {path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        /// The outbox file.
        path: PathBuf,
        /// Where.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A blocking task failed.
    #[error("outbox task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn key_of(cmd: &Command) -> Vec<u8> {
    match cmd {
        Command::Activation(a) => a.request_id.as_bytes().to_vec(),
        Command::SetEpid { count_group, .. } => format!("epid/{count_group}").into_bytes(),
        Command::SetHostIdentity(_) => b"host-identity".to_vec(),
        Command::ReplaceHostIdentity { identity, .. } => {
            let mut key = format!("host-identity/{}/", identity.set_ms).into_bytes();
            key.extend_from_slice(&identity.hwid);
            key
        }
        Command::SetInventoryRetention { .. } => b"inventory-retention".to_vec(),
    }
}

#[derive(Debug)]
struct Inner {
    file: File,
    pending: BTreeMap<Vec<u8>, Command>,
}

/// Handle to the outbox (cheap to clone).
#[derive(Debug, Clone)]
pub struct Outbox {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

impl Outbox {
    /// Opens (or creates) the outbox in `data_dir` and reads what is pending. Blocking.
    pub fn open(data_dir: &Path) -> Result<Self, OutboxError> {
        let path = data_dir.join(OUTBOX_FILE);
        let io = |source| OutboxError::Io {
            path: path.clone(),
            source,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let mut pending = BTreeMap::new();
        let mut good_len = MAGIC.len();
        if bytes.len() >= MAGIC.len() {
            if &bytes[..MAGIC.len()] != MAGIC {
                return Err(OutboxError::Corrupt {
                    path,
                    offset: 0,
                    reason: "not an outbox file".into(),
                });
            }
            let mut frames = FrameReader::new(&bytes, MAGIC.len());
            for f in frames.by_ref() {
                match f.kind {
                    KIND_PUSHED => {
                        let cmds = crate::pb::decode_commands(f.payload).map_err(|e| {
                            OutboxError::Corrupt {
                                path: path.clone(),
                                offset: f.offset,
                                reason: e.to_string(),
                            }
                        })?;
                        for cmd in cmds {
                            pending.insert(key_of(&cmd), cmd);
                        }
                    }
                    KIND_REMOVED => {
                        pending.remove(f.payload);
                    }
                    other => {
                        return Err(OutboxError::Corrupt {
                            path,
                            offset: f.offset,
                            reason: format!("unknown record kind {other}"),
                        })
                    }
                }
            }
            good_len = frames.position();
            if let Some((offset, defect)) = frames.defect() {
                // Records written after the damaged one (each write is synced before the next
                // one starts) mean damage, not a write cut short: they hold answered commands.
                let later = frames_after(&bytes, offset, &[KIND_PUSHED, KIND_REMOVED]).next();
                if let (false, Some(f)) = (lost_a_sector(&bytes, offset, defect), later) {
                    return Err(OutboxError::Corrupt {
                        path,
                        offset,
                        reason: format!(
                            "{defect}, followed by records written after it (at byte {}): \
                             damage, not a write cut short by a crash",
                            f.offset
                        ),
                    });
                }
                tracing::warn!(path = %path.display(), offset, %defect, "cutting a torn tail off the outbox");
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if bytes.len() < MAGIC.len() {
            file.set_len(0).map_err(io)?;
            file.write_all(MAGIC).map_err(io)?;
            good_len = MAGIC.len();
        }
        file.set_len(good_len as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(Outbox {
            path,
            inner: Arc::new(Mutex::new(Inner { file, pending })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `frames` and fsyncs; empties the file when nothing is pending any more.
    fn write_blocking(&self, frames: Vec<u8>) -> Result<(), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        let mut inner = self.lock();
        if inner.pending.is_empty() {
            use std::io::Seek;
            inner.file.set_len(MAGIC.len() as u64).map_err(io)?;
            inner
                .file
                .seek(std::io::SeekFrom::Start(MAGIC.len() as u64))
                .map_err(io)?;
        } else {
            inner.file.write_all(&frames).map_err(io)?;
        }
        inner.file.sync_data().map_err(io)
    }

    /// Appends commands durably (fsync) before the caller answers its clients.
    pub async fn push(&self, cmds: &[Command]) -> Result<(), OutboxError> {
        let mut frames = Vec::new();
        {
            let mut inner = self.lock();
            for c in cmds {
                let bytes = crate::pb::encode_commands(std::slice::from_ref(c));
                put_frame(&mut frames, KIND_PUSHED, &bytes);
                inner.pending.insert(key_of(c), c.clone());
            }
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_blocking(frames)).await?
    }

    /// Up to `max` pending commands.
    pub fn peek(&self, max: usize) -> Result<Vec<Command>, OutboxError> {
        Ok(self.lock().pending.values().take(max).cloned().collect())
    }

    /// Removes commands that a leader has applied.
    pub async fn remove(&self, cmds: &[Command]) -> Result<(), OutboxError> {
        let mut frames = Vec::new();
        {
            let mut inner = self.lock();
            for c in cmds {
                let key = key_of(c);
                put_frame(&mut frames, KIND_REMOVED, &key);
                inner.pending.remove(&key);
            }
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_blocking(frames)).await?
    }

    /// Number of pending commands.
    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }
}

/// How often the replay loop looks at the outbox.
pub const REPLAY_INTERVAL: Duration = Duration::from_millis(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn epid(group: &str) -> Command {
        Command::SetEpid {
            count_group: group.into(),
            epid: format!("epid-{group}"),
            time_ms: 1,
        }
    }

    #[tokio::test]
    async fn pending_commands_survive_reopen_and_removal_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        ob.push(&[epid("a"), epid("b")]).await.unwrap();
        ob.push(&[epid("c")]).await.unwrap();
        ob.remove(&[epid("b")]).await.unwrap();
        drop(ob);
        let ob = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.peek(10).unwrap(), vec![epid("a"), epid("c")]);
        ob.remove(&[epid("a"), epid("c")]).await.unwrap();
        assert!(ob.is_empty());
        let len = std::fs::metadata(dir.path().join(OUTBOX_FILE))
            .unwrap()
            .len();
        assert_eq!(len, MAGIC.len() as u64);
        drop(ob);
        assert!(Outbox::open(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn damage_before_later_records_refuses_to_open_and_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        for name in ["a", "b", "c"] {
            ob.push(&[epid(name)]).await.unwrap();
        }
        drop(ob);
        let path = dir.path().join(OUTBOX_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let hit = FrameReader::new(&bytes, MAGIC.len())
            .next()
            .map(|f| f.offset + f.size / 2)
            .unwrap();
        bytes[hit] ^= 0x08;
        std::fs::write(&path, &bytes).unwrap();
        match Outbox::open(dir.path()) {
            Err(e @ OutboxError::Corrupt { .. }) => {
                assert!(e.to_string().contains("followed by records"), "{e}")
            }
            other => panic!("expected a damaged outbox, got {:?}", other.map(|_| ())),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file is left as it is"
        );
    }

    #[tokio::test]
    async fn a_torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        ob.push(&[epid("a")]).await.unwrap();
        ob.push(&[epid("b")]).await.unwrap();
        drop(ob);
        let path = dir.path().join(OUTBOX_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.peek(10).unwrap(), vec![epid("a")]);
        ob.push(&[epid("c")]).await.unwrap();
        drop(ob);
        let ob = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.peek(10).unwrap(), vec![epid("a"), epid("c")]);
    }
}
