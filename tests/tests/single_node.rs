//! End-to-end tests of a single `kmsd` process driven by the real `kmsctl` binary over
//! loopback: protocols, products, counting, persistence, operator policy.

use kms_tests::harness::{bench, kmsctl, Kmsd};

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn activates_every_protocol_and_product_kind() {
    let dir = data_dir();
    let k = Kmsd::start(&dir.path().join("d"), &[]);
    let cases: &[(&str, &str, &str)] = &[
        ("4", "Windows 7 Enterprise", "windows"),
        ("5", "Windows 8 Enterprise", "windows"),
        ("6", "Windows 10 Enterprise", "windows"),
        ("6", "Windows Server 2019 Standard", "windows"),
        ("5", "Windows Server 2012 R2 Standard", "windows"),
        ("4", "Office Professional Plus 2010", "office2010"),
        ("5", "Office Professional Plus 2013", "office"),
        ("6", "Office Professional Plus 2016", "office"),
    ];
    let mut epids = std::collections::BTreeMap::new();
    for (proto, product, group) in cases {
        let (v, code) = k.activate(&["--protocol", proto, "--product", product]);
        // 0 activated or 3 count still below the product's minimum: both are verified answers.
        assert!(
            code == 0 || code == 3,
            "{product} v{proto}: exit {code}: {v}"
        );
        assert_eq!(v["protocol"], proto.parse::<u64>().unwrap());
        assert_eq!(v["renewal_interval"], 10080);
        assert_eq!(v["activation_interval"], 120);
        let epid = v["epid"].as_str().unwrap().to_string();
        kms_protocol::epid::Epid::parse(&epid).expect("well-formed ePID");
        // One stable ePID per count group.
        let prev = epids.insert(group.to_string(), epid.clone());
        if let Some(p) = prev {
            assert_eq!(p, epid, "ePID of {group} changed");
        }
    }
    assert_eq!(epids.len(), 3);
    assert_ne!(epids["windows"], epids["office"]);
    // Server and client share the Windows pool: 5 Windows requests so far.
    let s = k.status();
    let win = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "windows")
        .unwrap();
    assert_eq!(win["current_count"], 5);
    assert_eq!(s["total_requests"], 8);
    assert_eq!(s["failed_requests"], 0);
    assert_eq!(s["requests_by_license_state"]["initial_grace"], 8);
}

#[test]
fn count_crosses_minimum_and_caps_at_twice_it() {
    let dir = data_dir();
    let k = Kmsd::start(&dir.path().join("d"), &[]);
    let mut first_cmid = String::new();
    for i in 1..=55u64 {
        let (v, code) = k.activate(&["--product", "Windows 10 Enterprise"]);
        let count = v["current_count"].as_u64().unwrap();
        assert_eq!(count, i.min(50), "client {i}");
        if i < 25 {
            assert_eq!(code, 3, "client {i} must see an insufficient count");
            assert_eq!(v["error"], "0xC004F038");
        } else {
            assert_eq!(code, 0, "client {i} must activate: {v}");
        }
        if i == 1 {
            first_cmid = v["cmid"].as_str().unwrap().to_string();
        }
    }
    // A known client renewing does not raise the count.
    let (v, _) = k.activate(&["--cmid", &first_cmid]);
    assert_eq!(v["current_count"], 50);
    let s = k.status();
    let win = &s["groups"].as_array().unwrap()[0];
    assert_eq!(win["active_clients"], 55);
    assert_eq!(win["current_count"], 50);
    // Office counts separately and caps at 10.
    for i in 1..=12u64 {
        let (v, _) = k.activate(&["--product", "office-2019"]);
        assert_eq!(v["current_count"].as_u64().unwrap(), i.min(10));
    }
}

