//! `kmsctl cluster ...`: membership and Raft status over the cluster gRPC API. Calls go
//! to the node named with `--cluster`; membership changes are sent on to the leader when
//! that node is a follower. With `--tls-ca/--tls-cert/--tls-key` ([`TlsArgs`]) every call
//! uses mutual TLS (needed for a cluster whose nodes set `tls_*`).

use kms_cluster::membership::state_of;
use kms_cluster::network::{ClusterClient, NetError, TlsConfig, TlsError, DEFAULT_REQUEST_TIMEOUT};
use kms_cluster::NodeStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Mutual TLS for `kmsctl cluster ...`: the cluster CA and an operator (or node)
/// certificate and key, e.g. from `kmsctl cert client`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Cluster CA certificate (PEM); with --tls-cert and --tls-key: mutual TLS.
    #[arg(long, env = "KMSCTL_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) signed by the cluster CA.
    #[arg(long, env = "KMSCTL_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "KMSCTL_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The loaded TLS settings; None when no `--tls-*` is given, an error when only some are.
    pub fn load(&self) -> Result<Option<TlsConfig>, ClusterCmdError> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsConfig::load(ca, cert, key)?)),
            _ => Err(ClusterCmdError::Usage(
                "give all of --tls-ca, --tls-cert and --tls-key, or none".into(),
            )),
        }
    }
}

/// A client of the node at `addr`, over mutual TLS when `tls` is set.
pub fn client(addr: &str, tls: Option<&TlsConfig>) -> ClusterClient {
    ClusterClient::connect_with(addr, DEFAULT_REQUEST_TIMEOUT, tls)
}

/// Errors of cluster commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterCmdError {
    /// A gRPC call failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A gRPC call to the node at `addr` failed.
    #[error("node {addr}")]
    At {
        /// The node's cluster address.
        addr: String,
        /// What failed.
        #[source]
        source: NetError,
    },
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The status did not hold what the command needs.
    #[error("unexpected status from node: {0}")]
    Shape(&'static str),
    /// Invalid argument.
    #[error("{0}")]
    Usage(String),
}

/// A failed call to the node at `addr`, naming it.
fn at(addr: &str, source: NetError) -> ClusterCmdError {
    ClusterCmdError::At {
        addr: addr.to_string(),
        source,
    }
}

/// Voter ids (both halves of a joint configuration) and node addresses from a node's status.
pub fn membership(status: &NodeStatus) -> (BTreeSet<u64>, BTreeMap<u64, String>) {
    (status.voters(), status.nodes())
}

/// The client of the current leader (following the node's leader hint), with its status.
pub async fn leader_client(
    addr: &str,
    tls: Option<&TlsConfig>,
) -> Result<(ClusterClient, NodeStatus), ClusterCmdError> {
    let c = client(addr, tls);
    let status = c.status().await.map_err(|e| at(addr, e))?;
    match status.current_leader {
        Some(l) if l != status.node_id => {
            let leader_addr = status
                .addr_of(l)
                .ok_or(ClusterCmdError::Shape("leader without address"))?;
            let lc = client(leader_addr, tls);
            let leader_status = lc.status().await.map_err(|e| at(leader_addr, e))?;
            Ok((lc, leader_status))
        }
        _ => Ok((c, status)),
    }
}

/// Whether the leader has replicated any log to node `id` (its replication progress names
/// a matched log id), checked for up to 3 s.
pub async fn learner_caught_up(leader: &ClusterClient, id: u64) -> bool {
    for _ in 0..15 {
        if let Ok(status) = leader.status().await {
            if status.matched(id).is_some() {
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_members(s: &str) -> Result<BTreeMap<u64, String>, ClusterCmdError> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| ClusterCmdError::Usage(format!("{item:?} is not ID=HOST:PORT")))?;
        let id = id
            .parse()
            .map_err(|_| ClusterCmdError::Usage(format!("{id:?} is not a node id")))?;
        out.insert(id, addr.to_string());
    }
    if out.is_empty() {
        return Err(ClusterCmdError::Usage("no members given".into()));
    }
    Ok(out)
}

/// One row of `kmsctl cluster status`.
#[derive(Debug, serde::Serialize)]
pub struct MemberRow {
    /// Node id.
    pub id: u64,
    /// Cluster address.
    pub addr: String,
    /// voter or learner.
    pub membership: &'static str,
    /// The node's own metrics, when it answered.
    pub role: Option<String>,
    /// Term it reports.
    pub term: Option<u64>,
    /// Leader it knows.
    pub leader: Option<u64>,
    /// Last log index.
    pub last_log_index: Option<u64>,
    /// Applied index.
    pub applied_index: Option<u64>,
    /// The membership as this node sees it: `stable`, `pending (...)` or `joint (...)`.
    pub membership_state: Option<String>,
    /// Error reaching it.
    pub error: Option<String>,
}

/// Status of every member, each asked directly.
pub async fn status(
    addr: &str,
    tls: Option<&TlsConfig>,
) -> Result<Vec<MemberRow>, ClusterCmdError> {
    let status = client(addr, tls).status().await.map_err(|e| at(addr, e))?;
    let (voters, nodes) = membership(&status);
    let mut rows = Vec::new();
    for (id, a) in nodes {
        let mut row = MemberRow {
            id,
            membership: if voters.contains(&id) {
                "voter"
            } else {
                "learner"
            },
            addr: a.clone(),
            role: None,
            term: None,
            leader: None,
            last_log_index: None,
            applied_index: None,
            membership_state: None,
            error: None,
        };
        match client(&a, tls).status().await {
            Ok(m) => {
                row.role = Some(m.role().to_string());
                row.term = Some(m.current_term);
                row.leader = m.current_leader;
                row.last_log_index = m.last_log_index;
                row.applied_index = m.last_applied.map(|l| l.index);
                row.membership_state = Some(state_of(&m.membership, m.last_applied).to_string());
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Renders the status rows.
pub fn render(rows: &[MemberRow]) -> String {
    let opt = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "{:>4}  {:<24} {:<8} {:<10} {:>6} {:>7} {:>9} {:>9}\n",
        "ID", "ADDRESS", "MEMBER", "ROLE", "TERM", "LEADER", "LAST LOG", "APPLIED"
    );
    for r in rows {
        s.push_str(&format!(
            "{:>4}  {:<24} {:<8} {:<10} {:>6} {:>7} {:>9} {:>9}{}\n",
            r.id,
            kms_protocol::text::escape(&r.addr),
            r.membership,
            kms_protocol::text::escape(r.role.as_deref().unwrap_or("down")),
            opt(r.term),
            opt(r.leader),
            opt(r.last_log_index),
            opt(r.applied_index),
            r.error
                .as_ref()
                .map(|e| format!("  ({})", kms_protocol::text::Escaped(e)))
                .unwrap_or_default(),
        ));
    }
    s.push_str(&membership_note(rows));
    s
}

/// The line under the table saying whether the membership is settled, as the answering
/// nodes see it, with the way out when a change is stuck.
fn membership_note(rows: &[MemberRow]) -> String {
    let mut states: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.membership_state.as_deref())
        .collect();
    states.sort_unstable();
    states.dedup();
    match states.as_slice() {
        [] => String::new(),
        ["stable"] => "membership: stable\n".to_string(),
        states => format!(
            "membership: {} -- a change is in progress; it completes once every new voter \
             answers. If one never appears, see the runbook's KmsMembershipChangeStuck\n",
            states.join(" / ")
        ),
    }
}
