//! Fault tests on real containers (`kms_tests::docker`): a kms-cluster of `kmsd`
//! containers on private Docker networks, loaded by the real `kmsctl bench` through
//! loopback-published ports, while nodes are SIGKILLed and restarted or have their Raft
//! traffic cut (network partitions) in both quorum-loss modes. The invariant checked
//! every time: every activation a client got an answer for is counted exactly once, in
//! the converged state of every node (bench log vs the `/clients` inventory).
//!
//! The tests run one at a time (they share 2 cores; Raft timings are short) and each prints
//! a one-line summary. Needs Docker Engine; fails (does not skip) without it.

use kms_tests::docker::{
    brief, now_ms, Bench, BenchLoad, BenchResult, DockerCluster, COMMIT_TIMEOUT_MS,
};
use kms_tests::harness::kmsctl;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a fresh cluster may take to elect its first leader.
const FIRST_LEADER: Duration = Duration::from_secs(15);
/// A new leader must be elected within this after the old one is killed.
const MAX_ELECTION: Duration = Duration::from_secs(2);
/// With 5 nodes losing the leader and one more at once, three survivors can split their
/// votes once more than three nodes would; allow one extra election round (CI runs this
/// on two busy cores).
const MAX_ELECTION_DOUBLE_KILL: Duration = Duration::from_secs(4);
/// How long the nodes may take to agree after a fault is repaired.
const CONVERGE: Duration = Duration::from_secs(30);
/// A restarted container must be ready within this.
const RESTART_READY: Duration = Duration::from_secs(20);
/// Load runs this long before the fault.
const BEFORE_FAULT: Duration = Duration::from_millis(1500);
/// How long partitions last.
const PARTITION_HOLD: Duration = Duration::from_secs(5);
/// Status polling interval while a fault lasts.
const POLL: Duration = Duration::from_millis(100);
/// Margin around fault instants when attributing bench lines to "during the fault", ms.
const MARGIN_MS: u64 = 500;
/// Per-activation timeout of the benches, ms (above the commit timeout).
const BENCH_TIMEOUT_MS: u64 = 6000;

/// Bench against a follower while the leader is killed (3 nodes).
const KILL_LOAD: BenchLoad = BenchLoad {
    count: 1500,
    concurrency: 16,
    rate: 250,
    timeout_ms: BENCH_TIMEOUT_MS,
};
/// Bench against the node that gets isolated (answers take the commit timeout there).
const ISOLATED_LOAD: BenchLoad = BenchLoad {
    count: 300,
    concurrency: 32,
    rate: 40,
    timeout_ms: BENCH_TIMEOUT_MS,
};
/// Bench against a node of the majority during a minority partition.
const MAJORITY_LOAD: BenchLoad = BenchLoad {
    count: 800,
    concurrency: 16,
    rate: 100,
    timeout_ms: BENCH_TIMEOUT_MS,
};
/// Light load on each node while no node has a quorum.
const NO_QUORUM_LOAD: BenchLoad = BenchLoad {
    count: 80,
    concurrency: 16,
    rate: 10,
    timeout_ms: BENCH_TIMEOUT_MS,
};
/// Bench against a survivor while 2 of 5 nodes are killed.
const FIVE_LOAD: BenchLoad = BenchLoad {
    count: 1500,
    concurrency: 16,
    rate: 200,
    timeout_ms: BENCH_TIMEOUT_MS,
};

/// One container test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prints a test's one-line summary straight to stderr (not captured by the test
/// harness, so it shows in a normal `cargo test` run).
fn summary(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "summary: {line}");
}

