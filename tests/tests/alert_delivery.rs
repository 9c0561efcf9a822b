//! Alerts delivered end to end: Debian's Prometheus scrapes a real 3-node cluster with
//! the project's alert rules and sends to Debian's Alertmanager, which notifies a webhook
//! receiver owned by the test (127.0.0.1). Losing quorum (two of three nodes stopped with
//! SIGTERM) delivers a `firing` notification for `KmsQuorumLost` on the surviving node,
//! with its labels, summary and runbook link; restarting the two delivers the `resolved`
//! one. A healthy cluster delivers neither `KmsQuorumLost` nor `KmsNoLeader`.
//!
//! Machines pushed into the expiring state (the cluster's clock moved 155 days ahead with
//! `clock_offset_secs`, reloaded with SIGHUP) deliver a `firing` `KmsClientsExpiring` for
//! their count group; renewing them delivers the `resolved` one.
//!
//! The rules are `prometheus/kms-rules.yml` copied into a temporary directory with the
//! `for:` durations of the alerts under test (KmsNodeDown, KmsNoLeader, KmsQuorumLost;
//! KmsClientsExpiring) shortened to `for: 2s`, so the test takes seconds instead of minutes;
//! expressions, labels and annotations are the real ones. Alertmanager's configuration is the test's own: one
//! webhook receiver, grouped by alertname/job/instance, `group_wait` and `group_interval`
//! 1s, `send_resolved: true`.
//!
//! Needs the Debian packages `prometheus` and `prometheus-alertmanager`; fails, naming
//! the package, without them.

use kms_tests::alertmanager::{Alertmanager, Webhook};
use kms_tests::cluster::LocalCluster;
use kms_tests::observability::{read_repo_file, runbook_anchors, RULES_FILE};
use kms_tests::prom::{Options, Prometheus};
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a notification may take to arrive after its cause.
const DELIVERY: Duration = Duration::from_secs(60);
/// How long the healthy cluster is watched for false alarms: longer than a scrape, the
/// shortened `for:`, and Alertmanager's group wait together.
const QUIET: Duration = Duration::from_secs(6);
/// The alerts a lost quorum raises.
const QUORUM_ALERTS: [&str; 2] = ["KmsQuorumLost", "KmsNoLeader"];

