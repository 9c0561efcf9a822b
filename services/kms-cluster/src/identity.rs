//! [`Identity`]: who this data directory belongs to — the node id it was created for and an
//! incarnation that is new every time the directory starts empty.
//!
//! Owns the `identity` file of the data directory and two rules:
//! - a data directory created for node 3 never starts as node 2 (an operator's typo in
//!   `node_id` or a volume mounted on the wrong pod would otherwise make two nodes share one
//!   identity);
//! - a node whose Raft store is empty gets a fresh incarnation, so that the cluster can tell "a
//!   new member" from "a member whose disk was wiped" (see `rejoin`).
//!
//! The file is one line of JSON, written to a temporary file, fsynced and renamed into place.
//!
//! It also owns the rule that keeps a wiped node from costing committed data: a node that
//! starts with an empty store is in [`Quarantine`] (its `Raft` service refuses votes, entries
//! and snapshots) until [`decide`] says, from its peers' answers to `Identity`, that it is new
//! ([`Verdict::Join`]) or that the leader has taken it back under its new incarnation
//! ([`Verdict::Rejoin`]: removed, re-added as a learner, promoted once caught up). The
//! replicated registry (`Registration` entries) is how peers tell "new" from "wiped".

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::pb::{IdentityAnswer, MemberRoleOf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::NodeId;

/// File name of the identity in the data directory.
pub const IDENTITY_FILE: &str = "identity";

/// What the identity file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node id the directory was created for.
    pub node_id: NodeId,
    /// Random id of this incarnation of the node's store; new whenever the store starts empty.
    pub incarnation: Uuid,
    /// When this incarnation began (unix ms).
    pub created_ms: u64,
}

/// Why the identity could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The data directory belongs to another node id.
    #[error(
        "data directory {dir} belongs to node {found}, but this node is configured as node \
         {configured}: check node_id (or the volume mounted here)"
    )]
    WrongNode {
        /// The directory.
        dir: PathBuf,
        /// Node id in the identity file.
        found: NodeId,
        /// Node id of the configuration.
        configured: NodeId,
    },
    /// The identity file cannot be read or written.
    #[error("identity file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Loads the identity of `data_dir` for node `node_id`, creating it when missing.
///
/// `store_empty` says whether the Raft store holds nothing (no vote, entry or snapshot): then
/// the incarnation is renewed even if a file exists (the log was deleted but not the
/// identity). Returns the identity and whether it is a new incarnation. Blocking.
pub fn load_or_create(
    data_dir: &Path,
    node_id: NodeId,
    store_empty: bool,
    now_ms: u64,
) -> Result<(Identity, bool), IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    let file_err = |reason: String| IdentityError::File {
        path: path.clone(),
        reason,
    };
    let existing: Option<Identity> = match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes).map_err(|e| file_err(format!("does not parse: {e}")))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(file_err(e.to_string())),
    };
    if let Some(id) = existing {
        if id.node_id != node_id {
            return Err(IdentityError::WrongNode {
                dir: data_dir.to_owned(),
                found: id.node_id,
                configured: node_id,
            });
        }
        if !store_empty {
            return Ok((id, false));
        }
    }
    let id = Identity {
        node_id,
        incarnation: Uuid::new_v4(),
        created_ms: now_ms,
    };
    write(data_dir, &id).map_err(|e| file_err(e.to_string()))?;
    Ok((id, true))
}

/// Whether this node may take part in Raft yet: while active, the node's `Raft` service refuses
/// every vote, append and snapshot request (cheap to clone; all clones share the flag).
#[derive(Debug, Clone, Default)]
pub struct Quarantine(Arc<AtomicBool>);

impl Quarantine {
    /// A quarantine that is active from the start.
    pub fn active() -> Self {
        Quarantine(Arc::new(AtomicBool::new(true)))
    }

