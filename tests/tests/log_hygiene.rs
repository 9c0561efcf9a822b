//! Logs an admin can read: a client's machine name cannot forge a log line or put escape
//! sequences into the log or `kmsctl clients`, JSON logs stay one valid object per line,
//! libraries log no INFO lines by default, and a leader that lost its quorum stops with a
//! few lines, not tens of thousands.

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::{activate_at, kmsctl_ok, Kmsd};
use std::time::Duration;

/// Starts a forged line of its own in a text log if the name is written raw.
const FORGED: &str = "PC\n2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE injected line";
/// Retitles and recolours a terminal if written raw.
const ESCAPES: &str = "ws\x1b]0;pwned\x07\x1b[31m";

/// Activates once with each hostile machine name (fresh CMIDs); the count is below the
/// minimum, so exit code 3.
fn activate_hostile(k: &Kmsd) {
    for name in [FORGED, ESCAPES] {
        let (v, code) = k.activate(&["--product", "Windows 10 Enterprise", "--machine-name", name]);
        assert!(code == 0 || code == 3, "activation failed: {v}");
    }
}

fn is_raw_control(b: u8) -> bool {
    (b < 0x20 && b != b'\n') || b == 0x7f
}

#[test]
fn client_strings_cannot_forge_lines_or_escape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut k = Kmsd::start(&dir.path().join("text"), &[]);
    activate_hostile(&k);

    let table = kmsctl_ok(&["clients", "--admin", &k.admin]).stdout;
    assert!(
        !table.iter().any(|b| is_raw_control(*b)),
        "raw control bytes in kmsctl clients: {:?}",
        String::from_utf8_lossy(&table)
    );
    let table = String::from_utf8_lossy(&table);
    assert!(table.contains("PC\\u{a}2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE injected line"));
    assert!(
        table.contains("ws\\u{1b}]0;pwned\\u{7}\\u{1b}[31m"),
        "{table}"
    );
    // The JSON inventory keeps the names exactly (no double escaping).
    let json = kmsctl_ok(&["clients", "--admin", &k.admin, "--json"]).stdout;
    let list: serde_json::Value = serde_json::from_slice(&json).expect("clients JSON");
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["machine_name"].as_str())
        .collect();
    assert!(
        names.contains(&FORGED) && names.contains(&ESCAPES),
        "{names:?}"
    );

    k.stop();
    let log = std::fs::read(&k.log).expect("log");
    assert!(
        !log.iter().any(|b| is_raw_control(*b)),
        "raw control bytes in the text log"
    );
    let log = String::from_utf8_lossy(&log);
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00")),
        "a forged line in:\n{log}"
    );
    assert!(
        log.contains("machine=PC\\u{a}2026-12-01T00:00:00.000000Z ERROR kmsd: FAKE injected line")
    );
    assert!(
        log.contains("machine=ws\\u{1b}]0;pwned\\u{7}\\u{1b}[31m"),
        "{log}"
    );
    assert!(
        !log.contains(" INFO openraft"),
        "openraft INFO by default:\n{log}"
    );

    // JSON lines, with openraft's INFO lines asked for explicitly.
    let mut j = Kmsd::start(
        &dir.path().join("json"),
        &["--log-format", "json", "--log-level", "info,openraft=info"],
    );
    activate_hostile(&j);
    j.stop();
    let log = j.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let machines: Vec<&str> = lines.iter().filter_map(|v| v["machine"].as_str()).collect();
    assert!(
        machines.contains(&FORGED) && machines.contains(&ESCAPES),
        "{machines:?}"
    );
    assert!(
        lines.iter().any(|v| v["level"] == "INFO"
            && v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("openraft"))),
        "a full filter directive did not enable openraft INFO"
    );
}

#[test]
fn leader_without_quorum_stops_with_few_lines() {
    let mut cluster = LocalCluster::start(3, &[]);
    for n in &cluster.nodes {
        let log = n.log_text();
        assert!(
            !log.contains(" INFO openraft"),
            "openraft INFO at start:\n{log}"
        );
    }
    let leader = cluster.wait_leader(Duration::from_secs(10));
    for i in (0..3).filter(|i| *i != leader) {
        cluster.nodes[i].stop();
    }
    // Serve-local answers from the last applied state after the commit timeout (2 s);
    // kmsctl's own timeouts bound the wait.
    let (v, code) = activate_at(
        cluster.nodes[leader].kms,
        &["--product", "Windows 10 Enterprise"],
    );
    assert!(code == 0 || code == 3 || code == 1, "activation: {v}");

    let node = &mut cluster.nodes[leader];
    let before = node.log_text().lines().count();
    node.signal("TERM");
    let status = node.wait_exit(Duration::from_secs(10));
    let log = node.log_text();
    assert!(status.is_some(), "still running 10 s after TERM:\n{log}");
    let after: Vec<&str> = log.lines().skip(before).collect();
    assert!(
        after.len() <= 300,
        "{} lines after TERM; the first ones:\n{}",
        after.len(),
        after[..after.len().min(40)].join("\n")
    );
    assert!(
        after.iter().any(|l| l.contains("state flushed; bye")),
        "no orderly stop:\n{}",
        after.join("\n")
    );
}
