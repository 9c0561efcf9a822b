//! [`StateMachine`]: the replicated [`HostState`] and its snapshots.
//!
//! Owns applying committed entries (each normal entry is a batch of [`kms_state::Command`]s,
//! applied in order with [`HostState::apply`]; no clock is read here, the time is inside each
//! command), the read handle ([`StateHandle`]) the rest of the node uses, and snapshots.
//!
//! Beside the host state it keeps the registry of node incarnations (see [`crate::identity`]),
//! updated by entries that carry a [`Registration`].
//!
//! The state lives in memory only; what is persisted is the current snapshot file (see
//! `store::snapshot`: magic, meta, then the body written here: a registry frame and the host
//! state in kms-state's streaming format). On open the state machine starts from that snapshot
//! and openraft re-applies the committed log entries after it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kms_state::HostState;
use openraft::storage::RaftStateMachine;
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};

use tokio::io::AsyncWriteExt;

use super::frame::{put_frame, read_frame};
use super::snapshot::{read_head, Replace, SnapshotFiles};
use super::{blocking, to_storage_error};
use crate::error::ClusterError;
use crate::{
    ClusterResponse, Entry, EntryPayload, LogId, NodeId, Registration, Snapshot, SnapshotData,
    SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Everything the state machine holds; also the content of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AppliedState {
    /// The KMS host state built by the applied commands.
    state: HostState,
    /// Log id of the last applied entry.
    last_applied: Option<LogId>,
    /// The last membership entry applied, with its log id.
    last_membership: StoredMembership,
    /// The registry of node incarnations (see [`crate::identity`]).
    registry: BTreeMap<NodeId, Registration>,
}

impl AppliedState {
    /// Checks that snapshot data describe the same position as the snapshot's meta.
    fn check_meta(&self, meta: &SnapshotMeta) -> Result<(), ClusterError> {
        if self.last_applied != meta.last_log_id {
            return Err(ClusterError::SnapshotMismatch {
                field: "last_log_id",
                meta: format!("{:?}", meta.last_log_id),
                data: format!("{:?}", self.last_applied),
            });
        }
        if self.last_membership != meta.last_membership {
            return Err(ClusterError::SnapshotMismatch {
                field: "last_membership",
                meta: meta.last_membership.to_string(),
                data: self.last_membership.to_string(),
            });
        }
        Ok(())
    }
}

/// A cheap, cloneable read handle on the replicated state.
///
/// It exists so that the KMS listener, the admin API and status views can read the state the
/// Raft node keeps applying, without going through openraft. Reads see a whole applied batch or
/// none of it. Do not block inside [`StateHandle::read`]: appliers wait for the lock.
#[derive(Clone, Default)]
pub struct StateHandle {
    inner: Arc<RwLock<AppliedState>>,
}

impl fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateHandle")
            .field("last_applied", &self.last_applied())
            .finish_non_exhaustive()
    }
}

impl StateHandle {
    fn new(applied: AppliedState) -> Self {
        StateHandle {
            inner: Arc::new(RwLock::new(applied)),
        }
    }

    // `HostState::apply` never panics, so a poisoned lock still holds a consistent state.
    fn lock_read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the current host state (under a read lock) and returns its result.
    pub fn read<R>(&self, f: impl FnOnce(&HostState) -> R) -> R {
        f(&self.lock_read().state)
    }

    /// Log id of the last entry applied to the state.
    pub fn last_applied(&self) -> Option<LogId> {
        self.lock_read().last_applied
    }

    /// The last membership the state machine applied.
    pub fn last_membership(&self) -> StoredMembership {
        self.lock_read().last_membership.clone()
    }

    /// Node `node_id`'s entry in the replicated registry of incarnations.
    pub fn registration(&self, node_id: NodeId) -> Option<Registration> {
        self.lock_read().registry.get(&node_id).copied()
    }

    /// The whole registry of incarnations.
    pub fn registry(&self) -> BTreeMap<NodeId, Registration> {
        self.lock_read().registry.clone()
    }
}

/// Frame kind of the registry record at the start of a snapshot body.
const KIND_REGISTRY: u8 = 2;

/// Writes the body of a snapshot file: one frame with the registry of incarnations (typed
/// protobuf `Registry`), then the host state in kms-state's streaming snapshot format
/// (records, CRCs and an end marker of its own), never buffered whole.
fn write_body(
    w: &mut dyn Write,
    registry: &BTreeMap<NodeId, Registration>,
    state: &HostState,
) -> Result<(), ClusterError> {
    use prost::Message;
    let record = crate::pb::Registry {
        nodes: registry
            .values()
            .map(crate::pb::Registration::from)
            .collect(),
    };
    let mut frame = Vec::new();
    put_frame(&mut frame, KIND_REGISTRY, &record.encode_to_vec());
    w.write_all(&frame).map_err(ClusterError::Io)?;
    state.write_snapshot(w)?;
    Ok(())
}

