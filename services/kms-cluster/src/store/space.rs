//! Free space on the filesystem that holds a data directory (`statvfs`), and the rule for
//! when the log may set disk space aside ahead of time.
//!
//! A preallocated segment takes its whole size the moment it is prepared. On a nearly full
//! disk that would fail the log's own next write (`No space left on device`) while the space
//! it needed was only reserved, so the log preallocates only while plenty stays free after
//! it; otherwise segments grow as records are appended and the disk is used to its end.

use std::path::Path;

/// Size and free space of a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged process can still allocate (`f_bavail` × fragment size).
    pub available: u64,
    /// Total size (`f_blocks` × fragment size).
    pub size: u64,
}

/// Size and free space of the filesystem holding `dir`.
pub fn of(dir: &Path) -> std::io::Result<Space> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(Space {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        size: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// Whether a preallocated segment of `bytes` may be prepared with `available` bytes free:
/// only while twice as much stays free after it (room for the segment being written, a
/// snapshot and the next rotation).
pub fn may_preallocate(available: u64, bytes: u64) -> bool {
    available >= bytes.saturating_mul(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocates_only_while_twice_the_segment_stays_free() {
        let seg = 8 << 20;
        assert!(may_preallocate(u64::MAX, seg));
        assert!(may_preallocate(3 * seg, seg));
        assert!(!may_preallocate(3 * seg - 1, seg));
        assert!(!may_preallocate(seg, seg));
        assert!(!may_preallocate(0, seg));
        assert!(may_preallocate(0, 0));
    }

    #[test]
    fn reads_the_filesystem_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = of(dir.path()).unwrap();
        assert!(s.size > 0 && s.available <= s.size, "{s:?}");
        assert!(of(&dir.path().join("missing")).is_err());
    }
}
