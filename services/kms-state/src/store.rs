//! [`SledStore`]: a [`HostState`] kept in memory and persisted in sled.
//!
//! Owns loading the state on open (with schema check) and writing the keys touched by a batch
//! of commands in one atomic `sled::Batch`. The key layout is described in the `keys` module
//! and repeated on [`SledStore`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::changes::Changes;
use crate::command::{Command, CommandResult};
use crate::error::StateError;
use crate::keys::{self, Key, SCHEMA_VERSION};
use crate::state::{HostState, StateConfig};
use crate::stats::Stats;
use crate::window::ClientRecord;
use crate::{DedupEntry, EpidRecord};

/// Default sled page-cache size: 16 MiB, to keep the daemon's RSS small (sled's own default is
/// 1 GiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// How to open a [`SledStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled cache capacity in bytes.
    pub cache_capacity: u64,
    /// State configuration. It is stored in `meta/config`; when it differs from the stored one
    /// on open, this value takes effect and is persisted (the operator's configuration wins).
    pub state_config: StateConfig,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            state_config: StateConfig::default(),
        }
    }
}

/// A [`HostState`] mirrored to a sled database.
///
/// Reads are served from memory ([`SledStore::state`]); [`SledStore::apply_batch`] applies
/// commands to memory and writes every key they touched in one `sled::Batch`, so a crash leaves
/// either the whole batch or none of it on disk. Durability needs [`SledStore::flush`] (fsync),
/// which callers use for group commit; sled also flushes in the background and on drop.
///
/// Key layout (all in sled's default tree; keys UTF-8, values JSON, UUIDs lowercase hyphenated):
///
/// | key | value |
/// |---|---|
/// | `meta/schema_version` | `u32`, [`SCHEMA_VERSION`] |
/// | `meta/config` | [`StateConfig`] |
/// | `stats/global` | [`Stats`] of all requests |
/// | `stats/group/<count group>` | [`Stats`] of one count group |
/// | `client/<count group>/<cmid>` | [`ClientRecord`] |
/// | `epid/<count group>` | [`EpidRecord`] |
/// | `request/<request id>` | [`DedupEntry`] |
pub struct SledStore {
    db: sled::Db,
    state: HostState,
    poisoned: bool,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("clients", &self.state.client_count_total())
            .field("requests", &self.state.request_count())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` and loads the whole state into memory.
    ///
    /// Fails with [`StateError::SchemaVersion`] for a data directory of another layout version
    /// and [`StateError::Corrupt`] for undecodable entries.
    pub fn open(path: &Path, options: StoreOptions) -> Result<SledStore, StateError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity);
        let db = open_db(&config)?;
        let state = match db.get(keys::META_SCHEMA_VERSION)? {
            None => {
                if let Some(entry) = db.iter().next() {
                    let (key, _) = entry?;
                    return Err(StateError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: format!("store has data but no {}", keys::META_SCHEMA_VERSION),
                    });
                }
                let mut batch = sled::Batch::default();
                put(&mut batch, keys::META_SCHEMA_VERSION, &SCHEMA_VERSION)?;
                put(&mut batch, keys::META_CONFIG, &options.state_config)?;
                db.apply_batch(batch)?;
                db.flush()?;
                HostState::new(options.state_config)
            }
            Some(v) => {
                let found: u32 = decode(keys::META_SCHEMA_VERSION.as_bytes(), &v)?;
                if found != SCHEMA_VERSION {
                    return Err(StateError::SchemaVersion {
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
                let mut state = load(&db)?;
                if *state.config() != options.state_config {
                    state.set_config(options.state_config);
                    let mut batch = sled::Batch::default();
                    put(&mut batch, keys::META_CONFIG, &options.state_config)?;
                    db.apply_batch(batch)?;
                }
                state
            }
        };
        Ok(SledStore {
            db,
            state,
            poisoned: false,
        })
    }

    /// Applies `cmds` in order to the in-memory state and writes all changed keys in one atomic
    /// batch. Returns one result per command.
    ///
    /// If the write fails, the in-memory state is reloaded from disk (so memory never runs ahead
    /// of disk) and the error is returned; the commands count as not applied.
    pub fn apply_batch(&mut self, cmds: &[Command]) -> Result<Vec<CommandResult>, StateError> {
        if self.poisoned {
            return Err(StateError::Poisoned);
        }
        let mut changes = Changes::default();
        let mut results = Vec::with_capacity(cmds.len());
        for cmd in cmds {
            let (result, ch) = self.state.apply(cmd);
            changes.merge(ch);
            results.push(result);
        }
        if changes.is_empty() {
            return Ok(results);
        }
        let written = build_batch(&self.state, &changes)
            .and_then(|batch| self.db.apply_batch(batch).map_err(StateError::from));
        match written {
            Ok(()) => Ok(results),
            Err(err) => {
                match load(&self.db) {
                    Ok(mut state) => {
                        state.set_config(*self.state.config());
                        self.state = state;
                    }
                    Err(_) => self.poisoned = true,
                }
                Err(err)
            }
        }
    }

    /// Replaces the whole state (e.g. installing a Raft snapshot), in one atomic batch.
    pub fn replace_state(&mut self, state: HostState) -> Result<(), StateError> {
        if self.poisoned {
            return Err(StateError::Poisoned);
        }
        let mut batch = sled::Batch::default();
        for entry in self.db.iter() {
            let (key, _) = entry?;
            if !key.starts_with(keys::META_PREFIX.as_bytes()) {
                batch.remove(key);
            }
        }
        put(&mut batch, keys::META_CONFIG, state.config())?;
        put(&mut batch, keys::STATS_GLOBAL, state.stats())?;
        for (group, stats) in state.group_stats_iter() {
            put(&mut batch, &keys::group_stats(group), stats)?;
        }
        for rec in state.clients(Default::default()) {
            put(&mut batch, &keys::client(&rec.count_group, &rec.cmid), rec)?;
        }
        for rec in state.epids() {
            put(&mut batch, &keys::epid(&rec.count_group), rec)?;
        }
        for entry in state.requests_iter() {
            put(&mut batch, &keys::request(&entry.request_id), entry)?;
        }
        self.db.apply_batch(batch)?;
        self.state = state;
        Ok(())
    }

    /// Makes everything written so far durable (fsync). Call once per group of batches.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }

    /// The current state (reads never touch the disk).
    pub fn state(&self) -> &HostState {
        &self.state
    }

    /// Bytes the database occupies on disk (for metrics).
    pub fn data_dir_size(&self) -> Result<u64, StateError> {
        Ok(self.db.size_on_disk()?)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Best effort on clean shutdown; errors cannot be reported from drop.
        let _ = self.db.flush();
    }
}

/// How long [`open_db`] waits for sled's file lock to be released.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Opens the sled database, retrying for [`LOCK_WAIT`] while its file lock is held.
///
/// sled releases the lock from a background thread shortly after the last handle is dropped,
/// so reopening a store in the same process right after dropping it can briefly fail. A lock
/// held by another process still fails, after the wait.
fn open_db(config: &sled::Config) -> Result<sled::Db, StateError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes the keys in `changes` from the final values in `state`.
fn build_batch(state: &HostState, changes: &Changes) -> Result<sled::Batch, StateError> {
    let mut batch = sled::Batch::default();
    for key in &changes.clients_upserted {
        let k = keys::client(&key.count_group, &key.cmid);
        match state.client(&key.count_group, &key.cmid) {
            Some(rec) => put(&mut batch, &k, rec)?,
            None => batch.remove(k.into_bytes()),
        }
    }
    for key in &changes.clients_removed {
        batch.remove(keys::client(&key.count_group, &key.cmid).into_bytes());
    }
    if changes.global_stats {
        put(&mut batch, keys::STATS_GLOBAL, state.stats())?;
    }
    for group in &changes.group_stats {
        if let Some(stats) = state.group_stats(group) {
            put(&mut batch, &keys::group_stats(group), stats)?;
        }
    }
    for rec in state
        .epids()
        .filter(|r| changes.epids_set.contains(&r.count_group))
    {
        put(&mut batch, &keys::epid(&rec.count_group), rec)?;
    }
    for id in &changes.requests_added {
        let k = keys::request(id);
        match state.request(id) {
            Some(entry) => put(&mut batch, &k, entry)?,
            None => batch.remove(k.into_bytes()),
        }
    }
    for id in &changes.requests_removed {
        batch.remove(keys::request(id).into_bytes());
    }
    Ok(batch)
}

/// Reads every key of the store into a fresh [`HostState`].
fn load(db: &sled::Db) -> Result<HostState, StateError> {
    let mut state = HostState::default();
    for entry in db.iter() {
        let (raw_key, value) = entry?;
        let corrupt = |reason: &str| StateError::Corrupt {
            key: String::from_utf8_lossy(&raw_key).into_owned(),
            reason: reason.to_owned(),
        };
        let key = std::str::from_utf8(&raw_key).map_err(|_| corrupt("key is not UTF-8"))?;
        match keys::parse(key).ok_or_else(|| corrupt("unknown key"))? {
            Key::Meta("schema_version") => {}
            Key::Meta("config") => state.set_config(decode::<StateConfig>(&raw_key, &value)?),
            Key::Meta(_) => return Err(corrupt("unknown meta key")),
            Key::GlobalStats => state.restore_global_stats(decode::<Stats>(&raw_key, &value)?),
            Key::GroupStats(group) => {
                state.restore_group_stats(group.to_owned(), decode(&raw_key, &value)?)
            }
            Key::Client(group, cmid) => {
                let rec: ClientRecord = decode(&raw_key, &value)?;
                if &*rec.count_group != group || rec.cmid != cmid {
                    return Err(corrupt("record does not match its key"));
                }
                state.restore_client(rec);
            }
            Key::Epid(group) => {
                let rec: EpidRecord = decode(&raw_key, &value)?;
                if rec.count_group != group {
                    return Err(corrupt("record does not match its key"));
                }
                state.restore_epid(rec);
            }
            Key::Request(id) => {
                let entry: DedupEntry = decode(&raw_key, &value)?;
                if entry.request_id != id {
                    return Err(corrupt("record does not match its key"));
                }
                state.restore_request(entry);
            }
        }
    }
    Ok(state)
}

fn put<T: Serialize + ?Sized>(
    batch: &mut sled::Batch,
    key: &str,
    value: &T,
) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StateError::Encode {
        key: key.to_owned(),
        source,
    })?;
    batch.insert(key.as_bytes(), bytes);
    Ok(())
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(value).map_err(|e| StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}
