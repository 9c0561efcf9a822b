//! Prometheus metrics (`GET /metrics`): names and labels are documented in
//! `docs/metrics.md`, which dashboards and alert rules rely on — rename nothing.
//!
//! Request-path metrics (requests by result, latency, refusals) are updated by the
//! listener as requests are answered. Everything else — the replicated statistics, counts,
//! Raft view, listener counters — is read at scrape time from the same [`StatusReport`]
//! `/status` serves, so the two can never disagree.

use crate::access::Refusal;
use crate::stats::{CounterSnapshot, DecodeKind};
use kms_api::StatusReport;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;
use std::time::Duration;

/// How a request ended, as `kms_requests_total{result}` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// Answered with a count at or above the client's minimum.
    Activated,
    /// Answered, but the count is below what the client requires.
    CountTooLow,
    /// Refused: product unknown or not licensed on this host.
    RefusedProduct,
    /// Refused for another reason, or not answered at all.
    Error,
}

impl RequestResult {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            RequestResult::Activated => "activated",
            RequestResult::CountTooLow => "count_too_low",
            RequestResult::RefusedProduct => "refused_product",
            RequestResult::Error => "error",
        }
    }
}

/// Labels of one answered (or failed) request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLabels<'a> {
    /// Count group, `unknown` when the product is not in the catalog.
    pub count_group: &'a str,
    /// Protocol major version.
    pub protocol: u16,
    /// License state label the client reported.
    pub license_state: &'a str,
    /// Result.
    pub result: RequestResult,
}

/// Scrape-time families, refreshed from a status report on every scrape.
struct Scraped {
    cluster_received: IntGauge,
    cluster_failed: IntGauge,
    cluster_by_state: IntGaugeVec,
    group_received: IntGaugeVec,
    group_failed: IntGaugeVec,
    current_count: IntGaugeVec,
    minimum: IntGaugeVec,
    cap: IntGaugeVec,
    licensed: IntGaugeVec,
    distinct: IntGaugeVec,
    open_connections: IntGauge,
    accepted: IntCounter,
    timeouts: IntCounterVec,
    refused: IntCounterVec,
    decode_errors: IntCounterVec,
    admin_open: IntGauge,
    admin_refused: IntCounter,
    admin_timeouts: IntCounterVec,
    raft_role: IntGaugeVec,
    raft_membership_state: IntGaugeVec,
    raft_term: IntGauge,
    raft_has_leader: IntGauge,
    raft_leader_id: IntGaugeVec,
    raft_node_id: IntGauge,
    raft_last_log: IntGauge,
    raft_commit: IntGauge,
    raft_applied: IntGauge,
    raft_snapshot: IntGauge,
    raft_voters: IntGauge,
    raft_learners: IntGauge,
    raft_lag: IntGaugeVec,
    raft_quorum: IntGauge,
    raft_stale: prometheus::Gauge,
    raft_outbox: IntGauge,
    data_dir_bytes: IntGauge,
    disk_available: IntGauge,
    disk_size: IntGauge,
}

/// The daemon's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    refused: IntCounterVec,
    duration: HistogramVec,
    scraped: Mutex<Scraped>,
    lifecycle: crate::lifecycle_metrics::LifecycleMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Roles `kms_raft_role` always exports (one-hot).
const ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "shutdown"];

/// States `kms_raft_membership_state` always exports (one-hot).
const MEMBERSHIP_STATES: [&str; 3] = ["stable", "pending", "joint"];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

/// Registers an integer gauge.
pub(crate) fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid metric"))
}

/// Registers an integer gauge family with `labels`.
pub(crate) fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Raises a counter mirrored from an atomic to `value` (counters only go up).
fn mirror(c: &IntCounter, value: u64) {
    let now = c.get();
    if value > now {
        c.inc_by(value - now);
    }
}

