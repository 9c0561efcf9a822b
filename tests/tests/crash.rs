//! Crash safety of the step-6 store (own write-ahead log, snapshot files): `kmsd` killed with
//! SIGKILL in the middle of writes, restarted on the same data directory, and damaged log
//! segments at start.
//!
//! - single node, a snapshot every [`SNAPSHOT_EVERY`] entries, `kmsctl bench` running: killed
//!   [`KILLS`] times (`KMS_CRASH_KILLS`) at seeded moments (`KMS_CRASH_SEED`, default from the
//!   clock; printed). The moments rotate between a random delay, right after the store
//!   logged a finished snapshot ("built raft snapshot", written after the rename) and right
//!   after it logged a purge ("purging raft log up to this entry", logged just before the
//!   purge record is written and whole segments are deleted). The last two are best effort:
//!   the test tails the node's log every 2 ms, so the kill lands a few ms after the line,
//!   while the snapshot or purge work may or may not still be running. After each restart
//!   the node must become ready, its `total_requests` must not have decreased, and every
//!   activation any bench saw answered so far must be in the inventory exactly once (with
//!   nothing else there but activations cut off by a kill, see `kms_tests::ledger`).
//! - 3 nodes: the leader and a follower killed alternately while a bench runs through a
//!   surviving node, restarted; the same invariants on every node after each round, and
//!   identical figures and inventories on all nodes at the end.
//! - damaged segments: garbage appended to the newest `raft/log/*.wal` segment of a stopped
//!   node is cut off at restart with a warning naming the file, and nothing acknowledged is
//!   lost; a byte flipped in the middle of an older segment makes the start fail with an
//!   error naming that file.
//!
//! A SIGKILL ends the process, not the machine: what `write` handed to the kernel survives
//! in the page cache, so these runs check the store's process-crash consistency (recovery,
//! replay, pointers, snapshot-and-purge ordering); torn writes of a power loss are covered
//! by the store's unit tests (every torn tail) and by the damage test here.
//!
//! ```sh
//! cargo test -p kms-tests --test crash -- --nocapture --test-threads 1
//! KMS_CRASH_SEED=42 KMS_CRASH_KILLS=20 cargo test -p kms-tests --test crash -- --nocapture --test-threads 1
//! ```

use kms_tests::cluster::LocalCluster;
use kms_tests::docker::{now_ms, Bench, BenchLoad};
use kms_tests::harness::{KeepLogsOnPanic, Kmsd};
use kms_tests::ledger::Ledger;
use kms_tests::rng::Rng;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Log entries between snapshots: tiny, so snapshots and purges happen all the time.
const SNAPSHOT_EVERY: &str = "20";
/// Log filter: info, plus the store's debug lines the kill moments wait for.
const LOG_LEVEL: &str = "info,kms_cluster::store=debug";
/// Kills of the single node by default (`KMS_CRASH_KILLS`).
const KILLS: usize = 8;
/// Kill rounds of the 3-node cluster by default (`KMS_CRASH_CLUSTER_KILLS`).
const CLUSTER_KILLS: usize = 6;
/// Pace of the bench in the 3-node rounds, activations per second.
const CLUSTER_RATE: u32 = 35;
/// Per-activation timeout of the bench, ms.
const BENCH_TIMEOUT_MS: u64 = 5000;
/// Longest wait for a snapshot or purge line before killing anyway.
const MOMENT_WAIT: Duration = Duration::from_secs(15);
/// Store debug lines.
const SNAPSHOT_LINE: &str = "built raft snapshot";
const PURGE_LINE: &str = "purging raft log up to this entry";
const SEGMENT_DELETED_LINE: &str = "purged segment deleted";
const TORN_TAIL_LINE: &str = "cutting a torn tail off the raft log";
/// What kmsd says to do when its data directory is damaged.
const DAMAGED_HINT: &str = "so it cannot start from it. Move ";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    env_or("KMS_CRASH_SEED", clock % 1_000_000)
}

/// The text appended to a log file since the last poll.
struct LogTail {
    path: PathBuf,
    pos: u64,
}

impl LogTail {
    /// Starts at the current end of `path`.
    fn at_end(path: &Path) -> LogTail {
        let pos = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogTail {
            path: path.to_path_buf(),
            pos,
        }
    }

    fn poll(&mut self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.pos)).is_ok() {
                let mut buf = Vec::new();
                if let Ok(n) = f.read_to_end(&mut buf) {
                    self.pos += n as u64;
                    text = String::from_utf8_lossy(&buf).into_owned();
                }
            }
        }
        text
    }

    /// Waits until a line containing `needle` appears (true) or `timeout` passes (false).
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.poll().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

/// When a kill lands.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// After a random delay.
    Random,
    /// Right after the store logged a finished snapshot.
    AfterSnapshot,
    /// Right after the store logged a purge.
    DuringPurge,
}

