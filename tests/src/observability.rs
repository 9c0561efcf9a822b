//! The monitoring files of the repository, parsed: Grafana dashboards
//! (`grafana/dashboards/*.json`) and their provisioning (`grafana/provisioning/`), the
//! Prometheus rules (`prometheus/kms-rules.yml`) and their unit tests, the Grafana-managed
//! alerts (`grafana/provisioning/alerting/kms-alerts.yaml`) and the runbook
//! (`docs/runbook.md`).
//!
//! `tests/tests/observability_files.rs` checks them offline (with `promtool`); a live
//! test can run every expression against Prometheus: take [`dashboard_queries`],
//! [`rule_exprs`] and [`grafana_alert_exprs`], pass each through [`substitute_macros`]
//! (which replaces the Grafana variables and macros by values Prometheus accepts) and
//! query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// Path of the Prometheus rules, relative to the repository root.
pub const RULES_FILE: &str = "prometheus/kms-rules.yml";
/// Path of the `promtool` unit tests of [`RULES_FILE`].
pub const RULES_TEST_FILE: &str = "prometheus/kms-rules.test.yml";
/// Path of the Prometheus configuration for the local cluster.
pub const PROMETHEUS_CONFIG: &str = "prometheus/prometheus.yml";
/// Path of the example Alertmanager configuration (also mounted by docker-compose.yml).
pub const ALERTMANAGER_CONFIG: &str = "prometheus/alertmanager.yml";
/// Directory of the Grafana dashboards (JSON models).
pub const DASHBOARDS_DIR: &str = "grafana/dashboards";
/// Grafana datasource provisioning.
pub const DATASOURCE_FILE: &str = "grafana/provisioning/datasources/prometheus.yaml";
/// Grafana dashboard provider provisioning.
pub const DASHBOARD_PROVIDER_FILE: &str = "grafana/provisioning/dashboards/kms.yaml";
/// Grafana-managed alert rules.
pub const GRAFANA_ALERTS_FILE: &str = "grafana/provisioning/alerting/kms-alerts.yaml";
/// The runbook every alert links to.
pub const RUNBOOK_FILE: &str = "docs/runbook.md";
/// Prefix of every alert's `runbook_url`; the anchor follows.
pub const RUNBOOK_URL_PREFIX: &str = "https://example.invalid/kms-cluster/docs/runbook.md#";

/// The Grafana variables and macros dashboard expressions may use, with the value
/// [`substitute_macros`] puts in their place: `$instance` and `$group` match everything,
/// `$__rate_interval` and `$__interval` become `1m`, `$__range` becomes `5m`.
pub const GRAFANA_MACROS: &[(&str, &str)] = &[
    ("instance", ".*"),
    ("group", ".*"),
    ("__rate_interval", "1m"),
    ("__interval", "1m"),
    ("__range", "5m"),
];

/// Variables Grafana defines by itself (not declared in a dashboard's templating).
pub const GRAFANA_BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__now",
    "__dashboard",
    "__org",
    "__user",
    "__name",
    "__all",
    "__auto",
    "__timeFilter",
    "timeFilter",
];

/// One PromQL expression and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Where the expression comes from: `"kms-overview.json: Panel title"` (with
    /// `" [B]"`, the target's refId, when the panel has several targets),
    /// `"kms-rules.yml: alert KmsNodeDown"`, `"kms-alerts.yaml: KmsNodeDown [A]"`.
    pub source: String,
    /// The expression as written (Grafana macros not substituted).
    pub expr: String,
}

