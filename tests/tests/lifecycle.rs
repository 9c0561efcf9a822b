//! The activation lifecycle with real processes: a 3-node cluster whose clock is moved ahead
//! with `clock_offset_secs` (a config file reloaded with SIGHUP on every node), so that 200
//! days pass in seconds.
//!
//! - A machine that stops renewing moves active → overdue → expiring → expired, on every
//!   node; it leaves the 30-day count but stays in the inventory until the 200-day
//!   retention, then leaves it.
//! - A machine answered below its minimum and one refused for an unlicensed product show
//!   `failing` with the HRESULT and its reason; the refused one is not counted.
//! - A renamed machine keeps its old name in its history; the answering node is recorded.
//! - `kmsctl clients --state ... --csv/--json` and `--machine` answer the helpdesk's
//!   questions from any node; `/metrics` exports the states per count group.
//! - Snapshots and a restart keep every lifecycle field (single node, snapshot every 5
//!   entries).

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::{http_get, kmsctl_ok, Kmsd};
use serde_json::Value as Json;
use std::time::{Duration, Instant};

const DAY: i64 = 24 * 3600;
const PC_A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
const PC_B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
const PC_C: &str = "0c0c0c0c-0000-4000-8000-00000000000c";

/// `/clients` of one node with query `q`.
fn clients(admin: &str, q: &str) -> Vec<Json> {
    let (code, body) = http_get(&format!("{admin}/clients?{q}")).expect("clients");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Vec<Json>>(&body).expect("clients json")
}

/// The one inventory entry of `cmid` on one node.
fn entry(admin: &str, cmid: &str) -> Option<Json> {
    let list = clients(admin, &format!("cmid={cmid}"));
    assert!(list.len() <= 1, "{list:?}");
    list.into_iter().next()
}

