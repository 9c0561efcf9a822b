//! A real Prometheus server (Debian's `prometheus` package) started by a test on a
//! loopback port, scraping given `kmsd` admin endpoints with the repository's alert
//! rules, and a small client for its HTTP API.

use crate::harness::{free_port, http_get};
use crate::observability::{repo_root, RULES_FILE};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    /// Base URL of its HTTP API.
    pub url: String,
    /// Its log file.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `prometheus` server binary: `$PROMETHEUS`, else from `PATH`.
pub fn prometheus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMETHEUS") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("the Prometheus server is needed: install it with `apt-get install prometheus`")
        })
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
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo_root().join(RULES_FILE);
        let list = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: kms\n    static_configs:\n      - targets: [{list}]\n",
            rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(http_get(&format!("{}/-/ready", p.url)), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
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

    /// Instant query: the result vector (or scalar) of `expr`.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("query?query={}", encode(expr)));
        match data["resultType"].as_str() {
            Some("scalar") | Some("string") => vec![data["result"].clone()],
            _ => data["result"].as_array().cloned().unwrap_or_default(),
        }
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
    pub fn wait_targets_up(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let data = self.api("targets?state=active");
            let up = data["activeTargets"]
                .as_array()
                .map(|a| a.iter().filter(|t| t["health"] == "up").count())
                .unwrap_or(0);
            if up == n {
                return;
            }
            assert!(Instant::now() < deadline, "targets not up: {data}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