/// An alerting rule, from the Prometheus rules or the Grafana-managed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `alert:` (Prometheus) or `title:` (Grafana).
    pub name: String,
    /// The PromQL expression (Grafana: the model of the data query on the Prometheus
    /// datasource).
    pub expr: String,
    /// The `for:` duration as written (`1m`, `30s`, `1h`), empty when absent.
    pub for_duration: String,
    /// Labels (`severity`).
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`, `runbook_url`).
    pub annotations: BTreeMap<String, String>,
}

/// The repository root (the parent of the `tests/` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Reads a file of the repository (path relative to the root); panics naming it.
pub fn read_repo_file(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Parses a YAML file of the repository; panics naming it.
pub fn read_yaml(rel: &str) -> Yaml {
    serde_yaml_ng::from_str(&read_repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The dashboard files, `grafana/dashboards/*.json`, sorted.
pub fn dashboard_paths() -> Vec<PathBuf> {
    let dir = repo_root().join(DASHBOARDS_DIR);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
}

/// Every dashboard as (file name, parsed JSON model); panics on malformed JSON.
pub fn dashboards() -> Vec<(String, Json)> {
    dashboard_paths()
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let json: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, json)
        })
        .collect()
}

/// All panels of a dashboard in order, including the row panels themselves and the
/// panels nested in (collapsed) rows.
pub fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: Option<&'a Json>, out: &mut Vec<&'a Json>) {
        for p in list.and_then(Json::as_array).into_iter().flatten() {
            out.push(p);
            walk(p.get("panels"), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard.get("panels"), &mut out);
    out
}

/// The queries of one panel as (refId, expr), skipping targets without an `expr`.
pub fn panel_targets(panel: &Json) -> Vec<(String, String)> {
    panel
        .get("targets")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let expr = t.get("expr")?.as_str()?.to_string();
            let ref_id = t.get("refId").and_then(Json::as_str).unwrap_or("");
            Some((ref_id.to_string(), expr))
        })
        .collect()
}

/// Every target expression of every dashboard (nested row panels included), with
/// Grafana macros not yet substituted.
pub fn dashboard_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for (file, dash) in dashboards() {
        for panel in panels(&dash) {
            let title = panel.get("title").and_then(Json::as_str).unwrap_or("");
            let targets = panel_targets(panel);
            let several = targets.len() > 1;
            for (ref_id, expr) in targets {
                let source = if several {
                    format!("{file}: {title} [{ref_id}]")
                } else {
                    format!("{file}: {title}")
                };
                out.push(Query { source, expr });
            }
        }
    }
    out
}

fn yaml_str(v: &Yaml, key: &str) -> String {
    match v.get(key) {
        Some(Yaml::String(s)) => s.clone(),
        Some(Yaml::Number(n)) => n.to_string(),
        Some(Yaml::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn yaml_map(v: &Yaml, key: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = v.get(key).and_then(Yaml::as_mapping) {
        for (k, val) in m {
            let k = k.as_str().unwrap_or_default().to_string();
            let val = match val {
                Yaml::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            out.insert(k, val);
        }
    }
    out
}

fn seq<'a>(v: &'a Yaml, key: &str) -> impl Iterator<Item = &'a Yaml> {
    v.get(key).and_then(Yaml::as_sequence).into_iter().flatten()
}

/// Every rule of [`RULES_FILE`] (alerting and recording) as a [`Query`]:
/// `"kms-rules.yml: alert NAME"` or `"kms-rules.yml: record NAME"`.
pub fn rule_exprs() -> Vec<Query> {
    let rules = read_yaml(RULES_FILE);
    let mut out = Vec::new();
    for group in seq(&rules, "groups") {
        for rule in seq(group, "rules") {
            let (kind, name) = match (yaml_str(rule, "alert"), yaml_str(rule, "record")) {
                (a, _) if !a.is_empty() => ("alert", a),
                (_, r) => ("record", r),
            };
            out.push(Query {
                source: format!("kms-rules.yml: {kind} {name}"),
                expr: yaml_str(rule, "expr"),
            });
        }
    }
    out
}

/// The alerting rules of [`RULES_FILE`], in file order.
pub fn prometheus_alerts() -> Vec<Alert> {
    let rules = read_yaml(RULES_FILE);
    seq(&rules, "groups")
        .flat_map(|g| seq(g, "rules"))
        .filter(|r| r.get("alert").is_some())
        .map(|r| Alert {
            name: yaml_str(r, "alert"),
            expr: yaml_str(r, "expr"),
            for_duration: yaml_str(r, "for"),
            labels: yaml_map(r, "labels"),
            annotations: yaml_map(r, "annotations"),
        })
        .collect()
}

/// The uid of the Prometheus datasource declared in [`DATASOURCE_FILE`].
pub fn datasource_uid() -> String {
    let ds = read_yaml(DATASOURCE_FILE);
    let first = seq(&ds, "datasources")
        .find(|d| yaml_str(d, "type") == "prometheus")
        .unwrap_or_else(|| panic!("{DATASOURCE_FILE}: no datasource of type prometheus"));
    yaml_str(first, "uid")
}

/// The Grafana-managed rules of [`GRAFANA_ALERTS_FILE`], raw (each rule's YAML), with
/// the folder of their group.
pub fn grafana_rules() -> Vec<(String, Yaml)> {
    let file = read_yaml(GRAFANA_ALERTS_FILE);
    seq(&file, "groups")
        .flat_map(|g| {
            let folder = yaml_str(g, "folder");
            seq(g, "rules").map(move |r| (folder.clone(), r.clone()))
        })
        .collect()
}

/// The data queries of a Grafana-managed rule that go to a datasource (not Grafana's
/// `__expr__` expressions) as (refId, datasourceUid, expr).
pub fn grafana_rule_queries(rule: &Yaml) -> Vec<(String, String, String)> {
    seq(rule, "data")
        .filter(|d| yaml_str(d, "datasourceUid") != "__expr__")
        .map(|d| {
            let expr = d.get("model").map(|m| yaml_str(m, "expr"));
            (
                yaml_str(d, "refId"),
                yaml_str(d, "datasourceUid"),
                expr.unwrap_or_default(),
            )
        })
        .collect()
}

/// The Grafana-managed alerts of [`GRAFANA_ALERTS_FILE`]; `expr` is that of the rule's
/// first datasource query.
pub fn grafana_alerts() -> Vec<Alert> {
    grafana_rules()
        .into_iter()
        .map(|(_, r)| Alert {
            name: yaml_str(&r, "title"),
            expr: grafana_rule_queries(&r)
                .into_iter()
                .next()
                .map(|(_, _, e)| e)
                .unwrap_or_default(),
            for_duration: yaml_str(&r, "for"),
            labels: yaml_map(&r, "labels"),
            annotations: yaml_map(&r, "annotations"),
        })
        .collect()
}

/// The PromQL of every datasource query of every Grafana-managed alert:
/// `"kms-alerts.yaml: TITLE [A]"`.
pub fn grafana_alert_exprs() -> Vec<Query> {
    grafana_rules()
        .iter()
        .flat_map(|(_, r)| {
            let title = yaml_str(r, "title");
            grafana_rule_queries(r)
                .into_iter()
                .map(move |(ref_id, _, expr)| Query {
                    source: format!("kms-alerts.yaml: {title} [{ref_id}]"),
                    expr,
                })
        })
        .collect()
}

/// One Grafana variable reference found in a text: its name and the byte range of the
/// whole reference (`$name`, `${name}`, `${name:format}` or `[[name]]`).
fn variable_refs_at(text: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            if bytes.get(i + 1) == Some(&b'{') {
                if let Some(end) = text[i + 2..].find('}') {
                    let inner = &text[i + 2..i + 2 + end];
                    let name = inner.split(':').next().unwrap_or("");
                    if !name.is_empty() && name.bytes().all(is_ident) {
                        out.push((name.to_string(), i..i + 3 + end));
                        i += 3 + end;
                        continue;
                    }
                }
            } else {
                let len = bytes[i + 1..].iter().take_while(|&&b| is_ident(b)).count();
                if len > 0 {
                    out.push((text[i + 1..i + 1 + len].to_string(), i..i + 1 + len));
                    i += 1 + len;
                    continue;
                }
            }
        } else if bytes[i..].starts_with(b"[[") {
            if let Some(end) = text[i + 2..].find("]]") {
                let inner = &text[i + 2..i + 2 + end];
                let name = inner.split(':').next().unwrap_or("");
                if !name.is_empty() && name.bytes().all(is_ident) {
                    out.push((name.to_string(), i..i + 4 + end));
                    i += 4 + end;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// Names of the Grafana variables a text references (`$name`, `${name}`,
/// `${name:format}`, `[[name]]`), in order, with repeats.
pub fn variable_refs(text: &str) -> Vec<String> {
    variable_refs_at(text).into_iter().map(|(n, _)| n).collect()
}

/// Replaces the Grafana variables and macros of [`GRAFANA_MACROS`] in a dashboard
/// expression by values Prometheus accepts (`$instance`/`$group` → `.*`,
/// `$__rate_interval`/`$__interval` → `1m`, `$__range` → `5m`), so the expression can be
/// checked or run outside Grafana. Other references are left as they are.
pub fn substitute_macros(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut last = 0;
    for (name, range) in variable_refs_at(expr) {
        if let Some((_, value)) = GRAFANA_MACROS.iter().find(|(m, _)| *m == name) {
            out.push_str(&expr[last..range.start]);
            out.push_str(value);
            last = range.end;
        }
    }
    out.push_str(&expr[last..]);
    out
}

/// GitHub's anchor for a Markdown heading: lower case, punctuation dropped (except `-`
/// and `_`), spaces turned into `-`.
pub fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of [`RUNBOOK_FILE`] (outside code blocks).
pub fn runbook_anchors() -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in read_repo_file(RUNBOOK_FILE).lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(heading_anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// Metric names documented in `docs/metrics.md` (every backquoted `kms_*` name).
pub fn contract_metrics() -> BTreeSet<String> {
    let text = read_repo_file("docs/metrics.md");
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("kms_") && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(str::to_string)
        .collect()
}

/// The `kms_*` metric names an expression mentions (outside quoted strings).
pub fn kms_metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut unquoted = String::new();
    let mut quote = None;
    for c in expr.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => unquoted.push(c),
        }
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for word in unquoted.split(|c: char| !is_ident(c)) {
        if word.starts_with("kms_") && !word.contains(':') {
            out.insert(word.to_string());
        }
    }
    out
}

/// A command-line tool of a Debian package: `$<env>` or `name` on `PATH`, checked with
/// `--version`. Panics, naming the package to install, when there is none (the checks
/// must not be skipped silently).
pub fn debian_tool(env: &str, name: &str, package: &str) -> PathBuf {
    let bin = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name));
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        Ok(o) => panic!(
            "`{} --version` failed: {}{}",
            bin.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "{name} not found ({}: {e}): install it with `apt-get install {package}` \
             (Debian package; scripts/test.sh installs it) or set {env} to its path",
            bin.display()
        ),
    }
}

/// The `promtool` binary (package `prometheus`): `$PROMTOOL`, or `promtool` on `PATH`.
pub fn promtool() -> PathBuf {
    debian_tool("PROMTOOL", "promtool", "prometheus")
}

/// The `amtool` binary (package `prometheus-alertmanager`): `$AMTOOL`, or `amtool` on
/// `PATH`.
pub fn amtool() -> PathBuf {
    debian_tool("AMTOOL", "amtool", "prometheus-alertmanager")
}

/// Runs `promtool` with these arguments in the repository root and returns its output
/// (whatever its exit status).
pub fn run_promtool(args: &[&str]) -> Output {
    run_tool(&promtool(), args)
}

/// Runs `bin` with these arguments in the repository root and returns its output
/// (whatever its exit status).
fn run_tool(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.display()))
}

/// Runs `bin` and panics with its output unless it succeeds; returns stdout and stderr.
fn tool_ok(bin: &Path, args: &[&str]) -> String {
    let out = run_tool(bin, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        bin.display()
    );
    text
}

/// Runs `promtool` and panics with its output unless it succeeds; returns its output.
pub fn promtool_ok(args: &[&str]) -> String {
    tool_ok(&promtool(), args)
}

/// Runs `amtool` and panics with its output unless it succeeds; returns its output.
pub fn amtool_ok(args: &[&str]) -> String {
    tool_ok(&amtool(), args)
}

/// Checks that every expression parses as PromQL, with `promtool check rules` on a
/// temporary rules file holding each one (after [`substitute_macros`]) as a recording
/// rule. Panics with promtool's output and the numbered sources otherwise.
pub fn check_promql(queries: &[Query]) {
    let mut file = String::from("groups:\n");
    for (i, q) in queries.iter().enumerate() {
        let expr = serde_json::to_string(&substitute_macros(&q.expr)).expect("json string");
        file.push_str(&format!(
            "  - name: q{i}\n    rules:\n      - record: kms_promql_check:q{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("promql-check.yml");
    std::fs::write(&path, file).expect("write rules");
    let out = run_promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
    if !out.status.success() {
        let sources: String = queries
            .iter()
            .enumerate()
            .map(|(i, q)| format!("  q{i}: {}\n", q.source))
            .collect();
        panic!(
            "some expressions are not valid PromQL:\n{}{}\nwhere:\n{sources}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_grafana_macros() {
        assert_eq!(
            substitute_macros(
                r#"sum(rate(x{instance=~"$instance", g=~"${group}"}[$__rate_interval])) + increase(y[$__range]) + z[$__interval] + w{a="$unknown"}"#
            ),
            r#"sum(rate(x{instance=~".*", g=~".*"}[1m])) + increase(y[5m]) + z[1m] + w{a="$unknown"}"#
        );
        assert_eq!(substitute_macros(r#"x{a=~"b$"}"#), r#"x{a=~"b$"}"#);
        assert_eq!(
            variable_refs("$a ${b:csv} [[c]] $__range $ 5"),
            ["a", "b", "c", "__range"]
        );
        // Text other than ASCII (panel names, descriptions) is scanned byte by byte.
        assert_eq!(variable_refs("≤ 1 day — $a, 7–8 days [[b]]"), ["a", "b"]);
    }

    #[test]
    fn anchors_like_github() {
        assert_eq!(heading_anchor(" KmsNodeDown"), "kmsnodedown");
        assert_eq!(heading_anchor(" Checks used below"), "checks-used-below");
        assert_eq!(heading_anchor(" A (b), c_d"), "a-b-c_d");
    }

    #[test]
    fn finds_metric_names() {
        let m = kms_metrics_in(
            r#"histogram_quantile(0.9, sum by (le) (rate(kms_x_bucket{a="kms_no"}[5m]))) / kms_y - kms:rec"#,
        );
        assert_eq!(m.into_iter().collect::<Vec<_>>(), ["kms_x_bucket", "kms_y"]);
    }
}
