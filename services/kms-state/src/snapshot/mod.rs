//! The snapshot codec: [`HostState::write_snapshot`] and [`HostState::read_snapshot`].
//!
//! Owns the file format of a whole state (the Raft snapshot):
//!
//! ```text
//! "KMSSTATE"                      8 bytes of magic
//! schema version                  u32, little-endian (SNAPSHOT_SCHEMA_VERSION)
//! record*                         varint length + protobuf `Record` (proto/state.proto)
//! End record                      counts of every record kind before it
//! CRC-32                          u32, little-endian, of every byte before it
//! ```
//!
//! Records come in a fixed order (configuration, statistics, the host identity if set, ePIDs, each count group's clients
//! by CMID with their shared profiles, remembered request ids in expiry order with
//! delta-encoded times; see `proto/state.proto`), so equal states give equal bytes. These are
//! the orders the state keeps them in, so the writer walks each structure in sequence, without
//! a lookup per entry. The descriptive fields clients share are written once
//! per profile, which keeps a client near 50 bytes. Both directions stream: the writer holds
//! one record at a time (plus the table of profile numbers), the reader builds the state as it
//! goes, holding at most a chunk of records to insert them in a shuffled order (see
//! `snapshot::read`).
//!
//! Reading validates everything and never panics: a cut file fails on the missing end marker
//! or checksum, a changed byte on the checksum at the latest, and fields out of range or out of
//! order fail where they are found; see [`StateError`].

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::compact::Profile;
use crate::state::HostState;
use crate::stats::{LicenseCounts, Stats};

/// Generated from `proto/state.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/kmsstate.v1.rs"));
}

use pb::record::Kind;

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KMSSTATE";

/// Layout version written after the magic. A reader accepts its own and version 1 (before
/// the inventory kept records beyond the count: every client of a version-1 file is counted,
/// and its last request and last success are its last counted request).
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 2;

/// The oldest layout a reader accepts.
const OLDEST_SCHEMA_VERSION: u32 = 1;

/// Longest record accepted (and written): far above any valid record, low enough that a corrupt
/// length cannot make the reader allocate much.
pub const MAX_RECORD_LEN: u64 = 1 << 20;

/// Buffer size of the reader and writer wrapped around the caller's stream.
const IO_BUFFER: usize = 64 * 1024;

mod read;
mod write;

fn stats_to_pb(group: Option<&str>, s: &Stats) -> pb::GroupStats {
    let c = &s.by_license_state;
    pb::GroupStats {
        count_group: group.map(str::to_owned),
        total: s.total,
        failed: s.failed,
        unlicensed: c.unlicensed,
        licensed: c.licensed,
        initial_grace: c.initial_grace,
        additional_grace: c.additional_grace,
        non_genuine_grace: c.non_genuine_grace,
        notification: c.notification,
        extended_grace: c.extended_grace,
        other: c.other,
    }
}

fn stats_from_pb(s: &pb::GroupStats) -> Stats {
    Stats {
        total: s.total,
        failed: s.failed,
        by_license_state: LicenseCounts {
            unlicensed: s.unlicensed,
            licensed: s.licensed,
            initial_grace: s.initial_grace,
            additional_grace: s.additional_grace,
            non_genuine_grace: s.non_genuine_grace,
            notification: s.notification,
            extended_grace: s.extended_grace,
            other: s.other,
        },
    }
}

fn profile_to_pb(p: &Profile) -> pb::Profile {
    pb::Profile {
        product_group: p.product_group.as_deref().map(str::to_owned),
        sku_id: p.sku_id.as_bytes().to_vec(),
        kms_counted_id: p.kms_counted_id.as_bytes().to_vec(),
        application_id: p.application_id.as_bytes().to_vec(),
        license_state: p.license_state.to_wire(),
        required_count: p.required_count,
        protocol_major: u32::from(p.protocol_major),
        client_vm: p.client_vm,
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Config(_) => "config",
        Kind::GroupStats(s) if s.count_group.is_none() => "global stats",
        Kind::GroupStats(_) => "group stats",
        Kind::HostIdentity(_) => "host identity",
        Kind::Epid(_) => "epid",
        Kind::Window(_) => "window",
        Kind::Profile(_) => "profile",
        Kind::Client(_) => "client",
        Kind::Request(_) => "request",
        Kind::End(_) => "end",
    }
}

/// Serde support for [`HostState`] as its snapshot bytes (a byte string, or an array of
/// numbers in JSON). It exists for code that still embeds the state in a serde document
/// (kms-cluster's current Raft snapshot); prefer [`HostState::write_snapshot`], which streams.
impl Serialize for HostState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        self.write_snapshot(&mut bytes)
            .map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for HostState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SnapshotBytes;
        impl<'de> Visitor<'de> for SnapshotBytes {
            type Value = HostState;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("kms-state snapshot bytes")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<HostState, E> {
                HostState::read_snapshot(v).map_err(E::custom)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HostState, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                HostState::read_snapshot(bytes.as_slice()).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_bytes(SnapshotBytes)
    }
}
