//! Graceful shutdown of a leader: it finishes what is in flight and flushes; the other
//! nodes elect a new leader within the election timeout plus the leader lease, and nothing
//! answered is lost (the stopped node restarts from its flushed state).

use kms_tests::cluster::LocalCluster;
use std::time::{Duration, Instant};

#[test]
fn a_stopped_leader_is_replaced_and_nothing_is_lost() {
    // The defaults: election timeout 400-800 ms; the lease is the upper bound.
    let mut cluster = LocalCluster::start(
        3,
        &["--heartbeat-ms", "100", "--election-timeout-ms", "400"],
    );
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let follower = (leader + 1) % 3;
    let (_, code) = cluster.nodes[follower].activate(&[]);
    assert_eq!(code, 3);

    let stopped = Instant::now();
    cluster.nodes[leader].stop();
    let took_down = stopped.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_leader = loop {
        let found = (0..3).filter(|i| *i != leader).find(|i| {
            cluster.nodes[*i]
                .try_status()
                .is_some_and(|s| s["raft"]["role"] == "leader")
        });
        if let Some(i) = found {
            break i;
        }
        if Instant::now() > deadline {
            for (i, n) in cluster.nodes.iter().enumerate() {
                let log = n.log_text();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                eprintln!(
                    "--- node {} ---\n{}",
                    i + 1,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                eprintln!("status: {:?}", n.try_status().map(|s| s["raft"].clone()));
            }
            panic!("no new leader");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let gap = stopped.elapsed();
    println!(
        "stop took {took_down:?}; new leader node {} after {gap:?}",
        new_leader + 1
    );
    assert!(
        cluster.nodes[leader].log_text().contains("state flushed"),
        "graceful stop flushed: {}",
        cluster.nodes[leader].log_text()
    );
    assert!(
        gap < Duration::from_secs(4),
        "new leader only after {gap:?}"
    );
    // Nothing answered was lost: the new leader has the activation.
    let (_, code) = cluster.nodes[new_leader].activate(&[]);
    assert_eq!(code, 3);
    assert_eq!(cluster.nodes[new_leader].status()["total_requests"], 2);
    // The stopped node comes back from disk and catches up.
    cluster.nodes[leader].spawn_again();
    cluster.nodes[leader].wait_ready();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.nodes[leader].status()["total_requests"] != 2 {
        assert!(Instant::now() < deadline, "restarted node did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
}
