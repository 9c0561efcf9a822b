//! The activation-lifecycle metrics: machines per count group and lifecycle state, the
//! renewal-age histogram, and the alert thresholds the rules compare them with.
//!
//! Owns when and where they are computed. Counting states walks every inventory record, which
//! at a million clients takes a noticeable fraction of a second, so it never runs on a scrape
//! or on the apply path: [`spawn`] recomputes a [`LifecycleView`] every [`REFRESH`] on the
//! blocking pool from an O(1) clone of the state, at the state's clock (`clock_offset_secs`
//! included), and scrapes render the last view. The figures are replicated (every node holds
//! the same inventory), so every node exports the same values; rules take `max`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_state::lifecycle::{GroupLifecycle, Lifecycle, RENEWAL_AGE_BUCKETS_SECS};
use prometheus::{IntGauge, IntGaugeVec, Registry};

use crate::metrics::{gauge, gauge_vec, Metrics};
use crate::service::Service;

/// How often the view is recomputed.
pub const REFRESH: Duration = Duration::from_secs(15);

/// One computation of the lifecycle figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleView {
    /// Per inventory group, by name.
    pub groups: Vec<(String, GroupLifecycle)>,
    /// `alert_expiring_machines`.
    pub alert_expiring: u32,
    /// `alert_failing_machines`.
    pub alert_failing: u32,
    /// The expiring horizon, seconds.
    pub horizon_secs: u64,
}

/// The lifecycle families of the registry, plus the histogram rendered as text.
pub struct LifecycleMetrics {
    clients: IntGaugeVec,
    threshold: IntGaugeVec,
    horizon: IntGauge,
    /// The histogram's text, appended to the exposition (it is set from counts, not
    /// observed, which the registry's histogram type cannot do).
    histogram: Mutex<String>,
}

impl LifecycleMetrics {
    /// Registers the families in `r`.
    pub fn new(r: &Registry) -> Self {
        LifecycleMetrics {
            clients: gauge_vec(
                r,
                "kms_clients_lifecycle",
                "Machines in the client inventory per count group and lifecycle state (active, overdue, expiring, expired, failing); cluster-wide, the same on every node.",
                &["count_group", "state"],
            ),
            threshold: gauge_vec(
                r,
                "kms_lifecycle_alert_threshold",
                "Machines of one count group in a lifecycle state that raise its alert (alert_expiring_machines, alert_failing_machines).",
                &["state"],
            ),
            horizon: gauge(
                r,
                "kms_lifecycle_expiring_horizon_seconds",
                "A machine whose activation ends within this is expiring (expiring_horizon_days).",
            ),
            histogram: Mutex::new(String::new()),
        }
    }

    /// Replaces the exported figures with `view`'s.
    pub fn set(&self, view: &LifecycleView) {
        self.clients.reset();
        for (group, g) in &view.groups {
            for state in Lifecycle::ALL {
                self.clients
                    .with_label_values(&[group.as_str(), state.label()])
                    .set(i64::try_from(g.count(state)).unwrap_or(i64::MAX));
            }
        }
        self.threshold
            .with_label_values(&["expiring"])
            .set(i64::from(view.alert_expiring));
        self.threshold
            .with_label_values(&["failing"])
            .set(i64::from(view.alert_failing));
        self.horizon
            .set(i64::try_from(view.horizon_secs).unwrap_or(i64::MAX));
        *self.histogram.lock().unwrap_or_else(|p| p.into_inner()) = histogram_text(&view.groups);
    }

