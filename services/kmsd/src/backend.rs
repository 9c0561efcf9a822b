//! The local state backend: a [`SledStore`] owned by one writer thread that applies
//! commands in batches (group commit: one fsync per batch, not per activation) and
//! answers each submitter with its command's result after the batch is durable.
//!
//! sled calls block, so they never run on tokio workers: submitters only enqueue and
//! await a oneshot. Readers take a short read lock on the in-memory state.

use kms_state::{Command, CommandResult, HostState, SledStore, StateError, StoreOptions};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Largest number of commands applied and flushed together.
pub const MAX_BATCH: usize = 512;

/// Errors of the backend.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The store failed to apply or persist the batch.
    #[error("state store: {0}")]
    Store(String),
    /// The backend is shutting down.
    #[error("state backend stopped")]
    Stopped,
}

type Job = (
    Command,
    oneshot::Sender<Result<CommandResult, BackendError>>,
);

/// Handle to the local state. Cheap to share behind an `Arc`.
pub struct LocalBackend {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    store: Arc<RwLock<SledStore>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LocalBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBackend").finish_non_exhaustive()
    }
}

impl LocalBackend {
    /// Opens the store in `dir` and starts the writer thread.
    pub fn open(dir: &Path, options: StoreOptions, sync_writes: bool) -> Result<Self, StateError> {
        let store = Arc::new(RwLock::new(SledStore::open(dir, options)?));
        let (tx, rx) = mpsc::channel::<Job>();
        let w_store = store.clone();
        let writer = std::thread::Builder::new()
            .name("kmsd-state-writer".into())
            .spawn(move || writer_loop(rx, w_store, sync_writes))
            .expect("spawn writer thread");
        Ok(Self {
            tx: std::sync::Mutex::new(Some(tx)),
            store,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Submits a command; resolves once it is applied (and flushed when sync is on).
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, BackendError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.tx.lock().expect("tx lock");
            let sender = guard.as_ref().ok_or(BackendError::Stopped)?;
            sender.send((cmd, tx)).map_err(|_| BackendError::Stopped)?;
        }
        rx.await.map_err(|_| BackendError::Stopped)?
    }

    /// Runs `f` on the current in-memory state.
    pub fn read<R>(&self, f: impl FnOnce(&HostState) -> R) -> R {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        f(guard.state())
    }

    /// Size of the data directory in bytes.
    pub fn data_dir_size(&self) -> u64 {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        guard.data_dir_size().unwrap_or(0)
    }

    /// Stops accepting commands, lets the writer finish queued ones and flushes.
    pub fn close(&self) {
        self.tx.lock().expect("tx lock").take();
        if let Some(h) = self.writer.lock().expect("writer lock").take() {
            let _ = h.join();
        }
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = guard.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

fn writer_loop(rx: mpsc::Receiver<Job>, store: Arc<RwLock<SledStore>>, sync_writes: bool) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let cmds: Vec<Command> = jobs.iter().map(|(c, _)| c.clone()).collect();
        let applied = {
            let mut guard = store.write().unwrap_or_else(|p| p.into_inner());
            guard.apply_batch(&cmds)
        };
        let flushed = if sync_writes && applied.is_ok() {
            let guard = store.read().unwrap_or_else(|p| p.into_inner());
            guard.flush()
        } else {
            Ok(())
        };
        match (applied, flushed) {
            (Ok(results), Ok(())) => {
                for ((_, tx), r) in jobs.into_iter().zip(results) {
                    let _ = tx.send(Ok(r));
                }
            }
            (Err(e), _) | (Ok(_), Err(e)) => {
                tracing::error!(error = %e, batch = cmds.len(), "state batch failed");
                for (_, tx) in jobs {
                    let _ = tx.send(Err(BackendError::Store(e.to_string())));
                }
            }
        }
    }
}