impl Metrics {
    /// Builds the registry; `node_id` goes into `kms_build_info`.
    pub fn new(node_id: u64) -> Self {
        let r = Registry::new();
        let build = gauge_vec(
            &r,
            "kms_build_info",
            "kmsd build and node identity; always 1.",
            &["version", "node_id"],
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), &node_id.to_string()])
            .set(1);
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            let _ = r.register(Box::new(pc));
        }
        let requests = counter_vec(
            &r,
            "kms_requests_total",
            "KMS requests handled by this node, by count group, protocol, reported license state and result.",
            &["count_group", "protocol", "license_state", "result"],
        );
        let refused = counter_vec(
            &r,
            "kms_refused_requests_total",
            "Requests refused by this node, by product group (unknown when not in the catalog).",
            &["product_group"],
        );
        let duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "kms_activation_duration_seconds",
                    "Time from a complete request PDU to the reply being ready, replication included.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["protocol"],
            )
            .expect("valid metric"),
        );
        let scraped = Scraped {
            cluster_received: gauge(&r, "kms_cluster_requests_received", "Total requests received, cluster-wide (replicated; same on every node)."),
            cluster_failed: gauge(&r, "kms_cluster_requests_failed", "Failed requests received, cluster-wide (replicated)."),
            cluster_by_state: gauge_vec(&r, "kms_cluster_requests_by_license_state", "Answered requests by the license state clients reported, cluster-wide (replicated).", &["license_state"]),
            group_received: gauge_vec(&r, "kms_cluster_group_requests_received", "Total requests per count group, cluster-wide (replicated).", &["count_group"]),
            group_failed: gauge_vec(&r, "kms_cluster_group_requests_failed", "Failed requests per count group, cluster-wide (replicated).", &["count_group"]),
            current_count: gauge_vec(&r, "kms_current_count", "Current count as clients receive it (capped).", &["count_group"]),
            minimum: gauge_vec(&r, "kms_count_minimum", "Count the clients of the group need to activate.", &["count_group"]),
            cap: gauge_vec(&r, "kms_count_cap", "Largest count the host reports (twice the minimum).", &["count_group"]),
            licensed: gauge_vec(&r, "kms_count_group_licensed", "1 when this host is licensed for a product of the count group.", &["count_group"]),
            distinct: gauge_vec(&r, "kms_distinct_clients", "Distinct client machine IDs seen in the last 30 days (uncapped).", &["count_group"]),
            open_connections: gauge(&r, "kms_open_connections", "Client connections open now."),
            accepted: reg(&r, IntCounter::new("kms_connections_accepted_total", "Client connections accepted.").expect("valid metric")),
            timeouts: counter_vec(&r, "kms_connection_timeouts_total", "Client connections closed by a timeout.", &["kind"]),
            refused: counter_vec(&r, "kms_connections_refused_total", "Client connections refused or closed by access control, by reason.", &["reason"]),
            decode_errors: counter_vec(&r, "kms_decode_errors_total", "Malformed client input, by kind.", &["kind"]),
            admin_open: gauge(&r, "kms_admin_open_connections", "Admin API connections open now."),
            admin_refused: reg(&r, IntCounter::new("kms_admin_connections_refused_total", "Admin API connections closed at once because admin_max_connections were open.").expect("valid metric")),
            admin_timeouts: counter_vec(&r, "kms_admin_connection_timeouts_total", "Admin API connections closed by a timeout (header: no whole request header in time; idle: no request in time).", &["kind"]),
            raft_role: gauge_vec(&r, "kms_raft_role", "1 for this node's current Raft role.", &["role"]),
            raft_membership_state: gauge_vec(
                &r,
                "kms_raft_membership_state",
                "1 for the state of the membership in effect: stable, pending (not committed yet) or joint (a change under way).",
                &["state"],
            ),
            raft_term: gauge(&r, "kms_raft_term", "Current Raft term."),
            raft_has_leader: gauge(&r, "kms_raft_has_leader", "1 when this node knows a leader."),
            raft_leader_id: gauge_vec(&r, "kms_raft_leader_id", "Id of the known leader (absent when none).", &[]),
            raft_node_id: gauge(&r, "kms_raft_node_id", "This node's id."),
            raft_last_log: gauge(&r, "kms_raft_last_log_index", "Last log index on this node."),
            raft_commit: gauge(&r, "kms_raft_commit_index", "Highest log index known committed."),
            raft_applied: gauge(&r, "kms_raft_applied_index", "Highest log index applied to this node's state."),
            raft_snapshot: gauge(&r, "kms_raft_snapshot_index", "Log index covered by the latest snapshot."),
            raft_voters: gauge(&r, "kms_raft_voters", "Voting members."),
            raft_learners: gauge(&r, "kms_raft_learners", "Non-voting members."),
            raft_lag: gauge_vec(&r, "kms_raft_replication_lag_entries", "Leader only: entries a member is behind the leader's last log index.", &["follower"]),
            raft_quorum: gauge(&r, "kms_raft_quorum_reachable", "1 when this node knows a leader backed by a quorum."),
            raft_stale: reg(&r, prometheus::Gauge::new("kms_raft_stale_seconds", "Time this node has been without a quorum-backed leader.").expect("valid metric")),
            raft_outbox: gauge(&r, "kms_raft_outbox_commands", "Requests answered without quorum waiting to be replayed."),
            data_dir_bytes: gauge(&r, "kms_data_dir_bytes", "Bytes of the files in this node's data directory (log segments, snapshot)."),
            disk_available: gauge(&r, "kms_data_filesystem_avail_bytes", "Bytes still free for kmsd on the filesystem holding the data directory."),
            disk_size: gauge(&r, "kms_data_filesystem_size_bytes", "Size of the filesystem holding the data directory, in bytes."),
        };
        let lifecycle = crate::lifecycle_metrics::LifecycleMetrics::new(&r);
        Self {
            registry: r,
            requests,
            refused,
            duration,
            scraped: Mutex::new(scraped),
            lifecycle,
        }
    }

    /// Records one request (called on the request path).
    pub fn request(&self, l: RequestLabels<'_>, took: Duration, refused_group: Option<&str>) {
        let protocol = protocol_label(l.protocol);
        self.requests
            .with_label_values(&[l.count_group, protocol, l.license_state, l.result.label()])
            .inc();
        if let Some(g) = refused_group {
            self.refused.with_label_values(&[g]).inc();
        }
        let h: Histogram = self.duration.with_label_values(&[protocol]);
        h.observe(took.as_secs_f64());
    }

    /// Refreshes the scrape-time families from `status` and `counters`, then renders the
    /// text exposition format.
    pub fn render(&self, status: &StatusReport, counters: &CounterSnapshot) -> String {
        {
            let s = self.scraped.lock().unwrap_or_else(|p| p.into_inner());
            s.update(status, counters);
        }
        let mut out = String::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out.push_str(&self.lifecycle.histogram_text());
        out
    }

    /// The activation-lifecycle families (set by `lifecycle_metrics::spawn`).
    pub fn lifecycle(&self) -> &crate::lifecycle_metrics::LifecycleMetrics {
        &self.lifecycle
    }

    /// The registry (tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

