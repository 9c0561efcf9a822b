//! Command-line flags and `KMSD_*` environment variables (clap), layered over the
//! config file: flag > environment > file > default.

use crate::config::{Config, ConfigError, LogFormat};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// kmsd — a Windows KMS volume-activation host.
#[derive(Debug, Parser, Default)]
#[command(name = "kmsd", version, about)]
pub struct Args {
    /// TOML configuration file.
    #[arg(long, env = "KMSD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for KMS clients (repeatable; env: comma-separated).
    #[arg(long, env = "KMSD_LISTEN", value_delimiter = ',')]
    pub listen: Vec<SocketAddr>,
    /// Admin HTTP API address.
    #[arg(long, env = "KMSD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token required by the admin API (all but /livez, /readyz, /metrics).
    #[arg(long, env = "KMSD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin API token.
    #[arg(long, env = "KMSD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Time an admin client has to send a whole request header, ms.
    #[arg(long, env = "KMSD_ADMIN_HEADER_TIMEOUT_MS")]
    pub admin_header_timeout_ms: Option<u64>,
    /// Time an admin connection may stay open without a request, ms.
    #[arg(long, env = "KMSD_ADMIN_IDLE_TIMEOUT_MS")]
    pub admin_idle_timeout_ms: Option<u64>,
    /// Largest admin request header, bytes (larger: 431).
    #[arg(long, env = "KMSD_ADMIN_MAX_HEADER_BYTES")]
    pub admin_max_header_bytes: Option<usize>,
    /// Simultaneous admin connections (beyond: closed at once).
    #[arg(long, env = "KMSD_ADMIN_MAX_CONNECTIONS")]
    pub admin_max_connections: Option<usize>,
    /// Audit log file (JSON lines); default: audit events go to the log.
    #[arg(long, env = "KMSD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Data directory (Raft log, snapshots, outbox, identity).
    #[arg(long, env = "KMSD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Licensed product groups: `all` or a comma-separated list.
    #[arg(long, env = "KMSD_LICENSED_GROUPS")]
    pub licensed_groups: Option<String>,
    /// Activation retry interval, minutes.
    #[arg(long, env = "KMSD_ACTIVATION_INTERVAL")]
    pub activation_interval: Option<u32>,
    /// Renewal interval, minutes.
    #[arg(long, env = "KMSD_RENEWAL_INTERVAL")]
    pub renewal_interval: Option<u32>,
    /// Product catalog extension file (TOML).
    #[arg(long, env = "KMSD_CATALOG_FILE")]
    pub catalog_file: Option<PathBuf>,
    /// Refuse clients whose clock is off by more than --max-clock-skew-minutes.
    #[arg(long, env = "KMSD_CHECK_CLIENT_TIME")]
    pub check_client_time: Option<bool>,
    /// Allowed client clock skew, minutes.
    #[arg(long, env = "KMSD_MAX_CLOCK_SKEW_MINUTES")]
    pub max_clock_skew_minutes: Option<u32>,
    /// LCID used in generated ePIDs.
    #[arg(long, env = "KMSD_LCID")]
    pub lcid: Option<u32>,
    /// Tests and drills only: seconds added to the clock activations are stamped and counts
    /// read at (e.g. 15552000 = 180 days ahead); the client clock check keeps the real clock.
    #[arg(long, env = "KMSD_CLOCK_OFFSET_SECS", allow_hyphen_values = true)]
    pub clock_offset_secs: Option<i64>,
    /// Days a client record stays in the inventory after its last request (30..=3650).
    #[arg(long, env = "KMSD_INVENTORY_RETENTION_DAYS")]
    pub inventory_retention_days: Option<u32>,
    /// A machine whose activation ends within this many days is `expiring`.
    #[arg(long, env = "KMSD_EXPIRING_HORIZON_DAYS")]
    pub expiring_horizon_days: Option<u32>,
    /// Expiring machines of one count group that raise KmsClientsExpiring.
    #[arg(long, env = "KMSD_ALERT_EXPIRING_MACHINES")]
    pub alert_expiring_machines: Option<u32>,
    /// Failing machines of one count group that raise KmsClientsFailing.
    #[arg(long, env = "KMSD_ALERT_FAILING_MACHINES")]
    pub alert_failing_machines: Option<u32>,
    /// Windows Server release the host claims in its ePIDs (2012r2, 2016, 2019, 2022, 2025).
    #[arg(long, env = "KMSD_HOST_OS")]
    pub host_os: Option<String>,
    /// Accept NDR64 transfer syntax.
    #[arg(long, env = "KMSD_NDR64")]
    pub ndr64: Option<bool>,
    /// Acknowledge bind-time feature negotiation.
    #[arg(long, env = "KMSD_BTFN")]
    pub btfn: Option<bool>,
    /// Largest RPC PDU accepted, bytes.
    #[arg(long, env = "KMSD_MAX_PDU_BYTES")]
    pub max_pdu_bytes: Option<usize>,
    /// Time to receive one PDU, ms.
    #[arg(long, env = "KMSD_READ_TIMEOUT_MS")]
    pub read_timeout_ms: Option<u64>,
    /// Idle time allowed between PDUs, ms.
    #[arg(long, env = "KMSD_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Simultaneous client connections.
    #[arg(long, env = "KMSD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Client network allowed on port 1688 (repeatable; env: comma-separated). None given:
    /// loopback and private ranges.
    #[arg(long = "allow-cidr", env = "KMSD_ALLOW_CIDRS", value_delimiter = ',')]
    pub allow_cidrs: Vec<String>,
    /// Simultaneous connections per source address (0 = unlimited).
    #[arg(long, env = "KMSD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Sustained requests per second per source address (0 = unlimited).
    #[arg(long, env = "KMSD_REQUESTS_PER_IP_PER_SEC")]
    pub requests_per_ip_per_sec: Option<f64>,
    /// Request burst per source address.
    #[arg(long, env = "KMSD_REQUEST_BURST")]
    pub request_burst: Option<f64>,
    /// Source network exempt from the per-address limits (repeatable; env: comma-separated).
    #[arg(
        long = "limit-exempt-cidr",
        env = "KMSD_LIMIT_EXEMPT_CIDRS",
        value_delimiter = ','
    )]
    pub limit_exempt_cidrs: Vec<String>,
    /// Longest a client connection may stay open, ms.
    #[arg(long, env = "KMSD_CONNECTION_LIFETIME_MS")]
    pub connection_lifetime_ms: Option<u64>,
    /// This node's stable cluster id.
    #[arg(long, env = "KMSD_NODE_ID")]
    pub node_id: Option<u64>,
    /// Node id = the host name's trailing ordinal + 1 (StatefulSet pods).
    #[arg(long, env = "KMSD_NODE_ID_FROM_HOSTNAME", num_args = 0..=1, default_missing_value = "true")]
    pub node_id_from_hostname: Option<bool>,
    /// Cluster gRPC address (Raft, forwarding, membership).
    #[arg(long, env = "KMSD_CLUSTER_LISTEN")]
    pub cluster_listen: Option<SocketAddr>,
    /// Address peers use to reach this node.
    #[arg(long, env = "KMSD_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<String>,
    /// Cluster CA certificate (PEM) for mutual TLS on the cluster port.
    #[arg(long, env = "KMSD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM) for cluster mutual TLS.
    #[arg(long, env = "KMSD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM) for cluster mutual TLS.
    #[arg(long, env = "KMSD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Static peers `ID=HOST:PORT,...` including this node.
    #[arg(long, env = "KMSD_PEERS")]
    pub peers: Option<String>,
    /// Peer discovery: static or kubernetes.
    #[arg(long, env = "KMSD_DISCOVERY")]
    pub discovery: Option<String>,
    /// Kubernetes namespace (default: the service-account namespace).
    #[arg(long, env = "KMSD_KUBERNETES_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// Headless Service whose EndpointSlices list the members.
    #[arg(long, env = "KMSD_KUBERNETES_SERVICE")]
    pub kubernetes_service: Option<String>,
    /// StatefulSet (default: the service name without `-headless`).
    #[arg(long, env = "KMSD_KUBERNETES_STATEFULSET")]
    pub kubernetes_statefulset: Option<String>,
    /// EndpointSlice port name of the cluster gRPC port.
    #[arg(long, env = "KMSD_KUBERNETES_PORT_NAME")]
    pub kubernetes_port_name: Option<String>,
    /// Kubernetes API server URL (default: in-cluster config, else kubeconfig).
    #[arg(long, env = "KMSD_KUBERNETES_API_URL")]
    pub kubernetes_api_url: Option<String>,
    /// Discovery/reconcile interval, ms.
    #[arg(long, env = "KMSD_DISCOVERY_INTERVAL_MS")]
    pub discovery_interval_ms: Option<u64>,
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "KMSD_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout (lower bound), ms.
    #[arg(long, env = "KMSD_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Snapshot after this many log entries.
    #[arg(long, env = "KMSD_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Time a request may wait for the cluster to commit it, ms.
    #[arg(long, env = "KMSD_COMMIT_TIMEOUT_MS")]
    pub commit_timeout_ms: Option<u64>,
    /// Most requests in one Raft log entry (group commit).
    #[arg(long, env = "KMSD_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Most batches waiting for their commit at once.
    #[arg(long, env = "KMSD_MAX_INFLIGHT")]
    pub max_inflight: Option<usize>,
    /// Quorum-loss mode: serve-local or fail-closed.
    #[arg(long, env = "KMSD_QUORUM_LOSS")]
    pub quorum_loss: Option<String>,
    /// Cache of decoded Raft log entries, MiB.
    #[arg(long, env = "KMSD_CACHE_MIB")]
    pub cache_mib: Option<u64>,
    /// Write the Raft log with asynchronous direct writes where the filesystem allows it.
    #[arg(long, env = "KMSD_LOG_DIRECT_IO")]
    pub log_direct_io: Option<bool>,
    /// Tokio worker threads (0 = one per core).
    #[arg(long, env = "KMSD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Seconds a loop may have work pending without progress before /livez fails (0 = off).
    #[arg(long, env = "KMSD_WATCHDOG_STALL_SECS")]
    pub watchdog_stall_secs: Option<u64>,
    /// Seconds a stall may last before the process aborts (0 = never).
    #[arg(long, env = "KMSD_WATCHDOG_ABORT_SECS")]
    pub watchdog_abort_secs: Option<u64>,
    /// Log format.
    #[arg(long, env = "KMSD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level of kmsd's own crates (libraries stay at warn), or a full filter
    /// directive (e.g. `info,openraft=info`).
    #[arg(long, env = "KMSD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log lines per callsite and window before the rest are summarised (0 = no limit).
    #[arg(long, env = "KMSD_LOG_REPEAT_LIMIT")]
    pub log_repeat_limit: Option<u32>,
    /// Window of --log-repeat-limit, seconds.
    #[arg(long, env = "KMSD_LOG_REPEAT_WINDOW_SECS")]
    pub log_repeat_window_secs: Option<u64>,
    /// Serve Prometheus metrics at /metrics.
    #[arg(long, env = "KMSD_METRICS")]
    pub metrics: Option<bool>,
    /// OTLP/gRPC endpoint for traces (off when unset).
    #[arg(long, env = "KMSD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of activations traced.
    #[arg(long, env = "KMSD_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Publish this node's `_vlmcs._tcp` SRV record by dynamic DNS update.
    #[arg(long, env = "KMSD_DNS_PUBLISH", num_args = 0..=1, default_missing_value = "true")]
    pub dns_publish: Option<bool>,
    /// DNS server for updates, IP or IP:PORT.
    #[arg(long, env = "KMSD_DNS_SERVER")]
    pub dns_server: Option<String>,
    /// Zone to update.
    #[arg(long, env = "KMSD_DNS_ZONE")]
    pub dns_zone: Option<String>,
    /// Domain of the `_vlmcs._tcp` records (default: the zone).
    #[arg(long, env = "KMSD_DNS_DOMAIN")]
    pub dns_domain: Option<String>,
    /// This node's host name as clients reach it (SRV target).
    #[arg(long, env = "KMSD_DNS_TARGET")]
    pub dns_target: Option<String>,
    /// SRV priority.
    #[arg(long, env = "KMSD_DNS_PRIORITY")]
    pub dns_priority: Option<u16>,
    /// SRV weight.
    #[arg(long, env = "KMSD_DNS_WEIGHT")]
    pub dns_weight: Option<u16>,
    /// SRV TTL, seconds.
    #[arg(long, env = "KMSD_DNS_TTL")]
    pub dns_ttl: Option<u32>,
    /// TSIG key name.
    #[arg(long, env = "KMSD_DNS_TSIG_KEY_NAME")]
    pub dns_tsig_key_name: Option<String>,
    /// TSIG secret (base64, or the text of a BIND key file).
    #[arg(long, env = "KMSD_DNS_TSIG_SECRET", hide_env_values = true)]
    pub dns_tsig_secret: Option<String>,
    /// File holding the TSIG secret (base64, or a BIND key file).
    #[arg(long, env = "KMSD_DNS_TSIG_SECRET_FILE")]
    pub dns_tsig_secret_file: Option<PathBuf>,
    /// TSIG algorithm (hmac-sha256, hmac-sha384, hmac-sha512; hmac-md5 and hmac-sha1 are
    /// refused).
    #[arg(long, env = "KMSD_DNS_TSIG_ALGORITHM")]
    pub dns_tsig_algorithm: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Recovery, with kmsd stopped: show how the uncommitted membership change at the end of
    /// this node's log (a joint configuration whose new voter never appeared) would be rolled
    /// back, then exit. Only when this node is the last committed configuration's only voter.
    #[arg(long)]
    pub rollback_membership: bool,
    /// With --rollback-membership: do it (cut the log), instead of only showing it.
    #[arg(long, requires = "rollback_membership")]
    pub yes: bool,
}

