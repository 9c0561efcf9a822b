//! Graceful shutdown of a leader: it finishes what is in flight, hands leadership over to
//! a caught-up voter before it stops Raft, and flushes; activations sent to the other nodes
//! meanwhile are all answered, nothing answered is lost, and the stopped node restarts from
//! its flushed state.
//!
//! Without a hand-over no follower could be leader when the old leader's process has
//! exited: voters refuse votes for a lease (800 ms here) after the last heartbeat, and
//! their own election timers fire only after the lease plus 400–800 ms.

use kms_tests::cluster::LocalCluster;
use kms_tests::harness::activate_at;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default timings (election timeout 400–800 ms, heartbeat 100 ms).
const TIMINGS: [&str; 4] = ["--heartbeat-ms", "100", "--election-timeout-ms", "400"];

/// A cluster of `n` nodes whose audit logs go to `audits`.
fn start(n: usize, audits: &std::path::Path) -> LocalCluster {
    LocalCluster::start_with(n, &TIMINGS, |i| {
        vec![
            "--audit-log".into(),
            audits
                .join(format!("{}.jsonl", i + 1))
                .display()
                .to_string(),
        ]
    })
}

/// The audit events named `event` in node `index`'s audit log.
fn audit_events(audits: &std::path::Path, index: usize, event: &str) -> Vec<Value> {
    std::fs::read_to_string(audits.join(format!("{}.jsonl", index + 1)))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == event)
        .collect()
}

/// Role, term and leader of each running node other than `skip`.
fn views(cluster: &LocalCluster, skip: usize) -> Vec<(usize, Value)> {
    (0..cluster.nodes.len())
        .filter(|i| *i != skip)
        .filter_map(|i| {
            cluster.nodes[i]
                .try_status()
                .map(|s| (i, s["raft"].clone()))
        })
        .collect()
}

fn dump(cluster: &LocalCluster) -> String {
    let mut out = String::new();
    for (i, n) in cluster.nodes.iter().enumerate() {
        let log = n.log_text();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        out += &format!(
            "--- node {} ---\n{}\nstatus: {:?}\n",
            i + 1,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            n.try_status().map(|s| s["raft"].clone())
        );
    }
    out
}