impl Moment {
    fn of_round(i: usize) -> Moment {
        [Moment::Random, Moment::AfterSnapshot, Moment::DuringPurge][i % 3]
    }

    /// Waits for the moment (at least `min` into the load); true when it was seen (a
    /// random moment always is).
    fn wait(self, tail: &mut LogTail, min: Duration) -> bool {
        std::thread::sleep(min);
        tail.poll();
        match self {
            Moment::Random => true,
            Moment::AfterSnapshot => tail.wait_for(SNAPSHOT_LINE, MOMENT_WAIT),
            Moment::DuringPurge => tail.wait_for(PURGE_LINE, MOMENT_WAIT),
        }
    }
}

/// A bench sized to outlast `secs` at `rate` activations per second; after a kill its
/// remaining activations fail at once (connection refused), so it ends soon after.
fn bench(target: SocketAddr, rate: f64, secs: f64, concurrency: usize, log: &Path) -> Bench {
    let load = BenchLoad {
        count: ((rate * secs) as usize).max(25 * concurrency),
        concurrency,
        rate: 0,
        timeout_ms: BENCH_TIMEOUT_MS,
    };
    Bench::spawn(target, load, log)
}

/// Checks exactly-once on `node` against everything sent so far; returns its total.
fn check_node(node: &Kmsd, ledger: &Ledger, prev_total: u64, when: &str) -> u64 {
    let status = node.status();
    let total = status["total_requests"].as_u64().expect("total_requests");
    assert!(
        total >= prev_total,
        "{when}: {} total_requests went down from {prev_total} to {total}",
        node.admin
    );
    let r = ledger
        .check(&node.clients(), total)
        .unwrap_or_else(|e| panic!("{when}: {}: {e}", node.admin));
    for (cmid, why) in &r.counted_unanswered {
        assert!(
            why == "io" || why == "timeout",
            "{when}: {cmid} failed at the bench with {why:?} yet was counted"
        );
    }
    total
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// `raft/log/*.wal` segment files of a data directory, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir.join("raft/log"))
        .expect("raft/log")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn single_node_survives_sigkill_during_writes_snapshots_and_purges() {
    let seed = seed();
    let kills = env_or("KMS_CRASH_KILLS", KILLS as u64) as usize;
    eprintln!("crash single node: seed {seed} (KMS_CRASH_SEED), {kills} kills");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Kmsd::start(
        &dir.path().join("d"),
        &["--snapshot-every", SNAPSHOT_EVERY, "--log-level", LOG_LEVEL],
    );
    let _keep = KeepLogsOnPanic {
        label: "kms-crash-single".into(),
        logs: vec![node.log.clone()],
    };
    let started = Instant::now();
    let mut ledger = Ledger::new();
    // A first bench without a kill measures the pace, to size the benches that follow.
    let warm = bench(node.kms, 0.0, 0.0, 16, &dir.path().join("bench-warm.jsonl")).join();
    assert_eq!(
        warm.answered_count(),
        warm.lines.len(),
        "{:?}",
        warm.errors()
    );
    let mut rate = warm.report["activations_per_s"].as_f64().unwrap_or(40.0);
    ledger.add(&warm.lines);
    let mut total = check_node(&node, &ledger, 0, "before the first kill");
    let mut worst_restart = Duration::ZERO;
    for round in 0..kills {
        let moment = Moment::of_round(round);
        let min = match moment {
            Moment::Random => rng.millis(500, 5000),
            _ => rng.millis(300, 2500),
        };
        let mut tail = LogTail::at_end(&node.log);
        let load_start = Instant::now();
        let log = dir.path().join(format!("bench-{round}.jsonl"));
        // Far more than can be answered before the kill (the pace may change meanwhile);
        // what is left fails at once against the dead port.
        let b = bench(node.kms, rate, 40.0, 16, &log);
        let seen = moment.wait(&mut tail, min);
        let running = !b.is_finished();
        let at = load_start.elapsed();
        node.kill();
        let r = b.join();
        let answered = r.answered_count();
        rate = (answered as f64 / at.as_secs_f64()).max(5.0);
        ledger.add(&r.lines);
        assert!(
            running,
            "round {round}: the bench had ended before the kill"
        );
        let t0 = Instant::now();
        node.spawn_again();
        node.wait_ready();
        let restart = t0.elapsed();
        worst_restart = worst_restart.max(restart);
        let when = format!("after kill {round} (seed {seed})");
        total = check_node(&node, &ledger, total, &when);
        eprintln!(
            "  kill {round}: {moment:?}{} at {:.2} s into the load; {answered} answered of {} sent; ready {:.2} s after restart; total {total}",
            if seen { "" } else { " (not seen, killed anyway)" },
            at.as_secs_f64(),
            r.lines.len(),
            restart.as_secs_f64(),
        );
    }
    // One more bench without a kill: the node still works after all that.
    let r = bench(
        node.kms,
        rate,
        2.0,
        8,
        &dir.path().join("bench-final.jsonl"),
    )
    .join();
    assert_eq!(r.answered_count(), r.lines.len(), "{:?}", r.errors());
    ledger.add(&r.lines);
    total = check_node(&node, &ledger, total, "at the end");
    let text = node.log_text();
    let (snapshots, purges) = (count(&text, SNAPSHOT_LINE), count(&text, PURGE_LINE));
    let deleted = count(&text, SEGMENT_DELETED_LINE);
    let segs = segments(&node.data_dir);
    // Every start opens a new segment (numbered on from the newest); purges delete the
    // oldest whole ones. What is left must be the newest segments without a gap, and some
    // old ones must be gone. Counted from the files, not the log: kmsd logs through a
    // non-blocking writer, so the lines still queued when SIGKILL lands are lost.
    let seqs: Vec<u64> = segs
        .iter()
        .map(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            u64::from_str_radix(stem, 16).expect("segment name")
        })
        .collect();
    assert!(purges >= 1, "no log purge happened (seed {seed})");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap among the segments: {segs:?}"
    );
    assert!(seqs.last().copied().unwrap_or(0) > kills as u64, "{segs:?}");
    assert!(
        seqs[0] > 1,
        "no purged segment was deleted (seed {seed}): {segs:?}"
    );
    eprintln!(
        "crash single node (seed {seed}): {kills} kills in {:.1} s; {} of {} answered, total {total}; {snapshots} snapshots, {purges} purges, {} segments deleted ({deleted} logged), {} left, {} torn tails cut; slowest restart-to-ready {:.2} s",
        started.elapsed().as_secs_f64(),
        ledger.answered(),
        ledger.attempted(),
        seqs[0] - 1,
        segs.len(),
        count(&text, TORN_TAIL_LINE),
        worst_restart.as_secs_f64(),
    );
}

