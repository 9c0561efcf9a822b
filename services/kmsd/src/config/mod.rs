//! Daemon configuration: defaults, an optional TOML file, `KMSD_*` environment
//! variables and command-line flags, in rising precedence.
//!
//! Every key of the file has a flag and an environment variable (see [`crate::cli`]);
//! the defaults run a single node with its state in `./data` and no file at all.

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
    /// A `dns_*` setting breaks a rule of [`kms_dns`] (the message names the setting).
    #[error("invalid setting {0}")]
    Dns(#[from] kms_dns::DnsError),
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
    /// Bearer token the admin API requires (all endpoints but `/livez`, `/readyz` and
    /// `/metrics`); none (default): the admin API is open.
    pub admin_token: Option<String>,
    /// File holding the admin token (a trailing newline is ignored).
    pub admin_token_file: Option<PathBuf>,
    /// Time an admin connection has to deliver a whole request header, ms: from the
    /// accept for the first request, from its first byte for later ones. Default 5000.
    pub admin_header_timeout_ms: u64,
    /// Time an admin connection may stay open without a request after its last answer
    /// (keep-alive), ms. Default 60000.
    pub admin_idle_timeout_ms: u64,
    /// Largest admin request header (request line and headers), bytes; larger ones get
    /// 431 and a closed connection. Default 16384.
    pub admin_max_header_bytes: usize,
    /// Simultaneous admin connections; beyond, a new connection is closed at once.
    /// Default 64.
    pub admin_max_connections: usize,
    /// Audit log (membership changes, config reloads, admin authentication failures),
    /// appended as JSON lines; none (default): audit events go to the log (target
    /// `kmsd::audit`).
    pub audit_log: Option<PathBuf>,
    /// Data directory (Raft log segments, snapshots, outbox, identity). Default `./data`.
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
    /// For tests and drills only: seconds added to the clock this node stamps on activations
    /// and reads the counts and inventory at (so that 180 days pass in seconds). The client
    /// clock check keeps the real clock. Default 0; reloadable; at most 10 years either way.
    pub clock_offset_secs: i64,
    /// Days a client record stays in the inventory (`kmsctl clients`) after its last request,
    /// beyond the 30-day count window, so that machines that stopped renewing are still
    /// listed when their activation ends (180 days). Replicated: the value of the node that
    /// last proposed it applies cluster-wide, so set it alike on every node. Default 200;
    /// 30..=3650; reloadable.
    pub inventory_retention_days: u32,
    /// A machine whose activation ends within this many days is `expiring`. Default 30;
    /// 1..=179; reloadable.
    pub expiring_horizon_days: u32,
    /// Machines of one count group in the `expiring` state that raise `KmsClientsExpiring`
    /// (exported as `kms_lifecycle_alert_threshold{state="expiring"}`). Default 1; reloadable.
    pub alert_expiring_machines: u32,
    /// Machines of one count group in the `failing` state that raise `KmsClientsFailing`.
    /// Default 10; reloadable.
    pub alert_failing_machines: u32,
    /// Which Windows Server release the host claims in every ePID (build and platform id):
    /// `2008`, `2008r2`, `2012`, `2012r2`, `2016`, `2019`, `2022`, `2025`. Used when the
    /// cluster's host identity is chosen (first request, or `kmsctl host-identity
    /// regenerate`); every licensed group's host key must install on it. Default `2025`.
    pub host_os: String,
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
    /// Client networks (CIDRs, IPv4 and IPv6) allowed on port 1688, checked before any
    /// byte is read. Empty (default): loopback, private (RFC 1918, unique-local),
    /// shared (100.64/10) and link-local ranges.
    pub allow_cidrs: Vec<String>,
    /// Simultaneous connections from one source address; 0 = unlimited. Default 256.
    pub max_connections_per_ip: usize,
    /// Sustained KMS requests per second from one source address; 0 = unlimited.
    /// Default 100.
    pub requests_per_ip_per_sec: f64,
    /// Requests one source address may send at once above the sustained rate. Default 400.
    pub request_burst: f64,
    /// Source networks exempt from the per-address limits (not from the allowlist).
    /// Default: loopback (local tooling, health checks, benchmarks).
    pub limit_exempt_cidrs: Vec<String>,
    /// Longest a client connection may stay open, ms, however active. Default 120000.
    pub connection_lifetime_ms: u64,
    /// This node's stable id in the cluster. Default 1.
    pub node_id: u64,
    /// Derive `node_id` from the host name's trailing ordinal (`kms-cluster-2` → 3), as
    /// a StatefulSet names its pods. Default false.
    pub node_id_from_hostname: bool,
    /// Address of the cluster gRPC server (Raft and forwarding). Default `127.0.0.1:9689`.
    pub cluster_listen: SocketAddr,
    /// Address peers use to reach this node; default: `cluster_listen`.
    pub cluster_advertise: Option<String>,
    /// PEM file of the cluster CA. With `tls_cert` and `tls_key` (all three or none) the
    /// cluster port requires client certificates signed by this CA and every outbound
    /// cluster connection uses mutual TLS. None (default): plaintext, for loopback and
    /// tests only.
    pub tls_ca: Option<PathBuf>,
    /// PEM file of this node's certificate chain (server and client certificate; needs
    /// subjectAltNames for the host part of its advertised address).
    pub tls_cert: Option<PathBuf>,
    /// PEM file of this node's private key.
    pub tls_key: Option<PathBuf>,
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
    /// Most requests committed in one Raft log entry (group commit). Default 512.
    pub max_batch: usize,
    /// Most batches a node keeps waiting for their commit at once (on the leader, or
    /// forwarded to it); requests arriving meanwhile gather into the next batch. Default 2
    /// (measured in docs/benchmarks.md).
    pub max_inflight: usize,
    /// When no quorum commits in time: `serve-local` (answer from the last applied
    /// state, keep the request in a durable outbox, replay it later; default) or
    /// `fail-closed` (close the connection; the client tries another SRV target).
    pub quorum_loss: String,
    /// Cache of decoded Raft log entries, MiB. Default 2 (the state itself lives in memory):
    /// under full load that is ~0.5 s of entries for a lagging follower; older ones are read
    /// back from the log files. 4 cost 1.5-3 MB more RSS at 100,000 clients (docs/benchmarks.md).
    pub cache_mib: u64,
    /// Write the Raft log with asynchronous direct writes (Linux AIO on `O_DIRECT | O_DSYNC`
    /// segments) where the filesystem and kernel allow them; otherwise, or when false, with
    /// `pwrite` + `fdatasync` on the log's writer thread. Default true: the writer no longer
    /// sleeps on the disk, ~2 fewer context switches per activation at one request at a time
    /// (docs/design/storage.md). Set it false if a filesystem misbehaves with `O_DIRECT`.
    pub log_direct_io: bool,
    /// Tokio worker threads; 0 = one per core. Default 1: one thread answers thousands of
    /// activations per second, and fewer cross-thread wake-ups keep latency low on
    /// virtual machines.
    pub worker_threads: usize,
    /// Seconds a watched loop (runtime heartbeat, Raft core, state-machine apply, request
    /// path) may have work pending without progress before the node counts as stalled:
    /// `/livez` and `/readyz` then answer 503 naming the loop. 0 disables the watchdog.
    /// Default 10.
    pub watchdog_stall_secs: u64,
    /// Seconds a stall may last before the watchdog thread aborts the process, so a
    /// supervisor without HTTP probes (a restart policy) restarts it; at least
    /// `watchdog_stall_secs`. 0 (default): never abort.
    pub watchdog_abort_secs: u64,
    /// Log format. Default text.
    pub log_format: LogFormat,
    /// Log level of our own crates (`error`, `warn`, `info`, `debug`, `trace`); libraries
    /// (openraft, tonic, hyper, ...) stay at `warn`. A value with `=` or `,` is a full
    /// tracing EnvFilter directive taken as written (`info,openraft=info`). Default `info`.
    pub log_level: String,
    /// Log lines written per callsite (same target, level and message template) in each
    /// `log_repeat_window_secs`; the rest are replaced by one "repeated N times" line.
    /// 0 turns the limit off. Default 20.
    pub log_repeat_limit: u32,
    /// Window of `log_repeat_limit`, seconds (at least 1). Default 10.
    pub log_repeat_window_secs: u64,
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
    /// TSIG secret, base64 (or the text of a BIND key file).
    pub dns_tsig_secret: Option<String>,
    /// File holding the TSIG secret (base64, or a BIND key file naming the same key and
    /// algorithm).
    pub dns_tsig_secret_file: Option<PathBuf>,
    /// TSIG algorithm: hmac-sha256 (default), hmac-sha384 or hmac-sha512 (the set
    /// [`kms_dns::TsigAlgorithm`] accepts; hmac-md5 and hmac-sha1 are refused).
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
            admin_token: None,
            admin_token_file: None,
            admin_header_timeout_ms: 5000,
            admin_idle_timeout_ms: 60_000,
            admin_max_header_bytes: 16_384,
            admin_max_connections: 64,
            audit_log: None,
            data_dir: PathBuf::from("./data"),
            licensed_groups: "all".into(),
            activation_interval: 120,
            renewal_interval: 10080,
            catalog_file: None,
            check_client_time: false,
            max_clock_skew_minutes: 240,
            lcid: 1033,
            clock_offset_secs: 0,
            inventory_retention_days: 200,
            expiring_horizon_days: 30,
            alert_expiring_machines: 1,
            alert_failing_machines: 10,
            host_os: "2025".into(),
            ndr64: true,
            btfn: true,
            max_pdu_bytes: 4096,
            read_timeout_ms: 5000,
            idle_timeout_ms: 30_000,
            max_connections: 4096,
            allow_cidrs: Vec::new(),
            max_connections_per_ip: 256,
            requests_per_ip_per_sec: 100.0,
            request_burst: 400.0,
            limit_exempt_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
            connection_lifetime_ms: 120_000,
            node_id: 1,
            node_id_from_hostname: false,
            cluster_listen: "127.0.0.1:9689".parse().expect("literal"),
            cluster_advertise: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
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
            max_batch: 512,
            max_inflight: 2,
            commit_timeout_ms: 2000,
            quorum_loss: "serve-local".into(),
            // The log's own default (kms_cluster::WalOptions), in MiB.
            cache_mib: (kms_cluster::WalOptions::default().cache_bytes / (1024 * 1024)) as u64,
            log_direct_io: kms_cluster::WalOptions::default().direct_io,
            worker_threads: 1,
            watchdog_stall_secs: 10,
            watchdog_abort_secs: 0,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            log_repeat_limit: 20,
            log_repeat_window_secs: 10,
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

/// The largest `clock_offset_secs` accepted: 10 years.
pub const MAX_CLOCK_OFFSET_SECS: u64 = 10 * 366 * 86_400;

/// The CIDR lists of a config file, with where each entry is written.
#[derive(Deserialize)]
struct CidrSpans {
    #[serde(default)]
    allow_cidrs: Vec<toml::Spanned<String>>,
    #[serde(default)]
    limit_exempt_cidrs: Vec<toml::Spanned<String>>,
}

/// Checks the CIDR lists of a config file's `text`; the error names the key, the entry and
/// its line, which the later check of the merged settings cannot (flags and env have none).
fn check_cidr_lines(text: &str) -> Result<(), String> {
    let Ok(spans) = toml::from_str::<CidrSpans>(text) else {
        return Ok(());
    };
    for (key, list) in [
        ("allow_cidrs", &spans.allow_cidrs),
        ("limit_exempt_cidrs", &spans.limit_exempt_cidrs),
    ] {
        for entry in list {
            if let Err(e) = entry.get_ref().parse::<crate::access::Cidr>() {
                let line = text[..entry.span().start.min(text.len())]
                    .lines()
                    .count()
                    .max(1);
                return Err(format!("line {line}: {key}: {e}"));
            }
        }
    }
    Ok(())
}

impl Config {
    /// Parses a TOML document over the defaults.
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let cfg: Config = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        check_cidr_lines(text).map_err(parse_error)?;
        Ok(cfg)
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// The limit on repeated log lines.
    pub fn repeat_limit(&self) -> crate::log_limit::RepeatLimit {
        crate::log_limit::RepeatLimit {
            limit: self.log_repeat_limit,
            window: std::time::Duration::from_secs(self.log_repeat_window_secs),
        }
    }

    /// The client access policy these settings describe (after [`Config::validate`]).
    pub fn access_policy(&self) -> Result<crate::access::AccessPolicy, ConfigError> {
        let invalid = |key, e: crate::access::CidrError| ConfigError::Invalid {
            key,
            message: e.to_string(),
        };
        Ok(crate::access::AccessPolicy {
            allow: crate::access::AccessPolicy::parse_allow(&self.allow_cidrs)
                .map_err(|e| invalid("allow_cidrs", e))?,
            exempt: crate::access::parse_cidrs(&self.limit_exempt_cidrs)
                .map_err(|e| invalid("limit_exempt_cidrs", e))?,
            max_connections_per_ip: self.max_connections_per_ip,
            requests_per_ip_per_sec: self.requests_per_ip_per_sec,
            request_burst: self.request_burst,
        })
    }

    /// The parsed `host_os`.
    pub fn host_os(&self) -> Result<kms_protocol::host_os::HostOs, ConfigError> {
        self.host_os.parse().map_err(
            |e: kms_protocol::host_os::HostOsError| ConfigError::Invalid {
                key: "host_os",
                message: e.to_string(),
            },
        )
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
        if self.admin_header_timeout_ms == 0 {
            return invalid(
                "admin_header_timeout_ms",
                "must be positive (time an admin client has to send a request header)",
            );
        }
        if self.admin_idle_timeout_ms == 0 {
            return invalid(
                "admin_idle_timeout_ms",
                "must be positive (time an idle admin connection stays open)",
            );
        }
        if !(1024..=1_048_576).contains(&self.admin_max_header_bytes) {
            return invalid("admin_max_header_bytes", "must be 1024..=1048576 bytes");
        }
        if !(1..=65_536).contains(&self.admin_max_connections) {
            return invalid(
                "admin_max_connections",
                "must be 1..=65536 (0 would refuse every admin connection, probes included)",
            );
        }
        if let Err(e) = crate::access::AccessPolicy::parse_allow(&self.allow_cidrs) {
            return invalid("allow_cidrs", &e.to_string());
        }
        if let Err(e) = crate::access::parse_cidrs(&self.limit_exempt_cidrs) {
            return invalid("limit_exempt_cidrs", &e.to_string());
        }
        if !(self.requests_per_ip_per_sec >= 0.0 && self.request_burst >= 1.0) {
            return invalid(
                "requests_per_ip_per_sec",
                "the rate must be >= 0 (0 = unlimited) and request_burst >= 1",
            );
        }
        if self.connection_lifetime_ms < self.read_timeout_ms {
            return invalid("connection_lifetime_ms", "must be at least read_timeout_ms");
        }
        if self.clock_offset_secs.unsigned_abs() > MAX_CLOCK_OFFSET_SECS {
            return invalid(
                "clock_offset_secs",
                &format!("at most {MAX_CLOCK_OFFSET_SECS} seconds (10 years) either way"),
            );
        }
        if self.lcid == 0 || self.lcid > 0xffff {
            return invalid("lcid", "must be a Windows LCID (1..=65535)");
        }
        if !(30..=3650).contains(&self.inventory_retention_days) {
            return invalid(
                "inventory_retention_days",
                "must be 30..=3650 days (at least the 30-day count window)",
            );
        }
        if !(1..=179).contains(&self.expiring_horizon_days) {
            return invalid(
                "expiring_horizon_days",
                "must be 1..=179 days (an activation lasts 180)",
            );
        }
        if self.alert_expiring_machines == 0 {
            return invalid(
                "alert_expiring_machines",
                "must be at least 1 (0 would alert with no machine expiring)",
            );
        }
        if self.alert_failing_machines == 0 {
            return invalid(
                "alert_failing_machines",
                "must be at least 1 (0 would alert with no machine failing)",
            );
        }
        self.host_os()?;
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms {
            return invalid(
                "election_timeout_ms",
                "must be larger than heartbeat_ms (and both positive)",
            );
        }
        if self.max_batch == 0 || self.max_inflight == 0 {
            return invalid("max_batch", "max_batch and max_inflight must be positive");
        }
        if self.snapshot_every == 0 || self.commit_timeout_ms == 0 {
            return invalid(
                "snapshot_every",
                "snapshot_every and commit_timeout_ms must be positive",
            );
        }
        if self.watchdog_abort_secs > 0 && self.watchdog_stall_secs == 0 {
            return invalid(
                "watchdog_abort_secs",
                "needs the watchdog on (watchdog_stall_secs > 0)",
            );
        }
        if self.watchdog_abort_secs > 0 && self.watchdog_abort_secs < self.watchdog_stall_secs {
            return invalid(
                "watchdog_abort_secs",
                "must be at least watchdog_stall_secs (or 0: never abort)",
            );
        }
        if let Err(e) = crate::telemetry::log_filter(&self.log_level) {
            return invalid("log_level", &e);
        }
        if self.log_repeat_window_secs == 0 {
            return invalid("log_repeat_window_secs", "must be at least 1");
        }
        if let Err(e) = self.quorum_loss.parse::<kms_cluster::node::QuorumLoss>() {
            return invalid("quorum_loss", &e);
        }
        if self.admin_token.is_some() && self.admin_token_file.is_some() {
            return invalid(
                "admin_token",
                "give admin_token or admin_token_file, not both",
            );
        }
        if let Some(t) = &self.admin_token {
            check_admin_token("admin_token", t)?;
        }
        if self
            .audit_log
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return invalid("audit_log", "must be a file path (leave it out for none)");
        }
        let tls_set = [&self.tls_ca, &self.tls_cert, &self.tls_key]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if tls_set != 0 && tls_set != 3 {
            return invalid(
                "tls_ca",
                "set all of tls_ca, tls_cert and tls_key (mutual TLS), or none (plaintext)",
            );
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

    /// The cluster's mutual TLS settings, loaded and checked; None when the `tls_*` keys
    /// are not set.
    pub fn cluster_tls(&self) -> Result<Option<kms_cluster::network::TlsConfig>, ConfigError> {
        let (Some(ca), Some(cert), Some(key)) = (&self.tls_ca, &self.tls_cert, &self.tls_key)
        else {
            return Ok(None);
        };
        kms_cluster::network::TlsConfig::load(ca, cert, key)
            .map(Some)
            .map_err(|e| {
                use kms_cluster::network::TlsError;
                let key = match &e {
                    TlsError::Read { what, .. } | TlsError::Pem { what, .. } => match *what {
                        "CA certificate" => "tls_ca",
                        "private key" => "tls_key",
                        _ => "tls_cert",
                    },
                    _ => "tls_cert",
                };
                ConfigError::Invalid {
                    key,
                    message: e.to_string(),
                }
            })
    }

    /// The effective configuration as TOML (for `kmsd --print-config`), secrets
    /// (`admin_token`, `dns_tsig_secret`) replaced by `"<redacted>"`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for secret in [&mut shown.admin_token, &mut shown.dns_tsig_secret] {
            if secret.is_some() {
                *secret = Some(REDACTED.into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_default()
    }

    /// The admin API token: `admin_token`, or the contents of `admin_token_file` (one
    /// trailing newline removed); None when neither is set.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = &self.admin_token {
            check_admin_token("admin_token", t)?;
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
            key: "admin_token_file",
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let token = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        check_admin_token("admin_token_file", token)?;
        Ok(Some(token.to_string()))
    }
}

/// What `--print-config` shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// An admin token must be non-empty printable ASCII without spaces (it travels in an
/// HTTP header). The message never contains the token.
fn check_admin_token(key: &'static str, token: &str) -> Result<(), ConfigError> {
    if token.is_empty() {
        return Err(ConfigError::Invalid {
            key,
            message: "the admin token is empty".into(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid {
            key,
            message: "the admin token must be printable ASCII without spaces".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_os_is_checked() {
        let mut c = Config::default();
        assert_eq!(
            c.host_os().unwrap(),
            kms_protocol::host_os::HostOs::Server2025
        );
        c.host_os = "2012 R2".into();
        assert!(c.validate().is_ok());
        c.host_os = "2023".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("host_os") && e.contains("2023"), "{e}");
    }

    #[test]
    fn host_os_must_hold_every_licensed_key() {
        let mut c = Config {
            host_os: "2012r2".into(),
            licensed_groups: "server-2025".into(),
            ..Config::default()
        };
        let catalog = kms_protocol::products::Catalog::builtin();
        let e = crate::policy_from(&c, &catalog).unwrap_err().to_string();
        assert!(e.contains("server-2025") && e.contains("14393"), "{e}");
        c.host_os = "2016".into();
        assert!(crate::policy_from(&c, &catalog).is_ok());
    }

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
    fn a_bad_cidr_in_the_file_names_its_line() {
        let text = "node_id = 1\n\nallow_cidrs = [\n  \"10.0.0.0/8\",\n  \"10.1.0.0/33\",\n]\n";
        let e = Config::from_toml(text, Path::new("kmsd.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("kmsd.toml"), "{msg}");
        assert!(msg.contains("line 5: allow_cidrs"), "{msg}");
        assert!(msg.contains("10.1.0.0/33"), "{msg}");
        let text = "limit_exempt_cidrs = [\"::1/128\", \"fe80::/200\"]\n";
        let msg = Config::from_toml(text, Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 1: limit_exempt_cidrs"), "{msg}");
        Config::from_toml("allow_cidrs = [\"10.0.0.0/8\"]\n", Path::new("k")).unwrap();
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
    fn admin_token_sources_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cr3t-token\n").unwrap();
        let from_file = Config {
            admin_token_file: Some(f.clone()),
            ..Config::default()
        };
        from_file.validate().unwrap();
        assert_eq!(
            from_file.admin_token().unwrap().as_deref(),
            Some("s3cr3t-token")
        );
        assert_eq!(Config::default().admin_token().unwrap(), None);
        let both = Config {
            admin_token: Some("x".into()),
            admin_token_file: Some(f.clone()),
            ..Config::default()
        };
        assert!(matches!(
            both.validate(),
            Err(ConfigError::Invalid {
                key: "admin_token",
                ..
            })
        ));
        std::fs::write(&f, "\n").unwrap();
        let msg = from_file.admin_token().unwrap_err().to_string();
        assert!(
            msg.contains("admin_token_file") && msg.contains("empty"),
            "{msg}"
        );
        let spaced = Config {
            admin_token: Some("two words".into()),
            ..Config::default()
        };
        let msg = spaced.validate().unwrap_err().to_string();
        assert!(!msg.contains("two words"), "{msg}");
        let missing = Config {
            admin_token_file: Some(dir.path().join("nope")),
            ..Config::default()
        };
        assert!(missing.admin_token().is_err());

        let secret = Config {
            admin_token: Some("s3cr3t-token".into()),
            dns_tsig_secret: Some("c2VjcmV0c2VjcmV0".into()),
            ..Config::default()
        };
        let shown = secret.to_toml();
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(!shown.contains("c2VjcmV0c2VjcmV0"), "{shown}");
        assert!(shown.contains("admin_token = \"<redacted>\""), "{shown}");
        assert!(
            shown.contains("dns_tsig_secret = \"<redacted>\""),
            "{shown}"
        );
        // Unset secrets stay unset rather than showing a placeholder.
        assert!(!Config::default().to_toml().contains(REDACTED));
    }

    #[test]
    fn tls_keys_all_or_none() {
        let some = Config {
            tls_ca: Some("ca.crt".into()),
            tls_cert: Some("n.crt".into()),
            ..Config::default()
        };
        assert!(matches!(
            some.validate(),
            Err(ConfigError::Invalid { key: "tls_ca", .. })
        ));
        let all = Config {
            tls_key: Some("n.key".into()),
            ..some
        };
        all.validate().unwrap();
        // Validation does not read the files; loading them names the missing one.
        let e = all.cluster_tls().unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key: "tls_ca", message } if message.contains("ca.crt")),
            "{e}"
        );
        assert!(Config::default().cluster_tls().unwrap().is_none());
        let back = Config::from_toml(
            "tls_ca = \"/etc/kmsd/tls/ca.crt\"\ntls_cert = \"/etc/kmsd/tls/tls.crt\"\ntls_key = \"/etc/kmsd/tls/tls.key\"\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(back.tls_key, Some(PathBuf::from("/etc/kmsd/tls/tls.key")));
    }

    #[test]
    fn watchdog_settings() {
        let c = Config::default();
        assert_eq!((c.watchdog_stall_secs, c.watchdog_abort_secs), (10, 0));
        let abort_without_watchdog = Config {
            watchdog_stall_secs: 0,
            watchdog_abort_secs: 60,
            ..Config::default()
        };
        assert!(matches!(
            abort_without_watchdog.validate(),
            Err(ConfigError::Invalid {
                key: "watchdog_abort_secs",
                ..
            })
        ));
        let abort_before_stall = Config {
            watchdog_abort_secs: 5,
            ..Config::default()
        };
        assert!(abort_before_stall.validate().is_err());
        for (stall, abort) in [(0, 0), (10, 10), (10, 60), (1, 0)] {
            Config {
                watchdog_stall_secs: stall,
                watchdog_abort_secs: abort,
                ..Config::default()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn admin_listener_limits() {
        let c = Config::default();
        assert_eq!(
            (
                c.admin_header_timeout_ms,
                c.admin_idle_timeout_ms,
                c.admin_max_header_bytes,
                c.admin_max_connections
            ),
            (5000, 60_000, 16_384, 64)
        );
        type Zero = fn(&mut Config);
        let zeroes: [(&str, Zero); 4] = [
            ("admin_header_timeout_ms", |c| c.admin_header_timeout_ms = 0),
            ("admin_idle_timeout_ms", |c| c.admin_idle_timeout_ms = 0),
            ("admin_max_header_bytes", |c| c.admin_max_header_bytes = 0),
            ("admin_max_connections", |c| c.admin_max_connections = 0),
        ];
        for (want, zero) in zeroes {
            let mut c = Config::default();
            zero(&mut c);
            let e = c.validate().unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { key, .. } if *key == want),
                "{e}"
            );
            assert!(e
                .to_string()
                .starts_with(&format!("invalid setting {want}: ")));
        }
        let too_big = Config {
            admin_max_header_bytes: 2 * 1_048_576,
            ..Config::default()
        };
        assert!(too_big.validate().is_err());
        Config {
            admin_max_header_bytes: 1024,
            admin_max_connections: 1,
            admin_header_timeout_ms: 1,
            admin_idle_timeout_ms: 1,
            ..Config::default()
        }
        .validate()
        .unwrap();
        let file = Config::from_toml(
            "admin_max_connections = 8\nadmin_idle_timeout_ms = 1500\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(
            (file.admin_max_connections, file.admin_idle_timeout_ms),
            (8, 1500)
        );
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
