//! A voter's data directory wiped in place, under load, as an operator does it (a PVC deleted,
//! a disk replaced): 3 real `kmsd` processes on loopback, `kmsctl bench` through a node that
//! stays up, the victim killed with SIGKILL, its directory removed and the process started
//! again with the same flags.
//!
//! What must hold: no node panics; the totals a node reports never decrease while its process
//! runs; the wiped node does not vote or accept entries under its old identity, but is
//! removed and taken back as a learner under a new incarnation, then promoted to voter again;
//! and at the end every node counts every answered activation exactly once (the bench's
//! per-activation log reconciled against each node's inventory and total). The victim is
//! first a follower, then the leader.

use kms_tests::cluster::LocalCluster;
use kms_tests::docker::{Bench, BenchLoad};
use kms_tests::harness::{http_get, KeepLogsOnPanic};
use kms_tests::ledger::Ledger;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Totals every node reported, checked to never decrease within one process lifetime.
struct Sampler {
    last: Arc<Mutex<Vec<Option<u64>>>>,
    paused: Arc<Vec<AtomicBool>>,
    violations: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Sampler {
    fn start(admins: Vec<String>) -> Sampler {
        let n = admins.len();
        let last = Arc::new(Mutex::new(vec![None; n]));
        let paused: Arc<Vec<AtomicBool>> =
            Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
        let violations = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (l, p, v, d) = (
            last.clone(),
            paused.clone(),
            violations.clone(),
            done.clone(),
        );
        let handle = std::thread::spawn(move || {
            let mut samples = 0;
            // Bounded: at most 10 minutes even if the test forgets to stop it.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !d.load(Ordering::Relaxed) && Instant::now() < deadline {
                for (i, admin) in admins.iter().enumerate() {
                    if p[i].load(Ordering::Acquire) {
                        continue;
                    }
                    let Ok((200, body)) = http_get(&format!("{admin}/status")) else {
                        continue;
                    };
                    let Ok(s) = serde_json::from_str::<serde_json::Value>(&body) else {
                        continue;
                    };
                    let Some(total) = s["total_requests"].as_u64() else {
                        continue;
                    };
                    if p[i].load(Ordering::Acquire) {
                        continue;
                    }
                    let mut last = l.lock().unwrap();
                    if let Some(prev) = last[i] {
                        if total < prev {
                            v.lock()
                                .unwrap()
                                .push(format!("node {} total went {prev} -> {total}", i + 1));
                        }
                    }
                    last[i] = Some(total.max(last[i].unwrap_or(0)));
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Sampler {
            last,
            paused,
            violations,
            done,
            handle: Some(handle),
        }
    }

    /// Stops sampling node `i` (its process is about to end).
    fn pause(&self, i: usize) {
        self.paused[i].store(true, Ordering::Release);
        // Let a sample in flight finish.
        std::thread::sleep(Duration::from_millis(300));
        self.last.lock().unwrap()[i] = None;
    }

    fn resume(&self, i: usize) {
        self.paused[i].store(false, Ordering::Release);
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.done.store(true, Ordering::Relaxed);
        let samples = self.handle.take().unwrap().join().expect("sampler");
        let v = self.violations.lock().unwrap().clone();
        (samples, v)
    }
}

fn voters(status: &serde_json::Value) -> Vec<u64> {
    status["raft"]["voters"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills node `victim`, wipes its data directory, starts it again and waits until it is a
/// voter again (in every running node's view) and has caught up.
fn wipe_and_rejoin(c: &mut LocalCluster, sampler: &Sampler, victim: usize) -> Duration {
    sampler.pause(victim);
    c.nodes[victim].kill();
    std::fs::remove_dir_all(&c.nodes[victim].data_dir).expect("wipe data dir");
    let started = Instant::now();
    c.nodes[victim].spawn_again();
    sampler.resume(victim);
    let id = victim as u64 + 1;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let statuses: Vec<serde_json::Value> =
            c.nodes.iter().filter_map(|n| n.try_status()).collect();
        let back = statuses.len() == 3
            && statuses.iter().all(|s| voters(s).contains(&id))
            && statuses[victim]["raft"]["quarantined"] == false
            && statuses[victim]["raft"]["applied_index"]
                .as_u64()
                .unwrap_or(0)
                > 0;
        if back {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "node {id} did not rejoin as a voter within 90 s: {:?}\nits log:\n{}",
            statuses
                .iter()
                .map(|s| format!(
                    "node {} role {} voters {:?} learners {} quarantined {} applied {}",
                    s["raft"]["node_id"],
                    s["raft"]["role"],
                    voters(s),
                    s["raft"]["learners"],
                    s["raft"]["quarantined"],
                    s["raft"]["applied_index"]
                ))
                .collect::<Vec<_>>(),
            c.nodes[victim].log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_wiped_voter_rejoins_under_load_and_no_answered_activation_is_lost() {
    let mut c = LocalCluster::start(3, &["--snapshot-every", "50"]);
    let _keep = KeepLogsOnPanic {
        label: "kms-wipe".into(),
        logs: c.nodes.iter().map(|n| n.log.clone()).collect(),
    };
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    // The load goes through the node that is never wiped.
    let stable = 3 - leader - follower;
    let sampler = Sampler::start(c.nodes.iter().map(|n| n.admin.clone()).collect());
    let dir = tempfile::tempdir().expect("tempdir");
    let load = BenchLoad {
        count: 12_000,
        concurrency: 8,
        rate: 400,
        timeout_ms: 5000,
    };
    let bench = Bench::spawn(c.nodes[stable].kms, load, &dir.path().join("bench.jsonl"));

    std::thread::sleep(Duration::from_secs(4));
    let follower_back = wipe_and_rejoin(&mut c, &sampler, follower);
    std::thread::sleep(Duration::from_secs(2));
    let leader_now = c.wait_leader(Duration::from_secs(10));
    let leader_back = wipe_and_rejoin(&mut c, &sampler, leader_now);

    let result = bench.join();
    let (samples, violations) = sampler.finish();
    assert!(samples > 50, "only {samples} status samples");
    assert!(violations.is_empty(), "totals decreased: {violations:?}");

    let statuses = c.wait_converged(Duration::from_secs(60));
    assert_eq!(statuses.len(), 3);
    for (i, n) in c.nodes.iter().enumerate() {
        let log = n.log_text();
        assert!(!log.contains("panicked"), "node {} panicked:\n{log}", i + 1);
        assert_eq!(voters(&statuses[i]), vec![1, 2, 3], "node {}", i + 1);
    }
    for victim in [follower, leader_now] {
        let log = c.nodes[victim].log_text();
        assert!(
            log.contains("taken back as a learner"),
            "node {} did not rejoin through the leader:\n{log}",
            victim + 1
        );
    }

    let mut ledger = Ledger::new();
    ledger.add(&result.lines);
    let answered = result.answered_count();
    assert!(answered > 1000, "only {answered} activations answered");
    for n in &c.nodes {
        let status = n.status();
        let total = status["total_requests"].as_u64().expect("total");
        let r = ledger
            .check(&n.clients(), total)
            .unwrap_or_else(|e| panic!("{}: {e}", n.admin));
        assert_eq!(r.answered, answered);
    }
    eprintln!(
        "wipe under load: {answered} of {} answered; follower (node {}) back as voter after {:.1} s, leader (node {}) after {:.1} s; {samples} samples",
        result.lines.len(),
        follower + 1,
        follower_back.as_secs_f64(),
        leader_now + 1,
        leader_back.as_secs_f64(),
    );
}