fn protocol_label(major: u16) -> &'static str {
    match major {
        4 => "4",
        5 => "5",
        6 => "6",
        _ => "other",
    }
}

fn opt(v: Option<u64>) -> i64 {
    v.map(|v| v as i64).unwrap_or(0)
}

impl Scraped {
    fn update(&self, st: &StatusReport, c: &CounterSnapshot) {
        self.cluster_received.set(st.stats.total_requests as i64);
        self.cluster_failed.set(st.stats.failed_requests as i64);
        for (state, n) in &st.stats.requests_by_license_state {
            self.cluster_by_state
                .with_label_values(&[state])
                .set(*n as i64);
        }
        for g in &st.groups {
            let l = [g.name.as_str()];
            self.group_received
                .with_label_values(&l)
                .set(g.stats.total_requests as i64);
            self.group_failed
                .with_label_values(&l)
                .set(g.stats.failed_requests as i64);
            self.current_count
                .with_label_values(&l)
                .set(g.current_count as i64);
            self.minimum.with_label_values(&l).set(g.minimum as i64);
            self.cap.with_label_values(&l).set(g.cap as i64);
            self.licensed
                .with_label_values(&l)
                .set(i64::from(!g.licensed_products.is_empty()));
            self.distinct
                .with_label_values(&l)
                .set(g.active_clients as i64);
        }
        self.open_connections.set(c.open_connections as i64);
        mirror(&self.accepted, c.accepted);
        mirror(&self.timeouts.with_label_values(&["idle"]), c.idle_timeouts);
        mirror(&self.timeouts.with_label_values(&["read"]), c.read_timeouts);
        mirror(
            &self.timeouts.with_label_values(&["lifetime"]),
            c.lifetime_timeouts,
        );
        for (reason, n) in [
            (Refusal::NotAllowed, c.refused_not_allowed),
            (Refusal::PerIpLimit, c.refused_per_ip_limit),
            (Refusal::GlobalLimit, c.refused_global_limit),
            (Refusal::RateLimited, c.refused_rate_limited),
        ] {
            mirror(&self.refused.with_label_values(&[reason.label()]), n);
        }
        for kind in DecodeKind::ALL {
            let n = match kind {
                DecodeKind::Header => c.decode_errors_header,
                DecodeKind::RpcFault => c.decode_errors_rpc_fault,
                DecodeKind::InvalidRequest => c.decode_errors_invalid_request,
                DecodeKind::Protocol => c.decode_errors_protocol,
            };
            mirror(&self.decode_errors.with_label_values(&[kind.label()]), n);
        }

        self.admin_open.set(c.admin_open_connections as i64);
        mirror(&self.admin_refused, c.admin_refused);
        mirror(
            &self.admin_timeouts.with_label_values(&["header"]),
            c.admin_header_timeouts,
        );
        mirror(
            &self.admin_timeouts.with_label_values(&["idle"]),
            c.admin_idle_timeouts,
        );

        let r = &st.raft;
        for role in ROLES {
            self.raft_role
                .with_label_values(&[role])
                .set(i64::from(r.role == role));
        }
        for state in MEMBERSHIP_STATES {
            // Nodes that report no state (older peers' views) count as stable.
            let now = if r.membership_state.is_empty() {
                "stable"
            } else {
                r.membership_state.as_str()
            };
            self.raft_membership_state
                .with_label_values(&[state])
                .set(i64::from(now == state));
        }
        self.raft_term.set(r.term as i64);
        self.raft_has_leader.set(i64::from(r.leader.is_some()));
        self.raft_leader_id.reset();
        if let Some(l) = r.leader {
            self.raft_leader_id
                .with_label_values::<&str>(&[])
                .set(l as i64);
        }
        self.raft_node_id.set(r.node_id as i64);
        self.raft_last_log.set(opt(r.last_log_index));
        self.raft_commit.set(opt(r.commit_index));
        self.raft_applied.set(opt(r.applied_index));
        self.raft_snapshot.set(opt(r.snapshot_index));
        self.raft_voters.set(r.voters.len() as i64);
        self.raft_learners.set(r.learners.len() as i64);
        self.raft_lag.reset();
        let last = r.last_log_index.unwrap_or(0);
        for (id, matched) in r.replication.iter().filter(|(id, _)| **id != r.node_id) {
            let lag = last.saturating_sub(matched.unwrap_or(0));
            self.raft_lag
                .with_label_values(&[&id.to_string()])
                .set(lag as i64);
        }
        self.raft_quorum
            .set(i64::from(r.leader.is_some() && r.stale_ms == 0));
        self.raft_stale.set(r.stale_ms as f64 / 1000.0);
        self.raft_outbox.set(r.outbox_len as i64);
        let d = &st.storage;
        self.data_dir_bytes.set(d.data_dir_bytes as i64);
        self.disk_available.set(d.available_bytes as i64);
        self.disk_size.set(d.filesystem_bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_api::{GroupStatus, RaftView, RequestStats};
    use std::collections::BTreeMap;

    fn report() -> StatusReport {
        let mut by = BTreeMap::new();
        by.insert("licensed".to_string(), 7);
        by.insert("initial_grace".to_string(), 2);
        StatusReport {
            version: "0".into(),
            listening: vec![],
            port: 1688,
            dns_publishing: false,
            priority: "Normal".into(),
            activation_interval: 120,
            renewal_interval: 10080,
            licensed_groups: vec!["windows-10".into()],
            stats: RequestStats {
                total_requests: 10,
                failed_requests: 1,
                requests_by_license_state: by,
            },
            groups: vec![GroupStatus {
                name: "windows".into(),
                display: "Windows".into(),
                application_id: uuid::Uuid::nil(),
                epid: None,
                current_count: 30,
                active_clients: 30,
                minimum: 25,
                cap: 50,
                licensed_products: vec!["windows-10".into()],
                stats: RequestStats {
                    total_requests: 9,
                    failed_requests: 0,
                    requests_by_license_state: BTreeMap::new(),
                },
            }],
            connections: BTreeMap::new(),
            clock_offset_secs: 0,
            storage: kms_api::StorageView {
                data_dir_bytes: 104_857_600,
                available_bytes: 2_000_000_000,
                filesystem_bytes: 20_000_000_000,
            },
            raft: RaftView {
                node_id: 2,
                role: "leader".into(),
                term: 4,
                leader: Some(2),
                last_log_index: Some(100),
                membership_state: "joint".into(),
                replication: [(1, Some(90)), (2, Some(100)), (3, None)]
                    .into_iter()
                    .collect(),
                ..RaftView::default()
            },
        }
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn scrape_exposes_the_replicated_figures_and_raft_view() {
        let m = Metrics::new(2);
        let counters = CounterSnapshot {
            open_connections: 3,
            decode_errors_header: 2,
            ..CounterSnapshot::default()
        };
        let text = m.render(&report(), &counters);
        assert_eq!(value(&text, "kms_cluster_requests_received"), Some(10.0));
        assert_eq!(value(&text, "kms_cluster_requests_failed"), Some(1.0));
        assert_eq!(
            value(
                &text,
                "kms_cluster_requests_by_license_state{license_state=\"licensed\"}"
            ),
            Some(7.0)
        );
        assert_eq!(
            value(&text, "kms_current_count{count_group=\"windows\"}"),
            Some(30.0)
        );
        assert_eq!(
            value(&text, "kms_count_group_licensed{count_group=\"windows\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "kms_raft_role{role=\"leader\"}"), Some(1.0));
        assert_eq!(value(&text, "kms_raft_role{role=\"follower\"}"), Some(0.0));
        assert_eq!(
            value(&text, "kms_raft_membership_state{state=\"joint\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "kms_raft_membership_state{state=\"stable\"}"),
            Some(0.0)
        );
        assert_eq!(value(&text, "kms_raft_leader_id"), Some(2.0));
        assert_eq!(
            value(&text, "kms_raft_replication_lag_entries{follower=\"1\"}"),
            Some(10.0)
        );
        assert_eq!(
            value(&text, "kms_raft_replication_lag_entries{follower=\"3\"}"),
            Some(100.0)
        );
        assert_eq!(value(&text, "kms_raft_quorum_reachable"), Some(1.0));
        assert_eq!(value(&text, "kms_data_dir_bytes"), Some(104_857_600.0));
        assert_eq!(
            value(&text, "kms_data_filesystem_avail_bytes"),
            Some(2_000_000_000.0)
        );
        assert_eq!(
            value(&text, "kms_data_filesystem_size_bytes"),
            Some(20_000_000_000.0)
        );
        assert_eq!(value(&text, "kms_open_connections"), Some(3.0));
        assert_eq!(
            value(&text, "kms_decode_errors_total{kind=\"header\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "kms_build_info{node_id=\"2\",version=\"0.1.0\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn leaderless_node_drops_leader_series_and_lag() {
        let m = Metrics::new(1);
        let mut r = report();
        m.render(&r, &CounterSnapshot::default());
        r.raft.leader = None;
        r.raft.role = "candidate".into();
        r.raft.replication.clear();
        r.raft.stale_ms = 2500;
        let text = m.render(&r, &CounterSnapshot::default());
        assert_eq!(value(&text, "kms_raft_leader_id"), None);
        assert!(!text.contains("kms_raft_replication_lag_entries{"));
        assert_eq!(value(&text, "kms_raft_has_leader"), Some(0.0));
        assert_eq!(value(&text, "kms_raft_quorum_reachable"), Some(0.0));
        assert_eq!(value(&text, "kms_raft_stale_seconds"), Some(2.5));
    }

    #[test]
    fn request_path_counters_and_histogram() {
        let m = Metrics::new(1);
        let labels = RequestLabels {
            count_group: "windows",
            protocol: 6,
            license_state: "licensed",
            result: RequestResult::CountTooLow,
        };
        m.request(labels, Duration::from_millis(3), None);
        m.request(
            RequestLabels {
                result: RequestResult::RefusedProduct,
                count_group: "unknown",
                ..labels
            },
            Duration::from_millis(1),
            Some("unknown"),
        );
        let text = m.render(&report(), &CounterSnapshot::default());
        assert_eq!(
            value(&text, "kms_requests_total{count_group=\"windows\",license_state=\"licensed\",protocol=\"6\",result=\"count_too_low\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "kms_refused_requests_total{product_group=\"unknown\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "kms_activation_duration_seconds_count{protocol=\"6\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "kms_activation_duration_seconds_bucket{protocol=\"6\",le=\"0.0025\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn mirrored_counters_never_go_down() {
        let m = Metrics::new(1);
        let mut c = CounterSnapshot {
            accepted: 5,
            ..CounterSnapshot::default()
        };
        m.render(&report(), &c);
        c.accepted = 3;
        let text = m.render(&report(), &c);
        assert_eq!(value(&text, "kms_connections_accepted_total"), Some(5.0));
    }

    #[test]
    fn admin_listener_counters() {
        let m = Metrics::new(1);
        let c = CounterSnapshot {
            admin_open_connections: 2,
            admin_refused: 7,
            admin_header_timeouts: 3,
            admin_idle_timeouts: 1,
            ..CounterSnapshot::default()
        };
        let text = m.render(&report(), &c);
        assert_eq!(value(&text, "kms_admin_open_connections"), Some(2.0));
        assert_eq!(
            value(&text, "kms_admin_connections_refused_total"),
            Some(7.0)
        );
        assert_eq!(
            value(
                &text,
                "kms_admin_connection_timeouts_total{kind=\"header\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            value(&text, "kms_admin_connection_timeouts_total{kind=\"idle\"}"),
            Some(1.0)
        );
    }
}
