//! Soak of the step-6 store (own write-ahead log, snapshot files): real `kmsd` processes
//! under `kmsctl bench` load for about a minute per case, with a snapshot every
//! [`SNAPSHOT_EVERY`] log entries, so that many snapshots are built and the log is purged
//! again and again while activations keep arriving.
//!
//! - single node: one bench stream;
//! - 3-node cluster: a bench stream through the leader and, at the same time, a smaller one
//!   through a follower (forwarded).
//!
//! While the load runs a checker thread asks every node's `/readyz` (and `/status`) every
//! [`PROBE_EVERY`]. Asserted:
//!
//! 1. every `/readyz` probe answered 200 within [`READY_LIMIT`] (the sled store stopped
//!    answering after minutes of such load);
//! 2. every node built at least [`MIN_SNAPSHOTS`] snapshots (distinct `snapshot_index` values
//!    seen in `/status`) and purged its log at least [`MIN_PURGES`] times (distinct purge
//!    points in the store's own debug line "purging raft log up to this entry");
//! 3. exactly once (`kms_tests::ledger`): every activation a bench saw answered is in every
//!    node's inventory with one request, the inventory holds nothing else but activations
//!    the bench gave up on after the host counted them, and it adds up to `total_requests`;
//!    no request failed on the host (`failed_requests` 0) and at most 1 % failed at the
//!    bench, all by the bench giving up (timeout, reset);
//! 4. the cluster's nodes converge to identical figures (`wait_converged`) and identical
//!    inventories.
//!
//! Printed: throughput, worst `/readyz` latency, snapshots and purges per node.
//!
//! The binaries are those of the test's own profile (`harness::bin_dir`): debug with the
//! command below, release with `--release`. Load duration per case: `KMS_SOAK_SECS`
//! (default 60). A longer run:
//!
//! ```sh
//! KMS_SOAK_SECS=600 cargo test -p kms-tests --test soak -- --nocapture --test-threads 1
//! ```

use kms_tests::cluster::LocalCluster;
use kms_tests::docker::{Bench, BenchLoad};
use kms_tests::harness::{http_get, KeepLogsOnPanic, Kmsd};
use kms_tests::ledger::Ledger;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Log entries between snapshots (small, so snapshots and purges happen often).
const SNAPSHOT_EVERY: &str = "50";
/// Log filter: info, plus the store's debug lines (snapshot built, log purged, segments).
const LOG_LEVEL: &str = "info,kms_cluster::store=debug";
/// Interval of the checker's probes.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Longest a `/readyz` probe may take.
const READY_LIMIT: Duration = Duration::from_secs(1);
/// Snapshots each node must have built during the load.
const MIN_SNAPSHOTS: usize = 5;
/// Log purges each node must have done during the load (openraft purges in batches of 256
/// entries and keeps 500 after the snapshot, so purges are rarer than snapshots).
const MIN_PURGES: usize = 3;
/// Target length of one bench run within a stream.
const CHUNK: Duration = Duration::from_secs(10);
/// Per-activation timeout of the bench, ms.
const BENCH_TIMEOUT_MS: u64 = 5000;
/// Largest share of bench activations allowed to fail (all by the bench giving up).
const MAX_FAILED_SHARE: f64 = 0.01;

