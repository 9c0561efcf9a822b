//! The container image and docker-compose.yml as users run them (`kms_tests::compose`):
//! the image is the repository's Dockerfile built by `docker/build-local.sh` (no
//! registry), the cluster is the compose file's kms1..kms3 services, and clients are the
//! real `kmsctl activate` through the ports the compose file publishes (on 127.0.0.1 here).
//!
//! Prometheus, Alertmanager and Grafana images cannot be pulled on a machine without a
//! registry, so their services are only checked in the resolved configuration (a test of
//! its own, which needs Compose but neither the image nor a running container). Needs
//! Docker Engine and Compose (v2 `docker compose` or v1 `docker-compose`); fails (does not
//! skip) without them.

use kms_tests::compose::{compose_cmd, mounts, ports, repo_root, ComposeProject, KMS_SERVICES};
use kms_tests::harness::activate_at;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the three containers may take to become healthy (ready: a leader known).
const HEALTHY: Duration = Duration::from_secs(90);
/// How long the nodes may take to agree on the statistics.
const CONVERGE: Duration = Duration::from_secs(30);

/// `kmsctl activate` (Windows 10 Enterprise, a fresh random CMID) against `addr`: the JSON
/// line and the exit code.
fn activate(addr: SocketAddr) -> (serde_json::Value, i32) {
    activate_at(addr, &["--product", "Windows 10 Enterprise"])
}

/// Activates through `addr` and checks it is a real answer: exit code 3 (answered, count
/// below the Windows minimum of 25) with the expected current count.
fn activate_answered(p: &ComposeProject, node: usize, expect_count: u64) {
    let (v, code) = activate(p.kms[node]);
    assert_eq!(
        code, 3,
        "activation through {} ({}) should be answered with 'count below minimum' (exit 3): {v}",
        KMS_SERVICES[node], p.kms[node]
    );
    assert_eq!(
        v["current_count"], expect_count,
        "current count answered through {}: {v}",
        KMS_SERVICES[node]
    );
}

/// Waits until every node in `nodes` reports `total_requests == want`.
fn wait_total(p: &ComposeProject, nodes: &[usize], want: u64) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let statuses: Vec<Option<serde_json::Value>> =
            nodes.iter().map(|&i| p.try_status(i)).collect();
        if statuses
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s["total_requests"] == want))
        {
            return statuses.into_iter().flatten().collect();
        }
        assert!(
            Instant::now() < deadline,
            "nodes {nodes:?} did not all report total_requests = {want} within {CONVERGE:?}: {:?}",
            statuses
                .iter()
                .map(|s| s.as_ref().map(|s| s["total_requests"].clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The whole file is valid, and Prometheus, Alertmanager and Grafana get the repository's
/// configuration at the paths their configuration expects.
fn check_config(p: &ComposeProject) {
    p.run_ok(&["config", "-q"]);
    let cfg = p.config();
    let services = &cfg["services"];
    for s in [
        "kms1",
        "kms2",
        "kms3",
        "prometheus",
        "alertmanager",
        "grafana",
    ] {
        assert!(services[s].is_object(), "service {s} missing: {cfg}");
    }
    let root = repo_root();
    let abs = |rel: &str| root.join(rel).display().to_string();
    let has = |svc: &str, src: &str, dst: &str| {
        let m = mounts(&services[svc]);
        assert!(
            m.iter().any(|(s, d)| s == &abs(src) && d == dst),
            "{svc} should mount {src} at {dst}: {m:?}"
        );
    };
    has(
        "prometheus",
        "docker/prometheus-compose.yml",
        "/etc/prometheus/prometheus.yml",
    );
    has(
        "prometheus",
        "prometheus/kms-rules.yml",
        "/etc/prometheus/kms-rules.yml",
    );
    has(
        "grafana",
        "grafana/provisioning",
        "/etc/grafana/provisioning",
    );
    // Alertmanager: the example configuration where its command reads it, state in its
    // volume, its API on loopback only.
    has(
        "alertmanager",
        "prometheus/alertmanager.yml",
        "/etc/alertmanager/alertmanager.yml",
    );
    let am = &services["alertmanager"];
    let command: Vec<&str> = am["command"]
        .as_array()
        .map(|c| c.iter().filter_map(|a| a.as_str()).collect())
        .unwrap_or_default();
    assert!(
        command.contains(&"--config.file=/etc/alertmanager/alertmanager.yml")
            && command.contains(&"--storage.path=/alertmanager"),
        "alertmanager command: {command:?}"
    );
    assert!(
        mounts(am)
            .iter()
            .any(|(s, d)| s.ends_with("alertmanager-data") && d == "/alertmanager"),
        "alertmanager keeps no state in its volume: {:?}",
        mounts(am)
    );
    let am_port = p.var("ALERTMANAGER_PORT").expect("ALERTMANAGER_PORT");
    assert_eq!(
        ports(am),
        [(
            "127.0.0.1".to_string(),
            am_port.to_string(),
            "9093".to_string()
        )],
        "alertmanager ports"
    );
    assert_eq!(am["restart"], "unless-stopped");
    // The dashboards go where the dashboard provider looks for them.
    let provider: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("grafana/provisioning/dashboards/kms.yaml"))
            .expect("grafana dashboard provider"),
    )
    .expect("provider yaml");
    let dash_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    has("grafana", "grafana/dashboards", dash_path);

    // Prometheus scrapes the three services as job "kms" and loads the mounted rules.
    let prom: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("docker/prometheus-compose.yml"))
            .expect("docker/prometheus-compose.yml"),
    )
    .expect("prometheus yaml");
    assert_eq!(prom["rule_files"][0], "/etc/prometheus/kms-rules.yml");
    // ... and sends their alerts to the compose Alertmanager.
    assert_eq!(
        prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"],
        serde_json::json!(["alertmanager:9093"])
    );
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["job_name"], "kms");
    assert_eq!(
        job["static_configs"][0]["targets"],
        serde_json::json!(["kms1:9688", "kms2:9688", "kms3:9688"])
    );

    // The kms services: one node id each, the same peer list, published on loopback here.
    for (i, s) in KMS_SERVICES.iter().enumerate() {
        let env = &services[*s]["environment"];
        assert_eq!(env["KMSD_NODE_ID"], (i + 1).to_string(), "{s}: {env}");
        assert_eq!(env["KMSD_PEERS"], "1=kms1:9689,2=kms2:9689,3=kms3:9689");
        assert_eq!(env["KMSD_CLUSTER_ADVERTISE"], format!("{s}:9689"));
        // A stalled node exits so the restart policy restarts it (README, watchdog).
        assert_eq!(env["KMSD_WATCHDOG_ABORT_SECS"], "60", "{s}: {env}");
        assert_eq!(services[*s]["restart"], "unless-stopped", "{s}");
        assert!(
            services[*s]["healthcheck"].is_object(),
            "{s} has no healthcheck"
        );
    }
}