#[test]
fn restart_keeps_counts_epids_and_statistics() {
    let dir = data_dir();
    // A directory that exists world-readable, as an operator may have created it: kmsd makes
    // it owner-only (it holds the client inventory).
    std::fs::create_dir(dir.path().join("d")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let mut k = Kmsd::start(&dir.path().join("d"), &[]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("d"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
    }
    let mut files = 0;
    for entry in walk(&dir.path().join("d")) {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&entry).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", entry.display());
        } else {
            files += 1;
            assert_eq!(mode, 0o600, "{} is {mode:o}", entry.display());
        }
    }
    assert!(files > 0, "the data directory holds files once started");
    for _ in 0..3 {
        k.activate(&[
            "--product",
            "Windows 10 Enterprise",
            "--license-state",
            "licensed",
        ]);
    }
    let (office, _) = k.activate(&["--product", "office-2016"]);
    let before = k.status();
    k.restart();
    let after = k.status();
    for key in [
        "total_requests",
        "failed_requests",
        "requests_by_license_state",
        "groups",
    ] {
        assert_eq!(before[key], after[key], "{key} changed across restart");
    }
    let (v, _) = k.activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(v["current_count"], 4);
    assert_eq!(v["epid"], before["groups"][0]["epid"]);
    let (o, _) = k.activate(&["--product", "office-2016"]);
    assert_eq!(o["epid"], office["epid"]);
    assert_eq!(o["hwid"], office["hwid"]);
}

/// A clean stop snapshots what the node applied, so the next start reads the snapshot and
/// replays no log; the counts come back the same.
#[test]
fn a_clean_stop_snapshots_what_was_applied() {
    let dir = data_dir();
    // One activation at a time is one log entry: 400 entries stay below the interval (no
    // snapshot while running) and above a tenth of it (a snapshot at the stop).
    let mut k = Kmsd::start(&dir.path().join("d"), &["--snapshot-every", "1000"]);
    let out = bench(k.kms, 400, 1, &[]);
    assert!(out.status.success(), "bench failed: {out:?}");
    let before = k.status();
    assert_eq!(before["total_requests"], 400);
    assert!(
        before["raft"]["snapshot_index"].is_null(),
        "no snapshot before the stop: {}",
        before["raft"]
    );
    let applied = before["raft"]["applied_index"]
        .as_u64()
        .expect("applied index");
    k.restart();
    assert!(
        k.log_text().contains("final snapshot taken"),
        "the stop took no snapshot; log:\n{}",
        k.log_text()
    );
    let after = k.status();
    assert!(
        after["raft"]["snapshot_index"].as_u64() >= Some(applied),
        "snapshot {} does not cover the {applied} entries applied before the stop",
        after["raft"]
    );
    for key in ["total_requests", "requests_by_license_state", "groups"] {
        assert_eq!(before[key], after[key], "{key} changed across restart");
    }
}

#[test]
fn unlicensed_group_is_refused_and_counted_as_failed() {
    let dir = data_dir();
    let k = Kmsd::start(&dir.path().join("d"), &["--licensed-groups", "windows"]);
    let (v, code) = k.activate(&["--product", "office-2016"]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["hresult"], "0xC004F042");
    let (_, code) = k.activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(code, 3);
    // An unknown counted id is refused the same way.
    let (v, code) = k.activate(&["--kms-id", "01234567-89ab-cdef-0123-456789abcdef"]);
    assert_eq!(code, 4);
    assert_eq!(v["hresult"], "0xC004F042");
    let s = k.status();
    assert_eq!(s["total_requests"], 3);
    assert_eq!(s["failed_requests"], 2);
    // Failed requests are not in the license-state buckets (as slmgr /dlv counts them).
    assert_eq!(s["requests_by_license_state"]["initial_grace"], 1);
    let office = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "office")
        .unwrap();
    assert_eq!(office["failed_requests"], 1);
    assert_eq!(office["current_count"], 0);
    assert!(k.log_text().contains("result=0xc004f042"));
}

#[test]
fn client_clock_check_refuses_skewed_clients() {
    let dir = data_dir();
    let k = Kmsd::start(&dir.path().join("d"), &["--check-client-time", "true"]);
    let (v, code) = k.activate(&["--time-offset-minutes", "300"]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["hresult"], "0xC004F06C");
    let (_, code) = k.activate(&["--time-offset-minutes", "-200"]);
    assert_eq!(code, 3);
}

