//! Reading a snapshot: [`HostState::read_snapshot`], the checksummed record input and the
//! checks of record order and contents.

use std::io::{BufReader, Read};
use std::sync::Arc;

use kms_protocol::LicenseState;
use prost::Message;
use uuid::Uuid;

use super::{kind_name, pb, stats_from_pb, Kind, IO_BUFFER, MAX_RECORD_LEN};
use super::{OLDEST_SCHEMA_VERSION, SNAPSHOT_MAGIC, SNAPSHOT_SCHEMA_VERSION};
use crate::compact::{intern, intern_profile, MachineName, Profile};
use crate::dedup::DedupEntry;
use crate::epid::EpidRecord;
use crate::error::StateError;
use crate::identity::HostIdentity;
use crate::state::{HostState, StateConfig};
use crate::window::{Client, ClientWindow, NAME_HISTORY};

impl HostState {
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
        if !(OLDEST_SCHEMA_VERSION..=SNAPSHOT_SCHEMA_VERSION).contains(&version) {
            return Err(StateError::SchemaVersion {
                found: version,
                expected: SNAPSHOT_SCHEMA_VERSION,
            });
        }
        let mut b = Builder {
            version,
            ..Builder::default()
        };
        loop {
            let record = inp.records;
            let kind = inp.next()?;
            if let Kind::End(end) = kind {
                b.check_end(record, &end)?;
                b.state
                    .dedup
                    .load(std::mem::take(&mut b.requests))
                    .map_err(|_| Builder::invalid(record, "end", "a request id listed twice"))?;
                break;
            }
            b.add(record, kind)?;
        }
        inp.finish()?;
        Ok(b.state)
    }
}

/// Where the reader is in the fixed record order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Start,
    Config,
    GlobalStats,
    GroupStats,
    Identity,
    Epids,
    Windows,
    Requests,
}

/// Clients arrive sorted by CMID; they are added a chunk at a time, each chunk in the order
/// that fills the B+tree's leaves (`crate::bulk`). The order of inserts does not change the
/// resulting state, only its memory layout and the time it takes.
const INSERT_CHUNK: usize = 8192;

/// The window whose clients are being read.
struct OpenWindow {
    name: Arc<str>,
    /// Clients still expected (counted and retired).
    left: u64,
    /// Counted clients still expected (they come first).
    counted_left: u64,
    /// Still in the counted section (the CMID order restarts with the retired one).
    counting: bool,
    /// CMID of the previous client of the section (they come sorted).
    last: Option<Uuid>,
    /// Clients read but not inserted yet, all of the current section (counted or retired).
    pending: Vec<(Uuid, Client)>,
}