/// Reads the body written by [`write_body`]. A body that starts with the state itself (files
/// written before the registry existed) has an empty registry.
fn read_body(
    mut r: impl BufRead,
    path: &Path,
) -> Result<(BTreeMap<NodeId, Registration>, HostState), ClusterError> {
    let bad = |reason: String| ClusterError::BadSnapshot {
        path: path.to_owned(),
        reason,
    };
    let mut registry = BTreeMap::new();
    let starts_with_state = r
        .fill_buf()
        .map_err(|e| bad(format!("body: {e}")))?
        .starts_with(&kms_state::SNAPSHOT_MAGIC);
    if !starts_with_state {
        let payload = read_frame(&mut r, KIND_REGISTRY, "registry").map_err(bad)?;
        use prost::Message;
        let raw = crate::pb::Registry::decode(payload.as_slice())
            .map_err(|e| bad(format!("registry does not decode: {e}")))?;
        for node in raw.nodes {
            let reg = Registration::try_from(node).map_err(|e| bad(format!("registry: {e}")))?;
            registry.insert(reg.node_id, reg);
        }
    }
    let state = HostState::read_snapshot(r).map_err(|e| bad(format!("state: {e}")))?;
    Ok((registry, state))
}

/// Loads the current snapshot of `files`, if any, as the state machine's starting point.
fn load_current(files: &SnapshotFiles) -> Result<Option<AppliedState>, ClusterError> {
    let Some((meta, r)) = files.open_current()? else {
        return Ok(None);
    };
    let (registry, state) = read_body(r, &files.current_path())?;
    Ok(Some(AppliedState {
        state,
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership,
        registry,
    }))
}

/// The Raft state machine of one node: the in-memory [`HostState`] plus the current snapshot
/// file.
///
/// Created by [`open_stores`](crate::open_stores); hand it to openraft and keep a
/// [`StateHandle`] (from [`StateMachine::handle`]) for reads.
pub struct StateMachine {
    applied: StateHandle,
    files: SnapshotFiles,
    /// The file the snapshot being received from the leader is written to.
    receiving: Option<PathBuf>,
    /// Counts snapshot builds in this process; a suffix making snapshot ids distinct.
    builds: u64,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("applied", &self.applied)
            .field("builds", &self.builds)
            .finish_non_exhaustive()
    }
}

impl StateMachine {
    /// Opens the state machine over the snapshot directory `dir`, starting from the current
    /// snapshot if there is one. Blocking (reads the snapshot).
    pub(crate) fn open(dir: &Path) -> Result<Self, ClusterError> {
        let files = SnapshotFiles::open(dir)?;
        let applied = load_current(&files)?.unwrap_or_default();
        Ok(StateMachine {
            applied: StateHandle::new(applied),
            files,
            receiving: None,
            builds: 0,
        })
    }

    /// A read handle sharing this state machine's state.
    pub fn handle(&self) -> StateHandle {
        self.applied.clone()
    }

    /// Runs `f` on the current host state; see [`StateHandle::read`].
    pub fn read<R>(&self, f: impl FnOnce(&HostState) -> R) -> R {
        self.applied.read(f)
    }

    /// The snapshot directory.
    pub fn files(&self) -> &SnapshotFiles {
        &self.files
    }
}

/// Builds a snapshot of the state as it is when [`RaftSnapshotBuilder::build_snapshot`] runs:
/// takes a point-in-time copy under the read lock, then writes the file on the blocking pool
/// while the state machine keeps applying.
pub struct FileSnapshotBuilder {
    applied: StateHandle,
    files: SnapshotFiles,
    seq: u64,
}

impl fmt::Debug for FileSnapshotBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSnapshotBuilder")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn snapshot_id(last: Option<LogId>, seq: u64) -> String {
    match last {
        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
        None => format!("--{seq}"),
    }
}

fn to_tokio(file: std::fs::File) -> Box<SnapshotData> {
    Box::new(tokio::fs::File::from_std(file))
}