#[test]
fn catalog_extension_adds_a_product() {
    let dir = data_dir();
    let cat = dir.path().join("extra.toml");
    std::fs::write(
        &cat,
        r#"
[[group]]
name = "server-2028"
display = "Windows Server 2028 (test)"
kms_counted_id = "aaaaaaaa-1111-4222-8333-444444444444"
application = "windows"
minimum_count = 5
protocol = 6
kind = "server"

[[sku]]
name = "Windows Server 2028 Standard (test)"
id = "bbbbbbbb-1111-4222-8333-444444444444"
group = "server-2028"
"#,
    )
    .unwrap();
    let cat_s = cat.display().to_string();
    let k = Kmsd::start(&dir.path().join("d"), &["--catalog-file", &cat_s]);
    let (v, code) = k.activate(&[
        "--kms-id",
        "aaaaaaaa-1111-4222-8333-444444444444",
        "--required-count",
        "1",
    ]);
    assert_eq!(code, 0, "{v}");
    let out = kmsctl(&["products", "--catalog-file", &cat_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("server-2028"));
}

#[test]
fn status_and_clients_render_like_slmgr() {
    let dir = data_dir();
    let k = Kmsd::start(&dir.path().join("d"), &[]);
    k.activate(&["--machine-name", "LAB-PC-042.campus.example", "--client-vm"]);
    k.activate(&[
        "--product",
        "office-2016",
        "--license-state",
        "notification",
    ]);
    let out = kmsctl(&["status", "--admin", &k.admin]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for line in [
        "Current count: 1",
        &format!("Listening on Port: {}", k.kms.port()),
        "KMS priority: Normal",
        "Total requests received: 2",
        "Requests with License Status Notification: 1",
        "Requests with License Status Initial grace period: 1",
    ] {
        assert!(text.contains(line), "missing {line:?}:\n{text}");
    }
    let out = kmsctl(&[
        "clients", "--admin", &k.admin, "--group", "windows", "--json",
    ]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["machine_name"], "LAB-PC-042.campus.example");
    assert_eq!(list[0]["client_vm"], true);
    assert_eq!(list[0]["product"], "Windows 10 Enterprise");
    let out = kmsctl(&["clients", "--admin", &k.admin]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 client machine(s)"));

    // One machine, by its client machine id or its name (any case), as a helpdesk asks.
    let cmid = list[0]["cmid"].as_str().unwrap().to_string();
    let one = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["clients", "--admin", &k.admin, "--json"];
        all.extend_from_slice(args);
        let out = kmsctl(&all);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let by_cmid = one(&["--cmid", &cmid]);
    assert_eq!(by_cmid.len(), 1);
    assert_eq!(by_cmid[0]["machine_name"], "LAB-PC-042.campus.example");
    let by_name = one(&["--machine", "lab-pc-042.CAMPUS.example"]);
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0]["cmid"], cmid.as_str());
    assert!(one(&["--machine", "LAB-PC-043.campus.example"]).is_empty());
    assert!(one(&["--cmid", "00000000-0000-0000-0000-000000000001"]).is_empty());
}

#[test]
fn bad_config_is_rejected_with_a_clear_message() {
    let dir = data_dir();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "listen = [\"127.0.0.1:1\"]\nrenewal_intervall = 5\n").unwrap();
    let out = std::process::Command::new(kms_tests::harness::kmsd_bin())
        .args(["--config", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("renewal_intervall"), "{err}");
    let out = std::process::Command::new(kms_tests::harness::kmsd_bin())
        .args(["--licensed-groups", "windows,bogus-group", "--data-dir"])
        .arg(dir.path().join("x"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus-group"));
}

/// A data directory the process may not write (a volume another user or root wrote, as
/// after running kmsd once as root): kmsd stops with the error and says what to do. As root
/// the second start runs as `nobody` (root may write anywhere); otherwise the log directory
/// is made read-only.
#[test]
fn a_data_directory_it_may_not_write_is_refused_with_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir();
    let data = dir.path().join("d");
    let mut node = Kmsd::start(&data, &[]);
    node.stop();
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut cmd = if root {
        // `nobody` must reach the binary and the directory above the data.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("kmsd");
        std::fs::copy(kms_tests::harness::kmsd_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        let log = data.join("raft").join("log");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o500)).unwrap();
        std::process::Command::new(kms_tests::harness::kmsd_bin())
    };
    let port = |p: u16| format!("127.0.0.1:{p}");
    let out = cmd
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &port(kms_tests::harness::free_port())])
        .args(["--admin-listen", &port(kms_tests::harness::free_port())])
        .args(["--cluster-listen", &port(kms_tests::harness::free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kmsd started:\n{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        err.lines().last().is_some_and(|l| l.contains("chown -R")),
        "the last line does not say what to do:\n{err}"
    );
    if !root {
        let log = data.join("raft").join("log");
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// Every path under `dir` (not `dir` itself).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
