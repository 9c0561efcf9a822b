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
//! Records come in a fixed order (configuration, statistics, ePIDs, each count group's clients
//! in expiry order with their shared profiles, remembered request ids in time order; see
//! `proto/state.proto`), so equal states give equal bytes. Times are delta-encoded along that
//! order and the descriptive fields clients share are written once per profile, which keeps a
//! client near 50 bytes. Both directions stream: the writer holds one record at a time (plus
//! the table of profile numbers), the reader builds the state record by record.
//!
//! Reading validates everything and never panics: a cut file fails on the missing end marker
//! or checksum, a changed byte on the checksum at the latest, and fields out of range or out of
//! order fail where they are found; see [`StateError`].

use std::collections::HashMap;
use std::fmt;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use kms_protocol::LicenseState;
use prost::Message;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::compact::{intern, intern_profile, MachineName, Profile};
use crate::dedup::DedupEntry;
use crate::epid::EpidRecord;
use crate::error::StateError;
use crate::state::{HostState, StateConfig};
use crate::stats::{LicenseCounts, Stats};
use crate::window::{Client, ClientWindow};

/// Generated from `proto/state.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/kmsstate.v1.rs"));
}

use pb::record::Kind;

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"KMSSTATE";

/// Layout version written after the magic; a reader accepts only its own.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// Longest record accepted (and written): far above any valid record, low enough that a corrupt
/// length cannot make the reader allocate much.
pub const MAX_RECORD_LEN: u64 = 1 << 20;

/// Buffer size of the reader and writer wrapped around the caller's stream.
const IO_BUFFER: usize = 64 * 1024;

impl HostState {
    /// Writes the whole state to `w` in the snapshot format (module `snapshot`) and returns the
    /// number of bytes written. Streams: memory use does not grow with the state. Equal states
    /// give equal bytes.
    ///
    /// `w` is buffered internally and flushed at the end; a `File` need not be wrapped.
    pub fn write_snapshot<W: Write>(&self, w: W) -> Result<u64, StateError> {
        let mut out = RecordWriter::new(w);
        out.raw(&SNAPSHOT_MAGIC)?;
        out.raw(&SNAPSHOT_SCHEMA_VERSION.to_le_bytes())?;
        let mut end = pb::End::default();

        out.record(Kind::Config(pb::Config {
            dedup_retention_ms: self.config.dedup_retention_ms,
        }))?;
        out.record(Kind::GroupStats(stats_to_pb(None, &self.global)))?;
        end.group_stats += 1;
        for (group, stats) in &self.group_stats {
            out.record(Kind::GroupStats(stats_to_pb(Some(group), stats)))?;
            end.group_stats += 1;
        }
        for rec in self.epids.values() {
            out.record(Kind::Epid(pb::Epid {
                count_group: rec.count_group.clone(),
                epid: rec.epid.clone(),
                set_ms: rec.set_ms,
            }))?;
            end.epids += 1;
        }

        // Profiles are numbered in order of first use; looked up by pointer first (interned
        // profiles share one allocation), by content when two allocations hold equal values.
        let mut by_ptr: HashMap<*const Profile, u32> = HashMap::new();
        let mut by_content: std::collections::BTreeMap<&Profile, u32> = Default::default();
        // Client and Request records are refilled in place, so writing allocates nothing per
        // client.
        let mut client = pb::Record {
            kind: Some(Kind::Client(pb::Client::default())),
        };
        for (group, window) in &self.windows {
            out.record(Kind::Window(pb::Window {
                count_group: group.to_string(),
                clients: window.len() as u64,
            }))?;
            end.windows += 1;
            let mut prev_last_seen = 0u64;
            for (cmid, c) in window.iter_by_last_seen() {
                let profile = match by_ptr.get(&Arc::as_ptr(&c.profile)) {
                    Some(&id) => id,
                    None => {
                        let id = match by_content.get(&*c.profile) {
                            Some(&id) => id,
                            None => {
                                let id = u32::try_from(by_content.len()).unwrap_or(u32::MAX);
                                out.record(Kind::Profile(profile_to_pb(&c.profile)))?;
                                end.profiles += 1;
                                by_content.insert(&c.profile, id);
                                id
                            }
                        };
                        by_ptr.insert(Arc::as_ptr(&c.profile), id);
                        id
                    }
                };
                if let Some(Kind::Client(r)) = &mut client.kind {
                    r.cmid.clear();
                    r.cmid.extend_from_slice(cmid.as_bytes());
                    r.machine_name.clear();
                    r.machine_name.push_str(c.machine_name.as_str());
                    r.profile = profile;
                    r.last_seen_delta_ms = c.last_seen_ms.saturating_sub(prev_last_seen);
                    r.age_ms = c.last_seen_ms.saturating_sub(c.first_seen_ms);
                    r.grace_minutes = c.grace_minutes;
                    r.requests = c.requests;
                }
                out.write(&client)?;
                prev_last_seen = c.last_seen_ms;
                end.clients += 1;
            }
        }

        let mut request = pb::Record {
            kind: Some(Kind::Request(pb::Request::default())),
        };
        let mut prev_time = 0u64;
        for e in self.dedup.iter_by_time() {
            if let Some(Kind::Request(r)) = &mut request.kind {
                r.request_id.clear();
                r.request_id.extend_from_slice(e.request_id.as_bytes());
                r.time_delta_ms = e.time_ms.saturating_sub(prev_time);
                r.active_clients = e.active_clients;
            }
            out.write(&request)?;
            prev_time = e.time_ms;
            end.requests += 1;
        }

        end.records = out.records;
        out.record(Kind::End(end))?;
        out.finish()
    }

