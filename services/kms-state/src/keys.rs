//! The sled key layout: how each part of a [`HostState`](crate::HostState) maps to keys.
//!
//! All keys live in sled's default tree so that one `sled::Batch` can update any of them
//! atomically. Keys are UTF-8 text (readable with any sled dump tool); values are JSON.
//!
//! | key | value |
//! |---|---|
//! | `meta/schema_version` | `u32`, [`SCHEMA_VERSION`] |
//! | `meta/config` | [`StateConfig`](crate::StateConfig) |
//! | `stats/global` | [`Stats`](crate::Stats) of all requests |
//! | `stats/group/<count group>` | [`Stats`](crate::Stats) of one count group |
//! | `client/<count group>/<cmid>` | [`ClientRecord`](crate::ClientRecord) (inventory + window) |
//! | `epid/<count group>` | [`EpidRecord`](crate::EpidRecord) |
//! | `request/<request id>` | [`DedupEntry`](crate::DedupEntry) |
//!
//! UUIDs are lowercase hyphenated. A count group may contain `/`; client keys are split at the
//! last `/` (a UUID never contains one).

use uuid::Uuid;

/// Version of the on-disk layout this build reads and writes. Bump it (and migrate) whenever a
/// key or value format changes; opening a store with another version fails with
/// [`StateError::SchemaVersion`](crate::StateError::SchemaVersion).
pub const SCHEMA_VERSION: u32 = 1;

pub(crate) const META_SCHEMA_VERSION: &str = "meta/schema_version";
pub(crate) const META_CONFIG: &str = "meta/config";
pub(crate) const META_PREFIX: &str = "meta/";
pub(crate) const STATS_GLOBAL: &str = "stats/global";
pub(crate) const STATS_GROUP_PREFIX: &str = "stats/group/";
pub(crate) const CLIENT_PREFIX: &str = "client/";
pub(crate) const EPID_PREFIX: &str = "epid/";
pub(crate) const REQUEST_PREFIX: &str = "request/";

pub(crate) fn group_stats(group: &str) -> String {
    format!("{STATS_GROUP_PREFIX}{group}")
}

pub(crate) fn client(group: &str, cmid: &Uuid) -> String {
    format!("{CLIENT_PREFIX}{group}/{}", cmid.hyphenated())
}

pub(crate) fn epid(group: &str) -> String {
    format!("{EPID_PREFIX}{group}")
}

pub(crate) fn request(id: &Uuid) -> String {
    format!("{REQUEST_PREFIX}{}", id.hyphenated())
}

/// What a stored key designates.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    Meta(&'a str),
    GlobalStats,
    GroupStats(&'a str),
    Client(&'a str, Uuid),
    Epid(&'a str),
    Request(Uuid),
}

/// Parses a stored key; `None` for anything this layout does not define.
pub(crate) fn parse(key: &str) -> Option<Key<'_>> {
    if let Some(name) = key.strip_prefix(META_PREFIX) {
        return Some(Key::Meta(name));
    }
    if key == STATS_GLOBAL {
        return Some(Key::GlobalStats);
    }
    if let Some(group) = key.strip_prefix(STATS_GROUP_PREFIX) {
        return Some(Key::GroupStats(group));
    }
    if let Some(rest) = key.strip_prefix(CLIENT_PREFIX) {
        let (group, cmid) = rest.rsplit_once('/')?;
        return Some(Key::Client(group, Uuid::parse_str(cmid).ok()?));
    }
    if let Some(group) = key.strip_prefix(EPID_PREFIX) {
        return Some(Key::Epid(group));
    }
    if let Some(id) = key.strip_prefix(REQUEST_PREFIX) {
        return Some(Key::Request(Uuid::parse_str(id).ok()?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let id = Uuid::from_u128(0xabc);
        assert_eq!(parse(&client("a/b", &id)), Some(Key::Client("a/b", id)));
        assert_eq!(parse(&request(&id)), Some(Key::Request(id)));
        assert_eq!(parse(&epid("office")), Some(Key::Epid("office")));
        assert_eq!(
            parse(&group_stats("windows")),
            Some(Key::GroupStats("windows"))
        );
        assert_eq!(parse(STATS_GLOBAL), Some(Key::GlobalStats));
        assert_eq!(parse(META_CONFIG), Some(Key::Meta("config")));
        assert_eq!(parse("client/windows/not-a-uuid"), None);
        assert_eq!(parse("bogus"), None);
    }
}
