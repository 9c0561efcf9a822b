//! Writing a snapshot: [`HostState::write_snapshot`] and the checksummed record output.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::sync::Arc;

use prost::Message;

use super::{pb, profile_to_pb, stats_to_pb, Kind, IO_BUFFER, MAX_RECORD_LEN};
use super::{SNAPSHOT_MAGIC, SNAPSHOT_SCHEMA_VERSION};
use crate::compact::Profile;
use crate::error::StateError;
use crate::state::HostState;

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
            inventory_retention_ms: self.config.inventory_retention_ms,
        }))?;
        out.record(Kind::GroupStats(stats_to_pb(None, &self.global)))?;
        end.group_stats += 1;
        for (group, stats) in &self.group_stats {
            out.record(Kind::GroupStats(stats_to_pb(Some(group), stats)))?;
            end.group_stats += 1;
        }
        if let Some(id) = &self.identity {
            out.record(Kind::HostIdentity(pb::HostIdentity {
                hwid: id.hwid.to_vec(),
                build: id.build,
                platform: id.platform,
                set_ms: id.set_ms,
            }))?;
            end.host_identity += 1;
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
        let mut by_content: BTreeMap<&Profile, u32> = BTreeMap::new();
        // Client and Request records are refilled in place, so writing allocates nothing per
        // client.
        let mut client = pb::Record {
            kind: Some(Kind::Client(pb::Client::default())),
        };
        for (group, window) in &self.windows {
            out.record(Kind::Window(pb::Window {
                count_group: group.to_string(),
                clients: window.len() as u64,
                retired: window.retired_len() as u64,
            }))?;
            end.windows += 1;
            for (cmid, c) in window.iter_counted().chain(window.iter_retired()) {
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
                    r.last_seen_ms = c.last_seen_ms;
                    r.age_ms = c.last_request_ms.saturating_sub(c.first_seen_ms);
                    r.grace_minutes = c.grace_minutes;
                    r.requests = c.requests;
                    r.last_request_ms = c.last_request_ms;
                    r.last_success_ms = c.last_success_ms;
                    r.last_failure_ms = c.last_failure_ms;
                    r.last_failure_hresult = c.last_failure_hresult;
                    r.consecutive_failures = u32::from(c.consecutive_failures);
                    r.answered_by = c.answered_by;
                    r.previous_names.clear();
                    if let Some(names) = &c.previous_names {
                        r.previous_names
                            .extend(names.iter().map(|n| n.as_str().to_owned()));
                    }
                }
                out.write(&client)?;
                end.clients += 1;
            }
        }

        let mut request = pb::Record {
            kind: Some(Kind::Request(pb::Request::default())),
        };
        let mut prev_time = 0u64;
        for e in self.dedup.iter() {
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