    /// Reads a state written by [`HostState::write_snapshot`], validating the header, every
    /// record, the record order, the end marker's counts and the checksum, and requiring the
    /// input to end there. Never panics on corrupt input.
    ///
    /// `r` is buffered internally; a `File` need not be wrapped.
    pub fn read_snapshot<R: Read>(r: R) -> Result<HostState, StateError> {
        let mut inp = RecordReader::new(r);
        let mut magic = [0u8; 8];
        inp.exact(&mut magic, "header")?;
        if magic != SNAPSHOT_MAGIC {
            return Err(StateError::BadMagic { found: magic });
        }
        let mut version = [0u8; 4];
        inp.exact(&mut version, "header")?;
        let version = u32::from_le_bytes(version);
        if version != SNAPSHOT_SCHEMA_VERSION {
            return Err(StateError::SchemaVersion {
                found: version,
                expected: SNAPSHOT_SCHEMA_VERSION,
            });
        }
        let mut b = Builder::default();
        loop {
            let record = inp.records;
            let kind = inp.next()?;
            if let Kind::End(end) = kind {
                b.check_end(record, &end)?;
                break;
            }
            b.add(record, kind)?;
        }
        inp.finish()?;
        Ok(b.state)
    }
}

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
        Kind::Epid(_) => "epid",
        Kind::Window(_) => "window",
        Kind::Profile(_) => "profile",
        Kind::Client(_) => "client",
        Kind::Request(_) => "request",
        Kind::End(_) => "end",
    }
}

/// Where the reader is in the fixed record order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Start,
    Config,
    GlobalStats,
    GroupStats,
    Epids,
    Windows,
    Requests,
}

/// The window whose clients are being read: its name, how many clients are still expected,
/// and the last client's `(last_seen_ms, cmid)` (for the order check and the time deltas).
type OpenWindow = (Arc<str>, u64, Option<(u64, Uuid)>);

/// Builds the state from records, checking their order and contents.
#[derive(Default)]
struct Builder {
    state: HostState,
    section: Option<Section>,
    profiles: Vec<Arc<Profile>>,
    /// The window being filled.
    window: Option<OpenWindow>,
    last_group: Option<String>,
    last_request: Option<(u64, Uuid)>,
    counts: pb::End,
}

fn uuid(
    bytes: &[u8],
    record: u64,
    kind: &'static str,
    reason: &'static str,
) -> Result<Uuid, StateError> {
    Uuid::from_slice(bytes).map_err(|_| StateError::InvalidRecord {
        record,
        kind,
        reason,
    })
}

impl Builder {
    fn invalid(record: u64, kind: &'static str, reason: &'static str) -> StateError {
        StateError::InvalidRecord {
            record,
            kind,
            reason,
        }
    }