impl RaftSnapshotBuilder<TypeConfig> for FileSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let copy = self.applied.lock_read().clone();
        let files = self.files.clone();
        let seq = self.seq;
        let started = std::time::Instant::now();
        let (meta, file, bytes) = blocking(move || {
            let meta = SnapshotMeta {
                last_log_id: copy.last_applied,
                last_membership: copy.last_membership.clone(),
                snapshot_id: snapshot_id(copy.last_applied, seq),
            };
            let temp = files.write_temp(&meta, |w| write_body(w, &copy.registry, &copy.state))?;
            let reader = std::fs::File::open(&temp).map_err(|source| ClusterError::File {
                path: temp.clone(),
                source,
            })?;
            let bytes = reader.metadata().map(|m| m.len()).unwrap_or(0);
            files.make_current(&temp, &meta, Replace::IfNotOlder)?;
            Ok((meta, reader, bytes))
        })
        .await
        .map_err(|e| to_storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?;
        tracing::debug!(%meta, bytes, took_ms = started.elapsed().as_millis() as u64, "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: to_tokio(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = FileSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.applied.lock_read();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ClusterResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        // One write lock for the whole call: readers see all of it or none of it.
        let mut applied = self.applied.lock_write();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => ClusterResponse::default(),
                EntryPayload::Normal(request) => {
                    let results = request
                        .commands
                        .iter()
                        .map(|command| applied.state.apply(command))
                        .collect();
                    if let Some(reg) = request.register {
                        applied.registry.insert(reg.node_id, reg);
                    }
                    ClusterResponse { results }
                }
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    ClusterResponse::default()
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builds += 1;
        FileSnapshotBuilder {
            applied: self.applied.clone(),
            files: self.files.clone(),
            seq: self.builds,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let path = self.files.temp_path("recv");
        let opened = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path);
        let file = opened.map_err(|source| {
            to_storage_error(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                &ClusterError::File {
                    path: path.clone(),
                    source,
                },
            )
        })?;
        if let Some(old) = self.receiving.replace(path) {
            let _ = std::fs::remove_file(old);
        }
        Ok(to_tokio(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let mut file = *snapshot;
        file.flush()
            .await
            .map_err(|e| to_storage_error(subject(), ErrorVerb::Write, &ClusterError::Io(e)))?;
        let file = file.into_std().await;
        let received = self.receiving.take();
        let files = self.files.clone();
        let owned_meta = meta.clone();
        // Verify and decode first: if anything fails the node keeps its old state and snapshot.
        let applied = blocking(move || install_file(&files, file, received, &owned_meta))
            .await
            .map_err(|e| to_storage_error(subject(), ErrorVerb::Write, &e))?;
        *self.applied.lock_write() = applied;
        tracing::info!(%meta, "installed raft snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let files = self.files.clone();
        let current = blocking(move || {
            Ok(match files.open_current()? {
                None => None,
                Some((meta, r)) => {
                    let mut file = r.into_inner();
                    file.seek(SeekFrom::Start(0)).map_err(ClusterError::Io)?;
                    Some((meta, file))
                }
            })
        })
        .await
        .map_err(|e| to_storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: to_tokio(file),
        }))
    }
}

/// Whether `file` is the file at `path` (same device and inode).
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Checks a received snapshot file against `meta`, decodes it and makes it current.
fn install_file(
    files: &SnapshotFiles,
    file: std::fs::File,
    received: Option<PathBuf>,
    meta: &SnapshotMeta,
) -> Result<AppliedState, ClusterError> {
    // The data normally arrive in the file `begin_receiving_snapshot` created; if openraft (or
    // a test) hands over another file, its bytes are written anew below.
    let received = received.filter(|p| same_file(&file, p));
    let path = received
        .clone()
        .unwrap_or_else(|| PathBuf::from("<received snapshot>"));
    file.sync_all().map_err(ClusterError::Io)?;
    let (file_meta, r) = read_head(file, &path)?;
    let (registry, state) = read_body(r, &path)?;
    let applied = AppliedState {
        state,
        last_applied: file_meta.last_log_id,
        last_membership: file_meta.last_membership.clone(),
        registry,
    };
    applied.check_meta(meta)?;
    match received {
        Some(p) => {
            files.make_current(&p, meta, Replace::Always)?;
        }
        None => {
            let temp =
                files.write_temp(meta, |w| write_body(w, &applied.registry, &applied.state))?;
            files.make_current(&temp, meta, Replace::Always)?;
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;

    use kms_protocol::LicenseState;
    use kms_state::{Activation, Command, CommandResult, Outcome};
    use openraft::{CommittedLeaderId, Membership};
    use uuid::Uuid;

    use crate::ClusterRequest;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn activation(n: u64, group: &str, cmid: u128, time_ms: u64) -> Command {
        Command::Activation(Activation {
            request_id: Uuid::from_u128(u128::from(n)),
            time_ms,
            count_group: Some(group.to_owned()),
            product_group: Some("windows-10-11".to_owned()),
            kms_counted_id: Uuid::from_u128(1),
            application_id: Uuid::from_u128(2),
            sku_id: Uuid::from_u128(3),
            cmid: Uuid::from_u128(cmid),
            machine_name: format!("pc{cmid}.example.test"),
            client_vm: cmid.is_multiple_of(2),
            license_state: LicenseState::InitialGrace,
            grace_minutes: 43200,
            required_count: 25,
            protocol_major: 6,
            answered_by: 1,
            outcome: if n % 7 == 3 {
                Outcome::Refused {
                    hresult: 0xC004_F042,
                }
            } else {
                Outcome::Answered
            },
        })
    }

    /// A log of 1 membership entry, a blank, and normal entries with batches of commands
    /// (several groups, repeated CMIDs, a duplicate request id, ePIDs, a 31-day jump).
    fn history() -> Vec<Entry> {
        let mut entries = vec![
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Membership(Membership::new(
                    vec![BTreeSet::from([1, 2, 3])],
                    None,
                )),
            },
            Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Blank,
            },
        ];
        let mut n = 0;
        for i in 3..=12u64 {
            let t0 = 1_700_000_000_000 + i * DAY_MS * if i > 9 { 10 } else { 1 };
            let mut commands = Vec::new();
            for j in 0..(i % 4 + 1) {
                n += 1;
                let group = if j % 2 == 0 { "windows" } else { "office" };
                commands.push(activation(n, group, u128::from(n % 9), t0 + j));
            }
            if i == 5 {
                commands.push(Command::SetEpid {
                    count_group: "windows".into(),
                    epid: "06401-00206-551-123456-03-1033-17763.0000-1002024".into(),
                    time_ms: t0,
                });
                // Re-proposal of an already applied request.
                commands.push(commands[0].clone());
            }
            entries.push(Entry {
                log_id: log_id(2, i),
                payload: EntryPayload::Normal(ClusterRequest::new(commands)),
            });
        }
        entries
    }

    fn open_sm() -> (tempfile::TempDir, (), StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        (dir, (), sm)
    }

    async fn bytes_of(snap: Snapshot) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut f = *snap.snapshot;
        let mut v = Vec::new();
        f.read_to_end(&mut v).await.unwrap();
        v
    }

    fn state_of(sm: &StateMachine) -> HostState {
        sm.read(HostState::clone)
    }

    #[tokio::test]
    async fn same_batches_give_equal_states() {
        let (_d1, _db1, mut a) = open_sm();
        let (_d2, _db2, mut b) = open_sm();
        let entries = history();
        let ra = a.apply(entries.clone()).await.unwrap();
        // The other replica gets the same log in different chunks.
        let mut rb = Vec::new();
        for chunk in entries.chunks(3) {
            rb.extend(b.apply(chunk.to_vec()).await.unwrap());
        }
        assert_eq!(ra, rb);
        assert_eq!(ra.len(), entries.len());
        assert_eq!(state_of(&a), state_of(&b));
        assert_eq!(
            a.applied_state().await.unwrap(),
            b.applied_state().await.unwrap()
        );
        assert_ne!(state_of(&a), HostState::default());

        // Responses: one per entry, one result per command, in order.
        assert!(ra[0].results.is_empty() && ra[1].results.is_empty());
        for (entry, response) in entries.iter().zip(&ra) {
            if let EntryPayload::Normal(req) = &entry.payload {
                assert_eq!(req.commands.len(), response.results.len());
            }
        }
        let epid_entry = &ra[4].results;
        assert!(matches!(
            epid_entry[epid_entry.len() - 2],
            CommandResult::Epid(_)
        ));
        assert!(matches!(
            epid_entry.last(),
            Some(CommandResult::Activation(r)) if r.duplicate
        ));

        // Same history, same snapshot bytes.
        let sa = a
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let sb = b
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(sa.meta.last_log_id, Some(log_id(2, 12)));
        assert_eq!(sa.meta.last_membership.log_id(), &Some(log_id(1, 1)));
        // Equal states give equal bodies (the snapshot ids differ only by build number).
        let (ma, ba) = (sa.meta.clone(), bytes_of(sa).await);
        let (mb, bb) = (sb.meta.clone(), bytes_of(sb).await);
        assert_eq!(ma.snapshot_id, mb.snapshot_id);
        assert_eq!(ba, bb);
    }

    #[tokio::test]
    async fn snapshot_installs_into_fresh_state_machine() {
        let (_d1, _db1, mut leader) = open_sm();
        let (_d2, _db2, mut follower) = open_sm();
        let entries = history();
        leader.apply(entries[..8].to_vec()).await.unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        // The leader keeps applying after the snapshot; the follower must get the snapshot's
        // state, not the leader's current one.
        let at_snapshot = state_of(&leader);
        leader.apply(entries[8..].to_vec()).await.unwrap();

        let meta = snap.meta.clone();
        let data = bytes_of(snap).await;
        let snap = Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(tempfile::tempfile().unwrap())),
        };
        let mut received = follower.begin_receiving_snapshot().await.unwrap();
        // Chunks as openraft writes them.
        for chunk in data.chunks(7) {
            received.write_all(chunk).await.unwrap();
        }
        follower
            .install_snapshot(&snap.meta, received)
            .await
            .unwrap();

        assert_eq!(state_of(&follower), at_snapshot);
        assert_eq!(follower.handle().last_applied(), Some(log_id(2, 8)));
        assert_eq!(
            follower.handle().last_membership().log_id(),
            &Some(log_id(1, 1))
        );
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snap.meta);

        // Catching up from the snapshot reaches the leader's state.
        follower.apply(entries[8..].to_vec()).await.unwrap();
        assert_eq!(state_of(&follower), state_of(&leader));
    }

    #[tokio::test]
    async fn reopen_starts_from_stored_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let entries = history();
        let (state, meta) = {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(entries[..6].to_vec()).await.unwrap();
            let snap = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            let state = state_of(&sm);
            // Applied after the snapshot: not persisted, comes back through log replay.
            sm.apply(entries[6..].to_vec()).await.unwrap();
            (state, snap.meta)
        };
        let mut sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(state_of(&sm), state);
        assert_eq!(
            sm.applied_state().await.unwrap(),
            (meta.last_log_id, meta.last_membership.clone())
        );
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
    }

    #[tokio::test]
    async fn the_registry_is_applied_snapshotted_and_installed() {
        let dir = tempfile::tempdir().unwrap();
        let reg = crate::Registration {
            node_id: 3,
            incarnation: Uuid::from_u128(77),
            voter_wanted: true,
        };
        let mut entries = history();
        let next = entries.last().unwrap().log_id.index + 1;
        entries.push(Entry {
            log_id: log_id(2, next),
            payload: EntryPayload::Normal(crate::ClusterRequest::register(reg)),
        });
        let snap = {
            let mut sm = StateMachine::open(dir.path()).unwrap();
            sm.apply(entries).await.unwrap();
            assert_eq!(sm.handle().registration(3), Some(reg));
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap()
        };
        // Reopened from its snapshot file, and installed on another node from the bytes.
        let reopened = StateMachine::open(dir.path()).unwrap();
        assert_eq!(reopened.handle().registration(3), Some(reg));
        let meta = snap.meta.clone();
        let bytes = bytes_of(snap).await;
        let (_d, _db, mut other) = open_sm();
        let mut recv = other.begin_receiving_snapshot().await.unwrap();
        recv.write_all(&bytes).await.unwrap();
        other.install_snapshot(&meta, recv).await.unwrap();
        assert_eq!(other.handle().registry(), BTreeMap::from([(3, reg)]));
    }

    #[tokio::test]
    async fn older_build_does_not_replace_newer_snapshot() {
        let (_d, _db, mut sm) = open_sm();
        let entries = history();
        sm.apply(entries[..4].to_vec()).await.unwrap();
        // A build that copied the state early but persists after a later snapshot was saved
        // (e.g. one installed from the leader meanwhile).
        let mut early = FileSnapshotBuilder {
            applied: StateHandle::new(sm.applied.lock_read().clone()),
            files: sm.files.clone(),
            seq: 99,
        };
        sm.apply(entries[4..].to_vec()).await.unwrap();
        let newer = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let older = early.build_snapshot().await.unwrap();
        assert!(older.meta.last_log_id < newer.meta.last_log_id);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer.meta);
    }

    #[tokio::test]
    async fn mismatched_snapshot_is_rejected() {
        let (_d1, _db1, mut leader) = open_sm();
        let (_d2, _db2, mut follower) = open_sm();
        leader.apply(history()[..5].to_vec()).await.unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut meta = snap.meta.clone();
        meta.last_log_id = Some(log_id(2, 99));
        let err = follower
            .install_snapshot(&meta, snap.snapshot)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("last_log_id"), "{err}");
        assert_eq!(follower.handle().last_applied(), None);
        assert!(follower.get_current_snapshot().await.unwrap().is_none());
    }
}