    /// Whether the node must still refuse Raft requests.
    pub fn is_active(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Lets the node take part in Raft.
    pub fn lift(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What a node with an empty store does next, decided from its peers' answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to protect: a new node, or a new cluster forming. Take part in Raft.
    Join,
    /// The cluster knows this node id (it was wiped, or started late): ask the leader at
    /// `leader_addr` to take it back as a learner; `as_voter`: it was a voter.
    Rejoin {
        /// The leader's address.
        leader_addr: String,
        /// Whether the node was a voter (the leader promotes it once caught up).
        as_voter: bool,
    },
    /// Not safe to decide yet; ask again later.
    Wait(String),
}

/// Decides what node `me` (empty store) does, from the `answers` of the peers it reached
/// (`peers` is how many it asked).
///
/// A peer that lists `me` in its membership and has registered an incarnation of `me` means
/// `me` took part before and lost its store: the cluster may hold committed entries that `me`
/// once acknowledged, so it must not vote or accept entries under that identity. With a leader
/// known it rejoins through the leader; without one it waits. A member that no peer has
/// registered never took part (a node of a new cluster starting after the others), so it
/// joins; the only node this misjudges is one wiped within the seconds between its first
/// entries and its registration (see `docs/design/storage.md`).
pub fn decide(me: NodeId, peers: usize, answers: &[IdentityAnswer]) -> Verdict {
    if peers == 0 {
        return Verdict::Join;
    }
    if answers.is_empty() {
        return Verdict::Wait(format!("none of {peers} peers answered"));
    }
    let knows_me: Vec<&IdentityAnswer> = answers
        .iter()
        .filter(|a| a.initialized && a.role != MemberRoleOf::None && a.registered.is_some())
        .collect();
    if knows_me.is_empty() {
        return Verdict::Join;
    }
    if knows_me.iter().any(|a| a.leader_id == Some(me)) {
        return Verdict::Wait(
            "peers still follow this node's previous incarnation as leader; waiting for them \
             to elect another"
                .into(),
        );
    }
    let as_voter = knows_me.iter().any(|a| a.role == MemberRoleOf::Voter);
    match knows_me
        .iter()
        .find(|a| a.leader_id.is_some() && !a.leader_addr.is_empty())
    {
        Some(leader) => Verdict::Rejoin {
            leader_addr: leader.leader_addr.clone(),
            as_voter,
        },
        None => Verdict::Wait(format!(
            "the cluster knows node {me} under an earlier incarnation (its data directory was \
             wiped or replaced) and no leader is known to take it back; waiting for a quorum \
             of its peers"
        )),
    }
}

fn write(data_dir: &Path, id: &Identity) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    let mut line = serde_json::to_vec(id).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(IDENTITY_FILE))?;
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_kept_while_the_store_has_data_renewed_when_it_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (a, new_a) = load_or_create(dir.path(), 2, true, 10).unwrap();
        assert!(new_a);
        let (b, new_b) = load_or_create(dir.path(), 2, false, 20).unwrap();
        assert_eq!((a, new_b), (b, false));
        let (c, new_c) = load_or_create(dir.path(), 2, true, 30).unwrap();
        assert!(new_c);
        assert_ne!(c.incarnation, a.incarnation);
        assert_eq!(c.created_ms, 30);
    }

    #[test]
    fn another_node_id_is_refused_with_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), 3, true, 0).unwrap();
        let err = load_or_create(dir.path(), 2, false, 0).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("belongs to node 3") && text.contains("node 2"),
            "{text}"
        );
    }

    fn answer(
        initialized: bool,
        role: MemberRoleOf,
        registered: bool,
        leader: Option<NodeId>,
    ) -> IdentityAnswer {
        IdentityAnswer {
            initialized,
            role,
            registered: registered.then_some(crate::Registration {
                node_id: 2,
                incarnation: Uuid::from_u128(1),
                voter_wanted: false,
            }),
            leader_id: leader,
            leader_addr: leader
                .map(|l| format!("10.0.0.{l}:7000"))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn a_node_without_peers_or_unknown_to_them_joins() {
        assert_eq!(decide(2, 0, &[]), Verdict::Join);
        let fresh = answer(false, MemberRoleOf::None, false, None);
        assert_eq!(decide(2, 2, std::slice::from_ref(&fresh)), Verdict::Join);
        let other_cluster = answer(true, MemberRoleOf::None, true, Some(1));
        assert_eq!(decide(2, 2, &[other_cluster, fresh]), Verdict::Join);
    }

    #[test]
    fn nobody_answering_means_wait() {
        assert!(matches!(decide(2, 2, &[]), Verdict::Wait(_)));
    }

    #[test]
    fn a_known_voter_rejoins_through_the_leader_even_if_another_peer_is_fresh() {
        let fresh = answer(false, MemberRoleOf::None, false, None);
        let knows = answer(true, MemberRoleOf::Voter, true, Some(3));
        assert_eq!(
            decide(2, 2, &[fresh, knows]),
            Verdict::Rejoin {
                leader_addr: "10.0.0.3:7000".into(),
                as_voter: true
            }
        );
        let learner = answer(true, MemberRoleOf::Learner, true, Some(1));
        assert_eq!(
            decide(2, 2, &[learner]),
            Verdict::Rejoin {
                leader_addr: "10.0.0.1:7000".into(),
                as_voter: false
            }
        );
    }

    #[test]
    fn a_registered_member_without_a_leader_waits_an_unregistered_one_joins() {
        let registered = answer(true, MemberRoleOf::Voter, true, None);
        assert!(matches!(decide(2, 2, &[registered]), Verdict::Wait(r) if r.contains("wiped")));
        let forming = answer(true, MemberRoleOf::Voter, false, None);
        assert_eq!(decide(2, 2, &[forming]), Verdict::Join);
        // A late node of a new cluster: a member with a leader, never registered.
        let late = answer(true, MemberRoleOf::Voter, false, Some(1));
        assert_eq!(decide(2, 2, &[late]), Verdict::Join);
    }

    #[test]
    fn peers_that_still_follow_the_old_self_make_it_wait() {
        let stale = answer(true, MemberRoleOf::Voter, true, Some(2));
        assert!(matches!(decide(2, 2, &[stale]), Verdict::Wait(_)));
    }

    #[test]
    fn a_damaged_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"{nonsense").unwrap();
        assert!(matches!(
            load_or_create(dir.path(), 1, false, 0),
            Err(IdentityError::File { .. })
        ));
    }
}
