//! Daemon configuration: defaults, an optional TOML file, `KMSD_*` environment
//! variables and command-line flags, in rising precedence.
//!
//! Every key of the file has a flag and an environment variable (see [`crate::cli`]);
//! the defaults run a single node with sled in `./data` and no file at all.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors in the configuration; the daemon refuses to start with a clear message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message (names the key).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// Config key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The product catalog extension file is invalid.
    #[error("product catalog file {path}: {message}")]
    Catalog {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole daemon configuration (also the TOML file schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses for KMS clients (TCP). Default `[::]:1688` and `0.0.0.0:1688`.
    pub listen: Vec<SocketAddr>,
    /// Admin HTTP API address. Default `127.0.0.1:9688`.
    pub admin_listen: SocketAddr,
    /// Directory of the sled database. Default `./data`.
    pub data_dir: PathBuf,
    /// Product groups this host holds host keys for: `all` or a comma-separated list of
    /// group names and aliases (`windows`, `windows-client`, `windows-server`, `office`).
    pub licensed_groups: String,
    /// Minutes a client waits before retrying a failed activation. Default 120.
    pub activation_interval: u32,
    /// Minutes between renewals. Default 10080 (7 days).
    pub renewal_interval: u32,
    /// Optional TOML file that extends the compiled-in product catalog.
    pub catalog_file: Option<PathBuf>,
    /// Refuse requests whose client clock differs by more than `max_clock_skew_minutes`
    /// (HRESULT 0xC004F06C), as a Microsoft host can. Default off.
    pub check_client_time: bool,
    /// Allowed client clock skew in minutes when `check_client_time` is on. Default 240.
    pub max_clock_skew_minutes: u32,
    /// LCID in generated ePIDs. Default 1033 (en-US).
    pub lcid: u32,
    /// Accept NDR64 (as Windows Server 2012+ hosts do). Default true.
    pub ndr64: bool,
    /// Acknowledge bind-time feature negotiation. Default true.
    pub btfn: bool,
    /// Largest RPC PDU accepted, bytes. Default 4096 (KMS PDUs are under 400).
    pub max_pdu_bytes: usize,
    /// Time allowed to receive one whole PDU once its first byte arrived, ms. Default 5000.
    pub read_timeout_ms: u64,
    /// Time a connection may sit idle between PDUs, ms. Default 30000 (as Windows hosts).
    pub idle_timeout_ms: u64,
    /// Simultaneous client connections. Default 4096.
    pub max_connections: usize,
    /// This node's stable id in the cluster. Default 1.
    pub node_id: u64,
    /// Derive `node_id` from the host name's trailing ordinal (`kms-cluster-2` → 3), as
    /// a StatefulSet names its pods. Default false.
    pub node_id_from_hostname: bool,
    /// Address of the cluster gRPC server (Raft and forwarding). Default `127.0.0.1:9689`.
    pub cluster_listen: SocketAddr,
    /// Address peers use to reach this node; default: `cluster_listen`.
    pub cluster_advertise: Option<String>,
    /// Static peer list `ID=HOST:PORT,...` including this node; empty: single node.
    pub peers: String,
    /// How members find each other: `static` (the `peers` list; default) or `kubernetes`
    /// (EndpointSlices of `kubernetes_service`, size from the StatefulSet).
    pub discovery: String,
    /// Kubernetes namespace; default: the pod's service-account namespace file.
    pub kubernetes_namespace: Option<String>,
    /// The headless Service governing the StatefulSet (required with `kubernetes`).
    pub kubernetes_service: Option<String>,
    /// The StatefulSet; default: `kubernetes_service` without a trailing `-headless`.
    pub kubernetes_statefulset: Option<String>,
    /// EndpointSlice port name of the cluster gRPC port. Default `cluster`.
    pub kubernetes_port_name: String,
    /// API server URL override (tests, out-of-cluster); default: in-cluster config, else
    /// the kubeconfig.
    pub kubernetes_api_url: Option<String>,
    /// Discovery/reconcile interval, ms. Default 5000.
    pub discovery_interval_ms: u64,
    /// Raft heartbeat interval, ms. Default 100.
    pub heartbeat_ms: u64,
    /// Raft election timeout lower bound, ms (upper bound is twice it). Default 400.
    pub election_timeout_ms: u64,
    /// Build a snapshot (and compact the log) after this many log entries (each entry is
    /// a batch of requests). Default 20000.
    pub snapshot_every: u64,
    /// How long a request may wait for the cluster to commit it, ms. Default 2000.
    pub commit_timeout_ms: u64,
    /// When no quorum commits in time: `serve-local` (answer from the last applied
    /// state, keep the request in a durable outbox, replay it later; default) or
    /// `fail-closed` (close the connection; the client tries another SRV target).
    pub quorum_loss: String,
    /// sled page cache, MiB. Default 4 (the state itself lives in memory).
    pub cache_mib: u64,
    /// Tokio worker threads; 0 = one per core. Default 1: one thread answers thousands of
    /// activations per second, and fewer cross-thread wake-ups keep latency low on
    /// virtual machines.
    pub worker_threads: usize,
    /// Log format. Default text.
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax). Default `info`.
    pub log_level: String,
    /// Serve Prometheus metrics on the admin API (`/metrics`). Default true.
    pub metrics: bool,
    /// OpenTelemetry OTLP/gRPC endpoint for traces (e.g. `http://collector:4317`);
    /// none (default) disables tracing export.
    pub otlp_endpoint: Option<String>,
    /// Fraction of activations traced when `otlp_endpoint` is set (parent-based). Default 1.0.
    pub trace_sample_ratio: f64,
    /// Publish this node's `_vlmcs._tcp` SRV record by RFC 2136 dynamic update (as a
    /// Microsoft host's DNS publishing does). Default false.
    pub dns_publish: bool,
    /// DNS server taking the updates, `IP` or `IP:PORT` (port 53 by default).
    pub dns_server: Option<String>,
    /// Zone to update (e.g. `campus.example`).
    pub dns_zone: Option<String>,
    /// Domain whose `_vlmcs._tcp.<domain>` clients query; default: `dns_zone`.
    pub dns_domain: Option<String>,
    /// This node's host name as clients reach it (SRV target; needs an A/AAAA record).
    pub dns_target: Option<String>,
    /// SRV priority (lower is preferred). Default 0.
    pub dns_priority: u16,
    /// SRV weight within a priority. Default 0.
    pub dns_weight: u16,
    /// SRV record TTL, seconds; the record is re-published every ttl/2 (at most every
    /// 10 minutes). Default 3600.
    pub dns_ttl: u32,
    /// TSIG key name (as in the server's `key "NAME" { ... }`); none: unsigned updates.
    pub dns_tsig_key_name: Option<String>,
    /// TSIG secret, base64.
    pub dns_tsig_secret: Option<String>,
    /// File holding the TSIG secret (base64, or a BIND key file with `secret "...";`).
    pub dns_tsig_secret_file: Option<PathBuf>,
    /// TSIG algorithm: hmac-sha256 (default), hmac-sha384 or hmac-sha512.
    pub dns_tsig_algorithm: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![
                "[::]:1688".parse().expect("literal"),
                "0.0.0.0:1688".parse().expect("literal"),
            ],
            admin_listen: "127.0.0.1:9688".parse().expect("literal"),
            data_dir: PathBuf::from("./data"),
            licensed_groups: "all".into(),
            activation_interval: 120,
            renewal_interval: 10080,
            catalog_file: None,
            check_client_time: false,
            max_clock_skew_minutes: 240,
            lcid: 1033,
            ndr64: true,
            btfn: true,
            max_pdu_bytes: 4096,
            read_timeout_ms: 5000,
            idle_timeout_ms: 30_000,
            max_connections: 4096,
            node_id: 1,
            node_id_from_hostname: false,
            cluster_listen: "127.0.0.1:9689".parse().expect("literal"),
            cluster_advertise: None,
            peers: String::new(),
            discovery: "static".into(),
            kubernetes_namespace: None,
            kubernetes_service: None,
            kubernetes_statefulset: None,
            kubernetes_port_name: "cluster".into(),
            kubernetes_api_url: None,
            discovery_interval_ms: 5000,
            heartbeat_ms: 100,
            election_timeout_ms: 400,
            snapshot_every: 20_000,
            commit_timeout_ms: 2000,
            quorum_loss: "serve-local".into(),
            cache_mib: 4,
            worker_threads: 1,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            metrics: true,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            dns_publish: false,
            dns_server: None,
            dns_zone: None,
            dns_domain: None,
            dns_target: None,
            dns_priority: 0,
            dns_weight: 0,
            dns_ttl: 3600,
            dns_tsig_key_name: None,
            dns_tsig_secret: None,
            dns_tsig_secret_file: None,
            dns_tsig_algorithm: "hmac-sha256".into(),
        }
    }
}

