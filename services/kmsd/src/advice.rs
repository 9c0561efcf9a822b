//! What an operator is told when the daemon stops on something they fix on the data
//! directory: recognising a full disk, damaged data and a directory this process may not
//! write in a [`DaemonError`], and the advice kmsd prints as its last line.

use std::path::Path;

use crate::DaemonError;

impl DaemonError {
    /// What to do about this error, when it is one an operator fixes on the data directory
    /// (a full disk, damaged data, a directory this process may not write); printed as
    /// kmsd's last line.
    pub fn advice(&self, data_dir: &Path) -> Option<String> {
        if self.is_disk_full() {
            Some(disk_full_hint(data_dir))
        } else if self.is_damaged_data() {
            Some(damaged_data_hint(data_dir))
        } else if self.is_permission_denied() {
            Some(permission_hint(data_dir))
        } else {
            None
        }
    }

    /// Whether the data disk ran full (`ENOSPC` anywhere in the cause chain). Raft's fatal
    /// errors reach us as text, so for those the operating system's message is matched.
    pub fn is_disk_full(&self) -> bool {
        self.has_io_error(std::io::ErrorKind::StorageFull)
            || matches!(self, DaemonError::Fatal(m) if m.contains(ENOSPC_TEXT))
    }

    /// Whether the node could not start because its data directory holds damaged records (a
    /// log record or snapshot that was made durable and no longer reads back), as opposed to
    /// a disk error or data of a newer version.
    pub fn is_damaged_data(&self) -> bool {
        use kms_cluster::node::StartError;
        use kms_cluster::outbox::OutboxError;
        use kms_cluster::{ClusterError, WalError};
        let DaemonError::Cluster { source, .. } = self else {
            return false;
        };
        let e = match source {
            StartError::Store(e) => e,
            StartError::Outbox(OutboxError::Corrupt { .. }) => return true,
            _ => return false,
        };
        match e {
            ClusterError::Wal(WalError::Corrupt { .. } | WalError::BadEntry { .. }) => true,
            ClusterError::BadSnapshot { .. } | ClusterError::SnapshotMismatch { .. } => true,
            ClusterError::State(
                kms_state::StateError::Io(_) | kms_state::StateError::SchemaVersion { .. },
            ) => false,
            ClusterError::State(_) => true,
            _ => false,
        }
    }

    /// Whether a file or directory of the data directory refused this process
    /// (`EACCES`/`EPERM` in the cause chain of a data directory or store error): typically a
    /// volume that another user (or root) wrote.
    pub fn is_permission_denied(&self) -> bool {
        // Only errors of the data directory (a listener refused its port is another story).
        match self {
            DaemonError::DataDir { .. } => {}
            DaemonError::Cluster { source, .. }
                if !matches!(source, kms_cluster::node::StartError::Bind { .. }) => {}
            _ => return false,
        }
        self.has_io_error(std::io::ErrorKind::PermissionDenied)
    }

