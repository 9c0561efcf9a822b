//! The watchdog end to end: a real `kmsd` (built with the test-only `fault-injection`
//! feature) is wedged on purpose and must say so — `/livez` and `/readyz` answer 503
//! naming the stalled loop, `kms_watchdog_stalled{loop}` turns 1, one log line marks the
//! start and one the end — or, with `watchdog_abort_secs`, die by `abort()` so a restart
//! policy brings it back. Under real load without a fault `/livez` stays 200.
//!
//! Every test here fails with the watchdog removed: nothing else turns `/livez` to 503,
//! logs a stall while the runtime is blocked, or aborts the process.

use kms_tests::harness::{bench, http_get, http_post, Kmsd};
use std::time::{Duration, Instant};

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Polls `GET url` until `want` accepts the answer; returns it (panics after `within`).
fn wait_for(url: &str, within: Duration, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + within;
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        if let Ok((code, body)) = http_get(url) {
            if want(code, &body) {
                return (code, body);
            }
            last = (code, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url}: no expected answer within {within:?}; last: {last:?}");
}

/// Waits until the log has a line containing every one of `parts`; returns that line.
fn wait_for_log(k: &Kmsd, parts: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = k
            .log_text()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
        {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?} within {within:?}:\n{}",
            k.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of the log containing `part`.
fn log_lines(k: &Kmsd, part: &str) -> Vec<String> {
    k.log_text()
        .lines()
        .filter(|l| l.contains(part))
        .map(str::to_string)
        .collect()
}

/// The value of series `series` in the node's `/metrics`.
fn metric(k: &Kmsd, series: &str) -> Option<f64> {
    kms_tests::harness::metric(&k.admin, series)
}

#[test]
fn livez_names_a_stalled_request_path_and_recovers() {
    let dir = data_dir();
    let k = Kmsd::start(&dir.path().join("d"), &["--watchdog-stall-secs", "2"]);
    let livez = format!("{}/livez", k.admin);
    assert_eq!(http_get(&livez).unwrap(), (200, "ok\n".to_string()));
    let (_, code) = k.activate(&[]);
    assert!(code == 0 || code == 3, "warm-up activation: exit {code}");

    // Activations started in the next 7 s wait; the runtime stays healthy and answers.
    let (code, body) =
        http_post(&format!("{}/debug/fault/hold-requests?secs=7", k.admin)).expect("fault route");
    assert_eq!(code, 200, "{body}");
    let held_at = Instant::now();
    let kms = k.kms;
    let held = std::thread::spawn(move || {
        kms_tests::harness::activate_at(kms, &["--timeout-ms", "20000"])
    });

    let (_, reason) = wait_for(&livez, Duration::from_secs(6), |c, _| c == 503);
    // Under heavy load another loop may be slow too; the request path must be named.
    assert!(
        reason.starts_with("stalled: ") && reason.contains("requests (no progress for "),
        "{reason:?}"
    );
    let stalled_after = held_at.elapsed();
    assert!(
        stalled_after >= Duration::from_secs(2),
        "reported after {stalled_after:?}, before watchdog_stall_secs"
    );
    let (code, ready) = http_get(&format!("{}/readyz", k.admin)).unwrap();
    assert_eq!(code, 503);
    assert!(ready.contains("stalled: requests"), "{ready}");
    assert_eq!(
        metric(&k, "kms_watchdog_stalled{loop=\"requests\"}"),
        Some(1.0)
    );

    // The held activation is answered once the fault ends; the node is live again.
    let (v, code) = held.join().expect("activation thread");
    assert!(code == 0 || code == 3, "held activation: exit {code}: {v}");
    wait_for(&livez, Duration::from_secs(4), |c, b| {
        c == 200 && b == "ok\n"
    });
    wait_for(
        &format!("{}/readyz", k.admin),
        Duration::from_secs(2),
        |c, _| c == 200,
    );
    assert_eq!(
        metric(&k, "kms_watchdog_stalled{loop=\"requests\"}"),
        Some(0.0)
    );
    // One line when the stall started, one when it ended: no line per sample.
    let ended = wait_for_log(&k, &["stall ended", "requests"], Duration::from_secs(2));
    assert!(ended.contains("INFO"), "{ended}");
    let started: Vec<String> = log_lines(&k, "watchdog: stall:")
        .into_iter()
        .filter(|l| l.contains("activations in flight"))
        .collect();
    assert_eq!(started.len(), 1, "{started:#?}");
    assert!(started[0].contains("ERROR"), "{started:?}");
    let ended: Vec<String> = log_lines(&k, "stall ended: requests");
    assert_eq!(ended.len(), 1, "{ended:#?}");
}

#[test]
fn a_blocked_runtime_is_reported_from_the_watchdog_thread() {
    let dir = data_dir();
    let k = Kmsd::start(
        &dir.path().join("d"),
        &["--worker-threads", "1", "--watchdog-stall-secs", "2"],
    );
    // The only worker sleeps 8 s: no task runs, /livez cannot even answer.
    let (code, body) =
        http_post(&format!("{}/debug/fault/block-runtime?secs=8", k.admin)).expect("fault route");
    assert_eq!(code, 200, "{body}");
    let blocked_at = Instant::now();
    // The watchdog thread still samples and logs while the runtime is blocked.
    let line = wait_for_log(
        &k,
        &["watchdog: stall:", "the tokio runtime ran no task"],
        Duration::from_secs(7),
    );
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        blocked_at.elapsed() < Duration::from_secs(8),
        "the stall was logged only after the runtime came back"
    );
    // Once the worker is back the node recovers by itself and says so.
    wait_for(
        &format!("{}/livez", k.admin),
        Duration::from_secs(15),
        |c, _| c == 200,
    );
    wait_for_log(
        &k,
        &["stall ended", "runtime progresses again"],
        Duration::from_secs(3),
    );
    assert_eq!(
        log_lines(&k, "the tokio runtime ran no task").len(),
        1,
        "{}",
        k.log_text()
    );
}

#[test]
fn watchdog_abort_secs_kills_a_node_whose_runtime_stays_stuck() {
    use std::os::unix::process::ExitStatusExt;
    let dir = data_dir();
    let mut k = Kmsd::start(
        &dir.path().join("d"),
        &[
            "--worker-threads",
            "1",
            "--watchdog-stall-secs",
            "2",
            "--watchdog-abort-secs",
            "4",
        ],
    );
    let (code, body) =
        http_post(&format!("{}/debug/fault/block-runtime?secs=120", k.admin)).expect("fault route");
    assert_eq!(code, 200, "{body}");
    let status = k
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("kmsd still runs with its runtime stuck:\n{}", k.log_text()));
    assert_eq!(
        status.signal(),
        Some(6),
        "expected SIGABRT, got {status}:\n{}",
        k.log_text()
    );
    let line = wait_for_log(&k, &["watchdog_abort_secs reached"], Duration::from_secs(1));
    assert!(line.contains("the tokio runtime ran no task"), "{line}");
    // A restart policy brings it back with its state.
    k.spawn_again();
    k.wait_ready();
    let (_, code) = k.activate(&[]);
    assert!(
        code == 0 || code == 3,
        "activation after the restart: exit {code}"
    );
}