/// Waits until `check` holds for the entry of `cmid` on every node (replication takes a
/// moment after the answer).
fn on_every_node(c: &LocalCluster, cmid: &str, what: &str, check: impl Fn(Option<&Json>) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in &c.nodes {
        loop {
            let e = entry(&n.admin, cmid);
            if check(e.as_ref()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {cmid} is not {what}: {e:?}",
                n.admin
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn state_is(state: &'static str) -> impl Fn(Option<&Json>) -> bool {
    move |e| e.is_some_and(|e| e["state"] == state)
}

/// `kmsctl activate` against `k` as machine `cmid` named `name`, with `extra` flags;
/// returns the JSON line and the exit code.
fn activate_as(k: &Kmsd, cmid: &str, name: &str, extra: &[&str]) -> (Json, i32) {
    let mut args = vec!["--cmid", cmid, "--machine-name", name];
    args.extend_from_slice(extra);
    k.activate(&args)
}

/// `kmsctl clients` against node `i` with `args`; stdout.
fn kmsctl_clients(c: &LocalCluster, i: usize, args: &[&str]) -> String {
    let mut all = vec!["clients", "--admin", &c.nodes[i].admin];
    all.extend_from_slice(args);
    String::from_utf8(kmsctl_ok(&all).stdout).expect("utf-8")
}

/// The value of one exported series on `admin`'s `/metrics`, waiting up to 30 s (the
/// lifecycle figures are recomputed every 15 s) for it to equal `want`.
fn wait_metric(admin: &str, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(&format!("{admin}/metrics")).expect("metrics");
        let got = body
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{admin}: {series} is {got:?}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn machines_move_through_the_lifecycle_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kmsd.toml");
    std::fs::write(&file, "clock_offset_secs = 0\n").unwrap();
    let cfg = file.display().to_string();
    let c = LocalCluster::start(3, &["--config", &cfg, "--licensed-groups", "windows"]);
    c.wait_leader(Duration::from_secs(10));

    // A: activated through node 1, then renamed and renewed through node 2.
    let (v, code) = activate_as(&c.nodes[0], PC_A, "LAB-PC-01", &["--required-count", "1"]);
    assert_eq!(code, 0, "{v}");
    let (v, code) = activate_as(&c.nodes[1], PC_A, "LAB-PC-01B", &["--required-count", "1"]);
    assert_eq!(code, 0, "{v}");
    // B: a Windows client that needs 50 machines: answered, counted, below its minimum.
    let (v, code) = activate_as(&c.nodes[2], PC_B, "LAB-PC-02", &["--required-count", "50"]);
    assert_eq!(code, 3, "below the minimum: {v}");
    // C: Office on a host licensed for Windows only: refused with 0xC004F042.
    let (v, code) = activate_as(
        &c.nodes[2],
        PC_C,
        "OFFICE-PC",
        &["--product", "office-2016"],
    );
    assert_ne!(code, 0, "refused: {v}");

    on_every_node(&c, PC_A, "active, renamed, answered by node 2", |e| {
        e.is_some_and(|e| {
            e["state"] == "active"
                && e["counted"] == true
                && e["machine_name"] == "LAB-PC-01B"
                && e["previous_names"] == serde_json::json!(["LAB-PC-01"])
                && e["answered_by"] == 2
                && e["requests"] == 2
                && e["consecutive_failures"] == 0
                && e["last_success_ms"].is_u64()
        })
    });
    on_every_node(&c, PC_B, "failing below its minimum, counted", |e| {
        e.is_some_and(|e| {
            e["state"] == "failing"
                && e["counted"] == true
                && e["last_failure"]["hresult"] == "0xC004F038"
                && e["last_failure"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("minimum"))
                && e["consecutive_failures"] == 1
                && e["answered_by"] == 3
                && e["last_success_ms"].is_null()
        })
    });
    on_every_node(&c, PC_C, "failing, refused, not counted", |e| {
        e.is_some_and(|e| {
            e["state"] == "failing"
                && e["counted"] == false
                && e["count_group"] == "office"
                && e["last_failure"]["hresult"] == "0xC004F042"
                && e["last_failure"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("not licensed"))
        })
    });
    for n in &c.nodes {
        let st = n.status();
        let office = st["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["name"] == "office").cloned());
        assert!(
            office.is_none_or(|g| g["active_clients"] == 0),
            "a refused machine is never counted: {st}"
        );
    }

    // The helpdesk's views, from a follower.
    let failing = kmsctl_clients(&c, 2, &["--state", "failing", "--csv"]);
    assert!(failing.starts_with("cmid,machine_name,"), "{failing}");
    assert_eq!(failing.lines().count(), 3, "header, B and C: {failing}");
    assert!(failing.contains("0xC004F038") && failing.contains("0xC004F042"));
    let one = kmsctl_clients(&c, 2, &["--machine", "lab-pc-01"]);
    assert!(one.contains("Previous names:         LAB-PC-01\n"), "{one}");
    assert!(one.contains("Answered by node:       2"), "{one}");
    assert!(one.contains("Lifecycle state:        active"), "{one}");
    wait_metric(
        &c.nodes[1].admin,
        "kms_clients_lifecycle{count_group=\"office\",state=\"failing\"}",
        1.0,
    );

    // 10 days on: A missed a renewal (7 days + 1 day slack).
    c.set_clock_offset(&file, 10 * DAY);
    on_every_node(&c, PC_A, "overdue", state_is("overdue"));
    let overdue: Vec<Json> =
        serde_json::from_str(&kmsctl_clients(&c, 0, &["--state", "overdue", "--json"])).unwrap();
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    assert_eq!(overdue[0]["cmid"], PC_A);

    // 155 days on: its activation ends within the 30-day horizon. It left the 30-day count
    // long ago but is still listed.
    c.set_clock_offset(&file, 155 * DAY);
    on_every_node(&c, PC_A, "expiring and out of the count", |e| {
        e.is_some_and(|e| e["state"] == "expiring" && e["counted"] == false)
    });
    let expiring = kmsctl_clients(&c, 1, &["--state", "expiring", "--group", "windows"]);
    assert!(
        expiring.contains(PC_A) && expiring.contains("1 client machine(s)"),
        "{expiring}"
    );
    wait_metric(
        &c.nodes[0].admin,
        "kms_clients_lifecycle{count_group=\"windows\",state=\"expiring\"}",
        1.0,
    );

    // 181 days on: expired.
    c.set_clock_offset(&file, 181 * DAY);
    on_every_node(&c, PC_A, "expired", state_is("expired"));

    // 201 days on: past the 200-day retention. Pruning happens when the next request is
    // applied: a new machine arrives, and A, B and C leave the inventory on every node.
    c.set_clock_offset(&file, 201 * DAY);
    let (v, code) = c.nodes[0].activate(&["--required-count", "1"]);
    assert_eq!(code, 0, "{v}");
    for cmid in [PC_A, PC_B, PC_C] {
        on_every_node(&c, cmid, "gone after the retention", |e| e.is_none());
    }
}

#[test]
fn snapshots_and_restart_keep_the_lifecycle_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kmsd::start(
        &dir.path().join("n"),
        &["--snapshot-every", "5", "--licensed-groups", "windows"],
    );
    assert_eq!(
        activate_as(&k, PC_A, "OLD", &["--required-count", "1"]).1,
        0
    );
    assert_eq!(
        activate_as(&k, PC_A, "NEW", &["--required-count", "1"]).1,
        0
    );
    assert_ne!(
        activate_as(&k, PC_C, "OFFICE-PC", &["--product", "office-2016"]).1,
        0
    );
    assert_eq!(
        activate_as(&k, PC_B, "LAB-PC-02", &["--required-count", "50"]).1,
        3
    );
    // More entries than `snapshot_every`, so the state is in a snapshot and a log tail.
    for _ in 0..12 {
        k.activate(&["--required-count", "1"]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.status()["raft"]["snapshot_index"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no snapshot: {}", k.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = clients(&k.admin, "");
    assert_eq!(before.len(), 15, "{before:?}");
    k.restart();
    let after = clients(&k.admin, "");
    assert_eq!(after, before, "a restart changes no inventory field");
    let a = entry(&k.admin, PC_A).unwrap();
    assert_eq!(a["previous_names"], serde_json::json!(["OLD"]));
    assert_eq!(a["answered_by"], 1);
    let c = entry(&k.admin, PC_C).unwrap();
    assert_eq!(
        (&c["counted"], &c["state"]),
        (&Json::Bool(false), &Json::from("failing"))
    );
}
