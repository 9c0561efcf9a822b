//! Client access control on port 1688, with real processes and sockets on loopback
//! sources 127.0.0.x: the CIDR allowlist, the per-source connection limit, the
//! per-source request rate, the global connection cap and the connection lifetime. Each
//! refusal shows in `/status` and in `kms_connections_refused_total`.

use kms_tests::harness::{connect_from, http_get, Kmsd};
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn activate_from(k: &Kmsd, source: &str) -> i32 {
    k.activate(&["--source", source, "--timeout-ms", "3000"]).1
}

fn connections(k: &Kmsd) -> serde_json::Value {
    k.status()["connections"].clone()
}

fn metric(k: &Kmsd, series: &str) -> f64 {
    let (_, text) = http_get(&format!("{}/metrics", k.admin)).unwrap();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// An idle raw connection from `source` (held open by the caller).
fn hold(k: &Kmsd, source: &str) -> TcpStream {
    connect_from(source, k.kms)
}

/// Waits until the host closes `s` (read returns 0 or an error).
fn closed_within(mut s: TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    !matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

#[test]
fn allowlist_admits_listed_networks_only() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(
        &dir.path().join("n"),
        &["--allow-cidr", "127.0.0.2/32", "--allow-cidr", "::1/128"],
    );
    assert_eq!(
        activate_from(&k, "127.0.0.2"),
        3,
        "listed source is answered"
    );
    assert_eq!(
        activate_from(&k, "127.0.0.3"),
        1,
        "unlisted source gets no answer"
    );
    let c = connections(&k);
    assert_eq!(c["refused_not_allowed"], 1, "{c}");
    assert_eq!(
        k.status()["total_requests"],
        1,
        "the refused client reached no parser"
    );
    assert_eq!(
        metric(&k, "kms_connections_refused_total{reason=\"not_allowed\"}"),
        1.0
    );
}

#[test]
fn per_source_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(
        &dir.path().join("n"),
        &[
            "--max-connections-per-ip",
            "2",
            "--limit-exempt-cidr",
            "127.0.0.250/32",
        ],
    );
    let a = hold(&k, "127.0.0.1");
    let _b = hold(&k, "127.0.0.1");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        activate_from(&k, "127.0.0.1"),
        1,
        "third connection from one source refused"
    );
    assert_eq!(
        activate_from(&k, "127.0.0.2"),
        3,
        "another source is unaffected"
    );
    assert_eq!(connections(&k)["refused_per_ip_limit"], 1);
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        activate_from(&k, "127.0.0.1"),
        3,
        "a freed slot is reusable"
    );
}

#[test]
fn per_source_request_rate() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(
        &dir.path().join("n"),
        &[
            "--requests-per-ip-per-sec",
            "0.5",
            "--request-burst",
            "3",
            "--limit-exempt-cidr",
            "127.0.0.250/32",
        ],
    );
    let answered = (0..8)
        .filter(|_| activate_from(&k, "127.0.0.1") == 3)
        .count();
    assert!(
        (3..=4).contains(&answered),
        "burst of 3 (+1 refilled at most): {answered}"
    );
    let limited = connections(&k)["refused_rate_limited"].as_u64().unwrap();
    assert_eq!(limited as usize, 8 - answered);
    assert_eq!(
        activate_from(&k, "127.0.0.2"),
        3,
        "another source has its own bucket"
    );
    assert_eq!(
        metric(&k, "kms_connections_refused_total{reason=\"rate_limited\"}"),
        limited as f64
    );
}

#[test]
fn exempt_sources_skip_the_per_source_limits() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback is exempt by default: a burst far above the rate is answered.
    let k = Kmsd::start(
        &dir.path().join("n"),
        &["--requests-per-ip-per-sec", "0.5", "--request-burst", "1"],
    );
    let answered = (0..5)
        .filter(|_| activate_from(&k, "127.0.0.1") == 3)
        .count();
    assert_eq!(answered, 5);
}

#[test]
fn global_cap_refuses_at_once_instead_of_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(&dir.path().join("n"), &["--max-connections", "2"]);
    let _a = hold(&k, "127.0.0.1");
    let _b = hold(&k, "127.0.0.1");
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(activate_from(&k, "127.0.0.2"), 1);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused, not left waiting"
    );
    assert_eq!(connections(&k)["refused_global_limit"], 1);
}

#[test]
fn connections_end_at_their_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(
        &dir.path().join("n"),
        &[
            "--read-timeout-ms",
            "300",
            "--idle-timeout-ms",
            "30000",
            "--connection-lifetime-ms",
            "800",
        ],
    );
    let s = hold(&k, "127.0.0.1");
    assert!(
        closed_within(s, Duration::from_secs(5)),
        "closed by the host"
    );
    assert_eq!(connections(&k)["lifetime_timeouts"], 1);
}

#[test]
fn bad_access_settings_are_rejected_at_start() {
    for (flag, value) in [
        ("--allow-cidr", "10.0.0.0/33"),
        ("--allow-cidr", "campus"),
        ("--limit-exempt-cidr", "::1/200"),
        ("--request-burst", "0"),
    ] {
        let out = std::process::Command::new(kms_tests::harness::kmsd_bin())
            .args([flag, value, "--print-config"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid setting"), "{err}");
    }
}

#[test]
fn print_config_checks_the_licensed_groups_as_a_start_does() {
    let out = std::process::Command::new(kms_tests::harness::kmsd_bin())
        .args(["--licensed-groups", "ofice-2016", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("licensed_groups") && err.contains("ofice-2016"),
        "{err}"
    );
    let ok = std::process::Command::new(kms_tests::harness::kmsd_bin())
        .args(["--licensed-groups", "office-2016", "--print-config"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("office-2016"));
}