    /// Moves to `section` (staying is allowed only where several records may follow).
    fn enter(&mut self, record: u64, kind: &Kind, section: Section) -> Result<(), StateError> {
        let current = self.section.unwrap_or(Section::Start);
        let repeatable = matches!(
            section,
            Section::GroupStats | Section::Epids | Section::Windows | Section::Requests
        );
        let expected = match current {
            Section::Start => "config",
            Section::Config => "global stats",
            _ => "records in the snapshot order",
        };
        let ok = match current {
            Section::Start => section == Section::Config,
            Section::Config => section == Section::GlobalStats,
            _ => section > current || (section == current && repeatable),
        };
        if !ok {
            return Err(StateError::UnexpectedRecord {
                record,
                found: kind_name(kind),
                expected,
            });
        }
        if section != current {
            if let Some((_, left, _)) = &self.window {
                if *left > 0 {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: kind_name(kind),
                        expected: "client",
                    });
                }
            }
            self.last_group = None;
        }
        self.section = Some(section);
        Ok(())
    }

    /// Checks that `name` sorts after the previous group of the same section.
    fn next_group(
        &mut self,
        record: u64,
        kind: &'static str,
        name: &str,
    ) -> Result<(), StateError> {
        if self.last_group.as_deref().is_some_and(|last| last >= name) {
            return Err(Self::invalid(
                record,
                kind,
                "count groups out of order or repeated",
            ));
        }
        self.last_group = Some(name.to_owned());
        Ok(())
    }

    fn add(&mut self, record: u64, kind: Kind) -> Result<(), StateError> {
        match &kind {
            Kind::Config(c) => {
                self.enter(record, &kind, Section::Config)?;
                self.state.config = StateConfig {
                    dedup_retention_ms: c.dedup_retention_ms,
                };
            }
            Kind::GroupStats(s) => match &s.count_group {
                None => {
                    self.enter(record, &kind, Section::GlobalStats)?;
                    self.state.global = stats_from_pb(s);
                    self.counts.group_stats += 1;
                }
                Some(group) => {
                    self.enter(record, &kind, Section::GroupStats)?;
                    self.next_group(record, "group stats", group)?;
                    self.state
                        .group_stats
                        .insert(group.clone(), stats_from_pb(s));
                    self.counts.group_stats += 1;
                }
            },
            Kind::Epid(e) => {
                self.enter(record, &kind, Section::Epids)?;
                self.next_group(record, "epid", &e.count_group)?;
                self.state.epids.insert(
                    e.count_group.clone(),
                    EpidRecord {
                        count_group: e.count_group.clone(),
                        epid: e.epid.clone(),
                        set_ms: e.set_ms,
                    },
                );
                self.counts.epids += 1;
            }
            Kind::Window(w) => {
                self.enter(record, &kind, Section::Windows)?;
                if let Some((_, left, _)) = &self.window {
                    if *left > 0 {
                        return Err(StateError::UnexpectedRecord {
                            record,
                            found: "window",
                            expected: "client",
                        });
                    }
                }
                if w.clients == 0 {
                    return Err(Self::invalid(record, "window", "a window holds no clients"));
                }
                self.next_group(record, "window", &w.count_group)?;
                let name = intern(&w.count_group);
                self.state
                    .windows
                    .insert(name.clone(), ClientWindow::default());
                self.window = Some((name, w.clients, None));
                self.counts.windows += 1;
            }
            Kind::Profile(p) => {
                self.enter(record, &kind, Section::Windows)?;
                if self.window.is_none() {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: "profile",
                        expected: "window",
                    });
                }
                let profile = Profile {
                    product_group: p.product_group.as_deref().map(intern),
                    sku_id: uuid(&p.sku_id, record, "profile", "sku_id is not 16 bytes")?,
                    kms_counted_id: uuid(
                        &p.kms_counted_id,
                        record,
                        "profile",
                        "kms_counted_id is not 16 bytes",
                    )?,
                    application_id: uuid(
                        &p.application_id,
                        record,
                        "profile",
                        "application_id is not 16 bytes",
                    )?,
                    license_state: LicenseState::from_wire(p.license_state),
                    required_count: p.required_count,
                    protocol_major: u16::try_from(p.protocol_major).map_err(|_| {
                        Self::invalid(record, "profile", "protocol_major exceeds 65535")
                    })?,
                    client_vm: p.client_vm,
                };
                self.profiles.push(intern_profile(profile));
                self.counts.profiles += 1;
            }
            Kind::Client(c) => {
                self.enter(record, &kind, Section::Windows)?;
                let Some((group, left, last)) = &mut self.window else {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: "client",
                        expected: "window",
                    });
                };
                if *left == 0 {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: "client",
                        expected: "window or request",
                    });
                }
                let cmid = uuid(&c.cmid, record, "client", "cmid is not 16 bytes")?;
                let prev = last.map_or(0, |(t, _)| t);
                let last_seen_ms = prev
                    .checked_add(c.last_seen_delta_ms)
                    .ok_or_else(|| Self::invalid(record, "client", "last_seen_ms overflows"))?;
                if last.is_some_and(|l| l >= (last_seen_ms, cmid)) {
                    return Err(Self::invalid(
                        record,
                        "client",
                        "clients out of expiry order",
                    ));
                }
                let first_seen_ms = last_seen_ms.checked_sub(c.age_ms).ok_or_else(|| {
                    Self::invalid(record, "client", "age_ms exceeds last_seen_ms")
                })?;
                let profile = usize::try_from(c.profile)
                    .ok()
                    .and_then(|i| self.profiles.get(i))
                    .ok_or_else(|| Self::invalid(record, "client", "unknown profile number"))?
                    .clone();
                let client = Client {
                    first_seen_ms,
                    last_seen_ms,
                    profile,
                    machine_name: MachineName::new(&c.machine_name),
                    grace_minutes: c.grace_minutes,
                    requests: c.requests,
                };
                let window = self
                    .state
                    .windows
                    .get_mut(&**group)
                    .ok_or_else(|| Self::invalid(record, "client", "window missing"))?;
                if !window.insert_new(cmid, client) {
                    return Err(Self::invalid(record, "client", "cmid repeated in a window"));
                }
                *left -= 1;
                *last = Some((last_seen_ms, cmid));
                self.counts.clients += 1;
            }
            Kind::Request(q) => {
                self.enter(record, &kind, Section::Requests)?;
                let request_id = uuid(
                    &q.request_id,
                    record,
                    "request",
                    "request_id is not 16 bytes",
                )?;
                let prev = self.last_request.map_or(0, |(t, _)| t);
                let time_ms = prev
                    .checked_add(q.time_delta_ms)
                    .ok_or_else(|| Self::invalid(record, "request", "time_ms overflows"))?;
                if self
                    .last_request
                    .is_some_and(|l| l >= (time_ms, request_id))
                {
                    return Err(Self::invalid(
                        record,
                        "request",
                        "requests out of time order",
                    ));
                }
                let replaced = self.state.dedup.insert(DedupEntry {
                    request_id,
                    time_ms,
                    active_clients: q.active_clients,
                });
                if replaced {
                    return Err(Self::invalid(record, "request", "request id repeated"));
                }
                self.last_request = Some((time_ms, request_id));
                self.counts.requests += 1;
            }
            Kind::End(_) => {
                return Err(Self::invalid(
                    record,
                    "end",
                    "end marker handled by the caller",
                ))
            }
        }
        Ok(())
    }

    fn check_end(&mut self, record: u64, end: &pb::End) -> Result<(), StateError> {
        if self.section.unwrap_or(Section::Start) < Section::GlobalStats {
            return Err(StateError::UnexpectedRecord {
                record,
                found: "end",
                expected: if self.section.is_none() {
                    "config"
                } else {
                    "global stats"
                },
            });
        }
        if let Some((_, left, _)) = &self.window {
            if *left > 0 {
                return Err(StateError::UnexpectedRecord {
                    record,
                    found: "end",
                    expected: "client",
                });
            }
        }
        self.counts.records = record;
        let c = &self.counts;
        for (what, expected, found) in [
            ("records", end.records, c.records),
            ("group stats", end.group_stats, c.group_stats),
            ("epids", end.epids, c.epids),
            ("windows", end.windows, c.windows),
            ("profiles", end.profiles, c.profiles),
            ("clients", end.clients, c.clients),
            ("requests", end.requests, c.requests),
        ] {
            if expected != found {
                return Err(StateError::CountMismatch {
                    what,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Buffered output that counts bytes and records and keeps the running CRC.
struct RecordWriter<W: Write> {
    out: BufWriter<W>,
    crc: crc32fast::Hasher,
    bytes: u64,
    records: u64,
    buf: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    fn new(w: W) -> Self {
        RecordWriter {
            out: BufWriter::with_capacity(IO_BUFFER, w),
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            records: 0,
            buf: Vec::with_capacity(256),
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn record(&mut self, kind: Kind) -> Result<(), StateError> {
        self.write(&pb::Record { kind: Some(kind) })
    }

    fn write(&mut self, message: &pb::Record) -> Result<(), StateError> {
        let len = message.encoded_len() as u64;
        if len > MAX_RECORD_LEN {
            return Err(StateError::RecordTooLarge {
                record: self.records,
                len,
                max: MAX_RECORD_LEN,
            });
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        prost::encoding::encode_varint(len, &mut buf);
        message.encode_raw(&mut buf);
        let written = self.raw(&buf);
        self.buf = buf;
        written?;
        self.records += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<u64, StateError> {
        let crc = self.crc.clone().finalize().to_le_bytes();
        self.raw(&crc)?;
        self.out.flush()?;
        Ok(self.bytes)
    }
}

/// Buffered input that counts records and keeps the running CRC of the bytes consumed.
struct RecordReader<R: Read> {
    inp: BufReader<R>,
    crc: crc32fast::Hasher,
    records: u64,
    buf: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    fn new(r: R) -> Self {
        RecordReader {
            inp: BufReader::with_capacity(IO_BUFFER, r),
            crc: crc32fast::Hasher::new(),
            records: 0,
            buf: Vec::new(),
        }
    }

    /// Fills `out` from the input without hashing it; a short input is [`StateError::Truncated`].
    fn exact_unhashed(&mut self, out: &mut [u8], part: &'static str) -> Result<(), StateError> {
        self.inp.read_exact(out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StateError::Truncated {
                    records: self.records,
                    part,
                }
            } else {
                StateError::Io(e)
            }
        })
    }

    fn exact(&mut self, out: &mut [u8], part: &'static str) -> Result<(), StateError> {
        self.exact_unhashed(out, part)?;
        self.crc.update(out);
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, StateError> {
        let mut value = 0u64;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            self.exact(&mut byte, "record length")?;
            let b = byte[0];
            if i == 9 && b > 1 {
                break;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(StateError::BadLength {
            record: self.records,
        })
    }

    fn next(&mut self) -> Result<Kind, StateError> {
        let record = self.records;
        let len = self.varint()?;
        if len > MAX_RECORD_LEN {
            return Err(StateError::RecordTooLarge {
                record,
                len,
                max: MAX_RECORD_LEN,
            });
        }
        let mut buf = std::mem::take(&mut self.buf);
        // `len <= MAX_RECORD_LEN`, so this fits any usize and allocates at most 1 MiB.
        buf.resize(len as usize, 0);
        let read = self.exact(&mut buf, "record");
        let decoded = read.and_then(|()| {
            pb::Record::decode(buf.as_slice())
                .map_err(|source| StateError::Decode { record, source })
        });
        self.buf = buf;
        let kind = decoded?.kind.ok_or(StateError::InvalidRecord {
            record,
            kind: "record",
            reason: "record of no known kind",
        })?;
        self.records += 1;
        Ok(kind)
    }

    /// Checks the CRC after the end marker and that nothing follows it.
    fn finish(mut self) -> Result<(), StateError> {
        let computed = self.crc.clone().finalize();
        let mut stored = [0u8; 4];
        self.exact_unhashed(&mut stored, "checksum")?;
        let stored = u32::from_le_bytes(stored);
        if stored != computed {
            return Err(StateError::Checksum { stored, computed });
        }
        let mut extra = [0u8; 1];
        loop {
            match self.inp.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(StateError::TrailingData),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StateError::Io(e)),
            }
        }
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