fn soak_duration() -> Duration {
    let secs = std::env::var("KMS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs.max(5))
}

/// What the checker saw of one node.
#[derive(Debug, Default)]
struct NodeProbes {
    probes: usize,
    worst: Duration,
    /// Probes that were late or not 200: (seconds into the load, what happened).
    bad: Vec<(f64, String)>,
    snapshots: BTreeSet<u64>,
    /// Changes of (term, leader) in `/status`: (seconds into the load, term, leader).
    leadership: Vec<(f64, u64, Option<u64>)>,
}

/// A thread probing every node's `/readyz` and `/status` every [`PROBE_EVERY`] until told
/// to stop (or `limit` has passed, so it always ends).
struct Checker {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<NodeProbes>>,
}

impl Checker {
    fn start(admins: Vec<String>, limit: Duration) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut seen: Vec<NodeProbes> = admins.iter().map(|_| NodeProbes::default()).collect();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < limit {
                let round = Instant::now();
                for (admin, node) in admins.iter().zip(&mut seen) {
                    let t0 = Instant::now();
                    let r = http_get(&format!("{admin}/readyz"));
                    let took = t0.elapsed();
                    node.probes += 1;
                    node.worst = node.worst.max(took);
                    match r {
                        Ok((200, _)) if took <= READY_LIMIT => {}
                        other => node.bad.push((
                            started.elapsed().as_secs_f64(),
                            format!("{admin}/readyz: {other:?} after {took:?}"),
                        )),
                    }
                    if let Ok((200, body)) = http_get(&format!("{admin}/status")) {
                        let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        if let Some(i) = s["raft"]["snapshot_index"].as_u64() {
                            node.snapshots.insert(i);
                        }
                        let term = s["raft"]["term"].as_u64().unwrap_or(0);
                        let leader = s["raft"]["leader"].as_u64();
                        if node
                            .leadership
                            .last()
                            .is_none_or(|l| (l.1, l.2) != (term, leader))
                        {
                            let t = started.elapsed().as_secs_f64();
                            node.leadership.push((t, term, leader));
                        }
                    }
                }
                std::thread::sleep(PROBE_EVERY.saturating_sub(round.elapsed()));
            }
            seen
        });
        Checker { stop, handle }
    }

    fn finish(self) -> Vec<NodeProbes> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("checker thread")
    }
}

/// What one load stream did.
#[derive(Debug, Default)]
struct Stream {
    lines: Vec<serde_json::Value>,
    answered: usize,
    errors: BTreeMap<String, usize>,
    runs: usize,
    elapsed: Duration,
}

