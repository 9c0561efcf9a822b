//! The observability stack end to end: a real Prometheus scrapes a real 3-node cluster
//! while `kmsctl bench` replays the request mix of the campus host's `slmgr /dlv` block
//! (`../shared/host-status-example.md`). Through Prometheus's HTTP API:
//! - every dashboard query returns data (no empty panel) and every rule evaluates;
//! - the overview dashboard's slmgr queries return exactly that block's figures, which
//!   also equal what the benches sent;
//! - killing a node makes `KmsNodeDown` pending (then firing).

use kms_tests::cluster::LocalCluster;
use kms_tests::harness;
use kms_tests::observability::{dashboard_queries, rule_exprs, substitute_macros};
use kms_tests::prom::Prometheus;
use std::time::{Duration, Instant};

/// One `kmsctl bench` run through node `node`; returns (requests, succeeded).
fn bench(
    cluster: &LocalCluster,
    node: usize,
    count: usize,
    state: &str,
    products: &[&str],
) -> (u64, u64) {
    let mut extra = vec!["--license-state", state];
    for p in products {
        extra.extend(["--product", p]);
    }
    let out = harness::bench(cluster.nodes[node].kms, count as u64, 16, &extra);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench output: {e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        report["requests"].as_u64().unwrap(),
        report["succeeded"].as_u64().unwrap(),
    )
}

/// The dashboard query whose expression is `expr` (so the test checks what the panel
/// shows, not a query of its own).
fn panel_expr(expr: &str) -> String {
    dashboard_queries()
        .into_iter()
        .find(|q| q.expr == expr)
        .unwrap_or_else(|| panic!("no dashboard panel queries {expr}"))
        .expr
}

#[test]
fn prometheus_scrapes_the_cluster_and_dashboards_show_the_slmgr_block() {
    // Windows 10/11 clients, Office 2016 and Office 2010 are licensed; Windows Server 2008
    // is not, so its requests are refused and counted as failed.
    let mut cluster = LocalCluster::start(
        3,
        &["--licensed-groups", "windows-10-11,office-2016,office-2010"],
    );
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.admin.trim_start_matches("http://").to_string())
        .collect();
    let prom = Prometheus::start(&targets);
    prom.wait_targets_up(3, Duration::from_secs(20));

    // The campus host's block: 8,865 requests, 274 failed, 8,236 licensed, 293 in
    // initial grace, 54 expired/out of tolerance, 8 in notification.
    let runs = [
        (0, 8236, "licensed", vec!["Windows 10 Enterprise"]),
        (1, 293, "initial-grace", vec!["office-2016", "office-2010"]),
        (2, 54, "additional-grace", vec!["Windows 10 Enterprise"]),
        (1, 8, "notification", vec!["Windows 10 Enterprise"]),
        (2, 274, "licensed", vec!["server-2008-a"]),
    ];
    let (mut sent, mut answered) = (0, 0);
    for (node, count, state, products) in &runs {
        let (r, ok) = bench(&cluster, *node, *count, state, products);
        sent += r;
        answered += ok;
    }
    assert_eq!(sent, 8865);
    assert_eq!(answered, 8865 - 274, "every licensed request was answered");

    // Two scrapes after the load, so rates and the replicated gauges are current.
    std::thread::sleep(Duration::from_secs(3));

    // The lifecycle gauges are recomputed every 15 s (first at start, over an empty
    // inventory), so a panel may only fill after the next recompute and a scrape: each
    // query gets up to 30 s to return data.
    let deadline = Instant::now() + Duration::from_secs(30);
    for q in dashboard_queries() {
        let expr = substitute_macros(&q.expr);
        prom.wait_query(
            &format!("empty panel {}: {expr}", q.source),
            &expr,
            deadline.saturating_duration_since(Instant::now()),
            |r| !r.is_empty(),
        );
    }
    for q in rule_exprs() {
        prom.query(&substitute_macros(&q.expr)); // evaluates without error
    }
    let groups = prom.api("rules");
    for g in groups["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {}: {}", r["name"], r["lastError"]);
        }
    }

    // The slmgr /dlv block, through the overview dashboard's own queries.
    assert_eq!(
        prom.value(&panel_expr("max(kms_cluster_requests_received)")),
        sent as f64
    );
    assert_eq!(
        prom.value(&panel_expr("max(kms_cluster_requests_failed)")),
        274.0
    );
    let by_state = prom.by_label(
        &panel_expr("max by (license_state) (kms_cluster_requests_by_license_state)"),
        "license_state",
    );
    for (state, n) in [
        ("unlicensed", 0.0),
        ("licensed", 8236.0),
        ("initial_grace", 293.0),
        ("additional_grace", 54.0),
        ("non_genuine_grace", 0.0),
        ("notification", 8.0),
    ] {
        assert_eq!(by_state.get(state), Some(&n), "{state}: {by_state:?}");
    }
    let counts = prom.by_label(
        &substitute_macros(&panel_expr(
            "max by (count_group) (kms_current_count{count_group=~\"$group\"})",
        )),
        "count_group",
    );
    assert_eq!(counts.get("windows"), Some(&50.0), "the count stops at 50");
    assert_eq!(counts.get("office"), Some(&10.0));
    assert_eq!(counts.get("office2010"), Some(&10.0));
    // Every node reports the same replicated figures.
    let per_node = prom.by_label("kms_cluster_requests_received", "instance");
    assert_eq!(per_node.len(), 3);
    assert!(per_node.values().all(|v| *v == sent as f64), "{per_node:?}");
    // The node-local counters add up to the same total.
    assert_eq!(prom.value("sum(kms_requests_total)"), sent as f64);
    let refused = prom.by_label(
        "sum by (product_group) (kms_refused_requests_total)",
        "product_group",
    );
    assert_eq!(refused.get("server-2008-a"), Some(&274.0), "{refused:?}");

    // A node goes down: KmsNodeDown turns pending (its `for` is 1m), naming that node.
    let leader = cluster.wait_leader(Duration::from_secs(5));
    let victim = (leader + 1) % 3;
    cluster.nodes[victim].kill();
    prom.wait_api(
        "KmsNodeDown pending",
        "alerts",
        Duration::from_secs(30),
        |alerts| {
            alerts["alerts"].as_array().unwrap().iter().any(|a| {
                a["labels"]["alertname"] == "KmsNodeDown"
                    && a["labels"]["instance"] == targets[victim].as_str()
                    && (a["state"] == "pending" || a["state"] == "firing")
            })
        },
    );
    // The others are still up and still agree.
    assert_eq!(prom.value("sum(up{job=\"kms\"})"), 2.0);
}