    /// The renewal-age histogram in the text exposition format (empty before the first view).
    pub fn histogram_text(&self) -> String {
        self.histogram
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// `kms_client_renewal_age_seconds` per group: cumulative buckets, sum and count.
fn histogram_text(groups: &[(String, GroupLifecycle)]) -> String {
    const NAME: &str = "kms_client_renewal_age_seconds";
    let mut out = String::new();
    if groups.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "# HELP {NAME} Time since each inventoried machine's last successful activation, per count group; cluster-wide, the same on every node."
    );
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    for (group, g) in groups {
        let label = escape_label(group);
        let mut cumulative = 0u64;
        for (bound, n) in RENEWAL_AGE_BUCKETS_SECS.iter().zip(g.age_buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{NAME}_bucket{{count_group=\"{label}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{NAME}_bucket{{count_group=\"{label}\",le=\"+Inf\"}} {}",
            g.age_count
        );
        let _ = writeln!(
            out,
            "{NAME}_sum{{count_group=\"{label}\"}} {}",
            g.age_sum_secs
        );
        let _ = writeln!(
            out,
            "{NAME}_count{{count_group=\"{label}\"}} {}",
            g.age_count
        );
    }
    out
}

/// A label value as the text format wants it (count groups are catalog names, but be safe).
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Computes the view now (on the blocking pool) from a clone of the state.
pub async fn compute(service: &Service) -> LifecycleView {
    let policy = service.policy();
    let now_ms = policy.state_time(crate::now_ms());
    let state = service.backend().read(|s| s.clone());
    let lifecycle = policy.lifecycle;
    let groups = tokio::task::spawn_blocking(move || state.lifecycle_summary(now_ms, &lifecycle))
        .await
        .unwrap_or_default();
    LifecycleView {
        groups,
        alert_expiring: policy.alert_expiring_machines,
        alert_failing: policy.alert_failing_machines,
        horizon_secs: lifecycle.expiring_horizon_ms / 1000,
    }
}

/// Recomputes the view every [`REFRESH`] (first at once) until the task is aborted.
pub fn spawn(service: Arc<Service>, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let view = compute(&service).await;
            metrics.lifecycle().set(&view);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_well_formed() {
        let mut g = GroupLifecycle::default();
        g.age_buckets[0] = 2;
        g.age_buckets[2] = 1;
        g.age_overflow = 1;
        g.age_count = 4;
        g.age_sum_secs = 1234;
        let text = histogram_text(&[("windows".into(), g)]);
        assert!(text.contains("# TYPE kms_client_renewal_age_seconds histogram"));
        assert!(text.contains(
            "kms_client_renewal_age_seconds_bucket{count_group=\"windows\",le=\"86400\"} 2"
        ));
        assert!(text.contains(
            "kms_client_renewal_age_seconds_bucket{count_group=\"windows\",le=\"604800\"} 2"
        ));
        assert!(text.contains(
            "kms_client_renewal_age_seconds_bucket{count_group=\"windows\",le=\"691200\"} 3"
        ));
        assert!(text.contains(
            "kms_client_renewal_age_seconds_bucket{count_group=\"windows\",le=\"15552000\"} 3"
        ));
        assert!(text.contains(
            "kms_client_renewal_age_seconds_bucket{count_group=\"windows\",le=\"+Inf\"} 4"
        ));
        assert!(text.contains("kms_client_renewal_age_seconds_sum{count_group=\"windows\"} 1234"));
        assert!(text.contains("kms_client_renewal_age_seconds_count{count_group=\"windows\"} 4"));
        assert_eq!(histogram_text(&[]), "");
    }

    #[test]
    fn every_state_is_exported_for_every_group() {
        let r = Registry::new();
        let m = LifecycleMetrics::new(&r);
        let mut g = GroupLifecycle::default();
        g.states[2] = 7;
        m.set(&LifecycleView {
            groups: vec![("office".into(), g)],
            alert_expiring: 1,
            alert_failing: 10,
            horizon_secs: 2_592_000,
        });
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&r.gather(), &mut text)
            .unwrap();
        for state in ["active", "overdue", "expired", "failing"] {
            assert!(text.contains(&format!(
                "kms_clients_lifecycle{{count_group=\"office\",state=\"{state}\"}} 0"
            )));
        }
        assert!(text.contains("kms_clients_lifecycle{count_group=\"office\",state=\"expiring\"} 7"));
        assert!(text.contains("kms_lifecycle_alert_threshold{state=\"failing\"} 10"));
        assert!(text.contains("kms_lifecycle_expiring_horizon_seconds 2592000"));
        // A group that left the inventory stops being exported.
        m.set(&LifecycleView::default());
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&r.gather(), &mut text)
            .unwrap();
        assert!(!text.contains("count_group=\"office\""));
    }
}