macro_rules! overlay {
    ($cfg:ident, $args:ident, $($field:ident),*) => {
        $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )*
    };
}

impl Args {
    /// Builds the effective configuration: defaults, then the file, then env/flags.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            cfg.listen = self.listen.clone();
        }
        if !self.allow_cidrs.is_empty() {
            cfg.allow_cidrs = self.allow_cidrs.clone();
        }
        if !self.limit_exempt_cidrs.is_empty() {
            cfg.limit_exempt_cidrs = self.limit_exempt_cidrs.clone();
        }
        if let Some(a) = &self.cluster_advertise {
            cfg.cluster_advertise = Some(a.clone());
        }
        if let Some(e) = &self.otlp_endpoint {
            cfg.otlp_endpoint = Some(e.clone());
        }
        if let Some(p) = &self.catalog_file {
            cfg.catalog_file = Some(p.clone());
        }
        for (arg, key) in [
            (&self.kubernetes_namespace, &mut cfg.kubernetes_namespace),
            (&self.kubernetes_service, &mut cfg.kubernetes_service),
            (
                &self.kubernetes_statefulset,
                &mut cfg.kubernetes_statefulset,
            ),
            (&self.kubernetes_api_url, &mut cfg.kubernetes_api_url),
        ] {
            if let Some(v) = arg {
                *key = Some(v.clone());
            }
        }
        macro_rules! overlay_opt {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = Some(v.clone()); } )* };
        }
        overlay_opt!(admin_token, admin_token_file, audit_log);
        overlay_opt!(tls_ca, tls_cert, tls_key);
        overlay_opt!(
            dns_server,
            dns_zone,
            dns_domain,
            dns_target,
            dns_tsig_key_name,
            dns_tsig_secret,
            dns_tsig_secret_file
        );
        overlay!(
            cfg,
            self,
            dns_publish,
            dns_priority,
            dns_weight,
            dns_ttl,
            dns_tsig_algorithm
        );
        overlay!(
            cfg,
            self,
            admin_listen,
            admin_header_timeout_ms,
            admin_idle_timeout_ms,
            admin_max_header_bytes,
            admin_max_connections,
            data_dir,
            licensed_groups,
            activation_interval,
            renewal_interval,
            check_client_time,
            max_clock_skew_minutes,
            lcid,
            clock_offset_secs,
            inventory_retention_days,
            expiring_horizon_days,
            alert_expiring_machines,
            alert_failing_machines,
            host_os,
            ndr64,
            btfn,
            max_pdu_bytes,
            read_timeout_ms,
            idle_timeout_ms,
            max_connections,
            max_connections_per_ip,
            requests_per_ip_per_sec,
            request_burst,
            connection_lifetime_ms,
            node_id,
            node_id_from_hostname,
            cluster_listen,
            peers,
            discovery,
            kubernetes_port_name,
            discovery_interval_ms,
            heartbeat_ms,
            election_timeout_ms,
            snapshot_every,
            commit_timeout_ms,
            max_batch,
            max_inflight,
            quorum_loss,
            cache_mib,
            log_direct_io,
            worker_threads,
            watchdog_stall_secs,
            watchdog_abort_secs,
            log_format,
            log_level,
            log_repeat_limit,
            log_repeat_window_secs,
            metrics,
            trace_sample_ratio
        );
        if cfg.node_id_from_hostname {
            cfg.resolve_node_id(&hostname())?;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// This machine's host name (`HOSTNAME`, else the kernel's).
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(&f, "renewal_interval = 60\nactivation_interval = 30\n").unwrap();
        let args = Args::try_parse_from([
            "kmsd",
            "--config",
            f.to_str().unwrap(),
            "--renewal-interval",
            "90",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:2",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(c.renewal_interval, 90);
        assert_eq!(c.activation_interval, 30);
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn admin_token_flags() {
        let args = Args::try_parse_from([
            "kmsd",
            "--admin-token",
            "tok",
            "--audit-log",
            "/tmp/audit.jsonl",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("tok"));
        assert_eq!(c.audit_log, Some(PathBuf::from("/tmp/audit.jsonl")));
        let both = Args::try_parse_from([
            "kmsd",
            "--admin-token",
            "tok",
            "--admin-token-file",
            "/tmp/t",
        ])
        .unwrap();
        assert!(both.resolve().is_err());
    }

    #[test]
    fn watchdog_flags() {
        let args = Args::try_parse_from([
            "kmsd",
            "--watchdog-stall-secs",
            "5",
            "--watchdog-abort-secs",
            "30",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!((c.watchdog_stall_secs, c.watchdog_abort_secs), (5, 30));
        let off = Args::try_parse_from(["kmsd", "--watchdog-stall-secs", "0"]).unwrap();
        assert_eq!(off.resolve().unwrap().watchdog_stall_secs, 0);
        let bad = Args::try_parse_from(["kmsd", "--watchdog-abort-secs", "3"]).unwrap();
        assert!(bad.resolve().is_err());
    }

    #[test]
    fn admin_listener_flags() {
        let args = Args::try_parse_from([
            "kmsd",
            "--admin-header-timeout-ms",
            "1000",
            "--admin-idle-timeout-ms",
            "3000",
            "--admin-max-header-bytes",
            "4096",
            "--admin-max-connections",
            "4",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(
            (
                c.admin_header_timeout_ms,
                c.admin_idle_timeout_ms,
                c.admin_max_header_bytes,
                c.admin_max_connections
            ),
            (1000, 3000, 4096, 4)
        );
        let zero = Args::try_parse_from(["kmsd", "--admin-max-connections", "0"]).unwrap();
        let msg = zero.resolve().unwrap_err().to_string();
        assert!(msg.contains("admin_max_connections"), "{msg}");
    }

    #[test]
    fn invalid_override_rejected() {
        let args = Args::try_parse_from(["kmsd", "--max-pdu-bytes", "10"]).unwrap();
        assert!(args.resolve().is_err());
    }
}
