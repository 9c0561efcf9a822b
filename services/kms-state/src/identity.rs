//! [`HostIdentity`]: the one machine a cluster presents to clients — its hardware id and the
//! OS build and platform id every ePID names — chosen once and replicated.

use serde::{Deserialize, Serialize};

/// The host's identity, the same on every node: the V6 response's hardware id and the build
/// and platform id of every ePID. Set by the first [`Command::SetHostIdentity`] applied (later
/// ones return it unchanged) and replaced only by [`Command::ReplaceHostIdentity`].
///
/// [`Command::SetHostIdentity`]: crate::Command::SetHostIdentity
/// [`Command::ReplaceHostIdentity`]: crate::Command::ReplaceHostIdentity
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostIdentity {
    /// Hardware id sent in V6 responses.
    pub hwid: [u8; 8],
    /// Host OS build every ePID carries, e.g. 20348.
    pub build: u32,
    /// Platform id that goes with the build, e.g. 3612.
    pub platform: u32,
    /// When it was chosen (unix ms, the proposing node's clock).
    pub set_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, CommandResult, HostState};
    use std::collections::BTreeMap;

    fn identity(hwid: u8, build: u32, set_ms: u64) -> HostIdentity {
        HostIdentity {
            hwid: [hwid; 8],
            build,
            platform: 3612,
            set_ms,
        }
    }

    fn epid(group: &str, epid: &str, time_ms: u64) -> Command {
        Command::SetEpid {
            count_group: group.into(),
            epid: epid.into(),
            time_ms,
        }
    }

    fn snapshot_round_trip(s: &HostState) -> HostState {
        let mut bytes = Vec::new();
        s.write_snapshot(&mut bytes).unwrap();
        HostState::read_snapshot(bytes.as_slice()).unwrap()
    }

    #[test]
    fn first_identity_wins() {
        let mut s = HostState::default();
        assert_eq!(s.host_identity(), None);
        let a = identity(1, 20348, 10);
        let b = identity(2, 26100, 11);
        assert_eq!(
            s.apply(&Command::SetHostIdentity(a)),
            CommandResult::HostIdentity(a)
        );
        assert_eq!(
            s.apply(&Command::SetHostIdentity(b)),
            CommandResult::HostIdentity(a)
        );
        assert_eq!(s.host_identity(), Some(&a));
        assert_eq!(Command::SetHostIdentity(b).time_ms(), 11);
    }

    #[test]
    fn replace_swaps_identity_and_every_epid_at_once() {
        let mut s = HostState::default();
        let a = identity(1, 20348, 10);
        s.apply(&Command::SetHostIdentity(a));
        s.apply(&epid("windows", "old-w", 11));
        s.apply(&epid("office2010", "old-o10", 12));
        let b = identity(2, 26100, 20);
        let epids = BTreeMap::from([
            ("windows".to_string(), "new-w".to_string()),
            ("office".to_string(), "new-o".to_string()),
        ]);
        let r = s.apply(&Command::ReplaceHostIdentity { identity: b, epids });
        assert_eq!(r, CommandResult::HostIdentity(b));
        assert_eq!(s.host_identity(), Some(&b));
        assert_eq!(s.epid("windows"), Some("new-w"));
        assert_eq!(s.epid("office"), Some("new-o"));
        // Groups not listed lose their old ePID: it named the old build.
        assert_eq!(s.epid("office2010"), None);
        assert!(s.epids().all(|r| r.set_ms == 20));
        // An ePID proposed for the old identity after the replacement changes nothing.
        assert_eq!(
            s.apply(&epid("windows", "stale", 21)),
            CommandResult::Epid("new-w".into())
        );
        // And a late first-write of an identity neither.
        s.apply(&Command::SetHostIdentity(a));
        assert_eq!(s.host_identity(), Some(&b));
    }

    #[test]
    fn identity_survives_a_snapshot_and_its_absence_too() {
        let mut s = HostState::default();
        s.apply(&epid("windows", "w", 1));
        let without = snapshot_round_trip(&s);
        assert_eq!(without, s);
        assert_eq!(without.host_identity(), None);

        let a = identity(7, 9600, 5);
        s.apply(&Command::SetHostIdentity(a));
        let with = snapshot_round_trip(&s);
        assert_eq!(with, s);
        assert_eq!(with.host_identity(), Some(&a));
        assert_eq!(with.epid("windows"), Some("w"));
    }
}