impl Config {
    /// Parses a TOML document over the defaults.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.listen.is_empty() {
            return invalid("listen", "at least one address is needed");
        }
        if self.activation_interval == 0 || self.activation_interval > 999_999 {
            return invalid("activation_interval", "must be 1..=999999 minutes");
        }
        if self.renewal_interval == 0 || self.renewal_interval > 999_999 {
            return invalid("renewal_interval", "must be 1..=999999 minutes");
        }
        if !(72..=65_535).contains(&self.max_pdu_bytes) {
            return invalid("max_pdu_bytes", "must be 72..=65535");
        }
        if self.read_timeout_ms == 0 || self.idle_timeout_ms == 0 {
            return invalid("read_timeout_ms", "timeouts must be positive");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be positive");
        }
        if self.lcid == 0 || self.lcid > 0xffff {
            return invalid("lcid", "must be a Windows LCID (1..=65535)");
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms {
            return invalid(
                "election_timeout_ms",
                "must be larger than heartbeat_ms (and both positive)",
            );
        }
        if self.snapshot_every == 0 || self.commit_timeout_ms == 0 {
            return invalid(
                "snapshot_every",
                "snapshot_every and commit_timeout_ms must be positive",
            );
        }
        if let Err(e) = self.quorum_loss.parse::<kms_cluster::node::QuorumLoss>() {
            return invalid("quorum_loss", &e);
        }
        let peers = self.peer_map()?;
        if !peers.is_empty() && !peers.contains_key(&self.node_id) {
            return invalid("peers", "must include this node's own id (node_id)");
        }
        match self.discovery.as_str() {
            "static" => {}
            "kubernetes" => {
                if !peers.is_empty() {
                    return invalid("peers", "must be empty with discovery = kubernetes");
                }
                if self
                    .kubernetes_service
                    .as_deref()
                    .is_none_or(|s| s.trim().is_empty())
                {
                    return invalid("kubernetes_service", "required with discovery = kubernetes");
                }
                if self.kubernetes_port_name.trim().is_empty() {
                    return invalid("kubernetes_port_name", "must not be empty");
                }
                if let Some(u) = &self.kubernetes_api_url {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        return invalid("kubernetes_api_url", "must be an http:// or https:// URL");
                    }
                }
                if self.discovery_interval_ms == 0 {
                    return invalid("discovery_interval_ms", "must be positive");
                }
            }
            _ => return invalid("discovery", "must be `static` or `kubernetes`"),
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return invalid("trace_sample_ratio", "must be between 0.0 and 1.0");
        }
        if let Some(e) = &self.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return invalid("otlp_endpoint", "must be an http:// or https:// URL");
            }
        }
        if self.licensed_groups.trim().is_empty() {
            return invalid("licensed_groups", "name at least one group, or `all`");
        }
        crate::dns::validate(self)?;
        Ok(())
    }

    /// Parses `peers` (`1=host:port,2=host:port`).
    pub fn peer_map(&self) -> Result<std::collections::BTreeMap<u64, String>, ConfigError> {
        let mut out = std::collections::BTreeMap::new();
        for item in self
            .peers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let bad = || ConfigError::Invalid {
                key: "peers",
                message: format!("{item:?} is not ID=HOST:PORT"),
            };
            let (id, addr) = item.split_once('=').ok_or_else(bad)?;
            let id: u64 = id.trim().parse().map_err(|_| bad())?;
            let addr = addr.trim();
            if addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(bad());
            }
            if out.insert(id, addr.to_string()).is_some() {
                return Err(ConfigError::Invalid {
                    key: "peers",
                    message: format!("node id {id} listed twice"),
                });
            }
        }
        Ok(out)
    }

    /// Applies `node_id_from_hostname`: node id = the host name's trailing `-N` plus one.
    pub fn resolve_node_id(&mut self, hostname: &str) -> Result<(), ConfigError> {
        if !self.node_id_from_hostname {
            return Ok(());
        }
        let ordinal = hostname
            .trim()
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .ok_or_else(|| ConfigError::Invalid {
                key: "node_id_from_hostname",
                message: format!("host name {hostname:?} does not end in -<ordinal>"),
            })?;
        self.node_id = ordinal + 1;
        Ok(())
    }

    /// The effective configuration as TOML (for `kmsd --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::default();
        c.validate().unwrap();
        let back = Config::from_toml(&c.to_toml(), Path::new("x")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let c = Config::from_toml("renewal_interval = 60\n", Path::new("x")).unwrap();
        assert_eq!(c.renewal_interval, 60);
        assert_eq!(c.activation_interval, 120);
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::from_toml("renewal_intervall = 60\n", Path::new("k.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("renewal_intervall"), "{msg}");
        assert!(msg.contains("k.toml"), "{msg}");
    }

    #[test]
    fn node_id_from_statefulset_hostname() {
        let mut c = Config {
            node_id_from_hostname: true,
            ..Config::default()
        };
        c.resolve_node_id("kms-cluster-2\n").unwrap();
        assert_eq!(c.node_id, 3);
        assert!(c.resolve_node_id("kmshost").is_err());
        let mut off = Config::default();
        off.resolve_node_id("kms-cluster-7").unwrap();
        assert_eq!(off.node_id, 1);
    }

    #[test]
    fn kubernetes_discovery_settings() {
        let mut c = Config {
            discovery: "kubernetes".into(),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "kubernetes_service",
                ..
            })
        ));
        c.kubernetes_service = Some("kms-headless".into());
        c.validate().unwrap();
        c.peers = "1=a:1".into();
        assert!(c.validate().is_err());
        c.peers.clear();
        c.kubernetes_api_url = Some("localhost:6443".into());
        assert!(c.validate().is_err());
        let bad = Config {
            discovery: "dns".into(),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn bad_values_rejected() {
        let c = Config {
            activation_interval: 0,
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "activation_interval",
                ..
            })
        ));
    }
}