/// The current leader and its term, waiting (bounded) while leadership sits on one of
/// `avoid` (e.g. the bench target) or is unknown; leadership may have moved since the
/// cluster started (spurious elections under load).
fn current_leader(c: &DockerCluster, avoid: &[usize]) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = c.leader() {
            if let Some(s) = c.try_status(l) {
                if s["raft"]["role"] == "leader" && !avoid.contains(&l) {
                    return (l, u64_of(&s["raft"]["term"]));
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader outside {avoid:?} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls (every 20 ms) until a connected node is leader in a term above `term`.
fn wait_new_leader(c: &DockerCluster, term: u64, since: Instant) -> usize {
    loop {
        if let Some(i) = c.leader_after(term) {
            return i;
        }
        assert!(
            since.elapsed() < MAX_ELECTION * 5,
            "no new leader within {:?} of the kill",
            MAX_ELECTION * 5
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `kmsctl activate` against `addr`: the JSON line and the exit code.
fn activate(addr: SocketAddr) -> (serde_json::Value, i32) {
    let host = addr.ip().to_string();
    let port = addr.port().to_string();
    let out = kmsctl(&[
        "activate",
        "--host",
        &host,
        "--port",
        &port,
        "--json",
        "--timeout-ms",
        &BENCH_TIMEOUT_MS.to_string(),
        "--product",
        "Windows 10 Enterprise",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (v, out.status.code().unwrap_or(-1))
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Exactly-once against the converged state, read from node `via`: every answered
/// activation's CMID is in the inventory with one request; the inventory adds up to the
/// cluster total; the total lies between answered and attempted. Returns (answered,
/// attempted, total).
fn check_exactly_once(
    c: &DockerCluster,
    via: usize,
    total: u64,
    benches: &[&BenchResult],
) -> (u64, u64, u64) {
    let inventory = c.clients(via, "windows");
    let mut answered = 0u64;
    let mut attempted = 0u64;
    for b in benches {
        attempted += b.lines.len() as u64;
        for a in b.answered() {
            answered += 1;
            let cmid = a["cmid"].as_str().expect("cmid");
            assert_eq!(
                inventory.get(cmid),
                Some(&1),
                "answered activation {cmid} is not counted exactly once (node {}): {a}",
                via + 1
            );
        }
    }
    assert_eq!(
        inventory.values().sum::<u64>(),
        total,
        "inventory requests vs total_requests"
    );
    assert!(
        total >= answered,
        "lost answered activations: total {total} < answered {answered}"
    );
    assert!(
        total <= attempted,
        "counted more than attempted: total {total} > attempted {attempted}"
    );
    (answered, attempted, total)
}

#[test]
fn partition_cuts_only_raft_traffic_and_heals() {
    let _serial = serial();
    let started = Instant::now();
    let mut c = DockerCluster::up(3, &["--quorum-loss", "serve-local"]);
    let leader = c.wait_leader(FIRST_LEADER);
    let victim = (leader + 1) % 3;
    let (_, code) = activate(c.kms(victim));
    assert!(code == 0 || code == 3, "activation before the partition");
    c.wait_converged(CONVERGE);

    c.partition(victim);
    // The victim loses its leader (Raft cut) ...
    let deadline = Instant::now() + Duration::from_secs(5);
    let lost = loop {
        let s = c.status(victim); // admin port still published and answering
        if s["raft"]["leader"].is_null() || s["raft"]["role"] == "candidate" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "partitioned node still follows a leader: {}",
            brief(&s)
        );
        std::thread::sleep(POLL);
    };
    // ... while the majority commits without it.
    let applied_before = u64_of(&c.status(victim)["raft"]["applied_index"]);
    let leader_now = c.leader_after(0).expect("majority leader");
    assert_ne!(leader_now, victim);
    let (_, code) = activate(c.kms(leader_now));
    assert!(code == 0 || code == 3, "majority activation");
    let majority_applied = u64_of(&c.status(leader_now)["raft"]["applied_index"]);
    let victim_applied = u64_of(&c.status(victim)["raft"]["applied_index"]);
    assert!(
        majority_applied > applied_before && victim_applied == applied_before,
        "Raft traffic still flows: majority applied {majority_applied}, victim {victim_applied} (was {applied_before})"
    );
    // The victim's published KMS port still answers (serve-local: from its own state).
    let t = Instant::now();
    let (v, code) = activate(c.kms(victim));
    let local_ms = t.elapsed().as_millis();
    assert!(code == 0 || code == 3, "partitioned node's KMS port: {v}");
    let s = c.status(victim);
    assert!(u64_of(&s["raft"]["outbox_len"]) >= 1, "{}", brief(&s));

    c.heal(victim);
    let statuses = c.wait_converged(CONVERGE);
    for s in &statuses {
        assert_eq!(s["total_requests"], 3, "{}", brief(s));
    }
    summary(format!(
        "raft-only partition of node {}: lost leader ({}), client ports kept answering (local answer in {local_ms} ms), healed and converged to total 3 in {:.1}s",
        victim + 1,
        brief(&lost),
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn killing_the_leader_container_during_a_bench_loses_and_doubles_nothing() {
    let _serial = serial();
    let started = Instant::now();
    let mut c = DockerCluster::up(3, &[]);
    let target = (c.wait_leader(FIRST_LEADER) + 1) % 3;
    let bench = Bench::spawn(c.kms(target), KILL_LOAD, &c.path("bench.jsonl"));
    std::thread::sleep(BEFORE_FAULT);
    let (leader, term) = current_leader(&c, &[target]);
    let killed = Instant::now();
    c.kill(leader);
    let new_leader = wait_new_leader(&c, term, killed);
    let seen_ms = now_ms();
    // From the moment the process died (Docker's record) to a leader seen by polling.
    let election = Duration::from_millis(seen_ms.saturating_sub(c.finished_at_ms(leader)));
    assert_ne!(new_leader, leader);
    assert!(election < MAX_ELECTION, "new leader after {election:?}");
    let b = bench.join();
    assert!(
        b.answered_count() * 100 >= b.lines.len() * 95,
        "too few answered: {} of {} ({})",
        b.answered_count(),
        b.lines.len(),
        b.errors()
    );
    let statuses = c.wait_converged(CONVERGE);
    assert_eq!(statuses.len(), 2);
    let total = u64_of(&statuses[0]["total_requests"]);
    let (answered, attempted, _) = check_exactly_once(&c, new_leader, total, &[&b]);

    // The killed container restarts from its volume and catches up.
    c.start(leader);
    c.wait_ready(leader, RESTART_READY);
    let statuses = c.wait_converged(CONVERGE);
    assert_eq!(statuses.len(), 3);
    assert_eq!(u64_of(&statuses[0]["total_requests"]), total);
    check_exactly_once(&c, leader, total, &[&b]);
    summary(format!(
        "killed leader node {} during bench: new leader node {} after {} ms; answered {answered} of {attempted}, longest gap {} ms; cluster total {total}; restarted node caught up; {:.1}s",
        leader + 1,
        new_leader + 1,
        election.as_millis(),
        b.report["longest_gap_ms"],
        started.elapsed().as_secs_f64()
    ));
}

/// What the isolated node showed while it was cut off.
#[derive(Default, Debug)]
struct Observed {
    max_outbox: u64,
    max_stale_ms: u64,
    new_leader: Option<(usize, Duration)>,
}

/// Watches `isolated` nodes' status (and the majority's election when `term` is given)
/// for `hold`.
fn observe(
    c: &DockerCluster,
    isolated: &[usize],
    term: Option<u64>,
    hold: Duration,
) -> Vec<Observed> {
    let start = Instant::now();
    let mut seen: Vec<Observed> = isolated.iter().map(|_| Observed::default()).collect();
    let mut leader = None;
    while start.elapsed() < hold {
        for (k, &i) in isolated.iter().enumerate() {
            if let Some(s) = c.try_status(i) {
                let o = &mut seen[k];
                o.max_outbox = o
                    .max_outbox
                    .max(s["raft"]["outbox_len"].as_u64().unwrap_or(0));
                o.max_stale_ms = o
                    .max_stale_ms
                    .max(s["raft"]["stale_ms"].as_u64().unwrap_or(0));
            }
        }
        if let (Some(t), None) = (term, leader) {
            leader = c.leader_after(t).map(|l| (l, start.elapsed()));
        }
        std::thread::sleep(POLL);
    }
    if let Some(o) = seen.first_mut() {
        o.new_leader = leader;
    }
    seen
}

/// Isolates the leader (a minority of one) from the Raft network while benches run
/// against it and against a majority node, then heals.
fn minority_partition(mode: &str) {
    let _serial = serial();
    let started = Instant::now();
    let mut c = DockerCluster::up(3, &["--quorum-loss", mode]);
    let isolated = c.wait_leader(FIRST_LEADER);
    let majority = (isolated + 1) % 3;
    let b_iso = Bench::spawn(c.kms(isolated), ISOLATED_LOAD, &c.path("isolated.jsonl"));
    let b_maj = Bench::spawn(c.kms(majority), MAJORITY_LOAD, &c.path("majority.jsonl"));
    std::thread::sleep(BEFORE_FAULT);
    // Normally still the leader; if leadership moved meanwhile, a follower is cut off
    // instead and the majority's leader just has to stay.
    let before = c.status(isolated);
    let role = before["raft"]["role"].as_str().unwrap_or("?").to_string();
    let term = if role == "leader" {
        u64_of(&before["raft"]["term"])
    } else {
        0
    };
    c.partition(isolated);
    let cut_ms = now_ms();
    let seen = observe(&c, &[isolated], Some(term), PARTITION_HOLD);
    c.heal(isolated);
    let healed_ms = now_ms();
    let iso = b_iso.join();
    let maj = b_maj.join();
    let statuses = c.wait_converged(CONVERGE);
    assert_eq!(statuses.len(), 3);
    let total = u64_of(&statuses[0]["total_requests"]);
    let (answered, attempted, _) = check_exactly_once(&c, majority, total, &[&iso, &maj]);
    check_exactly_once(&c, isolated, total, &[&iso, &maj]);

    let seen = &seen[0];
    let (new_leader, election) = seen
        .new_leader
        .unwrap_or_else(|| panic!("the majority elected no leader while the leader was cut off"));
    assert_ne!(new_leader, isolated);
    // The majority kept answering through the partition.
    let (maj_tried, maj_ok) = maj.started_between(cut_ms, healed_ms);
    assert!(maj_ok > 0, "majority answered nothing during the partition");
    assert!(
        maj.answered_count() * 100 >= maj.lines.len() * 95,
        "majority answered {} of {} ({})",
        maj.answered_count(),
        maj.lines.len(),
        maj.errors()
    );
    // Answers the isolated node gave while it was cut off (after a margin for answers to
    // commits made just before the cut).
    let cut_answers = iso.answered_between(cut_ms + MARGIN_MS, healed_ms);
    // Activations started on the isolated node while it was cut off, early enough that
    // their commit timeout ran out before the heal (under load some wait in the node's
    // queue first and are committed after the heal: answered, legitimately, in both modes).
    let (iso_tried, iso_ok) = iso.started_between(
        cut_ms + MARGIN_MS,
        healed_ms - COMMIT_TIMEOUT_MS - MARGIN_MS,
    );
    assert!(
        iso_tried > 0,
        "no request reached the isolated node while it was cut off"
    );
    // The longest an activation on the isolated node took (answered or not), ms.
    let iso_slowest_ms = iso
        .lines
        .iter()
        .filter_map(|l| l["micros"].as_u64())
        .max()
        .unwrap_or(0)
        / 1000;
    match mode {
        "serve-local" => {
            assert!(
                !cut_answers.is_empty(),
                "serve-local: the isolated node answered nothing while cut off"
            );
            assert_eq!(
                iso_ok,
                iso_tried,
                "serve-local: the isolated node must answer everything ({})",
                iso.errors()
            );
            assert!(seen.max_stale_ms > 0, "stale_ms stayed 0 while isolated");
            assert!(seen.max_outbox > 0, "outbox stayed empty while isolated");
            // Every answered activation, local or not, counts exactly once.
            assert_eq!(
                total, answered,
                "serve-local: total must equal the answered activations"
            );
        }
        "fail-closed" => {
            assert!(
                cut_answers.is_empty(),
                "fail-closed: the isolated node answered {} activations without a quorum (cut {cut_ms}, healed {healed_ms}), e.g. {}",
                cut_answers.len(),
                cut_answers[0]
            );
            assert!(
                iso_ok < iso_tried,
                "fail-closed: the isolated node refused nothing ({iso_ok} of {iso_tried} answered)"
            );
            assert_eq!(seen.max_outbox, 0, "fail-closed keeps no outbox");
        }
        other => panic!("unknown mode {other}"),
    }
    summary(format!(
        "{mode}: partitioned node {} ({role}) for {:?}: majority leader node {} after {} ms, answered {maj_ok} of {maj_tried} during the cut; isolated node gave {} answers while cut off, answered {iso_ok} of {iso_tried} started then, slowest {iso_slowest_ms} ms (max outbox {}, max stale {} ms, errors {}); answered {answered} of {attempted}; converged total {total}; {:.1}s",
        isolated + 1,
        PARTITION_HOLD,
        new_leader + 1,
        election.as_millis(),
        cut_answers.len(),
        seen.max_outbox,
        seen.max_stale_ms,
        iso.errors(),
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn partitioned_minority_serve_local_answers_locally_and_replays_exactly_once() {
    minority_partition("serve-local");
}

#[test]
fn partitioned_minority_fail_closed_refuses_while_the_majority_answers() {
    minority_partition("fail-closed");
}

#[test]
fn partitioned_majority_every_node_answers_locally_then_converges_exactly() {
    let _serial = serial();
    let started = Instant::now();
    let mut c = DockerCluster::up(3, &["--quorum-loss", "serve-local"]);
    let leader = c.wait_leader(FIRST_LEADER);
    // Cut off the leader and one follower: no node has a quorum any more.
    let cut = [leader, (leader + 1) % 3];
    let benches: Vec<Bench> = (0..3)
        .map(|i| Bench::spawn(c.kms(i), NO_QUORUM_LOAD, &c.path(&format!("node{i}.jsonl"))))
        .collect();
    std::thread::sleep(BEFORE_FAULT);
    for &i in &cut {
        c.partition(i);
    }
    let cut_ms = now_ms();
    let all = [0, 1, 2];
    let seen = observe(&c, &all, None, PARTITION_HOLD);
    for &i in &cut {
        c.heal(i);
    }
    let healed_ms = now_ms();
    let results: Vec<BenchResult> = benches.into_iter().map(Bench::join).collect();
    let statuses = c.wait_converged(CONVERGE);
    assert_eq!(statuses.len(), 3);
    let total = u64_of(&statuses[0]["total_requests"]);
    let refs: Vec<&BenchResult> = results.iter().collect();
    let (answered, attempted, _) = check_exactly_once(&c, 0, total, &refs);
    assert_eq!(total, answered, "total must equal the answered activations");
    let mut during = Vec::new();
    for i in all {
        let (tried, ok) = results[i].started_between(
            cut_ms + MARGIN_MS,
            healed_ms - COMMIT_TIMEOUT_MS - MARGIN_MS,
        );
        assert!(
            tried > 0 && ok == tried,
            "node {} answered {ok} of {tried} without a quorum",
            i + 1
        );
        assert!(
            seen[i].max_outbox > 0,
            "node {}: outbox stayed empty",
            i + 1
        );
        assert!(
            seen[i].max_stale_ms > 0,
            "node {}: stale_ms stayed 0",
            i + 1
        );
        during.push(format!(
            "node {} {ok}/{tried} (max outbox {})",
            i + 1,
            seen[i].max_outbox
        ));
    }
    summary(format!(
        "serve-local, nodes {} and {} cut off for {:?} (no quorum anywhere): answered locally {}; answered {answered} of {attempted}; converged total {total}; {:.1}s",
        cut[0] + 1,
        cut[1] + 1,
        PARTITION_HOLD,
        during.join(", "),
        started.elapsed().as_secs_f64()
    ));
}

#[test]
fn five_nodes_keep_answering_without_two_nodes_one_the_leader() {
    let _serial = serial();
    let started = Instant::now();
    let mut c = DockerCluster::up(5, &["--quorum-loss", "fail-closed"]);
    let target = (c.wait_leader(FIRST_LEADER) + 1) % 5;
    let bench = Bench::spawn(c.kms(target), FIVE_LOAD, &c.path("bench.jsonl"));
    std::thread::sleep(BEFORE_FAULT);
    let (leader, term) = current_leader(&c, &[target]);
    let other = (0..5)
        .find(|i| *i != leader && *i != target)
        .expect("a third node");
    let killed = Instant::now();
    c.kill(leader);
    c.kill(other);
    let new_leader = wait_new_leader(&c, term, killed);
    let seen_ms = now_ms();
    let killed_ms = c.finished_at_ms(leader);
    // From the moment the leader's process died (Docker's record) to a leader seen.
    let election = Duration::from_millis(seen_ms.saturating_sub(killed_ms));
    assert!(
        election < MAX_ELECTION_DOUBLE_KILL,
        "new leader after {election:?}"
    );
    let b = bench.join();
    let (after_tried, after_ok) = b.started_between(
        killed_ms + MAX_ELECTION_DOUBLE_KILL.as_millis() as u64,
        u64::MAX,
    );
    assert!(
        after_tried > 0 && after_ok * 100 >= after_tried * 95,
        "three of five nodes must keep answering: {after_ok} of {after_tried} after the election ({})",
        b.errors()
    );
    let statuses = c.wait_converged(CONVERGE);
    assert_eq!(statuses.len(), 3);
    let total = u64_of(&statuses[0]["total_requests"]);
    check_exactly_once(&c, new_leader, total, &[&b]);

    c.start(leader);
    c.start(other);
    c.wait_ready(leader, RESTART_READY);
    c.wait_ready(other, RESTART_READY);
    let statuses = c.wait_converged(CONVERGE);
    assert_eq!(statuses.len(), 5);
    assert_eq!(u64_of(&statuses[0]["total_requests"]), total);
    let (answered, attempted, _) = check_exactly_once(&c, other, total, &[&b]);
    summary(format!(
        "5 nodes, killed leader node {} and node {} during bench: new leader node {} after {} ms; answered {answered} of {attempted} ({after_ok} of {after_tried} after the election), errors {}; cluster total {total}; both restarted and caught up; {:.1}s",
        leader + 1,
        other + 1,
        new_leader + 1,
        election.as_millis(),
        b.errors(),
        started.elapsed().as_secs_f64()
    ));
}
