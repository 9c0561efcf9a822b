//! Offline checks of the monitoring files: Grafana dashboards and provisioning,
//! Prometheus rules, their unit tests and configuration (with the real `promtool`), the
//! example Alertmanager configuration (with the real `amtool`), the Grafana-managed
//! alerts and the runbook. No cluster, no Prometheus server.
//!
//! `promtool` comes with Debian's `prometheus` package, `amtool` with
//! `prometheus-alertmanager` (scripts/test.sh installs both); without them those tests
//! fail, they are not skipped.

use std::collections::{BTreeMap, BTreeSet};

use kms_tests::observability::*;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn s<'a>(v: &'a Json, key: &str) -> &'a str {
    v.get(key).and_then(Json::as_str).unwrap_or("")
}

fn ystr(v: &Yaml, key: &str) -> String {
    v.get(key)
        .and_then(Yaml::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The strings of the sequence at `key` (empty when there is none).
fn ystrs(v: &Yaml, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// PromQL ignores whitespace between tokens: compare expressions with runs of
/// whitespace collapsed.
fn normalize(expr: &str) -> String {
    expr.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------ (a) dashboards

#[test]
fn dashboards_are_well_formed() {
    let uid = datasource_uid();
    assert_eq!(uid, "kms-prometheus");
    let dashboards = dashboards();
    let names: BTreeSet<&str> = dashboards.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains("kms-overview.json") && names.contains("kms-cluster.json"),
        "dashboards: {names:?}"
    );

    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for (file, dash) in &dashboards {
        let dash_uid = s(dash, "uid");
        assert!(!dash_uid.is_empty(), "{file}: no uid");
        assert!(
            uids.insert(dash_uid.to_string()),
            "{file}: uid {dash_uid} used twice"
        );
        assert!(!s(dash, "title").is_empty(), "{file}: no title");
        let schema = dash
            .get("schemaVersion")
            .and_then(Json::as_u64)
            .unwrap_or(0);
        assert!(schema >= 39, "{file}: schemaVersion {schema} < 39");

        let mut ids = BTreeSet::new();
        let all = panels(dash);
        assert!(all.len() > 5, "{file}: only {} panels", all.len());
        for panel in all {
            let title = s(panel, "title");
            let where_ = format!("{file}: panel {title:?}");
            match panel.get("id").and_then(Json::as_u64) {
                Some(id) if !ids.insert(id) => {
                    problems.push(format!("{where_}: id {id} used twice"))
                }
                Some(_) => {}
                None => problems.push(format!("{where_}: no numeric id")),
            }
            if title.is_empty() {
                problems.push(format!("{where_}: no title"));
            }
            if panel.get("gridPos").is_none() {
                problems.push(format!("{where_}: no gridPos"));
            }
            let is_row = s(panel, "type") == "row";
            match panel.get("datasource") {
                Some(ds) if !ds.is_null() => {
                    if s(ds, "uid") != uid || s(ds, "type") != "prometheus" {
                        problems.push(format!("{where_}: datasource {ds}, want uid {uid}"));
                    }
                }
                _ if is_row => {}
                _ => problems.push(format!("{where_}: no datasource")),
            }
            let targets = panel
                .get("targets")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            if !is_row && targets.is_empty() {
                problems.push(format!("{where_}: no targets"));
            }
            let mut ref_ids = BTreeSet::new();
            for t in &targets {
                let ref_id = s(t, "refId");
                if ref_id.is_empty() || !ref_ids.insert(ref_id) {
                    problems.push(format!("{where_}: missing or repeated refId {ref_id:?}"));
                }
                if s(t, "expr").trim().is_empty() {
                    problems.push(format!("{where_} [{ref_id}]: empty expr"));
                }
                let ds = t.get("datasource").cloned().unwrap_or(Json::Null);
                if s(&ds, "uid") != uid || s(&ds, "type") != "prometheus" {
                    problems.push(format!(
                        "{where_} [{ref_id}]: datasource {ds}, want uid {uid}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn dashboard_variables_are_defined() {
    let uid = datasource_uid();
    let mut problems = Vec::new();
    for (file, dash) in dashboards() {
        let vars: Vec<&Json> = dash
            .pointer("/templating/list")
            .and_then(Json::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let defined: BTreeSet<&str> = vars.iter().map(|v| s(v, "name")).collect();
        for (name, query) in [
            (
                "instance",
                r#"label_values(kms_build_info{job="kms"}, instance)"#,
            ),
            ("group", "label_values(kms_current_count, count_group)"),
        ] {
            let Some(v) = vars.iter().find(|v| s(v, "name") == name) else {
                problems.push(format!("{file}: no variable {name}"));
                continue;
            };
            let q = v
                .get("query")
                .map(|q| q.get("query").unwrap_or(q))
                .and_then(Json::as_str)
                .unwrap_or("");
            if q != query {
                problems.push(format!(
                    "{file}: variable {name} query {q:?}, want {query:?}"
                ));
            }
            if v.get("multi") != Some(&Json::Bool(true))
                || v.get("includeAll") != Some(&Json::Bool(true))
            {
                problems.push(format!(
                    "{file}: variable {name} must be multi and includeAll"
                ));
            }
            if s(v, "allValue") != ".*" {
                problems.push(format!(
                    "{file}: variable {name}: allValue must be .* (used in =~ matchers)"
                ));
            }
            if v.pointer("/datasource/uid").and_then(Json::as_str) != Some(uid.as_str()) {
                problems.push(format!("{file}: variable {name} not on datasource {uid}"));
            }
        }

        // Every $reference anywhere in the dashboard is defined or a Grafana builtin.
        let mut strings = Vec::new();
        collect_strings(&dash, &mut strings);
        for text in strings {
            for name in variable_refs(text) {
                if !defined.contains(name.as_str()) && !GRAFANA_BUILTINS.contains(&name.as_str()) {
                    problems.push(format!("{file}: ${name} is not defined (in {text:?})"));
                }
            }
        }
    }
    // Expressions use only the macros the live test knows how to substitute.
    for q in dashboard_queries() {
        let allowed: Vec<&str> = GRAFANA_MACROS.iter().map(|(m, _)| *m).collect();
        for name in variable_refs(&q.expr) {
            if !allowed.contains(&name.as_str()) {
                problems.push(format!(
                    "{}: uses ${name}; expressions may use only {allowed:?}",
                    q.source
                ));
            }
        }
        let done = substitute_macros(&q.expr);
        if !variable_refs(&done).is_empty() {
            problems.push(format!("{}: {done:?} still has a variable", q.source));
        }
    }
    assert!(
        problems.is_empty(),
        "variable problems:\n{}",
        problems.join("\n")
    );
}

fn collect_strings<'a>(v: &'a Json, out: &mut Vec<&'a str>) {
    match v {
        Json::String(s) => out.push(s),
        Json::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Json::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[test]
fn dashboards_cover_the_slmgr_block_and_the_cluster() {
    let queries = dashboard_queries();
    let all: String = queries
        .iter()
        .map(|q| q.expr.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for metric in [
        "kms_current_count",
        "kms_count_minimum",
        "kms_cluster_requests_received",
        "kms_cluster_requests_failed",
        "kms_cluster_requests_by_license_state",
        "kms_cluster_group_requests_received",
        "kms_distinct_clients",
        "kms_requests_total",
        "kms_activation_duration_seconds_bucket",
        "kms_refused_requests_total",
        "kms_decode_errors_total",
        "kms_open_connections",
        "kms_raft_role",
        "kms_raft_term",
        "kms_raft_commit_index",
        "kms_raft_applied_index",
        "kms_raft_replication_lag_entries",
        "kms_raft_outbox_commands",
        "kms_raft_quorum_reachable",
        "kms_raft_stale_seconds",
        "process_resident_memory_bytes",
        "kms_clients_lifecycle",
        "kms_client_renewal_age_seconds_bucket",
        "kms_lifecycle_alert_threshold",
        "kms_lifecycle_expiring_horizon_seconds",
        "up{",
    ] {
        assert!(all.contains(metric), "no dashboard query uses {metric}");
    }
    // One query per panel target at least, each with its source.
    assert!(
        queries.len() >= 40,
        "only {} dashboard queries",
        queries.len()
    );
    assert!(queries.iter().all(|q| q.source.contains(".json: ")));
    let uids: BTreeSet<String> = dashboards()
        .iter()
        .map(|(_, d)| s(d, "uid").to_string())
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from(["kms-cluster".to_string(), "kms-overview".to_string()])
    );
}

#[test]
fn grafana_provisioning_files() {
    let ds = read_yaml(DATASOURCE_FILE);
    assert_eq!(ds.get("apiVersion").and_then(Yaml::as_u64), Some(1));
    let prom = ds
        .get("datasources")
        .and_then(Yaml::as_sequence)
        .and_then(|d| d.first())
        .expect("a datasource");
    assert_eq!(ystr(prom, "type"), "prometheus");
    assert_eq!(ystr(prom, "uid"), "kms-prometheus");
    assert_eq!(ystr(prom, "url"), "http://prometheus:9090");

    let prov = read_yaml(DASHBOARD_PROVIDER_FILE);
    let provider = prov
        .get("providers")
        .and_then(Yaml::as_sequence)
        .and_then(|p| p.first())
        .expect("a dashboard provider");
    assert_eq!(ystr(provider, "type"), "file");
    assert_eq!(
        provider.get("options").map(|o| ystr(o, "path")).as_deref(),
        Some("/var/lib/grafana/dashboards/kms")
    );
}

#[test]
fn expressions_use_only_documented_metrics() {
    let contract = contract_metrics();
    assert!(contract.contains("kms_requests_total") && contract.len() > 30);
    let mut queries = dashboard_queries();
    queries.extend(rule_exprs());
    queries.extend(grafana_alert_exprs());
    for (file, dash) in dashboards() {
        for v in dash
            .pointer("/templating/list")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            queries.push(Query {
                source: format!("{file}: variable {}", s(v, "name")),
                expr: s(v, "definition").to_string(),
            });
        }
    }
    let mut problems = Vec::new();
    for q in &queries {
        for m in kms_metrics_in(&q.expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| m.strip_suffix(suffix))
                .filter(|b| contract.contains(*b));
            if !contract.contains(&m) && base.is_none() {
                problems.push(format!("{}: {m} is not in docs/metrics.md", q.source));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_expression_is_valid_promql() {
    let mut queries = dashboard_queries();
    queries.extend(rule_exprs());
    queries.extend(grafana_alert_exprs());
    check_promql(&queries);
}

/// The cluster-wide replicated lifecycle figures: every node exports the same value.
const LIFECYCLE_METRICS: &[&str] = &[
    "kms_clients_lifecycle",
    "kms_client_renewal_age_seconds_bucket",
    "kms_client_renewal_age_seconds_sum",
    "kms_client_renewal_age_seconds_count",
    "kms_lifecycle_alert_threshold",
    "kms_lifecycle_expiring_horizon_seconds",
];

/// Whether every mention of `metric` in `expr` is the direct argument of a `max`
/// aggregation (`max(metric...)`, `max by (...) (metric...)`, `max without (...) (...)`),
/// i.e. taken over the nodes that all report the same replicated figure.
fn only_under_max(expr: &str, metric: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut from = 0;
    while let Some(at) = expr[from..].find(metric).map(|i| i + from) {
        from = at + metric.len();
        let before_ok = !expr[..at].ends_with(is_ident);
        let after_ok = !expr[from..].starts_with(is_ident);
        if !(before_ok && after_ok) {
            continue;
        }
        let Some(rest) = expr[..at].trim_end().strip_suffix('(') else {
            return false;
        };
        let mut rest = rest.trim_end();
        if let Some(inner) = rest.strip_suffix(')') {
            // A grouping clause: skip back to its `(` and the `by`/`without` before it.
            let Some(open) = inner.rfind('(') else {
                return false;
            };
            let clause = inner[..open].trim_end();
            let Some(agg) = clause
                .strip_suffix("by")
                .or_else(|| clause.strip_suffix("without"))
            else {
                return false;
            };
            rest = agg.trim_end();
        }
        match rest.strip_suffix("max") {
            Some(head) if !head.ends_with(is_ident) => {}
            _ => return false,
        }
    }
    true
}

#[test]
fn lifecycle_figures_are_taken_with_max_over_nodes() {
    assert!(only_under_max(
        "sum by (le) (max by (count_group, le) (kms_x_bucket{a=\"b\"}))",
        "kms_x_bucket"
    ));
    assert!(only_under_max("max(kms_x) / 86400", "kms_x"));
    assert!(only_under_max("max without (instance) (kms_x)", "kms_x"));
    assert!(!only_under_max("sum by (job) (kms_x)", "kms_x"));
    assert!(!only_under_max("kms_x > 0", "kms_x"));
    assert!(!only_under_max("max(kms_y) + kms_x", "kms_x"));
    assert!(!only_under_max("softmax(kms_x)", "kms_x"));

    let mut queries = dashboard_queries();
    queries.extend(rule_exprs());
    queries.extend(grafana_alert_exprs());
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in &queries {
        for m in kms_metrics_in(&q.expr) {
            if LIFECYCLE_METRICS.contains(&m.as_str()) {
                used.insert(m.clone());
                if !only_under_max(&q.expr, &m) {
                    problems.push(format!(
                        "{}: {m} is replicated (same on every node): take max over nodes first",
                        q.source
                    ));
                }
            }
        }
    }
    for m in [
        "kms_clients_lifecycle",
        "kms_client_renewal_age_seconds_bucket",
        "kms_lifecycle_alert_threshold",
        "kms_lifecycle_expiring_horizon_seconds",
    ] {
        if !used.contains(m) {
            problems.push(format!("no dashboard query or rule uses {m}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn overview_has_the_activation_lifecycle_row() {
    let dashboards = dashboards();
    let dash = &dashboards
        .iter()
        .find(|(f, _)| f == "kms-overview.json")
        .expect("kms-overview.json")
        .1;
    let top: Vec<&Json> = dash
        .get("panels")
        .and_then(Json::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let row_at = top
        .iter()
        .position(|p| s(p, "type") == "row" && s(p, "title").starts_with("Activation lifecycle"))
        .expect("a row \"Activation lifecycle\" in kms-overview.json");
    // The last row, so its panels are the ones after it.
    assert!(
        top[row_at + 1..].iter().all(|p| s(p, "type") != "row"),
        "the Activation lifecycle row must be the last one"
    );
    let y = |p: &Json| p.pointer("/gridPos/y").and_then(Json::as_u64).unwrap_or(0);
    let bottom = |p: &Json| y(p) + p.pointer("/gridPos/h").and_then(Json::as_u64).unwrap_or(0);
    let row_y = y(top[row_at]);
    assert!(
        top[..row_at].iter().all(|p| bottom(p) <= row_y),
        "the Activation lifecycle row must sit below every other panel"
    );
    let exprs: Vec<String> = top[row_at + 1..]
        .iter()
        .flat_map(|p| panel_targets(p))
        .map(|(_, e)| e)
        .collect();
    let all = exprs.join("\n");
    for needle in [
        "max by (count_group, state) (kms_clients_lifecycle",
        "state=\"expiring\"",
        "kms_lifecycle_alert_threshold{state=\"expiring\"}",
        "state=\"failing\"",
        "kms_lifecycle_alert_threshold{state=\"failing\"}",
        "kms_client_renewal_age_seconds_bucket",
        "kms_lifecycle_expiring_horizon_seconds",
    ] {
        assert!(
            all.contains(needle),
            "no query of the Activation lifecycle row has {needle}"
        );
    }
    // Panels of the row do not overlap each other or the rest (same grid).
    let mut cells = BTreeSet::new();
    for p in &top {
        let g = |k: &str| {
            p.pointer(&format!("/gridPos/{k}"))
                .and_then(Json::as_u64)
                .unwrap_or(0)
        };
        for x in g("x")..g("x") + g("w") {
            for yy in g("y")..g("y") + g("h") {
                assert!(
                    cells.insert((x, yy)),
                    "panel {:?} overlaps another at ({x}, {yy})",
                    s(p, "title")
                );
            }
        }
    }
}

#[test]
fn lifecycle_alerts_read_their_thresholds_from_kmsd() {
    // The thresholds are kmsd settings (alert_expiring_machines, alert_failing_machines)
    // exported as kms_lifecycle_alert_threshold: no number is written into the rules.
    for (name, state) in [
        ("KmsClientsExpiring", "expiring"),
        ("KmsClientsFailing", "failing"),
    ] {
        for (file, alerts) in [
            ("kms-rules.yml", prometheus_alerts()),
            ("kms-alerts.yaml", grafana_alerts()),
        ] {
            let a = alerts
                .iter()
                .find(|a| a.name == name)
                .unwrap_or_else(|| panic!("{file}: no {name}"));
            let expr = normalize(&a.expr);
            for needle in [
                format!("kms_clients_lifecycle{{state=\"{state}\"}}"),
                format!("kms_lifecycle_alert_threshold{{state=\"{state}\"}}"),
                ">= on (job) group_left".to_string(),
            ] {
                assert!(
                    expr.contains(&needle),
                    "{file}: {name}: no {needle} in {expr}"
                );
            }
            assert!(
                !expr.chars().any(|c| c.is_ascii_digit()),
                "{file}: {name}: a number in {expr}; the threshold comes from kmsd"
            );
            assert_eq!(a.for_duration, "15m", "{file}: {name}");
            assert_eq!(
                a.labels.get("severity").map(String::as_str),
                Some("warning"),
                "{file}: {name}"
            );
            let description = a
                .annotations
                .get("description")
                .cloned()
                .unwrap_or_default();
            assert!(
                description.contains(&format!("kmsctl clients --state {state} --group")),
                "{file}: {name}: the description must say how to list the machines"
            );
        }
    }
}

// ------------------------------------------------------------------ (b) alerts

#[test]
fn every_prometheus_alert_has_a_grafana_counterpart() {
    let prom = prometheus_alerts();
    let graf = grafana_alerts();
    let names: Vec<&str> = prom.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "KmsNodeDown",
            "KmsNoLeader",
            "KmsQuorumLost",
            "KmsCountBelowMinimum",
            "KmsCountNearMinimum",
            "KmsFailureRatioHigh",
            "KmsLatencyHigh",
            "KmsOutboxGrowing",
            "KmsAppliedIndexLagging",
            "KmsDataDiskLow",
            "KmsMembershipChangeStuck",
            "KmsClientsExpiring",
            "KmsClientsFailing",
        ]
    );
    let by_name: BTreeMap<&str, &Alert> = graf.iter().map(|a| (a.name.as_str(), a)).collect();
    assert_eq!(by_name.len(), graf.len(), "duplicate Grafana alert titles");
    let mut problems = Vec::new();
    for p in &prom {
        let Some(g) = by_name.get(p.name.as_str()) else {
            problems.push(format!(
                "{}: no Grafana-managed alert with this title",
                p.name
            ));
            continue;
        };
        if normalize(&p.expr) != normalize(&g.expr) {
            problems.push(format!(
                "{}: expressions differ:\n  prometheus: {}\n  grafana:    {}",
                p.name,
                normalize(&p.expr),
                normalize(&g.expr)
            ));
        }
        if p.for_duration != g.for_duration {
            problems.push(format!(
                "{}: for {} vs {}",
                p.name, p.for_duration, g.for_duration
            ));
        }
        if p.labels.get("severity") != g.labels.get("severity") {
            problems.push(format!("{}: severity differs", p.name));
        }
        for key in ["summary", "runbook_url"] {
            if p.annotations.get(key) != g.annotations.get(key) {
                problems.push(format!("{}: annotation {key} differs", p.name));
            }
        }
    }
    for g in &graf {
        if !prom.iter().any(|p| p.name == g.name) {
            problems.push(format!("{}: Grafana-only alert", g.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn grafana_rules_are_complete() {
    let uid = datasource_uid();
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for (folder, rule) in grafana_rules() {
        let title = ystr(&rule, "title");
        if folder != "KMS" {
            problems.push(format!("{title}: folder {folder:?}, want KMS"));
        }
        let rule_uid = ystr(&rule, "uid");
        if rule_uid.is_empty() || rule_uid.len() > 40 || !uids.insert(rule_uid.clone()) {
            problems.push(format!(
                "{title}: uid {rule_uid:?} missing, too long or repeated"
            ));
        }
        let data: Vec<&Yaml> = rule
            .get("data")
            .and_then(Yaml::as_sequence)
            .map(|d| d.iter().collect())
            .unwrap_or_default();
        let ref_ids: BTreeSet<String> = data.iter().map(|d| ystr(d, "refId")).collect();
        let condition = ystr(&rule, "condition");
        if !ref_ids.contains(&condition) {
            problems.push(format!("{title}: condition {condition:?} is not a refId"));
        }
        let queries = grafana_rule_queries(&rule);
        if queries.len() != 1 || queries[0].1 != uid {
            problems.push(format!(
                "{title}: want one query on datasource {uid}: {queries:?}"
            ));
        }
        let mut types = Vec::new();
        for d in &data {
            if ystr(d, "datasourceUid") != "__expr__" {
                continue;
            }
            let model = d.get("model").cloned().unwrap_or(Yaml::Null);
            let input = ystr(&model, "expression");
            if !ref_ids.contains(&input) {
                problems.push(format!(
                    "{title}: expression input {input:?} is not a refId"
                ));
            }
            types.push(ystr(&model, "type"));
        }
        if types != ["reduce", "threshold"] {
            problems.push(format!(
                "{title}: expressions {types:?}, want reduce then threshold"
            ));
        }
        for state in ["noDataState", "execErrState"] {
            if ystr(&rule, state).is_empty() {
                problems.push(format!("{title}: no {state}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_is_documented_in_the_runbook() {
    let anchors = runbook_anchors();
    let mut problems = Vec::new();
    for (file, alerts) in [
        ("kms-rules.yml", prometheus_alerts()),
        ("kms-alerts.yaml", grafana_alerts()),
    ] {
        for a in alerts {
            let who = format!("{file}: {}", a.name);
            for key in ["summary", "description"] {
                if a.annotations.get(key).is_none_or(|v| v.trim().is_empty()) {
                    problems.push(format!("{who}: no {key}"));
                }
            }
            if !["warning", "critical"].contains(&a.labels.get("severity").map_or("", |s| s)) {
                problems.push(format!("{who}: severity must be warning or critical"));
            }
            let url = a
                .annotations
                .get("runbook_url")
                .cloned()
                .unwrap_or_default();
            let Some(anchor) = url.strip_prefix(RUNBOOK_URL_PREFIX) else {
                problems.push(format!(
                    "{who}: runbook_url {url:?} not under {RUNBOOK_URL_PREFIX}"
                ));
                continue;
            };
            if anchor != a.name.to_lowercase() {
                problems.push(format!(
                    "{who}: anchor #{anchor}, want #{}",
                    a.name.to_lowercase()
                ));
            }
            if !anchors.contains(anchor) {
                problems.push(format!(
                    "{who}: docs/runbook.md has no heading for #{anchor}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------ (c) promtool

#[test]
fn promtool_check_rules() {
    let out = promtool_ok(&["check", "rules", RULES_FILE]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_test_rules() {
    let out = promtool_ok(&["test", "rules", RULES_TEST_FILE]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_check_config() {
    let out = promtool_ok(&["check", "config", PROMETHEUS_CONFIG]);
    assert!(out.contains("SUCCESS"), "{out}");

    let cfg = read_yaml(PROMETHEUS_CONFIG);
    let global = cfg.get("global").expect("global");
    assert_eq!(ystr(global, "scrape_interval"), "5s");
    assert_eq!(ystr(global, "evaluation_interval"), "5s");
    let rule_files = ystrs(&cfg, "rule_files");
    assert_eq!(rule_files, ["kms-rules.yml"]);
    let job = cfg
        .get("scrape_configs")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .find(|j| ystr(j, "job_name") == "kms")
        .expect("a scrape job named kms");
    let targets: Vec<String> = job
        .get("static_configs")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("targets").and_then(Yaml::as_sequence))
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    assert_eq!(
        targets,
        ["127.0.0.1:9688", "127.0.0.2:9688", "127.0.0.3:9688"]
    );
}

#[test]
fn amtool_check_alertmanager_config() {
    let out = amtool_ok(&["check-config", ALERTMANAGER_CONFIG]);
    assert!(out.contains("SUCCESS"), "{out}");

    let cfg = read_yaml(ALERTMANAGER_CONFIG);
    let route = cfg.get("route").expect("route");
    let group_by = ystrs(route, "group_by");
    assert_eq!(group_by, ["alertname", "job", "instance"]);

    // Each alert reaches the receiver of its severity (amtool's own routing): critical
    // ones a receiver with a webhook and email, warnings email.
    let receivers: BTreeMap<String, &Yaml> = cfg
        .get("receivers")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .map(|r| (ystr(r, "name"), r))
        .collect();
    let configs = |receiver: &Yaml, kind: &str| -> Vec<Yaml> {
        receiver
            .get(kind)
            .and_then(Yaml::as_sequence)
            .cloned()
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    for a in prometheus_alerts() {
        let severity = a.labels.get("severity").cloned().unwrap_or_default();
        let out = amtool_ok(&[
            "config",
            "routes",
            "test",
            &format!("--config.file={ALERTMANAGER_CONFIG}"),
            &format!("alertname={}", a.name),
            &format!("severity={severity}"),
            "job=kms",
        ]);
        let name = out
            .lines()
            .filter(|l| !l.starts_with("Warning:"))
            .collect::<String>()
            .trim()
            .to_string();
        let Some(receiver) = receivers.get(&name) else {
            problems.push(format!("{}: routed to unknown receiver {name:?}", a.name));
            continue;
        };
        let want: &[&str] = if severity == "critical" {
            &["email_configs", "webhook_configs"]
        } else {
            &["email_configs"]
        };
        for kind in want {
            if configs(receiver, kind).is_empty() {
                problems.push(format!(
                    "{} ({severity}): receiver {name} has no {kind}",
                    a.name
                ));
            }
        }
    }
    // Resolved notifications are sent by every receiver.
    for (name, r) in &receivers {
        for kind in ["email_configs", "webhook_configs"] {
            for c in configs(r, kind) {
                if c.get("send_resolved").and_then(Yaml::as_bool) != Some(true) {
                    problems.push(format!("{name}: {kind} without send_resolved: true"));
                }
            }
        }
    }
    // The inhibit rules name alerts that exist.
    let names: BTreeSet<String> = prometheus_alerts().into_iter().map(|a| a.name).collect();
    let rules = cfg
        .get("inhibit_rules")
        .and_then(Yaml::as_sequence)
        .cloned()
        .unwrap_or_default();
    assert!(!rules.is_empty(), "no inhibit_rules");
    for rule in &rules {
        for key in ["source_matchers", "target_matchers"] {
            for m in rule
                .get(key)
                .and_then(Yaml::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(Yaml::as_str)
            {
                let Some(value) = m
                    .strip_prefix("alertname=~")
                    .or_else(|| m.strip_prefix("alertname="))
                else {
                    continue;
                };
                for alert in value.trim_matches('"').split('|') {
                    if !names.contains(alert) {
                        problems.push(format!("inhibit rule {key}: no alert {alert}"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ------------------------------------------------------------------ (d) unit-test coverage

#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let tests = read_yaml(RULES_TEST_FILE);
    let rule_files = ystrs(&tests, "rule_files");
    assert_eq!(
        rule_files,
        ["kms-rules.yml"],
        "{RULES_TEST_FILE} tests other rules"
    );

    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in tests
        .get("tests")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("alert_rule_test").and_then(Yaml::as_sequence))
        .flatten()
    {
        let name = ystr(case, "alertname");
        let expected = case
            .get("exp_alerts")
            .and_then(Yaml::as_sequence)
            .map_or(0, Vec::len);
        if expected > 0 {
            firing.insert(name);
        } else {
            silent.insert(name);
        }
    }
    let alerts: BTreeSet<String> = prometheus_alerts().into_iter().map(|a| a.name).collect();
    let mut problems = Vec::new();
    for a in &alerts {
        if !firing.contains(a) {
            problems.push(format!(
                "{a}: no alert_rule_test where it fires (non-empty exp_alerts)"
            ));
        }
        if !silent.contains(a) {
            problems.push(format!(
                "{a}: no alert_rule_test where it stays silent (exp_alerts: [])"
            ));
        }
    }
    for a in firing.union(&silent) {
        if !alerts.contains(a) {
            problems.push(format!(
                "{RULES_TEST_FILE} tests {a}, which kms-rules.yml does not define"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
