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

use std::path::{Path, PathBuf};

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
