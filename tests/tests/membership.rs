//! Membership guard rails with real `kmsd` processes: a mistyped membership command must not
//! wedge the cluster. Promoting a learner that never answers is refused and the cluster keeps
//! committing; a learner is removed; a joint configuration whose new voter never appears
//! (forced through the unguarded API, as a drill) is reported in `/status`, the metrics and
//! `kmsctl cluster status`, and recovered with `kmsd --rollback-membership --yes`, after
//! which the cluster commits again and keeps every activation it had counted.

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::{free_port_on, http_get, kmsctl, kmsd_bin, Kmsd};
use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An address on which nothing listens.
fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port_on("127.0.0.1"))
}

fn applied(node: &Kmsd) -> u64 {
    node.status()["raft"]["applied_index"].as_u64().unwrap_or(0)
}

fn total(node: &Kmsd) -> u64 {
    node.status()["total_requests"].as_u64().unwrap_or(0)
}

/// Sends one activation and waits until the node's applied index moves past where it was:
/// the cluster commits.
fn assert_commits(node: &Kmsd, why: &str) {
    let before = applied(node);
    let (_, code) = node.activate(&["--product", "Windows 10 Enterprise"]);
    assert!(code == 0 || code == 3, "{why}: activation failed ({code})");
    let deadline = Instant::now() + Duration::from_secs(10);
    while applied(node) <= before {
        assert!(
            Instant::now() < deadline,
            "{why}: nothing committed in 10 s (applied index stays {before}): {}",
            node.status()["raft"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster_cmd(args: &[&str]) -> (i32, String) {
    let o = kmsctl(args);
    (o.status.code().unwrap_or(-1), text(&o))
}

fn add_learner(cluster: &str, id: u64, addr: &str) -> (i32, String) {
    let id = id.to_string();
    cluster_cmd(&[
        "cluster",
        "add-learner",
        "--cluster",
        cluster,
        "--id",
        &id,
        "--addr",
        addr,
    ])
}

#[test]
fn promote_of_a_dead_learner_is_refused_and_a_learner_is_removed() {
    let c = LocalCluster::start(1, &[]);
    let node = &c.nodes[0];
    let cluster = c.cluster_addr(0);
    assert_commits(node, "fresh single node");
    let dead = dead_addr();

    let (code, out) = add_learner(&cluster, 2, &dead);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: node 2 has not received the log"),
        "{out}"
    );

    let started = Instant::now();
    let (code, out) = cluster_cmd(&["cluster", "promote", "--cluster", &cluster, "--id", "2"]);
    assert_eq!(code, 1, "promote of a dead learner must fail: {out}");
    assert!(
        out.contains("node 2") && out.contains("has not received any log"),
        "{out}"
    );
    assert!(out.contains(&dead), "the refusal names the address: {out}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "refused within the catch-up wait, not a client deadline: {:?}",
        started.elapsed()
    );
    let raft = &node.status()["raft"];
    assert_eq!(raft["membership_state"], "stable", "{raft}");
    assert_eq!(raft["voters"].as_object().unwrap().len(), 1, "{raft}");
    assert!(raft["learners"].get("2").is_some(), "{raft}");
    assert_commits(node, "after the refused promote");

    let (code, out) = cluster_cmd(&["cluster", "remove", "--cluster", &cluster, "--id", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("node 2 (learner) removed"), "{out}");
    let raft = &node.status()["raft"];
    assert!(raft["learners"].as_object().unwrap().is_empty(), "{raft}");
    let (code, out) = cluster_cmd(&["cluster", "remove", "--cluster", &cluster, "--id", "1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("last voter"), "{out}");
    assert_commits(node, "after removing the learner");
}

#[test]
fn a_joint_configuration_whose_voter_never_appears_is_rolled_back() {
    let mut c = LocalCluster::start(1, &[]);
    let cluster = c.cluster_addr(0);
    for _ in 0..3 {
        assert_commits(&c.nodes[0], "before the drill");
    }
    let counted = total(&c.nodes[0]);
    assert!(counted >= 3, "{}", c.nodes[0].status());
    let dead = dead_addr();
    let (code, out) = add_learner(&cluster, 2, &dead);
    assert_eq!(code, 0, "{out}");

    // The drill: voters {1} -> {1,2} without the guard, as a wrong tool or an old kmsctl would.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let forced = rt.block_on(async {
        kms_cluster::network::ClusterClient::connect(&cluster)
            .change_membership_forced(BTreeSet::from([1, 2]))
            .await
    });
    let err = forced.expect_err("a joint configuration with an absent voter cannot commit");
    assert!(err.to_string().contains("did not commit within"), "{err}");
    assert!(err.to_string().contains("--rollback-membership"), "{err}");

    // Reported everywhere an operator looks.
    let raft = c.nodes[0].status()["raft"].clone();
    assert_eq!(raft["membership_state"], "joint", "{raft}");
    assert_eq!(raft["membership_detail"], "joint ({1} -> {1,2})", "{raft}");
    let (code, body) = http_get(&format!("{}/metrics", c.nodes[0].admin)).unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("kms_raft_membership_state{state=\"joint\"} 1"),
        "metrics say joint"
    );
    let (code, table) = cluster_cmd(&["cluster", "status", "--cluster", &cluster]);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains("membership: joint ({1} -> {1,2})"),
        "{table}"
    );
    // Nothing else can be changed meanwhile, and the refusal says the way out.
    let (code, out) = cluster_cmd(&["cluster", "remove", "--cluster", &cluster, "--id", "2"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("kmsd --rollback-membership"), "{out}");

    // The way out: stop, look, roll back, start.
    c.nodes[0].stop();
    let data_dir = c.nodes[0].data_dir.clone();
    let rollback = |yes: bool| {
        let mut cmd = std::process::Command::new(kmsd_bin());
        cmd.args(["--rollback-membership", "--node-id", "1", "--data-dir"])
            .arg(&data_dir);
        if yes {
            cmd.arg("--yes");
        }
        cmd.output().expect("run kmsd --rollback-membership")
    };
    let shown = rollback(false);
    let out = text(&shown);
    assert_eq!(shown.status.code(), Some(0), "{out}");
    assert!(out.contains("joint ({1} -> {1,2})"), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    let done = rollback(true);
    let out = text(&done);
    assert_eq!(done.status.code(), Some(0), "{out}");
    assert!(out.contains("done"), "{out}");
    let again = rollback(true);
    assert!(
        text(&again).contains("nothing to roll back"),
        "{}",
        text(&again)
    );

    c.nodes[0].spawn_again();
    c.nodes[0].wait_ready();
    let node = &c.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.status()["raft"]["role"] != "leader" {
        assert!(Instant::now() < deadline, "{}", node.status()["raft"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let raft = node.status()["raft"].clone();
    assert_eq!(raft["membership_state"], "stable", "{raft}");
    assert_eq!(raft["voters"].as_object().unwrap().len(), 1, "{raft}");
    assert_commits(node, "after the rollback");
    assert!(total(node) > counted, "every counted activation is kept");
    let (code, out) = cluster_cmd(&["cluster", "remove", "--cluster", &cluster, "--id", "2"]);
    assert_eq!(code, 0, "{out}");
    assert_commits(node, "after removing the learner that never appeared");
}