#[test]
fn cluster_survives_sigkill_of_leader_and_follower_during_writes() {
    let seed = seed();
    let rounds = env_or("KMS_CRASH_CLUSTER_KILLS", CLUSTER_KILLS as u64) as usize;
    eprintln!("crash 3 nodes: seed {seed} (KMS_CRASH_SEED), {rounds} kills");
    let mut rng = Rng(seed ^ 0x3);
    let mut c = LocalCluster::start(
        3,
        &[
            "--snapshot-every",
            SNAPSHOT_EVERY,
            "--commit-timeout-ms",
            "3000",
            "--log-level",
            LOG_LEVEL,
        ],
    );
    let _keep = KeepLogsOnPanic {
        label: "kms-crash-cluster".into(),
        logs: c.nodes.iter().map(|n| n.log.clone()).collect(),
    };
    let started = Instant::now();
    let mut ledger = Ledger::new();
    let mut totals = [0u64; 3];
    for round in 0..rounds {
        let leader = c.wait_leader(Duration::from_secs(10));
        let victim = if round % 2 == 0 {
            leader
        } else {
            (leader + 1 + rng.below(2)) % 3
        };
        let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        let target = survivors[rng.below(2)];
        let before = rng.millis(1000, 4000);
        let after = rng.millis(1000, 2500);
        let log = c.dir.path().join(format!("bench-{round}.jsonl"));
        // Paced, so it runs through the kill and on for `after` whatever the host's speed.
        let load = BenchLoad {
            count: (CLUSTER_RATE as f64 * (before + after).as_secs_f64()) as usize,
            concurrency: 8,
            rate: CLUSTER_RATE,
            timeout_ms: BENCH_TIMEOUT_MS,
        };
        let b = Bench::spawn(c.nodes[target].kms, load, &log);
        let load_start = Instant::now();
        std::thread::sleep(before);
        let running = !b.is_finished();
        c.nodes[victim].kill();
        let killed_at = load_start.elapsed();
        let kill_ms = now_ms();
        let r = b.join();
        let answered = r.answered_count();
        ledger.add(&r.lines);
        assert!(
            running,
            "round {round}: the bench had ended before the kill"
        );
        let answered_after_kill = r.answered_between(kill_ms, u64::MAX).len();
        c.nodes[victim].spawn_again();
        c.nodes[victim].wait_ready();
        let statuses = c.wait_converged(Duration::from_secs(60));
        assert_eq!(statuses.len(), 3, "round {round}: not all nodes answer");
        let when = format!("round {round} (seed {seed})");
        for (i, n) in c.nodes.iter().enumerate() {
            totals[i] = check_node(n, &ledger, totals[i], &when);
        }
        eprintln!(
            "  round {round}: killed node {} ({}) at {:.2} s, bench through node {}: {answered} answered of {} ({answered_after_kill} after the kill); total {}",
            victim + 1,
            if victim == leader { "leader" } else { "follower" },
            killed_at.as_secs_f64(),
            target + 1,
            r.lines.len(),
            totals[0],
        );
    }
    let statuses = c.wait_converged(Duration::from_secs(60));
    let inventories: Vec<_> = c.nodes.iter().map(Kmsd::clients).collect();
    assert!(inventories.iter().all(|i| *i == inventories[0]));
    let texts: Vec<String> = c.nodes.iter().map(Kmsd::log_text).collect();
    eprintln!(
        "crash 3 nodes (seed {seed}): {rounds} kills in {:.1} s; {} of {} answered, total {} on every node (term {}); snapshots per node {:?}, purges {:?}, segments deleted {:?}",
        started.elapsed().as_secs_f64(),
        ledger.answered(),
        ledger.attempted(),
        statuses[0]["total_requests"],
        statuses[0]["raft"]["term"],
        texts.iter().map(|t| count(t, SNAPSHOT_LINE)).collect::<Vec<_>>(),
        texts.iter().map(|t| count(t, PURGE_LINE)).collect::<Vec<_>>(),
        texts.iter().map(|t| count(t, SEGMENT_DELETED_LINE)).collect::<Vec<_>>(),
    );
}