#[test]
fn compose_file_resolves_with_every_service_wired() {
    check_config(&ComposeProject::unbuilt());
}

#[test]
fn compose_cluster_answers_through_every_published_port() {
    let started = Instant::now();
    let p = ComposeProject::new();
    eprintln!(
        "compose: {:?}, project {}, KMS ports {:?}",
        compose_cmd(),
        p.name,
        p.kms
    );

    p.up(&KMS_SERVICES);
    p.wait_healthy(&KMS_SERVICES, HEALTHY);
    let up = started.elapsed();

    // The image as documented: kmsd as uid 10001, kmsctl included, state in the volume.
    let id = p.container("kms1");
    let user = kms_tests::docker::docker_ok(&["inspect", "--format", "{{.Config.User}}", &id]);
    assert_eq!(user, "10001:10001");
    let version = p.run_ok(&["exec", "-T", "kms1", "kmsctl", "--version"]);
    assert!(
        version.starts_with("kmsctl "),
        "kmsctl --version: {version}"
    );
    let data = p.run_ok(&["exec", "-T", "kms1", "ls", "/var/lib/kmsd"]);
    assert!(!data.trim().is_empty(), "no state in /var/lib/kmsd");

    // One activation through each published port: one shared count (1, 2, 3).
    for node in 0..3 {
        activate_answered(&p, node, node as u64 + 1);
    }
    let statuses = wait_total(&p, &[0, 1, 2], 3);
    for s in &statuses {
        assert_eq!(s["failed_requests"], 0, "{s}");
    }

    // One node down: the other two still answer, with the count going on.
    p.run_ok(&["stop", "-t", "5", "kms2"]);
    activate_answered(&p, 0, 4);
    activate_answered(&p, 2, 5);
    wait_total(&p, &[0, 2], 5);
    assert!(p.try_status(1).is_none(), "kms2 still answers after stop");

    eprintln!(
        "compose: 3 nodes healthy after {:.1}s; 3 activations through kms1..kms3 and 2 with \
         kms2 stopped answered (counts 1..5); total_requests agreed; {:.1}s in all",
        up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
