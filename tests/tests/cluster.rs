//! Real `kmsd` processes on 127.0.0.x forming Raft clusters of 3 and 5 nodes: any node
//! answers with the cluster's count, statistics converge exactly, a killed leader is
//! replaced while a bench runs and no answered activation is lost or double-counted,
//! restarts from disk and a wiped node's rejoin by snapshot keep the state.

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::{bench, kmsctl_ok, Kmsd};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn group<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap()
}

fn activate_many(node: &Kmsd, n: usize, product: &str) -> Vec<serde_json::Value> {
    (0..n)
        .map(|_| {
            let (v, code) = node.activate(&["--product", product]);
            assert!(code == 0 || code == 3, "activation failed: {v}");
            v
        })
        .collect()
}

fn check_every_node_answers_the_same(size: usize) {
    let mut c = LocalCluster::start(size, &[]);
    // Distinct clients through every node; counts as one host would give them.
    let mut seen = 0u64;
    for node in &c.nodes {
        for v in activate_many(node, 4, "Windows 10 Enterprise") {
            seen += 1;
            assert_eq!(
                v["current_count"].as_u64().unwrap(),
                seen,
                "count is cluster-wide"
            );
        }
    }
    activate_many(&c.nodes[size - 1], 2, "office-2016");
    // A known client renewing through each node sees the same count everywhere.
    let (first, _) = c.nodes[0].activate(&["--product", "Windows 10 Enterprise"]);
    let cmid = first["cmid"].as_str().unwrap().to_string();
    let counts: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| {
            n.activate(&["--cmid", &cmid]).0["current_count"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(counts.iter().all(|x| *x == seen + 1), "{counts:?}");
    let statuses = c.wait_converged(Duration::from_secs(10));
    for s in &statuses {
        let requests = seen + 2 + 1 + size as u64;
        assert_eq!(s["total_requests"].as_u64().unwrap(), requests, "{s}");
        assert_eq!(
            group(s, "windows")["current_count"].as_u64().unwrap(),
            seen + 1
        );
        assert_eq!(group(s, "office")["current_count"], 2);
        assert_eq!(s["raft"]["voters"].as_object().unwrap().len(), size);
    }
    // The ePID is cluster-wide too.
    let epids: Vec<_> = statuses
        .iter()
        .map(|s| group(s, "windows")["epid"].clone())
        .collect();
    assert!(epids.iter().all(|e| *e == epids[0] && !e.is_null()));
}

#[test]
fn three_nodes_answer_with_one_count() {
    check_every_node_answers_the_same(3);
}

#[test]
fn five_nodes_answer_with_one_count() {
    check_every_node_answers_the_same(5);
}

#[test]
fn killing_the_leader_during_a_bench_loses_and_doubles_nothing() {
    let mut c = LocalCluster::start(3, &["--commit-timeout-ms", "3000"]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let target = (leader + 1) % 3;
    let log = c.dir.path().join("bench.jsonl");
    let kms = c.nodes[target].kms;
    let log_arg = log.to_str().unwrap().to_string();
    let bench = std::thread::spawn(move || {
        let extra = [
            "--rate",
            "1000",
            "--protocol",
            "6",
            "--timeout-ms",
            "5000",
            "--log",
            &log_arg,
        ];
        bench(kms, 3000, 16, &extra)
    });
    std::thread::sleep(Duration::from_millis(1200));
    let killed_at = Instant::now();
    c.nodes[leader].kill();
    // A new leader among the survivors, within the election timeout (300-600 ms) plus
    // detection slack.
    let new_leader = loop {
        if let Some(i) = c.leader() {
            break i;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "no new leader"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let election = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(
        election < Duration::from_secs(2),
        "new leader after {election:?}"
    );
    let out = bench.join().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3000);
    let answered: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["answered"] == true).collect();
    assert!(
        answered.len() > 2500,
        "too few answered: {}",
        answered.len()
    );

    let statuses = c.wait_converged(Duration::from_secs(15));
    let total = statuses[0]["total_requests"].as_u64().unwrap();
    // Every answered activation is counted; nothing beyond what was attempted is.
    assert!(
        total >= answered.len() as u64,
        "{total} < {}",
        answered.len()
    );
    assert!(total <= lines.len() as u64, "{total} > {}", lines.len());
    // Exactly once: every answered client appears once in the inventory with one request.
    let clients = kms_tests::harness::http_get(&format!(
        "{}/clients?group=windows",
        c.nodes[new_leader].admin
    ))
    .unwrap()
    .1;
    let clients: Vec<serde_json::Value> = serde_json::from_str(&clients).unwrap();
    let by_cmid: BTreeMap<String, u64> = clients
        .iter()
        .map(|c| {
            (
                c["cmid"].as_str().unwrap().to_string(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    for a in &answered {
        let cmid = a["cmid"].as_str().unwrap();
        assert_eq!(
            by_cmid.get(cmid),
            Some(&1),
            "answered {cmid} counted wrongly"
        );
    }
    assert_eq!(by_cmid.values().sum::<u64>(), total);
    eprintln!(
        "leader kill: new leader after {election:?}; bench {} answered of {}, longest gap {} ms; cluster total {total}",
        answered.len(),
        lines.len(),
        report["longest_gap_ms"]
    );
    // The killed node rejoins and catches up.
    c.nodes[leader].spawn_again();
    c.nodes[leader].wait_ready();
    let statuses = c.wait_converged(Duration::from_secs(15));
    assert_eq!(statuses.len(), 3);
}

#[test]
fn restart_all_nodes_from_disk_and_rejoin_a_wiped_node_by_snapshot() {
    let mut c = LocalCluster::start(3, &["--snapshot-every", "20"]);
    let out = bench(c.nodes[0].kms, 400, 4, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let before = c.wait_converged(Duration::from_secs(10));
    assert_eq!(before[0]["total_requests"], 400);

    // All nodes down, all up again: same state.
    for n in &mut c.nodes {
        n.stop();
    }
    for n in &mut c.nodes {
        n.spawn_again();
    }
    for n in &mut c.nodes {
        n.wait_ready();
    }
    let after = c.wait_converged(Duration::from_secs(15));
    assert_eq!(after[0]["total_requests"], 400);
    assert_eq!(after[0]["groups"], before[0]["groups"]);

    // Wipe node 3 and start it empty: it catches up by snapshot (the log is compacted).
    c.nodes[2].stop();
    std::fs::remove_dir_all(&c.nodes[2].data_dir).unwrap();
    c.nodes[0].activate(&["--product", "Windows 10 Enterprise"]);
    c.nodes[2].spawn_again();
    c.nodes[2].wait_ready();
    let rejoined = c.wait_converged(Duration::from_secs(20));
    assert_eq!(rejoined.len(), 3);
    assert_eq!(rejoined[2]["total_requests"], 401);
    assert!(rejoined[2]["raft"]["snapshot_index"].as_u64().unwrap_or(0) > 0);
    // It came back through the leader under a new incarnation, not under its old identity.
    let log = c.nodes[2].log_text();
    assert!(log.contains("taken back as a learner"), "{log}");
    assert_ne!(
        rejoined[2]["raft"]["incarnation"],
        before[2]["raft"]["incarnation"]
    );
}

fn activation(cmid: uuid::Uuid) -> kms_state::Command {
    kms_state::Command::Activation(kms_state::Activation {
        request_id: uuid::Uuid::new_v4(),
        time_ms: 1_795_485_552_000,
        count_group: Some("windows".into()),
        product_group: Some("windows-10-11".into()),
        kms_counted_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
        application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
        sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
        cmid,
        machine_name: "dup-test".into(),
        client_vm: false,
        license_state: kms_protocol::LicenseState::Licensed,
        grace_minutes: 0,
        required_count: 25,
        protocol_major: 6,
        answered_by: 1,
        outcome: kms_state::Outcome::Answered,
    })
}

#[test]
fn a_request_id_is_applied_once_when_retried() {
    let mut c = LocalCluster::start(3, &[]);
    let leader = c.wait_leader(Duration::from_secs(10));
    let addrs: Vec<String> = c
        .peers
        .split(',')
        .map(|p| p.split_once('=').unwrap().1.to_string())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cmd = activation(uuid::Uuid::new_v4());
    let other = activation(uuid::Uuid::new_v4());
    rt.block_on(async {
        let client = kms_cluster::network::ClusterClient::connect(&addrs[leader]);
        let first = client.forward(std::slice::from_ref(&cmd)).await.unwrap();
        // The same request again (a retry after a timeout), alone and inside a batch.
        let again = client.forward(std::slice::from_ref(&cmd)).await.unwrap();
        let batch = client.forward(&[other.clone(), cmd.clone()]).await.unwrap();
        use kms_cluster::network::ForwardOutcome::Applied;
        use kms_state::CommandResult::Activation as A;
        let (Applied(f), Applied(a), Applied(b)) = (first, again, batch) else {
            panic!("leader did not apply")
        };
        let (A(f), A(a), A(b1)) = (&f[0], &a[0], &b[1]) else {
            panic!("wrong result kind")
        };
        assert!(!f.duplicate);
        assert!(a.duplicate && b1.duplicate);
        assert_eq!(f.active_clients, a.active_clients);
    });
    let s = c.wait_converged(Duration::from_secs(10));
    assert_eq!(s[0]["total_requests"], 2);
    assert_eq!(group(&s[0], "windows")["active_clients"], 2);
}

/// Rows of a `kmsctl cluster status` table whose MEMBER column is `kind` (the line under the
/// table may name voters too).
fn member_rows(table: &str, kind: &str) -> usize {
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(kind))
        .count()
}

#[test]
fn membership_add_learner_promote_remove() {
    let mut c = LocalCluster::start(3, &[]);
    let node1_cluster = c.cluster_addr(0);
    let (mut n4, addr4) = c.launch_joiner(4, &[]);
    // Some history first, so the new node has something to catch up on.
    activate_many(&c.nodes[0], 3, "Windows 10 Enterprise");
    let ok = |args: &[&str]| String::from_utf8_lossy(&kmsctl_ok(args).stdout).into_owned();
    ok(&[
        "cluster",
        "add-learner",
        "--cluster",
        &node1_cluster,
        "--id",
        "4",
        "--addr",
        &addr4,
    ]);
    n4.wait_ready();
    ok(&[
        "cluster",
        "promote",
        "--cluster",
        &node1_cluster,
        "--id",
        "4",
    ]);
    let table = ok(&["cluster", "status", "--cluster", &node1_cluster]);
    assert_eq!(member_rows(&table, "voter"), 4, "{table}");
    // The new voter answers with the cluster's count.
    let (v, _) = n4.activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(v["current_count"], 4);
    c.nodes.push(n4);
    c.wait_converged(Duration::from_secs(10));
    ok(&[
        "cluster",
        "remove",
        "--cluster",
        &node1_cluster,
        "--id",
        "4",
    ]);
    let table = ok(&["cluster", "status", "--cluster", &node1_cluster]);
    assert_eq!(member_rows(&table, "voter"), 3, "{table}");
    assert!(!table.contains(&addr4), "{table}");
    let mut n4 = c.nodes.pop().unwrap();
    n4.stop();
    let s = c.wait_converged(Duration::from_secs(10));
    assert_eq!(s[0]["raft"]["voters"].as_object().unwrap().len(), 3);
}