/// A stopped single node with two runs of activations behind it, so its log has an older
/// segment (the first run's) and a newest one; returns it with what was answered.
fn node_with_two_segments(dir: &Path) -> (Kmsd, Ledger) {
    let mut node = Kmsd::start(dir, &[]);
    let mut ledger = Ledger::new();
    for run in 0..2 {
        if run > 0 {
            node.spawn_again();
            node.wait_ready();
        }
        let log = dir.with_extension(format!("bench{run}.jsonl"));
        let r = bench(node.kms, 30.0, 1.0, 4, &log).join();
        assert_eq!(r.answered_count(), r.lines.len(), "{:?}", r.errors());
        ledger.add(&r.lines);
        node.stop();
    }
    // Each start opens a new segment (and moves on to a preallocated one once it is ready).
    let segs = segments(dir);
    assert!(segs.len() >= 2, "{segs:?}");
    (node, ledger)
}

#[test]
fn torn_newest_segment_is_cut_and_damaged_older_segment_refuses_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut torn, torn_ledger) = node_with_two_segments(&dir.path().join("torn"));
    let (mut bad, _) = node_with_two_segments(&dir.path().join("bad"));

    // Garbage after the last record of the newest segment: a write cut short by a crash.
    let newest = segments(&torn.data_dir).pop().unwrap();
    let before = std::fs::metadata(&newest).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    f.write_all(&[0x5a; 13]).unwrap();
    f.write_all(b"\x40\x00\x00\x00garbage after the last record")
        .unwrap();
    drop(f);
    torn.spawn_again();
    torn.wait_ready();
    let log = torn.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains(TORN_TAIL_LINE))
        .unwrap_or_else(|| panic!("no torn-tail warning:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&newest.display().to_string()), "{warning}");
    // Cut back to its last good record: the garbage is gone (and so is the rest of a
    // preallocated segment's zeros after it).
    let after = std::fs::read(&newest).unwrap();
    assert!(after.len() as u64 <= before, "tail not cut back");
    assert!(
        !after.windows(7).any(|w| w == b"garbage"),
        "the torn tail is still in {}",
        newest.display()
    );
    let total = torn.status()["total_requests"].as_u64().unwrap();
    let r = torn_ledger.check(&torn.clients(), total).unwrap();
    assert_eq!(r.counted_unanswered.len(), 0);
    assert_eq!(total as usize, torn_ledger.answered());

    // One byte flipped in the middle of the older segment: refuse to start, name the file.
    let older = segments(&bad.data_dir).remove(0);
    let mut bytes = std::fs::read(&older).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&older, &bytes).unwrap();
    bad.spawn_again();
    let status = bad
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("kmsd started on a damaged log:\n{}", bad.log_text()));
    assert!(!status.success(), "{status}");
    let log = bad.log_text();
    let name = older.display().to_string();
    let line = log
        .lines()
        .find(|l| l.contains("is damaged at byte"))
        .unwrap_or_else(|| panic!("no damage message:\n{log}"));
    assert!(line.contains(&name), "message does not name {name}: {line}");
    assert!(
        log.contains(DAMAGED_HINT),
        "kmsd does not say what to do with a damaged data directory:\n{log}"
    );
    eprintln!(
        "damaged log: torn tail of {} cut ({warning}); flipped byte {mid} of {}: {line}",
        newest.display(),
        older.display()
    );
}
