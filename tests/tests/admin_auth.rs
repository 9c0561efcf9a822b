//! Admin API authentication and the audit log, end to end with real `kmsd` processes and
//! the real `kmsctl`: the token guards every endpoint but the probes and `/metrics`,
//! kmsctl sends it, `--print-config` hides it, and failed authentications and operators'
//! membership changes land in the audit log as JSON lines.

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::{free_port_on, http_get_with, kmsctl_bin, kmsd_bin, HttpReply, Kmsd};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken-Abc.123_xyz";

fn get(k: &Kmsd, path: &str, headers: &[&str]) -> HttpReply {
    http_get_with(&format!("{}{path}", k.admin), headers).expect("admin API answers")
}

/// kmsctl with a clean token environment plus `env`.
fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(kmsctl_bin());
    c.args(args)
        .env_remove("KMSCTL_TOKEN")
        .env_remove("KMSCTL_TOKEN_FILE")
        .env_remove("KMSD_ADMIN_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run kmsctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The audit log's JSON lines, waiting up to 10 s until `done` holds for them.
fn audit_lines(path: &Path, done: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
            .collect();
        if done(&lines) || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(lines: &[serde_json::Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["event"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn without_a_token_everything_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let k = Kmsd::start(&dir.path().join("d"), &[]);
    for path in ["/status", "/clients", "/livez", "/readyz", "/metrics"] {
        let r = get(&k, path, &[]);
        assert_eq!(r.code, 200, "{path}: {r:?}");
    }
    // A token sent to an open admin API is ignored.
    let r = get(&k, "/status", &["Authorization: Bearer whatever"]);
    assert_eq!(r.code, 200);
    let out = ctl(&["status", "--admin", &k.admin, "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Loopback without a token is the intended default: no warning.
    assert!(
        !k.log_text().contains("without a token"),
        "{}",
        k.log_text()
    );
}

#[test]
fn token_guards_all_but_probes_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let k = Kmsd::start(
        &dir.path().join("d"),
        &[
            "--admin-token",
            TOKEN,
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let good = format!("Authorization: Bearer {TOKEN}");
    for path in ["/status", "/clients", "/clients?group=windows"] {
        let missing = get(&k, path, &[]);
        assert_eq!(missing.code, 401, "{path}: {missing:?}");
        assert!(
            missing
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{missing:?}"
        );
        assert!(
            missing.body.contains("Authorization: Bearer <token>"),
            "{missing:?}"
        );
        let wrong = get(&k, path, &["Authorization: Bearer t0ken-Abc.124_xyz"]);
        assert_eq!(wrong.code, 401, "{path}: {wrong:?}");
        assert!(wrong.body.contains("not the admin token"), "{wrong:?}");
        assert!(
            wrong
                .header("www-authenticate")
                .is_some_and(|v| v.contains("invalid_token")),
            "{wrong:?}"
        );
        let basic = get(&k, path, &["Authorization: Basic dXNlcjpwYXNz"]);
        assert_eq!(basic.code, 401, "{path}: {basic:?}");
        for r in [&missing, &wrong, &basic] {
            assert!(!r.body.contains(TOKEN) && !r.head.contains(TOKEN), "{r:?}");
        }
        let ok = get(&k, path, &[&good]);
        assert_eq!(ok.code, 200, "{path}: {ok:?}");
        serde_json::from_str::<serde_json::Value>(&ok.body).expect("JSON");
    }
    // Unknown paths are not an oracle for what exists: 401 before 404.
    assert_eq!(get(&k, "/nope", &[]).code, 401);
    assert_eq!(get(&k, "/nope", &[&good]).code, 404);
    for path in ["/livez", "/readyz", "/metrics"] {
        let r = get(&k, path, &[]);
        assert_eq!(r.code, 200, "{path}: {r:?}");
    }
    assert!(get(&k, "/metrics", &[]).body.contains("kms_"));

    // kmsctl: --token, KMSCTL_TOKEN and --token-file work; none or a wrong one fail clearly.
    let ok = ctl(&["status", "--admin", &k.admin, "--token", TOKEN], &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(!text(&ok.stdout).is_empty());
    let ok = ctl(
        &["clients", "--admin", &k.admin, "--json"],
        &[("KMSCTL_TOKEN", TOKEN)],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    // In a kmsd container the daemon's own variable is used.
    let ok = ctl(
        &["status", "--admin", &k.admin],
        &[("KMSD_ADMIN_TOKEN", TOKEN)],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let ok = ctl(
        &[
            "status",
            "--admin",
            &k.admin,
            "--json",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let none = ctl(&["status", "--admin", &k.admin], &[]);
    assert_eq!(none.status.code(), Some(6), "{none:?}");
    let err = text(&none.stderr);
    assert!(
        err.contains("401") && err.contains("requires a token") && err.contains("--token"),
        "{err}"
    );
    let wrong = ctl(&["clients", "--admin", &k.admin, "--token", "nope"], &[]);
    assert_eq!(wrong.status.code(), Some(6), "{wrong:?}");
    assert!(
        text(&wrong.stderr).contains("rejected the token"),
        "{wrong:?}"
    );

    // Every refusal is in the audit log (after the fresh node's own bootstrap); the
    // token never is.
    let refused = 3 * 3 + 1 + 2; // 3 per guarded path, /nope, kmsctl without and with a wrong token
    let all = audit_lines(&audit, |l| l.len() > refused);
    assert_eq!(all.len(), refused + 1, "{all:#?}");
    assert_eq!(events(&all)[0], "cluster.bootstrap");
    let lines = &all[1..];
    assert!(
        events(lines).iter().all(|e| *e == "admin.auth_failed"),
        "{lines:#?}"
    );
    let first = &lines[0];
    assert_eq!(first["node_id"], 1);
    assert_eq!(first["details"]["path"], "/status");
    assert_eq!(first["details"]["reason"], "missing_token");
    assert!(
        first["details"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{first}"
    );
    assert!(first["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(lines[1]["details"]["reason"], "invalid_token");
    assert_eq!(lines[2]["details"]["reason"], "not_bearer");
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains(TOKEN), "{raw}");
    assert!(!k.log_text().contains(TOKEN));
}

#[test]
fn token_file_and_audit_events_in_the_log_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let k = Kmsd::start(
        &dir.path().join("d"),
        &["--admin-token-file", token_file.to_str().unwrap()],
    );
    assert_eq!(get(&k, "/status", &[]).code, 401);
    let r = get(&k, "/status", &[&format!("Authorization: Bearer {TOKEN}")]);
    assert_eq!(r.code, 200, "{r:?}");
    let r = get(&k, "/clients", &["Authorization: Bearer t0ken"]);
    assert_eq!(r.code, 401, "{r:?}");
    // No audit_log: the event is in the normal log under target kmsd::audit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !k.log_text().contains("admin.auth_failed") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = k.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("admin.auth_failed"))
        .unwrap_or_else(|| panic!("no audit event in the log:\n{log}"));
    assert!(
        line.contains("kmsd::audit") && line.contains("INFO"),
        "{line}"
    );
    assert!(!log.contains(TOKEN));
}

#[test]
fn print_config_redacts_secrets() {
    let out = Command::new(kmsd_bin())
        .args([
            "--admin-token",
            TOKEN,
            "--dns-tsig-key-name",
            "kms-key",
            "--dns-tsig-secret",
            "c2VjcmV0c2VjcmV0c2VjcmV0",
            "--print-config",
        ])
        .env_remove("KMSD_ADMIN_TOKEN")
        .output()
        .expect("run kmsd");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!shown.contains("c2VjcmV0c2VjcmV0c2VjcmV0"), "{shown}");
    assert!(shown.contains("admin_token = \"<redacted>\""), "{shown}");
    assert!(
        shown.contains("dns_tsig_secret = \"<redacted>\""),
        "{shown}"
    );
    assert!(shown.contains("dns_tsig_key_name = \"kms-key\""), "{shown}");
    // The env form is redacted too; without a token nothing is.
    let out = Command::new(kmsd_bin())
        .arg("--print-config")
        .env("KMSD_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run kmsd");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("admin_token = \"<redacted>\"") && !shown.contains(TOKEN),
        "{shown}"
    );
    let out = Command::new(kmsd_bin())
        .arg("--print-config")
        .env_remove("KMSD_ADMIN_TOKEN")
        .output()
        .expect("run kmsd");
    assert!(!text(&out.stdout).contains("<redacted>"));
    // Both token sources at once: a clear refusal to start.
    let out = Command::new(kmsd_bin())
        .args([
            "--admin-token",
            TOKEN,
            "--admin-token-file",
            "/dev/null",
            "--print-config",
        ])
        .output()
        .expect("run kmsd");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("admin_token_file") && !err.contains(TOKEN),
        "{err}"
    );
}

#[test]
fn warns_when_the_admin_api_leaves_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("127.0.0.1:{}", free_port_on("127.0.0.1"));
    let open = Kmsd::start_on(
        "0.0.0.0",
        &dir.path().join("open"),
        &["--cluster-listen", &cluster],
    );
    let log = open.log_text();
    assert!(
        log.contains("WARN") && log.contains("without a token"),
        "{log}"
    );
    drop(open);
    let cluster = format!("127.0.0.1:{}", free_port_on("127.0.0.1"));
    let guarded = Kmsd::start_on(
        "0.0.0.0",
        &dir.path().join("guarded"),
        &["--cluster-listen", &cluster, "--admin-token", TOKEN],
    );
    assert_eq!(get(&guarded, "/status", &[]).code, 401);
    assert!(!guarded.log_text().contains("without a token"));
}

#[test]
fn audit_log_records_operator_membership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let c = LocalCluster::start(1, &["--audit-log", audit.to_str().unwrap()]);
    let node1 = c.cluster_addr(0);
    let (mut n2, addr2) = c.launch_joiner(2, &[]);
    let ok = |args: &[&str]| {
        let out = ctl(args, &[]);
        assert!(out.status.success(), "kmsctl {args:?}: {out:?}");
    };
    ok(&[
        "cluster",
        "add-learner",
        "--cluster",
        &node1,
        "--id",
        "2",
        "--addr",
        &addr2,
    ]);
    n2.wait_ready();
    ok(&["cluster", "promote", "--cluster", &node1, "--id", "2"]);
    ok(&["cluster", "remove", "--cluster", &node1, "--id", "2"]);
    n2.stop();

    let want = [
        "cluster.bootstrap",
        "cluster.add_learner",
        "cluster.promote",
        "cluster.remove",
    ];
    let lines = audit_lines(&audit, |l| l.len() >= want.len());
    assert_eq!(events(&lines), want, "{lines:#?}");
    assert!(lines
        .iter()
        .all(|l| l["node_id"] == 1 && l["details"]["ok"] == true));
    let add = &lines[1]["details"];
    assert_eq!(add["node_id"], 2);
    assert_eq!(add["addr"], addr2);
    assert!(
        add["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{add}"
    );
    assert_eq!(lines[2]["details"]["added"], serde_json::json!([2]));
    assert_eq!(lines[3]["details"]["removed"], serde_json::json!([2]));
    assert_eq!(lines[3]["details"]["voters_after"], serde_json::json!([1]));
    assert_eq!(lines[0]["details"]["members"]["1"], node1);
}
