//! The audit log: security-relevant events — membership changes (operator RPCs,
//! Kubernetes discovery, bootstrap), configuration reloads, host identity regenerations and
//! admin API authentication failures.
//!
//! With `audit_log` set, each event is appended to that file as one JSON line
//! `{"timestamp":"2025-01-31T12:00:00.000Z","event":"...","node_id":1,"details":{...}}`
//! (the file is opened per event, so it may be rotated by moving it away; each line is
//! written with one `write` call and flushed). Without it, events go to the normal log
//! at INFO under the target [`TARGET`]. File errors are logged (and the event goes to
//! the log instead); they never stop the daemon.
//!
//! Event names (stable; tests and alerting match on them):
//! - `cluster.init`, `cluster.add_learner`, `cluster.promote`, `cluster.remove`,
//!   `cluster.change_voters`: `Cluster` gRPC calls (`kmsctl cluster ...`), details
//!   `peer`, the change and `ok`/`error`.
//! - `cluster.bootstrap`: this node initialized the cluster from its static peers.
//! - `discovery.initialize`, `discovery.add_learner`, `discovery.promote`,
//!   `discovery.remove_voter`, `discovery.remove_learner`, `discovery.set_addresses`:
//!   Kubernetes discovery's changes.
//! - `cluster.leadership_handover`, `cluster.leadership_handover_failed`: this node,
//!   stopping as leader, handed leadership over (`successor`, `new_leader`, `from_term`,
//!   `new_term`, `took_ms`) or could not (`successor`, `reason`, `took_ms`).
//! - `admin.auth_failed`: an admin API request without a valid token (`path`, `peer`,
//!   `reason`).
//! - `config.reload`, `config.reload_rejected`: a configuration reload applied or refused
//!   (recorded by the reload code).
//! - `host_identity.regenerate`: `POST /host-identity/regenerate` (`kmsctl host-identity
//!   regenerate`): `peer`, `ok`, and the old and new `hwid` and `build`, or the `error`.

use kms_cluster::events::{MembershipChange, MembershipEvent, Origin};
use kms_cluster::handover::Handover;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tracing target of audit events written to the log.
pub const TARGET: &str = "kmsd::audit";

/// Records audit events; cheap to share (`Arc<Audit>`).
#[derive(Debug)]
pub struct Audit {
    node_id: u64,
    file: Option<PathBuf>,
}

impl Audit {
    /// An audit log for node `node_id`, appending to `file` (None: to the normal log).
    /// Checks once that the file can be opened and logs an error if not.
    pub fn new(node_id: u64, file: Option<&Path>) -> Arc<Audit> {
        if let Some(path) = file {
            if let Err(e) = open(path) {
                tracing::error!(path = %path.display(), error = %e, "cannot open the audit log; audit events go to the log until it can be written");
            }
        }
        Arc::new(Audit {
            node_id,
            file: file.map(Path::to_path_buf),
        })
    }

    /// Records one event: `event` is a stable dotted name (see the module docs),
    /// `details` a JSON object. Never fails; never blocks on anything but the file write.
    pub fn record(&self, event: &str, details: Value) {
        let line = line(&timestamp(crate::now_ms()), event, self.node_id, &details);
        if let Some(path) = &self.file {
            match append(path, &line) {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot write the audit log")
                }
            }
        }
        tracing::info!(target: TARGET, event, details = %details, "audit");
    }

    /// Records a membership event reported by the cluster node.
    pub fn membership(&self, e: &MembershipEvent) {
        let (event, details) = membership_record(e);
        self.record(event, details);
    }
}

