//! kmsd: a Windows KMS volume-activation host.
//!
//! Module map:
//! - [`config`]: the configuration schema, file loading and validation.
//! - [`cli`]: flags and `KMSD_*` environment variables layered over the file.
//! - [`backend`]: the replicated state: a Raft cluster member (one member when single).
//! - [`service`]: the activation policy (licensed groups, checks, ePID, answer).
//! - [`listener`]: TCP 1688 accept loop and per-connection protocol loop with limits.
//! - [`admin`]: the admin HTTP API (optional bearer token); [`report`] builds its documents.
//! - [`admin_listener`]: the admin port's accept loop with its limits (connection cap,
//!   header and idle timeouts, header size).
//! - [`advice`]: what kmsd's last line tells an operator when it stops on a full disk, damaged
//!   data or a data directory it may not write.
//! - [`audit`]: the audit log (membership changes, config reloads, auth failures).
//! - [`discovery`]: Kubernetes peer discovery and membership reconciliation.
//! - [`dns`]: publishing this node's `_vlmcs._tcp` SRV record (RFC 2136 + TSIG).
//! - [`stats`]: process-local listener counters.
//! - [`metrics`]: Prometheus metrics served at `/metrics`.
//! - [`watchdog`]: progress probes, the stall decision and the OS thread behind `/livez`
//!   (plus the optional abort of a wedged process).
//! - `fault` (cargo feature `fault-injection`, tests only): admin routes that wedge the
//!   process on purpose.
//! - `telemetry`: logging (filter defaults, escaped text fields) and OpenTelemetry trace
//!   export; [`log_limit`] rate-limits repeated log lines.
//!
//! [`run`] wires them together; `main.rs` only parses arguments.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod admin_listener;
pub mod advice;
pub mod audit;
pub mod backend;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod dns;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod lifecycle_metrics;
pub mod listener;
pub mod log_limit;
pub mod metrics;
pub mod reload;
pub mod report;
pub mod service;
pub mod stats;
pub mod telemetry;
pub mod watchdog;

