//! A real Prometheus server (Debian's `prometheus` package) started by a test on a
//! loopback port, scraping given `kmsd` admin endpoints with the repository's alert
//! rules (or a test's copy of them) and optionally sending alerts to an Alertmanager,
//! and a small client for its HTTP API.

use crate::harness::{free_port, http_get};
use crate::observability::{debian_tool, repo_root, RULES_FILE};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus (or Alertmanager) may take to become ready.
pub const READY: Duration = Duration::from_secs(30);

/// A server process a test started (Prometheus, Alertmanager): its standard error goes to
/// a log file in the temporary directory that holds its configuration and data; killed
/// on drop.
pub struct Server {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` with `args`, logging to `<dir>/<name>.log`, and waits until `GET
    /// ready_url` answers 200.
    pub fn start(
        bin: PathBuf,
        args: &[String],
        dir: tempfile::TempDir,
        name: &str,
        ready_url: &str,
    ) -> Server {
        let log = dir.path().join(format!("{name}.log"));
        let child = Command::new(&bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let server = Server {
            child,
            log,
            _dir: dir,
        };
        wait_http_ready(ready_url, &server.log, READY);
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    /// Base URL of its HTTP API.
    pub url: String,
    /// Its log file.
    pub log: PathBuf,
    _server: Server,
}

/// The `prometheus` server binary: `$PROMETHEUS`, else from `PATH`; panics naming the
/// Debian package when there is none.
pub fn prometheus_bin() -> PathBuf {
    debian_tool("PROMETHEUS", "prometheus", "prometheus")
}

/// Waits until `GET url` answers 200 (the `/-/ready` of Prometheus or Alertmanager);
/// panics after `timeout` with the server's log.
pub fn wait_http_ready(url: &str, log: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !matches!(http_get(url), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "{url} did not become ready: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a test's Prometheus loads besides its scrape targets.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The rule file; `None` for the repository's [`RULES_FILE`].
    pub rules: Option<PathBuf>,
    /// `host:port` of an Alertmanager to send the alerts to; `None` for none.
    pub alertmanager: Option<String>,
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` of admin APIs, job `kms`) every
    /// second, evaluating the repository's rules every second; waits until it is ready.
    pub fn start(targets: &[String]) -> Prometheus {
        Self::start_with(targets, Options::default())
    }

    /// Like [`Prometheus::start`] with the rules of `options` and, when given, sending
    /// alerts to its Alertmanager (re-sent every second while they fire).
    pub fn start_with(targets: &[String], options: Options) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = options
            .rules
            .unwrap_or_else(|| repo_root().join(RULES_FILE));
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: kms\n    static_configs:\n      - targets: [{list}]\n",
            rules.display()
        );
        if let Some(am) = &options.alertmanager {
            config.push_str(&format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--rules.alert.resend-delay=1s".to_string(),
            "--log.level=warn".to_string(),
        ];
        let server = Server::start(
            prometheus_bin(),
            &args,
            dir,
            "prometheus",
            &format!("{url}/-/ready"),
        );
        Prometheus {
            url,
            log: server.log.clone(),
            _server: server,
        }
    }

    /// `GET /api/v1/<path>` as JSON; panics unless `status` is `success`.
    pub fn api(&self, path_and_query: &str) -> serde_json::Value {
        let (code, body) =
            http_get(&format!("{}/api/v1/{path_and_query}", self.url)).expect("prometheus api");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path_and_query}: {e}: {body}"));
        assert_eq!(code, 200, "{path_and_query}: {body}");
        assert_eq!(v["status"], "success", "{path_and_query}: {body}");
        v["data"].clone()
    }

    /// Polls `GET /api/v1/<path>` until `pred` holds for its data and returns that data;
    /// panics naming `what`, with the last data, once `timeout` has passed (it asks at
    /// least once, even with a zero timeout).
    #[track_caller]
    pub fn wait_api(
        &self,
        what: &str,
        path_and_query: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let data = self.api(path_and_query);
            if pred(&data) {
                return data;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}: {data}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Instant query: the result vector (or scalar) of `expr`.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        samples(&self.api(&query_path(expr)))
    }

    /// [`Prometheus::query`] repeated until `pred` holds for the result (see
    /// [`Prometheus::wait_api`]).
    #[track_caller]
    pub fn wait_query(
        &self,
        what: &str,
        expr: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        samples(&self.wait_api(what, &query_path(expr), timeout, |d| pred(&samples(d))))
    }

    /// The single value of `expr` (panics unless exactly one sample).
    pub fn value(&self, expr: &str) -> f64 {
        let r = self.query(expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{expr}: {r:?}"))
    }

    /// The samples of `expr` keyed by one label.
    pub fn by_label(&self, expr: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
        self.query(expr)
            .iter()
            .map(|s| {
                (
                    s["metric"][label].as_str().unwrap_or_default().to_string(),
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                )
            })
            .collect()
    }

    /// Waits until every scrape target reports `up` (or panics after `timeout`).
    #[track_caller]
    pub fn wait_targets_up(&self, n: usize, timeout: Duration) {
        self.wait_api(
            &format!("{n} targets up"),
            "targets?state=active",
            timeout,
            |data| {
                data["activeTargets"]
                    .as_array()
                    .map(|a| a.iter().filter(|t| t["health"] == "up").count())
                    .unwrap_or(0)
                    == n
            },
        );
    }
}

/// The query API path for `expr`.
fn query_path(expr: &str) -> String {
    format!("query?query={}", encode(expr))
}

/// The samples of a query's data: the result vector, or the scalar or string as one.
fn samples(data: &serde_json::Value) -> Vec<serde_json::Value> {
    match data["resultType"].as_str() {
        Some("scalar") | Some("string") => vec![data["result"].clone()],
        _ => data["result"].as_array().cloned().unwrap_or_default(),
    }
}
