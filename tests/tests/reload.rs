//! Configuration reload on SIGHUP with a real process: the allowlist, limits, licensed
//! product groups and log level change without dropping open connections; settings that
//! need a restart are named and keep their running values; an invalid file is rejected
//! with a clear message and the old configuration stays in force.

use kms_tests::harness::{connect_from, Kmsd};
use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn activate(k: &Kmsd, source: &str, product: &str) -> i32 {
    k.activate(&[
        "--source",
        source,
        "--product",
        product,
        "--timeout-ms",
        "3000",
    ])
    .1
}

fn hold(k: &Kmsd, source: &str) -> TcpStream {
    connect_from(source, k.kms)
}

fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 8];
    matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

/// Rewrites the file, sends SIGHUP and waits for the `n`-th occurrence of `marker`.
fn reload(k: &Kmsd, file: &Path, text: &str, marker: &str, n: usize) {
    std::fs::write(file, text).unwrap();
    k.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.log_text().matches(marker).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {marker:?} in log:\n{}",
            k.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_applies_reloadable_settings_and_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kmsd.toml");
    std::fs::write(
        &file,
        "licensed_groups = \"windows-10-11\"\nallow_cidrs = [\"127.0.0.1/32\", \"127.0.0.2/32\"]\n",
    )
    .unwrap();
    let cfg = file.display().to_string();
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.display().to_string();
    let k = Kmsd::start(
        &dir.path().join("n"),
        &["--config", &cfg, "--audit-log", &audit_arg],
    );
    assert_eq!(
        activate(&k, "127.0.0.1", "office-2016"),
        4,
        "Office not licensed yet"
    );
    assert_eq!(
        activate(&k, "127.0.0.3", "Windows 10 Enterprise"),
        1,
        "not allowed"
    );
    let mut held = hold(&k, "127.0.0.2");

    reload(
        &k,
        &file,
        "licensed_groups = \"all\"\nallow_cidrs = [\"127.0.0.2/32\", \"127.0.0.3/32\"]\nlog_level = \"debug\"\ncache_mib = 8\n",
        "configuration reloaded",
        1,
    );
    assert!(still_open(&mut held), "open connections survive a reload");
    assert_eq!(
        activate(&k, "127.0.0.2", "office-2016"),
        3,
        "Office licensed now"
    );
    assert_eq!(
        activate(&k, "127.0.0.3", "Windows 10 Enterprise"),
        3,
        "newly allowed"
    );
    assert_eq!(
        activate(&k, "127.0.0.1", "Windows 10 Enterprise"),
        1,
        "no longer allowed"
    );
    let log = k.wait_log("connection refused", Duration::from_secs(5));
    assert!(log.contains("cache_mib"), "restart-only key named:\n{log}");
    assert!(
        log.contains("connection refused"),
        "debug level now in force:\n{log}"
    );

    // Invalid files change nothing.
    for (bad, n) in [
        ("licensed_groups = \"no-such-product\"\n", 1),
        ("allow_cidrs = [\"10.0.0.0/99\"]\n", 2),
        ("this is not toml", 3),
    ] {
        reload(&k, &file, bad, "configuration reload rejected", n);
    }
    let log = k.log_text();
    assert!(log.contains("licensed_groups"), "{log}");
    assert!(log.contains("allow_cidrs"), "{log}");
    assert_eq!(
        activate(&k, "127.0.0.2", "office-2016"),
        3,
        "old config in force"
    );
    assert_eq!(activate(&k, "127.0.0.1", "Windows 10 Enterprise"), 1);
    assert!(still_open(&mut held));
    // Every reload, applied or rejected, is in the audit log.
    let events: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|e| e.starts_with("config."))
        .collect();
    assert_eq!(
        events,
        [
            "config.reload",
            "config.reload_rejected",
            "config.reload_rejected",
            "config.reload_rejected"
        ],
    );
}

fn windows_active(k: &Kmsd) -> u64 {
    k.status()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "windows")
        .and_then(|g| g["active_clients"].as_u64())
        .unwrap()
}

/// The test clock (`clock_offset_secs`, reloadable): 31 days pass in one SIGHUP. Clients
/// seen "a month ago" leave the 30-day count, new ones count from 1 again, and the client
/// clock check still uses the real clock (the activations are accepted).
#[test]
fn an_offset_clock_moves_the_count_window_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kmsd.toml");
    std::fs::write(&file, "clock_offset_secs = 0\n").unwrap();
    let cfg = file.display().to_string();
    let k = Kmsd::start(&dir.path().join("n"), &["--config", &cfg]);
    for _ in 0..3 {
        assert_eq!(activate(&k, "127.0.0.1", "Windows 10 Enterprise"), 3);
    }
    assert_eq!(windows_active(&k), 3);
    assert_eq!(k.status()["clock_offset_secs"], 0);

    reload(
        &k,
        &file,
        "clock_offset_secs = 2678400\n",
        "configuration reloaded",
        1,
    );
    assert_eq!(k.status()["clock_offset_secs"], 2_678_400);
    assert_eq!(
        windows_active(&k),
        0,
        "31 days later the 30-day count is empty"
    );
    let (v, code) = k.activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(
        code, 3,
        "answered below the minimum, not refused for clock skew: {v}"
    );
    assert_eq!(v["current_count"], 1, "{v}");

    // Out of range: refused, the running offset stays.
    reload(
        &k,
        &file,
        "clock_offset_secs = 999999999999\n",
        "configuration reload rejected",
        1,
    );
    assert_eq!(k.status()["clock_offset_secs"], 2_678_400);
}