/// Runs `kmsctl bench` against `target` at `concurrency`, run after run, until `duration`
/// has passed; each run is sized from the previous one's throughput to take about
/// [`CHUNK`] (the last one to end near the deadline), so the stream ends by itself.
fn stream(
    target: SocketAddr,
    concurrency: usize,
    duration: Duration,
    dir: &Path,
    label: &str,
) -> Stream {
    let started = Instant::now();
    let mut out = Stream::default();
    let mut rate = 2.0 * concurrency as f64; // a guess for the first run
    while started.elapsed() < duration {
        let left = duration.saturating_sub(started.elapsed()).as_secs_f64();
        let count = (rate * CHUNK.as_secs_f64().min(left)).max(2.0 * concurrency as f64) as usize;
        let log = dir.join(format!("bench-{label}-{}.jsonl", out.runs));
        let load = BenchLoad {
            count,
            concurrency,
            rate: 0,
            timeout_ms: BENCH_TIMEOUT_MS,
        };
        let run = Instant::now();
        let r = Bench::spawn(target, load, &log).join();
        let took = run.elapsed().as_secs_f64();
        let answered = r.answered_count();
        rate = (answered as f64 / took).max(1.0);
        out.answered += answered;
        if let Some(errors) = r.errors().as_object() {
            for (k, v) in errors {
                *out.errors.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0) as usize;
            }
        }
        out.lines.extend(r.lines);
        out.runs += 1;
    }
    out.elapsed = started.elapsed();
    out
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Distinct purge points (log indexes) in a node's log, from the store's debug line
/// `purging raft log up to this entry log_id=T1-N1-863`.
fn purges(log: &str) -> BTreeSet<u64> {
    log.lines()
        .filter(|l| l.contains("purging raft log up to this entry"))
        .filter_map(|l| l.split("log_id=").nth(1))
        .filter_map(|id| {
            id.split_whitespace()
                .next()?
                .rsplit('-')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// `raft/log/*.wal` segment files of a data directory.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir.join("raft/log"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Asserts the checker's findings and the snapshot/purge counts of each node; returns the
/// worst `/readyz` latency and a per-node summary.
fn check_probes(nodes: &[&Kmsd], seen: &[NodeProbes], duration: Duration) -> (Duration, String) {
    let mut worst = Duration::ZERO;
    let mut summary = Vec::new();
    if seen.iter().any(|p| !p.bad.is_empty()) {
        let report: Vec<String> = nodes
            .iter()
            .zip(seen)
            .map(|(node, p)| {
                format!(
                    "{}: {} of {} /readyz probes late or not ready: {:?}\n  (seconds, term, leader) seen: {:?}",
                    node.admin,
                    p.bad.len(),
                    p.probes,
                    &p.bad[..p.bad.len().min(10)],
                    p.leadership
                )
            })
            .collect();
        panic!("{}", report.join("\n"));
    }
    for (node, p) in nodes.iter().zip(seen) {
        // A probe per PROBE_EVERY (give or take slow rounds): the checker really ran.
        let expected = (duration.as_secs_f64() / PROBE_EVERY.as_secs_f64() / 2.0) as usize;
        assert!(
            p.probes >= expected,
            "only {} probes of {}",
            p.probes,
            node.admin
        );
        let purged = purges(&node.log_text());
        assert!(
            p.snapshots.len() >= MIN_SNAPSHOTS,
            "{}: only {} distinct snapshot indexes seen: {:?}",
            node.admin,
            p.snapshots.len(),
            p.snapshots
        );
        assert!(
            purged.len() >= MIN_PURGES,
            "{}: only {} log purges: {purged:?}",
            node.admin,
            purged.len()
        );
        worst = worst.max(p.worst);
        summary.push(format!(
            "{}: {} probes, worst {:.0} ms, {} snapshots (last {}), {} purges (last {}), {} segment files",
            node.admin,
            p.probes,
            p.worst.as_secs_f64() * 1000.0,
            p.snapshots.len(),
            p.snapshots.last().copied().unwrap_or(0),
            purged.len(),
            purged.last().copied().unwrap_or(0),
            segments(&node.data_dir).len(),
        ));
    }
    (worst, summary.join("\n  "))
}

/// Exactly once against one node; returns the reconciled figures.
fn check_counts(node: &Kmsd, ledger: &Ledger) -> kms_tests::ledger::Reconciled {
    let status = node.status();
    let total = status["total_requests"].as_u64().expect("total_requests");
    assert_eq!(status["failed_requests"], 0, "{}: {status}", node.admin);
    let inventory = node.clients();
    let r = ledger
        .check(&inventory, total)
        .unwrap_or_else(|e| panic!("{}: {e}", node.admin));
    for (cmid, why) in &r.counted_unanswered {
        assert!(
            why == "timeout" || why == "io",
            "{cmid} failed at the bench with {why:?} yet was counted"
        );
    }
    r
}

fn check_failures(streams: &[&Stream]) {
    for s in streams {
        let attempted = s.lines.len();
        let failed = attempted - s.answered;
        assert!(
            failed as f64 <= MAX_FAILED_SHARE * attempted as f64,
            "{failed} of {attempted} activations failed: {:?}",
            s.errors
        );
        for kind in s.errors.keys() {
            assert!(
                kind == "timeout" || kind == "io",
                "activations failed with {kind}: {:?}",
                s.errors
            );
        }
    }
}

#[test]
fn single_node_soak_past_many_snapshots_and_purges() {
    let duration = soak_duration();
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Kmsd::start(
        &dir.path().join("d"),
        &["--snapshot-every", SNAPSHOT_EVERY, "--log-level", LOG_LEVEL],
    );
    let _keep = KeepLogsOnPanic {
        label: "kms-soak-single".into(),
        logs: vec![node.log.clone()],
    };
    let checker = Checker::start(
        vec![node.admin.clone()],
        duration * 3 + Duration::from_secs(120),
    );
    let load = stream(node.kms, 16, duration, dir.path(), "single");
    let seen = checker.finish();

    let (worst, summary) = check_probes(&[&node], &seen, duration);
    check_failures(&[&load]);
    let mut ledger = Ledger::new();
    ledger.add(&load.lines);
    let r = check_counts(&node, &ledger);
    eprintln!(
        "soak single node: {:.1} s load in {} bench runs, {} of {} answered ({:.1}/s), {} counted unanswered; worst /readyz {:.0} ms\n  {summary}",
        load.elapsed.as_secs_f64(),
        load.runs,
        r.answered,
        ledger.attempted(),
        r.answered as f64 / load.elapsed.as_secs_f64(),
        r.counted_unanswered.len(),
        worst.as_secs_f64() * 1000.0,
    );
}

#[test]
fn three_node_soak_through_leader_and_follower() {
    let duration = soak_duration();
    let mut c = LocalCluster::start(
        3,
        &["--snapshot-every", SNAPSHOT_EVERY, "--log-level", LOG_LEVEL],
    );
    let _keep = KeepLogsOnPanic {
        label: "kms-soak-cluster".into(),
        logs: c.nodes.iter().map(|n| n.log.clone()).collect(),
    };
    let leader = c.wait_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let admins = c.nodes.iter().map(|n| n.admin.clone()).collect();
    let checker = Checker::start(admins, duration * 3 + Duration::from_secs(120));
    let (to_leader, to_follower) = std::thread::scope(|s| {
        let dir = c.dir.path();
        let (l, f) = (c.nodes[leader].kms, c.nodes[follower].kms);
        let a = s.spawn(move || stream(l, 16, duration, dir, "leader"));
        let b = s.spawn(move || stream(f, 4, duration, dir, "follower"));
        (
            a.join().expect("leader stream"),
            b.join().expect("follower stream"),
        )
    });
    let seen = checker.finish();

    for n in &mut c.nodes {
        assert!(
            n.is_running(),
            "{} exited during the soak; log tail:\n{}",
            n.admin,
            tail(&n.log_text(), 40)
        );
    }
    let statuses = c.wait_converged(Duration::from_secs(60));
    assert_eq!(statuses.len(), 3);
    let nodes: Vec<&Kmsd> = c.nodes.iter().collect();
    let (worst, summary) = check_probes(&nodes, &seen, duration);
    check_failures(&[&to_leader, &to_follower]);
    let mut ledger = Ledger::new();
    ledger.add(&to_leader.lines);
    ledger.add(&to_follower.lines);
    let mut reconciled = Vec::new();
    for n in &c.nodes {
        reconciled.push(check_counts(n, &ledger));
    }
    let inventories: Vec<BTreeMap<String, u64>> = c.nodes.iter().map(Kmsd::clients).collect();
    assert!(
        inventories.iter().all(|i| *i == inventories[0]),
        "inventories differ: sizes {:?}",
        inventories.iter().map(BTreeMap::len).collect::<Vec<_>>()
    );
    let elapsed = to_leader.elapsed.max(to_follower.elapsed).as_secs_f64();
    let r = &reconciled[0];
    eprintln!(
        "soak 3 nodes (leader {}, term {}): {elapsed:.1} s load, leader stream {} of {} answered in {} runs, follower stream {} of {} in {} runs; {:.1}/s in all, {} counted unanswered; total {}; worst /readyz {:.0} ms\n  {summary}",
        leader + 1,
        statuses[0]["raft"]["term"],
        to_leader.answered,
        to_leader.lines.len(),
        to_leader.runs,
        to_follower.answered,
        to_follower.lines.len(),
        to_follower.runs,
        r.answered as f64 / elapsed,
        r.counted_unanswered.len(),
        statuses[0]["total_requests"],
        worst.as_secs_f64() * 1000.0,
    );
}