use crate::backend::Backend;
use crate::config::Config;
use crate::listener::{Limits, Listener};
use crate::service::{Policy, Service};
use kms_cluster::node::{ClusterNode, NodeConfig};
use kms_protocol::host::HostOptions;
use kms_protocol::products::Catalog;
use kms_state::lifecycle::{LifecyclePolicy, DAY_MS};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The cluster node (state, Raft, gRPC) could not start.
    #[error("cannot start the cluster node (data in {dir}): {source}")]
    Cluster {
        /// Data directory.
        dir: std::path::PathBuf,
        /// Cause.
        source: kms_cluster::node::StartError,
    },
    /// Raft stopped with a fatal error while running.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// The data directory could not be created.
    #[error("cannot create data directory {dir}: {source}")]
    DataDir {
        /// Data directory.
        dir: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The watchdog thread could not be started.
    #[error(transparent)]
    Watchdog(#[from] watchdog::WatchdogError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Current Unix time in milliseconds (the only clock read of the daemon's request path).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Loads the catalog: built-in plus the optional extension file.
pub fn load_catalog(cfg: &Config) -> Result<Catalog, config::ConfigError> {
    let mut catalog = Catalog::builtin();
    if let Some(path) = &cfg.catalog_file {
        let text = std::fs::read_to_string(path).map_err(|e| config::ConfigError::Catalog {
            path: path.clone(),
            message: e.to_string(),
        })?;
        catalog
            .extend_from_toml(&text)
            .map_err(|e| config::ConfigError::Catalog {
                path: path.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(catalog)
}

/// Builds the policy from the configuration.
pub fn policy_from(cfg: &Config, catalog: &Catalog) -> Result<Policy, config::ConfigError> {
    let licensed =
        catalog
            .parse_licensed(&cfg.licensed_groups)
            .map_err(|e| config::ConfigError::Invalid {
                key: "licensed_groups",
                message: e.to_string(),
            })?;
    let host_os = cfg.host_os()?;
    for group in &licensed {
        if let Some(csvlk) = catalog.group(group).and_then(|g| g.csvlk) {
            host_os
                .check_csvlk(group, &csvlk)
                .map_err(|e| config::ConfigError::Invalid {
                    key: "host_os",
                    message: e.to_string(),
                })?;
        }
    }
    Ok(Policy {
        licensed: licensed.into_iter().collect::<BTreeSet<_>>(),
        activation_interval: cfg.activation_interval,
        renewal_interval: cfg.renewal_interval,
        max_skew_ms: cfg
            .check_client_time
            .then_some(cfg.max_clock_skew_minutes as u64 * 60_000),
        lcid: cfg.lcid,
        host_os,
        clock_offset_ms: cfg.clock_offset_secs.saturating_mul(1000),
        lifecycle: LifecyclePolicy {
            renewal_interval_ms: u64::from(cfg.renewal_interval) * 60_000,
            expiring_horizon_ms: u64::from(cfg.expiring_horizon_days) * DAY_MS,
            ..LifecyclePolicy::default()
        },
        inventory_retention_ms: u64::from(cfg.inventory_retention_days) * DAY_MS,
        alert_expiring_machines: cfg.alert_expiring_machines,
        alert_failing_machines: cfg.alert_failing_machines,
    })
}

/// Addresses a started daemon actually listens on (ports resolved).
#[derive(Debug, Clone)]
pub struct Bound {
    /// KMS listeners.
    pub kms: Vec<SocketAddr>,
    /// Admin API.
    pub admin: SocketAddr,
    /// Cluster gRPC.
    pub cluster: SocketAddr,
}

/// Runtime hooks the binary hands to [`run`]: configurations re-read on SIGHUP (or why
/// they could not be read) and the log filter switch.
#[derive(Default)]
pub struct Control {
    /// New configurations to apply (already parsed and validated, or the error).
    pub reloads: Option<tokio::sync::mpsc::UnboundedReceiver<Result<Config, String>>>,
    /// Changes the log filter.
    pub set_log_level: Option<reload::SetLogLevel>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("reloads", &self.reloads.is_some())
            .finish_non_exhaustive()
    }
}

/// Applies configurations from `rx` until it closes; a rejected one changes nothing.
async fn reload_loop(
    mut running: Config,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Config, String>>,
    targets: reload::Targets,
    audit: Arc<audit::Audit>,
) {
    while let Some(next) = rx.recv().await {
        let outcome =
            next.and_then(|new| reload::apply(&running, &new, &targets).map_err(|e| e.to_string()));
        match outcome {
            Ok((effective, out)) => {
                running = effective;
                tracing::info!(applied = ?out.applied, need_restart = ?out.need_restart, "configuration reloaded");
                audit.record(
                    "config.reload",
                    serde_json::json!({"applied": out.applied, "need_restart": out.need_restart}),
                );
                if !out.need_restart.is_empty() {
                    tracing::warn!(keys = ?out.need_restart, "changed settings take effect only after a restart; their running values stay");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "configuration reload rejected; the running configuration stays");
                audit.record("config.reload_rejected", serde_json::json!({"error": e}));
            }
        }
    }
}

/// The watchdog thread and the runtime tasks it samples; [`Watched::stop`] ends them all.
struct Watched {
    /// None while the watchdog is off.
    watchdog: Option<watchdog::Watchdog>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watched {
    fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping the handle wakes the thread, which then ends; nothing to wait for.
        drop(self.watchdog);
    }
}

/// Starts the probes (runtime heartbeat, Raft core query) and the watchdog thread over
/// them, the request counters and openraft's metrics (nothing when `watchdog_stall_secs`
/// is 0).
fn start_watchdog(
    cfg: &Config,
    node: &Arc<ClusterNode>,
    requests: Arc<watchdog::RequestProgress>,
    health: Arc<watchdog::Health>,
    metrics: Option<&metrics::Metrics>,
) -> Result<Watched, DaemonError> {
    use watchdog::{RuntimeProbes, Sample, StallGauge, Thresholds, Watchdog};
    let thresholds = Thresholds::from_secs(cfg.watchdog_stall_secs, cfg.watchdog_abort_secs);
    let gauge = metrics.and_then(|m| match StallGauge::register(m.registry()) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(error = %e, "cannot register kms_watchdog_stalled");
            None
        }
    });
    if !thresholds.enabled() {
        tracing::info!("watchdog off (watchdog_stall_secs = 0): /livez answers 200 while the process serves HTTP");
        return Ok(Watched {
            watchdog: None,
            tasks: Vec::new(),
        });
    }
    let probes = Arc::new(RuntimeProbes::default());
    let tasks = vec![
        tokio::spawn(probes.clone().heartbeat()),
        tokio::spawn(probes.clone().raft_probe(node.raft().clone())),
    ];
    let raft_metrics = node.raft().metrics();
    let sample = move || {
        let applied = {
            let m = raft_metrics.borrow();
            m.running_state
                .is_ok()
                .then(|| m.last_applied.map(|l| l.index))
        };
        [
            probes.runtime_sample(),
            probes.raft_sample(),
            applied.map_or_else(Sample::default, |a| probes.apply_sample(a)),
            requests.sample(),
        ]
    };
    let watchdog = Watchdog::spawn(thresholds, watchdog::SAMPLE_INTERVAL, sample, health, gauge)?;
    Ok(Watched {
        watchdog: Some(watchdog),
        tasks,
    })
}

/// Runs the daemon until `shutdown` resolves. `on_bound` is told the bound addresses.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    on_bound: impl FnOnce(&Bound),
) -> Result<(), DaemonError> {
    run_with(cfg, shutdown, Control::default(), on_bound).await
}

/// [`run`] with runtime hooks (config reload, log level).
pub async fn run_with(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    control: Control,
    on_bound: impl FnOnce(&Bound),
) -> Result<(), DaemonError> {
    cfg.validate()?;
    let admin_token = cfg.admin_token()?;
    let audit = audit::Audit::new(cfg.node_id, cfg.audit_log.as_deref());
    if admin_token.is_none() && !cfg.admin_listen.ip().is_loopback() {
        tracing::warn!(admin_listen = %cfg.admin_listen, "the admin API listens beyond loopback without a token: /status and /clients are open to anyone who can reach it; set admin_token or admin_token_file");
    }
    let catalog = Arc::new(load_catalog(&cfg)?);
    let policy = policy_from(&cfg, &catalog)?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| DaemonError::DataDir {
        dir: cfg.data_dir.clone(),
        source,
    })?;
    restrict_data_dir(&cfg.data_dir);
    let mut node_cfg = NodeConfig::new(cfg.node_id, cfg.cluster_listen, cfg.data_dir.clone());
    node_cfg.advertise = cfg
        .cluster_advertise
        .clone()
        .unwrap_or_else(|| cfg.cluster_listen.to_string());
    node_cfg.peers = cfg.peer_map()?;
    node_cfg.tls = cfg.cluster_tls()?;
    if node_cfg.tls.is_none() && !cfg.cluster_listen.ip().is_loopback() {
        tracing::warn!(
            cluster_listen = %cfg.cluster_listen,
            "cluster traffic (Raft, forwarding, membership) is plaintext and unauthenticated \
             on a non-loopback address: set tls_ca, tls_cert and tls_key (README, Security)"
        );
    }
    let membership_events = kms_cluster::events::channel();
    let audit_membership =
        audit::spawn_membership_forwarder(audit.clone(), membership_events.subscribe());
    node_cfg.membership_events = Some(membership_events);
    let kube_discovery = match cfg.discovery.as_str() {
        "kubernetes" => Some(discovery::KubeSettings::from_config(&cfg)?),
        _ => None,
    };
    if kube_discovery.is_some() {
        node_cfg.bootstrap = kms_cluster::node::Bootstrap::External;
    }
    let advertise = node_cfg.advertise.clone();
    node_cfg.wal.cache_bytes = usize::try_from(cfg.cache_mib * 1024 * 1024).unwrap_or(usize::MAX);
    node_cfg.wal.direct_io = cfg.log_direct_io;
    node_cfg.heartbeat_ms = cfg.heartbeat_ms;
    node_cfg.election_timeout_ms = (cfg.election_timeout_ms, cfg.election_timeout_ms * 2);
    node_cfg.snapshot_every = cfg.snapshot_every;
    node_cfg.commit_timeout = Duration::from_millis(cfg.commit_timeout_ms);
    node_cfg.max_batch = cfg.max_batch;
    node_cfg.max_inflight = cfg.max_inflight;
    node_cfg.quorum_loss =
        cfg.quorum_loss
            .parse()
            .map_err(|message| config::ConfigError::Invalid {
                key: "quorum_loss",
                message,
            })?;
    let node = ClusterNode::start(node_cfg)
        .await
        .map_err(|source| DaemonError::Cluster {
            dir: cfg.data_dir.clone(),
            source,
        })?;
    let backend = Backend::new(node.clone());
    let service = Arc::new(Service::new(catalog, policy, backend.clone()));
    let counters = Arc::new(stats::Counters::default());
    let gate = access::Gate::new(cfg.access_policy()?);
    let metrics = cfg
        .metrics
        .then(|| Arc::new(metrics::Metrics::new(cfg.node_id)));
    let health = Arc::new(watchdog::Health::default());
    let requests = Arc::new(watchdog::RequestProgress::default());

    // Bind every KMS address; with the default pair, one family missing is a warning.
    let defaults = cfg.listen == Config::default().listen;
    let mut listeners = Vec::new();
    let mut kms_addrs = Vec::new();
    for addr in &cfg.listen {
        match listener::bind(*addr) {
            Ok(l) => {
                kms_addrs.push(l.local_addr().unwrap_or(*addr));
                listeners.push(l);
            }
            Err(e) if defaults && cfg.listen.len() > 1 => {
                tracing::warn!(%addr, error = %e, "cannot listen on default address; continuing")
            }
            Err(source) => {
                return Err(DaemonError::Bind {
                    addr: *addr,
                    source,
                })
            }
        }
    }
    if listeners.is_empty() {
        return Err(DaemonError::Bind {
            addr: cfg.listen[0],
            source: std::io::Error::other("no KMS listener could be bound"),
        });
    }
    let admin_socket = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: cfg.admin_listen,
            source,
        })?;
    let admin_addr = admin_socket.local_addr().unwrap_or(cfg.admin_listen);

    let port = kms_addrs.first().map(|a| a.port()).unwrap_or(1688);
    let ctx = Listener::new(
        service.clone(),
        HostOptions {
            ndr64: cfg.ndr64,
            btfn: cfg.btfn,
            port,
            max_pdu: cfg.max_pdu_bytes,
        },
        Limits {
            max_pdu: cfg.max_pdu_bytes,
            read_timeout: Duration::from_millis(cfg.read_timeout_ms),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            max_connections: cfg.max_connections,
            lifetime: Duration::from_millis(cfg.connection_lifetime_ms),
        },
        counters.clone(),
        metrics.clone(),
        gate.clone(),
        requests.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    // Forget idle client addresses once a minute so the per-IP table stays bounded.
    let sweeper = {
        let gate = gate.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                gate.sweep(now_ms());
            }
        })
    };
    let lifecycle_task = metrics
        .as_ref()
        .map(|m| lifecycle_metrics::spawn(service.clone(), m.clone()));
    let discovery_task = kube_discovery.map(|settings| {
        tokio::spawn(discovery::run(
            node.clone(),
            settings,
            advertise,
            audit.clone(),
            stop_rx.clone(),
        ))
    });
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(ctx.clone().serve(l, stop_rx.clone())));
    }
    let reloader = control.reloads.map(|rx| {
        tokio::spawn(reload_loop(
            cfg.clone(),
            rx,
            reload::Targets {
                gate: gate.clone(),
                listener: ctx.clone(),
                service: service.clone(),
                set_log_level: control.set_log_level.clone(),
            },
            audit.clone(),
        ))
    });
    let ready = Arc::new(AtomicBool::new(true));
    let admin_state = admin::AdminState {
        service: service.clone(),
        counters: counters.clone(),
        facts: Arc::new(report::HostFacts {
            listening: kms_addrs.clone(),
            dns_publishing: cfg.dns_publish,
            data_dir: cfg.data_dir.clone(),
        }),
        ready: ready.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        audit: audit.clone(),
    };
    let admin_app = admin::protect(
        admin::router(admin_state),
        admin::AdminAuth::new(admin_token.as_deref(), audit.clone()),
    );
    let admin_task = tokio::spawn(admin_listener::serve(
        admin_socket,
        admin_app,
        admin_listener::AdminLimits::from_config(&cfg),
        counters.clone(),
        stop_rx.clone(),
    ));
    let bound = Bound {
        kms: kms_addrs.clone(),
        admin: admin_addr,
        cluster: node.grpc_addr(),
    };
    let dns_publisher = dns::Publisher::spawn(&cfg, port);
    let watch = start_watchdog(&cfg, &node, requests, health, metrics.as_deref())?;
    #[cfg(feature = "fault-injection")]
    tracing::warn!("this kmsd is built with the test-only `fault-injection` feature (routes under /debug/fault/); never run it in production");
    tracing::info!(kms = ?bound.kms, admin = %bound.admin, data_dir = %cfg.data_dir.display(), licensed = ?service.policy().licensed, "kmsd ready");
    if cfg.clock_offset_secs != 0 {
        tracing::warn!(
            clock_offset_secs = cfg.clock_offset_secs,
            "test clock offset in effect: activations are stamped and counts read this far from the real time (tests and drills only)"
        );
    }
    on_bound(&bound);

    // Raft's metrics change with every log entry; watching them for a fatal error runs as a
    // task on the runtime, not in the caller's `block_on` thread, which would otherwise be
    // woken (a context switch) several times per activation.
    let mut fatal_watch = tokio::spawn({
        let node = node.clone();
        async move { node.fatal().await }
    });
    let fatal = tokio::select! {
        _ = shutdown => None,
        e = &mut fatal_watch => Some(e.unwrap_or_else(|e| format!("fatal-error watch ended: {e}"))),
    };
    fatal_watch.abort();
    if let Some(e) = &fatal {
        tracing::error!(error = %e, "raft stopped with a fatal error; shutting down");
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    ready.store(false, std::sync::atomic::Ordering::Relaxed);
    // Shutdown has its own deadlines (commit timeout, hand-over, the supervisor's grace).
    watch.stop();
    if let Some(p) = dns_publisher {
        p.withdraw().await;
    }
    let _ = stop_tx.send(true);
    sweeper.abort();
    if let Some(t) = &lifecycle_task {
        t.abort();
    }
    if let Some(r) = reloader {
        r.abort();
    }
    if let Some(t) = discovery_task {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = admin_task.await;
    // Give in-flight activations a moment to be answered before the final flush.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(handover) = node.shutdown().await {
        let (event, details) = audit::handover_record(&handover);
        audit.record(event, details);
    }
    audit_membership.abort();
    tracing::info!("state flushed; bye");
    match fatal {
        Some(e) => Err(DaemonError::Fatal(e)),
        None => Ok(()),
    }
}

/// Makes the data directory readable by its owner only: it holds the client inventory
/// (machine names, client machine ids) and the cluster's log. The directory and every
/// directory in it become 0700, every file 0600 (files written from now on are created so by
/// [`owner_only_files`]). Failing to do so (e.g. a mounted volume owned by another user) is
/// logged, not fatal.
fn restrict_data_dir(dir: &std::path::Path) {
    if let Err(e) = restrict_tree(dir, 0) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot make the data directory owner-only (0700, files 0600); other local users may read the client inventory");
    }
}

fn restrict_tree(dir: &std::path::Path, depth: usize) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // The data directory is a few levels deep (raft/log, raft/snapshots); deeper is not ours.
    if depth > 4 {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            restrict_tree(&entry.path(), depth + 1)?;
        } else if kind.is_file() {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Sets the process's file creation mask to 077, so that every file kmsd creates (log
/// segments, snapshots, outbox, identity, audit log) is 0600 and every directory 0700.
/// Call it first thing in the binary.
pub fn owner_only_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}