/// Activations against `addr` in a loop until `stop` (at most 400), returning each exit
/// code.
fn keep_activating(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<i32> {
    let mut codes = Vec::new();
    while !stop.load(Ordering::Relaxed) && codes.len() < 400 {
        codes.push(activate_at(addr, &[]).1);
    }
    codes
}

/// Stops the leader of an `n`-node cluster while another node keeps activating, and checks
/// the hand-over; returns the old leader's index, the new leader's and the hand-over's
/// audit details.
fn hand_over(n: usize, audits: &std::path::Path) -> (LocalCluster, usize, usize, Value) {
    let mut cluster = start(n, audits);
    let leader = cluster.wait_leader(Duration::from_secs(30));
    // As on any cluster that has run a while, the leader's own vote is older than a lease
    // (it is renewed only by elections), so it grants its successor's vote at once.
    std::thread::sleep(Duration::from_millis(1_000));
    let term = cluster.nodes[leader].status()["raft"]["term"]
        .as_u64()
        .expect("term");
    let follower = (leader + 1) % n;
    let (_, code) = cluster.nodes[follower].activate(&[]);
    assert_eq!(code, 3);

    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = stop.clone();
        let addr = cluster.nodes[follower].kms;
        std::thread::spawn(move || keep_activating(addr, stop))
    };
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    cluster.nodes[leader].stop();
    let took = stopping.elapsed();
    // The old process is gone: a new leader must already be in charge.
    let at_exit = views(&cluster, leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_leader = loop {
        if let Some((i, _)) = views(&cluster, leader)
            .into_iter()
            .find(|(_, v)| v["role"] == "leader")
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader\n{}",
            dump(&cluster)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let codes = loader.join().expect("activation thread");
    println!(
        "{n} nodes: stop took {took:?}; node {} leads; {} activations during the stop, exit codes {:?}",
        new_leader + 1,
        codes.len(),
        codes.iter().filter(|c| **c != 0 && **c != 3).collect::<Vec<_>>()
    );

    assert!(
        at_exit.iter().any(|(i, v)| *i == new_leader
            && v["role"] == "leader"
            && v["term"].as_u64() > Some(term)),
        "when the old leader exited, no follower was leader yet: {at_exit:?}"
    );
    let handed = audit_events(audits, leader, "cluster.leadership_handover");
    assert_eq!(
        handed.len(),
        1,
        "hand-over recorded in the old leader's audit log: {:?}\n{}",
        audit_events(audits, leader, "cluster.leadership_handover_failed"),
        dump(&cluster)
    );
    let details = handed[0]["details"].clone();
    println!("hand-over: {details}");
    assert_eq!(details["from_term"], term);
    assert_eq!(details["successor"], details["new_leader"]);
    assert_eq!(details["new_leader"], (new_leader + 1) as u64);
    assert!(details["new_term"].as_u64() > Some(term));
    assert!(
        cluster.nodes[leader].log_text().contains("state flushed"),
        "graceful stop flushed: {}",
        cluster.nodes[leader].log_text()
    );
    assert!(!codes.is_empty());
    assert!(
        // 3: answered with a count still below the product's minimum; 0: activated.
        codes.iter().all(|c| *c == 0 || *c == 3),
        "every activation during the hand-over answered: {codes:?}"
    );
    // Nothing answered was lost: 1 + the loader's, counted once each.
    let total = 1 + codes.len() as u64;
    let statuses = cluster.wait_converged(Duration::from_secs(10));
    assert!(statuses.iter().all(|s| s["total_requests"] == total));
    (cluster, leader, new_leader, details)
}

/// The hand-over tests time leases and elections of 3 and 5 real nodes: run one at a time,
/// so that the others' clusters do not starve them of CPU on a small machine (elections
/// churned when they overlapped on 2 cores).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_stopping_leader_hands_over_and_nothing_is_lost() {
    let _one_at_a_time = serial();
    let audits = tempfile::tempdir().expect("tempdir");
    let (mut cluster, leader, new_leader, details) = hand_over(3, audits.path());
    // Three voters: the successor wins at once with the old leader's vote.
    assert_eq!(
        details["new_term"].as_u64(),
        details["from_term"].as_u64().map(|t| t + 1),
        "won on its first campaign: {details}"
    );
    // The stopped node comes back from disk and catches up.
    let total = cluster.nodes[new_leader].status()["total_requests"].clone();
    cluster.nodes[leader].spawn_again();
    cluster.nodes[leader].wait_ready();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.nodes[leader].status()["total_requests"] != total {
        assert!(Instant::now() < deadline, "restarted node did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn five_voters_hand_over_once_their_leases_expire() {
    let _one_at_a_time = serial();
    // The other voters refuse until their lease (800 ms) runs out; the successor keeps
    // campaigning and wins right after, before any voter's own election timer
    // (lease + 400..800 ms) — which `hand_over` checks: the successor leads when the old
    // leader exits.
    let audits = tempfile::tempdir().expect("tempdir");
    let (_cluster, _, _, details) = hand_over(5, audits.path());
    assert!(details["took_ms"].as_u64().is_some(), "{details}");
}

#[test]
fn a_stopping_follower_hands_nothing_over() {
    let _one_at_a_time = serial();
    let audits = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(3, audits.path());
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = (leader + 1) % 3;
    cluster.nodes[follower].stop();
    assert!(cluster.nodes[follower].log_text().contains("state flushed"));
    assert!(audit_events(audits.path(), follower, "cluster.leadership_handover").is_empty());
    assert!(audit_events(
        audits.path(),
        follower,
        "cluster.leadership_handover_failed"
    )
    .is_empty());
    assert_eq!(cluster.leader(), Some(leader), "leadership untouched");
}

#[test]
fn an_unanswering_voter_is_passed_over() {
    let _one_at_a_time = serial();
    let audits = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(5, audits.path());
    let leader = cluster.wait_leader(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1_000));
    // The lowest-id follower has the whole log (nothing is written after this) but is
    // frozen: it would be asked first, and never answers.
    let frozen = (0..5).find(|i| *i != leader).expect("a follower");
    cluster.nodes[frozen].signal("STOP");
    cluster.nodes[leader].stop();
    cluster.nodes[frozen].signal("CONT");
    let handed = audit_events(audits.path(), leader, "cluster.leadership_handover");
    assert_eq!(
        handed.len(),
        1,
        "{:?}\n{}",
        audit_events(audits.path(), leader, "cluster.leadership_handover_failed"),
        dump(&cluster)
    );
    let successor = handed[0]["details"]["successor"].as_u64();
    assert!(successor.is_some());
    assert_ne!(successor, Some(frozen as u64 + 1), "{}", handed[0]);
    assert_eq!(handed[0]["details"]["new_leader"].as_u64(), successor);
}