    /// Whether an `io::Error` of `kind` is anywhere in the cause chain.
    fn has_io_error(&self, kind: std::io::ErrorKind) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == kind)
            {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

/// What an operator does when the node cannot start from a damaged data directory.
pub fn damaged_data_hint(data_dir: &Path) -> String {
    format!(
        "the data in {dir} is damaged: something this node wrote and made durable no longer \
         reads back, so it cannot start from it. Move {dir} aside (keep it to find out what \
         happened) and start the node with an empty data directory. In a cluster it rejoins \
         as a new incarnation and copies the state from the leader; a single node starts \
         counting from zero (clients are counted again as they renew, within 7 days) and its \
         request statistics start again.",
        dir = data_dir.display()
    )
}

/// What an operator does when the data directory is not this process's to write.
pub fn permission_hint(data_dir: &Path) -> String {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    format!(
        "kmsd runs as uid {uid} (gid {gid}) and may not write in {dir}: give the directory \
         and everything in it to that user (`chown -R {uid}:{gid} {dir}`; the container image \
         runs as 10001, the Helm chart sets fsGroup 10001), or run kmsd as its owner.",
        dir = data_dir.display()
    )
}

/// How Linux words `ENOSPC` in an `io::Error`'s text.
const ENOSPC_TEXT: &str = "No space left on device";

/// What an operator does when the node stopped (or cannot start) on a full data disk.
pub fn disk_full_hint(data_dir: &Path) -> String {
    format!(
        "the data disk of {} is full: free space on it or grow the volume, then start kmsd \
         again. Do not delete files under raft/ to make room. Every activation this node \
         answered is on disk and is kept.",
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_full_disk_is_recognised_through_the_cause_chain_and_in_raft_text() {
        let full = DaemonError::DataDir {
            dir: "/d".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(full.is_disk_full());
        let fatal = DaemonError::Fatal(
            "when Write Logs: No space left on device (os error 28)".to_string(),
        );
        assert!(fatal.is_disk_full());
        let other = DaemonError::DataDir {
            dir: "/d".into(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert!(!other.is_disk_full());
        assert!(!DaemonError::Fatal("when Write Logs: Input/output error".into()).is_disk_full());
        assert!(disk_full_hint(Path::new("/var/lib/kmsd")).contains("/var/lib/kmsd"));
    }

    #[test]
    fn a_refused_data_directory_is_recognised_through_the_cause_chain() {
        let refused = DaemonError::Cluster {
            dir: "/d".into(),
            source: kms_cluster::node::StartError::Store(kms_cluster::ClusterError::Wal(
                kms_cluster::WalError::Io {
                    path: "/d/raft/log".into(),
                    source: std::io::Error::from_raw_os_error(13),
                },
            )),
        };
        assert!(refused.is_permission_denied());
        assert!(!refused.is_disk_full() && !refused.is_damaged_data());
        let full = DaemonError::DataDir {
            dir: "/d".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(!full.is_permission_denied());
        let port = DaemonError::Bind {
            addr: "0.0.0.0:1688".parse().unwrap(),
            source: std::io::Error::from_raw_os_error(13),
        };
        assert!(!port.is_permission_denied(), "not a data directory error");
        let hint = permission_hint(Path::new("/var/lib/kmsd"));
        assert!(
            hint.contains("chown -R") && hint.contains("/var/lib/kmsd"),
            "{hint}"
        );
    }

    #[test]
    fn damaged_data_is_told_from_disk_errors_and_newer_versions() {
        use kms_cluster::node::StartError;
        use kms_cluster::{ClusterError, WalError};
        let start = |e: ClusterError| DaemonError::Cluster {
            dir: "/d".into(),
            source: StartError::Store(e),
        };
        let corrupt = start(ClusterError::Wal(WalError::Corrupt {
            path: "/d/raft/log/1.wal".into(),
            offset: 7,
            reason: "record checksum mismatch".into(),
        }));
        assert!(corrupt.is_damaged_data());
        assert!(!corrupt.is_disk_full());
        let snapshot = start(ClusterError::State(kms_state::StateError::TrailingData));
        assert!(snapshot.is_damaged_data());
        let newer = start(ClusterError::State(kms_state::StateError::SchemaVersion {
            found: 9,
            expected: 1,
        }));
        assert!(!newer.is_damaged_data());
        let outbox = DaemonError::Cluster {
            dir: "/d".into(),
            source: StartError::Outbox(kms_cluster::outbox::OutboxError::Corrupt {
                path: "/d/outbox.log".into(),
                offset: 9,
                reason: "record checksum mismatch".into(),
            }),
        };
        assert!(outbox.is_damaged_data());
        let io = start(ClusterError::Io(std::io::Error::from_raw_os_error(5)));
        assert!(!io.is_damaged_data());
        assert!(damaged_data_hint(Path::new("/var/lib/kmsd")).contains("/var/lib/kmsd"));
    }
}