#[test]
fn livez_stays_ok_under_bench_load() {
    let dir = data_dir();
    let mut k = Kmsd::start(
        &dir.path().join("d"),
        &["--watchdog-stall-secs", "4", "--watchdog-abort-secs", "8"],
    );
    let kms = k.kms;
    let bench = std::thread::spawn(move || bench(kms, 8000, 16, &["--rate", "800"]));
    let livez = format!("{}/livez", k.admin);
    let mut probes = 0;
    while !bench.is_finished() {
        let (code, body) = http_get(&livez).expect("livez");
        assert_eq!((code, body.as_str()), (200, "ok\n"), "under load");
        probes += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = bench.join().expect("bench thread");
    assert!(
        out.status.success(),
        "bench failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        probes >= 20,
        "the bench ended too soon to mean anything ({probes} probes)"
    );
    // Idle again after the load: still live, nothing was ever reported.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(http_get(&livez).unwrap(), (200, "ok\n".to_string()));
    for l in ["runtime", "raft", "apply", "requests"] {
        assert_eq!(
            metric(&k, &format!("kms_watchdog_stalled{{loop=\"{l}\"}}")),
            Some(0.0),
            "{l}"
        );
    }
    assert!(log_lines(&k, "watchdog:").is_empty(), "{}", k.log_text());
    assert!(k.is_running());
}

#[test]
fn release_builds_never_enable_fault_injection() {
    let root = kms_tests::observability::repo_root();
    let manifest = std::fs::read_to_string(root.join("services/kmsd/Cargo.toml")).unwrap();
    let features = manifest
        .split("[features]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .expect("kmsd has a [features] table");
    assert!(
        !features
            .lines()
            .any(|l| l.trim_start().starts_with("default")),
        "kmsd must have no default features: {features}"
    );
    let mut release_paths = vec![
        root.join("Dockerfile"),
        root.join("docker/build-local.sh"),
        root.join("docker-compose.yml"),
    ];
    for entry in std::fs::read_dir(root.join("scripts")).unwrap() {
        release_paths.push(entry.unwrap().path());
    }
    for p in release_paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        assert!(
            !text.contains("fault-injection"),
            "{} enables the test-only fault-injection feature",
            p.display()
        );
    }
}