/// Builds the state from records, checking their order and contents.
struct Builder {
    /// Schema version of the file.
    version: u32,
    state: HostState,
    section: Option<Section>,
    profiles: Vec<Arc<Profile>>,
    /// The window being filled.
    window: Option<OpenWindow>,
    last_group: Option<String>,
    /// `(time_ms, request_id)` of the previous request.
    last_request: Option<(u64, Uuid)>,
    /// The requests section, loaded at its end in one go (`DedupLog::load`).
    requests: Vec<DedupEntry>,
    counts: pb::End,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            version: SNAPSHOT_SCHEMA_VERSION,
            state: HostState::default(),
            section: None,
            profiles: Vec::new(),
            window: None,
            last_group: None,
            last_request: None,
            requests: Vec::new(),
            counts: pb::End::default(),
        }
    }
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
            if self.window.as_ref().is_some_and(|w| w.left > 0) {
                return Err(StateError::UnexpectedRecord {
                    record,
                    found: kind_name(kind),
                    expected: "client",
                });
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
                let default = StateConfig::default();
                self.state.config = StateConfig {
                    dedup_retention_ms: c.dedup_retention_ms,
                    inventory_retention_ms: match c.inventory_retention_ms {
                        0 => default.inventory_retention_ms,
                        ms => ms,
                    },
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
            Kind::HostIdentity(h) => {
                self.enter(record, &kind, Section::Identity)?;
                let hwid = <[u8; 8]>::try_from(h.hwid.as_slice())
                    .map_err(|_| Self::invalid(record, "host identity", "hwid is not 8 bytes"))?;
                self.state.identity = Some(HostIdentity {
                    hwid,
                    build: h.build,
                    platform: h.platform,
                    set_ms: h.set_ms,
                });
                self.counts.host_identity += 1;
            }
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
                if self.window.as_ref().is_some_and(|w| w.left > 0) {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: "window",
                        expected: "client",
                    });
                }
                let left = w
                    .clients
                    .checked_add(w.retired)
                    .ok_or_else(|| Self::invalid(record, "window", "client counts overflow"))?;
                if left == 0 {
                    return Err(Self::invalid(record, "window", "a window holds no clients"));
                }
                self.next_group(record, "window", &w.count_group)?;
                let name = intern(&w.count_group);
                self.state
                    .windows
                    .insert(name.clone(), ClientWindow::default());
                self.window = Some(OpenWindow {
                    name,
                    left,
                    counted_left: w.clients,
                    counting: true,
                    last: None,
                    pending: Vec::new(),
                });
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
                // The first retired client: insert the counted ones first, so that a CMID
                // listed in both sections is found below.
                if self
                    .window
                    .as_ref()
                    .is_some_and(|w| w.counting && w.counted_left == 0 && w.left > 0)
                {
                    self.flush_clients();
                }
                let Some(window) = &mut self.window else {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: "client",
                        expected: "window",
                    });
                };
                if window.left == 0 {
                    return Err(StateError::UnexpectedRecord {
                        record,
                        found: "client",
                        expected: "window or request",
                    });
                }
                let cmid = uuid(&c.cmid, record, "client", "cmid is not 16 bytes")?;
                let counted = window.counted_left > 0;
                if !counted && window.counting {
                    window.counting = false;
                    window.last = None;
                }
                if window.last.is_some_and(|last| last >= cmid) {
                    return Err(Self::invalid(
                        record,
                        "client",
                        "clients out of order or repeated",
                    ));
                }
                if !counted
                    && self
                        .state
                        .windows
                        .get(&*window.name)
                        .is_some_and(|w| w.get(&cmid).is_some())
                {
                    return Err(Self::invalid(
                        record,
                        "client",
                        "a client both counted and retired",
                    ));
                }
                let v1 = self.version == 1;
                let last_request_ms = if v1 {
                    c.last_seen_ms
                } else {
                    c.last_request_ms
                };
                let first_seen_ms = last_request_ms.checked_sub(c.age_ms).ok_or_else(|| {
                    Self::invalid(record, "client", "age_ms exceeds the last request")
                })?;
                let profile = usize::try_from(c.profile)
                    .ok()
                    .and_then(|i| self.profiles.get(i))
                    .ok_or_else(|| Self::invalid(record, "client", "unknown profile number"))?
                    .clone();
                let consecutive_failures = u16::try_from(c.consecutive_failures).map_err(|_| {
                    Self::invalid(record, "client", "consecutive_failures exceeds 65535")
                })?;
                if c.previous_names.len() > NAME_HISTORY {
                    return Err(Self::invalid(
                        record,
                        "client",
                        "more previous names than kept",
                    ));
                }
                let previous_names = (!c.previous_names.is_empty()).then(|| {
                    Box::new(
                        c.previous_names
                            .iter()
                            .map(|n| MachineName::new(n))
                            .collect::<Vec<_>>(),
                    )
                });
                window.pending.push((
                    cmid,
                    Client {
                        first_seen_ms,
                        last_seen_ms: c.last_seen_ms,
                        last_request_ms,
                        last_success_ms: if v1 {
                            c.last_seen_ms
                        } else {
                            c.last_success_ms
                        },
                        last_failure_ms: c.last_failure_ms,
                        answered_by: c.answered_by,
                        profile,
                        machine_name: MachineName::new(&c.machine_name),
                        previous_names,
                        grace_minutes: c.grace_minutes,
                        requests: c.requests,
                        last_failure_hresult: c.last_failure_hresult,
                        consecutive_failures,
                    },
                ));
                if counted {
                    window.counted_left -= 1;
                }
                window.left -= 1;
                window.last = Some(cmid);
                self.counts.clients += 1;
                if window.left == 0 || window.pending.len() >= INSERT_CHUNK {
                    self.flush_clients();
                }
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
                    .is_some_and(|last| last >= (time_ms, request_id))
                {
                    return Err(Self::invalid(
                        record,
                        "request",
                        "requests out of expiry order or repeated",
                    ));
                }
                self.requests.push(DedupEntry {
                    request_id,
                    time_ms,
                    active_clients: q.active_clients,
                });
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

    /// Inserts the pending clients of the open window (distinct and new: they came sorted).
    fn flush_clients(&mut self) {
        let Some(open) = &mut self.window else {
            return;
        };
        let pending = std::mem::take(&mut open.pending);
        if let Some(window) = self.state.windows.get_mut(&*open.name) {
            window.extend_sorted(pending, open.counting);
        }
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
        if self.window.as_ref().is_some_and(|w| w.left > 0) {
            return Err(StateError::UnexpectedRecord {
                record,
                found: "end",
                expected: "client",
            });
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
            ("host identities", end.host_identity, c.host_identity),
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
