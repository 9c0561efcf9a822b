//! DNS SRV (`_vlmcs._tcp`) end to end against a real BIND 9: `kmsctl dns render` output
//! accepted by `named-checkzone` and applied with `nsupdate`; `kmsd` publishing its own
//! record by TSIG-signed dynamic update, withdrawing it on a graceful stop; `kmsctl dns
//! check` ordering and activating like a Windows client; a wrong TSIG secret refused by
//! BIND without harming kmsd.

use kms_tests::bind::{self, Bind, KEY_NAME, KEY_SECRET};
use kms_tests::harness::{free_port_on, kmsctl, Kmsd};
use std::time::{Duration, Instant};

const ZONE: &str = "campus.test";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn render_passes_checkzone_and_nsupdate_applies_it() {
    let render_args = [
        "dns",
        "render",
        "--domain",
        ZONE,
        "--node",
        "kms1.campus.test:1688:0:100",
        "--node",
        "kms2.campus.test:1700:10:50",
        "--ttl",
        "600",
    ];
    let out = kmsctl(&render_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stdout(&out);
    assert_eq!(
        lines,
        "_vlmcs._tcp.campus.test. 600 IN SRV 0 100 1688 kms1.campus.test.\n\
         _vlmcs._tcp.campus.test. 600 IN SRV 10 50 1700 kms2.campus.test.\n"
    );

    // The lines in a zone file pass named-checkzone.
    let dir = tempfile::tempdir().unwrap();
    let zone_file = dir.path().join("campus.test.zone");
    std::fs::write(
        &zone_file,
        format!(
            "$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\nns1 IN A 127.0.0.1\n\
             kms1 IN A 10.0.0.11\nkms2 IN A 10.0.0.12\n{lines}"
        ),
    )
    .unwrap();
    let check = bind::checkzone(ZONE, &zone_file);
    assert!(
        check.status.success(),
        "named-checkzone: {}{}",
        stdout(&check),
        stderr(&check)
    );
    assert!(stdout(&check).contains("OK"), "{}", stdout(&check));

    // The same hosts from a TOML file render identically.
    let nodes = dir.path().join("nodes.toml");
    std::fs::write(
        &nodes,
        "domain = \"campus.test\"\nttl = 600\n\n[[node]]\ntarget = \"kms1.campus.test\"\npriority = 0\nweight = 100\n\n[[node]]\ntarget = \"kms2.campus.test\"\nport = 1700\npriority = 10\nweight = 50\n",
    )
    .unwrap();
    let out = kmsctl(&["dns", "render", "--file", nodes.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), lines);

    // Bad input: a clear error, exit 2.
    let bad = kmsctl(&["dns", "render", "--domain", ZONE, "--node", "kms1:1688:x:1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("priority"), "{}", stderr(&bad));

    // The nsupdate script applied with the real nsupdate makes BIND serve the records.
    let b = Bind::start(ZONE, &[]);
    let mut args = render_args.to_vec();
    let server = b.addr();
    args.extend_from_slice(&[
        "--nsupdate",
        "--server",
        &server,
        "--key-name",
        KEY_NAME,
        "--key-secret",
        KEY_SECRET,
    ]);
    let out = kmsctl(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(
        script.contains(&format!("server 127.0.0.1 {}\n", b.port)),
        "{script}"
    );
    assert!(script.contains(&format!("key hmac-sha256:{KEY_NAME} {KEY_SECRET}\n")));
    assert!(script.ends_with("send\n"), "{script}");
    let applied = b.nsupdate(&script);
    assert!(
        applied.status.success(),
        "nsupdate failed: {}{}\nnamed log:\n{}",
        stdout(&applied),
        stderr(&applied),
        b.log()
    );
    assert_eq!(
        b.srv(),
        vec![
            "0 100 1688 kms1.campus.test.".to_string(),
            "10 50 1700 kms2.campus.test.".to_string()
        ]
    );
}

fn start_publishing(
    b: &Bind,
    root: &std::path::Path,
    ip: &str,
    target: &str,
    priority: u16,
    weight: u16,
    secret: &str,
) -> Kmsd {
    let cluster = format!("{ip}:{}", free_port_on(ip));
    let server = b.addr();
    let (p, w) = (priority.to_string(), weight.to_string());
    Kmsd::start_on(
        ip,
        &root.join(target),
        &[
            "--cluster-listen",
            &cluster,
            "--dns-publish",
            "--dns-server",
            &server,
            "--dns-zone",
            ZONE,
            "--dns-target",
            target,
            "--dns-priority",
            &p,
            "--dns-weight",
            &w,
            "--dns-ttl",
            "60",
            "--dns-tsig-key-name",
            KEY_NAME,
            "--dns-tsig-secret",
            secret,
        ],
    )
}

fn dns_check(b: &Bind) -> (serde_json::Value, i32) {
    let server = b.addr();
    let out = kmsctl(&[
        "dns", "check", ZONE, "--server", &server, "--seed", "7", "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "dns check printed no JSON ({e}): {}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

#[test]
fn kmsd_publishes_and_withdraws_its_srv_record() {
    let b = Bind::start(ZONE, &["node1 IN A 127.0.0.1", "node2 IN A 127.0.0.2"]);
    let root = tempfile::tempdir().unwrap();
    let mut k1 = start_publishing(
        &b,
        root.path(),
        "127.0.0.1",
        "node1.campus.test",
        0,
        100,
        KEY_SECRET,
    );
    let k2 = start_publishing(
        &b,
        root.path(),
        "127.0.0.2",
        "node2.campus.test",
        10,
        50,
        KEY_SECRET,
    );
    let r1 = format!("0 100 {} node1.campus.test.", k1.kms.port());
    let r2 = format!("10 50 {} node2.campus.test.", k2.kms.port());
    let both = b.wait_srv(20, |v| v.len() == 2);
    assert_eq!(both, vec![r1.clone(), r2.clone()]);

    // Status shows DNS publishing like slmgr /dlv.
    assert_eq!(k1.status()["dns_publishing"], true);
    let st = kmsctl(&["status", "--admin", &k1.admin]);
    assert!(
        stdout(&st).contains("DNS publishing enabled"),
        "{}",
        stdout(&st)
    );

    // dns check: both targets in priority order, the first one answers and is used.
    let (v, code) = dns_check(&b);
    assert_eq!(code, 0, "{v}");
    let t = v["targets"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{v}");
    assert_eq!(t[0]["target"], "node1.campus.test");
    assert_eq!(t[0]["priority"], 0);
    assert_eq!(t[0]["address"], k1.kms.to_string());
    assert_eq!(t[0]["used"], true);
    // A young host answers with its count (below 25): an answer, as for a client.
    assert!(
        ["activated", "count"].contains(&t[0]["result"].as_str().unwrap()),
        "{v}"
    );
    assert_eq!(t[1]["target"], "node2.campus.test");
    assert_eq!(t[1]["used"], false);
    assert_eq!(v["used"], "node1.campus.test");

    // Re-publishing with changed settings replaces the node's old record, not others'.
    // (Node 2 is killed, so its record stays, and restarts with another weight and port.)
    drop(k2);
    let mut k2 = start_publishing(
        &b,
        root.path(),
        "127.0.0.2",
        "node2.campus.test",
        10,
        60,
        KEY_SECRET,
    );
    let r2b = format!("10 60 {} node2.campus.test.", k2.kms.port());
    let v = b.wait_srv(20, |v| v.contains(&r2b) && v.len() == 2);
    assert_eq!(v, vec![r1.clone(), r2b.clone()]);

    // Graceful stop of node 1 withdraws its record; clients move to node 2.
    k1.stop();
    let v = b.wait_srv(10, |v| v.len() == 1);
    assert_eq!(v, vec![r2b.clone()]);
    assert!(
        k1.log_text().contains("SRV record withdrawn"),
        "{}",
        k1.log_text()
    );
    let (v, code) = dns_check(&b);
    assert_eq!(code, 0, "{v}");
    let t = v["targets"].as_array().unwrap();
    assert_eq!(t.len(), 1, "{v}");
    assert_eq!(t[0]["target"], "node2.campus.test");
    assert_eq!(t[0]["address"], k2.kms.to_string());
    assert_eq!(t[0]["used"], true);

    k2.stop();
    b.wait_srv(10, |v| v.is_empty());
    // No record left: dns check fails (exit 1).
    let (v, code) = dns_check(&b);
    assert_eq!(code, 1, "{v}");
}

#[test]
fn dns_check_falls_back_when_the_first_target_is_down() {
    let b = Bind::start(ZONE, &["node1 IN A 127.0.0.1", "node2 IN A 127.0.0.2"]);
    let root = tempfile::tempdir().unwrap();
    let k2 = start_publishing(
        &b,
        root.path(),
        "127.0.0.2",
        "node2.campus.test",
        10,
        50,
        KEY_SECRET,
    );
    // A static record of priority 0 pointing at a closed port: unreachable.
    let dead = free_port_on("127.0.0.1");
    let script = format!(
        "server 127.0.0.1 {}\nzone {ZONE}.\nupdate add _vlmcs._tcp.{ZONE}. 60 IN SRV 0 100 {dead} node1.{ZONE}.\nsend\n",
        b.port
    );
    let out = b.nsupdate(&script);
    assert!(out.status.success(), "{}", stderr(&out));
    b.wait_srv(20, |v| v.len() == 2);
    let (v, code) = dns_check(&b);
    assert_eq!(code, 0, "{v}");
    let t = v["targets"].as_array().unwrap();
    assert_eq!(t[0]["target"], "node1.campus.test");
    assert_eq!(t[0]["result"], "unreachable");
    assert_eq!(t[0]["used"], false);
    assert_eq!(t[1]["target"], "node2.campus.test");
    assert_eq!(t[1]["address"], k2.kms.to_string());
    assert_eq!(t[1]["used"], true);
}

#[test]
fn wrong_tsig_secret_is_refused_and_kmsd_keeps_running() {
    let b = Bind::start(ZONE, &["node1 IN A 127.0.0.1"]);
    let root = tempfile::tempdir().unwrap();
    // Valid base64, wrong key.
    let wrong = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE=";
    let mut k = start_publishing(
        &b,
        root.path(),
        "127.0.0.1",
        "node1.campus.test",
        0,
        100,
        wrong,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k.log_text().contains("refused the TSIG signature") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            k.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // BIND refused the update: no record, and it says why.
    assert!(b.srv().is_empty(), "{:?}", b.srv());
    let named_log = b.log();
    assert!(
        named_log.contains("signature")
            || named_log.contains("BADSIG")
            || named_log.contains("tsig"),
        "named log:\n{named_log}"
    );
    // kmsd keeps serving and keeps retrying.
    assert!(k.is_running());
    let (v, code) = k.activate(&[]);
    assert!(code == 0 || code == 3, "{v}");
    assert_eq!(k.status()["dns_publishing"], true);
    std::thread::sleep(Duration::from_millis(2500));
    let failures = k.log_text().matches("DNS publishing failed").count();
    assert!(failures >= 2, "no retry:\n{}", k.log_text());
    // A graceful stop still works (the withdrawal fails and is only logged).
    k.stop();
    assert!(k.log_text().contains("bye"), "{}", k.log_text());
}