/// Copies the project's rules into `dir` with the `for:` duration of each alert named in
/// `alerts` shortened to 2 seconds; returns the copy's path.
fn shortened_rules(dir: &Path, alerts: &[&str]) -> PathBuf {
    let rules = read_repo_file(RULES_FILE);
    let mut current = String::new();
    let mut shortened = Vec::new();
    let short = rules
        .lines()
        .map(|l| {
            if let Some(name) = l.trim().strip_prefix("- alert: ") {
                current = name.trim().to_string();
            }
            if l.trim().starts_with("for: ") && alerts.contains(&current.as_str()) {
                shortened.push(current.clone());
                l.replace(l.trim(), "for: 2s")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        shortened, alerts,
        "{RULES_FILE}: expected each of these alerts once, with a `for:`"
    );
    let path = dir.join("kms-rules.yml");
    std::fs::write(&path, short).expect("write rules");
    path
}

/// The test's Alertmanager configuration: everything to `webhook`, one group per
/// alertname/job/instance, resolved notifications included.
fn alertmanager_config(webhook: &str) -> String {
    format!(
        "route:\n  receiver: test-webhook\n  group_by: [alertname, job, instance]\n  \
         group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: test-webhook\n    webhook_configs:\n      \
         - url: '{webhook}'\n        send_resolved: true\n"
    )
}

/// The alerts of one notification body.
fn alerts(body: &Json) -> Vec<Json> {
    body["alerts"].as_array().cloned().unwrap_or_default()
}

/// True when `body` is a `status` notification carrying `alertname` for `instance` (or
/// without an instance label: KmsNoLeader aggregates by job).
fn notifies(body: &Json, status: &str, alertname: &str, instance: &str) -> bool {
    body["status"] == status
        && alerts(body).iter().any(|a| {
            let i = &a["labels"]["instance"];
            a["labels"]["alertname"] == alertname && (i == instance || i.is_null())
        })
}

/// The alert `name` of notification `body`, after checking what every delivered alert
/// carries: its severity, job `kms`, and a runbook link to a section that exists in
/// docs/runbook.md.
fn checked_alert(body: &Json, name: &str, severity: &str) -> Json {
    let alert = alerts(body)
        .into_iter()
        .find(|a| a["labels"]["alertname"] == name)
        .unwrap_or_else(|| panic!("no {name} in {body:#}"));
    assert_eq!(alert["labels"]["severity"], severity, "{alert:#}");
    assert_eq!(alert["labels"]["job"], "kms", "{alert:#}");
    let anchor = name.to_ascii_lowercase();
    let runbook = alert["annotations"]["runbook_url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        runbook.ends_with(&format!("runbook.md#{anchor}")),
        "runbook_url {runbook:?}"
    );
    assert!(
        runbook_anchors().contains(&anchor),
        "docs/runbook.md has no {name} section"
    );
    alert
}

/// Waits until Prometheus reports `n` active Alertmanagers.
fn wait_alertmanager_known(prom: &Prometheus, n: usize) {
    prom.wait_api(
        "Prometheus uses the Alertmanager",
        "alertmanagers",
        Duration::from_secs(20),
        |data| data["activeAlertmanagers"].as_array().map_or(0, Vec::len) == n,
    );
}

/// Starts Debian's Prometheus scraping every node of `cluster` with `rules`, sending to
/// `am`; waits until it scrapes all of them and knows the Alertmanager. Returns it and the
/// scrape targets (the `instance` labels).
fn watch(cluster: &LocalCluster, rules: PathBuf, am: &Alertmanager) -> (Prometheus, Vec<String>) {
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.admin.trim_start_matches("http://").to_string())
        .collect();
    let prom = Prometheus::start_with(
        &targets,
        Options {
            rules: Some(rules),
            alertmanager: Some(am.addr.clone()),
        },
    );
    prom.wait_targets_up(cluster.nodes.len(), Duration::from_secs(20));
    wait_alertmanager_known(&prom, 1);
    (prom, targets)
}

#[test]
fn quorum_loss_and_healing_are_delivered_to_the_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = shortened_rules(dir.path(), &["KmsNodeDown", "KmsNoLeader", "KmsQuorumLost"]);
    let webhook = Webhook::start();
    let am = Alertmanager::start(&alertmanager_config(&webhook.url));
    let mut cluster = LocalCluster::start(3, &[]);
    let (prom, targets) = watch(&cluster, rules, &am);

    // Healthy: the quorum alerts are neither pending in Prometheus nor delivered.
    std::thread::sleep(QUIET);
    let pending = prom.query("ALERTS{alertname=~\"KmsQuorumLost|KmsNoLeader\"}");
    assert!(pending.is_empty(), "healthy cluster: {pending:?}");
    let early: Vec<Json> = webhook
        .received()
        .into_iter()
        .filter(|b| {
            alerts(b)
                .iter()
                .any(|a| QUORUM_ALERTS.iter().any(|n| a["labels"]["alertname"] == *n))
        })
        .collect();
    assert!(early.is_empty(), "healthy cluster notified: {early:#?}");

    // Two of three nodes stop (SIGTERM): the survivor, a follower, loses its quorum.
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let survivor = (leader + 1) % 3;
    let stopped: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    for &i in &stopped {
        cluster.nodes[i].stop();
    }
    let instance = targets[survivor].as_str();
    let firing = webhook.wait_for("firing KmsQuorumLost notification", DELIVERY, |b| {
        notifies(b, "firing", "KmsQuorumLost", instance)
    });

    // The body Alertmanager delivers (webhook format version 4).
    assert_eq!(firing["version"], "4", "{firing:#}");
    assert_eq!(firing["receiver"], "test-webhook", "{firing:#}");
    assert_eq!(
        firing["groupLabels"]["alertname"], "KmsQuorumLost",
        "{firing:#}"
    );
    let alert = checked_alert(&firing, "KmsQuorumLost", "critical");
    assert_eq!(alert["status"], "firing", "{alert:#}");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains(instance),
        "summary {summary:?} should name {instance}"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains(instance)),
        "{alert:#}"
    );

    // Healing: both come back; every quorum alert that fired for the survivor resolves.
    for &i in &stopped {
        cluster.nodes[i].spawn_again();
    }
    for &i in &stopped {
        cluster.nodes[i].wait_ready();
    }
    let fired: Vec<&str> = QUORUM_ALERTS
        .into_iter()
        .filter(|n| {
            webhook
                .received()
                .iter()
                .any(|b| notifies(b, "firing", n, instance))
        })
        .collect();
    for name in &fired {
        let resolved = webhook.wait_for(&format!("resolved {name} notification"), DELIVERY, |b| {
            notifies(b, "resolved", name, instance)
        });
        for a in alerts(&resolved) {
            assert_eq!(a["status"], "resolved", "{resolved:#}");
            assert_eq!(a["labels"]["alertname"], *name, "{resolved:#}");
            assert!(
                a["endsAt"].as_str().is_some_and(|t| !t.starts_with("0001")),
                "resolved without endsAt: {resolved:#}"
            );
        }
    }
    eprintln!(
        "alert_delivery: {} notifications; fired and resolved for {instance}: {fired:?}",
        webhook.received().len()
    );
}