/// Forwards the node's membership events to `audit` until the sender is dropped.
pub fn spawn_membership_forwarder(
    audit: Arc<Audit>,
    mut rx: tokio::sync::broadcast::Receiver<MembershipEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(e) => audit.membership(&e),
                Err(RecvError::Lagged(n)) => {
                    audit.record("audit.events_lost", json!({ "membership_events_lost": n }))
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

/// The event name and details of a membership event.
pub fn membership_record(e: &MembershipEvent) -> (&'static str, Value) {
    let mut details = match &e.change {
        MembershipChange::Initialize { members } => json!({ "members": members }),
        MembershipChange::AddLearner { node_id, addr } => {
            json!({ "node_id": node_id, "addr": addr })
        }
        MembershipChange::ChangeVoters { before, after } => {
            let (added, removed) = e.change.voter_diff();
            json!({ "voters_before": before, "voters_after": after, "added": added, "removed": removed })
        }
        MembershipChange::RemoveLearner { node_id } => {
            json!({ "node_id": node_id, "learner": true })
        }
        MembershipChange::Rejoin {
            node_id,
            addr,
            as_voter,
        } => json!({ "node_id": node_id, "addr": addr, "as_voter": as_voter }),
    };
    let event = match (&e.origin, &e.change) {
        (Origin::Bootstrap, _) => "cluster.bootstrap",
        (Origin::Rejoin, _) => "cluster.rejoin_promote",
        (Origin::Rpc { .. }, MembershipChange::Rejoin { .. }) => "cluster.rejoin",
        (Origin::Rpc { .. }, MembershipChange::Initialize { .. }) => "cluster.init",
        (Origin::Rpc { .. }, MembershipChange::AddLearner { .. }) => "cluster.add_learner",
        (_, MembershipChange::RemoveLearner { .. }) => "cluster.remove",
        (Origin::Rpc { .. }, c @ MembershipChange::ChangeVoters { .. }) => match c.voter_diff() {
            (a, r) if !a.is_empty() && r.is_empty() => "cluster.promote",
            (a, r) if a.is_empty() && !r.is_empty() => "cluster.remove",
            _ => "cluster.change_voters",
        },
    };
    if let Origin::Rpc { peer } = &e.origin {
        details["peer"] = json!(peer.map(|p| p.to_string()));
    }
    details["ok"] = json!(e.error.is_none());
    if let Some(err) = &e.error {
        details["error"] = json!(err);
    }
    (event, details)
}

/// The event name and details of a leadership hand-over at shutdown.
pub fn handover_record(h: &Handover) -> (&'static str, Value) {
    match h {
        Handover::Done {
            successor,
            new_leader,
            from_term,
            new_term,
            took,
        } => (
            "cluster.leadership_handover",
            json!({ "successor": successor, "new_leader": new_leader, "from_term": from_term,
                    "new_term": new_term, "took_ms": took.as_millis() as u64 }),
        ),
        Handover::Failed {
            successor,
            from_term,
            reason,
            took,
        } => (
            "cluster.leadership_handover_failed",
            json!({ "successor": successor, "from_term": from_term, "reason": reason,
                    "took_ms": took.as_millis() as u64 }),
        ),
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = open(path)?;
    f.write_all(line.as_bytes())?;
    f.flush()
}

/// One audit line (with the trailing newline).
pub fn line(timestamp: &str, event: &str, node_id: u64, details: &Value) -> String {
    let mut s = json!({
        "timestamp": timestamp,
        "event": event,
        "node_id": node_id,
        "details": details,
    })
    .to_string();
    s.push('\n');
    s
}

/// RFC 3339 UTC time with milliseconds (`2025-01-31T12:00:00.000Z`) of a Unix ms time.
pub fn timestamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z (leap day).
        assert_eq!(timestamp(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(timestamp(1_735_689_600_123), "2025-01-01T00:00:00.123Z");
    }

    #[test]
    fn line_format() {
        let l = line(
            "2025-01-01T00:00:00.000Z",
            "admin.auth_failed",
            3,
            &json!({"path": "/status"}),
        );
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1, "{l:?}");
        let v: Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(
            v,
            json!({"timestamp": "2025-01-01T00:00:00.000Z", "event": "admin.auth_failed", "node_id": 3, "details": {"path": "/status"}})
        );
        // Details with newlines still make one line.
        let l = line("t", "e", 1, &json!({"error": "a\nb"}));
        assert_eq!(l.matches('\n').count(), 1);
    }

    #[test]
    fn records_append_json_lines_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::new(7, Some(&path));
        audit.record("config.reload", json!({"changed": ["log_level"]}));
        audit.record("admin.auth_failed", json!({"path": "/clients"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["event"], "config.reload");
        assert_eq!(lines[0]["node_id"], 7);
        assert_eq!(lines[0]["details"]["changed"][0], "log_level");
        assert_eq!(lines[1]["event"], "admin.auth_failed");
        let ts = lines[1]["timestamp"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
    }

    #[test]
    fn unwritable_file_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be opened for appending.
        let audit = Audit::new(1, Some(dir.path()));
        audit.record("config.reload", json!({}));
    }

    #[test]
    fn membership_event_names() {
        let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let rpc = |change| MembershipEvent {
            change,
            origin: Origin::Rpc { peer: Some(peer) },
            error: None,
        };
        let voters = |before: &[u64], after: &[u64]| MembershipChange::ChangeVoters {
            before: before.iter().copied().collect::<BTreeSet<_>>(),
            after: after.iter().copied().collect::<BTreeSet<_>>(),
        };
        let (e, d) = membership_record(&rpc(MembershipChange::AddLearner {
            node_id: 4,
            addr: "n4:9689".into(),
        }));
        assert_eq!(e, "cluster.add_learner");
        assert_eq!(
            d,
            json!({"node_id": 4, "addr": "n4:9689", "peer": "127.0.0.1:5000", "ok": true})
        );
        assert_eq!(
            membership_record(&rpc(voters(&[1, 2], &[1, 2, 3]))).0,
            "cluster.promote"
        );
        let (e, d) = membership_record(&rpc(voters(&[1, 2, 3], &[1, 2])));
        assert_eq!(e, "cluster.remove");
        assert_eq!(d["removed"], json!([3]));
        assert_eq!(
            membership_record(&rpc(voters(&[1, 2], &[1, 3]))).0,
            "cluster.change_voters"
        );
        let init = MembershipChange::Initialize {
            members: BTreeMap::from([(1, "a:1".to_string())]),
        };
        assert_eq!(membership_record(&rpc(init.clone())).0, "cluster.init");
        let (e, d) = membership_record(&MembershipEvent {
            change: init,
            origin: Origin::Bootstrap,
            error: Some("boom".into()),
        });
        assert_eq!(e, "cluster.bootstrap");
        assert_eq!(d["ok"], false);
        assert_eq!(d["error"], "boom");
        assert!(d.get("peer").is_none());
    }

    #[test]
    fn handover_records() {
        use std::time::Duration;
        let (e, d) = handover_record(&Handover::Done {
            successor: 2,
            new_leader: 2,
            from_term: 4,
            new_term: 5,
            took: Duration::from_millis(31),
        });
        assert_eq!(e, "cluster.leadership_handover");
        assert_eq!(
            d,
            json!({"successor": 2, "new_leader": 2, "from_term": 4, "new_term": 5, "took_ms": 31})
        );
        let (e, d) = handover_record(&Handover::Failed {
            successor: None,
            from_term: 4,
            reason: "no voter has the whole log yet".into(),
            took: Duration::from_millis(1600),
        });
        assert_eq!(e, "cluster.leadership_handover_failed");
        assert_eq!(d["successor"], Value::Null);
        assert_eq!(d["reason"], "no voter has the whole log yet");
        assert_eq!(d["took_ms"], 1600);
    }
}