/// True when `body` is a `status` notification carrying `KmsClientsExpiring` for the
/// windows count group.
fn expiring_windows(body: &Json, status: &str) -> bool {
    body["status"] == status
        && alerts(body).iter().any(|a| {
            a["labels"]["alertname"] == "KmsClientsExpiring"
                && a["labels"]["count_group"] == "windows"
        })
}

#[test]
fn expiring_machines_and_their_renewal_are_delivered_to_the_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = shortened_rules(dir.path(), &["KmsClientsExpiring"]);
    let file = dir.path().join("kmsd.toml");
    std::fs::write(&file, "clock_offset_secs = 0\n").unwrap();
    let cfg = file.display().to_string();
    let webhook = Webhook::start();
    let am = Alertmanager::start(&alertmanager_config(&webhook.url));
    let cluster = LocalCluster::start(3, &["--config", &cfg]);
    let (_prom, _targets) = watch(&cluster, rules, &am);

    // Three lab machines activate, one through each node.
    let cmids: Vec<String> = (1..=3)
        .map(|i| format!("0e0e0e0e-0000-4000-8000-00000000000{i}"))
        .collect();
    for (i, cmid) in cmids.iter().enumerate() {
        let (v, code) = cluster.nodes[i].activate(&["--cmid", cmid, "--required-count", "1"]);
        assert_eq!(code, 0, "{v}");
    }
    // Freshly activated: nothing expires.
    std::thread::sleep(QUIET);
    assert!(
        !webhook
            .received()
            .iter()
            .any(|b| expiring_windows(b, "firing")),
        "fresh activations notified as expiring"
    );

    // 155 days later they never renewed: their activations end within the 30-day horizon.
    cluster.set_clock_offset(&file, 155 * 24 * 3600);
    let firing = webhook.wait_for("firing KmsClientsExpiring notification", DELIVERY, |b| {
        expiring_windows(b, "firing")
    });
    let alert = checked_alert(&firing, "KmsClientsExpiring", "warning");
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("windows"), "summary {summary:?}");
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("kmsctl clients --state expiring"),
        "description {description:?}"
    );

    // The machines renew (at the moved clock): nothing expires any more, and the alert
    // resolves.
    for (i, cmid) in cmids.iter().enumerate() {
        let (v, code) = cluster.nodes[i].activate(&["--cmid", cmid, "--required-count", "1"]);
        assert_eq!(code, 0, "{v}");
    }
    let resolved = webhook.wait_for("resolved KmsClientsExpiring notification", DELIVERY, |b| {
        expiring_windows(b, "resolved")
    });
    for a in alerts(&resolved) {
        assert_eq!(a["status"], "resolved", "{resolved:#}");
    }
    eprintln!(
        "alert_delivery: {} notifications, KmsClientsExpiring fired and resolved",
        webhook.received().len()
    );
}
